/* store/internal.h - private declarations shared by the parts of store/.
 *
 * Who owns what, lowest first (a file calls only files above it in this list, and the prefix of a
 * function names its file):
 *   error.c  codes and messages (err_)          sys.c     the system-call seam (sys_, ms_sys)
 *   table.c  a map keyed by offset (table_)     format.c  the meta page and checkpoint (meta_, ckpt_)
 *   map.c    the mapping and its growth (map_)  readers.c the lock file: writer lock, reader table (readers_)
 *   snap.c   the committed state a snapshot sees, read from the meta pages (snap_)
 *   space.c  allocation, room, pending frees, the MS_NOSYNC quarantine, the audit (space_)
 *   index.c  the hash trie: lookups, changes, the walk of a whole tree (index_)
 *   recover.c the allocator brought back: at first open, for a writer after another's commit (recover_)
 *   txn.c    transactions and the commit (txn_, ms_txn_*)      iter.c   ms_iter_*
 *   store.c  open, close, the checkpoint, one-shot calls        stats.c  ms_stat   check.c  ms_check
 */
#ifndef MSTORE_INTERNAL_H
#define MSTORE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#include "alloc.h"
#include "format.h"
#include "hash.h"
#include "mstore.h"

#ifdef MS_DEBUG
/* On in test builds whatever NDEBUG says: a broken invariant of our own stops the test at once. */
void ms_assert_fail(const char *what, const char *file, int line) __attribute__((noreturn));
#define ms_assert(x) ((x) ? (void)0 : ms_assert_fail(#x, __FILE__, __LINE__))
#else
#define ms_assert(x) ((void)0)
#endif
/* SQLite's NEVER(): a branch that cannot happen still has a release-build answer. */
#define NEVER(x) (ms_assert(!(x)), (x))

#define MS_LIKELY(x) __builtin_expect(!!(x), 1)
#define MS_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Verified-node memo: committed nodes never change in place, so a process remembers which it has
 * verified (offset tag and stored hash in one word; a node rewritten at the same offset has another
 * hash and is verified again). Only the top levels are remembered: they are on every lookup's path
 * and few enough to stay in cache. */
#define MEMO_BITS 13u
#define MEMO_DEPTH 3u

/* ---- error.c ---- */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int err_errno(int code, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int err_from_errno(int errnum);

/* ---- sys.c: the one seam for system calls on the store file (fault injection hooks here) ---- */
struct stat;
struct flock;
struct ms_sys {
	int (*open)(const char *path, int flags, mode_t mode);
	int (*close)(int fd);
	ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
	ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
	int (*fdatasync)(int fd);
	int (*fsync)(int fd);
	int (*fallocate)(int fd, off_t off, off_t len); /* posix_fallocate semantics: returns errno */
	int (*ftruncate)(int fd, off_t len);
	void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
	int (*munmap)(void *addr, size_t len);
	int (*msync)(void *addr, size_t len, int flags);
	int (*zero_range)(int fd, off_t off, off_t len); /* make [off, off+len) read as zeros, keeping the
	                                                    size and the space booked; 0, or -1 with errno */
	int (*fstat)(int fd, struct stat *sb);
	int (*rename_noreplace)(const char *from, const char *to); /* renameat2(RENAME_NOREPLACE) */
	int (*link)(const char *from, const char *to);
	int (*unlink)(const char *path);
	int (*flock)(int fd, int op);
	int (*fcntl_lock)(int fd, int cmd, struct flock *fl); /* fcntl with a struct flock (F_OFD_SETLK...) */
};
extern struct ms_sys ms_sys;          /* the table in force; tests may replace entries */
extern const struct ms_sys ms_sys_default;
int sys_pread_full(int fd, void *buf, size_t len, uint64_t off); /* 0, or -1 with errno (EIO on short) */
int sys_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* ---- table.c: an open-addressing map from 16-byte aligned offsets (never 0) to 64-bit values ---- */
struct table {
	uint64_t *keys;
	uint64_t *vals;
	size_t cap; /* power of two, or 0 */
	size_t len;
};
void table_init(struct table *t);
void table_free(struct table *t);
void table_clear(struct table *t);
int table_put(struct table *t, uint64_t key, uint64_t val); /* insert or replace; MS_ENOMEM */
uint64_t *table_get(const struct table *t, uint64_t key);   /* NULL when absent */
bool table_del(struct table *t, uint64_t key);
/* Iterate: for (size_t i = 0; table_next(t, &i, &k, &v); ) */
bool table_next(const struct table *t, size_t *pos, uint64_t *key, uint64_t *val);

/* A growable array of blocks (inline: every part that lists blocks uses it). */
struct blocks {
	struct alloc_block *v;
	size_t len, cap;
};
static inline int blocks_push(struct blocks *b, uint64_t off, uint64_t size)
{
	if (b->len == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 32;
		struct alloc_block *nv = realloc(b->v, ncap * sizeof *nv);
		if (!nv)
			return MS_ENOMEM;
		b->v = nv, b->cap = ncap;
	}
	b->v[b->len].off = off;
	b->v[b->len].size = size;
	b->len++;
	return 0;
}
static inline void blocks_free(struct blocks *b)
{
	free(b->v);
	b->v = NULL;
	b->len = b->cap = 0;
}

/* ---- the committed state a snapshot sees ---- */
struct snap {
	uint64_t seq;        /* meta sequence: orders snapshots and space reuse */
	uint64_t commit_id;  /* user-visible id of the newest commit */
	uint64_t root;       /* entry of the root node, 0 when empty */
	uint64_t objects;
	uint64_t live_bytes;
	uint64_t obj_bytes;
	uint64_t node_bytes;
	uint64_t heap_end;
	uint64_t flags;      /* MS_META_* of the meta that published it */
	uint64_t ckpt_off, ckpt_len; /* its valid allocator checkpoint block (0: none): kept allocated
	                                until the next commit, since the meta still points at it */
};

/* ---- format.c: the meta page (hashes in hash.h) ---- */
/* Validate a meta read from the file of file_size bytes: 0, MS_ECORRUPT or MS_EVERSION, with a reason
 * in *why (static text). */
int meta_check(const struct disk_meta *m, uint64_t file_size, const char **why);
/* Do the blocks meta m's commit record lists (rec: its entries; base: a mapping of at least
 * m->heap_end bytes) hold what it says? 0 or MS_ECORRUPT with *why. m must have passed meta_check. */
int meta_record_check(const uint8_t *base, const struct disk_meta *m, const struct disk_rec *rec, const char **why);
/* A checkpoint the meta publishes: it describes the commit of this very meta. */
struct meta_ckpt {
	uint64_t off, len, hash;
};
/* The meta page of state st (its meta sequence picks the page), with checkpoint ck (NULL: none) and
 * commit record rec[n_rec]. */
void meta_build(struct disk_meta *m, const struct snap *st, uint64_t hash_seed, uint64_t created,
                const struct meta_ckpt *ck, const struct disk_rec *rec, uint64_t n_rec);
/* Build it and write it to its page of fd: 0, or -1 with errno. */
int meta_write(int fd, const struct snap *st, uint64_t hash_seed, uint64_t created, const struct meta_ckpt *ck,
               const struct disk_rec *rec, uint64_t n_rec);
/* Read both meta pages of fd with their commit records and validate each (meta_check, and the page
 * its sequence belongs on): rc[i] 0 or the code with why[i]. 0, or -1 with errno when a read fails. */
int meta_read_pages(int fd, uint64_t file_size, struct disk_meta m[2], struct disk_rec rec[2][MS_REC_MAX],
                    int rc[2], const char *why[2]);
/* The one choice of the newest meta (I2): of the pages marked ok, order[] gets them newest first;
 * returns how many (0..2). Open, snapshots and ms_check all choose through it. */
int meta_pick(const struct disk_meta m[2], const bool ok[2], int order[2]);
/* The allocator checkpoint meta m publishes (base: a mapping of its heap), loaded: 0, MS_NOTFOUND
 * when m publishes none, MS_ECORRUPT with *why, MS_ENOMEM. */
int ckpt_load(const uint8_t *base, const struct disk_meta *m, struct alloc **out, const char **why);

/* Pending frees: blocks freed by commit `seq`, reusable once no snapshot older than it is open. */
struct pending {
	struct pending *next;
	uint64_t seq;
	uint64_t bytes;
	struct blocks blocks;
};

/* MS_NOSYNC quarantine: blocks that became free, not yet handed to the allocator (txn.c). */
struct quar {
	struct quar_ent { uint64_t off, size, gen; } *v;
	size_t head, len, cap; /* a queue: v[head..len) */
};

/* ---- readers.c: the lock file ---- */
#define MS_READER_SLOTS 1024u
#define MS_COMMIT_RING 1024u

struct reader_slot {
	_Atomic uint32_t pid;   /* 0: free */
	uint32_t pad0;
	_Atomic uint64_t seq;   /* meta sequence of the snapshot; 0 while claiming. Stored after the
	                           fields below, so a non-zero seq always comes with its root */
	_Atomic uint64_t commit_id;
	_Atomic uint64_t root;
	_Atomic uint64_t heap_end;
	_Atomic uint64_t began_ns;
	uint64_t pad[2];
};
_Static_assert(sizeof(struct reader_slot) == 64, "reader slot is one cache line");

struct lock_file {
	_Atomic uint64_t magic;
	uint32_t version, nslots;
	_Atomic uint64_t seq;   /* newest committed meta sequence */
	_Atomic uint32_t slots_hi; /* no slot at or past this index was ever claimed: scans stop here */
	uint32_t pad1;
	uint64_t pad0[4];
	_Alignas(64) pthread_mutex_t wmutex; /* robust, process-shared: the writer lock */
	_Alignas(64) _Atomic uint64_t ring_seq[MS_COMMIT_RING];   /* bytes freed by recent commits */
	_Atomic uint64_t ring_freed[MS_COMMIT_RING];
	_Alignas(64) struct reader_slot slots[MS_READER_SLOTS];
};

struct ms_store;
/* Joins the processes that have the store open; *first: none had (then the lock file was set up
 * anew, and openers wait until this one calls readers_ready after its recovery). */
int readers_open(struct ms_store *s, bool *first);
void readers_ready(struct ms_store *s);
void readers_close(struct ms_store *s);
bool readers_alone(struct ms_store *s);
int readers_lock_writer(struct ms_store *s, bool *owner_died);
void readers_unlock_writer(struct ms_store *s);
int readers_claim(struct ms_store *s, struct reader_slot **out);
void readers_publish(struct reader_slot *r, const struct snap *sn);
uint64_t readers_root(struct reader_slot *r, uint64_t *heap_end);
void readers_release(struct reader_slot *r);
void readers_clear_stale(struct ms_store *s, unsigned *cleared);
uint64_t readers_oldest(struct ms_store *s);
uint64_t readers_count(struct ms_store *s);
uint64_t readers_pinned(struct ms_store *s); /* space the oldest reader of any process pins */
void readers_note_commit(struct ms_store *s, uint64_t seq, uint64_t freed_bytes);

struct ms_store {
	char *path;
	int fd;
	int lock_fd;
	bool setup_locked; /* this first opener still holds the lock file's flock (readers.c) */
	struct lock_file *lf;
	uint32_t pid;
	uint64_t alloc_seq;   /* the commit the allocator describes; 0: none yet */
	unsigned flags;
	uint64_t capacity;
	uint64_t hash_seed;
	uint64_t created;

	/* Mapping (map.c). base/reserve change only when the file outgrows the reservation; older
	 * mappings stay until close so pointers handed to readers stay valid. */
	uint8_t *base;
	uint64_t reserve;
	uint64_t file_size;
	struct old_map { uint8_t *base; uint64_t len; } *old_maps;
	size_t n_old_maps;

	pthread_mutex_t wlock;     /* held by the open write transaction */
	pthread_mutex_t maplock;   /* serialises replacing the mapping */
	pthread_mutex_t lock;      /* guards cur, pending, txns, base */
	struct snap cur;           /* newest committed state known to this process */
	struct pending *pending, *pending_tail; /* oldest first */
	uint64_t pinned_bytes;
	struct ms_txn *txns;       /* every open transaction, so close can end them */

	/* Writer state, under wlock. */
	struct alloc *alloc;
	struct ms_txn *wtxn;
	_Atomic uintptr_t wtxn_owner; /* txn_self() of the thread holding the write transaction, or 0 */
	struct alloc_stats astats;    /* the allocator's figures when the last writer ended (under lock) */
	int failed;                /* sticky MS_EIO after a failed sync */
	_Atomic int truncated;     /* a page of the mapping faulted (the file was truncated under the
	                              store, or a page could not be read): set by map.c's SIGBUS handler
	                              or an fstat check; sticky until close */
	bool ckpt_on_disk;         /* the file's checkpoint still describes cur (nothing committed since) */
	bool alloc_distrust;       /* the allocator refused to free a committed block: rebuild it from the
	                              index before the next write, and checkpoint nothing until then */

	/* MS_NOSYNC durability (txn.c). synced_seq is the newest meta known durable: its page is not
	 * written again before the next sync, and its tree stays intact on disk until then, because a
	 * block freed since waits in quarantine: first in q_held (it may still be in the synced tree),
	 * then, once a sync started after it was held has completed, its first 8 bytes are zeroed and it
	 * waits in q_zeroed, and once a sync started after the zeroing has completed it goes to the
	 * allocator. A sync started while the store's sync_gen was g covers what was queued with gen < g
	 * + 1; synced_gen is the gen of the last completed sync. */
	pthread_mutex_t synclock;  /* a sync and a NOSYNC commit's meta write never overlap */
	uint64_t synced_seq;       /* under lock */
	uint64_t sync_gen, synced_gen; /* under lock */
	struct quar q_held, q_zeroed; /* writer state */
	uint64_t durable_seq;      /* writer state: the commit this handle's own durable commit made
	                              durable (0: none); a durable commit over it syncs once (txn.c) */
	uint64_t quar_bytes;       /* rounded bytes in both queues (writer state) */

	_Atomic uint64_t hits, misses;
	_Atomic uint64_t memo[1u << MEMO_BITS];
};

enum { FRESH_OBJ = 0, FRESH_NODE = 1, FRESH_OBJ_UNHASHED = 2, FRESH_BUCKET = 3 };
#define FRESH_KIND_SHIFT 62
#define FRESH_SIZE_MASK ((1ull << FRESH_KIND_SHIFT) - 1)

struct ms_txn {
	ms_store *s;
	struct ms_txn *next, *prev; /* in s->txns */
	bool rdonly;
	struct reader_slot *slot;   /* reader: its slot in the reader table */
	struct snap snap;           /* reader: the snapshot; writer: the working state */
	uint8_t *base;              /* mapping this transaction reads through */
	uint64_t hits, misses;
	/* Writer only. */
	uint64_t gen;               /* bumped by every change; iterators check it */
	struct table fresh;         /* blocks allocated by this txn: off -> size | kind << 62 */
	struct blocks freed;        /* committed blocks this txn frees (reusable after commit + readers) */
};

/* ---- map.c ---- */
int map_open(ms_store *s);
void map_close(ms_store *s);
int map_grow(ms_store *s, uint64_t need_end); /* grow file and heap to at least need_end */
int map_extend(ms_store *s, uint64_t need);   /* map at least need bytes (the file already is) */
/* SIGBUS protection: a fault in a registered range maps a zero page there and raises *flag. */
int map_guard_add(void *base, uint64_t len, _Atomic int *flag); /* 0 or MS_ENOMEM */
void map_guard_del(void *base);
/* After a fault: MS_EIO naming the file and what happened. */
int map_fault_error(ms_store *s);
/* The file is still as long as the store knows it (fstat): 0, or MS_EIO and the store marked. */
int map_check_size(ms_store *s);
static inline bool map_faulted(ms_store *s)
{
	return MS_UNLIKELY(atomic_load_explicit(&s->truncated, memory_order_relaxed) != 0);
}
static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* ---- index.c ---- */
struct ictx {
	uint8_t *base;
	uint64_t heap_end;
	const struct table *fresh; /* a writer's fresh blocks: not yet hashed, not verified */
	_Atomic uint64_t *memo;    /* NULL: verify every node */
};
static inline struct ictx ictx_of(const struct ms_txn *t)
{
	struct ictx c = { t->base, t->snap.heap_end, t->rdonly ? NULL : &t->fresh, t->s->memo };
	return c;
}
/* Resolve a checked pointer to [off, off+len) or NULL when out of bounds or misaligned. */
static inline const void *map_ptr(const struct ictx *c, ms_off off, uint64_t len)
{
	if (MS_UNLIKELY(off < MS_HEAP_START || (off & (MS_ALIGN - 1)) || off > c->heap_end ||
	                len > c->heap_end - off))
		return NULL;
	return c->base + off;
}
int index_node(const struct ictx *c, uint64_t ent, unsigned depth, const struct disk_node **out,
               unsigned *nslots);
int index_obj(const struct ictx *c, uint64_t ent, const struct disk_obj **out);
int index_get(const struct ictx *c, uint64_t root, uint64_t h, const void *key, size_t klen,
              const struct disk_obj **out);
int index_put(struct ms_txn *t, uint64_t h, const void *key, size_t klen, uint64_t vlen,
              void **dst, bool hashed_later, const void *val);
int index_del(struct ms_txn *t, uint64_t h, const void *key, size_t klen);
/* Visit every reachable block (nodes and objects) of the tree at root, verifying nodes always and
 * objects' hashes when verify_objects; fn gets (off, requested size, is_node: 0 an object, 1 a node,
 * 2 a bucket). */
typedef int (*index_visit_fn)(void *ctx, uint64_t off, uint64_t size, int is_node,
                              const struct disk_obj *obj);
int index_walk(const struct ictx *c, uint64_t root, uint64_t seed, bool verify_objects,
               index_visit_fn fn, void *ctx, uint64_t *bad_off, const char **why);
/* Every block of the tree at root, with the totals I7 speaks of. */
struct rebuild {
	struct blocks b;
	uint64_t objects, live_bytes, obj_bytes, node_bytes;
};
int index_collect(const struct ictx *c, uint64_t root, uint64_t seed, bool verify_objects,
                  struct rebuild *rb, uint64_t *bad_off, const char **why);
/* The same, verifying every object, going on past a problem: each is reported (off, why) and
 * counted in *problems (ms_check). MS_ENOMEM, or 0. */
int index_walk_report(const struct ictx *c, uint64_t root, uint64_t seed, struct rebuild *rb,
                      void (*report)(void *rctx, uint64_t off, const char *why), void *rctx, uint64_t *problems);

/* ---- snap.c ---- */
/* The snapshot of meta sequence t (the newest if t == 0), read from the mapping when another
 * process wrote it; MS_NOTFOUND when that meta page was overwritten meanwhile. */
int snap_read(ms_store *s, uint64_t t, struct snap *out);
void snap_from_meta(struct snap *st, const struct disk_meta *m);

/* ---- space.c (writer context) ---- */
int space_alloc(struct ms_txn *t, uint64_t size, int kind, uint64_t *off);
void space_release(struct ms_txn *t, uint64_t off, uint64_t size); /* a block this txn no longer needs */
void space_discard(struct ms_txn *t);  /* every fresh block of an aborted transaction */
int space_room(struct ms_txn *t, uint64_t obj_bytes); /* before a put: MS_ENOSPC, or room for it */
int space_reserve_freed(struct ms_txn *t); /* before an operation: its releases cannot fail */
void space_release_pending(ms_store *s); /* hand reusable pending frees to alloc */
void space_drop_pending(ms_store *s);
/* MS_NOSYNC: a block that became free goes to quarantine (fresh: never committed, so it is
 * invalidated at once); space_quar_drop forgets both queues (the allocator is being replaced). */
void space_quar_add(ms_store *s, uint64_t off, uint64_t size, bool fresh);
void space_quar_drop(ms_store *s);
bool space_quar_full(const ms_store *s); /* a commit should sync to take the quarantine back */
/* Hand the whole quarantine to the allocator: two syncs (synclock not held). */
int space_quar_flush(ms_store *s, const char *what);
/* An fdatasync that is a durable point in MS_NOSYNC mode: cur's meta (written before) is durable after
 * it, and quarantined blocks move on at the writer's next space_release_pending. Caller holds
 * synclock, so no meta page is being written meanwhile. */
int space_sync_point(ms_store *s, const char *what);
/* Debug builds: check the allocator and that its used bytes are the newest commit's blocks plus
 * pending, quarantine and checkpoint (after each commit, abort and allocator rebuild); else nothing. */
#ifdef MS_DEBUG
void space_audit(ms_store *s, const char *where);
#else
static inline void space_audit(ms_store *s, const char *where) { (void)s, (void)where; }
#endif

/* ---- recover.c ---- */
/* At open, from the valid meta pages (order: newest first, n_valid of them): the one that opens, and
 * for the first process (first) the allocator brought to it; *ckpt_used when from its checkpoint. */
int recover_open(ms_store *s, const struct disk_meta m[2], struct disk_rec rec[2][MS_REC_MAX],
                 const int order[2], int n_valid, bool first, uint64_t region_end,
                 const struct disk_meta **out, bool *ckpt_used);
int recover_writer(ms_store *s); /* under the writer lock: bring cur and the allocator up to date */
/* Zero all free space (the allocator was rebuilt and may hold stale valid-looking blocks), then make
 * it durable and the current meta the synced one. Writer context, MS_NOSYNC only. */
int recover_scrub(ms_store *s);

/* ---- txn.c ---- */
uintptr_t txn_self(void); /* a value unique to the calling thread */
static inline bool txn_own_writer(ms_store *s)
{
	return atomic_load_explicit(&s->wtxn_owner, memory_order_relaxed) == txn_self();
}
void txn_end_all(ms_store *s);

#endif
