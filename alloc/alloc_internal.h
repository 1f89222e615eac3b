/* alloc/alloc_internal.h - private structures shared by the files of alloc/: alloc.c (lifetime, region,
 * public entry points), classes.c (size classes and runs), extents.c (free extents, unit table, large
 * blocks), rebuild.c (alloc_rebuild and the builder from units), export.c (the checkpoint blob), check.c
 * (alloc_check), stats.c (statistics and walks) and sort.c (the radix sort).
 * Not part of the API: only the allocator's own files (and white-box tests that corrupt state on
 * purpose to prove alloc_check notices) include it. All names are alx_-prefixed to stay out of the way. */
#ifndef MSTORE_ALLOC_INTERNAL_H
#define MSTORE_ALLOC_INTERNAL_H

#include "alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- size classes (classes.c) ---- */

#define ALX_NCLASSES 32u        /* 16, 32, ..., 512 bytes */
#define ALX_RUN_MIN_SHIFT 12u   /* runs are 4 KiB ... 32 KiB, a power of two per class */
#define ALX_RUN_MAX_SHIFT 15u
#define ALX_NOT_IN_HEAP UINT32_MAX

struct alx_class {
	uint16_t size;     /* slot size */
	uint8_t shift;     /* log2 of the run size; runs are aligned to it relative to base */
	uint8_t nwords;    /* 64-bit words in the free-slot bitmap */
	uint16_t nslots;   /* run size / slot size */
	uint16_t slack;    /* run size % slot size: bytes no slot can use */
	uint16_t nibbytes; /* bytes of per-slot waste nibbles */
};
extern const struct alx_class alx_classes[ALX_NCLASSES];

static inline unsigned alx_class_of(uint64_t size) { return (unsigned)((size - 1) >> 4); }

/* A run: one aligned extent cut into equal slots. Free slots have their bit set, so the first free
 * slot is a count-trailing-zeros away. Each slot also keeps (slot size - requested size), a value in
 * 0..15, in a nibble: that makes a free with the wrong size detectable and internal_waste exact. */
struct run {
	uint64_t start;
	uint32_t heap_idx;   /* position in its class's heap of partial runs, ALX_NOT_IN_HEAP when full */
	uint16_t nfree;
	uint8_t cls;
	uint8_t hint;        /* no free slot in bitmap words below this index */
	uint64_t freebits[]; /* nwords words, then nibbytes bytes of nibbles */
};

static inline uint8_t *alx_run_nibs(struct run *r) { return (uint8_t *)(r->freebits + alx_classes[r->cls].nwords); }
static inline const uint8_t *alx_run_cnibs(const struct run *r)
{
	return (const uint8_t *)(r->freebits + alx_classes[r->cls].nwords);
}
static inline unsigned alx_nib_get(const uint8_t *nibs, unsigned i) { return (nibs[i >> 1] >> ((i & 1u) * 4u)) & 15u; }

/* Min-heap of a class's partially filled runs keyed by start: allocation takes the lowest one. The
 * key sits next to the pointer so sifting compares within the array instead of chasing runs. */
struct alx_hent {
	uint64_t start;
	struct run *run;
};
struct alx_heap {
	struct alx_hent *v;
	uint32_t n, cap; /* cap >= nruns always, so pushing on the free path never allocates */
	uint32_t nruns;  /* all runs of this class, full ones included */
};

/* Allocate a heap-less run of class c at start with every slot free (NULL when malloc fails). */
struct run *alx_run_new(unsigned c, uint64_t start);
size_t alx_run_bytes(unsigned c);

/* Small blocks (size <= ALLOC_SMALL_MAX) for alloc_alloc, alloc_free and alloc_mark. */
int alx_small_alloc(struct alloc *a, uint64_t size, uint64_t *off);
int alx_small_free(struct alloc *a, uint64_t off, uint64_t size);
int alx_small_mark(struct alloc *a, uint64_t off, uint64_t size);

/* ---- free extents (extents.c) ---- */

enum { ALX_BY_ADDR = 0, ALX_BY_SIZE = 1 };

/* A free extent. It sits in two treaps at once (same priority in both): one keyed by address, one by
 * (length, address). The size treap also keeps, per subtree, the largest run size some extent in it
 * can host at its natural alignment, so finding a run's home is one descent. */
struct ext {
	uint64_t off, len;
	struct ext *kid[2][2]; /* [tree][left/right]; kid[0][0] links the spare pool */
	uint32_t prio;
	uint8_t fit;    /* 0: no aligned 4 KiB window; k: an aligned 2^(11+k) window fits */
	uint8_t subfit; /* max fit in this node's size-treap subtree */
};

/* Units are what is allocated from the extent allocator: runs and large blocks. One open-addressing
 * table holds both, keyed by start with a tag in the low bits (starts are 16-aligned, so key 0 can
 * mean empty): run -> struct run *, large block -> its requested size. */
#define ALX_TAG_RUN 1u
#define ALX_TAG_LARGE 2u
#define ALX_TAG_MASK 15u
struct alx_slot {
	uint64_t key, val;
};

struct alloc {
	uint64_t base, end;
	struct ext *root[2];
	struct ext *pool;        /* spare nodes: nodes >= units + 2 keeps frees from ever allocating */
	uint64_t pool_n, nodes;  /* nodes = in the treaps + in the pool */
	uint64_t rng;            /* treap priorities; deterministic so runs are reproducible */
	uint64_t ext_n, ext_bytes;
	uint64_t hist[ALLOC_HIST_BUCKETS];

	struct alx_slot *tab;
	uint64_t tab_cap, tab_n;
	unsigned tab_shift;      /* 64 - log2(tab_cap) for multiplicative hashing */

	struct alx_heap heap[ALX_NCLASSES];

	uint64_t used, waste, blocks, nruns, nlarge, slack;
	uint64_t run_free;       /* bytes of free slots inside runs */
};

/* alloc.c: an allocator over [base, end) without free extents, and its release (runs included). */
struct alloc *alx_new(uint64_t base, uint64_t end);
void alx_free_all(struct alloc *a);

struct ext *alx_node_get(struct alloc *a);
void alx_node_put(struct alloc *a, struct ext *n);
int alx_node_reserve(struct alloc *a, uint64_t total);
void alx_node_trim(struct alloc *a);
uint8_t alx_ext_fit(const struct alloc *a, uint64_t off, uint64_t len);
unsigned alx_hist_bucket(uint64_t len);

/* One node into or out of the size treap (keeping the extent counters and histogram) or the address
 * treap; the last free extent by address. */
void alx_size_insert(struct alloc *a, struct ext *n);
void alx_size_remove(struct alloc *a, struct ext *n);
void alx_addr_insert(struct alloc *a, struct ext *n);
void alx_addr_remove(struct alloc *a, struct ext *n);
struct ext *alx_addr_last(const struct alloc *a);

struct ext *alx_ext_find_window(const struct alloc *a, unsigned shift);
uint64_t alx_ext_window_start(const struct alloc *a, const struct ext *x, unsigned shift);
struct ext *alx_ext_containing(const struct alloc *a, uint64_t off, uint64_t len);
void alx_ext_carve(struct alloc *a, struct ext *x, uint64_t off, uint64_t len);
void alx_ext_give(struct alloc *a, uint64_t off, uint64_t len);
/* Build both treaps from nodes sorted by address (O(n) plus a radix sort); ALLOC_ENOMEM on failure. */
int alx_ext_build(struct alloc *a, struct ext **byaddr, size_t n);

int alx_unit_reserve(struct alloc *a);
struct alx_slot *alx_tab_find(const struct alloc *a, uint64_t key);
void alx_tab_put(struct alloc *a, uint64_t key, uint64_t val);
void alx_tab_del(struct alloc *a, struct alx_slot *s);
int alx_tab_reserve(struct alloc *a, uint64_t extra);
uint64_t alx_tab_home(const struct alloc *a, uint64_t key);

int alx_large_alloc(struct alloc *a, uint64_t size, uint64_t *off);
int alx_large_free(struct alloc *a, uint64_t off, uint64_t size);
int alx_large_mark(struct alloc *a, uint64_t off, uint64_t size);

/* ---- building from units (rebuild.c) ---- */

/* A unit handed to alx_build(): a run (owned) or a large block (run == NULL, req = requested size). */
struct alx_unit {
	uint64_t start, len;
	struct run *run;
	uint64_t req;
};
void alx_free_unit_runs(struct alx_unit *u, size_t n);
/* An allocator over [base, end) with exactly the units u[0..n) (sorted by start); takes the runs. */
int alx_build(uint64_t base, uint64_t end, struct alx_unit *u, size_t n, struct alloc **out);

/* ---- radix sort (sort.c) ---- */

struct alx_kv {
	uint64_t key, val;
};
/* Stable LSD radix sort by key; ALLOC_ENOMEM when the scratch buffer cannot be had. */
int alx_sort_kv(struct alx_kv *v, size_t n);

#endif
