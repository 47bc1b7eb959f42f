/*
 * test_pgext_apply.c — softadastra.apply_ops in a real server, driven the
 * way the bridge drives it: libpq, the batch as a $1 jsonb parameter.
 *
 *   gap_epoch     seqs applied strictly in order per (peer, epoch): a gap
 *                 stops the batch, replays are duplicates, a rejected op
 *                 does not stall the ops after it, a new epoch starts at 1.
 *   injection     hostile table names, column names, keys and values: each
 *                 op is either rejected (with a message and a
 *                 softadastra.rejections row) or stored literally, and never
 *                 runs as SQL (a canary table keeps its rows, no relation
 *                 appears or disappears); a peer limited to some tables is
 *                 refused the others.
 *   concurrency   forked processes, each with its own connection, released
 *                 together: (i) two peers editing disjoint columns of the
 *                 same rows merge without conflicts; (ii) one batch sent by
 *                 three sessions at once applies each op exactly once; (iii)
 *                 three peers updating the same column of the same rows in
 *                 random orders: every op is applied or a conflict, the
 *                 larger (hlc, origin) wins each row (lww), and no error —
 *                 deadlock or other — ever reaches a client; (iv) apply_ops
 *                 next to plain SQL updating the same rows in random orders:
 *                 real deadlocks, no lost update, and only a retryable 40P01
 *                 that changed nothing may reach an apply_ops client (its
 *                 retries are bounded; the count is printed).
 *
 * One cluster serves every test (tables and peers are per test).  A failed
 * test prints the tail of the server's log.  Skipped (not failed) when the
 * extension is not installed, like test_pgext_smoke.c.
 * SA_TEST_SEED fixes the seed of the random row orders (printed otherwise).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_harness.h"
#include "sa/sa_alloc.h"

#define APPLY_SQL                                                                                  \
    "SELECT seq, status, conflict_id, message"                                                     \
    " FROM softadastra.apply_ops($1, $2::bigint, $3::jsonb)"

/* ---------------------------------------------------------------------
 * The shared cluster, and the log tail of a failed test.
 * ------------------------------------------------------------------- */

static struct {
    sa_pgh *pg;         /* started by the first test that needs it */
    PGconn *conn;       /* this process's own connection (parameters) */
    int ok;             /* the running test reached its end */
    int skipped;        /* the running test skipped */
    uint64_t rng;       /* xorshift64 state */
    long long hlc_last; /* the last HLC handed out */
} g;

/* <sharedir>/extension/softadastra.control of the harness' server (as in
 * test_pgext_smoke.c). */
static int extension_installed(char *where, size_t size)
{
    const char *bindir = getenv("PG_BINDIR");
    char cmd[1200];
    if (bindir != NULL && bindir[0] != '\0')
        snprintf(cmd, sizeof cmd, "'%s/pg_config' --sharedir 2>/dev/null || pg_config --sharedir",
                 bindir);
    else
        snprintf(cmd, sizeof cmd, "pg_config --sharedir");
    FILE *p = popen(cmd, "r");
    char share[1024] = "";
    if (p != NULL) {
        if (fgets(share, sizeof share, p) == NULL)
            share[0] = '\0';
        pclose(p);
    }
    share[strcspn(share, "\n")] = '\0';
    snprintf(where, size, "%s/extension/softadastra.control", share);
    struct stat st;
    return share[0] != '\0' && stat(where, &st) == 0;
}

static void print_log_tail(void)
{
    if (g.pg == NULL)
        return;
    FILE *f = fopen(sa_pgh_logfile(g.pg), "r");
    if (f == NULL)
        return;
    char buf[6000];
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    fseek(f, end > (long)sizeof buf ? end - (long)sizeof buf : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    printf("--- tail of the server log (%s) ---\n%.*s\n--- end of the server log ---\n",
           sa_pgh_logfile(g.pg), (int)n, buf);
}

static int test_setup(void **state)
{
    (void)state;
    g.ok = 0;
    g.skipped = 0;
    return 0;
}

/* Runs after a failed test too (cmocka runs the teardown whatever the
 * test's outcome): that is where the log tail is printed. */
static int test_teardown(void **state)
{
    (void)state;
    if (!g.ok && !g.skipped)
        print_log_tail();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g.conn != NULL)
        PQfinish(g.conn);
    g.conn = NULL;
    sa_pgh_stop(g.pg);
    g.pg = NULL;
    return 0;
}

/* Skip when the extension is not installed; else make sure the cluster
 * runs, with the extension created and our connection open. */
static void need_cluster(void)
{
    char control[1200];
    if (!extension_installed(control, sizeof control)) {
        printf("# SKIP: softadastra extension not installed (%s missing); "
               "run `cmake --build <dir> --target pgext_install` or ./test.sh\n",
               control);
        g.skipped = 1;
        skip();
    }
    if (g.pg != NULL)
        return;
    sa_err err = {0};
    int rc = sa_pgh_start(NULL, &g.pg, &err);
    if (rc != 0)
        fail_msg("sa_pgh_start: %s (%s)", err.msg, sa_err_name(rc));
    rc = sa_pgh_exec(g.pg, "CREATE EXTENSION softadastra", NULL, &err);
    if (rc != 0)
        fail_msg("CREATE EXTENSION softadastra: %s", err.msg);
    g.conn = PQconnectdb(sa_pgh_conninfo(g.pg));
    if (PQstatus(g.conn) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(g.conn));
}

/* ---------------------------------------------------------------------
 * Small helpers: SQL, random numbers, clocks, a JSON text builder.
 * ------------------------------------------------------------------- */

/* Run SQL through the harness; fail the test on error. */
static void sql_do(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sql_do(const char *fmt, ...)
{
    char q[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    sa_err err = {0};
    if (sa_pgh_exec(g.pg, q, NULL, &err) != 0)
        fail_msg("SQL failed: %s\n  %s", err.msg, q);
}

/* The text of a query (psql -At form); caller frees with sa_free. */
static char *sql_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sql_text(const char *fmt, ...)
{
    char q[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    sa_err err = {0};
    char *out = NULL;
    if (sa_pgh_exec(g.pg, q, &out, &err) != 0)
        fail_msg("SQL failed: %s\n  %s", err.msg, q);
    return out;
}

/* Fail unless the query's text is exactly want. */
static void expect_sql(const char *want, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void expect_sql(const char *want, const char *fmt, ...)
{
    char q[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    sa_err err = {0};
    char *out = NULL;
    if (sa_pgh_exec(g.pg, q, &out, &err) != 0)
        fail_msg("SQL failed: %s\n  %s", err.msg, q);
    if (strcmp(out, want) != 0) {
        printf("query:    %s\nexpected: %s\nobserved: %s\n", q, want, out);
        sa_free(out);
        fail_msg("unexpected query result (see above)");
    }
    sa_free(out);
}

static long long sql_ll(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static long long sql_ll(const char *fmt, ...)
{
    char q[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    sa_err err = {0};
    char *out = NULL;
    if (sa_pgh_exec(g.pg, q, &out, &err) != 0)
        fail_msg("SQL failed: %s\n  %s", err.msg, q);
    long long v = strtoll(out, NULL, 10);
    sa_free(out);
    return v;
}

static void rng_seed(void)
{
    if (g.rng != 0)
        return;
    const char *s = getenv("SA_TEST_SEED");
    if (s != NULL && s[0] != '\0') {
        g.rng = strtoull(s, NULL, 0);
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        g.rng = (uint64_t)tv.tv_sec * 1000003u ^ (uint64_t)tv.tv_usec ^ (uint64_t)getpid() << 20;
    }
    if (g.rng == 0)
        g.rng = 88172645463325252ull;
    printf("# random seed: SA_TEST_SEED=%llu\n", (unsigned long long)g.rng);
}

static uint64_t rng_next(void)
{
    uint64_t x = g.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return g.rng = x;
}

static void shuffle(long *a, long n)
{
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(rng_next() % (uint64_t)(i + 1));
        long t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* A fresh HLC (ms << 16 | counter), larger than every one handed out and
 * than the commit time of anything written so far. */
static long long hlc_next(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long now = ((long long)tv.tv_sec * 1000 + tv.tv_usec / 1000) << 16;
    g.hlc_last = now > g.hlc_last ? now : g.hlc_last + 1;
    return g.hlc_last;
}

/* Bytes that may hold NUL: B("a\0b") keeps all three. */
typedef struct bytes {
    const char *p;
    size_t n;
} bytes;
#define B(lit) ((bytes){(lit), sizeof(lit) - 1})

typedef struct jbuf {
    char *p;
    size_t len, cap;
} jbuf;

static void jb_reserve(jbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = sa_realloc(b->p, cap);
    assert_non_null(p);
    b->p = p;
    b->cap = cap;
}

static void jb_addf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_addf(jbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    jb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A JSON string holding exactly s (control bytes and NUL as \u00XX). */
static void jb_strn(jbuf *b, bytes s)
{
    jb_addf(b, "\"");
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\')
            jb_addf(b, "\\%c", c);
        else if (c < 0x20)
            jb_addf(b, "\\u%04x", c);
        else
            jb_addf(b, "%c", c);
    }
    jb_addf(b, "\"");
}

static void jb_str(jbuf *b, const char *s)
{
    jb_strn(b, (bytes){s, strlen(s)});
}

static void jb_free(jbuf *b)
{
    sa_free(b->p);
    *b = (jbuf){0};
}

/* Append one op.  table is a C string or raw bytes (escaped here); key,
 * cols and base are JSON object texts; cols/base NULL are left out. */
static void jb_op(jbuf *b, const char *origin, long long epoch, long long seq, long long hlc,
                  const char *kind, bytes table, const char *key, const char *cols,
                  const char *base)
{
    if (b->len > 1)
        jb_addf(b, ",");
    jb_addf(b, "{\"origin\": ");
    jb_str(b, origin);
    jb_addf(b, ", \"epoch\": %lld, \"seq\": %lld, \"hlc\": %lld, \"kind\": ", epoch, seq, hlc);
    jb_str(b, kind);
    jb_addf(b, ", \"table\": ");
    jb_strn(b, table);
    jb_addf(b, ", \"key\": %s", key);
    if (cols != NULL)
        jb_addf(b, ", \"cols\": %s", cols);
    if (base != NULL)
        jb_addf(b, ", \"base\": %s", base);
    jb_addf(b, "}");
}

static bytes cstr(const char *s)
{
    return (bytes){s, strlen(s)};
}

/* ---------------------------------------------------------------------
 * Calling apply_ops.
 * ------------------------------------------------------------------- */

static PGresult *apply_raw(PGconn *c, const char *peer, long long epoch, const char *ops)
{
    char ep[32];
    snprintf(ep, sizeof ep, "%lld", epoch);
    const char *params[3] = {peer, ep, ops};
    return PQexecParams(c, APPLY_SQL, 3, NULL, params, NULL, NULL, 0);
}

/* "seq:status ..." of a result, for exact comparison; caller frees. */
static char *render_statuses(const PGresult *r)
{
    jbuf b = {0};
    jb_addf(&b, "%s", "");
    for (int i = 0; i < PQntuples(r); i++)
        jb_addf(&b, "%s%s:%s", i ? " " : "", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    return b.p;
}

/* Apply ops (a JSON array) for peer/epoch on our connection and fail
 * unless the statuses are exactly want ("1:applied 2:gap").  Returns the
 * result for further checks; caller PQclears. */
static PGresult *apply_expect(const char *peer, long long epoch, const char *ops, const char *want)
{
    PGresult *r = apply_raw(g.conn, peer, epoch, ops);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        printf("ops: %s\n", ops);
        fail_msg("apply_ops(%s, %lld) failed: %s", peer, epoch, PQresultErrorMessage(r));
    }
    char *got = render_statuses(r);
    if (strcmp(got, want) != 0) {
        printf("ops:      %s\nexpected: %s\nobserved: %s\n", ops, want, got);
        for (int i = 0; i < PQntuples(r); i++)
            if (!PQgetisnull(r, i, 3))
                printf("  seq %s message: %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 3));
        sa_free(got);
        fail_msg("apply_ops(%s, %lld): unexpected statuses (see above)", peer, epoch);
    }
    sa_free(got);
    return r;
}

static void apply_check(const char *peer, long long epoch, const char *ops, const char *want)
{
    PQclear(apply_expect(peer, epoch, ops, want));
}

/* ---------------------------------------------------------------------
 * c. gap and epoch
 * ------------------------------------------------------------------- */

/* One insert op into public.ge_items: id and name "n<id>". */
static void ge_insert(jbuf *b, long long epoch, long long seq, long long id)
{
    char key[64], cols[96];
    snprintf(key, sizeof key, "{\"id\": %lld}", id);
    snprintf(cols, sizeof cols, "{\"id\": %lld, \"name\": \"n%lld\"}", id, id);
    jb_op(b, "ge1", epoch, seq, hlc_next(), "insert", B("public.ge_items"), key, cols, NULL);
}

static char *ge_batch(long long epoch, const long long *seq_id, int n)
{
    jbuf b = {0};
    jb_addf(&b, "[");
    for (int i = 0; i < n; i++)
        ge_insert(&b, epoch, seq_id[2 * i], seq_id[2 * i + 1]);
    jb_addf(&b, "]");
    return b.p;
}

static void test_pgext_apply_gap_epoch(void **state)
{
    (void)state;
    need_cluster();
    sql_do("CREATE TABLE public.ge_items (id bigint PRIMARY KEY, name text);"
           "SELECT softadastra.add_table('public.ge_items');"
           "SELECT softadastra.create_peer('ge1')");

    /* 1, 2, 4, 5: the batch stops at the gap, with no row after it. */
    char *ops = ge_batch(1, (long long[]){1, 1, 2, 2, 4, 4, 5, 5}, 4);
    apply_check("ge1", 1, ops, "1:applied 2:applied 4:gap");
    sa_free(ops);
    expect_sql("1:n1,2:n2", "SELECT string_agg(id || ':' || name, ',' ORDER BY id)"
                            " FROM public.ge_items");
    expect_sql("2", "SELECT applied_seq FROM softadastra.peer_progress"
                    " WHERE peer = 'ge1' AND epoch = 1");

    /* Filling the gap: 3, 4, 5 apply. */
    ops = ge_batch(1, (long long[]){3, 3, 4, 4, 5, 5}, 3);
    apply_check("ge1", 1, ops, "3:applied 4:applied 5:applied");
    sa_free(ops);
    expect_sql("1,2,3,4,5", "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.ge_items");
    expect_sql("5", "SELECT applied_seq FROM softadastra.peer_progress"
                    " WHERE peer = 'ge1' AND epoch = 1");

    /* The whole range again: duplicates, nothing changes; then a batch
     * straddling the watermark. */
    ops = ge_batch(1, (long long[]){1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, 5);
    apply_check("ge1", 1, ops, "1:duplicate 2:duplicate 3:duplicate 4:duplicate 5:duplicate");
    sa_free(ops);
    ops = ge_batch(1, (long long[]){5, 5, 6, 6}, 2);
    apply_check("ge1", 1, ops, "5:duplicate 6:applied");
    sa_free(ops);
    expect_sql("6", "SELECT count(*) FROM public.ge_items");
    expect_sql("0", "SELECT count(*) FROM softadastra.conflicts WHERE origin = 'ge1'");

    /* A rejected op in the middle does not stall the ops after it, and it
     * counts: the watermark passes it. */
    jbuf b = {0};
    jb_addf(&b, "[");
    ge_insert(&b, 1, 7, 7);
    jb_op(&b, "ge1", 1, 8, hlc_next(), "insert", B("public.ge_nope"), "{\"id\": 8}",
          "{\"id\": 8, \"name\": \"n8\"}", NULL);
    ge_insert(&b, 1, 9, 9);
    jb_addf(&b, "]");
    PGresult *r = apply_expect("ge1", 1, b.p, "7:applied 8:rejected 9:applied");
    assert_false(PQgetisnull(r, 1, 3));
    assert_true(strlen(PQgetvalue(r, 1, 3)) > 0);
    printf("# rejected unknown table: %s\n", PQgetvalue(r, 1, 3));
    PQclear(r);
    jb_free(&b);
    expect_sql("1", "SELECT count(*) FROM softadastra.rejections"
                    " WHERE peer = 'ge1' AND epoch = 1 AND op_seq = 8 AND message <> ''");
    expect_sql("1,2,3,4,5,6,7,9",
               "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.ge_items");
    expect_sql("9", "SELECT applied_seq FROM softadastra.peer_progress"
                    " WHERE peer = 'ge1' AND epoch = 1");

    /* A new epoch starts fresh at seq 1; the old epoch's watermark stays. */
    ops = ge_batch(2, (long long[]){1, 101, 2, 102}, 2);
    apply_check("ge1", 2, ops, "1:applied 2:applied");
    sa_free(ops);
    expect_sql("1|9,2|2", "SELECT string_agg(epoch || '|' || applied_seq, ',' ORDER BY epoch)"
                          " FROM softadastra.peer_progress WHERE peer = 'ge1'");
    expect_sql("101:n101,102:n102", "SELECT string_agg(id || ':' || name, ',' ORDER BY id)"
                                    " FROM public.ge_items WHERE id > 100");

    /* A fresh epoch whose first op is not 1 is a gap at once. */
    ops = ge_batch(3, (long long[]){2, 202, 3, 203}, 2);
    apply_check("ge1", 3, ops, "2:gap");
    sa_free(ops);
    expect_sql("0", "SELECT count(*) FROM public.ge_items WHERE id > 200");
    expect_sql("0", "SELECT coalesce(max(applied_seq), 0) FROM softadastra.peer_progress"
                    " WHERE peer = 'ge1' AND epoch = 3");
    g.ok = 1;
}

/* ---------------------------------------------------------------------
 * b. injection corpus
 * ------------------------------------------------------------------- */

enum { INJ_REJECT, INJ_STORED, INJ_EITHER };
static const char *const inj_expect_name[] = {"rejected", "stored", "rejected or stored"};

typedef struct inj_ctx {
    const char *peer;
    long long seq; /* the next seq of peer, epoch 1 */
    long long id;  /* the next free id */
    int n_rejected, n_stored, n_nul_refused, n_cases;
} inj_ctx;

/*
 * Send one op (seq ctx->seq) and check its outcome against expect.
 * readback (may be NULL): SQL taking $1 = the op's id and returning one
 * text value, which must equal want when the op was applied.  An op whose
 * JSON holds \u0000 may also be refused by the jsonb input of the call
 * itself (SQLSTATE 22P05: jsonb cannot hold NUL), which then changes
 * nothing.
 */
static void inj_run(inj_ctx *ctx, const char *what, int expect, const char *kind, bytes table,
                    const char *key, const char *cols, const char *readback, bytes want)
{
    long long id = ctx->id;
    jbuf b = {0};
    jb_addf(&b, "[");
    jb_op(&b, ctx->peer, 1, ctx->seq, hlc_next(), kind, table, key, cols, NULL);
    jb_addf(&b, "]");
    int has_nul = strstr(b.p, "\\u0000") != NULL;
    ctx->n_cases++;

    PGresult *r = apply_raw(g.conn, ctx->peer, 1, b.p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (has_nul && st != NULL && strcmp(st, "22P05") == 0) {
            /* Refused before apply_ops ran: nothing may have changed. */
            ctx->n_nul_refused++;
            PQclear(r);
            long long wm = sql_ll("SELECT coalesce(max(applied_seq), 0) FROM"
                                  " softadastra.peer_progress WHERE peer = '%s' AND epoch = 1",
                                  ctx->peer);
            if (wm != ctx->seq - 1)
                fail_msg("%s: watermark %lld after a refused call, want %lld", what, wm,
                         ctx->seq - 1);
            jb_free(&b);
            return;
        }
        printf("ops: %s\n", b.p);
        fail_msg("%s: apply_ops failed (%s): %s", what, st ? st : "?", PQresultErrorMessage(r));
    }
    if (PQntuples(r) != 1 || atoll(PQgetvalue(r, 0, 0)) != ctx->seq) {
        char *got = render_statuses(r);
        printf("ops: %s\nobserved: %s\n", b.p, got);
        sa_free(got);
        fail_msg("%s: want exactly one row for seq %lld", what, ctx->seq);
    }
    const char *status = PQgetvalue(r, 0, 1);
    const char *msg = PQgetisnull(r, 0, 3) ? NULL : PQgetvalue(r, 0, 3);
    if (strcmp(status, "rejected") == 0 && expect != INJ_STORED) {
        if (msg == NULL || msg[0] == '\0')
            fail_msg("%s: rejected without a message", what);
        ctx->n_rejected++;
        /* The quarantine row holds the very message returned. */
        char seq[32];
        snprintf(seq, sizeof seq, "%lld", ctx->seq);
        const char *p[3] = {ctx->peer, seq, msg};
        PGresult *q = PQexecParams(g.conn,
                                   "SELECT count(*) FROM softadastra.rejections"
                                   " WHERE peer = $1 AND epoch = 1 AND op_seq = $2::bigint"
                                   " AND message = $3",
                                   3, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(q) != PGRES_TUPLES_OK || strcmp(PQgetvalue(q, 0, 0), "1") != 0)
            fail_msg("%s: no softadastra.rejections row for seq %lld with message \"%s\" (%s)",
                     what, ctx->seq, msg, PQresultErrorMessage(q));
        PQclear(q);
        printf("# %-44s rejected: %s\n", what, msg);
    } else if (strcmp(status, "applied") == 0 && expect != INJ_REJECT) {
        ctx->n_stored++;
        if (readback != NULL) {
            char ids[32];
            snprintf(ids, sizeof ids, "%lld", id);
            const char *p[1] = {ids};
            PGresult *q = PQexecParams(g.conn, readback, 1, NULL, p, NULL, NULL, 0);
            if (PQresultStatus(q) != PGRES_TUPLES_OK || PQntuples(q) != 1)
                fail_msg("%s: applied, but reading it back failed (%d rows): %s\n  %s", what,
                         PQntuples(q), PQresultErrorMessage(q), readback);
            size_t n = (size_t)PQgetlength(q, 0, 0);
            if (PQgetisnull(q, 0, 0) || n != want.n || memcmp(PQgetvalue(q, 0, 0), want.p, n) != 0)
                fail_msg("%s: applied, but stored \"%s\" (%zu bytes), sent \"%.*s\" (%zu bytes)",
                         what, PQgetvalue(q, 0, 0), n, (int)want.n, want.p, want.n);
            PQclear(q);
        }
        printf("# %-44s stored literally\n", what);
    } else {
        printf("ops: %s\n", b.p);
        fail_msg("%s: want %s, observed status \"%s\" (message: %s)", what, inj_expect_name[expect],
                 status, msg ? msg : "(null)");
    }
    PQclear(r);
    jb_free(&b);
    ctx->seq++;
    ctx->id++;
}

/* An insert into public.items of every column (name = "t<id>"), the
 * table being named by table. */
static void inj_table(inj_ctx *ctx, const char *what, int expect, bytes table)
{
    char key[64], cols[256], want[32];
    snprintf(key, sizeof key, "{\"id\": %lld}", ctx->id);
    snprintf(cols, sizeof cols,
             "{\"id\": %lld, \"name\": \"t%lld\", \"price\": \"1.00\", \"note\": null,"
             " \"doc\": null}",
             ctx->id, ctx->id);
    snprintf(want, sizeof want, "t%lld", ctx->id);
    inj_run(ctx, what, expect, "insert", table, key, cols,
            "SELECT name FROM public.items WHERE id = $1::bigint", cstr(want));
}

/* An insert into public.items whose cols also name the column col. */
static void inj_column(inj_ctx *ctx, const char *what, int expect, bytes col)
{
    char key[64], want[32];
    snprintf(key, sizeof key, "{\"id\": %lld}", ctx->id);
    snprintf(want, sizeof want, "c%lld", ctx->id);
    jbuf c = {0};
    jb_addf(&c,
            "{\"id\": %lld, \"name\": \"c%lld\", \"price\": \"1.00\", \"note\": null,"
            " \"doc\": null, ",
            ctx->id, ctx->id);
    jb_strn(&c, col);
    jb_addf(&c, ": \"x\"}");
    inj_run(ctx, what, expect, "insert", B("public.items"), key, c.p,
            "SELECT name FROM public.items WHERE id = $1::bigint", cstr(want));
    jb_free(&c);
}

/* An insert into public.items with name = v (a JSON string): stored
 * literally, unless it holds NUL (then refused). */
static void inj_value(inj_ctx *ctx, const char *what, bytes v)
{
    char key[64];
    snprintf(key, sizeof key, "{\"id\": %lld}", ctx->id);
    jbuf c = {0};
    jb_addf(&c, "{\"id\": %lld, \"name\": ", ctx->id);
    jb_strn(&c, v);
    jb_addf(&c, ", \"price\": \"2.50\", \"note\": null, \"doc\": null}");
    int has_nul = memchr(v.p, '\0', v.n) != NULL;
    inj_run(ctx, what, has_nul ? INJ_REJECT : INJ_STORED, "insert", B("public.items"), key, c.p,
            "SELECT name FROM public.items WHERE id = $1::bigint", v);
    jb_free(&c);
}

/* An insert into public.items with cols (raw JSON, the id added here);
 * readback returns want when stored. */
static void inj_cols(inj_ctx *ctx, const char *what, int expect, const char *cols,
                     const char *readback, const char *want)
{
    char key[64];
    snprintf(key, sizeof key, "{\"id\": %lld}", ctx->id);
    jbuf c = {0};
    assert_true(cols[0] == '{');
    jb_addf(&c, "{\"id\": %lld, %s", ctx->id, cols + 1);
    inj_run(ctx, what, expect, "insert", B("public.items"), key, c.p, readback,
            cstr(want ? want : ""));
    jb_free(&c);
}

static void test_pgext_apply_injection(void **state)
{
    (void)state;
    need_cluster();
    sql_do("CREATE TABLE public.items (id bigint PRIMARY KEY, name text, price numeric,"
           " note text, doc jsonb);"
           "CREATE TABLE public.canary (id int PRIMARY KEY, v text);"
           "INSERT INTO public.canary VALUES (1, 'one'), (2, 'two'), (3, 'three');"
           "CREATE TABLE public.other (id bigint PRIMARY KEY, v text);"
           "CREATE TABLE public.\"we\"\"ird; DROP TABLE public.canary;--\""
           " (id bigint PRIMARY KEY, \"co\"\"l; --\" text, \"prix€\" text);"
           "CREATE TABLE public.\"données\" (id bigint PRIMARY KEY, \"clé\" text);"
           "SELECT softadastra.add_table('public.items');"
           "SELECT softadastra.add_table('public.other');"
           "SELECT softadastra.add_table('public.\"we\"\"ird; DROP TABLE public.canary;--\"');"
           "SELECT softadastra.add_table('public.\"données\"');"
           "SELECT softadastra.create_peer('inj');"
           "SELECT softadastra.create_peer('p2', ARRAY['public.other']::regclass[])");
    char *rels_before = sql_text("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class"
                                 " WHERE relnamespace IN ('public'::regnamespace,"
                                 " 'softadastra'::regnamespace)");

    inj_ctx ctx = {.peer = "inj", .seq = 1, .id = 1};

    /* Table names. */
    inj_table(&ctx, "table: plain public.items", INJ_STORED, B("public.items"));
    inj_table(&ctx, "table: ; DROP TABLE", INJ_REJECT, B("public.items; DROP TABLE public.canary"));
    inj_table(&ctx, "table: ; DROP TABLE --", INJ_REJECT,
              B("public.items; DROP TABLE public.canary; --"));
    inj_table(&ctx, "table: \"public\".\"items\"--", INJ_REJECT, B("\"public\".\"items\"--"));
    inj_table(&ctx, "table: trailing --", INJ_REJECT, B("public.items--"));
    inj_table(&ctx, "table: trailing quote", INJ_REJECT, B("public.items'"));
    inj_table(&ctx, "table: ' OR '1'='1", INJ_REJECT, B("public.items' OR '1'='1"));
    inj_table(&ctx, "table: unbalanced double quote", INJ_REJECT, B("public.\"items"));
    inj_table(&ctx, "table: inner double quote", INJ_REJECT, B("public.it\"ems"));
    inj_table(&ctx, "table: trailing backslash", INJ_REJECT, B("public.items\\"));
    inj_table(&ctx, "table: \\'; DROP TABLE", INJ_REJECT,
              B("public.items\\'; DROP TABLE public.canary; --"));
    inj_table(&ctx, "table: NUL inside", INJ_REJECT, B("public.items\0; DROP TABLE public.canary"));
    inj_table(&ctx, "table: NUL at the end", INJ_REJECT, B("public.items\0"));
    inj_table(&ctx, "table: unicode look-alike", INJ_REJECT, B("public.itemś"));
    inj_table(&ctx, "table: cyrillic look-alike", INJ_REJECT, B("public.іtems"));
    inj_table(&ctx, "table: empty", INJ_REJECT, B(""));
    inj_table(&ctx, "table: newline", INJ_REJECT, B("public.items\n; DROP TABLE public.canary"));
    inj_table(&ctx, "table: catalog pg_class", INJ_REJECT, B("pg_catalog.pg_class"));
    inj_table(&ctx, "table: softadastra.peers", INJ_REJECT, B("softadastra.peers"));
    inj_table(&ctx, "table: exists, not synced", INJ_REJECT, B("public.canary"));
    inj_table(&ctx, "table: unqualified", INJ_EITHER, B("items"));
    inj_table(&ctx, "table: quoted \"public\".\"items\"", INJ_EITHER, B("\"public\".\"items\""));
    inj_table(&ctx, "table: upper case PUBLIC.ITEMS", INJ_EITHER, B("PUBLIC.ITEMS"));

    /* A synced table whose real name is hostile, and one with unicode. */
    {
        char key[64], want[32];
        snprintf(key, sizeof key, "{\"id\": %lld}", ctx.id);
        snprintf(want, sizeof want, "w%lld", ctx.id);
        char cols[128];
        snprintf(cols, sizeof cols,
                 "{\"id\": %lld, \"co\\\"l; --\": \"w%lld\", \"prix€\": \"3 €\"}", ctx.id, ctx.id);
        inj_run(&ctx, "table: real hostile name (quote_ident form)", INJ_EITHER, "insert",
                B("public.\"we\"\"ird; DROP TABLE public.canary;--\""), key, cols,
                "SELECT \"co\"\"l; --\" FROM public.\"we\"\"ird; DROP TABLE public.canary;--\""
                " WHERE id = $1::bigint",
                cstr(want));
        snprintf(key, sizeof key, "{\"id\": %lld}", ctx.id);
        snprintf(want, sizeof want, "d%lld", ctx.id);
        snprintf(cols, sizeof cols, "{\"id\": %lld, \"clé\": \"d%lld\"}", ctx.id, ctx.id);
        inj_run(&ctx, "table: unicode name public.données", INJ_EITHER, "insert",
                B("public.données"), key, cols,
                "SELECT \"clé\" FROM public.\"données\" WHERE id = $1::bigint", cstr(want));
    }

    /* Column names (cols keys). */
    inj_column(&ctx, "column: ; DROP TABLE", INJ_REJECT, B("name; DROP TABLE public.canary"));
    inj_column(&ctx, "column: \") = ... --", INJ_REJECT,
               B("name\") VALUES (1); DROP TABLE public.canary; --"));
    inj_column(&ctx, "column: trailing double quote", INJ_REJECT, B("name\""));
    inj_column(&ctx, "column: single quote", INJ_REJECT, B("na'me"));
    inj_column(&ctx, "column: backslash", INJ_REJECT, B("name\\"));
    inj_column(&ctx, "column: --", INJ_REJECT, B("note--"));
    inj_column(&ctx, "column: NUL", INJ_REJECT, B("na\0me"));
    inj_column(&ctx, "column: unicode", INJ_REJECT, B("nämé"));
    inj_column(&ctx, "column: empty", INJ_REJECT, B(""));
    inj_column(&ctx, "column: system column xmin", INJ_REJECT, B("xmin"));
    inj_column(&ctx, "column: system column ctid", INJ_REJECT, B("ctid"));
    inj_column(&ctx, "column: printf %s%n", INJ_REJECT, B("%s%n%x%p"));

    /* Keys: column names and values. */
    {
        char cols[] = "{\"name\": \"k\", \"price\": \"1\", \"note\": null, \"doc\": null}";
        inj_run(&ctx, "key: column ; DROP TABLE", INJ_REJECT, "insert", B("public.items"),
                "{\"id; DROP TABLE public.canary\": 1}", cols, NULL, B(""));
        inj_run(&ctx, "key: value ; DROP TABLE", INJ_REJECT, "insert", B("public.items"),
                "{\"id\": \"1; DROP TABLE public.canary\"}", cols, NULL, B(""));
        inj_run(&ctx, "key: value ' OR '1'='1", INJ_REJECT, "insert", B("public.items"),
                "{\"id\": \"1' OR '1'='1\"}", cols, NULL, B(""));
        inj_run(&ctx, "key: value with NUL", INJ_REJECT, "insert", B("public.items"),
                "{\"id\": \"1\\u0000\"}", cols, NULL, B(""));
        inj_run(&ctx, "kind: insert; DROP TABLE", INJ_REJECT, "insert; DROP TABLE public.canary",
                B("public.items"), "{\"id\": 999999}", cols, NULL, B(""));
    }

    /* Values: stored byte for byte (NUL: refused). */
    inj_value(&ctx, "value: '); DROP TABLE", B("'); DROP TABLE public.canary; --"));
    inj_value(&ctx, "value: quotes", B("\"double\" and 'single' and `back`"));
    inj_value(&ctx, "value: backslashes", B("back\\slash \\' \\\\ \\x00 E'\\n'"));
    inj_value(&ctx, "value: semicolons", B(";;; SELECT 1;"));
    inj_value(&ctx, "value: dollar quoting", B("$$ $x$ DROP TABLE public.canary $x$ $$"));
    inj_value(&ctx, "value: printf directives", B("%s%n%x%p%1$s"));
    inj_value(&ctx, "value: unicode", B("héllo wörld ✓ 🚀 中文 \u202e"));
    inj_value(&ctx, "value: control bytes", B("tab\tnew\nline\rcr \x01\x1f"));
    inj_value(&ctx, "value: empty string", B(""));
    inj_value(&ctx, "value: NUL inside", B("before\0after"));
    inj_value(&ctx, "value: NUL alone", B("\0"));
    {
        char big[16384];
        for (size_t i = 0; i < sizeof big - 1; i++)
            big[i] = "';\\\"-x"[i % 6];
        big[sizeof big - 1] = '\0';
        inj_value(&ctx, "value: 16 kB of quotes and backslashes", cstr(big));
    }
    inj_cols(&ctx, "value: JSON null is SQL NULL", INJ_STORED,
             "{\"name\": \"nn\", \"price\": null, \"note\": null, \"doc\": null}",
             "SELECT (price IS NULL AND note IS NULL AND doc IS NULL)::text FROM public.items"
             " WHERE id = $1::bigint",
             "true");
    inj_cols(&ctx, "value: numeric in text form", INJ_STORED,
             "{\"name\": \"p\", \"price\": \"1.50\", \"note\": null, \"doc\": null}",
             "SELECT price::text FROM public.items WHERE id = $1::bigint", "1.50");
    inj_cols(&ctx, "value: numeric as JSON integer", INJ_STORED,
             "{\"name\": \"p\", \"price\": 3, \"note\": null, \"doc\": null}",
             "SELECT price::text FROM public.items WHERE id = $1::bigint", "3");
    inj_cols(&ctx, "value: numeric ; DROP TABLE", INJ_REJECT,
             "{\"name\": \"p\", \"price\": \"1.50; DROP TABLE public.canary\", \"note\": null,"
             " \"doc\": null}",
             NULL, NULL);
    inj_cols(&ctx, "value: numeric 'abc'", INJ_REJECT,
             "{\"name\": \"p\", \"price\": \"abc\", \"note\": null, \"doc\": null}", NULL, NULL);
    inj_cols(&ctx, "value: jsonb with hostile strings", INJ_STORED,
             "{\"name\": \"j\", \"price\": null, \"note\": null,"
             " \"doc\": {\"a\": \"'); DROP TABLE public.canary; --\", \"b\\\"\": [1, \"x\\\\y\"]}}",
             "SELECT doc::text FROM public.items WHERE id = $1::bigint",
             "{\"a\": \"'); DROP TABLE public.canary; --\", \"b\\\"\": [1, \"x\\\\y\"]}");
    inj_cols(&ctx, "value: jsonb string", INJ_STORED,
             "{\"name\": \"j\", \"price\": null, \"note\": null, \"doc\": \"'; --\"}",
             "SELECT doc::text FROM public.items WHERE id = $1::bigint", "\"'; --\"");

    /* An update whose base and cols carry hostile text too. */
    {
        long long id = ctx.id - 1; /* the jsonb string row, name "j" */
        char key[64];
        snprintf(key, sizeof key, "{\"id\": %lld}", id);
        jbuf b = {0};
        jb_addf(&b, "[");
        jb_op(&b, "inj", 1, ctx.seq, hlc_next(), "update", B("public.items"), key,
              "{\"name\": \"x'); DELETE FROM public.canary; --\"}", "{\"name\": \"j\"}");
        jb_addf(&b, "]");
        char want[64];
        snprintf(want, sizeof want, "%lld:applied", ctx.seq);
        apply_check("inj", 1, b.p, want);
        jb_free(&b);
        expect_sql("x'); DELETE FROM public.canary; --",
                   "SELECT name FROM public.items WHERE id = %lld", id);
        ctx.seq++;
    }

    /* A peer limited to public.other. */
    inj_ctx p2 = {.peer = "p2", .seq = 1, .id = 500000};
    inj_table(&p2, "p2: public.items (not allowed)", INJ_REJECT, B("public.items"));
    {
        char key[64], cols[64], want[32];
        snprintf(key, sizeof key, "{\"id\": %lld}", p2.id);
        snprintf(cols, sizeof cols, "{\"id\": %lld, \"v\": \"o%lld\"}", p2.id, p2.id);
        snprintf(want, sizeof want, "o%lld", p2.id);
        inj_run(&p2, "p2: public.other (allowed)", INJ_STORED, "insert", B("public.other"), key,
                cols, "SELECT v FROM public.other WHERE id = $1::bigint", cstr(want));
    }
    inj_table(&p2, "p2: public.canary (not synced)", INJ_REJECT, B("public.canary"));
    expect_sql("0", "SELECT count(*) FROM public.items WHERE id >= 500000");

    /* Nothing ran as SQL: the canary and every relation are as they were,
     * and the ledgers agree with what the calls said. */
    expect_sql("1:one,2:two,3:three",
               "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM public.canary");
    expect_sql(rels_before, "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class"
                            " WHERE relnamespace IN ('public'::regnamespace,"
                            " 'softadastra'::regnamespace)");
    sa_free(rels_before);
    char want[32];
    snprintf(want, sizeof want, "%d", ctx.n_rejected);
    expect_sql(want, "SELECT count(*) FROM softadastra.rejections WHERE peer = 'inj'");
    snprintf(want, sizeof want, "%d", p2.n_rejected);
    expect_sql(want, "SELECT count(*) FROM softadastra.rejections WHERE peer = 'p2'");
    snprintf(want, sizeof want, "%lld", ctx.seq - 1);
    expect_sql(want, "SELECT applied_seq FROM softadastra.peer_progress"
                     " WHERE peer = 'inj' AND epoch = 1");
    expect_sql("0", "SELECT count(*) FROM softadastra.conflicts WHERE origin IN ('inj', 'p2')");
    printf("# injection: %d cases: %d rejected, %d stored literally, %d refused by jsonb input"
           " (\\u0000); peer p2: %d rejected, %d stored\n",
           ctx.n_cases + p2.n_cases, ctx.n_rejected, ctx.n_stored, ctx.n_nul_refused, p2.n_rejected,
           p2.n_stored);
    g.ok = 1;
}

/* ---------------------------------------------------------------------
 * a. concurrency: forked workers, each with its own connection
 * ------------------------------------------------------------------- */

enum { ST_NONE, ST_APPLIED, ST_CONFLICT, ST_DUPLICATE, ST_GAP, ST_REJECTED, ST_OTHER, ST_N };
static const char *const st_name[ST_N] = {"none", "applied",  "conflict", "duplicate",
                                          "gap",  "rejected", "other"};

#define WORKER_MAX 8
#define WORKER_TRIES 5 /* attempts per batch when the call fails */

/* What a worker sends: batches (JSON arrays) of one peer, epoch, whose ops
 * have seqs 1..nops. */
typedef struct worker {
    const char *peer;
    long long epoch;
    int nbatches;
    char **batches;
    long nops;
    int plain;            /* batches are plain SQL (PQexec), not apply_ops */
    int tries;            /* attempts per batch; 0: WORKER_TRIES */
    const char *init_sql; /* run once after connecting, or NULL */
} worker;

/* What a worker reports back through its pipe (followed by nops status
 * bytes, indexed by seq - 1). */
typedef struct worker_result {
    int reported;
    int connect_failed;
    long calls, errors, deadlocks, gave_up, bad_rows;
    long counts[ST_N];
    char first_error[400];
} worker_result;

static int status_code(const char *s)
{
    for (int i = 1; i < ST_OTHER; i++)
        if (strcmp(s, st_name[i]) == 0)
            return i;
    return ST_OTHER;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The child's whole life: connect, wait for the start signal (EOF on
 * go_fd), send every batch (retrying a failed call), report, _exit.  It
 * never touches the parent's connections or the harness. */
static void worker_main(const worker *w, const char *conninfo, int go_fd, int out_fd, int step_fd,
                        int ack_fd) __attribute__((noreturn));
static void worker_main(const worker *w, const char *conninfo, int go_fd, int out_fd, int step_fd,
                        int ack_fd)
{
    worker_result res;
    memset(&res, 0, sizeof res);
    res.reported = 1;
    unsigned char *st = sa_calloc((size_t)w->nops + 1, 1);
    PGconn *c = PQconnectdb(conninfo);
    if (st == NULL || PQstatus(c) != CONNECTION_OK) {
        res.connect_failed = 1;
        snprintf(res.first_error, sizeof res.first_error, "connect: %s", PQerrorMessage(c));
    }
    if (!res.connect_failed && w->init_sql != NULL) {
        PGresult *r = PQexec(c, w->init_sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            res.connect_failed = 1;
            snprintf(res.first_error, sizeof res.first_error, "%s: %s", w->init_sql,
                     PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    char dummy;
    while (read(go_fd, &dummy, 1) < 0 && errno == EINTR)
        ;
    for (int b = 0; b < w->nbatches; b++) {
        if (step_fd >= 0 && read_all(step_fd, &dummy, 1) != 0)
            break; /* the parent stopped the run */
        int done = 0;
        int tries = w->tries > 0 ? w->tries : WORKER_TRIES;
        for (int t = 0; t < tries && !done && !res.connect_failed; t++) {
            PGresult *r = w->plain ? PQexec(c, w->batches[b])
                                   : apply_raw(c, w->peer, w->epoch, w->batches[b]);
            res.calls++;
            if (w->plain &&
                (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)) {
                done = 1;
            } else if (!w->plain && PQresultStatus(r) == PGRES_TUPLES_OK) {
                for (int i = 0; i < PQntuples(r); i++) {
                    long seq = atol(PQgetvalue(r, i, 0));
                    int code = status_code(PQgetvalue(r, i, 1));
                    res.counts[code]++;
                    if (seq < 1 || seq > w->nops || st[seq - 1] != ST_NONE)
                        res.bad_rows++;
                    else
                        st[seq - 1] = (unsigned char)code;
                }
                done = 1;
            } else {
                const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                res.errors++;
                if (state != NULL && strcmp(state, "40P01") == 0)
                    res.deadlocks++;
                if (res.first_error[0] == '\0')
                    snprintf(res.first_error, sizeof res.first_error, "[%s] %s",
                             state ? state : "?", PQresultErrorMessage(r));
                if (PQstatus(c) != CONNECTION_OK)
                    PQreset(c);
            }
            PQclear(r);
        }
        if (!done)
            res.gave_up++;
        if (ack_fd >= 0 && write_all(ack_fd, "+", 1) != 0)
            break;
    }
    int rc = write_all(out_fd, &res, sizeof res);
    if (rc == 0 && st != NULL)
        rc = write_all(out_fd, st, (size_t)w->nops);
    PQfinish(c);
    sa_free(st);
    _exit(rc == 0 ? 0 : 1);
}

/*
 * Run n workers at once: fork them, let them connect, release them
 * together, collect their reports.  lockstep: every worker sends its
 * batch k only once all have finished batch k - 1, so the k-th batches
 * race each other (all workers then have the same nbatches).  res[i] and
 * stat[i] (nops bytes, caller frees with sa_free) are filled for each; a
 * worker that died without reporting has res[i].reported == 0.
 */
static void run_workers(const worker *w, int n, int lockstep, worker_result *res,
                        unsigned char **stat)
{
    assert_true(n <= WORKER_MAX);
    int go[2];
    assert_int_equal(pipe(go), 0);
    int out[WORKER_MAX], step[WORKER_MAX], ack[WORKER_MAX];
    pid_t pid[WORKER_MAX];
    const char *conninfo = sa_pgh_conninfo(g.pg);
    fflush(stdout);
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN); /* a dead worker's step pipe */
    for (int i = 0; i < n; i++) {
        int p[2], st[2] = {-1, -1}, ak[2] = {-1, -1};
        assert_int_equal(pipe(p), 0);
        if (lockstep) {
            assert_int_equal(w[i].nbatches, w[0].nbatches);
            assert_int_equal(pipe(st), 0);
            assert_int_equal(pipe(ak), 0);
        }
        pid[i] = fork();
        assert_true(pid[i] >= 0);
        if (pid[i] == 0) {
            close(go[1]);
            close(p[0]);
            if (lockstep) {
                close(st[1]);
                close(ak[0]);
            }
            for (int k = 0; k < i; k++) {
                close(out[k]);
                if (lockstep) {
                    close(step[k]);
                    close(ack[k]);
                }
            }
            worker_main(&w[i], conninfo, go[0], p[1], st[0], ak[1]);
        }
        close(p[1]);
        out[i] = p[0];
        if (lockstep) {
            close(st[0]);
            close(ak[1]);
            step[i] = st[1];
            ack[i] = ak[0];
        }
    }
    close(go[0]);
    /* Give every worker time to connect, then release them at once. */
    usleep(300 * 1000);
    close(go[1]);
    if (lockstep) {
        int alive = 1;
        for (int b = 0; b < w[0].nbatches && alive; b++) {
            for (int i = 0; i < n; i++)
                alive &= write_all(step[i], "+", 1) == 0;
            char c;
            for (int i = 0; i < n && alive; i++)
                alive &= read_all(ack[i], &c, 1) == 0;
        }
        for (int i = 0; i < n; i++) {
            close(step[i]);
            close(ack[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        stat[i] = sa_calloc((size_t)w[i].nops + 1, 1);
        assert_non_null(stat[i]);
        if (read_all(out[i], &res[i], sizeof res[i]) != 0 ||
            read_all(out[i], stat[i], (size_t)w[i].nops) != 0)
            res[i].reported = 0;
        close(out[i]);
    }
    for (int i = 0; i < n; i++) {
        int status = 0;
        while (waitpid(pid[i], &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            res[i].reported = 0;
    }
    signal(SIGPIPE, old_pipe);
}

static void worker_free(worker *w)
{
    for (int b = 0; b < w->nbatches; b++)
        sa_free(w->batches[b]);
    sa_free(w->batches);
    w->batches = NULL;
}

/* Print a worker's report; fail on a missing report, a failed call (any
 * error, a deadlock included, escaped to the client) or a malformed row.
 * allow_40p01: failed calls are fine if every one was SQLSTATE 40P01 and
 * the batch then went through on a retry. */
static void check_worker(const char *what, const worker *w, const worker_result *r, int allow_40p01)
{
    printf("# %s: %s: %ld calls, %ld errors (%ld deadlocks)", what, w->peer, r->calls, r->errors,
           r->deadlocks);
    for (int s = 1; s < ST_N; s++)
        if (r->counts[s] != 0)
            printf(", %ld %s", r->counts[s], st_name[s]);
    printf("\n");
    if (!r->reported)
        fail_msg("%s: worker for %s died without reporting", what, w->peer);
    if (r->connect_failed)
        fail_msg("%s: worker for %s: %s", what, w->peer, r->first_error);
    if (r->errors != 0 && !(allow_40p01 && r->errors == r->deadlocks && r->gave_up == 0))
        fail_msg("%s: %ld apply_ops call(s) of %s failed at the client (%ld deadlocks,"
                 " %ld batches given up); first: %s",
                 what, r->errors, w->peer, r->deadlocks, r->gave_up, r->first_error);
    if (r->bad_rows != 0)
        fail_msg("%s: %s: %ld result rows with an unknown or repeated seq", what, w->peer,
                 r->bad_rows);
}

/* (i) Two peers, disjoint columns of the same 50 rows, correct bases:
 * every op applies, both edits are in every row, no conflict. */
static void test_pgext_apply_concurrent_disjoint(void **state)
{
    (void)state;
    need_cluster();
    enum { ROWS = 50, ROUNDS = 20 };
    sql_do("CREATE TABLE public.cc (id bigint PRIMARY KEY, a bigint NOT NULL,"
           " b bigint NOT NULL);"
           "INSERT INTO public.cc SELECT i, 0, 0 FROM generate_series(1, %d) i;"
           "SELECT softadastra.add_table('public.cc');"
           "SELECT softadastra.create_peer('cc_a');"
           "SELECT softadastra.create_peer('cc_b')",
           ROWS);
    const char *peers[2] = {"cc_a", "cc_b"};
    const char *colname[2] = {"a", "b"};
    worker w[2];
    for (int p = 0; p < 2; p++) {
        w[p] = (worker){.peer = peers[p], .epoch = 1, .nbatches = ROUNDS, .nops = ROWS * ROUNDS};
        w[p].batches = sa_calloc(ROUNDS, sizeof(char *));
        long long seq = 1;
        for (int r = 1; r <= ROUNDS; r++) {
            jbuf b = {0};
            jb_addf(&b, "[");
            for (int id = 1; id <= ROWS; id++) {
                char key[64], cols[64], base[64];
                snprintf(key, sizeof key, "{\"id\": %d}", id);
                snprintf(cols, sizeof cols, "{\"%s\": %d}", colname[p], r);
                snprintf(base, sizeof base, "{\"%s\": %d}", colname[p], r - 1);
                jb_op(&b, peers[p], 1, seq++, hlc_next(), "update", B("public.cc"), key, cols,
                      base);
            }
            jb_addf(&b, "]");
            w[p].batches[r - 1] = b.p;
        }
    }
    worker_result res[2];
    unsigned char *stat[2];
    run_workers(w, 2, 0, res, stat);
    for (int p = 0; p < 2; p++) {
        check_worker("disjoint columns", &w[p], &res[p], 0);
        for (long s = 0; s < w[p].nops; s++)
            if (stat[p][s] != ST_APPLIED)
                fail_msg("disjoint columns: %s seq %ld: status %s, want applied", peers[p], s + 1,
                         st_name[stat[p][s]]);
        sa_free(stat[p]);
        worker_free(&w[p]);
    }
    char want[32];
    snprintf(want, sizeof want, "%d|%d|%d", ROWS, ROUNDS, ROUNDS);
    expect_sql(want, "SELECT count(*), min(a), min(b) FROM public.cc WHERE a = %d AND b = %d",
               ROUNDS, ROUNDS);
    expect_sql("0", "SELECT count(*) FROM softadastra.conflicts WHERE origin IN ('cc_a', 'cc_b')");
    snprintf(want, sizeof want, "cc_a|%d,cc_b|%d", ROWS * ROUNDS, ROWS * ROUNDS);
    expect_sql(want, "SELECT string_agg(peer || '|' || applied_seq, ',' ORDER BY peer)"
                     " FROM softadastra.peer_progress WHERE peer IN ('cc_a', 'cc_b')"
                     " AND epoch = 1");
    g.ok = 1;
}

/* The inserts of seqs lo..hi (ids = seqs) of peer dp as one batch; the
 * same seq always gives the very same op (hlcs[seq]). */
static char *dup_window(long lo, long hi, const long long *hlcs)
{
    jbuf b = {0};
    jb_addf(&b, "[");
    for (long q = lo; q <= hi; q++) {
        char key[64], cols[64];
        snprintf(key, sizeof key, "{\"id\": %ld}", q);
        snprintf(cols, sizeof cols, "{\"id\": %ld, \"v\": \"v%ld\"}", q, q);
        jb_op(&b, "dp", 1, q, hlcs[q], "insert", B("public.dup"), key, cols, NULL);
    }
    jb_addf(&b, "]");
    return b.p;
}

/* (ii) The same batches of one peer+epoch sent by three sessions at once
 * (in lockstep: batch k leaves all three together), and by a fourth whose
 * batches straddle theirs (seqs 1-50, 51-150, ..., 851-1000), so a batch is
 * part duplicate, part new: each op is applied by exactly one session, the
 * others see it as a duplicate, and no gap is ever reported. */
static void test_pgext_apply_concurrent_same_batch(void **state)
{
    (void)state;
    need_cluster();
    enum { SESSIONS = 4, BATCHES = 10, PER = 100 };
    sql_do("CREATE TABLE public.dup (id bigint PRIMARY KEY, v text NOT NULL);"
           "SELECT softadastra.add_table('public.dup');"
           "SELECT softadastra.create_peer('dp')");
    long long hlcs[BATCHES * PER + 1];
    for (long q = 1; q <= BATCHES * PER; q++)
        hlcs[q] = hlc_next();
    char **batches = sa_calloc(BATCHES, sizeof(char *));
    char **straddle = sa_calloc(BATCHES, sizeof(char *));
    for (int k = 0; k < BATCHES; k++) {
        batches[k] = dup_window((long)k * PER + 1, (long)(k + 1) * PER, hlcs);
        straddle[k] =
            dup_window(k == 0 ? 1 : (long)k * PER - PER / 2 + 1,
                       k == BATCHES - 1 ? (long)BATCHES * PER : (long)k * PER + PER / 2, hlcs);
    }
    worker w[SESSIONS];
    for (int s = 0; s < SESSIONS; s++)
        w[s] = (worker){.peer = "dp",
                        .epoch = 1,
                        .nbatches = BATCHES,
                        .batches = s == SESSIONS - 1 ? straddle : batches,
                        .nops = BATCHES * PER};
    worker_result res[SESSIONS];
    unsigned char *stat[SESSIONS];
    run_workers(w, SESSIONS, 1, res, stat);
    for (int s = 0; s < SESSIONS; s++)
        check_worker("same batch", &w[s], &res[s], 0);
    for (long q = 0; q < BATCHES * PER; q++) {
        int applied = 0, dup = 0;
        for (int s = 0; s < SESSIONS; s++) {
            applied += stat[s][q] == ST_APPLIED;
            dup += stat[s][q] == ST_DUPLICATE;
        }
        if (applied != 1 || dup != SESSIONS - 1) {
            for (int s = 0; s < SESSIONS; s++)
                printf("  session %d: seq %ld %s\n", s, q + 1, st_name[stat[s][q]]);
            fail_msg("same batch: seq %ld applied by %d sessions, duplicate in %d; want 1 and %d",
                     q + 1, applied, dup, SESSIONS - 1);
        }
    }
    for (int s = 0; s < SESSIONS; s++)
        sa_free(stat[s]);
    for (int k = 0; k < BATCHES; k++) {
        sa_free(batches[k]);
        sa_free(straddle[k]);
    }
    sa_free(batches);
    sa_free(straddle);
    char want[32];
    snprintf(want, sizeof want, "%d", BATCHES * PER);
    expect_sql(want, "SELECT count(*) FROM public.dup WHERE v = 'v' || id");
    expect_sql(want, "SELECT applied_seq FROM softadastra.peer_progress"
                     " WHERE peer = 'dp' AND epoch = 1");
    expect_sql("0", "SELECT count(*) FROM softadastra.conflicts WHERE origin = 'dp'");
    g.ok = 1;
}

/* (iii) Three peers update the same column of the same rows, each batch in
 * its own random row order, each op's base being what that peer last
 * wrote.  Every op must be applied or a conflict (with a conflicts row),
 * the final value of each row is the one of the op with the largest
 * (hlc, origin) — lww, whatever the arrival order — and no error reaches
 * a client. */
static void test_pgext_apply_concurrent_random(void **state)
{
    (void)state;
    need_cluster();
    rng_seed();
    enum { PEERS = 3, ROWS = 20, ROUNDS = 30 };
    sql_do("CREATE TABLE public.hot (id bigint PRIMARY KEY, n bigint NOT NULL);"
           "INSERT INTO public.hot SELECT i, 0 FROM generate_series(1, %d) i;"
           "SELECT softadastra.add_table('public.hot');"
           "SELECT softadastra.create_peer('hot1');"
           "SELECT softadastra.create_peer('hot2');"
           "SELECT softadastra.create_peer('hot3')",
           ROWS);
    const char *peers[PEERS] = {"hot1", "hot2", "hot3"};
    /* The winner so far of each row: its (hlc, origin) and value. */
    long long win_hlc[ROWS + 1] = {0}, win_val[ROWS + 1] = {0};
    int win_peer[ROWS + 1];
    for (int i = 0; i <= ROWS; i++)
        win_peer[i] = -1;
    long long t0 = hlc_next() >> 16; /* ms */
    worker w[PEERS];
    for (int p = 0; p < PEERS; p++) {
        w[p] = (worker){.peer = peers[p], .epoch = 1, .nbatches = ROUNDS, .nops = ROWS * ROUNDS};
        w[p].batches = sa_calloc(ROUNDS, sizeof(char *));
        long long own[ROWS + 1] = {0}; /* what this peer last wrote: its base */
        long long seq = 1;
        for (int r = 1; r <= ROUNDS; r++) {
            long order[ROWS];
            for (int i = 0; i < ROWS; i++)
                order[i] = i + 1;
            shuffle(order, ROWS);
            /* Each peer's clock grows with its seqs; rounds of different
             * peers overlap in time, so the winners vary. */
            long long ms = t0 + 50 + (long long)r * 10 + (long long)(rng_next() % 9);
            jbuf b = {0};
            jb_addf(&b, "[");
            for (int i = 0; i < ROWS; i++) {
                long id = order[i];
                long long v = (long long)(p + 1) * 1000000 + r * 1000 + id;
                long long hlc = ms << 16 | i;
                char key[64], cols[64], base[64];
                snprintf(key, sizeof key, "{\"id\": %ld}", id);
                snprintf(cols, sizeof cols, "{\"n\": %lld}", v);
                snprintf(base, sizeof base, "{\"n\": %lld}", own[id]);
                jb_op(&b, peers[p], 1, seq++, hlc, "update", B("public.hot"), key, cols, base);
                own[id] = v;
                if (hlc > win_hlc[id] ||
                    (hlc == win_hlc[id] && strcmp(peers[p], peers[win_peer[id]]) > 0)) {
                    win_hlc[id] = hlc;
                    win_val[id] = v;
                    win_peer[id] = p;
                }
            }
            jb_addf(&b, "]");
            w[p].batches[r - 1] = b.p;
        }
    }
    worker_result res[PEERS];
    unsigned char *stat[PEERS];
    run_workers(w, PEERS, 0, res, stat);
    long conflicts = 0;
    for (int p = 0; p < PEERS; p++) {
        check_worker("random order", &w[p], &res[p], 0);
        for (long s = 0; s < w[p].nops; s++)
            if (stat[p][s] != ST_APPLIED && stat[p][s] != ST_CONFLICT)
                fail_msg("random order: %s seq %ld: status %s, want applied or conflict", peers[p],
                         s + 1, st_name[stat[p][s]]);
        conflicts += res[p].counts[ST_CONFLICT];
        sa_free(stat[p]);
        worker_free(&w[p]);
    }
    char *resol = sql_text("SELECT coalesce(string_agg(kind || ' ' || resolution || ': ' || c,"
                           " ', '), 'none') FROM (SELECT kind, resolution, count(*) c"
                           " FROM softadastra.conflicts WHERE origin LIKE 'hot_'"
                           " GROUP BY 1, 2 ORDER BY 1, 2) x");
    printf("# random order: %ld conflicts (%s)\n", conflicts, resol);
    sa_free(resol);
    char want[64];
    snprintf(want, sizeof want, "%ld", conflicts);
    expect_sql(want, "SELECT count(*) FROM softadastra.conflicts WHERE origin LIKE 'hot_'");
    jbuf b = {0};
    jb_addf(&b, "%s", "");
    for (int id = 1; id <= ROWS; id++)
        jb_addf(&b, "%s%d:%lld", id > 1 ? "," : "", id, win_val[id]);
    expect_sql(b.p, "SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM public.hot");
    jb_free(&b);
    snprintf(want, sizeof want, "%d,%d,%d", ROWS * ROUNDS, ROWS * ROUNDS, ROWS * ROUNDS);
    expect_sql(want, "SELECT string_agg(applied_seq::text, ',' ORDER BY peer)"
                     " FROM softadastra.peer_progress WHERE peer LIKE 'hot_' AND epoch = 1");
    g.ok = 1;
}

/* How many server log lines hold needle. */
static long log_count(const char *needle)
{
    FILE *f = fopen(sa_pgh_logfile(g.pg), "r");
    if (f == NULL)
        return -1;
    long n = 0;
    char line[4096];
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* (iv) Two peers editing disjoint columns of the same rows through
 * apply_ops, in random row orders, while plain SQL updates a third column
 * of those rows in its own random orders in multi-row transactions.  Plain
 * SQL does not take apply_ops' advisory locks, so real deadlocks happen
 * (deadlock_timeout is 10 ms in every session, to find them fast).  The
 * plain session may be their victim; apply_ops retries its ops a bounded
 * number of times (pgext/apply.c, LOCKING) and may then fail the call with
 * SQLSTATE 40P01 — so here, unlike (i)-(iii), a failed call is allowed if
 * it is 40P01, it changed nothing (the retry's statuses are all 'applied',
 * never 'duplicate') and a retry went through; how many is printed.  Every
 * edit of the three writers survives. */
static void test_pgext_apply_concurrent_plain_sql(void **state)
{
    (void)state;
    need_cluster();
    rng_seed();
    enum { ROWS = 30, ROUNDS = 40 };
    sql_do("CREATE TABLE public.mix (id bigint PRIMARY KEY, a bigint NOT NULL,"
           " b bigint NOT NULL, m bigint NOT NULL);"
           "INSERT INTO public.mix SELECT i, 0, 0, 0 FROM generate_series(1, %d) i;"
           "SELECT softadastra.add_table('public.mix');"
           "SELECT softadastra.create_peer('mx_a');"
           "SELECT softadastra.create_peer('mx_b')",
           ROWS);
    const char *init = "SET deadlock_timeout = '10ms'";
    const char *peers[2] = {"mx_a", "mx_b"};
    const char *colname[2] = {"a", "b"};
    worker w[3];
    for (int p = 0; p < 3; p++) {
        w[p] = (worker){.peer = p < 2 ? peers[p] : "plain SQL",
                        .epoch = 1,
                        .nbatches = ROUNDS,
                        .nops = p < 2 ? ROWS * ROUNDS : 0,
                        .plain = p == 2,
                        .tries = 200, /* deadlock victims retry, like the bridge */
                        .init_sql = init};
        w[p].batches = sa_calloc(ROUNDS, sizeof(char *));
        long long seq = 1;
        for (int r = 1; r <= ROUNDS; r++) {
            long order[ROWS];
            for (int i = 0; i < ROWS; i++)
                order[i] = i + 1;
            shuffle(order, ROWS);
            jbuf b = {0};
            if (p < 2)
                jb_addf(&b, "[");
            for (int i = 0; i < ROWS; i++) {
                if (p == 2) {
                    /* One implicit transaction; short sleeps widen the
                     * windows in which the sessions interleave. */
                    jb_addf(&b, "UPDATE public.mix SET m = %d WHERE id = %ld;%s", r, order[i],
                            i % 6 == 5 ? " SELECT pg_sleep(0.001);" : "");
                    continue;
                }
                char key[64], cols[64], base[64];
                snprintf(key, sizeof key, "{\"id\": %ld}", order[i]);
                snprintf(cols, sizeof cols, "{\"%s\": %d}", colname[p], r);
                snprintf(base, sizeof base, "{\"%s\": %d}", colname[p], r - 1);
                jb_op(&b, peers[p], 1, seq++, hlc_next(), "update", B("public.mix"), key, cols,
                      base);
            }
            if (p < 2)
                jb_addf(&b, "]");
            w[p].batches[r - 1] = b.p;
        }
    }
    long dl0 = log_count("ERROR:  deadlock detected");
    worker_result res[3];
    unsigned char *stat[3];
    run_workers(w, 3, 0, res, stat);
    long dl = log_count("ERROR:  deadlock detected") - dl0;
    printf("# with plain SQL: %ld deadlocks reached the plain SQL client (%ld in the server"
           " log); apply_ops calls failing with 40P01 at the client: %s %ld of %ld, %s %ld of"
           " %ld (first: %s)\n",
           res[2].deadlocks, dl, peers[0], res[0].deadlocks, res[0].calls, peers[1],
           res[1].deadlocks, res[1].calls,
           res[0].first_error[0] ? res[0].first_error : res[1].first_error);
    for (int p = 0; p < 2; p++) {
        check_worker("with plain SQL", &w[p], &res[p], 1);
        for (long q = 0; q < w[p].nops; q++)
            if (stat[p][q] != ST_APPLIED)
                fail_msg("with plain SQL: %s seq %ld: status %s, want applied", peers[p], q + 1,
                         st_name[stat[p][q]]);
    }
    if (!res[2].reported || res[2].connect_failed)
        fail_msg("with plain SQL: the plain SQL worker failed: %s", res[2].first_error);
    if (res[2].gave_up != 0)
        fail_msg("with plain SQL: plain SQL gave up %ld transactions (%s)", res[2].gave_up,
                 res[2].first_error);
    for (int p = 0; p < 3; p++) {
        sa_free(stat[p]);
        worker_free(&w[p]);
    }
    char want[64];
    snprintf(want, sizeof want, "%d", ROWS);
    expect_sql(want, "SELECT count(*) FROM public.mix WHERE a = %d AND b = %d AND m = %d", ROUNDS,
               ROUNDS, ROUNDS);
    expect_sql("0", "SELECT count(*) FROM softadastra.conflicts WHERE origin IN ('mx_a', 'mx_b')");
    g.ok = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pgext_apply_gap_epoch, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_pgext_apply_injection, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_pgext_apply_concurrent_disjoint, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_pgext_apply_concurrent_same_batch, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_pgext_apply_concurrent_random, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_pgext_apply_concurrent_plain_sql, test_setup,
                                        test_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
