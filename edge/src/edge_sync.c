/*
 * edge_sync.c — libsa_edge's network side: the HTTP client (libcurl) of the
 * bridge's API v1 (bridge/src/api.h) and the sync steps built on it:
 *
 *   bootstrap   GET /v1/snapshot, streamed line by line into a staging
 *               replica (DIR/server.<gen+1>), switched in with its cursor
 *   push        the outbox, in seq order and batches, to POST /v1/ops
 *   results     GET /v1/ops/results: conflicts and rejections recorded
 *   pull        GET /v1/changes from the cursor: each answer (whole
 *               transactions) applied with the new cursor in one write
 *
 * sync_once runs them in the order push, results, pull, then retires the
 * overlay entries the round confirmed (edge.c).  Failures are recorded
 * durably (attempts, last error, next retry) and paced by the retry policy
 * (sa_retry.h: exponential, full jitter, cap, Retry-After honoured).
 *
 * Memory: a snapshot is parsed one NDJSON line at a time and written in
 * batches of EDGE_SNAP_BATCH rows; a pull holds one answer (at most the
 * bridge's per-answer bound); a push one batch of ops.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edge_int.h"
#include "sa/sa_alloc.h"

#define EDGE_SNAP_BATCH 256        /* snapshot rows per staging write */
#define EDGE_BODY_MAX (256u << 20) /* largest answer body we keep */
#define EDGE_PUSH_BYTES (4u << 20) /* push bodies stay under this */
#define EDGE_CHANGES_LIMIT 1000    /* ops asked per /v1/changes */
#define EDGE_RESULTS_LIMIT 1000    /* results asked per /v1/ops/results */
#define EDGE_FOLLOW_WAIT_S 25      /* long-poll seconds in follow */

/* ---------------------------------------------------------------------
 * HTTP
 * ------------------------------------------------------------------- */

typedef struct http_res {
    sa_edge *e;
    long status;
    sa_buf body;             /* the answer (or, with a sink, an error answer) */
    uint64_t retry_after_ms; /* Retry-After, 0 if none */
    int long_poll;           /* a local write may cut this request short */
    int kicked;              /* ... and did */
    int overflow;            /* body over EDGE_BODY_MAX */
    /* streaming consumer of a 200 answer: 0 to go on */
    int (*sink)(void *ctx, const char *p, size_t n);
    void *sink_ctx;
    int sink_failed;
} http_res;

static size_t on_body(char *p, size_t size, size_t n, void *vr)
{
    http_res *r = vr;
    size_t len = size * n;
    if (r->sink != NULL) {
        long st = 0;
        curl_easy_getinfo(r->e->curl, CURLINFO_RESPONSE_CODE, &st);
        if (st == 200) {
            if (r->sink(r->sink_ctx, p, len) != 0) {
                r->sink_failed = 1;
                return 0;
            }
            return len;
        }
    }
    if (r->body.len + len > EDGE_BODY_MAX) {
        r->overflow = 1;
        return 0;
    }
    return sa_buf_put(&r->body, p, len) == 0 ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *vr)
{
    http_res *r = vr;
    size_t len = size * n;
    if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        unsigned long long s = strtoull(p + 12, NULL, 10);
        r->retry_after_ms = s > 86400 ? 86400000u : (uint64_t)s * 1000u;
    }
    return len;
}

static int on_progress(void *vr, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    http_res *r = vr;
    if (atomic_load(&r->e->stop))
        return 1;
    if (r->long_poll && atomic_load(&r->e->kick)) {
        r->kicked = 1;
        return 1;
    }
    return 0;
}

static void http_res_free(http_res *r)
{
    sa_buf_free(&r->body);
}

/*
 * One request: GET (body NULL) or POST of a JSON body to bridge + path.
 * 0 when an HTTP answer came (any status: r->status), or when a long poll
 * was cut short (r->kicked); SA_EIO on a network failure; SA_ECLOSED when
 * sa_edge_stop interrupted it.  timeout_s 0: no total limit (but stalled
 * transfers are cut after a minute).
 */
static int http_do(sa_edge *e, const char *path, const char *body, size_t len, long timeout_s,
                   http_res *r, sa_err *err)
{
    if (e->bridge == NULL || e->bridge[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "no bridge URL configured (give --bridge)");
    if (e->curl == NULL && (e->curl = curl_easy_init()) == NULL)
        return sa_err_set(err, SA_ENOMEM, "cannot create a libcurl handle");
    CURL *c = e->curl;
    size_t blen = strlen(e->bridge);
    while (blen > 0 && e->bridge[blen - 1] == '/')
        blen--;
    char url[4096], auth[1100];
    snprintf(url, sizeof url, "%.*s%s", (int)blen, e->bridge, path);
    struct curl_slist *h = NULL;
    if (e->token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", e->token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_reset(c);
    if (body != NULL) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    r->e = e;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    /* the multi interface rather than curl_easy_perform: a local write's
     * curl_multi_wakeup (edge.c) ends a waiting long poll at once, where
     * the progress callback alone runs about once a second when idle */
    CURLcode cc = CURLE_OK;
    CURLMcode mc = curl_multi_add_handle(e->multi, c);
    for (int running = 1; mc == CURLM_OK;) {
        mc = curl_multi_perform(e->multi, &running);
        if (mc != CURLM_OK)
            break;
        if (!running) {
            int q = 0;
            for (CURLMsg *msg; (msg = curl_multi_info_read(e->multi, &q)) != NULL;)
                if (msg->msg == CURLMSG_DONE && msg->easy_handle == c)
                    cc = msg->data.result;
            break;
        }
        if (on_progress(r, 0, 0, 0, 0) != 0) { /* stopped, or kicked */
            cc = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        mc = curl_multi_poll(e->multi, NULL, 0, 200, NULL);
    }
    if (mc != CURLM_OK)
        cc = CURLE_FAILED_INIT;
    curl_multi_remove_handle(e->multi, c);
    curl_slist_free_all(h);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (cc == CURLE_ABORTED_BY_CALLBACK && atomic_load(&e->stop))
        return sa_err_set(err, SA_ECLOSED, "stopped");
    if (cc == CURLE_ABORTED_BY_CALLBACK && r->kicked) {
        r->status = 0;
        return 0;
    }
    if (cc == CURLE_WRITE_ERROR && r->sink_failed)
        return 0; /* the sink's own error is reported by its caller */
    if (cc == CURLE_WRITE_ERROR && r->overflow)
        return sa_err_set(err, SA_ETOOBIG, "%s: the answer is larger than %u bytes", path,
                          EDGE_BODY_MAX);
    if (mc != CURLM_OK)
        return sa_err_set(err, SA_EIO, "%s: %s", url, curl_multi_strerror(mc));
    if (cc != CURLE_OK)
        return sa_err_set(err, SA_EIO, "%s: %s", url, curl_easy_strerror(cc));
    return 0;
}

/* The answer's JSON (new reference) or NULL. */
static json_t *res_json(const http_res *r)
{
    return json_loadb((const char *)r->body.data, r->body.len, JSON_DECODE_ANY, NULL);
}

/* An error for an unexpected answer: SA_EIO for 5xx (the bridge is not
 * available: retried), SA_EPROTO otherwise, with the bridge's message. */
static int http_fail(const char *what, const http_res *r, sa_err *err)
{
    json_t *j = res_json(r);
    const char *msg = json_string_value(json_object_get(j, "message"));
    int code = r->status >= 500 ? SA_EIO : SA_EPROTO;
    const char *hint = r->status == 401   ? " (the token is missing or wrong)"
                       : r->status == 403 ? " (the peer is disabled or not allowed)"
                                          : "";
    sa_err_set(err, code, "%s: HTTP %ld%s%s%s", what, r->status, hint, msg ? ": " : "",
               msg ? msg : "");
    json_decref(j);
    return code;
}

/* ---------------------------------------------------------------------
 * Applying server ops
 * ------------------------------------------------------------------- */

static const char *const codec_members[] = {"origin", "epoch",     "seq",  "hlc",  "kind",
                                            "table",  "key",       "cols", "base", "types",
                                            "pg",     "unchanged", "raw",  NULL};

/* Drop members the op codec does not know (txn_end, origin_seq, type and
 * whatever later API versions add). */
static void strip_members(json_t *j)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(j, tmp, k, v)
    {
        int known = 0;
        for (int i = 0; codec_members[i] != NULL && !known; i++)
            known = strcmp(codec_members[i], k) == 0;
        if (!known)
            json_object_del(j, k);
    }
}

/* ---------------------------------------------------------------------
 * Results: outcomes of pushed ops
 * ------------------------------------------------------------------- */

/* The bridge's head now (GET /healthz). */
static int bridge_head(sa_edge *e, uint64_t *head, sa_err *err)
{
    http_res r = {0};
    int rc = http_do(e, "/healthz", NULL, 0, (long)e->http_timeout_s, &r, err);
    json_t *j = rc == 0 ? res_json(&r) : NULL;
    /* a 503 still names the head: an unhealthy part (PostgreSQL down for
     * the applier) does not stop an edge from syncing what there is */
    if (rc == 0 && (r.status == 200 || r.status == 503) &&
        json_is_integer(json_object_get(j, "head")))
        *head = (uint64_t)json_integer_value(json_object_get(j, "head"));
    else if (rc == 0)
        rc = http_fail("GET /healthz", &r, err);
    json_decref(j);
    http_res_free(&r);
    return rc;
}

/* Our op s from inbox-CF origin `origin` (*out sa_op_free), NULL when
 * not there. */
static int local_op(sa_edge *e, const char *origin, uint64_t s, sa_op **out, sa_err *err)
{
    sa_inbox_iter *it = NULL;
    const sa_op *op;
    *out = NULL;
    int rc = sa_inbox_iter_open(e->local, origin, s, &it, err);
    if (rc == 0 && (rc = sa_inbox_iter_next(it, &op, err)) == 1)
        rc = op->seq == s ? sa_op_clone(op, out, err) : 0;
    sa_inbox_iter_close(it);
    return rc < 0 ? rc : 0;
}

/* Our op s: in the outbox, or retired before its outcome came (edge.c,
 * origin "w"); NULL when neither has it. */
static int outbox_op(sa_edge *e, uint64_t s, sa_op **out, sa_err *err)
{
    int rc = local_op(e, EDGE_OUTBOX, s, out, err);
    if (rc == 0 && *out == NULL)
        rc = local_op(e, EDGE_AWAIT, s, out, err);
    return rc;
}

/*
 * The answer's "confirmed" C and "confirmed_at" H (api.h): every op up to C
 * was applied by a transaction the bridge's WAL holds at or below H.  Kept
 * in the replica's own store ("confirm.to", "confirm.at": the replica's
 * instance only, and a new replica starts without), edge__retire counts the
 * ops up to C as confirmed once the cursor reaches H — also those that
 * changed no row and so never come back in the change stream.
 */
static int confirm_record(sa_edge *e, json_t *j, sa_err *err)
{
    json_t *jc = json_object_get(j, "confirmed"), *jh = json_object_get(j, "confirmed_at");
    const char *ai = json_string_value(json_object_get(j, "instance"));
    if (!json_is_integer(jc) || !json_is_integer(jh) || ai == NULL || json_integer_value(jc) <= 0)
        return 0;
    uint64_t to = (uint64_t)json_integer_value(jc), at = (uint64_t)json_integer_value(jh);
    int rc = 0;
    pthread_rwlock_rdlock(&e->srv_lock);
    char *inst = NULL;
    uint64_t old = 0;
    if (e->server != NULL && (rc = edge__meta_str(e->server, "instance", &inst, err)) == 0 &&
        inst != NULL && strcmp(inst, ai) == 0 &&
        (rc = edge__meta_u64(e->server, "confirm.to", 0, &old, err)) == 0 && to > old) {
        sa_batch *b = NULL;
        if ((rc = sa_batch_new(&b, err)) == 0 &&
            (rc = edge__meta_put_u64(b, "confirm.to", to, err)) == 0 &&
            (rc = edge__meta_put_u64(b, "confirm.at", at, err)) == 0)
            rc = sa_store_commit(e->server, b, NULL, err);
        sa_batch_free(b);
    }
    sa_free(inst);
    pthread_rwlock_unlock(&e->srv_lock);
    return rc;
}

static int results_fetch(sa_edge *e, sa_err *err)
{
    uint64_t after = 0, applied = 0;
    int rc = edge__meta_u64(e->local, "results.after", 0, &after, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "push.applied", 0, &applied, err);
    for (int more = 1; rc == 0 && more;) {
        char path[256];
        snprintf(path, sizeof path, "/v1/ops/results?epoch=%" PRIu64 "&after=%" PRIu64 "&limit=%d",
                 e->epoch, after, EDGE_RESULTS_LIMIT);
        http_res r = {0};
        json_t *j = NULL;
        sa_batch *b = NULL;
        uint64_t head = 0;
        rc = http_do(e, path, NULL, 0, (long)e->http_timeout_s, &r, err);
        if (rc == 0 && r.status != 200)
            rc = http_fail("GET /v1/ops/results", &r, err);
        if (rc == 0)
            j = res_json(&r);
        if (rc == 0 && !json_is_array(json_object_get(j, "results")))
            rc = sa_err_set(err, SA_EPROTO, "GET /v1/ops/results: malformed answer");
        if (rc == 0)
            rc = sa_batch_new(&b, err);
        json_t *list = json_object_get(j, "results");
        size_t i;
        json_t *o;
        json_array_foreach(list, i, o)
        {
            if (rc != 0)
                break;
            uint64_t s = (uint64_t)json_integer_value(json_object_get(o, "seq"));
            const char *st = json_string_value(json_object_get(o, "status"));
            if (s > after)
                after = s;
            if (st == NULL || strcmp(st, "applied") == 0)
                continue;
            if (head == 0 && json_is_integer(json_object_get(j, "head")))
                head = (uint64_t)json_integer_value(json_object_get(j, "head"));
            if (head == 0 && (rc = bridge_head(e, &head, err)) != 0)
                break;
            sa_op *op = NULL;
            if ((rc = outbox_op(e, s, &op, err)) != 0)
                break;
            json_t *rec = json_deep_copy(o);
            json_object_set_new(rec, "head", json_integer((json_int_t)head));
            if (op != NULL) {
                json_t *oj = NULL;
                if (sa_op_to_json(op, &oj, err) == 0) {
                    json_object_set(rec, "table", json_object_get(oj, "table"));
                    json_object_set(rec, "key", json_object_get(oj, "key"));
                    json_object_set(rec, "kind", json_object_get(oj, "kind"));
                }
                json_decref(oj);
                sa_op_free(op);
            }
            char key[64];
            snprintf(key, sizeof key, "outcome.%020" PRIu64, s);
            char *txt = json_dumps(rec, JSON_COMPACT);
            json_decref(rec);
            rc = txt ? sa_batch_meta_put(b, key, txt, strlen(txt), err)
                     : sa_err_set(err, SA_ENOMEM, "out of memory");
            free(txt);
        }
        uint64_t ap = (uint64_t)json_integer_value(json_object_get(j, "applied"));
        if (rc == 0 && ap > applied)
            rc = edge__meta_put_u64(b, "push.applied", applied = ap, err);
        if (rc == 0)
            rc = confirm_record(e, j, err);
        if (rc == 0 && json_array_size(list) > 0) /* their outcomes are in */
            rc = sa_batch_inbox_remove(b, EDGE_AWAIT, after, err);
        if (rc == 0)
            rc = edge__meta_put_u64(b, "results.after", after, err);
        if (rc == 0)
            rc = sa_store_commit(e->local, b, NULL, err);
        more = rc == 0 && json_array_size(list) >= EDGE_RESULTS_LIMIT;
        sa_batch_free(b);
        json_decref(j);
        http_res_free(&r);
    }
    return rc;
}

/* Open conflicts of our ops: a DBA may resolve them in SQL at any time.
 * Every EDGE_REFRESH_MS, up to EDGE_REFRESH_IDS of them are asked about
 * (GET /v1/ops/results?conflicts=...) and their recorded outcome updated,
 * so `sa-edge conflicts` shows the resolution.  The resolved values
 * themselves arrive through the change stream like any change.  Looks at
 * most EDGE_REFRESH_SCAN records a round, round-robin over the outcomes. */
#define EDGE_REFRESH_MS 2000
#define EDGE_REFRESH_IDS 100
#define EDGE_REFRESH_SCAN 5000

typedef struct refresh_ctx {
    uint64_t seqs[EDGE_REFRESH_IDS];
    long long ids[EDGE_REFRESH_IDS];
    size_t n, scanned;
    uint64_t last;
} refresh_ctx;

static int refresh_cb(const char *key, const void *val, size_t len, void *vctx)
{
    refresh_ctx *c = vctx;
    c->scanned++;
    c->last = strtoull(key + strlen("outcome."), NULL, 10);
    json_t *j = json_loadb(val, len, 0, NULL);
    const char *res = json_string_value(json_object_get(j, "resolution"));
    json_int_t id = json_integer_value(json_object_get(j, "conflict_id"));
    if (res != NULL && strcmp(res, "open") == 0 && id > 0) {
        c->seqs[c->n] = c->last;
        c->ids[c->n++] = (long long)id;
    }
    json_decref(j);
    return c->n >= EDGE_REFRESH_IDS || c->scanned >= EDGE_REFRESH_SCAN;
}

static int outcomes_refresh(sa_edge *e, sa_err *err)
{
    uint64_t now = edge__now_ms();
    if (now - e->refresh_ms < EDGE_REFRESH_MS)
        return 0;
    e->refresh_ms = now;
    refresh_ctx c = {{0}, {0}, 0, 0, 0};
    char from[32];
    snprintf(from, sizeof from, "%020" PRIu64, e->refresh_after);
    int rc = sa_store_meta_scan(e->local, "outcome.", e->refresh_after > 0 ? from : NULL,
                                refresh_cb, &c, err);
    if (rc != 0)
        return rc;
    /* where the next round starts: after this one, or from the top again */
    e->refresh_after = c.n >= EDGE_REFRESH_IDS || c.scanned >= EDGE_REFRESH_SCAN ? c.last : 0;
    if (c.n == 0)
        return 0;
    char path[64 + 21 * EDGE_REFRESH_IDS];
    int off = snprintf(path, sizeof path, "/v1/ops/results?epoch=%" PRIu64 "&conflicts=", e->epoch);
    for (size_t i = 0; i < c.n; i++)
        off += snprintf(path + off, sizeof path - (size_t)off, "%s%lld", i ? "," : "", c.ids[i]);
    http_res r = {0};
    json_t *j = NULL;
    sa_batch *b = NULL;
    rc = http_do(e, path, NULL, 0, (long)e->http_timeout_s, &r, err);
    if (rc == 0 && r.status != 200)
        rc = http_fail("GET /v1/ops/results (conflicts)", &r, err);
    if (rc == 0 && !json_is_array(json_object_get(j = res_json(&r), "conflicts")))
        rc = sa_err_set(err, SA_EPROTO, "GET /v1/ops/results (conflicts): malformed answer");
    if (rc == 0)
        rc = sa_batch_new(&b, err);
    size_t i, changed = 0;
    json_t *o;
    json_array_foreach(json_object_get(j, "conflicts"), i, o)
    {
        const char *res = json_string_value(json_object_get(o, "resolution"));
        long long id = (long long)json_integer_value(json_object_get(o, "conflict_id"));
        if (rc != 0 || res == NULL || strcmp(res, "open") == 0)
            continue;
        for (size_t k = 0; k < c.n; k++) {
            if (c.ids[k] != id)
                continue;
            char key[64];
            void *val = NULL;
            size_t len = 0;
            snprintf(key, sizeof key, "outcome.%020" PRIu64, c.seqs[k]);
            if ((rc = sa_store_meta_get(e->local, key, &val, &len, err)) != 0)
                break;
            json_t *rec = json_loadb(val, len, 0, NULL);
            sa_free(val);
            if (rec == NULL)
                break;
            json_object_set_new(rec, "resolution", json_string(res));
            char *txt = json_dumps(rec, JSON_COMPACT);
            json_decref(rec);
            rc = txt ? sa_batch_meta_put(b, key, txt, strlen(txt), err)
                     : sa_err_set(err, SA_ENOMEM, "out of memory");
            free(txt);
            changed++;
            break;
        }
    }
    if (rc == 0 && changed > 0)
        rc = sa_store_commit(e->local, b, NULL, err);
    sa_batch_free(b);
    json_decref(j);
    http_res_free(&r);
    return rc;
}

/* ---------------------------------------------------------------------
 * Bootstrap
 * ------------------------------------------------------------------- */

typedef struct snap_ctx {
    sa_edge *e;
    sa_store *st;    /* the staging replica */
    sa_batch *b;     /* rows for it */
    sa_batch *lb;    /* schemas for the local store */
    json_t *schemas; /* cache of what lb says */
    sa_buf line;     /* the line being received */
    size_t in_group; /* rows in b's open group */
    int begun, ended;
    uint64_t seq, end_seq, rows, hlc_max;
    char instance[64];
    json_t *tables;
    int rc;
    sa_err err;
} snap_ctx;

static int snap_flush(snap_ctx *c)
{
    int rc = 0;
    if (c->in_group > 0)
        rc = sa_batch_wal_end_group(c->b, &c->err);
    c->in_group = 0;
    if (rc == 0 && !sa_batch_empty(c->b))
        rc = sa_store_commit(c->st, c->b, NULL, &c->err);
    return rc;
}

static int snap_line(snap_ctx *c, const char *p, size_t n)
{
    json_error_t je;
    json_t *j = json_loadb(p, n, 0, &je);
    sa_op *op = NULL;
    int rc = 0;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (j == NULL || type == NULL) {
        rc = sa_err_set(&c->err, SA_EPROTO, "snapshot line %" PRIu64 ": %s", c->rows + 1,
                        j == NULL ? je.text : "no \"type\"");
    } else if (strcmp(type, "begin") == 0) {
        const char *inst = json_string_value(json_object_get(j, "instance"));
        json_t *t = json_object_get(j, "tables");
        if (c->begun || inst == NULL || !json_is_array(t) ||
            !json_is_integer(json_object_get(j, "seq")))
            rc = sa_err_set(&c->err, SA_EPROTO, "snapshot: malformed begin line");
        else {
            c->begun = 1;
            c->seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
            snprintf(c->instance, sizeof c->instance, "%s", inst);
            c->tables = json_incref(t);
            /* key columns and types of every table, even one with no rows
             * yet (a bridge that does not send them: learned from rows) */
            const char *tname;
            json_t *sc;
            json_object_foreach(json_object_get(j, "schemas"), tname, sc) {
                if (rc == 0)
                    rc = edge__set_schema(c->schemas, tname, sc, c->lb, &c->err);
            }
        }
    } else if (strcmp(type, "row") == 0) {
        if (!c->begun || c->ended)
            rc = sa_err_set(&c->err, SA_EPROTO, "snapshot: a row outside begin/end");
        strip_members(j);
        json_object_set_new(j, "kind", json_string("insert"));
        if (rc == 0 && (rc = sa_op_from_json(j, &op, &c->err)) != 0)
            sa_err_wrap(&c->err, "snapshot row %" PRIu64, c->rows + 1);
        if (rc == 0)
            rc = edge__learn_schema(c->e, c->schemas, op, c->lb, &c->err);
        if (rc == 0)
            rc = sa_batch_wal_add(c->b, op, &c->err);
        if (rc == 0) {
            c->rows++;
            c->in_group++;
            if (op->hlc > c->hlc_max)
                c->hlc_max = op->hlc;
            if (c->in_group >= EDGE_SNAP_BATCH)
                rc = snap_flush(c);
        }
    } else if (strcmp(type, "end") == 0) {
        c->ended = 1;
        c->end_seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
    }
    sa_op_free(op);
    json_decref(j);
    return rc;
}

/* Curl sink: split into lines, one row at a time. */
static int snap_sink(void *vc, const char *p, size_t n)
{
    snap_ctx *c = vc;
    while (n > 0 && c->rc == 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (sa_buf_put(&c->line, p, take) != 0) {
            c->rc = sa_err_set(&c->err, SA_ENOMEM, "out of memory");
            break;
        }
        p += take;
        n -= take;
        if (nl != NULL) {
            p++;
            n--;
            if (c->line.len > 0)
                c->rc = snap_line(c, (const char *)c->line.data, c->line.len);
            sa_buf_reset(&c->line);
        }
    }
    return c->rc;
}

static int bootstrap(sa_edge *e, sa_err *err)
{
    uint64_t applied = 0, confirmed = 0, gen = e->server_gen + 1;
    int rc = 0;
    if (e->server != NULL && (rc = edge__meta_u64(e->server, "confirmed", 0, &confirmed, err)) != 0)
        return rc;
    snap_ctx c = {.e = e, .schemas = json_object()};
    sa_buf_init(&c.line);
    http_res r = {.sink = snap_sink, .sink_ctx = &c};
    rc = edge__server_open(e, gen, 1, &c.st, err);
    if (rc == 0)
        rc = sa_batch_new(&c.b, err);
    if (rc == 0)
        rc = sa_batch_new(&c.lb, err);
    if (rc == 0)
        rc = http_do(e, "/v1/snapshot", NULL, 0, 0, &r, err);
    if (rc == 0 && r.status != 200)
        rc = http_fail("GET /v1/snapshot", &r, err);
    if (rc == 0 && c.rc != 0) {
        rc = c.rc;
        *err = c.err;
    }
    if (rc == 0 && c.line.len > 0 &&
        (rc = snap_line(&c, (const char *)c.line.data, c.line.len)) != 0)
        *err = c.err;
    if (rc == 0 && (!c.begun || !c.ended || c.end_seq != c.seq))
        rc = sa_err_set(err, SA_EIO, "GET /v1/snapshot: the stream ended early (%s)",
                        !c.begun   ? "no begin line"
                        : !c.ended ? "no end line"
                                   : "begin and end seqs differ");
    if (rc == 0 && (rc = snap_flush(&c)) != 0)
        *err = c.err;
    /* what the bridge applied by now counts as confirmed by this replica
     * (the overlay rule (a) after a bootstrap, edge.c): ops applied before
     * the snapshot are in it, later ones arrive with the pull that follows
     * in the same round, before any retirement */
    if (rc == 0)
        rc = results_fetch(e, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "push.applied", 0, &applied, err);
    if (rc == 0)
        rc = edge__meta_put_str(c.b, "instance", c.instance, err);
    if (rc == 0)
        rc = edge__meta_put_u64(c.b, "cursor", c.seq, err);
    if (rc == 0)
        rc = edge__meta_put_u64(c.b, "head", c.seq, err);
    if (rc == 0)
        rc = edge__meta_put_u64(c.b, "confirmed", applied > confirmed ? applied : confirmed, err);
    if (rc == 0)
        rc = edge__meta_put_u64(c.b, "hlc.max", c.hlc_max, err);
    if (rc == 0)
        rc = sa_store_commit(c.st, c.b, NULL, err);
    if (rc == 0)
        rc = sa_wal_truncate(c.st, UINT64_MAX, err);
    if (rc == 0) {
        char *t = json_dumps(c.tables, JSON_COMPACT);
        rc = t ? sa_batch_meta_put(c.lb, "tables", t, strlen(t), err)
               : sa_err_set(err, SA_ENOMEM, "out of memory");
        free(t);
    }
    if (rc == 0)
        rc = sa_store_commit(e->local, c.lb, NULL, err);
    if (rc == 0 && c.hlc_max > 0) {
        uint64_t ignore;
        sa_err e2;
        sa_hlc_update(e->clock, c.hlc_max, &ignore, &e2);
    }
    if (rc == 0) {
        rc = edge__server_switch(e, gen, c.st, err);
        if (rc == 0)
            c.st = NULL; /* the edge owns it now */
    }
    /* a failed staging replica is removed by the next bootstrap or open */
    sa_store_close(c.st);
    sa_batch_free(c.b);
    sa_batch_free(c.lb);
    json_decref(c.schemas);
    json_decref(c.tables);
    sa_buf_free(&c.line);
    http_res_free(&r);
    return rc;
}

/* ---------------------------------------------------------------------
 * Pull
 * ------------------------------------------------------------------- */

/* Apply one /v1/changes answer to the replica with its cursor, in one
 * write.  *next and *head from the answer. */
static int pull_apply(sa_edge *e, json_t *j, uint64_t cursor, uint64_t *next, uint64_t *head,
                      sa_err *err)
{
    json_t *ops = json_object_get(j, "ops");
    json_t *jn = json_object_get(j, "next"), *jh = json_object_get(j, "head");
    if (!json_is_array(ops) || !json_is_integer(jn) || !json_is_integer(jh))
        return sa_err_set(err, SA_EPROTO, "GET /v1/changes: malformed answer");
    *next = (uint64_t)json_integer_value(jn);
    *head = (uint64_t)json_integer_value(jh);
    uint64_t confirmed = 0, hlc_max = 0;
    sa_batch *b = NULL, *lb = NULL;
    json_t *schemas = json_object();
    int rc = edge__meta_u64(e->server, "confirmed", 0, &confirmed, err);
    uint64_t confirmed0 = confirmed;
    if (rc == 0)
        rc = edge__meta_u64(e->server, "hlc.max", 0, &hlc_max, err);
    if (rc == 0)
        rc = sa_batch_new(&b, err);
    if (rc == 0)
        rc = sa_batch_new(&lb, err);
    int open_group = 0;
    size_t i;
    json_t *jo;
    json_array_foreach(ops, i, jo)
    {
        if (rc != 0)
            break;
        if (!json_is_object(jo)) {
            rc = sa_err_set(err, SA_EPROTO, "GET /v1/changes: op %zu is not an object", i);
            break;
        }
        int end = json_is_true(json_object_get(jo, "txn_end"));
        json_t *os = json_object_get(jo, "origin_seq");
        const char *origin = json_string_value(json_object_get(jo, "origin"));
        uint64_t epoch = (uint64_t)json_integer_value(json_object_get(jo, "epoch"));
        if (json_is_integer(os) && origin != NULL && strcmp(origin, e->peer) == 0 &&
            epoch == e->epoch && (uint64_t)json_integer_value(os) > confirmed)
            confirmed = (uint64_t)json_integer_value(os);
        strip_members(jo);
        sa_op *op = NULL;
        if ((rc = sa_op_from_json(jo, &op, err)) != 0) {
            sa_err_wrap(err, "GET /v1/changes: op %zu", i);
            break;
        }
        rc = edge__learn_schema(e, schemas, op, lb, err);
        if (rc == 0)
            rc = sa_batch_wal_add(b, op, err);
        if (rc == 0 && op->hlc > hlc_max)
            hlc_max = op->hlc;
        sa_op_free(op);
        open_group = rc == 0 && !end;
        if (rc == 0 && end)
            rc = sa_batch_wal_end_group(b, err);
    }
    if (rc == 0 && open_group) /* the API never splits one; be safe anyway */
        rc = sa_batch_wal_end_group(b, err);
    if (rc == 0 && *next > cursor)
        rc = edge__meta_put_u64(b, "cursor", *next, err);
    if (rc == 0)
        rc = edge__meta_put_u64(b, "head", *head, err);
    if (rc == 0 && confirmed > confirmed0)
        rc = edge__meta_put_u64(b, "confirmed", confirmed, err);
    if (rc == 0)
        rc = edge__meta_put_u64(b, "hlc.max", hlc_max, err);
    if (rc == 0)
        rc = sa_store_commit(e->server, b, NULL, err);
    if (rc == 0 && !sa_batch_empty(lb))
        rc = sa_store_commit(e->local, lb, NULL, err);
    if (rc == 0 && json_array_size(ops) > 0)
        rc = sa_wal_truncate(e->server, UINT64_MAX, err); /* the rows stay in state */
    if (rc == 0 && hlc_max > 0) {
        uint64_t ignore;
        sa_err e2;
        sa_hlc_update(e->clock, hlc_max, &ignore, &e2);
    }
    sa_batch_free(b);
    sa_batch_free(lb);
    json_decref(schemas);
    return rc;
}

/* Pull until the head; the first request may long-poll wait_s.
 * *resnap = 1 when the bridge says must_resnapshot. */
static int pull(sa_edge *e, int wait_s, int *resnap, sa_err *err)
{
    int rc = 0;
    *resnap = 0;
    for (int round = 0; rc == 0; round++) {
        uint64_t cursor = 0, next = 0, head = 0;
        char *inst = NULL;
        rc = edge__meta_u64(e->server, "cursor", 0, &cursor, err);
        if (rc == 0)
            rc = edge__meta_str(e->server, "instance", &inst, err);
        if (rc != 0)
            break;
        char path[512];
        int w = round == 0 ? wait_s : 0;
        snprintf(path, sizeof path, "/v1/changes?after=%" PRIu64 "&limit=%d&wait=%d%s%s", cursor,
                 EDGE_CHANGES_LIMIT, w, inst ? "&instance=" : "", inst ? inst : "");
        http_res r = {.long_poll = w > 0};
        rc = http_do(e, path, NULL, 0, (long)e->http_timeout_s + w, &r, err);
        json_t *j = NULL;
        if (rc == 0 && r.kicked) {
            http_res_free(&r);
            sa_free(inst);
            break; /* a local write: go push it */
        }
        if (rc == 0 && r.status == 409) {
            j = res_json(&r);
            const char *what = json_string_value(json_object_get(j, "error"));
            if (what != NULL && strcmp(what, "must_resnapshot") == 0)
                *resnap = 1;
            else
                rc = http_fail("GET /v1/changes", &r, err);
        } else if (rc == 0 && r.status != 200) {
            rc = http_fail("GET /v1/changes", &r, err);
        } else if (rc == 0) {
            j = res_json(&r);
            const char *ai = json_string_value(json_object_get(j, "instance"));
            if (ai != NULL && inst != NULL && strcmp(ai, inst) != 0)
                *resnap = 1; /* another bridge instance: its seqs are not ours */
            else {
                pthread_rwlock_rdlock(&e->srv_lock);
                rc = pull_apply(e, j, cursor, &next, &head, err);
                pthread_rwlock_unlock(&e->srv_lock);
            }
        }
        json_decref(j);
        http_res_free(&r);
        sa_free(inst);
        if (rc != 0 || *resnap || next <= cursor || next >= head)
            break;
    }
    return rc;
}

/* ---------------------------------------------------------------------
 * Push
 * ------------------------------------------------------------------- */

typedef struct push_fail {
    uint64_t retry_after_ms;
} push_fail;

static int push(sa_edge *e, push_fail *pf, sa_err *err)
{
    uint64_t accepted = 0;
    int rc = edge__meta_u64(e->local, "push.accepted", 0, &accepted, err);
    uint64_t from = accepted + 1;
    size_t batch = e->batch_ops;
    int stuck = 0;
    while (rc == 0) {
        uint64_t last = 0, issued;
        pthread_mutex_lock(&e->mu);
        issued = e->last_seq;
        pthread_mutex_unlock(&e->mu);
        if (from > issued)
            break;
        /* the batch: {"epoch": E, "ops": [...]} */
        json_t *arr = json_array();
        size_t bytes = 0;
        sa_inbox_iter *it = NULL;
        const sa_op *op;
        rc = sa_inbox_iter_open(e->local, EDGE_OUTBOX, from, &it, err);
        while (rc == 0 && json_array_size(arr) < batch && bytes < EDGE_PUSH_BYTES &&
               (rc = sa_inbox_iter_next(it, &op, err)) == 1) {
            rc = 0;
            if (json_array_size(arr) == 0 && op->seq != from) {
                rc = sa_err_set(err, SA_EPROTO,
                                "the bridge expects op %" PRIu64 " of this edge, "
                                "but it retired already (the bridge lost ops it had accepted?)",
                                from);
                break;
            }
            json_t *oj = NULL;
            if ((rc = sa_op_to_json(op, &oj, err)) != 0)
                break;
            char *s = json_dumps(oj, JSON_COMPACT);
            bytes += s ? strlen(s) : 0;
            free(s);
            json_array_append_new(arr, oj);
            last = op->seq;
        }
        if (rc > 0)
            rc = 0;
        sa_inbox_iter_close(it);
        if (rc != 0 || json_array_size(arr) == 0) {
            json_decref(arr);
            break;
        }
        json_t *body = json_pack("{s:I,s:o}", "epoch", (json_int_t)e->epoch, "ops", arr);
        char *txt = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        if (txt == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            break;
        }
        http_res r = {0};
        rc = http_do(e, "/v1/ops", txt, strlen(txt), (long)e->http_timeout_s, &r, err);
        free(txt);
        json_t *j = rc == 0 ? res_json(&r) : NULL;
        uint64_t acc = (uint64_t)json_integer_value(json_object_get(j, "accepted"));
        uint64_t expected = (uint64_t)json_integer_value(json_object_get(j, "expected"));
        if (rc != 0) {
            /* network: retried */
        } else if (r.status == 200) {
            if (acc < last)
                rc = sa_err_set(err, SA_EPROTO,
                                "POST /v1/ops: the bridge accepted up to %" PRIu64
                                " of a batch ending at %" PRIu64,
                                acc, last);
            from = acc + 1;
            stuck = 0;
        } else if (r.status == 409 && expected > 0) {
            /* a gap: the bridge has up to expected - 1 (more than we knew
             * after a crash, or less after it lost its inbox) */
            if (expected == from || ++stuck > 3)
                rc = sa_err_set(err, SA_EPROTO, "POST /v1/ops: gap at %" PRIu64 " not resolved",
                                expected);
            acc = expected - 1;
            from = expected;
        } else if (r.status == 413 && batch > 1) {
            batch /= 2;
        } else {
            if (r.status == 503)
                pf->retry_after_ms = r.retry_after_ms;
            rc = http_fail("POST /v1/ops", &r, err);
        }
        if (rc == 0 && (r.status == 200 || r.status == 409) && acc != accepted) {
            sa_batch *b = NULL;
            rc = sa_batch_new(&b, err);
            if (rc == 0)
                rc = edge__meta_put_u64(b, "push.accepted", acc, err);
            if (rc == 0)
                rc = sa_store_commit(e->local, b, NULL, err);
            sa_batch_free(b);
            accepted = acc;
        }
        json_decref(j);
        http_res_free(&r);
    }
    return rc;
}

/* ---------------------------------------------------------------------
 * sync_once and follow
 * ------------------------------------------------------------------- */

static int sync_round(sa_edge *e, int wait_s, push_fail *pf, sa_err *err)
{
    int rc = 0, resnap = 0;
    atomic_store(&e->kick, 0);
    if (e->server == NULL)
        rc = bootstrap(e, err);
    if (rc == 0)
        rc = push(e, pf, err);
    if (rc == 0)
        rc = results_fetch(e, err);
    if (rc == 0 && outcomes_refresh(e, err) != 0) {
        /* only a nicety: an older bridge may not know the query; the
         * outcome stays "open" until a later round */
        sa_err_clear(err);
    }
    if (rc == 0)
        rc = pull(e, wait_s, &resnap, err);
    if (rc == 0 && resnap) {
        /* 409 must_resnapshot: a new replica, the local ops kept */
        rc = bootstrap(e, err);
        if (rc == 0)
            rc = pull(e, 0, &resnap, err);
        if (rc == 0 && resnap)
            rc = sa_err_set(err, SA_EPROTO, "the bridge refused the cursor of a fresh snapshot");
    }
    if (rc == 0)
        rc = edge__retire(e, err);
    return rc;
}

/* The delay before the next attempt after a failure (ms). */
static uint64_t fail_delay(sa_edge *e, uint64_t retry_after_ms)
{
    uint64_t d = 0;
    sa_err ignore;
    if (sa_retry_next(&e->retry, retry_after_ms, &d, &ignore) != 0)
        d = e->retry.policy.cap_ms;
    return d;
}

static int sync_locked(sa_edge *e, int wait_s, uint64_t *delay_ms, sa_err *err)
{
    push_fail pf = {0};
    int rc = sync_round(e, wait_s, &pf, err);
    if (rc == SA_ECLOSED)
        return rc;
    sa_err e2;
    if (rc != 0) {
        uint64_t d = fail_delay(e, pf.retry_after_ms);
        if (delay_ms != NULL)
            *delay_ms = d;
        edge__record_attempt(e, 0, err ? err->msg : sa_err_str(rc), edge__now_ms() + d, &e2);
        return rc;
    }
    sa_cursor c;
    if (sa_retry_attempts(&e->retry) > 0 ||
        (sa_cursor_get(e->local, EDGE_SYNC_CURSOR, &c, &e2) == 0 && c.attempts > 0))
        edge__record_attempt(e, 1, NULL, 0, &e2);
    sa_retry_success(&e->retry);
    return 0;
}

int sa_edge_sync_once(sa_edge *e, int wait_s, sa_err *err)
{
    sa_err local;
    if (err == NULL)
        err = &local;
    pthread_mutex_lock(&e->sync_mu);
    int rc = sync_locked(e, wait_s, NULL, err);
    pthread_mutex_unlock(&e->sync_mu);
    return rc;
}

int sa_edge_follow(sa_edge *e, sa_err *err)
{
    sa_err local;
    if (err == NULL)
        err = &local;
    pthread_mutex_lock(&e->sync_mu);
    int rc = 0;
    while (!atomic_load(&e->stop)) {
        uint64_t delay = 0;
        rc = sync_locked(e, EDGE_FOLLOW_WAIT_S, &delay, err);
        if (rc == SA_ECLOSED || atomic_load(&e->stop)) {
            rc = 0;
            break;
        }
        /* after a failure: wait out the retry delay (a local write does
         * not shorten it: the bridge is what we wait for) */
        for (uint64_t waited = 0; rc != 0 && waited < delay && !atomic_load(&e->stop);
             waited += 50) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        rc = 0;
    }
    pthread_mutex_unlock(&e->sync_mu);
    return rc;
}
