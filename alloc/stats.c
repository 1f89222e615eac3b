/* alloc/stats.c - whole-state operations: statistics, the invariant checker, the free-extent walk,
 * and the three ways to make an allocator from a description of its state (alloc_rebuild from the
 * live blocks, alloc_export/alloc_import of a blob), which share one validating builder. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- radix sort ---- */

/* Stable LSD radix sort; the digit width adapts so typical keys (offsets of a region of a few GiB,
 * in 16-byte units) need two passes. */
int alx_sort_kv(struct alx_kv *v, size_t n)
{
	if (n < 2)
		return ALLOC_OK;
	if (n <= 32) { /* insertion sort: stable, and cheaper than a histogram for tiny inputs */
		for (size_t i = 1; i < n; i++) {
			struct alx_kv x = v[i];
			size_t j = i;
			for (; j > 0 && v[j - 1].key > x.key; j--)
				v[j] = v[j - 1];
			v[j] = x;
		}
		return ALLOC_OK;
	}
	uint64_t any = 0;
	for (size_t i = 0; i < n; i++)
		any |= v[i].key;
	unsigned bits = any ? 64u - (unsigned)__builtin_clzll(any) : 0;
	if (bits == 0)
		return ALLOC_OK;
	/* digits of at most 16 bits, fewer when n is small so the histogram stays cheap */
	unsigned maxdigit = n < 4096 ? 8u : 16u;
	unsigned passes = (bits + maxdigit - 1) / maxdigit, digit = (bits + passes - 1) / passes;
	size_t nb = (size_t)1 << digit, mask = nb - 1;
	struct alx_kv *tmp = malloc(n * sizeof *tmp);
	size_t *cnt = malloc(nb * sizeof *cnt);
	if (!tmp || !cnt) {
		free(tmp);
		free(cnt);
		return ALLOC_ENOMEM;
	}
	struct alx_kv *src = v, *dst = tmp;
	for (unsigned p = 0, shift = 0; p < passes; p++, shift += digit) {
		memset(cnt, 0, nb * sizeof *cnt);
		for (size_t i = 0; i < n; i++)
			cnt[(src[i].key >> shift) & mask]++;
		size_t sum = 0;
		for (size_t d = 0; d < nb; d++) {
			size_t c = cnt[d];
			cnt[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[cnt[(src[i].key >> shift) & mask]++] = src[i];
		struct alx_kv *t = src;
		src = dst;
		dst = t;
	}
	if (src != v)
		memcpy(v, src, n * sizeof *v);
	free(tmp);
	free(cnt);
	return ALLOC_OK;
}

/* ---- statistics and walks ---- */

uint64_t alloc_free_bytes(const struct alloc *a)
{
	return a ? a->ext_bytes + a->run_free : 0;
}

void alloc_stats(const struct alloc *a, struct alloc_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof *st);
	if (!a)
		return;
	st->region_bytes = a->end - a->base;
	st->used_bytes = a->used;
	st->free_bytes = a->ext_bytes + a->run_free;
	const struct ext *x = a->root[ALX_BY_SIZE];
	while (x && x->kid[ALX_BY_SIZE][1])
		x = x->kid[ALX_BY_SIZE][1];
	st->largest_free = x ? x->len : 0;
	for (unsigned c = 0; c < ALX_NCLASSES; c++)
		if (a->heap[c].n && alx_classes[c].size > st->largest_free)
			st->largest_free = alx_classes[c].size;
	st->free_extents = a->ext_n;
	st->internal_waste = a->waste;
	st->run_slack = a->slack;
	st->blocks = a->blocks;
	st->runs = a->nruns;
	memcpy(st->hist, a->hist, sizeof st->hist);
}

static int visit_free(const struct ext *x, int (*fn)(void *, uint64_t, uint64_t), void *ctx)
{
	while (x) {
		int rc = visit_free(x->kid[ALX_BY_ADDR][0], fn, ctx);
		if (rc)
			return rc;
		if ((rc = fn(ctx, x->off, x->len)) != 0)
			return rc;
		x = x->kid[ALX_BY_ADDR][1];
	}
	return 0;
}

int alloc_foreach_free(const struct alloc *a, int (*fn)(void *ctx, uint64_t off, uint64_t len), void *ctx)
{
	if (!a || !fn)
		return ALLOC_EINVAL;
	return visit_free(a->root[ALX_BY_ADDR], fn, ctx);
}

/* Free ranges in no particular order: the free extents, then each run's free slots one by one (a
 * caller that scrubs free space must reach slots too, which alloc_foreach_free does not report). */
int alloc_free_each(const struct alloc *a, int (*fn)(void *ctx, uint64_t off, uint64_t len), void *ctx)
{
	if (!a || !fn)
		return ALLOC_EINVAL;
	int rc = visit_free(a->root[ALX_BY_ADDR], fn, ctx);
	for (uint64_t i = 0; rc == 0 && i < a->tab_cap; i++) {
		const struct alx_slot *s = &a->tab[i];
		if (!s->key || (s->key & ALX_TAG_MASK) != ALX_TAG_RUN)
			continue;
		const struct run *r = (const struct run *)(uintptr_t)s->val;
		const struct alx_class *cl = &alx_classes[r->cls];
		for (unsigned k = 0; rc == 0 && k < cl->nslots; k++)
			if (r->freebits[k >> 6] >> (k & 63) & 1)
				rc = fn(ctx, r->start + (uint64_t)k * cl->size, cl->size);
	}
	return rc;
}

/* ---- alloc_check ---- */

static bool ext_less(int t, const struct ext *x, const struct ext *y)
{
	if (t == ALX_BY_SIZE && x->len != y->len)
		return x->len < y->len;
	return x->off < y->off;
}

struct walk {
	const struct alloc *a;
	int t;
	struct ext **vec;
	uint64_t n, cap;
	bool bad;
};

/* In-order walk checking the search order against the bounds inherited from ancestors (which also
 * rules out cycles), the heap order of priorities and, in the size treap, the fit annotations. */
static void walk_tree(struct walk *w, struct ext *x, const struct ext *lo, const struct ext *hi, uint32_t maxprio)
{
	if (!x || w->bad)
		return;
	if ((lo && !ext_less(w->t, lo, x)) || (hi && !ext_less(w->t, x, hi)) || x->prio > maxprio) {
		w->bad = true;
		return;
	}
	if (w->t == ALX_BY_SIZE) {
		uint8_t f = x->fit;
		for (int d = 0; d < 2; d++)
			if (x->kid[ALX_BY_SIZE][d] && x->kid[ALX_BY_SIZE][d]->subfit > f)
				f = x->kid[ALX_BY_SIZE][d]->subfit;
		if (x->len == 0 || x->fit != alx_ext_fit(w->a, x->off, x->len) || x->subfit != f) {
			w->bad = true;
			return;
		}
	}
	walk_tree(w, x->kid[w->t][0], lo, x, x->prio);
	if (w->bad)
		return;
	if (w->n >= w->cap) {
		w->bad = true;
		return;
	}
	w->vec[w->n++] = x;
	walk_tree(w, x->kid[w->t][1], x, hi, x->prio);
}

static bool in_vec(struct ext **vec, uint64_t n, const struct ext *x)
{
	uint64_t lo = 0, hi = n;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (vec[mid]->off < x->off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && vec[lo] == x;
}

static int check_run(const struct alloc *a, const struct run *r, uint64_t start, uint64_t *waste)
{
	if (!r || r->start != start || r->cls >= ALX_NCLASSES)
		return ALLOC_ECORRUPT;
	const struct alx_class *cl = &alx_classes[r->cls];
	uint64_t rsize = 1ull << cl->shift;
	if (start < a->base || start > a->end || ((start - a->base) & (rsize - 1)) || rsize > a->end - start)
		return ALLOC_ECORRUPT;
	unsigned nfree = 0;
	for (unsigned w = 0; w < cl->nwords; w++) {
		unsigned left = cl->nslots - w * 64u;
		uint64_t valid = left >= 64 ? UINT64_MAX : (1ull << left) - 1;
		if (r->freebits[w] & ~valid)
			return ALLOC_ECORRUPT;
		if (w < r->hint && r->freebits[w])
			return ALLOC_ECORRUPT;
		nfree += (unsigned)__builtin_popcountll(r->freebits[w]);
	}
	if (r->hint >= cl->nwords || nfree != r->nfree || nfree >= cl->nslots)
		return ALLOC_ECORRUPT;
	const uint8_t *nibs = alx_run_cnibs(r);
	uint64_t sum = 0;
	for (unsigned i = 0; i < cl->nslots; i++) {
		unsigned v = alx_nib_get(nibs, i);
		if ((r->freebits[i >> 6] >> (i & 63u)) & 1u) {
			if (v)
				return ALLOC_ECORRUPT;
		}
		sum += v;
	}
	if ((cl->nslots & 1u) && (nibs[cl->nslots >> 1] >> 4))
		return ALLOC_ECORRUPT;
	*waste += sum;
	const struct alx_heap *h = &a->heap[r->cls];
	if (nfree > 0 ? (r->heap_idx >= h->n || h->v[r->heap_idx].run != r || h->v[r->heap_idx].start != start)
	              : r->heap_idx != ALX_NOT_IN_HEAP)
		return ALLOC_ECORRUPT;
	return ALLOC_OK;
}

static int check_units(const struct alloc *a, struct alx_kv *units, uint64_t *nunits)
{
	uint64_t n = 0, used = 0, waste = 0, blocks = 0, nruns = 0, nlarge = 0, slack = 0, run_free = 0;
	uint32_t runs_of[ALX_NCLASSES] = {0}, partial_of[ALX_NCLASSES] = {0};
	uint64_t empty = 0;
	for (uint64_t i = 0; i < a->tab_cap; i++)
		empty += a->tab[i].key == 0;
	if (empty == 0) /* lookups would never terminate */
		return ALLOC_ECORRUPT;
	for (uint64_t i = 0; i < a->tab_cap; i++) {
		const struct alx_slot *s = &a->tab[i];
		if (!s->key)
			continue;
		if (n >= a->tab_n || alx_tab_find(a, s->key) != s)
			return ALLOC_ECORRUPT;
		uint64_t start = s->key & ~(uint64_t)ALX_TAG_MASK;
		if ((s->key & ALX_TAG_MASK) == ALX_TAG_RUN) {
			const struct run *r = (const struct run *)(uintptr_t)s->val;
			if (check_run(a, r, start, &waste) != ALLOC_OK)
				return ALLOC_ECORRUPT;
			const struct alx_class *cl = &alx_classes[r->cls];
			uint64_t taken = cl->nslots - r->nfree;
			used += taken * cl->size;
			blocks += taken;
			run_free += (uint64_t)r->nfree * cl->size;
			slack += cl->slack;
			nruns++;
			runs_of[r->cls]++;
			partial_of[r->cls] += r->nfree > 0;
			units[n].key = start;
			units[n].val = 1ull << cl->shift;
		} else if ((s->key & ALX_TAG_MASK) == ALX_TAG_LARGE) {
			uint64_t size = s->val, len = alloc_round(size);
			if (size <= ALLOC_SMALL_MAX || len == 0 || start < a->base || start >= a->end ||
			    len > a->end - start)
				return ALLOC_ECORRUPT;
			used += len;
			waste += len - size;
			blocks++;
			nlarge++;
			units[n].key = start;
			units[n].val = len;
		} else {
			return ALLOC_ECORRUPT;
		}
		n++;
	}
	if (n != a->tab_n || used != a->used || waste != a->waste || blocks != a->blocks || nruns != a->nruns ||
	    nlarge != a->nlarge || slack != a->slack || run_free != a->run_free)
		return ALLOC_ECORRUPT;
	for (unsigned c = 0; c < ALX_NCLASSES; c++) {
		const struct alx_heap *h = &a->heap[c];
		if (h->nruns != runs_of[c] || h->n != partial_of[c] || h->cap < h->nruns || (h->cap && !h->v))
			return ALLOC_ECORRUPT;
		/* every partial run points at a distinct heap slot holding it, so the slots are exactly
		 * the partial runs and can be dereferenced */
		for (uint32_t i = 1; i < h->n; i++)
			if (h->v[(i - 1) / 2].start >= h->v[i].start)
				return ALLOC_ECORRUPT;
	}
	*nunits = n;
	return ALLOC_OK;
}

int alloc_check(const struct alloc *a)
{
	if (!a)
		return ALLOC_EINVAL;
	if (a->base % ALLOC_ALIGN || a->end % ALLOC_ALIGN || a->end < a->base)
		return ALLOC_ECORRUPT;
	if (!a->tab || a->tab_cap < 16 || (a->tab_cap & (a->tab_cap - 1)) ||
	    a->tab_shift != 64u - (unsigned)__builtin_ctzll(a->tab_cap) || a->tab_n > a->tab_cap / 4 * 3)
		return ALLOC_ECORRUPT;

	int rc = ALLOC_ECORRUPT;
	uint64_t ncap = a->ext_n + 1;
	struct ext **byaddr = malloc(ncap * sizeof *byaddr), **bysize = malloc(ncap * sizeof *bysize);
	struct alx_kv *units = malloc((a->tab_n + 1) * sizeof *units);
	if (!byaddr || !bysize || !units) {
		rc = ALLOC_ENOMEM;
		goto out;
	}

	/* free extents: both treaps hold the same nodes; extents are aligned, inside the region and
	 * maximal (never adjacent) */
	struct walk wa = { a, ALX_BY_ADDR, byaddr, 0, ncap, false };
	walk_tree(&wa, a->root[ALX_BY_ADDR], NULL, NULL, UINT32_MAX);
	struct walk ws = { a, ALX_BY_SIZE, bysize, 0, ncap, false };
	walk_tree(&ws, a->root[ALX_BY_SIZE], NULL, NULL, UINT32_MAX);
	if (wa.bad || ws.bad || wa.n != a->ext_n || ws.n != a->ext_n)
		goto out;
	uint64_t bytes = 0, hist[ALLOC_HIST_BUCKETS] = {0};
	for (uint64_t i = 0; i < wa.n; i++) {
		const struct ext *x = byaddr[i];
		if (x->len == 0 || x->off % ALLOC_ALIGN || x->len % ALLOC_ALIGN || x->off < a->base ||
		    x->off > a->end || x->len > a->end - x->off)
			goto out;
		if (i > 0 && byaddr[i - 1]->off + byaddr[i - 1]->len >= x->off)
			goto out;
		bytes += x->len;
		hist[alx_hist_bucket(x->len)]++;
	}
	for (uint64_t i = 0; i < ws.n; i++)
		if (!in_vec(byaddr, wa.n, bysize[i]))
			goto out;
	if (bytes != a->ext_bytes || memcmp(hist, a->hist, sizeof hist))
		goto out;

	/* spare nodes: enough that frees never allocate */
	uint64_t pool = 0;
	for (const struct ext *p = a->pool; p; p = p->kid[0][0])
		if (++pool > a->pool_n)
			goto out;
	if (pool != a->pool_n || a->nodes != a->pool_n + a->ext_n || a->nodes < a->nruns + a->nlarge + 2)
		goto out;

	/* units, counters, heaps */
	uint64_t nu = 0;
	if (check_units(a, units, &nu) != ALLOC_OK)
		goto out;
	if (a->used + a->ext_bytes + a->run_free + a->slack != a->end - a->base)
		goto out;

	/* free extents and units tile the region exactly */
	if (alx_sort_kv(units, nu) != ALLOC_OK) {
		rc = ALLOC_ENOMEM;
		goto out;
	}
	uint64_t cur = a->base, iu = 0, ie = 0;
	bool prev_free = false;
	while (cur < a->end) {
		if (ie < wa.n && byaddr[ie]->off == cur) {
			if (prev_free)
				goto out;
			cur += byaddr[ie++]->len;
			prev_free = true;
		} else if (iu < nu && units[iu].key == cur) {
			cur += units[iu++].val;
			prev_free = false;
		} else {
			goto out;
		}
	}
	if (cur != a->end || iu != nu || ie != wa.n)
		goto out;
	rc = ALLOC_OK;
out:
	free(byaddr);
	free(bysize);
	free(units);
	return rc;
}

/* ---- building an allocator from a list of units ---- */

/* A unit handed to build(): a run (owned) or a large block (run == NULL, req = requested size). */
struct unit {
	uint64_t start, len;
	struct run *run;
	uint64_t req;
};

static void free_unit_runs(struct unit *u, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(u[i].run);
}

/* Make an allocator over [base, end) whose units are u[0..n) (sorted by start, runs fully formed);
 * the gaps become free extents. Takes ownership of the runs whatever happens. */
static int build(uint64_t base, uint64_t end, struct unit *u, size_t n, struct alloc **out)
{
	uint64_t cur = base;
	size_t gaps = 0;
	uint32_t runs_of[ALX_NCLASSES] = {0};
	for (size_t i = 0; i < n; i++) {
		if (u[i].start < cur || u[i].start > end || u[i].len > end - u[i].start) {
			free_unit_runs(u, n);
			return ALLOC_ECORRUPT;
		}
		gaps += u[i].start > cur;
		cur = u[i].start + u[i].len;
		if (u[i].run)
			runs_of[u[i].run->cls]++;
	}
	gaps += cur < end;

	struct alloc *a = alx_new(base, end);
	struct ext **vec = gaps ? malloc(gaps * sizeof *vec) : NULL;
	bool ok = a && (!gaps || vec) && alx_tab_reserve(a, n) == ALLOC_OK && alx_node_reserve(a, n + 2) == ALLOC_OK;
	for (unsigned c = 0; ok && c < ALX_NCLASSES; c++) {
		if (!runs_of[c])
			continue;
		a->heap[c].v = malloc(runs_of[c] * sizeof *a->heap[c].v);
		a->heap[c].cap = runs_of[c];
		ok = a->heap[c].v != NULL;
	}
	if (!ok) {
		free_unit_runs(u, n);
		free(vec);
		alx_free_all(a);
		return ALLOC_ENOMEM;
	}

	cur = base;
	size_t k = 0;
	for (size_t i = 0; i <= n; i++) {
		uint64_t next = i < n ? u[i].start : end;
		if (next > cur) {
			struct ext *x = alx_node_get(a);
			x->off = cur;
			x->len = next - cur;
			vec[k++] = x;
		}
		if (i == n)
			break;
		struct run *r = u[i].run;
		if (r) {
			const struct alx_class *cl = &alx_classes[r->cls];
			struct alx_heap *h = &a->heap[r->cls];
			alx_tab_put(a, r->start | ALX_TAG_RUN, (uint64_t)(uintptr_t)r);
			h->nruns++;
			r->heap_idx = ALX_NOT_IN_HEAP;
			if (r->nfree) { /* appended in address order: a sorted array is a valid min-heap */
				r->heap_idx = h->n;
				h->v[h->n++] = (struct alx_hent){ r->start, r };
			}
			uint64_t taken = cl->nslots - r->nfree;
			const uint8_t *nibs = alx_run_cnibs(r);
			for (unsigned b = 0; b < cl->nibbytes; b++)
				a->waste += (nibs[b] & 15u) + (nibs[b] >> 4);
			a->used += taken * cl->size;
			a->blocks += taken;
			a->run_free += (uint64_t)r->nfree * cl->size;
			a->slack += cl->slack;
			a->nruns++;
		} else {
			alx_tab_put(a, u[i].start | ALX_TAG_LARGE, u[i].req);
			a->used += u[i].len;
			a->waste += u[i].len - u[i].req;
			a->blocks++;
			a->nlarge++;
		}
		cur = u[i].start + u[i].len;
	}
	if (alx_ext_build(a, vec, gaps) != ALLOC_OK) {
		for (size_t j = 0; j < gaps; j++)
			alx_node_put(a, vec[j]);
		free(vec);
		alx_free_all(a); /* the runs are in its table now */
		return ALLOC_ENOMEM;
	}
	free(vec);
	*out = a;
	return ALLOC_OK;
}

/* ---- alloc_rebuild ---- */

int alloc_rebuild(uint64_t base, uint64_t end, const struct alloc_block *live, size_t n, struct alloc **out)
{
	if (!out || (n && !live))
		return ALLOC_EINVAL;
	if (base % ALLOC_ALIGN || end % ALLOC_ALIGN || end < base)
		return ALLOC_EINVAL;
	if (n > SIZE_MAX / sizeof(struct unit))
		return ALLOC_ENOMEM;
	/* units are far fewer than blocks when most are small: start small and grow */
	size_t ucap = n / 16 + 16, m = 0;
	struct alx_kv *kv = malloc((n ? n : 1) * sizeof *kv);
	struct unit *u = malloc(ucap * sizeof *u);
	if (!kv || !u) {
		free(kv);
		free(u);
		return ALLOC_ENOMEM;
	}
	int rc = ALLOC_ECORRUPT;
	for (size_t i = 0; i < n; i++) {
		uint64_t off = live[i].off, size = live[i].size, len = alloc_round(size);
		if (len == 0 || off % ALLOC_ALIGN || off < base || off >= end || len > end - off)
			goto fail;
		kv[i].key = (off - base) / ALLOC_ALIGN;
		kv[i].val = size;
	}
	if (alx_sort_kv(kv, n) != ALLOC_OK) {
		rc = ALLOC_ENOMEM;
		goto fail;
	}

	/* One pass in address order. A small block's run is the window of its class's run size that
	 * contains it, exactly where alloc would have put it; consecutive blocks in one window share
	 * the run. Any unit starting before the previous one ended is an overlap or a run conflict. */
	uint64_t last_end = base;
	struct run *cur = NULL;
	for (size_t i = 0; i < n; i++) {
		uint64_t off = base + kv[i].key * ALLOC_ALIGN, size = kv[i].val;
		if (m == ucap) {
			struct unit *nu = realloc(u, 2 * ucap * sizeof *u);
			if (!nu) {
				rc = ALLOC_ENOMEM;
				goto fail;
			}
			u = nu;
			ucap *= 2;
		}
		if (size > ALLOC_SMALL_MAX) {
			if (off < last_end)
				goto fail;
			u[m++] = (struct unit){ off, alloc_round(size), NULL, size };
			last_end = off + alloc_round(size);
			cur = NULL;
			continue;
		}
		unsigned c = alx_class_of(size);
		const struct alx_class *cl = &alx_classes[c];
		uint64_t rsize = 1ull << cl->shift, ws = base + ((off - base) & ~(rsize - 1));
		if (!cur || cur->start != ws) {
			if (ws < last_end || rsize > end - ws)
				goto fail;
			if (!(cur = alx_run_new(c, ws))) {
				rc = ALLOC_ENOMEM;
				goto fail;
			}
			u[m++] = (struct unit){ ws, rsize, cur, 0 };
			last_end = ws + rsize;
		} else if (cur->cls != c) {
			goto fail;
		}
		uint32_t d = (uint32_t)(off - ws), slot = d / cl->size;
		if (slot * cl->size != d || slot >= cl->nslots || !(cur->freebits[slot >> 6] & (1ull << (slot & 63u))))
			goto fail;
		cur->freebits[slot >> 6] &= ~(1ull << (slot & 63u));
		alx_run_nibs(cur)[slot >> 1] |= (uint8_t)((cl->size - size) << ((slot & 1u) * 4u));
		cur->nfree--;
	}
	for (size_t i = 0; i < m; i++) {
		struct run *r = u[i].run;
		if (!r)
			continue;
		while (r->hint + 1u < alx_classes[r->cls].nwords && r->freebits[r->hint] == 0)
			r->hint++;
	}
	free(kv);
	rc = build(base, end, u, m, out);
	free(u);
	return rc;
fail:
	free_unit_runs(u, m);
	free(kv);
	free(u);
	return rc;
}

/* ---- export / import ---- */

/* Blob layout, all little-endian:
 *   header (64 bytes): magic "MSALLOC\0", u32 version, u32 header size, u64 total size, u64 base,
 *                      u64 end, u64 run count, u64 large-block count, u64 reserved (0)
 *   runs by start:     u64 start, u8 class, u8 0, u16 0, u32 free slots, bitmap words, nibbles
 *                      padded with zeros to 8 bytes
 *   large by offset:   u64 offset, u64 requested size
 *   trailer:           u64 checksum of everything before it
 * Free extents are not stored: they are the gaps between units. */
#define BLOB_MAGIC "MSALLOC"
#define BLOB_VERSION 1u
#define BLOB_HEADER 64u
#define BLOB_TRAILER 8u

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Each step is a bijection of the state, so changing any single 8-byte word (a flipped bit, say)
 * always changes the result; wider damage is caught with probability 1 - 2^-64. */
static uint64_t blob_sum(const uint8_t *p, size_t n)
{
	uint64_t h = 0x6d73746f7265616cull ^ n;
	for (size_t i = 0; i + 8 <= n; i += 8) {
		h ^= get64(p + i);
		h *= 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 29);
}

static size_t run_record(unsigned c)
{
	const struct alx_class *cl = &alx_classes[c];
	return 16u + cl->nwords * 8u + ((cl->nibbytes + 7u) & ~7u);
}

size_t alloc_export_size(const struct alloc *a)
{
	if (!a)
		return 0;
	size_t n = BLOB_HEADER + BLOB_TRAILER + a->nlarge * 16u;
	for (unsigned c = 0; c < ALX_NCLASSES; c++)
		n += a->heap[c].nruns * run_record(c);
	return n;
}

int alloc_export(const struct alloc *a, void *buf, size_t cap, size_t *len)
{
	if (!a || (!buf && cap))
		return ALLOC_EINVAL;
	size_t need = alloc_export_size(a);
	if (len)
		*len = need;
	if (cap < need)
		return ALLOC_EINVAL;
	struct alx_kv *units = malloc((a->tab_n + 1) * sizeof *units);
	if (!units)
		return ALLOC_ENOMEM;
	size_t n = 0;
	for (uint64_t i = 0; i < a->tab_cap; i++)
		if (a->tab[i].key)
			units[n++] = (struct alx_kv){ a->tab[i].key & ~(uint64_t)ALX_TAG_MASK, i };
	if (alx_sort_kv(units, n) != ALLOC_OK) {
		free(units);
		return ALLOC_ENOMEM;
	}
	uint8_t *p = buf;
	memset(p, 0, need);
	memcpy(p, BLOB_MAGIC, sizeof BLOB_MAGIC);
	put32(p + 8, BLOB_VERSION);
	put32(p + 12, BLOB_HEADER);
	put64(p + 16, need);
	put64(p + 24, a->base);
	put64(p + 32, a->end);
	put64(p + 40, a->nruns);
	put64(p + 48, a->nlarge);
	size_t pos = BLOB_HEADER;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			const struct alx_slot *s = &a->tab[units[i].val];
			if (pass == 0 && (s->key & ALX_TAG_MASK) == ALX_TAG_RUN) {
				const struct run *r = (const struct run *)(uintptr_t)s->val;
				const struct alx_class *cl = &alx_classes[r->cls];
				put64(p + pos, r->start);
				p[pos + 8] = r->cls;
				put32(p + pos + 12, r->nfree);
				pos += 16;
				for (unsigned w = 0; w < cl->nwords; w++, pos += 8)
					put64(p + pos, r->freebits[w]);
				memcpy(p + pos, alx_run_cnibs(r), cl->nibbytes);
				pos += (cl->nibbytes + 7u) & ~7u;
			} else if (pass == 1 && (s->key & ALX_TAG_MASK) == ALX_TAG_LARGE) {
				put64(p + pos, units[i].key);
				put64(p + pos + 8, s->val);
				pos += 16;
			}
		}
	}
	put64(p + pos, blob_sum(p, pos));
	free(units);
	return ALLOC_OK;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Parse one run record at p (bounds already checked) into a fresh run, or NULL when inconsistent. */
static struct run *parse_run(const uint8_t *p, uint64_t base, uint64_t end, int *rc)
{
	*rc = ALLOC_ECORRUPT;
	uint64_t start = get64(p);
	unsigned c = p[8];
	if (c >= ALX_NCLASSES || !all_zero(p + 9, 3))
		return NULL;
	const struct alx_class *cl = &alx_classes[c];
	uint64_t rsize = 1ull << cl->shift;
	uint32_t nfree = get32(p + 12);
	if (start < base || start > end || ((start - base) & (rsize - 1)) || rsize > end - start || nfree >= cl->nslots)
		return NULL;
	struct run *r = alx_run_new(c, start);
	if (!r) {
		*rc = ALLOC_ENOMEM;
		return NULL;
	}
	unsigned count = 0;
	for (unsigned w = 0; w < cl->nwords; w++) {
		uint64_t bits = get64(p + 16 + 8u * w);
		if (bits & ~r->freebits[w]) /* alx_run_new set exactly the valid slots */
			goto bad;
		r->freebits[w] = bits;
		count += (unsigned)__builtin_popcountll(bits);
	}
	if (count != nfree)
		goto bad;
	r->nfree = (uint16_t)nfree;
	const uint8_t *nsrc = p + 16 + 8u * cl->nwords;
	uint8_t *nibs = alx_run_nibs(r);
	memcpy(nibs, nsrc, cl->nibbytes);
	if (!all_zero(nsrc + cl->nibbytes, ((cl->nibbytes + 7u) & ~7u) - cl->nibbytes))
		goto bad;
	if ((cl->nslots & 1u) && (nibs[cl->nslots >> 1] >> 4))
		goto bad;
	for (unsigned i = 0; i < cl->nslots; i++)
		if (((r->freebits[i >> 6] >> (i & 63u)) & 1u) && alx_nib_get(nibs, i))
			goto bad;
	while (r->hint + 1u < cl->nwords && r->freebits[r->hint] == 0)
		r->hint++;
	return r;
bad:
	free(r);
	return NULL;
}

int alloc_import(const void *buf, size_t len, struct alloc **out)
{
	if (!out || (!buf && len))
		return ALLOC_EINVAL;
	const uint8_t *p = buf;
	if (len < BLOB_HEADER + BLOB_TRAILER || len % 8 || memcmp(p, BLOB_MAGIC, sizeof BLOB_MAGIC) ||
	    get32(p + 8) != BLOB_VERSION || get32(p + 12) != BLOB_HEADER || get64(p + 16) != len ||
	    get64(p + 56) != 0 || blob_sum(p, len - BLOB_TRAILER) != get64(p + len - BLOB_TRAILER))
		return ALLOC_ECORRUPT;
	uint64_t base = get64(p + 24), end = get64(p + 32), nruns = get64(p + 40), nlarge = get64(p + 48);
	size_t body = len - BLOB_HEADER - BLOB_TRAILER;
	/* the smallest run record is 32 bytes, a large one 16: bound the counts before allocating */
	if (base % ALLOC_ALIGN || end % ALLOC_ALIGN || end < base || nruns > body / 32 || nlarge > body / 16 ||
	    nruns * 32 + nlarge * 16 > body)
		return ALLOC_ECORRUPT;
	size_t n = (size_t)(nruns + nlarge);
	struct unit *u = malloc((n ? n : 1) * sizeof *u), *m = malloc((n ? n : 1) * sizeof *m);
	if (!u || !m) {
		free(u);
		free(m);
		return ALLOC_ENOMEM;
	}
	int rc = ALLOC_ECORRUPT;
	size_t k = 0, pos = BLOB_HEADER, stop = len - BLOB_TRAILER;
	for (uint64_t i = 0; i < nruns; i++) {
		if (stop - pos < 16 || p[pos + 8] >= ALX_NCLASSES || stop - pos < run_record(p[pos + 8]))
			goto fail;
		struct run *r = parse_run(p + pos, base, end, &rc);
		if (!r)
			goto fail;
		u[k++] = (struct unit){ r->start, 1ull << alx_classes[r->cls].shift, r, 0 };
		if (k > 1 && u[k - 2].start >= r->start) {
			rc = ALLOC_ECORRUPT;
			goto fail;
		}
		pos += run_record(r->cls);
	}
	rc = ALLOC_ECORRUPT;
	for (uint64_t i = 0; i < nlarge; i++) {
		if (stop - pos < 16)
			goto fail;
		uint64_t off = get64(p + pos), size = get64(p + pos + 8), blen = alloc_round(size);
		if (size <= ALLOC_SMALL_MAX || blen == 0 || off % ALLOC_ALIGN || off < base || off >= end ||
		    blen > end - off || (i > 0 && u[k - 1].start >= off))
			goto fail;
		u[k++] = (struct unit){ off, blen, NULL, size };
		pos += 16;
	}
	if (pos != stop)
		goto fail;
	/* merge the two sorted sections into address order; build() rejects any overlap */
	size_t ir = 0, il = (size_t)nruns, o = 0;
	while (ir < nruns || il < n) {
		if (il >= n || (ir < nruns && u[ir].start < u[il].start))
			m[o++] = u[ir++];
		else
			m[o++] = u[il++];
	}
	free(u);
	rc = build(base, end, m, n, out);
	free(m);
	return rc;
fail:
	free_unit_runs(u, k);
	free(u);
	free(m);
	return rc;
}
