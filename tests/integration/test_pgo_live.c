/*
 * test_pgo_live.c — the pgoutput decoder against a real PostgreSQL: a
 * workload over a primary-key table, a REPLICA IDENTITY FULL table and a
 * table with an out-of-line TOASTed value, a transactional logical message,
 * TRUNCATE and a schema change; the raw pgoutput messages are fetched with
 * pg_logical_slot_get_binary_changes and each one is decoded and checked.
 * (Streaming needs the replication protocol; the unit tests cover it.)
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
#include <time.h>

#include "pg_harness.h"
#include "pgo.h"
#include "sa/sa_alloc.h"
#include "sa/sa_op.h"

static void exec_ok(sa_pgh *h, const char *sql)
{
    sa_err err = {0};
    int rc = sa_pgh_exec(h, sql, NULL, &err);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, err.msg, sa_err_name(rc));
}

static const sa_field *field(const sa_field *f, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    fail_msg("no field %s", name);
    return NULL;
}

static int is_text(const sa_field *f, const char *s)
{
    return f->val.kind == SA_VAL_TEXT && f->val.len == strlen(s) &&
           memcmp(f->val.data, s, f->val.len) == 0;
}

/* What the checks below need from each decoded change. */
typedef struct seen {
    char trace[4096]; /* one token per message, e.g. "B I:items U:items C" */
    int ninsert_items, nupdate_items, toast_checked, full_update, full_delete;
    int message, truncate, schema_change, key_change, commits;
} seen;

static void trace(seen *s, const char *tok)
{
    size_t n = strlen(s->trace);
    snprintf(s->trace + n, sizeof s->trace - n, "%s%s", n ? " " : "", tok);
}

static void check_change(pgo_decoder *d, const pgo_msg *m, seen *s)
{
    sa_op op;
    memset(&op, 0, sizeof op);
    const sa_field *old = NULL;
    uint32_t nold = 0;
    sa_err err;
    if (pgo_change_to_op(d, m, &op, &old, &nold, &err) != 0)
        fail_msg("change_to_op: %s", err.msg);
    op.origin = "pg";
    op.seq = 1;
    if (sa_op_validate(&op, &err) != 0)
        fail_msg("invalid op for %s: %s", op.table, err.msg);
    const char *rel = m->change.rel->relname;
    char tok[64];
    snprintf(tok, sizeof tok, "%c%s:%s", m->type,
             m->change.old_tag == PGO_TUPLE_OLD ? "(O)"
             : m->change.old_tag                ? "(K)"
                                                : "",
             rel);
    trace(s, tok);

    if (strcmp(rel, "items") == 0 && m->type == PGO_INSERT) {
        s->ninsert_items++;
        if (s->ninsert_items == 1) {
            assert_true(is_text(field(op.cols, op.ncols, "name"), "a"));
            assert_int_equal(field(op.cols, op.ncols, "body")->val.kind, SA_VAL_NULL);
            assert_int_equal(field(op.cols, op.ncols, "id")->val.type_oid, SA_OID_INT4);
        } else if (s->ninsert_items == 2) {
            /* "" and NULL stay distinct */
            assert_true(is_text(field(op.cols, op.ncols, "name"), ""));
            assert_true(is_text(field(op.cols, op.ncols, "body"), "x"));
        } else if (m->change.rel->ncols == 4) {
            s->schema_change = 1; /* ALTER TABLE ADD COLUMN reached us */
            assert_true(is_text(field(op.cols, op.ncols, "extra"), "5"));
        }
        assert_int_equal(op.nkey, 1);
        assert_string_equal(op.key[0].name, "id");
    }
    if (strcmp(rel, "items") == 0 && m->type == PGO_UPDATE && m->change.old_tag) {
        s->key_change = 1; /* UPDATE ... SET id = 3 WHERE id = 2 */
        assert_true(is_text(&op.key[0], "2"));
        assert_true(is_text(field(op.cols, op.ncols, "id"), "3"));
    }
    if (strcmp(rel, "logs") == 0 && m->type != PGO_INSERT) {
        assert_int_equal(m->change.old_tag, PGO_TUPLE_OLD);
        assert_int_equal(op.nkey, 2); /* FULL: every column identifies the row */
        assert_int_equal(nold, 2);
        const char *was = m->type == PGO_UPDATE ? "one" : "uno";
        assert_true(is_text(field(op.key, op.nkey, "v"), was));
        assert_true(is_text(field(old, nold, "v"), was));
        assert_true(is_text(field(old, nold, "k"), "1"));
        if (m->type == PGO_UPDATE) {
            s->full_update = 1;
            assert_true(is_text(field(op.cols, op.ncols, "v"), "uno"));
        }
        if (m->type == PGO_DELETE)
            s->full_delete = 1;
    }
    if (strcmp(rel, "docs") == 0 && m->type == PGO_UPDATE) {
        s->toast_checked = 1;
        assert_int_equal(field(op.cols, op.ncols, "big")->val.kind, SA_VAL_UNCHANGED);
        assert_true(is_text(field(op.cols, op.ncols, "title"), "t2"));
    }
    if (strcmp(rel, "docs") == 0 && m->type == PGO_INSERT)
        assert_int_equal(field(op.cols, op.ncols, "big")->val.len, 10000);
}

static void check_msg(pgo_decoder *d, const pgo_msg *m, seen *s, uint64_t *begin_lsn)
{
    char tok[64];
    switch (m->type) {
    case PGO_BEGIN:
        assert_true(m->xid != 0);
        *begin_lsn = m->begin.final_lsn;
        trace(s, "B");
        break;
    case PGO_COMMIT: {
        assert_int_equal(m->commit.flags, 0);
        assert_true(m->commit.commit_lsn == *begin_lsn);
        assert_true(m->commit.end_lsn > m->commit.commit_lsn);
        int64_t now = (int64_t)time(NULL) * 1000000;
        assert_true(m->commit.commit_time > now - 3600 * INT64_C(1000000));
        assert_true(m->commit.commit_time < now + 3600 * INT64_C(1000000));
        s->commits++;
        /* drop empty transactions (DDL) so the trace does not depend on
         * the server version skipping them */
        size_t n = strlen(s->trace);
        if (n >= 1 && s->trace[n - 1] == 'B' && (n == 1 || s->trace[n - 2] == ' '))
            s->trace[n >= 2 ? n - 2 : 0] = '\0';
        else
            trace(s, "C");
        break;
    }
    case PGO_RELATION:
        snprintf(tok, sizeof tok, "R:%s/%u", m->relation.rel->relname, m->relation.rel->ncols);
        trace(s, tok);
        assert_string_equal(m->relation.rel->nspname, "public");
        break;
    case PGO_MESSAGE:
        s->message = 1;
        assert_string_equal(m->message.prefix, "softadastra");
        assert_int_equal(m->message.len, 1);
        assert_memory_equal(m->message.content, "x", 1);
        assert_int_equal(m->message.transactional, 1);
        trace(s, "M");
        break;
    case PGO_TRUNCATE:
        s->truncate = 1;
        assert_int_equal(m->truncate.nrels, 2);
        assert_int_equal(m->truncate.options, PGO_TRUNC_RESTART_IDENTITY);
        snprintf(tok, sizeof tok, "T:%s,%s", m->truncate.rels[0]->relname,
                 m->truncate.rels[1]->relname);
        trace(s, tok);
        break;
    case PGO_INSERT:
    case PGO_UPDATE:
    case PGO_DELETE:
        check_change(d, m, s);
        break;
    default:
        snprintf(tok, sizeof tok, "%c", m->type);
        trace(s, tok);
    }
}

static void test_pgo_live_decode(void **state)
{
    (void)state;
    sa_pgh *h = NULL;
    sa_err err = {0};
    int rc = sa_pgh_start(NULL, &h, &err);
    if (rc != 0)
        fail_msg("harness: %s", err.msg);

    exec_ok(h, "CREATE TABLE items (id int PRIMARY KEY, name text, body text);"
               "CREATE TABLE logs (k int, v text);"
               "ALTER TABLE logs REPLICA IDENTITY FULL;"
               "CREATE TABLE docs (id int PRIMARY KEY, title text, big text);"
               "ALTER TABLE docs ALTER big SET STORAGE EXTERNAL;" /* out of line, uncompressed */
               "CREATE PUBLICATION pub FOR TABLE items, logs, docs;");
    /* its own statement: a slot is not created in a transaction that wrote */
    exec_ok(h, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')");
    exec_ok(h, "INSERT INTO items VALUES (1, 'a', NULL), (2, '', 'x')");
    exec_ok(h, "UPDATE items SET name = 'b' WHERE id = 1");
    exec_ok(h, "UPDATE items SET id = 3 WHERE id = 2");
    exec_ok(h, "DELETE FROM items WHERE id = 1");
    exec_ok(h, "INSERT INTO logs VALUES (1, 'one')");
    exec_ok(h, "UPDATE logs SET v = 'uno' WHERE k = 1");
    exec_ok(h, "DELETE FROM logs WHERE k = 1");
    exec_ok(h, "INSERT INTO docs VALUES (1, 't', repeat('x', 10000))");
    exec_ok(h, "UPDATE docs SET title = 't2' WHERE id = 1");
    exec_ok(h, "BEGIN; SELECT pg_logical_emit_message(true, 'softadastra', 'x');"
               "INSERT INTO items VALUES (10, 'm', NULL); COMMIT");
    exec_ok(h, "TRUNCATE items, docs RESTART IDENTITY");
    exec_ok(h, "ALTER TABLE items ADD COLUMN extra int");
    exec_ok(h, "INSERT INTO items VALUES (20, 'z', NULL, 5)");

    PGconn *conn = PQconnectdb(sa_pgh_conninfo(h));
    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(conn));
    /* resultFormat 1: bytea and pg_lsn arrive in binary (raw bytes; int64) */
    PGresult *res =
        PQexecParams(conn,
                     "SELECT lsn, data FROM pg_logical_slot_get_binary_changes('s', NULL, NULL, "
                     "'proto_version', '1', 'publication_names', 'pub', 'messages', 'true')",
                     0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("get changes: %s", PQerrorMessage(conn));

    pgo_decoder *d = NULL;
    assert_int_equal(pgo_decoder_new(1, &d, &err), 0);
    seen s;
    memset(&s, 0, sizeof s);
    uint64_t begin_lsn = 0;
    int nrows = PQntuples(res);
    for (int i = 0; i < nrows; i++) {
        assert_int_equal(PQgetlength(res, i, 0), 8);
        const uint8_t *l = (const uint8_t *)PQgetvalue(res, i, 0);
        uint64_t lsn = 0;
        for (int j = 0; j < 8; j++)
            lsn = lsn << 8 | l[j];
        const pgo_msg *m = NULL;
        rc = pgo_decode(d, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), lsn, &m, &err);
        if (rc != 0)
            fail_msg("row %d: %s", i, err.msg);
        check_msg(d, m, &s, &begin_lsn);
    }
    print_message("%d messages: %s\n", nrows, s.trace);
    const char *want = "B R:items/3 I:items I:items C "
                       "B U:items C "
                       "B U(K):items C "
                       "B D(K):items C "
                       "B R:logs/2 I:logs C "
                       "B U(O):logs C "
                       "B D(O):logs C "
                       "B R:docs/3 I:docs C "
                       "B U:docs C "
                       "B M I:items C "
                       /* TRUNCATE gives new relfilenodes: pgoutput resends both schemas */
                       "B R:items/3 R:docs/3 T:items,docs C "
                       "B R:items/4 I:items C";
    assert_string_equal(s.trace, want);
    assert_true(s.toast_checked && s.full_update && s.full_delete && s.message && s.truncate &&
                s.schema_change && s.key_change);

    pgo_decoder_free(d);
    PQclear(res);
    PQfinish(conn);
    sa_pgh_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pgo_live_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
