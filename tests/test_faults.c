/* tests/test_faults.c - failures the store must survive without lying or corrupting: a full disk and
 * failed growth (fallocate, ftruncate), a real full disk (a small tmpfs in a mount namespace), failed
 * syncs at every sync call site (commits, ms_sync in both modes, close, create), failed mmap/munmap,
 * failed fstat, flock and fcntl locks at open and a failed rename (or link) at create, a
 * failed allocation at every malloc/calloc/realloc the library makes (a sweep), and a file truncated
 * under the store by another process (SIGBUS). System calls are failed through the store/sys.c seam
 * (ms_sys), the one way the tests inject faults; allocations through the linker's --wrap
 * (tests/CMakeLists.txt), which only this executable and the static library it links see:
 * Criterion's own allocations are not counted.
 */
#include "testutil.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <setjmp.h>
#include <signal.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "internal.h"

static void faults_fini(void);
TestSuite(faults, .init = tu_setup, .fini = faults_fini, .timeout = 300);

/* ---- the system-call seam ------------------------------------------------------------------------ */

/* One kind of call to fail: let `skip` calls through, then fail `times` calls (-1: every one) with
 * errno `err`. `calls` counts every call, `fired` the failed ones. */
struct fault {
	int skip, times, err;
	int calls, fired;
};

static struct fault f_falloc, f_datasync, f_fsync, f_ftrunc, f_mmap, f_munmap, f_pwrite;
static struct fault f_fstat, f_rename, f_link, f_flock, f_fcntl;
static bool falloc_partial;      /* a failing fallocate first extends the file by half the range */
static uint64_t mmap_max_len;    /* mmap of more bytes than this fails with ENOMEM (0: no limit) */
static bool falloc_sparse;       /* fallocate only sets the size (ftruncate): growth costs no disk */

static void fault_set(struct fault *f, int skip, int times, int err)
{
	f->skip = skip;
	f->times = times;
	f->err = err;
	f->calls = f->fired = 0;
}

static bool fault_hit(struct fault *f)
{
	f->calls++;
	if (f->times == 0)
		return false;
	if (f->skip > 0) {
		f->skip--;
		return false;
	}
	if (f->times > 0)
		f->times--;
	f->fired++;
	return true;
}

static int x_fallocate(int fd, off_t off, off_t len)
{
	if (fault_hit(&f_falloc)) {
		if (falloc_partial && len >= 2 * (off_t)MS_PAGE)
			ms_sys_default.fallocate(fd, off, len / 2 / MS_PAGE * MS_PAGE);
		return f_falloc.err;
	}
	if (falloc_sparse) {
		struct stat sb;
		if (fstat(fd, &sb))
			return errno;
		if (sb.st_size < off + len && ftruncate(fd, off + len))
			return errno;
		return 0;
	}
	return ms_sys_default.fallocate(fd, off, len);
}

static int datasync_signal_fd = -1;  /* a byte is written here as a slow fdatasync begins */
static unsigned datasync_delay_ms;   /* each fdatasync first sleeps this long */

static int x_fdatasync(int fd)
{
	if (datasync_delay_ms) {
		if (datasync_signal_fd >= 0 && write(datasync_signal_fd, "s", 1) != 1)
			return -1;
		struct timespec ts = { (time_t)(datasync_delay_ms / 1000), (long)(datasync_delay_ms % 1000) * 1000000 };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	if (fault_hit(&f_datasync)) {
		errno = f_datasync.err;
		return -1;
	}
	return ms_sys_default.fdatasync(fd);
}

static int x_fsync(int fd)
{
	if (fault_hit(&f_fsync)) {
		errno = f_fsync.err;
		return -1;
	}
	return ms_sys_default.fsync(fd);
}

static int x_ftruncate(int fd, off_t len)
{
	if (fault_hit(&f_ftrunc)) {
		errno = f_ftrunc.err;
		return -1;
	}
	return ms_sys_default.ftruncate(fd, len);
}

static void *x_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if ((mmap_max_len && len > mmap_max_len) || fault_hit(&f_mmap)) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return ms_sys_default.mmap(addr, len, prot, flags, fd, off);
}

static int x_munmap(void *addr, size_t len)
{
	if (fault_hit(&f_munmap)) {
		errno = f_munmap.err;
		return -1; /* the mapping stays: a leak of address space, never of memory contents */
	}
	return ms_sys_default.munmap(addr, len);
}

static ssize_t x_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	if (fault_hit(&f_pwrite)) {
		errno = f_pwrite.err;
		return -1;
	}
	return ms_sys_default.pwrite(fd, buf, len, off);
}

/* The calls that name, stat and lock files: fail, or pass on to the default. */
#define FAIL_OR(f, call)                      \
	do {                                  \
		if (fault_hit(&(f))) {        \
			errno = (f).err;      \
			return -1;            \
		}                             \
		return ms_sys_default.call;   \
	} while (0)
static int x_fstat(int fd, struct stat *sb) { FAIL_OR(f_fstat, fstat(fd, sb)); }
static int x_rename(const char *from, const char *to) { FAIL_OR(f_rename, rename_noreplace(from, to)); }
static int x_link(const char *from, const char *to) { FAIL_OR(f_link, link(from, to)); }
static int x_flock(int fd, int op) { FAIL_OR(f_flock, flock(fd, op)); }
static int x_fcntl_lock(int fd, int cmd, struct flock *fl) { FAIL_OR(f_fcntl, fcntl_lock(fd, cmd, fl)); }

/* Route the seam through the fault points (all passing until armed). */
static void seam_on(void)
{
	struct fault *all[] = { &f_falloc, &f_datasync, &f_fsync, &f_ftrunc, &f_mmap,  &f_munmap,
				&f_pwrite, &f_fstat,    &f_rename, &f_link,   &f_flock, &f_fcntl };
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		fault_set(all[i], 0, 0, 0);
	falloc_partial = falloc_sparse = false;
	mmap_max_len = 0;
	ms_sys.fallocate = x_fallocate;
	ms_sys.fdatasync = x_fdatasync;
	ms_sys.fsync = x_fsync;
	ms_sys.ftruncate = x_ftruncate;
	ms_sys.mmap = x_mmap;
	ms_sys.munmap = x_munmap;
	ms_sys.pwrite = x_pwrite;
	ms_sys.fstat = x_fstat;
	ms_sys.rename_noreplace = x_rename;
	ms_sys.link = x_link;
	ms_sys.flock = x_flock;
	ms_sys.fcntl_lock = x_fcntl_lock;
}

static void seam_off(void) { ms_sys = ms_sys_default; }

/* ---- a model of the committed contents ----------------------------------------------------------- */

#define MAXKEYS 64u
struct model {
	bool present[MAXKEYS];
	uint64_t seed[MAXKEYS];
	size_t len[MAXKEYS];
};

static size_t key_of(char *buf, unsigned i) { return (size_t)snprintf(buf, 16, "key%02u", i); }

static unsigned char vbuf[16u << 20];

static int put_i(ms_store *s, unsigned i, size_t len, uint64_t seed)
{
	char k[16];
	size_t kl = key_of(k, i);
	tu_fill(vbuf, len, seed);
	return ms_put(s, k, kl, vbuf, len);
}

static int txn_put_i(ms_txn *t, unsigned i, size_t len, uint64_t seed)
{
	char k[16];
	size_t kl = key_of(k, i);
	tu_fill(vbuf, len, seed);
	return ms_txn_put(t, k, kl, vbuf, len);
}

static void model_set(struct model *m, unsigned i, size_t len, uint64_t seed)
{
	m->present[i] = true;
	m->len[i] = len;
	m->seed[i] = seed;
}

/* The store holds exactly the model: every key present with its bytes, nothing else. */
static void expect_model(ms_store *s, const struct model *m, const char *when)
{
	ms_txn *t = tu_begin(s, MS_READONLY);
	uint64_t want = 0;
	for (unsigned i = 0; i < MAXKEYS; i++) {
		char k[16];
		size_t kl = key_of(k, i);
		ms_val v;
		int rc = ms_txn_get(t, k, kl, &v);
		if (!m->present[i]) {
			cr_assert_eq(rc, MS_NOTFOUND, "%s: %s should be absent, got %d (%s)", when, k, rc, ms_strerror(rc));
			continue;
		}
		want++;
		cr_assert_eq(rc, 0, "%s: %s should be there, got %d (%s): %s", when, k, rc, ms_strerror(rc),
			     ms_last_error());
		cr_assert(v.len == m->len[i] && tu_check_fill(v.data, v.len, m->seed[i]), "%s: %s has wrong bytes",
			  when, k);
	}
	ms_iter *it;
	cr_assert_eq(ms_iter_open(t, &it), 0);
	uint64_t n = 0;
	ms_val k, v;
	int rc;
	while ((rc = ms_iter_next(it, &k, &v)) == 0)
		n++;
	cr_assert_eq(rc, MS_NOTFOUND, "%s: iteration ended with %d (%s)", when, rc, ms_strerror(rc));
	cr_assert_eq(n, want, "%s: iteration gives %" PRIu64 " objects, want %" PRIu64, when, n, want);
	ms_iter_close(it);
	ms_txn_abort(t);
	cr_assert_eq(tu_stat(s).objects, want, "%s: ms_stat objects", when);
}

/* Reopen without faults: exactly the model, and ms_check finds nothing. */
static void reopen_expect(const char *p, const struct model *m, const char *when)
{
	struct ms_sys saved = ms_sys;
	seam_off();
	ms_store *s = tu_open(p, 0, 0);
	expect_model(s, m, when);
	tu_close(s);
	tu_check_sound(p);
	ms_sys = saved;
}

/* No temporary file of a failed creation is left in the test's folder. */
static void expect_no_leftovers(const char *keep1, const char *keep2)
{
	DIR *d = opendir(tu_dir);
	cr_assert_not_null(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (keep1 && !strcmp(e->d_name, keep1)) ||
		    (keep2 && !strcmp(e->d_name, keep2)))
			continue;
		cr_assert(strstr(e->d_name, ".new.") == NULL, "a failed creation left %s behind", e->d_name);
	}
	closedir(d);
}

static void faults_fini(void)
{
	seam_off();
	tu_teardown();
}

/* ---- 1. a full disk and failed growth ------------------------------------------------------------ */

/* The store with keys 0..9 committed (small values), durable mode; the model says so. */
static ms_store *ten_keys(const char *p, struct model *m, unsigned flags)
{
	memset(m, 0, sizeof *m);
	ms_store *s = tu_open(p, MS_CREATE | flags, 0);
	for (unsigned i = 0; i < 10; i++) {
		cr_assert_eq(put_i(s, i, 100 + 50 * i, i), 0);
		model_set(m, i, 100 + 50 * i, i);
	}
	return s;
}

static void enospc_keeps_the_store_usable(bool partial)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	struct stat before, after;
	cr_assert_eq(stat(p, &before), 0);
	falloc_partial = partial;
	fault_set(&f_falloc, 0, -1, ENOSPC);
	/* A value that needs growth fails, one-shot and in a transaction ... */
	int rc = put_i(s, 20, 8u << 20, 20);
	cr_assert_eq(rc, MS_ENOSPC, "a put needing growth on a full disk = %d (%s)", rc, ms_strerror(rc));
	cr_assert_gt(f_falloc.fired, 0, "the put never tried to grow the file");
	ms_txn *t = tu_begin(s, 0);
	cr_assert_eq(txn_put_i(t, 21, 8u << 20, 21), MS_ENOSPC);
	/* ... the transaction stays usable: what fits goes in, reads see its own writes ... */
	rc = txn_put_i(t, 3, 64, 333);
	cr_assert(rc == 0 || rc == MS_ENOSPC, "a small put on a full disk = %d (%s)", rc, ms_strerror(rc));
	if (rc == 0)
		model_set(&m, 3, 64, 333);
	cr_assert_eq(ms_txn_del(t, "key04", 5), 0, "a delete in a transaction on a full disk");
	m.present[4] = false;
	tu_commit(t);
	/* ... the store serves reads and deletes ... */
	expect_model(s, &m, "on the full disk");
	cr_assert_eq(ms_del(s, "key05", 5), 0, "ms_del on a full disk");
	m.present[5] = false;
	expect_model(s, &m, "after a delete on the full disk");
	if (partial) {
		cr_assert_eq(stat(p, &after), 0);
		cr_assert_gt(after.st_size, before.st_size, "the partial fallocate did not extend the file");
	}
	/* ... and once the disk has room again, the same put succeeds. */
	fault_set(&f_falloc, 0, 0, 0);
	cr_assert_eq(put_i(s, 20, 8u << 20, 20), 0, "the put once the disk has room: %s", ms_last_error());
	model_set(&m, 20, 8u << 20, 20);
	expect_model(s, &m, "after the disk has room again");
	tu_close(s);
	reopen_expect(p, &m, "after reopen");
}

Test(faults, enospc_from_fallocate_fails_the_put_and_the_store_stays_usable)
{
	enospc_keeps_the_store_usable(false);
}

Test(faults, disk_full_in_the_middle_of_growth_fails_the_put_and_the_store_stays_usable)
{
	enospc_keeps_the_store_usable(true);
}

Test(faults, growth_that_fails_once_after_a_partial_extension_falls_back_to_what_is_needed)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	falloc_partial = true;
	fault_set(&f_falloc, 0, 1, ENOSPC);
	cr_assert_eq(put_i(s, 20, 4u << 20, 20), 0, "growth retried with only what is needed: %s", ms_last_error());
	cr_assert_eq(f_falloc.fired, 1);
	model_set(&m, 20, 4u << 20, 20);
	expect_model(s, &m, "after the retried growth");
	tu_close(s);
	reopen_expect(p, &m, "after reopen");
}

Test(faults, other_fallocate_errors_are_reported_and_the_store_stays_usable)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	const int errs[] = { EFBIG, EDQUOT, EIO, EINVAL, EOPNOTSUPP };
	const int want[] = { MS_ENOSPC, MS_ENOSPC, MS_EIO, MS_EIO, MS_EIO };
	for (unsigned i = 0; i < sizeof errs / sizeof errs[0]; i++) {
		fault_set(&f_falloc, 0, -1, errs[i]);
		int rc = put_i(s, 30, 8u << 20, 30);
		cr_assert_eq(rc, want[i], "growth failing with %s = %d (%s), want %d", strerror(errs[i]), rc,
			     ms_strerror(rc), want[i]);
		cr_assert_neq(strstr(ms_last_error(), "fallocate"), NULL, "ms_last_error() = \"%s\"", ms_last_error());
		expect_model(s, &m, "after a failed growth");
	}
	fault_set(&f_falloc, 0, 0, 0);
	cr_assert_eq(put_i(s, 30, 8u << 20, 30), 0);
	model_set(&m, 30, 8u << 20, 30);
	tu_close(s);
	reopen_expect(p, &m, "after reopen");
}

/* A new store s (at p) takes a commit, and a reopen shows it. */
static void commit_and_reopen(ms_store *s, const char *p, const char *what)
{
	struct model m = { 0 };
	cr_assert_eq(put_i(s, 1, 10, 1), 0);
	model_set(&m, 1, 10, 1);
	tu_close(s);
	reopen_expect(p, &m, what);
}

Test(faults, fallocate_failing_at_create_leaves_no_file)
{
	const char *p = tu_path("s.ms");
	seam_on();
	ms_options o = { .flags = MS_CREATE };
	ms_store *s = NULL;
	fault_set(&f_falloc, 0, -1, ENOSPC);
	int rc = ms_open(p, &o, &s);
	cr_assert_eq(rc, MS_ENOSPC, "create on a full disk = %d (%s)", rc, ms_strerror(rc));
	cr_assert_null(s);
	cr_assert_eq(access(p, F_OK), -1, "a failed create left the store file");
	expect_no_leftovers(NULL, "s.ms-lock");
	fault_set(&f_falloc, 0, 0, 0);
	commit_and_reopen(tu_open(p, MS_CREATE, 0), p, "created after the disk had room");
}

/* Open of the store with keys 0..9 while `f` fails every call with `err`: MS_EIO (naming the file),
 * no handle, the store file unchanged, and it opens again once the call works. */
static void open_fails_on(struct fault *f, int err, const char *what)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	tu_close(s);
	tu_image img;
	cr_assert(tu_image_take(p, &img));
	fault_set(f, 0, -1, err);
	ms_options o = { 0 };
	s = NULL;
	int rc = ms_open(p, &o, &s);
	cr_assert_eq(rc, MS_EIO, "open whose %s fails = %d (%s)", what, rc, ms_strerror(rc));
	cr_assert_null(s);
	cr_assert_gt(f->fired, 0, "open made no %s", what);
	cr_assert(strstr(ms_last_error(), p) != NULL, "the error of a failed %s does not name the file: %s", what,
		  ms_last_error());
	const char *d = tu_image_diff(p, &img);
	cr_assert_null(d, "the open whose %s failed changed the store: %s", what, d);
	tu_image_free(&img);
	fault_set(f, 0, 0, 0);
	reopen_expect(p, &m, "after the failed open");
}

Test(faults, ftruncate_failing_at_open_is_eio_and_changes_nothing)
{
	open_fails_on(&f_ftrunc, EIO, "ftruncate of the lock file");
}

Test(faults, fallocate_failing_at_close_costs_only_the_checkpoint)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	/* Fill the free tail, so the checkpoint block needs growth. */
	for (unsigned i = 10; i < 40; i++) {
		cr_assert_eq(put_i(s, i, 30000 + i, i), 0);
		model_set(&m, i, 30000 + i, i);
	}
	fault_set(&f_falloc, 0, -1, ENOSPC);
	cr_assert_eq(ms_close(s), 0, "a close with no room for a checkpoint still succeeds");
	reopen_expect(p, &m, "after a close on a full disk");
}

/* A real full disk: a small tmpfs, filled with values of 64 KiB until a put is MS_ENOSPC. Then the
 * store serves reads, a transaction stays usable, and rounds of deleting half and putting as many new
 * objects of the same size succeed; a reopen shows them all. The seam is left as it is (ms_sys_default):
 * the file system itself says it is full. */

/* Mount a small tmpfs on dir in a mount namespace of this test process alone (it vanishes with the
 * process, even after a crash). False when that is not allowed (not root, no namespaces). */
static bool small_fs(const char *dir, const char *size)
{
	if (unshare(CLONE_NEWNS) != 0)
		return false;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return false;
	char opts[64];
	snprintf(opts, sizeof opts, "size=%s,mode=0700", size);
	return mount("tmpfs", dir, "tmpfs", 0, opts) == 0;
}

static void full_disk(unsigned flags)
{
	const char *d = tu_path("fs");
	cr_assert_eq(mkdir(d, 0700), 0);
	if (!small_fs(d, "3m")) {
		cr_skip_test("cannot mount a small tmpfs here (needs root and mount namespaces)");
		return;
	}
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/s.ms", d);
	enum { VLEN = 65536, MAXN = 200 };
	static unsigned char buf[VLEN];
	ms_store *s = tu_open(p, MS_CREATE | flags, 0);
	unsigned n = 0;
	int rc = 0;
	char k[16];
	for (; n < MAXN; n++) {
		snprintf(k, sizeof k, "f%05u", n);
		tu_fill(buf, VLEN, n);
		rc = ms_put(s, k, strlen(k), buf, VLEN);
		if (rc)
			break;
	}
	cr_assert_eq(rc, MS_ENOSPC, "filling a 3 MiB file system ended with %d (%s) after %u puts", rc, ms_strerror(rc), n);
	cr_assert_gt(n, 8, "only %u values of 64 KiB fit on a 3 MiB file system", n);
	tu_expect_absent(s, k);
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, k, strlen(k), buf, VLEN), MS_ENOSPC, "a put in a transaction on a full disk");
	ms_val v;
	cr_assert_eq(ms_txn_get(w, "f00000", 6, &v), 0, "the transaction stays usable after MS_ENOSPC");
	ms_txn_abort(w);
	for (unsigned i = 0; i < n; i++) {
		snprintf(k, sizeof k, "f%05u", i);
		size_t vlen = 0;
		cr_assert_eq(ms_get(s, k, strlen(k), buf, VLEN, &vlen), 0);
		cr_assert(vlen == VLEN && tu_check_fill(buf, VLEN, i), "%s is wrong on a full disk", k);
	}
	/* Rounds of: delete half (alternating slots), put as many new objects of the same size. */
	static char names[MAXN][8];
	static unsigned seeds[MAXN];
	for (unsigned i = 0; i < n; i++) {
		snprintf(names[i], sizeof names[i], "f%05u", i);
		seeds[i] = i;
	}
	for (unsigned round = 0; round < 4; round++) {
		unsigned deleted = 0;
		for (unsigned i = 0; i < n; i++) {
			if ((i + round) % 2)
				continue;
			rc = ms_del(s, names[i], 6);
			cr_assert_eq(rc, 0, "round %u: ms_del(%s) on a full disk = %d (%s)", round, names[i], rc, ms_strerror(rc));
			deleted++;
		}
		unsigned put = 0;
		for (unsigned i = 0; i < n; i++) {
			if ((i + round) % 2)
				continue;
			snprintf(names[i], sizeof names[i], "%c%05u", 'g' + round, i);
			seeds[i] = 50000u * (round + 1) + i;
			tu_fill(buf, VLEN, seeds[i]);
			rc = ms_put(s, names[i], 6, buf, VLEN);
			cr_assert_eq(rc, 0,
				     "round %u: after deleting %u of %u objects on a full disk, new object %u (%s) of the same size: "
				     "%d (%s)", round, deleted, n, put + 1, names[i], rc, ms_strerror(rc));
			put++;
		}
	}
	tu_close(s);
	s = tu_open(p, flags, 0);
	cr_assert_eq(tu_stat(s).objects, n);
	for (unsigned i = 0; i < n; i++) {
		size_t vlen = 0;
		cr_assert_eq(ms_get(s, names[i], 6, buf, VLEN, &vlen), 0, "%s after reopen", names[i]);
		cr_assert(vlen == VLEN && tu_check_fill(buf, VLEN, seeds[i]), "%s is wrong after reopen", names[i]);
	}
	tu_close(s);
	tu_check_sound(p);
}

/* Unmount the small file system first, or its mount point could not be removed. */
static void full_disk_teardown(void)
{
	umount2(tu_path("fs"), MNT_DETACH);
	faults_fini();
}

Test(faults, full_disk_is_enospc_and_the_store_stays_usable, .fini = full_disk_teardown)
{
	full_disk(0);
}

Test(faults, full_disk_is_enospc_and_the_store_stays_usable_in_nosync_mode, .fini = full_disk_teardown)
{
	full_disk(MS_NOSYNC);
}


/* ---- 2. failed syncs ----------------------------------------------------------------------------- */

/* After a failed sync: commits refused (MS_EIO) however the syncs behave now, reads go on. */
static void expect_refusing(ms_store *s, const struct model *m)
{
	int rc = put_i(s, 50, 10, 50);
	cr_assert_eq(rc, MS_EIO, "a commit after a failed sync = %d (%s)", rc, ms_strerror(rc));
	cr_assert_eq(ms_del(s, "key00", 5), MS_EIO, "a delete after a failed sync");
	ms_txn *w = NULL;
	cr_assert_eq(ms_txn_begin(s, 0, &w), MS_EIO, "a write transaction after a failed sync");
	cr_assert_eq(ms_sync(s), MS_EIO, "ms_sync after a failed sync pretends");
	expect_model(s, m, "reads after a failed sync");
}

/* The commit's n-th fdatasync fails. The first commit after an open syncs twice (0: the data, 1: the
 * meta page); a later one (reopen false) once, its meta page listing what it wrote (0). */
static void failed_commit_sync(int which, bool reopen)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	if (reopen) {
		tu_close(s);
		s = tu_open(p, 0, 0);
	}
	ms_txn *t = tu_begin(s, 0);
	cr_assert_eq(txn_put_i(t, 11, 5000, 11), 0);
	cr_assert_eq(txn_put_i(t, 2, 70, 222), 0);
	cr_assert_eq(ms_txn_del(t, "key03", 5), 0);
	fault_set(&f_datasync, which, 1, EIO);
	int rc = ms_txn_commit(t);
	cr_assert_eq(f_datasync.fired, 1, "the commit made fewer than %d syncs", which + 1);
	cr_assert_eq(rc, MS_EIO, "a commit whose sync %d failed = %d (%s)", which, rc, ms_strerror(rc));
	cr_assert_neq(strstr(ms_last_error(), "fdatasync"), NULL, "ms_last_error() = \"%s\"", ms_last_error());
	expect_model(s, &m, "after the failed commit"); /* nothing of t */
	expect_refusing(s, &m);
	rc = ms_close(s);
	cr_assert(rc == 0 || rc == MS_EIO, "ms_close after a failed sync = %d", rc);
	reopen_expect(p, &m, "after reopen: every acknowledged commit, nothing of the failed one");
	s = tu_open(p, 0, 0);
	cr_assert_eq(put_i(s, 12, 10, 12), 0, "commits work again after the reopen");
	model_set(&m, 12, 10, 12);
	tu_close(s);
	reopen_expect(p, &m, "after a commit following the reopen");
}

Test(faults, failed_sync_of_the_commit_data_is_eio_and_refuses_commits_until_reopen)
{
	failed_commit_sync(0, true);
}

Test(faults, failed_sync_of_the_commit_meta_is_eio_and_the_commit_stays_invisible)
{
	failed_commit_sync(1, true);
}

Test(faults, failed_single_sync_of_a_commit_with_a_record_is_eio_and_the_commit_stays_invisible)
{
	failed_commit_sync(0, false);
}

/* The fdatasync calls of one commit of store s. */
static int syncs_of_put(ms_store *s, unsigned i, size_t len)
{
	fault_set(&f_datasync, 0, 0, 0);
	cr_assert_eq(put_i(s, i, len, i), 0);
	return f_datasync.calls;
}

/* Two syncs for the first commit of a handle, one over its own durable commit, two again over another
 * handle's commit and for a commit too large for a record. */
Test(faults, a_durable_commit_syncs_once_over_its_handles_own_durable_commit)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	tu_close(ten_keys(p, &m, 0));
	ms_store *a = tu_open(p, 0, 0), *b = tu_open(p, 0, 0);
	cr_assert_eq(syncs_of_put(a, 1, 100), 2, "the first commit of a handle");
	cr_assert_eq(syncs_of_put(a, 2, 100), 1, "a commit over the handle's own");
	cr_assert_eq(syncs_of_put(a, 3, 100), 1, "the next one");
	cr_assert_eq(syncs_of_put(b, 4, 100), 2, "a commit over another handle's commit");
	cr_assert_eq(syncs_of_put(b, 5, 100), 1, "and the one after it");
	cr_assert_eq(syncs_of_put(a, 6, 100), 2, "back over the other handle's commit");
	cr_assert_eq(syncs_of_put(a, 7, (size_t)MS_REC_MAX_BYTES + 1), 2, "a commit past the record's bytes");
	ms_txn *t = tu_begin(a, 0);
	for (unsigned i = 0; i < MS_REC_MAX; i++) { /* more blocks than a record lists: an object each */
		char k[16];
		snprintf(k, sizeof k, "many%03u", i);
		cr_assert_eq(ms_txn_put(t, k, strlen(k), k, strlen(k)), 0);
	}
	fault_set(&f_datasync, 0, 0, 0);
	tu_commit(t);
	cr_assert_eq(f_datasync.calls, 2, "a commit of more blocks than a record lists");
	tu_close(b);
	tu_close(a);
}

Test(faults, failed_write_of_the_meta_page_is_eio_and_refuses_commits_until_reopen)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	fault_set(&f_pwrite, 0, 1, EIO);
	int rc = put_i(s, 11, 10, 11);
	cr_assert_eq(rc, MS_EIO, "a commit whose meta write failed = %d (%s)", rc, ms_strerror(rc));
	expect_refusing(s, &m);
	ms_close(s);
	reopen_expect(p, &m, "after reopen");
}

/* ms_sync's fdatasync fails (in MS_NOSYNC mode it is the sync that makes the commits so far durable):
 * MS_EIO, commits refused until the store is reopened, every commit made before it still there after
 * the reopen (in the same mode), and commits and ms_sync work again. */
static void failed_ms_sync(unsigned flags)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, flags);
	fault_set(&f_datasync, 0, 1, EIO);
	int rc = ms_sync(s);
	cr_assert_eq(f_datasync.fired, 1, "ms_sync made no fdatasync");
	cr_assert_eq(rc, MS_EIO, "ms_sync whose fdatasync failed = %d (%s)", rc, ms_strerror(rc));
	expect_refusing(s, &m);
	rc = ms_close(s);
	cr_assert(rc == 0 || rc == MS_EIO, "ms_close after a failed sync = %d", rc);
	s = tu_open(p, flags, 0);
	expect_model(s, &m, "reopened after the failed ms_sync");
	cr_assert_eq(put_i(s, 11, 10, 11), 0, "commits work again after the reopen: %s", ms_last_error());
	model_set(&m, 11, 10, 11);
	cr_assert_eq(ms_sync(s), 0, "ms_sync after the reopen: %s", ms_last_error());
	tu_close(s);
	reopen_expect(p, &m, "after a commit following the reopen");
}

Test(faults, failed_ms_sync_in_durable_mode_refuses_commits_until_reopen)
{
	failed_ms_sync(0);
}

Test(faults, failed_ms_sync_in_nosync_mode_refuses_commits_until_reopen)
{
	failed_ms_sync(MS_NOSYNC);
}

/* Close's checkpoint syncs twice (before and after its meta page); either failing is MS_EIO, the store
 * is closed all the same (it opens again: no handle lingers) and every commit is there. */
static void failed_close_sync(int which, unsigned flags)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, flags);
	fault_set(&f_datasync, which, 1, EIO);
	int rc = ms_close(s);
	cr_assert_eq(f_datasync.fired, 1, "close made fewer than %d syncs", which + 1);
	cr_assert_eq(rc, MS_EIO, "ms_close whose sync %d failed = %d (%s)", which, rc, ms_strerror(rc));
	reopen_expect(p, &m, "after the failed close");
}

Test(faults, failed_sync_before_the_checkpoint_meta_is_eio_at_close)
{
	failed_close_sync(0, 0);
	failed_close_sync(0, MS_NOSYNC);
}

Test(faults, failed_sync_after_the_checkpoint_meta_is_eio_at_close)
{
	failed_close_sync(1, 0);
	failed_close_sync(1, MS_NOSYNC);
}

Test(faults, failed_sync_at_create_is_eio_and_leaves_no_store)
{
	const char *p = tu_path("s.ms");
	seam_on();
	ms_options o = { .flags = MS_CREATE };
	ms_store *s = NULL;
	fault_set(&f_datasync, 0, 1, EIO);
	int rc = ms_open(p, &o, &s);
	cr_assert_eq(rc, MS_EIO, "create whose sync failed = %d (%s)", rc, ms_strerror(rc));
	cr_assert_null(s);
	cr_assert_eq(access(p, F_OK), -1, "a create whose data sync failed left a store file");
	expect_no_leftovers(NULL, "s.ms-lock");
	/* The folder's sync (making the new name durable) failing is MS_EIO too: the file is a valid,
	 * empty store, whose name may not survive a power loss. */
	fault_set(&f_fsync, 0, 1, EIO);
	rc = ms_open(p, &o, &s);
	cr_assert_eq(f_fsync.fired, 1, "create never synced the folder");
	cr_assert_eq(rc, MS_EIO, "create whose folder sync failed = %d (%s)", rc, ms_strerror(rc));
	cr_assert_null(s);
	expect_no_leftovers("s.ms", "s.ms-lock");
	struct model m = { 0 };
	reopen_expect(p, &m, "the store created under a failed folder sync");
}

/* The first process to open a store recovers it (here: an MS_NOSYNC open zeroes free space between two
 * syncs, each made slow) before any other process can open it: a second opener waits. */
Test(faults, a_second_opener_waits_until_the_first_has_recovered_the_store)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	tu_close(ten_keys(p, &m, MS_NOSYNC));
	int sig[2];
	cr_assert_eq(pipe(sig), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sig[0]);
		datasync_signal_fd = sig[1];
		datasync_delay_ms = 800;
		ms_options o = { .flags = MS_NOSYNC };
		ms_store *s = NULL;
		if (ms_open(p, &o, &s) != 0)
			_exit(1);
		datasync_delay_ms = 0;
		ms_close(s);
		_exit(0);
	}
	close(sig[1]);
	char c;
	cr_assert_eq(read(sig[0], &c, 1), 1, "the first opener never synced");
	double t0 = tu_now();
	ms_store *s = tu_open(p, 0, 0); /* the child is inside its recovery now */
	double waited = tu_now() - t0;
	expect_model(s, &m, "opened after the first process's recovery");
	tu_close(s);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the first opener failed (status %#x)", st);
	close(sig[0]);
	cr_assert_geq(waited, 0.5, "the second open returned after %.3f s, while the first was recovering", waited);
}

Test(faults, every_acknowledged_commit_survives_failed_syncs_at_each_site)
{
	/* Many rounds of: commits acknowledged, then a failure at one of the commit's syncs, reopen. */
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	tu_close(s);
	for (unsigned round = 0; round < 12; round++) {
		s = tu_open(p, 0, 0);
		for (unsigned j = 0; j < 3; j++) {
			unsigned k = (round * 7 + j * 3) % MAXKEYS;
			size_t len = (round * 977 + j * 131) % 20000;
			cr_assert_eq(put_i(s, k, len, round * 100 + j), 0);
			model_set(&m, k, len, round * 100 + j);
		}
		/* The failing commit: one that syncs once (round % 3 == 0), or the first after a
		 * reopen, which syncs its data (sync 0, round % 3 == 1) and then its meta page (1) */
		if (round % 3) {
			tu_close(s);
			s = tu_open(p, 0, 0);
		}
		fault_set(&f_datasync, round % 3 == 2 ? 1 : 0, 1, EIO);
		int rc = put_i(s, (round * 5) % MAXKEYS, 777, 99999);
		cr_assert_eq(rc, MS_EIO);
		ms_close(s);
		fault_set(&f_datasync, 0, 0, 0);
		reopen_expect(p, &m, "after a failed commit sync");
	}
}

/* ---- 4. allocation failures: the sweep ----------------------------------------------------------- */
/* The library's malloc, calloc, realloc and strdup come here (-Wl,--wrap in tests/CMakeLists.txt).
 * Only calls made while a_counting is on (inside a library call of the sweep) are counted; the N-th
 * of them fails (and, in the "every one after" mode, all later ones too). a_live counts the blocks
 * allocated and not yet freed by counted calls: after a workload it must be back at 0. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *str);

static bool a_counting, a_fail_rest;
static long a_n, a_fail_at, a_fired, a_live;

static bool a_fail(void)
{
	if (!a_counting)
		return false;
	a_n++;
	if (a_fail_at && (a_n == a_fail_at || (a_fail_rest && a_n > a_fail_at))) {
		a_fired++;
		return true;
	}
	return false;
}

void *__wrap_malloc(size_t n)
{
	if (a_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = __real_malloc(n);
	if (p && a_counting)
		a_live++;
	return p;
}

void *__wrap_calloc(size_t n, size_t m)
{
	if (a_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = __real_calloc(n, m);
	if (p && a_counting)
		a_live++;
	return p;
}

void *__wrap_realloc(void *p, size_t n)
{
	if (a_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	void *q = __real_realloc(p, n);
	if (q && !p && a_counting)
		a_live++;
	return q;
}

void __wrap_free(void *p)
{
	if (p && a_counting)
		a_live--;
	__real_free(p);
}

char *__wrap_strdup(const char *str)
{
	size_t n = strlen(str) + 1;
	char *p = __wrap_malloc(n);
	if (p)
		memcpy(p, str, n);
	return p;
}

/* A library call, counted. */
#define LIB(call) (a_counting = true, lib_rc = (call), a_counting = false, lib_rc)
static int lib_rc;

/* Every call either succeeds, answers what it would without faults (`also`), or is MS_ENOMEM after
 * a failed allocation. */
static void sweep_ok(int rc, int also, const char *what)
{
	if (rc == 0 || rc == also)
		return;
	cr_assert_eq(rc, MS_ENOMEM, "allocation %ld failed%s: %s = %d (%s): %s", a_fail_at,
		     a_fail_rest ? " (and every later one)" : "", what, rc, ms_strerror(rc), ms_last_error());
	cr_assert_gt(a_fired, 0, "%s = MS_ENOMEM but no allocation failed", what);
}

static const size_t sweep_sizes[] = { 10, 100, 600, 5000, 70000, 300 };

/* Reads of everything the model holds: each answer is right or MS_ENOMEM. */
static void sweep_reads(ms_store *s, const struct model *m)
{
	ms_txn *t = NULL;
	int rc = LIB(ms_txn_begin(s, MS_READONLY, &t));
	sweep_ok(rc, 0, "ms_txn_begin(read)");
	if (rc == 0) {
		for (unsigned i = 0; i < MAXKEYS; i++) {
			char k[16];
			size_t kl = key_of(k, i);
			ms_val v;
			rc = LIB(ms_txn_get(t, k, kl, &v));
			if (m->present[i]) {
				cr_assert_eq(rc, 0, "N=%ld: get %s = %d (%s)", a_fail_at, k, rc, ms_strerror(rc));
				cr_assert(v.len == m->len[i] && tu_check_fill(v.data, v.len, m->seed[i]));
			} else {
				cr_assert_eq(rc, MS_NOTFOUND, "N=%ld: get %s = %d", a_fail_at, k, rc);
			}
		}
		ms_iter *it = NULL;
		rc = LIB(ms_iter_open(t, &it));
		sweep_ok(rc, 0, "ms_iter_open");
		if (rc == 0) {
			ms_val k, v;
			unsigned n = 0, want = 0;
			for (unsigned i = 0; i < MAXKEYS; i++)
				want += m->present[i];
			while ((rc = LIB(ms_iter_next(it, &k, &v))) == 0)
				n++;
			sweep_ok(rc, MS_NOTFOUND, "ms_iter_next");
			if (rc == MS_NOTFOUND)
				cr_assert_eq(n, want, "N=%ld: iteration gave %u objects, want %u", a_fail_at, n, want);
			LIB((ms_iter_close(it), 0));
		}
		LIB((ms_txn_abort(t), 0));
	}
	char buf[100];
	size_t vlen = 0;
	rc = LIB(ms_get(s, "key00", 5, buf, sizeof buf, &vlen));
	sweep_ok(rc, m->present[0] ? (m->len[0] > sizeof buf ? MS_ERANGE : 0) : MS_NOTFOUND, "ms_get");
	ms_stats st;
	rc = LIB(ms_stat(s, &st));
	sweep_ok(rc, 0, "ms_stat");
}

/* A session's writes: a transaction of puts of every size class and a delete, one-shot put and
 * delete; the model follows what was acknowledged. */
static void sweep_writes(ms_store *s, struct model *m, unsigned round)
{
	ms_txn *t = NULL;
	int rc = LIB(ms_txn_begin(s, 0, &t));
	sweep_ok(rc, 0, "ms_txn_begin(write)");
	if (rc == 0) {
		struct model tm = *m;
		for (unsigned i = 0; i < 12; i++) {
			unsigned k = (i + round * 12) % MAXKEYS;
			size_t len = sweep_sizes[(i + round) % 6];
			uint64_t seed = round * 1000 + i;
			char key[16];
			size_t kl = key_of(key, k);
			tu_fill(vbuf, len, seed);
			rc = LIB(ms_txn_put(t, key, kl, vbuf, len));
			sweep_ok(rc, 0, "ms_txn_put");
			if (rc == 0)
				model_set(&tm, k, len, seed);
		}
		char key[16];
		unsigned dk = (1 + round * 12) % MAXKEYS;
		size_t kl = key_of(key, dk);
		rc = LIB(ms_txn_del(t, key, kl));
		sweep_ok(rc, tm.present[dk] ? 0 : MS_NOTFOUND, "ms_txn_del");
		if (rc == 0)
			tm.present[dk] = false;
		ms_val v;
		kl = key_of(key, (round * 12) % MAXKEYS);
		rc = LIB(ms_txn_get(t, key, kl, &v));
		sweep_ok(rc, MS_NOTFOUND, "ms_txn_get in the writer");
		rc = LIB(ms_txn_commit(t));
		sweep_ok(rc, 0, "ms_txn_commit");
		if (rc == 0)
			*m = tm;
	}
	unsigned pk = 40 + round;
	tu_fill(vbuf, 2000, pk);
	char key[16];
	size_t kl = key_of(key, pk);
	rc = LIB(ms_put(s, key, kl, vbuf, 2000));
	sweep_ok(rc, 0, "ms_put");
	if (rc == 0)
		model_set(m, pk, 2000, pk);
	unsigned dk = (2 + round * 12) % MAXKEYS;
	kl = key_of(key, dk);
	rc = LIB(ms_del(s, key, kl));
	sweep_ok(rc, m->present[dk] ? 0 : MS_NOTFOUND, "ms_del");
	if (rc == 0)
		m->present[dk] = false;
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

/* A store that crashed (its process ended without ms_close) after a MS_NOSYNC commit: the next open
 * rebuilds the allocator from the index, verifying every object. */
static void make_crashed(const char *p, struct model *m)
{
	memset(m, 0, sizeof *m);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		ms_options o = { .flags = MS_CREATE };
		ms_store *s;
		if (ms_open(p, &o, &s))
			_exit(1);
		for (unsigned i = 0; i < 8; i++)
			if (put_i(s, i, sweep_sizes[i % 6], 500 + i))
				_exit(2);
		if (ms_close(s))
			_exit(3);
		o.flags = MS_NOSYNC;
		if (ms_open(p, &o, &s))
			_exit(4);
		for (unsigned i = 4; i < 12; i++)
			if (put_i(s, i, sweep_sizes[(i + 1) % 6], 600 + i))
				_exit(5);
		if (ms_del(s, "key02", 5))
			_exit(6);
		_exit(0); /* no close: a crash */
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "making the crashed store failed (%d)", st);
	for (unsigned i = 0; i < 8; i++)
		model_set(m, i, sweep_sizes[i % 6], 500 + i);
	for (unsigned i = 4; i < 12; i++)
		model_set(m, i, sweep_sizes[(i + 1) % 6], 600 + i);
	m->present[2] = false;
}

static void rm_store(const char *p)
{
	char lk[PATH_MAX];
	snprintf(lk, sizeof lk, "%s-lock", p);
	unlink(p);
	unlink(lk);
}

/* One run of the workload with allocation `fail_at` failing (0: none). Returns how many failed. */
static long sweep_run(long fail_at, bool rest, const char *tmpl, const struct model *mtmpl)
{
	char p[PATH_MAX], pc[PATH_MAX]; /* tu_path's buffers are reused */
	snprintf(p, sizeof p, "%s", tu_path("s.ms"));
	snprintf(pc, sizeof pc, "%s", tu_path("c.ms"));
	rm_store(p);
	rm_store(pc);
	cr_assert(tu_copy_file(tmpl, pc));
	struct model m, mc = *mtmpl;
	memset(&m, 0, sizeof m);
	a_n = a_fired = a_live = 0;
	a_fail_at = fail_at;
	a_fail_rest = rest;

	/* Create, write, read, close. */
	ms_store *s = NULL;
	ms_options o = { .flags = MS_CREATE | MS_NOSYNC };
	int rc = LIB(ms_open(p, &o, &s));
	sweep_ok(rc, 0, "ms_open(create)");
	if (rc == 0) {
		sweep_writes(s, &m, 0);
		sweep_reads(s, &m);
		rc = LIB(ms_sync(s));
		sweep_ok(rc, 0, "ms_sync");
		rc = LIB(ms_close(s));
		sweep_ok(rc, 0, "ms_close");
	}
	/* A clean open (the checkpoint), more writes, close. */
	if (exists(p)) {
		o.flags = MS_NOSYNC;
		s = NULL;
		rc = LIB(ms_open(p, &o, &s));
		sweep_ok(rc, 0, "ms_open(clean)");
		if (rc == 0) {
			sweep_reads(s, &m);
			sweep_writes(s, &m, 1);
			rc = LIB(ms_close(s));
			sweep_ok(rc, 0, "ms_close");
		}
		ms_check_stats cs;
		struct tu_problems pr = { 0 };
		rc = LIB(ms_check(p, tu_problem_fn, &pr, &cs));
		cr_assert(rc == 0 || rc == MS_ENOMEM, "allocation %ld failed: ms_check = %d (%s), first problem at %" PRIu64 ": %s",
			  a_fail_at, rc, ms_strerror(rc), pr.first_off, pr.first);
		sweep_ok(rc, 0, "ms_check");
	}
	/* An open after a crash (allocator rebuild), writes, reads, close. */
	o.flags = 0;
	s = NULL;
	rc = LIB(ms_open(pc, &o, &s));
	sweep_ok(rc, 0, "ms_open(after a crash)");
	if (rc == 0) {
		sweep_reads(s, &mc);
		sweep_writes(s, &mc, 2);
		sweep_reads(s, &mc);
		rc = LIB(ms_close(s));
		sweep_ok(rc, 0, "ms_close");
	}
	long fired = a_fired;
	a_fail_at = 0;
	cr_assert_eq(a_live, 0, "allocation %ld failed%s: %ld blocks the library allocated were never freed",
		     fail_at, rest ? " (and every later one)" : "", a_live);
	char when[96];
	snprintf(when, sizeof when, "reopened after allocation %ld failed%s", fail_at, rest ? " (and the rest)" : "");
	if (exists(p))
		reopen_expect(p, &m, when);
	else
		for (unsigned i = 0; i < MAXKEYS; i++)
			cr_assert(!m.present[i], "%s: a commit was acknowledged but the store is gone", when);
	reopen_expect(pc, &mc, when);
	return fired;
}

static void sweep(bool rest)
{
	char tmpl[PATH_MAX];
	snprintf(tmpl, sizeof tmpl, "%s", tu_path("crashed.ms"));
	struct model mt;
	make_crashed(tmpl, &mt);
	long total = 0;
	long n;
	for (n = 1; n < 100000; n++) {
		if (sweep_run(n, rest, tmpl, &mt) == 0)
			break;
		total++;
	}
	cr_assert_lt(n, 100000, "the sweep never ran without a failure");
	cr_assert_gt(total, 50, "the workload made only %ld allocations", total);
	cr_log_info("allocation sweep%s: %ld allocations failed one run each", rest ? " (every later one too)" : "", total);
}

Test(faults, every_failed_allocation_is_enomem_and_leaks_nothing, .timeout = 600)
{
	sweep(false);
}

Test(faults, failing_every_allocation_from_the_nth_on_is_enomem_and_leaks_nothing, .timeout = 600)
{
	sweep(true);
}

/* ---- 5. a file truncated under the store --------------------------------------------------------- */
/* A child process holds a transaction (and zero-copy pointers), the parent truncates the file, the
 * child goes on reading (or writing): it must get errors, never a wrong value, never SIGBUS. The
 * child reports what went wrong on a pipe and exits 0 when all was as it should be. */

#define TR_KEYS 48u
static size_t tr_len(unsigned i) { return i % 3 == 0 ? 40000 + 997 * i : 200 + 37 * i; }

static void tr_fill_store(const char *p)
{
	ms_store *s = tu_open(p, MS_CREATE, 0);
	ms_txn *t = tu_begin(s, 0);
	for (unsigned i = 0; i < TR_KEYS; i++)
		cr_assert_eq(txn_put_i(t, i, tr_len(i), 7000 + i), 0);
	tu_commit(t);
	tu_close(s);
}

static int tr_report_fd = -1;

static void tr_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void tr_fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n > 0)
		tu_write_all(tr_report_fd, msg, strlen(msg));
	_exit(1);
}

/* Wait for one byte on fd (the parent's "truncated"). */
static void tr_wait(int fd)
{
	char c;
	while (read(fd, &c, 1) < 0 && errno == EINTR)
		;
}

static bool tr_truncation_error(int rc)
{
	return rc == MS_EIO && strstr(ms_last_error(), "truncated") != NULL;
}

enum tr_mode { TR_READER, TR_READER_THREAD, TR_WRITER };

struct tr_child {
	ms_txn *t;
	const ms_val *vals;
	unsigned errors;
	uint64_t sum;
};

/* The reads after the truncation: every answer right or an error; the zero-copy pointers readable. */
static void *tr_reads(void *arg)
{
	struct tr_child *c = arg;
	for (unsigned i = 0; i < TR_KEYS; i++) {
		const unsigned char *q = c->vals[i].data;
		for (size_t j = 0; j < c->vals[i].len; j += 512)
			c->sum += q[j]; /* zeros past the end of the file, never SIGBUS */
	}
	for (unsigned i = 0; i < TR_KEYS; i++) {
		char k[16];
		size_t kl = key_of(k, i);
		ms_val v;
		int rc = ms_txn_get(c->t, k, kl, &v);
		if (rc == 0) {
			if (v.len != tr_len(i) || !tu_check_fill(v.data, v.len, 7000 + i))
				tr_fail("get %s after the truncation gave a wrong value", k);
			continue;
		}
		if (rc != MS_ECORRUPT && rc != MS_EIO)
			tr_fail("get %s after the truncation = %d (%s)", k, rc, ms_strerror(rc));
		c->errors++;
	}
	ms_iter *it;
	int rc = ms_iter_open(c->t, &it);
	if (rc == 0) {
		ms_val k, v;
		while ((rc = ms_iter_next(it, &k, &v)) == 0)
			;
		ms_iter_close(it);
	}
	if (rc == MS_NOTFOUND)
		tr_fail("iteration over a truncated file ended as if nothing were wrong");
	if (rc != MS_ECORRUPT && rc != MS_EIO)
		tr_fail("iteration after the truncation = %d (%s)", rc, ms_strerror(rc));
	c->errors++;
	return NULL;
}

static void tr_child(const char *p, enum tr_mode mode, int go_fd)
{
	ms_store *s;
	ms_options o = { 0 };
	if (ms_open(p, &o, &s))
		tr_fail("open: %s", ms_last_error());
	static ms_val vals[TR_KEYS];
	ms_txn *t;
	if (ms_txn_begin(s, mode == TR_WRITER ? 0 : MS_READONLY, &t))
		tr_fail("begin: %s", ms_last_error());
	for (unsigned i = 0; i < TR_KEYS; i++) {
		char k[16];
		size_t kl = key_of(k, i);
		if (ms_txn_get(t, k, kl, &vals[i]))
			tr_fail("get before the truncation: %s", ms_last_error());
	}
	void *dst = NULL;
	if (mode == TR_WRITER && ms_txn_reserve(t, "late", 4, 100000, &dst))
		tr_fail("reserve before the truncation: %s", ms_last_error());
	/* Ready: the parent truncates now. */
	int ready_fd = go_fd >> 16, wait_fd = go_fd & 0xffff;
	tu_write_all(ready_fd, "r", 1);
	tr_wait(wait_fd);
	struct tr_child c = { .t = t, .vals = vals };
	if (mode == TR_WRITER) {
		memset(dst, 0x5a, 100000); /* into pages past the end: lost, never SIGBUS */
		tr_reads(&c);
		int rc = txn_put_i(t, 60, 300000, 1);
		if (rc != MS_EIO && rc != MS_ECORRUPT && rc != MS_ENOSPC)
			tr_fail("a put after the truncation = %d (%s)", rc, ms_strerror(rc));
		rc = ms_txn_commit(t);
		if (!tr_truncation_error(rc))
			tr_fail("the commit after the truncation = %d (%s): \"%s\"", rc, ms_strerror(rc), ms_last_error());
	} else if (mode == TR_READER_THREAD) {
		pthread_t th;
		if (pthread_create(&th, NULL, tr_reads, &c) || pthread_join(th, NULL))
			tr_fail("thread");
		ms_txn_abort(t);
	} else {
		tr_reads(&c);
		ms_txn_abort(t);
	}
	if (!c.errors)
		tr_fail("no read noticed the truncation");
	/* From now on the store says what happened. */
	ms_txn *t2 = NULL;
	int rc = ms_txn_begin(s, MS_READONLY, &t2);
	if (!tr_truncation_error(rc))
		tr_fail("a read transaction after the truncation = %d (%s): \"%s\"", rc, ms_strerror(rc), ms_last_error());
	if (!strstr(ms_last_error(), p))
		tr_fail("the error does not name the file: \"%s\"", ms_last_error());
	rc = ms_txn_begin(s, 0, &t2);
	if (!tr_truncation_error(rc))
		tr_fail("a write transaction after the truncation = %d (%s): \"%s\"", rc, ms_strerror(rc), ms_last_error());
	rc = put_i(s, 61, 10, 1);
	if (!tr_truncation_error(rc))
		tr_fail("ms_put after the truncation = %d (%s)", rc, ms_strerror(rc));
	char buf[8];
	size_t vlen;
	rc = ms_get(s, "key01", 5, buf, sizeof buf, &vlen);
	if (!tr_truncation_error(rc))
		tr_fail("ms_get after the truncation = %d (%s)", rc, ms_strerror(rc));
	rc = ms_close(s);
	if (rc != MS_EIO)
		tr_fail("ms_close after the truncation = %d (%s)", rc, ms_strerror(rc));
	_exit(0);
}

/* Truncate the store to `to` bytes (-1: half) under a child in `mode`. */
static void truncated_under(enum tr_mode mode, off_t to)
{
	const char *p = tu_path("s.ms");
	tr_fill_store(p);
	struct stat sb;
	cr_assert_eq(stat(p, &sb), 0);
	if (to < 0)
		to = sb.st_size / 2;
	int rep[2], ready[2], go[2];
	cr_assert_eq(pipe(rep), 0);
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(rep[0]);
		close(ready[0]);
		close(go[1]);
		tr_report_fd = rep[1];
		tr_child(p, mode, ready[1] << 16 | go[0]);
	}
	close(rep[1]);
	close(ready[1]);
	close(go[0]);
	char c;
	ssize_t n = read(ready[0], &c, 1);
	unsigned char meta_before[2 * MS_PAGE];
	int fd = open(p, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, meta_before, sizeof meta_before, 0), (ssize_t)sizeof meta_before);
	if (n == 1)
		cr_assert_eq(ftruncate(fd, to), 0);
	close(fd);
	tu_write_all(go[1], "g", 1);
	char msg[600] = "";
	ssize_t got = 0, r;
	while ((r = read(rep[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0)
		got += r;
	msg[got > 0 ? got : 0] = 0;
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(!WIFSIGNALED(st), "the child died of signal %d (%s) after the file was truncated to %lld bytes",
		  WTERMSIG(st), strsignal(WTERMSIG(st)), (long long)to);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child (truncated to %lld bytes): %s", (long long)to, msg);
	close(rep[0]);
	close(ready[0]);
	close(go[1]);
	/* Nothing was published after the truncation: the file is as the parent left it. */
	cr_assert_eq(stat(p, &sb), 0);
	cr_assert_eq(sb.st_size, to, "the file grew after the truncation (%lld bytes, truncated to %lld)",
		     (long long)sb.st_size, (long long)to);
	if (to >= (off_t)sizeof meta_before) {
		unsigned char meta_after[2 * MS_PAGE];
		fd = open(p, O_RDONLY);
		cr_assert_eq(pread(fd, meta_after, sizeof meta_after, 0), (ssize_t)sizeof meta_after);
		close(fd);
		cr_assert(memcmp(meta_before, meta_after, sizeof meta_after) == 0, "a meta page changed after the truncation");
	}
	/* The file is refused, not misread. */
	ms_options o = { 0 };
	ms_store *s = NULL;
	int rc = ms_open(p, &o, &s);
	cr_assert(rc == MS_ECORRUPT, "open of the truncated store = %d (%s)", rc, ms_strerror(rc));
}

Test(faults, a_reader_of_a_file_truncated_to_nothing_gets_errors_not_sigbus)
{
	truncated_under(TR_READER, 0);
}

Test(faults, a_reader_of_a_file_truncated_to_its_meta_pages_gets_errors_not_sigbus)
{
	truncated_under(TR_READER, MS_HEAP_START);
}

Test(faults, a_reader_of_a_file_truncated_to_half_gets_errors_not_sigbus)
{
	truncated_under(TR_READER, -1);
}

Test(faults, a_reader_thread_of_a_truncated_file_gets_errors_not_sigbus)
{
	truncated_under(TR_READER_THREAD, MS_HEAP_START);
}

Test(faults, a_writer_of_a_truncated_file_gets_errors_and_publishes_nothing)
{
	truncated_under(TR_WRITER, MS_HEAP_START);
}

Test(faults, a_writer_of_a_file_truncated_to_half_publishes_nothing)
{
	truncated_under(TR_WRITER, -1);
}

Test(faults, a_writer_sees_a_truncation_at_begin_before_any_fault)
{
	const char *p = tu_path("s.ms");
	tr_fill_store(p);
	ms_store *s = tu_open(p, 0, 0);
	struct stat sb;
	cr_assert_eq(stat(p, &sb), 0);
	cr_assert_eq(truncate(p, sb.st_size / 2), 0);
	ms_txn *t = NULL;
	int rc = ms_txn_begin(s, 0, &t);
	cr_assert(tr_truncation_error(rc), "a write transaction on a truncated file = %d (%s): \"%s\"", rc,
		  ms_strerror(rc), ms_last_error());
	cr_assert_eq(ms_close(s), MS_EIO);
	cr_assert_eq(stat(p, &sb), 0);
	cr_assert_eq(ms_open(p, NULL, &s), MS_ECORRUPT);
}

Test(faults, a_sigbus_outside_the_stores_mappings_still_kills)
{
	/* The handler passes faults that are not in a store's mapping on to the previous disposition. */
	const char *p = tu_path("s.ms");
	tr_fill_store(p);
	ms_store *s = tu_open(p, 0, 0); /* installs the handler */
	const char *q = tu_path("other");
	cr_assert(tu_write_file(q, "x", 1));
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(q, O_RDWR);
		volatile unsigned char *m = mmap(NULL, 2 * MS_PAGE, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			_exit(3);
		(void)m[MS_PAGE]; /* past the end of a file that is not a store: SIGBUS as ever */
		_exit(0);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
#ifdef __SANITIZE_ADDRESS__
	/* The previous handler is AddressSanitizer's: it reports the fault and aborts. */
	cr_assert(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0), "status %d", st);
#else
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS, "status %d", st);
#endif
	tu_close(s);
}

/* ---- 6. failed stat, rename, link and locks -------------------------------------------------------- */

Test(faults, fstat_failing_at_open_is_eio_and_changes_nothing)
{
	open_fails_on(&f_fstat, EIO, "fstat");
}

Test(faults, flock_failing_at_open_is_eio_and_changes_nothing)
{
	open_fails_on(&f_flock, ENOLCK, "flock");
}

Test(faults, a_failed_reader_lock_at_open_is_eio_and_changes_nothing)
{
	open_fails_on(&f_fcntl, ENOLCK, "fcntl lock");
}

/* Create whose rename fails with `rename_err` (and, when it is EINVAL, as on a file system without
 * renameat2, whose link fails with `link_err` unless that is 0): the result `want`, no temporary
 * file left, and, when it failed, no store. */
static void create_renaming(int rename_err, int link_err, int want)
{
	const char *p = tu_path("s.ms");
	seam_on();
	fault_set(&f_rename, 0, -1, rename_err);
	if (link_err)
		fault_set(&f_link, 0, -1, link_err);
	ms_options o = { .flags = MS_CREATE };
	ms_store *s = NULL;
	int rc = ms_open(p, &o, &s);
	cr_assert_eq(f_rename.fired, 1, "create made no rename");
	cr_assert_eq(rc, want, "create whose rename fails with %s (link: %s) = %d (%s)", strerror(rename_err),
		     link_err ? strerror(link_err) : "works", rc, ms_strerror(rc));
	cr_assert_eq(f_link.calls, rename_err == EINVAL, "create linked %d times after rename failed with %s",
		     f_link.calls, strerror(rename_err));
	expect_no_leftovers(NULL, NULL);
	fault_set(&f_rename, 0, 0, 0);
	fault_set(&f_link, 0, 0, 0);
	if (rc) {
		cr_assert_null(s);
		cr_assert_eq(access(p, F_OK), -1, "a failed create left the store file");
		s = tu_open(p, MS_CREATE, 0);
	}
	commit_and_reopen(s, p, "after the create");
}

Test(faults, rename_failing_at_create_is_an_error_and_leaves_no_file)
{
	create_renaming(EIO, 0, MS_EIO);
}

Test(faults, create_without_renameat2_links_the_new_file_into_place)
{
	create_renaming(EINVAL, 0, 0);
}

Test(faults, create_without_renameat2_whose_link_fails_is_an_error_and_leaves_no_file)
{
	create_renaming(EINVAL, EIO, MS_EIO);
}

/* ---- 3. mmap and munmap failures ----------------------------------------------------------------- */

Test(faults, mmap_failing_at_open_is_enomem_and_changes_nothing)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	tu_close(s);
	tu_image img;
	cr_assert(tu_image_take(p, &img));
	/* The lock file's mapping (the first), then the store's (every size it tries). */
	for (int skip = 0; skip < 2; skip++) {
		fault_set(&f_mmap, skip, -1, ENOMEM);
		s = NULL;
		int rc = ms_open(p, NULL, &s);
		cr_assert_eq(rc, MS_ENOMEM, "open with mmap %d failing = %d (%s)", skip, rc, ms_strerror(rc));
		cr_assert_null(s);
		cr_assert_neq(strstr(ms_last_error(), "mmap"), NULL, "ms_last_error() = \"%s\"", ms_last_error());
		const char *d = tu_image_diff(p, &img);
		cr_assert_null(d, "the failed open changed the store: %s", d);
	}
	tu_image_free(&img);
	fault_set(&f_mmap, 0, 0, 0);
	reopen_expect(p, &m, "after the failed opens");
}

Test(faults, a_refused_large_reservation_falls_back_to_a_smaller_one)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	mmap_max_len = 1ull << 30;
	ms_store *s = ten_keys(p, &m, 0);
	cr_assert_eq(s->reserve, 1ull << 30, "reservation %" PRIu64, s->reserve);
	expect_model(s, &m, "with a 1 GiB reservation");
	tu_close(s);
	reopen_expect(p, &m, "after reopen");
}

/* A store whose reservation is 1 GiB grows past it: the larger mapping is refused (MS_ENOMEM, the
 * transaction and the store go on), then allowed. The file grows sparsely, so no disk is used. */
Test(faults, mmap_failing_at_growth_past_the_reservation_is_enomem_and_the_store_goes_on)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	falloc_sparse = true;
	mmap_max_len = 1ull << 30;
	ms_store *s = ten_keys(p, &m, 0);
	cr_assert_eq(s->reserve, 1ull << 30);
	ms_txn *r = tu_begin(s, MS_READONLY); /* a reader's pointers into the first mapping */
	ms_val rv;
	cr_assert_eq(ms_txn_get(r, "key03", 5, &rv), 0);
	ms_txn *t = tu_begin(s, 0);
	void *dst = NULL;
	const size_t big = (size_t)(1200ull << 20);
	int rc = ms_txn_reserve(t, "big", 3, big, &dst);
	cr_assert_eq(rc, MS_ENOMEM, "growth past the reservation with mmap failing = %d (%s)", rc, ms_strerror(rc));
	cr_assert_neq(strstr(ms_last_error(), "mmap"), NULL, "ms_last_error() = \"%s\"", ms_last_error());
	cr_assert_eq(txn_put_i(t, 20, 5000, 20), 0, "the transaction goes on after MS_ENOMEM");
	tu_commit(t);
	model_set(&m, 20, 5000, 20);
	expect_model(s, &m, "after the refused growth");
	/* Allowed now: the reserve succeeds, in a new mapping; the old one stays for the reader. */
	mmap_max_len = 0;
	t = tu_begin(s, 0);
	rc = ms_txn_reserve(t, "big", 3, big, &dst);
	cr_assert_eq(rc, 0, "growth past the reservation = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	cr_assert_gt(s->reserve, 1ull << 30);
	cr_assert_geq(s->n_old_maps, 1, "old maps %zu, reserve %" PRIu64, s->n_old_maps, s->reserve);
	ms_txn_abort(t);
	cr_assert(rv.len == m.len[3] && tu_check_fill(rv.data, rv.len, m.seed[3]), "a reader's value moved");
	ms_txn_abort(r);
	expect_model(s, &m, "after the growth");
	fault_set(&f_munmap, 0, -1, EINVAL); /* munmap failing at close leaks address space, nothing else */
	tu_close(s);
	reopen_expect(p, &m, "after reopen");
}

Test(faults, mmap_failing_in_ms_check_is_enomem)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	tu_close(s);
	fault_set(&f_mmap, 0, -1, ENOMEM);
	ms_check_stats cs;
	int rc = ms_check(p, NULL, NULL, &cs);
	cr_assert_eq(rc, MS_ENOMEM, "ms_check with mmap failing = %d (%s)", rc, ms_strerror(rc));
	fault_set(&f_mmap, 0, 0, 0);
	reopen_expect(p, &m, "after the failed check");
}

Test(faults, munmap_failing_at_close_is_harmless)
{
	const char *p = tu_path("s.ms");
	struct model m;
	seam_on();
	ms_store *s = ten_keys(p, &m, 0);
	fault_set(&f_munmap, 0, -1, EINVAL);
	cr_assert_eq(ms_close(s), 0);
	cr_assert_gt(f_munmap.fired, 0);
	reopen_expect(p, &m, "after munmap failed at close");
}
