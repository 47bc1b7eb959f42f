/*
 * sa_op.h — the operation model of DESIGN.md and its two encodings:
 *
 *   - a compact, versioned binary encoding for RocksDB (sa_op_encode /
 *     sa_op_decode), byte-exact on round trip;
 *   - JSON for the wire (sa_op_to_json / sa_op_from_json, jansson), with the
 *     value mapping of DESIGN.md.
 *
 * Values keep PostgreSQL's text form and the column's type OID.  NULL, the
 * unchanged-TOAST marker and the empty string "" are three distinct values.
 *
 * Ownership: an sa_op built by a caller borrows every string it points to.
 * An sa_op returned by sa_op_decode / sa_op_from_json / sa_op_clone is one
 * allocation holding all its strings; free it with sa_op_free().
 */
#ifndef SA_OP_H
#define SA_OP_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_buf.h"
#include "sa/sa_err.h"

/* Limits enforced by the decoders (bad input never allocates beyond them). */
#define SA_OP_MAX_FIELDS 1664u          /* PostgreSQL's MaxTupleAttributeNumber */
#define SA_OP_MAX_NAME 1024u            /* table / column / origin name bytes */
#define SA_OP_MAX_VALUE (256u << 20)    /* one value's bytes */
#define SA_OP_MAX_ENCODED (1024u << 20) /* one encoded op */

/* Binary encoding version written by sa_op_encode; decode accepts
 * SA_OP_CODEC_MIN..SA_OP_CODEC_MAX and names both on refusal. */
#define SA_OP_CODEC_VERSION 1
#define SA_OP_CODEC_MIN 1
#define SA_OP_CODEC_MAX 1

/* Operation kinds; the values are the bytes on disk. */
typedef enum sa_op_kind {
    SA_OP_INSERT = 1,
    SA_OP_UPDATE = 2,
    SA_OP_DELETE = 3,
    SA_OP_TRUNCATE = 4,
} sa_op_kind;

/* Value kinds; the values are the bytes on disk. */
typedef enum sa_val_kind {
    SA_VAL_NULL = 0,      /* SQL NULL */
    SA_VAL_TEXT = 1,      /* data/len hold PostgreSQL's text form */
    SA_VAL_UNCHANGED = 2, /* unchanged TOASTed value: keep what you have */
} sa_val_kind;

/* Well-known type OIDs the JSON mapping cares about (pg_type.dat). */
#define SA_OID_BOOL 16
#define SA_OID_BYTEA 17
#define SA_OID_INT8 20
#define SA_OID_INT2 21
#define SA_OID_INT4 23
#define SA_OID_TEXT 25
#define SA_OID_OID 26
#define SA_OID_JSON 114
#define SA_OID_FLOAT4 700
#define SA_OID_FLOAT8 701
#define SA_OID_NUMERIC 1700
#define SA_OID_TIMESTAMPTZ 1184
#define SA_OID_JSONB 3802

typedef struct sa_value {
    sa_val_kind kind;
    uint32_t type_oid; /* 0 = unknown */
    uint32_t len;      /* bytes in data (TEXT only) */
    const char *data;  /* TEXT only; not NUL-terminated in general */
} sa_value;

typedef struct sa_field {
    const char *name; /* NUL-terminated column name */
    sa_value val;
} sa_field;

/* Flags */
#define SA_OP_HAS_BASE 0x01u /* base[] is meaningful (edge update/delete) */
#define SA_OP_HAS_PG 0x02u   /* pg_* fields are meaningful (ops from Postgres) */

typedef struct sa_op {
    const char *origin; /* "pg" for the central database, else peer name */
    uint64_t epoch;     /* the origin's store epoch (0 for pg) */
    uint64_t seq;       /* per-writer sequence; for WAL ops, the WAL seq */
    uint64_t hlc;       /* hybrid logical clock (see sa_hlc.h) */
    sa_op_kind kind;
    uint32_t flags;    /* SA_OP_HAS_* */
    const char *table; /* schema-qualified, e.g. "public.items" */
    const sa_field *key;
    uint32_t nkey;
    const sa_field *cols;
    uint32_t ncols;
    const sa_field *base;
    uint32_t nbase;
    uint64_t pg_lsn;         /* commit LSN */
    uint32_t pg_xid;         /* transaction id */
    int64_t pg_commit_time;  /* microseconds since the Unix epoch */
} sa_op;

const char *sa_op_kind_name(sa_op_kind k); /* "insert"...; NULL if invalid */
int sa_op_kind_parse(const char *s, sa_op_kind *out);

/* Structural validation: kind valid, names present and within limits, no
 * duplicate column names, a TRUNCATE has no key/cols, an INSERT has cols,
 * an UPDATE/DELETE has a key.  Fills err naming the offending field. */
int sa_op_validate(const sa_op *op, sa_err *err);

/* Append op's binary encoding to out.  On error out->len is unchanged. */
int sa_op_encode(const sa_op *op, sa_buf *out, sa_err *err);

/* Decode one op from exactly `len` bytes (trailing bytes are an error).
 * Never reads outside buf.  *out is caller-owned (sa_op_free) and untouched
 * on error. */
int sa_op_decode(const void *buf, size_t len, sa_op **out, sa_err *err);

/* Deep copy into one allocation. */
int sa_op_clone(const sa_op *op, sa_op **out, sa_err *err);
void sa_op_free(sa_op *op); /* NULL is a no-op */

/* Semantic equality (every field, value kinds, bytes).  1 if equal. */
int sa_op_equal(const sa_op *a, const sa_op *b);

/*
 * Field lists on their own (state rows and keys are stored with these):
 * varint count, then per field: name bytes, kind u8, type_oid varint, and
 * for TEXT the value bytes.  Deterministic: equal lists give equal bytes.
 */
int sa_fields_encode(const sa_field *f, uint32_t n, sa_buf *out, sa_err *err);
/* Decode from a reader; the returned array and its strings are one
 * allocation (sa_free), names NUL-terminated, data borrowed from nothing. */
int sa_fields_decode(sa_rd *rd, sa_field **out, uint32_t *n, sa_err *err);

/* --- JSON (wire) ------------------------------------------------------ */
/* Forward declaration so this header does not require jansson.h. */
struct json_t;

/* New reference in *out (json_decref).  See codec_json.c for the mapping. */
int sa_op_to_json(const sa_op *op, struct json_t **out, sa_err *err);
/* Validates everything; errors name the offending member. */
int sa_op_from_json(const struct json_t *j, sa_op **out, sa_err *err);

#endif /* SA_OP_H */
