/* cli.h - helpers shared by the mstore commands: exit codes, error lines, option and key parsing,
 * human sizes, JSON strings and key escaping. The commands use only these and the public
 * <mstore.h>; nothing here knows the store's internals.
 */
#ifndef MSTORE_CLI_H
#define MSTORE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mstore.h"

/* Exit codes, as documented in docs/cli.md and fixed by the API contract. */
enum {
	CLI_OK = 0,     /* success */
	CLI_ERROR = 1,  /* any failure, including a key that is not there */
	CLI_USAGE = 2,  /* bad command line */
	CLI_DAMAGE = 3, /* check found damage */
};

/* The commands, one per tools/cmd_<name>.c; main.c dispatches to them. argv[0] is the command's
 * name and argc counts it. */
int cmd_create(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_del(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_readers(int argc, char **argv);

/* "mstore: <message>\n" on stderr; returns CLI_ERROR so callers can `return cli_error(...)`. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line for a failed library call: "mstore: <op> <path>: <reason>", the reason taken from
 * ms_last_error() when it has one, else ms_strerror(rc). Returns CLI_ERROR. */
int cli_store_error(const char *op, const char *path, int rc);

/* A usage error of command cmd (NULL: the top level): the message, then a hint line pointing at
 * --help, both on stderr. Returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset getopt so that each command parses its own argv from the start, with our messages
 * instead of getopt's (GNU permutation stays on: options may follow the positional arguments). */
void cli_getopt_reset(void);

/* Report what getopt_long returned for an unknown option ('?') or a missing argument (':').
 * Returns CLI_USAGE. */
int cli_bad_option(const char *cmd, int c, char **argv);

/* Parse a size such as 4096, 64K, 64M, 1G, 1.5G, 2TiB (suffixes are powers of 1024; "B", "iB"
 * are optional). False when it is not a size or overflows 64 bits. */
bool cli_parse_size(const char *s, uint64_t *out);

/* Format bytes for a person: "512 B", "12.3 MiB"; with exact, the plain integer. Returns buf. */
enum { CLI_SIZE_LEN = 32 };
char *cli_size(char buf[CLI_SIZE_LEN], uint64_t bytes, bool exact);

/* A key argument as bytes: the argument itself, or with hex its hex decoding into buf (which
 * must hold MS_MAXKEY bytes). Checks 1..MS_MAXKEY bytes; on failure prints a usage error and
 * returns CLI_USAGE, else CLI_OK. */
int cli_key_arg(const char *cmd, const char *arg, bool hex, unsigned char *buf, const void **key,
                size_t *klen);

/* Write a key readably: printable ASCII as is, '\' as "\\", every other byte as "\xNN". This is
 * the escaping documented for `mstore ls`; it is reversible. */
void cli_put_key_escaped(FILE *f, const void *key, size_t len);

/* Write bytes as lowercase hex. */
void cli_put_hex(FILE *f, const void *data, size_t len);

/* Write s (len bytes) as a JSON string with its quotes; bytes that are not valid UTF-8 become
 * U+FFFD, so the output is always valid JSON. */
void cli_put_json_string(FILE *f, const char *s, size_t len);

/* Read all of fd until end of file into a new malloc'd buffer (binary safe, any size).
 * Returns 0, or -1 with errno set. *out is NULL-safe to free either way. */
int cli_read_all(int fd, unsigned char **out, size_t *len);

/* Flush stdout and turn a failed write (a full disk, a closed pipe) into one error line.
 * Returns CLI_OK or CLI_ERROR. */
int cli_finish_stdout(const char *cmd);

#endif
