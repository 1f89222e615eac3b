/* tests/fuzz/make_corpus.c - writes the fuzzer's seed corpus: small valid stores of different shapes.
 *
 *   make_corpus DIR
 *
 * The corpus is rebuilt, not kept: every store gets the same hash seed and creation time, so the
 * same build writes the same bytes every time. Images named *-crash.ms are copies of a store taken
 * while it is open (what a kill -9 leaves: no allocator checkpoint), compacted: the blocks of their
 * trees (with the size-class runs they sit in) packed to the start of the heap and the free space
 * cut, so the fuzzer mutates bytes that matter. *-closed.ms ones come after a clean
 * close and keep their allocator checkpoint, which describes the heap as it is.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "alloc_internal.h" /* the size classes: runs keep their alignment */

#define SEED 0x6d73746f72652d66ull /* the hash seed of every corpus store */
#define CREATED 1700000000ull
#define CAPACITY (512ull << 10)    /* keeps the file from growing by 1 MiB steps */

static const char *dir;
static char scratch[4096];

static void die(const char *what)
{
	fprintf(stderr, "make_corpus: %s: %s\n", what, ms_last_error());
	exit(1);
}

static void *read_file(const char *p, size_t *len)
{
	FILE *f = fopen(p, "rb");
	if (!f)
		die(p);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *buf = malloc((size_t)n);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		die(p);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void write_file(const char *name, const void *buf, size_t len)
{
	char p[4200];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
		die(p);
	printf("%-22s %7zu bytes\n", name, len);
}

/* A new store as create_file makes it, but with the fixed seed and a heap of heap_bytes. */
static void create(size_t heap_bytes)
{
	char lock[4200];
	snprintf(lock, sizeof lock, "%s-lock", scratch);
	unlink(scratch);
	unlink(lock);
	size_t len = MS_HEAP_START + heap_bytes;
	uint8_t *img = calloc(1, len);
	for (unsigned i = 0; i < 2; i++) {
		struct snap empty = { .seq = i, .heap_end = len };
		struct disk_meta m;
		meta_build(&m, &empty, SEED, CREATED, NULL, NULL, 0);
		memcpy(img + i * MS_PAGE, &m, sizeof m);
	}
	FILE *f = fopen(scratch, "wb");
	if (!f || fwrite(img, 1, len, f) != len || fclose(f))
		die(scratch);
	free(img);
}

static ms_store *open_store(unsigned flags)
{
	ms_options o = { .capacity = CAPACITY, .flags = flags };
	ms_store *s;
	if (ms_open(scratch, &o, &s))
		die("ms_open");
	return s;
}

static void put(ms_store *s, const char *key, size_t vlen, unsigned salt)
{
	uint8_t *v = malloc(vlen ? vlen : 1);
	for (size_t i = 0; i < vlen; i++)
		v[i] = (uint8_t)(i * 31 + salt);
	if (ms_put(s, key, strlen(key), v, vlen))
		die("ms_put");
	free(v);
}

static void del(ms_store *s, const char *key)
{
	if (ms_del(s, key, strlen(key)))
		die("ms_del");
}

struct moved {
	struct table to;    /* old offset -> new offset */
	struct table nodes; /* old offsets of index nodes (1) and buckets (2) */
	struct blocks b;
};

static int note_block(void *ctx, uint64_t off, uint64_t size, int is_node, const struct disk_obj *o)
{
	struct moved *mv = ctx;
	(void)o;
	if (table_get(&mv->to, off))
		return 0; /* shared by both trees */
	if (table_put(&mv->to, off, 0) || (is_node && table_put(&mv->nodes, off, (uint64_t)is_node)) ||
	    blocks_push(&mv->b, off, size))
		return MS_ENOMEM;
	return 0;
}

static int cmp_block(const void *a, const void *b)
{
	const struct alloc_block *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static uint64_t moved_ent(const struct moved *mv, uint64_t e)
{
	return (e & ~ENT_OFF_MASK) | *table_get(&mv->to, ent_off(e));
}

/* Pack every block the valid meta pages reach towards the start of the heap, in file order, and cut
 * the heap there. The trees stay the same trees (entries rewritten, nodes rehashed); free space
 * and the allocator checkpoint go (a crash image has none: open rebuilds the allocator). */
static size_t compact(uint8_t **imgp, size_t len)
{
	uint8_t *img = *imgp;
	struct moved mv;
	memset(&mv, 0, sizeof mv);
	table_init(&mv.to);
	table_init(&mv.nodes);
	bool valid[2];
	for (unsigned i = 0; i < 2; i++) {
		struct disk_meta *m = (struct disk_meta *)(img + i * MS_PAGE);
		const char *why;
		struct ictx c = { .base = img, .heap_end = m->heap_end };
		valid[i] = meta_check(m, len, &why) == 0 &&
		           index_walk(&c, m->root, m->hash_seed, true, note_block, &mv, NULL, NULL) == 0;
	}
	qsort(mv.b.v, mv.b.len, sizeof *mv.b.v, cmp_block);
	/* Move in units the allocator can rebuild: a large block alone, a small block with the run
	 * (the window of its class's run size) around it, which keeps its alignment. */
	uint64_t end = MS_HEAP_START, unit = 0, unit_to = 0, unit_len = 0;
	for (size_t k = 0; k < mv.b.len; k++) {
		uint64_t off = mv.b.v[k].off, size = mv.b.v[k].size;
		uint64_t start = off, ulen = alloc_round(size);
		if (size <= ALLOC_SMALL_MAX) {
			ulen = 1ull << alx_classes[alx_class_of(size)].shift;
			start = MS_HEAP_START + ((off - MS_HEAP_START) & ~(ulen - 1));
		}
		if (!unit || start >= unit + unit_len) {
			unit = start;
			unit_len = ulen;
			unit_to = size <= ALLOC_SMALL_MAX ? MS_HEAP_START + round_up(end - MS_HEAP_START, ulen) : end;
			end = unit_to + ulen;
		}
		table_put(&mv.to, off, unit_to + (off - unit));
	}
	end += 4096; /* a little free space, so a put fits without growing */
	uint8_t *out = calloc(1, (size_t)end);
	memcpy(out, img, MS_HEAP_START);
	for (size_t k = 0; k < mv.b.len; k++) {
		uint64_t from = mv.b.v[k].off, to = *table_get(&mv.to, from);
		memcpy(out + to, img + from, (size_t)mv.b.v[k].size);
		const uint64_t *kind = table_get(&mv.nodes, from);
		if (!kind)
			continue;
		struct disk_node *nd = (struct disk_node *)(out + to);
		unsigned n = *kind == 2 ? nd->bitmap : (unsigned)((mv.b.v[k].size - sizeof *nd) / 8);
		for (unsigned j = 0; j < n; j++)
			nd->slot[j] = moved_ent(&mv, nd->slot[j]);
		nd->hash = block_hash(nd, n, *kind == 2 ? ENT_NODE | ENT_BUCKET : ENT_NODE);
	}
	for (unsigned i = 0; i < 2; i++) {
		struct disk_meta *m = (struct disk_meta *)(out + i * MS_PAGE);
		if (!valid[i]) {
			memset(m, 0, MS_PAGE); /* a meta whose tree is not whole here: a torn page */
			continue;
		}
		if (m->root)
			m->root = moved_ent(&mv, m->root);
		m->heap_end = end;
		m->ckpt_off = m->ckpt_len = m->ckpt_seq = m->ckpt_hash = 0;
		if (m->rec_count) { /* the record again, over the moved blocks */
			struct disk_rec *rec = (struct disk_rec *)(out + i * MS_PAGE + sizeof *m);
			uint64_t n = 0;
			for (uint64_t k = 0; k < m->rec_count && k < MS_REC_MAX; k++) {
				const uint64_t *to = table_get(&mv.to, rec[k].off);
				if (!to)
					continue; /* not reachable from either tree: dropped */
				rec[n].off = *to;
				rec[n].len = rec[k].len;
				rec[n].hash = rec_hash(out + *to, (size_t)rec[k].len);
				n++;
			}
			m->rec_count = n;
			m->rec_hash = rec_hash(rec, n * sizeof *rec);
		}
		m->hash = meta_hash(m);
	}
	table_free(&mv.to);
	table_free(&mv.nodes);
	blocks_free(&mv.b);
	free(img);
	*imgp = out;
	return (size_t)end;
}

/* Save the store file as it lies now, while it is open: a crash image, compacted. */
static void save_crash(const char *name)
{
	size_t len;
	uint8_t *img = read_file(scratch, &len);
	len = compact(&img, len);
	write_file(name, img, len);
	free(img);
}

static void save_closed(const char *name)
{
	size_t len;
	uint8_t *img = read_file(scratch, &len);
	write_file(name, img, len);
	free(img);
}

static void close_store(ms_store *s)
{
	if (ms_close(s))
		die("ms_close");
}

struct keyed {
	uint64_t rev; /* the hash's bits reversed: neighbours after sorting share the most low bits */
	uint32_t i;
};

static int cmp_keyed(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;
	return x->rev < y->rev ? -1 : x->rev > y->rev;
}

static uint64_t reverse64(uint64_t v)
{
	uint64_t r = 0;
	for (int i = 0; i < 64; i++, v >>= 1)
		r = r << 1 | (v & 1);
	return r;
}

/* Keys whose hashes share many low bits put a long chain of one-slot nodes into the trie. A true
 * 64-bit collision (the collision lists at depth 13) cannot be found; the deepest pairs among 2^20
 * keys share about 40 bits (8 levels). */
static void deep_keys(ms_store *s)
{
	enum { N = 1 << 20, PAIRS = 4 };
	struct keyed *v = malloc(N * sizeof *v);
	char key[32];
	for (uint32_t i = 0; i < N; i++) {
		snprintf(key, sizeof key, "deep-%u", i);
		v[i].rev = reverse64(key_hash(SEED, key, strlen(key)));
		v[i].i = i;
	}
	qsort(v, N, sizeof *v, cmp_keyed);
	uint32_t best[PAIRS] = { 0 };
	int depth[PAIRS] = { 0 };
	for (uint32_t k = 1; k < N; k++) {
		int common = __builtin_clzll((v[k].rev ^ v[k - 1].rev) | 1);
		for (int p = 0; p < PAIRS; p++) {
			if (common > depth[p]) {
				memmove(&depth[p + 1], &depth[p], (PAIRS - 1 - (size_t)p) * sizeof depth[0]);
				memmove(&best[p + 1], &best[p], (PAIRS - 1 - (size_t)p) * sizeof best[0]);
				depth[p] = common;
				best[p] = k;
				break;
			}
		}
	}
	for (int p = 0; p < PAIRS; p++) {
		for (int j = 0; j < 2; j++) {
			snprintf(key, sizeof key, "deep-%u", v[best[p] - (uint32_t)j].i);
			put(s, key, 24, (unsigned)p);
		}
	}
	printf("deep keys: pairs sharing %d, %d, %d, %d low hash bits\n", depth[0], depth[1], depth[2], depth[3]);
	free(v);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make_corpus DIR\n");
		return 2;
	}
	dir = argv[1];
	mkdir(dir, 0755);
	snprintf(scratch, sizeof scratch, "%s/.scratch.ms", dir);
	char key[64];
	ms_store *s;

	create(4096);
	save_closed("empty-new.ms");
	s = open_store(0);
	close_store(s);
	save_closed("empty-closed.ms");

	create(56 << 10);
	s = open_store(0);
	put(s, "a", 1, 1);
	put(s, "greeting", 5, 2);
	put(s, "empty-value", 0, 3);
	save_crash("small-crash.ms");
	put(s, "greeting", 9, 4); /* an overwrite: the two meta pages hold different trees */
	close_store(s);
	save_closed("small-closed.ms");

	create(56 << 10);
	s = open_store(0);
	static const size_t sizes[] = { 0, 1, 15, 16, 17, 31, 48, 100, 255, 256, 495, 496, 497, 512, 513, 1000, 4095, 8200 };
	ms_txn *t;
	if (ms_txn_begin(s, 0, &t))
		die("ms_txn_begin");
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		snprintf(key, sizeof key, "size-%zu", sizes[i]);
		void *dst;
		if (ms_txn_reserve(t, key, strlen(key), sizes[i], &dst))
			die("ms_txn_reserve");
		memset(dst, (int)i, sizes[i]);
	}
	if (ms_txn_commit(t))
		die("ms_txn_commit");
	save_crash("sizes-crash.ms");
	close_store(s);

	create(56 << 10);
	s = open_store(0);
	put(s, "large", 40000, 5);
	put(s, "small", 3, 6);
	save_crash("large-crash.ms");
	close_store(s);

	create(56 << 10);
	s = open_store(0);
	deep_keys(s);
	save_crash("deep-crash.ms");
	close_store(s);

	create(56 << 10);
	s = open_store(0);
	for (int i = 0; i < 30; i++) {
		snprintf(key, sizeof key, "obj-%d", i);
		put(s, key, (size_t)(i * 7 % 40), (unsigned)i);
	}
	for (int i = 0; i < 30; i += 3) {
		snprintf(key, sizeof key, "obj-%d", i);
		del(s, key);
	}
	save_crash("deleted-crash.ms");
	close_store(s);
	save_closed("deleted-closed.ms");

	create(56 << 10);
	s = open_store(0);
	if (ms_txn_begin(s, 0, &t))
		die("ms_txn_begin");
	for (int i = 0; i < 300; i++) {
		snprintf(key, sizeof key, "k%d", i);
		if (ms_txn_put(t, key, strlen(key), key, (size_t)i % 20))
			die("ms_txn_put");
	}
	if (ms_txn_commit(t))
		die("ms_txn_commit");
	save_crash("many-crash.ms");
	close_store(s);

	create(56 << 10);
	s = open_store(MS_NOSYNC);
	for (int i = 0; i < 6; i++) {
		snprintf(key, sizeof key, "nosync-%d", i);
		put(s, key, (size_t)i * 10, (unsigned)i);
	}
	del(s, "nosync-2");
	save_crash("nosync-crash.ms");
	close_store(s);

	char lock[4200];
	snprintf(lock, sizeof lock, "%s-lock", scratch);
	unlink(scratch);
	unlink(lock);
	return 0;
}
