/*
 * http.c — the bridge's HTTP/1.1 server on libmicrohttpd (MHD): requests
 * handed over whole, answers from any thread on suspended connections,
 * chunked streams that can wait, and the limits of http_limits.  The
 * request lifetime and the rules callers rely on are in http.h.
 *
 * Threads: MHD's polling threads (lim.threads, internal polling) run the
 * access handler, the content readers and the completion callbacks; one
 * "timer" thread of ours resumes streams whose heartbeat is due and shuts
 * down connections past their request deadline.
 *
 * Locks, always taken in this order (never the other way):
 *
 *     srv->lmu  ─▶  r->mu  ─▶  MHD's own (inside MHD_suspend/resume_connection)
 *                   r->mu  ─▶  srv->tmu (a leaf: nothing is taken under it)
 *
 * srv->lmu guards the list of live requests (those with an open
 * connection); r->mu guards a request's state, its stored response and its
 * stream flags; srv->tmu guards the timer list and the connection records.
 * MHD_suspend_connection and MHD_resume_connection are called with r->mu
 * held, which is what makes "resume only after suspend, and only once"
 * hold: whoever changes the state away from WAITING (or clears
 * stream_susp) under r->mu is the one who resumes.
 *
 * Invariants:
 *   1. A connection is suspended iff its request is WAITING or its stream
 *      has stream_susp set; both change only under r->mu, together with the
 *      MHD call.
 *   2. A request on the timer list is stream-suspended, hence its
 *      connection is open and the request alive (suspended connections
 *      never close; only our resume lets them go on).
 *   3. r->refs counts: the connection (until the completion callback), the
 *      caller (from the handler's call until the answer), a stream response
 *      (until its free callback), and the timer thread while it holds r.
 *   4. Once stopping is set, no connection is suspended again; http_stop
 *      resumes every suspended one before MHD_stop_daemon (which must never
 *      see a suspended connection).
 */
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "sa/sa_alloc.h"

/* After the body crosses max_body we keep reading (and dropping) at most
 * this much more so the client can be told 413; past it we hang up. */
#define HTTP_DISCARD_MAX ((size_t)1 << 20)
/* The request deadline grows by one second per this many body bytes. */
#define HTTP_DEADLINE_BYTES_PER_S ((size_t)64 << 10)
/* The timer thread looks at connection deadlines this often. */
#define HTTP_WATCHDOG_MS 200
/* A body buffer starts at most this big and doubles as bytes arrive. */
#define HTTP_BODY_CHUNK ((size_t)64 << 10)
/* Buffer MHD gives a stream producer when it cannot use chunked encoding. */
#define HTTP_STREAM_BLOCK 4096

/* ====================================================================== */
/* Types                                                                  */
/* ====================================================================== */

/* A request's state; see the drawing in http.h. */
typedef enum http_state {
    HTTP_ST_RECEIVING,  /* head read, body arriving */
    HTTP_ST_IN_HANDLER, /* the handler runs on the MHD thread */
    HTTP_ST_WAITING,    /* connection suspended until the answer */
    HTTP_ST_READY,      /* answer stored, connection resumed, to queue */
    HTTP_ST_QUEUED,     /* a response went to MHD; later answers are dropped */
    HTTP_ST_CLOSED,     /* the connection is done with this request */
} http_state;

typedef struct http_kv {
    char *name;
    char *value;
} http_kv;

/* One per TCP connection (MHD's socket context), for the request deadline.
 * On srv->conns, under srv->tmu. */
typedef struct http_conn {
    struct http_conn *prev, *next;
    int fd;           /* owned by MHD; valid until the CLOSED notification */
    bool receiving;   /* a request is arriving: the deadline applies */
    int64_t deadline; /* http__now_ms() */
} http_conn;

struct http_req {
    pthread_mutex_t mu;
    atomic_int refs;  /* invariant 3 */
    http_server *srv; /* valid while the connection is open */

    /* --- under mu --- */
    struct MHD_Connection *conn; /* NULL once CLOSED */
    http_state state;
    bool answered;             /* the caller called http_respond* */
    struct MHD_Response *resp; /* stored answer (NULL + answered: 500) */
    unsigned status;
    bool stream_susp;  /* the stream waits for wake / heartbeat */
    bool wake_pending; /* a wake came while the producer ran */
    uint64_t susp_gen; /* counts stream suspensions (stale timers) */

    /* --- MHD thread only (access handler, content reader) --- */
    bool too_big;
    size_t discarded;
    char *body;
    size_t len, cap;
    http_producer prod;
    void *pctx;
    void (*pfree)(void *);
    int heartbeat_ms;

    /* --- immutable after the first access-handler call --- */
    char *method, *path, *client, *bearer;
    http_kv *hdrs, *args;
    size_t nhdrs, nargs, hcap, acap;
    bool oom; /* a copy failed */

    /* --- under srv->lmu: the live-request list --- */
    struct http_req *lprev, *lnext;
    /* --- under srv->tmu: the timer list --- */
    bool in_timers;
    int64_t due;
    uint64_t due_gen;
    struct http_req *tprev, *tnext;
    /* --- timer thread only: its list of due requests --- */
    struct http_req *dnext;
};

struct http_server {
    struct MHD_Daemon *d;
    http_limits lim;
    http_handler h;
    void *ctx;
    int port;
    atomic_bool stopping;

    pthread_mutex_t lmu;
    pthread_cond_t lcv; /* signalled when a live request goes */
    http_req *reqs;
    size_t nreqs;

    pthread_mutex_t tmu;
    pthread_cond_t tcv; /* the timer thread's wake-up */
    http_req *timers;
    http_conn *conns;
    bool tquit;
    bool tstarted;
    pthread_t tthr;
};

/* ====================================================================== */
/* Small helpers                                                          */
/* ====================================================================== */

static int64_t http__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void http__abstime(int64_t at_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(at_ms / 1000);
    ts->tv_nsec = (long)(at_ms % 1000) * 1000000L;
}

static void http__req_free(http_req *r)
{
    for (size_t i = 0; i < r->nhdrs; i++) {
        sa_free(r->hdrs[i].name);
        sa_free(r->hdrs[i].value);
    }
    for (size_t i = 0; i < r->nargs; i++) {
        sa_free(r->args[i].name);
        sa_free(r->args[i].value);
    }
    sa_free(r->hdrs);
    sa_free(r->args);
    sa_free(r->method);
    sa_free(r->path);
    sa_free(r->client);
    sa_free(r->bearer);
    sa_free(r->body);
    pthread_mutex_destroy(&r->mu);
    sa_free(r);
}

static void http__ref(http_req *r)
{
    atomic_fetch_add(&r->refs, 1);
}

static void http__unref(http_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        http__req_free(r);
}

/* A response with a static body; NULL when out of memory. */
static struct MHD_Response *http__static(const char *text)
{
    return MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
}

/* Queue resp (consumed) with status; NULL resp = an empty 500 if we can. */
static enum MHD_Result http__queue(struct MHD_Connection *c, unsigned status,
                                   struct MHD_Response *resp)
{
    if (resp == NULL) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        resp = http__static("");
        if (resp == NULL)
            return MHD_NO; /* MHD closes the connection */
    }
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp); /* may run a stream's pfree: no lock held here */
    return rc;
}

static const char http__msg_too_big[] = "request body exceeds the server's limit\n";
static const char http__msg_stopping[] = "server is shutting down\n";

/* Our own short answers (413, 503), closing the connection; NULL when out
 * of memory. */
static struct MHD_Response *http__text(unsigned status)
{
    struct MHD_Response *resp =
        http__static(status == MHD_HTTP_CONTENT_TOO_LARGE ? http__msg_too_big : http__msg_stopping);
    if (resp == NULL)
        return NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return resp;
}

static enum MHD_Result http__queue_text(struct MHD_Connection *c, unsigned status)
{
    struct MHD_Response *resp = http__text(status);
    return resp == NULL ? MHD_NO : http__queue(c, status, resp);
}

/* ====================================================================== */
/* Connection records: the request deadline                              */
/* ====================================================================== */

static http_conn *http__conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci == NULL ? NULL : (http_conn *)ci->socket_context;
}

/* Arm (receiving) or disarm the deadline of c's connection. */
static void http__deadline(http_server *s, struct MHD_Connection *c, bool receiving,
                           int64_t deadline)
{
    http_conn *hc = http__conn_of(c);
    if (hc == NULL)
        return;
    pthread_mutex_lock(&s->tmu);
    hc->receiving = receiving;
    hc->deadline = deadline;
    pthread_mutex_unlock(&s->tmu);
}

static void http__notify_conn(void *cls, struct MHD_Connection *c, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        http_conn *hc = sa_calloc(1, sizeof *hc);
        if (hc == NULL)
            return; /* no deadline for this one; MHD's idle timeout still holds */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        hc->fd = ci == NULL ? -1 : ci->connect_fd;
        hc->receiving = true;
        hc->deadline = http__now_ms() + (int64_t)s->lim.conn_timeout_s * 1000;
        pthread_mutex_lock(&s->tmu);
        hc->next = s->conns;
        if (s->conns != NULL)
            s->conns->prev = hc;
        s->conns = hc;
        pthread_mutex_unlock(&s->tmu);
        *socket_ctx = hc;
        return;
    }
    /* CLOSED: MHD closes the socket only after this returns, so the
     * watchdog never shuts down a reused descriptor. */
    http_conn *hc = *socket_ctx;
    if (hc == NULL)
        return;
    pthread_mutex_lock(&s->tmu);
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        s->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    pthread_mutex_unlock(&s->tmu);
    *socket_ctx = NULL;
    sa_free(hc);
}

/* ====================================================================== */
/* Timer thread: stream heartbeats and request deadlines                  */
/* ====================================================================== */

/* Under tmu. */
static void http__timer_add(http_server *s, http_req *r, int64_t due, uint64_t gen)
{
    r->due = due;
    r->due_gen = gen;
    r->in_timers = true;
    r->tprev = NULL;
    r->tnext = s->timers;
    if (s->timers != NULL)
        s->timers->tprev = r;
    s->timers = r;
    pthread_cond_signal(&s->tcv);
}

/* Under tmu. */
static void http__timer_del(http_server *s, http_req *r)
{
    if (!r->in_timers)
        return;
    if (r->tprev != NULL)
        r->tprev->tnext = r->tnext;
    else
        s->timers = r->tnext;
    if (r->tnext != NULL)
        r->tnext->tprev = r->tprev;
    r->tprev = r->tnext = NULL;
    r->in_timers = false;
}

/* Under r->mu with stream_susp set: let the stream's producer run again. */
static void http__stream_resume(http_req *r)
{
    http_server *s = r->srv;
    r->stream_susp = false;
    pthread_mutex_lock(&s->tmu);
    http__timer_del(s, r);
    pthread_mutex_unlock(&s->tmu);
    MHD_resume_connection(r->conn);
}

static void *http__timer_main(void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->tmu);
    while (!s->tquit) {
        int64_t now = http__now_ms();
        int64_t next = now + HTTP_WATCHDOG_MS;

        /* Deadlines: shut the socket down; MHD then sees the end of the
         * stream and closes the connection on its own thread. */
        for (http_conn *hc = s->conns; hc != NULL; hc = hc->next)
            if (hc->receiving && hc->fd >= 0 && now >= hc->deadline) {
                shutdown(hc->fd, SHUT_RDWR);
                hc->receiving = false;
            }

        /* Due heartbeats: take them off the list, with a reference each
         * (invariant 2 makes the increment safe), then resume outside tmu. */
        http_req *due = NULL;
        for (http_req *r = s->timers, *nx; r != NULL; r = nx) {
            nx = r->tnext;
            if (r->due <= now) {
                http__timer_del(s, r);
                http__ref(r);
                r->dnext = due;
                due = r;
            } else if (r->due < next) {
                next = r->due;
            }
        }
        if (due != NULL) {
            pthread_mutex_unlock(&s->tmu);
            for (http_req *r = due, *nx; r != NULL; r = nx) {
                nx = r->dnext;
                r->dnext = NULL;
                pthread_mutex_lock(&r->mu);
                if (r->stream_susp && r->susp_gen == r->due_gen)
                    http__stream_resume(r);
                pthread_mutex_unlock(&r->mu);
                http__unref(r);
            }
            pthread_mutex_lock(&s->tmu);
            continue;
        }
        struct timespec ts;
        http__abstime(next, &ts);
        pthread_cond_timedwait(&s->tcv, &s->tmu, &ts);
    }
    pthread_mutex_unlock(&s->tmu);
    return NULL;
}

/* ====================================================================== */
/* Request head: copies of what the accessors return                      */
/* ====================================================================== */

static enum MHD_Result http__copy_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    http_req *r = cls;
    http_kv **arr = kind == MHD_HEADER_KIND ? &r->hdrs : &r->args;
    size_t *n = kind == MHD_HEADER_KIND ? &r->nhdrs : &r->nargs;
    size_t *cap = kind == MHD_HEADER_KIND ? &r->hcap : &r->acap;
    if (*n == *cap) {
        size_t nc = *cap == 0 ? 8 : *cap * 2;
        http_kv *na = sa_realloc(*arr, nc * sizeof *na);
        if (na == NULL)
            goto oom;
        *arr = na;
        *cap = nc;
    }
    char *k = sa_strdup(key == NULL ? "" : key);
    char *v = sa_strdup(value == NULL ? "" : value);
    if (k == NULL || v == NULL) {
        sa_free(k);
        sa_free(v);
        goto oom;
    }
    (*arr)[*n].name = k;
    (*arr)[*n].value = v;
    (*n)++;
    return MHD_YES;
oom:
    r->oom = true;
    return MHD_NO;
}

/* "Bearer TOKEN" → a copy of TOKEN (trailing blanks dropped), else NULL. */
static char *http__bearer_of(const char *auth, bool *oom)
{
    if (auth == NULL || strncasecmp(auth, "Bearer", 6) != 0 || (auth[6] != ' ' && auth[6] != '\t'))
        return NULL;
    const char *t = auth + 6;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    char *tok = sa_strndup(t, n);
    if (tok == NULL)
        *oom = true;
    return tok;
}

static char *http__client_of(struct MHD_Connection *c)
{
    char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?", buf[NI_MAXHOST + NI_MAXSERV + 4];
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    bool v6 = false;
    if (ci != NULL && ci->client_addr != NULL) {
        const struct sockaddr *sa = ci->client_addr;
        socklen_t sl =
            sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        v6 = sa->sa_family == AF_INET6;
        if (getnameinfo(sa, sl, host, sizeof host, serv, sizeof serv,
                        NI_NUMERICHOST | NI_NUMERICSERV) != 0)
            snprintf(host, sizeof host, "?");
    }
    snprintf(buf, sizeof buf, v6 ? "[%s]:%s" : "%s:%s", host, serv);
    return sa_strdup(buf);
}

/* Content-Length as a number; false if absent or not a plain number. */
static bool http__content_length(struct MHD_Connection *c, uint64_t *out)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (v == NULL || *v < '0' || *v > '9')
        return false;
    uint64_t n = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        if (n > (UINT64_MAX - 9) / 10)
            return false;
        n = n * 10 + (uint64_t)(*v - '0');
    }
    *out = n;
    return *v == '\0';
}

/* ====================================================================== */
/* The access handler                                                     */
/* ====================================================================== */

static void http__list_add(http_server *s, http_req *r)
{
    pthread_mutex_lock(&s->lmu);
    r->lprev = NULL;
    r->lnext = s->reqs;
    if (s->reqs != NULL)
        s->reqs->lprev = r;
    s->reqs = r;
    s->nreqs++;
    pthread_mutex_unlock(&s->lmu);
}

static void http__list_del(http_server *s, http_req *r)
{
    pthread_mutex_lock(&s->lmu);
    if (r->lprev != NULL)
        r->lprev->lnext = r->lnext;
    else
        s->reqs = r->lnext;
    if (r->lnext != NULL)
        r->lnext->lprev = r->lprev;
    r->lprev = r->lnext = NULL;
    s->nreqs--;
    pthread_cond_broadcast(&s->lcv);
    pthread_mutex_unlock(&s->lmu);
}

/* First call for a request: its head is complete. */
static enum MHD_Result http__begin(http_server *s, struct MHD_Connection *c, const char *url,
                                   const char *method, void **req_cls)
{
    http_req *r = sa_calloc(1, sizeof *r);
    if (r == NULL)
        return MHD_NO;
    pthread_mutex_init(&r->mu, NULL);
    atomic_init(&r->refs, 1); /* the connection's */
    r->srv = s;
    r->conn = c;
    r->state = HTTP_ST_RECEIVING;
    r->method = sa_strdup(method);
    r->path = sa_strdup(url);
    r->client = http__client_of(c);
    MHD_get_connection_values(c, MHD_HEADER_KIND, http__copy_kv, r);
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, http__copy_kv, r);
    r->bearer = http__bearer_of(
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &r->oom);
    if (r->oom || r->method == NULL || r->path == NULL || r->client == NULL) {
        http__req_free(r);
        return MHD_NO;
    }
    http__list_add(s, r);
    *req_cls = r; /* from here the completion callback releases it */

    uint64_t clen = 0;
    bool has_len = http__content_length(c, &clen);
    bool stopping = atomic_load(&s->stopping);
    if (stopping || (has_len && clen > s->lim.max_body)) {
        /* Early answer: MHD then refuses to read the body. */
        pthread_mutex_lock(&r->mu); /* http_stop may be looking at r */
        r->state = HTTP_ST_QUEUED;
        pthread_mutex_unlock(&r->mu);
        http__deadline(s, c, false, 0);
        return http__queue_text(c, stopping ? MHD_HTTP_SERVICE_UNAVAILABLE
                                            : MHD_HTTP_CONTENT_TOO_LARGE);
    }
    size_t bound = has_len ? (size_t)clen : s->lim.max_body;
    http_conn *hc = http__conn_of(c);
    if (hc != NULL) {
        pthread_mutex_lock(&s->tmu);
        hc->deadline += (int64_t)(bound / HTTP_DEADLINE_BYTES_PER_S) * 1000;
        pthread_mutex_unlock(&s->tmu);
    }
    if (has_len && clen > 0) {
        /* Memory follows the bytes that arrive, not the declared length. */
        size_t cap = (size_t)clen + 1 < HTTP_BODY_CHUNK ? (size_t)clen + 1 : HTTP_BODY_CHUNK;
        r->body = sa_malloc(cap);
        if (r->body == NULL)
            return MHD_NO;
        r->cap = cap;
    }
    return MHD_YES;
}

/* A piece of the body. */
static enum MHD_Result http__upload(http_server *s, http_req *r, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    if (r->too_big) {
        r->discarded += n;
        return r->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (n > s->lim.max_body - r->len) {
        /* MHD cannot take a response in the middle of a body: drop the
         * rest (up to HTTP_DISCARD_MAX) and answer 413 at its end. */
        r->too_big = true;
        r->discarded = n;
        sa_free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return r->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (r->len + n + 1 > r->cap) {
        /* No overflow: len + n + 1 <= max_body + 1 <= SIZE_MAX / 4 + 1. */
        size_t nc = r->cap == 0 ? 4096 : r->cap;
        while (nc < r->len + n + 1)
            nc *= 2;
        if (nc > s->lim.max_body + 1)
            nc = s->lim.max_body + 1;
        char *nb = sa_realloc(r->body, nc);
        if (nb == NULL)
            return MHD_NO;
        r->body = nb;
        r->cap = nc;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* The body is complete (or the connection was resumed with an answer). */
static enum MHD_Result http__complete(http_server *s, struct MHD_Connection *c, http_req *r)
{
    pthread_mutex_lock(&r->mu);
    switch (r->state) {
    case HTTP_ST_RECEIVING:
        break;
    case HTTP_ST_READY: {
        struct MHD_Response *resp = r->resp;
        unsigned status = r->status;
        r->resp = NULL;
        r->state = HTTP_ST_QUEUED;
        pthread_mutex_unlock(&r->mu);
        return http__queue(c, status, resp);
    }
    case HTTP_ST_WAITING:
        pthread_mutex_unlock(&r->mu);
        return MHD_YES; /* not expected while suspended; keep waiting */
    default:
        pthread_mutex_unlock(&r->mu);
        return MHD_NO;
    }

    /* MHD is never called with r->mu held, except suspend/resume: queueing
     * may run our callbacks, which take it. */
    http__deadline(s, c, false, 0);
    if (r->too_big || atomic_load(&s->stopping)) {
        bool too_big = r->too_big;
        r->state = HTTP_ST_QUEUED;
        pthread_mutex_unlock(&r->mu);
        if (too_big)
            return http__queue_text(c, MHD_HTTP_CONTENT_TOO_LARGE);
        return http__queue_text(c, MHD_HTTP_SERVICE_UNAVAILABLE);
    }
    if (r->body == NULL) {
        r->body = sa_malloc(1);
        if (r->body == NULL) {
            pthread_mutex_unlock(&r->mu);
            return MHD_NO;
        }
        r->cap = 1;
    }
    r->body[r->len] = '\0';
    r->state = HTTP_ST_IN_HANDLER;
    http__ref(r); /* the caller's, until its answer */
    pthread_mutex_unlock(&r->mu);

    s->h(s->ctx, r);

    pthread_mutex_lock(&r->mu);
    if (r->answered) {
        struct MHD_Response *resp = r->resp;
        unsigned status = r->status;
        r->resp = NULL;
        r->state = HTTP_ST_QUEUED;
        pthread_mutex_unlock(&r->mu);
        return http__queue(c, status, resp);
    }
    if (atomic_load(&s->stopping)) { /* invariant 4: never suspend now */
        r->state = HTTP_ST_QUEUED;
        pthread_mutex_unlock(&r->mu);
        return http__queue_text(c, MHD_HTTP_SERVICE_UNAVAILABLE);
    }
    r->state = HTTP_ST_WAITING;
    MHD_suspend_connection(c);
    pthread_mutex_unlock(&r->mu);
    return MHD_YES;
}

static enum MHD_Result http__access(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_size, void **req_cls)
{
    (void)version;
    http_server *s = cls;
    http_req *r = *req_cls;
    if (r == NULL)
        return http__begin(s, c, url, method, req_cls);
    if (*upload_size > 0)
        return http__upload(s, r, upload_data, upload_size);
    return http__complete(s, c, r);
}

static void http__completed(void *cls, struct MHD_Connection *c, void **req_cls,
                            enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    http_server *s = cls;
    http_req *r = *req_cls;
    if (r == NULL)
        return;
    *req_cls = NULL;
    pthread_mutex_lock(&r->mu);
    r->state = HTTP_ST_CLOSED;
    r->conn = NULL;
    struct MHD_Response *resp = r->resp;
    r->resp = NULL;
    pthread_mutex_unlock(&r->mu);
    if (resp != NULL)
        MHD_destroy_response(resp);
    pthread_mutex_lock(&s->tmu); /* invariant 2 says it is not there; be sure */
    http__timer_del(s, r);
    pthread_mutex_unlock(&s->tmu);
    http__list_del(s, r);
    /* The next request on a kept-alive connection has its own deadline. */
    http__deadline(s, c, true, http__now_ms() + (int64_t)s->lim.conn_timeout_s * 1000);
    http__unref(r);
}

/* ====================================================================== */
/* Answers                                                                */
/* ====================================================================== */

/* Hand resp (consumed; NULL = could not build one) to r: see R1. */
static void http__answer(http_req *r, unsigned status, struct MHD_Response *resp)
{
    pthread_mutex_lock(&r->mu);
    assert(!r->answered && "a request must be answered exactly once");
    r->answered = true;
    if (r->state == HTTP_ST_IN_HANDLER || r->state == HTTP_ST_WAITING) {
        r->resp = resp;
        r->status = status;
        resp = NULL;
        if (r->state == HTTP_ST_WAITING) {
            r->state = HTTP_ST_READY;
            MHD_resume_connection(r->conn);
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (resp != NULL)
        MHD_destroy_response(resp); /* closed or already answered: dropped */
    http__unref(r);
}

static unsigned http__status(int status)
{
    return status >= 100 && status <= 599 ? (unsigned)status : MHD_HTTP_INTERNAL_SERVER_ERROR;
}

/* Add content_type and the name/value list; false if one failed. */
static bool http__headers(struct MHD_Response *resp, const char *content_type,
                          const char *const *headers)
{
    if (content_type != NULL &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES)
        return false;
    for (size_t i = 0; headers != NULL && headers[i] != NULL && headers[i + 1] != NULL; i += 2)
        if (MHD_add_response_header(resp, headers[i], headers[i + 1]) != MHD_YES)
            return false;
    return true;
}

void http_respond(http_req *r, int status, const char *content_type, const void *body, size_t len,
                  const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        body == NULL ? 0 : len, (void *)(body == NULL ? "" : body), MHD_RESPMEM_MUST_COPY);
    if (resp != NULL && !http__headers(resp, content_type, headers)) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    http__answer(r, http__status(status), resp);
}

/* MHD's content reader for a stream: S1, S2, S5. */
static ssize_t http__stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    http_req *r = cls;
    for (;;) {
        ssize_t n = r->prod(r->pctx, buf, max);
        if (n > 0)
            return (size_t)n > max ? (ssize_t)max : n;
        if (n == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (n != HTTP_STREAM_WAIT)
            return MHD_CONTENT_READER_END_WITH_ERROR;

        pthread_mutex_lock(&r->mu);
        if (r->conn == NULL || atomic_load(&r->srv->stopping)) {
            /* S5: cut, not ended: a clean end would pass an answer the
             * producer never made (say an empty body) for a whole one */
            pthread_mutex_unlock(&r->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (r->wake_pending) {
            r->wake_pending = false;
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        r->stream_susp = true;
        r->susp_gen++;
        if (r->heartbeat_ms > 0) {
            pthread_mutex_lock(&r->srv->tmu);
            http__timer_add(r->srv, r, http__now_ms() + r->heartbeat_ms, r->susp_gen);
            pthread_mutex_unlock(&r->srv->tmu);
        }
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return 0; /* suspended: MHD asks again once resumed */
    }
}

/* MHD's free callback for a stream response: S3. */
static void http__stream_free(void *cls)
{
    http_req *r = cls;
    if (r->pfree != NULL)
        r->pfree(r->pctx);
    http__unref(r);
}

void http_respond_stream(http_req *r, int status, const char *content_type, http_producer p,
                         void *pctx, void (*pfree)(void *), int heartbeat_ms)
{
    r->prod = p;
    r->pctx = pctx;
    r->pfree = pfree;
    r->heartbeat_ms = heartbeat_ms;
    http__ref(r); /* the stream's, dropped by http__stream_free */
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, http__stream_read, r, http__stream_free);
    if (resp == NULL) {
        http__stream_free(r); /* pfree now, as promised */
    } else if (!http__headers(resp, content_type, NULL)) {
        MHD_destroy_response(resp); /* runs http__stream_free */
        resp = NULL;
    }
    http__answer(r, http__status(status), resp);
}

void http_stream_wake(http_req *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->stream_susp)
        http__stream_resume(r);
    else if (r->conn != NULL)
        r->wake_pending = true;
    pthread_mutex_unlock(&r->mu);
}

/* ====================================================================== */
/* Accessors                                                              */
/* ====================================================================== */

const char *http_req_method(const http_req *r)
{
    return r->method;
}
const char *http_req_path(const http_req *r)
{
    return r->path;
}
const char *http_req_bearer(const http_req *r)
{
    return r->bearer;
}
const char *http_req_client(const http_req *r)
{
    return r->client;
}

const char *http_req_query(const http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nargs; i++)
        if (strcmp(r->args[i].name, name) == 0)
            return r->args[i].value;
    return NULL;
}

const char *http_req_header(const http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdrs; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value;
    return NULL;
}

const void *http_req_body(const http_req *r, size_t *len)
{
    if (len != NULL)
        *len = r->len;
    return r->body != NULL ? r->body : "";
}

/* ====================================================================== */
/* Server                                                                 */
/* ====================================================================== */

void http_limits_init(http_limits *l)
{
    l->max_body = HTTP_DEFAULT_MAX_BODY;
    l->conn_timeout_s = HTTP_DEFAULT_CONN_TIMEOUT_S;
    l->max_conns = HTTP_DEFAULT_MAX_CONNS;
    l->per_ip_conns = HTTP_DEFAULT_PER_IP_CONNS;
    l->conn_memory = HTTP_DEFAULT_CONN_MEMORY;
    l->threads = HTTP_DEFAULT_THREADS;
}

static int http__limits_check(const http_limits *l, sa_err *err)
{
    if (l->conn_timeout_s == 0)
        return sa_err_set(err, SA_EINVAL, "http limits: conn_timeout_s must be at least 1");
    if (l->max_conns == 0)
        return sa_err_set(err, SA_EINVAL, "http limits: max_conns must be at least 1");
    if (l->per_ip_conns == 0)
        return sa_err_set(err, SA_EINVAL, "http limits: per_ip_conns must be at least 1");
    if (l->conn_memory < HTTP_MIN_CONN_MEMORY)
        return sa_err_set(err, SA_EINVAL, "http limits: conn_memory %zu is below the minimum %zu",
                          l->conn_memory, HTTP_MIN_CONN_MEMORY);
    if (l->threads == 0 || l->threads > HTTP_MAX_THREADS)
        return sa_err_set(err, SA_EINVAL, "http limits: threads %u is outside 1..%u", l->threads,
                          HTTP_MAX_THREADS);
    if (l->max_body > SIZE_MAX / 4)
        return sa_err_set(err, SA_EINVAL, "http limits: max_body %zu is too large", l->max_body);
    return 0;
}

/*
 * Parse listen into *ss: "HOST:PORT", "[V6]:PORT", ":PORT" or "*:PORT".
 * HOST may be a name (resolved, first address wins).
 */
static int http__parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sl,
                              sa_err *err)
{
    if (listen == NULL)
        return sa_err_set(err, SA_EINVAL, "http listen address is NULL");
    const char *colon = strrchr(listen, ':');
    if (colon == NULL)
        return sa_err_set(err, SA_EINVAL, "http listen address \"%s\" has no \":PORT\"", listen);
    char host[256];
    size_t hl = (size_t)(colon - listen);
    const char *h = listen;
    if (hl >= 2 && listen[0] == '[' && listen[hl - 1] == ']') {
        h++;
        hl -= 2;
    } else if (memchr(listen, ':', hl) != NULL) {
        return sa_err_set(err, SA_EINVAL,
                          "http listen address \"%s\": write an IPv6 address in brackets, "
                          "e.g. [::1]:8080",
                          listen);
    }
    if (hl >= sizeof host)
        return sa_err_set(err, SA_EINVAL, "http listen address \"%s\": host is too long", listen);
    memcpy(host, h, hl);
    host[hl] = '\0';
    const char *p = colon + 1;
    char *end;
    errno = 0;
    unsigned long port = strtoul(p, &end, 10);
    if (*p < '0' || *p > '9' || *end != '\0' || errno != 0 || port > 65535)
        return sa_err_set(err, SA_EINVAL,
                          "http listen address \"%s\": port must be a number in 0..65535", listen);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    bool any = host[0] == '\0' || strcmp(host, "*") == 0;
    if (any)
        hints.ai_family = AF_INET;
    int gai = getaddrinfo(any ? NULL : host, p, &hints, &res);
    if (gai != 0 || res == NULL)
        return sa_err_set(err, SA_EINVAL, "http listen address \"%s\": cannot resolve \"%s\": %s",
                          listen, host, gai_strerror(gai));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Bind a throw-away socket first: MHD does not say why it could not start,
 * and "address in use" is the usual reason. */
static int http__probe_bind(const struct sockaddr_storage *ss, socklen_t sl, const char *listen,
                            sa_err *err)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sa_err_set(err, SA_ESYS, "http: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = 0;
    if (bind(fd, (const struct sockaddr *)ss, sl) != 0)
        rc = sa_err_set(err, SA_ESYS, "http: cannot listen on %s: %s", listen, strerror(errno));
    close(fd);
    return rc;
}

static void http__server_free(http_server *s)
{
    if (s->tstarted) {
        pthread_mutex_lock(&s->tmu);
        s->tquit = true;
        pthread_cond_signal(&s->tcv);
        pthread_mutex_unlock(&s->tmu);
        pthread_join(s->tthr, NULL);
    }
    while (s->conns != NULL) { /* MHD notifies every close; belt and braces */
        http_conn *hc = s->conns;
        s->conns = hc->next;
        sa_free(hc);
    }
    pthread_cond_destroy(&s->tcv);
    pthread_mutex_destroy(&s->tmu);
    pthread_cond_destroy(&s->lcv);
    pthread_mutex_destroy(&s->lmu);
    sa_free(s);
}

int http_start(const char *listen, const http_limits *lim, http_handler h, void *ctx,
               http_server **out, sa_err *err)
{
    http_limits l;
    if (lim != NULL)
        l = *lim;
    else
        http_limits_init(&l);
    if (h == NULL || out == NULL)
        return sa_err_set(err, SA_EINVAL, "http_start: handler and out are required");
    int rc = http__limits_check(&l, err);
    if (rc != 0)
        return rc;
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    if ((rc = http__parse_listen(listen, &ss, &sl, err)) != 0)
        return rc;
    if ((rc = http__probe_bind(&ss, sl, listen, err)) != 0)
        return rc;

    http_server *s = sa_calloc(1, sizeof *s);
    if (s == NULL)
        return sa_err_set(err, SA_ENOMEM, "http: out of memory");
    s->lim = l;
    s->h = h;
    s->ctx = ctx;
    atomic_init(&s->stopping, false);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lmu, NULL);
    pthread_cond_init(&s->lcv, &ca);
    pthread_mutex_init(&s->tmu, NULL);
    pthread_cond_init(&s->tcv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->tthr, NULL, http__timer_main, s) != 0) {
        http__server_free(s);
        return sa_err_set(err, SA_ESYS, "http: cannot start the timer thread");
    }
    s->tstarted = true;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The option list ends early (MHD_OPTION_END) for a single thread. */
    s->d = MHD_start_daemon(
        flags, 0, NULL, NULL, http__access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)l.conn_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)l.max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)l.per_ip_conns,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)l.conn_memory, MHD_OPTION_NOTIFY_COMPLETED,
        http__completed, s, MHD_OPTION_NOTIFY_CONNECTION, http__notify_conn, s,
        l.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (unsigned int)l.threads,
        MHD_OPTION_END);
    if (s->d == NULL) {
        http__server_free(s);
        return sa_err_set(err, SA_EIO,
                          "http: libmicrohttpd could not start on %s (limits too large for this "
                          "system, or out of descriptors)",
                          listen);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di != NULL ? (int)di->port : 0;
    if (s->port == 0) {
        struct sockaddr_storage bound;
        socklen_t bl = sizeof bound;
        di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_LISTEN_FD);
        if (di != NULL && getsockname(di->listen_fd, (struct sockaddr *)&bound, &bl) == 0)
            s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                        : ((struct sockaddr_in *)&bound)->sin_port);
    }
    *out = s;
    return 0;
}

int http_port(const http_server *s)
{
    return s->port;
}

void http_stop(http_server *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stopping, true);
    MHD_socket lfd = MHD_quiesce_daemon(s->d); /* no new connections */

    /* Invariant 4: resume every suspended connection.  Waiting requests
     * get 503; waiting streams end (their reader sees stopping). */
    pthread_mutex_lock(&s->lmu);
    for (http_req *r = s->reqs; r != NULL; r = r->lnext) {
        pthread_mutex_lock(&r->mu);
        if (r->state == HTTP_ST_WAITING) {
            r->resp = http__text(MHD_HTTP_SERVICE_UNAVAILABLE); /* NULL: an empty 500 */
            r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
            r->state = HTTP_ST_READY;
            MHD_resume_connection(r->conn);
        } else if (r->stream_susp) {
            http__stream_resume(r);
        }
        pthread_mutex_unlock(&r->mu);
    }
    /* Give the answers a moment to leave. */
    struct timespec ts;
    http__abstime(http__now_ms() + HTTP_STOP_GRACE_MS, &ts);
    while (s->nreqs > 0)
        if (pthread_cond_timedwait(&s->lcv, &s->lmu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&s->lmu);

    MHD_stop_daemon(s->d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    http__server_free(s);
}
