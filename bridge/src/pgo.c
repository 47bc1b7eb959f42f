/*
 * pgo.c — the pgoutput decoder: bytes of one logical replication message in,
 * one decoded message out (see pgo.h for the contract).
 *
 * Wire format (PostgreSQL "Logical Replication Message Formats"; all integers
 * big-endian; String = bytes up to a NUL; [xid] = Int32 xid present only
 * between Stream Start and Stream Stop):
 *
 *   B  Int64 final LSN, Int64 commit time, Int32 xid
 *   M  [xid] Int8 flags (1 = transactional), Int64 LSN, String prefix,
 *      Int32 n, Byte*n content
 *   C  Int8 flags (0), Int64 commit LSN, Int64 end LSN, Int64 commit time
 *   O  Int64 commit LSN on the origin, String origin name
 *   R  [xid] Int32 relid, String namespace ("" = pg_catalog), String name,
 *      Int8 replica identity (d n f i), Int16 ncols,
 *      per column: Int8 flags (1 = key), String name, Int32 type, Int32 typmod
 *   Y  [xid] Int32 type OID, String namespace, String name
 *   I  [xid] Int32 relid, 'N' TupleData
 *   U  [xid] Int32 relid, optional ('K' | 'O') TupleData, 'N' TupleData
 *   D  [xid] Int32 relid, ('K' | 'O') TupleData
 *   T  [xid] Int32 nrels, Int8 options (1 cascade, 2 restart identity),
 *      Int32*nrels relids
 *   S  Int32 xid, Int8 first segment (0 | 1)          (proto >= 2)
 *   E  (nothing)                                       (proto >= 2)
 *   c  Int32 xid, Int8 flags (0), Int64 commit LSN, Int64 end LSN,
 *      Int64 commit time                               (proto >= 2)
 *   A  Int32 xid, Int32 subxid [, Int64 abort LSN, Int64 abort time
 *      when proto >= 4 and parallel streaming]         (proto >= 2)
 *   TupleData: Int16 ncols, per column Byte1 kind: 'n' null,
 *      'u' unchanged TOAST, 't' Int32 len + bytes (text), 'b' (binary; refused)
 *   Times are microseconds since 2000-01-01 00:00 UTC.
 *
 * Decoding is two-phase: parse and check everything into the message arena
 * (a copy of the input plus arrays), then commit state changes (relation
 * cache, stream state), so a failing message changes nothing.
 */
#include "pgo.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sa/sa_alloc.h"
#include "sa/sa_buf.h"

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
#define PGO_EPOCH_OFFSET_US INT64_C(946684800000000)

/* ---- arena: the memory of one decoded message ---------------------------- */

typedef struct pgo_block {
    struct pgo_block *next;
    size_t cap;
    size_t used;
    _Alignas(16) unsigned char data[];
} pgo_block;

typedef struct pgo_arena {
    pgo_block *head;
} pgo_arena;

#define PGO_BLOCK_MIN 4096u

static void *arena_alloc(pgo_arena *a, size_t n)
{
    if (n > SIZE_MAX - 15u)
        return NULL;
    n = n == 0 ? 16u : (n + 15u) & ~(size_t)15u; /* zero size: still a valid pointer */
    pgo_block *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n < PGO_BLOCK_MIN ? PGO_BLOCK_MIN : n;
        if (cap > SIZE_MAX - sizeof(pgo_block))
            return NULL;
        b = sa_malloc(sizeof(pgo_block) + cap);
        if (b == NULL)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void *arena_zalloc(pgo_arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

static void arena_reset(pgo_arena *a)
{
    while (a->head != NULL) {
        pgo_block *next = a->head->next;
        sa_free(a->head);
        a->head = next;
    }
}

/* ---- the decoder ------------------------------------------------------------ */

/* Relation cache: open addressing, linear probing, relid 0 = empty slot
 * (pgoutput never sends InvalidOid; the decoder rejects it). */
typedef struct pgo_relmap {
    pgo_relation **slots;
    size_t cap; /* power of two, or 0 */
    size_t n;
} pgo_relmap;

struct pgo_decoder {
    int proto;
    int in_stream;
    uint32_t stream_xid;
    pgo_relmap rels;
    pgo_arena arena;
    const pgo_msg *msg; /* the current message (in the arena), or NULL */
};

const char *pgo_msg_type_name(int type)
{
    switch (type) {
    case PGO_BEGIN:
        return "Begin";
    case PGO_MESSAGE:
        return "Message";
    case PGO_COMMIT:
        return "Commit";
    case PGO_ORIGIN:
        return "Origin";
    case PGO_RELATION:
        return "Relation";
    case PGO_TYPE:
        return "Type";
    case PGO_INSERT:
        return "Insert";
    case PGO_UPDATE:
        return "Update";
    case PGO_DELETE:
        return "Delete";
    case PGO_TRUNCATE:
        return "Truncate";
    case PGO_STREAM_START:
        return "Stream Start";
    case PGO_STREAM_STOP:
        return "Stream Stop";
    case PGO_STREAM_COMMIT:
        return "Stream Commit";
    case PGO_STREAM_ABORT:
        return "Stream Abort";
    case PGO_BEGIN_PREPARE:
        return "Begin Prepare";
    case PGO_PREPARE:
        return "Prepare";
    case PGO_COMMIT_PREPARED:
        return "Commit Prepared";
    case PGO_ROLLBACK_PREPARED:
        return "Rollback Prepared";
    case PGO_STREAM_PREPARE:
        return "Stream Prepare";
    }
    return "unknown";
}

int pgo_decoder_new(int proto_version, pgo_decoder **out, sa_err *err)
{
    if (out == NULL)
        return sa_err_set(err, SA_EINVAL, "pgo_decoder_new: out is NULL");
    if (proto_version < PGO_PROTO_MIN || proto_version > PGO_PROTO_MAX)
        return sa_err_set(err, SA_EVERSION,
                          "pgoutput proto_version %d is not supported (supported: %d to %d)",
                          proto_version, PGO_PROTO_MIN, PGO_PROTO_MAX);
    pgo_decoder *d = sa_calloc(1, sizeof *d);
    if (d == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory allocating a pgoutput decoder");
    d->proto = proto_version;
    *out = d;
    return 0;
}

void pgo_decoder_release_msg(pgo_decoder *d)
{
    if (d == NULL)
        return;
    arena_reset(&d->arena);
    d->msg = NULL;
}

void pgo_decoder_free(pgo_decoder *d)
{
    if (d == NULL)
        return;
    pgo_decoder_release_msg(d);
    for (size_t i = 0; i < d->rels.cap; i++)
        sa_free(d->rels.slots[i]);
    sa_free(d->rels.slots);
    sa_free(d);
}

int pgo_decoder_in_stream(const pgo_decoder *d)
{
    return d != NULL && d->in_stream;
}

/* ---- relation cache ---------------------------------------------------------- */

static size_t relmap_slot(const pgo_relmap *m, uint32_t relid)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)(relid * UINT32_C(2654435761)) & mask;
    while (m->slots[i] != NULL && m->slots[i]->relid != relid)
        i = (i + 1) & mask;
    return i;
}

const pgo_relation *pgo_relation_get(const pgo_decoder *d, uint32_t relid)
{
    if (d == NULL || d->rels.cap == 0 || relid == 0)
        return NULL;
    return d->rels.slots[relmap_slot(&d->rels, relid)];
}

static int relmap_grow(pgo_relmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    pgo_relation **slots = sa_calloc(cap, sizeof *slots);
    if (slots == NULL)
        return SA_ENOMEM;
    pgo_relmap nm = {slots, cap, m->n};
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i] != NULL)
            nm.slots[relmap_slot(&nm, m->slots[i]->relid)] = m->slots[i];
    sa_free(m->slots);
    *m = nm;
    return 0;
}

/* Deep-copy a parsed relation (pointing into the message arena) into one
 * allocation owned by the cache. */
static pgo_relation *relation_clone(const pgo_relation *r)
{
    size_t nsp = strlen(r->nspname), rel = strlen(r->relname);
    size_t size = sizeof(pgo_relation) + (size_t)r->ncols * sizeof(pgo_column);
    size += nsp + 1 + rel + 1 + nsp + 1 + rel + 1;
    for (uint16_t i = 0; i < r->ncols; i++)
        size += strlen(r->cols[i].name) + 1;
    pgo_relation *c = sa_malloc(size);
    if (c == NULL)
        return NULL;
    pgo_column *cols = (pgo_column *)(c + 1);
    char *s = (char *)(cols + r->ncols);
    *c = *r;
    c->cols = r->ncols ? cols : NULL;
    c->nspname = memcpy(s, r->nspname, nsp + 1);
    s += nsp + 1;
    c->relname = memcpy(s, r->relname, rel + 1);
    s += rel + 1;
    c->qualname = s;
    memcpy(s, r->nspname, nsp);
    s[nsp] = '.';
    memcpy(s + nsp + 1, r->relname, rel + 1);
    s += nsp + 1 + rel + 1;
    for (uint16_t i = 0; i < r->ncols; i++) {
        size_t n = strlen(r->cols[i].name) + 1;
        cols[i] = r->cols[i];
        cols[i].name = memcpy(s, r->cols[i].name, n);
        s += n;
    }
    return c;
}

/* Install (or replace) a relation; on failure the cache is unchanged. */
static int relmap_put(pgo_relmap *m, const pgo_relation *parsed, const pgo_relation **out)
{
    pgo_relation *c = relation_clone(parsed);
    if (c == NULL)
        return SA_ENOMEM;
    if (m->cap == 0 || (m->n + 1) * 2 > m->cap) {
        if (m->cap == 0 || m->slots[relmap_slot(m, c->relid)] == NULL) {
            if (relmap_grow(m) != 0) {
                sa_free(c);
                return SA_ENOMEM;
            }
        }
    }
    size_t i = relmap_slot(m, c->relid);
    if (m->slots[i] == NULL)
        m->n++;
    sa_free(m->slots[i]); /* schema change: the new description replaces the old */
    m->slots[i] = c;
    *out = c;
    return 0;
}

/* ---- cursor: checked reads that name the message and the LSN -------------- */

typedef struct pgo_cur {
    sa_rd rd;
    size_t total; /* message length including the type byte */
    const char *what;
    uint64_t lsn;
    sa_err *err;
} pgo_cur;

static int cur_fail(pgo_cur *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cur_fail(pgo_cur *c, int code, const char *fmt, ...)
{
    char detail[SA_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (c->total == 0) /* not parsing: no position to give */
        return sa_err_set(c->err, code, "pgoutput %s message at %X/%X: %s", c->what,
                          (unsigned)(c->lsn >> 32), (unsigned)c->lsn, detail);
    return sa_err_set(c->err, code, "pgoutput %s message at %X/%X: %s (byte %zu of %zu)", c->what,
                      (unsigned)(c->lsn >> 32), (unsigned)c->lsn, detail, c->total - c->rd.left,
                      c->total);
}

static int cur_short(pgo_cur *c, const char *field, size_t need)
{
    return cur_fail(c, SA_ETRUNCATED, "truncated reading %s: need %zu bytes, %zu left", field, need,
                    c->rd.left);
}

static int rd_u8(pgo_cur *c, const char *field, uint8_t *v)
{
    return sa_rd_u8(&c->rd, v) == 0 ? 0 : cur_short(c, field, 1);
}

static int rd_u32(pgo_cur *c, const char *field, uint32_t *v)
{
    return sa_rd_u32be(&c->rd, v) == 0 ? 0 : cur_short(c, field, 4);
}

static int rd_i32(pgo_cur *c, const char *field, int32_t *v)
{
    uint32_t u = 0;
    if (sa_rd_u32be(&c->rd, &u) != 0)
        return cur_short(c, field, 4);
    *v = (int32_t)u; /* implementation-defined, two's complement everywhere we build */
    return 0;
}

static int rd_i16(pgo_cur *c, const char *field, int16_t *v)
{
    uint16_t u = 0;
    if (sa_rd_u16be(&c->rd, &u) != 0)
        return cur_short(c, field, 2);
    *v = (int16_t)u;
    return 0;
}

static int rd_u64(pgo_cur *c, const char *field, uint64_t *v)
{
    return sa_rd_u64be(&c->rd, v) == 0 ? 0 : cur_short(c, field, 8);
}

/* A PostgreSQL TimestampTz, returned as microseconds since the Unix epoch. */
static int rd_time(pgo_cur *c, const char *field, int64_t *v)
{
    uint64_t u = 0;
    int rc = rd_u64(c, field, &u);
    if (rc != 0)
        return rc;
    int64_t pg = (int64_t)u;
    if (pg > INT64_MAX - PGO_EPOCH_OFFSET_US)
        return cur_fail(c, SA_EPROTO, "%s %lld is out of range", field, (long long)pg);
    *v = pg + PGO_EPOCH_OFFSET_US;
    return 0;
}

/* A NUL-terminated string, borrowed from the (arena-owned) message copy.
 * max bounds its length (0 = only the message bounds it). */
static int rd_str(pgo_cur *c, const char *field, size_t max, const char **s)
{
    const uint8_t *nul = memchr(c->rd.p, 0, c->rd.left);
    if (nul == NULL)
        return cur_fail(c, SA_ETRUNCATED, "truncated reading %s: no NUL terminator in %zu bytes",
                        field, c->rd.left);
    size_t n = (size_t)(nul - c->rd.p);
    if (max != 0 && n > max)
        return cur_fail(c, SA_ETOOBIG, "%s is %zu bytes (limit %zu)", field, n, max);
    const uint8_t *p;
    sa_rd_raw(&c->rd, &p, n + 1);
    *s = (const char *)p;
    return 0;
}

/* An Int32 length (checked: not negative, at most max, at most what is left)
 * followed by that many bytes. */
static int rd_lenbytes(pgo_cur *c, const char *field, size_t max, const uint8_t **p, uint32_t *n)
{
    int32_t len = 0;
    int rc = rd_i32(c, field, &len);
    if (rc != 0)
        return rc;
    if (len < 0)
        return cur_fail(c, SA_EPROTO, "%s: negative length %d", field, (int)len);
    if ((size_t)len > max)
        return cur_fail(c, SA_ETOOBIG, "%s: length %d exceeds the limit %zu", field, (int)len, max);
    if ((size_t)len > c->rd.left)
        return cur_fail(c, SA_ETRUNCATED, "%s: length %d exceeds the %zu bytes left", field,
                        (int)len, c->rd.left);
    sa_rd_raw(&c->rd, p, (size_t)len);
    *n = (uint32_t)len;
    return 0;
}

static int cur_nomem(pgo_cur *c)
{
    return cur_fail(c, SA_ENOMEM, "out of memory");
}

/* ---- per-message parsers ---------------------------------------------------- */

typedef struct pgo_ctx {
    pgo_decoder *d;
    pgo_cur *c;
    pgo_msg *m;
    pgo_relation *new_rel; /* Relation: parsed, installed at commit */
} pgo_ctx;

static int parse_begin(pgo_ctx *x)
{
    int rc = rd_u64(x->c, "final LSN", &x->m->begin.final_lsn);
    if (rc == 0)
        rc = rd_time(x->c, "commit time", &x->m->begin.commit_time);
    if (rc == 0)
        rc = rd_u32(x->c, "xid", &x->m->xid);
    return rc;
}

/* Commit and Stream Commit share their tail. */
static int parse_commit_tail(pgo_ctx *x)
{
    int rc = rd_u8(x->c, "flags", &x->m->commit.flags);
    if (rc == 0 && x->m->commit.flags != 0)
        return cur_fail(x->c, SA_EPROTO, "flags 0x%02x: no flags are defined, must be 0",
                        x->m->commit.flags);
    if (rc == 0)
        rc = rd_u64(x->c, "commit LSN", &x->m->commit.commit_lsn);
    if (rc == 0)
        rc = rd_u64(x->c, "end LSN", &x->m->commit.end_lsn);
    if (rc == 0)
        rc = rd_time(x->c, "commit time", &x->m->commit.commit_time);
    return rc;
}

static int parse_origin(pgo_ctx *x)
{
    int rc = rd_u64(x->c, "origin LSN", &x->m->origin.lsn);
    if (rc == 0)
        rc = rd_str(x->c, "origin name", PGO_MAX_NAME, &x->m->origin.name);
    return rc;
}

static int parse_message(pgo_ctx *x)
{
    uint8_t flags = 0;
    int rc = rd_u8(x->c, "flags", &flags);
    if (rc != 0)
        return rc;
    if (flags & ~PGO_MSGFLAG_TRANSACTIONAL)
        return cur_fail(x->c, SA_EPROTO, "flags 0x%02x: unknown bits 0x%02x", flags,
                        flags & ~PGO_MSGFLAG_TRANSACTIONAL);
    x->m->message.transactional = (flags & PGO_MSGFLAG_TRANSACTIONAL) != 0;
    rc = rd_u64(x->c, "LSN", &x->m->message.lsn);
    if (rc == 0)
        rc = rd_str(x->c, "prefix", 0, &x->m->message.prefix);
    if (rc == 0)
        rc = rd_lenbytes(x->c, "content", SIZE_MAX, &x->m->message.content, &x->m->message.len);
    return rc;
}

/* Namespace "" means pg_catalog (proto.c's convention). */
static int rd_nspname(pgo_cur *c, const char **s)
{
    int rc = rd_str(c, "namespace", PGO_MAX_NAME, s);
    if (rc == 0 && (*s)[0] == '\0')
        *s = "pg_catalog";
    return rc;
}

static int rd_name(pgo_cur *c, const char *field, const char **s)
{
    int rc = rd_str(c, field, PGO_MAX_NAME, s);
    if (rc == 0 && (*s)[0] == '\0')
        return cur_fail(c, SA_EPROTO, "%s is empty", field);
    return rc;
}

static int rd_relid(pgo_cur *c, uint32_t *relid)
{
    int rc = rd_u32(c, "relation OID", relid);
    if (rc == 0 && *relid == 0)
        return cur_fail(c, SA_EPROTO, "relation OID 0 is invalid");
    return rc;
}

static int rd_ncols(pgo_cur *c, const char *field, size_t min_bytes_each, uint16_t *out)
{
    int16_t n = 0;
    int rc = rd_i16(c, field, &n);
    if (rc != 0)
        return rc;
    if (n < 0)
        return cur_fail(c, SA_EPROTO, "%s is negative (%d)", field, (int)n);
    if ((unsigned)n > PGO_MAX_COLS)
        return cur_fail(c, SA_ETOOBIG, "%s %d exceeds the limit %u", field, (int)n, PGO_MAX_COLS);
    /* Never allocate from an unchecked count: each column needs bytes. */
    if ((size_t)n * min_bytes_each > c->rd.left)
        return cur_fail(c, SA_ETRUNCATED, "%s %d needs at least %zu bytes, %zu left", field, (int)n,
                        (size_t)n * min_bytes_each, c->rd.left);
    *out = (uint16_t)n;
    return 0;
}

static int parse_relation(pgo_ctx *x)
{
    pgo_cur *c = x->c;
    pgo_relation *r = arena_zalloc(&x->d->arena, sizeof *r);
    if (r == NULL)
        return cur_nomem(c);
    int rc = rd_relid(c, &r->relid);
    if (rc == 0)
        rc = rd_nspname(c, &r->nspname);
    if (rc == 0)
        rc = rd_name(c, "relation name", &r->relname);
    uint8_t ri = 0;
    if (rc == 0)
        rc = rd_u8(c, "replica identity", &ri);
    if (rc != 0)
        return rc;
    if (ri != PGO_REPLIDENT_DEFAULT && ri != PGO_REPLIDENT_NOTHING && ri != PGO_REPLIDENT_FULL &&
        ri != PGO_REPLIDENT_INDEX)
        return cur_fail(c, SA_EPROTO, "unknown replica identity 0x%02x", ri);
    r->replident = (pgo_replident)ri;
    /* per column at least: flags, "" name, type, typmod */
    rc = rd_ncols(c, "column count", 10, &r->ncols);
    if (rc != 0)
        return rc;
    pgo_column *cols = NULL;
    if (r->ncols > 0) {
        cols = arena_zalloc(&x->d->arena, (size_t)r->ncols * sizeof *cols);
        if (cols == NULL)
            return cur_nomem(c);
    }
    for (uint16_t i = 0; i < r->ncols; i++) {
        rc = rd_u8(c, "column flags", &cols[i].flags);
        if (rc != 0)
            return rc;
        if (cols[i].flags & ~PGO_COLFLAG_KEY)
            return cur_fail(c, SA_EPROTO, "column %u: flags 0x%02x: unknown bits", i + 1u,
                            cols[i].flags);
        /* proto.c flags every column of a REPLICA IDENTITY FULL relation */
        if (r->replident == PGO_REPLIDENT_FULL && !(cols[i].flags & PGO_COLFLAG_KEY))
            return cur_fail(c, SA_EPROTO,
                            "column %u is not flagged as key in a REPLICA IDENTITY FULL "
                            "relation",
                            i + 1u);
        rc = rd_name(c, "column name", &cols[i].name);
        if (rc == 0)
            rc = rd_u32(c, "column type OID", &cols[i].type_oid);
        if (rc == 0)
            rc = rd_i32(c, "column type modifier", &cols[i].typmod);
        if (rc != 0)
            return rc;
    }
    r->cols = cols;
    x->new_rel = r;
    return 0;
}

static int parse_type(pgo_ctx *x)
{
    int rc = rd_u32(x->c, "type OID", &x->m->typ.oid);
    if (rc == 0 && x->m->typ.oid == 0)
        return cur_fail(x->c, SA_EPROTO, "type OID 0 is invalid");
    if (rc == 0)
        rc = rd_nspname(x->c, &x->m->typ.nspname);
    if (rc == 0)
        rc = rd_name(x->c, "type name", &x->m->typ.typname);
    return rc;
}

static int lookup_rel(pgo_ctx *x, uint32_t relid, const pgo_relation **out)
{
    const pgo_relation *r = pgo_relation_get(x->d, relid);
    if (r == NULL)
        return cur_fail(x->c, SA_EPROTO, "unknown relation OID %u (no Relation message for it)",
                        relid);
    *out = r;
    return 0;
}

static int parse_tuple(pgo_ctx *x, const pgo_relation *rel, const char *which, pgo_tuple *t)
{
    pgo_cur *c = x->c;
    int rc = rd_ncols(c, "tuple column count", 1, &t->ncols);
    if (rc != 0)
        return rc;
    if (t->ncols != rel->ncols)
        return cur_fail(c, SA_EPROTO, "%s tuple has %u columns, relation %s has %u", which,
                        t->ncols, rel->qualname, rel->ncols);
    pgo_tuple_col *cols = NULL;
    if (t->ncols > 0) {
        cols = arena_zalloc(&x->d->arena, (size_t)t->ncols * sizeof *cols);
        if (cols == NULL)
            return cur_nomem(c);
    }
    for (uint16_t i = 0; i < t->ncols; i++) {
        uint8_t kind = 0;
        rc = rd_u8(c, "tuple column kind", &kind);
        if (rc != 0)
            return rc;
        switch (kind) {
        case PGO_COL_NULL:
        case PGO_COL_UNCHANGED:
            cols[i].kind = (pgo_col_kind)kind;
            break;
        case PGO_COL_TEXT: {
            const uint8_t *p;
            cols[i].kind = PGO_COL_TEXT;
            rc = rd_lenbytes(c, "tuple column value", SA_OP_MAX_VALUE, &p, &cols[i].len);
            if (rc != 0)
                return rc;
            cols[i].data = (const char *)p;
            break;
        }
        case PGO_COL_BINARY:
            return cur_fail(c, SA_EPROTO,
                            "%s tuple column %u (%s) is in binary format ('b'), which is "
                            "never requested",
                            which, i + 1u, rel->cols[i].name);
        default:
            return cur_fail(c, SA_EPROTO, "%s tuple column %u (%s): unknown kind 0x%02x", which,
                            i + 1u, rel->cols[i].name, kind);
        }
    }
    t->cols = cols;
    return 0;
}

static int parse_change(pgo_ctx *x)
{
    pgo_cur *c = x->c;
    pgo_msg *m = x->m;
    uint32_t relid = 0;
    uint8_t tag = 0;
    int rc = rd_relid(c, &relid);
    if (rc == 0)
        rc = lookup_rel(x, relid, &m->change.rel);
    if (rc == 0)
        rc = rd_u8(c, "tuple tag", &tag);
    if (rc != 0)
        return rc;
    const pgo_relation *rel = m->change.rel;
    if (m->type != PGO_INSERT && (tag == PGO_TUPLE_KEY || tag == PGO_TUPLE_OLD)) {
        /* proto.c sends 'O' exactly for REPLICA IDENTITY FULL, else 'K' */
        int full = rel->replident == PGO_REPLIDENT_FULL;
        if ((tag == PGO_TUPLE_OLD) != full)
            return cur_fail(c, SA_EPROTO,
                            "old tuple tag '%c' does not match relation %s's "
                            "replica identity '%c'",
                            tag, rel->qualname, rel->replident);
        m->change.old_tag = (pgo_tuple_tag)tag;
        rc = parse_tuple(x, rel, tag == PGO_TUPLE_OLD ? "old" : "key", &m->change.old);
        if (rc != 0 || m->type == PGO_DELETE)
            return rc;
        rc = rd_u8(c, "tuple tag", &tag);
        if (rc != 0)
            return rc;
    }
    if (m->type == PGO_DELETE)
        return cur_fail(c, SA_EPROTO, "tuple tag 0x%02x: expected 'K' or 'O'", tag);
    if (tag != PGO_TUPLE_NEW)
        return cur_fail(c, SA_EPROTO, "tuple tag 0x%02x: expected %s", tag,
                        m->type == PGO_INSERT ? "'N'" : "'K', 'O' or 'N'");
    return parse_tuple(x, rel, "new", &m->change.new_tuple);
}

static int parse_truncate(pgo_ctx *x)
{
    pgo_cur *c = x->c;
    int32_t n = 0;
    uint8_t options = 0;
    int rc = rd_i32(c, "relation count", &n);
    if (rc == 0)
        rc = rd_u8(c, "options", &options);
    if (rc != 0)
        return rc;
    if (n <= 0)
        return cur_fail(c, SA_EPROTO, "relation count %d: must be positive", (int)n);
    if (options & ~(PGO_TRUNC_CASCADE | PGO_TRUNC_RESTART_IDENTITY))
        return cur_fail(c, SA_EPROTO, "options 0x%02x: unknown bits 0x%02x", options,
                        options & ~(PGO_TRUNC_CASCADE | PGO_TRUNC_RESTART_IDENTITY));
    if ((size_t)n > c->rd.left / 4)
        return cur_fail(c, SA_ETRUNCATED, "relation count %d needs %zu bytes, %zu left", (int)n,
                        (size_t)n * 4, c->rd.left);
    uint32_t *relids = arena_alloc(&x->d->arena, (size_t)n * sizeof *relids);
    const pgo_relation **rels = arena_alloc(&x->d->arena, (size_t)n * sizeof *rels);
    if (relids == NULL || rels == NULL)
        return cur_nomem(c);
    for (int32_t i = 0; i < n; i++) {
        rc = rd_relid(c, &relids[i]);
        if (rc == 0)
            rc = lookup_rel(x, relids[i], &rels[i]);
        if (rc != 0)
            return rc;
    }
    x->m->truncate.options = options;
    x->m->truncate.nrels = (uint32_t)n;
    x->m->truncate.relids = relids;
    x->m->truncate.rels = rels;
    return 0;
}

static int rd_stream_xid(pgo_cur *c, uint32_t *xid)
{
    int rc = rd_u32(c, "xid", xid);
    if (rc == 0 && *xid == 0)
        return cur_fail(c, SA_EPROTO, "xid 0 is invalid");
    return rc;
}

static int parse_stream_start(pgo_ctx *x)
{
    uint8_t first = 0;
    int rc = rd_stream_xid(x->c, &x->m->xid);
    if (rc == 0)
        rc = rd_u8(x->c, "first segment flag", &first);
    if (rc == 0 && first > 1)
        return cur_fail(x->c, SA_EPROTO, "first segment flag %u: must be 0 or 1", first);
    if (rc == 0)
        x->m->stream_start.first_segment = first;
    return rc;
}

static int parse_stream_abort(pgo_ctx *x)
{
    int rc = rd_stream_xid(x->c, &x->m->xid);
    if (rc == 0)
        rc = rd_u32(x->c, "subtransaction xid", &x->m->stream_abort.subxid);
    if (rc == 0 && x->m->stream_abort.subxid == 0)
        return cur_fail(x->c, SA_EPROTO, "subtransaction xid 0 is invalid");
    /* v4 (parallel streaming) appends the abort LSN and time; v4 without
     * parallel streaming does not: the message itself says which. */
    if (rc == 0 && x->d->proto >= PGO_PROTO_PARALLEL && x->c->rd.left > 0) {
        x->m->stream_abort.has_abort_info = 1;
        rc = rd_u64(x->c, "abort LSN", &x->m->stream_abort.abort_lsn);
        if (rc == 0)
            rc = rd_time(x->c, "abort time", &x->m->stream_abort.abort_time);
    }
    return rc;
}

/* ---- framing: version, stream state, dispatch ------------------------------- */

static int is_stream_type(int t)
{
    return t == PGO_STREAM_START || t == PGO_STREAM_STOP || t == PGO_STREAM_COMMIT ||
           t == PGO_STREAM_ABORT;
}

/* Messages that carry a leading xid between Stream Start and Stream Stop. */
static int has_stream_xid(int t)
{
    return t == PGO_RELATION || t == PGO_TYPE || t == PGO_INSERT || t == PGO_UPDATE ||
           t == PGO_DELETE || t == PGO_TRUNCATE || t == PGO_MESSAGE;
}

/* Which messages may appear where (the stream state machine):
 *
 *   outside --S--> inside --E--> outside
 *   outside: everything but E;   inside: O, R, Y, I, U, D, T, M (with xid)
 */
static int check_framing(pgo_ctx *x, int t)
{
    pgo_decoder *d = x->d;
    switch (t) {
    case PGO_BEGIN_PREPARE:
    case PGO_PREPARE:
    case PGO_COMMIT_PREPARED:
    case PGO_ROLLBACK_PREPARED:
    case PGO_STREAM_PREPARE:
        return cur_fail(x->c, SA_EPROTO,
                        "two-phase messages are not supported (two_phase is never requested)");
    }
    if (is_stream_type(t) && d->proto < PGO_PROTO_STREAM)
        return cur_fail(x->c, SA_EPROTO, "needs proto_version %d or later, negotiated %d",
                        PGO_PROTO_STREAM, d->proto);
    if (d->in_stream && (t == PGO_BEGIN || t == PGO_COMMIT || t == PGO_STREAM_START ||
                         t == PGO_STREAM_COMMIT || t == PGO_STREAM_ABORT))
        return cur_fail(x->c, SA_EPROTO, "not allowed inside a stream (of xid %u)", d->stream_xid);
    if (!d->in_stream && t == PGO_STREAM_STOP)
        return cur_fail(x->c, SA_EPROTO, "outside a stream");
    return 0;
}

static int parse_body(pgo_ctx *x, int t)
{
    switch (t) {
    case PGO_BEGIN:
        return parse_begin(x);
    case PGO_COMMIT:
        return parse_commit_tail(x);
    case PGO_ORIGIN:
        return parse_origin(x);
    case PGO_MESSAGE:
        return parse_message(x);
    case PGO_RELATION:
        return parse_relation(x);
    case PGO_TYPE:
        return parse_type(x);
    case PGO_INSERT:
    case PGO_UPDATE:
    case PGO_DELETE:
        return parse_change(x);
    case PGO_TRUNCATE:
        return parse_truncate(x);
    case PGO_STREAM_START:
        return parse_stream_start(x);
    case PGO_STREAM_STOP:
        return 0;
    case PGO_STREAM_COMMIT: {
        int rc = rd_stream_xid(x->c, &x->m->xid);
        return rc != 0 ? rc : parse_commit_tail(x);
    }
    case PGO_STREAM_ABORT:
        return parse_stream_abort(x);
    }
    return cur_fail(x->c, SA_EPROTO, "unknown message type"); /* filtered before */
}

int pgo_decode(pgo_decoder *d, const void *buf, size_t len, uint64_t wal_lsn, const pgo_msg **out,
               sa_err *err)
{
    if (d == NULL || out == NULL || (buf == NULL && len > 0))
        return sa_err_set(err, SA_EINVAL, "pgo_decode: NULL argument");
    pgo_decoder_release_msg(d);
    if (len == 0)
        return sa_err_set(err, SA_ETRUNCATED, "empty pgoutput message at %X/%X",
                          (unsigned)(wal_lsn >> 32), (unsigned)wal_lsn);
    int t = ((const uint8_t *)buf)[0];
    const char *what = pgo_msg_type_name(t);
    if (strcmp(what, "unknown") == 0)
        return sa_err_set(err, SA_EPROTO, "unknown pgoutput message type 0x%02x at %X/%X", t,
                          (unsigned)(wal_lsn >> 32), (unsigned)wal_lsn);

    pgo_cur c = {.total = len, .what = what, .lsn = wal_lsn, .err = err};
    pgo_ctx x = {.d = d, .c = &c};
    uint8_t *copy = arena_alloc(&d->arena, len);
    x.m = arena_zalloc(&d->arena, sizeof *x.m);
    sa_rd_init(&c.rd, buf, len); /* for offsets in errors until the copy exists */
    int rc = 0;
    if (copy == NULL || x.m == NULL) {
        rc = cur_nomem(&c);
        goto done;
    }
    memcpy(copy, buf, len);
    sa_rd_init(&c.rd, copy + 1, len - 1);
    x.m->type = (pgo_msg_type)t;
    x.m->wal_lsn = wal_lsn;
    x.m->in_stream = d->in_stream;

    rc = check_framing(&x, t);
    if (rc == 0 && d->in_stream && has_stream_xid(t))
        rc = rd_stream_xid(&c, &x.m->xid);
    if (rc == 0)
        rc = parse_body(&x, t);
    if (rc == 0 && c.rd.left != 0)
        rc = cur_fail(&c, SA_EPROTO, "%zu trailing bytes", c.rd.left);
    if (rc != 0)
        goto done;

    /* Commit: everything is checked; only now does the decoder's state move. */
    if (t == PGO_RELATION) {
        if (relmap_put(&d->rels, x.new_rel, &x.m->relation.rel) != 0) {
            rc = cur_nomem(&c);
            goto done;
        }
    } else if (t == PGO_STREAM_START) {
        d->in_stream = 1;
        d->stream_xid = x.m->xid;
    } else if (t == PGO_STREAM_STOP) {
        d->in_stream = 0;
        d->stream_xid = 0;
    }
    d->msg = x.m;
    *out = x.m;
done:
    if (rc != 0)
        pgo_decoder_release_msg(d);
    return rc;
}

/* ---- changes as sa_op fields ------------------------------------------------- */

static void set_value(sa_value *v, const pgo_tuple_col *tc, uint32_t type_oid)
{
    v->type_oid = type_oid;
    v->len = 0;
    v->data = NULL;
    if (tc->kind == PGO_COL_NULL) {
        v->kind = SA_VAL_NULL;
    } else if (tc->kind == PGO_COL_UNCHANGED) {
        v->kind = SA_VAL_UNCHANGED;
    } else {
        v->kind = SA_VAL_TEXT;
        v->len = tc->len;
        v->data = tc->data != NULL ? tc->data : "";
    }
}

/* All columns of a tuple as fields (names borrowed from the relation). */
static sa_field *tuple_fields(pgo_decoder *d, const pgo_relation *rel, const pgo_tuple *t)
{
    sa_field *f = arena_alloc(&d->arena, (size_t)t->ncols * sizeof *f);
    if (f == NULL)
        return NULL;
    for (uint16_t i = 0; i < t->ncols; i++) {
        f[i].name = rel->cols[i].name;
        set_value(&f[i].val, &t->cols[i], rel->cols[i].type_oid);
    }
    return f;
}

int pgo_change_to_op(pgo_decoder *d, const pgo_msg *msg, sa_op *op, const sa_field **old,
                     uint32_t *nold, sa_err *err)
{
    if (d == NULL || msg == NULL || op == NULL)
        return sa_err_set(err, SA_EINVAL, "pgo_change_to_op: NULL argument");
    if (msg != d->msg)
        return sa_err_set(err, SA_EINVAL, "pgo_change_to_op: not the decoder's current message");
    pgo_cur c = {.what = pgo_msg_type_name(msg->type), .lsn = msg->wal_lsn, .err = err};
    if (msg->type != PGO_INSERT && msg->type != PGO_UPDATE && msg->type != PGO_DELETE)
        return sa_err_set(err, SA_EINVAL, "pgo_change_to_op: a %s message is not a change", c.what);
    const pgo_relation *rel = msg->change.rel;
    const pgo_tuple *keysrc = msg->change.old_tag ? &msg->change.old : &msg->change.new_tuple;

    uint32_t nkey = 0;
    for (uint16_t i = 0; i < rel->ncols; i++)
        nkey += (rel->cols[i].flags & PGO_COLFLAG_KEY) != 0;
    if (nkey == 0 && msg->type != PGO_INSERT)
        return cur_fail(&c, SA_EPROTO, "relation %s has no replica identity columns",
                        rel->qualname);
    if (msg->type == PGO_INSERT)
        for (uint16_t i = 0; i < rel->ncols; i++)
            if (msg->change.new_tuple.cols[i].kind == PGO_COL_UNCHANGED)
                return cur_fail(&c, SA_EPROTO,
                                "column %s of an inserted row is an unchanged "
                                "TOAST value",
                                rel->cols[i].name);

    sa_field *key = arena_alloc(&d->arena, (size_t)nkey * sizeof *key);
    if (key == NULL)
        return cur_nomem(&c);
    uint32_t k = 0;
    for (uint16_t i = 0; i < rel->ncols; i++) {
        if (!(rel->cols[i].flags & PGO_COLFLAG_KEY))
            continue;
        if (keysrc->cols[i].kind == PGO_COL_UNCHANGED)
            return cur_fail(&c, SA_EPROTO,
                            "key column %s of relation %s is an unchanged "
                            "TOAST value",
                            rel->cols[i].name, rel->qualname);
        key[k].name = rel->cols[i].name;
        set_value(&key[k].val, &keysrc->cols[i], rel->cols[i].type_oid);
        k++;
    }
    sa_field *cols = NULL, *oldf = NULL;
    uint32_t ncols = 0, noldf = 0;
    if (msg->type != PGO_DELETE) {
        ncols = msg->change.new_tuple.ncols;
        cols = tuple_fields(d, rel, &msg->change.new_tuple);
        if (cols == NULL)
            return cur_nomem(&c);
    }
    if (msg->change.old_tag == PGO_TUPLE_OLD) {
        noldf = msg->change.old.ncols;
        oldf = tuple_fields(d, rel, &msg->change.old);
        if (oldf == NULL)
            return cur_nomem(&c);
    }

    op->kind = msg->type == PGO_INSERT   ? SA_OP_INSERT
               : msg->type == PGO_UPDATE ? SA_OP_UPDATE
                                         : SA_OP_DELETE;
    op->table = rel->qualname;
    op->key = key;
    op->nkey = nkey;
    op->cols = cols;
    op->ncols = ncols;
    op->flags |= SA_OP_HAS_PG;
    if (old != NULL)
        *old = oldf;
    if (nold != NULL)
        *nold = noldf;
    return 0;
}
