/*
 * api.h — the bridge's HTTP API v1, served by sa-bridge run next to ingest.
 *
 * Every JSON answer carries "instance": the bridge data directory's id, and
 * authenticated ones "peer": the name the token belongs to.  An
 * edge holds (instance, cursor); a cursor of another instance, below the
 * retained WAL, above its head, or from before a resync point gets 409
 * {"error": "must_resnapshot"}: the edge bootstraps again, it is never
 * served a gap.
 *
 *   Authorization: Bearer TOKEN      the token of a softadastra.peers row
 *                                    (SHA-256 compared by PostgreSQL; the
 *                                    answer cached for a few seconds):
 *                                    missing or unknown 401, disabled 403
 *   GET  /healthz                    200 {"status": "ok", "parts": {...},
 *                                    "head", ...}, or 503 {"status":
 *                                    "failing", "reason": "PART: why"} when
 *                                    the replication connection, the applier
 *                                    or the storage is unhealthy
 *   GET  /metrics                    Prometheus text (names: metrics.c and
 *                                    README): WAL range and bytes, inbox,
 *                                    per peer acked seq, queue depth, last
 *                                    contact, pulls, pushes, retries,
 *                                    time to converge; conflicts,
 *                                    rejections, apply times, replication
 *                                    lag and LSNs, HTTP requests
 *   GET  /v1/status                  the same at a glance, one JSON object
 *                                    (sa-bridge status)
 *   GET  /v1/changes?after=S&limit=N&wait=W[&instance=I]
 *        records S durably as the peer's acknowledged position, then
 *        answers the ops after S of the tables the peer may read, whole
 *        transactions only: {"instance", "ops": [...], "next", "head"}.
 *        With none yet and W > 0 it waits up to W seconds, sending a
 *        newline every few seconds meanwhile (JSON allows leading
 *        whitespace) so proxies keep the connection.  An op's "seq" is its
 *        WAL seq (the cursor); a change PostgreSQL made by applying an
 *        edge's op has that edge as "origin" (and "epoch"), and
 *        "origin_seq": the highest of its op seqs the change belongs to.
 *        Should the WAL after the cursor be truncated while the poll waits
 *        (the size cap), the 200 answer's body is {"error":
 *        "must_resnapshot"} instead.
 *        Until the bridge's initial sync is done: 503 {"error":
 *        "initial_sync"} with Retry-After (the same for /v1/snapshot).
 *   GET  /v1/snapshot
 *        chunked NDJSON, consistent at one seq: {"type": "begin",
 *        "instance", "seq", "tables", "schemas": {table: {"key": [column],
 *        "types": {column: oid}}}}, then {"type": "row", "table", "key",
 *        "cols", "types"} per row, then {"type": "end", "seq"}.  Memory is
 *        bounded by a row, not a table.  The edge then pulls after seq.
 *   POST /v1/ops   {"epoch": E, "ops": [op, ...]}   (the wire form of ops)
 *        queues the peer's ops in the inbox; 200 {"accepted": S} only once
 *        durable, S the highest seq accepted for (peer, epoch); a new bridge
 *        instance starts from PostgreSQL's applied watermark of (peer,
 *        epoch), so ops applied through an earlier one stay duplicates.  Seqs
 *        already accepted are accepted again silently; a gap refuses the
 *        whole batch with 409 {"error": "gap", "expected"}; a table the
 *        peer may not write, or a malformed op, 400 naming it; over the
 *        body limit 413; the inbox over its cap 503 with Retry-After.
 *   GET  /v1/ops/results?epoch=E&after=S[&limit=N]
 *        the outcomes of the peer's ops of epoch E after seq S, in seq order,
 *        as the applier recorded them: {"instance", "results": [{"seq",
 *        "status": applied|conflict|rejected, "conflict_id", "resolution",
 *        "message"}, ...], "applied": highest seq applied, "accepted":
 *        highest seq queued, "head": the durable WAL head after the
 *        outcomes were read, "confirmed": C, "confirmed_at": H}: the ops up
 *        to C were applied by transactions the WAL holds at or below seq
 *        H, so a replica whose cursor reached H shows their result, even
 *        of those that changed no row (both absent until a transaction of
 *        this origin is in the WAL).
 *   GET  /v1/ops/results?epoch=E&conflicts=ID,ID,...   (at most 100 ids)
 *        the current resolution of those conflicts of the peer's ops, from
 *        softadastra.conflicts (a DBA may have resolved them since):
 *        {"conflicts": [{"conflict_id", "resolution"}, ...]}; ids that are
 *        not the peer's are left out.
 *
 * Threads: handlers run on the HTTP server's threads and share the store
 * with ingest (libsa_storage is thread-safe); auth lookups share one
 * PostgreSQL connection under a lock.
 */
#ifndef SA_API_H
#define SA_API_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"
#include "sa/sa_store.h"

typedef struct api api;

typedef struct api_options {
    const char *listen;  /* "HOST:PORT" (port 0: any free port) */
    const char *pg;      /* libpq conninfo for token lookups */
    size_t max_body;     /* POST body limit, bytes (default 8 MiB) */
    uint64_t inbox_cap;  /* inbox size above which pushes get 503 (default 256 MiB) */
    int auth_ttl_ms;     /* how long a token lookup is trusted (default 5000) */
    int changes_max_ops; /* ops per /v1/changes answer at most (default 1000) */
    unsigned max_conns, max_conns_per_ip; /* HTTP connection limits (0: http.h defaults) */
    void (*on_ops)(void *ctx); /* called (any thread) after ops were queued */
    void *on_ops_ctx;
    struct metrics *metrics; /* counters to update and render (metrics.h); NULL: none */
} api_options;

void api_options_init(api_options *o /* out */);

/*
 * Start serving.  store: borrowed, must outlive the api.  instance: the data
 * directory's id (copied).  tables/ntables: the synced set, raw
 * "schema.name" as ops spell them (copied).
 */
int api_start(const api_options *o, sa_store *store, const char *instance, char *const *tables,
              size_t ntables, api **out /* out */, sa_err *err);
int api_port(const api *a);
/* New WAL is durable: wake the waiting long polls.  Any thread; NULL: no-op. */
void api_wal_advanced(api *a);
/* Stop serving (pending long polls get 503) and free.  NULL is a no-op. */
void api_stop(api *a);

/* The data directory's instance id, created at its first use: 32 hex
 * characters into out (33 bytes). */
int api_instance_id(sa_store *store, char out[33], sa_err *err);

#endif /* SA_API_H */
