/* tests/test_model.c - randomized operations against an in-memory model of the store.
 *
 * Mixed puts (0 B to 64 KiB, a few up to 1 MiB), overwrites, reserves, dels, gets and iterations run
 * in batches: most batches are write transactions (some aborted, and the model rolls back too), some
 * are one-operation calls. Between batches the store is sometimes closed and reopened, and then its
 * whole content (iterator, ms_stat) is compared with the model; ms_check runs on the closed file
 * from time to time. Values are regenerated from seeds, so the model holds (length, seed) per key.
 *
 * MS_TEST_SEED picks the seed (printed in every failure); MS_TEST_SCALE multiplies the operation
 * count (default 1: 100000 operations per durability mode; use e.g. 0.3 under sanitizers).
 */
#include "testutil.h"

TestSuite(model, .init = tu_setup, .fini = tu_teardown, .timeout = 600);

enum { NKEYS = 2500, MAXVAL = 1 << 20 };

struct mstate {
	bool present;
	uint32_t len;
	uint64_t vseed;
};

struct model {
	uint64_t base;   /* MS_TEST_SEED */
	uint64_t seed;   /* base, salted per durability mode */
	uint64_t op;     /* operations so far (for messages) */
	uint64_t batch;
	tu_rng rng;
	const char *path;
	unsigned flags;  /* open flags: 0 or MS_NOSYNC */
	ms_store *s;
	struct mstate committed[NKEYS];
	struct mstate pending[NKEYS]; /* valid where pdirty is set */
	bool pdirty[NKEYS];
	unsigned dirty[NKEYS];
	unsigned ndirty;
	uint64_t objects, live; /* of the committed state */
	uint64_t versions;
	unsigned char *buf;     /* MAXVAL + 1 bytes for copies */
	/* counters for the summary */
	uint64_t puts, dels, gets, iters, commits, aborts, reopens, checks, singles;
};

#define MCHK(m, cond, fmt, ...)                                                                         \
	cr_assert(cond, "[MS_TEST_SEED=%" PRIu64 " batch %" PRIu64 " op %" PRIu64 "] " fmt, (m)->base,   \
		  (m)->batch, (m)->op, ##__VA_ARGS__)

/* Key bytes of id: "m<id>:" then filler; mostly short, every 97th long (up to 3000 bytes). */
static size_t key_of(uint64_t seed, unsigned id, char *buf)
{
	int n = snprintf(buf, 32, "m%u:", id);
	uint64_t h = tu_seed3(seed, id, 0x6b6579);
	size_t extra = id % 97 == 0 ? 200 + (size_t)(h % 2800) : (size_t)(h % 40);
	tu_fill(buf + n, extra, h);
	return (size_t)n + extra;
}

static bool id_of(const void *key, size_t klen, unsigned *id)
{
	const char *k = key;
	if (klen < 3 || k[0] != 'm')
		return false;
	unsigned v = 0;
	size_t i = 1;
	for (; i < klen && i < 12 && k[i] >= '0' && k[i] <= '9'; i++)
		v = v * 10 + (unsigned)(k[i] - '0');
	if (i == 1 || i >= klen || k[i] != ':' || v >= NKEYS)
		return false;
	*id = v;
	return true;
}

static size_t pick_len(tu_rng *r)
{
	uint64_t c = tu_below(r, 1000);
	if (c < 550)
		return (size_t)tu_below(r, 129);
	if (c < 850)
		return (size_t)tu_range(r, 129, 4096);
	if (c < 995)
		return (size_t)tu_range(r, 4097, 65536);
	return (size_t)tu_range(r, 65537, MAXVAL);
}

static struct mstate *cur(struct model *m, unsigned id)
{
	return m->pdirty[id] ? &m->pending[id] : &m->committed[id];
}

static void set_pending(struct model *m, unsigned id, struct mstate st)
{
	if (!m->pdirty[id]) {
		m->pdirty[id] = true;
		m->dirty[m->ndirty++] = id;
	}
	m->pending[id] = st;
}

static void apply_committed(struct model *m, unsigned id, struct mstate st)
{
	char kb[4096];
	size_t klen = key_of(m->seed, id, kb);
	struct mstate *c = &m->committed[id];
	if (c->present) {
		m->objects--;
		m->live -= klen + c->len;
	}
	*c = st;
	if (c->present) {
		m->objects++;
		m->live += klen + c->len;
	}
}

static void end_txn(struct model *m, bool commit)
{
	for (unsigned i = 0; i < m->ndirty; i++) {
		unsigned id = m->dirty[i];
		if (commit)
			apply_committed(m, id, m->pending[id]);
		m->pdirty[id] = false;
	}
	m->ndirty = 0;
}

static void check_value(struct model *m, unsigned id, const struct mstate *want, int rc, const void *data,
			size_t len, const char *how)
{
	if (!want->present) {
		MCHK(m, rc == MS_NOTFOUND, "%s of deleted/absent key %u = %d, want MS_NOTFOUND", how, id, rc);
		return;
	}
	MCHK(m, rc == 0, "%s of key %u = %d (%s), want its %u-byte value", how, id, rc, ms_strerror(rc), want->len);
	MCHK(m, len == want->len, "%s of key %u: length %zu, want %u", how, id, len, want->len);
	MCHK(m, tu_check_fill(data, len, want->vseed), "%s of key %u: wrong bytes", how, id);
}

static void check_stats(struct model *m)
{
	ms_stats st = tu_stat(m->s);
	MCHK(m, st.objects == m->objects, "ms_stat objects %" PRIu64 ", model %" PRIu64, st.objects, m->objects);
	MCHK(m, st.live_bytes == m->live, "ms_stat live_bytes %" PRIu64 ", model %" PRIu64, st.live_bytes, m->live);
	MCHK(m, st.file_bytes >= st.used_bytes + st.free_bytes, "file_bytes %" PRIu64 " < used %" PRIu64 " + free %" PRIu64,
	     st.file_bytes, st.used_bytes, st.free_bytes);
}

/* Compare t's whole snapshot with the model (pending state when in_txn). */
static void check_all(struct model *m, ms_txn *t, bool in_txn)
{
	static unsigned char seen[NKEYS];
	memset(seen, 0, sizeof seen);
	ms_iter *it = NULL;
	int rc = ms_iter_open(t, &it);
	MCHK(m, rc == 0, "ms_iter_open = %d", rc);
	ms_val k, v;
	uint64_t n = 0;
	while ((rc = ms_iter_next(it, &k, &v)) == 0) {
		unsigned id;
		MCHK(m, id_of(k.data, k.len, &id), "iterator returned a key the model never wrote (%zu bytes)", k.len);
		MCHK(m, !seen[id], "iterator returned key %u twice", id);
		seen[id] = 1;
		char kb[4096];
		size_t klen = key_of(m->seed, id, kb);
		MCHK(m, k.len == klen && memcmp(k.data, kb, klen) == 0, "iterator key %u has wrong bytes", id);
		check_value(m, id, in_txn ? cur(m, id) : &m->committed[id], 0, v.data, v.len, "iterator");
		n++;
	}
	MCHK(m, rc == MS_NOTFOUND, "ms_iter_next ended with %d (%s)", rc, ms_strerror(rc));
	ms_iter_close(it);
	uint64_t want = 0;
	for (unsigned id = 0; id < NKEYS; id++) {
		bool p = (in_txn ? cur(m, id) : &m->committed[id])->present;
		want += p;
		MCHK(m, p == (seen[id] != 0), "iterator %s key %u", p ? "missed" : "showed absent", id);
	}
	MCHK(m, n == want, "iterator gave %" PRIu64 " objects, model has %" PRIu64, n, want);
	m->iters++;
}

/* ms_check on the closed store must be clean and agree with the model. */
static void check_file(struct model *m)
{
	struct tu_problems pr = { 0 };
	ms_check_stats cs;
	memset(&cs, 0, sizeof cs);
	int rc = ms_check(m->path, tu_problem_fn, &pr, &cs);
	MCHK(m, rc == 0, "%s: ms_check after %" PRIu64 " reopens = %d (%s): %" PRIu64 " problems, first at offset %" PRIu64
	     ": %s", m->flags & MS_NOSYNC ? "MS_NOSYNC" : "default mode", m->reopens, rc, ms_strerror(rc), pr.count,
	     pr.first_off, pr.first);
	MCHK(m, cs.objects == m->objects, "ms_check counted %" PRIu64 " objects, model %" PRIu64, cs.objects, m->objects);
	MCHK(m, cs.live_bytes == m->live, "ms_check counted %" PRIu64 " live bytes, model %" PRIu64, cs.live_bytes, m->live);
	m->checks++;
}

static void reopen(struct model *m)
{
	tu_close(m->s);
	m->s = NULL;
	m->reopens++;
	if (tu_below(&m->rng, 8) == 0)
		check_file(m);
	if (tu_below(&m->rng, 6) == 0) { /* look at it read-only first */
		ms_store *ro = tu_open(m->path, MS_READONLY, 0);
		ms_txn *t = tu_begin(ro, MS_READONLY);
		check_all(m, t, false);
		ms_txn_abort(t);
		tu_close(ro);
	}
	m->s = tu_open(m->path, m->flags, 0);
	check_stats(m);
	ms_txn *t = tu_begin(m->s, MS_READONLY);
	check_all(m, t, false);
	ms_txn_abort(t);
}

static unsigned pick_key(struct model *m)
{
	/* A hot tenth of the keys gets half the traffic, so overwrites and deletes of live keys abound. */
	if (tu_below(&m->rng, 2))
		return (unsigned)tu_below(&m->rng, NKEYS / 10);
	return (unsigned)tu_below(&m->rng, NKEYS);
}

/* One operation inside write transaction t. */
static void txn_op(struct model *m, ms_txn *t)
{
	char kb[4096];
	unsigned id = pick_key(m);
	size_t klen = key_of(m->seed, id, kb);
	uint64_t c = tu_below(&m->rng, 1000);
	int rc;
	m->op++;
	if (c < 450) {
		size_t len = pick_len(&m->rng);
		struct mstate st = { true, (uint32_t)len, tu_seed3(m->seed, id, ++m->versions) };
		if (c < 40) {
			void *dst = NULL;
			rc = ms_txn_reserve(t, kb, klen, len, &dst);
			MCHK(m, rc == 0, "ms_txn_reserve(key %u, %zu) = %d (%s)", id, len, rc, ms_strerror(rc));
			MCHK(m, len == 0 || dst != NULL, "ms_txn_reserve gave no space");
			tu_fill(dst, len, st.vseed);
		} else {
			tu_fill(m->buf, len, st.vseed);
			rc = ms_txn_put(t, kb, klen, m->buf, len);
			MCHK(m, rc == 0, "ms_txn_put(key %u, %zu) = %d (%s)", id, len, rc, ms_strerror(rc));
		}
		set_pending(m, id, st);
		m->puts++;
	} else if (c < 650) {
		rc = ms_txn_del(t, kb, klen);
		bool had = cur(m, id)->present;
		MCHK(m, rc == (had ? 0 : MS_NOTFOUND), "ms_txn_del(key %u) = %d, model says %s", id, rc,
		     had ? "present" : "absent");
		if (had)
			set_pending(m, id, (struct mstate){ 0 });
		m->dels++;
	} else if (c < 970) {
		ms_val v = { 0 };
		rc = ms_txn_get(t, kb, klen, &v);
		check_value(m, id, cur(m, id), rc, v.data, v.len, "ms_txn_get");
		m->gets++;
	} else if (c < 999) {
		/* A one-operation read beside the write transaction sees only committed state. */
		size_t vlen = 0;
		rc = ms_get(m->s, kb, klen, m->buf, MAXVAL + 1, &vlen);
		check_value(m, id, &m->committed[id], rc, m->buf, vlen, "ms_get beside a write txn");
		m->gets++;
	} else {
		check_all(m, t, true);
	}
}

/* One one-operation call (its own commit). */
static void single_op(struct model *m)
{
	char kb[4096];
	unsigned id = pick_key(m);
	size_t klen = key_of(m->seed, id, kb);
	uint64_t c = tu_below(&m->rng, 100);
	int rc;
	m->op++;
	m->singles++;
	if (c < 45) {
		size_t len = pick_len(&m->rng);
		struct mstate st = { true, (uint32_t)len, tu_seed3(m->seed, id, ++m->versions) };
		tu_fill(m->buf, len, st.vseed);
		rc = ms_put(m->s, kb, klen, m->buf, len);
		MCHK(m, rc == 0, "ms_put(key %u, %zu) = %d (%s)", id, len, rc, ms_strerror(rc));
		apply_committed(m, id, st);
		m->puts++;
	} else if (c < 65) {
		rc = ms_del(m->s, kb, klen);
		bool had = m->committed[id].present;
		MCHK(m, rc == (had ? 0 : MS_NOTFOUND), "ms_del(key %u) = %d, model says %s", id, rc,
		     had ? "present" : "absent");
		apply_committed(m, id, (struct mstate){ 0 });
		m->dels++;
	} else {
		size_t vlen = 0;
		const struct mstate *want = &m->committed[id];
		size_t cap = want->present && want->len > 0 && tu_below(&m->rng, 10) == 0 ? want->len - 1 : MAXVAL + 1;
		rc = ms_get(m->s, kb, klen, m->buf, cap, &vlen);
		if (want->present && cap < want->len) {
			MCHK(m, rc == MS_ERANGE && vlen == want->len, "ms_get(key %u, cap %zu) = %d, vlen %zu; want MS_ERANGE, %u",
			     id, cap, rc, vlen, want->len);
		} else {
			check_value(m, id, want, rc, m->buf, vlen, "ms_get");
		}
		m->gets++;
	}
}

static uint64_t batch_size(tu_rng *r)
{
	uint64_t c = tu_below(r, 10);
	if (c < 5)
		return tu_range(r, 1, 10);
	if (c < 9)
		return tu_range(r, 11, 100);
	return tu_range(r, 101, 800);
}

static void run_model(unsigned flags, uint64_t seed_salt)
{
	static struct model mm;
	struct model *m = &mm;
	memset(m, 0, sizeof *m);
	m->base = tu_seed();
	m->seed = m->base ^ seed_salt;
	m->rng.s = m->seed;
	m->path = tu_path("model.ms");
	m->flags = flags;
	m->buf = malloc(MAXVAL + 1);
	cr_assert_not_null(m->buf);
	double scale = tu_env_double("MS_TEST_SCALE", 1.0);
	uint64_t total = (uint64_t)(100000.0 * scale);
	if (total < 1000)
		total = 1000;
	double t0 = tu_now();

	m->s = tu_open(m->path, MS_CREATE | flags, 0);
	while (m->op < total) {
		m->batch++;
		uint64_t n = batch_size(&m->rng);
		if (tu_below(&m->rng, 100) < 15) {
			/* One-operation calls: each is a (durable) commit, so these batches stay short. */
			n = tu_range(&m->rng, 1, 20);
			for (uint64_t i = 0; i < n && m->op < total; i++)
				single_op(m);
		} else {
			ms_txn *t = tu_begin(m->s, 0);
			for (uint64_t i = 0; i < n && m->op < total; i++)
				txn_op(m, t);
			if (tu_below(&m->rng, 100) < 12) {
				ms_txn_abort(t);
				end_txn(m, false);
				m->aborts++;
			} else {
				int rc = ms_txn_commit(t);
				MCHK(m, rc == 0, "ms_txn_commit = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
				end_txn(m, true);
				m->commits++;
			}
		}
		check_stats(m);
		if (flags & MS_NOSYNC && tu_below(&m->rng, 50) == 0)
			MCHK(m, ms_sync(m->s) == 0, "ms_sync failed");
		if (tu_below(&m->rng, 8) == 0)
			reopen(m);
	}
	reopen(m);
	tu_close(m->s);
	check_file(m);
	cr_log_info("model (flags %#x, MS_TEST_SEED=%" PRIu64 "): %" PRIu64 " ops in %.1f s: %" PRIu64 " puts, %" PRIu64
		    " dels, %" PRIu64 " gets, %" PRIu64 " iterations, %" PRIu64 " commits, %" PRIu64 " aborts, %" PRIu64
		    " one-op calls, %" PRIu64 " reopens, %" PRIu64 " checks; final %" PRIu64 " objects",
		    flags, tu_seed(), m->op, tu_now() - t0, m->puts, m->dels, m->gets, m->iters, m->commits, m->aborts,
		    m->singles, m->reopens, m->checks, m->objects);
	free(m->buf);
}

Test(model, random_operations_match_the_model_in_default_mode)
{
	run_model(0, 0);
}

Test(model, random_operations_match_the_model_in_nosync_mode)
{
	run_model(MS_NOSYNC, 0x6e6f73796e63ull);
}
