/* mstore.h - a persistent, memory-mapped object store.
 *
 * One file holds a heap of objects: a key (1 to MS_MAXKEY bytes) maps to a value (0 bytes and up).
 * The file is mapped into memory and reads hand back pointers into the mapping (zero-copy). Commits
 * are copy-on-write and atomic; by default a commit that returned 0 survives power loss.
 *
 * Processes: any number of processes may open the same store; write transactions of all of them take
 * turns (a robust process-shared mutex in the lock file FILE-lock, so a writer killed with -9 does not
 * block the others), and readers never wait. The lock file holds no durable state.
 *
 * Threads: one ms_store handle may be shared by the threads of a process. A transaction is used by
 * one thread at a time. A thread may hold any number of read transactions and at most one write
 * transaction. Write transactions are serialised: ms_txn_begin for writing waits while another write
 * transaction of the same store is open. Read transactions never wait for a writer.
 *
 * Errors: every function returns 0 on success or a negative MS_E* code; ms_strerror() describes a
 * code, and ms_last_error() gives the calling thread's last failure with the file and the reason.
 * The library never prints, never exits and never aborts on bad input.
 *
 * Caveats
 * - A zero-copy value (ms_val.data from ms_txn_get / ms_iter_next) is valid until its transaction
 *   ends. Do not write through it.
 * - A long-lived read transaction pins the space of everything it can see: deleted and overwritten
 *   objects are not reused until it ends, and the file grows instead.
 * - Iteration order is unspecified (it follows the index, not the keys' order).
 * - The first ms_open installs a process-wide SIGBUS handler (kept until exit). It handles faults in
 *   the store's own mappings only and passes every other SIGBUS to the handler installed before it
 *   (install yours before the first ms_open, or chain to the one you replace). With it, a store file
 *   truncated by another process, or a mapped page that cannot be read, is no SIGBUS: the read that
 *   meets it fails (MS_EIO, or MS_ECORRUPT from a checksum), and from then on every call on that
 *   store answers MS_EIO, ms_last_error() naming the file and saying it was truncated under the
 *   store; nothing more is committed to it. Zero-copy values in lost pages read as zeros.
 */
#ifndef MSTORE_H
#define MSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MS_API __attribute__((visibility("default")))
#else
#define MS_API
#endif

#define MS_VERSION_MAJOR 0
#define MS_VERSION_MINOR 1

/* Keys are 1 to MS_MAXKEY bytes. */
#define MS_MAXKEY 65535u

/* Flags for ms_options.flags and ms_txn_begin. */
#define MS_CREATE   0x1u /* create the file if it is missing */
#define MS_READONLY 0x2u /* open read-only; for ms_txn_begin: a read snapshot */
#define MS_NOSYNC   0x4u /* commits are not flushed: they survive a process crash, not power loss */
#define MS_CACHE    0x8u /* evict least recently used objects at capacity (not implemented yet:
                            ms_open answers MS_EINVAL) */

/* Return codes. */
#define MS_NOTFOUND  (-1)  /* key absent, or end of iteration */
#define MS_EINVAL    (-2)  /* bad argument: NULL, empty or oversized key, bad flags */
#define MS_ENOSPC    (-3)  /* the capacity or the disk is full */
#define MS_ECORRUPT  (-4)  /* not a valid store, or a checksum or bound check failed */
#define MS_EVERSION  (-5)  /* the file's format is newer than this library */
#define MS_EIO       (-6)  /* an I/O or sync error; after a failed sync commits are refused until reopen */
#define MS_ENOMEM    (-7)  /* memory or address space exhausted */
#define MS_EBUSY     (-8)  /* a conflicting operation holds what is needed (the reader table is full,
                              this thread already has a write transaction) */
#define MS_ERDONLY   (-9)  /* a write through a read-only store or transaction */
#define MS_ERANGE    (-10) /* a caller's buffer is too small; the needed length is reported */

typedef struct ms_store ms_store;
typedef struct ms_txn ms_txn;
typedef struct ms_iter ms_iter;
typedef struct ms_val {
	const void *data;
	size_t len;
} ms_val;

typedef struct ms_options { /* all-zero means the defaults */
	uint64_t capacity;  /* most bytes the file may occupy; 0: no limit but the disk */
	unsigned flags;     /* MS_CREATE | MS_READONLY | MS_NOSYNC | MS_CACHE */
	unsigned mode;      /* permission bits of a new file; 0 means 0600 */
} ms_options;

typedef struct ms_stats {
	uint64_t objects;        /* live objects in the newest committed state */
	uint64_t live_bytes;     /* sum of key + value lengths of those objects */
	uint64_t used_bytes;     /* heap bytes allocated: objects with headers and rounding, index nodes,
	                            and space an open snapshot can still see */
	uint64_t free_bytes;     /* heap bytes the allocator may hand out */
	uint64_t file_bytes;     /* the store file's size */
	uint64_t largest_free;   /* the largest single free extent */
	uint64_t capacity;       /* as given at open (0: no limit) */
	uint64_t txn_id;         /* id of the newest committed transaction (a clean close is no commit) */
	uint64_t readers;        /* live read transactions */
	uint64_t hits, misses, evictions, evicted_bytes, expired; /* cache counters (this handle) */
	/* Beyond the contract: */
	uint64_t object_bytes;   /* bytes allocated to objects (headers, keys, values, rounding) */
	uint64_t index_bytes;    /* bytes allocated to index nodes */
	uint64_t pinned_bytes;   /* bytes freed by commits but still visible to an open snapshot of any
	                            process (ms_readers says whose) */
	uint64_t internal_waste; /* bytes lost to size-class rounding */
	uint64_t free_extents;   /* number of free extents */
	uint64_t overhead_bytes; /* fixed overhead: meta pages and unusable slack */
} ms_stats;

/* Open (or with MS_CREATE create) the store at path, and its lock file path + "-lock" (created when
 * missing; it must be writable). Other processes may have the store open at the same time. A damaged
 * file or one that is not a store: MS_ECORRUPT; a newer format: MS_EVERSION; a missing file without
 * MS_CREATE, a directory: MS_EINVAL; a file refused is left byte for byte as it was. After an unclean shutdown the
 * newest valid commit is opened and the allocator is rebuilt from the index (bounded by the number
 * of objects); after a clean close nothing is scanned. */
MS_API int ms_open(const char *path, const ms_options *opt, ms_store **out);

/* Close cleanly: open transactions are aborted, the allocator state is checkpointed into the file
 * so the next open scans nothing. Returns MS_EIO if the final sync failed (the store is still
 * closed). ms_close(NULL) is 0. */
MS_API int ms_close(ms_store *s);

/* Begin a transaction: flags 0 for a write transaction (waits for the writer of any process),
 * MS_READONLY for a read snapshot. MS_ERDONLY for a write transaction on a read-only store; MS_EIO
 * when an earlier sync failed. */
MS_API int ms_txn_begin(ms_store *s, unsigned flags, ms_txn **out);

/* Commit and end t. Read transactions just end (0). In the default mode the commit is durable when
 * this returns 0. MS_ENOSPC, MS_EIO: nothing of t is committed (after MS_EIO the store refuses
 * further commits until reopened). */
MS_API int ms_txn_commit(ms_txn *t);
MS_API void ms_txn_abort(ms_txn *t);

/* Look key up in t's snapshot (a write transaction sees its own changes). val->data points into the
 * mapping and stays valid until t ends. MS_NOTFOUND, MS_EINVAL, MS_ECORRUPT (a checksum failed). */
MS_API int ms_txn_get(ms_txn *t, const void *key, size_t klen, ms_val *val);

/* Store a copy of val under key in write transaction t (replacing an existing value). MS_ERDONLY in a
 * read transaction, MS_EINVAL for a bad key, MS_ENOSPC when the capacity or the disk is full (t stays
 * usable). */
MS_API int ms_txn_put(ms_txn *t, const void *key, size_t klen, const void *val, size_t vlen);

/* Like ms_txn_put, but *dst receives space for vlen bytes that the caller fills before commit. The
 * pointer is valid until the next call on t. */
MS_API int ms_txn_reserve(ms_txn *t, const void *key, size_t klen, size_t vlen, void **dst);

/* Delete key in write transaction t. MS_NOTFOUND (and no change) when absent. */
MS_API int ms_txn_del(ms_txn *t, const void *key, size_t klen);

/* One-operation commits. ms_get copies the value into buf: MS_ERANGE with *vlen set when cap is too
 * small (buf may then be NULL). */
MS_API int ms_put(ms_store *s, const void *key, size_t klen, const void *val, size_t vlen);
MS_API int ms_get(ms_store *s, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);
MS_API int ms_del(ms_store *s, const void *key, size_t klen);

/* Iterate over every object of t's snapshot, in unspecified order. Each object is verified;
 * MS_ECORRUPT on a mismatch, MS_NOTFOUND after the last one. Key and value stay valid until t ends.
 * In a write transaction the iterator shows the state when it was opened; changing t while an
 * iterator is open makes the next ms_iter_next answer MS_EINVAL. */
MS_API int ms_iter_open(ms_txn *t, ms_iter **out);
MS_API int ms_iter_next(ms_iter *it, ms_val *key, ms_val *val);
MS_API void ms_iter_close(ms_iter *it);

/* Make every commit so far durable (useful with MS_NOSYNC). */
MS_API int ms_sync(ms_store *s);

MS_API int ms_stat(ms_store *s, ms_stats *st);

/* Readers across all processes that have the store open. Each open read transaction holds a slot in
 * the reader table (in the lock file FILE-lock beside the store) with its process id and snapshot.
 * ms_readers calls fn for each slot in use (stop by returning non-zero). pinned_bytes is the space
 * freed by commits newer than the reader's snapshot, which cannot be reused while it lives (a lower
 * bound when the reader is older than the last 1024 commits). */
typedef struct ms_reader_info {
	uint64_t pid;          /* process holding the snapshot */
	uint64_t txn_id;       /* the commit it sees */
	uint64_t age_ns;       /* how long ago its transaction began */
	uint64_t pinned_bytes; /* space it keeps from reuse */
	int alive;             /* 0 when the process is gone (a stale slot) */
} ms_reader_info;
MS_API int ms_readers(ms_store *s, int (*fn)(void *ctx, const ms_reader_info *r), void *ctx);

/* Free the slots of readers whose process is gone; *cleared (may be NULL) gets how many. Writers do
 * this by themselves when they look for the oldest reader. */
MS_API int ms_reader_check(ms_store *s, unsigned *cleared);

/* A sentence for a return code, and the calling thread's last failure in detail (the file, the call
 * and the reason; "" when none). */
MS_API const char *ms_strerror(int err);
MS_API const char *ms_last_error(void);

/* Verify a store file without opening it for use: meta pages, every index node, every object's
 * checksum and bounds, that no two blocks overlap, that used + free space add up to the heap, and
 * that an allocator checkpoint books exactly the index's blocks (docs/cli.md lists each problem).
 * Each problem is reported through fn (may be NULL) with its file offset. Returns 0 when the store is
 * sound, MS_ECORRUPT when a problem was found, MS_EIO/MS_EINVAL when the file cannot be read.
 * `stats` (may be NULL) receives what was counted. Safe on any input; never modifies the file.
 * While other processes use the store, the check holds a read snapshot (when the file opens at all) so
 * that writers cannot reuse what it reads. When the newest commit is damaged but the one before is
 * intact, that is reported as a problem too. */
typedef void (*ms_check_fn)(void *ctx, uint64_t offset, const char *problem);
typedef struct ms_check_stats {
	uint64_t txn_id;      /* the commit that was checked */
	uint64_t objects;
	uint64_t nodes;
	uint64_t live_bytes;
	uint64_t used_bytes;
	uint64_t free_bytes;
	uint64_t problems;
} ms_check_stats;
MS_API int ms_check(const char *path, ms_check_fn fn, void *ctx, ms_check_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
