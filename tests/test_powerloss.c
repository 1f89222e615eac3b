/* tests/test_powerloss.c - the power-loss simulator: crash images built from every persistence point
 * the store issues, each of which must open at exactly one allowed commit.
 *
 * Recording. The store's system calls go through the ms_sys seam (store/sys.c); this file replaces
 * the entries that make anything persistent: fdatasync, fsync, msync, fallocate, ftruncate, and the
 * pwrite of meta pages. At each such point, before the call takes effect, the file is read back
 * through the page cache (pread sees what was written through the shared mapping) and the pages that
 * changed since the last point are kept as new versions of those pages.
 *
 * The disk model. A completed fdatasync or fsync makes durable everything written to the file before
 * it, and the file's size; msync(MS_SYNC) makes its range durable. Anything since may or may not have
 * reached the disk: the kernel writes back a dirty page when it likes, so each page changed since the
 * last sync is on the disk as it was (durable), or in any of the versions it had since, or torn (some
 * of its eight 512-byte sectors new, the others old); a growth since the last sync may be lost (the
 * file keeps an older size, and what lay beyond is gone). A crash image at a point is the durable
 * image plus one such choice for every changed page and for the size: random choices (seeded), and
 * the two extremes (nothing written back; everything written back).
 *
 * What each image must satisfy. Default mode: ms_check finds no problem; ms_open succeeds (on a fresh
 * copy with no lock file beside it); the commit it opens at (ms_stat's txn_id) is the last one whose
 * ms_txn_commit returned, or the one in flight at the crash; its content equals the model of that
 * commit exactly (every key present with every byte of its value, nothing else: nothing of a
 * transaction that never committed, nothing of a commit but whole). Some images are also written to
 * after recovery (a commit, a close, a reopen: the rebuilt allocator must not hand out live space).
 * MS_NOSYNC (docs/reliability.md): ms_open succeeds or fails with MS_ECORRUPT and nothing else; when
 * it opens, the commit is one that was made, no later than the one in flight and no earlier than the
 * last one ms_sync() or a clean close made durable (mstore.h: ms_sync makes every commit so far
 * durable), and the content is exactly that commit's; after a clean close of the recovered store
 * ms_check finds no problem. A refusal (MS_ECORRUPT) is allowed only while no ms_sync or close has
 * made a commit durable since the workload began; the campaign counts them.
 *
 * The real flushes are skipped while the simulator runs: what is durable is what the model says, and
 * the calls would only cost time (crash images are throw-away files too).
 *
 * MS_PL_IMAGES sets the number of crash images of the whole binary (default 3000, shared among the
 * tests by weight); MS_TEST_SEED the seed (printed on failure, with the point and the image);
 * MS_PL_SAVE=folder keeps the first failing images there (for mstore check). A long
 * campaign: MS_PL_IMAGES=50000 build/test/tests/test_powerloss --jobs 2 (docs/reliability.md).
 */
#include "testutil.h"

#include <stdarg.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "internal.h"

static void pl_fini(void);
TestSuite(powerloss, .init = tu_setup, .fini = pl_fini, .timeout = 7200); /* long campaigns; ctest has its own limit */

#define PL_PAGE 4096u
#define PL_SECTORS 8u
#define PL_SECTOR (PL_PAGE / PL_SECTORS)
#define PL_RING 64u      /* committed model states kept: back to the last durable one */
#define PL_MAXVAL (4u << 20)

/* Each store's hash seed comes from getrandom(2). This executable defines it, so the library (linked
 * in statically) gets bytes derived from MS_TEST_SEED: a rerun with the seed a failure printed builds
 * the same files, point for point. */
ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
	static uint64_t calls;
	(void)flags;
	tu_fill(buf, len, tu_seed3(tu_seed(), 0x72616e64, ++calls));
	return (ssize_t)len;
}

/* ---- the recorder ------------------------------------------------------------------------------- */

enum pl_kind { P_FDATASYNC, P_FSYNC, P_MSYNC, P_FALLOCATE, P_FTRUNCATE, P_PWRITE, P_STEP, P_KINDS };
static const char *const pl_kind_name[P_KINDS] = { "fdatasync", "fsync", "msync", "fallocate",
	                                           "ftruncate", "pwrite", "step" };

/* One version of a page, taken at a point when it differed from the version before. */
struct pl_ver {
	uint64_t page;
	uint32_t prev; /* index + 1 of the same page's previous version since the last sync, 0: none */
	uint8_t *data;
};

struct pl_map {
	uint8_t *addr;
	size_t len;
};

static struct pl {
	char path[PATH_MAX]; /* the workload's store file */
	int fd;              /* its descriptor, -1 while it is closed */
	bool busy;           /* an image is being checked: the hooks only pass calls on */
	bool on;             /* points are recorded (and images checked) */
	/* The file as the page cache holds it at the last point, and as the disk holds it for sure. */
	uint8_t *cur, *dur;
	uint64_t cur_size, dur_size, cap;
	/* Versions of pages changed since the last completed sync, oldest first; last[page] is the
	 * index + 1 of the page's newest one (0: unchanged), dirty[] the pages in order of first change. */
	struct pl_ver *vers;
	size_t nvers, vcap;
	uint32_t *last;
	uint64_t *dirty;
	size_t ndirty, dcap;
	uint64_t sizes[64]; /* distinct file sizes since the last sync (after the durable one) */
	size_t nsizes;
	struct pl_map maps[16]; /* the store's mappings, for msync */
	size_t nmaps;
	uint64_t epoch;   /* completed syncs */
	uint64_t changes; /* page versions recorded */
	uint64_t points, kind_points[P_KINDS];
	uint8_t *rbuf; /* read buffer */
} pl = { .fd = -1 };

static void *pl_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		cr_assert_fail("out of memory (%zu bytes)", n);
	return q;
}

/* Room for a file of `size` bytes in cur, dur and last (new space zero: a grown file reads zeros). */
static void pl_reserve(uint64_t size)
{
	if (size <= pl.cap)
		return;
	uint64_t ncap = pl.cap ? pl.cap : (1u << 20);
	while (ncap < size)
		ncap *= 2;
	pl.cur = pl_xrealloc(pl.cur, ncap);
	pl.dur = pl_xrealloc(pl.dur, ncap);
	pl.last = pl_xrealloc(pl.last, ncap / PL_PAGE * sizeof *pl.last);
	memset(pl.cur + pl.cap, 0, ncap - pl.cap);
	memset(pl.dur + pl.cap, 0, ncap - pl.cap);
	memset(pl.last + pl.cap / PL_PAGE, 0, (ncap - pl.cap) / PL_PAGE * sizeof *pl.last);
	pl.cap = ncap;
}

static void pl_add_version(uint64_t page, const uint8_t *data)
{
	if (pl.nvers == pl.vcap) {
		pl.vcap = pl.vcap ? pl.vcap * 2 : 1024;
		pl.vers = pl_xrealloc(pl.vers, pl.vcap * sizeof *pl.vers);
	}
	struct pl_ver *v = &pl.vers[pl.nvers++];
	v->page = page;
	v->prev = pl.last[page];
	v->data = pl_xrealloc(NULL, PL_PAGE);
	memcpy(v->data, data, PL_PAGE);
	if (!pl.last[page]) {
		if (pl.ndirty == pl.dcap) {
			pl.dcap = pl.dcap ? pl.dcap * 2 : 1024;
			pl.dirty = pl_xrealloc(pl.dirty, pl.dcap * sizeof *pl.dirty);
		}
		pl.dirty[pl.ndirty++] = page;
	}
	pl.last[page] = (uint32_t)pl.nvers;
	pl.changes++;
}

/* Read the file back and keep what changed since the last point. */
static void pl_snapshot(void)
{
	struct stat sb;
	if (fstat(pl.fd, &sb))
		cr_assert_fail("fstat of the store: %s", strerror(errno));
	uint64_t size = (uint64_t)sb.st_size;
	pl_reserve(size);
	if (size != pl.cur_size) {
		if (size < pl.cur_size) /* shrunk: what lay beyond reads as zeros if it grows again */
			memset(pl.cur + size, 0, pl.cur_size - size);
		if (pl.nsizes < sizeof pl.sizes / sizeof pl.sizes[0])
			pl.sizes[pl.nsizes++] = size;
		pl.cur_size = size;
	}
	const size_t chunk = 1u << 20;
	if (!pl.rbuf)
		pl.rbuf = pl_xrealloc(NULL, chunk);
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t n = (size_t)(size - off < chunk ? size - off : chunk);
		if (sys_pread_full(pl.fd, pl.rbuf, n, off))
			cr_assert_fail("pread of the store at %" PRIu64 ": %s", off, strerror(errno));
		if (n % PL_PAGE)
			memset(pl.rbuf + n, 0, PL_PAGE - n % PL_PAGE);
		for (size_t i = 0; i < n; i += PL_PAGE) {
			if (memcmp(pl.rbuf + i, pl.cur + off + i, PL_PAGE) == 0)
				continue;
			memcpy(pl.cur + off + i, pl.rbuf + i, PL_PAGE);
			pl_add_version((off + i) / PL_PAGE, pl.rbuf + i);
		}
	}
}

/* A sync of the whole file completed: the disk holds the file as it was at the last point. */
static void pl_synced(void)
{
	for (size_t i = 0; i < pl.ndirty; i++) {
		uint64_t pg = pl.dirty[i];
		memcpy(pl.dur + pg * PL_PAGE, pl.cur + pg * PL_PAGE, PL_PAGE);
		pl.last[pg] = 0;
	}
	if (pl.dur_size > pl.cur_size)
		memset(pl.dur + pl.cur_size, 0, pl.dur_size - pl.cur_size);
	pl.dur_size = pl.cur_size;
	for (size_t i = 0; i < pl.nvers; i++)
		free(pl.vers[i].data);
	pl.nvers = pl.ndirty = pl.nsizes = 0;
	pl.epoch++;
}

/* msync(MS_SYNC) of [off, off + len): those pages are durable, the size is not. */
static void pl_synced_range(uint64_t off, uint64_t len)
{
	size_t w = 0;
	for (size_t i = 0; i < pl.ndirty; i++) {
		uint64_t pg = pl.dirty[i];
		if (pg * PL_PAGE + PL_PAGE > off && pg * PL_PAGE < off + len) {
			memcpy(pl.dur + pg * PL_PAGE, pl.cur + pg * PL_PAGE, PL_PAGE);
			pl.last[pg] = 0; /* its versions stay in vers[], unreachable until the next sync */
		} else {
			pl.dirty[w++] = pg;
		}
	}
	pl.ndirty = w;
	pl.epoch++;
}

static void pl_point(enum pl_kind k);

/* ---- the hooks (ms_sys entries) ------------------------------------------------------------------ */

static int pl_open(const char *path, int flags, mode_t mode)
{
	int fd = ms_sys_default.open(path, flags, mode);
	if (fd >= 0 && !pl.busy && strcmp(path, pl.path) == 0)
		pl.fd = fd;
	return fd;
}

static int pl_close(int fd)
{
	if (fd == pl.fd && !pl.busy)
		pl.fd = -1;
	return ms_sys_default.close(fd);
}

static bool pl_mine(int fd)
{
	return pl.on && !pl.busy && fd >= 0 && fd == pl.fd;
}

static int pl_fdatasync(int fd)
{
	if (!pl_mine(fd))
		return 0; /* the crash images: throw-away files */
	pl_point(P_FDATASYNC);
	pl_synced();
	return 0;
}

static int pl_fsync(int fd)
{
	if (!pl_mine(fd))
		return 0;
	pl_point(P_FSYNC);
	pl_synced();
	return 0;
}

static int pl_msync(void *addr, size_t len, int flags)
{
	if (!pl.on || pl.busy || pl.fd < 0)
		return ms_sys_default.msync(addr, len, flags & ~MS_SYNC);
	for (size_t i = 0; i < pl.nmaps; i++) {
		uint8_t *a = addr;
		if (a >= pl.maps[i].addr && a < pl.maps[i].addr + pl.maps[i].len) {
			pl_point(P_MSYNC);
			if (flags & MS_SYNC)
				pl_synced_range((uint64_t)(a - pl.maps[i].addr), len);
			break;
		}
	}
	return ms_sys_default.msync(addr, len, flags & ~MS_SYNC);
}

static int pl_fallocate(int fd, off_t off, off_t len)
{
	if (pl_mine(fd))
		pl_point(P_FALLOCATE);
	return ms_sys_default.fallocate(fd, off, len);
}

static int pl_ftruncate(int fd, off_t len)
{
	if (pl_mine(fd))
		pl_point(P_FTRUNCATE);
	return ms_sys_default.ftruncate(fd, len);
}

static ssize_t pl_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	if (pl_mine(fd))
		pl_point(P_PWRITE);
	return ms_sys_default.pwrite(fd, buf, len, off);
}

static void *pl_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = ms_sys_default.mmap(addr, len, prot, flags, fd, off);
	if (p != MAP_FAILED && !pl.busy && fd >= 0 && fd == pl.fd && off == 0 &&
	    pl.nmaps < sizeof pl.maps / sizeof pl.maps[0])
		pl.maps[pl.nmaps++] = (struct pl_map){ p, len };
	return p;
}

static int pl_munmap(void *addr, size_t len)
{
	for (size_t i = 0; i < pl.nmaps; i++)
		if (pl.maps[i].addr == addr) {
			pl.maps[i] = pl.maps[--pl.nmaps];
			break;
		}
	return ms_sys_default.munmap(addr, len);
}

static void pl_fini(void)
{
	ms_sys = ms_sys_default;
	tu_teardown();
}

/* ---- the model ----------------------------------------------------------------------------------- */

enum { V_CORRUPT, V_LOST, V_WRONG, V_KINDS };
static const char *const pl_vname[V_KINDS] = { "corrupt", "lost", "wrong" };

/* A key's state: values are never kept, only the seed and length tu_fill makes them from. */
struct kv {
	uint64_t seed;
	uint32_t len;
	bool present;
};

struct mstate {
	uint64_t id; /* commit id (ms_stats.txn_id) */
	struct kv *kv;
};

struct wl {
	const char *name;
	uint64_t seed;
	tu_rng rng;
	unsigned nkeys;
	unsigned flags;    /* ms_open flags of the workload */
	uint64_t capacity;
	bool nosync;
	ms_store *s;
	struct kv *work;   /* the open write transaction's view */
	struct mstate ring[PL_RING]; /* committed states, ring[head] the newest (id acked) */
	unsigned head, nstates;
	uint64_t acked;    /* the newest commit whose ms_txn_commit returned */
	uint64_t durable;  /* the newest commit a completed sync covers for sure */
	bool any_synced;   /* a ms_sync or close completed since the workload began (MS_NOSYNC) */
	bool inflight;     /* inside ms_txn_commit: acked + 1 may be on the disk */
	const char *doing; /* what the workload is in, for messages */
	uint64_t opno;
	unsigned char *buf;
	unsigned char *fbuf; /* values of the commits after recovery: a point may come inside a put that
	                        has not copied buf yet */
	/* The campaign's shape. */
	double rate;       /* probability that a point gets random images */
	unsigned randoms;  /* random images at such a point */
	uint64_t budget;   /* images this test checks */
	/* Figures. */
	uint64_t images, img_none, img_all, img_random, torn, short_size, followups, commits, aborts,
	         reopens, syncs, at_inflight, refused, verified_commits;
	uint64_t last_none_epoch, last_all_changes;
	uint8_t *seen_commit; /* by commit id: verified by some image */
	size_t seen_cap;
	uint8_t *img;
	uint64_t img_cap, img_size;
	char desc[256];    /* the image being checked */
	uint64_t check_id; /* the commit the last ms_check checked */
	uint64_t bad[V_KINDS];
	char first_bad[V_KINDS][768];
};

static struct wl *cur_wl;

/* What an image can get wrong: it does not open or check clean (corrupt), it lost a durable commit
 * (lost), or it shows a state no commit had (wrong). Each is counted and the test fails at its end,
 * with the first of each kind in full (the seed, the point and the image's recipe). */
static void pl_violation(struct wl *w, int cls, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define PLCHK(w, cls, cond, ...)                                                                       \
	do {                                                                                           \
		if (!(cond)) {                                                                         \
			pl_violation(w, cls, __VA_ARGS__);                                             \
			return false;                                                                  \
		}                                                                                      \
	} while (0)
static enum pl_kind pl_cur_kind;

static size_t wl_key(char *buf, unsigned k)
{
	int n = snprintf(buf, 16, "k%05u", k);
	size_t len = (size_t)n + (size_t)(tu_mix64(k) % 40);
	for (size_t i = (size_t)n; i < len; i++)
		buf[i] = (char)('a' + (k + i) % 26);
	return len;
}

/* The key number of a key the workload made, or -1. */
static long wl_key_of(const void *p, size_t len)
{
	const char *c = p;
	if (len < 6 || c[0] != 'k')
		return -1;
	long k = 0;
	for (int i = 1; i < 6; i++) {
		if (c[i] < '0' || c[i] > '9')
			return -1;
		k = k * 10 + (c[i] - '0');
	}
	char want[64];
	if (wl_key(want, (unsigned)k) != len || memcmp(want, p, len) != 0)
		return -1;
	return k;
}

static struct kv *wl_state(struct wl *w, uint64_t id)
{
	for (unsigned i = 0; i < w->nstates; i++) {
		struct mstate *m = &w->ring[(w->head + PL_RING - i) % PL_RING];
		if (m->id == id)
			return m->kv;
	}
	return NULL;
}

/* Push a new newest state (a copy of kv) with commit id `id`. */
static void wl_push(struct wl *w, uint64_t id, const struct kv *kv)
{
	w->head = (w->head + 1) % PL_RING;
	struct mstate *m = &w->ring[w->head];
	if (!m->kv)
		m->kv = pl_xrealloc(NULL, w->nkeys * sizeof *m->kv);
	memcpy(m->kv, kv, w->nkeys * sizeof *kv);
	m->id = id;
	if (w->nstates < PL_RING)
		w->nstates++;
}

static void wl_pop(struct wl *w)
{
	w->head = (w->head + PL_RING - 1) % PL_RING;
	w->nstates--;
}

/* The oldest commit an image may open at. */
static uint64_t wl_lo(const struct wl *w)
{
	return w->nosync ? w->durable : w->acked;
}

/* ---- checking an image -------------------------------------------------------------------------- */

/* Compare the store's newest state with model kv: every key through ms_txn_get, and an iteration that
 * must yield exactly the present keys. Returns NULL or what differs. */
static const char *pl_compare(struct wl *w, ms_store *s, const struct kv *kv)
{
	static char why[200];
	ms_txn *t = NULL;
	int rc = ms_txn_begin(s, MS_READONLY, &t);
	if (rc)
		return snprintf(why, sizeof why, "ms_txn_begin = %d (%s)", rc, ms_strerror(rc)), why;
	const char *res = NULL;
	uint64_t present = 0;
	for (unsigned k = 0; k < w->nkeys && !res; k++) {
		char key[64];
		size_t klen = wl_key(key, k);
		ms_val v;
		rc = ms_txn_get(t, key, klen, &v);
		if (kv[k].present) {
			present++;
			if (rc)
				snprintf(why, sizeof why, "key %u: ms_txn_get = %d (%s), the model has %u bytes", k, rc,
				         ms_strerror(rc), kv[k].len), res = why;
			else if (v.len != kv[k].len || !tu_check_fill(v.data, v.len, kv[k].seed))
				snprintf(why, sizeof why, "key %u: %zu bytes%s, the model has %u bytes", k, v.len,
				         v.len == kv[k].len ? " with other contents" : "", kv[k].len), res = why;
		} else if (rc != MS_NOTFOUND) {
			snprintf(why, sizeof why, "key %u: ms_txn_get = %d (%s), the model has no such key", k, rc,
			         ms_strerror(rc)), res = why;
		}
	}
	ms_iter *it = NULL;
	if (!res && (rc = ms_iter_open(t, &it)))
		snprintf(why, sizeof why, "ms_iter_open = %d (%s)", rc, ms_strerror(rc)), res = why;
	uint64_t n = 0;
	while (!res) {
		ms_val key, val;
		rc = ms_iter_next(it, &key, &val);
		if (rc == MS_NOTFOUND)
			break;
		long k = rc ? -1 : wl_key_of(key.data, key.len);
		if (rc)
			snprintf(why, sizeof why, "ms_iter_next = %d (%s)", rc, ms_strerror(rc)), res = why;
		else if (k < 0 || (unsigned)k >= w->nkeys || !kv[k].present)
			snprintf(why, sizeof why, "iteration yields key %ld, which the model lacks", k), res = why;
		else if (val.len != kv[k].len || !tu_check_fill(val.data, val.len, kv[k].seed))
			snprintf(why, sizeof why, "iteration: key %ld has other contents", k), res = why;
		n++;
	}
	if (!res && n != present)
		snprintf(why, sizeof why, "iteration yields %" PRIu64 " objects, the model has %" PRIu64, n,
		         present), res = why;
	ms_iter_close(it);
	ms_txn_abort(t);
	return res;
}

static void pl_rm_image(const char *img)
{
	char lock[PATH_MAX + 8];
	snprintf(lock, sizeof lock, "%s-lock", img);
	unlink(img);
	unlink(lock);
}

static void pl_violation(struct wl *w, int cls, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (w->bad[cls]++ == 0)
		snprintf(w->first_bad[cls], sizeof w->first_bad[cls],
		         "[MS_TEST_SEED=%" PRIu64 " %s, point %" PRIu64 " (%s), in %s; image: %s] %s", tu_seed(), w->name,
		         pl.points, pl_kind_name[pl_cur_kind], w->doing, w->desc, msg);
	const char *save = getenv("MS_PL_SAVE"); /* a folder to keep the first failing images in */
	uint64_t nbad = w->bad[V_CORRUPT] + w->bad[V_LOST] + w->bad[V_WRONG];
	if (save && *save && nbad <= 10) {
		char to[PATH_MAX];
		snprintf(to, sizeof to, "%s/%s-%" PRIu64 "-%s.ms", save, w->name, nbad, pl_vname[cls]);
		if (!tu_write_file(to, w->img, (size_t)w->img_size))
			fprintf(stderr, "powerloss/%s: cannot save the image as %s\n", w->name, to);
	}
	if (nbad <= 3)
		fprintf(stderr, "powerloss/%s: %s image at point %" PRIu64 " (%s, in %s; %s): %s\n", w->name,
		        pl_vname[cls], pl.points, pl_kind_name[pl_cur_kind], w->doing, w->desc, msg);
}

static bool pl_check_sound(struct wl *w, const char *img, const char *when)
{
	struct tu_problems pr = { 0 };
	ms_check_stats cs;
	memset(&cs, 0, sizeof cs);
	int rc = ms_check(img, tu_problem_fn, &pr, &cs);
	char lock[PATH_MAX + 8];
	snprintf(lock, sizeof lock, "%s-lock", img);
	unlink(lock);
	PLCHK(w, V_CORRUPT, rc == 0 && cs.problems == 0 && pr.count == 0,
	      "ms_check %s = %d (%s): %" PRIu64 " problems, first at offset %" PRIu64 ": %s", when, rc,
	      ms_strerror(rc), pr.count, pr.first_off, pr.first);
	w->check_id = cs.txn_id;
	return true;
}

/* After recovery: one more commit on the recovered store, a close and a reopen must keep the model. */
static bool pl_followup(struct wl *w, ms_store *s, const char *img, struct kv *kv, uint64_t id)
{
	tu_rng r = { tu_seed3(w->seed, pl.points, w->images) };
	ms_txn *t = NULL;
	int rc = ms_txn_begin(s, 0, &t);
	PLCHK(w, V_CORRUPT, rc == 0, "after recovery: ms_txn_begin = %d (%s)", rc, ms_strerror(rc));
	unsigned nops = (unsigned)tu_range(&r, 1, 6);
	for (unsigned i = 0; i < nops; i++) {
		unsigned k = (unsigned)tu_below(&r, w->nkeys);
		char key[64];
		size_t klen = wl_key(key, k);
		if (kv[k].present && tu_below(&r, 3) == 0) {
			rc = ms_txn_del(t, key, klen);
			PLCHK(w, V_CORRUPT, rc == 0, "after recovery: ms_txn_del = %d (%s)", rc, ms_strerror(rc));
			kv[k].present = false;
			continue;
		}
		uint32_t len = (uint32_t)(tu_below(&r, 4) == 0 ? tu_range(&r, 4097, 200000) : tu_below(&r, 3000));
		uint64_t vs = tu_seed3(w->seed ^ 0x666f6c6cull, k, tu_next(&r));
		tu_fill(w->fbuf, len, vs);
		rc = ms_txn_put(t, key, klen, w->fbuf, len);
		PLCHK(w, V_CORRUPT, rc == 0, "after recovery: ms_txn_put = %d (%s)", rc, ms_strerror(rc));
		kv[k] = (struct kv){ vs, len, true };
	}
	rc = ms_txn_commit(t);
	PLCHK(w, V_CORRUPT, rc == 0, "after recovery: ms_txn_commit = %d (%s)", rc, ms_strerror(rc));
	const char *diff = pl_compare(w, s, kv);
	PLCHK(w, V_WRONG, !diff, "after recovery of commit %" PRIu64 " and one more commit: %s", id, diff);
	rc = ms_close(s);
	PLCHK(w, V_CORRUPT, rc == 0, "after recovery: ms_close = %d (%s)", rc, ms_strerror(rc));
	if (!pl_check_sound(w, img, "after recovery, a commit and a close"))
		return false;
	ms_options o = { .capacity = w->capacity, .flags = w->flags };
	rc = ms_open(img, &o, &s);
	PLCHK(w, V_CORRUPT, rc == 0, "reopen after recovery = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	diff = pl_compare(w, s, kv);
	if (diff)
		ms_close(s);
	PLCHK(w, V_WRONG, !diff, "reopen after recovery of commit %" PRIu64 " and one more commit: %s", id, diff);
	rc = ms_close(s);
	PLCHK(w, V_CORRUPT, rc == 0, "ms_close = %d (%s)", rc, ms_strerror(rc));
	w->followups++;
	return true;
}

/* Open the image and hold it to the model (the rules are at the top of this file). */
static bool pl_check_open(struct wl *w, const char *img, tu_rng *r, ms_store **sp)
{
	uint64_t lo = wl_lo(w), hi = w->acked + (w->inflight ? 1 : 0);
	ms_options o = { .capacity = w->capacity, .flags = w->flags };
	if (!w->nosync && !pl_check_sound(w, img, "of the crash image"))
		return false;
	int rc = ms_open(img, &o, sp);
	if (w->nosync && rc == MS_ECORRUPT) {
		PLCHK(w, V_LOST, !w->any_synced,
		      "ms_open = MS_ECORRUPT (%s), but commit %" PRIu64 " was made durable by ms_sync or close",
		      ms_last_error(), w->durable);
		w->refused++;
		return true;
	}
	PLCHK(w, V_CORRUPT, rc == 0, "ms_open = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	ms_stats st;
	rc = ms_stat(*sp, &st);
	PLCHK(w, V_CORRUPT, rc == 0, "ms_stat = %d", rc);
	uint64_t id = st.txn_id;
	PLCHK(w, V_CORRUPT, w->nosync || id == w->check_id,
	      "ms_open is at commit %" PRIu64 ", ms_check checked commit %" PRIu64, id, w->check_id);
	PLCHK(w, id < lo ? V_LOST : V_WRONG, id >= lo && id <= hi,
	      "the image opens at commit %" PRIu64 ", allowed %" PRIu64 "..%" PRIu64 " (%s)", id, lo, hi,
	      id < lo ? "a durable commit is lost" : "a commit that was never made");
	const struct kv *kv = wl_state(w, id);
	PLCHK(w, V_WRONG, kv, "no model state for commit %" PRIu64, id);
	const char *diff = pl_compare(w, *sp, kv);
	PLCHK(w, V_WRONG, !diff, "the image opens at commit %" PRIu64 " (allowed %" PRIu64 "..%" PRIu64
	      ") but its content is not that commit's: %s", id, lo, hi, diff);
	if (id > w->acked)
		w->at_inflight++;
	if (id < w->seen_cap && !w->seen_commit[id]) {
		w->seen_commit[id] = 1;
		w->verified_commits++;
	}
	if (tu_below(r, 4) == 0) {
		struct kv *copy = pl_xrealloc(NULL, w->nkeys * sizeof *copy);
		memcpy(copy, kv, w->nkeys * sizeof *copy);
		ms_store *s = *sp;
		*sp = NULL; /* pl_followup closes it */
		bool ok = pl_followup(w, s, img, copy, id);
		free(copy);
		return ok;
	}
	rc = ms_close(*sp);
	*sp = NULL;
	PLCHK(w, V_CORRUPT, rc == 0, "ms_close = %d (%s)", rc, ms_strerror(rc));
	if (w->nosync && !pl_check_sound(w, img, "after recovery and a clean close"))
		return false;
	return true;
}

static void pl_check_image(struct wl *w, const char *img, tu_rng *r)
{
	ms_store *s = NULL;
	if (!pl_check_open(w, img, r, &s) && s)
		ms_close(s); /* a violation was counted; the handle is of no more use */
}

enum { IMG_NONE, IMG_ALL, IMG_RANDOM };

/* Build one crash image from the durable image and a choice for every page changed since. */
static uint64_t pl_compose(struct wl *w, int how, tu_rng *r)
{
	uint64_t size = pl.dur_size;
	if (how == IMG_ALL)
		size = pl.cur_size;
	else if (how == IMG_RANDOM && pl.nsizes) {
		uint64_t c = tu_below(r, 3);
		size = c == 0 ? pl.dur_size : c == 1 ? pl.cur_size : pl.sizes[tu_below(r, pl.nsizes)];
	}
	if (size > w->img_cap) {
		w->img_cap = size;
		w->img = pl_xrealloc(w->img, size);
	}
	uint64_t keep = size < pl.dur_size ? size : pl.dur_size;
	memcpy(w->img, pl.dur, keep);
	if (size > keep)
		memset(w->img + keep, 0, size - keep);
	/* How likely each changed page is written back: all or nothing for some images, else uniform. */
	double p = how == IMG_ALL ? 1.0 : how == IMG_NONE ? 0.0 : (double)tu_below(r, 1001) / 1000.0;
	unsigned torn_in = how == IMG_RANDOM ? (unsigned)tu_range(r, 4, 16) : 0; /* 1 in torn_in is torn */
	unsigned written = 0, torn = 0;
	for (size_t i = 0; i < pl.ndirty && how != IMG_NONE; i++) {
		uint64_t pg = pl.dirty[i];
		if (pg * PL_PAGE >= size || !pl.last[pg])
			continue;
		if (how == IMG_RANDOM && (double)tu_below(r, 1000000) / 1000000.0 >= p)
			continue;
		/* Which version: the newest, or one it had on the way (written back, then changed again). */
		uint32_t vi = pl.last[pg];
		if (how == IMG_RANDOM && tu_below(r, 2)) {
			unsigned n = 0;
			for (uint32_t j = vi; j; j = pl.vers[j - 1].prev)
				n++;
			for (unsigned skip = (unsigned)tu_below(r, n); skip; skip--)
				vi = pl.vers[vi - 1].prev;
		}
		const uint8_t *src = pl.vers[vi - 1].data;
		unsigned mask = (1u << PL_SECTORS) - 1;
		if (torn_in && tu_below(r, torn_in) == 0) {
			mask = (unsigned)tu_range(r, 1, (1u << PL_SECTORS) - 2);
			torn++;
		}
		for (unsigned sct = 0; sct < PL_SECTORS; sct++) {
			uint64_t off = pg * PL_PAGE + sct * PL_SECTOR;
			if (!(mask & (1u << sct)) || off >= size)
				continue;
			uint64_t n = size - off < PL_SECTOR ? size - off : PL_SECTOR;
			memcpy(w->img + off, src + sct * PL_SECTOR, n);
		}
		written++;
	}
	w->torn += torn;
	w->short_size += size < pl.cur_size;
	snprintf(w->desc, sizeof w->desc, "%s, %u of %zu changed pages written back (%u torn), %" PRIu64
	         " bytes (durable %" PRIu64 ", now %" PRIu64 "), acked commit %" PRIu64 "%s",
	         how == IMG_NONE ? "nothing written back" : how == IMG_ALL ? "everything written back" : "random",
	         written, pl.ndirty, torn, size, pl.dur_size, pl.cur_size, w->acked,
	         w->inflight ? " and one in flight" : "");
	return size;
}

static void pl_image(struct wl *w, int how, uint64_t img_seed)
{
	tu_rng r = { img_seed };
	uint64_t size = pl_compose(w, how, &r);
	w->img_size = size;
	const char *img = tu_path("crash.ms");
	pl_rm_image(img);
	int fd = open(img, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0, "create %s: %s", img, strerror(errno));
	cr_assert(tu_write_all(fd, w->img, (size_t)size), "write %s: %s", img, strerror(errno));
	close(fd);
	char d[300];
	snprintf(d, sizeof d, "%s (image seed %#" PRIx64 ")", w->desc, img_seed);
	snprintf(w->desc, sizeof w->desc, "%s", d);
	pl_check_image(w, img, &r);
	pl_rm_image(img);
	w->images++;
	if (how == IMG_NONE)
		w->img_none++;
	else if (how == IMG_ALL)
		w->img_all++;
	else
		w->img_random++;
}

/* A persistence point: record the file, then crash here in a few ways. */
static void pl_point(enum pl_kind k)
{
	struct wl *w = cur_wl;
	pl.busy = true;
	pl_snapshot();
	pl.points++;
	pl.kind_points[k]++;
	pl_cur_kind = k;
	if (w && w->images < w->budget) {
		uint64_t base = tu_seed3(w->seed, pl.points, 0x696d67);
		if (w->last_none_epoch != pl.epoch + 1) {
			w->last_none_epoch = pl.epoch + 1;
			pl_image(w, IMG_NONE, base);
		}
		if (w->last_all_changes != pl.changes) {
			w->last_all_changes = pl.changes;
			pl_image(w, IMG_ALL, base + 1);
		}
		if (pl.ndirty && (double)tu_below(&w->rng, 1000) < w->rate * 1000)
			for (unsigned i = 0; i < w->randoms; i++)
				pl_image(w, IMG_RANDOM, tu_seed3(base, i, 2));
	}
	pl.busy = false;
}

/* ---- the workload ------------------------------------------------------------------------------- */

static void wl_begin_campaign(struct wl *w, const char *name, unsigned nkeys, unsigned weight)
{
	memset(w, 0, sizeof *w);
	w->name = name;
	w->seed = tu_seed3(tu_seed(), (uint64_t)strlen(name), tu_mix64((uint64_t)name[0] << 8 | (uint8_t)name[1]));
	w->rng.s = w->seed;
	w->nkeys = nkeys;
	w->buf = pl_xrealloc(NULL, PL_MAXVAL);
	w->fbuf = pl_xrealloc(NULL, 200000);
	w->work = calloc(nkeys, sizeof *w->work);
	w->rate = 0.5;
	w->randoms = 2;
	/* The binary's images, shared by weight (the weights add up to 26). */
	uint64_t total = tu_env_u64("MS_PL_IMAGES", 3000);
	w->budget = total * weight / 26;
	if (w->budget < 20)
		w->budget = 20;
	w->seen_cap = 1u << 20;
	w->seen_commit = calloc(w->seen_cap, 1);
	w->doing = "setup";
	cr_assert(w->work && w->seen_commit);
}

/* Create the store (not recorded: creation is atomic by rename, not by the model), then record from
 * its first open on, with the created file as the durable image. */
static void wl_start(struct wl *w, unsigned flags, uint64_t capacity)
{
	const char *p = tu_path("s.ms");
	snprintf(pl.path, sizeof pl.path, "%s", p);
	w->flags = flags;
	w->capacity = capacity;
	w->nosync = (flags & MS_NOSYNC) != 0;
	ms_store *s = tu_open(p, MS_CREATE | flags, capacity);
	tu_close(s);
	ms_sys.open = pl_open;
	ms_sys.close = pl_close;
	ms_sys.fdatasync = pl_fdatasync;
	ms_sys.fsync = pl_fsync;
	ms_sys.msync = pl_msync;
	ms_sys.fallocate = pl_fallocate;
	ms_sys.ftruncate = pl_ftruncate;
	ms_sys.pwrite = pl_pwrite;
	ms_sys.mmap = pl_mmap;
	ms_sys.munmap = pl_munmap;
	w->s = tu_open(p, flags, capacity);
	ms_stats st = tu_stat(w->s);
	w->acked = w->durable = st.txn_id;
	wl_push(w, st.txn_id, w->work);
	/* The file as it is now is durable: it was synced before it was renamed into place. */
	pl.busy = true;
	pl_snapshot();
	pl_synced();
	pl.busy = false;
	pl.on = true;
	cur_wl = w;
	w->doing = "idle";
}

static ms_txn *wl_begin(struct wl *w)
{
	ms_txn *t = NULL;
	w->doing = "ms_txn_begin";
	int rc = ms_txn_begin(w->s, 0, &t);
	cr_assert_eq(rc, 0, "[MS_TEST_SEED=%" PRIu64 " %s] ms_txn_begin = %d (%s)", tu_seed(), w->name, rc,
	             ms_strerror(rc));
	memcpy(w->work, wl_state(w, w->acked), w->nkeys * sizeof *w->work);
	w->doing = "a write transaction";
	return t;
}

static uint32_t wl_len(struct wl *w, unsigned small_pct, uint32_t big_max)
{
	uint64_t c = tu_below(&w->rng, 100);
	if (c < small_pct / 2)
		return (uint32_t)tu_range(&w->rng, 1, 64);
	if (c < small_pct)
		return (uint32_t)tu_range(&w->rng, 65, 4096);
	if (c < small_pct + (100 - small_pct) * 3 / 4)
		return (uint32_t)tu_range(&w->rng, 4097, 65536);
	return (uint32_t)tu_range(&w->rng, 65537, big_max);
}

static void wl_put(struct wl *w, ms_txn *t, unsigned k, uint32_t len)
{
	char key[64];
	size_t klen = wl_key(key, k);
	uint64_t vs = tu_seed3(w->seed, k, ++w->opno);
	int rc;
	if (tu_below(&w->rng, 4) == 0) {
		void *dst = NULL;
		rc = ms_txn_reserve(t, key, klen, len, &dst);
		if (rc == 0)
			tu_fill(dst, len, vs);
	} else {
		tu_fill(w->buf, len, vs);
		rc = ms_txn_put(t, key, klen, w->buf, len);
	}
	cr_assert_eq(rc, 0, "[MS_TEST_SEED=%" PRIu64 " %s] put of %u bytes = %d (%s): %s", tu_seed(), w->name,
	             len, rc, ms_strerror(rc), ms_last_error());
	w->work[k] = (struct kv){ vs, len, true };
}

static void wl_del(struct wl *w, ms_txn *t, unsigned k)
{
	char key[64];
	size_t klen = wl_key(key, k);
	int rc = ms_txn_del(t, key, klen);
	cr_assert_eq(rc, w->work[k].present ? 0 : MS_NOTFOUND, "[MS_TEST_SEED=%" PRIu64 " %s] del = %d (%s)",
	             tu_seed(), w->name, rc, ms_strerror(rc));
	w->work[k].present = false;
}

/* A key to change: half the time one that is there (an overwrite or a delete of a live object). */
static unsigned wl_pick(struct wl *w)
{
	unsigned k = (unsigned)tu_below(&w->rng, w->nkeys);
	if (tu_below(&w->rng, 2))
		return k;
	for (unsigned i = 0; i < w->nkeys; i++)
		if (w->work[(k + i) % w->nkeys].present)
			return (k + i) % w->nkeys;
	return k;
}

/* A point that is not a system call: a crash between two calls sees the pages as they are now. */
static void wl_step(struct wl *w)
{
	pl_point(P_STEP);
	(void)w;
}

static void wl_commit(struct wl *w, ms_txn *t)
{
	uint64_t id = w->acked + 1;
	wl_push(w, id, w->work); /* the state the commit may leave on the disk */
	w->inflight = true;
	w->doing = "ms_txn_commit";
	int rc = ms_txn_commit(t);
	w->inflight = false;
	cr_assert_eq(rc, 0, "[MS_TEST_SEED=%" PRIu64 " %s] ms_txn_commit = %d (%s): %s", tu_seed(), w->name, rc,
	             ms_strerror(rc), ms_last_error());
	ms_stats st = tu_stat(w->s);
	if (st.txn_id == w->acked) {
		/* Nothing changed, so no commit was made: the state must be the previous one. */
		wl_pop(w);
		cr_assert(memcmp(w->work, wl_state(w, w->acked), w->nkeys * sizeof *w->work) == 0,
		          "[MS_TEST_SEED=%" PRIu64 " %s] a transaction that changed the model made no commit",
		          tu_seed(), w->name);
	} else {
		cr_assert_eq(st.txn_id, id, "[MS_TEST_SEED=%" PRIu64 " %s] commit id %" PRIu64 ", want %" PRIu64,
		             tu_seed(), w->name, st.txn_id, id);
		w->acked = id;
		if (!w->nosync)
			w->durable = id;
		w->commits++;
		cr_assert(w->nosync || w->nstates >= 1);
		cr_assert(!w->nosync || w->acked - w->durable < PL_RING - 2,
		          "the workload must ms_sync more often than every %u commits", PL_RING - 2);
	}
	w->doing = "idle";
}

static void wl_abort(struct wl *w, ms_txn *t)
{
	w->doing = "ms_txn_abort";
	ms_txn_abort(t);
	w->aborts++;
	w->doing = "idle";
}

static void wl_sync(struct wl *w)
{
	w->doing = "ms_sync";
	int rc = ms_sync(w->s);
	cr_assert_eq(rc, 0, "ms_sync = %d (%s)", rc, ms_strerror(rc));
	w->durable = w->acked;
	w->any_synced = true;
	w->syncs++;
	w->doing = "idle";
}

static void wl_reopen(struct wl *w)
{
	w->doing = "ms_close";
	int rc = ms_close(w->s);
	w->s = NULL;
	cr_assert_eq(rc, 0, "[MS_TEST_SEED=%" PRIu64 " %s] ms_close = %d (%s)", tu_seed(), w->name, rc,
	             ms_strerror(rc));
	w->durable = w->acked;
	w->any_synced = true;
	w->doing = "ms_open";
	ms_options o = { .capacity = w->capacity, .flags = w->flags };
	rc = ms_open(pl.path, &o, &w->s);
	cr_assert_eq(rc, 0, "[MS_TEST_SEED=%" PRIu64 " %s] reopen = %d (%s)", tu_seed(), w->name, rc,
	             ms_strerror(rc));
	ms_stats st = tu_stat(w->s);
	cr_assert_eq(st.txn_id, w->acked);
	w->reopens++;
	w->doing = "idle";
}

/* End of the workload: close, check the file as the disk holds it, report the figures. */
static void wl_finish(struct wl *w)
{
	wl_reopen(w);
	const char *diff = pl_compare(w, w->s, wl_state(w, w->acked));
	cr_assert(!diff, "[MS_TEST_SEED=%" PRIu64 " %s] at the end: %s", tu_seed(), w->name, diff);
	w->doing = "ms_close";
	cr_assert_eq(ms_close(w->s), 0);
	w->s = NULL;
	pl.on = false;
	cur_wl = NULL;
	ms_sys = ms_sys_default;
	fprintf(stderr,
	        "powerloss/%s: %" PRIu64 " crash images (%" PRIu64 " nothing written back, %" PRIu64
	        " everything, %" PRIu64 " random; %" PRIu64 " torn pages, %" PRIu64 " at a lost growth) at %" PRIu64
	        " points (%" PRIu64 " fdatasync, %" PRIu64 " pwrite, %" PRIu64 " fallocate, %" PRIu64
	        " steps); %" PRIu64 " commits, %" PRIu64 " aborts, %" PRIu64 " reopens, %" PRIu64
	        " ms_sync; %" PRIu64 " distinct commits verified, %" PRIu64 " images at the commit in flight, %"
	        PRIu64 " written to after recovery, %" PRIu64 " refused (MS_ECORRUPT); lost %" PRIu64 ", corrupt %"
	        PRIu64 ", wrong %" PRIu64 "\n",
	        w->name, w->images, w->img_none, w->img_all, w->img_random, w->torn, w->short_size, pl.points,
	        pl.kind_points[P_FDATASYNC], pl.kind_points[P_PWRITE], pl.kind_points[P_FALLOCATE],
	        pl.kind_points[P_STEP], w->commits, w->aborts, w->reopens, w->syncs, w->verified_commits,
	        w->at_inflight, w->followups, w->refused, w->bad[V_LOST], w->bad[V_CORRUPT], w->bad[V_WRONG]);
	uint64_t nbad = w->bad[V_CORRUPT] + w->bad[V_LOST] + w->bad[V_WRONG];
	char first[3 * 800] = "";
	for (int c = 0; c < V_KINDS; c++)
		if (w->bad[c])
			snprintf(first + strlen(first), sizeof first - strlen(first), "\n  first %s image: %s",
			         pl_vname[c], w->first_bad[c]);
	for (unsigned i = 0; i < PL_RING; i++)
		free(w->ring[i].kv);
	free(w->work);
	free(w->buf);
	free(w->fbuf);
	free(w->img);
	free(w->seen_commit);
	cr_assert(nbad == 0, "%s: %" PRIu64 " of %" PRIu64 " crash images fail (%" PRIu64 " lost a durable commit, %"
	          PRIu64 " corrupt, %" PRIu64 " wrong content)%s", w->name, nbad, w->images, w->bad[V_LOST],
	          w->bad[V_CORRUPT], w->bad[V_WRONG], first);
}

/* ---- the campaigns, one per workload shape ------------------------------------------------------ */

/* Small commits of one to eight puts, overwrites and deletes of 1 B to 512 KiB. */
Test(powerloss, mixed_commits_open_at_the_acknowledged_or_the_inflight_commit)
{
	struct wl w;
	wl_begin_campaign(&w, "mixed_commits", 256, 8);
	wl_start(&w, 0, 0);
	while (w.images < w.budget) {
		ms_txn *t = wl_begin(&w);
		unsigned n = (unsigned)tu_range(&w.rng, 1, 8);
		for (unsigned i = 0; i < n; i++) {
			unsigned k = wl_pick(&w);
			if (w.work[k].present && tu_below(&w.rng, 4) == 0)
				wl_del(&w, t, k);
			else
				wl_put(&w, t, k, tu_below(&w.rng, 50) == 0 ? 0 : wl_len(&w, 70, 512u << 10));
		}
		wl_commit(&w, t);
	}
	wl_finish(&w);
}

/* Objects of 256 KiB to 4 MiB beside small ones: the file grows by fallocate in steps, large extents
 * are freed and reused. */
Test(powerloss, large_objects_and_file_growth)
{
	struct wl w;
	wl_begin_campaign(&w, "large_objects", 24, 3);
	w.rate = 0.35;
	wl_start(&w, 0, 0);
	while (w.images < w.budget) {
		ms_txn *t = wl_begin(&w);
		unsigned n = (unsigned)tu_range(&w.rng, 1, 3);
		for (unsigned i = 0; i < n; i++) {
			unsigned k = wl_pick(&w);
			if (w.work[k].present && tu_below(&w.rng, 3) == 0)
				wl_del(&w, t, k);
			else if (k < 5)
				wl_put(&w, t, k, (uint32_t)tu_range(&w.rng, 256u << 10, PL_MAXVAL));
			else
				wl_put(&w, t, k, wl_len(&w, 60, 256u << 10));
		}
		wl_commit(&w, t);
	}
	wl_finish(&w);
}

/* Hundreds to thousands of puts and deletes in one commit, with crash points inside the transaction. */
Test(powerloss, long_transactions_are_whole_or_absent)
{
	struct wl w;
	wl_begin_campaign(&w, "long_transactions", 4096, 4);
	w.rate = 0.6;
	w.randoms = 3;
	wl_start(&w, 0, 0);
	while (w.images < w.budget) {
		ms_txn *t = wl_begin(&w);
		unsigned n = (unsigned)tu_range(&w.rng, 100, 2000);
		for (unsigned i = 0; i < n; i++) {
			unsigned k = (unsigned)tu_below(&w.rng, w.nkeys);
			if (w.work[k].present && tu_below(&w.rng, 5) == 0)
				wl_del(&w, t, k);
			else
				wl_put(&w, t, k, wl_len(&w, 90, 128u << 10));
			if (i % 500 == 499)
				wl_step(&w);
		}
		if (tu_below(&w.rng, 6) == 0)
			wl_abort(&w, t);
		else
			wl_commit(&w, t);
	}
	wl_finish(&w);
}

/* Aborted transactions (some of which grew the file), clean closes (each writes an allocator
 * checkpoint: crash images inside it) and reopens that load it, in a store with a capacity. */
Test(powerloss, aborts_closes_and_reopens)
{
	struct wl w;
	wl_begin_campaign(&w, "aborts_and_reopens", 512, 6);
	wl_start(&w, 0, 64ull << 20);
	while (w.images < w.budget) {
		unsigned c = (unsigned)tu_below(&w.rng, 100);
		if (c < 10) {
			wl_reopen(&w);
			continue;
		}
		ms_txn *t = wl_begin(&w);
		unsigned n = (unsigned)tu_range(&w.rng, 1, 12);
		for (unsigned i = 0; i < n; i++) {
			unsigned k = wl_pick(&w);
			if (w.work[k].present && tu_below(&w.rng, 4) == 0)
				wl_del(&w, t, k);
			else
				wl_put(&w, t, k, wl_len(&w, 75, c < 35 ? (2u << 20) : (256u << 10)));
		}
		if (c < 35)
			wl_abort(&w, t);
		else
			wl_commit(&w, t);
	}
	wl_finish(&w);
}

/* MS_NOSYNC: commits without syncs, ms_sync now and then, closes and reopens. */
Test(powerloss, nosync_mode_opens_at_a_whole_earlier_commit_or_refuses)
{
	struct wl w;
	wl_begin_campaign(&w, "nosync", 256, 5);
	wl_start(&w, MS_NOSYNC, 0);
	while (w.images < w.budget) {
		unsigned c = (unsigned)tu_below(&w.rng, 100);
		if (c < 4) {
			wl_reopen(&w);
			continue;
		}
		if (c < 20 || w.acked - w.durable > 24) {
			wl_sync(&w);
			continue;
		}
		ms_txn *t = wl_begin(&w);
		unsigned n = (unsigned)tu_range(&w.rng, 1, 8);
		for (unsigned i = 0; i < n; i++) {
			unsigned k = wl_pick(&w);
			if (w.work[k].present && tu_below(&w.rng, 4) == 0)
				wl_del(&w, t, k);
			else
				wl_put(&w, t, k, wl_len(&w, 70, 256u << 10));
		}
		if (tu_below(&w.rng, 10) == 0)
			wl_abort(&w, t);
		else
			wl_commit(&w, t);
		if (tu_below(&w.rng, 3) == 0)
			wl_step(&w);
	}
	wl_finish(&w);
}

/* ---- the MS_NOSYNC failures the campaign finds, reduced to a few calls ---------------------------- */

/* A crash image: the file as a completed ms_sync left it (`durable`, `dlen` bytes) with the two meta
 * pages as the page cache holds them now (the kernel wrote back only those). Returns its path. */
static const char *pl_meta_only_image(const char *path, const unsigned char *durable, size_t dlen)
{
	size_t nlen;
	unsigned char *now = tu_read_file(path, &nlen);
	cr_assert(now && nlen >= 2 * PL_PAGE && dlen >= 2 * PL_PAGE);
	unsigned char *img = malloc(dlen);
	cr_assert(img);
	memcpy(img, durable, dlen);
	memcpy(img, now, 2 * PL_PAGE);
	const char *ip = tu_path("crash.ms");
	cr_assert(tu_write_file(ip, img, dlen));
	free(img);
	free(now);
	return ip;
}

/* Commit 1 puts k = A and is made durable by ms_sync; commits 2 and 3 overwrite k with B and C (same
 * length). Commit 2 frees A's block and commit 3 reuses it at once. If only the meta pages reach the
 * disk, the image's newest meta (commit 3) points at that block, which still holds A with a valid
 * checksum: the store must not open at commit 3 with k = A, a state no commit had. */
Test(powerloss, nosync_crash_never_shows_an_older_value_under_a_newer_commit)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	char v[3][100];
	for (int i = 0; i < 3; i++)
		memset(v[i], 'A' + i, sizeof v[i]);
	tu_put(s, "k", v[0], 100);
	cr_assert_eq(ms_sync(s), 0);
	size_t dlen;
	unsigned char *durable = tu_read_file(p, &dlen);
	cr_assert(durable);
	tu_put(s, "k", v[1], 100);
	tu_put(s, "k", v[2], 100);
	const char *ip = pl_meta_only_image(p, durable, dlen);
	free(durable);
	ms_store *r = NULL;
	int rc = ms_open(ip, &(ms_options){ .flags = MS_NOSYNC }, &r);
	if (rc == 0) {
		ms_stats st = tu_stat(r);
		char got[100];
		size_t vlen = 0;
		cr_assert_eq(ms_get(r, "k", 1, got, sizeof got, &vlen), 0);
		cr_assert(st.txn_id >= 1 && st.txn_id <= 3, "the image opens at commit %" PRIu64, st.txn_id);
		cr_assert(vlen == 100 && memcmp(got, v[st.txn_id - 1], 100) == 0,
		          "the image opens at commit %" PRIu64 ", which set k = %c, but k = %c (commit %d's value)",
		          st.txn_id, 'A' + (int)st.txn_id - 1, vlen ? got[0] : '-', vlen ? got[0] - 'A' + 1 : 0);
		tu_close(r);
	}
	tu_close(s);
}

/* Commit 1 is made durable by ms_sync (mstore.h: "every commit so far durable"); commits 2 and 3 grow
 * the file and overwrite both meta pages. If the growth does not reach the disk but the meta pages
 * do, neither meta fits the file: commit 1 must still open. */
Test(powerloss, nosync_commit_made_durable_by_ms_sync_survives_two_later_commits)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	tu_puts(s, "k", "synced");
	cr_assert_eq(ms_sync(s), 0);
	size_t dlen;
	unsigned char *durable = tu_read_file(p, &dlen);
	cr_assert(durable);
	unsigned char *big = calloc(1, 2u << 20);
	cr_assert(big);
	tu_put(s, "big1", big, 2u << 20);
	tu_put(s, "big2", big, 2u << 20);
	free(big);
	const char *ip = pl_meta_only_image(p, durable, dlen);
	free(durable);
	ms_store *r = NULL;
	int rc = ms_open(ip, &(ms_options){ .flags = MS_NOSYNC }, &r);
	cr_assert_eq(rc, 0, "the commit ms_sync made durable is lost: ms_open = %d (%s): %s", rc, ms_strerror(rc),
	             ms_last_error());
	tu_expect_str(r, "k", "synced");
	tu_close(r);
	tu_close(s);
}
