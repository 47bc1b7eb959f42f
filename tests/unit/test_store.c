/*
 * test_store.c — libsa_storage's store: opening and refusing directories,
 * WAL groups, reads, truncation, state rows, snapshots under concurrent
 * appends, cursors, watermarks, the inbox, group commit, checkpoints and
 * out-of-memory during commit.  Real RocksDB on disk throughout.
 */
#include <pthread.h>
#include <rocksdb/c.h> /* only to forge a foreign database */
#include <sys/stat.h>

#include "kv.h"
#include "store_int.h"
#include "testutil.h"

#define T "public.items"

static void put_row(sa_store *s, int id, const char *v)
{
    char a[64], b[64];
    snprintf(a, sizeof a, "id=%d", id);
    snprintf(b, sizeof b, "v=%s", v);
    const char *ks[] = {a}, *cs[] = {a, b};
    tu_fields k, c;
    tu_fields_set(&k, 1, ks);
    tu_fields_set(&c, 2, cs);
    sa_op op = tu_op(SA_OP_INSERT, T, &k, &c, 1);
    sa_err err;
    sa_commit_result r;
    assert_int_equal(sa_wal_append(s, &op, 1, &r, &err), 0);
}

static const char *row_v(sa_store *s, int id, char *buf, size_t cap)
{
    char a[64];
    snprintf(a, sizeof a, "id=%d", id);
    const char *ks[] = {a};
    tu_fields k;
    tu_fields_set(&k, 1, ks);
    sa_row *row = NULL;
    sa_err err;
    int rc = sa_state_get(s, T, k.f, k.n, &row, &err);
    if (rc == SA_ENOTFOUND)
        return "<none>";
    assert_int_equal(rc, 0);
    tu_col(row->cols, row->ncols, "v", buf, cap);
    sa_row_free(row);
    return buf;
}

/* --- opening --------------------------------------------------------- */

static void test_store_open_creates_and_reopens(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("open");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    sa_wal_info wi;
    assert_int_equal(sa_wal_info_get(s, &wi, NULL), 0);
    assert_int_equal(wi.first_seq, 1);
    assert_int_equal(wi.last_seq, 0);
    assert_int_equal(wi.count, 0);
    put_row(s, 1, "a");
    put_row(s, 2, "b");
    sa_store_close(s);

    s = tu_open(dir, SA_DUR_SYNC);
    assert_int_equal(sa_wal_info_get(s, &wi, NULL), 0);
    assert_int_equal(wi.last_seq, 2);
    assert_int_equal(wi.count, 2);
    char buf[64];
    assert_string_equal(row_v(s, 2, buf, sizeof buf), "b");
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void test_store_refuses_foreign_directories(void **state)
{
    (void)state;
    sa_err err;
    sa_store *s = NULL;
    char *dir = tu_tmpdir("foreign");

    /* a directory with unrelated files */
    assert_int_equal(mkdir(dir, 0700), 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("hello", f);
    fclose(f);
    assert_int_equal(sa_store_open(dir, NULL, &s, &err), SA_EFORMAT);
    assert_non_null(strstr(err.msg, "holds no RocksDB database"));
    assert_null(s);
    tu_rmrf(dir);

    /* a RocksDB database with other column families */
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    char *e = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &e);
    assert_null(e);
    rocksdb_column_family_handle_t *h = rocksdb_create_column_family(db, o, "orders", &e);
    assert_null(e);
    rocksdb_column_family_handle_destroy(h);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    assert_int_equal(sa_store_open(dir, NULL, &s, &err), SA_EFORMAT);
    assert_non_null(strstr(err.msg, "orders"));
    tu_rmrf(dir);

    /* our column families but no format marker */
    sa__kv *kv = NULL;
    assert_int_equal(sa__kv_open(dir, 1, &kv, &err), 0);
    sa__kv_close(kv);
    assert_int_equal(sa_store_open(dir, NULL, &s, &err), SA_EFORMAT);
    assert_non_null(strstr(err.msg, "format marker"));
    tu_rmrf(dir);

    /* a store of another format version */
    s = tu_open(dir, SA_DUR_SYNC);
    sa_store_close(s);
    s = NULL;
    assert_int_equal(sa__kv_open(dir, 0, &kv, &err), 0);
    sa__kv_batch *kb = NULL;
    assert_int_equal(sa__kv_batch_new(kv, &kb, &err), 0);
    uint8_t v[12] = {'S', 'A', 'D', 'A', 'S', 'T', 'R', 'A', 0, 0, 0, 7};
    sa__kv_batch_put(kb, SA_CF_META, SA_META_FORMAT, sizeof SA_META_FORMAT - 1, v, 12);
    assert_int_equal(sa__kv_write(kv, kb, 1, &err), 0);
    sa__kv_batch_free(kb);
    sa__kv_close(kv);
    assert_int_equal(sa_store_open(dir, NULL, &s, &err), SA_EVERSION);
    assert_non_null(strstr(err.msg, "version 7"));
    assert_non_null(strstr(err.msg, "version 1"));
    tu_rmrf(dir);

    /* a plain file */
    f = fopen(dir, "w");
    fclose(f);
    assert_int_equal(sa_store_open(dir, NULL, &s, &err), SA_EFORMAT);
    tu_rmrf(dir);

    /* absent and create_if_missing = 0 */
    sa_store_options opt;
    sa_store_options_init(&opt);
    opt.create_if_missing = 0;
    assert_int_equal(sa_store_open(dir, &opt, &s, &err), SA_ENOTFOUND);
    free(dir);
}

static void test_store_second_open_is_busy(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("busy");
    sa_store *s = tu_open(dir, SA_DUR_SYNC), *s2 = NULL;
    sa_err err;
    assert_int_equal(sa_store_open(dir, NULL, &s2, &err), SA_EBUSY);
    assert_non_null(strstr(err.msg, "in use"));
    /* a read-only open works beside the writer, sees what was committed
     * before it, and refuses writes */
    put_row(s, 1, "one");
    sa_store_options ro;
    sa_store_options_init(&ro);
    ro.read_only = 1;
    assert_int_equal(sa_store_open(dir, &ro, &s2, &err), 0);
    sa_wal_info wi;
    sa_wal_info_get(s2, &wi, NULL);
    assert_int_equal(wi.last_seq, 1);
    char buf[64];
    assert_string_equal(row_v(s2, 1, buf, sizeof buf), "one");
    tu_fields k;
    const char *ks[] = {"id=1"};
    tu_fields_set(&k, 1, ks);
    sa_op del = tu_op(SA_OP_DELETE, T, &k, NULL, 1);
    assert_int_equal(sa_wal_append(s2, &del, 1, NULL, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "read-only"));
    assert_int_equal(sa_wal_truncate(s2, 2, &err), SA_EINVAL);
    /* snapshots and scans work on a read-only open too */
    sa_snapshot *sn;
    sa_state_iter *it;
    const sa_row *row;
    assert_int_equal(sa_snapshot_open(s2, &sn, &err), 0);
    assert_int_equal(sa_snapshot_seq(sn), 1);
    assert_int_equal(sa_state_iter_open(sn, T, &it, &err), 0);
    assert_int_equal(sa_state_iter_next(it, &row, &err), 1);
    assert_int_equal(sa_state_iter_next(it, &row, &err), 0);
    sa_state_iter_close(it);
    sa_snapshot_close(sn);
    sa_store_close(s2);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- WAL ------------------------------------------------------------- */

typedef struct collect {
    uint64_t seqs[4096];
    int ends[4096];
    size_t n;
} collect;

static int collect_cb(const sa_wal_rec *rec, void *ctx)
{
    collect *c = ctx;
    c->seqs[c->n] = rec->seq;
    c->ends[c->n] = rec->group_end;
    c->n++;
    return 0;
}

/* groups of sizes 1, 2, 3, ... 10 → 55 ops */
static void append_groups(sa_store *s)
{
    int id = 0;
    for (int g = 1; g <= 10; g++) {
        sa_op ops[10];
        tu_fields k[10], c[10];
        char a[10][32], b[10][32];
        for (int i = 0; i < g; i++, id++) {
            snprintf(a[i], 32, "id=%d", id);
            snprintf(b[i], 32, "v=g%d", g);
            const char *ks[] = {a[i]}, *cs[] = {a[i], b[i]};
            tu_fields_set(&k[i], 1, ks);
            tu_fields_set(&c[i], 2, cs);
            ops[i] = tu_op(SA_OP_INSERT, T, &k[i], &c[i], (uint64_t)id);
        }
        sa_commit_result r;
        sa_err err;
        assert_int_equal(sa_wal_append(s, ops, (size_t)g, &r, &err), 0);
        assert_int_equal(r.last_seq - r.first_seq + 1, g);
        assert_int_equal(r.durable_seq, r.last_seq);
    }
}

static void test_store_wal_groups_dense_and_bounded_reads(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("wal");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    append_groups(s);
    sa_wal_info wi;
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.last_seq, 55);
    assert_int_equal(wi.count, 55);
    assert_true(wi.bytes > 55 * 10);

    /* every record, dense, group ends after 1, 3, 6, 10, ... */
    collect c = {0};
    uint64_t next;
    sa_err err;
    assert_int_equal(sa_wal_read(s, 1, 0, 0, 0, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 55);
    assert_int_equal(next, 56);
    uint64_t end = 0;
    for (int g = 1; g <= 10; g++) {
        end += (uint64_t)g;
        assert_true(c.ends[end - 1]);
        if (g > 1)
            assert_false(c.ends[end - 2]);
    }
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(c.seqs[i], i + 1);

    /* bounded by count, not whole groups: exactly 5 */
    memset(&c, 0, sizeof c);
    assert_int_equal(sa_wal_read(s, 1, 5, 0, 0, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 5);
    assert_int_equal(next, 6);
    /* whole groups: 5 ops reach into group 3 (seqs 4..6): it is finished */
    memset(&c, 0, sizeof c);
    assert_int_equal(sa_wal_read(s, 1, 5, 0, 1, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 6);
    assert_true(c.ends[5]);
    /* whole groups from the middle of nowhere: a huge first group is whole */
    memset(&c, 0, sizeof c);
    assert_int_equal(sa_wal_read(s, 46, 1, 0, 1, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 10);
    assert_int_equal(next, 56);
    /* bounded by bytes: at least one record, never more than asked beyond it */
    memset(&c, 0, sizeof c);
    assert_int_equal(sa_wal_read(s, 1, 0, 1, 0, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 1);
    /* reading at the head gives nothing */
    memset(&c, 0, sizeof c);
    assert_int_equal(sa_wal_read(s, 56, 0, 0, 1, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(next, 56);

    /* iterator gives the ops back with their WAL seq */
    sa_wal_iter *it;
    sa_wal_rec rec;
    assert_int_equal(sa_wal_iter_open(s, 7, &it, &err), 0);
    assert_int_equal(sa_wal_iter_next(it, &rec, &err), 1);
    assert_int_equal(rec.seq, 7);
    assert_int_equal(rec.op->seq, 7);
    assert_string_equal(rec.op->table, T);
    assert_int_equal(rec.op->kind, SA_OP_INSERT);
    sa_wal_iter_close(it);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void test_store_wal_truncate(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("trunc");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    append_groups(s);
    sa_wal_info before, wi;
    sa_wal_info_get(s, &before, NULL);
    sa_err err;
    assert_int_equal(sa_wal_truncate(s, 11, &err), 0);
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.first_seq, 11);
    assert_int_equal(wi.last_seq, 55);
    assert_int_equal(wi.count, 45);
    assert_true(wi.bytes < before.bytes);
    collect c = {0};
    uint64_t next;
    assert_int_equal(sa_wal_read(s, 5, 0, 0, 0, collect_cb, &c, &next, &err), SA_ERANGE);
    assert_non_null(strstr(err.msg, "floor 11"));
    assert_int_equal(sa_wal_read(s, 11, 0, 0, 0, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 45);
    assert_int_equal(c.seqs[0], 11);
    /* lower truncation is a no-op; beyond the head clamps */
    assert_int_equal(sa_wal_truncate(s, 3, &err), 0);
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.first_seq, 11);
    /* state is not touched by truncation */
    char buf[64];
    assert_string_equal(row_v(s, 0, buf, sizeof buf), "g1");
    sa_store_close(s);
    s = tu_open(dir, SA_DUR_SYNC);
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.first_seq, 11);
    assert_int_equal(wi.count, 45);
    assert_int_equal(sa_wal_truncate(s, 1000, &err), 0);
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.first_seq, 56);
    assert_int_equal(wi.count, 0);
    assert_int_equal(wi.bytes, 0);
    put_row(s, 99, "after");
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.first_seq, 56);
    assert_int_equal(wi.last_seq, 56);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void test_store_recovery_drops_unacknowledged_records(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("recover");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    put_row(s, 1, "a");
    sa_store_close(s);
    /* forge a record beyond meta's last_seq, as a torn multi-write group
     * would leave it */
    sa__kv *kv;
    sa_err err;
    assert_int_equal(sa__kv_open(dir, 0, &kv, &err), 0);
    sa__kv_batch *kb;
    sa__kv_batch_new(kv, &kb, &err);
    uint8_t k[8];
    sa_put_u64be(k, 2);
    sa__kv_batch_put(kb, SA_CF_WAL, k, 8, "\x01\x01junk", 6);
    assert_int_equal(sa__kv_write(kv, kb, 1, &err), 0);
    sa__kv_batch_free(kb);
    sa__kv_close(kv);
    s = tu_open(dir, SA_DUR_SYNC);
    collect c = {0};
    uint64_t next;
    assert_int_equal(sa_wal_read(s, 1, 0, 0, 0, collect_cb, &c, &next, &err), 0);
    assert_int_equal(c.n, 1);
    put_row(s, 2, "b"); /* seq 2 is reused cleanly */
    assert_int_equal(sa_wal_read(s, 1, 0, 0, 0, collect_cb, &c, &next, &err), 0);
    assert_int_equal(next, 3);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- state ----------------------------------------------------------- */

static void test_store_state_follows_ops(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("state");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    sa_err err;
    char buf[64];
    tu_fields k1, c1, k2, c2, cu, cmove, kmove;
    const char *k1s[] = {"id=1"}, *c1s[] = {"id=1", "v=one", "big=BIG", "n"};
    const char *k2s[] = {"id=2"}, *c2s[] = {"id=2", "v=two", "big=B2", "n=5"};
    tu_fields_set(&k1, 1, k1s);
    tu_fields_set(&c1, 4, c1s);
    tu_fields_set(&k2, 1, k2s);
    tu_fields_set(&c2, 4, c2s);
    /* one transaction: two inserts and an update of the first with an
     * unchanged TOAST column — the update must see the insert (overlay) */
    const char *cus[] = {"id=1", "v=uno", "big=~"};
    tu_fields_set(&cu, 3, cus);
    sa_op ops[3] = {tu_op(SA_OP_INSERT, T, &k1, &c1, 10), tu_op(SA_OP_INSERT, T, &k2, &c2, 11),
                    tu_op(SA_OP_UPDATE, T, &k1, &cu, 12)};
    ops[2].origin = "tablet-7";
    sa_commit_result r;
    assert_int_equal(sa_wal_append(s, ops, 3, &r, &err), 0);
    assert_int_equal(r.first_seq, 1);
    assert_int_equal(r.last_seq, 3);

    sa_row *row;
    assert_int_equal(sa_state_get(s, T, k1.f, 1, &row, &err), 0);
    assert_int_equal(row->seq, 3);
    assert_int_equal(row->hlc, 12);
    assert_string_equal(row->origin, "tablet-7");
    assert_string_equal(row->table, T);
    assert_string_equal(tu_col(row->cols, row->ncols, "v", buf, sizeof buf), "uno");
    assert_string_equal(tu_col(row->cols, row->ncols, "big", buf, sizeof buf), "BIG");
    assert_string_equal(tu_col(row->cols, row->ncols, "n", buf, sizeof buf), "<null>");
    sa_row_free(row);

    /* a key change moves the row */
    const char *cm[] = {"id=20", "v=moved"};
    const char *km[] = {"id=20"};
    tu_fields_set(&cmove, 2, cm);
    tu_fields_set(&kmove, 1, km);
    sa_op up = tu_op(SA_OP_UPDATE, T, &k2, &cmove, 13);
    up.origin = "tablet-9"; /* an edge's update names only what it changed */
    assert_int_equal(sa_wal_append(s, &up, 1, &r, &err), 0);
    assert_int_equal(sa_state_get(s, T, k2.f, 1, &row, &err), SA_ENOTFOUND);
    assert_int_equal(sa_state_get(s, T, kmove.f, 1, &row, &err), 0);
    assert_string_equal(tu_col(row->cols, row->ncols, "v", buf, sizeof buf), "moved");
    assert_string_equal(tu_col(row->cols, row->ncols, "big", buf, sizeof buf), "B2");
    assert_string_equal(tu_col(row->cols, row->ncols, "id", buf, sizeof buf), "20");
    sa_row_free(row);

    /* an update from PostgreSQL carries the whole new row: a column it
     * lacks (dropped from the table) leaves the state row */
    tu_fields cfull;
    const char *cfs[] = {"id=20", "v=full"};
    tu_fields_set(&cfull, 2, cfs);
    sa_op fu = tu_op(SA_OP_UPDATE, T, &kmove, &cfull, 14);
    assert_int_equal(sa_wal_append(s, &fu, 1, &r, &err), 0);
    assert_int_equal(sa_state_get(s, T, kmove.f, 1, &row, &err), 0);
    assert_int_equal(row->ncols, 2);
    assert_string_equal(tu_col(row->cols, row->ncols, "big", buf, sizeof buf), "<absent>");
    assert_string_equal(tu_col(row->cols, row->ncols, "v", buf, sizeof buf), "full");
    sa_row_free(row);

    /* delete, then an update of a missing row creates it from what it has */
    sa_op del = tu_op(SA_OP_DELETE, T, &k1, NULL, 14);
    assert_int_equal(sa_wal_append(s, &del, 1, &r, &err), 0);
    assert_string_equal(row_v(s, 1, buf, sizeof buf), "<none>");

    /* another table survives a truncate of this one; a row inserted after
     * the truncate in the same transaction survives it too */
    sa_op other = tu_op(SA_OP_INSERT, "public.other", &k1, &c1, 15);
    assert_int_equal(sa_wal_append(s, &other, 1, &r, &err), 0);
    put_row(s, 5, "five");
    sa_op tr[2] = {tu_op(SA_OP_TRUNCATE, T, NULL, NULL, 16), tu_op(SA_OP_INSERT, T, &k2, &c2, 17)};
    assert_int_equal(sa_wal_append(s, tr, 2, &r, &err), 0);
    assert_string_equal(row_v(s, 5, buf, sizeof buf), "<none>");
    assert_string_equal(row_v(s, 20, buf, sizeof buf), "<none>");
    assert_string_equal(row_v(s, 2, buf, sizeof buf), "two");
    assert_int_equal(sa_state_get(s, "public.other", k1.f, 1, &row, &err), 0);
    sa_row_free(row);

    /* a truncate after an insert in one transaction removes it */
    sa_op tr2[2] = {tu_op(SA_OP_INSERT, T, &k1, &c1, 18), tu_op(SA_OP_TRUNCATE, T, NULL, NULL, 19)};
    assert_int_equal(sa_wal_append(s, tr2, 2, &r, &err), 0);
    assert_string_equal(row_v(s, 1, buf, sizeof buf), "<none>");
    assert_string_equal(row_v(s, 2, buf, sizeof buf), "<none>");

    /* scan through a snapshot: only public.other remains */
    sa_snapshot *sn;
    sa_state_iter *it;
    const sa_row *cr;
    assert_int_equal(sa_snapshot_open(s, &sn, &err), 0);
    assert_int_equal(sa_snapshot_seq(sn), r.last_seq);
    assert_int_equal(sa_state_iter_open(sn, NULL, &it, &err), 0);
    int n = 0;
    while (sa_state_iter_next(it, &cr, &err) == 1) {
        assert_string_equal(cr->table, "public.other");
        n++;
    }
    assert_int_equal(n, 1);
    sa_state_iter_close(it);
    sa_snapshot_close(sn);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void test_store_rejects_bad_ops_without_effect(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("badop");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    sa_batch *b;
    sa_err err;
    assert_int_equal(sa_batch_new(&b, &err), 0);
    tu_fields k;
    const char *ks[] = {"id=1"};
    tu_fields_set(&k, 1, ks);
    sa_op ops[2] = {tu_op(SA_OP_DELETE, T, &k, NULL, 1), tu_op(SA_OP_DELETE, NULL, &k, NULL, 1)};
    assert_true(sa_batch_wal_append(b, ops, 2, &err) < 0);
    assert_non_null(strstr(err.msg, "op 1"));
    assert_true(sa_batch_empty(b));
    assert_true(sa_batch_wal_append(b, ops, 0, &err) < 0);
    assert_true(sa_batch_cursor_ack(b, "", 1, &err) < 0);
    assert_true(sa_batch_empty(b));
    sa_commit_result r;
    assert_int_equal(sa_store_commit(s, b, &r, &err), 0);
    sa_wal_info wi;
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.last_seq, 0);
    sa_batch_free(b);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- snapshot consistency while appends continue --------------------- */

#define SNAP_KEYS 40

typedef struct appender {
    sa_store *s;
    volatile int stop;
    int groups;
} appender;

/* Group g: update row (g % SNAP_KEYS) to "g", and row ((g*7) % SNAP_KEYS)
 * too, or delete it when g % 5 == 0.  Deterministic from g alone. */
static void snap_group(int g, sa_op *ops, tu_fields *k, tu_fields *c, char (*a)[32], char (*b)[32],
                       int *n)
{
    int ids[2] = {g % SNAP_KEYS, (g * 7) % SNAP_KEYS};
    *n = 2;
    for (int i = 0; i < 2; i++) {
        snprintf(a[i], 32, "id=%d", ids[i]);
        snprintf(b[i], 32, "v=%d", g);
        const char *ks[] = {a[i]}, *cs[] = {a[i], b[i]};
        tu_fields_set(&k[i], 1, ks);
        tu_fields_set(&c[i], 2, cs);
        ops[i] = tu_op(i == 1 && g % 5 == 0 ? SA_OP_DELETE : SA_OP_INSERT, T, &k[i],
                       i == 1 && g % 5 == 0 ? NULL : &c[i], (uint64_t)g);
    }
}

static void *appender_main(void *arg)
{
    appender *ap = arg;
    for (int g = 1; !ap->stop; g++) {
        sa_op ops[2];
        tu_fields k[2], c[2];
        char a[2][32], b[2][32];
        int n;
        snap_group(g, ops, k, c, a, b, &n);
        sa_err err;
        if (sa_wal_append(ap->s, ops, (size_t)n, NULL, &err) != 0)
            fail_msg("append: %s", err.msg);
        ap->groups = g;
    }
    return NULL;
}

static void test_store_snapshot_consistent_during_appends(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("snap");
    sa_store *s = tu_open(dir, SA_DUR_NONE_UNSAFE);
    appender ap = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, appender_main, &ap);
    int checks = 0;
    while (checks < 30) {
        sa_snapshot *sn;
        sa_err err;
        assert_int_equal(sa_snapshot_open(s, &sn, &err), 0);
        uint64_t seq = sa_snapshot_seq(sn);
        if (seq < 2) {
            sa_snapshot_close(sn);
            continue;
        }
        /* every group is 2 ops: the snapshot is at a group boundary */
        assert_int_equal(seq % 2, 0);
        int expect[SNAP_KEYS];
        for (int i = 0; i < SNAP_KEYS; i++)
            expect[i] = -1;
        for (int g = 1; (uint64_t)g * 2 <= seq; g++) {
            expect[g % SNAP_KEYS] = g;
            expect[(g * 7) % SNAP_KEYS] = g % 5 == 0 ? -1 : g;
        }
        sa_state_iter *it;
        const sa_row *row;
        assert_int_equal(sa_state_iter_open(sn, T, &it, &err), 0);
        int seen = 0, rc;
        char buf[64], idb[64];
        while ((rc = sa_state_iter_next(it, &row, &err)) == 1) {
            int id = atoi(tu_col(row->key, row->nkey, "id", idb, sizeof idb));
            assert_true(id >= 0 && id < SNAP_KEYS);
            assert_int_equal(atoi(tu_col(row->cols, row->ncols, "v", buf, sizeof buf)), expect[id]);
            assert_true(row->seq <= seq);
            seen++;
        }
        assert_int_equal(rc, 0);
        int want = 0;
        for (int i = 0; i < SNAP_KEYS; i++)
            want += expect[i] >= 0;
        assert_int_equal(seen, want);
        sa_state_iter_close(it);
        sa_snapshot_close(sn);
        checks++;
    }
    ap.stop = 1;
    pthread_join(th, NULL);
    assert_true(ap.groups > 0);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- cursors, watermarks, inbox, meta -------------------------------- */

static int count_cursor(const char *peer, const sa_cursor *cc, void *ctx)
{
    int *count = ctx;
    assert_true(strcmp(peer, "till-1") == 0 || strcmp(peer, "till-2") == 0);
    assert_true(cc->acked >= 1);
    (*count)++;
    return 0;
}

static void test_store_cursor_monotonic(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("cursor");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    sa_batch *b;
    sa_err err;
    sa_cursor c;
    sa_batch_new(&b, &err);
    assert_int_equal(sa_cursor_get(s, "till-1", &c, &err), SA_ENOTFOUND);
    assert_int_equal(c.acked, 0);

    assert_int_equal(sa_batch_cursor_delivered(b, "till-1", 10, &err), 0);
    assert_int_equal(sa_batch_cursor_ack(b, "till-1", 7, &err), 0);
    assert_int_equal(sa_batch_cursor_ack(b, "till-1", 5, &err), 0); /* lower: ignored */
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    assert_int_equal(sa_cursor_get(s, "till-1", &c, &err), 0);
    assert_int_equal(c.acked, 7);
    assert_int_equal(c.delivered, 10);

    /* an ack beyond delivered raises delivered; a lower delivered is ignored */
    sa_batch_cursor_ack(b, "till-1", 12, &err);
    sa_batch_cursor_delivered(b, "till-1", 3, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    assert_int_equal(sa_cursor_get(s, "till-1", &c, &err), 0);
    assert_int_equal(c.acked, 12);
    assert_int_equal(c.delivered, 12);

    /* attempts: failures count up and keep the error, success resets */
    sa_batch_cursor_attempt(b, "till-1", 0, "connection refused", 1000, 2000, &err);
    sa_batch_cursor_attempt(b, "till-1", 0, "timeout", 3000, 5000, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    assert_int_equal(sa_cursor_get(s, "till-1", &c, &err), 0);
    assert_int_equal(c.attempts, 2);
    assert_string_equal(c.last_error, "timeout");
    assert_int_equal(c.last_attempt_ms, 3000);
    assert_int_equal(c.next_retry_ms, 5000);
    sa_batch_cursor_ack(b, "till-2", 1, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    sa_store_close(s);

    s = tu_open(dir, SA_DUR_SYNC);
    assert_int_equal(sa_cursor_get(s, "till-1", &c, &err), 0);
    assert_int_equal(c.acked, 12);
    assert_int_equal(c.attempts, 2);
    sa_batch_cursor_attempt(b, "till-1", 1, "ignored", 6000, 0, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    assert_int_equal(sa_cursor_get(s, "till-1", &c, &err), 0);
    assert_int_equal(c.attempts, 0);
    assert_string_equal(c.last_error, "");
    assert_int_equal(c.acked, 12);

    /* watermarks */
    uint64_t w;
    assert_int_equal(sa_watermark_get(s, "tablet-1/3", &w, &err), 0);
    assert_int_equal(w, 0);
    sa_batch_watermark(b, "tablet-1/3", 40, &err);
    sa_batch_watermark(b, "tablet-1/3", 39, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    assert_int_equal(sa_watermark_get(s, "tablet-1/3", &w, &err), 0);
    assert_int_equal(w, 40);

    int count = 0;
    assert_int_equal(sa_cursor_foreach(s, count_cursor, &count, &err), 0);
    assert_int_equal(count, 2);
    sa_batch_free(b);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

struct origins {
    char (*names)[32];
    int *n;
};

static int collect_origin(const char *origin, void *ctx)
{
    struct origins *o = ctx;
    if (*o->n < 8)
        snprintf(o->names[(*o->n)++], 32, "%s", origin);
    return 0;
}

static int collect_key(const char *key, const void *val, size_t len, void *ctx)
{
    (void)val;
    (void)len;
    return collect_origin(key, ctx);
}

static void test_store_inbox_idempotent_queue(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("inbox");
    sa_store *s = tu_open(dir, SA_DUR_GROUP);
    sa_batch *b;
    sa_err err;
    sa_batch_new(&b, &err);
    tu_fields k, c;
    const char *ks[] = {"id=1"}, *cs[] = {"id=1", "v=x"};
    tu_fields_set(&k, 1, ks);
    tu_fields_set(&c, 2, cs);
    sa_op op = tu_op(SA_OP_INSERT, T, &k, &c, 1);
    op.origin = "tablet-1";
    op.epoch = 3;
    for (uint64_t seq = 5; seq >= 1; seq--) { /* out of order on purpose */
        op.seq = seq;
        assert_int_equal(sa_batch_inbox_put(b, "tablet-1/3", &op, &err), 0);
    }
    op.seq = 1;
    sa_batch_inbox_put(b, "tablet-2/1", &op, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    uint64_t n, bytes;
    sa_inbox_stats(s, &n, &bytes, &err);
    assert_int_equal(n, 6);
    /* duplicates change nothing */
    op.seq = 3;
    sa_batch_inbox_put(b, "tablet-1/3", &op, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    uint64_t n2, bytes2;
    sa_inbox_stats(s, &n2, &bytes2, &err);
    assert_int_equal(n2, 6);
    assert_int_equal(bytes2, bytes);

    sa_inbox_iter *it;
    const sa_op *got;
    assert_int_equal(sa_inbox_iter_open(s, "tablet-1/3", 0, &it, &err), 0);
    uint64_t expect = 1;
    while (sa_inbox_iter_next(it, &got, &err) == 1) {
        assert_int_equal(got->seq, expect);
        assert_string_equal(got->origin, "tablet-1");
        assert_int_equal(got->epoch, 3);
        expect++;
    }
    assert_int_equal(expect, 6);
    sa_inbox_iter_close(it);

    /* applied: remove up to 3, together with the watermark */
    sa_batch_inbox_remove(b, "tablet-1/3", 3, &err);
    sa_batch_watermark(b, "tablet-1/3", 3, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    sa_inbox_stats(s, &n, &bytes, &err);
    assert_int_equal(n, 3);
    sa_store_close(s);
    s = tu_open(dir, SA_DUR_SYNC);
    sa_inbox_stats(s, &n2, &bytes2, &err);
    assert_int_equal(n2, 3);
    assert_int_equal(bytes2, bytes);
    assert_int_equal(sa_inbox_iter_open(s, "tablet-1/3", 0, &it, &err), 0);
    assert_int_equal(sa_inbox_iter_next(it, &got, &err), 1);
    assert_int_equal(got->seq, 4);
    sa_inbox_iter_close(it);
    assert_int_equal(sa_inbox_iter_open(s, "tablet-2/1", 0, &it, &err), 0);
    assert_int_equal(sa_inbox_iter_next(it, &got, &err), 1);
    assert_int_equal(sa_inbox_iter_next(it, &got, &err), 0);
    sa_inbox_iter_close(it);

    /* meta */
    sa_batch_meta_put(b, "instance", "abc", 3, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    void *v;
    size_t vl;
    assert_int_equal(sa_store_meta_get(s, "instance", &v, &vl, &err), 0);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "abc", 3);
    sa_free(v);
    assert_int_equal(sa_store_meta_get(s, "nope", &v, &vl, &err), SA_ENOTFOUND);

    /* origins with queued ops, in name order, each once */
    op.seq = 1;
    sa_batch_inbox_put(b, "a/1", &op, &err);
    sa_batch_inbox_put(b, "tablet-1/30", &op, &err); /* sorts after "tablet-1/3" */
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    char seen[8][32];
    int nseen = 0;
    assert_int_equal(sa_inbox_origins(s, collect_origin, &(struct origins){seen, &nseen}, &err), 0);
    assert_int_equal(nseen, 4);
    assert_string_equal(seen[0], "a/1");
    assert_string_equal(seen[1], "tablet-1/3");
    assert_string_equal(seen[2], "tablet-1/30");
    assert_string_equal(seen[3], "tablet-2/1");

    /* a prefix scan of metadata, and resuming after a key */
    sa_batch_meta_put(b, "r.x.1", "one", 3, &err);
    sa_batch_meta_put(b, "r.x.2", "two", 3, &err);
    sa_batch_meta_put(b, "r.x.3", "three", 5, &err);
    sa_batch_meta_put(b, "r.y.1", "other", 5, &err);
    sa_batch_meta_put(b, "r.x", "shorter", 7, &err);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    char keys[8][32];
    int nk = 0;
    assert_int_equal(sa_store_meta_scan(s, "r.x.", NULL, collect_key, &(struct origins){keys, &nk}, &err), 0);
    assert_int_equal(nk, 3);
    assert_string_equal(keys[0], "r.x.1");
    assert_string_equal(keys[2], "r.x.3");
    nk = 0;
    assert_int_equal(sa_store_meta_scan(s, "r.x.", "1", collect_key, &(struct origins){keys, &nk}, &err), 0);
    assert_int_equal(nk, 2);
    assert_string_equal(keys[0], "r.x.2");
    sa_batch_free(b);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- group commit ---------------------------------------------------- */

#define GC_THREADS 8
#define GC_PER_THREAD 40

typedef struct gc_arg {
    sa_store *s;
    int t;
    uint64_t first[GC_PER_THREAD], last[GC_PER_THREAD];
} gc_arg;

static void *gc_main(void *p)
{
    gc_arg *a = p;
    for (int i = 0; i < GC_PER_THREAD; i++) {
        sa_op ops[3];
        tu_fields k[3], c[3];
        char x[3][32], y[3][32];
        for (int j = 0; j < 3; j++) {
            snprintf(x[j], 32, "id=%d", a->t * 100000 + i * 3 + j);
            snprintf(y[j], 32, "v=%d", a->t);
            const char *ks[] = {x[j]}, *cs[] = {x[j], y[j]};
            tu_fields_set(&k[j], 1, ks);
            tu_fields_set(&c[j], 2, cs);
            ops[j] = tu_op(SA_OP_INSERT, T, &k[j], &c[j], 1);
        }
        sa_commit_result r;
        sa_err err;
        if (sa_wal_append(a->s, ops, 3, &r, &err) != 0)
            fail_msg("append: %s", err.msg);
        if (r.durable_seq < r.last_seq || r.last_seq != r.first_seq + 2)
            fail_msg("bad result %llu..%llu durable %llu", (unsigned long long)r.first_seq,
                     (unsigned long long)r.last_seq, (unsigned long long)r.durable_seq);
        a->first[i] = r.first_seq;
        a->last[i] = r.last_seq;
    }
    return NULL;
}

static void test_store_group_commit_coalesces(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("group");
    sa_store_options o;
    sa_store_options_init(&o);
    o.durability = SA_DUR_GROUP;
    o.group_delay_us = 2000;
    sa_store *s = NULL;
    sa_err err;
    assert_int_equal(sa_store_open(dir, &o, &s, &err), 0);
    static gc_arg args[GC_THREADS];
    pthread_t th[GC_THREADS];
    for (int t = 0; t < GC_THREADS; t++) {
        args[t].s = s;
        args[t].t = t;
        pthread_create(&th[t], NULL, gc_main, &args[t]);
    }
    for (int t = 0; t < GC_THREADS; t++)
        pthread_join(th[t], NULL);
    sa_wal_info wi;
    sa_wal_info_get(s, &wi, NULL);
    const uint64_t total = GC_THREADS * GC_PER_THREAD * 3;
    assert_int_equal(wi.last_seq, total);
    assert_int_equal(wi.durable_seq, total);
    /* fewer synced writes than commits: they were coalesced */
    uint64_t writes = sa__store_write_count(s);
    assert_true(writes < GC_THREADS * GC_PER_THREAD);
    /* every seq is owned by exactly one caller's group, and groups are
     * whole in the WAL: ids of one group share a thread and are contiguous */
    static unsigned char owner[GC_THREADS * GC_PER_THREAD * 3 + 1];
    memset(owner, 0, sizeof owner);
    for (int t = 0; t < GC_THREADS; t++)
        for (int i = 0; i < GC_PER_THREAD; i++)
            for (uint64_t q = args[t].first[i]; q <= args[t].last[i]; q++) {
                assert_int_equal(owner[q], 0);
                owner[q] = 1;
            }
    collect *c = calloc(1, sizeof *c);
    uint64_t next;
    assert_int_equal(sa_wal_read(s, 1, 0, 0, 0, collect_cb, c, &next, &err), 0);
    assert_int_equal(c->n, total);
    for (size_t i = 0; i < c->n; i++)
        assert_int_equal(c->ends[i], (i % 3) == 2);
    free(c);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- checkpoint ------------------------------------------------------ */

static void test_store_checkpoint_is_a_usable_copy(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("cp-src");
    char *cp = tu_tmpdir("cp-dst");
    sa_store *s = tu_open(dir, SA_DUR_SYNC);
    append_groups(s);
    sa_err err;
    assert_int_equal(sa_store_checkpoint(s, cp, &err), 0);
    assert_int_equal(sa_store_checkpoint(s, cp, &err), SA_EEXISTS);
    put_row(s, 1000, "later"); /* not in the copy */
    sa_store_close(s);
    sa_store *c = tu_open(cp, SA_DUR_SYNC);
    sa_wal_info wi;
    sa_wal_info_get(c, &wi, NULL);
    assert_int_equal(wi.last_seq, 55);
    char buf[64];
    assert_string_equal(row_v(c, 54, buf, sizeof buf), "g10");
    assert_string_equal(row_v(c, 1000, buf, sizeof buf), "<none>");
    sa_store_close(c);
    tu_rmrf(dir);
    tu_rmrf(cp);
    free(dir);
    free(cp);
}

/* --- out of memory during batch building and commit ------------------ */

static void test_store_commit_out_of_memory_is_clean(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("oom");
    sa_store *s = tu_open(dir, SA_DUR_NONE_UNSAFE);
    put_row(s, 1, "base");
    int failures = 0;
    for (long n = 0;; n++) {
        tu_fields k, c;
        const char *ks[] = {"id=1"}, *cs[] = {"id=1", "v=new", "w=~"};
        tu_fields_set(&k, 1, ks);
        tu_fields_set(&c, 3, cs);
        sa_op ops[2] = {tu_op(SA_OP_UPDATE, T, &k, &c, 2), tu_op(SA_OP_DELETE, T, &k, NULL, 3)};
        ops[1].table = "public.other";
        sa_batch *b = NULL;
        sa_err err;
        sa_alloc_fail_after(n);
        int rc = sa_batch_new(&b, &err);
        if (rc == 0)
            rc = sa_batch_wal_append(b, ops, 2, &err);
        if (rc == 0)
            rc = sa_batch_cursor_ack(b, "p", 4, &err);
        if (rc == 0)
            rc = sa_store_commit(s, b, NULL, &err);
        sa_alloc_fail_reset();
        sa_batch_free(b);
        sa_wal_info wi;
        sa_wal_info_get(s, &wi, NULL);
        char buf[64];
        if (rc == 0) {
            assert_int_equal(wi.last_seq, 3);
            assert_string_equal(row_v(s, 1, buf, sizeof buf), "new");
            break;
        }
        failures++;
        assert_int_equal(rc, SA_ENOMEM);
        assert_true(err.msg[0] != '\0');
        /* nothing of the failed commit is visible */
        assert_int_equal(wi.last_seq, 1);
        assert_string_equal(row_v(s, 1, buf, sizeof buf), "base");
        sa_cursor cur;
        assert_int_equal(sa_cursor_get(s, "p", &cur, &err), SA_ENOTFOUND);
        assert_true(n < 10000);
    }
    assert_true(failures > 5);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- large groups --------------------------------------------------- */

typedef struct big_src {
    int n, i, fail_at;
    tu_fields k, c;
    char a[32], b[32];
    sa_op op;
} big_src;

static int big_next(void *ctx, const sa_op **op, sa_err *err)
{
    big_src *bs = ctx;
    if (bs->i == bs->fail_at)
        return sa_err_set(err, SA_EIO, "source failed at op %d", bs->i);
    if (bs->i == bs->n) {
        *op = NULL;
        return 0;
    }
    int id = bs->i % 700; /* rows are written several times within the group */
    snprintf(bs->a, sizeof bs->a, "id=%d", id);
    snprintf(bs->b, sizeof bs->b, "v=%d", bs->i);
    const char *ks[] = {bs->a}, *cs[] = {bs->a, bs->b};
    tu_fields_set(&bs->k, 1, ks);
    tu_fields_set(&bs->c, 2, cs);
    bs->op = tu_op(bs->i % 3 == 2 ? SA_OP_UPDATE : SA_OP_INSERT, T, &bs->k, &bs->c, (uint64_t)bs->i);
    bs->i++;
    *op = &bs->op;
    return 0;
}

static void test_store_large_group_in_chunks(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("large");
    sa_store_options o;
    sa_store_options_init(&o);
    o.large_chunk_bytes = 16 << 10; /* many chunks */
    sa_store *s = NULL;
    sa_err err;
    assert_int_equal(sa_store_open(dir, &o, &s, &err), 0);
    put_row(s, 5000, "before");

    /* a source that fails half-way: nothing of the group is visible */
    big_src bs = {.n = 20000, .fail_at = 9000};
    assert_int_equal(sa_wal_append_source(s, big_next, &bs, NULL, NULL, &err), SA_EIO);
    assert_non_null(strstr(err.msg, "source failed"));
    sa_wal_info wi;
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.last_seq, 1);
    char buf[64];
    assert_string_equal(row_v(s, 3, buf, sizeof buf), "<none>");

    /* the whole group, with a cursor ack committed with it */
    sa_batch *extra;
    sa_batch_new(&extra, &err);
    sa_batch_cursor_ack(extra, "ingest", 77, &err);
    memset(&bs, 0, sizeof bs);
    bs.n = 20000;
    bs.fail_at = -1;
    sa_commit_result r;
    assert_int_equal(sa_wal_append_source(s, big_next, &bs, extra, &r, &err), 0);
    assert_int_equal(r.first_seq, 2);
    assert_int_equal(r.last_seq, 20001);
    assert_int_equal(r.durable_seq, 20001);
    sa_cursor c;
    assert_int_equal(sa_cursor_get(s, "ingest", &c, &err), 0);
    assert_int_equal(c.acked, 77);

    /* one group: a single group end, at the last record */
    collect *cl = calloc(1, sizeof *cl);
    uint64_t next;
    assert_int_equal(sa_wal_read(s, 2, 4000, 0, 1, NULL, NULL, &next, &err), 0);
    assert_int_equal(next, 20002); /* whole_groups: the group is never split */
    assert_int_equal(sa_wal_read(s, 19990, 0, 0, 0, collect_cb, cl, &next, &err), 0);
    assert_int_equal(cl->n, 12);
    for (size_t i = 0; i < cl->n; i++)
        assert_int_equal(cl->ends[i], cl->seqs[i] == 20001);
    free(cl);

    /* state: row id holds the last op that wrote it; the snapshot is at the end */
    assert_string_equal(row_v(s, 699, buf, sizeof buf), "19599");
    assert_string_equal(row_v(s, 5000, buf, sizeof buf), "before");
    sa_snapshot *sn;
    assert_int_equal(sa_snapshot_open(s, &sn, &err), 0);
    assert_int_equal(sa_snapshot_seq(sn), 20001);
    sa_state_iter *it;
    const sa_row *row;
    int n = 0;
    assert_int_equal(sa_state_iter_open(sn, T, &it, &err), 0);
    while (sa_state_iter_next(it, &row, &err) == 1)
        n++;
    assert_int_equal(n, 701);
    sa_state_iter_close(it);
    sa_snapshot_close(sn);

    /* ordinary commits carry on after it */
    put_row(s, 1, "after");
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.last_seq, 20002);
    assert_true(sa_batch_empty(extra));
    sa_batch_free(extra);
    sa_store_close(s);
    s = tu_open(dir, SA_DUR_SYNC);
    assert_string_equal(row_v(s, 1, buf, sizeof buf), "after");
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

/* --- deferred commits ------------------------------------------------ */

static void test_store_deferred_commit_unreadable_until_synced(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("deferred");
    sa_store *s = tu_open(dir, SA_DUR_GROUP);
    sa_batch *b;
    sa_err err;
    sa_batch_new(&b, &err);
    /* a group built op by op; a commit with the group open is refused */
    tu_fields k[3], c[3];
    char a[3][16], v[3][16];
    for (int i = 0; i < 3; i++) {
        snprintf(a[i], 16, "id=%d", i);
        snprintf(v[i], 16, "v=d%d", i);
        const char *ks[] = {a[i]}, *cs[] = {a[i], v[i]};
        tu_fields_set(&k[i], 1, ks);
        tu_fields_set(&c[i], 2, cs);
        sa_op op = tu_op(SA_OP_INSERT, T, &k[i], &c[i], 1);
        assert_int_equal(sa_batch_wal_add(b, &op, &err), 0);
        if (i == 1)
            assert_int_equal(sa_store_commit(s, b, NULL, &err), SA_EINVAL);
    }
    assert_int_equal(sa_batch_wal_end_group(b, &err), 0);
    assert_int_equal(sa_batch_wal_end_group(b, &err), SA_EINVAL);
    sa_commit_result r;
    assert_int_equal(sa_store_commit_deferred(s, b, &r, &err), 0);
    assert_int_equal(r.last_seq, 3);
    assert_int_equal(r.durable_seq, 0);
    sa_wal_info wi;
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.last_seq, 3);
    assert_int_equal(wi.durable_seq, 0);
    /* not readable from the WAL before it is durable */
    collect *cl = calloc(1, sizeof *cl);
    uint64_t next;
    assert_int_equal(sa_wal_read(s, 1, 0, 0, 0, collect_cb, cl, &next, &err), 0);
    assert_int_equal(cl->n, 0);
    uint64_t durable;
    assert_int_equal(sa_store_sync(s, &durable, &err), 0);
    assert_int_equal(durable, 3);
    assert_int_equal(sa_wal_read(s, 1, 0, 0, 0, collect_cb, cl, &next, &err), 0);
    assert_int_equal(cl->n, 3);
    assert_true(cl->ends[2] && !cl->ends[1] && !cl->ends[0]);
    /* a later synced commit makes earlier deferred ones durable too */
    put_row(s, 7, "x"); /* an ordinary, synced commit */
    sa_batch_wal_append(b, &(sa_op){.origin = "pg", .kind = SA_OP_TRUNCATE, .table = "public.z"}, 1, &err);
    assert_int_equal(sa_store_commit_deferred(s, b, &r, &err), 0);
    assert_int_equal(r.last_seq, 5);
    put_row(s, 8, "y");
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.durable_seq, 6);
    /* a snapshot syncs first: it holds durable state only */
    sa_batch_wal_append(b, &(sa_op){.origin = "pg", .kind = SA_OP_TRUNCATE, .table = "public.z"}, 1, &err);
    assert_int_equal(sa_store_commit_deferred(s, b, &r, &err), 0);
    sa_snapshot *sn;
    assert_int_equal(sa_snapshot_open(s, &sn, &err), 0);
    assert_int_equal(sa_snapshot_seq(sn), 7);
    sa_snapshot_close(sn);
    sa_wal_info_get(s, &wi, NULL);
    assert_int_equal(wi.durable_seq, 7);
    free(cl);
    sa_batch_free(b);
    sa_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void test_store_durability_names(void **state)
{
    (void)state;
    sa_durability d;
    sa_err err;
    assert_int_equal(sa_durability_parse("group", &d, &err), 0);
    assert_int_equal(d, SA_DUR_GROUP);
    assert_string_equal(sa_durability_name(SA_DUR_NONE_UNSAFE), "none-unsafe");
    assert_int_equal(sa_durability_parse("fast", &d, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "\"fast\""));
    assert_string_equal(sa_err_name(SA_EIO), "SA_EIO");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_open_creates_and_reopens),
        cmocka_unit_test(test_store_refuses_foreign_directories),
        cmocka_unit_test(test_store_second_open_is_busy),
        cmocka_unit_test(test_store_wal_groups_dense_and_bounded_reads),
        cmocka_unit_test(test_store_wal_truncate),
        cmocka_unit_test(test_store_recovery_drops_unacknowledged_records),
        cmocka_unit_test(test_store_state_follows_ops),
        cmocka_unit_test(test_store_rejects_bad_ops_without_effect),
        cmocka_unit_test(test_store_snapshot_consistent_during_appends),
        cmocka_unit_test(test_store_cursor_monotonic),
        cmocka_unit_test(test_store_inbox_idempotent_queue),
        cmocka_unit_test(test_store_group_commit_coalesces),
        cmocka_unit_test(test_store_checkpoint_is_a_usable_copy),
        cmocka_unit_test(test_store_commit_out_of_memory_is_clean),
        cmocka_unit_test(test_store_large_group_in_chunks),
        cmocka_unit_test(test_store_deferred_commit_unreadable_until_synced),
        cmocka_unit_test(test_store_durability_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
