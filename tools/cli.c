/* cli.c - what the mstore commands share: error and usage lines, getopt set-up, key arguments,
 * human sizes, key escaping, JSON strings and reading standard input. Kept free of any command's
 * logic so that each cmd_<name>.c reads top to bottom as that command.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("mstore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CLI_ERROR;
}

/* ms_last_error() keeps the thread's last failure, which may be older than rc when the failing
 * call does not set it; MS_NOTFOUND is such a plain outcome that its sentence is always the
 * clearer choice. The detail reads "<call> <file>: <reason>" or "<file>: <reason>"; the op and
 * file are put in front only where the detail does not already say them, so the line names the
 * file exactly once in the usual case. Multi-line detail is cut to its first line: the contract
 * is one line per error. */
int cli_store_error(const char *op, const char *path, int rc)
{
	const char *detail = rc == MS_NOTFOUND ? "" : ms_last_error();
	const char *at;
	int n;

	if (detail == NULL || detail[0] == '\0')
		return cli_error("%s %s: %s", op, path, ms_strerror(rc));
	n = (int)strcspn(detail, "\n");
	at = strstr(detail, path);
	if (at == detail)
		return cli_error("%s %.*s", op, n, detail);
	if (at != NULL && at - detail < n)
		return cli_error("%.*s", n, detail);
	return cli_error("%s %s: %.*s", op, path, n, detail);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("mstore: ", stderr);
	if (cmd != NULL)
		fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (cmd != NULL)
		fprintf(stderr, "Try 'mstore %s --help'.\n", cmd);
	else
		fputs("Try 'mstore --help'.\n", stderr);
	return CLI_USAGE;
}

void cli_getopt_reset(void)
{
	optind = 0; /* glibc: 0 also re-reads the permutation settings, unlike 1 */
	opterr = 0; /* we print one line of our own instead of getopt's */
}

int cli_bad_option(const char *cmd, int c, char **argv)
{
	/* After a failure getopt has already moved past the offending word. */
	const char *word = optind > 0 ? argv[optind - 1] : "?";

	if (c == ':')
		return cli_usage_error(cmd, "option '%s' needs a value", word);
	if (optopt != 0 && strncmp(word, "--", 2) != 0)
		return cli_usage_error(cmd, "unknown option '-%c'", optopt);
	return cli_usage_error(cmd, "unknown option '%s'", word);
}

bool cli_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "BKMGTPE";
	uint64_t whole = 0, mult = 1;
	double frac = 0.0, scale = 0.1;
	const char *p = s, *u;
	bool digits = false;

	for (; isdigit((unsigned char)*p); p++, digits = true) {
		if (whole > (UINT64_MAX - 9) / 10)
			return false;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++, digits = true, scale /= 10)
			frac += (*p - '0') * scale;
	}
	if (!digits)
		return false;
	if (*p != '\0') {
		u = strchr(units, toupper((unsigned char)*p));
		if (u == NULL)
			return false;
		for (long i = 0; i < u - units; i++)
			mult *= 1024;
		p++;
		if (u != units) { /* after K, M, ...: "", "B", "iB" */
			if (*p == 'i')
				p++;
			if (*p == 'B' || *p == 'b')
				p++;
		}
		if (*p != '\0')
			return false;
	}
	if (whole > UINT64_MAX / mult)
		return false;
	whole *= mult;
	/* The fraction only matters with a unit; 1.5 bytes rounds to 2. */
	uint64_t extra = (uint64_t)(frac * (double)mult + 0.5);
	if (whole > UINT64_MAX - extra)
		return false;
	*out = whole + extra;
	return true;
}

char *cli_size(char buf[CLI_SIZE_LEN], uint64_t bytes, bool exact)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes / 1024.0;
	size_t i = 0;

	if (exact || bytes < 1024) {
		snprintf(buf, CLI_SIZE_LEN, exact ? "%llu" : "%llu B", (unsigned long long)bytes);
		return buf;
	}
	/* Move up while the value would print as 1024.0 or more of this unit. */
	while (v >= 1023.95 && i + 1 < sizeof units / sizeof units[0]) {
		v /= 1024.0;
		i++;
	}
	snprintf(buf, CLI_SIZE_LEN, "%.1f %s", v, units[i]);
	return buf;
}

static int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int cli_key_arg(const char *cmd, const char *arg, bool hex, unsigned char *buf, const void **key,
                size_t *klen)
{
	size_t n = strlen(arg);

	if (hex) {
		if (n % 2 != 0)
			return cli_usage_error(cmd, "--hex key has an odd number of digits");
		n /= 2;
		if (n > MS_MAXKEY)
			return cli_usage_error(cmd, "key is %zu bytes, more than the %u allowed", n,
			                       MS_MAXKEY);
		for (size_t i = 0; i < n; i++) {
			int hi = hex_digit((unsigned char)arg[2 * i]);
			int lo = hex_digit((unsigned char)arg[2 * i + 1]);
			if (hi < 0 || lo < 0)
				return cli_usage_error(cmd, "--hex key has a character that is not a hex digit");
			buf[i] = (unsigned char)(hi << 4 | lo);
		}
		*key = buf;
	} else {
		*key = arg;
	}
	if (n == 0)
		return cli_usage_error(cmd, "key is empty (keys are 1 to %u bytes)", MS_MAXKEY);
	if (n > MS_MAXKEY)
		return cli_usage_error(cmd, "key is %zu bytes, more than the %u allowed", n, MS_MAXKEY);
	*klen = n;
	return CLI_OK;
}

void cli_put_key_escaped(FILE *f, const void *key, size_t len)
{
	const unsigned char *k = key;

	for (size_t i = 0; i < len; i++) {
		if (k[i] == '\\')
			fputs("\\\\", f);
		else if (k[i] >= 0x20 && k[i] < 0x7f)
			fputc(k[i], f);
		else
			fprintf(f, "\\x%02x", k[i]);
	}
}

void cli_put_hex(FILE *f, const void *data, size_t len)
{
	const unsigned char *d = data;

	for (size_t i = 0; i < len; i++)
		fprintf(f, "%02x", d[i]);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when it is not one.
 * Overlong forms, surrogates and code points past U+10FFFF are invalid (RFC 3629). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1fu;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0fu;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07u;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void cli_put_json_string(FILE *f, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	for (size_t i = 0; i < len;) {
		unsigned char c = p[i];
		size_t n;

		switch (c) {
		case '"': fputs("\\\"", f); i++; continue;
		case '\\': fputs("\\\\", f); i++; continue;
		case '\n': fputs("\\n", f); i++; continue;
		case '\r': fputs("\\r", f); i++; continue;
		case '\t': fputs("\\t", f); i++; continue;
		default: break;
		}
		if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\u%04x", c);
			i++;
			continue;
		}
		n = utf8_len(p + i, len - i);
		if (n == 0) {
			fputs("\\ufffd", f);
			i++;
			continue;
		}
		fwrite(p + i, 1, n, f);
		i += n;
	}
	fputc('"', f);
}

int cli_read_all(int fd, unsigned char **out, size_t *len)
{
	size_t cap = 64 * 1024, n = 0;
	unsigned char *buf = malloc(cap), *grown;
	ssize_t r;

	*out = NULL;
	*len = 0;
	if (buf == NULL)
		return -1;
	for (;;) {
		if (n == cap) {
			/* Doubling keeps a value of any size at O(size) copying in total. */
			if (cap > SIZE_MAX / 2) {
				errno = ENOMEM;
				goto fail;
			}
			grown = realloc(buf, cap * 2);
			if (grown == NULL)
				goto fail;
			buf = grown;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		n += (size_t)r;
	}
	*out = buf;
	*len = n;
	return 0;
fail:
	free(buf);
	return -1;
}

int cli_finish_stdout(const char *cmd)
{
	if (fflush(stdout) != 0 || ferror(stdout))
		return cli_error("%s: write to standard output: %s", cmd, strerror(errno));
	return CLI_OK;
}
