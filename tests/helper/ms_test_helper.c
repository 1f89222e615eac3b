/* tests/helper/ms_test_helper.c - a second process for the multi-process and kill tests.
 *
 *   ms_test_helper commit PATH FD SEED [nosync]
 *       Open (creating) the store, read "seq" (0 when absent), write "start N\n" to FD, then commit
 *       transactions N+1, N+2, ... as tests/testutil.h's kt_txn_ops describes them, writing
 *       "ack S\n" to FD with write(2) after each ms_txn_commit that returned 0. Runs until killed.
 *   ms_test_helper hold PATH FD [readonly] [txn]
 *       Open the store (with "txn" also begin a read transaction), write "ready\n" to FD, wait for
 *       end of file on standard input, close the store and exit 0.
 *
 * Failures are written to FD as "fail WHAT CODE\n" and end the process with exit status 3, so the
 * test can tell a library error from the kill it sent.
 */
#define TU_NO_CRITERION
#include "../testutil.h"

#include <signal.h>

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
	if (rc == 0 && vlen == 8) {
		for (int i = 7; i >= 0; i--)
			seq = (seq << 8) | sb[i];
	} else if (rc != MS_NOTFOUND) {
		return fail(rc ? "get-seq" : "seq-length", rc);
	}
	say("start %llu\n", (unsigned long long)seq);

	size_t cap = 512 * 1024;
	unsigned char *buf = malloc(cap);
	if (!buf)
		return fail("malloc", 0);
	for (;;) {
		seq++;
		struct kt_op ops[KT_MAXOPS];
		unsigned n = kt_txn_ops(seed, seq, ops);
		ms_txn *t = NULL;
		rc = ms_txn_begin(s, 0, &t);
		if (rc)
			return fail("begin", rc);
		for (unsigned i = 0; i < n; i++) {
			char key[8];
			size_t klen = kt_key(key, ops[i].key);
			if (ops[i].del) {
				rc = ms_txn_del(t, key, klen);
				if (rc && rc != MS_NOTFOUND)
					return fail("del", rc);
			} else if (i % 3 == 2) {
				/* Some values are written in place, the rest copied. */
				void *dst = NULL;
				rc = ms_txn_reserve(t, key, klen, ops[i].len, &dst);
				if (rc)
					return fail("reserve", rc);
				tu_fill(dst, ops[i].len, kt_value_seed(seed, ops[i].key, seq, ops[i].len));
			} else {
				tu_fill(buf, ops[i].len, kt_value_seed(seed, ops[i].key, seq, ops[i].len));
				rc = ms_txn_put(t, key, klen, buf, ops[i].len);
				if (rc)
					return fail("put", rc);
			}
		}
		for (int i = 0; i < 8; i++)
			sb[i] = (unsigned char)(seq >> (8 * i));
		rc = ms_txn_put(t, KT_SEQ_KEY, strlen(KT_SEQ_KEY), sb, 8);
		if (rc)
			return fail("put-seq", rc);
		rc = ms_txn_commit(t);
		if (rc)
			return fail("commit", rc);
		say("ack %llu\n", (unsigned long long)seq);
	}
}

static int do_hold(const char *path, bool readonly, bool txn)
{
	ms_options o = { .flags = readonly ? MS_READONLY : MS_CREATE };
	ms_store *s = NULL;
	int rc = ms_open(path, &o, &s);
	if (rc)
		return fail("open", rc);
	ms_txn *t = NULL;
	if (txn && (rc = ms_txn_begin(s, MS_READONLY, &t)) != 0)
		return fail("begin", rc);
	say("ready %llu\n", 0);
	char c;
	while (read(0, &c, 1) > 0)
		;
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
		bool ro = false, txn = false;
		for (int i = 4; i < argc; i++) {
			ro |= strcmp(argv[i], "readonly") == 0;
			txn |= strcmp(argv[i], "txn") == 0;
		}
		return do_hold(argv[2], ro, txn);
	}
	fprintf(stderr, "usage: ms_test_helper commit PATH FD SEED [nosync] | hold PATH FD [readonly] [txn]\n");
	return 2;
}
