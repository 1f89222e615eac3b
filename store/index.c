/* store/index.c - the index: a copy-on-write hash array mapped trie from key hash to object.
 *
 * Each node consumes 5 bits of the key's 64-bit hash (format.h); a path ends in an object entry or
 * in a bucket, which holds up to MS_BUCKET_MAX objects of the path's prefix unordered, so a lookup
 * makes one dependent miss for the bottom of the index however its keys fall into chunks. A lookup
 * verifies each node's or bucket's checksum and then the object's, so a read never returns a wrong
 * value. Changes copy the path from the root (snapshots for free); blocks this transaction already
 * copied ("fresh" blocks) are changed in place. An operation allocates everything it needs before it
 * changes anything, so a failure (MS_ENOSPC) leaves the transaction exactly as it was.
 */
#include <string.h>

#include "internal.h"

static inline unsigned chunk(uint64_t h, unsigned depth)
{
	return (unsigned)(h >> (depth * MS_FANOUT_BITS)) & (MS_FANOUT - 1);
}

static inline bool is_fresh(const struct ictx *c, ms_off off)
{
	return c->fresh && table_get(c->fresh, off) != NULL;
}

#define MAX_COLLISIONS 65536u

/* The memo word of a block: its offset's high bits, its kind (a bucket or a node: the same bytes
 * verified as one are not verified as the other) and its stored hash. */
static inline uint64_t memo_word(ms_off off, uint64_t ent, uint32_t hash)
{
	return ((off >> (4 + MEMO_BITS)) << 33 | (uint64_t)ent_is_bucket(ent) << 32) | hash;
}

/* The memo slot of the node at off. The offset's high bits (kept in the word) are mixed into the
 * low ones, so nodes at the same place in runs 128 KiB apart do not all share one slot; the slot and
 * the word still tell the offset exactly. */
static inline unsigned memo_slot(ms_off off)
{
	return (unsigned)((off >> 4) + (uint32_t)(off >> (4 + MEMO_BITS)) * 0x9e3779b1u) & ((1u << MEMO_BITS) - 1);
}

/* Is the node at off (n slots) intact? Checks the memo first at the top levels. */
static inline bool node_verified(const struct ictx *c, const struct disk_node *nd, uint64_t ent, unsigned n,
                                 unsigned depth)
{
	ms_off off = ent_off(ent);
	if (is_fresh(c, off))
		return true;
	_Atomic uint64_t *m = NULL;
	if (c->memo && depth < MEMO_DEPTH) {
		m = &c->memo[memo_slot(off)];
		if (atomic_load_explicit(m, memory_order_relaxed) == memo_word(off, ent, nd->hash))
			return true;
	}
	if (MS_UNLIKELY(block_hash(nd, n, ent) != nd->hash))
		return false;
	if (m)
		atomic_store_explicit(m, memo_word(off, ent, nd->hash), memory_order_relaxed);
	return true;
}

/* Bounds and shape of the node or bucket entry ent points at, without its checksum. */
static inline int node_at(const struct ictx *c, uint64_t ent, unsigned depth, const struct disk_node **out,
                          unsigned *nslots)
{
	if (MS_UNLIKELY(!ent_is_node(ent) || (ent & 0xc) || (ent >> 48) || depth > MS_MAX_DEPTH))
		return MS_ECORRUPT;
	ms_off off = ent_off(ent);
	const struct disk_node *nd = map_ptr(c, off, sizeof *nd);
	if (MS_UNLIKELY(!nd))
		return MS_ECORRUPT;
	unsigned n;
	if (ent_is_bucket(ent)) {
		n = nd->bitmap;
		if (MS_UNLIKELY(n == 0 || n > MS_BUCKET_MAX || depth == MS_MAX_DEPTH))
			return MS_ECORRUPT;
	} else if (MS_LIKELY(depth < MS_MAX_DEPTH)) {
		n = (unsigned)__builtin_popcount(nd->bitmap);
		if (MS_UNLIKELY(n == 0))
			return MS_ECORRUPT;
	} else {
		n = nd->bitmap;
		if (MS_UNLIKELY(n == 0 || n > MAX_COLLISIONS))
			return MS_ECORRUPT;
	}
	if (MS_UNLIKELY(!map_ptr(c, off, block_size(ent, n))))
		return MS_ECORRUPT;
	*out = nd;
	*nslots = n;
	return 0;
}

int index_node(const struct ictx *c, uint64_t ent, unsigned depth, const struct disk_node **out,
               unsigned *nslots)
{
	int rc = node_at(c, ent, depth, out, nslots);
	if (rc == 0 && MS_UNLIKELY(!node_verified(c, *out, ent, *nslots, depth)))
		rc = MS_ECORRUPT;
	return rc;
}

/* Start fetching the block an entry points at: a node's first lines, an object's header and key, or
 * the lines of a bucket a lookup scans and hashes. */
static inline void prefetch_entry(const struct ictx *c, uint64_t e)
{
	const uint8_t *p = c->base + ent_off(e); /* prefetching an untrusted address cannot fault */
	__builtin_prefetch(p);
	__builtin_prefetch(p + 64);
	__builtin_prefetch(p + 128);
	if (ent_is_bucket(e))
		for (unsigned line = 3; line < 8; line++) /* up to a full bucket's 512 bytes */
			__builtin_prefetch(p + 64 * line);
}

int index_obj(const struct ictx *c, uint64_t ent, const struct disk_obj **out)
{
	if (MS_UNLIKELY(ent & 0xf))
		return MS_ECORRUPT;
	ms_off off = ent_off(ent);
	const struct disk_obj *o = map_ptr(c, off, sizeof *o);
	if (MS_UNLIKELY(!o || o->klen == 0 || obj_flags(o) != 0))
		return MS_ECORRUPT;
	if (MS_UNLIKELY(!map_ptr(c, off, obj_size(o->klen, obj_vlen(o)))))
		return MS_ECORRUPT;
	if (!is_fresh(c, off) && MS_UNLIKELY(obj_hash(o) != o->hash))
		return MS_ECORRUPT;
	*out = o;
	return 0;
}

static inline bool obj_key_is(const struct disk_obj *o, const void *key, size_t klen)
{
	return o->klen == klen && memcmp(o + 1, key, klen) == 0;
}

/* Does entry e (an object entry) hold key? Verifies the object when its filter bits match. */
static int entry_match(const struct ictx *c, uint64_t e, uint64_t h, const void *key, size_t klen,
                       const struct disk_obj **out)
{
	if (ent_fp(e) != (uint16_t)(h >> 48))
		return MS_NOTFOUND;
	const struct disk_obj *o;
	int rc = index_obj(c, e, &o);
	if (rc)
		return rc;
	if (!obj_key_is(o, key, klen))
		return MS_NOTFOUND;
	*out = o;
	return 0;
}

/* An object found for a key: its entry (offset) and header. */
struct found {
	uint64_t ent;
	const struct disk_obj *o;
};

/* The first of entries i..n-1 of a list whose filter bits are fp, or n. */
static inline unsigned list_next(const struct disk_node *nd, unsigned i, unsigned n, uint16_t fp)
{
	while (i < n && ent_fp(nd->slot[i]) != fp)
		i++;
	return i;
}

/* Look key up in a list of n object entries (a collision list or a bucket), from entry `from` on (the
 * entries before it do not carry the key's filter bits): 0 with *pos and *f, MS_NOTFOUND, MS_ECORRUPT.
 * Only entries whose filter bits match are looked at. */
static int list_find_from(const struct ictx *c, const struct disk_node *nd, unsigned from, unsigned n,
                          uint64_t h, const void *key, size_t klen, unsigned *pos, struct found *f)
{
	const uint16_t fp = (uint16_t)(h >> 48);
	for (unsigned i = list_next(nd, from, n, fp); i < n; i = list_next(nd, i + 1, n, fp)) {
		if (ent_is_node(nd->slot[i]))
			return MS_ECORRUPT;
		int rc = entry_match(c, nd->slot[i], h, key, klen, &f->o);
		if (rc == 0) {
			f->ent = nd->slot[i];
			*pos = i;
		}
		if (rc != MS_NOTFOUND)
			return rc;
	}
	return MS_NOTFOUND;
}

static int list_find(const struct ictx *c, const struct disk_node *nd, unsigned n, uint64_t h,
                     const void *key, size_t klen, unsigned *pos, struct found *f)
{
	return list_find_from(c, nd, 0, n, h, key, klen, pos, f);
}

int index_get(const struct ictx *c, uint64_t root, uint64_t h, const void *key, size_t klen,
              const struct disk_obj **out)
{
	uint64_t ent = root;
	if (!ent)
		return MS_NOTFOUND;
	for (unsigned depth = 0;; depth++) {
		const struct disk_node *nd;
		unsigned n;
		int rc = node_at(c, ent, depth, &nd, &n);
		if (rc)
			return rc;
		if (ent_is_bucket(ent) || MS_UNLIKELY(depth == MS_MAX_DEPTH)) {
			/* Find the candidate and start fetching it before verifying the bucket, as below. */
			unsigned first = list_next(nd, 0, n, (uint16_t)(h >> 48));
			if (first < n)
				prefetch_entry(c, nd->slot[first]);
			if (!node_verified(c, nd, ent, n, depth))
				return MS_ECORRUPT;
			struct found f;
			unsigned pos;
			rc = list_find_from(c, nd, first, n, h, key, klen, &pos, &f);
			if (rc == 0)
				*out = f.o;
			return rc;
		}
		/* Read the next entry and start fetching what it points at, then verify this node while
		 * that line is on its way: the checksum's cost hides behind the miss. Nothing read from
		 * the node is used before the node has verified. */
		uint32_t bit = 1u << chunk(h, depth);
		uint64_t next = (nd->bitmap & bit) ? nd->slot[__builtin_popcount(nd->bitmap & (bit - 1))] : 0;
		if (next)
			prefetch_entry(c, next);
		if (MS_UNLIKELY(!node_verified(c, nd, ent, n, depth)))
			return MS_ECORRUPT;
		if (!next)
			return MS_NOTFOUND;
		if (!ent_is_node(next))
			return entry_match(c, next, h, key, klen, out);
		ent = next;
	}
}

/* ---- changes ---- */

/* A path of copies, the object, and a bucket split: a node per level (all keys in one chunk) and
 * up to MS_FANOUT buckets below the last. */
#define OP_MAX_BLOCKS (3 * (MS_MAX_DEPTH + 2) + MS_FANOUT)

/* One put or delete: the blocks it allocated (undone on failure) and the blocks it replaced
 * (released only on success). */
struct op {
	struct ms_txn *t;
	struct ictx c;
	const void *key;
	size_t klen;
	uint64_t h;
	unsigned n_new, n_old;
	struct alloc_block newb[OP_MAX_BLOCKS];
	struct alloc_block oldb[OP_MAX_BLOCKS];
	int64_t d_obj_bytes, d_node_bytes;
};

static int op_alloc(struct op *op, uint64_t size, int kind, ms_off *off)
{
	if (NEVER(op->n_new == OP_MAX_BLOCKS))
		return MS_ECORRUPT;
	int rc = space_alloc(op->t, size, kind, off);
	if (rc)
		return rc;
	op->newb[op->n_new].off = *off;
	op->newb[op->n_new].size = size;
	op->n_new++;
	op->c = ictx_of(op->t); /* growth may have moved the mapping and the heap end */
	int64_t r = (int64_t)alloc_round(size);
	if (kind == FRESH_NODE || kind == FRESH_BUCKET)
		op->d_node_bytes += r;
	else
		op->d_obj_bytes += r;
	return 0;
}

static int op_retire(struct op *op, ms_off off, uint64_t size, bool node)
{
	if (NEVER(op->n_old == OP_MAX_BLOCKS))
		return MS_ECORRUPT;
	op->oldb[op->n_old].off = off;
	op->oldb[op->n_old].size = size;
	op->n_old++;
	int64_t r = (int64_t)alloc_round(size);
	if (node)
		op->d_node_bytes -= r;
	else
		op->d_obj_bytes -= r;
	return 0;
}

static void op_fail(struct op *op)
{
	for (unsigned i = op->n_new; i-- > 0;)
		space_release(op->t, op->newb[i].off, op->newb[i].size);
	op->n_new = 0;
}

static void op_done(struct op *op)
{
	for (unsigned i = 0; i < op->n_old; i++)
		space_release(op->t, op->oldb[i].off, op->oldb[i].size);
	op->t->snap.obj_bytes = (uint64_t)((int64_t)op->t->snap.obj_bytes + op->d_obj_bytes);
	op->t->snap.node_bytes = (uint64_t)((int64_t)op->t->snap.node_bytes + op->d_node_bytes);
	op->t->gen++;
}

static inline struct disk_node *wnode(struct op *op, ms_off off)
{
	return (struct disk_node *)(op->t->base + off);
}

/* A new node (type ENT_NODE) or bucket (ENT_NODE | ENT_BUCKET) with n slots; the caller fills
 * bitmap and slots. */
static int new_node(struct op *op, unsigned n, uint64_t type, struct disk_node **nd, ms_off *off)
{
	int rc = op_alloc(op, block_size(type, n), ent_is_bucket(type) ? FRESH_BUCKET : FRESH_NODE, off);
	if (rc)
		return rc;
	*nd = wnode(op, *off);
	return 0;
}

/* Replace slot `pos` of node ent (n slots) with e: in place when the node is fresh, else a copy. */
static int set_slot(struct op *op, uint64_t ent, const struct disk_node *nd, unsigned n, unsigned pos,
                    uint64_t e, uint64_t *out)
{
	ms_off off = ent_off(ent);
	if (is_fresh(&op->c, off)) {
		wnode(op, off)->slot[pos] = e;
		*out = ent;
		return 0;
	}
	struct disk_node *nn;
	ms_off noff;
	int rc = new_node(op, n, ent, &nn, &noff);
	if (rc)
		return rc;
	nn->bitmap = nd->bitmap;
	memcpy(nn->slot, nd->slot, 8ull * n);
	nn->slot[pos] = e;
	*out = noff | (ent & (ENT_NODE | ENT_BUCKET));
	return op_retire(op, off, block_size(ent, n), true);
}

/* A copy of node or bucket ent with a slot inserted at pos (bitmap, or count, becomes `bitmap`), or
 * removed (e == 0). */
static int resize_node(struct op *op, uint64_t ent, const struct disk_node *nd, unsigned n, unsigned pos,
                       uint32_t bitmap, uint64_t e, bool insert, uint64_t *out)
{
	unsigned nn_slots = insert ? n + 1 : n - 1;
	struct disk_node *nn;
	ms_off noff;
	if (ent_is_bucket(ent) && bucket_cap(nn_slots) == bucket_cap(n) && is_fresh(&op->c, ent_off(ent))) {
		/* A fresh bucket changes in place while its block size stays. */
		nn = wnode(op, ent_off(ent));
		if (insert) {
			memmove(nn->slot + pos + 1, nn->slot + pos, 8ull * (n - pos));
			nn->slot[pos] = e;
		} else {
			memmove(nn->slot + pos, nn->slot + pos + 1, 8ull * (n - pos - 1));
		}
		nn->bitmap = bitmap;
		*out = ent;
		return 0;
	}
	int rc = new_node(op, nn_slots, ent, &nn, &noff);
	if (rc)
		return rc;
	nn->bitmap = bitmap;
	memcpy(nn->slot, nd->slot, 8ull * pos);
	if (insert) {
		nn->slot[pos] = e;
		memcpy(nn->slot + pos + 1, nd->slot + pos, 8ull * (n - pos));
	} else {
		memcpy(nn->slot + pos, nd->slot + pos + 1, 8ull * (n - pos - 1));
	}
	*out = noff | (ent & (ENT_NODE | ENT_BUCKET));
	return op_retire(op, ent_off(ent), block_size(ent, n), true);
}

/* The subtree at depth holding the m object entries e[] (key hashes h[]), which agree on every level
 * above depth: the lone object itself below the root, a bucket while they fit, a collision list
 * once the hash is used up, else a node whose chunks are built the same way one level down. */
static int build_subtree(struct op *op, unsigned depth, const uint64_t *e, const uint64_t *h, unsigned m,
                         uint64_t *out)
{
	struct disk_node *nd;
	ms_off off;
	int rc;
	if (m == 1 && depth > 0) {
		*out = e[0];
		return 0;
	}
	if (m <= MS_BUCKET_MAX || depth == MS_MAX_DEPTH) {
		uint64_t type = depth == MS_MAX_DEPTH ? ENT_NODE : ENT_NODE | ENT_BUCKET;
		if ((rc = new_node(op, m, type, &nd, &off)))
			return rc;
		nd->bitmap = m;
		memcpy(nd->slot, e, 8ull * m);
		*out = off | type;
		return 0;
	}
	/* Group by this level's chunk (a counting sort), then build each group. */
	uint64_t ge[MS_BUCKET_MAX + 1], gh[MS_BUCKET_MAX + 1], sub[MS_FANOUT];
	unsigned start[MS_FANOUT + 1] = { 0 }, fill[MS_FANOUT];
	if (NEVER(m > MS_BUCKET_MAX + 1))
		return MS_ECORRUPT;
	for (unsigned i = 0; i < m; i++)
		start[chunk(h[i], depth) + 1]++;
	for (unsigned c = 0; c < MS_FANOUT; c++) {
		start[c + 1] += start[c];
		fill[c] = start[c];
	}
	for (unsigned i = 0; i < m; i++) {
		unsigned c = chunk(h[i], depth);
		ge[fill[c]] = e[i];
		gh[fill[c]++] = h[i];
	}
	uint32_t bitmap = 0;
	unsigned n = 0;
	for (unsigned c = 0; c < MS_FANOUT; c++) {
		if (start[c + 1] == start[c])
			continue;
		if ((rc = build_subtree(op, depth + 1, ge + start[c], gh + start[c], start[c + 1] - start[c], &sub[n])))
			return rc;
		bitmap |= 1u << c;
		n++;
	}
	if ((rc = new_node(op, n, ENT_NODE, &nd, &off)))
		return rc;
	nd->bitmap = bitmap;
	memcpy(nd->slot, sub, 8ull * n);
	*out = ent_node(off);
	return 0;
}

/* The full key hash of the object entry e points at (for a split: a bucket keeps 16 bits of it). */
static int entry_hash(struct op *op, uint64_t e, uint64_t *h)
{
	const struct disk_obj *o;
	int rc = index_obj(&op->c, e, &o);
	if (rc)
		return rc;
	*h = key_hash(op->t->s->hash_seed, o + 1, o->klen);
	return (*h >> 48) != ent_fp(e) ? MS_ECORRUPT : 0; /* the file's word: mis-filed, not a bug here */
}

/* Put newent into bucket ent (n objects) at depth: replace the key's object, add it, or split a full
 * bucket into a subtree one level down. */
static int bucket_put(struct op *op, uint64_t ent, const struct disk_node *nd, unsigned n, unsigned depth,
                      uint64_t newent, uint64_t *out, struct found *old)
{
	unsigned pos;
	int rc = list_find(&op->c, nd, n, op->h, op->key, op->klen, &pos, old);
	if (rc == 0)
		return set_slot(op, ent, nd, n, pos, newent, out);
	if (rc != MS_NOTFOUND)
		return rc;
	if (n < MS_BUCKET_MAX)
		return resize_node(op, ent, nd, n, n, n + 1, newent, true, out);
	uint64_t e[MS_BUCKET_MAX + 1], h[MS_BUCKET_MAX + 1];
	for (unsigned i = 0; i < n; i++) {
		e[i] = nd->slot[i];
		if ((rc = entry_hash(op, e[i], &h[i])))
			return rc;
	}
	e[n] = newent;
	h[n] = op->h;
	if ((rc = build_subtree(op, depth, e, h, n + 1, out)))
		return rc;
	return op_retire(op, ent_off(ent), block_size(ent, n), true);
}

static int put_rec(struct op *op, uint64_t ent, unsigned depth, uint64_t newent, uint64_t *out,
                   struct found *old)
{
	const struct disk_node *nd;
	unsigned n;
	int rc = index_node(&op->c, ent, depth, &nd, &n);
	if (rc)
		return rc;
	if (ent_is_bucket(ent))
		return bucket_put(op, ent, nd, n, depth, newent, out, old);
	if (depth == MS_MAX_DEPTH) {
		unsigned i;
		rc = list_find(&op->c, nd, n, op->h, op->key, op->klen, &i, old);
		if (rc == 0)
			return set_slot(op, ent, nd, n, i, newent, out);
		if (rc != MS_NOTFOUND)
			return rc;
		return resize_node(op, ent, nd, n, n, n + 1, newent, true, out);
	}
	uint32_t bit = 1u << chunk(op->h, depth);
	unsigned pos = (unsigned)__builtin_popcount(nd->bitmap & (bit - 1));
	if (!(nd->bitmap & bit))
		return resize_node(op, ent, nd, n, pos, nd->bitmap | bit, newent, true, out);
	uint64_t e = nd->slot[pos], ne;
	if (ent_is_node(e)) {
		if ((rc = put_rec(op, e, depth + 1, newent, &ne, old)))
			return rc;
		if (ne == e) {
			*out = ent;
			return 0;
		}
		return set_slot(op, ent, nd, n, pos, ne, out);
	}
	rc = entry_match(&op->c, e, op->h, op->key, op->klen, &old->o);
	if (rc == 0) {
		old->ent = e;
		return set_slot(op, ent, nd, n, pos, newent, out);
	}
	if (rc != MS_NOTFOUND)
		return rc;
	/* Another key lives here: both go into a bucket one level down. */
	uint64_t pe[2] = { e, newent }, ph[2] = { 0, op->h };
	if ((rc = entry_hash(op, e, &ph[0])))
		return rc;
	if ((rc = build_subtree(op, depth + 1, pe, ph, 2, &ne)))
		return rc;
	return set_slot(op, ent, nd, n, pos, ne, out);
}

int index_put(struct ms_txn *t, uint64_t h, const void *key, size_t klen, uint64_t vlen, void **dst,
              bool hashed_later, const void *val)
{
	struct op op = { .t = t, .c = ictx_of(t), .key = key, .klen = klen, .h = h };
	uint64_t size = obj_size(klen, vlen);
	ms_off off;
	int rc = op_alloc(&op, size, hashed_later ? FRESH_OBJ_UNHASHED : FRESH_OBJ, &off);
	if (rc)
		return rc;
	struct disk_obj *o = (struct disk_obj *)(t->base + off);
	o->klen = (uint16_t)klen;
	o->clock = 0;
	o->vlen_flags = vlen;
	memcpy(o + 1, key, klen);
	if (val && vlen)
		memcpy((uint8_t *)(o + 1) + klen, val, vlen);
	if (!hashed_later)
		o->hash = obj_hash(o);
	else
		o->hash = 0;

	uint64_t newent = ent_obj(off, h), root;
	struct found old = { 0, NULL };
	if (!t->snap.root) {
		if ((rc = build_subtree(&op, 0, &newent, &h, 1, &root)))
			goto fail;
	} else if ((rc = put_rec(&op, t->snap.root, 0, newent, &root, &old))) {
		goto fail;
	}
	if (old.ent) {
		uint64_t osz = obj_size(old.o->klen, obj_vlen(old.o));
		if ((rc = op_retire(&op, ent_off(old.ent), osz, false)))
			goto fail;
		t->snap.live_bytes -= old.o->klen + obj_vlen(old.o);
	} else {
		t->snap.objects++;
	}
	t->snap.live_bytes += klen + vlen;
	t->snap.root = root;
	op_done(&op);
	if (dst)
		*dst = (uint8_t *)(t->base + off + sizeof *o + klen);
	return 0;
fail:
	op_fail(&op);
	return rc;
}

/* Remove the slot at pos of node ent; *out is 0 when the node empties, or the one object left when
 * a node below the root would hold only it (the trie stays canonical). */
static int drop_slot(struct op *op, uint64_t ent, const struct disk_node *nd, unsigned n, unsigned pos,
                     unsigned depth, uint32_t bitmap, uint64_t *out)
{
	if (n == 1) {
		*out = 0;
		return op_retire(op, ent_off(ent), block_size(ent, n), true);
	}
	if (n == 2 && depth > 0 && !ent_is_node(nd->slot[1 - pos])) {
		*out = nd->slot[1 - pos];
		return op_retire(op, ent_off(ent), block_size(ent, n), true);
	}
	return resize_node(op, ent, nd, n, pos, bitmap, 0, false, out);
}

static int del_rec(struct op *op, uint64_t ent, unsigned depth, uint64_t *out, struct found *gone)
{
	const struct disk_node *nd;
	unsigned n;
	int rc = index_node(&op->c, ent, depth, &nd, &n);
	if (rc)
		return rc;
	if (ent_is_bucket(ent) || depth == MS_MAX_DEPTH) {
		unsigned i;
		rc = list_find(&op->c, nd, n, op->h, op->key, op->klen, &i, gone);
		return rc ? rc : drop_slot(op, ent, nd, n, i, depth, n - 1, out);
	}
	uint32_t bit = 1u << chunk(op->h, depth);
	if (!(nd->bitmap & bit))
		return MS_NOTFOUND;
	unsigned pos = (unsigned)__builtin_popcount(nd->bitmap & (bit - 1));
	uint64_t e = nd->slot[pos], ne;
	if (!ent_is_node(e)) {
		if ((rc = entry_match(&op->c, e, op->h, op->key, op->klen, &gone->o)))
			return rc;
		gone->ent = e;
		return drop_slot(op, ent, nd, n, pos, depth, nd->bitmap & ~bit, out);
	}
	if ((rc = del_rec(op, e, depth + 1, &ne, gone)))
		return rc;
	if (ne == e) {
		*out = ent;
		return 0;
	}
	if (ne == 0)
		return drop_slot(op, ent, nd, n, pos, depth, nd->bitmap & ~bit, out);
	if (!ent_is_node(ne) && n == 1 && depth > 0) {
		*out = ne;
		return op_retire(op, ent_off(ent), block_size(ent, n), true);
	}
	return set_slot(op, ent, nd, n, pos, ne, out);
}

int index_del(struct ms_txn *t, uint64_t h, const void *key, size_t klen)
{
	struct op op = { .t = t, .c = ictx_of(t), .key = key, .klen = klen, .h = h };
	if (!t->snap.root)
		return MS_NOTFOUND;
	uint64_t root;
	struct found gone = { 0, NULL };
	int rc = del_rec(&op, t->snap.root, 0, &root, &gone);
	if (rc == 0)
		rc = op_retire(&op, ent_off(gone.ent), obj_size(gone.o->klen, obj_vlen(gone.o)), false);
	if (rc) {
		op_fail(&op);
		return rc;
	}
	t->snap.objects--;
	t->snap.live_bytes -= gone.o->klen + obj_vlen(gone.o);
	t->snap.root = root;
	op_done(&op);
	return 0;
}

/* ---- walking a committed tree ----
 *
 * Every reachable block of a tree, for the allocator's rebuild (index_collect) and for ms_check
 * (index_walk_report, which goes on past a problem and reports each). The walk is bounded on hostile
 * input: depth by the hash width, and the number of blocks visited by what the heap can hold, so a
 * file whose nodes share or loop cannot make it run away.
 */

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
		return walk_fail(w, ent_off(ent), "the index reaches more blocks than the heap can hold (shared nodes) (I3)"),
		       MS_ECORRUPT;
	if (index_node(w->c, ent, depth, &nd, &n))
		return walk_fail(w, ent_off(ent), "index node fails its checksum or bounds check (I3, I4)");
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
		return walk_fail(w, ent_off(ent), "index node uses hash bits that do not exist (I4)");
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
				if ((rc = walk_fail(w, ent_off(ent), ent_is_bucket(ent) ? "bucket holds an index node (I4)"
				                                                        : "collision list holds an index node (I4)")))
					return rc;
				continue;
			}
			if ((rc = walk_rec(w, e, depth + 1, p)))
				return rc;
			continue;
		}
		if (++w->visits > w->max_visits)
			return walk_fail(w, ent_off(e), "the index reaches more blocks than the heap can hold (I3)"), MS_ECORRUPT;
		const struct disk_obj *o;
		if (obj_at(w, e, &o)) {
			if ((rc = walk_fail(w, ent_off(e), w->verify_objects ? "object fails its checksum or bounds check"
			                                                      : "object header out of bounds (I3)")))
				return rc;
			continue;
		}
		if (w->verify_objects) {
			uint64_t h = key_hash(w->seed, o + 1, o->klen);
			unsigned used = (depth + !list) * MS_FANOUT_BITS;
			uint64_t mask = used >= 64 ? ~0ull : (1ull << used) - 1;
			if ((h & mask) != (p & mask) || (uint16_t)(h >> 48) != ent_fp(e)) {
				if ((rc = walk_fail(w, ent_off(e), "object is filed under the wrong hash (I4)")))
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
	if (blocks_push(&rb->b, off, size))
		return MS_ENOMEM;
	if (is_node) {
		rb->node_bytes += alloc_round(size);
	} else {
		rb->objects++;
		rb->live_bytes += o->klen + obj_vlen(o);
		rb->obj_bytes += alloc_round(size);
	}
	return 0;
}

int index_collect(const struct ictx *c, uint64_t root, uint64_t seed, bool verify_objects,
                  struct rebuild *rb, uint64_t *bad_off, const char **why)
{
	return index_walk(c, root, seed, verify_objects, collect, rb, bad_off, why);
}


int index_walk_report(const struct ictx *c, uint64_t root, uint64_t seed, struct rebuild *rb,
                      void (*report)(void *rctx, uint64_t off, const char *why), void *rctx, uint64_t *problems)
{
	struct walk w = { .c = c, .seed = seed, .verify_objects = true, .fn = collect, .ctx = rb,
	                  .report = report, .rctx = rctx };
	w.max_visits = (c->heap_end - MS_HEAP_START) / MS_ALIGN + 1;
	int rc = root ? walk_rec(&w, root, 0, 0) : 0;
	*problems = w.problems;
	return rc;
}
