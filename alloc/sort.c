/* alloc/sort.c - alx_sort_kv, the stable radix sort of (key, value) pairs. It has a file of its own
 * because four files sort with it and none is its natural home: extents.c (free extents by length, to
 * build the size treap), and check.c, rebuild.c and export.c (blocks or units by address). */
#include "alloc_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- radix sort ---- */

/* Stable LSD radix sort; the digit width adapts so typical keys (offsets of a region of a few GiB,
 * in 16-byte units) need two passes. */
int alx_sort_kv(struct alx_kv *v, size_t n)
{
	if (n < 2)
		return ALLOC_OK;
	if (n <= 32) { /* insertion sort: stable, and cheaper than a histogram for tiny inputs */
		for (size_t i = 1; i < n; i++) {
			struct alx_kv x = v[i];
			size_t j = i;
			for (; j > 0 && v[j - 1].key > x.key; j--)
				v[j] = v[j - 1];
			v[j] = x;
		}
		return ALLOC_OK;
	}
	uint64_t any = 0;
	for (size_t i = 0; i < n; i++)
		any |= v[i].key;
	unsigned bits = any ? 64u - (unsigned)__builtin_clzll(any) : 0;
	if (bits == 0)
		return ALLOC_OK;
	/* digits of at most 16 bits, fewer when n is small so the histogram stays cheap */
	unsigned maxdigit = n < 4096 ? 8u : 16u;
	unsigned passes = (bits + maxdigit - 1) / maxdigit, digit = (bits + passes - 1) / passes;
	size_t nb = (size_t)1 << digit, mask = nb - 1;
	struct alx_kv *tmp = malloc(n * sizeof *tmp);
	size_t *cnt = malloc(nb * sizeof *cnt);
	if (!tmp || !cnt) {
		free(tmp);
		free(cnt);
		return ALLOC_ENOMEM;
	}
	struct alx_kv *src = v, *dst = tmp;
	for (unsigned p = 0, shift = 0; p < passes; p++, shift += digit) {
		memset(cnt, 0, nb * sizeof *cnt);
		for (size_t i = 0; i < n; i++)
			cnt[(src[i].key >> shift) & mask]++;
		size_t sum = 0;
		for (size_t d = 0; d < nb; d++) {
			size_t c = cnt[d];
			cnt[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			dst[cnt[(src[i].key >> shift) & mask]++] = src[i];
		struct alx_kv *t = src;
		src = dst;
		dst = t;
	}
	if (src != v)
		memcpy(v, src, n * sizeof *v);
	free(tmp);
	free(cnt);
	return ALLOC_OK;
}
