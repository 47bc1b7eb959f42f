/*
 * test_config.c — sa-bridge's settings (config.c: defaults, config files,
 * run flags, table lists) and the admin commands' library half (cli_wal.c:
 * printing the WAL from a read-only open; cli_slot.c: the recorded slot).
 */
#include <errno.h>
#include <sys/stat.h>

#include <jansson.h>

#include "testutil.h"

#include "cli_slot.h"
#include "cli_wal.h"
#include "config.h"
#include "ingest.h"

/* ====================================================================== */
/* Helpers                                                                */
/* ====================================================================== */

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", needle, hay);
}

/* Parse text as config file "t.conf" into fresh defaults; returns the code,
 * err filled.  cfg must be freed by the caller. */
static int load_text(sa_bridge_config *cfg, const char *text, sa_err *err)
{
    assert_int_equal(cfg_defaults(cfg, err), 0);
    return cfg_load_string(cfg, "t.conf", text, strlen(text), err);
}

/* Parse run flags (argv without "run"; it is prepended) into fresh defaults. */
static int parse(sa_bridge_config *cfg, int argc, const char *const *args, int *help, sa_err *err)
{
    char *argv[64];
    assert_true(argc < 63);
    argv[0] = (char *)"run";
    for (int i = 0; i < argc; i++)
        argv[i + 1] = (char *)args[i];
    assert_int_equal(cfg_defaults(cfg, err), 0);
    *help = -1;
    return cfg_parse_run_args(cfg, argc + 1, argv, help, err);
}

/* Write text to a new file under the test tmpdir; returns its path (free). */
static char *write_file(const char *tag, const char *text)
{
    char *dir = tu_tmpdir(tag);
    assert_non_null(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    size_t n = strlen(dir) + 16;
    char *path = malloc(n);
    snprintf(path, n, "%s/b.conf", dir);
    free(dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_file(char *path)
{
    unlink(path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    rmdir(path);
    free(path);
}

/* ====================================================================== */
/* Defaults and the option table                                          */
/* ====================================================================== */

static void test_config_defaults(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    sa_err err;
    assert_int_equal(cfg_defaults(&cfg, &err), 0);
    assert_string_equal(cfg.pg, "");
    assert_null(cfg.data);
    assert_string_equal(cfg.slot, "softadastra");
    assert_string_equal(cfg.publication, "softadastra");
    assert_int_equal(cfg.ntables, 0);
    assert_int_equal(cfg.durability, SA_DUR_GROUP);
    assert_int_equal(cfg.status_interval_ms, 1000);
    assert_int_equal(cfg.dead_after_ms, 30000);
    assert_int_equal(cfg.retry_base_ms, 200);
    assert_int_equal(cfg.retry_cap_ms, 10000);
    assert_int_equal(cfg.txn_memory_kb, 16384);
    assert_int_equal(cfg.progress, -1);
    assert_int_equal(cfg.log_level, 2);
    assert_null(cfg.config_file);
    cfg_free(&cfg);
    cfg_free(&cfg); /* freed config is empty: freeing again is harmless */
    cfg_free(NULL);
}

static void test_config_option_table(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    assert_int_equal(cfg_defaults(&cfg, NULL), 0);
    /* clang-format off */
    const char *want[] = {"pg", "data", "slot", "publication", "tables", "config", "durability",
                          "status-interval-ms", "dead-after-ms", "retry-base-ms", "retry-cap-ms",
                          "txn-memory-kb", "listen", "max-body-kb", "inbox-cap-mb",
                          "wal-retention-s", "wal-cap-mb", "max-connections",
                          "max-connections-per-ip", "progress", "no-progress", "log-level", "help"};
    /* clang-format on */
    size_t n = 0;
    const cfg_option *o;
    for (; (o = cfg_option_at(n)) != NULL; n++) {
        assert_non_null(o->help);
        assert_true(strlen(o->help) > 10);
        for (size_t k = 0; k < n; k++)
            assert_string_not_equal(cfg_option_at(k)->name, o->name);
        char buf[128];
        int rc = cfg_format_value(&cfg, o->name, buf, sizeof buf, NULL);
        if (strcmp(o->name, "help") == 0 || strcmp(o->name, "no-progress") == 0)
            assert_int_equal(rc, SA_ENOTFOUND);
        else
            assert_int_equal(rc, 0);
    }
    assert_int_equal(n, ARGC(want));
    for (size_t i = 0; i < n; i++)
        assert_string_equal(cfg_option_at(i)->name, want[i]);

    char buf[64];
    assert_int_equal(cfg_format_value(&cfg, "slot", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "softadastra");
    assert_int_equal(cfg_format_value(&cfg, "durability", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "group");
    assert_int_equal(cfg_format_value(&cfg, "dead-after-ms", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "30000");
    assert_int_equal(cfg_format_value(&cfg, "listen", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "127.0.0.1:8433");
    assert_int_equal(cfg_format_value(&cfg, "max-body-kb", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "8192");
    assert_int_equal(cfg_format_value(&cfg, "inbox-cap-mb", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "256");
    assert_int_equal(cfg_format_value(&cfg, "progress", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "auto");
    assert_int_equal(cfg_format_value(&cfg, "log-level", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "info");
    assert_int_equal(cfg_format_value(&cfg, "data", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "(none)");
    assert_int_equal(cfg_format_value(&cfg, "tables", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "(none)");
    assert_int_equal(cfg_set_tables(&cfg, "a,b", NULL), 0);
    assert_int_equal(cfg_format_value(&cfg, "tables", buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, "a,b");
    assert_int_equal(cfg_format_value(&cfg, "nope", buf, sizeof buf, NULL), SA_ENOTFOUND);
    assert_string_equal(cfg_log_level_name(3), "debug");
    assert_string_equal(cfg_log_level_name(4), "?");
    cfg_free(&cfg);
}

/* ====================================================================== */
/* Config files                                                           */
/* ====================================================================== */

static void test_config_file_every_key(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    sa_err err;
    const char *text = "# sa-bridge settings\n"
                       "\n"
                       "   # an indented comment\n"
                       "pg = host=db port=5433 password=a#b\n"
                       "data=/var/lib/sa\r\n"
                       "\tslot\t=\tmy_slot  \n"
                       "publication = My Pub\n"
                       "tables = public.items , orders,\"Odd, Name\"\n"
                       "durability = sync\n"
                       "status-interval-ms = 500\n"
                       "dead-after-ms = 5000\n"
                       "retry-base-ms = 10\n"
                       "retry-cap-ms = 20\n"
                       "txn-memory-kb = 64\n"
                       "progress = off\n"
                       "log-level = debug\n"
                       "   \n"
                       "# no newline at the end:\n"
                       "# last";
    assert_int_equal(load_text(&cfg, text, &err), 0);
    assert_string_equal(cfg.pg, "host=db port=5433 password=a#b");
    assert_string_equal(cfg.data, "/var/lib/sa");
    assert_string_equal(cfg.slot, "my_slot");
    assert_string_equal(cfg.publication, "My Pub");
    assert_int_equal(cfg.ntables, 3);
    assert_string_equal(cfg.tables[0], "public.items");
    assert_string_equal(cfg.tables[1], "orders");
    assert_string_equal(cfg.tables[2], "\"Odd, Name\"");
    assert_int_equal(cfg.durability, SA_DUR_SYNC);
    assert_int_equal(cfg.status_interval_ms, 500);
    assert_int_equal(cfg.dead_after_ms, 5000);
    assert_int_equal(cfg.retry_base_ms, 10);
    assert_int_equal(cfg.retry_cap_ms, 20);
    assert_int_equal(cfg.txn_memory_kb, 64);
    assert_int_equal(cfg.progress, 0);
    assert_int_equal(cfg.log_level, 3);
    cfg_free(&cfg);

    /* An empty file and a comments-only file change nothing. */
    assert_int_equal(load_text(&cfg, "", &err), 0);
    assert_string_equal(cfg.slot, "softadastra");
    cfg_free(&cfg);
    assert_int_equal(load_text(&cfg, "#\n\n# x = y\n", &err), 0);
    cfg_free(&cfg);

    const struct {
        const char *text;
        int progress;
    } prog[] = {{"progress = auto", -1}, {"progress = on", 1}, {"progress = yes", 1},
                {"progress = true", 1},  {"progress = no", 0}, {"progress = false", 0}};
    for (size_t i = 0; i < sizeof prog / sizeof prog[0]; i++) {
        assert_int_equal(load_text(&cfg, prog[i].text, &err), 0);
        assert_int_equal(cfg.progress, prog[i].progress);
        cfg_free(&cfg);
    }
}

static void test_config_file_errors(void **state)
{
    (void)state;
    /* Each: the text, the line and key the message must name, a detail. */
    const struct {
        const char *text;
        const char *where;
        const char *detail;
        int code;
    } cases[] = {
        {"slot = a\nbogus = 1\n", "t.conf:2:", "unknown key 'bogus'", SA_EINVAL},
        {"# c\nslot = a\n\nslot = b\n", "t.conf:4:", "duplicate key 'slot' (first set on line 2)",
         SA_EINVAL},
        {"slot =\n", "t.conf:1:", "key 'slot' has no value", SA_EINVAL},
        {"\n\nslot =   \t\n", "t.conf:3:", "key 'slot' has no value", SA_EINVAL},
        {"slot\n", "t.conf:1:", "expected 'key = value'", SA_EINVAL},
        {" = x\n", "t.conf:1:", "missing key", SA_EINVAL},
        {"status-interval-ms = 12x\n", "t.conf:1: key 'status-interval-ms'", "not a whole number",
         SA_EINVAL},
        {"status-interval-ms = -5\n", "t.conf:1: key 'status-interval-ms'", "not a whole number",
         SA_EINVAL},
        {"dead-after-ms = 999\n", "t.conf:1: key 'dead-after-ms'", "out of range (expected 1000-",
         SA_ERANGE},
        {"txn-memory-kb = 99999999999999999999999\n", "t.conf:1: key 'txn-memory-kb'",
         "out of range", SA_ERANGE},
        {"retry-cap-ms = 3600001\n", "t.conf:1: key 'retry-cap-ms'", "out of range", SA_ERANGE},
        {"durability = fast\n", "t.conf:1: key 'durability'", "unknown policy 'fast'", SA_EINVAL},
        {"durability = none\n", "t.conf:1: key 'durability'", "none-unsafe", SA_EINVAL},
        {"log-level = loud\n", "t.conf:1: key 'log-level'", "unknown level 'loud'", SA_EINVAL},
        {"progress = maybe\n", "t.conf:1: key 'progress'", "unknown value 'maybe'", SA_EINVAL},
        {"slot = Bad-Name\n", "t.conf:1: key 'slot'", "invalid character", SA_EINVAL},
        {"tables = a,,b\n", "t.conf:1: key 'tables'", "empty entry", SA_EINVAL},
        {"config = other.conf\n", "t.conf:1:", "key 'config' is not allowed in a config file",
         SA_EINVAL},
        {"help = yes\n", "t.conf:1:", "key 'help' is not allowed", SA_EINVAL},
        {"no-progress = yes\n", "t.conf:1:", "key 'no-progress' is not allowed", SA_EINVAL},
        {"--slot = a\n", "t.conf:1:", "unknown key '--slot'", SA_EINVAL},
        {"Slot = a\n", "t.conf:1:", "unknown key 'Slot'", SA_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sa_bridge_config cfg;
        sa_err err;
        int rc = load_text(&cfg, cases[i].text, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: rc %d (%s), want %d", i, rc, err.msg, cases[i].code);
        assert_contains(err.msg, cases[i].where);
        assert_contains(err.msg, cases[i].detail);
        cfg_free(&cfg);
    }

    /* A NUL byte: not a config file. */
    sa_bridge_config cfg;
    sa_err err;
    assert_int_equal(cfg_defaults(&cfg, &err), 0);
    assert_int_equal(cfg_load_string(&cfg, "t.conf", "slot = a\0b\n", 11, &err), SA_EINVAL);
    assert_contains(err.msg, "NUL");
    cfg_free(&cfg);
}

static void test_config_file_on_disk(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    sa_err err;
    char *path = write_file("cfgfile", "data = /srv/sa\nslot = from_file\n");
    assert_int_equal(cfg_defaults(&cfg, &err), 0);
    assert_int_equal(cfg_load_file(&cfg, path, &err), 0);
    assert_string_equal(cfg.slot, "from_file");
    assert_string_equal(cfg.config_file, path);
    cfg_free(&cfg);
    remove_file(path);

    path = write_file("cfgfile", "slot = ok\nbad key line\n");
    assert_int_equal(cfg_defaults(&cfg, &err), 0);
    assert_int_equal(cfg_load_file(&cfg, path, &err), SA_EINVAL);
    char where[4200];
    snprintf(where, sizeof where, "%s:2:", path);
    assert_contains(err.msg, where);
    cfg_free(&cfg);
    remove_file(path);

    assert_int_equal(cfg_defaults(&cfg, &err), 0);
    assert_int_equal(cfg_load_file(&cfg, "/nonexistent/sa.conf", &err), SA_ENOTFOUND);
    assert_contains(err.msg, "/nonexistent/sa.conf");
    cfg_free(&cfg);
}

/* ====================================================================== */
/* Flags                                                                  */
/* ====================================================================== */

static void test_config_flags_every_option(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    sa_err err;
    int help;
    const char *args[] = {"--pg",
                          "dbname=x",
                          "--data=/d",
                          "--slot",
                          "s1",
                          "--publication=p1",
                          "--tables",
                          "a, b.c",
                          "--durability",
                          "none-unsafe",
                          "--status-interval-ms",
                          "100",
                          "--dead-after-ms=1000",
                          "--retry-base-ms",
                          "7",
                          "--retry-cap-ms",
                          "7",
                          "--txn-memory-kb=16777216",
                          "--no-progress",
                          "--log-level",
                          "error"};
    assert_int_equal(parse(&cfg, ARGC(args), args, &help, &err), 0);
    assert_int_equal(help, 0);
    assert_string_equal(cfg.pg, "dbname=x");
    assert_string_equal(cfg.data, "/d");
    assert_string_equal(cfg.slot, "s1");
    assert_string_equal(cfg.publication, "p1");
    assert_int_equal(cfg.ntables, 2);
    assert_string_equal(cfg.tables[1], "b.c");
    assert_int_equal(cfg.durability, SA_DUR_NONE_UNSAFE);
    assert_int_equal(cfg.status_interval_ms, 100);
    assert_int_equal(cfg.dead_after_ms, 1000);
    assert_int_equal(cfg.retry_base_ms, 7);
    assert_int_equal(cfg.retry_cap_ms, 7);
    assert_int_equal(cfg.txn_memory_kb, 16777216);
    assert_int_equal(cfg.progress, 0);
    assert_int_equal(cfg.log_level, 0);
    assert_null(cfg.config_file);
    cfg_free(&cfg);

    /* Only --data: everything else stays default; --pg absent leaves "". */
    const char *only[] = {"--data", "/d"};
    assert_int_equal(parse(&cfg, 2, only, &help, &err), 0);
    assert_string_equal(cfg.pg, "");
    assert_string_equal(cfg.slot, "softadastra");
    cfg_free(&cfg);

    const char *prog[] = {"--progress", "--data", "/d", "--pg="};
    assert_int_equal(parse(&cfg, 4, prog, &help, &err), 0);
    assert_int_equal(cfg.progress, 1);
    assert_string_equal(cfg.pg, "");
    cfg_free(&cfg);
}

static void test_config_flags_errors(void **state)
{
    (void)state;
    const struct {
        const char *args[6];
        int argc;
        const char *detail;
    } cases[] = {
        {{"--slot", "a"}, 2, "--data is required"},
        {{"--data", "/d", "--slot", "a", "--slot", "b"}, 6, "option '--slot' given twice"},
        {{"--data", "/d", "--data=/e"}, 3, "option '--data' given twice"},
        {{"--data", "/d", "--progress", "--no-progress"},
         4,
         "options '--progress' and '--no-progress' contradict"},
        {{"--data", "/d", "--bogus"}, 3, "unknown option '--bogus'"},
        {{"--data", "/d", "--bogus=1"}, 3, "unknown option '--bogus'"},
        {{"--data", "/d", "-x"}, 3, "unknown option '-x'"},
        {{"--data", "/d", "--"}, 3, "unknown option '--'"},
        {{"--data", "/d", "stray"}, 3, "unexpected argument 'stray'"},
        {{"--data", "/d", "--slot"}, 3, "option '--slot' needs a value"},
        {{"--slot", "--data", "/d"}, 3, "option '--slot' needs a value"},
        {{"--data", "/d", "--progress=on"}, 3, "option '--progress' takes no value"},
        {{"--data="}, 1, "--data: the data directory must not be empty"},
        {{"--data", "/d", "--slot="}, 3, "--slot: replication slot name is empty"},
        {{"--data", "/d", "--publication="}, 3, "--publication: publication name is empty"},
        {{"--data", "/d", "--durability", "SYNC"}, 4, "--durability: unknown policy 'SYNC'"},
        {{"--data", "/d", "--listen", "8433"}, 4, "--listen: listen address '8433' is not HOST:PORT or off"},
        {{"--data", "/d", "--listen", "h:99999"}, 4, "--listen: listen address 'h:99999' is not HOST:PORT or off"},
        {{"--data", "/d", "--listen", "h:x"}, 4, "--listen: listen address 'h:x' is not HOST:PORT or off"},
        {{"--data", "/d", "--max-body-kb", "0"}, 4, "--max-body-kb: 0 is out of range"},
        {{"--data", "/d", "--status-interval-ms", "99"},
         4,
         "--status-interval-ms: 99 is out of range"},
        {{"--data", "/d", "--status-interval-ms", "600001"},
         4,
         "out of range (expected 100-600000)"},
        {{"--data", "/d", "--txn-memory-kb", "4294967296"},
         4,
         "--txn-memory-kb: 4294967296 is out"},
        {{"--data", "/d", "--retry-base-ms", "+5"}, 4, "'+5' is not a whole number"},
        {{"--data", "/d", "--retry-base-ms", " 5"}, 4, "' 5' is not a whole number"},
        {{"--data", "/d", "--retry-base-ms", "5ms"}, 4, "'5ms' is not a whole number"},
        {{"--data", "/d", "--retry-base-ms="}, 3, "--retry-base-ms: empty value"},
        {{"--data", "/d", "--retry-base-ms", "20000"},
         4,
         "retry-base-ms (20000) is larger than retry-cap-ms (10000)"},
        {{"--data", "/d", "--dead-after-ms", "1000", "--status-interval-ms=1000"},
         5,
         "dead-after-ms (1000) must be larger than status-interval-ms (1000)"},
        {{"--data", "/d", "--log-level", "trace"}, 4, "--log-level: unknown level 'trace'"},
        {{"--data", "/d", "--tables", "a b"}, 4, "--tables: 'a b' is not a table name"},
        {{"--data", "/d", "--config", "a", "--config=b"}, 5, "option '--config' given twice"},
        {{"--data", "/d", "--config="}, 3, "option '--config' needs a file name"},
        {{"--data", "/d", "--config", "/nonexistent/x.conf"}, 4, "/nonexistent/x.conf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sa_bridge_config cfg;
        sa_err err;
        int help;
        int rc = parse(&cfg, cases[i].argc, cases[i].args, &help, &err);
        if (rc == 0)
            fail_msg("case %zu (%s ...) was accepted", i, cases[i].args[0]);
        assert_contains(err.msg, cases[i].detail);
        cfg_free(&cfg);
    }
}

static void test_config_help(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    sa_err err;
    int help;
    const char *a[] = {"--data", "/d", "--help"};
    assert_int_equal(parse(&cfg, 3, a, &help, &err), 0);
    assert_int_equal(help, 1);
    cfg_free(&cfg);
    /* --help first wins over anything malformed after it, -h too. */
    const char *b[] = {"-h", "--bogus", "--slot", "BAD"};
    assert_int_equal(parse(&cfg, 4, b, &help, &err), 0);
    assert_int_equal(help, 1);
    cfg_free(&cfg);
    /* Without --help, help is set to 0. */
    const char *c[] = {"--data", "/d"};
    assert_int_equal(parse(&cfg, 2, c, &help, &err), 0);
    assert_int_equal(help, 0);
    cfg_free(&cfg);
}

static void test_config_flags_override_file(void **state)
{
    (void)state;
    char *path = write_file("cfgov", "data = /from/file\n"
                                     "slot = file_slot\n"
                                     "durability = sync\n"
                                     "tables = a, b\n"
                                     "progress = on\n"
                                     "retry-cap-ms = 500\n");
    /* --config first, last, or in the middle: the file is read first and the
     * flags win wherever they are. */
    for (int pos = 0; pos < 3; pos++) {
        const char *args[5];
        int n = 0;
        if (pos == 0) {
            args[n++] = "--config";
            args[n++] = path;
        }
        args[n++] = "--slot=flag_slot";
        if (pos == 1) {
            args[n++] = "--config";
            args[n++] = path;
        }
        args[n++] = "--no-progress";
        char cfgeq[4200];
        if (pos == 2) {
            snprintf(cfgeq, sizeof cfgeq, "--config=%s", path);
            args[n++] = cfgeq;
        }
        sa_bridge_config cfg;
        sa_err err;
        int help;
        int rc = parse(&cfg, n, args, &help, &err);
        if (rc != 0)
            fail_msg("pos %d: %s", pos, err.msg);
        assert_string_equal(cfg.slot, "flag_slot");    /* flag wins */
        assert_int_equal(cfg.progress, 0);             /* flag wins */
        assert_string_equal(cfg.data, "/from/file");   /* from the file */
        assert_int_equal(cfg.durability, SA_DUR_SYNC); /* from the file */
        assert_int_equal(cfg.ntables, 2);
        assert_int_equal(cfg.retry_cap_ms, 500);
        assert_string_equal(cfg.config_file, path);
        cfg_free(&cfg);
    }

    /* Cross checks see the merged settings: the file's cap, the flag's base. */
    const char *bad[] = {"--config", path, "--retry-base-ms", "600"};
    sa_bridge_config cfg;
    sa_err err;
    int help;
    assert_int_not_equal(parse(&cfg, 4, bad, &help, &err), 0);
    assert_contains(err.msg, "retry-base-ms (600) is larger than retry-cap-ms (500)");
    cfg_free(&cfg);
    remove_file(path);

    /* An error in the file names file, line and key through the flags too. */
    path = write_file("cfgerr", "slot = ok\n\ndurability = quick\n");
    const char *args[] = {"--config", path, "--data", "/d"};
    assert_int_equal(parse(&cfg, 4, args, &help, &err), SA_EINVAL);
    char where[4200];
    snprintf(where, sizeof where, "%s:3: key 'durability'", path);
    assert_contains(err.msg, where);
    cfg_free(&cfg);
    remove_file(path);
}

/* ====================================================================== */
/* Table lists                                                            */
/* ====================================================================== */

/* Every config-file key has an environment variable; precedence is
 * file < environment < flags; a bad value names the variable. */
static const char *fake_env_text;
static const char *fake_env(const char *name)
{
    /* fake_env_text: "NAME=value\n..." */
    static char val[256];
    size_t nl = strlen(name);
    for (const char *p = fake_env_text; p != NULL && *p != '\0';) {
        const char *e = strchr(p, '\n');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            snprintf(val, sizeof val, "%.*s", (int)(len - nl - 1), p + nl + 1);
            return val;
        }
        p = e != NULL ? e + 1 : NULL;
    }
    return NULL;
}

static void test_config_environment(void **state)
{
    (void)state;
    char name[64];
    assert_int_equal(cfg_env_name("log-level", name, sizeof name), 0);
    assert_string_equal(name, "SA_BRIDGE_LOG_LEVEL");
    assert_int_equal(cfg_env_name("max-connections-per-ip", name, sizeof name), 0);
    assert_string_equal(name, "SA_BRIDGE_MAX_CONNECTIONS_PER_IP");
    assert_int_equal(cfg_env_name("pg", name, 8), -1);

    sa_bridge_config cfg;
    sa_err err;
    assert_int_equal(cfg_defaults(&cfg, &err), 0);
    fake_env_text = "SA_BRIDGE_PG=host=h1 dbname=x\nSA_BRIDGE_DATA=/d\nSA_BRIDGE_LOG_LEVEL=debug\n"
                    "SA_BRIDGE_WAL_CAP_MB=77\nSA_BRIDGE_LISTEN=0.0.0.0:9000\nSA_BRIDGE_HELP=1\n";
    assert_int_equal(cfg_load_env(&cfg, fake_env, &err), 0);
    assert_string_equal(cfg.pg, "host=h1 dbname=x");
    assert_string_equal(cfg.data, "/d");
    assert_int_equal(cfg.log_level, 3);
    assert_int_equal(cfg.wal_cap_mb, 77);
    assert_string_equal(cfg.listen, "0.0.0.0:9000");
    cfg_free(&cfg);

    /* every key a config file accepts is read from its variable */
    const cfg_option *o;
    for (size_t i = 0; (o = cfg_option_at(i)) != NULL; i++) {
        if (!o->in_file)
            continue;
        assert_int_equal(cfg_env_name(o->name, name, sizeof name), 0);
        char text[128];
        snprintf(text, sizeof text, "%s=%s\n", name, "not-a-valid-value-!!");
        fake_env_text = text;
        assert_int_equal(cfg_defaults(&cfg, &err), 0);
        int rc = cfg_load_env(&cfg, fake_env, &err);
        /* free-text keys take anything; the others must refuse, naming the variable */
        if (rc != 0)
            assert_contains(err.msg, name);
        else
            assert_true(strcmp(o->name, "pg") == 0 || strcmp(o->name, "data") == 0 ||
                        strcmp(o->name, "slot") == 0 || strcmp(o->name, "publication") == 0 ||
                        strcmp(o->name, "tables") == 0 || strcmp(o->name, "listen") == 0);
        cfg_free(&cfg);
    }

    /* precedence through cfg_parse_run_args: file < environment < flags */
    char *path = write_file("cfgenv", "data = /from-file\nwal-cap-mb = 10\nslot = file_slot\n");
    setenv("SA_BRIDGE_CONFIG", path, 1);
    setenv("SA_BRIDGE_WAL_CAP_MB", "20", 1);
    setenv("SA_BRIDGE_SLOT", "env_slot", 1);
    const char *args[] = {"--slot", "flag_slot"};
    int help = 0;
    assert_int_equal(parse(&cfg, ARGC(args), args, &help, &err), 0);
    assert_string_equal(cfg.data, "/from-file");
    assert_int_equal(cfg.wal_cap_mb, 20);
    assert_string_equal(cfg.slot, "flag_slot");
    cfg_free(&cfg);
    setenv("SA_BRIDGE_WAL_CAP_MB", "0", 1);
    assert_int_not_equal(parse(&cfg, ARGC(args), args, &help, &err), 0);
    assert_contains(err.msg, "SA_BRIDGE_WAL_CAP_MB");
    cfg_free(&cfg);
    unsetenv("SA_BRIDGE_CONFIG");
    unsetenv("SA_BRIDGE_WAL_CAP_MB");
    unsetenv("SA_BRIDGE_SLOT");
    free(path);
}

static void test_config_tables(void **state)
{
    (void)state;
    sa_bridge_config cfg;
    sa_err err;
    assert_int_equal(cfg_defaults(&cfg, &err), 0);

    assert_int_equal(cfg_set_tables(&cfg, "  items ,public.orders,\t\"My Table\" ", &err), 0);
    assert_int_equal(cfg.ntables, 3);
    assert_string_equal(cfg.tables[0], "items");
    assert_string_equal(cfg.tables[1], "public.orders");
    assert_string_equal(cfg.tables[2], "\"My Table\"");

    const char *good[] = {"a",       "_a1$",        "\"a,b\"",     "\"we\"\"ird\".t",
                          "s.\"T\"", "\"S\".\"T\"", "caf\xc3\xa9", "A.B"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (cfg_set_tables(&cfg, good[i], &err) != 0)
            fail_msg("'%s' refused: %s", good[i], err.msg);
        assert_int_equal(cfg.ntables, 1);
        assert_string_equal(cfg.tables[0], good[i]);
    }
    assert_int_equal(cfg_set_tables(&cfg, "\"a,b\",c", &err), 0);
    assert_int_equal(cfg.ntables, 2);

    const struct {
        const char *list;
        const char *detail;
    } bad[] = {
        {"", "empty entry (number 1)"},       {"  ", "empty entry"},
        {",a", "empty entry (number 1)"},     {"a,,b", "empty entry (number 2)"},
        {"a,", "empty entry (number 2)"},     {"a, ,b", "empty entry (number 2)"},
        {"a b", "'a b' is not a table name"}, {"a.b.c", "not a table name"},
        {"1abc", "not a table name"},         {"a.", "not a table name"},
        {".a", "not a table name"},           {"\"\"", "not a table name"},
        {"\"open", "not a table name"},       {"a;drop table x", "not a table name"},
        {"a\tb", "control character"},        {"a\nb", "control character"},
        {"\"x\x7fy\"", "control character"},  {"a,b,a", "table 'a' is listed twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = cfg_set_tables(&cfg, bad[i].list, &err);
        if (rc == 0)
            fail_msg("'%s' accepted", bad[i].list);
        assert_contains(err.msg, bad[i].detail);
        /* a refused list leaves the previous one */
        assert_int_equal(cfg.ntables, 2);
        assert_string_equal(cfg.tables[0], "\"a,b\"");
    }

    /* Name length: 255 bytes pass, 256 do not. */
    char name[300];
    memset(name, 'n', sizeof name);
    name[255] = '\0';
    assert_int_equal(cfg_set_tables(&cfg, name, &err), 0);
    name[255] = 'n';
    name[256] = '\0';
    assert_int_equal(cfg_set_tables(&cfg, name, &err), SA_ETOOBIG);
    assert_contains(err.msg, "256 bytes, at most 255");

    /* Count: CFG_MAX_TABLES pass, one more does not. */
    size_t cap = (CFG_MAX_TABLES + 1) * 8;
    char *list = malloc(cap);
    size_t used = 0;
    for (int i = 0; i < CFG_MAX_TABLES; i++)
        used += (size_t)snprintf(list + used, cap - used, "%st%d", i ? "," : "", i);
    assert_int_equal(cfg_set_tables(&cfg, list, &err), 0);
    assert_int_equal(cfg.ntables, CFG_MAX_TABLES);
    snprintf(list + used, cap - used, ",extra");
    assert_int_equal(cfg_set_tables(&cfg, list, &err), SA_ETOOBIG);
    assert_contains(err.msg, "more than 1024 tables");
    assert_int_equal(cfg.ntables, CFG_MAX_TABLES);
    free(list);
    cfg_free(&cfg);
}

static void test_config_durability_names(void **state)
{
    (void)state;
    const struct {
        const char *name;
        int ok;
        sa_durability d;
    } cases[] = {{"sync", 1, SA_DUR_SYNC},
                 {"group", 1, SA_DUR_GROUP},
                 {"none-unsafe", 1, SA_DUR_NONE_UNSAFE},
                 {"none", 0, 0},
                 {"Sync", 0, 0},
                 {"", 0, 0},
                 {"group ", 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sa_bridge_config cfg;
        sa_err err;
        int help;
        const char *args[] = {"--data", "/d", "--durability", cases[i].name};
        int rc = parse(&cfg, 4, args, &help, &err);
        if (cases[i].ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(cfg.durability, cases[i].d);
        } else {
            assert_int_equal(rc, SA_EINVAL);
            assert_contains(err.msg, "--durability");
            assert_contains(err.msg, "expected sync, group or none-unsafe");
        }
        cfg_free(&cfg);
    }
}

static void test_config_number_bounds(void **state)
{
    (void)state;
    /* extra: a companion setting so the cross checks (retry base <= cap,
     * dead-after > status interval) do not hide the bound under test. */
    const struct {
        const char *flag;
        const char *extra;
        const char *min, *below, *max, *above;
    } cases[] = {
        {"--status-interval-ms", "--dead-after-ms=3600000", "100", "99", "600000", "600001"},
        {"--dead-after-ms", "--status-interval-ms=100", "1000", "999", "3600000", "3600001"},
        {"--retry-base-ms", "--retry-cap-ms=3600000", "1", "0", "600000", "600001"},
        {"--retry-cap-ms", "--retry-base-ms=1", "1", "0", "3600000", "3600001"},
        {"--txn-memory-kb", "--log-level=info", "64", "63", "16777216", "16777217"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *vals[] = {cases[i].min, cases[i].below, cases[i].max, cases[i].above,
                              "18446744073709551616"};
        for (int k = 0; k < 5; k++) {
            sa_bridge_config cfg;
            sa_err err;
            int help;
            const char *args[] = {"--data", "/d", cases[i].extra, cases[i].flag, vals[k]};
            int rc = parse(&cfg, 5, args, &help, &err);
            if (k == 0 || k == 2) {
                if (rc != 0)
                    fail_msg("%s %s refused: %s", cases[i].flag, vals[k], err.msg);
                char buf[32];
                assert_int_equal(cfg_format_value(&cfg, cases[i].flag + 2, buf, sizeof buf, NULL),
                                 0);
                assert_string_equal(buf, vals[k]);
            } else {
                if (rc != SA_ERANGE)
                    fail_msg("%s %s: rc %d (%s)", cases[i].flag, vals[k], rc, err.msg);
                assert_contains(err.msg, cases[i].flag);
                assert_contains(err.msg, "out of range");
            }
            cfg_free(&cfg);
        }
    }
}

/* Every allocation failure is an SA_ENOMEM error that leaks nothing. */
static void test_config_out_of_memory(void **state)
{
    (void)state;
    const char *text = "slot = s\ntables = a, b, c\n";
    const char *args[] = {"run", "--data", "/d", "--tables", "x,y", "--publication", "p"};
    int done = 0;
    for (long n = 0; n < 100 && !done; n++) {
        sa_bridge_config cfg;
        sa_err err;
        int help;
        sa_alloc_fail_after(n);
        int rc = cfg_defaults(&cfg, &err);
        if (rc == 0) {
            rc = cfg_load_string(&cfg, "t.conf", text, strlen(text), &err);
            if (rc == 0)
                rc = cfg_parse_run_args(&cfg, ARGC(args), (char **)args, &help, &err);
            cfg_free(&cfg);
        }
        sa_alloc_fail_reset();
        if (rc == 0)
            done = 1;
        else
            assert_int_equal(rc, SA_ENOMEM);
    }
    assert_true(done);
}

/* ====================================================================== */
/* cli_wal_print                                                          */
/* ====================================================================== */

typedef struct wal_fixture {
    char *data;  /* data directory (malloc) */
    char *store; /* data/store (sa_free) */
    sa_store *s; /* open for writing */
} wal_fixture;

static void fixture_open(wal_fixture *fx, const char *tag)
{
    fx->data = tu_tmpdir(tag);
    assert_non_null(fx->data);
    assert_int_equal(mkdir(fx->data, 0700), 0);
    fx->store = cli_store_dir(fx->data);
    assert_non_null(fx->store);
    fx->s = tu_open(fx->store, SA_DUR_SYNC);
}

static void fixture_close(wal_fixture *fx)
{
    sa_store_close(fx->s);
    tu_rmrf(fx->data);
    free(fx->data);
    sa_free(fx->store);
}

/* Two transactions from Postgres (2 ops, then 1) and one op from an edge. */
static void fixture_fill(wal_fixture *fx)
{
    tu_fields k1, c1, k2, c2, k3, c3;
    tu_fields_set(&k1, 1, (const char *[]){"id=1"});
    tu_fields_set(&c1, 2, (const char *[]){"id=1", "name=a \"quoted\" one"});
    tu_fields_set(&k2, 1, (const char *[]){"id=2"});
    tu_fields_set(&c2, 2, (const char *[]){"id=2", "name"});
    tu_fields_set(&k3, 1, (const char *[]){"id=1"});
    tu_fields_set(&c3, 2, (const char *[]){"name=b", "big=~"});
    sa_op t1[2] = {tu_op(SA_OP_INSERT, "public.items", &k1, &c1, 1),
                   tu_op(SA_OP_INSERT, "public.items", &k2, &c2, 2)};
    for (int i = 0; i < 2; i++) {
        t1[i].flags = SA_OP_HAS_PG;
        t1[i].pg_lsn = 0x16B3748;
        t1[i].pg_xid = 750;
        t1[i].pg_commit_time = 1764108600000000LL;
    }
    sa_op t2 = tu_op(SA_OP_UPDATE, "public.items", &k3, &c3, 3);
    t2.flags = SA_OP_HAS_PG;
    t2.pg_lsn = ((uint64_t)0x1 << 32) | 0xAB00;
    t2.pg_xid = 751;
    t2.pg_commit_time = 1764108601000000LL;
    sa_op e = tu_op(SA_OP_DELETE, "public.items", &k2, NULL, 4);
    e.origin = "edge1";
    e.epoch = 1;
    e.seq = 7;
    sa_err err;
    sa_commit_result res;
    assert_int_equal(sa_wal_append(fx->s, t1, 2, &res, &err), 0);
    assert_int_equal(res.first_seq, 1);
    assert_int_equal(sa_wal_append(fx->s, &t2, 1, &res, &err), 0);
    if (sa_wal_append(fx->s, &e, 1, &res, &err) != 0)
        fail_msg("edge op: %s", err.msg);
    assert_int_equal(res.last_seq, 4);
}

/* Print into memory; returns the text (free) and the code in *rc. */
static char *print_wal(const char *data, uint64_t from, uint64_t limit, int json, int *rc,
                       sa_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    *rc = cli_wal_print(data, from, limit, json, f, err);
    assert_int_equal(fclose(f), 0);
    return buf;
}

/* Split into lines and parse each as JSON; returns the count. */
static size_t parse_lines(char *text, json_t **out, size_t cap)
{
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        assert_true(n < cap);
        json_error_t jerr;
        out[n] = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
        if (out[n] == NULL)
            fail_msg("line %zu is not JSON (%s): %s", n + 1, jerr.text, line);
        n++;
    }
    return n;
}

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("member %s is not a string", key);
    return json_string_value(v);
}

static long long jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("member %s is not an integer", key);
    return json_integer_value(v);
}

static void check_json_lines(const char *data, size_t want)
{
    sa_err err;
    int rc;
    char *text = print_wal(data, 0, 0, 1, &rc, &err);
    if (rc != 0)
        fail_msg("cli_wal_print: %s", err.msg);
    json_t *l[8];
    size_t n = parse_lines(text, l, 8);
    assert_true(n >= 4);
    assert_int_equal(n, want);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(jint(l[i], "seq"), (long long)i + 1);
        assert_string_equal(jstr(l[i], "table"), i < 4 ? "public.items" : "public.more");
        assert_true(json_is_object(json_object_get(l[i], "key")));
        assert_true(json_is_object(json_object_get(l[i], "cols")));
    }
    assert_string_equal(jstr(l[0], "origin"), "pg");
    assert_string_equal(jstr(l[0], "kind"), "insert");
    assert_string_equal(jstr(l[0], "commit_lsn"), "0/16B3748");
    assert_int_equal(jint(l[0], "xid"), 750);
    assert_int_equal(jint(l[0], "commit_time"), 1764108600000000LL);
    assert_true(json_is_false(json_object_get(l[0], "group_end")));
    assert_string_equal(jstr(json_object_get(l[0], "key"), "id"), "1");
    assert_string_equal(jstr(json_object_get(l[0], "cols"), "name"), "a \"quoted\" one");
    assert_null(json_object_get(l[0], "op_seq"));

    assert_string_equal(jstr(l[1], "commit_lsn"), "0/16B3748");
    assert_true(json_is_true(json_object_get(l[1], "group_end")));
    assert_true(json_is_null(json_object_get(json_object_get(l[1], "cols"), "name")));

    assert_string_equal(jstr(l[2], "kind"), "update");
    assert_string_equal(jstr(l[2], "commit_lsn"), "1/AB00");
    assert_int_equal(jint(l[2], "xid"), 751);
    assert_true(json_is_true(json_object_get(l[2], "group_end")));
    assert_string_equal(json_string_value(json_array_get(json_object_get(l[2], "unchanged"), 0)),
                        "big");

    /* The edge's op: its own seq kept aside, no PostgreSQL position. */
    assert_string_equal(jstr(l[3], "origin"), "edge1");
    assert_string_equal(jstr(l[3], "kind"), "delete");
    assert_int_equal(jint(l[3], "op_seq"), 7);
    assert_true(json_is_null(json_object_get(l[3], "commit_lsn")));
    assert_true(json_is_null(json_object_get(l[3], "xid")));
    assert_true(json_is_null(json_object_get(l[3], "commit_time")));
    assert_true(json_is_true(json_object_get(l[3], "group_end")));
    for (size_t i = 0; i < n; i++)
        json_decref(l[i]);
    free(text);
}

static void test_cli_wal_json_beside_writer(void **state)
{
    (void)state;
    wal_fixture fx;
    fixture_open(&fx, "cliwal");
    fixture_fill(&fx);
    /* The writer keeps its store open: the read-only open works beside it. */
    check_json_lines(fx.data, 4);

    /* A later print sees what the writer committed since. */
    tu_fields k;
    tu_fields_set(&k, 1, (const char *[]){"id=9"});
    sa_op op = tu_op(SA_OP_INSERT, "public.more", &k, &k, 5);
    sa_err err;
    assert_int_equal(sa_wal_append(fx.s, &op, 1, NULL, &err), 0);
    check_json_lines(fx.data, 5);

    /* And with the writer gone. */
    sa_store_close(fx.s);
    fx.s = NULL;
    check_json_lines(fx.data, 5);
    fixture_close(&fx);
}

static void test_cli_wal_human_from_limit(void **state)
{
    (void)state;
    wal_fixture fx;
    fixture_open(&fx, "cliwalh");
    fixture_fill(&fx);
    sa_err err;
    int rc;
    char *text = print_wal(fx.data, 0, 0, 0, &rc, &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(
        text,
        "1 insert public.items key={\"id\":\"1\"} cols={\"id\":\"1\",\"name\":\"a \\\"quoted\\\" "
        "one\"} lsn=0/16B3748 xid=750\n"
        "2 insert public.items key={\"id\":\"2\"} cols={\"id\":\"2\",\"name\":null} "
        "lsn=0/16B3748 xid=750 end\n"
        "3 update public.items key={\"id\":\"1\"} cols={\"name\":\"b\"} lsn=1/AB00 xid=751 "
        "unchanged=[\"big\"] end\n"
        "4 delete public.items key={\"id\":\"2\"} cols={} origin=\"edge1\" end\n");
    free(text);

    /* --from and --limit */
    text = print_wal(fx.data, 2, 1, 0, &rc, &err);
    assert_int_equal(rc, 0);
    assert_true(strncmp(text, "2 insert", 8) == 0);
    assert_int_equal(strchr(text, '\n') - text + 1, (long)strlen(text)); /* one line */
    free(text);
    text = print_wal(fx.data, 3, 0, 1, &rc, &err);
    assert_int_equal(rc, 0);
    json_t *l[4];
    assert_int_equal(parse_lines(text, l, 4), 2);
    assert_int_equal(jint(l[0], "seq"), 3);
    assert_int_equal(jint(l[1], "seq"), 4);
    json_decref(l[0]);
    json_decref(l[1]);
    free(text);
    text = print_wal(fx.data, 99, 0, 1, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(text, "");
    free(text);
    fixture_close(&fx);
}

static void test_cli_wal_errors(void **state)
{
    (void)state;
    sa_err err;
    int rc;
    /* Missing directory. */
    char *text = print_wal("/nonexistent/sa-data", 0, 0, 1, &rc, &err);
    assert_int_equal(rc, SA_ENOTFOUND);
    assert_contains(err.msg, "'/nonexistent/sa-data' does not exist");
    free(text);

    /* A directory without a store inside. */
    char *dir = tu_tmpdir("cliwale");
    assert_int_equal(mkdir(dir, 0700), 0);
    text = print_wal(dir, 0, 0, 1, &rc, &err);
    assert_int_equal(rc, SA_EFORMAT);
    assert_contains(err.msg, "is not a sa-bridge data directory");
    free(text);

    /* A store that is not a store. */
    char *store = cli_store_dir(dir);
    assert_int_equal(mkdir(store, 0700), 0);
    char junk[4200];
    snprintf(junk, sizeof junk, "%s/junk", store);
    FILE *f = fopen(junk, "w");
    fputs("x", f);
    fclose(f);
    text = print_wal(dir, 0, 0, 1, &rc, &err);
    assert_int_equal(rc, SA_EFORMAT);
    free(text);
    sa_free(store);
    tu_rmrf(dir);

    /* A file, not a directory. */
    char *path = write_file("cliwalf", "x");
    text = print_wal(path, 0, 0, 1, &rc, &err);
    assert_int_equal(rc, SA_EFORMAT);
    assert_contains(err.msg, "is not a directory");
    free(text);
    remove_file(path);
    free(dir);

    /* An empty, just-created store prints nothing. */
    wal_fixture fx;
    fixture_open(&fx, "cliwal0");
    text = print_wal(fx.data, 0, 0, 1, &rc, &err);
    assert_int_equal(rc, 0);
    assert_string_equal(text, "");
    free(text);

    /* A failing output stream is SA_EIO. */
    fixture_fill(&fx);
    FILE *full = fopen("/dev/full", "w");
    if (full != NULL) {
        setvbuf(full, NULL, _IONBF, 0);
        assert_int_equal(cli_wal_print(fx.data, 0, 0, 1, full, &err), SA_EIO);
        assert_contains(err.msg, "cannot write the output");
        fclose(full);
    }
    fixture_close(&fx);

    /* Trailing slashes on the data directory are fine. */
    char *s = cli_store_dir("/a/b//");
    assert_string_equal(s, "/a/b/store");
    sa_free(s);
    s = cli_store_dir("/");
    assert_string_equal(s, "//store");
    sa_free(s);
}

/* ====================================================================== */
/* cli_recorded_slot                                                      */
/* ====================================================================== */

static void put_meta(sa_store *s, const char *key, const char *val)
{
    sa_batch *b = NULL;
    sa_err err;
    assert_int_equal(sa_batch_new(&b, &err), 0);
    assert_int_equal(sa_batch_meta_put(b, key, val, strlen(val), &err), 0);
    assert_int_equal(sa_store_commit(s, b, NULL, &err), 0);
    sa_batch_free(b);
}

static void test_cli_recorded_slot(void **state)
{
    (void)state;
    wal_fixture fx;
    fixture_open(&fx, "clislot");
    char name[REPL_NAME_MAX + 1] = "untouched";
    sa_err err;
    assert_int_equal(cli_recorded_slot(fx.data, name, &err), SA_ENOTFOUND);
    assert_contains(err.msg, "no replication slot is recorded");
    assert_string_equal(name, "untouched");

    put_meta(fx.s, INGEST_META_SLOT, "Not A Slot");
    assert_int_equal(cli_recorded_slot(fx.data, name, &err), SA_ECORRUPT);
    assert_string_equal(name, "untouched");

    put_meta(fx.s, INGEST_META_SLOT, "bridge_slot_1");
    assert_int_equal(cli_recorded_slot(fx.data, name, &err), 0); /* writer still open */
    assert_string_equal(name, "bridge_slot_1");

    assert_int_equal(cli_recorded_slot("/nonexistent/x", name, &err), SA_ENOTFOUND);
    assert_contains(err.msg, "does not exist");
    fixture_close(&fx);

    /* Names are checked before anything is sent. */
    assert_int_equal(cli_drop_slot("", "Bad", &err), SA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_option_table),
        cmocka_unit_test(test_config_file_every_key),
        cmocka_unit_test(test_config_file_errors),
        cmocka_unit_test(test_config_file_on_disk),
        cmocka_unit_test(test_config_flags_every_option),
        cmocka_unit_test(test_config_flags_errors),
        cmocka_unit_test(test_config_help),
        cmocka_unit_test(test_config_flags_override_file),
        cmocka_unit_test(test_config_environment),
        cmocka_unit_test(test_config_tables),
        cmocka_unit_test(test_config_durability_names),
        cmocka_unit_test(test_config_number_bounds),
        cmocka_unit_test(test_config_out_of_memory),
        cmocka_unit_test(test_cli_wal_json_beside_writer),
        cmocka_unit_test(test_cli_wal_human_from_limit),
        cmocka_unit_test(test_cli_wal_errors),
        cmocka_unit_test(test_cli_recorded_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
