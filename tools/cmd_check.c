/* cmd_check.c - `mstore check FILE`: run ms_check() over the whole file and report each problem
 * with its offset, then a summary. Exit 0 sound, 3 damaged, 1 when the file cannot be read.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"Usage: mstore check FILE [--json] [--bytes]\n"
	"Verify the whole store without opening it for use: meta pages, every index node, every\n"
	"object's checksum and bounds, that no blocks overlap and that the space adds up.\n"
	"Each problem is printed with its file offset, then a summary.\n"
	"Exit 0 when the store is sound, 3 when damage was found, 1 when the file cannot be read.\n"
	"\n"
	"  --json      print one JSON object: {\"ok\":..., \"problems\":[{\"offset\":N,\"problem\":...}],\n"
	"              and the counts}\n"
	"  --bytes     print sizes in the summary as exact byte counts\n"
	"  -h, --help  show this help\n";

struct problem {
	uint64_t offset;
	char *text;
};

struct report {
	bool json;
	bool oom;           /* a problem could not be kept for the JSON output */
	uint64_t seen;      /* problems passed to the callback */
	struct problem *list;
	size_t n, cap;
};

/* Text output streams each problem as it is found, so a long check shows progress; JSON has to
 * hold them until the verdict that comes first in the object is known. */
static void on_problem(void *ctx, uint64_t offset, const char *problem)
{
	struct report *r = ctx;
	struct problem *grown;
	char *copy;

	r->seen++;
	if (!r->json) {
		printf("problem at offset %llu (0x%llx): %s\n", (unsigned long long)offset,
		       (unsigned long long)offset, problem);
		return;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		grown = realloc(r->list, cap * sizeof *grown);
		if (grown == NULL) {
			r->oom = true;
			return;
		}
		r->list = grown;
		r->cap = cap;
	}
	copy = strdup(problem);
	if (copy == NULL) {
		r->oom = true;
		return;
	}
	r->list[r->n].offset = offset;
	r->list[r->n].text = copy;
	r->n++;
}

static void print_json(const struct report *r, bool ok, const char *reason,
                       const ms_check_stats *cs, uint64_t problems)
{
	printf("{\"ok\":%s,\"problems\":[", ok ? "true" : "false");
	for (size_t i = 0; i < r->n; i++) {
		printf("%s{\"offset\":%llu,\"problem\":", i ? "," : "",
		       (unsigned long long)r->list[i].offset);
		cli_put_json_string(stdout, r->list[i].text, strlen(r->list[i].text));
		putchar('}');
	}
	printf("],\"problem_count\":%llu,\"txn_id\":%llu,\"objects\":%llu,\"nodes\":%llu,"
	       "\"live_bytes\":%llu,\"used_bytes\":%llu,\"free_bytes\":%llu",
	       (unsigned long long)problems, (unsigned long long)cs->txn_id,
	       (unsigned long long)cs->objects, (unsigned long long)cs->nodes,
	       (unsigned long long)cs->live_bytes, (unsigned long long)cs->used_bytes,
	       (unsigned long long)cs->free_bytes);
	if (reason != NULL) {
		fputs(",\"error\":", stdout);
		cli_put_json_string(stdout, reason, strlen(reason));
	}
	puts("}");
}

static void print_summary(const char *path, bool ok, const ms_check_stats *cs, uint64_t problems,
                          bool exact)
{
	char used[CLI_SIZE_LEN], live[CLI_SIZE_LEN], freeb[CLI_SIZE_LEN];

	printf("%s: %s", path, ok ? "ok" : "DAMAGED");
	if (!ok)
		printf(", %llu problem%s", (unsigned long long)problems, problems == 1 ? "" : "s");
	printf("; verified %llu object%s and %llu index node%s in %s (txn %llu; live %s, free %s)\n",
	       (unsigned long long)cs->objects, cs->objects == 1 ? "" : "s",
	       (unsigned long long)cs->nodes, cs->nodes == 1 ? "" : "s",
	       cli_size(used, cs->used_bytes, exact), (unsigned long long)cs->txn_id,
	       cli_size(live, cs->live_bytes, exact), cli_size(freeb, cs->free_bytes, exact));
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"bytes", no_argument, NULL, 'b'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct report r = {0};
	ms_check_stats cs = {0};
	const char *path, *reason = NULL;
	uint64_t problems;
	bool exact = false;
	int c, rc, ret;

	cli_getopt_reset();
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': r.json = true; break;
		case 'b': exact = true; break;
		case 'h': fputs(usage, stdout); return cli_finish_stdout("check");
		default: return cli_bad_option("check", c, argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("check", argc - optind < 1 ? "missing FILE" : "too many arguments");
	path = argv[optind];

	rc = ms_check(path, on_problem, &r, &cs);
	if (rc != 0 && rc != MS_ECORRUPT) {
		ret = cli_store_error("check", path, rc);
		goto out;
	}
	problems = cs.problems > r.seen ? cs.problems : r.seen;
	if (rc == MS_ECORRUPT && problems == 0) {
		/* Damage without a located problem (e.g. no meta page is valid): still say why. */
		reason = ms_last_error();
		if (reason == NULL || reason[0] == '\0')
			reason = ms_strerror(rc);
		if (!r.json)
			printf("problem: %s\n", reason);
		problems = 1;
	}
	if (r.json)
		print_json(&r, rc == 0, reason, &cs, problems);
	else
		print_summary(path, rc == 0, &cs, problems, exact);
	ret = cli_finish_stdout("check");
	if (ret == CLI_OK && rc == MS_ECORRUPT)
		ret = CLI_DAMAGE;
	if (r.oom) /* the verdict stands; only the list is short */
		cli_error("check %s: out of memory: not every problem is listed", path);
out:
	for (size_t i = 0; i < r.n; i++)
		free(r.list[i].text);
	free(r.list);
	return ret;
}
