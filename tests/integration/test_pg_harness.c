/*
 * test_pg_harness.c — the Postgres test harness itself: a cluster ready for
 * logical decoding with pgoutput, SQL errors reported as SA_EPG, restart,
 * and cleanup however the test process ends (normal stop, exit(), abort(),
 * SIGKILL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg_harness.h"
#include "sa/sa_alloc.h"

/* ---------------------------------------------------------------------- */

static int path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Alive and not a zombie (our container's init may not reap orphans). */
static int pid_alive(long pid)
{
    if (pid <= 0 || kill((pid_t)pid, 0) != 0)
        return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return !(rp != NULL && rp[1] == ' ' && rp[2] == 'Z');
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait up to `secs` for the directory and the postmaster to be gone. */
static int wait_gone(const char *dir, long pid, double secs)
{
    double end = now_s() + secs;
    while (now_s() < end) {
        if (!path_exists(dir) && !pid_alive(pid))
            return 1;
        usleep(50 * 1000);
    }
    return 0;
}

static void exec_ok(sa_pgh *h, const char *sql, char **out)
{
    sa_err err = {0};
    int rc = sa_pgh_exec(h, sql, out, &err);
    if (rc != 0)
        fail_msg("%s: %s (%s)", sql, err.msg, sa_err_name(rc));
}

static void expect_text(sa_pgh *h, const char *sql, const char *want)
{
    char *got = NULL;
    exec_ok(h, sql, &got);
    assert_string_equal(got, want);
    sa_free(got);
}

static sa_pgh *start_or_fail(const sa_pgh_options *opt)
{
    sa_pgh *h = NULL;
    sa_err err = {0};
    int rc = sa_pgh_start(opt, &h, &err);
    if (rc != 0)
        fail_msg("sa_pgh_start: %s (%s)", err.msg, sa_err_name(rc));
    return h;
}

/* ---------------------------------------------------------------------- */

static void test_pg_harness_logical_decoding(void **state)
{
    (void)state;
    sa_pgh_options opt = {.extra_conf = "work_mem = '7MB'\n"};
    sa_pgh *h = start_or_fail(&opt);

    expect_text(h, "SHOW wal_level", "logical");
    expect_text(h, "SHOW work_mem", "7MB");
    expect_text(h, "SELECT 1, NULL, 'x'; SELECT 2, 'a' UNION ALL SELECT 3, NULL", "2|a\n3|");
    /* Several statements in one call run in one implicit transaction, and a
     * slot cannot be created in a transaction that wrote: three calls. */
    exec_ok(h, "CREATE TABLE items (id int PRIMARY KEY, name text);"
               "CREATE PUBLICATION p FOR TABLE items", NULL);
    exec_ok(h, "SELECT pg_create_logical_replication_slot('s', 'pgoutput')", NULL);
    exec_ok(h, "INSERT INTO items VALUES (1, 'one'), (2, 'two')", NULL);
    char *n = NULL;
    exec_ok(h,
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL,"
            " 'proto_version', '1', 'publication_names', 'p')",
            &n);
    assert_true(atoi(n) > 0);
    sa_free(n);

    /* SQL errors come back as SA_EPG with the server's words. */
    sa_err err = {0};
    char *junk = NULL;
    assert_int_equal(sa_pgh_exec(h, "SELECT * FROM no_such_table", &junk, &err), SA_EPG);
    assert_null(junk);
    assert_non_null(strstr(err.msg, "relation \"no_such_table\" does not exist"));
    assert_int_equal(sa_pgh_exec(h, "SELEC 1", NULL, &err), SA_EPG);
    assert_non_null(strstr(err.msg, "syntax error"));

    /* Restart: data survives, the cached connection is reopened. */
    long pid1 = sa_pgh_server_pid(h);
    assert_true(pid1 > 0);
    assert_int_equal(sa_pgh_restart(h, &err), 0);
    assert_true(sa_pgh_server_pid(h) != pid1);
    expect_text(h, "SELECT name FROM items ORDER BY id", "one\ntwo");

    /* Crash and come back: recovery runs, the slot is still there. */
    assert_int_equal(sa_pgh_stop_server(h, 1, &err), 0);
    assert_int_equal(sa_pgh_server_pid(h), -1);
    assert_int_equal(sa_pgh_start_server(h, &err), 0);
    expect_text(h, "SELECT slot_name FROM pg_replication_slots", "s");

    /* The TCP conninfo works too (wal senders will use it). */
    assert_non_null(strstr(sa_pgh_conninfo_tcp(h), "host=127.0.0.1"));

    char *dir = strdup(sa_pgh_dir(h));
    long pid = sa_pgh_server_pid(h);
    sa_pgh_stop(h);
    assert_false(path_exists(dir));
    assert_false(pid_alive(pid));
    free(dir);
    sa_pgh_stop(NULL);
}

/*
 * Fork a child that starts a cluster, reports "<postmaster pid> <dir>" and
 * then ends the way `how` says.  Returns the child's pid; fills pid and dir.
 */
enum child_end { CHILD_SLEEP, CHILD_ABORT, CHILD_EXIT };

static pid_t spawn_cluster_child(enum child_end how, long *pm_pid, char *dir, size_t dirsize)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(fds[0]);
        sa_pgh *h = NULL;
        sa_err err = {0};
        if (sa_pgh_start(NULL, &h, &err) != 0) {
            dprintf(fds[1], "-1 %s\n", err.msg);
            _exit(3);
        }
        dprintf(fds[1], "%ld %s\n", sa_pgh_server_pid(h), sa_pgh_dir(h));
        close(fds[1]);
        switch (how) {
        case CHILD_SLEEP:
            sleep(120);
            _exit(0);
        case CHILD_ABORT:
            abort();
        case CHILD_EXIT:
            exit(1); /* what cmocka does when it gives up */
        }
        _exit(0);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[4200] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    char *sp = strchr(line, ' ');
    assert_non_null(sp);
    *sp = '\0';
    *pm_pid = atol(line);
    if (*pm_pid <= 0)
        fail_msg("child could not start a cluster: %s", sp + 1);
    snprintf(dir, dirsize, "%s", sp + 1);
    assert_true(path_exists(dir));
    assert_true(pid_alive(*pm_pid));
    return child;
}

static int wait_child(pid_t child)
{
    int st;
    while (waitpid(child, &st, 0) < 0)
        assert_int_equal(errno, EINTR);
    return st;
}

static void test_pg_harness_cleanup_on_sigkill(void **state)
{
    (void)state;
    long pm = 0;
    char dir[4096];
    pid_t child = spawn_cluster_child(CHILD_SLEEP, &pm, dir, sizeof dir);
    double t0 = now_s();
    assert_int_equal(kill(child, SIGKILL), 0);
    int st = wait_child(child);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_true(wait_gone(dir, pm, 15.0));
    printf("# SIGKILL: cluster gone %.2f s after the kill\n", now_s() - t0);
}

static void test_pg_harness_cleanup_on_abort(void **state)
{
    (void)state;
    long pm = 0;
    char dir[4096];
    pid_t child = spawn_cluster_child(CHILD_ABORT, &pm, dir, sizeof dir);
    int st = wait_child(child);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    /* The SIGABRT handler waits for the guardian: gone by the time the
     * child is, no polling needed. */
    assert_false(path_exists(dir));
    assert_false(pid_alive(pm));
}

static void test_pg_harness_cleanup_on_exit(void **state)
{
    (void)state;
    long pm = 0;
    char dir[4096];
    pid_t child = spawn_cluster_child(CHILD_EXIT, &pm, dir, sizeof dir);
    int st = wait_child(child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_false(path_exists(dir)); /* atexit stopped it synchronously */
    assert_false(pid_alive(pm));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_harness_logical_decoding),
        cmocka_unit_test(test_pg_harness_cleanup_on_sigkill),
        cmocka_unit_test(test_pg_harness_cleanup_on_abort),
        cmocka_unit_test(test_pg_harness_cleanup_on_exit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
