/*
 * copy.c — the initial copy of synced tables inside the slot's exported
 * snapshot (see copy.h): a COPY text-format row parser with no I/O, the
 * catalog read that gives each table the shape pgoutput gives it, and the
 * COPY loop that hands out one INSERT op per row.
 */
#include "copy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"
#include "sa/sa_alloc.h"

/* ====================================================================== */
/* COPY text format                                                       */
/* ====================================================================== */

void cp_row_buf_init(cp_row_buf *b)
{
    memset(b, 0, sizeof *b);
    sa_buf_init(&b->bytes);
}

void cp_row_buf_free(cp_row_buf *b)
{
    if (b == NULL)
        return;
    sa_free(b->fields);
    sa_buf_free(&b->bytes);
    memset(b, 0, sizeof *b);
}

static int cp__hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int cp__is_octal(char c)
{
    return c >= '0' && c <= '7';
}

/*
 * Decode the escape whose letter is line[*i - 1] (the backslash and the
 * letter are consumed); more digits are consumed as PostgreSQL's
 * CopyReadAttributesText does.  Returns the decoded byte.
 */
static uint8_t cp__unescape(const char *line, size_t len, size_t *i, char ch)
{
    switch (ch) {
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    case 'n':
        return '\n';
    case 'r':
        return '\r';
    case 't':
        return '\t';
    case 'v':
        return '\v';
    case 'x': {
        int v = *i < len ? cp__hexval(line[*i]) : -1;
        if (v < 0)
            return 'x'; /* "\x" without a hex digit is a plain x */
        (*i)++;
        int v2 = *i < len ? cp__hexval(line[*i]) : -1;
        if (v2 >= 0) {
            (*i)++;
            v = v * 16 + v2;
        }
        return (uint8_t)v;
    }
    default:
        break;
    }
    if (cp__is_octal(ch)) {
        int v = ch - '0';
        for (int k = 0; k < 2 && *i < len && cp__is_octal(line[*i]); k++)
            v = v * 8 + (line[(*i)++] - '0');
        return (uint8_t)(v & 0377); /* \777 wraps, as in PostgreSQL */
    }
    return (uint8_t)ch; /* \\ and any other \c */
}

int cp_parse_text_row(const char *line, size_t len, uint32_t ncols, cp_row_buf *buf, sa_err *err)
{
    buf->nfields = 0;
    if (ncols > SA_OP_MAX_FIELDS)
        return sa_err_set(err, SA_ETOOBIG, "COPY row: %u columns, more than the limit of %u", ncols,
                          SA_OP_MAX_FIELDS);
    if (len > 0 && line[len - 1] == '\n')
        len--; /* PQgetCopyData includes the row's newline */
    if (buf->cap < ncols) {
        sa_value *f = sa_realloc(buf->fields, (size_t)ncols * sizeof *f);
        if (f == NULL)
            return sa_err_set(err, SA_ENOMEM, "COPY row: out of memory for %u columns", ncols);
        buf->fields = f;
        buf->cap = ncols;
    }
    /* Decoding never lengthens a field; add one NUL per field.  Reserving
     * it all now keeps the data pointers stable while we parse. */
    sa_buf_reset(&buf->bytes);
    if (sa_buf_reserve(&buf->bytes, len + ncols + 1) != 0)
        return sa_err_set(err, SA_ENOMEM, "COPY row: out of memory for %zu bytes", len);
    uint8_t *out = buf->bytes.data;
    size_t o = 0, i = 0;
    uint32_t nf = 0; /* fields seen, may run past ncols */
    for (;;) {
        size_t raw = i, start = o;
        while (i < len && line[i] != '\t') {
            char ch = line[i++];
            if (ch == '\n' || ch == '\r')
                return sa_err_set(err, SA_EPROTO, "COPY row: unescaped %s in column %u at byte %zu",
                                  ch == '\n' ? "newline" : "carriage return", nf + 1, i - 1);
            if (ch != '\\') {
                out[o++] = (uint8_t)ch;
                continue;
            }
            if (i == len)
                return sa_err_set(err, SA_EPROTO,
                                  "COPY row: backslash at the end of the row (column %u)", nf + 1);
            ch = line[i++];
            out[o++] = cp__unescape(line, len, &i, ch);
        }
        if (nf < ncols) {
            sa_value *v = &buf->fields[nf];
            memset(v, 0, sizeof *v);
            if (i - raw == 2 && line[raw] == '\\' && line[raw + 1] == 'N') {
                v->kind = SA_VAL_NULL; /* only the whole field \N is NULL */
                o = start;
            } else {
                if (o - start > SA_OP_MAX_VALUE)
                    return sa_err_set(err, SA_ETOOBIG,
                                      "COPY row: column %u is %zu bytes, more than %u", nf + 1,
                                      o - start, SA_OP_MAX_VALUE);
                v->kind = SA_VAL_TEXT;
                v->len = (uint32_t)(o - start);
                v->data = (const char *)out + start;
                out[o++] = '\0';
            }
        } else {
            o = start; /* too many columns: keep counting, store nothing */
        }
        nf++;
        if (i == len)
            break;
        i++; /* the tab */
    }
    if (ncols == 0 && len == 0)
        nf = 0; /* a row of a table without columns is an empty line */
    if (nf != ncols)
        return sa_err_set(err, SA_EPROTO, "COPY row: expected %u column%s, found %u", ncols,
                          ncols == 1 ? "" : "s", nf);
    buf->bytes.len = o;
    buf->nfields = ncols;
    return 0;
}

/* ====================================================================== */
/* Tables                                                                 */
/* ====================================================================== */

void cp_table_free(cp_table *t)
{
    if (t == NULL)
        return;
    for (uint32_t i = 0; i < t->ncols; i++)
        sa_free((char *)t->cols[i].name);
    sa_free((cp_column *)t->cols);
    sa_free((uint32_t *)t->key);
    sa_free((char *)t->nspname);
    sa_free((char *)t->relname);
    sa_free((char *)t->qualname);
    sa_free(t->copy_sql);
    sa_free(t);
}

/* Append PQescapeIdentifier(s) to b. */
static int cp__put_ident(PGconn *c, sa_buf *b, const char *s, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    char *q = PQescapeIdentifier(c, s, strlen(s));
    if (q == NULL)
        return sa_err_set(err, SA_EPG, "quoting identifier \"%s\": %s", s,
                          repl__pg_msg(c, NULL, m, sizeof m));
    int rc = sa_buf_put(b, q, strlen(q));
    PQfreemem(q);
    if (rc != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory building the COPY statement");
    return 0;
}

/*
 * COPY (SELECT "c1", ... FROM ONLY "nsp"."rel") TO STDOUT.  A partitioned
 * table holds no rows itself: read it through its root, without ONLY.
 */
static int cp__build_copy_sql(PGconn *c, cp_table *t, sa_err *err)
{
    sa_buf b;
    sa_buf_init(&b);
    int rc = 0;
#define CP_PUT(s)                                                                                  \
    do {                                                                                           \
        if (sa_buf_put(&b, (s), strlen(s)) != 0) {                                                 \
            rc = sa_err_set(err, SA_ENOMEM, "out of memory building the COPY statement");          \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    CP_PUT("COPY (SELECT ");
    for (uint32_t i = 0; i < t->ncols; i++) {
        if (i > 0)
            CP_PUT(", ");
        if ((rc = cp__put_ident(c, &b, t->cols[i].name, err)) != 0)
            goto done;
    }
    CP_PUT(t->relkind == 'r' ? " FROM ONLY " : " FROM ");
    if ((rc = cp__put_ident(c, &b, t->nspname, err)) != 0)
        goto done;
    CP_PUT(".");
    if ((rc = cp__put_ident(c, &b, t->relname, err)) != 0)
        goto done;
    CP_PUT(") TO STDOUT");
    if (sa_buf_put_u8(&b, 0) != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory building the COPY statement");
        goto done;
    }
#undef CP_PUT
    t->copy_sql = (char *)b.data;
    sa_buf_init(&b); /* ownership moved to t */
done:
    sa_buf_free(&b);
    return rc;
}

/* The relation row: oid, names, relkind, replident, reltuples. */
static int cp__load_class(PGconn *c, const char *name, cp_table *t, sa_err *err)
{
    static const char sql[] =
        "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident, c.reltuples::float8 "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = pg_catalog.to_regclass($1::text)";
    char m[SA_ERR_MSG_MAX];
    const char *params[1] = {name};
    int rc = 0;
    PGresult *res = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *st = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        /* to_regclass (before 16) raises on a malformed name */
        int bad = st != NULL && (strcmp(st, "42601") == 0 || strcmp(st, "42602") == 0 ||
                                 strcmp(st, "0A000") == 0);
        rc = sa_err_set(err, bad ? SA_EINVAL : SA_EPG, "%s table name \"%s\": %s",
                        bad ? "invalid" : "looking up", name, repl__pg_msg(c, res, m, sizeof m));
        goto done;
    }
    if (PQntuples(res) != 1) {
        rc = sa_err_set(err, SA_ENOTFOUND, "table \"%s\" does not exist", name);
        goto done;
    }
    t->oid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    t->relkind = PQgetvalue(res, 0, 3)[0];
    t->replident = PQgetvalue(res, 0, 4)[0];
    double tuples = strtod(PQgetvalue(res, 0, 5), NULL);
    t->est_rows = tuples >= 0 && t->relkind == 'r' ? (int64_t)tuples : -1;
    const char *nsp = PQgetvalue(res, 0, 1), *rel = PQgetvalue(res, 0, 2);
    size_t qlen = strlen(nsp) + 1 + strlen(rel) + 1;
    char *q = sa_malloc(qlen);
    if (q != NULL)
        snprintf(q, qlen, "%s.%s", nsp, rel);
    t->qualname = q;
    t->nspname = sa_strdup(nsp);
    t->relname = sa_strdup(rel);
    if (t->qualname == NULL || t->nspname == NULL || t->relname == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory loading table \"%s\"", name);
        goto done;
    }
    if (t->relkind != 'r' && t->relkind != 'p') {
        rc = sa_err_set(err, SA_EINVAL,
                        "\"%s\" (%s) is not a table (relkind '%c'): only tables are published",
                        name, t->qualname, t->relkind);
        goto done;
    }
    if (t->replident == 'n') {
        rc = sa_err_set(err, SA_EINVAL,
                        "table %s has REPLICA IDENTITY NOTHING: no key identifies its rows",
                        t->qualname);
        goto done;
    }
    if (t->replident != 'd' && t->replident != 'f' && t->replident != 'i') {
        rc = sa_err_set(err, SA_EPROTO, "table %s: unknown relreplident '%c'", t->qualname,
                        t->replident);
        goto done;
    }
done:
    PQclear(res);
    return rc;
}

/*
 * The published columns, each flagged as pgoutput's logicalrep_write_attrs
 * flags it: every column for FULL, else the columns of the relation's
 * replica identity index as the relcache picks it (RelationGetIndexList):
 * live, valid (partitioned indexes aside), unique, immediate, not partial;
 * the primary key for DEFAULT, the indisreplident index for INDEX.
 */
static int cp__load_columns(PGconn *c, cp_table *t, sa_err *err)
{
    static const char sql[] =
        "WITH k AS ("
        "  SELECT i.indkey::pg_catalog.int2[] AS cols "
        "  FROM pg_catalog.pg_index i "
        "  WHERE i.indrelid = $1::pg_catalog.oid AND i.indislive "
        "    AND (i.indisvalid OR $3::pg_catalog.\"char\" = 'p') "
        "    AND i.indisunique AND i.indimmediate AND i.indpred IS NULL "
        "    AND CASE $2::pg_catalog.\"char\" WHEN 'd' THEN i.indisprimary "
        "                                 WHEN 'i' THEN i.indisreplident ELSE false END "
        "  LIMIT 1) "
        "SELECT a.attname, a.atttypid, "
        "       $2::pg_catalog.\"char\" = 'f' "
        "       OR a.attnum = ANY (COALESCE((SELECT cols FROM k), '{}')) "
        "FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "  AND a.attgenerated = '' "
        "ORDER BY a.attnum";
    char m[SA_ERR_MSG_MAX], oid[16], ri[2] = {t->replident, 0}, rk[2] = {t->relkind, 0};
    snprintf(oid, sizeof oid, "%u", t->oid);
    const char *params[3] = {oid, ri, rk};
    int rc = 0;
    PGresult *res = PQexecParams(c, sql, 3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = sa_err_set(err, SA_EPG, "reading the columns of table %s: %s", t->qualname,
                        repl__pg_msg(c, res, m, sizeof m));
        goto done;
    }
    int n = PQntuples(res);
    if (n > (int)SA_OP_MAX_FIELDS) {
        rc = sa_err_set(err, SA_ETOOBIG, "table %s has %d columns, more than %u", t->qualname, n,
                        SA_OP_MAX_FIELDS);
        goto done;
    }
    cp_column *cols = sa_calloc(n > 0 ? (size_t)n : 1, sizeof *cols);
    uint32_t *key = sa_calloc(n > 0 ? (size_t)n : 1, sizeof *key);
    t->cols = cols;
    t->key = key;
    if (cols == NULL || key == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory loading table %s", t->qualname);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if ((cols[i].name = sa_strdup(PQgetvalue(res, i, 0))) == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory loading table %s", t->qualname);
            goto done;
        }
        t->ncols++;
        cols[i].type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        cols[i].is_key = PQgetvalue(res, i, 2)[0] == 't';
        if (cols[i].is_key)
            key[t->nkey++] = (uint32_t)i;
    }
    if (t->nkey == 0) {
        if (t->replident == 'd')
            rc = sa_err_set(err, SA_EINVAL,
                            "table %s has no key: REPLICA IDENTITY DEFAULT and no usable "
                            "primary key (none, or DEFERRABLE)",
                            t->qualname);
        else if (t->replident == 'i')
            rc = sa_err_set(err, SA_EINVAL,
                            "table %s has no key: REPLICA IDENTITY USING INDEX but no usable "
                            "index is marked as the replica identity",
                            t->qualname);
        else
            rc = sa_err_set(err, SA_EINVAL,
                            "table %s has no key: REPLICA IDENTITY FULL on "
                            "a table without columns",
                            t->qualname);
    }
done:
    PQclear(res);
    return rc;
}

int cp_table_load(PGconn *c, const char *name, cp_table **out, sa_err *err)
{
    int rc = 0;
    cp_table *t = sa_calloc(1, sizeof *t);
    if (t == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory loading table \"%s\"", name);
        goto done;
    }
    if ((rc = cp__load_class(c, name, t, err)) != 0 || (rc = cp__load_columns(c, t, err)) != 0 ||
        (rc = cp__build_copy_sql(c, t, err)) != 0)
        goto done;
    *out = t;
    t = NULL;
done:
    cp_table_free(t);
    return rc;
}

/* ====================================================================== */
/* The snapshot transaction                                               */
/* ====================================================================== */

/* Run a command that returns no rows; SA_EPG with the server's message. */
static int cp__command(PGconn *c, const char *sql, const char *doing, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    PGresult *res = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = sa_err_set(err, SA_EPG, "%s: %s", doing, repl__pg_msg(c, res, m, sizeof m));
    PQclear(res);
    return rc;
}

int cp_begin_snapshot(PGconn *c, const char *snapshot_name, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    char *lit = NULL, *sql = NULL;
    int rc = 0;
    if (snapshot_name == NULL || snapshot_name[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "empty snapshot name");
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return sa_err_set(err, SA_EINVAL,
                          "cannot start the snapshot transaction: the connection is %s",
                          PQstatus(c) == CONNECTION_BAD ? "broken" : "already in a transaction");
    lit = PQescapeLiteral(c, snapshot_name, strlen(snapshot_name));
    if (lit == NULL) {
        rc = sa_err_set(err, SA_EINVAL, "snapshot name \"%s\": %s", snapshot_name,
                        repl__pg_msg(c, NULL, m, sizeof m));
        goto done;
    }
    static const char set[] = "SET TRANSACTION SNAPSHOT ";
    size_t n = sizeof set + strlen(lit);
    if ((sql = sa_malloc(n)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(sql, n, "%s%s", set, lit);
    if ((rc = cp__command(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                          "starting the snapshot transaction", err)) != 0)
        goto done;
    if ((rc = cp__command(c, sql, "importing snapshot", err)) != 0) {
        sa_err_wrap(err, "snapshot \"%s\"", snapshot_name);
        cp__command(c, "ROLLBACK", "rolling back", NULL);
    }
done:
    if (lit != NULL)
        PQfreemem(lit);
    sa_free(sql);
    return rc;
}

int cp_end(PGconn *c, sa_err *err)
{
    switch (PQtransactionStatus(c)) {
    case PQTRANS_IDLE:
        return 0;
    case PQTRANS_INTRANS:
        return cp__command(c, "COMMIT", "ending the snapshot transaction", err);
    case PQTRANS_INERROR:
        return cp__command(c, "ROLLBACK", "rolling back the snapshot transaction", err);
    default: {
        char m[SA_ERR_MSG_MAX];
        return sa_err_set(err, SA_EPG, "ending the snapshot transaction: connection %s: %s",
                          PQstatus(c) == CONNECTION_BAD ? "broken" : "busy",
                          repl__pg_msg(c, NULL, m, sizeof m));
    }
    }
}

/* ====================================================================== */
/* The copy                                                               */
/* ====================================================================== */

/* Consume what is left of a COPY OUT and its results. */
static void cp__drain(PGconn *c)
{
    char *line = NULL;
    int n;
    while ((n = PQgetCopyData(c, &line, 0)) > 0)
        PQfreemem(line);
    PGresult *res;
    while ((res = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        PQclear(res);
        if (st == PGRES_COPY_OUT) /* not over yet: keep reading rows */
            while ((n = PQgetCopyData(c, &line, 0)) > 0)
                PQfreemem(line);
        if (PQstatus(c) == CONNECTION_BAD)
            break;
    }
}

/* Stop a COPY OUT early: ask the server to cancel it, then drain, so the
 * connection is ready for the next command (its transaction aborted). */
static void cp__abort_copy(PGconn *c, sa_err *err)
{
    if (PQstatus(c) != CONNECTION_BAD) {
        PGcancel *cn = PQgetCancel(c);
        if (cn != NULL) {
            char eb[256];
            (void)PQcancel(cn, eb, sizeof eb); /* if it fails we just drain more */
            PQfreeCancel(cn);
        }
        cp__drain(c);
    }
    if (PQstatus(c) == CONNECTION_BAD && err != NULL) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (the connection is lost)");
    }
}

int cp_copy_table(PGconn *c, const cp_table *t, cp_row_fn fn, void *ctx, uint64_t *rows_out,
                  sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    int rc = 0, in_copy = 0;
    uint64_t rows = 0;
    char *line = NULL;
    PGresult *res = NULL;
    cp_row_buf rb;
    cp_row_buf_init(&rb);
    sa_field *f = NULL;

    if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
        rc = sa_err_set(err, SA_EINVAL,
                        "copying table %s: the connection is not in a "
                        "transaction (cp_begin_snapshot)",
                        t->qualname);
        goto done;
    }
    /* cols then key, names set once; values refreshed per row */
    if ((f = sa_calloc((size_t)t->ncols + t->nkey + 1, sizeof *f)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "copying table %s: out of memory", t->qualname);
        goto done;
    }
    sa_field *key = f + t->ncols;
    for (uint32_t i = 0; i < t->ncols; i++)
        f[i].name = t->cols[i].name;
    for (uint32_t j = 0; j < t->nkey; j++)
        key[j].name = t->cols[t->key[j]].name;

    res = PQexec(c, t->copy_sql);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        rc = sa_err_set(err, SA_EPG, "copying table %s: %s", t->qualname,
                        repl__pg_msg(c, res, m, sizeof m));
        goto done;
    }
    PQclear(res);
    res = NULL;
    in_copy = 1;
    for (;;) {
        int n = PQgetCopyData(c, &line, 0);
        if (n == -1)
            break;
        if (n < 0) {
            rc = sa_err_set(err, SA_EPG, "copying table %s, after %llu rows: %s", t->qualname,
                            (unsigned long long)rows, repl__pg_msg(c, NULL, m, sizeof m));
            goto done;
        }
        if ((rc = cp_parse_text_row(line, (size_t)n, t->ncols, &rb, err)) != 0) {
            sa_err_wrap(err, "copying table %s, row %llu", t->qualname,
                        (unsigned long long)rows + 1);
            goto done;
        }
        PQfreemem(line);
        line = NULL;
        for (uint32_t i = 0; i < t->ncols; i++) {
            f[i].val = rb.fields[i];
            f[i].val.type_oid = t->cols[i].type_oid;
        }
        for (uint32_t j = 0; j < t->nkey; j++)
            key[j].val = f[t->key[j]].val;
        sa_op op;
        memset(&op, 0, sizeof op);
        op.origin = "pg";
        op.kind = SA_OP_INSERT;
        op.table = t->qualname;
        op.key = key;
        op.nkey = t->nkey;
        op.cols = f;
        op.ncols = t->ncols;
        sa_err fe;
        sa_err_clear(&fe);
        int frc = fn(ctx, &op, &fe);
        if (frc != 0) {
            if (fe.code == 0)
                sa_err_set(&fe, frc, "stopped by the row callback");
            sa_err_wrap(&fe, "copying table %s, row %llu", t->qualname,
                        (unsigned long long)rows + 1);
            if (err != NULL)
                *err = fe;
            rc = frc;
            goto done;
        }
        rows++;
    }
    in_copy = 0;
    res = PQgetResult(c);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = sa_err_set(err, SA_EPG, "copying table %s, after %llu rows: %s", t->qualname,
                        (unsigned long long)rows, repl__pg_msg(c, res, m, sizeof m));
    }
    PQclear(res);
    res = NULL;
    while ((res = PQgetResult(c)) != NULL) /* up to the NULL that ends the command */
        PQclear(res);
done:
    if (line != NULL)
        PQfreemem(line);
    PQclear(res);
    if (in_copy)
        cp__abort_copy(c, err);
    cp_row_buf_free(&rb);
    sa_free(f);
    if (rows_out != NULL)
        *rows_out = rows;
    return rc;
}
