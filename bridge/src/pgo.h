/*
 * pgo.h — the pgoutput decoder: a sans-I/O parser of PostgreSQL's logical
 * replication messages ("Logical Replication Message Formats" in the
 * PostgreSQL docs; written by src/backend/replication/logical/proto.c).
 *
 * Feed it the payload of one XLogData message (one pgoutput message) and the
 * WAL position it arrived at; take one decoded message.  No sockets, no libpq.
 *
 * The decoder is stateful, like a subscriber's apply worker:
 *   - a relation cache relid -> pgo_relation, filled by Relation ('R')
 *     messages; a later Relation message for the same relid replaces the entry
 *     (schema change).  Insert/Update/Delete/Truncate must name a cached relid.
 *   - the stream state: between Stream Start ('S') and Stream Stop ('E') the
 *     messages R/Y/I/U/D/T/M carry a leading xid; the decoder tracks this
 *     itself from the messages it decodes (the caller passes no flag).
 * On error the state is as it was before the call (cache and stream state
 * untouched), so a caller may log and reconnect.
 *
 * Protocol versions: the version negotiated with the server (proto_version
 * option, 1..4) is a parameter of the decoder.  Stream messages need >= 2.
 * Version 4's Stream Abort may carry abort_lsn + abort_time (parallel
 * streaming); they are read when proto >= 4 and the message carries them.
 * Two-phase messages (v3: b, P, K, r, p) are recognised and refused: the
 * bridge never requests two_phase.  Binary tuple columns ('b') are refused:
 * the bridge never requests binary.
 *
 * Ownership and lifetimes:
 *   - pgo_decode's *out message, every pointer in it, and the field arrays
 *     pgo_change_to_op fills are owned by the decoder and valid until the next
 *     pgo_decode, pgo_decoder_release_msg or pgo_decoder_free.  The input
 *     buffer is copied: the caller may reuse it as soon as pgo_decode returns.
 *   - a pgo_relation (from pgo_relation_get or a message) is owned by the
 *     cache and valid until a Relation message for the same relid is decoded,
 *     or the decoder is freed.
 *   - memory held for one message is bounded by a small multiple of its size.
 *
 * Errors: SA_EPROTO (malformed or unexpected), SA_ETRUNCATED (message ends
 * early, or a length runs past its end), SA_ETOOBIG (over a limit below),
 * SA_ENOMEM, SA_EINVAL/SA_EVERSION (bad arguments).  Messages name the
 * message type and the caller's WAL position, formatted like PostgreSQL's
 * LSNs (%X/%X), e.g. "pgoutput Insert message at 0/16B3748: ...".
 */
#ifndef SA_PGO_H
#define SA_PGO_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"
#include "sa/sa_op.h"

/* --- limits and versions ------------------------------------------------- */

#define PGO_PROTO_MIN 1
#define PGO_PROTO_MAX 4
#define PGO_PROTO_STREAM 2   /* first version with Stream messages */
#define PGO_PROTO_PARALLEL 4 /* first version with Stream Abort's abort info */

#define PGO_MAX_COLS 1664u          /* MaxTupleAttributeNumber */
#define PGO_MAX_NAME SA_OP_MAX_NAME /* namespace / relation / column name bytes */

/* --- wire enums (values are the bytes on the wire) ----------------------- */

typedef enum pgo_msg_type {
    PGO_BEGIN = 'B',
    PGO_MESSAGE = 'M',
    PGO_COMMIT = 'C',
    PGO_ORIGIN = 'O',
    PGO_RELATION = 'R',
    PGO_TYPE = 'Y',
    PGO_INSERT = 'I',
    PGO_UPDATE = 'U',
    PGO_DELETE = 'D',
    PGO_TRUNCATE = 'T',
    PGO_STREAM_START = 'S',
    PGO_STREAM_STOP = 'E',
    PGO_STREAM_COMMIT = 'c',
    PGO_STREAM_ABORT = 'A',
    /* two-phase (v3): recognised, refused */
    PGO_BEGIN_PREPARE = 'b',
    PGO_PREPARE = 'P',
    PGO_COMMIT_PREPARED = 'K',
    PGO_ROLLBACK_PREPARED = 'r',
    PGO_STREAM_PREPARE = 'p',
} pgo_msg_type;

/* Marker before a TupleData in Insert/Update/Delete. */
typedef enum pgo_tuple_tag {
    PGO_TUPLE_NEW = 'N',
    PGO_TUPLE_KEY = 'K', /* old key columns (replica identity index) */
    PGO_TUPLE_OLD = 'O', /* whole old row (REPLICA IDENTITY FULL) */
} pgo_tuple_tag;

/* One column of a TupleData. */
typedef enum pgo_col_kind {
    PGO_COL_NULL = 'n',
    PGO_COL_UNCHANGED = 'u', /* unchanged TOASTed value, not sent */
    PGO_COL_TEXT = 't',
    PGO_COL_BINARY = 'b', /* refused */
} pgo_col_kind;

/* pg_class.relreplident */
typedef enum pgo_replident {
    PGO_REPLIDENT_DEFAULT = 'd',
    PGO_REPLIDENT_NOTHING = 'n',
    PGO_REPLIDENT_FULL = 'f',
    PGO_REPLIDENT_INDEX = 'i',
} pgo_replident;

#define PGO_COLFLAG_KEY 0x01u           /* column is part of the replica identity */
#define PGO_MSGFLAG_TRANSACTIONAL 0x01u /* Message 'M' */
#define PGO_TRUNC_CASCADE 0x01u
#define PGO_TRUNC_RESTART_IDENTITY 0x02u

/* --- decoded types --------------------------------------------------------- */

typedef struct pgo_column {
    uint8_t flags;    /* PGO_COLFLAG_* */
    const char *name; /* NUL-terminated */
    uint32_t type_oid;
    int32_t typmod;
} pgo_column;

typedef struct pgo_relation {
    uint32_t relid;
    const char *nspname; /* "pg_catalog" when the wire sends "" */
    const char *relname;
    const char *qualname; /* "nspname.relname", unquoted: the sa_op table */
    pgo_replident replident;
    uint16_t ncols;
    const pgo_column *cols;
} pgo_relation;

typedef struct pgo_tuple_col {
    pgo_col_kind kind; /* NULL, UNCHANGED or TEXT */
    uint32_t len;      /* TEXT: bytes in data */
    const char *data;  /* TEXT: not NUL-terminated */
} pgo_tuple_col;

typedef struct pgo_tuple {
    uint16_t ncols;
    const pgo_tuple_col *cols;
} pgo_tuple;

/*
 * One decoded message.  Times are microseconds since the Unix epoch
 * (converted from PostgreSQL's 2000-01-01 epoch), like sa_op.pg_commit_time.
 */
typedef struct pgo_msg {
    pgo_msg_type type;
    uint64_t wal_lsn; /* as given to pgo_decode */
    int in_stream;    /* 1 if decoded between Stream Start and Stream Stop */
    /* Begin's xid; the streamed transaction's xid for S, c, A; the leading
     * xid of R/Y/I/U/D/T/M inside a stream (may be a subtransaction's);
     * 0 when the message carries none. */
    uint32_t xid;
    union {
        struct {
            uint64_t final_lsn;
            int64_t commit_time;
        } begin;
        struct {           /* Commit and Stream Commit */
            uint8_t flags; /* always 0 (checked) */
            uint64_t commit_lsn;
            uint64_t end_lsn;
            int64_t commit_time;
        } commit;
        struct {
            uint64_t lsn; /* commit LSN on the origin server (may be 0) */
            const char *name;
        } origin;
        struct {
            const pgo_relation *rel; /* the cache entry this message installed */
        } relation;
        struct {
            uint32_t oid;
            const char *nspname; /* "pg_catalog" when the wire sends "" */
            const char *typname;
        } typ; /* Type */
        struct {
            int transactional;
            uint64_t lsn;
            const char *prefix;
            const uint8_t *content; /* may hold any bytes */
            uint32_t len;
        } message;
        struct {                     /* Insert, Update, Delete */
            const pgo_relation *rel; /* from the cache */
            pgo_tuple_tag old_tag;   /* 0 if no old tuple, else 'K' or 'O' */
            pgo_tuple old;           /* Update (optional), Delete */
            pgo_tuple new_tuple;     /* Insert, Update */
        } change;
        struct {
            uint8_t options; /* PGO_TRUNC_* */
            uint32_t nrels;
            const uint32_t *relids;
            const pgo_relation *const *rels; /* rels[i] caches relids[i] */
        } truncate;
        struct {
            int first_segment;
        } stream_start;
        struct {
            uint32_t subxid;
            int has_abort_info; /* v4 parallel streaming: fields below set */
            uint64_t abort_lsn;
            int64_t abort_time;
        } stream_abort;
    };
} pgo_msg;

typedef struct pgo_decoder pgo_decoder;

/* --- lifecycle ------------------------------------------------------------ */

/* A decoder for the negotiated proto_version (PGO_PROTO_MIN..MAX, else
 * SA_EVERSION naming both bounds).  Caller frees *out with
 * pgo_decoder_free(); *out untouched on error. */
int pgo_decoder_new(int proto_version, pgo_decoder **out /* out */, sa_err *err);
void pgo_decoder_free(pgo_decoder *d); /* NULL is a no-op */

/* Free the memory of the last decoded message now (it is otherwise reused
 * by the next pgo_decode).  The cache and stream state stay. */
void pgo_decoder_release_msg(pgo_decoder *d);

/* 1 while between Stream Start and Stream Stop. */
int pgo_decoder_in_stream(const pgo_decoder *d);

/* --- decoding ------------------------------------------------------------- */

/*
 * Decode exactly `len` bytes (one pgoutput message; trailing bytes are an
 * error).  wal_lsn is the XLogData position, used in error messages and
 * copied to the message.  On success *out is valid until the next
 * pgo_decode / pgo_decoder_release_msg / pgo_decoder_free; on error *out is
 * untouched and the decoder's state unchanged (the previous message's
 * memory is released either way).
 */
int pgo_decode(pgo_decoder *d, const void *buf, size_t len, uint64_t wal_lsn,
               const pgo_msg **out /* out */, sa_err *err);

/* The cached relation, or NULL.  Borrowed: see lifetimes above. */
const pgo_relation *pgo_relation_get(const pgo_decoder *d, uint32_t relid);

/*
 * Turn an Insert/Update/Delete into an sa_op's fields.  Sets op->kind,
 * op->table (the relation's qualname), key/nkey, cols/ncols, and adds
 * SA_OP_HAS_PG to op->flags; every other op field is left as it was (the
 * caller sets origin, seq, hlc, pg_lsn, pg_xid, pg_commit_time).
 *   key:  the key-flagged columns (all of them for REPLICA IDENTITY FULL),
 *         from the old tuple ('K'/'O') when present, else from the new one;
 *   cols: every new-tuple column (none for Delete), unchanged TOAST as
 *         SA_VAL_UNCHANGED, NULL as SA_VAL_NULL, text as SA_VAL_TEXT;
 *   *old / *nold (if not NULL): every column of an 'O' old tuple (the old
 *         row of REPLICA IDENTITY FULL, usable as base), else NULL / 0.
 * Arrays are allocated in the message's memory; names borrow from the
 * relation: valid as long as the message.  Errors (SA_EPROTO): not a
 * change message, a key column that is unchanged TOAST, Update/Delete of a
 * relation without replica identity columns, an Insert with unchanged TOAST.
 */
int pgo_change_to_op(pgo_decoder *d, const pgo_msg *msg, sa_op *op /* out */,
                     const sa_field **old /* out, may be NULL */, uint32_t *nold, sa_err *err);

/* "Insert", "Stream Commit", ...; "unknown" for other bytes.  Static. */
const char *pgo_msg_type_name(int type);

#endif /* SA_PGO_H */
