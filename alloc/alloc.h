/* alloc/alloc.h - free-space management over a range of offsets.
 *
 * The allocator hands out 16-byte aligned blocks from [base, end). It knows nothing of keys, files or
 * processes: the caller owns the bytes, the allocator only books which offsets are taken. Small blocks
 * (up to ALLOC_SMALL_MAX bytes) come from size-class runs; larger ones from a coalescing extent
 * allocator. The caller always frees with the size it asked for, which lets the allocator find the
 * block's class and keep the internal-waste statistic exact.
 *
 * Errors are negative ALLOC_E* codes; nothing prints, exits or aborts on bad input.
 */
#ifndef MSTORE_ALLOC_H
#define MSTORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define ALLOC_ALIGN 16u        /* every block offset and rounded size is a multiple of this */
#define ALLOC_SMALL_MAX 512u   /* requests up to this size are served from size-class runs */
#define ALLOC_HIST_BUCKETS 48  /* free-extent histogram: bucket i counts extents in [2^i, 2^(i+1)) bytes */

enum {
	ALLOC_OK = 0,
	ALLOC_ENOSPC = -1,   /* no free block large enough; the caller may grow the region and retry */
	ALLOC_EINVAL = -2,   /* size 0, misaligned offset, a free of a block that is not allocated, ... */
	ALLOC_ENOMEM = -3,   /* the allocator's own bookkeeping could not get memory */
	ALLOC_ECORRUPT = -4, /* rebuild/import input is inconsistent (overlaps, out of range, bad blob) */
};

struct alloc;

struct alloc_block {
	uint64_t off;  /* offset of the block */
	uint64_t size; /* the size that was requested when it was allocated (not rounded) */
};

struct alloc_stats {
	uint64_t region_bytes;   /* end - base */
	uint64_t used_bytes;     /* sum of rounded sizes of allocated blocks */
	uint64_t free_bytes;     /* bytes that can still be handed out: free extents plus free slots in runs */
	uint64_t largest_free;   /* largest single free extent (a free run slot counts as an extent of its size) */
	uint64_t free_extents;   /* number of free extents (coalesced, outside runs) */
	uint64_t internal_waste; /* sum over allocated blocks of (rounded size - requested size) */
	uint64_t run_slack;      /* bytes inside runs that no slot can use (run size % class size) */
	uint64_t blocks;         /* number of allocated blocks */
	uint64_t runs;           /* number of size-class runs in use */
	uint64_t hist[ALLOC_HIST_BUCKETS]; /* free extents outside runs, by size */
};
/* Invariant (checked by alloc_check): used_bytes + free_bytes + run_slack == region_bytes. */

/* A new allocator over [base, end), all of it free. base and end are multiples of ALLOC_ALIGN,
 * base < end is not required (an empty region is fine). */
int alloc_create(uint64_t base, uint64_t end, struct alloc **out);
void alloc_destroy(struct alloc *a);

/* Extend the region to [base, new_end); new_end >= current end. The new space is free and coalesces
 * with a free extent that ended at the old end. */
int alloc_grow(struct alloc *a, uint64_t new_end);

/* Shrink the region to [base, new_end) when [new_end, end) is entirely free; ALLOC_EINVAL otherwise.
 * alloc_tail_free() tells how many bytes at the end are free (for compaction). */
int alloc_shrink(struct alloc *a, uint64_t new_end);
uint64_t alloc_tail_free(const struct alloc *a);

/* Rounded size the allocator will book for a request of `size` bytes (0 for size 0). */
uint64_t alloc_round(uint64_t size);

/* Allocate `size` (> 0) bytes; *off gets a 16-byte aligned offset. ALLOC_ENOSPC when nothing fits. */
int alloc_alloc(struct alloc *a, uint64_t size, uint64_t *off);

/* Free a block, giving the size that was requested for it. ALLOC_EINVAL (and no change) when
 * [off, off+size) is not an allocated block of that size. */
int alloc_free(struct alloc *a, uint64_t off, uint64_t size);

/* Mark a specific block as allocated (used by rebuild-like callers); ALLOC_EINVAL when any part of it
 * is not free, or when a small block's run would conflict with an existing run of another class. */
int alloc_mark(struct alloc *a, uint64_t off, uint64_t size);

/* Rebuild from scratch: region [base, end) with exactly the given live blocks allocated (any order).
 * ALLOC_ECORRUPT when blocks overlap, leave the region, are misaligned, or small blocks cannot form
 * runs. On error *out is untouched. */
int alloc_rebuild(uint64_t base, uint64_t end, const struct alloc_block *live, size_t n,
                  struct alloc **out);

/* Serialize the whole state into a self-describing, versioned, little-endian blob; alloc_export_size()
 * is an upper bound on its size. alloc_import() validates the blob fully (ALLOC_ECORRUPT when it is
 * not one alloc_export wrote, or is inconsistent) and never reads past len. */
size_t alloc_export_size(const struct alloc *a);
int alloc_export(const struct alloc *a, void *buf, size_t cap, size_t *len);
int alloc_import(const void *buf, size_t len, struct alloc **out);

void alloc_stats(const struct alloc *a, struct alloc_stats *st);
uint64_t alloc_free_bytes(const struct alloc *a); /* alloc_stats().free_bytes in O(1) */

/* Walk every internal structure and verify every invariant; ALLOC_ECORRUPT on the first violation. */
int alloc_check(const struct alloc *a);

/* Visit free extents outside runs in address order (for heap maps); stop when fn returns non-zero. */
int alloc_foreach_free(const struct alloc *a, int (*fn)(void *ctx, uint64_t off, uint64_t len), void *ctx);

/* Visit every range the allocator may hand out, free run slots included (each as its own range of the
 * slot size); the ranges do not overlap and their lengths sum to free_bytes. Stop when fn returns
 * non-zero and return that value. */
int alloc_free_each(const struct alloc *a, int (*fn)(void *ctx, uint64_t off, uint64_t len), void *ctx);

#endif
