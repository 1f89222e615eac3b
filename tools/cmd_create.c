/* cmd_create.c - `mstore create FILE`: make a new, empty store, refusing a file that is already
 * there so that a typo cannot touch an existing store.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore create FILE [--capacity SIZE] [--nosync]\n"
	"Make a new, empty store at FILE. Fails if FILE already exists.\n"
	"\n"
	"  --capacity SIZE  most bytes the file may occupy (64M, 1G, 1.5GiB...; suffixes are\n"
	"                   powers of 1024); default: no limit but the disk\n"
	"  --nosync         do not flush the new file to disk\n"
	"  -h, --help       show this help\n";

int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{"capacity", required_argument, NULL, 'c'},
		{"nosync", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	ms_options o = {0};
	ms_store *s = NULL;
	struct stat st;
	const char *path;
	int c, rc;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (!cli_parse_size(optarg, &o.capacity) || o.capacity == 0)
				return cli_usage_error("create", "--capacity '%s' is not a size", optarg);
			break;
		case 'n': o.flags |= MS_NOSYNC; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("create");
		default: return cli_bad_option("create", c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("create", argc - optind < 1 ? "missing FILE" : "too many arguments");
	path = argv[optind];

	/* MS_CREATE alone would open an existing store; the check-then-create race is accepted
	 * because it only matters when two people create the same file at the same moment. */
	if (lstat(path, &st) == 0)
		return cli_error("create %s: file already exists", path);
	if (errno != ENOENT)
		return cli_error("create %s: %s", path, strerror(errno));

	o.flags |= MS_CREATE;
	rc = ms_open(path, &o, &s);
	if (rc != 0)
		return cli_store_error("create", path, rc);
	rc = ms_close(s);
	if (rc != 0)
		return cli_store_error("create", path, rc);
	return CLI_OK;
}
