/*
 * pgcheck.h — preconditions for running sa-bridge against a PostgreSQL
 * server, checked over an ordinary connection before the replication one is
 * opened.  Every failed check becomes a problem that says what is wrong AND
 * how to fix it; all checks run, so the DBA gets the whole list at once.
 *
 * Checks (in report order):
 *   PGCK_VERSION       server version >= 14
 *   PGCK_RECOVERY      not a standby (logical decoding on a standby needs 16)
 *   PGCK_WAL_LEVEL     wal_level = logical
 *   PGCK_ROLE          current role has REPLICATION or is superuser
 *   PGCK_SLOT          the slot name is valid; if the slot exists it is a
 *                      pgoutput slot of this database, not lost, not held by
 *                      another process; if not, a free slot remains
 *   PGCK_WAL_SENDERS   max_wal_senders > walsenders running now
 *   PGCK_TABLE         each synced table exists, is a table, is readable by
 *                      the role (initial copy), and its rows are identifiable:
 *                      primary key, REPLICA IDENTITY FULL, or USING INDEX
 *                      with the index still there
 */
#ifndef SA_PGCHECK_H
#define SA_PGCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "sa/sa_err.h"

/* What a problem is about (callers branch on it; people read the text). */
typedef enum pgck_kind {
    PGCK_VERSION = 1,
    PGCK_RECOVERY,
    PGCK_WAL_LEVEL,
    PGCK_ROLE,
    PGCK_SLOT,
    PGCK_WAL_SENDERS,
    PGCK_TABLE,
} pgck_kind;

typedef struct pgck_problem {
    pgck_kind kind;
    /* "what is wrong. Fix: how to fix it." — one paragraph, no newline.
     * Owned by the report. */
    char *text;
} pgck_problem;

/* Caller-allocated (zero-initialise); filled by pgck_run, released with
 * pgck_report_free. */
typedef struct pgck_report {
    size_t nproblems;
    pgck_problem *problems; /* owned, nproblems entries */
} pgck_report;

/*
 * Run every check on the ordinary connection pg (borrowed).  tables
 * (borrowed; ntables names, each possibly schema-qualified and quoted as in
 * SQL, resolved with to_regclass on the role's search_path) are the synced
 * tables; slot_name (borrowed, may be NULL to skip the slot checks) is the
 * slot sa-bridge will use or create.
 *
 * Returns 0 when the checks ran — then out->nproblems == 0 means ready —
 * or an error when they could not run (SA_EPG with the server's message,
 * SA_ENOMEM); *out is then left empty.  *out must be empty on entry.
 */
int pgck_run(PGconn *pg, const char *const *tables, size_t ntables, const char *slot_name,
             pgck_report *out /* out */, sa_err *err);

/* Free what the report owns and leave it empty.  NULL is a no-op. */
void pgck_report_free(pgck_report *r);

/* One table as PostgreSQL sees it.  Caller-allocated, holds no pointers. */
typedef struct pgck_table {
    uint32_t oid;
    char schema[64];
    char name[64];
    char qualified[272]; /* quote_ident(schema).quote_ident(name): safe in SQL */
    char relkind;        /* 'r' table, 'p' partitioned table, 'v' view, ... */
    char replident;      /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    bool has_pk;
    bool has_replident_index; /* an index marked REPLICA IDENTITY exists */
    bool can_select;          /* the current role may SELECT from it */
} pgck_table;

/*
 * Resolve name (borrowed) with to_regclass($1) and describe it.
 * SA_ENOTFOUND when no relation has that name; SA_EINVAL (server's message)
 * when the name is not even syntactically a name (e.g. a.b.c.d); SA_EPG for
 * other server errors.  *out untouched on error.
 */
int pgck_table_info(PGconn *pg, const char *name, pgck_table *out /* out */, sa_err *err);

#endif /* SA_PGCHECK_H */
