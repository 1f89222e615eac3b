/* store/store.c - opening and closing a store: creating a new file atomically, choosing the valid meta
 * page, bringing the allocator back (from the clean-close checkpoint, or rebuilt from the index after
 * anything unclean), the checkpoint at close, and the one-operation calls.
 */
#define _GNU_SOURCE /* renameat2 */
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

static int write_new_meta(int fd, uint64_t txnid, uint64_t seed, uint64_t created)
{
	struct disk_meta m;
	memset(&m, 0, sizeof m);
	m.magic = MS_MAGIC;
	m.version = MS_FORMAT_VERSION;
	m.page_size = MS_PAGE;
	m.txnid = txnid;
	m.heap_end = NEW_STORE_BYTES;
	m.hash_seed = seed;
	m.created = created;
	m.hash = meta_hash(&m);
	return sys_pwrite_full(fd, &m, sizeof m, (txnid % 2) * MS_PAGE);
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
	if (write_new_meta(fd, 0, seed, created) || write_new_meta(fd, 1, seed, created) ||
	    ms_sys.fdatasync(fd)) {
		e = errno;
		rc = err_errno(MS_EIO, e, "write %s", path);
		goto fail;
	}
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE)) {
		e = errno;
		if (e == EINVAL || e == ENOSYS) { /* a file system without renameat2: link is also exclusive */
			if (link(tmp, path) == 0)
				e = 0;
			else
				e = errno;
			unlink(tmp);
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
	unlink(tmp);
	free(tmp);
	free(dir);
	return rc;
}

/* ---- open ---- */

static void snap_from_meta(struct snap *st, const struct disk_meta *m)
{
	st->txnid = m->txnid;
	st->commit_id = m->commit_id;
	st->root = m->root;
	st->objects = m->objects;
	st->live_bytes = m->live_bytes;
	st->obj_bytes = m->obj_bytes;
	st->node_bytes = m->node_bytes;
	st->heap_end = m->heap_end;
	st->flags = m->flags;
	bool ckpt = m->ckpt_off && m->ckpt_txnid == m->txnid;
	st->ckpt_off = ckpt ? m->ckpt_off : 0;
	st->ckpt_len = ckpt ? m->ckpt_len : 0;
}

/* Bring the allocator to the state of meta m: its checkpoint when it is the clean-close one, else a
 * rebuild from the index (I6). Space an uncommitted transaction held is free again by construction. */
static int recover_alloc(ms_store *s, const struct disk_meta *m, uint64_t region_end, bool *ckpt_used)
{
	*ckpt_used = false;
	if (m->ckpt_off && m->ckpt_txnid == m->txnid && m->ckpt_len) {
		const uint8_t *blob = s->base + m->ckpt_off;
		uint64_t blob_len = 0;
		struct alloc *a;
		if (m->ckpt_len > 8)
			memcpy(&blob_len, blob, 8);
		if (m->ckpt_len > 8 && blob_len <= m->ckpt_len - 8 &&
		    blob_hash(blob, m->ckpt_len) == m->ckpt_hash &&
		    alloc_import(blob + 8, (size_t)blob_len, &a) == 0) {
			struct alloc_stats st;
			alloc_stats(a, &st);
			/* The checkpoint must describe this heap: same region, and the index's blocks plus
			 * the checkpoint block itself. */
			if (st.region_bytes == m->heap_end - MS_HEAP_START &&
			    st.used_bytes == m->obj_bytes + m->node_bytes + alloc_round(m->ckpt_len) &&
			    (region_end == m->heap_end || alloc_grow(a, region_end) == 0)) {
				s->alloc = a;
				*ckpt_used = true;
				return 0;
			}
			alloc_destroy(a);
		}
		/* A bad checkpoint is only a cache miss: rebuild below. */
	}
	struct ictx c = { .base = s->base, .heap_end = m->heap_end };
	struct rebuild rb;
	memset(&rb, 0, sizeof rb);
	uint64_t bad = 0;
	const char *why = NULL;
	int rc = rebuild_collect(&c, m->root, m->hash_seed, (m->flags & MS_META_NOSYNC) != 0, &rb, &bad, &why);
	if (rc == 0 && (rb.objects != m->objects || rb.live_bytes != m->live_bytes ||
	                rb.obj_bytes != m->obj_bytes || rb.node_bytes != m->node_bytes)) {
		rc = MS_ECORRUPT;
		why = "the meta page's totals disagree with the index";
	}
	if (rc == 0) {
		int ar = alloc_rebuild(MS_HEAP_START, region_end, rb.blocks, rb.n, &s->alloc);
		if (ar) {
			rc = ar == ALLOC_ENOMEM ? MS_ENOMEM : MS_ECORRUPT;
			why = "index blocks overlap or cannot be placed";
		}
	}
	free(rb.blocks);
	if (rc == MS_ECORRUPT)
		err_set(rc, "%s: commit %llu is damaged at offset %llu: %s", s->path,
		        (unsigned long long)m->txnid, (unsigned long long)bad, why ? why : "?");
	return rc;
}

/* Make the mapping cover `end` bytes when another process grew the file past our reservation. */
static int map_cover(ms_store *s, uint64_t end)
{
	return map_extend(s, end); /* checks under its lock whether anything is to do */
}

/* Does the commit record of meta m, read from page `page` of the mapping, fail to match? */
static bool meta_record_mismatch(ms_store *s, int page, const struct disk_meta *m)
{
	struct disk_rec rec[MS_REC_MAX];
	memcpy(rec, s->base + (uint64_t)page * MS_PAGE + sizeof *m, m->rec_count * sizeof rec[0]);
	const char *why;
	return meta_record_check(s->base, m, rec, &why) != 0;
}

int store_snap(ms_store *s, uint64_t t, struct snap *out)
{
	pthread_mutex_lock(&s->lock);
	if (t && s->cur.txnid == t) {
		*out = s->cur;
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	/* Written by another process (or a newer commit): read the meta pages from the mapping. A page
	 * being rewritten right now fails its checksum; the caller tries again. */
	struct disk_meta m[2];
	memcpy(m, s->base, sizeof m[0]);
	memcpy(&m[1], s->base + MS_PAGE, sizeof m[1]);
	atomic_thread_fence(memory_order_acquire);
	struct stat sb;
	uint64_t fsize = fstat(s->fd, &sb) == 0 ? (uint64_t)sb.st_size : s->file_size;
	bool ok[2];
	for (int i = 0; i < 2; i++) {
		const char *why;
		ok[i] = meta_check(&m[i], fsize, &why) == 0 && m[i].txnid % 2 == (uint64_t)i &&
		        m[i].hash_seed == s->hash_seed;
	}
	int best = -1;
	for (;;) {
		best = -1;
		for (int i = 0; i < 2; i++)
			if (ok[i] && (t ? m[i].txnid == t : (best < 0 || m[i].txnid > m[best].txnid)))
				best = i;
		if (best < 0)
			return MS_NOTFOUND;
		int rc = map_cover(s, m[best].heap_end);
		if (rc)
			return rc;
		/* The newest meta is taken only with its commit record matching, unless its id is
		 * published: then its sync finished, and a block that no longer matches is damage, for
		 * the checksums to report, not a commit to take back. An unpublished one that does not
		 * match is a commit a crash cut short. */
		if (t || !m[best].rec_count || (s->lf && m[best].txnid <= atomic_load(&s->lf->txnid)) ||
		    !meta_record_mismatch(s, best, &m[best]))
			break;
		ok[best] = false;
	}
	snap_from_meta(out, &m[best]);
	pthread_mutex_lock(&s->lock);
	if (out->txnid > s->cur.txnid)
		s->cur = *out;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int cmp_off(const void *a, const void *b)
{
	const struct alloc_block *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static void pending_drop_all(ms_store *s)
{
	pthread_mutex_lock(&s->lock);
	struct pending *p = s->pending;
	while (p) {
		struct pending *n = p->next;
		blocks_free(&p->blocks);
		free(p);
		p = n;
	}
	s->pending = s->pending_tail = NULL;
	s->pinned_bytes = 0;
	pthread_mutex_unlock(&s->lock);
}

/* Another process committed since this one's allocator was built (or it never had one): rebuild it
 * from the newest commit's index plus every live reader's snapshot, so that nothing a reader can see
 * is handed out. What only readers see is booked as pending, reusable once they are gone. */
static int writer_rebuild(ms_store *s, const struct snap *cur, uint64_t region_end)
{
	struct ictx c = { .base = s->base, .heap_end = cur->heap_end };
	struct rebuild rb;
	memset(&rb, 0, sizeof rb);
	uint64_t bad = 0;
	const char *why = NULL;
	int rc = rebuild_collect(&c, cur->root, s->hash_seed, false, &rb, &bad, &why);
	if (rc == 0 && cur->ckpt_off) { /* the newest meta still points at its checkpoint: keep it */
		struct blocks b = { rb.blocks, rb.n, rb.cap };
		rc = blocks_push(&b, cur->ckpt_off, cur->ckpt_len);
		rb.blocks = b.v, rb.n = b.len, rb.cap = b.cap;
	}
	size_t n_cur = rb.n;
	unsigned hi = atomic_load(&s->lf->slots_hi);
	for (unsigned i = 0; rc == 0 && i < hi && i < MS_READER_SLOTS; i++) {
		struct reader_slot *r = &s->lf->slots[i];
		uint64_t rt = atomic_load(&r->txnid);
		if (!atomic_load(&r->pid) || rt == 0 || rt == cur->txnid)
			continue;
		uint64_t rheap, rroot = reader_root(r, &rheap);
		if (rheap > region_end)
			rheap = region_end; /* the lock file is shared memory: never read past the file */
		struct ictx rc_ctx = { .base = s->base, .heap_end = rheap };
		struct rebuild extra;
		memset(&extra, 0, sizeof extra);
		rc = rebuild_collect(&rc_ctx, rroot, s->hash_seed, false, &extra, &bad, &why);
		if (rc == MS_ECORRUPT && atomic_load(&r->txnid) != rt) {
			/* The slot changed hands while we walked (an old id seen just as it was reset):
			 * that snapshot is gone, nothing of it needs keeping. */
			rc = 0;
			extra.n = 0;
		}
		for (size_t k = 0; rc == 0 && k < extra.n; k++) {
			if (rb.n == rb.cap) {
				size_t ncap = rb.cap ? rb.cap * 2 : 1024;
				struct alloc_block *v = realloc(rb.blocks, ncap * sizeof *v);
				if (!v) {
					rc = MS_ENOMEM;
					break;
				}
				rb.blocks = v, rb.cap = ncap;
			}
			rb.blocks[rb.n++] = extra.blocks[k];
		}
		free(extra.blocks);
	}
	/* What the newest commit reaches, taken before sorting mixes it with what only readers see. */
	struct pending *p = NULL;
	struct table inc;
	table_init(&inc);
	for (size_t k = 0; k < n_cur && rc == 0; k++)
		rc = table_put(&inc, rb.blocks[k].off, 1);
	if (rc == 0 && rb.n > n_cur) {
		/* Blocks several snapshots share appear more than once: keep one of each. */
		qsort(rb.blocks, rb.n, sizeof *rb.blocks, cmp_off);
		size_t w = 0;
		for (size_t k = 0; k < rb.n; k++) {
			if (w && rb.blocks[w - 1].off == rb.blocks[k].off)
				continue;
			rb.blocks[w++] = rb.blocks[k];
		}
		rb.n = w;
		if ((p = calloc(1, sizeof *p)) == NULL)
			rc = MS_ENOMEM;
		if (p)
			p->txnid = cur->txnid + 1; /* conservative: readers older than the newest pin it */
		for (size_t k = 0; k < rb.n && rc == 0; k++) {
			if (table_get(&inc, rb.blocks[k].off))
				continue;
			rc = blocks_push(&p->blocks, rb.blocks[k].off, rb.blocks[k].size);
			p->bytes += alloc_round(rb.blocks[k].size);
		}
	}
	table_free(&inc);
	struct alloc *a = NULL;
	if (rc == 0) {
		int ar = alloc_rebuild(MS_HEAP_START, region_end, rb.blocks, rb.n, &a);
		if (ar)
			rc = ar == ALLOC_ENOMEM ? MS_ENOMEM : err_set(MS_ECORRUPT, "%s: the index's blocks overlap", s->path);
	} else if (rc == MS_ECORRUPT) {
		err_set(rc, "%s: commit %llu is damaged at offset %llu: %s", s->path,
		        (unsigned long long)cur->commit_id, (unsigned long long)bad, why ? why : "?");
	}
	free(rb.blocks);
	if (rc) {
		if (p)
			blocks_free(&p->blocks);
		free(p);
		return rc;
	}
	if (s->alloc)
		alloc_destroy(s->alloc);
	s->alloc = a;
	pending_drop_all(s);
	if (p && p->blocks.len) {
		pthread_mutex_lock(&s->lock);
		s->pending = s->pending_tail = p;
		s->pinned_bytes = p->bytes;
		pthread_mutex_unlock(&s->lock);
	} else if (p) {
		blocks_free(&p->blocks);
		free(p);
	}
	return 0;
}

/* ---- MS_NOSYNC: scrubbing free space ---- */

static int scrub_range(void *ctx, uint64_t off, uint64_t len)
{
	ms_store *s = ctx;
	uint64_t lo = round_up(off, MS_PAGE), hi = (off + len) / MS_PAGE * MS_PAGE;
	if (hi > lo && ms_sys.zero_range(s->fd, (off_t)lo, (off_t)(hi - lo)) == 0) {
		memset(s->base + off, 0, lo - off);
		memset(s->base + hi, 0, off + len - hi);
	} else {
		memset(s->base + off, 0, len); /* no such call here: write the zeros */
	}
	return 0;
}

/* A rebuilt allocator's free space may hold blocks that were never invalidated, some with valid
 * checksums: a commit that reused such an offset and whose data did not reach the disk would show
 * them. So make the current meta durable first (nothing of its tree is touched below), then zero
 * every free range, run slots included, and make that durable too. */
int store_scrub(ms_store *s)
{
	pthread_mutex_lock(&s->synclock);
	int rc = store_nosync_point(s, "before scrubbing free space");
	if (rc == 0) {
		alloc_free_each(s->alloc, scrub_range, s);
		rc = store_nosync_point(s, "scrubbed free space");
	}
	pthread_mutex_unlock(&s->synclock);
	return rc;
}

static const uint8_t zero_page[MS_PAGE];

/* Under the writer lock, with cur the newest commit store_snap takes: a valid, unpublished meta with
 * a commit record on the other page, newer than cur, is a commit a crash cut short (its record does
 * not match). Erase it before anything is written, so that no commit writing the same bytes at the
 * same places can make it whole again. */
static int erase_cut_short(ms_store *s, const struct snap *cur)
{
	uint64_t page = (cur->txnid + 1) % 2;
	struct disk_meta om;
	memcpy(&om, s->base + page * MS_PAGE, sizeof om);
	const char *why;
	if (meta_check(&om, cur->heap_end > om.heap_end ? cur->heap_end : om.heap_end, &why) ||
	    om.txnid % 2 != page || om.txnid <= cur->txnid || !om.rec_count || om.hash_seed != s->hash_seed ||
	    om.txnid <= atomic_load(&s->lf->txnid))
		return 0;
	if (sys_pwrite_full(s->fd, zero_page, MS_PAGE, page * MS_PAGE) || ms_sys.fdatasync(s->fd)) {
		s->failed = MS_EIO;
		return err_errno(MS_EIO, errno, "erase the meta page of an unfinished commit in %s", s->path);
	}
	return 0;
}

int store_writer_sync(ms_store *s)
{
	struct snap cur;
	int rc = MS_NOTFOUND;
	for (int tries = 0; rc == MS_NOTFOUND && tries < 3; tries++)
		rc = store_snap(s, 0, &cur); /* under the writer lock nobody rewrites a meta page */
	if (rc)
		return rc == MS_NOTFOUND ? err_set(MS_ECORRUPT, "%s: no valid meta page", s->path) : rc;
	if ((rc = erase_cut_short(s, &cur)))
		return rc;
	/* What this handle builds on is the newest commit on the disk, even when it once took a newer
	 * one: a commit cut short, or one whose meta sync failed and whose page was put back. */
	pthread_mutex_lock(&s->lock);
	if (s->cur.txnid > cur.txnid)
		s->cur = cur;
	pthread_mutex_unlock(&s->lock);
	if (s->alloc && cur.txnid == s->alloc_txnid && !s->alloc_distrust)
		return 0;
	struct stat sb;
	if (fstat(s->fd, &sb))
		return err_errno(MS_EIO, errno, "stat %s", s->path);
	uint64_t fsize = (uint64_t)sb.st_size / MS_ALIGN * MS_ALIGN;
	if (fsize < cur.heap_end)
		return err_set(MS_ECORRUPT, "%s: the file is shorter than its heap", s->path);
	if ((rc = map_cover(s, fsize)))
		return rc;
	/* A writer that died between its meta page and publishing it left the newest id behind: move it
	 * forward before scanning the readers, so a reader that starts now takes the newest commit
	 * (or is seen by the scan: the same handshake as at every commit). */
	if (atomic_load(&s->lf->txnid) < cur.txnid)
		atomic_store(&s->lf->txnid, cur.txnid);
	if ((rc = writer_rebuild(s, &cur, fsize)))
		return rc;
	s->file_size = fsize;
	s->alloc_txnid = cur.txnid;
	s->alloc_distrust = false;
	s->ckpt_on_disk = false;
	if (s->flags & MS_NOSYNC) {
		quar_drop(s); /* its blocks are free in the new allocator, or live */
		return store_scrub(s);
	}
	return 0;
}

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

static int meta_read(ms_store *s, struct disk_meta m[2], struct disk_rec rec[2][MS_REC_MAX], int rc_of[2],
                     const char *why[2])
{
	for (int i = 0; i < 2; i++) {
		if (sys_pread_full(s->fd, &m[i], sizeof m[i], (uint64_t)i * MS_PAGE))
			return err_errno(MS_EIO, errno, "read meta page %d of %s", i, s->path);
		rc_of[i] = meta_check(&m[i], s->file_size, &why[i]);
		if (rc_of[i] == 0 && m[i].rec_count &&
		    sys_pread_full(s->fd, rec[i], m[i].rec_count * sizeof rec[i][0], (uint64_t)i * MS_PAGE + sizeof m[i]))
			return err_errno(MS_EIO, errno, "read meta page %d of %s", i, s->path);
		if (rc_of[i] == 0 && m[i].txnid % 2 != (uint64_t)i) {
			rc_of[i] = MS_ECORRUPT;
			why[i] = "transaction id in the wrong meta page";
		}
	}
	return 0;
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
	if (fstat(s->fd, &sb)) {
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
	if ((rc = meta_read(s, m, rec, mrc, why)))
		goto fail;
	if (mrc[0] == MS_EVERSION || mrc[1] == MS_EVERSION) {
		rc = err_set(MS_EVERSION, "open %s: format version %u is newer than this library's %u", path,
		             mrc[0] == MS_EVERSION ? m[0].version : m[1].version, MS_FORMAT_VERSION);
		goto fail;
	}
	int order[2], n_valid = 0;
	if (mrc[0] == 0 && mrc[1] == 0) {
		order[0] = m[0].txnid > m[1].txnid ? 0 : 1;
		order[1] = 1 - order[0];
		n_valid = 2;
	} else if (mrc[0] == 0 || mrc[1] == 0) {
		order[0] = mrc[0] == 0 ? 0 : 1;
		n_valid = 1;
	}
	if (n_valid == 0) {
		rc = err_set(MS_ECORRUPT, "open %s: not a valid store (meta page 0: %s; meta page 1: %s)", path,
		             why[0], why[1]);
		goto fail;
	}
	/* It is a store: join the processes that have it open (lock file, reader table). */
	bool first;
	if ((rc = lock_open(s, &first)))
		goto fail;
	if ((rc = map_open(s)))
		goto fail;
	uint64_t region_end = s->file_size / MS_ALIGN * MS_ALIGN;
	if (s->capacity && region_end > s->capacity)
		region_end = m[order[0]].heap_end > s->capacity ? m[order[0]].heap_end : s->capacity / MS_ALIGN * MS_ALIGN;
	const struct disk_meta *chosen = NULL, *damaged = NULL;
	bool ckpt_used = false;
	for (int k = 0; k < n_valid; k++) {
		const struct disk_meta *mk = &m[order[k]];
		const char *rwhy;
		if (first && meta_record_check(s->base, mk, rec[order[k]], &rwhy)) {
			/* The newest commit was cut short by a crash (its one sync did not finish): the one
			 * before it is durable. Its page is erased by the first writer (erase_cut_short).
			 * Nobody else has the store open or can open it until lock_ready. (A process that
			 * is not the first reads the meta pages again below: others may have committed
			 * since they were read, and reused what the older one lists.) */
			rc = err_set(MS_ECORRUPT, "open %s: meta page %d: %s", path, order[k], rwhy);
			continue;
		}
		if ((o->flags & MS_READONLY) || !first) {
			/* Recovery is for the first process only; the others take the store as it is and
			 * build their allocator under the writer lock when they first write. */
			chosen = mk;
			break;
		}
		rc = recover_alloc(s, mk, region_end < mk->heap_end ? mk->heap_end : region_end, &ckpt_used);
		if (rc == 0) {
			chosen = mk;
			break;
		}
		if (rc != MS_ECORRUPT)
			goto fail;
		/* The newest commit is damaged (a crash without syncs): fall back to the one before. */
		if (mk->flags & MS_META_NOSYNC)
			damaged = mk;
	}
	if (!chosen)
		goto fail;
	if (damaged) {
		/* Nobody may adopt it later (a reader picks the newest valid meta page): erase it. Only a
		 * meta written without syncs is erased; any other damage is left as it is. */
		if (sys_pwrite_full(s->fd, zero_page, MS_PAGE, (damaged->txnid % 2) * MS_PAGE) ||
		    ms_sys.fdatasync(s->fd)) {
			rc = err_errno(MS_EIO, errno, "erase the damaged meta page of %s", path);
			goto fail;
		}
	}
	s->hash_seed = chosen->hash_seed;
	s->created = chosen->created;
	snap_from_meta(&s->cur, chosen);
	if (!first) {
		/* The newest commit now, read afresh: taken with its record matching unless published. */
		struct snap now;
		int r = MS_NOTFOUND;
		for (int tries = 0; r == MS_NOTFOUND && tries < 1000; tries++)
			r = store_snap(s, 0, &now);
		if (r) {
			rc = r == MS_NOTFOUND ? err_set(MS_ECORRUPT, "open %s: no meta page holds a whole commit", path) : r;
			goto fail;
		}
		s->cur = now;
	}
	if (s->alloc && !ckpt_used)
		s->cur.ckpt_off = s->cur.ckpt_len = 0; /* not loaded: not booked, so nothing to release */
	if (first)
		atomic_store(&s->lf->txnid, s->cur.txnid);
	s->synced_txnid = s->cur.txnid;
	if (s->alloc) {
		s->alloc_txnid = chosen->txnid;
		s->ckpt_on_disk = ckpt_used;
		s->file_size = region_end < chosen->heap_end ? chosen->heap_end : region_end;
		/* Whoever wrote the file last may have left stale blocks in free space (an unclean end,
		 * or a session in the default mode, which does not invalidate what it frees). */
		if ((s->flags & MS_NOSYNC) && (rc = store_scrub(s)))
			goto fail;
	}
	lock_ready(s);
	*out = s;
	return 0;
fail:
	if (s->alloc)
		alloc_destroy(s->alloc);
	map_close(s);
	lock_close(s);
	if (s->fd >= 0)
		ms_sys.close(s->fd);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->maplock);
	pthread_mutex_destroy(&s->synclock);
	quar_drop(s);
	free(s->path);
	free(s);
	return rc;
}

/* ---- close ---- */

/* Write the allocator's state into a heap block and publish it with a meta page, so the next open
 * scans nothing. Failing here costs only that scan. */
static int write_checkpoint(ms_store *s)
{
	if (s->flags & MS_NOSYNC) {
		/* Empty the quarantine first, so the checkpoint describes all free space as free. */
		int rc = quar_flush(s, "close");
		if (rc)
			return rc;
	}
	readers_release_pending(s);
	if (s->alloc_distrust)
		return 0; /* never publish an allocator that disagrees with the index */
	/* The block: the blob's length (8 bytes), the blob, zero padding. It is booked in the blob itself
	 * as allocated with `cap` bytes; the loader frees it after loading (I6). */
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
	st.txnid++;
	st.heap_end = s->file_size;
	st.flags = 0;
	uint64_t h = blob_hash(s->base + off, cap);
	if (ms_sys.fdatasync(s->fd))
		return err_errno(MS_EIO, errno, "fdatasync %s (checkpoint)", s->path);
	if ((rc = store_write_meta(s, &st, NULL, 0, off, cap, h, st.txnid)))
		return rc;
	if (ms_sys.fdatasync(s->fd))
		return err_errno(MS_EIO, errno, "fdatasync %s (close)", s->path);
	readers_note_commit(s, st.txnid, 0);
	st.ckpt_off = off;
	st.ckpt_len = cap;
	s->cur = st;
	s->alloc_txnid = st.txnid;
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
	else if (!(s->flags & MS_READONLY) && !s->failed && s->lf && lock_alone(s) && lock_writer(s, &died) == 0) {
		if ((rc = map_check_size(s)) == 0 && store_writer_sync(s) == 0 && !s->ckpt_on_disk) {
			rc = write_checkpoint(s);
			if (rc != MS_EIO)
				rc = 0; /* no room or memory for a checkpoint: the next open rebuilds instead */
		}
		unlock_writer(s);
	}
	if (s->alloc)
		alloc_destroy(s->alloc);
	pending_drop_all(s);
	map_close(s);
	lock_close(s);
	if (s->fd >= 0 && ms_sys.close(s->fd) && !rc)
		rc = err_errno(MS_EIO, errno, "close %s", s->path);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->maplock);
	pthread_mutex_destroy(&s->synclock);
	quar_drop(s);
	free(s->path);
	free(s);
	return rc;
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
		int rc = store_nosync_point(s, "ms_sync");
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
