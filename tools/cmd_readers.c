/* cmd_readers.c - `mstore readers FILE`: the read transactions that processes hold on the store
 * (from the reader table in the lock file, through ms_readers), with the space each one pins, and
 * with --clear-stale the reclaiming of slots whose process is gone (ms_reader_check). Opens the
 * store read-only, so it runs beside the programs it reports on without taking the writer lock.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore readers FILE [--clear-stale] [--json] [--bytes]\n"
	"List the read transactions open on the store in every process: the process id, the\n"
	"snapshot (transaction id) it sees, how long ago it began, and the space it keeps from\n"
	"reuse. A reader whose process is gone is marked stale.\n"
	"\n"
	"  --clear-stale  then free the slots of stale readers and say how many were freed\n"
	"  --json         print one JSON object with the exact figures\n"
	"  --bytes        print sizes as exact byte counts instead of KiB/MiB/GiB\n"
	"  -h, --help     show this help\n";

/* The slots ms_readers reported, copied out so that they can be counted before printing. */
struct list {
	ms_reader_info *v;
	size_t len, cap;
	bool nomem;
};

static int collect(void *ctx, const ms_reader_info *r)
{
	struct list *l = ctx;
	ms_reader_info *grown;

	if (l->len == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		grown = realloc(l->v, cap * sizeof *grown);
		if (grown == NULL) {
			l->nomem = true;
			return 1; /* stop: we cannot keep more */
		}
		l->v = grown;
		l->cap = cap;
	}
	l->v[l->len++] = *r;
	return 0;
}

/* Oldest first: the reader that pins the most is usually the one a person is looking for. */
static int by_age(const void *a, const void *b)
{
	const ms_reader_info *x = a, *y = b;

	return (x->age_ns < y->age_ns) - (x->age_ns > y->age_ns);
}

/* A duration for a person: "850 us", "12 ms", "1.2 s", "3 min", "2.5 h", "4.1 d". */
enum { AGE_LEN = 32 };
static char *fmt_age(char buf[AGE_LEN], uint64_t ns)
{
	double s = (double)ns / 1e9;

	if (ns < 1000000u)
		snprintf(buf, AGE_LEN, "%llu us", (unsigned long long)(ns / 1000u));
	else if (s < 1.0)
		snprintf(buf, AGE_LEN, "%llu ms", (unsigned long long)(ns / 1000000u));
	else if (s < 60.0)
		snprintf(buf, AGE_LEN, "%.1f s", s);
	else if (s < 3600.0)
		snprintf(buf, AGE_LEN, "%.0f min", s / 60.0);
	else if (s < 86400.0)
		snprintf(buf, AGE_LEN, "%.1f h", s / 3600.0);
	else
		snprintf(buf, AGE_LEN, "%.1f d", s / 86400.0);
	return buf;
}

static size_t count_stale(const struct list *l)
{
	size_t n = 0;

	for (size_t i = 0; i < l->len; i++)
		n += l->v[i].alive == 0;
	return n;
}

static void print_human(const char *path, const struct list *l, bool exact)
{
	char age[AGE_LEN], pinned[CLI_SIZE_LEN];
	size_t stale = count_stale(l);

	if (l->len == 0) {
		printf("%s: no readers\n", path);
		return;
	}
	printf("%-10s %-12s %-10s %-12s %s\n", "PID", "SNAPSHOT", "AGE", "PINNED", "STATE");
	for (size_t i = 0; i < l->len; i++) {
		const ms_reader_info *r = &l->v[i];

		printf("%-10llu %-12llu %-10s %-12s %s\n", (unsigned long long)r->pid,
		       (unsigned long long)r->txn_id, fmt_age(age, r->age_ns),
		       cli_size(pinned, r->pinned_bytes, exact),
		       r->alive ? "live" : "stale (process gone)");
	}
	printf("%s: %zu reader%s", path, l->len, l->len == 1 ? "" : "s");
	if (stale > 0)
		printf(", %zu stale (mstore readers --clear-stale frees %s)", stale,
		       stale == 1 ? "its slot" : "their slots");
	putchar('\n');
}

static void print_json(const struct list *l, bool cleared_known, unsigned cleared)
{
	fputs("{\"readers\":[", stdout);
	for (size_t i = 0; i < l->len; i++) {
		const ms_reader_info *r = &l->v[i];

		printf("%s{\"pid\":%llu,\"txn_id\":%llu,\"age_ns\":%llu,\"pinned_bytes\":%llu,"
		       "\"alive\":%s}",
		       i ? "," : "", (unsigned long long)r->pid, (unsigned long long)r->txn_id,
		       (unsigned long long)r->age_ns, (unsigned long long)r->pinned_bytes,
		       r->alive ? "true" : "false");
	}
	printf("],\"count\":%zu,\"stale\":%zu", l->len, count_stale(l));
	if (cleared_known)
		printf(",\"cleared\":%u", cleared);
	puts("}");
}

int cmd_readers(int argc, char **argv)
{
	static const struct option opts[] = {
		{"clear-stale", no_argument, NULL, 'c'},
		{"json", no_argument, NULL, 'j'},
		{"bytes", no_argument, NULL, 'b'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	ms_options o = {.flags = MS_READONLY};
	struct list l = {0};
	ms_store *s = NULL;
	const char *path;
	bool json = false, exact = false, clear = false;
	unsigned cleared = 0;
	int c, rc;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': clear = true; break;
		case 'j': json = true; break;
		case 'b': exact = true; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("readers");
		default: return cli_bad_option("readers", c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("readers",
		                       argc - optind < 1 ? "missing FILE" : "too many arguments");
	path = argv[optind];

	rc = ms_open(path, &o, &s);
	if (rc != 0)
		return cli_store_error("open", path, rc);
	/* List first, then clear: the listing shows which readers were stale, the count says how
	 * many slots ms_reader_check freed (it may differ when a reader ends in between). */
	rc = ms_readers(s, collect, &l);
	if (rc == 0 && l.nomem)
		rc = MS_ENOMEM;
	if (rc != 0) {
		cli_store_error("readers", path, rc);
		goto fail;
	}
	if (clear && (rc = ms_reader_check(s, &cleared)) != 0) {
		cli_store_error("clear stale readers of", path, rc);
		goto fail;
	}
	ms_close(s);
	if (l.len > 1)
		qsort(l.v, l.len, sizeof *l.v, by_age);
	if (json) {
		print_json(&l, clear, cleared);
	} else {
		print_human(path, &l, exact);
		if (clear)
			printf("cleared %u stale reader slot%s\n", cleared, cleared == 1 ? "" : "s");
	}
	free(l.v);
	return cli_finish_stdout("readers");
fail:
	ms_close(s);
	free(l.v);
	return CLI_ERROR;
}
