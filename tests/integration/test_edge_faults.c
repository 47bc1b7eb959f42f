/*
 * test_edge_faults.c — edges and the bridge under faults, with real
 * processes: a real PostgreSQL (softadastra extension), a real sa-bridge on
 * a real port, edges (libsa_edge children and the sa-edge CLI) over HTTP.
 *
 *   edge killed    an edge syncing many queued writes is killed -9 at
 *                  random moments (mid-push, mid-pull) while PostgreSQL
 *                  keeps writing, restarted, many times
 *   bridge restart the bridge stopped (SIGTERM) and killed (SIGKILL) while
 *                  two edges push and pull
 *   long poll      the bridge stopped while an idle edge waits in a long
 *                  poll: the edge sees it unavailable (SA_EIO)
 *   re-init        an edge store deleted and initialised again (new epoch)
 *   retention      an edge offline past the WAL retention re-bootstraps
 *                  (409 must_resnapshot) and keeps its pending writes
 *
 * Each ends with the same checks: every replica holds PostgreSQL's rows,
 * row by row; nothing is pending; in PostgreSQL every local op applied
 * exactly once (softadastra.peer_progress.applied_seq = the ops written;
 * the rows the ops wrote are what replaying them once gives; no conflict
 * and no rejection recorded: no scenario here writes one row from two
 * sides, so a conflict row would mean an op applied twice).
 *
 * The edges' ops are a deterministic function of their seq (op_next): a
 * child that restarts after a kill goes on from the store's last seq, and
 * the test knows the rows every op 1..N leaves behind.
 *
 * Randomized timing: the seed is printed; SA_TEST_SEED=N replays it.
 * SA_EDGE_KILLS=N: kills in the first test (default 20); SA_EDGE_RESTARTS=N:
 * bridge restarts in the second (default 6).  Children are this
 * binary re-executed (argv[1] = "--child"), so no child inherits the
 * parent's RocksDB threads.  Skipped when the extension is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_util.h"

static sa_pgh *g_h;
static PGconn *g_c;
static it_bridge g_b;
static char g_data[1024], g_tmp[1024], g_self[1024];
static int g_skip, g_started, g_done;
static int g_port;
static uint64_t g_seed;

#define PG_ROWS 50         /* seed rows 1..50: PostgreSQL's own */
#define PG_IDS 100000000LL /* ids PostgreSQL's writer inserts start here */

/* ---- randomness (replayable) ------------------------------------------ */

static uint64_t g_rng;

static uint64_t rnd(void)
{
    uint64_t x = g_rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_rng = x;
    return x * 2685821657736338717ULL;
}

/* Uniform in [lo, hi]. */
static int rnd_in(int lo, int hi)
{
    return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

static void rng_seed(uint64_t s)
{
    g_rng = s * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (g_rng == 0)
        g_rng = 1;
    rnd();
}

/* ---- the ops an edge writes: a function of their seq -------------------- */

/*
 * Op s of an edge whose rows have ids base+1, base+2, ...  Row base+s is
 * created by op s when op s is an insert, as {name "op s", price s}:
 *   s % 7 == 0, row s-2 present: delete row s-2
 *   s % 5 == 0, row s-3 present: update row s-3, price = s
 *   otherwise:                   insert row s
 * Which kind op s is depends only on ops 1..s-1, so a restarted child goes
 * on from the store's last seq, and sim_* tells the rows ops 1..N leave.
 */
typedef struct sim {
    uint64_t n; /* ops applied */
    uint64_t cap;
    uint8_t *present; /* [s]: row base+s exists */
    int64_t *price;   /* [s]: its price */
} sim;

enum { OP_INSERT, OP_UPDATE, OP_DELETE };

static void sim_grow(sim *m, uint64_t need)
{
    if (need < m->cap)
        return;
    uint64_t cap = m->cap ? m->cap : 1024;
    while (cap <= need)
        cap *= 2;
    m->present = realloc(m->present, cap);
    m->price = realloc(m->price, cap * sizeof *m->price);
    memset(m->present + m->cap, 0, cap - m->cap);
    m->cap = cap;
}

static void sim_free(sim *m)
{
    free(m->present);
    free(m->price);
    memset(m, 0, sizeof *m);
}

/* The kind and target row (an offset s') of op s given ops 1..s-1. */
static int sim_kind(const sim *m, uint64_t s, uint64_t *target)
{
    if (s % 7 == 0 && s > 2 && m->present[s - 2]) {
        *target = s - 2;
        return OP_DELETE;
    }
    if (s % 5 == 0 && s > 3 && m->present[s - 3]) {
        *target = s - 3;
        return OP_UPDATE;
    }
    *target = s;
    return OP_INSERT;
}

static void sim_apply(sim *m)
{
    uint64_t s = m->n + 1, t;
    sim_grow(m, s + 1);
    switch (sim_kind(m, s, &t)) {
    case OP_DELETE:
        m->present[t] = 0;
        break;
    case OP_UPDATE:
        m->price[t] = (int64_t)s;
        break;
    default:
        m->present[s] = 1;
        m->price[s] = (int64_t)s;
    }
    m->n = s;
}

static void sim_to(sim *m, uint64_t n)
{
    sim_grow(m, n + 1);
    while (m->n < n)
        sim_apply(m);
}

/*
 * Write op m->n + 1 to the edge (put or delete) and advance m.  0, or the
 * edge's error (err filled); SA_EPROTO when the edge numbered it otherwise.
 */
static int op_next(sa_edge *e, const char *table, long long base, sim *m, sa_err *err)
{
    uint64_t s = m->n + 1, t, seq = 0;
    sim_grow(m, s + 1);
    char txt[256];
    int kind = sim_kind(m, s, &t);
    if (kind == OP_DELETE)
        snprintf(txt, sizeof txt, "{\"id\": %lld}", base + (long long)t);
    else if (kind == OP_UPDATE)
        snprintf(txt, sizeof txt, "{\"id\": %lld, \"price\": %" PRIu64 "}", base + (long long)t, s);
    else
        snprintf(txt, sizeof txt,
                 "{\"id\": %lld, \"name\": \"op %" PRIu64 "\", \"price\": %" PRIu64 "}",
                 base + (long long)s, s, s);
    json_t *j = json_loads(txt, 0, NULL);
    int rc = kind == OP_DELETE ? sa_edge_delete(e, table, j, &seq, err)
                               : sa_edge_put(e, table, j, &seq, err);
    json_decref(j);
    if (rc == 0 && seq != s)
        rc = sa_err_set(err, SA_EPROTO, "op %" PRIu64 " (%s) was given seq %" PRIu64, s, txt, seq);
    if (rc == 0)
        sim_apply(m);
    return rc;
}

/* ---- children (this binary, re-executed) -------------------------------- */

static volatile sig_atomic_t c_stop;
static sa_edge *c_edge;

static void c_on_term(int sig)
{
    (void)sig;
    c_stop = 1;
    sa_edge_stop(c_edge);
}

/*
 * --child pgwriter CONNINFO TABLE FIRSTID SEED MAXROWS
 * Until SIGTERM: transactions that insert 1-MAXROWS rows (ids from FIRSTID),
 * update seed rows 1..PG_ROWS and delete a row it inserted.
 */
static int child_pgwriter(char **argv)
{
    PGconn *c = PQconnectdb(argv[0]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pgwriter: %s", PQerrorMessage(c));
        return 3;
    }
    const char *table = argv[1];
    long long next = atoll(argv[2]), first = next;
    rng_seed(strtoull(argv[3], NULL, 10));
    int maxrows = atoi(argv[4]) > 0 ? atoi(argv[4]) : 10;
    signal(SIGTERM, c_on_term);
    while (!c_stop) {
        char q[1024];
        int k = rnd_in(1, maxrows);
        long long del = next > first + 3 && rnd_in(0, 3) == 0 ? next - rnd_in(1, 3) : -1;
        snprintf(q, sizeof q,
                 "BEGIN;"
                 "INSERT INTO %s SELECT g, 'pg ' || g, g FROM generate_series(%lld, %lld) g;"
                 "UPDATE %s SET price = price + 1, name = 'pg upd %lld' WHERE id = %d;"
                 "DELETE FROM %s WHERE id = %lld;"
                 "COMMIT",
                 table, next, next + k - 1, table, next, rnd_in(1, PG_ROWS), table, del);
        next += k;
        PGresult *r = PQexec(c, q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "pgwriter: %s", PQerrorMessage(c));
            PQclear(r);
            PQfinish(c);
            return 3;
        }
        PQclear(r);
        it_sleep_ms(rnd_in(2, 15));
    }
    PQfinish(c);
    return 0;
}

static int c_status(sa_edge *e, sa_edge_status *st)
{
    sa_err err = {0};
    int rc = sa_edge_status_get(e, st, &err);
    if (rc != 0)
        fprintf(stderr, "edge child: status: %s\n", err.msg);
    return rc;
}

/*
 * --child edge DIR TABLE BASE PUTS BATCH SEED LOOP
 * LOOP 0: write PUTS ops, then sync until nothing is pending (a few
 * rounds).  LOOP 1: until SIGTERM, write 1-6 ops, sync once (network
 * errors are normal), pause 0-30 ms; LOOP 2: the same with long polls
 * (wait 1-3 s), as sa_edge_follow does; LOOP 3: one sync with a 15 s
 * long poll and no write, exit 2 when it failed by the network.  Exit 0;
 * 3 when a local write fails; 4 on a sync error other than a network one
 * (printed).
 */
static int child_edge(char **argv)
{
    const char *dir = argv[0], *table = argv[1];
    long long base = atoll(argv[2]);
    int puts = atoi(argv[3]), loop = atoi(argv[6]);
    rng_seed(strtoull(argv[5], NULL, 10));
    sa_edge_options o;
    sa_edge_options_init(&o);
    o.batch_ops = (uint32_t)atoi(argv[4]);
    o.http_timeout_s = 10;
    sa_err err = {0};
    if (sa_edge_open(dir, &o, &c_edge, &err) != 0) {
        fprintf(stderr, "edge child %s: open: %s\n", dir, err.msg);
        return 3;
    }
    signal(SIGTERM, c_on_term);
    sa_edge_status st;
    sim m = {0};
    int rc = c_status(c_edge, &st), code = 0, other = 0;
    if (rc == 0)
        sim_to(&m, st.last_seq);
    for (int i = 0; rc == 0 && !loop && i < puts; i++)
        if ((rc = op_next(c_edge, table, base, &m, &err)) != 0)
            fprintf(stderr, "edge child %s: op %" PRIu64 ": %s\n", dir, m.n + 1, err.msg);
    if (rc != 0)
        code = 3;
    for (int round = 0; code == 0 && !loop && round < 6; round++) {
        rc = sa_edge_sync_once(c_edge, 0, &err);
        if (rc == 0 && c_status(c_edge, &st) == 0 && st.pending == 0 && round > 0)
            break;
        if (rc != 0 && rc != SA_EIO) {
            fprintf(stderr, "edge child %s: sync: %s: %s\n", dir, sa_err_name(rc), err.msg);
            code = 4;
        }
    }
    if (code == 0 && loop == 3) { /* one long poll, nothing written */
        rc = sa_edge_sync_once(c_edge, 15, &err);
        if (rc != 0)
            fprintf(stderr, "edge child %s: long-poll sync: %s: %s\n", dir, sa_err_name(rc),
                    err.msg);
        code = rc == 0 ? 0 : rc == SA_EIO ? 2 : 4;
        loop = 0;
    }
    while (code == 0 && loop && !c_stop) {
        for (int k = rnd_in(1, 6); k > 0 && code == 0; k--)
            if (op_next(c_edge, table, base, &m, &err) != 0) {
                fprintf(stderr, "edge child %s: op %" PRIu64 ": %s\n", dir, m.n + 1, err.msg);
                code = 3;
            }
        if (code != 0 || c_stop)
            break;
        rc = sa_edge_sync_once(c_edge, loop == 2 ? rnd_in(1, 3) : 0, &err);
        if (rc != 0 && rc != SA_EIO && rc != SA_ECLOSED && !c_stop) {
            /* counted, not fatal: the parent's final checks judge the
             * outcome; the message shows what the edge met */
            if (other++ < 20)
                fprintf(stderr, "edge child %s: sync: %s: %s\n", dir, sa_err_name(rc), err.msg);
        }
        it_sleep_ms(rnd_in(0, 30));
    }
    sa_edge_close(c_edge);
    sim_free(&m);
    if (code == 0 && other > 0)
        code = 4;
    return code;
}

static int child_main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 64;
    if (argc >= 8 && strcmp(argv[2], "pgwriter") == 0)
        rc = child_pgwriter(argv + 3);
    else if (argc >= 10 && strcmp(argv[2], "edge") == 0)
        rc = child_edge(argv + 3);
    else
        fprintf(stderr, "unknown child command\n");
    curl_global_cleanup();
    return rc;
}

/* Children still running: killed by the next test's setup or the group's
 * teardown when a test failed halfway; their output goes to g_kids.log. */
static et_kids g_kids;

/* Start argv[0] (a path, or g_self) with its output in g_kids.log. */
static pid_t spawn(const char *const *argv)
{
    return et_spawn(&g_kids, g_self, argv, 0);
}

static pid_t spawn_pgwriter(const char *table, long long first, int maxrows)
{
    char f[32], s[32], mr[16];
    snprintf(f, sizeof f, "%lld", first);
    snprintf(s, sizeof s, "%" PRIu64, rnd());
    snprintf(mr, sizeof mr, "%d", maxrows);
    const char *conn = sa_pgh_conninfo(g_h);
    const char *argv[] = {g_self, "--child", "pgwriter", conn, table, f, s, mr, NULL};
    return spawn(argv);
}

static pid_t spawn_edge(const char *dir, const char *table, long long base, int puts, int batch,
                        int loop)
{
    char b[32], p[32], bt[32], s[32], l[8];
    snprintf(b, sizeof b, "%lld", base);
    snprintf(p, sizeof p, "%d", puts);
    snprintf(bt, sizeof bt, "%d", batch);
    snprintf(s, sizeof s, "%" PRIu64, rnd());
    snprintf(l, sizeof l, "%d", loop);
    const char *argv[] = {g_self, "--child", "edge", dir, table, b, p, bt, s, l, NULL};
    return spawn(argv);
}

/* SIGTERM a looping child and wait (at most timeout_ms, then SIGKILL);
 * its exit code, or -1 when it had to be killed. */
static int stop_child(pid_t pid, int sig, int timeout_ms)
{
    return et_kid_stop(&g_kids, pid, sig, timeout_ms, 0, NULL);
}

/* Let child pid run for delay_ms, then SIGKILL it unless it ended: 1 when
 * the kill ended it, else 0; *ws the wait status either way. */
static int kill_after(pid_t pid, int delay_ms, int *ws)
{
    int exited = 0;
    for (int64_t end = it_now_ms() + delay_ms; it_now_ms() < end && !exited; it_sleep_ms(1))
        exited = et_kid_wait(&g_kids, pid, ws, WNOHANG) == pid;
    if (!exited) {
        kill(pid, SIGKILL);
        et_kid_wait(&g_kids, pid, ws, 0);
    }
    return WIFSIGNALED(*ws) && WTERMSIG(*ws) == SIGKILL;
}

/* ---- the bridge ------------------------------------------------------ */

/* Start the bridge on port (0: any; the port it took goes to g_port). */
static void start_bridge(int port, const char *const *extra_args)
{
    g_port = et_bridge_start(&g_b, sa_pgh_conninfo(g_h), g_data, port, extra_args);
}

static int group_setup(void **state)
{
    (void)state;
    const char *env = getenv("SA_TEST_SEED");
    g_seed =
        env && env[0] ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    printf("# seed %" PRIu64 " (replay with SA_TEST_SEED=%" PRIu64 ")\n", g_seed, g_seed);
    fflush(stdout);
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0) {
        fprintf(stderr, "cannot find this test's own binary\n");
        return -1;
    }
    g_self[n] = '\0';
    int rc = et_group_start(&g_h, &g_c, &g_skip);
    if (rc != 0 || g_skip)
        return rc;
    for (int t = 1; t <= 4; t++)
        et_sql(g_c,
               "CREATE TABLE f%d (id bigint PRIMARY KEY, name text, price numeric);"
               "INSERT INTO f%d SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, %d) g;"
               "SELECT softadastra.add_table('f%d')",
               t, t, PG_ROWS, t);
    it_data_dir(g_data, sizeof g_data, "edgefault-bridge");
    it_data_dir(g_tmp, sizeof g_tmp, "edgefault-edges");
    snprintf(g_kids.log, sizeof g_kids.log, "%s/children.log", g_tmp);
    start_bridge(0, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    et_kids_kill_all(&g_kids);
    int failed = g_started != g_done;
    et_bridge_kill(&g_b, failed, 60);
    if (failed && g_b.log[0] != '\0') {
        fprintf(stderr, "---- children's log (%s) ----\n", g_kids.log);
        et_kids_dump_log(&g_kids, 40);
    }
    et_group_end(g_c, g_h, &g_b, g_data, g_tmp, failed, 0);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    if (g_skip)
        skip();
    et_kids_kill_all(&g_kids); /* a failed test's */
    int ws;
    if (g_b.pid <= 0 || it_bridge_exited(&g_b, &ws)) /* a failed test's too */
        start_bridge(g_port, NULL);
    g_started++;
    rng_seed(g_seed + (uint64_t)g_started * 1000003u);
    return 0;
}

/* ---- edges ------------------------------------------------------------ */

static void edge_dir(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

/* Create peer `name` (its token to token[128] when not NULL). */
static void peer_create(const char *name, char *token)
{
    char t[128];
    et_peer_create(g_c, name, t, sizeof t);
    if (token != NULL)
        snprintf(token, 128, "%s", t);
}

/* A new edge store for peer name with token. */
static sa_edge *edge_create(const char *name, const char *token)
{
    char dir[1100];
    edge_dir(name, dir, sizeof dir);
    return et_edge_create(dir, name, token, g_port);
}

static sa_edge *edge_open(const char *name)
{
    char dir[1100];
    edge_dir(name, dir, sizeof dir);
    return et_edge_open(dir, NULL);
}

/* ---- rows, row by row (edge_util.h) ---------------------------------- */

/* Sync every edge until each holds exactly PostgreSQL's rows of table and
 * has nothing pending or shown over the server's rows. */
static void converge(sa_edge **es, int n, const char *table, int timeout_ms)
{
    et_converge(g_c, es, n, table, timeout_ms, NULL, "");
}

/*
 * PostgreSQL's side of exactly-once for one edge (peer, epoch) that wrote
 * ops 1..n with base: applied_seq = n; the rows in the edge's id range are
 * what ops 1..n give; no conflict (none of this file's scenarios writes a
 * row from two sides, so a conflict means an op applied twice), no
 * duplicate conflict rows for one op, no rejection.
 */
static void check_pg_exactly_once(const char *peer, uint64_t epoch, uint64_t n, const char *table,
                                  long long base)
{
    char v[256];
    et_q1(
        g_c, v, sizeof v,
        "SELECT applied_seq FROM softadastra.peer_progress WHERE peer = '%s' AND epoch = %" PRIu64,
        peer, epoch);
    if (strtoull(v, NULL, 10) != n)
        fail_msg("%s (epoch %" PRIu64 "): applied_seq is \"%s\", the edge wrote %" PRIu64 " ops",
                 peer, epoch, v, n);
    et_q1(g_c, v, sizeof v,
          "SELECT coalesce(string_agg(format('seq %%s x%%s', op_seq, c), ', '), '') FROM ("
          " SELECT op_seq, count(*) c FROM softadastra.conflicts WHERE origin = '%s' AND epoch = "
          "%" PRIu64 " GROUP BY op_seq HAVING count(*) > 1) d",
          peer, epoch);
    if (v[0] != '\0')
        fail_msg("%s: several conflict rows for one op: %s", peer, v);
    et_q1(g_c, v, sizeof v,
          "SELECT coalesce(string_agg(format('seq %%s %%s %%s %%s', op_seq, kind, key, resolution),"
          " '; ' ORDER BY id), '') FROM softadastra.conflicts WHERE origin = '%s'",
          peer);
    if (v[0] != '\0')
        fail_msg("%s: conflicts recorded though no row was written from two sides "
                 "(an op applied twice?): %s",
                 peer, v);
    et_q1(g_c, v, sizeof v,
          "SELECT coalesce(string_agg(format('seq %%s: %%s', op_seq, message), '; '), '')"
          " FROM softadastra.rejections WHERE peer = '%s'",
          peer);
    if (v[0] != '\0')
        fail_msg("%s: ops rejected: %s", peer, v);
    /* the rows ops 1..n leave */
    sim m = {0};
    sim_to(&m, n);
    char q[512];
    snprintf(q, sizeof q,
             "SELECT id, name, price::text FROM %s WHERE id > %lld AND id < %lld ORDER BY id",
             table, base, base + 1000000LL);
    PGresult *r = PQexec(g_c, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQerrorMessage(g_c));
    int i = 0, nr = PQntuples(r);
    for (uint64_t s = 1; s <= n; s++) {
        if (!m.present[s])
            continue;
        char name[64], price[32];
        snprintf(name, sizeof name, "op %" PRIu64, s);
        snprintf(price, sizeof price, "%" PRId64, m.price[s]);
        if (i >= nr)
            fail_msg("%s: row %lld (op %" PRIu64 ") missing in PostgreSQL", peer,
                     base + (long long)s, s);
        long long id = atoll(PQgetvalue(r, i, 0));
        if (id != base + (long long)s)
            fail_msg("%s: PostgreSQL has row %lld where ops 1..%" PRIu64 " leave row %lld next",
                     peer, id, n, base + (long long)s);
        if (strcmp(PQgetvalue(r, i, 1), name) != 0 || strcmp(PQgetvalue(r, i, 2), price) != 0)
            fail_msg("%s: row %lld is (%s, %s) in PostgreSQL; ops 1..%" PRIu64 " leave (%s, %s)",
                     peer, id, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), n, name, price);
        i++;
    }
    if (i < nr)
        fail_msg("%s: PostgreSQL has row %s that ops 1..%" PRIu64 " do not leave", peer,
                 PQgetvalue(r, i, 0), n);
    PQclear(r);
    sim_free(&m);
}

/*
 * The edge's side: nothing pending, every op accepted and applied.  The
 * edge can see its ops come back in the change stream (so the overlay
 * retires) a moment before the bridge's results report them applied (the
 * applier records its watermark after PostgreSQL's commit): a few more
 * syncs are allowed for "applied" to catch up.
 */
static void check_edge_done(sa_edge *e, uint64_t n)
{
    sa_edge_status st = et_status(e);
    for (int64_t end = it_now_ms() + 5000; st.applied < n && it_now_ms() < end; it_sleep_ms(50)) {
        et_sync(e, 1);
        st = et_status(e);
    }
    if (st.last_seq != n || st.accepted != n || st.applied != n || st.pending != 0 ||
        st.overlay != 0 || st.outcomes != 0)
        fail_msg("edge %s: last seq %" PRIu64 ", accepted %" PRIu64 ", applied %" PRIu64
                 ", pending %" PRIu64 ", overlay %" PRIu64 ", outcomes %" PRIu64
                 "; expected %" PRIu64 " ops all applied, nothing left",
                 st.peer, st.last_seq, st.accepted, st.applied, st.pending, st.overlay, st.outcomes,
                 n);
}

static long long healthz(const char *field)
{
    long st = 0;
    json_t *j = et_http_get(g_port, "/healthz", NULL, &st);
    json_t *f = json_object_get(j, field); /* a 503 (an unhealthy part) still names it */
    long long v =
        (st == 200 || st == 503) && json_is_integer(f) ? (long long)json_integer_value(f) : -1;
    json_decref(j);
    return v;
}

/* ---- tests ------------------------------------------------------------ */

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

/*
 * An edge killed -9 again and again while it syncs (pushing many queued
 * ops in several requests, pulling PostgreSQL's steady writes), in two
 * forms: a libsa_edge child that writes then syncs, and `sa-edge sync`
 * after the test queued ops.  After each kill: the store opens, its seq
 * never went back, PostgreSQL never applied more than it issued.  At the
 * end: exactly once on both sides.
 */
static void test_edge_faults_killed_mid_sync(void **state)
{
    (void)state;
    const char *table = "public.f1";
    const long long base = 1000000;
    int want = env_int("SA_EDGE_KILLS", 20);
    char token[128], dir[1100];
    peer_create("killme", token);
    edge_dir("killme", dir, sizeof dir);
    sa_edge *e = edge_create("killme", token);
    uint64_t epoch = et_status(e).epoch;
    sa_edge_close(e);
    char bin[1100];
    snprintf(bin, sizeof bin, "%s/edge/sa-edge",
             getenv("SA_BINARY_DIR") ? getenv("SA_BINARY_DIR") : "build");

    pid_t writer = spawn_pgwriter(table, PG_IDS, 30);
    /* killed during its first sync: the bootstrap */
    int boot_kills = 0;
    for (int i = 0; i < 3; i++) {
        int ws = 0;
        pid_t pid = spawn_edge(dir, table, base, 0, 50, 0);
        if (kill_after(pid, rnd_in(1, 150), &ws))
            boot_kills++;
        else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
            et_kids_dump_log(&g_kids, 20);
            fail_msg("the edge child's first sync ended with status %d", ws);
        }
    }
    e = edge_open("killme");
    if (et_status(e).instance[0] == '\0')
        et_sync(e, 1);
    sa_edge_close(e);
    int kills = 0, mid_push = 0, after_push = 0, finished = 0;
    int est[2] = {300, 300}; /* ms a run of each kind takes (estimate) */
    uint64_t last = 0;
    sim m = {0};
    int64_t t0 = it_now_ms();
    for (int iter = 0; (kills < want || mid_push == 0 || after_push == 0) && iter < 8 * want;
         iter++) {
        int cli = rnd_in(0, 2) == 0;
        pid_t pid;
        int delay;
        if (cli) {
            /* ops queued before, pushed by sa-edge in batches of 500 */
            e = edge_open("killme");
            sim_to(&m, et_status(e).last_seq);
            sa_err err = {0};
            for (int k = rnd_in(600, 1600); k > 0; k--)
                if (op_next(e, table, base, &m, &err) != 0)
                    fail_msg("op %" PRIu64 ": %s", m.n + 1, err.msg);
            sa_edge_close(e);
            const char *argv[] = {bin, "--data", dir, "sync", NULL};
            pid = spawn(argv);
            delay = rnd_in(1, est[1] * 13 / 10);
        } else {
            /* a third of the runs only sync: mostly pulling */
            int puts = rnd_in(0, 2) == 0 ? 0 : rnd_in(1, 400);
            pid = spawn_edge(dir, table, base, puts, rnd_in(10, 60), 0);
            delay = rnd_in(1, est[0] * 13 / 10);
        }
        int ws = 0;
        int64_t started = it_now_ms();
        kill_after(pid, delay, &ws);
        if (WIFSIGNALED(ws)) {
            kills++;
        } else if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
            /* ran to the end: kill moments are drawn over how long a run
             * takes, so they fall in every phase */
            est[cli] = (est[cli] * 2 + (int)(it_now_ms() - started)) / 3;
            finished++;
        } else if (WIFEXITED(ws) && WEXITSTATUS(ws) != 0) {
            et_kids_dump_log(&g_kids, 20);
            fail_msg("the %s exited with %d (see above)", cli ? "sa-edge sync" : "edge child",
                     WEXITSTATUS(ws));
        }
        /* what the kill left: a store that opens, a seq that never went
         * back, and PostgreSQL behind the edge */
        e = edge_open("killme");
        sa_edge_status st = et_status(e);
        sa_edge_close(e);
        if (st.last_seq < last)
            fail_msg("after kill %d the edge's last seq went back from %" PRIu64 " to %" PRIu64,
                     kills, last, st.last_seq);
        last = st.last_seq;
        if (st.accepted > st.last_seq)
            fail_msg("the edge says %" PRIu64 " accepted of %" PRIu64 " issued", st.accepted,
                     st.last_seq);
        uint64_t ap = et_applied_seq(g_c, "killme", epoch);
        if (ap > st.last_seq)
            fail_msg("PostgreSQL applied seq %" PRIu64 " of an edge that issued %" PRIu64, ap,
                     st.last_seq);
        if (WIFSIGNALED(ws) && st.pending > 0)
            mid_push++;
        else if (WIFSIGNALED(ws))
            after_push++;
    }
    int wrc = stop_child(writer, SIGTERM, 10000);
    if (wrc != 0) {
        et_kids_dump_log(&g_kids, 20);
        fail_msg("PostgreSQL's writer ended with %d", wrc);
    }
    printf("# %d kills during the bootstrap, %d during syncs (%d with ops still unaccepted, %d "
           "after the push), %d runs finished, %" PRIu64 " ops, %.1f s\n",
           boot_kills, kills, mid_push, after_push, finished, last,
           (double)(it_now_ms() - t0) / 1000.0);
    if (kills < want || mid_push == 0 || after_push == 0)
        fail_msg("only %d of %d kills landed (%d before the push ended, %d after)", kills, want,
                 mid_push, after_push);

    e = edge_open("killme");
    sa_edge *es[1] = {e};
    converge(es, 1, table, 25000);
    uint64_t n = et_status(e).last_seq;
    et_sync(e, 1); /* once more: nothing is sent twice */
    check_edge_done(e, n);
    check_pg_exactly_once("killme", epoch, n, table, base);
    char why[2048];
    if (!et_edge_equals_pg(g_c, e, table, NULL, why, sizeof why))
        fail_msg("after the last sync: %s", why);
    sa_edge_close(e);
    sim_free(&m);
    g_done++;
}

/*
 * The bridge stopped (SIGTERM) and killed (SIGKILL) in turns, restarted on
 * the same port, while two edges write, push and pull and PostgreSQL
 * writes.
 */
static void test_edge_faults_bridge_restarts(void **state)
{
    (void)state;
    const char *table = "public.f2";
    const char *names[2] = {"rs_a", "rs_b"};
    const long long bases[2] = {2000000, 3000000};
    int restarts = env_int("SA_EDGE_RESTARTS", 6);
    char dirs[2][1100];
    uint64_t epochs[2];
    for (int i = 0; i < 2; i++) {
        char token[128];
        peer_create(names[i], token);
        sa_edge *e = edge_create(names[i], token);
        et_sync(e, 1);
        epochs[i] = et_status(e).epoch;
        sa_edge_close(e);
        edge_dir(names[i], dirs[i], sizeof dirs[i]);
    }
    pid_t writer = spawn_pgwriter(table, PG_IDS, 12);
    pid_t kids[2];
    for (int i = 0; i < 2; i++)
        kids[i] = spawn_edge(dirs[i], table, bases[i], 0, rnd_in(5, 40), 1 + i); /* b long-polls */
    int64_t t0 = it_now_ms();
    int port = g_port;
    for (int k = 0; k < restarts; k++) {
        it_sleep_ms(rnd_in(300, 1500));
        int sig = k % 2 == 0 ? SIGKILL : SIGTERM;
        et_bridge_stop(&g_b, sig);
        it_sleep_ms(rnd_in(0, 500));
        start_bridge(port, NULL);
        for (int i = 0; i < 2; i++) {
            int st = 0;
            if (et_kid_wait(&g_kids, kids[i], &st, WNOHANG) == kids[i]) {
                et_kids_dump_log(&g_kids, 20);
                fail_msg("edge %s ended early (status %d)", names[i], st);
            }
        }
    }
    it_sleep_ms(1000);
    int codes[2];
    for (int i = 0; i < 2; i++)
        codes[i] = stop_child(kids[i], SIGTERM, 15000);
    int wrc = stop_child(writer, SIGTERM, 10000);
    printf("# %d bridge restarts in %.1f s\n", restarts, (double)(it_now_ms() - t0) / 1000.0);
    for (int i = 0; i < 2; i++)
        if (codes[i] != 0) {
            et_kids_dump_log(&g_kids, 30);
            fail_msg("edge %s ended with %d: %s", names[i], codes[i],
                     codes[i] == 4 ? "a sync failed other than by the network (see above)"
                                   : "see above");
        }
    if (wrc != 0)
        fail_msg("PostgreSQL's writer ended with %d", wrc);

    sa_edge *es[2] = {edge_open(names[0]), edge_open(names[1])};
    converge(es, 2, table, 30000);
    for (int i = 0; i < 2; i++) {
        uint64_t n = et_status(es[i]).last_seq;
        if (n == 0)
            fail_msg("edge %s wrote nothing", names[i]);
        check_edge_done(es[i], n);
        check_pg_exactly_once(names[i], epochs[i], n, table, bases[i]);
        printf("# edge %s: %" PRIu64 " ops applied once each\n", names[i], n);
    }
    sa_edge_close(es[0]);
    sa_edge_close(es[1]);
    g_done++;
}

/*
 * The bridge stopped (SIGTERM) while an idle edge waits in a long poll
 * (what an edge following an idle database does nearly all the time):
 * the edge must see the bridge as unavailable (SA_EIO, as for any bridge
 * that is down), not as a protocol error (SA_EPROTO: "malformed answer").
 */
static void test_edge_faults_bridge_stop_during_long_poll(void **state)
{
    (void)state;
    char token[128], dir[1100];
    peer_create("idle", token);
    sa_edge *e = edge_create("idle", token);
    et_sync(e, 1);
    sa_edge_close(e);
    edge_dir("idle", dir, sizeof dir);
    pid_t pid = spawn_edge(dir, "public.f2", 7000000, 0, 50, 3);
    it_sleep_ms(1000); /* its push and first pull done: it waits */
    int ws = 0;
    if (et_kid_wait(&g_kids, pid, &ws, WNOHANG) == pid) {
        et_kids_dump_log(&g_kids, 5);
        fail_msg("the long poll ended before the bridge stopped (status %d)", ws);
    }
    et_bridge_stop(&g_b, SIGTERM);
    int code = stop_child(pid, 0, 20000);
    start_bridge(g_port, NULL);
    if (code != 2) {
        et_kids_dump_log(&g_kids, 3);
        fail_msg("the edge's sync ended with child status %d (2: SA_EIO expected): a long poll cut "
                 "by the bridge's shutdown must read as the bridge being unavailable",
                 code);
    }
    e = edge_open("idle");
    sa_edge *es[1] = {e};
    converge(es, 1, "public.f2", 20000);
    sa_edge_close(e);
    g_done++;
}

/*
 * An edge store deleted and initialised again for the same peer: a new
 * epoch, seqs from 1 again.  It bootstraps, its new ops apply, and the old
 * epoch's applied ops are not applied again (PostgreSQL's later change to
 * a row they wrote stays).
 */
static void test_edge_faults_reinit_new_epoch(void **state)
{
    (void)state;
    const char *table = "public.f4";
    const long long base1 = 4000000, base2 = 5000000;
    char token[128], dir[1100];
    peer_create("reinit", token);
    edge_dir("reinit", dir, sizeof dir);
    sa_edge *e = edge_create("reinit", token);
    et_sync(e, 1);
    uint64_t epoch1 = et_status(e).epoch;
    sim m1 = {0};
    sa_err err = {0};
    const int n1 = 40;
    for (int i = 0; i < n1; i++)
        if (op_next(e, table, base1, &m1, &err) != 0)
            fail_msg("op: %s", err.msg);
    sa_edge *es[1] = {e};
    converge(es, 1, table, 20000);
    check_pg_exactly_once("reinit", epoch1, n1, table, base1);
    /* the old epoch also leaves ops it never pushed: lost with the store */
    for (int i = 0; i < 5; i++)
        if (op_next(e, table, base1, &m1, &err) != 0)
            fail_msg("op: %s", err.msg);
    sa_edge_close(e);

    /* PostgreSQL changes rows the old epoch wrote */
    et_sql(g_c, "UPDATE %s SET name = 'pg after', price = -1 WHERE id = %lld", table, base1 + 1);
    et_sql(g_c, "DELETE FROM %s WHERE id = %lld", table, base1 + 2);

    it_rmrf(dir);
    e = edge_create("reinit", token);
    sa_edge_status st = et_status(e);
    if (st.epoch == epoch1 || st.last_seq != 0)
        fail_msg("the new store has epoch %" PRIu64 " (old %" PRIu64 "), last seq %" PRIu64,
                 st.epoch, epoch1, st.last_seq);
    uint64_t epoch2 = st.epoch;
    et_sync(e, 1);
    sim m2 = {0};
    const int n2 = 30;
    for (int i = 0; i < n2; i++)
        if (op_next(e, table, base2, &m2, &err) != 0)
            fail_msg("op: %s", err.msg);
    if (et_status(e).last_seq != (uint64_t)n2)
        fail_msg("the new epoch's seqs do not start at 1 (last seq %" PRIu64 " after %d ops)",
                 et_status(e).last_seq, n2);
    es[0] = e;
    converge(es, 1, table, 20000);
    check_edge_done(e, n2);
    check_pg_exactly_once("reinit", epoch2, n2, table, base2);
    if (et_applied_seq(g_c, "reinit", epoch1) != (uint64_t)n1)
        fail_msg("the old epoch's watermark moved: %" PRIu64,
                 et_applied_seq(g_c, "reinit", epoch1));
    char v[256];
    et_q1(g_c, v, sizeof v, "SELECT name || '/' || price FROM %s WHERE id = %lld", table,
          base1 + 1);
    if (strcmp(v, "pg after/-1") != 0)
        fail_msg("row %lld is \"%s\": an old epoch's op applied again over PostgreSQL's change",
                 base1 + 1, v);
    et_q1(g_c, v, sizeof v, "SELECT count(*) FROM %s WHERE id = %lld", table, base1 + 2);
    if (strcmp(v, "0") != 0)
        fail_msg("row %lld deleted in PostgreSQL is back: an old epoch's op applied again",
                 base1 + 2);
    et_q1(g_c, v, sizeof v, "SELECT count(*) FROM softadastra.peer_progress WHERE peer = 'reinit'");
    assert_string_equal(v, "2");
    sa_edge_close(e);
    sim_free(&m1);
    sim_free(&m2);
    g_done++;
}

/* The SERVER generation of an edge store (bumped by each bootstrap). */
static long server_gen(const char *name)
{
    char dir[1100], path[1200], buf[64] = "";
    edge_dir(name, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/SERVER", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    if (fgets(buf, sizeof buf, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    return atol(buf);
}

/*
 * Last: it restarts the bridge with --wal-retention-s 2.  Edge "ret_off"
 * goes offline with pending writes while "ret_on" keeps syncing and
 * PostgreSQL writes, until the WAL is truncated past ret_off's cursor.
 * Back online, ret_off is told 409 must_resnapshot, bootstraps again,
 * keeps its pending writes, and converges.
 */
static void test_edge_faults_offline_past_retention(void **state)
{
    (void)state;
    const char *table = "public.f3";
    const long long base = 6000000;
    char tok_off[128], tok_on[128];
    peer_create("ret_off", tok_off);
    peer_create("ret_on", tok_on);
    et_bridge_stop(&g_b, SIGTERM);
    const char *args[] = {"--wal-retention-s", "2", NULL};
    start_bridge(g_port, args);
    sa_edge *off = edge_create("ret_off", tok_off), *on = edge_create("ret_on", tok_on);
    et_sync(off, 1);
    et_sync(on, 1);
    sa_edge_status st = et_status(off);
    uint64_t epoch = st.epoch, cursor = st.cursor;
    long gen0 = server_gen("ret_off");
    char inst[64];
    snprintf(inst, sizeof inst, "%s", st.instance);
    /* offline writes: never pushed before the WAL moves on */
    sim m = {0};
    sa_err err = {0};
    const int n = 60;
    for (int i = 0; i < n; i++)
        if (op_next(off, table, base, &m, &err) != 0)
            fail_msg("op: %s", err.msg);
    sa_edge_close(off);

    long long first = 0;
    int64_t t0 = it_now_ms();
    for (int64_t end = t0 + 25000; it_now_ms() < end; it_sleep_ms(200)) {
        et_sql(g_c, "INSERT INTO %s SELECT g, 'pg ' || g, g FROM generate_series(%lld, %lld) g",
               table, PG_IDS + (it_now_ms() - t0) * 100, PG_IDS + (it_now_ms() - t0) * 100 + 20);
        et_sync(on, 1);
        first = healthz("first");
        if (first > (long long)cursor + 1)
            break;
    }
    if (first <= (long long)cursor + 1)
        fail_msg("the WAL was not truncated past the offline edge's cursor %" PRIu64
                 " (first %lld)",
                 cursor, first);
    /* what the bridge now says to the offline edge's cursor */
    char path[256];
    long code = 0;
    snprintf(path, sizeof path, "/v1/changes?after=%" PRIu64 "&limit=10&wait=0&instance=%s", cursor,
             inst);
    json_t *j = et_http_get(g_port, path, tok_off, &code);
    const char *what = json_string_value(json_object_get(j, "error"));
    if (code != 409 || what == NULL || strcmp(what, "must_resnapshot") != 0)
        fail_msg("the stale cursor %" PRIu64 " got HTTP %ld (%s), expected 409 must_resnapshot",
                 cursor, code, what ? what : "no error");
    json_decref(j);

    /* back online, killed a few times early in its first syncs (the
     * re-bootstrap), then a clean sync */
    char dir[1100];
    edge_dir("ret_off", dir, sizeof dir);
    int kills = 0;
    for (int i = 0; i < 4; i++) {
        int ws = 0;
        pid_t pid = spawn_edge(dir, table, base, 0, 20, 0);
        if (kill_after(pid, rnd_in(1, 400), &ws))
            kills++;
        else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
            et_kids_dump_log(&g_kids, 20);
            fail_msg("the edge child coming back ended with status %d", ws);
        }
    }
    printf("# the returning edge was killed %d times in its first syncs\n", kills);
    off = edge_open("ret_off");
    et_sync(off, 1);
    st = et_status(off);
    if (server_gen("ret_off") <= gen0)
        fail_msg("the edge did not bootstrap again (server generation %ld, before %ld)",
                 server_gen("ret_off"), gen0);
    if (strcmp(st.instance, inst) != 0 || st.cursor < (uint64_t)first - 1)
        fail_msg("after the re-bootstrap: instance %s (was %s), cursor %" PRIu64 " (first %lld)",
                 st.instance, inst, st.cursor, first);
    /* its writes are all still visible, applied or pending */
    int nc = 0;
    char **cols = et_pg_columns(g_c, table, &nc);
    et_rows r = et_edge_rows(off, table, cols, nc, NULL);
    size_t have = 0;
    for (size_t i = 0; i < r.n; i++)
        have += atoll(r.v[i].key) > base && atoll(r.v[i].key) < base + 1000000;
    size_t expect = 0;
    for (uint64_t s = 1; s <= m.n; s++)
        expect += m.present[s];
    et_rows_free(&r);
    et_columns_free(cols, nc);
    if (have != expect)
        fail_msg("after the re-bootstrap the edge shows %zu of its %zu rows", have, expect);
    sa_edge *es[2] = {off, on};
    converge(es, 2, table, 25000);
    check_edge_done(off, n);
    check_pg_exactly_once("ret_off", epoch, n, table, base);
    sa_edge_close(off);
    sa_edge_close(on);
    sim_free(&m);
    g_done++;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--child") == 0)
        return child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_edge_faults_killed_mid_sync, test_setup),
        cmocka_unit_test_setup(test_edge_faults_bridge_restarts, test_setup),
        cmocka_unit_test_setup(test_edge_faults_bridge_stop_during_long_poll, test_setup),
        cmocka_unit_test_setup(test_edge_faults_reinit_new_epoch, test_setup),
        cmocka_unit_test_setup(test_edge_faults_offline_past_retention, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
