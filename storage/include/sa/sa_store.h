/*
 * sa_store.h — libsa_storage: one RocksDB database per data directory with
 * the column families wal, state, cursors, inbox and meta.
 *
 * Everything that changes durable state goes through a batch (sa_batch) and
 * sa_store_commit(): WAL groups, the state rows they imply, cursor and
 * watermark updates, inbox puts and removals, and the meta counters all land
 * in ONE RocksDB WriteBatch, so an effect and its bookkeeping are never
 * separated by a crash (DESIGN.md contracts 1, 2, 4 and 6).
 *
 * Invariants (checked by asserts in store.c and by tests):
 *   S1  WAL seqs are dense and monotonic: first_seq <= last_seq + 1, and every
 *       seq in [first_seq, last_seq] has a record.
 *   S2  A WAL group (one sa_batch_wal_append call) is all present or all
 *       absent after any crash; its last record carries the group-end flag.
 *   S3  The state CF equals the replay of every WAL group up to meta's
 *       last_seq (truncation removes WAL records, never state).
 *   S4  Under sync/group durability, WAL reads and snapshots never see a
 *       group before it is durable (deferred commits become readable when
 *       synced).  Point reads of state (sa_state_get) may see them earlier.
 *   S5  A cursor's acked and delivered positions and an origin's applied
 *       watermark never decrease; acked <= delivered.
 *
 * Thread-safety: an sa_store may be used from many threads at once.  An
 * sa_batch, iterator or snapshot belongs to one thread at a time.
 */
#ifndef SA_STORE_H
#define SA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"
#include "sa/sa_op.h"

/* --- the store ------------------------------------------------------- */

typedef struct sa_store sa_store;

typedef enum sa_durability {
    SA_DUR_SYNC = 0,        /* each commit is synced before it returns */
    SA_DUR_GROUP = 1,       /* commits arriving together share one synced write */
    SA_DUR_NONE_UNSAFE = 2, /* never synced: tests and benchmarks only */
} sa_durability;

/* "sync", "group", "none-unsafe" */
const char *sa_durability_name(sa_durability d);
/* Accepts the names above ("none" too).  SA_EINVAL naming the input else. */
int sa_durability_parse(const char *s, sa_durability *out /* out */, sa_err *err);

/* Caller-allocated; initialise with sa_store_options_init (the one place
 * defaults are set) and change what you need. */
typedef struct sa_store_options {
    sa_durability durability;    /* default SA_DUR_SYNC */
    uint32_t group_delay_us;     /* group: extra wait for companions; default 0
                                  * (commits arriving during a sync share the next) */
    uint32_t group_max_batches;  /* group: write as soon as this many wait; default 256 */
    int create_if_missing;       /* default 1 */
    uint32_t large_chunk_bytes;  /* large groups are written in chunks of about
                                  * this size; default 4 MiB */
    int read_only;               /* open without the lock, beside a running
                                  * writer; sees the database as of the open;
                                  * every write fails with SA_EINVAL; default 0 */
} sa_store_options;

void sa_store_options_init(sa_store_options *opt /* out */);

/*
 * Open (or create) the data directory `dir`.  A directory holding anything
 * else — files that are not a RocksDB database, a RocksDB database with other
 * column families, or a Softadastra store of another format version — is
 * refused with SA_EFORMAT / SA_EVERSION and a message naming what was found.
 * A directory open in another process gives SA_EBUSY.
 * *out is caller-owned (sa_store_close); untouched on error.
 */
int sa_store_open(const char *dir, const sa_store_options *opt, sa_store **out /* out */,
                  sa_err *err);
/* Waits for in-flight commits, closes the database.  NULL is a no-op. */
void sa_store_close(sa_store *s);

sa_durability sa_store_durability(const sa_store *s);
const char *sa_store_dir(const sa_store *s); /* borrowed, lives as long as s */

/* Make everything committed so far durable (fsync of RocksDB's log) and
 * return the highest durable WAL seq.  Needed only under none-unsafe. */
int sa_store_sync(sa_store *s, uint64_t *durable_seq /* out, may be NULL */, sa_err *err);

/* A consistent copy of the whole database into `dir` (must not exist),
 * usable as a data directory (backup).  RocksDB checkpoint: hard links where
 * possible. */
int sa_store_checkpoint(sa_store *s, const char *dir, sa_err *err);

/* --- batches --------------------------------------------------------- */

typedef struct sa_batch sa_batch;

/* *out caller-owned (sa_batch_free). */
int sa_batch_new(sa_batch **out /* out */, sa_err *err);
void sa_batch_free(sa_batch *b);  /* NULL is a no-op */
void sa_batch_clear(sa_batch *b); /* empty it for reuse */
int sa_batch_empty(const sa_batch *b);
size_t sa_batch_bytes(const sa_batch *b);     /* memory its contents take */
size_t sa_batch_wal_count(const sa_batch *b); /* WAL ops added */
/* A point in a batch's contents, to come back to (caller-allocated). */
typedef struct sa_batch_mark {
    size_t nents, arena, wal_ops, needs_read, last_wal, open_group;
} sa_batch_mark;
void sa_batch_get_mark(const sa_batch *b, sa_batch_mark *m /* out */);
/* Forget everything added after the mark. */
void sa_batch_rollback(sa_batch *b, const sa_batch_mark *m);
/* Call cb with each WAL op added after `from` (NULL = all), in order
 * (decoded; borrowed for the call); a non-zero return stops.  For moving a
 * transaction that outgrew memory out of a batch. */
int sa_batch_wal_foreach(const sa_batch *b, const sa_batch_mark *from,
                         int (*cb)(void *ctx, const sa_op *op, sa_err *err), void *ctx,
                         sa_err *err);

/*
 * Add one WAL group: the ops of one transaction, appended under dense seqs
 * at commit time, with the matching state updates.  The ops are validated
 * and encoded now (they are not borrowed past this call).  An op whose seq
 * is 0 takes its WAL seq as its seq when read back (ops from Postgres); an
 * op from an edge keeps its own (origin, epoch, seq).  n must be >= 1.
 */
int sa_batch_wal_append(sa_batch *b, const sa_op *ops, size_t n, sa_err *err);

/* One op at a time: ops added since the last group end form one group,
 * closed by sa_batch_wal_end_group (a commit with a group still open is
 * refused).  For callers that produce a transaction's ops one by one. */
int sa_batch_wal_add(sa_batch *b, const sa_op *op, sa_err *err);
int sa_batch_wal_end_group(sa_batch *b, sa_err *err);

/* Raise peer's acked position to `seq` (a lower value is ignored: acks are
 * monotonic; delivered is raised with it so acked <= delivered). */
int sa_batch_cursor_ack(sa_batch *b, const char *peer, uint64_t seq, sa_err *err);
/* Raise peer's delivered position (monotonic, lower ignored). */
int sa_batch_cursor_delivered(sa_batch *b, const char *peer, uint64_t seq, sa_err *err);
/* Record a delivery attempt: ok resets attempts and last_error; a failure
 * increments attempts and stores error (may be NULL).  Times in ms since the
 * Unix epoch. */
int sa_batch_cursor_attempt(sa_batch *b, const char *peer, int ok, const char *error,
                            uint64_t attempt_ms, uint64_t next_retry_ms, sa_err *err);
/* Raise origin's applied watermark (monotonic, lower ignored). */
int sa_batch_watermark(sa_batch *b, const char *origin, uint64_t applied, sa_err *err);
/* Queue a received op in origin's inbox under op->seq.  An op already in
 * the inbox is left as it is (duplicates change nothing). */
int sa_batch_inbox_put(sa_batch *b, const char *origin, const sa_op *op, sa_err *err);
/* Remove origin's inbox entries with seq <= upto (once applied). */
int sa_batch_inbox_remove(sa_batch *b, const char *origin, uint64_t upto, sa_err *err);
/* Application metadata ("user" keys in meta; never collides with ours). */
int sa_batch_meta_put(sa_batch *b, const char *key, const void *val, size_t len, sa_err *err);

typedef struct sa_commit_result {
    uint64_t first_seq;   /* first WAL seq assigned by this batch (0 if none) */
    uint64_t last_seq;    /* last WAL seq assigned by this batch (0 if none) */
    uint64_t durable_seq; /* highest WAL seq durable when the call returned */
} sa_commit_result;

/*
 * Commit the batch atomically under the store's durability policy.  On
 * success the batch is emptied.  On error nothing of it was written.
 */
int sa_store_commit(sa_store *s, sa_batch *b, sa_commit_result *res /* out, may be NULL */,
                    sa_err *err);

/*
 * Commit without syncing, whatever the policy: durable_seq does not move,
 * so the batch's WAL records stay unreadable (S4) until the next synced
 * write or sa_store_sync.  For a single writer that receives many small
 * transactions (the ingest): write each, sync once when input pauses.
 */
int sa_store_commit_deferred(sa_store *s, sa_batch *b, sa_commit_result *res /* out, may be NULL */,
                             sa_err *err);

/* Convenience: one WAL group in its own batch. */
int sa_wal_append(sa_store *s, const sa_op *ops, size_t n, sa_commit_result *res /* out */,
                  sa_err *err);

/* A source of ops: *op is the next op (borrowed until the next call) or
 * NULL at the end; a negative return aborts the append with that error. */
typedef int (*sa_op_source)(void *ctx, const sa_op **op /* out */, sa_err *err);

/*
 * Append ONE WAL group of any size in bounded memory (a transaction of
 * millions of rows): records are written in chunks that stay invisible
 * until the group commits in one final synced write, together with
 * `extra` (may be NULL; a batch without WAL ops: cursors, metadata).  The
 * state is then brought up to date in chunks; snapshots wait for that, and
 * a crash in between is finished by the next open.  Other writers wait
 * while it runs.  On error nothing of the group is visible.
 */
int sa_wal_append_source(sa_store *s, sa_op_source src, void *ctx, sa_batch *extra,
                         sa_commit_result *res /* out, may be NULL */, sa_err *err);

/* Application metadata read; SA_ENOTFOUND when absent.  *val sa_free. */
int sa_store_meta_get(sa_store *s, const char *key, void **val /* out */, size_t *len /* out */,
                      sa_err *err);

/* Every application metadata key starting with prefix (and, when after is
 * not NULL, sorting after prefix+after), in key order: cb gets the key (NUL-
 * terminated, prefix included) and the value, borrowed for the call;
 * non-zero from cb stops. */
int sa_store_meta_scan(sa_store *s, const char *prefix, const char *after,
                       int (*cb)(const char *key, const void *val, size_t len, void *ctx), void *ctx,
                       sa_err *err);

/* --- WAL ------------------------------------------------------------- */

typedef struct sa_wal_info {
    uint64_t first_seq;   /* lowest retained seq (last_seq + 1 when empty) */
    uint64_t last_seq;    /* highest appended seq (0 when nothing ever was) */
    uint64_t durable_seq; /* highest seq known durable */
    uint64_t count;       /* records retained */
    uint64_t bytes;       /* bytes of retained records (keys + values) */
} sa_wal_info;

int sa_wal_info_get(sa_store *s, sa_wal_info *out /* out */, sa_err *err);

/* One record as read back. */
typedef struct sa_wal_rec {
    uint64_t seq;      /* WAL seq */
    int group_end;     /* 1 on the last record of its group (transaction) */
    size_t bytes;      /* stored size of the record */
    const sa_op *op;   /* borrowed: valid until the next call on the iterator */
} sa_wal_rec;

typedef struct sa_wal_iter sa_wal_iter;

/* Iterate records with seq >= from_seq in order, bounded memory (one record
 * at a time).  Sees what was committed before the call.  *out: close with
 * sa_wal_iter_close. */
int sa_wal_iter_open(sa_store *s, uint64_t from_seq, sa_wal_iter **out /* out */, sa_err *err);
/* 1 and *rec filled; 0 at the end; < 0 on error (corrupt record, I/O). */
int sa_wal_iter_next(sa_wal_iter *it, sa_wal_rec *rec /* out */, sa_err *err);
void sa_wal_iter_close(sa_wal_iter *it);

typedef int (*sa_wal_cb)(const sa_wal_rec *rec, void *ctx); /* non-zero stops */

/*
 * Read forward from from_seq: at most max_ops records and about max_bytes
 * (0 = no bound), calling cb for each; at least one record is delivered
 * when there is one.  With whole_groups, stop only at a group end: a group
 * once started is delivered whole, one record at a time, so the bounds are
 * soft by at most one group.  *next_seq is the seq to continue from.
 * from_seq below the retained floor (truncated) gives SA_ERANGE.
 */
int sa_wal_read(sa_store *s, uint64_t from_seq, size_t max_ops, size_t max_bytes,
                int whole_groups, sa_wal_cb cb, void *ctx, uint64_t *next_seq /* out */,
                sa_err *err);

/* Remove every record with seq < below (clamped to last_seq + 1), with the
 * meta counters, in one write.  Truncating below first_seq is a no-op. */
int sa_wal_truncate(sa_store *s, uint64_t below, sa_err *err);

/* --- state ----------------------------------------------------------- */

/* A current row.  Every pointer is owned by the row (or, from an iterator,
 * borrowed until the next call). */
typedef struct sa_row {
    const char *table;
    const sa_field *key;
    uint32_t nkey;
    const sa_field *cols;
    uint32_t ncols;
    uint64_t seq;       /* version: WAL seq of the last change */
    uint64_t hlc;       /* row clock of the last change */
    const char *origin; /* origin of the last change */
} sa_row;

/* Current row of (table, key) as of now; SA_ENOTFOUND if absent.
 * *out: sa_row_free. */
int sa_state_get(sa_store *s, const char *table, const sa_field *key, uint32_t nkey,
                 sa_row **out /* out */, sa_err *err);
void sa_row_free(sa_row *r);

typedef struct sa_snapshot sa_snapshot;

/* A RocksDB snapshot: every read through it is consistent at exactly
 * sa_snapshot_seq().  Close with sa_snapshot_close (before the store). */
int sa_snapshot_open(sa_store *s, sa_snapshot **out /* out */, sa_err *err);
uint64_t sa_snapshot_seq(const sa_snapshot *snap);
void sa_snapshot_close(sa_snapshot *snap);

typedef struct sa_state_iter sa_state_iter;

/* Rows of `table` (NULL = every table) in key order, one at a time. */
int sa_state_iter_open(sa_snapshot *snap, const char *table, sa_state_iter **out /* out */,
                       sa_err *err);
/* 1 and *row borrowed until the next call; 0 at the end; < 0 on error. */
int sa_state_iter_next(sa_state_iter *it, const sa_row **row /* out */, sa_err *err);
void sa_state_iter_close(sa_state_iter *it);

/* --- cursors and watermarks ----------------------------------------- */

#define SA_CURSOR_ERR_MAX 256

typedef struct sa_cursor {
    uint64_t acked;
    uint64_t delivered;
    uint32_t attempts;
    uint64_t last_attempt_ms;
    uint64_t next_retry_ms;
    char last_error[SA_CURSOR_ERR_MAX];
} sa_cursor;

/* SA_ENOTFOUND (and *out zeroed) for a peer never recorded. */
int sa_cursor_get(sa_store *s, const char *peer, sa_cursor *out /* out */, sa_err *err);
/* Calls cb for every recorded peer in name order; non-zero from cb stops. */
int sa_cursor_foreach(sa_store *s, int (*cb)(const char *peer, const sa_cursor *c, void *ctx),
                      void *ctx, sa_err *err);
/* Applied watermark of origin; 0 when never recorded. */
int sa_watermark_get(sa_store *s, const char *origin, uint64_t *out /* out */, sa_err *err);

/* --- inbox ------------------------------------------------------------ */

typedef struct sa_inbox_iter sa_inbox_iter;

/* origin's queued ops with seq >= from_seq, in seq order. */
int sa_inbox_iter_open(sa_store *s, const char *origin, uint64_t from_seq,
                       sa_inbox_iter **out /* out */, sa_err *err);
/* 1 and *op borrowed until the next call; 0 at the end; < 0 on error. */
int sa_inbox_iter_next(sa_inbox_iter *it, const sa_op **op /* out */, sa_err *err);
void sa_inbox_iter_close(sa_inbox_iter *it);
/* Every origin with queued ops, in name order; non-zero from cb stops. */
int sa_inbox_origins(sa_store *s, int (*cb)(const char *origin, void *ctx), void *ctx, sa_err *err);
/* Ops and bytes queued in every inbox. */
int sa_inbox_stats(sa_store *s, uint64_t *count /* out */, uint64_t *bytes /* out */,
                   sa_err *err);

#endif /* SA_STORE_H */
