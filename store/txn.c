/* store/txn.c - transactions: a reader takes a snapshot and publishes it in the reader table; one
 * writer at a time works on the newest commit; the commit seals what the writer wrote, makes it
 * durable and publishes its meta page. The operations (get, put, reserve, del) check their arguments
 * here and go to the index; where blocks come from and go to is space.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char txn_me;
uintptr_t txn_self(void) { return (uintptr_t)&txn_me; }

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
		int rc = readers_claim(s, &t->slot);
		if (rc) {
			free(t);
			return rc;
		}
		/* Take the newest snapshot, publish it in the slot, then read the newest id again: a writer
		 * that scans the table after our store sees us and keeps what we may read; one that
		 * committed before it makes us try again (seq_cst on both sides, Dekker-style). */
		for (unsigned tries = 0;; tries++) {
			uint64_t id = atomic_load(&s->lf->seq);
			rc = snap_read(s, id, &t->snap);
			if (rc == MS_NOTFOUND) {
				/* A MS_NOSYNC commit (of any process) may overwrite the newest meta's page
				 * at once (the other page keeps the synced one): take the commit whose
				 * meta is out but whose id is not published yet. Safe: a commit after it
				 * publishes its id before it scans the readers, and the check below sees
				 * that id; and such a commit cannot fail any more once its meta is out (no
				 * sync follows). A durable commit's meta is never taken this way: its
				 * sync may still fail and take it back. */
				struct snap sn;
				if (snap_read(s, 0, &sn) == 0 && sn.seq > id && (sn.flags & MS_META_NOSYNC)) {
					t->snap = sn;
					rc = 0;
				}
			}
			if (rc == 0) {
				readers_publish(t->slot, &t->snap);
				if (atomic_load(&s->lf->seq) <= t->snap.seq)     /* == id unless taken above */
					break;
				atomic_store(&t->slot->seq, 0);
			} else if (rc != MS_NOTFOUND || tries > 1000) {
				readers_release(t->slot);
				free(t);
				return rc == MS_NOTFOUND ? err_set(MS_ECORRUPT, "%s: no meta page holds commit %llu",
				                                   s->path, (unsigned long long)id) : rc;
			}
		}
		if (map_faulted(s)) { /* the meta pages were read from a truncated file */
			readers_release(t->slot);
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
	rc = readers_lock_writer(s, &died);
	if (rc == 0 && (rc = recover_writer(s)))
		readers_unlock_writer(s);
	if (rc) {
		pthread_mutex_unlock(&s->wlock);
		free(t);
		return rc;
	}
	space_release_pending(s);
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
	readers_release(t->slot);
	pthread_mutex_lock(&s->lock);
	txn_unlink(s, t);
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(&s->hits, t->hits, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->misses, t->misses, memory_order_relaxed);
	free(t);
}

static void writer_end(struct ms_txn *t, const char *what)
{
	ms_store *s = t->s;
	space_audit(s, what);
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
	readers_unlock_writer(s);
	pthread_mutex_unlock(&s->wlock);
	free(t);
}

void ms_txn_abort(ms_txn *t)
{
	if (!t)
		return;
	if (t->rdonly) {
		reader_end(t);
		return;
	}
	space_discard(t);
	writer_end(t, "after an abort");
}

void txn_end_all(ms_store *s)
{
	while (s->txns)
		ms_txn_abort(s->txns);
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
static int txn_sync(ms_store *s, const char *what)
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
		writer_end(t, "after an empty commit"); /* nothing changed: no new commit */
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
		if ((rc = space_reserve_freed(t)))
			goto discard;
		space_release(t, next.ckpt_off, next.ckpt_len);
		next.ckpt_off = next.ckpt_len = 0;
	}
	/* t->snap began as the newest commit, and the writer lock kept it the newest. */
	next.seq = t->snap.seq + 1;
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
	uint64_t n_rec = durable && t->snap.seq == s->durable_seq ? txn_record(t, rec) : 0;
	if (durable && !n_rec && (rc = txn_sync(s, "commit data")))
		goto discard;
	if (map_faulted(s)) {
		rc = map_fault_error(s);
		goto discard;
	}
	if (!durable) {
		/* No sync may run while the meta page is written and published: it must know which
		 * meta its fdatasync made durable. The synced meta's page is kept until the next sync
		 * (a commit takes seq + 2 to stay on the other page), so a crash before that sync
		 * still finds it, whole. */
		pthread_mutex_lock(&s->synclock);
		synclocked = true;
		if (space_quar_full(s) && (rc = space_sync_point(s, "quarantine")))
			goto discard;
		pthread_mutex_lock(&s->lock);
		next.seq = t->snap.seq + (t->snap.seq == s->synced_seq ? 1 : 2);
		pthread_mutex_unlock(&s->lock);
	}
	/* The page the new meta overwrites, so a failed meta sync can take the commit back (below). */
	uint8_t prev[MS_PAGE]; /* with its record */
	bool have_prev = durable && sys_pread_full(s->fd, prev, sizeof prev, (next.seq % 2) * MS_PAGE) == 0;
	if (meta_write(s->fd, &next, s->hash_seed, s->created, NULL, rec, n_rec)) {
		rc = err_errno(MS_EIO, errno, "write meta page of %s", s->path);
		s->failed = MS_EIO;
		goto discard;
	}
	if (durable && (rc = txn_sync(s, "commit meta"))) {
		/* MS_EIO says nothing of t is committed: put the previous meta back, so neither a reopen
		 * nor another process's writer builds on a commit whose durability is unknown. */
		if (have_prev)
			sys_pwrite_full(s->fd, prev, sizeof prev, (next.seq % 2) * MS_PAGE);
		goto discard;
	}

	if (p) {
		p->seq = next.seq;
		p->blocks = t->freed;
		memset(&t->freed, 0, sizeof t->freed);
		for (size_t i = 0; i < p->blocks.len; i++)
			p->bytes += alloc_round(p->blocks.v[i].size);
	}
	readers_note_commit(s, next.seq, p ? p->bytes : 0);
	s->alloc_seq = next.seq;
	if (durable)
		s->durable_seq = next.seq;
	pthread_mutex_lock(&s->lock);
	s->cur = next;
	if (durable)
		s->synced_seq = next.seq;
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
	space_release_pending(s);
	writer_end(t, "after a commit");
	return 0;
discard:
	if (synclocked)
		pthread_mutex_unlock(&s->synclock);
	free(p);
	space_discard(t);
	writer_end(t, "after a failed commit");
	return rc;
}

/* ---- operations ---- */

static int txn_key_check(const void *key, size_t klen)
{
	if (!key || klen == 0 || klen > MS_MAXKEY)
		return err_set(MS_EINVAL, "key must be 1 to %u bytes (got %zu)", MS_MAXKEY, key ? klen : 0);
	return 0;
}

int ms_txn_get(ms_txn *t, const void *key, size_t klen, ms_val *val)
{
	if (!t || !val)
		return err_set(MS_EINVAL, "ms_txn_get: NULL argument");
	int rc = txn_key_check(key, klen);
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
	int rc = txn_key_check(key, klen);
	if (rc)
		return rc;
	if (vlen > MS_VLEN_MAX || (vlen && !val && !dst))
		return err_set(MS_EINVAL, "bad value (length %zu)", vlen);
	ms_store *s = t->s;
	if (map_faulted(s))
		return map_fault_error(s);
	if ((rc = space_room(t, alloc_round(obj_size(klen, vlen)))))
		return rc;
	if ((rc = space_reserve_freed(t)))
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
	int rc = txn_key_check(key, klen);
	if (rc)
		return rc;
	if (map_faulted(t->s))
		return map_fault_error(t->s);
	if ((rc = space_reserve_freed(t)))
		return rc;
	rc = index_del(t, key_hash(t->s->hash_seed, key, klen), key, klen);
	return rc == MS_ECORRUPT && map_faulted(t->s) ? map_fault_error(t->s) : rc;
}

