/* demo.c - mstore_demo STORE: a tour of the public API that doubles as the embedding example.
 * It creates a store, writes a few thousand objects of mixed sizes in batched transactions,
 * overwrites and deletes some, reopens the file and verifies every value byte for byte.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mstore.h"

#define N_ITEMS 3000
#define BATCH 1000         /* objects per write transaction: one commit (one sync) per batch */
#define OVERWRITE_EVERY 5  /* every 5th item gets a new value of a new size */
#define DELETE_EVERY 7     /* every 7th item is deleted */

static const char greeting[] = "hello from the mstore demo: this value was written by examples/demo.c\n";

/* What the program believes is in the store: the verification compares against this. Values are
 * not kept; they are regenerated from (item, version), so the model stays small. */
static struct item {
	unsigned version; /* 0: absent */
	size_t size;
} items[N_ITEMS];

/* An example program may stop at the first failure; a library or a server would return rc. */
static void die(const char *what, int rc)
{
	const char *detail = ms_last_error();

	fprintf(stderr, "mstore_demo: %s: %s%s%s%s\n", what, ms_strerror(rc), detail[0] ? " (" : "",
	        detail, detail[0] ? ")" : "");
	exit(1);
}

static uint64_t mix(uint64_t x)
{
	/* splitmix64: a cheap, well-spread function of the item and version. */
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

/* Mostly small objects with a tail of large ones, as real workloads have. */
static size_t pick_size(unsigned i, unsigned version)
{
	uint64_t r = mix((uint64_t)i << 8 | version);
	unsigned bucket = (unsigned)(r % 100);

	r >>= 8;
	if (bucket < 40)
		return r % 33;                      /* tiny: 0 to 32 bytes */
	if (bucket < 75)
		return 33 + r % (1024 - 33);        /* small: up to 1 KiB */
	if (bucket < 95)
		return 1024 + r % (16 * 1024);      /* medium: up to 17 KiB */
	return 16 * 1024 + r % (48 * 1024 + 1); /* large: up to 64 KiB */
}

static void fill_value(unsigned char *dst, size_t n, unsigned i, unsigned version)
{
	uint64_t x = mix((uint64_t)i << 32 | version);

	for (size_t j = 0; j < n; j++) {
		if (j % 8 == 0)
			x = mix(x);
		dst[j] = (unsigned char)(x >> (j % 8 * 8));
	}
}

static size_t make_key(char *buf, size_t cap, unsigned i)
{
	return (size_t)snprintf(buf, cap, "item/%05u", i);
}

static void human(char *buf, size_t cap, uint64_t bytes)
{
	if (bytes < 1024)
		snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
	else if (bytes < 1024 * 1024)
		snprintf(buf, cap, "%.1f KiB", (double)bytes / 1024);
	else
		snprintf(buf, cap, "%.1f MiB", (double)bytes / (1024 * 1024));
}

/* Write items [from, to) as version 1 in one transaction. */
static uint64_t write_batch(ms_store *s, unsigned from, unsigned to, unsigned char *scratch)
{
	uint64_t bytes = 0;
	ms_txn *t;
	char key[32];
	int rc;

	rc = ms_txn_begin(s, 0, &t);
	if (rc != 0)
		die("begin a write transaction", rc);
	for (unsigned i = from; i < to; i++) {
		size_t klen = make_key(key, sizeof key, i);
		size_t size = pick_size(i, 1);

		fill_value(scratch, size, i, 1);
		rc = ms_txn_put(t, key, klen, scratch, size);
		if (rc != 0)
			die("put", rc);
		items[i] = (struct item){.version = 1, .size = size};
		bytes += klen + size;
	}
	rc = ms_txn_commit(t);
	if (rc != 0)
		die("commit", rc);
	return bytes;
}

/* Overwrite every OVERWRITE_EVERY-th item with a new size, writing the value in place through
 * ms_txn_reserve: no intermediate buffer. */
static unsigned overwrite_some(ms_store *s)
{
	unsigned n = 0;
	ms_txn *t;
	char key[32];
	void *dst;
	int rc;

	rc = ms_txn_begin(s, 0, &t);
	if (rc != 0)
		die("begin a write transaction", rc);
	for (unsigned i = 0; i < N_ITEMS; i += OVERWRITE_EVERY) {
		size_t klen = make_key(key, sizeof key, i);
		size_t size = pick_size(i, 2);

		rc = ms_txn_reserve(t, key, klen, size, &dst);
		if (rc != 0)
			die("reserve", rc);
		fill_value(dst, size, i, 2);
		items[i] = (struct item){.version = 2, .size = size};
		n++;
	}
	rc = ms_txn_commit(t);
	if (rc != 0)
		die("commit", rc);
	return n;
}

static unsigned delete_some(ms_store *s)
{
	unsigned n = 0;
	ms_txn *t;
	char key[32];
	int rc;

	rc = ms_txn_begin(s, 0, &t);
	if (rc != 0)
		die("begin a write transaction", rc);
	for (unsigned i = 3; i < N_ITEMS; i += DELETE_EVERY) {
		rc = ms_txn_del(t, key, make_key(key, sizeof key, i));
		if (rc != 0)
			die("delete", rc);
		items[i].version = 0;
		n++;
	}
	rc = ms_txn_commit(t);
	if (rc != 0)
		die("commit", rc);
	return n;
}

/* Read everything back through one snapshot and compare with the model. Returns the number of
 * mismatches; *present receives how many items should be there. */
static unsigned verify(ms_store *s, unsigned char *scratch, unsigned *present)
{
	unsigned bad = 0, seen = 0;
	ms_txn *t;
	ms_iter *it;
	ms_val k, v;
	char key[32];
	int rc;

	*present = 0;
	rc = ms_txn_begin(s, MS_READONLY, &t);
	if (rc != 0)
		die("begin a read snapshot", rc);
	for (unsigned i = 0; i < N_ITEMS; i++) {
		rc = ms_txn_get(t, key, make_key(key, sizeof key, i), &v);
		if (items[i].version == 0) {
			if (rc != MS_NOTFOUND) {
				fprintf(stderr, "mstore_demo: %s was deleted but reads back (%s)\n", key,
				        ms_strerror(rc));
				bad++;
			}
			continue;
		}
		(*present)++;
		if (rc != 0) {
			fprintf(stderr, "mstore_demo: get %s: %s\n", key, ms_strerror(rc));
			bad++;
			continue;
		}
		fill_value(scratch, items[i].size, i, items[i].version);
		if (v.len != items[i].size || memcmp(v.data, scratch, v.len) != 0) {
			fprintf(stderr, "mstore_demo: %s: wrong value (%zu bytes, want %zu)\n", key, v.len,
			        items[i].size);
			bad++;
		}
	}
	rc = ms_txn_get(t, "greeting", 8, &v);
	if (rc != 0 || v.len != sizeof greeting - 1 || memcmp(v.data, greeting, v.len) != 0) {
		fprintf(stderr, "mstore_demo: greeting: wrong or missing\n");
		bad++;
	}

	/* The iterator must show exactly the same population: nothing extra, nothing lost. */
	rc = ms_iter_open(t, &it);
	if (rc != 0)
		die("open an iterator", rc);
	while ((rc = ms_iter_next(it, &k, &v)) == 0)
		seen++;
	if (rc != MS_NOTFOUND)
		die("iterate", rc);
	ms_iter_close(it);
	if (seen != *present + 1) {
		fprintf(stderr, "mstore_demo: iteration saw %u objects, want %u\n", seen, *present + 1);
		bad++;
	}
	ms_txn_abort(t); /* a read snapshot has nothing to commit */
	return bad;
}

int main(int argc, char **argv)
{
	ms_options create = {.flags = MS_CREATE};
	ms_store *s;
	ms_stats st;
	struct stat sb;
	unsigned char *scratch;
	unsigned overwritten, deleted, present, bad;
	uint64_t written = 0;
	char h1[32], h2[32], h3[32];
	int rc;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "Usage: mstore_demo STORE\n"
		                "Creates STORE (which must not exist), fills it and verifies it.\n");
		return 2;
	}
	if (stat(argv[1], &sb) == 0 || errno != ENOENT) {
		fprintf(stderr, "mstore_demo: %s already exists; give a new path\n", argv[1]);
		return 1;
	}
	scratch = malloc(64 * 1024 + 1);
	if (scratch == NULL)
		return 1;

	rc = ms_open(argv[1], &create, &s);
	if (rc != 0)
		die("create the store", rc);
	printf("Created the store %s\n", argv[1]);

	rc = ms_put(s, "greeting", 8, greeting, sizeof greeting - 1);
	if (rc != 0)
		die("put greeting", rc);
	for (unsigned from = 0; from < N_ITEMS; from += BATCH)
		written += write_batch(s, from, from + BATCH < N_ITEMS ? from + BATCH : N_ITEMS, scratch);
	human(h1, sizeof h1, written);
	printf("Wrote %u objects (keys item/00000..item/%05u, %s of keys and values, 0 B to 64 KiB "
	       "each) in %u transactions, plus the key \"greeting\"\n",
	       N_ITEMS, N_ITEMS - 1, h1, (N_ITEMS + BATCH - 1) / BATCH);

	overwritten = overwrite_some(s);
	printf("Overwrote %u of them with values of new sizes in one transaction\n", overwritten);
	deleted = delete_some(s);
	printf("Deleted %u of them in one transaction\n", deleted);

	/* Close and reopen: what follows is read from the file, not from this process's memory. */
	rc = ms_close(s);
	if (rc != 0)
		die("close", rc);
	rc = ms_open(argv[1], &(ms_options){.flags = MS_READONLY}, &s);
	if (rc != 0)
		die("reopen", rc);

	bad = verify(s, scratch, &present);
	rc = ms_stat(s, &st);
	if (rc != 0)
		die("stat", rc);
	if (st.objects != present + 1u) {
		fprintf(stderr, "mstore_demo: ms_stat counts %llu objects, want %u\n",
		        (unsigned long long)st.objects, present + 1);
		bad++;
	}
	ms_close(s);
	free(scratch);

	human(h1, sizeof h1, st.live_bytes);
	human(h2, sizeof h2, st.used_bytes);
	human(h3, sizeof h3, st.file_bytes);
	printf("Reopened it and read every key back: %u present, %u deleted, %u mismatch%s\n",
	       present + 1, N_ITEMS - present, bad, bad == 1 ? "" : "es");
	printf("The store now holds %llu objects: %s of keys and values, %s allocated, file %s\n",
	       (unsigned long long)st.objects, h1, h2, h3);
	if (bad != 0) {
		fprintf(stderr, "mstore_demo: FAILED: %u mismatches\n", bad);
		return 1;
	}
	printf("All values verified byte for byte.\n");
	return 0;
}
