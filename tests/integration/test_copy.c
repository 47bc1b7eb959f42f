/*
 * test_copy.c — the initial copy (copy.h) against a real PostgreSQL: tables
 * of many types and every replica identity are copied inside an exported
 * snapshot, and each op is checked against SELECT col run in the same
 * snapshot in libpq's text format, i.e. each type's output function (exact
 * bytes, NULL vs ''; not col::text, which renders bool as 'true'), its key against the replica
 * identity, its type OIDs against pg_attribute; rows inserted after the export must not appear.
 * Then the same rows are decoded from pgoutput (pg_logical_slot_get_binary_changes) and each
 * streamed INSERT must equal the copied op for the same row (sa_op_equal).  Also: tables without a
 * key, bad names, a bad snapshot, and a row callback that stops the copy.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "pg_harness.h"
#include "pgo.h"
#include "sa/sa_alloc.h"
#include "sa/sa_buf.h"
#include "sa/sa_op.h"

static sa_pgh *g_h;

static void exec_ok(const char *sql)
{
    sa_err err = {0};
    int rc = sa_pgh_exec(g_h, sql, NULL, &err);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, err.msg, sa_err_name(rc));
}

static PGconn *connect_db(void)
{
    PGconn *c = PQconnectdb(sa_pgh_conninfo(g_h));
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    return c;
}

static PGresult *query_ok(PGconn *c, const char *sql, int nparams, const char *const *params)
{
    /* no parameters: the simple protocol, so several statements may run */
    PGresult *res =
        nparams == 0 ? PQexec(c, sql) : PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return res;
}

static void cmd_ok(PGconn *c, const char *sql, int nparams, const char *const *params)
{
    PQclear(query_ok(c, sql, nparams, params));
}

/* ---- the tables ---------------------------------------------------------- */

/* 19 columns after id; values bound as text parameters so tabs, newlines and
 * backslashes reach the server exactly as written here. */
#define TYPES_INSERT                                                                               \
    "INSERT INTO t_types (id, i, b, n, n2, tx, tx2, ba, ts, ts2, iv, ia, ta, j, jb, u, en, d, "    \
    "bo, f8) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, " \
    "$18, $19, $20)"

static const char *const types_row_weird[20] = {
    NULL,          /* id, set by the caller */
    "-1073741824", /* g = i * 2 must fit */
    "9223372036854775807",
    "NaN",
    "1e100",
    "tab\there\nnewline\\back\\\\slash \\N \r cr \xc3\xa9 \xe2\x98\xba \xe6\x97\xa5\xe6\x9c\xac",
    "",
    "\\x00ff5c0a09",
    "infinity",
    "2024-02-29 12:34:56.789012+05:30",
    "1 year 2 mons 3 days 04:05:06.789",
    "{1,NULL,3}",
    "{{\"a\tb\",NULL},{\"c\\\"d\",\"e\\\\f\"}}",
    "{\"k\": [1, 2, \"x\\ty\"], \"nl\": \"a\\nb\"}",
    "{\"k\": [1, 2, \"x\\ty\"], \"a\": null}",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "happy \xe2\x98\xba",
    "42",
    "true",
    "1.1e-300",
};

static const char *const types_row_edge[20] = {
    NULL,
    "0",
    "-1",
    "-0.000000000000000000001",
    "123456789012345678901234567890.123456789",
    "\\N",
    "\\\\N",
    "\\x",
    "-infinity",
    "epoch",
    "-1 days",
    "{}",
    "{{NULL,\"\"},{\"NULL\",\"\\\\N\"}}",
    "null",
    "[]",
    "00000000-0000-0000-0000-000000000000",
    "sad",
    "1",
    "false",
    "-Infinity",
};

static void insert_types_row(PGconn *c, const char *id, const char *const *row)
{
    const char *p[20];
    for (int i = 0; i < 20; i++)
        p[i] = row != NULL ? row[i] : NULL; /* NULL row: every column NULL */
    p[0] = id;
    cmd_ok(c, TYPES_INSERT, 20, p);
}

static int setup(void **state)
{
    (void)state;
    sa_err err = {0};
    int rc = sa_pgh_start(NULL, &g_h, &err);
    if (rc != 0) {
        fprintf(stderr, "harness: %s\n", err.msg);
        return -1;
    }
    exec_ok("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy \xe2\x98\xba');"
            "CREATE DOMAIN posint AS int CHECK (VALUE > 0);"
            "CREATE TABLE t_types (id int PRIMARY KEY, i int, b bigint, n numeric, n2 numeric,"
            "  tx text, tx2 text, ba bytea, ts timestamptz, ts2 timestamptz, iv interval,"
            "  ia int[], ta text[], j json, jb jsonb, u uuid, en mood, d posint, bo bool,"
            "  dropme int, f8 float8, g int GENERATED ALWAYS AS (i * 2) STORED);"
            "ALTER TABLE t_types DROP COLUMN dropme;"
            /* FULL, no primary key: the key is every column */
            "CREATE TABLE t_full (k int, v text, w jsonb);"
            "ALTER TABLE t_full REPLICA IDENTITY FULL;"
            /* USING INDEX beats the primary key; key is in column order */
            "CREATE TABLE t_idx (x int PRIMARY KEY, y text, code text NOT NULL, z int NOT NULL);"
            "CREATE UNIQUE INDEX t_idx_zc ON t_idx (z, code);"
            "ALTER TABLE t_idx REPLICA IDENTITY USING INDEX t_idx_zc;"
            /* composite primary key declared out of column order */
            "CREATE TABLE t_pk2 (b text, v text, a int, PRIMARY KEY (a, b));"
            "CREATE SCHEMA \"s x\";"
            "CREATE TABLE \"s x\".\"Odd \"\"Name\"\"\" (\"Id\" int PRIMARY KEY, \"col 1\" text);"
            "CREATE TABLE t_part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);"
            "CREATE TABLE t_part_1 PARTITION OF t_part FOR VALUES FROM (0) TO (100);"
            "CREATE TABLE t_part_2 PARTITION OF t_part FOR VALUES FROM (100) TO (200);"
            "CREATE TABLE t_big (id int PRIMARY KEY, v text);"
            /* no way to identify rows */
            "CREATE TABLE t_nokey (a int, b text);"
            "CREATE TABLE t_nothing (id int PRIMARY KEY);"
            "ALTER TABLE t_nothing REPLICA IDENTITY NOTHING;"
            "CREATE TABLE t_defer (id int PRIMARY KEY DEFERRABLE);"
            "CREATE VIEW v_items AS SELECT 1 AS one;");

    PGconn *c = connect_db();
    insert_types_row(c, "1", types_row_weird);
    insert_types_row(c, "2", NULL);
    insert_types_row(c, "3", types_row_edge);
    PQfinish(c);
    exec_ok("INSERT INTO t_full VALUES (1, 'one', '{\"a\": 1}'), (1, 'one', '{\"a\": 1}'),"
            "  (2, NULL, NULL), (3, '', '[]');"
            "INSERT INTO t_idx VALUES (1, 'y1', 'c\tx', 10), (2, NULL, '', 20);"
            "INSERT INTO t_pk2 VALUES ('b1', 'v1', 1), ('b2', NULL, 2);"
            "INSERT INTO \"s x\".\"Odd \"\"Name\"\"\" VALUES (1, 'odd'), (2, NULL);"
            "INSERT INTO t_part VALUES (1, 'p1'), (150, 'p2'), (199, NULL);"
            "INSERT INTO t_big SELECT g, 'row ' || g FROM generate_series(1, 10000) g;"
            "ANALYZE t_big;");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sa_pgh_stop(g_h);
    g_h = NULL;
    return 0;
}

/* ---- collecting ops ------------------------------------------------------ */

typedef struct collected {
    sa_op **ops;
    size_t n, cap;
    size_t stop_after; /* 0 = never stop */
} collected;

static int collect(void *ctx, const sa_op *op, sa_err *err)
{
    collected *col = ctx;
    if (col->stop_after != 0 && col->n == col->stop_after)
        return sa_err_set(err, SA_EIO, "test callback refuses row %zu", col->n + 1);
    /* stamp a copy, as the bridge will */
    sa_op o = *op;
    o.seq = col->n + 1;
    o.flags |= SA_OP_HAS_PG;
    sa_err verr;
    if (sa_op_validate(&o, &verr) != 0)
        fail_msg("invalid op for %s: %s", op->table, verr.msg);
    if (col->n == col->cap) {
        col->cap = col->cap ? col->cap * 2 : 16;
        col->ops = realloc(col->ops, col->cap * sizeof *col->ops);
        assert_non_null(col->ops);
    }
    assert_int_equal(sa_op_clone(op, &col->ops[col->n], err), 0);
    col->n++;
    return 0;
}

static void collected_free(collected *col)
{
    for (size_t i = 0; i < col->n; i++)
        sa_op_free(col->ops[i]);
    free(col->ops);
    memset(col, 0, sizeof *col);
}

/* ---- canonical rows: "N;" for NULL, "T<len>:<bytes>;" for text ---------- */

static char *canon_fields(const sa_field *f, uint32_t n)
{
    sa_buf b;
    sa_buf_init(&b);
    for (uint32_t i = 0; i < n; i++) {
        char hdr[32];
        if (f[i].val.kind == SA_VAL_NULL) {
            assert_int_equal(sa_buf_put(&b, "N;", 2), 0);
            continue;
        }
        assert_int_equal(f[i].val.kind, SA_VAL_TEXT);
        int hl = snprintf(hdr, sizeof hdr, "T%u:", f[i].val.len);
        assert_int_equal(sa_buf_put(&b, hdr, (size_t)hl), 0);
        assert_int_equal(sa_buf_put(&b, f[i].val.data, f[i].val.len), 0);
        assert_int_equal(sa_buf_put(&b, ";", 1), 0);
    }
    assert_int_equal(sa_buf_put_u8(&b, 0), 0);
    char *s = strdup((char *)b.data);
    sa_buf_free(&b);
    return s;
}

static char *canon_result_row(const PGresult *res, int row)
{
    int n = PQnfields(res);
    sa_field *f = calloc((size_t)n + 1, sizeof *f);
    for (int i = 0; i < n; i++) {
        f[i].name = "x";
        if (PQgetisnull(res, row, i)) {
            f[i].val.kind = SA_VAL_NULL;
        } else {
            f[i].val.kind = SA_VAL_TEXT;
            f[i].val.len = (uint32_t)PQgetlength(res, row, i);
            f[i].val.data = PQgetvalue(res, row, i);
        }
    }
    char *s = canon_fields(f, (uint32_t)n);
    free(f);
    return s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "quoted"."quoted" for t (caller frees with free()). */
static char *quoted_name(PGconn *c, const cp_table *t)
{
    char *n = PQescapeIdentifier(c, t->nspname, strlen(t->nspname));
    char *r = PQescapeIdentifier(c, t->relname, strlen(t->relname));
    size_t len = strlen(n) + strlen(r) + 2;
    char *s = malloc(len);
    snprintf(s, len, "%s.%s", n, r);
    PQfreemem(n);
    PQfreemem(r);
    return s;
}

/*
 * Load and copy `name` on cop (inside the snapshot), and check it against
 * exp (a connection in the same snapshot): table name, key names, type
 * OIDs, and the multiset of rows as SELECT col (text format) gives them.  Returns
 * the ops (caller frees with collected_free).
 */
static void check_table(PGconn *exp, PGconn *cop, const char *name, const char *qualname,
                        const char *const *keys, uint32_t nkeys, size_t nrows, collected *out)
{
    sa_err err = {0};
    cp_table *t = NULL;
    int rc = cp_table_load(cop, name, &t, &err);
    if (rc != 0)
        fail_msg("load %s: %s (%s)", name, err.msg, sa_err_name(rc));
    assert_string_equal(t->qualname, qualname);
    assert_int_equal(t->nkey, nkeys);
    for (uint32_t j = 0; j < nkeys; j++) {
        assert_string_equal(t->cols[t->key[j]].name, keys[j]);
        assert_true(t->cols[t->key[j]].is_key);
    }

    /* columns and type OIDs as pg_attribute has them */
    const char *p[1] = {name};
    PGresult *res = query_ok(exp,
                             "SELECT attname, atttypid FROM pg_attribute "
                             "WHERE attrelid = to_regclass($1) AND attnum > 0 "
                             "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                             1, p);
    assert_int_equal(PQntuples(res), (int)t->ncols);
    for (uint32_t i = 0; i < t->ncols; i++) {
        assert_string_equal(t->cols[i].name, PQgetvalue(res, (int)i, 0));
        assert_int_equal(t->cols[i].type_oid, strtoul(PQgetvalue(res, (int)i, 1), NULL, 10));
    }
    PQclear(res);

    memset(out, 0, sizeof *out);
    uint64_t rows = 0;
    rc = cp_copy_table(cop, t, collect, out, &rows, &err);
    if (rc != 0)
        fail_msg("copy %s: %s (%s)", name, err.msg, sa_err_name(rc));
    assert_int_equal(rows, nrows);
    assert_int_equal(out->n, nrows);

    /* expected rows, from the same snapshot, in libpq's text result format:
     * each type's output function, what pgoutput sends.  (col::text is not
     * always that: bool::text is 'true' where boolout gives 't'.) */
    sa_buf sql;
    sa_buf_init(&sql);
    assert_int_equal(sa_buf_put(&sql, "SELECT ", 7), 0);
    for (uint32_t i = 0; i < t->ncols; i++) {
        char *q = PQescapeIdentifier(exp, t->cols[i].name, strlen(t->cols[i].name));
        if (i > 0)
            assert_int_equal(sa_buf_put(&sql, ", ", 2), 0);
        assert_int_equal(sa_buf_put(&sql, q, strlen(q)), 0);
        PQfreemem(q);
    }
    char *qn = quoted_name(exp, t);
    const char *from = t->relkind == 'r' ? " FROM ONLY " : " FROM ";
    assert_int_equal(sa_buf_put(&sql, from, strlen(from)), 0);
    assert_int_equal(sa_buf_put(&sql, qn, strlen(qn)), 0);
    assert_int_equal(sa_buf_put_u8(&sql, 0), 0);
    free(qn);
    res = query_ok(exp, (char *)sql.data, 0, NULL);
    sa_buf_free(&sql);
    assert_int_equal(PQntuples(res), (int)nrows);

    char **want = calloc(nrows + 1, sizeof *want), **got = calloc(nrows + 1, sizeof *got);
    for (size_t r = 0; r < nrows; r++) {
        const sa_op *op = out->ops[r];
        assert_string_equal(op->origin, "pg");
        assert_int_equal(op->kind, SA_OP_INSERT);
        assert_int_equal(op->flags, 0);
        assert_string_equal(op->table, qualname);
        assert_int_equal(op->ncols, t->ncols);
        assert_int_equal(op->nkey, nkeys);
        for (uint32_t i = 0; i < op->ncols; i++) {
            assert_string_equal(op->cols[i].name, t->cols[i].name);
            assert_int_equal(op->cols[i].val.type_oid, t->cols[i].type_oid);
        }
        for (uint32_t j = 0; j < nkeys; j++) {
            const sa_field *src = &op->cols[t->key[j]];
            assert_string_equal(op->key[j].name, keys[j]);
            assert_int_equal(op->key[j].val.kind, src->val.kind);
            assert_int_equal(op->key[j].val.type_oid, src->val.type_oid);
            assert_int_equal(op->key[j].val.len, src->val.len);
            assert_memory_equal(op->key[j].val.data, src->val.data, src->val.len);
        }
        got[r] = canon_fields(op->cols, op->ncols);
        want[r] = canon_result_row(res, (int)r);
    }
    qsort(got, nrows, sizeof *got, cmp_str);
    qsort(want, nrows, sizeof *want, cmp_str);
    for (size_t r = 0; r < nrows; r++) {
        if (strcmp(got[r], want[r]) != 0) {
            size_t at = 0;
            while (got[r][at] == want[r][at])
                at++;
            at = at > 40 ? at - 40 : 0;
            fail_msg("%s row %zu differs:\n copy:   ...%.120s\n select: ...%.120s", name, r,
                     got[r] + at, want[r] + at);
        }
        free(got[r]);
        free(want[r]);
    }
    free(got);
    free(want);
    PQclear(res);
    cp_table_free(t);
}

/* Open a REPEATABLE READ transaction on exp and export its snapshot. */
static char *export_snapshot(PGconn *exp)
{
    cmd_ok(exp, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL);
    PGresult *res = query_ok(exp, "SELECT pg_export_snapshot()", 0, NULL);
    char *name = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return name;
}

/* ---- tests --------------------------------------------------------------- */

static void test_copy_tables_in_snapshot(void **state)
{
    (void)state;
    PGconn *exp = connect_db(), *cop = connect_db(), *late = connect_db();
    char *snap = export_snapshot(exp);

    /* after the export: invisible to the copy */
    insert_types_row(late, "100", types_row_weird);
    cmd_ok(late,
           "INSERT INTO t_full VALUES (100, 'late', NULL);"
           "INSERT INTO t_idx VALUES (100, 'late', 'late', 100);"
           "INSERT INTO t_part VALUES (100, 'late');"
           "DELETE FROM t_pk2 WHERE a = 2;"
           "UPDATE t_big SET v = 'changed' WHERE id = 1",
           0, NULL);

    sa_err err = {0};
    int rc = cp_begin_snapshot(cop, snap, &err);
    if (rc != 0)
        fail_msg("begin: %s", err.msg);

    collected col;
    static const char *const k_id[] = {"id"};
    check_table(exp, cop, "t_types", "public.t_types", k_id, 1, 3, &col);
    for (size_t r = 0; r < col.n; r++) {
        const sa_field *id = &col.ops[r]->key[0];
        assert_int_equal(id->val.type_oid, SA_OID_INT4);
        assert_false(id->val.len == 3 && memcmp(id->val.data, "100", 3) == 0);
        /* one spot check by hand: the weird text survived byte for byte */
        if (id->val.len == 1 && id->val.data[0] == '1') {
            const sa_field *tx = &col.ops[r]->cols[5];
            assert_string_equal(tx->name, "tx");
            assert_int_equal(tx->val.len, strlen(types_row_weird[5]));
            assert_memory_equal(tx->val.data, types_row_weird[5], tx->val.len);
            assert_int_equal(col.ops[r]->cols[6].val.kind, SA_VAL_TEXT); /* '' */
            assert_int_equal(col.ops[r]->cols[6].val.len, 0);
        }
        if (id->val.len == 1 && id->val.data[0] == '2')
            assert_int_equal(col.ops[r]->cols[6].val.kind, SA_VAL_NULL);
        if (id->val.len == 1 && id->val.data[0] == '3') {
            const sa_field *tx = &col.ops[r]->cols[5];
            assert_int_equal(tx->val.len, 2);
            assert_memory_equal(tx->val.data, "\\N", 2); /* a literal \N, not NULL */
        }
    }
    collected_free(&col);

    /* the domain column carries the domain's OID, the enum its own */
    cp_table *t = NULL;
    assert_int_equal(cp_table_load(cop, "public.t_types", &t, &err), 0);
    PGresult *res = query_ok(exp,
                             "SELECT 'posint'::regtype::oid, 'mood'::regtype::oid, "
                             "'t_types'::regclass::oid",
                             0, NULL);
    assert_string_equal(t->cols[17].name, "d");
    assert_int_equal(t->cols[17].type_oid, strtoul(PQgetvalue(res, 0, 0), NULL, 10));
    assert_string_equal(t->cols[16].name, "en");
    assert_int_equal(t->cols[16].type_oid, strtoul(PQgetvalue(res, 0, 1), NULL, 10));
    assert_int_equal(t->oid, strtoul(PQgetvalue(res, 0, 2), NULL, 10));
    assert_int_equal(t->ncols, 20); /* dropme and g left out */
    assert_int_equal(t->relkind, 'r');
    assert_int_equal(t->replident, 'd');
    PQclear(res);
    cp_table_free(t);

    static const char *const k_full[] = {"k", "v", "w"};
    check_table(exp, cop, "t_full", "public.t_full", k_full, 3, 4, &col);
    collected_free(&col);
    static const char *const k_idx[] = {"code", "z"};
    check_table(exp, cop, "public.t_idx", "public.t_idx", k_idx, 2, 2, &col);
    collected_free(&col);
    static const char *const k_pk2[] = {"b", "a"};
    check_table(exp, cop, "t_pk2", "public.t_pk2", k_pk2, 2, 2, &col);
    collected_free(&col);
    static const char *const k_odd[] = {"Id"};
    check_table(exp, cop, "\"s x\".\"Odd \"\"Name\"\"\"", "s x.Odd \"Name\"", k_odd, 1, 2, &col);
    collected_free(&col);
    check_table(exp, cop, "t_part", "public.t_part", k_id, 1, 3, &col);
    collected_free(&col);
    check_table(exp, cop, "t_big", "public.t_big", k_id, 1, 10000, &col);
    for (size_t r = 0; r < col.n; r++)
        if (col.ops[r]->key[0].val.len == 1 && col.ops[r]->key[0].val.data[0] == '1')
            assert_memory_equal(col.ops[r]->cols[1].val.data, "row 1", 5); /* not 'changed' */
    collected_free(&col);

    assert_int_equal(cp_table_load(cop, "t_big", &t, &err), 0);
    assert_int_equal(t->est_rows, 10000);
    cp_table_free(t);
    assert_int_equal(cp_table_load(cop, "t_part", &t, &err), 0);
    assert_int_equal(t->relkind, 'p');
    assert_int_equal(t->est_rows, -1);
    cp_table_free(t);

    assert_int_equal(cp_end(cop, &err), 0);
    assert_int_equal(PQtransactionStatus(cop), PQTRANS_IDLE);
    assert_int_equal(cp_end(cop, &err), 0); /* idle: no-op */
    cmd_ok(exp, "COMMIT", 0, NULL);
    free(snap);
    PQfinish(exp);
    PQfinish(cop);
    PQfinish(late);
}

static void expect_load_error(PGconn *c, const char *name, int code, const char *needle)
{
    sa_err err = {0};
    cp_table *t = NULL;
    int rc = cp_table_load(c, name, &t, &err);
    if (rc != code)
        fail_msg("load %s: got %s (%s), want %s", name, sa_err_name(rc), err.msg,
                 sa_err_name(code));
    assert_null(t);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("load %s: message \"%s\" lacks \"%s\"", name, err.msg, needle);
}

static void test_copy_refuses_tables_without_key(void **state)
{
    (void)state;
    PGconn *c = connect_db();
    expect_load_error(c, "t_nokey", SA_EINVAL, "table public.t_nokey has no key");
    expect_load_error(c, "public.t_nothing", SA_EINVAL,
                      "public.t_nothing has REPLICA IDENTITY "
                      "NOTHING");
    expect_load_error(c, "t_defer", SA_EINVAL, "public.t_defer has no key");
    expect_load_error(c, "v_items", SA_EINVAL, "is not a table");
    expect_load_error(c, "no_such_table", SA_ENOTFOUND, "no_such_table");
    expect_load_error(c, "a.b.c.d", SA_EINVAL, "a.b.c.d");
    expect_load_error(c, "t_types; DROP TABLE t_types", SA_EINVAL, "t_types; DROP");
    PGresult *res = query_ok(c, "SELECT count(*) FROM t_types", 0, NULL);
    PQclear(res);

    /* USING INDEX whose index is gone: PostgreSQL falls back to no key */
    cmd_ok(c,
           "CREATE TABLE t_lost (a int NOT NULL);"
           "CREATE UNIQUE INDEX t_lost_a ON t_lost (a);"
           "ALTER TABLE t_lost REPLICA IDENTITY USING INDEX t_lost_a;"
           "DROP INDEX t_lost_a",
           0, NULL);
    expect_load_error(c, "t_lost", SA_EINVAL, "public.t_lost has no key");
    PQfinish(c);
}

static void test_copy_bad_snapshot(void **state)
{
    (void)state;
    PGconn *c = connect_db();
    sa_err err = {0};
    assert_int_equal(cp_begin_snapshot(c, "", &err), SA_EINVAL);
    assert_int_equal(cp_begin_snapshot(c, "00000003-00000002-1", &err), SA_EPG);
    assert_non_null(strstr(err.msg, "00000003-00000002-1"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE); /* rolled back */
    /* a quote in the name is data, not SQL */
    assert_int_equal(cp_begin_snapshot(c, "x'; DROP TABLE t_types; --", &err), SA_EPG);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    PQclear(query_ok(c, "SELECT count(*) FROM t_types", 0, NULL));

    /* copying outside a transaction is refused */
    cp_table *t = NULL;
    assert_int_equal(cp_table_load(c, "t_pk2", &t, &err), 0);
    collected col = {0};
    uint64_t rows = 99;
    assert_int_equal(cp_copy_table(c, t, collect, &col, &rows, &err), SA_EINVAL);
    assert_int_equal(rows, 0);
    cp_table_free(t);
    PQfinish(c);
}

static void test_copy_callback_stops(void **state)
{
    (void)state;
    PGconn *exp = connect_db(), *cop = connect_db();
    char *snap = export_snapshot(exp);
    sa_err err = {0};
    assert_int_equal(cp_begin_snapshot(cop, snap, &err), 0);
    cp_table *t = NULL;
    assert_int_equal(cp_table_load(cop, "t_big", &t, &err), 0);
    collected col = {0};
    col.stop_after = 2;
    uint64_t rows = 0;
    int rc = cp_copy_table(cop, t, collect, &col, &rows, &err);
    assert_int_equal(rc, SA_EIO);
    assert_int_equal(rows, 2);
    assert_non_null(strstr(err.msg, "test callback refuses row 3"));
    assert_non_null(strstr(err.msg, "public.t_big"));
    collected_free(&col);
    /* the connection is usable; the transaction is ended by cp_end */
    assert_int_equal(PQstatus(cop), CONNECTION_OK);
    assert_int_equal(cp_end(cop, &err), 0);
    assert_int_equal(PQtransactionStatus(cop), PQTRANS_IDLE);
    PQclear(query_ok(cop, "SELECT 1", 0, NULL));
    cp_table_free(t);
    cmd_ok(exp, "COMMIT", 0, NULL);
    free(snap);
    PQfinish(exp);
    PQfinish(cop);
}

/* ---- the copy and the stream agree ---------------------------------------- */

static int fields_equal(const sa_field *a, uint32_t na, const sa_field *b, uint32_t nb)
{
    if (na != nb)
        return 0;
    for (uint32_t i = 0; i < na; i++) {
        if (strcmp(a[i].name, b[i].name) != 0 || a[i].val.kind != b[i].val.kind ||
            a[i].val.type_oid != b[i].val.type_oid || a[i].val.len != b[i].val.len ||
            (a[i].val.len && memcmp(a[i].val.data, b[i].val.data, a[i].val.len) != 0))
            return 0;
    }
    return 1;
}

static void test_copy_matches_pgoutput(void **state)
{
    (void)state;
    exec_ok("CREATE PUBLICATION cp_pub FOR TABLE t_types, t_full, t_idx, t_pk2, "
            "\"s x\".\"Odd \"\"Name\"\"\"");
    exec_ok("SELECT pg_create_logical_replication_slot('cp_slot', 'pgoutput')");
    PGconn *c = connect_db();
    insert_types_row(c, "50", types_row_weird);
    insert_types_row(c, "51", types_row_edge);
    insert_types_row(c, "52", NULL);
    cmd_ok(c,
           "INSERT INTO t_full VALUES (50, E'tab\\there', '{\"z\": [1, null]}');"
           "INSERT INTO t_idx VALUES (50, NULL, E'x\\\\y', 50);"
           "INSERT INTO t_pk2 VALUES ('b50', 'v', 50);"
           "INSERT INTO \"s x\".\"Odd \"\"Name\"\"\" VALUES (50, E'odd\\nname')",
           0, NULL);

    /* resultFormat 1: the pgoutput bytes arrive raw */
    PGresult *res = PQexecParams(c,
                                 "SELECT data FROM pg_logical_slot_get_binary_changes('cp_slot', "
                                 "NULL, NULL, 'proto_version', '1', 'publication_names', 'cp_pub')",
                                 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("get changes: %s", PQerrorMessage(c));
    pgo_decoder *d = NULL;
    sa_err err = {0};
    assert_int_equal(pgo_decoder_new(1, &d, &err), 0);
    collected stream = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        const pgo_msg *m = NULL;
        int rc = pgo_decode(d, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0), 0, &m, &err);
        if (rc != 0)
            fail_msg("decode row %d: %s", i, err.msg);
        if (m->type != PGO_INSERT)
            continue;
        sa_op op;
        memset(&op, 0, sizeof op);
        op.origin = "pg";
        assert_int_equal(pgo_change_to_op(d, m, &op, NULL, NULL, &err), 0);
        assert_int_equal(collect(&stream, &op, &err), 0);
    }
    PQclear(res);
    pgo_decoder_free(d);
    assert_int_equal(stream.n, 7);

    /* copy the same tables now and find each streamed row among the copies */
    PGconn *exp = connect_db(), *cop = connect_db();
    char *snap = export_snapshot(exp);
    assert_int_equal(cp_begin_snapshot(cop, snap, &err), 0);
    static const char *const tables[] = {"t_types", "t_full", "t_idx", "t_pk2",
                                         "\"s x\".\"Odd \"\"Name\"\"\""};
    size_t matched = 0;
    for (size_t ti = 0; ti < sizeof tables / sizeof *tables; ti++) {
        cp_table *t = NULL;
        assert_int_equal(cp_table_load(cop, tables[ti], &t, &err), 0);
        collected copy = {0};
        uint64_t rows = 0;
        int rc = cp_copy_table(cop, t, collect, &copy, &rows, &err);
        if (rc != 0)
            fail_msg("copy %s: %s", tables[ti], err.msg);
        for (size_t si = 0; si < stream.n; si++) {
            const sa_op *s = stream.ops[si];
            if (strcmp(s->table, t->qualname) != 0)
                continue;
            /* the key set pgoutput flags is the one cp_table_load computed */
            assert_int_equal(s->nkey, t->nkey);
            for (uint32_t j = 0; j < t->nkey; j++)
                assert_string_equal(s->key[j].name, t->cols[t->key[j]].name);
            const sa_op *hit = NULL;
            for (size_t ci = 0; ci < copy.n && hit == NULL; ci++)
                if (fields_equal(copy.ops[ci]->key, copy.ops[ci]->nkey, s->key, s->nkey))
                    hit = copy.ops[ci];
            if (hit == NULL)
                fail_msg("streamed row of %s not found among %zu copied rows", s->table, copy.n);
            /* same op once stamped alike: table, key, cols, types, text */
            sa_op a = *hit, b = *s;
            a.flags = b.flags = SA_OP_HAS_PG;
            a.seq = b.seq = 0;
            if (!sa_op_equal(&a, &b)) {
                char *ca = canon_fields(a.cols, a.ncols), *cb = canon_fields(b.cols, b.ncols);
                fail_msg("%s: copy and stream differ\n copy:   %s\n stream: %s", s->table, ca, cb);
            }
            matched++;
        }
        collected_free(&copy);
        cp_table_free(t);
    }
    assert_int_equal(matched, stream.n);
    assert_int_equal(cp_end(cop, &err), 0);
    cmd_ok(exp, "COMMIT", 0, NULL);
    free(snap);
    collected_free(&stream);
    PQfinish(exp);
    PQfinish(cop);
    exec_ok("SELECT pg_drop_replication_slot('cp_slot')");
    PQfinish(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_tables_in_snapshot),
        cmocka_unit_test(test_copy_refuses_tables_without_key),
        cmocka_unit_test(test_copy_bad_snapshot),
        cmocka_unit_test(test_copy_callback_stops),
        cmocka_unit_test(test_copy_matches_pgoutput),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
