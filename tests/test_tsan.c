/* tests/test_tsan.c - threads sharing one ms_store handle: readers, a writer, and threads that open
 * and close read transactions as fast as they can, every value checked against what was committed.
 *
 * Why this file exists: it is the test the ThreadSanitizer build runs (scripts/test.sh builds with
 * MSTORE_SANITIZE=thread and runs this file only), so it is written to make the library's threads
 * meet: the handle's locks, the reader table, the commit that publishes a new state, the growth of
 * the file (remapping) under readers that hold zero-copy pointers. Its own bookkeeping is atomic,
 * so any race TSan reports is the library's. It passes in the normal build too, where it checks the
 * same things without the race detector. Criterion forks each test into its own process; that is
 * fine for TSan (each test's process is instrumented on its own).
 *
 * MS_TSAN_SECONDS sets how long each test runs (default 2); MS_TEST_SEED the seed (printed on failure).
 */
#include "testutil.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#if defined(__SANITIZE_THREAD__)
/* Criterion cannot start under ThreadSanitizer as it is (Snaipe/Criterion issue #274: "Could not
 * initialize inheritable arena: Resource temporarily unavailable"). BoxFort, inside libcriterion,
 * places each of its shared arenas at a random 16 MiB-aligned address in [0x200000000000,
 * 0x600000000000): it probes with mincore() for a free spot (giving up after a few tries) and maps
 * it with mmap64(MAP_FIXED). Under TSan nearly all of that window is TSan's reserved shadow and meta
 * memory, the rest is refused by TSan's mmap interceptor (MAP_FIXED outside application memory is
 * EINVAL), so only the sliver that is application memory (0x5500'0000'0000 to 0x5680'0000'0000)
 * works, and a start-up needing several arenas almost never gets them all.
 *
 * So, in the TSan build only, these two wrappers give BoxFort the arenas it asks for: mincore()
 * reports that window outside the application range as unmapped, and the refused mmap64(MAP_FIXED)
 * there is answered by a mapping in application memory at 0x5670'0000'0000 and up (inside BoxFort's
 * window, above where PIE binaries load; BoxFort uses the address it gets, and maps it at the same
 * address in the child it spawns). Every other call goes straight to TSan's interceptor (libtsan
 * exports it as __interceptor_mmap64) or the kernel. mstore calls neither function. They are not
 * instrumented themselves: TSan maps memory while it initialises. */
#include <sys/mman.h>
#include <sys/syscall.h>

#define BXF_LO 0x200000000000u   /* BoxFort's window */
#define BXF_HI 0x7f0000000000u
#define APP_LO 0x550000000000u   /* TSan's middle application range (PIE binaries) */
#define APP_HI 0x568000000000u
#define ARENAS 0x567000000000u   /* where the wrapper puts BoxFort's arenas */

void *__interceptor_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int mincore(void *addr, size_t len, unsigned char *vec);

__attribute__((no_sanitize_thread)) int mincore(void *addr, size_t len, unsigned char *vec)
{
	uintptr_t a = (uintptr_t)addr;
	if (a >= BXF_LO && a < BXF_HI && (a < APP_LO || a >= APP_HI)) {
		errno = ENOMEM;
		return -1;
	}
	return (int)syscall(SYS_mincore, addr, len, vec);
}

__attribute__((no_sanitize_thread)) void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static uintptr_t cursor = ARENAS;
	void *p = __interceptor_mmap64(addr, len, prot, flags, fd, off);
	uintptr_t a = (uintptr_t)addr;
	if (p != MAP_FAILED || errno != EINVAL || !(flags & MAP_FIXED) || a < BXF_LO || a >= BXF_HI)
		return p;
	uintptr_t step = (len + (16u << 20) - 1) / (16u << 20) * (16u << 20);
	while (__atomic_load_n(&cursor, __ATOMIC_RELAXED) + step <= APP_HI) {
		uintptr_t at = __atomic_fetch_add(&cursor, step, __ATOMIC_RELAXED);
		p = __interceptor_mmap64((void *)at, len, prot, (flags & ~MAP_FIXED) | MAP_FIXED_NOREPLACE, fd, off);
		if (p != MAP_FAILED)
			return p;
	}
	errno = ENOMEM;
	return MAP_FAILED;
}
#endif

TestSuite(tsan, .init = tu_setup, .fini = tu_teardown, .timeout = 300);

#define TCHK(cond, fmt, ...) \
	cr_assert(cond, "[MS_TEST_SEED=%" PRIu64 "] " fmt, tu_seed(), ##__VA_ARGS__)

#define NKEYS 64u
#define MAX_COMMITS (1u << 20)
#define HDR 16u
#define VER_KEY "ver"

/* A value of key k written by commit v: a header (key, length, commit) then tu_fill bytes. */
struct hdr {
	uint32_t key, len;
	uint64_t ver;
};

static uint64_t fill_seed(const struct hdr *h)
{
	return tu_seed3(h->key, h->ver, h->len);
}

static size_t key_name(char *buf, unsigned k)
{
	return (size_t)snprintf(buf, 8, "k%02u", k);
}

/* What the commits did, for the readers: touched[v] has bit k when commit v put or deleted key k,
 * deleted[v] when it deleted it. Written by the writer before its commit; a reader that sees commit
 * v through the store must see these too (the library's publication orders them). */
static _Atomic uint64_t touched[MAX_COMMITS + 1], deleted[MAX_COMMITS + 1];

struct shared {
	ms_store *s;
	double end;
	uint64_t seed;
	_Atomic bool stop;
	_Atomic uint64_t commits, reads, checks, begins, monitors, failures;
	char failure[512];
	pthread_mutex_t failure_lock;
};

static void fail_once(struct shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_once(struct shared *sh, const char *fmt, ...)
{
	pthread_mutex_lock(&sh->failure_lock);
	if (atomic_fetch_add(&sh->failures, 1) == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(sh->failure, sizeof sh->failure, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&sh->failure_lock);
	atomic_store(&sh->stop, true);
}

static bool running(struct shared *sh)
{
	return !atomic_load(&sh->stop) && tu_now() < sh->end;
}

static size_t value_len(tu_rng *r)
{
	uint64_t c = tu_below(r, 100);
	if (c < 60)
		return (size_t)tu_range(r, HDR, 300);
	if (c < 95)
		return (size_t)tu_range(r, 301, 8192);
	return (size_t)tu_range(r, 8193, 256 * 1024); /* grows the file: remaps under the readers */
}

static void *writer_main(void *arg)
{
	struct shared *sh = arg;
	tu_rng r = { tu_seed3(sh->seed, 0x77, 0) };
	unsigned char *buf = malloc(256 * 1024);
	if (!buf) {
		fail_once(sh, "malloc");
		return NULL;
	}
	for (uint64_t v = 1; v <= MAX_COMMITS && running(sh); v++) {
		ms_txn *t;
		int rc = ms_txn_begin(sh->s, 0, &t);
		if (rc) {
			fail_once(sh, "writer: begin = %d (%s)", rc, ms_strerror(rc));
			break;
		}
		uint64_t tm = 0, dm = 0;
		unsigned n = (unsigned)tu_range(&r, 1, 4);
		for (unsigned i = 0; i < n && rc == 0; i++) {
			unsigned k = (unsigned)tu_below(&r, NKEYS);
			char key[8];
			size_t klen = key_name(key, k);
			tm |= 1ull << k;
			if (tu_below(&r, 100) < 20) {
				rc = ms_txn_del(t, key, klen);
				if (rc == MS_NOTFOUND)
					rc = 0;
				dm |= 1ull << k;
				continue;
			}
			dm &= ~(1ull << k);
			size_t len = value_len(&r);
			struct hdr h = { k, (uint32_t)len, v };
			if (i % 2) {
				void *dst;
				rc = ms_txn_reserve(t, key, klen, len, &dst);
				if (rc == 0) {
					memcpy(dst, &h, HDR);
					tu_fill((unsigned char *)dst + HDR, len - HDR, fill_seed(&h));
				}
			} else {
				memcpy(buf, &h, HDR);
				tu_fill(buf + HDR, len - HDR, fill_seed(&h));
				rc = ms_txn_put(t, key, klen, buf, len);
			}
		}
		if (rc == 0)
			rc = ms_txn_put(t, VER_KEY, strlen(VER_KEY), &v, sizeof v);
		if (rc) {
			ms_txn_abort(t);
			fail_once(sh, "writer: commit %" PRIu64 ": an operation = %d (%s)", v, rc, ms_strerror(rc));
			break;
		}
		atomic_store(&touched[v], tm);
		atomic_store(&deleted[v], dm);
		rc = ms_txn_commit(t);
		if (rc) {
			fail_once(sh, "writer: commit %" PRIu64 " = %d (%s): %s", v, rc, ms_strerror(rc), ms_last_error());
			break;
		}
		atomic_store(&sh->commits, v);
	}
	free(buf);
	return NULL;
}

/* The newest commit at or before snapshot `snap` that touched key k (0: none). */
static uint64_t last_touch(uint64_t snap, unsigned k)
{
	for (uint64_t c = snap; c > 0; c--)
		if (atomic_load(&touched[c]) & (1ull << k))
			return c;
	return 0;
}

static uint64_t txn_ver(struct shared *sh, ms_txn *t, bool *ok)
{
	ms_val v;
	uint64_t ver = 0;
	int rc = ms_txn_get(t, VER_KEY, strlen(VER_KEY), &v);
	*ok = true;
	if (rc == 0 && v.len == sizeof ver)
		memcpy(&ver, v.data, sizeof ver);
	else if (rc != MS_NOTFOUND) {
		fail_once(sh, "get ver = %d (%s), %zu bytes", rc, ms_strerror(rc), rc ? 0 : v.len);
		*ok = false;
	}
	return ver;
}

/* Key k in snapshot snap must be exactly what the last commit at or before snap left there. */
static bool check_key(struct shared *sh, ms_txn *t, uint64_t snap, unsigned k, ms_val *out)
{
	char key[8];
	size_t klen = key_name(key, k);
	ms_val v;
	int rc = ms_txn_get(t, key, klen, &v);
	uint64_t want = last_touch(snap, k);
	bool gone = want == 0 || (atomic_load(&deleted[want]) & (1ull << k));
	atomic_fetch_add_explicit(&sh->checks, 1, memory_order_relaxed);
	if (rc == MS_NOTFOUND) {
		if (!gone)
			fail_once(sh, "snapshot %" PRIu64 ": %s is absent, but commit %" PRIu64 " put it", snap, key, want);
		return gone;
	}
	if (rc) {
		fail_once(sh, "snapshot %" PRIu64 ": get %s = %d (%s): %s", snap, key, rc, ms_strerror(rc), ms_last_error());
		return false;
	}
	struct hdr h;
	if (v.len < HDR) {
		fail_once(sh, "snapshot %" PRIu64 ": %s has %zu bytes", snap, key, v.len);
		return false;
	}
	memcpy(&h, v.data, HDR);
	if (h.key != k || h.len != v.len || !tu_check_fill((const unsigned char *)v.data + HDR, v.len - HDR, fill_seed(&h))) {
		fail_once(sh, "snapshot %" PRIu64 ": %s (%zu bytes) is not a whole value written for it", snap, key, v.len);
		return false;
	}
	if (gone || h.ver != want) {
		fail_once(sh, "snapshot %" PRIu64 ": %s holds commit %" PRIu64 "'s value, want %s %" PRIu64, snap, key, h.ver,
			  gone ? "absent since" : "commit", want);
		return false;
	}
	if (out)
		*out = v;
	return true;
}

static void *reader_main(void *arg)
{
	struct shared *sh = arg;
	static _Atomic unsigned ids;
	unsigned id = atomic_fetch_add(&ids, 1);
	tu_rng r = { tu_seed3(sh->seed, 0x72, id) };
	uint64_t seen = 0;
	while (running(sh)) {
		ms_txn *t;
		int rc = ms_txn_begin(sh->s, MS_READONLY, &t);
		if (rc) {
			fail_once(sh, "reader %u: begin = %d (%s)", id, rc, ms_strerror(rc));
			break;
		}
		bool ok;
		uint64_t snap = txn_ver(sh, t, &ok);
		if (ok && snap < seen)
			fail_once(sh, "reader %u: snapshot %" PRIu64 " after %" PRIu64, id, snap, seen);
		seen = snap;
		/* Keep one zero-copy value across the other reads (and the writer's growth). */
		ms_val held = { NULL, 0 };
		unsigned held_key = 0;
		unsigned n = (unsigned)tu_range(&r, 4, 16);
		for (unsigned i = 0; i < n && ok; i++) {
			unsigned k = (unsigned)tu_below(&r, NKEYS);
			ms_val v = { NULL, 0 };
			ok = check_key(sh, t, snap, k, &v);
			if (ok && v.data && !held.data) {
				held = v;
				held_key = k;
			}
		}
		if (ok && tu_below(&r, 100) < 5) {
			ms_iter *it;
			ms_val ik, iv;
			unsigned count = 0;
			rc = ms_iter_open(t, &it);
			while (rc == 0 && (rc = ms_iter_next(it, &ik, &iv)) == 0)
				count++;
			ms_iter_close(it);
			if (rc != MS_NOTFOUND || count > NKEYS + 1)
				fail_once(sh, "reader %u: iteration ended with %d after %u", id, rc, count);
		}
		if (ok && held.data) {
			struct hdr h;
			memcpy(&h, held.data, HDR);
			if (h.key != held_key || !tu_check_fill((const unsigned char *)held.data + HDR, held.len - HDR, fill_seed(&h)))
				fail_once(sh, "reader %u: a held value of k%02u changed inside snapshot %" PRIu64, id, held_key, snap);
		}
		if (ok && txn_ver(sh, t, &ok) != snap && ok)
			fail_once(sh, "reader %u: the snapshot moved", id);
		ms_txn_abort(t);
		atomic_fetch_add_explicit(&sh->reads, 1, memory_order_relaxed);
	}
	return NULL;
}

/* Every slot is this process's, and alive. */
static int count_fn(void *ctx, const ms_reader_info *r)
{
	unsigned *bad = ctx;
	if (r->pid != (uint64_t)getpid() || !r->alive)
		(*bad)++;
	return 0;
}

/* Open and close read transactions as fast as possible (several at once in one thread, too), and
 * ms_get, which takes its own. */
static void *churn_main(void *arg)
{
	struct shared *sh = arg;
	static _Atomic unsigned ids;
	unsigned id = atomic_fetch_add(&ids, 1);
	unsigned char buf[300];
	uint64_t i = 0;
	while (running(sh)) {
		ms_txn *t[3];
		unsigned n = (unsigned)(i % 3) + 1;
		int rc = 0;
		for (unsigned j = 0; j < n && rc == 0; j++) /* a thread may hold several */
			if ((rc = ms_txn_begin(sh->s, MS_READONLY, &t[j])) != 0)
				n = j;
		if (rc)
			fail_once(sh, "churn %u: begin = %d (%s)", id, rc, ms_strerror(rc));
		for (unsigned j = n; j > 0; j--)
			ms_txn_abort(t[j - 1]);
		atomic_fetch_add_explicit(&sh->begins, n, memory_order_relaxed);
		size_t vlen;
		char key[8];
		key_name(key, (unsigned)(i % NKEYS));
		rc = ms_get(sh->s, key, 3, buf, sizeof buf, &vlen);
		if (rc && rc != MS_NOTFOUND && rc != MS_ERANGE)
			fail_once(sh, "churn %u: ms_get = %d (%s)", id, rc, ms_strerror(rc));
		i++;
	}
	return NULL;
}

/* The calls that read the handle's shared state beside all that: ms_stat, ms_readers,
 * ms_reader_check. */
static void *monitor_main(void *arg)
{
	struct shared *sh = arg;
	while (running(sh)) {
		ms_stats st;
		int rc;
		if ((rc = ms_stat(sh->s, &st)) != 0)
			fail_once(sh, "monitor: ms_stat = %d", rc);
		else if (st.readers > 4 + 2 * 3 + 1)
			fail_once(sh, "monitor: ms_stat counts %" PRIu64 " readers; the threads hold at most 11", st.readers);
		unsigned bad = 0;
		if ((rc = ms_readers(sh->s, count_fn, &bad)) != 0 || bad)
			fail_once(sh, "monitor: ms_readers = %d, %u slots of another or a dead process", rc, bad);
		unsigned cleared = 0;
		if ((rc = ms_reader_check(sh->s, &cleared)) != 0 || cleared != 0)
			fail_once(sh, "monitor: ms_reader_check = %d cleared %u slots of live threads", rc, cleared);
		atomic_fetch_add_explicit(&sh->monitors, 1, memory_order_relaxed);
	}
	return NULL;
}

static void run_threads(struct shared *sh, unsigned nreaders, unsigned nchurn)
{
	pthread_t w, m, r[8], c[8];
	cr_assert(nreaders <= 8 && nchurn <= 8);
	cr_assert_eq(pthread_create(&w, NULL, writer_main, sh), 0);
	cr_assert_eq(pthread_create(&m, NULL, monitor_main, sh), 0);
	for (unsigned i = 0; i < nreaders; i++)
		cr_assert_eq(pthread_create(&r[i], NULL, reader_main, sh), 0);
	for (unsigned i = 0; i < nchurn; i++)
		cr_assert_eq(pthread_create(&c[i], NULL, churn_main, sh), 0);
	pthread_join(w, NULL);
	atomic_store(&sh->stop, true); /* the writer ends first when it fails or has done MAX_COMMITS */
	for (unsigned i = 0; i < nreaders; i++)
		pthread_join(r[i], NULL);
	for (unsigned i = 0; i < nchurn; i++)
		pthread_join(c[i], NULL);
	pthread_join(m, NULL);
}

static void shared_init(struct shared *sh, const char *path, unsigned flags)
{
	memset(sh, 0, sizeof *sh);
	pthread_mutex_init(&sh->failure_lock, NULL);
	sh->seed = tu_seed();
	sh->s = tu_open(path, MS_CREATE | flags, 0);
	sh->end = tu_now() + tu_env_double("MS_TSAN_SECONDS", 2);
}

Test(tsan, four_readers_a_writer_and_transaction_churn_share_one_handle)
{
	const char *path = tu_path("tsan.ms");
	static struct shared sh;
	/* MS_NOSYNC: durability is not what is tested here, and faster commits mean more interleavings. */
	shared_init(&sh, path, MS_NOSYNC);
	run_threads(&sh, 4, 2);
	TCHK(atomic_load(&sh.failures) == 0, "%" PRIu64 " failures; the first: %s", atomic_load(&sh.failures), sh.failure);
	uint64_t commits = atomic_load(&sh.commits);
	cr_log_info("tsan: %" PRIu64 " commits, %" PRIu64 " read transactions checking %" PRIu64 " values, %" PRIu64
		    " churned read transactions, %" PRIu64 " rounds of ms_stat/ms_readers/ms_reader_check (MS_TEST_SEED=%"
		    PRIu64 ")", commits, atomic_load(&sh.reads), atomic_load(&sh.checks), atomic_load(&sh.begins),
		    atomic_load(&sh.monitors), tu_seed());
	TCHK(commits > 20 && atomic_load(&sh.reads) > 20 && atomic_load(&sh.begins) > 100,
	     "too little happened: %" PRIu64 " commits, %" PRIu64 " reads", commits, atomic_load(&sh.reads));
	/* Everything ended: no reader is left, and the final state is every key's last commit. */
	ms_stats st = tu_stat(sh.s);
	TCHK(st.readers == 0, "%" PRIu64 " readers after every thread ended", st.readers);
	ms_txn *t = tu_begin(sh.s, MS_READONLY);
	bool ok;
	TCHK(txn_ver(&sh, t, &ok) == commits && ok, "the store's last commit is not the writer's last");
	for (unsigned k = 0; k < NKEYS; k++)
		TCHK(check_key(&sh, t, commits, k, NULL), "final state: %s", sh.failure);
	ms_txn_abort(t);
	tu_close(sh.s);
	tu_check_sound(path);
}

/* ---- whole versions: one writer, readers checking every snapshot ------------------------------------- */
/* One writer commits versions 1..TH_VERSIONS; each commit puts every key "t00".."t15" (value: 8-byte version,
 * then tu_fill bytes of a length that depends on key and version), "ver" = version, and puts "flip"
 * in even versions / deletes it in odd ones. Readers check that every snapshot is one whole version,
 * that versions never go backwards, and that a long-held snapshot's pointers stay intact. */

enum { TH_KEYS = 16, TH_READERS = 3, TH_VERSIONS = 1500 };

static size_t th_len(unsigned key, uint64_t ver)
{
	uint64_t h = tu_seed3(key, ver, 77);
	return 8 + (size_t)(h % 100 == 0 ? h % 60000 : h % 1500);
}

static uint64_t th_vseed(unsigned key, uint64_t ver)
{
	return tu_seed3(key, ver, 78);
}

/* True when v is key's value of some version; *ver gets that version. */
static bool th_decode(unsigned key, const void *data, size_t len, uint64_t *ver)
{
	if (len < 8)
		return false;
	memcpy(ver, data, 8);
	return len == th_len(key, *ver) && tu_check_fill((const char *)data + 8, len - 8, th_vseed(key, *ver));
}

static void *th_writer(void *arg)
{
	struct shared *sh = arg;
	static unsigned char buf[70000];
	for (uint64_t ver = 1; ver <= TH_VERSIONS && !atomic_load(&sh->stop); ver++) {
		ms_txn *t;
		int rc = ms_txn_begin(sh->s, 0, &t);
		if (rc) {
			fail_once(sh, "writer: begin = %d", rc);
			break;
		}
		for (unsigned k = 0; k < TH_KEYS && rc == 0; k++) {
			char key[8];
			snprintf(key, sizeof key, "t%02u", k);
			size_t len = th_len(k, ver);
			memcpy(buf, &ver, 8);
			tu_fill(buf + 8, len - 8, th_vseed(k, ver));
			rc = ms_txn_put(t, key, 3, buf, len);
		}
		if (rc == 0)
			rc = ms_txn_put(t, "ver", 3, &ver, 8);
		if (rc == 0 && ver % 2 == 0) {
			rc = ms_txn_put(t, "flip", 4, &ver, 8);
		} else if (rc == 0) {
			/* "flip" exists from version 2 on, in even versions only. */
			rc = ms_txn_del(t, "flip", 4);
			if (ver == 1)
				rc = rc == MS_NOTFOUND ? 0 : -100;
		}
		if (rc) {
			ms_txn_abort(t);
			fail_once(sh, "writer: version %" PRIu64 ": %d", ver, rc);
			break;
		}
		rc = ms_txn_commit(t);
		if (rc) {
			fail_once(sh, "writer: commit of version %" PRIu64 " = %d", ver, rc);
			break;
		}
	}
	atomic_store(&sh->stop, true); /* the readers end with the writer */
	return NULL;
}

/* Check one snapshot; returns its version, or UINT64_MAX after a failure. */
static uint64_t th_check_snapshot(struct shared *sh, ms_txn *t, int id, const void **ptrs)
{
	ms_val v;
	uint64_t ver = 0;
	int rc = ms_txn_get(t, "ver", 3, &v);
	if (rc == MS_NOTFOUND) {
		ver = 0;
	} else if (rc != 0 || v.len != 8) {
		fail_once(sh, "reader %d: get ver = %d, len %zu", id, rc, v.len);
		return UINT64_MAX;
	} else {
		memcpy(&ver, v.data, 8);
	}
	for (unsigned k = 0; k < TH_KEYS; k++) {
		char key[8];
		snprintf(key, sizeof key, "t%02u", k);
		rc = ms_txn_get(t, key, 3, &v);
		if (ver == 0) {
			if (rc != MS_NOTFOUND) {
				fail_once(sh, "reader %d: %s present before the first commit (%d)", id, key, rc);
				return UINT64_MAX;
			}
			continue;
		}
		uint64_t kv;
		if (rc != 0 || !th_decode(k, v.data, v.len, &kv) || kv != ver) {
			fail_once(sh, "reader %d: snapshot of version %" PRIu64 ": %s rc %d len %zu version %" PRIu64, id,
				ver, key, rc, v.len, rc == 0 && v.len >= 8 ? kv : 0);
			return UINT64_MAX;
		}
		if (ptrs)
			ptrs[k] = v.data;
	}
	rc = ms_txn_get(t, "flip", 4, &v);
	if (ver && (ver % 2 == 0) != (rc == 0)) {
		fail_once(sh, "reader %d: version %" PRIu64 ": flip rc %d", id, ver, rc);
		return UINT64_MAX;
	}
	atomic_fetch_add(&sh->reads, 1);
	return ver;
}

struct th_reader_arg {
	struct shared *sh;
	int id;
};

static void *th_reader(void *arg)
{
	struct th_reader_arg *ra = arg;
	struct shared *sh = ra->sh;
	uint64_t last = 0;
	ms_txn *held = NULL;
	uint64_t held_ver = 0;
	const void *held_ptrs[TH_KEYS];
	unsigned i = 0;
	static _Thread_local unsigned char buf[70000];
	while (!atomic_load(&sh->stop)) {
		i++;
		ms_txn *t;
		int rc = ms_txn_begin(sh->s, MS_READONLY, &t);
		if (rc) {
			fail_once(sh, "reader %d: begin = %d", ra->id, rc);
			break;
		}
		bool keep = held == NULL && i % 7 == 1;
		uint64_t ver = th_check_snapshot(sh, t, ra->id, keep ? held_ptrs : NULL);
		if (ver == UINT64_MAX) {
			ms_txn_abort(t);
			break;
		}
		if (ver < last) {
			fail_once(sh, "reader %d: version went back from %" PRIu64 " to %" PRIu64, ra->id, last, ver);
			ms_txn_abort(t);
			break;
		}
		last = ver;
		if (i % 5 == 0) {
			/* The iterator of a snapshot shows the same version everywhere. */
			ms_iter *it;
			if ((rc = ms_iter_open(t, &it)) != 0) {
				fail_once(sh, "reader %d: iter_open = %d", ra->id, rc);
				ms_txn_abort(t);
				break;
			}
			ms_val k, v;
			unsigned n = 0;
			while ((rc = ms_iter_next(it, &k, &v)) == 0) {
				n++;
				unsigned key;
				uint64_t kv;
				if (k.len == 3 && ((const char *)k.data)[0] == 't') {
					key = (unsigned)(((const char *)k.data)[1] - '0') * 10u +
					      (unsigned)(((const char *)k.data)[2] - '0');
					if (key >= TH_KEYS || !th_decode(key, v.data, v.len, &kv) || kv != ver) {
						fail_once(sh, "reader %d: iterator of version %" PRIu64 " shows a bad %.3s",
							ra->id, ver, (const char *)k.data);
						break;
					}
				}
			}
			ms_iter_close(it);
			unsigned want = ver == 0 ? 0 : TH_KEYS + 1 + (ver % 2 == 0);
			if (rc != MS_NOTFOUND || n != want) {
				if (!atomic_load(&sh->failures))
					fail_once(sh, "reader %d: iterator of version %" PRIu64 " ended %d after %u of %u", ra->id,
						ver, rc, n, want);
				ms_txn_abort(t);
				break;
			}
		}
		if (keep && ver > 0) {
			held = t;
			held_ver = ver;
		} else {
			ms_txn_abort(t);
		}
		if (held && i % 50 == 0) {
			for (unsigned k = 0; k < TH_KEYS; k++) {
				size_t len = th_len(k, held_ver);
				uint64_t kv;
				if (!th_decode(k, held_ptrs[k], len, &kv) || kv != held_ver) {
					fail_once(sh, "reader %d: a held zero-copy value of version %" PRIu64 " changed", ra->id,
						held_ver);
					break;
				}
			}
			ms_txn_abort(held);
			held = NULL;
		}
		/* One-operation reads: each is some whole version, not older than what was seen. */
		if (i % 3 == 0) {
			size_t vlen = 0;
			unsigned key = i % TH_KEYS;
			char kn[8];
			snprintf(kn, sizeof kn, "t%02u", key);
			rc = ms_get(sh->s, kn, 3, buf, sizeof buf, &vlen);
			uint64_t kv = 0;
			if (last > 0 && (rc != 0 || !th_decode(key, buf, vlen, &kv) || kv < last)) {
				fail_once(sh, "reader %d: ms_get(%s) = %d, version %" PRIu64 " after seeing %" PRIu64, ra->id, kn,
					rc, kv, last);
				break;
			}
		}
	}
	if (held)
		ms_txn_abort(held);
	return NULL;
}

Test(tsan, threads_share_one_handle_readers_see_whole_versions)
{
	const char *p = tu_path("s.ms");
	static struct shared sh;
	shared_init(&sh, p, MS_NOSYNC);
	pthread_t w, r[TH_READERS];
	struct th_reader_arg ra[TH_READERS];
	for (int i = 0; i < TH_READERS; i++) {
		ra[i] = (struct th_reader_arg){ &sh, i };
		cr_assert_eq(pthread_create(&r[i], NULL, th_reader, &ra[i]), 0);
	}
	cr_assert_eq(pthread_create(&w, NULL, th_writer, &sh), 0);
	pthread_join(w, NULL);
	for (int i = 0; i < TH_READERS; i++)
		pthread_join(r[i], NULL);
	uint64_t failed = atomic_load(&sh.failures);
	uint64_t reads = atomic_load(&sh.reads);
	cr_assert_eq(failed, 0, "%s", sh.failure);
	cr_assert_gt(reads, 10, "the readers hardly ran (%" PRIu64 " snapshots checked)", reads);
	ms_stats st = tu_stat(sh.s);
	cr_assert_eq(st.objects, TH_KEYS + 1 + (TH_VERSIONS % 2 == 0));
	cr_assert_eq(st.readers, 0);
	tu_close(sh.s);
	tu_check_sound(p);
}

struct hold_arg {
	ms_store *s;
	atomic_int stage; /* 1: write txn open with a put; 2: main says commit; 3: committed */
	int err;
};

static void *hold_writer(void *arg)
{
	struct hold_arg *a = arg;
	ms_txn *t;
	a->err = ms_txn_begin(a->s, 0, &t);
	if (a->err == 0)
		a->err = ms_txn_put(t, "k", 1, "new", 3);
	atomic_store(&a->stage, 1);
	while (atomic_load(&a->stage) != 2)
		sched_yield();
	if (a->err == 0)
		a->err = ms_txn_commit(t);
	atomic_store(&a->stage, 3);
	return NULL;
}

struct read_arg {
	ms_store *s;
	atomic_int done;
	int rc[4];
};

static void *reads_beside_writer(void *arg)
{
	struct read_arg *a = arg;
	ms_txn *t;
	a->rc[0] = ms_txn_begin(a->s, MS_READONLY, &t);
	if (a->rc[0] == 0) {
		ms_val v;
		a->rc[1] = ms_txn_get(t, "k", 1, &v);
		if (a->rc[1] == 0 && (v.len != 3 || memcmp(v.data, "old", 3)))
			a->rc[1] = 1000;
		ms_iter *it;
		a->rc[2] = ms_iter_open(t, &it);
		if (a->rc[2] == 0) {
			ms_val k;
			while ((a->rc[2] = ms_iter_next(it, &k, &v)) == 0)
				;
			ms_iter_close(it);
		}
		ms_txn_abort(t);
	}
	char buf[8];
	size_t vlen;
	a->rc[3] = ms_get(a->s, "k", 1, buf, sizeof buf, &vlen);
	atomic_store(&a->done, 1);
	return NULL;
}

Test(tsan, read_transactions_do_not_wait_for_a_writer_thread)
{
	ms_store *s = tu_open(tu_path("s.ms"), MS_CREATE | MS_NOSYNC, 0);
	tu_puts(s, "k", "old");
	struct hold_arg h = { .s = s };
	pthread_t wt, rt;
	cr_assert_eq(pthread_create(&wt, NULL, hold_writer, &h), 0);
	while (atomic_load(&h.stage) != 1)
		sched_yield();
	struct read_arg ra = { .s = s };
	cr_assert_eq(pthread_create(&rt, NULL, reads_beside_writer, &ra), 0);
	double t0 = tu_now();
	while (!atomic_load(&ra.done) && tu_now() - t0 < 10.0)
		usleep(1000);
	cr_assert(atomic_load(&ra.done), "reads still blocked after 10 s while another thread holds a write transaction");
	pthread_join(rt, NULL);
	cr_assert_eq(ra.rc[0], 0, "ms_txn_begin(MS_READONLY) = %d", ra.rc[0]);
	cr_assert_eq(ra.rc[1], 0, "ms_txn_get beside an open write transaction = %d", ra.rc[1]);
	cr_assert_eq(ra.rc[2], MS_NOTFOUND, "iteration beside an open write transaction = %d", ra.rc[2]);
	cr_assert_eq(ra.rc[3], 0, "ms_get beside an open write transaction = %d", ra.rc[3]);
	atomic_store(&h.stage, 2);
	pthread_join(wt, NULL);
	cr_assert_eq(h.err, 0);
	tu_expect_str(s, "k", "new");
	tu_close(s);
}

/* ---- write transactions of several threads take turns --------------------------------------------- */

struct counter_ctx {
	ms_store *s;
	unsigned n;
	_Atomic int failed; /* what failed first: 1 begin, 2 get, 3 put, 4 commit, 5 a read went back */
	_Atomic int rc;     /* and the code it returned */
	_Atomic bool done;
};

static void counter_fail(struct counter_ctx *c, int what, int rc)
{
	int none = 0;
	if (atomic_compare_exchange_strong(&c->failed, &none, what))
		atomic_store(&c->rc, rc);
}

/* n read-modify-write transactions adding 1 to the 8-byte counter "n"; every 4th holds the writer
 * lock a while (sched_yield between its read and its write), so the others wait for it. */
static void *incr_main(void *arg)
{
	struct counter_ctx *c = arg;
	for (unsigned i = 0; i < c->n && !atomic_load(&c->failed); i++) {
		ms_txn *t;
		int rc = ms_txn_begin(c->s, 0, &t);
		if (rc) {
			counter_fail(c, 1, rc);
			return NULL;
		}
		ms_val v;
		uint64_t x = 0;
		rc = ms_txn_get(t, "n", 1, &v);
		if (rc == 0 && v.len == 8) {
			memcpy(&x, v.data, 8);
		} else if (rc != MS_NOTFOUND) {
			ms_txn_abort(t);
			counter_fail(c, 2, rc ? rc : -100); /* -100: the counter has the wrong length */
			return NULL;
		}
		x++;
		if (i % 4 == 0)
			sched_yield();
		if ((rc = ms_txn_put(t, "n", 1, &x, 8)) != 0) {
			ms_txn_abort(t);
			counter_fail(c, 3, rc);
			return NULL;
		}
		if ((rc = ms_txn_commit(t)) != 0) {
			counter_fail(c, 4, rc);
			return NULL;
		}
	}
	return NULL;
}

static void *watch_main(void *arg)
{
	struct counter_ctx *c = arg;
	uint64_t last = 0;
	while (!atomic_load(&c->done)) {
		uint64_t x = 0;
		size_t len;
		int rc = ms_get(c->s, "n", 1, &x, sizeof x, &len);
		if ((rc && rc != MS_NOTFOUND) || x < last)
			counter_fail(c, 5, rc);
		last = x;
	}
	return NULL;
}

Test(tsan, write_transactions_of_several_threads_take_turns)
{
	struct counter_ctx c = { .s = tu_open(tu_path("incr.ms"), MS_CREATE | MS_NOSYNC, 0), .n = 400 };
	pthread_t w[3], r;
	cr_assert_eq(pthread_create(&r, NULL, watch_main, &c), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(pthread_create(&w[i], NULL, incr_main, &c), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(w[i], NULL);
	atomic_store(&c.done, true);
	pthread_join(r, NULL);
	int failed = atomic_load(&c.failed), rc = atomic_load(&c.rc);
	TCHK(failed == 0, "a thread failed (%d: 1 begin, 2 get, 3 put, 4 commit, 5 a read went back) with %d (%s)", failed,
	     rc, ms_strerror(rc));
	uint64_t x = 0;
	size_t len;
	TCHK(ms_get(c.s, "n", 1, &x, sizeof x, &len) == 0 && x == 3 * c.n,
	     "lost updates: three threads added %u, the counter is %" PRIu64, 3 * c.n, x);
	tu_close(c.s);
	tu_check_sound(tu_path("incr.ms"));
}
