/*
 * bench/storage.c — bench_storage: how fast sa_wal_append is compared with
 * RocksDB itself writing the same bytes, measured side by side in one run.
 *
 * For each durability policy (sync, group, none-unsafe) and group size
 * (1, 10, 100, 1000 ops per WAL group) it measures:
 *
 *   ours       sa_wal_append(store, ops, group) in a loop, in a fresh store.
 *   reference  a plain RocksDB database opened with kv.c's options and the
 *              same column families, written with ONE rocksdb_writebatch per
 *              group holding exactly the bytes our append writes:
 *                per op    wal CF    u64be seq          -> the WAL record
 *                                                         (2-byte header + op
 *                                                         encoding)
 *                          state CF  the op's state key -> its state row
 *                per group meta CF   0x00 "wal"         -> 40 counter bytes
 *              The records are encoded once, before timing (that encoding is
 *              the work we are measuring on our side).  check_same_bytes()
 *              proves at start-up, by reading a real store back, that the
 *              reference writes the same keys and values (bar the seq
 *              patched into a state row and the WAL group-end flag).
 *
 * Same sync setting on both sides: synced writes for sync and group,
 * unsynced for none-unsafe.  sync and none-unsafe are driven by one thread;
 * group by --threads writers on both sides (RocksDB coalesces concurrent
 * synced writers itself; our store does it in commit_group).
 *
 * Each cell runs --seconds per side, --reps times, alternating which side
 * goes first, each run in a fresh directory; the median of each side is
 * reported with ratio = ours / reference in ops (rows) per second.
 *
 * A benchmark, not a test: it exits 0 whatever the ratios (2 if it could
 * not run), unless --check asks for 1 when a row is below the target.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp */
#endif

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "sa/sa_buf.h"
#include "sa/sa_op.h"
#include "sa/sa_store.h"
#include "store_int.h" /* sa__state_key, SA_META_WAL, SA_WALREC_*, SA_ROW_VERSION */

#define BENCH_TARGET 0.9
#define BENCH_POOL 4096u /* distinct rows per writer thread */
#define BENCH_MAX_THREADS 64

static const size_t bench_groups[] = {1, 10, 100, 1000};
static const sa_durability bench_policies[] = {SA_DUR_SYNC, SA_DUR_GROUP, SA_DUR_NONE_UNSAFE};

/* Every option, with its default set in opts_init. */
typedef struct bench_opts {
    double seconds;   /* per side, per repetition, per cell */
    int reps;         /* interleaved repetitions; the median is reported */
    int threads;      /* writer threads under the group policy */
    const char *dir;  /* parent of our scratch directory */
    int quick;        /* smoke test: tiny cells, one repetition */
    int check;        /* exit 1 when a row is below BENCH_TARGET */
    int policy;       /* -1 = every policy, else the one sa_durability to run */
    size_t group;     /* 0 = every group size, else the one to run */
    long group_delay; /* our group_delay_us; -1 = the store's default */
} bench_opts;

static void opts_init(bench_opts *o)
{
    o->seconds = 1.0;
    o->reps = 3;
    o->threads = 4;
    o->dir = "/tmp";
    o->quick = 0;
    o->check = 0;
    o->policy = -1;
    o->group = 0;
    o->group_delay = -1;
}

/* Report why the benchmark cannot go on and exit 2 (scratch files of the
 * failed run are left for inspection). */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_storage: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---------------------------------------------------------------------
 * The ops, and the bytes the reference writes for each.
 * ------------------------------------------------------------------- */

#define OP_NCOLS 4

/* One op with the storage it points to.  The reference records of op i
 * are wal_val / skey / sval, offsets into the pool's byte buffer. */
typedef struct bop {
    sa_field key[1];
    sa_field cols[OP_NCOLS];
    char id[16], name[32], price[16], note[80];
    size_t wal_off, wal_len, skey_off, skey_len, sval_off, sval_len;
} bop;

typedef struct pool {
    bop *b;     /* n entries */
    sa_op *ops; /* n entries, borrowing from b */
    size_t n;
    sa_buf bytes; /* reference records */
} pool;

static void text_val(sa_field *f, const char *name, uint32_t oid, const char *s)
{
    f->name = name;
    f->val.kind = SA_VAL_TEXT;
    f->val.type_oid = oid;
    f->val.len = (uint32_t)strlen(s);
    f->val.data = s;
}

/* The state row our store writes for an insert with no key change:
 * version, seq (0 here: the store patches its WAL seq in), hlc, origin, key
 * fields, columns (store.c batch_wal_op). */
static int encode_ref(pool *p, bop *b, const sa_op *op, sa_err *err)
{
    sa_buf *out = &p->bytes;
    uint8_t hdr[2] = {SA_WALREC_VERSION, 0};
    b->wal_off = out->len;
    int rc = sa_buf_put(out, hdr, 2);
    if (rc == 0)
        rc = sa_op_encode(op, out, err);
    b->wal_len = out->len - b->wal_off;
    b->skey_off = out->len;
    if (rc == 0)
        rc = sa__state_key(out, op->table, op->key, op->nkey);
    b->skey_len = out->len - b->skey_off;
    b->sval_off = out->len;
    if (rc == 0)
        rc = sa_buf_put_u8(out, SA_ROW_VERSION);
    if (rc == 0)
        rc = sa_buf_put_u64be(out, 0);
    if (rc == 0)
        rc = sa_buf_put_u64be(out, op->hlc);
    if (rc == 0)
        rc = sa_buf_put_str(out, op->origin);
    if (rc == 0)
        rc = sa_fields_encode(op->key, op->nkey, out, err);
    if (rc == 0)
        rc = sa_fields_encode(op->cols, op->ncols, out, err);
    b->sval_len = out->len - b->sval_off;
    return rc;
}

/* n INSERTs into public.items with row ids first_id.. (keep them six digits
 * so every op has the same size), as logical decoding would hand them to
 * us.  Release with pool_free, also after an error. */
static int pool_build(pool *p, size_t n, unsigned first_id, sa_err *err)
{
    memset(p, 0, sizeof *p);
    p->b = calloc(n, sizeof *p->b);
    p->ops = calloc(n, sizeof *p->ops);
    if (p->b == NULL || p->ops == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory building %zu ops", n);
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        bop *b = &p->b[i];
        unsigned id = first_id + (unsigned)i;
        snprintf(b->id, sizeof b->id, "%u", id);
        snprintf(b->name, sizeof b->name, "item %06u standard", id % 1000000u);
        snprintf(b->price, sizeof b->price, "%u.%02u", 10u + id % 990u, id % 100u);
        snprintf(b->note, sizeof b->note,
                 "restocked from warehouse %02u, lot %06u; handle with ordinary care", id % 97u,
                 id);
        text_val(&b->key[0], "id", SA_OID_INT4, b->id);
        text_val(&b->cols[0], "id", SA_OID_INT4, b->id);
        text_val(&b->cols[1], "name", SA_OID_TEXT, b->name);
        text_val(&b->cols[2], "price", SA_OID_NUMERIC, b->price);
        text_val(&b->cols[3], "note", SA_OID_TEXT, b->note);
        sa_op *op = &p->ops[i];
        op->origin = "pg";
        op->hlc = ((uint64_t)1700000000000u << 16) + i; /* fixed width: u64be */
        op->kind = SA_OP_INSERT;
        op->flags = SA_OP_HAS_PG;
        op->table = "public.items";
        op->key = b->key;
        op->nkey = 1;
        op->cols = b->cols;
        op->ncols = OP_NCOLS;
        op->pg_lsn = 0x16B3748u + i * 256u;
        op->pg_xid = 7000u + (uint32_t)i;
        op->pg_commit_time = 754000000000000 + (int64_t)i;
        int rc = encode_ref(p, b, op, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void pool_free(pool *p)
{
    free(p->b);
    free(p->ops);
    sa_buf_free(&p->bytes);
}

/* ---------------------------------------------------------------------
 * The reference database: kv.c's options and column families.
 * ------------------------------------------------------------------- */

enum {
    REF_CF_DEFAULT,
    REF_CF_WAL,
    REF_CF_STATE,
    REF_CF_CURSORS,
    REF_CF_INBOX,
    REF_CF_META,
    REF_NCF
};

typedef struct refdb {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wo;
    rocksdb_column_family_handle_t *cf[REF_NCF];
} refdb;

static int ref_open(refdb *r, const char *dir, int sync, char **errstr)
{
    static const char *const names[REF_NCF] = {"default", "wal",   "state",
                                               "cursors", "inbox", "meta"};
    const rocksdb_options_t *cfo[REF_NCF];
    memset(r, 0, sizeof *r);
    r->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(r->opts, 1);
    rocksdb_options_set_create_missing_column_families(r->opts, 1);
    rocksdb_options_set_wal_recovery_mode(r->opts, 2 /* kPointInTimeRecovery */);
    rocksdb_options_increase_parallelism(r->opts, 2);
    rocksdb_options_set_max_background_jobs(r->opts, 2);
    rocksdb_options_set_write_buffer_size(r->opts, 16u << 20); /* as kv.c */
    rocksdb_options_set_db_write_buffer_size(r->opts, 64u << 20);
    rocksdb_options_set_max_write_buffer_number(r->opts, 2);
    for (int c = 0; c < REF_NCF; c++)
        cfo[c] = r->opts;
    r->db = rocksdb_open_column_families(r->opts, dir, REF_NCF, names, cfo, r->cf, errstr);
    if (*errstr != NULL) {
        rocksdb_options_destroy(r->opts);
        return -1;
    }
    r->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo, sync);
    return 0;
}

static void ref_close(refdb *r)
{
    for (int c = 0; c < REF_NCF; c++)
        rocksdb_column_family_handle_destroy(r->cf[c]);
    rocksdb_close(r->db);
    rocksdb_writeoptions_destroy(r->wo);
    rocksdb_options_destroy(r->opts);
}

/* ---------------------------------------------------------------------
 * One timed run of one side.
 * ------------------------------------------------------------------- */

enum side { SIDE_OURS, SIDE_REF };

typedef struct run {
    enum side side;
    size_t group;
    double deadline;
    pthread_barrier_t start;
    sa_store *store;
    refdb ref;
    atomic_uint_fast64_t next_seq; /* reference WAL keys */
    atomic_int failed;
    char errmsg[SA_ERR_MSG_MAX];
} run;

typedef struct worker {
    run *r;
    const pool *p; /* this thread's rows */
    uint64_t groups;
    double end;
} worker;

static void run_fail(run *r, const char *msg)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&r->failed, &expected, 1))
        snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
}

/* Start of the next group in the pool: consecutive slices, wrapping. */
static size_t next_start(size_t *pos, size_t group, size_t n)
{
    if (*pos + group > n)
        *pos = 0;
    size_t s = *pos;
    *pos += group;
    return s;
}

static void ours_loop(worker *w)
{
    run *r = w->r;
    size_t pos = 0;
    uint64_t hlc = ((uint64_t)1800000000000u << 16);
    sa_err err;
    while (!atomic_load(&r->failed) && bench_now_s() < r->deadline) {
        sa_op *ops = &w->p->ops[next_start(&pos, r->group, w->p->n)];
        for (size_t i = 0; i < r->group; i++)
            ops[i].hlc = hlc++; /* increasing, same width as the reference's */
        if (sa_wal_append(r->store, ops, r->group, NULL, &err) != 0) {
            run_fail(r, err.msg);
            break;
        }
        w->groups++;
    }
}

static void ref_loop(worker *w)
{
    run *r = w->r;
    const uint8_t *bytes = w->p->bytes.data;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    size_t pos = 0;
    while (!atomic_load(&r->failed) && bench_now_s() < r->deadline) {
        const bop *b = &w->p->b[next_start(&pos, r->group, w->p->n)];
        uint64_t seq = atomic_fetch_add(&r->next_seq, r->group);
        rocksdb_writebatch_clear(wb);
        for (size_t i = 0; i < r->group; i++) {
            uint8_t k[8];
            sa_put_u64be(k, seq + i);
            rocksdb_writebatch_put_cf(wb, r->ref.cf[REF_CF_WAL], (const char *)k, 8,
                                      (const char *)bytes + b[i].wal_off, b[i].wal_len);
            rocksdb_writebatch_put_cf(wb, r->ref.cf[REF_CF_STATE],
                                      (const char *)bytes + b[i].skey_off, b[i].skey_len,
                                      (const char *)bytes + b[i].sval_off, b[i].sval_len);
        }
        uint8_t cnt[SA_WAL_COUNTERS_LEN];
        sa__wal_counters_encode(cnt, 1, seq + r->group - 1, seq + r->group - 1, 0,
                                seq + r->group - 1);
        rocksdb_writebatch_put_cf(wb, r->ref.cf[REF_CF_META], SA_META_WAL, sizeof SA_META_WAL - 1,
                                  (const char *)cnt, sizeof cnt);
        char *errstr = NULL;
        rocksdb_write(r->ref.db, r->ref.wo, wb, &errstr);
        if (errstr != NULL) {
            run_fail(r, errstr);
            rocksdb_free(errstr);
            break;
        }
        w->groups++;
    }
    rocksdb_writebatch_destroy(wb);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(&w->r->start);
    if (w->r->side == SIDE_OURS)
        ours_loop(w);
    else
        ref_loop(w);
    w->end = bench_now_s();
    return NULL;
}

/* Run one side of one cell in a fresh directory; ops/s.  Exits on error. */
static double run_side(enum side side, sa_durability pol, size_t group, int nthreads,
                       const bench_opts *o, pool *pools, const char *dir)
{
    run *r = calloc(1, sizeof *r);
    worker w[BENCH_MAX_THREADS];
    pthread_t th[BENCH_MAX_THREADS];
    if (r == NULL)
        die("out of memory");
    r->side = side;
    r->group = group;
    atomic_init(&r->next_seq, 1);
    atomic_init(&r->failed, 0);
    if (side == SIDE_OURS) {
        sa_store_options so;
        sa_store_options_init(&so);
        so.durability = pol;
        if (o->group_delay >= 0)
            so.group_delay_us = (uint32_t)o->group_delay;
        sa_err err;
        if (sa_store_open(dir, &so, &r->store, &err) != 0)
            die("cannot open a store: %s", err.msg);
    } else {
        char *errstr = NULL;
        if (ref_open(&r->ref, dir, pol != SA_DUR_NONE_UNSAFE, &errstr) != 0)
            die("cannot open the reference database: %s", errstr);
    }
    pthread_barrier_init(&r->start, NULL, (unsigned)nthreads + 1);
    for (int t = 0; t < nthreads; t++) {
        w[t] = (worker){.r = r, .p = &pools[t]};
        if (pthread_create(&th[t], NULL, worker_main, &w[t]) != 0)
            die("cannot start a writer thread");
    }
    double t0 = bench_now_s();
    r->deadline = t0 + o->seconds;
    pthread_barrier_wait(&r->start);
    double end = t0;
    uint64_t groups = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        groups += w[t].groups;
        if (w[t].end > end)
            end = w[t].end;
    }
    pthread_barrier_destroy(&r->start);
    if (atomic_load(&r->failed))
        die("%s write failed: %s", side == SIDE_OURS ? "our" : "reference", r->errmsg);
    if (side == SIDE_OURS)
        sa_store_close(r->store);
    else
        ref_close(&r->ref);
    free(r);
    bench_rm_tree(dir);
    return end > t0 ? (double)(groups * group) / (end - t0) : 0.0;
}

/* ---------------------------------------------------------------------
 * Proof that the reference writes our bytes.
 * ------------------------------------------------------------------- */

static const bop *find_state_key(const pool *p, size_t n, const char *k, size_t kl)
{
    for (size_t i = 0; i < n; i++)
        if (p->b[i].skey_len == kl && memcmp(p->bytes.data + p->b[i].skey_off, k, kl) == 0)
            return &p->b[i];
    return NULL;
}

/* Append one group of n ops through the store, then read the database back
 * raw and compare every record with the reference's.  Returns the bytes per
 * op (keys + values); exits if anything differs. */
static double check_same_bytes(pool *p, size_t n, const char *dir)
{
    sa_store_options so;
    sa_store_options_init(&so);
    so.durability = SA_DUR_NONE_UNSAFE;
    sa_store *s = NULL;
    sa_err err;
    sa_wal_info wi;
    if (sa_store_open(dir, &so, &s, &err) != 0 || sa_wal_append(s, p->ops, n, NULL, &err) != 0 ||
        sa_wal_info_get(s, &wi, &err) != 0)
        die("self-check: %s", err.msg);
    sa_store_close(s);

    uint64_t want_wal = 0, want_state = 0;
    for (size_t i = 0; i < n; i++) {
        want_wal += 8 + p->b[i].wal_len;
        want_state += p->b[i].skey_len + p->b[i].sval_len;
    }
    if (wi.count != n || wi.bytes != want_wal)
        die("self-check: the store wrote %llu WAL records of %llu bytes, the reference %zu of "
            "%llu",
            (unsigned long long)wi.count, (unsigned long long)wi.bytes, n,
            (unsigned long long)want_wal);

    refdb r;
    char *errstr = NULL;
    if (ref_open(&r, dir, 0, &errstr) != 0)
        die("self-check: cannot reopen the store raw: %s", errstr);
    const uint8_t *bytes = p->bytes.data;
    uint64_t got_wal = 0, got_state = 0, nstate = 0, nwal = 0;
    const char *bad = NULL;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r.db, ro, r.cf[REF_CF_WAL]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it), nwal++) {
        size_t kl, vl;
        rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        const bop *b = nwal < n ? &p->b[nwal] : NULL;
        got_wal += kl + vl;
        /* byte 1 holds the group-end flag; the rest must be identical */
        if (b == NULL || kl != 8 || vl != b->wal_len || v[0] != (char)bytes[b->wal_off] ||
            memcmp(v + 2, bytes + b->wal_off + 2, vl - 2) != 0)
            bad = "a WAL record";
    }
    rocksdb_iter_destroy(it);
    it = rocksdb_create_iterator_cf(r.db, ro, r.cf[REF_CF_STATE]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it), nstate++) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        const bop *b = find_state_key(p, n, k, kl);
        got_state += kl + vl;
        /* bytes 1..8 hold the row's seq, patched in at commit */
        if (b == NULL || vl != b->sval_len || v[0] != (char)bytes[b->sval_off] ||
            memcmp(v + 9, bytes + b->sval_off + 9, vl - 9) != 0)
            bad = "a state row";
    }
    rocksdb_iter_destroy(it);
    size_t ml = 0;
    char *meta = rocksdb_get_cf(r.db, ro, r.cf[REF_CF_META], SA_META_WAL, sizeof SA_META_WAL - 1,
                                &ml, &errstr);
    if (meta == NULL || ml != SA_WAL_COUNTERS_LEN)
        bad = "the WAL counters";
    rocksdb_free(meta);
    rocksdb_free(errstr);
    rocksdb_readoptions_destroy(ro);
    ref_close(&r);
    bench_rm_tree(dir);
    if (bad == NULL && (nwal != n || nstate != n || got_wal != want_wal || got_state != want_state))
        bad = "the record counts";
    if (bad != NULL)
        die("self-check: %s written by the store differs from the reference's", bad);
    return (double)(want_wal + want_state) / (double)n;
}

/* ---------------------------------------------------------------------
 * Driver.
 * ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_storage [--seconds N] [--reps N] [--threads N] [--dir DIR]\n"
            "                     [--policy P] [--group N] [--group-delay-us N] [--quick]\n"
            "                     [--check]\n"
            "  --seconds N  time per side, per repetition, per cell (default 1.0)\n"
            "  --reps N     interleaved repetitions; the median is reported (default 3)\n"
            "  --threads N  writer threads under the group policy, both sides (default 4)\n"
            "  --dir DIR    where the scratch directory is made (default /tmp); removed at the "
            "end\n"
            "  --policy P   run only policy P (sync, group, none-unsafe)\n"
            "  --group N    run only groups of N ops (1..%u)\n"
            "  --group-delay-us N  our store's group_delay_us (default: the store's own)\n"
            "  --quick      smoke run: 0.05 s cells, one repetition\n"
            "  --check      exit 1 if any ratio is below %.2f (for people, not CI)\n",
            BENCH_POOL, BENCH_TARGET);
}

static double num_arg(const char *opt, const char *v, double lo, double hi)
{
    double d;
    if (bench_num(v, lo, hi, &d) != 0)
        die("option %s needs a number in range, got \"%s\"", opt, v != NULL ? v : "");
    return d;
}

static void parse_args(int argc, char **argv, bench_opts *o)
{
    /* options taking a value first */
    static const char *const names[] = {"--seconds", "--reps",  "--threads",        "--dir",
                                        "--policy",  "--group", "--group-delay-us", "--quick",
                                        "--check"};
    enum { NOPTS = sizeof names / sizeof names[0], NVALUED = 7 };
    int seen[NOPTS] = {0};
    opts_init(o);
    for (int i = 1; i < argc; i++) {
        const char *v;
        char why[160];
        int k = bench_opt(argc, argv, &i, names, NOPTS, NVALUED, seen, &v, why, sizeof why);
        if (k == BENCH_OPT_HELP) {
            usage(stdout);
            exit(0);
        }
        if (k == BENCH_OPT_BAD) {
            usage(stderr);
            die("%s", why);
        }
        switch (k) {
        case 0:
            o->seconds = num_arg(names[k], v, 0.001, 3600);
            break;
        case 1:
            o->reps = (int)num_arg(names[k], v, 1, 99);
            break;
        case 2:
            o->threads = (int)num_arg(names[k], v, 1, BENCH_MAX_THREADS);
            break;
        case 3:
            o->dir = v;
            break;
        case 4: {
            sa_durability d;
            sa_err err;
            if (sa_durability_parse(v, &d, &err) != 0)
                die("option --policy: %s", err.msg);
            o->policy = (int)d;
            break;
        }
        case 5:
            o->group = (size_t)num_arg(names[k], v, 1, BENCH_POOL);
            break;
        case 6:
            o->group_delay = (long)num_arg(names[k], v, 0, 1e6);
            break;
        case 7:
            o->quick = 1;
            break;
        default:
            o->check = 1;
        }
    }
    if (o->quick) {
        if (!seen[0])
            o->seconds = 0.05;
        if (!seen[1])
            o->reps = 1;
    }
}

int main(int argc, char **argv)
{
    bench_opts o;
    parse_args(argc, argv, &o);
    double t_start = bench_now_s();

    char base[4096], path[4200];
    if (snprintf(base, sizeof base, "%s/sa-bench-storage-XXXXXX", o.dir) >= (int)sizeof base ||
        mkdtemp(base) == NULL)
        die("cannot make a scratch directory under \"%s\": %s", o.dir, strerror(errno));

    /* one pool of distinct rows per writer thread */
    pool pools[BENCH_MAX_THREADS];
    sa_err err;
    for (int t = 0; t < o.threads; t++) {
        if (pool_build(&pools[t], BENCH_POOL, 100000u + (unsigned)t * BENCH_POOL, &err) != 0)
            die("building ops: %s", err.msg);
    }
    snprintf(path, sizeof path, "%s/check", base);
    double per_op = check_same_bytes(&pools[0], 10, path);

    printf("# bench_storage: sa_wal_append vs. plain RocksDB writing the same bytes\n");
    printf("# %.2f s per side per cell, median of %d interleaved run(s); group policy: %d "
           "writer threads on both sides\n",
           o.seconds, o.reps, o.threads);
    if (o.group_delay >= 0)
        printf("# our group_delay_us set to %ld\n", o.group_delay);
    printf("# per op: %.0f bytes (WAL record + state row, keys included) + 36 bytes of WAL "
           "counters per group; verified against a store\n\n",
           per_op);
    printf("| policy | group | ours ops/s | rocksdb ops/s | ratio |\n");
    printf("|---|---:|---:|---:|---:|\n");
    fflush(stdout);

    double min_ratio = 1e9;
    const char *min_pol = "";
    size_t min_group = 0;
    int cell = 0;
    for (size_t pi = 0; pi < sizeof bench_policies / sizeof bench_policies[0]; pi++) {
        sa_durability pol = bench_policies[pi];
        if (o.policy >= 0 && (int)pol != o.policy)
            continue;
        int nthreads = pol == SA_DUR_GROUP ? o.threads : 1;
        size_t ngroups = o.group ? 1 : sizeof bench_groups / sizeof bench_groups[0];
        for (size_t gi = 0; gi < ngroups; gi++) {
            size_t group = o.group ? o.group : bench_groups[gi];
            double ours[99], ref[99];
            for (int rep = 0; rep < o.reps; rep++, cell++) {
                /* alternate which side goes first so drift hurts both alike */
                for (int k = 0; k < 2; k++) {
                    enum side sd = (k ^ (cell & 1)) ? SIDE_REF : SIDE_OURS;
                    snprintf(path, sizeof path, "%s/run-%d-%s", base, cell,
                             sd == SIDE_OURS ? "ours" : "ref");
                    double v = run_side(sd, pol, group, nthreads, &o, pools, path);
                    if (sd == SIDE_OURS)
                        ours[rep] = v;
                    else
                        ref[rep] = v;
                }
            }
            double mo = bench_median(ours, o.reps), mr = bench_median(ref, o.reps);
            double ratio = mr > 0 ? mo / mr : 0;
            printf("| %s | %zu | %.0f | %.0f | %.2f |\n", sa_durability_name(pol), group, mo, mr,
                   ratio);
            fflush(stdout);
            if (ratio < min_ratio) {
                min_ratio = ratio;
                min_pol = sa_durability_name(pol);
                min_group = group;
            }
        }
    }
    for (int t = 0; t < o.threads; t++)
        pool_free(&pools[t]);
    bench_rm_tree(base);

    int below = min_ratio < BENCH_TARGET;
    printf("\nminimum ratio %.2f (%s, group %zu): %s the %.2f target; %.1f s total\n", min_ratio,
           min_pol, min_group, below ? "BELOW" : "meets", BENCH_TARGET, bench_now_s() - t_start);
    return o.check && below ? 1 : 0;
}
