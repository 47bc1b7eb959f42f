/*
 * sa_edge.h — libsa_edge: the edge replica.  A local copy of the tables a
 * peer may read, kept in RocksDB through libsa_storage, that takes writes
 * while offline and syncs with a bridge over its HTTP API v1 (bridge/src/
 * api.h) when it can.
 *
 *   local write (put/delete)  durable before it returns, never waits for the
 *                             network (DESIGN.md contract 1); queued in the
 *                             outbox and shown by reads at once (overlay)
 *   sync_once                 bootstrap if needed, push the outbox, fetch the
 *                             outcomes of pushed ops, pull changes
 *   follow                    sync_once in a loop with long polls, until
 *                             sa_edge_stop
 *
 * Rows are JSON objects column -> value on this interface (the wire mapping
 * of codec_json.c: null, booleans, integers natively, json/jsonb embedded,
 * everything else a string of PostgreSQL's text form).  Tables are named
 * "schema.name"; a name without a dot means "public.name".
 *
 * Errors: every call returns 0 or a negative SA_E* code (sa_err.h) and fills
 * *err when not NULL.  SA_EIO is a network failure (the bridge unreachable,
 * 5xx): offline is normal and nothing local is lost.  The library never
 * prints.
 *
 * Thread-safety: one sa_edge may be used from several threads (a follow
 * loop in one, local writes and reads in others); sync_once/follow are
 * serialized among themselves.  Only one process may open a data directory
 * at a time (SA_EBUSY otherwise).
 */
#ifndef SA_EDGE_H
#define SA_EDGE_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"

/* Forward declaration so this header does not require jansson.h. */
struct json_t;

typedef struct sa_edge sa_edge;

/* --- opening -------------------------------------------------------------- */

/* Caller-allocated; initialise with sa_edge_options_init (the one place
 * defaults are set).  Strings are borrowed for the call. */
typedef struct sa_edge_options {
    const char *bridge;      /* base URL "http://host:port"; NULL: keep stored */
    const char *token;       /* bearer token; NULL: keep stored */
    const char *peer;        /* the token's peer name (required at init) */
    int create;              /* 1: initialise a new store (sa_edge_init) */
    int unsafe_no_sync;      /* tests only: RocksDB writes not fsynced */
    uint32_t http_timeout_s; /* connect+transfer timeout of one short request; default 30 */
    uint32_t batch_ops;      /* ops per push; default 500 */
} sa_edge_options;

void sa_edge_options_init(sa_edge_options *o /* out */);

/*
 * Open the edge store in directory `dir`.  With o->create, `dir` must not
 * hold a store yet: one is made with a new random epoch (and o->peer is
 * required); without, the store must exist (SA_ENOTFOUND naming the
 * directory otherwise).  A bridge URL or token given here replaces the
 * stored one (durably).  *out caller-owned (sa_edge_close); untouched on
 * error.
 */
int sa_edge_open(const char *dir, const sa_edge_options *o, sa_edge **out /* out */, sa_err *err);
/* Waits for a running sync to notice sa_edge_stop, closes.  NULL: no-op. */
void sa_edge_close(sa_edge *e);

/* --- local rows ----------------------------------------------------------- */

/*
 * Insert or update the row of `table` whose key columns are in `row` (an
 * object column -> value; row borrowed).  Key columns of a table are
 * learned from the rows the bridge sent: a table that had no rows yet
 * cannot be written (SA_ENOTFOUND saying so).  Unknown table, non-object,
 * missing key column: SA_EINVAL naming it.  *seq (may be NULL): the op's
 * seq.  Durable on return.
 */
int sa_edge_put(sa_edge *e, const char *table, const struct json_t *row, uint64_t *seq /* out */,
                sa_err *err);
/* Delete the row with key `key` (object of the key columns).  SA_ENOTFOUND
 * if no such row is visible. */
int sa_edge_delete(sa_edge *e, const char *table, const struct json_t *key, uint64_t *seq /* out */,
                   sa_err *err);
/* The visible row (pending local writes over the server's state) as a new
 * JSON object (*out, json_decref): {"table","key","cols","pending"}.
 * SA_ENOTFOUND if absent. */
int sa_edge_get(sa_edge *e, const char *table, const struct json_t *key,
                struct json_t **out /* out */, sa_err *err);
/* Every visible row of table, one at a time (row borrowed for the call;
 * non-zero from cb stops).  Rows the server has come first in key order,
 * then rows only written locally.  Memory bounded by a row. */
int sa_edge_list(sa_edge *e, const char *table, int (*cb)(const struct json_t *row, void *ctx),
                 void *ctx, sa_err *err);

/* --- sync ----------------------------------------------------------------- */

/* One round: bootstrap if needed (or on 409 must_resnapshot), push the
 * outbox, fetch outcomes, pull changes (wait_s: long-poll seconds for the
 * first pull, 0 = do not wait).  SA_EIO on network failure (recorded in
 * status; the retry policy's next time too). */
int sa_edge_sync_once(sa_edge *e, int wait_s, sa_err *err);
/* Loop of sync_once with long polls (wait 25 s) and the retry policy's
 * delays after failures, until sa_edge_stop.  Returns 0 when stopped, or
 * a non-network error. */
int sa_edge_follow(sa_edge *e, sa_err *err);
/* Ask follow (and a long poll in progress) to stop.  Any thread, and
 * async-signal-safe. */
void sa_edge_stop(sa_edge *e);

/* --- status and outcomes -------------------------------------------------- */

#define SA_EDGE_TEXT_MAX 512

typedef struct sa_edge_status {
    char peer[128];
    uint64_t epoch;
    char bridge[SA_EDGE_TEXT_MAX];
    char instance[64];  /* bridge instance of the local replica; "" before bootstrap */
    uint64_t cursor;    /* bridge WAL seq the replica holds everything up to */
    uint64_t head;      /* bridge head at the last pull */
    uint64_t last_seq;  /* highest local op seq issued */
    uint64_t accepted;  /* highest op seq the bridge accepted */
    uint64_t applied;   /* highest op seq the bridge reported applied */
    uint64_t confirmed; /* highest op seq seen back in the change stream */
    uint64_t pending;   /* ops not yet accepted by the bridge */
    uint64_t overlay;   /* local ops still shown over the server's state */
    uint64_t outcomes;  /* conflicts and rejections recorded */
    uint32_t attempts;  /* failed push/pull attempts since the last success */
    uint64_t last_attempt_ms, next_retry_ms; /* ms since the Unix epoch; 0: none */
    char last_error[SA_EDGE_TEXT_MAX];
} sa_edge_status;

int sa_edge_status_get(sa_edge *e, sa_edge_status *out /* out */, sa_err *err);
/* As one JSON object (*out new reference). */
int sa_edge_status_json(const sa_edge_status *st, struct json_t **out /* out */, sa_err *err);

/* Each recorded conflict or rejection of this edge's ops, in seq order, as
 * the bridge reported it: {"seq", "status", "conflict_id", "resolution",
 * "message", "table", "key"} (borrowed for the call; non-zero stops). */
int sa_edge_outcomes(sa_edge *e, int (*cb)(const struct json_t *o, void *ctx), void *ctx,
                     sa_err *err);

#endif /* SA_EDGE_H */
