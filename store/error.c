/* store/error.c - return codes as sentences, and the per-thread detail of the last failure
 * (the file, the call and the reason) behind ms_last_error(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[512];

const char *ms_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case MS_NOTFOUND: return "key not found";
	case MS_EINVAL: return "invalid argument";
	case MS_ENOSPC: return "no space left: the store's capacity or the disk is full";
	case MS_ECORRUPT: return "the file is not a valid store or is damaged";
	case MS_EVERSION: return "the file's format is newer than this library";
	case MS_EIO: return "I/O error";
	case MS_ENOMEM: return "out of memory or address space";
	case MS_EBUSY: return "the store is busy (held by another process or operation)";
	case MS_ERDONLY: return "the store or transaction is read-only";
	case MS_ERANGE: return "the buffer is too small";
	default: return "unknown error code";
	}
}

const char *ms_last_error(void) { return last_error; }

#ifdef MS_DEBUG
uint64_t ms_test_hash_mask = ~0ull;

void ms_assert_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "mstore: internal assertion failed: %s (%s:%d)\n", what, file, line);
	abort();
}
#endif

int err_set(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof last_error, fmt, ap);
	va_end(ap);
	return code;
}

int err_errno(int code, int errnum, const char *fmt, ...)
{
	char what[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	snprintf(last_error, sizeof last_error, "%s: %s", what, strerror(errnum));
	return code;
}

int err_from_errno(int errnum)
{
	switch (errnum) {
	case ENOSPC: case EDQUOT: case EFBIG: return MS_ENOSPC;
	case ENOMEM: return MS_ENOMEM;
	case ENOENT: case ENOTDIR: case EISDIR: case ENAMETOOLONG: case ELOOP: case EINVAL: return MS_EINVAL;
	case EWOULDBLOCK: return MS_EBUSY;
	case EROFS: return MS_ERDONLY;
	default: return MS_EIO;
	}
}
