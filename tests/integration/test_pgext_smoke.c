/*
 * test_pgext_smoke.c — the softadastra extension installs and its C library
 * loads in a real server: CREATE EXTENSION, softadastra.version().
 * Skipped (not failed) only when the extension is not installed into the
 * server the harness uses; ./test.sh installs it (`pgext_install`) first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pg_harness.h"
#include "sa/sa_alloc.h"

/* Bumped together with pgext/softadastra.c and softadastra.control. */
#define EXPECTED_VERSION "0.2"

/* <sharedir>/extension/softadastra.control of the harness' server, found
 * through pg_config next to its binaries (PG_BINDIR, like the harness),
 * else the pg_config on PATH. */
static int extension_installed(char *where, size_t size)
{
    const char *bindir = getenv("PG_BINDIR");
    char cmd[1200];
    if (bindir != NULL && bindir[0] != '\0')
        snprintf(cmd, sizeof cmd, "'%s/pg_config' --sharedir 2>/dev/null || pg_config --sharedir",
                 bindir);
    else
        snprintf(cmd, sizeof cmd, "pg_config --sharedir");
    FILE *p = popen(cmd, "r");
    char share[1024] = "";
    if (p != NULL) {
        if (fgets(share, sizeof share, p) == NULL)
            share[0] = '\0';
        pclose(p);
    }
    share[strcspn(share, "\n")] = '\0';
    snprintf(where, size, "%s/extension/softadastra.control", share);
    struct stat st;
    return share[0] != '\0' && stat(where, &st) == 0;
}

static void test_pgext_smoke_version(void **state)
{
    (void)state;
    char control[1200];
    if (!extension_installed(control, sizeof control)) {
        printf("# SKIP: softadastra extension not installed (%s missing); "
               "run `cmake --build <dir> --target pgext_install` or ./test.sh\n",
               control);
        skip();
    }
    sa_pgh *h = NULL;
    sa_err err = {0};
    int rc = sa_pgh_start(NULL, &h, &err);
    if (rc != 0)
        fail_msg("sa_pgh_start: %s (%s)", err.msg, sa_err_name(rc));

    char *v = NULL;
    rc = sa_pgh_exec(h, "CREATE EXTENSION softadastra; SELECT softadastra.version()", &v, &err);
    if (rc != 0)
        fail_msg("%s (%s)", err.msg, sa_err_name(rc));
    assert_string_equal(v, EXPECTED_VERSION);
    sa_free(v);

    char *where = NULL;
    rc = sa_pgh_exec(h,
                     "SELECT n.nspname || '|' || e.extversion FROM pg_extension e"
                     " JOIN pg_namespace n ON n.oid = e.extnamespace"
                     " WHERE e.extname = 'softadastra'",
                     &where, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(where, "softadastra|" EXPECTED_VERSION);
    sa_free(where);
    sa_pgh_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pgext_smoke_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
