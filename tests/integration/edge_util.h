/*
 * edge_util.h — helpers the edge integration tests share (test_edge,
 * test_edge_faults, test_e2e_conflicts, test_convergence): SQL that fails
 * the test, PostgreSQL with the softadastra extension, sa-bridge started
 * on a port it reports in its log, edges opened and synced through
 * libsa_edge, an edge's rows compared with PostgreSQL's, GET over libcurl,
 * and child processes that a failed test leaves for its teardown to kill.
 *
 * Built on ingest_util.h (the bridge process, clocks, the store read-only);
 * header-only (static functions) like it.  The functions that fail the test
 * use cmocka's fail_msg, so they run in a test or a group's setup only.
 * Nothing here keeps global state: the caller passes its connection, its
 * bridge, its port.
 */
#ifndef SA_EDGE_UTIL_H
#define SA_EDGE_UTIL_H

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

#include "ingest_util.h"
#include "sa/sa_buf.h"
#include "sa/sa_edge.h"

/* ---- SQL that fails the test ------------------------------------------- */

/* Run a statement (or several); fail on anything but success. */
__attribute__((format(printf, 2, 3))) static inline void et_sql(PGconn *c, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, buf);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%.300s: %s", buf, PQerrorMessage(c));
    PQclear(r);
}

/* One value of a query into out ("" for SQL NULL or no row). */
__attribute__((format(printf, 4, 5))) static inline void et_q1(PGconn *c, char *out, size_t cap,
                                                               const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, buf);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", buf, PQerrorMessage(c));
    snprintf(out, cap, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

/* Create peer `name`; its token into token[cap]. */
static inline void et_peer_create(PGconn *c, const char *name, char *token, size_t cap)
{
    et_q1(c, token, cap, "SELECT softadastra.create_peer('%s')", name);
}

/* applied_seq of (peer, epoch) now (0 when no row). */
static inline uint64_t et_applied_seq(PGconn *c, const char *peer, uint64_t epoch)
{
    char v[64];
    et_q1(
        c, v, sizeof v,
        "SELECT applied_seq FROM softadastra.peer_progress WHERE peer = '%s' AND epoch = %" PRIu64,
        peer, epoch);
    return strtoull(v, NULL, 10);
}

/* ---- a group's set-up and teardown ----------------------------------------- */

/*
 * The start of a group: libcurl, then PostgreSQL with the extension (see
 * it_pg_start_ext).  0, with *skip set when the extension is not installed;
 * -1 (said on stderr) when PostgreSQL did not start.
 */
static inline int et_group_start(sa_pgh **h, PGconn **c, int *skip)
{
    sa_err err = {0};
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int ext = it_pg_start_ext(h, c, &err);
    if (ext < 0) {
        fprintf(stderr, "cannot start PostgreSQL: %s\n", err.msg);
        return -1;
    }
    *skip = ext == 0;
    return 0;
}

/* The start of a group's teardown: SIGKILL the bridge if it runs; when the
 * group failed, print the last `lines` of its log. */
static inline void et_bridge_kill(it_bridge *b, int failed, int lines)
{
    if (b->pid > 0)
        it_bridge_stop(b, SIGKILL);
    if (failed && b->log[0] != '\0') {
        fprintf(stderr, "---- sa-bridge log (%s) ----\n", b->log);
        it_bridge_dump_log(b, lines);
    }
}

/*
 * The end of a group's teardown: finish c, stop h, remove the bridge's
 * data directory and its log, and tmp.  When the group failed, the log and
 * tmp stay, and with keep_data the data directory too.  Then
 * curl_global_cleanup.
 */
static inline void et_group_end(PGconn *c, sa_pgh *h, const it_bridge *b, const char *data,
                                const char *tmp, int failed, int keep_data)
{
    if (c != NULL)
        PQfinish(c);
    sa_pgh_stop(h);
    if (data[0] != '\0' && !(failed && keep_data)) {
        it_rmrf(data);
        if (!failed)
            unlink(b->log);
    }
    if (tmp[0] != '\0' && !failed)
        it_rmrf(tmp);
    curl_global_cleanup();
}

/* A test's setup: skip the test when its group is skipped, else count it
 * started (each test counts itself done at its end, so the teardown knows
 * whether to keep the logs and directories). */
static inline void et_test_begin(int group_skipped, int *started)
{
    if (group_skipped)
        skip();
    (*started)++;
}

/* ---- the bridge -------------------------------------------------------- */

/*
 * Start sa-bridge on data (listening on 127.0.0.1:port, 0 for any port it
 * picks) with extra_args (NULL-terminated, at most 8, or NULL), wait until
 * its log says it is streaming, and return the HTTP port it logged (which
 * must be port when port is not 0).  Fails the test otherwise.
 */
static inline int et_bridge_start(it_bridge *b, const char *conninfo, const char *data, int port,
                                  const char *const *extra_args)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *extra[12] = {"--listen", listen, NULL};
    for (int i = 0; extra_args != NULL && extra_args[i] != NULL && i < 8; i++)
        extra[2 + i] = extra_args[i], extra[3 + i] = NULL;
    long from = b->log[0] != '\0' ? it_log_size(b) : 0;
    if (it_bridge_start(b, conninfo, data, NULL, extra) != 0)
        fail_msg("cannot start sa-bridge");
    int st = 0;
    if (it_wait_log(b, from, "streaming from slot", 60000, &st) != 1) {
        it_bridge_dump_log(b, 40);
        fail_msg("sa-bridge did not start streaming");
    }
    int got = it_bridge_port(b, from);
    if (got <= 0 || (port != 0 && got != port))
        fail_msg("the bridge did not log its HTTP port (asked %d, got %d)", port, got);
    return got;
}

/* Stop the bridge with sig; it must end within 15 s. */
static inline void et_bridge_stop(it_bridge *b, int sig)
{
    int status = 0;
    kill(b->pid, sig);
    if (!it_wait_exit(b, 15000, &status)) {
        it_bridge_dump_log(b, 30);
        it_bridge_stop(b, SIGKILL);
        fail_msg("sa-bridge did not stop within 15 s of signal %d", sig);
    }
}

/* ---- edges ------------------------------------------------------------- */

/* A new edge store in dir for peer with token, on the bridge at
 * 127.0.0.1:port; not synced.  Caller closes it with sa_edge_close(). */
static inline sa_edge *et_edge_create(const char *dir, const char *peer, const char *token,
                                      int port)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    sa_edge_options o;
    sa_edge_options_init(&o);
    o.create = 1;
    o.peer = peer;
    o.token = token;
    o.bridge = url;
    sa_edge *e = NULL;
    sa_err err = {0};
    if (sa_edge_open(dir, &o, &e, &err) != 0)
        fail_msg("sa_edge_open(create) %s: %s", dir, err.msg);
    return e;
}

/* Open the edge store in dir; bridge NULL keeps the stored URL.  Caller
 * closes it with sa_edge_close(). */
static inline sa_edge *et_edge_open(const char *dir, const char *bridge)
{
    sa_edge_options o;
    sa_edge_options_init(&o);
    o.bridge = bridge;
    sa_edge *e = NULL;
    sa_err err = {0};
    if (sa_edge_open(dir, &o, &e, &err) != 0)
        fail_msg("sa_edge_open %s: %s", dir, err.msg);
    return e;
}

static inline sa_edge_status et_status(sa_edge *e)
{
    sa_edge_status st;
    sa_err err = {0};
    if (sa_edge_status_get(e, &st, &err) != 0)
        fail_msg("status: %s", err.msg);
    return st;
}

/* One sync round; its result code, or the test fails on an error when
 * must is set. */
static inline int et_sync(sa_edge *e, int must)
{
    sa_err err = {0};
    int rc = sa_edge_sync_once(e, 0, &err);
    if (rc != 0 && must)
        fail_msg("sync: %s: %s", sa_err_name(rc), err.msg);
    return rc;
}

/* A local put of row (JSON text); its op seq. */
static inline uint64_t et_put(sa_edge *e, const char *table, const char *row)
{
    json_t *j = json_loads(row, 0, NULL);
    sa_err err = {0};
    uint64_t seq = 0;
    assert_non_null(j);
    int rc = sa_edge_put(e, table, j, &seq, &err);
    json_decref(j);
    if (rc != 0)
        fail_msg("put %s %s: %s", table, row, err.msg);
    assert_true(seq > 0);
    return seq;
}

/* A local delete of key (JSON text); its op seq. */
static inline uint64_t et_del(sa_edge *e, const char *table, const char *key)
{
    json_t *j = json_loads(key, 0, NULL);
    sa_err err = {0};
    uint64_t seq = 0;
    int rc = sa_edge_delete(e, table, j, &seq, &err);
    json_decref(j);
    if (rc != 0)
        fail_msg("delete %s %s: %s", table, key, err.msg);
    return seq;
}

/* ---- lists of strings ---------------------------------------------------- */

/* Strings the list owns (free with et_strv_free). */
typedef struct et_strv {
    char **v;
    size_t n, cap;
} et_strv;

/* Append s (malloc'd; the list takes it). */
static inline void et_strv_add(et_strv *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = s;
}

static inline void et_strv_sort(et_strv *l)
{
    qsort(l->v, l->n, sizeof *l->v, it_strcmp_p);
}

static inline void et_strv_free(et_strv *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- rows, row by row ---------------------------------------------------- */

/* The table's columns in order (names malloc'd; *n; free with
 * et_columns_free). */
static inline char **et_pg_columns(PGconn *c, const char *table, int *n)
{
    char q[512];
    snprintf(q, sizeof q, "SELECT * FROM %s LIMIT 0", table);
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQerrorMessage(c));
    *n = PQnfields(r);
    char **v = calloc((size_t)*n, sizeof *v);
    for (int i = 0; i < *n; i++)
        v[i] = strdup(PQfname(r, i));
    PQclear(r);
    return v;
}

static inline void et_columns_free(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* One JSON value as PostgreSQL's text form (\N for NULL); malloc'd. */
static inline char *et_val_text(const json_t *v)
{
    char buf[64];
    if (v == NULL)
        return strdup("<absent>");
    if (json_is_null(v))
        return strdup("\\N");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        return strdup(buf);
    }
    if (json_is_true(v))
        return strdup("t");
    if (json_is_false(v))
        return strdup("f");
    if (json_is_real(v)) {
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        return strdup(buf);
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* A row as "key" (the first column, zero-padded so text order is numeric
 * order) and "line" (every column name=value, 0x1f between columns, NULL
 * as \N). */
typedef struct et_row {
    char key[32];
    char *line;
} et_row;

/* Rows sorted by key (free with et_rows_free). */
typedef struct et_rows {
    et_row *v;
    size_t n, cap;
} et_rows;

/* Append a row (line malloc'd; the list takes it). */
static inline void et_rows_add(et_rows *r, const char *key, char *line)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 256;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
    }
    snprintf(r->v[r->n].key, sizeof r->v[r->n].key, "%020lld", atoll(key));
    r->v[r->n++].line = line;
}

static inline void et_rows_free(et_rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].line);
    free(r->v);
    memset(r, 0, sizeof *r);
}

static inline int et_row_cmp(const void *a, const void *b)
{
    return strcmp(((const et_row *)a)->key, ((const et_row *)b)->key);
}

typedef struct et_list_ctx {
    et_rows *r;
    char **cols;
    int ncols;
    const char *dropped; /* a column PostgreSQL dropped, not counted; or NULL */
} et_list_ctx;

/* A row as its columns' text, plus "(N columns)" and the names of the
 * others when the edge's row has other columns than PostgreSQL's. */
static inline int et_list_cb(const json_t *jr, void *vctx)
{
    et_list_ctx *c = vctx;
    json_t *cols = json_object_get(jr, "cols");
    size_t len = 64, used = 0;
    char *line = malloc(len), *key = NULL;
    line[0] = '\0';
    for (int k = 0; k < c->ncols; k++) {
        char *v = et_val_text(json_object_get(cols, c->cols[k]));
        size_t need = used + strlen(c->cols[k]) + strlen(v) + 4;
        if (need > len)
            line = realloc(line, len = 2 * need);
        used += (size_t)sprintf(line + used, "%s%s=%s", k ? "\x1f" : "", c->cols[k], v);
        if (k == 0)
            key = strdup(v);
        free(v);
    }
    size_t extra =
        json_object_size(cols) - (c->dropped != NULL && json_object_get(cols, c->dropped) != NULL);
    if (extra != (size_t)c->ncols) {
        const char *name;
        json_t *v;
        line = realloc(line, used + 64);
        sprintf(line + used, "\x1f(%zu columns)", json_object_size(cols));
        json_object_foreach(cols, name, v) /* name the extra ones too */
        {
            int known = 0;
            for (int k = 0; k < c->ncols && !known; k++)
                known = strcmp(c->cols[k], name) == 0;
            if (!known) {
                used = strlen(line);
                line = realloc(line, used + strlen(name) + 16);
                sprintf(line + used, " +%s", name);
            }
        }
    }
    et_rows_add(c->r, key ? key : "0", line);
    free(key);
    return 0;
}

/* The edge's rows of table, columns cols[ncols] (dropped: see et_list_ctx). */
static inline et_rows et_edge_rows(sa_edge *e, const char *table, char **cols, int ncols,
                                   const char *dropped)
{
    et_rows r = {0};
    et_list_ctx c = {&r, cols, ncols, dropped};
    sa_err err = {0};
    if (sa_edge_list(e, table, et_list_cb, &c, &err) != 0)
        fail_msg("list %s: %s", table, err.msg);
    qsort(r.v, r.n, sizeof *r.v, et_row_cmp);
    return r;
}

/* PostgreSQL's rows of table, which has exactly the columns cols[ncols]. */
static inline et_rows et_pg_rows(PGconn *c, const char *table, char **cols, int ncols)
{
    et_rows r = {0};
    char q[512];
    snprintf(q, sizeof q, "SELECT * FROM %s", table);
    PGresult *res = PQexec(c, q);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != ncols)
        fail_msg("%s: %s", q, PQerrorMessage(c));
    for (int i = 0; i < PQntuples(res); i++) {
        size_t len = 1;
        for (int k = 0; k < ncols; k++)
            len += strlen(cols[k]) + (size_t)PQgetlength(res, i, k) + 4;
        char *line = malloc(len), *p = line;
        for (int k = 0; k < ncols; k++)
            p += sprintf(p, "%s%s=%s", k ? "\x1f" : "", cols[k],
                         PQgetisnull(res, i, k) ? "\\N" : PQgetvalue(res, i, k));
        et_rows_add(&r, PQgetvalue(res, i, 0), line);
    }
    PQclear(res);
    qsort(r.v, r.n, sizeof *r.v, et_row_cmp);
    return r;
}

/*
 * Does the edge hold exactly PostgreSQL's rows of table (every column, and
 * no other but dropped)?  1, or 0 with the first difference (by key) in
 * why.
 */
static inline int et_edge_equals_pg(PGconn *c, sa_edge *e, const char *table, const char *dropped,
                                    char *why, size_t cap)
{
    int nc = 0;
    char **cols = et_pg_columns(c, table, &nc);
    et_rows a = et_edge_rows(e, table, cols, nc, dropped), b = et_pg_rows(c, table, cols, nc);
    int ok = 1;
    for (size_t i = 0, j = 0; ok && (i < a.n || j < b.n); i++, j++) {
        int d = i >= a.n ? 1 : j >= b.n ? -1 : strcmp(a.v[i].key, b.v[j].key);
        if (d < 0)
            snprintf(why, cap, "only on the edge: %s", a.v[i].line);
        else if (d > 0)
            snprintf(why, cap, "only in PostgreSQL: %s", b.v[j].line);
        else if (strcmp(a.v[i].line, b.v[j].line) != 0)
            snprintf(why, cap, "row differs:\n    edge:       %s\n    PostgreSQL: %s", a.v[i].line,
                     b.v[j].line);
        else
            continue;
        ok = 0;
        size_t l = strlen(why);
        snprintf(why + l, cap - l, " (edge %zu rows, PostgreSQL %zu)", a.n, b.n);
        for (char *p = why; *p; p++)
            if (*p == '\x1f')
                *p = '|';
    }
    et_rows_free(&a);
    et_rows_free(&b);
    et_columns_free(cols, nc);
    return ok;
}

/*
 * Sync every edge until each holds exactly PostgreSQL's rows of table (see
 * et_edge_equals_pg) and has nothing pending or shown over the server's
 * rows, and, unless bridge_data is "", the state of public.<table> in the
 * bridge's data directory bridge_data equals the table too.  Fails after
 * timeout_ms, printing the first difference.
 */
static inline void et_converge(PGconn *c, sa_edge **es, int n, const char *table, int timeout_ms,
                               const char *dropped, const char *bridge_data)
{
    char why[2400] = "", qual[256];
    snprintf(qual, sizeof qual, "public.%s", table);
    for (int64_t end = it_now_ms() + timeout_ms;; it_sleep_ms(100)) {
        int ok = 1;
        for (int i = 0; i < n; i++)
            et_sync(es[i], 1);
        for (int i = 0; i < n && ok; i++) {
            sa_edge_status st = et_status(es[i]);
            char d[2048];
            if (!et_edge_equals_pg(c, es[i], table, dropped, d, sizeof d)) {
                ok = 0;
                snprintf(why, sizeof why, "edge %s: %s", st.peer, d);
            } else if (st.pending != 0 || st.overlay != 0) {
                snprintf(why, sizeof why,
                         "edge %s: %" PRIu64 " pending, %" PRIu64 " in the overlay", st.peer,
                         st.pending, st.overlay);
                ok = 0;
            }
        }
        if (ok && bridge_data[0] != '\0' && !it_state_equals_table(bridge_data, c, qual)) {
            snprintf(why, sizeof why, "the bridge's state differs from the table (see above)");
            ok = 0;
        }
        if (ok)
            return;
        if (it_now_ms() >= end)
            fail_msg("%s: no convergence after %d ms: %s", table, timeout_ms, why);
    }
}

/* ---- HTTP (for what the edge API does not show) -------------------------- */

static inline size_t et_http_body_cb(char *p, size_t size, size_t n, void *ctx)
{
    sa_buf_put(ctx, p, size * n);
    return size * n;
}

/* GET path from the bridge at 127.0.0.1:port with token (NULL: none);
 * *status (0 when there was no answer) and the body as JSON (a new
 * reference, NULL when not JSON). */
static inline json_t *et_http_get(int port, const char *path, const char *token, long *status)
{
    CURL *c = curl_easy_init();
    char url[512], auth[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *h = NULL;
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    sa_buf b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, et_http_body_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    CURLcode cc = curl_easy_perform(c);
    *status = 0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY, NULL);
    sa_buf_free(&b);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return j;
}

/* ---- child processes ------------------------------------------------------- */

/* Children still running, so that a test that fails halfway leaves them to
 * the next setup or the teardown to kill; log: where their output goes. */
typedef struct et_kids {
    pid_t pid[16];
    char log[1100];
} et_kids;

static inline void et_kids_forget(et_kids *k, pid_t pid)
{
    for (size_t i = 0; i < sizeof k->pid / sizeof k->pid[0]; i++)
        if (k->pid[i] == pid)
            k->pid[i] = 0;
}

static inline void et_kids_kill_all(et_kids *k)
{
    for (size_t i = 0; i < sizeof k->pid / sizeof k->pid[0]; i++)
        if (k->pid[i] > 0) {
            kill(k->pid[i], SIGKILL);
            waitpid(k->pid[i], NULL, 0);
            k->pid[i] = 0;
        }
}

/* Wait for child pid (a blocking waitpid, or WNOHANG); forgets it once
 * reaped.  As waitpid. */
static inline pid_t et_kid_wait(et_kids *k, pid_t pid, int *status, int flags)
{
    pid_t r = waitpid(pid, status, flags);
    if (r == pid)
        et_kids_forget(k, pid);
    return r;
}

/*
 * Start argv[0] (a path; self: this very binary, run as /proc/self/exe even
 * if the build replaced the file since) with stdout and stderr appended to
 * k->log.  block_term: the child starts with SIGTERM blocked (until its
 * own code handles it).
 */
static inline pid_t et_spawn(et_kids *k, const char *self, const char *const *argv, int block_term)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (block_term) {
            sigset_t term;
            sigemptyset(&term);
            sigaddset(&term, SIGTERM);
            sigprocmask(SIG_BLOCK, &term, NULL);
        }
        int fd = open(k->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0] == self ? "/proc/self/exe" : argv[0], (char *const *)argv);
        _exit(127);
    }
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    for (size_t i = 0; i < sizeof k->pid / sizeof k->pid[0]; i++)
        if (k->pid[i] == 0) {
            k->pid[i] = pid;
            break;
        }
    return pid;
}

/* Print the tail of the children's log (for failing tests). */
static inline void et_kids_dump_log(const et_kids *k, int lines)
{
    it_tail(k->log, lines, "(no child log)");
}

/*
 * Signal a child and wait (at most timeout_ms, then SIGKILL): its exit
 * code; -1 when it had to be killed; when a signal N ended it, -1 or, with
 * sig_codes, -100 - N.  before_kill (or NULL) runs before that SIGKILL
 * (to show what the child was stuck on).
 */
static inline int et_kid_stop(et_kids *k, pid_t pid, int sig, int timeout_ms, int sig_codes,
                              void (*before_kill)(void))
{
    int st = 0;
    kill(pid, sig);
    for (int64_t end = it_now_ms() + timeout_ms; it_now_ms() < end; it_sleep_ms(10))
        if (et_kid_wait(k, pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : sig_codes ? -100 - WTERMSIG(st) : -1;
    if (before_kill != NULL)
        before_kill();
    kill(pid, SIGKILL);
    et_kid_wait(k, pid, &st, 0);
    return -1;
}

#endif /* SA_EDGE_UTIL_H */
