/* store/iter.c - ms_iter: every object of a snapshot, visited in file order. */
#include <stdlib.h>

#include "internal.h"

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

