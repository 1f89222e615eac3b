/* store/format.c - the meta page and the checkpoint as the file holds them: building and writing a
 * meta page, reading both pages, validating one (I1 in format.h) and its commit record (I2), picking
 * the newest, and loading the allocator checkpoint a meta points at (I6). Every caller that reads or
 * writes a meta page (open, snapshots, recovery, close, ms_check, the fuzz corpus) goes through here;
 * the checksums are in hash.h.
 */
#include <errno.h>
#include <string.h>

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
	if (m->seq >= MS_SEQ_LIMIT) /* a commit adds 1 or 2: near 2^64 it would wrap to an older one */
		return *why = "meta sequence out of range", MS_ECORRUPT;
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

void meta_build(struct disk_meta *m, const struct snap *st, uint64_t hash_seed, uint64_t created,
                const struct meta_ckpt *ck, const struct disk_rec *rec, uint64_t n_rec)
{
	memset(m, 0, sizeof *m);
	m->magic = MS_MAGIC;
	m->version = MS_FORMAT_VERSION;
	m->page_size = MS_PAGE;
	m->seq = st->seq;
	m->root = st->root;
	m->objects = st->objects;
	m->live_bytes = st->live_bytes;
	m->obj_bytes = st->obj_bytes;
	m->node_bytes = st->node_bytes;
	m->heap_end = st->heap_end;
	m->hash_seed = hash_seed;
	if (ck) {
		m->ckpt_off = ck->off;
		m->ckpt_len = ck->len;
		m->ckpt_hash = ck->hash;
		m->ckpt_seq = st->seq;
	}
	m->flags = st->flags;
	m->created = created;
	m->commit_id = st->commit_id;
	m->rec_count = n_rec;
	m->rec_hash = n_rec ? rec_hash(rec, n_rec * sizeof *rec) : 0;
	m->hash = meta_hash(m);
}

int meta_write(int fd, const struct snap *st, uint64_t hash_seed, uint64_t created, const struct meta_ckpt *ck,
               const struct disk_rec *rec, uint64_t n_rec)
{
	struct {
		struct disk_meta m;
		struct disk_rec rec[MS_REC_MAX];
	} page;
	if (NEVER(n_rec > MS_REC_MAX)) {
		errno = EINVAL;
		return -1;
	}
	meta_build(&page.m, st, hash_seed, created, ck, rec, n_rec);
	if (n_rec)
		memcpy(page.rec, rec, n_rec * sizeof *rec);
	/* A record shorter than the last one on this page leaves stale entries past it: no reader looks
	 * past rec_count, and the meta's hash covers the count. */
	return sys_pwrite_full(fd, &page, sizeof page.m + n_rec * sizeof *rec, (st->seq % 2) * MS_PAGE);
}

int meta_read_pages(int fd, uint64_t file_size, struct disk_meta m[2], struct disk_rec rec[2][MS_REC_MAX],
                    int rc[2], const char *why[2])
{
	for (int i = 0; i < 2; i++) {
		why[i] = NULL;
		if (sys_pread_full(fd, &m[i], sizeof m[i], (uint64_t)i * MS_PAGE))
			return -1;
		rc[i] = meta_check(&m[i], file_size, &why[i]);
		if (rc[i] == 0 && m[i].rec_count &&
		    sys_pread_full(fd, rec[i], m[i].rec_count * sizeof rec[i][0], (uint64_t)i * MS_PAGE + sizeof m[i]))
			return -1;
		if (rc[i] == 0 && m[i].seq % 2 != (uint64_t)i) {
			rc[i] = MS_ECORRUPT;
			why[i] = "transaction id in the wrong meta page";
		}
	}
	return 0;
}

int meta_pick(const struct disk_meta m[2], const bool ok[2], int order[2])
{
	if (ok[0] && ok[1]) {
		order[0] = m[0].seq > m[1].seq ? 0 : 1;
		order[1] = 1 - order[0];
		return 2;
	}
	if (ok[0] || ok[1]) {
		order[0] = ok[0] ? 0 : 1;
		order[1] = -1;
		return 1;
	}
	order[0] = order[1] = -1;
	return 0;
}

int ckpt_load(const uint8_t *base, const struct disk_meta *m, struct alloc **out, const char **why)
{
	if (!m->ckpt_off || m->ckpt_seq != m->seq)
		return MS_NOTFOUND;
	const uint8_t *blob = base + m->ckpt_off;
	uint64_t blob_len = 0;
	if (m->ckpt_len > 8)
		memcpy(&blob_len, blob, 8);
	if (m->ckpt_len <= 8 || blob_len > m->ckpt_len - 8 || blob_hash(blob, m->ckpt_len) != m->ckpt_hash)
		return *why = "allocator checkpoint fails its checksum", MS_ECORRUPT;
	int ir = alloc_import(blob + 8, (size_t)blob_len, out);
	if (ir == ALLOC_ENOMEM)
		return MS_ENOMEM;
	if (ir)
		return *why = "allocator checkpoint cannot be loaded", MS_ECORRUPT;
	return 0;
}
