/* store/space.c - where a write transaction's blocks come from and where freed ones go: allocation
 * (growing the file when the allocator is full), room kept for deletes, pending frees that wait until
 * no snapshot can see them, and the MS_NOSYNC quarantine that makes freed space safe to reuse without
 * syncs; and, in debug builds, the audit of all of it. Writer context unless said otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Room kept for deletes when the store is at its capacity: a delete copies a path of nodes, and a
 * full store must still take deletes (the contract). Puts fail with MS_ENOSPC before eating it. */
#define DEL_RESERVE (256ull << 10)
/* Without a capacity the file is grown ahead to keep more free: that free tail is also where new
 * size-class runs go, and while it can host them they never split a hole a deleted object left. */
#define DISK_RESERVE (1ull << 20)

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

bool space_quar_full(const ms_store *s) { return s->quar_bytes > quar_limit(s); }

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

void space_quar_add(ms_store *s, uint64_t off, uint64_t size, bool fresh)
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

void space_quar_drop(ms_store *s)
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

int space_sync_point(ms_store *s, const char *what)
{
	pthread_mutex_lock(&s->lock);
	uint64_t gen = ++s->sync_gen, seq = s->cur.seq;
	pthread_mutex_unlock(&s->lock);
	if (ms_sys.fdatasync(s->fd)) {
		int e = errno;
		s->failed = MS_EIO;
		return err_errno(MS_EIO, e, "fdatasync %s (%s); the store refuses commits until reopened", s->path,
		                 what);
	}
	pthread_mutex_lock(&s->lock);
	if (seq > s->synced_seq)
		s->synced_seq = seq;
	if (gen > s->synced_gen)
		s->synced_gen = gen;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void space_release_pending(ms_store *s)
{
	uint64_t oldest = readers_oldest(s); /* every process's readers */
	bool nosync = (s->flags & MS_NOSYNC) != 0;
	pthread_mutex_lock(&s->lock);
	if (nosync)
		quar_advance_locked(s);
	/* Blocks freed by commit N are visible to snapshots older than N only. */
	while (s->pending && s->pending->seq <= oldest) {
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

int space_quar_flush(ms_store *s, const char *what)
{
	space_release_pending(s);
	pthread_mutex_lock(&s->synclock);
	int rc = space_sync_point(s, what);
	if (rc == 0) {
		space_release_pending(s);
		rc = space_sync_point(s, what);
	}
	pthread_mutex_unlock(&s->synclock);
	if (rc == 0)
		space_release_pending(s);
	return rc;
}

int space_alloc(struct ms_txn *t, uint64_t size, int kind, uint64_t *off)
{
	ms_store *s = t->s;
	int rc = alloc_alloc(s->alloc, size, off);
	if (rc == ALLOC_ENOSPC) {
		space_release_pending(s);
		rc = alloc_alloc(s->alloc, size, off);
	}
	if (rc == ALLOC_ENOSPC) {
		/* Grow by at least the block plus a run's worth, so a new size-class run fits too. */
		int g = map_grow(s, s->file_size + alloc_round(size) + (128ull << 10));
		if (g == MS_ENOSPC)
			g = map_grow(s, s->file_size + alloc_round(size));
		if (g == MS_ENOSPC && s->quar_bytes) {
			/* Full: take the quarantine back (two syncs) rather than fail. */
			if ((rc = space_quar_flush(s, "reclaim space")))
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

void space_release(struct ms_txn *t, uint64_t off, uint64_t size)
{
	const uint64_t *fv = table_get(&t->fresh, off);
	bool quarantine = fv && fresh_needs_quarantine(t->s, *fv);
	if (table_del(&t->fresh, off)) {
		if (quarantine) {
			space_quar_add(t->s, off, size, true);
			return;
		}
		int rc = alloc_free(t->s->alloc, off, size);
		ms_assert(rc == 0);
		(void)rc;
		return;
	}
	/* Committed: reusable only after this commit and once no snapshot sees it. Room was reserved by
	 * space_reserve_freed, so this cannot fail. */
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
int space_room(struct ms_txn *t, uint64_t obj_bytes)
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
	space_release_pending(s);
	free_bytes = alloc_free_bytes(s->alloc);
	if (free_bytes >= need + DISK_RESERVE)
		return 0;
	int rc = map_grow(s, s->file_size + need + DISK_RESERVE - free_bytes);
	if (rc == MS_ENOSPC && s->quar_bytes) {
		if ((rc = space_quar_flush(s, "reclaim space")))
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
int space_reserve_freed(struct ms_txn *t)
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

void space_discard(struct ms_txn *t)
{
	size_t pos = 0;
	uint64_t off, v;
	while (table_next(&t->fresh, &pos, &off, &v)) {
		if (fresh_needs_quarantine(t->s, v)) {
			space_quar_add(t->s, off, v & FRESH_SIZE_MASK, true);
			continue;
		}
		int rc = alloc_free(t->s->alloc, off, v & FRESH_SIZE_MASK);
		ms_assert(rc == 0);
		(void)rc;
	}
}

void space_drop_pending(ms_store *s)
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

#ifdef MS_DEBUG
/* The in-process audit (debug builds, like LMDB's mdb_audit and mimalloc's heap checks): the allocator
 * passes its own check, and every byte it holds as used is accounted for: the blocks of the newest
 * commit (I7's obj_bytes + node_bytes, rounded sizes), the pending frees, the quarantine and the
 * checkpoint block the newest meta still points at (I6). Skipped while the allocator describes
 * another commit or is distrusted: it is rebuilt before the next write. A failure is a bug of ours,
 * never of the file (what open takes from it is checked against the index first): it stops at once. */
void space_audit(ms_store *s, const char *where)
{
	if (!s->alloc)
		return;
	pthread_mutex_lock(&s->lock);
	bool current = s->alloc_seq == s->cur.seq && !s->alloc_distrust;
	uint64_t tree = s->cur.obj_bytes + s->cur.node_bytes, pinned = s->pinned_bytes, quar = s->quar_bytes;
	uint64_t ckpt = s->cur.ckpt_off ? alloc_round(s->cur.ckpt_len) : 0;
	pthread_mutex_unlock(&s->lock);
	if (!current)
		return;
	char what[256];
	if (alloc_check(s->alloc) == ALLOC_ECORRUPT) { /* ALLOC_ENOMEM: no memory to check with */
		snprintf(what, sizeof what, "audit %s: the allocator fails alloc_check", where);
		ms_assert_fail(what, __FILE__, __LINE__);
	}
	struct alloc_stats st;
	alloc_stats(s->alloc, &st);
	if (st.used_bytes != tree + pinned + quar + ckpt) {
		snprintf(what, sizeof what,
		         "audit %s: %llu bytes allocated, but objects and nodes %llu + pending %llu + quarantine %llu + "
		         "checkpoint %llu = %llu", where, (unsigned long long)st.used_bytes, (unsigned long long)tree,
		         (unsigned long long)pinned, (unsigned long long)quar, (unsigned long long)ckpt,
		         (unsigned long long)(tree + pinned + quar + ckpt));
		ms_assert_fail(what, __FILE__, __LINE__);
	}
}
#endif
