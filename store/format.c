/* store/format.c - validation of a meta page read from the file (I1 in format.h); the checksums are
 * in hash.h. */
#include "internal.h"

unsigned char ms_node_secret[XXH3_SECRET_DEFAULT_SIZE];
unsigned char ms_bucket_secret[XXH3_SECRET_DEFAULT_SIZE];

__attribute__((constructor)) static void node_secret_init(void)
{
	XXH3_generateSecret_fromSeed(ms_node_secret, MS_SEED_NODE);
	XXH3_generateSecret_fromSeed(ms_bucket_secret, MS_SEED_BUCKET);
}

int meta_check(const struct disk_meta *m, uint64_t file_size, const char **why)
{
	if (m->magic != MS_MAGIC)
		return *why = "bad magic (not an mstore file)", MS_ECORRUPT;
	/* Every format version keeps magic, version and the hash of bytes [0, 184) where they are, so a
	 * newer version is told from a damaged version field by the hash. */
	if (meta_hash(m) != m->hash)
		return *why = "meta page checksum mismatch", MS_ECORRUPT;
	if (m->version > MS_FORMAT_VERSION)
		return *why = "format version newer than this library", MS_EVERSION;
	if (m->version == 0)
		return *why = "format version 0", MS_ECORRUPT;
	if (m->page_size != MS_PAGE)
		return *why = "unsupported page size", MS_ECORRUPT;
	if (m->heap_end < MS_HEAP_START || (m->heap_end & (MS_ALIGN - 1)) || m->heap_end >= MS_OFF_LIMIT)
		return *why = "heap end out of range", MS_ECORRUPT;
	if (m->heap_end > file_size)
		return *why = "file is shorter than its heap (truncated)", MS_ECORRUPT;
	if (m->root && (!ent_is_node(m->root) || (m->root & 0xc) || (m->version < 2 && ent_is_bucket(m->root)) || m->root >> 48 ||
	                ent_off(m->root) < MS_HEAP_START || ent_off(m->root) >= m->heap_end))
		return *why = "root offset out of range", MS_ECORRUPT;
	if (m->ckpt_off && (m->ckpt_off < MS_HEAP_START || (m->ckpt_off & (MS_ALIGN - 1)) ||
	                    m->ckpt_off > m->heap_end || m->ckpt_len > m->heap_end - m->ckpt_off))
		return *why = "allocator checkpoint out of range", MS_ECORRUPT;
	if (m->flags & ~MS_META_NOSYNC)
		return *why = "unknown meta flags", MS_ECORRUPT;
	if (m->obj_bytes + m->node_bytes > m->heap_end - MS_HEAP_START || m->live_bytes > m->obj_bytes)
		return *why = "space totals exceed the heap", MS_ECORRUPT;
	if (m->rec_count > MS_REC_MAX || (m->rec_count && (m->version < 3 || (m->flags & MS_META_NOSYNC))))
		return *why = "bad commit record", MS_ECORRUPT;
	return 0;
}

int meta_record_check(const uint8_t *base, const struct disk_meta *m, const struct disk_rec *rec, const char **why)
{
	if (m->rec_count == 0)
		return 0;
	if (rec_hash(rec, m->rec_count * sizeof *rec) != m->rec_hash)
		return *why = "commit record checksum mismatch", MS_ECORRUPT;
	uint64_t total = 0;
	for (uint64_t i = 0; i < m->rec_count; i++) {
		const struct disk_rec *r = &rec[i];
		if (r->off < MS_HEAP_START || (r->off & (MS_ALIGN - 1)) || r->len == 0 || r->off > m->heap_end ||
		    r->len > m->heap_end - r->off || r->len > MS_REC_MAX_BYTES - total)
			return *why = "commit record lists a block out of range", MS_ECORRUPT;
		total += r->len;
		if (rec_hash(base + r->off, r->len) != r->hash)
			return *why = "a block of the newest commit does not hold what its commit record says "
			              "(the commit was cut short by a crash)", MS_ECORRUPT;
	}
	return 0;
}
