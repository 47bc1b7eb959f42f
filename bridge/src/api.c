/*
 * api.c — the bridge's HTTP API v1 (contract in api.h).
 *
 *   request ──http.c──▶ api_handle ──auth──▶ route
 *                                              ├─ /healthz       answer now
 *                                              ├─ /v1/ops        inbox write (synced), answer
 *                                              ├─ /v1/changes    ack write, then a stream that
 *                                              │                 answers once ops exist or the
 *                                              │                 wait is over (newline heartbeats)
 *                                              └─ /v1/snapshot   a stream of NDJSON lines
 *
 * Long polls hold no thread: their streams wait (HTTP_STREAM_WAIT), woken
 * by api_wal_advanced (ingest calls it after each durable write) and every
 * API_POLL_MS for their deadline and heartbeat.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasecmp, getrandom */
#endif

#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <libpq-fe.h>

#include "applier.h"
#include "http.h"
#include "metrics.h"
#include "sa/sa_alloc.h"
#include "sa/sa_buf.h"
#include "sa/sa_op.h"

#define API_META_INSTANCE "bridge.instance"
#ifndef SA_API_VERSION
#ifdef SA_VERSION
#define SA_API_VERSION SA_VERSION
#else
#define SA_API_VERSION "0.1.0"
#endif
#endif
#define API_META_INBOX_HI "inbox.hi." /* + peer@epoch: highest accepted seq */
#define API_HEARTBEAT_MS 5000
#define API_POLL_MS 1000 /* a waiting long poll looks at its deadline this often */
#define API_MAX_WAIT_S 60
#define API_CHANGES_MAX_BYTES (4u << 20)  /* one answer's WAL bytes at most ... */
#define API_CHANGES_MIN_BYTES (64u << 10) /* ... and at least, however busy */
#define API_ANSWERS_BUDGET (256u << 20)   /* all answers being sent, about */
#define API_AUTH_CACHE 8192 /* tokens remembered (slots of a hash table) */
#define API_AUTH_PROBE 16   /* slots looked at from a token's own */
#define API_ENC_SLOTS 65536      /* encoded WAL records kept */
#define API_ENC_MAX (64u << 10)  /* a record larger than this is not kept */

/* A token lookup, cached. */
#define API_TOKEN_MAX 128

typedef struct api_peer {
    char token[API_TOKEN_MAX + 1]; /* "" for an empty slot */
    int64_t fetched_ms;
    int known, disabled;
    char name[64];
    char **tables; /* NULL: every synced table */
    size_t ntables;
} api_peer;

struct api {
    api_options opt;
    sa_store *store;
    char instance[33];
    char **tables;
    size_t ntables;
    http_server *http;
    pthread_mutex_t mu;  /* pg, token cache */
    pthread_mutex_t imu; /* inbox seqs: one push decides at a time (taken before mu) */
    PGconn *pg;
    api_peer *cache; /* [API_AUTH_CACHE], by token hash */
    pthread_mutex_t wmu;       /* the waiting long polls (http.h S4) */
    struct api_wait *waiters;
    /* recent WAL records as JSON, encoded once for every edge that reads
     * them: direct-mapped by seq */
    pthread_mutex_t cmu;
    struct api_enc *enc; /* [API_ENC_SLOTS] */
    size_t answer_bytes; /* bytes of /v1/changes answers made, not yet freed (cmu) */
};

typedef struct api_enc {
    uint64_t seq; /* 0: empty */
    char *json;
    size_t len;
    int64_t commit_us; /* a transaction's last record: its PostgreSQL commit time; else 0 */
} api_enc;

/* The route label of a request path (bounded: never the raw path). */
static const char *route_name(const char *path)
{
    static const char *const known[] = {"/healthz", "/metrics", "/v1/status", "/v1/changes",
                                        "/v1/snapshot", "/v1/ops", "/v1/ops/results"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(path, known[i]) == 0)
            return known[i];
    return "other";
}

/* Count an answer in softadastra_http_requests_total{route, status}. */
static void count_req(api *a, http_req *r, int status)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *l[] = {"route", route_name(http_req_path(r)), "status", st, NULL};
    metrics_add(a->opt.metrics, "softadastra_http_requests_total", l, 1);
}

static int64_t api_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void api_options_init(api_options *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:8433";
    o->max_body = 8u << 20;
    o->inbox_cap = 256u << 20;
    o->auth_ttl_ms = 5000;
    o->changes_max_ops = 1000;
}

/* ---------------------------------------------------------------------
 * Instance id
 * ------------------------------------------------------------------- */

int api_instance_id(sa_store *store, char out[33], sa_err *err)
{
    void *v = NULL;
    size_t len = 0;
    int rc = sa_store_meta_get(store, API_META_INSTANCE, &v, &len, err);
    if (rc == 0 && len == 32) {
        memcpy(out, v, 32);
        out[32] = '\0';
        sa_free(v);
        return 0;
    }
    sa_free(v);
    if (rc != 0 && rc != SA_ENOTFOUND)
        return rc;
    uint8_t raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return sa_err_set(err, SA_ESYS, "cannot make an instance id: %s", strerror(errno));
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    sa_batch *b = NULL;
    if ((rc = sa_batch_new(&b, err)) == 0 && (rc = sa_batch_meta_put(b, API_META_INSTANCE, out, 32, err)) == 0)
        rc = sa_store_commit(store, b, NULL, err);
    sa_batch_free(b);
    return rc;
}

/* ---------------------------------------------------------------------
 * Answers
 * ------------------------------------------------------------------- */

/* Answer with j (consumed): {"instance": ..., ...j}. */
static void api_json(api *a, http_req *r, int status, json_t *j, const char *const *headers)
{
    count_req(a, r, status);
    if (j == NULL)
        j = json_object();
    json_object_set_new(j, "instance", json_string(a->instance));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL) {
        http_respond(r, 500, "text/plain", "out of memory\n", 14, NULL);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\0';
    /* one line: NDJSON readers and humans alike */
    char *line = malloc(n + 2);
    if (line == NULL) {
        free(s);
        http_respond(r, 500, "text/plain", "out of memory\n", 14, NULL);
        return;
    }
    memcpy(line, s, n);
    line[n] = '\n';
    http_respond(r, status, "application/json", line, n + 1, headers);
    free(line);
    free(s);
}

static void api_error(api *a, http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void api_error(api *a, http_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(code));
    json_object_set_new(j, "message", json_string(msg));
    api_json(a, r, status, j, NULL);
}

/* ---------------------------------------------------------------------
 * Auth
 * ------------------------------------------------------------------- */

static void peer_clear(api_peer *p)
{
    for (size_t i = 0; i < p->ntables; i++)
        sa_free(p->tables[i]);
    sa_free(p->tables);
    p->tables = NULL;
    p->ntables = 0;
}

/* The shared PostgreSQL connection, (re)connected if it is not up (a->mu
 * held): 1 when usable. */
static int api_pg(api *a)
{
    if (a->pg == NULL || PQstatus(a->pg) != CONNECTION_OK) {
        if (a->pg != NULL)
            PQfinish(a->pg);
        a->pg = PQconnectdb(a->opt.pg);
    }
    return PQstatus(a->pg) == CONNECTION_OK;
}

/* Look the token up in PostgreSQL into p (a->mu held). */
static int peer_fetch(api *a, const char *token, api_peer *p, sa_err *err)
{
    if (!api_pg(a))
        return sa_err_set(err, SA_EPG, "cannot reach PostgreSQL to check a token: %s",
                          PQerrorMessage(a->pg));
    const char *params[1] = {token};
    PGresult *res = PQexecParams(
        a->pg,
        "SELECT p.name, p.disabled, p.tables IS NULL, "
        "       ARRAY(SELECT n.nspname || '.' || c.relname FROM pg_catalog.unnest(p.tables) AS t(r) "
        "             JOIN pg_catalog.pg_class c ON c.oid = t.r "
        "             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace) "
        "FROM softadastra.peers p "
        "WHERE p.token_hash = pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8'))",
        1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = sa_err_set(err, SA_EPG, "cannot check a token: %s", PQresultErrorMessage(res));
    } else {
        peer_clear(p);
        p->known = PQntuples(res) == 1;
        p->fetched_ms = api_now_ms();
        if (p->known) {
            snprintf(p->name, sizeof p->name, "%s", PQgetvalue(res, 0, 0));
            p->disabled = PQgetvalue(res, 0, 1)[0] == 't';
            if (PQgetvalue(res, 0, 2)[0] != 't') {
                /* a text[] literal of names that need no quoting but may: parse {a,"b c"} */
                const char *s = PQgetvalue(res, 0, 3);
                size_t cap = 8;
                p->tables = sa_calloc(cap, sizeof *p->tables);
                for (const char *q = s + 1; p->tables != NULL && *q != '\0' && *q != '}';) {
                    char buf[512];
                    size_t n = 0;
                    if (*q == '"') {
                        for (q++; *q != '\0' && *q != '"'; q++) {
                            if (*q == '\\' && q[1] != '\0')
                                q++;
                            if (n + 1 < sizeof buf)
                                buf[n++] = *q;
                        }
                        if (*q == '"')
                            q++;
                    } else {
                        for (; *q != '\0' && *q != ',' && *q != '}'; q++)
                            if (n + 1 < sizeof buf)
                                buf[n++] = *q;
                    }
                    buf[n] = '\0';
                    if (*q == ',')
                        q++;
                    if (p->ntables == cap) {
                        char **t = sa_realloc(p->tables, 2 * cap * sizeof *t);
                        if (t == NULL)
                            break;
                        p->tables = t;
                        cap *= 2;
                    }
                    p->tables[p->ntables++] = sa_strdup(buf);
                }
                if (p->tables == NULL)
                    rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            }
        }
    }
    PQclear(res);
    return rc;
}

/* Do two tokens match?  Constant time over the longest possible token, so
 * the time taken says nothing about how much of a guess was right. */
static int token_eq(const char *a, const char *b)
{
    unsigned char d = 0;
    int end_a = 0, end_b = 0;
    for (size_t i = 0; i <= API_TOKEN_MAX; i++) {
        unsigned char x = end_a ? 0 : (unsigned char)a[i], y = end_b ? 0 : (unsigned char)b[i];
        d |= x ^ y;
        end_a |= x == 0;
        end_b |= y == 0;
    }
    return d == 0 && a[0] != '\0';
}

/* The peer a token belongs to: 0 and *out (a copy of the name and its
 * tables, free with peer_clear), or an HTTP status answered already. */
static int api_auth(api *a, http_req *r, api_peer *out)
{
    const char *token = http_req_bearer(r);
    memset(out, 0, sizeof *out);
    if (token == NULL || token[0] == '\0') {
        api_error(a, r, 401, "unauthorized", "missing Authorization: Bearer token");
        return 401;
    }
    if (strlen(token) > API_TOKEN_MAX) {
        api_error(a, r, 401, "unauthorized", "unknown token");
        return 401;
    }
    pthread_mutex_lock(&a->mu);
    api_peer *p = NULL;
    /* the token's slots: its hash's, and the next few (FNV-1a; which slot a
     * token lands in says nothing about valid tokens) */
    uint64_t h = 1469598103934665603ull;
    for (const char *c = token; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    size_t home = (size_t)(h % API_AUTH_CACHE), empty = SIZE_MAX;
    for (size_t k = 0; k < API_AUTH_PROBE; k++) {
        api_peer *e = &a->cache[(home + k) % API_AUTH_CACHE];
        if (p == NULL && token_eq(e->token, token))
            p = e;
        if (empty == SIZE_MAX && e->token[0] == '\0')
            empty = (home + k) % API_AUTH_CACHE;
    }
    int64_t now = api_now_ms();
    sa_err err = {0};
    int rc = 0;
    if (p == NULL || now - p->fetched_ms > a->opt.auth_ttl_ms) {
        if (p == NULL) {
            /* an empty slot of its run, else the home slot is reused */
            p = &a->cache[empty != SIZE_MAX ? empty : home];
            peer_clear(p);
            memset(p, 0, sizeof *p);
            snprintf(p->token, sizeof p->token, "%s", token);
            p->fetched_ms = -1;
        }
        rc = peer_fetch(a, token, p, &err);
        if (rc != 0 && p->fetched_ms < 0)
            p->token[0] = '\0'; /* never looked up: forget it */
    }
    int status = 0;
    char name[64];
    snprintf(name, sizeof name, "%s", p->name);
    if (rc != 0 && (p->fetched_ms < 0 || now - p->fetched_ms > 10 * a->opt.auth_ttl_ms))
        status = 503;
    else if (!p->known)
        status = 401;
    else if (p->disabled)
        status = 403;
    else {
        snprintf(out->name, sizeof out->name, "%s", p->name);
        if (p->tables != NULL) {
            out->tables = sa_calloc(p->ntables + 1, sizeof *out->tables);
            for (size_t i = 0; out->tables != NULL && i < p->ntables; i++)
                out->tables[out->ntables++] = sa_strdup(p->tables[i]);
            if (out->tables == NULL)
                status = 503;
        }
    }
    pthread_mutex_unlock(&a->mu);
    if (status == 503)
        api_error(a, r, 503, "unavailable", "cannot check the token now: %s",
                  err.msg[0] ? err.msg : "out of memory");
    else if (status == 401)
        api_error(a, r, 401, "unauthorized", "unknown token");
    else if (status == 403)
        api_error(a, r, 403, "forbidden", "peer \"%s\" is disabled", name);
    return status;
}

/* May peer see / write table? */
static int peer_allows(const api *a, const api_peer *p, const char *table)
{
    int synced = 0;
    for (size_t i = 0; i < a->ntables && !synced; i++)
        synced = strcmp(a->tables[i], table) == 0;
    if (!synced)
        return 0;
    if (p->tables == NULL)
        return 1;
    for (size_t i = 0; i < p->ntables; i++)
        if (strcmp(p->tables[i], table) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------------
 * Query parameters
 * ------------------------------------------------------------------- */

/* An unsigned decimal parameter; def when absent.  -1 and an answer sent
 * when malformed or above max. */
static int param_u64(api *a, http_req *r, const char *name, uint64_t def, uint64_t max,
                     int required, uint64_t *out)
{
    const char *s = http_req_query(r, name);
    if (s == NULL) {
        if (required) {
            api_error(a, r, 400, "bad_request", "query parameter \"%s\" is required", name);
            return -1;
        }
        *out = def;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v > max) {
        api_error(a, r, 400, "bad_request", "query parameter \"%s\" must be an integer in 0..%" PRIu64,
                  name, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------------
 * /v1/changes
 * ------------------------------------------------------------------- */

typedef struct api_wait {
    api *a;
    http_req *req;
    api_peer peer;
    uint64_t after;
    uint64_t limit;
    int64_t deadline_ms, last_beat_ms;
    char *body; /* the answer, once made */
    size_t len, off;
    struct api_wait *next, *prev; /* in a->waiters until its stream ends */
} api_wait;

typedef struct changes_ctx {
    api *a;
    const api_peer *peer;
    sa_buf *out; /* the ops, comma separated */
    size_t nops;
    uint64_t last;
    int err;
} changes_ctx;

/* Append record rec's JSON to cx->out: from the cache, or encoded (and
 * kept) now. */
static int changes_cb(const sa_wal_rec *rec, void *vctx)
{
    changes_ctx *cx = vctx;
    api *a = cx->a;
    cx->last = rec->seq;
    if (!peer_allows(a, cx->peer, rec->op->table))
        return 0; /* not this peer's: skipped, the cursor moves past it */
    if (cx->nops++ > 0 && sa_buf_put_u8(cx->out, ',') != 0)
        goto oom;
    api_enc *e = &a->enc[rec->seq % API_ENC_SLOTS];
    pthread_mutex_lock(&a->cmu);
    if (e->seq == rec->seq) {
        int rc = sa_buf_put(cx->out, e->json, e->len);
        pthread_mutex_unlock(&a->cmu);
        if (rc != 0)
            goto oom;
        return 0;
    }
    pthread_mutex_unlock(&a->cmu);
    json_t *j = NULL;
    sa_err err;
    if (sa_op_to_json(rec->op, &j, &err) != 0)
        goto oom;
    if (strcmp(rec->op->origin, "pg") != 0) /* an edge's op, applied in PostgreSQL */
        json_object_set_new(j, "origin_seq", json_integer((json_int_t)rec->op->seq));
    json_object_set_new(j, "seq", json_integer((json_int_t)rec->seq));
    if (rec->group_end)
        json_object_set_new(j, "txn_end", json_true());
    char *d = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (d == NULL)
        goto oom;
    size_t n = strlen(d);
    int rc = sa_buf_put(cx->out, d, n);
    if (rc == 0 && n <= API_ENC_MAX) {
        pthread_mutex_lock(&a->cmu);
        free(e->json);
        e->json = d;
        e->len = n;
        e->seq = rec->seq;
        e->commit_us = rec->group_end ? rec->op->pg_commit_time : 0;
        pthread_mutex_unlock(&a->cmu);
        d = NULL;
    }
    free(d);
    if (rc != 0)
        goto oom;
    return 0;
oom:
    cx->err = 1;
    return 1;
}

/* Append the bytes of text s (no length prefix, no NUL). */
static int put_text(sa_buf *b, const char *s) { return sa_buf_put(b, s, strlen(s)); }

/* Make the answer of w from the WAL as it is now: 1 made, 0 nothing yet
 * (and the wait not over), -1 failed (w->body holds an error answer). */
static int changes_make(api_wait *w, int final)
{
    api *a = w->a;
    sa_err err = {0};
    sa_wal_info wi;
    if (sa_wal_info_get(a->store, &wi, &err) != 0)
        return -1;
    uint64_t head = wi.durable_seq < wi.last_seq ? wi.durable_seq : wi.last_seq;
    if (head <= w->after && !final)
        return 0;
    sa_buf ops;
    sa_buf_init(&ops);
    changes_ctx cx = {.a = a, .peer = &w->peer, .out = &ops, .last = w->after};
    uint64_t next = w->after + 1;
    /* memory stays bounded however many edges are woken at once: answers
     * shrink (down to API_CHANGES_MIN_BYTES) as their total grows */
    pthread_mutex_lock(&a->cmu);
    size_t room = a->answer_bytes < API_ANSWERS_BUDGET ? API_ANSWERS_BUDGET - a->answer_bytes : 0;
    pthread_mutex_unlock(&a->cmu);
    size_t max_bytes = room > API_CHANGES_MAX_BYTES ? API_CHANGES_MAX_BYTES
                       : room < API_CHANGES_MIN_BYTES ? API_CHANGES_MIN_BYTES
                                                      : room;
    int rc = head > w->after ? sa_wal_read(a->store, w->after + 1, (size_t)w->limit, max_bytes, 1,
                                           changes_cb, &cx, &next, &err)
                             : 0;
    sa_buf body;
    sa_buf_init(&body);
    char tail[128];
    int ok;
    if (rc == SA_ERANGE) {
        /* truncated while this poll waited (the cap, or the peer counted as
         * gone): the status is sent already, so the body says it */
        ok = put_text(&body, "{\"instance\":\"") == 0 && put_text(&body, a->instance) == 0 &&
             put_text(&body, "\",\"error\":\"must_resnapshot\",\"message\":"
                                   "\"the WAL after the cursor was truncated\"}\n") == 0;
    } else if (rc != 0 || cx.err) {
        ok = 0;
    } else {
        /* peer names are [A-Za-z0-9_.-] and instances hex: no escaping */
        int n = snprintf(tail, sizeof tail, "],\"next\":%" PRIu64 ",\"head\":%" PRIu64 "}\n", cx.last,
                         head);
        ok = put_text(&body, "{\"instance\":\"") == 0 && put_text(&body, a->instance) == 0 &&
             put_text(&body, "\",\"peer\":\"") == 0 && put_text(&body, w->peer.name) == 0 &&
             put_text(&body, "\",\"ops\":[") == 0 && sa_buf_put(&body, ops.data, ops.len) == 0 &&
             sa_buf_put(&body, tail, (size_t)n) == 0;
    }
    sa_buf_free(&ops);
    if (!ok || (w->body = malloc(body.len > 0 ? body.len : 1)) == NULL) {
        sa_buf_free(&body);
        return -1;
    }
    memcpy(w->body, body.data, body.len);
    w->len = body.len;
    sa_buf_free(&body);
    pthread_mutex_lock(&a->cmu);
    a->answer_bytes += w->len;
    pthread_mutex_unlock(&a->cmu);
    return 1;
}

static void wait_free(void *vw)
{
    api_wait *w = vw;
    api *a = w->a;
    pthread_mutex_lock(&a->wmu);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        a->waiters = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&a->wmu);
    if (w->body != NULL) {
        pthread_mutex_lock(&a->cmu);
        a->answer_bytes -= w->len;
        pthread_mutex_unlock(&a->cmu);
    }
    peer_clear(&w->peer);
    free(w->body);
    sa_free(w);
}

static ssize_t changes_produce(void *vw, char *buf, size_t max)
{
    api_wait *w = vw;
    if (w->body == NULL) {
        int64_t now = api_now_ms();
        int rc = changes_make(w, now >= w->deadline_ms);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            if (now - w->last_beat_ms >= API_HEARTBEAT_MS) {
                w->last_beat_ms = now;
                buf[0] = '\n'; /* whitespace before the JSON: keeps proxies patient */
                return 1;
            }
            return HTTP_STREAM_WAIT;
        }
    }
    if (w->off >= w->len)
        return 0;
    size_t n = w->len - w->off < max ? w->len - w->off : max;
    memcpy(buf, w->body + w->off, n);
    w->off += n;
    return (ssize_t)n;
}

/* softadastra_peer_converge_seconds: the transactions in (from, to] that
 * this peer has now acknowledged, from their commit times kept with the
 * encoded records (a range too long to walk, or records no longer
 * cached, are not counted). */
static void observe_converged(api *a, const char *peer, uint64_t from, uint64_t to)
{
    if (a->opt.metrics == NULL || to - from > 4096)
        return;
    int64_t commits[256];
    size_t n = 0;
    pthread_mutex_lock(&a->cmu);
    for (uint64_t s = from + 1; s <= to && n < 256; s++) {
        const api_enc *e = &a->enc[s % API_ENC_SLOTS];
        if (e->seq == s && e->commit_us > 0)
            commits[n++] = e->commit_us;
    }
    pthread_mutex_unlock(&a->cmu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    const char *l[] = {"peer", peer, NULL};
    for (size_t i = 0; i < n; i++)
        metrics_observe(a->opt.metrics, "softadastra_peer_converge_seconds", l,
                        now - (double)commits[i] / 1e6);
}

static void route_changes(api *a, http_req *r, api_peer *peer)
{
    uint64_t after, limit, wait;
    if (param_u64(a, r, "after", 0, UINT64_MAX - 1, 1, &after) != 0 ||
        param_u64(a, r, "limit", (uint64_t)a->opt.changes_max_ops, 100000, 0, &limit) != 0 ||
        param_u64(a, r, "wait", 0, API_MAX_WAIT_S, 0, &wait) != 0) {
        peer_clear(peer);
        return;
    }
    if (limit == 0)
        limit = 1;
    const char *inst = http_req_query(r, "instance");
    sa_err err = {0};
    sa_wal_info wi;
    if (sa_wal_info_get(a->store, &wi, &err) != 0) {
        api_error(a, r, 500, "internal", "%s", err.msg);
        peer_clear(peer);
        return;
    }
    void *rv = NULL;
    size_t rl = 0;
    uint64_t resync = 0;
    if (sa_store_meta_get(a->store, "ingest.resync_seq", &rv, &rl, &err) == 0 && rl > 0 && rl < 32) {
        char tmp[32];
        memcpy(tmp, rv, rl);
        tmp[rl] = '\0';
        resync = strtoull(tmp, NULL, 10);
    }
    sa_free(rv);
    const char *why = NULL;
    if (inst != NULL && strcmp(inst, a->instance) != 0)
        why = "the cursor belongs to another bridge instance";
    else if (after + 1 < wi.first_seq)
        why = "the cursor is below the retained WAL";
    else if (after > wi.last_seq)
        why = "the cursor is ahead of this bridge's WAL";
    else if (after > 0 && after < resync)
        why = "the WAL was resynced after the cursor";
    if (why != NULL) {
        json_t *j = json_object();
        json_object_set_new(j, "error", json_string("must_resnapshot"));
        json_object_set_new(j, "message", json_string(why));
        json_object_set_new(j, "first", json_integer((json_int_t)wi.first_seq));
        json_object_set_new(j, "head", json_integer((json_int_t)wi.last_seq));
        api_json(a, r, 409, j, NULL);
        peer_clear(peer);
        return;
    }
    /* the peer holds everything up to after: record it durably */
    sa_cursor prev;
    int had = sa_cursor_get(a->store, peer->name, &prev, &err) == 0;
    sa_batch *b = NULL;
    int rc = sa_batch_new(&b, &err);
    if (rc == 0)
        rc = sa_batch_cursor_ack(b, peer->name, after, &err);
    if (rc == 0) { /* when the peer was last seen: WAL retention counts from it */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        rc = sa_batch_cursor_attempt(b, peer->name, 1, NULL, now, 0, &err);
    }
    if (rc == 0)
        rc = sa_store_commit(a->store, b, NULL, &err);
    sa_batch_free(b);
    if (rc != 0) {
        api_error(a, r, 503, "unavailable", "cannot record the cursor: %s", err.msg);
        peer_clear(peer);
        return;
    }
    const char *lp[] = {"peer", peer->name, NULL};
    metrics_add(a->opt.metrics, "softadastra_peer_pulls_total", lp, 1);
    if (had && prev.acked > 0 && after > prev.acked)
        observe_converged(a, peer->name, prev.acked, after);
    count_req(a, r, 200);
    api_wait *w = sa_calloc(1, sizeof *w);
    if (w == NULL) {
        api_error(a, r, 503, "unavailable", "out of memory");
        peer_clear(peer);
        return;
    }
    w->a = a;
    w->req = r;
    w->peer = *peer; /* takes the tables */
    w->after = after;
    w->limit = limit;
    w->last_beat_ms = api_now_ms();
    w->deadline_ms = w->last_beat_ms + (int64_t)wait * 1000;
    /* woken by api_wal_advanced when new WAL is durable; meanwhile it looks
     * every API_POLL_MS (deadline, heartbeat) and holds no thread */
    pthread_mutex_lock(&a->wmu);
    w->next = a->waiters;
    if (a->waiters != NULL)
        a->waiters->prev = w;
    a->waiters = w;
    pthread_mutex_unlock(&a->wmu); /* a wake before the stream starts is harmless (S2) */
    http_respond_stream(r, 200, "application/json", changes_produce, w, wait_free, API_POLL_MS);
}

void api_wal_advanced(api *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->wmu);
    for (api_wait *w = a->waiters; w != NULL; w = w->next)
        http_stream_wake(w->req);
    pthread_mutex_unlock(&a->wmu);
}

/* ---------------------------------------------------------------------
 * /v1/snapshot
 * ------------------------------------------------------------------- */

typedef struct snap_ctx {
    api *a;
    api_peer peer;
    sa_snapshot *snap;
    sa_state_iter *it;
    size_t table; /* index into a->tables */
    int phase;    /* 0 begin, 1 rows, 2 end, 3 done */
    char *line;   /* the current line, being sent */
    size_t len, off;
} snap_ctx;

static void snap_free(void *v)
{
    snap_ctx *s = v;
    sa_state_iter_close(s->it);
    sa_snapshot_close(s->snap);
    peer_clear(&s->peer);
    free(s->line);
    sa_free(s);
}

static int snap_set_line(snap_ctx *s, json_t *j)
{
    char *d = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (d == NULL)
        return -1;
    size_t n = strlen(d);
    free(s->line);
    s->line = malloc(n + 1);
    if (s->line == NULL) {
        free(d);
        return -1;
    }
    memcpy(s->line, d, n);
    s->line[n] = '\n';
    s->len = n + 1;
    s->off = 0;
    free(d);
    return 0;
}

/*
 * {"key": [column...], "types": {column: type oid}} of table ("schema.name"
 * raw) from PostgreSQL's catalog: the primary key's columns in key order,
 * every column when there is none (REPLICA IDENTITY FULL).  NULL when
 * PostgreSQL cannot answer now (the edge then learns it from rows).
 */
static json_t *table_schema(api *a, const char *table)
{
    const char *dot = strchr(table, '.');
    if (dot == NULL)
        return NULL;
    char nsp[256];
    snprintf(nsp, sizeof nsp, "%.*s", (int)(dot - table), table);
    const char *params[2] = {nsp, dot + 1};
    json_t *out = NULL;
    pthread_mutex_lock(&a->mu);
    if (api_pg(a)) {
        PGresult *r = PQexecParams(
            a->pg,
            "SELECT a.attname, a.atttypid, "
            "       pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum) "
            "FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
            "     AND NOT a.attisdropped "
            "LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary "
            "WHERE n.nspname = $1 AND c.relname = $2 ORDER BY 3 NULLS LAST, a.attnum",
            2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
            json_t *key = json_array(), *types = json_object();
            int has_pk = !PQgetisnull(r, 0, 2);
            for (int i = 0; i < PQntuples(r); i++) {
                const char *col = PQgetvalue(r, i, 0);
                json_object_set_new(types, col, json_integer(strtoll(PQgetvalue(r, i, 1), NULL, 10)));
                if (!has_pk || !PQgetisnull(r, i, 2))
                    json_array_append_new(key, json_string(col));
            }
            out = json_pack("{s:o,s:o}", "key", key, "types", types);
        }
        PQclear(r);
    }
    pthread_mutex_unlock(&a->mu);
    return out;
}

/* The next line into s->line: 1, 0 at the end, -1 on error. */
static int snap_next_line(snap_ctx *s)
{
    api *a = s->a;
    sa_err err;
    if (s->phase == 0) {
        json_t *j = json_object(), *t = json_array();
        json_object_set_new(j, "type", json_string("begin"));
        json_object_set_new(j, "instance", json_string(a->instance));
        json_object_set_new(j, "peer", json_string(s->peer.name));
        json_object_set_new(j, "seq", json_integer((json_int_t)sa_snapshot_seq(s->snap)));
        json_t *schemas = json_object();
        for (size_t i = 0; i < a->ntables; i++)
            if (peer_allows(a, &s->peer, a->tables[i])) {
                json_array_append_new(t, json_string(a->tables[i]));
                json_t *sc = table_schema(a, a->tables[i]);
                if (sc != NULL)
                    json_object_set_new(schemas, a->tables[i], sc);
            }
        json_object_set_new(j, "tables", t);
        json_object_set_new(j, "schemas", schemas);
        s->phase = 1;
        return snap_set_line(s, j) == 0 ? 1 : -1;
    }
    while (s->phase == 1) {
        if (s->it == NULL) {
            while (s->table < a->ntables && !peer_allows(a, &s->peer, a->tables[s->table]))
                s->table++;
            if (s->table >= a->ntables) {
                s->phase = 2;
                break;
            }
            if (sa_state_iter_open(s->snap, a->tables[s->table], &s->it, &err) != 0)
                return -1;
        }
        const sa_row *row;
        int rc = sa_state_iter_next(s->it, &row, &err);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            sa_state_iter_close(s->it);
            s->it = NULL;
            s->table++;
            continue;
        }
        sa_op op;
        memset(&op, 0, sizeof op);
        op.origin = row->origin != NULL && row->origin[0] ? row->origin : "pg";
        op.seq = row->seq;
        op.hlc = row->hlc;
        op.kind = SA_OP_INSERT;
        op.table = row->table;
        op.key = row->key;
        op.nkey = row->nkey;
        op.cols = row->cols;
        op.ncols = row->ncols;
        json_t *j = NULL;
        if (sa_op_to_json(&op, &j, &err) != 0)
            return -1;
        json_object_set_new(j, "type", json_string("row"));
        json_object_del(j, "kind");
        return snap_set_line(s, j) == 0 ? 1 : -1;
    }
    if (s->phase == 2) {
        json_t *j = json_object();
        json_object_set_new(j, "type", json_string("end"));
        json_object_set_new(j, "seq", json_integer((json_int_t)sa_snapshot_seq(s->snap)));
        s->phase = 3;
        return snap_set_line(s, j) == 0 ? 1 : -1;
    }
    return 0;
}

static ssize_t snap_produce(void *v, char *buf, size_t max)
{
    snap_ctx *s = v;
    if (s->off >= s->len) {
        int rc = snap_next_line(s);
        if (rc <= 0)
            return rc; /* 0: end, -1: error (the connection is cut: the edge retries) */
    }
    size_t n = s->len - s->off < max ? s->len - s->off : max;
    memcpy(buf, s->line + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void route_snapshot(api *a, http_req *r, api_peer *peer)
{
    snap_ctx *s = sa_calloc(1, sizeof *s);
    sa_err err = {0};
    if (s == NULL || sa_snapshot_open(a->store, &s->snap, &err) != 0) {
        api_error(a, r, 503, "unavailable", "cannot open a snapshot: %s",
                  s == NULL ? "out of memory" : err.msg);
        sa_free(s);
        peer_clear(peer);
        return;
    }
    s->a = a;
    s->peer = *peer;
    count_req(a, r, 200);
    http_respond_stream(r, 200, "application/x-ndjson", snap_produce, s, snap_free, 0);
}

/* ---------------------------------------------------------------------
 * /v1/ops
 * ------------------------------------------------------------------- */

static uint64_t inbox_hi(api *a, const char *origin)
{
    char key[128];
    snprintf(key, sizeof key, API_META_INBOX_HI "%s", origin);
    void *v = NULL;
    size_t len = 0;
    sa_err err;
    uint64_t hi = 0;
    if (sa_store_meta_get(a->store, key, &v, &len, &err) == 0 && len > 0 && len < 32) {
        char tmp[32];
        memcpy(tmp, v, len);
        tmp[len] = '\0';
        hi = strtoull(tmp, NULL, 10);
    }
    sa_free(v);
    return hi;
}

/* PostgreSQL's applied watermark of (peer, epoch): 0 and *out (0 when
 * never seen), or non-zero when it cannot be read (no extension, down).
 * a->mu held (and a->imu, taken first). */
static int pg_applied_seq(api *a, const char *peer, uint64_t epoch, uint64_t *out)
{
    *out = 0;
    if (a->pg == NULL || PQstatus(a->pg) != CONNECTION_OK)
        return -1;
    char e[24];
    snprintf(e, sizeof e, "%" PRIu64, epoch);
    const char *params[2] = {peer, e};
    PGresult *res = PQexecParams(a->pg,
                                 "SELECT applied_seq FROM softadastra.peer_progress "
                                 "WHERE peer = $1 AND epoch = $2::bigint",
                                 2, NULL, params, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_TUPLES_OK ? 0 : -1;
    if (rc == 0 && PQntuples(res) == 1)
        *out = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return rc;
}

static void route_ops(api *a, http_req *r, api_peer *peer)
{
    size_t len = 0;
    const void *body = http_req_body(r, &len);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    sa_op **ops = NULL;
    size_t nops = 0;
    sa_batch *b = NULL;
    sa_err err = {0};
    if (root == NULL) {
        api_error(a, r, 400, "bad_request", "malformed JSON at line %d column %d: %s", je.line,
                  je.column, je.text);
        goto done;
    }
    json_t *je_epoch = json_object_get(root, "epoch"), *jops = json_object_get(root, "ops");
    if (!json_is_object(root) || !json_is_integer(je_epoch) || json_integer_value(je_epoch) < 0 ||
        !json_is_array(jops)) {
        api_error(a, r, 400, "bad_request",
                  "the body must be {\"epoch\": integer >= 0, \"ops\": [op, ...]}");
        goto done;
    }
    uint64_t epoch = (uint64_t)json_integer_value(je_epoch);
    char origin[96];
    snprintf(origin, sizeof origin, "%s@%" PRIu64, peer->name, epoch);
    nops = json_array_size(jops);
    ops = sa_calloc(nops + 1, sizeof *ops);
    if (ops == NULL) {
        api_error(a, r, 503, "unavailable", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nops; i++) {
        if (sa_op_from_json(json_array_get(jops, i), &ops[i], &err) != 0) {
            api_error(a, r, 400, "bad_request", "op %zu: %s", i, err.msg);
            goto done;
        }
        const sa_op *op = ops[i];
        if (strcmp(op->origin, peer->name) != 0 || op->epoch != epoch) {
            api_error(a, r, 400, "bad_request", "op %zu: origin \"%s\" epoch %" PRIu64
                      " is not this peer's (\"%s\", epoch %" PRIu64 ")", i, op->origin, op->epoch,
                      peer->name, epoch);
            goto done;
        }
        if (op->kind == SA_OP_TRUNCATE || !peer_allows(a, peer, op->table)) {
            api_error(a, r, 403, "forbidden", "op %zu: peer \"%s\" may not %s table \"%s\"", i,
                      peer->name, op->kind == SA_OP_TRUNCATE ? "truncate" : "write", op->table);
            goto done;
        }
    }
    uint64_t count = 0, bytes = 0;
    if (sa_inbox_stats(a->store, &count, &bytes, &err) == 0 && bytes > a->opt.inbox_cap) {
        static const char *const hdr[] = {"Retry-After", "5", NULL};
        json_t *j = json_object();
        json_object_set_new(j, "error", json_string("inbox_full"));
        json_object_set_new(j, "message", json_string("the bridge's inbox is full; retry later"));
        const char *lf[] = {"peer", peer->name, NULL};
        metrics_add(a->opt.metrics, "softadastra_peer_retries_total", lf, 1);
        api_json(a, r, 503, j, hdr);
        goto done;
    }
    /* one push at a time decides the seqs (imu); token checks (mu) never
     * wait behind its synced write */
    pthread_mutex_lock(&a->imu);
    uint64_t hi = inbox_hi(a, origin);
    if (hi == 0) {
        /* nothing accepted here yet for this origin: a new bridge instance
         * (data directory) starts where PostgreSQL's watermark is, so an
         * edge's ops applied through an earlier one stay duplicates */
        uint64_t applied = 0;
        pthread_mutex_lock(&a->mu);
        if (pg_applied_seq(a, peer->name, epoch, &applied) == 0)
            hi = applied;
        pthread_mutex_unlock(&a->mu);
    }
    uint64_t start = hi;
    const char *lp[] = {"peer", peer->name, NULL};
    if (nops > 0 && ops[0]->seq <= hi) /* re-sent: the peer missed our answer */
        metrics_add(a->opt.metrics, "softadastra_peer_retries_total", lp, 1);
    int rc = sa_batch_new(&b, &err);
    for (size_t i = 0; rc == 0 && i < nops; i++) {
        if (ops[i]->seq <= hi)
            continue; /* accepted before */
        if (ops[i]->seq != hi + 1) {
            pthread_mutex_unlock(&a->imu);
            json_t *j = json_object();
            json_object_set_new(j, "error", json_string("gap"));
            json_object_set_new(j, "message", json_string("ops must follow each other without a gap"));
            json_object_set_new(j, "expected", json_integer((json_int_t)(start + 1)));
            json_object_set_new(j, "accepted", json_integer((json_int_t)start));
            metrics_add(a->opt.metrics, "softadastra_peer_retries_total", lp, 1);
            api_json(a, r, 409, j, NULL);
            goto done;
        }
        rc = sa_batch_inbox_put(b, origin, ops[i], &err);
        hi = ops[i]->seq;
    }
    if (rc == 0 && hi != start) {
        char key[128], val[32];
        snprintf(key, sizeof key, API_META_INBOX_HI "%s", origin);
        int n = snprintf(val, sizeof val, "%" PRIu64, hi);
        if ((rc = sa_batch_meta_put(b, key, val, (size_t)n, &err)) == 0)
            rc = sa_store_commit(a->store, b, NULL, &err); /* durable before the answer */
    }
    pthread_mutex_unlock(&a->imu);
    if (rc != 0) {
        api_error(a, r, 503, "unavailable", "cannot store the ops: %s", err.msg);
        goto done;
    }
    if (hi != start && a->opt.on_ops != NULL)
        a->opt.on_ops(a->opt.on_ops_ctx);
    metrics_add(a->opt.metrics, "softadastra_peer_pushes_total", lp, 1);
    metrics_add(a->opt.metrics, "softadastra_peer_pushed_ops_total", lp, (double)(hi - start));
    json_t *j = json_object();
    json_object_set_new(j, "accepted", json_integer((json_int_t)hi));
    json_object_set_new(j, "peer", json_string(peer->name));
    api_json(a, r, 200, j, NULL);
done:
    for (size_t i = 0; ops != NULL && i < nops; i++)
        sa_op_free(ops[i]);
    sa_free(ops);
    sa_batch_free(b);
    json_decref(root);
    peer_clear(peer);
}

/* ---------------------------------------------------------------------
 * /v1/ops/results
 * ------------------------------------------------------------------- */

typedef struct results_ctx {
    json_t *arr;
    size_t max;
} results_ctx;

static int results_cb(const char *key, const void *val, size_t len, void *vctx)
{
    (void)key;
    results_ctx *cx = vctx;
    json_t *j = json_loadb(val, len, 0, NULL);
    if (j != NULL)
        json_array_append_new(cx->arr, j);
    return json_array_size(cx->arr) >= cx->max;
}

/* GET /v1/ops/results?epoch=E&conflicts=ID,ID,...: the current resolution
 * of these conflicts of the peer's ops (a DBA may have resolved them since
 * their outcome was recorded), from PostgreSQL. */
#define API_CONFLICT_IDS_MAX 100
static void conflicts_now(api *a, http_req *r, api_peer *peer, uint64_t epoch, const char *ids)
{
    size_t n = 0, len = strlen(ids);
    int ok = len > 0 && len < 24 * API_CONFLICT_IDS_MAX && ids[0] != ',' && ids[len - 1] != ',';
    for (size_t i = 0; ok && i < len; i++) {
        if (ids[i] == ',')
            ok = ids[i + 1] != ',';
        else
            ok = ids[i] >= '0' && ids[i] <= '9';
        n += ids[i] == ',';
    }
    if (!ok || n + 1 > API_CONFLICT_IDS_MAX) {
        api_error(a, r, 400, "bad_request",
                  "conflicts must be 1 to %d conflict ids separated by commas",
                  API_CONFLICT_IDS_MAX);
        peer_clear(peer);
        return;
    }
    char e[24], *arr = sa_malloc(len + 3);
    if (arr == NULL) {
        api_error(a, r, 503, "unavailable", "out of memory");
        peer_clear(peer);
        return;
    }
    snprintf(e, sizeof e, "%" PRIu64, epoch);
    snprintf(arr, len + 3, "{%s}", ids);
    const char *params[3] = {peer->name, e, arr};
    json_t *list = json_array();
    int failed = 0;
    pthread_mutex_lock(&a->mu);
    PGresult *res = api_pg(a)
                        ? PQexecParams(a->pg,
                                       "SELECT id, resolution FROM softadastra.conflicts "
                                       "WHERE origin = $1 AND epoch = $2::bigint "
                                       "AND id = ANY ($3::bigint[]) ORDER BY id",
                                       3, NULL, params, NULL, NULL, 0)
                        : NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        failed = 1;
    for (int i = 0; !failed && i < PQntuples(res); i++) {
        json_t *o = json_object();
        json_object_set_new(o, "conflict_id", json_integer(atoll(PQgetvalue(res, i, 0))));
        json_object_set_new(o, "resolution", json_string(PQgetvalue(res, i, 1)));
        json_array_append_new(list, o);
    }
    PQclear(res);
    pthread_mutex_unlock(&a->mu);
    sa_free(arr);
    if (failed) {
        json_decref(list);
        api_error(a, r, 503, "unavailable", "cannot read the conflicts from PostgreSQL");
        peer_clear(peer);
        return;
    }
    json_t *j = json_object();
    json_object_set_new(j, "peer", json_string(peer->name));
    json_object_set_new(j, "conflicts", list);
    api_json(a, r, 200, j, NULL);
    peer_clear(peer);
}

static void route_results(api *a, http_req *r, api_peer *peer)
{
    uint64_t epoch, after, limit;
    if (param_u64(a, r, "epoch", 0, INT64_MAX, 1, &epoch) != 0 ||
        param_u64(a, r, "after", 0, INT64_MAX, 0, &after) != 0 ||
        param_u64(a, r, "limit", 1000, 10000, 0, &limit) != 0) {
        peer_clear(peer);
        return;
    }
    const char *ids = http_req_query(r, "conflicts");
    if (ids != NULL) {
        conflicts_now(a, r, peer, epoch, ids);
        return;
    }
    char origin[96], prefix[160], from[32];
    snprintf(origin, sizeof origin, "%s@%" PRIu64, peer->name, epoch);
    snprintf(prefix, sizeof prefix, APPLIER_RESULT_PREFIX "%s.", origin);
    snprintf(from, sizeof from, "%020" PRIu64, after);
    results_ctx cx = {json_array(), limit > 0 ? (size_t)limit : 1};
    sa_err err = {0};
    uint64_t applied = 0;
    if (sa_store_meta_scan(a->store, prefix, from, results_cb, &cx, &err) != 0 ||
        sa_watermark_get(a->store, origin, &applied, &err) != 0) {
        json_decref(cx.arr);
        api_error(a, r, 503, "unavailable", "cannot read the results: %s", err.msg);
        peer_clear(peer);
        return;
    }
    /* the highest op seq a transaction in the WAL applied, then the WAL
     * head read after it: once the edge's cursor reaches that head its
     * replica holds the result of every op up to that seq (ingest writes
     * the first with the transaction, so the order of the reads matters) */
    char ckey[160];
    void *cv = NULL;
    size_t cl = 0;
    uint64_t confirmed = 0;
    snprintf(ckey, sizeof ckey, INGEST_META_CONFIRM "%s", origin);
    if (sa_store_meta_get(a->store, ckey, &cv, &cl, &err) == 0 && cl > 0 && cl < 24) {
        char tmp[24];
        memcpy(tmp, cv, cl);
        tmp[cl] = '\0';
        confirmed = strtoull(tmp, NULL, 10);
    }
    sa_free(cv);
    sa_wal_info wi;
    uint64_t head = 0, confirmed_at = 0;
    if (sa_wal_info_get(a->store, &wi, &err) == 0)
        head = wi.durable_seq < wi.last_seq ? wi.durable_seq : wi.last_seq;
    if (confirmed > 0)
        confirmed_at = head;
    json_t *j = json_object();
    json_object_set_new(j, "peer", json_string(peer->name));
    json_object_set_new(j, "results", cx.arr);
    json_object_set_new(j, "applied", json_integer((json_int_t)applied));
    json_object_set_new(j, "head", json_integer((json_int_t)head));
    if (confirmed_at > 0) {
        json_object_set_new(j, "confirmed", json_integer((json_int_t)confirmed));
        json_object_set_new(j, "confirmed_at", json_integer((json_int_t)confirmed_at));
    }
    json_object_set_new(j, "accepted", json_integer((json_int_t)inbox_hi(a, origin)));
    api_json(a, r, 200, j, NULL);
    peer_clear(peer);
}

/* ---------------------------------------------------------------------
 * /metrics (Prometheus text format 0.0.4), /healthz, /v1/status
 * ------------------------------------------------------------------- */

typedef struct peer_row {
    char name[64];
    sa_cursor c;
} peer_row;

typedef struct peer_list {
    peer_row *rows;
    size_t n, cap;
    int oom;
} peer_list;

static int collect_peer(const char *peer, const sa_cursor *c, void *vctx)
{
    peer_list *l = vctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        peer_row *p = realloc(l->rows, cap * sizeof *p);
        if (p == NULL) {
            l->oom = 1;
            return 1;
        }
        l->rows = p;
        l->cap = cap;
    }
    snprintf(l->rows[l->n].name, sizeof l->rows[l->n].name, "%s", peer);
    l->rows[l->n++].c = *c;
    return 0;
}

/* What every status view shows, gathered once. */
typedef struct api_view {
    sa_wal_info wi;
    int wal_ok;
    char wal_err[256];
    uint64_t inbox_ops, inbox_bytes;
    peer_list peers;
    uint64_t now_ms;
    int state[METRICS_NPARTS];
    char reason[METRICS_NPARTS][256];
    int healthy;
} api_view;

static void view_get(api *a, api_view *v)
{
    memset(v, 0, sizeof *v);
    sa_err err = {0};
    v->wal_ok = sa_wal_info_get(a->store, &v->wi, &err) == 0;
    if (!v->wal_ok)
        snprintf(v->wal_err, sizeof v->wal_err, "%.255s", err.msg);
    sa_inbox_stats(a->store, &v->inbox_ops, &v->inbox_bytes, &err);
    sa_cursor_foreach(a->store, collect_peer, &v->peers, &err);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v->now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    v->healthy = 1;
    for (int p = 0; p < METRICS_NPARTS; p++) {
        v->state[p] = metrics_health_get(a->opt.metrics, (metrics_part)p, v->reason[p],
                                         sizeof v->reason[p], NULL);
        if (p == METRICS_STORAGE && !v->wal_ok) { /* looked at now, not remembered */
            v->state[p] = 0;
            snprintf(v->reason[p], sizeof v->reason[p], "%s", v->wal_err);
        }
        if (v->state[p] < 0) {
            if (a->opt.metrics == NULL) { /* nothing reports: judged by the store alone */
                v->state[p] = p == METRICS_STORAGE ? v->wal_ok : 1;
                continue;
            }
            snprintf(v->reason[p], sizeof v->reason[p], "starting");
        }
        if (v->state[p] != 1)
            v->healthy = 0;
    }
}

static void view_free(api_view *v) { free(v->peers.rows); }

static uint64_t queue_depth(const api_view *v, const sa_cursor *c)
{
    return v->wi.last_seq > c->acked ? v->wi.last_seq - c->acked : 0;
}

static void route_metrics(api *a, http_req *r)
{
    api_view v;
    view_get(a, &v);
    sa_buf b;
    sa_buf_init(&b);
    const char *version[] = {"version", SA_API_VERSION, "instance", a->instance, NULL};
    metrics_line(&b, "softadastra_build_info", "gauge", "The bridge's version and instance (1).",
                 version, 1);
    metrics_line(&b, "softadastra_healthy", "gauge",
                 "1 when every part is healthy (as /healthz answers 200).", NULL, v.healthy);
    for (int p = 0; p < METRICS_NPARTS; p++) {
        const char *l[] = {"part", metrics_part_name((metrics_part)p), NULL};
        metrics_line(&b, "softadastra_part_healthy", "gauge",
                     p == 0 ? "1 while the part (replication, applier, storage) is healthy." : NULL,
                     l, v.state[p] == 1);
    }
    if (v.wal_ok) {
        metrics_line(&b, "softadastra_wal_head_seq", "gauge", "Highest WAL seq appended.", NULL,
                     (double)v.wi.last_seq);
        metrics_line(&b, "softadastra_wal_durable_seq", "gauge", "Highest WAL seq known durable.",
                     NULL, (double)v.wi.durable_seq);
        metrics_line(&b, "softadastra_wal_first_seq", "gauge",
                     "Lowest WAL seq retained (the retained range is first..head).", NULL,
                     (double)v.wi.first_seq);
        metrics_line(&b, "softadastra_wal_bytes", "gauge", "Bytes of WAL retained.", NULL,
                     (double)v.wi.bytes);
    }
    metrics_line(&b, "softadastra_inbox_depth_ops", "gauge",
                 "Edge ops accepted and not yet applied to PostgreSQL.", NULL,
                 (double)v.inbox_ops);
    metrics_line(&b, "softadastra_inbox_bytes", "gauge", "Bytes of edge ops in the inbox.", NULL,
                 (double)v.inbox_bytes);
    static const char *const names[3] = {"softadastra_peer_acked_seq",
                                         "softadastra_peer_queue_depth_ops",
                                         "softadastra_peer_last_contact_seconds"};
    static const char *const helps[3] = {
        "WAL seq each peer has acknowledged (its last pull's cursor).",
        "WAL records after each peer's acknowledged seq (head - acked).",
        "Seconds since each peer's last pull."};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < v.peers.n; i++) {
            const sa_cursor *c = &v.peers.rows[i].c;
            const char *l[] = {"peer", v.peers.rows[i].name, NULL};
            double val = k == 0   ? (double)c->acked
                         : k == 1 ? (double)queue_depth(&v, c)
                         : c->last_attempt_ms == 0 || v.now_ms <= c->last_attempt_ms
                             ? 0.0
                             : (double)(v.now_ms - c->last_attempt_ms) / 1000.0;
            if (k == 2 && c->last_attempt_ms == 0)
                continue;
            metrics_line(&b, names[k], "gauge", i == 0 ? helps[k] : NULL, l, val);
        }
    }
    sa_err err = {0};
    int rc = a->opt.metrics != NULL ? metrics_render(a->opt.metrics, &b, &err) : 0;
    view_free(&v);
    count_req(a, r, rc == 0 ? 200 : 503);
    if (rc != 0)
        http_respond(r, 503, "text/plain", err.msg, strlen(err.msg), NULL);
    else
        http_respond(r, 200, "text/plain; version=0.0.4", b.data, b.len, NULL);
    sa_buf_free(&b);
}

/* /healthz: 200 {"status": "ok", ...} or 503 {"status": "failing",
 * "reason": ..., "parts": {part: {"ok", "reason"}}}. */
static void route_healthz(api *a, http_req *r)
{
    api_view v;
    view_get(a, &v);
    json_t *j = json_object(), *parts = json_object();
    int bad = -1; /* the first failing part names the reason */
    for (int p = 0; p < METRICS_NPARTS; p++) {
        json_t *o = json_object();
        json_object_set_new(o, "ok", json_boolean(v.state[p] == 1));
        if (v.state[p] != 1) {
            json_object_set_new(o, "reason", json_string(v.reason[p]));
            if (bad < 0)
                bad = p;
        }
        json_object_set_new(parts, metrics_part_name((metrics_part)p), o);
    }
    json_object_set_new(j, "status", json_string(v.healthy ? "ok" : "failing"));
    if (bad >= 0) {
        char reason[400];
        snprintf(reason, sizeof reason, "%s: %s", metrics_part_name((metrics_part)bad),
                 v.reason[bad]);
        json_object_set_new(j, "reason", json_string(reason));
    }
    json_object_set_new(j, "parts", parts);
    if (v.wal_ok) {
        json_object_set_new(j, "head", json_integer((json_int_t)v.wi.last_seq));
        json_object_set_new(j, "first", json_integer((json_int_t)v.wi.first_seq));
        json_object_set_new(j, "wal_bytes", json_integer((json_int_t)v.wi.bytes));
        json_object_set_new(j, "durable", json_integer((json_int_t)v.wi.durable_seq));
    }
    view_free(&v);
    api_json(a, r, v.healthy ? 200 : 503, j, NULL);
}

/* /v1/status: what `sa-bridge status` shows, as one JSON object. */
static void route_status(api *a, http_req *r)
{
    api_view v;
    view_get(a, &v);
    metrics *m = a->opt.metrics;
    json_t *j = json_object();
    json_object_set_new(j, "version", json_string(SA_API_VERSION));
    json_object_set_new(j, "healthy", json_boolean(v.healthy));
    json_t *parts = json_object();
    for (int p = 0; p < METRICS_NPARTS; p++) {
        json_t *o = json_object();
        json_object_set_new(o, "ok", json_boolean(v.state[p] == 1));
        if (v.state[p] != 1)
            json_object_set_new(o, "reason", json_string(v.reason[p]));
        json_object_set_new(parts, metrics_part_name((metrics_part)p), o);
    }
    json_object_set_new(j, "parts", parts);
    json_t *wal = json_object();
    json_object_set_new(wal, "head", json_integer((json_int_t)v.wi.last_seq));
    json_object_set_new(wal, "durable", json_integer((json_int_t)v.wi.durable_seq));
    json_object_set_new(wal, "first", json_integer((json_int_t)v.wi.first_seq));
    json_object_set_new(wal, "bytes", json_integer((json_int_t)v.wi.bytes));
    json_object_set_new(j, "wal", wal);
    json_t *repl = json_object();
    json_object_set_new(repl, "connected",
                        json_boolean(metrics_get(m, "softadastra_replication_connected", NULL, 0) > 0));
    static const char *const rk[][2] = {{"lag_bytes", "softadastra_replication_lag_bytes"},
                                        {"server_lsn", "softadastra_replication_server_lsn"},
                                        {"durable_lsn", "softadastra_replication_durable_lsn"},
                                        {"confirmed_lsn", "softadastra_replication_confirmed_lsn"}};
    for (size_t i = 0; i < sizeof rk / sizeof rk[0]; i++)
        json_object_set_new(repl, rk[i][0], json_integer((json_int_t)metrics_get(m, rk[i][1], NULL, 0)));
    json_object_set_new(repl, "lag_seconds",
                        json_real(metrics_get(m, "softadastra_replication_lag_seconds", NULL, 0)));
    json_object_set_new(j, "replication", repl);
    json_t *inbox = json_object();
    json_object_set_new(inbox, "ops", json_integer((json_int_t)v.inbox_ops));
    json_object_set_new(inbox, "bytes", json_integer((json_int_t)v.inbox_bytes));
    json_object_set_new(j, "inbox", inbox);
    json_t *peers = json_array();
    for (size_t i = 0; i < v.peers.n; i++) {
        const sa_cursor *c = &v.peers.rows[i].c;
        json_t *o = json_object();
        json_object_set_new(o, "peer", json_string(v.peers.rows[i].name));
        json_object_set_new(o, "acked", json_integer((json_int_t)c->acked));
        json_object_set_new(o, "queue_depth", json_integer((json_int_t)queue_depth(&v, c)));
        if (c->last_attempt_ms > 0)
            json_object_set_new(o, "last_contact_s",
                                json_real(v.now_ms > c->last_attempt_ms
                                              ? (double)(v.now_ms - c->last_attempt_ms) / 1000.0
                                              : 0.0));
        json_array_append_new(peers, o);
    }
    json_object_set_new(j, "peers", peers);
    view_free(&v);
    api_json(a, r, 200, j, NULL);
}

/* ---------------------------------------------------------------------
 * Routing
 * ------------------------------------------------------------------- */

static void api_handle(void *ctx, http_req *r)
{
    api *a = ctx;
    const char *m = http_req_method(r), *path = http_req_path(r);
    if (strcmp(path, "/healthz") == 0) {
        route_healthz(a, r);
        return;
    }
    if (strcmp(path, "/v1/status") == 0) {
        route_status(a, r);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        route_metrics(a, r);
        return;
    }
    int known = strcmp(path, "/v1/changes") == 0 || strcmp(path, "/v1/snapshot") == 0 ||
                strcmp(path, "/v1/ops") == 0 || strcmp(path, "/v1/ops/results") == 0;
    if (!known) {
        api_error(a, r, 404, "not_found", "no such endpoint: %s", path);
        return;
    }
    int post = strcmp(path, "/v1/ops") == 0;
    if (strcmp(m, post ? "POST" : "GET") != 0) {
        static const char *const allow_get[] = {"Allow", "GET", NULL};
        static const char *const allow_post[] = {"Allow", "POST", NULL};
        json_t *j = json_object();
        json_object_set_new(j, "error", json_string("method_not_allowed"));
        json_object_set_new(j, "message", json_string(post ? "use POST" : "use GET"));
        api_json(a, r, 405, j, post ? allow_post : allow_get);
        return;
    }
    api_peer peer;
    if (api_auth(a, r, &peer) != 0)
        return;
    if (strcmp(path, "/v1/changes") == 0 || strcmp(path, "/v1/snapshot") == 0) {
        /* the state is whole only once the initial sync is done */
        void *st = NULL;
        size_t sl = 0;
        sa_err err;
        int ready = sa_store_meta_get(a->store, "ingest.state", &st, &sl, &err) == 0 &&
                    sl == strlen("streaming") && memcmp(st, "streaming", sl) == 0;
        sa_free(st);
        if (!ready) {
            static const char *const hdr[] = {"Retry-After", "5", NULL};
            json_t *j = json_object();
            json_object_set_new(j, "error", json_string("initial_sync"));
            json_object_set_new(j, "message",
                                json_string("the bridge is copying its tables; retry shortly"));
            api_json(a, r, 503, j, hdr);
            peer_clear(&peer);
            return;
        }
    }
    if (strcmp(path, "/v1/changes") == 0)
        route_changes(a, r, &peer);
    else if (strcmp(path, "/v1/snapshot") == 0)
        route_snapshot(a, r, &peer);
    else if (strcmp(path, "/v1/ops/results") == 0)
        route_results(a, r, &peer);
    else
        route_ops(a, r, &peer);
}

int api_start(const api_options *o, sa_store *store, const char *instance, char *const *tables,
              size_t ntables, api **out, sa_err *err)
{
    api *a = sa_calloc(1, sizeof *a);
    if (a == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    a->opt = *o;
    a->store = store;
    snprintf(a->instance, sizeof a->instance, "%s", instance);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->wmu, NULL);
    pthread_mutex_init(&a->imu, NULL);
    pthread_mutex_init(&a->cmu, NULL);
    a->enc = sa_calloc(API_ENC_SLOTS, sizeof *a->enc);
    a->cache = sa_calloc(API_AUTH_CACHE, sizeof *a->cache);
    a->tables = sa_calloc(ntables + 1, sizeof *a->tables);
    int rc = a->tables == NULL || a->enc == NULL || a->cache == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
    for (size_t i = 0; rc == 0 && i < ntables; i++) {
        if ((a->tables[i] = sa_strdup(tables[i])) == NULL)
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        else
            a->ntables++;
    }
    http_limits lim;
    http_limits_init(&lim);
    lim.max_body = o->max_body;
    if (o->max_conns > 0)
        lim.max_conns = o->max_conns;
    if (o->max_conns_per_ip > 0)
        lim.per_ip_conns = o->max_conns_per_ip;
    if (rc == 0)
        rc = http_start(o->listen, &lim, api_handle, a, &a->http, err);
    if (rc != 0) {
        api_stop(a);
        return rc;
    }
    *out = a;
    return 0;
}

int api_port(const api *a) { return http_port(a->http); }

void api_stop(api *a)
{
    if (a == NULL)
        return;
    http_stop(a->http); /* frees every pending stream (and so every waiter) */
    for (size_t i = 0; a->cache != NULL && i < API_AUTH_CACHE; i++)
        peer_clear(&a->cache[i]);
    sa_free(a->cache);
    if (a->pg != NULL)
        PQfinish(a->pg);
    for (size_t i = 0; i < a->ntables; i++)
        sa_free(a->tables[i]);
    sa_free(a->tables);
    for (size_t i = 0; a->enc != NULL && i < API_ENC_SLOTS; i++)
        free(a->enc[i].json);
    sa_free(a->enc);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->wmu);
    pthread_mutex_destroy(&a->imu);
    pthread_mutex_destroy(&a->cmu);
    sa_free(a);
}
