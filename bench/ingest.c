/*
 * bench/ingest.c — bench_ingest: how fast sa-bridge turns PostgreSQL commits
 * into durable WAL (durability policy `group`), next to pg_recvlogical
 * receiving the same changes from the same server in the same run.
 *
 * Method (one throwaway PostgreSQL 15 cluster from the test harness):
 *
 *   setup    table public.items (id bigint primary key, name text, price
 *            numeric, note text: about 100 bytes a row); sa-bridge is started
 *            once so it creates its publication and slot and does its
 *            (empty) initial sync, waited for until caught up, then stopped;
 *            a second slot, created with pg_create_logical_replication_slot
 *            (pgoutput), is pg_recvlogical's.
 *   shapes   "1-row": N transactions of one INSERT row each (default
 *            N = 50000); "1000-row": N/1000 transactions of 1000 rows
 *            (default 500 x 1000).  A server-side procedure generates them
 *            (COMMIT in a PL/pgSQL loop), so generation is fast and apart
 *            from the timing.
 *   one rep  with both consumers stopped:
 *            1. sync point: CHECKPOINT (it logs a running-xacts record) and
 *               one 1-row transaction; both consumers are run up to it.
 *               This moves both slots' restart_lsn and confirmed_flush_lsn
 *               to just before the backlog, so neither re-decodes older WAL
 *               and each processes exactly the backlog.  These runs are timed
 *               too: they are the start-up overhead line (a backlog of one
 *               row).
 *            2. generate the backlog; target = pg_current_wal_lsn() right
 *               after the last commit.
 *            3. time each consumer alone, one after the other, alternating
 *               which goes first from rep to rep, from process start to
 *               "durable up to target":
 *                 pg_recvlogical  -o proto_version=2 -o publication_names=P
 *                                 -o streaming=on -o messages=true (what the
 *                                 bridge asks for), --endpos=target, writing
 *                                 a file: the process exits once it has
 *                                 written and fsynced up to target (default
 *                                 --fsync-interval, 10 s: it fsyncs the file
 *                                 at endpos before it exits).  Timed until
 *                                 it exits.
 *                 sa-bridge       run --durability group; timed until its
 *                                 slot's confirmed_flush_lsn >= target,
 *                                 polled every 10 ms (the bridge confirms
 *                                 only what is durable in its WAL; it sends
 *                                 feedback right after each commit).  Its
 *                                 VmHWM is read, then it gets SIGTERM.
 *                                 --status-interval-ms 100: should other WAL
 *                                 slip in after the last commit, the bridge
 *                                 confirms it on its idle timer, which must
 *                                 not weigh more than pg_recvlogical's
 *                                 immediate exit on the keepalive.
 *               After each bridge run its WAL is read back (read-only) and
 *               must have grown by exactly the backlog's rows.
 *   report   median of --reps per shape; ratio = bridge rows/s divided by
 *            pg_recvlogical rows/s; peak RSS = the highest VmHWM seen.
 *            Start-up time is included in both sides' times (nothing is
 *            subtracted) and printed on its own line.
 *
 * The server runs with fsync=off (harness default), so the server's own
 * WAL writes cost little; logical_decoding_work_mem is PostgreSQL's default
 * 64MB here (the harness's 64kB exists to force streaming in tests), so
 * 1000-row transactions are sent whole; --decoding-work-mem changes it.
 *
 * A benchmark, not a test: it exits 0 whatever the ratios (2 if it could
 * not run), unless --check asks for 1 when a shape is below the target.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp, prctl */
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg_harness.h"
#include "bench_util.h"
#include "sa/sa_alloc.h"
#include "sa/sa_store.h"

#define BENCH_TARGET 0.9
#define BENCH_SLOT "sa_bench" /* the bridge's slot and publication */
#define BENCH_RECV_SLOT "sa_bench_recv"
#define BENCH_POLL_MS 10
#define BENCH_TIMEOUT_S 900.0 /* per consumer run */
#define BENCH_MAX_REPS 99

enum { SHAPE_1, SHAPE_1000, NSHAPES };
static const char *const shape_name[NSHAPES] = {"1-row txns", "1000-row txns"};
static const long shape_per_txn[NSHAPES] = {1, 1000};

/* Every option, with its default set in opts_init. */
typedef struct bench_opts {
    long rows[NSHAPES];    /* rows per backlog, per shape */
    int reps;              /* interleaved repetitions; the median is reported */
    const char *dir;       /* parent of our scratch directory */
    const char *bridge;    /* sa-bridge binary */
    const char *pg_bindir; /* where pg_recvlogical is */
    const char *work_mem;  /* the server's logical_decoding_work_mem */
    const char *perf_dir;  /* NULL, or: perf record -g each bridge run there */
    int shapes;            /* bit per shape to run; default both */
    int quick;             /* smoke test: tiny backlogs, one repetition */
    int check;             /* exit 1 when a shape is below BENCH_TARGET */
    int verbose;           /* slot positions and per-run times on stderr */
} bench_opts;

static void opts_init(bench_opts *o)
{
    o->rows[SHAPE_1] = 50000;
    o->rows[SHAPE_1000] = 500000;
    o->reps = 3;
    o->dir = getenv("SA_TEST_TMPDIR") != NULL ? getenv("SA_TEST_TMPDIR") : "/tmp";
    o->bridge = SA_BRIDGE_BIN;
    o->pg_bindir = getenv("PG_BINDIR") != NULL ? getenv("PG_BINDIR") : SA_PG_BINDIR;
    o->work_mem = "64MB";
    o->perf_dir = NULL;
    o->shapes = (1 << NSHAPES) - 1;
    o->quick = 0;
    o->check = 0;
    o->verbose = 0;
}

/* ---------------------------------------------------------------------
 * Process-wide state, so that die() can clean up whatever is live.
 * ------------------------------------------------------------------- */

static struct {
    sa_pgh *pg;         /* the cluster, or NULL */
    pid_t child;        /* a running consumer, or 0 */
    pid_t perf;         /* a running perf record, or 0 */
    char scratch[4096]; /* our scratch directory, or "" */
    char bridge_log[4200];
} g;

static void cleanup(void)
{
    if (g.perf > 0) {
        kill(g.perf, SIGINT);
        waitpid(g.perf, NULL, 0);
        g.perf = 0;
    }
    if (g.child > 0) {
        kill(g.child, SIGKILL);
        waitpid(g.child, NULL, 0);
        g.child = 0;
    }
    sa_pgh_stop(g.pg);
    g.pg = NULL;
    if (g.scratch[0] != '\0')
        bench_rm_tree(g.scratch);
    g.scratch[0] = '\0';
}

/* Report why the benchmark cannot go on (with the tail of the bridge's
 * log), clean up and exit 2. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_ingest: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    bench_tail(g.bridge_log, "the bridge's log");
    cleanup();
    exit(2);
}

/* ---------------------------------------------------------------------
 * SQL and processes.
 * ------------------------------------------------------------------- */

/* Run SQL on the harness's cached connection; the text of the last result
 * (caller frees with sa_free), or exit. */
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

/* Start argv[0] with stdout and stderr appended to log.  The child gets
 * SIGKILL if we die, so no consumer outlives the benchmark. */
static pid_t spawn(const char *const *argv, const char *log)
{
    pid_t pid = bench_spawn(argv, log, -1);
    if (pid < 0)
        die("fork: %s", strerror(errno));
    return pid;
}

/* Wait for pid; its wait status. */
static int reap(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

/* ---------------------------------------------------------------------
 * The workload.
 * ------------------------------------------------------------------- */

static void setup_schema(void)
{
    SQL_DO("CREATE TABLE public.items (id bigint PRIMARY KEY, name text, price numeric, "
           "note text)");
    /* ntx transactions of per rows each, ids first.. */
    SQL_DO("CREATE PROCEDURE public.bench_gen(first bigint, ntx int, per int) "
           "LANGUAGE plpgsql AS $$ "
           "BEGIN "
           "  FOR t IN 0 .. ntx - 1 LOOP "
           "    INSERT INTO public.items "
           "    SELECT i, format('item %%s standard', lpad(i::text, 6, '0')), "
           "           (10 + i %% 990) + (i %% 100) / 100.0, "
           "           format('restocked from warehouse %%s, lot %%s; handle with ordinary "
           "care', lpad((i %% 97)::text, 2, '0'), lpad(i::text, 6, '0')) "
           "    FROM generate_series(first + t::bigint * per, "
           "                         first + t::bigint * per + per - 1) i; "
           "    COMMIT; "
           "  END LOOP; "
           "END $$");
}

static long long next_id = 1;

/* Commit ntx transactions of per rows; the LSN right after, as text
 * (caller frees with sa_free). */
static char *generate(long ntx, long per)
{
    SQL_DO("CALL public.bench_gen(%lld, %ld, %ld)", next_id, ntx, per);
    next_id += (long long)ntx * per;
    return sql("SELECT pg_current_wal_lsn()");
}

/* 1 when slot's confirmed_flush_lsn >= lsn. */
static int slot_reached(const char *slot, const char *lsn)
{
    char *t = sql("SELECT coalesce(confirmed_flush_lsn >= '%s'::pg_lsn, false) "
                  "FROM pg_replication_slots WHERE slot_name = '%s'",
                  lsn, slot);
    int yes = strcmp(t, "t") == 0;
    sa_free(t);
    return yes;
}

/* ---------------------------------------------------------------------
 * The two consumers.
 * ------------------------------------------------------------------- */

typedef struct result {
    double seconds;
    long rss_kb; /* bridge only */
} result;

/* The last appended WAL seq of the bridge's store (read-only open). */
static uint64_t bridge_last_seq(const char *data)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/store", data);
    sa_store_options so;
    sa_store_options_init(&so);
    so.read_only = 1;
    sa_store *s = NULL;
    sa_wal_info wi;
    sa_err err;
    if (sa_store_open(dir, &so, &s, &err) != 0)
        die("cannot open the bridge's store read-only: %s", err.msg);
    if (sa_wal_info_get(s, &wi, &err) != 0)
        die("cannot read the bridge's WAL counters: %s", err.msg);
    sa_store_close(s);
    return wi.last_seq;
}

/* Run sa-bridge until its slot has confirmed target (NULL: until it is
 * caught up with the server, untimed set-up).  perf_out: record it. */
static result run_bridge(const bench_opts *o, const char *target, long rows, const char *perf_out)
{
    char data[4200];
    snprintf(data, sizeof data, "%s/bridge", g.scratch);
    const char *argv[] = {o->bridge,
                          "run",
                          "--pg",
                          sa_pgh_conninfo(g.pg),
                          "--data",
                          data,
                          "--tables",
                          "public.items",
                          "--slot",
                          BENCH_SLOT,
                          "--publication",
                          BENCH_SLOT,
                          "--durability",
                          "group",
                          "--status-interval-ms",
                          "100",
                          "--no-progress",
                          "--log-level",
                          "info",
                          "--listen",
                          "off",
                          NULL};
    struct stat st;
    uint64_t seq0 = target != NULL && stat(data, &st) == 0 ? bridge_last_seq(data) : 0;
    char *wait_for = NULL; /* set-up: the server's position once the slot exists */
    result r = {0, -1};
    double t0 = bench_now_s();
    g.child = spawn(argv, g.bridge_log);
    if (perf_out != NULL) {
        char pid[32];
        snprintf(pid, sizeof pid, "%d", (int)g.child);
        const char *pargv[] = {"/usr/bin/perf", "record", "-g", "-q", "-o",
                               perf_out,        "-p",     pid,  NULL};
        char plog[4200];
        snprintf(plog, sizeof plog, "%s/perf.log", g.scratch);
        g.perf = spawn(pargv, plog);
    }
    for (;;) {
        if (target == NULL && wait_for == NULL) {
            char *n =
                sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", BENCH_SLOT);
            if (strcmp(n, "1") == 0)
                wait_for = sql("SELECT pg_current_wal_lsn()");
            sa_free(n);
        }
        const char *lsn = target != NULL ? target : wait_for;
        if (lsn != NULL && slot_reached(BENCH_SLOT, lsn))
            break;
        int status;
        if (waitpid(g.child, &status, WNOHANG) == g.child) {
            g.child = 0;
            die("sa-bridge exited early (status %d)", status);
        }
        if (bench_now_s() - t0 > BENCH_TIMEOUT_S)
            die("sa-bridge did not confirm %s within %.0f s", lsn ? lsn : "its slot",
                BENCH_TIMEOUT_S);
        bench_sleep_ms(BENCH_POLL_MS);
    }
    r.seconds = bench_now_s() - t0;
    r.rss_kb = bench_peak_rss_kb(g.child);
    if (g.perf > 0) {
        kill(g.perf, SIGINT);
        reap(g.perf);
        g.perf = 0;
    }
    kill(g.child, SIGTERM);
    int status = reap(g.child);
    g.child = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("sa-bridge did not stop cleanly (wait status %d)", status);
    sa_free(wait_for);
    if (target != NULL) {
        uint64_t got = bridge_last_seq(data) - seq0;
        if (got != (uint64_t)rows)
            die("the bridge's WAL grew by %llu ops, the backlog has %ld rows",
                (unsigned long long)got, rows);
    }
    return r;
}

/* Run pg_recvlogical from its slot up to target (it exits there). */
static result run_recv(const bench_opts *o, const char *target)
{
    char bin[4200], out[4200], log[4200], pub[256], conn[4200];
    snprintf(bin, sizeof bin, "%s/pg_recvlogical", o->pg_bindir);
    snprintf(out, sizeof out, "%s/recv.out", g.scratch);
    snprintf(log, sizeof log, "%s/recv.log", g.scratch);
    snprintf(pub, sizeof pub, "publication_names=%s", BENCH_SLOT);
    snprintf(conn, sizeof conn, "%s", sa_pgh_conninfo(g.pg));
    const char *argv[] = {bin,
                          "-d",
                          conn,
                          "--slot",
                          BENCH_RECV_SLOT,
                          "--start",
                          "--endpos",
                          target,
                          "--no-loop",
                          "-f",
                          out,
                          "-o",
                          "proto_version=2",
                          "-o",
                          pub,
                          "-o",
                          "streaming=on",
                          "-o",
                          "messages=true",
                          NULL};
    result r = {0, -1};
    double t0 = bench_now_s();
    g.child = spawn(argv, log);
    int status = reap(g.child);
    r.seconds = bench_now_s() - t0;
    g.child = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("pg_recvlogical failed (wait status %d); see %s", status, log);
    if (!slot_reached(BENCH_RECV_SLOT, target))
        die("pg_recvlogical exited before confirming %s", target);
    unlink(out);
    return r;
}

static void show_slots(const bench_opts *o, const char *when)
{
    if (!o->verbose)
        return;
    char *t = sql("SELECT string_agg(format('%%s restart %%s confirmed %%s', slot_name, "
                  "restart_lsn, confirmed_flush_lsn), '; ' ORDER BY slot_name) "
                  "FROM pg_replication_slots");
    fprintf(stderr, "# slots %s: %s\n", when, t);
    sa_free(t);
}

/* ---------------------------------------------------------------------
 * Driver.
 * ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_ingest [--rows N] [--reps N] [--dir DIR] [--bridge PATH]\n"
            "                    [--pg-bindir DIR] [--decoding-work-mem SIZE]\n"
            "                    [--perf-dir DIR] [--shape 1|1000] [--quick] [--check]\n"
            "                    [--verbose]\n"
            "  --rows N      rows per backlog, both shapes (default 50000 as 1-row\n"
            "                transactions, 500000 as 1000-row transactions); rounded up\n"
            "                to whole transactions\n"
            "  --reps N      interleaved repetitions; the median is reported (default 3)\n"
            "  --dir DIR     where the scratch directory is made (default $SA_TEST_TMPDIR\n"
            "                or /tmp); removed at the end\n"
            "  --bridge PATH the sa-bridge binary (default %s)\n"
            "  --pg-bindir DIR  where pg_recvlogical is (default $PG_BINDIR or %s)\n"
            "  --decoding-work-mem SIZE  the server's logical_decoding_work_mem\n"
            "                (default 64MB, PostgreSQL's own default)\n"
            "  --perf-dir DIR  perf record -g every timed bridge run into DIR\n"
            "  --shape N     run only the N-row transactions shape (1 or 1000)\n"
            "  --quick       smoke run: 300 rows a shape, one repetition\n"
            "  --check       exit 1 if any ratio is below %.2f (for people, not CI)\n"
            "  --verbose     slot positions and every run's time on stderr\n",
            SA_BRIDGE_BIN, SA_PG_BINDIR, BENCH_TARGET);
}

static long num_arg(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long n = v != NULL ? strtol(v, &end, 10) : 0;
    if (v == NULL || errno != 0 || end == v || *end != '\0' || n < lo || n > hi)
        die("option %s needs a whole number in %ld..%ld, got \"%s\"", opt, lo, hi,
            v != NULL ? v : "");
    return n;
}

static void parse_args(int argc, char **argv, bench_opts *o)
{
    /* options taking a value first */
    static const char *const names[] = {
        "--rows",     "--reps",  "--dir",   "--bridge", "--pg-bindir", "--decoding-work-mem",
        "--perf-dir", "--shape", "--quick", "--check",  "--verbose"};
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
            usage(stderr);
            die("%s", why);
        }
        switch (k) {
        case 0:
            o->rows[SHAPE_1] = o->rows[SHAPE_1000] = num_arg(names[k], v, 1, 100000000);
            break;
        case 1:
            o->reps = (int)num_arg(names[k], v, 1, BENCH_MAX_REPS);
            break;
        case 2:
            o->dir = v;
            break;
        case 3:
            o->bridge = v;
            break;
        case 4:
            o->pg_bindir = v;
            break;
        case 5:
            if (strspn(v, "0123456789kMGB") != strlen(v) || v[0] == '\0')
                die("option --decoding-work-mem needs a size like 64kB or 64MB");
            o->work_mem = v;
            break;
        case 6:
            o->perf_dir = v;
            break;
        case 7:
            if (strcmp(v, "1") != 0 && strcmp(v, "1000") != 0)
                die("option --shape takes 1 or 1000 (rows per transaction)");
            o->shapes = strcmp(v, "1") == 0 ? 1 << SHAPE_1 : 1 << SHAPE_1000;
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
            o->rows[SHAPE_1] = o->rows[SHAPE_1000] = 300;
        if (!seen[1])
            o->reps = 1;
    }
}

/* Both consumers up to a fresh sync point just before the next backlog
 * (see the method above); their times go into the start-up samples. */
static void sync_point(const bench_opts *o, double *bridge_s, double *recv_s)
{
    SQL_DO("CHECKPOINT");
    char *lsn = generate(1, 1);
    *recv_s = run_recv(o, lsn).seconds;
    *bridge_s = run_bridge(o, lsn, 1, NULL).seconds;
    sa_free(lsn);
}

int main(int argc, char **argv)
{
    bench_opts o;
    parse_args(argc, argv, &o);
    double t_start = bench_now_s();
    signal(SIGPIPE, SIG_IGN);

    if (access(o.bridge, X_OK) != 0)
        die("no sa-bridge at \"%s\" (build it, or pass --bridge)", o.bridge);
    char recv_bin[4200];
    snprintf(recv_bin, sizeof recv_bin, "%s/pg_recvlogical", o.pg_bindir);
    if (access(recv_bin, X_OK) != 0)
        die("no pg_recvlogical at \"%s\" (pass --pg-bindir)", recv_bin);
    mkdir(o.dir, 0755);
    if (snprintf(g.scratch, sizeof g.scratch, "%s/sa-bench-ingest-XXXXXX", o.dir) >=
            (int)sizeof g.scratch ||
        mkdtemp(g.scratch) == NULL) {
        g.scratch[0] = '\0';
        die("cannot make a scratch directory under \"%s\": %s", o.dir, strerror(errno));
    }
    snprintf(g.bridge_log, sizeof g.bridge_log, "%s/bridge.log", g.scratch);

    char conf[256];
    snprintf(conf, sizeof conf, "logical_decoding_work_mem = '%s'\n", o.work_mem);
    sa_pgh_options po = {.extra_conf = conf};
    sa_err err;
    if (sa_pgh_start(&po, &g.pg, &err) != 0)
        die("cannot start a PostgreSQL cluster: %s", err.msg);

    /* set-up: the table, the bridge's first start, the second slot */
    setup_schema();
    result setup = run_bridge(&o, NULL, 0, NULL);
    SQL_DO("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", BENCH_RECV_SLOT);

    char *version = sql("SHOW server_version");
    printf("# bench_ingest: sa-bridge (durability group) vs. pg_recvlogical (pgoutput v2, "
           "streaming on), same backlog, same server\n");
    printf("# PostgreSQL %s, fsync=off, logical_decoding_work_mem=%s; time from process start "
           "to durable up to the backlog's end; median of %d interleaved run(s)\n",
           version, o.work_mem, o.reps);
    printf("# bridge set-up (first start, slot creation, empty initial sync): %.2f s\n\n",
           setup.seconds);
    printf("| shape | rows | bridge rows/s | pg_recvlogical rows/s | ratio | bridge peak RSS MB "
           "|\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
    sa_free(version);

    double start_b[NSHAPES * BENCH_MAX_REPS], start_r[NSHAPES * BENCH_MAX_REPS];
    int nstart = 0;
    double min_ratio = 1e9;
    int min_shape = 0, run_no = 0;
    for (int sh = 0; sh < NSHAPES; sh++) {
        if (!(o.shapes & (1 << sh)))
            continue;
        long per = shape_per_txn[sh];
        long ntx = (o.rows[sh] + per - 1) / per;
        long rows = ntx * per;
        double b[BENCH_MAX_REPS], r[BENCH_MAX_REPS];
        long rss = 0;
        for (int rep = 0; rep < o.reps; rep++, run_no++) {
            sync_point(&o, &start_b[nstart], &start_r[nstart]);
            nstart++;
            show_slots(&o, "before the backlog");
            char *target = generate(ntx, per);
            char perf_out[4200];
            if (o.perf_dir != NULL)
                snprintf(perf_out, sizeof perf_out, "%s/bridge-%s-%d.data", o.perf_dir,
                         per == 1 ? "1row" : "1000row", rep);
            /* alternate which consumer goes first so drift hurts both alike */
            for (int k = 0; k < 2; k++) {
                if ((k ^ (run_no & 1)) == 0) {
                    result x = run_bridge(&o, target, rows, o.perf_dir ? perf_out : NULL);
                    b[rep] = (double)rows / x.seconds;
                    if (x.rss_kb > rss)
                        rss = x.rss_kb;
                } else {
                    r[rep] = (double)rows / run_recv(&o, target).seconds;
                }
            }
            if (o.verbose)
                fprintf(stderr, "# %s rep %d: bridge %.0f rows/s, pg_recvlogical %.0f rows/s\n",
                        shape_name[sh], rep + 1, b[rep], r[rep]);
            sa_free(target);
        }
        double mb = bench_median(b, o.reps), mr = bench_median(r, o.reps);
        double ratio = mr > 0 ? mb / mr : 0;
        printf("| %s | %ld | %.0f | %.0f | %.2f | %.1f |\n", shape_name[sh], rows, mb, mr, ratio,
               (double)rss / 1024.0);
        fflush(stdout);
        if (ratio < min_ratio) {
            min_ratio = ratio;
            min_shape = sh;
        }
    }

    printf("\n# start-up (a backlog of one row, median of %d): sa-bridge %.0f ms, "
           "pg_recvlogical %.0f ms\n",
           nstart, 1000 * bench_median(start_b, nstart), 1000 * bench_median(start_r, nstart));
    cleanup();
    int below = min_ratio < BENCH_TARGET;
    printf("minimum ratio %.2f (%s): %s the %.2f target; %.1f s total\n", min_ratio,
           shape_name[min_shape], below ? "BELOW" : "meets", BENCH_TARGET, bench_now_s() - t_start);
    return o.check && below ? 1 : 0;
}
