/*
 * test_pgo.c — the pgoutput decoder on hand-built byte fixtures: every
 * message type, every truncation, trailing bytes, hostile fields, stream
 * framing, schema changes, random noise, out-of-memory at every allocation,
 * and the mapping of changes to sa_op fields.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pgo.h"
#include "sa/sa_alloc.h"
#include "sa/sa_op.h"

/* ---- fixture builder ------------------------------------------------------ */

typedef struct fx {
    uint8_t b[4096];
    size_t n;
} fx;

static void put_u8(fx *f, uint8_t v)
{
    assert_true(f->n < sizeof f->b);
    f->b[f->n++] = v;
}
static void put_u16(fx *f, uint16_t v)
{
    put_u8(f, (uint8_t)(v >> 8));
    put_u8(f, (uint8_t)v);
}
static void put_u32(fx *f, uint32_t v)
{
    put_u16(f, (uint16_t)(v >> 16));
    put_u16(f, (uint16_t)v);
}
static void put_u64(fx *f, uint64_t v)
{
    put_u32(f, (uint32_t)(v >> 32));
    put_u32(f, (uint32_t)v);
}
static void put_i16(fx *f, int v)
{
    put_u16(f, (uint16_t)v);
}
static void put_i32(fx *f, int32_t v)
{
    put_u32(f, (uint32_t)v);
}
static void put_raw(fx *f, const void *p, size_t n)
{
    assert_true(f->n + n <= sizeof f->b);
    memcpy(f->b + f->n, p, n);
    f->n += n;
}
static void put_str(fx *f, const char *s)
{
    put_raw(f, s, strlen(s) + 1);
}
static void col_text(fx *f, const char *s)
{
    put_u8(f, 't');
    put_i32(f, (int32_t)strlen(s));
    put_raw(f, s, strlen(s));
}
static void col_null(fx *f)
{
    put_u8(f, 'n');
}
static void col_unch(fx *f)
{
    put_u8(f, 'u');
}
static fx *fx_start(fx *f, uint8_t type, uint32_t stream_xid)
{
    f->n = 0;
    put_u8(f, type);
    if (stream_xid != 0)
        put_u32(f, stream_xid);
    return f;
}

#define REL_ITEMS 16384u               /* public.items: id int4 key, name text, body text; 'd' */
#define REL_LOGS 16390u                /* public.logs: k int4, v text; REPLICA IDENTITY FULL */
#define REL_BARE 16400u                /* public.bare: x text, no key; 'n' */
#define PG_TS INT64_C(770000000000000) /* some PostgreSQL-epoch timestamp */
#define UNIX_TS (PG_TS + INT64_C(946684800000000))
#define LSN UINT64_C(0x2A016B3748)
#define LSN_STR "2A/16B3748"

static void fx_rel_items(fx *f, uint32_t xid)
{
    fx_start(f, 'R', xid);
    put_u32(f, REL_ITEMS);
    put_str(f, "public");
    put_str(f, "items");
    put_u8(f, 'd');
    put_i16(f, 3);
    put_u8(f, 1), put_str(f, "id"), put_u32(f, 23), put_i32(f, -1);
    put_u8(f, 0), put_str(f, "name"), put_u32(f, 25), put_i32(f, -1);
    put_u8(f, 0), put_str(f, "body"), put_u32(f, 25), put_i32(f, -1);
}

static void fx_rel_logs(fx *f, uint32_t xid)
{
    fx_start(f, 'R', xid);
    put_u32(f, REL_LOGS);
    put_str(f, "public");
    put_str(f, "logs");
    put_u8(f, 'f');
    put_i16(f, 2);
    put_u8(f, 1), put_str(f, "k"), put_u32(f, 23), put_i32(f, -1);
    put_u8(f, 1), put_str(f, "v"), put_u32(f, 1043), put_i32(f, 24);
}

static void fx_rel_bare(fx *f)
{
    fx_start(f, 'R', 0);
    put_u32(f, REL_BARE);
    put_str(f, ""); /* pg_catalog, by the protocol's convention */
    put_str(f, "bare");
    put_u8(f, 'n');
    put_i16(f, 1);
    put_u8(f, 0), put_str(f, "x"), put_u32(f, 25), put_i32(f, -1);
}

/* Insert into items: id, name, body (NULL name pointer = SQL NULL). */
static void fx_ins_items(fx *f, uint32_t xid, const char *id, const char *name, const char *body)
{
    fx_start(f, 'I', xid);
    put_u32(f, REL_ITEMS);
    put_u8(f, 'N');
    put_i16(f, 3);
    col_text(f, id);
    name ? col_text(f, name) : col_null(f);
    body ? col_text(f, body) : col_null(f);
}

/* ---- decoder helpers ----------------------------------------------------- */

static pgo_decoder *dec_new(int proto)
{
    pgo_decoder *d = NULL;
    sa_err err;
    assert_int_equal(pgo_decoder_new(proto, &d, &err), 0);
    return d;
}

static const pgo_msg *dec_ok(pgo_decoder *d, const fx *f)
{
    const pgo_msg *m = NULL;
    sa_err err;
    int rc = pgo_decode(d, f->b, f->n, LSN, &m, &err);
    if (rc != 0)
        fail_msg("decode of '%c' failed: %s", f->b[0], err.msg);
    assert_non_null(m);
    assert_int_equal(m->type, f->b[0]);
    assert_true(m->wal_lsn == LSN);
    return m;
}

/* Decode expecting `code`; the message must name the LSN (and `needle`). */
static void dec_err(pgo_decoder *d, const fx *f, int code, const char *needle)
{
    const pgo_msg *m = (const pgo_msg *)&m; /* must stay untouched */
    const pgo_msg *sentinel = m;
    sa_err err;
    int rc = pgo_decode(d, f->b, f->n, LSN, &m, &err);
    if (rc != code)
        fail_msg("'%c': expected %s, got %s: %s", f->n ? f->b[0] : '-', sa_err_name(code),
                 sa_err_name(rc), rc ? err.msg : "");
    assert_ptr_equal(m, sentinel);
    if (strstr(err.msg, LSN_STR) == NULL)
        fail_msg("error does not name the LSN: %s", err.msg);
    if (needle != NULL && strstr(err.msg, needle) == NULL)
        fail_msg("error lacks \"%s\": %s", needle, err.msg);
}

/* A proto-2 decoder knowing items, logs and bare; optionally inside a
 * stream of xid 700. */
static pgo_decoder *dec_setup(int proto, int in_stream)
{
    pgo_decoder *d = dec_new(proto);
    fx f;
    fx_rel_items(&f, 0);
    dec_ok(d, &f);
    fx_rel_logs(&f, 0);
    dec_ok(d, &f);
    fx_rel_bare(&f);
    dec_ok(d, &f);
    if (in_stream) {
        fx_start(&f, 'S', 0);
        put_u32(&f, 700);
        put_u8(&f, 1);
        dec_ok(d, &f);
    }
    return d;
}

static int tval(const sa_value *v, const char *s)
{
    return v->kind == SA_VAL_TEXT && v->len == strlen(s) && memcmp(v->data, s, v->len) == 0;
}

static int tcol(const pgo_tuple_col *c, const char *s)
{
    return c->kind == PGO_COL_TEXT && c->len == strlen(s) && memcmp(c->data, s, c->len) == 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void test_pgo_versions(void **state)
{
    (void)state;
    pgo_decoder *d = NULL;
    sa_err err;
    assert_int_equal(pgo_decoder_new(0, &d, &err), SA_EVERSION);
    assert_non_null(strstr(err.msg, "1 to 4"));
    assert_int_equal(pgo_decoder_new(5, &d, &err), SA_EVERSION);
    assert_null(d);
    for (int v = 1; v <= 4; v++) {
        assert_int_equal(pgo_decoder_new(v, &d, &err), 0);
        pgo_decoder_free(d);
        d = NULL;
    }
    pgo_decoder_free(NULL);
    pgo_decoder_release_msg(NULL);
    assert_string_equal(pgo_msg_type_name('c'), "Stream Commit");
    assert_string_equal(pgo_msg_type_name('z'), "unknown");
}

/* ---- every message type ---------------------------------------------- */

static void test_pgo_begin_commit_origin(void **state)
{
    (void)state;
    pgo_decoder *d = dec_new(2);
    fx f;
    fx_start(&f, 'B', 0);
    put_u64(&f, 0x100000AB);
    put_u64(&f, (uint64_t)PG_TS);
    put_u32(&f, 731);
    const pgo_msg *m = dec_ok(d, &f);
    assert_true(m->begin.final_lsn == 0x100000AB);
    assert_true(m->begin.commit_time == UNIX_TS);
    assert_int_equal(m->xid, 731);
    assert_int_equal(m->in_stream, 0);

    fx_start(&f, 'O', 0);
    put_u64(&f, 0x5000);
    put_str(&f, "edge-origin");
    m = dec_ok(d, &f);
    assert_true(m->origin.lsn == 0x5000);
    assert_string_equal(m->origin.name, "edge-origin");

    fx_start(&f, 'C', 0);
    put_u8(&f, 0);
    put_u64(&f, 0x100000AB);
    put_u64(&f, 0x100000F0);
    put_u64(&f, (uint64_t)PG_TS);
    m = dec_ok(d, &f);
    assert_int_equal(m->commit.flags, 0);
    assert_true(m->commit.commit_lsn == 0x100000AB);
    assert_true(m->commit.end_lsn == 0x100000F0);
    assert_true(m->commit.commit_time == UNIX_TS);
    assert_int_equal(m->xid, 0);

    f.b[1] = 1; /* flags must be 0 */
    dec_err(d, &f, SA_EPROTO, "Commit");
    f.b[1] = 0;
    /* a timestamp that cannot be moved to the Unix epoch */
    for (int i = 0; i < 8; i++)
        f.b[18 + i] = i == 0 ? 0x7f : 0xff;
    dec_err(d, &f, SA_EPROTO, "out of range");
    pgo_decoder_free(d);
}

static void test_pgo_message_type(void **state)
{
    (void)state;
    pgo_decoder *d = dec_new(2);
    fx f;
    fx_start(&f, 'M', 0);
    put_u8(&f, 1);
    put_u64(&f, 0x777);
    put_str(&f, "softadastra");
    put_i32(&f, 4);
    put_raw(&f, "x\0y\xff", 4);
    const pgo_msg *m = dec_ok(d, &f);
    assert_int_equal(m->message.transactional, 1);
    assert_true(m->message.lsn == 0x777);
    assert_string_equal(m->message.prefix, "softadastra");
    assert_int_equal(m->message.len, 4);
    assert_memory_equal(m->message.content, "x\0y\xff", 4);

    f.b[1] = 0;
    m = dec_ok(d, &f);
    assert_int_equal(m->message.transactional, 0);
    f.b[1] = 3;
    dec_err(d, &f, SA_EPROTO, "unknown bits");

    fx_start(&f, 'Y', 0);
    put_u32(&f, 90210);
    put_str(&f, "");
    put_str(&f, "mood");
    m = dec_ok(d, &f);
    assert_int_equal(m->typ.oid, 90210);
    assert_string_equal(m->typ.nspname, "pg_catalog");
    assert_string_equal(m->typ.typname, "mood");
    pgo_decoder_free(d);
}

static void test_pgo_relation(void **state)
{
    (void)state;
    pgo_decoder *d = dec_new(1);
    fx f;
    fx_rel_items(&f, 0);
    const pgo_msg *m = dec_ok(d, &f);
    const pgo_relation *r = m->relation.rel;
    assert_ptr_equal(r, pgo_relation_get(d, REL_ITEMS));
    assert_int_equal(r->relid, REL_ITEMS);
    assert_string_equal(r->qualname, "public.items");
    assert_string_equal(r->nspname, "public");
    assert_string_equal(r->relname, "items");
    assert_int_equal(r->replident, PGO_REPLIDENT_DEFAULT);
    assert_int_equal(r->ncols, 3);
    assert_string_equal(r->cols[0].name, "id");
    assert_int_equal(r->cols[0].flags, PGO_COLFLAG_KEY);
    assert_int_equal(r->cols[0].type_oid, 23);
    assert_int_equal(r->cols[1].flags, 0);
    assert_string_equal(r->cols[2].name, "body");
    assert_int_equal(r->cols[2].typmod, -1);
    fx_rel_logs(&f, 0);
    r = dec_ok(d, &f)->relation.rel;
    assert_int_equal(r->replident, PGO_REPLIDENT_FULL);
    assert_int_equal(r->cols[1].type_oid, 1043);
    assert_int_equal(r->cols[1].typmod, 24);
    fx_rel_bare(&f);
    r = dec_ok(d, &f)->relation.rel;
    assert_string_equal(r->qualname, "pg_catalog.bare");
    assert_null(pgo_relation_get(d, 1));
    assert_null(pgo_relation_get(d, 0));

    /* the cache survives messages and grows past its first table */
    for (uint32_t i = 0; i < 100; i++) {
        fx_rel_bare(&f);
        f.b[4] = (uint8_t)(i + 1); /* relid 0x5001 + i: 100 new relations */
        f.b[3] = 0x50;
        dec_ok(d, &f);
    }
    assert_non_null(pgo_relation_get(d, REL_ITEMS));
    assert_string_equal(pgo_relation_get(d, REL_LOGS)->qualname, "public.logs");
    pgo_decoder_free(d);
}

static void test_pgo_insert_update_delete(void **state)
{
    (void)state;
    pgo_decoder *d = dec_setup(2, 0);
    fx f;
    fx_ins_items(&f, 0, "1", "", NULL);
    const pgo_msg *m = dec_ok(d, &f);
    assert_ptr_equal(m->change.rel, pgo_relation_get(d, REL_ITEMS));
    assert_int_equal(m->change.old_tag, 0);
    assert_int_equal(m->change.new_tuple.ncols, 3);
    assert_true(tcol(&m->change.new_tuple.cols[0], "1"));
    assert_true(tcol(&m->change.new_tuple.cols[1], ""));
    assert_int_equal(m->change.new_tuple.cols[2].kind, PGO_COL_NULL);

    /* Update with the old key (key changed) and an unchanged TOAST value */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_ITEMS);
    put_u8(&f, 'K');
    put_i16(&f, 3), col_text(&f, "1"), col_null(&f), col_null(&f);
    put_u8(&f, 'N');
    put_i16(&f, 3), col_text(&f, "2"), col_text(&f, "n"), col_unch(&f);
    m = dec_ok(d, &f);
    assert_int_equal(m->change.old_tag, PGO_TUPLE_KEY);
    assert_true(tcol(&m->change.old.cols[0], "1"));
    assert_int_equal(m->change.new_tuple.cols[2].kind, PGO_COL_UNCHANGED);

    /* Update without old tuple */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_ITEMS);
    put_u8(&f, 'N');
    put_i16(&f, 3), col_text(&f, "2"), col_text(&f, "m"), col_unch(&f);
    m = dec_ok(d, &f);
    assert_int_equal(m->change.old_tag, 0);
    assert_int_equal(m->change.old.ncols, 0);

    /* 'O' on a non-FULL relation is refused */
    f.b[5] = 'O';
    dec_err(d, &f, SA_EPROTO, "replica identity 'd'");
    f.b[5] = 'X';
    dec_err(d, &f, SA_EPROTO, "expected 'K', 'O' or 'N'");

    fx_start(&f, 'D', 0);
    put_u32(&f, REL_ITEMS);
    put_u8(&f, 'K');
    put_i16(&f, 3), col_text(&f, "2"), col_null(&f), col_null(&f);
    m = dec_ok(d, &f);
    assert_int_equal(m->change.old_tag, PGO_TUPLE_KEY);
    assert_int_equal(m->change.new_tuple.ncols, 0);
    f.b[5] = 'O';
    dec_err(d, &f, SA_EPROTO, "replica identity");
    f.b[5] = 'N';
    dec_err(d, &f, SA_EPROTO, "expected 'K' or 'O'");

    /* FULL: Update and Delete carry 'O' */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_LOGS);
    put_u8(&f, 'O');
    put_i16(&f, 2), col_text(&f, "5"), col_text(&f, "old");
    put_u8(&f, 'N');
    put_i16(&f, 2), col_text(&f, "5"), col_text(&f, "new");
    m = dec_ok(d, &f);
    assert_int_equal(m->change.old_tag, PGO_TUPLE_OLD);
    assert_true(tcol(&m->change.old.cols[1], "old"));
    assert_true(tcol(&m->change.new_tuple.cols[1], "new"));
    f.b[5] = 'K';
    dec_err(d, &f, SA_EPROTO, "replica identity 'f'");
    pgo_decoder_free(d);
}

static void test_pgo_truncate(void **state)
{
    (void)state;
    pgo_decoder *d = dec_setup(2, 0);
    fx f;
    fx_start(&f, 'T', 0);
    put_i32(&f, 2);
    put_u8(&f, PGO_TRUNC_CASCADE | PGO_TRUNC_RESTART_IDENTITY);
    put_u32(&f, REL_ITEMS);
    put_u32(&f, REL_LOGS);
    const pgo_msg *m = dec_ok(d, &f);
    assert_int_equal(m->truncate.nrels, 2);
    assert_int_equal(m->truncate.options, 3);
    assert_int_equal(m->truncate.relids[1], REL_LOGS);
    assert_string_equal(m->truncate.rels[0]->qualname, "public.items");
    assert_string_equal(m->truncate.rels[1]->qualname, "public.logs");

    f.b[5] = 4;
    dec_err(d, &f, SA_EPROTO, "unknown bits");
    f.b[5] = 0;
    f.b[9] = 0x77; /* unknown relid */
    dec_err(d, &f, SA_EPROTO, "unknown relation OID");
    fx_start(&f, 'T', 0);
    put_i32(&f, 0);
    put_u8(&f, 0);
    dec_err(d, &f, SA_EPROTO, "must be positive");
    fx_start(&f, 'T', 0);
    put_i32(&f, -3);
    put_u8(&f, 0);
    dec_err(d, &f, SA_EPROTO, "must be positive");
    fx_start(&f, 'T', 0);
    put_i32(&f, INT32_MAX);
    put_u8(&f, 0);
    put_u32(&f, REL_ITEMS);
    dec_err(d, &f, SA_ETRUNCATED, "relation count");
    pgo_decoder_free(d);
}

/* ---- stream framing ------------------------------------------------- */

static void test_pgo_stream(void **state)
{
    (void)state;
    pgo_decoder *d = dec_new(2);
    fx f;
    fx_rel_items(&f, 0); /* outside a stream: no xid */
    dec_ok(d, &f);

    fx_start(&f, 'E', 0);
    dec_err(d, &f, SA_EPROTO, "outside a stream");

    fx_start(&f, 'S', 0);
    put_u32(&f, 900);
    put_u8(&f, 1);
    const pgo_msg *m = dec_ok(d, &f);
    assert_int_equal(m->xid, 900);
    assert_int_equal(m->stream_start.first_segment, 1);
    assert_int_equal(m->in_stream, 0);
    assert_true(pgo_decoder_in_stream(d));
    dec_err(d, &f, SA_EPROTO, "inside a stream"); /* no nesting */

    /* inside: R/Y/I/U/D/T/M carry a leading xid (here a subtransaction's) */
    fx_rel_logs(&f, 901);
    m = dec_ok(d, &f);
    assert_int_equal(m->xid, 901);
    assert_int_equal(m->in_stream, 1);
    fx_ins_items(&f, 901, "7", "a", "b");
    m = dec_ok(d, &f);
    assert_int_equal(m->xid, 901);
    assert_true(tcol(&m->change.new_tuple.cols[0], "7"));
    fx_start(&f, 'M', 900);
    put_u8(&f, 1), put_u64(&f, 1), put_str(&f, "p"), put_i32(&f, 0);
    m = dec_ok(d, &f);
    assert_int_equal(m->xid, 900);
    assert_int_equal(m->message.len, 0);
    fx_start(&f, 'T', 900);
    put_i32(&f, 1), put_u8(&f, 0), put_u32(&f, REL_LOGS);
    assert_int_equal(dec_ok(d, &f)->xid, 900);
    fx_start(&f, 'Y', 900);
    put_u32(&f, 5), put_str(&f, "s"), put_str(&f, "t");
    dec_ok(d, &f);
    /* the same Insert without the xid is misread: caught, not guessed */
    fx_ins_items(&f, 0, "7", "a", "b");
    dec_err(d, &f, SA_EPROTO, NULL);
    fx_ins_items(&f, 0, "7", "a", "b");
    memmove(f.b + 5, f.b + 1, f.n - 1);
    memset(f.b + 1, 0, 4), f.n += 4; /* xid 0 */
    dec_err(d, &f, SA_EPROTO, "xid 0");
    fx_start(&f, 'B', 0);
    put_u64(&f, 1), put_u64(&f, 2), put_u32(&f, 3);
    dec_err(d, &f, SA_EPROTO, "inside a stream");
    fx_start(&f, 'O', 0); /* Origin may be sent at stream start, no xid */
    put_u64(&f, 0), put_str(&f, "o");
    dec_ok(d, &f);

    fx_start(&f, 'E', 0);
    m = dec_ok(d, &f);
    assert_int_equal(m->in_stream, 1);
    assert_false(pgo_decoder_in_stream(d));

    fx_start(&f, 'c', 0);
    put_u32(&f, 900), put_u8(&f, 0), put_u64(&f, 0x10), put_u64(&f, 0x20);
    put_u64(&f, (uint64_t)PG_TS);
    m = dec_ok(d, &f);
    assert_int_equal(m->xid, 900);
    assert_true(m->commit.commit_lsn == 0x10 && m->commit.end_lsn == 0x20);
    assert_true(m->commit.commit_time == UNIX_TS);
    f.b[5] = 2;
    dec_err(d, &f, SA_EPROTO, "Stream Commit");

    fx_start(&f, 'A', 0);
    put_u32(&f, 900), put_u32(&f, 905);
    m = dec_ok(d, &f);
    assert_int_equal(m->xid, 900);
    assert_int_equal(m->stream_abort.subxid, 905);
    assert_int_equal(m->stream_abort.has_abort_info, 0);
    put_u64(&f, 0x99), put_u64(&f, (uint64_t)PG_TS); /* v4 fields: not in v2 */
    dec_err(d, &f, SA_EPROTO, "16 trailing bytes");
    pgo_decoder_free(d);

    /* v4: the abort info is read when present, and absent is fine too */
    d = dec_new(4);
    m = dec_ok(d, &f);
    assert_int_equal(m->stream_abort.has_abort_info, 1);
    assert_true(m->stream_abort.abort_lsn == 0x99);
    assert_true(m->stream_abort.abort_time == UNIX_TS);
    f.n -= 16;
    assert_int_equal(dec_ok(d, &f)->stream_abort.has_abort_info, 0);
    f.n += 5;
    dec_err(d, &f, SA_ETRUNCATED, "abort LSN");
    pgo_decoder_free(d);

    /* v1 has no stream messages */
    d = dec_new(1);
    fx_start(&f, 'S', 0);
    put_u32(&f, 900), put_u8(&f, 1);
    dec_err(d, &f, SA_EPROTO, "proto_version 2");
    f.b[5] = 2;
    pgo_decoder_free(d);
    d = dec_new(3);
    dec_err(d, &f, SA_EPROTO, "first segment");
    pgo_decoder_free(d);
}

/* ---- hostile input ------------------------------------------------- */

static void test_pgo_bad_input(void **state)
{
    (void)state;
    pgo_decoder *d = dec_setup(2, 0);
    fx f;
    const pgo_msg *m;
    sa_err err;
    assert_int_equal(pgo_decode(d, NULL, 0, LSN, &m, &err), SA_ETRUNCATED);
    assert_non_null(strstr(err.msg, LSN_STR));
    fx_start(&f, 'Z', 0);
    dec_err(d, &f, SA_EPROTO, "unknown pgoutput message type 0x5a");
    fx_start(&f, 0, 0);
    dec_err(d, &f, SA_EPROTO, "0x00");
    fx_start(&f, 'b', 0); /* two-phase: refused by name */
    dec_err(d, &f, SA_EPROTO, "Begin Prepare");

    /* binary column */
    fx_start(&f, 'I', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'N'), put_i16(&f, 3);
    col_text(&f, "1"), put_u8(&f, 'b'), put_i32(&f, 1), put_u8(&f, 'x'), col_null(&f);
    dec_err(d, &f, SA_EPROTO, "binary");
    f.b[14] = 'q';
    dec_err(d, &f, SA_EPROTO, "unknown kind");

    /* unknown relid, relid 0 */
    fx_ins_items(&f, 0, "1", "a", "b");
    f.b[4] = 0x01;
    dec_err(d, &f, SA_EPROTO, "unknown relation OID");
    memset(f.b + 1, 0, 4);
    dec_err(d, &f, SA_EPROTO, "OID 0");

    /* column counts: mismatch, negative, over the limit */
    fx_start(&f, 'I', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'N'), put_i16(&f, 2), col_text(&f, "1"), col_null(&f);
    dec_err(d, &f, SA_EPROTO, "has 2 columns, relation public.items has 3");
    f.b[6] = 0xff, f.b[7] = 0xff;
    dec_err(d, &f, SA_EPROTO, "negative");
    f.b[6] = 0x06, f.b[7] = 0x81; /* 1665 */
    dec_err(d, &f, SA_ETOOBIG, "1664");
    f.b[6] = 0x06, f.b[7] = 0x80; /* 1664, but not 1664 bytes left */
    dec_err(d, &f, SA_ETRUNCATED, NULL);

    /* value lengths: negative, huge, beyond the end */
    int32_t lens[] = {-1, INT32_MIN, INT32_MAX, 300 << 20, 1000};
    int codes[] = {SA_EPROTO, SA_EPROTO, SA_ETOOBIG, SA_ETOOBIG, SA_ETRUNCATED};
    for (size_t i = 0; i < 5; i++) {
        fx_ins_items(&f, 0, "1", "a", "b");
        uint32_t u = (uint32_t)lens[i];
        f.b[9] = (uint8_t)(u >> 24), f.b[10] = (uint8_t)(u >> 16);
        f.b[11] = (uint8_t)(u >> 8), f.b[12] = (uint8_t)u;
        dec_err(d, &f, codes[i], "tuple column value");
    }

    /* Relation: replica identity, column flags, FULL flags, names */
    fx_rel_items(&f, 0);
    size_t ri = 1 + 4 + 7 + 6;
    f.b[ri] = 'x';
    dec_err(d, &f, SA_EPROTO, "replica identity");
    fx_rel_items(&f, 0);
    f.b[ri + 3] = 2;
    dec_err(d, &f, SA_EPROTO, "flags 0x02");
    fx_rel_logs(&f, 0);
    f.b[1 + 4 + 7 + 5 + 1 + 2] = 0;
    dec_err(d, &f, SA_EPROTO, "not flagged as key");
    fx_start(&f, 'R', 0);
    put_u32(&f, 5), put_str(&f, "s"), put_str(&f, ""), put_u8(&f, 'd'), put_i16(&f, 0);
    dec_err(d, &f, SA_EPROTO, "relation name is empty");
    fx_start(&f, 'R', 0);
    put_u32(&f, 5), put_str(&f, "s");
    char big[1100];
    memset(big, 'a', sizeof big - 1), big[sizeof big - 1] = 0;
    put_str(&f, big), put_u8(&f, 'd'), put_i16(&f, 0);
    dec_err(d, &f, SA_ETOOBIG, "relation name");
    fx_start(&f, 'R', 0);
    put_u32(&f, 5), put_str(&f, "s"), put_str(&f, "t"), put_u8(&f, 'd'), put_i16(&f, 2000);
    dec_err(d, &f, SA_ETOOBIG, "column count");
    fx_start(&f, 'R', 0);
    put_u32(&f, 5), put_str(&f, "s"), put_str(&f, "t"), put_u8(&f, 'd'), put_i16(&f, 1000);
    dec_err(d, &f, SA_ETRUNCATED, "column count");
    /* the failed Relation messages installed nothing */
    assert_null(pgo_relation_get(d, 5));
    assert_int_equal(pgo_relation_get(d, REL_ITEMS)->ncols, 3);

    /* Message: content length */
    fx_start(&f, 'M', 0);
    put_u8(&f, 1), put_u64(&f, 1), put_str(&f, "p"), put_i32(&f, -5);
    dec_err(d, &f, SA_EPROTO, "negative length");
    fx_start(&f, 'M', 0);
    put_u8(&f, 1), put_u64(&f, 1), put_str(&f, "p"), put_i32(&f, 10), put_raw(&f, "abc", 3);
    dec_err(d, &f, SA_ETRUNCATED, "exceeds the 3 bytes left");
    pgo_decoder_free(d);
}

/* Schema change: a later Relation message for the same relid replaces it. */
static void test_pgo_relation_replace(void **state)
{
    (void)state;
    pgo_decoder *d = dec_setup(2, 0);
    fx f;
    /* add a column, rename name -> title, drop body */
    fx_start(&f, 'R', 0);
    put_u32(&f, REL_ITEMS), put_str(&f, "public"), put_str(&f, "items"), put_u8(&f, 'd');
    put_i16(&f, 3);
    put_u8(&f, 1), put_str(&f, "id"), put_u32(&f, 23), put_i32(&f, -1);
    put_u8(&f, 0), put_str(&f, "title"), put_u32(&f, 25), put_i32(&f, -1);
    put_u8(&f, 0), put_str(&f, "price"), put_u32(&f, 1700), put_i32(&f, 655366);
    const pgo_relation *r = dec_ok(d, &f)->relation.rel;
    assert_ptr_equal(r, pgo_relation_get(d, REL_ITEMS));
    assert_string_equal(r->cols[1].name, "title");
    assert_string_equal(r->cols[2].name, "price");
    assert_int_equal(r->cols[2].type_oid, 1700);

    /* drop price: two columns now; a 3-column tuple is refused */
    fx_start(&f, 'R', 0);
    put_u32(&f, REL_ITEMS), put_str(&f, "public"), put_str(&f, "items"), put_u8(&f, 'f');
    put_i16(&f, 2);
    put_u8(&f, 1), put_str(&f, "id"), put_u32(&f, 23), put_i32(&f, -1);
    put_u8(&f, 1), put_str(&f, "title"), put_u32(&f, 25), put_i32(&f, -1);
    dec_ok(d, &f);
    r = pgo_relation_get(d, REL_ITEMS);
    assert_int_equal(r->ncols, 2);
    assert_int_equal(r->replident, PGO_REPLIDENT_FULL);
    fx_ins_items(&f, 0, "1", "a", "b");
    dec_err(d, &f, SA_EPROTO, "has 3 columns, relation public.items has 2");
    fx_start(&f, 'I', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'N'), put_i16(&f, 2), col_text(&f, "1"), col_text(&f, "t");
    const pgo_msg *m = dec_ok(d, &f);
    sa_op op;
    memset(&op, 0, sizeof op);
    sa_err err;
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), 0);
    assert_int_equal(op.nkey, 2); /* FULL now: every column is key */
    assert_string_equal(op.cols[1].name, "title");
    pgo_decoder_free(d);
}

/* ---- every truncation, every trailing byte -------------------------- */

#define MAX_FIXTURES 32

typedef struct fixture {
    fx f;
    int proto;
    int in_stream;
} fixture;

static size_t all_fixtures(fixture *fs)
{
    size_t n = 0;
    fx *f;
#define NEXT(p, s) (fs[n].proto = (p), fs[n].in_stream = (s), f = &fs[n++].f)
    NEXT(2, 0), fx_start(f, 'B', 0), put_u64(f, 9), put_u64(f, 8), put_u32(f, 7);
    NEXT(2, 0), fx_start(f, 'C', 0), put_u8(f, 0), put_u64(f, 9), put_u64(f, 8), put_u64(f, 7);
    NEXT(2, 0), fx_start(f, 'O', 0), put_u64(f, 9), put_str(f, "origin");
    NEXT(2, 0), fx_start(f, 'M', 0), put_u8(f, 1), put_u64(f, 9), put_str(f, "softadastra"),
        put_i32(f, 3), put_raw(f, "abc", 3);
    NEXT(2, 0), fx_rel_items(f, 0);
    NEXT(2, 0), fx_rel_logs(f, 0);
    NEXT(2, 0), fx_start(f, 'Y', 0), put_u32(f, 77), put_str(f, "public"), put_str(f, "mood");
    NEXT(2, 0), fx_ins_items(f, 0, "1", "", NULL);
    NEXT(2, 0), fx_start(f, 'U', 0), put_u32(f, REL_ITEMS), put_u8(f, 'K'), put_i16(f, 3),
        col_text(f, "1"), col_null(f), col_null(f), put_u8(f, 'N'), put_i16(f, 3), col_text(f, "2"),
        col_text(f, "x"), col_unch(f);
    NEXT(2, 0), fx_start(f, 'U', 0), put_u32(f, REL_LOGS), put_u8(f, 'O'), put_i16(f, 2),
        col_text(f, "1"), col_text(f, "a"), put_u8(f, 'N'), put_i16(f, 2), col_text(f, "1"),
        col_null(f);
    NEXT(2, 0), fx_start(f, 'D', 0), put_u32(f, REL_LOGS), put_u8(f, 'O'), put_i16(f, 2),
        col_text(f, "1"), col_text(f, "a");
    NEXT(2, 0), fx_start(f, 'T', 0), put_i32(f, 2), put_u8(f, 1), put_u32(f, REL_ITEMS),
        put_u32(f, REL_LOGS);
    NEXT(2, 0), fx_start(f, 'S', 0), put_u32(f, 5), put_u8(f, 0);
    NEXT(2, 1), fx_start(f, 'E', 0);
    NEXT(2, 0), fx_start(f, 'c', 0), put_u32(f, 5), put_u8(f, 0), put_u64(f, 9), put_u64(f, 8),
        put_u64(f, 7);
    NEXT(2, 0), fx_start(f, 'A', 0), put_u32(f, 5), put_u32(f, 6);
    NEXT(4, 0), fx_start(f, 'A', 0), put_u32(f, 5), put_u32(f, 6), put_u64(f, 1), put_u64(f, 2);
    NEXT(2, 1), fx_ins_items(f, 700, "1", "a", "b");
    NEXT(2, 1), fx_rel_logs(f, 700);
    NEXT(2, 1), fx_start(f, 'D', 700), put_u32(f, REL_ITEMS), put_u8(f, 'K'), put_i16(f, 3),
        col_text(f, "1"), col_null(f), col_null(f);
    NEXT(2, 1), fx_start(f, 'M', 700), put_u8(f, 1), put_u64(f, 9), put_str(f, "p"), put_i32(f, 0);
#undef NEXT
    assert_true(n <= MAX_FIXTURES);
    return n;
}

static void test_pgo_truncated_everywhere(void **state)
{
    (void)state;
    static fixture fs[MAX_FIXTURES];
    size_t n = all_fixtures(fs);
    for (size_t i = 0; i < n; i++) {
        pgo_decoder *d = dec_setup(fs[i].proto, fs[i].in_stream);
        fx t = fs[i].f;
        for (size_t cut = 0; cut < fs[i].f.n; cut++) {
            t.n = cut;
            /* v4's Stream Abort without its optional tail is whole */
            if (fs[i].proto == 4 && fs[i].f.b[0] == 'A' && cut == 9)
                continue;
            dec_err(d, &t, SA_ETRUNCATED, cut ? pgo_msg_type_name(t.b[0]) : "empty");
            /* a failed message changes no state */
            assert_int_equal(pgo_decoder_in_stream(d), fs[i].in_stream);
            assert_int_equal(pgo_relation_get(d, REL_ITEMS)->ncols, 3);
        }
        t.n = fs[i].f.n + 1;
        t.b[t.n - 1] = 0;
        dec_err(d, &t, SA_EPROTO, "1 trailing bytes");
        dec_ok(d, &fs[i].f);
        pgo_decoder_free(d);
    }
}

/* ---- noise ------------------------------------------------------------ */

static uint64_t rng_state = 0x5eed5eed1234ull;
static uint64_t rng(void) /* xorshift64*, fixed seed */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Decode whatever; on success exercise the op mapping; on error the message
 * must name the LSN.  Returns the code. */
static int poke(pgo_decoder *d, const uint8_t *b, size_t n)
{
    const pgo_msg *m = NULL;
    sa_err err;
    int rc = pgo_decode(d, b, n, LSN, &m, &err);
    if (rc != 0) {
        assert_true(rc < 0);
        if (strstr(err.msg, LSN_STR) == NULL)
            fail_msg("error without LSN: %s", err.msg);
        return rc;
    }
    if (m->type == PGO_INSERT || m->type == PGO_UPDATE || m->type == PGO_DELETE) {
        sa_op op;
        memset(&op, 0, sizeof op);
        const sa_field *old;
        uint32_t nold;
        (void)pgo_change_to_op(d, m, &op, &old, &nold, &err);
    }
    return 0;
}

static void test_pgo_fuzz(void **state)
{
    (void)state;
    static const char types[] = "BMCORYIUDTSEcAbPKrp";
    pgo_decoder *d = dec_setup(4, 0);
    uint8_t b[96];
    int ok = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rng() % sizeof b);
        for (size_t j = 0; j < n; j++)
            b[j] = (uint8_t)(rng() % 4 == 0 ? rng() % 8 : rng()); /* small ints are common */
        if (n > 0 && rng() % 2)
            b[0] = (uint8_t)types[rng() % (sizeof types - 1)];
        ok += poke(d, b, n) == 0;
    }
    static fixture fs[MAX_FIXTURES];
    size_t nf = all_fixtures(fs);
    for (int i = 0; i < 20000; i++) {
        const fixture *fx0 = &fs[rng() % nf];
        fx t = fx0->f;
        t.b[rng() % t.n] = (uint8_t)rng();
        if (rng() % 4 == 0)
            t.b[rng() % t.n] ^= (uint8_t)(1u << (rng() % 8));
        ok += poke(d, t.b, t.n) == 0;
    }
    print_message("fuzz: %d of 40000 inputs decoded\n", ok);
    pgo_decoder_free(d);
}

/* ---- out of memory -------------------------------------------------- */

/* Build a decoder and run a realistic sequence; return the first error. */
static int oom_sequence(void)
{
    pgo_decoder *d = NULL;
    sa_err err;
    int rc = pgo_decoder_new(2, &d, &err);
    if (rc != 0) {
        assert_int_equal(rc, SA_ENOMEM);
        return rc;
    }
    static fixture fs[MAX_FIXTURES];
    size_t nf = all_fixtures(fs);
    fx f;
    fx_rel_items(&f, 0);
    const pgo_msg *m;
    rc = pgo_decode(d, f.b, f.n, LSN, &m, &err);
    for (size_t i = 0; rc == 0 && i < nf; i++) {
        if (fs[i].in_stream || fs[i].proto != 2 || fs[i].f.b[0] == 'S')
            continue;
        /* an Insert first needs logs too: decode in fixture order */
        rc = pgo_decode(d, fs[i].f.b, fs[i].f.n, LSN, &m, &err);
        if (rc == SA_ENOMEM) {
            assert_non_null(strstr(err.msg, LSN_STR));
            /* state unchanged: the relation of a failed Relation is absent
             * or the previous one */
            if (fs[i].f.b[0] == 'R' && fs[i].f.b[4] == (REL_LOGS & 0xff))
                assert_null(pgo_relation_get(d, REL_LOGS));
            break;
        }
        if (rc != 0)
            fail_msg("unexpected %s: %s", sa_err_name(rc), err.msg);
        if (m->type == PGO_INSERT || m->type == PGO_UPDATE || m->type == PGO_DELETE) {
            sa_op op;
            memset(&op, 0, sizeof op);
            const sa_field *old;
            uint32_t nold;
            rc = pgo_change_to_op(d, m, &op, &old, &nold, &err);
        }
    }
    pgo_decoder_free(d);
    return rc;
}

static void test_pgo_oom(void **state)
{
    (void)state;
    int rc = -1;
    long n;
    for (n = 0; n < 10000; n++) {
        sa_alloc_fail_after(n);
        rc = oom_sequence();
        long failed = sa_alloc_failed_count();
        sa_alloc_fail_reset();
        if (rc == 0) {
            assert_int_equal(failed, 0);
            break;
        }
        assert_int_equal(rc, SA_ENOMEM);
    }
    assert_int_equal(rc, 0);
    print_message("oom: succeeded after %ld injected failure points\n", n);
}

/* ---- changes as ops ---------------------------------------------------- */

static const sa_field *field(const sa_field *f, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    fail_msg("no field %s", name);
    return NULL;
}

static void op_valid(sa_op *op)
{
    sa_err err;
    op->origin = "pg";
    op->seq = 1;
    if (sa_op_validate(op, &err) != 0)
        fail_msg("invalid op: %s", err.msg);
}

static void test_pgo_change_to_op(void **state)
{
    (void)state;
    pgo_decoder *d = dec_setup(2, 0);
    sa_err err;
    sa_op op;
    const sa_field *old = (const sa_field *)&old;
    uint32_t nold = 99;
    fx f;

    /* Insert: NULL and "" stay distinct */
    fx_ins_items(&f, 0, "1", "", NULL);
    const pgo_msg *m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    assert_int_equal(pgo_change_to_op(d, m, &op, &old, &nold, &err), 0);
    assert_int_equal(op.kind, SA_OP_INSERT);
    assert_string_equal(op.table, "public.items");
    assert_true(op.flags & SA_OP_HAS_PG);
    assert_int_equal(op.nkey, 1);
    assert_string_equal(op.key[0].name, "id");
    assert_true(tval(&op.key[0].val, "1"));
    assert_int_equal(op.key[0].val.type_oid, 23);
    assert_int_equal(op.ncols, 3);
    assert_true(tval(&field(op.cols, 3, "name")->val, ""));
    assert_int_equal(field(op.cols, 3, "body")->val.kind, SA_VAL_NULL);
    assert_int_equal(field(op.cols, 3, "body")->val.type_oid, 25);
    assert_null(old);
    assert_int_equal(nold, 0);
    op_valid(&op);

    /* Update, no old tuple: key from the new tuple; TOAST unchanged marked */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'N');
    put_i16(&f, 3), col_text(&f, "2"), col_text(&f, "m"), col_unch(&f);
    m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), 0);
    assert_int_equal(op.kind, SA_OP_UPDATE);
    assert_true(tval(&op.key[0].val, "2"));
    assert_int_equal(field(op.cols, op.ncols, "body")->val.kind, SA_VAL_UNCHANGED);
    op_valid(&op);

    /* Update with the old key: key from 'K', cols from 'N' */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'K');
    put_i16(&f, 3), col_text(&f, "1"), col_null(&f), col_null(&f);
    put_u8(&f, 'N');
    put_i16(&f, 3), col_text(&f, "2"), col_text(&f, "m"), col_text(&f, "b");
    m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    assert_int_equal(pgo_change_to_op(d, m, &op, &old, &nold, &err), 0);
    assert_true(tval(&op.key[0].val, "1"));
    assert_true(tval(&field(op.cols, op.ncols, "id")->val, "2"));
    assert_null(old);
    op_valid(&op);

    /* Delete with 'K' */
    fx_start(&f, 'D', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'K');
    put_i16(&f, 3), col_text(&f, "2"), col_null(&f), col_null(&f);
    m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    assert_int_equal(pgo_change_to_op(d, m, &op, &old, &nold, &err), 0);
    assert_int_equal(op.kind, SA_OP_DELETE);
    assert_int_equal(op.nkey, 1);
    assert_int_equal(op.ncols, 0);
    op_valid(&op);

    /* FULL: every column is key, from the old row; old row exposed */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_LOGS), put_u8(&f, 'O');
    put_i16(&f, 2), col_text(&f, "5"), col_null(&f);
    put_u8(&f, 'N');
    put_i16(&f, 2), col_text(&f, "5"), col_text(&f, "");
    m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    assert_int_equal(pgo_change_to_op(d, m, &op, &old, &nold, &err), 0);
    assert_string_equal(op.table, "public.logs");
    assert_int_equal(op.nkey, 2);
    assert_int_equal(field(op.key, 2, "v")->val.kind, SA_VAL_NULL);
    assert_true(tval(&field(op.cols, 2, "v")->val, ""));
    assert_int_equal(field(op.cols, 2, "v")->val.type_oid, 1043);
    assert_int_equal(nold, 2);
    assert_int_equal(old[1].val.kind, SA_VAL_NULL);
    assert_true(tval(&old[0].val, "5"));
    op_valid(&op);

    fx_start(&f, 'D', 0);
    put_u32(&f, REL_LOGS), put_u8(&f, 'O');
    put_i16(&f, 2), col_text(&f, "5"), col_text(&f, "z");
    m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    assert_int_equal(pgo_change_to_op(d, m, &op, &old, &nold, &err), 0);
    assert_int_equal(op.nkey, 2);
    assert_true(tval(&op.key[1].val, "z"));
    assert_int_equal(nold, 2);
    op_valid(&op);

    /* refusals: a TOASTed key without old key; Insert with 'u'; keyless
     * update; a non-change; a stale message */
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_ITEMS), put_u8(&f, 'N');
    put_i16(&f, 3), col_unch(&f), col_text(&f, "m"), col_text(&f, "b");
    m = dec_ok(d, &f);
    memset(&op, 0, sizeof op);
    sa_op before = op;
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "key column id"));
    assert_non_null(strstr(err.msg, LSN_STR));
    assert_memory_equal(&op, &before, sizeof op);
    f.b[0] = 'I';
    m = dec_ok(d, &f);
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "inserted row"));
    fx_start(&f, 'U', 0);
    put_u32(&f, REL_BARE), put_u8(&f, 'N'), put_i16(&f, 1), col_text(&f, "q");
    m = dec_ok(d, &f);
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "no replica identity"));
    f.b[0] = 'I';
    m = dec_ok(d, &f);
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), 0);
    assert_int_equal(op.nkey, 0);
    assert_string_equal(op.table, "pg_catalog.bare");
    fx_start(&f, 'E', 0);
    f.b[0] = 'O', put_u64(&f, 0), put_str(&f, "x");
    const pgo_msg *o = dec_ok(d, &f);
    assert_int_equal(pgo_change_to_op(d, o, &op, NULL, NULL, &err), SA_EINVAL);
    fx_ins_items(&f, 0, "1", "a", "b");
    m = dec_ok(d, &f);
    pgo_decoder_release_msg(d);
    assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), SA_EINVAL);
    pgo_decoder_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pgo_versions),
        cmocka_unit_test(test_pgo_begin_commit_origin),
        cmocka_unit_test(test_pgo_message_type),
        cmocka_unit_test(test_pgo_relation),
        cmocka_unit_test(test_pgo_insert_update_delete),
        cmocka_unit_test(test_pgo_truncate),
        cmocka_unit_test(test_pgo_stream),
        cmocka_unit_test(test_pgo_bad_input),
        cmocka_unit_test(test_pgo_relation_replace),
        cmocka_unit_test(test_pgo_truncated_everywhere),
        cmocka_unit_test(test_pgo_fuzz),
        cmocka_unit_test(test_pgo_oom),
        cmocka_unit_test(test_pgo_change_to_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
