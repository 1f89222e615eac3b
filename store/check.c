/* store/check.c - walking and verifying a committed tree: the rebuild of the allocator from the index
 * after an unclean shutdown, and ms_check, which names every problem in a store file.
 *
 * The walk is bounded on hostile input: depth by the hash width, and the number of blocks visited by
 * what the heap can hold, so a file whose nodes share or loop cannot make it run away.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "internal.h"

struct walk {
	const struct ictx *c;
	uint64_t seed;
	bool verify_objects;
	index_visit_fn fn;
	void *ctx;
	uint64_t visits, max_visits;
	/* Where the first problem is, or (with report) every problem, walk on. */
	uint64_t bad_off;
	const char *why;
	void (*report)(void *rctx, uint64_t off, const char *why);
	void *rctx;
	uint64_t problems;
};

static int walk_fail(struct walk *w, uint64_t off, const char *why)
{
	if (!w->bad_off && !w->why) {
		w->bad_off = off;
		w->why = why;
	}
	w->problems++;
	if (w->report) {
		w->report(w->rctx, off, why);
		return 0; /* go on with the siblings */
	}
	return MS_ECORRUPT;
}

/* An object's bounds and header, and its checksum only when asked (a rebuild after a synced commit
 * need not read every value). */
static int obj_at(struct walk *w, uint64_t e, const struct disk_obj **out)
{
	if (w->verify_objects)
		return index_obj(w->c, e, out);
	if (e & 0xf)
		return MS_ECORRUPT;
	const struct disk_obj *o = map_ptr(w->c, ent_off(e), sizeof *o);
	if (!o || o->klen == 0 || obj_flags(o) || !map_ptr(w->c, ent_off(e), obj_size(o->klen, obj_vlen(o))))
		return MS_ECORRUPT;
	*out = o;
	return 0;
}

static int walk_rec(struct walk *w, uint64_t ent, unsigned depth, uint64_t prefix)
{
	const struct disk_node *nd;
	unsigned n;
	if (++w->visits > w->max_visits)
		return walk_fail(w, ent_off(ent), "the index reaches more blocks than the heap can hold (shared nodes)"),
		       MS_ECORRUPT;
	if (index_node(w->c, ent, depth, &nd, &n))
		return walk_fail(w, ent_off(ent), "index node fails its checksum or bounds check");
	int rc = w->fn(w->ctx, ent_off(ent), block_size(ent, n), ent_is_bucket(ent) ? 2 : 1, NULL);
	if (rc)
		return rc;
	/* Start every child's fetch before visiting the first: the misses overlap (the children are
	 * scattered over the file). Prefetching an untrusted offset cannot fault. */
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(w->c->base + ent_off(nd->slot[i]));
	/* A bucket's and a collision list's objects share the path's prefix; a node's i-th slot adds its
	 * chunk. */
	bool list = ent_is_bucket(ent) || depth == MS_MAX_DEPTH;
	uint32_t bits = list ? 0 : nd->bitmap;
	if (depth == MS_MAX_DEPTH - 1 && (bits >> 16))
		return walk_fail(w, ent_off(ent), "index node uses hash bits that do not exist");
	/* Deletes pull a lone object up into its parent, so no node or bucket below the root holds one
	 * (format.md). Lookups do not need it; ms_check names it (open does not refuse it). */
	if (w->report && depth > 0 && n == 1 && !ent_is_node(nd->slot[0]) &&
	    (rc = walk_fail(w, ent_off(ent), "index node or bucket below the root holds a single object (the trie is not canonical)")))
		return rc;
	for (unsigned i = 0; i < n; i++) {
		uint64_t e = nd->slot[i];
		uint64_t p = prefix;
		unsigned shift = depth * MS_FANOUT_BITS;
		if (!list) {
			unsigned b = (unsigned)__builtin_ctz(bits);
			bits &= bits - 1;
			p |= (uint64_t)b << shift;
		}
		if (ent_is_node(e)) {
			if (list) {
				if ((rc = walk_fail(w, ent_off(ent), ent_is_bucket(ent) ? "bucket holds an index node"
				                                                        : "collision list holds an index node")))
					return rc;
				continue;
			}
			if ((rc = walk_rec(w, e, depth + 1, p)))
				return rc;
			continue;
		}
		if (++w->visits > w->max_visits)
			return walk_fail(w, ent_off(e), "the index reaches more blocks than the heap can hold"), MS_ECORRUPT;
		const struct disk_obj *o;
		if (obj_at(w, e, &o)) {
			if ((rc = walk_fail(w, ent_off(e), w->verify_objects ? "object fails its checksum or bounds check"
			                                                      : "object header out of bounds")))
				return rc;
			continue;
		}
		if (w->verify_objects) {
			uint64_t h = key_hash(w->seed, o + 1, o->klen);
			unsigned used = (depth + !list) * MS_FANOUT_BITS;
			uint64_t mask = used >= 64 ? ~0ull : (1ull << used) - 1;
			if ((h & mask) != (p & mask) || (uint16_t)(h >> 48) != ent_fp(e)) {
				if ((rc = walk_fail(w, ent_off(e), "object is filed under the wrong hash")))
					return rc;
				continue;
			}
		}
		if ((rc = w->fn(w->ctx, ent_off(e), obj_size(o->klen, obj_vlen(o)), 0, o)))
			return rc;
	}
	return 0;
}

int index_walk(const struct ictx *c, uint64_t root, uint64_t seed, bool verify_objects, index_visit_fn fn,
               void *ctx, uint64_t *bad_off, const char **why)
{
	struct walk w = { .c = c, .seed = seed, .verify_objects = verify_objects, .fn = fn, .ctx = ctx };
	w.max_visits = (c->heap_end - MS_HEAP_START) / MS_ALIGN + 1;
	if (!root)
		return 0;
	int rc = walk_rec(&w, root, 0, 0);
	if (rc && bad_off)
		*bad_off = w.bad_off;
	if (rc && why)
		*why = w.why;
	return rc;
}

static int collect(void *ctx, uint64_t off, uint64_t size, int is_node, const struct disk_obj *o)
{
	struct rebuild *rb = ctx;
	if (rb->n == rb->cap) {
		size_t ncap = rb->cap ? rb->cap * 2 : 1024;
		struct alloc_block *v = realloc(rb->blocks, ncap * sizeof *v);
		if (!v)
			return MS_ENOMEM;
		rb->blocks = v;
		rb->cap = ncap;
	}
	rb->blocks[rb->n].off = off;
	rb->blocks[rb->n].size = size;
	rb->n++;
	if (is_node) {
		rb->node_bytes += alloc_round(size);
	} else {
		rb->objects++;
		rb->live_bytes += o->klen + obj_vlen(o);
		rb->obj_bytes += alloc_round(size);
	}
	return 0;
}

int rebuild_collect(const struct ictx *c, uint64_t root, uint64_t seed, bool verify_objects,
                    struct rebuild *rb, uint64_t *bad_off, const char **why)
{
	return index_walk(c, root, seed, verify_objects, collect, rb, bad_off, why);
}

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
	struct walk w = { .c = &c, .seed = m->hash_seed, .verify_objects = true, .fn = collect, .ctx = &rb,
	                  .report = report_walk, .rctx = ck };
	w.max_visits = (m->heap_end - MS_HEAP_START) / MS_ALIGN + 1;
	int rc = m->root ? walk_rec(&w, m->root, 0, 0) : 0;
	if (rc == MS_ENOMEM)
		nomem = MS_ENOMEM;
	cs->objects = rb.objects;
	cs->live_bytes = rb.live_bytes;
	cs->used_bytes = rb.obj_bytes + rb.node_bytes;
	if (w.problems == 0 && rc == 0) {
		if (rb.objects != m->objects)
			problem(ck, 0, "meta counts %llu objects, the index holds %llu",
			        (unsigned long long)m->objects, (unsigned long long)rb.objects);
		if (rb.live_bytes != m->live_bytes)
			problem(ck, 0, "meta counts %llu live bytes, the index holds %llu",
			        (unsigned long long)m->live_bytes, (unsigned long long)rb.live_bytes);
		if (rb.obj_bytes != m->obj_bytes || rb.node_bytes != m->node_bytes)
			problem(ck, 0, "meta's space totals (%llu object, %llu index bytes) disagree with the index (%llu, %llu)",
			        (unsigned long long)m->obj_bytes, (unsigned long long)m->node_bytes,
			        (unsigned long long)rb.obj_bytes, (unsigned long long)rb.node_bytes);
	}
	cs->nodes = rb.n - rb.objects;
	if (rb.n > 1)
		qsort(rb.blocks, rb.n, sizeof *rb.blocks, cmp_block);
	size_t overlaps = 0;
	for (size_t i = 1; i < rb.n; i++) {
		const struct alloc_block *p = &rb.blocks[i - 1], *q = &rb.blocks[i];
		if (q->off < p->off + p->size) {
			if (overlaps++ < 16)
				problem(ck, q->off, "block overlaps the block at %llu", (unsigned long long)p->off);
		}
	}
	if (overlaps > 16)
		problem(ck, 0, "%zu more overlapping blocks", overlaps - 16);
	if (w.problems == 0 && overlaps == 0 && !nomem) {
		struct alloc *a = NULL;
		int ar = alloc_rebuild(MS_HEAP_START, m->heap_end, rb.blocks, rb.n, &a);
		if (ar == ALLOC_ENOMEM) {
			nomem = MS_ENOMEM;
		} else if (ar) {
			/* Name the block: the rebuild takes blocks in file order, so the shortest prefix it
			 * refuses ends at the first block that is not where the allocator would put it. */
			size_t lo = 0, hi = rb.n; /* the first lo blocks rebuild; the first hi do not */
			while (hi - lo > 1) {
				size_t mid = lo + (hi - lo) / 2;
				struct alloc *pa = NULL;
				int pr = alloc_rebuild(MS_HEAP_START, m->heap_end, rb.blocks, mid, &pa);
				if (pa)
					alloc_destroy(pa);
				if (pr == 0)
					lo = mid;
				else
					hi = mid;
			}
			if (hi > 0 && hi <= rb.n)
				problem(ck, rb.blocks[hi - 1].off,
				        "block of %llu bytes lies where the allocator cannot have put it (off its size class's "
				        "slots, or in another class's run)", (unsigned long long)rb.blocks[hi - 1].size);
			else
				problem(ck, 0, "the index's blocks do not form a valid heap (allocator code %d)", ar);
		} else {
			struct alloc_stats st;
			alloc_stats(a, &st);
			cs->free_bytes = st.free_bytes;
			int cr = alloc_check(a);
			if (cr == ALLOC_ENOMEM)
				nomem = MS_ENOMEM;
			else if (cr || st.used_bytes + st.free_bytes + st.run_slack != st.region_bytes)
				problem(ck, 0, "used (%llu) + free (%llu) + slack (%llu) bytes do not add up to the heap (%llu)",
				        (unsigned long long)st.used_bytes, (unsigned long long)st.free_bytes,
				        (unsigned long long)st.run_slack, (unsigned long long)st.region_bytes);
			if (m->ckpt_off && m->ckpt_txnid == m->txnid) {
				const uint8_t *blob = base + m->ckpt_off;
				uint64_t blen = 0;
				if (m->ckpt_len > 8)
					memcpy(&blen, blob, 8);
				struct alloc *ca = NULL;
				int ir = 0;
				if (m->ckpt_len <= 8 || blen > m->ckpt_len - 8 ||
				    blob_hash(blob, m->ckpt_len) != m->ckpt_hash) {
					problem(ck, m->ckpt_off, "allocator checkpoint fails its checksum");
				} else if ((ir = alloc_import(blob + 8, (size_t)blen, &ca)) == ALLOC_ENOMEM) {
					nomem = MS_ENOMEM;
				} else if (ir) {
					problem(ck, m->ckpt_off, "allocator checkpoint cannot be loaded");
				} else {
					struct alloc_stats cst;
					alloc_stats(ca, &cst);
					if (cst.used_bytes != st.used_bytes + alloc_round(m->ckpt_len) ||
					    cst.region_bytes != st.region_bytes) {
						problem(ck, m->ckpt_off, "allocator checkpoint disagrees with the index");
					} else {
						/* Same totals is not enough: open trusts the checkpoint, so it must book
						 * exactly the index's blocks and itself, or writers would hand out
						 * live space. Freeing each from it proves that. */
						size_t k = 0;
						while (k < rb.n && alloc_free(ca, rb.blocks[k].off, rb.blocks[k].size) == 0)
							k++;
						if (k < rb.n)
							problem(ck, rb.blocks[k].off,
							        "allocator checkpoint does not book this block as the index does");
						else if (alloc_free(ca, m->ckpt_off, m->ckpt_len) ||
						         (alloc_stats(ca, &cst), cst.used_bytes != 0))
							problem(ck, m->ckpt_off, "allocator checkpoint books space the index does not use");
					}
					alloc_destroy(ca);
				}
			}
			alloc_destroy(a);
		}
	}
	free(rb.blocks);
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
	if (fstat(fd, &sb)) {
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
	for (int i = 0; i < 2; i++) {
		if (sys_pread_full(fd, &m[i], sizeof m[i], (uint64_t)i * MS_PAGE)) {
			rc = err_errno(MS_EIO, errno, "read %s", path);
			goto out;
		}
		mrc[i] = meta_check(&m[i], size, &why[i]);
		if (mrc[i] == 0 && m[i].rec_count &&
		    sys_pread_full(fd, rec[i], m[i].rec_count * sizeof rec[i][0], (uint64_t)i * MS_PAGE + sizeof m[i])) {
			rc = err_errno(MS_EIO, errno, "read %s", path);
			goto out;
		}
		if (mrc[i] == 0 && m[i].txnid % 2 != (uint64_t)i)
			mrc[i] = MS_ECORRUPT, why[i] = "transaction id in the wrong meta page";
	}
	if (mrc[0] == MS_EVERSION || mrc[1] == MS_EVERSION) {
		rc = err_set(MS_EVERSION, "check %s: format newer than this library", path);
		goto out;
	}
	if (mrc[0] && mrc[1]) {
		problem(&ck, 0, "meta page 0: %s", why[0]);
		problem(&ck, MS_PAGE, "meta page 1: %s", why[1]);
		goto done;
	}
	int newest = mrc[0] ? 1 : mrc[1] ? 0 : (m[0].txnid > m[1].txnid ? 0 : 1);
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
		problem(&ck, (uint64_t)newest * MS_PAGE, "meta page %d: %s", newest, why[newest]);
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
