/*
 * test_edge.c — libsa_edge against a real sa-bridge on a real PostgreSQL
 * (with the softadastra extension), over real HTTP.
 *
 *   bootstrap    an edge bootstraps, then sees PostgreSQL's changes
 *   converge     two edges write offline (insert, update, delete; two
 *                columns of one row from each side), PostgreSQL writes
 *                too; after syncing all three hold the same rows
 *   killed       a local write survives the process being killed before it
 *                synced, and is applied once
 *   resnapshot   the bridge's data directory replaced (another instance):
 *                the edge re-bootstraps and keeps its pending writes
 *   bad input    refused locally with a clear error, nothing queued
 *   conflict     an edge's write that loses is listed with its resolution,
 *                and reads show the server's value again
 *
 * One PostgreSQL and one bridge for the group; each test has its own table
 * and peers.  Skipped (not failed) when the extension is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_util.h"

static sa_pgh *g_h;
static PGconn *g_c;
static it_bridge g_b;
static char g_data[1024], g_tmp[1024];
static int g_skip, g_started, g_done;
static int g_port;

static void q1(const char *query, char *out, size_t cap)
{
    PGresult *r = PQexec(g_c, query);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", query, PQerrorMessage(g_c));
    snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- the bridge ------------------------------------------------------ */

/* Start the bridge on any port (into g_port), with extra_args (or NULL). */
static void start_bridge(const char *const *extra_args)
{
    g_port = et_bridge_start(&g_b, sa_pgh_conninfo(g_h), g_data, 0, extra_args);
}

static int group_setup(void **state)
{
    (void)state;
    int rc = et_group_start(&g_h, &g_c, &g_skip);
    if (rc != 0 || g_skip)
        return rc;
    for (int t = 1; t <= 5; t++)
        et_sql(g_c,
               "CREATE TABLE t%d (id int PRIMARY KEY, name text, price numeric);"
               "INSERT INTO t%d SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 10) g;"
               "SELECT softadastra.add_table('t%d')",
               t, t, t);
    /* a table with no rows at all when edges bootstrap */
    et_sql(g_c, "CREATE TABLE empty6 (id int PRIMARY KEY, note text); SELECT "
                "softadastra.add_table('empty6')");
    it_data_dir(g_data, sizeof g_data, "edge-bridge");
    it_data_dir(g_tmp, sizeof g_tmp, "edge-edges");
    start_bridge(NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int failed = g_started != g_done;
    et_bridge_kill(&g_b, failed, 60);
    et_group_end(g_c, g_h, &g_b, g_data, g_tmp, failed, 0);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    et_test_begin(g_skip, &g_started);
    return 0;
}

/* ---- edges ------------------------------------------------------------ */

static char *bridge_url(char *buf, size_t cap)
{
    snprintf(buf, cap, "http://127.0.0.1:%d", g_port);
    return buf;
}

static void edge_dir(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

/* Create peer `name` (a token) and an edge store for it. */
static sa_edge *edge_init(const char *name)
{
    char token[128], dir[1100];
    et_peer_create(g_c, name, token, sizeof token);
    edge_dir(name, dir, sizeof dir);
    return et_edge_create(dir, name, token, g_port);
}

/* Open an existing edge; bridge NULL keeps the stored URL. */
/* Open an existing edge; bridge NULL keeps the stored URL. */
static sa_edge *edge_open(const char *name, const char *bridge)
{
    char dir[1100];
    edge_dir(name, dir, sizeof dir);
    return et_edge_open(dir, bridge);
}

/* ---- rows, row by row ------------------------------------------------- */

/* Rows as sorted lines "id|name|price|ncols" (id zero-padded). */
typedef et_strv rows;

/* One JSON value as PostgreSQL's text ("\N" for NULL). */
static void val_text(json_t *v, char *out, size_t cap)
{
    if (v == NULL || json_is_null(v))
        snprintf(out, cap, "\\N");
    else if (json_is_string(v))
        snprintf(out, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    else
        snprintf(out, cap, "<%s>", json_is_object(v) ? "object" : "other");
}

static int rows_cb(const json_t *row, void *ctx)
{
    json_t *cols = json_object_get(row, "cols");
    char id[64], name[256], price[64], *line = malloc(512);
    val_text(json_object_get(cols, "id"), id, sizeof id);
    val_text(json_object_get(cols, "name"), name, sizeof name);
    val_text(json_object_get(cols, "price"), price, sizeof price);
    snprintf(line, 512, "%010lld|%s|%s|%zu", atoll(id), name, price, json_object_size(cols));
    et_strv_add(ctx, line);
    return 0;
}

static rows edge_rows(sa_edge *e, const char *table)
{
    rows r = {0};
    sa_err err = {0};
    if (sa_edge_list(e, table, rows_cb, &r, &err) != 0)
        fail_msg("list %s: %s", table, err.msg);
    et_strv_sort(&r);
    return r;
}

static rows pg_rows(const char *table)
{
    rows r = {0};
    char q[256];
    snprintf(q, sizeof q, "SELECT id, name, price::text FROM %s", table);
    PGresult *res = PQexec(g_c, q);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQerrorMessage(g_c));
    for (int i = 0; i < PQntuples(res); i++) {
        char *line = malloc(512);
        snprintf(line, 512, "%010lld|%s|%s|3", atoll(PQgetvalue(res, i, 0)),
                 PQgetisnull(res, i, 1) ? "\\N" : PQgetvalue(res, i, 1),
                 PQgetisnull(res, i, 2) ? "\\N" : PQgetvalue(res, i, 2));
        et_strv_add(&r, line);
    }
    PQclear(res);
    et_strv_sort(&r);
    return r;
}

/* 1 when equal; else 0, and the first difference in why. */
static int rows_equal(const rows *a, const rows *b, char *why, size_t cap)
{
    for (size_t i = 0; i < a->n || i < b->n; i++) {
        const char *x = i < a->n ? a->v[i] : "(none)", *y = i < b->n ? b->v[i] : "(none)";
        if (strcmp(x, y) != 0) {
            snprintf(why, cap, "row %zu: edge %s, postgres %s (%zu vs %zu rows)", i, x, y, a->n,
                     b->n);
            return 0;
        }
    }
    return 1;
}

/* Sync every edge until each holds exactly PostgreSQL's rows of table and
 * has nothing pending.  Fails after timeout_ms. */
static void converge(sa_edge **es, int n, const char *table, int timeout_ms)
{
    char why[1024] = "";
    for (int64_t end = it_now_ms() + timeout_ms;; it_sleep_ms(100)) {
        int ok = 1;
        for (int i = 0; i < n; i++)
            et_sync(es[i], 1);
        rows p = pg_rows(table);
        for (int i = 0; i < n && ok; i++) {
            rows r = edge_rows(es[i], table);
            sa_edge_status st = et_status(es[i]);
            ok = rows_equal(&r, &p, why, sizeof why);
            if (ok && (st.pending != 0 || st.overlay != 0)) {
                snprintf(why, sizeof why, "edge %d: %llu pending, %llu in the overlay", i,
                         (unsigned long long)st.pending, (unsigned long long)st.overlay);
                ok = 0;
            }
            et_strv_free(&r);
        }
        et_strv_free(&p);
        if (ok)
            return;
        if (it_now_ms() >= end)
            fail_msg("%s: no convergence after %d ms: %s", table, timeout_ms, why);
    }
}

static void expect_row(sa_edge *e, const char *table, const char *key, const char *name)
{
    json_t *k = json_loads(key, 0, NULL), *row = NULL;
    sa_err err = {0};
    int rc = sa_edge_get(e, table, k, &row, &err);
    json_decref(k);
    if (name == NULL) {
        if (rc != SA_ENOTFOUND)
            fail_msg("get %s %s: expected no row, got rc %d", table, key, rc);
        json_decref(row);
        return;
    }
    if (rc != 0)
        fail_msg("get %s %s: %s", table, key, err.msg);
    assert_string_equal(json_string_value(json_object_get(json_object_get(row, "cols"), "name")),
                        name);
    json_decref(row);
}

/* ---- tests ------------------------------------------------------------ */

static void test_edge_bootstrap_then_changes(void **state)
{
    (void)state;
    sa_edge *e = edge_init("boot");
    sa_edge_status st = et_status(e);
    assert_string_equal(st.instance, ""); /* nothing before the first sync */
    assert_true(st.epoch > 0);
    et_sync(e, 1);
    st = et_status(e);
    assert_int_equal(strlen(st.instance), 32);
    assert_true(st.cursor > 0);
    rows r = edge_rows(e, "t1"), p = pg_rows("t1");
    char why[512];
    if (!rows_equal(&r, &p, why, sizeof why))
        fail_msg("after bootstrap: %s", why);
    et_strv_free(&r);
    et_strv_free(&p);

    et_sql(g_c, "INSERT INTO t1 VALUES (50, 'from pg', 9.99);"
                "UPDATE t1 SET name = 'renamed', price = NULL WHERE id = 3;"
                "DELETE FROM t1 WHERE id = 4");
    sa_edge *es[1] = {e};
    converge(es, 1, "t1", 20000);
    expect_row(e, "t1", "{\"id\": 50}", "from pg");
    expect_row(e, "t1", "{\"id\": 3}", "renamed");
    expect_row(e, "t1", "{\"id\": 4}", NULL);
    assert_true(et_status(e).cursor > st.cursor);
    sa_edge_close(e);
    g_done++;
}

static void test_edge_two_edges_converge(void **state)
{
    (void)state;
    sa_edge *a = edge_init("conv_a"), *b = edge_init("conv_b");
    et_sync(a, 1);
    et_sync(b, 1);
    sa_edge_close(a);

    /* a goes offline: its bridge is unreachable; writes still work */
    a = edge_open("conv_a", "http://127.0.0.1:1");
    et_put(a, "t2", "{\"id\": 101, \"name\": \"from a\", \"price\": 1.25}");
    et_put(a, "t2", "{\"id\": 1, \"name\": \"a was here\"}");
    et_del(a, "t2", "{\"id\": 2}");
    et_put(a, "t2", "{\"id\": 7, \"name\": \"a names 7\"}");
    sa_err err = {0};
    int rc = sa_edge_sync_once(a, 0, &err);
    assert_int_equal(rc, SA_EIO);
    sa_edge_status st = et_status(a);
    assert_int_equal(st.pending, 4);
    assert_true(st.attempts >= 1);
    assert_true(st.last_error[0] != '\0');
    assert_true(st.next_retry_ms > 0);
    expect_row(a, "t2", "{\"id\": 101}", "from a"); /* reads show pending writes */
    expect_row(a, "t2", "{\"id\": 2}", NULL);

    /* b writes without syncing; PostgreSQL writes too */
    et_put(b, "t2", "{\"id\": 201, \"name\": \"from b\"}");
    et_put(b, "t2", "{\"id\": 3, \"name\": \"b was here\", \"price\": \"33.5\"}");
    et_del(b, "t2", "{\"id\": 4}");
    et_put(b, "t2", "{\"id\": 7, \"price\": 77}"); /* another column of row 7 */
    et_sql(g_c, "INSERT INTO t2 VALUES (300, 'from pg', 3);"
                "UPDATE t2 SET name = 'pg was here' WHERE id = 5;"
                "DELETE FROM t2 WHERE id = 6");

    /* back online */
    sa_edge_close(a);
    char url[64];
    a = edge_open("conv_a", bridge_url(url, sizeof url));
    sa_edge *es[2] = {a, b};
    converge(es, 2, "t2", 25000);
    char v[128];
    q1("SELECT name || '/' || price FROM t2 WHERE id = 7", v, sizeof v);
    assert_string_equal(v, "a names 7/77"); /* both columns merged */
    q1("SELECT count(*) FROM t2 WHERE id IN (2, 4, 6)", v, sizeof v);
    assert_string_equal(v, "0");
    expect_row(b, "t2", "{\"id\": 101}", "from a");
    expect_row(a, "t2", "{\"id\": 201}", "from b");
    st = et_status(a);
    assert_int_equal(st.attempts, 0); /* a success reset the failures */
    assert_int_equal(st.accepted, 4);
    assert_int_equal(st.applied, 4);
    sa_edge_close(a);
    sa_edge_close(b);
    g_done++;
}

static void test_edge_write_survives_kill(void **state)
{
    (void)state;
    sa_edge *e = edge_init("killed");
    et_sync(e, 1);
    sa_edge_close(e);
    pid_t pid = fork();
    if (pid == 0) {
        sa_edge *c = edge_open("killed", NULL);
        json_t *row = json_loads("{\"id\": 401, \"name\": \"before the kill\"}", 0, NULL);
        sa_err err;
        if (sa_edge_put(c, "t3", row, NULL, &err) != 0)
            _exit(3);
        raise(SIGKILL); /* no close, no sync */
        _exit(4);
    }
    int ws = 0;
    waitpid(pid, &ws, 0);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    e = edge_open("killed", NULL);
    sa_edge_status st = et_status(e);
    assert_int_equal(st.pending, 1);
    assert_int_equal(st.last_seq, 1);
    expect_row(e, "t3", "{\"id\": 401}", "before the kill");
    sa_edge *es[1] = {e};
    converge(es, 1, "t3", 20000);
    et_sync(e, 1); /* once more: nothing is sent twice */
    char v[64];
    q1("SELECT count(*) FROM t3 WHERE id = 401", v, sizeof v);
    assert_string_equal(v, "1");
    q1("SELECT applied_seq FROM softadastra.peer_progress WHERE peer = 'killed'", v, sizeof v);
    assert_string_equal(v, "1");
    assert_int_equal(et_status(e).last_seq, 1);
    sa_edge_close(e);
    g_done++;
}

static void test_edge_bad_input_refused(void **state)
{
    (void)state;
    sa_edge *e = edge_init("bad");
    sa_err err = {0};
    json_t *row = json_loads("{\"id\": 1, \"name\": \"x\"}", 0, NULL);
    /* before any sync no table is known */
    assert_int_equal(sa_edge_put(e, "t5", row, NULL, &err), SA_ENOTFOUND);
    assert_non_null(strstr(err.msg, "sync"));
    et_sync(e, 1);
    assert_int_equal(sa_edge_put(e, "no_such_table", row, NULL, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "unknown table \"public.no_such_table\""));
    json_decref(row);
    const char *bad[][2] = {
        {"[1, 2]", "must be a JSON object"},
        {"\"text\"", "must be a JSON object"},
        {"{\"id\": 1, \"colour\": \"red\"}", "no column \"colour\""},
        {"{\"name\": \"no key\"}", "key column \"id\""},
        {"{\"id\": 1, \"name\": {\"a\": 1}}", "only for json and jsonb"},
        {"{\"id\": 99999999999, \"name\": \"x\"}", "out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        row = json_loads(bad[i][0], JSON_DECODE_ANY, NULL);
        assert_non_null(row);
        memset(&err, 0, sizeof err);
        int rc = sa_edge_put(e, "t5", row, NULL, &err);
        json_decref(row);
        if (rc == 0 || strstr(err.msg, bad[i][1]) == NULL)
            fail_msg("put %s: rc %d, message \"%s\", expected one naming \"%s\"", bad[i][0], rc,
                     err.msg, bad[i][1]);
    }
    json_t *key = json_loads("{\"id\": 12345}", 0, NULL);
    assert_int_equal(sa_edge_delete(e, "t5", key, NULL, &err), SA_ENOTFOUND);
    json_decref(key);
    assert_int_equal(et_status(e).last_seq, 0); /* nothing was queued */
    rows r = edge_rows(e, "t5"), p = pg_rows("t5");
    char why[512];
    if (!rows_equal(&r, &p, why, sizeof why))
        fail_msg("bad input changed the replica: %s", why);
    et_strv_free(&r);
    et_strv_free(&p);
    sa_edge_close(e);
    g_done++;
}

/* A table that was empty at bootstrap can be written at once: the
 * snapshot gives every table's key columns and types, rows or not. */
static void test_edge_empty_table_writable(void **state)
{
    (void)state;
    sa_edge *e = edge_init("empty");
    et_sync(e, 1);
    sa_err err = {0};
    json_t *row = json_loads("{\"id\": 1, \"note\": \"first row, from an edge\"}", 0, NULL);
    if (sa_edge_put(e, "empty6", row, NULL, &err) != 0)
        fail_msg("put into a table empty at bootstrap: %s", err.msg);
    json_decref(row);
    et_sync(e, 1);
    char *v = NULL;
    for (int64_t end = it_now_ms() + 20000; it_now_ms() < end; it_sleep_ms(200)) {
        PGresult *r = PQexec(g_c, "SELECT note FROM empty6 WHERE id = 1");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            v = strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (v != NULL)
            break;
    }
    assert_non_null(v);
    assert_string_equal(v, "first row, from an edge");
    free(v);
    sa_edge_close(e);
    g_done++;
}

static int outcome_cb(const json_t *o, void *ctx)
{
    json_t *arr = ctx;
    json_array_append(arr, (json_t *)o);
    return 0;
}

/* An edge's update that loses to a later one in PostgreSQL: the conflict
 * is recorded, and the overlay entry retires (rule (b)): reads show the
 * server's value. */
static void test_edge_conflict_recorded(void **state)
{
    (void)state;
    sa_edge *e = edge_init("confl");
    et_sync(e, 1);
    et_put(e, "t5", "{\"id\": 8, \"name\": \"edge eight\"}");
    it_sleep_ms(20);
    et_sql(g_c, "UPDATE t5 SET name = 'pg eight' WHERE id = 8");
    sa_edge *es[1] = {e};
    converge(es, 1, "t5", 20000);
    expect_row(e, "t5", "{\"id\": 8}", "pg eight");
    json_t *arr = json_array();
    sa_err err = {0};
    assert_int_equal(sa_edge_outcomes(e, outcome_cb, arr, &err), 0);
    assert_int_equal(json_array_size(arr), 1);
    json_t *o = json_array_get(arr, 0);
    assert_int_equal(json_integer_value(json_object_get(o, "seq")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "conflict");
    assert_string_equal(json_string_value(json_object_get(o, "resolution")), "kept_local");
    assert_string_equal(json_string_value(json_object_get(o, "table")), "public.t5");
    assert_true(json_integer_value(json_object_get(o, "conflict_id")) > 0);
    json_decref(arr);
    assert_int_equal(et_status(e).outcomes, 1);
    sa_edge_close(e);
    g_done++;
}

/* Last: it replaces the bridge. */
static void test_edge_resnapshot_keeps_pending(void **state)
{
    (void)state;
    sa_edge *e = edge_init("resnap");
    et_sync(e, 1);
    sa_edge_status before = et_status(e);
    sa_edge_close(e);

    /* offline writes */
    e = edge_open("resnap", NULL);
    et_put(e, "t4", "{\"id\": 501, \"name\": \"pending\"}");
    et_put(e, "t4", "{\"id\": 1, \"name\": \"also pending\"}");
    sa_edge_close(e);

    /* the bridge's data directory is replaced: a new instance, on its own
     * slot (the old one is left behind) */
    it_bridge_stop(&g_b, SIGTERM);
    it_rmrf(g_data);
    const char *args[] = {"--slot", "sa_edge_test_2", NULL};
    start_bridge(args);
    et_sql(g_c, "INSERT INTO t4 VALUES (600, 'after the switch', 6)");

    char url[64];
    e = edge_open("resnap", bridge_url(url, sizeof url));
    et_sync(e, 1);
    sa_edge_status st = et_status(e);
    if (strcmp(st.instance, before.instance) == 0)
        fail_msg("the edge still follows instance %s", st.instance);
    /* the pending writes are still visible after the re-bootstrap */
    expect_row(e, "t4", "{\"id\": 501}", "pending");
    expect_row(e, "t4", "{\"id\": 1}", "also pending");
    sa_edge *es[1] = {e};
    converge(es, 1, "t4", 25000);
    expect_row(e, "t4", "{\"id\": 600}", "after the switch");
    char v[64];
    q1("SELECT name FROM t4 WHERE id = 501", v, sizeof v);
    assert_string_equal(v, "pending");
    sa_edge_close(e);
    g_done++;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_edge_bootstrap_then_changes, test_setup),
        cmocka_unit_test_setup(test_edge_two_edges_converge, test_setup),
        cmocka_unit_test_setup(test_edge_write_survives_kill, test_setup),
        cmocka_unit_test_setup(test_edge_bad_input_refused, test_setup),
        cmocka_unit_test_setup(test_edge_empty_table_writable, test_setup),
        cmocka_unit_test_setup(test_edge_conflict_recorded, test_setup),
        cmocka_unit_test_setup(test_edge_resnapshot_keeps_pending, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
