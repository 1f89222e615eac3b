/* cmd_del.c - `mstore del FILE KEY`: delete a key in one commit. A key that is not there is an
 * error (exit 1), so scripts notice a wrong name.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore del FILE KEY [--hex] [--nosync]\n"
	"Delete KEY. Exit 1 with a message when KEY is not there.\n"
	"\n"
	"  --hex       KEY is given in hex (e.g. 00ff10), for keys that are not text\n"
	"  --nosync    do not wait for the commit to reach the disk\n"
	"  -h, --help  show this help\n";

int cmd_del(int argc, char **argv)
{
	static const struct option opts[] = {
		{"hex", no_argument, NULL, 'x'},
		{"nosync", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static unsigned char keybuf[MS_MAXKEY];
	ms_options o = {0};
	ms_store *s = NULL;
	const void *key;
	size_t klen;
	const char *path;
	bool hex = false;
	int c, rc, n;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'x': hex = true; break;
		case 'n': o.flags |= MS_NOSYNC; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("del");
		default: return cli_bad_option("del", c, argv);
		}
	}
	n = argc - optind;
	if (n != 2)
		return cli_usage_error("del", n < 1   ? "missing FILE and KEY"
		                              : n < 2 ? "missing KEY"
		                                      : "too many arguments");
	path = argv[optind];
	rc = cli_key_arg("del", argv[optind + 1], hex, keybuf, &key, &klen);
	if (rc != CLI_OK)
		return rc;

	rc = ms_open(path, &o, &s);
	if (rc != 0)
		return cli_store_error("open", path, rc);
	rc = ms_del(s, key, klen);
	if (rc != 0) {
		if (rc == MS_NOTFOUND)
			cli_error("del %s: key not found", path);
		else
			cli_store_error("del", path, rc);
		ms_close(s);
		return CLI_ERROR;
	}
	rc = ms_close(s);
	if (rc != 0)
		return cli_store_error("close", path, rc);
	return CLI_OK;
}
