/*
 * test_ingest_faults.c — sa-bridge ingest under faults, against a real
 * PostgreSQL 15 from the harness, with sa-bridge run as a real process:
 *
 *   1. SIGKILL the bridge at random moments (SA_INGEST_KILLS, default 50)
 *      under a continuous mixed write load (transactions of 1..1000 rows,
 *      inserts, updates, deletes, some rolled back), sampling the slot's
 *      confirmed_flush_lsn against the bridge's durable position all along;
 *      then check the WAL: each committed change exactly once, commit order,
 *      no partial transaction, state equals the tables.
 *   2. PostgreSQL stopped with -m immediate mid-stream and started again: the
 *      bridge reconnects by itself, nothing lost, nothing doubled.
 *   3. One 2,000,000-row streamed transaction (SA_INGEST_BIG_ROWS), a
 *      300,000-row one rolled back (concurrently, so streams interleave), and
 *      one whose savepoint is rolled back: one WAL group for the big one,
 *      nothing of the aborted ones, bridge peak RSS < 150 MB.
 *
 * Every test has its own cluster and data directory and cleans up; on
 * failure the tail of the bridge's log is printed.  SA_INGEST_ONLY=<glob>
 * runs a subset (cmocka test filter), SA_INGEST_SEED fixes the random seed.
 *
 * The writer's identity scheme (tests 1, 2): every row a transaction writes
 * to public.t carries that transaction's number in column txn, and the
 * transaction inserts exactly one row into public.audit (txn, nins, nupd,
 * ndel) holding how many rows it inserted, updated and deleted (measured
 * with PQcmdTuples).  The audit table is synced too, so each WAL group must
 * hold exactly one audit insert and exactly those counts of ops on t.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>

#include "ingest_util.h"
#include "sa/sa_op.h"

#define SLOT "softadastra"
#define MB (1024L)

/* ------------------------------------------------------------------------
 * Fixture
 * ---------------------------------------------------------------------- */

typedef struct fx {
    sa_pgh *h;
    char data[1024];
    it_bridge b;
    PGconn *c;
    pid_t writer;
    int ok; /* set at the end of a passing test: no log dump */
} fx;

static unsigned g_seed;

static int env_int(const char *name, int dflt)
{
    const char *s = getenv(name);
    return s != NULL && s[0] != '\0' ? atoi(s) : dflt;
}

static int setup_fx(void **state)
{
    fx *f = calloc(1, sizeof *f);
    sa_err err = {0};
    if (f == NULL)
        return -1;
    if (sa_pgh_start(NULL, &f->h, &err) != 0) {
        fprintf(stderr, "harness: %s\n", err.msg);
        free(f);
        return -1;
    }
    it_data_dir(f->data, sizeof f->data, "faults");
    f->c = PQconnectdb(sa_pgh_conninfo(f->h));
    if (PQstatus(f->c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(f->c));
        PQfinish(f->c);
        sa_pgh_stop(f->h);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown_fx(void **state)
{
    fx *f = *state;
    if (f == NULL)
        return 0;
    if (f->writer > 0) {
        kill(f->writer, SIGKILL);
        waitpid(f->writer, NULL, 0);
    }
    if (f->b.pid > 0)
        it_bridge_stop(&f->b, SIGKILL);
    if (!f->ok && f->b.log[0] != '\0') {
        fprintf(stderr, "---- bridge log (%s), last lines ----\n", f->b.log);
        it_bridge_dump_log(&f->b, 80);
        fprintf(stderr, "---- end of bridge log ----\n");
    }
    PQfinish(f->c);
    it_rmrf(f->data);
    if (f->b.log[0] != '\0')
        unlink(f->b.log);
    sa_pgh_stop(f->h);
    free(f);
    return 0;
}

static void cmd_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        PQclear(r);
        fail_msg("%.200s: %s", sql, msg);
    }
    PQclear(r);
}

static long long query_ll(PGconn *c, const char *sql)
{
    char *s = it_query1(c, sql);
    long long v = s != NULL ? atoll(s) : -1;
    free(s);
    return v;
}

/* Make sure the fixture's own connection works (after a server restart). */
static void reconnect_ok(fx *f)
{
    if (PQstatus(f->c) == CONNECTION_OK) {
        PGresult *r = PQexec(f->c, "SELECT 1");
        int good = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (good)
            return;
    }
    for (int64_t end = it_now_ms() + 60000; it_now_ms() < end; it_sleep_ms(200)) {
        PQreset(f->c);
        if (PQstatus(f->c) == CONNECTION_OK)
            return;
    }
    fail_msg("cannot reconnect: %s", PQerrorMessage(f->c));
}

static void start_bridge(fx *f, const char *tables, const char *const *extra)
{
    if (it_bridge_start(&f->b, sa_pgh_conninfo(f->h), f->data, tables, extra) != 0)
        fail_msg("cannot start %s", it_bridge_bin());
}

static void bridge_alive(fx *f, const char *when)
{
    int status = 0;
    if (it_bridge_exited(&f->b, &status))
        fail_msg("the bridge exited %s (status %d%s%d)", when,
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                 WIFEXITED(status) ? ", exit " : ", signal ",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Stop the bridge with SIGTERM and check that it stopped cleanly. */
static void stop_bridge_clean(fx *f)
{
    bridge_alive(f, "before its stop");
    int status = it_bridge_stop(&f->b, SIGTERM);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the bridge did not stop cleanly on SIGTERM (wait status 0x%x)", status);
}

/* ------------------------------------------------------------------------
 * Invariant sampling: slot confirmed_flush_lsn <= bridge's durable position
 * ---------------------------------------------------------------------- */

typedef struct inv {
    long samples, skipped, violations;
    uint64_t max_slot, last_durable;
    char first[256];
} inv;

/*
 * Slot first, durable after: durable only grows, so a correct bridge always
 * has slot_confirmed <= durable_after.
 *
 * The bridge is frozen (SIGSTOP) for the sample: RocksDB's read-only open
 * beside a writer that is flushing or recovering (every restart flushes the
 * recovered log and deletes it) can miss the newest data — even every meta
 * key — so an unfrozen read may report a durable position that is too old.
 * A stopped process leaves its files in a crash-consistent state, which is
 * exactly what a read-only open recovers.  Freezing cannot hide a violation:
 * whatever the bridge confirmed before the freeze it had already sent, and
 * the slot may only advance further after the slot sample.
 */
static void sample_invariant(fx *f, inv *s)
{
    int frozen = 0;
    if (f->b.pid > 0) {
        int st = 0;
        kill(f->b.pid, SIGSTOP);
        pid_t r = waitpid(f->b.pid, &st, WUNTRACED);
        if (r != f->b.pid || !WIFSTOPPED(st)) {
            f->b.pid = 0;
            fail_msg("the bridge exited on its own (wait status 0x%x)", st);
        }
        frozen = 1;
    }
    uint64_t slot = it_lsn_query(
        f->c, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" SLOT "'");
    uint64_t durable = 0;
    int rd = it_durable_lsn(f->data, &durable);
    if (frozen)
        kill(f->b.pid, SIGCONT);
    if (slot == 0 || rd != 0) {
        s->skipped++;
        return;
    }
    s->samples++;
    s->last_durable = durable;
    if (slot > s->max_slot)
        s->max_slot = slot;
    if (slot > durable) {
        if (s->violations++ == 0) {
            char a[REPL_LSN_STRLEN], b[REPL_LSN_STRLEN];
            snprintf(s->first, sizeof s->first,
                     "slot confirmed_flush_lsn %s > bridge durable max(end_lsn, confirmed_lsn) %s",
                     repl_lsn_format(slot, a), repl_lsn_format(durable, b));
        }
    }
}

static void check_invariant(const inv *s)
{
    fprintf(stderr, "  invariant: %ld samples (%ld skipped), %ld violations\n", s->samples,
            s->skipped, s->violations);
    if (s->violations > 0)
        fail_msg("the slot was confirmed past the bridge's durable position %ld time(s); first: %s",
                 s->violations, s->first);
    if (s->samples < 10)
        fail_msg("only %ld invariant samples were taken", s->samples);
}

/* ------------------------------------------------------------------------
 * The writer: a child process with its own connection
 * ---------------------------------------------------------------------- */

typedef struct writer_opts {
    const char *conninfo;
    int max_rows;    /* largest transaction (rows inserted) */
    int resilient;   /* reconnect on errors (server restarts) instead of dying */
    int pause_us;    /* max pause between transactions */
    unsigned seed;
} writer_opts;

static volatile sig_atomic_t g_writer_stop;

static void writer_on_signal(int sig)
{
    (void)sig;
    g_writer_stop = 1;
}

#define W_TABLES "public.t,public.audit"
#define W_SCHEMA                                                                                   \
    "CREATE TABLE t (id bigserial PRIMARY KEY, txn int NOT NULL, k int, v text);"                  \
    "CREATE TABLE audit (txn int PRIMARY KEY, nins int NOT NULL, nupd int NOT NULL, "              \
    "ndel int NOT NULL);"

typedef struct idvec {
    long long *v;
    size_t n, cap;
} idvec;

static void idvec_push(idvec *a, long long id)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (a->v == NULL)
            _exit(3);
    }
    a->v[a->n++] = id;
}

/* Take k random ids out of a (swap-remove) into out. */
static void idvec_take(idvec *a, size_t k, idvec *out, unsigned *seed)
{
    for (size_t i = 0; i < k && a->n > 0; i++) {
        size_t j = (size_t)rand_r(seed) % a->n;
        idvec_push(out, a->v[j]);
        a->v[j] = a->v[--a->n];
    }
}

/* "{1,2,3}" */
static char *idvec_array(const idvec *a)
{
    char *s = malloc(a->n * 21 + 3), *p = s;
    *p++ = '{';
    for (size_t i = 0; i < a->n; i++)
        p += sprintf(p, "%s%lld", i ? "," : "", a->v[i]);
    *p++ = '}';
    *p = '\0';
    return s;
}

static PGconn *writer_connect(const writer_opts *o)
{
    for (;;) {
        PGconn *c = PQconnectdb(o->conninfo);
        if (PQstatus(c) == CONNECTION_OK)
            return c;
        PQfinish(c);
        if (!o->resilient || g_writer_stop)
            return NULL;
        it_sleep_ms(100);
    }
}

/* PQexecParams; on error returns NULL (result cleared). */
static PGresult *wq(PGconn *c, const char *sql, int n, const char *const *p)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        PQclear(r);
        return NULL;
    }
    return r;
}

static int writer_size(const writer_opts *o, unsigned *seed)
{
    int r = rand_r(seed) % 100;
    int n;
    if (r < 70)
        n = 1 + rand_r(seed) % 5;
    else if (r < 92)
        n = 6 + rand_r(seed) % 95;
    else
        n = 101 + rand_r(seed) % 900;
    return n > o->max_rows ? o->max_rows : n;
}

/* Runs in the child; never returns. */
static void writer_main(const writer_opts *o)
{
    signal(SIGUSR1, writer_on_signal);
    signal(SIGTERM, writer_on_signal);
    unsigned seed = o->seed;
    idvec live = {0};
    long committed = 0, rolled_back = 0, failed = 0;
    PGconn *c = writer_connect(o);
    if (c == NULL)
        _exit(2);
    for (int txn = 1; !g_writer_stop; txn++) {
        int nins = writer_size(o, &seed);
        int rollback = rand_r(&seed) % 100 < 3;
        idvec del = {0}, upd = {0};
        if (live.n > 100 && rand_r(&seed) % 100 < 25)
            idvec_take(&live, 1 + (size_t)rand_r(&seed) % 8, &del, &seed);
        if (live.n > 100 && rand_r(&seed) % 100 < 35)
            idvec_take(&live, 1 + (size_t)rand_r(&seed) % 20, &upd, &seed);
        char stxn[16], sn[16], sins[16], supd[16], sdel[16];
        snprintf(stxn, sizeof stxn, "%d", txn);
        snprintf(sn, sizeof sn, "%d", nins);
        char *adel = idvec_array(&del), *aupd = idvec_array(&upd);
        const char *p2[2] = {stxn, sn};
        const char *pu[2] = {stxn, aupd};
        const char *pd[1] = {adel};
        PGresult *r = NULL, *ri = NULL;
        int ok = (r = wq(c, "BEGIN", 0, NULL)) != NULL;
        PQclear(r);
        long ndel = 0, nupd = 0;
        if (ok && del.n > 0) {
            ok = (r = wq(c, "DELETE FROM t WHERE id = ANY($1::bigint[])", 1, pd)) != NULL;
            ndel = ok ? atol(PQcmdTuples(r)) : 0;
            PQclear(r);
        }
        if (ok)
            ok = (ri = wq(c,
                          "INSERT INTO t (txn, k, v) SELECT $1::int, g, "
                          "repeat(md5(($1::int * 1000 + g)::text), 3) "
                          "FROM generate_series(1, $2::int) g RETURNING id",
                          2, p2)) != NULL;
        if (ok && upd.n > 0) {
            ok = (r = wq(c,
                         "UPDATE t SET txn = $1::int, k = k + 1, v = md5(v) "
                         "WHERE id = ANY($2::bigint[])",
                         2, pu)) != NULL;
            nupd = ok ? atol(PQcmdTuples(r)) : 0;
            PQclear(r);
        }
        if (ok) {
            snprintf(sins, sizeof sins, "%d", PQntuples(ri));
            snprintf(supd, sizeof supd, "%ld", nupd);
            snprintf(sdel, sizeof sdel, "%ld", ndel);
            const char *pa[4] = {stxn, sins, supd, sdel};
            ok = (r = wq(c, "INSERT INTO audit VALUES ($1::int, $2::int, $3::int, $4::int)", 4,
                         pa)) != NULL;
            PQclear(r);
        }
        if (ok) {
            ok = (r = wq(c, rollback ? "ROLLBACK" : "COMMIT", 0, NULL)) != NULL;
            PQclear(r);
        }
        if (ok && !rollback) {
            committed++;
            for (int i = 0; i < PQntuples(ri); i++)
                idvec_push(&live, atoll(PQgetvalue(ri, i, 0)));
            for (size_t i = 0; i < upd.n; i++)
                idvec_push(&live, upd.v[i]);
        } else {
            /* rolled back, or unknown (a lost connection may have committed
             * it: then a later update/delete of a gone id touches 0 rows,
             * which the audit row records truthfully) */
            rolled_back += ok;
            failed += !ok;
            for (size_t i = 0; i < upd.n; i++)
                idvec_push(&live, upd.v[i]);
            for (size_t i = 0; i < del.n; i++)
                idvec_push(&live, del.v[i]);
        }
        PQclear(ri);
        free(adel);
        free(aupd);
        free(del.v);
        free(upd.v);
        if (!ok) {
            if (!o->resilient) {
                fprintf(stderr, "writer: transaction %d failed: %s", txn, PQerrorMessage(c));
                _exit(2);
            }
            PQfinish(c);
            if ((c = writer_connect(o)) == NULL)
                break;
        }
        if (o->pause_us > 0)
            usleep((useconds_t)(rand_r(&seed) % o->pause_us));
    }
    fprintf(stderr, "  writer: %ld committed, %ld rolled back, %ld failed (connection lost)\n",
            committed, rolled_back, failed);
    PQfinish(c);
    _exit(0);
}

static void writer_start(fx *f, const writer_opts *o)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0)
        writer_main(o);
    f->writer = pid;
}

static void writer_check_alive(fx *f)
{
    int status;
    if (f->writer > 0 && waitpid(f->writer, &status, WNOHANG) == f->writer) {
        f->writer = 0;
        fail_msg("the writer died (wait status 0x%x)", status);
    }
}

static void writer_stop(fx *f)
{
    int status = 0;
    kill(f->writer, SIGUSR1);
    for (int64_t end = it_now_ms() + 60000; it_now_ms() < end; it_sleep_ms(20))
        if (waitpid(f->writer, &status, WNOHANG) == f->writer) {
            f->writer = 0;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail_msg("the writer failed (wait status 0x%x)", status);
            return;
        }
    fail_msg("the writer did not stop within 60 s");
}

/* ------------------------------------------------------------------------
 * WAL verification for the writer's workload
 * ---------------------------------------------------------------------- */

static const sa_field *field(const sa_field *f, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

/* Integer value of a TEXT field; -1 when absent, NULL or unchanged. */
static long long field_ll(const sa_field *f, uint32_t n, const char *name)
{
    const sa_field *x = field(f, n, name);
    char buf[32];
    if (x == NULL || x->val.kind != SA_VAL_TEXT || x->val.len >= sizeof buf)
        return -1;
    memcpy(buf, x->val.data, x->val.len);
    buf[x->val.len] = '\0';
    return atoll(buf);
}

typedef struct expect {
    int nins, nupd, ndel;
    int seen; /* groups found holding this audit row */
} expect;

typedef struct werr {
    long n;
} werr;

__attribute__((format(printf, 2, 3))) static void werr_add(werr *e, const char *fmt, ...)
{
    if (e->n++ < 20) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "  WAL check: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * (a) every committed change exactly once, (b) commit order and contiguous
 * transactions, (c) no partial transaction — from the WAL alone, against
 * the audit table; then every row of t was inserted by some WAL group.
 */
static void verify_writer_wal(fx *f)
{
    int64_t t0 = it_now_ms();
    long long maxtxn = query_ll(f->c, "SELECT coalesce(max(txn), 0) FROM audit");
    long long maxid = query_ll(f->c, "SELECT last_value FROM t_id_seq");
    assert_true(maxtxn > 0 && maxid > 0);
    expect *exp = calloc((size_t)maxtxn + 1, sizeof *exp);
    unsigned char *present = calloc((size_t)maxtxn + 1, 1);
    unsigned char *ins = calloc((size_t)maxid + 1, 1);
    PGresult *r = PQexec(f->c, "SELECT txn, nins, nupd, ndel FROM audit");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long naudit = PQntuples(r);
    for (int i = 0; i < PQntuples(r); i++) {
        long long t = atoll(PQgetvalue(r, i, 0));
        exp[t].nins = atoi(PQgetvalue(r, i, 1));
        exp[t].nupd = atoi(PQgetvalue(r, i, 2));
        exp[t].ndel = atoi(PQgetvalue(r, i, 3));
        present[t] = 1;
    }
    PQclear(r);

    sa_store *s = it_store_ro(f->data);
    assert_non_null(s);
    sa_wal_iter *it = NULL;
    sa_err err = {0};
    if (sa_wal_iter_open(s, 0, &it, &err) != 0)
        fail_msg("sa_wal_iter_open: %s", err.msg);
    werr e = {0};
    size_t nx = 0, xcap = 1024;
    uint32_t *xids = malloc(xcap * sizeof *xids);
    long groups = 0, ops = 0, gops = 0;
    uint64_t prev_lsn = 0, prev_seq = 0;
    /* the group being read */
    int in_group = 0, g_ins = 0, g_upd = 0, g_del = 0, g_audit = 0;
    long long g_txn = -1, g_rowtxn_bad = 0;
    uint32_t g_xid = 0;
    uint64_t g_lsn = 0, g_first = 0;
    sa_wal_rec rec;
    int rc;
    while ((rc = sa_wal_iter_next(it, &rec, &err)) == 1) {
        const sa_op *op = rec.op;
        ops++;
        if (prev_seq != 0 && rec.seq != prev_seq + 1)
            werr_add(&e, "WAL seq %" PRIu64 " follows %" PRIu64, rec.seq, prev_seq);
        prev_seq = rec.seq;
        if (!(op->flags & SA_OP_HAS_PG))
            werr_add(&e, "seq %" PRIu64 ": op without a PostgreSQL position", rec.seq);
        if (!in_group) {
            in_group = 1;
            g_ins = g_upd = g_del = g_audit = 0;
            g_txn = -1;
            g_rowtxn_bad = 0;
            gops = 0;
            g_xid = op->pg_xid;
            g_lsn = op->pg_lsn;
            g_first = rec.seq;
            /* (b) commit order: a later transaction commits later; two
             * groups with one commit LSN would be one transaction twice */
            if (g_lsn <= prev_lsn)
                werr_add(&e, "group at seq %" PRIu64 " (xid %u): commit LSN %" PRIX64
                         " not after the previous group's %" PRIX64,
                         rec.seq, g_xid, g_lsn, prev_lsn);
            if (nx == xcap)
                xids = realloc(xids, (xcap *= 2) * sizeof *xids);
            xids[nx++] = g_xid;
        } else if (op->pg_xid != g_xid || op->pg_lsn != g_lsn) {
            werr_add(&e, "seq %" PRIu64 ": xid %u / commit LSN %" PRIX64 " inside the group of "
                     "xid %u / %" PRIX64 " (seq %" PRIu64 ")",
                     rec.seq, op->pg_xid, op->pg_lsn, g_xid, g_lsn, g_first);
        }
        gops++;
        if (strcmp(op->table, "public.t") == 0) {
            long long rowtxn = -1;
            if (op->kind == SA_OP_INSERT) {
                g_ins++;
                long long id = field_ll(op->key, op->nkey, "id");
                if (id <= 0 || id > maxid)
                    werr_add(&e, "seq %" PRIu64 ": insert of id %lld (sequence at %lld)", rec.seq,
                             id, maxid);
                else if (ins[id]++ != 0)
                    werr_add(&e, "seq %" PRIu64 ": id %lld inserted again (xid %u)", rec.seq, id,
                             g_xid);
                rowtxn = field_ll(op->cols, op->ncols, "txn");
            } else if (op->kind == SA_OP_UPDATE) {
                g_upd++;
                rowtxn = field_ll(op->cols, op->ncols, "txn");
            } else if (op->kind == SA_OP_DELETE) {
                g_del++;
            } else {
                werr_add(&e, "seq %" PRIu64 ": unexpected %s on public.t", rec.seq,
                         sa_op_kind_name(op->kind));
            }
            if (op->kind != SA_OP_DELETE) {
                if (g_txn == -1 && g_rowtxn_bad == 0)
                    g_rowtxn_bad = rowtxn; /* checked against the audit row at the end */
                else if (rowtxn != (g_txn != -1 ? g_txn : g_rowtxn_bad))
                    werr_add(&e, "seq %" PRIu64 ": row of transaction %lld inside the group of "
                             "transaction %lld",
                             rec.seq, rowtxn, g_txn != -1 ? g_txn : g_rowtxn_bad);
            }
        } else if (strcmp(op->table, "public.audit") == 0 && op->kind == SA_OP_INSERT) {
            g_audit++;
            g_txn = field_ll(op->cols, op->ncols, "txn");
        } else {
            werr_add(&e, "seq %" PRIu64 ": unexpected %s on %s", rec.seq,
                     sa_op_kind_name(op->kind), op->table);
        }
        if (!rec.group_end)
            continue;
        /* (c) the group is one whole transaction of the writer */
        in_group = 0;
        groups++;
        prev_lsn = g_lsn;
        if (g_audit != 1 || g_txn <= 0 || g_txn > maxtxn || !present[g_txn]) {
            werr_add(&e, "group seq %" PRIu64 "..%" PRIu64 " (xid %u): %d audit row(s), "
                     "transaction %lld%s",
                     g_first, rec.seq, g_xid, g_audit, g_txn,
                     g_txn > 0 && g_txn <= maxtxn && !present[g_txn] ? " which did not commit" : "");
            continue;
        }
        expect *x = &exp[g_txn];
        if (x->seen++ != 0)
            werr_add(&e, "transaction %lld appears in a second group (seq %" PRIu64 ", xid %u)",
                     g_txn, g_first, g_xid);
        if (g_ins != x->nins || g_upd != x->nupd || g_del != x->ndel)
            werr_add(&e, "transaction %lld (xid %u, seq %" PRIu64 "..%" PRIu64 "): %d/%d/%d "
                     "inserts/updates/deletes in the WAL, %d/%d/%d committed",
                     g_txn, g_xid, g_first, rec.seq, g_ins, g_upd, g_del, x->nins, x->nupd,
                     x->ndel);
        if ((g_ins > 0 || g_upd > 0) && g_rowtxn_bad != g_txn)
            werr_add(&e, "transaction %lld (xid %u): its rows carry txn %lld", g_txn, g_xid,
                     g_rowtxn_bad);
    }
    if (rc < 0)
        werr_add(&e, "reading the WAL: %s", err.msg);
    if (in_group)
        werr_add(&e, "the WAL ends inside a group (from seq %" PRIu64 ")", g_first);
    sa_wal_iter_close(it);
    sa_store_close(s);

    /* (b) the ops of one transaction are contiguous: one group per xid */
    qsort(xids, nx, sizeof *xids, cmp_u32);
    for (size_t i = 1; i < nx; i++)
        if (xids[i] == xids[i - 1])
            werr_add(&e, "xid %u has more than one group", xids[i]);
    /* (a) every committed transaction is there */
    long missing = 0;
    for (long long t = 1; t <= maxtxn; t++)
        if (present[t] && exp[t].seen == 0 && missing++ < 5)
            werr_add(&e, "committed transaction %lld (%d/%d/%d) is not in the WAL", t,
                     exp[t].nins, exp[t].nupd, exp[t].ndel);
    /* (a) every row of the table was inserted through the WAL */
    r = PQexec(f->c, "SELECT id FROM t");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long nrows = PQntuples(r), lost = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        long long id = atoll(PQgetvalue(r, i, 0));
        if (id > maxid || !ins[id])
            if (lost++ < 5)
                werr_add(&e, "row id %lld of the table has no insert op in the WAL", id);
    }
    PQclear(r);
    fprintf(stderr,
            "  WAL: %ld ops in %ld groups; %ld committed transactions, %ld rows in t; "
            "checked in %" PRId64 " ms; %ld problem(s)\n",
            ops, groups, naudit, nrows, it_now_ms() - t0, e.n);
    free(xids);
    free(exp);
    free(present);
    free(ins);
    if (e.n > 0)
        fail_msg("the WAL does not hold each committed change exactly once, whole, in commit "
                 "order (%ld problems, first ones above)",
                 e.n);
    if (groups != naudit)
        fail_msg("%ld WAL groups for %ld committed transactions", groups, naudit);
}

static void check_state(fx *f, const char *table)
{
    int64_t t0 = it_now_ms();
    if (!it_state_equals_table(f->data, f->c, table))
        fail_msg("the bridge's state of %s differs from the table", table);
    fprintf(stderr, "  state of %s equals the table (%" PRId64 " ms)\n", table, it_now_ms() - t0);
}

static void wait_caught_up(fx *f, int timeout_ms)
{
    int64_t t0 = it_now_ms();
    if (!it_wait_caught_up(f->c, SLOT, timeout_ms)) {
        bridge_alive(f, "while catching up");
        fail_msg("the bridge did not catch up within %d s", timeout_ms / 1000);
    }
    fprintf(stderr, "  caught up in %" PRId64 " ms\n", it_now_ms() - t0);
}

/* ------------------------------------------------------------------------
 * 1. SIGKILL under load
 * ---------------------------------------------------------------------- */

static void test_ingest_sigkill_under_load(void **state)
{
    fx *f = *state;
    int64_t t0 = it_now_ms();
    int kills = env_int("SA_INGEST_KILLS", 50);
    unsigned seed = g_seed;
    fprintf(stderr, "  %d kills, seed %u\n", kills, seed);
    cmd_ok(f->c, W_SCHEMA);
    /* spill transactions above 64 kB to disk: kills land in that path too */
    const char *const extra[] = {"--txn-memory-kb", "64", "--status-interval-ms", "200",
                                 "--retry-base-ms", "50", "--retry-cap-ms", "500", NULL};
    start_bridge(f, W_TABLES, extra);
    if (!it_wait_streaming(&f->b, 60000))
        fail_msg("the bridge did not finish its initial sync");
    writer_opts wo = {.conninfo = sa_pgh_conninfo(f->h), .max_rows = 1000, .resilient = 0,
                      .pause_us = 3000, .seed = seed * 7 + 1};
    writer_start(f, &wo);

    inv iv = {0};
    uint64_t last_durable = 0;
    int stalled = 0, checks = 0;
    for (int k = 0; k < kills; k++) {
        if (f->b.pid <= 0)
            start_bridge(f, W_TABLES, extra);
        int delay = 50 + rand_r(&seed) % 551;
        int64_t until = it_now_ms() + delay;
        while (it_now_ms() < until) {
            sample_invariant(f, &iv);
            int64_t left = until - it_now_ms();
            if (left > 0)
                it_sleep_ms(left < 80 ? (int)left : 40 + rand_r(&seed) % 40);
        }
        bridge_alive(f, "between kills");
        writer_check_alive(f);
        it_bridge_stop(&f->b, SIGKILL);
        sample_invariant(f, &iv);
        /* every tenth kill, let the bridge run a little longer, and check
         * that its durable position keeps moving under the kills */
        if (k % 10 == 9) {
            start_bridge(f, W_TABLES, extra);
            for (int i = 0; i < 20; i++) {
                sample_invariant(f, &iv);
                it_sleep_ms(50);
            }
            checks++;
            stalled += iv.last_durable <= last_durable;
            last_durable = iv.last_durable;
        }
    }
    fprintf(stderr, "  %d kills done in %" PRId64 " ms; durable position stalled in %d of %d "
            "checks\n", kills, it_now_ms() - t0, stalled, checks);
    if (checks > 0 && stalled == checks)
        fail_msg("the bridge's durable position never advanced during the kills");
    writer_stop(f);
    if (f->b.pid <= 0)
        start_bridge(f, W_TABLES, extra);
    /* sample through the catch-up too */
    uint64_t target = it_lsn_query(f->c, "SELECT pg_current_wal_lsn()");
    int64_t t1 = it_now_ms();
    for (;;) {
        sample_invariant(f, &iv);
        bridge_alive(f, "while catching up");
        if (iv.max_slot >= target)
            break;
        if (it_now_ms() - t1 > 240000)
            fail_msg("the bridge did not catch up within 240 s");
        it_sleep_ms(100);
    }
    wait_caught_up(f, 240000);
    fprintf(stderr, "  final catch-up: %" PRId64 " ms\n", it_now_ms() - t1);
    stop_bridge_clean(f);
    check_invariant(&iv);
    verify_writer_wal(f);
    check_state(f, "public.t");
    check_state(f, "public.audit");
    fprintf(stderr, "  test_ingest_sigkill_under_load: %" PRId64 " ms\n", it_now_ms() - t0);
    f->ok = 1;
}

/* ------------------------------------------------------------------------
 * 2. PostgreSQL immediate stop mid-stream
 * ---------------------------------------------------------------------- */

static void test_ingest_postgres_immediate_restart(void **state)
{
    fx *f = *state;
    int64_t t0 = it_now_ms();
    sa_err err = {0};
    cmd_ok(f->c, W_SCHEMA);
    const char *const extra[] = {"--retry-base-ms", "100", "--retry-cap-ms", "1000",
                                 "--status-interval-ms", "200", NULL};
    start_bridge(f, W_TABLES, extra);
    if (!it_wait_streaming(&f->b, 60000))
        fail_msg("the bridge did not finish its initial sync");
    writer_opts wo = {.conninfo = sa_pgh_conninfo(f->h), .max_rows = 1000, .resilient = 1,
                      .pause_us = 2000, .seed = g_seed * 13 + 5};
    writer_start(f, &wo);
    inv iv = {0};
    for (int i = 0; i < 30; i++) { /* 3 s of streaming */
        sample_invariant(f, &iv);
        it_sleep_ms(100);
    }
    long long before = query_ll(f->c, "SELECT coalesce(max(txn), 0) FROM audit");
    assert_true(before > 0);
    fprintf(stderr, "  %lld transactions before the immediate stop\n", before);
    if (sa_pgh_stop_server(f->h, 1, &err) != 0)
        fail_msg("stop -m immediate: %s", err.msg);
    it_sleep_ms(3000);
    bridge_alive(f, "while PostgreSQL was down");
    if (sa_pgh_start_server(f->h, &err) != 0)
        fail_msg("start: %s", err.msg);
    reconnect_ok(f);
    long long after = before;
    int64_t t1 = it_now_ms();
    while (after < before + 200 && it_now_ms() - t1 < 60000) {
        writer_check_alive(f);
        sample_invariant(f, &iv);
        it_sleep_ms(100);
        after = query_ll(f->c, "SELECT coalesce(max(txn), 0) FROM audit");
    }
    if (after < before + 200)
        fail_msg("the writer did not resume after the restart (%lld -> %lld)", before, after);
    for (int i = 0; i < 20; i++) {
        sample_invariant(f, &iv);
        it_sleep_ms(100);
    }
    writer_stop(f);
    bridge_alive(f, "after the restart");
    wait_caught_up(f, 240000);
    sample_invariant(f, &iv);
    if (!it_log_contains(&f->b, "reconnecting in"))
        fail_msg("the bridge's log shows no reconnect attempt");
    stop_bridge_clean(f);
    check_invariant(&iv);
    verify_writer_wal(f);
    check_state(f, "public.t");
    check_state(f, "public.audit");
    fprintf(stderr, "  test_ingest_postgres_immediate_restart: %" PRId64 " ms\n",
            it_now_ms() - t0);
    f->ok = 1;
}

/* ------------------------------------------------------------------------
 * 3. Large streamed transactions, aborts, bounded memory
 * ---------------------------------------------------------------------- */

typedef struct rss {
    long peak_kb, samples;
} rss;

static void rss_sample(fx *f, rss *m)
{
    long kb = it_bridge_peak_rss_kb(&f->b);
    if (kb > m->peak_kb)
        m->peak_kb = kb;
    m->samples += kb > 0;
}

/* Run sql on each non-NULL connection concurrently (simple protocol, so
 * several statements each); sample the RSS until all are done. */
static void exec_sampling(fx *f, rss *m, PGconn **cs, const char **sqls, int n)
{
    for (int i = 0; i < n; i++)
        if (!PQsendQuery(cs[i], sqls[i]))
            fail_msg("send: %s", PQerrorMessage(cs[i]));
    int busy = n;
    while (busy > 0) {
        busy = 0;
        for (int i = 0; i < n; i++) {
            if (cs[i] == NULL)
                continue;
            PQconsumeInput(cs[i]);
            while (!PQisBusy(cs[i])) {
                PGresult *r = PQgetResult(cs[i]);
                if (r == NULL) {
                    cs[i] = NULL;
                    break;
                }
                ExecStatusType st = PQresultStatus(r);
                if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
                    fail_msg("%.120s: %s", sqls[i], PQresultErrorMessage(r));
                PQclear(r);
            }
            busy += cs[i] != NULL;
        }
        rss_sample(f, m);
        bridge_alive(f, "during the large transactions");
        if (busy > 0)
            it_sleep_ms(100);
    }
}

static void test_ingest_large_streamed_transaction(void **state)
{
    fx *f = *state;
    int64_t t0 = it_now_ms();
    long big = env_int("SA_INGEST_BIG_ROWS", 2000000);
    long aborted = 300000, sp_keep = 1000, sp_gone = 50000;
    fprintf(stderr, "  %ld-row transaction\n", big);
    cmd_ok(f->c, "CREATE TABLE big (id bigint PRIMARY KEY, grp int NOT NULL, v text)");
    start_bridge(f, "public.big", NULL);
    if (!it_wait_streaming(&f->b, 60000))
        fail_msg("the bridge did not finish its initial sync");
    rss m = {0};
    rss_sample(f, &m);
    long rss0 = m.peak_kb;

    /* A: the big one (~100-byte rows), committed; B: 300k rows rolled back,
     * concurrently on another connection so their streams interleave */
    char a[512], b[512], c[1024];
    snprintf(a, sizeof a,
             "INSERT INTO big SELECT g, 1, rpad(md5(g::text), 84, md5((-g)::text)) "
             "FROM generate_series(1, %ld) g",
             big);
    snprintf(b, sizeof b,
             "BEGIN; INSERT INTO big SELECT g, 2, rpad(md5(g::text), 84, 'b') "
             "FROM generate_series(%ld, %ld) g; ROLLBACK",
             big + 1, big + aborted);
    /* C: a savepoint rolled back inside a streamed transaction, committed */
    long base = big + aborted;
    snprintf(c, sizeof c,
             "BEGIN;"
             "INSERT INTO big SELECT g, 3, rpad(md5(g::text), 84, 'c') FROM generate_series(%ld, %ld) g;"
             "SAVEPOINT s;"
             "INSERT INTO big SELECT g, 4, rpad(md5(g::text), 84, 'd') FROM generate_series(%ld, %ld) g;"
             "ROLLBACK TO SAVEPOINT s;"
             "INSERT INTO big SELECT g, 5, rpad(md5(g::text), 84, 'e') FROM generate_series(%ld, %ld) g;"
             "COMMIT",
             base + 1, base + sp_keep, base + sp_keep + 1, base + sp_keep + sp_gone,
             base + sp_keep + sp_gone + 1, base + 2 * sp_keep + sp_gone);
    PGconn *c2 = PQconnectdb(sa_pgh_conninfo(f->h));
    if (PQstatus(c2) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c2));
    int64_t t1 = it_now_ms();
    PGconn *cs[2] = {f->c, c2};
    const char *sqls[2] = {a, b};
    exec_sampling(f, &m, cs, sqls, 2);
    PQfinish(c2);
    int64_t t_sql = it_now_ms() - t1;
    PGconn *cs1[1] = {f->c};
    const char *sqls1[1] = {c};
    exec_sampling(f, &m, cs1, sqls1, 1);

    /* catch-up, sampling the RSS all along */
    uint64_t target = it_lsn_query(f->c, "SELECT pg_current_wal_lsn()");
    int64_t t2 = it_now_ms();
    for (;;) {
        rss_sample(f, &m);
        bridge_alive(f, "while catching up");
        uint64_t slot = it_lsn_query(
            f->c, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" SLOT
                  "'");
        if (slot >= target)
            break;
        if (it_now_ms() - t2 > 600000)
            fail_msg("the bridge did not catch up within 600 s");
        it_sleep_ms(200);
    }
    int64_t t_catch = it_now_ms() - t2;
    rss_sample(f, &m); /* right before stopping */
    stop_bridge_clean(f);
    fprintf(stderr,
            "  SQL (big + aborted, concurrent): %" PRId64 " ms; bridge done %" PRId64
            " ms later; peak RSS %ld kB (%ld kB at start, %ld samples)\n",
            t_sql, t_catch, m.peak_kb, rss0, m.samples);
    assert_true(m.samples > 0);
    if (m.peak_kb >= 150 * MB)
        fail_msg("bridge peak RSS %ld kB >= 150 MB", m.peak_kb);

    /* the WAL: A is one group, B left nothing, C lost its savepoint's rows */
    int64_t t3 = it_now_ms();
    sa_store *s = it_store_ro(f->data);
    assert_non_null(s);
    sa_wal_iter *it = NULL;
    sa_err err = {0};
    if (sa_wal_iter_open(s, 0, &it, &err) != 0)
        fail_msg("sa_wal_iter_open: %s", err.msg);
    unsigned char *seen = calloc((size_t)big + 1, 1);
    /* cnt[] by grp value; the rest by transaction: 1 = A, 3 = C (grp 3 and 5) */
    long cnt[6] = {0}, n[6] = {0}, ends[6] = {0}, dup = 0, other = 0, bad_xid = 0,
         bad_lsn = 0, notcontig = 0;
    uint32_t xid[6] = {0};
    uint64_t lsn[6] = {0}, last_seq[6] = {0};
    int last_end[6] = {0};
    sa_wal_rec rec;
    int rc;
    while ((rc = sa_wal_iter_next(it, &rec, &err)) == 1) {
        const sa_op *op = rec.op;
        long long g = field_ll(op->cols, op->ncols, "grp");
        long long id = field_ll(op->key, op->nkey, "id");
        if (op->kind != SA_OP_INSERT || strcmp(op->table, "public.big") != 0 || g < 1 || g > 5) {
            other++;
            continue;
        }
        cnt[g]++;
        int gi = g == 5 ? 3 : (int)g;
        if (n[gi] == 0) {
            xid[gi] = op->pg_xid;
            lsn[gi] = op->pg_lsn;
        } else {
            bad_xid += op->pg_xid != xid[gi];
            bad_lsn += op->pg_lsn != lsn[gi];
            notcontig += rec.seq != last_seq[gi] + 1;
            if (last_end[gi])
                ends[gi]++; /* a group ended before this op of the same transaction */
        }
        n[gi]++;
        last_seq[gi] = rec.seq;
        last_end[gi] = rec.group_end;
        if (g == 1 && id >= 1 && id <= big && seen[id]++ != 0)
            dup++;
    }
    if (rc < 0)
        fail_msg("reading the WAL: %s", err.msg);
    sa_wal_iter_close(it);
    sa_store_close(s);
    long missing = 0;
    for (long i = 1; i <= big; i++)
        missing += !seen[i];
    free(seen);
    fprintf(stderr,
            "  WAL (read in %" PRId64 " ms): big transaction %ld ops (xid %u); rolled-back "
            "transaction %ld ops; savepoint transaction %ld ops (xid %u: %ld before the "
            "savepoint, %ld after its rollback, %ld of the rolled-back subtransaction); "
            "other %ld\n",
            it_now_ms() - t3, n[1], xid[1], cnt[2], n[3], xid[3], cnt[3], cnt[5], cnt[4], other);
    if (n[1] != big || missing || dup)
        fail_msg("the big transaction has %ld ops in the WAL (%ld ids missing, %ld twice), "
                 "expected %ld",
                 n[1], missing, dup, big);
    if (ends[1] != 0 || !last_end[1] || bad_xid || bad_lsn || notcontig)
        fail_msg("a transaction is not one contiguous WAL group: %ld early group ends, "
                 "last op group_end %d, %ld ops of another xid, %ld of another commit LSN, "
                 "%ld gaps",
                 ends[1], last_end[1], bad_xid, bad_lsn, notcontig);
    if (cnt[2] != 0)
        fail_msg("the rolled-back transaction left %ld ops in the WAL", cnt[2]);
    if (cnt[4] != 0)
        fail_msg("the rolled-back savepoint's %ld rows are in the WAL", cnt[4]);
    if (cnt[3] != sp_keep || cnt[5] != sp_keep || ends[3] != 0 || !last_end[3])
        fail_msg("the savepoint transaction has %ld + %ld ops, %ld early group ends, last "
                 "group_end %d; expected %ld + %ld in one group",
                 cnt[3], cnt[5], ends[3], last_end[3], sp_keep, sp_keep);
    if (xid[3] == xid[1] || other != 0)
        fail_msg("unexpected ops in the WAL: %ld (xids %u, %u)", other, xid[1], xid[3]);
    check_state(f, "public.big");
    fprintf(stderr, "  test_ingest_large_streamed_transaction: %" PRId64 " ms\n",
            it_now_ms() - t0);
    f->ok = 1;
}

int main(void)
{
    const char *s = getenv("SA_INGEST_SEED");
    g_seed = s != NULL && s[0] != '\0' ? (unsigned)strtoul(s, NULL, 10)
                                       : (unsigned)time(NULL) ^ (unsigned)getpid();
    fprintf(stderr, "test_ingest_faults: seed %u (SA_INGEST_SEED to repeat)\n", g_seed);
    const char *only = getenv("SA_INGEST_ONLY");
    if (only != NULL && only[0] != '\0')
        cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ingest_sigkill_under_load, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_ingest_postgres_immediate_restart, setup_fx,
                                        teardown_fx),
        cmocka_unit_test_setup_teardown(test_ingest_large_streamed_transaction, setup_fx,
                                        teardown_fx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
