/*
 * bench/apply.c — bench_apply: how fast softadastra.apply_ops writes an
 * edge's ops into PostgreSQL, next to plain SQL writing the same rows in the
 * same run.
 *
 * Method (one throwaway PostgreSQL 15 cluster from the test harness, with
 * the softadastra extension):
 *
 *   setup    two tables of the same shape, (id bigint primary key, name
 *            text, price numeric, note text): public.items, synced
 *            (softadastra.add_table, strategy lww unless --strategy), written by apply_ops for
 *            peer "bench"; public.items_plain, not synced, written by plain
 *            SQL.  Each side has its own connection over the unix socket.
 *   workloads for a batch size B (100 and 1000) and --rows N (default
 *            20000), one run writes N new rows in batches of B (inserts,
 *            all columns), then updates those N rows in batches of B (name
 *            and price change):
 *              "no conflicts"   every update carries the correct base (the
 *                               name and price the row holds);
 *              "10% conflicts"  every tenth update carries a stale base
 *                               name, so it conflicts (update_differ) and,
 *                               its HLC being newer, wins under lww.
 *            ops = 2N per run (N inserts + N updates).
 *   apply    each batch is one call, one transaction (autocommit):
 *              SELECT seq, status, conflict_id, message
 *                FROM softadastra.apply_ops($1, $2, $3::jsonb)
 *            with PQexecParams, the batch as the $1 jsonb text in the wire
 *            form; the statuses are counted (every op must be applied, or
 *            conflict where a stale base was sent; anything else stops the
 *            benchmark).
 *   plain    the same rows into items_plain, one transaction per batch,
 *            libpq pipeline mode (PQenterPipelineMode): BEGIN, one
 *            PQsendQueryPrepared per row of a prepared statement
 *              INSERT INTO public.items_plain (id, name, price, note)
 *                VALUES ($1, $2, $3, $4)
 *              UPDATE public.items_plain SET name = $2, price = $3
 *                WHERE id = $1
 *            then COMMIT and PQpipelineSync, and every result read before
 *            the next batch — one round trip per batch, like apply_ops.
 *   timing   only the calls: the JSON texts and parameter strings are built
 *            before the clock starts.  One rep runs every (workload, batch)
 *            pair on both sides, alternating which side goes first from rep
 *            to rep; ids are fresh in every run, so both tables grow alike.
 *   report   per (workload, batch): the median of --reps (default 3) of
 *            ops/s on each side; ratio = apply ops/s / plain ops/s.  The
 *            target is a ratio >= 0.7 on the no-conflict rows.
 *
 * The server runs with fsync=off (harness default), so commits cost little
 * on both sides and the ratio measures apply_ops' own work.
 *
 * A benchmark, not a test: it exits 0 whatever the ratios (2 if it could
 * not run, 77 if the extension is not installed), unless --check asks for
 * 1 when a no-conflict row is below the target.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "bench_util.h"
#include "pg_harness.h"
#include "sa/sa_alloc.h"

#define BENCH_TARGET 0.7
#define BENCH_MAX_REPS 99
#define BENCH_PEER "bench"
#define BENCH_SKIP 77 /* ctest's SKIP_RETURN_CODE */

enum { WL_NOCONF, WL_CONF10, NWL };
static const char *const wl_name[NWL] = {"no conflicts", "10% conflicts"};
enum { NBATCH = 2 };
static const int batch_sizes[NBATCH] = {100, 1000};

/* Every option, with its default set in opts_init. */
typedef struct bench_opts {
    long rows;   /* rows per run (inserted, then updated); a multiple of 1000 */
    int reps;    /* interleaved repetitions; the median is reported */
    int quick;   /* smoke test: few rows, one repetition */
    int check;   /* exit 1 when a no-conflict row is below BENCH_TARGET */
    int verbose; /* per-run times on stderr */
    const char *strategy; /* the synced table's conflict strategy (default lww) */
} bench_opts;

static void opts_init(bench_opts *o)
{
    o->rows = 20000;
    o->strategy = "lww";
    o->reps = 3;
    o->quick = 0;
    o->check = 0;
    o->verbose = 0;
}

/* ---------------------------------------------------------------------
 * Process-wide state, so that die() can clean up whatever is live.
 * ------------------------------------------------------------------- */

static struct {
    sa_pgh *pg;
    PGconn *apply; /* apply_ops' connection */
    PGconn *plain; /* the reference's connection */
    long long seq; /* the peer's last seq (epoch 1) */
    long long hlc; /* the last HLC handed out */
    long long id;  /* the last id used */
} g;

static void cleanup(void)
{
    if (g.apply != NULL)
        PQfinish(g.apply);
    if (g.plain != NULL)
        PQfinish(g.plain);
    g.apply = g.plain = NULL;
    sa_pgh_stop(g.pg);
    g.pg = NULL;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_apply: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    bench_tail(g.pg != NULL ? sa_pgh_logfile(g.pg) : NULL, "the server's log");
    cleanup();
    exit(2);
}

static void sql_do(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sql_do(const char *fmt, ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    sa_err err;
    if (sa_pgh_exec(g.pg, q, NULL, &err) != 0)
        die("SQL failed: %s\n  %s", err.msg, q);
}

/* A fresh HLC: 48 bits of ms, 16 of counter, always growing. */
static long long hlc_next(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    long long now = ((long long)tv.tv_sec * 1000 + tv.tv_usec / 1000) << 16;
    g.hlc = now > g.hlc ? now : g.hlc + 1;
    return g.hlc;
}

/* Is the extension in the sharedir of the harness' server?  (As in
 * tests/integration/test_pgext_smoke.c.) */
static int extension_installed(void)
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
    char where[1200];
    snprintf(where, sizeof where, "%s/extension/softadastra.control", share);
    struct stat st;
    return share[0] != '\0' && stat(where, &st) == 0;
}

/* ---------------------------------------------------------------------
 * A growable text buffer.
 * ------------------------------------------------------------------- */

typedef struct tbuf {
    char *p;
    size_t len, cap;
} tbuf;

static void tb_addf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_addf(tbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        die("vsnprintf failed");
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = sa_realloc(b->p, cap);
        if (p == NULL)
            die("out of memory");
        b->p = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* ---------------------------------------------------------------------
 * One run's rows, built before the clock starts.
 * ------------------------------------------------------------------- */

/* Row i of a run: its values before and after the update.  The texts are
 * plain ASCII without quotes or backslashes, so they go into JSON as is. */
typedef struct row {
    char id[24];
    char name[48], price[24], note[96]; /* inserted */
    char name2[48], price2[24];         /* the update */
    int stale;                          /* the update's base is stale */
} row;

typedef struct run_data {
    long n;      /* rows */
    int batch;   /* rows per batch */
    row *rows;   /* n */
    char **json; /* 2 * n / batch batches: inserts, then updates */
    long nstale; /* updates sent with a stale base */
} run_data;

static void run_build(run_data *d, int wl, int batch, long n)
{
    d->n = n;
    d->batch = batch;
    d->nstale = 0;
    d->rows = sa_calloc((size_t)n, sizeof *d->rows);
    long nb = n / batch;
    d->json = sa_calloc((size_t)(2 * nb), sizeof *d->json);
    if (d->rows == NULL || d->json == NULL)
        die("out of memory");
    for (long i = 0; i < n; i++) {
        row *r = &d->rows[i];
        long long id = ++g.id;
        snprintf(r->id, sizeof r->id, "%lld", id);
        snprintf(r->name, sizeof r->name, "item %08lld standard", id);
        snprintf(r->price, sizeof r->price, "%lld.%02lld", 10 + id % 990, id % 100);
        snprintf(r->note, sizeof r->note,
                 "restocked from warehouse %02lld, lot %08lld; handle with ordinary care", id % 97,
                 id);
        snprintf(r->name2, sizeof r->name2, "item %08lld revised", id);
        snprintf(r->price2, sizeof r->price2, "%lld.%02lld", 20 + id % 990, (id + 7) % 100);
        r->stale = wl == WL_CONF10 && i % 10 == 9;
        d->nstale += r->stale;
    }
    for (int phase = 0; phase < 2; phase++) {
        for (long b = 0; b < nb; b++) {
            tbuf t = {0};
            tb_addf(&t, "[");
            for (long i = b * batch; i < (b + 1) * batch; i++) {
                const row *r = &d->rows[i];
                tb_addf(&t,
                        "%s{\"origin\": \"" BENCH_PEER "\", \"epoch\": 1, \"seq\": %lld,"
                        " \"hlc\": %lld, \"kind\": \"%s\", \"table\": \"public.items\","
                        " \"key\": {\"id\": %s}, ",
                        i > b * batch ? ", " : "", ++g.seq, hlc_next(),
                        phase == 0 ? "insert" : "update", r->id);
                if (phase == 0)
                    tb_addf(&t,
                            "\"cols\": {\"id\": %s, \"name\": \"%s\", \"price\": \"%s\","
                            " \"note\": \"%s\"}}",
                            r->id, r->name, r->price, r->note);
                else
                    tb_addf(&t,
                            "\"cols\": {\"name\": \"%s\", \"price\": \"%s\"},"
                            " \"base\": {\"name\": \"%s\", \"price\": \"%s\"}}",
                            r->name2, r->price2, r->stale ? "stale name" : r->name, r->price);
            }
            tb_addf(&t, "]");
            d->json[phase * nb + b] = t.p;
        }
    }
}

static void run_free(run_data *d)
{
    for (long b = 0; b < 2 * (d->n / d->batch); b++)
        sa_free(d->json[b]);
    sa_free(d->json);
    sa_free(d->rows);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------------
 * The two sides.
 * ------------------------------------------------------------------- */

/* Every batch through apply_ops; seconds (*inserts_s: of which the
 * insert batches).  Statuses are checked: applied, or conflict exactly
 * where a stale base was sent. */
static double run_apply(const run_data *d, double *inserts_s)
{
    long nb = d->n / d->batch;
    long applied = 0, conflicts = 0;
    double t0 = bench_now_s();
    for (long b = 0; b < 2 * nb; b++) {
        if (b == nb)
            *inserts_s = bench_now_s() - t0;
        const char *params[3] = {BENCH_PEER, "1", d->json[b]};
        PGresult *r = PQexecParams(g.apply,
                                   "SELECT seq, status, conflict_id, message"
                                   " FROM softadastra.apply_ops($1, $2::bigint, $3::jsonb)",
                                   3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            die("apply_ops failed: %s", PQresultErrorMessage(r));
        if (PQntuples(r) != d->batch)
            die("apply_ops returned %d rows for a batch of %d", PQntuples(r), d->batch);
        for (int i = 0; i < PQntuples(r); i++) {
            const char *st = PQgetvalue(r, i, 1);
            if (strcmp(st, "applied") == 0)
                applied++;
            else if (strcmp(st, "conflict") == 0)
                conflicts++;
            else
                die("apply_ops: op seq %s: status %s (%s)", PQgetvalue(r, i, 0), st,
                    PQgetisnull(r, i, 3) ? "no message" : PQgetvalue(r, i, 3));
        }
        PQclear(r);
    }
    double t = bench_now_s() - t0;
    if (conflicts != d->nstale)
        die("apply_ops: %ld conflicts for %ld stale bases (%ld applied)", conflicts, d->nstale,
            applied);
    return t;
}

/* Read one query's results in pipeline mode: want, then the NULL that
 * ends it. */
static void pipe_expect(ExecStatusType want, const char *what)
{
    PGresult *r = PQgetResult(g.plain);
    if (r == NULL || PQresultStatus(r) != want)
        die("plain %s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(g.plain));
    PQclear(r);
    if (want != PGRES_PIPELINE_SYNC && (r = PQgetResult(g.plain)) != NULL)
        die("plain %s: more than one result", what);
}

/* Every batch as plain SQL in pipeline mode; seconds (*inserts_s: of
 * which the insert batches). */
static double run_plain(const run_data *d, double *inserts_s)
{
    long nb = d->n / d->batch;
    if (PQenterPipelineMode(g.plain) != 1)
        die("PQenterPipelineMode: %s", PQerrorMessage(g.plain));
    double t0 = bench_now_s();
    for (long b = 0; b < 2 * nb; b++) {
        if (b == nb)
            *inserts_s = bench_now_s() - t0;
        int update = b >= nb;
        long first = (update ? b - nb : b) * d->batch;
        if (!PQsendQueryParams(g.plain, "BEGIN", 0, NULL, NULL, NULL, NULL, 0))
            die("send BEGIN: %s", PQerrorMessage(g.plain));
        for (long i = first; i < first + d->batch; i++) {
            const row *r = &d->rows[i];
            const char *ins[4] = {r->id, r->name, r->price, r->note};
            const char *upd[3] = {r->id, r->name2, r->price2};
            int ok = update ? PQsendQueryPrepared(g.plain, "upd", 3, upd, NULL, NULL, 0)
                            : PQsendQueryPrepared(g.plain, "ins", 4, ins, NULL, NULL, 0);
            if (!ok)
                die("send row: %s", PQerrorMessage(g.plain));
        }
        if (!PQsendQueryParams(g.plain, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
            die("send COMMIT: %s", PQerrorMessage(g.plain));
        if (PQpipelineSync(g.plain) != 1)
            die("PQpipelineSync: %s", PQerrorMessage(g.plain));
        pipe_expect(PGRES_COMMAND_OK, "BEGIN");
        for (long i = 0; i < d->batch; i++)
            pipe_expect(PGRES_COMMAND_OK, update ? "UPDATE" : "INSERT");
        pipe_expect(PGRES_COMMAND_OK, "COMMIT");
        pipe_expect(PGRES_PIPELINE_SYNC, "sync");
    }
    double t = bench_now_s() - t0;
    if (PQexitPipelineMode(g.plain) != 1)
        die("PQexitPipelineMode: %s", PQerrorMessage(g.plain));
    return t;
}

/* ---------------------------------------------------------------------
 * Main.
 * ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_apply [--rows N] [--reps N] [--strategy S] [--quick] [--check]\n"
            "                   [--verbose]\n"
            "  ops/s of softadastra.apply_ops (batches of 100 and 1000 ops; no conflicts,\n"
            "  and 10%% conflicts) next to plain SQL writing the same rows (prepared\n"
            "  statements, pipeline mode, one transaction per batch), in one throwaway\n"
            "  PostgreSQL cluster.\n"
            "  --rows N    rows inserted then updated per run, a multiple of 1000\n"
            "              (default 20000: 40000 ops)\n"
            "  --reps N    interleaved repetitions, median reported (default 3)\n"
            "  --strategy S  conflict strategy of the synced table: lww (default; keeps\n"
            "              per-column row clocks), server_wins, edge_wins or manual\n"
            "  --quick     smoke test: 1000 rows, one repetition\n"
            "  --check     exit 1 if a no-conflict ratio is below %.1f\n"
            "  --verbose   per-run times on stderr\n",
            BENCH_TARGET);
}

static void parse_opts(int argc, char **argv, bench_opts *o)
{
    static const char *const names[] = {"--rows",  "--reps",  "--strategy",
                                        "--quick", "--check", "--verbose"};
    int seen[6] = {0};
    int rows_given = 0, reps_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *val;
        char why[256];
        int k = bench_opt(argc, argv, &i, names, 6, 3, seen, &val, why, sizeof why);
        char *end = NULL;
        switch (k) {
        case BENCH_OPT_HELP:
            usage(stdout);
            exit(0);
        case BENCH_OPT_BAD:
            fprintf(stderr, "bench_apply: %s\n", why);
            usage(stderr);
            exit(2);
        case 0:
            o->rows = strtol(val, &end, 10);
            if (*end != '\0' || o->rows < 1000 || o->rows % 1000 != 0 || o->rows > 10000000) {
                fprintf(stderr, "bench_apply: --rows must be a multiple of 1000 in 1000..1e7\n");
                exit(2);
            }
            rows_given = 1;
            break;
        case 1:
            o->reps = (int)strtol(val, &end, 10);
            if (*end != '\0' || o->reps < 1 || o->reps > BENCH_MAX_REPS) {
                fprintf(stderr, "bench_apply: --reps must be in 1..%d\n", BENCH_MAX_REPS);
                exit(2);
            }
            reps_given = 1;
            break;
        case 2:
            if (strcmp(val, "lww") != 0 && strcmp(val, "server_wins") != 0 &&
                strcmp(val, "edge_wins") != 0 && strcmp(val, "manual") != 0) {
                fprintf(stderr, "bench_apply: --strategy must be lww, server_wins, edge_wins "
                                "or manual\n");
                exit(2);
            }
            o->strategy = val;
            break;
        case 3:
            o->quick = 1;
            break;
        case 4:
            o->check = 1;
            break;
        case 5:
            o->verbose = 1;
            break;
        }
    }
    if (o->quick) {
        if (!rows_given)
            o->rows = 1000;
        if (!reps_given)
            o->reps = 1;
    }
}

static PGconn *connect_or_die(void)
{
    PGconn *c = PQconnectdb(sa_pgh_conninfo(g.pg));
    if (PQstatus(c) != CONNECTION_OK)
        die("connect: %s", PQerrorMessage(c));
    return c;
}

static void setup(const bench_opts *o)
{
    sa_err err;
    int rc = sa_pgh_start(NULL, &g.pg, &err);
    if (rc != 0)
        die("cannot start PostgreSQL: %s", err.msg);
    sql_do("CREATE EXTENSION softadastra");
    sql_do("CREATE TABLE public.items (id bigint PRIMARY KEY, name text, price numeric,"
           " note text)");
    sql_do("CREATE TABLE public.items_plain (id bigint PRIMARY KEY, name text, price numeric,"
           " note text)");
    char add[128];
    snprintf(add, sizeof add, "SELECT softadastra.add_table('public.items', '%s')", o->strategy);
    sql_do(add);
    sql_do("SELECT softadastra.create_peer('" BENCH_PEER "')");
    g.apply = connect_or_die();
    g.plain = connect_or_die();
    PGresult *r = PQprepare(g.plain, "ins",
                            "INSERT INTO public.items_plain (id, name, price, note)"
                            " VALUES ($1, $2, $3, $4)",
                            0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("prepare: %s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQprepare(g.plain, "upd",
                  "UPDATE public.items_plain SET name = $2, price = $3 WHERE id = $1", 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("prepare: %s", PQresultErrorMessage(r));
    PQclear(r);
}

int main(int argc, char **argv)
{
    bench_opts o;
    opts_init(&o);
    parse_opts(argc, argv, &o);
    if (!extension_installed()) {
        printf("bench_apply: SKIP: the softadastra extension is not installed (run `cmake "
               "--build <dir> --target pgext_install`)\n");
        return BENCH_SKIP;
    }
    setup(&o);

    double apply_s[NWL][NBATCH][BENCH_MAX_REPS], plain_s[NWL][NBATCH][BENCH_MAX_REPS];
    double t_start = bench_now_s();
    for (int rep = 0; rep < o.reps; rep++) {
        for (int wl = 0; wl < NWL; wl++) {
            for (int bi = 0; bi < NBATCH; bi++) {
                run_data d;
                run_build(&d, wl, batch_sizes[bi], o.rows);
                double ta, tp, ia = 0, ip = 0;
                if (rep % 2 == 0) {
                    ta = run_apply(&d, &ia);
                    tp = run_plain(&d, &ip);
                } else {
                    tp = run_plain(&d, &ip);
                    ta = run_apply(&d, &ia);
                }
                apply_s[wl][bi][rep] = ta;
                plain_s[wl][bi][rep] = tp;
                if (o.verbose)
                    fprintf(stderr,
                            "rep %d, %s, batch %d: apply %.3f s (inserts %.3f, updates %.3f),"
                            " plain %.3f s (inserts %.3f, updates %.3f); %ld ops each\n",
                            rep + 1, wl_name[wl], batch_sizes[bi], ta, ia, ta - ia, tp, ip, tp - ip,
                            2 * o.rows);
                run_free(&d);
            }
        }
    }
    double total = bench_now_s() - t_start;

    printf("\n## bench_apply: softadastra.apply_ops vs plain SQL (pipeline, prepared)\n\n");
    printf("%ld rows inserted then updated per run (%ld ops), median of %d rep%s; "
           "strategy %s; target ratio >= %.1f without conflicts\n\n",
           o.rows, 2 * o.rows, o.reps, o.reps == 1 ? "" : "s", o.strategy, BENCH_TARGET);
    printf("| workload | batch | ops | apply ops/s | plain ops/s | ratio |\n");
    printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    int below = 0;
    for (int wl = 0; wl < NWL; wl++) {
        for (int bi = 0; bi < NBATCH; bi++) {
            double a = bench_median(apply_s[wl][bi], o.reps),
                   p = bench_median(plain_s[wl][bi], o.reps);
            double aops = 2.0 * (double)o.rows / a, pops = 2.0 * (double)o.rows / p;
            double ratio = aops / pops;
            if (wl == WL_NOCONF && ratio < BENCH_TARGET)
                below = 1;
            printf("| %s | %d | %ld | %.0f | %.0f | %.2f |\n", wl_name[wl], batch_sizes[bi],
                   2 * o.rows, aops, pops, ratio);
        }
    }
    printf("\ntarget (ratio >= %.1f for the no-conflict rows): %s\n", BENCH_TARGET,
           below ? "NOT met" : "met");
    printf("measured in %.1f s%s\n", total,
           o.quick ? " (--quick: too small to mean much; a smoke test)" : "");
    cleanup();
    return o.check && below ? 1 : 0;
}
