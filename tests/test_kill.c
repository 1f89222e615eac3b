/* tests/test_kill.c - kill -9 a committing process, again and again, and check what survives.
 *
 * ms_test_helper (tests/helper) commits the transactions kt_txn_ops describes (multi-key, mixed sizes,
 * puts, reserves and dels; each also sets "seq") and acknowledges each one that ms_txn_commit accepted
 * on a pipe. The test SIGKILLs it after a random delay - before it has the store open, inside a
 * commit right after an acknowledgement, or later - reaps it, and then (in most rounds) opens the
 * store itself: open succeeds, "seq" is the last acknowledged transaction or the one after it, and the
 * whole content equals the model replayed up to that transaction (so no acknowledged commit is lost
 * and no transaction is partial); ms_stat agrees, and ms_check on the closed file is clean. In the
 * other rounds the next helper opens the crashed store itself, so kills also land in recovery. In
 * some rounds the test has the store open too while the helper commits: its snapshots must each be
 * one whole transaction, and after the kill (maybe with the writer lock held by the dead helper) it
 * commits the next transaction itself through that same handle.
 *
 * MS_KILLS sets the kills per test (default 200); MS_TEST_SEED the seed (printed on failure).
 */
#include "testutil.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

TestSuite(kill, .init = tu_setup, .fini = tu_teardown, .timeout = 600);

struct kstate {
	bool present;
	uint64_t seq;
	size_t len;
};

struct campaign {
	uint64_t seed;
	const char *path;
	bool nosync;
	unsigned round;
	/* The model at transaction `conf`, the last one known to be in the store. */
	struct kstate keys[KT_NKEYS];
	uint64_t conf;
	/* What the rounds since the last check allow: the store holds transaction lo or lo + 1. */
	uint64_t lo;
	char last_lines[200];
	char history[4][160]; /* what the last rounds did, for failure messages */
	/* statistics */
	uint64_t acks, checks, kills_before_start, shared_rounds, snapshots, in_flight_found;
	unsigned char *buf; /* 512 KiB for kt_commit */
};

#define KCHK(c, cond, fmt, ...)                                                                        \
	cr_assert(cond, "[MS_TEST_SEED=%" PRIu64 " round %u%s] " fmt "\n  rounds before: %s | %s | %s | %s",      \
		  tu_seed(), (c)->round, (c)->nosync ? " nosync" : "", ##__VA_ARGS__, (c)->history[((c)->round + 0) % 4], \
		  (c)->history[((c)->round + 1) % 4], (c)->history[((c)->round + 2) % 4], (c)->history[((c)->round + 3) % 4])

static void model_apply_to(struct campaign *c, struct kstate *keys, uint64_t seq)
{
	struct kt_op ops[KT_MAXOPS];
	unsigned n = kt_txn_ops(c->seed, seq, ops);
	for (unsigned i = 0; i < n; i++) {
		struct kstate *k = &keys[ops[i].key];
		if (ops[i].del)
			k->present = false;
		else
			*k = (struct kstate){ true, seq, ops[i].len };
	}
}

static void model_apply(struct campaign *c, uint64_t seq)
{
	model_apply_to(c, c->keys, seq);
}

/* Parse the helper's lines: "start N", "ack N", "fail WHAT CODE". */
static void take_lines(struct campaign *c, char *text, bool *started, uint64_t *start, uint64_t *last_ack,
		       unsigned *nacks)
{
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long long v;
		if (sscanf(line, "start %llu", &v) == 1) {
			KCHK(c, !*started, "two start lines");
			*started = true;
			*start = v;
		} else if (sscanf(line, "ack %llu", &v) == 1) {
			KCHK(c, *started, "an ack before the start line");
			KCHK(c, v == (*nacks ? *last_ack : *start) + 1, "ack %llu out of order", v);
			*last_ack = v;
			(*nacks)++;
		} else {
			KCHK(c, false, "the helper reported: %s", line);
		}
	}
}

/* Read what is available on fd (non-blocking) and append to buf. */
static void drain(int fd, char *buf, size_t cap, size_t *len)
{
	for (;;) {
		if (*len + 1 >= cap) {
			/* Keep only the unfinished last line; the finished ones are parsed by the caller. */
			return;
		}
		ssize_t n = read(fd, buf + *len, cap - 1 - *len);
		if (n <= 0)
			return;
		*len += (size_t)n;
		buf[*len] = 0;
	}
}

/* Hand complete lines in buf to take_lines and keep the rest. */
static void consume(struct campaign *c, char *buf, size_t *len, bool *started, uint64_t *start, uint64_t *last_ack,
		    unsigned *nacks)
{
	char *end = memrchr(buf, '\n', *len);
	if (!end)
		return;
	size_t used = (size_t)(end - buf) + 1;
	char save = buf[used];
	buf[used] = 0;
	snprintf(c->last_lines, sizeof c->last_lines, "%s", used > 150 ? buf + used - 150 : buf);
	char *copy = strndup(buf, used);
	take_lines(c, copy, started, start, last_ack, nacks);
	free(copy);
	buf[used] = save;
	memmove(buf, buf + used, *len - used);
	*len -= used;
	buf[*len] = 0;
}

/* The transaction t's snapshot shows ("seq"). */
static uint64_t snapshot_seq(struct campaign *c, ms_txn *t)
{
	ms_val v;
	int rc = ms_txn_get(t, KT_SEQ_KEY, strlen(KT_SEQ_KEY), &v);
	if (rc == MS_NOTFOUND)
		return 0;
	KCHK(c, rc == 0, "get seq = %d (%s)", rc, ms_strerror(rc));
	KCHK(c, v.len == 8, "seq has %zu bytes", v.len);
	return kt_seq_value(v.data);
}

/* Compare t's snapshot, which shows transaction seq, with the model replayed up to seq (from its
 * state at c->conf; c is not changed). Returns the objects and live bytes it should have. */
static void compare_snapshot(struct campaign *c, ms_txn *t, uint64_t seq, uint64_t *objects_out, uint64_t *live_out)
{
	static struct kstate keys[KT_NKEYS];
	memcpy(keys, c->keys, sizeof keys);
	KCHK(c, seq >= c->conf, "transaction %" PRIu64 " went back to %" PRIu64, c->conf, seq);
	for (uint64_t q = c->conf + 1; q <= seq; q++)
		model_apply_to(c, keys, q);
	ms_val v;
	int rc;

	/* Every key of the model, by lookup ... */
	uint64_t objects = seq > 0, live = seq > 0 ? strlen(KT_SEQ_KEY) + 8 : 0;
	for (unsigned k = 0; k < KT_NKEYS; k++) {
		char key[8];
		size_t klen = kt_key(key, k);
		rc = ms_txn_get(t, key, klen, &v);
		const struct kstate *w = &keys[k];
		if (!w->present) {
			KCHK(c, rc == MS_NOTFOUND, "at transaction %" PRIu64 " key %s should be absent: %d", seq, key, rc);
			continue;
		}
		KCHK(c, rc == 0, "at transaction %" PRIu64 " key %s (from transaction %" PRIu64 ") is missing: %d (%s)", seq,
		     key, w->seq, rc, ms_strerror(rc));
		KCHK(c, v.len == w->len && tu_check_fill(v.data, v.len, kt_value_seed(c->seed, k, w->seq, w->len)),
		     "at transaction %" PRIu64 " key %s holds %zu bytes that are not transaction %" PRIu64 "'s %zu bytes", seq,
		     key, v.len, w->seq, w->len);
		objects++;
		live += klen + w->len;
	}
	/* ... and by iteration: nothing else is there. */
	ms_iter *it;
	KCHK(c, ms_iter_open(t, &it) == 0, "ms_iter_open failed");
	ms_val k;
	uint64_t n = 0;
	while ((rc = ms_iter_next(it, &k, &v)) == 0)
		n++;
	KCHK(c, rc == MS_NOTFOUND, "ms_iter_next ended with %d (%s)", rc, ms_strerror(rc));
	KCHK(c, n == objects, "the iterator shows %" PRIu64 " objects, the model %" PRIu64, n, objects);
	ms_iter_close(it);
	*objects_out = objects;
	*live_out = live;
}

/* The store holds lo or lo + 1 (no acknowledged commit lost, at most the one in flight, whole):
 * compare it with the model and move the model there. */
static void settle(struct campaign *c, ms_txn *t, uint64_t *objects, uint64_t *live)
{
	uint64_t seq = snapshot_seq(c, t);
	KCHK(c, seq == c->lo || seq == c->lo + 1,
	     "the store holds transaction %" PRIu64 ", but %" PRIu64 " was acknowledged (lost commits) or at most %" PRIu64
	     " may be there", seq, c->lo, c->lo + 1);
	compare_snapshot(c, t, seq, objects, live);
	if (seq == c->lo + 1 && seq > c->conf)
		c->in_flight_found++;
	for (uint64_t q = c->conf + 1; q <= seq; q++)
		model_apply(c, q);
	c->conf = c->lo = seq;
}

/* Open the store, settle the model on it, check ms_stat, close, and run ms_check on the file. */
static void check_store(struct campaign *c)
{
	ms_options o = { 0 };
	ms_store *s = NULL;
	int rc = ms_open(c->path, &o, &s);
	KCHK(c, rc == 0, "ms_open after the kill = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	ms_txn *t = tu_begin(s, MS_READONLY);
	uint64_t objects, live;
	settle(c, t, &objects, &live);
	ms_txn_abort(t);
	ms_stats st = tu_stat(s);
	KCHK(c, st.objects == objects && st.live_bytes == live,
	     "ms_stat: %" PRIu64 " objects / %" PRIu64 " live bytes, model %" PRIu64 " / %" PRIu64, st.objects,
	     st.live_bytes, objects, live);
	KCHK(c, st.file_bytes >= st.used_bytes + st.free_bytes, "file_bytes < used + free");
	rc = ms_close(s);
	KCHK(c, rc == 0, "ms_close = %d", rc);

	struct tu_problems pr = { 0 };
	ms_check_stats cs;
	memset(&cs, 0, sizeof cs);
	rc = ms_check(c->path, tu_problem_fn, &pr, &cs);
	KCHK(c, rc == 0, "ms_check after recovery = %d (%s): %" PRIu64 " problems, first at %" PRIu64 ": %s", rc,
	     ms_strerror(rc), pr.count, pr.first_off, pr.first);
	KCHK(c, cs.objects == objects && cs.live_bytes == live && cs.txn_id == st.txn_id,
	     "ms_check counted %" PRIu64 " objects / %" PRIu64 " bytes at txn %" PRIu64 ", want %" PRIu64 " / %" PRIu64
	     " at %" PRIu64, cs.objects, cs.live_bytes, cs.txn_id, objects, live, st.txn_id);
	c->checks++;
}

static pid_t spawn_helper(struct campaign *c, int *rfd)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	char fd[16], seed[32];
	snprintf(fd, sizeof fd, "%d", p[1]);
	snprintf(seed, sizeof seed, "%" PRIu64, c->seed);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		execl(MSTORE_TEST_HELPER, MSTORE_TEST_HELPER, "commit", c->path, fd, seed, c->nosync ? "nosync" : "sync",
		      (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	*rfd = p[0];
	return pid;
}

/* Wait up to `seconds` for fd to be readable. */
static void wait_readable(int fd, double seconds)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	int ms = (int)(seconds * 1000.0);
	poll(&pf, 1, ms < 0 ? 0 : ms);
}

static void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void one_round(struct campaign *c, tu_rng *r, bool check)
{
	int fd;
	char buf[8192];
	size_t len = 0;
	buf[0] = 0;
	bool started = false;
	uint64_t start = 0, last_ack = 0;
	unsigned nacks = 0;
	double t0 = tu_now();
	pid_t pid = spawn_helper(c, &fd);

	uint64_t how = tu_below(r, 100);
	bool shared = tu_below(r, 100) < 15;
	ms_store *mine = NULL;
	if (how < 12) {
		/* Very early: during exec, open or recovery. */
		sleep_us(tu_below(r, 3000));
	} else {
		/* Wait for the start line (or ack number `want`), then a random delay. */
		unsigned want = how < 60 ? (unsigned)tu_below(r, 6) : 0;
		uint64_t delay = how < 60 ? tu_below(r, 1500) : tu_below(r, 60000);
		while (tu_now() - t0 < 20.0) {
			wait_readable(fd, 0.05);
			drain(fd, buf, sizeof buf, &len);
			consume(c, buf, &len, &started, &start, &last_ack, &nacks);
			if (started && nacks >= want)
				break;
			int st = 0;
			KCHK(c, waitpid(pid, &st, WNOHANG) == 0, "the helper exited (status %#x) before it was killed; it said: %s",
			     st, c->last_lines);
		}
		KCHK(c, started && nacks >= want, "the helper made no progress in 20 s (%u acks)", nacks);
		if (shared) {
			/* The store is open here too while the helper commits; each snapshot is one whole
			 * transaction, not older than the acknowledged ones. */
			ms_options o = { 0 };
			int rc = ms_open(c->path, &o, &mine);
			KCHK(c, rc == 0, "ms_open while the helper writes = %d (%s)", rc, ms_strerror(rc));
			for (unsigned i = 0; i < 3; i++) {
				drain(fd, buf, sizeof buf, &len);
				consume(c, buf, &len, &started, &start, &last_ack, &nacks);
				uint64_t floor = nacks ? last_ack : start;
				ms_txn *t = tu_begin(mine, MS_READONLY);
				uint64_t seq = snapshot_seq(c, t), o1, l1;
				KCHK(c, seq >= floor, "a snapshot taken after the ack of %" PRIu64 " shows %" PRIu64, floor, seq);
				compare_snapshot(c, t, seq, &o1, &l1);
				ms_txn_abort(t);
				c->snapshots++;
				sleep_us(tu_below(r, 3000));
			}
			c->shared_rounds++;
		}
		sleep_us(delay);
	}
	kill(pid, SIGKILL);
	int status;
	KCHK(c, waitpid(pid, &status, 0) == pid, "waitpid failed");
	/* The write end is closed now: read to the end. */
	fcntl(fd, F_SETFL, 0);
	for (;;) {
		drain(fd, buf, sizeof buf, &len);
		consume(c, buf, &len, &started, &start, &last_ack, &nacks);
		if (len + 1 >= sizeof buf)
			continue;
		ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = 0;
	}
	consume(c, buf, &len, &started, &start, &last_ack, &nacks);
	close(fd);
	KCHK(c, WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the helper ended with status %#x; it said: %s",
	     status, c->last_lines);

	if (started) {
		KCHK(c, start == c->lo || start == c->lo + 1,
		     "the helper found transaction %" PRIu64 " in the store; %" PRIu64 " or %" PRIu64 " expected", start, c->lo,
		     c->lo + 1);
		if (start > c->conf) {
			/* The helper read "seq" from the store: the store held exactly transaction start. */
			for (uint64_t q = c->conf + 1; q <= start; q++)
				model_apply(c, q);
			c->conf = start;
		}
		c->lo = nacks ? last_ack : start;
		c->acks += nacks;
	} else {
		c->kills_before_start++;
	}
	snprintf(c->history[c->round % 4], sizeof c->history[0],
		 "round %u: kill %s, helper %s %" PRIu64 ", %u acks%s%s", c->round,
		 how < 12 ? "early" : how < 60 ? "just after an ack" : "after a delay", started ? "started at" : "never started",
		 start, nacks, mine ? ", store shared" : "", check || mine ? ", checked" : ", not checked");
	if (mine) {
		/* The helper died, perhaps holding the writer lock: this handle settles the model on its
		 * state and commits the next transaction itself (a hang here ends the test by SIGALRM). */
		ms_txn *t = tu_begin(mine, MS_READONLY);
		uint64_t o1, l1;
		settle(c, t, &o1, &l1);
		ms_txn_abort(t);
		const char *what;
		alarm(30);
		int rc = kt_commit(mine, c->seed, c->conf + 1, c->buf, &what);
		alarm(0);
		KCHK(c, rc == 0, "after the kill, committing transaction %" PRIu64 " from the surviving handle: %s = %d (%s)",
		     c->conf + 1, what, rc, ms_strerror(rc));
		model_apply(c, ++c->conf);
		c->lo = c->conf;
		rc = ms_close(mine);
		KCHK(c, rc == 0, "ms_close = %d", rc);
		check = true;
	}
	if (check)
		check_store(c);
}

static void campaign(bool nosync)
{
	static struct campaign cc;
	struct campaign *c = &cc;
	memset(c, 0, sizeof *c);
	c->seed = tu_seed() ^ (nosync ? 0x4e4f53594e43ull : 0);
	c->path = tu_path("kill.ms");
	c->nosync = nosync;
	tu_rng r = { c->seed ^ 0x726e67 };
	c->buf = malloc(512 * 1024);
	cr_assert_not_null(c->buf);
	unsigned kills = (unsigned)tu_env_u64("MS_KILLS", 200);
	double t0 = tu_now();

	/* The store exists before the first helper runs, so every round opens an existing file. */
	ms_store *s = tu_create(c->path);
	tu_close(s);
	for (c->round = 1; c->round <= kills; c->round++)
		one_round(c, &r, c->round == kills || tu_below(&r, 100) < 75);
	cr_log_info("kill campaign (%s, MS_TEST_SEED=%" PRIu64 "): %u kills in %.1f s, %" PRIu64 " acknowledged commits, "
		    "%" PRIu64 " checks, %" PRIu64 " unacknowledged commits found, %" PRIu64 " kills before the helper "
		    "started, %" PRIu64 " rounds with the store open here too (%" PRIu64 " snapshots checked); last "
		    "transaction %" PRIu64,
		    nosync ? "MS_NOSYNC" : "default", tu_seed(), kills, tu_now() - t0, c->acks, c->checks,
		    c->in_flight_found, c->kills_before_start, c->shared_rounds, c->snapshots, c->conf);
	free(c->buf);
	cr_assert_gt(c->acks, kills / 4, "too few commits were acknowledged (%" PRIu64 ") for the campaign to mean much",
		     c->acks);
}

Test(kill, sigkill_during_durable_commits_loses_no_acknowledged_commit)
{
	campaign(false);
}

Test(kill, sigkill_during_nosync_commits_loses_no_acknowledged_commit)
{
	campaign(true);
}
