/* alloc/check.c - alloc_check, the invariant checker: both treaps and their annotations, the spare
 * nodes, every run and large block in the unit table against the counters and heaps, and that free
 * extents and units tile the region exactly. */
#include "alloc_internal.h"

#include <stdlib.h>
#include <string.h>

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
