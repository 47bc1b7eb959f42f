/*
 * test_pgcheck.c — sa-bridge's preconditions against real servers: a
 * healthy setup passes; each broken precondition (wal_level, role, slots,
 * walsenders, tables without a usable replica identity, missing tables) is
 * named with its fix, all of them in one report.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pg_harness.h"
#include "pgcheck.h"
#include "repl.h"
#include "sa/sa_alloc.h"

static sa_pgh *g_h; /* a healthy cluster shared by most tests */

static sa_pgh *start_cluster(const char *extra_conf)
{
    sa_pgh_options o = {.extra_conf = extra_conf};
    sa_pgh *h = NULL;
    sa_err err = {0};
    int rc = sa_pgh_start(&o, &h, &err);
    if (rc != 0)
        fail_msg("sa_pgh_start: %s (%s)", err.msg, sa_err_name(rc));
    return h;
}

static void exec_ok(sa_pgh *h, const char *sql)
{
    sa_err err = {0};
    int rc = sa_pgh_exec(h, sql, NULL, &err);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, err.msg, sa_err_name(rc));
}

static PGconn *pg_open(sa_pgh *h, const char *extra)
{
    char ci[1024];
    snprintf(ci, sizeof ci, "%s %s", sa_pgh_conninfo(h), extra != NULL ? extra : "");
    PGconn *pg = PQconnectdb(ci);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(pg));
    return pg;
}

static void run_ok(PGconn *pg, const char *const *tables, size_t n, const char *slot,
                   pgck_report *r)
{
    sa_err err = {0};
    int rc = pgck_run(pg, tables, n, slot, r, &err);
    if (rc != 0)
        fail_msg("pgck_run: %s (%s)", err.msg, sa_err_name(rc));
}

/* Number of problems of `kind` whose text holds both a and b (b may be NULL). */
static int count(const pgck_report *r, pgck_kind kind, const char *a, const char *b)
{
    int n = 0;
    for (size_t i = 0; i < r->nproblems; i++)
        if (r->problems[i].kind == kind && strstr(r->problems[i].text, a) != NULL &&
            (b == NULL || strstr(r->problems[i].text, b) != NULL))
            n++;
    return n;
}

static void dump(const pgck_report *r)
{
    for (size_t i = 0; i < r->nproblems; i++)
        print_message("  problem %d: %s\n", (int)r->problems[i].kind, r->problems[i].text);
}

static int group_setup(void **state)
{
    (void)state;
    g_h = start_cluster(NULL);
    exec_ok(g_h, "CREATE TABLE items (id int PRIMARY KEY, name text);"
                 "CREATE TABLE full_nokey (a int, b text);"
                 "ALTER TABLE full_nokey REPLICA IDENTITY FULL;"
                 "CREATE TABLE by_index (a int NOT NULL, b text);"
                 "CREATE UNIQUE INDEX by_index_a ON by_index (a);"
                 "ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_a;"
                 "CREATE SCHEMA \"Shop\";"
                 "CREATE TABLE \"Shop\".\"Orders\" (id int PRIMARY KEY);"
                 "CREATE TABLE nopk (a int, b text);"
                 "CREATE TABLE nothing (id int PRIMARY KEY);"
                 "ALTER TABLE nothing REPLICA IDENTITY NOTHING;"
                 "CREATE TABLE idx_gone (a int NOT NULL);"
                 "CREATE UNIQUE INDEX idx_gone_a ON idx_gone (a);"
                 "ALTER TABLE idx_gone REPLICA IDENTITY USING INDEX idx_gone_a;"
                 "DROP INDEX idx_gone_a;"
                 "CREATE VIEW items_v AS SELECT * FROM items");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    sa_pgh_stop(g_h);
    g_h = NULL;
    return 0;
}

/* --- tests -------------------------------------------------------------- */

static void test_pgck_healthy(void **state)
{
    (void)state;
    PGconn *pg = pg_open(g_h, NULL);
    static const char *const tables[] = {"items", "public.full_nokey", "by_index",
                                         "\"Shop\".\"Orders\""};
    pgck_report r = {0};
    run_ok(pg, tables, 4, "sa_slot", &r);
    dump(&r);
    assert_int_equal(r.nproblems, 0);
    pgck_report_free(&r);

    /* The slot existing already (pgoutput, this database, idle) is fine too. */
    exec_ok(g_h, "SELECT pg_create_logical_replication_slot('sa_slot', 'pgoutput')");
    run_ok(pg, tables, 4, "sa_slot", &r);
    dump(&r);
    assert_int_equal(r.nproblems, 0);
    pgck_report_free(&r);
    pgck_report_free(&r); /* idempotent */
    pgck_report_free(NULL);

    pgck_table t;
    sa_err err = {0};
    assert_int_equal(pgck_table_info(pg, "\"Shop\".\"Orders\"", &t, &err), 0);
    assert_string_equal(t.schema, "Shop");
    assert_string_equal(t.name, "Orders");
    assert_string_equal(t.qualified, "\"Shop\".\"Orders\"");
    assert_int_equal(t.relkind, 'r');
    assert_int_equal(t.replident, 'd');
    assert_true(t.has_pk && t.can_select && t.oid > 0);
    assert_int_equal(pgck_table_info(pg, "by_index", &t, &err), 0);
    assert_int_equal(t.replident, 'i');
    assert_true(t.has_replident_index && !t.has_pk);
    assert_int_equal(pgck_table_info(pg, "no_such_table", &t, &err), SA_ENOTFOUND);
    assert_int_equal(pgck_table_info(pg, "a.b.c.d", &t, &err), SA_EINVAL);
    /* A would-be injection is just a name that does not exist. */
    assert_int_equal(pgck_table_info(pg, "items; DROP TABLE items", &t, &err), SA_EINVAL);
    assert_int_equal(pgck_table_info(pg, "items", &t, &err), 0);

    exec_ok(g_h, "SELECT pg_drop_replication_slot('sa_slot')");
    PQfinish(pg);
}

/* Every bad table is named with its fix, in one report. */
static void test_pgck_tables(void **state)
{
    (void)state;
    PGconn *pg = pg_open(g_h, NULL);
    static const char *const tables[] = {"items",    "nopk",    "nothing",    "missing_table",
                                         "idx_gone", "items_v", "full_nokey", "a.b.c.d"};
    pgck_report r = {0};
    run_ok(pg, tables, 8, NULL, &r);
    dump(&r);
    assert_int_equal(r.nproblems, 6);
    assert_int_equal(count(&r, PGCK_TABLE, "public.nopk has no primary key",
                           "ALTER TABLE public.nopk REPLICA IDENTITY FULL;"),
                     1);
    assert_int_equal(count(&r, PGCK_TABLE, "public.nopk", "ADD PRIMARY KEY"), 1);
    assert_int_equal(count(&r, PGCK_TABLE, "public.nothing has REPLICA IDENTITY NOTHING",
                           "ALTER TABLE public.nothing REPLICA IDENTITY FULL;"),
                     1);
    assert_int_equal(count(&r, PGCK_TABLE, "\"missing_table\" does not exist", "Fix:"), 1);
    assert_int_equal(count(&r, PGCK_TABLE, "public.idx_gone", "index is gone"), 1);
    assert_int_equal(count(&r, PGCK_TABLE, "\"items_v\"", "is a view"), 1);
    assert_int_equal(count(&r, PGCK_TABLE, "invalid table name \"a.b.c.d\"", "Fix:"), 1);
    pgck_report_free(&r);
    PQfinish(pg);
}

/* A role without REPLICATION (and without SELECT on the tables). */
static void test_pgck_role(void **state)
{
    (void)state;
    exec_ok(g_h, "CREATE ROLE plain LOGIN");
    PGconn *pg = pg_open(g_h, "user=plain");
    static const char *const tables[] = {"items"};
    pgck_report r = {0};
    run_ok(pg, tables, 1, "sa_slot", &r);
    dump(&r);
    assert_int_equal(
        count(&r, PGCK_ROLE, "role plain has neither", "ALTER ROLE plain REPLICATION;"), 1);
    assert_int_equal(
        count(&r, PGCK_TABLE, "cannot SELECT", "GRANT SELECT ON public.items TO plain"), 1);
    assert_int_equal(r.nproblems, 2);
    pgck_report_free(&r);
    PQfinish(pg);

    exec_ok(g_h, "ALTER ROLE plain REPLICATION; GRANT SELECT ON items TO plain");
    pg = pg_open(g_h, "user=plain");
    run_ok(pg, tables, 1, "sa_slot", &r);
    dump(&r);
    assert_int_equal(r.nproblems, 0);
    pgck_report_free(&r);
    PQfinish(pg);
}

/* Slots that exist but cannot be ours, and a bad slot name. */
static void test_pgck_slot_mismatch(void **state)
{
    (void)state;
    PGconn *pg = pg_open(g_h, NULL);
    exec_ok(g_h, "SELECT pg_create_logical_replication_slot('td_slot', 'test_decoding');"
                 "SELECT pg_create_physical_replication_slot('phys_slot')");
    pgck_report r = {0};
    run_ok(pg, NULL, 0, "td_slot", &r);
    assert_int_equal(r.nproblems, 1);
    assert_int_equal(
        count(&r, PGCK_SLOT, "plugin \"test_decoding\"", "pg_drop_replication_slot('td_slot')"), 1);
    pgck_report_free(&r);
    run_ok(pg, NULL, 0, "phys_slot", &r);
    assert_int_equal(count(&r, PGCK_SLOT, "physical slot", NULL), 1);
    pgck_report_free(&r);
    run_ok(pg, NULL, 0, "Bad-Slot", &r);
    assert_int_equal(count(&r, PGCK_SLOT, "Bad-Slot", "Fix: choose a slot name"), 1);
    pgck_report_free(&r);

    /* Held by a walsender: named with its pid. */
    repl_conn *c = NULL;
    sa_err err = {0};
    assert_int_equal(repl_conn_open(sa_pgh_conninfo(g_h), &c, &err), 0);
    repl_slot_created sc;
    assert_int_equal(repl_create_slot(c, "held_slot", false, &sc, &err), 0);
    const char *pubs[] = {"nopub"};
    repl_start_opts o = {.proto_version = 2, .publications = pubs, .npublications = 1};
    assert_int_equal(repl_start(c, "held_slot", sc.consistent_point, &o, &err), 0);
    run_ok(pg, NULL, 0, "held_slot", &r);
    char pid[32];
    snprintf(pid, sizeof pid, "process %d", PQbackendPID(repl_conn_pg(c)));
    assert_int_equal(count(&r, PGCK_SLOT, pid, "pg_terminate_backend"), 1);
    pgck_report_free(&r);
    repl_conn_close(c);
    PQfinish(pg);
}

static void test_pgck_wal_level_replica(void **state)
{
    (void)state;
    sa_pgh *h = start_cluster("wal_level = replica\n");
    exec_ok(h, "CREATE TABLE items (id int PRIMARY KEY)");
    PGconn *pg = pg_open(h, NULL);
    static const char *const tables[] = {"items"};
    pgck_report r = {0};
    run_ok(pg, tables, 1, "sa_slot", &r);
    dump(&r);
    assert_int_equal(r.nproblems, 1);
    assert_int_equal(count(&r, PGCK_WAL_LEVEL, "wal_level is 'replica'",
                           "ALTER SYSTEM SET wal_level = logical; then restart"),
                     1);
    pgck_report_free(&r);
    PQfinish(pg);
    sa_pgh_stop(h);
}

/* One slot allowed and taken; one walsender allowed and running. */
static void test_pgck_slots_and_senders_exhausted(void **state)
{
    (void)state;
    sa_pgh *h = start_cluster("max_replication_slots = 1\nmax_wal_senders = 1\n");
    exec_ok(h, "SELECT pg_create_logical_replication_slot('other', 'pgoutput')");
    PGconn *pg = pg_open(h, NULL);
    pgck_report r = {0};
    run_ok(pg, NULL, 0, "sa_slot", &r);
    dump(&r);
    assert_int_equal(r.nproblems, 1);
    assert_int_equal(count(&r, PGCK_SLOT, "no free replication slot to create \"sa_slot\"",
                           "ALTER SYSTEM SET max_replication_slots = 2;"),
                     1);
    pgck_report_free(&r);

    repl_conn *c = NULL;
    sa_err err = {0};
    assert_int_equal(repl_conn_open(sa_pgh_conninfo(h), &c, &err), 0);
    run_ok(pg, NULL, 0, "other", &r); /* the existing slot: no slot problem */
    dump(&r);
    assert_int_equal(r.nproblems, 1);
    assert_int_equal(count(&r, PGCK_WAL_SENDERS, "max_wal_senders is 1 and 1 are running",
                           "ALTER SYSTEM SET max_wal_senders = 2;"),
                     1);
    pgck_report_free(&r);
    repl_conn_close(c);
    PQfinish(pg);
    sa_pgh_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pgck_healthy),
        cmocka_unit_test(test_pgck_tables),
        cmocka_unit_test(test_pgck_role),
        cmocka_unit_test(test_pgck_slot_mismatch),
        cmocka_unit_test(test_pgck_wal_level_replica),
        cmocka_unit_test(test_pgck_slots_and_senders_exhausted),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
