/* alloc/extents.c - the free extents, kept out of band in two treaps sharing one node per extent (by
 * address to coalesce neighbours, by (length, address) for best fit with low addresses on ties); the
 * table of allocated units (runs and large blocks); large blocks. */
#include "alloc_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- spare nodes ---- */

static uint32_t next_prio(struct alloc *a)
{
	/* xorshift64*: priorities only need to be independent of the keys */
	uint64_t x = a->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	a->rng = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

struct ext *alx_node_get(struct alloc *a)
{
	struct ext *n = a->pool;
	a->pool = n->kid[0][0];
	a->pool_n--;
	memset(n, 0, sizeof *n);
	n->prio = next_prio(a);
	return n;
}

void alx_node_put(struct alloc *a, struct ext *n)
{
	n->kid[0][0] = a->pool;
	a->pool = n;
	a->pool_n++;
}

/* Make sure at least `total` nodes exist (in the treaps or spare). */
int alx_node_reserve(struct alloc *a, uint64_t total)
{
	while (a->nodes < total) {
		struct ext *n = malloc(sizeof *n);
		if (!n)
			return ALLOC_ENOMEM;
		alx_node_put(a, n);
		a->nodes++;
	}
	return ALLOC_OK;
}

/* Give back spare nodes once many units are gone; keeps nodes >= units + 2 (see alx_unit_reserve). */
void alx_node_trim(struct alloc *a)
{
	uint64_t keep = a->nruns + a->nlarge + 16;
	while (a->pool_n > 2 && a->nodes > keep) {
		struct ext *n = a->pool;
		a->pool = n->kid[0][0];
		a->pool_n--;
		a->nodes--;
		free(n);
	}
}

/* ---- treaps ---- */

static int key_less(int t, const struct ext *x, const struct ext *y)
{
	if (t == ALX_BY_SIZE && x->len != y->len)
		return x->len < y->len;
	return x->off < y->off;
}

static void upd(int t, struct ext *x)
{
	if (t != ALX_BY_SIZE)
		return;
	uint8_t f = x->fit;
	for (int d = 0; d < 2; d++) {
		const struct ext *c = x->kid[t][d];
		if (c && c->subfit > f)
			f = c->subfit;
	}
	x->subfit = f;
}

static struct ext *rot(int t, struct ext *x, int d)
{
	struct ext *y = x->kid[t][d];
	x->kid[t][d] = y->kid[t][!d];
	y->kid[t][!d] = x;
	upd(t, x);
	upd(t, y);
	return y;
}

static struct ext *tins(int t, struct ext *root, struct ext *n)
{
	if (!root) {
		n->kid[t][0] = n->kid[t][1] = NULL;
		upd(t, n);
		return n;
	}
	int d = key_less(t, root, n);
	root->kid[t][d] = tins(t, root->kid[t][d], n);
	if (root->kid[t][d]->prio > root->prio)
		return rot(t, root, d);
	upd(t, root);
	return root;
}

static struct ext *tmerge(int t, struct ext *l, struct ext *r)
{
	if (!l)
		return r;
	if (!r)
		return l;
	if (l->prio >= r->prio) {
		l->kid[t][1] = tmerge(t, l->kid[t][1], r);
		upd(t, l);
		return l;
	}
	r->kid[t][0] = tmerge(t, l, r->kid[t][0]);
	upd(t, r);
	return r;
}

static struct ext *tdel(int t, struct ext *root, struct ext *n)
{
	if (!root)
		return NULL;
	if (root == n)
		return tmerge(t, n->kid[t][0], n->kid[t][1]);
	int d = key_less(t, root, n);
	root->kid[t][d] = tdel(t, root->kid[t][d], n);
	upd(t, root);
	return root;
}

unsigned alx_hist_bucket(uint64_t len)
{
	unsigned b = 63u - (unsigned)__builtin_clzll(len);
	return b < ALLOC_HIST_BUCKETS ? b : ALLOC_HIST_BUCKETS - 1;
}

/* Largest run size (as 1..4 for 4..32 KiB) that fits [off, off+len) at its alignment relative to base. */
uint8_t alx_ext_fit(const struct alloc *a, uint64_t off, uint64_t len)
{
	uint64_t rel = off - a->base;
	for (unsigned s = ALX_RUN_MAX_SHIFT; s >= ALX_RUN_MIN_SHIFT; s--) {
		uint64_t r = 1ull << s;
		if (len < r)
			continue;
		uint64_t pad = (r - (rel & (r - 1))) & (r - 1);
		if (len - r >= pad)
			return (uint8_t)(s - ALX_RUN_MIN_SHIFT + 1);
	}
	return 0;
}

void alx_size_insert(struct alloc *a, struct ext *n)
{
	n->fit = alx_ext_fit(a, n->off, n->len);
	a->root[ALX_BY_SIZE] = tins(ALX_BY_SIZE, a->root[ALX_BY_SIZE], n);
	a->ext_n++;
	a->ext_bytes += n->len;
	a->hist[alx_hist_bucket(n->len)]++;
}

void alx_size_remove(struct alloc *a, struct ext *n)
{
	a->root[ALX_BY_SIZE] = tdel(ALX_BY_SIZE, a->root[ALX_BY_SIZE], n);
	a->ext_n--;
	a->ext_bytes -= n->len;
	a->hist[alx_hist_bucket(n->len)]--;
}

void alx_addr_insert(struct alloc *a, struct ext *n)
{
	a->root[ALX_BY_ADDR] = tins(ALX_BY_ADDR, a->root[ALX_BY_ADDR], n);
}

void alx_addr_remove(struct alloc *a, struct ext *n)
{
	a->root[ALX_BY_ADDR] = tdel(ALX_BY_ADDR, a->root[ALX_BY_ADDR], n);
}

struct ext *alx_addr_last(const struct alloc *a)
{
	struct ext *x = a->root[ALX_BY_ADDR];
	while (x && x->kid[ALX_BY_ADDR][1])
		x = x->kid[ALX_BY_ADDR][1];
	return x;
}

/* Where a new run goes: the free extent at the end of the region when it can host an aligned run of
 * 2^shift bytes, else the largest one that can. Runs are carved from the tail or the biggest free
 * space, never from the tightest: holes a freed large block left keep their size for the next block
 * of that size (a full heap that frees half its large blocks takes as many again), and small blocks
 * crowd together. */
struct ext *alx_ext_find_window(const struct alloc *a, unsigned shift)
{
	uint8_t need = (uint8_t)(shift - ALX_RUN_MIN_SHIFT + 1);
	struct ext *last = alx_addr_last(a);
	if (last && last->fit >= need)
		return last;
	struct ext *x = a->root[ALX_BY_SIZE];
	if (!x || x->subfit < need)
		return NULL;
	for (;;) {
		struct ext *r = x->kid[ALX_BY_SIZE][1];
		if (r && r->subfit >= need)
			x = r;
		else if (x->fit >= need)
			return x;
		else
			x = x->kid[ALX_BY_SIZE][0];
	}
}

/* The highest aligned window of 2^shift bytes in x: runs fill a free extent from its top while large
 * blocks fill it from its bottom, so the two kinds meet in the middle instead of interleaving (a run
 * freed between two large blocks would leave a hole too small for either). */
uint64_t alx_ext_window_start(const struct alloc *a, const struct ext *x, unsigned shift)
{
	uint64_t r = 1ull << shift;
	uint64_t top = x->off + x->len - r; /* x can host the window: len >= r */
	return top - ((top - a->base) & (r - 1));
}

/* The free extent that contains all of [off, off+len), or NULL. */
struct ext *alx_ext_containing(const struct alloc *a, uint64_t off, uint64_t len)
{
	struct ext *x = a->root[ALX_BY_ADDR], *floor = NULL;
	while (x) {
		if (x->off <= off) {
			floor = x;
			x = x->kid[ALX_BY_ADDR][1];
		} else {
			x = x->kid[ALX_BY_ADDR][0];
		}
	}
	if (!floor || off - floor->off > floor->len || floor->len - (off - floor->off) < len)
		return NULL;
	return floor;
}

/* Take [off, off+len) out of free extent x. Needs one spare node when the cut is in the middle.
 * Shortening an extent in place never changes its rank by address (its neighbours are not free),
 * so only the size treap is touched unless a piece appears or disappears. */
void alx_ext_carve(struct alloc *a, struct ext *x, uint64_t off, uint64_t len)
{
	uint64_t xend = x->off + x->len, cend = off + len;
	bool left = off > x->off, right = cend < xend;
	alx_size_remove(a, x);
	if (left) {
		x->len = off - x->off;
		alx_size_insert(a, x);
		if (right) {
			struct ext *y = alx_node_get(a);
			y->off = cend;
			y->len = xend - cend;
			alx_addr_insert(a, y);
			alx_size_insert(a, y);
		}
	} else if (right) {
		x->off = cend;
		x->len = xend - cend;
		alx_size_insert(a, x);
	} else {
		alx_addr_remove(a, x);
		alx_node_put(a, x);
	}
}

/* Return [off, off+len) (not free, inside the region) to the free extents, merging with neighbours. */
void alx_ext_give(struct alloc *a, uint64_t off, uint64_t len)
{
	struct ext *x = a->root[ALX_BY_ADDR], *p = NULL, *s = NULL;
	while (x) {
		if (x->off < off) {
			p = x;
			x = x->kid[ALX_BY_ADDR][1];
		} else {
			s = x;
			x = x->kid[ALX_BY_ADDR][0];
		}
	}
	bool jp = p && p->off + p->len == off;
	bool js = s && s->off == off + len;
	if (jp && js) {
		alx_size_remove(a, p);
		alx_size_remove(a, s);
		alx_addr_remove(a, s);
		p->len += len + s->len;
		alx_size_insert(a, p);
		alx_node_put(a, s);
	} else if (jp) {
		alx_size_remove(a, p);
		p->len += len;
		alx_size_insert(a, p);
	} else if (js) {
		alx_size_remove(a, s);
		s->off = off;
		s->len += len;
		alx_size_insert(a, s);
	} else {
		struct ext *n = alx_node_get(a);
		n->off = off;
		n->len = len;
		alx_addr_insert(a, n);
		alx_size_insert(a, n);
	}
}

/* Classic stack construction of a treap from nodes already in key order. */
static struct ext *cartesian(int t, struct ext **v, size_t n, struct ext **stack)
{
	size_t sp = 0;
	for (size_t i = 0; i < n; i++) {
		struct ext *x = v[i], *last = NULL;
		x->kid[t][0] = x->kid[t][1] = NULL;
		while (sp && stack[sp - 1]->prio < x->prio)
			last = stack[--sp];
		x->kid[t][0] = last;
		if (sp)
			stack[sp - 1]->kid[t][1] = x;
		stack[sp++] = x;
	}
	return sp ? stack[0] : NULL;
}

static void fix_subfit(struct ext *x)
{
	if (!x)
		return;
	fix_subfit(x->kid[ALX_BY_SIZE][0]);
	fix_subfit(x->kid[ALX_BY_SIZE][1]);
	upd(ALX_BY_SIZE, x);
}

int alx_ext_build(struct alloc *a, struct ext **byaddr, size_t n)
{
	if (n == 0) {
		a->root[0] = a->root[1] = NULL;
		return ALLOC_OK;
	}
	struct ext **stack = malloc(n * sizeof *stack);
	struct alx_kv *kv = malloc(n * sizeof *kv);
	if (!stack || !kv) {
		free(stack);
		free(kv);
		return ALLOC_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct ext *x = byaddr[i];
		x->fit = alx_ext_fit(a, x->off, x->len);
		a->ext_n++;
		a->ext_bytes += x->len;
		a->hist[alx_hist_bucket(x->len)]++;
		kv[i].key = x->len;
		kv[i].val = (uint64_t)(uintptr_t)x;
	}
	/* stable by length over address order = (length, address) order */
	if (alx_sort_kv(kv, n) != ALLOC_OK) {
		free(stack);
		free(kv);
		return ALLOC_ENOMEM;
	}
	a->root[ALX_BY_ADDR] = cartesian(ALX_BY_ADDR, byaddr, n, stack);
	struct ext **bysize = (struct ext **)byaddr; /* reuse: the address order is no longer needed */
	for (size_t i = 0; i < n; i++)
		bysize[i] = (struct ext *)(uintptr_t)kv[i].val;
	a->root[ALX_BY_SIZE] = cartesian(ALX_BY_SIZE, bysize, n, stack);
	fix_subfit(a->root[ALX_BY_SIZE]);
	free(stack);
	free(kv);
	return ALLOC_OK;
}

/* ---- unit table ---- */

uint64_t alx_tab_home(const struct alloc *a, uint64_t key)
{
	return (key * 0x9E3779B97F4A7C15ull) >> a->tab_shift;
}

struct alx_slot *alx_tab_find(const struct alloc *a, uint64_t key)
{
	uint64_t mask = a->tab_cap - 1;
	for (uint64_t i = alx_tab_home(a, key);; i = (i + 1) & mask) {
		struct alx_slot *s = &a->tab[i];
		if (s->key == key)
			return s;
		if (s->key == 0)
			return NULL;
	}
}

static void tab_place(struct alloc *a, uint64_t key, uint64_t val)
{
	uint64_t mask = a->tab_cap - 1, i = alx_tab_home(a, key);
	while (a->tab[i].key != 0)
		i = (i + 1) & mask;
	a->tab[i].key = key;
	a->tab[i].val = val;
}

static int tab_rehash(struct alloc *a, uint64_t cap)
{
	struct alx_slot *old = a->tab, *nt = calloc(cap, sizeof *nt);
	uint64_t oldcap = a->tab_cap;
	if (!nt)
		return ALLOC_ENOMEM;
	a->tab = nt;
	a->tab_cap = cap;
	a->tab_shift = 64u - (unsigned)__builtin_ctzll(cap);
	for (uint64_t i = 0; i < oldcap; i++)
		if (old[i].key)
			tab_place(a, old[i].key, old[i].val);
	free(old);
	return ALLOC_OK;
}

/* Room for `extra` more entries at a load of at most 3/4 (linear probing stays short). */
int alx_tab_reserve(struct alloc *a, uint64_t extra)
{
	uint64_t want = a->tab_n + extra, cap = a->tab_cap;
	while (want > cap / 4 * 3) {
		if (cap > UINT64_MAX / 2 / sizeof(struct alx_slot))
			return ALLOC_ENOMEM;
		cap *= 2;
	}
	return cap == a->tab_cap ? ALLOC_OK : tab_rehash(a, cap);
}

void alx_tab_put(struct alloc *a, uint64_t key, uint64_t val)
{
	tab_place(a, key, val);
	a->tab_n++;
}

/* Delete by backward shift so lookups never need tombstones. May shrink the table (best effort). */
void alx_tab_del(struct alloc *a, struct alx_slot *s)
{
	uint64_t mask = a->tab_cap - 1, i = (uint64_t)(s - a->tab), j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (a->tab[j].key == 0)
			break;
		uint64_t k = alx_tab_home(a, a->tab[j].key);
		/* move j into the hole at i unless its home lies cyclically in (i, j] */
		bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
		if (!stays) {
			a->tab[i] = a->tab[j];
			i = j;
		}
	}
	a->tab[i].key = 0;
	a->tab[i].val = 0;
	a->tab_n--;
	if (a->tab_cap > 64 && a->tab_n < a->tab_cap / 8)
		(void)tab_rehash(a, a->tab_cap / 2);
}

/* Everything creating a unit might need, taken before anything changes: a table slot, and nodes so
 * that nodes >= units + 2 still holds after it. Free extents never outnumber units + 1 (they are
 * maximal and separated by units), so every later free finds a spare node. */
int alx_unit_reserve(struct alloc *a)
{
	int rc = alx_tab_reserve(a, 1);
	if (rc == ALLOC_OK)
		rc = alx_node_reserve(a, a->nruns + a->nlarge + 3);
	return rc;
}

/* ---- large blocks ---- */

int alx_large_alloc(struct alloc *a, uint64_t size, uint64_t *off)
{
	uint64_t len = alloc_round(size);
	struct ext *x = a->root[ALX_BY_SIZE], *best = NULL;
	while (x) {
		if (x->len >= len) {
			best = x;
			x = x->kid[ALX_BY_SIZE][0];
		} else {
			x = x->kid[ALX_BY_SIZE][1];
		}
	}
	if (!best)
		return ALLOC_ENOSPC;
	int rc = alx_unit_reserve(a);
	if (rc != ALLOC_OK)
		return rc;
	uint64_t o = best->off;
	alx_ext_carve(a, best, o, len);
	alx_tab_put(a, o | ALX_TAG_LARGE, size);
	a->nlarge++;
	a->blocks++;
	a->used += len;
	a->waste += len - size;
	*off = o;
	return ALLOC_OK;
}

int alx_large_free(struct alloc *a, uint64_t off, uint64_t size)
{
	struct alx_slot *s = alx_tab_find(a, off | ALX_TAG_LARGE);
	if (!s || s->val != size)
		return ALLOC_EINVAL;
	uint64_t len = alloc_round(size);
	alx_tab_del(a, s);
	alx_ext_give(a, off, len);
	a->nlarge--;
	a->blocks--;
	a->used -= len;
	a->waste -= len - size;
	alx_node_trim(a);
	return ALLOC_OK;
}

int alx_large_mark(struct alloc *a, uint64_t off, uint64_t size)
{
	uint64_t len = alloc_round(size);
	if (len == 0 || len > a->end - off)
		return ALLOC_EINVAL;
	struct ext *x = alx_ext_containing(a, off, len);
	if (!x)
		return ALLOC_EINVAL;
	int rc = alx_unit_reserve(a);
	if (rc != ALLOC_OK)
		return rc;
	alx_ext_carve(a, x, off, len);
	alx_tab_put(a, off | ALX_TAG_LARGE, size);
	a->nlarge++;
	a->blocks++;
	a->used += len;
	a->waste += len - size;
	return ALLOC_OK;
}
