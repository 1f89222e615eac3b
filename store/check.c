/* store/check.c - ms_check: every problem in a store file, named with the invariant of format.h it
 * breaks. It walks the newest commit's tree (index_walk_report), checks the meta's totals (I7),
 * overlaps (I3), that the blocks form a heap the allocator accepts (I6), and that a checkpoint
 * books exactly the index's blocks; while other processes use the store it checks one pinned
 * snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "internal.h"

/* ---- ms_check ---- */

struct checker {
	ms_check_fn fn;
	void *ctx;
	uint64_t problems;
};

static void problem(struct checker *ck, uint64_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(struct checker *ck, uint64_t off, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	ck->problems++;
	if (ck->fn)
		ck->fn(ck->ctx, off, msg);
}

static void report_walk(void *rctx, uint64_t off, const char *why) { problem(rctx, off, "%s", why); }

static int cmp_block(const void *a, const void *b)
{
	const struct alloc_block *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Verify the tree of one meta: every node and object, totals, overlaps, and that the blocks form a
 * heap the allocator accepts (used + free + slack == heap). */
static int check_tree(struct checker *ck, const uint8_t *base, const struct disk_meta *m, ms_check_stats *cs)
{
	int nomem = 0; /* running out of memory is no problem of the file: the check answers MS_ENOMEM */
	struct ictx c = { .base = (uint8_t *)base, .heap_end = m->heap_end };
	struct rebuild rb;
	memset(&rb, 0, sizeof rb);
	uint64_t walk_problems = 0;
	int rc = index_walk_report(&c, m->root, m->hash_seed, &rb, report_walk, ck, &walk_problems);
	if (rc == MS_ENOMEM)
		nomem = MS_ENOMEM;
	cs->objects = rb.objects;
	cs->live_bytes = rb.live_bytes;
	cs->used_bytes = rb.obj_bytes + rb.node_bytes;
	if (walk_problems == 0 && rc == 0) {
		if (rb.objects != m->objects)
			problem(ck, 0, "meta counts %llu objects, the index holds %llu (I7)",
			        (unsigned long long)m->objects, (unsigned long long)rb.objects);
		if (rb.live_bytes != m->live_bytes)
			problem(ck, 0, "meta counts %llu live bytes, the index holds %llu (I7)",
			        (unsigned long long)m->live_bytes, (unsigned long long)rb.live_bytes);
		if (rb.obj_bytes != m->obj_bytes || rb.node_bytes != m->node_bytes)
			problem(ck, 0, "meta's space totals (%llu object, %llu index bytes) disagree with the index (%llu, %llu) (I7)",
			        (unsigned long long)m->obj_bytes, (unsigned long long)m->node_bytes,
			        (unsigned long long)rb.obj_bytes, (unsigned long long)rb.node_bytes);
	}
	cs->nodes = rb.b.len - rb.objects;
	if (rb.b.len > 1)
		qsort(rb.b.v, rb.b.len, sizeof *rb.b.v, cmp_block);
	size_t overlaps = 0;
	for (size_t i = 1; i < rb.b.len; i++) {
		const struct alloc_block *p = &rb.b.v[i - 1], *q = &rb.b.v[i];
		if (q->off < p->off + p->size) {
			if (overlaps++ < 16)
				problem(ck, q->off, "block overlaps the block at %llu (I3)", (unsigned long long)p->off);
		}
	}
	if (overlaps > 16)
		problem(ck, 0, "%zu more overlapping blocks (I3)", overlaps - 16);
	if (walk_problems == 0 && overlaps == 0 && !nomem) {
		struct alloc *a = NULL;
		int ar = alloc_rebuild(MS_HEAP_START, m->heap_end, rb.b.v, rb.b.len, &a);
		if (ar == ALLOC_ENOMEM) {
			nomem = MS_ENOMEM;
		} else if (ar) {
			/* Name the block: the rebuild takes blocks in file order, so the shortest prefix it
			 * refuses ends at the first block that is not where the allocator would put it. */
			size_t lo = 0, hi = rb.b.len; /* the first lo blocks rebuild; the first hi do not */
			while (hi - lo > 1) {
				size_t mid = lo + (hi - lo) / 2;
				struct alloc *pa = NULL;
				int pr = alloc_rebuild(MS_HEAP_START, m->heap_end, rb.b.v, mid, &pa);
				if (pa)
					alloc_destroy(pa);
				if (pr == 0)
					lo = mid;
				else
					hi = mid;
			}
			if (hi > 0 && hi <= rb.b.len)
				problem(ck, rb.b.v[hi - 1].off,
				        "block of %llu bytes lies where the allocator cannot have put it (off its size class's "
				        "slots, or in another class's run) (I6)", (unsigned long long)rb.b.v[hi - 1].size);
			else
				problem(ck, 0, "the index's blocks do not form a valid heap (allocator code %d) (I6)", ar);
		} else {
			struct alloc_stats st;
			alloc_stats(a, &st);
			cs->free_bytes = st.free_bytes;
			int cr = alloc_check(a);
			if (cr == ALLOC_ENOMEM)
				nomem = MS_ENOMEM;
			else if (cr || st.used_bytes + st.free_bytes + st.run_slack != st.region_bytes)
				problem(ck, 0, "used (%llu) + free (%llu) + slack (%llu) bytes do not add up to the heap (%llu) (I6)",
				        (unsigned long long)st.used_bytes, (unsigned long long)st.free_bytes,
				        (unsigned long long)st.run_slack, (unsigned long long)st.region_bytes);
			struct alloc *ca = NULL;
			const char *cwhy = NULL;
			int ir = ckpt_load(base, m, &ca, &cwhy);
			if (ir == MS_ENOMEM) {
				nomem = MS_ENOMEM;
			} else if (ir == MS_ECORRUPT) {
				problem(ck, m->ckpt_off, "%s (I6)", cwhy);
			} else if (ir == 0) {
				struct alloc_stats cst;
				alloc_stats(ca, &cst);
				if (cst.used_bytes != st.used_bytes + alloc_round(m->ckpt_len) ||
				    cst.region_bytes != st.region_bytes) {
					problem(ck, m->ckpt_off, "allocator checkpoint disagrees with the index (I6)");
				} else {
					/* Same totals is not enough: open trusts the checkpoint, so it must book
					 * exactly the index's blocks and itself, or writers would hand out
					 * live space. Freeing each from it proves that. */
					size_t k = 0;
					while (k < rb.b.len && alloc_free(ca, rb.b.v[k].off, rb.b.v[k].size) == 0)
						k++;
					if (k < rb.b.len)
						problem(ck, rb.b.v[k].off,
						        "allocator checkpoint does not book this block as the index does (I6)");
					else if (alloc_free(ca, m->ckpt_off, m->ckpt_len) ||
					         (alloc_stats(ca, &cst), cst.used_bytes != 0))
						problem(ck, m->ckpt_off, "allocator checkpoint books space the index does not use (I6)");
				}
				alloc_destroy(ca);
			}
			alloc_destroy(a);
		}
	}
	blocks_free(&rb.b);
	return nomem;
}

int ms_check(const char *path, ms_check_fn fn, void *ctx, ms_check_stats *stats)
{
	ms_check_stats cs;
	memset(&cs, 0, sizeof cs);
	if (!path)
		return err_set(MS_EINVAL, "ms_check: NULL path");
	struct checker ck = { fn, ctx, 0 };
	int fd = ms_sys.open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return err_errno(err_from_errno(errno) == MS_EINVAL ? MS_EINVAL : MS_EIO, errno, "open %s", path);
	int rc = 0;
	void *map = MAP_FAILED;
	struct stat sb;
	ms_store *pin = NULL;
	ms_txn *pin_txn = NULL;
	_Atomic int faulted = 0;
	bool guarded = false;
	if (ms_sys.fstat(fd, &sb)) {
		rc = err_errno(MS_EIO, errno, "stat %s", path);
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = err_set(MS_EINVAL, "check %s: not a regular file", path);
		goto out;
	}
	/* Hold a snapshot through the reader table while checking, so a writer in another process
	 * cannot reuse what this check reads: every commit from the pinned one on stays intact. A file
	 * that does not open (damaged) is checked as it lies. */
	ms_options ro = { .flags = MS_READONLY };
	if (ms_open(path, &ro, &pin) == 0 && ms_txn_begin(pin, MS_READONLY, &pin_txn) != 0)
		pin_txn = NULL;
	uint64_t size = (uint64_t)sb.st_size;
	if (size < MS_HEAP_START) {
		problem(&ck, 0, "file is %llu bytes, too short to be a store", (unsigned long long)size);
		goto done;
	}
	struct disk_meta m[2];
	struct disk_rec rec[2][MS_REC_MAX];
	int mrc[2];
	const char *why[2] = { NULL, NULL };
	if (meta_read_pages(fd, size, m, rec, mrc, why)) {
		rc = err_errno(MS_EIO, errno, "read %s", path);
		goto out;
	}
	if (mrc[0] == MS_EVERSION || mrc[1] == MS_EVERSION) {
		rc = err_set(MS_EVERSION, "check %s: format newer than this library", path);
		goto out;
	}
	int order[2];
	if (meta_pick(m, (const bool[2]){ mrc[0] == 0, mrc[1] == 0 }, order) == 0) {
		problem(&ck, 0, "meta page 0: %s (I1)", why[0]);
		problem(&ck, MS_PAGE, "meta page 1: %s (I1)", why[1]);
		goto done;
	}
	int newest = order[0];
	map = ms_sys.mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		rc = err_errno(MS_ENOMEM, errno, "mmap %s", path);
		goto out;
	}
	if ((rc = map_guard_add(map, size, &faulted))) /* a truncation while checking is no SIGBUS */
		goto out;
	guarded = true;
	bool cut_short = false;
	if (mrc[1 - newest] == 0 && meta_record_check(map, &m[newest], rec[newest], &why[newest]) &&
	    !meta_record_check(map, &m[1 - newest], rec[1 - newest], &why[1 - newest])) {
		/* The newest commit was cut short by a crash before its one sync finished: what opens is
		 * the commit before it, which that sync left intact. No problem of the file. */
		newest = 1 - newest;
		cut_short = true;
	} else if (meta_record_check(map, &m[newest], rec[newest], &why[newest])) {
		problem(&ck, (uint64_t)newest * MS_PAGE, "meta page %d: %s (I2)", newest, why[newest]);
		goto done;
	}
	cs.txn_id = m[newest].commit_id;
	if ((rc = check_tree(&ck, map, &m[newest], &cs))) {
		rc = err_set(rc, "check %s: out of memory", path);
		goto out;
	}
	if (ck.problems && mrc[1 - newest] == 0 && !cut_short) {
		/* Say whether the store still opens, at the commit before. */
		struct checker quiet = { NULL, NULL, 0 };
		ms_check_stats older;
		memset(&older, 0, sizeof older);
		if (check_tree(&quiet, map, &m[1 - newest], &older) == 0 && quiet.problems == 0)
			problem(&ck, (uint64_t)(1 - newest) * MS_PAGE,
			        "commit %llu is damaged; the previous commit %llu is intact and is what opens",
			        (unsigned long long)m[newest].commit_id, (unsigned long long)m[1 - newest].commit_id);
	}
done:
	cs.problems = ck.problems;
	if (atomic_load(&faulted))
		rc = err_set(MS_EIO, "check %s: the file was truncated (or could not be read) while it was checked", path);
	else if (ck.problems)
		rc = err_set(MS_ECORRUPT, "check %s: %llu problem%s found", path, (unsigned long long)ck.problems,
		             ck.problems == 1 ? "" : "s");
out:
	if (guarded)
		map_guard_del(map);
	if (map != MAP_FAILED)
		ms_sys.munmap(map, (size_t)sb.st_size);
	ms_sys.close(fd);
	if (pin_txn)
		ms_txn_abort(pin_txn);
	if (pin)
		ms_close(pin);
	if (stats)
		*stats = cs;
	return rc;
}
