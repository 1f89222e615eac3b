/* cmd_ls.c - `mstore ls FILE`: list the keys of one read-only snapshot, one a line, sorted
 * bytewise so the output is stable (the store's own order follows its index and is unspecified).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore ls FILE [--raw | --hex] [--count]\n"
	"List the keys, one a line, sorted bytewise. Printable ASCII is shown as is, a backslash\n"
	"as \\\\ and every other byte as \\xNN (two lowercase hex digits).\n"
	"\n"
	"  --raw       print the keys' bytes as they are, unescaped\n"
	"  --hex       print each key in hex (what --hex of put/get/del takes)\n"
	"  --count     print only the number of keys\n"
	"  -h, --help  show this help\n";

enum style { STYLE_ESCAPED, STYLE_RAW, STYLE_HEX };

static int key_cmp(const void *a, const void *b)
{
	const ms_val *x = a, *y = b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->data, y->data, n);

	if (c != 0)
		return c;
	return (x->len > y->len) - (x->len < y->len);
}

static void put_key(enum style style, const ms_val *k)
{
	switch (style) {
	case STYLE_RAW: fwrite(k->data, 1, k->len, stdout); break;
	case STYLE_HEX: cli_put_hex(stdout, k->data, k->len); break;
	case STYLE_ESCAPED: cli_put_key_escaped(stdout, k->data, k->len); break;
	}
	putchar('\n');
}

int cmd_ls(int argc, char **argv)
{
	static const struct option opts[] = {
		{"raw", no_argument, NULL, 'r'},
		{"hex", no_argument, NULL, 'x'},
		{"count", no_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	ms_options o = {.flags = MS_READONLY};
	enum style style = STYLE_ESCAPED;
	ms_store *s = NULL;
	ms_txn *t = NULL;
	ms_iter *it = NULL;
	ms_val k, v, *keys = NULL, *grown;
	size_t n = 0, cap = 0;
	const char *path;
	bool count_only = false;
	int c, rc, ret = CLI_ERROR;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'r': style = STYLE_RAW; break;
		case 'x': style = STYLE_HEX; break;
		case 'c': count_only = true; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("ls");
		default: return cli_bad_option("ls", c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("ls", argc - optind < 1 ? "missing FILE" : "too many arguments");
	path = argv[optind];

	rc = ms_open(path, &o, &s);
	if (rc != 0)
		return cli_store_error("open", path, rc);
	rc = ms_txn_begin(s, MS_READONLY, &t);
	if (rc == 0)
		rc = ms_iter_open(t, &it);
	if (rc != 0) {
		cli_store_error("ls", path, rc);
		goto out;
	}
	/* The keys point into the snapshot's mapping and stay valid until t ends, so sorting
	 * costs one ms_val per key and no copies. */
	while ((rc = ms_iter_next(it, &k, &v)) == 0) {
		if (count_only) {
			n++;
			continue;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			grown = realloc(keys, cap * sizeof *keys);
			if (grown == NULL) {
				cli_error("ls %s: out of memory for %zu keys", path, cap);
				goto out;
			}
			keys = grown;
		}
		keys[n++] = k;
	}
	if (rc != MS_NOTFOUND) {
		cli_store_error("ls", path, rc);
		goto out;
	}
	if (count_only) {
		printf("%zu\n", n);
	} else {
		if (n > 0)
			qsort(keys, n, sizeof *keys, key_cmp);
		for (size_t i = 0; i < n; i++)
			put_key(style, &keys[i]);
	}
	ret = cli_finish_stdout("ls");
out:
	free(keys);
	if (it != NULL)
		ms_iter_close(it);
	if (t != NULL)
		ms_txn_abort(t);
	ms_close(s);
	return ret;
}
