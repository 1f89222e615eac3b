/* tests/testutil.h - helpers shared by the integration tests and tests/helper/ms_test_helper.c.
 *
 * Header-only (static inline). The first half needs only libc and mstore.h, so the helper program
 * can use it; the Criterion half (temp-dir fixture, assertion helpers) is left out when the includer
 * defines TU_NO_CRITERION. Values are never stored in the tests' models: they are regenerated from
 * a seed (tu_fill), so a model holds only (seed, length) per key and checks every byte.
 */
#ifndef MSTORE_TESTUTIL_H
#define MSTORE_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp, st_mtim, pthread extras */
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "mstore.h"

/* ---- random numbers ---------------------------------------------------------------------------- */

static inline uint64_t tu_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* A seed derived from several numbers (order matters). */
static inline uint64_t tu_seed3(uint64_t a, uint64_t b, uint64_t c)
{
	return tu_mix64(tu_mix64(tu_mix64(a) ^ b) ^ c);
}

typedef struct tu_rng { uint64_t s; } tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	uint64_t z = r->s;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t tu_below(tu_rng *r, uint64_t n)
{
	return tu_next(r) % n;
}

/* Uniform in [lo, hi]. */
static inline uint64_t tu_range(tu_rng *r, uint64_t lo, uint64_t hi)
{
	return lo + tu_below(r, hi - lo + 1);
}

/* ---- value patterns ---------------------------------------------------------------------------- */

/* Fill buf with len bytes determined by seed alone. */
static inline void tu_fill(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	tu_rng r = { seed };
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = tu_next(&r);
		memcpy(p + i, &w, 8);
	}
	if (i < len) {
		uint64_t w = tu_next(&r);
		memcpy(p + i, &w, len - i);
	}
}

/* True when the len bytes at p are what tu_fill(.., len, seed) writes. */
static inline bool tu_check_fill(const void *p, size_t len, uint64_t seed)
{
	const unsigned char *q = p;
	tu_rng r = { seed };
	size_t i = 0;
	if (len && !p)
		return false;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = tu_next(&r);
		if (memcmp(q + i, &w, 8) != 0)
			return false;
	}
	if (i < len) {
		uint64_t w = tu_next(&r);
		if (memcmp(q + i, &w, len - i) != 0)
			return false;
	}
	return true;
}

/* ---- environment ------------------------------------------------------------------------------- */

static inline uint64_t tu_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return dflt;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 0);
	if (errno || *end)
		return dflt;
	return (uint64_t)x;
}

static inline double tu_env_double(const char *name, double dflt)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return dflt;
	char *end;
	double x = strtod(v, &end);
	if (*end || !(x > 0))
		return dflt;
	return x;
}

/* MS_TEST_SEED, or a fixed default so that a plain run is reproducible. */
static inline uint64_t tu_seed(void)
{
	return tu_env_u64("MS_TEST_SEED", 20240601u);
}

static inline double tu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* write(2) all of buf; false on error. */
static inline bool tu_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* ---- files ------------------------------------------------------------------------------------- */

/* A file's whole content, size and modification time, to prove a call left it alone. */
typedef struct tu_image {
	bool exists;
	mode_t mode;
	unsigned char *data;
	size_t size;
	struct timespec mtime;
} tu_image;

/* Read path's bytes (through a fresh descriptor) and its stat; false when it cannot be read. */
static inline bool tu_image_take(const char *path, tu_image *img)
{
	memset(img, 0, sizeof *img);
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT; /* exists = false */
	img->exists = true;
	img->mode = st.st_mode;
	img->mtime = st.st_mtim;
	if (!S_ISREG(st.st_mode))
		return true;
	img->size = (size_t)st.st_size;
	img->data = malloc(img->size ? img->size : 1);
	if (!img->data)
		return false;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	size_t got = 0;
	while (got < img->size) {
		ssize_t n = pread(fd, img->data + got, img->size - got, (off_t)got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return got == img->size;
}

static inline void tu_image_free(tu_image *img)
{
	free(img->data);
	img->data = NULL;
}

/* NULL when path now matches img, else a static description of the difference. */
static inline const char *tu_image_diff(const char *path, const tu_image *img)
{
	tu_image now;
	static char why[256];
	if (!tu_image_take(path, &now))
		return "cannot read it back";
	const char *res = NULL;
	if (now.exists != img->exists)
		res = now.exists ? "it was created" : "it was removed";
	else if (!img->exists)
		res = NULL;
	else if ((now.mode & S_IFMT) != (img->mode & S_IFMT))
		res = "its type changed";
	else if ((now.mode & 07777) != (img->mode & 07777))
		res = "its permission bits changed";
	else if (now.size != img->size) {
		snprintf(why, sizeof why, "its size changed from %zu to %zu", img->size, now.size);
		res = why;
	} else if (img->data && memcmp(now.data, img->data, img->size) != 0) {
		size_t i = 0;
		while (now.data[i] == img->data[i])
			i++;
		snprintf(why, sizeof why, "its bytes changed (first at offset %zu)", i);
		res = why;
	} else if (now.mtime.tv_sec != img->mtime.tv_sec || now.mtime.tv_nsec != img->mtime.tv_nsec)
		res = "its mtime changed";
	tu_image_free(&now);
	return res;
}

static inline bool tu_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return false;
	bool ok = tu_write_all(fd, data, len);
	return close(fd) == 0 && ok;
}

/* Read a whole file into a malloc'd buffer; NULL on error. */
static inline unsigned char *tu_read_file(const char *path, size_t *len)
{
	tu_image img;
	if (!tu_image_take(path, &img) || !img.exists || !S_ISREG(img.mode)) {
		tu_image_free(&img);
		return NULL;
	}
	*len = img.size;
	return img.data;
}

static inline bool tu_copy_file(const char *from, const char *to)
{
	size_t len;
	unsigned char *d = tu_read_file(from, &len);
	if (!d)
		return false;
	bool ok = tu_write_file(to, d, len);
	free(d);
	return ok;
}

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(p);
	return 0;
}

static inline void tu_rmrf(const char *path)
{
	nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the kill campaign's transactions (shared by tests/test_kill.c and the helper) ------------- *
 * Transaction number seq of a campaign with seed `seed` is a pure function of (seed, seq): the helper
 * commits it, the test replays it on its model. Every transaction also puts "seq" = seq (8 bytes,
 * little endian), so the store itself says which transaction was the last one committed. Data keys
 * are "g00".."g63"; a put of key k in transaction seq with length len stores
 * tu_fill(.., len, kt_value_seed(seed, k, seq, len)). */

#define KT_NKEYS 64u
#define KT_MAXOPS 12u
#define KT_SEQ_KEY "seq"

struct kt_op {
	bool del;
	unsigned key;
	size_t len;
};

static inline uint64_t kt_value_seed(uint64_t seed, unsigned key, uint64_t seq, size_t len)
{
	return tu_seed3(seed ^ 0x6b696c6cull, ((uint64_t)key << 40) ^ (uint64_t)len, seq);
}

static inline size_t kt_key(char *buf, unsigned key)
{
	return (size_t)snprintf(buf, 8, "g%02u", key);
}

/* The operations of transaction seq; returns how many (1..KT_MAXOPS). */
static inline unsigned kt_txn_ops(uint64_t seed, uint64_t seq, struct kt_op *ops)
{
	tu_rng r = { tu_seed3(seed, seq, 0x7478) };
	unsigned n = (unsigned)tu_range(&r, 1, KT_MAXOPS);
	for (unsigned i = 0; i < n; i++) {
		ops[i].key = (unsigned)tu_below(&r, KT_NKEYS);
		ops[i].del = tu_below(&r, 100) < 20;
		uint64_t c = tu_below(&r, 100);
		if (c < 35)
			ops[i].len = (size_t)tu_below(&r, 65);
		else if (c < 80)
			ops[i].len = (size_t)tu_range(&r, 65, 4096);
		else if (c < 98)
			ops[i].len = (size_t)tu_range(&r, 4097, 65536);
		else
			ops[i].len = (size_t)tu_range(&r, 65537, 512 * 1024);
	}
	return n;
}

static inline void kt_seq_bytes(uint64_t seq, unsigned char b[8])
{
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(seq >> (8 * i));
}

static inline uint64_t kt_seq_value(const void *p)
{
	const unsigned char *b = p;
	uint64_t seq = 0;
	for (int i = 7; i >= 0; i--)
		seq = (seq << 8) | b[i];
	return seq;
}

/* Commit transaction seq of campaign seed on s. buf holds at least 512 KiB. Returns 0 or the failing
 * call's code, with *what naming the call. */
static inline int kt_commit(ms_store *s, uint64_t seed, uint64_t seq, unsigned char *buf, const char **what)
{
	struct kt_op ops[KT_MAXOPS];
	unsigned n = kt_txn_ops(seed, seq, ops);
	ms_txn *t = NULL;
	int rc = ms_txn_begin(s, 0, &t);
	*what = "begin";
	if (rc)
		return rc;
	for (unsigned i = 0; i < n; i++) {
		char key[8];
		size_t klen = kt_key(key, ops[i].key);
		uint64_t vs = kt_value_seed(seed, ops[i].key, seq, ops[i].len);
		if (ops[i].del) {
			*what = "del";
			rc = ms_txn_del(t, key, klen);
			if (rc == MS_NOTFOUND)
				rc = 0;
		} else if (i % 3 == 2) {
			/* Some values are written in place, the rest copied. */
			void *dst = NULL;
			*what = "reserve";
			rc = ms_txn_reserve(t, key, klen, ops[i].len, &dst);
			if (rc == 0)
				tu_fill(dst, ops[i].len, vs);
		} else {
			*what = "put";
			tu_fill(buf, ops[i].len, vs);
			rc = ms_txn_put(t, key, klen, buf, ops[i].len);
		}
		if (rc) {
			ms_txn_abort(t);
			return rc;
		}
	}
	unsigned char sb[8];
	kt_seq_bytes(seq, sb);
	*what = "put-seq";
	rc = ms_txn_put(t, KT_SEQ_KEY, strlen(KT_SEQ_KEY), sb, 8);
	if (rc) {
		ms_txn_abort(t);
		return rc;
	}
	*what = "commit";
	return ms_txn_commit(t);
}

/* ---- Criterion part ---------------------------------------------------------------------------- */
#ifndef TU_NO_CRITERION
#include <criterion/criterion.h>

/* One temporary directory per test: made by tu_setup (the suites' .init), removed by tu_teardown
 * (.fini, which Criterion also runs after a failed assertion). */
static char tu_dir[PATH_MAX];

static inline void tu_setup(void)
{
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	snprintf(tu_dir, sizeof tu_dir, "%s/mstore-test-XXXXXX", base);
	if (!mkdtemp(tu_dir))
		cr_assert_fail("mkdtemp(%s): %s", tu_dir, strerror(errno));
}

static inline void tu_teardown(void)
{
	if (tu_dir[0] && !getenv("MS_TEST_KEEP"))
		tu_rmrf(tu_dir);
}

/* A path inside the test's directory (a static buffer per call slot: up to 8 live at once). */
static inline const char *tu_path(const char *name)
{
	static char bufs[8][PATH_MAX];
	static unsigned slot;
	char *b = bufs[slot++ % 8];
	snprintf(b, PATH_MAX, "%s/%s", tu_dir, name);
	return b;
}

static inline ms_store *tu_open(const char *path, unsigned flags, uint64_t capacity)
{
	ms_options o = { .capacity = capacity, .flags = flags, .mode = 0 };
	ms_store *s = NULL;
	int rc = ms_open(path, &o, &s);
	cr_assert_eq(rc, 0, "ms_open(%s, flags %#x, capacity %" PRIu64 ") = %d (%s): %s", path, flags,
		     capacity, rc, ms_strerror(rc), ms_last_error());
	cr_assert_not_null(s);
	return s;
}

static inline ms_store *tu_create(const char *path)
{
	return tu_open(path, MS_CREATE, 0);
}

static inline ms_txn *tu_begin(ms_store *s, unsigned flags)
{
	ms_txn *t = NULL;
	int rc = ms_txn_begin(s, flags, &t);
	cr_assert_eq(rc, 0, "ms_txn_begin(flags %#x) = %d (%s)", flags, rc, ms_strerror(rc));
	cr_assert_not_null(t);
	return t;
}

static inline ms_stats tu_stat(ms_store *s)
{
	ms_stats st;
	memset(&st, 0xa5, sizeof st);
	int rc = ms_stat(s, &st);
	cr_assert_eq(rc, 0, "ms_stat = %d (%s)", rc, ms_strerror(rc));
	return st;
}

static inline void tu_put(ms_store *s, const char *key, const void *v, size_t vlen)
{
	int rc = ms_put(s, key, strlen(key), v, vlen);
	cr_assert_eq(rc, 0, "ms_put(%s, %zu bytes) = %d (%s)", key, vlen, rc, ms_strerror(rc));
}

static inline void tu_puts(ms_store *s, const char *key, const char *v)
{
	tu_put(s, key, v, strlen(v));
}

static inline void tu_commit(ms_txn *t)
{
	int rc = ms_txn_commit(t);
	cr_assert_eq(rc, 0, "ms_txn_commit = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
}

static inline void tu_close(ms_store *s)
{
	int rc = ms_close(s);
	cr_assert_eq(rc, 0, "ms_close = %d (%s)", rc, ms_strerror(rc));
}

/* ms_get of a string key must give exactly the string want. */
static inline void tu_expect_str(ms_store *s, const char *key, const char *want)
{
	char buf[4096];
	size_t vlen = (size_t)-1;
	int rc = ms_get(s, key, strlen(key), buf, sizeof buf, &vlen);
	cr_assert_eq(rc, 0, "ms_get(%s) = %d (%s)", key, rc, ms_strerror(rc));
	cr_assert_eq(vlen, strlen(want), "ms_get(%s): length %zu, want %zu", key, vlen, strlen(want));
	cr_assert(memcmp(buf, want, vlen) == 0, "ms_get(%s): wrong bytes", key);
}

static inline void tu_expect_absent(ms_store *s, const char *key)
{
	char buf[16];
	size_t vlen = 0;
	int rc = ms_get(s, key, strlen(key), buf, sizeof buf, &vlen);
	cr_assert_eq(rc, MS_NOTFOUND, "ms_get(%s) = %d (%s), want MS_NOTFOUND", key, rc, ms_strerror(rc));
}

/* ms_check callback that keeps the first problem for a failure message. */
struct tu_problems {
	uint64_t count;
	uint64_t first_off;
	char first[200];
};

static inline void tu_problem_fn(void *ctx, uint64_t off, const char *problem)
{
	struct tu_problems *p = ctx;
	if (p->count++ == 0) {
		p->first_off = off;
		snprintf(p->first, sizeof p->first, "%s", problem ? problem : "(null)");
	}
}

/* ms_check must say the (closed) store at path is sound; returns what it counted. */
static inline ms_check_stats tu_check_sound(const char *path)
{
	struct tu_problems pr = { 0 };
	ms_check_stats cs;
	memset(&cs, 0, sizeof cs);
	int rc = ms_check(path, tu_problem_fn, &pr, &cs);
	cr_assert_eq(rc, 0, "ms_check(%s) = %d (%s): %" PRIu64 " problems, first at offset %" PRIu64 ": %s",
		     path, rc, ms_strerror(rc), pr.count, pr.first_off, pr.first);
	cr_assert_eq(cs.problems, 0, "ms_check returned 0 but counted %" PRIu64 " problems", cs.problems);
	return cs;
}
#endif /* TU_NO_CRITERION */

#endif /* MSTORE_TESTUTIL_H */
