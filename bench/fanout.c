/*
 * bench/fanout.c — bench_fanout: how well one sa-bridge serves many edges
 * long-polling /v1/changes while PostgreSQL takes a steady write load: ops
 * delivered per second to all edges, commit-to-edge latency and the
 * bridge's peak memory, next to pg_recvlogical receiving the same commits
 * in the same run.
 *
 * Method (one throwaway PostgreSQL 15 cluster from the test harness, with
 * the softadastra extension):
 *
 *   setup    table public.items (id bigint primary key, name text, price
 *            numeric, note text: about 100 bytes a row), synced
 *            (softadastra.add_table); one peer per edge
 *            (softadastra.create_peer('edgeN'), each its own token); one
 *            sa-bridge (defaults: durability group, --listen 127.0.0.1:0,
 *            the port read from its log), waited for until it streams;
 *            a second slot, test_decoding, read by one pg_recvlogical that
 *            runs for the whole benchmark.
 *   load     one libpq connection in its own thread commits --rate
 *            transactions a second (default 200) of --rows-per-txn rows
 *            (default 5) each: one multi-row INSERT in autocommit, on an
 *            absolute schedule (a late commit is caught up, never skipped).
 *   edges    one load process, libcurl's multi interface, one easy handle
 *            per edge, each with its peer's bearer token and its own
 *            cursor, starting at the bridge's head (/healthz) when the
 *            phase starts:
 *              GET /v1/changes?after=CURSOR&wait=--wait(25)&instance=I
 *            answered, it sets its cursor to "next" and asks again at once.
 *            Edge i connects from 127.0.0.(1 + i / 200) (CURLOPT_INTERFACE;
 *            all of 127/8 is loopback on Linux), so no address holds more
 *            than 200 connections: under the bridge's per-address limit
 *            (--max-connections-per-ip, default 1024; 256 before that flag
 *            existed), as many edges behind one NAT would not be.  The
 *            bridge's --max-connections (default 4096) is raised only if
 *            the edges need more.  RLIMIT_NOFILE is raised to what the
 *            edges need, up to the hard limit.
 *   phase    for each edge count (default 10, 100, 1000; before them a
 *            phase with no edges, for pg_recvlogical alone):
 *              1. start the edges, all at the head;
 *              2. warm-up, without load: one "ping" transaction, until
 *                 every edge has received it (so each is connected,
 *                 authenticated and back in its poll loop), then 0.5 s.
 *                 Nothing is queued when the window opens: a warm-up under
 *                 load left 1000 edges tens of seconds behind before the
 *                 window even began;
 *              3. measured window: the writer's --seconds (default 10);
 *                 it opens at the realtime clock read just before the
 *                 first transaction is sent (w0) and closes when the last
 *                 one's commit has returned (w1).  The writer is
 *                 sequential, so the transactions with commit_time >= w0
 *                 are exactly the measured ones;
 *              4. drain: the edges keep polling until each has received
 *                 every measured op (and pg_recvlogical every measured
 *                 row), at most max(10 s, --seconds).  An op still missing
 *                 then counts with the latency it has reached (now - the
 *                 moment its transaction's commit returned, which is after
 *                 its commit_time), a lower bound: a percentile that such
 *                 a sample can reach is printed "≥ x".
 *   measures ops delivered/s: ops received by all edges with a receipt
 *            time inside [w0, w1], over w1 - w0 (the offered rate is
 *            edges x rows/s; below it, the bridge did not keep up).
 *            Latency, per op: receipt time - pg.commit_time.  pg.commit_time
 *            is the commit timestamp PostgreSQL decoded (µs since 1970,
 *            the server's wall clock); the receipt time is CLOCK_REALTIME
 *            on the same machine, read in libcurl's write callback each
 *            time body bytes arrive: the last read before the transfer
 *            completes is when the edge holds the answer whole.  Only ops
 *            with commit_time >= w0 count; p50 and p99 are over ops (a
 *            transaction of 5 rows gives 5 equal samples).  Bridge peak
 *            RSS: VmHWM of /proc/PID/status, reset at each phase's start
 *            (write 5 to /proc/PID/clear_refs), read after the drain.
 *   reference a slot created with the test_decoding plugin, read by
 *            pg_recvlogical --start -o include-timestamp=1
 *            -o skip-empty-xacts=1 -o include-xids=0 -f -, writing to a pipe
 *            read by a thread of this process that timestamps
 *            (CLOCK_REALTIME) each read() and parses the lines:
 *            "COMMIT (at 2024-05-01 12:34:56.123456+00)" is the commit
 *            time, to the microsecond (the walsender's TimeZone is set to
 *            UTC).  Its latency for each public.items row of a transaction
 *            is the read time of the COMMIT line - commit time: the moment
 *            it holds the transaction whole, as an edge does.  Why
 *            test_decoding and not pgoutput: pg_recvlogical writes each
 *            message raw followed by a newline, and pgoutput's binary
 *            messages may contain newlines, so its output cannot be split
 *            back into messages; test_decoding's is text.  Both plugins
 *            send a transaction when its commit is decoded (no streaming
 *            at 5 rows), so the difference is the plugin's output cost,
 *            tiny at this size.  It runs during every phase, seeing the
 *            same commits at the same moments under the same machine load
 *            as the bridge; the no-edge phase shows it alone.
 *   report   per edge count, the median over --reps (default 1: a default
 *            run stays near a minute; each phase already holds thousands
 *            of samples) of each figure; ratio = bridge / pg_recvlogical
 *            (p50 and p99; above 1 the bridge is slower).  Notes under
 *            the table give, per edge count, the offered rate, the share
 *            delivered, ops per answer, the drain, ops never delivered,
 *            failed polls, and the CPU seconds the bridge and this process
 *            used over window and drain (is the bridge the bottleneck, or
 *            the load generator?); then the bridge log's warnings and
 *            errors.
 *
 * Caveats, by design: the edges, the bridge, PostgreSQL and pg_recvlogical
 * share one machine, so at 1000 edges the load process competes with the
 * bridge for CPU; one process reading 1000 sockets in turn adds its own
 * queueing to the later ones (an edge's receipt time is when this process
 * reads the bytes).  The server runs with fsync=off (harness default); the
 * bridge fsyncs its WAL (group) as in production.
 *
 * A benchmark, not a test: it exits 0 whatever the figures (2 if it could
 * not run, 77 if the extension is not installed), unless --check asks for
 * 1 when an edge count got less than 95% of the offered ops/s or an op was
 * not delivered within the drain.  There is no latency-ratio target yet.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, nftw, mkdtemp, prctl, timegm */
#endif

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "bench_util.h"
#include "pg_harness.h"
#include "sa/sa_alloc.h"

#define BENCH_SKIP 77      /* ctest's SKIP_RETURN_CODE */
#define BENCH_KEEP_UP 0.95 /* --check: delivered / offered at least this */
#define BENCH_MAX_REPS 15
#define BENCH_MAX_COUNTS 8 /* edge counts in one run */
#define BENCH_MAX_EDGES 20000
#define BENCH_PER_ADDR 200 /* edges per loopback source address */
#define BENCH_RECV_SLOT "sa_fanout_recv"
#define BENCH_START_TIMEOUT_S 120.0 /* the bridge's start and initial sync */
#define BENCH_WARMUP_MIN_S 1.0
#define BENCH_WARMUP_MAX_S 60.0
#define BENCH_BODY_MAX (16u << 20) /* an answer larger than this is an error */
#define BENCH_RETRY_MS 200         /* before asking again after a failed poll */
#define BENCH_MAX_FAILS 20         /* failed polls in a row: the edge gives up */

/* Every option, with its default set in opts_init. */
typedef struct bench_opts {
    int counts[BENCH_MAX_COUNTS]; /* edge counts, in order */
    int ncounts;
    double seconds;        /* measured window per phase */
    double rate;           /* writer transactions per second */
    int per_txn;           /* rows per transaction */
    int wait_s;            /* the edges' long-poll wait */
    int reps;              /* repetitions; medians are reported */
    const char *dir;       /* parent of our scratch directory */
    const char *bridge;    /* sa-bridge binary */
    const char *pg_bindir; /* where pg_recvlogical is */
    int quick;             /* smoke test: 10 edges, 3 s */
    int verify;            /* also parse every answer with jansson and compare */
    int check;             /* exit 1 when an edge count did not keep up */
    int verbose;           /* per-phase details on stderr */
} bench_opts;

static void opts_init(bench_opts *o)
{
    o->counts[0] = 10;
    o->counts[1] = 100;
    o->counts[2] = 1000;
    o->ncounts = 3;
    o->seconds = 10;
    o->rate = 200;
    o->per_txn = 5;
    o->wait_s = 25;
    o->reps = 1;
    o->dir = getenv("SA_TEST_TMPDIR") != NULL ? getenv("SA_TEST_TMPDIR") : "/tmp";
    o->bridge = SA_BRIDGE_BIN;
    o->pg_bindir = getenv("PG_BINDIR") != NULL ? getenv("PG_BINDIR") : SA_PG_BINDIR;
    o->quick = 0;
    o->verify = 0;
    o->check = 0;
    o->verbose = 0;
}

/* ---------------------------------------------------------------------
 * Process-wide state, so that die() can clean up whatever is live.
 * ------------------------------------------------------------------- */

static struct {
    sa_pgh *pg;
    pid_t bridge; /* running sa-bridge, or 0 */
    pid_t recv;   /* running pg_recvlogical, or 0 */
    int recv_fd;  /* read end of its stdout, or -1 */
    pthread_t recv_thr;
    int recv_started;
    char scratch[4096]; /* our scratch directory, or "" */
    char bridge_log[4200];
    char recv_log[4200];
    int port;          /* the bridge's HTTP port */
    char instance[40]; /* the bridge's instance id */
    char **tokens;     /* one per peer edge1.. */
    int ntokens;
} g = {.recv_fd = -1};

/* --verify: the commit times the byte scan found in one answer. */
static struct {
    int64_t *v;
    size_t cap;
} g_cts;

static void cleanup(void)
{
    bench_stop_child(&g.recv, SIGTERM, 5000); /* 5 s, then SIGKILL */
    if (g.recv_started) { /* its pipe is at EOF now: the reader ends */
        pthread_join(g.recv_thr, NULL);
        g.recv_started = 0;
    }
    if (g.recv_fd >= 0)
        close(g.recv_fd);
    g.recv_fd = -1;
    bench_stop_child(&g.bridge, SIGTERM, 5000); /* 5 s, then SIGKILL */
    sa_pgh_stop(g.pg);
    g.pg = NULL;
    if (g.scratch[0] != '\0')
        bench_rm_tree(g.scratch);
    g.scratch[0] = '\0';
    for (int i = 0; i < g.ntokens; i++)
        sa_free(g.tokens[i]);
    sa_free(g.tokens);
    g.tokens = NULL;
    g.ntokens = 0;
    sa_free(g_cts.v);
    g_cts.v = NULL;
    g_cts.cap = 0;
}

/* Report why the benchmark cannot go on (with the tails of the bridge's
 * and pg_recvlogical's logs), clean up and exit 2.  Main thread only. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_fanout: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    bench_tail(g.bridge_log, "the bridge's log");
    bench_tail(g.recv_log, "pg_recvlogical's log");
    cleanup();
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = sa_realloc(p, n);
    if (q == NULL)
        die("out of memory (%zu bytes)", n);
    return q;
}

/* ---------------------------------------------------------------------
 * Weighted samples and their percentiles.
 * ------------------------------------------------------------------- */

/* A value (µs) that occurred n times (a transaction's rows share one);
 * lower: the true value is unknown, at least v (an op never delivered). */
typedef struct wsample {
    int64_t v;
    int64_t n;
    int lower;
} wsample;

typedef struct wvec {
    wsample *s;
    size_t len, cap;
    int64_t total; /* sum of n */
} wvec;

static void wvec_add(wvec *w, int64_t v, int64_t n, int lower)
{
    if (w->len > 0 && w->s[w->len - 1].v == v && w->s[w->len - 1].lower == lower) {
        w->s[w->len - 1].n += n;
        w->total += n;
        return;
    }
    if (w->len == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 4096;
        w->s = xrealloc(w->s, w->cap * sizeof *w->s);
    }
    w->s[w->len++] = (wsample){v, n, lower};
    w->total += n;
}

static void wvec_free(wvec *w)
{
    sa_free(w->s);
    memset(w, 0, sizeof *w);
}

static int cmp_wsample(const void *a, const void *b)
{
    int64_t x = ((const wsample *)a)->v, y = ((const wsample *)b)->v;
    return (x > y) - (x < y);
}

/* The p-quantile (0 < p <= 1) of w's values, weights counted, in ms; -1
 * when w is empty.  Sorts w.  *lower: it is only a lower bound, because a
 * lower-bound sample sits at or below it (whose true value may lie above:
 * then so does the true quantile); lower-bound samples all above it leave
 * it exact. */
static double wvec_pct_ms(wvec *w, double p, int *lower)
{
    *lower = 0;
    if (w->total == 0)
        return -1;
    qsort(w->s, w->len, sizeof *w->s, cmp_wsample);
    int64_t rank = (int64_t)(p * (double)w->total + 0.999999); /* 1-based, ceil */
    if (rank < 1)
        rank = 1;
    int64_t seen = 0;
    size_t i = 0;
    for (; i + 1 < w->len; i++) {
        seen += w->s[i].n;
        if (seen >= rank)
            break;
    }
    int64_t v = w->s[i].v;
    for (size_t k = 0; k < w->len && w->s[k].v <= v; k++)
        *lower |= w->s[k].lower;
    return (double)v / 1000.0;
}

/* ---------------------------------------------------------------------
 * SQL and processes.
 * ------------------------------------------------------------------- */

/* Run SQL on the harness's cached connection (main thread only); the text
 * of the last result (caller frees with sa_free), or exit. */
static char *sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sql(const char *fmt, ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    char *out = NULL;
    sa_err err;
    if (sa_pgh_exec(g.pg, q, &out, &err) != 0)
        die("SQL failed: %s\n  %s", err.msg, q);
    return out;
}

#define SQL_DO(...) sa_free(sql(__VA_ARGS__))

/* Is the extension in the sharedir of the harness' server?  (As in
 * bench/apply.c.) */
static int extension_installed(const char *bindir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s/pg_config' --sharedir 2>/dev/null || pg_config --sharedir",
             bindir);
    FILE *p = popen(cmd, "r");
    char share[1024] = "";
    if (p != NULL) {
        if (fgets(share, sizeof share, p) == NULL)
            share[0] = '\0';
        pclose(p);
    }
    share[strcspn(share, "\n")] = '\0';
    char where[1200];
    snprintf(where, sizeof where, "%s/extension/softadastra.control", share);
    struct stat st;
    return share[0] != '\0' && stat(where, &st) == 0;
}

/* Start argv[0] with stderr (and stdout unless out_fd >= 0) appended to
 * log.  The child gets SIGKILL if we die, so nothing outlives the
 * benchmark. */
static pid_t spawn(const char *const *argv, const char *log, int out_fd)
{
    pid_t pid = bench_spawn(argv, log, out_fd);
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

/* ---------------------------------------------------------------------
 * HTTP: /healthz, and the edges.
 * ------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static size_t buf_write(char *p, size_t size, size_t n, void *ctx)
{
    buf *b = ctx;
    size_t add = size * n;
    if (b->len + add + 1 > BENCH_BODY_MAX)
        return 0; /* libcurl fails the transfer: CURLE_WRITE_ERROR */
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + add + 1)
            cap *= 2;
        char *q = sa_realloc(b->p, cap);
        if (q == NULL)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

/* GET /healthz: the bridge's WAL head and its instance id. */
static uint64_t healthz_head(void)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", g.port);
    buf b = {0};
    CURL *c = curl_easy_init();
    if (c == NULL)
        die("curl_easy_init failed");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK || status != 200)
        die("GET /healthz: %s, HTTP %ld: %.300s", curl_easy_strerror(cc), status,
            b.p != NULL ? b.p : "");
    json_error_t e;
    json_t *j = json_loads(b.p, 0, &e);
    json_t *head = j != NULL ? json_object_get(j, "head") : NULL;
    json_t *inst = j != NULL ? json_object_get(j, "instance") : NULL;
    if (!json_is_integer(head))
        die("GET /healthz: no \"head\" in %.300s", b.p);
    uint64_t h = (uint64_t)json_integer_value(head);
    if (json_is_string(inst))
        snprintf(g.instance, sizeof g.instance, "%s", json_string_value(inst));
    json_decref(j);
    sa_free(b.p);
    return h;
}

/* One edge: a peer, its cursor and its poll in flight. */
typedef struct edge {
    int idx;
    CURL *h;
    struct curl_slist *hdr;
    char iface[32]; /* "host!127.0.0.X" */
    buf body;
    int64_t rx_us; /* realtime of the last body bytes of the poll in flight */
    uint64_t cursor;
    int64_t got;      /* measured ops received (commit_time >= w0) */
    int answered;     /* answers carrying ops, this phase */
    int fails;        /* failed polls in a row */
    int64_t retry_at; /* monotonic ms when a failed edge asks again; 0: in flight */
} edge;

static size_t edge_write(char *p, size_t size, size_t n, void *ctx)
{
    edge *e = ctx;
    e->rx_us = bench_now_rt_us();
    return buf_write(p, size, n, &e->body);
}

/* ---------------------------------------------------------------------
 * The writer: a steady load on its own connection and thread.
 * ------------------------------------------------------------------- */

typedef struct writer {
    PGconn *c;
    double rate, seconds;
    int per;
    long long next_id;
    /* published by the writer */
    atomic_llong w0; /* realtime µs just before the first measured txn; 0: not yet */
    atomic_llong w1; /* realtime µs when the last measured commit returned */
    atomic_int done;
    long ntx;     /* measured transactions (valid once done) */
    int64_t *ack; /* [ntx]: realtime µs when each commit returned (>= its commit_time) */
    long ack_cap;
    char err[512]; /* set before done when a commit failed */
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    size_t cap = 256 + (size_t)w->per * 200;
    char *q = sa_malloc(cap);
    if (q == NULL) {
        snprintf(w->err, sizeof w->err, "out of memory");
        atomic_store(&w->done, 1);
        return NULL;
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    double m_start = 0;
    int64_t last_ack = 0;
    for (long i = 0;; i++) {
        /* absolute schedule: transaction i at start + i / rate */
        double at = (double)start.tv_sec + (double)start.tv_nsec / 1e9 + (double)i / w->rate;
        struct timespec ts = {(time_t)at, (long)((at - (double)(time_t)at) * 1e9)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        if (i == 0) {
            atomic_store(&w->w0, bench_now_rt_us());
            m_start = bench_now_s();
        } else if (bench_now_s() - m_start >= w->seconds) {
            break;
        }
        size_t len = (size_t)snprintf(q, cap,
                                      "INSERT INTO public.items (id, name, price, note) "
                                      "VALUES ");
        for (int k = 0; k < w->per; k++) {
            long long id = w->next_id++;
            len += (size_t)snprintf(q + len, cap - len,
                                    "%s(%lld, 'item %08lld standard', %lld.%02lld, 'restocked "
                                    "from warehouse %02lld, lot %08lld; handle with care')",
                                    k ? ", " : "", id, id, 10 + id % 990, id % 100, id % 97, id);
        }
        PGresult *r = PQexec(w->c, q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(w->err, sizeof w->err, "the writer's INSERT failed: %s",
                     PQresultErrorMessage(r));
            PQclear(r);
            break;
        }
        PQclear(r);
        last_ack = bench_now_rt_us();
        if (w->ntx == w->ack_cap) {
            long cap = w->ack_cap ? 2 * w->ack_cap : 4096;
            int64_t *a = sa_realloc(w->ack, (size_t)cap * sizeof *a);
            if (a == NULL) {
                snprintf(w->err, sizeof w->err, "out of memory");
                break;
            }
            w->ack = a;
            w->ack_cap = cap;
        }
        w->ack[w->ntx++] = last_ack;
    }
    atomic_store(&w->w1, last_ack);
    sa_free(q);
    atomic_store(&w->done, 1);
    return NULL;
}

/* ---------------------------------------------------------------------
 * The reference: pg_recvlogical's output, read and timestamped here.
 * ------------------------------------------------------------------- */

/* A transaction pg_recvlogical delivered: its commit time, when we read
 * its COMMIT line, and its public.items rows. */
typedef struct recv_txn {
    int64_t ct_us, rx_us;
    int rows;
} recv_txn;

static struct {
    pthread_mutex_t mu;
    recv_txn *t;
    size_t len, cap;
    char err[256]; /* the first unparsable line, or "" */
} rv = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* "2024-05-01 12:34:56.123456+00" (timestamptz_to_str, ISO): µs since
 * 1970.  Fractions and offsets of any precision PostgreSQL prints. */
static int parse_pg_ts(const char *s, int64_t *us)
{
    int y, mo, d, h, mi, se, n = 0;
    if (sscanf(s, "%4d-%2d-%2d %2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6)
        return -1;
    s += n;
    int64_t frac = 0;
    int digits = 0;
    if (*s == '.')
        for (s++; isdigit((unsigned char)*s); s++)
            if (digits < 6) {
                frac = frac * 10 + (*s - '0');
                digits++;
            }
    for (; digits < 6; digits++)
        frac *= 10;
    long off = 0;
    if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1, oh = 0, om = 0, os = 0;
        if (sscanf(s + 1, "%2d:%2d:%2d", &oh, &om, &os) < 1)
            return -1;
        off = sign * (oh * 3600L + om * 60L + os);
    }
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *us = ((int64_t)t - off) * 1000000 + frac;
    return 0;
}

static void recv_line(const char *line, int64_t rx, int *rows)
{
    if (strncmp(line, "BEGIN", 5) == 0) {
        *rows = 0;
    } else if (strncmp(line, "table public.items: INSERT:", 27) == 0) {
        ++*rows;
    } else if (strncmp(line, "COMMIT", 6) == 0) {
        const char *at = strstr(line, "(at ");
        int64_t ct;
        if (at == NULL || parse_pg_ts(at + 4, &ct) != 0) {
            pthread_mutex_lock(&rv.mu);
            if (rv.err[0] == '\0')
                snprintf(rv.err, sizeof rv.err, "cannot read a commit time in \"%.200s\"", line);
            pthread_mutex_unlock(&rv.mu);
        } else if (*rows > 0) {
            pthread_mutex_lock(&rv.mu);
            if (rv.len == rv.cap) {
                size_t cap = rv.cap ? 2 * rv.cap : 4096;
                recv_txn *t = sa_realloc(rv.t, cap * sizeof *t);
                if (t != NULL) {
                    rv.t = t;
                    rv.cap = cap;
                }
            }
            if (rv.len < rv.cap)
                rv.t[rv.len++] = (recv_txn){ct, rx, *rows};
            else if (rv.err[0] == '\0')
                snprintf(rv.err, sizeof rv.err, "out of memory");
            pthread_mutex_unlock(&rv.mu);
        }
        *rows = 0;
    }
}

/* Reads pg_recvlogical's stdout until EOF; each read is timestamped at
 * once, so the time of a COMMIT line is when its bytes reached us. */
static void *recv_main(void *arg)
{
    int fd = *(int *)arg;
    static char b[1 << 16];
    size_t have = 0;
    int rows = 0, skipping = 0;
    for (;;) {
        ssize_t n = read(fd, b + have, sizeof b - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        int64_t rx = bench_now_rt_us();
        have += (size_t)n;
        char *s = b, *nl;
        while ((nl = memchr(s, '\n', (size_t)(b + have - s))) != NULL) {
            *nl = '\0';
            if (!skipping)
                recv_line(s, rx, &rows);
            skipping = 0;
            s = nl + 1;
        }
        have = (size_t)(b + have - s);
        memmove(b, s, have);
        if (have == sizeof b - 1) { /* a line longer than the buffer: not ours */
            b[have] = '\0';
            if (strncmp(b, "table public.items: INSERT:", 27) == 0)
                rows++;
            skipping = 1;
            have = 0;
        }
    }
    return NULL;
}

static void start_recv(const bench_opts *o)
{
    SQL_DO("SELECT pg_create_logical_replication_slot('" BENCH_RECV_SLOT "', 'test_decoding')");
    char bin[4200], conn[4400];
    snprintf(bin, sizeof bin, "%s/pg_recvlogical", o->pg_bindir);
    /* commit times printed in UTC; parse_pg_ts reads any offset anyway */
    snprintf(conn, sizeof conn, "%s options='-c timezone=UTC'", sa_pgh_conninfo(g.pg));
    const char *argv[] = {bin,
                          "-d",
                          conn,
                          "--slot",
                          BENCH_RECV_SLOT,
                          "--start",
                          "--no-loop",
                          "-f",
                          "-",
                          "-F",
                          "0",
                          "-s",
                          "1",
                          "-o",
                          "include-timestamp=1",
                          "-o",
                          "skip-empty-xacts=1",
                          "-o",
                          "include-xids=0",
                          NULL};
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe: %s", strerror(errno));
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    g.recv = spawn(argv, g.recv_log, fds[1]);
    close(fds[1]);
    g.recv_fd = fds[0];
    if (pthread_create(&g.recv_thr, NULL, recv_main, &g.recv_fd) != 0)
        die("cannot start the pg_recvlogical reader thread");
    g.recv_started = 1;
}

/* Rows pg_recvlogical delivered with commit time in [w0, w1]; their
 * latencies into lat (may be NULL). */
static int64_t recv_collect(int64_t w0, int64_t w1, wvec *lat)
{
    int64_t rows = 0;
    pthread_mutex_lock(&rv.mu);
    if (rv.err[0] != '\0') {
        char e[256];
        snprintf(e, sizeof e, "%s", rv.err);
        pthread_mutex_unlock(&rv.mu);
        die("pg_recvlogical's output: %s", e);
    }
    for (size_t i = 0; i < rv.len; i++) {
        const recv_txn *t = &rv.t[i];
        if (t->ct_us < w0 || t->ct_us > w1)
            continue;
        rows += t->rows;
        if (lat != NULL)
            wvec_add(lat, t->rx_us - t->ct_us, t->rows, 0);
    }
    pthread_mutex_unlock(&rv.mu);
    return rows;
}

/* ---------------------------------------------------------------------
 * One phase: N edges polling while the writer runs.
 * ------------------------------------------------------------------- */

typedef struct phase_result {
    double ops_s;     /* delivered to all edges, receipts inside the window */
    double offered_s; /* edges x measured rows / window */
    double p50, p99;  /* ms, bridge */
    double r50, r99;  /* ms, pg_recvlogical */
    double rss_mb;
    double window_s;
    double txn_s;   /* the writer's achieved rate */
    double drain_s; /* from the window's end until all was delivered, or the cap */
    double warm_s;  /* until every edge had the ping */
    double ops_per_answer;
    double bytes_per_op; /* answer bytes / ops, over the phase */
    double bridge_cpu_s; /* the bridge's user + system CPU over window and drain */
    double self_cpu_s;   /* this process's (edges, writer, reader) over the same */
    int p50_lower, p99_lower, r50_lower, r99_lower; /* the value is a lower bound */
    int64_t missing;                                /* measured ops some edge never received */
    int64_t recv_missing;
    int unstarted; /* edges without the ping after BENCH_WARMUP_MAX_S */
    long fails;    /* failed polls (transport or HTTP status) */
} phase_result;

typedef struct phase {
    const bench_opts *o;
    int n;
    edge *e;
    CURLM *m;
    writer w;
    int64_t w0; /* cached once published */
    wvec lat;   /* bridge latencies, µs */
    wvec rx;    /* receipts: (realtime µs, ops) for throughput */
    long answers, answers_ops, fails;
    double answer_bytes;
    int started; /* edges that have had an answer with ops */
} phase;

/* (Re)issue e's poll from its cursor. */
static void edge_poll(phase *ph, edge *e)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/changes?after=%llu&wait=%d%s%s", g.port,
             (unsigned long long)e->cursor, ph->o->wait_s, g.instance[0] ? "&instance=" : "",
             g.instance);
    e->body.len = 0;
    e->rx_us = 0;
    e->retry_at = 0;
    curl_easy_setopt(e->h, CURLOPT_URL, url);
    CURLMcode mc = curl_multi_add_handle(ph->m, e->h);
    if (mc != CURLM_OK)
        die("curl_multi_add_handle: %s", curl_multi_strerror(mc));
}

static void edge_init(phase *ph, edge *e, int idx, uint64_t head)
{
    e->idx = idx;
    e->cursor = head;
    e->h = curl_easy_init();
    if (e->h == NULL)
        die("curl_easy_init failed");
    char auth[256];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g.tokens[idx]);
    e->hdr = curl_slist_append(NULL, auth);
    snprintf(e->iface, sizeof e->iface, "host!127.0.0.%d", 1 + idx / BENCH_PER_ADDR);
    curl_easy_setopt(e->h, CURLOPT_HTTPHEADER, e->hdr);
    curl_easy_setopt(e->h, CURLOPT_INTERFACE, e->iface);
    curl_easy_setopt(e->h, CURLOPT_WRITEFUNCTION, edge_write);
    curl_easy_setopt(e->h, CURLOPT_WRITEDATA, e);
    curl_easy_setopt(e->h, CURLOPT_PRIVATE, e);
    curl_easy_setopt(e->h, CURLOPT_TIMEOUT, (long)ph->o->wait_s + 35L);
    curl_easy_setopt(e->h, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(e->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e->h, CURLOPT_TCP_NODELAY, 1L);
    edge_poll(ph, e);
}

static void edge_free(phase *ph, edge *e)
{
    if (e->h != NULL) {
        if (e->retry_at == 0)
            curl_multi_remove_handle(ph->m, e->h);
        curl_easy_cleanup(e->h);
    }
    curl_slist_free_all(e->hdr);
    sa_free(e->body.p);
    memset(e, 0, sizeof *e);
}

/* Check an answer against a full JSON parse (--verify): the same ops, the
 * same commit times, the same next. */
static void verify_answer(const edge *e, const int64_t *cts, size_t ncts, uint64_t next)
{
    json_error_t je;
    json_t *j = json_loads(e->body.p, JSON_DECODE_ANY, &je);
    json_t *ops = j != NULL ? json_object_get(j, "ops") : NULL;
    json_t *jn = j != NULL ? json_object_get(j, "next") : NULL;
    if (!json_is_array(ops) || !json_is_integer(jn))
        die("edge%d: an answer that is not {\"ops\": [...], \"next\": N}: %.300s", e->idx + 1,
            e->body.p);
    if (json_array_size(ops) != ncts || (uint64_t)json_integer_value(jn) != next)
        die("edge%d: the byte scan found %zu ops (next %llu), jansson %zu (next %lld)", e->idx + 1,
            ncts, (unsigned long long)next, json_array_size(ops),
            (long long)json_integer_value(jn));
    for (size_t i = 0; i < ncts; i++) {
        json_t *ct = json_object_get(json_object_get(json_array_get(ops, i), "pg"), "commit_time");
        if (!json_is_integer(ct) || json_integer_value(ct) != cts[i])
            die("edge%d: op %zu: the byte scan's commit_time differs from jansson's", e->idx + 1,
                i);
    }
    json_decref(j);
}

/*
 * Take one answer of /v1/changes apart without a JSON parser (at 1000
 * edges the load process would spend more time parsing than the bridge
 * encoding): every op from PostgreSQL carries "commit_time": N, the ops
 * array comes before the top-level "next": N, and no column of
 * public.items holds those strings.  --verify compares with jansson.
 */
static void edge_answer(phase *ph, edge *e)
{
    static const char kct[] = "\"commit_time\":", knext[] = "\"next\":";
    const char *b = e->body.p != NULL ? e->body.p : "";
    size_t len = e->body.len;
    if (memmem(b, len, "\"error\":", 8) != NULL)
        die("edge%d: the bridge answered an error: %.300s", e->idx + 1, b);
    int64_t *cts = g_cts.v;
    size_t ncts = 0;
    const char *p = b, *end = b + len, *q;
    int64_t w0 = ph->w0, in_window = 0;
    while ((q = memmem(p, (size_t)(end - p), kct, sizeof kct - 1)) != NULL) {
        char *stop;
        q += sizeof kct - 1;
        long long ct = strtoll(q, &stop, 10);
        if (stop == q)
            die("edge%d: a commit_time that is not a number: %.100s", e->idx + 1, q);
        p = stop;
        if (ph->o->verify) {
            if (ncts == g_cts.cap) {
                g_cts.cap = g_cts.cap ? 2 * g_cts.cap : 1024;
                cts = g_cts.v = xrealloc(g_cts.v, g_cts.cap * sizeof *cts);
            }
            cts[ncts] = ct;
        }
        ncts++;
        if (w0 > 0 && ct >= w0) {
            wvec_add(&ph->lat, e->rx_us - ct, 1, 0);
            in_window++;
        }
    }
    q = memmem(p, (size_t)(end - p), knext, sizeof knext - 1);
    char *stop = NULL;
    unsigned long long next = q != NULL ? strtoull(q + sizeof knext - 1, &stop, 10) : 0;
    if (q == NULL || stop == q + sizeof knext - 1 || next < e->cursor)
        die("edge%d: no usable \"next\" (cursor %llu) in: %.300s", e->idx + 1,
            (unsigned long long)e->cursor, b);
    if (ph->o->verify)
        verify_answer(e, cts, ncts, next);
    e->cursor = next;
    e->got += in_window;
    ph->answers++;
    ph->answer_bytes += (double)len;
    if (ncts > 0) {
        ph->answers_ops += (long)ncts;
        if (w0 > 0 && e->rx_us >= w0)
            wvec_add(&ph->rx, e->rx_us, (int64_t)ncts, 0);
        if (e->answered++ == 0)
            ph->started++;
    }
}

/* A transfer ended: take the answer, then poll again (at once, or after a
 * pause when it failed). */
static void edge_done(phase *ph, edge *e, CURLcode cc)
{
    long status = 0;
    curl_easy_getinfo(e->h, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(ph->m, e->h);
    if (cc == CURLE_OK && status == 200) {
        e->fails = 0;
        edge_answer(ph, e);
        edge_poll(ph, e);
        return;
    }
    ph->fails++;
    if (status == 401 || status == 403 || status == 409)
        die("edge%d: HTTP %ld: %.300s", e->idx + 1, status, e->body.p ? e->body.p : "");
    if (ph->o->verbose)
        fprintf(stderr, "# edge%d: poll failed: %s, HTTP %ld: %.200s\n", e->idx + 1,
                curl_easy_strerror(cc), status, e->body.p ? e->body.p : "");
    if (++e->fails > BENCH_MAX_FAILS)
        die("edge%d: %d failed polls in a row, the last: %s, HTTP %ld: %.200s", e->idx + 1,
            e->fails, curl_easy_strerror(cc), status, e->body.p ? e->body.p : "");
    e->retry_at = (int64_t)(bench_now_s() * 1000) + BENCH_RETRY_MS;
}

/* Drive the transfers for up to timeout_ms. */
static void pump(phase *ph, int timeout_ms)
{
    if (ph->n == 0) {
        bench_sleep_ms(timeout_ms);
        return;
    }
    int numfds;
    CURLMcode mc = curl_multi_poll(ph->m, NULL, 0, timeout_ms, &numfds);
    if (mc != CURLM_OK)
        die("curl_multi_poll: %s", curl_multi_strerror(mc));
    int running;
    mc = curl_multi_perform(ph->m, &running);
    if (mc != CURLM_OK)
        die("curl_multi_perform: %s", curl_multi_strerror(mc));
    if (ph->w0 == 0)
        ph->w0 = atomic_load(&ph->w.w0);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(ph->m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        edge *e = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&e);
        edge_done(ph, e, msg->data.result);
    }
    int64_t now_ms = (int64_t)(bench_now_s() * 1000);
    for (int i = 0; i < ph->n; i++)
        if (ph->e[i].retry_at != 0 && ph->e[i].retry_at <= now_ms)
            edge_poll(ph, &ph->e[i]);
}

static void clear_peak_rss(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs("5", f); /* reset VmHWM to the current RSS (Linux >= 4.0) */
        fclose(f);
    }
}

static long long g_next_id = 1;

/* CPU seconds (user + system) a process has used: pid 0 for this one. */
static double cpu_s(pid_t pid)
{
    if (pid == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
    char path[64], line[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *p = strrchr(line, ')'); /* after the command name */
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Warm-up: one transaction (not measured) and no load, until every edge has
 * received it, then half a second for their next polls to reach the
 * bridge.  So each edge is connected, authenticated and in its poll loop,
 * and nothing is queued, when the window opens.
 */
static void warm_up(phase *ph, PGconn *wc, phase_result *res)
{
    double t0 = bench_now_s();
    char q[256];
    snprintf(q, sizeof q,
             "INSERT INTO public.items (id, name, price, note) VALUES (%lld, 'ping', 0, 'ping')",
             g_next_id++);
    PGresult *r = PQexec(wc, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("the warm-up INSERT failed: %s", PQresultErrorMessage(r));
    PQclear(r);
    while (ph->started < ph->n && bench_now_s() - t0 < BENCH_WARMUP_MAX_S) {
        pump(ph, 50);
        bridge_alive();
    }
    res->unstarted = ph->n - ph->started;
    res->warm_s = bench_now_s() - t0;
    for (double t1 = bench_now_s(); bench_now_s() - t1 < 0.5;)
        pump(ph, 50);
}

static void run_phase(const bench_opts *o, int n, PGconn *wc, phase_result *res)
{
    phase ph = {.o = o, .n = n};
    memset(res, 0, sizeof *res);
    uint64_t head = healthz_head();
    if (n > 0) {
        ph.m = curl_multi_init();
        if (ph.m == NULL)
            die("curl_multi_init failed");
        curl_multi_setopt(ph.m, CURLMOPT_MAXCONNECTS, (long)n + 16);
        ph.e = sa_calloc((size_t)n, sizeof *ph.e);
        if (ph.e == NULL)
            die("out of memory");
        for (int i = 0; i < n; i++)
            edge_init(&ph, &ph.e[i], i, head);
    }
    clear_peak_rss(g.bridge);
    warm_up(&ph, wc, res);

    /* the window: the writer's steady load */
    double cpu_b0 = cpu_s(g.bridge), cpu_s0 = cpu_s(0);
    ph.w.c = wc;
    ph.w.rate = o->rate;
    ph.w.seconds = o->seconds;
    ph.w.per = o->per_txn;
    ph.w.next_id = g_next_id;
    pthread_t wt;
    if (pthread_create(&wt, NULL, writer_main, &ph.w) != 0)
        die("cannot start the writer thread");
    while (!atomic_load(&ph.w.done)) {
        pump(&ph, 50);
        bridge_alive();
    }
    pthread_join(wt, NULL);
    if (ph.w.err[0] != '\0')
        die("%s", ph.w.err);
    g_next_id = ph.w.next_id;
    ph.w0 = atomic_load(&ph.w.w0);
    int64_t w1 = atomic_load(&ph.w.w1);
    if (ph.w0 == 0 || ph.w.ntx == 0)
        die("the writer committed nothing in the window");
    int64_t expected = (int64_t)ph.w.ntx * o->per_txn;

    /* drain: every edge and pg_recvlogical hold every measured op */
    double td = bench_now_s();
    double drain_max = o->seconds > 10 ? o->seconds : 10;
    int64_t recv_rows = 0;
    for (;;) {
        int behind = 0;
        for (int i = 0; i < n; i++)
            behind += ph.e[i].got < expected;
        recv_rows = recv_collect(ph.w0, w1, NULL);
        if (behind == 0 && recv_rows >= expected)
            break;
        if (bench_now_s() - td > drain_max)
            break;
        pump(&ph, 50);
        bridge_alive();
    }
    int64_t t_end = bench_now_rt_us();
    res->drain_s = bench_now_s() - td;
    res->rss_mb = (double)bench_peak_rss_kb(g.bridge) / 1024.0;
    res->bridge_cpu_s = cpu_s(g.bridge) - cpu_b0;
    res->self_cpu_s = cpu_s(0) - cpu_s0;

    /* An edge receives in commit order, so the ops it still lacks are the
     * last ones: op k of the window belongs to transaction k / per, whose
     * commit had returned by ack[k / per], so its latency is at least
     * t_end - ack[k / per]: a lower bound, shown as such. */
    for (int i = 0; i < n; i++) {
        edge *e = &ph.e[i];
        if (e->got > expected)
            die("edge%d received %lld measured ops, %lld were committed", i + 1, (long long)e->got,
                (long long)expected);
        for (int64_t k = e->got; k < expected;) {
            long tx = (long)(k / o->per_txn);
            int64_t upto = (int64_t)(tx + 1) * o->per_txn;
            wvec_add(&ph.lat, t_end - ph.w.ack[tx], upto - k, 1);
            k = upto;
        }
        res->missing += expected - e->got;
        edge_free(&ph, e);
    }
    if (ph.m != NULL)
        curl_multi_cleanup(ph.m);
    sa_free(ph.e);

    wvec rlat = {0};
    recv_rows = recv_collect(ph.w0, w1, &rlat);
    res->recv_missing = expected - recv_rows;
    if (res->recv_missing > 0) /* (not per transaction: it never happened so far) */
        wvec_add(&rlat, t_end - w1, res->recv_missing, 1);
    res->window_s = (double)(w1 - ph.w0) / 1e6;
    res->txn_s = (double)ph.w.ntx / res->window_s;
    res->offered_s = (double)n * (double)expected / res->window_s;
    int64_t in_window = 0;
    for (size_t i = 0; i < ph.rx.len; i++)
        if (ph.rx.s[i].v <= w1)
            in_window += ph.rx.s[i].n;
    res->ops_s = (double)in_window / res->window_s;
    res->p50 = wvec_pct_ms(&ph.lat, 0.50, &res->p50_lower);
    res->p99 = wvec_pct_ms(&ph.lat, 0.99, &res->p99_lower);
    res->r50 = wvec_pct_ms(&rlat, 0.50, &res->r50_lower);
    res->r99 = wvec_pct_ms(&rlat, 0.99, &res->r99_lower);
    res->fails = ph.fails;
    res->ops_per_answer = ph.answers > 0 ? (double)ph.answers_ops / (double)ph.answers : 0;
    res->bytes_per_op = ph.answers_ops > 0 ? ph.answer_bytes / (double)ph.answers_ops : 0;
    if (o->verbose)
        fprintf(stderr,
                "# %d edges: warm-up %.1f s, window %.2f s, %ld txns (%.0f/s), %ld answers "
                "(%.1f ops, %.0f bytes an op), drain %.2f s, %lld ops missing, %ld failed polls; "
                "CPU bridge %.1f s, load process %.1f s; pg_recvlogical %lld rows of %lld\n",
                n, res->warm_s, res->window_s, ph.w.ntx, res->txn_s, ph.answers,
                res->ops_per_answer, res->bytes_per_op, res->drain_s, (long long)res->missing,
                ph.fails, res->bridge_cpu_s, res->self_cpu_s, (long long)recv_rows,
                (long long)expected);
    if (o->verbose && n > 0) { /* deliveries second by second from w0: stalls show */
        int64_t per_s[64] = {0};
        int nsec = (int)(res->window_s + res->drain_s) + 1;
        nsec = nsec > 64 ? 64 : nsec;
        for (size_t i = 0; i < ph.rx.len; i++) {
            int64_t k = (ph.rx.s[i].v - ph.w0) / 1000000;
            if (k >= 0 && k < nsec)
                per_s[k] += ph.rx.s[i].n;
        }
        fprintf(stderr, "# %d edges: ops received each second from w0:", n);
        for (int k = 0; k < nsec; k++)
            fprintf(stderr, " %lld", (long long)per_s[k]);
        fputc('\n', stderr);
    }
    wvec_free(&rlat);
    wvec_free(&ph.lat);
    wvec_free(&ph.rx);
    sa_free(ph.w.ack);
}

/* ---------------------------------------------------------------------
 * Set-up.
 * ------------------------------------------------------------------- */

static void raise_nofile(int edges)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)edges + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        die("%d edges need %llu file descriptors; the hard limit is %llu (raise ulimit -Hn)", edges,
            (unsigned long long)want, (unsigned long long)rl.rlim_max);
}

static void create_peers(int n)
{
    char *t = sql("SELECT softadastra.create_peer(format('edge%%s', g)) "
                  "FROM generate_series(1, %d) g ORDER BY g",
                  n);
    g.tokens = sa_calloc((size_t)n, sizeof *g.tokens);
    if (g.tokens == NULL)
        die("out of memory");
    char *save = NULL;
    for (char *tok = strtok_r(t, "\n", &save); tok != NULL && g.ntokens < n;
         tok = strtok_r(NULL, "\n", &save)) {
        if (strlen(tok) > 128 || strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                             "0123456789-_.~+/=") != strlen(tok))
            die("create_peer returned an unexpected token \"%.40s\"", tok);
        if ((g.tokens[g.ntokens++] = sa_strdup(tok)) == NULL)
            die("out of memory");
    }
    sa_free(t);
    if (g.ntokens != n)
        die("create_peer returned %d tokens for %d peers", g.ntokens, n);
}

/* The bridge's default --max-connections. */
#define BENCH_BRIDGE_MAX_CONNS 4096

static void start_bridge(const bench_opts *o, int max_edges)
{
    char data[4200], conns[32];
    snprintf(data, sizeof data, "%s/bridge", g.scratch);
    snprintf(conns, sizeof conns, "%d", max_edges + 64); /* + healthz and slack */
    const char *argv[] = {
        o->bridge,  "run",         "--pg",          sa_pgh_conninfo(g.pg), "--data", data,
        "--listen", "127.0.0.1:0", "--no-progress", "--log-level",         "info",   NULL,
        NULL,       NULL};
    if (max_edges + 64 > BENCH_BRIDGE_MAX_CONNS) {
        argv[11] = "--max-connections";
        argv[12] = conns;
    }
    g.bridge = spawn(argv, g.bridge_log, -1);
    double t0 = bench_now_s();
    char rest[512];
    while (!bench_log_find(g.bridge_log, "streaming from slot", rest, sizeof rest)) {
        bridge_alive();
        if (bench_now_s() - t0 > BENCH_START_TIMEOUT_S)
            die("sa-bridge did not start streaming within %.0f s", BENCH_START_TIMEOUT_S);
        bench_sleep_ms(20);
    }
    if (!bench_log_find(g.bridge_log, "HTTP API v1 listening on 127.0.0.1:", rest, sizeof rest) ||
        (g.port = atoi(rest)) <= 0)
        die("the bridge did not log its HTTP port");
    const char *inst = strstr(rest, "(instance ");
    if (inst != NULL) {
        inst += strlen("(instance ");
        snprintf(g.instance, sizeof g.instance, "%.*s", (int)strcspn(inst, ")"), inst);
    }
}

/* ---------------------------------------------------------------------
 * Driver.
 * ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_fanout [--edges LIST] [--seconds S] [--rate TXNS] [--rows-per-txn N]\n"
            "                    [--wait S] [--reps N] [--dir DIR] [--bridge PATH]\n"
            "                    [--pg-bindir DIR] [--quick] [--verify] [--check] [--verbose]\n"
            "  N edges long-poll one sa-bridge's /v1/changes (libcurl multi, one process)\n"
            "  while PostgreSQL commits a steady load; ops/s delivered, commit-to-edge p50/p99\n"
            "  and the bridge's peak RSS, next to pg_recvlogical (test_decoding) on the same\n"
            "  commits.\n"
            "  --edges LIST   comma-separated edge counts (default 10,100,1000)\n"
            "  --seconds S    measured window per edge count (default 10)\n"
            "  --rate TXNS    transactions per second committed (default 200)\n"
            "  --rows-per-txn N  rows per transaction (default 5)\n"
            "  --wait S       the edges' long-poll wait (default 25)\n"
            "  --reps N       repetitions; the median of each figure is reported (default 1)\n"
            "  --dir DIR      where the scratch directory is made (default $SA_TEST_TMPDIR or\n"
            "                 /tmp); removed at the end\n"
            "  --bridge PATH  the sa-bridge binary (default %s)\n"
            "  --pg-bindir DIR  where pg_recvlogical is (default $PG_BINDIR or %s)\n"
            "  --quick        smoke run: 10 edges, 3 s, answers verified with jansson\n"
            "  --verify       parse every answer with jansson too and compare (slower)\n"
            "  --check        exit 1 if an edge count got less than %.0f%% of the offered\n"
            "                 ops/s or an op was not delivered\n"
            "  --verbose      per-phase details on stderr\n",
            SA_BRIDGE_BIN, SA_PG_BINDIR, BENCH_KEEP_UP * 100);
}

static double num_arg(const char *opt, const char *v, double lo, double hi)
{
    double x;
    if (bench_num(v, lo, hi, &x) != 0)
        die("option %s needs a number in %g..%g, got \"%s\"", opt, lo, hi, v);
    return x;
}

static void parse_args(int argc, char **argv, bench_opts *o)
{
    /* options taking a value first */
    static const char *const names[] = {
        "--edges",  "--seconds",   "--rate",  "--rows-per-txn", "--wait",  "--reps",   "--dir",
        "--bridge", "--pg-bindir", "--quick", "--verify",       "--check", "--verbose"};
    enum { NOPTS = sizeof names / sizeof names[0], NVALUED = 9 };
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
        case 0: {
            o->ncounts = 0;
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", v);
            char *save = NULL;
            for (char *s = strtok_r(tmp, ",", &save); s != NULL; s = strtok_r(NULL, ",", &save)) {
                if (o->ncounts == BENCH_MAX_COUNTS)
                    die("option --edges takes at most %d counts", BENCH_MAX_COUNTS);
                o->counts[o->ncounts++] = (int)num_arg("--edges", s, 1, BENCH_MAX_EDGES);
                if (o->counts[o->ncounts - 1] != atof(s))
                    die("option --edges takes whole numbers, got \"%s\"", s);
            }
            if (o->ncounts == 0)
                die("option --edges needs at least one count");
            break;
        }
        case 1:
            o->seconds = num_arg(names[k], v, 1, 3600);
            break;
        case 2:
            o->rate = num_arg(names[k], v, 1, 100000);
            break;
        case 3:
            o->per_txn = (int)num_arg(names[k], v, 1, 1000);
            break;
        case 4:
            o->wait_s = (int)num_arg(names[k], v, 1, 60);
            break;
        case 5:
            o->reps = (int)num_arg(names[k], v, 1, BENCH_MAX_REPS);
            break;
        case 6:
            o->dir = v;
            break;
        case 7:
            o->bridge = v;
            break;
        case 8:
            o->pg_bindir = v;
            break;
        case 9:
            o->quick = 1;
            break;
        case 10:
            o->verify = 1;
            break;
        case 11:
            o->check = 1;
            break;
        default:
            o->verbose = 1;
        }
    }
    if (o->quick) {
        if (!seen[0]) {
            o->counts[0] = 10;
            o->ncounts = 1;
        }
        if (!seen[1])
            o->seconds = 3;
        o->verify = 1;
    }
}

/* Median over reps of the double at byte offset off of each result. */
static double med_of(const phase_result *r, int reps, size_t off)
{
    double v[BENCH_MAX_REPS];
    for (int i = 0; i < reps; i++)
        v[i] = *(const double *)((const char *)&r[i] + off);
    return bench_median(v, reps);
}

/* "12.34", or ">= 12.34" when it is a lower bound; suffix after it. */
static void fmt_bound(char out[40], double v, int lower, const char *suffix)
{
    snprintf(out, 40, "%s%.2f%s", lower ? "≥ " : "", v, suffix);
}

#define MED(r, reps, field) med_of((r), (reps), offsetof(phase_result, field))

int main(int argc, char **argv)
{
    bench_opts o;
    parse_args(argc, argv, &o);
    double t_start = bench_now_s();
    signal(SIGPIPE, SIG_IGN);

    int max_edges = 0;
    for (int i = 0; i < o.ncounts; i++)
        max_edges = o.counts[i] > max_edges ? o.counts[i] : max_edges;
    if (access(o.bridge, X_OK) != 0)
        die("no sa-bridge at \"%s\" (build it, or pass --bridge)", o.bridge);
    char recv_bin[4200];
    snprintf(recv_bin, sizeof recv_bin, "%s/pg_recvlogical", o.pg_bindir);
    if (access(recv_bin, X_OK) != 0)
        die("no pg_recvlogical at \"%s\" (pass --pg-bindir)", recv_bin);
    if (!extension_installed(o.pg_bindir)) {
        printf("bench_fanout: SKIP: the softadastra extension is not installed (run `cmake "
               "--build <dir> --target pgext_install`)\n");
        return BENCH_SKIP;
    }
    raise_nofile(max_edges);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        die("curl_global_init failed");
    mkdir(o.dir, 0755);
    if (snprintf(g.scratch, sizeof g.scratch, "%s/sa-bench-fanout-XXXXXX", o.dir) >=
            (int)sizeof g.scratch ||
        mkdtemp(g.scratch) == NULL) {
        g.scratch[0] = '\0';
        die("cannot make a scratch directory under \"%s\": %s", o.dir, strerror(errno));
    }
    snprintf(g.bridge_log, sizeof g.bridge_log, "%s/bridge.log", g.scratch);
    snprintf(g.recv_log, sizeof g.recv_log, "%s/recv.log", g.scratch);

    /* PostgreSQL's default decoding memory (the harness's 64kB is for tests) */
    sa_pgh_options po = {.extra_conf = "logical_decoding_work_mem = '64MB'\n"};
    sa_err err;
    if (sa_pgh_start(&po, &g.pg, &err) != 0)
        die("cannot start a PostgreSQL cluster: %s", err.msg);
    SQL_DO("CREATE EXTENSION softadastra");
    SQL_DO("CREATE TABLE public.items (id bigint PRIMARY KEY, name text, price numeric, "
           "note text)");
    SQL_DO("SELECT softadastra.add_table('public.items')");
    create_peers(max_edges);
    start_bridge(&o, max_edges);
    start_recv(&o);
    PGconn *wc = PQconnectdb(sa_pgh_conninfo(g.pg));
    if (PQstatus(wc) != CONNECTION_OK)
        die("the writer cannot connect: %s", PQerrorMessage(wc));
    double setup_s = bench_now_s() - t_start;

    /* pg_recvlogical alone, then each edge count, rep after rep */
    static phase_result res[BENCH_MAX_COUNTS][BENCH_MAX_REPS];
    phase_result alone;
    run_phase(&o, 0, wc, &alone);
    for (int rep = 0; rep < o.reps; rep++)
        for (int c = 0; c < o.ncounts; c++)
            run_phase(&o, o.counts[c], wc, &res[c][rep]);
    PQfinish(wc);

    char *version = sql("SHOW server_version");
    printf("# bench_fanout: edges long-polling sa-bridge /v1/changes (wait=%d) vs. "
           "pg_recvlogical (test_decoding), the same commits\n",
           o.wait_s);
    printf("# PostgreSQL %s, fsync=off; load %.0f txns/s of %d rows (%.0f rows/s) for %.0f s "
           "per edge count; median of %d rep(s); set-up %.1f s\n",
           version, o.rate, o.per_txn, o.rate * o.per_txn, o.seconds, o.reps, setup_s);
    printf("# pg_recvlogical alone (no edges): p50 %.2f ms, p99 %.2f ms; bridge peak RSS idle "
           "%.1f MB\n\n",
           alone.r50, alone.r99, alone.rss_mb);
    sa_free(version);
    printf("| edges | ops delivered/s | p50 ms | p99 ms | pg_recvlogical p50 ms | p99 ms | "
           "ratio p50 (bridge/pg_recvlogical) | ratio p99 | bridge peak RSS MB |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    int short_fall = 0, any_lower = 0;
    for (int c = 0; c < o.ncounts; c++) {
        const phase_result *r = res[c];
        double rat50[BENCH_MAX_REPS], rat99[BENCH_MAX_REPS];
        int lo[4] = {0}; /* bridge p50, p99, reference p50, p99: a lower bound in some rep */
        for (int i = 0; i < o.reps; i++) {
            rat50[i] = r[i].r50 > 0 ? r[i].p50 / r[i].r50 : 0;
            rat99[i] = r[i].r99 > 0 ? r[i].p99 / r[i].r99 : 0;
            lo[0] |= r[i].p50_lower;
            lo[1] |= r[i].p99_lower;
            lo[2] |= r[i].r50_lower;
            lo[3] |= r[i].r99_lower;
        }
        any_lower |= lo[0] | lo[1] | lo[2] | lo[3];
        char f[6][40];
        fmt_bound(f[0], MED(r, o.reps, p50), lo[0], "");
        fmt_bound(f[1], MED(r, o.reps, p99), lo[1], "");
        fmt_bound(f[2], MED(r, o.reps, r50), lo[2], "");
        fmt_bound(f[3], MED(r, o.reps, r99), lo[3], "");
        fmt_bound(f[4], bench_median(rat50, o.reps), lo[0], lo[2] ? "?" : "");
        fmt_bound(f[5], bench_median(rat99, o.reps), lo[1], lo[3] ? "?" : "");
        printf("| %d | %.0f | %s | %s | %s | %s | %s | %s | %.1f |\n", o.counts[c],
               MED(r, o.reps, ops_s), f[0], f[1], f[2], f[3], f[4], f[5], MED(r, o.reps, rss_mb));
    }
    printf("\n");
    if (any_lower)
        printf("# ≥ : some ops were still not delivered at the end of the drain; they count "
               "with the latency they had by then, so the figure is a lower bound\n");
    for (int c = 0; c < o.ncounts; c++) {
        const phase_result *r = res[c];
        int64_t missing = 0, recv_missing = 0;
        long fails = 0;
        int unstarted = 0;
        for (int i = 0; i < o.reps; i++) {
            missing += r[i].missing;
            recv_missing += r[i].recv_missing;
            fails += r[i].fails;
            unstarted += r[i].unstarted;
        }
        double ops = MED(r, o.reps, ops_s), offered = MED(r, o.reps, offered_s);
        int fell_short = ops < BENCH_KEEP_UP * offered || missing > 0;
        short_fall |= fell_short;
        printf("# %d edges: offered %.0f ops/s (writer %.0f txns/s), delivered %.0f%%; "
               "warm-up %.1f s; %.1f ops (%.0f bytes each) per answer; drain %.1f s, then "
               "%lld ops not delivered; %ld failed polls; CPU over window + drain: bridge %.1f s, "
               "load process %.1f s%s%s\n",
               o.counts[c], offered, MED(r, o.reps, txn_s), offered > 0 ? 100 * ops / offered : 0,
               MED(r, o.reps, warm_s), MED(r, o.reps, ops_per_answer), MED(r, o.reps, bytes_per_op),
               MED(r, o.reps, drain_s), (long long)missing, fails, MED(r, o.reps, bridge_cpu_s),
               MED(r, o.reps, self_cpu_s),
               unstarted > 0 ? "; some edges never got the warm-up ping" : "",
               recv_missing > 0 ? "; pg_recvlogical missed rows" : "");
    }
    /* its log goes with the scratch directory */
    bench_log_problems(g.bridge_log, " level=warn ", " level=error ");
    cleanup();
    printf("%s; %.1f s total%s\n",
           short_fall ? "the bridge did NOT keep up at every edge count"
                      : "the bridge kept up at every edge count",
           bench_now_s() - t_start,
           o.quick ? " (--quick: a smoke run, too short to mean much)" : "");
    curl_global_cleanup();
    return o.check && short_fall ? 1 : 0;
}
