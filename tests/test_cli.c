/* test_cli.c - runs the real mstore binary (MSTORE_BIN) the way a user or a script would: feeds
 * standard input, captures standard output, standard error and the exit code, and compares them
 * with the expected text. Each test gets its own temporary directory, removed afterwards.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format.h"
#include "hash.h"
#include "mstore.h"

#ifndef MSTORE_BIN
#error "MSTORE_BIN must name the mstore binary (tests/CMakeLists.txt defines it)"
#endif

/* What one run of the binary produced. */
struct run {
	int code;       /* exit status, or -1 when killed by a signal */
	int signal;     /* the signal that killed it, or 0 */
	char *out, *err;
	size_t out_len, err_len;
};

static char tmpdir[64];

static void make_tmpdir(void)
{
	strcpy(tmpdir, "/tmp/mstore-cli-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
}

static int remove_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void remove_tmpdir(void)
{
	if (tmpdir[0] != '\0')
		nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(cli, .init = make_tmpdir, .fini = remove_tmpdir);

/* A path inside this test's directory; the few a test needs stay valid until it ends. */
static const char *tmp_path(const char *name)
{
	static char paths[8][256];
	static int next;
	char *p = paths[next++ % 8];

	snprintf(p, sizeof paths[0], "%s/%s", tmpdir, name);
	return p;
}

static void append(char **buf, size_t *len, const char *data, size_t n)
{
	*buf = realloc(*buf, *len + n + 1);
	cr_assert_not_null(*buf);
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0'; /* so text output can be compared as a string */
}

/* Run mstore with the NULL-terminated arguments, writing in (in_len bytes) to its standard input.
 * poll() drives all three pipes together so that neither side blocks on a full pipe, whatever
 * the sizes. */
static struct run run_v(const void *in, size_t in_len, va_list ap)
{
	const char *argv[64];
	int pin[2], pout[2], perr[2], st;
	size_t argc = 0, written = 0;
	struct run r = {0};
	pid_t pid;

	argv[argc++] = MSTORE_BIN;
	while ((argv[argc] = va_arg(ap, const char *)) != NULL)
		cr_assert_lt(++argc, 63);

	cr_assert_eq(pipe2(pin, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(pout, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(perr, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		dup2(perr[1], 2);
		execv(MSTORE_BIN, (char **)argv);
		_exit(127);
	}
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	signal(SIGPIPE, SIG_IGN); /* the child may exit without reading all its input */
	if (in_len == 0) {
		close(pin[1]);
		pin[1] = -1;
	} else {
		fcntl(pin[1], F_SETFL, O_NONBLOCK);
	}
	for (;;) {
		struct pollfd fds[3] = {
			{.fd = pout[0], .events = POLLIN},
			{.fd = perr[0], .events = POLLIN},
			{.fd = pin[1], .events = POLLOUT},
		};
		char buf[65536];
		ssize_t n;

		if (fds[0].fd < 0 && fds[1].fd < 0)
			break;
		if (poll(fds, 3, -1) < 0) {
			cr_assert_eq(errno, EINTR);
			continue;
		}
		for (int i = 0; i < 2; i++) {
			if (fds[i].revents == 0)
				continue;
			n = read(fds[i].fd, buf, sizeof buf);
			if (n > 0) {
				if (i == 0)
					append(&r.out, &r.out_len, buf, (size_t)n);
				else
					append(&r.err, &r.err_len, buf, (size_t)n);
			} else if (n == 0 || errno != EINTR) {
				close(fds[i].fd);
				if (i == 0)
					pout[0] = -1;
				else
					perr[0] = -1;
			}
		}
		if (fds[2].fd >= 0 && fds[2].revents != 0) {
			n = write(pin[1], (const char *)in + written, in_len - written);
			if (n > 0)
				written += (size_t)n;
			if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == in_len) {
				close(pin[1]);
				pin[1] = -1;
			}
		}
	}
	if (pin[1] >= 0)
		close(pin[1]);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	r.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
	if (r.out == NULL)
		append(&r.out, &r.out_len, "", 0);
	if (r.err == NULL)
		append(&r.err, &r.err_len, "", 0);
	return r;
}

static struct run run_in(const void *in, size_t in_len, ...)
{
	va_list ap;
	struct run r;

	va_start(ap, in_len);
	r = run_v(in, in_len, ap);
	va_end(ap);
	return r;
}

#define run(...) run_in(NULL, 0, __VA_ARGS__, (const char *)NULL)
#define run_stdin(in, len, ...) run_in(in, len, __VA_ARGS__, (const char *)NULL)

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The run ended with code, and printed exactly one line on stderr starting "mstore: ". */
static void expect_one_error_line(const struct run *r, int code)
{
	cr_assert_eq(r->signal, 0, "killed by signal %d", r->signal);
	cr_assert_eq(r->code, code, "exit %d, want %d; stderr: %s", r->code, code, r->err);
	cr_assert_eq(count_lines(r->err), 1, "want one line on stderr, got: %s", r->err);
	cr_assert(starts_with(r->err, "mstore: "), "stderr: %s", r->err);
}

static void expect_ok(const struct run *r)
{
	cr_assert_eq(r->signal, 0, "killed by signal %d", r->signal);
	cr_assert_eq(r->code, 0, "exit %d; stderr: %s", r->code, r->err);
	cr_assert_str_empty(r->err);
}

static const char *new_store(const char *name)
{
	const char *p = tmp_path(name);
	struct run r = run("create", p);

	expect_ok(&r);
	run_free(&r);
	return p;
}

static void put(const char *store, const char *key, const char *val)
{
	struct run r = run("put", store, key, val);

	expect_ok(&r);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);
}

static void write_file(const char *p, const void *data, size_t len)
{
	FILE *f = fopen(p, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

/* Bytes from a fixed-seed xorshift: reproducible "random" files and values. */
static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)(x >> 32);
	}
}

/* A small JSON syntax checker, so "--json prints JSON" is tested, not assumed. */
static const char *json_value(const char *p);

static const char *json_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *json_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	for (; *p != '"'; p++) {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (p[i] == '\0' || !strchr("0123456789abcdefABCDEF", p[i]))
						return NULL;
				p += 4;
			} else if (*p == '\0' || !strchr("\"\\/bfnrt", *p)) {
				return NULL;
			}
		}
	}
	return p + 1;
}

static const char *json_seq(const char *p, char close, bool object)
{
	p = json_ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (object) {
			p = json_string(json_ws(p));
			if (p == NULL || *(p = json_ws(p)) != ':')
				return NULL;
			p++;
		}
		p = json_value(p);
		if (p == NULL)
			return NULL;
		p = json_ws(p);
		if (*p == close)
			return p + 1;
		if (*p++ != ',')
			return NULL;
	}
}

static const char *json_value(const char *p)
{
	p = json_ws(p);
	if (*p == '{')
		return json_seq(p, '}', true);
	if (*p == '[')
		return json_seq(p, ']', false);
	if (*p == '"')
		return json_string(p);
	if (starts_with(p, "true") || starts_with(p, "null"))
		return p + 4;
	if (starts_with(p, "false"))
		return p + 5;
	if (*p == '-' || (*p >= '0' && *p <= '9')) {
		char *end;
		strtod(p, &end);
		return end;
	}
	return NULL;
}

static void expect_json_object(const char *s)
{
	const char *end = json_value(s);

	cr_assert(s[0] == '{' && end != NULL, "not JSON: %s", s);
	cr_assert_str_eq(end, "\n", "want one object then a newline: %s", s);
}

/* The unsigned integer field "name" of a flat JSON object; fails the test when it is missing. */
static uint64_t json_u64(const char *json, const char *name)
{
	char pat[64];
	const char *p;
	char *end;
	unsigned long long v;

	snprintf(pat, sizeof pat, "\"%s\":", name);
	p = strstr(json, pat);
	cr_assert_not_null(p, "no field %s in %s", name, json);
	p += strlen(pat);
	errno = 0;
	v = strtoull(p, &end, 10);
	cr_assert(end != p && errno == 0 && (*end == ',' || *end == '}'), "field %s of %s", name, json);
	return v;
}

/* --help and usage errors */

static const char *const commands[] = {"create", "put", "get", "del", "ls", "stat", "check"};

Test(cli, top_level_help_exits_0_with_usage_on_stdout)
{
	struct run r = run("--help");

	expect_ok(&r);
	cr_assert(starts_with(r.out, "Usage: mstore COMMAND FILE [ARGS]\n"), "%s", r.out);
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		char line[32];
		snprintf(line, sizeof line, "\n  %s ", commands[i]);
		cr_assert_not_null(strstr(r.out, line), "help does not list %s", commands[i]);
	}
	run_free(&r);
}

Test(cli, every_command_help_exits_0_with_its_usage_on_stdout)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		char want[64];
		struct run r = run(commands[i], "--help");

		expect_ok(&r);
		snprintf(want, sizeof want, "Usage: mstore %s FILE", commands[i]);
		cr_assert(starts_with(r.out, want), "%s --help: %s", commands[i], r.out);
		run_free(&r);
	}
}

Test(cli, help_wins_over_missing_arguments_and_may_follow_them)
{
	struct run r = run("put", "some-file", "-h");

	expect_ok(&r);
	cr_assert(starts_with(r.out, "Usage: mstore put"));
	run_free(&r);
}

Test(cli, no_command_is_a_usage_error_exit_2)
{
	struct run r = run_in(NULL, 0, (const char *)NULL);

	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err, "mstore: no command given\nTry 'mstore --help'.\n");
	cr_assert_str_empty(r.out);
	run_free(&r);
}

Test(cli, unknown_command_exits_2_with_one_line_and_a_usage_hint)
{
	struct run r = run("frobnicate", tmp_path("x.ms"));

	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err, "mstore: unknown command 'frobnicate'\nTry 'mstore --help'.\n");
	cr_assert_str_empty(r.out);
	run_free(&r);
}

Test(cli, missing_arguments_exit_2_with_one_line_and_a_hint)
{
	static const struct {
		const char *cmd, *arg, *want;
	} cases[] = {
		{"create", NULL, "mstore: create: missing FILE\nTry 'mstore create --help'.\n"},
		{"put", NULL, "mstore: put: missing FILE and KEY\nTry 'mstore put --help'.\n"},
		{"put", "f.ms", "mstore: put: missing KEY\nTry 'mstore put --help'.\n"},
		{"get", "f.ms", "mstore: get: missing KEY\nTry 'mstore get --help'.\n"},
		{"del", NULL, "mstore: del: missing FILE and KEY\nTry 'mstore del --help'.\n"},
		{"ls", NULL, "mstore: ls: missing FILE\nTry 'mstore ls --help'.\n"},
		{"stat", NULL, "mstore: stat: missing FILE\nTry 'mstore stat --help'.\n"},
		{"check", NULL, "mstore: check: missing FILE\nTry 'mstore check --help'.\n"},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct run r = cases[i].arg ? run(cases[i].cmd, cases[i].arg) : run(cases[i].cmd);

		cr_assert_eq(r.code, 2, "%s: exit %d", cases[i].cmd, r.code);
		cr_assert_str_eq(r.err, cases[i].want);
		cr_assert_str_empty(r.out);
		run_free(&r);
	}
}

Test(cli, too_many_arguments_and_unknown_options_exit_2)
{
	struct run r = run("get", "f.ms", "k", "extra");

	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err, "mstore: get: too many arguments\nTry 'mstore get --help'.\n");
	run_free(&r);

	r = run("ls", "f.ms", "--colour");
	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err, "mstore: ls: unknown option '--colour'\nTry 'mstore ls --help'.\n");
	run_free(&r);

	r = run("stat", "-q", "f.ms");
	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err, "mstore: stat: unknown option '-q'\nTry 'mstore stat --help'.\n");
	run_free(&r);

	r = run("create", "f.ms", "--capacity");
	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err,
	                 "mstore: create: option '--capacity' needs a value\nTry 'mstore create --help'.\n");
	run_free(&r);
}

Test(cli, bad_capacity_is_a_usage_error_and_creates_nothing)
{
	const char *p = tmp_path("x.ms");
	struct run r = run("create", p, "--capacity", "12Q");

	cr_assert_eq(r.code, 2);
	cr_assert_str_eq(r.err,
	                 "mstore: create: --capacity '12Q' is not a size\nTry 'mstore create --help'.\n");
	cr_assert_neq(access(p, F_OK), 0);
	run_free(&r);
}

Test(cli, empty_oversized_and_bad_hex_keys_are_usage_errors)
{
	const char *s = new_store("x.ms");
	char *big = malloc(MS_MAXKEY + 2);
	struct run r;

	memset(big, 'k', MS_MAXKEY + 1);
	big[MS_MAXKEY + 1] = '\0';

	r = run("put", s, "", "v");
	cr_assert_eq(r.code, 2);
	cr_assert(starts_with(r.err, "mstore: put: key is empty"), "%s", r.err);
	run_free(&r);

	r = run("get", s, big);
	cr_assert_eq(r.code, 2);
	cr_assert(starts_with(r.err, "mstore: get: key is 65536 bytes"), "%s", r.err);
	run_free(&r);

	r = run("del", s, "--hex", "abc");
	cr_assert_eq(r.code, 2);
	cr_assert(starts_with(r.err, "mstore: del: --hex key has an odd"), "%s", r.err);
	run_free(&r);

	r = run("del", s, "--hex", "zz");
	cr_assert_eq(r.code, 2);
	run_free(&r);

	/* The longest key allowed is accepted. */
	big[MS_MAXKEY] = '\0';
	put(s, big, "longest");
	r = run("get", s, big);
	expect_ok(&r);
	cr_assert_str_eq(r.out, "longest");
	run_free(&r);
	free(big);
}

/* create */

Test(cli, create_makes_an_empty_store_that_check_finds_sound)
{
	const char *s = new_store("x.ms");
	struct run r = run("ls", s, "--count");

	expect_ok(&r);
	cr_assert_str_eq(r.out, "0\n");
	run_free(&r);

	r = run("check", s);
	expect_ok(&r);
	cr_assert(starts_with(r.out, s) && strstr(r.out, ": ok; verified 0 objects") != NULL,
	          "%s", r.out);
	run_free(&r);
}

Test(cli, create_on_an_existing_file_exits_1_and_leaves_it_alone)
{
	const char *p = tmp_path("precious.txt");
	char want[512], got[64] = {0};
	struct run r;
	FILE *f;

	write_file(p, "do not touch", 12);
	r = run("create", p);
	expect_one_error_line(&r, 1);
	snprintf(want, sizeof want, "mstore: create %s: file already exists\n", p);
	cr_assert_str_eq(r.err, want);
	run_free(&r);

	f = fopen(p, "rb");
	cr_assert_eq(fread(got, 1, sizeof got, f), 12);
	fclose(f);
	cr_assert_str_eq(got, "do not touch");

	/* An existing store is refused the same way. */
	new_store("x.ms");
	r = run("create", tmp_path("x.ms"));
	expect_one_error_line(&r, 1);
	run_free(&r);
}

Test(cli, create_accepts_a_capacity_with_a_suffix_after_the_file)
{
	const char *p = tmp_path("x.ms");
	struct run r = run("create", p, "--capacity", "64M", "--nosync");

	expect_ok(&r);
	run_free(&r);
	put(p, "k", "v");
}

/* put and get */

Test(cli, put_from_stdin_then_get_round_trips_a_binary_value_byte_exact)
{
	static const unsigned char val[] = {'a', 0, 'b', '\n', 0, 0, 0xff, 0x80, '\r', 'z', 0};
	const char *s = new_store("x.ms");
	struct run r = run_stdin(val, sizeof val, "put", s, "bin");

	expect_ok(&r);
	run_free(&r);

	r = run("get", s, "bin");
	expect_ok(&r);
	cr_assert_eq(r.out_len, sizeof val);
	cr_assert_arr_eq(r.out, val, sizeof val);
	run_free(&r);

	/* '-' reads standard input too. */
	r = run_stdin(val + 1, sizeof val - 1, "put", s, "dash", "-");
	expect_ok(&r);
	run_free(&r);
	r = run("get", s, "dash");
	expect_ok(&r);
	cr_assert_eq(r.out_len, sizeof val - 1);
	cr_assert_arr_eq(r.out, val + 1, sizeof val - 1);
	run_free(&r);
}

Test(cli, put_from_stdin_takes_a_value_of_several_mebibytes)
{
	size_t n = 5 * 1024 * 1024 + 17;
	unsigned char *val = malloc(n);
	const char *s = new_store("x.ms");
	struct run r;

	fill_random(val, n, 42);
	r = run_stdin(val, n, "put", s, "big", "--nosync");
	expect_ok(&r);
	run_free(&r);

	r = run("get", s, "big");
	expect_ok(&r);
	cr_assert_eq(r.out_len, n);
	cr_assert(memcmp(r.out, val, n) == 0, "value differs");
	run_free(&r);
	free(val);
}

Test(cli, get_prints_an_argument_value_with_nothing_added)
{
	const char *s = new_store("x.ms");
	struct run r;

	put(s, "greeting", "hello, world");
	r = run("get", s, "greeting");
	expect_ok(&r);
	cr_assert_str_eq(r.out, "hello, world");
	run_free(&r);

	/* An empty value is a value: exit 0, no output. */
	put(s, "empty", "");
	r = run("get", s, "empty");
	expect_ok(&r);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);
}

Test(cli, put_replaces_the_value_of_an_existing_key)
{
	const char *s = new_store("x.ms");
	struct run r;

	put(s, "k", "first value, the longer one");
	put(s, "k", "second");
	r = run("get", s, "k");
	expect_ok(&r);
	cr_assert_str_eq(r.out, "second");
	run_free(&r);
}

Test(cli, options_may_follow_the_arguments_and_double_dash_ends_them)
{
	const char *s = new_store("x.ms");
	struct run r = run("put", s, "k", "v", "--nosync");

	expect_ok(&r);
	run_free(&r);
	r = run("put", s, "--", "-dash-key", "-dash-value");
	expect_ok(&r);
	run_free(&r);
	r = run("get", "--", s, "-dash-key");
	expect_ok(&r);
	cr_assert_str_eq(r.out, "-dash-value");
	run_free(&r);
}

Test(cli, get_of_a_missing_key_exits_1_with_one_line_saying_key_not_found)
{
	const char *s = new_store("x.ms");
	char want[512];
	struct run r;

	put(s, "present", "1");
	r = run("get", s, "absent");
	expect_one_error_line(&r, 1);
	snprintf(want, sizeof want, "mstore: get %s: key not found\n", s);
	cr_assert_str_eq(r.err, want);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);
}

Test(cli, hex_keys_reach_binary_keys_in_put_get_and_del)
{
	const char *s = new_store("x.ms");
	struct run r = run("put", s, "--hex", "00FF0a", "binary key");

	expect_ok(&r);
	run_free(&r);
	r = run("get", s, "--hex", "00ff0a");
	expect_ok(&r);
	cr_assert_str_eq(r.out, "binary key");
	run_free(&r);
	r = run("ls", s, "--hex");
	expect_ok(&r);
	cr_assert_str_eq(r.out, "00ff0a\n");
	run_free(&r);
	r = run("del", s, "--hex", "00ff0a");
	expect_ok(&r);
	run_free(&r);
	r = run("ls", s, "--count");
	cr_assert_str_eq(r.out, "0\n");
	run_free(&r);
}

/* del */

Test(cli, del_then_get_says_key_not_found)
{
	const char *s = new_store("x.ms");
	char want[512];
	struct run r;

	put(s, "k", "v");
	r = run("del", s, "k");
	expect_ok(&r);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);

	r = run("get", s, "k");
	expect_one_error_line(&r, 1);
	snprintf(want, sizeof want, "mstore: get %s: key not found\n", s);
	cr_assert_str_eq(r.err, want);
	run_free(&r);

	/* Deleting it again: nothing there, exit 1. */
	r = run("del", s, "k");
	expect_one_error_line(&r, 1);
	snprintf(want, sizeof want, "mstore: del %s: key not found\n", s);
	cr_assert_str_eq(r.err, want);
	run_free(&r);
}

/* ls */

Test(cli, ls_lists_exactly_the_keys_sorted_one_a_line)
{
	const char *s = new_store("x.ms");
	struct run r;

	put(s, "pear", "1");
	put(s, "apple", "2");
	put(s, "fig", "3");
	put(s, "apple-pie", "4");
	put(s, "gone", "5");
	r = run("del", s, "gone");
	expect_ok(&r);
	run_free(&r);

	r = run("ls", s);
	expect_ok(&r);
	cr_assert_str_eq(r.out, "apple\napple-pie\nfig\npear\n");
	run_free(&r);

	r = run("ls", "--count", s);
	expect_ok(&r);
	cr_assert_str_eq(r.out, "4\n");
	run_free(&r);
}

Test(cli, ls_escapes_unprintable_bytes_and_raw_prints_them_as_they_are)
{
	static const char raw[] = {'a', '\n', '\\', 0, (char)0xff, 'b', '\n'};
	const char *s = new_store("x.ms");
	struct run r = run("put", s, "--hex", "610a5c00ff62", "v");

	expect_ok(&r);
	run_free(&r);

	r = run("ls", s);
	expect_ok(&r);
	cr_assert_str_eq(r.out, "a\\x0a\\\\\\x00\\xffb\n");
	run_free(&r);

	r = run("ls", s, "--raw");
	expect_ok(&r);
	cr_assert_eq(r.out_len, sizeof raw);
	cr_assert_arr_eq(r.out, raw, sizeof raw);
	run_free(&r);
}

Test(cli, ls_of_an_empty_store_prints_nothing)
{
	const char *s = new_store("x.ms");
	struct run r = run("ls", s);

	expect_ok(&r);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);
}

/* stat */

Test(cli, stat_json_is_one_object_whose_counts_follow_puts_and_dels)
{
	static const char *const fields[] = {
		"objects", "live_bytes", "used_bytes", "free_bytes", "file_bytes", "largest_free",
		"capacity", "txn_id", "readers", "hits", "misses", "evictions", "evicted_bytes",
		"expired"};
	const char *s = new_store("x.ms");
	struct stat st;
	struct run r;
	char key[16];
	uint64_t txn_before;

	r = run("stat", s, "--json");
	expect_ok(&r);
	expect_json_object(r.out);
	cr_assert_eq(json_u64(r.out, "objects"), 0);
	txn_before = json_u64(r.out, "txn_id");
	run_free(&r);

	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof key, "key%d", i);
		put(s, key, "value");
	}
	r = run("del", s, "key1");
	expect_ok(&r);
	run_free(&r);
	r = run("del", s, "key3");
	expect_ok(&r);
	run_free(&r);

	r = run("stat", "--json", s);
	expect_ok(&r);
	expect_json_object(r.out);
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
		json_u64(r.out, fields[i]);
	cr_assert_eq(json_u64(r.out, "objects"), 3, "%s", r.out);
	cr_assert_eq(json_u64(r.out, "live_bytes"), 3 * (4 + 5), "%s", r.out);
	cr_assert_eq(json_u64(r.out, "capacity"), 0);
	cr_assert_eq(json_u64(r.out, "readers"), 0);
	cr_assert_geq(json_u64(r.out, "txn_id"), txn_before + 7, "one commit per put and del");
	cr_assert_eq(stat(s, &st), 0);
	cr_assert_eq(json_u64(r.out, "file_bytes"), (uint64_t)st.st_size);
	cr_assert_geq(json_u64(r.out, "file_bytes"),
	              json_u64(r.out, "used_bytes") + json_u64(r.out, "free_bytes"));
	run_free(&r);
}

Test(cli, stat_prints_aligned_labels_with_human_sizes_or_exact_bytes)
{
	const char *s = new_store("x.ms");
	char want[64];
	struct stat st;
	struct run r;

	put(s, "a", "1");
	put(s, "b", "22");
	r = run("stat", s);
	expect_ok(&r);
	cr_assert_not_null(strstr(r.out, "\nobjects          2\n"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "\nlive bytes       5 B "), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "% of the heap (fill)\n"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "\ncapacity         unlimited\n"), "%s", r.out);
	cr_assert(strstr(r.out, "KiB") != NULL || strstr(r.out, "MiB") != NULL, "%s", r.out);
	run_free(&r);

	r = run("stat", s, "--bytes");
	expect_ok(&r);
	cr_assert_eq(stat(s, &st), 0);
	snprintf(want, sizeof want, "\nfile size        %llu\n", (unsigned long long)st.st_size);
	cr_assert_not_null(strstr(r.out, want), "want '%s' in %s", want + 1, r.out);
	run_free(&r);
}

/* The test process itself holds the snapshot, through the library, while the binary runs. */
Test(cli, stat_and_get_work_while_another_process_holds_a_read_snapshot)
{
	const char *s = new_store("x.ms");
	ms_options o = {.flags = MS_READONLY};
	ms_store *st = NULL;
	ms_txn *t = NULL;
	struct run r;

	put(s, "k", "v");
	cr_assert_eq(ms_open(s, &o, &st), 0, "%s", ms_last_error());
	cr_assert_eq(ms_txn_begin(st, MS_READONLY, &t), 0, "%s", ms_last_error());

	r = run("stat", s, "--json");
	expect_ok(&r);
	cr_assert_eq(json_u64(r.out, "objects"), 1);
	run_free(&r);

	r = run("get", s, "k");
	expect_ok(&r);
	cr_assert_str_eq(r.out, "v");
	run_free(&r);

	ms_txn_abort(t);
	ms_close(st);
}

/* ms_stats.readers counts "live read transactions across all processes" (the API contract). */
Test(cli, stat_counts_the_read_snapshot_of_another_process)
{
	const char *s = new_store("x.ms");
	ms_options o = {.flags = MS_READONLY};
	ms_store *st = NULL;
	ms_txn *t = NULL;
	struct run r;

	cr_assert_eq(ms_open(s, &o, &st), 0, "%s", ms_last_error());
	cr_assert_eq(ms_txn_begin(st, MS_READONLY, &t), 0, "%s", ms_last_error());
	r = run("stat", s, "--json");
	expect_ok(&r);
	cr_assert_eq(json_u64(r.out, "readers"), 1, "%s", r.out);
	run_free(&r);
	ms_txn_abort(t);
	ms_close(st);

	r = run("stat", s, "--json");
	expect_ok(&r);
	cr_assert_eq(json_u64(r.out, "readers"), 0, "%s", r.out);
	run_free(&r);
}

/* check */

Test(cli, check_json_on_a_fresh_store_says_ok_with_no_problems)
{
	const char *s = new_store("x.ms");
	struct run r;

	put(s, "k", "value");
	r = run("check", s, "--json");
	expect_ok(&r);
	expect_json_object(r.out);
	cr_assert(starts_with(r.out, "{\"ok\":true,\"problems\":[],"), "%s", r.out);
	cr_assert_eq(json_u64(r.out, "objects"), 1);
	cr_assert_eq(json_u64(r.out, "problem_count"), 0);
	json_u64(r.out, "nodes");
	json_u64(r.out, "used_bytes");
	run_free(&r);
}

Test(cli, check_on_random_bytes_exits_3_with_a_message_and_never_crashes)
{
	static const size_t sizes[] = {0, 100, 4096, 65536, 1 << 20};
	unsigned char *junk = malloc(1 << 20);
	const char *p = tmp_path("junk.ms");

	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		struct run r;

		fill_random(junk, sizes[i], 1000 + i);
		write_file(p, junk, sizes[i]);

		r = run("check", p);
		cr_assert_eq(r.signal, 0, "%zu bytes: killed by signal %d", sizes[i], r.signal);
		cr_assert_eq(r.code, 3, "%zu bytes: exit %d; %s%s", sizes[i], r.code, r.out, r.err);
		cr_assert_not_null(strstr(r.out, "DAMAGED"), "%zu bytes: %s", sizes[i], r.out);
		cr_assert(strstr(r.out, "problem") != NULL, "%s", r.out);
		run_free(&r);

		r = run("check", p, "--json");
		cr_assert_eq(r.signal, 0);
		cr_assert_eq(r.code, 3);
		expect_json_object(r.out);
		cr_assert(starts_with(r.out, "{\"ok\":false,"), "%s", r.out);
		cr_assert_geq(json_u64(r.out, "problem_count"), 1);
		run_free(&r);
	}
	free(junk);
}

Test(cli, check_of_a_missing_file_exits_1_with_one_line)
{
	struct run r = run("check", tmp_path("nothing-here.ms"));

	expect_one_error_line(&r, 1);
	cr_assert_not_null(strstr(r.err, "nothing-here.ms"), "%s", r.err);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);
}

Test(cli, check_finds_a_flipped_byte_in_an_object_and_get_refuses_it)
{
	char marker[4096];
	const char *s = new_store("x.ms");
	struct stat sb;
	unsigned char *file;
	struct run r;
	FILE *f;
	char *at;

	memset(marker, 'Q', sizeof marker - 1);
	marker[sizeof marker - 1] = '\0';
	put(s, "victim", marker);
	put(s, "bystander", "fine");

	cr_assert_eq(stat(s, &sb), 0);
	file = malloc((size_t)sb.st_size);
	f = fopen(s, "r+b");
	cr_assert_eq(fread(file, 1, (size_t)sb.st_size, f), (size_t)sb.st_size);
	at = memmem(file, (size_t)sb.st_size, marker, 64);
	cr_assert_not_null(at, "the value is not in the file as is");
	cr_assert_eq(fseek(f, (at - (char *)file) + 100, SEEK_SET), 0);
	fputc('X', f);
	cr_assert_eq(fclose(f), 0);
	free(file);

	r = run("check", s);
	cr_assert_eq(r.code, 3, "exit %d; %s%s", r.code, r.out, r.err);
	cr_assert(starts_with(r.out, "problem at offset "), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "DAMAGED"), "%s", r.out);
	run_free(&r);

	r = run("get", s, "victim");
	expect_one_error_line(&r, 1);
	cr_assert_eq(r.out_len, 0, "a damaged value must not be printed");
	run_free(&r);
}

/* check: damage made by hand, one kind at a time, each named in --json and in the text */

/* A store file in memory, to damage and write back. */
struct img {
	const char *path;
	unsigned char *b;
	size_t len;
};

static struct img img_load(const char *p)
{
	struct img im = {.path = p};
	struct stat sb;
	FILE *f = fopen(p, "rb");

	cr_assert_not_null(f);
	cr_assert_eq(fstat(fileno(f), &sb), 0);
	im.len = (size_t)sb.st_size;
	im.b = malloc(im.len);
	cr_assert_eq(fread(im.b, 1, im.len, f), im.len);
	fclose(f);
	return im;
}

static void img_save(struct img *im)
{
	write_file(im->path, im->b, im->len);
	free(im->b);
	im->b = NULL;
}

static struct disk_meta *img_meta(struct img *im, unsigned page)
{
	return (struct disk_meta *)(im->b + (size_t)page * MS_PAGE);
}

/* The newest meta page (both are valid in the stores these tests make). */
static struct disk_meta *img_newest(struct img *im)
{
	return img_meta(im, img_meta(im, 0)->seq > img_meta(im, 1)->seq ? 0 : 1);
}

static void meta_rehash(struct disk_meta *m)
{
	m->hash = meta_hash(m);
}

/* What a kill -9 leaves: no allocator checkpoint. */
static void img_drop_checkpoints(struct img *im)
{
	for (unsigned i = 0; i < 2; i++) {
		struct disk_meta *m = img_meta(im, i);
		m->ckpt_off = m->ckpt_len = m->ckpt_seq = m->ckpt_hash = 0;
		meta_rehash(m);
	}
}

static struct disk_meta *img_newest(struct img *im);
struct blk;
static uint64_t *img_slot_rec(struct img *im, uint64_t ent, unsigned depth, uint64_t obj, struct blk *at);
static bool img_has(struct img *im, uint64_t obj);

/* The offset of the object the newest commit holds for key (found by its bytes and header; a copy
 * inside another value is no object). */
static uint64_t img_obj(struct img *im, const char *key)
{
	size_t klen = strlen(key);

	for (uint64_t off = MS_HEAP_START; off + sizeof(struct disk_obj) + klen <= im->len; off += MS_ALIGN) {
		const struct disk_obj *o = (const struct disk_obj *)(im->b + off);
		if (o->klen == klen && memcmp(o + 1, key, klen) == 0 &&
		    off + obj_size(o->klen, obj_vlen(o)) <= im->len && obj_hash(o) == o->hash && img_has(im, off))
			return off;
	}
	cr_assert_fail("no object for key %s", key);
	return 0;
}

/* An index block in an image: where it is, what its entry says it is, and its depth. */
struct blk {
	struct disk_node *nd;
	uint64_t ent;
	unsigned depth;
};

/* The slot that points at the object at obj (below the index entry ent at depth), and its block. */
static uint64_t *img_slot_rec(struct img *im, uint64_t ent, unsigned depth, uint64_t obj, struct blk *at)
{
	struct disk_node *nd = (struct disk_node *)(im->b + ent_off(ent));
	unsigned n = block_slots(nd, ent, depth);

	for (unsigned i = 0; i < n; i++) {
		uint64_t *found = NULL;
		if (!ent_is_node(nd->slot[i]) && ent_off(nd->slot[i]) == obj)
			found = &nd->slot[i];
		else if (ent_is_node(nd->slot[i]))
			found = img_slot_rec(im, nd->slot[i], depth + 1, obj, at);
		if (found) {
			if (!at->nd)
				*at = (struct blk){nd, ent, depth};
			return found;
		}
	}
	return NULL;
}

static uint64_t *img_slot(struct img *im, uint64_t obj, struct blk *at)
{
	at->nd = NULL;
	uint64_t *slot = img_slot_rec(im, img_newest(im)->root, 0, obj, at);
	cr_assert_not_null(slot, "no slot points at %llu", (unsigned long long)obj);
	return slot;
}

static bool img_has(struct img *im, uint64_t obj)
{
	struct blk b = {NULL, 0, 0};
	return img_slot_rec(im, img_newest(im)->root, 0, obj, &b) != NULL;
}

static void node_rehash(const struct blk *b)
{
	b->nd->hash = block_hash(b->nd, block_slots(b->nd, b->ent, b->depth), b->ent);
}

/* A free spot for size bytes after the object at off, in the same 4 KiB of its size-class run:
 * the next slot of its class (alloc_round(size) bytes) that is zero for two slots. */
static uint64_t img_free_slot(struct img *im, uint64_t off, uint64_t size)
{
	uint64_t cls = (size + 15) / 16 * 16;

	for (uint64_t at = off + cls; (at + 2 * cls - MS_HEAP_START) / 4096 == (off - MS_HEAP_START) / 4096; at += cls) {
		bool zero = true;
		for (uint64_t i = 0; i < 2 * cls && zero; i++)
			zero = im->b[at + i] == 0;
		if (zero)
			return at;
	}
	cr_assert_fail("no free slot near %llu", (unsigned long long)off);
	return 0;
}

/* Move the object for key to `to`, leaving zeros where it was, and point its slot there. */
static void img_move(struct img *im, const char *key, uint64_t to)
{
	uint64_t from = img_obj(im, key);
	const struct disk_obj *o = (const struct disk_obj *)(im->b + from);
	size_t size = (size_t)obj_size(o->klen, obj_vlen(o));
	struct blk b;
	uint64_t *slot = img_slot(im, from, &b);

	memmove(im->b + to, im->b + from, size);
	if (to >= from + size || to + size <= from)
		memset(im->b + from, 0, size);
	*slot = (*slot & ~ENT_OFF_MASK) | to;
	node_rehash(&b);
}

#define DAMAGE_VLEN 40
#define DAMAGE_EMBED 9 /* where in the value of "charlie" a copy of the "bravo" object starts, 16-aligned */

/* The object "bravo" would be, byte for byte (its checksum depends on nothing but its bytes). */
static size_t bravo_object(unsigned char *out)
{
	struct disk_obj o = {.klen = 5, .vlen_flags = DAMAGE_VLEN};

	memcpy(out + sizeof o, "bravo", 5);
	memset(out + sizeof o + 5, 'b', DAMAGE_VLEN);
	memcpy(out, &o, sizeof o);
	((struct disk_obj *)out)->hash = obj_hash((const struct disk_obj *)out);
	return sizeof o + 5 + DAMAGE_VLEN;
}

/* Three objects in three commits: "charlie"'s value holds a copy of "bravo". Closed cleanly, or
 * (crash) the file as it was before the close: the two meta pages then hold different trees.
 * "charlie" is put after a reopen, so its commit syncs its data before its meta and has no commit
 * record (with one, damage to its blocks would read as a commit that a crash cut short). */
static const char *damage_store(bool crash)
{
	const char *p = tmp_path("damaged.ms");
	ms_options o = {.flags = MS_CREATE};
	unsigned char val[DAMAGE_VLEN], big[200], obj[128];
	ms_store *s;

	memset(val, 'a', sizeof val);
	memset(big, 'c', sizeof big);
	memcpy(big + DAMAGE_EMBED, obj, bravo_object(obj));
	cr_assert_eq(ms_open(p, &o, &s), 0, "%s", ms_last_error());
	cr_assert_eq(ms_put(s, "alpha", 5, val, sizeof val), 0);
	memset(val, 'b', sizeof val);
	cr_assert_eq(ms_put(s, "bravo", 5, val, sizeof val), 0);
	cr_assert_eq(ms_close(s), 0);
	cr_assert_eq(ms_open(p, &o, &s), 0, "%s", ms_last_error());
	cr_assert_eq(ms_put(s, "charlie", 7, big, sizeof big), 0);
	struct img before = img_load(p);
	cr_assert_eq(ms_close(s), 0);
	if (crash)
		img_save(&before);
	free(before.b);
	return p;
}

static void dmg_node_checksum(struct img *im)
{
	im->b[ent_off(img_newest(im)->root)] ^= 1;
}

static void dmg_object_checksum(struct img *im)
{
	im->b[img_obj(im, "bravo") + 30] ^= 1;
}

static void dmg_newest_object(struct img *im)
{
	im->b[img_obj(im, "charlie") + 100] ^= 1;
}

static void dmg_wrong_hash(struct img *im)
{
	struct blk b;

	*img_slot(im, img_obj(im, "bravo"), &b) ^= 1ull << 48;
	node_rehash(&b);
}

/* "bravo"'s slot points at the copy inside "charlie"'s value: two objects that overlap. */
static void dmg_overlap(struct img *im)
{
	uint64_t from = img_obj(im, "bravo"), copy = img_obj(im, "charlie") + 16 + 7 + DAMAGE_EMBED;
	struct blk b;
	uint64_t *slot = img_slot(im, from, &b);

	cr_assert_eq(copy % MS_ALIGN, 0);
	*slot = (*slot & ~ENT_OFF_MASK) | copy;
	node_rehash(&b);
}

static void dmg_counts(struct img *im)
{
	struct disk_meta *m = img_newest(im);

	m->objects++;
	m->live_bytes++;
	m->obj_bytes += 16;
	meta_rehash(m);
}

static void dmg_checkpoint_checksum(struct img *im)
{
	struct disk_meta *m = img_newest(im);

	cr_assert(m->ckpt_off && m->ckpt_seq == m->seq, "a clean close leaves a checkpoint");
	im->b[m->ckpt_off + 12] ^= 1;
}

/* "bravo" moves to a free slot of its run: sound for the index, not what the checkpoint books. */
static void dmg_checkpoint_stale(struct img *im)
{
	uint64_t from = img_obj(im, "bravo");

	img_move(im, "bravo", img_free_slot(im, from, obj_size(5, DAMAGE_VLEN)));
}

/* After a crash (no checkpoint), "bravo" moves off its size class's slots. */
static void dmg_misplaced(struct img *im)
{
	uint64_t from = img_obj(im, "bravo");

	img_drop_checkpoints(im);
	img_move(im, "bravo", img_free_slot(im, from, obj_size(5, DAMAGE_VLEN)) + 16);
}

/* Write an index block of n slots (its whole block size: a bucket has spare slots) at the next free
 * spot after *near (in its 4 KiB of a run); *near moves past it, so blocks never overlap. */
static uint64_t img_new_block(struct img *im, uint64_t *near, uint64_t kind, unsigned depth, uint32_t bitmap,
                              const uint64_t *slot, unsigned n)
{
	uint64_t size = (block_size(kind, n) + 15) / 16 * 16;
	uint64_t at = img_free_slot(im, *near, size);
	struct disk_node *nd = (struct disk_node *)(im->b + at);
	struct blk b = {nd, at | kind, depth};

	nd->bitmap = bitmap;
	memcpy(nd->slot, slot, 8ull * n);
	node_rehash(&b);
	*near = at + size;
	return b.ent;
}

/* A trie of nodes over the objects e[] (hashes h[]) from depth on, in which the object at lone sits
 * alone in a bucket: a shape no sequence of puts and deletes leaves. */
static uint64_t img_lone_trie(struct img *im, uint64_t *near, unsigned depth, const uint64_t *e, const uint64_t *h,
                              unsigned m, uint64_t lone)
{
	if (m == 1)
		return ent_off(e[0]) == lone ? img_new_block(im, near, ENT_NODE | ENT_BUCKET, depth, 1, e, 1) : e[0];
	uint64_t slot[MS_FANOUT];
	uint32_t bitmap = 0;
	unsigned n = 0;
	for (unsigned c = 0; c < MS_FANOUT; c++) {
		uint64_t ge[3], gh[3];
		unsigned gm = 0;
		for (unsigned i = 0; i < m; i++)
			if (((h[i] >> (depth * MS_FANOUT_BITS)) & (MS_FANOUT - 1)) == c) {
				ge[gm] = e[i];
				gh[gm++] = h[i];
			}
		if (gm) {
			slot[n++] = img_lone_trie(im, near, depth + 1, ge, gh, gm, lone);
			bitmap |= 1u << c;
		}
	}
	return img_new_block(im, near, ENT_NODE, depth, bitmap, slot, n);
}

/* The three objects in a trie of nodes where "alpha" sits alone in a bucket below the root. */
static void dmg_not_canonical(struct img *im)
{
	struct disk_meta *m = img_newest(im);
	const char *keys[3] = {"alpha", "bravo", "charlie"};
	uint64_t e[3], h[3], alpha = img_obj(im, "alpha"), near = alpha;

	for (int i = 0; i < 3; i++) {
		struct blk b;
		e[i] = *img_slot(im, img_obj(im, keys[i]), &b);
		h[i] = key_hash(m->hash_seed, keys[i], strlen(keys[i]));
	}
	img_drop_checkpoints(im);
	m->root = img_lone_trie(im, &near, 0, e, h, 3, alpha);
	meta_rehash(m);
}

static void dmg_no_meta(struct img *im)
{
	img_meta(im, 0)->magic = 0;
	img_meta(im, 1)->magic = 0;
}

Test(cli, check_names_each_kind_of_damage_in_text_and_json)
{
	static const struct {
		const char *what;
		void (*damage)(struct img *);
		const char *problem[3]; /* each must be in a "problem" of the JSON */
		bool crash;             /* damage the file as a kill -9 before the close leaves it */
	} cases[] = {
		{"a node's checksum", dmg_node_checksum, {"index node fails its checksum or bounds check"}},
		{"an object's checksum", dmg_object_checksum, {"object fails its checksum or bounds check"}},
		{"the newest commit only", dmg_newest_object,
		 {"object fails its checksum or bounds check", "commit 3 is damaged; the previous commit 2 is intact"},
		 true},
		{"an entry's hash bits", dmg_wrong_hash, {"object is filed under the wrong hash"}},
		{"two objects overlapping", dmg_overlap, {"block overlaps the block at"}},
		{"meta totals", dmg_counts,
		 {"meta counts 4 objects, the index holds 3", "live bytes, the index holds",
		  "space totals"}},
		{"the checkpoint's checksum", dmg_checkpoint_checksum, {"allocator checkpoint fails its checksum"}},
		{"a checkpoint that misses a block", dmg_checkpoint_stale,
		 {"allocator checkpoint does not book this block as the index does"}},
		{"a block off its size class's slots", dmg_misplaced, {"lies where the allocator cannot have put it"}},
		{"a trie that is not canonical", dmg_not_canonical, {"the trie is not canonical"}},
		{"both meta pages", dmg_no_meta, {"meta page 0: bad magic", "meta page 1: bad magic"}},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *p = damage_store(cases[i].crash);
		struct img im;
		struct run r;

		r = run("check", p, "--json");
		expect_ok(&r);
		run_free(&r);
		im = img_load(p);
		cases[i].damage(&im);
		img_save(&im);

		r = run("check", p, "--json");
		cr_assert_eq(r.signal, 0, "%s: killed by signal %d", cases[i].what, r.signal);
		cr_assert_eq(r.code, 3, "%s: exit %d; %s%s", cases[i].what, r.code, r.out, r.err);
		expect_json_object(r.out);
		cr_assert(starts_with(r.out, "{\"ok\":false,\"problems\":[{\"offset\":"), "%s: %s", cases[i].what, r.out);
		cr_assert_geq(json_u64(r.out, "problem_count"), 1);
		for (int k = 0; k < 3 && cases[i].problem[k]; k++)
			cr_assert_not_null(strstr(r.out, cases[i].problem[k]), "%s: no problem naming '%s' in %s",
			                   cases[i].what, cases[i].problem[k], r.out);
		run_free(&r);

		r = run("check", p);
		cr_assert_eq(r.code, 3, "%s: exit %d; %s%s", cases[i].what, r.code, r.out, r.err);
		cr_assert(starts_with(r.out, "problem at offset "), "%s: %s", cases[i].what, r.out);
		for (int k = 0; k < 3 && cases[i].problem[k]; k++)
			cr_assert_not_null(strstr(r.out, cases[i].problem[k]), "%s: no '%s' in %s", cases[i].what,
			                   cases[i].problem[k], r.out);
		cr_assert_not_null(strstr(r.out, "DAMAGED"), "%s", r.out);
		run_free(&r);
		cr_assert_eq(unlink(p), 0);
		unlink(tmp_path("damaged.ms-lock"));
	}
}

/* Files that are not stores */

Test(cli, get_on_a_file_that_is_not_a_store_exits_1_with_one_clear_line)
{
	static const char text[] = "this is a shopping list, not a store\n";
	const char *p = tmp_path("list.txt");
	char back[sizeof text] = {0};
	struct run r;
	FILE *f;

	write_file(p, text, sizeof text - 1);
	r = run("get", p, "milk");
	expect_one_error_line(&r, 1);
	cr_assert_not_null(strstr(r.err, p), "the line names the file: %s", r.err);
	cr_assert_eq(r.out_len, 0);
	run_free(&r);

	/* Refused files stay byte for byte as they were. */
	f = fopen(p, "rb");
	cr_assert_eq(fread(back, 1, sizeof back, f), sizeof text - 1);
	fclose(f);
	cr_assert_str_eq(back, text);
}

Test(cli, put_to_a_missing_file_exits_1_and_creates_nothing)
{
	const char *p = tmp_path("missing.ms");
	struct run r = run("put", p, "k", "v");

	expect_one_error_line(&r, 1);
	cr_assert_not_null(strstr(r.err, p), "%s", r.err);
	cr_assert_neq(access(p, F_OK), 0);
	run_free(&r);
}
