/*
 * bench/roundtrip.c — bench_roundtrip: the up path end to end.  Edges
 * (libsa_edge, in this process) write while offline, then sync through one
 * sa-bridge whose applier writes their ops into PostgreSQL with
 * softadastra.apply_ops; how many ops a second reach PostgreSQL and come
 * back confirmed, and how long one write takes to get there and back,
 * next to (a) the same rows written directly with batched SQL and (b)
 * PostgreSQL's own logical replication applying the same rows into a
 * second cluster, all measured in the same run.
 *
 * Method (two throwaway PostgreSQL 15 clusters from the test harness; the
 * first, "the publisher", has the softadastra extension and the bridge; the
 * second, "the subscriber", is only for reference (b)):
 *
 *   setup    per shape s (0: inserts, 1: updates, 2: updates with 10%
 *            conflicts), three tables of the same shape (id bigint primary
 *            key, name text, price numeric, note text; about 100 bytes a
 *            row) on the publisher: rt_s, synced (softadastra.add_table,
 *            lww), written by the edges; plain_s, written by batched SQL;
 *            lr_s, in publication bench_lr, replicated to the subscriber's
 *            lr_s by subscription bench_sub.  For the update shapes all
 *            three hold the same --ops seed rows (ids 1..N) before the
 *            bridge starts (it copies them) and before the subscription is
 *            created (it copies them too).  One peer per (shape, edge),
 *            allowed only its shape's table; one sa-bridge (defaults:
 *            durability group, --listen 127.0.0.1:0, the port read from its
 *            log as bench/fanout.c does), waited for until it streams;
 *            --edges E edge stores (own data directories, durable RocksDB
 *            writes as in production) per shape, each bootstrapped with
 *            sa_edge_sync_once(wait 0) and then left offline.
 *   ops      the same N rows on every side.  inserts: N new rows, every
 *            column.  updates: name and price of the N seed rows change.
 *            Edge k of E writes the ids i with i % E == k.  10% conflicts:
 *            after the edges bootstrapped, plain SQL changes the name of
 *            every row with id % 10 == 0 in rt_2; the edges' updates of
 *            those rows carry the old name as base, so apply_ops records an
 *            update_differ conflict for each (the edge's HLC is newer, so
 *            lww applies it: the row still changes and comes back).
 *   ours     the N ops are written locally (sa_edge_put, each durable) with
 *            every edge offline; not timed, but reported as local writes/s.
 *            t0 (CLOCK_REALTIME) is read, then one thread per edge runs
 *            sa_edge_follow (push in batches of --batch ops, outcomes, long
 *            polls).  The main thread reads every edge's status each
 *            millisecond until each edge's confirmed = its last seq (its
 *            ops came back in the change stream):
 *              accepted   the first read where every op was durable in
 *                         the bridge's inbox (status.accepted), ±1 ms;
 *              applied    the latest commit timestamp of the rows of rt_s
 *                         (pg_xact_commit_timestamp(xmin), the server's
 *                         wall clock, to the µs): the moment the last op's
 *                         transaction committed.  Exact: nothing else
 *                         writes those rows in the window;
 *              confirmed  the first read where every edge's confirmed
 *                         reached its last seq, ±1 ms (plus one status
 *                         read per edge).
 *            ops/s = N / (time - t0).  Checked afterwards: every row has
 *            the edges' values, peer_progress.applied_seq of every peer is
 *            its last seq, and rt_2 has exactly one conflict row per
 *            conflicting op.
 *   (a) SQL  the same rows into plain_s over one connection, libpq
 *            pipeline mode, one transaction per --batch rows: BEGIN, one
 *            PQsendQueryPrepared per row of
 *              INSERT INTO plain_s (id, name, price, note) VALUES ($1..$4)
 *              UPDATE plain_s SET name = $2, price = $3 WHERE id = $1
 *            COMMIT, PQpipelineSync, every result read before the next
 *            batch (as bench/apply.c).  Timed from the first BEGIN sent to
 *            the last COMMIT's result.
 *   (b) LR   catch-up of a backlog, the analogue of an offline edge
 *            syncing: ALTER SUBSCRIPTION bench_sub DISABLE, wait until its
 *            apply worker and walsender are gone, commit the same rows into
 *            the publisher's lr_s exactly as (a) does, then read t0 and
 *            ALTER SUBSCRIPTION ... ENABLE (the subscriber runs with
 *            wal_retrieve_retry_interval = 10ms, or the launcher would
 *            wait up to 5 s before it starts the worker again).  Done when
 *            the subscriber's row of the last batch has a new xmin: a
 *            thread with its own connection reads it every 2 ms (apply
 *            keeps the publisher's commit order, so every earlier row is
 *            there too; both tables are compared whole afterwards).
 *            Polled, not exact: on a subscriber, commit timestamps are the
 *            publisher's (the apply worker commits with its replication
 *            origin's timestamp), so they cannot say when a row arrived.
 *            Rows/s = N / (seen - t0), resolution 2 ms plus one query.
 *            Also, for the notes only, "live": the same batches committed
 *            with the subscription enabled (for inserts, N more ids), from
 *            the first BEGIN to the last row seen on the subscriber; it
 *            cannot be shorter than the publisher's commits.
 *   latency  after the throughput shapes: one more edge (its own peer and
 *            table rt_lat, empty) follows (sa_edge_follow in a thread);
 *            the main thread writes one new row every 1/--rate s (absolute
 *            schedule, default 20/s) for --seconds (default 15).  Per op:
 *              write       CLOCK_REALTIME when sa_edge_put returned (the op
 *                          is durable locally);
 *              applied     the commit timestamp of its row in rt_lat
 *                          (exact, µs);
 *              confirmed   the first status read showing confirmed >= its
 *                          seq, by a thread reading status every 1 ms:
 *                          resolution about 1 ms plus one status read.
 *            p50/p99 of applied - write and confirmed - write (and, to
 *            show where the time goes, of accepted - write: the op durable
 *            in the bridge's inbox, read by the same thread).  In the same
 *            loop, right after each edge write, one single-row INSERT
 *            (autocommit) into the publisher's lr_lat, replicated by the
 *            same subscription; its latency is the subscriber's column
 *            "arrived" (DEFAULT clock_timestamp(), set as the apply worker
 *            inserts the row, just before its commit) - the publisher's
 *            commit timestamp of the row (same machine clock, µs).
 *   report   one markdown table row per shape: ops/s applied (and
 *            confirmed), batched SQL ops/s, ratio = ours applied / SQL, LR
 *            catch-up rows/s, ratio = ours applied / LR; the target is a
 *            ratio >= 1.0 against LR.  Notes per shape; the latency line;
 *            the bridge's peak RSS (VmHWM over the whole run).
 *
 * Caveats, by design: the edges, the bridge, both clusters and this
 * process share the machine (2 cores here), so every figure is a ratio to a
 * reference measured in the same run.  The servers run with fsync=off
 * (harness default), so PostgreSQL commits cost little on every side; the
 * bridge and the edges fsync their RocksDB writes as in production.  The
 * bridge's applier sends at most 500 ops per apply_ops call (APPLIER_BATCH,
 * bridge/src/applier.h) whatever --batch says; --batch is the edges' push
 * batch and the references' transaction size.
 *
 * A benchmark, not a test: it exits 0 whatever the figures (2 if it could
 * not run, 77 if CREATE EXTENSION softadastra fails), unless --check asks
 * for 1 when a ratio against logical replication is below the target.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp, prctl */
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "bench_util.h"
#include "pg_harness.h"
#include "sa/sa_alloc.h"
#include "sa/sa_edge.h"

#define BENCH_SKIP 77    /* ctest's SKIP_RETURN_CODE */
#define BENCH_TARGET 1.0 /* ours / logical replication, applied ops/s */
#define BENCH_MAX_EDGES 64
#define BENCH_START_TIMEOUT_S 120.0 /* the bridge's start and initial copy */
#define BENCH_LAT_DRAIN_S 60.0      /* after the last latency write */

enum { SH_INS, SH_UPD, SH_CONF, NSHAPE };
static const char *const shape_name[NSHAPE] = {"inserts, no conflicts", "updates, no conflicts",
                                               "updates, 10% conflicts"};

/* Every option, with its default set in opts_init. */
typedef struct bench_opts {
    long ops;           /* ops per shape; a multiple of 100 */
    int batch;          /* edge push batch; the references' rows per transaction */
    int edges;          /* edges per shape */
    double rate;        /* latency writes per second */
    double seconds;     /* latency phase length */
    double timeout;     /* longest wait for one shape's ops to come back */
    const char *dir;    /* parent of our scratch directory */
    const char *bridge; /* sa-bridge binary */
    int quick;          /* smoke run */
    int check;          /* exit 1 below the target */
    int verbose;        /* progress on stderr */
} bench_opts;

static void opts_init(bench_opts *o)
{
    o->ops = 20000;
    o->batch = 500;
    o->edges = 1;
    o->rate = 20;
    o->seconds = 15;
    o->timeout = 600;
    o->dir = getenv("SA_TEST_TMPDIR") != NULL ? getenv("SA_TEST_TMPDIR") : "/tmp";
    o->bridge = SA_BRIDGE_BIN;
    o->quick = 0;
    o->check = 0;
    o->verbose = 0;
}

/* ---------------------------------------------------------------------
 * Process-wide state, so that die() can clean up whatever is live.
 * ------------------------------------------------------------------- */

static struct {
    sa_pgh *pub, *sub;  /* the clusters */
    PGconn *plain;      /* reference (a) */
    PGconn *pubw;       /* reference (b)'s writes on the publisher */
    pid_t bridge;       /* running sa-bridge, or 0 */
    char scratch[4096]; /* our scratch directory, or "" */
    char bridge_log[4200];
    int port;
    sa_edge *edges[NSHAPE][BENCH_MAX_EDGES];
    sa_edge *lat_edge;
    int verbose;
} g;

static void cleanup(void)
{
    for (int s = 0; s < NSHAPE; s++)
        for (int k = 0; k < BENCH_MAX_EDGES; k++) {
            sa_edge_close(g.edges[s][k]);
            g.edges[s][k] = NULL;
        }
    sa_edge_close(g.lat_edge);
    g.lat_edge = NULL;
    if (g.plain != NULL)
        PQfinish(g.plain);
    if (g.pubw != NULL)
        PQfinish(g.pubw);
    g.plain = g.pubw = NULL;
    bench_stop_child(&g.bridge, SIGTERM, 10000); /* 10 s, then SIGKILL */
    sa_pgh_stop(g.sub); /* first: its subscription's worker talks to pub */
    sa_pgh_stop(g.pub);
    g.sub = g.pub = NULL;
    if (g.scratch[0] != '\0')
        bench_rm_tree(g.scratch);
    g.scratch[0] = '\0';
}

/* Report why the benchmark cannot go on (with the tails of the logs),
 * clean up and exit 2.  Main thread only. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_roundtrip: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    bench_tail(g.bridge_log, "the bridge's log");
    bench_tail(g.pub != NULL ? sa_pgh_logfile(g.pub) : NULL, "the publisher's log");
    bench_tail(g.sub != NULL ? sa_pgh_logfile(g.sub) : NULL, "the subscriber's log");
    cleanup();
    exit(2);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    if (!g.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_roundtrip: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = sa_calloc(n, size);
    if (p == NULL)
        die("out of memory");
    return p;
}

/* ---------------------------------------------------------------------
 * SQL and the bridge process.
 * ------------------------------------------------------------------- */

/* Run SQL on a cluster's cached connection (main thread only); the text of
 * the last result (caller frees with sa_free), or die. */
static char *sql(sa_pgh *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sql(sa_pgh *h, const char *fmt, ...)
{
    char q[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    char *out = NULL;
    sa_err err;
    if (sa_pgh_exec(h, q, &out, &err) != 0)
        die("SQL failed: %s\n  %s", err.msg, q);
    return out;
}

#define SQL_DO(h, ...) sa_free(sql((h), __VA_ARGS__))

/* The first value of a one-value query as an integer. */
static long long sql_ll(sa_pgh *h, const char *q)
{
    char *t = sql(h, "%s", q);
    long long v = strtoll(t, NULL, 10);
    sa_free(t);
    return v;
}

static PGconn *connect_or_die(sa_pgh *h)
{
    PGconn *c = PQconnectdb(sa_pgh_conninfo(h));
    if (PQstatus(c) != CONNECTION_OK)
        die("connect: %s", PQerrorMessage(c));
    return c;
}

/* Start argv[0] with stdout and stderr appended to log.  The child gets
 * SIGKILL if we die, so nothing outlives the benchmark.  (As in
 * bench/fanout.c.) */
static pid_t spawn(const char *const *argv, const char *log)
{
    pid_t pid = bench_spawn(argv, log, -1);
    if (pid < 0)
        die("fork: %s", strerror(errno));
    return pid;
}

/* The bridge still running?  Otherwise die with its exit status. */
static void bridge_alive(void)
{
    int status;
    if (g.bridge > 0 && waitpid(g.bridge, &status, WNOHANG) == g.bridge) {
        g.bridge = 0;
        die("sa-bridge exited (wait status %d)", status);
    }
}

static void start_bridge(const bench_opts *o)
{
    char data[4200];
    snprintf(data, sizeof data, "%s/bridge", g.scratch);
    const char *argv[] = {o->bridge,       "run",         "--pg",     sa_pgh_conninfo(g.pub),
                          "--data",        data,          "--listen", "127.0.0.1:0",
                          "--no-progress", "--log-level", "info",     NULL};
    g.bridge = spawn(argv, g.bridge_log);
    double t0 = bench_now_s();
    char rest[512];
    while (!bench_log_find(g.bridge_log, "streaming from slot", rest, sizeof rest)) {
        bridge_alive();
        if (bench_now_s() - t0 > BENCH_START_TIMEOUT_S)
            die("sa-bridge did not start streaming within %.0f s", BENCH_START_TIMEOUT_S);
        sleep_us(20000);
    }
    if (!bench_log_find(g.bridge_log, "HTTP API v1 listening on 127.0.0.1:", rest, sizeof rest) ||
        (g.port = atoi(rest)) <= 0)
        die("the bridge did not log its HTTP port");
}

/* ---------------------------------------------------------------------
 * The rows: the same values on every side.
 * ------------------------------------------------------------------- */

typedef struct rowvals {
    char id[24], name[64], price[24], note[96];
} rowvals;

/* Row id as seeded (update shapes) or as written by the measured ops. */
static void row_seed(long long id, rowvals *r)
{
    snprintf(r->id, sizeof r->id, "%lld", id);
    snprintf(r->name, sizeof r->name, "item %08lld standard", id);
    snprintf(r->price, sizeof r->price, "%lld.%02lld", 10 + id % 990, id % 100);
    snprintf(r->note, sizeof r->note,
             "restocked from warehouse %02lld, lot %08lld; handle with ordinary care", id % 97, id);
}

static void row_new(long long id, rowvals *r)
{
    row_seed(id, r);
    snprintf(r->name, sizeof r->name, "item %08lld revised", id);
    snprintf(r->price, sizeof r->price, "%lld.%02lld", 20 + id % 990, (id + 7) % 100);
}

static int shape_updates(int s)
{
    return s != SH_INS;
}

/* ---------------------------------------------------------------------
 * Batched SQL: reference (a), and the publisher's side of reference (b).
 * ------------------------------------------------------------------- */

static void prepare_or_die(PGconn *c, const char *name, const char *q)
{
    PGresult *r = PQprepare(c, name, q, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("prepare %s: %s", name, PQresultErrorMessage(r));
    PQclear(r);
}

/* Statements "i_TABLE" and "u_TABLE" on c for table. */
static void prepare_table(PGconn *c, const char *table)
{
    char name[64], q[256];
    snprintf(name, sizeof name, "i_%s", table);
    snprintf(q, sizeof q, "INSERT INTO public.%s (id, name, price, note) VALUES ($1, $2, $3, $4)",
             table);
    prepare_or_die(c, name, q);
    snprintf(name, sizeof name, "u_%s", table);
    snprintf(q, sizeof q, "UPDATE public.%s SET name = $2, price = $3 WHERE id = $1", table);
    prepare_or_die(c, name, q);
}

/* One pipeline result: want, then the NULL that ends it. */
static void pipe_expect(PGconn *c, ExecStatusType want, const char *what)
{
    PGresult *r = PQgetResult(c);
    if (r == NULL || PQresultStatus(r) != want)
        die("batched SQL %s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    if (want != PGRES_PIPELINE_SYNC && (r = PQgetResult(c)) != NULL)
        die("batched SQL %s: more than one result", what);
}

/*
 * Write rows ids first+1 .. first+n (row_new values) into table: inserts or
 * updates, batch rows per transaction, pipeline mode, one round trip per
 * batch.  Seconds from the first BEGIN sent to the last COMMIT's result;
 * *t0_us: the wall clock just before the first BEGIN.
 */
static double write_batches(PGconn *c, const char *table, int update, long long first, long n,
                            int batch, int64_t *t0_us)
{
    char stmt[64];
    snprintf(stmt, sizeof stmt, "%s_%s", update ? "u" : "i", table);
    rowvals *rv = xcalloc((size_t)n, sizeof *rv);
    for (long i = 0; i < n; i++)
        row_new(first + 1 + i, &rv[i]);
    if (PQenterPipelineMode(c) != 1)
        die("PQenterPipelineMode: %s", PQerrorMessage(c));
    if (t0_us != NULL)
        *t0_us = bench_now_rt_us();
    double t0 = bench_now_s();
    for (long b = 0; b < n; b += batch) {
        long end = b + batch < n ? b + batch : n;
        if (!PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0))
            die("send BEGIN: %s", PQerrorMessage(c));
        for (long i = b; i < end; i++) {
            const char *ins[4] = {rv[i].id, rv[i].name, rv[i].price, rv[i].note};
            const char *upd[3] = {rv[i].id, rv[i].name, rv[i].price};
            if (!PQsendQueryPrepared(c, stmt, update ? 3 : 4, update ? upd : ins, NULL, NULL, 0))
                die("send row: %s", PQerrorMessage(c));
        }
        if (!PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
            die("send COMMIT: %s", PQerrorMessage(c));
        if (PQpipelineSync(c) != 1)
            die("PQpipelineSync: %s", PQerrorMessage(c));
        pipe_expect(c, PGRES_COMMAND_OK, "BEGIN");
        for (long i = b; i < end; i++)
            pipe_expect(c, PGRES_COMMAND_OK, update ? "UPDATE" : "INSERT");
        pipe_expect(c, PGRES_COMMAND_OK, "COMMIT");
        pipe_expect(c, PGRES_PIPELINE_SYNC, "sync");
    }
    double t = bench_now_s() - t0;
    if (PQexitPipelineMode(c) != 1)
        die("PQexitPipelineMode: %s", PQerrorMessage(c));
    sa_free(rv);
    return t;
}

/* ---------------------------------------------------------------------
 * Reference (b): logical replication into the subscriber.
 * ------------------------------------------------------------------- */

/* The latest commit timestamp (µs since 1970) among table's rows on h, and
 * how many rows committed at or after since_us. */
static int64_t max_commit_us(sa_pgh *h, const char *table, int64_t since_us, long long *n_since)
{
    char *t = sql(h,
                  "SELECT coalesce(max(c), 0), count(*) FILTER (WHERE c >= %" PRId64 ") FROM "
                  "(SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint"
                  " AS c FROM public.%s) x",
                  since_us, table);
    long long m = 0, n = 0;
    if (sscanf(t, "%lld|%lld", &m, &n) != 2)
        die("unexpected answer \"%s\" for the commit times of %s", t, table);
    sa_free(t);
    if (n_since != NULL)
        *n_since = n;
    return m;
}

static void sub_wait_stopped(void)
{
    double t0 = bench_now_s();
    while (sql_ll(g.sub, "SELECT count(*) FROM pg_stat_subscription WHERE subname = 'bench_sub'"
                         " AND pid IS NOT NULL") > 0 ||
           sql_ll(g.pub, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_sub'"
                         " AND active") > 0) {
        if (bench_now_s() - t0 > 60)
            die("the subscription's worker did not stop");
        sleep_us(10000);
    }
}

/*
 * Watching the subscriber for one row's new version.  A subscriber's
 * commit timestamps are the publisher's (the apply worker commits with the
 * replication origin's timestamp), so they cannot say when a row arrived:
 * a thread with its own connection reads the row's xmin every
 * BENCH_WATCH_US and notes the wall clock when it differs from what it
 * was (absent counts as "").  Apply keeps the publisher's commit order, so
 * the last transaction's row being new means every row before it is.
 */
#define BENCH_WATCH_US 2000

typedef struct sub_watch {
    PGconn *c;
    char query[256];
    char before[32];
    double timeout;
    pthread_t thr;
    atomic_int stop;
    int64_t seen_us; /* 0: not seen */
    char error[256];
} sub_watch;

/* The row's xmin into out ("" when absent); 0, or -1 (error filled). */
static int watch_read(sub_watch *w, char *out, size_t cap)
{
    PGresult *r = PQexec(w->c, w->query);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(w->error, sizeof w->error, "%s", PQresultErrorMessage(r));
        rc = -1;
    } else {
        snprintf(out, cap, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    }
    PQclear(r);
    return rc;
}

static void *watch_main(void *p)
{
    sub_watch *w = p;
    double t0 = bench_now_s();
    char now[32];
    while (!atomic_load(&w->stop) && w->error[0] == '\0') {
        if (watch_read(w, now, sizeof now) != 0)
            break;
        if (strcmp(now, w->before) != 0) {
            w->seen_us = bench_now_rt_us();
            break;
        }
        if (bench_now_s() - t0 > w->timeout) {
            snprintf(w->error, sizeof w->error, "not there after %.0f s", w->timeout);
            break;
        }
        sleep_us(BENCH_WATCH_US);
    }
    return NULL;
}

/* Note the subscriber's row `id` of table as it is now, and start
 * watching it for a new version. */
static void watch_start(sub_watch *w, double timeout, const char *table, long long id)
{
    memset(w, 0, sizeof *w);
    w->c = connect_or_die(g.sub);
    snprintf(w->query, sizeof w->query, "SELECT xmin::text FROM public.%s WHERE id = %lld", table,
             id);
    w->timeout = timeout;
    if (watch_read(w, w->before, sizeof w->before) != 0)
        die("watching %s: %s", table, w->error);
    if (pthread_create(&w->thr, NULL, watch_main, w) != 0)
        die("cannot start a watcher thread");
}

/* Wait for the watcher; the wall clock when the row was new. */
static int64_t watch_end(sub_watch *w, const char *what)
{
    pthread_join(w->thr, NULL);
    PQfinish(w->c);
    w->c = NULL;
    if (w->seen_us == 0)
        die("%s: the subscriber's last row: %s", what, w->error);
    return w->seen_us;
}

/* The publisher's and the subscriber's table hold the same rows. */
static void lr_verify(const char *table)
{
    const char *q = "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || '|' || name || '|' ||"
                    " price || '|' || note, ',' ORDER BY id)), '') FROM public.%s";
    char *a = sql(g.pub, q, table), *b = sql(g.sub, q, table);
    if (strcmp(a, b) != 0)
        die("logical replication: %s differs: publisher %s, subscriber %s", table, a, b);
    sa_free(a);
    sa_free(b);
}

typedef struct lr_result {
    double catchup_s; /* backlog: ENABLE to the subscriber's last row */
    double publish_s; /* backlog: committing the rows on the publisher */
    double live_s;    /* live: first BEGIN to the subscriber's last row */
} lr_result;

static void run_lr(const bench_opts *o, int s, lr_result *res)
{
    char table[32];
    snprintf(table, sizeof table, "lr_%d", s);
    int upd = shape_updates(s);
    sub_watch w;
    /* backlog */
    SQL_DO(g.sub, "ALTER SUBSCRIPTION bench_sub DISABLE");
    sub_wait_stopped();
    watch_start(&w, o->timeout, table, o->ops);
    res->publish_s = write_batches(g.pubw, table, upd, 0, o->ops, o->batch, NULL);
    int64_t t0 = bench_now_rt_us();
    SQL_DO(g.sub, "ALTER SUBSCRIPTION bench_sub ENABLE");
    res->catchup_s = (double)(watch_end(&w, "logical replication") - t0) / 1e6;
    lr_verify(table);
    say("shape %d: LR backlog published in %.3f s, caught up in %.3f s", s, res->publish_s,
        res->catchup_s);
    /* live: for inserts, N more ids */
    long long first = upd ? 0 : o->ops;
    int64_t l0 = 0;
    watch_start(&w, o->timeout, table, first + o->ops);
    write_batches(g.pubw, table, upd, first, o->ops, o->batch, &l0);
    res->live_s = (double)(watch_end(&w, "logical replication (live)") - l0) / 1e6;
    lr_verify(table);
    say("shape %d: LR live %.3f s", s, res->live_s);
}

/* ---------------------------------------------------------------------
 * Edges.
 * ------------------------------------------------------------------- */

/* A new peer allowed only table, and an edge store for it, bootstrapped;
 * then offline until followed. */
static sa_edge *edge_new(const bench_opts *o, const char *peer, const char *table)
{
    char *token = sql(g.pub, "SELECT softadastra.create_peer('%s', ARRAY['public.%s']::regclass[])",
                      peer, table);
    char dir[4300], url[64];
    snprintf(dir, sizeof dir, "%s/edge-%s", g.scratch, peer);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g.port);
    sa_edge_options eo;
    sa_edge_options_init(&eo);
    eo.create = 1;
    eo.peer = peer;
    eo.token = token;
    eo.bridge = url;
    eo.batch_ops = (uint32_t)o->batch;
    sa_edge *e = NULL;
    sa_err err = {0};
    if (sa_edge_open(dir, &eo, &e, &err) != 0)
        die("sa_edge_open %s: %s", dir, err.msg);
    sa_free(token);
    if (sa_edge_sync_once(e, 0, &err) != 0) {
        sa_edge_close(e);
        die("edge %s: the first sync failed: %s", peer, err.msg);
    }
    return e;
}

typedef struct writer_arg {
    sa_edge *e;
    int shape, k, nedges;
    long ops;
    double seconds;
    int rc;
    sa_err err;
} writer_arg;

/* The edge's row id as a JSON object (new reference). */
static json_t *row_json(long long id, int update)
{
    rowvals r;
    row_new(id, &r);
    if (update)
        return json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "name", r.name, "price", r.price);
    return json_pack("{s:I,s:s,s:s,s:s}", "id", (json_int_t)id, "name", r.name, "price", r.price,
                     "note", r.note);
}

/* Edge k's share of a shape's ops, written locally (offline). */
static void *writer_main(void *p)
{
    writer_arg *a = p;
    char table[32];
    snprintf(table, sizeof table, "public.rt_%d", a->shape);
    double t0 = bench_now_s();
    for (long long id = 1; id <= a->ops && a->rc == 0; id++) {
        if (id % a->nedges != a->k)
            continue;
        json_t *row = row_json(id, shape_updates(a->shape));
        a->rc = row != NULL ? sa_edge_put(a->e, table, row, NULL, &a->err)
                            : sa_err_set(&a->err, SA_ENOMEM, "out of memory");
        json_decref(row);
    }
    a->seconds = bench_now_s() - t0;
    return NULL;
}

typedef struct follow_arg {
    sa_edge *e;
    pthread_t thr;
    int started;
    int rc;
    sa_err err;
} follow_arg;

static void *follow_main(void *p)
{
    follow_arg *a = p;
    a->rc = sa_edge_follow(a->e, &a->err);
    return NULL;
}

static void follow_start(follow_arg *f, sa_edge *e)
{
    memset(f, 0, sizeof *f);
    f->e = e;
    if (pthread_create(&f->thr, NULL, follow_main, f) != 0)
        die("cannot start a follow thread");
    f->started = 1;
}

static void follow_stop(follow_arg *f, const char *what)
{
    if (!f->started)
        return;
    sa_edge_stop(f->e);
    pthread_join(f->thr, NULL);
    f->started = 0;
    if (f->rc != 0)
        die("%s: sa_edge_follow failed: %s", what, f->err.msg);
}

typedef struct rt_result {
    double write_s;     /* the local writes (all edges in parallel) */
    double accepted_s;  /* from t0: every op durable in the bridge's inbox */
    double applied_s;   /* from t0: the last op's commit in PostgreSQL */
    double confirmed_s; /* from t0: every op back at its edge */
    long long conflicts;
} rt_result;

static void run_ours(const bench_opts *o, int s, rt_result *res)
{
    int E = o->edges;
    char table[32];
    snprintf(table, sizeof table, "rt_%d", s);
    memset(res, 0, sizeof *res);
    if (s == SH_CONF) /* after the edges' base: their updates of these rows conflict */
        SQL_DO(g.pub,
               "UPDATE public.rt_%d SET name = name || ' (changed in SQL)' "
               "WHERE id %% 10 = 0",
               s);

    /* offline writes, one thread per edge */
    writer_arg wa[BENCH_MAX_EDGES];
    pthread_t wt[BENCH_MAX_EDGES];
    double w0 = bench_now_s();
    for (int k = 0; k < E; k++) {
        wa[k] = (writer_arg){.e = g.edges[s][k], .shape = s, .k = k, .nedges = E, .ops = o->ops};
        if (pthread_create(&wt[k], NULL, writer_main, &wa[k]) != 0)
            die("cannot start a writer thread");
    }
    for (int k = 0; k < E; k++)
        pthread_join(wt[k], NULL);
    res->write_s = bench_now_s() - w0;
    uint64_t last[BENCH_MAX_EDGES];
    for (int k = 0; k < E; k++) {
        if (wa[k].rc != 0)
            die("shape %d, edge %d: a local write failed: %s", s, k, wa[k].err.msg);
        sa_edge_status st;
        sa_err err;
        if (sa_edge_status_get(g.edges[s][k], &st, &err) != 0)
            die("status: %s", err.msg);
        last[k] = st.last_seq;
        if (st.accepted != 0 || st.confirmed != 0)
            die("shape %d, edge %d: ops left the edge before the sync (accepted %" PRIu64 ")", s, k,
                st.accepted);
    }
    say("shape %d: %ld local writes in %.3f s", s, o->ops, res->write_s);

    /* the sync */
    follow_arg fa[BENCH_MAX_EDGES];
    int64_t t0 = bench_now_rt_us();
    for (int k = 0; k < E; k++)
        follow_start(&fa[k], g.edges[s][k]);
    int64_t t_acc = 0, t_conf = 0, last_report = t0;
    while (t_conf == 0) {
        int all_acc = 1, all_conf = 1;
        uint64_t acc = 0, app = 0, conf = 0;
        for (int k = 0; k < E; k++) {
            sa_edge_status st;
            sa_err err;
            if (sa_edge_status_get(g.edges[s][k], &st, &err) != 0)
                die("status: %s", err.msg);
            all_acc &= st.accepted >= last[k];
            all_conf &= st.confirmed >= last[k];
            acc += st.accepted;
            app += st.applied;
            conf += st.confirmed;
        }
        int64_t now = bench_now_rt_us();
        if (all_acc && t_acc == 0)
            t_acc = now;
        if (all_conf)
            t_conf = now;
        if (now - last_report > 1000000) {
            last_report = now;
            bridge_alive();
            say("shape %d: %.1f s: accepted %" PRIu64 ", applied (edge view) %" PRIu64
                ", confirmed %" PRIu64 " of %ld",
                s, (double)(now - t0) / 1e6, acc, app, conf, o->ops);
            if ((double)(now - t0) / 1e6 > o->timeout)
                die("shape %d: ops not back within %.0f s (accepted %" PRIu64 ", confirmed %" PRIu64
                    " of %ld)",
                    s, o->timeout, acc, conf, o->ops);
        }
        if (t_conf == 0)
            sleep_us(1000);
    }
    for (int k = 0; k < E; k++)
        follow_stop(&fa[k], "throughput");

    /* exact apply time, and checks */
    long long n_new = 0;
    int64_t t_app = max_commit_us(g.pub, table, t0, &n_new);
    if (n_new != o->ops)
        die("shape %d: %lld rows of %s committed during the sync, expected %ld", s, n_new, table,
            o->ops);
    char q[512];
    snprintf(q, sizeof q, "SELECT count(*) FROM public.%s WHERE name LIKE '%% revised'", table);
    if (sql_ll(g.pub, q) != o->ops)
        die("shape %d: %s does not hold the edges' values in every row", s, table);
    snprintf(q, sizeof q,
             "SELECT coalesce(sum(pp.applied_seq), 0) FROM softadastra.peer_progress pp "
             "WHERE pp.peer LIKE 's%de%%'",
             s);
    if (sql_ll(g.pub, q) != o->ops)
        die("shape %d: peer_progress does not say every op applied", s);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM softadastra.conflicts WHERE table_name = 'public.%s'", table);
    res->conflicts = sql_ll(g.pub, q);
    long long want = s == SH_CONF ? o->ops / 10 : 0;
    if (res->conflicts != want)
        die("shape %d: %lld conflicts recorded, expected %lld", s, res->conflicts, want);
    res->accepted_s = (double)(t_acc - t0) / 1e6;
    res->applied_s = (double)(t_app - t0) / 1e6;
    res->confirmed_s = (double)(t_conf - t0) / 1e6;
    say("shape %d: accepted %.3f s, applied %.3f s, confirmed %.3f s", s, res->accepted_s,
        res->applied_s, res->confirmed_s);
}

/* ---------------------------------------------------------------------
 * Latency.
 * ------------------------------------------------------------------- */

typedef struct lat_poll {
    sa_edge *e;
    int64_t *acc_us;  /* by seq - 1 */
    int64_t *conf_us; /* by seq - 1 */
    long n;
    atomic_int stop;
    atomic_long confirmed;
    int rc;
    sa_err err;
} lat_poll;

/* Read the edge's status every millisecond; the first time accepted
 * (confirmed) covers seq s, acc_us[s - 1] (conf_us[s - 1]) is set. */
static void *lat_poll_main(void *p)
{
    lat_poll *lp = p;
    uint64_t seen = 0, acc = 0;
    while (!atomic_load(&lp->stop)) {
        sa_edge_status st;
        if ((lp->rc = sa_edge_status_get(lp->e, &st, &lp->err)) != 0)
            break;
        int64_t now = bench_now_rt_us();
        for (uint64_t q = acc + 1; q <= st.accepted && q <= (uint64_t)lp->n; q++)
            lp->acc_us[q - 1] = now;
        if (st.accepted > acc)
            acc = st.accepted;
        for (uint64_t q = seen + 1; q <= st.confirmed && q <= (uint64_t)lp->n; q++)
            lp->conf_us[q - 1] = now;
        if (st.confirmed > seen)
            seen = st.confirmed;
        atomic_store(&lp->confirmed, (long)seen);
        sleep_us(1000);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Percentile p (0..100) of v[n] in ms (sorts v). */
static double pct_ms(int64_t *v, long n, double p)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    long i = (long)(p / 100.0 * (double)n + 0.5) - 1;
    i = i < 0 ? 0 : i >= n ? n - 1 : i;
    return (double)v[i] / 1000.0;
}

#define COMMIT_TS "pg_xact_commit_timestamp(xmin)"

typedef struct lat_result {
    long n;
    double app50, app99, conf50, conf99, lr50, lr99, put50, put99, acc50, acc99;
} lat_result;

/* (id, µs since 1970 of the timestamp expression ts) of every row of table
 * on h into out[id - 1] (ids 1..n). */
static void row_times(sa_pgh *h, const char *table, const char *ts, long n, int64_t *out)
{
    char *t =
        sql(h, "SELECT id, (extract(epoch FROM %s) * 1000000)::bigint FROM public.%s", ts, table);
    long got = 0;
    char *save = NULL;
    for (char *line = strtok_r(t, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        long long id = 0, us = 0;
        if (sscanf(line, "%lld|%lld", &id, &us) == 2 && id >= 1 && id <= n) {
            out[id - 1] = us;
            got++;
        }
    }
    sa_free(t);
    if (got != n)
        die("%ld rows in %s, expected %ld", got, table, n);
}

static void run_latency(const bench_opts *o, lat_result *res)
{
    long n = (long)(o->rate * o->seconds);
    if (n < 1)
        n = 1;
    int64_t *put_done = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *put_dur = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *conf = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *acc = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *app = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *lr_pub = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *lr_sub = xcalloc((size_t)n, sizeof(int64_t));
    int64_t *v = xcalloc((size_t)n, sizeof(int64_t));

    follow_arg fa;
    follow_start(&fa, g.lat_edge);
    lat_poll lp = {.e = g.lat_edge, .acc_us = acc, .conf_us = conf, .n = n};
    sub_watch w;
    watch_start(&w, o->seconds + o->timeout, "lr_lat", n);
    pthread_t pt;
    if (pthread_create(&pt, NULL, lat_poll_main, &lp) != 0)
        die("cannot start the status thread");
    sleep_us(500000); /* the follow loop is in its long poll */

    double period = 1.0 / o->rate, start = bench_now_s();
    for (long i = 0; i < n; i++) {
        double due = start + (double)i * period, now = bench_now_s();
        if (due > now)
            sleep_us((long)((due - now) * 1e6));
        json_t *row = row_json(i + 1, 0);
        sa_err err;
        uint64_t seq = 0;
        int64_t w0 = bench_now_rt_us();
        int rc = sa_edge_put(g.lat_edge, "public.rt_lat", row, &seq, &err);
        put_done[i] = bench_now_rt_us();
        put_dur[i] = put_done[i] - w0;
        json_decref(row);
        if (rc != 0)
            die("latency: a local write failed: %s", err.msg);
        if (seq != (uint64_t)i + 1)
            die("latency: write %ld got seq %" PRIu64, i + 1, seq);
        char id[24];
        snprintf(id, sizeof id, "%ld", i + 1);
        rowvals r;
        row_new(i + 1, &r);
        const char *params[4] = {id, r.name, r.price, r.note};
        PGresult *pr = PQexecPrepared(g.pubw, "i_lr_lat", 4, params, NULL, NULL, 0);
        if (PQresultStatus(pr) != PGRES_COMMAND_OK)
            die("latency: insert into lr_lat: %s", PQresultErrorMessage(pr));
        PQclear(pr);
    }
    double t_end = bench_now_s();
    while (atomic_load(&lp.confirmed) < n && lp.rc == 0) {
        if (bench_now_s() - t_end > BENCH_LAT_DRAIN_S)
            die("latency: only %ld of %ld ops confirmed %.0f s after the last write",
                atomic_load(&lp.confirmed), n, BENCH_LAT_DRAIN_S);
        bridge_alive();
        sleep_us(10000);
    }
    atomic_store(&lp.stop, 1);
    pthread_join(pt, NULL);
    if (lp.rc != 0)
        die("latency: status: %s", lp.err.msg);
    follow_stop(&fa, "latency");
    watch_end(&w, "latency (logical replication)");

    row_times(g.pub, "rt_lat", COMMIT_TS, n, app);
    row_times(g.pub, "lr_lat", COMMIT_TS, n, lr_pub);
    row_times(g.sub, "lr_lat", "arrived", n, lr_sub);
    res->n = n;
    for (long i = 0; i < n; i++)
        v[i] = app[i] - put_done[i];
    res->app50 = pct_ms(v, n, 50);
    res->app99 = pct_ms(v, n, 99);
    for (long i = 0; i < n; i++)
        v[i] = conf[i] - put_done[i];
    res->conf50 = pct_ms(v, n, 50);
    res->conf99 = pct_ms(v, n, 99);
    for (long i = 0; i < n; i++)
        v[i] = acc[i] - put_done[i];
    res->acc50 = pct_ms(v, n, 50);
    res->acc99 = pct_ms(v, n, 99);
    for (long i = 0; i < n; i++)
        v[i] = lr_sub[i] - lr_pub[i];
    res->lr50 = pct_ms(v, n, 50);
    res->lr99 = pct_ms(v, n, 99);
    res->put50 = pct_ms(put_dur, n, 50);
    res->put99 = pct_ms(put_dur, n, 99);
    sa_free(put_done);
    sa_free(put_dur);
    sa_free(conf);
    sa_free(acc);
    sa_free(app);
    sa_free(lr_pub);
    sa_free(lr_sub);
    sa_free(v);
}

/* ---------------------------------------------------------------------
 * Setup.
 * ------------------------------------------------------------------- */

#define TABLE_DEF "(id bigint PRIMARY KEY, name text, price numeric, note text)"

/* Seed rows 1..n of table on h, as row_seed gives them. */
static void seed(sa_pgh *h, const char *table, long n)
{
    SQL_DO(h,
           "INSERT INTO public.%s SELECT g, format('item %%s standard', lpad(g::text, 8, '0')), "
           "((10 + g %% 990) || '.' || lpad((g %% 100)::text, 2, '0'))::numeric, "
           "format('restocked from warehouse %%s, lot %%s; handle with ordinary care', "
           "lpad((g %% 97)::text, 2, '0'), lpad(g::text, 8, '0')) "
           "FROM generate_series(1, %ld) g",
           table, n);
}

/* 0, or BENCH_SKIP when the extension cannot be created. */
static int setup(const bench_opts *o)
{
    /* PostgreSQL's default decoding memory (the harness's 64kB is for
     * tests), for the bridge's slot and the subscription's alike */
    sa_pgh_options po = {.extra_conf = "logical_decoding_work_mem = '64MB'\n"};
    sa_err err;
    if (sa_pgh_start(&po, &g.pub, &err) != 0)
        die("cannot start the publisher cluster: %s", err.msg);
    if (sa_pgh_exec(g.pub, "CREATE EXTENSION softadastra", NULL, &err) != 0) {
        printf("bench_roundtrip: SKIP: CREATE EXTENSION softadastra failed: %s\n", err.msg);
        return BENCH_SKIP;
    }
    /* the subscription's launcher starts an apply worker at most once per
     * wal_retrieve_retry_interval (default 5 s): an ENABLE right after a
     * DISABLE would wait for it, which is not apply speed */
    sa_pgh_options so = {.extra_conf = "logical_decoding_work_mem = '64MB'\n"
                                       "wal_retrieve_retry_interval = '10ms'\n"};
    if (sa_pgh_start(&so, &g.sub, &err) != 0)
        die("cannot start the subscriber cluster: %s", err.msg);
    for (int s = 0; s < NSHAPE; s++) {
        SQL_DO(g.pub, "CREATE TABLE public.rt_%d " TABLE_DEF, s);
        SQL_DO(g.pub, "CREATE TABLE public.plain_%d " TABLE_DEF, s);
        SQL_DO(g.pub, "CREATE TABLE public.lr_%d " TABLE_DEF, s);
        SQL_DO(g.sub, "CREATE TABLE public.lr_%d " TABLE_DEF, s);
        if (shape_updates(s)) {
            char t[32];
            snprintf(t, sizeof t, "rt_%d", s);
            seed(g.pub, t, o->ops);
            snprintf(t, sizeof t, "plain_%d", s);
            seed(g.pub, t, o->ops);
            snprintf(t, sizeof t, "lr_%d", s);
            seed(g.pub, t, o->ops);
        }
        SQL_DO(g.pub, "SELECT softadastra.add_table('public.rt_%d')", s);
    }
    /* the seeds as row_seed spells them, so every side starts alike */
    rowvals r;
    row_seed(o->ops, &r);
    char *name = sql(g.pub,
                     "SELECT name || '|' || price || '|' || note FROM public.rt_1 "
                     "WHERE id = %ld",
                     o->ops);
    char want[256];
    snprintf(want, sizeof want, "%s|%s|%s", r.name, r.price, r.note);
    if (strcmp(name, want) != 0)
        die("seed row differs: \"%s\" vs \"%s\"", name, want);
    sa_free(name);
    SQL_DO(g.pub, "CREATE TABLE public.rt_lat " TABLE_DEF);
    SQL_DO(g.pub, "SELECT softadastra.add_table('public.rt_lat')");
    SQL_DO(g.pub, "CREATE TABLE public.lr_lat " TABLE_DEF);
    /* arrived: when the apply worker inserted the row (a subscriber's
     * commit timestamps are the publisher's) */
    SQL_DO(g.sub, "CREATE TABLE public.lr_lat (id bigint PRIMARY KEY, name text, price numeric,"
                  " note text, arrived timestamptz NOT NULL DEFAULT clock_timestamp())");
    SQL_DO(g.pub, "CREATE PUBLICATION bench_lr FOR TABLE public.lr_0, public.lr_1, public.lr_2,"
                  " public.lr_lat");
    SQL_DO(g.pub, "CHECKPOINT");

    /* the subscription (copies the seeds) */
    SQL_DO(g.sub, "CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION bench_lr",
           sa_pgh_conninfo(g.pub));
    double t0 = bench_now_s();
    while (sql_ll(g.sub, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") > 0 ||
           sql_ll(g.sub, "SELECT count(*) FROM pg_subscription_rel") != 4) {
        if (bench_now_s() - t0 > BENCH_START_TIMEOUT_S)
            die("the subscription's initial copy did not finish within %.0f s",
                BENCH_START_TIMEOUT_S);
        sleep_us(50000);
    }

    start_bridge(o);
    for (int s = 0; s < NSHAPE; s++)
        for (int k = 0; k < o->edges; k++) {
            char peer[32], table[32];
            snprintf(peer, sizeof peer, "s%de%d", s, k);
            snprintf(table, sizeof table, "rt_%d", s);
            g.edges[s][k] = edge_new(o, peer, table);
        }
    g.lat_edge = edge_new(o, "lat", "rt_lat");
    /* each update shape's edge holds the seed rows as its base */
    for (int s = SH_UPD; s < NSHAPE; s++)
        for (int k = 0; k < o->edges; k++) {
            long long id = o->ops; /* edge k's last row */
            while (id % o->edges != k)
                id--;
            json_t *key = json_pack("{s:I}", "id", (json_int_t)id), *row = NULL;
            char table[32];
            snprintf(table, sizeof table, "public.rt_%d", s);
            if (sa_edge_get(g.edges[s][k], table, key, &row, &err) != 0)
                die("edge s%de%d does not hold seed row %lld: %s", s, k, id, err.msg);
            json_decref(row);
            json_decref(key);
        }

    g.plain = connect_or_die(g.pub);
    g.pubw = connect_or_die(g.pub);
    for (int s = 0; s < NSHAPE; s++) {
        char t[32];
        snprintf(t, sizeof t, "plain_%d", s);
        prepare_table(g.plain, t);
        snprintf(t, sizeof t, "lr_%d", s);
        prepare_table(g.pubw, t);
    }
    prepare_table(g.pubw, "lr_lat");
    return 0;
}

/* ---------------------------------------------------------------------
 * Driver.
 * ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_roundtrip [--ops N] [--batch B] [--edges E] [--rate R] [--seconds S]\n"
            "                       [--timeout S] [--dir DIR] [--bridge PATH] [--quick] [--check]\n"
            "                       [--verbose]\n"
            "  Edges (libsa_edge, in process) write N ops offline, then sync through one\n"
            "  sa-bridge into PostgreSQL (softadastra.apply_ops): ops/s applied and confirmed\n"
            "  back, for inserts, updates and updates with 10%% conflicts; then the latency of\n"
            "  single writes (local write -> applied in PostgreSQL -> confirmed at the edge).\n"
            "  Next to (a) the same rows written with batched SQL (pipeline, one transaction\n"
            "  per batch) and (b) PostgreSQL logical replication applying them into a second\n"
            "  cluster (catch-up of a backlog), in the same run.\n"
            "  --ops N       ops per shape, a multiple of 100 (default 20000)\n"
            "  --batch B     ops per push from an edge, and rows per transaction of both\n"
            "                references (default 500; the bridge applies at most 500 per call)\n"
            "  --edges E     edges per shape, writing disjoint rows, syncing at once\n"
            "                (default 1, at most %d)\n"
            "  --rate R      latency: local writes per second (default 20)\n"
            "  --seconds S   latency: how long (default 15)\n"
            "  --timeout S   longest wait for one shape's ops to come back (default 600)\n"
            "  --dir DIR     where the scratch directory is made (default $SA_TEST_TMPDIR or\n"
            "                /tmp); removed at the end\n"
            "  --bridge PATH the sa-bridge binary (default %s)\n"
            "  --quick       smoke run: 1000 ops, batches of 100, 2 s of latency writes\n"
            "  --check       exit 1 if a ratio against logical replication is below %.1f\n"
            "  --verbose     progress on stderr\n",
            BENCH_MAX_EDGES, SA_BRIDGE_BIN, BENCH_TARGET);
}

static double num_arg(const char *opt, const char *v, double lo, double hi)
{
    double x;
    if (bench_num(v, lo, hi, &x) != 0) {
        fprintf(stderr, "bench_roundtrip: option %s needs a number in %g..%g, got \"%s\"\n", opt,
                lo, hi, v);
        exit(2);
    }
    return x;
}

static void parse_args(int argc, char **argv, bench_opts *o)
{
    /* options taking a value first */
    static const char *const names[] = {"--ops",     "--batch",   "--edges",  "--rate",
                                        "--seconds", "--timeout", "--dir",    "--bridge",
                                        "--quick",   "--check",   "--verbose"};
    enum { NOPTS = sizeof names / sizeof names[0], NVALUED = 8 };
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
            fprintf(stderr, "bench_roundtrip: %s\n", why);
            usage(stderr);
            exit(2);
        }
        switch (k) {
        case 0:
            o->ops = (long)num_arg(names[k], v, 100, 10000000);
            if (o->ops % 100 != 0) {
                fprintf(stderr, "bench_roundtrip: --ops must be a multiple of 100\n");
                exit(2);
            }
            break;
        case 1:
            o->batch = (int)num_arg(names[k], v, 1, 10000);
            break;
        case 2:
            o->edges = (int)num_arg(names[k], v, 1, BENCH_MAX_EDGES);
            break;
        case 3:
            o->rate = num_arg(names[k], v, 0.1, 1000);
            break;
        case 4:
            o->seconds = num_arg(names[k], v, 0.5, 3600);
            break;
        case 5:
            o->timeout = num_arg(names[k], v, 1, 86400);
            break;
        case 6:
            o->dir = v;
            break;
        case 7:
            o->bridge = v;
            break;
        case 8:
            o->quick = 1;
            break;
        case 9:
            o->check = 1;
            break;
        default:
            o->verbose = 1;
        }
    }
    if (o->quick) {
        if (!seen[0])
            o->ops = 1000;
        if (!seen[1])
            o->batch = 100;
        if (!seen[4])
            o->seconds = 2;
    }
    if (o->edges > o->ops / 10) {
        fprintf(stderr, "bench_roundtrip: --edges must be at most --ops / 10\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    bench_opts o;
    parse_args(argc, argv, &o);
    g.verbose = o.verbose;
    double t_start = bench_now_s();
    signal(SIGPIPE, SIG_IGN);
    if (access(o.bridge, X_OK) != 0) {
        fprintf(stderr, "bench_roundtrip: no sa-bridge at \"%s\" (build it, or pass --bridge)\n",
                o.bridge);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        die("curl_global_init failed");
    mkdir(o.dir, 0755);
    if (snprintf(g.scratch, sizeof g.scratch, "%s/sa-bench-roundtrip-XXXXXX", o.dir) >=
            (int)sizeof g.scratch ||
        mkdtemp(g.scratch) == NULL) {
        g.scratch[0] = '\0';
        die("cannot make a scratch directory under \"%s\": %s", o.dir, strerror(errno));
    }
    chmod(g.scratch, 0755);
    snprintf(g.bridge_log, sizeof g.bridge_log, "%s/bridge.log", g.scratch);
    if (setup(&o) == BENCH_SKIP) {
        cleanup();
        curl_global_cleanup();
        return BENCH_SKIP;
    }
    double setup_s = bench_now_s() - t_start;

    rt_result rt[NSHAPE];
    double sql_s[NSHAPE];
    lr_result lr[NSHAPE];
    for (int s = 0; s < NSHAPE; s++) {
        run_ours(&o, s, &rt[s]);
        char t[32];
        snprintf(t, sizeof t, "plain_%d", s);
        sql_s[s] = write_batches(g.plain, t, shape_updates(s), 0, o.ops, o.batch, NULL);
        say("shape %d: batched SQL %.3f s", s, sql_s[s]);
        run_lr(&o, s, &lr[s]);
    }
    lat_result lat;
    run_latency(&o, &lat);
    long rss_kb = bench_peak_rss_kb(g.bridge);

    char *version = sql(g.pub, "SHOW server_version");
    printf("\n## bench_roundtrip: edge -> sa-bridge -> PostgreSQL and back, vs batched SQL and "
           "logical replication\n\n");
    printf("PostgreSQL %s (fsync=off; edges and bridge fsync); %ld ops per shape from %d edge%s, "
           "batches of %d (edge push, SQL and publisher transactions; the bridge's applier: at "
           "most 500); set-up %.1f s\n\n",
           version, o.ops, o.edges, o.edges == 1 ? "" : "s", o.batch, setup_s);
    sa_free(version);
    printf("| shape | ops | ours ops/s (applied) | ours ops/s (confirmed) | batched SQL ops/s | "
           "ratio | logical replication ops/s | ratio |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    int below = 0;
    for (int s = 0; s < NSHAPE; s++) {
        double n = (double)o.ops;
        double ours = n / rt[s].applied_s, conf = n / rt[s].confirmed_s;
        double sqlr = n / sql_s[s], lrr = n / lr[s].catchup_s;
        below |= ours / lrr < BENCH_TARGET;
        printf("| %s | %ld | %.0f | %.0f | %.0f | %.2f | %.0f | %.2f |\n", shape_name[s], o.ops,
               ours, conf, sqlr, ours / sqlr, lrr, ours / lrr);
    }
    printf("\n");
    for (int s = 0; s < NSHAPE; s++)
        printf("# %s: local writes %.0f ops/s (offline, durable); from sync start: all in the "
               "bridge's inbox %.2f s, last applied %.2f s, all confirmed %.2f s; %lld conflicts "
               "recorded; logical replication: publisher commits %.2f s, catch-up %.2f s, live "
               "(first commit to subscriber's last) %.2f s = %.0f rows/s\n",
               shape_name[s], (double)o.ops / rt[s].write_s, rt[s].accepted_s, rt[s].applied_s,
               rt[s].confirmed_s, rt[s].conflicts, lr[s].publish_s, lr[s].catchup_s, lr[s].live_s,
               (double)o.ops / lr[s].live_s);
    printf("\nlatency (%ld single writes at %.0f/s, one following edge): local write -> applied "
           "in PostgreSQL p50 %.1f ms, p99 %.1f ms; -> confirmed back at the edge p50 %.1f ms, p99 "
           "%.1f ms (±1 ms); logical replication commit -> row inserted on the subscriber p50 %.1f "
           "ms, p99 %.1f ms\n",
           lat.n, o.rate, lat.app50, lat.app99, lat.conf50, lat.conf99, lat.lr50, lat.lr99);
    printf("# latency parts: the local write itself (sa_edge_put, durable) p50 %.2f ms, p99 %.2f "
           "ms; local write -> accepted into the bridge's inbox p50 %.1f ms, p99 %.1f ms (±1 ms)\n",
           lat.put50, lat.put99, lat.acc50, lat.acc99);
    printf("bridge peak RSS %.1f MB\n", rss_kb >= 0 ? (double)rss_kb / 1024.0 : -1.0);
    bench_log_problems(g.bridge_log, " sa-bridge warn: ", " sa-bridge error: ");
    printf("target (ours / logical replication >= %.1f on every shape): %s\n", BENCH_TARGET,
           below ? "NOT met" : "met");
    printf("measured in %.1f s%s\n", bench_now_s() - t_start,
           o.quick ? " (--quick: too small to mean much; a smoke run)" : "");
    cleanup();
    curl_global_cleanup();
    return o.check && below ? 1 : 0;
}
