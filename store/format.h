/* store/format.h - the on-disk layout of an mstore file, every byte of it.
 *
 * All integers are little-endian (the only byte order this build supports; see the static assert).
 * docs/format.md is the long version with diagrams.
 *
 * File
 *   offset 0      meta page 0 (MS_PAGE bytes)
 *   offset 4096   meta page 1
 *   offset 8192   heap: objects, index nodes and the allocator checkpoint, 16-byte aligned blocks,
 *                 handed out by alloc/ over [MS_HEAP_START, meta.heap_end)
 *
 * Meta page (struct disk_meta, at the start of its page, then the commit record; the rest is zero)
 *   0   magic        8  MS_MAGIC
 *   8   version      4  format version (MS_FORMAT_VERSION)
 *   12  page_size    4  MS_PAGE
 *   16  seq        8  sequence number of this meta page (every commit and every clean close writes one)
 *   24  root         8  offset of the root index node, 0 for an empty store
 *   32  objects      8  live objects
 *   40  live_bytes   8  sum of key + value lengths
 *   48  obj_bytes    8  sum of alloc_round(object block sizes)
 *   56  node_bytes   8  sum of alloc_round(index node sizes)
 *   64  heap_end     8  end of the heap (the file is at least this long)
 *   72  hash_seed    8  seed of the key hash, random per store
 *   80  ckpt_off     8  allocator checkpoint block, 0 if none
 *   88  ckpt_len     8  its length in bytes
 *   96  ckpt_seq   8  the commit the checkpoint describes; valid only if == seq
 *   104 ckpt_hash    8  XXH3-64 of the checkpoint bytes
 *   112 flags        8  MS_META_NOSYNC: this commit was written without syncs
 *   120 created      8  creation time, seconds since the epoch
 *   128 commit_id    8  id of the newest user commit (ms_stats.txn_id); a clean close does not advance it
 *   136 rec_count    8  entries in the commit record (format version 3; 0: none), <= MS_REC_MAX
 *   144 rec_hash     8  XXH3-64 (seed MS_SEED_REC) of the record's rec_count * 24 bytes
 *   152 reserved    32  zero
 *   184 hash         8  XXH3-64 (seed MS_SEED_META) of bytes [0, 184)
 *   192 record      24n the blocks this commit wrote, when it was made durable by one sync (struct
 *                       disk_rec: offset, length, XXH3-64 with seed MS_SEED_REC of those bytes). The
 *                       meta is adopted only if every listed block holds those bytes: a crash during
 *                       the sync that wrote meta and blocks together leaves the meta unadopted.
 *
 * Index node (struct disk_node): a node of a hash array mapped trie, 5 bits of the key hash per level
 *   0   hash         4  low 32 bits of XXH3-64 (seed MS_SEED_NODE) of bytes [4, 8 + 8*n)
 *   4   bitmap       4  bit i set: slot for hash chunk i present (levels 0..MS_MAX_DEPTH-1);
 *                       at level MS_MAX_DEPTH (all 64 hash bits used) the node is a collision list
 *                       and this field is the number n of entries instead
 *   8   slot[n]      8n n = popcount(bitmap); each an entry (below)
 *
 * Bucket (format version 2; the same struct): the bottom of a path, up to MS_BUCKET_MAX objects that
 * share the path's hash prefix, in no particular order
 *   0   hash         4  low 32 bits of XXH3-64 (seed MS_SEED_BUCKET) of bytes [4, 8 + 8*n)
 *   4   count        4  n, 1..MS_BUCKET_MAX (a bucket lies at a depth below MS_MAX_DEPTH)
 *   8   slot[n]      8n object entries
 *       (spare)         the block holds bucket_cap(n) slots (15, 31 or 63: 128, 256 or 512 bytes), so
 *                       buckets fill three size classes, and a fresh one grows in place
 *
 * Entry (8 bytes, in a node slot or in meta.root)
 *   bits 0..1    00: an object; 01: an index node; 11: a bucket (10 is invalid)
 *   bits 4..47   offset >> 4 << 4 (blocks are 16-byte aligned, offsets < 2^48)
 *   bits 48..63  object entries: the top 16 bits of the key hash (a filter: a lookup whose bits differ
 *                does not touch the object); node and bucket entries: zero
 *
 * Object (struct disk_obj), followed by key then value, no padding
 *   0   hash         4  low 32 bits of XXH3-64 of key+value, seeded with the header fields (obj_seed)
 *   4   klen         2  key length, 1..MS_MAXKEY
 *   6   clock        2  recency stamp for the cache; not covered by the hash (written by readers)
 *   8   vlen_flags   8  bits 0..47 value length, bits 48..63 flags (none defined yet; must be 0)
 *
 * Invariants
 *   I1  A meta is valid when its hash matches, magic, version <= MS_FORMAT_VERSION, page size, seq <
 *       MS_SEQ_LIMIT (2^62), and all of its offsets lie within [MS_HEAP_START, heap_end) and
 *       heap_end <= file size.
 *   I2  Open uses the valid meta with the highest seq whose commit record (if any) matches the
 *       blocks it lists; the two pages hold sequences of different parity (a commit with id t writes
 *       page t % 2), so a torn write can only lose the newer one. A meta with a record is written
 *       only over a commit that is durable: the other page's meta, which is what opens if the record
 *       does not match.
 *   I3  Every block reachable from the root lies inside [MS_HEAP_START, heap_end), is 16-byte aligned,
 *       and no two reachable blocks overlap.
 *   I4  A node at level d < MS_MAX_DEPTH has a non-zero bitmap; entry i of its slot array is the one
 *       for the i-th set bit; each object below it has the hash prefix of the path to it. A bucket
 *       holds objects only, each with the hash prefix of the path to the bucket.
 *   I5  Committed nodes and objects are never written again while a snapshot can see them (except the
 *       object clock field, which no hash covers).
 *   I6  The committed index is the single source of truth for allocated space: every heap byte not in
 *       a reachable block is free. The checkpoint (when ckpt_seq == seq) is a cache of that fact,
 *       written at clean close; the checkpoint block is booked as allocated in its own blob and
 *       stays booked while the newest meta points at it (the next commit frees it).
 *   I7  meta.objects, live_bytes, obj_bytes, node_bytes equal the sums over the reachable blocks.
 */
#ifndef MSTORE_FORMAT_H
#define MSTORE_FORMAT_H

#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mstore's file format is little-endian; this build only supports little-endian hosts"
#endif

#define MS_MAGIC 0x3130455254534d89ull /* "\x89MSTRE01" read as a little-endian integer */
#define MS_FORMAT_VERSION 3u /* 2: buckets; 3: commit records; older files are read as they are */
#define MS_PAGE 4096u
#define MS_HEAP_START (2u * MS_PAGE)
#define MS_SEQ_LIMIT (1ull << 62) /* a valid meta's seq is below this (I1) */
#define MS_ALIGN 16u

#define MS_FANOUT_BITS 5u
#define MS_FANOUT (1u << MS_FANOUT_BITS)
#define MS_MAX_DEPTH 13u /* levels 0..12 consume 65 >= 64 bits of hash; level 13 is a collision list */
#define MS_BUCKET_MAX 63u /* objects in a bucket: 8 + 8 * 63 = 512 bytes, the largest size class */

#define MS_SEED_META 0x6d657461ull
#define MS_SEED_NODE 0x6e6f6465ull
#define MS_SEED_BUCKET 0x6275636bull
#define MS_SEED_CKPT 0x636b7074ull
#define MS_SEED_REC 0x7265636full

#define MS_META_NOSYNC 0x1ull

#define MS_OFF_LIMIT (1ull << 48)
#define MS_VLEN_MAX ((1ull << 48) - 1)

typedef uint64_t ms_off;

struct disk_meta {
	uint64_t magic;
	uint32_t version;
	uint32_t page_size;
	uint64_t seq;
	uint64_t root;
	uint64_t objects;
	uint64_t live_bytes;
	uint64_t obj_bytes;
	uint64_t node_bytes;
	uint64_t heap_end;
	uint64_t hash_seed;
	uint64_t ckpt_off;
	uint64_t ckpt_len;
	uint64_t ckpt_seq;
	uint64_t ckpt_hash;
	uint64_t flags;
	uint64_t created;
	uint64_t commit_id;
	uint64_t rec_count;
	uint64_t rec_hash;
	uint64_t reserved[4];
	uint64_t hash;
};

/* An entry of a meta page's commit record: a block the commit wrote. */
struct disk_rec {
	uint64_t off;
	uint64_t len;
	uint64_t hash;
};
#define MS_REC_MAX ((MS_PAGE - sizeof(struct disk_meta)) / sizeof(struct disk_rec)) /* 162 */
#define MS_REC_MAX_BYTES (1ull << 20) /* most bytes a record lists (what an open hashes to check it) */
_Static_assert(sizeof(struct disk_meta) == 192, "disk_meta size");
_Static_assert(__builtin_offsetof(struct disk_meta, seq) == 16, "disk_meta.seq");
_Static_assert(__builtin_offsetof(struct disk_meta, root) == 24, "disk_meta.root");
_Static_assert(__builtin_offsetof(struct disk_meta, heap_end) == 64, "disk_meta.heap_end");
_Static_assert(__builtin_offsetof(struct disk_meta, ckpt_off) == 80, "disk_meta.ckpt_off");
_Static_assert(__builtin_offsetof(struct disk_meta, flags) == 112, "disk_meta.flags");
_Static_assert(__builtin_offsetof(struct disk_meta, commit_id) == 128, "disk_meta.commit_id");
_Static_assert(__builtin_offsetof(struct disk_meta, rec_count) == 136, "disk_meta.rec_count");
_Static_assert(__builtin_offsetof(struct disk_meta, hash) == 184, "disk_meta.hash");
_Static_assert(sizeof(struct disk_rec) == 24, "disk_rec size");

struct disk_node {
	uint32_t hash;
	uint32_t bitmap;
	uint64_t slot[];
};
_Static_assert(sizeof(struct disk_node) == 8, "disk_node size");
_Static_assert(__builtin_offsetof(struct disk_node, bitmap) == 4, "disk_node.bitmap");

struct disk_obj {
	uint32_t hash;
	uint16_t klen;
	uint16_t clock;
	uint64_t vlen_flags;
};
_Static_assert(sizeof(struct disk_obj) == 16, "disk_obj size");
_Static_assert(__builtin_offsetof(struct disk_obj, klen) == 4, "disk_obj.klen");
_Static_assert(__builtin_offsetof(struct disk_obj, clock) == 6, "disk_obj.clock");
_Static_assert(__builtin_offsetof(struct disk_obj, vlen_flags) == 8, "disk_obj.vlen_flags");

/* Entry encoding. ent_is_node: an index block, node or bucket (what a lookup steps into). */
#define ENT_NODE 0x1ull
#define ENT_BUCKET 0x2ull
#define ENT_OFF_MASK 0x0000fffffffffff0ull
static inline int ent_is_node(uint64_t e) { return (int)(e & ENT_NODE); }
static inline int ent_is_bucket(uint64_t e) { return (e & 3) == 3; }
static inline ms_off ent_off(uint64_t e) { return e & ENT_OFF_MASK; }
static inline uint16_t ent_fp(uint64_t e) { return (uint16_t)(e >> 48); }
static inline uint64_t ent_node(ms_off off) { return off | ENT_NODE; }
static inline uint64_t ent_bucket(ms_off off) { return off | ENT_NODE | ENT_BUCKET; }
static inline uint64_t ent_obj(ms_off off, uint64_t h) { return off | (h & 0xffff000000000000ull); }

static inline uint64_t obj_vlen(const struct disk_obj *o) { return o->vlen_flags & MS_VLEN_MAX; }
static inline uint64_t obj_flags(const struct disk_obj *o) { return o->vlen_flags >> 48; }
static inline uint64_t obj_size(uint64_t klen, uint64_t vlen) { return sizeof(struct disk_obj) + klen + vlen; }
static inline uint64_t node_size(unsigned n) { return sizeof(struct disk_node) + 8ull * n; }
/* Slots a bucket of n objects has room for: its block is node_size(bucket_cap(n)) bytes (never fewer
 * than n slots, even for a count no valid bucket has). */
static inline unsigned bucket_cap(unsigned n) { return n <= 15 ? 15 : n <= 31 ? 31 : n <= 63 ? 63 : n; }
/* The block size of the index block entry e points at, holding n slots. */
static inline uint64_t block_size(uint64_t e, unsigned n)
{
	return node_size(ent_is_bucket(e) ? bucket_cap(n) : n);
}
/* Slots of the index block that entry e points at (depth: the block's), before any check of it. */
static inline unsigned block_slots(const struct disk_node *nd, uint64_t e, unsigned depth)
{
	return ent_is_bucket(e) || depth >= MS_MAX_DEPTH ? nd->bitmap : (unsigned)__builtin_popcount(nd->bitmap);
}

#endif
