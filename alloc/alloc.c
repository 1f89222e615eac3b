/* alloc/alloc.c - the allocator's lifetime and region (alx_new and alx_free_all, alloc_create and
 * alloc_destroy, alloc_grow, alloc_shrink, alloc_tail_free), alloc_round, and the public
 * alloc/free/mark entry points that dispatch between size-class runs (classes.c) and large blocks. */
#include "alloc_internal.h"

#include <stdlib.h>

uint64_t alloc_round(uint64_t size)
{
	if (size == 0 || size > UINT64_MAX - (ALLOC_ALIGN - 1))
		return 0;
	return (size + ALLOC_ALIGN - 1) & ~(uint64_t)(ALLOC_ALIGN - 1);
}

/* ---- lifetime and region ---- */

struct alloc *alx_new(uint64_t base, uint64_t end)
{
	struct alloc *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->base = base;
	a->end = end;
	a->rng = 0x9E3779B97F4A7C15ull ^ base;
	if (a->rng == 0)
		a->rng = 1;
	a->tab_cap = 16;
	a->tab_shift = 60;
	a->tab = calloc(a->tab_cap, sizeof *a->tab);
	if (!a->tab || alx_node_reserve(a, 2) != ALLOC_OK) {
		alx_free_all(a);
		return NULL;
	}
	return a;
}

static void free_tree(struct ext *x)
{
	while (x) {
		free_tree(x->kid[ALX_BY_ADDR][0]);
		struct ext *r = x->kid[ALX_BY_ADDR][1];
		free(x);
		x = r;
	}
}

void alx_free_all(struct alloc *a)
{
	if (!a)
		return;
	free_tree(a->root[ALX_BY_ADDR]);
	while (a->pool) {
		struct ext *n = a->pool;
		a->pool = n->kid[0][0];
		free(n);
	}
	if (a->tab) {
		for (uint64_t i = 0; i < a->tab_cap; i++)
			if ((a->tab[i].key & ALX_TAG_MASK) == ALX_TAG_RUN)
				free((struct run *)(uintptr_t)a->tab[i].val);
		free(a->tab);
	}
	for (unsigned c = 0; c < ALX_NCLASSES; c++)
		free(a->heap[c].v);
	free(a);
}

int alloc_create(uint64_t base, uint64_t end, struct alloc **out)
{
	if (!out || base % ALLOC_ALIGN || end % ALLOC_ALIGN || end < base)
		return ALLOC_EINVAL;
	struct alloc *a = alx_new(base, end);
	if (!a)
		return ALLOC_ENOMEM;
	if (end > base) {
		struct ext *n = alx_node_get(a);
		n->off = base;
		n->len = end - base;
		alx_addr_insert(a, n);
		alx_size_insert(a, n);
	}
	*out = a;
	return ALLOC_OK;
}

void alloc_destroy(struct alloc *a)
{
	alx_free_all(a);
}

int alloc_grow(struct alloc *a, uint64_t new_end)
{
	if (!a || new_end % ALLOC_ALIGN || new_end < a->end)
		return ALLOC_EINVAL;
	if (new_end == a->end)
		return ALLOC_OK;
	struct ext *last = alx_addr_last(a);
	if (last && last->off + last->len == a->end) {
		alx_size_remove(a, last);
		last->len += new_end - a->end;
		alx_size_insert(a, last);
	} else {
		/* a spare node always exists (nodes >= units + 2), this only guards a broken invariant */
		if (a->pool_n == 0 && alx_node_reserve(a, a->nodes + 1) != ALLOC_OK)
			return ALLOC_ENOMEM;
		struct ext *n = alx_node_get(a);
		n->off = a->end;
		n->len = new_end - a->end;
		alx_addr_insert(a, n);
		alx_size_insert(a, n);
	}
	a->end = new_end;
	return ALLOC_OK;
}

int alloc_shrink(struct alloc *a, uint64_t new_end)
{
	if (!a || new_end % ALLOC_ALIGN || new_end < a->base || new_end > a->end)
		return ALLOC_EINVAL;
	if (new_end == a->end)
		return ALLOC_OK;
	struct ext *last = alx_addr_last(a);
	if (!last || last->off + last->len != a->end || last->off > new_end)
		return ALLOC_EINVAL;
	alx_size_remove(a, last);
	if (last->off == new_end) {
		alx_addr_remove(a, last);
		alx_node_put(a, last);
	} else {
		last->len = new_end - last->off;
		alx_size_insert(a, last);
	}
	a->end = new_end;
	alx_node_trim(a);
	return ALLOC_OK;
}

uint64_t alloc_tail_free(const struct alloc *a)
{
	if (!a)
		return 0;
	const struct ext *last = alx_addr_last(a);
	return last && last->off + last->len == a->end ? last->len : 0;
}

/* ---- public entry points ---- */

int alloc_alloc(struct alloc *a, uint64_t size, uint64_t *off)
{
	if (!a || !off || size == 0)
		return ALLOC_EINVAL;
	if (size <= ALLOC_SMALL_MAX)
		return alx_small_alloc(a, size, off);
	if (size > a->end - a->base)
		return ALLOC_ENOSPC;
	return alx_large_alloc(a, size, off);
}

static bool block_in_region(const struct alloc *a, uint64_t off, uint64_t size)
{
	uint64_t len = alloc_round(size);
	return size != 0 && len != 0 && off % ALLOC_ALIGN == 0 && off >= a->base && off < a->end &&
	       len <= a->end - off;
}

int alloc_free(struct alloc *a, uint64_t off, uint64_t size)
{
	if (!a || !block_in_region(a, off, size))
		return ALLOC_EINVAL;
	return size <= ALLOC_SMALL_MAX ? alx_small_free(a, off, size) : alx_large_free(a, off, size);
}

int alloc_mark(struct alloc *a, uint64_t off, uint64_t size)
{
	if (!a || !block_in_region(a, off, size))
		return ALLOC_EINVAL;
	return size <= ALLOC_SMALL_MAX ? alx_small_mark(a, off, size) : alx_large_mark(a, off, size);
}
