/* tests/test_alloc.c - behaviour of the allocator in alloc/: placement, coalescing, region changes,
 * error paths that must change nothing, rebuild, export/import, and long randomized runs against a
 * reference model. Randomized tests take MS_TEST_SEED from the environment and print it on failure. */
#include <criterion/criterion.h>

#include <stdbool.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "alloc_internal.h" /* white-box: corrupt state on purpose to prove alloc_check notices */

#define KiB 1024ull
#define MiB (1024ull * 1024ull)

/* ---- small helpers ---- */

static uint64_t test_seed(void)
{
	const char *s = getenv("MS_TEST_SEED");
	if (s && *s)
		return strtoull(s, NULL, 0);
	return 0x5eed2024ull;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static struct alloc *mk(uint64_t base, uint64_t end)
{
	struct alloc *a = NULL;
	cr_assert_eq(alloc_create(base, end, &a), ALLOC_OK);
	cr_assert_not_null(a);
	return a;
}

static struct alloc_stats stats_of(const struct alloc *a)
{
	struct alloc_stats st;
	alloc_stats(a, &st);
	return st;
}

static uint64_t aa(struct alloc *a, uint64_t size)
{
	uint64_t off = UINT64_MAX;
	int rc = alloc_alloc(a, size, &off);
	cr_assert_eq(rc, ALLOC_OK, "alloc_alloc(%llu) = %d", (unsigned long long)size, rc);
	return off;
}

/* Export into a malloc'd buffer (caller frees). */
static uint8_t *blob_of(const struct alloc *a, size_t *len)
{
	size_t cap = alloc_export_size(a);
	uint8_t *buf = malloc(cap);
	cr_assert_not_null(buf);
	cr_assert_eq(alloc_export(a, buf, cap, len), ALLOC_OK);
	cr_assert_leq(*len, cap);
	return buf;
}

/* Fails unless the allocator's exported state is byte-for-byte `want`. */
static void assert_state_is(const struct alloc *a, const uint8_t *want, size_t wlen)
{
	size_t len;
	uint8_t *now = blob_of(a, &len);
	cr_assert(len == wlen && memcmp(now, want, len) == 0, "state changed");
	free(now);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
}

struct extent_list {
	uint64_t off[64], len[64];
	int n;
	int stop_after;
};

static int collect_free(void *ctx, uint64_t off, uint64_t len)
{
	struct extent_list *l = ctx;
	if (l->n < 64) {
		l->off[l->n] = off;
		l->len[l->n] = len;
	}
	l->n++;
	return l->stop_after && l->n >= l->stop_after ? 7 : 0;
}

static void assert_all_free(const struct alloc *a, uint64_t base, uint64_t end)
{
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	cr_assert_eq(st.used_bytes, 0);
	cr_assert_eq(st.blocks, 0);
	cr_assert_eq(st.runs, 0);
	cr_assert_eq(st.internal_waste, 0);
	cr_assert_eq(st.run_slack, 0);
	cr_assert_eq(st.region_bytes, end - base);
	cr_assert_eq(st.free_bytes, end - base);
	cr_assert_eq(st.largest_free, end - base);
	cr_assert_eq(st.free_extents, end > base ? 1u : 0u);
	struct extent_list l = { .n = 0 };
	cr_assert_eq(alloc_foreach_free(a, collect_free, &l), 0);
	if (end > base) {
		cr_assert_eq(l.n, 1);
		cr_assert_eq(l.off[0], base);
		cr_assert_eq(l.len[0], end - base);
	}
}

/* ---- basics ---- */

Test(alloc, round_is_16_byte_granular_and_zero_for_zero)
{
	cr_assert_eq(alloc_round(0), 0);
	cr_assert_eq(alloc_round(1), 16);
	cr_assert_eq(alloc_round(16), 16);
	cr_assert_eq(alloc_round(17), 32);
	cr_assert_eq(alloc_round(512), 512);
	cr_assert_eq(alloc_round(513), 528);
	cr_assert_eq(alloc_round(1 * MiB + 1), 1 * MiB + 16);
	cr_assert_eq(alloc_round(UINT64_MAX), 0, "an unrepresentable rounding is reported as 0");
}

Test(alloc, size_classes_cover_every_16_bytes_with_little_run_slack)
{
	for (unsigned c = 0; c < ALX_NCLASSES; c++) {
		const struct alx_class *cl = &alx_classes[c];
		uint32_t run = 1u << cl->shift;
		cr_assert_eq(cl->size, 16 * (c + 1));
		cr_assert_eq(alx_class_of(cl->size), c);
		cr_assert_eq(alx_class_of(cl->size - 15), c);
		cr_assert(cl->shift >= ALX_RUN_MIN_SHIFT && cl->shift <= ALX_RUN_MAX_SHIFT);
		cr_assert_eq(cl->nslots, run / cl->size);
		cr_assert_geq(cl->nslots, 32);
		cr_assert_eq(cl->slack, run % cl->size);
		cr_assert_leq(cl->slack * 1000u, run * 12u, "class %u: slack %u of %u", cl->size, cl->slack, run);
		cr_assert_eq(cl->nwords, (cl->nslots + 63) / 64);
		cr_assert_eq(cl->nibbytes, (cl->nslots + 1) / 2);
	}
}

Test(alloc, create_rejects_misaligned_or_inverted_regions)
{
	struct alloc *a = (struct alloc *)(uintptr_t)1;
	cr_assert_eq(alloc_create(8, 4096, &a), ALLOC_EINVAL);
	cr_assert_eq(alloc_create(0, 4100, &a), ALLOC_EINVAL);
	cr_assert_eq(alloc_create(4096, 0, &a), ALLOC_EINVAL);
	cr_assert_eq(alloc_create(0, 4096, NULL), ALLOC_EINVAL);
	cr_assert_eq(a, (struct alloc *)(uintptr_t)1, "*out untouched on error");
}

Test(alloc, empty_region_has_nothing_to_give_until_grown)
{
	struct alloc *a = mk(4096, 4096);
	uint64_t off;
	assert_all_free(a, 4096, 4096);
	cr_assert_eq(alloc_alloc(a, 16, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_alloc(a, 4096, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_alloc(a, 0, &off), ALLOC_EINVAL);
	cr_assert_eq(alloc_tail_free(a), 0);
	cr_assert_eq(alloc_grow(a, 4096 + 64 * KiB), ALLOC_OK);
	off = aa(a, 100);
	cr_assert(off >= 4096 && off + 100 <= 4096 + 64 * KiB, "block at %" PRIu64 " outside the grown region", off);
	cr_assert_eq(alloc_free(a, off, 100), ALLOC_OK);
	assert_all_free(a, 4096, 4096 + 64 * KiB);
	alloc_destroy(a);
	alloc_destroy(NULL);
}

Test(alloc, small_blocks_are_aligned_rounded_and_booked_exactly)
{
	uint64_t base = 48; /* not run-aligned in absolute terms: runs align relative to base */
	struct alloc *a = mk(base, base + 1 * MiB);
	uint64_t offs[512], used = 0, waste = 0;
	for (uint64_t s = 1; s <= 512; s++) {
		offs[s - 1] = aa(a, s);
		cr_assert_eq((offs[s - 1] - base) % ALLOC_ALIGN, 0);
		cr_assert_eq(offs[s - 1] % ALLOC_ALIGN, 0);
		used += alloc_round(s);
		waste += alloc_round(s) - s;
	}
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.used_bytes, used);
	cr_assert_eq(st.internal_waste, waste);
	cr_assert_eq(st.blocks, 512);
	cr_assert_eq(st.runs, 32, "one run per class");
	cr_assert_eq(st.used_bytes + st.free_bytes + st.run_slack, st.region_bytes);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	for (uint64_t s = 1; s <= 512; s++)
		cr_assert_eq(alloc_free(a, offs[s - 1], s), ALLOC_OK);
	assert_all_free(a, base, base + 1 * MiB);
	alloc_destroy(a);
}

Test(alloc, freed_slot_is_reused_and_empty_run_returns_to_extents)
{
	struct alloc *a = mk(0, 1 * MiB);
	uint64_t x = aa(a, 40), y = aa(a, 40), z = aa(a, 40);
	cr_assert_eq(y, x + 48);
	cr_assert_eq(z, y + 48);
	cr_assert_eq(alloc_free(a, y, 40), ALLOC_OK);
	cr_assert_eq(aa(a, 33), y, "the lowest free slot of the class is reused");
	cr_assert_eq(stats_of(a).runs, 1);
	cr_assert_eq(alloc_free(a, x, 40), ALLOC_OK);
	cr_assert_eq(alloc_free(a, y, 33), ALLOC_OK);
	cr_assert_eq(alloc_free(a, z, 40), ALLOC_OK);
	assert_all_free(a, 0, 1 * MiB);
	alloc_destroy(a);
}

Test(alloc, partial_runs_are_reused_lowest_address_first)
{
	struct alloc *a = mk(0, 4 * MiB);
	/* class 64 has 64 slots per 4 KiB run: fill three runs */
	uint64_t offs[192];
	for (int i = 0; i < 192; i++)
		offs[i] = aa(a, 64);
	cr_assert_eq(stats_of(a).runs, 3);
	/* open a hole in the third run, then in the first: the lower address is reused first */
	cr_assert_eq(alloc_free(a, offs[150], 64), ALLOC_OK);
	cr_assert_eq(alloc_free(a, offs[10], 64), ALLOC_OK);
	uint64_t lo = offs[10] < offs[150] ? offs[10] : offs[150], hi = offs[10] ^ offs[150] ^ lo;
	cr_assert_eq(aa(a, 64), lo);
	cr_assert_eq(aa(a, 64), hi);
	cr_assert_eq(stats_of(a).runs, 3, "no new run while partial runs exist");
	for (int i = 0; i < 192; i++)
		cr_assert_eq(alloc_free(a, offs[i], 64), ALLOC_OK);
	assert_all_free(a, 0, 4 * MiB);
	alloc_destroy(a);
}

Test(alloc, freed_space_coalesces_and_is_reused)
{
	struct alloc *a = mk(0, 1 * MiB);
	uint64_t A = aa(a, 100 * KiB), B = aa(a, 50 * KiB), C = aa(a, 70 * KiB), D = aa(a, 4000);
	cr_assert_eq(A, 0);
	cr_assert_eq(B, 100 * KiB);
	cr_assert_eq(C, 150 * KiB);
	cr_assert_eq(alloc_free(a, A, 100 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_free(a, C, 70 * KiB), ALLOC_OK);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.free_extents, 3, "A, C and the tail are separate");
	cr_assert_eq(alloc_free(a, B, 50 * KiB), ALLOC_OK);
	st = stats_of(a);
	cr_assert_eq(st.free_extents, 2, "A+B+C merged, D still splits it from the tail");
	struct extent_list l = { .n = 0 };
	alloc_foreach_free(a, collect_free, &l);
	cr_assert_eq(l.off[0], 0);
	cr_assert_eq(l.len[0], 220 * KiB);
	/* best fit: a 210 KiB request takes the merged hole at 0, not the larger tail */
	cr_assert_eq(aa(a, 210 * KiB), 0);
	cr_assert_eq(alloc_free(a, 0, 210 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_free(a, D, 4000), ALLOC_OK);
	assert_all_free(a, 0, 1 * MiB);
	alloc_destroy(a);
}

Test(alloc, best_fit_prefers_low_address_on_ties)
{
	struct alloc *a = mk(0, 1 * MiB);
	uint64_t b[6];
	for (int i = 0; i < 6; i++)
		b[i] = aa(a, 8 * KiB);
	cr_assert_eq(alloc_free(a, b[3], 8 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_free(a, b[1], 8 * KiB), ALLOC_OK);
	cr_assert_eq(aa(a, 8 * KiB), b[1]);
	cr_assert_eq(aa(a, 8 * KiB), b[3]);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(alloc_free(a, b[i], 8 * KiB), ALLOC_OK);
	assert_all_free(a, 0, 1 * MiB);
	alloc_destroy(a);
}

Test(alloc, foreach_free_visits_in_address_order_and_stops_on_nonzero)
{
	struct alloc *a = mk(0, 1 * MiB);
	uint64_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = aa(a, 4 * KiB);
	for (int i = 0; i < 8; i += 2)
		cr_assert_eq(alloc_free(a, b[i], 4 * KiB), ALLOC_OK);
	struct extent_list l = { .n = 0 };
	cr_assert_eq(alloc_foreach_free(a, collect_free, &l), 0);
	cr_assert_eq(l.n, 5);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(l.off[i], b[2 * i]);
		cr_assert_eq(l.len[i], 4 * KiB);
	}
	cr_assert_eq(l.off[4], 32 * KiB);
	struct extent_list s = { .n = 0, .stop_after = 2 };
	cr_assert_eq(alloc_foreach_free(a, collect_free, &s), 7, "the callback's value is returned");
	cr_assert_eq(s.n, 2);
	alloc_destroy(a);
}

/* ---- region changes ---- */

Test(alloc, grow_coalesces_with_a_free_tail)
{
	struct alloc *a = mk(0, 64 * KiB);
	uint64_t x = aa(a, 48 * KiB);
	cr_assert_eq(alloc_tail_free(a), 16 * KiB);
	cr_assert_eq(alloc_grow(a, 1 * MiB), ALLOC_OK);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.free_extents, 1);
	cr_assert_eq(st.largest_free, 1 * MiB - 48 * KiB);
	cr_assert_eq(alloc_tail_free(a), 1 * MiB - 48 * KiB);
	cr_assert_eq(aa(a, 1 * MiB - 48 * KiB), x + 48 * KiB, "the old tail and the new space form one block");
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	alloc_destroy(a);
}

Test(alloc, grow_with_a_full_tail_adds_a_separate_extent_and_rejects_bad_ends)
{
	struct alloc *a = mk(0, 64 * KiB);
	aa(a, 64 * KiB);
	cr_assert_eq(alloc_tail_free(a), 0);
	cr_assert_eq(alloc_grow(a, 64 * KiB - 16), ALLOC_EINVAL);
	cr_assert_eq(alloc_grow(a, 64 * KiB + 8), ALLOC_EINVAL);
	cr_assert_eq(alloc_grow(a, 64 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_grow(a, 128 * KiB), ALLOC_OK);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.free_extents, 1);
	cr_assert_eq(st.region_bytes, 128 * KiB);
	cr_assert_eq(aa(a, 64 * KiB), 64 * KiB);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	alloc_destroy(a);
}

Test(alloc, enospc_then_grow_then_success)
{
	struct alloc *a = mk(0, 64 * KiB);
	uint64_t off;
	cr_assert_eq(alloc_alloc(a, 100 * KiB, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_grow(a, 256 * KiB), ALLOC_OK);
	cr_assert_eq(aa(a, 100 * KiB), 0);
	alloc_destroy(a);

	/* small requests need a whole aligned run; a region smaller than that cannot host one */
	a = mk(0, 2 * KiB);
	cr_assert_eq(alloc_alloc(a, 16, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_alloc(a, 4 * KiB, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	cr_assert_eq(alloc_grow(a, 64 * KiB), ALLOC_OK);
	off = aa(a, 16);
	cr_assert_lt(off, 64 * KiB);
	/* fill everything with large blocks, then small requests of a new class fail until growth */
	aa(a, stats_of(a).largest_free);
	cr_assert_eq(alloc_alloc(a, 500, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_grow(a, 128 * KiB), ALLOC_OK);
	off = aa(a, 500);
	cr_assert_geq(off, 64 * KiB);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	alloc_destroy(a);
}

Test(alloc, shrink_cuts_only_a_free_tail)
{
	struct alloc *a = mk(0, 1 * MiB);
	uint64_t x = aa(a, 100 * KiB);
	cr_assert_eq(alloc_tail_free(a), 1 * MiB - 100 * KiB);
	cr_assert_eq(alloc_shrink(a, 512 * KiB), ALLOC_OK);
	cr_assert_eq(stats_of(a).region_bytes, 512 * KiB);
	cr_assert_eq(alloc_tail_free(a), 412 * KiB);
	cr_assert_eq(alloc_shrink(a, 100 * KiB - 16), ALLOC_EINVAL, "would cut an allocated block");
	cr_assert_eq(alloc_shrink(a, 200 * KiB + 8), ALLOC_EINVAL, "misaligned");
	cr_assert_eq(alloc_shrink(a, 600 * KiB), ALLOC_EINVAL, "beyond the end");
	cr_assert_eq(stats_of(a).region_bytes, 512 * KiB);
	cr_assert_eq(alloc_shrink(a, 100 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_tail_free(a), 0);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.free_extents, 0);
	cr_assert_eq(st.free_bytes, 0);
	uint64_t off;
	cr_assert_eq(alloc_alloc(a, 1000, &off), ALLOC_ENOSPC);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	cr_assert_eq(alloc_free(a, x, 100 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_shrink(a, 0), ALLOC_OK);
	assert_all_free(a, 0, 0);
	alloc_destroy(a);
}

Test(alloc, shrink_refuses_a_tail_holding_a_run)
{
	struct alloc *a = mk(0, 64 * KiB);
	aa(a, 60 * KiB);
	uint64_t s = aa(a, 16); /* its run is the last 4 KiB window */
	cr_assert_eq(s, 60 * KiB);
	cr_assert_eq(alloc_tail_free(a), 0);
	cr_assert_eq(alloc_shrink(a, 62 * KiB), ALLOC_EINVAL);
	cr_assert_eq(alloc_free(a, s, 16), ALLOC_OK);
	cr_assert_eq(alloc_tail_free(a), 4 * KiB);
	cr_assert_eq(alloc_shrink(a, 60 * KiB), ALLOC_OK);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	alloc_destroy(a);
}

/* ---- invalid frees ---- */

Test(alloc, double_free_and_invalid_free_return_einval_without_change)
{
	struct alloc *a = mk(1 * MiB, 3 * MiB);
	uint64_t s1 = aa(a, 40), s2 = aa(a, 40), s3 = aa(a, 300), l1 = aa(a, 10000), l2 = aa(a, 700);
	cr_assert_eq(alloc_free(a, s2, 40), ALLOC_OK);
	cr_assert_eq(alloc_free(a, l2, 700), ALLOC_OK);
	size_t len;
	uint8_t *before = blob_of(a, &len);
	struct alloc_stats st0 = stats_of(a);

	cr_assert_eq(alloc_free(a, s2, 40), ALLOC_EINVAL, "double free of a small block");
	cr_assert_eq(alloc_free(a, l2, 700), ALLOC_EINVAL, "double free of a large block");
	cr_assert_eq(alloc_free(a, s1, 20), ALLOC_EINVAL, "small block, wrong size, same class");
	cr_assert_eq(alloc_free(a, s1, 100), ALLOC_EINVAL, "small block, wrong class");
	cr_assert_eq(alloc_free(a, s1, 10000), ALLOC_EINVAL, "small block freed as large");
	cr_assert_eq(alloc_free(a, s1 + 16, 40), ALLOC_EINVAL, "inside a slot");
	cr_assert_eq(alloc_free(a, s3, 290), ALLOC_EINVAL, "wrong size, same class");
	cr_assert_eq(alloc_free(a, l1, 9999), ALLOC_EINVAL, "large block, wrong size");
	cr_assert_eq(alloc_free(a, l1, 200), ALLOC_EINVAL, "large block freed as small");
	cr_assert_eq(alloc_free(a, l1 + 16, 1000), ALLOC_EINVAL, "inside a large block");
	cr_assert_eq(alloc_free(a, l1 + 4096, 100), ALLOC_EINVAL, "small free inside a large block");
	cr_assert_eq(alloc_free(a, s1 + 8, 40), ALLOC_EINVAL, "misaligned");
	cr_assert_eq(alloc_free(a, s1, 0), ALLOC_EINVAL, "size 0");
	cr_assert_eq(alloc_free(a, 0, 40), ALLOC_EINVAL, "below base");
	cr_assert_eq(alloc_free(a, 3 * MiB, 40), ALLOC_EINVAL, "at end");
	cr_assert_eq(alloc_free(a, 3 * MiB - 16, 10000), ALLOC_EINVAL, "runs past end");
	cr_assert_eq(alloc_free(a, 2 * MiB, 600), ALLOC_EINVAL, "in a free extent");
	cr_assert_eq(alloc_free(a, 2 * MiB, 16), ALLOC_EINVAL, "small, in a free extent");
	cr_assert_eq(alloc_free(a, UINT64_MAX - 15, 1000), ALLOC_EINVAL, "absurd offset");
	cr_assert_eq(alloc_free(a, s1, UINT64_MAX), ALLOC_EINVAL, "absurd size");
	cr_assert_eq(alloc_free(NULL, s1, 40), ALLOC_EINVAL);

	struct alloc_stats st1 = stats_of(a);
	cr_assert(memcmp(&st0, &st1, sizeof st0) == 0, "stats changed");
	assert_state_is(a, before, len);
	free(before);
	cr_assert_eq(alloc_free(a, s1, 40), ALLOC_OK);
	cr_assert_eq(alloc_free(a, s3, 300), ALLOC_OK);
	cr_assert_eq(alloc_free(a, l1, 10000), ALLOC_OK);
	assert_all_free(a, 1 * MiB, 3 * MiB);
	alloc_destroy(a);
}

/* ---- mark ---- */

Test(alloc, mark_books_specific_blocks_and_rejects_conflicts)
{
	struct alloc *a = mk(0, 1 * MiB);
	cr_assert_eq(alloc_mark(a, 64 * KiB, 10000), ALLOC_OK);
	cr_assert_eq(alloc_mark(a, 64 * KiB + 9984, 1000), ALLOC_EINVAL, "overlaps the large block's tail");
	cr_assert_eq(alloc_mark(a, 60 * KiB, 5000), ALLOC_EINVAL, "overlaps its head");
	cr_assert_eq(alloc_mark(a, 64 * KiB + 16, 100), ALLOC_EINVAL, "small block inside a large one");
	cr_assert_eq(alloc_mark(a, 76 * KiB, 512), ALLOC_EINVAL, "its 16 KiB run window would cover the large block");

	/* small: class 48 (4 KiB runs); slots at multiples of 48 from the window start */
	cr_assert_eq(alloc_mark(a, 8 * KiB + 96, 40), ALLOC_OK);
	cr_assert_eq(alloc_mark(a, 8 * KiB + 96, 40), ALLOC_EINVAL, "already marked");
	cr_assert_eq(alloc_mark(a, 8 * KiB + 100, 40), ALLOC_EINVAL, "misaligned");
	cr_assert_eq(alloc_mark(a, 8 * KiB + 64, 40), ALLOC_EINVAL, "not a slot boundary of class 48");
	cr_assert_eq(alloc_mark(a, 8 * KiB + 48, 48), ALLOC_OK, "another slot of the same run");
	cr_assert_eq(alloc_mark(a, 8 * KiB + 256, 64), ALLOC_EINVAL, "another class in the same window");
	cr_assert_eq(alloc_mark(a, 8 * KiB + 4096, 512), ALLOC_EINVAL, "a 16 KiB run window over the 4 KiB run");
	cr_assert_eq(alloc_mark(a, 1 * MiB - 512, 1000), ALLOC_EINVAL, "past the end");
	cr_assert_eq(alloc_mark(a, 0, 0), ALLOC_EINVAL);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.blocks, 3);
	cr_assert_eq(st.runs, 1);
	cr_assert_eq(st.used_bytes, alloc_round(10000) + 48 + 48);
	cr_assert_eq(st.internal_waste, alloc_round(10000) - 10000 + 8);
	cr_assert_eq(alloc_check(a), ALLOC_OK);

	/* allocation fills the marked run first and never hands out marked space */
	uint64_t x = aa(a, 33);
	cr_assert_eq(x, 8 * KiB);
	uint64_t y = aa(a, 33);
	cr_assert_eq(y, 8 * KiB + 144);
	cr_assert_eq(aa(a, 30 * KiB), 12 * KiB, "best fit skips the marked ranges");
	cr_assert_eq(alloc_free(a, 8 * KiB + 96, 40), ALLOC_OK);
	cr_assert_eq(alloc_free(a, 8 * KiB + 48, 48), ALLOC_OK);
	cr_assert_eq(alloc_free(a, 64 * KiB, 10000), ALLOC_OK);
	cr_assert_eq(alloc_free(a, x, 33), ALLOC_OK);
	cr_assert_eq(alloc_free(a, y, 33), ALLOC_OK);
	cr_assert_eq(alloc_free(a, 12 * KiB, 30 * KiB), ALLOC_OK);
	assert_all_free(a, 0, 1 * MiB);
	alloc_destroy(a);
}

/* ---- alloc_check ---- */

Test(alloc, check_detects_damaged_structures)
{
	struct alloc *a = mk(0, 4 * MiB);
	uint64_t keep[64];
	for (int i = 0; i < 64; i++)
		keep[i] = aa(a, (uint64_t)(i % 2 ? 100 : 5000));
	for (int i = 0; i < 64; i += 4)
		cr_assert_eq(alloc_free(a, keep[i], 5000), ALLOC_OK);
	cr_assert_eq(alloc_check(a), ALLOC_OK);

	a->used += 16;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "counter off");
	a->used -= 16;

	a->hist[3]++;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "histogram off");
	a->hist[3]--;

	uint64_t window = (1ull << alx_classes[alx_class_of(100)].shift) - 1;
	struct alx_slot *s = alx_tab_find(a, (keep[1] & ~window) | ALX_TAG_RUN);
	cr_assert_not_null(s);
	struct run *r = (struct run *)(uintptr_t)s->val;
	r->freebits[0] ^= 1;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "bitmap disagrees with nfree");
	r->freebits[0] ^= 1;

	struct ext *x = a->root[ALX_BY_ADDR];
	x->len += 16;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "extent overlaps its neighbour");
	x->len -= 16;

	struct ext *k = x->kid[ALX_BY_ADDR][0] ? x->kid[ALX_BY_ADDR][0] : x->kid[ALX_BY_ADDR][1];
	cr_assert_not_null(k);
	uint32_t p = k->prio;
	k->prio = x->prio + 1;
	cr_assert_eq(alloc_check(a), x->prio == UINT32_MAX ? ALLOC_OK : ALLOC_ECORRUPT, "treap heap order");
	k->prio = p;

	struct alx_heap *h = NULL;
	for (unsigned c = 0; c < ALX_NCLASSES && !h; c++)
		if (a->heap[c].n >= 2)
			h = &a->heap[c];
	if (!h) { /* make a class with two partial runs */
		uint64_t o[40];
		for (int i = 0; i < 40; i++)
			o[i] = aa(a, 512);
		cr_assert_eq(alloc_free(a, o[0], 512), ALLOC_OK);
		h = &a->heap[alx_class_of(512)];
		cr_assert_geq(h->n, 2);
	}
	struct alx_hent e0 = h->v[0], e1 = h->v[1];
	struct run *r0 = e0.run, *r1 = e1.run;
	h->v[0] = e1;
	h->v[1] = e0;
	r0->heap_idx = 1;
	r1->heap_idx = 0;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "partial-run heap out of order");
	h->v[0] = e0;
	h->v[1] = e1;
	r0->heap_idx = 0;
	r1->heap_idx = 1;

	a->pool_n++;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "spare node count off");
	a->pool_n--;

	for (unsigned i = 0; i < alx_classes[r->cls].nslots; i++)
		if ((r->freebits[i >> 6] >> (i & 63)) & 1) {
			alx_run_nibs(r)[i >> 1] ^= (uint8_t)(1u << ((i & 1) * 4));
			cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "waste nibble on a free slot");
			alx_run_nibs(r)[i >> 1] ^= (uint8_t)(1u << ((i & 1) * 4));
			break;
		}

	uint64_t key = s->key;
	s->key = (s->key & ~(uint64_t)ALX_TAG_MASK) | 3u;
	cr_assert_eq(alloc_check(a), ALLOC_ECORRUPT, "unknown unit tag");
	s->key = key;

	cr_assert_eq(alloc_check(a), ALLOC_OK);
	alloc_destroy(a);
}

Test(alloc, largest_free_counts_a_free_run_slot)
{
	struct alloc *a = mk(0, 4 * KiB);
	uint64_t x = aa(a, 10);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.free_extents, 0, "the run took the whole region");
	cr_assert_eq(st.largest_free, 16);
	cr_assert_eq(st.free_bytes, 4 * KiB - 16);
	cr_assert_eq(st.internal_waste, 6);
	cr_assert_eq(alloc_free(a, x, 10), ALLOC_OK);
	assert_all_free(a, 0, 4 * KiB);
	alloc_destroy(a);
}

Test(alloc, mark_rejects_a_run_window_past_the_end)
{
	struct alloc *a = mk(0, 6 * KiB);
	cr_assert_eq(alloc_mark(a, 4 * KiB + 16, 100), ALLOC_EINVAL, "class 112 runs are 8 KiB");
	cr_assert_eq(alloc_mark(a, 48, 40), ALLOC_OK, "class 48 runs are 4 KiB");
	cr_assert_eq(alloc_mark(a, 4 * KiB, 1500), ALLOC_OK);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	cr_assert_eq(stats_of(a).free_extents, 1);
	alloc_destroy(a);
}

/* ---- reference model for randomized runs ---- */

struct sim {
	struct alloc *a;
	uint64_t seed, rng, op;
	uint64_t base, end, maxend;
	struct alloc_block *live;
	size_t n, cap;
	uint64_t *shadow; /* one bit per 16-byte granule of [base, maxend): set = inside a live block */
	uint64_t used, waste;
	uint64_t large_max;
	uint64_t grow_step; /* 0: grow by 1/8 of the region */
	uint64_t enospc, grows, shrinks, marks, marked;
};

#define SIM_ASSERT(s, cond, msg)                                                                       \
	cr_assert((cond), "MS_TEST_SEED=%llu op=%llu: %s", (unsigned long long)(s)->seed,                \
	          (unsigned long long)(s)->op, (msg))

static uint64_t rnd(struct sim *s) { return splitmix(&s->rng); }

/* seed is what MS_TEST_SEED gave (printed on failure); salt makes each test's stream different */
static void sim_init(struct sim *s, uint64_t seed, uint64_t salt, uint64_t base, uint64_t end, uint64_t maxend)
{
	memset(s, 0, sizeof *s);
	s->seed = seed;
	s->rng = seed ^ salt;
	s->base = base;
	s->end = end;
	s->maxend = maxend;
	s->large_max = 1 * MiB;
	s->a = mk(base, end);
	s->shadow = calloc((maxend - base) / 16 / 64 + 1, sizeof(uint64_t));
	cr_assert_not_null(s->shadow);
}

static void sim_fini(struct sim *s)
{
	alloc_destroy(s->a);
	free(s->live);
	free(s->shadow);
}

/* Walk the granules of [off, off+len): set/clear them, or report whether any is set. */
static bool shadow_op(struct sim *s, uint64_t off, uint64_t len, int mode /* 0 test, 1 set, 2 clear */)
{
	uint64_t g = (off - s->base) / 16, e = g + len / 16;
	while (g < e) {
		uint64_t w = g / 64, b = g % 64, n = 64 - b < e - g ? 64 - b : e - g;
		uint64_t mask = (n == 64 ? UINT64_MAX : ((1ull << n) - 1)) << b;
		if (mode == 0 && (s->shadow[w] & mask))
			return true;
		if (mode == 1)
			s->shadow[w] |= mask;
		if (mode == 2)
			s->shadow[w] &= ~mask;
		g += n;
	}
	return false;
}

static uint64_t pick_size(struct sim *s)
{
	uint64_t r = rnd(s) % 1000;
	if (r < 900)
		return 1 + rnd(s) % 512;
	if (r < 990 || s->large_max <= 16 * KiB)
		return 513 + rnd(s) % (16 * KiB - 512);
	return 16 * KiB + 1 + rnd(s) % (s->large_max - 16 * KiB);
}

static void sim_verify_stats(struct sim *s)
{
	struct alloc_stats st = stats_of(s->a);
	SIM_ASSERT(s, st.used_bytes == s->used, "used_bytes differs from the model");
	SIM_ASSERT(s, st.internal_waste == s->waste, "internal_waste differs from the model");
	SIM_ASSERT(s, st.blocks == s->n, "blocks differs from the model");
	SIM_ASSERT(s, st.region_bytes == s->end - s->base, "region_bytes differs from the model");
	SIM_ASSERT(s, st.used_bytes + st.free_bytes + st.run_slack == st.region_bytes, "used + free + slack != region");
	uint64_t h = 0;
	for (int i = 0; i < ALLOC_HIST_BUCKETS; i++)
		h += st.hist[i];
	SIM_ASSERT(s, h == st.free_extents, "histogram does not count every free extent");
}

/* One allocation, growing the region (within maxend) on ENOSPC. Returns false when nothing fits. */
static bool sim_alloc(struct sim *s, uint64_t size)
{
	uint64_t off = 0, len = alloc_round(size);
	int rc = alloc_alloc(s->a, size, &off);
	while (rc == ALLOC_ENOSPC) {
		s->enospc++;
		if (size > ALLOC_SMALL_MAX)
			SIM_ASSERT(s, stats_of(s->a).largest_free < len, "ENOSPC although an extent was large enough");
		if (s->end >= s->maxend)
			return false;
		uint64_t step = s->grow_step ? s->grow_step : (s->end - s->base) / 8;
		if (step < len + 64 * KiB)
			step = len + 64 * KiB;
		uint64_t ne = s->maxend - s->end < step ? s->maxend : (s->end + step + 15) / 16 * 16;
		SIM_ASSERT(s, alloc_grow(s->a, ne) == ALLOC_OK, "grow failed");
		s->end = ne;
		s->grows++;
		rc = alloc_alloc(s->a, size, &off);
	}
	SIM_ASSERT(s, rc == ALLOC_OK, "alloc failed");
	SIM_ASSERT(s, off % ALLOC_ALIGN == 0 && (off - s->base) % ALLOC_ALIGN == 0, "misaligned block");
	SIM_ASSERT(s, off >= s->base && off < s->end && len <= s->end - off, "block outside the region");
	SIM_ASSERT(s, !shadow_op(s, off, len, 0), "block overlaps a live block");
	shadow_op(s, off, len, 1);
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->live = realloc(s->live, s->cap * sizeof *s->live);
		cr_assert_not_null(s->live);
	}
	s->live[s->n++] = (struct alloc_block){ off, size };
	s->used += len;
	s->waste += len - size;
	return true;
}

static void sim_free_at(struct sim *s, size_t i)
{
	struct alloc_block b = s->live[i];
	uint64_t len = alloc_round(b.size);
	SIM_ASSERT(s, alloc_free(s->a, b.off, b.size) == ALLOC_OK, "free of a live block failed");
	shadow_op(s, b.off, len, 2);
	s->live[i] = s->live[--s->n];
	s->used -= len;
	s->waste -= len - b.size;
	/* the block is gone: freeing it again must be refused, and must change nothing */
	if (rnd(s) % 64 == 0) {
		struct alloc_stats st0 = stats_of(s->a), st1;
		SIM_ASSERT(s, alloc_free(s->a, b.off, b.size) == ALLOC_EINVAL, "double free accepted");
		st1 = stats_of(s->a);
		SIM_ASSERT(s, memcmp(&st0, &st1, sizeof st0) == 0, "rejected double free changed stats");
	}
}

/* alloc_mark of a random block: when accepted the block must have been free (it joins the live set),
 * when refused nothing may change. */
static void sim_mark(struct sim *s)
{
	if (s->end - s->base < 64 * KiB)
		return;
	uint64_t size = pick_size(s), len = alloc_round(size);
	uint64_t off = s->base + rnd(s) % ((s->end - s->base) / 16) * 16;
	if (size <= ALLOC_SMALL_MAX) /* aim at a slot boundary often enough to succeed sometimes */
		off = s->base + (off - s->base) / 4096 * 4096 + (rnd(s) % 8) * len;
	struct alloc_stats st0 = stats_of(s->a);
	int rc = alloc_mark(s->a, off, size);
	s->marks++;
	if (rc == ALLOC_OK) {
		s->marked++;
		SIM_ASSERT(s, off >= s->base && len <= s->end - off, "mark accepted a block outside the region");
		SIM_ASSERT(s, !shadow_op(s, off, len, 0), "mark accepted a block overlapping a live one");
		shadow_op(s, off, len, 1);
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 1024;
			s->live = realloc(s->live, s->cap * sizeof *s->live);
			cr_assert_not_null(s->live);
		}
		s->live[s->n++] = (struct alloc_block){ off, size };
		s->used += len;
		s->waste += len - size;
	} else {
		struct alloc_stats st1 = stats_of(s->a);
		SIM_ASSERT(s, rc == ALLOC_EINVAL, "mark failed with something other than EINVAL");
		SIM_ASSERT(s, memcmp(&st0, &st1, sizeof st0) == 0, "refused mark changed stats");
	}
}

/* Swap the allocator for one rebuilt from the live list, or imported from an export: both must carry
 * on exactly like the original. */
static void sim_reload(struct sim *s, bool via_import)
{
	struct alloc *b = NULL;
	size_t l0, l1;
	uint8_t *b0 = blob_of(s->a, &l0);
	if (via_import)
		SIM_ASSERT(s, alloc_import(b0, l0, &b) == ALLOC_OK, "import of an export failed");
	else
		SIM_ASSERT(s, alloc_rebuild(s->base, s->end, s->live, s->n, &b) == ALLOC_OK, "rebuild failed");
	uint8_t *b1 = blob_of(b, &l1);
	SIM_ASSERT(s, l0 == l1 && memcmp(b0, b1, l0) == 0, "reloaded state differs");
	free(b0);
	free(b1);
	alloc_destroy(s->a);
	s->a = b;
}

static void sim_step(struct sim *s, size_t target)
{
	s->op++;
	uint64_t r = rnd(s);
	if (r % 61 == 5)
		sim_mark(s);
	if (s->n == 0 || r % (2 * target) >= s->n) {
		if (!sim_alloc(s, pick_size(s)) && s->n)
			sim_free_at(s, rnd(s) % s->n);
	} else {
		sim_free_at(s, rnd(s) % s->n);
	}
	if (r % 4096 == 7) { /* now and then give back part of a free tail */
		uint64_t tail = alloc_tail_free(s->a);
		if (tail >= 32) {
			uint64_t ne = s->end - tail / 2 / 16 * 16;
			SIM_ASSERT(s, alloc_shrink(s->a, ne) == ALLOC_OK, "shrink of a free tail failed");
			SIM_ASSERT(s, !shadow_op(s, ne, s->end - ne, 0), "free tail held a live block");
			s->end = ne;
			s->shrinks++;
		}
		s->end -= alloc_tail_free(s->a);
		SIM_ASSERT(s, alloc_shrink(s->a, s->end) == ALLOC_OK, "shrink to the tail's start failed");
		SIM_ASSERT(s, alloc_tail_free(s->a) == 0, "tail still free after shrinking it away");
		SIM_ASSERT(s, alloc_shrink(s->a, s->end - 16) == ALLOC_EINVAL, "shrink into a used tail accepted");
		uint64_t step = ((rnd(s) % (256 * KiB)) + 16) / 16 * 16;
		uint64_t ne = s->maxend - s->end < step ? s->maxend : s->end + step;
		SIM_ASSERT(s, alloc_grow(s->a, ne) == ALLOC_OK, "grow failed");
		s->end = ne;
	}
}

static void sim_free_all(struct sim *s)
{
	while (s->n) {
		s->op++;
		sim_free_at(s, rnd(s) % s->n);
	}
	sim_verify_stats(s);
	struct alloc_stats st = stats_of(s->a);
	SIM_ASSERT(s, alloc_check(s->a) == ALLOC_OK, "alloc_check failed after freeing everything");
	SIM_ASSERT(s, st.used_bytes == 0 && st.blocks == 0 && st.runs == 0, "something still allocated");
	SIM_ASSERT(s, st.free_extents == 1 && st.largest_free == s->end - s->base, "region is not one free extent");
	SIM_ASSERT(s, st.free_bytes == s->end - s->base && st.run_slack == 0, "free bytes != region");
}

static void sim_run(struct sim *s, uint64_t ops, size_t target, uint64_t check_every)
{
	for (uint64_t i = 0; i < ops; i++) {
		sim_step(s, target);
		if (s->op % check_every == 0) {
			SIM_ASSERT(s, alloc_check(s->a) == ALLOC_OK, "alloc_check failed");
			sim_verify_stats(s);
		}
	}	struct alloc_stats st = stats_of(s->a);
	cr_log_info("sim: %llu ops, %zu live, %llu runs, %llu extents, region %llu KiB, %llu ENOSPC, %llu grows, "
	            "%llu shrinks, %llu/%llu marks accepted",
	            (unsigned long long)s->op, s->n, (unsigned long long)st.runs, (unsigned long long)st.free_extents,
	            (unsigned long long)(st.region_bytes / 1024), (unsigned long long)s->enospc,
	            (unsigned long long)s->grows, (unsigned long long)s->shrinks, (unsigned long long)s->marked,
	            (unsigned long long)s->marks);
}

Test(alloc, randomized_million_ops_match_the_reference_model, .timeout = 120)
{
	struct sim s;
	sim_init(&s, test_seed(), 0, 16 * 1024 + 32, 16 * 1024 + 32 + 16 * MiB, 16 * 1024 + 32 + 512 * MiB);
	for (int part = 0; part < 5; part++) {
		sim_run(&s, 200000, 3000, 10000);
		sim_reload(&s, part % 2 == 1);
	}
	SIM_ASSERT(&s, s.grows > 0 && s.shrinks > 0, "the run never exercised grow and shrink");
	sim_free_all(&s);
	sim_fini(&s);
}

Test(alloc, randomized_short_run_checks_every_operation, .timeout = 120)
{
	struct sim s;
	sim_init(&s, test_seed(), 0xabcdef, 0, 256 * KiB, 8 * MiB);
	s.large_max = 64 * KiB;
	sim_run(&s, 15000, 60, 1);
	sim_reload(&s, false);
	sim_run(&s, 15000, 60, 1);
	SIM_ASSERT(&s, s.enospc > 0, "the run never hit ENOSPC");
	sim_free_all(&s);
	sim_fini(&s);
}

Test(alloc, randomized_tight_region_without_growth_stays_consistent, .timeout = 120)
{
	struct sim s;
	sim_init(&s, test_seed(), 0x77, 4096, 4096 + 2 * MiB, 4096 + 2 * MiB);
	s.large_max = 256 * KiB;
	sim_run(&s, 100000, 800, 1000);
	SIM_ASSERT(&s, s.enospc > 0, "the run never hit ENOSPC");
	sim_free_all(&s);
	sim_fini(&s);
}

/* ---- rebuild ---- */

static void shuffle(struct sim *s, struct alloc_block *v, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = rnd(s) % i;
		struct alloc_block t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
}

Test(alloc, rebuild_from_live_list_reproduces_the_state_and_can_free_everything, .timeout = 120)
{
	struct sim s;
	sim_init(&s, test_seed(), 0x1234, 1 * MiB, 1 * MiB + 32 * MiB, 1 * MiB + 256 * MiB);
	sim_run(&s, 200000, 4000, 50000);
	struct alloc_block *live = malloc((s.n + 1) * sizeof *live);
	memcpy(live, s.live, s.n * sizeof *live);
	shuffle(&s, live, s.n);

	struct alloc *b = NULL;
	SIM_ASSERT(&s, alloc_rebuild(s.base, s.end, live, s.n, &b) == ALLOC_OK, "rebuild failed");
	SIM_ASSERT(&s, alloc_check(b) == ALLOC_OK, "rebuilt allocator fails alloc_check");
	struct alloc_stats st0 = stats_of(s.a), st1 = stats_of(b);
	SIM_ASSERT(&s, memcmp(&st0, &st1, sizeof st0) == 0, "rebuilt stats differ");
	size_t l0, l1;
	uint8_t *b0 = blob_of(s.a, &l0), *b1 = blob_of(b, &l1);
	SIM_ASSERT(&s, l0 == l1 && memcmp(b0, b1, l0) == 0, "rebuilt state differs from the original");
	free(b0);
	free(b1);

	/* the rebuilt allocator owns every block: free them all through it */
	alloc_destroy(s.a);
	s.a = b;
	sim_free_all(&s);
	free(live);
	sim_fini(&s);
}

Test(alloc, rebuild_of_nothing_is_an_empty_allocator)
{
	struct alloc *a = NULL;
	cr_assert_eq(alloc_rebuild(0, 1 * MiB, NULL, 0, &a), ALLOC_OK);
	assert_all_free(a, 0, 1 * MiB);
	alloc_destroy(a);
	cr_assert_eq(alloc_rebuild(64, 64, NULL, 0, &a), ALLOC_OK);
	assert_all_free(a, 64, 64);
	alloc_destroy(a);
}

static void expect_rebuild_rejects(const struct alloc_block *v, size_t n, const char *why)
{
	struct alloc *a = (struct alloc *)(uintptr_t)1;
	int rc = alloc_rebuild(0, 1 * MiB, v, n, &a);
	cr_assert_eq(rc, ALLOC_ECORRUPT, "%s: rebuild returned %d", why, rc);
	cr_assert_eq(a, (struct alloc *)(uintptr_t)1, "%s: *out touched", why);
}

Test(alloc, rebuild_rejects_overlaps_out_of_range_misalignment_and_run_conflicts)
{
	struct alloc_block v[4];
	v[0] = (struct alloc_block){ 64 * KiB, 10000 };
	v[1] = (struct alloc_block){ 64 * KiB + 9984, 1000 };
	expect_rebuild_rejects(v, 2, "overlapping large blocks");
	v[1] = (struct alloc_block){ 64 * KiB, 10000 };
	expect_rebuild_rejects(v, 2, "duplicate large block");
	v[1] = (struct alloc_block){ 64 * KiB + 4096, 100 };
	expect_rebuild_rejects(v, 2, "small block inside a large one");
	v[1] = (struct alloc_block){ 76 * KiB, 512 };
	expect_rebuild_rejects(v, 2, "a run window starting inside a large block");
	v[0] = (struct alloc_block){ 70 * KiB, 1000 };
	v[1] = (struct alloc_block){ 65 * KiB, 512 };
	expect_rebuild_rejects(v, 2, "a run window covering a later large block");

	v[0] = (struct alloc_block){ 8 * KiB, 40 };
	v[1] = (struct alloc_block){ 8 * KiB, 40 };
	expect_rebuild_rejects(v, 2, "duplicate small block");
	v[1] = (struct alloc_block){ 8 * KiB + 256, 64 };
	expect_rebuild_rejects(v, 2, "two classes in one run window");
	v[1] = (struct alloc_block){ 8 * KiB + 4096, 512 };
	expect_rebuild_rejects(v, 2, "a 16 KiB run window overlapping a 4 KiB run");
	v[1] = (struct alloc_block){ 8 * KiB + 64, 40 };
	expect_rebuild_rejects(v, 2, "not on a slot boundary");
	v[1] = (struct alloc_block){ 8 * KiB + 4080, 40 };
	expect_rebuild_rejects(v, 2, "in the run's slack");

	v[0] = (struct alloc_block){ 1 * MiB, 100 };
	expect_rebuild_rejects(v, 1, "at the end");
	v[0] = (struct alloc_block){ 1 * MiB - 1008, 1009 };
	expect_rebuild_rejects(v, 1, "past the end");
	v[0] = (struct alloc_block){ 4104, 1000 };
	expect_rebuild_rejects(v, 1, "misaligned");
	v[0] = (struct alloc_block){ 4096, 0 };
	expect_rebuild_rejects(v, 1, "size 0");
	v[0] = (struct alloc_block){ UINT64_MAX - 15, 32 };
	expect_rebuild_rejects(v, 1, "absurd offset");
	v[0] = (struct alloc_block){ 4096, UINT64_MAX };
	expect_rebuild_rejects(v, 1, "absurd size");

	struct alloc *a = NULL;
	cr_assert_eq(alloc_rebuild(8, 1 * MiB, NULL, 0, &a), ALLOC_EINVAL, "misaligned base");
	cr_assert_eq(alloc_rebuild(0, 1 * MiB, NULL, 1, &a), ALLOC_EINVAL, "no list");
	cr_assert_null(a);
	struct alloc *b = NULL;
	cr_assert_eq(alloc_rebuild(1 * MiB, 2 * MiB, (struct alloc_block[]){ { 0, 100 } }, 1, &b), ALLOC_ECORRUPT,
	             "below base");
	cr_assert_eq(alloc_rebuild(0, 1 * MiB + 4 * KiB, (struct alloc_block[]){ { 1 * MiB + 1 * KiB, 100 } }, 1, &b),
	             ALLOC_ECORRUPT, "its 8 KiB run window would pass the end");
	cr_assert_null(b);
}

Test(alloc, rebuild_places_small_blocks_where_alloc_would)
{
	/* a rebuilt run keeps handing out its lowest free slot, and accepts frees with exact sizes */
	struct alloc_block v[] = { { 8 * KiB + 48 * 3, 45 }, { 8 * KiB, 33 }, { 200 * KiB, 70000 } };
	struct alloc *a = NULL;
	cr_assert_eq(alloc_rebuild(0, 1 * MiB, v, 3, &a), ALLOC_OK);
	cr_assert_eq(alloc_check(a), ALLOC_OK);
	struct alloc_stats st = stats_of(a);
	cr_assert_eq(st.runs, 1);
	cr_assert_eq(st.blocks, 3);
	cr_assert_eq(st.internal_waste, 3 + 15 + (alloc_round(70000) - 70000));
	cr_assert_eq(aa(a, 48), 8 * KiB + 48);
	cr_assert_eq(alloc_free(a, 8 * KiB + 48 * 3, 44), ALLOC_EINVAL, "size differs from the rebuilt one");
	cr_assert_eq(alloc_free(a, 8 * KiB + 48 * 3, 45), ALLOC_OK);
	cr_assert_eq(alloc_free(a, 8 * KiB, 33), ALLOC_OK);
	cr_assert_eq(alloc_free(a, 8 * KiB + 48, 48), ALLOC_OK);
	cr_assert_eq(alloc_free(a, 200 * KiB, 70000), ALLOC_OK);
	assert_all_free(a, 0, 1 * MiB);
	alloc_destroy(a);
}

/* CPU time of this thread: other work on the machine does not make the timing test flaky */
static double cpu_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

Test(alloc, rebuild_of_a_million_blocks_is_fast, .timeout = 120)
{
	uint64_t seed = test_seed() ^ 0x99;
	uint64_t rng = seed;
	size_t n = 1500000; /* two thirds of them stay: 10^6 live blocks */
	struct alloc *a = mk(0, 1ull << 30);
	struct alloc_block *v = malloc(n * sizeof *v);
	cr_assert_not_null(v);
	for (size_t i = 0; i < n; i++) {
		uint64_t r = splitmix(&rng);
		uint64_t size = r % 100 < 97 ? 1 + (r >> 8) % 512 : 513 + (r >> 8) % 4000;
		v[i].size = size;
		cr_assert_eq(alloc_alloc(a, size, &v[i].off), ALLOC_OK);
	}
	for (size_t i = 0; i < n; i += 3) /* holes everywhere */
		cr_assert_eq(alloc_free(a, v[i].off, v[i].size), ALLOC_OK);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (i % 3)
			v[m++] = v[i];
	for (size_t i = m; i > 1; i--) { /* any order */
		size_t j = splitmix(&rng) % i;
		struct alloc_block t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
	struct alloc *b = NULL;
	double t0 = cpu_sec();
	cr_assert_eq(alloc_rebuild(0, 1ull << 30, v, m, &b), ALLOC_OK);
	double dt = cpu_sec() - t0;
#if defined(__SANITIZE_ADDRESS__)
	double limit = 4.0;
#else
	double limit = 1.0;
#endif
	cr_log_info("rebuild: %zu blocks in %.3f s", m, dt);
	cr_assert_lt(dt, limit, "MS_TEST_SEED=%llu: rebuild of %zu blocks took %.3f s", (unsigned long long)seed, m, dt);
	struct alloc_stats s0 = stats_of(a), s1 = stats_of(b);
	cr_assert(memcmp(&s0, &s1, sizeof s0) == 0, "MS_TEST_SEED=%llu: rebuilt stats differ", (unsigned long long)seed);
	cr_assert_eq(alloc_check(b), ALLOC_OK);
	alloc_destroy(a);
	alloc_destroy(b);
	free(v);
}

/* ---- export / import ---- */

/* Same construction as the blob's checksum (documented in export.c), so tests can forge blobs that are
 * well-formed but inconsistent. */
static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void wr64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void reseal(uint8_t *p, size_t n)
{
	uint64_t h = 0x6d73746f7265616cull ^ (n - 8);
	for (size_t i = 0; i + 8 <= n - 8; i += 8) {
		h ^= rd64(p + i);
		h *= 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	h *= 0xc4ceb9fe1a85ec53ull;
	wr64(p + n - 8, h ^ (h >> 29));
}

static struct alloc *small_mixed_state(void)
{
	struct alloc *a = mk(4096, 4096 + 1 * MiB);
	uint64_t x[10];
	for (int i = 0; i < 10; i++)
		x[i] = aa(a, (uint64_t)(i * 37 % 500 + 1));
	uint64_t l1 = aa(a, 3000);
	aa(a, 70000);
	aa(a, 1000);
	cr_assert_eq(alloc_free(a, x[3], 3 * 37 % 500 + 1), ALLOC_OK);
	cr_assert_eq(alloc_free(a, l1, 3000), ALLOC_OK);
	return a;
}

Test(alloc, export_import_round_trip_preserves_everything)
{
	struct alloc *a = small_mixed_state();
	size_t len;
	uint8_t *blob = blob_of(a, &len);
	cr_assert_eq(len % 8, 0);
	struct alloc *b = NULL;
	cr_assert_eq(alloc_import(blob, len, &b), ALLOC_OK);
	cr_assert_eq(alloc_check(b), ALLOC_OK);
	struct alloc_stats s0 = stats_of(a), s1 = stats_of(b);
	cr_assert(memcmp(&s0, &s1, sizeof s0) == 0);
	assert_state_is(b, blob, len);
	/* both allocators keep working the same way */
	uint64_t o0, o1;
	for (int i = 0; i < 100; i++) {
		uint64_t size = (uint64_t)(i * 131 % 3000 + 1);
		cr_assert_eq(alloc_alloc(a, size, &o0), ALLOC_OK);
		cr_assert_eq(alloc_alloc(b, size, &o1), ALLOC_OK);
		cr_assert_eq(o0, o1);
	}
	cr_assert_eq(alloc_check(b), ALLOC_OK);

	size_t need = 0;
	cr_assert_eq(alloc_export(a, blob, 10, &need), ALLOC_EINVAL, "buffer too small");
	cr_assert_eq(need, alloc_export_size(a));
	free(blob);
	alloc_destroy(a);
	alloc_destroy(b);
}

Test(alloc, export_import_round_trip_of_empty_and_full_regions)
{
	uint64_t ends[] = { 4096, 4096 + 64 * KiB };
	for (int i = 0; i < 2; i++) {
		struct alloc *a = mk(4096, ends[i]), *b = NULL;
		if (i == 1) /* no free extent at all: one run and one large block */
			aa(a, 64 * KiB - 4 * KiB), aa(a, 1);
		size_t len;
		uint8_t *blob = blob_of(a, &len);
		cr_assert_eq(alloc_import(blob, len, &b), ALLOC_OK);
		struct alloc_stats s0 = stats_of(a), s1 = stats_of(b);
		cr_assert(memcmp(&s0, &s1, sizeof s0) == 0);
		cr_assert_eq(s1.free_extents, 0);
		assert_state_is(b, blob, len);
		free(blob);
		alloc_destroy(a);
		alloc_destroy(b);
	}
}

Test(alloc, export_import_round_trip_of_a_randomized_state, .timeout = 60)
{
	struct sim s;
	sim_init(&s, test_seed(), 0x5151, 0, 16 * MiB, 128 * MiB);
	sim_run(&s, 50000, 2000, 25000);
	size_t len;
	uint8_t *blob = blob_of(s.a, &len);
	struct alloc *b = NULL;
	SIM_ASSERT(&s, alloc_import(blob, len, &b) == ALLOC_OK, "import failed");
	SIM_ASSERT(&s, alloc_check(b) == ALLOC_OK, "imported allocator fails alloc_check");
	assert_state_is(b, blob, len);
	/* random bit flips anywhere are always caught */
	for (int i = 0; i < 2000; i++) {
		size_t bit = rnd(&s) % (len * 8);
		blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		struct alloc *c = NULL;
		SIM_ASSERT(&s, alloc_import(blob, len, &c) == ALLOC_ECORRUPT, "bit flip accepted");
		SIM_ASSERT(&s, c == NULL, "*out touched");
		blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	free(blob);
	alloc_destroy(s.a);
	s.a = b;
	sim_free_all(&s);
	sim_fini(&s);
}

Test(alloc, import_rejects_truncated_and_bit_flipped_blobs)
{
	struct alloc *a = small_mixed_state();
	size_t len;
	uint8_t *blob = blob_of(a, &len);
	struct alloc *b = NULL;
	for (size_t l = 0; l < len; l++) {
		uint8_t *cut = malloc(l ? l : 1); /* exact-size copy so ASan sees any read past len */
		memcpy(cut, blob, l);
		cr_assert_eq(alloc_import(cut, l, &b), ALLOC_ECORRUPT, "truncated to %zu of %zu accepted", l, len);
		free(cut);
	}
	uint8_t *longer = calloc(len + 8, 1);
	memcpy(longer, blob, len);
	cr_assert_eq(alloc_import(longer, len + 8, &b), ALLOC_ECORRUPT, "trailing bytes accepted");
	free(longer);
	uint8_t *copy = malloc(len);
	for (size_t bit = 0; bit < len * 8; bit++) {
		memcpy(copy, blob, len);
		copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		cr_assert_eq(alloc_import(copy, len, &b), ALLOC_ECORRUPT, "flip of bit %zu accepted", bit);
	}
	cr_assert_null(b);
	cr_assert_eq(alloc_import(NULL, 0, &b), ALLOC_ECORRUPT);
	cr_assert_eq(alloc_import(blob, len, NULL), ALLOC_EINVAL);
	free(copy);
	free(blob);
	alloc_destroy(a);
}

Test(alloc, import_rejects_well_sealed_but_inconsistent_blobs)
{
	/* one run of class 48 at 4096 (region base; placed with mark, as alloc puts runs at the top),
	 * then large blocks from 8192 on */
	struct alloc *a = mk(4096, 4096 + 1 * MiB);
	cr_assert_eq(alloc_mark(a, 4096, 40), ALLOC_OK);
	uint64_t l1 = aa(a, 10000), l2 = aa(a, 700);
	cr_assert_eq(l1, 8192);
	size_t len;
	uint8_t *blob = blob_of(a, &len), *t = malloc(len);
	struct alloc *b = NULL;
	size_t run = 64, large = len - 8 - 32; /* first large record */
	cr_assert_eq(rd64(blob + run), 4096);
	cr_assert_eq(rd64(blob + large), l1);
	cr_assert_eq(rd64(blob + large + 16), l2);

	struct {
		size_t at;
		uint64_t val;
		const char *why;
	} cases[] = {
		{ large + 16, l1 + 4096, "second large block overlaps the first" },
		{ large + 16, l1, "large blocks out of order" },
		{ large + 8, 1 * MiB, "large block past the end" },
		{ large + 8, 300, "large record holding a small size" },
		{ large, 4096 + 16, "large block on top of the run" },
		{ large, 8200, "misaligned large block" },
		{ run, 4096 + 16, "run not aligned to its size" },
		{ run, 4096 + 2 * MiB, "run outside the region" },
		{ run + 8, 40, "class out of range" },
		{ run + 8, 0x100 | 2, "nonzero padding" },
		{ run + 24, UINT64_MAX, "free bits beyond the slot count" },
		{ 24, 16, "base moved so the run is misaligned" },
		{ 32, 4096 + 12 * KiB, "end before the last block" },
		{ 40, 2, "run count too large" },
		{ 48, 1, "large count too small" },
		{ 56, 1, "reserved field set" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memcpy(t, blob, len);
		wr64(t + cases[i].at, cases[i].val);
		reseal(t, len);
		cr_assert_eq(alloc_import(t, len, &b), ALLOC_ECORRUPT, "%s: accepted", cases[i].why);
	}
	/* the free-slot count must match the bitmap */
	memcpy(t, blob, len);
	t[run + 12] ^= 1;
	reseal(t, len);
	cr_assert_eq(alloc_import(t, len, &b), ALLOC_ECORRUPT, "nfree mismatch accepted");
	/* a free slot may not carry a waste nibble */
	memcpy(t, blob, len);
	t[run + 16 + 8 * alx_classes[alx_class_of(40)].nwords + 5] |= 0x10; /* slot 11 is free */
	reseal(t, len);
	cr_assert_eq(alloc_import(t, len, &b), ALLOC_ECORRUPT, "nibble on a free slot accepted");
	/* the unmodified, resealed blob is still fine (the forger is right) */
	memcpy(t, blob, len);
	reseal(t, len);
	cr_assert_eq(alloc_import(t, len, &b), ALLOC_OK);
	alloc_destroy(b);
	free(t);
	free(blob);
	alloc_destroy(a);
}

/* ---- memory efficiency ---- */

Test(alloc, churn_keeps_the_heap_within_15_percent_of_live_bytes, .timeout = 120)
{
	/* A store-like workload: keep about 48 MiB live of mostly small objects, replace random ones
	 * for a long time, and grow the region only when an allocation fails. */
	struct sim s;
	sim_init(&s, test_seed(), 0xc0ffee, 0, 1 * MiB, 1024 * MiB);
	s.large_max = 64 * KiB;
	s.grow_step = 1 * MiB;
	const uint64_t target = 48 * MiB;
	uint64_t live_bytes = 0, peak_end = 0;
	while (live_bytes < target) {
		uint64_t size = pick_size(&s);
		cr_assert(sim_alloc(&s, size));
		live_bytes += size;
	}
	for (int i = 0; i < 400000; i++) {
		s.op++;
		if (live_bytes >= target) {
			size_t k = rnd(&s) % s.n;
			live_bytes -= s.live[k].size;
			sim_free_at(&s, k);
		} else {
			uint64_t size = pick_size(&s);
			cr_assert(sim_alloc(&s, size));
			live_bytes += size;
		}
		if (s.end > peak_end)
			peak_end = s.end;
	}
	double ratio = (double)(peak_end - s.base) / (double)target;
	SIM_ASSERT(&s, ratio <= 1.15, "heap grew past 1.15x the live bytes");
	cr_log_info("churn: heap %.3fx live", ratio);
	SIM_ASSERT(&s, alloc_check(s.a) == ALLOC_OK, "alloc_check failed");
	sim_fini(&s);
}

/* ---- alloc_free_each ---- */

struct cover {
	uint64_t base;
	uint8_t *map; /* one byte per 16-byte unit: 1 = reported free */
	uint64_t sum, ranges;
	bool overlap;
};

static int cover_range(void *ctx, uint64_t off, uint64_t len)
{
	struct cover *c = ctx;
	for (uint64_t u = (off - c->base) / 16; u < (off - c->base + len) / 16; u++) {
		c->overlap |= c->map[u] != 0;
		c->map[u] = 1;
	}
	c->sum += len;
	c->ranges++;
	return 0;
}

Test(alloc, free_each_reports_every_free_range_and_slot_but_no_allocated_byte)
{
	const uint64_t base = 64 * KiB, end = base + 4 * MiB;
	struct alloc *a = mk(base, end);
	uint64_t x = test_seed();
	uint64_t offs[2000], sizes[2000];
	size_t n = 0;
	for (int step = 0; step < 6000; step++) {
		if (n < 2000 && (n == 0 || splitmix(&x) % 3 != 0)) {
			uint64_t size = splitmix(&x) % 4 == 0 ? 513 + splitmix(&x) % (20 * KiB) : 1 + splitmix(&x) % 512;
			uint64_t off;
			if (alloc_alloc(a, size, &off) != ALLOC_OK)
				continue;
			offs[n] = off, sizes[n] = size, n++;
		} else {
			size_t i = (size_t)(splitmix(&x) % n);
			cr_assert_eq(alloc_free(a, offs[i], sizes[i]), ALLOC_OK);
			offs[i] = offs[n - 1], sizes[i] = sizes[n - 1], n--;
		}
	}
	struct cover c = { .base = base, .map = calloc((end - base) / 16, 1) };
	cr_assert_not_null(c.map);
	cr_assert_eq(alloc_free_each(a, cover_range, &c), 0);
	struct alloc_stats st = stats_of(a);
	cr_assert(!c.overlap, "two reported ranges overlap");
	cr_assert_eq(c.sum, st.free_bytes, "reported %llu free bytes, the allocator has %llu",
	             (unsigned long long)c.sum, (unsigned long long)st.free_bytes);
	cr_assert_gt(c.ranges, st.free_extents, "run slots are reported too");
	for (size_t i = 0; i < n; i++)
		for (uint64_t u = (offs[i] - base) / 16; u < (offs[i] - base + alloc_round(sizes[i])) / 16; u++)
			cr_assert_eq(c.map[u], 0, "allocated block at %llu reported free", (unsigned long long)offs[i]);
	struct extent_list l = { .stop_after = 3 };
	cr_assert_eq(alloc_free_each(a, collect_free, &l), 7, "a non-zero return stops the walk");
	cr_assert_eq(l.n, 3);
	cr_assert_eq(alloc_free_each(NULL, collect_free, &l), ALLOC_EINVAL);
	free(c.map);
	alloc_destroy(a);
}
