/* alloc/classes.c - small blocks: 32 size classes (16..512 bytes, every 16) carved from runs, and their
 * alloc/free/mark (alx_small_*, which alloc.c's entry points call). A run is an extent aligned to its
 * own power-of-two size relative to base, so a block's run is one table lookup away. */
#include "alloc_internal.h"

#include <stdlib.h>
#include <string.h>

/* Run size per class: the smallest power of two from 4 KiB to 32 KiB giving at least 32 slots with
 * at most 1% slack, else the one with the least slack (worst case 1.1%). Few slots per run means runs
 * empty out, and go back to the extent allocator, more readily under churn. */
#define CL(sz, sh)                                                                                   \
	{ (sz), (sh), (uint8_t)((((1u << (sh)) / (sz)) + 63u) / 64u), (uint16_t)((1u << (sh)) / (sz)), \
	  (uint16_t)((1u << (sh)) % (sz)), (uint16_t)((((1u << (sh)) / (sz)) + 1u) / 2u) }
const struct alx_class alx_classes[ALX_NCLASSES] = {
	CL(16, 12),  CL(32, 12),  CL(48, 12),  CL(64, 12),  CL(80, 12),  CL(96, 13),  CL(112, 13), CL(128, 12),
	CL(144, 14), CL(160, 13), CL(176, 14), CL(192, 14), CL(208, 13), CL(224, 14), CL(240, 13), CL(256, 13),
	CL(272, 14), CL(288, 15), CL(304, 15), CL(320, 14), CL(336, 15), CL(352, 15), CL(368, 15), CL(384, 15),
	CL(400, 15), CL(416, 14), CL(432, 15), CL(448, 15), CL(464, 14), CL(480, 14), CL(496, 14), CL(512, 14),
};
#undef CL

/* ---- runs ---- */

size_t alx_run_bytes(unsigned c)
{
	const struct alx_class *cl = &alx_classes[c];
	return sizeof(struct run) + cl->nwords * sizeof(uint64_t) + cl->nibbytes;
}

struct run *alx_run_new(unsigned c, uint64_t start)
{
	const struct alx_class *cl = &alx_classes[c];
	struct run *r = malloc(alx_run_bytes(c));
	if (!r)
		return NULL;
	r->start = start;
	r->heap_idx = ALX_NOT_IN_HEAP;
	r->nfree = cl->nslots;
	r->cls = (uint8_t)c;
	r->hint = 0;
	for (unsigned w = 0; w < cl->nwords; w++) {
		unsigned left = cl->nslots - w * 64u;
		r->freebits[w] = left >= 64 ? UINT64_MAX : (1ull << left) - 1;
	}
	memset(alx_run_nibs(r), 0, cl->nibbytes);
	return r;
}

static void heap_set(struct alx_heap *h, uint32_t i, struct alx_hent e)
{
	h->v[i] = e;
	e.run->heap_idx = i;
}

static uint32_t sift_up(struct alx_heap *h, uint32_t i, struct alx_hent e)
{
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (h->v[p].start < e.start)
			break;
		heap_set(h, i, h->v[p]);
		i = p;
	}
	heap_set(h, i, e);
	return i;
}

static void sift_down(struct alx_heap *h, uint32_t i, struct alx_hent e)
{
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1].start < h->v[c].start)
			c++;
		if (e.start < h->v[c].start)
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, e);
}

static void heap_push(struct alx_heap *h, struct run *r)
{
	uint32_t i = h->n++;
	sift_up(h, i, (struct alx_hent){ r->start, r });
}

static void heap_remove(struct alx_heap *h, struct run *r)
{
	uint32_t i = r->heap_idx;
	r->heap_idx = ALX_NOT_IN_HEAP;
	if (--h->n == i)
		return;
	struct alx_hent moved = h->v[h->n];
	sift_down(h, sift_up(h, i, moved), moved);
}

/* Make room for one more run of class c: unit table, nodes, and a heap slot so that a free turning
 * a full run partial can push it without allocating. */
static int run_reserve(struct alloc *a, unsigned c)
{
	struct alx_heap *h = &a->heap[c];
	if (h->cap < h->nruns + 1) {
		uint32_t cap = h->cap ? h->cap * 2 : 8;
		struct alx_hent *v = realloc(h->v, cap * sizeof *v);
		if (!v)
			return ALLOC_ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	return alx_unit_reserve(a);
}

static void run_install(struct alloc *a, struct run *r)
{
	const struct alx_class *cl = &alx_classes[r->cls];
	struct alx_heap *h = &a->heap[r->cls];
	alx_tab_put(a, r->start | ALX_TAG_RUN, (uint64_t)(uintptr_t)r);
	h->nruns++;
	heap_push(h, r);
	a->nruns++;
	a->slack += cl->slack;
	a->run_free += (uint64_t)cl->nslots * cl->size;
}

/* Book slot i (known free) of run r for a request of `size` bytes. */
static void slot_take(struct alloc *a, struct run *r, unsigned i, uint64_t size)
{
	const struct alx_class *cl = &alx_classes[r->cls];
	uint8_t *nib = &alx_run_nibs(r)[i >> 1];
	unsigned sh = (i & 1u) * 4u;
	r->freebits[i >> 6] &= ~(1ull << (i & 63u));
	*nib = (uint8_t)((*nib & ~(15u << sh)) | ((unsigned)(cl->size - size) << sh));
	if (--r->nfree == 0)
		heap_remove(&a->heap[r->cls], r);
	a->used += cl->size;
	a->waste += cl->size - size;
	a->blocks++;
	a->run_free -= cl->size;
}

int alx_small_alloc(struct alloc *a, uint64_t size, uint64_t *off)
{
	unsigned c = alx_class_of(size);
	const struct alx_class *cl = &alx_classes[c];
	struct alx_heap *h = &a->heap[c];
	struct run *r;
	if (h->n) {
		r = h->v[0].run;
	} else {
		struct ext *x = alx_ext_find_window(a, cl->shift);
		if (!x)
			return ALLOC_ENOSPC;
		int rc = run_reserve(a, c);
		if (rc != ALLOC_OK)
			return rc;
		uint64_t ws = alx_ext_window_start(a, x, cl->shift);
		r = alx_run_new(c, ws);
		if (!r)
			return ALLOC_ENOMEM;
		alx_ext_carve(a, x, ws, 1ull << cl->shift);
		run_install(a, r);
	}
	unsigned w = r->hint;
	while (w < cl->nwords && r->freebits[w] == 0)
		w++;
	if (w >= cl->nwords)
		return ALLOC_ECORRUPT; /* nfree > 0 with no free bit: only reachable through memory damage */
	r->hint = (uint8_t)w;
	unsigned i = w * 64u + (unsigned)__builtin_ctzll(r->freebits[w]);
	slot_take(a, r, i, size);
	*off = r->start + (uint64_t)i * cl->size;
	return ALLOC_OK;
}

/* Locate small block off of class c: its run and slot, or NULL when there is no such run. */
static struct run *small_find(const struct alloc *a, uint64_t off, unsigned c, struct alx_slot **slot)
{
	uint64_t mask = (1ull << alx_classes[c].shift) - 1;
	uint64_t ws = a->base + ((off - a->base) & ~mask);
	struct alx_slot *s = alx_tab_find(a, ws | ALX_TAG_RUN);
	if (slot)
		*slot = s;
	return s ? (struct run *)(uintptr_t)s->val : NULL;
}

/* Slot index of off in a run of class c starting at ws, or -1 when off is not on a slot boundary. */
static long slot_index(uint64_t off, uint64_t ws, unsigned c)
{
	const struct alx_class *cl = &alx_classes[c];
	uint32_t d = (uint32_t)(off - ws), i = d / cl->size;
	if (i * cl->size != d || i >= cl->nslots)
		return -1;
	return (long)i;
}

int alx_small_free(struct alloc *a, uint64_t off, uint64_t size)
{
	unsigned c = alx_class_of(size);
	const struct alx_class *cl = &alx_classes[c];
	struct alx_slot *s;
	struct run *r = small_find(a, off, c, &s);
	if (!r || r->cls != c)
		return ALLOC_EINVAL;
	long li = slot_index(off, r->start, c);
	if (li < 0)
		return ALLOC_EINVAL;
	unsigned i = (unsigned)li, w = i >> 6;
	uint64_t bit = 1ull << (i & 63u);
	uint8_t *nibs = alx_run_nibs(r);
	if ((r->freebits[w] & bit) || alx_nib_get(nibs, i) != cl->size - size)
		return ALLOC_EINVAL;

	r->freebits[w] |= bit;
	nibs[i >> 1] &= (uint8_t)~(15u << ((i & 1u) * 4u));
	if (w < r->hint)
		r->hint = (uint8_t)w;
	a->used -= cl->size;
	a->waste -= cl->size - size;
	a->blocks--;
	a->run_free += cl->size;
	struct alx_heap *h = &a->heap[c];
	if (++r->nfree == cl->nslots) {
		/* empty: the run goes back to the extent allocator so the space can coalesce */
		if (r->heap_idx != ALX_NOT_IN_HEAP)
			heap_remove(h, r);
		h->nruns--;
		a->nruns--;
		a->slack -= cl->slack;
		a->run_free -= (uint64_t)cl->nslots * cl->size;
		uint64_t start = r->start;
		alx_tab_del(a, s);
		free(r);
		alx_ext_give(a, start, 1ull << cl->shift);
		alx_node_trim(a);
	} else if (r->nfree == 1) {
		heap_push(h, r);
	}
	return ALLOC_OK;
}

int alx_small_mark(struct alloc *a, uint64_t off, uint64_t size)
{
	unsigned c = alx_class_of(size);
	const struct alx_class *cl = &alx_classes[c];
	uint64_t rsize = 1ull << cl->shift;
	uint64_t ws = a->base + ((off - a->base) & ~(rsize - 1));
	long li = slot_index(off, ws, c);
	if (li < 0)
		return ALLOC_EINVAL;
	unsigned i = (unsigned)li;
	struct run *r = small_find(a, off, c, NULL);
	if (r) {
		if (r->cls != c || !(r->freebits[i >> 6] & (1ull << (i & 63u))))
			return ALLOC_EINVAL;
	} else {
		/* the whole window must be free: anything else there (a large block, a run of a class
		 * with another run size) conflicts */
		if (rsize > a->end - ws)
			return ALLOC_EINVAL;
		struct ext *x = alx_ext_containing(a, ws, rsize);
		if (!x)
			return ALLOC_EINVAL;
		int rc = run_reserve(a, c);
		if (rc != ALLOC_OK)
			return rc;
		r = alx_run_new(c, ws);
		if (!r)
			return ALLOC_ENOMEM;
		alx_ext_carve(a, x, ws, rsize);
		run_install(a, r);
	}
	slot_take(a, r, i, size);
	return ALLOC_OK;
}
