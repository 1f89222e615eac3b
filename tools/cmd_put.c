/* cmd_put.c - `mstore put FILE KEY [VALUE]`: store a value given as an argument or read from
 * standard input byte for byte; one commit, durable when it returns unless --nosync.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore put FILE KEY [VALUE] [--nosync] [--hex]\n"
	"Store VALUE under KEY (replacing any value there). With no VALUE, or '-', the value is\n"
	"read from standard input byte for byte, any size, binary safe.\n"
	"\n"
	"  --hex       KEY is given in hex (e.g. 00ff10), for keys that are not text\n"
	"  --nosync    do not wait for the commit to reach the disk (it survives a crash of\n"
	"              this process, not a power loss)\n"
	"  -h, --help  show this help\n"
	"Put '--' before a KEY or VALUE that starts with '-'.\n";

int cmd_put(int argc, char **argv)
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
	unsigned char *input = NULL;
	const void *key, *val;
	size_t klen, vlen;
	const char *path;
	bool hex = false;
	int c, rc, n;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'x': hex = true; break;
		case 'n': o.flags |= MS_NOSYNC; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("put");
		default: return cli_bad_option("put", c, argv);
		}
	}
	n = argc - optind;
	if (n < 2)
		return cli_usage_error("put", n < 1 ? "missing FILE and KEY" : "missing KEY");
	if (n > 3)
		return cli_usage_error("put", "too many arguments");
	path = argv[optind];
	rc = cli_key_arg("put", argv[optind + 1], hex, keybuf, &key, &klen);
	if (rc != CLI_OK)
		return rc;

	if (n == 3 && strcmp(argv[optind + 2], "-") != 0) {
		val = argv[optind + 2];
		vlen = strlen(argv[optind + 2]);
	} else {
		/* Read the whole value before opening, so a slow producer does not hold the store. */
		if (cli_read_all(STDIN_FILENO, &input, &vlen) != 0)
			return cli_error("put %s: read standard input: %s", path, strerror(errno));
		val = input;
	}

	rc = ms_open(path, &o, &s);
	if (rc != 0) {
		free(input);
		return cli_store_error("open", path, rc);
	}
	rc = ms_put(s, key, klen, val, vlen);
	free(input);
	if (rc != 0) {
		cli_store_error("put", path, rc);
		ms_close(s);
		return CLI_ERROR;
	}
	rc = ms_close(s);
	if (rc != 0)
		return cli_store_error("close", path, rc);
	return CLI_OK;
}
