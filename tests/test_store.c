/* tests/test_store.c - white-box unit tests of store/ parts: the offset hash map (table.c), meta page
 * validation (format.c), the allocator checkpoint's life cycle (store.c), and the verified-node memo
 * and iteration order (index.c, txn.c), and the in-process audit (space.c). They read the file layout
 * from store/format.h. */
#include "testutil.h" /* first: it sets the feature macros */

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

TestSuite(table, .init = tu_setup, .fini = tu_teardown);
TestSuite(format, .init = tu_setup, .fini = tu_teardown);
TestSuite(checkpoint, .init = tu_setup, .fini = tu_teardown);
TestSuite(memo, .init = tu_setup, .fini = tu_teardown);
TestSuite(iter, .init = tu_setup, .fini = tu_teardown);
TestSuite(collide, .init = tu_setup, .fini = tu_teardown);
TestSuite(hash, .init = tu_setup, .fini = tu_teardown);
TestSuite(upgrade, .init = tu_setup, .fini = tu_teardown);
TestSuite(record, .init = tu_setup, .fini = tu_teardown);
TestSuite(audit, .init = tu_setup, .fini = tu_teardown);

/* The node checksum takes a precomputed secret for speed; the format defines it as XXH3-64 with seed
 * MS_SEED_NODE, and the two must agree at every length a node can have. */
Test(hash, node_checksum_is_seeded_xxh3_at_every_node_size)
{
	static uint64_t buf[1 + 2 * MS_FANOUT + 64];
	for (size_t i = 0; i < sizeof buf / 8; i++)
		buf[i] = (i + 1) * 0x9e3779b97f4a7c15ull;
	const struct disk_node *nd = (const struct disk_node *)buf;
	for (unsigned n = 0; n < sizeof buf / 8 - 1; n++) {
		uint32_t want = (uint32_t)XXH3_64bits_withSeed(&nd->bitmap, 4 + 8ull * n, MS_SEED_NODE);
		cr_assert_eq(node_hash(nd, n), want, "node of %u slots", n);
	}
}

static void read_meta(const char *path, int page, struct disk_meta *m)
{
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, m, sizeof *m, (off_t)page * MS_PAGE), (ssize_t)sizeof *m);
	close(fd);
}

static void newest_meta(const char *path, struct disk_meta *out)
{
	struct disk_meta m[2];
	read_meta(path, 0, &m[0]);
	read_meta(path, 1, &m[1]);
	*out = m[0].seq > m[1].seq ? m[0] : m[1];
}

static void flip_byte(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0);
	unsigned char b;
	cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x40;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

Test(table, put_get_del_and_iterate_match_a_model)
{
	struct table t;
	table_init(&t);
	enum { N = 20000 };
	static uint64_t present[N];
	for (uint64_t i = 0; i < N; i++) {
		cr_assert_eq(table_put(&t, (i + 1) * 16, i), 0);
		present[i] = 1;
	}
	for (uint64_t i = 0; i < N; i += 3) {
		cr_assert(table_del(&t, (i + 1) * 16));
		present[i] = 0;
	}
	cr_assert_not(table_del(&t, 16), "deleting twice");
	size_t n = 0;
	for (uint64_t i = 0; i < N; i++) {
		uint64_t *v = table_get(&t, (i + 1) * 16);
		cr_assert_eq(v != NULL, present[i] != 0, "key %" PRIu64, i);
		if (v) {
			cr_assert_eq(*v, i);
			n++;
		}
	}
	size_t pos = 0, seen = 0;
	uint64_t k, v;
	while (table_next(&t, &pos, &k, &v)) {
		cr_assert_eq(k, (v + 1) * 16);
		seen++;
	}
	cr_assert_eq(seen, n);
	cr_assert_eq(t.len, n);
	table_free(&t);
}

Test(format, meta_check_tells_damage_from_a_newer_version)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE, 0);
	tu_close(s);
	struct disk_meta m;
	newest_meta(p, &m);
	const char *why;
	cr_assert_eq(meta_check(&m, 1u << 20, &why), 0);
	struct disk_meta d = m;
	d.version = MS_FORMAT_VERSION + 1; /* damaged: the hash no longer matches */
	cr_assert_eq(meta_check(&d, 1u << 20, &why), MS_ECORRUPT);
	d.hash = meta_hash(&d); /* a real newer version keeps its hash valid */
	cr_assert_eq(meta_check(&d, 1u << 20, &why), MS_EVERSION);
	d = m;
	d.heap_end = (1u << 20) + MS_PAGE; /* longer than the file */
	d.hash = meta_hash(&d);
	cr_assert_eq(meta_check(&d, 1u << 20, &why), MS_ECORRUPT);
	d = m;
	d.seq = UINT64_MAX; /* a commit over it would wrap to seq 0 and lose to it (a fuzzing find) */
	d.hash = meta_hash(&d);
	cr_assert_eq(meta_check(&d, 1u << 20, &why), MS_ECORRUPT);
	d.seq = MS_SEQ_LIMIT - 1;
	d.hash = meta_hash(&d);
	cr_assert_eq(meta_check(&d, 1u << 20, &why), 0, "%s", why);
}

/* A damaged checkpoint is a cache miss: the allocator is rebuilt from the index, and the first commit
 * must not try to release the checkpoint block the rebuilt allocator never booked. */
Test(checkpoint, damaged_checkpoint_is_rebuilt_and_commits_go_on)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE, 0);
	char k[16];
	for (int i = 0; i < 500; i++) {
		snprintf(k, sizeof k, "k%04d", i);
		tu_puts(s, k, "some value");
	}
	tu_close(s);
	struct disk_meta m;
	newest_meta(p, &m);
	cr_assert(m.ckpt_off && m.ckpt_seq == m.seq, "a clean close leaves a checkpoint");
	flip_byte(p, m.ckpt_off + 20);
	for (int round = 0; round < 3; round++) {
		s = tu_open(p, 0, 0);
		snprintf(k, sizeof k, "r%d", round);
		tu_puts(s, k, "after the damaged checkpoint");
		cr_assert_eq(ms_del(s, "k0001", 5), round == 0 ? 0 : MS_NOTFOUND);
		tu_close(s);
		tu_check_sound(p);
	}
	s = tu_open(p, MS_READONLY, 0);
	cr_assert_eq(tu_stat(s).objects, 500 - 1 + 3);
	tu_close(s);
}

/* An aborted transaction may not overwrite the checkpoint the newest meta still points at. */
Test(checkpoint, aborted_transaction_leaves_the_checkpoint_intact)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE, 0);
	tu_puts(s, "a", "1");
	tu_close(s);
	s = tu_open(p, 0, 0);
	ms_txn *t = tu_begin(s, 0);
	static char big[256u << 10];
	memset(big, 0x5a, sizeof big);
	for (int i = 0; i < 16; i++) {
		char k[8];
		snprintf(k, sizeof k, "b%d", i);
		cr_assert_eq(ms_txn_put(t, k, strlen(k), big, sizeof big), 0);
	}
	ms_txn_abort(t);
	tu_close(s);
	tu_check_sound(p);
	struct disk_meta m;
	newest_meta(p, &m);
	cr_assert(m.ckpt_off && m.ckpt_seq == m.seq);
}

/* The memo of verified nodes must not hide a node rewritten at the same offset: churn reuses freed
 * node space all the time, and every read is still checked against what was committed. */
Test(memo, rewritten_nodes_are_verified_again)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	char k[16], v[32];
	for (int round = 0; round < 50; round++) {
		ms_txn *w = tu_begin(s, 0);
		for (int i = 0; i < 200; i++) {
			snprintf(k, sizeof k, "k%03d", i);
			snprintf(v, sizeof v, "v%d-%d", i, round);
			cr_assert_eq(ms_txn_put(w, k, strlen(k), v, strlen(v)), 0);
		}
		tu_commit(w);
		ms_txn *r = tu_begin(s, MS_READONLY);
		for (int i = 0; i < 200; i++) {
			snprintf(k, sizeof k, "k%03d", i);
			snprintf(v, sizeof v, "v%d-%d", i, round);
			ms_val got;
			cr_assert_eq(ms_txn_get(r, k, strlen(k), &got), 0);
			cr_assert(got.len == strlen(v) && memcmp(got.data, v, got.len) == 0, "round %d %s", round, k);
		}
		ms_txn_abort(r);
	}
	tu_close(s);
	tu_check_sound(p);
}

Test(iter, objects_come_in_file_order_within_a_batch_and_each_once)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	ms_txn *w = tu_begin(s, 0);
	char k[16];
	for (int i = 0; i < 3000; i++) {
		snprintf(k, sizeof k, "key%05d", i);
		cr_assert_eq(ms_txn_put(w, k, strlen(k), k, strlen(k)), 0);
	}
	tu_commit(w);
	ms_txn *r = tu_begin(s, MS_READONLY);
	ms_iter *it;
	cr_assert_eq(ms_iter_open(r, &it), 0);
	ms_val kk, vv;
	const uint8_t *last = NULL;
	int n = 0;
	static char seen[3000];
	while (ms_iter_next(it, &kk, &vv) == 0) {
		cr_assert_gt((const uint8_t *)kk.data, last, "object %d is before the one handed out before it", n);
		last = kk.data;
		int i = atoi((const char *)kk.data + 3);
		cr_assert(i >= 0 && i < 3000 && !seen[i]);
		seen[i] = 1;
		n++;
	}
	cr_assert_eq(n, 3000);
	ms_iter_close(it);
	ms_txn_abort(r);
	tu_close(s);
}

/* Keys whose 64-bit hashes collide end in collision lists at the trie's last level: force that by
 * narrowing the hash to two bits (a test-build hook), then put, overwrite, get, delete, iterate and
 * check as usual. */
Test(collide, keys_with_equal_hashes_share_collision_lists)
{
	ms_test_hash_mask = 0x3;
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	char k[16], v[32];
	enum { N = 300 };
	ms_txn *w = tu_begin(s, 0);
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "c%d", i);
		cr_assert_eq(ms_txn_put(w, k, strlen(k), k, strlen(k)), 0);
	}
	tu_commit(w);
	for (int i = 0; i < N; i += 2) { /* overwrite half, one commit each */
		snprintf(k, sizeof k, "c%d", i);
		snprintf(v, sizeof v, "new%d", i);
		tu_puts(s, k, v);
	}
	for (int i = 0; i < N; i += 3) {
		snprintf(k, sizeof k, "c%d", i);
		cr_assert_eq(ms_del(s, k, strlen(k)), 0);
	}
	tu_close(s);
	tu_check_sound(p);
	s = tu_open(p, 0, 0);
	ms_txn *r = tu_begin(s, MS_READONLY);
	int live = 0;
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "c%d", i);
		ms_val got;
		int rc = ms_txn_get(r, k, strlen(k), &got);
		if (i % 3 == 0) {
			cr_assert_eq(rc, MS_NOTFOUND, "%s was deleted", k);
			continue;
		}
		cr_assert_eq(rc, 0, "%s: %d", k, rc);
		if (i % 2 == 0)
			snprintf(v, sizeof v, "new%d", i);
		else
			snprintf(v, sizeof v, "c%d", i);
		cr_assert(got.len == strlen(v) && memcmp(got.data, v, got.len) == 0, "%s", k);
		live++;
	}
	ms_iter *it;
	cr_assert_eq(ms_iter_open(r, &it), 0);
	int n = 0;
	while (ms_iter_next(it, NULL, NULL) == 0)
		n++;
	cr_assert_eq(n, live);
	ms_iter_close(it);
	ms_txn_abort(r);
	cr_assert_eq(tu_stat(s).objects, (uint64_t)live);
	tu_close(s);
	tu_check_sound(p);
}

/* ---- format version 1 ---------------------------------------------------------------------------- */

/* tests/data/v1-300-keys.ms.gz was written by the version 1 library (tests/data/README.md): keys
 * "v1-0000".."v1-0299", value i of (3 i) % 64 bytes from seed i; every key i % 10 == 3 deleted, every
 * i % 10 == 5 overwritten from seed i + 1000; closed cleanly. */
static bool v1_expect(unsigned i, uint64_t *seed, size_t *len)
{
	*len = (i * 3u) % 64u;
	*seed = i % 10 == 5 ? i + 1000u : i;
	return i % 10 != 3;
}

static void v1_read_all(ms_store *s)
{
	char k[16];
	static unsigned char buf[64];
	for (unsigned i = 0; i < 300; i++) {
		snprintf(k, sizeof k, "v1-%04u", i);
		uint64_t seed;
		size_t want, len = 0;
		bool there = v1_expect(i, &seed, &want);
		int rc = ms_get(s, k, strlen(k), buf, sizeof buf, &len);
		if (!there) {
			cr_assert_eq(rc, MS_NOTFOUND, "%s was deleted: %d", k, rc);
			continue;
		}
		cr_assert_eq(rc, 0, "%s: %d (%s)", k, rc, ms_last_error());
		cr_assert(len == want && tu_check_fill(buf, len, seed), "%s is wrong", k);
	}
}

Test(upgrade, a_version_1_file_is_read_as_it_is_and_written_in_the_current_version)
{
	const char *p = tu_path("v1.ms");
	char cmd[2 * PATH_MAX + 64];
	snprintf(cmd, sizeof cmd, "gzip -dc '%s/v1-300-keys.ms.gz' > '%s'", MSTORE_TEST_DATA, p);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	struct disk_meta m;
	newest_meta(p, &m);
	cr_assert_eq(m.version, 1);

	/* Read-only: every key as written, and the file as it was. */
	tu_image before;
	cr_assert(tu_image_take(p, &before));
	ms_store *s = tu_open(p, MS_READONLY, 0);
	v1_read_all(s);
	tu_close(s);
	const char *diff = tu_image_diff(p, &before);
	cr_assert_null(diff, "a read-only open of a version 1 file changed it: %s", diff);
	tu_image_free(&before);
	tu_check_sound(p);

	/* Writable: new keys go into buckets among the old nodes; old keys stay readable. */
	s = tu_open(p, 0, 0);
	v1_read_all(s);
	ms_txn *w = tu_begin(s, 0);
	char k[16], v[16];
	for (unsigned i = 0; i < 2000; i++) {
		snprintf(k, sizeof k, "new-%u", i);
		cr_assert_eq(ms_txn_put(w, k, strlen(k), k, strlen(k)), 0);
	}
	tu_commit(w);
	v1_read_all(s);
	for (unsigned i = 0; i < 2000; i++) {
		snprintf(k, sizeof k, "new-%u", i);
		size_t len = 0;
		cr_assert_eq(ms_get(s, k, strlen(k), v, sizeof v, &len), 0, "%s", k);
		cr_assert(len == strlen(k) && memcmp(v, k, len) == 0);
	}
	tu_close(s);
	newest_meta(p, &m);
	cr_assert_eq(m.version, MS_FORMAT_VERSION);
	tu_check_sound(p);
	s = tu_open(p, MS_READONLY, 0);
	v1_read_all(s);
	cr_assert_eq(tu_stat(s).objects, 270u + 2000u);
	tu_close(s);
}

/* A full bucket splits by the full hashes of its objects, read from their keys: an object filed under
 * a hash its key does not have is damage the split reports (MS_ECORRUPT), not a broken assumption. */
Test(collide, a_split_that_meets_a_misfiled_object_is_ecorrupt)
{
	ms_test_hash_mask = 0; /* every key files at hash 0: one root bucket */
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE, 0);
	char k[16];
	for (unsigned i = 0; i < MS_BUCKET_MAX; i++) {
		snprintf(k, sizeof k, "m%u", i);
		tu_puts(s, k, "v");
	}
	tu_close(s);
	ms_test_hash_mask = ~0ull;
	s = tu_open(p, 0, 0);
	int rc = ms_put(s, "one more", 8, "v", 1);
	cr_assert_eq(rc, MS_ECORRUPT, "a split over misfiled objects = %d (%s)", rc, ms_strerror(rc));
	tu_close(s);
}

/* Processes of different library versions must not share a store (an older one would commit over a
 * newer meta page it cannot read): the lock file carries the version, and a handle of another
 * version is refused while the first is open. */
Test(upgrade, a_lock_file_of_another_version_is_refused)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE, 0);
	char lp[PATH_MAX];
	snprintf(lp, sizeof lp, "%s-lock", p);
	int fd = open(lp, O_RDWR);
	cr_assert_geq(fd, 0);
	uint32_t v, old = 1;
	off_t at = (off_t)__builtin_offsetof(struct lock_file, version);
	cr_assert_eq(pread(fd, &v, sizeof v, at), (ssize_t)sizeof v);
	cr_assert_eq(pwrite(fd, &old, sizeof old, at), (ssize_t)sizeof old); /* as a version 1 process left it */
	ms_options o = { 0 };
	ms_store *s2 = NULL;
	int rc = ms_open(p, &o, &s2);
	cr_assert_eq(rc, MS_EIO, "a second handle beside a lock file of version 1 = %d (%s)", rc, ms_strerror(rc));
	cr_assert(strstr(ms_last_error(), "another version") != NULL, "%s", ms_last_error());
	cr_assert_eq(pwrite(fd, &v, sizeof v, at), (ssize_t)sizeof v);
	close(fd);
	s2 = tu_open(p, 0, 0);
	tu_close(s2);
	tu_close(s);
}

/* ---- commit records ------------------------------------------------------------------------------ */

/* The meta page of page `page` with its commit record. */
static void read_record(const char *path, int page, struct disk_meta *m, struct disk_rec *rec)
{
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, m, sizeof *m, (off_t)page * MS_PAGE), (ssize_t)sizeof *m);
	cr_assert_leq(m->rec_count, MS_REC_MAX);
	ssize_t want = (ssize_t)(m->rec_count * sizeof *rec);
	cr_assert_eq(pread(fd, rec, (size_t)want, (off_t)page * MS_PAGE + (off_t)sizeof *m), want);
	close(fd);
}

/* A durable commit over this handle's own last commit lists what it wrote in its meta page; a copy of
 * the file taken before the close is what a crash leaves. With one listed block damaged (the commit's
 * one sync cut short), every open takes the commit before, ms_check finds no problem, a read-only open
 * changes nothing, and the first writer erases the unfinished meta page. */
Test(record, a_commit_whose_listed_block_does_not_match_gives_way_to_the_one_before)
{
	const char *p = tu_path("r.ms"), *crash = tu_path("crash.ms");
	ms_store *s = tu_open(p, MS_CREATE, 0);
	tu_puts(s, "one", "first value");  /* the first commit since the open: data synced, then meta */
	tu_puts(s, "two", "second value"); /* over its own durable commit: one sync, with a record */
	cr_assert(tu_copy_file(p, crash));
	tu_close(s);

	struct disk_meta m[2];
	struct disk_rec rec[MS_REC_MAX];
	int newest = -1;
	for (int i = 0; i < 2; i++) {
		read_record(crash, i, &m[i], rec);
		if (newest < 0 || m[i].seq > m[newest].seq)
			newest = i;
	}
	read_record(crash, newest, &m[newest], rec);
	cr_assert_gt(m[newest].rec_count, 0, "the second commit has no commit record");
	cr_assert_eq(m[1 - newest].rec_count, 0, "the first commit after the open has a commit record");

	/* Intact, the crash copy opens at the second commit. */
	const char *whole = tu_path("whole.ms");
	cr_assert(tu_copy_file(crash, whole));
	s = tu_open(whole, MS_READONLY, 0);
	tu_expect_str(s, "two", "second value");
	tu_close(s);

	/* Damage the last byte of each listed block in turn (an object's value, a node's last slot). */
	for (uint64_t i = 0; i < m[newest].rec_count; i++) {
		const char *cut = tu_path("cut.ms");
		cr_assert(tu_copy_file(crash, cut));
		flip_byte(cut, rec[i].off + rec[i].len - 1);
		ms_check_stats cs = tu_check_sound(cut);
		cr_assert_eq(cs.txn_id, m[1 - newest].commit_id, "ms_check checked commit %llu", (unsigned long long)cs.txn_id);

		tu_image before;
		cr_assert(tu_image_take(cut, &before));
		s = tu_open(cut, MS_READONLY, 0);
		tu_expect_str(s, "one", "first value");
		tu_expect_absent(s, "two");
		cr_assert_eq(tu_stat(s).txn_id, m[1 - newest].commit_id);
		tu_close(s);
		const char *diff = tu_image_diff(cut, &before);
		cr_assert_null(diff, "a read-only open of a file with an unfinished commit changed it: %s", diff);
		tu_image_free(&before);

		s = tu_open(cut, 0, 0);
		tu_expect_absent(s, "two");
		ms_txn_abort(tu_begin(s, 0)); /* a writer: it erases the unfinished commit's page first */
		struct disk_meta e;
		read_meta(cut, newest, &e);
		cr_assert_eq(e.magic, 0, "the unfinished commit's meta page is still there");
		tu_puts(s, "three", "third value");
		tu_close(s);
		s = tu_open(cut, MS_READONLY, 0);
		tu_expect_str(s, "one", "first value");
		tu_expect_absent(s, "two");
		tu_expect_str(s, "three", "third value");
		tu_close(s);
		tu_check_sound(cut);
		unlink(cut);
		char lock[PATH_MAX];
		snprintf(lock, sizeof lock, "%s-lock", cut);
		unlink(lock);
	}
}

/* A published commit is whole: a block of it that no longer matches its record (damage on the disk)
 * is not taken for a commit cut short. Another handle's writer builds on it, erases nothing, and the
 * damage is the checksums' to report. */
Test(record, a_published_commit_is_never_taken_back_for_a_damaged_block)
{
	const char *p = tu_path("r.ms");
	ms_store *a = tu_open(p, MS_CREATE, 0);
	tu_puts(a, "one", "first value");
	tu_puts(a, "two", "second value"); /* one sync, with a record */
	struct disk_meta m[2];
	struct disk_rec rec[MS_REC_MAX];
	read_record(p, 0, &m[0], rec);
	read_record(p, 1, &m[1], rec);
	int newest = m[0].seq > m[1].seq ? 0 : 1;
	read_record(p, newest, &m[newest], rec);
	cr_assert_gt(m[newest].rec_count, 0);
	/* Damage the object "two" (the listed block that is an object: its key follows the header). */
	uint64_t obj = 0;
	for (uint64_t i = 0; i < m[newest].rec_count; i++)
		if (rec[i].len == sizeof(struct disk_obj) + 3 + strlen("second value"))
			obj = rec[i].off;
	cr_assert_neq(obj, 0, "no listed block is the object \"two\"");
	flip_byte(p, obj + sizeof(struct disk_obj) + 3 + 2); /* a byte of its value */

	ms_store *b = tu_open(p, 0, 0);
	tu_puts(b, "three", "third value");
	struct disk_meta e;
	read_meta(p, newest, &e);
	cr_assert_eq(e.seq, m[newest].seq, "the published commit's meta page was erased");
	cr_assert_eq(e.commit_id, m[newest].commit_id);
	tu_expect_str(b, "one", "first value");
	tu_expect_str(b, "three", "third value");
	char buf[32];
	size_t len;
	cr_assert_eq(ms_get(b, "two", 3, buf, sizeof buf, &len), MS_ECORRUPT, "the damaged object reads");
	cr_assert_eq(tu_stat(b).txn_id, m[newest].commit_id + 1);
	tu_close(b);
	tu_close(a);
}

/* ---- the in-process audit (space_audit, debug builds) ---- */

/* A workload through every path the audit follows, in one mode: commits that pin space for a reader,
 * an abort, a close with its checkpoint, an open that loads it and a commit that frees it, and a
 * writer's rebuild (the allocator distrusted). The audit finds nothing wrong (it would abort). */
static void audited_workload(unsigned flags)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | flags, 0);
	char k[16];
	for (int i = 0; i < 300; i++) {
		snprintf(k, sizeof k, "k%04d", i);
		tu_puts(s, k, "a value of some length");
	}
	ms_txn *r = tu_begin(s, MS_READONLY);
	for (int i = 0; i < 300; i += 3) {
		snprintf(k, sizeof k, "k%04d", i);
		cr_assert_eq(ms_del(s, k, strlen(k)), 0);
	}
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, "x", 1, "never", 5), 0);
	ms_txn_abort(w);
	ms_txn_abort(r);
	tu_puts(s, "after", "the reader");
	tu_close(s);
	s = tu_open(p, flags, 0); /* loads the checkpoint: booked until the next commit */
	tu_puts(s, "frees", "the checkpoint");
	s->alloc_distrust = true; /* the next writer rebuilds from the index */
	tu_puts(s, "rebuilt", "1");
	cr_assert(!s->alloc_distrust);
	tu_close(s);
	tu_check_sound(p);
}

Test(audit, finds_nothing_wrong_through_commits_aborts_checkpoints_and_rebuilds)
{
	audited_workload(0);
}

Test(audit, finds_nothing_wrong_through_commits_aborts_checkpoints_and_rebuilds_in_nosync_mode)
{
	audited_workload(MS_NOSYNC);
}

/* A block the allocator hands out that no commit, pending free or quarantine accounts for (a leak):
 * the audit after the next commit stops the process. */
Test(audit, a_block_nobody_accounts_for_stops_at_the_next_commit, .signal = SIGABRT)
{
	ms_store *s = tu_create(tu_path("s.ms"));
	tu_puts(s, "a", "1");
	uint64_t off;
	cr_assert_eq(alloc_alloc(s->alloc, 64, &off), 0);
	tu_puts(s, "b", "2");
	cr_assert_fail("the audit did not notice a leaked block");
}
