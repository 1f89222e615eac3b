/* store/sys.c - the one seam for system calls on the store file. Every open, read, write, sync,
 * growth and mapping goes through ms_sys, so fault injection and the power-loss simulator hook in
 * by replacing entries of the table (SQLite's VFS syscall table does the same). */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

static int sys_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }
static int sys_fallocate(int fd, off_t off, off_t len) { return posix_fallocate(fd, off, len); }

#define SYS_DEFAULTS                                                                                    \
	{                                                                                               \
		.open = sys_open, .close = close, .pread = pread, .pwrite = pwrite, .fdatasync = fdatasync, \
		.fsync = fsync, .fallocate = sys_fallocate, .ftruncate = ftruncate, .mmap = mmap,           \
		.munmap = munmap, .msync = msync,                                                           \
	}
const struct ms_sys ms_sys_default = SYS_DEFAULTS;
struct ms_sys ms_sys = SYS_DEFAULTS;

int sys_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t r = ms_sys.pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO;
			return -1;
		}
		p += r, len -= (size_t)r, off += (uint64_t)r;
	}
	return 0;
}

int sys_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t r = ms_sys.pwrite(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO;
			return -1;
		}
		p += r, len -= (size_t)r, off += (uint64_t)r;
	}
	return 0;
}
