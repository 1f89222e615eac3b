/* alloc/rebuild.c - alloc_rebuild, an allocator from the list of live blocks, and alx_build, the
 * validating builder it shares with alloc_import: an allocator from its units (runs and large blocks)
 * sorted by address, the gaps between them becoming the free extents. */
#include "alloc_internal.h"

#include <stdlib.h>

/* ---- building an allocator from a list of units ---- */

void alx_free_unit_runs(struct alx_unit *u, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(u[i].run);
}

/* Make an allocator over [base, end) whose units are u[0..n) (sorted by start, runs fully formed);
 * the gaps become free extents. Takes ownership of the runs whatever happens. */
int alx_build(uint64_t base, uint64_t end, struct alx_unit *u, size_t n, struct alloc **out)
{
	uint64_t cur = base;
	size_t gaps = 0;
	uint32_t runs_of[ALX_NCLASSES] = {0};
	for (size_t i = 0; i < n; i++) {
		if (u[i].start < cur || u[i].start > end || u[i].len > end - u[i].start) {
			alx_free_unit_runs(u, n);
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
		alx_free_unit_runs(u, n);
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
	if (n > SIZE_MAX / sizeof(struct alx_unit))
		return ALLOC_ENOMEM;
	/* units are far fewer than blocks when most are small: start small and grow */
	size_t ucap = n / 16 + 16, m = 0;
	struct alx_kv *kv = malloc((n ? n : 1) * sizeof *kv);
	struct alx_unit *u = malloc(ucap * sizeof *u);
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
			struct alx_unit *nu = realloc(u, 2 * ucap * sizeof *u);
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
			u[m++] = (struct alx_unit){ off, alloc_round(size), NULL, size };
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
			u[m++] = (struct alx_unit){ ws, rsize, cur, 0 };
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
	rc = alx_build(base, end, u, m, out);
	free(u);
	return rc;
fail:
	alx_free_unit_runs(u, m);
	free(kv);
	free(u);
	return rc;
}
