/*
 * http.h — the bridge's HTTP/1.1 server: libmicrohttpd underneath, a small
 * request/response API on top, built for long polls and streams.
 *
 * What it does for its caller:
 *
 *   - Calls the handler once per request, after the whole body has arrived.
 *     Bodies over max_body are answered 413 without the handler: at once
 *     when Content-Length says so (the body is not read); for a chunked
 *     upload when it crosses the limit, after reading and dropping the rest
 *     — but past max_body + 1 MiB the connection is simply closed.
 *   - Keeps the connection SUSPENDED from the handler's return until the
 *     caller answers, from any thread, now or later: thousands of waiting
 *     long polls hold no thread.
 *   - Streams chunked responses whose producer may say "nothing yet"
 *     (HTTP_STREAM_WAIT): the connection is suspended until
 *     http_stream_wake() or until the heartbeat interval elapses.
 *   - Enforces http_limits: body size, total and per-IP connections, the
 *     per-connection memory pool (which bounds the request head: larger
 *     heads are refused by libmicrohttpd, 431 or a closed connection), and
 *     a deadline for receiving each request (below).
 *
 * Deadlines.  libmicrohttpd's own timeout (conn_timeout_s) closes a
 * connection idle that long.  A client that trickles bytes is never idle,
 * so on top of it every request must arrive whole — head and body — within
 * conn_timeout_s + 1 s per 64 KiB of its body (declared Content-Length, or
 * max_body for a chunked upload), counted from the connection's start or
 * from the end of the previous request on a kept-alive connection.  A
 * connection over its deadline is shut down.  Waiting for the caller's
 * answer and sending the response are not subject to this deadline.
 *
 * Lifetime of a request (http_req), and who holds a reference:
 *
 *     first byte of the body..last     handler(ctx, r)
 *     RECEIVING ──────────────────────▶ IN_HANDLER ──(handler returns, no answer)──▶ WAITING
 *         │  (over max_body: 413,           │ answered in the handler              │ answered by
 *         │   handler never called)         ▼                                      │ any thread
 *         │                              QUEUED ◀────────── READY ◀──(resume)──────┘
 *         │                                 │ (response sent, or the connection fails)
 *         └─────────────────────────────────┴──────────────▶ CLOSED
 *
 *   R1. The handler's r belongs to the caller until it calls exactly one of
 *       http_respond / http_respond_stream on it.  Every r passed to the
 *       handler must be answered exactly once, even if its client went away
 *       or the server was stopped (then the answer is a no-op that frees
 *       what is left).  Forgetting to answer leaks r (and, while the server
 *       runs, keeps its connection open).
 *   R2. The accessors (http_req_method ... http_req_body) and the strings
 *       and body they return are valid from the handler's call until the
 *       answer call starts, on any thread; they are copies, independent of
 *       the connection.
 *   R3. The server holds its own reference while the connection is open;
 *       a stream response holds one until its pfree has returned.  r is
 *       freed when the last reference goes, so neither side frees early.
 *   R4. A client that disconnects while its request is WAITING is noticed
 *       only when the answer is sent (libmicrohttpd does not watch
 *       suspended sockets); the answer then fails quietly and everything
 *       is freed.  No callback tells the caller about it.  For the same
 *       reason a WAITING request has no server-side timeout: the caller
 *       ends its long polls itself (e.g. an empty answer after N seconds).
 *   R5. http_stop answers every WAITING request 503 itself; the caller's
 *       later answer is then a no-op that frees r (R1 still holds).
 *
 * Streams:
 *
 *   S1. The producer runs on a server thread, never concurrently with
 *       itself.  It fills buf (up to max bytes) and returns the count > 0,
 *       0 at the end of the stream, HTTP_STREAM_WAIT for "nothing yet",
 *       any other negative value for an error (the connection is closed).
 *   S2. After HTTP_STREAM_WAIT the producer is called again after
 *       http_stream_wake(r), or after heartbeat_ms (if > 0) — so it can
 *       emit a heartbeat — whichever comes first.  A wake that arrives
 *       while the producer is running is not lost: it is called again.
 *   S3. pfree(pctx) is called exactly once, when the response is done
 *       (sent, failed, or refused because the request was already closed —
 *       then inside http_respond_stream itself).  It is called with no
 *       lock of this module held.
 *   S4. http_stream_wake(r) may be called from any thread as long as
 *       pfree(pctx) has not returned: register r with your notifier in the
 *       handler, unregister it in pfree, under the notifier's lock.
 *   S5. While the server stops, a producer returning HTTP_STREAM_WAIT has
 *       its stream cut (the connection closed without the terminating
 *       chunk): the client sees an incomplete answer, never a whole but
 *       empty one.
 *
 * Threads: http_respond*, http_stream_wake and the accessors may be called
 * from any thread.  The handler runs on a server thread and must not block
 * for long (it holds that polling thread); answering later is the way to
 * wait.  The library never prints.
 */
#ifndef SA_HTTP_H
#define SA_HTTP_H

#include <stddef.h>
#include <sys/types.h>

#include "sa/sa_err.h"

/* --- constants ----------------------------------------------------------- */

/* A producer's "nothing yet" (any other negative return is an error). */
#define HTTP_STREAM_WAIT ((ssize_t)-1000)

/* Defaults set by http_limits_init. */
#define HTTP_DEFAULT_MAX_BODY ((size_t)8 << 20)
#define HTTP_DEFAULT_CONN_TIMEOUT_S 30u
#define HTTP_DEFAULT_MAX_CONNS 4096u
#define HTTP_DEFAULT_PER_IP_CONNS 256u
#define HTTP_DEFAULT_CONN_MEMORY ((size_t)32 << 10)
#define HTTP_DEFAULT_THREADS 2u

/* Accepted ranges (http_start answers SA_EINVAL naming the field). */
#define HTTP_MIN_CONN_MEMORY ((size_t)4 << 10)
#define HTTP_MAX_THREADS 256u

/* http_stop waits at most this long for answered requests to be sent. */
#define HTTP_STOP_GRACE_MS 1000

/* --- types --------------------------------------------------------------- */

typedef struct http_server http_server;
typedef struct http_req http_req;

/* Caller-allocated; set every field with http_limits_init, then adjust. */
typedef struct http_limits {
    size_t max_body;         /* bytes; larger bodies are answered 413 (0 = no body allowed) */
    unsigned conn_timeout_s; /* idle timeout, and the base of the request deadline; >= 1 */
    unsigned max_conns;      /* total connections; >= 1 */
    unsigned per_ip_conns;   /* connections per client address; >= 1 */
    size_t conn_memory;      /* per-connection pool: bounds the request head; >= 4 KiB */
    unsigned threads;        /* polling threads, 1..HTTP_MAX_THREADS */
} http_limits;

/* Called once per complete request on a server thread; r: see R1–R5. */
typedef void (*http_handler)(void *ctx, http_req *r);

/* See S1. */
typedef ssize_t (*http_producer)(void *pctx, char *buf, size_t max);

/* --- server -------------------------------------------------------------- */

/* Fill *l with the defaults above. */
void http_limits_init(http_limits *l);

/*
 * Listen on listen ("HOST:PORT", "[V6ADDR]:PORT", or ":PORT" / "*:PORT" for
 * every address; port 0 = any free port — see http_port) and serve with
 * handler h (ctx is passed to it, borrowed: it must outlive the server).
 * lim is copied (NULL = defaults).  On success *out is a new server the
 * caller stops with http_stop().  The callback is never called if this
 * fails.  Errors: SA_EINVAL (bad address or limits, message names which),
 * SA_ESYS (bind/listen failed: the message has the system's reason, e.g.
 * address in use), SA_EIO (libmicrohttpd refused to start), SA_ENOMEM.
 * *out untouched on error.
 */
int http_start(const char *listen, const http_limits *lim, http_handler h, void *ctx,
               http_server **out /* out */, sa_err *err);

/* The bound port (useful with port 0). */
int http_port(const http_server *s);

/*
 * Stop accepting, answer still-WAITING requests 503 (R5), end waiting
 * streams (S5), give answered requests up to HTTP_STOP_GRACE_MS to go out,
 * then close every connection, join the threads and free the server.
 * Returns promptly.  NULL is a no-op.  Must not be called from the handler
 * or a producer.
 */
void http_stop(http_server *s);

/* --- request accessors (R2) ---------------------------------------------- */

const char *http_req_method(const http_req *r); /* "GET", "POST", ... */
const char *http_req_path(const http_req *r);   /* URL path, without the query string */
/* Value of query argument name (URL-decoded; "" for "?name"), NULL if absent. */
const char *http_req_query(const http_req *r, const char *name);
/* First header of that name, compared case-insensitively; NULL if absent. */
const char *http_req_header(const http_req *r, const char *name);
/* The token of "Authorization: Bearer TOKEN" (scheme case-insensitive),
 * else NULL. */
const char *http_req_bearer(const http_req *r);
/* Peer address as text ("127.0.0.1:5678", "[::1]:5678"), for logs. */
const char *http_req_client(const http_req *r);
/* The whole body; *len (if not NULL) gets its length.  Never NULL: an empty
 * body is "" with length 0; the bytes are followed by a NUL not counted in
 * *len (handy for text parsers). */
const void *http_req_body(const http_req *r, size_t *len /* out */);

/* --- answering (exactly one per request, any thread) --------------------- */

/*
 * Answer r with status (100..599; anything else becomes 500), content_type
 * (NULL = none), body (copied; NULL with len 0 for none) and extra headers
 * (NULL, or a NULL-terminated list of name, value pairs; copied).  r is
 * consumed: do not use it afterwards.  Never fails from the caller's point
 * of view: if the response cannot be built (out of memory) the client gets
 * a bodiless 500; if the request is already closed, nothing is sent.
 */
void http_respond(http_req *r, int status, const char *content_type, const void *body, size_t len,
                  const char *const *headers);

/*
 * Answer r with a chunked stream (S1–S5): status, content_type as above,
 * producer p with context pctx (owned by the stream from now on: pfree, if
 * not NULL, is called on it exactly once), heartbeat_ms > 0 to be called
 * again that long after HTTP_STREAM_WAIT (<= 0: only on wake).  r is
 * consumed as for http_respond, except that http_stream_wake(r) stays
 * allowed until pfree returns (S4).
 */
void http_respond_stream(http_req *r, int status, const char *content_type, http_producer p,
                         void *pctx, void (*pfree)(void *), int heartbeat_ms);

/* Have a waiting stream's producer called again soon (S2, S4).  Harmless
 * if the stream is not waiting, has ended, or was never started. */
void http_stream_wake(http_req *r);

#endif /* SA_HTTP_H */
