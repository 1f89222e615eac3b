/* tests/helper/ms_test_helper.c - a second process for the multi-process and kill tests.
 *
 *   ms_test_helper commit PATH FD SEED [nosync]
 *       Open (creating) the store, read "seq" (0 when absent), write "start N\n" to FD, then commit
 *       transactions N+1, N+2, ... as tests/testutil.h's kt_txn_ops describes them, writing
 *       "ack S\n" to FD with write(2) after each ms_txn_commit that returned 0; every 16th commit or
 *       so it closes and reopens the store (or, with nosync, calls ms_sync). Runs until killed.
 *   ms_test_helper serve
 *       A process the test drives line by line: commands on standard input, one reply line each on
 *       standard output ("ok ...", "absent", "mismatch ...", "err CODE TEXT"). See do_serve.
 *   ms_test_helper mixed PATH LOG SEED WID SECONDS [nosync]
 *       One worker of tests/test_multiproc.c's workloads: mixed write and read transactions on an
 *       existing store for SECONDS (0: until SIGTERM or SIGKILL), logging to LOG what it commits and
 *       what it reads, so that the test can check every read and the final state. See do_mixed.
 *
 * Failures are written to FD (for mixed, to LOG) as "fail WHAT CODE\n" and end the process with exit
 * status 3, so the test can tell a library error from the kill it sent.
 */
#define TU_NO_CRITERION
#include "../testutil.h"

#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>

static int out_fd = -1;

static void say(const char *fmt, unsigned long long a)
{
	char line[96];
	int n = snprintf(line, sizeof line, fmt, a);
	if (n > 0)
		tu_write_all(out_fd, line, (size_t)n);
}

static int fail(const char *what, int rc)
{
	char line[160];
	int n = snprintf(line, sizeof line, "fail %s %d\n", what, rc);
	if (n > 0)
		tu_write_all(out_fd, line, (size_t)n);
	return 3;
}

static int do_commit(const char *path, uint64_t seed, bool nosync)
{
	ms_options o = { .flags = MS_CREATE | (nosync ? MS_NOSYNC : 0) };
	ms_store *s = NULL;
	int rc = ms_open(path, &o, &s);
	if (rc)
		return fail("open", rc);

	uint64_t seq = 0;
	size_t vlen = 0;
	unsigned char sb[8];
	rc = ms_get(s, KT_SEQ_KEY, strlen(KT_SEQ_KEY), sb, sizeof sb, &vlen);
	if (rc == 0 && vlen == 8)
		seq = kt_seq_value(sb);
	else if (rc != MS_NOTFOUND)
		return fail(rc ? "get-seq" : "seq-length", rc);
	say("start %llu\n", (unsigned long long)seq);

	unsigned char *buf = malloc(512 * 1024);
	if (!buf)
		return fail("malloc", 0);
	for (;;) {
		seq++;
		const char *what;
		rc = kt_commit(s, seed, seq, buf, &what);
		if (rc)
			return fail(what, rc);
		say("ack %llu\n", (unsigned long long)seq);
		/* Now and then a clean close and a reopen, or an ms_sync, so kills land there too. */
		uint64_t h = tu_seed3(seed, seq, 0x636c6f7365ull) % 16;
		if (h == 0) {
			if ((rc = ms_close(s)) != 0)
				return fail("close", rc);
			s = NULL;
			if ((rc = ms_open(path, &o, &s)) != 0)
				return fail("reopen", rc);
		} else if (h == 1 && nosync && (rc = ms_sync(s)) != 0) {
			return fail("sync", rc);
		}
	}
}

/* ---- mixed: a worker of the multi-process workloads ---------------------------------------------- *
 * Keys "m00".."m47" hold values that describe themselves: a 32-byte header (magic, key number, writer
 * id, total length, the writer's transaction number, the clock of the commit) and then tu_fill bytes
 * from a seed of those fields, so any reader can tell a committed, whole value from anything else.
 * The key "clock" (8 bytes, little endian) counts commits: each write transaction reads it and
 * writes it plus one, so its value is the commit's place in the one order of all writers. The log
 * lines (tests/test_multiproc.c parses them; keep the two in step):
 *   start                       the store is open
 *   pre C WID WSEQ TS N OPS...  about to commit clock C (TS: CLOCK_MONOTONIC ns; ops "pK:LEN", "dK")
 *   ack C WID WSEQ              ms_txn_commit returned 0
 *   R C                         a long read transaction on snapshot C began (it sleeps inside)
 *   r C K VC WID WSEQ LEN       in snapshot C key K held the value of commit VC (VC 0: absent)
 *   end                         closed cleanly
 *   fail TEXT                   a library error or a wrong read (exit status 3)
 * "pre" and "ack" are written at once with write(2); "r" lines are buffered (a kill may lose some). */

#define MP_NKEYS 48u
#define MP_CLOCK "clock"
#define MP_MAGIC 0x3156504du /* "MPV1" */
#define MP_HDR 32u
#define MP_MAXOPS 6u
#define MP_MAXLEN (256u * 1024u)

struct mp_hdr {
	uint32_t magic, key, wid, len;
	uint64_t wseq, clock;
};
_Static_assert(sizeof(struct mp_hdr) == MP_HDR, "mp_hdr layout");

static uint64_t mp_fill_seed(const struct mp_hdr *h)
{
	return tu_seed3(0x6d70000000ull ^ h->key, ((uint64_t)h->wid << 32) ^ h->wseq, h->clock ^ h->len);
}

static size_t mp_key(char *buf, unsigned k)
{
	return (size_t)snprintf(buf, 8, "m%02u", k);
}

static void mp_make(void *buf, size_t len, const struct mp_hdr *h)
{
	memcpy(buf, h, MP_HDR);
	tu_fill((unsigned char *)buf + MP_HDR, len - MP_HDR, mp_fill_seed(h));
}

/* NULL when the len bytes at p are a whole value of key k, with its header in *h; else what is wrong. */
static const char *mp_verify(const void *p, size_t len, unsigned k, struct mp_hdr *h)
{
	if (len < MP_HDR)
		return "shorter than a header";
	memcpy(h, p, MP_HDR);
	if (h->magic != MP_MAGIC)
		return "bad magic";
	if (h->key != k)
		return "the value of another key";
	if (h->len != len)
		return "length differs from its header";
	if (!tu_check_fill((const unsigned char *)p + MP_HDR, len - MP_HDR, mp_fill_seed(h)))
		return "bytes differ from what its writer wrote";
	return NULL;
}

static int log_fd = -1;
static volatile sig_atomic_t stop_flag;
static char sample_buf[16384];
static size_t sample_len;

static void on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n > 0)
		tu_write_all(log_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void samples_flush(void)
{
	if (sample_len)
		tu_write_all(log_fd, sample_buf, sample_len);
	sample_len = 0;
}

static void sample(uint64_t snap, unsigned k, const struct mp_hdr *h)
{
	if (sample_len + 128 > sizeof sample_buf)
		samples_flush();
	int n = snprintf(sample_buf + sample_len, 128, "r %llu %u %llu %u %llu %u\n", (unsigned long long)snap, k,
			 (unsigned long long)(h ? h->clock : 0), h ? h->wid : 0, (unsigned long long)(h ? h->wseq : 0),
			 h ? h->len : 0);
	if (n > 0)
		sample_len += (size_t)n;
}

static int mixed_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int mixed_fail(const char *fmt, ...)
{
	char line[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	samples_flush();
	log_line("fail %s\n", line);
	return 3;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The clock in t: 0 when absent; -1 (and a fail line) when unreadable. */
static int mp_clock(ms_txn *t, uint64_t *c)
{
	ms_val v;
	int rc = ms_txn_get(t, MP_CLOCK, strlen(MP_CLOCK), &v);
	*c = 0;
	if (rc == MS_NOTFOUND)
		return 0;
	if (rc)
		return mixed_fail("get clock = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	if (v.len != 8)
		return mixed_fail("clock has %zu bytes", v.len);
	for (int i = 7; i >= 0; i--)
		*c = (*c << 8) | ((const unsigned char *)v.data)[i];
	return 0;
}

/* Read key k in t (snapshot clock snap) and check it: a whole value of a commit no newer than snap.
 * Records a sample; *h gets the header (clock 0 when absent). */
static int mp_read(ms_txn *t, uint64_t snap, unsigned k, bool record, struct mp_hdr *h, ms_val *out)
{
	char key[8];
	size_t klen = mp_key(key, k);
	ms_val v;
	int rc = ms_txn_get(t, key, klen, &v);
	memset(h, 0, sizeof *h);
	if (rc == MS_NOTFOUND) {
		if (record)
			sample(snap, k, NULL);
		return 0;
	}
	if (rc)
		return mixed_fail("get %s in snapshot %llu = %d (%s): %s", key, (unsigned long long)snap, rc,
				  ms_strerror(rc), ms_last_error());
	const char *why = mp_verify(v.data, v.len, k, h);
	if (why)
		return mixed_fail("snapshot %llu: key %s (%zu bytes): %s", (unsigned long long)snap, key, v.len, why);
	if (h->clock > snap || h->clock == 0)
		return mixed_fail("snapshot %llu: key %s holds the value of commit %llu", (unsigned long long)snap, key,
				  (unsigned long long)h->clock);
	if (record)
		sample(snap, k, h);
	if (out)
		*out = v;
	return 0;
}

static size_t mp_len(tu_rng *r)
{
	uint64_t c = tu_below(r, 100);
	if (c < 40)
		return (size_t)tu_range(r, MP_HDR, 200);
	if (c < 80)
		return (size_t)tu_range(r, 201, 4096);
	if (c < 97)
		return (size_t)tu_range(r, 4097, 32768);
	return (size_t)tu_range(r, 32769, MP_MAXLEN);
}

struct mixed {
	ms_store *s;
	tu_rng r;
	uint32_t wid;
	uint64_t wseq;    /* this process's commits so far */
	uint64_t seen;    /* the newest clock this process has seen */
	unsigned char *buf;
};

static int mixed_write(struct mixed *m)
{
	ms_txn *t = NULL;
	int rc = ms_txn_begin(m->s, 0, &t);
	if (rc)
		return mixed_fail("begin write = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	uint64_t prev;
	if ((rc = mp_clock(t, &prev)))
		return rc;
	if (prev < m->seen)
		return mixed_fail("a write transaction sees clock %llu after this process saw %llu",
				  (unsigned long long)prev, (unsigned long long)m->seen);
	/* A write transaction starts on the newest commit: what it reads is that snapshot. */
	struct mp_hdr h;
	for (int i = 0; i < 2; i++)
		if ((rc = mp_read(t, prev, (unsigned)tu_below(&m->r, MP_NKEYS), true, &h, NULL)))
			return rc;
	uint64_t c = prev + 1, wseq = m->wseq + 1;
	unsigned n = (unsigned)tu_range(&m->r, 1, MP_MAXOPS);
	char line[400];
	int pos = 0;
	unsigned last_put = MP_NKEYS;
	for (unsigned i = 0; i < n; i++) {
		unsigned k = (unsigned)tu_below(&m->r, MP_NKEYS);
		char key[8];
		size_t klen = mp_key(key, k);
		if (tu_below(&m->r, 100) < 25) {
			rc = ms_txn_del(t, key, klen);
			if (rc && rc != MS_NOTFOUND)
				return mixed_fail("del %s = %d (%s): %s", key, rc, ms_strerror(rc), ms_last_error());
			pos += snprintf(line + pos, sizeof line - (size_t)pos, " d%u", k);
			if (last_put == k)
				last_put = MP_NKEYS;
			continue;
		}
		size_t len = mp_len(&m->r);
		struct mp_hdr nh = { MP_MAGIC, k, m->wid, (uint32_t)len, wseq, c };
		if (i % 2) {
			void *dst = NULL;
			rc = ms_txn_reserve(t, key, klen, len, &dst);
			if (rc == 0)
				mp_make(dst, len, &nh);
		} else {
			mp_make(m->buf, len, &nh);
			rc = ms_txn_put(t, key, klen, m->buf, len);
		}
		if (rc)
			return mixed_fail("put %s (%zu bytes) = %d (%s): %s", key, len, rc, ms_strerror(rc), ms_last_error());
		pos += snprintf(line + pos, sizeof line - (size_t)pos, " p%u:%zu", k, len);
		last_put = k;
	}
	/* The transaction sees its own put. */
	if (last_put < MP_NKEYS) {
		if ((rc = mp_read(t, c, last_put, false, &h, NULL)))
			return rc;
		if (h.clock != c || h.wid != m->wid || h.wseq != wseq)
			return mixed_fail("a write transaction does not see its own put of m%02u", last_put);
	}
	unsigned char cb[8];
	for (int i = 0; i < 8; i++)
		cb[i] = (unsigned char)(c >> (8 * i));
	if ((rc = ms_txn_put(t, MP_CLOCK, strlen(MP_CLOCK), cb, 8)))
		return mixed_fail("put clock = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	log_line("pre %llu %u %llu %llu %u%s\n", (unsigned long long)c, m->wid, (unsigned long long)wseq,
		 (unsigned long long)now_ns(), n, line);
	rc = ms_txn_commit(t);
	if (rc)
		return mixed_fail("commit of clock %llu = %d (%s): %s", (unsigned long long)c, rc, ms_strerror(rc),
				  ms_last_error());
	log_line("ack %llu %u %llu\n", (unsigned long long)c, m->wid, (unsigned long long)wseq);
	m->wseq = wseq;
	m->seen = c;
	return 0;
}

static int mixed_read(struct mixed *m, bool longer)
{
	ms_txn *t = NULL;
	int rc = ms_txn_begin(m->s, MS_READONLY, &t);
	if (rc)
		return mixed_fail("begin read = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	uint64_t snap;
	if ((rc = mp_clock(t, &snap)))
		return rc;
	if (snap < m->seen)
		return mixed_fail("a read transaction sees clock %llu after this process saw %llu",
				  (unsigned long long)snap, (unsigned long long)m->seen);
	if (longer) {
		samples_flush();
		log_line("R %llu\n", (unsigned long long)snap);
	}
	struct mp_hdr h, held = { 0 };
	ms_val hv = { NULL, 0 };
	unsigned n = (unsigned)tu_range(&m->r, 3, 10), held_key = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned k = (unsigned)tu_below(&m->r, MP_NKEYS);
		ms_val v;
		if ((rc = mp_read(t, snap, k, true, &h, &v)))
			return rc;
		if (h.clock && !hv.data) {
			hv = v;
			held = h;
			held_key = k;
		}
	}
	if (longer) {
		/* Hold the snapshot while the others commit (and maybe grow the file): the value's bytes
		 * must stay where they are, unchanged. */
		uint64_t us = tu_range(&m->r, 1000, 30000);
		struct timespec ts = { 0, (long)us * 1000 };
		while (!stop_flag && nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		struct mp_hdr again;
		if (hv.data && (mp_verify(hv.data, hv.len, held_key, &again) || memcmp(&again, &held, sizeof held)))
			return mixed_fail("snapshot %llu: the bytes of m%02u changed while the snapshot was held",
					  (unsigned long long)snap, held_key);
	}
	if (tu_below(&m->r, 100) < 10) {
		ms_iter *it = NULL;
		if ((rc = ms_iter_open(t, &it)))
			return mixed_fail("iter open = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
		ms_val k, v;
		unsigned count = 0;
		while ((rc = ms_iter_next(it, &k, &v)) == 0) {
			count++;
			if (k.len == 3 && ((const char *)k.data)[0] == 'm') {
				unsigned kk = (unsigned)(((const char *)k.data)[1] - '0') * 10 +
					      (unsigned)(((const char *)k.data)[2] - '0');
				const char *why = kk < MP_NKEYS ? mp_verify(v.data, v.len, kk, &h) : "key out of range";
				if (why || h.clock > snap)
					return mixed_fail("snapshot %llu: iterated key m%02u: %s", (unsigned long long)snap, kk,
							  why ? why : "newer than the snapshot");
			} else if (!(k.len == strlen(MP_CLOCK) && memcmp(k.data, MP_CLOCK, k.len) == 0)) {
				return mixed_fail("snapshot %llu: iteration shows an unknown key of %zu bytes",
						  (unsigned long long)snap, k.len);
			}
		}
		ms_iter_close(it);
		if (rc != MS_NOTFOUND || count > MP_NKEYS + 1)
			return mixed_fail("snapshot %llu: iteration ended with %d after %u objects: %s", (unsigned long long)snap,
					  rc, count, rc == MS_NOTFOUND ? "too many" : ms_last_error());
	}
	uint64_t again;
	if ((rc = mp_clock(t, &again)))
		return rc;
	if (again != snap)
		return mixed_fail("the clock changed from %llu to %llu inside one snapshot", (unsigned long long)snap,
				  (unsigned long long)again);
	ms_txn_abort(t);
	m->seen = snap;
	return 0;
}

static int do_mixed(const char *path, const char *log, uint64_t seed, uint32_t wid, double seconds, bool nosync)
{
	log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0)
		return 3;
	out_fd = log_fd;
	ms_options o = { .flags = nosync ? MS_NOSYNC : 0 };
	struct mixed m = { .r = { tu_seed3(seed, wid, 0x6d6978) }, .wid = wid };
	int rc = ms_open(path, &o, &m.s);
	if (rc)
		return mixed_fail("open = %d (%s): %s", rc, ms_strerror(rc), ms_last_error());
	log_line("start\n");
	m.buf = malloc(MP_MAXLEN);
	if (!m.buf)
		return mixed_fail("malloc");
	double end = tu_now() + seconds;
	while (!stop_flag && (seconds <= 0 || tu_now() < end)) {
		uint64_t c = tu_below(&m.r, 100);
		rc = c < 45 ? mixed_write(&m) : mixed_read(&m, c >= 90);
		if (rc)
			return rc;
	}
	samples_flush();
	rc = ms_close(m.s);
	if (rc)
		return mixed_fail("close = %d (%s)", rc, ms_strerror(rc));
	log_line("end\n");
	free(m.buf);
	return 0;
}

/* ---- serve: a process the test drives ------------------------------------------------------------ *
 * Reads one command a line from standard input and answers one line on standard output. Values are
 * tu_fill(LEN, SEED); reads are zero-copy and compared in place. Reads use the newest held read
 * transaction, else the open write transaction, else a read transaction of their own.
 *   open PATH [create] [readonly] [nosync]   close            quit (closes, exits 0)
 *   put KEY LEN SEED    del KEY              (inside the write transaction when one is open)
 *   wbegin  wcommit  wabort                  rbegin  rend     (read transactions stack up)
 *   check KEY LEN SEED  -> ok | absent | mismatch LEN | err CODE TEXT
 *   pin KEY LEN SEED    remember the zero-copy pointer (needs a held read transaction)
 *   repin               check every remembered pointer again -> ok N | bad I
 *   count               objects in the snapshot -> ok N
 *   stat                -> ok OBJECTS READERS TXN_ID FILE_BYTES USED_BYTES FREE_BYTES PINNED_BYTES
 *   readers             -> ok N PID:COMMIT:ALIVE:PINNED ...
 *   rcheck              ms_reader_check -> ok CLEARED
 *   incr KEY N          N write transactions, each adding 1 to the 8-byte counter KEY
 *   fill PREFIX COUNT LEN SEED        one transaction putting PREFIX0.. with seeds SEED+i
 *   fillcheck PREFIX COUNT LEN SEED   -> ok | bad I WHAT */

struct serve {
	ms_store *s;
	ms_txn *w;
	ms_txn *r[64];
	int nr;
	struct pin { const void *p; size_t len; uint64_t seed; } pins[256];
	int npins;
	unsigned char *buf;
	size_t cap;
};

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void reply_err(int rc)
{
	const char *d = ms_last_error();
	reply("err %d %s: %.*s", rc, ms_strerror(rc), (int)strcspn(d ? d : "", "\n"), d ? d : "");
}

static unsigned char *serve_buf(struct serve *sv, size_t len)
{
	if (len > sv->cap) {
		free(sv->buf);
		sv->cap = len;
		sv->buf = malloc(len ? len : 1);
		if (!sv->buf)
			sv->cap = 0;
	}
	return sv->buf;
}

/* The transaction reads go to; *own is set when it was begun for this read alone. */
static int serve_rtxn(struct serve *sv, ms_txn **t, bool *own)
{
	*own = false;
	if (sv->nr) {
		*t = sv->r[sv->nr - 1];
		return 0;
	}
	if (sv->w) {
		*t = sv->w;
		return 0;
	}
	*own = true;
	return ms_txn_begin(sv->s, MS_READONLY, t);
}

/* 0 when KEY holds tu_fill(len, seed) (the pointer in *v); 1 absent; 2 other bytes; <0 an error. */
static int serve_get(ms_txn *t, const char *key, size_t len, uint64_t seed, ms_val *v)
{
	int rc = ms_txn_get(t, key, strlen(key), v);
	if (rc == MS_NOTFOUND)
		return 1;
	if (rc)
		return rc;
	return v->len == len && tu_check_fill(v->data, len, seed) ? 0 : 2;
}

static int serve_readers_fn(void *ctx, const ms_reader_info *r)
{
	char *line = ctx;
	size_t n = strlen(line);
	if (n + 96 < 8192)
		snprintf(line + n, 8192 - n, " %llu:%llu:%d:%llu", (unsigned long long)r->pid,
			 (unsigned long long)r->txn_id, r->alive, (unsigned long long)r->pinned_bytes);
	return 0;
}

static void serve_one(struct serve *sv, int argc, char **argv)
{
	const char *cmd = argv[0];
	int rc;
	ms_txn *t;
	bool own;
	ms_val v;
#define NEED(n)                                                                                                \
	do {                                                                                                   \
		if (argc < (n) + 1) {                                                                         \
			reply("err %d %s needs %d arguments", MS_EINVAL, cmd, (n));                            \
			return;                                                                                \
		}                                                                                              \
	} while (0)
#define NEED_STORE()                                                                                           \
	do {                                                                                                   \
		if (!sv->s) {                                                                                  \
			reply("err %d no store is open", MS_EINVAL);                                           \
			return;                                                                                \
		}                                                                                              \
	} while (0)
	if (strcmp(cmd, "open") == 0) {
		NEED(1);
		ms_options o = { 0 };
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "create") == 0)
				o.flags |= MS_CREATE;
			else if (strcmp(argv[i], "readonly") == 0)
				o.flags |= MS_READONLY;
			else if (strcmp(argv[i], "nosync") == 0)
				o.flags |= MS_NOSYNC;
		}
		if (sv->s) {
			reply("err %d already open", MS_EINVAL);
			return;
		}
		rc = ms_open(argv[1], &o, &sv->s);
		if (rc)
			reply_err(rc);
		else
			reply("ok");
	} else if (strcmp(cmd, "close") == 0) {
		rc = ms_close(sv->s);
		sv->s = NULL;
		sv->w = NULL;
		sv->nr = 0;
		sv->npins = 0;
		if (rc)
			reply_err(rc);
		else
			reply("ok");
	} else if (strcmp(cmd, "put") == 0) {
		NEED(3);
		NEED_STORE();
		size_t len = (size_t)strtoull(argv[2], NULL, 0);
		unsigned char *b = serve_buf(sv, len);
		if (!b) {
			reply("err %d malloc", MS_ENOMEM);
			return;
		}
		tu_fill(b, len, strtoull(argv[3], NULL, 0));
		rc = sv->w ? ms_txn_put(sv->w, argv[1], strlen(argv[1]), b, len) : ms_put(sv->s, argv[1], strlen(argv[1]), b, len);
		if (rc)
			reply_err(rc);
		else
			reply("ok");
	} else if (strcmp(cmd, "del") == 0) {
		NEED(1);
		NEED_STORE();
		rc = sv->w ? ms_txn_del(sv->w, argv[1], strlen(argv[1])) : ms_del(sv->s, argv[1], strlen(argv[1]));
		if (rc)
			reply_err(rc);
		else
			reply("ok");
	} else if (strcmp(cmd, "wbegin") == 0) {
		NEED_STORE();
		rc = ms_txn_begin(sv->s, 0, &sv->w);
		if (rc) {
			sv->w = NULL;
			reply_err(rc);
		} else {
			reply("ok");
		}
	} else if (strcmp(cmd, "wcommit") == 0 || strcmp(cmd, "wabort") == 0) {
		if (!sv->w) {
			reply("err %d no write transaction", MS_EINVAL);
			return;
		}
		rc = 0;
		if (cmd[1] == 'c')
			rc = ms_txn_commit(sv->w);
		else
			ms_txn_abort(sv->w);
		sv->w = NULL;
		if (rc)
			reply_err(rc);
		else
			reply("ok");
	} else if (strcmp(cmd, "rbegin") == 0) {
		NEED_STORE();
		if (sv->nr == 64) {
			reply("err %d too many", MS_EINVAL);
			return;
		}
		rc = ms_txn_begin(sv->s, MS_READONLY, &sv->r[sv->nr]);
		if (rc) {
			reply_err(rc);
			return;
		}
		sv->nr++;
		reply("ok %d", sv->nr);
	} else if (strcmp(cmd, "rend") == 0) {
		if (!sv->nr) {
			reply("err %d no read transaction", MS_EINVAL);
			return;
		}
		ms_txn_abort(sv->r[--sv->nr]);
		sv->npins = 0; /* the pointers may belong to it */
		reply("ok");
	} else if (strcmp(cmd, "check") == 0 || strcmp(cmd, "pin") == 0) {
		NEED(3);
		NEED_STORE();
		size_t len = (size_t)strtoull(argv[2], NULL, 0);
		uint64_t seed = strtoull(argv[3], NULL, 0);
		if (cmd[0] == 'p' && (!sv->nr || sv->npins == 256)) {
			reply("err %d pin needs a held read transaction", MS_EINVAL);
			return;
		}
		if ((rc = serve_rtxn(sv, &t, &own))) {
			reply_err(rc);
			return;
		}
		rc = serve_get(t, argv[1], len, seed, &v);
		if (rc == 0 && cmd[0] == 'p')
			sv->pins[sv->npins++] = (struct pin){ v.data, v.len, seed };
		if (rc == 0)
			reply("ok");
		else if (rc == 1)
			reply("absent");
		else if (rc == 2)
			reply("mismatch %zu", v.len);
		else
			reply_err(rc);
		if (own)
			ms_txn_abort(t);
	} else if (strcmp(cmd, "repin") == 0) {
		for (int i = 0; i < sv->npins; i++) {
			if (!tu_check_fill(sv->pins[i].p, sv->pins[i].len, sv->pins[i].seed)) {
				reply("bad %d", i);
				return;
			}
		}
		reply("ok %d", sv->npins);
	} else if (strcmp(cmd, "count") == 0) {
		NEED_STORE();
		if ((rc = serve_rtxn(sv, &t, &own))) {
			reply_err(rc);
			return;
		}
		ms_iter *it = NULL;
		uint64_t n = 0;
		ms_val k;
		rc = ms_iter_open(t, &it);
		while (rc == 0 && (rc = ms_iter_next(it, &k, &v)) == 0)
			n++;
		ms_iter_close(it);
		if (rc == MS_NOTFOUND)
			reply("ok %llu", (unsigned long long)n);
		else
			reply_err(rc);
		if (own)
			ms_txn_abort(t);
	} else if (strcmp(cmd, "stat") == 0) {
		NEED_STORE();
		ms_stats st;
		if ((rc = ms_stat(sv->s, &st))) {
			reply_err(rc);
			return;
		}
		reply("ok %llu %llu %llu %llu %llu %llu %llu", (unsigned long long)st.objects,
		      (unsigned long long)st.readers, (unsigned long long)st.txn_id, (unsigned long long)st.file_bytes,
		      (unsigned long long)st.used_bytes, (unsigned long long)st.free_bytes,
		      (unsigned long long)st.pinned_bytes);
	} else if (strcmp(cmd, "readers") == 0) {
		NEED_STORE();
		static char line[8192];
		line[0] = 0;
		unsigned n = 0;
		if ((rc = ms_readers(sv->s, serve_readers_fn, line))) {
			reply_err(rc);
			return;
		}
		for (const char *p = line; (p = strchr(p, ' ')) != NULL; p++)
			n++;
		reply("ok %u%s", n, line);
	} else if (strcmp(cmd, "rcheck") == 0) {
		NEED_STORE();
		unsigned cleared = 0;
		if ((rc = ms_reader_check(sv->s, &cleared)))
			reply_err(rc);
		else
			reply("ok %u", cleared);
	} else if (strcmp(cmd, "incr") == 0) {
		NEED(2);
		NEED_STORE();
		unsigned long n = strtoul(argv[2], NULL, 0);
		for (unsigned long i = 0; i < n; i++) {
			if ((rc = ms_txn_begin(sv->s, 0, &t))) {
				reply_err(rc);
				return;
			}
			uint64_t c = 0;
			rc = ms_txn_get(t, argv[1], strlen(argv[1]), &v);
			if (rc == 0 && v.len == 8)
				memcpy(&c, v.data, 8);
			else if (rc != MS_NOTFOUND) {
				ms_txn_abort(t);
				if (rc == 0)
					reply("err %d counter has %zu bytes", MS_ECORRUPT, v.len);
				else
					reply_err(rc);
				return;
			}
			c++;
			if ((rc = ms_txn_put(t, argv[1], strlen(argv[1]), &c, 8))) {
				ms_txn_abort(t);
				reply_err(rc);
				return;
			}
			if ((rc = ms_txn_commit(t))) { /* ends t whatever the result */
				reply_err(rc);
				return;
			}
		}
		reply("ok");
	} else if (strcmp(cmd, "fill") == 0 || strcmp(cmd, "fillcheck") == 0) {
		NEED(4);
		NEED_STORE();
		unsigned long count = strtoul(argv[2], NULL, 0);
		size_t len = (size_t)strtoull(argv[3], NULL, 0);
		uint64_t seed = strtoull(argv[4], NULL, 0);
		char key[256];
		if (cmd[4] == 0) {
			unsigned char *b = serve_buf(sv, len);
			if (!b) {
				reply("err %d malloc", MS_ENOMEM);
				return;
			}
			if ((rc = ms_txn_begin(sv->s, 0, &t))) {
				reply_err(rc);
				return;
			}
			for (unsigned long i = 0; i < count; i++) {
				snprintf(key, sizeof key, "%s%lu", argv[1], i);
				tu_fill(b, len, seed + i);
				if ((rc = ms_txn_put(t, key, strlen(key), b, len))) {
					ms_txn_abort(t);
					reply_err(rc);
					return;
				}
			}
			if ((rc = ms_txn_commit(t)))
				reply_err(rc);
			else
				reply("ok");
			return;
		}
		if ((rc = serve_rtxn(sv, &t, &own))) {
			reply_err(rc);
			return;
		}
		unsigned long i = 0;
		for (; i < count; i++) {
			snprintf(key, sizeof key, "%s%lu", argv[1], i);
			rc = serve_get(t, key, len, seed + i, &v);
			if (rc)
				break;
		}
		if (i == count)
			reply("ok");
		else
			reply("bad %lu %s %d", i, rc == 1 ? "absent" : rc == 2 ? "mismatch" : "error", rc);
		if (own)
			ms_txn_abort(t);
	} else {
		reply("err %d unknown command %s", MS_EINVAL, cmd);
	}
#undef NEED
#undef NEED_STORE
}

static int do_serve(void)
{
	static struct serve sv;
	char line[4096];
	reply("hello %ld", (long)getpid());
	while (fgets(line, sizeof line, stdin)) {
		char *argv[16], *save = NULL;
		int argc = 0;
		for (char *w = strtok_r(line, " \t\r\n", &save); w && argc < 16; w = strtok_r(NULL, " \t\r\n", &save))
			argv[argc++] = w;
		if (argc == 0)
			continue;
		if (strcmp(argv[0], "quit") == 0)
			break;
		serve_one(&sv, argc, argv);
	}
	int rc = ms_close(sv.s);
	free(sv.buf);
	return rc ? 3 : 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 5 && strcmp(argv[1], "commit") == 0) {
		out_fd = atoi(argv[3]);
		return do_commit(argv[2], strtoull(argv[4], NULL, 0), argc > 5 && strcmp(argv[5], "nosync") == 0);
	}
	if (argc == 2 && strcmp(argv[1], "serve") == 0)
		return do_serve();
	if (argc >= 7 && strcmp(argv[1], "mixed") == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_term; /* no SA_RESTART: a writer waiting for the lock still waits */
		sigaction(SIGTERM, &sa, NULL);
		return do_mixed(argv[2], argv[3], strtoull(argv[4], NULL, 0), (uint32_t)strtoul(argv[5], NULL, 0),
				strtod(argv[6], NULL), argc > 7 && strcmp(argv[7], "nosync") == 0);
	}
	fprintf(stderr, "usage: ms_test_helper commit PATH FD SEED [nosync] | serve |\n"
			"       mixed PATH LOG SEED WID SECONDS [nosync]\n");
	return 2;
}
