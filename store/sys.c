/* store/sys.c - the one seam for system calls on the store and its lock file. Every open, stat,
 * read, write, sync, growth, mapping, rename, link, unlink and lock goes through ms_sys, so fault
 * injection and the power-loss simulator hook in by replacing entries of the table (SQLite's VFS
 * syscall table does the same). */
#define _GNU_SOURCE /* fallocate, FALLOC_FL_ZERO_RANGE, renameat2 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* renameat2 */
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int sys_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }
static int sys_fallocate(int fd, off_t off, off_t len) { return posix_fallocate(fd, off, len); }
/* Zero a range without writing it: ZERO_RANGE where the file system has it, else a hole punched and
 * booked again (a hole would let a later write through the mapping fail for want of space). */
static int sys_zero_range(int fd, off_t off, off_t len)
{
	if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
		return 0;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len))
		return -1;
	int e = posix_fallocate(fd, off, len);
	if (e) {
		errno = e;
		return -1;
	}
	return 0;
}

static int sys_fstat(int fd, struct stat *sb) { return fstat(fd, sb); }
static int sys_rename_noreplace(const char *from, const char *to)
{
	return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
}
static int sys_fcntl_lock(int fd, int cmd, struct flock *fl) { return fcntl(fd, cmd, fl); }

#define SYS_DEFAULTS                                                                                    \
	{                                                                                               \
		.open = sys_open, .close = close, .pread = pread, .pwrite = pwrite, .fdatasync = fdatasync, \
		.fsync = fsync, .fallocate = sys_fallocate, .ftruncate = ftruncate, .mmap = mmap,           \
		.munmap = munmap, .msync = msync, .zero_range = sys_zero_range, .fstat = sys_fstat,        \
		.rename_noreplace = sys_rename_noreplace, .link = link, .unlink = unlink, .flock = flock,   \
		.fcntl_lock = sys_fcntl_lock,                                                               \
	}
const struct ms_sys ms_sys_default = SYS_DEFAULTS;
struct ms_sys ms_sys = SYS_DEFAULTS;

/* pread or pwrite until all of len is done (EINTR retried; 0 bytes is EIO). */
static int full_io(int fd, uint8_t *p, size_t len, uint64_t off, bool write)
{
	while (len) {
		ssize_t r = write ? ms_sys.pwrite(fd, p, len, (off_t)off) : ms_sys.pread(fd, p, len, (off_t)off);
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

int sys_pread_full(int fd, void *buf, size_t len, uint64_t off) { return full_io(fd, buf, len, off, false); }

int sys_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	return full_io(fd, (uint8_t *)(uintptr_t)buf, len, off, true); /* only written from */
}
