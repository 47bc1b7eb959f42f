/*
 * test_http.c — unit tests for the HTTP server module (http.h): real
 * sockets on 127.0.0.1 (port 0), libcurl (or a raw socket) as the client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http.h"
#include "sa/sa_err.h"

/* ------------------------------------------------------------------------ */
/* Fixture: a server whose handler dispatches on the path                   */
/* ------------------------------------------------------------------------ */

#define TH_MAX_HELD 256

typedef struct th_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    http_req *held[TH_MAX_HELD]; /* /hold requests, not yet answered */
    int nheld;
    atomic_int calls;  /* handler calls */
    atomic_int pfrees; /* stream contexts freed */
    atomic_int stream_calls;
    http_req *stream_req; /* the last /stream request (for wake) */
} th_ctx;

static int64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *nz(const char *s)
{
    return s == NULL ? "(null)" : s;
}

/* A stream's context: the script of what the producer returns. */
typedef struct th_stream {
    th_ctx *t;
    int step;
    const char *mode; /* "hb": WAIT, WAIT, data, end; "wake": WAIT, data, end;
                         "forever": WAIT always */
} th_stream;

static ssize_t th_produce(void *pctx, char *buf, size_t max)
{
    th_stream *st = pctx;
    atomic_fetch_add(&st->t->stream_calls, 1);
    int step = st->step++;
    if (strcmp(st->mode, "forever") == 0)
        return HTTP_STREAM_WAIT;
    int waits = strcmp(st->mode, "hb") == 0 ? 2 : 1;
    if (step < waits)
        return HTTP_STREAM_WAIT;
    if (step == waits) {
        const char *d = "data\n";
        size_t n = strlen(d) < max ? strlen(d) : max;
        memcpy(buf, d, n);
        return (ssize_t)n;
    }
    return 0;
}

static void th_stream_free(void *pctx)
{
    th_stream *st = pctx;
    th_ctx *t = st->t;
    pthread_mutex_lock(&t->mu);
    t->stream_req = NULL; /* S4: unregister under our lock */
    pthread_mutex_unlock(&t->mu);
    atomic_fetch_add(&t->pfrees, 1);
    free(st);
}

static void th_handler(void *ctx, http_req *r)
{
    th_ctx *t = ctx;
    atomic_fetch_add(&t->calls, 1);
    const char *path = http_req_path(r);
    if (strcmp(path, "/echo") == 0) {
        size_t blen;
        const char *body = http_req_body(r, &blen);
        assert_int_equal(body[blen], '\0');
        char head[1024];
        int hl =
            snprintf(head, sizeof head, "%s %s q=%s h=%s b=%s c=%d\n", http_req_method(r), path,
                     nz(http_req_query(r, "q")), nz(http_req_header(r, "x-test")),
                     nz(http_req_bearer(r)), strncmp(http_req_client(r), "127.0.0.1:", 10) == 0);
        char *out = malloc((size_t)hl + blen);
        assert_non_null(out);
        memcpy(out, head, (size_t)hl);
        memcpy(out + hl, body, blen);
        const char *hdrs[] = {"X-Echo", "yes", NULL};
        http_respond(r, 200, "application/octet-stream", out, (size_t)hl + blen, hdrs);
        free(out);
    } else if (strcmp(path, "/hold") == 0) {
        pthread_mutex_lock(&t->mu);
        assert_true(t->nheld < TH_MAX_HELD);
        t->held[t->nheld++] = r;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    } else if (strcmp(path, "/stream") == 0) {
        th_stream *st = calloc(1, sizeof *st);
        assert_non_null(st);
        st->t = t;
        const char *mode = http_req_query(r, "mode");
        st->mode = mode == NULL                   ? "hb"
                   : strcmp(mode, "wake") == 0    ? "wake"
                   : strcmp(mode, "forever") == 0 ? "forever"
                                                  : "hb";
        int hb = strcmp(st->mode, "hb") == 0 ? 150 : 0;
        pthread_mutex_lock(&t->mu);
        t->stream_req = r;
        pthread_mutex_unlock(&t->mu);
        http_respond_stream(r, 200, "text/plain", th_produce, st, th_stream_free, hb);
    } else {
        http_respond(r, 404, "text/plain", "no\n", 3, NULL);
    }
}

static void th_init(th_ctx *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void th_fini(th_ctx *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

/* Wait until at least n requests are held; false on timeout. */
static bool th_wait_held(th_ctx *t, int n, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    while (t->nheld < n && th_now_ms() < end) {
        pthread_mutex_unlock(&t->mu);
        th_sleep_ms(5);
        pthread_mutex_lock(&t->mu);
    }
    bool ok = t->nheld >= n;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static http_server *th_start(th_ctx *t, const http_limits *lim)
{
    http_server *s = NULL;
    sa_err err;
    int rc = http_start("127.0.0.1:0", lim, th_handler, t, &s, &err);
    if (rc != 0)
        fail_msg("http_start: %s: %s", sa_err_name(rc), err.msg);
    assert_true(http_port(s) > 0);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Client helpers (libcurl)                                                  */
/* ------------------------------------------------------------------------ */

typedef struct th_resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char hdrs[8192];
    size_t hlen;
} th_resp;

typedef struct th_src {
    const char *data;
    size_t len, off;
} th_src;

static size_t th_write(char *p, size_t sz, size_t n, void *ud)
{
    th_resp *r = ud;
    size_t k = sz * n;
    char *nb = realloc(r->body, r->len + k + 1);
    if (nb == NULL)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, k);
    r->len += k;
    r->body[r->len] = '\0';
    return k;
}

static size_t th_header(char *p, size_t sz, size_t n, void *ud)
{
    th_resp *r = ud;
    size_t k = sz * n;
    if (r->hlen + k < sizeof r->hdrs) {
        memcpy(r->hdrs + r->hlen, p, k);
        r->hlen += k;
        r->hdrs[r->hlen] = '\0';
    }
    return k;
}

static size_t th_read(char *buf, size_t sz, size_t n, void *ud)
{
    th_src *s = ud;
    size_t k = sz * n;
    if (k > s->len - s->off)
        k = s->len - s->off;
    memcpy(buf, s->data + s->off, k);
    s->off += k;
    return k;
}

static void th_resp_free(th_resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Set up an easy handle; *hl (if any) is the caller's to free after. */
static CURL *th_easy(int port, const char *method, const char *target, const char *const *hdrs,
                     const void *body, size_t blen, bool chunked, long timeout_ms, th_resp *out,
                     th_src *src, struct curl_slist **hl)
{
    CURL *e = curl_easy_init();
    assert_non_null(e);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, target);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, th_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, th_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_PRIVATE, out);
    *hl = NULL;
    for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i++)
        *hl = curl_slist_append(*hl, hdrs[i]);
    if (body != NULL) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        if (chunked) {
            src->data = body;
            src->len = blen;
            src->off = 0;
            curl_easy_setopt(e, CURLOPT_READFUNCTION, th_read);
            curl_easy_setopt(e, CURLOPT_READDATA, src);
            *hl = curl_slist_append(*hl, "Transfer-Encoding: chunked");
        } else {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        }
    }
    if (method != NULL)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (*hl != NULL)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hl);
    return e;
}

static void th_do(int port, const char *method, const char *target, const char *const *hdrs,
                  const void *body, size_t blen, bool chunked, long timeout_ms, th_resp *out)
{
    memset(out, 0, sizeof *out);
    th_src src;
    struct curl_slist *hl;
    CURL *e = th_easy(port, method, target, hdrs, body, blen, chunked, timeout_ms, out, &src, &hl);
    out->rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hl);
}

static void th_get_ok(int port)
{
    th_resp r;
    th_do(port, NULL, "/echo?q=ok", NULL, NULL, 0, false, 5000, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "GET /echo q=ok"));
    th_resp_free(&r);
}

/* Run a curl multi until every handle is done or timeout_ms passes. */
static void th_multi_run(CURLM *m, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    int running = 1;
    while (running > 0 && th_now_ms() < end) {
        curl_multi_perform(m, &running);
        if (running > 0)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        th_resp *out;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&out);
        out->rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &out->status);
    }
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */
/* ------------------------------------------------------------------------ */

static void test_http_start_rejects_bad_input(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_server *s = (http_server *)0x1;
    sa_err err;
    assert_int_equal(http_start("127.0.0.1", NULL, th_handler, &t, &s, &err), SA_EINVAL);
    assert_int_equal(http_start("127.0.0.1:99999", NULL, th_handler, &t, &s, &err), SA_EINVAL);
    assert_int_equal(http_start("::1:80", NULL, th_handler, &t, &s, &err), SA_EINVAL);
    http_limits l;
    http_limits_init(&l);
    l.threads = 0;
    assert_int_equal(http_start("127.0.0.1:0", &l, th_handler, &t, &s, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "threads"));
    assert_ptr_equal(s, (http_server *)0x1); /* untouched on error */

    /* Address in use: the system's reason is in the message. */
    http_server *a = th_start(&t, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", http_port(a));
    int rc = http_start(addr, NULL, th_handler, &t, &s, &err);
    assert_int_equal(rc, SA_ESYS);
    assert_non_null(strstr(err.msg, "in use"));
    http_stop(a);
    http_stop(NULL);
    th_fini(&t);
}

static void test_http_echo_round_trip(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_server *s = th_start(&t, NULL);
    int port = http_port(s);

    static const char body[] = "hello\0world"; /* binary: a NUL inside */
    const char *hdrs[] = {"X-Test: Value 1", "Authorization: bearer tok-123  ", NULL};
    th_resp r;
    th_do(port, NULL, "/echo?q=a%20b&z", hdrs, body, sizeof body - 1, false, 5000, &r);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    const char *head = "POST /echo q=a b h=Value 1 b=tok-123 c=1\n";
    assert_int_equal(r.len, strlen(head) + sizeof body - 1);
    assert_memory_equal(r.body, head, strlen(head));
    assert_memory_equal(r.body + strlen(head), body, sizeof body - 1);
    assert_non_null(strstr(r.hdrs, "X-Echo: yes"));
    assert_non_null(strstr(r.hdrs, "application/octet-stream"));
    th_resp_free(&r);

    /* No body, no bearer (other scheme), other method; chunked upload. */
    const char *h2[] = {"Authorization: Basic Zm9v", NULL};
    th_do(port, "DELETE", "/echo", h2, NULL, 0, false, 5000, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "DELETE /echo q=(null) h=(null) b=(null) c=1\n");
    th_resp_free(&r);
    char big[5000];
    memset(big, 'x', sizeof big);
    th_do(port, NULL, "/echo", NULL, big, sizeof big, true, 5000, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, strlen("POST /echo q=(null) h=(null) b=(null) c=1\n") + sizeof big);
    th_resp_free(&r);

    th_do(port, NULL, "/nope", NULL, NULL, 0, false, 5000, &r);
    assert_int_equal(r.status, 404);
    th_resp_free(&r);
    assert_int_equal(atomic_load(&t.calls), 4);
    http_stop(s);
    th_fini(&t);
}

static void test_http_body_too_large(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_limits l;
    http_limits_init(&l);
    l.max_body = 1024;
    http_server *s = th_start(&t, &l);
    int port = http_port(s);
    size_t n = 64 << 10;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'y', n);
    th_resp r;

    /* Exactly the limit is fine. */
    th_do(port, NULL, "/echo", NULL, big, 1024, false, 5000, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    int calls = atomic_load(&t.calls);

    /* Content-Length over the limit: refused before the body is read. */
    th_do(port, NULL, "/echo", NULL, big, n, false, 5000, &r);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    /* Any method, not only POST/PUT. */
    th_do(port, "PATCH", "/echo", NULL, big, n, false, 5000, &r);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    /* Same with "Expect: 100-continue". */
    const char *expect[] = {"Expect: 100-continue", NULL};
    th_do(port, NULL, "/echo", expect, big, n, false, 5000, &r);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    /* Chunked upload: the size shows only while reading. */
    th_do(port, NULL, "/echo", NULL, big, n, true, 5000, &r);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    const char *noexpect[] = {"Expect:", NULL};
    th_do(port, NULL, "/echo", noexpect, big, 1025, true, 5000, &r);
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    assert_int_equal(atomic_load(&t.calls), calls); /* handler never called */

    th_get_ok(port); /* and the server still serves */
    free(big);
    http_stop(s);
    th_fini(&t);
}

typedef struct th_responder {
    th_ctx *t;
    int n;
} th_responder;

/* Answer every held request from this thread, with its own "q" echoed. */
static void *th_respond_all(void *arg)
{
    th_responder *rr = arg;
    if (!th_wait_held(rr->t, rr->n, 10000))
        return (void *)1;
    th_sleep_ms(50); /* let them all settle into WAITING */
    pthread_mutex_lock(&rr->t->mu);
    int n = rr->t->nheld;
    http_req *held[TH_MAX_HELD];
    memcpy(held, rr->t->held, (size_t)n * sizeof held[0]);
    rr->t->nheld = 0;
    pthread_mutex_unlock(&rr->t->mu);
    for (int i = 0; i < n; i++) {
        char b[64];
        int bl = snprintf(b, sizeof b, "late %s", nz(http_req_query(held[i], "q")));
        http_respond(held[i], 200, "text/plain", b, (size_t)bl, NULL);
    }
    return NULL;
}

static void test_http_long_poll_answered_later(void **state)
{
    (void)state;
    enum { N = 200 };
    th_ctx t;
    th_init(&t);
    http_server *s = th_start(&t, NULL);
    int port = http_port(s);

    CURLM *m = curl_multi_init();
    static th_resp out[N];
    CURL *e[N];
    struct curl_slist *hl[N];
    th_src src[N];
    for (int i = 0; i < N; i++) {
        memset(&out[i], 0, sizeof out[i]);
        char target[64];
        snprintf(target, sizeof target, "/hold?q=%d", i);
        e[i] = th_easy(port, NULL, target, NULL, NULL, 0, false, 15000, &out[i], &src[i], &hl[i]);
        curl_multi_add_handle(m, e[i]);
    }
    th_responder rr = {&t, N};
    pthread_t thr;
    assert_int_equal(pthread_create(&thr, NULL, th_respond_all, &rr), 0);
    th_multi_run(m, 15000);
    void *tr;
    pthread_join(thr, &tr);
    assert_null(tr);
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "late %d", i);
        assert_int_equal(out[i].rc, CURLE_OK);
        assert_int_equal(out[i].status, 200);
        assert_string_equal(out[i].body, want);
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
        curl_slist_free_all(hl[i]);
        th_resp_free(&out[i]);
    }
    curl_multi_cleanup(m);
    http_stop(s);
    th_fini(&t);
}

static void test_http_client_gone_while_waiting(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_server *s = th_start(&t, NULL);
    int port = http_port(s);

    th_resp r;
    th_do(port, NULL, "/hold?q=gone", NULL, NULL, 0, false, 300, &r);
    assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT); /* the client gave up */
    th_resp_free(&r);
    assert_true(th_wait_held(&t, 1, 2000));
    pthread_mutex_lock(&t.mu);
    http_req *held = t.held[0];
    t.nheld = 0;
    pthread_mutex_unlock(&t.mu);
    assert_string_equal(http_req_query(held, "q"), "gone"); /* still readable (R2) */
    /* The answer goes nowhere; the request is freed (ASan checks). */
    char big[100000];
    memset(big, 'z', sizeof big);
    http_respond(held, 200, "text/plain", big, sizeof big, NULL);
    th_sleep_ms(100);
    th_get_ok(port);

    /* A stream whose client leaves while it waits: pfree still runs. */
    th_do(port, NULL, "/stream?mode=forever", NULL, NULL, 0, false, 300, &r);
    assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT);
    th_resp_free(&r);
    pthread_mutex_lock(&t.mu);
    if (t.stream_req != NULL)
        http_stream_wake(t.stream_req); /* reader runs, WAITs again */
    pthread_mutex_unlock(&t.mu);
    th_get_ok(port);
    http_stop(s); /* ends the waiting stream (S5) */
    assert_int_equal(atomic_load(&t.pfrees), 1);
    th_fini(&t);
}

static int th_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void test_http_slow_header_is_cut(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_limits l;
    http_limits_init(&l);
    l.conn_timeout_s = 1;
    http_server *s = th_start(&t, &l);
    int port = http_port(s);

    int fd = th_connect(port);
    const char *req =
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int64_t t0 = th_now_ms(), cut_at = -1;
    for (size_t i = 0; cut_at < 0 && th_now_ms() - t0 < 6000; i++) {
        if (send(fd, req + i % strlen(req), 1, MSG_NOSIGNAL) != 1) {
            cut_at = th_now_ms() - t0;
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) > 0) {
            char b[512];
            if (recv(fd, b, sizeof b, 0) <= 0)
                cut_at = th_now_ms() - t0;
        }
        if (i == 2)
            th_get_ok(port); /* others are served meanwhile */
    }
    close(fd);
    assert_true(cut_at >= 900);  /* not before the deadline ... */
    assert_true(cut_at <= 3000); /* ... and not much after */
    th_get_ok(port);
    assert_int_equal(atomic_load(&t.calls), 2);
    http_stop(s);
    th_fini(&t);
}

static void test_http_oversized_header_refused(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_server *s = th_start(&t, NULL); /* conn_memory 32 KiB */
    int port = http_port(s);

    size_t n = 64 << 10;
    char *cookie = malloc(n + 16);
    assert_non_null(cookie);
    strcpy(cookie, "Cookie: c=");
    memset(cookie + 10, 'k', n);
    cookie[10 + n] = '\0';
    const char *hdrs[] = {cookie, NULL};
    th_resp r;
    th_do(port, NULL, "/echo", hdrs, NULL, 0, false, 5000, &r);
    /* Refused: an error status, or the connection closed. */
    assert_true(r.rc != CURLE_OK || r.status == 431 || r.status == 413 || r.status == 400);
    assert_int_equal(atomic_load(&t.calls), 0);
    th_resp_free(&r);
    free(cookie);
    th_get_ok(port);
    http_stop(s);
    th_fini(&t);
}

static void test_http_stream_heartbeat(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_server *s = th_start(&t, NULL);
    int port = http_port(s);

    /* WAIT, WAIT (each resumed by the 150 ms heartbeat), data, end. */
    int64_t t0 = th_now_ms();
    th_resp r;
    th_do(port, NULL, "/stream", NULL, NULL, 0, false, 5000, &r);
    int64_t took = th_now_ms() - t0;
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "data\n");
    assert_non_null(strstr(r.hdrs, "chunked"));
    assert_true(took >= 280);
    assert_int_equal(atomic_load(&t.stream_calls), 4);
    th_resp_free(&r);
    for (int i = 0; i < 200 && atomic_load(&t.pfrees) < 1; i++)
        th_sleep_ms(10);
    assert_int_equal(atomic_load(&t.pfrees), 1);

    /* HTTP/1.0 has no chunked encoding: the body ends with the connection,
     * and waiting works the same. */
    memset(&r, 0, sizeof r);
    th_src src;
    struct curl_slist *hl;
    CURL *e = th_easy(port, NULL, "/stream", NULL, NULL, 0, false, 5000, &r, &src, &hl);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_0);
    r.rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(e);
    assert_int_equal(r.rc, CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "data\n");
    th_resp_free(&r);
    for (int i = 0; i < 200 && atomic_load(&t.pfrees) < 2; i++)
        th_sleep_ms(10);
    assert_int_equal(atomic_load(&t.pfrees), 2);
    http_stop(s);
    th_fini(&t);
}

typedef struct th_waker {
    th_ctx *t;
    int delay_ms;
} th_waker;

static void *th_wake_later(void *arg)
{
    th_waker *w = arg;
    th_sleep_ms(w->delay_ms);
    pthread_mutex_lock(&w->t->mu);
    if (w->t->stream_req != NULL)
        http_stream_wake(w->t->stream_req);
    pthread_mutex_unlock(&w->t->mu);
    return NULL;
}

static void test_http_stream_wake(void **state)
{
    (void)state;
    th_ctx t;
    th_init(&t);
    http_limits l;
    http_limits_init(&l);
    l.threads = 1;
    http_server *s = th_start(&t, &l);
    int port = http_port(s);

    /* No heartbeat: only the wake gets the producer called again.  (One
     * polling thread here, to cover that configuration too.) */
    th_waker w = {&t, 300};
    pthread_t thr;
    assert_int_equal(pthread_create(&thr, NULL, th_wake_later, &w), 0);
    int64_t t0 = th_now_ms();
    th_resp r;
    th_do(port, NULL, "/stream?mode=wake", NULL, NULL, 0, false, 5000, &r);
    int64_t took = th_now_ms() - t0;
    pthread_join(thr, NULL);
    assert_int_equal(r.rc, CURLE_OK);
    assert_string_equal(r.body, "data\n");
    assert_true(took >= 250);
    assert_int_equal(atomic_load(&t.stream_calls), 3);
    th_resp_free(&r);
    http_stop(s);
    assert_int_equal(atomic_load(&t.pfrees), 1);
    th_fini(&t);
}

typedef struct th_stopper {
    th_ctx *t;
    http_server *s;
    int n;
    int64_t took;
} th_stopper;

static void *th_stop_when_held(void *arg)
{
    th_stopper *st = arg;
    if (!th_wait_held(st->t, st->n, 10000))
        return (void *)1;
    th_sleep_ms(100);
    int64_t t0 = th_now_ms();
    http_stop(st->s);
    st->took = th_now_ms() - t0;
    return NULL;
}

static void test_http_stop_with_pending(void **state)
{
    (void)state;
    enum { N = 20 };
    th_ctx t;
    th_init(&t);
    http_server *s = th_start(&t, NULL);
    int port = http_port(s);

    CURLM *m = curl_multi_init();
    static th_resp out[N + 1];
    CURL *e[N + 1];
    struct curl_slist *hl[N + 1];
    th_src src[N + 1];
    for (int i = 0; i <= N; i++) {
        memset(&out[i], 0, sizeof out[i]);
        char target[64];
        if (i < N)
            snprintf(target, sizeof target, "/hold?q=%d", i);
        else
            snprintf(target, sizeof target, "/stream?mode=forever");
        e[i] = th_easy(port, NULL, target, NULL, NULL, 0, false, 10000, &out[i], &src[i], &hl[i]);
        curl_multi_add_handle(m, e[i]);
    }
    th_stopper st = {&t, s, N, 0};
    pthread_t thr;
    assert_int_equal(pthread_create(&thr, NULL, th_stop_when_held, &st), 0);
    th_multi_run(m, 10000);
    void *tr;
    pthread_join(thr, &tr);
    assert_null(tr);
    assert_true(st.took < 3000);
    for (int i = 0; i <= N; i++) {
        /* 503, the stream's clean end, or a closed connection. */
        if (out[i].rc == CURLE_OK)
            assert_true(out[i].status == (i < N ? 503 : 200));
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
        curl_slist_free_all(hl[i]);
        th_resp_free(&out[i]);
    }
    curl_multi_cleanup(m);
    /* R1/R5: answering after the stop is a no-op that frees. */
    pthread_mutex_lock(&t.mu);
    for (int i = 0; i < t.nheld; i++)
        http_respond(t.held[i], 200, NULL, NULL, 0, NULL);
    t.nheld = 0;
    pthread_mutex_unlock(&t.mu);
    assert_int_equal(atomic_load(&t.pfrees), 1);
    th_fini(&t);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_start_rejects_bad_input),
        cmocka_unit_test(test_http_echo_round_trip),
        cmocka_unit_test(test_http_body_too_large),
        cmocka_unit_test(test_http_long_poll_answered_later),
        cmocka_unit_test(test_http_client_gone_while_waiting),
        cmocka_unit_test(test_http_slow_header_is_cut),
        cmocka_unit_test(test_http_oversized_header_refused),
        cmocka_unit_test(test_http_stream_heartbeat),
        cmocka_unit_test(test_http_stream_wake),
        cmocka_unit_test(test_http_stop_with_pending),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
