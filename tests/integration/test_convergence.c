/*
 * test_convergence.c — randomized convergence: a real PostgreSQL (with the
 * softadastra extension), a real sa-bridge, SQL writers and three edges
 * (libsa_edge in child processes) writing the same small set of rows while
 * faults strike, then everything must agree and every edge op must be
 * accounted for exactly once.
 *
 * One seed is one round:
 *   key space     20-50 rows over two tables (cv_a: bigint key; cv_b: text
 *                 and integer key), columns of text, integer, bigint,
 *                 numeric, boolean; a conflict strategy per table drawn
 *                 from lww, server_wins, edge_wins, manual
 *   writers       1-2 SQL connections: upserts, updates, deletes, inserts
 *                 if absent, 1-3 statements per transaction
 *   edges         3 peers putting and deleting the same rows, going
 *                 offline for a while (writing, not syncing), now and then
 *                 an op PostgreSQL must reject (text in an integer column)
 *   faults        SIGKILL of edges (restarted on the same store) and of the
 *                 bridge (SIGKILL or SIGTERM, restarted on the same data
 *                 directory and port)
 * then faults stop, every edge syncs until nothing is pending, nothing is
 * shown over the server's rows and its cursor reached the bridge's head
 * after PostgreSQL's last write, and:
 *   1. every edge holds PostgreSQL's rows of both tables, row by row, every
 *      column;
 *   2. for each edge op (peer, epoch, seq 1..last): peer_progress says all
 *      applied; at most one conflicts row and at most one rejections row,
 *      never both; exactly the ops planned as bad are rejected; the edge's
 *      own outcome records are the database's rows (status, conflict id,
 *      resolution); and "applied once" is checked by a side effect: a
 *      trigger on both tables counts, per tag, how many times a row's tag
 *      column became that tag (cv_hits).  Every tagged put of an edge
 *      carries its own tag "e:PEER:SEQ", so an op applied twice after
 *      anything else wrote its row counts 2; an applied tagged put must
 *      count exactly 1 (its effect is there), a rejected one 0.
 *
 * Each seed's op plan, key space, strategies, fault schedule and writers'
 * statements derive only from the seed (splitmix64, never rand()); the
 * interleaving is timing's.  Default: seeds 1..20.  SA_CONVERGENCE_SEEDS=N
 * runs seeds 1..N, SA_CONVERGENCE_FIRST=F starts at F, SA_CONVERGENCE_SEED=S
 * replays one.  A failure prints "convergence: FAILED with seed S (replay:
 * SA_CONVERGENCE_SEED=S)" and keeps the logs and stores.
 *
 * Ops apply_ops applies without writing (their values were PostgreSQL's
 * already — "1.5" over a stored "1.50" too — or they delete a row already
 * gone) come back in no change; the edge counts them confirmed by the
 * bridge's "confirmed"/"confirmed_at" (api.h, overlay rule (a) of
 * edge/src/edge.c).  Before that, such an op stayed shown over the
 * server's row for good once PostgreSQL changed the row again (seeds 12,
 * 23, 40; "first op still shown over the server's row").
 * SA_CONVERGENCE_NONCANONICAL=0 limits edges to canonical numeric text.
 *
 * Children are this binary re-executed (argv[1] = "--child"), so none
 * inherits the parent's RocksDB threads.  Skipped when the extension is
 * not installed.
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

#define NEDGES 3
#define MAXWRITERS 2
#define MAXEVENTS 8

static sa_pgh *g_h;
static PGconn *g_c;
static it_bridge g_b;
static char g_data[1024], g_tmp[1024], g_self[1024];
static int g_skip, g_started, g_done;
static int g_port;
static uint64_t g_seed; /* the seed running now */

/* ---- randomness: a function of the seed only ------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A stream derived from (a, b): different b, independent streams. */
static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t s = a ^ (b * 0xD1B54A32D192ED03ULL);
    splitmix64(&s);
    return splitmix64(&s);
}

typedef struct prng {
    uint64_t s;
} prng;

static prng prng_of(uint64_t a, uint64_t b)
{
    prng p = {mix(a, b)};
    return p;
}

/* Uniform in [lo, hi]. */
static int pr_in(prng *p, int lo, int hi)
{
    return lo + (int)(splitmix64(&p->s) % (uint64_t)(hi - lo + 1));
}

static int pr_pct(prng *p, int pct)
{
    return pr_in(p, 0, 99) < pct;
}

/* ---- the plan of one seed --------------------------------------------------- */

enum { EV_EDGE_KILL, EV_BRIDGE_KILL, EV_BRIDGE_TERM };

typedef struct event {
    int at_ms, what, target, down_ms;
} event;

typedef struct plan {
    uint64_t seed;
    int run;              /* position in this run: names and ids */
    long long abase;      /* cv_a ids abase+1 .. abase+na */
    int na, nregions, nn; /* cv_b keys: regions x 1..nn */
    const char *strat[2];
    int writers;
    int activity_ms;
    int nev;
    event ev[MAXEVENTS];
} plan;

static const char *const STRATS[] = {"lww", "lww", "lww", "server_wins", "edge_wins", "manual"};

static int ev_cmp(const void *a, const void *b)
{
    return ((const event *)a)->at_ms - ((const event *)b)->at_ms;
}

static void plan_make(uint64_t seed, int run, plan *P)
{
    memset(P, 0, sizeof *P);
    prng p = prng_of(seed, 1);
    P->seed = seed;
    P->run = run;
    P->abase = (long long)(run + 1) * 1000;
    P->na = pr_in(&p, 10, 30);
    P->nregions = pr_in(&p, 2, 3);
    P->nn = pr_in(&p, 3, 7);
    for (int t = 0; t < 2; t++)
        P->strat[t] = STRATS[pr_in(&p, 0, 5)];
    P->writers = pr_in(&p, 1, MAXWRITERS);
    P->activity_ms = pr_in(&p, 2500, 4000);
    int kills = pr_in(&p, 1, 3);
    for (int i = 0; i < kills; i++)
        P->ev[P->nev++] = (event){pr_in(&p, 100, P->activity_ms - 200), EV_EDGE_KILL,
                                  pr_in(&p, 0, NEDGES - 1), pr_in(&p, 0, 600)};
    int bk = pr_pct(&p, 65) ? pr_in(&p, 1, 2) : 0;
    for (int i = 0; i < bk; i++)
        P->ev[P->nev++] =
            (event){pr_in(&p, 200, P->activity_ms - 300),
                    pr_pct(&p, 70) ? EV_BRIDGE_KILL : EV_BRIDGE_TERM, 0, pr_in(&p, 0, 500)};
    qsort(P->ev, (size_t)P->nev, sizeof P->ev[0], ev_cmp);
}

/* Row `i` of the key space: cv_a ids first, then cv_b (region, n). */
static int plan_keys(const plan *P)
{
    return P->na + P->nregions * P->nn;
}

static void plan_region(const plan *P, int j, char *out, size_t cap)
{
    /* one region name with a space and a quote: keys are text too */
    snprintf(out, cap, j == 1 ? "r%d o'west" : "r%d-%d", P->run, j);
}

/* Key of row i as JSON text members ("id": N or "region": .., "n": ..);
 * 0 for cv_a, 1 for cv_b. */
static int key_json(const plan *P, int i, char *out, size_t cap)
{
    if (i < P->na) {
        snprintf(out, cap, "\"id\": %lld", P->abase + 1 + i);
        return 0;
    }
    i -= P->na;
    char reg[64];
    plan_region(P, i / P->nn, reg, sizeof reg);
    snprintf(out, cap, "\"region\": \"%s\", \"n\": %d", reg, 1 + i % P->nn);
    return 1;
}

static const char *const NAMES[] = {"alpha",
                                    "beta",
                                    "gamma",
                                    "d'elta",
                                    "\xc3\xbc"
                                    "n\xc3\xaf"
                                    "code",
                                    "back\\slash"};
static const char *const PRICES[] = {"0.00", "1.50", "1.5", "2.25", "10.00", "-3.75"};

/* Edges write numeric values in any form PostgreSQL accepts ("1.5" for a
 * stored "1.50"), unless SA_CONVERGENCE_NONCANONICAL=0. */
static const char *edge_price(int i)
{
    const char *v = getenv("SA_CONVERGENCE_NONCANONICAL");
    return i == 2 && v != NULL && strcmp(v, "0") == 0 ? "1.50" : PRICES[i];
}
static const long long VALS[] = {0, 1, 2, 3, 5000000000LL, -7};

/* ---- the SQL writer's statements --------------------------------------------- */

/* A literal of text s for SQL (quotes doubled; standard strings). */
static void lit(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    if (cap < 3)
        return;
    out[n++] = '\'';
    for (; *s && n + 3 < cap; s++) {
        if (*s == '\'')
            out[n++] = '\'';
        out[n++] = *s;
    }
    out[n++] = '\'';
    out[n] = '\0';
}

/* Append ", COL = VAL" to set. */
static void set_add(char *set, size_t cap, const char *col, const char *val)
{
    size_t l = strlen(set);
    snprintf(set + l, cap - l, ", %s = %s", col, val);
}

/* One statement of a writer on a random row of the key space, drawn from
 * p; tag for the writes that carry one. */
static void writer_stmt(const plan *P, prng *p, const char *tag, char *q, size_t cap)
{
    int i = pr_in(p, 0, plan_keys(P) - 1), what = pr_in(p, 0, 99);
    int set_name = pr_pct(p, 50), set_tag = pr_pct(p, 50), qty = pr_in(p, 0, 5);
    const char *price = PRICES[pr_in(p, 0, 5)];
    const char *flag = pr_pct(p, 20) ? "NULL" : pr_pct(p, 50) ? "true" : "false";
    long long val = VALS[pr_in(p, 0, 5)];
    char name[64], tg[64], reg[64], rl[80], set[512];
    lit(name, sizeof name, NAMES[pr_in(p, 0, 5)]);
    lit(tg, sizeof tg, tag);
    if (i < P->na) {
        long long id = P->abase + 1 + i;
        if (what < 35 || what >= 90) /* upsert, or insert if absent */
            snprintf(q, cap,
                     "INSERT INTO cv_a (id, name, qty, price, flag, tag) VALUES (%lld, %s, %d, "
                     "%s, %s, %s) ON CONFLICT (id) DO %s",
                     id, name, qty, price, flag, tg,
                     what < 35 ? "UPDATE SET name = EXCLUDED.name, qty = EXCLUDED.qty, price = "
                                 "EXCLUDED.price, flag = EXCLUDED.flag, tag = EXCLUDED.tag"
                               : "NOTHING");
        else if (what < 70) { /* update: some columns, a tag half the time */
            snprintf(set, sizeof set, "qty = (coalesce(qty, 0) + 1) %% 6");
            if (set_name)
                set_add(set, sizeof set, "name", name);
            if (set_tag)
                set_add(set, sizeof set, "tag", tg);
            snprintf(q, cap, "UPDATE cv_a SET %s WHERE id = %lld", set, id);
        } else
            snprintf(q, cap, "DELETE FROM cv_a WHERE id = %lld", id);
        return;
    }
    i -= P->na;
    plan_region(P, i / P->nn, reg, sizeof reg);
    lit(rl, sizeof rl, reg);
    int n = 1 + i % P->nn;
    if (what < 35 || what >= 90)
        snprintf(q, cap,
                 "INSERT INTO cv_b (region, n, label, val, tag) VALUES (%s, %d, %s, %lld, %s) "
                 "ON CONFLICT (region, n) DO %s",
                 rl, n, name, val, tg,
                 what < 35 ? "UPDATE SET label = EXCLUDED.label, val = EXCLUDED.val, tag = "
                             "EXCLUDED.tag"
                           : "NOTHING");
    else if (what < 70) {
        snprintf(set, sizeof set, "val = coalesce(val, 0) + 1");
        if (set_name)
            set_add(set, sizeof set, "label", name);
        if (set_tag)
            set_add(set, sizeof set, "tag", tg);
        snprintf(q, cap, "UPDATE cv_b SET %s WHERE region = %s AND n = %d", set, rl, n);
    } else
        snprintf(q, cap, "DELETE FROM cv_b WHERE region = %s AND n = %d", rl, n);
}

/* ---- what an edge writes: op k of edge e, a function of (seed, e, k) -------- */

enum { K_TAGGED = 'T', K_UNTAGGED = 'U', K_DELETE = 'D', K_BAD = 'B' };

/*
 * The planned op: kind, row and values.  A planned delete of a row the edge
 * does not see becomes a tagged put (the edge refuses to delete what it
 * does not see); the kind actually written goes to the intent file.
 */
typedef struct eop {
    int kind, row;
    prng p; /* the values */
} eop;

static void eop_plan(const plan *P, int e, uint64_t k, eop *o)
{
    o->p = prng_of(mix(P->seed, 100 + (uint64_t)e), k);
    int r = pr_in(&o->p, 0, 99);
    o->kind = r < 20 ? K_DELETE : r < 24 ? K_BAD : r < 50 ? K_UNTAGGED : K_TAGGED;
    o->row = pr_in(&o->p, 0, plan_keys(P) - 1);
}

/* The JSON text of op o as kind (the key alone for a delete). */
static void eop_json(const plan *P, eop *o, int kind, const char *tag, char *out, size_t cap)
{
    char key[160];
    int t = key_json(P, o->row, key, sizeof key);
    prng *p = &o->p;
    json_t *jn = json_string(NAMES[pr_in(p, 0, 5)]);
    char *nm = json_dumps(jn, JSON_ENCODE_ANY);
    json_decref(jn);
    const char *flag = pr_pct(p, 20) ? "null" : pr_pct(p, 50) ? "true" : "false";
    const char *price = edge_price(pr_in(p, 0, 5));
    int qty = pr_in(p, 0, 5), sub = pr_in(p, 0, 2);
    long long val = VALS[pr_in(p, 0, 5)];
    if (kind == K_DELETE)
        snprintf(out, cap, "{%s}", key);
    else if (kind == K_BAD && t == 0) /* text in an integer column */
        snprintf(out, cap, "{%s, \"qty\": \"lots\", \"tag\": \"%s\"}", key, tag);
    else if (kind == K_BAD) /* ... and in a bigint one */
        snprintf(out, cap, "{%s, \"val\": \"12x\", \"tag\": \"%s\"}", key, tag);
    else if (kind == K_TAGGED && t == 0)
        snprintf(out, cap,
                 "{%s, \"name\": %s, \"qty\": %d, \"price\": \"%s\", \"flag\": %s, "
                 "\"tag\": \"%s\"}",
                 key, nm, qty, price, flag, tag);
    else if (kind == K_TAGGED)
        snprintf(out, cap, "{%s, \"label\": %s, \"val\": %lld, \"tag\": \"%s\"}", key, nm, val,
                 tag);
    else if (t == 0 && sub == 0) /* untagged: a few columns, so disjoint changes merge */
        snprintf(out, cap, "{%s, \"qty\": %d}", key, qty);
    else if (t == 0 && sub == 1)
        snprintf(out, cap, "{%s, \"name\": %s, \"flag\": %s}", key, nm, flag);
    else if (t == 0)
        snprintf(out, cap, "{%s, \"price\": \"%s\"}", key, price);
    else if (sub == 0)
        snprintf(out, cap, "{%s, \"val\": %lld}", key, val);
    else
        snprintf(out, cap, "{%s, \"label\": %s}", key, nm);
    free(nm);
}

static const char *table_of(const plan *P, int row)
{
    return row < P->na ? "public.cv_a" : "public.cv_b";
}

/* ---- children (this binary, re-executed) ------------------------------------ */

static volatile sig_atomic_t c_stop;
static sa_edge *c_edge;

static void c_on_term(int sig)
{
    (void)sig;
    c_stop = 1;
    if (c_edge != NULL)
        sa_edge_stop(c_edge);
}

/*
 * --child writer CONNINFO RUN SEED W
 * Until SIGTERM: transactions of 1-3 writer statements, 5-40 ms apart.  A
 * deadlock or serialization failure rolls back and goes on; any other
 * error exits 3.
 */
static int child_writer(char **argv)
{
    PGconn *c = PQconnectdb(argv[0]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "writer: %s", PQerrorMessage(c));
        return 3;
    }
    int run = atoi(argv[1]), w = atoi(argv[3]), code = 0;
    uint64_t seed = strtoull(argv[2], NULL, 10);
    plan P;
    plan_make(seed, run, &P);
    prng p = prng_of(mix(seed, 300 + (uint64_t)w), 0);
    for (long n = 0; !c_stop && code == 0;) {
        int nst = pr_in(&p, 1, 3), ok = 1;
        PQclear(PQexec(c, "BEGIN"));
        for (int i = 0; i <= nst && ok; i++) {
            char q[1024], tag[64];
            if (i < nst) {
                snprintf(tag, sizeof tag, "pg:%d:%d:%ld", run, w, n++);
                writer_stmt(&P, &p, tag, q, sizeof q);
            } else
                snprintf(q, sizeof q, "COMMIT");
            PGresult *r = PQexec(c, q);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                ok = 0;
                if (st == NULL || (strcmp(st, "40P01") != 0 && strcmp(st, "40001") != 0)) {
                    fprintf(stderr, "writer %d (seed %" PRIu64 "): %s: %s", w, seed, q,
                            PQerrorMessage(c));
                    code = 3;
                }
            }
            PQclear(r);
        }
        if (!ok)
            PQclear(PQexec(c, "ROLLBACK"));
        it_sleep_ms(pr_in(&p, 5, 40));
    }
    PQfinish(c);
    return code;
}

/*
 * One op of the edge: op k = last seq + 1, as planned.  Its kind goes to
 * the intent file (fd) before the write, so the parent knows what each seq
 * was even when a kill lands between the two (the op is then planned again
 * the same way after the restart).  0, or 3 when a local write fails.
 */
static int child_edge_op(const plan *P, int e, const char *peer, uint64_t k, int fd)
{
    eop o;
    eop_plan(P, e, k, &o);
    char key[200], txt[1024], tag[160], line[64];
    key_json(P, o.row, key + 1, sizeof key - 2);
    key[0] = '{';
    strcat(key, "}");
    const char *table = table_of(P, o.row);
    sa_err err = {0};
    int kind = o.kind, rc = 0;
    json_t *kj = json_loads(key, 0, NULL), *row = NULL;
    if (kind == K_DELETE) {
        rc = sa_edge_get(c_edge, table, kj, &row, &err);
        json_decref(row);
        if (rc == SA_ENOTFOUND)
            kind = K_TAGGED, rc = 0;
    }
    snprintf(tag, sizeof tag, "e:%s:%" PRIu64, peer, k);
    eop_json(P, &o, kind, tag, txt, sizeof txt);
    snprintf(line, sizeof line, "%" PRIu64 " %c\n", k, kind);
    if (rc == 0 && write(fd, line, strlen(line)) != (ssize_t)strlen(line))
        rc = sa_err_set(&err, SA_ESYS, "cannot write the intent file");
    json_t *j = rc == 0 ? json_loads(txt, 0, NULL) : NULL;
    if (rc == 0 && j == NULL)
        rc = sa_err_set(&err, SA_EINVAL, "bad JSON %s", txt);
    uint64_t seq = 0;
    if (rc == 0)
        rc = kind == K_DELETE ? sa_edge_delete(c_edge, table, j, &seq, &err)
                              : sa_edge_put(c_edge, table, j, &seq, &err);
    if (rc == 0 && seq != k)
        rc = sa_err_set(&err, SA_EPROTO, "op %" PRIu64 " was given seq %" PRIu64, k, seq);
    if (rc != 0)
        fprintf(stderr, "edge %s: op %" PRIu64 " (%c %s): %s\n", peer, k, kind, txt, err.msg);
    json_decref(j);
    json_decref(kj);
    return rc == 0 ? 0 : 3;
}

/*
 * --child edge DIR RUN SEED E INCARNATION
 * Until SIGTERM: 1-3 ops, then a sync (a short long poll now and then),
 * a pause of 5-50 ms; now and then offline for 0.3-1.5 s (writing, not
 * syncing).  Exit 0; 3 when a local write fails; 4 when a sync failed
 * otherwise than by the network (printed).
 */
static int child_edge(char **argv)
{
    const char *dir = argv[0];
    int run = atoi(argv[1]), e = atoi(argv[3]), inc = atoi(argv[4]);
    uint64_t seed = strtoull(argv[2], NULL, 10);
    plan P;
    plan_make(seed, run, &P);
    prng t = prng_of(mix(seed, 200 + (uint64_t)e), (uint64_t)inc);
    char intent[1200];
    snprintf(intent, sizeof intent, "%s.intent", dir);
    int fd = open(intent, O_WRONLY | O_CREAT | O_APPEND, 0644);
    sa_edge_options o;
    sa_edge_options_init(&o);
    o.http_timeout_s = 10;
    o.batch_ops = (uint32_t)pr_in(&t, 3, 100);
    sa_err err = {0};
    if (fd < 0 || sa_edge_open(dir, &o, &c_edge, &err) != 0) {
        fprintf(stderr, "edge child %s: open: %s\n", dir, fd < 0 ? strerror(errno) : err.msg);
        return 3;
    }
    sa_edge_status st;
    int code = 0, other = 0;
    if (sa_edge_status_get(c_edge, &st, &err) != 0) {
        fprintf(stderr, "edge child %s: status: %s\n", dir, err.msg);
        code = 3;
    }
    int64_t offline_until = 0;
    while (code == 0 && !c_stop) {
        for (int w = pr_in(&t, 1, 3); w > 0 && code == 0 && !c_stop; w--)
            code = child_edge_op(&P, e, st.peer, ++st.last_seq, fd);
        int64_t now = it_now_ms();
        if (code == 0 && !c_stop && now >= offline_until) {
            if (pr_pct(&t, 7)) {
                offline_until = now + pr_in(&t, 300, 1500);
            } else {
                int rc = sa_edge_sync_once(c_edge, pr_pct(&t, 25) ? 1 : 0, &err);
                if (rc != 0 && rc != SA_EIO && rc != SA_ECLOSED && !c_stop && other++ < 20)
                    fprintf(stderr, "edge child %s: sync: %s: %s\n", st.peer, sa_err_name(rc),
                            err.msg);
            }
        }
        it_sleep_ms(pr_in(&t, 5, 50));
    }
    sa_edge_close(c_edge);
    close(fd);
    return code == 0 && other > 0 ? 4 : code;
}

static int child_main(int argc, char **argv)
{
    /* spawn blocked SIGTERM across the exec, so a stop that comes before
     * this point is held, not fatal */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    signal(SIGTERM, c_on_term);
    sigprocmask(SIG_UNBLOCK, &term, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 64;
    if (argc >= 7 && strcmp(argv[2], "writer") == 0)
        rc = child_writer(argv + 3);
    else if (argc >= 8 && strcmp(argv[2], "edge") == 0)
        rc = child_edge(argv + 3);
    else
        fprintf(stderr, "unknown child command\n");
    curl_global_cleanup();
    return rc;
}

/* ---- child processes, from the parent -------------------------------------- */

/* Children still running: killed by the teardown when a seed failed;
 * their output goes to g_kids.log. */
static et_kids g_kids;

/* Start this binary with argv (argv[0] = g_self), SIGTERM blocked until
 * child_main handles it. */
static pid_t spawn(const char *const *argv)
{
    return et_spawn(&g_kids, g_self, argv, 1);
}

static pid_t spawn_writer(const plan *P, int w)
{
    char run[16], seed[32], ws[16];
    snprintf(run, sizeof run, "%d", P->run);
    snprintf(seed, sizeof seed, "%" PRIu64, P->seed);
    snprintf(ws, sizeof ws, "%d", w);
    const char *argv[] = {g_self, "--child", "writer", sa_pgh_conninfo(g_h), run, seed, ws, NULL};
    return spawn(argv);
}

static void edge_dir(const plan *P, int e, char *out, size_t cap)
{
    snprintf(out, cap, "%s/cv%de%d", g_tmp, P->run, e);
}

static void peer_name(const plan *P, int e, char *out, size_t cap)
{
    snprintf(out, cap, "cv%de%d", P->run, e);
}

static pid_t spawn_edge(const plan *P, int e, int inc)
{
    char dir[1100], run[16], seed[32], es[16], is[16];
    edge_dir(P, e, dir, sizeof dir);
    snprintf(run, sizeof run, "%d", P->run);
    snprintf(seed, sizeof seed, "%" PRIu64, P->seed);
    snprintf(es, sizeof es, "%d", e);
    snprintf(is, sizeof is, "%d", inc);
    const char *argv[] = {g_self, "--child", "edge", dir, run, seed, es, is, NULL};
    return spawn(argv);
}

/* Print what PostgreSQL's other sessions are doing (for a failure). */
static void pg_activity_dump(void)
{
    PGresult *r = PQexec(g_c, "SELECT pid, application_name, state, wait_event_type, wait_event,"
                              " pg_blocking_pids(pid), now() - xact_start, left(query, 160)"
                              " FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                              " AND backend_type = 'client backend'");
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        fprintf(stderr, "  pg session:");
        for (int k = 0; k < PQnfields(r); k++)
            fprintf(stderr, " %s", PQgetisnull(r, i, k) ? "-" : PQgetvalue(r, i, k));
        fprintf(stderr, "\n");
    }
    PQclear(r);
}

/* Signal a child and wait (at most timeout_ms, then SIGKILL, after showing
 * what PostgreSQL's sessions do): its exit code, -1 when it had to be
 * killed, -100 - N when signal N ended it. */
static int stop_child(pid_t pid, int sig, int timeout_ms)
{
    return et_kid_stop(&g_kids, pid, sig, timeout_ms, 1, pg_activity_dump);
}

/* ---- the bridge ---------------------------------------------------------- */

/* Start the bridge on port (0: any; the port it took goes to g_port). */
static void start_bridge(int port)
{
    g_port = et_bridge_start(&g_b, sa_pgh_conninfo(g_h), g_data, port, NULL);
}

/* The bridge's WAL head (GET /healthz, whose 503 — an unhealthy part, e.g.
 * the applier retrying after deadlocks — still names it); -1 when it does
 * not answer. */
static long long bridge_head(void)
{
    long status = 0;
    json_t *j = et_http_get(g_port, "/healthz", NULL, &status);
    json_t *h = json_object_get(j, "head");
    long long v = (status == 200 || status == 503) && json_is_integer(h)
                      ? (long long)json_integer_value(h)
                      : -1;
    json_decref(j);
    return v;
}

/* ---- edges from the parent ------------------------------------------------ */

static sa_edge *edge_open(const plan *P, int e)
{
    char dir[1100];
    edge_dir(P, e, dir, sizeof dir);
    return et_edge_open(dir, NULL);
}

/* A new peer and its edge store, bootstrapped; its epoch. */
static uint64_t edge_create(const plan *P, int e)
{
    char name[64], token[128], dir[1100];
    peer_name(P, e, name, sizeof name);
    et_peer_create(g_c, name, token, sizeof token);
    edge_dir(P, e, dir, sizeof dir);
    sa_edge *ed = et_edge_create(dir, name, token, g_port);
    sa_err err = {0};
    int rc = sa_edge_sync_once(ed, 0, &err);
    if (rc != 0)
        fail_msg("edge %s: first sync: %s: %s", name, sa_err_name(rc), err.msg);
    uint64_t epoch = et_status(ed).epoch;
    sa_edge_close(ed);
    return epoch;
}

/* ---- rows, row by row ------------------------------------------------------- */

/* Rows as lines "col=value" joined by '|' in the table's column order
 * (NULL as \N), sorted. */
typedef et_strv lines;

/* The table's columns, in order. */
typedef struct cols {
    char **name;
    int n;
} cols;

static void line_put(sa_buf *b, int k, const char *col, const char *val)
{
    if (k > 0)
        sa_buf_put(b, "|", 1);
    sa_buf_put(b, col, strlen(col));
    sa_buf_put(b, "=", 1);
    sa_buf_put(b, val, strlen(val));
}

static char *buf_str(sa_buf *b)
{
    char *s = malloc(b->len + 1);
    memcpy(s, b->data, b->len);
    s[b->len] = '\0';
    sa_buf_free(b);
    return s;
}

typedef struct list_ctx {
    lines *l;
    const cols *c;
} list_ctx;

static int list_cb(const json_t *jr, void *vctx)
{
    list_ctx *lc = vctx;
    json_t *jc = json_object_get(jr, "cols");
    sa_buf b = {0};
    for (int k = 0; k < lc->c->n; k++) {
        char *v = et_val_text(json_object_get(jc, lc->c->name[k]));
        line_put(&b, k, lc->c->name[k], v);
        free(v);
    }
    if (json_object_size(jc) != (size_t)lc->c->n) {
        char extra[64];
        snprintf(extra, sizeof extra, "|(%zu columns)", json_object_size(jc));
        sa_buf_put(&b, extra, strlen(extra));
    }
    if (json_integer_value(json_object_get(jr, "pending")) > 0)
        sa_buf_put(&b, "|(pending)", 10);
    et_strv_add(lc->l, buf_str(&b));
    return 0;
}

static lines edge_lines(sa_edge *e, const char *table, const cols *c)
{
    lines l = {0};
    list_ctx lc = {&l, c};
    sa_err err = {0};
    if (sa_edge_list(e, table, list_cb, &lc, &err) != 0)
        fail_msg("list %s: %s", table, err.msg);
    et_strv_sort(&l);
    return l;
}

static lines pg_lines(const char *table, const cols *c)
{
    lines l = {0};
    char q[256];
    snprintf(q, sizeof q, "SELECT * FROM %s", table);
    PGresult *r = PQexec(g_c, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != c->n)
        fail_msg("%s: %s", q, PQerrorMessage(g_c));
    for (int i = 0; i < PQntuples(r); i++) {
        sa_buf b = {0};
        for (int k = 0; k < c->n; k++)
            line_put(&b, k, c->name[k], PQgetisnull(r, i, k) ? "\\N" : PQgetvalue(r, i, k));
        et_strv_add(&l, buf_str(&b));
    }
    PQclear(r);
    et_strv_sort(&l);
    return l;
}

/* Does the edge hold exactly PostgreSQL's rows of table?  1, or 0 with the
 * differences (at most a few) in why. */
static int edge_equals_pg(sa_edge *e, const char *table, char *why, size_t cap)
{
    cols c;
    c.name = et_pg_columns(g_c, table, &c.n);
    lines a = edge_lines(e, table, &c), b = pg_lines(table, &c);
    size_t i = 0, j = 0, used = 0;
    int diffs = 0;
    why[0] = '\0';
    while (i < a.n || j < b.n) {
        int d = i >= a.n ? 1 : j >= b.n ? -1 : strcmp(a.v[i], b.v[j]);
        if (d == 0) {
            i++, j++;
            continue;
        }
        if (diffs++ < 6 && used < cap)
            used += (size_t)snprintf(
                why + used, cap - used, "\n    %s %s",
                d < 0 ? "only on the edge:    " : "only in PostgreSQL: ", d < 0 ? a.v[i] : b.v[j]);
        if (d < 0)
            i++;
        else
            j++;
    }
    if (diffs > 0 && used < cap)
        snprintf(why + used, cap - used,
                 "\n    (%d differing lines; edge %zu rows, PostgreSQL %zu)", diffs, a.n, b.n);
    et_strv_free(&a);
    et_strv_free(&b);
    et_columns_free(c.name, c.n);
    return diffs == 0;
}

/* ---- every op accounted for ------------------------------------------------- */

/* What is known of each op 1..n of one edge. */
typedef struct opacct {
    uint64_t n;
    char *kind;        /* [s]: from the intent file (T U D B), 0 unknown */
    char *est;         /* [s]: the edge's outcome record: 'c', 'r' or 0 */
    long long *ecid;   /* [s]: its conflict id */
    char (*eres)[20];  /* [s]: its resolution */
    int *nconf, *nrej; /* [s]: rows in softadastra.conflicts / rejections */
    long long *cid;    /* [s]: the conflicts row's id */
    char (*res)[20];   /* [s]: and resolution */
    int *hits;         /* [s]: cv_hits of the op's tag */
} opacct;

static void acct_init(opacct *a, uint64_t n)
{
    size_t m = (size_t)n + 1;
    a->n = n;
    a->kind = calloc(m, 1);
    a->est = calloc(m, 1);
    a->ecid = calloc(m, sizeof *a->ecid);
    a->eres = calloc(m, sizeof *a->eres);
    a->nconf = calloc(m, sizeof *a->nconf);
    a->nrej = calloc(m, sizeof *a->nrej);
    a->cid = calloc(m, sizeof *a->cid);
    a->res = calloc(m, sizeof *a->res);
    a->hits = calloc(m, sizeof *a->hits);
}

static void acct_free(opacct *a)
{
    free(a->kind);
    free(a->est);
    free(a->ecid);
    free(a->eres);
    free(a->nconf);
    free(a->nrej);
    free(a->cid);
    free(a->res);
    free(a->hits);
    memset(a, 0, sizeof *a);
}

/* The intent file: the last line for each seq wins. */
static void intent_read(const char *dir, opacct *a)
{
    char path[1200], line[128];
    snprintf(path, sizeof path, "%s.intent", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long long k = 0;
        char kind = 0;
        if (sscanf(line, "%llu %c", &k, &kind) == 2 && k >= 1 && k <= a->n)
            a->kind[k] = kind;
    }
    fclose(f);
}

typedef struct outcome_ctx {
    opacct *a;
    char bad[256];
} outcome_ctx;

static int outcome_cb(const json_t *o, void *vctx)
{
    outcome_ctx *oc = vctx;
    uint64_t s = (uint64_t)json_integer_value(json_object_get(o, "seq"));
    const char *st = json_string_value(json_object_get(o, "status"));
    const char *res = json_string_value(json_object_get(o, "resolution"));
    if (s < 1 || s > oc->a->n || st == NULL || oc->a->est[s] != 0) {
        char *t = json_dumps(o, JSON_COMPACT);
        snprintf(oc->bad, sizeof oc->bad, "an outcome record out of place: %s", t ? t : "?");
        free(t);
        return 1;
    }
    oc->a->est[s] = strcmp(st, "conflict") == 0 ? 'c' : strcmp(st, "rejected") == 0 ? 'r' : '?';
    oc->a->ecid[s] = (long long)json_integer_value(json_object_get(o, "conflict_id"));
    snprintf(oc->a->eres[s], sizeof oc->a->eres[s], "%s", res ? res : "");
    return 0;
}

/* Rows of a query, as a callback per row. */
static PGresult *query(const char *q)
{
    PGresult *r = PQexec(g_c, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQerrorMessage(g_c));
    return r;
}

/* What is wrong with op s's outcome, or NULL. */
static const char *op_verdict(const opacct *a, uint64_t s)
{
    int k = a->kind[s], c = a->nconf[s], j = a->nrej[s], h = a->hits[s];
    if (c + j > 1)
        return "more than one outcome row";
    if (k == 0)
        return "no intent recorded (test bug)";
    if ((k == K_BAD) != (j == 1))
        return k == K_BAD ? "planned bad, not rejected" : "rejected, not planned bad";
    if (h > 1)
        return "its tag was written twice: applied twice";
    if (k == K_BAD && h != 0)
        return "rejected, yet its tag was written";
    if (k == K_TAGGED && c == 0 && h != 1)
        return "applied, but its tag never was";
    if (k == K_TAGGED && c == 1 && strcmp(a->res[s], "applied_remote") == 0 && h != 1)
        return "applied_remote, but its tag never was";
    if ((k == K_UNTAGGED || k == K_DELETE) && h != 0)
        return "a tag it never had";
    if (c == 1 &&
        (a->est[s] != 'c' || a->ecid[s] != a->cid[s] || strcmp(a->eres[s], a->res[s]) != 0))
        return "the edge's record differs from the conflicts row";
    if (j == 1 && a->est[s] != 'r')
        return "the edge has no rejection record";
    if (c + j == 0 && a->est[s] != 0)
        return "the edge records an outcome PostgreSQL has not";
    return NULL;
}

typedef struct tally {
    uint64_t ops, applied, conflicts, rejected;
} tally;

/*
 * Every op 1..n of edge (peer, epoch) has exactly one outcome: applied
 * (PostgreSQL's watermark passed it, no conflicts row, no rejections row),
 * one conflicts row, or one rejections row; the ops planned as bad, and
 * only they, are rejected; the edge's outcome records are the database's;
 * the tag of each tagged put was written at most once, exactly once when
 * it applied.
 */
static void check_ops(const plan *P, int e, sa_edge *ed, uint64_t epoch, tally *t)
{
    char name[64], dir[1100], q[512], v[256];
    peer_name(P, e, name, sizeof name);
    edge_dir(P, e, dir, sizeof dir);
    sa_edge_status st = et_status(ed);
    uint64_t n = st.last_seq;
    if (st.epoch != epoch)
        fail_msg("edge %s: epoch %" PRIu64 ", created with %" PRIu64, name, st.epoch, epoch);
    et_q1(
        g_c, v, sizeof v,
        "SELECT applied_seq FROM softadastra.peer_progress WHERE peer = '%s' AND epoch = %" PRIu64,
        name, epoch);
    if (strtoull(v, NULL, 10) != n)
        fail_msg("edge %s: PostgreSQL's watermark is \"%s\", the edge wrote %" PRIu64 " ops", name,
                 v, n);
    if (st.accepted != n || st.applied != n || st.pending != 0)
        fail_msg("edge %s: %" PRIu64 " ops, accepted %" PRIu64 ", applied %" PRIu64
                 ", pending %" PRIu64,
                 name, n, st.accepted, st.applied, st.pending);
    opacct a;
    acct_init(&a, n);
    intent_read(dir, &a);
    outcome_ctx oc = {&a, ""};
    sa_err err = {0};
    if (sa_edge_outcomes(ed, outcome_cb, &oc, &err) != 0)
        fail_msg("edge %s: outcomes: %s", name, err.msg);
    if (oc.bad[0] != '\0')
        fail_msg("edge %s: %s", name, oc.bad);

    snprintf(q, sizeof q,
             "SELECT op_seq, id, resolution FROM softadastra.conflicts WHERE origin = '%s' AND "
             "epoch = %" PRIu64,
             name, epoch);
    PGresult *r = query(q);
    for (int i = 0; i < PQntuples(r); i++) {
        long long s = atoll(PQgetvalue(r, i, 0));
        if (s < 1 || (uint64_t)s > n)
            fail_msg("edge %s: a conflicts row for op %lld of %" PRIu64, name, s, n);
        a.nconf[s]++;
        a.cid[s] = atoll(PQgetvalue(r, i, 1));
        snprintf(a.res[s], sizeof a.res[s], "%s", PQgetvalue(r, i, 2));
    }
    PQclear(r);
    snprintf(q, sizeof q,
             "SELECT coalesce(op_seq, -1), message FROM softadastra.rejections WHERE peer = '%s' "
             "AND epoch = %" PRIu64,
             name, epoch);
    r = query(q);
    for (int i = 0; i < PQntuples(r); i++) {
        long long s = atoll(PQgetvalue(r, i, 0));
        if (s < 1 || (uint64_t)s > n)
            fail_msg("edge %s: a rejections row for op %lld of %" PRIu64 ": %s", name, s, n,
                     PQgetvalue(r, i, 1));
        a.nrej[s]++;
    }
    PQclear(r);
    snprintf(q, sizeof q, "SELECT tag, n FROM cv_hits WHERE tag LIKE 'e:%s:%%'", name);
    r = query(q);
    for (int i = 0; i < PQntuples(r); i++) {
        long long s = atoll(PQgetvalue(r, i, 0) + strlen(name) + 3);
        if (s < 1 || (uint64_t)s > n)
            fail_msg("edge %s: tag %s written though the edge issued %" PRIu64 " ops", name,
                     PQgetvalue(r, i, 0), n);
        a.hits[s] = atoi(PQgetvalue(r, i, 1));
    }
    PQclear(r);

    for (uint64_t s = 1; s <= n; s++) {
        int k = a.kind[s], c = a.nconf[s], j = a.nrej[s], h = a.hits[s];
        const char *what = op_verdict(&a, s);
        if (what != NULL)
            fail_msg("edge %s op %" PRIu64 " (%c): %s [conflicts rows %d (id %lld, %s), "
                     "rejections rows %d, tag written %d times, edge record %c (id %lld, %s)]",
                     name, s, k ? k : '?', what, c, a.cid[s], a.res[s], j, h,
                     a.est[s] ? a.est[s] : '-', a.ecid[s], a.eres[s]);
        t->applied += c + j == 0;
        t->conflicts += c;
        t->rejected += j;
    }
    t->ops += n;
    acct_free(&a);
}

/* ---- convergence --------------------------------------------------------- */

/* Sync every edge once (network errors fail: the bridge is up now). */
static void sync_all(sa_edge **es, const plan *P)
{
    for (int e = 0; e < NEDGES; e++) {
        sa_err err = {0};
        int rc = sa_edge_sync_once(es[e], 0, &err);
        if (rc != 0) {
            char name[64];
            peer_name(P, e, name, sizeof name);
            fail_msg("edge %s: sync: %s: %s", name, sa_err_name(rc), err.msg);
        }
    }
}

typedef struct find_ctx {
    uint64_t seq;
    char out[256];
} find_ctx;

static int find_outcome_cb(const json_t *o, void *vctx)
{
    find_ctx *fc = vctx;
    if ((uint64_t)json_integer_value(json_object_get(o, "seq")) != fc->seq)
        return 0;
    char *t = json_dumps(o, JSON_COMPACT);
    snprintf(fc->out, sizeof fc->out, "%s", t ? t : "?");
    free(t);
    return 1;
}

/* What is known of op s of edge e (for a failure's message). */
static void op_story(const plan *P, int e, sa_edge *ed, uint64_t s, char *out, size_t cap)
{
    char name[64], dir[1100], v[512];
    peer_name(P, e, name, sizeof name);
    edge_dir(P, e, dir, sizeof dir);
    opacct a;
    acct_init(&a, s);
    intent_read(dir, &a);
    find_ctx fc = {s, "none"};
    sa_err err = {0};
    sa_edge_outcomes(ed, find_outcome_cb, &fc, &err);
    et_q1(
        g_c, v, sizeof v,
        "SELECT coalesce((SELECT string_agg(format('conflict %%s %%s %%s %%s %%s local %%s remote "
        "%%s', id, kind, key, columns, resolution, local, remote), '; ') FROM "
        "softadastra.conflicts WHERE origin = '%s' AND op_seq = %" PRIu64 "), '') || "
        "coalesce((SELECT string_agg('rejected: ' || message, '; ') FROM softadastra.rejections "
        "WHERE peer = '%s' AND op_seq = %" PRIu64 "), '')",
        name, s, name, s);
    eop o;
    eop_plan(P, e, s, &o);
    char key[160];
    key_json(P, o.row, key, sizeof key);
    snprintf(out, cap, "op %" PRIu64 ": kind %c on {%s}; PostgreSQL: %s; the edge's record: %s", s,
             a.kind[s] ? a.kind[s] : '?', key, v[0] ? v : "applied (no row)", fc.out);
    acct_free(&a);
}

/* What a replica that is not done yet is waiting for. */
static void not_done(const plan *P, int e, sa_edge *ed, long long head, char *why, size_t cap)
{
    sa_edge_status st = et_status(ed);
    char name[64];
    peer_name(P, e, name, sizeof name);
    snprintf(why, cap,
             "edge %s: last seq %" PRIu64 ", accepted %" PRIu64 ", applied %" PRIu64
             ", pending %" PRIu64 ", overlay %" PRIu64 " (first op still shown over the "
             "server's row: %" PRIu64 "), confirmed %" PRIu64 ", cursor %" PRIu64
             " (bridge head %lld), last error \"%s\"",
             name, st.last_seq, st.accepted, st.applied, st.pending, st.overlay,
             st.last_seq - st.overlay + 1, st.confirmed, st.cursor, head, st.last_error);
    for (uint64_t s = st.last_seq - st.overlay + 1;
         st.overlay > 0 && s <= st.last_seq && s < st.last_seq - st.overlay + 4; s++) {
        size_t l = strlen(why);
        if (l + 2 < cap) {
            snprintf(why + l, cap - l, "\n    ");
            op_story(P, e, ed, s, why + l + 5, cap - l - 5);
        }
    }
}

/*
 * Sync until every op of every edge is applied in PostgreSQL, then until
 * the bridge has every change PostgreSQL made (the slot caught up), then
 * until every edge's cursor reached the head of that moment and nothing is
 * pending or shown over the server's rows.
 */
static void converge(const plan *P, sa_edge **es)
{
    char why[4096] = "";
    int64_t end = it_now_ms() + 60000;
    for (int done = 0; !done; it_sleep_ms(50)) {
        sync_all(es, P);
        done = 1;
        for (int e = 0; e < NEDGES && done; e++) {
            sa_edge_status st = et_status(es[e]);
            if (st.pending != 0 || st.applied != st.last_seq) {
                done = 0;
                not_done(P, e, es[e], -1, why, sizeof why);
            }
        }
        if (!done && it_now_ms() > end)
            fail_msg("the edges' ops were not all applied within 60 s: %s", why);
    }
    if (!it_wait_caught_up(g_c, "softadastra", 60000))
        fail_msg("the bridge did not catch up with PostgreSQL within 60 s");
    long long head = bridge_head();
    if (head < 0)
        fail_msg("the bridge's /healthz does not answer");
    end = it_now_ms() + 30000;
    for (int done = 0; !done; it_sleep_ms(50)) {
        sync_all(es, P);
        done = 1;
        for (int e = 0; e < NEDGES && done; e++) {
            sa_edge_status st = et_status(es[e]);
            if (st.pending != 0 || st.overlay != 0 || (long long)st.cursor < head) {
                done = 0;
                not_done(P, e, es[e], head, why, sizeof why);
            }
        }
        if (!done && it_now_ms() > end) {
            char rows[2048] = "";
            for (int e = 0; e < NEDGES; e++)
                for (int t = 0; t < 2; t++)
                    if (!edge_equals_pg(es[e], t ? "public.cv_b" : "public.cv_a", rows,
                                        sizeof rows))
                        goto report;
        report:
            fail_msg("no convergence within 30 s: %s%s%s", why,
                     rows[0] ? "\n  and the rows differ:" : "", rows);
        }
    }
}

/* Lines of the bridge's log from byte `from` on that contain needle. */
static int log_count(long from, const char *needle)
{
    FILE *f = fopen(g_b.log, "r");
    char line[4096];
    int n = 0;
    if (f == NULL)
        return 0;
    fseek(f, from, SEEK_SET);
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* ---- one seed --------------------------------------------------------------- */

/* The rows PostgreSQL starts a seed with: about half the key space. */
static void seed_rows(const plan *P)
{
    prng p = prng_of(P->seed, 2);
    for (int i = 0; i < plan_keys(P); i++) {
        char q[1024], tag[64];
        snprintf(tag, sizeof tag, "pg:%d:init:%d", P->run, i);
        writer_stmt(P, &p, tag, q, sizeof q); /* draws the values */
        if (!pr_pct(&p, 50))
            continue;
        if (i < P->na)
            et_sql(g_c, "INSERT INTO cv_a VALUES (%lld, 'init %d', %d, %d.25, %s, '%s')",
                   P->abase + 1 + i, i, i % 6, i, i % 2 ? "true" : "false", tag);
        else {
            char reg[64], rl[80];
            plan_region(P, (i - P->na) / P->nn, reg, sizeof reg);
            lit(rl, sizeof rl, reg);
            et_sql(g_c, "INSERT INTO cv_b VALUES (%s, %d, 'init %d', %d, '%s')", rl,
                   1 + (i - P->na) % P->nn, i, i, tag);
        }
    }
}

static void seed_run(uint64_t seed, int run, tally *t)
{
    plan P;
    plan_make(seed, run, &P);
    g_seed = seed;
    printf("seed %" PRIu64 ": %d+%d keys, strategies %s/%s, %d writer(s), %d fault(s) planned\n",
           seed, P.na, P.nregions * P.nn, P.strat[0], P.strat[1], P.writers, P.nev);
    fflush(stdout);
    int64_t t0 = it_now_ms();
    long log0 = it_log_size(&g_b);
    et_sql(g_c,
           "SELECT softadastra.set_strategy('cv_a', '%s'), softadastra.set_strategy('cv_b', '%s')",
           P.strat[0], P.strat[1]);
    seed_rows(&P);
    uint64_t epochs[NEDGES];
    for (int e = 0; e < NEDGES; e++)
        epochs[e] = edge_create(&P, e);

    pid_t writers[MAXWRITERS], edges[NEDGES];
    int inc[NEDGES] = {0}, restart_at[NEDGES], ekills = 0, bkills = 0;
    for (int w = 0; w < P.writers; w++)
        writers[w] = spawn_writer(&P, w);
    for (int e = 0; e < NEDGES; e++) {
        edges[e] = spawn_edge(&P, e, inc[e]++);
        restart_at[e] = -1;
    }
    int64_t start = it_now_ms();
    int next = 0;
    for (;;) {
        int now = (int)(it_now_ms() - start), waiting = 0;
        if (next < P.nev && now >= P.ev[next].at_ms) {
            const event *ev = &P.ev[next++];
            if (ev->what == EV_EDGE_KILL && restart_at[ev->target] < 0) {
                int ws = 0;
                kill(edges[ev->target], SIGKILL);
                et_kid_wait(&g_kids, edges[ev->target], &ws, 0);
                if (!WIFSIGNALED(ws)) {
                    et_kids_dump_log(&g_kids, 20);
                    fail_msg("edge %d had ended before its kill (status %d)", ev->target, ws);
                }
                restart_at[ev->target] = now + ev->down_ms;
                ekills++;
            } else if (ev->what != EV_EDGE_KILL) {
                et_bridge_stop(&g_b, ev->what == EV_BRIDGE_KILL ? SIGKILL : SIGTERM);
                it_sleep_ms(ev->down_ms);
                start_bridge(g_port);
                bkills++;
            }
            continue;
        }
        for (int e = 0; e < NEDGES; e++) {
            if (restart_at[e] >= 0 && now >= restart_at[e]) {
                edges[e] = spawn_edge(&P, e, inc[e]++);
                restart_at[e] = -1;
            }
            waiting |= restart_at[e] >= 0;
            int ws = 0;
            if (restart_at[e] < 0 && et_kid_wait(&g_kids, edges[e], &ws, WNOHANG) == edges[e]) {
                et_kids_dump_log(&g_kids, 30);
                fail_msg("edge %d ended by itself (status %d, see above)", e, ws);
            }
        }
        if (now >= P.activity_ms && !waiting && next >= P.nev)
            break;
        it_sleep_ms(5);
    }
    for (int w = 0; w < P.writers; w++) {
        /* generous: a writer can wait long behind apply_ops' deadlock
         * retries (it keeps the locks of the segments it already ran) */
        int rc = stop_child(writers[w], SIGTERM, 60000);
        if (rc != 0) {
            et_kids_dump_log(&g_kids, 20);
            fail_msg("SQL writer %d ended with %d%s", w, rc,
                     rc == -1 ? ": it did not stop within 60 s of SIGTERM (what PostgreSQL's "
                                "sessions were doing is above)"
                              : " (see above)");
        }
    }
    for (int e = 0; e < NEDGES; e++) {
        int rc = stop_child(edges[e], SIGTERM, 20000);
        if (rc != 0) {
            et_kids_dump_log(&g_kids, 30);
            fail_msg("edge %d ended with %d: %s", e, rc,
                     rc == 4     ? "a sync failed otherwise than by the network (see above)"
                     : rc == -1  ? "it did not stop within 20 s of SIGTERM"
                     : rc < -100 ? "a signal ended it (exit code -100 - signal)"
                                 : "see above");
        }
    }
    int64_t quiet = it_now_ms();

    sa_edge *es[NEDGES];
    for (int e = 0; e < NEDGES; e++)
        es[e] = edge_open(&P, e);
    converge(&P, es);
    char why[2048];
    for (int e = 0; e < NEDGES; e++)
        for (int k = 0; k < 2; k++) {
            const char *table = k ? "public.cv_b" : "public.cv_a";
            if (!edge_equals_pg(es[e], table, why, sizeof why)) {
                char name[64];
                peer_name(&P, e, name, sizeof name);
                fail_msg("edge %s does not hold PostgreSQL's rows of %s:%s", name, table, why);
            }
        }
    tally s = {0};
    for (int e = 0; e < NEDGES; e++)
        check_ops(&P, e, es[e], epochs[e], &s);
    for (int e = 0; e < NEDGES; e++)
        sa_edge_close(es[e]);
    int gaveup = log_count(log0, "apply_ops gave up after");
    printf("#   %d edge kill(s), %d bridge restart(s): %" PRIu64 " edge ops (%" PRIu64
           " applied, %" PRIu64 " conflicts, %" PRIu64
           " rejected); %d apply_ops call(s) gave up on deadlocks; converged %.1f s after the "
           "faults stopped, %.1f s in all\n",
           ekills, bkills, s.ops, s.applied, s.conflicts, s.rejected, gaveup,
           (double)(it_now_ms() - quiet) / 1000.0, (double)(it_now_ms() - t0) / 1000.0);
    fflush(stdout);
    t->ops += s.ops;
    t->applied += s.applied;
    t->conflicts += s.conflicts;
    t->rejected += s.rejected;
    for (int e = 0; e < NEDGES; e++) {
        char dir[1100], intent[1200];
        edge_dir(&P, e, dir, sizeof dir);
        snprintf(intent, sizeof intent, "%s.intent", dir);
        it_rmrf(dir);
        unlink(intent);
    }
}

/* ---- the group ------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (n <= 0) {
        fprintf(stderr, "cannot find this test's own binary\n");
        return -1;
    }
    g_self[n] = '\0';
    int rc = et_group_start(&g_h, &g_c, &g_skip);
    if (rc != 0 || g_skip)
        return rc;
    et_sql(
        g_c,
        "CREATE TABLE cv_a (id bigint PRIMARY KEY, name text, qty integer, price numeric(10,2),"
        " flag boolean, tag text);"
        "CREATE TABLE cv_b (region text, n integer, label text, val bigint, tag text,"
        " PRIMARY KEY (region, n));"
        /* the side effect that shows an op applied twice: how many times a
         * row's tag became each edge tag */
        "CREATE TABLE cv_hits (tag text PRIMARY KEY, n integer NOT NULL);"
        "CREATE FUNCTION cv_hit() RETURNS trigger LANGUAGE plpgsql"
        " SET search_path = public, pg_catalog AS $$ BEGIN"
        "  IF NEW.tag LIKE 'e:%%' AND (TG_OP = 'INSERT' OR OLD.tag IS DISTINCT FROM NEW.tag) THEN"
        "    INSERT INTO public.cv_hits AS h VALUES (NEW.tag, 1)"
        "      ON CONFLICT (tag) DO UPDATE SET n = h.n + 1;"
        "  END IF;"
        "  RETURN NULL;"
        " END $$;"
        "CREATE TRIGGER cv_a_hit AFTER INSERT OR UPDATE ON cv_a FOR EACH ROW"
        " EXECUTE FUNCTION cv_hit();"
        "CREATE TRIGGER cv_b_hit AFTER INSERT OR UPDATE ON cv_b FOR EACH ROW"
        " EXECUTE FUNCTION cv_hit();"
        "SELECT softadastra.add_table('cv_a'), softadastra.add_table('cv_b')");
    it_data_dir(g_data, sizeof g_data, "convergence-bridge");
    it_data_dir(g_tmp, sizeof g_tmp, "convergence-edges");
    snprintf(g_kids.log, sizeof g_kids.log, "%s/children.log", g_tmp);
    start_bridge(0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    et_kids_kill_all(&g_kids);
    int failed = g_started != g_done;
    et_bridge_kill(&g_b, failed, 40);
    if (failed) {
        if (g_b.log[0] != '\0') {
            fprintf(stderr, "---- children's log (%s) ----\n", g_kids.log);
            et_kids_dump_log(&g_kids, 30);
            fprintf(stderr, "(edge stores and their intent files kept in %s)\n", g_tmp);
        }
        printf("convergence: FAILED with seed %" PRIu64 " (replay: SA_CONVERGENCE_SEED=%" PRIu64
               ")\n",
               g_seed, g_seed);
        fflush(stdout);
    }
    et_group_end(g_c, g_h, &g_b, g_data, g_tmp, failed, 1);
    return 0;
}

static uint64_t env_u64(const char *name, uint64_t def)
{
    const char *v = getenv(name);
    return v && v[0] ? strtoull(v, NULL, 10) : def;
}

static void test_convergence_seeds(void **state)
{
    (void)state;
    if (g_skip)
        skip();
    g_started++;
    uint64_t first = env_u64("SA_CONVERGENCE_FIRST", 1),
             count = env_u64("SA_CONVERGENCE_SEEDS", 20);
    const char *one = getenv("SA_CONVERGENCE_SEED");
    if (one != NULL && one[0] != '\0')
        first = strtoull(one, NULL, 10), count = 1;
    int64_t t0 = it_now_ms();
    tally t = {0};
    for (uint64_t i = 0; i < count; i++)
        seed_run(first + i, (int)i, &t);
    printf("# %" PRIu64 " seeds converged in %.1f s: %" PRIu64 " edge ops, %" PRIu64
           " applied, %" PRIu64 " conflicts, %" PRIu64 " rejected, each exactly once\n",
           count, (double)(it_now_ms() - t0) / 1000.0, t.ops, t.applied, t.conflicts, t.rejected);
    g_done++;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--child") == 0)
        return child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convergence_seeds),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
