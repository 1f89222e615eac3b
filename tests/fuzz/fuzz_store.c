/* tests/fuzz/fuzz_store.c - libFuzzer harness: arbitrary bytes as a store file.
 *
 * Each input is written to a file in /dev/shm (names unique to the process) and put through what a
 * reader and a writer do: ms_check, a read-only open that iterates every object and looks every key
 * up again, and on a copy a read-write open with a put, a commit, a delete and a commit. Any answer
 * but 0 or a documented code, a crash, a hang or a leak is a finding; so is a disagreement between
 * ms_check and the reads (a store ms_check calls sound must read back whole).
 *
 * Checksums would stop nearly every mutation at the first node, so each input is tried twice: as
 * it is, and once more with the checksums of its meta pages, allocator checkpoint and every node
 * and object reachable from a root recomputed. The checksums guard against damage, not forgery;
 * the second pass is what reaches the code behind them.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path_ro[80], path_rw[80];

static void unlink_store(const char *p)
{
	char lock[96];
	snprintf(lock, sizeof lock, "%s-lock", p);
	unlink(p);
	unlink(lock);
}

static void cleanup(void)
{
	unlink_store(path_ro);
	unlink_store(path_rw);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *dir = getenv("MSTORE_FUZZ_DIR");
	if (!dir || !*dir)
		dir = "/dev/shm";
	snprintf(path_ro, sizeof path_ro, "%s/mstore-fuzz-%ld.ms", dir, (long)getpid());
	snprintf(path_rw, sizeof path_rw, "%s/mstore-fuzz-%ld-rw.ms", dir, (long)getpid());
	atexit(cleanup);
	return 0;
}

/* A finding that no sanitizer sees: stop with a message libFuzzer keeps with the input. */
#define FINDING(...) (fprintf(stderr, "fuzz_store: " __VA_ARGS__), fputc('\n', stderr), abort())

static void write_image(const char *p, const uint8_t *data, size_t size)
{
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		FINDING("cannot create %s", p);
	for (size_t done = 0; done < size;) {
		ssize_t w = write(fd, data + done, size - done);
		if (w <= 0)
			FINDING("cannot write %s", p);
		done += (size_t)w;
	}
	close(fd);
}

/* ---- the checksum fix-up of the second pass ---- */

struct fix {
	uint8_t *img;
	uint64_t heap_end; /* clipped to the image */
	unsigned visits;
};

static void fix_entry(struct fix *f, uint64_t e, unsigned depth)
{
	if (++f->visits > 20000 || depth > MS_MAX_DEPTH)
		return;
	uint64_t off = ent_off(e);
	if (off < MS_HEAP_START || off + 16 > f->heap_end)
		return;
	if (!ent_is_node(e)) {
		struct disk_obj *o = (struct disk_obj *)(f->img + off);
		if (obj_size(o->klen, obj_vlen(o)) <= f->heap_end - off)
			o->hash = obj_hash(o);
		return;
	}
	struct disk_node *nd = (struct disk_node *)(f->img + off);
	unsigned n = block_slots(nd, e, depth);
	if (n == 0 || block_size(e, n) > f->heap_end - off)
		return;
	nd->hash = block_hash(nd, n, e);
	for (unsigned i = 0; i < n; i++)
		fix_entry(f, nd->slot[i], depth + 1);
}

/* Recompute every checksum reachable from the meta pages of img; true if anything changed. */
static bool fix_checksums(uint8_t *img, size_t size, const uint8_t *orig)
{
	if (size < MS_HEAP_START)
		return false;
	for (unsigned i = 0; i < 2; i++) {
		struct disk_meta m;
		memcpy(&m, img + (size_t)i * MS_PAGE, sizeof m);
		if (m.magic != MS_MAGIC)
			continue;
		struct fix f = { img, m.heap_end < size ? m.heap_end & ~15ull : size & ~15ull, 0 };
		if (m.root)
			fix_entry(&f, m.root, 0);
		if (m.ckpt_off >= MS_HEAP_START && m.ckpt_off < size && m.ckpt_len <= size - m.ckpt_off)
			m.ckpt_hash = blob_hash(img + m.ckpt_off, (size_t)m.ckpt_len);
		if (m.rec_count && m.rec_count <= MS_REC_MAX) { /* the commit record and what it lists */
			struct disk_rec *rec = (struct disk_rec *)(img + (size_t)i * MS_PAGE + sizeof m);
			for (uint64_t k = 0; k < m.rec_count; k++)
				if (rec[k].off < size && rec[k].len <= MS_REC_MAX_BYTES && rec[k].len <= size - rec[k].off)
					rec[k].hash = rec_hash(img + rec[k].off, (size_t)rec[k].len);
			m.rec_hash = rec_hash(rec, m.rec_count * sizeof *rec);
		}
		m.hash = meta_hash(&m);
		memcpy(img + (size_t)i * MS_PAGE, &m, sizeof m);
	}
	return memcmp(img, orig, size) != 0;
}

/* ---- one pass over one image ---- */

static void on_problem(void *ctx, uint64_t off, const char *what)
{
	(void)off;
	if (!what || !*what)
		FINDING("ms_check reported a problem without a description");
	(*(uint64_t *)ctx)++;
}

static bool open_code(int rc)
{
	return rc == 0 || rc == MS_ECORRUPT || rc == MS_EVERSION || rc == MS_ENOMEM;
}

/* Read-only: iterate every object, look each key up again. With sound (ms_check found nothing),
 * every step must succeed and find exactly what the iterator showed. */
static void read_all(bool sound, uint64_t want_objects)
{
	ms_options ro = { .flags = MS_READONLY };
	ms_store *s = NULL;
	int rc = ms_open(path_ro, &ro, &s);
	if (!open_code(rc))
		FINDING("ms_open read-only: unexpected code %d (%s)", rc, ms_last_error());
	if (rc) {
		if (sound)
			FINDING("ms_check found no problem, ms_open read-only says %d (%s)", rc, ms_last_error());
		return;
	}
	ms_txn *t = NULL;
	rc = ms_txn_begin(s, MS_READONLY, &t);
	if (rc && rc != MS_ECORRUPT)
		FINDING("ms_txn_begin read-only: unexpected code %d", rc);
	if (rc == 0) {
		ms_iter *it = NULL;
		uint64_t seen = 0;
		rc = ms_iter_open(t, &it);
		if (rc && rc != MS_ECORRUPT && rc != MS_ENOMEM)
			FINDING("ms_iter_open: unexpected code %d", rc);
		if (rc && sound)
			FINDING("ms_check found no problem, ms_iter_open says %d", rc);
		ms_val k, v, g;
		while (it && (rc = ms_iter_next(it, &k, &v)) == 0) {
			seen++;
			int grc = ms_txn_get(t, k.data, k.len, &g);
			if (grc != 0 && grc != MS_NOTFOUND && grc != MS_ECORRUPT)
				FINDING("ms_txn_get: unexpected code %d", grc);
			if (sound && (grc != 0 || g.data != v.data || g.len != v.len))
				FINDING("sound store: ms_txn_get of an iterated key gives %d, not the iterated value", grc);
		}
		if (it && rc != MS_NOTFOUND && rc != MS_ECORRUPT && rc != MS_ENOMEM)
			FINDING("ms_iter_next: unexpected code %d", rc);
		if (it && sound && (rc != MS_NOTFOUND || seen != want_objects))
			FINDING("sound store of %llu objects: iteration ends with %d after %llu",
			        (unsigned long long)want_objects, rc, (unsigned long long)seen);
		ms_iter_close(it);
		rc = ms_txn_get(t, "fuzz", 4, &g);
		if (rc != 0 && rc != MS_NOTFOUND && rc != MS_ECORRUPT)
			FINDING("ms_txn_get: unexpected code %d", rc);
		ms_txn_abort(t);
	}
	ms_stats st;
	if (ms_stat(s, &st) != 0)
		FINDING("ms_stat on an open store failed");
	if (ms_close(s) != 0)
		FINDING("ms_close read-only failed: %s", ms_last_error());
}

static bool write_code(int rc)
{
	return rc == 0 || rc == MS_ECORRUPT || rc == MS_ENOSPC || rc == MS_ENOMEM;
}

/* Read-write on a copy: a put, a commit, the value read back, a delete, a commit. */
static void write_some(const uint8_t *img, size_t size, bool sound)
{
	static const char key[] = "fuzz-key", val[] = "fuzz-value";
	write_image(path_rw, img, size);
	ms_store *s = NULL;
	int rc = ms_open(path_rw, NULL, &s);
	if (!open_code(rc))
		FINDING("ms_open: unexpected code %d (%s)", rc, ms_last_error());
	if (rc) {
		if (sound)
			FINDING("ms_check found no problem, ms_open says %d (%s)", rc, ms_last_error());
		return;
	}
	bool committed = false;
	ms_txn *t = NULL;
	rc = ms_txn_begin(s, 0, &t);
	if (!write_code(rc))
		FINDING("ms_txn_begin: unexpected code %d (%s)", rc, ms_last_error());
	if (rc == 0) {
		rc = ms_txn_put(t, key, sizeof key - 1, val, sizeof val - 1);
		if (!write_code(rc))
			FINDING("ms_txn_put: unexpected code %d (%s)", rc, ms_last_error());
		if (sound && rc && rc != MS_ENOSPC)
			FINDING("sound store: ms_txn_put says %d (%s)", rc, ms_last_error());
		if (rc == 0) {
			rc = ms_txn_commit(t);
			if (rc && rc != MS_ENOSPC)
				FINDING("ms_txn_commit: unexpected code %d (%s)", rc, ms_last_error());
			committed = rc == 0;
		} else {
			ms_txn_abort(t);
		}
	}
	if (committed) {
		/* What a commit wrote is fresh space: whatever else the file holds, it reads back. */
		char buf[32];
		size_t n = 0;
		rc = ms_get(s, key, sizeof key - 1, buf, sizeof buf, &n);
		if (rc || n != sizeof val - 1 || memcmp(buf, val, n))
			FINDING("a committed put does not read back: %d (%s)", rc, ms_last_error());
		rc = ms_del(s, key, sizeof key - 1);
		if (rc && rc != MS_ENOSPC && !(rc == MS_ECORRUPT && !sound))
			FINDING("ms_del of the key just put: %d (%s)", rc, ms_last_error());
	}
	rc = ms_close(s);
	if (rc)
		FINDING("ms_close: %d (%s)", rc, ms_last_error());
	if (sound && committed) {
		/* A sound store stays sound through commits and a clean close. */
		uint64_t problems = 0;
		ms_check_stats cs;
		rc = ms_check(path_rw, on_problem, &problems, &cs);
		if (rc)
			FINDING("a sound store is damaged after a put, a delete and a close: %d, %llu problems (%s)",
			        rc, (unsigned long long)problems, ms_last_error());
	}
}

static void one_pass(const uint8_t *img, size_t size)
{
	write_image(path_ro, img, size);
	uint64_t problems = 0;
	ms_check_stats cs;
	int rc = ms_check(path_ro, on_problem, &problems, &cs);
	if (rc != 0 && rc != MS_ECORRUPT && rc != MS_EVERSION)
		FINDING("ms_check: unexpected code %d (%s)", rc, ms_last_error());
	if (rc == 0 && (problems || cs.problems))
		FINDING("ms_check is 0 but reported %llu problems", (unsigned long long)problems);
	if (rc == MS_ECORRUPT && cs.problems == 0)
		FINDING("ms_check is MS_ECORRUPT but counts no problem");
	bool sound = rc == 0;
	read_all(sound, cs.objects);
	write_some(img, size, sound);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one_pass(data, size);
	uint8_t *img = malloc(size ? size : 1);
	if (!img)
		return 0;
	memcpy(img, data, size);
	if (fix_checksums(img, size, data))
		one_pass(img, size);
	free(img);
	return 0;
}
