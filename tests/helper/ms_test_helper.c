/* tests/helper/ms_test_helper.c - a second process for the multi-process and kill tests.
 *
 *   ms_test_helper commit PATH FD SEED [nosync]
 *       Open (creating) the store, read "seq" (0 when absent), write "start N\n" to FD, then commit
 *       transactions N+1, N+2, ... as tests/testutil.h's kt_txn_ops describes them, writing
 *       "ack S\n" to FD with write(2) after each ms_txn_commit that returned 0. Runs until killed.
 *   ms_test_helper hold PATH FD [readonly] [txn] [wtxn]
 *       Open the store (with "txn" also begin a read transaction; with "wtxn" begin a write
 *       transaction and put "held" = "1" in it), write "ready\n" to FD, wait for end of file on
 *       standard input, commit the write transaction if any, close the store and exit 0.
 *   ms_test_helper serve
 *       A process the test drives line by line: commands on standard input, one reply line each on
 *       standard output ("ok ...", "absent", "mismatch ...", "err CODE TEXT"). See do_serve.
 *   ms_test_helper mixed PATH LOG SEED WID SECONDS [nosync]
 *       One worker of tests/test_multiproc.c's workloads: mixed write and read transactions on an
 *       existing store for SECONDS (0: until SIGTERM or SIGKILL), logging to LOG what it commits and
 *       what it reads, so that the test can check every read and the final state. See do_mixed.
 *
 * Failures are written to FD (for mixed, to LOG) as "fail WHAT CODE\n" and end the process with exit
 * status 3, so the test can tell a library error from the kill it sent.
 */
#define TU_NO_CRITERION
#include "../testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>

static int out_fd = -1;

static void say(const char *fmt, unsigned long long a)
{
	char line[96];
	int n = snprintf(line, sizeof line, fmt, a);
	if (n > 0)
		tu_write_all(out_fd, line, (size_t)n);
}

static int fail(const char *what, int rc)
{
	char line[160];
	int n = snprintf(line, sizeof line, "fail %s %d\n", what, rc);
	if (n > 0)
		tu_write_all(out_fd, line, (size_t)n);
	return 3;
}

static int do_commit(const char *path, uint64_t seed, bool nosync)
{
	ms_options o = { .flags = MS_CREATE | (nosync ? MS_NOSYNC : 0) };
	ms_store *s = NULL;
	int rc = ms_open(path, &o, &s);
	if (rc)
		return fail("open", rc);

	uint64_t seq = 0;
	size_t vlen = 0;
	unsigned char sb[8];
	rc = ms_get(s, KT_SEQ_KEY, strlen(KT_SEQ_KEY), sb, sizeof sb, &vlen);
	if (rc == 0 && vlen == 8)
		seq = kt_seq_value(sb);
	else if (rc != MS_NOTFOUND)
		return fail(rc ? "get-seq" : "seq-length", rc);
	say("start %llu\n", (unsigned long long)seq);

	unsigned char *buf = malloc(512 * 1024);
	if (!buf)
		return fail("malloc", 0);
	for (;;) {
		seq++;
		const char *what;
		rc = kt_commit(s, seed, seq, buf, &what);
		if (rc)
			return fail(what, rc);
		say("ack %llu\n", (unsigned long long)seq);
	}
}

static int do_hold(const char *path, bool readonly, bool txn, bool wtxn)
{
	ms_options o = { .flags = readonly ? MS_READONLY : MS_CREATE };
	ms_store *s = NULL;
	int rc = ms_open(path, &o, &s);
	if (rc)
		return fail("open", rc);
	ms_txn *t = NULL;
	if (txn && (rc = ms_txn_begin(s, MS_READONLY, &t)) != 0)
		return fail("begin", rc);
	ms_txn *w = NULL;
	if (wtxn) {
		if ((rc = ms_txn_begin(s, 0, &w)) != 0)
			return fail("begin-write", rc);
		if ((rc = ms_txn_put(w, "held", 4, "1", 1)) != 0)
			return fail("put", rc);
	}
	say("ready %llu\n", 0);
	char c;
	while (read(0, &c, 1) > 0)
		;
	if (w && (rc = ms_txn_commit(w)) != 0)
		return fail("commit", rc);
	rc = ms_close(s);
	if (rc)
		return fail("close", rc);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 5 && strcmp(argv[1], "commit") == 0) {
		out_fd = atoi(argv[3]);
		return do_commit(argv[2], strtoull(argv[4], NULL, 0), argc > 5 && strcmp(argv[5], "nosync") == 0);
	}
	if (argc >= 4 && strcmp(argv[1], "hold") == 0) {
		out_fd = atoi(argv[3]);
		bool ro = false, txn = false, wtxn = false;
		for (int i = 4; i < argc; i++) {
			ro |= strcmp(argv[i], "readonly") == 0;
			txn |= strcmp(argv[i], "txn") == 0;
			wtxn |= strcmp(argv[i], "wtxn") == 0;
		}
		return do_hold(argv[2], ro, txn, wtxn);
	}
	fprintf(stderr, "usage: ms_test_helper commit PATH FD SEED [nosync] | hold PATH FD [readonly] [txn] [wtxn]\n");
	return 2;
}
