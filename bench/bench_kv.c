/* bench_kv.c - mstore and LMDB side by side: random get, batched put, sequential scan, durable commit
 * latency, and file size after load and after churn. Same data, same machine, same run.
 *
 * Build: with the rest of the project (bench/CMakeLists.txt, target ms_bench_kv). Compiled with
 * -DMSB_LMDB_ONLY it needs only liblmdb and measures the LMDB half alone.
 *
 * Data: key i (i = 0..N-1) is 16 bytes: 8 bytes of a 64-bit hash of i (big-endian, so the keys are in
 * random order for a B+tree), then i big-endian (so keys are unique). Value i is 100 bytes generated
 * from i: bytes 0..7 hold i and the generation, the last 8 bytes a hash of both, the middle a
 * pseudo-random filler. Both engines get the keys in the same order (i ascending) and the random
 * lookups draw the same index sequence from the same fixed-seed PRNG.
 *
 * Every value a lookup returns is checked the same way for both engines: its length, its first and its
 * last 8 bytes (--verify=full: memcmp of all of it against a freshly generated copy).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"

#ifndef MSB_LMDB_ONLY
#include "mstore.h"
#endif

/* ---------------------------------------------------------------------------------------------- */
/* small utilities */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ms_bench_kv: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}


#define NOINLINE __attribute__((noinline)) /* the timed loops stay separate functions (callgrind) */

/* The timed section of a run: tm_start() .. tm_stop() gives the wall time (CLOCK_MONOTONIC, the
 * figure reported) and leaves the thread's CPU time (CLOCK_THREAD_CPUTIME_ID, user + system) of the
 * same section in tm_cpu_ns. CPU time / wall time below ~0.9 in a CPU-bound test means the run was
 * preempted: the machine was busy with something else. */
static uint64_t tm_w0, tm_c0, tm_cpu_ns, tm_wall_ns;
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline void tm_start(void)
{
	tm_c0 = thread_cpu_ns();
	tm_w0 = now_ns();
}
static inline uint64_t tm_stop(void)
{
	uint64_t w = now_ns();
	tm_cpu_ns = thread_cpu_ns() - tm_c0;
	tm_wall_ns = w - tm_w0;
	return tm_wall_ns;
}
static double cpu_share(void) { return tm_wall_ns ? (double)tm_cpu_ns / (double)tm_wall_ns : 1.0; }
static int busy_runs, cpu_runs;
static void count_share(double share)
{
	cpu_runs++;
	if (share < 0.9)
		busy_runs++;
}

#define SEED_GET 0x1234567887654321ull
#define SEED_CHURN 0x0badc0ffee0ddf00ull


/* Value of key i in generation gen, len >= 16 bytes. */
static void make_val(uint64_t i, uint32_t gen, size_t len, unsigned char *v)
{
	uint64_t x = mix64(i + ((uint64_t)gen << 32));
	size_t o = 0;
	for (; o + 8 <= len; o += 8) {
		memcpy(v + o, &x, 8);
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	}
	for (; o < len; o++) {
		v[o] = (unsigned char)x;
		x >>= 8;
	}
	uint64_t h = val_head(i, gen), t = val_tail(i, gen);
	memcpy(v, &h, 8);
	memcpy(v + len - 8, &t, 8);
}

/* The check applied to every value a lookup returns (the same for both engines). */
static inline int check_val(uint64_t i, uint32_t gen, size_t want_len, const void *data, size_t len,
                            int full, unsigned char *scratch)
{
	if (len != want_len)
		return 0;
	const unsigned char *d = data;
	if (full) {
		make_val(i, gen, want_len, scratch);
		return memcmp(d, scratch, len) == 0;
	}
	return load64(d) == val_head(i, gen) && load64(d + len - 8) == val_tail(i, gen);
}

/* nearest-rank percentile of a sorted array */
static double pct_sorted(const double *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t r = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (r < 1)
		r = 1;
	if (r > n)
		r = n;
	return v[r - 1];
}


static uint64_t file_size(const char *path, uint64_t *alloc_bytes)
{
	struct stat st;
	if (stat(path, &st) != 0)
		die("stat %s: %s", path, strerror(errno));
	if (alloc_bytes)
		*alloc_bytes = (uint64_t)st.st_blocks * 512u;
	return (uint64_t)st.st_size;
}

/* ---------------------------------------------------------------------------------------------- */
/* configuration and results */

enum { T_GET = 1, T_PUT = 2, T_SCAN = 4, T_COMMIT = 8, T_SIZE = 16 };
enum { E_MS = 0, E_LM = 1, NENG = 2 };
static const char *const eng_name[NENG] = {"mstore", "LMDB"};

typedef struct cfg {
	uint64_t n, ops;
	int runs;
	int commits;
	int batch;
	int churn_rounds;
	int warmup;
	int verify_full;
	int durable_put;
	uint64_t durable_keys;
	int json, markdown;
	unsigned only;
	int engine_on[NENG];
	char dir[4096];
	int dir_given;
	size_t mapsize;
} cfg;

#define MAXRUNS 64

/* One row of the report. */
typedef struct row {
	const char *id;    /* json key */
	const char *label; /* table label */
	const char *unit;
	const char *goal;     /* text for the goal column */
	int higher_better;    /* 1: ratio = ms/lm, bigger is better; 0: smaller is better */
	int have[NENG];
	double val[NENG];          /* the median (or the single measurement) */
	double runs[NENG][MAXRUNS]; /* per-run figures */
	int nruns[NENG];
} row;

enum {
	R_LOAD,
	R_GET,
	R_GET_CPU,
	R_PUT,
	R_PUT_CPU,
	R_PUT_DUR,
	R_SCAN,
	R_SCAN_CPU,
	R_COMMIT_MED,
	R_COMMIT_P99,
	R_SIZE_LOAD_FILE,
	R_SIZE_LOAD_USED,
	R_SIZE_LOAD_OVH,
	R_SIZE_LOAD_META,
	R_SIZE_CHURN_FILE,
	R_SIZE_CHURN_USED,
	R_SIZE_CHURN_RATIO,
	R_SIZE_COMPACT,
	NROWS
};

static row rows[NROWS] = {
	[R_LOAD] = {"bulk_load", "bulk load, 1 txn (ops/s)", "ops/s", "-", 1, {0}, {0}, {{0}}, {0}},
	[R_GET] = {"random_get", "random get (ops/s)", "ops/s", ">= 3x", 1, {0}, {0}, {{0}}, {0}},
	[R_GET_CPU] = {"random_get_cpu", "  same, per CPU second", "ops/s", ">= 3x", 1, {0}, {0}, {{0}}, {0}},
	[R_PUT] = {"batched_put", "batched put, nosync (ops/s)", "ops/s", ">= 2x", 1, {0}, {0}, {{0}}, {0}},
	[R_PUT_CPU] = {"batched_put_cpu", "  same, per CPU second", "ops/s", ">= 2x", 1, {0}, {0}, {{0}}, {0}},
	[R_PUT_DUR] = {"batched_put_durable", "batched put, durable (ops/s)", "ops/s", "(info)", 1, {0}, {0}, {{0}}, {0}},
	[R_SCAN] = {"scan", "sequential scan (objects/s)", "objects/s", ">= 1x", 1, {0}, {0}, {{0}}, {0}},
	[R_SCAN_CPU] = {"scan_cpu", "  same, per CPU second", "objects/s", ">= 1x", 1, {0}, {0}, {{0}}, {0}},
	[R_COMMIT_MED] = {"commit_median_us", "durable commit, median (us)", "us", "<= 1x", 0, {0}, {0}, {{0}}, {0}},
	[R_COMMIT_P99] = {"commit_p99_us", "durable commit, p99 (us)", "us", "<= 1x", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_LOAD_FILE] = {"load_file_bytes_per_obj", "after load: file B/object", "B/object", "(report)", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_LOAD_USED] = {"load_used_bytes_per_obj", "after load: used B/object", "B/object", "(report)", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_LOAD_OVH] = {"load_overhead_bytes_per_obj", "after load: used - live, B/object", "B/object", "(report)", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_LOAD_META] = {"load_header_index_bytes_per_obj", "after load: header + index, B/object", "B/object", "<= 32 B", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_CHURN_FILE] = {"churn_file_bytes_per_obj", "after churn: file B/object", "B/object", "(report)", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_CHURN_USED] = {"churn_used_bytes_per_obj", "after churn: used B/object", "B/object", "(report)", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_CHURN_RATIO] = {"churn_file_over_live", "after churn: file / live bytes", "x", "(report)", 0, {0}, {0}, {{0}}, {0}},
	[R_SIZE_COMPACT] = {"compacted_copy_bytes_per_obj", "compacted copy B/object (mdb_copy -c)", "B/object", "(report)", 0, {0}, {0}, {{0}}, {0}},
};

static void row_add(int r, int e, double v)
{
	row *w = &rows[r];
	if (w->nruns[e] < MAXRUNS)
		w->runs[e][w->nruns[e]++] = v;
	w->val[e] = median(w->runs[e], w->nruns[e]);
	w->have[e] = 1;
}

static const cfg *C;
static uint64_t verify_errors[NENG];
static char notes[8192];
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	size_t l = strlen(notes);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(notes + l, sizeof notes - l, fmt, ap);
	va_end(ap);
	l = strlen(notes);
	if (l + 1 < sizeof notes) {
		notes[l] = '\n';
		notes[l + 1] = 0;
	}
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "  ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

/* ---------------------------------------------------------------------------------------------- */
/* LMDB */

#define LMC(call)                                                                              \
	do {                                                                                   \
		int lmc_rc_ = (call);                                                          \
		if (lmc_rc_ != 0)                                                              \
			die("%s:%d: %s: %s", __FILE__, __LINE__, #call, mdb_strerror(lmc_rc_)); \
	} while (0)

typedef struct lm_db {
	MDB_env *env;
	MDB_dbi dbi;
	char path[4400];
} lm_db;

static void lm_open(lm_db *d, const char *dir, unsigned flags)
{
	snprintf(d->path, sizeof d->path, "%s/data.mdb", dir);
	LMC(mdb_env_create(&d->env));
	LMC(mdb_env_set_mapsize(d->env, C->mapsize));
	LMC(mdb_env_open(d->env, d->path, MDB_NOSUBDIR | flags, 0600));
	MDB_txn *t;
	LMC(mdb_txn_begin(d->env, NULL, 0, &t));
	LMC(mdb_dbi_open(t, NULL, 0, &d->dbi));
	LMC(mdb_txn_commit(t));
}
static void lm_close(lm_db *d)
{
	mdb_env_close(d->env);
	d->env = NULL;
}

/* Put keys [lo, hi) of generation gen, one write transaction per `batch` keys; returns ns spent. */
static uint64_t lm_put_range(lm_db *d, uint64_t lo, uint64_t hi, uint64_t batch)
{
	unsigned char k[KEYLEN], v[VALLEN];
	tm_start();
	for (uint64_t b = lo; b < hi; b += batch) {
		MDB_txn *t;
		LMC(mdb_txn_begin(d->env, NULL, 0, &t));
		uint64_t e = b + batch < hi ? b + batch : hi;
		for (uint64_t i = b; i < e; i++) {
			make_key(i, k);
			make_val(i, 0, VALLEN, v);
			MDB_val key = {KEYLEN, k}, val = {VALLEN, v};
			LMC(mdb_put(t, d->dbi, &key, &val, 0));
		}
		LMC(mdb_txn_commit(t));
	}
	return tm_stop();
}

NOINLINE static double lm_get_run(lm_db *d, uint64_t *bad_out)
{
	const uint64_t n = C->n, ops = C->ops;
	const int full = C->verify_full;
	unsigned char k[KEYLEN], scratch[VALLEN];
	uint64_t bad = 0;
	rng r = {SEED_GET};
	tm_start();
	MDB_txn *t;
	LMC(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t));
	for (uint64_t j = 0; j < ops; j++) {
		uint64_t i = rng_below(&r, n);
		make_key(i, k);
		MDB_val key = {KEYLEN, k}, val;
		int rc = mdb_get(t, d->dbi, &key, &val);
		if (rc != 0 || !check_val(i, 0, VALLEN, val.mv_data, val.mv_size, full, scratch))
			bad++;
	}
	mdb_txn_abort(t);
	uint64_t dt = tm_stop();
	*bad_out = bad;
	return (double)ops * 1e9 / (double)dt;
}

NOINLINE static double lm_scan_run(lm_db *d, uint64_t *count, uint64_t *sum)
{
	MDB_txn *t;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t cnt = 0, s = 0;
	tm_start();
	LMC(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t));
	LMC(mdb_cursor_open(t, d->dbi, &cur));
	int rc;
	while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
		cnt++;
		s += ((const unsigned char *)v.mv_data)[v.mv_size - 1];
	}
	if (rc != MDB_NOTFOUND)
		die("mdb_cursor_get: %s", mdb_strerror(rc));
	mdb_cursor_close(cur);
	mdb_txn_abort(t);
	uint64_t dt = tm_stop();
	*count = cnt;
	*sum = s;
	return (double)cnt * 1e9 / (double)dt;
}

/* Durable commits of one 100-byte put each; lat[] receives microseconds. Keys first..first+m-1. */
static void lm_commit_run(lm_db *d, uint64_t first, int m, double *lat)
{
	unsigned char k[KEYLEN], v[VALLEN];
	for (int j = 0; j < m; j++) {
		uint64_t i = first + (uint64_t)j;
		make_key(i, k);
		make_val(i, 0, VALLEN, v);
		uint64_t t0 = now_ns();
		MDB_txn *t;
		LMC(mdb_txn_begin(d->env, NULL, 0, &t));
		MDB_val key = {KEYLEN, k}, val = {VALLEN, v};
		LMC(mdb_put(t, d->dbi, &key, &val, 0));
		LMC(mdb_txn_commit(t));
		lat[j] = (double)(now_ns() - t0) / 1000.0;
	}
}

/* Pages on LMDB's freelist (what mdb_stat -f counts): each FREE_DBI record is an IDL whose first
 * word is the number of page numbers that follow. */
static uint64_t lm_free_pages(lm_db *d)
{
	MDB_txn *t;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t pages = 0;
	LMC(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t));
	LMC(mdb_cursor_open(t, 0 /* FREE_DBI */, &cur));
	while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
		size_t cnt;
		memcpy(&cnt, v.mv_data, sizeof cnt);
		pages += cnt;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(t);
	return pages;
}

typedef struct size_fig {
	uint64_t file;  /* st_size */
	uint64_t alloc; /* st_blocks * 512 */
	uint64_t used;  /* engine's allocated bytes (LMDB: (last_pgno + 1 - free pages) * page size) */
	uint64_t span;  /* LMDB: (last_pgno + 1) * page size; mstore: file_bytes from ms_stat */
	uint64_t live;  /* engine's live bytes if it reports them (mstore), else 0 */
	/* mstore's breakdown (ms_stats), 0 for LMDB */
	uint64_t obj_bytes, index_bytes, waste, free_bytes, largest_free, pinned, extents;
} size_fig;

static void lm_size(lm_db *d, size_fig *f)
{
	MDB_envinfo info;
	MDB_stat st;
	LMC(mdb_env_info(d->env, &info));
	LMC(mdb_env_stat(d->env, &st));
	uint64_t pages = (uint64_t)info.me_last_pgno + 1;
	uint64_t fp = lm_free_pages(d);
	f->span = pages * st.ms_psize;
	f->used = (pages - fp) * st.ms_psize;
	f->file = file_size(d->path, &f->alloc);
	f->live = 0;
	f->obj_bytes = f->index_bytes = f->waste = f->free_bytes = f->largest_free = f->pinned = f->extents = 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* mstore */

#ifndef MSB_LMDB_ONLY
#define MSC(call)                                                                                     \
	do {                                                                                          \
		int msc_rc_ = (call);                                                                 \
		if (msc_rc_ != 0)                                                                     \
			die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call, ms_strerror(msc_rc_), \
			    ms_last_error());                                                         \
	} while (0)

typedef struct ms_db {
	ms_store *s;
	char path[4400];
} ms_db;

static void ms_open_db(ms_db *d, const char *dir, unsigned flags)
{
	snprintf(d->path, sizeof d->path, "%s/store.ms", dir);
	ms_options o;
	memset(&o, 0, sizeof o);
	o.flags = MS_CREATE | flags;
	MSC(ms_open(d->path, &o, &d->s));
}
static void ms_close_db(ms_db *d)
{
	MSC(ms_close(d->s));
	d->s = NULL;
}

static uint64_t ms_put_range(ms_db *d, uint64_t lo, uint64_t hi, uint64_t batch)
{
	unsigned char k[KEYLEN], v[VALLEN];
	tm_start();
	for (uint64_t b = lo; b < hi; b += batch) {
		ms_txn *t;
		MSC(ms_txn_begin(d->s, 0, &t));
		uint64_t e = b + batch < hi ? b + batch : hi;
		for (uint64_t i = b; i < e; i++) {
			make_key(i, k);
			make_val(i, 0, VALLEN, v);
			MSC(ms_txn_put(t, k, KEYLEN, v, VALLEN));
		}
		MSC(ms_txn_commit(t));
	}
	return tm_stop();
}

NOINLINE static double ms_get_run(ms_db *d, uint64_t *bad_out)
{
	const uint64_t n = C->n, ops = C->ops;
	const int full = C->verify_full;
	unsigned char k[KEYLEN], scratch[VALLEN];
	uint64_t bad = 0;
	rng r = {SEED_GET};
	tm_start();
	ms_txn *t;
	MSC(ms_txn_begin(d->s, MS_READONLY, &t));
	for (uint64_t j = 0; j < ops; j++) {
		uint64_t i = rng_below(&r, n);
		make_key(i, k);
		ms_val val;
		int rc = ms_txn_get(t, k, KEYLEN, &val);
		if (rc != 0 || !check_val(i, 0, VALLEN, val.data, val.len, full, scratch))
			bad++;
	}
	ms_txn_abort(t);
	uint64_t dt = tm_stop();
	*bad_out = bad;
	return (double)ops * 1e9 / (double)dt;
}

NOINLINE static double ms_scan_run(ms_db *d, uint64_t *count, uint64_t *sum)
{
	ms_txn *t;
	ms_iter *it;
	ms_val k, v;
	uint64_t cnt = 0, s = 0;
	tm_start();
	MSC(ms_txn_begin(d->s, MS_READONLY, &t));
	MSC(ms_iter_open(t, &it));
	int rc;
	while ((rc = ms_iter_next(it, &k, &v)) == 0) {
		cnt++;
		s += ((const unsigned char *)v.data)[v.len - 1];
	}
	if (rc != MS_NOTFOUND)
		die("ms_iter_next: %s (%s)", ms_strerror(rc), ms_last_error());
	ms_iter_close(it);
	ms_txn_abort(t);
	uint64_t dt = tm_stop();
	*count = cnt;
	*sum = s;
	return (double)cnt * 1e9 / (double)dt;
}

static void ms_commit_run(ms_db *d, uint64_t first, int m, double *lat)
{
	unsigned char k[KEYLEN], v[VALLEN];
	for (int j = 0; j < m; j++) {
		uint64_t i = first + (uint64_t)j;
		make_key(i, k);
		make_val(i, 0, VALLEN, v);
		uint64_t t0 = now_ns();
		ms_txn *t;
		MSC(ms_txn_begin(d->s, 0, &t));
		MSC(ms_txn_put(t, k, KEYLEN, v, VALLEN));
		MSC(ms_txn_commit(t));
		lat[j] = (double)(now_ns() - t0) / 1000.0;
	}
}

static void ms_size(ms_db *d, size_fig *f)
{
	ms_stats st;
	MSC(ms_stat(d->s, &st));
	f->used = st.used_bytes;
	f->span = st.file_bytes;
	f->live = st.live_bytes;
	f->file = file_size(d->path, &f->alloc);
	f->obj_bytes = st.object_bytes;
	f->index_bytes = st.index_bytes;
	f->waste = st.internal_waste;
	f->free_bytes = st.free_bytes;
	f->largest_free = st.largest_free;
	f->pinned = st.pinned_bytes;
	f->extents = st.free_extents;
}
#endif

/* ---------------------------------------------------------------------------------------------- */
/* the loaded stores shared by get, scan and commit: N keys loaded in one transaction (no sync), then
 * synced, closed and reopened in the default (durable) mode */

static int loaded[NENG];
static lm_db lm_loaded;
#ifndef MSB_LMDB_ONLY
static ms_db ms_loaded;
#endif

static void ensure_loaded(int e)
{
	char dir[4200];
	if (loaded[e])
		return;
	progress("loading %" PRIu64 " keys into %s (one transaction)", C->n, eng_name[e]);
	if (e == E_LM) {
		fresh_dir(dir, sizeof dir, C->dir, "lmdb-loaded");
		lm_open(&lm_loaded, dir, MDB_NOSYNC | MDB_NOMETASYNC);
		uint64_t ns = lm_put_range(&lm_loaded, 0, C->n, C->n);
		row_add(R_LOAD, e, (double)C->n * 1e9 / (double)ns);
		LMC(mdb_env_sync(lm_loaded.env, 1));
		lm_close(&lm_loaded);
		lm_open(&lm_loaded, dir, 0);
	}
#ifndef MSB_LMDB_ONLY
	else {
		fresh_dir(dir, sizeof dir, C->dir, "mstore-loaded");
		ms_open_db(&ms_loaded, dir, MS_NOSYNC);
		uint64_t ns = ms_put_range(&ms_loaded, 0, C->n, C->n);
		row_add(R_LOAD, e, (double)C->n * 1e9 / (double)ns);
		MSC(ms_sync(ms_loaded.s));
		ms_close_db(&ms_loaded);
		ms_open_db(&ms_loaded, dir, 0);
	}
#endif
	loaded[e] = 1;
}

static void close_loaded(void)
{
	if (loaded[E_LM])
		lm_close(&lm_loaded);
#ifndef MSB_LMDB_ONLY
	if (loaded[E_MS])
		ms_close_db(&ms_loaded);
#endif
	loaded[E_LM] = loaded[E_MS] = 0;
}

/* Engines in the order of run r: alternate which one goes first so neither always runs on a machine
 * the other has just warmed (or left writing back). */
static int order(int r, int k) { return ((r + k) & 1) ? E_LM : E_MS; }

/* ---------------------------------------------------------------------------------------------- */
/* the tests */

static void test_get(void)
{
	fprintf(stderr, "random get: %" PRIu64 " lookups, %d runs (+%d warm-up) on the loaded store\n",
	        C->ops, C->runs, C->warmup);
	for (int e = 0; e < NENG; e++)
		if (C->engine_on[e])
			ensure_loaded(e);
	for (int r = -C->warmup; r < C->runs; r++) {
		for (int k = 0; k < NENG; k++) {
			int e = order(r < 0 ? 0 : r, k);
			if (!C->engine_on[e])
				continue;
			uint64_t bad = 0;
			double x;
#ifndef MSB_LMDB_ONLY
			if (e == E_MS)
				x = ms_get_run(&ms_loaded, &bad);
			else
#endif
				x = lm_get_run(&lm_loaded, &bad);
			double share = cpu_share();
			if (r >= 0)
				count_share(share);
			verify_errors[e] += bad;
			if (bad)
				fprintf(stderr, "ms_bench_kv: %s: %" PRIu64 " lookups returned a wrong value\n",
				        eng_name[e], bad);
			if (r >= 0) {
				row_add(R_GET, e, x);
				row_add(R_GET_CPU, e, (double)C->ops * 1e9 / (double)tm_cpu_ns);
			}
			progress("%s run %d: %.0f ops/s (cpu %.0f%%)%s", eng_name[e], r, x, share * 100,
			         r < 0 ? " (warm-up)" : "");
		}
	}
}

static void test_scan(void)
{
	fprintf(stderr, "scan: %d runs over the loaded store\n", C->runs);
	uint64_t want_sum = 0;
	{
		unsigned char v[VALLEN];
		for (uint64_t i = 0; i < C->n; i++) {
			make_val(i, 0, VALLEN, v);
			want_sum += v[VALLEN - 1];
		}
	}
	for (int e = 0; e < NENG; e++)
		if (C->engine_on[e])
			ensure_loaded(e);
	for (int r = 0; r < C->runs; r++) {
		for (int k = 0; k < NENG; k++) {
			int e = order(r, k);
			if (!C->engine_on[e])
				continue;
			uint64_t cnt, sum;
			double x;
#ifndef MSB_LMDB_ONLY
			if (e == E_MS)
				x = ms_scan_run(&ms_loaded, &cnt, &sum);
			else
#endif
				x = lm_scan_run(&lm_loaded, &cnt, &sum);
			double share = cpu_share();
			count_share(share);
			if (cnt != C->n || sum != want_sum) {
				verify_errors[e]++;
				fprintf(stderr, "ms_bench_kv: %s scan saw %" PRIu64 " objects (want %" PRIu64
				        "), byte sum %" PRIu64 " (want %" PRIu64 ")\n",
				        eng_name[e], cnt, C->n, sum, want_sum);
			}
			row_add(R_SCAN, e, x);
			row_add(R_SCAN_CPU, e, (double)cnt * 1e9 / (double)tm_cpu_ns);
			progress("%s run %d: %.0f objects/s (cpu %.0f%%)", eng_name[e], r, x, share * 100);
		}
	}
}

static void test_put_mode(int durable)
{
	int rid = durable ? R_PUT_DUR : R_PUT;
	uint64_t keys = durable && C->durable_keys < C->n ? C->durable_keys : C->n;
	fprintf(stderr, "batched put (%s): %" PRIu64 " keys, %d per txn, %d runs, fresh store each run\n",
	        durable ? "durable" : "nosync", keys, C->batch, C->runs);
	char dir[4200];
	if (durable)
		note("batched put, durable: the first %" PRIu64 " keys (%" PRIu64 " durable commits of %d) into an "
		     "empty store", keys, (keys + (uint64_t)C->batch - 1) / (uint64_t)C->batch, C->batch);
	for (int r = 0; r < C->runs; r++) {
		for (int k = 0; k < NENG; k++) {
			int e = order(r, k);
			if (!C->engine_on[e])
				continue;
			uint64_t ns;
#ifndef MSB_LMDB_ONLY
			if (e == E_MS) {
				ms_db d;
				fresh_dir(dir, sizeof dir, C->dir, "mstore-put");
				ms_open_db(&d, dir, durable ? 0 : MS_NOSYNC);
				ns = ms_put_range(&d, 0, keys, (uint64_t)C->batch);
				ms_close_db(&d);
			} else
#endif
			{
				lm_db d;
				fresh_dir(dir, sizeof dir, C->dir, "lmdb-put");
				lm_open(&d, dir, durable ? 0 : MDB_NOSYNC | MDB_NOMETASYNC);
				ns = lm_put_range(&d, 0, keys, (uint64_t)C->batch);
				lm_close(&d);
			}
			double share = cpu_share();
			if (!durable)
				count_share(share);
			rm_rf(dir);
			double x = (double)keys * 1e9 / (double)ns;
			row_add(rid, e, x);
			if (!durable)
				row_add(R_PUT_CPU, e, (double)keys * 1e9 / (double)tm_cpu_ns);
			progress("%s run %d: %.0f ops/s (cpu %.0f%%)", eng_name[e], r, x, share * 100);
		}
	}
}

static void test_put(void)
{
	test_put_mode(0);
	if (C->durable_put)
		test_put_mode(1);
}

static double commit_faults[NENG];
static void test_commit(void)
{
	fprintf(stderr, "durable commit: %d commits of one 100-byte put, %d runs, on the loaded store\n",
	        C->commits, C->runs);
	for (int e = 0; e < NENG; e++)
		if (C->engine_on[e])
			ensure_loaded(e);
	double *lat = malloc(sizeof(double) * (size_t)C->commits);
	if (!lat)
		die("out of memory");
	for (int r = 0; r < C->runs; r++) {
		for (int k = 0; k < NENG; k++) {
			int e = order(r, k);
			if (!C->engine_on[e])
				continue;
			uint64_t first = C->n + (uint64_t)r * (uint64_t)C->commits; /* new keys */
			struct rusage ru0, ru1;
			getrusage(RUSAGE_THREAD, &ru0);
#ifndef MSB_LMDB_ONLY
			if (e == E_MS)
				ms_commit_run(&ms_loaded, first, C->commits, lat);
			else
#endif
				lm_commit_run(&lm_loaded, first, C->commits, lat);
			getrusage(RUSAGE_THREAD, &ru1);
			double faults = (double)((ru1.ru_minflt - ru0.ru_minflt) + (ru1.ru_majflt - ru0.ru_majflt)) /
			                (double)C->commits;
			if (r == 0)
				commit_faults[e] = faults;
			qsort(lat, (size_t)C->commits, sizeof(double), cmp_double);
			double med = pct_sorted(lat, (size_t)C->commits, 50), p99 = pct_sorted(lat, (size_t)C->commits, 99);
			row_add(R_COMMIT_MED, e, med);
			row_add(R_COMMIT_P99, e, p99);
			progress("%s run %d: median %.1f us, p99 %.1f us, max %.1f us, %.1f page faults per commit",
			         eng_name[e], r, med, p99, lat[C->commits - 1], faults);
		}
	}
	free(lat);
	note("durable commit: page faults per commit (first run): mstore %.1f, LMDB %.1f", commit_faults[E_MS],
	     commit_faults[E_LM]);
}

/* Churn: churn_rounds rounds; each overwrites a random half of the keys (a fresh random subset each
 * round, same for both engines) with values of random length 50..150, `batch` puts per transaction,
 * no sync. lens[] tracks every key's current value length. */
static void churn_lm(lm_db *d, unsigned char *lens)
{
	uint32_t *perm = malloc(sizeof(uint32_t) * C->n);
	unsigned char k[KEYLEN], v[160];
	rng r = {SEED_CHURN};
	if (!perm)
		die("out of memory");
	for (uint64_t i = 0; i < C->n; i++)
		perm[i] = (uint32_t)i;
	for (int round = 0; round < C->churn_rounds; round++) {
		uint64_t half = C->n / 2;
		for (uint64_t j = 0; j < half; j++) { /* partial Fisher-Yates: perm[0..half) is the subset */
			uint64_t x = j + rng_below(&r, C->n - j);
			uint32_t tmp = perm[j];
			perm[j] = perm[x];
			perm[x] = tmp;
		}
		for (uint64_t b = 0; b < half; b += (uint64_t)C->batch) {
			MDB_txn *t;
			LMC(mdb_txn_begin(d->env, NULL, 0, &t));
			for (uint64_t j = b; j < half && j < b + (uint64_t)C->batch; j++) {
				uint64_t i = perm[j];
				size_t len = 50 + (size_t)rng_below(&r, 101);
				make_key(i, k);
				make_val(i, (uint32_t)round + 1, len, v);
				lens[i] = (unsigned char)len;
				MDB_val key = {KEYLEN, k}, val = {len, v};
				LMC(mdb_put(t, d->dbi, &key, &val, 0));
			}
			LMC(mdb_txn_commit(t));
		}
		size_fig f;
		lm_size(d, &f);
		progress("LMDB churn round %d: file %.1f MB, used %.1f MB", round + 1, (double)f.file / 1e6,
		         (double)f.used / 1e6);
	}
	free(perm);
}

#ifndef MSB_LMDB_ONLY
static void churn_ms(ms_db *d, unsigned char *lens)
{ /* the same sequence as churn_lm */
	uint32_t *perm = malloc(sizeof(uint32_t) * C->n);
	unsigned char k[KEYLEN], v[160];
	rng r = {SEED_CHURN};
	if (!perm)
		die("out of memory");
	for (uint64_t i = 0; i < C->n; i++)
		perm[i] = (uint32_t)i;
	for (int round = 0; round < C->churn_rounds; round++) {
		uint64_t half = C->n / 2;
		for (uint64_t j = 0; j < half; j++) {
			uint64_t x = j + rng_below(&r, C->n - j);
			uint32_t tmp = perm[j];
			perm[j] = perm[x];
			perm[x] = tmp;
		}
		for (uint64_t b = 0; b < half; b += (uint64_t)C->batch) {
			ms_txn *t;
			MSC(ms_txn_begin(d->s, 0, &t));
			for (uint64_t j = b; j < half && j < b + (uint64_t)C->batch; j++) {
				uint64_t i = perm[j];
				size_t len = 50 + (size_t)rng_below(&r, 101);
				make_key(i, k);
				make_val(i, (uint32_t)round + 1, len, v);
				lens[i] = (unsigned char)len;
				MSC(ms_txn_put(t, k, KEYLEN, v, len));
			}
			MSC(ms_txn_commit(t));
		}
		size_fig f;
		ms_size(d, &f);
		progress("mstore churn round %d: file %.1f MB, used %.1f MB, free %.1f MB (largest %.1f MB), "
		         "pinned %.1f MB", round + 1, (double)f.file / 1e6, (double)f.used / 1e6,
		         (double)f.free_bytes / 1e6, (double)f.largest_free / 1e6, (double)f.pinned / 1e6);
	}
	free(perm);
}
#endif

static void print_size(const char *eng, const char *when, const size_fig *f, uint64_t live)
{
	progress("%s %s: st_size %" PRIu64 ", on disk %" PRIu64 ", used %" PRIu64 ", span %" PRIu64
	         ", live %" PRIu64 " (engine says %" PRIu64 ")",
	         eng, when, f->file, f->alloc, f->used, f->span, live, f->live);
}

static void test_size(void)
{
	fprintf(stderr, "file size: load %" PRIu64 " keys in one txn, then %d churn rounds (measured once)\n",
	        C->n, C->churn_rounds);
	unsigned char *lens = malloc(C->n);
	char dir[4200];
	const double n = (double)C->n;
	if (!lens)
		die("out of memory");
	for (int e = 0; e < NENG; e++) {
		if (!C->engine_on[e])
			continue;
		size_fig a, b;
		memset(lens, VALLEN, C->n);
		uint64_t live0 = C->n * (KEYLEN + VALLEN), live1 = 0;
#ifndef MSB_LMDB_ONLY
		if (e == E_MS) {
			ms_db d;
			fresh_dir(dir, sizeof dir, C->dir, "mstore-size");
			ms_open_db(&d, dir, MS_NOSYNC);
			ms_put_range(&d, 0, C->n, C->n);
			ms_close_db(&d);
			ms_open_db(&d, dir, MS_NOSYNC);
			ms_size(&d, &a);
			churn_ms(&d, lens);
			ms_close_db(&d);
			ms_open_db(&d, dir, MS_NOSYNC);
			ms_size(&d, &b);
			ms_close_db(&d);
		} else
#endif
		{
			lm_db d;
			char cpath[4300];
			fresh_dir(dir, sizeof dir, C->dir, "lmdb-size");
			lm_open(&d, dir, MDB_NOSYNC | MDB_NOMETASYNC);
			lm_put_range(&d, 0, C->n, C->n);
			lm_close(&d);
			lm_open(&d, dir, MDB_NOSYNC | MDB_NOMETASYNC);
			lm_size(&d, &a);
			churn_lm(&d, lens);
			lm_close(&d);
			lm_open(&d, dir, MDB_NOSYNC | MDB_NOMETASYNC);
			lm_size(&d, &b);
			snprintf(cpath, sizeof cpath, "%s/compact.mdb", dir);
			LMC(mdb_env_copy2(d.env, cpath, MDB_CP_COMPACT));
			row_add(R_SIZE_COMPACT, e, (double)file_size(cpath, NULL) / n);
			lm_close(&d);
		}
		for (uint64_t i = 0; i < C->n; i++)
			live1 += KEYLEN + lens[i];
		if (a.live && a.live != live0)
			note("%s reports live_bytes %" PRIu64 " after load, the benchmark counts %" PRIu64,
			     eng_name[e], a.live, live0);
		if (b.live && b.live != live1)
			note("%s reports live_bytes %" PRIu64 " after churn, the benchmark counts %" PRIu64,
			     eng_name[e], b.live, live1);
		print_size(eng_name[e], "after load", &a, live0);
		print_size(eng_name[e], "after churn", &b, live1);
		if (e == E_MS) {
			const size_fig *f[2] = {&a, &b};
			for (int w = 0; w < 2; w++)
				note("mstore %s, per object: objects %.1f B (of which size-class rounding %.1f B), "
				     "index %.1f B; free %.1f MB in %" PRIu64 " extents (largest %.1f MB), pinned %.1f MB",
				     w ? "after churn" : "after load", (double)f[w]->obj_bytes / n, (double)f[w]->waste / n,
				     (double)f[w]->index_bytes / n, (double)f[w]->free_bytes / 1e6, f[w]->extents,
				     (double)f[w]->largest_free / 1e6, (double)f[w]->pinned / 1e6);
		}
		row_add(R_SIZE_LOAD_FILE, e, (double)a.file / n);
		row_add(R_SIZE_LOAD_USED, e, (double)a.used / n);
		row_add(R_SIZE_LOAD_OVH, e, ((double)a.used - (double)live0) / n);
		if (e == E_MS) /* header plus index share, the brief's per-object metadata: used - live -
		                  size-class rounding (ms_stats.internal_waste) */
			row_add(R_SIZE_LOAD_META, e, ((double)a.used - (double)live0 - (double)a.waste) / n);
		row_add(R_SIZE_CHURN_FILE, e, (double)b.file / n);
		row_add(R_SIZE_CHURN_USED, e, (double)b.used / n);
		row_add(R_SIZE_CHURN_RATIO, e, (double)b.file / (double)live1);
		if (e == E_LM)
			note("LMDB file after churn: %" PRIu64 " bytes st_size, %" PRIu64
			     " bytes (last_pgno+1)*psize; live %" PRIu64 " bytes",
			     b.file, b.span, live1);
		else
			note("mstore file after churn: %" PRIu64 " bytes st_size (%" PRIu64
			     " allocated on disk), used %" PRIu64 "; live %" PRIu64 " bytes",
			     b.file, b.alloc, b.used, live1);
		rm_rf(dir);
	}
	free(lens);
}

/* Harness cost per lookup (PRNG, key generation, check against a generated value), no engine: it
 * is part of both engines' figures. */
static double harness_ns_per_op(void)
{
	unsigned char k[KEYLEN], v[VALLEN], scratch[VALLEN];
	rng r = {SEED_GET};
	uint64_t bad = 0, ops = C->ops;
	make_val(0, 0, VALLEN, v); /* one value, in cache: only its first and last 8 bytes change */
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < ops; j++) {
		uint64_t i = rng_below(&r, C->n);
		make_key(i, k);
		__asm__ volatile("" : : "r"(k) : "memory");
		uint64_t h = val_head(i, 0), tl = val_tail(i, 0);
		memcpy(v, &h, 8);
		memcpy(v + VALLEN - 8, &tl, 8);
		__asm__ volatile("" : : "r"(v) : "memory");
		if (!check_val(i, 0, VALLEN, v, VALLEN, C->verify_full, scratch))
			bad++;
	}
	uint64_t dt = now_ns() - t0;
	if (bad && C->verify_full == 0)
		note("harness calibration mismatch (%" PRIu64 ")", bad);
	return (double)dt / (double)ops;
}

/* The machine's own durable write: a 4 KiB pwrite and an fdatasync, 200 times, in the bench
 * directory. LMDB's durable commit pays two of these (data pages, then the meta page). */
static double sync_probe_us(void)
{
	char path[4200];
	enum { M = 200 };
	double lat[M];
	unsigned char buf[4096];
	snprintf(path, sizeof path, "%s/sync-probe", C->dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	memset(buf, 0x5a, sizeof buf);
	for (int j = 0; j < 256; j++) /* a 1 MiB file, allocated and synced before timing */
		if (pwrite(fd, buf, sizeof buf, (off_t)j * 4096) != (ssize_t)sizeof buf)
			die("pwrite: %s", strerror(errno));
	if (fsync(fd) != 0)
		die("fsync: %s", strerror(errno));
	for (int j = 0; j < M; j++) {
		buf[0] = (unsigned char)j;
		uint64_t t0 = now_ns();
		if (pwrite(fd, buf, sizeof buf, (off_t)(j % 256) * 4096) != (ssize_t)sizeof buf)
			die("pwrite: %s", strerror(errno));
		if (fdatasync(fd) != 0)
			die("fdatasync: %s", strerror(errno));
		lat[j] = (double)(now_ns() - t0) / 1000.0;
	}
	close(fd);
	unlink(path);
	qsort(lat, M, sizeof(double), cmp_double);
	return pct_sorted(lat, M, 50);
}

/* ---------------------------------------------------------------------------------------------- */
/* output */

static void fmt_val(char *buf, size_t cap, const row *w, int e)
{
	if (!w->have[e]) {
		snprintf(buf, cap, "%s", (e == E_MS && !C->engine_on[E_MS]) ? "pending" : "-");
		return;
	}
	double x = w->val[e];
	if (strcmp(w->unit, "ops/s") == 0 || strcmp(w->unit, "objects/s") == 0)
		snprintf(buf, cap, "%.3f M/s", x / 1e6);
	else if (strcmp(w->unit, "us") == 0)
		snprintf(buf, cap, "%.1f us", x);
	else if (strcmp(w->unit, "x") == 0)
		snprintf(buf, cap, "%.2f x", x);
	else
		snprintf(buf, cap, "%.1f B", x);
}

static int row_wanted(int r)
{
	switch (r) {
	case R_LOAD: return (C->only & (T_GET | T_SCAN | T_COMMIT)) != 0;
	case R_GET:
	case R_GET_CPU: return (C->only & T_GET) != 0;
	case R_PUT:
	case R_PUT_CPU: return (C->only & T_PUT) != 0;
	case R_PUT_DUR: return (C->only & T_PUT) && C->durable_put;
	case R_SCAN:
	case R_SCAN_CPU: return (C->only & T_SCAN) != 0;
	case R_COMMIT_MED:
	case R_COMMIT_P99: return (C->only & T_COMMIT) != 0;
	default: return (C->only & T_SIZE) != 0;
	}
}

static void print_table(void)
{
	const int md = C->markdown;
	if (md) {
		printf("| test | mstore | LMDB | mstore/LMDB | goal |\n");
		printf("|---|---:|---:|---:|---|\n");
	} else {
		printf("\n%-40s %14s %14s %8s  %s\n", "test", "mstore", "LMDB", "ratio", "goal");
		printf("%-40s %14s %14s %8s  %s\n", "----", "------", "----", "-----", "----");
	}
	for (int r = 0; r < NROWS; r++) {
		const row *w = &rows[r];
		if (!row_wanted(r))
			continue;
		if (r == R_SIZE_COMPACT && !w->have[E_LM])
			continue;
		char a[32], b[32], ratio[32];
		fmt_val(a, sizeof a, w, E_MS);
		fmt_val(b, sizeof b, w, E_LM);
		if (r == R_SIZE_COMPACT)
			snprintf(a, sizeof a, "n/a");
		if (w->have[E_MS] && w->have[E_LM] && w->val[E_LM] != 0)
			snprintf(ratio, sizeof ratio, "%.2fx", w->val[E_MS] / w->val[E_LM]);
		else
			snprintf(ratio, sizeof ratio, "-");
		if (md)
			printf("| %s | %s | %s | %s | %s |\n", w->label, a, b, ratio, w->goal);
		else
			printf("%-40s %14s %14s %8s  %s\n", w->label, a, b, ratio, w->goal);
	}
	if (!md)
		printf("\n");
}

static void print_json(double harness, double sync_us)
{
	printf("{\n  \"config\": {\"n\": %" PRIu64 ", \"ops\": %" PRIu64 ", \"runs\": %d, \"batch\": %d, "
	       "\"commits\": %d, \"churn_rounds\": %d, \"verify\": \"%s\", \"key_bytes\": %d, "
	       "\"value_bytes\": %d},\n",
	       C->n, C->ops, C->runs, C->batch, C->commits, C->churn_rounds, C->verify_full ? "full" : "light",
	       KEYLEN, VALLEN);
	printf("  \"harness_ns_per_lookup\": %.2f,\n", harness);
	printf("  \"machine_pwrite4k_fdatasync_median_us\": %.1f,\n", sync_us);
	printf("  \"cpu_bound_runs\": %d, \"busy_runs\": %d,\n", cpu_runs, busy_runs);
	printf("  \"verify_errors\": {\"mstore\": %" PRIu64 ", \"lmdb\": %" PRIu64 "},\n", verify_errors[E_MS],
	       verify_errors[E_LM]);
	printf("  \"results\": {");
	int first = 1;
	for (int r = 0; r < NROWS; r++) {
		const row *w = &rows[r];
		if (!w->have[E_MS] && !w->have[E_LM])
			continue;
		printf("%s\n    \"%s\": {\"unit\": \"%s\", \"goal\": \"%s\"", first ? "" : ",", w->id, w->unit, w->goal);
		first = 0;
		for (int e = 0; e < NENG; e++) {
			const char *jn = e == E_MS ? "mstore" : "lmdb";
			if (!w->have[e]) {
				printf(", \"%s\": null", jn);
				continue;
			}
			printf(", \"%s\": {\"median\": %.6g, \"runs\": [", jn, w->val[e]);
			for (int i = 0; i < w->nruns[e]; i++)
				printf("%s%.6g", i ? ", " : "", w->runs[e][i]);
			printf("]}");
		}
		if (w->have[E_MS] && w->have[E_LM] && w->val[E_LM] != 0)
			printf(", \"ratio\": %.4f", w->val[E_MS] / w->val[E_LM]);
		else
			printf(", \"ratio\": null");
		printf("}");
	}
	printf("\n  }\n}\n");
}

/* ---------------------------------------------------------------------------------------------- */

/* The temporary directory is removed on every exit, die() included. */
static char tmp_dir_to_remove[4096];
static void remove_tmp_dir(void)
{
	if (tmp_dir_to_remove[0])
		rm_rf(tmp_dir_to_remove);
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ms_bench_kv [options]\n"
	        "  --n=N            keys (default 1000000)\n"
	        "  --ops=M          random lookups per run (default 2000000)\n"
	        "  --runs=R         runs; medians are reported (default 5)\n"
	        "  --dir=PATH       where the store files go (default: a temporary directory under /tmp,\n"
	        "                   removed at the end; a given directory is kept)\n"
	        "  --only=LIST      comma list of get,put,scan,commit,size (default all)\n"
	        "  --engines=LIST   mstore,lmdb (default both)\n"
	        "  --commits=C      durable commits per run (default 200)\n"
	        "  --batch=B        puts per write transaction in batched put and churn (default 1000)\n"
	        "  --churn=K        churn rounds in the size test (default 3)\n"
	        "  --warmup=W       untimed lookup runs before the timed ones (default 1)\n"
	        "  --verify=light|full  check of each returned value: length + first/last 8 bytes, or memcmp\n"
	        "  --durable-keys=K keys in the durable variant of batched put (default 100000)\n"
	        "  --no-durable-put skip the durable variant of batched put\n"
	        "  --mapsize=BYTES  LMDB map size (default 64 GiB)\n"
	        "  --json           JSON instead of the table\n"
	        "  --markdown       the table as Markdown\n");
}

static unsigned parse_only(const char *s)
{
	unsigned m = 0;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", s);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "get")) m |= T_GET;
		else if (!strcmp(tok, "put")) m |= T_PUT;
		else if (!strcmp(tok, "scan")) m |= T_SCAN;
		else if (!strcmp(tok, "commit")) m |= T_COMMIT;
		else if (!strcmp(tok, "size")) m |= T_SIZE;
		else if (!strcmp(tok, "all")) m |= T_GET | T_PUT | T_SCAN | T_COMMIT | T_SIZE;
		else die("--only: unknown test '%s' (get,put,scan,commit,size)", tok);
	}
	return m;
}

static uint64_t parse_u64(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0)
		die("%s: want a positive integer, got '%s'", opt, s);
	return v;
}

int main(int argc, char **argv)
{
	static cfg c;
	c.n = 1000000;
	c.ops = 2000000;
	c.runs = 5;
	c.commits = 200;
	c.batch = 1000;
	c.churn_rounds = 3;
	c.warmup = 1;
	c.durable_put = 1;
	c.durable_keys = 100000;
	c.only = T_GET | T_PUT | T_SCAN | T_COMMIT | T_SIZE;
	c.mapsize = (size_t)64 << 30;
	c.engine_on[E_LM] = 1;
#ifndef MSB_LMDB_ONLY
	c.engine_on[E_MS] = 1;
#endif
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = strchr(a, '=');
		char name[64];
		if (strncmp(a, "--", 2) != 0)
			die("unexpected argument '%s' (see --help)", a);
		if (v) {
			snprintf(name, sizeof name, "%.*s", (int)(v - a), a);
			v++;
		} else {
			snprintf(name, sizeof name, "%s", a);
			int needs = strcmp(a, "--json") && strcmp(a, "--markdown") && strcmp(a, "--help") &&
			            strcmp(a, "--no-durable-put");
			if (needs) {
				if (i + 1 >= argc)
					die("%s needs a value", a);
				v = argv[++i];
			}
		}
		if (!strcmp(name, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(name, "--n")) {
			c.n = parse_u64(name, v);
			if (c.n > UINT32_MAX)
				die("--n: at most %u", UINT32_MAX);
		} else if (!strcmp(name, "--ops")) c.ops = parse_u64(name, v);
		else if (!strcmp(name, "--runs")) {
			c.runs = (int)parse_u64(name, v);
			if (c.runs > MAXRUNS)
				die("--runs: at most %d", MAXRUNS);
		} else if (!strcmp(name, "--commits")) c.commits = (int)parse_u64(name, v);
		else if (!strcmp(name, "--batch")) c.batch = (int)parse_u64(name, v);
		else if (!strcmp(name, "--durable-keys")) c.durable_keys = parse_u64(name, v);
		else if (!strcmp(name, "--churn")) c.churn_rounds = (int)parse_u64(name, v);
		else if (!strcmp(name, "--warmup")) c.warmup = atoi(v);
		else if (!strcmp(name, "--mapsize")) c.mapsize = (size_t)parse_u64(name, v);
		else if (!strcmp(name, "--dir")) {
			snprintf(c.dir, sizeof c.dir, "%s", v);
			c.dir_given = 1;
		} else if (!strcmp(name, "--only")) c.only = parse_only(v);
		else if (!strcmp(name, "--engines")) {
			c.engine_on[E_MS] = strstr(v, "mstore") != NULL;
			c.engine_on[E_LM] = strstr(v, "lmdb") != NULL;
#ifdef MSB_LMDB_ONLY
			if (c.engine_on[E_MS])
				die("this build has LMDB only (MSB_LMDB_ONLY)");
#endif
		} else if (!strcmp(name, "--verify")) {
			if (!strcmp(v, "full")) c.verify_full = 1;
			else if (!strcmp(v, "light")) c.verify_full = 0;
			else die("--verify: light or full");
		} else if (!strcmp(name, "--no-durable-put")) c.durable_put = 0;
		else if (!strcmp(name, "--json")) c.json = 1;
		else if (!strcmp(name, "--markdown")) c.markdown = 1;
		else {
			usage(stderr);
			die("unknown option %s", name);
		}
	}
	if (c.warmup < 0)
		c.warmup = 0;
	if (!c.dir_given) {
		snprintf(c.dir, sizeof c.dir, "/tmp/ms_bench_kv.XXXXXX");
		if (!mkdtemp(c.dir))
			die("mkdtemp: %s", strerror(errno));
		snprintf(tmp_dir_to_remove, sizeof tmp_dir_to_remove, "%s", c.dir);
		atexit(remove_tmp_dir);
	} else if (mkdir(c.dir, 0700) != 0 && errno != EEXIST) {
		die("mkdir %s: %s", c.dir, strerror(errno));
	}
	C = &c;
	setvbuf(stdout, NULL, _IOLBF, 0);
	fprintf(stderr, "ms_bench_kv: n=%" PRIu64 " ops=%" PRIu64 " runs=%d dir=%s engines=%s%s verify=%s\n", c.n,
	        c.ops, c.runs, c.dir, c.engine_on[E_MS] ? "mstore " : "", c.engine_on[E_LM] ? "lmdb" : "",
	        c.verify_full ? "full" : "light");

	double harness = harness_ns_per_op();
	double load0[3] = {0, 0, 0};
	if (getloadavg(load0, 3) < 0)
		load0[0] = -1;
	double sync_us = (c.only & (T_COMMIT | T_PUT)) ? sync_probe_us() : 0;
	if (c.only & T_GET)
		test_get();
	if (c.only & T_SCAN)
		test_scan();
	if (c.only & T_COMMIT)
		test_commit();
	close_loaded();
	if (c.only & T_PUT)
		test_put();
	if (c.only & T_SIZE)
		test_size();

	if (busy_runs)
		note("%d of %d timed CPU-bound runs (get, scan, nosync put) got less than 90%% of a CPU: the "
		     "machine was busy (load average %.2f at the start)", busy_runs, cpu_runs, load0[0]);
	if (c.json)
		print_json(harness, sync_us);
	else {
		const char *b = c.markdown ? "- " : "";
		print_table();
		if (c.markdown)
			printf("\n");
		printf("%sharness cost per lookup (PRNG, key, check; included in both engines' figures): %.1f ns\n",
		       b, harness);
		if (sync_us > 0)
			printf("%smachine: one 4 KiB pwrite + fdatasync, median of 200: %.1f us\n", b, sync_us);
		for (char *line = notes, *nl; *line; line = nl + 1) {
			nl = strchr(line, '\n');
			if (!nl)
				break;
			printf("%s%.*s\n", b, (int)(nl - line), line);
		}
	}
	int bad = verify_errors[E_MS] || verify_errors[E_LM];
	if (bad)
		fprintf(stderr, "ms_bench_kv: VERIFICATION FAILED (mstore %" PRIu64 ", LMDB %" PRIu64 ")\n",
		        verify_errors[E_MS], verify_errors[E_LM]);
	return bad ? 2 : 0; /* remove_tmp_dir runs at exit */
}
