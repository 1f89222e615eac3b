/* store/stats.c - ms_stat: the committed state's counts, the allocator's view of the heap, and what
 * open snapshots pin. */
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

int ms_stat(ms_store *s, ms_stats *st)
{
	if (!s || !st)
		return err_set(MS_EINVAL, "ms_stat: NULL argument");
	memset(st, 0, sizeof *st);
	struct alloc_stats as;
	memset(&as, 0, sizeof as);
	bool have_alloc = false;
	if (!(s->flags & MS_READONLY)) {
		/* The allocator belongs to the writer: read it as the writer, or between writers; while
		 * another thread writes, take the figures from when the last writer ended. */
		bool own = txn_own_writer(s);
		if (own || pthread_mutex_trylock(&s->wlock) == 0) {
			if ((have_alloc = s->alloc != NULL)) {
				space_release_pending(s); /* what no snapshot sees any more is free */
				alloc_stats(s->alloc, &as);
				/* MS_NOSYNC quarantine: free, handed out after a sync (txn.c) */
				as.used_bytes -= s->quar_bytes;
				as.free_bytes += s->quar_bytes;
			}
			if (!own)
				pthread_mutex_unlock(&s->wlock);
		} else {
			pthread_mutex_lock(&s->lock);
			as = s->astats;
			have_alloc = as.region_bytes != 0;
			pthread_mutex_unlock(&s->lock);
		}
	}
	struct snap newest;
	if (snap_read(s, 0, &newest) == 0) { /* another process may have committed */
		pthread_mutex_lock(&s->lock);
		if (newest.seq > s->cur.seq)
			s->cur = newest;
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_lock(&s->lock);
	st->objects = s->cur.objects;
	st->live_bytes = s->cur.live_bytes;
	st->txn_id = s->cur.commit_id;
	st->readers = readers_count(s);
	st->object_bytes = s->cur.obj_bytes;
	st->index_bytes = s->cur.node_bytes;
	st->pinned_bytes = s->pinned_bytes;
	uint64_t pinned = readers_pinned(s); /* what other processes' commits freed counts too */
	if (pinned > st->pinned_bytes)
		st->pinned_bytes = pinned;
	uint64_t heap_end = s->cur.heap_end;
	pthread_mutex_unlock(&s->lock);
	struct stat sb;
	st->file_bytes = ms_sys.fstat(s->fd, &sb) == 0 ? (uint64_t)sb.st_size : s->file_size;
	if (!have_alloc) {
		/* No allocator in a read-only handle (or before this process first wrote): the committed blocks are all that is used. */
		st->used_bytes = st->object_bytes + st->index_bytes; /* read under the lock above */
		uint64_t heap = heap_end - MS_HEAP_START;
		st->free_bytes = heap > st->used_bytes ? heap - st->used_bytes : 0;
	} else {
		st->used_bytes = as.used_bytes;
		st->free_bytes = as.free_bytes;
		st->largest_free = as.largest_free;
		st->internal_waste = as.internal_waste;
		st->free_extents = as.free_extents;
	}
	uint64_t accounted = st->used_bytes + st->free_bytes;
	st->overhead_bytes = st->file_bytes > accounted ? st->file_bytes - accounted : 0;
	st->capacity = s->capacity;
	st->hits = atomic_load_explicit(&s->hits, memory_order_relaxed);
	st->misses = atomic_load_explicit(&s->misses, memory_order_relaxed);
	return 0;
}
