/*
 * ingest.c — sa-bridge's down path, first half: PostgreSQL commit to
 * durable WAL group, over logical replication with pgoutput.
 *
 *   start ──> checks ──> publication ──┬─ first start / resync ─> initial sync
 *                                      └─ slot known and healthy ─┐     │
 *                                                                 v     v
 *            ┌──────────────── reconnect (retry policy) <── stream session
 *            v                                                  │
 *       stream session: START_REPLICATION from the durable end; │
 *       frames -> pgoutput messages -> transactions (txbuf) ->  │
 *       one WAL group per commit (+ the ingest's meta in the same batch)
 *
 * Positions (LSNs) kept durably in the store's metadata, written in the
 * same batch as the WAL group they describe:
 *   I1  end_lsn    = end of the last transaction durable in the WAL; the
 *                    flush position confirmed to the server never exceeds
 *                    max(end_lsn, confirmed_lsn).
 *   I2  commit_lsn = that transaction's commit LSN: a transaction the
 *                    server sends again with commit LSN <= commit_lsn is
 *                    already in the WAL and is skipped whole (dedupe by
 *                    transaction, never by change).
 *   I3  confirmed_lsn = the highest position confirmed while idle (from a
 *                    keepalive, everything received being durable); it is
 *                    persisted BEFORE it is sent, so a slot whose
 *                    confirmed_flush_lsn exceeds max(end_lsn, confirmed_lsn)
 *                    was not advanced by us: it was recreated.
 *   I4  copied.<table> = the LSN of the snapshot the table was copied in:
 *                    stream changes of that table in transactions that
 *                    committed at or before it are already in the copy.
 */
#include "ingest.h"

#include <jansson.h>

#include "api.h"
#include "applier.h"
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "copy.h"
#include "pgcheck.h"
#include "pgo.h"
#include "repl.h"
#include "sa/sa_alloc.h"
#include "sa/sa_hlc.h"
#include "sa/sa_retry.h"
#include "sa/sa_store.h"
#include "txbuf.h"

#define INGEST_META_SLOT_PENDING "ingest.slot_pending" /* about to create this slot */
#define INGEST_PROTO 2 /* pgoutput protocol: streaming of large transactions */
#define COPY_GROUP_ROWS 5000
#define MAX_STREAMS 1024 /* concurrently streamed transactions we keep apart */

typedef struct copied {
    char *table;
    uint64_t lsn;
} copied;

typedef struct ingest {
    const sa_bridge_config *cfg;
    char *const *tables; /* the synced set: cfg's --tables, else the extension's */
    size_t ntables;
    char **ext_tables; /* owned, when read from softadastra.tables */
    struct api *api;   /* the HTTP API, once started */
    /* the current transaction's source: an edge's ops, as named by the
     * last softadastra message (apply_ops) seen in it; "" = plain SQL */
    char src_peer[64];
    uint64_t src_epoch, src_seq;
    /* the edge ops a committing transaction applied (its last softadastra
     * message): recorded with it as INGEST_META_CONFIRM (ingest.h) */
    char conf_peer[64];
    uint64_t conf_epoch, conf_to;
    struct applier *applier; /* inbox -> apply_ops, when the extension is there */
    int64_t retention_ms;    /* repl_clock_ms() of the last WAL retention pass */
    ingest_log_fn log;
    void *lctx;
    volatile sig_atomic_t *stop;
    char *store_dir, *staging_dir;
    sa_store *store;
    PGconn *pg;
    repl_conn *rc;
    pgo_decoder *dec;
    sa_hlc_clock *hlc;
    char sysid[24];
    char slot_name[REPL_NAME_MAX + 1];
    /* positions (I1..I3): commit_lsn and end_lsn are those of the last
     * transaction received whole (perhaps still pending in cur_batch),
     * durable_* those of the last one written and synced */
    uint64_t commit_lsn, end_lsn, confirmed_lsn;
    uint64_t durable_commit, durable_end;
    /* transactions committed into cur_batch, written together in one
     * synced write when the input pauses (group commit for one writer) */
    size_t pend_txns, pend_ops;
    int64_t pend_since_ms;
    sa_batch_mark cur_mark; /* where the open transaction's ops start */
    uint64_t idle_end; /* keepalive position seen while idle */
    uint64_t sent_flush;
    int64_t last_status_ms;
    int status_due;
    /* the transaction being received (Begin..Commit): its ops go straight
     * into cur_batch, stamped as they come (Begin names the commit), and
     * move to a spill buffer (cur) if they outgrow txn_memory_kb */
    int cur_open;
    uint32_t cur_xid;
    txbuf *cur;
    sa_batch *cur_batch;
    size_t cur_n;
    uint64_t cur_final_lsn, cur_hlc;
    int64_t cur_commit_time;
    int cur_skip;
    /* streamed transactions (Stream Start..Stream Commit/Abort) */
    txbuf *streams[MAX_STREAMS];
    size_t nstreams;
    txbuf *stream_cur;
    /* I4 */
    copied *copied;
    size_t ncopied;
    /* stats */
    uint64_t txns, ops;
    metrics *m;              /* /metrics and /healthz (metrics.h) */
    uint64_t server_end;     /* the server's end of WAL, last reported */
    int64_t durable_commit_us; /* commit time of the last durable transaction */
    int64_t pend_commit_us;    /* ... of the last one pending in cur_batch */
    int64_t gauges_ms;         /* repl_clock_ms() of the last gauge update */
    int fatal; /* bad input from the server or a failing store: no reconnect cures it */
} ingest;

/* ---------------------------------------------------------------------
 * Small helpers: logging, LSN metadata.
 * ------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void say(ingest *ig, int level, const char *fmt, ...)
{
    if (ig->log == NULL || (level != INGEST_LOG_PROGRESS && level > ig->cfg->log_level))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ig->log(ig->lctx, level, line);
}

static const char *lsn_str(uint64_t lsn, char buf[REPL_LSN_STRLEN])
{
    return repl_lsn_format(lsn, buf);
}

char *ingest_store_dir(const char *data_dir)
{
    size_t n = strlen(data_dir) + sizeof "/store";
    char *p = sa_malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/store", data_dir);
    return p;
}

static int meta_get_str(ingest *ig, const char *key, char *out, size_t cap, int *found, sa_err *err)
{
    void *v = NULL;
    size_t len = 0;
    int rc = sa_store_meta_get(ig->store, key, &v, &len, err);
    *found = rc == 0;
    if (rc == SA_ENOTFOUND) {
        out[0] = '\0';
        return 0;
    }
    if (rc != 0)
        return rc;
    snprintf(out, cap, "%.*s", (int)len, (const char *)v);
    sa_free(v);
    return 0;
}

static int meta_get_lsn(ingest *ig, const char *key, uint64_t *lsn, sa_err *err)
{
    char s[64];
    int found;
    int rc = meta_get_str(ig, key, s, sizeof s, &found, err);
    *lsn = 0;
    if (rc == 0 && found && (rc = repl_lsn_parse(s, lsn, err)) != 0)
        sa_err_wrap(err, "metadata %s", key);
    return rc;
}

static int batch_meta_str(sa_batch *b, const char *key, const char *val, sa_err *err)
{
    return sa_batch_meta_put(b, key, val, strlen(val), err);
}

static int batch_meta_lsn(sa_batch *b, const char *key, uint64_t lsn, sa_err *err)
{
    char s[REPL_LSN_STRLEN];
    return batch_meta_str(b, key, lsn_str(lsn, s), err);
}

/* The positions after a transaction, for the batch that makes it durable. */
static int batch_positions(sa_batch *b, uint64_t commit, uint64_t end, sa_err *err)
{
    int rc = batch_meta_lsn(b, INGEST_META_COMMIT_LSN, commit, err);
    if (rc == 0)
        rc = batch_meta_lsn(b, INGEST_META_END_LSN, end, err);
    return rc;
}

static uint64_t copied_lsn(const ingest *ig, const char *table)
{
    for (size_t i = 0; i < ig->ncopied; i++)
        if (strcmp(ig->copied[i].table, table) == 0)
            return ig->copied[i].lsn;
    return 0;
}

static int copied_set(ingest *ig, const char *table, uint64_t lsn, sa_err *err)
{
    for (size_t i = 0; i < ig->ncopied; i++)
        if (strcmp(ig->copied[i].table, table) == 0) {
            ig->copied[i].lsn = lsn;
            return 0;
        }
    copied *c = sa_realloc(ig->copied, (ig->ncopied + 1) * sizeof *c);
    if (c == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    ig->copied = c;
    if ((c[ig->ncopied].table = sa_strdup(table)) == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    c[ig->ncopied++].lsn = lsn;
    return 0;
}

/* ---------------------------------------------------------------------
 * Committing a received transaction as one WAL group.
 * ------------------------------------------------------------------- */

typedef struct commit_ctx {
    ingest *ig;
    txbuf *t;
    uint64_t commit_lsn;
    int64_t commit_time;
    uint32_t xid;
    uint64_t hlc;
    uint64_t skipped; /* changes already in a table copy (I4) */
} commit_ctx;

/* Stamp an op with its transaction's commit position and clock. */
static void stamp(commit_ctx *cc, sa_op *op)
{
    if (op->origin == NULL || op->origin[0] == '\0')
        op->origin = "pg"; /* else the edge it came from (source_message) */
    op->hlc = cc->hlc;
    op->flags |= SA_OP_HAS_PG;
    op->pg_lsn = cc->commit_lsn;
    op->pg_xid = cc->xid;
    op->pg_commit_time = cc->commit_time;
}

/* Next op of the transaction, skipping changes already copied (I4). */
static int commit_next(void *ctx, const sa_op **out, sa_err *err)
{
    commit_ctx *cc = ctx;
    for (;;) {
        sa_op *op = NULL;
        int rc = txbuf_next(cc->t, &op, err);
        if (rc != 0 || op == NULL) {
            *out = NULL;
            return rc;
        }
        if (cc->commit_lsn <= copied_lsn(cc->ig, op->table)) {
            cc->skipped++;
            continue;
        }
        stamp(cc, op);
        *out = op;
        return 0;
    }
}

/* Into b, with the transaction: "confirm.<peer>@<epoch>" = the highest op
 * seq it applied, when it was an apply_ops transaction (conf_*, then
 * cleared).  GET /v1/ops/results reports it with a WAL head read after it,
 * so an edge knows when its replica holds the result of every op up to
 * there, even of ops that changed no row. */
static int put_confirm(ingest *ig, sa_batch *b, sa_err *err)
{
    if (ig->conf_peer[0] == '\0')
        return 0;
    char key[128], val[24];
    snprintf(key, sizeof key, INGEST_META_CONFIRM "%s@%" PRIu64, ig->conf_peer, ig->conf_epoch);
    int n = snprintf(val, sizeof val, "%" PRIu64, ig->conf_to);
    ig->conf_peer[0] = '\0';
    return sa_batch_meta_put(b, key, val, (size_t)n, err);
}

static int commit_txn(ingest *ig, txbuf *t, uint32_t xid, uint64_t commit_lsn, uint64_t end_lsn,
                      int64_t commit_time, sa_err *err)
{
    commit_ctx cc = {.ig = ig, .t = t, .commit_lsn = commit_lsn, .commit_time = commit_time,
                     .xid = xid};
    sa_batch *b = NULL;
    size_t n = 0;
    char l1[REPL_LSN_STRLEN];
    int rc = sa_hlc_update(ig->hlc, sa_hlc_pack((uint64_t)(commit_time / 1000), 0), &cc.hlc, err);
    if (rc == SA_ECLOCK) /* a server clock far ahead must not stop ingest */
        rc = sa_hlc_now(ig->hlc, &cc.hlc, err);
    if (rc != 0 || (rc = sa_batch_new(&b, err)) != 0 || (rc = txbuf_rewind(t, err)) != 0)
        goto done;
    if ((rc = batch_positions(b, commit_lsn, end_lsn, err)) != 0 ||
        (rc = put_confirm(ig, b, err)) != 0)
        goto done;
    sa_commit_result res = {0};
    if (txbuf_spilled(t)) {
        /* large: chunked through the store, never whole in memory */
        rc = sa_wal_append_source(ig->store, commit_next, &cc, b, &res, err);
        if (rc == SA_EINVAL && strstr(err->msg, "at least one op") != NULL) {
            rc = sa_store_commit(ig->store, b, &res, err); /* everything was aborted */
            res.first_seq = res.last_seq = 0;
        }
    } else {
        /* a streamed transaction that stayed small: op by op into one
         * batch, one synced write (flush_sync wrote what came before) */
        const sa_op *op;
        while ((rc = commit_next(&cc, &op, err)) == 0 && op != NULL) {
            if ((rc = sa_batch_wal_add(b, op, err)) != 0)
                goto done;
            n++;
        }
        if (rc != 0)
            goto done;
        if (n > 0 && (rc = sa_batch_wal_end_group(b, err)) != 0)
            goto done;
        rc = sa_store_commit(ig->store, b, &res, err);
    }
    if (rc != 0) {
        sa_err_wrap(err, "recording the transaction that commits at %s", lsn_str(commit_lsn, l1));
        goto done;
    }
    ig->commit_lsn = ig->durable_commit = commit_lsn;
    ig->end_lsn = ig->durable_end = end_lsn;
    ig->status_due = 1;
    ig->txns++;
    ig->ops += res.last_seq ? res.last_seq - res.first_seq + 1 : 0;
    ig->durable_commit_us = commit_time;
    metrics_add(ig->m, "softadastra_replication_transactions_total", NULL, 1);
    say(ig, 3, "transaction %u committed at %s: WAL %" PRIu64 "..%" PRIu64 "%s", xid,
        lsn_str(commit_lsn, l1), res.first_seq, res.last_seq,
        cc.skipped ? " (changes already copied skipped)" : "");
    api_wal_advanced(ig->api);
done:
    sa_batch_free(b);
    return rc;
}

/* Write the transactions pending in cur_batch, with the positions after
 * the last one, in one synced write.  Only between transactions. */
static int flush_pending(ingest *ig, sa_err *err)
{
    if (ig->pend_txns == 0)
        return 0;
    char l1[REPL_LSN_STRLEN];
    sa_commit_result res = {0};
    int rc = batch_positions(ig->cur_batch, ig->commit_lsn, ig->end_lsn, err);
    if (rc == 0)
        rc = sa_store_commit(ig->store, ig->cur_batch, &res, err);
    if (rc != 0)
        return sa_err_wrap(err, "recording %zu transaction(s) up to the one committed at %s",
                           ig->pend_txns, lsn_str(ig->commit_lsn, l1));
    say(ig, 3, "%zu transaction(s) up to %s durable: WAL %" PRIu64 "..%" PRIu64, ig->pend_txns,
        lsn_str(ig->commit_lsn, l1), res.first_seq, res.last_seq);
    ig->durable_commit = ig->commit_lsn;
    ig->durable_end = ig->end_lsn;
    ig->txns += ig->pend_txns;
    ig->ops += ig->pend_ops;
    ig->durable_commit_us = ig->pend_commit_us;
    metrics_add(ig->m, "softadastra_replication_transactions_total", NULL, (double)ig->pend_txns);
    ig->pend_txns = ig->pend_ops = 0;
    ig->pend_since_ms = 0;
    ig->status_due = 1;
    api_wal_advanced(ig->api);
    return 0;
}

/* ---------------------------------------------------------------------
 * Messages.
 * ------------------------------------------------------------------- */

static txbuf **stream_find(ingest *ig, uint32_t xid)
{
    for (size_t i = 0; i < ig->nstreams; i++)
        if (txbuf_xid(ig->streams[i]) == xid)
            return &ig->streams[i];
    return NULL;
}

static void stream_drop(ingest *ig, txbuf **slot)
{
    txbuf_free(*slot);
    *slot = ig->streams[--ig->nstreams];
    ig->streams[ig->nstreams] = NULL;
}

/* Forget what is not durable: the open transaction, streams, and
 * transactions still pending in cur_batch (the server sends them again:
 * positions go back to the durable ones). */
static void discard_open(ingest *ig)
{
    txbuf_free(ig->cur);
    ig->cur = NULL;
    ig->cur_open = 0;
    if (ig->cur_batch != NULL)
        sa_batch_clear(ig->cur_batch);
    ig->pend_txns = ig->pend_ops = 0;
    ig->pend_since_ms = 0;
    ig->commit_lsn = ig->durable_commit;
    ig->end_lsn = ig->durable_end;
    while (ig->nstreams > 0)
        stream_drop(ig, &ig->streams[0]);
    ig->stream_cur = NULL;
}

static int idle(const ingest *ig)
{
    return !ig->cur_open && ig->nstreams == 0 && ig->pend_txns == 0 &&
           ig->durable_end >= ig->end_lsn;
}

static int proto_err(sa_err *err, uint64_t lsn, const char *what)
{
    char l[REPL_LSN_STRLEN];
    return sa_err_set(err, SA_EPROTO, "pgoutput stream at %s: %s", repl_lsn_format(lsn, l), what);
}

static int spill_one(void *ctx, const sa_op *op, sa_err *err)
{
    return txbuf_add(ctx, 0, op, err);
}

/* Add one op of the current (non-streamed) transaction. */
/* An op's origin: the edge op range a softadastra message named, or "pg". */
static void set_source(sa_op *op, const char *peer, uint64_t epoch, uint64_t seq)
{
    if (peer[0] == '\0') {
        op->origin = "pg";
        return;
    }
    op->origin = peer;
    op->epoch = epoch;
    op->seq = seq;
}

/*
 * A transactional message with prefix "softadastra": apply_ops names the
 * edge ops whose changes follow ({"peer", "epoch", "from", "to"}), and at
 * its end the ops it finished ({..., "final": true}: nothing of theirs
 * follows, so later changes of the transaction are plain SQL again).  The
 * highest "to" is what the transaction confirms (put_confirm).  Any
 * database user can emit such a message, so a malformed one is logged and
 * ignored rather than stopping ingest.
 */
static int source_message(ingest *ig, const pgo_msg *m)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)m->message.content, m->message.len, 0, &je);
    json_t *peer = json_object_get(j, "peer"), *epoch = json_object_get(j, "epoch"),
           *to = json_object_get(j, "to");
    const char *p = json_string_value(peer);
    if (j == NULL || p == NULL || p[0] == '\0' || strlen(p) >= sizeof ig->src_peer ||
        strcmp(p, "pg") == 0 || !json_is_integer(epoch) || json_integer_value(epoch) < 0 ||
        !json_is_integer(to) || json_integer_value(to) < 1) {
        char l[REPL_LSN_STRLEN];
        say(ig, 1, "ignoring a malformed softadastra message at %s", lsn_str(m->wal_lsn, l));
        json_decref(j);
        return 0;
    }
    uint64_t e = (uint64_t)json_integer_value(epoch), q = (uint64_t)json_integer_value(to);
    int final = json_is_true(json_object_get(j, "final"));
    if (m->in_stream) {
        if (ig->stream_cur != NULL) {
            txbuf_set_source(ig->stream_cur, final ? "" : p, e, q);
            uint64_t ce = 0, cq = 0;
            const char *cp = txbuf_confirm(ig->stream_cur, &ce, &cq);
            if (cp == NULL || strcmp(cp, p) != 0 || ce != e || q > cq)
                txbuf_set_confirm(ig->stream_cur, p, e, q);
        }
    } else {
        snprintf(ig->src_peer, sizeof ig->src_peer, "%s", final ? "" : p);
        ig->src_epoch = e;
        ig->src_seq = q;
        if (strcmp(ig->conf_peer, p) != 0 || ig->conf_epoch != e || q > ig->conf_to) {
            snprintf(ig->conf_peer, sizeof ig->conf_peer, "%s", p);
            ig->conf_epoch = e;
            ig->conf_to = q;
        }
    }
    json_decref(j);
    return 0;
}

static int cur_add(ingest *ig, sa_op *op, sa_err *err)
{
    if (ig->cur_final_lsn <= copied_lsn(ig, op->table))
        return 0; /* I4: this change is in the table's copy */
    set_source(op, ig->src_peer, ig->src_epoch, ig->src_seq);
    op->hlc = ig->cur_hlc;
    op->flags |= SA_OP_HAS_PG;
    op->pg_lsn = ig->cur_final_lsn;
    op->pg_xid = ig->cur_xid;
    op->pg_commit_time = ig->cur_commit_time;
    if (ig->cur != NULL)
        return txbuf_add(ig->cur, 0, op, err);
    int rc = sa_batch_wal_add(ig->cur_batch, op, err);
    if (rc != 0)
        return rc;
    ig->cur_n++;
    if (sa_batch_bytes(ig->cur_batch) - ig->cur_mark.arena > (size_t)ig->cfg->txn_memory_kb * 1024) {
        /* outgrew memory: its ops so far move to a spill file */
        if ((rc = txbuf_new(ig->staging_dir, ig->cur_xid, 0, &ig->cur, err)) != 0 ||
            (rc = sa_batch_wal_foreach(ig->cur_batch, &ig->cur_mark, spill_one, ig->cur, err)) != 0)
            return rc;
        sa_batch_rollback(ig->cur_batch, &ig->cur_mark);
        ig->cur_n = 0;
    }
    return 0;
}

/* Where a change goes: the current stream, or the current transaction. */
static int route(ingest *ig, const pgo_msg *m, sa_op *op, sa_err *err)
{
    if (m->in_stream) {
        if (ig->stream_cur == NULL)
            return proto_err(err, m->wal_lsn, "a change inside a stream that never started");
        uint64_t e = 0, q = 0;
        const char *peer = txbuf_source(ig->stream_cur, &e, &q);
        set_source(op, peer != NULL ? peer : "", e, q);
        op->flags &= ~SA_OP_HAS_PG; /* stamped at Stream Commit, when its LSN is known */
        return txbuf_add(ig->stream_cur, m->xid, op, err);
    }
    if (!ig->cur_open)
        return proto_err(err, m->wal_lsn, "a change outside any transaction");
    return ig->cur_skip ? 0 : cur_add(ig, op, err);
}

static int on_change(ingest *ig, const pgo_msg *m, sa_err *err)
{
    if (!m->in_stream && (!ig->cur_open || ig->cur_skip))
        return ig->cur_open ? 0 : proto_err(err, m->wal_lsn, "a change outside any transaction");
    sa_op op;
    const sa_field *old = NULL;
    uint32_t nold = 0;
    memset(&op, 0, sizeof op); /* pgo_change_to_op sets only what it knows */
    int rc = pgo_change_to_op(ig->dec, m, &op, &old, &nold, err);
    if (rc != 0)
        return rc;
    return route(ig, m, &op, err);
}

static int on_truncate(ingest *ig, const pgo_msg *m, sa_err *err)
{
    for (uint32_t i = 0; i < m->truncate.nrels; i++) {
        sa_op op;
        memset(&op, 0, sizeof op);
        op.kind = SA_OP_TRUNCATE;
        op.table = m->truncate.rels[i]->qualname;
        int rc = route(ig, m, &op, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The current transaction, held in cur_batch, is complete: it stays there,
 * pending, until flush_pending writes it with its neighbours. */
static int commit_batch(ingest *ig, uint64_t commit_lsn, uint64_t end_lsn, sa_err *err)
{
    int rc = sa_batch_wal_end_group(ig->cur_batch, err);
    if (rc != 0)
        return rc;
    ig->commit_lsn = commit_lsn;
    ig->end_lsn = end_lsn;
    ig->pend_txns++;
    ig->pend_commit_us = ig->cur_commit_time;
    ig->pend_ops += ig->cur_n;
    if (ig->pend_since_ms == 0)
        ig->pend_since_ms = repl_clock_ms();
    /* bounded latency and memory under a stream that never pauses */
    if (repl_clock_ms() - ig->pend_since_ms >= 20 || sa_batch_bytes(ig->cur_batch) >= (4u << 20))
        return flush_pending(ig, err);
    return 0;
}

typedef struct floor_ctx {
    uint64_t now_ms, window_ms;
    uint64_t floor; /* lowest acked + 1 among peers seen within the window */
    int peers;
} floor_ctx;

static int floor_cb(const char *peer, const sa_cursor *c, void *vctx)
{
    (void)peer;
    floor_ctx *f = vctx;
    if (c->last_attempt_ms + f->window_ms < f->now_ms)
        return 0; /* silent too long: it will bootstrap again */
    if (f->peers == 0 || c->acked + 1 < f->floor)
        f->floor = c->acked + 1;
    f->peers++;
    return 0;
}

/*
 * WAL retention: drop what every edge seen within --wal-retention-s has
 * acknowledged, and beyond --wal-cap-mb the oldest records whoever still
 * needs them.  Edges left behind get 409 must_resnapshot (api.h).  With no
 * recent edge only the cap applies.
 */
static void retention(ingest *ig)
{
    sa_wal_info wi;
    sa_err err = {0};
    if (sa_wal_info_get(ig->store, &wi, &err) != 0 || wi.count == 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    floor_ctx f = {(uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
                   (uint64_t)ig->cfg->wal_retention_s * 1000, 0, 0};
    if (sa_cursor_foreach(ig->store, floor_cb, &f, &err) != 0)
        return;
    uint64_t below = f.peers > 0 ? f.floor : wi.first_seq;
    uint64_t cap = (uint64_t)ig->cfg->wal_cap_mb << 20;
    if (wi.bytes > cap) {
        /* about as many of the oldest records as make up the excess */
        uint64_t drop = wi.count - (uint64_t)((double)wi.count * (double)cap / (double)wi.bytes);
        if (wi.first_seq + drop > below)
            below = wi.first_seq + drop;
    }
    if (below > wi.durable_seq + 1)
        below = wi.durable_seq + 1;
    if (below <= wi.first_seq)
        return;
    if (sa_wal_truncate(ig->store, below, &err) != 0) {
        say(ig, 1, "WAL retention: %s", err.msg);
        return;
    }
    say(ig, 3, "WAL retention: records below %" PRIu64 " dropped (%d recent edge(s))", below,
        f.peers);
}

static int handle_msg(ingest *ig, const pgo_msg *m, sa_err *err)
{
    size_t mem = (size_t)ig->cfg->txn_memory_kb * 1024;
    txbuf **s;
    int rc = 0;
    switch (m->type) {
    case PGO_BEGIN:
        if (ig->cur_open)
            return proto_err(err, m->wal_lsn, "Begin inside a transaction");
        ig->cur_open = 1;
        ig->cur_xid = m->xid;
        ig->cur_n = 0;
        ig->src_peer[0] = '\0'; /* plain SQL until a softadastra message says otherwise */
        ig->conf_peer[0] = '\0';
        ig->cur_final_lsn = m->begin.final_lsn;
        ig->cur_commit_time = m->begin.commit_time;
        /* I2: the whole transaction is already in the WAL */
        ig->cur_skip = m->begin.final_lsn <= ig->commit_lsn;
        sa_batch_get_mark(ig->cur_batch, &ig->cur_mark);
        rc = sa_hlc_update(ig->hlc, sa_hlc_pack((uint64_t)(m->begin.commit_time / 1000), 0),
                           &ig->cur_hlc, err);
        if (rc == SA_ECLOCK) /* a server clock far ahead must not stop ingest */
            rc = sa_hlc_now(ig->hlc, &ig->cur_hlc, err);
        return rc;
    case PGO_COMMIT:
        if (!ig->cur_open)
            return proto_err(err, m->wal_lsn, "Commit without Begin");
        if (m->commit.commit_lsn != ig->cur_final_lsn)
            return proto_err(err, m->wal_lsn, "Commit LSN differs from its Begin's");
        ig->cur_open = 0; /* between transactions from here on */
        if (ig->cur_skip)
            ig->conf_peer[0] = '\0';
        if (ig->cur_skip) {
            /* already recorded */
        } else if (ig->cur != NULL) {
            /* spilled: the pending ones first, to keep commit order */
            if ((rc = flush_pending(ig, err)) == 0)
                rc = commit_txn(ig, ig->cur, ig->cur_xid, m->commit.commit_lsn,
                                m->commit.end_lsn, m->commit.commit_time, err);
        } else if (ig->cur_n > 0) {
            if ((rc = put_confirm(ig, ig->cur_batch, err)) == 0)
                rc = commit_batch(ig, m->commit.commit_lsn, m->commit.end_lsn, err);
        } else if (ig->conf_peer[0] != '\0') {
            /* edge ops applied without changing a row: no WAL record, but
             * the confirmation is written with the pending transactions */
            if ((rc = put_confirm(ig, ig->cur_batch, err)) == 0) {
                ig->commit_lsn = m->commit.commit_lsn;
                ig->end_lsn = m->commit.end_lsn;
                ig->pend_txns++;
                if (ig->pend_since_ms == 0)
                    ig->pend_since_ms = repl_clock_ms();
            }
        } else if (m->commit.end_lsn > ig->end_lsn) {
            /* nothing to write: durable as soon as what came before is */
            if (ig->durable_end >= ig->end_lsn && ig->pend_txns == 0)
                ig->durable_end = m->commit.end_lsn;
            ig->end_lsn = m->commit.end_lsn;
        }
        txbuf_free(ig->cur);
        ig->cur = NULL;
        return rc;
    case PGO_INSERT:
    case PGO_UPDATE:
    case PGO_DELETE:
        return on_change(ig, m, err);
    case PGO_TRUNCATE:
        return on_truncate(ig, m, err);
    case PGO_RELATION: /* the decoder keeps the schema */
    case PGO_TYPE:
    case PGO_ORIGIN:
    case PGO_MESSAGE:
        if (m->message.transactional && m->message.prefix != NULL &&
            strcmp(m->message.prefix, "softadastra") == 0)
            return source_message(ig, m);
        return 0;
    case PGO_STREAM_START:
        if ((s = stream_find(ig, m->xid)) != NULL) {
            ig->stream_cur = *s;
            return 0;
        }
        if (ig->nstreams == MAX_STREAMS)
            return proto_err(err, m->wal_lsn, "too many concurrently streamed transactions");
        if ((rc = txbuf_new(ig->staging_dir, m->xid, mem, &ig->streams[ig->nstreams], err)) != 0)
            return rc;
        ig->stream_cur = ig->streams[ig->nstreams++];
        return 0;
    case PGO_STREAM_STOP:
        ig->stream_cur = NULL;
        return 0;
    case PGO_STREAM_COMMIT:
        if ((s = stream_find(ig, m->xid)) == NULL)
            return proto_err(err, m->wal_lsn, "Stream Commit of an unknown transaction");
        if (m->commit.commit_lsn > ig->commit_lsn && txbuf_count(*s) > 0) {
            uint64_t ce = 0, cq = 0;
            const char *cp = txbuf_confirm(*s, &ce, &cq);
            ig->conf_peer[0] = '\0';
            if (cp != NULL && cp[0] != '\0' && strlen(cp) < sizeof ig->conf_peer) {
                snprintf(ig->conf_peer, sizeof ig->conf_peer, "%s", cp);
                ig->conf_epoch = ce;
                ig->conf_to = cq;
            }
            if ((rc = flush_pending(ig, err)) == 0)
                rc = commit_txn(ig, *s, m->xid, m->commit.commit_lsn, m->commit.end_lsn,
                                m->commit.commit_time, err);
        } else if (m->commit.end_lsn > ig->end_lsn) {
            if (ig->durable_end >= ig->end_lsn && ig->pend_txns == 0)
                ig->durable_end = m->commit.end_lsn;
            ig->end_lsn = m->commit.end_lsn;
        }
        stream_drop(ig, s);
        ig->status_due = 1;
        return rc;
    case PGO_STREAM_ABORT:
        if ((s = stream_find(ig, m->xid)) == NULL)
            return 0; /* aborted before any change reached us */
        if (m->stream_abort.subxid == m->xid) {
            stream_drop(ig, s);
            return 0;
        }
        return txbuf_abort_sub(*s, m->stream_abort.subxid, err);
    default:
        return proto_err(err, m->wal_lsn, "unexpected message");
    }
}

/* ---------------------------------------------------------------------
 * Flush feedback.
 * ------------------------------------------------------------------- */

/* The position we may confirm now (I1, I3). */
static int flush_target(ingest *ig, uint64_t *flush, sa_err *err)
{
    uint64_t f = ig->durable_end; /* I1: never a position not yet durable */
    if (idle(ig) && ig->idle_end > f) {
        /* everything received is durable: follow the server, after
         * recording the position (I3) */
        if (ig->idle_end > ig->confirmed_lsn) {
            sa_batch *b = NULL;
            int rc = sa_batch_new(&b, err);
            if (rc == 0)
                rc = batch_meta_lsn(b, INGEST_META_CONFIRMED, ig->idle_end, err);
            if (rc == 0)
                rc = sa_store_commit(ig->store, b, NULL, err);
            sa_batch_free(b);
            if (rc != 0)
                return rc;
            ig->confirmed_lsn = ig->idle_end;
        }
        f = ig->idle_end;
    }
    *flush = f;
    return 0;
}

/* Replication gauges for /metrics, at most every 250 ms unless forced. */
static void update_gauges(ingest *ig, int connected, int force)
{
    int64_t now = repl_clock_ms();
    if (ig->m == NULL || (!force && now - ig->gauges_ms < 250))
        return;
    ig->gauges_ms = now;
    uint64_t held = ig->durable_end;
    if (connected && idle(ig) && ig->idle_end > held)
        held = ig->idle_end; /* caught up: everything the server has is ours */
    uint64_t lag = ig->server_end > held ? ig->server_end - held : 0;
    double lag_s = 0;
    if (lag > 0 && ig->cur_commit_time > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wall = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        lag_s = wall - (double)ig->cur_commit_time / 1e6;
        if (lag_s < 0)
            lag_s = 0;
    }
    metrics_set(ig->m, "softadastra_replication_connected", NULL, connected);
    metrics_set(ig->m, "softadastra_replication_lag_bytes", NULL, (double)lag);
    metrics_set(ig->m, "softadastra_replication_lag_seconds", NULL, lag_s);
    metrics_set(ig->m, "softadastra_replication_server_lsn", NULL, (double)ig->server_end);
    metrics_set(ig->m, "softadastra_replication_durable_lsn", NULL, (double)ig->durable_end);
    metrics_set(ig->m, "softadastra_replication_confirmed_lsn", NULL, (double)ig->sent_flush);
}

static int send_status(ingest *ig, int reply, sa_err *err)
{
    uint64_t flush;
    int rc = flush_target(ig, &flush, err);
    if (rc != 0)
        return rc;
    if ((rc = repl_send_status(ig->rc, flush, flush, flush, reply, err)) != 0)
        return rc;
    ig->sent_flush = flush;
    ig->last_status_ms = repl_clock_ms();
    ig->status_due = 0;
    return 0;
}

/* ---------------------------------------------------------------------
 * Publication, slot, initial sync.
 * ------------------------------------------------------------------- */

static int pg_exec(ingest *ig, const char *sql, int nparams, const char *const *params,
                   PGresult **out, sa_err *err)
{
    PGresult *r = PQexecParams(ig->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char buf[512];
        sa_err_set(err, SA_EPG, "%s", repl__pg_msg(ig->pg, r, buf, sizeof buf));
        PQclear(r);
        return SA_EPG;
    }
    if (out != NULL)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* Create the publication of the synced tables, or set its tables. */
static int ensure_publication(ingest *ig, sa_err *err)
{
    sa_buf sql;
    sa_buf_init(&sql);
    PGresult *r = NULL;
    char *pubq = PQescapeIdentifier(ig->pg, ig->cfg->publication, strlen(ig->cfg->publication));
    const char *params[1] = {ig->cfg->publication};
    int rc = pubq == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
    if (rc == 0)
        rc = pg_exec(ig, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, params, &r, err);
    if (rc != 0)
        goto done;
    int exists = PQntuples(r) > 0;
    const char *head = exists ? "ALTER PUBLICATION " : "CREATE PUBLICATION ";
    rc = sa_buf_put(&sql, head, strlen(head));
    rc |= sa_buf_put(&sql, pubq, strlen(pubq));
    rc |= sa_buf_put(&sql, exists ? " SET TABLE " : " FOR TABLE ", exists ? 11 : 11);
    for (size_t i = 0; rc == 0 && i < ig->ntables; i++) {
        pgck_table ti;
        if ((rc = pgck_table_info(ig->pg, ig->tables[i], &ti, err)) != 0)
            goto done;
        if (i > 0)
            rc |= sa_buf_put(&sql, ", ", 2);
        rc |= sa_buf_put(&sql, ti.qualified, strlen(ti.qualified)); /* server-quoted */
    }
    rc |= sa_buf_put_u8(&sql, 0);
    if (rc != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = pg_exec(ig, (const char *)sql.data, 0, NULL, NULL, err)) != 0) {
        sa_err_wrap(err, "%s publication \"%s\"", exists ? "updating" : "creating",
                    ig->cfg->publication);
        goto done;
    }
    say(ig, 2, "publication \"%s\" %s for %zu table(s)", ig->cfg->publication,
        exists ? "updated" : "created", ig->ntables);
done:
    PQclear(r);
    PQfreemem(pubq);
    sa_buf_free(&sql);
    return rc;
}

typedef struct copy_ctx {
    ingest *ig;
    sa_batch *b;
    size_t pending;
    uint64_t lsn, rows, total_rows, est_total;
    int64_t started_ms, last_progress_ms;
    size_t tables_done, ntables;
    const char *table;
    sa_err *err;
} copy_ctx;

static int copy_flush(copy_ctx *cx, sa_err *err)
{
    if (cx->pending == 0)
        return 0;
    cx->pending = 0;
    return sa_store_commit(cx->ig->store, cx->b, NULL, err);
}

static void copy_progress(copy_ctx *cx, int final)
{
    int64_t now = repl_clock_ms();
    if (!final && now - cx->last_progress_ms < 1000)
        return;
    cx->last_progress_ms = now;
    double secs = (double)(now - cx->started_ms) / 1000.0;
    double rate = secs > 0 ? (double)cx->total_rows / secs : 0;
    char eta[32] = "?";
    if (rate > 0 && cx->est_total > cx->total_rows)
        snprintf(eta, sizeof eta, "%.0fs", (double)(cx->est_total - cx->total_rows) / rate);
    else if (cx->est_total <= cx->total_rows)
        snprintf(eta, sizeof eta, "0s");
    say(cx->ig, INGEST_LOG_PROGRESS, "initial sync: %" PRIu64 " rows, %.0f rows/s, tables %zu/%zu%s%s, ETA %s",
        cx->total_rows, rate, cx->tables_done, cx->ntables, cx->table ? ", copying " : "",
        cx->table ? cx->table : "", eta);
}

static int copy_row(void *ctx, const sa_op *op, sa_err *err)
{
    copy_ctx *cx = ctx;
    sa_op o = *op;
    o.flags |= SA_OP_HAS_PG;
    o.pg_lsn = cx->lsn; /* the snapshot's position */
    int rc = sa_hlc_now(cx->ig->hlc, &o.hlc, err);
    /* each row is its own group: a copy is not a transaction, and groups
     * of one keep every read boundary free */
    if (rc == 0)
        rc = sa_batch_wal_append(cx->b, &o, 1, err);
    if (rc != 0)
        return rc;
    cx->rows++;
    cx->total_rows++;
    if (++cx->pending >= COPY_GROUP_ROWS && (rc = copy_flush(cx, err)) != 0)
        return rc;
    if (*cx->ig->stop)
        return sa_err_set(err, SA_ECLOSED, "stopped during the initial sync");
    copy_progress(cx, 0);
    return 0;
}

enum copy_mode {
    COPY_FIRST,  /* first start: then stream from the snapshot's position */
    COPY_RESYNC, /* after a resync point: truncate ops of every table first */
    COPY_ADDED,  /* tables added to a running set: only I4 is recorded */
};

/*
 * Copy `tables` inside `snapshot` (exported at `lsn`) into the WAL,
 * recording I4 for each table.  COPY_RESYNC writes a resync point first
 * (truncate ops of every table, so edges drop what they had).
 */
static int copy_tables(ingest *ig, char *const *tables, size_t ntables, const char *snapshot,
                       uint64_t lsn, enum copy_mode mode, sa_err *err)
{
    copy_ctx cx = {.ig = ig, .lsn = lsn, .ntables = ntables, .err = err};
    int resync = mode == COPY_RESYNC;
    cp_table **tabs = sa_calloc(ntables + 1, sizeof *tabs);
    char l[REPL_LSN_STRLEN];
    int rc = tabs == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
    if (rc == 0)
        rc = sa_batch_new(&cx.b, err);
    if (rc == 0)
        rc = cp_begin_snapshot(ig->pg, snapshot, err);
    if (rc != 0)
        goto done;
    for (size_t i = 0; i < ntables; i++) {
        if ((rc = cp_table_load(ig->pg, tables[i], &tabs[i], err)) != 0)
            goto done;
        if (tabs[i]->est_rows > 0)
            cx.est_total += (uint64_t)tabs[i]->est_rows;
    }
    if (resync) {
        sa_wal_info wi;
        sa_wal_info_get(ig->store, &wi, NULL);
        if ((rc = batch_meta_str(cx.b, INGEST_META_STATE, "initial-sync", err)) != 0)
            goto done;
        char seq[32];
        snprintf(seq, sizeof seq, "%" PRIu64, wi.last_seq + 1);
        if ((rc = batch_meta_str(cx.b, INGEST_META_RESYNC_SEQ, seq, err)) != 0)
            goto done;
        sa_op *tr = sa_calloc(ntables, sizeof *tr);
        if (tr == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < ntables; i++) {
            tr[i].origin = "pg";
            tr[i].kind = SA_OP_TRUNCATE;
            tr[i].table = tabs[i]->qualname;
            tr[i].flags = SA_OP_HAS_PG;
            tr[i].pg_lsn = lsn;
            sa_hlc_now(ig->hlc, &tr[i].hlc, NULL);
        }
        rc = sa_batch_wal_append(cx.b, tr, ntables, err);
        sa_free(tr);
        if (rc != 0 || (rc = sa_store_commit(ig->store, cx.b, NULL, err)) != 0)
            goto done;
        say(ig, 1, "resync point at WAL seq %s: edges re-bootstrap from the snapshot", seq);
    }
    cx.started_ms = repl_clock_ms();
    for (size_t i = 0; i < ntables; i++) {
        cx.table = tabs[i]->qualname;
        cx.rows = 0;
        if ((rc = cp_copy_table(ig->pg, tabs[i], copy_row, &cx, NULL, err)) != 0 ||
            (rc = copy_flush(&cx, err)) != 0) {
            sa_err_wrap(err, "initial copy of %s", tabs[i]->qualname);
            goto done;
        }
        if ((rc = copied_set(ig, tabs[i]->qualname, lsn, err)) != 0)
            goto done;
        char key[300];
        snprintf(key, sizeof key, "ingest.copied.%s", tabs[i]->qualname);
        if ((rc = batch_meta_lsn(cx.b, key, lsn, err)) != 0)
            goto done;
        cx.tables_done++;
        say(ig, 2, "copied %s: %" PRIu64 " rows", tabs[i]->qualname, cx.rows);
    }
    cx.table = NULL;
    copy_progress(&cx, 1);
    if (mode != COPY_ADDED) {
        /* streaming starts at the snapshot's position */
        if ((rc = batch_meta_str(cx.b, INGEST_META_STATE, "streaming", err)) != 0 ||
            (rc = batch_meta_lsn(cx.b, INGEST_META_END_LSN, lsn, err)) != 0 ||
            (rc = batch_meta_lsn(cx.b, INGEST_META_COMMIT_LSN, lsn, err)) != 0)
            goto done;
        ig->end_lsn = ig->commit_lsn = ig->durable_end = ig->durable_commit = lsn;
    }
    if ((rc = sa_store_commit(ig->store, cx.b, NULL, err)) != 0)
        goto done;
    say(ig, 2, "%s done: %" PRIu64 " rows in %zu table(s), snapshot at %s",
        mode == COPY_ADDED ? "copy of added tables" : "initial sync", cx.total_rows, cx.ntables,
        lsn_str(lsn, l));
done:
    {
        sa_err e2;
        if (cp_end(ig->pg, &e2) != 0 && rc == 0)
            rc = sa_err_set(err, e2.code, "%s", e2.msg);
    }
    for (size_t i = 0; tabs != NULL && i < ntables; i++)
        cp_table_free(tabs[i]);
    sa_free(tabs);
    sa_batch_free(cx.b);
    return rc;
}

/* Create our slot with an exported snapshot and copy everything in it. */
static int initial_sync(ingest *ig, int resync, sa_err *err)
{
    repl_conn *rc_conn = NULL;
    repl_slot_created sc;
    sa_batch *b = NULL;
    char l[REPL_LSN_STRLEN];
    /* recorded first: a crash between the slot's creation and the record
     * of it below leaves a slot the next start knows to be ours */
    int rc = sa_batch_new(&b, err);
    if (rc == 0)
        rc = batch_meta_str(b, INGEST_META_SLOT_PENDING, ig->cfg->slot, err);
    if (rc == 0)
        rc = sa_store_commit(ig->store, b, NULL, err);
    if (rc == 0)
        rc = repl_conn_open(ig->cfg->pg, &rc_conn, err);
    if (rc != 0)
        goto done;
    if ((rc = repl_create_slot(rc_conn, ig->cfg->slot, true, &sc, err)) != 0) {
        if (rc == SA_EEXISTS)
            sa_err_wrap(err, "replication slot \"%s\" exists but this data directory did not "
                        "create it; drop it with `sa-bridge drop-slot --slot %s` or choose "
                        "another --slot", ig->cfg->slot, ig->cfg->slot);
        goto done;
    }
    snprintf(ig->slot_name, sizeof ig->slot_name, "%s", ig->cfg->slot);
    /* record the slot as ours before anything else: a crash from here on
     * leaves a slot we may drop and recreate */
    if ((rc = batch_meta_str(b, INGEST_META_SLOT, ig->cfg->slot, err)) != 0 ||
        (rc = batch_meta_lsn(b, INGEST_META_SLOT_LSN, sc.consistent_point, err)) != 0 ||
        (rc = batch_meta_str(b, INGEST_META_SYSID, ig->sysid, err)) != 0 ||
        (rc = batch_meta_lsn(b, INGEST_META_CONFIRMED, sc.consistent_point, err)) != 0 ||
        (rc = batch_meta_str(b, INGEST_META_STATE, "initial-sync", err)) != 0)
        goto done;
    /* rc_conn runs no other command until the copy is over: its exported
     * snapshot stays importable that long */
    if ((rc = sa_store_commit(ig->store, b, NULL, err)) != 0)
        goto done;
    ig->confirmed_lsn = sc.consistent_point;
    say(ig, 2, "created replication slot \"%s\" at %s", ig->cfg->slot,
        lsn_str(sc.consistent_point, l));
    rc = copy_tables(ig, ig->tables, ig->ntables, sc.snapshot_name, sc.consistent_point,
                     resync ? COPY_RESYNC : COPY_FIRST, err);
done:
    sa_batch_free(b);
    repl_conn_close(rc_conn); /* after the copy: the snapshot lives while it is open */
    return rc;
}

/*
 * Tables added to the synced set since the last run: copy them inside the
 * snapshot of a temporary slot taken now (at X >= the stream's position),
 * and record I4 so the stream skips their changes committed at or before
 * X — those are in the copy; later ones are not — neither lost nor doubled.
 * The publication already includes them (ensure_publication ran first).
 */
static int copy_added_tables(ingest *ig, sa_err *err)
{
    char **added = sa_calloc(ig->ntables + 1, sizeof *added);
    size_t nadded = 0;
    repl_conn *c = NULL;
    repl_slot_created sc;
    int rc = added == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
    for (size_t i = 0; rc == 0 && i < ig->ntables; i++) {
        pgck_table ti;
        char qual[200];
        if ((rc = pgck_table_info(ig->pg, ig->tables[i], &ti, err)) != 0)
            break;
        snprintf(qual, sizeof qual, "%s.%s", ti.schema, ti.name);
        if (copied_lsn(ig, qual) == 0)
            added[nadded++] = ig->tables[i];
    }
    if (rc != 0 || nadded == 0)
        goto done;
    char tmp[REPL_NAME_MAX + 1];
    snprintf(tmp, sizeof tmp, "sa_copy_%d", (int)getpid());
    if ((rc = repl_conn_open(ig->cfg->pg, &c, err)) != 0 ||
        (rc = repl_create_slot_ex(c, tmp, true, true, &sc, err)) != 0)
        goto done;
    say(ig, 2, "%zu table(s) added to the synced set: copying them", nadded);
    rc = copy_tables(ig, added, nadded, sc.snapshot_name, sc.consistent_point, COPY_ADDED, err);
done:
    repl_conn_close(c); /* the temporary slot goes with it */
    sa_free(added);
    return rc;
}

/* ---------------------------------------------------------------------
 * Streaming sessions and the run loop.
 * ------------------------------------------------------------------- */

/* Is the slot still the one we created (I3)?  *resync when it is gone,
 * lost or was recreated.  *must_drop when it is ours but invalidated. */
static int check_slot(ingest *ig, int *resync, int *must_drop, sa_err *err)
{
    bool exists = false;
    repl_slot_info si;
    char l1[REPL_LSN_STRLEN], l2[REPL_LSN_STRLEN];
    *resync = *must_drop = 0;
    int rc = repl_slot_get(ig->pg, ig->cfg->slot, &exists, &si, err);
    if (rc != 0)
        return rc;
    uint64_t ours = ig->end_lsn > ig->confirmed_lsn ? ig->end_lsn : ig->confirmed_lsn;
    if (!exists) {
        say(ig, 1, "replication slot \"%s\" no longer exists: changes since %s may be lost; "
                   "taking the resync path", ig->cfg->slot, lsn_str(ours, l1));
        *resync = 1;
    } else if (strcmp(si.wal_status, "lost") == 0) {
        say(ig, 1, "replication slot \"%s\" was invalidated (wal_status lost): the server "
                   "removed WAL it still needed; taking the resync path", ig->cfg->slot);
        *resync = *must_drop = 1;
    } else if (si.confirmed_flush_lsn > ours) {
        say(ig, 1, "replication slot \"%s\" confirms %s but this bridge never confirmed past "
                   "%s: the slot was dropped and recreated; taking the resync path",
            ig->cfg->slot, lsn_str(si.confirmed_flush_lsn, l1), lsn_str(ours, l2));
        *resync = 1;
    } else if (strcmp(si.plugin, "pgoutput") != 0) {
        return sa_err_set(err, SA_EINVAL, "replication slot \"%s\" uses plugin \"%s\", not "
                          "pgoutput", ig->cfg->slot, si.plugin);
    }
    return 0;
}

/* Resync: a fresh slot (or a temporary one when a foreign slot holds our
 * name) and a fresh copy after a resync point. */
static int resync(ingest *ig, int must_drop, sa_err *err)
{
    bool exists = false;
    repl_slot_info si;
    int rc = repl_slot_get(ig->pg, ig->cfg->slot, &exists, &si, err);
    if (rc != 0)
        return rc;
    if (exists && !must_drop)
        return sa_err_set(err, SA_EEXISTS,
                          "replication slot \"%s\" was recreated by someone else; this bridge "
                          "will not drop a slot it did not create: drop it with `sa-bridge "
                          "drop-slot --slot %s` (or use another --slot) and start again",
                          ig->cfg->slot, ig->cfg->slot);
    if (exists && (rc = repl_slot_drop(ig->pg, ig->cfg->slot, err)) != 0)
        return rc;
    ig->ncopied = 0;
    return initial_sync(ig, 1, err);
}

static int session(ingest *ig, sa_err *err)
{
    char l[REPL_LSN_STRLEN];
    const char *pubs[1] = {ig->cfg->publication};
    repl_start_opts so = {.proto_version = INGEST_PROTO, .streaming = true, .messages = true,
                          .publications = pubs, .npublications = 1};
    int rc = repl_conn_open(ig->cfg->pg, &ig->rc, err);
    if (rc != 0)
        return rc;
    pgo_decoder_free(ig->dec);
    ig->dec = NULL;
    discard_open(ig);
    if ((rc = pgo_decoder_new(INGEST_PROTO, &ig->dec, err)) != 0)
        return rc;
    if (ig->cur_batch == NULL && (rc = sa_batch_new(&ig->cur_batch, err)) != 0)
        return rc;
    if ((rc = repl_start(ig->rc, ig->cfg->slot, ig->end_lsn, &so, err)) != 0)
        return rc;
    metrics_health_set(ig->m, METRICS_REPLICATION, 1, NULL);
    say(ig, 2, "streaming from slot \"%s\" at %s", ig->cfg->slot, lsn_str(ig->end_lsn, l));
    ig->last_status_ms = 0;
    ig->idle_end = 0;
    update_gauges(ig, 1, 1);
    int64_t dead = ig->cfg->dead_after_ms;
    while (!*ig->stop) {
        repl_frame f;
        int64_t now = repl_clock_ms();
        update_gauges(ig, 1, 0);
        if (now - repl_last_server_activity_ms(ig->rc) > dead / 2 &&
            now - ig->last_status_ms > dead / 4) {
            /* silence: ask for a reply before calling the connection dead */
            if ((rc = send_status(ig, 1, err)) != 0)
                return rc;
        }
        if (repl_is_stale(ig->rc, now, dead))
            return sa_err_set(err, SA_ETIMEOUT, "no answer from the server for %" PRId64 " ms: "
                              "replacing the connection", dead);
        int between = !ig->cur_open && ig->pend_txns > 0;
        if (between && now - ig->pend_since_ms >= 20 && (rc = flush_pending(ig, err)) != 0) {
            ig->fatal = 1; /* bounded latency under a steady stream */
            return rc;
        }
        int64_t every = ig->cfg->wal_retention_s >= 20 ? 10000 : (int64_t)ig->cfg->wal_retention_s * 500;
        if (ig->api != NULL && now - ig->retention_ms >= every) {
            ig->retention_ms = now;
            retention(ig);
        }
        if (ig->status_due || now - ig->last_status_ms >= ig->cfg->status_interval_ms)
            if ((rc = send_status(ig, 0, err)) != 0)
                return rc;
        /* pending transactions wait for their write only while more input is
         * already there: when it pauses, they are written all at once */
        between = !ig->cur_open && ig->pend_txns > 0;
        rc = repl_next(ig->rc, between ? 0 : 200, &f, err);
        if (rc == 0 && between) {
            if ((rc = flush_pending(ig, err)) != 0) {
                ig->fatal = 1;
                return rc;
            }
            continue;
        }
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        if (f.wal_end > ig->server_end)
            ig->server_end = f.wal_end;
        if (f.type == REPL_FRAME_KEEPALIVE) {
            if (idle(ig))
                ig->idle_end = f.wal_end;
            if (f.reply_requested && (rc = send_status(ig, 0, err)) != 0)
                return rc;
            continue;
        }
        const pgo_msg *m;
        if ((rc = pgo_decode(ig->dec, f.payload, f.payload_len, f.data_start, &m, err)) != 0 ||
            (rc = handle_msg(ig, m, err)) != 0) {
            /* bad input from the server (never guessed around), or our store
             * failing: stop, naming what and where */
            ig->fatal = 1;
            return rc;
        }
    }
    return 0;
}

/* Leaving a session: write the complete transactions still pending (the
 * store is fine whatever happened to the connection). */
static int session_end(ingest *ig, sa_err *err)
{
    if (ig->cur_open) {
        sa_batch_rollback(ig->cur_batch, &ig->cur_mark);
        txbuf_free(ig->cur);
        ig->cur = NULL;
        ig->cur_open = 0;
    }
    return flush_pending(ig, err);
}

/* Errors a reconnect may cure: the connection, the server restarting. */
static int transient(int rc)
{
    return rc == SA_EIO || rc == SA_ECLOSED || rc == SA_ETIMEOUT || rc == SA_EPG;
}

static int load_positions(ingest *ig, sa_err *err)
{
    int rc = meta_get_lsn(ig, INGEST_META_COMMIT_LSN, &ig->commit_lsn, err);
    if (rc == 0)
        rc = meta_get_lsn(ig, INGEST_META_END_LSN, &ig->end_lsn, err);
    if (rc == 0)
        rc = meta_get_lsn(ig, INGEST_META_CONFIRMED, &ig->confirmed_lsn, err);
    ig->durable_end = ig->end_lsn; /* what the store holds after open is durable */
    ig->durable_commit = ig->commit_lsn;
    for (size_t i = 0; rc == 0 && i < ig->ntables; i++) {
        pgck_table ti;
        if ((rc = pgck_table_info(ig->pg, ig->tables[i], &ti, err)) != 0)
            break;
        char key[300], qual[200];
        uint64_t lsn;
        snprintf(qual, sizeof qual, "%s.%s", ti.schema, ti.name);
        snprintf(key, sizeof key, "ingest.copied.%s", qual);
        if ((rc = meta_get_lsn(ig, key, &lsn, err)) == 0 && lsn != 0)
            rc = copied_set(ig, qual, lsn, err);
    }
    /* the clock never goes back across restarts: start past the WAL's head */
    sa_wal_info wi;
    sa_wal_info_get(ig->store, &wi, NULL);
    if (rc == 0 && wi.last_seq >= wi.first_seq) {
        sa_wal_iter *it = NULL;
        sa_wal_rec rec;
        if ((rc = sa_wal_iter_open(ig->store, wi.last_seq, &it, err)) == 0 &&
            (rc = sa_wal_iter_next(it, &rec, err)) == 1) {
            sa_hlc_clock_restore(ig->hlc, rec.op->hlc);
            rc = 0;
        }
        sa_wal_iter_close(it);
    }
    return rc;
}

/*
 * The synced set: --tables when given, else the tables of the softadastra
 * extension's softadastra.tables (what softadastra.add_table manages).  Read
 * at start: a table added later joins at the next start, copied then.
 */
static int synced_tables(ingest *ig, sa_err *err)
{
    if (ig->cfg->ntables > 0) {
        ig->tables = ig->cfg->tables;
        ig->ntables = ig->cfg->ntables;
        return 0;
    }
    PGresult *r = PQexec(ig->pg, "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'softadastra'");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = sa_err_set(err, SA_EPG, "cannot look for the softadastra extension: %s",
                        PQresultErrorMessage(r));
    } else if (PQntuples(r) == 0) {
        rc = sa_err_set(err, SA_EINVAL, "no tables to sync: give --tables, or install the "
                        "extension (CREATE EXTENSION softadastra) and add tables with "
                        "softadastra.add_table()");
    }
    PQclear(r);
    if (rc != 0)
        return rc;
    r = PQexec(ig->pg, "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) "
                       "FROM softadastra.tables t JOIN pg_catalog.pg_class c ON c.oid = t.relid "
                       "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = sa_err_set(err, SA_EPG, "cannot read softadastra.tables: %s", PQresultErrorMessage(r));
        PQclear(r);
        return rc;
    }
    size_t n = (size_t)PQntuples(r);
    ig->ext_tables = sa_calloc(n + 1, sizeof *ig->ext_tables);
    for (size_t i = 0; ig->ext_tables != NULL && i < n; i++)
        if ((ig->ext_tables[i] = sa_strdup(PQgetvalue(r, (int)i, 0))) == NULL)
            rc = SA_ENOMEM;
    PQclear(r);
    if (ig->ext_tables == NULL || rc != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    ig->tables = ig->ext_tables;
    ig->ntables = n;
    if (n == 0)
        return sa_err_set(err, SA_EINVAL, "no tables to sync: softadastra.tables is empty; add "
                          "tables with softadastra.add_table() or give --tables");
    say(ig, 2, "synced tables from softadastra.tables: %zu", n);
    return 0;
}

static void kick_applier(void *applier_ptr) { applier_kick(applier_ptr); }

/* The HTTP API (api.h) on the store, unless --listen off. */
static int start_api(ingest *ig, sa_err *err)
{
    if (strcmp(ig->cfg->listen, "off") == 0)
        return 0;
    char instance[33];
    int rc = api_instance_id(ig->store, instance, err);
    if (rc != 0)
        return rc;
    /* the applier, when PostgreSQL has the extension (apply_ops) */
    PGresult *r = PQexec(ig->pg, "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'softadastra'");
    int ext = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (ext) {
        if ((rc = applier_start(ig->cfg->pg, ig->store, ig->m, ig->log, ig->lctx,
                                ig->cfg->log_level, &ig->applier, err)) != 0)
            return rc;
    } else {
        metrics_health_set(ig->m, METRICS_APPLIER, 0, "the softadastra extension is not "
                                                      "installed: pushed ops are not applied");
        say(ig, 1, "the softadastra extension is not installed: edges' pushed ops are queued "
                   "but not applied (CREATE EXTENSION softadastra)");
    }
    api_options o;
    api_options_init(&o);
    o.on_ops = kick_applier;
    o.on_ops_ctx = ig->applier;
    o.listen = ig->cfg->listen;
    o.pg = ig->cfg->pg;
    o.max_body = (size_t)ig->cfg->max_body_kb * 1024;
    o.inbox_cap = (uint64_t)ig->cfg->inbox_cap_mb << 20;
    o.max_conns = ig->cfg->max_conns;
    o.max_conns_per_ip = ig->cfg->max_conns_per_ip;
    o.metrics = ig->m;
    if ((rc = api_start(&o, ig->store, instance, ig->tables, ig->ntables, &ig->api, err)) != 0)
        return rc;
    char host[256];
    const char *colon = strrchr(ig->cfg->listen, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - ig->cfg->listen), ig->cfg->listen);
    say(ig, 2, "HTTP API v1 listening on %s:%d (instance %s)", host, api_port(ig->api), instance);
    /* where `sa-bridge status --data DIR` finds it: DIR/api.url, replaced
     * atomically (a wildcard address is reached through loopback) */
    const char *reach = host[0] == '\0' || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0
                            ? "127.0.0.1"
                        : strcmp(host, "[::]") == 0 ? "[::1]"
                                                    : host;
    size_t n = strlen(ig->cfg->data) + 32;
    char *path = sa_malloc(n), *tmp = sa_malloc(n);
    if (path != NULL && tmp != NULL) {
        snprintf(path, n, "%s/api.url", ig->cfg->data);
        snprintf(tmp, n, "%s/api.url.tmp", ig->cfg->data);
        FILE *f = fopen(tmp, "w");
        int ok = f != NULL && fprintf(f, "http://%s:%d\n", reach, api_port(ig->api)) > 0;
        if (f != NULL && fclose(f) != 0)
            ok = 0;
        if (!ok || rename(tmp, path) != 0) {
            say(ig, 1, "cannot write %s (sa-bridge status --data will not find the API): %s",
                path, strerror(errno));
            unlink(tmp);
        }
    }
    sa_free(path);
    sa_free(tmp);
    return 0;
}

static int checks(ingest *ig, int slot_known, sa_err *err)
{
    pgck_report rep = {0};
    int rc = pgck_run(ig->pg, (const char *const *)ig->tables, ig->ntables,
                      slot_known ? NULL : ig->cfg->slot, &rep, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < rep.nproblems; i++)
        say(ig, 0, "precondition failed: %s", rep.problems[i].text);
    if (rep.nproblems > 0)
        rc = sa_err_set(err, SA_EINVAL, "%zu precondition(s) failed (see above); nothing was "
                        "changed", rep.nproblems);
    pgck_report_free(&rep);
    return rc;
}

int ingest_run(const sa_bridge_config *cfg, volatile sig_atomic_t *stop, ingest_log_fn log,
               void *log_ctx, sa_err *err)
{
    ingest ig0, *ig = &ig0;
    memset(ig, 0, sizeof *ig);
    ig->cfg = cfg;
    ig->log = log;
    ig->lctx = log_ctx;
    ig->stop = stop;
    sa_retry retry;
    sa_retry_policy pol = sa_retry_policy_default();
    pol.base_ms = cfg->retry_base_ms;
    pol.cap_ms = cfg->retry_cap_ms;
    char state[32], slot[REPL_NAME_MAX + 1], sysid[32];
    int found, rc;
    size_t n = strlen(cfg->data) + 16;

    if ((rc = sa_retry_init(&retry, &pol, 0, err)) != 0 ||
        (rc = sa_hlc_clock_new(NULL, &ig->hlc, err)) != 0 || (rc = metrics_new(&ig->m, err)) != 0)
        goto done;
    metrics_health_set(ig->m, METRICS_REPLICATION, 0, "connecting");
    ig->store_dir = ingest_store_dir(cfg->data);
    ig->staging_dir = sa_malloc(n);
    if (ig->store_dir == NULL || ig->staging_dir == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(ig->staging_dir, n, "%s/staging", cfg->data);
    if ((mkdir(cfg->data, 0700) != 0 && errno != EEXIST) ||
        (mkdir(ig->staging_dir, 0700) != 0 && errno != EEXIST)) {
        rc = sa_err_set(err, SA_ESYS, "cannot create data directory '%s': %s", cfg->data,
                        strerror(errno));
        goto done;
    }
    if ((rc = txbuf_clean_dir(ig->staging_dir, err)) != 0)
        goto done;
    sa_store_options so;
    sa_store_options_init(&so);
    so.durability = cfg->durability;
    if ((rc = sa_store_open(ig->store_dir, &so, &ig->store, err)) != 0)
        goto done;
    metrics_health_set(ig->m, METRICS_STORAGE, 1, NULL);

    /* the ordinary connection: checks, publication, copies, slot queries */
    for (;;) {
        ig->pg = PQconnectdb(cfg->pg);
        if (PQstatus(ig->pg) == CONNECTION_OK)
            break;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(ig->pg));
        msg[strcspn(msg, "\n")] = '\0';
        PQfinish(ig->pg);
        ig->pg = NULL;
        uint64_t delay;
        if ((rc = sa_retry_next(&retry, 0, &delay, err)) != 0)
            goto done;
        say(ig, 1, "cannot connect to PostgreSQL (%s); retrying in %" PRIu64 " ms", msg, delay);
        for (uint64_t w = 0; w < delay && !*stop; w += 50)
            usleep(50000);
        if (*stop)
            goto done;
    }
    sa_retry_success(&retry);
    if ((rc = meta_get_str(ig, INGEST_META_STATE, state, sizeof state, &found, err)) != 0 ||
        (rc = meta_get_str(ig, INGEST_META_SLOT, slot, sizeof slot, &found, err)) != 0 ||
        (rc = meta_get_str(ig, INGEST_META_SYSID, sysid, sizeof sysid, &found, err)) != 0)
        goto done;
    int slot_known = slot[0] != '\0' && strcmp(slot, cfg->slot) == 0;
    if (slot[0] != '\0' && !slot_known) {
        rc = sa_err_set(err, SA_EINVAL, "this data directory follows slot \"%s\", not \"%s\"; "
                        "use --slot %s or another --data", slot, cfg->slot, slot);
        goto done;
    }
    if ((rc = synced_tables(ig, err)) != 0 || (rc = checks(ig, slot_known, err)) != 0 ||
        (rc = start_api(ig, err)) != 0)
        goto done;
    {
        repl_conn *c = NULL;
        repl_system sys;
        if ((rc = repl_conn_open(cfg->pg, &c, err)) == 0)
            rc = repl_identify_system(c, &sys, err);
        repl_conn_close(c);
        if (rc != 0)
            goto done;
        snprintf(ig->sysid, sizeof ig->sysid, "%s", sys.systemid);
    }
    if ((rc = ensure_publication(ig, err)) != 0 || (rc = load_positions(ig, err)) != 0)
        goto done;

    if (!slot_known) {
        char pending[REPL_NAME_MAX + 1];
        bool exists = false;
        repl_slot_info si;
        if ((rc = meta_get_str(ig, INGEST_META_SLOT_PENDING, pending, sizeof pending, &found,
                               err)) != 0 ||
            (rc = repl_slot_get(ig->pg, cfg->slot, &exists, &si, err)) != 0)
            goto done;
        if (exists && strcmp(pending, cfg->slot) == 0) {
            /* created by our previous start, which stopped before recording it */
            say(ig, 1, "dropping slot \"%s\" left by an interrupted first start", cfg->slot);
            if ((rc = repl_slot_drop(ig->pg, cfg->slot, err)) != 0)
                goto done;
        }
        rc = initial_sync(ig, 0, err); /* first start */
    } else if (strcmp(sysid, ig->sysid) != 0) {
        /* another cluster: a slot of that name there is not ours to drop */
        say(ig, 1, "the server's system identifier changed (%s, was %s): a different cluster; "
                   "taking the resync path", ig->sysid, sysid);
        rc = resync(ig, 0, err);
    } else if (strcmp(state, "streaming") != 0) {
        /* ours to drop and recreate, unless someone recreated it meanwhile */
        int need, must_drop;
        say(ig, 1, "the initial sync was interrupted: starting it again");
        if ((rc = check_slot(ig, &need, &must_drop, err)) == 0)
            rc = resync(ig, !need || must_drop, err);
    } else {
        int need, must_drop;
        if ((rc = check_slot(ig, &need, &must_drop, err)) == 0 && need)
            rc = resync(ig, must_drop, err);
        else if (rc == 0)
            rc = copy_added_tables(ig, err);
    }
    if (rc != 0)
        goto done;

    while (!*stop) {
        rc = session(ig, err);
        sa_err e2;
        int frc = session_end(ig, &e2);
        if (frc == 0 && rc == 0 && ig->rc != NULL)
            (void)send_status(ig, 0, &e2); /* tell the server before leaving */
        repl_conn_close(ig->rc);
        ig->rc = NULL;
        if (frc != 0) {
            *err = e2;
            rc = frc;
            goto done;
        }
        if (rc == 0 || *stop)
            break;
        metrics_health_set(ig->m, METRICS_REPLICATION, 0, err->msg);
        update_gauges(ig, 0, 1);
        if (ig->fatal || !transient(rc))
            goto done;
        uint64_t delay;
        metrics_add(ig->m, "softadastra_replication_reconnects_total", NULL, 1);
        say(ig, 1, "replication connection lost: %s", err->msg);
        if ((rc = sa_retry_next(&retry, 0, &delay, err)) != 0)
            goto done;
        say(ig, 1, "reconnecting in %" PRIu64 " ms (attempt %u)", delay, sa_retry_attempts(&retry));
        for (uint64_t w = 0; w < delay && !*stop; w += 50)
            usleep(50000);
        if (PQstatus(ig->pg) != CONNECTION_OK)
            PQreset(ig->pg);
        if (PQstatus(ig->pg) == CONNECTION_OK) {
            int need = 0, must_drop = 0;
            if ((rc = check_slot(ig, &need, &must_drop, err)) == 0 && need)
                rc = resync(ig, must_drop, err);
            if (rc != 0 && !transient(rc))
                goto done;
            if (rc == 0)
                sa_retry_success(&retry);
        }
    }
    rc = 0;
    say(ig, 2, "stopped: %" PRIu64 " transactions, %" PRIu64 " ops recorded", ig->txns, ig->ops);
done:
    api_stop(ig->api); /* before the store it serves */
    ig->api = NULL;
    applier_stop(ig->applier);
    ig->applier = NULL;
    discard_open(ig);
    sa_batch_free(ig->cur_batch);
    pgo_decoder_free(ig->dec);
    repl_conn_close(ig->rc);
    if (ig->pg != NULL)
        PQfinish(ig->pg);
    sa_store_close(ig->store);
    sa_hlc_clock_free(ig->hlc);
    metrics_free(ig->m);
    for (size_t i = 0; i < ig->ncopied; i++)
        sa_free(ig->copied[i].table);
    sa_free(ig->copied);
    for (size_t i = 0; ig->ext_tables != NULL && ig->ext_tables[i] != NULL; i++)
        sa_free(ig->ext_tables[i]);
    sa_free(ig->ext_tables);
    sa_free(ig->store_dir);
    sa_free(ig->staging_dir);
    return rc;
}
