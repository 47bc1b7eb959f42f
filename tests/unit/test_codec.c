/*
 * test_codec.c — the op codec: binary round trips and hostile input,
 * out-of-memory at every allocation, and the JSON wire mapping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "sa/sa_alloc.h"
#include "sa/sa_op.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state;

static void rng_seed(uint64_t s) { rng_state = s ? s : 0x9e3779b97f4a7c15ull; }

static uint64_t rng(void) /* xorshift64*: fixed seed, reproducible runs */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t rng_below(uint32_t n) { return (uint32_t)(rng() % n); }

#define TEXT(s) {.kind = SA_VAL_TEXT, .type_oid = SA_OID_TEXT, .len = sizeof(s) - 1, .data = (s)}
#define TYPED(oid, s) {.kind = SA_VAL_TEXT, .type_oid = (oid), .len = sizeof(s) - 1, .data = (s)}
#define NULLV(oid) {.kind = SA_VAL_NULL, .type_oid = (oid)}
#define UNCH(oid) {.kind = SA_VAL_UNCHANGED, .type_oid = (oid)}

static const sa_field k_id[] = {{"id", TYPED(SA_OID_INT4, "42")}};
static const sa_field k_id_name[] = {{"id", TYPED(SA_OID_INT4, "42")}, {"name", TEXT("a b")}};
static const sa_field c_mixed[] = {
    {"id", TYPED(SA_OID_INT4, "42")},
    {"nothing", NULLV(SA_OID_TEXT)},
    {"empty", TEXT("")},
    {"nul", {.kind = SA_VAL_TEXT, .type_oid = SA_OID_BYTEA, .len = 5, .data = "a\0b\0c"}},
    {"big", UNCH(SA_OID_TEXT)},
    {"price", TYPED(SA_OID_NUMERIC, "12.50")},
};
static const sa_field b_old[] = {{"price", TYPED(SA_OID_NUMERIC, "10.00")}, {"nothing", TEXT("x")}};

static sa_op base_op(sa_op_kind kind)
{
    sa_op op = {
        .origin = "edge-1",
        .epoch = 7,
        .seq = 1000,
        .hlc = (UINT64_C(1700000000000) << 16) | 3,
        .kind = kind,
        .table = "public.items",
    };
    return op;
}

/* A set of valid ops covering every op kind, flag and value kind. */
static int sample_ops(sa_op *ops)
{
    int n = 0;
    sa_op o = base_op(SA_OP_INSERT);
    o.cols = k_id_name;
    o.ncols = 2;
    ops[n++] = o;

    o = base_op(SA_OP_UPDATE);
    o.key = k_id;
    o.nkey = 1;
    o.cols = c_mixed;
    o.ncols = 6;
    ops[n++] = o;

    o.flags = SA_OP_HAS_BASE;
    o.base = b_old;
    o.nbase = 2;
    ops[n++] = o;

    o.flags = SA_OP_HAS_BASE | SA_OP_HAS_PG;
    o.origin = "pg";
    o.epoch = 0;
    o.pg_lsn = UINT64_C(0x16B3748) | (UINT64_C(0xA) << 32);
    o.pg_xid = UINT32_MAX;
    o.pg_commit_time = -5;
    ops[n++] = o;

    o = base_op(SA_OP_DELETE);
    o.key = k_id_name;
    o.nkey = 2;
    o.flags = SA_OP_HAS_BASE;
    o.base = b_old;
    o.nbase = 2;
    ops[n++] = o;

    o = base_op(SA_OP_TRUNCATE);
    o.flags = SA_OP_HAS_PG;
    o.pg_lsn = 1;
    o.pg_xid = 2;
    o.pg_commit_time = INT64_MAX;
    o.seq = UINT64_MAX; /* binary holds every u64 */
    o.hlc = UINT64_MAX;
    ops[n++] = o;
    return n;
}

static void encode_ok(const sa_op *op, sa_buf *b)
{
    sa_err err = {0};
    int rc = sa_op_encode(op, b, &err);
    if (rc != 0)
        fail_msg("encode: %s", err.msg);
}

/* decode, compare, re-encode byte for byte. */
static void check_roundtrip(const sa_op *op)
{
    sa_buf b1 = {0}, b2 = {0};
    sa_op *d = NULL;
    sa_err err = {0};
    encode_ok(op, &b1);
    assert_int_equal(b1.data[0], SA_OP_CODEC_VERSION);
    int rc = sa_op_decode(b1.data, b1.len, &d, &err);
    if (rc != 0)
        fail_msg("decode: %s", err.msg);
    assert_true(sa_op_equal(op, d));
    assert_true(sa_op_equal(d, op));
    encode_ok(d, &b2);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    sa_op_free(d);
    sa_buf_free(&b1);
    sa_buf_free(&b2);
}

static int has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

#define assert_msg_has(err, s)                                                           \
    do {                                                                                 \
        if (!has((err).msg, (s)))                                                        \
            fail_msg("message \"%s\" does not contain \"%s\"", (err).msg, (s));          \
    } while (0)

/* ---- kinds and equality -------------------------------------------------- */

static void test_codec_kind_names(void **state)
{
    (void)state;
    sa_op_kind k;
    for (int i = SA_OP_INSERT; i <= SA_OP_TRUNCATE; i++) {
        assert_int_equal(sa_op_kind_parse(sa_op_kind_name((sa_op_kind)i), &k), 0);
        assert_int_equal(k, i);
    }
    assert_string_equal(sa_op_kind_name(SA_OP_TRUNCATE), "truncate");
    assert_null(sa_op_kind_name((sa_op_kind)0));
    assert_null(sa_op_kind_name((sa_op_kind)5));
    assert_int_equal(sa_op_kind_parse("upsert", &k), SA_EINVAL);
    assert_int_equal(sa_op_kind_parse("INSERT", &k), SA_EINVAL);
}

static void test_codec_equal(void **state)
{
    (void)state;
    sa_op ops[8];
    sample_ops(ops);
    sa_op a = ops[3]; /* update with base and pg */
    sa_op b = a;
    assert_true(sa_op_equal(&a, &b));
    /* column order does not matter */
    sa_field rev[6];
    for (int i = 0; i < 6; i++)
        rev[i] = c_mixed[5 - i];
    b.cols = rev;
    assert_true(sa_op_equal(&a, &b));
    /* NULL, UNCHANGED and "" are three different values */
    rev[3].val = (sa_value)NULLV(SA_OID_TEXT); /* was "" */
    assert_false(sa_op_equal(&a, &b));
    rev[3].val = (sa_value)UNCH(SA_OID_TEXT);
    assert_false(sa_op_equal(&a, &b));
    rev[3].val = (sa_value)TEXT("");
    assert_true(sa_op_equal(&a, &b));
    rev[0].val.len = 4; /* price "12.5" */
    assert_false(sa_op_equal(&a, &b));
    b = a;
    b.pg_xid = 1;
    assert_false(sa_op_equal(&a, &b));
    b = a;
    b.hlc++;
    assert_false(sa_op_equal(&a, &b));
    b = a;
    b.table = "public.other";
    assert_false(sa_op_equal(&a, &b));
    b = a;
    b.nbase = 1;
    assert_false(sa_op_equal(&a, &b));
}

/* ---- binary round trips -------------------------------------------------- */

static void test_codec_roundtrip_samples(void **state)
{
    (void)state;
    sa_op ops[8];
    int n = sample_ops(ops);
    for (int i = 0; i < n; i++)
        check_roundtrip(&ops[i]);
}

static void test_codec_roundtrip_value_kinds(void **state)
{
    (void)state;
    sa_op ops[8];
    sample_ops(ops);
    sa_op op = ops[1]; /* update: NULL, "", NULs, UNCHANGED */
    sa_buf b = {0};
    sa_op *d = NULL;
    encode_ok(&op, &b);
    assert_int_equal(sa_op_decode(b.data, b.len, &d, NULL), 0);
    assert_int_equal(d->ncols, 6);
    assert_int_equal(d->cols[1].val.kind, SA_VAL_NULL);
    assert_int_equal(d->cols[2].val.kind, SA_VAL_TEXT);
    assert_int_equal(d->cols[2].val.len, 0);
    assert_non_null(d->cols[2].val.data);
    assert_int_equal(d->cols[2].val.data[0], '\0');
    assert_int_equal(d->cols[3].val.len, 5);
    assert_memory_equal(d->cols[3].val.data, "a\0b\0c", 6); /* and a trailing NUL */
    assert_int_equal(d->cols[3].val.type_oid, SA_OID_BYTEA);
    assert_int_equal(d->cols[4].val.kind, SA_VAL_UNCHANGED);
    assert_string_equal(d->cols[5].name, "price");
    assert_string_equal(d->origin, "edge-1");
    assert_string_equal(d->table, "public.items");
    assert_int_equal(d->flags, 0);
    assert_int_equal(d->nbase, 0);
    /* clone gives an equal op in one block too */
    sa_op *c = NULL;
    assert_int_equal(sa_op_clone(d, &c, NULL), 0);
    assert_true(sa_op_equal(c, &op));
    assert_ptr_not_equal(c->cols[3].val.data, d->cols[3].val.data);
    sa_op_free(c);
    sa_op_free(d);
    sa_op_free(NULL);
    sa_buf_free(&b);
}

static void test_codec_roundtrip_large(void **state)
{
    (void)state;
    size_t big = 1u << 20;
    char *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)(i * 7);
    sa_field *f = calloc(SA_OP_MAX_FIELDS, sizeof *f);
    char(*names)[16] = calloc(SA_OP_MAX_FIELDS, sizeof *names);
    assert_non_null(f);
    assert_non_null(names);
    for (unsigned i = 0; i < SA_OP_MAX_FIELDS; i++) {
        snprintf(names[i], sizeof names[i], "c%u", i);
        f[i].name = names[i];
        f[i].val = (sa_value){.kind = (sa_val_kind)(i % 2), .type_oid = i, .len = i % 2 ? 3 : 0,
                              .data = i % 2 ? "abc" : NULL};
    }
    f[5].val = (sa_value){.kind = SA_VAL_TEXT, .type_oid = SA_OID_BYTEA, .len = (uint32_t)big,
                          .data = data};
    sa_op op = base_op(SA_OP_INSERT);
    op.cols = f;
    op.ncols = SA_OP_MAX_FIELDS;
    check_roundtrip(&op);

    /* one field too many is refused on both sides */
    sa_field *g = calloc(SA_OP_MAX_FIELDS + 1, sizeof *g);
    assert_non_null(g);
    memcpy(g, f, SA_OP_MAX_FIELDS * sizeof *f);
    g[SA_OP_MAX_FIELDS] = (sa_field){"extra", TEXT("x")};
    op.cols = g;
    op.ncols = SA_OP_MAX_FIELDS + 1;
    sa_buf b = {0};
    sa_err err = {0};
    assert_int_equal(sa_op_encode(&op, &b, &err), SA_ETOOBIG);
    assert_msg_has(err, "cols");
    assert_int_equal(b.len, 0);
    /* craft it anyway: a field list with count MAX+1 */
    assert_int_equal(sa_buf_put_varint(&b, SA_OP_MAX_FIELDS + 1), 0);
    sa_rd rd;
    sa_rd_init(&rd, b.data, b.len);
    sa_field *out = NULL;
    uint32_t n = 0;
    assert_int_equal(sa_fields_decode(&rd, &out, &n, &err), SA_ETOOBIG);
    assert_null(out);
    sa_buf_free(&b);
    free(g);
    free(names);
    free(f);
    free(data);
}

static void test_codec_fields_roundtrip(void **state)
{
    (void)state;
    sa_buf b = {0};
    sa_err err = {0};
    assert_int_equal(sa_fields_encode(c_mixed, 6, &b, &err), 0);
    size_t one = b.len;
    assert_int_equal(sa_fields_encode(NULL, 0, &b, &err), 0);
    assert_int_equal(b.len, one + 1);
    assert_int_equal(sa_buf_put_u8(&b, 0xee), 0);

    sa_rd rd;
    sa_rd_init(&rd, b.data, b.len);
    sa_field *f = NULL;
    uint32_t n = 0;
    assert_int_equal(sa_fields_decode(&rd, &f, &n, &err), 0);
    assert_int_equal(n, 6);
    assert_int_equal(rd.left, b.len - one);
    for (uint32_t i = 0; i < n; i++) {
        assert_string_equal(f[i].name, c_mixed[i].name);
        assert_int_equal(f[i].val.kind, c_mixed[i].val.kind);
        assert_int_equal(f[i].val.type_oid, c_mixed[i].val.type_oid);
        if (f[i].val.kind == SA_VAL_TEXT) {
            assert_int_equal(f[i].val.len, c_mixed[i].val.len);
            assert_memory_equal(f[i].val.data, c_mixed[i].val.data, f[i].val.len);
            assert_int_equal(f[i].val.data[f[i].val.len], '\0');
        }
    }
    sa_free(f);
    assert_int_equal(sa_fields_decode(&rd, &f, &n, &err), 0);
    assert_int_equal(n, 0);
    sa_free(f);
    assert_int_equal(rd.left, 1);

    /* deterministic: same list, same bytes */
    sa_buf c = {0};
    assert_int_equal(sa_fields_encode(c_mixed, 6, &c, &err), 0);
    assert_int_equal(c.len, one);
    assert_memory_equal(c.data, b.data, one);

    /* truncation leaves the reader where it was */
    sa_rd_init(&rd, b.data, one - 1);
    assert_int_equal(sa_fields_decode(&rd, &f, &n, &err), SA_ETRUNCATED);
    assert_int_equal(rd.left, one - 1);

    /* duplicates are refused on both sides */
    sa_field dup[] = {{"a", TEXT("1")}, {"a", TEXT("2")}};
    size_t keep = c.len;
    assert_int_equal(sa_fields_encode(dup, 2, &c, &err), SA_EINVAL);
    assert_msg_has(err, "\"a\"");
    assert_int_equal(c.len, keep);
    sa_buf_reset(&c);
    assert_int_equal(sa_buf_put_varint(&c, 2), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sa_buf_put_str(&c, "a"), 0);
        assert_int_equal(sa_buf_put_u8(&c, SA_VAL_NULL), 0);
        assert_int_equal(sa_buf_put_varint(&c, 25), 0);
    }
    sa_rd_init(&rd, c.data, c.len);
    assert_int_equal(sa_fields_decode(&rd, &f, &n, &err), SA_ECORRUPT);
    assert_msg_has(err, "duplicate");
    sa_buf_free(&c);
    sa_buf_free(&b);
}

/* Random valid ops (printable text so the same ops serve the JSON tests). */
typedef struct rop {
    sa_op op;
    sa_field f[3][12];
    char names[3][12][8];
    char vals[3][12][40];
} rop;

static void random_op(rop *r)
{
    memset(r, 0, sizeof *r);
    static const uint32_t oids[] = {SA_OID_TEXT, SA_OID_INT4, SA_OID_NUMERIC, 0, 1043};
    sa_op *op = &r->op;
    op->origin = rng_below(2) ? "pg" : "edge-x";
    op->epoch = rng() >> 1;
    op->seq = rng() >> rng_below(64) >> 1;
    op->hlc = rng() >> 1;
    op->kind = (sa_op_kind)(1 + rng_below(4));
    op->table = "s.t";
    op->flags = rng_below(4);
    if (op->flags & SA_OP_HAS_PG) {
        op->pg_lsn = rng();
        op->pg_xid = (uint32_t)rng();
        op->pg_commit_time = (int64_t)rng();
    }
    uint32_t *counts[3] = {&op->nkey, &op->ncols, &op->nbase};
    for (int s = 0; s < 3; s++) {
        uint32_t n = rng_below(12);
        if (op->kind == SA_OP_TRUNCATE || (s == 2 && !(op->flags & SA_OP_HAS_BASE)))
            n = 0;
        if (n == 0 && op->kind != SA_OP_TRUNCATE &&
            ((s == 0 && op->kind != SA_OP_INSERT) || (s == 1 && op->kind == SA_OP_INSERT)))
            n = 1;
        for (uint32_t i = 0; i < n; i++) {
            sa_field *f = &r->f[s][i];
            snprintf(r->names[s][i], 8, "c%u", i % 100); /* same name, same oid in every list */
            f->name = r->names[s][i];
            f->val.type_oid = oids[i % 5];
            uint32_t k = rng_below(4);
            if (k == 0) {
                f->val.kind = SA_VAL_NULL;
            } else if (k == 1 && s == 1 && op->kind == SA_OP_UPDATE) {
                f->val.kind = SA_VAL_UNCHANGED;
            } else {
                uint32_t len = rng_below(40);
                for (uint32_t j = 0; j < len; j++)
                    r->vals[s][i][j] = (char)(' ' + rng_below(95));
                f->val = (sa_value){SA_VAL_TEXT, f->val.type_oid, len, r->vals[s][i]};
            }
        }
        *counts[s] = n;
    }
    op->key = r->f[0];
    op->cols = r->f[1];
    op->base = r->f[2];
}

static void test_codec_roundtrip_random(void **state)
{
    (void)state;
    rop *r = malloc(sizeof *r);
    assert_non_null(r);
    rng_seed(42);
    for (int i = 0; i < 2000; i++) {
        random_op(r);
        sa_err err = {0};
        if (sa_op_validate(&r->op, &err) != 0)
            fail_msg("random op %d invalid: %s", i, err.msg);
        check_roundtrip(&r->op);
    }
    free(r);
}

/* ---- hostile input ------------------------------------------------------- */

static int clean_code(int rc)
{
    return rc == SA_ETRUNCATED || rc == SA_ETOOBIG || rc == SA_ECORRUPT || rc == SA_EVERSION;
}

/* Decode anything: a clean error, or a valid op whose encoding is the input
 * (the format has exactly one encoding per op). */
static void decode_any(const uint8_t *p, size_t n)
{
    sa_op *sentinel = (sa_op *)(uintptr_t)0x1234, *d = sentinel;
    sa_err err = {0};
    int rc = sa_op_decode(p, n, &d, &err);
    if (rc != 0) {
        if (!clean_code(rc))
            fail_msg("decode returned %d (%s)", rc, err.msg);
        assert_int_equal(err.code, rc);
        assert_true(err.msg[0] != '\0');
        assert_ptr_equal(d, sentinel);
        return;
    }
    sa_buf b = {0};
    assert_int_equal(sa_op_validate(d, NULL), 0);
    encode_ok(d, &b);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, p, n);
    sa_buf_free(&b);
    sa_op_free(d);
}

static void test_codec_truncations(void **state)
{
    (void)state;
    sa_op ops[8];
    int n = sample_ops(ops);
    for (int i = 0; i < n; i++) {
        sa_buf b = {0};
        encode_ok(&ops[i], &b);
        for (size_t len = 0; len < b.len; len++) {
            /* a copy of exactly `len` bytes, so ASan sees any over-read */
            uint8_t *p = malloc(len ? len : 1);
            assert_non_null(p);
            memcpy(p, b.data, len);
            sa_op *d = NULL;
            sa_err err = {0};
            assert_int_equal(sa_op_decode(p, len, &d, &err), SA_ETRUNCATED);
            assert_true(err.msg[0] != '\0');
            assert_null(d);
            free(p);
        }
        sa_buf_free(&b);
    }
}

static void test_codec_corruptions(void **state)
{
    (void)state;
    sa_op ops[8];
    int n = sample_ops(ops);
    rng_seed(7);
    for (int i = 0; i < n; i++) {
        sa_buf b = {0};
        encode_ok(&ops[i], &b);
        uint8_t *p = malloc(b.len);
        assert_non_null(p);
        for (int k = 0; k < 2000; k++) {
            memcpy(p, b.data, b.len);
            size_t at = rng_below((uint32_t)b.len);
            p[at] = (uint8_t)(k < 256 ? p[at] ^ (1u << (k % 8)) : rng());
            decode_any(p, b.len);
        }
        free(p);
        sa_buf_free(&b);
    }
}

static void test_codec_random_buffers(void **state)
{
    (void)state;
    rng_seed(1);
    uint8_t buf[96];
    for (int k = 0; k < 20000; k++) {
        size_t len = rng_below(sizeof buf + 1);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng();
        /* half of them get a plausible header so the fields get exercised */
        if (k % 2 && len >= 3) {
            buf[0] = SA_OP_CODEC_VERSION;
            buf[1] = (uint8_t)(1 + rng_below(4));
            buf[2] = (uint8_t)rng_below(4);
            for (size_t i = 3; i < len; i++)
                if (rng_below(2))
                    buf[i] &= 0x07; /* small lengths and counts */
        }
        uint8_t *p = malloc(len ? len : 1);
        assert_non_null(p);
        memcpy(p, buf, len);
        decode_any(p, len);
        free(p);
    }
}

static void test_codec_version_refused(void **state)
{
    (void)state;
    sa_op ops[8];
    sample_ops(ops);
    sa_op op = ops[0];
    sa_buf b = {0};
    encode_ok(&op, &b);
    const uint8_t bad[] = {0, 2, 255};
    for (size_t i = 0; i < sizeof bad; i++) {
        char want[32];
        sa_err err = {0};
        sa_op *d = NULL;
        b.data[0] = bad[i];
        assert_int_equal(sa_op_decode(b.data, b.len, &d, &err), SA_EVERSION);
        snprintf(want, sizeof want, "version %u ", bad[i]);
        assert_msg_has(err, want);
        snprintf(want, sizeof want, "%d to %d", SA_OP_CODEC_MIN, SA_OP_CODEC_MAX);
        assert_msg_has(err, want);
        assert_null(d);
    }
    sa_buf_free(&b);
}

static void expect_decode(const sa_buf *b, int code, const char *needle)
{
    sa_err err = {0};
    sa_op *d = NULL;
    int rc = sa_op_decode(b->data, b->len, &d, &err);
    if (rc != code)
        fail_msg("decode gave %d (%s), want %d", rc, err.msg, code);
    if (code == 0) {
        sa_op_free(d);
        return;
    }
    if (needle)
        assert_msg_has(err, needle);
    assert_null(d);
}

static void test_codec_header_rejects(void **state)
{
    (void)state;
    sa_op ops[8];
    sample_ops(ops);
    sa_op op = ops[0]; /* insert */
    sa_buf b = {0};
    encode_ok(&op, &b);

    for (unsigned bit = 2; bit < 8; bit++) {
        b.data[2] = (uint8_t)(1u << bit);
        expect_decode(&b, SA_ECORRUPT, "reserved flag");
    }
    b.data[2] = 0;
    b.data[1] = 0;
    expect_decode(&b, SA_ECORRUPT, "op kind 0");
    b.data[1] = 5;
    expect_decode(&b, SA_ECORRUPT, "op kind 5");
    b.data[1] = SA_OP_INSERT;

    assert_int_equal(sa_buf_put_u8(&b, 0), 0);
    expect_decode(&b, SA_ECORRUPT, "trailing");
    b.len--;
    expect_decode(&b, 0, NULL);

    sa_buf e = {0};
    sa_op *d = NULL;
    assert_int_equal(sa_op_decode("", 0, &d, NULL), SA_ETRUNCATED);
    assert_int_equal(sa_op_decode(b.data, (size_t)SA_OP_MAX_ENCODED + 1, &d, NULL),
                     SA_ETOOBIG); /* refused on length alone, nothing read */
    sa_buf_free(&e);
    sa_buf_free(&b);
}

/* Hand-built encodings: header, then a caller-supplied tail. */
static void put_head(sa_buf *b, uint8_t kind, const char *origin)
{
    assert_int_equal(sa_buf_put_u8(b, SA_OP_CODEC_VERSION), 0);
    assert_int_equal(sa_buf_put_u8(b, kind), 0);
    assert_int_equal(sa_buf_put_u8(b, 0), 0);
    if (origin != NULL) {
        assert_int_equal(sa_buf_put_str(b, origin), 0);
        assert_int_equal(sa_buf_put_varint(b, 1), 0);
        assert_int_equal(sa_buf_put_varint(b, 2), 0);
        assert_int_equal(sa_buf_put_u64be(b, 3), 0);
        assert_int_equal(sa_buf_put_str(b, "t"), 0);
    }
}

static void test_codec_length_rejects(void **state)
{
    (void)state;
    sa_buf b = {0};

    /* a name length of 2^40: refused by its limit before anything else */
    put_head(&b, SA_OP_INSERT, NULL);
    assert_int_equal(sa_buf_put_varint(&b, UINT64_C(1) << 40), 0);
    expect_decode(&b, SA_ETOOBIG, "origin");

    /* a name within the limit but longer than the input */
    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, NULL);
    assert_int_equal(sa_buf_put_varint(&b, SA_OP_MAX_NAME), 0);
    assert_int_equal(sa_buf_put(&b, "abc", 3), 0);
    expect_decode(&b, SA_ETRUNCATED, "origin");

    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, NULL);
    assert_int_equal(sa_buf_put_varint(&b, SA_OP_MAX_NAME + 1), 0);
    expect_decode(&b, SA_ETOOBIG, "origin");

    /* empty origin, NUL inside a name */
    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, "");
    expect_decode(&b, SA_ECORRUPT, "origin");
    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, NULL);
    assert_int_equal(sa_buf_put_bytes(&b, "a\0b", 3), 0);
    expect_decode(&b, SA_ECORRUPT, "origin");

    /* a non-minimal varint (0 as 0x80 0x00) */
    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, NULL);
    assert_int_equal(sa_buf_put(&b, "\x80\x00", 2), 0);
    expect_decode(&b, SA_ECORRUPT, "non-minimal");

    /* key count beyond the limit, value kind unknown, oid beyond u32,
     * value length beyond SA_OP_MAX_VALUE */
    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, "o");
    assert_int_equal(sa_buf_put_varint(&b, SA_OP_MAX_FIELDS + 1), 0);
    expect_decode(&b, SA_ETOOBIG, "key count");

    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, "o");
    assert_int_equal(sa_buf_put_varint(&b, 1), 0);
    assert_int_equal(sa_buf_put_str(&b, "c"), 0);
    assert_int_equal(sa_buf_put_u8(&b, 3), 0);
    expect_decode(&b, SA_ECORRUPT, "value kind 3");

    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, "o");
    assert_int_equal(sa_buf_put_varint(&b, 1), 0);
    assert_int_equal(sa_buf_put_str(&b, "c"), 0);
    assert_int_equal(sa_buf_put_u8(&b, SA_VAL_NULL), 0);
    assert_int_equal(sa_buf_put_varint(&b, UINT64_C(1) << 32), 0);
    expect_decode(&b, SA_ECORRUPT, "type oid");

    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, "o");
    assert_int_equal(sa_buf_put_varint(&b, 0), 0); /* key */
    assert_int_equal(sa_buf_put_varint(&b, 1), 0); /* cols */
    assert_int_equal(sa_buf_put_str(&b, "c"), 0);
    assert_int_equal(sa_buf_put_u8(&b, SA_VAL_TEXT), 0);
    assert_int_equal(sa_buf_put_varint(&b, 25), 0);
    size_t mark = b.len;
    assert_int_equal(sa_buf_put_varint(&b, (uint64_t)SA_OP_MAX_VALUE + 1), 0);
    expect_decode(&b, SA_ETOOBIG, "cols[0] value");
    b.len = mark;
    assert_int_equal(sa_buf_put_varint(&b, UINT64_MAX), 0);
    expect_decode(&b, SA_ETOOBIG, "cols[0] value");
    b.len = mark;
    assert_int_equal(sa_buf_put_varint(&b, 5), 0);
    assert_int_equal(sa_buf_put(&b, "hello", 5), 0);
    expect_decode(&b, 0, NULL); /* the same bytes, well formed, decode */

    /* well formed but semantically invalid: an insert without cols */
    sa_buf_reset(&b);
    put_head(&b, SA_OP_INSERT, "o");
    assert_int_equal(sa_buf_put(&b, "\0\0", 2), 0);
    expect_decode(&b, SA_ECORRUPT, "cols");
    sa_buf_free(&b);
}

/* ---- validation ---------------------------------------------------------- */

static void test_codec_validate_rejects(void **state)
{
    (void)state;
    static const sa_field dup[] = {{"a", TEXT("1")}, {"a", TEXT("2")}};
    static const sa_field empty_name[] = {{"", TEXT("1")}};
    static const sa_field null_name[] = {{NULL, TEXT("1")}};
    static const sa_field unch[] = {{"id", UNCH(SA_OID_INT4)}};
    static const sa_field other_oid[] = {{"id", TYPED(SA_OID_INT8, "42")}};
    static const sa_field bad_kind[] = {{"a", {.kind = (sa_val_kind)9}}};
    static const sa_field no_data[] = {{"a", {.kind = SA_VAL_TEXT, .len = 3}}};
    static const sa_field too_big[] = {{"a", {.kind = SA_VAL_TEXT, .len = SA_OP_MAX_VALUE + 1,
                                              .data = ""}}};
    char long_name[SA_OP_MAX_NAME + 2];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';

    struct {
        const char *what;
        int code;
        const char *needle;
        sa_op op;
    } cases[16];
    int n = 0;
    sa_op up = base_op(SA_OP_UPDATE);
    up.key = k_id;
    up.nkey = 1;
    up.cols = k_id_name + 1;
    up.ncols = 1;
    assert_int_equal(sa_op_validate(&up, NULL), 0);

#define CASE(w, c, nd, ...)                                                              \
    do {                                                                                 \
        sa_op o_ = up;                                                                   \
        __VA_ARGS__;                                                                     \
        cases[n].what = (w);                                                             \
        cases[n].code = (c);                                                             \
        cases[n].needle = (nd);                                                          \
        cases[n].op = o_;                                                                \
        n++;                                                                             \
    } while (0)
    CASE("kind", SA_EINVAL, "kind", o_.kind = (sa_op_kind)0);
    CASE("flags", SA_EINVAL, "flags", o_.flags = 0x10);
    CASE("origin", SA_EINVAL, "origin", o_.origin = NULL);
    CASE("origin empty", SA_EINVAL, "origin", o_.origin = "");
    CASE("table long", SA_ETOOBIG, "table", o_.table = long_name);
    CASE("dup", SA_EINVAL, "duplicate column \"a\"", o_.cols = dup; o_.ncols = 2);
    CASE("empty name", SA_EINVAL, "cols[0]", o_.cols = empty_name);
    CASE("null name", SA_EINVAL, "cols[0]", o_.cols = null_name);
    CASE("unchanged key", SA_EINVAL, "key: column \"id\"", o_.key = unch);
    CASE("oid mismatch", SA_EINVAL, "\"id\"", o_.cols = other_oid);
    CASE("val kind", SA_EINVAL, "value kind", o_.cols = bad_kind);
    CASE("no data", SA_EINVAL, "no data", o_.cols = no_data);
    CASE("too big", SA_ETOOBIG, "cols", o_.cols = too_big);
    CASE("base flag", SA_EINVAL, "base", o_.base = k_id; o_.nbase = 1);
    CASE("truncate", SA_EINVAL, "truncate", o_.kind = SA_OP_TRUNCATE);
    CASE("delete key", SA_EINVAL, "key", o_.kind = SA_OP_DELETE; o_.nkey = 0);
#undef CASE
    for (int i = 0; i < n; i++) {
        sa_err err = {0};
        int rc = sa_op_validate(&cases[i].op, &err);
        if (rc != cases[i].code || !has(err.msg, cases[i].needle))
            fail_msg("%s: got %d \"%s\"", cases[i].what, rc, err.msg);
        /* encode refuses it and leaves the buffer alone */
        sa_buf b = {0};
        assert_int_equal(sa_buf_put_u8(&b, 0xaa), 0);
        assert_int_equal(sa_op_encode(&cases[i].op, &b, NULL), cases[i].code);
        assert_int_equal(b.len, 1);
        sa_buf_free(&b);
    }
    sa_op ins = base_op(SA_OP_INSERT);
    sa_err err = {0};
    assert_int_equal(sa_op_validate(&ins, &err), SA_EINVAL);
    assert_msg_has(err, "cols");
    ins.cols = unch;
    ins.ncols = 1;
    assert_int_equal(sa_op_validate(&ins, &err), SA_EINVAL);
    assert_msg_has(err, "unchanged");
    ins = base_op(SA_OP_TRUNCATE);
    ins.pg_xid = 5;
    assert_int_equal(sa_op_validate(&ins, &err), SA_EINVAL);
    assert_msg_has(err, "SA_OP_HAS_PG");
    assert_int_equal(sa_op_validate(NULL, &err), SA_EINVAL);
}

/* ---- out of memory ------------------------------------------------------- */

/* Runs `call` with allocation n failing, n = 0, 1, ... until it succeeds. */
#define OOM_LOOP(call, cleanup)                                                          \
    do {                                                                                 \
        long n_;                                                                         \
        for (n_ = 0; n_ < 10000; n_++) {                                                 \
            sa_err err_ = {0};                                                           \
            sa_err *oom_err = &err_;                                                     \
            sa_alloc_fail_after(n_);                                                     \
            int rc_ = (call);                                                            \
            long failed_ = sa_alloc_failed_count();                                      \
            sa_alloc_fail_reset();                                                       \
            if (rc_ == 0) {                                                              \
                cleanup;                                                                 \
                break;                                                                   \
            }                                                                            \
            if (rc_ != SA_ENOMEM || failed_ == 0)                                        \
                fail_msg("%s at n=%ld: rc %d \"%s\"", #call, n_, rc_, err_.msg);         \
            assert_true(err_.msg[0] != '\0');                                            \
        }                                                                                \
        assert_true(n_ > 0); /* at least one allocation was made to fail */              \
    } while (0)

static void test_codec_oom_binary(void **state)
{
    (void)state;
    sa_op ops[8];
    int nops = sample_ops(ops);
    for (int i = 0; i < nops; i++) {
        sa_buf b = {0}, e = {0};
        sa_op *d = NULL;
        encode_ok(&ops[i], &b);
        OOM_LOOP(sa_op_encode(&ops[i], &e, oom_err), (void)0);
        assert_int_equal(e.len, b.len);
        OOM_LOOP(sa_op_decode(b.data, b.len, &d, oom_err), (void)0);
        assert_true(sa_op_equal(d, &ops[i]));
        sa_op *c = NULL;
        OOM_LOOP(sa_op_clone(d, &c, oom_err), (void)0);
        assert_true(sa_op_equal(c, &ops[i]));
        sa_op_free(c);
        sa_op_free(d);

        sa_buf f = {0};
        OOM_LOOP(sa_fields_encode(ops[i].cols, ops[i].ncols, &f, oom_err), (void)0);
        sa_field *fl = NULL;
        uint32_t nf = 0;
        sa_rd rd;
        OOM_LOOP((sa_rd_init(&rd, f.data, f.len), sa_fields_decode(&rd, &fl, &nf, oom_err)),
                 (void)0);
        assert_int_equal(nf, ops[i].ncols);
        sa_free(fl);
        sa_buf_free(&f);
        sa_buf_free(&b);
        sa_buf_free(&e);
    }
}

static const sa_field j_key[] = {{"id", TYPED(SA_OID_INT8, "-9223372036854775808")}};
static const sa_field j_cols[] = {
    {"flag", TYPED(SA_OID_BOOL, "t")},
    {"off", TYPED(SA_OID_BOOL, "f")},
    {"n2", TYPED(SA_OID_INT2, "-32768")},
    {"n4", TYPED(SA_OID_INT4, "2147483647")},
    {"n8", TYPED(SA_OID_INT8, "9223372036854775807")},
    {"o", TYPED(SA_OID_OID, "4294967295")},
    {"lead0", TYPED(SA_OID_INT4, "007")},
    {"plus", TYPED(SA_OID_INT4, "+5")},
    {"huge", TYPED(SA_OID_INT8, "99999999999999999999")},
    {"nan", TYPED(SA_OID_INT4, "NaN")},
    {"price", TYPED(SA_OID_NUMERIC, "3.14159265358979323846")},
    {"f8", TYPED(SA_OID_FLOAT8, "1e+300")},
    {"ts", TYPED(SA_OID_TIMESTAMPTZ, "2024-01-02 03:04:05.123456+00")},
    {"bin", TYPED(SA_OID_BYTEA, "\\xdeadbeef")},
    {"j", TYPED(SA_OID_JSON, "{\"a\":1,\"b\":[true,null,\"x\"]}")},
    {"jb", TYPED(SA_OID_JSONB, "{\"a\": 1, \"b\": {\"c\": []}}")},
    {"jspace", TYPED(SA_OID_JSON, "{\"a\": 1}")},      /* not compact: raw */
    {"jbig", TYPED(SA_OID_JSONB, "[99999999999999999999]")}, /* beyond int64: raw */
    {"jdec", TYPED(SA_OID_JSONB, "0.1")},               /* decimal digits: raw */
    {"jnull", TYPED(SA_OID_JSONB, "null")},             /* JSON null is not SQL NULL */
    {"jstr", TYPED(SA_OID_JSONB, "\"hi\"")},
    {"jbad", TYPED(SA_OID_JSON, "{oops")},
    {"jdup", TYPED(SA_OID_JSON, "{\"a\":1,\"a\":2}")},
    {"sqlnull", NULLV(SA_OID_JSONB)},
    {"empty", TEXT("")},
    {"nothing", NULLV(SA_OID_TEXT)},
    {"nul", {.kind = SA_VAL_TEXT, .type_oid = SA_OID_TEXT, .len = 3, .data = "a\0b"}},
    {"toast", UNCH(SA_OID_TEXT)},
    {"utf8", TEXT("h\xc3\xa9llo \xe2\x82\xac")},
    {"emoji", TEXT("\xf0\x9f\x98\x80")},
    {"jempty", TYPED(SA_OID_JSONB, "")},
    {"last", TEXT("z")},
};
static const sa_field j_base[] = {{"flag", TYPED(SA_OID_BOOL, "f")},
                                  {"jb", TYPED(SA_OID_JSONB, "{\"a\":1}")}};

static sa_op json_op(void)
{
    sa_op op = base_op(SA_OP_UPDATE);
    op.key = j_key;
    op.nkey = 1;
    op.cols = j_cols;
    op.ncols = sizeof j_cols / sizeof j_cols[0];
    op.flags = SA_OP_HAS_BASE | SA_OP_HAS_PG;
    op.base = j_base;
    op.nbase = 2;
    op.pg_lsn = (UINT64_C(0x16) << 32) | 0xB374D848;
    op.pg_xid = 771;
    op.pg_commit_time = 1700000000123456;
    return op;
}

static json_t *to_json_ok(const sa_op *op)
{
    json_t *j = NULL;
    sa_err err = {0};
    if (sa_op_to_json(op, &j, &err) != 0)
        fail_msg("to_json: %s", err.msg);
    return j;
}

/* Whether jansson's allocations go through the failing allocator.  jansson
 * 2.14's lexer asserts (lex_unget_unsave) when an allocation fails at some
 * points of json_loadb, so sa_op_to_json on json/jsonb values is run with
 * only our own allocations failing; everything else covers jansson too. */
static int jansson_inject = 1;

static void *test_json_malloc(size_t n) { return jansson_inject ? sa_malloc(n) : malloc(n); }

static void oom_to_json(const sa_op *op)
{
    json_t *j = NULL;
    for (long n = 0;; n++) {
        sa_err err = {0};
        sa_alloc_fail_after(n);
        int rc = sa_op_to_json(op, &j, &err);
        long failed = sa_alloc_failed_count();
        sa_alloc_fail_reset();
        if (rc == 0) {
            assert_int_equal(failed, 0);
            break;
        }
        if (rc != SA_ENOMEM || failed == 0)
            fail_msg("to_json at n=%ld: %d %s", n, rc, err.msg);
        assert_true(err.msg[0] != '\0');
        assert_null(j);
    }
    json_t *ref = to_json_ok(op);
    assert_true(json_equal(j, ref));
    json_decref(ref);
    json_decref(j);
}

static void test_codec_oom_json(void **state)
{
    (void)state;
    sa_op ops[8];
    int nops = sample_ops(ops);
    for (int i = 0; i < nops; i++) {
        if (ops[i].seq > INT64_MAX)
            continue;
        oom_to_json(&ops[i]);
    }
    sa_op op = json_op();
    jansson_inject = 0;
    oom_to_json(&op);
    jansson_inject = 1;

    json_t *ref = to_json_ok(&op);
    sa_op *back = NULL;
    OOM_LOOP(sa_op_from_json(ref, &back, oom_err), (void)0);
    assert_true(sa_op_equal(back, &op));
    sa_op_free(back);
    json_decref(ref);
}

/* ---- JSON ---------------------------------------------------------------- */

static void expect_json_member(const json_t *obj, const char *key, const char *compact)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        fail_msg("no member \"%s\"", key);
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    assert_non_null(s);
    if (strcmp(s, compact) != 0)
        fail_msg("member \"%s\" is %s, want %s", key, s, compact);
    sa_free(s); /* jansson allocates through sa_malloc in these tests */
}

static void test_codec_json_mapping(void **state)
{
    (void)state;
    sa_op op = json_op();
    json_t *j = to_json_ok(&op);
    json_t *cols = json_object_get(j, "cols");
    expect_json_member(j, "origin", "\"edge-1\"");
    expect_json_member(j, "kind", "\"update\"");
    expect_json_member(j, "hlc", "111411200000000003");
    expect_json_member(json_object_get(j, "key"), "id", "-9223372036854775808");
    expect_json_member(cols, "flag", "true");
    expect_json_member(cols, "off", "false");
    expect_json_member(cols, "n2", "-32768");
    expect_json_member(cols, "n4", "2147483647");
    expect_json_member(cols, "n8", "9223372036854775807");
    expect_json_member(cols, "o", "4294967295");
    expect_json_member(cols, "lead0", "\"007\"");
    expect_json_member(cols, "plus", "\"+5\"");
    expect_json_member(cols, "huge", "\"99999999999999999999\"");
    expect_json_member(cols, "nan", "\"NaN\"");
    expect_json_member(cols, "price", "\"3.14159265358979323846\"");
    expect_json_member(cols, "ts", "\"2024-01-02 03:04:05.123456+00\"");
    expect_json_member(cols, "bin", "\"\\\\xdeadbeef\"");
    expect_json_member(cols, "j", "{\"a\":1,\"b\":[true,null,\"x\"]}");
    expect_json_member(cols, "jb", "{\"a\":1,\"b\":{\"c\":[]}}");
    expect_json_member(cols, "jspace", "\"{\\\"a\\\": 1}\"");
    expect_json_member(cols, "jbig", "\"[99999999999999999999]\"");
    expect_json_member(cols, "jdec", "\"0.1\"");
    expect_json_member(cols, "jnull", "\"null\"");
    expect_json_member(cols, "jstr", "\"hi\"");
    expect_json_member(cols, "jbad", "\"{oops\"");
    expect_json_member(cols, "sqlnull", "null");
    expect_json_member(cols, "empty", "\"\"");
    expect_json_member(cols, "nothing", "null");
    expect_json_member(cols, "nul", "\"a\\u0000b\"");
    expect_json_member(cols, "jempty", "\"\"");
    assert_null(json_object_get(cols, "toast"));
    expect_json_member(j, "unchanged", "[\"toast\"]");
    expect_json_member(json_object_get(j, "types"), "toast", "25");
    expect_json_member(json_object_get(j, "types"), "jb", "3802");
    expect_json_member(json_object_get(j, "base"), "flag", "false");
    expect_json_member(json_object_get(j, "base"), "jb", "\"{\\\"a\\\":1}\""); /* jsonb style */
    expect_json_member(j, "raw", "{\"cols\":[\"jspace\",\"jbig\",\"jdec\",\"jnull\",\"jbad\","
                                 "\"jdup\",\"jempty\"],\"base\":[\"jb\"]}");
    expect_json_member(j, "pg", "{\"lsn\":\"16/B374D848\",\"xid\":771,"
                                "\"commit_time\":1700000000123456}");

    /* column order is kept */
    const char *key;
    json_t *v;
    size_t i = 0;
    json_object_foreach(cols, key, v) {
        if (strcmp(j_cols[i].name, "toast") == 0)
            i++;
        assert_string_equal(key, j_cols[i].name);
        i++;
    }
    assert_int_equal(i, sizeof j_cols / sizeof j_cols[0]);

    /* and back, through text as on the wire */
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(text);
    json_error_t jerr;
    json_t *j2 = json_loads(text, JSON_ALLOW_NUL, &jerr);
    assert_non_null(j2);
    sa_op *back = NULL;
    sa_err err = {0};
    if (sa_op_from_json(j2, &back, &err) != 0)
        fail_msg("from_json: %s", err.msg);
    assert_true(sa_op_equal(back, &op));
    /* non-UNCHANGED columns come back in order; UNCHANGED at the end */
    assert_string_equal(back->cols[0].name, "flag");
    assert_string_equal(back->cols[back->ncols - 2].name, "last");
    assert_string_equal(back->cols[back->ncols - 1].name, "toast");
    assert_int_equal(back->cols[back->ncols - 1].val.kind, SA_VAL_UNCHANGED);
    sa_op_free(back);
    json_decref(j2);
    sa_free(text);
    json_decref(j);
}

static void test_codec_json_roundtrip_random(void **state)
{
    (void)state;
    rop *r = malloc(sizeof *r);
    assert_non_null(r);
    rng_seed(99);
    for (int i = 0; i < 1000; i++) {
        random_op(r);
        json_t *j = to_json_ok(&r->op);
        sa_op *back = NULL;
        sa_err err = {0};
        if (sa_op_from_json(j, &back, &err) != 0)
            fail_msg("op %d: from_json: %s", i, err.msg);
        assert_true(sa_op_equal(back, &r->op));
        sa_op_free(back);
        json_decref(j);
    }
    free(r);
}

static void test_codec_json_from_wire_forms(void **state)
{
    (void)state;
    /* what a client may send beyond what to_json produces */
    const char *text =
        "{\"origin\":\"e\",\"epoch\":0,\"seq\":1,\"hlc\":2,\"kind\":\"update\",\"table\":\"t\","
        "\"key\":{\"id\":\"17\"},\"cols\":{\"b\":\"t\",\"j\":{\"x\":[1,2]},\"jb\":{\"x\":2},"
        "\"js\":\"str\",\"n\":null,\"e\":\"\"},"
        "\"types\":{\"id\":20,\"b\":16,\"j\":114,\"jb\":3802,\"js\":3802,\"n\":25,\"e\":25},"
        "\"pg\":{\"lsn\":\"a/0\",\"xid\":0,\"commit_time\":-1}}";
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    assert_non_null(j);
    sa_op *op = NULL;
    sa_err err = {0};
    if (sa_op_from_json(j, &op, &err) != 0)
        fail_msg("from_json: %s", err.msg);
    assert_int_equal(op->flags, SA_OP_HAS_PG);
    assert_int_equal(op->pg_lsn, UINT64_C(0xA) << 32);
    assert_int_equal(op->pg_commit_time, -1);
    assert_int_equal(op->key[0].val.len, 2);
    assert_memory_equal(op->key[0].val.data, "17", 2);
    assert_string_equal(op->cols[0].val.data, "t");
    assert_string_equal(op->cols[1].val.data, "{\"x\":[1,2]}");
    assert_string_equal(op->cols[2].val.data, "{\"x\": 2}");
    assert_string_equal(op->cols[3].val.data, "\"str\"");
    assert_int_equal(op->cols[4].val.kind, SA_VAL_NULL);
    assert_int_equal(op->cols[5].val.kind, SA_VAL_TEXT);
    assert_int_equal(op->cols[5].val.len, 0);
    assert_int_equal(op->nbase, 0);
    sa_op_free(op);
    json_decref(j);

    /* values the binary holds but JSON cannot: refused, naming the member */
    sa_op o = base_op(SA_OP_TRUNCATE);
    o.seq = (uint64_t)INT64_MAX + 1;
    json_t *out = NULL;
    assert_int_equal(sa_op_to_json(&o, &out, &err), SA_ERANGE);
    assert_msg_has(err, "\"seq\"");
    assert_null(out);
    static const sa_field bad_utf8[] = {{"c", TEXT("\xff")}};
    o = base_op(SA_OP_INSERT);
    o.cols = bad_utf8;
    o.ncols = 1;
    assert_int_equal(sa_op_to_json(&o, &out, &err), SA_EINVAL);
    assert_msg_has(err, "\"c\"");
}

/* Sets member `path` (dotted) of j to the JSON text `val`, or deletes it. */
static void set_path(json_t *j, const char *path, const char *val)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", path);
    char *dot = strchr(buf, '.');
    if (dot != NULL) {
        *dot = '\0';
        json_t *sub = json_object_get(j, buf);
        if (sub == NULL) {
            sub = json_object();
            json_object_set_new(j, buf, sub);
        }
        j = sub;
        path = dot + 1;
    } else {
        path = buf;
    }
    if (val == NULL) {
        json_object_del(j, path);
        return;
    }
    json_error_t jerr;
    json_t *v = json_loads(val, JSON_DECODE_ANY, &jerr);
    if (v == NULL)
        fail_msg("bad test value %s", val);
    json_object_set_new(j, path, v);
}

static void test_codec_json_rejects(void **state)
{
    (void)state;
    static const char *good =
        "{\"origin\":\"e1\",\"epoch\":1,\"seq\":2,\"hlc\":3,\"kind\":\"update\","
        "\"table\":\"public.t\",\"key\":{\"id\":1},\"cols\":{\"v\":\"x\",\"doc\":{\"a\":1}},"
        "\"types\":{\"id\":23,\"v\":25,\"doc\":3802},"
        "\"pg\":{\"lsn\":\"0/1\",\"xid\":5,\"commit_time\":0}}";
    static const struct {
        const char *path, *val, *needle, *needle2;
    } cases[] = {
        {"kind", "\"upsert\"", "member \"kind\": unknown op kind \"upsert\"", NULL},
        {"kind", "1", "\"kind\"", "integer"},
        {"origin", NULL, "\"origin\"", "missing"},
        {"origin", "\"\"", "origin", NULL},
        {"table", "5", "\"table\"", NULL},
        {"seq", NULL, "\"seq\"", NULL},
        {"seq", "-1", "\"seq\"", NULL},
        {"epoch", "\"1\"", "\"epoch\"", NULL},
        {"hlc", "1.5", "\"hlc\"", NULL},
        {"foo", "1", "\"foo\"", "unknown member"},
        {"key", "[]", "\"key\"", "object"},
        {"key", "{}", "key", NULL},
        {"cols", "5", "\"cols\"", NULL},
        {"base", "true", "\"base\"", NULL},
        {"types", "[]", "\"types\"", NULL},
        {"types.v", NULL, "\"v\"", "types"},
        {"types.v", "-1", "\"v\"", "types"},
        {"types.v", "4294967296", "\"v\"", NULL},
        {"types.v", "\"25\"", "\"v\"", NULL},
        {"types.zz", "25", "\"zz\"", NULL},
        {"cols.v", "5", "\"v\"", "integer"},
        {"cols.v", "true", "\"v\"", "boolean"},
        {"cols.v", "[1]", "\"v\"", NULL},
        {"key.id", "1.5", "\"id\"", "real"},
        {"key.id", "3000000000", "\"id\"", "range"},
        {"key.id", "false", "\"id\"", NULL},
        {"pg", "[]", "\"pg\"", NULL},
        {"pg.lsn", "\"zz\"", "lsn", NULL},
        {"pg.lsn", "\"1/2/3\"", "lsn", NULL},
        {"pg.lsn", "\"123456789/0\"", "lsn", NULL},
        {"pg.xid", NULL, "\"xid\"", "missing"},
        {"pg.xid", "-1", "xid", NULL},
        {"pg.foo", "1", "\"foo\"", "pg"},
        {"pg.commit_time", "\"now\"", "\"pg.commit_time\"", NULL},
        {"unchanged", "{}", "\"unchanged\"", NULL},
        {"unchanged", "[5]", "\"unchanged\"", NULL},
        {"unchanged", "[\"v\"]", "\"v\"", "cols"},
        {"unchanged", "[\"w\"]", "\"w\"", "types"},
        {"raw", "[]", "\"raw\"", NULL},
        {"raw.zz", "[]", "\"zz\"", NULL},
        {"raw.cols", "[\"v\"]", "\"v\"", "json"},
        {"raw.cols", "[\"nope\"]", "\"nope\"", NULL},
        {"raw.cols", "[\"doc\"]", "\"doc\"", "string"},
        {"raw.key", "[1]", "raw.key", NULL},
        {"cols.v", NULL, NULL, NULL}, /* valid: "types" names a missing column */
    };
    json_error_t jerr;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = json_loads(good, 0, &jerr);
        assert_non_null(j);
        set_path(j, cases[i].path, cases[i].val);
        sa_op *op = (sa_op *)(uintptr_t)0x1;
        sa_err err = {0};
        int rc = sa_op_from_json(j, &op, &err);
        const char *n1 = cases[i].needle ? cases[i].needle : "\"types\"";
        if (rc >= 0 || !has(err.msg, n1) ||
            (cases[i].needle2 && !has(err.msg, cases[i].needle2)))
            fail_msg("%s=%s: rc %d \"%s\"", cases[i].path, cases[i].val ? cases[i].val : "-",
                     rc, err.msg);
        assert_ptr_equal(op, (sa_op *)(uintptr_t)0x1);
        json_decref(j);
    }
    /* the base document is fine, and so is the whole thing not being an object */
    json_t *j = json_loads(good, 0, &jerr);
    sa_op *op = NULL;
    assert_int_equal(sa_op_from_json(j, &op, NULL), 0);
    sa_op_free(op);
    json_decref(j);
    j = json_array();
    sa_err err = {0};
    assert_int_equal(sa_op_from_json(j, &op, &err), SA_EPROTO);
    assert_msg_has(err, "object");
    json_decref(j);
}

static int setup(void **state)
{
    (void)state;
    /* jansson's allocations go through sa_malloc too, so OOM tests reach them */
    json_set_alloc_funcs(test_json_malloc, sa_free);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_kind_names),
        cmocka_unit_test(test_codec_equal),
        cmocka_unit_test(test_codec_roundtrip_samples),
        cmocka_unit_test(test_codec_roundtrip_value_kinds),
        cmocka_unit_test(test_codec_roundtrip_large),
        cmocka_unit_test(test_codec_fields_roundtrip),
        cmocka_unit_test(test_codec_roundtrip_random),
        cmocka_unit_test(test_codec_truncations),
        cmocka_unit_test(test_codec_corruptions),
        cmocka_unit_test(test_codec_random_buffers),
        cmocka_unit_test(test_codec_version_refused),
        cmocka_unit_test(test_codec_header_rejects),
        cmocka_unit_test(test_codec_length_rejects),
        cmocka_unit_test(test_codec_validate_rejects),
        cmocka_unit_test(test_codec_oom_binary),
        cmocka_unit_test(test_codec_oom_json),
        cmocka_unit_test(test_codec_json_mapping),
        cmocka_unit_test(test_codec_json_roundtrip_random),
        cmocka_unit_test(test_codec_json_from_wire_forms),
        cmocka_unit_test(test_codec_json_rejects),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
