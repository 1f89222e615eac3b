/* alloc/stats.c - statistics and walks: alloc_stats and alloc_free_bytes, and the walks over free
 * space (alloc_foreach_free over the free extents, alloc_free_each over free run slots too). */
#include "alloc_internal.h"

#include <string.h>

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
