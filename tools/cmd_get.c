/* cmd_get.c - `mstore get FILE KEY`: write the value to standard output byte for byte, nothing
 * added. Reads through a read-only snapshot, so it never waits for or disturbs a writer.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore get FILE KEY [--hex]\n"
	"Write the value of KEY to standard output, byte for byte, with nothing added.\n"
	"Exit 1 with a message when KEY is not there.\n"
	"\n"
	"  --hex       KEY is given in hex (e.g. 00ff10), for keys that are not text\n"
	"  -h, --help  show this help\n";

int cmd_get(int argc, char **argv)
{
	static const struct option opts[] = {
		{"hex", no_argument, NULL, 'x'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static unsigned char keybuf[MS_MAXKEY];
	ms_options o = {.flags = MS_READONLY};
	ms_store *s = NULL;
	ms_txn *t = NULL;
	ms_val v;
	const void *key;
	size_t klen;
	const char *path;
	bool hex = false;
	int c, rc, n, ret = CLI_ERROR;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'x': hex = true; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("get");
		default: return cli_bad_option("get", c, argv);
		}
	}
	n = argc - optind;
	if (n != 2)
		return cli_usage_error("get", n < 1   ? "missing FILE and KEY"
		                              : n < 2 ? "missing KEY"
		                                      : "too many arguments");
	path = argv[optind];
	rc = cli_key_arg("get", argv[optind + 1], hex, keybuf, &key, &klen);
	if (rc != CLI_OK)
		return rc;

	rc = ms_open(path, &o, &s);
	if (rc != 0)
		return cli_store_error("open", path, rc);
	rc = ms_txn_begin(s, MS_READONLY, &t);
	if (rc != 0) {
		cli_store_error("get", path, rc);
		goto out;
	}
	/* Zero-copy: the value is written straight from the mapping, however large it is. */
	rc = ms_txn_get(t, key, klen, &v);
	if (rc == MS_NOTFOUND) {
		cli_error("get %s: key not found", path);
		goto out;
	}
	if (rc != 0) {
		cli_store_error("get", path, rc);
		goto out;
	}
	if (v.len > 0 && fwrite(v.data, 1, v.len, stdout) != v.len) {
		cli_finish_stdout("get");
		goto out;
	}
	ret = cli_finish_stdout("get");
out:
	if (t != NULL)
		ms_txn_abort(t);
	ms_close(s);
	return ret;
}
