/* cmd_stat.c - `mstore stat FILE`: every ms_stats figure, as aligned lines for a person or as one
 * JSON object of exact integers for a program. Opens read-only so it works on a store in use.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore stat FILE [--json] [--bytes]\n"
	"Show the store's figures: objects, space (with fill, free and waste percentages),\n"
	"the newest transaction, readers and cache counters.\n"
	"\n"
	"  --json      print one JSON object with the exact figures, named as in ms_stats\n"
	"  --bytes     print sizes as exact byte counts instead of KiB/MiB/GiB\n"
	"  -h, --help  show this help\n";

/* One table row: label, value, optional note; the note column starts at a fixed place so
 * figures line up whatever their width. */
static void row(const char *label, const char *value, const char *note)
{
	if (note != NULL && note[0] != '\0')
		printf("%-16s %-12s %s\n", label, value, note);
	else
		printf("%-16s %s\n", label, value);
}

static void row_size(const char *label, uint64_t bytes, bool exact, const char *note)
{
	char b[CLI_SIZE_LEN];

	row(label, cli_size(b, bytes, exact), note);
}

static void row_count(const char *label, uint64_t n)
{
	char b[32];

	snprintf(b, sizeof b, "%llu", (unsigned long long)n);
	row(label, b, NULL);
}

/* "12.3% of <what>", or "" when the whole is 0 and a percentage would mean nothing. */
static const char *pct(char *buf, size_t cap, uint64_t part, uint64_t whole, const char *what)
{
	if (whole == 0)
		buf[0] = '\0';
	else
		snprintf(buf, cap, "%.1f%% of %s", 100.0 * (double)part / (double)whole, what);
	return buf;
}

static void print_human(const char *path, const ms_stats *st, bool exact)
{
	uint64_t heap = st->used_bytes + st->free_bytes;
	/* Free space in no extent is impossible, so it means the handle has no allocator to ask (the
	 * library's read-only opens): say "unknown" rather than print zeros that contradict the rest. */
	bool alloc_known = !(st->free_bytes > 0 && st->free_extents == 0);
	const char *unknown = "unknown to a read-only open";
	char note[96], b[CLI_SIZE_LEN];

	row("store", path, NULL);
	row_count("objects", st->objects);
	row_size("live bytes", st->live_bytes, exact, "keys + values");
	row_size("used bytes", st->used_bytes, exact, pct(note, sizeof note, st->used_bytes, heap,
	                                                  "the heap (fill)"));
	row_size("  objects", st->object_bytes, exact, "with headers and rounding");
	row_size("  index nodes", st->index_bytes, exact, NULL);
	row_size("  pinned", st->pinned_bytes, exact, "freed, still seen by an open snapshot");
	if (alloc_known)
		row_size("  internal waste", st->internal_waste, exact,
		         pct(note, sizeof note, st->internal_waste, st->object_bytes, "object bytes"));
	else
		row("  internal waste", "?", unknown);
	pct(note, sizeof note, st->free_bytes, heap, "the heap");
	if (alloc_known)
		snprintf(note + strlen(note), sizeof note - strlen(note), "%sin %llu extent%s",
		         note[0] ? ", " : "", (unsigned long long)st->free_extents,
		         st->free_extents == 1 ? "" : "s");
	row_size("free bytes", st->free_bytes, exact, note);
	if (alloc_known)
		row_size("largest free", st->largest_free, exact, NULL);
	else
		row("largest free", "?", unknown);
	row_size("overhead", st->overhead_bytes, exact, "meta pages, allocator state, slack");
	row_size("file size", st->file_bytes, exact, NULL);
	if (st->capacity == 0) {
		row("capacity", "unlimited", NULL);
	} else {
		snprintf(note, sizeof note, "the file is at %.1f%% of it",
		         100.0 * (double)st->file_bytes / (double)st->capacity);
		row_size("capacity", st->capacity, exact, note);
	}
	row_count("txn id", st->txn_id);
	row_count("readers", st->readers);
	snprintf(note, sizeof note, "hits %llu, misses %llu, evictions %llu (%s), expired %llu",
	         (unsigned long long)st->hits, (unsigned long long)st->misses,
	         (unsigned long long)st->evictions, cli_size(b, st->evicted_bytes, exact),
	         (unsigned long long)st->expired);
	row("cache", note, NULL);
}

/* Who pins space: the readers of every process, as ms_readers reports them. */
struct pins {
	ms_reader_info r[64];
	unsigned n, more;
};

static int add_pin(void *ctx, const ms_reader_info *r)
{
	struct pins *p = ctx;
	if (p->n < sizeof p->r / sizeof p->r[0])
		p->r[p->n++] = *r;
	else
		p->more++;
	return 0;
}

static void print_pins_human(const struct pins *p, bool exact)
{
	char b[CLI_SIZE_LEN], line[160];
	for (unsigned i = 0; i < p->n; i++) {
		const ms_reader_info *r = &p->r[i];
		snprintf(line, sizeof line, "pid %llu, snapshot of txn %llu, %.1f s old, pins %s%s",
		         (unsigned long long)r->pid, (unsigned long long)r->txn_id, (double)r->age_ns / 1e9,
		         cli_size(b, r->pinned_bytes, exact), r->alive ? "" : " (process gone: mstore readers --clear-stale)");
		row(i == 0 ? "pinned by" : "", line, NULL);
	}
	if (p->more)
		printf("%-16s %u more readers (mstore readers lists them all)\n", "", p->more);
}

static void print_pins_json(const struct pins *p)
{
	printf(",\"pinned_by\":[");
	for (unsigned i = 0; i < p->n; i++)
		printf("%s{\"pid\":%llu,\"txn_id\":%llu,\"age_ns\":%llu,\"pinned_bytes\":%llu,\"alive\":%s}",
		       i ? "," : "", (unsigned long long)p->r[i].pid, (unsigned long long)p->r[i].txn_id,
		       (unsigned long long)p->r[i].age_ns, (unsigned long long)p->r[i].pinned_bytes,
		       p->r[i].alive ? "true" : "false");
	printf("]");
}

static void print_json(const ms_stats *st, const struct pins *pins)
{
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
		{"objects", st->objects},
		{"live_bytes", st->live_bytes},
		{"used_bytes", st->used_bytes},
		{"free_bytes", st->free_bytes},
		{"file_bytes", st->file_bytes},
		{"largest_free", st->largest_free},
		{"capacity", st->capacity},
		{"txn_id", st->txn_id},
		{"readers", st->readers},
		{"hits", st->hits},
		{"misses", st->misses},
		{"evictions", st->evictions},
		{"evicted_bytes", st->evicted_bytes},
		{"expired", st->expired},
		{"object_bytes", st->object_bytes},
		{"index_bytes", st->index_bytes},
		{"pinned_bytes", st->pinned_bytes},
		{"internal_waste", st->internal_waste},
		{"free_extents", st->free_extents},
		{"overhead_bytes", st->overhead_bytes},
	};

	putchar('{');
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
		printf("%s\"%s\":%llu", i ? "," : "", f[i].name, (unsigned long long)f[i].v);
	print_pins_json(pins);
	puts("}");
}

int cmd_stat(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"bytes", no_argument, NULL, 'b'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	ms_options o = {.flags = MS_READONLY};
	ms_store *s = NULL;
	ms_stats st;
	const char *path;
	bool json = false, exact = false;
	int c, rc;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'b': exact = true; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("stat");
		default: return cli_bad_option("stat", c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("stat", argc - optind < 1 ? "missing FILE" : "too many arguments");
	path = argv[optind];

	rc = ms_open(path, &o, &s);
	if (rc != 0)
		return cli_store_error("open", path, rc);
	rc = ms_stat(s, &st);
	struct pins pins = {.n = 0};
	if (rc == 0)
		rc = ms_readers(s, add_pin, &pins);
	ms_close(s);
	if (rc != 0)
		return cli_store_error("stat", path, rc);
	if (json) {
		print_json(&st, &pins);
	} else {
		print_human(path, &st, exact);
		print_pins_human(&pins, exact);
	}
	return cli_finish_stdout("stat");
}
