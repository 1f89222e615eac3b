/* store/table.c - a small open-addressing hash map keyed by block offset (linear probing with
 * backward-shift deletion, so no tombstones). Used for a write transaction's fresh blocks, where
 * every put looks up and inserts. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void table_init(struct table *t) { memset(t, 0, sizeof *t); }

void table_free(struct table *t)
{
	free(t->keys);
	free(t->vals);
	table_init(t);
}

void table_clear(struct table *t)
{
	if (t->len)
		memset(t->keys, 0, t->cap * sizeof *t->keys);
	t->len = 0;
}

static inline size_t slot_of(uint64_t key, size_t cap)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	return (size_t)key & (cap - 1);
}

static int table_grow(struct table *t)
{
	size_t ncap = t->cap ? t->cap * 2 : 64;
	uint64_t *nk = calloc(ncap, sizeof *nk), *nv = malloc(ncap * sizeof *nv);
	if (!nk || !nv) {
		free(nk);
		free(nv);
		return MS_ENOMEM;
	}
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->keys[i])
			continue;
		size_t j = slot_of(t->keys[i], ncap);
		while (nk[j])
			j = (j + 1) & (ncap - 1);
		nk[j] = t->keys[i];
		nv[j] = t->vals[i];
	}
	free(t->keys);
	free(t->vals);
	t->keys = nk, t->vals = nv, t->cap = ncap;
	return 0;
}

int table_put(struct table *t, uint64_t key, uint64_t val)
{
	ms_assert(key != 0);
	if ((t->len + 1) * 4 > t->cap * 3) {
		int rc = table_grow(t);
		if (rc)
			return rc;
	}
	size_t i = slot_of(key, t->cap);
	while (t->keys[i] && t->keys[i] != key)
		i = (i + 1) & (t->cap - 1);
	if (!t->keys[i])
		t->len++;
	t->keys[i] = key;
	t->vals[i] = val;
	return 0;
}

uint64_t *table_get(const struct table *t, uint64_t key)
{
	if (!t->len)
		return NULL;
	size_t i = slot_of(key, t->cap);
	while (t->keys[i]) {
		if (t->keys[i] == key)
			return &t->vals[i];
		i = (i + 1) & (t->cap - 1);
	}
	return NULL;
}

bool table_del(struct table *t, uint64_t key)
{
	if (!t->len)
		return false;
	size_t mask = t->cap - 1, i = slot_of(key, t->cap);
	while (t->keys[i] != key) {
		if (!t->keys[i])
			return false;
		i = (i + 1) & mask;
	}
	/* Backward-shift: move later members of the probe run into the hole when that keeps them
	 * reachable from their home slot. */
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (!t->keys[j])
			break;
		size_t home = slot_of(t->keys[j], t->cap);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			t->keys[i] = t->keys[j];
			t->vals[i] = t->vals[j];
			i = j;
		}
	}
	t->keys[i] = 0;
	t->len--;
	return true;
}

bool table_next(const struct table *t, size_t *pos, uint64_t *key, uint64_t *val)
{
	for (size_t i = *pos; i < t->cap; i++) {
		if (t->keys[i]) {
			*key = t->keys[i];
			*val = t->vals[i];
			*pos = i + 1;
			return true;
		}
	}
	*pos = t->cap;
	return false;
}
