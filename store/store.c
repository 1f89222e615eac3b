/* store/store.c - opening and closing a store: creating a new file atomically, choosing the valid meta
 * page, bringing the allocator back (from the clean-close checkpoint, or rebuilt from the index after
 * anything unclean), the checkpoint at close, and the one-operation calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define NEW_STORE_BYTES (64ull << 10)

/* ---- creation ---- */

static uint64_t random_seed(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		v = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ ((uint64_t)getpid() << 16);
	}
	return XXH3_64bits(&v, sizeof v);
}

/* Build the new store under a temporary name and move it into place only when whole, so a store file
 * either does not exist or is valid, and two processes creating at once end with one store. */
static int create_file(const char *path, unsigned mode)
{
	size_t n = strlen(path);
	char *tmp = malloc(n + 32), *dir = strdup(path);
	if (!tmp || !dir) {
		free(tmp);
		free(dir);
		return err_set(MS_ENOMEM, "create %s: out of memory", path);
	}
	snprintf(tmp, n + 32, "%s.new.%ld", path, (long)getpid());
	int fd = ms_sys.open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode ? (mode_t)mode : 0600);
	if (fd < 0) {
		int e = errno;
		free(tmp);
		free(dir);
		return err_errno(err_from_errno(e), e, "create %s", path);
	}
	int rc = 0, e;
	uint64_t seed = random_seed(), created = (uint64_t)time(NULL);
	if ((e = ms_sys.fallocate(fd, 0, (off_t)NEW_STORE_BYTES))) {
		rc = err_errno(err_from_errno(e) == MS_EINVAL ? MS_EIO : err_from_errno(e), e, "fallocate %s", path);
		goto fail;
	}
	struct snap empty = { .heap_end = NEW_STORE_BYTES };
	struct snap empty1 = { .seq = 1, .heap_end = NEW_STORE_BYTES };
	if (meta_write(fd, &empty, seed, created, NULL, NULL, 0) || meta_write(fd, &empty1, seed, created, NULL, NULL, 0) ||
	    ms_sys.fdatasync(fd)) {
		e = errno;
		rc = err_errno(MS_EIO, e, "write %s", path);
		goto fail;
	}
	if (ms_sys.rename_noreplace(tmp, path)) {
		e = errno;
		if (e == EINVAL || e == ENOSYS) { /* a file system without renameat2: link is also exclusive */
			if (ms_sys.link(tmp, path) == 0)
				e = 0;
			else
				e = errno;
			ms_sys.unlink(tmp);
		}
		if (e && e != EEXIST) {
			rc = err_errno(err_from_errno(e), e, "create %s", path);
			goto fail;
		}
	}
	ms_sys.close(fd);
	/* Make the new name durable: fsync the folder. If that fails the store exists and is valid, but
	 * its name may not survive a power loss, and with it every commit: say so. */
	char *slash = strrchr(dir, '/');
	const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
	int dfd = ms_sys.open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (dfd >= 0) {
		if (ms_sys.fsync(dfd)) {
			e = errno;
			rc = err_errno(MS_EIO, e, "fsync the folder of the new store %s", path);
		}
		ms_sys.close(dfd);
	}
	free(dir);
	free(tmp);
	return rc;
fail:
	ms_sys.close(fd);
	ms_sys.unlink(tmp);
	free(tmp);
	free(dir);
	return rc;
}

/* ---- open ---- */

static int open_fd(ms_store *s, const ms_options *o)
{
	bool ro = (o->flags & MS_READONLY) != 0;
	for (int tries = 0;; tries++) {
		s->fd = ms_sys.open(s->path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
		if (s->fd >= 0)
			return 0;
		int e = errno;
		if (e == ENOENT && (o->flags & MS_CREATE) && tries < 3) {
			int rc = create_file(s->path, o->mode);
			if (rc)
				return rc;
			continue;
		}
		if (e == ENOENT)
			return err_errno(MS_EINVAL, e, "open %s", s->path);
		if (e == EACCES || e == EPERM || e == EROFS)
			return err_errno(ro ? MS_EIO : MS_ERDONLY, e, "open %s%s", s->path,
			                 ro ? "" : " for writing");
		return err_errno(err_from_errno(e), e, "open %s", s->path);
	}
}

/* Everything a handle holds, let go (a failed open's partial handle too, whose error stays the one
 * reported: report is false): MS_EIO when closing the file fails. */
static int store_free(ms_store *s, bool report)
{
	int rc = 0;
	if (s->alloc)
		alloc_destroy(s->alloc);
	space_drop_pending(s);
	map_close(s);
	readers_close(s);
	if (s->fd >= 0 && ms_sys.close(s->fd) && report)
		rc = err_errno(MS_EIO, errno, "close %s", s->path);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->maplock);
	pthread_mutex_destroy(&s->synclock);
	space_quar_drop(s);
	free(s->path);
	free(s);
	return rc;
}

int ms_open(const char *path, const ms_options *opt, ms_store **out)
{
	static const ms_options defaults;
	const ms_options *o = opt ? opt : &defaults;
	if (!path || !*path || !out)
		return err_set(MS_EINVAL, "ms_open: NULL or empty argument");
	if (o->flags & ~(MS_CREATE | MS_READONLY | MS_NOSYNC | MS_CACHE))
		return err_set(MS_EINVAL, "ms_open %s: unknown flags 0x%x", path, o->flags);
	if (o->flags & MS_CACHE)
		return err_set(MS_EINVAL, "ms_open %s: cache mode (MS_CACHE) is not implemented yet", path);
	if ((o->flags & MS_READONLY) && (o->flags & MS_CREATE))
		return err_set(MS_EINVAL, "ms_open %s: MS_CREATE and MS_READONLY together", path);
	if (o->capacity && o->capacity < 2 * NEW_STORE_BYTES)
		return err_set(MS_EINVAL, "ms_open %s: capacity below %llu bytes", path,
		               (unsigned long long)(2 * NEW_STORE_BYTES));
	if (o->mode & ~07777u)
		return err_set(MS_EINVAL, "ms_open %s: bad mode 0%o", path, o->mode);

	ms_store *s = calloc(1, sizeof *s);
	if (!s || !(s->path = strdup(path))) {
		free(s);
		return err_set(MS_ENOMEM, "ms_open %s: out of memory", path);
	}
	s->fd = -1;
	s->flags = o->flags;
	for (size_t i = 0; i < sizeof s->memo / sizeof s->memo[0]; i++)
		atomic_init(&s->memo[i], UINT64_MAX); /* a tag no offset below 2^48 has */
	s->capacity = o->capacity;
	pthread_mutex_init(&s->wlock, NULL);
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->maplock, NULL);
	pthread_mutex_init(&s->synclock, NULL);
	s->lock_fd = -1;
	int rc = open_fd(s, o);
	if (rc)
		goto fail;
	struct stat sb;
	if (ms_sys.fstat(s->fd, &sb)) {
		rc = err_errno(MS_EIO, errno, "stat %s", path);
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = err_set(MS_EINVAL, "open %s: not a regular file", path);
		goto fail;
	}
	s->file_size = (uint64_t)sb.st_size;
	if (s->file_size < MS_HEAP_START) {
		rc = err_set(MS_ECORRUPT, "open %s: %llu bytes is too short to be a store", path,
		             (unsigned long long)s->file_size);
		goto fail;
	}
	struct disk_meta m[2];
	struct disk_rec rec[2][MS_REC_MAX];
	int mrc[2];
	const char *why[2] = { NULL, NULL };
	if (meta_read_pages(s->fd, s->file_size, m, rec, mrc, why)) {
		rc = err_errno(MS_EIO, errno, "read the meta pages of %s", s->path);
		goto fail;
	}
	if (mrc[0] == MS_EVERSION || mrc[1] == MS_EVERSION) {
		rc = err_set(MS_EVERSION, "open %s: format version %u is newer than this library's %u", path,
		             mrc[0] == MS_EVERSION ? m[0].version : m[1].version, MS_FORMAT_VERSION);
		goto fail;
	}
	int order[2];
	int n_valid = meta_pick(m, (const bool[2]){ mrc[0] == 0, mrc[1] == 0 }, order);
	if (n_valid == 0) {
		rc = err_set(MS_ECORRUPT, "open %s: not a valid store (meta page 0: %s; meta page 1: %s)", path,
		             why[0], why[1]);
		goto fail;
	}
	/* It is a store: join the processes that have it open (lock file, reader table). */
	bool first;
	if ((rc = readers_open(s, &first)))
		goto fail;
	if ((rc = map_open(s)))
		goto fail;
	uint64_t region_end = s->file_size / MS_ALIGN * MS_ALIGN;
	if (s->capacity && region_end > s->capacity)
		region_end = m[order[0]].heap_end > s->capacity ? m[order[0]].heap_end : s->capacity / MS_ALIGN * MS_ALIGN;
	const struct disk_meta *chosen = NULL;
	bool ckpt_used = false;
	if ((rc = recover_open(s, m, rec, order, n_valid, first, region_end, &chosen, &ckpt_used)))
		goto fail;
	s->hash_seed = chosen->hash_seed;
	s->created = chosen->created;
	snap_from_meta(&s->cur, chosen);
	if (!first) {
		/* The newest commit now, read afresh: taken with its record matching unless published. */
		struct snap now;
		int r = MS_NOTFOUND;
		for (int tries = 0; r == MS_NOTFOUND && tries < 1000; tries++)
			r = snap_read(s, 0, &now);
		if (r) {
			rc = r == MS_NOTFOUND ? err_set(MS_ECORRUPT, "open %s: no meta page holds a whole commit", path) : r;
			goto fail;
		}
		s->cur = now;
	}
	if (s->alloc && !ckpt_used)
		s->cur.ckpt_off = s->cur.ckpt_len = 0; /* not loaded: not booked, so nothing to release */
	if (first)
		atomic_store(&s->lf->seq, s->cur.seq);
	s->synced_seq = s->cur.seq;
	if (s->alloc) {
		s->alloc_seq = chosen->seq;
		s->ckpt_on_disk = ckpt_used;
		s->file_size = region_end < chosen->heap_end ? chosen->heap_end : region_end;
		/* Whoever wrote the file last may have left stale blocks in free space (an unclean end,
		 * or a session in the default mode, which does not invalidate what it frees). */
		if ((s->flags & MS_NOSYNC) && (rc = recover_scrub(s)))
			goto fail;
	}
	space_audit(s, ckpt_used ? "after loading the checkpoint" : "after the rebuild at open");
	readers_ready(s);
	*out = s;
	return 0;
fail:
	store_free(s, false);
	return rc;
}

/* ---- close ---- */

/* Write the allocator's state into a heap block and publish it with a meta page, so the next open
 * scans nothing. Failing here costs only that scan. */
static int write_checkpoint(ms_store *s)
{
	if (s->flags & MS_NOSYNC) {
		/* Empty the quarantine first, so the checkpoint describes all free space as free. */
		int rc = space_quar_flush(s, "close");
		if (rc)
			return rc;
	}
	space_release_pending(s);
	if (s->alloc_distrust)
		return 0; /* never publish an allocator that disagrees with the index */
	/* The block: the blob's length (8 bytes), the blob, zero padding. It is booked in the blob itself
	 * as allocated with `cap` bytes; the first commit after loading frees it (I6). */
	size_t cap = 8 + alloc_export_size(s->alloc) + 1024;
	uint8_t *buf = calloc(1, cap);
	if (!buf)
		return MS_ENOMEM;
	uint64_t off;
	int rc = alloc_alloc(s->alloc, cap, &off);
	if (rc == ALLOC_ENOSPC) {
		if (map_grow(s, s->file_size + alloc_round(cap) + (128ull << 10)) == 0 ||
		    map_grow(s, s->file_size + alloc_round(cap)) == 0)
			rc = alloc_alloc(s->alloc, cap, &off);
	}
	if (rc) {
		free(buf);
		return MS_ENOSPC;
	}
	size_t len;
	if (alloc_export(s->alloc, buf + 8, cap - 8, &len) || len > cap - 8) {
		alloc_free(s->alloc, off, cap);
		free(buf);
		return MS_ENOMEM;
	}
	uint64_t len64 = len;
	memcpy(buf, &len64, 8);
	memcpy(s->base + off, buf, cap);
	free(buf);
	struct snap st = s->cur;
	st.seq++;
	st.heap_end = s->file_size;
	st.flags = 0;
	uint64_t h = blob_hash(s->base + off, cap);
	if (ms_sys.fdatasync(s->fd))
		return err_errno(MS_EIO, errno, "fdatasync %s (checkpoint)", s->path);
	if (meta_write(s->fd, &st, s->hash_seed, s->created, &(struct meta_ckpt){ off, cap, h }, NULL, 0))
		return err_errno(MS_EIO, errno, "write meta page of %s", s->path);
	if (ms_sys.fdatasync(s->fd))
		return err_errno(MS_EIO, errno, "fdatasync %s (close)", s->path);
	readers_note_commit(s, st.seq, 0);
	st.ckpt_off = off;
	st.ckpt_len = cap;
	s->cur = st;
	s->alloc_seq = st.seq;
	s->ckpt_on_disk = true;
	return 0;
}

int ms_close(ms_store *s)
{
	if (!s)
		return 0;
	txn_end_all(s);
	int rc = 0;
	/* The last process out leaves a checkpoint, so the next open scans nothing. */
	bool died;
	if (map_faulted(s))
		rc = map_fault_error(s); /* nothing more is written into a file truncated under the store */
	else if (!(s->flags & MS_READONLY) && !s->failed && s->lf && readers_alone(s) && readers_lock_writer(s, &died) == 0) {
		if ((rc = map_check_size(s)) == 0 && recover_writer(s) == 0 && !s->ckpt_on_disk) {
			rc = write_checkpoint(s);
			if (rc != MS_EIO)
				rc = 0; /* no room or memory for a checkpoint: the next open rebuilds instead */
		}
		readers_unlock_writer(s);
	}
	int crc = store_free(s, !rc);
	return rc ? rc : crc;
}

int ms_sync(ms_store *s)
{
	if (!s)
		return err_set(MS_EINVAL, "ms_sync: NULL store");
	if (s->flags & MS_READONLY)
		return 0;
	if (s->failed)
		return err_set(MS_EIO, "%s: an earlier sync failed; reopen the store", s->path);
	if (map_faulted(s))
		return map_fault_error(s);
	if (s->flags & MS_NOSYNC) {
		/* Under synclock no commit is writing its meta page: the sync knows which one it made
		 * durable. The quarantine it covers is moved on by the writer (allocator calls stay in
		 * the writer's context). */
		pthread_mutex_lock(&s->synclock);
		int rc = space_sync_point(s, "ms_sync");
		pthread_mutex_unlock(&s->synclock);
		return rc;
	}
	if (ms_sys.fdatasync(s->fd)) {
		int e = errno;
		s->failed = MS_EIO;
		return err_errno(MS_EIO, e, "fdatasync %s", s->path);
	}
	return 0;
}

/* ---- one-operation calls ---- */

int ms_put(ms_store *s, const void *key, size_t klen, const void *val, size_t vlen)
{
	ms_txn *t;
	int rc = ms_txn_begin(s, 0, &t);
	if (rc)
		return rc;
	if ((rc = ms_txn_put(t, key, klen, val, vlen))) {
		ms_txn_abort(t);
		return rc;
	}
	return ms_txn_commit(t);
}

int ms_del(ms_store *s, const void *key, size_t klen)
{
	ms_txn *t;
	int rc = ms_txn_begin(s, 0, &t);
	if (rc)
		return rc;
	if ((rc = ms_txn_del(t, key, klen))) {
		ms_txn_abort(t);
		return rc;
	}
	return ms_txn_commit(t);
}

int ms_get(ms_store *s, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
	if (!vlen || (!buf && cap))
		return err_set(MS_EINVAL, "ms_get: NULL argument");
	ms_txn *t;
	int rc = ms_txn_begin(s, MS_READONLY, &t);
	if (rc)
		return rc;
	ms_val v;
	rc = ms_txn_get(t, key, klen, &v);
	if (rc == 0) {
		*vlen = v.len;
		if (v.len > cap)
			rc = MS_ERANGE;
		else if (v.len)
			memcpy(buf, v.data, v.len);
	}
	ms_txn_abort(t);
	return rc;
}
