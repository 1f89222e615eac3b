/* store/txn.c - transactions and snapshots: one writer at a time, readers on the committed state they
 * began with, space freed by a commit reused only once no open snapshot can see it, and the commit
 * itself (data durable, then the meta page that publishes it). Also the iterator.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Room kept for deletes when the store is at its capacity: a delete copies a path of nodes, and a
 * full store must still take deletes (the contract). Puts fail with MS_ENOSPC before eating it. */
#define DEL_RESERVE (256ull << 10)
/* Without a capacity the file is grown ahead to keep more free: that free tail is also where new
 * size-class runs go, and while it can host them they never split a hole a deleted object left. */
#define DISK_RESERVE (1ull << 20)

static _Thread_local char txn_me;
uintptr_t txn_self(void) { return (uintptr_t)&txn_me; }

/* ---- space ---- */

/* ---- MS_NOSYNC quarantine (see struct ms_store) ----
 *
 * Without syncs the disk may hold any mix of the page versions written since the last sync. Two
 * things keep every image at one whole commit: the synced meta's tree is never overwritten before the
 * next sync (a freed block is reused only two syncs later), and a reused block's old content fails
 * its check wherever the new content did not reach the disk (its first 8 bytes were zeroed, and that
 * made durable, before reuse: a node then has bitmap 0, an object klen 0). */

/* The quarantine may hold this much before a commit syncs by itself to get the space back (the file
 * then carries about twice this much that waits: held, then zeroed). */
static uint64_t quar_limit(const ms_store *s)
{
	uint64_t l = s->file_size / 8;
	return l > (64ull << 20) ? l : 64ull << 20;
}

static int quar_push(struct quar *q, uint64_t off, uint64_t size, uint64_t gen)
{
	if (q->len == q->cap && q->head) {
		memmove(q->v, q->v + q->head, (q->len - q->head) * sizeof *q->v);
		q->len -= q->head;
		q->head = 0;
	}
	if (q->len == q->cap) {
		size_t ncap = q->cap ? q->cap * 2 : 256;
		struct quar_ent *v = realloc(q->v, ncap * sizeof *v);
		if (!v)
			return MS_ENOMEM;
		q->v = v;
		q->cap = ncap;
	}
	q->v[q->len++] = (struct quar_ent){ off, size, gen };
	return 0;
}

/* Under s->lock. A block that cannot be queued is leaked; the allocator is rebuilt before the next
 * write (and rebuilt free space is scrubbed), so nothing is lost for good. */
static void quar_hold_locked(ms_store *s, uint64_t off, uint64_t size)
{
	if (quar_push(&s->q_held, off, size, s->sync_gen))
		s->alloc_distrust = true;
	else
		s->quar_bytes += alloc_round(size);
}

void quar_add(ms_store *s, uint64_t off, uint64_t size, bool fresh)
{
	pthread_mutex_lock(&s->lock);
	if (!fresh) {
		quar_hold_locked(s, off, size);
	} else {
		/* Never committed: no snapshot and no meta can reach it, so it is invalidated at once;
		 * the gen is read after the zeroing, so a sync that covers it covers the zeroing too. */
		memset(s->base + off, 0, 8);
		if (quar_push(&s->q_zeroed, off, size, s->sync_gen))
			s->alloc_distrust = true;
		else
			s->quar_bytes += alloc_round(size);
	}
	pthread_mutex_unlock(&s->lock);
}

void quar_drop(ms_store *s)
{
	free(s->q_held.v);
	free(s->q_zeroed.v);
	memset(&s->q_held, 0, sizeof s->q_held);
	memset(&s->q_zeroed, 0, sizeof s->q_zeroed);
	s->quar_bytes = 0;
}

/* Writer context, under s->lock: move on what the last completed sync covers. Zeroed blocks go to the
 * allocator; held ones are out of every tree a durable meta points at now, so they are zeroed and wait
 * for one more sync. */
static void quar_advance_locked(ms_store *s)
{
	uint64_t done = s->synced_gen;
	struct quar *z = &s->q_zeroed, *h = &s->q_held;
	while (z->head < z->len && z->v[z->head].gen < done) {
		struct quar_ent *e = &z->v[z->head++];
		s->quar_bytes -= alloc_round(e->size);
		if (alloc_free(s->alloc, e->off, e->size))
			s->alloc_distrust = true;
	}
	if (z->head == z->len)
		z->head = z->len = 0;
	while (h->head < h->len && h->v[h->head].gen < done) {
		struct quar_ent *e = &h->v[h->head++];
		memset(s->base + e->off, 0, 8);
		/* gen: the sync after the one in progress, if any, is the one that covers the zeroing */
		if (quar_push(z, e->off, e->size, s->sync_gen)) {
			s->quar_bytes -= alloc_round(e->size);
			s->alloc_distrust = true;
		}
	}
	if (h->head == h->len)
		h->head = h->len = 0;
}

int store_nosync_point(ms_store *s, const char *what)
{
	pthread_mutex_lock(&s->lock);
	uint64_t gen = ++s->sync_gen, txnid = s->cur.txnid;
	pthread_mutex_unlock(&s->lock);
	if (ms_sys.fdatasync(s->fd)) {
		int e = errno;
		s->failed = MS_EIO;
		return err_errno(MS_EIO, e, "fdatasync %s (%s); the store refuses commits until reopened", s->path,
		                 what);
	}
	pthread_mutex_lock(&s->lock);
	if (txnid > s->synced_txnid)
		s->synced_txnid = txnid;
	if (gen > s->synced_gen)
		s->synced_gen = gen;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void readers_release_pending(ms_store *s)
{
	uint64_t oldest = readers_oldest(s); /* every process's readers */
	bool nosync = (s->flags & MS_NOSYNC) != 0;
	pthread_mutex_lock(&s->lock);
	if (nosync)
		quar_advance_locked(s);
	/* Blocks freed by commit N are visible to snapshots older than N only. */
	while (s->pending && s->pending->txnid <= oldest) {
		struct pending *p = s->pending;
		s->pending = p->next;
		if (!s->pending)
			s->pending_tail = NULL;
		for (size_t i = 0; i < p->blocks.len; i++) {
			if (nosync) {
				quar_hold_locked(s, p->blocks.v[i].off, p->blocks.v[i].size);
				continue;
			}
			/* A committed block the allocator does not hold: the file's index and the
			 * allocator (from a checkpoint that lied) disagree. Bad data, not our logic:
			 * the allocator is rebuilt from the index before the next write. */
			if (alloc_free(s->alloc, p->blocks.v[i].off, p->blocks.v[i].size))
				s->alloc_distrust = true;
		}
		s->pinned_bytes -= p->bytes;
		blocks_free(&p->blocks);
		free(p);
	}
	pthread_mutex_unlock(&s->lock);
}

int quar_flush(ms_store *s, const char *what)
{
	readers_release_pending(s);
	pthread_mutex_lock(&s->synclock);
	int rc = store_nosync_point(s, what);
	if (rc == 0) {
		readers_release_pending(s);
		rc = store_nosync_point(s, what);
	}
	pthread_mutex_unlock(&s->synclock);
	if (rc == 0)
		readers_release_pending(s);
	return rc;
}

int txn_alloc(struct ms_txn *t, uint64_t size, int kind, uint64_t *off)
{
	ms_store *s = t->s;
	int rc = alloc_alloc(s->alloc, size, off);
	if (rc == ALLOC_ENOSPC) {
		readers_release_pending(s);
		rc = alloc_alloc(s->alloc, size, off);
	}
	if (rc == ALLOC_ENOSPC) {
		/* Grow by at least the block plus a run's worth, so a new size-class run fits too. */
		int g = map_grow(s, s->file_size + alloc_round(size) + (128ull << 10));
		if (g == MS_ENOSPC)
			g = map_grow(s, s->file_size + alloc_round(size));
		if (g == MS_ENOSPC && s->quar_bytes) {
			/* Full: take the quarantine back (two syncs) rather than fail. */
			if ((rc = quar_flush(s, "reclaim space")))
				return rc;
			if ((rc = alloc_alloc(s->alloc, size, off)) == 0)
				goto got;
			g = map_grow(s, s->file_size + alloc_round(size));
		}
		if (g)
			return g;
		t->base = s->base;
		t->snap.heap_end = s->file_size;
		rc = alloc_alloc(s->alloc, size, off);
	}
got:
	if (rc == ALLOC_ENOSPC)
		return err_set(MS_ENOSPC, "%s: no free block of %llu bytes", s->path, (unsigned long long)size);
	if (rc)
		return rc == ALLOC_ENOMEM ? MS_ENOMEM : MS_EINVAL;
	if (table_put(&t->fresh, *off, size | (uint64_t)kind << FRESH_KIND_SHIFT)) {
		alloc_free(s->alloc, *off, size);
		return MS_ENOMEM;
	}
	return 0;
}

/* Must a fresh block (table value v) that is let go wait in the MS_NOSYNC quarantine? Only an object
 * whose checksum was written at the put: its old bytes would pass their check if a later commit's new
 * content at that offset never reached the disk. A node gets its checksum at commit and a reserved
 * value at commit, so their bytes fail every check until then: they can be reused at once. */
static bool fresh_needs_quarantine(const ms_store *s, uint64_t v)
{
	return (s->flags & MS_NOSYNC) && (v >> FRESH_KIND_SHIFT) == FRESH_OBJ;
}

void txn_release(struct ms_txn *t, uint64_t off, uint64_t size)
{
	const uint64_t *fv = table_get(&t->fresh, off);
	bool quarantine = fv && fresh_needs_quarantine(t->s, *fv);
	if (table_del(&t->fresh, off)) {
		if (quarantine) {
			quar_add(t->s, off, size, true);
			return;
		}
		int rc = alloc_free(t->s->alloc, off, size);
		ms_assert(rc == 0);
		(void)rc;
		return;
	}
	/* Committed: reusable only after this commit and once no snapshot sees it. Room was reserved by
	 * txn_reserve_freed, so this cannot fail. */
	int rc = blocks_push(&t->freed, off, size);
	ms_assert(rc == 0);
	(void)rc;
}

/* Before a put: keep room for deletes. A delete copies the path of nodes it changes, and a transaction
 * that deletes much copies much of the index (each node at most once). With a capacity, puts are
 * budgeted by object bytes plus IDX_PER_OBJ per object (an index averages about 12 bytes per object,
 * so half the budget covers a copy of the whole index), plus DEL_RESERVE: any delete-only transaction
 * then fits in a full store, and afterwards exactly the objects it deleted fit again, whatever shape
 * the index takes. Without a capacity the limit is the disk, which can only be learnt by growing: the
 * file is grown ahead so that DISK_RESERVE stays free. */
#define IDX_PER_OBJ 32u
static int txn_room(struct ms_txn *t, uint64_t obj_bytes)
{
	ms_store *s = t->s;
	if (s->capacity) {
		uint64_t budget = s->capacity - MS_HEAP_START;
		uint64_t want = t->snap.obj_bytes + obj_bytes + IDX_PER_OBJ * (t->snap.objects + 1) + DEL_RESERVE;
		if (want > budget)
			return err_set(MS_ENOSPC, "%s: capacity of %llu bytes reached", s->path,
			               (unsigned long long)s->capacity);
		return 0;
	}
	uint64_t need = obj_bytes + 16 * node_size(MS_FANOUT);
	uint64_t free_bytes = alloc_free_bytes(s->alloc);
	if (free_bytes >= need + DISK_RESERVE)
		return 0;
	readers_release_pending(s);
	free_bytes = alloc_free_bytes(s->alloc);
	if (free_bytes >= need + DISK_RESERVE)
		return 0;
	int rc = map_grow(s, s->file_size + need + DISK_RESERVE - free_bytes);
	if (rc == MS_ENOSPC && s->quar_bytes) {
		if ((rc = quar_flush(s, "reclaim space")))
			return rc;
		free_bytes = alloc_free_bytes(s->alloc);
		if (free_bytes >= need + DISK_RESERVE)
			return 0;
		rc = map_grow(s, s->file_size + need + DISK_RESERVE - free_bytes);
	}
	if (rc)
		return rc;
	t->base = s->base;
	t->snap.heap_end = s->file_size;
	return 0;
}

/* Make sure an operation's releases fit in t->freed without an allocation failure midway. */
static int txn_reserve_freed(struct ms_txn *t)
{
	size_t need = t->freed.len + 3 * (MS_MAX_DEPTH + 2);
	if (need <= t->freed.cap)
		return 0;
	size_t ncap = t->freed.cap ? t->freed.cap : 64;
	while (ncap < need)
		ncap *= 2;
	struct alloc_block *v = realloc(t->freed.v, ncap * sizeof *v);
	if (!v)
		return MS_ENOMEM;
	t->freed.v = v;
	t->freed.cap = ncap;
	return 0;
}

/* ---- begin / end ---- */

static void txn_link(ms_store *s, struct ms_txn *t)
{
	t->prev = NULL;
	t->next = s->txns;
	if (s->txns)
		s->txns->prev = t;
	s->txns = t;
}

static void txn_unlink(ms_store *s, struct ms_txn *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		s->txns = t->next;
	if (t->next)
		t->next->prev = t->prev;
}

int ms_txn_begin(ms_store *s, unsigned flags, ms_txn **out)
{
	if (!s || !out || (flags & ~MS_READONLY))
		return err_set(MS_EINVAL, "ms_txn_begin: bad argument");
	if (map_faulted(s))
		return map_fault_error(s);
	struct ms_txn *t = calloc(1, sizeof *t);
	if (!t)
		return MS_ENOMEM;
	t->s = s;
	if (flags & MS_READONLY) {
		t->rdonly = true;
		int rc = reader_claim(s, &t->slot);
		if (rc) {
			free(t);
			return rc;
		}
		/* Take the newest snapshot, publish it in the slot, then read the newest id again: a writer
		 * that scans the table after our store sees us and keeps what we may read; one that
		 * committed before it makes us try again (seq_cst on both sides, Dekker-style). */
		for (unsigned tries = 0;; tries++) {
			uint64_t id = atomic_load(&s->lf->txnid);
			rc = store_snap(s, id, &t->snap);
			if (rc == MS_NOTFOUND) {
				/* A MS_NOSYNC commit (of any process) may overwrite the newest meta's page
				 * at once (the other page keeps the synced one): take the commit whose
				 * meta is out but whose id is not published yet. Safe: a commit after it
				 * publishes its id before it scans the readers, and the check below sees
				 * that id; and such a commit cannot fail any more once its meta is out (no
				 * sync follows). A durable commit's meta is never taken this way: its
				 * sync may still fail and take it back. */
				struct snap sn;
				if (store_snap(s, 0, &sn) == 0 && sn.txnid > id && (sn.flags & MS_META_NOSYNC)) {
					t->snap = sn;
					rc = 0;
				}
			}
			if (rc == 0) {
				reader_publish(t->slot, &t->snap);
				if (atomic_load(&s->lf->txnid) <= t->snap.txnid) /* == id unless taken above */
					break;
				atomic_store(&t->slot->txnid, 0);
			} else if (rc != MS_NOTFOUND || tries > 1000) {
				reader_release(t->slot);
				free(t);
				return rc == MS_NOTFOUND ? err_set(MS_ECORRUPT, "%s: no meta page holds commit %llu",
				                                   s->path, (unsigned long long)id) : rc;
			}
		}
		if (map_faulted(s)) { /* the meta pages were read from a truncated file */
			reader_release(t->slot);
			free(t);
			return map_fault_error(s);
		}
		pthread_mutex_lock(&s->lock);
		t->base = s->base;
		txn_link(s, t);
		pthread_mutex_unlock(&s->lock);
		*out = t;
		return 0;
	}
	if (s->flags & MS_READONLY) {
		free(t);
		return err_set(MS_ERDONLY, "%s: opened read-only", s->path);
	}
	if (txn_own_writer(s)) {
		free(t);
		return err_set(MS_EBUSY, "%s: this thread already has a write transaction", s->path);
	}
	pthread_mutex_lock(&s->wlock);
	if (s->failed) {
		pthread_mutex_unlock(&s->wlock);
		free(t);
		return err_set(MS_EIO, "%s: an earlier sync failed; reopen the store", s->path);
	}
	int rc = map_check_size(s); /* a truncated file is caught here, before any fault */
	if (rc) {
		pthread_mutex_unlock(&s->wlock);
		free(t);
		return rc;
	}
	bool died;
	rc = lock_writer(s, &died);
	if (rc == 0 && (rc = store_writer_sync(s)))
		unlock_writer(s);
	if (rc) {
		pthread_mutex_unlock(&s->wlock);
		free(t);
		return rc;
	}
	readers_release_pending(s);
	table_init(&t->fresh);
	pthread_mutex_lock(&s->lock);
	t->snap = s->cur;
	t->snap.heap_end = s->file_size;
	t->base = s->base;
	txn_link(s, t);
	pthread_mutex_unlock(&s->lock);
	s->wtxn = t;
	atomic_store_explicit(&s->wtxn_owner, txn_self(), memory_order_relaxed);
	*out = t;
	return 0;
}

static void reader_end(struct ms_txn *t)
{
	ms_store *s = t->s;
	reader_release(t->slot);
	pthread_mutex_lock(&s->lock);
	txn_unlink(s, t);
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(&s->hits, t->hits, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->misses, t->misses, memory_order_relaxed);
	free(t);
}

static void writer_end(struct ms_txn *t)
{
	ms_store *s = t->s;
	table_free(&t->fresh);
	blocks_free(&t->freed);
	pthread_mutex_lock(&s->lock);
	txn_unlink(s, t);
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(&s->hits, t->hits, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->misses, t->misses, memory_order_relaxed);
	s->wtxn = NULL;
	atomic_store_explicit(&s->wtxn_owner, 0, memory_order_relaxed);
	if (s->alloc) {
		pthread_mutex_lock(&s->lock);
		alloc_stats(s->alloc, &s->astats);
		s->astats.used_bytes -= s->quar_bytes; /* quarantine counts as free (stats.c) */
		s->astats.free_bytes += s->quar_bytes;
		pthread_mutex_unlock(&s->lock);
	}
	unlock_writer(s);
	pthread_mutex_unlock(&s->wlock);
	free(t);
}

static void writer_discard(struct ms_txn *t)
{
	size_t pos = 0;
	uint64_t off, v;
	while (table_next(&t->fresh, &pos, &off, &v)) {
		if (fresh_needs_quarantine(t->s, v)) {
			quar_add(t->s, off, v & FRESH_SIZE_MASK, true);
			continue;
		}
		int rc = alloc_free(t->s->alloc, off, v & FRESH_SIZE_MASK);
		ms_assert(rc == 0);
		(void)rc;
	}
}

void ms_txn_abort(ms_txn *t)
{
	if (!t)
		return;
	if (t->rdonly) {
		reader_end(t);
		return;
	}
	writer_discard(t);
	writer_end(t);
}

void txn_end_all(ms_store *s)
{
	while (s->txns)
		ms_txn_abort(s->txns);
}

int store_write_meta(ms_store *s, const struct snap *st, const struct disk_rec *rec, uint64_t n_rec,
                     uint64_t ckpt_off, uint64_t ckpt_len, uint64_t ckpt_hash, uint64_t ckpt_txnid)
{
	struct {
		struct disk_meta m;
		struct disk_rec rec[MS_REC_MAX];
	} page;
	memset(&page.m, 0, sizeof page.m);
	struct disk_meta *m = &page.m;
	m->magic = MS_MAGIC;
	m->version = MS_FORMAT_VERSION;
	m->page_size = MS_PAGE;
	m->txnid = st->txnid;
	m->root = st->root;
	m->objects = st->objects;
	m->live_bytes = st->live_bytes;
	m->obj_bytes = st->obj_bytes;
	m->node_bytes = st->node_bytes;
	m->heap_end = st->heap_end;
	m->hash_seed = s->hash_seed;
	m->ckpt_off = ckpt_off;
	m->ckpt_len = ckpt_len;
	m->ckpt_hash = ckpt_hash;
	m->ckpt_txnid = ckpt_txnid;
	m->flags = st->flags;
	m->created = s->created;
	m->commit_id = st->commit_id;
	m->rec_count = n_rec;
	m->rec_hash = n_rec ? rec_hash(rec, n_rec * sizeof *rec) : 0;
	m->hash = meta_hash(m);
	if (n_rec)
		memcpy(page.rec, rec, n_rec * sizeof *rec);
	/* A record shorter than the last one on this page leaves stale entries past it: no reader looks
	 * past rec_count, and the meta's hash covers the count. */
	if (sys_pwrite_full(s->fd, &page, sizeof *m + n_rec * sizeof *rec, (st->txnid % 2) * MS_PAGE))
		return err_errno(MS_EIO, errno, "write meta page of %s", s->path);
	return 0;
}

/* The commit record of t: every block it wrote, with the hash of its bytes, into rec (MS_REC_MAX
 * entries). The number of entries, or 0 when they do not fit (the commit then syncs twice). */
static uint64_t txn_record(const struct ms_txn *t, struct disk_rec *rec)
{
	if (t->fresh.len > MS_REC_MAX || t->fresh.len == 0)
		return 0;
	uint64_t n = 0, total = 0;
	size_t pos = 0;
	uint64_t off, v;
	while (table_next(&t->fresh, &pos, &off, &v)) {
		uint64_t kind = v >> FRESH_KIND_SHIFT, len = v & FRESH_SIZE_MASK;
		if (kind == FRESH_BUCKET) { /* the spare slots past its count are not the bucket's */
			const struct disk_node *nd = (const struct disk_node *)(t->base + off);
			if (nd->bitmap <= (len - sizeof *nd) / 8)
				len = node_size(nd->bitmap);
		}
		if (len > MS_REC_MAX_BYTES - total)
			return 0;
		total += len;
		rec[n].off = off;
		rec[n].len = len;
		rec[n].hash = rec_hash(t->base + off, len);
		n++;
	}
	return n;
}

/* A failed sync is never retried: the pages it covered may be gone from the cache (fsyncgate). */
static int store_sync(ms_store *s, const char *what)
{
	if (ms_sys.fdatasync(s->fd) == 0)
		return 0;
	int e = errno;
	s->failed = MS_EIO;
	return err_errno(MS_EIO, e, "fdatasync %s (%s); the store refuses commits until reopened", s->path,
	                 what);
}

int ms_txn_commit(ms_txn *t)
{
	if (!t)
		return err_set(MS_EINVAL, "ms_txn_commit: NULL transaction");
	if (t->rdonly) {
		reader_end(t);
		return 0;
	}
	ms_store *s = t->s;
	int rc = 0;
	struct pending *p = NULL;
	bool synclocked = false;
	if (s->failed) {
		rc = err_set(MS_EIO, "%s: an earlier sync failed; reopen the store", s->path);
		goto discard;
	}
	if (t->fresh.len == 0 && t->freed.len == 0) {
		writer_end(t); /* nothing changed: no new commit */
		return 0;
	}
	/* Seal what this transaction wrote: nodes and reserved values get their checksums now. */
	size_t pos = 0;
	uint64_t off, v;
	while (table_next(&t->fresh, &pos, &off, &v)) {
		uint64_t kind = v >> FRESH_KIND_SHIFT, size = v & FRESH_SIZE_MASK;
		if (kind == FRESH_NODE || kind == FRESH_BUCKET) {
			struct disk_node *nd = (struct disk_node *)(t->base + off);
			unsigned n = (unsigned)((size - sizeof *nd) / 8);
			if (kind == FRESH_BUCKET && nd->bitmap <= n) /* a bucket's block has spare slots */
				n = nd->bitmap;
			nd->hash = block_hash(nd, n, kind == FRESH_BUCKET ? ENT_NODE | ENT_BUCKET : ENT_NODE);
		} else if (kind == FRESH_OBJ_UNHASHED) {
			struct disk_obj *o = (struct disk_obj *)(t->base + off);
			o->hash = obj_hash(o);
		}
	}
	struct snap next = t->snap;
	if (next.ckpt_off) {
		/* The new meta no longer points at the checkpoint: its block is free after this commit. */
		if ((rc = txn_reserve_freed(t)))
			goto discard;
		txn_release(t, next.ckpt_off, next.ckpt_len);
		next.ckpt_off = next.ckpt_len = 0;
	}
	/* t->snap began as the newest commit, and the writer lock kept it the newest. */
	next.txnid = t->snap.txnid + 1;
	next.commit_id = t->snap.commit_id + 1;
	next.heap_end = s->file_size;
	next.flags = (s->flags & MS_NOSYNC) ? MS_META_NOSYNC : 0;
	/* Never publish a commit into a file that was truncated under the store (its pages may have been
	 * written into zero pages that are not the file's). */
	if ((rc = map_check_size(s)))
		goto discard;
	/* The record of what this commit frees is made before anything is published: once the meta page
	 * is out, a failure could only leak those blocks (and a checkpoint would then disagree with
	 * the index). */
	if (t->freed.len && !(p = calloc(1, sizeof *p))) {
		rc = err_set(MS_ENOMEM, "%s: out of memory committing", s->path);
		goto discard;
	}
	bool durable = !(s->flags & MS_NOSYNC);
	/* A durable commit over one this handle made durable itself syncs once: its meta page lists what
	 * it wrote, and an open that finds a listed block other than listed takes the commit before,
	 * which that sync left intact on the disk. Otherwise (the first commit since open, one over
	 * another process's commit, or one too large to list) the data is synced before the meta. */
	struct disk_rec rec[MS_REC_MAX];
	uint64_t n_rec = durable && t->snap.txnid == s->durable_txnid ? txn_record(t, rec) : 0;
	if (durable && !n_rec && (rc = store_sync(s, "commit data")))
		goto discard;
	if (map_faulted(s)) {
		rc = map_fault_error(s);
		goto discard;
	}
	if (!durable) {
		/* No sync may run while the meta page is written and published: it must know which
		 * meta its fdatasync made durable. The synced meta's page is kept until the next sync
		 * (a commit takes txnid + 2 to stay on the other page), so a crash before that sync
		 * still finds it, whole. */
		pthread_mutex_lock(&s->synclock);
		synclocked = true;
		if (s->quar_bytes > quar_limit(s) && (rc = store_nosync_point(s, "quarantine")))
			goto discard;
		pthread_mutex_lock(&s->lock);
		next.txnid = t->snap.txnid + (t->snap.txnid == s->synced_txnid ? 1 : 2);
		pthread_mutex_unlock(&s->lock);
	}
	/* The page the new meta overwrites, so a failed meta sync can take the commit back (below). */
	uint8_t prev[MS_PAGE]; /* with its record */
	bool have_prev = durable && sys_pread_full(s->fd, prev, sizeof prev, (next.txnid % 2) * MS_PAGE) == 0;
	if ((rc = store_write_meta(s, &next, rec, n_rec, 0, 0, 0, 0))) {
		s->failed = MS_EIO;
		goto discard;
	}
	if (durable && (rc = store_sync(s, "commit meta"))) {
		/* MS_EIO says nothing of t is committed: put the previous meta back, so neither a reopen
		 * nor another process's writer builds on a commit whose durability is unknown. */
		if (have_prev)
			sys_pwrite_full(s->fd, prev, sizeof prev, (next.txnid % 2) * MS_PAGE);
		goto discard;
	}

	if (p) {
		p->txnid = next.txnid;
		p->blocks = t->freed;
		memset(&t->freed, 0, sizeof t->freed);
		for (size_t i = 0; i < p->blocks.len; i++)
			p->bytes += alloc_round(p->blocks.v[i].size);
	}
	readers_note_commit(s, next.txnid, p ? p->bytes : 0);
	s->alloc_txnid = next.txnid;
	if (durable)
		s->durable_txnid = next.txnid;
	pthread_mutex_lock(&s->lock);
	s->cur = next;
	if (durable)
		s->synced_txnid = next.txnid;
	if (p) {
		if (s->pending_tail)
			s->pending_tail->next = p;
		else
			s->pending = p;
		s->pending_tail = p;
		s->pinned_bytes += p->bytes;
	}
	pthread_mutex_unlock(&s->lock);
	if (synclocked)
		pthread_mutex_unlock(&s->synclock);
	s->ckpt_on_disk = false;
	readers_release_pending(s);
	writer_end(t);
	return 0;
discard:
	if (synclocked)
		pthread_mutex_unlock(&s->synclock);
	free(p);
	writer_discard(t);
	writer_end(t);
	return rc;
}

/* ---- operations ---- */

static int check_key(const void *key, size_t klen)
{
	if (!key || klen == 0 || klen > MS_MAXKEY)
		return err_set(MS_EINVAL, "key must be 1 to %u bytes (got %zu)", MS_MAXKEY, key ? klen : 0);
	return 0;
}

int ms_txn_get(ms_txn *t, const void *key, size_t klen, ms_val *val)
{
	if (!t || !val)
		return err_set(MS_EINVAL, "ms_txn_get: NULL argument");
	int rc = check_key(key, klen);
	if (rc)
		return rc;
	if (map_faulted(t->s))
		return map_fault_error(t->s);
	struct ictx c = ictx_of(t);
	const struct disk_obj *o;
	rc = index_get(&c, t->snap.root, key_hash(t->s->hash_seed, key, klen), key, klen, &o);
	if (rc == 0) {
		val->data = (const uint8_t *)(o + 1) + o->klen;
		val->len = (size_t)obj_vlen(o);
		t->hits++;
	} else if (rc == MS_NOTFOUND) {
		t->misses++;
	} else if (rc == MS_ECORRUPT) {
		if (map_faulted(t->s))
			return map_fault_error(t->s);
		err_set(rc, "%s: checksum or bounds check failed looking up a key", t->s->path);
	}
	return rc;
}

static int write_op(ms_txn *t, const void *key, size_t klen, size_t vlen, const void *val, void **dst)
{
	if (!t)
		return err_set(MS_EINVAL, "NULL transaction");
	if (t->rdonly)
		return err_set(MS_ERDONLY, "%s: write in a read-only transaction", t->s->path);
	int rc = check_key(key, klen);
	if (rc)
		return rc;
	if (vlen > MS_VLEN_MAX || (vlen && !val && !dst))
		return err_set(MS_EINVAL, "bad value (length %zu)", vlen);
	ms_store *s = t->s;
	if (map_faulted(s))
		return map_fault_error(s);
	if ((rc = txn_room(t, alloc_round(obj_size(klen, vlen)))))
		return rc;
	if ((rc = txn_reserve_freed(t)))
		return rc;
	rc = index_put(t, key_hash(s->hash_seed, key, klen), key, klen, vlen, dst, dst != NULL, val);
	return rc == MS_ECORRUPT && map_faulted(s) ? map_fault_error(s) : rc;
}

int ms_txn_put(ms_txn *t, const void *key, size_t klen, const void *val, size_t vlen)
{
	return write_op(t, key, klen, vlen, val, NULL);
}

int ms_txn_reserve(ms_txn *t, const void *key, size_t klen, size_t vlen, void **dst)
{
	if (!dst)
		return err_set(MS_EINVAL, "ms_txn_reserve: NULL dst");
	return write_op(t, key, klen, vlen, NULL, dst);
}

int ms_txn_del(ms_txn *t, const void *key, size_t klen)
{
	if (!t)
		return err_set(MS_EINVAL, "NULL transaction");
	if (t->rdonly)
		return err_set(MS_ERDONLY, "%s: delete in a read-only transaction", t->s->path);
	int rc = check_key(key, klen);
	if (rc)
		return rc;
	if (map_faulted(t->s))
		return map_fault_error(t->s);
	if ((rc = txn_reserve_freed(t)))
		return rc;
	rc = index_del(t, key_hash(t->s->hash_seed, key, klen), key, klen);
	return rc == MS_ECORRUPT && map_faulted(t->s) ? map_fault_error(t->s) : rc;
}

/* ---- iteration ----
 *
 * The trie holds objects in hash order, which is random in the file: visiting them in that order costs
 * a cache and a TLB miss each. So the iterator walks the trie for a batch of object entries (up to
 * ITER_BATCH, all of a store of that many objects), sorts them by offset (radix sort), and visits the
 * objects in file order, prefetching ahead: a scan then reads memory nearly sequentially. */

#define ITER_BATCH (1u << 20)
#define ITER_FIRST 4096u /* the first batch is small, so a short iteration starts at once */
#define ITER_PREFETCH 8u

struct ms_iter {
	ms_txn *t;
	uint64_t gen;
	struct ictx c;
	int depth;        /* of the walk; -1 when the walk is done */
	uint64_t yielded; /* more than the snapshot's object count means shared nodes: corrupt */
	uint64_t *batch, *tmp;
	size_t cap, n, pos;
	struct frame {
		const struct disk_node *nd;
		unsigned n, i;
		bool list; /* a bucket or a collision list: objects only */
	} st[MS_MAX_DEPTH + 1];
};

static int iter_push_node(ms_iter *it, uint64_t e)
{
	if (it->st[it->depth].list)
		return err_set(MS_ECORRUPT, "%s: a bucket or collision list holds a node", it->t->s->path);
	struct frame *g = &it->st[it->depth + 1];
	int rc = index_node(&it->c, e, (unsigned)it->depth + 1, &g->nd, &g->n);
	if (rc)
		return err_set(rc, "%s: index node at %llu fails its check", it->t->s->path,
		               (unsigned long long)ent_off(e));
	g->i = 0;
	g->list = ent_is_bucket(e) || it->depth + 1 == (int)MS_MAX_DEPTH;
	it->depth++;
	for (unsigned j = 0; j < g->n; j++)
		if (ent_is_node(g->nd->slot[j]))
			__builtin_prefetch(it->c.base + ent_off(g->nd->slot[j]));
	return 0;
}

/* Sort entries by offset: LSD radix over offset bits 4..47, 11 bits a pass. */
static void sort_entries(uint64_t *v, uint64_t *tmp, size_t n)
{
	if (n < 64) {
		for (size_t i = 1; i < n; i++) {
			uint64_t x = v[i];
			size_t j = i;
			while (j && ent_off(v[j - 1]) > ent_off(x)) {
				v[j] = v[j - 1];
				j--;
			}
			v[j] = x;
		}
		return;
	}
	for (unsigned shift = 4; shift < 48; shift += 11) {
		size_t count[2048] = { 0 };
		for (size_t i = 0; i < n; i++)
			count[(ent_off(v[i]) >> shift) & 2047]++;
		size_t sum = 0;
		for (unsigned d = 0; d < 2048; d++) {
			size_t c = count[d];
			count[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			tmp[count[(ent_off(v[i]) >> shift) & 2047]++] = v[i];
		uint64_t *sw = v;
		v = tmp;
		tmp = sw;
	}
	/* Four passes: the result is back in the caller's array. */
}

/* Walk the trie for the next batch of object entries and sort them. */
static int iter_fill(ms_iter *it)
{
	size_t want = it->cap ? ITER_BATCH : ITER_FIRST;
	if (want > it->t->snap.objects + 1)
		want = (size_t)it->t->snap.objects + 1;
	if (want > it->cap) {
		uint64_t *b = realloc(it->batch, want * sizeof *b), *t2;
		if (!b)
			return MS_ENOMEM;
		it->batch = b;
		if (!(t2 = realloc(it->tmp, want * sizeof *t2)))
			return MS_ENOMEM;
		it->tmp = t2;
		it->cap = want;
	}
	it->n = it->pos = 0;
	while (it->n < it->cap && it->depth >= 0) {
		struct frame *f = &it->st[it->depth];
		if (f->i == f->n) {
			it->depth--;
			continue;
		}
		uint64_t e = f->nd->slot[f->i++];
		if (ent_is_node(e)) {
			int rc = iter_push_node(it, e);
			if (rc)
				return rc;
			continue;
		}
		it->batch[it->n++] = e;
	}
	sort_entries(it->batch, it->tmp, it->n);
	return 0;
}

int ms_iter_open(ms_txn *t, ms_iter **out)
{
	if (!t || !out)
		return err_set(MS_EINVAL, "ms_iter_open: NULL argument");
	if (map_faulted(t->s))
		return map_fault_error(t->s);
	ms_iter *it = calloc(1, sizeof *it);
	if (!it)
		return MS_ENOMEM;
	it->t = t;
	it->gen = t->gen;
	it->c = ictx_of(t);
	it->depth = -1;
	if (t->snap.root) {
		int rc = index_node(&it->c, t->snap.root, 0, &it->st[0].nd, &it->st[0].n);
		it->st[0].list = ent_is_bucket(t->snap.root);
		if (rc) {
			free(it);
			if (map_faulted(t->s))
				return map_fault_error(t->s);
			return err_set(rc, "%s: the root index node fails its checksum", t->s->path);
		}
		it->depth = 0;
	}
	*out = it;
	return 0;
}

int ms_iter_next(ms_iter *it, ms_val *key, ms_val *val)
{
	if (!it)
		return err_set(MS_EINVAL, "ms_iter_next: NULL iterator");
	if (!it->t->rdonly && it->t->gen != it->gen)
		return err_set(MS_EINVAL, "the transaction changed while an iterator was open");
	if (map_faulted(it->t->s))
		return map_fault_error(it->t->s);
	if (it->pos == it->n) {
		if (it->depth < 0)
			return MS_NOTFOUND;
		int rc = iter_fill(it);
		if (rc)
			return rc == MS_ECORRUPT && map_faulted(it->t->s) ? map_fault_error(it->t->s) : rc;
		if (it->n == 0)
			return MS_NOTFOUND;
	}
	if (it->pos + ITER_PREFETCH < it->n) {
		const uint8_t *p = it->c.base + ent_off(it->batch[it->pos + ITER_PREFETCH]);
		__builtin_prefetch(p);
		__builtin_prefetch(p + 64);
	}
	uint64_t e = it->batch[it->pos++];
	const struct disk_obj *o;
	int rc = index_obj(&it->c, e, &o);
	if (rc && map_faulted(it->t->s))
		return map_fault_error(it->t->s);
	if (rc)
		return err_set(rc, "%s: object at %llu fails its check", it->t->s->path,
		               (unsigned long long)ent_off(e));
	if (++it->yielded > it->t->snap.objects)
		return err_set(MS_ECORRUPT, "%s: the index holds more objects than its meta counts", it->t->s->path);
	if (key) {
		key->data = o + 1;
		key->len = o->klen;
	}
	if (val) {
		val->data = (const uint8_t *)(o + 1) + o->klen;
		val->len = (size_t)obj_vlen(o);
	}
	return 0;
}

void ms_iter_close(ms_iter *it)
{
	if (!it)
		return;
	free(it->batch);
	free(it->tmp);
	free(it);
}

