/* store/hash.h - the checksums and the key hash, inline on the lookup path (XXH3 from libxxhash's
 * header, compiled into the caller so short inputs cost no call and no dispatch). */
#ifndef MSTORE_HASH_H
#define MSTORE_HASH_H

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "format.h"

#ifdef MS_DEBUG
extern uint64_t ms_test_hash_mask; /* test builds: tests narrow the key hash to force collisions */
#define MS_KEY_HASH_MASK ms_test_hash_mask
#else
#define MS_KEY_HASH_MASK (~0ull)
#endif

static inline uint64_t key_hash(uint64_t seed, const void *key, size_t klen)
{
	return XXH3_64bits_withSeed(key, klen, seed) & MS_KEY_HASH_MASK;
}

static inline uint64_t obj_seed(const struct disk_obj *o)
{
	return o->vlen_flags ^ ((uint64_t)o->klen * 0x9e3779b97f4a7c15ull);
}

/* Over the object's key and value that follow the header, seeded with the header but its clock. */
static inline uint32_t obj_hash(const struct disk_obj *o)
{
	return (uint32_t)XXH3_64bits_withSeed(o + 1, o->klen + obj_vlen(o), obj_seed(o));
}

/* XXH3's secret for MS_SEED_NODE, made once at load (format.c): with it a node of more than 240
 * bytes hashes without deriving the secret again, to the same value as XXH3_64bits_withSeed. */
extern unsigned char ms_node_secret[XXH3_SECRET_DEFAULT_SIZE];
extern unsigned char ms_bucket_secret[XXH3_SECRET_DEFAULT_SIZE];

static inline uint32_t node_hash(const struct disk_node *n, unsigned nslots)
{
	return (uint32_t)XXH3_64bits_withSecretandSeed(&n->bitmap, 4 + 8ull * nslots, ms_node_secret,
	                                               sizeof ms_node_secret, MS_SEED_NODE);
}

static inline uint32_t bucket_hash(const struct disk_node *n, unsigned nslots)
{
	return (uint32_t)XXH3_64bits_withSecretandSeed(&n->bitmap, 4 + 8ull * nslots, ms_bucket_secret,
	                                               sizeof ms_bucket_secret, MS_SEED_BUCKET);
}

/* The checksum of the index block entry e points at: a node's or a bucket's. */
static inline uint32_t block_hash(const struct disk_node *n, unsigned nslots, uint64_t e)
{
	return ent_is_bucket(e) ? bucket_hash(n, nslots) : node_hash(n, nslots);
}

static inline uint64_t meta_hash(const struct disk_meta *m)
{
	return XXH3_64bits_withSeed(m, __builtin_offsetof(struct disk_meta, hash), MS_SEED_META);
}

/* A commit record: the list itself (meta.rec_hash), and each block it lists. */
static inline uint64_t rec_hash(const void *p, size_t len)
{
	return XXH3_64bits_withSeed(p, len, MS_SEED_REC);
}

static inline uint64_t blob_hash(const void *p, size_t len)
{
	return XXH3_64bits_withSeed(p, len, MS_SEED_CKPT);
}

#endif
