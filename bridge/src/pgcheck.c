/*
 * pgcheck.c — preconditions for sa-bridge on a PostgreSQL server (see
 * pgcheck.h for the list).  Each failed check adds a problem naming what is
 * wrong and the statement that fixes it.  All SQL binds its inputs as
 * parameters; names shown in fixes are quoted by the server (quote_ident).
 */
#include "pgcheck.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"
#include "sa/sa_alloc.h"

/* ====================================================================== */
/* The report                                                             */
/* ====================================================================== */

static int pgck__add(pgck_report *r, pgck_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int pgck__add(pgck_report *r, pgck_kind kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return SA_EINVAL;
    char *text = sa_malloc((size_t)n + 1);
    pgck_problem *p = sa_realloc(r->problems, (r->nproblems + 1) * sizeof *p);
    if (text == NULL || p == NULL) {
        sa_free(text);
        if (p != NULL)
            r->problems = p; /* still valid, one slot larger: harmless */
        return SA_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    r->problems = p;
    r->problems[r->nproblems].kind = kind;
    r->problems[r->nproblems].text = text;
    r->nproblems++;
    return 0;
}

void pgck_report_free(pgck_report *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nproblems; i++)
        sa_free(r->problems[i].text);
    sa_free(r->problems);
    r->problems = NULL;
    r->nproblems = 0;
}

/* ====================================================================== */
/* Tables                                                                 */
/* ====================================================================== */

static int pgck__copy(char *dst, size_t cap, const PGresult *res, int col, sa_err *err)
{
    const char *v = PQgetvalue(res, 0, col);
    size_t n = strlen(v);
    if (n >= cap)
        return sa_err_set(err, SA_EPROTO, "column \"%s\" of %zu bytes exceeds %zu",
                          PQfname(res, col), n, cap - 1);
    memcpy(dst, v, n + 1);
    return 0;
}

int pgck_table_info(PGconn *pg, const char *name, pgck_table *out, sa_err *err)
{
    static const char sql[] =
        "SELECT c.oid, n.nspname, c.relname, "
        "       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), "
        "       c.relkind, c.relreplident, "
        "       EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "               WHERE i.indrelid = c.oid AND i.indisprimary), "
        "       EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "               WHERE i.indrelid = c.oid AND i.indisreplident), "
        "       pg_catalog.has_table_privilege(c.oid, 'SELECT') "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = pg_catalog.to_regclass($1::text)";
    char m[SA_ERR_MSG_MAX];
    const char *params[1] = {name};
    pgck_table t;
    memset(&t, 0, sizeof t);
    int rc = 0;
    PGresult *res = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
    if (res == NULL) {
        rc = sa_err_set(err, SA_EPG, "looking up table \"%s\": %s", name,
                        repl__pg_msg(pg, NULL, m, sizeof m));
        goto done;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        /* to_regclass (before 16) still raises on a malformed name. */
        bool bad_name = st != NULL && (strcmp(st, "42601") == 0 || strcmp(st, "42602") == 0 ||
                                       strcmp(st, "0A000") == 0);
        rc = sa_err_set(err, bad_name ? SA_EINVAL : SA_EPG, "%s table name \"%s\": %s",
                        bad_name ? "invalid" : "looking up", name,
                        repl__pg_msg(pg, res, m, sizeof m));
        goto done;
    }
    if (PQntuples(res) == 0) {
        rc = sa_err_set(err, SA_ENOTFOUND, "table \"%s\" does not exist", name);
        goto done;
    }
    if ((rc = pgck__copy(t.schema, sizeof t.schema, res, 1, err)) != 0 ||
        (rc = pgck__copy(t.name, sizeof t.name, res, 2, err)) != 0 ||
        (rc = pgck__copy(t.qualified, sizeof t.qualified, res, 3, err)) != 0)
        goto done;
    t.oid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    t.relkind = PQgetvalue(res, 0, 4)[0];
    t.replident = PQgetvalue(res, 0, 5)[0];
    t.has_pk = PQgetvalue(res, 0, 6)[0] == 't';
    t.has_replident_index = PQgetvalue(res, 0, 7)[0] == 't';
    t.can_select = PQgetvalue(res, 0, 8)[0] == 't';
    *out = t;
done:
    PQclear(res);
    return rc;
}

static const char *pgck__relkind_name(char k)
{
    switch (k) {
    case 'v':
        return "a view";
    case 'm':
        return "a materialized view";
    case 'S':
        return "a sequence";
    case 'f':
        return "a foreign table";
    case 'i':
    case 'I':
        return "an index";
    case 'c':
        return "a composite type";
    case 't':
        return "a TOAST table";
    }
    return "not an ordinary table";
}

/* Check one synced table; problems go to r.  Errors only for SA_EPG/NOMEM. */
static int pgck__table(PGconn *pg, const char *name, const char *role, pgck_report *r, sa_err *err)
{
    pgck_table t;
    sa_err e = {0};
    int rc = pgck_table_info(pg, name, &t, &e);
    if (rc == SA_ENOTFOUND)
        return pgck__add(r, PGCK_TABLE,
                         "table \"%s\" does not exist (no relation of that name on the "
                         "search_path of role %s). Fix: create it, or correct the name in the "
                         "configuration: schema-qualify it (e.g. public.items) and double-quote "
                         "mixed-case names (e.g. \"Items\").",
                         name, role);
    if (rc == SA_EINVAL)
        return pgck__add(r, PGCK_TABLE,
                         "%s. Fix: write the table name as in SQL, e.g. public.items or "
                         "\"MySchema\".\"Items\".",
                         e.msg);
    if (rc != 0) {
        if (err != NULL)
            *err = e;
        return rc;
    }
    if (t.relkind != 'r' && t.relkind != 'p')
        return pgck__add(r, PGCK_TABLE,
                         "\"%s\" (%s) is %s: logical replication publishes only tables. "
                         "Fix: sync the underlying table(s) instead.",
                         name, t.qualified, pgck__relkind_name(t.relkind));
    if (!t.can_select &&
        (rc = pgck__add(r, PGCK_TABLE,
                        "role %s cannot SELECT from table %s, which the initial copy reads. "
                        "Fix: GRANT SELECT ON %s TO %s;",
                        role, t.qualified, t.qualified, role)) != 0)
        return rc;
    char fixbuf[1024];
    snprintf(fixbuf, sizeof fixbuf,
             "Fix: add a primary key (ALTER TABLE %s ADD PRIMARY KEY (<key columns>);) or log "
             "whole old rows (ALTER TABLE %s REPLICA IDENTITY FULL;).",
             t.qualified, t.qualified);
    switch (t.replident) {
    case 'n':
        return pgck__add(r, PGCK_TABLE,
                         "table %s has REPLICA IDENTITY NOTHING: its UPDATEs and DELETEs carry "
                         "no key, so edges cannot apply them (and PostgreSQL refuses them once "
                         "the table is published). %s",
                         t.qualified, fixbuf);
    case 'd':
        if (t.has_pk)
            return 0;
        return pgck__add(r, PGCK_TABLE,
                         "table %s has no primary key and REPLICA IDENTITY DEFAULT: its UPDATEs "
                         "and DELETEs carry no key, so edges cannot apply them (and PostgreSQL "
                         "refuses them once the table is published). %s",
                         t.qualified, fixbuf);
    case 'i':
        if (t.has_replident_index)
            return 0;
        return pgck__add(r, PGCK_TABLE,
                         "table %s has REPLICA IDENTITY USING INDEX but that index is gone, "
                         "which PostgreSQL treats as NOTHING. Fix: ALTER TABLE %s REPLICA "
                         "IDENTITY USING INDEX <unique index>; or REPLICA IDENTITY FULL, or "
                         "DEFAULT with a primary key.",
                         t.qualified, t.qualified);
    case 'f':
        return 0;
    }
    return pgck__add(r, PGCK_TABLE, "table %s has an unknown replica identity '%c'. %s",
                     t.qualified, t.replident, fixbuf);
}

/* ====================================================================== */
/* Server, role, slots                                                    */
/* ====================================================================== */

/* Everything but the tables and the slot's own row comes from one query. */
typedef struct pgck_server {
    char wal_level[32];
    long max_slots, nslots;
    long max_senders, nsenders;
    bool in_recovery;
    char role[160]; /* quote_ident(current_user) */
    bool rolreplication, rolsuper;
    char database[160];
} pgck_server;

static int pgck__server(PGconn *pg, pgck_server *s, sa_err *err)
{
    static const char sql[] = "SELECT pg_catalog.current_setting('wal_level'), "
                              "       pg_catalog.current_setting('max_replication_slots'), "
                              "       (SELECT count(*) FROM pg_catalog.pg_replication_slots), "
                              "       pg_catalog.current_setting('max_wal_senders'), "
                              "       (SELECT count(*) FROM pg_catalog.pg_stat_replication), "
                              "       pg_catalog.pg_is_in_recovery(), "
                              "       pg_catalog.quote_ident(current_user), "
                              "       COALESCE((SELECT rolreplication FROM pg_catalog.pg_roles "
                              "                 WHERE rolname = current_user), false), "
                              "       COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles "
                              "                 WHERE rolname = current_user), false), "
                              "       pg_catalog.current_database()";
    char m[SA_ERR_MSG_MAX];
    int rc = 0;
    PGresult *res = PQexecParams(pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = sa_err_set(err, SA_EPG, "reading server settings: %s",
                        repl__pg_msg(pg, res, m, sizeof m));
        goto done;
    }
    if ((rc = pgck__copy(s->wal_level, sizeof s->wal_level, res, 0, err)) != 0 ||
        (rc = pgck__copy(s->role, sizeof s->role, res, 6, err)) != 0 ||
        (rc = pgck__copy(s->database, sizeof s->database, res, 9, err)) != 0)
        goto done;
    s->max_slots = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    s->nslots = strtol(PQgetvalue(res, 0, 2), NULL, 10);
    s->max_senders = strtol(PQgetvalue(res, 0, 3), NULL, 10);
    s->nsenders = strtol(PQgetvalue(res, 0, 4), NULL, 10);
    s->in_recovery = PQgetvalue(res, 0, 5)[0] == 't';
    s->rolreplication = PQgetvalue(res, 0, 7)[0] == 't';
    s->rolsuper = PQgetvalue(res, 0, 8)[0] == 't';
done:
    PQclear(res);
    return rc;
}

static int pgck__server_problems(PGconn *pg, const pgck_server *s, pgck_report *r)
{
    int v = PQserverVersion(pg), rc = 0;
    if (v < 140000 &&
        (rc = pgck__add(r, PGCK_VERSION,
                        "PostgreSQL %d.%d is too old: sa-bridge needs 14 or newer (pgoutput "
                        "protocol 2: streamed transactions and logical messages). Fix: upgrade "
                        "the server to PostgreSQL 14 or newer.",
                        v / 10000, v % 10000)) != 0)
        return rc;
    if (s->in_recovery && v < 160000 &&
        (rc = pgck__add(r, PGCK_RECOVERY,
                        "the server is a standby (in recovery): logical decoding on a standby "
                        "needs PostgreSQL 16. Fix: point sa-bridge at the primary.")) != 0)
        return rc;
    if (strcmp(s->wal_level, "logical") != 0 &&
        (rc = pgck__add(r, PGCK_WAL_LEVEL,
                        "wal_level is '%s' but logical decoding needs 'logical'. Fix: ALTER "
                        "SYSTEM SET wal_level = logical; then restart PostgreSQL.",
                        s->wal_level)) != 0)
        return rc;
    if (!s->rolreplication && !s->rolsuper &&
        (rc = pgck__add(r, PGCK_ROLE,
                        "role %s has neither the REPLICATION attribute nor SUPERUSER, so it "
                        "cannot open a replication connection. Fix: as a superuser, ALTER ROLE "
                        "%s REPLICATION;",
                        s->role, s->role)) != 0)
        return rc;
    if (s->nsenders >= s->max_senders &&
        (rc = pgck__add(r, PGCK_WAL_SENDERS,
                        "no free walsender: max_wal_senders is %ld and %ld are running. Fix: "
                        "ALTER SYSTEM SET max_wal_senders = %ld; then restart PostgreSQL, or "
                        "stop an unused replication client (see pg_stat_replication).",
                        s->max_senders, s->nsenders, s->nsenders + 1)) != 0)
        return rc;
    return 0;
}

static int pgck__slot(PGconn *pg, const char *slot, const pgck_server *s, pgck_report *r,
                      sa_err *err)
{
    sa_err e = {0};
    if (repl_slot_name_check(slot, &e) != 0)
        return pgck__add(r, PGCK_SLOT,
                         "%s. Fix: choose a slot name of 1 to 63 lower case letters, digits "
                         "and underscores.",
                         e.msg);
    bool exists = false;
    repl_slot_info si;
    int rc = repl_slot_get(pg, slot, &exists, &si, err);
    if (rc != 0)
        return rc;
    char dropbuf[256];
    snprintf(dropbuf, sizeof dropbuf,
             "Fix: choose another slot name, or drop this one: "
             "SELECT pg_drop_replication_slot('%s');",
             slot);
    if (!exists) {
        if (s->nslots < s->max_slots)
            return 0;
        return pgck__add(r, PGCK_SLOT,
                         "no free replication slot to create \"%s\": max_replication_slots is "
                         "%ld and %ld slots exist. Fix: ALTER SYSTEM SET max_replication_slots "
                         "= %ld; then restart PostgreSQL, or drop an unused slot (see SELECT "
                         "slot_name, active FROM pg_replication_slots).",
                         slot, s->max_slots, s->nslots, s->nslots + 1);
    }
    if (strcmp(si.slot_type, "logical") != 0)
        return pgck__add(r, PGCK_SLOT, "replication slot \"%s\" exists but is a %s slot. %s", slot,
                         si.slot_type, dropbuf);
    if (strcmp(si.plugin, "pgoutput") != 0)
        return pgck__add(r, PGCK_SLOT,
                         "replication slot \"%s\" exists but decodes with plugin \"%s\", not "
                         "pgoutput. %s",
                         slot, si.plugin, dropbuf);
    if (strcmp(si.database, s->database) != 0)
        return pgck__add(r, PGCK_SLOT,
                         "replication slot \"%s\" exists but belongs to database \"%s\", not "
                         "\"%s\". %s",
                         slot, si.database, s->database, dropbuf);
    if (strcmp(si.wal_status, "lost") == 0)
        return pgck__add(r, PGCK_SLOT,
                         "replication slot \"%s\" has lost WAL it needed (wal_status = lost): "
                         "changes are missing and it can never stream again. Fix: drop it "
                         "(SELECT pg_drop_replication_slot('%s');), re-bootstrap sa-bridge from "
                         "a new slot, and consider raising max_slot_wal_keep_size.",
                         slot, slot);
    if (si.active)
        return pgck__add(r, PGCK_SLOT,
                         "replication slot \"%s\" is in use by process %d (another sa-bridge, "
                         "or a connection not yet gone). Fix: stop that client, or SELECT "
                         "pg_terminate_backend(%d);",
                         slot, si.active_pid, si.active_pid);
    return 0;
}

int pgck_run(PGconn *pg, const char *const *tables, size_t ntables, const char *slot_name,
             pgck_report *out, sa_err *err)
{
    pgck_report r = {0};
    pgck_server s;
    memset(&s, 0, sizeof s);
    int rc = pgck__server(pg, &s, err);
    if (rc != 0)
        goto done;
    if ((rc = pgck__server_problems(pg, &s, &r)) != 0)
        goto done;
    if (slot_name != NULL && (rc = pgck__slot(pg, slot_name, &s, &r, err)) != 0)
        goto done;
    for (size_t i = 0; i < ntables; i++)
        if ((rc = pgck__table(pg, tables[i], s.role, &r, err)) != 0)
            goto done;
done:
    if (rc == SA_ENOMEM)
        sa_err_set(err, SA_ENOMEM, "out of memory listing precondition problems");
    if (rc != 0)
        pgck_report_free(&r);
    else
        *out = r;
    return rc;
}
