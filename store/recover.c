/* store/recover.c - bringing the allocator back to a committed state: at the first open after
 * everyone closed (the clean-close checkpoint, or a rebuild from the index after anything unclean),
 * and for a writer whose allocator does not describe the newest commit (another process committed,
 * a writer died, the allocator was distrusted): a rebuild from the newest commit's index plus every
 * live reader's snapshot. Also erasing a commit a crash cut short, and, under MS_NOSYNC, scrubbing
 * the free space of a rebuilt allocator.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static const uint8_t zero_page[MS_PAGE];

/* Bring the allocator to the state of meta m: its checkpoint when it is the clean-close one, else a
 * rebuild from the index (I6). Space an uncommitted transaction held is free again by construction. */
static int recover_alloc(ms_store *s, const struct disk_meta *m, uint64_t region_end, bool *ckpt_used)
{
	*ckpt_used = false;
	struct alloc *a;
	const char *cwhy;
	if (m->ckpt_len && ckpt_load(s->base, m, &a, &cwhy) == 0) {
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
	struct ictx c = { .base = s->base, .heap_end = m->heap_end };
	struct rebuild rb;
	memset(&rb, 0, sizeof rb);
	uint64_t bad = 0;
	const char *why = NULL;
	int rc = index_collect(&c, m->root, m->hash_seed, (m->flags & MS_META_NOSYNC) != 0, &rb, &bad, &why);
	if (rc == 0 && (rb.objects != m->objects || rb.live_bytes != m->live_bytes ||
	                rb.obj_bytes != m->obj_bytes || rb.node_bytes != m->node_bytes)) {
		rc = MS_ECORRUPT;
		why = "the meta page's totals disagree with the index";
	}
	if (rc == 0) {
		int ar = alloc_rebuild(MS_HEAP_START, region_end, rb.b.v, rb.b.len, &s->alloc);
		if (ar) {
			rc = ar == ALLOC_ENOMEM ? MS_ENOMEM : MS_ECORRUPT;
			why = "index blocks overlap or cannot be placed";
		}
	}
	blocks_free(&rb.b);
	if (rc == MS_ECORRUPT)
		err_set(rc, "%s: commit %llu is damaged at offset %llu: %s", s->path,
		        (unsigned long long)m->seq, (unsigned long long)bad, why ? why : "?");
	return rc;
}

static int cmp_off(const void *a, const void *b)
{
	const struct alloc_block *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
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
	int rc = index_collect(&c, cur->root, s->hash_seed, false, &rb, &bad, &why);
	if (rc == 0 && (rb.objects != cur->objects || rb.live_bytes != cur->live_bytes ||
	                rb.obj_bytes != cur->obj_bytes || rb.node_bytes != cur->node_bytes)) {
		rc = MS_ECORRUPT; /* I7: the allocator would not describe what the meta says */
		why = "the meta page's totals disagree with the index";
	}
	if (rc == 0 && cur->ckpt_off) /* the newest meta still points at its checkpoint: keep it */
		rc = blocks_push(&rb.b, cur->ckpt_off, cur->ckpt_len);
	size_t n_cur = rb.b.len;
	unsigned hi = atomic_load(&s->lf->slots_hi);
	for (unsigned i = 0; rc == 0 && i < hi && i < MS_READER_SLOTS; i++) {
		struct reader_slot *r = &s->lf->slots[i];
		uint64_t rt = atomic_load(&r->seq);
		if (!atomic_load(&r->pid) || rt == 0 || rt == cur->seq)
			continue;
		uint64_t rheap, rroot = readers_root(r, &rheap);
		if (rheap > region_end)
			rheap = region_end; /* the lock file is shared memory: never read past the file */
		struct ictx rc_ctx = { .base = s->base, .heap_end = rheap };
		struct rebuild extra;
		memset(&extra, 0, sizeof extra);
		rc = index_collect(&rc_ctx, rroot, s->hash_seed, false, &extra, &bad, &why);
		if (rc == MS_ECORRUPT && atomic_load(&r->seq) != rt) {
			/* The slot changed hands while we walked (an old id seen just as it was reset):
			 * that snapshot is gone, nothing of it needs keeping. */
			rc = 0;
			extra.b.len = 0;
		}
		for (size_t k = 0; rc == 0 && k < extra.b.len; k++)
			rc = blocks_push(&rb.b, extra.b.v[k].off, extra.b.v[k].size);
		blocks_free(&extra.b);
	}
	/* What the newest commit reaches, taken before sorting mixes it with what only readers see. */
	struct pending *p = NULL;
	struct table inc;
	table_init(&inc);
	for (size_t k = 0; k < n_cur && rc == 0; k++)
		rc = table_put(&inc, rb.b.v[k].off, 1);
	if (rc == 0 && rb.b.len > n_cur) {
		/* Blocks several snapshots share appear more than once: keep one of each. */
		qsort(rb.b.v, rb.b.len, sizeof *rb.b.v, cmp_off);
		size_t w = 0;
		for (size_t k = 0; k < rb.b.len; k++) {
			if (w && rb.b.v[w - 1].off == rb.b.v[k].off)
				continue;
			rb.b.v[w++] = rb.b.v[k];
		}
		rb.b.len = w;
		if ((p = calloc(1, sizeof *p)) == NULL)
			rc = MS_ENOMEM;
		if (p)
			p->seq = cur->seq + 1;     /* conservative: readers older than the newest pin it */
		for (size_t k = 0; k < rb.b.len && rc == 0; k++) {
			if (table_get(&inc, rb.b.v[k].off))
				continue;
			rc = blocks_push(&p->blocks, rb.b.v[k].off, rb.b.v[k].size);
			p->bytes += alloc_round(rb.b.v[k].size);
		}
	}
	table_free(&inc);
	struct alloc *a = NULL;
	if (rc == 0) {
		int ar = alloc_rebuild(MS_HEAP_START, region_end, rb.b.v, rb.b.len, &a);
		if (ar)
			rc = ar == ALLOC_ENOMEM ? MS_ENOMEM : err_set(MS_ECORRUPT, "%s: the index's blocks overlap", s->path);
	} else if (rc == MS_ECORRUPT) {
		err_set(rc, "%s: commit %llu is damaged at offset %llu: %s", s->path,
		        (unsigned long long)cur->commit_id, (unsigned long long)bad, why ? why : "?");
	}
	blocks_free(&rb.b);
	if (rc) {
		if (p)
			blocks_free(&p->blocks);
		free(p);
		return rc;
	}
	if (s->alloc)
		alloc_destroy(s->alloc);
	s->alloc = a;
	space_drop_pending(s);
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
int recover_scrub(ms_store *s)
{
	pthread_mutex_lock(&s->synclock);
	int rc = space_sync_point(s, "before scrubbing free space");
	if (rc == 0) {
		alloc_free_each(s->alloc, scrub_range, s);
		rc = space_sync_point(s, "scrubbed free space");
	}
	pthread_mutex_unlock(&s->synclock);
	return rc;
}

/* Under the writer lock, with cur the newest commit snap_read takes: a valid, unpublished meta with
 * a commit record on the other page, newer than cur, is a commit a crash cut short (its record does
 * not match). Erase it before anything is written, so that no commit writing the same bytes at the
 * same places can make it whole again. */
static int erase_cut_short(ms_store *s, const struct snap *cur)
{
	uint64_t page = (cur->seq + 1) % 2;
	struct disk_meta om;
	memcpy(&om, s->base + page * MS_PAGE, sizeof om);
	const char *why;
	if (meta_check(&om, cur->heap_end > om.heap_end ? cur->heap_end : om.heap_end, &why) ||
	    om.seq % 2 != page || om.seq <= cur->seq || !om.rec_count || om.hash_seed != s->hash_seed ||
	    om.seq <= atomic_load(&s->lf->seq))
		return 0;
	if (sys_pwrite_full(s->fd, zero_page, MS_PAGE, page * MS_PAGE) || ms_sys.fdatasync(s->fd)) {
		s->failed = MS_EIO;
		return err_errno(MS_EIO, errno, "erase the meta page of an unfinished commit in %s", s->path);
	}
	return 0;
}

int recover_writer(ms_store *s)
{
	struct snap cur;
	int rc = MS_NOTFOUND;
	for (int tries = 0; rc == MS_NOTFOUND && tries < 3; tries++)
		rc = snap_read(s, 0, &cur); /* under the writer lock nobody rewrites a meta page */
	if (rc)
		return rc == MS_NOTFOUND ? err_set(MS_ECORRUPT, "%s: no valid meta page", s->path) : rc;
	if ((rc = erase_cut_short(s, &cur)))
		return rc;
	/* What this handle builds on is the newest commit on the disk, even when it once took a newer
	 * one: a commit cut short, or one whose meta sync failed and whose page was put back. */
	pthread_mutex_lock(&s->lock);
	if (s->cur.seq > cur.seq)
		s->cur = cur;
	pthread_mutex_unlock(&s->lock);
	if (s->alloc && cur.seq == s->alloc_seq && !s->alloc_distrust)
		return 0;
	struct stat sb;
	if (ms_sys.fstat(s->fd, &sb))
		return err_errno(MS_EIO, errno, "stat %s", s->path);
	uint64_t fsize = (uint64_t)sb.st_size / MS_ALIGN * MS_ALIGN;
	if (fsize < cur.heap_end)
		return err_set(MS_ECORRUPT, "%s: the file is shorter than its heap", s->path);
	if ((rc = map_extend(s, fsize)))
		return rc;
	/* A writer that died between its meta page and publishing it left the newest id behind: move it
	 * forward before scanning the readers, so a reader that starts now takes the newest commit
	 * (or is seen by the scan: the same handshake as at every commit). */
	if (atomic_load(&s->lf->seq) < cur.seq)
		atomic_store(&s->lf->seq, cur.seq);
	if ((rc = writer_rebuild(s, &cur, fsize)))
		return rc;
	/* The rebuild booked the checkpoint block the newest meta points at: the next commit frees it. */
	pthread_mutex_lock(&s->lock);
	s->cur.ckpt_off = cur.ckpt_off;
	s->cur.ckpt_len = cur.ckpt_len;
	pthread_mutex_unlock(&s->lock);
	s->file_size = fsize;
	s->alloc_seq = cur.seq;
	s->alloc_distrust = false;
	s->ckpt_on_disk = false;
	if (s->flags & MS_NOSYNC) {
		space_quar_drop(s); /* its blocks are free in the new allocator, or live */
		rc = recover_scrub(s);
	}
	if (rc == 0)
		space_audit(s, "after the writer's rebuild");
	return rc;
}

int recover_open(ms_store *s, const struct disk_meta m[2], struct disk_rec rec[2][MS_REC_MAX],
                 const int order[2], int n_valid, bool first, uint64_t region_end,
                 const struct disk_meta **out, bool *ckpt_used)
{
	int rc = MS_ECORRUPT;
	const struct disk_meta *chosen = NULL, *damaged = NULL;
	for (int k = 0; k < n_valid; k++) {
		const struct disk_meta *mk = &m[order[k]];
		const char *rwhy;
		if (first && meta_record_check(s->base, mk, rec[order[k]], &rwhy)) {
			/* The newest commit was cut short by a crash (its one sync did not finish): the one
			 * before it is durable. Its page is erased by the first writer (erase_cut_short).
			 * Nobody else has the store open or can open it until readers_ready. (A process that
			 * is not the first reads the meta pages again below: others may have committed
			 * since they were read, and reused what the older one lists.) */
			rc = err_set(MS_ECORRUPT, "open %s: meta page %d: %s", s->path, order[k], rwhy);
			continue;
		}
		if ((s->flags & MS_READONLY) || !first) {
			/* Recovery is for the first process only; the others take the store as it is and
			 * build their allocator under the writer lock when they first write. */
			chosen = mk;
			break;
		}
		rc = recover_alloc(s, mk, region_end < mk->heap_end ? mk->heap_end : region_end, ckpt_used);
		if (rc == 0) {
			chosen = mk;
			break;
		}
		if (rc != MS_ECORRUPT)
			return rc;
		/* The newest commit is damaged (a crash without syncs): fall back to the one before. */
		if (mk->flags & MS_META_NOSYNC)
			damaged = mk;
	}
	if (!chosen)
		return rc;
	if (damaged) {
		/* Nobody may adopt it later (a reader picks the newest valid meta page): erase it. Only a
		 * meta written without syncs is erased; any other damage is left as it is. */
		if (sys_pwrite_full(s->fd, zero_page, MS_PAGE, (damaged->seq % 2) * MS_PAGE) ||
		    ms_sys.fdatasync(s->fd)) {
			rc = err_errno(MS_EIO, errno, "erase the damaged meta page of %s", s->path);
			return rc;
		}
	}
	*out = chosen;
	return 0;
}
