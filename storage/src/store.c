/*
 * store.c — opening a data directory, batches, and the commit path that
 * turns a batch into one RocksDB write (with group commit).
 *
 * ON-DISK FORMAT (format version 1).  Integers are big-endian unless called
 * varint (LEB128, at most 10 bytes).  "bytes" = varint length + bytes.
 *
 *   meta CF
 *     0x00 "format"  -> "SADASTRA" (8 bytes) + u32 format version.  Written
 *                       once, synced, when the directory is created.  A
 *                       database without it, or with another magic or
 *                       version, is refused.
 *     0x00 "wal"     -> u64 first_seq, u64 last_seq, u64 count, u64 bytes,
 *                       u64 state_seq.  Rewritten in the same write as
 *                       every WAL change, so it is the truth about which
 *                       records exist; records above last_seq are the
 *                       unfinished writes of a large group and are deleted
 *                       at open.  state_seq < last_seq only while a large
 *                       group's state is being applied: open finishes it.
 *     'u' key        -> application metadata (sa_batch_meta_put).
 *   wal CF
 *     u64 seq        -> u8 record version (1), u8 flags (bit 0: last record
 *                       of its group; other bits reserved, must be 0), then
 *                       the op's binary encoding (sa_op_encode).  An op
 *                       stored with seq 0 reads back with seq = WAL seq.
 *   state CF
 *     table 0x00 K   -> u8 row version (1), u64 seq, u64 hlc, bytes origin,
 *                       key fields, column fields (sa_fields_encode).
 *                       K = per key value: u8 kind, and for TEXT bytes.
 *   cursors CF
 *     'c' peer       -> u8 version (1), varint acked, varint delivered,
 *                       varint attempts, varint last_attempt_ms, varint
 *                       next_retry_ms, bytes last_error.
 *     'w' origin     -> u8 version (1), u64 applied watermark.
 *   inbox CF
 *     origin 0x00 u64 seq -> the op's binary encoding.
 *
 * Valid after a crash: RocksDB applies a write batch entirely or not at all
 * (point-in-time recovery of its log), and each commit is one batch, so the
 * WAL records, the state rows, the counters in meta and the cursors change
 * together (invariants S1–S3 in sa_store.h).
 *
 * Group commit (durability "group"):
 *
 *     commit() --enqueue--> [queue] --leader takes all--> one synced write
 *        |                                                   |
 *        +-- follower waits on qcond <---- done + broadcast --+
 *
 * The first committer that finds no active leader becomes it, waits up to
 * group_delay_us for companions (default 0: commits that arrive while the
 * previous group is being synced form the next one, as in RocksDB's own
 * write groups; a timer would add its delay to every lone commit), takes
 * the whole queue and writes it as one batch.  Each batch keeps its own
 * result: one batch that fails validation is rolled back alone (RocksDB
 * save points + the overlay's undo) and the others still commit.
 */
#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "sa/sa_alloc.h"
#include "codec_int.h"
#include "store_int.h"

/* ---------------------------------------------------------------------
 * Batches: what callers add, encoded at once so nothing is borrowed.
 * ------------------------------------------------------------------- */

enum entry_type {
    E_WAL_OP = 1,
    E_STATE_OP, /* the state update of a WAL record already written (seq in a) */
    E_CUR_ACK,
    E_CUR_DELIV,
    E_CUR_ATTEMPT,
    E_WATERMARK,
    E_INBOX_PUT,
    E_INBOX_REMOVE,
    E_META,
};

/* Offsets into the batch arena (not pointers: the arena moves). */
typedef struct span {
    size_t off, len;
} span;

typedef struct entry {
    uint8_t type;
    uint8_t kind;      /* E_WAL_OP: sa_op_kind */
    uint8_t group_end; /* E_WAL_OP: last op of its group */
    uint8_t merge;     /* E_WAL_OP: state row needs the old row */
    uint8_t full_row;  /* the op carries every column (from PostgreSQL) */
    uint64_t a, b;     /* seqs, times, ok flag ... per type */
    uint64_t hlc;
    span name;   /* peer / origin / meta key / table */
    span enc;    /* WAL: op encoding; inbox: op encoding; meta: value; attempt: error */
    span skey;   /* WAL: state key (old key for update) */
    span skey2;  /* WAL update: state key after the update */
    span sval;   /* WAL insert: state value with seq placeholder; update: cols */
    span keyf;   /* WAL: key fields encoding (new key for update) */
    span origin; /* WAL: origin */
} entry;

struct sa_batch {
    sa_buf arena;
    entry *ents;
    size_t nents, cap;
    size_t wal_ops;
    size_t needs_read; /* entries whose commit reads current values */
    size_t open_group; /* ops added by sa_batch_wal_add since the last group end */
    size_t last_wal;   /* index + 1 of the last E_WAL_OP entry */
};

int sa_batch_new(sa_batch **out, sa_err *err)
{
    sa_batch *b = sa_calloc(1, sizeof *b);
    if (b == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory allocating a batch");
    *out = b;
    return 0;
}

void sa_batch_free(sa_batch *b)
{
    if (b == NULL)
        return;
    sa_buf_free(&b->arena);
    sa_free(b->ents);
    sa_free(b);
}

void sa_batch_clear(sa_batch *b)
{
    sa_buf_reset(&b->arena);
    b->nents = 0;
    b->wal_ops = 0;
    b->needs_read = 0;
    b->open_group = 0;
    b->last_wal = 0;
}

int sa_batch_empty(const sa_batch *b) { return b->nents == 0; }
size_t sa_batch_bytes(const sa_batch *b) { return b->arena.len; }
size_t sa_batch_wal_count(const sa_batch *b) { return b->wal_ops; }

void sa_batch_get_mark(const sa_batch *b, sa_batch_mark *m)
{
    m->nents = b->nents;
    m->arena = b->arena.len;
    m->wal_ops = b->wal_ops;
    m->needs_read = b->needs_read;
    m->last_wal = b->last_wal;
    m->open_group = b->open_group;
}

void sa_batch_rollback(sa_batch *b, const sa_batch_mark *m)
{
    b->nents = m->nents;
    b->arena.len = m->arena;
    b->wal_ops = m->wal_ops;
    b->needs_read = m->needs_read;
    b->last_wal = m->last_wal;
    b->open_group = m->open_group;
}

int sa_batch_wal_foreach(const sa_batch *b, const sa_batch_mark *from,
                         int (*cb)(void *ctx, const sa_op *op, sa_err *err), void *ctx, sa_err *err)
{
    int rc = 0;
    for (size_t k = from != NULL ? from->nents : 0; rc == 0 && k < b->nents; k++) {
        const entry *e = &b->ents[k];
        sa_op *op = NULL;
        if (e->type != E_WAL_OP)
            continue;
        if ((rc = sa_op_decode(b->arena.data + e->enc.off + 2, e->enc.len - 2, &op, err)) == 0)
            rc = cb(ctx, op, err);
        sa_op_free(op);
    }
    return rc;
}

static entry *batch_add(sa_batch *b, uint8_t type)
{
    if (b->nents == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        entry *e = sa_realloc(b->ents, cap * sizeof *e);
        if (e == NULL)
            return NULL;
        b->ents = e;
        b->cap = cap;
    }
    entry *e = &b->ents[b->nents++];
    memset(e, 0, sizeof *e);
    e->type = type;
    return e;
}

static int arena_put(sa_batch *b, span *sp, const void *p, size_t n)
{
    sp->off = b->arena.len;
    sp->len = n;
    return sa_buf_put(&b->arena, p, n);
}

static int arena_str(sa_batch *b, span *sp, const char *s)
{
    return arena_put(b, sp, s, strlen(s));
}

static const uint8_t *at(const sa_buf *arena, span sp) { return arena->data + sp.off; }

int sa__state_key(sa_buf *out, const char *table, const sa_field *key, uint32_t nkey)
{
    int rc = sa_buf_put(out, table, strlen(table) + 1); /* with its NUL */
    for (uint32_t i = 0; rc == 0 && i < nkey; i++) {
        rc = sa_buf_put_u8(out, (uint8_t)key[i].val.kind);
        if (rc == 0 && key[i].val.kind == SA_VAL_TEXT)
            rc = sa_buf_put_bytes(out, key[i].val.data, key[i].val.len);
    }
    return rc;
}

static const sa_field *find_field(const sa_field *f, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

static int has_unchanged(const sa_op *op)
{
    for (uint32_t i = 0; i < op->ncols; i++)
        if (op->cols[i].val.kind == SA_VAL_UNCHANGED)
            return 1;
    return 0;
}

/*
 * Encode one op into the batch: for E_WAL_OP its WAL record (header and op
 * encoding, ready to write as is), and for both E_WAL_OP and E_STATE_OP
 * what its state update needs, so commit does as little as possible under
 * the write lock.  The op was validated by the caller.
 */
static int batch_op(sa_batch *b, uint8_t type, const sa_op *op, int group_end, uint64_t seq,
                    sa_err *err)
{
    entry *e = batch_add(b, type);
    int rc = 0;
    if (e == NULL)
        goto nomem;
    e->kind = (uint8_t)op->kind;
    e->group_end = (uint8_t)group_end;
    e->hlc = op->hlc;
    e->a = seq;
    if (type == E_WAL_OP) {
        uint8_t hdr[2] = {SA_WALREC_VERSION, group_end ? SA_WALREC_GROUP_END : 0};
        e->enc.off = b->arena.len;
        if ((rc = sa_buf_put(&b->arena, hdr, 2)) != 0 ||
            (rc = sa__op_encode_trusted(op, &b->arena, err)) != 0)
            goto nomem;
        e->enc.len = b->arena.len - e->enc.off;
    }
    if (op->kind == SA_OP_TRUNCATE)
        return arena_str(b, &e->name, op->table) ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;

    /* state key (old key for an update) */
    e->skey.off = b->arena.len;
    if ((rc = sa__state_key(&b->arena, op->table, op->key, op->nkey)) != 0)
        goto nomem;
    e->skey.len = b->arena.len - e->skey.off;
    if (op->kind == SA_OP_DELETE)
        return 0;

    /* the key after the change: a key column present in cols moves it */
    sa_field stack_nk[8];
    sa_field *nk = op->nkey <= 8 ? stack_nk : sa_malloc(op->nkey * sizeof *nk);
    if (nk == NULL)
        goto nomem;
    int moved = 0;
    for (uint32_t i = 0; i < op->nkey; i++) {
        const sa_field *c = find_field(op->cols, op->ncols, op->key[i].name);
        nk[i] = (c != NULL && c->val.kind != SA_VAL_UNCHANGED) ? *c : op->key[i];
        moved |= nk[i].val.kind != op->key[i].val.kind || nk[i].val.len != op->key[i].val.len ||
                 (nk[i].val.len && memcmp(nk[i].val.data, op->key[i].val.data, nk[i].val.len));
    }
    e->skey2 = e->skey;
    if (moved) {
        e->skey2.off = b->arena.len;
        rc = sa__state_key(&b->arena, op->table, nk, op->nkey);
        e->skey2.len = b->arena.len - e->skey2.off;
    }
    e->merge = op->kind == SA_OP_UPDATE || has_unchanged(op);
    /* pgoutput sends every column of the new row (unchanged TOASTed ones
     * marked): such a row replaces the old one's column set, so a dropped
     * column disappears; an edge's update names only what it changed.  A
     * change decoded from PostgreSQL is a full row whatever its origin (an
     * edge's op applied there comes back with the edge as origin). */
    e->full_row = (op->flags & SA_OP_HAS_PG) != 0 || strcmp(op->origin, "pg") == 0;
    if (rc == 0 && e->merge) {
        /* key fields and new columns apart: merged with the old row at commit */
        b->needs_read++;
        e->keyf.off = b->arena.len;
        rc = sa__fields_encode_trusted(nk, op->nkey, &b->arena);
        e->keyf.len = b->arena.len - e->keyf.off;
        if (rc == 0) {
            e->sval.off = b->arena.len;
            rc = sa__fields_encode_trusted(op->cols, op->ncols, &b->arena);
            e->sval.len = b->arena.len - e->sval.off;
        }
        if (rc == 0)
            rc = arena_str(b, &e->origin, op->origin);
    } else if (rc == 0) {
        /* the whole row value now; its seq (bytes 1..8) is patched at commit */
        e->sval.off = b->arena.len;
        if ((rc = sa_buf_put_u8(&b->arena, SA_ROW_VERSION)) == 0 &&
            (rc = sa_buf_put_u64be(&b->arena, 0)) == 0 &&
            (rc = sa_buf_put_u64be(&b->arena, op->hlc)) == 0 &&
            (rc = sa_buf_put_str(&b->arena, op->origin)) == 0) {
            if (type == E_WAL_OP && !moved) {
                /* the key and column lists are already encoded, back to back,
                 * in the op's record: copy those bytes (room first, as the
                 * arena may move) */
                size_t from = e->enc.off + 2 + sa__op_fields_offset(op);
                size_t len = sa__fields_size(op->key, op->nkey) +
                             sa__fields_size(op->cols, op->ncols);
                if ((rc = sa_buf_reserve(&b->arena, len)) == 0) {
                    memcpy(b->arena.data + b->arena.len, b->arena.data + from, len);
                    b->arena.len += len;
                }
            } else if ((rc = sa__fields_encode_trusted(nk, op->nkey, &b->arena)) == 0) {
                rc = sa__fields_encode_trusted(op->cols, op->ncols, &b->arena);
            }
        }
        e->sval.len = b->arena.len - e->sval.off;
    }
    if (nk != stack_nk)
        sa_free(nk);
    if (rc != 0)
        goto nomem;
    return 0;
nomem:
    return rc != 0 && rc != SA_ENOMEM ? rc : sa_err_set(err, SA_ENOMEM, "out of memory encoding an op");
}

int sa_batch_wal_add(sa_batch *b, const sa_op *op, sa_err *err)
{
    int rc = sa_op_validate(op, err);
    if (rc != 0)
        return rc;
    size_t save_len = b->arena.len, save_n = b->nents, save_reads = b->needs_read;
    if ((rc = batch_op(b, E_WAL_OP, op, 0, 0, err)) != 0) {
        b->arena.len = save_len;
        b->nents = save_n;
        b->needs_read = save_reads;
        return rc;
    }
    b->wal_ops++;
    b->open_group++;
    b->last_wal = b->nents;
    return 0;
}

int sa_batch_wal_end_group(sa_batch *b, sa_err *err)
{
    if (b->open_group == 0)
        return sa_err_set(err, SA_EINVAL, "no open WAL group to end");
    entry *e = &b->ents[b->last_wal - 1];
    e->group_end = 1;
    b->arena.data[e->enc.off + 1] |= SA_WALREC_GROUP_END; /* the record's flags byte */
    b->open_group = 0;
    return 0;
}

int sa_batch_wal_append(sa_batch *b, const sa_op *ops, size_t n, sa_err *err)
{
    if (n == 0)
        return sa_err_set(err, SA_EINVAL, "a WAL group needs at least one op");
    if (b->open_group != 0)
        return sa_err_set(err, SA_EINVAL, "a WAL group is still open in this batch");
    size_t save_len = b->arena.len, save_n = b->nents, save_reads = b->needs_read;
    size_t save_ops = b->wal_ops, save_last = b->last_wal;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((rc = sa_batch_wal_add(b, &ops[i], err)) != 0)
            sa_err_wrap(err, "op %zu of the group", i);
    }
    if (rc != 0) { /* all or nothing */
        b->arena.len = save_len;
        b->nents = save_n;
        b->needs_read = save_reads;
        b->wal_ops = save_ops;
        b->last_wal = save_last;
        b->open_group = 0;
        return rc;
    }
    return sa_batch_wal_end_group(b, err);
}

static int check_name(const char *what, const char *s, sa_err *err)
{
    if (s == NULL || s[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "%s must not be empty", what);
    if (strlen(s) > SA_OP_MAX_NAME)
        return sa_err_set(err, SA_ETOOBIG, "%s is longer than %u bytes", what, SA_OP_MAX_NAME);
    return 0;
}

static int batch_named(sa_batch *b, uint8_t type, const char *what, const char *name, uint64_t a,
                       uint64_t bv, entry **out, sa_err *err)
{
    int rc = check_name(what, name, err);
    if (rc != 0)
        return rc;
    size_t save_len = b->arena.len;
    entry *e = batch_add(b, type);
    if (e == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    if (arena_str(b, &e->name, name) != 0) {
        b->nents--;
        b->arena.len = save_len;
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    e->a = a;
    e->b = bv;
    if (type != E_META)
        b->needs_read++; /* cursors, watermarks and the inbox read before writing */
    if (out != NULL)
        *out = e;
    return 0;
}

int sa_batch_cursor_ack(sa_batch *b, const char *peer, uint64_t seq, sa_err *err)
{
    return batch_named(b, E_CUR_ACK, "peer name", peer, seq, 0, NULL, err);
}

int sa_batch_cursor_delivered(sa_batch *b, const char *peer, uint64_t seq, sa_err *err)
{
    return batch_named(b, E_CUR_DELIV, "peer name", peer, seq, 0, NULL, err);
}

int sa_batch_cursor_attempt(sa_batch *b, const char *peer, int ok, const char *error,
                            uint64_t attempt_ms, uint64_t next_retry_ms, sa_err *err)
{
    entry *e;
    int rc = batch_named(b, E_CUR_ATTEMPT, "peer name", peer, attempt_ms, next_retry_ms, &e, err);
    if (rc != 0)
        return rc;
    e->merge = ok ? 1 : 0;
    const char *msg = ok || error == NULL ? "" : error;
    size_t n = strlen(msg);
    if (n >= SA_CURSOR_ERR_MAX)
        n = SA_CURSOR_ERR_MAX - 1;
    if (arena_put(b, &e->enc, msg, n) != 0) {
        b->nents--;
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    return 0;
}

int sa_batch_watermark(sa_batch *b, const char *origin, uint64_t applied, sa_err *err)
{
    return batch_named(b, E_WATERMARK, "origin name", origin, applied, 0, NULL, err);
}

int sa_batch_inbox_put(sa_batch *b, const char *origin, const sa_op *op, sa_err *err)
{
    entry *e;
    int rc = sa_op_validate(op, err);
    if (rc != 0)
        return rc;
    size_t save_len = b->arena.len;
    if ((rc = batch_named(b, E_INBOX_PUT, "origin name", origin, op->seq, 0, &e, err)) != 0)
        return rc;
    e->enc.off = b->arena.len;
    rc = sa_op_encode(op, &b->arena, err);
    e->enc.len = b->arena.len - e->enc.off;
    if (rc != 0) {
        b->nents--;
        b->arena.len = save_len;
    }
    return rc;
}

int sa_batch_inbox_remove(sa_batch *b, const char *origin, uint64_t upto, sa_err *err)
{
    return batch_named(b, E_INBOX_REMOVE, "origin name", origin, upto, 0, NULL, err);
}

int sa_batch_meta_put(sa_batch *b, const char *key, const void *val, size_t len, sa_err *err)
{
    entry *e;
    int rc = batch_named(b, E_META, "meta key", key, 0, 0, &e, err);
    if (rc != 0)
        return rc;
    if (arena_put(b, &e->enc, val, len) != 0) {
        b->nents--;
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * The overlay: what the write group being built has written so far, so a
 * later batch in the same group reads its predecessors' effects.  An
 * append-only log of (cf, key, value|deleted) with a hash of the latest
 * entry per key; rollback truncates the log and rebuilds the hash.
 * ------------------------------------------------------------------- */

typedef struct ov_ent {
    uint8_t cf;
    uint8_t del;
    size_t koff, klen, voff, vlen;
} ov_ent;

typedef struct ov_trunc {
    size_t toff, tlen; /* table name with its NUL: the state key prefix */
    size_t pos;        /* log length when the truncate happened */
} ov_trunc;

typedef struct overlay {
    sa_buf arena;
    ov_ent *ents;
    size_t n, cap;
    uint32_t *slots; /* index + 1 of the latest entry for a key, 0 = empty */
    size_t nslots;
    ov_trunc *truncs;
    size_t ntr, trcap;
} overlay;

static uint64_t ov_hash(uint8_t cf, const uint8_t *k, size_t kl)
{
    uint64_t h = 1469598103934665603ull ^ cf;
    for (size_t i = 0; i < kl; i++) {
        h ^= k[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int ov_same(const overlay *ov, const ov_ent *e, uint8_t cf, const uint8_t *k, size_t kl)
{
    return e->cf == cf && e->klen == kl && memcmp(ov->arena.data + e->koff, k, kl) == 0;
}

/* Slot holding the key, or the empty slot where it would go. */
static size_t ov_slot(const overlay *ov, uint8_t cf, const uint8_t *k, size_t kl)
{
    size_t mask = ov->nslots - 1;
    size_t i = (size_t)ov_hash(cf, k, kl) & mask;
    while (ov->slots[i] != 0 && !ov_same(ov, &ov->ents[ov->slots[i] - 1], cf, k, kl))
        i = (i + 1) & mask;
    return i;
}

static int ov_rehash(overlay *ov, size_t nslots)
{
    uint32_t *s = sa_calloc(nslots, sizeof *s);
    if (s == NULL)
        return SA_ENOMEM;
    sa_free(ov->slots);
    ov->slots = s;
    ov->nslots = nslots;
    for (size_t i = 0; i < ov->n; i++) {
        const ov_ent *e = &ov->ents[i];
        size_t j = ov_slot(ov, e->cf, ov->arena.data + e->koff, e->klen);
        ov->slots[j] = (uint32_t)(i + 1);
    }
    return 0;
}

static void ov_free(overlay *ov)
{
    sa_buf_free(&ov->arena);
    sa_free(ov->ents);
    sa_free(ov->slots);
    sa_free(ov->truncs);
    memset(ov, 0, sizeof *ov);
}

static int ov_set(overlay *ov, uint8_t cf, const void *k, size_t kl, const void *v, size_t vl,
                  int del)
{
    if (ov->n == ov->cap) {
        size_t cap = ov->cap ? ov->cap * 2 : 64;
        ov_ent *e = sa_realloc(ov->ents, cap * sizeof *e);
        if (e == NULL)
            return SA_ENOMEM;
        ov->ents = e;
        ov->cap = cap;
    }
    if ((ov->n + 1) * 2 > ov->nslots && ov_rehash(ov, ov->nslots ? ov->nslots * 2 : 128) != 0)
        return SA_ENOMEM;
    ov_ent *e = &ov->ents[ov->n];
    e->cf = cf;
    e->del = (uint8_t)del;
    e->koff = ov->arena.len;
    e->klen = kl;
    if (sa_buf_put(&ov->arena, k, kl) != 0)
        return SA_ENOMEM;
    e->voff = ov->arena.len;
    e->vlen = vl;
    if (!del && sa_buf_put(&ov->arena, v, vl) != 0)
        return SA_ENOMEM;
    size_t j = ov_slot(ov, cf, k, kl);
    ov->slots[j] = (uint32_t)(ov->n + 1);
    ov->n++;
    return 0;
}

static int ov_truncate_table(overlay *ov, const char *table)
{
    if (ov->ntr == ov->trcap) {
        size_t cap = ov->trcap ? ov->trcap * 2 : 8;
        ov_trunc *t = sa_realloc(ov->truncs, cap * sizeof *t);
        if (t == NULL)
            return SA_ENOMEM;
        ov->truncs = t;
        ov->trcap = cap;
    }
    ov_trunc *t = &ov->truncs[ov->ntr];
    t->toff = ov->arena.len;
    t->tlen = strlen(table) + 1;
    t->pos = ov->n;
    if (sa_buf_put(&ov->arena, table, t->tlen) != 0)
        return SA_ENOMEM;
    ov->ntr++;
    return 0;
}

/* Undo everything logged since (n, ntr). */
static int ov_rollback(overlay *ov, size_t n, size_t ntr)
{
    if (n == ov->n && ntr == ov->ntr)
        return 0;
    ov->n = n;
    ov->ntr = ntr;
    return ov->nslots ? ov_rehash(ov, ov->nslots) : 0;
}

enum { OV_MISS = 0, OV_PUT, OV_DEL };

/* Latest state of a key in the overlay.  A state key whose table was
 * truncated after its latest entry (or with no entry) reads as deleted. */
static int ov_get(const overlay *ov, uint8_t cf, const uint8_t *k, size_t kl, const uint8_t **v,
                  size_t *vl)
{
    size_t pos = 0;
    int res = OV_MISS;
    if (ov->nslots != 0) {
        size_t j = ov_slot(ov, cf, k, kl);
        if (ov->slots[j] != 0) {
            const ov_ent *e = &ov->ents[ov->slots[j] - 1];
            pos = ov->slots[j];
            res = e->del ? OV_DEL : OV_PUT;
            *v = ov->arena.data + e->voff;
            *vl = e->vlen;
        }
    }
    if (cf == SA_CF_STATE) {
        for (size_t i = 0; i < ov->ntr; i++) {
            const ov_trunc *t = &ov->truncs[i];
            if (t->pos >= pos && kl >= t->tlen && memcmp(k, ov->arena.data + t->toff, t->tlen) == 0)
                return OV_DEL;
        }
    }
    return res;
}

/* ---------------------------------------------------------------------
 * Building one write group.
 * ------------------------------------------------------------------- */

typedef struct wgroup {
    sa_store *s;
    sa__kv_batch *kb;
    overlay ov;
    sa_buf val, tmp, key; /* scratch */
    /* counters as they will be after this group */
    uint64_t first_seq, last_seq, wal_count, wal_bytes, inbox_count, inbox_bytes;
    int wal_touched;
    int use_overlay; /* 0 when no batch of the group reads: inserts only */
} wgroup;

/* Current value of a key as this group sees it: overlay, else RocksDB. */
static int wg_read(wgroup *w, uint8_t cf, const uint8_t *k, size_t kl, sa_buf *out, int *found,
                   sa_err *err)
{
    const uint8_t *v;
    size_t vl;
    switch (ov_get(&w->ov, cf, k, kl, &v, &vl)) {
    case OV_PUT:
        *found = 1;
        sa_buf_reset(out);
        return sa_buf_put(out, v, vl) ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
    case OV_DEL:
        *found = 0;
        return 0;
    default:
        return sa__kv_get(w->s->kv, NULL, cf, k, kl, out, found, err);
    }
}

static int wg_put(wgroup *w, uint8_t cf, const void *k, size_t kl, const void *v, size_t vl,
                  sa_err *err)
{
    if (w->use_overlay && ov_set(&w->ov, cf, k, kl, v, vl, 0) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    sa__kv_batch_put(w->kb, cf, k, kl, v, vl);
    return 0;
}

static int wg_del(wgroup *w, uint8_t cf, const void *k, size_t kl, sa_err *err)
{
    if (w->use_overlay && ov_set(&w->ov, cf, k, kl, NULL, 0, 1) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    sa__kv_batch_del(w->kb, cf, k, kl);
    return 0;
}

/* Merge an update into the row it changes (or into nothing: the row is then
 * made from the key and the known columns). */
static int wg_merge_row(wgroup *w, const sa_batch *b, const entry *e, uint64_t seq, sa_err *err)
{
    int found = 0, rc;
    sa_field *oldc = NULL, *newc = NULL, *merged = NULL;
    uint32_t nold = 0, nnew = 0, nm = 0;
    sa_row *old = NULL;
    rc = wg_read(w, SA_CF_STATE, at(&b->arena, e->skey), e->skey.len, &w->val, &found, err);
    if (rc != 0)
        goto done;
    if (found) {
        rc = sa__row_decode(at(&b->arena, e->skey), e->skey.len, w->val.data, w->val.len, &old, err);
        if (rc != 0)
            goto done;
        oldc = (sa_field *)old->cols;
        nold = old->ncols;
    }
    sa_rd rd;
    sa_rd_init(&rd, at(&b->arena, e->sval), e->sval.len);
    if ((rc = sa_fields_decode(&rd, &newc, &nnew, err)) != 0)
        goto done;
    merged = sa_malloc((size_t)(nold + nnew + 1) * sizeof *merged);
    if (merged == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory merging a row");
        goto done;
    }
    if (e->full_row) {
        /* the new row's columns; unchanged ones keep the old value */
        for (uint32_t i = 0; i < nnew; i++) {
            const sa_field *o = find_field(oldc, nold, newc[i].name);
            if (newc[i].val.kind != SA_VAL_UNCHANGED)
                merged[nm++] = newc[i];
            else if (o != NULL)
                merged[nm++] = *o;
        }
    } else {
        for (uint32_t i = 0; i < nold; i++) {
            const sa_field *n = find_field(newc, nnew, oldc[i].name);
            merged[nm++] = (n != NULL && n->val.kind != SA_VAL_UNCHANGED) ? *n : oldc[i];
        }
        for (uint32_t i = 0; i < nnew; i++) /* columns the old row did not have */
            if (newc[i].val.kind != SA_VAL_UNCHANGED && find_field(oldc, nold, newc[i].name) == NULL)
                merged[nm++] = newc[i];
    }

    sa_buf_reset(&w->tmp);
    rc = sa_buf_put_u8(&w->tmp, SA_ROW_VERSION);
    if (rc == 0)
        rc = sa_buf_put_u64be(&w->tmp, seq);
    if (rc == 0)
        rc = sa_buf_put_u64be(&w->tmp, e->hlc);
    if (rc == 0)
        rc = sa_buf_put_bytes(&w->tmp, at(&b->arena, e->origin), e->origin.len);
    if (rc == 0)
        rc = sa_buf_put(&w->tmp, at(&b->arena, e->keyf), e->keyf.len);
    if (rc == 0)
        rc = sa_fields_encode(merged, nm, &w->tmp, err);
    if (rc != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory merging a row");
        goto done;
    }
    if (e->skey.off != e->skey2.off) { /* the key moved */
        if ((rc = wg_del(w, SA_CF_STATE, at(&b->arena, e->skey), e->skey.len, err)) != 0)
            goto done;
    }
    rc = wg_put(w, SA_CF_STATE, at(&b->arena, e->skey2), e->skey2.len, w->tmp.data, w->tmp.len, err);
done:
    sa_row_free(old);
    sa_free(newc);
    sa_free(merged);
    return rc;
}

static int wg_wal_op(wgroup *w, sa_batch *b, const entry *e, sa_err *err)
{
    uint64_t seq = e->a; /* E_STATE_OP: the record's seq */
    if (e->type == E_WAL_OP) {
        /* the record was encoded whole into the arena by batch_op */
        seq = w->last_seq + 1;
        uint8_t key[8];
        sa_put_u64be(key, seq);
        sa__kv_batch_put(w->kb, SA_CF_WAL, key, 8, at(&b->arena, e->enc), e->enc.len);
        w->last_seq = seq;
        w->wal_count++;
        w->wal_bytes += 8 + e->enc.len;
        w->wal_touched = 1;
    }
    int rc = 0;
    switch (e->kind) {
    case SA_OP_TRUNCATE: {
        /* every row of the table: [table NUL, table 0x01) */
        sa_buf_reset(&w->key);
        if (sa_buf_put(&w->key, at(&b->arena, e->name), e->name.len) != 0 ||
            sa_buf_put_u8(&w->key, 0) != 0 || sa_buf_put(&w->key, at(&b->arena, e->name), e->name.len) != 0 ||
            sa_buf_put_u8(&w->key, 1) != 0)
            return sa_err_set(err, SA_ENOMEM, "out of memory");
        size_t half = e->name.len + 1;
        sa__kv_batch_del_range(w->kb, SA_CF_STATE, w->key.data, half, w->key.data + half, half);
        if (w->use_overlay) {
            char *t = sa_strndup((const char *)at(&b->arena, e->name), e->name.len);
            if (t == NULL || ov_truncate_table(&w->ov, t) != 0)
                rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            sa_free(t);
        }
        break;
    }
    case SA_OP_DELETE:
        rc = wg_del(w, SA_CF_STATE, at(&b->arena, e->skey), e->skey.len, err);
        break;
    default:
        if (e->merge) {
            rc = wg_merge_row(w, b, e, seq, err);
        } else {
            /* the precomputed row: patch its version in place */
            uint8_t *row = b->arena.data + e->sval.off;
            sa_put_u64be(row + 1, seq);
            if (e->skey.off != e->skey2.off)
                rc = wg_del(w, SA_CF_STATE, at(&b->arena, e->skey), e->skey.len, err);
            if (rc == 0)
                rc = wg_put(w, SA_CF_STATE, at(&b->arena, e->skey2), e->skey2.len, row,
                            e->sval.len, err);
        }
    }
    return rc;
}

static int cursor_encode(sa_buf *out, const sa_cursor *c)
{
    int rc = sa_buf_put_u8(out, SA_CURSOR_VERSION);
    if (rc == 0)
        rc = sa_buf_put_varint(out, c->acked);
    if (rc == 0)
        rc = sa_buf_put_varint(out, c->delivered);
    if (rc == 0)
        rc = sa_buf_put_varint(out, c->attempts);
    if (rc == 0)
        rc = sa_buf_put_varint(out, c->last_attempt_ms);
    if (rc == 0)
        rc = sa_buf_put_varint(out, c->next_retry_ms);
    if (rc == 0)
        rc = sa_buf_put_str(out, c->last_error);
    return rc;
}

static int wg_cursor(wgroup *w, const sa_batch *b, const entry *e, sa_err *err)
{
    sa_buf_reset(&w->key);
    if (sa_buf_put_u8(&w->key, 'c') != 0 || sa_buf_put(&w->key, at(&b->arena, e->name), e->name.len) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    int found = 0;
    int rc = wg_read(w, SA_CF_CURSORS, w->key.data, w->key.len, &w->val, &found, err);
    if (rc != 0)
        return rc;
    sa_cursor c;
    memset(&c, 0, sizeof c);
    if (found && (rc = sa__cursor_decode(w->val.data, w->val.len, &c, err)) != 0)
        return rc;
    sa_cursor before = c;
    switch (e->type) {
    case E_CUR_ACK:
        if (e->a > c.acked)
            c.acked = e->a;
        if (c.acked > c.delivered)
            c.delivered = c.acked;
        break;
    case E_CUR_DELIV:
        if (e->a > c.delivered)
            c.delivered = e->a;
        break;
    default: /* E_CUR_ATTEMPT */
        c.attempts = e->merge ? 0 : c.attempts + 1;
        c.last_attempt_ms = e->a;
        c.next_retry_ms = e->b;
        memcpy(c.last_error, at(&b->arena, e->enc), e->enc.len);
        c.last_error[e->enc.len] = '\0';
    }
    assert(c.acked >= before.acked && c.delivered >= before.delivered); /* S5 */
    assert(c.acked <= c.delivered);
    if (found && memcmp(&c, &before, sizeof c) == 0)
        return 0; /* a replayed or lower ack changes nothing */
    sa_buf_reset(&w->tmp);
    if (cursor_encode(&w->tmp, &c) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    return wg_put(w, SA_CF_CURSORS, w->key.data, w->key.len, w->tmp.data, w->tmp.len, err);
}

static int wg_watermark(wgroup *w, const sa_batch *b, const entry *e, sa_err *err)
{
    sa_buf_reset(&w->key);
    if (sa_buf_put_u8(&w->key, 'w') != 0 || sa_buf_put(&w->key, at(&b->arena, e->name), e->name.len) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    int found = 0;
    int rc = wg_read(w, SA_CF_CURSORS, w->key.data, w->key.len, &w->val, &found, err);
    if (rc != 0)
        return rc;
    uint64_t cur = 0;
    if (found) {
        if (w->val.len != 9 || w->val.data[0] != SA_CURSOR_VERSION)
            return sa_err_set(err, SA_ECORRUPT, "watermark record of origin '%.*s' is corrupt",
                              (int)e->name.len, (const char *)at(&b->arena, e->name));
        cur = sa_get_u64be(w->val.data + 1);
    }
    if (e->a <= cur)
        return 0; /* monotonic: lower or equal is a replay */
    uint8_t v[9];
    v[0] = SA_CURSOR_VERSION;
    sa_put_u64be(v + 1, e->a);
    return wg_put(w, SA_CF_CURSORS, w->key.data, w->key.len, v, 9, err);
}

static int inbox_key(sa_buf *k, const uint8_t *origin, size_t olen, uint64_t seq)
{
    sa_buf_reset(k);
    if (sa_buf_put(k, origin, olen) != 0 || sa_buf_put_u8(k, 0) != 0 || sa_buf_put_u64be(k, seq) != 0)
        return SA_ENOMEM;
    return 0;
}

static int wg_inbox_put(wgroup *w, const sa_batch *b, const entry *e, sa_err *err)
{
    if (inbox_key(&w->key, at(&b->arena, e->name), e->name.len, e->a) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    int found = 0;
    int rc = wg_read(w, SA_CF_INBOX, w->key.data, w->key.len, &w->val, &found, err);
    if (rc != 0 || found)
        return rc; /* a duplicate changes nothing */
    rc = wg_put(w, SA_CF_INBOX, w->key.data, w->key.len, at(&b->arena, e->enc), e->enc.len, err);
    if (rc == 0) {
        w->inbox_count++;
        w->inbox_bytes += w->key.len + e->enc.len;
    }
    return rc;
}

/* Remove committed inbox entries of origin with seq <= upto, one key at a
 * time so the counters stay exact. */
static int wg_inbox_remove(wgroup *w, const sa_batch *b, const entry *e, sa_err *err)
{
    sa_buf lo, hi;
    sa_buf_init(&lo);
    sa_buf_init(&hi);
    sa__kv_iter *it = NULL;
    int rc = 0;
    if (inbox_key(&lo, at(&b->arena, e->name), e->name.len, 0) != 0 ||
        inbox_key(&hi, at(&b->arena, e->name), e->name.len, e->a) != 0 || sa_buf_put_u8(&hi, 0) != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sa__kv_iter_new(w->s->kv, NULL, SA_CF_INBOX, lo.data, lo.len, hi.data, hi.len, &it, err)) != 0)
        goto done;
    for (; sa__kv_iter_valid(it); sa__kv_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = sa__kv_iter_key(it, &kl);
        const uint8_t *v;
        if (ov_get(&w->ov, SA_CF_INBOX, k, kl, &v, &vl) == OV_DEL)
            continue; /* removed earlier in this group */
        sa__kv_iter_value(it, &vl);
        /* the group's later batches must see it gone (the overlay); RocksDB
         * gets one range tombstone below, not a tombstone per entry */
        if (w->use_overlay && ov_set(&w->ov, SA_CF_INBOX, k, kl, NULL, 0, 1) != 0) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            goto done;
        }
        w->inbox_count--;
        w->inbox_bytes -= kl + vl;
    }
    rc = sa__kv_iter_status(it, err);
    /* One range tombstone over the whole removed range: later iterators
     * (this removal next time, the applier's reads, sa_inbox_origins, an
     * edge's outbox walk) skip it at once, where point tombstones made each
     * of them step over every entry removed since the first. */
    if (rc == 0)
        sa__kv_batch_del_range(w->kb, SA_CF_INBOX, lo.data, lo.len, hi.data, hi.len);
done:
    sa__kv_iter_free(it);
    sa_buf_free(&lo);
    sa_buf_free(&hi);
    return rc;
}

static int wg_meta(wgroup *w, const sa_batch *b, const entry *e, sa_err *err)
{
    sa_buf_reset(&w->key);
    if (sa_buf_put_u8(&w->key, 'u') != 0 || sa_buf_put(&w->key, at(&b->arena, e->name), e->name.len) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    sa__kv_batch_put(w->kb, SA_CF_META, w->key.data, w->key.len, at(&b->arena, e->enc), e->enc.len);
    return 0;
}

/* Add one caller's batch to the group.  On error everything it added is
 * undone and the group carries on without it. */
static int wg_add(wgroup *w, sa_batch *b, sa_commit_result *res, sa_err *err)
{
    uint64_t c[7] = {w->first_seq, w->last_seq, w->wal_count, w->wal_bytes, w->inbox_count,
                     w->inbox_bytes, (uint64_t)w->wal_touched};
    size_t on = w->ov.n, ontr = w->ov.ntr;
    sa__kv_batch_savepoint(w->kb);
    int rc = 0;
    res->first_seq = b->wal_ops ? w->last_seq + 1 : 0;
    for (size_t i = 0; i < b->nents && rc == 0; i++) {
        const entry *e = &b->ents[i];
        switch (e->type) {
        case E_WAL_OP:
        case E_STATE_OP:
            rc = wg_wal_op(w, b, e, err);
            break;
        case E_CUR_ACK:
        case E_CUR_DELIV:
        case E_CUR_ATTEMPT:
            rc = wg_cursor(w, b, e, err);
            break;
        case E_WATERMARK:
            rc = wg_watermark(w, b, e, err);
            break;
        case E_INBOX_PUT:
            rc = wg_inbox_put(w, b, e, err);
            break;
        case E_INBOX_REMOVE:
            rc = wg_inbox_remove(w, b, e, err);
            break;
        case E_META:
            rc = wg_meta(w, b, e, err);
            break;
        default:
            assert(!"unknown batch entry");
        }
    }
    if (rc != 0) {
        sa_err scratch;
        w->first_seq = c[0], w->last_seq = c[1], w->wal_count = c[2], w->wal_bytes = c[3];
        w->inbox_count = c[4], w->inbox_bytes = c[5], w->wal_touched = (int)c[6];
        if (sa__kv_batch_rollback(w->kb, &scratch) != 0 || ov_rollback(&w->ov, on, ontr) != 0)
            return SA_ENOMEM; /* caller fails the whole group */
        return rc;
    }
    sa__kv_batch_pop_savepoint(w->kb);
    res->last_seq = b->wal_ops ? w->last_seq : 0;
    return 0;
}

void sa__wal_counters_encode(uint8_t out[SA_WAL_COUNTERS_LEN], uint64_t first, uint64_t last,
                             uint64_t count, uint64_t bytes, uint64_t state_seq)
{
    sa_put_u64be(out, first);
    sa_put_u64be(out + 8, last);
    sa_put_u64be(out + 16, count);
    sa_put_u64be(out + 24, bytes);
    sa_put_u64be(out + 32, state_seq);
}

static void wg_init(wgroup *w, sa_store *s, sa__kv_batch *kb)
{
    memset(w, 0, sizeof *w);
    w->s = s;
    w->kb = kb;
    w->first_seq = s->first_seq;
    w->last_seq = s->last_seq;
    w->wal_count = s->wal_count;
    w->wal_bytes = s->wal_bytes;
    w->inbox_count = s->inbox_count;
    w->inbox_bytes = s->inbox_bytes;
}

static void wg_free(wgroup *w)
{
    ov_free(&w->ov);
    sa_buf_free(&w->val);
    sa_buf_free(&w->tmp);
    sa_buf_free(&w->key);
}

/* Write a group of batches as ONE RocksDB write.  Caller holds wmu.
 * rcs[i]/errs[i]/res[i] receive each batch's outcome. */
static void write_group(sa_store *s, sa_batch **bs, size_t n, int sync, int *rcs, sa_err *errs,
                        sa_commit_result *res)
{
    /* one RocksDB batch kept by the store and reused (caller holds wmu):
     * its buffer keeps its capacity, so a steady stream of groups does not
     * allocate and fault in fresh pages for every write */
    sa__kv_batch *kb = s->kb;
    wgroup w;
    sa_err gerr;
    int grc = 0;
    if (s->broken)
        grc = s->broken == 2 ? sa_err_set(&gerr, SA_EINVAL, "store '%s' is open read-only", s->dir)
                             : sa_err_set(&gerr, SA_EIO, "store '%s' must be reopened after a "
                                          "failed write", s->dir);
    else if (kb == NULL && (grc = sa__kv_batch_new(s->kv, &kb, &gerr)) == 0)
        s->kb = kb;
    wg_init(&w, s, kb);
    for (size_t i = 0; i < n; i++)
        w.use_overlay |= bs[i]->needs_read > 0;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        rcs[i] = 0;
        memset(&res[i], 0, sizeof res[i]);
    }
    for (size_t i = 0; grc == 0 && i < n; i++) {
        rcs[i] = wg_add(&w, bs[i], &res[i], &errs[i]);
        if (rcs[i] == SA_ENOMEM && errs[i].code != SA_ENOMEM)
            grc = sa_err_set(&gerr, SA_ENOMEM, "out of memory undoing a failed batch");
        if (rcs[i] == 0)
            ok++;
    }
    if (grc == 0 && ok > 0) {
        uint8_t cnt[SA_WAL_COUNTERS_LEN];
        if (w.wal_touched) {
            sa__wal_counters_encode(cnt, w.first_seq, w.last_seq, w.wal_count, w.wal_bytes,
                                    w.last_seq);
            sa__kv_batch_put(kb, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, cnt, sizeof cnt);
        }
        grc = sa__kv_write(s->kv, kb, sync, &gerr);
    }
    if (grc == 0 && ok > 0)
        s->writes++;
    if (grc == 0) {
        assert(w.last_seq >= s->last_seq); /* S1 */
        pthread_mutex_lock(&s->cmu);
        s->first_seq = w.first_seq;
        s->last_seq = w.last_seq;
        s->state_seq = w.last_seq;
        s->wal_count = w.wal_count;
        s->wal_bytes = w.wal_bytes;
        s->inbox_count = w.inbox_count;
        s->inbox_bytes = w.inbox_bytes;
        /* a synced write also makes every earlier unsynced one durable:
         * RocksDB's log is written in order */
        if (sync)
            s->durable_seq = s->last_seq;
        pthread_mutex_unlock(&s->cmu);
    }
    for (size_t i = 0; i < n; i++) {
        if (grc != 0 && rcs[i] == 0) {
            rcs[i] = grc;
            errs[i] = gerr;
            memset(&res[i], 0, sizeof res[i]);
        }
        res[i].durable_seq = s->durable_seq;
    }
    wg_free(&w);
    if (kb != NULL)
        sa__kv_batch_clear(kb);
}

/* ---------------------------------------------------------------------
 * Commit: direct under sync / none, leader-follower under group.
 * ------------------------------------------------------------------- */

struct sa__req {
    sa_batch *b;
    sa_commit_result res;
    sa_err err;
    int rc;
    int done;
    sa__req *next;
};

static void deadline_after_us(struct timespec *ts, uint32_t us)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += (long)(us % 1000000u) * 1000;
    ts->tv_sec += us / 1000000u + ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

static int commit_group(sa_store *s, sa_batch *b, sa_commit_result *res, sa_err *err)
{
    sa__req me;
    memset(&me, 0, sizeof me);
    me.b = b;
    pthread_mutex_lock(&s->qmu);
    if (s->qtail != NULL)
        s->qtail->next = &me;
    else
        s->qhead = &me;
    s->qtail = &me;
    s->qlen++;
    pthread_cond_broadcast(&s->qcond); /* a waiting leader may want us */
    while (!me.done) {
        if (s->leader_active) {
            pthread_cond_wait(&s->qcond, &s->qmu);
            continue;
        }
        s->leader_active = 1;
        struct timespec dl;
        deadline_after_us(&dl, s->opt.group_delay_us);
        while (s->qlen < s->opt.group_max_batches && s->opt.group_delay_us > 0 &&
               pthread_cond_timedwait(&s->qcond, &s->qmu, &dl) != ETIMEDOUT)
            ;
        sa__req *take = s->qhead;
        size_t n = s->qlen;
        s->qhead = s->qtail = NULL;
        s->qlen = 0;
        pthread_mutex_unlock(&s->qmu);

        sa_batch **bs = sa_malloc(n * sizeof *bs);
        int *rcs = sa_malloc(n * sizeof *rcs);
        sa_err *errs = sa_malloc(n * sizeof *errs);
        sa_commit_result *rs = sa_malloc(n * sizeof *rs);
        size_t i = 0;
        for (sa__req *r = take; r != NULL; r = r->next)
            bs[i++] = r->b;
        if (bs != NULL && rcs != NULL && errs != NULL && rs != NULL) {
            pthread_mutex_lock(&s->wmu);
            write_group(s, bs, n, 1, rcs, errs, rs);
            pthread_mutex_unlock(&s->wmu);
        }

        pthread_mutex_lock(&s->qmu);
        i = 0;
        for (sa__req *r = take, *next; r != NULL; r = next, i++) {
            next = r->next;
            if (bs != NULL && rcs != NULL && errs != NULL && rs != NULL) {
                r->rc = rcs[i];
                r->err = errs[i];
                r->res = rs[i];
            } else {
                r->rc = sa_err_set(&r->err, SA_ENOMEM, "out of memory in group commit");
            }
            r->done = 1;
        }
        sa_free(bs);
        sa_free(rcs);
        sa_free(errs);
        sa_free(rs);
        s->leader_active = 0;
        pthread_cond_broadcast(&s->qcond);
    }
    pthread_mutex_unlock(&s->qmu);
    if (me.rc != 0 && err != NULL)
        *err = me.err;
    if (res != NULL)
        *res = me.res;
    return me.rc;
}

static int commit_direct(sa_store *s, sa_batch *b, int sync, sa_commit_result *r, sa_err *err)
{
    int rc;
    sa_err e1;
    pthread_mutex_lock(&s->wmu);
    write_group(s, &b, 1, sync, &rc, &e1, r);
    pthread_mutex_unlock(&s->wmu);
    if (rc != 0 && err != NULL)
        *err = e1;
    return rc;
}

int sa_store_commit_deferred(sa_store *s, sa_batch *b, sa_commit_result *res, sa_err *err)
{
    sa_commit_result r;
    memset(&r, 0, sizeof r);
    if (b->open_group != 0)
        return sa_err_set(err, SA_EINVAL, "the batch ends inside a WAL group");
    int rc = b->nents == 0 ? 0 : commit_direct(s, b, 0, &r, err);
    if (rc == 0)
        sa_batch_clear(b);
    if (res != NULL)
        *res = r;
    return rc;
}

int sa_store_commit(sa_store *s, sa_batch *b, sa_commit_result *res, sa_err *err)
{
    int rc;
    sa_commit_result r;
    memset(&r, 0, sizeof r);
    if (b->open_group != 0)
        return sa_err_set(err, SA_EINVAL, "the batch ends inside a WAL group");
    if (b->nents == 0) {
        pthread_mutex_lock(&s->cmu);
        r.durable_seq = s->durable_seq;
        pthread_mutex_unlock(&s->cmu);
        rc = 0;
    } else if (s->opt.durability == SA_DUR_GROUP) {
        rc = commit_group(s, b, &r, err);
    } else {
        rc = commit_direct(s, b, s->opt.durability != SA_DUR_NONE_UNSAFE, &r, err);
    }
    if (rc == 0)
        sa_batch_clear(b);
    if (res != NULL)
        *res = r;
    return rc;
}

int sa_wal_append(sa_store *s, const sa_op *ops, size_t n, sa_commit_result *res, sa_err *err)
{
    /* reuse the store's spare batch when no other thread holds it */
    sa_batch *b = atomic_exchange(&s->spare, NULL);
    int rc = b != NULL ? 0 : sa_batch_new(&b, err);
    if (rc == 0)
        rc = sa_batch_wal_append(b, ops, n, err);
    if (rc == 0)
        rc = sa_store_commit(s, b, res, err);
    if (b != NULL) {
        sa_batch_clear(b);
        if (b->arena.cap > (8u << 20)) /* keep the spare small */
            sa_batch_free(b);
        else if ((b = atomic_exchange(&s->spare, b)) != NULL)
            sa_batch_free(b);
    }
    return rc;
}

/* ---------------------------------------------------------------------
 * Large groups: one WAL group of any size in bounded memory.
 *
 *   phase 1  WAL records are written in chunks above the published last_seq
 *            (unsynced; invisible: readers stop at last_seq, open deletes
 *            them if the group never finishes);
 *   phase 2  one synced write: the last chunk, the caller's extra batch and
 *            the counters with last_seq = the group's end.  The group is now
 *            committed; state_seq still names the state before it;
 *   phase 3  the state is brought up to the group's end in chunks, each one
 *            written together with the state_seq it reaches, so a crash
 *            resumes exactly where it stopped (open finishes phase 3).
 *
 * The whole sequence holds wmu: snapshots (which take wmu) never see the
 * state between two chunks.
 * ------------------------------------------------------------------- */


/* Write the pending chunk without sync. */
static int chunk_flush(sa_store *s, sa_err *err)
{
    if (sa__kv_batch_bytes(s->kb) <= 12) /* a RocksDB batch header is 12 bytes */
        return 0;
    int rc = sa__kv_write(s->kv, s->kb, 0, err);
    sa__kv_batch_clear(s->kb);
    return rc;
}

/* Bring the state from state_seq up to `to` by replaying WAL records, in
 * chunks that each persist the state_seq they reach.  Caller holds wmu. */
static int apply_state(sa_store *s, uint64_t to, sa_err *err)
{
    sa__kv_iter *it = NULL;
    sa_batch *b = NULL;
    sa_op *op = NULL;
    uint64_t seq = s->state_seq;
    uint8_t lo[8], hi[8];
    int rc = sa_batch_new(&b, err);
    if (rc != 0)
        return rc;
    sa_put_u64be(lo, s->state_seq + 1);
    sa_put_u64be(hi, to + 1);
    if ((rc = sa__kv_iter_new(s->kv, NULL, SA_CF_WAL, lo, 8, hi, 8, &it, err)) != 0)
        goto done;
    for (;;) {
        int valid = sa__kv_iter_valid(it);
        if (valid) {
            size_t kl, vl;
            const uint8_t *k = sa__kv_iter_key(it, &kl);
            const uint8_t *v = sa__kv_iter_value(it, &vl);
            int end;
            uint64_t rs = kl == 8 ? sa_get_u64be(k) : 0;
            if (rs != seq + 1) {
                rc = sa_err_set(err, SA_ECORRUPT, "WAL record %llu missing while applying state",
                                (unsigned long long)(seq + 1));
                goto done;
            }
            if ((rc = sa__walrec_decode(rs, v, vl, &op, &end, err)) != 0 ||
                (rc = batch_op(b, E_STATE_OP, op, end, rs, err)) != 0)
                goto done;
            sa_op_free(op);
            op = NULL;
            seq = rs;
            sa__kv_iter_next(it);
        }
        if (b->nents > 0 && (!valid || b->arena.len >= s->opt.large_chunk_bytes)) {
            wgroup w;
            sa_commit_result r;
            wg_init(&w, s, s->kb);
            w.use_overlay = b->needs_read > 0;
            rc = wg_add(&w, b, &r, err);
            uint8_t cnt[SA_WAL_COUNTERS_LEN];
            sa__wal_counters_encode(cnt, s->first_seq, s->last_seq, s->wal_count, s->wal_bytes, seq);
            sa__kv_batch_put(s->kb, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, cnt, sizeof cnt);
            if (rc == 0)
                rc = sa__kv_write(s->kv, s->kb, 0, err);
            sa__kv_batch_clear(s->kb);
            wg_free(&w);
            if (rc != 0)
                goto done;
            pthread_mutex_lock(&s->cmu);
            s->state_seq = seq;
            pthread_mutex_unlock(&s->cmu);
            sa_batch_clear(b);
        }
        if (!valid)
            break;
    }
    if ((rc = sa__kv_iter_status(it, err)) == 0 && seq != to)
        rc = sa_err_set(err, SA_ECORRUPT, "WAL ends at %llu while applying state up to %llu",
                        (unsigned long long)seq, (unsigned long long)to);
done:
    sa_op_free(op);
    sa__kv_iter_free(it);
    sa_batch_free(b);
    return rc;
}

int sa_wal_append_source(sa_store *s, sa_op_source src, void *ctx, sa_batch *extra,
                         sa_commit_result *res, sa_err *err)
{
    sa_buf rec;
    sa_buf_init(&rec);
    uint64_t n = 0, bytes = 0;
    int rc = 0, committed = 0;
    if (extra != NULL && extra->wal_ops != 0)
        return sa_err_set(err, SA_EINVAL, "the extra batch of a large group must hold no WAL ops");
    pthread_mutex_lock(&s->wmu);
    const uint64_t first = s->last_seq + 1;
    if (s->broken) {
        rc = s->broken == 2 ? sa_err_set(err, SA_EINVAL, "store '%s' is open read-only", s->dir)
                            : sa_err_set(err, SA_EIO, "store '%s' must be reopened after a "
                                         "failed write", s->dir);
        goto done;
    }
    if (s->kb == NULL && (rc = sa__kv_batch_new(s->kv, &s->kb, err)) != 0)
        goto done;
    /* phase 1: records in chunks; a record is written once the next op
     * shows it is not the last */
    for (;;) {
        const sa_op *op = NULL;
        if ((rc = src(ctx, &op, err)) != 0)
            goto done;
        if (op == NULL)
            break;
        if ((rc = sa_op_validate(op, err)) != 0) {
            sa_err_wrap(err, "op %llu of the group", (unsigned long long)n);
            goto done;
        }
        if (rec.len > 0) {
            uint8_t key[8];
            sa_put_u64be(key, first + n - 1);
            sa__kv_batch_put(s->kb, SA_CF_WAL, key, 8, rec.data, rec.len);
            bytes += 8 + rec.len;
            if (sa__kv_batch_bytes(s->kb) >= s->opt.large_chunk_bytes && (rc = chunk_flush(s, err)) != 0)
                goto done;
        }
        sa_buf_reset(&rec);
        uint8_t hdr[2] = {SA_WALREC_VERSION, 0};
        if (sa_buf_put(&rec, hdr, 2) != 0) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            goto done;
        }
        if ((rc = sa__op_encode_trusted(op, &rec, err)) != 0)
            goto done;
        n++;
    }
    if (n == 0) {
        rc = sa_err_set(err, SA_EINVAL, "a WAL group needs at least one op");
        goto done;
    }
    /* phase 2: the last record (group end), the extras, the counters */
    rec.data[1] = SA_WALREC_GROUP_END;
    uint8_t key[8];
    const uint64_t last = first + n - 1;
    sa_put_u64be(key, last);
    sa__kv_batch_put(s->kb, SA_CF_WAL, key, 8, rec.data, rec.len);
    bytes += 8 + rec.len;
    wgroup w;
    wg_init(&w, s, s->kb);
    w.last_seq = last;
    w.wal_count += n;
    w.wal_bytes += bytes;
    w.wal_touched = 1;
    sa_commit_result er;
    if (extra != NULL) {
        w.use_overlay = extra->needs_read > 0;
        if ((rc = wg_add(&w, extra, &er, err)) != 0) {
            wg_free(&w);
            goto done;
        }
    }
    uint8_t cnt[SA_WAL_COUNTERS_LEN];
    sa__wal_counters_encode(cnt, w.first_seq, last, w.wal_count, w.wal_bytes, s->state_seq);
    sa__kv_batch_put(s->kb, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, cnt, sizeof cnt);
    rc = sa__kv_write(s->kv, s->kb, s->opt.durability != SA_DUR_NONE_UNSAFE, err);
    sa__kv_batch_clear(s->kb);
    if (rc == 0) {
        committed = 1;
        s->writes++;
        pthread_mutex_lock(&s->cmu);
        s->last_seq = last;
        s->wal_count = w.wal_count;
        s->wal_bytes = w.wal_bytes;
        s->inbox_count = w.inbox_count;
        s->inbox_bytes = w.inbox_bytes;
        if (s->opt.durability != SA_DUR_NONE_UNSAFE)
            s->durable_seq = last;
        pthread_mutex_unlock(&s->cmu);
    }
    wg_free(&w);
    if (rc != 0)
        goto done;
    /* phase 3 */
    if ((rc = apply_state(s, last, err)) != 0) {
        s->broken = 1;
        sa_err_wrap(err, "group %llu..%llu is durable but its state is not applied; reopen "
                    "the store to finish it", (unsigned long long)first, (unsigned long long)last);
        goto done;
    }
    if (res != NULL) {
        res->first_seq = first;
        res->last_seq = last;
        res->durable_seq = s->durable_seq;
    }
    if (extra != NULL)
        sa_batch_clear(extra);
done:
    if (rc != 0 && !committed && s->kb != NULL) {
        /* drop what phase 1 wrote: it is above last_seq and unreferenced */
        sa__kv_batch_clear(s->kb);
        uint8_t lo[8], hi[9] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        sa_put_u64be(lo, first);
        sa__kv_batch_del_range(s->kb, SA_CF_WAL, lo, 8, hi, 9);
        sa_err ignore;
        (void)sa__kv_write(s->kv, s->kb, 0, &ignore); /* open deletes them otherwise */
        sa__kv_batch_clear(s->kb);
    }
    pthread_mutex_unlock(&s->wmu);
    sa_buf_free(&rec);
    return rc;
}

/* ---------------------------------------------------------------------
 * Truncation, sync, checkpoint.
 * ------------------------------------------------------------------- */

int sa_wal_truncate(sa_store *s, uint64_t below, sa_err *err)
{
    sa__kv_batch *kb = NULL;
    sa__kv_iter *it = NULL;
    int rc;
    if (s->opt.read_only)
        return sa_err_set(err, SA_EINVAL, "store '%s' is open read-only", s->dir);
    pthread_mutex_lock(&s->wmu);
    if (below > s->last_seq + 1)
        below = s->last_seq + 1;
    if (below <= s->first_seq) {
        rc = 0;
        goto done;
    }
    uint8_t lo[8], hi[8];
    sa_put_u64be(lo, s->first_seq);
    sa_put_u64be(hi, below);
    uint64_t count = 0, bytes = 0;
    if ((rc = sa__kv_iter_new(s->kv, NULL, SA_CF_WAL, lo, 8, hi, 8, &it, err)) != 0)
        goto done;
    for (; sa__kv_iter_valid(it); sa__kv_iter_next(it)) {
        size_t vl;
        sa__kv_iter_value(it, &vl);
        count++;
        bytes += 8 + vl;
    }
    if ((rc = sa__kv_iter_status(it, err)) != 0)
        goto done;
    if (count > s->wal_count || bytes > s->wal_bytes) {
        rc = sa_err_set(err, SA_ECORRUPT,
                        "WAL counters are behind its records (%llu records below %llu, %llu counted)",
                        (unsigned long long)count, (unsigned long long)below,
                        (unsigned long long)s->wal_count);
        goto done;
    }
    if ((rc = sa__kv_batch_new(s->kv, &kb, err)) != 0)
        goto done;
    sa__kv_batch_del_range(kb, SA_CF_WAL, lo, 8, hi, 8);
    uint8_t cnt[SA_WAL_COUNTERS_LEN];
    sa__wal_counters_encode(cnt, below, s->last_seq, s->wal_count - count, s->wal_bytes - bytes,
                            s->state_seq);
    sa__kv_batch_put(kb, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, cnt, sizeof cnt);
    if ((rc = sa__kv_write(s->kv, kb, s->opt.durability != SA_DUR_NONE_UNSAFE, err)) != 0)
        goto done;
    pthread_mutex_lock(&s->cmu);
    s->first_seq = below;
    s->wal_count -= count;
    s->wal_bytes -= bytes;
    pthread_mutex_unlock(&s->cmu);
done:
    pthread_mutex_unlock(&s->wmu);
    sa__kv_iter_free(it);
    sa__kv_batch_free(kb);
    return rc;
}

int sa_store_sync(sa_store *s, uint64_t *durable_seq, sa_err *err)
{
    pthread_mutex_lock(&s->wmu);
    int rc = sa__kv_sync_wal(s->kv, err);
    pthread_mutex_lock(&s->cmu);
    if (rc == 0)
        s->durable_seq = s->last_seq;
    if (rc == 0 && durable_seq != NULL)
        *durable_seq = s->durable_seq;
    pthread_mutex_unlock(&s->cmu);
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

int sa_store_checkpoint(sa_store *s, const char *dir, sa_err *err)
{
    struct stat st;
    if (stat(dir, &st) == 0)
        return sa_err_set(err, SA_EEXISTS, "checkpoint directory '%s' already exists", dir);
    /* Under wmu so the copy holds whole commits and matching counters. */
    pthread_mutex_lock(&s->wmu);
    int rc = sa__kv_checkpoint(s->kv, dir, err);
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

/* ---------------------------------------------------------------------
 * Open / close.
 * ------------------------------------------------------------------- */

void sa_store_options_init(sa_store_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->durability = SA_DUR_SYNC;
    opt->group_delay_us = 0;
    opt->group_max_batches = 256;
    opt->create_if_missing = 1;
    opt->large_chunk_bytes = 4u << 20;
}

const char *sa_durability_name(sa_durability d)
{
    switch (d) {
    case SA_DUR_SYNC:
        return "sync";
    case SA_DUR_GROUP:
        return "group";
    case SA_DUR_NONE_UNSAFE:
        return "none-unsafe";
    }
    return "?";
}

int sa_durability_parse(const char *s, sa_durability *out, sa_err *err)
{
    if (strcmp(s, "sync") == 0)
        *out = SA_DUR_SYNC;
    else if (strcmp(s, "group") == 0)
        *out = SA_DUR_GROUP;
    else if (strcmp(s, "none-unsafe") == 0 || strcmp(s, "none") == 0)
        *out = SA_DUR_NONE_UNSAFE;
    else
        return sa_err_set(err, SA_EINVAL,
                          "unknown durability policy \"%s\" (expected sync, group or none-unsafe)", s);
    return 0;
}

uint64_t sa__store_write_count(sa_store *s)
{
    pthread_mutex_lock(&s->wmu);
    uint64_t n = s->writes;
    pthread_mutex_unlock(&s->wmu);
    return n;
}

sa_durability sa_store_durability(const sa_store *s) { return s->opt.durability; }
const char *sa_store_dir(const sa_store *s) { return s->dir; }

static int check_format(sa_store *s, sa_err *err)
{
    sa_buf v;
    sa_buf_init(&v);
    int found = 0;
    int rc = sa__kv_get(s->kv, NULL, SA_CF_META, SA_META_FORMAT, sizeof SA_META_FORMAT - 1, &v,
                        &found, err);
    if (rc != 0)
        goto done;
    if (!found || v.len != 12 || memcmp(v.data, SA_STORE_MAGIC, 8) != 0) {
        rc = sa_err_set(err, SA_EFORMAT,
                        "'%s' is a RocksDB database but not a Softadastra data directory "
                        "(no format marker)", s->dir);
        goto done;
    }
    uint32_t ver = ((uint32_t)v.data[8] << 24) | ((uint32_t)v.data[9] << 16) |
                   ((uint32_t)v.data[10] << 8) | v.data[11];
    if (ver != SA_STORE_FORMAT)
        rc = sa_err_set(err, SA_EVERSION,
                        "data directory '%s' has storage format version %u; this build reads "
                        "version %u only", s->dir, ver, SA_STORE_FORMAT);
done:
    sa_buf_free(&v);
    return rc;
}

static int write_format(sa_store *s, sa_err *err)
{
    uint8_t v[12];
    memcpy(v, SA_STORE_MAGIC, 8);
    v[8] = 0, v[9] = 0, v[10] = 0, v[11] = SA_STORE_FORMAT;
    uint8_t cnt[SA_WAL_COUNTERS_LEN];
    sa__wal_counters_encode(cnt, 1, 0, 0, 0, 0);
    sa__kv_batch *kb = NULL;
    int rc = sa__kv_batch_new(s->kv, &kb, err);
    if (rc != 0)
        return rc;
    sa__kv_batch_put(kb, SA_CF_META, SA_META_FORMAT, sizeof SA_META_FORMAT - 1, v, 12);
    sa__kv_batch_put(kb, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, cnt, sizeof cnt);
    rc = sa__kv_write(s->kv, kb, 1, err);
    sa__kv_batch_free(kb);
    return rc;
}

/* Load counters and drop any WAL record beyond meta's last_seq (a group
 * that was never acknowledged: S2).  Recount the inbox. */
static int load_counters(sa_store *s, sa_err *err)
{
    sa_buf v;
    sa_buf_init(&v);
    sa__kv_iter *it = NULL;
    sa__kv_batch *kb = NULL;
    int found = 0;
    int rc = sa__kv_get(s->kv, NULL, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, &v, &found, err);
    if (rc != 0)
        goto done;
    if (!found || v.len != SA_WAL_COUNTERS_LEN) {
        rc = sa_err_set(err, SA_ECORRUPT, "data directory '%s': WAL counters missing or damaged",
                        s->dir);
        goto done;
    }
    s->first_seq = sa_get_u64be(v.data);
    s->last_seq = sa_get_u64be(v.data + 8);
    s->wal_count = sa_get_u64be(v.data + 16);
    s->wal_bytes = sa_get_u64be(v.data + 24);
    s->state_seq = sa_get_u64be(v.data + 32);
    if (s->first_seq > s->last_seq + 1 || s->wal_count != s->last_seq + 1 - s->first_seq ||
        s->state_seq > s->last_seq) {
        rc = sa_err_set(err, SA_ECORRUPT,
                        "data directory '%s': WAL counters are inconsistent (first %llu, last %llu, "
                        "count %llu)", s->dir, (unsigned long long)s->first_seq,
                        (unsigned long long)s->last_seq, (unsigned long long)s->wal_count);
        goto done;
    }
    uint8_t lo[8];
    sa_put_u64be(lo, s->last_seq + 1);
    if ((rc = sa__kv_iter_new(s->kv, NULL, SA_CF_WAL, lo, 8, NULL, 0, &it, err)) != 0)
        goto done;
    if (sa__kv_iter_valid(it) && !s->opt.read_only) {
        if ((rc = sa__kv_batch_new(s->kv, &kb, err)) != 0)
            goto done;
        uint8_t hi[9] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        sa__kv_batch_del_range(kb, SA_CF_WAL, lo, 8, hi, 9);
        if ((rc = sa__kv_write(s->kv, kb, 1, err)) != 0)
            goto done;
    }
    sa__kv_iter_free(it);
    it = NULL;
    if ((rc = sa__kv_iter_new(s->kv, NULL, SA_CF_INBOX, "", 0, NULL, 0, &it, err)) != 0)
        goto done;
    for (; sa__kv_iter_valid(it); sa__kv_iter_next(it)) {
        size_t kl, vl;
        sa__kv_iter_key(it, &kl);
        sa__kv_iter_value(it, &vl);
        s->inbox_count++;
        s->inbox_bytes += kl + vl;
    }
    if ((rc = sa__kv_iter_status(it, err)) != 0)
        goto done;
    s->durable_seq = s->last_seq;
    if (s->state_seq < s->last_seq && !s->opt.read_only) { /* a large group's phase 3 was cut short */
        if (s->kb == NULL && (rc = sa__kv_batch_new(s->kv, &s->kb, err)) != 0)
            goto done;
        rc = apply_state(s, s->last_seq, err);
    }
done:
    sa__kv_iter_free(it);
    sa__kv_batch_free(kb);
    sa_buf_free(&v);
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int fsync_path(const char *path, sa_err *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return sa_err_set(err, SA_ESYS, "cannot open '%s' to sync it: %s", path, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : sa_err_set(err, SA_ESYS, "fsync of '%s' failed: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/*
 * Create a new data directory atomically: build it complete (every column
 * family, the format marker, synced) under "<dir>.creating", then rename it
 * into place and sync the parent.  A crash at any point leaves either no
 * data directory or a whole one — never a half-created database that a
 * later open would have to refuse.
 */
static int create_store_dir(const char *dir, sa_err *err)
{
    size_t n = strlen(dir);
    char *tmp = sa_malloc(n + sizeof ".creating");
    char *parent = sa_strdup(dir);
    sa_store probe;
    int rc = 0;
    if (tmp == NULL || parent == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory creating '%s'", dir);
        goto done;
    }
    memcpy(tmp, dir, n);
    memcpy(tmp + n, ".creating", sizeof ".creating");
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS); /* leftovers of a crashed creation */
    memset(&probe, 0, sizeof probe);
    probe.dir = tmp;
    if ((rc = sa__kv_open(tmp, 1, &probe.kv, err)) != 0)
        goto done;
    rc = write_format(&probe, err);
    sa__kv_close(probe.kv);
    if (rc != 0)
        goto done;
    /* rename(2) replaces an empty directory the caller may have made */
    if (rename(tmp, dir) != 0) {
        rc = sa_err_set(err, SA_ESYS, "cannot move '%s' into place as '%s': %s", tmp, dir,
                        strerror(errno));
        goto done;
    }
    char *slash = strrchr(parent, '/');
    if (slash == parent)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    else
        strcpy(parent, ".");
    rc = fsync_path(parent, err);
done:
    sa_free(tmp);
    sa_free(parent);
    return rc;
}

int sa_store_open(const char *dir, const sa_store_options *opt, sa_store **out, sa_err *err)
{
    sa_store_options defaults;
    if (opt == NULL) {
        sa_store_options_init(&defaults);
        opt = &defaults;
    }
    if (opt->durability > SA_DUR_NONE_UNSAFE)
        return sa_err_set(err, SA_EINVAL, "unknown durability policy %d", (int)opt->durability);
    int kind;
    char why[512];
    int rc = sa__kv_probe(dir, &kind, why, sizeof why, err);
    if (rc != 0)
        return rc;
    if (kind == SA_KV_FOREIGN)
        return sa_err_set(err, SA_EFORMAT, "refusing to use '%s' as a data directory: %s", dir, why);
    if (kind == SA_KV_ABSENT && (!opt->create_if_missing || opt->read_only))
        return sa_err_set(err, SA_ENOTFOUND, "data directory '%s' does not exist", dir);
    if (kind == SA_KV_ABSENT && (rc = create_store_dir(dir, err)) != 0)
        return rc;

    sa_store *s = sa_calloc(1, sizeof *s);
    if (s == NULL || (s->dir = sa_strdup(dir)) == NULL) {
        sa_free(s);
        return sa_err_set(err, SA_ENOMEM, "out of memory opening '%s'", dir);
    }
    s->opt = *opt;
    if (s->opt.group_max_batches == 0)
        s->opt.group_max_batches = 1;
    if (s->opt.large_chunk_bytes < 4096)
        s->opt.large_chunk_bytes = 4096;
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_cond_init(&s->qcond, NULL);
    if ((rc = sa__kv_open_mode(dir, opt->read_only ? SA_KV_READONLY : SA_KV_WRITE, &s->kv, err)) != 0)
        goto fail;
    if ((rc = check_format(s, err)) != 0 || (rc = load_counters(s, err)) != 0)
        goto fail;
    if (opt->read_only)
        s->broken = 2; /* every write path checks it */
    *out = s;
    return 0;
fail:
    sa_store_close(s);
    return rc;
}

void sa_store_close(sa_store *s)
{
    if (s == NULL)
        return;
    if (s->kv == NULL)
        goto free_only;
    /* wait for a group leader still writing */
    pthread_mutex_lock(&s->qmu);
    while (s->leader_active || s->qhead != NULL)
        pthread_cond_wait(&s->qcond, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
    pthread_mutex_lock(&s->wmu);
    sa__kv_batch_free(s->kb);
    sa__kv_close(s->kv);
    pthread_mutex_unlock(&s->wmu);
free_only:
    sa_batch_free(atomic_load(&s->spare));
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->cmu);
    pthread_mutex_destroy(&s->qmu);
    pthread_cond_destroy(&s->qcond);
    sa_free(s->dir);
    sa_free(s);
}
