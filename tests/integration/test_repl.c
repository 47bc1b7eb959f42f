/*
 * test_repl.c — the replication client against a real PostgreSQL: slot
 * creation with an exported snapshot, streaming a committed transaction
 * (and a streamed large one), confirming a flush LSN, keepalives under a
 * short wal_sender_timeout, a killed walsender, name checking and quoting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_harness.h"
#include "repl.h"
#include "sa/sa_alloc.h"
#include "sa/sa_buf.h"

static sa_pgh *g_h;

static int group_setup(void **state)
{
    (void)state;
    sa_pgh_options o = {.extra_conf = "wal_sender_timeout = '2s'\n"
                                      "log_replication_commands = on\n"};
    sa_err err = {0};
    int rc = sa_pgh_start(&o, &g_h, &err);
    if (rc != 0)
        fail_msg("sa_pgh_start: %s (%s)", err.msg, sa_err_name(rc));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    sa_pgh_stop(g_h);
    g_h = NULL;
    return 0;
}

/* --- helpers ------------------------------------------------------------ */

static void exec_ok(const char *sql)
{
    sa_err err = {0};
    int rc = sa_pgh_exec(g_h, sql, NULL, &err);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, err.msg, sa_err_name(rc));
}

/* First row/column of sql as text (caller frees with sa_free). */
static char *query_text(const char *sql)
{
    char *out = NULL;
    sa_err err = {0};
    int rc = sa_pgh_exec(g_h, sql, &out, &err);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, err.msg, sa_err_name(rc));
    return out;
}

static PGconn *pg_open(void)
{
    PGconn *pg = PQconnectdb(sa_pgh_conninfo(g_h));
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(pg));
    return pg;
}

static repl_conn *repl_open_ok(const char *conninfo)
{
    repl_conn *c = NULL;
    sa_err err = {0};
    int rc = repl_conn_open(conninfo, &c, &err);
    if (rc != 0)
        fail_msg("repl_conn_open: %s (%s)", err.msg, sa_err_name(rc));
    return c;
}

static uint64_t create_slot_ok(repl_conn *c, const char *slot, bool export_snapshot,
                               repl_slot_created *out)
{
    repl_slot_created s;
    sa_err err = {0};
    int rc = repl_create_slot(c, slot, export_snapshot, &s, &err);
    if (rc != 0)
        fail_msg("repl_create_slot %s: %s (%s)", slot, err.msg, sa_err_name(rc));
    if (out != NULL)
        *out = s;
    return s.consistent_point;
}

static void start_ok(repl_conn *c, const char *slot, uint64_t lsn, const char *const *pubs,
                     size_t npubs)
{
    repl_start_opts o = {.proto_version = 2,
                         .streaming = true,
                         .messages = true,
                         .publications = pubs,
                         .npublications = npubs};
    sa_err err = {0};
    int rc = repl_start(c, slot, lsn, &o, &err);
    if (rc != 0)
        fail_msg("repl_start %s: %s (%s)", slot, err.msg, sa_err_name(rc));
}

/*
 * Read frames until a transaction ends ('C' commit or 'c' stream commit),
 * at most total_ms.  Returns the first bytes of the XLogData payloads (in
 * seq, NUL-terminated, truncated at cap) and the commit's end LSN.
 */
static void read_txn(repl_conn *c, int total_ms, char *seq, size_t cap, uint64_t *end_lsn)
{
    size_t n = 0;
    int64_t deadline = repl_clock_ms() + total_ms;
    seq[0] = '\0';
    while (repl_clock_ms() < deadline) {
        repl_frame f;
        sa_err err = {0};
        int rc = repl_next(c, 200, &f, &err);
        if (rc < 0)
            fail_msg("repl_next: %s (%s), seen \"%s\"", err.msg, sa_err_name(rc), seq);
        if (rc == 0 || f.type != REPL_FRAME_XLOGDATA)
            continue;
        char t = (char)f.payload[0];
        bool ends = t == 'C' || t == 'c';
        /* Keep at most two 'I' in a row (a large transaction has thousands),
         * and always room for the final commit. */
        bool third_i = t == 'I' && n >= 2 && seq[n - 1] == 'I' && seq[n - 2] == 'I';
        if (ends && n + 1 >= cap)
            n = cap - 2;
        if (ends || (!third_i && n + 2 < cap)) {
            seq[n++] = t;
            seq[n] = '\0';
        }
        if (t == 'C' && f.payload_len >= 26) {
            *end_lsn = sa_get_u64be(f.payload + 10); /* 'C', flags, commit LSN, end LSN */
            return;
        }
        if (t == 'c' && f.payload_len >= 30) {
            *end_lsn = sa_get_u64be(f.payload + 14); /* 'c', xid, flags, commit LSN, end LSN */
            return;
        }
    }
    fail_msg("no commit within %d ms, seen \"%s\"", total_ms, seq);
}

/* Drop a slot whose walsender may still be exiting (SA_EBUSY for a while). */
static void drop_slot_eventually(const char *slot)
{
    PGconn *pg = pg_open();
    sa_err err = {0};
    int rc = 0;
    for (int i = 0; i < 100; i++) {
        rc = repl_slot_drop(pg, slot, &err);
        if (rc != SA_EBUSY)
            break;
        usleep(50 * 1000);
    }
    if (rc != 0)
        fail_msg("drop %s: %s (%s)", slot, err.msg, sa_err_name(rc));
    assert_int_equal(repl_slot_drop(pg, slot, &err), SA_ENOTFOUND);
    assert_non_null(strstr(err.msg, "does not exist"));
    PQfinish(pg);
}

/* --- tests -------------------------------------------------------------- */

/* A slot with an exported snapshot, the snapshot imported elsewhere, then
 * the rows committed after it streamed from the consistent point, and the
 * confirmed flush LSN moved by our status update. */
static void test_repl_stream_end_to_end(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE items (id int PRIMARY KEY, name text);"
            "CREATE PUBLICATION pub FOR TABLE items;"
            "INSERT INTO items VALUES (1, 'before the slot')");
    repl_conn *c = repl_open_ok(sa_pgh_conninfo(g_h));
    sa_err err = {0};

    repl_system sys;
    assert_int_equal(repl_identify_system(c, &sys, &err), 0);
    assert_string_equal(sys.dbname, "postgres");
    assert_int_equal(sys.timeline, 1);
    assert_true(sys.xlogpos > 0);
    assert_true(strlen(sys.systemid) > 10 &&
                strspn(sys.systemid, "0123456789") == strlen(sys.systemid));

    repl_slot_created sc;
    uint64_t cp = create_slot_ok(c, "sa_e2e", true, &sc);
    assert_true(cp > 0);
    assert_true(sc.snapshot_name[0] != '\0');
    /* Import the snapshot before the next command on the replication
     * connection; it must not see rows committed after the slot. */
    PGconn *snap = pg_open();
    char *lit = PQescapeLiteral(snap, sc.snapshot_name, strlen(sc.snapshot_name));
    assert_non_null(lit);
    char sql[256];
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT %s", lit);
    PQfreemem(lit);
    PGresult *r = PQexec(snap, "BEGIN ISOLATION LEVEL REPEATABLE READ");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(snap, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);

    exec_ok("INSERT INTO items VALUES (2, 'two'), (3, 'three')");
    r = PQexec(snap, "SELECT count(*) FROM items");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    PQclear(PQexec(snap, "COMMIT"));

    /* Creating it again: SA_EEXISTS, and the connection is still usable.
     * (Only now: any command on the replication connection ends the
     * exported snapshot — which is why the import came first.) */
    repl_slot_created again;
    assert_int_equal(repl_create_slot(c, "sa_e2e", false, &again, &err), SA_EEXISTS);
    assert_non_null(strstr(err.msg, "already exists"));

    /* The slot before our status: confirmed_flush_lsn is the consistent point. */
    bool exists = false;
    repl_slot_info si;
    assert_int_equal(repl_slot_get(snap, "sa_e2e", &exists, &si, &err), 0);
    assert_true(exists);
    assert_string_equal(si.plugin, "pgoutput");
    assert_string_equal(si.slot_type, "logical");
    assert_string_equal(si.database, "postgres");
    assert_false(si.active);
    assert_true(si.confirmed_flush_lsn == cp);
    assert_int_equal(repl_slot_get(snap, "no_such_slot", &exists, &si, &err), 0);
    assert_false(exists);

    const char *pubs[] = {"pub"};
    start_ok(c, "sa_e2e", cp, pubs, 1);
    char seq[64];
    uint64_t end = 0;
    read_txn(c, 10000, seq, sizeof seq, &end);
    assert_string_equal(seq, "BRIIC");
    assert_true(end > cp);

    char *app = query_text("SELECT application_name FROM pg_stat_replication");
    assert_string_equal(app, "sa-bridge");
    sa_free(app);

    /* A transactional logical message, then a transaction over
     * logical_decoding_work_mem (64kB in the harness): streamed. */
    exec_ok("SELECT pg_logical_emit_message(true, 'sa', 'hello')");
    read_txn(c, 10000, seq, sizeof seq, &end);
    assert_string_equal(seq, "BMC");
    exec_ok("INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(10, 2009) g");
    uint64_t big_end = 0;
    read_txn(c, 20000, seq, sizeof seq, &big_end);
    assert_int_equal(seq[0], 'S');               /* Stream Start */
    assert_non_null(strchr(seq, 'E'));           /* Stream Stop */
    assert_int_equal(seq[strlen(seq) - 1], 'c'); /* Stream Commit */

    /* Confirm the first transaction only; the slot must move exactly there. */
    assert_int_equal(repl_send_status(c, end, end, end, false, &err), 0);
    int64_t deadline = repl_clock_ms() + 5000;
    uint64_t confirmed = 0;
    while (repl_clock_ms() < deadline) {
        repl_frame f;
        assert_true(repl_next(c, 100, &f, &err) >= 0);
        assert_int_equal(repl_slot_get(snap, "sa_e2e", &exists, &si, &err), 0);
        confirmed = si.confirmed_flush_lsn;
        if (confirmed == end)
            break;
    }
    char a[REPL_LSN_STRLEN], b[REPL_LSN_STRLEN];
    if (confirmed != end)
        fail_msg("confirmed_flush_lsn %s, want %s", repl_lsn_format(confirmed, a),
                 repl_lsn_format(end, b));
    assert_true(si.active && si.active_pid == PQbackendPID(repl_conn_pg(c)));

    /* While streaming, commands are refused locally. */
    assert_int_equal(repl_identify_system(c, &sys, &err), SA_ECLOSED);

    uint64_t now_lsn = 0;
    assert_int_equal(repl_current_wal_lsn(snap, &now_lsn, &err), 0);
    assert_true(now_lsn >= big_end);

    repl_conn_close(c);
    PQfinish(snap);
    drop_slot_eventually("sa_e2e");
}

/* wal_sender_timeout is 2 s: answering keepalives keeps us connected well
 * past it; going silent gets us disconnected, seen as SA_EIO. */
static void test_repl_keepalive(void **state)
{
    (void)state;
    repl_conn *c = repl_open_ok(sa_pgh_conninfo(g_h));
    uint64_t cp = create_slot_ok(c, "sa_keepalive", false, NULL);
    const char *pubs[] = {"pub"};
    start_ok(c, "sa_keepalive", cp, pubs, 1);

    sa_err err = {0};
    int keepalives = 0, asked = 0;
    int64_t start = repl_clock_ms(), last_status = start;
    while (repl_clock_ms() - start < 5000) {
        repl_frame f;
        int rc = repl_next(c, 200, &f, &err);
        if (rc < 0)
            fail_msg("connection dropped after %lld ms: %s", (long long)(repl_clock_ms() - start),
                     err.msg);
        bool reply = false;
        if (rc == 1 && f.type == REPL_FRAME_KEEPALIVE) {
            keepalives++;
            asked += f.reply_requested;
            reply = f.reply_requested;
        }
        /* A walsender that hears from us stays silent when idle: after 1 s
         * of silence, probe (reply_requested) — it answers at once. */
        int64_t now = repl_clock_ms();
        bool probe = now - repl_last_server_activity_ms(c) > 1000;
        if (reply || probe || now - last_status > 500) {
            assert_int_equal(repl_send_status(c, cp, cp, cp, probe, &err), 0);
            last_status = now;
        }
        assert_false(repl_is_stale(c, repl_clock_ms(), 1500));
    }
    assert_true(keepalives >= 1);

    /* Silence: the server asks (reply_requested) and then hangs up. */
    int64_t quiet = repl_clock_ms();
    int rc = 0;
    while (repl_clock_ms() - quiet < 8000) {
        repl_frame f;
        rc = repl_next(c, 200, &f, &err);
        if (rc < 0)
            break;
        asked += rc == 1 && f.type == REPL_FRAME_KEEPALIVE && f.reply_requested;
    }
    assert_int_equal(rc, SA_EIO);
    assert_true(asked >= 1);
    assert_true(repl_clock_ms() - quiet < 5000);
    /* Staleness as the caller would see it had the TCP connection been
     * half-open: the last byte is old relative to a far "now". */
    assert_true(repl_is_stale(c, repl_last_server_activity_ms(c) + 2001, 2000));
    assert_false(repl_is_stale(c, repl_last_server_activity_ms(c) + 2000, 2000));
    repl_frame f;
    assert_int_equal(repl_next(c, 0, &f, &err), SA_ECLOSED);
    assert_int_equal(repl_send_status(c, cp, cp, cp, false, &err), SA_ECLOSED);
    repl_conn_close(c);
    drop_slot_eventually("sa_keepalive");
}

/* pg_terminate_backend on the walsender: repl_next fails fast with the
 * server's message, not after its timeout. */
static void test_repl_walsender_killed(void **state)
{
    (void)state;
    repl_conn *c = repl_open_ok(sa_pgh_conninfo(g_h));
    uint64_t cp = create_slot_ok(c, "sa_killed", false, NULL);
    const char *pubs[] = {"pub"};
    start_ok(c, "sa_killed", cp, pubs, 1);
    repl_frame f;
    sa_err err = {0};
    assert_true(repl_next(c, 100, &f, &err) >= 0);

    char *t = query_text("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                         "WHERE slot_name = 'sa_killed'");
    assert_string_equal(t, "t");
    sa_free(t);
    int64_t t0 = repl_clock_ms();
    int rc = 0;
    while ((rc = repl_next(c, 10000, &f, &err)) == 1)
        ; /* frames still buffered */
    int64_t took = repl_clock_ms() - t0;
    assert_int_equal(rc, SA_EIO);
    assert_true(took < 2000);
    assert_non_null(strstr(err.msg, "terminating connection due to administrator command"));
    repl_conn_close(c);
    drop_slot_eventually("sa_killed");
}

/* Bad slot names are refused before anything reaches the server (the
 * server logs every replication command it receives: none has the name). */
static void test_repl_bad_slot_name(void **state)
{
    (void)state;
    repl_conn *c = repl_open_ok(sa_pgh_conninfo(g_h));
    sa_err err = {0};
    repl_slot_created sc;
    static const char *const bad[] = {
        "Bad_Slot", "x\" LOGICAL test_decoding --", "a'b", "",
        "sa_slot_with_a_name_that_is_far_too_long_for_postgres_xxxxxxxxxxxxx"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(repl_create_slot(c, bad[i], true, &sc, &err), SA_EINVAL);
        const char *pubs[] = {"pub"};
        repl_start_opts o = {.proto_version = 2, .publications = pubs, .npublications = 1};
        assert_int_equal(repl_start(c, bad[i], 0, &o, &err), SA_EINVAL);
        /* The ordinary-connection helpers check before touching pg (NULL). */
        bool exists;
        repl_slot_info si;
        assert_int_equal(repl_slot_get(NULL, bad[i], &exists, &si, &err), SA_EINVAL);
        assert_int_equal(repl_slot_drop(NULL, bad[i], &err), SA_EINVAL);
    }
    /* Option checks, also local. */
    const char *pubs[] = {"pub"};
    repl_start_opts o = {
        .proto_version = 1, .streaming = true, .publications = pubs, .npublications = 1};
    assert_int_equal(repl_start(c, "sa_ok", 0, &o, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "proto_version 2"));
    o.proto_version = 9;
    assert_int_equal(repl_start(c, "sa_ok", 0, &o, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "[1, 4]"));
    o.proto_version = 2;
    o.npublications = 0;
    assert_int_equal(repl_start(c, "sa_ok", 0, &o, &err), SA_EINVAL);

    /* The connection is still idle and usable. */
    repl_system sys;
    assert_int_equal(repl_identify_system(c, &sys, &err), 0);
    repl_conn_close(c);

    char cmd[512];
    snprintf(cmd, sizeof cmd, "grep -c 'Bad_Slot\\|test_decoding --\\|far_too_long' '%s'",
             sa_pgh_logfile(g_h));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = -1;
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    assert_int_equal(n, 0);
    snprintf(cmd, sizeof cmd, "grep -q 'received replication command: IDENTIFY_SYSTEM' '%s'",
             sa_pgh_logfile(g_h));
    assert_int_equal(system(cmd), 0); /* the log does record commands */
}

/* Publication names are sent double-quoted inside a replication-grammar
 * literal: quotes, commas, backslashes and case survive; an injection
 * attempt is one (nonexistent) name, refused by the server cleanly. */
static void test_repl_publication_quoting(void **state)
{
    (void)state;
    exec_ok("CREATE TABLE odd (id int PRIMARY KEY);"
            "CREATE PUBLICATION \"Pub'\"\"x,\\y\" FOR TABLE odd");
    repl_conn *c = repl_open_ok(sa_pgh_conninfo(g_h));
    uint64_t cp = create_slot_ok(c, "sa_quoting", false, NULL);
    const char *pubs[] = {"Pub'\"x,\\y"};
    start_ok(c, "sa_quoting", cp, pubs, 1);
    exec_ok("INSERT INTO odd VALUES (1)");
    char seq[64];
    uint64_t end = 0;
    read_txn(c, 10000, seq, sizeof seq, &end);
    assert_string_equal(seq, "BRIC");
    repl_conn_close(c);

    /* An attempt to break out of the literal and the identifier. */
    c = repl_open_ok(sa_pgh_conninfo(g_h));
    const char *evil[] = {"pub\"', \"proto_version\" '1", "pub"};
    start_ok(c, "sa_quoting", cp, evil, 2);
    exec_ok("INSERT INTO odd VALUES (2)");
    sa_err err = {0};
    repl_frame f;
    int rc = 0;
    int64_t deadline = repl_clock_ms() + 10000;
    while (repl_clock_ms() < deadline && (rc = repl_next(c, 200, &f, &err)) >= 0)
        ;
    assert_int_equal(rc, SA_EIO);
    assert_non_null(strstr(err.msg, "publication \"pub\"', \"proto_version\" '1\" does not exist"));
    repl_conn_close(c);
    drop_slot_eventually("sa_quoting");
}

/* A URI works as well as key=value; failures carry libpq's message. */
static void test_repl_open_forms_and_errors(void **state)
{
    (void)state;
    char uri[256];
    snprintf(uri, sizeof uri, "postgresql://postgres@127.0.0.1:%d/postgres?application_name=mine",
             sa_pgh_port(g_h));
    repl_conn *c = repl_open_ok(uri);
    repl_system sys;
    sa_err err = {0};
    assert_int_equal(repl_identify_system(c, &sys, &err), 0);
    assert_string_equal(sys.dbname, "postgres");
    char q[128];
    snprintf(q, sizeof q, "SELECT application_name FROM pg_stat_activity WHERE pid = %d",
             PQbackendPID(repl_conn_pg(c)));
    char *app = query_text(q);
    assert_string_equal(app, "mine"); /* the caller's name wins over the fallback */
    sa_free(app);
    repl_conn_close(c);
    repl_conn_close(NULL);

    repl_conn *bad = (repl_conn *)&err; /* must stay untouched */
    assert_int_equal(repl_conn_open("host=127.0.0.1 port=1 user=postgres", &bad, &err), SA_EPG);
    assert_ptr_equal(bad, (repl_conn *)&err);
    assert_non_null(strstr(err.msg, "port 1 failed"));
    assert_int_equal(repl_conn_open("nonsense_option=1", &bad, &err), SA_EPG);
    assert_non_null(strstr(err.msg, "nonsense_option"));
    snprintf(uri, sizeof uri, "%s dbname=no_such_db", sa_pgh_conninfo(g_h));
    assert_int_equal(repl_conn_open(uri, &bad, &err), SA_EPG);
    assert_non_null(strstr(err.msg, "no_such_db"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repl_stream_end_to_end),
        cmocka_unit_test(test_repl_keepalive),
        cmocka_unit_test(test_repl_walsender_killed),
        cmocka_unit_test(test_repl_bad_slot_name),
        cmocka_unit_test(test_repl_publication_quoting),
        cmocka_unit_test(test_repl_open_forms_and_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
