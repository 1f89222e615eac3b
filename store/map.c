/* store/map.c - the mapping of the store file and its growth.
 *
 * The whole file is mapped once, with address space reserved for the capacity (or a large default),
 * so that growth never moves objects under a reader. The file grows in steps with fallocate, so a
 * full disk is MS_ENOSPC at growth time, never SIGBUS on a later store. When an unlimited store
 * outgrows its reservation a larger mapping is made and the old one kept until close: readers that
 * began before hold pointers into it, and both views see the same pages.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

#define MAP_DEFAULT_RESERVE (1ull << 40) /* 1 TiB of address space; costs nothing until touched */
#define MAP_MIN_RESERVE (1ull << 30)
#define GROW_MIN (1ull << 20)
#define GROW_ALIGN (64ull << 10)

static int map_extend_locked(ms_store *s, uint64_t need);

int map_open(ms_store *s)
{
	int prot = PROT_READ | ((s->flags & MS_READONLY) ? 0 : PROT_WRITE);
	uint64_t want = s->capacity ? round_up(s->capacity, MS_PAGE) : MAP_DEFAULT_RESERVE;
	if (want < s->file_size)
		want = round_up(s->file_size, MS_PAGE);
	for (;;) {
		void *p = ms_sys.mmap(NULL, (size_t)want, prot, MAP_SHARED | MAP_NORESERVE, s->fd, 0);
		if (p != MAP_FAILED) {
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
	if (s->base)
		ms_sys.munmap(s->base, (size_t)s->reserve);
	for (size_t i = 0; i < s->n_old_maps; i++)
		ms_sys.munmap(s->old_maps[i].base, (size_t)s->old_maps[i].len);
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
	if (target > s->reserve) {
		int rc = map_extend(s, target);
		if (rc)
			return rc;
	}
	int e = ms_sys.fallocate(s->fd, (off_t)s->file_size, (off_t)(target - s->file_size));
	if (e && target > need_end) {
		/* The disk may still hold what is needed without the growth step. */
		target = round_up(need_end, MS_ALIGN);
		e = ms_sys.fallocate(s->fd, (off_t)s->file_size, (off_t)(target - s->file_size));
	}
	if (e)
		return err_errno(err_from_errno(e) == MS_EINVAL ? MS_EIO : err_from_errno(e), e,
		                 "fallocate %s to %llu bytes", s->path, (unsigned long long)target);
	int rc = alloc_grow(s->alloc, target);
	if (rc)
		return rc == ALLOC_ENOMEM ? MS_ENOMEM : err_set(MS_EIO, "%s: allocator refused growth", s->path);
	s->file_size = target;
	return 0;
}
