/* store/snap.c - the committed state a snapshot sees: the current one of this handle, or the newest
 * meta page of the file read from the mapping (another process may have committed), taken only when
 * its commit record matches unless it is published.
 */
#include <sys/stat.h>
#include <string.h>

#include "internal.h"

void snap_from_meta(struct snap *st, const struct disk_meta *m)
{
	st->seq = m->seq;
	st->commit_id = m->commit_id;
	st->root = m->root;
	st->objects = m->objects;
	st->live_bytes = m->live_bytes;
	st->obj_bytes = m->obj_bytes;
	st->node_bytes = m->node_bytes;
	st->heap_end = m->heap_end;
	st->flags = m->flags;
	bool ckpt = m->ckpt_off && m->ckpt_seq == m->seq;
	st->ckpt_off = ckpt ? m->ckpt_off : 0;
	st->ckpt_len = ckpt ? m->ckpt_len : 0;
}

/* Does the commit record of meta m, read from page `page` of the mapping, fail to match? */
static bool meta_record_mismatch(ms_store *s, int page, const struct disk_meta *m)
{
	struct disk_rec rec[MS_REC_MAX];
	memcpy(rec, s->base + (uint64_t)page * MS_PAGE + sizeof *m, m->rec_count * sizeof rec[0]);
	const char *why;
	return meta_record_check(s->base, m, rec, &why) != 0;
}

int snap_read(ms_store *s, uint64_t t, struct snap *out)
{
	pthread_mutex_lock(&s->lock);
	if (t && s->cur.seq == t) {
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
	uint64_t fsize = ms_sys.fstat(s->fd, &sb) == 0 ? (uint64_t)sb.st_size : s->file_size;
	bool ok[2];
	for (int i = 0; i < 2; i++) {
		const char *why;
		ok[i] = meta_check(&m[i], fsize, &why) == 0 && m[i].seq % 2 == (uint64_t)i &&
		        m[i].hash_seed == s->hash_seed;
	}
	if (t) /* that commit's page, or none */
		for (int i = 0; i < 2; i++)
			ok[i] = ok[i] && m[i].seq == t;
	int best;
	for (;;) {
		int order[2];
		if (meta_pick(m, ok, order) == 0)
			return MS_NOTFOUND;
		best = order[0];
		int rc = map_extend(s, m[best].heap_end); /* another process may have grown the file */
		if (rc)
			return rc;
		/* The newest meta is taken only with its commit record matching, unless its id is
		 * published: then its sync finished, and a block that no longer matches is damage, for
		 * the checksums to report, not a commit to take back. An unpublished one that does not
		 * match is a commit a crash cut short. */
		if (t || !m[best].rec_count || (s->lf && m[best].seq <= atomic_load(&s->lf->seq)) ||
		    !meta_record_mismatch(s, best, &m[best]))
			break;
		ok[best] = false;
	}
	snap_from_meta(out, &m[best]);
	pthread_mutex_lock(&s->lock);
	if (out->seq > s->cur.seq)
		s->cur = *out;
	pthread_mutex_unlock(&s->lock);
	return 0;
}
