/* tests/test_multiproc.c - many processes on one store: commits of one seen by the next transaction
 * of another, growth by one read by another, a process opening and writing a store another process
 * has open (for writing or read-only, or keeps closing and reopening), writers of different processes
 * taking turns through the robust writer lock (the test process's own write transaction waiting for
 * another's too), writers killed inside their write transaction or with the store merely open,
 * readers killed while holding a snapshot (stale slots, reclaimed, their space reusable again), read
 * transactions of every process counted, the lock file (deletable, rebuilt, raced for), `mstore
 * readers`, and two workloads of four processes (fork + exec of tests/helper's ms_test_helper): one
 * that runs for a few seconds, and a kill -9 campaign against writers (inside commits too) and
 * readers holding snapshots. In both every value any process reads is checked against what was
 * committed, and the final store against what the writers acknowledged.
 *
 * The helper's `serve` mode is a process the test drives line by line (see its do_serve); its `mixed`
 * mode is one worker of the workloads and logs what it commits and reads (see its do_mixed); its
 * `commit` mode commits until it is killed (tests/test_kill.c's campaigns use it too).
 *
 * Environment: MS_TEST_SEED (printed on failure), MS_KILLS (kills in the campaign, default 500),
 * MS_MP_SECONDS (length of the workload, default 4), MS_OPEN_RACES (rounds, default 60).
 */
#include "testutil.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#ifndef MSTORE_TEST_HELPER
#error "MSTORE_TEST_HELPER must name the helper program (tests/CMakeLists.txt defines it)"
#endif

TestSuite(multiproc, .init = tu_setup, .fini = tu_teardown, .timeout = 600);

#define MCHK(cond, fmt, ...) \
	cr_assert(cond, "[MS_TEST_SEED=%" PRIu64 "] " fmt, tu_seed(), ##__VA_ARGS__)

static void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A child that dies with the test (Criterion's test process) instead of running on alone. */
static void child_setup(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* ---- serve helpers: processes the test drives ------------------------------------------------------ */

struct proc {
	pid_t pid;
	int in, out;    /* its standard input (we write) and output (we read) */
	char buf[16384];
	size_t len;
	char line[16384];
	const char *name;
};

/* The next reply line of p, or NULL when none came within `seconds` (or p's output ended). */
static char *proc_line(struct proc *p, double seconds)
{
	double end = tu_now() + seconds;
	for (;;) {
		char *nl = memchr(p->buf, '\n', p->len);
		if (nl) {
			size_t n = (size_t)(nl - p->buf);
			memcpy(p->line, p->buf, n);
			p->line[n] = 0;
			memmove(p->buf, nl + 1, p->len - n - 1);
			p->len -= n + 1;
			return p->line;
		}
		double left = end - tu_now();
		if (left <= 0)
			return NULL;
		struct pollfd pf = { .fd = p->out, .events = POLLIN };
		int r = poll(&pf, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		if (p->len + 1 >= sizeof p->buf)
			cr_assert_fail("%s: a reply line is too long", p->name);
		ssize_t n = read(p->out, p->buf + p->len, sizeof p->buf - 1 - p->len);
		if (n <= 0)
			return NULL;
		p->len += (size_t)n;
	}
}

static void proc_start(struct proc *p, const char *name)
{
	int in[2], out[2];
	memset(p, 0, sizeof *p);
	p->name = name;
	cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
	p->pid = fork();
	cr_assert_geq(p->pid, 0);
	if (p->pid == 0) {
		child_setup();
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl(MSTORE_TEST_HELPER, MSTORE_TEST_HELPER, "serve", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	p->in = in[1];
	p->out = out[0];
	char *l = proc_line(p, 30);
	long pid = 0;
	MCHK(l && sscanf(l, "hello %ld", &pid) == 1 && pid == p->pid, "%s did not start: %s", name, l ? l : "(nothing)");
}

static void proc_send(struct proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void proc_send(struct proc *p, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof cmd - 1, fmt, ap);
	va_end(ap);
	cr_assert(n > 0 && (size_t)n < sizeof cmd - 1);
	cmd[n++] = '\n';
	MCHK(tu_write_all(p->in, cmd, (size_t)n), "%s: cannot send '%.*s' (it died?)", p->name, n - 1, cmd);
}

static char *proc_vcmd(struct proc *p, const char *fmt, va_list ap)
{
	char cmd[1024];
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	proc_send(p, "%s", cmd);
	char *l = proc_line(p, 120);
	MCHK(l != NULL, "%s: no reply to '%s' within 120 s", p->name, cmd);
	return l;
}

static char *proc_cmd(struct proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *proc_cmd(struct proc *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *l = proc_vcmd(p, fmt, ap);
	va_end(ap);
	return l;
}

/* The command must answer "ok..."; returns the reply. */
static char *proc_ok(struct proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *proc_ok(struct proc *p, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	char *l = proc_cmd(p, "%s", cmd);
	MCHK(strncmp(l, "ok", 2) == 0, "%s: '%s' answered '%s'", p->name, cmd, l);
	return l;
}

static void proc_kill(struct proc *p)
{
	int st = 0;
	kill(p->pid, SIGKILL);
	MCHK(waitpid(p->pid, &st, 0) == p->pid, "waitpid");
	MCHK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s ended with status %#x before the kill", p->name, st);
	close(p->in);
	close(p->out); /* p->pid stays, so the test can still look for its reader slot */
}

static void proc_quit(struct proc *p)
{
	int st = 0;
	proc_send(p, "quit");
	close(p->in);
	MCHK(waitpid(p->pid, &st, 0) == p->pid, "waitpid");
	MCHK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: quit ended with status %#x", p->name, st);
	close(p->out);
}

/* ---- the test process's own reads ------------------------------------------------------------------- */

/* ms_txn_get in a new read transaction, zero-copy: 0 when key holds tu_fill(len, seed); 1 absent; 2
 * other bytes. */
static int own_check(ms_store *s, const char *key, size_t len, uint64_t seed)
{
	ms_txn *t = tu_begin(s, MS_READONLY);
	ms_val v;
	int rc = ms_txn_get(t, key, strlen(key), &v);
	int res = rc == MS_NOTFOUND ? 1 : 2;
	MCHK(rc == 0 || rc == MS_NOTFOUND, "get %s = %d (%s)", key, rc, ms_strerror(rc));
	if (rc == 0 && v.len == len && tu_check_fill(v.data, len, seed))
		res = 0;
	ms_txn_abort(t);
	return res;
}

static void own_put(ms_store *s, const char *key, size_t len, uint64_t seed)
{
	unsigned char *b = malloc(len ? len : 1);
	cr_assert_not_null(b);
	tu_fill(b, len, seed);
	tu_put(s, key, b, len);
	free(b);
}

struct reader_list {
	size_t n;
	ms_reader_info v[64];
};

static int reader_list_fn(void *ctx, const ms_reader_info *r)
{
	struct reader_list *l = ctx;
	if (l->n < 64)
		l->v[l->n++] = *r;
	return 0;
}

static struct reader_list readers_of(ms_store *s)
{
	struct reader_list l;
	memset(&l, 0, sizeof l);
	int rc = ms_readers(s, reader_list_fn, &l);
	MCHK(rc == 0, "ms_readers = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	return l;
}

/* The slot of process pid, or NULL. */
static const ms_reader_info *reader_of(const struct reader_list *l, pid_t pid)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].pid == (uint64_t)pid)
			return &l->v[i];
	return NULL;
}

static uint64_t file_size(const char *path)
{
	struct stat sb;
	MCHK(stat(path, &sb) == 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)sb.st_size;
}

static const char *lock_path(const char *path)
{
	static char b[PATH_MAX];
	snprintf(b, sizeof b, "%s-lock", path);
	return b;
}

/* ---- commits, snapshots, growth --------------------------------------------------------------------- */

Test(multiproc, commit_of_one_process_is_seen_by_the_next_transaction_of_every_other)
{
	uint64_t seed = tu_seed() ^ 0x70696e67ull;
	const char *path = tu_path("pp.ms");
	ms_store *s = tu_create(path);
	struct proc a, b;
	proc_start(&a, "process A");
	proc_start(&b, "process B");
	proc_ok(&a, "open %s", path);
	proc_ok(&b, "open %s", path);

	/* Three processes take turns: each commit is checked at once by the two others, each in a new
	 * read transaction, through the zero-copy pointer. */
	struct proc *ps[3] = { NULL, &a, &b };
	for (unsigned i = 0; i < 300; i++) {
		size_t len = (size_t)(i * 37u % 5000u);
		uint64_t vs = seed + i;
		unsigned w = i % 3;
		if (w == 0)
			own_put(s, "pp", len, vs);
		else
			proc_ok(ps[w], "put pp %zu %" PRIu64, len, vs);
		for (unsigned r = 0; r < 3; r++) {
			if (r == w)
				continue;
			if (r == 0)
				MCHK(own_check(s, "pp", len, vs) == 0, "round %u: the test process does not see the commit of "
				     "process %u", i, w);
			else
				MCHK(strcmp(proc_cmd(ps[r], "check pp %zu %" PRIu64, len, vs), "ok") == 0,
				     "round %u: %s does not see the commit of process %u: %s", i, ps[r]->name, w, ps[r]->line);
		}
	}

	/* A snapshot held in one process keeps seeing what it began with while others commit. */
	own_put(s, "iso", 100, seed ^ 1);
	proc_ok(&a, "rbegin");
	proc_ok(&b, "put iso 200 %" PRIu64, seed ^ 2);
	MCHK(strcmp(proc_cmd(&a, "check iso 100 %" PRIu64, seed ^ 1), "ok") == 0, "A's snapshot sees a later commit: %s",
	     a.line);
	MCHK(strncmp(proc_cmd(&a, "check iso 200 %" PRIu64, seed ^ 2), "mismatch", 8) == 0, "A's snapshot: %s", a.line);
	ms_txn *t = tu_begin(s, MS_READONLY);
	proc_ok(&a, "put iso 300 %" PRIu64, seed ^ 3); /* A writes while its own snapshot is held */
	ms_val v;
	MCHK(ms_txn_get(t, "iso", 3, &v) == 0 && v.len == 200 && tu_check_fill(v.data, 200, seed ^ 2),
	     "the test's snapshot changed under it");
	ms_txn_abort(t);
	MCHK(own_check(s, "iso", 300, seed ^ 3) == 0, "A's commit is not seen by the next transaction");
	MCHK(strcmp(proc_cmd(&a, "check iso 100 %" PRIu64, seed ^ 1), "ok") == 0, "A's held snapshot: %s", a.line);
	proc_ok(&a, "rend");
	MCHK(strcmp(proc_cmd(&a, "check iso 300 %" PRIu64, seed ^ 3), "ok") == 0, "A after its snapshot: %s", a.line);
	MCHK(strcmp(proc_cmd(&b, "check iso 300 %" PRIu64, seed ^ 3), "ok") == 0, "B: %s", b.line);
	/* Deletes too. */
	proc_ok(&b, "del iso");
	MCHK(own_check(s, "iso", 0, 0) == 1, "B's delete is not seen");
	MCHK(strcmp(proc_cmd(&a, "check iso 300 %" PRIu64, seed ^ 3), "absent") == 0, "A after B's delete: %s", a.line);

	proc_quit(&a);
	proc_quit(&b);
	tu_close(s);
	tu_check_sound(path);
}

Test(multiproc, growth_by_one_process_is_read_by_another_without_reopening)
{
	uint64_t seed = tu_seed() ^ 0x67726f77ull;
	const char *path = tu_path("grow.ms");
	ms_store *s = tu_create(path);
	own_put(s, "small", 3000, seed);
	tu_close(s);
	uint64_t before = file_size(path);

	struct proc a, b;
	proc_start(&a, "process A (opened first)");
	proc_start(&b, "process B (grows the file)");
	proc_ok(&a, "open %s", path);
	proc_ok(&a, "rbegin");
	proc_ok(&a, "pin small 3000 %" PRIu64, seed);
	proc_ok(&b, "open %s", path);
	/* 50 MiB in one commit: the file grows far beyond what A mapped. */
	proc_ok(&b, "fill big 50 1048576 %" PRIu64, seed + 100);
	uint64_t after = file_size(path);
	MCHK(after >= before + (50ull << 20), "the file grew from %" PRIu64 " to only %" PRIu64 " bytes", before, after);

	/* A's old zero-copy pointer is still good; its old snapshot does not see the new objects; its
	 * next transaction sees all of them, without reopening. */
	MCHK(strcmp(proc_ok(&a, "repin"), "ok 1") == 0, "A's pointer from before the growth: %s", a.line);
	MCHK(strncmp(proc_cmd(&a, "fillcheck big 50 1048576 %" PRIu64, seed + 100), "bad 0 absent", 12) == 0,
	     "A's old snapshot sees the new objects: %s", a.line);
	proc_ok(&a, "rend");
	proc_ok(&a, "fillcheck big 50 1048576 %" PRIu64, seed + 100);
	proc_ok(&a, "rbegin");
	proc_ok(&a, "fillcheck big 50 1048576 %" PRIu64, seed + 100);
	proc_ok(&a, "pin big49 1048576 %" PRIu64, seed + 149);
	/* A writes after B grew the file (its view of the file's size must follow), then grows it
	 * itself; B reads both, and nothing of B's was overwritten. */
	proc_ok(&a, "put after-a 5000 %" PRIu64, seed + 7);
	proc_ok(&a, "fill more 12 1048576 %" PRIu64, seed + 300);
	MCHK(strcmp(proc_cmd(&b, "check after-a 5000 %" PRIu64, seed + 7), "ok") == 0, "B: %s", b.line);
	proc_ok(&b, "fillcheck more 12 1048576 %" PRIu64, seed + 300);
	proc_ok(&b, "fillcheck big 50 1048576 %" PRIu64, seed + 100);
	MCHK(strcmp(proc_cmd(&b, "check small 3000 %" PRIu64, seed), "ok") == 0, "B: %s", b.line);
	MCHK(strcmp(proc_ok(&a, "repin"), "ok 1") == 0, "A's pointer after its own growth: %s", a.line);
	proc_ok(&a, "rend");
	proc_quit(&a);
	proc_quit(&b);

	s = tu_open(path, 0, 0);
	ms_stats st = tu_stat(s);
	MCHK(st.objects == 1 + 50 + 1 + 12, "%" PRIu64 " objects", st.objects);
	tu_close(s);
	ms_check_stats cs = tu_check_sound(path);
	MCHK(cs.objects == 64, "ms_check counted %" PRIu64 " objects", cs.objects);
}

/* ---- opening and writing beside another process ---------------------------------------------------- */

/* This process opens for writing, reads and commits while process A has the store open (read-only when
 * a_readonly); afterwards the commit is there and the store is sound. */
static void write_beside(bool a_readonly)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_create(p);
	tu_puts(s, "k", "v");
	tu_close(s);
	struct proc a;
	proc_start(&a, a_readonly ? "process A (has the store open read-only)"
	                          : "process A (has the store open for writing)");
	proc_ok(&a, a_readonly ? "open %s readonly" : "open %s", p);
	ms_options o = { 0 };
	s = NULL;
	int rc = ms_open(p, &o, &s);
	if (rc == 0) {
		tu_expect_str(s, "k", "v");
		tu_puts(s, "mine", "1");
		tu_close(s);
	}
	proc_quit(&a);
	cr_assert_eq(rc, 0, "ms_open for writing while another process has the store open%s = %d (%s)",
		     a_readonly ? " read-only" : " for writing", rc, ms_strerror(rc));
	s = tu_open(p, MS_READONLY, 0);
	tu_expect_str(s, "mine", "1");
	tu_close(s);
	tu_check_sound(p);
}

Test(multiproc, a_second_process_opens_and_writes_a_store_another_process_writes)
{
	/* mstore.h: "any number of processes may open the same store; write transactions of all of
	 * them take turns". */
	write_beside(false);
}

Test(multiproc, a_reading_process_does_not_keep_writers_out)
{
	/* "Many processes may open the same store at once; readers never block" (design brief). */
	write_beside(true);
}

Test(multiproc, a_writer_that_reopens_beside_another_process_keeps_the_store_sound)
{
	/* ms_test_helper commit: commits multi-key transactions, closing and reopening its handle every
	 * 16th commit or so, while this process has the store open and takes read snapshots. */
	const char *p = tu_path("s.ms");
	ms_store *s = tu_create(p);
	tu_close(s);
	int pp[2];
	cr_assert_eq(pipe(pp), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		child_setup();
		close(pp[0]);
		char fd[16];
		snprintf(fd, sizeof fd, "%d", pp[1]);
		execl(MSTORE_TEST_HELPER, MSTORE_TEST_HELPER, "commit", p, fd, "77", "sync", (char *)NULL);
		_exit(127);
	}
	close(pp[1]);
	char line[64] = { 0 };
	cr_assert_gt(read(pp[0], line, sizeof line - 1), 0, "the helper died before it started");
	fcntl(pp[0], F_SETFL, O_NONBLOCK);
	s = tu_open(p, 0, 0);
	uint64_t last = 0, snaps = 0;
	int bad = 0;
	double t0 = tu_now();
	while (tu_now() - t0 < 2.0 && !bad) {
		char junk[4096];
		while (read(pp[0], junk, sizeof junk) > 0)
			;
		ms_txn *t = tu_begin(s, MS_READONLY);
		ms_val v;
		int rc = ms_txn_get(t, KT_SEQ_KEY, 3, &v);
		if (rc == 0) {
			uint64_t seq = kt_seq_value(v.data);
			bad = seq < last ? -100 : 0;
			last = seq;
			ms_iter *it;
			if ((rc = ms_iter_open(t, &it)) == 0) {
				ms_val k;
				while ((rc = ms_iter_next(it, &k, &v)) == 0)
					;
				ms_iter_close(it);
				if (rc != MS_NOTFOUND)
					bad = rc;
			} else {
				bad = rc;
			}
		} else if (rc != MS_NOTFOUND) {
			bad = rc;
		}
		ms_txn_abort(t);
		snaps++;
		sleep_us(500);
	}
	int st = 0;
	bool exited = waitpid(pid, &st, WNOHANG) == pid;
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	char tail[256] = { 0 };
	ssize_t n = read(pp[0], tail, sizeof tail - 1);
	close(pp[0]);
	cr_assert_eq(bad, 0, "a snapshot of the store another process writes failed with %d (%s) after %" PRIu64
		     " snapshots", bad, ms_strerror(bad), snaps);
	cr_assert(!exited, "the writer failed on its own (status %#x): %s", st, n > 0 ? tail : "");
	tu_close(s);
	s = NULL;
	ms_options o = { 0 };
	int rc = ms_open(p, &o, &s);
	cr_assert_eq(rc, 0, "the store no longer opens: %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	ms_stats stt = tu_stat(s);
	tu_close(s);
	cr_assert_gt(stt.txn_id, 10, "the writer hardly committed");
	tu_check_sound(p);
}

/* ---- the writer lock across processes -------------------------------------------------------------- */

Test(multiproc, write_transactions_of_different_processes_take_turns)
{
	const char *path = tu_path("turns.ms");
	ms_store *s = tu_create(path);
	struct proc a, b;
	proc_start(&a, "process A");
	proc_start(&b, "process B");
	proc_ok(&a, "open %s", path);
	proc_ok(&b, "open %s", path);

	proc_ok(&a, "wbegin");
	proc_ok(&a, "put k 10 1");
	proc_send(&b, "put k 20 2");
	MCHK(proc_line(&b, 0.5) == NULL, "B committed while A held a write transaction: %s", b.line);
	/* Readers never wait, and do not see A's uncommitted put. */
	double t0 = tu_now();
	MCHK(own_check(s, "k", 0, 0) == 1, "an uncommitted put is visible to another process");
	MCHK(tu_now() - t0 < 2.0, "a read waited %.2f s for a writer", tu_now() - t0);
	/* B's waiting write transaction goes ahead once A's ends. */
	proc_ok(&a, "wcommit");
	char *l = proc_line(&b, 30);
	MCHK(l && strcmp(l, "ok") == 0, "B after A committed: %s", l ? l : "(no reply within 30 s)");
	MCHK(own_check(s, "k", 20, 2) == 0, "B's commit, made after A's, is not the newest");

	/* Read-modify-write from three processes at once: no update is lost. */
	proc_send(&a, "incr counter 150");
	proc_send(&b, "incr counter 150");
	for (int i = 0; i < 150; i++) {
		ms_txn *t = tu_begin(s, 0);
		ms_val v;
		uint64_t c = 0;
		int rc = ms_txn_get(t, "counter", 7, &v);
		MCHK(rc == 0 || rc == MS_NOTFOUND, "get counter = %d", rc);
		if (rc == 0) {
			MCHK(v.len == 8, "counter has %zu bytes", v.len);
			memcpy(&c, v.data, 8);
		}
		c++;
		MCHK(ms_txn_put(t, "counter", 7, &c, 8) == 0, "put counter");
		tu_commit(t);
	}
	l = proc_line(&a, 120);
	MCHK(l && strcmp(l, "ok") == 0, "A's increments: %s", l ? l : "(no reply)");
	l = proc_line(&b, 120);
	MCHK(l && strcmp(l, "ok") == 0, "B's increments: %s", l ? l : "(no reply)");
	uint64_t c = 0;
	size_t vl = 0;
	MCHK(ms_get(s, "counter", 7, &c, 8, &vl) == 0 && vl == 8, "get counter");
	MCHK(c == 450, "three processes added 450 and the counter is %" PRIu64 ": write transactions overlapped", c);
	proc_quit(&a);
	proc_quit(&b);
	tu_close(s);
	tu_check_sound(path);
}

Test(multiproc, writer_killed_holding_the_lock_does_not_block_the_others)
{
	const char *path = tu_path("wkill.ms");
	ms_store *s = tu_create(path);
	own_put(s, "base", 1000, 11);
	struct proc a, b;
	for (int round = 0; round < 5; round++) {
		proc_start(&a, "process A (killed inside a write transaction)");
		proc_start(&b, "process B");
		proc_ok(&a, "open %s", path);
		proc_ok(&b, "open %s", path);
		proc_ok(&a, "wbegin");
		proc_ok(&a, "put lost%d 70000 %d", round, round);
		proc_ok(&a, "del base");
		proc_send(&b, "put b%d 100 %d", round, round); /* waits for A's lock */
		MCHK(proc_line(&b, 0.2) == NULL, "B committed while A held a write transaction");
		proc_kill(&a);
		char *l = proc_line(&b, 20);
		MCHK(l && strcmp(l, "ok") == 0, "round %d: B did not get the lock of the killed writer within 20 s: %s", round,
		     l ? l : "(no reply)");
		/* The test process too; and the killed writer's transaction is not there. */
		char key[16];
		snprintf(key, sizeof key, "t%d", round);
		own_put(s, key, 500, 99);
		snprintf(key, sizeof key, "lost%d", round);
		MCHK(own_check(s, key, 0, 0) == 1, "round %d: the killed writer's uncommitted put is visible", round);
		MCHK(own_check(s, "base", 1000, 11) == 0, "round %d: the killed writer's uncommitted delete happened", round);
		snprintf(key, sizeof key, "b%d", round);
		MCHK(own_check(s, key, 100, (uint64_t)round) == 0, "round %d: B's commit is missing", round);
		/* B writes on (the space A had taken is usable again). */
		proc_ok(&b, "fill f%d 20 4000 %d", round, round);
		proc_quit(&b);
	}
	tu_close(s);
	tu_check_sound(path);
	s = tu_open(path, 0, 0);
	MCHK(tu_stat(s).objects == 1 + 5 * (1 + 1 + 20), "%" PRIu64 " objects after reopening", tu_stat(s).objects);
	tu_close(s);
}

/* Start process A with a write transaction open on path in which it has put "held" (1 byte, seed 1). */
static void start_holding_a_write_transaction(struct proc *a, const char *path, const char *name)
{
	proc_start(a, name);
	proc_ok(a, "open %s", path);
	proc_ok(a, "wbegin");
	proc_ok(a, "put held 1 1");
}

struct begin_arg {
	ms_store *s;
	atomic_int done;
	int rc;
	int saw_held;
};

/* A write transaction of this process, begun in a thread (it may wait): it notes whether it sees
 * "held", puts "mine" = "2" and commits. */
static void *begin_write_and_commit(void *arg)
{
	struct begin_arg *a = arg;
	ms_txn *t;
	a->rc = ms_txn_begin(a->s, 0, &t);
	if (a->rc == 0) {
		ms_val v;
		a->saw_held = ms_txn_get(t, "held", 4, &v) == 0;
		a->rc = ms_txn_put(t, "mine", 4, "2", 1);
		a->rc = a->rc ? a->rc : ms_txn_commit(t);
	}
	atomic_store(&a->done, 1);
	return NULL;
}

/* Unlike write_transactions_of_different_processes_take_turns (where the waiting writer is another
 * helper process), here ms_txn_begin of the test process itself waits for another process's write
 * transaction, and once it goes ahead it sees that process's commit. */
Test(multiproc, a_write_transaction_waits_for_another_processs_and_sees_its_commit)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_create(p);
	tu_puts(s, "k", "v");
	struct proc a;
	start_holding_a_write_transaction(&a, p, "process A (holds a write transaction)");
	struct begin_arg b = { .s = s };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, begin_write_and_commit, &b), 0);
	sleep_us(300 * 1000);
	int early = atomic_load(&b.done);
	/* Reads go on meanwhile, and do not see the other process's uncommitted put. */
	tu_expect_absent(s, "held");
	proc_ok(&a, "wcommit"); /* A commits "held" ... */
	proc_quit(&a);          /* ... and exits */
	double t0 = tu_now();
	while (!atomic_load(&b.done) && tu_now() - t0 < 10.0)
		sleep_us(1000);
	cr_assert(atomic_load(&b.done), "ms_txn_begin still waits 10 s after the other process committed");
	pthread_join(th, NULL);
	cr_assert(!early, "ms_txn_begin did not wait for another process's open write transaction (rc %d)", b.rc);
	cr_assert_eq(b.rc, 0, "the write transaction after the other process's = %d (%s)", b.rc, ms_strerror(b.rc));
	cr_assert(b.saw_held, "a write transaction begun after another process's commit does not see it");
	MCHK(own_check(s, "held", 1, 1) == 0, "the other process's commit is not there");
	tu_expect_str(s, "mine", "2");
	tu_close(s);
	tu_check_sound(p);
}

/* Unlike writer_killed_holding_the_lock_does_not_block_the_others (another process waits, the test
 * process writes after it), here the test process's own ms_txn_begin after the kill goes ahead within
 * 10 s, and a process that opens the store afresh after such a kill, with no other process having it
 * open, writes too. */
Test(multiproc, a_writer_killed_inside_its_write_transaction_blocks_neither_an_open_handle_nor_a_new_opener)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_create(p);
	tu_puts(s, "k", "v");
	struct proc a;
	start_holding_a_write_transaction(&a, p, "process A (killed inside a write transaction)");
	proc_kill(&a);
	struct begin_arg b = { .s = s };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, begin_write_and_commit, &b), 0);
	double t0 = tu_now();
	while (!atomic_load(&b.done) && tu_now() - t0 < 10.0)
		sleep_us(1000);
	cr_assert(atomic_load(&b.done), "ms_txn_begin still waits 10 s after the writer holding the lock was killed");
	pthread_join(th, NULL);
	cr_assert_eq(b.rc, 0, "write transaction after the killed writer = %d (%s)", b.rc, ms_strerror(b.rc));
	cr_assert(!b.saw_held, "the killed writer's uncommitted put is visible");
	tu_expect_absent(s, "held");
	tu_expect_str(s, "mine", "2");
	tu_expect_str(s, "k", "v");
	/* And again from a process that opens the store afresh. */
	tu_close(s);
	start_holding_a_write_transaction(&a, p, "process A (killed inside a write transaction, alone)");
	proc_kill(&a);
	s = tu_open(p, 0, 0);
	tu_puts(s, "after", "3");
	tu_expect_absent(s, "held");
	tu_close(s);
	tu_check_sound(p);
}

Test(multiproc, a_writer_killed_with_sigkill_does_not_keep_the_store_busy)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_create(p);
	tu_puts(s, "k", "v");
	tu_close(s);
	struct proc a;
	proc_start(&a, "process A (has the store open for writing, killed)");
	proc_ok(&a, "open %s", p);
	proc_kill(&a);
	s = tu_open(p, 0, 0);
	tu_expect_str(s, "k", "v");
	tu_puts(s, "k2", "v2");
	tu_close(s);
	tu_check_sound(p);
}

/* ---- readers killed while holding a snapshot ------------------------------------------------------- */

#define CHURN_KEYS 32u
#define CHURN_LEN 16384u

/* One commit that overwrites every churn key. */
static void churn_round(ms_store *s, uint64_t seed, unsigned round)
{
	static unsigned char buf[CHURN_LEN];
	ms_txn *t = tu_begin(s, 0);
	for (unsigned k = 0; k < CHURN_KEYS; k++) {
		char key[16];
		snprintf(key, sizeof key, "c%02u", k);
		tu_fill(buf, CHURN_LEN, tu_seed3(seed, k, round));
		int rc = ms_txn_put(t, key, strlen(key), buf, CHURN_LEN);
		MCHK(rc == 0, "churn put = %d (%s)", rc, ms_strerror(rc));
	}
	tu_commit(t);
}

/* A reader in another process holds a snapshot while this process churns, is killed, and its slot
 * is reclaimed: by ms_reader_check when `explicit`, else by the writer of the next commits. Then the
 * file must stop growing under the same churn. */
static void killed_reader(bool explicit)
{
	uint64_t seed = tu_seed() ^ (explicit ? 0x726368ull : 0x727772ull);
	const char *path = tu_path("rkill.ms");
	ms_store *s = tu_create(path);
	unsigned round = 0;
	for (; round < 3; round++)
		churn_round(s, seed, round);
	struct proc a;
	proc_start(&a, "process A (the reader)");
	proc_ok(&a, "open %s readonly", path);
	proc_ok(&a, "rbegin");
	proc_ok(&a, "pin c00 %u %" PRIu64, CHURN_LEN, tu_seed3(seed, 0, round - 1));

	struct reader_list l = readers_of(s);
	const ms_reader_info *r = reader_of(&l, a.pid);
	MCHK(l.n == 1 && r && r->alive == 1, "ms_readers: %zu slots, A's %s", l.n, r ? "dead" : "missing");
	MCHK(tu_stat(s).readers == 1, "ms_stat().readers = %" PRIu64 " with A's one read transaction", tu_stat(s).readers);

	/* While A lives, the churn cannot reuse what A sees: the file grows (by at least the round A
	 * sees), and A's slot reports what commits since its snapshot freed. */
	uint64_t f0 = tu_stat(s).file_bytes;
	const unsigned pinned_rounds = 20;
	for (unsigned i = 0; i < pinned_rounds; i++)
		churn_round(s, seed, round++);
	uint64_t f1 = tu_stat(s).file_bytes;
	uint64_t per_round = (uint64_t)CHURN_KEYS * CHURN_LEN;
	MCHK(f1 - f0 >= per_round, "with a reader pinning, %u rounds of %" PRIu64 " bytes grew the file by only %" PRIu64
	     " bytes: was space seen by A's snapshot reused?", pinned_rounds, per_round, f1 - f0);
	MCHK(strcmp(proc_ok(&a, "repin"), "ok 1") == 0, "A's snapshot was overwritten: %s", a.line);
	l = readers_of(s);
	r = reader_of(&l, a.pid);
	MCHK(r && r->alive && r->pinned_bytes >= per_round * (pinned_rounds - 1),
	     "A's slot reports %" PRIu64 " pinned bytes after %u rounds of %" PRIu64, r ? r->pinned_bytes : 0, pinned_rounds,
	     per_round);

	proc_kill(&a);
	l = readers_of(s);
	r = reader_of(&l, a.pid);
	MCHK(r && r->alive == 0, "after kill -9 A's slot is %s (%zu slots listed, the first of process %" PRIu64 ")",
	     r ? "still reported alive" : "gone before any check", l.n, l.n ? l.v[0].pid : 0);
	/* (No ms_stat here: it looks for the oldest reader too, and would free the slot itself.) */
	if (explicit) {
		unsigned cleared = 99;
		int rc = ms_reader_check(s, &cleared);
		MCHK(rc == 0 && cleared == 1, "ms_reader_check = %d, cleared %u, want 1", rc, cleared);
		l = readers_of(s);
		MCHK(l.n == 0, "%zu slots after ms_reader_check", l.n);
		rc = ms_reader_check(s, &cleared);
		MCHK(rc == 0 && cleared == 0, "a second ms_reader_check cleared %u", cleared);
	} else {
		churn_round(s, seed, round++);
		churn_round(s, seed, round++);
		l = readers_of(s);
		MCHK(l.n == 0, "after two commits the dead reader's slot is still there (%zu slots, alive %d)", l.n,
		     l.n ? l.v[0].alive : -1);
	}
	MCHK(tu_stat(s).readers == 0, "ms_stat().readers = %" PRIu64 " counts a dead process's read transaction",
	     tu_stat(s).readers);
	/* Now the churn reuses space: after a few rounds to settle, the file stops growing. */
	for (unsigned i = 0; i < 4; i++)
		churn_round(s, seed, round++);
	uint64_t f2 = tu_stat(s).file_bytes;
	for (unsigned i = 0; i < 30; i++)
		churn_round(s, seed, round++);
	uint64_t f3 = tu_stat(s).file_bytes;
	MCHK(f3 <= f2 + 2 * per_round, "30 rounds after the reader died the file still grew from %" PRIu64 " to %" PRIu64
	     " bytes (%" PRIu64 " per round): the space it pinned is not reused", f2, f3, per_round);
	MCHK(tu_stat(s).pinned_bytes <= 2 * per_round, "%" PRIu64 " bytes still pinned", tu_stat(s).pinned_bytes);
	tu_close(s);
	tu_check_sound(path);
}

Test(multiproc, reader_killed_holding_a_snapshot_is_stale_and_freed_by_ms_reader_check)
{
	killed_reader(true);
}

Test(multiproc, reader_killed_holding_a_snapshot_is_freed_by_the_next_writer)
{
	killed_reader(false);
}

Test(multiproc, stat_readers_counts_read_transactions_of_every_process)
{
	const char *path = tu_path("count.ms");
	ms_store *s = tu_create(path);
	own_put(s, "x", 10, 1);
	struct proc a, b;
	proc_start(&a, "process A");
	proc_start(&b, "process B");
	proc_ok(&a, "open %s", path);
	proc_ok(&b, "open %s readonly", path);
	MCHK(tu_stat(s).readers == 0, "readers %" PRIu64 " before any read transaction", tu_stat(s).readers);
	proc_ok(&a, "rbegin");
	proc_ok(&a, "rbegin");
	proc_ok(&b, "rbegin");
	MCHK(tu_stat(s).readers == 3, "readers %" PRIu64 ", want A's 2 + B's 1", tu_stat(s).readers);
	ms_txn *t = tu_begin(s, MS_READONLY);
	MCHK(tu_stat(s).readers == 4, "readers %" PRIu64 ", want 3 + the test's own", tu_stat(s).readers);
	unsigned long long n = 0;
	MCHK(sscanf(proc_ok(&b, "stat"), "ok %*u %llu", &n) == 1 && n == 4, "B's ms_stat: %s", b.line);
	struct reader_list l = readers_of(s);
	MCHK(l.n == 4, "ms_readers lists %zu slots, want 4", l.n);
	unsigned na = 0, nb = 0, nself = 0;
	for (size_t i = 0; i < l.n; i++) {
		na += l.v[i].pid == (uint64_t)a.pid;
		nb += l.v[i].pid == (uint64_t)b.pid;
		nself += l.v[i].pid == (uint64_t)getpid();
		MCHK(l.v[i].alive == 1, "a live reader is reported dead");
		MCHK(l.v[i].txn_id == tu_stat(s).txn_id, "a reader's snapshot %" PRIu64 " is not the newest commit %" PRIu64,
		     l.v[i].txn_id, tu_stat(s).txn_id);
	}
	MCHK(na == 2 && nb == 1 && nself == 1, "slots by process: A %u, B %u, the test %u", na, nb, nself);
	proc_ok(&a, "rend");
	MCHK(tu_stat(s).readers == 3, "readers %" PRIu64 " after A ended one", tu_stat(s).readers);
	proc_quit(&b); /* closing ends B's read transaction */
	MCHK(tu_stat(s).readers == 2, "readers %" PRIu64 " after B closed", tu_stat(s).readers);
	proc_kill(&a);
	MCHK(tu_stat(s).readers == 1, "readers %" PRIu64 " after A was killed (only the test's own is live)",
	     tu_stat(s).readers);
	ms_txn_abort(t);
	MCHK(tu_stat(s).readers == 0, "readers %" PRIu64 " at the end", tu_stat(s).readers);
	tu_close(s);
}

Test(multiproc, a_dead_readers_slot_is_reclaimed)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	ms_stats st0 = tu_stat(s);
	static unsigned char buf[10000];
	for (unsigned i = 0; i < 100; i++) {
		char k[16];
		snprintf(k, sizeof k, "r%u", i);
		tu_put(s, k, buf, sizeof buf);
	}
	struct proc a;
	proc_start(&a, "process A (a reader, killed)");
	proc_ok(&a, "open %s readonly", p);
	proc_ok(&a, "rbegin");
	cr_assert_eq(tu_stat(s).readers, 1);
	for (unsigned i = 0; i < 100; i++) {
		char k[16];
		snprintf(k, sizeof k, "r%u", i);
		cr_assert_eq(ms_del(s, k, strlen(k)), 0);
	}
	ms_stats st = tu_stat(s);
	cr_assert_geq(st.used_bytes, 100u * sizeof buf, "the other process's snapshot does not pin its space");
	proc_kill(&a);
	unsigned cleared = 0;
	cr_assert_eq(ms_reader_check(s, &cleared), 0);
	cr_assert_eq(cleared, 1, "ms_reader_check cleared %u slots of one dead reader", cleared);
	tu_puts(s, "x", "y"); /* a commit, in case reuse waits for the next writer */
	cr_assert_eq(ms_del(s, "x", 1), 0);
	st = tu_stat(s);
	cr_assert_eq(st.readers, 0, "readers = %" PRIu64 " after the only reader died", st.readers);
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	cr_assert_leq(st.used_bytes, st0.used_bytes + 8 * page,
		      "used_bytes %" PRIu64 " after the dead reader's slot was freed; a new store has %" PRIu64, st.used_bytes,
		      st0.used_bytes);
	tu_close(s);
}

/* Beside stat_readers_counts_read_transactions_of_every_process: both processes here open the store
 * read-only, the other one first. */
Test(multiproc, a_read_only_handle_counts_the_read_transactions_of_another_read_only_process)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_create(p);
	tu_puts(s, "k", "v");
	tu_close(s);
	struct proc a;
	proc_start(&a, "process A (a reader)");
	proc_ok(&a, "open %s readonly", p);
	proc_ok(&a, "rbegin");
	s = tu_open(p, MS_READONLY, 0);
	ms_stats st = tu_stat(s);
	ms_txn *t = tu_begin(s, MS_READONLY);
	ms_stats st2 = tu_stat(s);
	ms_txn_abort(t);
	tu_close(s);
	proc_quit(&a);
	cr_assert_eq(st.readers, 1, "readers = %" PRIu64 " while another process holds one read transaction", st.readers);
	cr_assert_eq(st2.readers, 2, "readers = %" PRIu64 " with one read transaction here and one there", st2.readers);
}

/* ---- the lock file ----------------------------------------------------------------------------------- */

static void put_many(ms_store *s, const char *prefix, unsigned n, size_t len, uint64_t seed)
{
	unsigned char *b = malloc(len);
	cr_assert_not_null(b);
	ms_txn *t = tu_begin(s, 0);
	for (unsigned i = 0; i < n; i++) {
		char key[64];
		snprintf(key, sizeof key, "%s%u", prefix, i);
		tu_fill(b, len, seed + i);
		MCHK(ms_txn_put(t, key, strlen(key), b, len) == 0, "put %s", key);
	}
	tu_commit(t);
	free(b);
}

Test(multiproc, lock_file_deleted_while_no_process_has_the_store_open_loses_nothing)
{
	uint64_t seed = tu_seed() ^ 0x6c6f636bull;
	const char *path = tu_path("lf.ms");
	ms_store *s = tu_create(path);
	put_many(s, "d", 100, 3000, seed);
	struct proc a;
	proc_start(&a, "process A");
	proc_ok(&a, "open %s", path);
	proc_ok(&a, "fillcheck d 100 3000 %" PRIu64, seed);
	proc_ok(&a, "put a 500 7");
	proc_quit(&a);
	tu_close(s);
	MCHK(access(lock_path(path), F_OK) == 0, "no lock file %s beside the store", lock_path(path));
	MCHK(unlink(lock_path(path)) == 0, "unlink");

	s = tu_open(path, 0, 0);
	MCHK(access(lock_path(path), F_OK) == 0, "the lock file was not made again");
	proc_start(&a, "process A (after the lock file was deleted)");
	proc_ok(&a, "open %s", path);
	proc_ok(&a, "fillcheck d 100 3000 %" PRIu64, seed);
	MCHK(strcmp(proc_cmd(&a, "check a 500 7"), "ok") == 0, "A: %s", a.line);
	proc_ok(&a, "put b 600 8");
	MCHK(own_check(s, "b", 600, 8) == 0, "A's commit after the lock file was remade is not seen");
	own_put(s, "c", 700, 9);
	MCHK(strcmp(proc_cmd(&a, "check c 700 9"), "ok") == 0, "A: %s", a.line);

	/* Everyone gone uncleanly (a writer killed inside its transaction, a reader killed holding a
	 * snapshot), then the lock file deleted: still nothing committed is lost. */
	struct proc r;
	proc_start(&r, "process R (reader)");
	proc_ok(&r, "open %s", path);
	proc_ok(&r, "rbegin");
	tu_close(s);
	proc_ok(&a, "wbegin");
	proc_ok(&a, "put uncommitted 100 1");
	proc_kill(&a);
	proc_kill(&r);
	MCHK(unlink(lock_path(path)) == 0, "unlink");
	s = tu_open(path, 0, 0);
	MCHK(own_check(s, "uncommitted", 0, 0) == 1, "an uncommitted put survived");
	MCHK(own_check(s, "c", 700, 9) == 0 && own_check(s, "b", 600, 8) == 0 && own_check(s, "a", 500, 7) == 0,
	     "a commit was lost");
	for (unsigned i = 0; i < 100; i++) {
		char key[16];
		snprintf(key, sizeof key, "d%u", i);
		MCHK(own_check(s, key, 3000, seed + i) == 0, "%s lost", key);
	}
	MCHK(readers_of(s).n == 0, "the new lock file lists readers");
	own_put(s, "after", 10, 1);
	tu_close(s);
	tu_check_sound(path);
}

/* What a crash may leave in place of the lock file, when no process has the store open any more. */
Test(multiproc, lock_file_left_broken_while_no_process_has_the_store_open_is_rebuilt)
{
	uint64_t seed = tu_seed() ^ 0x62726b6eull;
	const char *path = tu_path("lfb.ms");
	ms_store *s = tu_create(path);
	put_many(s, "d", 20, 1000, seed);
	tu_close(s);
	size_t real_len = 0;
	unsigned char *real = tu_read_file(lock_path(path), &real_len);
	MCHK(real && real_len > 0, "no lock file after a close");
	const char *what[] = { "an empty file", "4 KiB of zeros", "64 KiB of random bytes", "half of a lock file",
			       "a lock file with its writer mutex held by a killed process" };
	for (unsigned v = 0; v < sizeof what / sizeof what[0]; v++) {
		size_t len = v == 0 ? 0 : v == 1 ? 4096 : v == 2 ? 65536 : real_len / 2;
		if (v < 4) {
			unsigned char *b = calloc(1, len ? len : 1);
			cr_assert_not_null(b);
			if (v == 2)
				tu_fill(b, len, seed + v);
			if (v == 3)
				memcpy(b, real, len);
			MCHK(tu_write_file(lock_path(path), b, len), "write lock file");
			free(b);
		} else {
			struct proc k;
			proc_start(&k, "process K (killed holding the writer lock)");
			proc_ok(&k, "open %s", path);
			proc_ok(&k, "wbegin");
			proc_kill(&k);
		}
		ms_options o = { 0 };
		ms_store *st = NULL;
		int rc = ms_open(path, &o, &st);
		MCHK(rc == 0, "with %s as the lock file ms_open = %d (%s): %s", what[v], rc, ms_strerror(rc), ms_last_error());
		/* The writer lock and the reader table work between two processes again. */
		struct proc a;
		proc_start(&a, "process A");
		proc_ok(&a, "open %s", path);
		proc_ok(&a, "fillcheck d 20 1000 %" PRIu64, seed);
		proc_ok(&a, "rbegin");
		MCHK(readers_of(st).n == 1, "with %s: the reader table does not show A's reader", what[v]);
		proc_ok(&a, "rend");
		proc_send(&a, "incr n 50");
		for (int i = 0; i < 50; i++) {
			ms_txn *t = tu_begin(st, 0);
			ms_val val;
			uint64_t c = 0;
			if (ms_txn_get(t, "n", 1, &val) == 0)
				memcpy(&c, val.data, 8);
			c++;
			MCHK(ms_txn_put(t, "n", 1, &c, 8) == 0, "put n");
			tu_commit(t);
		}
		char *l = proc_line(&a, 60);
		MCHK(l && strcmp(l, "ok") == 0, "A: %s", l ? l : "(no reply)");
		uint64_t c = 0;
		size_t vl;
		MCHK(ms_get(st, "n", 1, &c, 8, &vl) == 0, "get n");
		MCHK(c == 100 * (v + 1), "with %s as the lock file, two processes' 100 increments made %" PRIu64 " of %u",
		     what[v], c - 100 * v, 100);
		proc_quit(&a);
		tu_close(st);
		tu_check_sound(path);
	}
	free(real);
}

Test(multiproc, processes_racing_to_open_first_do_not_corrupt_the_lock_file)
{
	uint64_t seed = tu_seed() ^ 0x72616365ull;
	tu_rng r = { seed };
	const char *path = tu_path("race.ms");
	unsigned rounds = (unsigned)tu_env_u64("MS_OPEN_RACES", 60);
	uint64_t expect = 0;
	double t0 = tu_now();
	for (unsigned round = 0; round < rounds; round++) {
		/* Every other round the store too is missing, so the two also race to create it. */
		bool fresh = round % 2 == 0;
		if (fresh) {
			unlink(path);
			expect = 0;
		}
		unlink(lock_path(path));
		struct proc a, b;
		proc_start(&a, "process A");
		proc_start(&b, "process B");
		proc_send(&a, "open %s create nosync", path);
		sleep_us(tu_below(&r, 400));
		proc_send(&b, "open %s create nosync", path);
		char *l = proc_line(&a, 30);
		MCHK(l && strcmp(l, "ok") == 0, "round %u: A's open: %s", round, l ? l : "(no reply)");
		l = proc_line(&b, 30);
		MCHK(l && strcmp(l, "ok") == 0, "round %u: B's open: %s", round, l ? l : "(no reply)");
		proc_send(&a, "incr n 10");
		proc_send(&b, "incr n 10");
		l = proc_line(&a, 60);
		MCHK(l && strcmp(l, "ok") == 0, "round %u: A: %s", round, l ? l : "(no reply)");
		l = proc_line(&b, 60);
		MCHK(l && strcmp(l, "ok") == 0, "round %u: B: %s", round, l ? l : "(no reply)");
		proc_ok(&a, "rbegin");
		l = proc_ok(&b, "readers");
		MCHK(strncmp(l, "ok 1 ", 5) == 0, "round %u: B sees the reader table as '%s', want A's one reader", round, l);
		expect += 20;
		if (tu_below(&r, 2)) {
			proc_quit(&a);
			proc_quit(&b);
		} else {
			proc_kill(&a);
			proc_kill(&b);
		}
		ms_store *s = tu_open(path, 0, 0);
		uint64_t c = 0;
		size_t vl = 0;
		MCHK(ms_get(s, "n", 1, &c, 8, &vl) == 0 && vl == 8, "round %u: get n", round);
		MCHK(c == expect, "round %u: the counter is %" PRIu64 ", want %" PRIu64 ": two writers overlapped", round, c,
		     expect);
		MCHK(readers_of(s).n == 0, "round %u: readers listed after everyone left", round);
		tu_close(s);
		if (round % 10 == 9 || round + 1 == rounds)
			tu_check_sound(path);
	}
	cr_log_info("open race: %u rounds in %.1f s (MS_TEST_SEED=%" PRIu64 ")", rounds, tu_now() - t0, tu_seed());
}

/* ---- mstore readers --------------------------------------------------------------------------------- */

struct cli_run {
	int code;
	char out[16384];
	char err[4096];
};

static void read_into(const char *path, char *buf, size_t cap)
{
	size_t len = 0;
	unsigned char *d = tu_read_file(path, &len);
	if (len >= cap)
		len = cap - 1;
	if (d)
		memcpy(buf, d, len);
	buf[d ? len : 0] = 0;
	free(d);
}

static void run_cli(struct cli_run *r, ...)
{
	const char *argv[16];
	int argc = 0;
	va_list ap;
	argv[argc++] = MSTORE_BIN;
	va_start(ap, r);
	while ((argv[argc] = va_arg(ap, const char *)) != NULL)
		argc++;
	va_end(ap);
	char out[PATH_MAX], err[PATH_MAX];
	snprintf(out, sizeof out, "%s/cli.out", tu_dir);
	snprintf(err, sizeof err, "%s/cli.err", tu_dir);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		child_setup();
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int n = open("/dev/null", O_RDONLY);
		dup2(n, 0);
		dup2(o, 1);
		dup2(e, 2);
		execv(MSTORE_BIN, (char **)argv);
		_exit(127);
	}
	int st = 0;
	MCHK(waitpid(pid, &st, 0) == pid, "waitpid");
	r->code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	read_into(out, r->out, sizeof r->out);
	read_into(err, r->err, sizeof r->err);
}

/* The line of the human listing that starts with pid, or NULL. */
static const char *line_of(const char *out, pid_t pid)
{
	static char line[512];
	char want[32];
	snprintf(want, sizeof want, "%ld ", (long)pid);
	for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, want, strlen(want)) == 0) {
			size_t n = strcspn(p, "\n");
			snprintf(line, sizeof line, "%.*s", (int)n, p);
			return line;
		}
	}
	return NULL;
}

Test(multiproc, cli_readers_shows_another_process_reader_and_clears_a_killed_one)
{
	const char *path = tu_path("cli.ms");
	ms_store *s = tu_create(path);
	put_many(s, "k", 64, 20000, 5);
	tu_close(s);
	struct cli_run r;

	run_cli(&r, "readers", path, NULL);
	MCHK(r.code == 0, "mstore readers on an idle store: exit %d: %s", r.code, r.err);
	MCHK(strstr(r.out, "no readers") != NULL, "mstore readers on an idle store printed:\n%s", r.out);

	struct proc a, b;
	proc_start(&a, "process A (live reader)");
	proc_start(&b, "process B (reader to be killed)");
	proc_ok(&a, "open %s readonly", path);
	proc_ok(&b, "open %s", path);
	proc_ok(&a, "rbegin");
	proc_ok(&b, "rbegin");
	s = tu_open(path, 0, 0);
	put_many(s, "k", 64, 20000, 6); /* overwrites: both readers pin the old values */

	run_cli(&r, "readers", path, NULL);
	MCHK(r.code == 0 && r.err[0] == 0, "mstore readers: exit %d: %s", r.code, r.err);
	const char *la = line_of(r.out, a.pid);
	MCHK(la && strstr(la, " live") && strstr(la, "iB "), "A's line (live, pinning over a MiB) in:\n%s", r.out);
	MCHK(strstr(r.out, "2 readers") != NULL, "the summary line is missing in:\n%s", r.out);
	run_cli(&r, "readers", path, "--json", NULL);
	char want[96];
	snprintf(want, sizeof want, "{\"pid\":%ld,\"txn_id\":", (long)a.pid);
	MCHK(r.code == 0 && strstr(r.out, want) && strstr(r.out, "\"alive\":true") && strstr(r.out, "\"count\":2") &&
	     strstr(r.out, "\"stale\":0}"), "mstore readers --json:\n%s", r.out);
	MCHK(strstr(r.out, "\"cleared\"") == NULL, "--json without --clear-stale reports cleared:\n%s", r.out);

	proc_kill(&b);
	run_cli(&r, "readers", path, "--bytes", NULL);
	const char *lb = line_of(r.out, b.pid);
	MCHK(r.code == 0 && lb && strstr(lb, "stale"), "B's line after kill -9 in:\n%s", r.out);
	MCHK(strstr(line_of(r.out, a.pid), "live") && strstr(r.out, "1 stale"), "mstore readers:\n%s", r.out);
	struct reader_list rl = readers_of(s);
	const ms_reader_info *rb = reader_of(&rl, b.pid);
	long pid = 0;
	unsigned long long snap = 0, pinned = 0;
	MCHK(rb && sscanf(lb, "%ld %llu %*s %*s %llu", &pid, &snap, &pinned) == 3 && pinned == rb->pinned_bytes &&
	     snap == rb->txn_id && pinned >= 64 * 20000, "--bytes: B's line '%s', the library says snapshot %" PRIu64
	     ", %" PRIu64 " bytes pinned", lb, rb ? rb->txn_id : 0, rb ? rb->pinned_bytes : 0);

	run_cli(&r, "readers", path, "--clear-stale", NULL);
	MCHK(r.code == 0 && strstr(r.out, "cleared 1 stale reader slot\n"), "mstore readers --clear-stale:\n%s%s", r.out,
	     r.err);
	run_cli(&r, "readers", path, "--json", "--clear-stale", NULL);
	MCHK(r.code == 0 && strstr(r.out, "\"count\":1,\"stale\":0,\"cleared\":0}"), "second --clear-stale:\n%s", r.out);
	run_cli(&r, "readers", path, NULL);
	MCHK(line_of(r.out, b.pid) == NULL && line_of(r.out, a.pid) != NULL, "after --clear-stale:\n%s", r.out);
	MCHK(readers_of(s).n == 1, "the library still lists %zu slots", readers_of(s).n);

	run_cli(&r, "readers", NULL);
	MCHK(r.code == 2, "mstore readers without FILE: exit %d", r.code);
	run_cli(&r, "readers", path, "--frob", NULL);
	MCHK(r.code == 2, "an unknown option: exit %d", r.code);
	run_cli(&r, "readers", "--help", NULL);
	MCHK(r.code == 0 && strstr(r.out, "Usage: mstore readers"), "--help: exit %d", r.code);
	run_cli(&r, "readers", tu_path("missing.ms"), NULL);
	MCHK(r.code == 1 && strchr(r.err, '\n') == r.err + strlen(r.err) - 1 && strncmp(r.err, "mstore: ", 8) == 0,
	     "a missing store: exit %d, stderr '%s'", r.code, r.err);
	proc_quit(&a);
	tu_close(s);
}

/* ---- the workloads: four processes of mixed reads and writes --------------------------------------- *
 * The values' format is that of tests/helper/ms_test_helper.c's mixed mode; keep the two in step. */

#define MP_NKEYS 48u
#define MP_CLOCK "clock"
#define MP_MAGIC 0x3156504du
#define MP_HDR 32u
#define MP_MAXOPS 6u

struct mp_hdr {
	uint32_t magic, key, wid, len;
	uint64_t wseq, clock;
};

static uint64_t mp_fill_seed(const struct mp_hdr *h)
{
	return tu_seed3(0x6d70000000ull ^ h->key, ((uint64_t)h->wid << 32) ^ h->wseq, h->clock ^ h->len);
}

static const char *mp_verify(const void *p, size_t len, unsigned k, struct mp_hdr *h)
{
	if (len < MP_HDR)
		return "shorter than a header";
	memcpy(h, p, MP_HDR);
	if (h->magic != MP_MAGIC)
		return "bad magic";
	if (h->key != k)
		return "the value of another key";
	if (h->len != len)
		return "length differs from its header";
	if (!tu_check_fill((const unsigned char *)p + MP_HDR, len - MP_HDR, mp_fill_seed(h)))
		return "bytes differ from what its writer wrote";
	return NULL;
}

struct wk_op {
	bool del;
	unsigned key;
	uint32_t len;
};

struct wk_pre {  /* a transaction a worker was about to commit */
	uint64_t c, ts, wseq;
	uint32_t wid;
	unsigned n;
	struct wk_op ops[MP_MAXOPS];
	bool acked;
};

struct wk_sample { /* worker `by` saw key k of snapshot `snap` hold commit vc's value (0: absent) */
	uint64_t snap, vc, wseq;
	uint32_t by, wid, len;
	unsigned k;
};

struct workload {
	const char *path;
	uint64_t seed;
	unsigned nwid;      /* workers are 1..nwid */
	bool *killed;       /* by worker id */
	size_t killed_cap;
	struct wk_pre *pre;
	size_t npre, cap_pre;
	struct wk_sample *smp;
	size_t nsmp, cap_smp;
	uint64_t acks;
};

static void wk_log_path(const struct workload *w, unsigned wid, char *buf, size_t cap)
{
	(void)w;
	snprintf(buf, cap, "%s/worker-%u.log", tu_dir, wid);
}

/* The log's last complete line into line ("" when none). */
static void wk_last_line(int fd, char *line, size_t cap)
{
	char b[600];
	struct stat sb;
	line[0] = 0;
	if (fstat(fd, &sb) || sb.st_size == 0)
		return;
	off_t from = sb.st_size > (off_t)sizeof b ? sb.st_size - (off_t)sizeof b : 0;
	ssize_t n = pread(fd, b, sizeof b, from);
	if (n <= 0 || b[n - 1] != '\n')
		return;
	b[n - 1] = 0;
	char *start = strrchr(b, '\n');
	snprintf(line, cap, "%s", start ? start + 1 : b);
}

/* The "fail" line of a worker's log, for a message. */
static const char *wk_failure(const struct workload *w, unsigned wid)
{
	static char why[700];
	char path[PATH_MAX];
	wk_log_path(w, wid, path, sizeof path);
	size_t len = 0;
	char *d = (char *)tu_read_file(path, &len);
	snprintf(why, sizeof why, "(no fail line in its log)");
	for (char *p = d; p && p < d + len;) {
		char *nl = memchr(p, '\n', (size_t)(d + len - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(d + len - p);
		if (n > 5 && strncmp(p, "fail ", 5) == 0)
			snprintf(why, sizeof why, "%.*s", (int)n, p);
		p += n + 1;
	}
	free(d);
	return why;
}

struct worker {
	pid_t pid;
	unsigned wid;
	int log_fd; /* ours, for reading */
};

static void wk_spawn(struct workload *w, struct worker *k, double seconds)
{
	k->wid = ++w->nwid;
	if (w->nwid >= w->killed_cap) {
		size_t cap = w->killed_cap ? 2 * w->killed_cap : 1024;
		w->killed = realloc(w->killed, cap * sizeof *w->killed);
		cr_assert_not_null(w->killed);
		memset(w->killed + w->killed_cap, 0, (cap - w->killed_cap) * sizeof *w->killed);
		w->killed_cap = cap;
	}
	char log[PATH_MAX], seed[32], wid[16], secs[32];
	wk_log_path(w, k->wid, log, sizeof log);
	k->log_fd = open(log, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
	MCHK(k->log_fd >= 0, "create %s: %s", log, strerror(errno));
	snprintf(seed, sizeof seed, "%" PRIu64, w->seed);
	snprintf(wid, sizeof wid, "%u", k->wid);
	snprintf(secs, sizeof secs, "%.3f", seconds);
	k->pid = fork();
	cr_assert_geq(k->pid, 0);
	if (k->pid == 0) {
		child_setup();
		execl(MSTORE_TEST_HELPER, MSTORE_TEST_HELPER, "mixed", w->path, log, seed, wid, secs, "sync", (char *)NULL);
		_exit(127);
	}
}

/* SIGKILL a worker and reap it; it must not have ended by itself. */
static void wk_kill(struct workload *w, struct worker *k)
{
	int st = 0;
	kill(k->pid, SIGKILL);
	MCHK(waitpid(k->pid, &st, 0) == k->pid, "waitpid");
	MCHK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "worker %u ended by itself (status %#x) before the kill: %s",
	     k->wid, st, wk_failure(w, k->wid));
	w->killed[k->wid] = true;
	close(k->log_fd);
	k->pid = 0;
}

/* Wait up to `seconds` for a worker to end by itself; it must exit 0 (or die of `sig`, counted as a
 * kill). */
static void wk_reap(struct workload *w, struct worker *k, double seconds, int sig)
{
	double end = tu_now() + seconds;
	int st = 0;
	pid_t r;
	while ((r = waitpid(k->pid, &st, WNOHANG)) == 0 && tu_now() < end)
		sleep_us(2000);
	if (r == 0) {
		kill(k->pid, SIGKILL);
		waitpid(k->pid, &st, 0);
		MCHK(false, "worker %u did not finish within %.0f s (waiting for the writer lock?)", k->wid, seconds);
	}
	if (sig && WIFSIGNALED(st) && WTERMSIG(st) == sig)
		w->killed[k->wid] = true;
	else
		MCHK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %u ended with status %#x: %s", k->wid, st,
		     wk_failure(w, k->wid));
	close(k->log_fd);
	k->pid = 0;
}

static void wk_parse(struct workload *w, unsigned wid)
{
	char path[PATH_MAX];
	wk_log_path(w, wid, path, sizeof path);
	size_t len = 0;
	char *d = (char *)tu_read_file(path, &len);
	MCHK(d != NULL, "cannot read %s", path);
	size_t first_pre = w->npre;
	for (char *p = d; p < d + len;) {
		char *nl = memchr(p, '\n', (size_t)(d + len - p));
		if (!nl)
			break; /* a line cut by the kill is not used */
		*nl = 0;
		char *line = p;
		p = nl + 1;
		if (strncmp(line, "pre ", 4) == 0) {
			if (w->npre == w->cap_pre) {
				w->cap_pre = w->cap_pre ? 2 * w->cap_pre : 4096;
				w->pre = realloc(w->pre, w->cap_pre * sizeof *w->pre);
				cr_assert_not_null(w->pre);
			}
			struct wk_pre *e = &w->pre[w->npre];
			memset(e, 0, sizeof *e);
			unsigned long long c, wseq, ts;
			int used = 0;
			MCHK(sscanf(line, "pre %llu %u %llu %llu %u%n", &c, &e->wid, &wseq, &ts, &e->n, &used) == 5 &&
			     e->wid == wid && e->n >= 1 && e->n <= MP_MAXOPS, "worker %u: bad line '%s'", wid, line);
			e->c = c;
			e->wseq = wseq;
			e->ts = ts;
			char *q = line + used;
			for (unsigned i = 0; i < e->n; i++) {
				unsigned k = 0, l = 0;
				int m = 0;
				if (sscanf(q, " d%u%n", &k, &m) == 1)
					e->ops[i] = (struct wk_op){ true, k, 0 };
				else if (sscanf(q, " p%u:%u%n", &k, &l, &m) == 2)
					e->ops[i] = (struct wk_op){ false, k, l };
				else
					MCHK(false, "worker %u: bad op in '%s'", wid, line);
				MCHK(k < MP_NKEYS, "worker %u: key %u", wid, k);
				q += m;
			}
			MCHK(e->wseq == w->npre - first_pre + 1, "worker %u: its transaction %" PRIu64 " is its %zu-th", wid,
			     e->wseq, w->npre - first_pre + 1);
			w->npre++;
		} else if (strncmp(line, "ack ", 4) == 0) {
			unsigned long long c, wseq;
			unsigned aw;
			MCHK(sscanf(line, "ack %llu %u %llu", &c, &aw, &wseq) == 3, "worker %u: bad line '%s'", wid, line);
			struct wk_pre *e = w->npre > first_pre ? &w->pre[w->npre - 1] : NULL;
			MCHK(e && e->c == c && e->wseq == wseq && aw == wid && !e->acked, "worker %u: '%s' acknowledges no "
			     "prepared transaction", wid, line);
			e->acked = true;
			w->acks++;
		} else if (line[0] == 'r' && line[1] == ' ') {
			if (w->nsmp == w->cap_smp) {
				w->cap_smp = w->cap_smp ? 2 * w->cap_smp : 65536;
				w->smp = realloc(w->smp, w->cap_smp * sizeof *w->smp);
				cr_assert_not_null(w->smp);
			}
			struct wk_sample *s = &w->smp[w->nsmp++];
			unsigned long long snap, vc, wseq;
			MCHK(sscanf(line, "r %llu %u %llu %u %llu %u", &snap, &s->k, &vc, &s->wid, &wseq, &s->len) == 6 &&
			     s->k < MP_NKEYS, "worker %u: bad line '%s'", wid, line);
			s->snap = snap;
			s->vc = vc;
			s->wseq = wseq;
			s->by = wid;
		} else if (strncmp(line, "fail", 4) == 0) {
			MCHK(false, "worker %u reported: %s", wid, line);
		} else {
			MCHK(strcmp(line, "start") == 0 || strcmp(line, "end") == 0 || strncmp(line, "R ", 2) == 0,
			     "worker %u: unknown line '%s'", wid, line);
		}
	}
	free(d);
}

static uint64_t read_clock(ms_txn *t)
{
	ms_val v;
	int rc = ms_txn_get(t, MP_CLOCK, strlen(MP_CLOCK), &v);
	if (rc == MS_NOTFOUND)
		return 0;
	MCHK(rc == 0 && v.len == 8, "get clock = %d (%s), %zu bytes", rc, ms_strerror(rc), rc ? 0 : v.len);
	uint64_t c = 0;
	for (int i = 7; i >= 0; i--)
		c = (c << 8) | ((const unsigned char *)v.data)[i];
	return c;
}

struct wk_change { /* commit c set key k to the value of commit c (put: pre index) or deleted it */
	uint64_t c;
	long pre;  /* -1: deleted */
	uint32_t len;
};

/* After every worker is gone: order the commits by clock (each one acknowledged, or the last one
 * prepared for that clock by a killed worker), replay them, and check every read any worker made
 * and the store's final content against it. */
static void wk_verify(struct workload *w, const char *what)
{
	for (unsigned wid = 1; wid <= w->nwid; wid++)
		wk_parse(w, wid);
	ms_store *s = tu_open(w->path, 0, 0);
	ms_txn *t = tu_begin(s, MS_READONLY);
	uint64_t final = read_clock(t);

	uint64_t maxc = final + 1;
	for (size_t i = 0; i < w->npre; i++) {
		MCHK(w->pre[i].c <= final + 1, "%s: worker %u prepared clock %" PRIu64 " on top of commit %" PRIu64
		     ", but the store ends at %" PRIu64 ": a commit it read was lost", what, w->pre[i].wid, w->pre[i].c,
		     w->pre[i].c - 1, final);
		MCHK(!w->pre[i].acked || w->pre[i].c <= final, "%s: commit %" PRIu64 " (worker %u) was acknowledged but the "
		     "store ends at %" PRIu64, what, w->pre[i].c, w->pre[i].wid, final);
	}
	long *best = malloc((maxc + 1) * sizeof *best), *acked = malloc((maxc + 1) * sizeof *acked);
	cr_assert(best && acked);
	for (uint64_t c = 0; c <= maxc; c++)
		best[c] = acked[c] = -1;
	for (size_t i = 0; i < w->npre; i++) {
		const struct wk_pre *e = &w->pre[i];
		if (best[e->c] < 0 || w->pre[best[e->c]].ts < e->ts)
			best[e->c] = (long)i;
		if (e->acked) {
			MCHK(acked[e->c] < 0, "%s: workers %u and %u both committed clock %" PRIu64 ": their write transactions "
			     "overlapped", what, w->pre[acked[e->c]].wid, e->wid, e->c);
			acked[e->c] = (long)i;
		}
	}
	uint64_t in_doubt = 0;
	for (uint64_t c = 1; c <= final; c++) {
		MCHK(best[c] >= 0, "%s: the store holds commit %" PRIu64 " that no worker prepared", what, c);
		const struct wk_pre *e = &w->pre[best[c]];
		if (acked[c] >= 0) {
			MCHK(acked[c] == best[c], "%s: worker %u prepared clock %" PRIu64 " after worker %u's commit of it was "
			     "acknowledged: a write transaction began on a stale state", what, e->wid, c, w->pre[acked[c]].wid);
		} else {
			MCHK(w->killed[e->wid], "%s: commit %" PRIu64 " of worker %u, which was not killed, is in the store but "
			     "was not acknowledged", what, c, e->wid);
			in_doubt++;
		}
	}

	/* Replay, keeping each key's history for the reads. */
	struct wk_change *hist[MP_NKEYS];
	size_t nh[MP_NKEYS], caph[MP_NKEYS];
	for (unsigned k = 0; k < MP_NKEYS; k++) {
		nh[k] = 0;
		caph[k] = 64;
		hist[k] = malloc(caph[k] * sizeof *hist[k]);
		cr_assert_not_null(hist[k]);
	}
	for (uint64_t c = 1; c <= final; c++) {
		const struct wk_pre *e = &w->pre[best[c]];
		for (unsigned i = 0; i < e->n; i++) {
			unsigned k = e->ops[i].key;
			struct wk_change ch = { c, e->ops[i].del ? -1 : best[c], e->ops[i].len };
			if (nh[k] && hist[k][nh[k] - 1].c == c) {
				hist[k][nh[k] - 1] = ch; /* the last op of a commit on a key wins */
				continue;
			}
			if (nh[k] == caph[k]) {
				caph[k] *= 2;
				hist[k] = realloc(hist[k], caph[k] * sizeof *hist[k]);
				cr_assert_not_null(hist[k]);
			}
			hist[k][nh[k]++] = ch;
		}
	}

	/* Every read: the value of the last commit at or before the snapshot that touched the key. */
	uint64_t cross = 0;
	for (size_t i = 0; i < w->nsmp; i++) {
		const struct wk_sample *sm = &w->smp[i];
		MCHK(sm->snap <= final, "%s: worker %u read snapshot %" PRIu64 " but the store ends at %" PRIu64, what, sm->by,
		     sm->snap, final);
		size_t lo = 0, hi = nh[sm->k]; /* first change with c > snap */
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (hist[sm->k][mid].c <= sm->snap)
				lo = mid + 1;
			else
				hi = mid;
		}
		const struct wk_change *ch = lo ? &hist[sm->k][lo - 1] : NULL;
		if (!ch || ch->pre < 0) {
			MCHK(sm->vc == 0, "%s: worker %u read m%02u in snapshot %" PRIu64 " as commit %" PRIu64 "'s value, but it "
			     "was absent (deleted by commit %" PRIu64 ")", what, sm->by, sm->k, sm->snap, sm->vc, ch ? ch->c : 0);
			continue;
		}
		const struct wk_pre *e = &w->pre[ch->pre];
		MCHK(sm->vc == ch->c && sm->wid == e->wid && sm->wseq == e->wseq && sm->len == ch->len,
		     "%s: worker %u read m%02u in snapshot %" PRIu64 " as commit %" PRIu64 " (worker %u, %u bytes), but it held "
		     "commit %" PRIu64 " (worker %u, %u bytes)", what, sm->by, sm->k, sm->snap, sm->vc, sm->wid, sm->len, ch->c,
		     e->wid, ch->len);
		cross += e->wid != sm->by;
	}

	/* The final content, by lookup and by iteration. */
	uint64_t objects = final > 0, live = final > 0 ? strlen(MP_CLOCK) + 8 : 0;
	for (unsigned k = 0; k < MP_NKEYS; k++) {
		char key[8];
		snprintf(key, sizeof key, "m%02u", k);
		ms_val v;
		int rc = ms_txn_get(t, key, 3, &v);
		const struct wk_change *ch = nh[k] ? &hist[k][nh[k] - 1] : NULL;
		if (!ch || ch->pre < 0) {
			MCHK(rc == MS_NOTFOUND, "%s: %s should be absent at the end: %d", what, key, rc);
			continue;
		}
		const struct wk_pre *e = &w->pre[ch->pre];
		MCHK(rc == 0, "%s: %s (from commit %" PRIu64 ") is missing at the end: %d (%s)", what, key, ch->c, rc,
		     ms_strerror(rc));
		struct mp_hdr h;
		const char *why = mp_verify(v.data, v.len, k, &h);
		MCHK(!why && h.clock == ch->c && h.wid == e->wid && h.wseq == e->wseq && v.len == ch->len,
		     "%s: at the end %s holds %s (commit %" PRIu64 ", %zu bytes), want commit %" PRIu64 "'s %u bytes", what, key,
		     why ? why : "a whole value", h.clock, v.len, ch->c, ch->len);
		objects++;
		live += 3 + v.len;
	}
	ms_iter *it;
	MCHK(ms_iter_open(t, &it) == 0, "iter");
	ms_val ik, iv;
	uint64_t n = 0;
	int rc;
	while ((rc = ms_iter_next(it, &ik, &iv)) == 0)
		n++;
	ms_iter_close(it);
	MCHK(rc == MS_NOTFOUND && n == objects, "%s: the iterator shows %" PRIu64 " objects (end %d), the model %" PRIu64,
	     what, n, rc, objects);
	ms_txn_abort(t);
	ms_stats st = tu_stat(s);
	MCHK(st.objects == objects && st.live_bytes == live, "%s: ms_stat %" PRIu64 " objects / %" PRIu64 " bytes, model %"
	     PRIu64 " / %" PRIu64, what, st.objects, st.live_bytes, objects, live);
	tu_close(s);
	tu_check_sound(w->path);

	cr_log_info("%s: %u workers, %" PRIu64 " commits (%" PRIu64 " acknowledged, %" PRIu64 " committed by a killed "
		    "worker before its acknowledgement), %zu reads checked (%" PRIu64 " of another process's commit), file %"
		    PRIu64 " bytes", what, w->nwid, final, w->acks, in_doubt, w->nsmp, cross, file_size(w->path));
	MCHK(final > 0 && w->nsmp > 0 && cross > 0, "%s: the workload did too little to mean much (%" PRIu64 " commits, %zu "
	     "reads, %" PRIu64 " across processes)", what, final, w->nsmp, cross);
	for (unsigned k = 0; k < MP_NKEYS; k++)
		free(hist[k]);
	free(best);
	free(acked);
}

static void wk_free(struct workload *w)
{
	free(w->killed);
	free(w->pre);
	free(w->smp);
}

#define WK_N 4

Test(multiproc, four_processes_mixing_reads_and_writes_see_only_committed_values)
{
	struct workload w;
	memset(&w, 0, sizeof w);
	w.path = tu_path("mixed.ms");
	w.seed = tu_seed() ^ 0x6d69786564ull;
	double seconds = tu_env_double("MS_MP_SECONDS", 4);
	tu_close(tu_create(w.path));
	struct worker k[WK_N];
	for (unsigned i = 0; i < WK_N; i++)
		wk_spawn(&w, &k[i], seconds);
	for (unsigned i = 0; i < WK_N; i++)
		wk_reap(&w, &k[i], seconds + 120, 0);
	wk_verify(&w, "mixed workload");
	for (unsigned i = 0; i < w.npre; i++)
		MCHK(w.pre[i].acked, "worker %u's commit %" PRIu64 " was not acknowledged though nothing was killed",
		     w.pre[i].wid, w.pre[i].c);
	wk_free(&w);
}

/* Kill -9 the workers at random moments, again and again, while the others work on: right after they
 * start (exec, open, the lock file), at random, inside a commit (after they logged "pre"), and while
 * they hold a read snapshot ("R"). Each is replaced by a new worker. */
Test(multiproc, kill_campaign_against_writers_and_readers_keeps_the_committed_state)
{
	struct workload w;
	memset(&w, 0, sizeof w);
	w.path = tu_path("campaign.ms");
	w.seed = tu_seed() ^ 0x6b696c6c73ull;
	tu_rng r = { w.seed ^ 0x726e67 };
	unsigned target = (unsigned)tu_env_u64("MS_KILLS", 500);
	tu_close(tu_create(w.path));
	ms_store *ph = tu_open(w.path, 0, 0); /* the test's own handle: it watches for progress */
	struct worker k[WK_N];
	for (unsigned i = 0; i < WK_N; i++)
		wk_spawn(&w, &k[i], 0);

	unsigned kills = 0, early = 0, in_commit = 0, in_read = 0, aimed_commit = 0, aimed_read = 0;
	uint64_t last_clock = 0;
	double t0 = tu_now(), last_progress = t0, last_look = 0;
	while (kills < target) {
		/* A worker that ended by itself failed. */
		for (unsigned i = 0; i < WK_N; i++) {
			int st;
			MCHK(waitpid(k[i].pid, &st, WNOHANG) == 0, "after %u kills: worker %u ended with status %#x: %s", kills,
			     k[i].wid, st, wk_failure(&w, k[i].wid));
		}
		struct worker *v = &k[tu_below(&r, WK_N)];
		uint64_t mode = tu_below(&r, 100);
		char line[600];
		if (mode < 10) {
			wk_kill(&w, v);
			kills++;
			wk_spawn(&w, v, 0);
			sleep_us(tu_below(&r, 4000));
			early++;
		} else if (mode < 40) {
			sleep_us(tu_below(&r, 25000));
		} else {
			const char *want = mode < 75 ? "pre " : "R ";
			double end = tu_now() + (mode < 75 ? 0.1 : 0.2);
			*(mode < 75 ? &aimed_commit : &aimed_read) += 1;
			for (;;) {
				wk_last_line(v->log_fd, line, sizeof line);
				if (strncmp(line, want, strlen(want)) == 0 || tu_now() > end)
					break;
				sleep_us(100);
			}
		}
		wk_last_line(v->log_fd, line, sizeof line);
		wk_kill(&w, v);
		kills++;
		in_commit += strncmp(line, "pre ", 4) == 0;
		in_read += strncmp(line, "R ", 2) == 0;
		wk_spawn(&w, v, 0);

		/* Commits go on: a killed writer never keeps the lock. */
		if (tu_now() - last_look > 0.25) {
			last_look = tu_now();
			ms_txn *t = tu_begin(ph, MS_READONLY);
			uint64_t c = read_clock(t);
			ms_txn_abort(t);
			MCHK(c >= last_clock, "the clock went back from %" PRIu64 " to %" PRIu64, last_clock, c);
			if (c > last_clock) {
				last_clock = c;
				last_progress = tu_now();
			}
			MCHK(tu_now() - last_progress < 20, "no commit for 20 s after %u kills (clock %" PRIu64 "): the writer "
			     "lock stays taken?", kills, c);
		}
	}
	double t_kills = tu_now() - t0;
	/* The survivors end cleanly. */
	for (unsigned i = 0; i < WK_N; i++)
		kill(k[i].pid, SIGTERM);
	for (unsigned i = 0; i < WK_N; i++)
		wk_reap(&w, &k[i], 60, SIGTERM);
	/* No live reader is left; the stale slots of killed readers go with ms_reader_check. */
	struct reader_list l = readers_of(ph);
	for (size_t i = 0; i < l.n; i++)
		MCHK(l.v[i].alive == 0, "process %" PRIu64 " is gone but its reader slot is reported alive", l.v[i].pid);
	unsigned cleared = 0;
	MCHK(ms_reader_check(ph, &cleared) == 0, "ms_reader_check");
	MCHK(cleared == l.n && readers_of(ph).n == 0, "ms_reader_check cleared %u of %zu stale slots; %zu remain", cleared,
	     l.n, readers_of(ph).n);
	tu_close(ph);
	cr_log_info("kill campaign (MS_TEST_SEED=%" PRIu64 "): %u kills in %.1f s: %u right after start, %u inside a "
		    "commit (%u aimed), %u holding a read snapshot (%u aimed), %zu stale slots at the end", tu_seed(), kills,
		    t_kills, early, in_commit, aimed_commit, in_read, aimed_read, l.n);
	wk_verify(&w, "kill campaign");
	MCHK(in_commit >= target / 20 && in_read >= target / 20, "too few kills landed inside commits (%u) or read "
	     "snapshots (%u) for the campaign to mean much", in_commit, in_read);
	MCHK(w.acks >= target / 2, "only %" PRIu64 " commits were acknowledged in %u kills", w.acks, target);
	wk_free(&w);
}
