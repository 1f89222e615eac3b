/* main.c - the mstore program's dispatch table: `mstore COMMAND FILE [ARGS]` runs the command's
 * cmd_<name>() from tools/cmd_<name>.c. Everything a command does lives in its own file.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{"create", cmd_create, "make a new, empty store"},
	{"put", cmd_put, "store a value (from an argument or standard input)"},
	{"get", cmd_get, "write a value to standard output, byte for byte"},
	{"del", cmd_del, "delete a key"},
	{"ls", cmd_ls, "list the keys, one a line"},
	{"stat", cmd_stat, "show the store's figures (--json for a program)"},
	{"check", cmd_check, "verify the whole file; exit 3 when damaged"},
	{"readers", cmd_readers, "list the read transactions of every process (--clear-stale)"},
};

static void usage(FILE *f)
{
	fputs("Usage: mstore COMMAND FILE [ARGS]\n\nCommands:\n", f);
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fputs("\n'mstore COMMAND --help' describes a command.\n"
	      "Exit codes: 0 ok, 1 error (including a key that is not there), 2 usage,\n"
	      "3 damage found by check.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(NULL, "no command given");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return cli_finish_stdout("help");
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	}
	return cli_usage_error(NULL, "unknown command '%s'", argv[1]);
}
