/*
 * copy.h — the initial copy: every row of a synced table, read with COPY ...
 * TO STDOUT inside the snapshot the replication slot exported, turned into
 * INSERT ops shaped exactly like the ones the pgoutput stream (pgo.h) gives
 * for the same rows.  The state is keyed by (table, key values), so a later
 * streamed UPDATE/DELETE must find the row the copy created:
 *
 *   table  "nspname.relname", unquoted (pgo_relation.qualname)
 *   key    the columns pgoutput flags as replica identity, in column order:
 *            REPLICA IDENTITY DEFAULT  the primary key's columns (a PK that
 *                                      is DEFERRABLE is not an identity)
 *            REPLICA IDENTITY INDEX    the columns of the index marked
 *                                      indisreplident
 *            REPLICA IDENTITY FULL     every column
 *            REPLICA IDENTITY NOTHING  refused (no key)
 *   cols   every column pgoutput publishes, in attnum order: dropped and
 *          generated (attgenerated <> '') columns are left out
 *   types  pg_attribute.atttypid, which is what the Relation message sends:
 *          for a domain, the domain's OID (not its base type's)
 *   text   each type's output function — COPY and pgoutput both use it —
 *          so the two agree as long as both sessions have the same
 *          DateStyle, IntervalStyle, TimeZone, extra_float_digits,
 *          bytea_output and client_encoding.  Open the copy connection with
 *          the same conninfo as the replication one and do not SET these.
 *
 * Not covered (the stream would differ): publication column lists and row
 * filters (PG15+), and partitioned tables published with
 * publish_via_partition_root = false, whose changes pgoutput names after the
 * leaf partitions.  A partitioned table ('p') is copied through its root
 * (no ONLY), so sync it only with publish_via_partition_root = true.
 *
 * Two halves, like pgo/repl:
 *   - the COPY text-format row parser, sans-I/O (cp_parse_text_row);
 *   - the libpq part: cp_begin_snapshot, cp_table_load, cp_copy_table,
 *     cp_end.  All SQL binds values as parameters; identifiers are escaped
 *     with PQescapeIdentifier, the snapshot name with PQescapeLiteral.
 *
 * Use (connection c is an ordinary, non-replication connection, borrowed):
 *
 *     cp_begin_snapshot(c, snapshot_name)    BEGIN REPEATABLE READ READ ONLY;
 *                                            SET TRANSACTION SNAPSHOT '...'
 *     for each synced table:
 *         cp_table_load(c, name, &t)         catalog read in the snapshot
 *         cp_copy_table(c, t, fn, ctx)       fn once per row
 *         cp_table_free(t)
 *     cp_end(c)                              COMMIT (ROLLBACK if aborted)
 *
 * The exported snapshot is usable only while the replication connection that
 * created the slot runs no other command, so copy before START_REPLICATION.
 */
#ifndef SA_COPY_H
#define SA_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "sa/sa_buf.h"
#include "sa/sa_err.h"
#include "sa/sa_op.h"

/* --- COPY text format (sans-I/O) ----------------------------------------- */

/*
 * The decoded fields of one row.  Caller-allocated: zero-initialise (or
 * cp_row_buf_init), reuse across rows (memory is that of the largest row so
 * far), release with cp_row_buf_free.
 */
typedef struct cp_row_buf {
    uint32_t nfields; /* fields of the last parsed row */
    /* [nfields]: kind SA_VAL_NULL or SA_VAL_TEXT, type_oid 0.  TEXT data
     * points into the buffer, is NUL-terminated for convenience, but len is
     * authoritative (a decoded value may hold NUL bytes).  Valid until the
     * next parse or cp_row_buf_free. */
    sa_value *fields;
    /* private */
    uint32_t cap;
    sa_buf bytes;
} cp_row_buf;

void cp_row_buf_init(cp_row_buf *b);
void cp_row_buf_free(cp_row_buf *b); /* leaves b empty and reusable */

/*
 * Parse one row of COPY ... TO STDOUT text format (the bytes of one
 * PQgetCopyData call): fields separated by tab, at most one trailing "\n"
 * stripped, "\N" as a whole field is NULL, and backslash escapes decoded:
 * \b \f \n \r \t \v \\, \ooo (1-3 octal digits), \xh or \xhh (1-2 hex
 * digits; "\x" without a hex digit is "x"), any other \c is c.
 *
 * Errors (buf keeps no row then; nfields = 0):
 *   SA_EPROTO   a column count other than ncols (the message names both),
 *               a backslash ending the row, an unescaped "\n" or "\r"
 *               inside the row (COPY always escapes them)
 *   SA_ETOOBIG  ncols > SA_OP_MAX_FIELDS or a field > SA_OP_MAX_VALUE
 *   SA_ENOMEM
 */
int cp_parse_text_row(const char *line, size_t len, uint32_t ncols, cp_row_buf *buf, sa_err *err);

/* --- tables -------------------------------------------------------------- */

typedef struct cp_column {
    const char *name;  /* attname, NUL-terminated */
    uint32_t type_oid; /* atttypid */
    bool is_key;       /* flagged replica identity by pgoutput */
} cp_column;

/* A synced table as pgoutput describes it.  Returned by cp_table_load, read
 * only, freed with cp_table_free (strings and arrays belong to it). */
typedef struct cp_table {
    uint32_t oid;
    const char *nspname;
    const char *relname;
    const char *qualname; /* "nspname.relname", unquoted: the sa_op table */
    char relkind;         /* 'r' table or 'p' partitioned table */
    char replident;       /* 'd', 'f' or 'i' ('n' is refused) */
    /* pg_class.reltuples as a progress estimate; -1 when unknown (never
     * vacuumed/analyzed, or a partitioned table). */
    int64_t est_rows;
    uint32_t ncols;
    const cp_column *cols; /* [ncols], attnum order */
    uint32_t nkey;         /* >= 1 */
    const uint32_t *key;   /* [nkey] indexes into cols, ascending */
    /* private */
    char *copy_sql; /* COPY (SELECT ...) TO STDOUT with escaped identifiers */
} cp_table;

/*
 * Resolve name (borrowed; as a user writes it in SQL: items, public.items,
 * "Odd Name"; resolved with to_regclass on c's search_path) and read what
 * pgoutput would say about it.  Call it inside the cp_begin_snapshot
 * transaction, so the shape is the snapshot's.  *out is caller-owned
 * (cp_table_free) and untouched on error.
 * Errors: SA_ENOTFOUND (no such relation); SA_EINVAL when it cannot be
 * synced — a name that does not parse (the server's message), not a table,
 * or no key (REPLICA IDENTITY NOTHING, DEFAULT without a usable primary key,
 * INDEX without a usable index), the message naming the table; SA_EPG (the
 * server's message); SA_ENOMEM.
 */
int cp_table_load(PGconn *c, const char *name, cp_table **out /* out */, sa_err *err);
void cp_table_free(cp_table *t); /* NULL is a no-op */

/* --- the copy ------------------------------------------------------------ */

/*
 * BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT
 * '<snapshot_name>' (borrowed; escaped with PQescapeLiteral).  On error no
 * transaction is left open (it is rolled back) and err has the server's
 * message: SA_EPG (e.g. the snapshot no longer exists), SA_EINVAL (empty
 * name, or c already in a transaction), SA_ENOMEM.
 */
int cp_begin_snapshot(PGconn *c, const char *snapshot_name, sa_err *err);

/*
 * End the transaction of cp_begin_snapshot: COMMIT, or ROLLBACK when it is
 * aborted (after a failed or stopped copy).  No-op when c is not in a
 * transaction.  SA_EPG with the server's message if that fails.
 */
int cp_end(PGconn *c, sa_err *err);

/*
 * Called once per row.  op (borrowed, valid only during the call) is an
 * INSERT: origin "pg", epoch/seq/hlc 0, flags 0, table t->qualname, key the
 * key columns, cols every column, each value with its column's type OID; no
 * pg_* fields.  To stamp it, copy the struct (`sa_op o = *op;`) and set
 * seq, hlc, SA_OP_HAS_PG and pg_* on the copy; the arrays it points to stay
 * valid until fn returns.  Return 0 to go on; anything else stops the copy:
 * a negative SA_E* code, with err (never NULL here) filled to say why.
 */
typedef int (*cp_row_fn)(void *ctx, const sa_op *op, sa_err *err);

/*
 * COPY every row of t (borrowed) over c (borrowed), which must be in a
 * transaction (cp_begin_snapshot), calling fn(ctx, op, err) per row.  Memory
 * is bounded by one row: buffers are reused.  *rows_out (may be NULL) is
 * the number of rows fn accepted, set on success and on error.
 *
 * Errors: fn's code and message when fn stops the copy; SA_EPROTO for a row
 * that does not parse (the message has the row number); SA_EPG with the
 * server's message; SA_EINVAL if c is not in a transaction; SA_ENOMEM.
 * After an error during the rows, the COPY is cancelled (PQcancel) and its
 * results drained: c is usable again, but its transaction is aborted and
 * the snapshot lost — call cp_end, and restart the initial copy with a new
 * slot.  If the connection itself broke, the message says so
 * (PQstatus(c) == CONNECTION_BAD).
 */
int cp_copy_table(PGconn *c, const cp_table *t, cp_row_fn fn, void *ctx,
                  uint64_t *rows_out /* out, may be NULL */, sa_err *err);

#endif /* SA_COPY_H */
