/* bench/bench_common.h - what ms_bench_kv and ms_bench_mp share: the clock, the PRNG, the keys and
 * value stamps both engines are given (the same bytes in both programs), medians, and the fresh
 * folders each engine's files live in. Each program defines _GNU_SOURCE and die() (its name before
 * the message). */
#ifndef MSTORE_BENCH_COMMON_H
#define MSTORE_BENCH_COMMON_H

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t mix64(uint64_t x)
{ /* splitmix64 finaliser */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

typedef struct rng {
	uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	uint64_t z = r->s;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

__extension__ typedef unsigned __int128 u128;
static inline uint64_t rng_below(rng *r, uint64_t n)
{ /* Lemire's multiply-shift; the bias is below 2^-40 for n <= 2^24 */
	return (uint64_t)(((u128)rng_next(r) * n) >> 64);
}

static inline void store_be64(unsigned char *p, uint64_t v)
{
	for (int b = 7; b >= 0; b--) {
		p[b] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}
static inline uint64_t load64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

#define KEYLEN 16
#define VALLEN 100
#define KEY_SALT 0x6d73746f72652121ull

static inline void make_key(uint64_t i, unsigned char k[KEYLEN])
{
	store_be64(k, mix64(i ^ KEY_SALT));
	store_be64(k + 8, i);
}

static inline uint64_t val_head(uint64_t i, uint32_t gen) { return i ^ ((uint64_t)gen << 48); }
static inline uint64_t val_tail(uint64_t i, uint32_t gen) { return mix64(i * 31u + gen + 7u); }

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median of v[0..n) (of the first 64 at most). */
static inline double median(const double *v, int n)
{
	double t[64];
	if (n <= 0)
		return 0;
	if (n > 64)
		n = 64;
	memcpy(t, v, sizeof(double) * (size_t)n);
	qsort(t, (size_t)n, sizeof(double), cmp_double);
	return (n & 1) ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stderr, "%s: remove %s: %s\n", program_invocation_short_name, path, strerror(errno));
	return 0;
}

static inline void rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return;
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh, empty subdirectory dir/name for one store (each engine's files live in their own). */
static inline void fresh_dir(char *out, size_t cap, const char *dir, const char *name)
{
	snprintf(out, cap, "%s/%s", dir, name);
	rm_rf(out);
	if (mkdir(out, 0700) != 0)
		die("mkdir %s: %s", out, strerror(errno));
}

#endif
