/*
 * read.c — the read side of the store: WAL iteration and bounded reads,
 * state rows (point reads and snapshot scans), cursors, watermarks, the
 * inbox and application metadata.  Layouts are specified in store.c.
 * Every reader holds one record at a time: memory does not grow with the
 * WAL, a table or an inbox (DESIGN.md contract 7).
 */
#include <assert.h>
#include <string.h>

#include "sa/sa_alloc.h"
#include "store_int.h"

/* ---------------------------------------------------------------------
 * Record decoders.
 * ------------------------------------------------------------------- */

int sa__walrec_decode(uint64_t seq, const uint8_t *v, size_t vl, sa_op **op_out, int *group_end,
                      sa_err *err)
{
    if (vl < 2)
        return sa_err_set(err, SA_ECORRUPT, "WAL record %llu is truncated (%zu bytes)",
                          (unsigned long long)seq, vl);
    if (v[0] != SA_WALREC_VERSION)
        return sa_err_set(err, SA_EVERSION, "WAL record %llu has version %u; this build reads %u",
                          (unsigned long long)seq, v[0], SA_WALREC_VERSION);
    if (v[1] & ~SA_WALREC_GROUP_END)
        return sa_err_set(err, SA_ECORRUPT, "WAL record %llu has reserved flag bits 0x%02x set",
                          (unsigned long long)seq, v[1]);
    sa_op *op = NULL;
    int rc = sa_op_decode(v + 2, vl - 2, &op, err);
    if (rc != 0)
        return sa_err_wrap(err, "WAL record %llu", (unsigned long long)seq);
    if (op->seq == 0)
        op->seq = seq;
    *group_end = (v[1] & SA_WALREC_GROUP_END) != 0;
    *op_out = op;
    return 0;
}

int sa__cursor_decode(const uint8_t *v, size_t vl, sa_cursor *c, sa_err *err)
{
    sa_rd rd;
    uint8_t ver;
    uint64_t att;
    const uint8_t *msg;
    size_t n;
    sa_rd_init(&rd, v, vl);
    memset(c, 0, sizeof *c);
    if (sa_rd_u8(&rd, &ver) != 0 || ver != SA_CURSOR_VERSION || sa_rd_varint(&rd, &c->acked) != 0 ||
        sa_rd_varint(&rd, &c->delivered) != 0 || sa_rd_varint(&rd, &att) != 0 ||
        sa_rd_varint(&rd, &c->last_attempt_ms) != 0 || sa_rd_varint(&rd, &c->next_retry_ms) != 0 ||
        sa_rd_bytes(&rd, &msg, &n, SA_CURSOR_ERR_MAX - 1) != 0 || rd.left != 0 || att > UINT32_MAX)
        return sa_err_set(err, SA_ECORRUPT, "cursor record is corrupt (%zu bytes)", vl);
    c->attempts = (uint32_t)att;
    memcpy(c->last_error, msg, n);
    c->last_error[n] = '\0';
    return 0;
}

/* A decoded row is one allocation: the sa_row, then the table name; the
 * key and column arrays come from sa_fields_decode (their own blocks). */
typedef struct row_box {
    sa_row row;
    sa_field *key;
    sa_field *cols;
    char *origin;
    char table[];
} row_box;

int sa__row_decode(const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, sa_row **out,
                   sa_err *err)
{
    const uint8_t *nul = memchr(k, 0, kl);
    if (nul == NULL)
        return sa_err_set(err, SA_ECORRUPT, "state key without a table name");
    size_t tl = (size_t)(nul - k);
    row_box *rb = sa_calloc(1, sizeof *rb + tl + 1);
    if (rb == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory decoding a row");
    memcpy(rb->table, k, tl);
    rb->table[tl] = '\0';
    sa_rd rd;
    sa_rd_init(&rd, v, vl);
    uint8_t ver;
    const uint8_t *o;
    size_t ol;
    int rc = SA_ECORRUPT;
    if (sa_rd_u8(&rd, &ver) != 0 || ver != SA_ROW_VERSION || sa_rd_u64be(&rd, &rb->row.seq) != 0 ||
        sa_rd_u64be(&rd, &rb->row.hlc) != 0 || sa_rd_bytes(&rd, &o, &ol, SA_OP_MAX_NAME) != 0)
        goto bad;
    if ((rb->origin = sa_strndup((const char *)o, ol)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory decoding a row");
        goto fail;
    }
    if ((rc = sa_fields_decode(&rd, &rb->key, &rb->row.nkey, err)) != 0 ||
        (rc = sa_fields_decode(&rd, &rb->cols, &rb->row.ncols, err)) != 0)
        goto fail;
    if (rd.left != 0)
        goto bad;
    rb->row.table = rb->table;
    rb->row.key = rb->key;
    rb->row.cols = rb->cols;
    rb->row.origin = rb->origin;
    *out = &rb->row;
    return 0;
bad:
    rc = sa_err_set(err, SA_ECORRUPT, "state row of table '%s' is corrupt", rb->table);
fail:
    sa_row_free(&rb->row);
    return rc;
}

void sa_row_free(sa_row *r)
{
    if (r == NULL)
        return;
    row_box *rb = (row_box *)r; /* row is the first member */
    sa_free(rb->key);
    sa_free(rb->cols);
    sa_free(rb->origin);
    sa_free(rb);
}

/* ---------------------------------------------------------------------
 * WAL.
 * ------------------------------------------------------------------- */

int sa_wal_info_get(sa_store *s, sa_wal_info *out, sa_err *err)
{
    (void)err;
    pthread_mutex_lock(&s->cmu);
    out->first_seq = s->first_seq;
    out->last_seq = s->last_seq;
    out->durable_seq = s->durable_seq;
    out->count = s->wal_count;
    out->bytes = s->wal_bytes;
    pthread_mutex_unlock(&s->cmu);
    return 0;
}

struct sa_wal_iter {
    sa__kv_iter *it;
    sa_op *op;
    int started;
};

int sa_wal_iter_open(sa_store *s, uint64_t from_seq, sa_wal_iter **out, sa_err *err)
{
    sa_wal_iter *w = sa_calloc(1, sizeof *w);
    if (w == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    /* Readers see durable records only (S4): not a large group still being
     * written above last_seq, nor a deferred commit not yet synced — after
     * a crash those could come back with other contents under the same
     * seqs.  Under none-unsafe nothing is ever durable: everything written
     * is readable. */
    uint8_t lo[8], hi[8];
    pthread_mutex_lock(&s->cmu);
    uint64_t last = s->opt.durability == SA_DUR_NONE_UNSAFE ? s->last_seq : s->durable_seq;
    pthread_mutex_unlock(&s->cmu);
    sa_put_u64be(lo, from_seq);
    sa_put_u64be(hi, last + 1);
    int rc = sa__kv_iter_new(s->kv, NULL, SA_CF_WAL, lo, 8, hi, 8, &w->it, err);
    if (rc != 0) {
        sa_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int sa_wal_iter_next(sa_wal_iter *w, sa_wal_rec *rec, sa_err *err)
{
    sa_op_free(w->op);
    w->op = NULL;
    if (w->started)
        sa__kv_iter_next(w->it);
    w->started = 1;
    if (!sa__kv_iter_valid(w->it))
        return sa__kv_iter_status(w->it, err);
    size_t kl, vl;
    const uint8_t *k = sa__kv_iter_key(w->it, &kl);
    const uint8_t *v = sa__kv_iter_value(w->it, &vl);
    if (kl != 8)
        return sa_err_set(err, SA_ECORRUPT, "WAL key of %zu bytes (expected 8)", kl);
    rec->seq = sa_get_u64be(k);
    int rc = sa__walrec_decode(rec->seq, v, vl, &w->op, &rec->group_end, err);
    if (rc != 0)
        return rc;
    rec->bytes = 8 + vl;
    rec->op = w->op;
    return 1;
}

void sa_wal_iter_close(sa_wal_iter *w)
{
    if (w == NULL)
        return;
    sa_op_free(w->op);
    sa__kv_iter_free(w->it);
    sa_free(w);
}

int sa_wal_read(sa_store *s, uint64_t from_seq, size_t max_ops, size_t max_bytes, int whole_groups,
                sa_wal_cb cb, void *ctx, uint64_t *next_seq, sa_err *err)
{
    sa_wal_iter *it = NULL;
    sa_wal_rec rec;
    size_t nops = 0, nbytes = 0;
    int in_group = 0; /* the last record delivered did not end its group */
    if (from_seq == 0)
        from_seq = 1;
    pthread_mutex_lock(&s->cmu);
    uint64_t first = s->first_seq;
    pthread_mutex_unlock(&s->cmu);
    if (from_seq < first)
        return sa_err_set(err, SA_ERANGE,
                          "seq %llu is below the retained WAL floor %llu (truncated)",
                          (unsigned long long)from_seq, (unsigned long long)first);
    uint64_t next = from_seq;
    int rc = sa_wal_iter_open(s, from_seq, &it, err);
    if (rc != 0)
        return rc;
    while ((rc = sa_wal_iter_next(it, &rec, err)) == 1) {
        int over = (max_ops && nops + 1 > max_ops) || (max_bytes && nbytes + rec.bytes > max_bytes);
        /* Stop when over the bounds, but with whole_groups only between
         * groups: a started group is delivered whole (bounds are soft by at
         * most one group), and at least one record is always delivered. */
        if (over && nops > 0 && !(whole_groups && in_group))
            break;
        if (rec.seq != next) {
            rc = sa_err_set(err, SA_ECORRUPT, "WAL gap: record %llu where %llu was expected",
                            (unsigned long long)rec.seq, (unsigned long long)next);
            break;
        }
        nops++;
        nbytes += rec.bytes;
        next = rec.seq + 1;
        in_group = !rec.group_end;
        if (cb != NULL && cb(&rec, ctx) != 0) {
            rc = 0;
            break;
        }
    }
    if (rc == 1)
        rc = 0;
    sa_wal_iter_close(it);
    if (rc == 0 && next_seq != NULL)
        *next_seq = next;
    return rc;
}

/* ---------------------------------------------------------------------
 * State.
 * ------------------------------------------------------------------- */

int sa_state_get(sa_store *s, const char *table, const sa_field *key, uint32_t nkey, sa_row **out,
                 sa_err *err)
{
    sa_buf k, v;
    sa_buf_init(&k);
    sa_buf_init(&v);
    int found = 0;
    int rc = sa__state_key(&k, table, key, nkey);
    if (rc != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sa__kv_get(s->kv, NULL, SA_CF_STATE, k.data, k.len, &v, &found, err)) != 0)
        goto done;
    if (!found) {
        rc = sa_err_set(err, SA_ENOTFOUND, "no row with that key in '%s'", table);
        goto done;
    }
    rc = sa__row_decode(k.data, k.len, v.data, v.len, out, err);
done:
    sa_buf_free(&k);
    sa_buf_free(&v);
    return rc;
}

struct sa_snapshot {
    sa_store *s;
    sa__kv_snap *snap;
    uint64_t seq;
};

int sa_snapshot_open(sa_store *s, sa_snapshot **out, sa_err *err)
{
    sa_snapshot *sn = sa_calloc(1, sizeof *sn);
    sa_buf v;
    sa_buf_init(&v);
    int found = 0, rc;
    if (sn == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    sn->s = s;
    /* Under wmu: no large group is between its WAL and its state then, so
     * the snapshot's state is exactly the WAL up to its last_seq (S3); and
     * deferred commits are synced first, so it holds only durable state. */
    pthread_mutex_lock(&s->wmu);
    rc = 0;
    if (s->opt.durability != SA_DUR_NONE_UNSAFE && s->durable_seq < s->last_seq &&
        !s->opt.read_only && (rc = sa__kv_sync_wal(s->kv, err)) == 0) {
        pthread_mutex_lock(&s->cmu);
        s->durable_seq = s->last_seq;
        pthread_mutex_unlock(&s->cmu);
    }
    if (rc == 0)
        rc = sa__kv_snap_new(s->kv, &sn->snap, err);
    pthread_mutex_unlock(&s->wmu);
    if (rc != 0)
        goto fail;
    /* the counters read through the same snapshot name its seq (S3) */
    rc = sa__kv_get(s->kv, sn->snap, SA_CF_META, SA_META_WAL, sizeof SA_META_WAL - 1, &v, &found, err);
    if (rc != 0)
        goto fail;
    if (!found || v.len != SA_WAL_COUNTERS_LEN) {
        rc = sa_err_set(err, SA_ECORRUPT, "WAL counters missing in snapshot");
        goto fail;
    }
    sn->seq = sa_get_u64be(v.data + 32); /* state_seq == last_seq here */
    sa_buf_free(&v);
    *out = sn;
    return 0;
fail:
    sa_buf_free(&v);
    sa_snapshot_close(sn);
    return rc;
}

uint64_t sa_snapshot_seq(const sa_snapshot *sn) { return sn->seq; }

void sa_snapshot_close(sa_snapshot *sn)
{
    if (sn == NULL)
        return;
    sa__kv_snap_free(sn->s->kv, sn->snap);
    sa_free(sn);
}

struct sa_state_iter {
    sa__kv_iter *it;
    sa_row *row;
    int started;
};

int sa_state_iter_open(sa_snapshot *sn, const char *table, sa_state_iter **out, sa_err *err)
{
    sa_state_iter *si = sa_calloc(1, sizeof *si);
    if (si == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    sa_buf lo, hi;
    sa_buf_init(&lo);
    sa_buf_init(&hi);
    int rc = 0;
    if (table != NULL) {
        size_t n = strlen(table);
        if (sa_buf_put(&lo, table, n + 1) != 0 || sa_buf_put(&hi, table, n) != 0 ||
            sa_buf_put_u8(&hi, 1) != 0)
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    if (rc == 0)
        rc = sa__kv_iter_new(sn->s->kv, sn->snap, SA_CF_STATE, lo.data ? lo.data : (uint8_t *)"",
                             lo.len, table ? hi.data : NULL, hi.len, &si->it, err);
    sa_buf_free(&lo);
    sa_buf_free(&hi);
    if (rc != 0) {
        sa_free(si);
        return rc;
    }
    *out = si;
    return 0;
}

int sa_state_iter_next(sa_state_iter *si, const sa_row **row, sa_err *err)
{
    sa_row_free(si->row);
    si->row = NULL;
    if (si->started)
        sa__kv_iter_next(si->it);
    si->started = 1;
    if (!sa__kv_iter_valid(si->it))
        return sa__kv_iter_status(si->it, err);
    size_t kl, vl;
    const uint8_t *k = sa__kv_iter_key(si->it, &kl);
    const uint8_t *v = sa__kv_iter_value(si->it, &vl);
    int rc = sa__row_decode(k, kl, v, vl, &si->row, err);
    if (rc != 0)
        return rc;
    *row = si->row;
    return 1;
}

void sa_state_iter_close(sa_state_iter *si)
{
    if (si == NULL)
        return;
    sa_row_free(si->row);
    sa__kv_iter_free(si->it);
    sa_free(si);
}

/* ---------------------------------------------------------------------
 * Cursors, watermarks, metadata.
 * ------------------------------------------------------------------- */

static int prefixed_get(sa_store *s, int cf, char prefix, const char *name, sa_buf *v, int *found,
                        sa_err *err)
{
    sa_buf k;
    sa_buf_init(&k);
    int rc = 0;
    if (sa_buf_put_u8(&k, (uint8_t)prefix) != 0 || sa_buf_put(&k, name, strlen(name)) != 0)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    if (rc == 0)
        rc = sa__kv_get(s->kv, NULL, cf, k.data, k.len, v, found, err);
    sa_buf_free(&k);
    return rc;
}

int sa_cursor_get(sa_store *s, const char *peer, sa_cursor *out, sa_err *err)
{
    sa_buf v;
    sa_buf_init(&v);
    int found = 0;
    memset(out, 0, sizeof *out);
    int rc = prefixed_get(s, SA_CF_CURSORS, 'c', peer, &v, &found, err);
    if (rc == 0 && !found)
        rc = sa_err_set(err, SA_ENOTFOUND, "no cursor for peer '%s'", peer);
    if (rc == 0)
        rc = sa__cursor_decode(v.data, v.len, out, err);
    sa_buf_free(&v);
    return rc;
}

int sa_cursor_foreach(sa_store *s, int (*cb)(const char *peer, const sa_cursor *c, void *ctx),
                      void *ctx, sa_err *err)
{
    sa__kv_iter *it = NULL;
    char name[SA_OP_MAX_NAME + 1];
    int rc = sa__kv_iter_new(s->kv, NULL, SA_CF_CURSORS, "c", 1, "d", 1, &it, err);
    if (rc != 0)
        return rc;
    for (; sa__kv_iter_valid(it); sa__kv_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = sa__kv_iter_key(it, &kl);
        const uint8_t *v = sa__kv_iter_value(it, &vl);
        sa_cursor c;
        if (kl - 1 > SA_OP_MAX_NAME) {
            rc = sa_err_set(err, SA_ECORRUPT, "cursor key of %zu bytes", kl);
            break;
        }
        memcpy(name, k + 1, kl - 1);
        name[kl - 1] = '\0';
        if ((rc = sa__cursor_decode(v, vl, &c, err)) != 0)
            break;
        if (cb(name, &c, ctx) != 0)
            break;
    }
    if (rc == 0)
        rc = sa__kv_iter_status(it, err);
    sa__kv_iter_free(it);
    return rc;
}

int sa_watermark_get(sa_store *s, const char *origin, uint64_t *out, sa_err *err)
{
    sa_buf v;
    sa_buf_init(&v);
    int found = 0;
    int rc = prefixed_get(s, SA_CF_CURSORS, 'w', origin, &v, &found, err);
    if (rc == 0) {
        if (!found)
            *out = 0;
        else if (v.len != 9 || v.data[0] != SA_CURSOR_VERSION)
            rc = sa_err_set(err, SA_ECORRUPT, "watermark record of origin '%s' is corrupt", origin);
        else
            *out = sa_get_u64be(v.data + 1);
    }
    sa_buf_free(&v);
    return rc;
}

int sa_store_meta_get(sa_store *s, const char *key, void **val, size_t *len, sa_err *err)
{
    sa_buf v;
    sa_buf_init(&v);
    int found = 0;
    int rc = prefixed_get(s, SA_CF_META, 'u', key, &v, &found, err);
    if (rc == 0 && !found)
        rc = sa_err_set(err, SA_ENOTFOUND, "no metadata '%s'", key);
    if (rc == 0) {
        void *p = sa_malloc(v.len + 1);
        if (p == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        } else {
            memcpy(p, v.data, v.len);
            ((char *)p)[v.len] = '\0';
            *val = p;
            *len = v.len;
        }
    }
    sa_buf_free(&v);
    return rc;
}

/* ---------------------------------------------------------------------
 * Inbox.
 * ------------------------------------------------------------------- */

struct sa_inbox_iter {
    sa__kv_iter *it;
    sa_op *op;
    int started;
};

int sa_inbox_iter_open(sa_store *s, const char *origin, uint64_t from_seq, sa_inbox_iter **out,
                       sa_err *err)
{
    sa_inbox_iter *ii = sa_calloc(1, sizeof *ii);
    sa_buf lo, hi;
    sa_buf_init(&lo);
    sa_buf_init(&hi);
    int rc = 0;
    size_t n = strlen(origin);
    if (ii == NULL || sa_buf_put(&lo, origin, n + 1) != 0 || sa_buf_put_u64be(&lo, from_seq) != 0 ||
        sa_buf_put(&hi, origin, n) != 0 || sa_buf_put_u8(&hi, 1) != 0)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    if (rc == 0)
        rc = sa__kv_iter_new(s->kv, NULL, SA_CF_INBOX, lo.data, lo.len, hi.data, hi.len, &ii->it, err);
    sa_buf_free(&lo);
    sa_buf_free(&hi);
    if (rc != 0) {
        sa_free(ii);
        return rc;
    }
    *out = ii;
    return 0;
}

int sa_inbox_iter_next(sa_inbox_iter *ii, const sa_op **op, sa_err *err)
{
    sa_op_free(ii->op);
    ii->op = NULL;
    if (ii->started)
        sa__kv_iter_next(ii->it);
    ii->started = 1;
    if (!sa__kv_iter_valid(ii->it))
        return sa__kv_iter_status(ii->it, err);
    size_t vl;
    const uint8_t *v = sa__kv_iter_value(ii->it, &vl);
    int rc = sa_op_decode(v, vl, &ii->op, err);
    if (rc != 0)
        return sa_err_wrap(err, "inbox entry");
    *op = ii->op;
    return 1;
}

void sa_inbox_iter_close(sa_inbox_iter *ii)
{
    if (ii == NULL)
        return;
    sa_op_free(ii->op);
    sa__kv_iter_free(ii->it);
    sa_free(ii);
}

int sa_inbox_stats(sa_store *s, uint64_t *count, uint64_t *bytes, sa_err *err)
{
    (void)err;
    pthread_mutex_lock(&s->cmu);
    *count = s->inbox_count;
    *bytes = s->inbox_bytes;
    pthread_mutex_unlock(&s->cmu);
    return 0;
}

int sa_store_meta_scan(sa_store *s, const char *prefix, const char *after,
                       int (*cb)(const char *key, const void *val, size_t len, void *ctx), void *ctx,
                       sa_err *err)
{
    sa_buf lo, hi;
    sa_buf_init(&lo);
    sa_buf_init(&hi);
    size_t pl = strlen(prefix);
    int rc = 0;
    if (sa_buf_put_u8(&lo, 'u') != 0 || sa_buf_put(&lo, prefix, pl) != 0 ||
        (after != NULL && (sa_buf_put(&lo, after, strlen(after)) != 0 || sa_buf_put_u8(&lo, 0) != 0)) ||
        sa_buf_put_u8(&hi, 'u') != 0 || sa_buf_put(&hi, prefix, pl) != 0 ||
        sa_buf_put_u8(&hi, 0xff) != 0)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    sa__kv_iter *it = NULL;
    if (rc == 0)
        rc = sa__kv_iter_new(s->kv, NULL, SA_CF_META, lo.data, lo.len, hi.data, hi.len, &it, err);
    sa_buf k;
    sa_buf_init(&k);
    for (; rc == 0 && sa__kv_iter_valid(it); sa__kv_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *kd = sa__kv_iter_key(it, &kl);
        const uint8_t *vd = sa__kv_iter_value(it, &vl);
        sa_buf_reset(&k);
        if (sa_buf_put(&k, kd + 1, kl - 1) != 0 || sa_buf_put_u8(&k, 0) != 0) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            break;
        }
        if (cb((const char *)k.data, vd, vl, ctx) != 0)
            break;
    }
    if (rc == 0 && it != NULL && !sa__kv_iter_valid(it))
        rc = sa__kv_iter_status(it, err);
    sa__kv_iter_free(it);
    sa_buf_free(&k);
    sa_buf_free(&lo);
    sa_buf_free(&hi);
    return rc;
}

int sa_inbox_origins(sa_store *s, int (*cb)(const char *origin, void *ctx), void *ctx, sa_err *err)
{
    sa_buf lo;
    sa_buf_init(&lo);
    int rc = 0;
    for (;;) {
        sa__kv_iter *it = NULL;
        if ((rc = sa__kv_iter_new(s->kv, NULL, SA_CF_INBOX, lo.data, lo.len, NULL, 0, &it, err)) != 0)
            break;
        if (!sa__kv_iter_valid(it)) {
            rc = sa__kv_iter_status(it, err);
            sa__kv_iter_free(it);
            break;
        }
        size_t kl;
        const uint8_t *kd = sa__kv_iter_key(it, &kl);
        size_t ol = strnlen((const char *)kd, kl);
        sa_buf_reset(&lo);
        /* the next origin starts after origin "\x01" (keys are origin \0 seq) */
        if (sa_buf_put(&lo, kd, ol) != 0 || sa_buf_put_u8(&lo, 0) != 0) {
            sa__kv_iter_free(it);
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            break;
        }
        sa__kv_iter_free(it);
        int stop = cb((const char *)lo.data, ctx);
        lo.data[lo.len - 1] = 1;
        if (stop)
            break;
    }
    sa_buf_free(&lo);
    return rc;
}
