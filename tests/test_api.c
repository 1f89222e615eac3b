/* tests/test_api.c - the public API (store/mstore.h) against the API contract, call by call:
 * open/close, every documented error, transactions and snapshots, iteration, statistics, capacity,
 * error strings, sync, reopen, and the contract's promise that durability goes through the C
 * library's sync calls (checked by interposing them, counting only).
 *
 * Elsewhere: failed syncs and a full disk in tests/test_faults.c, several processes on one store in
 * tests/test_multiproc.c, threads sharing one handle in tests/test_tsan.c.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>  /* with <sys/mount.h> and <fcntl.h>: mstore.h must not collide with them */
#include <sys/mount.h>
#include <sys/syscall.h>
#include <dirent.h>

TestSuite(api, .init = tu_setup, .fini = tu_teardown, .timeout = 120);

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* A fresh store "s.ms" in the test's directory. */
static ms_store *fresh(void)
{
	return tu_create(tu_path("s.ms"));
}

/* ---- open and close ---------------------------------------------------------------------------- */

Test(api, open_missing_file_without_create_fails_and_creates_nothing)
{
	const char *p = tu_path("missing.ms");
	ms_options o = { 0 };
	ms_store *s = NULL;
	int rc = ms_open(p, &o, &s);
	cr_assert_eq(rc, MS_EINVAL, "ms_open of a missing file without MS_CREATE = %d (mstore.h: MS_EINVAL)", rc);
	cr_assert_null(s, "a failed ms_open must not hand out a store");
	cr_assert(access(p, F_OK) != 0, "ms_open without MS_CREATE created %s", p);
	cr_assert_str_neq(ms_strerror(rc), "");
	cr_assert(strstr(ms_last_error(), p) != NULL, "ms_last_error() should name the file: \"%s\"",
		  ms_last_error());

	o.flags = MS_READONLY;
	rc = ms_open(p, &o, &s);
	cr_assert_eq(rc, MS_EINVAL, "ms_open(MS_READONLY) of a missing file = %d (mstore.h: MS_EINVAL)", rc);
	cr_assert(access(p, F_OK) != 0, "ms_open(MS_READONLY) created %s", p);
	DIR *d = opendir(tu_dir);
	cr_assert_not_null(d);
	struct dirent *e;
	while ((e = readdir(d)))
		cr_assert(!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."), "a refused ms_open left %s behind", e->d_name);
	closedir(d);
}

Test(api, create_makes_an_empty_store_with_mode_0600_by_default)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 0);
	cr_assert_eq(st.live_bytes, 0);
	cr_assert_eq(st.capacity, 0);
	cr_assert_eq(st.readers, 0);
	struct stat fs;
	cr_assert_eq(stat(p, &fs), 0);
	cr_assert(S_ISREG(fs.st_mode));
	cr_assert_eq(fs.st_mode & 0777, 0600, "mode %o, want 0600", fs.st_mode & 0777);
	cr_assert_eq(st.file_bytes, (uint64_t)fs.st_size, "file_bytes %" PRIu64 " but st_size %jd",
		     st.file_bytes, (intmax_t)fs.st_size);
	cr_assert_geq(st.file_bytes, st.used_bytes + st.free_bytes);
	tu_expect_absent(s, "anything");
	tu_close(s);
	ms_check_stats cs = tu_check_sound(p);
	cr_assert_eq(cs.objects, 0);
}

Test(api, create_honours_the_mode_option)
{
	const char *p = tu_path("s.ms");
	mode_t old = umask(0);
	ms_options o = { .flags = MS_CREATE, .mode = 0640 };
	ms_store *s = NULL;
	int rc = ms_open(p, &o, &s);
	umask(old);
	cr_assert_eq(rc, 0, "ms_open = %d", rc);
	struct stat fs;
	cr_assert_eq(stat(p, &fs), 0);
	cr_assert_eq(fs.st_mode & 0777, 0640, "mode %o, want 0640", fs.st_mode & 0777);
	tu_close(s);
}

Test(api, create_on_an_existing_store_keeps_its_contents)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "k", "v");
	tu_close(s);
	s = tu_create(p);
	tu_expect_str(s, "k", "v");
	cr_assert_eq(tu_stat(s).objects, 1);
	tu_close(s);
}

Test(api, open_rejects_null_arguments)
{
	ms_options o = { .flags = MS_CREATE };
	ms_store *s = NULL;
	cr_assert_eq(ms_open(NULL, &o, &s), MS_EINVAL);
	cr_assert_eq(ms_open(tu_path("s.ms"), &o, NULL), MS_EINVAL);
	cr_assert_lt(ms_open("", &o, &s), 0, "ms_open(\"\") must fail");
	cr_assert(access(tu_path("s.ms"), F_OK) != 0, "ms_open(.., NULL out) created the file");
	cr_assert_eq(ms_close(NULL), 0);
}

Test(api, open_with_null_options_uses_defaults_or_refuses_cleanly)
{
	/* The header says an all-zero ms_options means the defaults; NULL options are not described,
	 * so either defaults (no MS_CREATE: a missing file fails) or MS_EINVAL are right. */
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "k", "v");
	tu_close(s);
	s = NULL;
	int rc = ms_open(p, NULL, &s);
	cr_assert(rc == 0 || rc == MS_EINVAL, "ms_open(path, NULL, ..) = %d", rc);
	if (rc == 0) {
		tu_expect_str(s, "k", "v");
		tu_close(s);
	}
}

Test(api, open_rejects_unknown_flags)
{
	const char *p = tu_path("s.ms");
	ms_store *s = NULL;
	ms_options o = { .flags = MS_CREATE | 0x80000000u };
	cr_assert_eq(ms_open(p, &o, &s), MS_EINVAL);
	o.flags = MS_CREATE | 0x100u;
	cr_assert_eq(ms_open(p, &o, &s), MS_EINVAL);
	cr_assert_null(s);
	cr_assert(access(p, F_OK) != 0, "a refused ms_open created the file");
}

Test(api, cache_flag_is_refused_with_einval)
{
	const char *p = tu_path("s.ms");
	ms_store *s = NULL;
	/* The contract requires a capacity with MS_CACHE; the header says MS_CACHE is not implemented
	 * yet and ms_open answers MS_EINVAL. Update the second half when the cache lands. */
	ms_options o = { .flags = MS_CREATE | MS_CACHE, .capacity = 0 };
	cr_assert_eq(ms_open(p, &o, &s), MS_EINVAL, "MS_CACHE without a capacity");
	o.capacity = 16u << 20;
	cr_assert_eq(ms_open(p, &o, &s), MS_EINVAL, "MS_CACHE (documented as not implemented)");
	cr_assert(access(p, F_OK) != 0, "a refused ms_open created the file");
}

Test(api, reopen_after_close_keeps_everything)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_rng r = { 42 };
	static unsigned char buf[70000];
	size_t lens[300];
	for (unsigned i = 0; i < 300; i++) {
		char k[32];
		snprintf(k, sizeof k, "key-%u", i);
		lens[i] = (size_t)(i % 10 == 0 ? tu_below(&r, sizeof buf) : tu_below(&r, 600));
		tu_fill(buf, lens[i], i);
		tu_put(s, k, buf, lens[i]);
	}
	for (unsigned i = 0; i < 300; i += 7) {
		char k[32];
		snprintf(k, sizeof k, "key-%u", i);
		cr_assert_eq(ms_del(s, k, strlen(k)), 0);
	}
	ms_stats before = tu_stat(s);
	tu_close(s);
	s = tu_open(p, 0, 0);
	ms_stats after = tu_stat(s);
	cr_assert_eq(after.objects, before.objects);
	cr_assert_eq(after.live_bytes, before.live_bytes);
	/* txn_id is the newest committed transaction: a clean close is not one */
	cr_assert_eq(after.txn_id, before.txn_id, "txn_id %" PRIu64 " after reopen, was %" PRIu64,
		     after.txn_id, before.txn_id);
	for (unsigned i = 0; i < 300; i++) {
		char k[32];
		snprintf(k, sizeof k, "key-%u", i);
		size_t vlen = 0;
		int rc = ms_get(s, k, strlen(k), buf, sizeof buf, &vlen);
		if (i % 7 == 0) {
			cr_assert_eq(rc, MS_NOTFOUND, "%s was deleted, ms_get = %d", k, rc);
			continue;
		}
		cr_assert_eq(rc, 0, "ms_get(%s) after reopen = %d", k, rc);
		cr_assert_eq(vlen, lens[i]);
		cr_assert(tu_check_fill(buf, vlen, i), "%s: wrong value after reopen", k);
	}
	tu_close(s);
	ms_check_stats cs = tu_check_sound(p);
	cr_assert_eq(cs.objects, before.objects);
	cr_assert_eq(cs.live_bytes, before.live_bytes);
}

Test(api, deleting_the_lock_file_loses_nothing)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "a", "1");
	tu_puts(s, "b", "2");
	tu_close(s);
	DIR *d = opendir(tu_dir);
	cr_assert_not_null(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "s.ms"))
			cr_assert_eq(unlink(tu_path(e->d_name)), 0);
	}
	closedir(d);
	s = tu_open(p, 0, 0);
	tu_expect_str(s, "a", "1");
	tu_expect_str(s, "b", "2");
	tu_puts(s, "c", "3");
	tu_close(s);
	s = tu_open(p, MS_READONLY, 0);
	tu_expect_str(s, "c", "3");
	tu_close(s);
}

Test(api, close_aborts_open_transactions)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "kept", "1");
	ms_txn *r = tu_begin(s, MS_READONLY);
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, "lost", 4, "x", 1), 0);
	cr_assert_eq(ms_txn_del(w, "kept", 4), 0);
	(void)r;
	tu_close(s); /* ends r and w: they must not be used again */
	s = tu_open(p, 0, 0);
	tu_expect_str(s, "kept", "1");
	tu_expect_absent(s, "lost");
	cr_assert_eq(tu_stat(s).readers, 0, "the aborted read transaction is still counted");
	tu_close(s);
	tu_check_sound(p);
}

/* ---- read-only stores ---------------------------------------------------------------------------- */

Test(api, readonly_store_reads_and_refuses_every_write)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "k", "value");
	tu_close(s);
	tu_image img;
	cr_assert(tu_image_take(p, &img));

	s = tu_open(p, MS_READONLY, 0);
	tu_expect_str(s, "k", "value");
	cr_assert_eq(ms_put(s, "k", 1, "x", 1), MS_ERDONLY);
	cr_assert_eq(ms_put(s, "new", 3, "x", 1), MS_ERDONLY);
	cr_assert_eq(ms_del(s, "k", 1), MS_ERDONLY);
	ms_txn *t = NULL;
	cr_assert_eq(ms_txn_begin(s, 0, &t), MS_ERDONLY);
	cr_assert_null(t);
	t = tu_begin(s, MS_READONLY);
	ms_val v;
	cr_assert_eq(ms_txn_get(t, "k", 1, &v), 0);
	cr_assert_eq(v.len, 5);
	cr_assert(memcmp(v.data, "value", 5) == 0);
	ms_txn_abort(t);
	tu_expect_str(s, "k", "value");
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 1);
	tu_close(s);
	const char *diff = tu_image_diff(p, &img);
	cr_assert_null(diff, "a read-only open and close modified the store: %s", diff);
	tu_image_free(&img);
}

Test(api, read_transaction_refuses_writes)
{
	ms_store *s = fresh();
	tu_puts(s, "k", "v");
	ms_txn *t = tu_begin(s, MS_READONLY);
	void *dst = NULL;
	cr_assert_eq(ms_txn_put(t, "k", 1, "x", 1), MS_ERDONLY);
	cr_assert_eq(ms_txn_put(t, "n", 1, "x", 1), MS_ERDONLY);
	cr_assert_eq(ms_txn_del(t, "k", 1), MS_ERDONLY);
	cr_assert_eq(ms_txn_reserve(t, "n", 1, 10, &dst), MS_ERDONLY);
	ms_val v;
	cr_assert_eq(ms_txn_get(t, "k", 1, &v), 0, "the read transaction is still usable");
	cr_assert_eq(ms_txn_commit(t), 0, "committing a read transaction just ends it");
	tu_expect_str(s, "k", "v");
	tu_expect_absent(s, "n");
	tu_close(s);
}

/* ---- argument checking -------------------------------------------------------------------------- */

Test(api, null_arguments_are_einval)
{
	ms_store *s = fresh();
	tu_puts(s, "k", "v");
	char buf[8];
	size_t vlen;
	ms_val v;
	ms_txn *t = NULL;
	ms_iter *it = NULL;
	ms_stats st;

	cr_assert_eq(ms_put(NULL, "k", 1, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_get(NULL, "k", 1, buf, sizeof buf, &vlen), MS_EINVAL);
	cr_assert_eq(ms_del(NULL, "k", 1), MS_EINVAL);
	cr_assert_eq(ms_put(s, NULL, 1, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_get(s, NULL, 1, buf, sizeof buf, &vlen), MS_EINVAL);
	cr_assert_eq(ms_get(s, "k", 1, buf, sizeof buf, NULL), MS_EINVAL);
	cr_assert_eq(ms_del(s, NULL, 1), MS_EINVAL);
	cr_assert_eq(ms_put(s, "k", 1, NULL, 5), MS_EINVAL, "NULL value with a non-zero length");
	cr_assert_eq(ms_stat(NULL, &st), MS_EINVAL);
	cr_assert_eq(ms_stat(s, NULL), MS_EINVAL);
	cr_assert_eq(ms_sync(NULL), MS_EINVAL);
	cr_assert_eq(ms_txn_begin(NULL, 0, &t), MS_EINVAL);
	cr_assert_eq(ms_txn_begin(s, 0, NULL), MS_EINVAL);
	cr_assert_eq(ms_txn_begin(s, MS_READONLY, NULL), MS_EINVAL);
	cr_assert_eq(ms_txn_commit(NULL), MS_EINVAL);
	ms_txn_abort(NULL); /* must not crash */
	cr_assert_eq(ms_txn_get(NULL, "k", 1, &v), MS_EINVAL);
	cr_assert_eq(ms_txn_put(NULL, "k", 1, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_txn_del(NULL, "k", 1), MS_EINVAL);
	void *dst;
	cr_assert_eq(ms_txn_reserve(NULL, "k", 1, 1, &dst), MS_EINVAL);
	cr_assert_eq(ms_iter_open(NULL, &it), MS_EINVAL);
	cr_assert_eq(ms_iter_next(NULL, &v, &v), MS_EINVAL);
	ms_iter_close(NULL); /* must not crash */
	cr_assert_eq(ms_check(NULL, NULL, NULL, NULL), MS_EINVAL);

	t = tu_begin(s, 0);
	cr_assert_eq(ms_txn_get(t, NULL, 1, &v), MS_EINVAL);
	cr_assert_eq(ms_txn_get(t, "k", 1, NULL), MS_EINVAL);
	cr_assert_eq(ms_txn_put(t, NULL, 1, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_txn_put(t, "k", 1, NULL, 3), MS_EINVAL);
	cr_assert_eq(ms_txn_del(t, NULL, 1), MS_EINVAL);
	cr_assert_eq(ms_txn_reserve(t, NULL, 1, 1, &dst), MS_EINVAL);
	cr_assert_eq(ms_txn_reserve(t, "k", 1, 1, NULL), MS_EINVAL);
	cr_assert_eq(ms_iter_open(t, NULL), MS_EINVAL);
	/* All of that left t as it was. */
	cr_assert_eq(ms_txn_get(t, "k", 1, &v), 0);
	cr_assert_eq(ms_txn_put(t, "k2", 2, "w", 1), 0);
	tu_commit(t);
	tu_expect_str(s, "k", "v");
	tu_expect_str(s, "k2", "w");
	cr_assert_eq(tu_stat(s).objects, 2);
	tu_close(s);
}

Test(api, txn_begin_rejects_unknown_flags)
{
	ms_store *s = fresh();
	ms_txn *t = NULL;
	cr_assert_eq(ms_txn_begin(s, 0x100u, &t), MS_EINVAL);
	cr_assert_eq(ms_txn_begin(s, MS_READONLY | 0x80000000u, &t), MS_EINVAL);
	cr_assert_null(t);
	/* No write transaction was left open by the refused calls: this would wait forever. */
	t = tu_begin(s, 0);
	ms_txn_abort(t);
	tu_close(s);
}

Test(api, empty_and_oversized_keys_are_einval_and_never_truncated)
{
	ms_store *s = fresh();
	size_t big = (size_t)MS_MAXKEY + 1;
	char *key = malloc(big);
	cr_assert_not_null(key);
	tu_fill(key, big, 7);
	char buf[8];
	size_t vlen = 0;
	ms_val v;
	void *dst;

	cr_assert_eq(ms_put(s, "k", 0, "v", 1), MS_EINVAL, "empty key");
	cr_assert_eq(ms_get(s, "k", 0, buf, sizeof buf, &vlen), MS_EINVAL);
	cr_assert_eq(ms_del(s, "k", 0), MS_EINVAL);
	cr_assert_eq(ms_put(s, key, big, "v", 1), MS_EINVAL, "key of MS_MAXKEY + 1 bytes");
	cr_assert_eq(ms_get(s, key, big, buf, sizeof buf, &vlen), MS_EINVAL);
	cr_assert_eq(ms_del(s, key, big), MS_EINVAL);
	cr_assert_eq(ms_put(s, key, SIZE_MAX, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_get(s, key, SIZE_MAX, buf, sizeof buf, &vlen), MS_EINVAL);

	ms_txn *t = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(t, key, 0, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_txn_put(t, key, big, "v", 1), MS_EINVAL);
	cr_assert_eq(ms_txn_reserve(t, key, 0, 1, &dst), MS_EINVAL);
	cr_assert_eq(ms_txn_reserve(t, key, big, 1, &dst), MS_EINVAL);
	cr_assert_eq(ms_txn_get(t, key, 0, &v), MS_EINVAL);
	cr_assert_eq(ms_txn_get(t, key, big, &v), MS_EINVAL);
	cr_assert_eq(ms_txn_del(t, key, 0), MS_EINVAL);
	cr_assert_eq(ms_txn_del(t, key, big), MS_EINVAL);
	cr_assert_eq(ms_txn_get(t, key, MS_MAXKEY, &v), MS_NOTFOUND, "the key was truncated and stored");
	tu_commit(t);

	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 0, "a refused key was stored");
	cr_assert_eq(st.live_bytes, 0);
	cr_assert_eq(ms_get(s, key, MS_MAXKEY, buf, sizeof buf, &vlen), MS_NOTFOUND,
		     "an oversized key was truncated to MS_MAXKEY bytes and stored");
	free(key);
	tu_close(s);
}

Test(api, key_of_maxkey_bytes_works_everywhere)
{
	const char *p = tu_path("s.ms");
	cr_assert_geq(MS_MAXKEY, 1024u);
	cr_assert_leq(MS_MAXKEY, 65535u);
	ms_store *s = fresh();
	char *key = malloc(MS_MAXKEY);
	cr_assert_not_null(key);
	tu_fill(key, MS_MAXKEY, 99);
	cr_assert_eq(ms_put(s, key, MS_MAXKEY, "big key", 7), 0);
	/* The same bytes minus the last one are another key. */
	cr_assert_eq(ms_put(s, key, MS_MAXKEY - 1, "shorter", 7), 0);
	tu_close(s);
	s = tu_open(p, 0, 0);
	char buf[16];
	size_t vlen = 0;
	cr_assert_eq(ms_get(s, key, MS_MAXKEY, buf, sizeof buf, &vlen), 0);
	cr_assert_eq(vlen, 7);
	cr_assert(memcmp(buf, "big key", 7) == 0);
	cr_assert_eq(ms_get(s, key, MS_MAXKEY - 1, buf, sizeof buf, &vlen), 0);
	cr_assert(memcmp(buf, "shorter", 7) == 0);
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 2);
	cr_assert_eq(st.live_bytes, 2u * MS_MAXKEY - 1 + 14);

	ms_txn *t = tu_begin(s, MS_READONLY);
	ms_iter *it = NULL;
	cr_assert_eq(ms_iter_open(t, &it), 0);
	ms_val k, v;
	int seen = 0, rc;
	while ((rc = ms_iter_next(it, &k, &v)) == 0) {
		seen++;
		cr_assert(k.len == MS_MAXKEY || k.len == MS_MAXKEY - 1);
		cr_assert(memcmp(k.data, key, k.len) == 0);
		cr_assert(memcmp(v.data, k.len == MS_MAXKEY ? "big key" : "shorter", 7) == 0);
	}
	cr_assert_eq(rc, MS_NOTFOUND);
	cr_assert_eq(seen, 2);
	ms_iter_close(it);
	ms_txn_abort(t);

	cr_assert_eq(ms_del(s, key, MS_MAXKEY), 0);
	cr_assert_eq(ms_get(s, key, MS_MAXKEY, buf, sizeof buf, &vlen), MS_NOTFOUND);
	cr_assert_eq(ms_get(s, key, MS_MAXKEY - 1, buf, sizeof buf, &vlen), 0);
	free(key);
	tu_close(s);
	tu_check_sound(p);
}

/* ---- put, get, del ------------------------------------------------------------------------------ */

Test(api, absurd_value_lengths_are_refused_cleanly)
{
	ms_store *s = fresh();
	tu_puts(s, "k", "v");
	ms_txn *t = tu_begin(s, 0);
	static const size_t lens[] = { SIZE_MAX, SIZE_MAX / 2, (size_t)1 << 50 };
	for (unsigned i = 0; i < 3; i++) {
		void *dst = NULL;
		int rc = ms_txn_reserve(t, "big", 3, lens[i], &dst);
		cr_assert(rc == MS_EINVAL || rc == MS_ENOSPC || rc == MS_ENOMEM, "ms_txn_reserve of %zu bytes = %d", lens[i],
			  rc);
		rc = ms_txn_put(t, "big", 3, "x", lens[i]); /* never read: the length is refused first */
		cr_assert(rc == MS_EINVAL || rc == MS_ENOSPC || rc == MS_ENOMEM, "ms_txn_put of %zu bytes = %d", lens[i], rc);
	}
	ms_val v;
	cr_assert_eq(ms_txn_get(t, "big", 3, &v), MS_NOTFOUND);
	cr_assert_eq(ms_txn_put(t, "ok", 2, "1", 1), 0, "the transaction is still usable");
	tu_commit(t);
	tu_expect_str(s, "ok", "1");
	tu_expect_absent(s, "big");
	tu_close(s);
	tu_check_sound(tu_path("s.ms"));
}

Test(api, tiny_capacity_is_refused_without_leaving_a_file)
{
	const char *p = tu_path("s.ms");
	ms_options o = { .flags = MS_CREATE, .capacity = 1 };
	ms_store *s = NULL;
	int rc = ms_open(p, &o, &s);
	if (rc == 0) {
		/* Accepted: then nothing fits, and the file stays within the capacity. */
		cr_assert_eq(ms_put(s, "k", 1, "v", 1), MS_ENOSPC);
		tu_close(s);
		struct stat fs;
		cr_assert_eq(stat(p, &fs), 0);
		cr_assert_leq(fs.st_size, 1);
	} else {
		cr_assert(rc == MS_EINVAL || rc == MS_ENOSPC, "ms_open with a capacity of 1 byte = %d", rc);
		cr_assert(access(p, F_OK) != 0, "a refused ms_open left a file behind");
	}
}

Test(api, reopening_with_a_capacity_below_the_file_size_loses_nothing)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	static unsigned char buf[65536];
	for (unsigned i = 0; i < 128; i++) {
		char k[16];
		snprintf(k, sizeof k, "c%u", i);
		tu_fill(buf, sizeof buf, i);
		tu_put(s, k, buf, sizeof buf);
	}
	tu_close(s);
	ms_options o = { .capacity = 4u << 20 };
	s = NULL;
	int rc = ms_open(p, &o, &s);
	cr_assert(rc == 0 || rc == MS_EINVAL || rc == MS_ENOSPC, "ms_open with a capacity below the file size = %d", rc);
	if (rc == 0) {
		for (unsigned i = 0; i < 128; i++) {
			char k[16];
			snprintf(k, sizeof k, "c%u", i);
			size_t vlen;
			cr_assert_eq(ms_get(s, k, strlen(k), buf, sizeof buf, &vlen), 0);
			cr_assert(tu_check_fill(buf, vlen, i));
		}
		rc = ms_put(s, "more", 4, buf, sizeof buf);
		cr_assert(rc == 0 || rc == MS_ENOSPC, "a put beyond the capacity = %d", rc);
		cr_assert_eq(ms_del(s, "c0", 2), 0, "deletes work in a store over its capacity");
		tu_close(s);
	}
	s = tu_open(p, 0, 0);
	cr_assert_geq(tu_stat(s).objects, 127);
	size_t vlen;
	cr_assert_eq(ms_get(s, "c127", 4, buf, sizeof buf, &vlen), 0);
	cr_assert(tu_check_fill(buf, vlen, 127));
	tu_close(s);
	tu_check_sound(p);
}

Test(api, put_get_del_round_trip)
{
	ms_store *s = fresh();
	tu_puts(s, "alpha", "one");
	tu_puts(s, "beta", "two");
	tu_puts(s, "a", "prefix of alpha");
	tu_expect_str(s, "alpha", "one");
	tu_expect_str(s, "beta", "two");
	tu_expect_str(s, "a", "prefix of alpha");
	tu_expect_absent(s, "alph");
	tu_expect_absent(s, "alphab");

	/* Binary keys: NUL bytes are part of the key. */
	cr_assert_eq(ms_put(s, "x\0y", 3, "nul", 3), 0);
	cr_assert_eq(ms_put(s, "x\0z", 3, "nul2", 4), 0);
	char buf[16];
	size_t vlen;
	cr_assert_eq(ms_get(s, "x\0y", 3, buf, sizeof buf, &vlen), 0);
	cr_assert(vlen == 3 && memcmp(buf, "nul", 3) == 0);
	cr_assert_eq(ms_get(s, "x", 1, buf, sizeof buf, &vlen), MS_NOTFOUND);

	tu_puts(s, "alpha", "uno, overwritten with a longer value");
	tu_expect_str(s, "alpha", "uno, overwritten with a longer value");
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 5);
	cr_assert_eq(st.live_bytes, 5 + 36 + 4 + 3 + 1 + 15 + 3 + 3 + 3 + 4);

	cr_assert_eq(ms_del(s, "alpha", 5), 0);
	tu_expect_absent(s, "alpha");
	tu_expect_str(s, "a", "prefix of alpha");
	cr_assert_eq(ms_del(s, "alpha", 5), MS_NOTFOUND);
	st = tu_stat(s);
	cr_assert_eq(st.objects, 4);
	cr_assert_eq(st.live_bytes, 4 + 3 + 1 + 15 + 3 + 3 + 3 + 4);
	tu_close(s);
}

Test(api, zero_length_values_are_stored_and_differ_from_absent)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	cr_assert_eq(ms_put(s, "empty", 5, "", 0), 0);
	cr_assert_eq(ms_put(s, "empty2", 6, NULL, 0), 0, "NULL value of length 0");
	char buf[4];
	size_t vlen = 123;
	cr_assert_eq(ms_get(s, "empty", 5, buf, sizeof buf, &vlen), 0);
	cr_assert_eq(vlen, 0);
	vlen = 123;
	cr_assert_eq(ms_get(s, "empty", 5, buf, 0, &vlen), 0, "cap 0 is enough for a 0-byte value");
	cr_assert_eq(vlen, 0);
	ms_txn *t = tu_begin(s, 0);
	void *dst = NULL;
	cr_assert_eq(ms_txn_reserve(t, "empty3", 6, 0, &dst), 0);
	tu_commit(t);
	tu_close(s);

	s = tu_open(p, 0, 0);
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 3);
	cr_assert_eq(st.live_bytes, 5 + 6 + 6);
	t = tu_begin(s, MS_READONLY);
	ms_val v = { (void *)1, 99 };
	cr_assert_eq(ms_txn_get(t, "empty", 5, &v), 0);
	cr_assert_eq(v.len, 0);
	cr_assert_eq(ms_txn_get(t, "empty2", 6, &v), 0);
	cr_assert_eq(v.len, 0);
	cr_assert_eq(ms_txn_get(t, "empty3", 6, &v), 0);
	cr_assert_eq(v.len, 0);
	cr_assert_eq(ms_txn_get(t, "empty4", 6, &v), MS_NOTFOUND);
	ms_txn_abort(t);
	cr_assert_eq(ms_del(s, "empty", 5), 0);
	cr_assert_eq(ms_get(s, "empty", 5, buf, sizeof buf, &vlen), MS_NOTFOUND);
	tu_close(s);
	tu_check_sound(p);
}

Test(api, large_value_of_8_mib_round_trips)
{
	const char *p = tu_path("s.ms");
	size_t n = 8u << 20;
	unsigned char *buf = malloc(n + 1);
	cr_assert_not_null(buf);
	tu_fill(buf, n, 8);
	ms_store *s = fresh();
	cr_assert_eq(ms_put(s, "big", 3, buf, n), 0);
	tu_puts(s, "small", "s");
	memset(buf, 0, n);
	size_t vlen = 0;
	cr_assert_eq(ms_get(s, "big", 3, buf, n, &vlen), 0);
	cr_assert_eq(vlen, n);
	cr_assert(tu_check_fill(buf, n, 8), "8 MiB value read back wrong");
	tu_close(s);

	s = tu_open(p, 0, 0);
	ms_txn *t = tu_begin(s, MS_READONLY);
	ms_val v;
	cr_assert_eq(ms_txn_get(t, "big", 3, &v), 0);
	cr_assert_eq(v.len, n);
	cr_assert(tu_check_fill(v.data, n, 8), "8 MiB value wrong (zero-copy) after reopen");
	ms_txn_abort(t);
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.live_bytes, 3 + n + 5 + 1);
	cr_assert_geq(st.file_bytes, n);
	/* Overwrite it with a different large value, then delete it. */
	tu_fill(buf, n, 9);
	cr_assert_eq(ms_put(s, "big", 3, buf, n - 1), 0);
	cr_assert_eq(ms_get(s, "big", 3, buf, n + 1, &vlen), 0);
	cr_assert_eq(vlen, n - 1);
	cr_assert(tu_check_fill(buf, n - 1, 9));
	cr_assert_eq(ms_del(s, "big", 3), 0);
	tu_expect_str(s, "small", "s");
	tu_close(s);
	free(buf);
	tu_check_sound(p);
}

Test(api, get_with_a_small_buffer_is_erange_with_the_length)
{
	ms_store *s = fresh();
	unsigned char val[1000];
	tu_fill(val, sizeof val, 3);
	cr_assert_eq(ms_put(s, "k", 1, val, sizeof val), 0);
	unsigned char buf[1000];
	size_t vlen = 0;
	cr_assert_eq(ms_get(s, "k", 1, buf, 999, &vlen), MS_ERANGE);
	cr_assert_eq(vlen, 1000, "MS_ERANGE must report the needed length, got %zu", vlen);
	vlen = 0;
	cr_assert_eq(ms_get(s, "k", 1, NULL, 0, &vlen), MS_ERANGE, "buf may be NULL to ask the length");
	cr_assert_eq(vlen, 1000);
	vlen = 0;
	cr_assert_eq(ms_get(s, "k", 1, buf, 1000, &vlen), 0);
	cr_assert_eq(vlen, 1000);
	cr_assert(memcmp(buf, val, 1000) == 0);
	/* MS_ERANGE inside an open write transaction leaves the transaction usable. */
	ms_txn *t = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(t, "pending", 7, "p", 1), 0);
	cr_assert_eq(ms_get(s, "k", 1, buf, 10, &vlen), MS_ERANGE);
	cr_assert_eq(vlen, 1000);
	ms_val v;
	cr_assert_eq(ms_txn_get(t, "pending", 7, &v), 0);
	cr_assert_eq(ms_txn_put(t, "pending2", 8, "q", 1), 0);
	tu_commit(t);
	tu_expect_str(s, "pending", "p");
	tu_expect_str(s, "pending2", "q");
	tu_close(s);
}

Test(api, del_of_an_absent_key_is_notfound_and_changes_nothing)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "a", "1");
	tu_puts(s, "b", "22");
	ms_stats before = tu_stat(s);
	cr_assert_eq(ms_del(s, "c", 1), MS_NOTFOUND);
	cr_assert_eq(ms_del(s, "aa", 2), MS_NOTFOUND);
	ms_stats after = tu_stat(s);
	cr_assert_eq(after.objects, before.objects);
	cr_assert_eq(after.live_bytes, before.live_bytes);
	cr_assert_eq(after.txn_id, before.txn_id, "ms_del of an absent key committed a transaction");
	cr_assert_eq(after.used_bytes, before.used_bytes, "ms_del of an absent key changed used_bytes from %" PRIu64
		     " to %" PRIu64, before.used_bytes, after.used_bytes);
	tu_expect_str(s, "a", "1");
	tu_expect_str(s, "b", "22");

	ms_txn *t = tu_begin(s, 0);
	cr_assert_eq(ms_txn_del(t, "c", 1), MS_NOTFOUND);
	cr_assert_eq(ms_txn_put(t, "d", 1, "4", 1), 0);
	cr_assert_eq(ms_txn_del(t, "d", 1), 0);
	cr_assert_eq(ms_txn_del(t, "d", 1), MS_NOTFOUND, "a key deleted in this transaction is absent");
	tu_commit(t);
	after = tu_stat(s);
	cr_assert_eq(after.objects, 2);
	cr_assert_eq(after.live_bytes, before.live_bytes);
	tu_expect_absent(s, "d");
	tu_close(s);
	tu_check_sound(p);
}

Test(api, errors_inside_a_transaction_leave_it_usable)
{
	ms_store *s = fresh();
	tu_puts(s, "old", "o");
	ms_txn *t = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(t, "k1", 2, "v1", 2), 0);
	ms_val v;
	void *dst;
	char big[8];
	cr_assert_eq(ms_txn_del(t, "absent", 6), MS_NOTFOUND);
	cr_assert_eq(ms_txn_get(t, "absent", 6, &v), MS_NOTFOUND);
	cr_assert_eq(ms_txn_put(t, "", 0, "x", 1), MS_EINVAL);
	cr_assert_eq(ms_txn_put(t, big, (size_t)MS_MAXKEY + 1, "x", 1), MS_EINVAL);
	cr_assert_eq(ms_txn_reserve(t, "", 0, 5, &dst), MS_EINVAL);
	cr_assert_eq(ms_txn_del(t, "", 0), MS_EINVAL);
	cr_assert_eq(ms_txn_get(t, "", 0, &v), MS_EINVAL);
	/* t is as it was: its own put is visible, the old state too, and it takes more changes. */
	cr_assert_eq(ms_txn_get(t, "k1", 2, &v), 0);
	cr_assert(v.len == 2 && memcmp(v.data, "v1", 2) == 0);
	cr_assert_eq(ms_txn_get(t, "old", 3, &v), 0);
	cr_assert_eq(ms_txn_put(t, "k2", 2, "v2", 2), 0);
	cr_assert_eq(ms_txn_del(t, "old", 3), 0);
	tu_commit(t);
	tu_expect_str(s, "k1", "v1");
	tu_expect_str(s, "k2", "v2");
	tu_expect_absent(s, "old");
	cr_assert_eq(tu_stat(s).objects, 2);
	tu_close(s);
}

/* ---- transactions and snapshots ---------------------------------------------------------------- */

Test(api, write_txn_sees_its_own_puts_and_dels_and_others_do_not)
{
	ms_store *s = fresh();
	tu_puts(s, "a", "1");
	tu_puts(s, "b", "2");
	ms_txn *r = tu_begin(s, MS_READONLY);
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, "a", 1, "one", 3), 0);
	cr_assert_eq(ms_txn_put(w, "c", 1, "three", 5), 0);
	cr_assert_eq(ms_txn_del(w, "b", 1), 0);
	ms_val v;
	cr_assert_eq(ms_txn_get(w, "a", 1, &v), 0);
	cr_assert(v.len == 3 && memcmp(v.data, "one", 3) == 0);
	cr_assert_eq(ms_txn_get(w, "c", 1, &v), 0);
	cr_assert(v.len == 5 && memcmp(v.data, "three", 5) == 0);
	cr_assert_eq(ms_txn_get(w, "b", 1, &v), MS_NOTFOUND);
	/* Neither an older snapshot nor a one-operation read sees uncommitted changes. */
	cr_assert_eq(ms_txn_get(r, "a", 1, &v), 0);
	cr_assert(v.len == 1 && memcmp(v.data, "1", 1) == 0);
	cr_assert_eq(ms_txn_get(r, "c", 1, &v), MS_NOTFOUND);
	cr_assert_eq(ms_txn_get(r, "b", 1, &v), 0);
	tu_expect_str(s, "a", "1");
	tu_expect_absent(s, "c");
	ms_txn *r2 = tu_begin(s, MS_READONLY);
	cr_assert_eq(ms_txn_get(r2, "c", 1, &v), MS_NOTFOUND);
	cr_assert_eq(tu_stat(s).objects, 2, "stat counts uncommitted objects");
	/* A put over a key put earlier in the same transaction replaces it. */
	cr_assert_eq(ms_txn_put(w, "c", 1, "3", 1), 0);
	cr_assert_eq(ms_txn_get(w, "c", 1, &v), 0);
	cr_assert(v.len == 1 && memcmp(v.data, "3", 1) == 0);
	tu_commit(w);
	cr_assert_eq(ms_txn_get(r2, "c", 1, &v), MS_NOTFOUND, "a snapshot saw a later commit");
	ms_txn_abort(r2);
	ms_txn_abort(r);
	tu_expect_str(s, "a", "one");
	tu_expect_str(s, "c", "3");
	tu_expect_absent(s, "b");
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 2);
	cr_assert_eq(st.live_bytes, 4 + 2);
	tu_close(s);
}

Test(api, abort_discards_everything)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "a", "1");
	ms_stats before = tu_stat(s);
	ms_txn *w = tu_begin(s, 0);
	static unsigned char big[1 << 20];
	cr_assert_eq(ms_txn_put(w, "a", 1, "changed", 7), 0);
	cr_assert_eq(ms_txn_put(w, "big", 3, big, sizeof big), 0);
	void *dst;
	cr_assert_eq(ms_txn_reserve(w, "res", 3, 100, &dst), 0);
	memset(dst, 'r', 100);
	ms_txn_abort(w);
	tu_expect_str(s, "a", "1");
	tu_expect_absent(s, "big");
	tu_expect_absent(s, "res");
	ms_stats after = tu_stat(s);
	cr_assert_eq(after.objects, before.objects);
	cr_assert_eq(after.live_bytes, before.live_bytes);
	cr_assert_eq(after.txn_id, before.txn_id, "abort changed txn_id");

	w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_del(w, "a", 1), 0);
	ms_txn_abort(w);
	tu_expect_str(s, "a", "1");
	tu_close(s);
	s = tu_open(p, 0, 0);
	tu_expect_str(s, "a", "1");
	tu_expect_absent(s, "big");
	cr_assert_eq(tu_stat(s).objects, 1);
	tu_close(s);
	tu_check_sound(p);
}

Test(api, abort_in_a_session_without_commits_leaves_a_sound_file)
{
	/* Open after a clean close, put in a write transaction (the space of the loaded allocator
	 * checkpoint is free again), abort, close: the file must check clean. */
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	tu_puts(s, "k", "v");
	tu_close(s);
	for (int round = 0; round < 3; round++) {
		s = tu_open(p, 0, 0);
		ms_txn *w = tu_begin(s, 0);
		static unsigned char big[4096];
		memset(big, 'x', sizeof big);
		cr_assert_eq(ms_txn_put(w, "n", 1, big, sizeof big), 0);
		void *dst;
		cr_assert_eq(ms_txn_reserve(w, "r", 1, 3000, &dst), 0);
		memset(dst, 'r', 3000);
		ms_txn_abort(w);
		tu_close(s);
		tu_check_sound(p);
	}
	s = tu_open(p, 0, 0);
	tu_expect_str(s, "k", "v");
	tu_expect_absent(s, "n");
	tu_close(s);
}

Test(api, reserve_then_fill_then_commit)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	ms_txn *w = tu_begin(s, 0);
	void *dst = NULL;
	cr_assert_eq(ms_txn_reserve(w, "r1", 2, 5000, &dst), 0);
	cr_assert_not_null(dst);
	tu_fill(dst, 5000, 51);
	cr_assert_eq(ms_txn_reserve(w, "r2", 2, 3, &dst), 0);
	memcpy(dst, "abc", 3);
	ms_val v;
	cr_assert_eq(ms_txn_get(w, "r1", 2, &v), 0);
	cr_assert_eq(v.len, 5000);
	cr_assert(tu_check_fill(v.data, 5000, 51));
	/* Reserve over a key that exists replaces it. */
	cr_assert_eq(ms_txn_put(w, "r3", 2, "old", 3), 0);
	cr_assert_eq(ms_txn_reserve(w, "r3", 2, 4, &dst), 0);
	memcpy(dst, "new!", 4);
	tu_commit(w);
	tu_close(s);
	s = tu_open(p, 0, 0);
	w = tu_begin(s, MS_READONLY);
	cr_assert_eq(ms_txn_get(w, "r1", 2, &v), 0);
	cr_assert_eq(v.len, 5000);
	cr_assert(tu_check_fill(v.data, 5000, 51), "the reserved value does not hold what was written");
	ms_txn_abort(w);
	tu_expect_str(s, "r2", "abc");
	tu_expect_str(s, "r3", "new!");
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 3);
	cr_assert_eq(st.live_bytes, 2 + 5000 + 2 + 3 + 2 + 4);
	tu_close(s);
	tu_check_sound(p);
}

Test(api, snapshot_does_not_see_later_commits)
{
	ms_store *s = fresh();
	for (int i = 0; i < 50; i++) {
		char k[16];
		snprintf(k, sizeof k, "k%d", i);
		tu_puts(s, k, "v0");
	}
	ms_stats st0 = tu_stat(s);
	ms_txn *r = tu_begin(s, MS_READONLY);
	tu_puts(s, "k0", "v1");
	tu_puts(s, "new", "n");
	cr_assert_eq(ms_del(s, "k1", 2), 0);
	ms_val v;
	cr_assert_eq(ms_txn_get(r, "k0", 2, &v), 0);
	cr_assert(v.len == 2 && memcmp(v.data, "v0", 2) == 0, "the snapshot sees a later overwrite");
	cr_assert_eq(ms_txn_get(r, "new", 3, &v), MS_NOTFOUND, "the snapshot sees a later put");
	cr_assert_eq(ms_txn_get(r, "k1", 2, &v), 0, "the snapshot lost a key deleted later");
	/* Its iterator shows the old state, too. */
	ms_iter *it;
	cr_assert_eq(ms_iter_open(r, &it), 0);
	ms_val k;
	int n = 0, rc;
	while ((rc = ms_iter_next(it, &k, &v)) == 0) {
		n++;
		cr_assert(k.len >= 2 && ((const char *)k.data)[0] == 'k', "iterator shows a later key");
		cr_assert(v.len == 2 && memcmp(v.data, "v0", 2) == 0, "iterator shows a later value");
	}
	cr_assert_eq(rc, MS_NOTFOUND);
	cr_assert_eq(n, 50);
	ms_iter_close(it);
	ms_txn_abort(r);
	ms_stats st1 = tu_stat(s);
	cr_assert_eq(st1.objects, 50);
	cr_assert_gt(st1.txn_id, st0.txn_id);
	tu_close(s);
}

Test(api, zero_copy_pointers_survive_overwrite_delete_and_growth)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0); /* many commits: fast mode */
	enum { N = 64, LEN = 3000 };
	unsigned char buf[LEN];
	for (unsigned i = 0; i < N; i++) {
		char k[16];
		snprintf(k, sizeof k, "z%u", i);
		tu_fill(buf, LEN, 1000 + i);
		tu_put(s, k, buf, LEN);
	}
	ms_txn *r = tu_begin(s, MS_READONLY);
	const void *ptr[N];
	for (unsigned i = 0; i < N; i++) {
		char k[16];
		snprintf(k, sizeof k, "z%u", i);
		ms_val v;
		cr_assert_eq(ms_txn_get(r, k, strlen(k), &v), 0);
		cr_assert_eq(v.len, LEN);
		ptr[i] = v.data;
	}
	/* Overwrite every key, then delete every key, then churn: same sizes (reuse bait) and enough
	 * new data to grow the file well past its size (a moving remap would show here). */
	for (unsigned i = 0; i < N; i++) {
		char k[16];
		snprintf(k, sizeof k, "z%u", i);
		memset(buf, 0xee, LEN);
		tu_put(s, k, buf, LEN);
	}
	for (unsigned i = 0; i < N; i++) {
		char k[16];
		snprintf(k, sizeof k, "z%u", i);
		cr_assert_eq(ms_del(s, k, strlen(k)), 0);
	}
	ms_stats grow0 = tu_stat(s);
	static unsigned char junk[1 << 20];
	memset(junk, 0xdd, sizeof junk);
	for (unsigned i = 0; i < 400; i++) {
		char k[16];
		snprintf(k, sizeof k, "c%u", i % 40);
		tu_put(s, k, buf, LEN);
		if (i % 20 == 0) {
			snprintf(k, sizeof k, "j%u", i);
			tu_put(s, k, junk, sizeof junk);
		}
	}
	ms_stats grow1 = tu_stat(s);
	cr_assert_gt(grow1.file_bytes, grow0.file_bytes, "the churn was meant to grow the file");
	for (unsigned i = 0; i < N; i++)
		cr_assert(tu_check_fill(ptr[i], LEN, 1000 + i), "zero-copy value of z%u changed under its snapshot", i);
	/* The same snapshot still answers lookups with its own state. */
	ms_val v;
	cr_assert_eq(ms_txn_get(r, "z5", 2, &v), 0);
	cr_assert(tu_check_fill(v.data, LEN, 1005));
	cr_assert_eq(ms_txn_get(r, "c1", 2, &v), MS_NOTFOUND);
	ms_txn_abort(r);
	tu_expect_absent(s, "z5");
	tu_close(s);
	tu_check_sound(p);
}

Test(api, one_thread_holds_several_snapshots_and_a_write_txn)
{
	ms_store *s = fresh();
	tu_puts(s, "k", "0");
	ms_txn *r0 = tu_begin(s, MS_READONLY);
	tu_puts(s, "k", "1");
	ms_txn *r1 = tu_begin(s, MS_READONLY);
	tu_puts(s, "k", "2");
	ms_txn *r2 = tu_begin(s, MS_READONLY);
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, "k", 1, "3", 1), 0);
	ms_txn *r3 = tu_begin(s, MS_READONLY); /* while the write transaction is open */
	ms_txn *all[] = { r0, r1, r2, r3, w };
	const char *want[] = { "0", "1", "2", "2", "3" };
	for (int i = 0; i < 5; i++) {
		ms_val v;
		cr_assert_eq(ms_txn_get(all[i], "k", 1, &v), 0);
		cr_assert(v.len == 1 && memcmp(v.data, want[i], 1) == 0, "transaction %d sees %.*s, want %s",
			  i, (int)v.len, (const char *)v.data, want[i]);
	}
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.readers, 4, "readers = %" PRIu64 " with 4 read transactions open", st.readers);
	tu_commit(w);
	ms_val v;
	cr_assert_eq(ms_txn_get(r3, "k", 1, &v), 0);
	cr_assert(v.len == 1 && memcmp(v.data, "2", 1) == 0);
	ms_txn_abort(r0);
	ms_txn_abort(r1);
	cr_assert_eq(ms_txn_commit(r2), 0);
	ms_txn_abort(r3);
	cr_assert_eq(tu_stat(s).readers, 0);
	tu_expect_str(s, "k", "3");
	tu_close(s);
}

/* ---- iteration ---------------------------------------------------------------------------------- */

Test(api, iterator_visits_each_object_once_with_its_value)
{
	const char *p = tu_path("s.ms");
	enum { N = 3000 };
	ms_store *s = fresh();
	static unsigned char buf[9000];
	ms_txn *w = tu_begin(s, 0);
	for (unsigned i = 0; i < N; i++) {
		char k[32];
		int kl = snprintf(k, sizeof k, "it-%u", i * 7919u);
		size_t len = (i * 37u) % 700 + (i % 100 == 0 ? 8000 : 0);
		tu_fill(buf, len, i);
		cr_assert_eq(ms_txn_put(w, k, (size_t)kl, buf, len), 0);
	}
	tu_commit(w);
	tu_close(s);
	s = tu_open(p, 0, 0);

	for (int pass = 0; pass < 2; pass++) { /* a read snapshot, then a write transaction */
		ms_txn *t = tu_begin(s, pass == 0 ? MS_READONLY : 0);
		ms_iter *it = NULL;
		cr_assert_eq(ms_iter_open(t, &it), 0);
		static unsigned char seen[N];
		memset(seen, 0, sizeof seen);
		ms_val k, v;
		int rc;
		unsigned count = 0;
		while ((rc = ms_iter_next(it, &k, &v)) == 0) {
			char kb[32];
			cr_assert(k.len > 3 && k.len < sizeof kb);
			memcpy(kb, k.data, k.len);
			kb[k.len] = 0;
			unsigned x;
			cr_assert_eq(sscanf(kb, "it-%u", &x), 1, "unexpected key %s", kb);
			cr_assert_eq(x % 7919u, 0);
			unsigned i = x / 7919u;
			cr_assert_lt(i, N);
			cr_assert_eq(seen[i], 0, "key %s visited twice", kb);
			seen[i] = 1;
			size_t len = (i * 37u) % 700 + (i % 100 == 0 ? 8000 : 0);
			cr_assert_eq(v.len, len, "key %s: length %zu, want %zu", kb, v.len, len);
			cr_assert(tu_check_fill(v.data, len, i), "key %s: wrong value", kb);
			count++;
		}
		cr_assert_eq(rc, MS_NOTFOUND, "ms_iter_next ended with %d", rc);
		cr_assert_eq(count, N, "visited %u of %d objects", count, N);
		cr_assert_eq(ms_iter_next(it, &k, &v), MS_NOTFOUND, "iterating past the end");
		ms_iter_close(it);
		ms_txn_abort(t);
	}
	tu_close(s);
}

Test(api, iterator_of_an_empty_store_ends_at_once)
{
	ms_store *s = fresh();
	ms_txn *t = tu_begin(s, MS_READONLY);
	ms_iter *it;
	cr_assert_eq(ms_iter_open(t, &it), 0);
	ms_val k, v;
	cr_assert_eq(ms_iter_next(it, &k, &v), MS_NOTFOUND);
	ms_iter_close(it);
	ms_txn_abort(t);
	tu_puts(s, "x", "y");
	cr_assert_eq(ms_del(s, "x", 1), 0);
	t = tu_begin(s, MS_READONLY);
	cr_assert_eq(ms_iter_open(t, &it), 0);
	cr_assert_eq(ms_iter_next(it, &k, &v), MS_NOTFOUND, "a deleted object is still iterated");
	ms_iter_close(it);
	ms_txn_abort(t);
	tu_close(s);
}

Test(api, write_txn_iterator_shows_state_at_open_and_detects_changes)
{
	ms_store *s = fresh();
	tu_puts(s, "a", "1");
	tu_puts(s, "b", "2");
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, "c", 1, "3", 1), 0);
	cr_assert_eq(ms_txn_del(w, "a", 1), 0);
	ms_iter *it;
	cr_assert_eq(ms_iter_open(w, &it), 0);
	ms_val k, v;
	int rc, n = 0;
	bool saw_b = false, saw_c = false;
	while ((rc = ms_iter_next(it, &k, &v)) == 0) {
		n++;
		cr_assert_eq(k.len, 1);
		char c = *(const char *)k.data;
		cr_assert(c == 'b' || c == 'c', "iterator of the write txn shows key %c", c);
		saw_b |= c == 'b';
		saw_c |= c == 'c';
	}
	cr_assert_eq(rc, MS_NOTFOUND);
	cr_assert(n == 2 && saw_b && saw_c, "the iterator must show the transaction's own changes");
	ms_iter_close(it);

	cr_assert_eq(ms_iter_open(w, &it), 0);
	cr_assert_eq(ms_iter_next(it, &k, &v), 0);
	cr_assert_eq(ms_txn_put(w, "d", 1, "4", 1), 0);
	cr_assert_eq(ms_iter_next(it, &k, &v), MS_EINVAL, "changing t while its iterator is open");
	ms_iter_close(it);
	tu_commit(w);
	tu_expect_str(s, "d", "4");
	tu_expect_absent(s, "a");
	tu_close(s);
}

/* ---- statistics --------------------------------------------------------------------------------- */

static void check_stat_sanity(ms_store *s, const char *path)
{
	ms_stats st = tu_stat(s);
	struct stat fs;
	cr_assert_eq(stat(path, &fs), 0);
	cr_assert_eq(st.file_bytes, (uint64_t)fs.st_size, "file_bytes %" PRIu64 ", st_size %jd", st.file_bytes,
		     (intmax_t)fs.st_size);
	cr_assert_geq(st.file_bytes, st.used_bytes + st.free_bytes,
		      "file_bytes %" PRIu64 " < used %" PRIu64 " + free %" PRIu64, st.file_bytes, st.used_bytes,
		      st.free_bytes);
	cr_assert_leq(st.largest_free, st.free_bytes);
	cr_assert_geq(st.used_bytes, st.live_bytes, "used_bytes below live_bytes");
}

Test(api, stat_counts_objects_live_bytes_and_txn_ids)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0); /* many commits: fast mode */
	check_stat_sanity(s, p);
	ms_stats st = tu_stat(s);
	uint64_t last = st.txn_id;
	uint64_t objects = 0, live = 0;
	static unsigned char buf[20000];
	tu_rng r = { 5 };
	for (unsigned i = 0; i < 400; i++) {
		char k[32];
		int kl = snprintf(k, sizeof k, "st%u", i % 150);
		ms_val old;
		ms_txn *t = tu_begin(s, MS_READONLY);
		int had = ms_txn_get(t, k, (size_t)kl, &old);
		size_t oldlen = had == 0 ? old.len : 0;
		ms_txn_abort(t);
		if (i % 5 == 4) {
			int rc = ms_del(s, k, (size_t)kl);
			cr_assert_eq(rc, had == 0 ? 0 : MS_NOTFOUND);
			if (had == 0) {
				objects--;
				live -= (uint64_t)kl + oldlen;
			}
		} else {
			size_t len = (size_t)tu_below(&r, sizeof buf);
			tu_put(s, k, buf, len);
			if (had == 0)
				live -= (uint64_t)kl + oldlen;
			else
				objects++;
			live += (uint64_t)kl + len;
		}
		st = tu_stat(s);
		cr_assert_eq(st.objects, objects, "step %u: objects %" PRIu64 ", want %" PRIu64, i, st.objects, objects);
		cr_assert_eq(st.live_bytes, live, "step %u: live_bytes %" PRIu64 ", want %" PRIu64, i, st.live_bytes, live);
		if (i % 5 != 4 || had == 0)
			cr_assert_gt(st.txn_id, last, "step %u: a commit did not raise txn_id", i);
		cr_assert_geq(st.txn_id, last, "txn_id went down");
		last = st.txn_id;
		if (i % 50 == 0)
			check_stat_sanity(s, p);
	}
	check_stat_sanity(s, p);
	tu_close(s);
	s = tu_open(p, 0, 0);
	st = tu_stat(s);
	cr_assert_eq(st.objects, objects);
	cr_assert_eq(st.live_bytes, live);
	cr_assert_eq(st.txn_id, last, "txn_id changed over a close and reopen");
	check_stat_sanity(s, p);
	tu_close(s);
	ms_check_stats cs = tu_check_sound(p);
	cr_assert_eq(cs.objects, objects);
	cr_assert_eq(cs.live_bytes, live);
	cr_assert_eq(cs.txn_id, last, "ms_check checked commit %" PRIu64 ", the last one is %" PRIu64, cs.txn_id, last);
}

Test(api, used_bytes_returns_to_a_new_stores_after_deleting_everything)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0); /* many commits: fast mode */
	ms_stats st0 = tu_stat(s);
	static unsigned char buf[40000];
	tu_rng r = { 11 };
	for (int round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 600; i++) {
			char k[32];
			snprintf(k, sizeof k, "u%u-%d", i, round);
			size_t len = (size_t)(i % 50 == 0 ? tu_below(&r, sizeof buf) : tu_below(&r, 2000));
			tu_put(s, k, buf, len);
		}
		ms_txn *w = tu_begin(s, 0);
		for (unsigned i = 0; i < 600; i++) {
			char k[32];
			snprintf(k, sizeof k, "u%u-%d", i, round);
			if (i % 3 == 0)
				cr_assert_eq(ms_txn_del(w, k, strlen(k)), 0);
		}
		tu_commit(w);
		for (unsigned i = 0; i < 600; i++) {
			char k[32];
			snprintf(k, sizeof k, "u%u-%d", i, round);
			if (i % 3 != 0)
				cr_assert_eq(ms_del(s, k, strlen(k)), 0);
		}
		ms_stats st = tu_stat(s);
		cr_assert_eq(st.objects, 0);
		cr_assert_eq(st.live_bytes, 0);
		cr_assert_leq(st.used_bytes, st0.used_bytes + 8 * page_size(),
			      "round %d: used_bytes %" PRIu64 " with no objects and no snapshot; a new store has %" PRIu64,
			      round, st.used_bytes, st0.used_bytes);
		check_stat_sanity(s, p);
	}
	tu_close(s);
	ms_check_stats cs = tu_check_sound(p);
	cr_assert_eq(cs.objects, 0);
	cr_assert_leq(cs.used_bytes, st0.used_bytes + 8 * page_size());
}

Test(api, open_snapshot_holds_used_bytes_until_it_ends)
{
	ms_store *s = fresh();
	ms_stats st0 = tu_stat(s);
	static unsigned char buf[10000];
	for (unsigned i = 0; i < 200; i++) {
		char k[16];
		snprintf(k, sizeof k, "h%u", i);
		tu_put(s, k, buf, sizeof buf);
	}
	ms_txn *r = tu_begin(s, MS_READONLY);
	for (unsigned i = 0; i < 200; i++) {
		char k[16];
		snprintf(k, sizeof k, "h%u", i);
		cr_assert_eq(ms_del(s, k, strlen(k)), 0);
	}
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, 0);
	cr_assert_geq(st.used_bytes, 200u * sizeof buf,
		      "used_bytes %" PRIu64 " does not count the space the open snapshot still sees", st.used_bytes);
	cr_assert_eq(st.readers, 1);
	ms_val v;
	cr_assert_eq(ms_txn_get(r, "h7", 2, &v), 0);
	cr_assert_eq(v.len, sizeof buf);
	ms_txn_abort(r);
	st = tu_stat(s);
	cr_assert_eq(st.readers, 0);
	cr_assert_leq(st.used_bytes, st0.used_bytes + 8 * page_size(),
		      "used_bytes %" PRIu64 " (pinned_bytes %" PRIu64 ") after the only snapshot ended and no object is "
		      "left; a new store has %" PRIu64, st.used_bytes, st.pinned_bytes, st0.used_bytes);
	tu_close(s);
}

Test(api, stat_counts_hits_and_misses_of_lookups)
{
	ms_store *s = fresh();
	tu_puts(s, "a", "1");
	tu_puts(s, "b", "2");
	ms_stats st0 = tu_stat(s);
	char buf[4];
	size_t vlen;
	cr_assert_eq(ms_get(s, "a", 1, buf, sizeof buf, &vlen), 0);
	cr_assert_eq(ms_get(s, "b", 1, buf, sizeof buf, &vlen), 0);
	cr_assert_eq(ms_get(s, "c", 1, buf, sizeof buf, &vlen), MS_NOTFOUND);
	ms_txn *t = tu_begin(s, MS_READONLY);
	ms_val v;
	cr_assert_eq(ms_txn_get(t, "a", 1, &v), 0);
	cr_assert_eq(ms_txn_get(t, "d", 1, &v), MS_NOTFOUND);
	cr_assert_eq(ms_txn_get(t, "e", 1, &v), MS_NOTFOUND);
	ms_txn_abort(t);
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.hits - st0.hits, 3, "hits grew by %" PRIu64 " after 3 lookups that found", st.hits - st0.hits);
	cr_assert_eq(st.misses - st0.misses, 3, "misses grew by %" PRIu64 " after 3 lookups that did not find",
		     st.misses - st0.misses);
	cr_assert_eq(st.evictions, 0, "evictions in a database-mode store");
	cr_assert_eq(st.evicted_bytes, 0);
	cr_assert_eq(st.expired, 0);
	tu_close(s);
}

Test(api, txn_ids_only_grow)
{
	const char *p = tu_path("s.ms");
	ms_store *s = fresh();
	uint64_t last = tu_stat(s).txn_id;
	for (int i = 0; i < 20; i++) {
		tu_puts(s, "k", "v");
		uint64_t id = tu_stat(s).txn_id;
		cr_assert_gt(id, last);
		last = id;
		ms_txn *w = tu_begin(s, 0);
		cr_assert_eq(ms_txn_put(w, "x", 1, "y", 1), 0);
		ms_txn_abort(w);
		cr_assert_eq(tu_stat(s).txn_id, last, "an abort changed txn_id");
		if (i % 5 == 0) {
			tu_close(s);
			s = tu_open(p, i % 10 == 0 ? MS_NOSYNC : 0, 0);
			uint64_t reopened = tu_stat(s).txn_id;
			cr_assert_eq(reopened, last, "txn_id changed over a close and reopen (%" PRIu64 " -> %" PRIu64 ")",
				     last, reopened);
		}
	}
	ms_txn *rt = tu_begin(s, MS_READONLY);
	cr_assert_eq(ms_txn_commit(rt), 0);
	cr_assert_eq(tu_stat(s).txn_id, last, "a read transaction's commit changed txn_id");
	tu_close(s);
}

/* ---- capacity ----------------------------------------------------------------------------------- */

/* Fill a store of capacity 4 MiB with values of vlen bytes (keys of 6 bytes) until MS_ENOSPC, then
 * check it stays usable and, round after round, takes as many new objects as it deleted. */
enum del_mode { DEL_ALTERNATE, DEL_ONE_BY_ONE, DEL_ONE_TXN };

static void full_store(size_t vlen_, enum del_mode mode)
{
	const char *p = tu_path("s.ms");
	const uint64_t cap = 4u << 20;
	const size_t VLEN = vlen_;
	enum { MAXN = 40000 };
	static unsigned char buf[256u << 10];
	cr_assert_leq(VLEN, sizeof buf);
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, cap); /* many commits: fast mode */
	cr_assert_eq(tu_stat(s).capacity, cap);
	unsigned n = 0;
	int rc = 0;
	char k[16];
	for (; n < MAXN; n++) {
		snprintf(k, sizeof k, "c%05u", n);
		tu_fill(buf, VLEN, n);
		rc = ms_put(s, k, strlen(k), buf, VLEN);
		if (rc)
			break;
	}
	cr_assert_eq(rc, MS_ENOSPC, "filling a 4 MiB store with %zu-byte values ended with %d after %u puts", VLEN, rc, n);
	cr_assert_geq((uint64_t)n * (VLEN + 6), cap / 2, "a 4 MiB store took only %u values of %zu bytes", n, VLEN);
	struct stat fs;
	cr_assert_eq(stat(p, &fs), 0);
	cr_assert_leq((uint64_t)fs.st_size, cap, "the file is %jd bytes, over its capacity", (intmax_t)fs.st_size);
	ms_stats st = tu_stat(s);
	cr_assert_eq(st.objects, n);
	cr_assert_leq(st.file_bytes, cap);
	tu_expect_absent(s, k); /* the refused put left nothing */

	/* Reads and deletes still work; a put that does not fit is refused again. */
	for (unsigned i = 0; i < n; i++) {
		snprintf(k, sizeof k, "c%05u", i);
		size_t vlen = 0;
		cr_assert_eq(ms_get(s, k, strlen(k), buf, VLEN, &vlen), 0, "ms_get(%s) in a full store", k);
		cr_assert(vlen == VLEN && tu_check_fill(buf, VLEN, i));
	}
	cr_assert_eq(ms_put(s, "c99999", 6, buf, VLEN), MS_ENOSPC);
	static unsigned char huge[5u << 20];
	cr_assert_eq(ms_put(s, "huge", 4, huge, sizeof huge), MS_ENOSPC, "a value larger than the capacity");

	/* ENOSPC inside a transaction leaves it usable. */
	ms_txn *w = tu_begin(s, 0);
	cr_assert_eq(ms_txn_put(w, "huge", 4, huge, sizeof huge), MS_ENOSPC);
	ms_val v;
	cr_assert_eq(ms_txn_get(w, "c00000", 6, &v), 0);
	cr_assert_eq(ms_txn_del(w, "c00001", 6), 0);
	cr_assert_eq(ms_txn_get(w, "c00001", 6, &v), MS_NOTFOUND);
	ms_txn_abort(w);
	cr_assert_eq(tu_stat(s).objects, n);

	/* Delete half, then the same number of new objects of the same key and value lengths fit.
	 * Several rounds, each deleting another half (alternating slots), so that a leak of space or of
	 * index nodes shows; odd rounds delete with one-operation ms_del, even ones in one transaction. */
	static char names[MAXN][8]; /* 6-byte keys: a letter and five digits */
	static unsigned seeds[MAXN];
	for (unsigned i = 0; i < n; i++) {
		snprintf(names[i], sizeof names[i], "c%05u", i);
		seeds[i] = i;
	}
	unsigned rounds = VLEN >= 4096 ? 8 : 2;
	for (unsigned round = 0; round < rounds; round++) {
		unsigned deleted = 0;
		bool in_txn = mode == DEL_ONE_TXN || (mode == DEL_ALTERNATE && round % 2 == 0);
		w = in_txn ? tu_begin(s, 0) : NULL;
		for (unsigned i = 0; i < n; i++) {
			if ((i + round) % 2)
				continue;
			rc = w ? ms_txn_del(w, names[i], 6) : ms_del(s, names[i], 6);
			cr_assert_eq(rc, 0, "round %u: deleting %s (%u of %u) from a full store %s: %d (%s)", round,
				     names[i], deleted + 1, n, in_txn ? "in one transaction" : "with ms_del", rc, ms_strerror(rc));
			deleted++;
		}
		if (w)
			tu_commit(w);
		for (unsigned i = 0; i < n; i++) {
			if ((i + round) % 2)
				continue;
			snprintf(names[i], sizeof names[i], "%c%05u", 'd' + round, i);
			seeds[i] = 100000u * (round + 1) + i;
			tu_fill(buf, VLEN, seeds[i]);
			rc = ms_put(s, names[i], 6, buf, VLEN);
			cr_assert_eq(rc, 0,
				     "round %u: after deleting %u of %u objects, new object %s of the same size (%zu bytes): %d (%s)",
				     round, deleted, n, names[i], VLEN, rc, ms_strerror(rc));
		}
		for (unsigned i = 0; i < n; i++) {
			size_t vlen = 0;
			rc = ms_get(s, names[i], 6, buf, VLEN, &vlen);
			cr_assert_eq(rc, 0, "round %u: ms_get(%s) = %d", round, names[i], rc);
			cr_assert(vlen == VLEN && tu_check_fill(buf, VLEN, seeds[i]), "round %u: %s is wrong", round,
				  names[i]);
		}
		st = tu_stat(s);
		cr_assert_eq(st.objects, n, "round %u: %" PRIu64 " objects, want %u", round, st.objects, n);
		cr_assert_leq(st.file_bytes, cap);
	}
	tu_close(s);
	cr_assert_eq(stat(p, &fs), 0);
	cr_assert_leq((uint64_t)fs.st_size, cap);
	tu_check_sound(p);
}

Test(api, full_store_is_enospc_stays_usable_and_reuses_freed_space)
{
	full_store(16384, DEL_ALTERNATE);
}

Test(api, full_store_of_small_objects_reuses_freed_space)
{
	full_store(100, DEL_ONE_BY_ONE);
}

Test(api, full_store_of_small_objects_deletes_half_in_one_transaction)
{
	full_store(100, DEL_ONE_TXN);
}

Test(api, full_store_of_large_objects_reuses_freed_space)
{
	full_store(200000, DEL_ALTERNATE);
}

/* ---- error strings, sync ------------------------------------------------------------------------ */

Test(api, strerror_gives_a_distinct_sentence_for_every_code)
{
	int codes[] = { 0, MS_NOTFOUND, MS_EINVAL, MS_ENOSPC, MS_ECORRUPT, MS_EVERSION, MS_EIO, MS_ENOMEM,
			MS_EBUSY, MS_ERDONLY, MS_ERANGE };
	size_t n = sizeof codes / sizeof codes[0];
	for (size_t i = 0; i < n; i++) {
		const char *a = ms_strerror(codes[i]);
		cr_assert_not_null(a, "ms_strerror(%d) is NULL", codes[i]);
		cr_assert_gt(strlen(a), 3, "ms_strerror(%d) = \"%s\" is not a sentence", codes[i], a);
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(a, ms_strerror(codes[j]), "codes %d and %d share \"%s\"", codes[i], codes[j], a);
	}
	const char *unk[] = { ms_strerror(-999), ms_strerror(12345), ms_strerror(INT_MIN) };
	for (int i = 0; i < 3; i++) {
		cr_assert_not_null(unk[i]);
		cr_assert_str_neq(unk[i], "");
	}
}

static void *last_error_in_new_thread(void *arg)
{
	(void)arg;
	return (void *)ms_last_error();
}

Test(api, last_error_names_the_file_and_is_per_thread)
{
	const char *p = tu_path("nope/missing.ms");
	ms_options o = { 0 };
	ms_store *s = NULL;
	int rc = ms_open(p, &o, &s);
	cr_assert_lt(rc, 0);
	const char *e = ms_last_error();
	cr_assert_not_null(e);
	cr_assert(strstr(e, p) != NULL, "ms_last_error() = \"%s\" does not name %s", e, p);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, last_error_in_new_thread, NULL), 0);
	void *res;
	pthread_join(th, &res);
	cr_assert_not_null(res);
	cr_assert_str_eq((const char *)res, "", "a new thread has a last error: \"%s\"", (const char *)res);
}

Test(api, sync_makes_nosync_commits_durable_and_works_in_default_mode)
{
	const char *p = tu_path("s.ms");
	ms_store *s = tu_open(p, MS_CREATE | MS_NOSYNC, 0);
	for (int i = 0; i < 100; i++) {
		char k[16];
		snprintf(k, sizeof k, "n%d", i);
		tu_puts(s, k, k);
	}
	cr_assert_eq(ms_sync(s), 0);
	cr_assert_eq(ms_sync(s), 0, "a second sync with nothing new");
	tu_close(s);
	s = tu_open(p, 0, 0);
	cr_assert_eq(tu_stat(s).objects, 100);
	tu_expect_str(s, "n42", "n42");
	cr_assert_eq(ms_sync(s), 0);
	tu_close(s);
	s = tu_open(p, MS_READONLY, 0);
	int rc = ms_sync(s);
	cr_assert(rc == 0 || rc == MS_ERDONLY, "ms_sync on a read-only store = %d", rc);
	tu_close(s);
}

/* ---- durability goes through the C library ------------------------------------------------------- */
/* The contract says the store makes its file durable only through the C library's fsync, fdatasync
 * and msync(MS_SYNC), so that a crash simulator wrapping the C library sees every persistence point.
 * To check that promise this executable defines those three (the library, linked in statically,
 * calls them): they count the calls and make the real system call. This is the only place the tests
 * interpose the C library, and only to count; faults are injected through the store's system-call
 * seam, ms_sys (tests/test_faults.c, failed syncs included). */

static atomic_int syncs_seen;

int fdatasync(int fd)
{
	atomic_fetch_add(&syncs_seen, 1);
	return (int)syscall(SYS_fdatasync, fd);
}

int fsync(int fd)
{
	atomic_fetch_add(&syncs_seen, 1);
	return (int)syscall(SYS_fsync, fd);
}

int msync(void *addr, size_t len, int flags)
{
	if (flags & MS_SYNC)
		atomic_fetch_add(&syncs_seen, 1);
	return (int)syscall(SYS_msync, addr, len, flags);
}

Test(api, durable_commits_go_through_the_c_librarys_sync_calls)
{
	ms_store *s = fresh();
	int before = atomic_load(&syncs_seen);
	tu_puts(s, "k", "v");
	cr_assert_gt(atomic_load(&syncs_seen), before, "a durable commit called none of fsync, fdatasync, msync(MS_SYNC)");
	tu_close(s);
	s = tu_open(tu_path("s.ms"), MS_NOSYNC, 0);
	tu_puts(s, "k2", "v2");
	before = atomic_load(&syncs_seen);
	cr_assert_eq(ms_sync(s), 0);
	cr_assert_gt(atomic_load(&syncs_seen), before, "ms_sync called none of fsync, fdatasync, msync(MS_SYNC)");
	tu_close(s);
}
