/* store/readers.c - the lock file FILE-lock beside the store: a robust process-shared writer mutex, the
 * newest commit's sequence number, and the reader table (one 64-byte slot per open read transaction in
 * any process: pid and snapshot). The lock file holds no durable state; the first process to open the
 * store after everyone is gone initialises it again.
 *
 * Who is alive: every process with the store open holds a shared OFD lock on byte 0 of the lock file.
 * A process that gets the exclusive lock on it (under flock, which serialises openers) is alone, and
 * (re)initialises the table, then downgrades atomically to shared. It keeps the flock until its open
 * has finished recovery (readers_ready), so no other process opens, commits or reads meanwhile: recovery
 * reads meta pages, rebuilds the allocator, publishes the commit it chose and may erase or zero pages,
 * all of which assume nobody else is writing.
 */
#define _GNU_SOURCE /* F_OFD_SETLK */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_MAGIC 0x31004b434f4c534dull /* "MSLOCK\0" 1 */
/* 2: the library of format version 2; 3: of version 3. Processes of different versions must not share a store: an
 * older one skips a newer meta page it cannot read, takes the commit before it for the newest and
 * writes its own commit over the newer one. */
#define LOCK_VERSION 3u

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int ofd_lock(int fd, short type, bool wait)
{
	struct flock fl;
	memset(&fl, 0, sizeof fl);
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = 0;
	fl.l_len = 1;
	return ms_sys.fcntl_lock(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
}

static int lock_init_table(ms_store *s, struct lock_file *lf)
{
	memset(lf, 0, sizeof *lf);
	pthread_mutexattr_t ma;
	if (pthread_mutexattr_init(&ma) || pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) ||
	    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) || pthread_mutex_init(&lf->wmutex, &ma))
		return err_set(MS_EIO, "%s-lock: cannot initialise the process-shared writer lock", s->path);
	pthread_mutexattr_destroy(&ma);
	lf->version = LOCK_VERSION;
	lf->nslots = MS_READER_SLOTS;
	atomic_store(&lf->magic, LOCK_MAGIC);
	return 0;
}

int readers_open(ms_store *s, bool *first)
{
	size_t n = strlen(s->path);
	char *lp = malloc(n + 6);
	if (!lp)
		return MS_ENOMEM;
	memcpy(lp, s->path, n);
	memcpy(lp + n, "-lock", 6);
	int rc = 0;
	s->lock_fd = ms_sys.open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0) {
		rc = err_errno(MS_EIO, errno, "open lock file %s", lp);
		goto out;
	}
	if (ms_sys.flock(s->lock_fd, LOCK_EX)) { /* serialises the setup below among openers */
		rc = err_errno(MS_EIO, errno, "lock %s", lp);
		goto out;
	}
	*first = ofd_lock(s->lock_fd, F_WRLCK, false) == 0;
	if (!*first && ofd_lock(s->lock_fd, F_RDLCK, true)) {
		rc = err_errno(MS_EIO, errno, "lock %s", lp);
		goto unlock;
	}
	if (*first && ms_sys.ftruncate(s->lock_fd, (off_t)sizeof(struct lock_file))) {
		rc = err_errno(MS_EIO, errno, "size lock file %s", lp);
		goto unlock;
	}
	struct stat sb;
	if (ms_sys.fstat(s->lock_fd, &sb) || (uint64_t)sb.st_size < sizeof(struct lock_file)) {
		rc = err_set(MS_EIO, "lock file %s is too short (being set up by a process that died?)", lp);
		goto unlock;
	}
	void *p = ms_sys.mmap(NULL, sizeof(struct lock_file), PROT_READ | PROT_WRITE, MAP_SHARED, s->lock_fd, 0);
	if (p == MAP_FAILED) {
		rc = err_errno(MS_ENOMEM, errno, "mmap lock file %s", lp);
		goto unlock;
	}
	s->lf = p;
	if (*first) {
		if ((rc = lock_init_table(s, s->lf)))
			goto unlock;
		/* An atomic downgrade to shared; the flock stays until readers_ready, after recovery. */
		if (ofd_lock(s->lock_fd, F_RDLCK, false)) {
			rc = err_errno(MS_EIO, errno, "lock %s", lp);
			goto unlock;
		}
		s->pid = (uint32_t)getpid();
		s->setup_locked = true;
		goto out;
	} else if (atomic_load(&s->lf->magic) != LOCK_MAGIC || s->lf->version != LOCK_VERSION ||
	           s->lf->nslots != MS_READER_SLOTS) {
		rc = err_set(MS_EIO, "lock file %s is not one this library uses (another version has the store open?)", lp);
		goto unlock;
	}
	s->pid = (uint32_t)getpid();
unlock:
	ms_sys.flock(s->lock_fd, LOCK_UN);
out:
	free(lp);
	return rc;
}

void readers_ready(ms_store *s)
{
	if (s->setup_locked)
		ms_sys.flock(s->lock_fd, LOCK_UN);
	s->setup_locked = false;
}

void readers_close(ms_store *s)
{
	if (s->lf)
		ms_sys.munmap(s->lf, sizeof *s->lf);
	s->lf = NULL;
	if (s->lock_fd >= 0)
		ms_sys.close(s->lock_fd); /* drops the OFD lock, and the flock if readers_ready did not */
	s->lock_fd = -1;
	s->setup_locked = false;
}

bool readers_alone(ms_store *s)
{
	if (ofd_lock(s->lock_fd, F_WRLCK, false))
		return false;
	ofd_lock(s->lock_fd, F_RDLCK, false);
	return true;
}

int readers_lock_writer(ms_store *s, bool *owner_died)
{
	*owner_died = false;
	int e = pthread_mutex_lock(&s->lf->wmutex);
	if (e == EOWNERDEAD) {
		/* The last writer died holding the lock: its uncommitted work is free again by
		 * construction once the allocator is brought up to date (readers_lock_writer's caller does). */
		pthread_mutex_consistent(&s->lf->wmutex);
		*owner_died = true;
		e = 0;
	}
	if (e)
		return err_errno(MS_EIO, e, "%s-lock: the writer lock is unusable (close every process and delete the lock file)",
		                 s->path);
	return 0;
}

void readers_unlock_writer(ms_store *s) { pthread_mutex_unlock(&s->lf->wmutex); }

static inline unsigned slots_end(ms_store *s)
{
	unsigned hi = atomic_load(&s->lf->slots_hi);
	return hi < MS_READER_SLOTS ? hi : MS_READER_SLOTS;
}

static bool pid_alive(uint32_t pid)
{
	return kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

int readers_claim(ms_store *s, struct reader_slot **out)
{
	struct lock_file *lf = s->lf;
	/* First fit, so slots in use stay packed at the start and scans stop at slots_hi. */
	for (unsigned pass = 0; pass < 2; pass++) {
		for (unsigned k = 0; k < MS_READER_SLOTS; k++) {
			struct reader_slot *r = &lf->slots[k];
			uint32_t z = 0;
			if (atomic_load_explicit(&r->pid, memory_order_relaxed) == 0 &&
			    atomic_compare_exchange_strong(&r->pid, &z, s->pid)) {
				/* The slot is ours now; a dead owner's id may linger: only we reset it (a
				 * clearer that stored it could wipe the next owner's). */
				atomic_store(&r->seq, 0);
				uint32_t hi = atomic_load(&lf->slots_hi);
				while (hi < k + 1 && !atomic_compare_exchange_weak(&lf->slots_hi, &hi, k + 1))
					;
				*out = r;
				return 0;
			}
		}
		unsigned cleared;
		readers_clear_stale(s, &cleared);
		if (!cleared)
			break;
	}
	return err_set(MS_EBUSY, "%s: the reader table is full (%u read transactions open)", s->path,
	               MS_READER_SLOTS);
}

/* Describe the snapshot, then publish its id: a writer that sees the id also sees the root. */
void readers_publish(struct reader_slot *r, const struct snap *sn)
{
	atomic_store_explicit(&r->root, sn->root, memory_order_relaxed);
	atomic_store_explicit(&r->heap_end, sn->heap_end, memory_order_relaxed);
	atomic_store_explicit(&r->commit_id, sn->commit_id, memory_order_relaxed);
	atomic_store_explicit(&r->began_ns, now_ns(), memory_order_relaxed);
	atomic_store(&r->seq, sn->seq);
}

uint64_t readers_root(struct reader_slot *r, uint64_t *heap_end)
{
	*heap_end = atomic_load_explicit(&r->heap_end, memory_order_relaxed);
	return atomic_load_explicit(&r->root, memory_order_relaxed);
}

void readers_release(struct reader_slot *r)
{
	atomic_store(&r->seq, 0);
	atomic_store(&r->pid, 0);
}

void readers_clear_stale(ms_store *s, unsigned *cleared)
{
	*cleared = 0;
	for (unsigned i = 0, hi = slots_end(s); i < hi; i++) {
		struct reader_slot *r = &s->lf->slots[i];
		uint32_t pid = atomic_load(&r->pid);
		if (pid && pid != s->pid && !pid_alive(pid) && atomic_compare_exchange_strong(&r->pid, &pid, 0))
			(*cleared)++;
	}
}

uint64_t readers_oldest(ms_store *s)
{
	uint64_t oldest = UINT64_MAX;
	for (unsigned i = 0, hi = slots_end(s); i < hi; i++) {
		struct reader_slot *r = &s->lf->slots[i];
		uint32_t pid = atomic_load(&r->pid);
		if (!pid)
			continue;
		uint64_t t = atomic_load(&r->seq);
		if (t == 0 || t >= oldest)
			continue; /* 0: claiming; it will read a seq no older than the newest */
		if (pid != s->pid && !pid_alive(pid)) {
			atomic_compare_exchange_strong(&r->pid, &pid, 0);
			continue;
		}
		oldest = t;
	}
	return oldest;
}

uint64_t readers_count(ms_store *s)
{
	uint64_t n = 0;
	for (unsigned i = 0, hi = slots_end(s); i < hi; i++) {
		uint32_t pid = atomic_load(&s->lf->slots[i].pid);
		if (pid && (pid == s->pid || pid_alive(pid)))
			n++;
	}
	return n;
}

void readers_note_commit(ms_store *s, uint64_t seq, uint64_t freed_bytes)
{
	struct lock_file *lf = s->lf;
	unsigned i = (unsigned)(seq % MS_COMMIT_RING);
	atomic_store(&lf->ring_seq[i], 0);
	atomic_store(&lf->ring_freed[i], freed_bytes);
	atomic_store(&lf->ring_seq[i], seq);
	atomic_store(&lf->seq, seq);
}

/* Space freed by the commits after `seq` that the ring still remembers. */
static uint64_t pinned_since(ms_store *s, uint64_t seq)
{
	struct lock_file *lf = s->lf;
	uint64_t newest = atomic_load(&lf->seq), sum = 0;
	for (uint64_t t = seq + 1; t <= newest && newest - t < MS_COMMIT_RING; t++) {
		unsigned i = (unsigned)(t % MS_COMMIT_RING);
		if (atomic_load(&lf->ring_seq[i]) == t)
			sum += atomic_load(&lf->ring_freed[i]);
	}
	return sum;
}

uint64_t readers_pinned(ms_store *s)
{
	uint64_t oldest = readers_oldest(s);
	return oldest == UINT64_MAX ? 0 : pinned_since(s, oldest);
}

int ms_readers(ms_store *s, int (*fn)(void *ctx, const ms_reader_info *r), void *ctx)
{
	if (!s || !fn)
		return err_set(MS_EINVAL, "ms_readers: NULL argument");
	uint64_t now = now_ns();
	for (unsigned i = 0, hi = slots_end(s); i < hi; i++) {
		struct reader_slot *r = &s->lf->slots[i];
		uint32_t pid = atomic_load(&r->pid);
		uint64_t t = atomic_load(&r->seq);
		if (!pid)
			continue;
		ms_reader_info info;
		memset(&info, 0, sizeof info);
		info.alive = pid == s->pid || pid_alive(pid);
		if (!t && info.alive)
			continue; /* still taking its snapshot */
		info.pid = pid;
		if (t) {
			info.txn_id = atomic_load_explicit(&r->commit_id, memory_order_relaxed);
			uint64_t began = atomic_load_explicit(&r->began_ns, memory_order_relaxed);
			info.age_ns = now > began ? now - began : 0;
			info.pinned_bytes = pinned_since(s, t);
		}
		if (fn(ctx, &info))
			break;
	}
	return 0;
}

int ms_reader_check(ms_store *s, unsigned *cleared)
{
	if (!s)
		return err_set(MS_EINVAL, "ms_reader_check: NULL store");
	unsigned n;
	readers_clear_stale(s, &n);
	if (cleared)
		*cleared = n;
	return 0;
}
