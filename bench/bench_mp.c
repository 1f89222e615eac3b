/* bench_mp.c - multi-process read throughput: 1 and 2 reader processes while a third process writes,
 * mstore beside LMDB on the same workload in the same run.
 *
 * Build: with the rest of the project (bench/CMakeLists.txt, target ms_bench_mp). See docs/benchmarks.md.
 *
 * Data: as in bench_kv.c. Key i (i = 0..N-1) is 16 bytes: a 64-bit hash of i, then i, both big-endian.
 * Value i of generation gen is 100 bytes: bytes 0..7 hold i ^ (gen << 48), the last 8 bytes a hash of
 * i and gen, the middle a pseudo-random filler. The load writes generation 0.
 *
 * A run (one engine, R readers): the parent, which holds no handle, forks R reader processes and one
 * writer process; each opens the store itself after the fork, reports ready, and all start together.
 * - Reader: loops for --seconds: one read transaction per batch of 1000 uniformly random lookups. Every
 *   value is checked: length 100, bytes 0..7 carry i (the generation is taken from the top 16 bits),
 *   and the last 8 bytes match that generation. It reports its lookups and its elapsed time.
 * - Writer: loops until the parent sends SIGUSR1 (after the readers have reported): one write
 *   transaction of 100 random overwrites (100-byte values of a new generation) per commit, committed
 *   without a flush (mstore opened with MS_NOSYNC, LMDB with MDB_NOSYNC). It reports its commits.
 * The figures: total reader lookups/s (the sum of each reader's lookups / its elapsed time) and writer
 * commits/s; the median over --runs of each, and mstore / LMDB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"

#include "mstore.h"

/* ---------------------------------------------------------------------------------------------- */
/* small utilities (as in bench_kv.c) */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ms_bench_mp[%ld]: ", (long)getpid());
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}


#define SEED_READ 0x1234567887654321ull
#define SEED_WRITE 0x0badc0ffee0ddf00ull
#define READ_BATCH 1000
#define WRITE_BATCH 100
#define LOAD_BATCH 1000
#define MAXRUNS 64


static void make_val(uint64_t i, uint32_t gen, unsigned char *v)
{
	uint64_t x = mix64(i + ((uint64_t)gen << 32));
	for (size_t o = 0; o + 8 <= VALLEN; o += 8) {
		memcpy(v + o, &x, 8);
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	}
	for (size_t o = VALLEN & ~(size_t)7; o < VALLEN; o++) {
		v[o] = (unsigned char)x;
		x >>= 8;
	}
	uint64_t h = val_head(i, gen), t = val_tail(i, gen);
	memcpy(v, &h, 8);
	memcpy(v + VALLEN - 8, &t, 8);
}

/* A value of key i in any generation (the writer changes them under the readers). */
static inline int check_val(uint64_t i, const void *data, size_t len)
{
	if (len != VALLEN)
		return 0;
	const unsigned char *d = data;
	uint64_t h = load64(d);
	if ((h & 0xffffffffffffull) != i)
		return 0;
	return load64(d + VALLEN - 8) == val_tail(i, (uint32_t)(h >> 48));
}



/* ---------------------------------------------------------------------------------------------- */
/* configuration */

enum { E_MS = 0, E_LM = 1, NENG = 2 };
static const char *const eng_name[NENG] = {"mstore", "LMDB"};

typedef struct cfg {
	uint64_t n;
	unsigned seconds;
	int runs;
	int json;
	int dir_given;
	size_t mapsize;
	char dir[4096];
} cfg;
static cfg C;

static char ms_path[4400], lm_path[4400];

#define LMC(call)                                                                              \
	do {                                                                                   \
		int lmc_rc_ = (call);                                                          \
		if (lmc_rc_ != 0)                                                              \
			die("%s:%d: %s: %s", __FILE__, __LINE__, #call, mdb_strerror(lmc_rc_)); \
	} while (0)

#define MSC(call)                                                                                     \
	do {                                                                                          \
		int msc_rc_ = (call);                                                                 \
		if (msc_rc_ != 0)                                                                     \
			die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call, ms_strerror(msc_rc_), \
			    ms_last_error());                                                         \
	} while (0)

/* One engine's handle inside one process. */
typedef struct db {
	int e;
	ms_store *ms;
	MDB_env *env;
	MDB_dbi dbi;
} db;

static void db_open(db *d, int e, int writer, int create)
{
	memset(d, 0, sizeof *d);
	d->e = e;
	if (e == E_MS) {
		ms_options o;
		memset(&o, 0, sizeof o);
		o.flags = (create ? MS_CREATE : 0u) | (writer ? MS_NOSYNC : 0u);
		MSC(ms_open(ms_path, &o, &d->ms));
	} else {
		LMC(mdb_env_create(&d->env));
		LMC(mdb_env_set_mapsize(d->env, C.mapsize));
		LMC(mdb_env_open(d->env, lm_path, MDB_NOSUBDIR | (writer ? MDB_NOSYNC : 0u), 0600));
		MDB_txn *t;
		LMC(mdb_txn_begin(d->env, NULL, 0, &t));
		LMC(mdb_dbi_open(t, NULL, 0, &d->dbi));
		LMC(mdb_txn_commit(t));
	}
}

static void db_close(db *d)
{
	if (d->e == E_MS)
		MSC(ms_close(d->ms));
	else
		mdb_env_close(d->env);
}

/* One write transaction of cnt puts in generation gen: keys lo.. lo+cnt-1, or cnt keys drawn from r. */
static void db_write_txn(db *d, rng *r, uint64_t lo, uint64_t cnt, uint32_t gen)
{
	unsigned char k[KEYLEN], v[VALLEN];
	if (d->e == E_MS) {
		ms_txn *t;
		MSC(ms_txn_begin(d->ms, 0, &t));
		for (uint64_t j = 0; j < cnt; j++) {
			uint64_t i = r ? rng_below(r, C.n) : lo + j;
			make_key(i, k);
			make_val(i, gen, v);
			MSC(ms_txn_put(t, k, KEYLEN, v, VALLEN));
		}
		MSC(ms_txn_commit(t));
	} else {
		MDB_txn *t;
		LMC(mdb_txn_begin(d->env, NULL, 0, &t));
		for (uint64_t j = 0; j < cnt; j++) {
			uint64_t i = r ? rng_below(r, C.n) : lo + j;
			make_key(i, k);
			make_val(i, gen, v);
			MDB_val key = {KEYLEN, k}, val = {VALLEN, v};
			LMC(mdb_put(t, d->dbi, &key, &val, 0));
		}
		LMC(mdb_txn_commit(t));
	}
}

/* One read transaction of READ_BATCH random lookups; returns the number of bad values. */
static uint64_t db_read_batch(db *d, rng *r)
{
	unsigned char k[KEYLEN];
	uint64_t bad = 0;
	if (d->e == E_MS) {
		ms_txn *t;
		MSC(ms_txn_begin(d->ms, MS_READONLY, &t));
		for (int j = 0; j < READ_BATCH; j++) {
			uint64_t i = rng_below(r, C.n);
			make_key(i, k);
			ms_val val;
			int rc = ms_txn_get(t, k, KEYLEN, &val);
			if (rc != 0 || !check_val(i, val.data, val.len))
				bad++;
		}
		ms_txn_abort(t);
	} else {
		MDB_txn *t;
		LMC(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &t));
		for (int j = 0; j < READ_BATCH; j++) {
			uint64_t i = rng_below(r, C.n);
			make_key(i, k);
			MDB_val key = {KEYLEN, k}, val;
			int rc = mdb_get(t, d->dbi, &key, &val);
			if (rc != 0 || !check_val(i, val.mv_data, val.mv_size))
				bad++;
		}
		mdb_txn_abort(t);
	}
	return bad;
}

static void load(int e)
{
	db d;
	db_open(&d, e, 1, 1);
	for (uint64_t b = 0; b < C.n; b += LOAD_BATCH)
		db_write_txn(&d, NULL, b, b + LOAD_BATCH < C.n ? LOAD_BATCH : C.n - b, 0);
	if (e == E_MS)
		MSC(ms_sync(d.ms));
	else
		LMC(mdb_env_sync(d.env, 1));
	db_close(&d);
}

/* ---------------------------------------------------------------------------------------------- */
/* processes */

enum { M_READY = 1, M_READER = 2, M_WRITER = 3 };
typedef struct msg { /* < PIPE_BUF: one write() is atomic on the shared pipe */
	int kind;
	int idx;
	uint64_t count; /* lookups or commits */
	uint64_t ns;    /* elapsed from the start signal */
	uint64_t bad;   /* values that failed the check */
} msg;

static volatile sig_atomic_t stop_flag;
static void on_usr1(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void send_msg(int fd, const msg *m)
{
	if (write(fd, m, sizeof *m) != (ssize_t)sizeof *m)
		die("write to the result pipe: %s", strerror(errno));
}

/* Child body: never returns. */
static void child(int e, int role, int idx, int go_fd, int res_fd, uint64_t seed)
{
	db d;
	if (role == M_WRITER) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_usr1;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGUSR1, &sa, NULL) != 0)
			die("sigaction: %s", strerror(errno));
	}
	db_open(&d, e, role == M_WRITER, 0);
	msg m = {M_READY, idx, 0, 0, 0};
	send_msg(res_fd, &m);
	char c;
	while (read(go_fd, &c, 1) < 0 && errno == EINTR)
		;
	close(go_fd);
	rng r = {seed};
	uint64_t t0 = now_ns(), count = 0, bad = 0, t = t0;
	if (role == M_READER) {
		uint64_t end = t0 + (uint64_t)C.seconds * 1000000000u;
		do {
			bad += db_read_batch(&d, &r);
			count += READ_BATCH;
			t = now_ns();
		} while (t < end);
	} else {
		uint32_t gen = 1;
		while (!stop_flag) {
			db_write_txn(&d, &r, 0, WRITE_BATCH, gen);
			gen = gen == 0xffff ? 1 : gen + 1;
			count++;
		}
		t = now_ns();
	}
	m = (msg){role, idx, count, t - t0, bad};
	send_msg(res_fd, &m);
	db_close(&d);
	close(res_fd);
	_exit(0);
}

/* Read one message; dies after timeout_ms without one or at EOF (all children gone). */
static void recv_msg(int fd, msg *m, int timeout_ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	int rc;
	while ((rc = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
		;
	if (rc == 0)
		die("no message from a child after %d ms", timeout_ms);
	ssize_t got;
	while ((got = read(fd, m, sizeof *m)) < 0 && errno == EINTR)
		;
	if (got != (ssize_t)sizeof *m)
		die("result pipe: %s", got < 0 ? strerror(errno) : "a child exited early");
}

typedef struct result {
	double reads_per_s;  /* sum over readers */
	double commits_per_s;
	uint64_t bad;
} result;

static result run_once(int e, int nreaders, int run)
{
	int go[2], res[2];
	pid_t pids[3];
	if (pipe(go) != 0 || pipe(res) != 0)
		die("pipe: %s", strerror(errno));
	fflush(NULL);
	int nproc = nreaders + 1;
	for (int p = 0; p < nproc; p++) {
		int role = p < nreaders ? M_READER : M_WRITER;
		pid_t pid = fork();
		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			close(go[1]);
			close(res[0]);
			uint64_t seed = (role == M_READER ? SEED_READ : SEED_WRITE) ^
			                mix64((uint64_t)run * 16u + (uint64_t)p + 1u);
			child(e, role, p, go[0], res[1], seed);
		}
		pids[p] = pid;
	}
	close(go[0]);
	close(res[1]);
	msg m;
	for (int p = 0; p < nproc; p++) {
		recv_msg(res[0], &m, 60000);
		if (m.kind != M_READY)
			die("unexpected message %d before the start", m.kind);
	}
	close(go[1]); /* start */
	result r = {0, 0, 0};
	int timeout = (int)C.seconds * 1000 + 60000;
	for (int got = 0; got < nreaders; got++) {
		recv_msg(res[0], &m, timeout);
		if (m.kind != M_READER)
			die("unexpected message %d from the readers", m.kind);
		r.reads_per_s += (double)m.count * 1e9 / (double)m.ns;
		r.bad += m.bad;
	}
	if (kill(pids[nreaders], SIGUSR1) != 0)
		die("kill: %s", strerror(errno));
	recv_msg(res[0], &m, 60000);
	if (m.kind != M_WRITER)
		die("unexpected message %d from the writer", m.kind);
	r.commits_per_s = (double)m.count * 1e9 / (double)m.ns;
	close(res[0]);
	for (int p = 0; p < nproc; p++) {
		int st;
		if (waitpid(pids[p], &st, 0) < 0)
			die("waitpid: %s", strerror(errno));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			die("child %d (pid %ld) failed (status 0x%x)", p, (long)pids[p], (unsigned)st);
	}
	return r;
}

/* ---------------------------------------------------------------------------------------------- */
/* main */

static uint64_t parse_u64(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0)
		die("%s: want a positive integer, got '%s'", opt, s);
	return v;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ms_bench_mp [options]\n"
	        "  read throughput of 1 and 2 reader processes while a third process writes,\n"
	        "  mstore beside LMDB (see docs/benchmarks.md)\n"
	        "  --n=N            keys (default 200000; 16-byte keys, 100-byte values)\n"
	        "  --seconds=S      reader duration per run (default 3)\n"
	        "  --runs=R         runs per configuration; medians are reported (default 3)\n"
	        "  --dir=DIR        where the stores go (default: a temp dir, removed at the end)\n"
	        "  --mapsize=BYTES  LMDB map size (default 4 GiB)\n"
	        "  --json           JSON instead of the table\n");
}

int main(int argc, char **argv)
{
	C.n = 200000;
	C.seconds = 3;
	C.runs = 3;
	C.mapsize = (size_t)4 << 30;
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
			if (strcmp(a, "--json") && strcmp(a, "--help")) {
				if (i + 1 >= argc)
					die("%s needs a value", a);
				v = argv[++i];
			}
		}
		if (!strcmp(name, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(name, "--n")) {
			C.n = parse_u64(name, v);
			if (C.n >= ((uint64_t)1 << 48))
				die("--n: below 2^48");
		} else if (!strcmp(name, "--seconds")) {
			uint64_t s = parse_u64(name, v);
			if (s > 3600)
				die("--seconds: at most 3600");
			C.seconds = (unsigned)s;
		} else if (!strcmp(name, "--runs")) {
			uint64_t r = parse_u64(name, v);
			if (r > MAXRUNS)
				die("--runs: at most %d", MAXRUNS);
			C.runs = (int)r;
		} else if (!strcmp(name, "--mapsize")) C.mapsize = (size_t)parse_u64(name, v);
		else if (!strcmp(name, "--dir")) {
			snprintf(C.dir, sizeof C.dir, "%s", v);
			C.dir_given = 1;
		} else if (!strcmp(name, "--json")) C.json = 1;
		else {
			usage(stderr);
			die("unknown option %s", name);
		}
	}
	if (!C.dir_given) {
		snprintf(C.dir, sizeof C.dir, "/tmp/ms_bench_mp.XXXXXX");
		if (!mkdtemp(C.dir))
			die("mkdtemp: %s", strerror(errno));
	} else if (mkdir(C.dir, 0700) != 0 && errno != EEXIST)
		die("mkdir %s: %s", C.dir, strerror(errno));

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char sub[4200];
	fresh_dir(sub, sizeof sub, C.dir, "mstore");
	snprintf(ms_path, sizeof ms_path, "%s/store.ms", sub);
	fresh_dir(sub, sizeof sub, C.dir, "lmdb");
	snprintf(lm_path, sizeof lm_path, "%s/data.mdb", sub);

	for (int e = 0; e < NENG; e++) {
		fprintf(stderr, "loading %" PRIu64 " keys into %s\n", C.n, eng_name[e]);
		load(e);
	}

	/* [engine][readers-1][run] */
	double rd[NENG][2][MAXRUNS], wr[NENG][2][MAXRUNS];
	uint64_t bad = 0;
	for (int run = 0; run < C.runs; run++)
		for (int nr = 1; nr <= 2; nr++)
			for (int k = 0; k < NENG; k++) {
				int e = ((run + nr + k) & 1) ? E_LM : E_MS; /* alternate which engine goes first */
				result r = run_once(e, nr, run);
				rd[e][nr - 1][run] = r.reads_per_s;
				wr[e][nr - 1][run] = r.commits_per_s;
				bad += r.bad;
				fprintf(stderr, "run %d, %d reader(s), %-6s: %.0f lookups/s, %.0f commits/s%s\n",
				        run + 1, nr, eng_name[e], r.reads_per_s, r.commits_per_s,
				        r.bad ? " (BAD VALUES)" : "");
			}

	double mr[NENG][2], mw[NENG][2];
	for (int e = 0; e < NENG; e++)
		for (int nr = 0; nr < 2; nr++) {
			mr[e][nr] = median(rd[e][nr], C.runs);
			mw[e][nr] = median(wr[e][nr], C.runs);
		}

	if (C.json) {
		printf("{\n  \"n\": %" PRIu64 ", \"seconds\": %u, \"runs\": %d, \"nproc\": %ld,\n", C.n,
		       C.seconds, C.runs, ncpu);
		printf("  \"read_batch\": %d, \"write_batch\": %d, \"writer_sync\": \"MS_NOSYNC / MDB_NOSYNC\",\n",
		       READ_BATCH, WRITE_BATCH);
		printf("  \"bad_values\": %" PRIu64 ",\n  \"results\": [\n", bad);
		for (int nr = 0; nr < 2; nr++)
			printf("    {\"readers\": %d, \"mstore_reader_lookups_per_s\": %.0f, "
			       "\"lmdb_reader_lookups_per_s\": %.0f, \"reads_ratio\": %.3f, "
			       "\"mstore_writer_commits_per_s\": %.0f, \"lmdb_writer_commits_per_s\": %.0f, "
			       "\"commits_ratio\": %.3f}%s\n",
			       nr + 1, mr[E_MS][nr], mr[E_LM][nr], mr[E_LM][nr] ? mr[E_MS][nr] / mr[E_LM][nr] : 0,
			       mw[E_MS][nr], mw[E_LM][nr], mw[E_LM][nr] ? mw[E_MS][nr] / mw[E_LM][nr] : 0,
			       nr == 0 ? "," : "");
		printf("  ]\n}\n");
	} else {
		printf("ms_bench_mp: %" PRIu64 " keys (16 B keys, 100 B values), %u s per run, median of %d runs, "
		       "nproc %ld\n",
		       C.n, C.seconds, C.runs, ncpu);
		printf("readers: one read txn per %d random lookups, each value checked; writer: one txn of %d "
		       "random overwrites per commit, no flush (MS_NOSYNC / MDB_NOSYNC)\n\n",
		       READ_BATCH, WRITE_BATCH);
		printf("| readers | metric | mstore | LMDB | mstore/LMDB |\n|---|---|---:|---:|---:|\n");
		for (int nr = 0; nr < 2; nr++) {
			printf("| %d | reader lookups/s (sum) | %.0f | %.0f | %.2f |\n", nr + 1, mr[E_MS][nr],
			       mr[E_LM][nr], mr[E_LM][nr] ? mr[E_MS][nr] / mr[E_LM][nr] : 0);
			printf("| %d | writer commits/s | %.0f | %.0f | %.2f |\n", nr + 1, mw[E_MS][nr],
			       mw[E_LM][nr], mw[E_LM][nr] ? mw[E_MS][nr] / mw[E_LM][nr] : 0);
		}
		if (ncpu < 3)
			printf("\nnote: %ld CPU(s) for %s processes: the processes share the CPUs, the figures "
			       "are CPU-bound and not a measure of scaling.\n",
			       ncpu, "2 and 3");
		if (bad)
			printf("\n%" PRIu64 " lookups returned a wrong value: the figures are worthless.\n", bad);
	}

	if (!C.dir_given)
		rm_rf(C.dir);
	return bad ? 2 : 0;
}
