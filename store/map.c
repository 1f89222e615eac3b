/* store/map.c - the mapping of the store file and its growth.
 *
 * The whole file is mapped once, with address space reserved for the capacity (or a large default),
 * so that growth never moves objects under a reader. The file grows in steps with fallocate, so a
 * full disk is MS_ENOSPC at growth time, never SIGBUS on a later store. When an unlimited store
 * outgrows its reservation a larger mapping is made and the old one kept until close: readers that
 * began before hold pointers into it, and both views see the same pages.
 *
 * A file truncated under the store (by another process) would make every read of a page past its new
 * end a SIGBUS. A process-wide SIGBUS handler, installed at the first open, knows the ranges of every
 * mapping (a fixed table of atomics, async-signal-safe to read): a fault inside one gets a zero page
 * mapped over the faulting page and marks the store, so the read fails its checksum and the store
 * answers MS_EIO from then on. Faults anywhere else go to the handler that was there before.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAP_DEFAULT_RESERVE (1ull << 40) /* 1 TiB of address space; costs nothing until touched */
#define MAP_MIN_RESERVE (1ull << 30)
#define GROW_MIN (1ull << 20)
#define GROW_ALIGN (64ull << 10)

static int map_extend_locked(ms_store *s, uint64_t need);

/* ---- SIGBUS guard ----
 *
 * The table is read by the signal handler, in whatever thread faulted, so it holds only lock-free
 * atomics: a slot is claimed by CAS on lo (0 free, 1 being filled), filled, then published by storing
 * the real lo; it is withdrawn by storing 0 before the mapping goes. The handler calls only mmap (a
 * system call) and atomic stores, and keeps errno. */
#define GUARD_SLOTS 4096u
#define GUARD_CLAIMED 1u

struct guard {
	_Atomic uintptr_t lo, hi;
	_Atomic(_Atomic int *) flag;
};
static struct guard guards[GUARD_SLOTS];
static _Atomic unsigned guards_hi; /* no slot at or past this was ever claimed */
static struct sigaction bus_prev;  /* the handler before ours */
static uintptr_t bus_page;         /* the system's page size */
static pthread_once_t bus_once = PTHREAD_ONCE_INIT;
static int bus_ok;

static void bus_chain(int sig, siginfo_t *si, void *uc)
{
	if (bus_prev.sa_flags & SA_SIGINFO) {
		if (bus_prev.sa_sigaction) {
			bus_prev.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (bus_prev.sa_handler == SIG_IGN) {
		if (si->si_code <= 0)
			return; /* sent with kill: ignored, as before us */
	} else if (bus_prev.sa_handler != SIG_DFL) {
		bus_prev.sa_handler(sig);
		return;
	}
	/* The default action, as if we were not here: a fault repeats on return and kills; a signal
	 * that was sent is raised again (blocked until we return). */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

static void bus_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	uintptr_t a = (uintptr_t)si->si_addr;
	unsigned hi = atomic_load(&guards_hi);
	for (unsigned i = 0; si->si_code > 0 && i < hi && i < GUARD_SLOTS; i++) {
		uintptr_t lo = atomic_load(&guards[i].lo);
		if (lo <= GUARD_CLAIMED || a < lo || a >= atomic_load(&guards[i].hi))
			continue;
		/* A page of a store's mapping past the end of its file (or unreadable): read zeros from
		 * now on. Writes land in the zero page and are lost; the store refuses to commit them. */
		void *pg = (void *)(a & ~(bus_page - 1));
		if (mmap(pg, (size_t)bus_page, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
		    MAP_FAILED)
			break;
		_Atomic int *f = atomic_load(&guards[i].flag);
		if (f)
			atomic_store(f, 1);
		errno = saved;
		return;
	}
	bus_chain(sig, si, uc);
	errno = saved;
}

static void bus_install(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	bus_page = pg > 0 ? (uintptr_t)pg : 4096u;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = bus_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	bus_ok = sigaction(SIGBUS, &sa, &bus_prev) == 0;
}

int map_guard_add(void *base, uint64_t len, _Atomic int *flag)
{
	pthread_once(&bus_once, bus_install);
	if (!bus_ok)
		return 0; /* no handler could be installed: unprotected, as without the guard */
	for (unsigned i = 0; i < GUARD_SLOTS; i++) {
		uintptr_t z = 0;
		if (atomic_load_explicit(&guards[i].lo, memory_order_relaxed) != 0 ||
		    !atomic_compare_exchange_strong(&guards[i].lo, &z, GUARD_CLAIMED))
			continue;
		atomic_store(&guards[i].hi, (uintptr_t)base + (uintptr_t)len);
		atomic_store(&guards[i].flag, flag);
		unsigned hi = atomic_load(&guards_hi);
		while (hi < i + 1 && !atomic_compare_exchange_weak(&guards_hi, &hi, i + 1))
			;
		atomic_store(&guards[i].lo, (uintptr_t)base);
		return 0;
	}
	return err_set(MS_ENOMEM, "more than %u store mappings in this process", GUARD_SLOTS);
}

void map_guard_del(void *base)
{
	unsigned hi = atomic_load(&guards_hi);
	for (unsigned i = 0; i < hi && i < GUARD_SLOTS; i++) {
		if (atomic_load(&guards[i].lo) != (uintptr_t)base)
			continue;
		uintptr_t b = (uintptr_t)base;
		if (atomic_compare_exchange_strong(&guards[i].lo, &b, GUARD_CLAIMED)) {
			atomic_store(&guards[i].flag, NULL);
			atomic_store(&guards[i].hi, 0);
			atomic_store(&guards[i].lo, 0);
		}
		return;
	}
}

int map_fault_error(ms_store *s)
{
	struct stat sb;
	if (ms_sys.fstat(s->fd, &sb) == 0 && (uint64_t)sb.st_size < s->file_size)
		return err_set(MS_EIO, "%s was truncated under the store (to %llu bytes; the store needs %llu): "
		               "close it; a reopen checks what is left", s->path, (unsigned long long)sb.st_size,
		               (unsigned long long)s->file_size);
	return err_set(MS_EIO, "%s: a page of the store's mapping could not be read (the file was truncated "
	               "under the store, or an I/O error); close it and reopen", s->path);
}

int map_check_size(ms_store *s)
{
	struct stat sb;
	if (!map_faulted(s) && ms_sys.fstat(s->fd, &sb) == 0 && (uint64_t)sb.st_size >= s->file_size)
		return 0;
	atomic_store(&s->truncated, 1);
	return map_fault_error(s);
}

int map_open(ms_store *s)
{
	int prot = PROT_READ | ((s->flags & MS_READONLY) ? 0 : PROT_WRITE);
	uint64_t want = s->capacity ? round_up(s->capacity, MS_PAGE) : MAP_DEFAULT_RESERVE;
	if (want < s->file_size)
		want = round_up(s->file_size, MS_PAGE);
	for (;;) {
		void *p = ms_sys.mmap(NULL, (size_t)want, prot, MAP_SHARED | MAP_NORESERVE, s->fd, 0);
		if (p != MAP_FAILED) {
			int rc = map_guard_add(p, want, &s->truncated);
			if (rc) {
				ms_sys.munmap(p, (size_t)want);
				return rc;
			}
			s->base = p;
			s->reserve = want;
			return 0;
		}
		/* Some environments (sanitizers, small address spaces) refuse a huge reservation. */
		if (s->capacity || want / 2 < MAP_MIN_RESERVE || want / 2 < s->file_size)
			return err_errno(MS_ENOMEM, errno, "mmap %s (%llu bytes)", s->path,
			                 (unsigned long long)want);
		want /= 2;
	}
}

void map_close(ms_store *s)
{
	if (s->base) {
		map_guard_del(s->base);
		ms_sys.munmap(s->base, (size_t)s->reserve);
	}
	for (size_t i = 0; i < s->n_old_maps; i++) {
		map_guard_del(s->old_maps[i].base);
		ms_sys.munmap(s->old_maps[i].base, (size_t)s->old_maps[i].len);
	}
	free(s->old_maps);
	s->base = NULL;
	s->old_maps = NULL;
	s->n_old_maps = 0;
}

/* A larger mapping for a store past its reservation; the old one stays mapped (see above). Called by
 * the writer growing the file and by any thread that meets a snapshot another process grew. */
int map_extend(ms_store *s, uint64_t need)
{
	pthread_mutex_lock(&s->maplock);
	int rc = 0;
	if (need > s->reserve)
		rc = map_extend_locked(s, need);
	pthread_mutex_unlock(&s->maplock);
	return rc;
}

static int map_extend_locked(ms_store *s, uint64_t need)
{
	uint64_t want = s->reserve * 2;
	while (want < need)
		want *= 2;
	struct old_map *om = realloc(s->old_maps, (s->n_old_maps + 1) * sizeof *om);
	if (!om)
		return MS_ENOMEM;
	s->old_maps = om;
	int prot = PROT_READ | ((s->flags & MS_READONLY) ? 0 : PROT_WRITE);
	void *p = ms_sys.mmap(NULL, (size_t)want, prot, MAP_SHARED | MAP_NORESERVE, s->fd, 0);
	if (p == MAP_FAILED)
		return err_errno(MS_ENOMEM, errno, "mmap %s (%llu bytes)", s->path, (unsigned long long)want);
	int rc = map_guard_add(p, want, &s->truncated);
	if (rc) {
		ms_sys.munmap(p, (size_t)want);
		return rc;
	}
	om[s->n_old_maps].base = s->base;
	om[s->n_old_maps].len = s->reserve;
	s->n_old_maps++;
	pthread_mutex_lock(&s->lock);
	s->base = p;
	s->reserve = want;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int map_grow(ms_store *s, uint64_t need_end)
{
	if (need_end <= s->file_size)
		return 0;
	uint64_t step = s->file_size / 8 > GROW_MIN ? s->file_size / 8 : GROW_MIN;
	uint64_t target = round_up(need_end > s->file_size + step ? need_end : s->file_size + step,
	                           GROW_ALIGN);
	if (s->capacity && target > s->capacity) {
		target = s->capacity / MS_ALIGN * MS_ALIGN;
		if (target < need_end)
			return err_set(MS_ENOSPC, "%s: capacity of %llu bytes reached", s->path,
			               (unsigned long long)s->capacity);
	}
	if (target >= MS_OFF_LIMIT)
		return err_set(MS_ENOSPC, "%s: the format's 256 TiB limit reached", s->path);
	/* Growing a file that was truncated under the store would fill its lost middle with zeros. */
	int rc = map_check_size(s);
	if (rc)
		return rc;
	if (target > s->reserve && (rc = map_extend(s, target)))
		return rc;
	int e = ms_sys.fallocate(s->fd, (off_t)s->file_size, (off_t)(target - s->file_size));
	if (e && target > need_end) {
		/* The disk may still hold what is needed without the growth step. */
		target = round_up(need_end, MS_ALIGN);
		e = ms_sys.fallocate(s->fd, (off_t)s->file_size, (off_t)(target - s->file_size));
	}
	if (e)
		return err_errno(err_from_errno(e) == MS_EINVAL ? MS_EIO : err_from_errno(e), e,
		                 "fallocate %s to %llu bytes", s->path, (unsigned long long)target);
	rc = alloc_grow(s->alloc, target);
	if (rc)
		return rc == ALLOC_ENOMEM ? MS_ENOMEM : err_set(MS_EIO, "%s: allocator refused growth", s->path);
	s->file_size = target;
	return 0;
}
