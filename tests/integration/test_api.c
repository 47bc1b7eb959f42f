/*
 * test_api.c — the bridge's HTTP API v1 over real HTTP: a real sa-bridge
 * process on a real PostgreSQL (with the softadastra extension for peers
 * and tokens), talked to with libcurl.
 *
 *   auth        missing, wrong, disabled, rotated tokens; tables a peer may
 *               not read never appear, tables it may not write are refused
 *   snapshot    NDJSON begin/rows/end, consistent with the table
 *   changes     long poll answered when a commit arrives; cursors from
 *               another instance or ahead of the WAL get 409
 *   ops         durable, idempotent, gaps refused with the expected seq,
 *               malformed and oversized bodies refused, state kept across a
 *               bridge restart
 *
 * Skipped (not failed) when the extension is not installed; ./test.sh
 * installs it first.
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

#include "ingest_util.h"

static sa_pgh *g_h;
static PGconn *g_c;
static it_bridge g_b;
static char g_data[1024];
static int g_ok;
static int g_port;
static char g_token[128], g_token_items_only[128];

static int teardown(void **state)
{
    (void)state;
    if (g_b.pid > 0)
        it_bridge_stop(&g_b, SIGKILL);
    if (!g_ok && g_b.log[0] != '\0') {
        fprintf(stderr, "---- sa-bridge log (%s) ----\n", g_b.log);
        it_bridge_dump_log(&g_b, 80);
    }
    if (g_c != NULL)
        PQfinish(g_c);
    g_c = NULL;
    sa_pgh_stop(g_h);
    g_h = NULL;
    if (g_data[0] != '\0') {
        it_rmrf(g_data);
        if (g_ok)
            unlink(g_b.log);
    }
    memset(&g_b, 0, sizeof g_b);
    g_data[0] = '\0';
    g_ok = 0;
    return 0;
}

__attribute__((format(printf, 1, 2))) static void sql(const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(g_c, buf);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%.300s: %s", buf, PQerrorMessage(g_c));
    PQclear(r);
}

static void q1(const char *query, char *out, size_t cap)
{
    PGresult *r = PQexec(g_c, query);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", query, PQerrorMessage(g_c));
    snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- HTTP ------------------------------------------------------------ */

typedef struct resp {
    long status;
    char *body;
    size_t len;
} resp;

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    resp *r = ctx;
    char *b = realloc(r->body, r->len + size * n + 1);
    if (b == NULL)
        return 0;
    memcpy(b + r->len, p, size * n);
    r->len += size * n;
    b[r->len] = '\0';
    r->body = b;
    return size * n;
}

/* method GET (body NULL) or POST; token NULL: no Authorization. */
static resp http(const char *path, const char *token, const char *body, size_t body_len)
{
    resp r = {0, NULL, 0};
    char url[512], auth[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", g_port, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (body != NULL) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        fail_msg("%s: %s", path, curl_easy_strerror(cc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (r.body == NULL)
        r.body = calloc(1, 1);
    return r;
}

static json_t *json_of(const resp *r)
{
    json_error_t e;
    json_t *j = json_loads(r->body, JSON_DECODE_ANY, &e);
    if (j == NULL)
        fail_msg("not JSON (%s): %.300s", e.text, r->body);
    return j;
}

static void expect_status(const resp *r, long status, const char *what)
{
    if (r->status != status)
        fail_msg("%s: HTTP %ld, expected %ld: %.400s", what, r->status, status, r->body);
}

/* ---- set-up ---------------------------------------------------------- */

/* A cluster with the softadastra extension: 1, or 0 when the extension is
 * not installed (the caller skips). */
static int start_pg_ext(void)
{
    sa_err err = {0};
    int ok = it_pg_start_ext(&g_h, &g_c, &err);
    if (ok < 0)
        fail_msg("cannot start PostgreSQL: %s", err.msg);
    return ok;
}

/* Start sa-bridge (fresh data directory tagged tag, unless one is set) with
 * extra flags, wait for until_log in its log, and read the HTTP port it
 * picked into g_port. */
static void launch_bridge(const char *tag, const char *const *extra, const char *until_log)
{
    if (g_data[0] == '\0')
        it_data_dir(g_data, sizeof g_data, tag);
    long from = g_b.log[0] != '\0' ? it_log_size(&g_b) : 0;
    if (it_bridge_start(&g_b, sa_pgh_conninfo(g_h), g_data, NULL, extra) != 0)
        fail_msg("cannot start sa-bridge");
    int st = 0;
    if (it_wait_log(&g_b, from, until_log, 120000, &st) != 1)
        fail_msg("sa-bridge did not log \"%s\"", until_log);
    g_port = it_bridge_port(&g_b, from);
    if (g_port <= 0)
        fail_msg("the bridge did not log its HTTP port");
}

static void start_bridge(void)
{
    const char *extra[] = {"--listen", "127.0.0.1:0", NULL};
    launch_bridge("api", extra, "streaming from slot");
}

static int setup_world(void)
{
    if (!start_pg_ext())
        return 0;
    sql("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);"
        "CREATE TABLE secrets (id int PRIMARY KEY, v text);"
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 20) g;"
        "INSERT INTO secrets VALUES (1, 'hidden');"
        "SELECT softadastra.add_table('items'); SELECT softadastra.add_table('secrets')");
    q1("SELECT softadastra.create_peer('till1')", g_token, sizeof g_token);
    q1("SELECT softadastra.create_peer('till2', ARRAY['items']::regclass[])", g_token_items_only,
       sizeof g_token_items_only);
    start_bridge();
    return 1;
}

/* ---- tests ----------------------------------------------------------- */

static void test_api_end_to_end(void **state)
{
    (void)state;
    if (!setup_world()) {
        g_ok = 1;
        skip();
    }

    /* healthz: no auth, names the instance */
    resp r = http("/healthz", NULL, NULL, 0);
    expect_status(&r, 200, "healthz");
    json_t *j = json_of(&r);
    const char *instance = json_string_value(json_object_get(j, "instance"));
    assert_non_null(instance);
    assert_int_equal(strlen(instance), 32);
    char inst[33];
    snprintf(inst, sizeof inst, "%s", instance);
    json_decref(j);
    free(r.body);

    /* auth */
    r = http("/v1/changes?after=0", NULL, NULL, 0);
    expect_status(&r, 401, "no token");
    free(r.body);
    r = http("/v1/changes?after=0", "not-a-token", NULL, 0);
    expect_status(&r, 401, "wrong token");
    free(r.body);
    sql("SELECT softadastra.create_peer('gone')");
    char gone[128];
    q1("SELECT softadastra.rotate_token('gone')", gone, sizeof gone);
    sql("SELECT softadastra.disable_peer('gone')");
    r = http("/v1/changes?after=0", gone, NULL, 0);
    expect_status(&r, 403, "disabled peer");
    free(r.body);
    r = http("/v1/nothing", g_token, NULL, 0);
    expect_status(&r, 404, "unknown endpoint");
    free(r.body);
    r = http("/v1/snapshot", g_token, "{}", 2);
    expect_status(&r, 405, "POST to snapshot");
    free(r.body);

    /* snapshot: every items row; the restricted peer never sees secrets */
    r = http("/v1/snapshot", g_token, NULL, 0);
    expect_status(&r, 200, "snapshot");
    int rows = 0, secrets = 0, begin = 0, end = 0;
    long long seq_begin = -1, seq_end = -2;
    for (char *line = strtok(r.body, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        json_t *l = json_loads(line, 0, NULL);
        assert_non_null(l);
        const char *type = json_string_value(json_object_get(l, "type"));
        if (strcmp(type, "begin") == 0) {
            begin++;
            seq_begin = json_integer_value(json_object_get(l, "seq"));
            assert_string_equal(json_string_value(json_object_get(l, "instance")), inst);
            /* each table's key columns and types, rows or not */
            json_t *sc = json_object_get(json_object_get(l, "schemas"), "public.items");
            assert_int_equal(json_array_size(json_object_get(sc, "key")), 1);
            assert_string_equal(json_string_value(json_array_get(json_object_get(sc, "key"), 0)), "id");
            assert_int_equal(json_integer_value(json_object_get(json_object_get(sc, "types"), "price")),
                             1700);
        } else if (strcmp(type, "end") == 0) {
            end++;
            seq_end = json_integer_value(json_object_get(l, "seq"));
        } else {
            const char *t = json_string_value(json_object_get(l, "table"));
            if (strcmp(t, "public.items") == 0) {
                rows++;
                json_t *cols = json_object_get(l, "cols");
                int id = (int)json_integer_value(json_object_get(json_object_get(l, "key"), "id"));
                char want[32];
                snprintf(want, sizeof want, "item %d", id);
                assert_string_equal(json_string_value(json_object_get(cols, "name")), want);
            } else {
                secrets++;
            }
        }
        json_decref(l);
    }
    free(r.body);
    assert_int_equal(begin, 1);
    assert_int_equal(end, 1);
    assert_int_equal(rows, 20);
    assert_int_equal(secrets, 1);
    assert_true(seq_begin == seq_end && seq_begin > 0);

    r = http("/v1/snapshot", g_token_items_only, NULL, 0);
    expect_status(&r, 200, "snapshot (items only)");
    assert_null(strstr(r.body, "public.secrets"));
    assert_non_null(strstr(r.body, "public.items"));
    free(r.body);

    /* changes: a long poll answered by a commit */
    char path[256];
    snprintf(path, sizeof path, "/v1/changes?after=%lld&wait=20&instance=%s", seq_begin, inst);
    pid_t writer = fork(); /* commits a second after the poll starts */
    if (writer == 0) {
        PGconn *c = PQconnectdb(sa_pgh_conninfo(g_h));
        it_sleep_ms(1000);
        PQclear(PQexec(c, "INSERT INTO items VALUES (100, 'new', 1); INSERT INTO secrets VALUES (2, 'x')"));
        PQfinish(c);
        _exit(0);
    }
    int64_t t0 = it_now_ms();
    r = http(path, g_token_items_only, NULL, 0);
    int64_t took = it_now_ms() - t0;
    waitpid(writer, NULL, 0);
    expect_status(&r, 200, "changes");
    if (took < 800 || took > 15000)
        fail_msg("the long poll answered after %lld ms: not when the commit arrived", (long long)took);
    j = json_of(&r);
    json_t *ops = json_object_get(j, "ops");
    assert_true(json_array_size(ops) >= 1);
    for (size_t i = 0; i < json_array_size(ops); i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(ops, i), "table")),
                            "public.items");
    long long next = json_integer_value(json_object_get(j, "next"));
    long long head = json_integer_value(json_object_get(j, "head"));
    assert_true(next > seq_begin && next <= head);
    json_decref(j);
    free(r.body);

    /* a quiet long poll waits, then answers with no ops */
    snprintf(path, sizeof path, "/v1/changes?after=%lld&wait=1", head);
    int64_t t1 = it_now_ms();
    r = http(path, g_token, NULL, 0);
    expect_status(&r, 200, "quiet changes");
    assert_true(it_now_ms() - t1 >= 900);
    j = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(j, "ops")), 0);
    json_decref(j);
    free(r.body);

    /* metrics: Prometheus text with the WAL and each edge's progress */
    r = http("/metrics", NULL, NULL, 0);
    expect_status(&r, 200, "metrics");
    {
        char want_head[64];
        snprintf(want_head, sizeof want_head, "softadastra_wal_head_seq %lld\n", head);
        assert_non_null(strstr(r.body, "# TYPE softadastra_wal_head_seq gauge\n"));
        assert_non_null(strstr(r.body, want_head));
        assert_non_null(strstr(r.body, "softadastra_peer_acked_seq{peer=\"till2\"}"));
        assert_non_null(strstr(r.body, "softadastra_peer_queue_depth_ops{peer=\"till2\"}"));
        assert_non_null(strstr(r.body, "softadastra_inbox_depth_ops "));
    }
    free(r.body);

    /* cursors the bridge cannot serve */
    snprintf(path, sizeof path, "/v1/changes?after=%lld", head + 1000);
    r = http(path, g_token, NULL, 0);
    expect_status(&r, 409, "cursor ahead");
    assert_non_null(strstr(r.body, "must_resnapshot"));
    free(r.body);
    r = http("/v1/changes?after=1&instance=00000000000000000000000000000000", g_token, NULL, 0);
    expect_status(&r, 409, "other instance");
    free(r.body);
    r = http("/v1/changes?after=-1", g_token, NULL, 0);
    expect_status(&r, 400, "bad after");
    free(r.body);
    r = http("/v1/changes", g_token, NULL, 0);
    expect_status(&r, 400, "no after");
    free(r.body);

    /* ops: durable, idempotent, gaps refused */
    const char *batch =
        "{\"epoch\": 1, \"ops\": ["
        "{\"origin\":\"till1\",\"epoch\":1,\"seq\":1,\"hlc\":5,\"kind\":\"insert\",\"table\":\"public.items\","
        " \"key\":{\"id\":500},\"cols\":{\"name\":\"from till1\"},\"types\":{\"id\":23,\"name\":25}},"
        "{\"origin\":\"till1\",\"epoch\":1,\"seq\":2,\"hlc\":6,\"kind\":\"delete\",\"table\":\"public.items\","
        " \"key\":{\"id\":1},\"cols\":{},\"types\":{\"id\":23}}]}";
    r = http("/v1/ops", g_token, batch, strlen(batch));
    expect_status(&r, 200, "push");
    j = json_of(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "accepted")), 2);
    json_decref(j);
    free(r.body);
    r = http("/v1/ops", g_token, batch, strlen(batch));
    expect_status(&r, 200, "push again");
    assert_non_null(strstr(r.body, "\"accepted\":2"));
    free(r.body);
    const char *gap = "{\"epoch\": 1, \"ops\": ["
                      "{\"origin\":\"till1\",\"epoch\":1,\"seq\":4,\"hlc\":7,\"kind\":\"delete\","
                      "\"table\":\"public.items\",\"key\":{\"id\":2},\"cols\":{},\"types\":{\"id\":23}}]}";
    r = http("/v1/ops", g_token, gap, strlen(gap));
    expect_status(&r, 409, "gap");
    assert_non_null(strstr(r.body, "\"expected\":3"));
    free(r.body);
    const char *bad = "{\"epoch\": 1, \"ops\": [{\"origin\":\"till1\"";
    r = http("/v1/ops", g_token, bad, strlen(bad));
    expect_status(&r, 400, "malformed JSON");
    free(r.body);
    const char *badop = "{\"epoch\": 1, \"ops\": [{\"origin\":\"till1\",\"epoch\":1,\"seq\":3,"
                        "\"hlc\":7,\"kind\":\"upsert\",\"table\":\"public.items\",\"key\":{},\"cols\":{}}]}";
    r = http("/v1/ops", g_token, badop, strlen(badop));
    expect_status(&r, 400, "bad kind");
    free(r.body);
    const char *other = "{\"epoch\": 1, \"ops\": [{\"origin\":\"till2\",\"epoch\":1,\"seq\":1,"
                        "\"hlc\":7,\"kind\":\"insert\",\"table\":\"public.secrets\",\"key\":{\"id\":9},"
                        "\"cols\":{\"v\":\"x\"},\"types\":{\"id\":23,\"v\":25}}]}";
    r = http("/v1/ops", g_token_items_only, other, strlen(other));
    expect_status(&r, 403, "table not allowed for writing");
    free(r.body);
    r = http("/v1/ops", g_token, other, strlen(other));
    expect_status(&r, 400, "another peer's op");
    free(r.body);
    size_t big_len = 9u << 20;
    char *big = malloc(big_len);
    memset(big, ' ', big_len);
    r = http("/v1/ops", g_token, big, big_len);
    expect_status(&r, 413, "oversized body");
    free(r.body);
    free(big);

    /* across a restart: the accepted seqs and the instance are kept */
    it_bridge_stop(&g_b, SIGTERM);
    start_bridge();
    r = http("/v1/ops", g_token, batch, strlen(batch));
    expect_status(&r, 200, "push after restart");
    assert_non_null(strstr(r.body, "\"accepted\":2"));
    assert_non_null(strstr(r.body, inst));
    free(r.body);
    r = http("/v1/ops", g_token, gap, strlen(gap));
    expect_status(&r, 409, "gap after restart");
    free(r.body);

    /* the applier: queued ops reach PostgreSQL through apply_ops, and each
     * outcome is served once recorded */
    const char *more =
        "{\"epoch\": 1, \"ops\": ["
        "{\"origin\":\"till1\",\"epoch\":1,\"seq\":3,\"hlc\":8,\"kind\":\"update\",\"table\":\"public.items\","
        " \"key\":{\"id\":2},\"cols\":{\"name\":\"edge name\"},\"base\":{\"name\":\"stale\"},"
        " \"types\":{\"id\":23,\"name\":25}},"
        "{\"origin\":\"till1\",\"epoch\":1,\"seq\":4,\"hlc\":9,\"kind\":\"insert\",\"table\":\"public.items\","
        " \"key\":{\"id\":501},\"cols\":{\"price\":\"not a number\"},\"types\":{\"id\":23,\"price\":1700}},"
        "{\"origin\":\"till1\",\"epoch\":1,\"seq\":5,\"hlc\":10,\"kind\":\"insert\",\"table\":\"public.items\","
        " \"key\":{\"id\":502},\"cols\":{\"name\":\"after the bad one\"},\"types\":{\"id\":23,\"name\":25}}]}";
    r = http("/v1/ops", g_token, more, strlen(more));
    expect_status(&r, 200, "push 3..5");
    free(r.body);
    json_t *res = NULL;
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end; it_sleep_ms(100)) {
        r = http("/v1/ops/results?epoch=1&after=0", g_token, NULL, 0);
        expect_status(&r, 200, "results");
        json_decref(res);
        res = json_of(&r);
        free(r.body);
        if (json_integer_value(json_object_get(res, "applied")) == 5)
            break;
    }
    assert_int_equal(json_integer_value(json_object_get(res, "applied")), 5);
    assert_int_equal(json_integer_value(json_object_get(res, "accepted")), 5);
    json_t *list = json_object_get(res, "results");
    assert_int_equal(json_array_size(list), 5);
    const char *want[] = {"applied", "applied", "conflict", "rejected", "applied"};
    for (size_t i = 0; i < 5; i++) {
        json_t *o = json_array_get(list, i);
        assert_int_equal(json_integer_value(json_object_get(o, "seq")), (json_int_t)i + 1);
        assert_string_equal(json_string_value(json_object_get(o, "status")), want[i]);
    }
    json_t *conf = json_array_get(list, 2);
    assert_true(json_integer_value(json_object_get(conf, "conflict_id")) > 0);
    assert_string_equal(json_string_value(json_object_get(conf, "resolution")), "kept_local");
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(list, 3), "message")),
                           "numeric"));
    json_decref(res);
    r = http("/v1/ops/results?epoch=1&after=3", g_token, NULL, 0);
    expect_status(&r, 200, "results after 3");
    j = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 2);
    json_decref(j);
    free(r.body);
    char v[64];
    q1("SELECT name FROM items WHERE id = 500", v, sizeof v);
    assert_string_equal(v, "from till1");
    q1("SELECT count(*) FROM items WHERE id = 1", v, sizeof v);
    assert_string_equal(v, "0");
    q1("SELECT name FROM items WHERE id = 2", v, sizeof v);
    assert_string_equal(v, "item 2"); /* the conflict kept the local value */
    q1("SELECT name FROM items WHERE id = 502", v, sizeof v);
    assert_string_equal(v, "after the bad one");
    q1("SELECT applied_seq FROM softadastra.peer_progress WHERE peer = 'till1' AND epoch = 1", v,
       sizeof v);
    assert_string_equal(v, "5");
    q1("SELECT count(*) FROM softadastra.rejections WHERE peer = 'till1' AND op_seq = 4", v, sizeof v);
    assert_string_equal(v, "1");

    /* a crash between PostgreSQL's commit and the bridge's bookkeeping:
     * here PostgreSQL applies ops 6 and 7 first (as the applier would have
     * before dying); once they are pushed, the applier finds them applied
     * and reads their true outcomes back — reported once, not twice */
    const char *ops67 =
        "[{\"origin\":\"till1\",\"epoch\":1,\"seq\":6,\"hlc\":11,\"kind\":\"update\",\"table\":\"public.items\","
        " \"key\":{\"id\":3},\"cols\":{\"name\":\"edge 3\"},\"base\":{\"name\":\"stale\"},"
        " \"types\":{\"id\":23,\"name\":25}},"
        "{\"origin\":\"till1\",\"epoch\":1,\"seq\":7,\"hlc\":12,\"kind\":\"insert\",\"table\":\"public.items\","
        " \"key\":{\"id\":503},\"cols\":{\"name\":\"seven\"},\"types\":{\"id\":23,\"name\":25}}]";
    {
        const char *pv[1] = {ops67};
        PGresult *pr = PQexecParams(g_c, "SELECT count(*) FROM softadastra.apply_ops('till1', 1, $1::jsonb)",
                                    1, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(pr) != PGRES_TUPLES_OK)
            fail_msg("apply_ops: %s", PQerrorMessage(g_c));
        PQclear(pr);
    }
    char push67[2048];
    snprintf(push67, sizeof push67, "{\"epoch\": 1, \"ops\": %s}", ops67);
    r = http("/v1/ops", g_token, push67, strlen(push67));
    expect_status(&r, 200, "push 6..7");
    free(r.body);
    res = NULL;
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end; it_sleep_ms(100)) {
        r = http("/v1/ops/results?epoch=1&after=5", g_token, NULL, 0);
        json_decref(res);
        res = json_of(&r);
        free(r.body);
        if (json_integer_value(json_object_get(res, "applied")) == 7)
            break;
    }
    list = json_object_get(res, "results");
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "status")), "conflict");
    assert_true(json_integer_value(json_object_get(json_array_get(list, 0), "conflict_id")) > 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "status")), "applied");
    json_decref(res);
    q1("SELECT count(*) FROM softadastra.conflicts WHERE origin = 'till1' AND op_seq = 6", v, sizeof v);
    assert_string_equal(v, "1");
    q1("SELECT count(*) FROM items WHERE id = 503", v, sizeof v);
    assert_string_equal(v, "1");

    /* the loop: changes PostgreSQL made for till1's ops come back tagged
     * with till1 as origin; plain SQL changes stay "pg" */
    sql("UPDATE items SET name = 'plain sql' WHERE id = 4");
    int tagged = 0, plain = 0;
    long long cur = head;
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end && (tagged == 0 || plain == 0);) {
        snprintf(path, sizeof path, "/v1/changes?after=%lld&wait=2", cur);
        r = http(path, g_token, NULL, 0);
        expect_status(&r, 200, "changes after the pushes");
        j = json_of(&r);
        json_t *o;
        size_t i;
        json_array_foreach(json_object_get(j, "ops"), i, o) {
            const char *origin = json_string_value(json_object_get(o, "origin"));
            json_t *key = json_object_get(o, "key");
            if (strcmp(origin, "till1") == 0) {
                long long os = json_integer_value(json_object_get(o, "origin_seq"));
                assert_int_equal(json_integer_value(json_object_get(o, "epoch")), 1);
                assert_true(os >= 1 && os <= 7);
                if (json_integer_value(json_object_get(key, "id")) == 500)
                    assert_int_equal(os, 1);
                tagged++;
            } else {
                assert_string_equal(origin, "pg");
                assert_null(json_object_get(o, "origin_seq"));
                if (json_integer_value(json_object_get(key, "id")) == 4)
                    plain++;
            }
        }
        cur = json_integer_value(json_object_get(j, "next"));
        json_decref(j);
        free(r.body);
    }
    assert_true(tagged >= 3);
    assert_int_equal(plain, 1);

    /* a large apply transaction reaches the bridge streamed (the harness's
     * logical_decoding_work_mem is 64kB): its changes are tagged too */
    {
        size_t cap = 4u << 20, used = 0;
        char *big = malloc(cap);
        used += (size_t)snprintf(big + used, cap - used, "{\"epoch\": 1, \"ops\": [");
        for (int k = 0; k < 1500; k++)
            used += (size_t)snprintf(big + used, cap - used,
                                     "%s{\"origin\":\"till1\",\"epoch\":1,\"seq\":%d,\"hlc\":%d,"
                                     "\"kind\":\"insert\",\"table\":\"public.items\",\"key\":{\"id\":%d},"
                                     "\"cols\":{\"name\":\"bulk row number %d with some padding text\"},"
                                     "\"types\":{\"id\":23,\"name\":25}}",
                                     k ? "," : "", 8 + k, 100 + k, 10000 + k, k);
        used += (size_t)snprintf(big + used, cap - used, "]}");
        r = http("/v1/ops", g_token, big, used);
        expect_status(&r, 200, "push 1500");
        free(r.body);
        free(big);
    }
    int bulk = 0, bulk_tagged = 0;
    for (int64_t end = it_now_ms() + 60000; it_now_ms() < end && bulk < 1500;) {
        snprintf(path, sizeof path, "/v1/changes?after=%lld&wait=2&limit=5000", cur);
        r = http(path, g_token, NULL, 0);
        expect_status(&r, 200, "changes (bulk)");
        j = json_of(&r);
        json_t *o;
        size_t i;
        json_array_foreach(json_object_get(j, "ops"), i, o) {
            if (json_integer_value(json_object_get(json_object_get(o, "key"), "id")) < 10000)
                continue;
            bulk++;
            bulk_tagged += strcmp(json_string_value(json_object_get(o, "origin")), "till1") == 0 &&
                           json_integer_value(json_object_get(o, "origin_seq")) >= 8;
        }
        cur = json_integer_value(json_object_get(j, "next"));
        json_decref(j);
        free(r.body);
    }
    assert_int_equal(bulk, 1500);
    assert_int_equal(bulk_tagged, 1500);
    q1("SELECT count(*) FROM items WHERE id >= 10000", v, sizeof v);
    assert_string_equal(v, "1500");
    /* and it was indeed streamed (else this test would not test that) */
    long streamed = 0;
    for (int64_t end = it_now_ms() + 10000; it_now_ms() < end && streamed == 0; it_sleep_ms(200)) {
        q1("SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots", v, sizeof v);
        streamed = atol(v);
    }
    assert_true(streamed > 0);

    /* a rotated token stops working once the cache has expired */
    char fresh[128];
    q1("SELECT softadastra.rotate_token('till1')", fresh, sizeof fresh);
    it_sleep_ms(5500);
    r = http("/v1/changes?after=0", g_token, NULL, 0);
    expect_status(&r, 401, "rotated token");
    free(r.body);
    r = http("/healthz", fresh, NULL, 0);
    expect_status(&r, 200, "healthz");
    free(r.body);
    it_bridge_stop(&g_b, SIGTERM);
    g_ok = 1;
}

/* While the initial sync copies the tables, edges are told to wait: the
 * state is not whole yet, and a snapshot of it would miss rows. */
static void test_api_waits_for_initial_sync(void **state)
{
    (void)state;
    if (!start_pg_ext()) {
        g_ok = 1;
        skip();
    }
    sql("CREATE TABLE big (id int PRIMARY KEY, pad text);"
        "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g;"
        "SELECT softadastra.add_table('big')");
    q1("SELECT softadastra.create_peer('early')", g_token, sizeof g_token);
    const char *extra[] = {"--listen", "127.0.0.1:0", NULL};
    launch_bridge("api-sync", extra, "HTTP API v1 listening on 127.0.0.1:");
    int st = 0;
    resp r = http("/v1/snapshot", g_token, NULL, 0);
    int early = r.status == 503 && strstr(r.body, "initial_sync") != NULL;
    free(r.body);
    if (it_log_contains(&g_b, "initial sync done"))
        fail_msg("the initial sync finished before the test could ask: make the table bigger");
    assert_true(early);
    if (it_wait_log(&g_b, 0, "streaming from slot", 120000, &st) != 1)
        fail_msg("sa-bridge did not start streaming");
    r = http("/v1/snapshot", g_token, NULL, 0);
    expect_status(&r, 200, "snapshot after the initial sync");
    size_t lines = 0;
    for (char *c = r.body; *c; c++)
        lines += *c == '\n';
    free(r.body);
    assert_int_equal(lines, 400000 + 2);
    it_bridge_stop(&g_b, SIGTERM);
    g_ok = 1;
}

static long long healthz_field(const char *name)
{
    resp r = http("/healthz", NULL, NULL, 0);
    /* the applier reports healthy after its first round, just after start */
    for (int64_t end = it_now_ms() + 30000; r.status == 503 && it_now_ms() < end;) {
        free(r.body);
        it_sleep_ms(100);
        r = http("/healthz", NULL, NULL, 0);
    }
    expect_status(&r, 200, "healthz");
    json_t *j = json_of(&r);
    long long v = json_integer_value(json_object_get(j, name));
    json_decref(j);
    free(r.body);
    return v;
}

/* WAL retention: what every recently seen edge acknowledged is dropped; an
 * edge silent past the window gets 409 and bootstraps again; beyond the
 * size cap the oldest records go whoever needs them. */
static void test_api_wal_retention(void **state)
{
    (void)state;
    if (!start_pg_ext()) {
        g_ok = 1;
        skip();
    }
    sql("CREATE TABLE t (id int PRIMARY KEY, pad text); SELECT softadastra.add_table('t')");
    char active[128], stale[128];
    q1("SELECT softadastra.create_peer('active')", active, sizeof active);
    q1("SELECT softadastra.create_peer('stale')", stale, sizeof stale);
    const char *extra[] = {"--listen", "127.0.0.1:0", "--wal-retention-s", "3", "--wal-cap-mb", "2", NULL};
    launch_bridge("api-ret", extra, "streaming from slot");

    sql("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 50) g");
    char path[256];
    resp r;
    /* both edges seen at the head of the first batch */
    long long head = 0;
    for (int64_t end = it_now_ms() + 20000; it_now_ms() < end && head < 50; it_sleep_ms(100))
        head = healthz_field("head");
    assert_true(head >= 50);
    snprintf(path, sizeof path, "/v1/changes?after=%lld", head);
    r = http(path, stale, NULL, 0);
    expect_status(&r, 200, "stale edge, once");
    free(r.body);
    long long stale_at = head;
    /* the active edge keeps up with more writes; the stale one goes quiet */
    sql("INSERT INTO t SELECT g, 'b' FROM generate_series(51, 100) g");
    long long first = 0;
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end; it_sleep_ms(500)) {
        head = healthz_field("head");
        snprintf(path, sizeof path, "/v1/changes?after=%lld", head);
        r = http(path, active, NULL, 0);
        expect_status(&r, 200, "active edge");
        free(r.body);
        first = healthz_field("first");
        if (first > stale_at + 1)
            break;
    }
    if (first <= stale_at + 1)
        fail_msg("the WAL was not truncated past the stale edge (first %lld, stale at %lld)", first,
                 stale_at);
    assert_true(first <= head + 1); /* never past what the active edge acknowledged */
    snprintf(path, sizeof path, "/v1/changes?after=%lld", stale_at);
    r = http(path, stale, NULL, 0);
    expect_status(&r, 409, "stale edge after retention");
    assert_non_null(strstr(r.body, "must_resnapshot"));
    free(r.body);

    /* the size cap: ~6 MB of changes with the edges all gone quiet */
    it_sleep_ms(3500);
    sql("INSERT INTO t SELECT g, repeat('x', 2000) FROM generate_series(1000, 4000) g");
    long long bytes = 0;
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end; it_sleep_ms(500)) {
        bytes = healthz_field("wal_bytes");
        if (healthz_field("head") >= 3100 && bytes <= (2 << 20))
            break;
    }
    if (bytes > (2 << 20))
        fail_msg("the WAL holds %lld bytes, over its 2 MB cap", bytes);
    it_bridge_stop(&g_b, SIGTERM);
    g_ok = 1;
}

/* PostgreSQL down: edges keep pushing (into the inbox) and pulling (from
 * the WAL); once it is back the applier catches up. */
static void test_api_postgres_down(void **state)
{
    (void)state;
    if (!setup_world()) {
        g_ok = 1;
        skip();
    }
    const char *one = "{\"epoch\": 2, \"ops\": [{\"origin\":\"till1\",\"epoch\":2,\"seq\":1,\"hlc\":5,"
                      "\"kind\":\"insert\",\"table\":\"public.items\",\"key\":{\"id\":900},"
                      "\"cols\":{\"name\":\"before\"},\"types\":{\"id\":23,\"name\":25}}]}";
    resp r = http("/v1/ops", g_token, one, strlen(one));
    expect_status(&r, 200, "push while up");
    free(r.body);
    long long head = healthz_field("head");

    sa_err err = {0};
    if (sa_pgh_stop_server(g_h, 1, &err) != 0)
        fail_msg("cannot stop PostgreSQL: %s", err.msg);
    const char *two = "{\"epoch\": 2, \"ops\": [{\"origin\":\"till1\",\"epoch\":2,\"seq\":2,\"hlc\":6,"
                      "\"kind\":\"insert\",\"table\":\"public.items\",\"key\":{\"id\":901},"
                      "\"cols\":{\"name\":\"while down\"},\"types\":{\"id\":23,\"name\":25}}]}";
    /* /healthz says what is wrong (the replication connection) */
    for (int64_t end = it_now_ms() + 60000; it_now_ms() < end; it_sleep_ms(200)) {
        r = http("/healthz", NULL, NULL, 0);
        if (r.status == 503)
            break;
        free(r.body);
    }
    expect_status(&r, 503, "healthz while PostgreSQL is down");
    {
        json_t *hj = json_of(&r);
        assert_string_equal(json_string_value(json_object_get(hj, "status")), "failing");
        const char *why = json_string_value(json_object_get(hj, "reason"));
        assert_non_null(why);
        assert_non_null(strstr(why, "replication: "));
        assert_true(json_is_false(json_object_get(
            json_object_get(json_object_get(hj, "parts"), "replication"), "ok")));
        json_decref(hj);
    }
    free(r.body);
    /* ... while what an edge needs to sync still answers: the outcomes,
     * with the WAL head their bookkeeping records */
    r = http("/v1/ops/results?epoch=2", g_token, NULL, 0);
    expect_status(&r, 200, "results while PostgreSQL is down");
    {
        json_t *rj = json_of(&r);
        assert_true(json_integer_value(json_object_get(rj, "head")) >= head);
        json_decref(rj);
    }
    free(r.body);
    r = http("/v1/ops", g_token, two, strlen(two));
    expect_status(&r, 200, "push while PostgreSQL is down");
    assert_non_null(strstr(r.body, "\"accepted\":2"));
    free(r.body);
    char path[128];
    snprintf(path, sizeof path, "/v1/changes?after=%lld", head > 0 ? head - 1 : 0);
    r = http(path, g_token, NULL, 0);
    expect_status(&r, 200, "pull while PostgreSQL is down");
    free(r.body);

    if (sa_pgh_start_server(g_h, &err) != 0)
        fail_msg("cannot start PostgreSQL again: %s", err.msg);
    PQfinish(g_c);
    g_c = PQconnectdb(sa_pgh_conninfo(g_h));
    json_t *res = NULL;
    for (int64_t end = it_now_ms() + 60000; it_now_ms() < end; it_sleep_ms(200)) {
        r = http("/v1/ops/results?epoch=2", g_token, NULL, 0);
        json_decref(res);
        res = r.status == 200 ? json_of(&r) : NULL;
        free(r.body);
        if (res != NULL && json_integer_value(json_object_get(res, "applied")) == 2)
            break;
    }
    assert_non_null(res);
    assert_int_equal(json_integer_value(json_object_get(res, "applied")), 2);
    assert_int_equal(json_array_size(json_object_get(res, "results")), 2);
    json_decref(res);
    char v[64];
    q1("SELECT name FROM items WHERE id = 901", v, sizeof v);
    assert_string_equal(v, "while down");
    assert_true(healthz_field("head") > 0); /* healthy again (waits for 200) */

    /* a new bridge instance (another data directory, its own slot) takes
     * up where PostgreSQL's watermark is: the edge's next op is accepted,
     * its applied ones stay duplicates, nothing is applied twice */
    it_bridge_stop(&g_b, SIGTERM);
    it_rmrf(g_data);
    memset(&g_b, 0, sizeof g_b);
    g_data[0] = '\0';
    const char *second[] = {"--listen", "127.0.0.1:0", "--slot", "second", NULL};
    launch_bridge("api2", second, "streaming from slot");
    char both[1024];
    snprintf(both, sizeof both,
             "{\"epoch\": 2, \"ops\": [%.*s, {\"origin\":\"till1\",\"epoch\":2,\"seq\":3,\"hlc\":7,"
             "\"kind\":\"insert\",\"table\":\"public.items\",\"key\":{\"id\":902},"
             "\"cols\":{\"name\":\"new instance\"},\"types\":{\"id\":23,\"name\":25}}]}",
             (int)(strstr(two, "]}") - strchr(two, '[') - 1), strchr(two, '[') + 1);
    r = http("/v1/ops", g_token, both, strlen(both));
    expect_status(&r, 200, "push to a new instance");
    assert_non_null(strstr(r.body, "\"accepted\":3"));
    assert_non_null(strstr(r.body, "\"peer\":\"till1\""));
    free(r.body);
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end; it_sleep_ms(200)) {
        q1("SELECT count(*) FROM items WHERE id = 902", v, sizeof v);
        if (strcmp(v, "1") == 0)
            break;
    }
    assert_string_equal(v, "1");
    q1("SELECT applied_seq FROM softadastra.peer_progress WHERE peer = 'till1' AND epoch = 2", v,
       sizeof v);
    assert_string_equal(v, "3");
    it_bridge_stop(&g_b, SIGTERM); /* the cluster, slots and all, goes with the teardown */
    g_ok = 1;
}

/* ---- observability ---------------------------------------------------- */

/* The value of the sample line that starts with `series` ("name{...}" or
 * "name") in a /metrics text; fails when absent. */
static double metric_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    fail_msg("no metric %s in:\n%s", series, text);
    return 0;
}

static char *scrape(void)
{
    resp r = http("/metrics", NULL, NULL, 0);
    expect_status(&r, 200, "metrics");
    return r.body;
}

/* Run sa-bridge with args (NULL-terminated), stdout into out; exit code. */
static int run_cli(const char *const *args, char *out, size_t cap)
{
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd, "'%s'", it_bridge_bin());
    for (int i = 0; args[i] != NULL; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " '%s'", args[i]);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t got = fread(out, 1, cap - 1, f);
    out[got] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A scripted scenario, then /metrics: every metric the operator's guide
 * names is there with the value the scenario implies; /healthz and
 * `sa-bridge status` agree; the log is logfmt and holds no secret. */
static void test_api_metrics(void **state)
{
    (void)state;
    if (!start_pg_ext()) {
        g_ok = 1;
        skip();
    }
    sql("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);"
        "INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 10) g;"
        "SELECT softadastra.add_table('items', 'server_wins')");
    q1("SELECT softadastra.create_peer('obs')", g_token, sizeof g_token);
    /* a password in the conninfo (trust auth ignores it): never logged */
    const char *secret_pw = "Pw-Never-Logged-7731";
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "%s password=%s", sa_pgh_conninfo(g_h), secret_pw);
    it_data_dir(g_data, sizeof g_data, "obs");
    const char *extra[] = {"--listen", "127.0.0.1:0", NULL};
    if (it_bridge_start(&g_b, conninfo, g_data, NULL, extra) != 0)
        fail_msg("cannot start sa-bridge");
    int st = 0;
    if (it_wait_log(&g_b, 0, "streaming from slot", 120000, &st) != 1)
        fail_msg("sa-bridge did not start streaming");
    FILE *lf = fopen(g_b.log, "r");
    char line[4096];
    while (fgets(line, sizeof line, lf) != NULL) {
        const char *p = strstr(line, "HTTP API v1 listening on 127.0.0.1:");
        if (p != NULL)
            g_port = atoi(p + strlen("HTTP API v1 listening on 127.0.0.1:"));
    }
    fclose(lf);
    assert_true(g_port > 0);

    long long h0 = healthz_field("head");
    char path[256];
    /* pull 1: acknowledges h0 (the peer's first contact) */
    snprintf(path, sizeof path, "/v1/changes?after=%lld", h0);
    resp r = http(path, g_token, NULL, 0);
    expect_status(&r, 200, "pull 1");
    free(r.body);
    /* one transaction of three rows */
    sql("INSERT INTO items SELECT g, 'new ' || g, g FROM generate_series(11, 13) g");
    snprintf(path, sizeof path, "/v1/changes?after=%lld&wait=20", h0);
    long long next = 0;
    for (int tries = 0; tries < 5 && next <= h0; tries++) { /* pull 2: the transaction */
        r = http(path, g_token, NULL, 0);
        expect_status(&r, 200, "pull 2");
        json_t *j = json_of(&r);
        next = json_integer_value(json_object_get(j, "next"));
        json_decref(j);
        free(r.body);
    }
    assert_int_equal(next, h0 + 3);
    snprintf(path, sizeof path, "/v1/changes?after=%lld", next); /* acknowledges it */
    r = http(path, g_token, NULL, 0);
    expect_status(&r, 200, "pull 3");
    free(r.body);

    /* three ops: applied, a conflict (stale base), rejected (not a number) */
    const char *push = "{\"epoch\": 1, \"ops\": ["
        "{\"origin\":\"obs\",\"epoch\":1,\"seq\":1,\"hlc\":5,\"kind\":\"insert\","
        "\"table\":\"public.items\",\"key\":{\"id\":100},\"cols\":{\"name\":\"edge\"},"
        "\"types\":{\"id\":23,\"name\":25}},"
        "{\"origin\":\"obs\",\"epoch\":1,\"seq\":2,\"hlc\":6,\"kind\":\"update\","
        "\"table\":\"public.items\",\"key\":{\"id\":2},\"cols\":{\"name\":\"edge 2\"},"
        "\"base\":{\"name\":\"stale\"},\"types\":{\"id\":23,\"name\":25}},"
        "{\"origin\":\"obs\",\"epoch\":1,\"seq\":3,\"hlc\":7,\"kind\":\"update\","
        "\"table\":\"public.items\",\"key\":{\"id\":3},\"cols\":{\"price\":\"not a number\"},"
        "\"base\":{\"price\":\"3\"},\"types\":{\"id\":23,\"price\":1700}}]}";
    r = http("/v1/ops", g_token, push, strlen(push));
    expect_status(&r, 200, "push");
    free(r.body);
    r = http("/v1/ops", g_token, push, strlen(push)); /* re-sent: a retry */
    expect_status(&r, 200, "push again");
    free(r.body);
    const char *gap = "{\"epoch\": 1, \"ops\": [{\"origin\":\"obs\",\"epoch\":1,\"seq\":9,\"hlc\":9,"
                      "\"kind\":\"delete\",\"table\":\"public.items\",\"key\":{\"id\":1},"
                      "\"types\":{\"id\":23}}]}";
    r = http("/v1/ops", g_token, gap, strlen(gap)); /* refused: a retry the peer must make */
    expect_status(&r, 409, "gap");
    free(r.body);
    json_t *res = NULL;
    for (int64_t end = it_now_ms() + 60000; it_now_ms() < end; it_sleep_ms(100)) {
        r = http("/v1/ops/results?epoch=1", g_token, NULL, 0);
        json_decref(res);
        res = r.status == 200 ? json_of(&r) : NULL;
        free(r.body);
        if (res != NULL && json_integer_value(json_object_get(res, "applied")) == 3)
            break;
    }
    assert_int_equal(json_integer_value(json_object_get(res, "applied")), 3);
    json_decref(res);
    char resolution[64], kind[64];
    q1("SELECT resolution FROM softadastra.conflicts", resolution, sizeof resolution);
    q1("SELECT kind FROM softadastra.conflicts", kind, sizeof kind);

    /* the replication gauges follow PostgreSQL: wait until the slot's
     * confirmed position is the one the bridge says it confirmed */
    char *m = NULL;
    double slot_lsn = 0, confirmed = -1;
    for (int64_t end = it_now_ms() + 30000; it_now_ms() < end; it_sleep_ms(200)) {
        char v[64];
        q1("SELECT (confirmed_flush_lsn - '0/0')::text FROM pg_replication_slots "
           "WHERE slot_name = 'softadastra'", v, sizeof v);
        slot_lsn = strtod(v, NULL);
        free(m);
        m = scrape();
        confirmed = metric_value(m, "softadastra_replication_confirmed_lsn");
        if (confirmed == slot_lsn && metric_value(m, "softadastra_inbox_depth_ops") == 0)
            break;
    }
    assert_true(confirmed == slot_lsn);
    assert_true(slot_lsn > 0);
    assert_true(metric_value(m, "softadastra_replication_durable_lsn") > 0);
    assert_true(metric_value(m, "softadastra_replication_durable_lsn") <= confirmed);
    assert_true(metric_value(m, "softadastra_replication_server_lsn") >= confirmed);
    assert_true(metric_value(m, "softadastra_replication_connected") == 1);
    assert_non_null(strstr(m, "\nsoftadastra_replication_lag_bytes "));
    assert_non_null(strstr(m, "\nsoftadastra_replication_lag_seconds "));
    /* the SQL insert and the applier's transaction, at least */
    assert_true(metric_value(m, "softadastra_replication_transactions_total") >= 2);

    /* peers */
    double head = metric_value(m, "softadastra_wal_head_seq");
    assert_true(metric_value(m, "softadastra_peer_acked_seq{peer=\"obs\"}") == (double)next);
    assert_true(metric_value(m, "softadastra_peer_queue_depth_ops{peer=\"obs\"}") ==
                head - (double)next);
    assert_true(head > (double)next); /* the applied ops came back through the WAL */
    double seen = metric_value(m, "softadastra_peer_last_contact_seconds{peer=\"obs\"}");
    assert_true(seen >= 0 && seen < 600);
    assert_true(metric_value(m, "softadastra_peer_pulls_total{peer=\"obs\"}") >= 3);
    assert_true(metric_value(m, "softadastra_peer_pushes_total{peer=\"obs\"}") == 2);
    assert_true(metric_value(m, "softadastra_peer_pushed_ops_total{peer=\"obs\"}") == 3);
    assert_true(metric_value(m, "softadastra_peer_retries_total{peer=\"obs\"}") == 2);
    /* one transaction went from PostgreSQL to the peer and was acknowledged */
    assert_true(metric_value(m, "softadastra_peer_converge_seconds_count{peer=\"obs\"}") == 1);
    double conv = metric_value(m, "softadastra_peer_converge_seconds_sum{peer=\"obs\"}");
    assert_true(conv >= 0 && conv < 600);
    assert_non_null(strstr(m, "softadastra_peer_converge_seconds_bucket{peer=\"obs\",le=\"+Inf\"} 1\n"));

    /* the applier */
    assert_true(metric_value(m, "softadastra_applied_ops_total{outcome=\"applied\"}") == 1);
    assert_true(metric_value(m, "softadastra_applied_ops_total{outcome=\"conflict\"}") == 1);
    assert_true(metric_value(m, "softadastra_applied_ops_total{outcome=\"rejected\"}") == 1);
    char series[256];
    snprintf(series, sizeof series,
             "softadastra_conflicts_total{table=\"public.items\",kind=\"%s\",resolution=\"%s\"}",
             kind, resolution);
    assert_true(metric_value(m, series) == 1);
    assert_string_equal(kind, "update_differ");
    assert_true(metric_value(m, "softadastra_rejections_total{peer=\"obs\"}") == 1);
    assert_true(metric_value(m, "softadastra_apply_seconds_count") >= 1);
    assert_true(metric_value(m, "softadastra_inbox_depth_ops") == 0);
    assert_true(metric_value(m, "softadastra_inbox_bytes") == 0);

    /* WAL */
    assert_true(metric_value(m, "softadastra_wal_first_seq") == 1);
    assert_true(metric_value(m, "softadastra_wal_durable_seq") == head);
    assert_true(metric_value(m, "softadastra_wal_bytes") > 0);

    /* HTTP */
    assert_true(metric_value(m, "softadastra_http_requests_total{route=\"/v1/ops\",status=\"200\"}") == 2);
    assert_true(metric_value(m, "softadastra_http_requests_total{route=\"/v1/ops\",status=\"409\"}") == 1);
    assert_true(metric_value(m, "softadastra_http_requests_total{route=\"/v1/changes\",status=\"200\"}") >= 3);
    assert_true(metric_value(m, "softadastra_http_requests_total{route=\"/healthz\",status=\"200\"}") >= 1);
    assert_true(metric_value(m, "softadastra_http_requests_total{route=\"/metrics\",status=\"200\"}") >= 1);
    /* health */
    assert_true(metric_value(m, "softadastra_healthy") == 1);
    assert_true(metric_value(m, "softadastra_part_healthy{part=\"replication\"}") == 1);
    assert_true(metric_value(m, "softadastra_part_healthy{part=\"applier\"}") == 1);
    assert_true(metric_value(m, "softadastra_part_healthy{part=\"storage\"}") == 1);
    /* every family is typed, every sample is a number */
    assert_non_null(strstr(m, "# TYPE softadastra_peer_converge_seconds histogram\n"));
    assert_non_null(strstr(m, "# TYPE softadastra_conflicts_total counter\n"));
    free(m);

    /* sa-bridge status, from the data directory's api.url */
    char out[8192];
    const char *st_text[] = {"status", "--data", g_data, NULL};
    assert_int_equal(run_cli(st_text, out, sizeof out), 0);
    assert_non_null(strstr(out, ": healthy\n"));
    assert_non_null(strstr(out, "obs"));
    const char *st_json[] = {"status", "--data", g_data, "--json", NULL};
    assert_int_equal(run_cli(st_json, out, sizeof out), 0);
    json_error_t je;
    json_t *sj = json_loads(out, 0, &je);
    assert_non_null(sj);
    assert_true(json_is_true(json_object_get(sj, "healthy")));
    json_t *peer0 = json_array_get(json_object_get(sj, "peers"), 0);
    assert_string_equal(json_string_value(json_object_get(peer0, "peer")), "obs");
    assert_int_equal(json_integer_value(json_object_get(peer0, "acked")), next);
    assert_true(json_is_true(json_object_get(json_object_get(sj, "replication"), "connected")));
    json_decref(sj);
    const char *st_none[] = {"status", "--url", "http://127.0.0.1:1", NULL};
    assert_int_equal(run_cli(st_none, out, sizeof out), 2);

    it_bridge_stop(&g_b, SIGTERM);
    /* the log: logfmt lines only, and no secret anywhere */
    lf = fopen(g_b.log, "r");
    assert_non_null(lf);
    int lines = 0;
    while (fgets(line, sizeof line, lf) != NULL) {
        lines++;
        if (strncmp(line, "ts=", 3) != 0 || strstr(line, " level=") == NULL ||
            strstr(line, " msg=\"") == NULL || line[strlen(line) - 2] != '"')
            fail_msg("not a logfmt line: %s", line);
        if (strstr(line, secret_pw) != NULL || strstr(line, g_token) != NULL)
            fail_msg("a secret in the log: %s", line);
    }
    fclose(lf);
    assert_true(lines > 5);
    g_ok = 1;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_api_end_to_end, teardown),
        cmocka_unit_test_teardown(test_api_waits_for_initial_sync, teardown),
        cmocka_unit_test_teardown(test_api_wal_retention, teardown),
        cmocka_unit_test_teardown(test_api_postgres_down, teardown),
        cmocka_unit_test_teardown(test_api_metrics, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
