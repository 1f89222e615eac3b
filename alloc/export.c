/* alloc/export.c - the checkpoint blob: alloc_export_size and alloc_export write the whole state,
 * alloc_import validates a blob and makes an allocator from it (through alx_build, see rebuild.c). */
#include "alloc_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- export / import ---- */

/* Blob layout, all little-endian:
 *   header (64 bytes): magic "MSALLOC\0", u32 version, u32 header size, u64 total size, u64 base,
 *                      u64 end, u64 run count, u64 large-block count, u64 reserved (0)
 *   runs by start:     u64 start, u8 class, u8 0, u16 0, u32 free slots, bitmap words, nibbles
 *                      padded with zeros to 8 bytes
 *   large by offset:   u64 offset, u64 requested size
 *   trailer:           u64 checksum of everything before it
 * Free extents are not stored: they are the gaps between units. */
#define BLOB_MAGIC "MSALLOC"
#define BLOB_VERSION 1u
#define BLOB_HEADER 64u
#define BLOB_TRAILER 8u

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Each step is a bijection of the state, so changing any single 8-byte word (a flipped bit, say)
 * always changes the result; wider damage is caught with probability 1 - 2^-64. */
static uint64_t blob_sum(const uint8_t *p, size_t n)
{
	uint64_t h = 0x6d73746f7265616cull ^ n;
	for (size_t i = 0; i + 8 <= n; i += 8) {
		h ^= get64(p + i);
		h *= 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 29);
}

static size_t run_record(unsigned c)
{
	const struct alx_class *cl = &alx_classes[c];
	return 16u + cl->nwords * 8u + ((cl->nibbytes + 7u) & ~7u);
}

size_t alloc_export_size(const struct alloc *a)
{
	if (!a)
		return 0;
	size_t n = BLOB_HEADER + BLOB_TRAILER + a->nlarge * 16u;
	for (unsigned c = 0; c < ALX_NCLASSES; c++)
		n += a->heap[c].nruns * run_record(c);
	return n;
}

int alloc_export(const struct alloc *a, void *buf, size_t cap, size_t *len)
{
	if (!a || (!buf && cap))
		return ALLOC_EINVAL;
	size_t need = alloc_export_size(a);
	if (len)
		*len = need;
	if (cap < need)
		return ALLOC_EINVAL;
	struct alx_kv *units = malloc((a->tab_n + 1) * sizeof *units);
	if (!units)
		return ALLOC_ENOMEM;
	size_t n = 0;
	for (uint64_t i = 0; i < a->tab_cap; i++)
		if (a->tab[i].key)
			units[n++] = (struct alx_kv){ a->tab[i].key & ~(uint64_t)ALX_TAG_MASK, i };
	if (alx_sort_kv(units, n) != ALLOC_OK) {
		free(units);
		return ALLOC_ENOMEM;
	}
	uint8_t *p = buf;
	memset(p, 0, need);
	memcpy(p, BLOB_MAGIC, sizeof BLOB_MAGIC);
	put32(p + 8, BLOB_VERSION);
	put32(p + 12, BLOB_HEADER);
	put64(p + 16, need);
	put64(p + 24, a->base);
	put64(p + 32, a->end);
	put64(p + 40, a->nruns);
	put64(p + 48, a->nlarge);
	size_t pos = BLOB_HEADER;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			const struct alx_slot *s = &a->tab[units[i].val];
			if (pass == 0 && (s->key & ALX_TAG_MASK) == ALX_TAG_RUN) {
				const struct run *r = (const struct run *)(uintptr_t)s->val;
				const struct alx_class *cl = &alx_classes[r->cls];
				put64(p + pos, r->start);
				p[pos + 8] = r->cls;
				put32(p + pos + 12, r->nfree);
				pos += 16;
				for (unsigned w = 0; w < cl->nwords; w++, pos += 8)
					put64(p + pos, r->freebits[w]);
				memcpy(p + pos, alx_run_cnibs(r), cl->nibbytes);
				pos += (cl->nibbytes + 7u) & ~7u;
			} else if (pass == 1 && (s->key & ALX_TAG_MASK) == ALX_TAG_LARGE) {
				put64(p + pos, units[i].key);
				put64(p + pos + 8, s->val);
				pos += 16;
			}
		}
	}
	put64(p + pos, blob_sum(p, pos));
	free(units);
	return ALLOC_OK;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Parse one run record at p (bounds already checked) into a fresh run, or NULL when inconsistent. */
static struct run *parse_run(const uint8_t *p, uint64_t base, uint64_t end, int *rc)
{
	*rc = ALLOC_ECORRUPT;
	uint64_t start = get64(p);
	unsigned c = p[8];
	if (c >= ALX_NCLASSES || !all_zero(p + 9, 3))
		return NULL;
	const struct alx_class *cl = &alx_classes[c];
	uint64_t rsize = 1ull << cl->shift;
	uint32_t nfree = get32(p + 12);
	if (start < base || start > end || ((start - base) & (rsize - 1)) || rsize > end - start || nfree >= cl->nslots)
		return NULL;
	struct run *r = alx_run_new(c, start);
	if (!r) {
		*rc = ALLOC_ENOMEM;
		return NULL;
	}
	unsigned count = 0;
	for (unsigned w = 0; w < cl->nwords; w++) {
		uint64_t bits = get64(p + 16 + 8u * w);
		if (bits & ~r->freebits[w]) /* alx_run_new set exactly the valid slots */
			goto bad;
		r->freebits[w] = bits;
		count += (unsigned)__builtin_popcountll(bits);
	}
	if (count != nfree)
		goto bad;
	r->nfree = (uint16_t)nfree;
	const uint8_t *nsrc = p + 16 + 8u * cl->nwords;
	uint8_t *nibs = alx_run_nibs(r);
	memcpy(nibs, nsrc, cl->nibbytes);
	if (!all_zero(nsrc + cl->nibbytes, ((cl->nibbytes + 7u) & ~7u) - cl->nibbytes))
		goto bad;
	if ((cl->nslots & 1u) && (nibs[cl->nslots >> 1] >> 4))
		goto bad;
	for (unsigned i = 0; i < cl->nslots; i++)
		if (((r->freebits[i >> 6] >> (i & 63u)) & 1u) && alx_nib_get(nibs, i))
			goto bad;
	while (r->hint + 1u < cl->nwords && r->freebits[r->hint] == 0)
		r->hint++;
	return r;
bad:
	free(r);
	return NULL;
}

int alloc_import(const void *buf, size_t len, struct alloc **out)
{
	if (!out || (!buf && len))
		return ALLOC_EINVAL;
	const uint8_t *p = buf;
	if (len < BLOB_HEADER + BLOB_TRAILER || len % 8 || memcmp(p, BLOB_MAGIC, sizeof BLOB_MAGIC) ||
	    get32(p + 8) != BLOB_VERSION || get32(p + 12) != BLOB_HEADER || get64(p + 16) != len ||
	    get64(p + 56) != 0 || blob_sum(p, len - BLOB_TRAILER) != get64(p + len - BLOB_TRAILER))
		return ALLOC_ECORRUPT;
	uint64_t base = get64(p + 24), end = get64(p + 32), nruns = get64(p + 40), nlarge = get64(p + 48);
	size_t body = len - BLOB_HEADER - BLOB_TRAILER;
	/* the smallest run record is 32 bytes, a large one 16: bound the counts before allocating */
	if (base % ALLOC_ALIGN || end % ALLOC_ALIGN || end < base || nruns > body / 32 || nlarge > body / 16 ||
	    nruns * 32 + nlarge * 16 > body)
		return ALLOC_ECORRUPT;
	size_t n = (size_t)(nruns + nlarge);
	struct alx_unit *u = malloc((n ? n : 1) * sizeof *u), *m = malloc((n ? n : 1) * sizeof *m);
	if (!u || !m) {
		free(u);
		free(m);
		return ALLOC_ENOMEM;
	}
	int rc = ALLOC_ECORRUPT;
	size_t k = 0, pos = BLOB_HEADER, stop = len - BLOB_TRAILER;
	for (uint64_t i = 0; i < nruns; i++) {
		if (stop - pos < 16 || p[pos + 8] >= ALX_NCLASSES || stop - pos < run_record(p[pos + 8]))
			goto fail;
		struct run *r = parse_run(p + pos, base, end, &rc);
		if (!r)
			goto fail;
		u[k++] = (struct alx_unit){ r->start, 1ull << alx_classes[r->cls].shift, r, 0 };
		if (k > 1 && u[k - 2].start >= r->start) {
			rc = ALLOC_ECORRUPT;
			goto fail;
		}
		pos += run_record(r->cls);
	}
	rc = ALLOC_ECORRUPT;
	for (uint64_t i = 0; i < nlarge; i++) {
		if (stop - pos < 16)
			goto fail;
		uint64_t off = get64(p + pos), size = get64(p + pos + 8), blen = alloc_round(size);
		if (size <= ALLOC_SMALL_MAX || blen == 0 || off % ALLOC_ALIGN || off < base || off >= end ||
		    blen > end - off || (i > 0 && u[k - 1].start >= off))
			goto fail;
		u[k++] = (struct alx_unit){ off, blen, NULL, size };
		pos += 16;
	}
	if (pos != stop)
		goto fail;
	/* merge the two sorted sections into address order; alx_build() rejects any overlap */
	size_t ir = 0, il = (size_t)nruns, o = 0;
	while (ir < nruns || il < n) {
		if (il >= n || (ir < nruns && u[ir].start < u[il].start))
			m[o++] = u[ir++];
		else
			m[o++] = u[il++];
	}
	free(u);
	rc = alx_build(base, end, m, n, out);
	free(m);
	return rc;
fail:
	alx_free_unit_runs(u, k);
	free(u);
	free(m);
	return rc;
}
