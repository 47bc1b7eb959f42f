/*
 * codec.c — the binary encoding of operations (sa_op) and field lists, as
 * stored in RocksDB (wal, inbox, state).  Pure: bytes in, structs out.
 *
 * FORMAT, version 1
 * =================
 *
 * Notation.  u8 is one byte.  u64be is 8 bytes, most significant first.
 * varint is unsigned LEB128: 7 bits per byte, least significant group
 * first, high bit set on every byte but the last, at most 10 bytes.  A
 * varint must be MINIMAL (no redundant trailing 0x80 0x00 groups; the
 * single byte 0x00 encodes 0); a non-minimal varint is rejected, so every
 * op has exactly one encoding.  bytes(max) is a varint length L <= max
 * followed by L raw bytes.  name is bytes(SA_OP_MAX_NAME) with L >= 1 and
 * no 0x00 byte (names are C strings once decoded).
 *
 *   op :=
 *     u8      version       SA_OP_CODEC_VERSION (1); decode accepts
 *                           SA_OP_CODEC_MIN..SA_OP_CODEC_MAX, else SA_EVERSION
 *     u8      kind          1 insert, 2 update, 3 delete, 4 truncate
 *     u8      flags         bit 0 HAS_BASE, bit 1 HAS_PG; bits 2..7 reserved,
 *                           must be 0
 *     name    origin
 *     varint  epoch
 *     varint  seq
 *     u64be   hlc           fixed width: an HLC is 48 bits of ms + 16 bits
 *                           of counter, a varint would take 10 bytes
 *     name    table
 *     fields  key
 *     fields  cols
 *     fields  base          present iff flags & HAS_BASE
 *     u64be   pg_lsn        \
 *     varint  pg_xid         > present iff flags & HAS_PG; xid <= 2^32-1,
 *     u64be   pg_commit_time/  commit time is int64 two's complement (µs)
 *     (end)                 nothing may follow: trailing bytes are an error
 *
 *   fields :=                                (also sa_fields_encode's output)
 *     varint  count         <= SA_OP_MAX_FIELDS
 *     count * field
 *
 *   field :=
 *     name    column name   unique within one list
 *     u8      value kind    0 NULL, 1 TEXT, 2 UNCHANGED
 *     varint  type_oid      <= 2^32-1 (0 = unknown)
 *     bytes(SA_OP_MAX_VALUE) value     TEXT only: PostgreSQL text form
 *
 * Limits.  An encoded op is at most SA_OP_MAX_ENCODED bytes.  Lengths are
 * checked against their limit (SA_ETOOBIG) before the remaining input
 * (SA_ETRUNCATED).  Decoding parses everything before it allocates, so a
 * length field can never drive an allocation larger than the input implies.
 *
 * Semantics checked after parsing (sa_op_validate; failure is SA_ECORRUPT on
 * decode, SA_EINVAL on encode): no duplicate column in one list; a column
 * present in several lists has one type OID; TRUNCATE has no key, cols or
 * base; INSERT has cols; UPDATE and DELETE have a key; the UNCHANGED marker
 * appears only in the cols of an UPDATE (Postgres never sends it elsewhere:
 * key and old tuples are detoasted).
 *
 * Errors on decode: SA_EVERSION (version byte), SA_ETRUNCATED (input ends
 * early, including empty input), SA_ETOOBIG (a length, count or the input
 * beyond its limit), SA_ECORRUPT (everything else: reserved flag bits,
 * unknown kinds, bad names, non-minimal varints, trailing bytes, invalid op).
 *
 * Memory.  A decoded or cloned op is ONE sa_malloc block: the sa_op, then
 * the key, cols and base arrays (sa_field), then every string NUL-terminated
 * (origin, table, names, TEXT data — data is also followed by a NUL though
 * len is authoritative, as values may contain 0x00).  sa_op_free is sa_free.
 */
#include "sa/sa_op.h"
#include "codec_int.h"

#include <assert.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#include "sa/sa_alloc.h"

#define SA_OP_FLAGS_KNOWN (SA_OP_HAS_BASE | SA_OP_HAS_PG)

/* ---- kinds --------------------------------------------------------------- */

static const char *const op_kind_names[] = {
    [SA_OP_INSERT] = "insert",
    [SA_OP_UPDATE] = "update",
    [SA_OP_DELETE] = "delete",
    [SA_OP_TRUNCATE] = "truncate",
};

const char *sa_op_kind_name(sa_op_kind k)
{
    if ((int)k < SA_OP_INSERT || (int)k > SA_OP_TRUNCATE)
        return NULL;
    return op_kind_names[k];
}

int sa_op_kind_parse(const char *s, sa_op_kind *out)
{
    if (s == NULL)
        return SA_EINVAL;
    for (int k = SA_OP_INSERT; k <= SA_OP_TRUNCATE; k++) {
        if (strcmp(s, op_kind_names[k]) == 0) {
            *out = (sa_op_kind)k;
            return 0;
        }
    }
    return SA_EINVAL;
}

static int val_kind_valid(sa_val_kind k)
{
    return (int)k == SA_VAL_NULL || (int)k == SA_VAL_TEXT || (int)k == SA_VAL_UNCHANGED;
}

/* ---- validation ---------------------------------------------------------- */

/* One field list with the name used in messages. */
typedef struct field_list {
    const char *section;
    const sa_field *f;
    uint32_t n;
} field_list;

/*
 * Names are checked with a small open-addressing hash on the stack rather
 * than pairwise: lists hold up to SA_OP_MAX_FIELDS columns and the input may
 * come from an untrusted edge, so validation must stay linear.  A slot holds
 * 1 + list * SA_OP_MAX_FIELDS + index (fits in 16 bits: at most 3 lists).
 */
#define NAMESET_SLOTS 8192u /* power of two >= 1.5 * 3 * SA_OP_MAX_FIELDS */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Every list must already have n <= SA_OP_MAX_FIELDS and non-NULL names. */
static int check_names(const field_list *l, int nl, sa_err *err)
{
    uint16_t slot[NAMESET_SLOTS];
    size_t total = 0;
    for (int i = 0; i < nl; i++)
        total += l[i].n;
    size_t cap = 16;
    while (cap < total + total / 2)
        cap <<= 1;
    memset(slot, 0, cap * sizeof slot[0]);

    for (int i = 0; i < nl; i++) {
        for (uint32_t j = 0; j < l[i].n; j++) {
            const sa_field *f = l[i].f + j; /* n > 0 implies f != NULL (check_list) */
            size_t h = name_hash(f->name) & (cap - 1);
            for (; slot[h] != 0; h = (h + 1) & (cap - 1)) {
                unsigned li = (slot[h] - 1u) / SA_OP_MAX_FIELDS;
                unsigned lj = (slot[h] - 1u) % SA_OP_MAX_FIELDS;
                const sa_field *g = &l[li].f[lj];
                if (strcmp(g->name, f->name) != 0)
                    continue;
                if (li == (unsigned)i)
                    return sa_err_set(err, SA_EINVAL, "%s: duplicate column \"%s\"",
                                      l[i].section, f->name);
                if (g->val.type_oid != f->val.type_oid)
                    return sa_err_set(err, SA_EINVAL,
                                      "%s: column \"%s\" has type oid %u but %u in %s",
                                      l[i].section, f->name, (unsigned)f->val.type_oid,
                                      (unsigned)g->val.type_oid, l[li].section);
            }
            slot[h] = (uint16_t)(1u + (unsigned)i * SA_OP_MAX_FIELDS + j);
        }
    }
    return 0;
}

static int check_name(const char *s, const char *what, sa_err *err)
{
    if (s == NULL)
        return sa_err_set(err, SA_EINVAL, "%s is missing", what);
    size_t n = strnlen(s, SA_OP_MAX_NAME + 1);
    if (n == 0)
        return sa_err_set(err, SA_EINVAL, "%s is empty", what);
    if (n > SA_OP_MAX_NAME)
        return sa_err_set(err, SA_ETOOBIG, "%s is longer than %u bytes", what,
                          SA_OP_MAX_NAME);
    return 0;
}

/* Per-field checks of one list; `unchanged_ok` says whether the UNCHANGED
 * marker may appear in it. */
static int check_list(const field_list *l, int unchanged_ok, sa_err *err)
{
    char what[64];
    if (l->n > SA_OP_MAX_FIELDS)
        return sa_err_set(err, SA_ETOOBIG, "%s: %u columns, more than %u", l->section,
                          (unsigned)l->n, SA_OP_MAX_FIELDS);
    if (l->n > 0 && l->f == NULL)
        return sa_err_set(err, SA_EINVAL, "%s: %u columns but no array", l->section,
                          (unsigned)l->n);
    for (uint32_t i = 0; i < l->n; i++) {
        const sa_field *f = &l->f[i];
        if (f->name == NULL || f->name[0] == '\0' ||
            strnlen(f->name, SA_OP_MAX_NAME + 1) > SA_OP_MAX_NAME) {
            /* the label is formatted only when there is an error to report */
            snprintf(what, sizeof what, "%s[%u]: column name", l->section, (unsigned)i);
            return check_name(f->name, what, err);
        }
        if (!val_kind_valid(f->val.kind))
            return sa_err_set(err, SA_EINVAL, "%s: column \"%s\": unknown value kind %d",
                              l->section, f->name, (int)f->val.kind);
        if (f->val.kind == SA_VAL_UNCHANGED && !unchanged_ok)
            return sa_err_set(err, SA_EINVAL,
                              "%s: column \"%s\": the unchanged marker is only allowed in "
                              "the cols of an update",
                              l->section, f->name);
        if (f->val.kind != SA_VAL_TEXT)
            continue;
        if (f->val.len > SA_OP_MAX_VALUE)
            return sa_err_set(err, SA_ETOOBIG, "%s: column \"%s\": value of %u bytes, more "
                              "than %u", l->section, f->name, (unsigned)f->val.len,
                              SA_OP_MAX_VALUE);
        if (f->val.len > 0 && f->val.data == NULL)
            return sa_err_set(err, SA_EINVAL, "%s: column \"%s\": value has no data",
                              l->section, f->name);
    }
    return 0;
}

int sa_op_validate(const sa_op *op, sa_err *err)
{
    if (op == NULL)
        return sa_err_set(err, SA_EINVAL, "op is NULL");
    const char *kind = sa_op_kind_name(op->kind);
    if (kind == NULL)
        return sa_err_set(err, SA_EINVAL, "kind: unknown op kind %d", (int)op->kind);
    if (op->flags & ~SA_OP_FLAGS_KNOWN)
        return sa_err_set(err, SA_EINVAL, "flags: unknown bits 0x%x",
                          (unsigned)(op->flags & ~SA_OP_FLAGS_KNOWN));
    int rc = check_name(op->origin, "origin", err);
    if (rc == 0)
        rc = check_name(op->table, "table", err);
    if (rc != 0)
        return rc;

    field_list l[3] = {
        {"key", op->key, op->nkey},
        {"cols", op->cols, op->ncols},
        {"base", op->base, op->nbase},
    };
    for (int i = 0; i < 3; i++) {
        rc = check_list(&l[i], i == 1 && op->kind == SA_OP_UPDATE, err);
        if (rc != 0)
            return rc;
    }
    if (op->nbase > 0 && !(op->flags & SA_OP_HAS_BASE))
        return sa_err_set(err, SA_EINVAL, "base: %u columns without SA_OP_HAS_BASE",
                          (unsigned)op->nbase);
    if (!(op->flags & SA_OP_HAS_PG) &&
        (op->pg_lsn != 0 || op->pg_xid != 0 || op->pg_commit_time != 0))
        return sa_err_set(err, SA_EINVAL, "pg: position set without SA_OP_HAS_PG");
    switch (op->kind) {
    case SA_OP_TRUNCATE:
        if (op->nkey || op->ncols || op->nbase)
            return sa_err_set(err, SA_EINVAL, "truncate: must have no key, cols or base");
        break;
    case SA_OP_INSERT:
        if (op->ncols == 0)
            return sa_err_set(err, SA_EINVAL, "cols: an insert needs at least one column");
        break;
    case SA_OP_UPDATE:
    case SA_OP_DELETE:
        if (op->nkey == 0)
            return sa_err_set(err, SA_EINVAL, "key: an op of kind %s needs a key", kind);
        break;
    }
    return check_names(l, 3, err);
}

/* ---- encoding ------------------------------------------------------------ */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t bytes_len(size_t n) { return varint_len(n) + n; }

static size_t fields_size(const sa_field *f, uint32_t n)
{
    size_t sz = varint_len(n);
    for (uint32_t i = 0; i < n; i++) {
        sz += bytes_len(strlen(f[i].name)) + 1 + varint_len(f[i].val.type_oid);
        if (f[i].val.kind == SA_VAL_TEXT)
            sz += bytes_len(f[i].val.len);
    }
    return sz;
}

static uint8_t *raw_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Every caller has reserved fields_size(f, n) bytes first, so the list is
 * written straight into the buffer (this is the hot path of every append);
 * the assert checks the two stay in step. */
static int put_fields(sa_buf *b, const sa_field *f, uint32_t n)
{
    uint8_t *p = b->data + b->len;
    uint8_t *start = p;
    p = raw_varint(p, n);
    for (uint32_t i = 0; i < n; i++) {
        size_t nl = strlen(f[i].name);
        p = raw_varint(p, nl);
        memcpy(p, f[i].name, nl);
        p += nl;
        *p++ = (uint8_t)f[i].val.kind;
        p = raw_varint(p, f[i].val.type_oid);
        if (f[i].val.kind == SA_VAL_TEXT) {
            p = raw_varint(p, f[i].val.len);
            if (f[i].val.len > 0)
                memcpy(p, f[i].val.data, f[i].val.len);
            p += f[i].val.len;
        }
    }
    assert((size_t)(p - start) == fields_size(f, n));
    assert(b->len + (size_t)(p - start) <= b->cap);
    b->len += (size_t)(p - start);
    return 0;
}

size_t sa__fields_size(const sa_field *f, uint32_t n) { return fields_size(f, n); }

size_t sa__op_fields_offset(const sa_op *op)
{
    return 3 + bytes_len(strlen(op->origin)) + varint_len(op->epoch) + varint_len(op->seq) + 8 +
           bytes_len(strlen(op->table));
}

int sa__fields_encode_trusted(const sa_field *f, uint32_t n, sa_buf *out)
{
    size_t old = out->len;
    int rc = sa_buf_reserve(out, fields_size(f, n));
    if (rc == 0)
        rc = put_fields(out, f, n);
    if (rc != 0)
        out->len = old;
    return rc;
}

int sa_fields_encode(const sa_field *f, uint32_t n, sa_buf *out, sa_err *err)
{
    size_t old = out->len;
    field_list l = {"fields", f, n};
    int rc = check_list(&l, 1, err);
    if (rc == 0)
        rc = check_names(&l, 1, err);
    if (rc != 0)
        goto done;
    rc = sa_buf_reserve(out, fields_size(f, n));
    if (rc == 0)
        rc = put_fields(out, f, n);
    if (rc != 0)
        sa_err_set(err, rc, "encoding fields: out of memory");
done:
    if (rc != 0)
        out->len = old;
    return rc;
}

int sa_op_encode(const sa_op *op, sa_buf *out, sa_err *err)
{
    int rc = sa_op_validate(op, err);
    return rc != 0 ? rc : sa__op_encode_trusted(op, out, err);
}

int sa__op_encode_trusted(const sa_op *op, sa_buf *out, sa_err *err)
{
    size_t old = out->len;
    int rc = 0;

    size_t sz = 3 + bytes_len(strlen(op->origin)) + varint_len(op->epoch) +
                varint_len(op->seq) + 8 + bytes_len(strlen(op->table)) +
                fields_size(op->key, op->nkey) + fields_size(op->cols, op->ncols);
    if (op->flags & SA_OP_HAS_BASE)
        sz += fields_size(op->base, op->nbase);
    if (op->flags & SA_OP_HAS_PG)
        sz += 8 + varint_len(op->pg_xid) + 8;
    if (sz > SA_OP_MAX_ENCODED) {
        rc = sa_err_set(err, SA_ETOOBIG, "encoded op would be %zu bytes, more than %u", sz,
                        SA_OP_MAX_ENCODED);
        goto done;
    }

    rc = sa_buf_reserve(out, sz);
    if (rc == 0)
        rc = sa_buf_put_u8(out, SA_OP_CODEC_VERSION);
    if (rc == 0)
        rc = sa_buf_put_u8(out, (uint8_t)op->kind);
    if (rc == 0)
        rc = sa_buf_put_u8(out, (uint8_t)op->flags);
    if (rc == 0)
        rc = sa_buf_put_str(out, op->origin);
    if (rc == 0)
        rc = sa_buf_put_varint(out, op->epoch);
    if (rc == 0)
        rc = sa_buf_put_varint(out, op->seq);
    if (rc == 0)
        rc = sa_buf_put_u64be(out, op->hlc);
    if (rc == 0)
        rc = sa_buf_put_str(out, op->table);
    if (rc == 0)
        rc = put_fields(out, op->key, op->nkey);
    if (rc == 0)
        rc = put_fields(out, op->cols, op->ncols);
    if (rc == 0 && (op->flags & SA_OP_HAS_BASE))
        rc = put_fields(out, op->base, op->nbase);
    if (rc == 0 && (op->flags & SA_OP_HAS_PG)) {
        rc = sa_buf_put_u64be(out, op->pg_lsn);
        if (rc == 0)
            rc = sa_buf_put_varint(out, op->pg_xid);
        if (rc == 0)
            rc = sa_buf_put_u64be(out, (uint64_t)op->pg_commit_time);
    }
    if (rc != 0)
        sa_err_set(err, rc, "encoding op: out of memory");
done:
    if (rc != 0)
        out->len = old;
    return rc;
}

/* ---- one-block arena (decode and clone) ---------------------------------- */

/*
 * Both decode and clone walk their source twice: once with an empty arena
 * that only counts (fields, string bytes), then, after one sa_malloc, with
 * an arena that hands out the counted space.
 */
typedef struct arena {
    sa_field *fnext; /* NULL while measuring */
    char *snext;
    size_t nfields;
    size_t nbytes;
} arena;

static sa_field *arena_fields(arena *a, size_t n)
{
    sa_field *f = a->fnext;
    a->nfields += n;
    if (f != NULL)
        a->fnext += n;
    return f;
}

/* Copy n bytes plus a NUL; NULL while measuring. */
static const char *arena_str(arena *a, const void *p, size_t n)
{
    a->nbytes += n + 1;
    if (a->snext == NULL)
        return NULL;
    char *s = a->snext;
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    a->snext += n + 1;
    return s;
}

/* Allocate head + the measured fields and strings; leaves `a` ready to
 * fill.  The fields start at the first sa_field-aligned offset >= head. */
static void *arena_alloc(arena *a, size_t head)
{
    size_t al = alignof(sa_field);
    size_t foff = (head + al - 1) / al * al;
    size_t soff = foff + a->nfields * sizeof(sa_field);
    uint8_t *blk = sa_malloc(soff + a->nbytes);
    if (blk == NULL)
        return NULL;
    a->fnext = (sa_field *)(void *)(blk + foff);
    a->snext = (char *)blk + soff;
    a->nfields = 0;
    a->nbytes = 0;
    return blk;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct dec {
    sa_rd rd;
    size_t total; /* input length, for offsets in messages */
    arena *a;
    sa_err *err;
    const char *sect; /* inside a field list: its section, for labels */
    long idx;         /* field index, -1 for the list's count */
} dec;

static size_t dec_off(const dec *d) { return d->total - d->rd.left; }

/* Labels of field-level reads name their section and index; they are
 * formatted only when an error is reported, never on the success path. */
static const char *dec_label(const dec *d, const char *what, char *buf, size_t cap)
{
    if (d->sect == NULL)
        return what;
    if (d->idx < 0)
        snprintf(buf, cap, "%s %s", d->sect, what);
    else
        snprintf(buf, cap, "%s[%ld] %s", d->sect, d->idx, what);
    return buf;
}

static int dec_fail(dec *d, int rc, const char *what)
{
    char lb[96];
    what = dec_label(d, what, lb, sizeof lb);
    switch (rc) {
    case SA_ETRUNCATED:
        return sa_err_set(d->err, rc, "op codec: input ends at byte %zu reading %s", d->total,
                          what);
    case SA_ETOOBIG:
        return sa_err_set(d->err, rc, "op codec: %s at byte %zu exceeds its limit", what,
                          dec_off(d));
    default:
        return sa_err_set(d->err, SA_ECORRUPT, "op codec: bad %s at byte %zu", what,
                          dec_off(d));
    }
}

static int dec_u8(dec *d, uint8_t *v, const char *what)
{
    int rc = sa_rd_u8(&d->rd, v);
    return rc ? dec_fail(d, rc, what) : 0;
}

static int dec_u64(dec *d, uint64_t *v, const char *what)
{
    int rc = sa_rd_u64be(&d->rd, v);
    return rc ? dec_fail(d, rc, what) : 0;
}

/* A minimal varint <= max (SA_ETOOBIG beyond it when `too_big`, else
 * SA_ECORRUPT). */
static int dec_varint(dec *d, uint64_t *v, uint64_t max, int too_big, const char *what)
{
    size_t left = d->rd.left;
    int rc = sa_rd_varint(&d->rd, v);
    if (rc != 0)
        return dec_fail(d, rc, what);
    if (left - d->rd.left != varint_len(*v)) {
        char lb[96];
        return sa_err_set(d->err, SA_ECORRUPT, "op codec: non-minimal varint in %s at byte %zu",
                          dec_label(d, what, lb, sizeof lb), dec_off(d));
    }
    if (*v > max)
        return dec_fail(d, too_big ? SA_ETOOBIG : SA_ECORRUPT, what);
    return 0;
}

static int dec_bytes(dec *d, const uint8_t **p, size_t *n, size_t max, const char *what)
{
    uint64_t len = 0;
    int rc = dec_varint(d, &len, max, 1, what);
    if (rc == 0) {
        rc = sa_rd_raw(&d->rd, p, (size_t)len);
        if (rc != 0)
            return dec_fail(d, rc, what);
        *n = (size_t)len;
    }
    return rc;
}

static int dec_name(dec *d, const char **out, const char *what)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = dec_bytes(d, &p, &n, SA_OP_MAX_NAME, what);
    if (rc != 0)
        return rc;
    if (n == 0 || memchr(p, 0, n) != NULL) {
        char lb[96];
        return sa_err_set(d->err, SA_ECORRUPT, "op codec: %s before byte %zu is %s",
                          dec_label(d, what, lb, sizeof lb), dec_off(d),
                          n == 0 ? "empty" : "not a C string");
    }
    *out = arena_str(d->a, p, n);
    return 0;
}

static int dec_fields(dec *d, const char *section, const sa_field **out, uint32_t *nout)
{
    uint64_t n;
    d->sect = section;
    d->idx = -1;
    int rc = dec_varint(d, &n, SA_OP_MAX_FIELDS, 1, "count");
    if (rc != 0)
        goto done;
    sa_field *f = arena_fields(d->a, (size_t)n);
    for (uint64_t i = 0; i < n; i++) {
        const char *name = NULL;
        uint8_t kind;
        uint64_t oid;
        d->idx = (long)i;
        if ((rc = dec_name(d, &name, "name")) != 0)
            goto done;
        rc = dec_u8(d, &kind, "value kind");
        if (rc == 0 && !val_kind_valid((sa_val_kind)kind))
            rc = sa_err_set(d->err, SA_ECORRUPT, "op codec: %s[%u]: unknown value kind %u",
                            section, (unsigned)i, kind);
        if (rc != 0)
            goto done;
        if ((rc = dec_varint(d, &oid, UINT32_MAX, 0, "type oid")) != 0)
            goto done;
        sa_value v = {.kind = (sa_val_kind)kind, .type_oid = (uint32_t)oid};
        if (kind == SA_VAL_TEXT) {
            const uint8_t *p = NULL;
            size_t len = 0;
            if ((rc = dec_bytes(d, &p, &len, SA_OP_MAX_VALUE, "value")) != 0)
                goto done;
            v.len = (uint32_t)len;
            v.data = arena_str(d->a, p, len);
        }
        if (f != NULL)
            f[i] = (sa_field){.name = name, .val = v};
    }
    *out = f;
    *nout = (uint32_t)n;
done:
    d->sect = NULL;
    return rc;
}

/* Parse a whole op into *op (strings and fields from d->a). */
static int dec_op(dec *d, sa_op *op)
{
    uint8_t ver, kind, flags;
    uint64_t xid;
    int rc = dec_u8(d, &ver, "version");
    if (rc != 0)
        return rc;
    if (ver < SA_OP_CODEC_MIN || ver > SA_OP_CODEC_MAX)
        return sa_err_set(d->err, SA_EVERSION,
                          "op codec: version %u is not supported (supported: %d to %d)", ver,
                          SA_OP_CODEC_MIN, SA_OP_CODEC_MAX);
    rc = dec_u8(d, &kind, "kind");
    if (rc == 0 && sa_op_kind_name((sa_op_kind)kind) == NULL)
        rc = sa_err_set(d->err, SA_ECORRUPT, "op codec: unknown op kind %u", kind);
    if (rc == 0)
        rc = dec_u8(d, &flags, "flags");
    if (rc == 0 && (flags & ~SA_OP_FLAGS_KNOWN))
        rc = sa_err_set(d->err, SA_ECORRUPT, "op codec: reserved flag bits 0x%02x are set",
                        (unsigned)(flags & ~SA_OP_FLAGS_KNOWN));
    if (rc != 0)
        return rc;
    memset(op, 0, sizeof *op);
    op->kind = (sa_op_kind)kind;
    op->flags = flags;
    rc = dec_name(d, &op->origin, "origin");
    if (rc == 0)
        rc = dec_varint(d, &op->epoch, UINT64_MAX, 0, "epoch");
    if (rc == 0)
        rc = dec_varint(d, &op->seq, UINT64_MAX, 0, "seq");
    if (rc == 0)
        rc = dec_u64(d, &op->hlc, "hlc");
    if (rc == 0)
        rc = dec_name(d, &op->table, "table");
    if (rc == 0)
        rc = dec_fields(d, "key", &op->key, &op->nkey);
    if (rc == 0)
        rc = dec_fields(d, "cols", &op->cols, &op->ncols);
    if (rc == 0 && (flags & SA_OP_HAS_BASE))
        rc = dec_fields(d, "base", &op->base, &op->nbase);
    if (rc == 0 && (flags & SA_OP_HAS_PG)) {
        uint64_t t;
        rc = dec_u64(d, &op->pg_lsn, "pg_lsn");
        if (rc == 0)
            rc = dec_varint(d, &xid, UINT32_MAX, 0, "pg_xid");
        if (rc == 0)
            rc = dec_u64(d, &t, "pg_commit_time");
        if (rc == 0) {
            op->pg_xid = (uint32_t)xid;
            memcpy(&op->pg_commit_time, &t, sizeof t); /* two's complement */
        }
    }
    if (rc == 0 && d->rd.left != 0)
        rc = sa_err_set(d->err, SA_ECORRUPT, "op codec: %zu trailing bytes after the op",
                        d->rd.left);
    return rc;
}

int sa_op_decode(const void *buf, size_t len, sa_op **out, sa_err *err)
{
    arena a = {0};
    dec d = {.total = len, .a = &a, .err = err};
    sa_op tmp, *op = NULL;
    int rc;
    if (len > SA_OP_MAX_ENCODED) {
        rc = sa_err_set(err, SA_ETOOBIG, "op codec: input of %zu bytes, more than %u", len,
                        SA_OP_MAX_ENCODED);
        goto done;
    }
    if (len == 0) {
        rc = sa_err_set(err, SA_ETRUNCATED, "op codec: empty input");
        goto done;
    }
    sa_rd_init(&d.rd, buf, len);
    rc = dec_op(&d, &tmp); /* measure: everything checked, nothing allocated */
    if (rc != 0)
        goto done;
    op = arena_alloc(&a, sizeof *op);
    if (op == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "op codec: out of memory decoding %zu bytes", len);
        goto done;
    }
    sa_rd_init(&d.rd, buf, len);
    rc = dec_op(&d, op); /* cannot fail: same bytes as the measuring pass */
    if (rc == 0) {
        rc = sa_op_validate(op, err);
        if (rc != 0) {
            sa_err_wrap(err, "op codec: decoded op is invalid");
            rc = err ? (err->code = SA_ECORRUPT) : SA_ECORRUPT;
        }
    }
done:
    if (rc == 0)
        *out = op;
    else
        sa_free(op);
    return rc;
}

int sa_fields_decode(sa_rd *rd, sa_field **out, uint32_t *n, sa_err *err)
{
    arena a = {0};
    dec d = {.rd = *rd, .total = rd->left, .a = &a, .err = err};
    const sa_field *f;
    sa_field *blk = NULL;
    uint32_t cnt;
    int rc = dec_fields(&d, "fields", &f, &cnt);
    if (rc != 0)
        goto done;
    blk = arena_alloc(&a, 0);
    if (blk == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "op codec: out of memory decoding fields");
        goto done;
    }
    d.rd = *rd;
    rc = dec_fields(&d, "fields", &f, &cnt);
    if (rc == 0) {
        field_list l = {"fields", f, cnt};
        rc = check_names(&l, 1, err);
        if (rc != 0)
            rc = err ? (err->code = SA_ECORRUPT) : SA_ECORRUPT;
    }
done:
    if (rc == 0) {
        *rd = d.rd;
        *out = blk;
        *n = cnt;
    } else {
        sa_free(blk);
    }
    return rc;
}

/* ---- clone, free, equality ----------------------------------------------- */

static const sa_field *copy_fields(arena *a, const sa_field *src, uint32_t n)
{
    sa_field *f = arena_fields(a, n);
    for (uint32_t i = 0; i < n; i++) {
        const char *name = arena_str(a, src[i].name, strlen(src[i].name));
        sa_value v = {.kind = src[i].val.kind, .type_oid = src[i].val.type_oid};
        if (v.kind == SA_VAL_TEXT) {
            v.len = src[i].val.len;
            v.data = arena_str(a, src[i].val.data, v.len);
        }
        if (f != NULL)
            f[i] = (sa_field){.name = name, .val = v};
    }
    return f;
}

/* dst may be NULL while measuring. */
static void copy_op(arena *a, const sa_op *src, sa_op *dst)
{
    sa_op o = *src;
    o.origin = arena_str(a, src->origin, strlen(src->origin));
    o.table = arena_str(a, src->table, strlen(src->table));
    o.key = copy_fields(a, src->key, src->nkey);
    o.cols = copy_fields(a, src->cols, src->ncols);
    o.base = copy_fields(a, src->base, src->nbase);
    if (dst != NULL)
        *dst = o;
}

int sa_op_clone(const sa_op *op, sa_op **out, sa_err *err)
{
    arena a = {0};
    sa_op *dst = NULL;
    int rc = sa_op_validate(op, err);
    if (rc != 0)
        goto done;
    copy_op(&a, op, NULL);
    dst = arena_alloc(&a, sizeof *dst);
    if (dst == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "cloning op: out of memory");
        goto done;
    }
    copy_op(&a, op, dst);
done:
    if (rc == 0)
        *out = dst;
    return rc;
}

void sa_op_free(sa_op *op) { sa_free(op); }

static int value_equal(const sa_value *a, const sa_value *b)
{
    if (a->kind != b->kind || a->type_oid != b->type_oid)
        return 0;
    if (a->kind != SA_VAL_TEXT)
        return 1;
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/*
 * Lists are equal when they hold the same columns with equal values, in any
 * order: an op means the same whatever its column order, and the JSON form
 * moves UNCHANGED columns to the end.  Names are unique in valid ops, so
 * matching each of a's columns in b (same count) is a bijection.  The common
 * case, same order, is checked first in linear time.
 */
static int fields_equal(const sa_field *a, uint32_t na, const sa_field *b, uint32_t nb)
{
    if (na != nb)
        return 0;
    uint32_t i = 0;
    while (i < na && strcmp(a[i].name, b[i].name) == 0) {
        if (!value_equal(&a[i].val, &b[i].val))
            return 0;
        i++;
    }
    for (; i < na; i++) {
        uint32_t j = 0;
        while (j < nb && strcmp(a[i].name, b[j].name) != 0)
            j++;
        if (j == nb || !value_equal(&a[i].val, &b[j].val))
            return 0;
    }
    return 1;
}

/* Defined for valid ops (sa_op_validate): names must be non-NULL.  pg_* are
 * compared only under SA_OP_HAS_PG, where they mean something. */
int sa_op_equal(const sa_op *a, const sa_op *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->kind != b->kind || a->flags != b->flags || a->epoch != b->epoch ||
        a->seq != b->seq || a->hlc != b->hlc)
        return 0;
    if (strcmp(a->origin, b->origin) != 0 || strcmp(a->table, b->table) != 0)
        return 0;
    if ((a->flags & SA_OP_HAS_PG) &&
        (a->pg_lsn != b->pg_lsn || a->pg_xid != b->pg_xid ||
         a->pg_commit_time != b->pg_commit_time))
        return 0;
    return fields_equal(a->key, a->nkey, b->key, b->nkey) &&
           fields_equal(a->cols, a->ncols, b->cols, b->ncols) &&
           fields_equal(a->base, a->nbase, b->base, b->nbase);
}
