/*
 * main.c — sa-bridge's command line: dispatches to the daemon (run) and the
 * admin commands.  This is the only place that prints: the modules return
 * errors, main words them for people.  Commands not built yet say so plainly
 * and do nothing.
 *
 * Exit status: 0 success (run: stopped cleanly; status: healthy), 1
 * runtime error (the message is on standard error; also: could not write
 * output; status: unhealthy), 2 unavailable (status: no bridge answers), 64
 * usage error (EX_USAGE, as sysexits.h numbers it).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "cli_slot.h"
#include "cli_wal.h"
#include "config.h"
#include "logfmt.h"
#include "ingest.h"
#include "sa/sa_err.h"

#ifndef SA_VERSION
#define SA_VERSION "0.1.0" /* CMake passes the project version */
#endif

#define EXIT_RUNTIME 1
#define EXIT_UNAVAILABLE 2
#define EXIT_USAGE 64

/* ====================================================================== */
/* Output helpers                                                         */
/* ====================================================================== */

/* Flush stdout and report a failed write (a full disk, a closed pipe) instead
 * of exiting 0 with the output lost. */
static int finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "sa-bridge: could not write to standard output\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Print text wrapped at 80 columns, each line indented by `indent`. */
static void wrap(FILE *f, int indent, const char *text)
{
    const int width = 80 - indent;
    const char *p = text;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        int len = (int)strlen(p);
        int cut = len;
        if (len > width) {
            cut = width;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut == 0) /* one word longer than a line */
                cut = width;
        }
        fprintf(f, "%*s%.*s\n", indent, "", cut, p);
        p += cut;
    }
}

/* ====================================================================== */
/* Logging (run)                                                          */
/* ====================================================================== */

typedef struct log_ctx {
    int level;    /* messages above it are dropped */
    int progress; /* 1: the progress line is redrawn in place (a terminal) */
    int redrawn;  /* a progress line is on screen without its newline */
} log_ctx;

/* Log lines may come from several threads; one line is one locked write. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* Secrets never logged: the password of the --pg conninfo and PGPASSWORD,
 * replaced wherever they appear (set once, before any thread starts). */
#define LOG_SECRETS 4
static char *log_secrets[LOG_SECRETS];

static void log_add_secret(const char *s)
{
    if (s == NULL || strlen(s) < 3) /* too short to find without mangling text */
        return;
    for (int i = 0; i < LOG_SECRETS; i++) {
        if (log_secrets[i] == NULL) {
            log_secrets[i] = strdup(s);
            return;
        }
        if (strcmp(log_secrets[i], s) == 0)
            return;
    }
}

/* The password of a libpq conninfo (key=value or URI), as a secret. */
static void log_secret_conninfo(const char *conninfo)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo != NULL ? conninfo : "", &msg);
    PQfreemem(msg);
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
            log_add_secret(o->val);
    PQconninfoFree(opts);
    log_add_secret(getenv("PGPASSWORD"));
}

/*
 * One event a line on stderr, logfmt:
 *   ts=2026-11-25T22:10:00.123Z level=info msg="streaming from slot ..."
 * The progress line (INGEST_LOG_PROGRESS) is redrawn in place on a
 * terminal ("\r", erase to the end of line) until the next ordinary line;
 * otherwise it is logged as an info line with progress=1.
 */
static void log_line(void *ctx, int level, const char *msg)
{
    log_ctx *lc = ctx;
    int progress = level == INGEST_LOG_PROGRESS;
    int show = progress ? lc->progress || lc->level >= 2 : level <= lc->level;
    if (!show)
        return;
    char stamp[40] = "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    if (gmtime_r(&ts.tv_sec, &tm) != NULL) {
        size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
    }
    char clean[1100], quoted[2300];
    logfmt_scrub(msg, (const char *const *)log_secrets, LOG_SECRETS, clean, sizeof clean);
    logfmt_quote(clean, quoted, sizeof quoted);
    const char *name = progress ? "info" : cfg_log_level_name(level);
    pthread_mutex_lock(&log_mu);
    if (progress && lc->progress) {
        fprintf(stderr, "\rts=%s level=%s progress=1 msg=%s\033[K", stamp, name, quoted);
        lc->redrawn = 1;
    } else {
        fprintf(stderr, "%sts=%s level=%s%s msg=%s\n", lc->redrawn ? "\n" : "", stamp, name,
                progress ? " progress=1" : "", quoted);
        lc->redrawn = 0;
    }
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
}

/* ====================================================================== */
/* run                                                                    */
/* ====================================================================== */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void run_usage(FILE *f)
{
    sa_bridge_config def;
    int have_def = cfg_defaults(&def, NULL) == 0;
    fprintf(f, "usage: sa-bridge run --data DIR [--pg CONNINFO] [options]\n\n");
    wrap(f, 0,
         "Attach to a PostgreSQL database and record every committed change of the synced "
         "tables durably in the bridge's WAL (logical replication, pgoutput): check the "
         "server's preconditions, create or reuse the publication and the replication slot, "
         "copy the tables once, then stream. Runs until SIGINT or SIGTERM, then stops "
         "cleanly; a second signal ends it at once (nothing is lost: the next start resumes).");
    fprintf(f, "\noptions:\n");
    const cfg_option *o;
    for (size_t i = 0; (o = cfg_option_at(i)) != NULL; i++) {
        fprintf(f, "  --%s%s%s\n", o->name, o->arg != NULL ? " " : "",
                o->arg != NULL ? o->arg : "");
        wrap(f, 6, o->help);
        char val[512];
        if (have_def && cfg_format_value(&def, o->name, val, sizeof val, NULL) == 0 &&
            val[0] != '\0' && strcmp(val, "(none)") != 0)
            fprintf(f, "      (default: %s)\n", val);
    }
    fprintf(f, "\nconfig file (--config FILE, or SA_BRIDGE_CONFIG=FILE):\n");
    char keys[1024] = "";
    for (size_t i = 0; (o = cfg_option_at(i)) != NULL; i++)
        if (o->in_file)
            snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s",
                     keys[0] != '\0' ? ", " : "", o->name);
    char text[2048];
    snprintf(text, sizeof text,
             "One setting a line, \"key = value\" (INI style); keys are the option names above "
             "without \"--\" (%s). Blanks around key and value are ignored; the value is the "
             "rest of the line, taken as it is (no quotes needed, no comment after it). Lines "
             "whose first character is # are comments; blank lines are ignored. Each key at "
             "most once; an unknown key or a bad value is an error naming the file, line and "
             "key. --config, --no-progress and --help exist only on the command line. Example:",
             keys);
    wrap(f, 2, text);
    fprintf(f, "\n"
               "    # /etc/sa-bridge.conf\n"
               "    pg = host=db.example.com dbname=shop user=sa_bridge\n"
               "    data = /var/lib/sa-bridge\n"
               "    tables = public.items, public.orders\n"
               "    durability = group\n");
    fprintf(f, "\nenvironment:\n");
    wrap(f, 2,
         "Every config-file key is also an environment variable: SA_BRIDGE_ and the key in "
         "upper case with - as _ (SA_BRIDGE_PG, SA_BRIDGE_DATA, SA_BRIDGE_LOG_LEVEL, ...). "
         "Precedence, lowest first: defaults, the config file, the environment, the command "
         "line. A bad value is an error naming the variable.");
    fprintf(f, "\n");
    wrap(f, 2,
         "libpq reads the standard PG* variables: PGHOST, PGPORT, PGDATABASE, PGUSER, "
         "PGPASSWORD (or PGPASSFILE / ~/.pgpass), PGSSLMODE, PGAPPNAME, PGCONNECT_TIMEOUT "
         "and the others. Without --pg they are the whole connection; with --pg they fill "
         "in what it leaves out.");
    fprintf(f, "\nlogs:\n");
    wrap(f, 2,
         "One event a line on standard error, as key=value fields (logfmt): ts=TIME "
         "level=error|warn|info|debug msg=\"...\". Passwords (of --pg, PGPASSWORD) and "
         "bearer tokens are never written: they appear as ***.");
    fprintf(f, "\nexit status:\n");
    wrap(f, 2,
         "0 stopped cleanly, 1 runtime error (the message is on standard error), 64 usage "
         "error.");
    if (have_def)
        cfg_free(&def);
}

static int cmd_run(int argc, char **argv)
{
    sa_bridge_config cfg;
    sa_err err;
    int help = 0;
    int status = EXIT_RUNTIME;
    if (cfg_defaults(&cfg, &err) != 0) {
        fprintf(stderr, "sa-bridge run: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    int rc = cfg_parse_run_args(&cfg, argc, argv, &help, &err);
    if (rc != 0) {
        fprintf(stderr, "sa-bridge run: %s (see sa-bridge run --help)\n", err.msg);
        status = rc == SA_ENOMEM ? EXIT_RUNTIME : EXIT_USAGE;
        goto done;
    }
    if (help) {
        run_usage(stdout);
        status = finish_stdout();
        goto done;
    }
    if (cfg.progress < 0)
        cfg.progress = isatty(STDERR_FILENO) ? 1 : 0;

    /* SIGINT/SIGTERM ask for a clean stop; SA_RESETHAND makes a second one
     * end the process at once (safe: every durable step is atomic). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        fprintf(stderr, "sa-bridge run: cannot install signal handlers: %s\n", strerror(errno));
        goto done;
    }

    /* every waiting long poll holds a socket: take the file descriptors the
     * system allows (the soft limit is often 1024, the hard one far more) */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    log_ctx lc = {cfg.log_level, cfg.progress, 0};
    log_secret_conninfo(cfg.pg);
    char msg[256];
    snprintf(msg, sizeof msg, "sa-bridge %s starting (data %.100s, slot %s, durability %s)",
             SA_VERSION, cfg.data, cfg.slot, sa_durability_name(cfg.durability));
    log_line(&lc, 2, msg);
    sa_err_clear(&err);
    rc = ingest_run(&cfg, &stop_requested, log_line, &lc, &err);
    if (rc != 0) {
        log_line(&lc, 0, err.msg[0] != '\0' ? err.msg : sa_err_str(rc));
        status = EXIT_RUNTIME;
    } else {
        log_line(&lc, 2, "stopped cleanly");
        status = 0;
    }
done:
    cfg_free(&cfg);
    return status;
}

/* ====================================================================== */
/* Flags of the admin commands                                            */
/* ====================================================================== */

typedef struct flag {
    const char *name; /* without "--" */
    const char *arg;  /* NULL for a switch */
    const char *help;
    const char *value; /* set by parse_flags: the value, or "" for a switch */
} flag;

/*
 * Strict: --name VALUE / --name=VALUE / --switch; unknown, duplicate or
 * positional arguments are errors.  --help / -h set *help.  Returns 0, or
 * EXIT_USAGE after printing why.
 */
static int parse_flags(const char *cmd, int argc, char **argv, flag *flags, size_t n, int *help)
{
    *help = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            return 0;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "sa-bridge %s: unexpected argument '%s' (see sa-bridge %s --help)\n",
                    cmd, a, cmd);
            return EXIT_USAGE;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        flag *fl = NULL;
        for (size_t k = 0; k < n; k++)
            if (strlen(flags[k].name) == nlen && strncmp(flags[k].name, name, nlen) == 0)
                fl = &flags[k];
        if (fl == NULL) {
            fprintf(stderr, "sa-bridge %s: unknown option '%s' (see sa-bridge %s --help)\n", cmd, a,
                    cmd);
            return EXIT_USAGE;
        }
        if (fl->value != NULL) {
            fprintf(stderr, "sa-bridge %s: option '--%s' given twice\n", cmd, fl->name);
            return EXIT_USAGE;
        }
        if (fl->arg == NULL) {
            if (eq != NULL) {
                fprintf(stderr, "sa-bridge %s: option '--%s' takes no value\n", cmd, fl->name);
                return EXIT_USAGE;
            }
            fl->value = "";
        } else if (eq != NULL) {
            fl->value = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            fl->value = argv[++i];
        } else {
            fprintf(stderr, "sa-bridge %s: option '--%s' needs a value (%s)\n", cmd, fl->name,
                    fl->arg);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static void flags_usage(FILE *f, const char *synopsis, const char *about, const flag *flags,
                        size_t n)
{
    fprintf(f, "usage: %s\n\n", synopsis);
    wrap(f, 0, about);
    fprintf(f, "\noptions:\n");
    for (size_t k = 0; k < n; k++) {
        fprintf(f, "  --%s%s%s\n", flags[k].name, flags[k].arg != NULL ? " " : "",
                flags[k].arg != NULL ? flags[k].arg : "");
        wrap(f, 6, flags[k].help);
    }
}

/* Strict unsigned decimal for --from / --limit. */
static int parse_u64(const char *cmd, const char *name, const char *s, uint64_t *out)
{
    int ok = s[0] != '\0';
    for (const char *p = s; *p != '\0'; p++)
        ok = ok && *p >= '0' && *p <= '9';
    errno = 0;
    unsigned long long v = ok ? strtoull(s, NULL, 10) : 0;
    if (!ok || errno == ERANGE) {
        fprintf(stderr, "sa-bridge %s: --%s: '%s' is not a whole number\n", cmd, name, s);
        return EXIT_USAGE;
    }
    *out = v;
    return 0;
}

/* ====================================================================== */
/* wal                                                                    */
/* ====================================================================== */

static int cmd_wal(int argc, char **argv)
{
    flag flags[] = {
        {"data", "DIR", "Data directory of the bridge (its store is DIR/store). Required.", NULL},
        {"from", "SEQ", "Start at this WAL seq (default: the oldest retained).", NULL},
        {"limit", "N", "Print at most N ops (default: all).", NULL},
        {"json", NULL,
         "One JSON object a line: the op's wire form with \"seq\" (the WAL seq), \"origin\", "
         "\"kind\", \"table\", \"key\", \"cols\", \"commit_lsn\" (X/X), \"xid\", "
         "\"commit_time\" (microseconds since 1970) and \"group_end\" (last op of its "
         "transaction).",
         NULL},
        {"help", NULL, "Show this help and exit.", NULL},
    };
    enum { F_DATA, F_FROM, F_LIMIT, F_JSON, F_N = sizeof flags / sizeof flags[0] };
    int help;
    int status = parse_flags("wal", argc, argv, flags, F_N, &help);
    if (status != 0)
        return status;
    if (help) {
        flags_usage(stdout, "sa-bridge wal --data DIR [--from SEQ] [--limit N] [--json]",
                    "Print the ops of the bridge's WAL, oldest first, one a line: "
                    "\"SEQ KIND TABLE key={...} cols={...}\" followed by the commit LSN and xid "
                    "of ops from PostgreSQL and \"end\" on the last op of each transaction. "
                    "Opens the store read-only: safe while the bridge runs (it shows what was "
                    "committed when it started). Exit status: 0 done, 1 error, 64 usage error.",
                    flags, F_N);
        return finish_stdout();
    }
    uint64_t from = 0, limit = 0;
    if (flags[F_DATA].value == NULL || flags[F_DATA].value[0] == '\0') {
        fprintf(stderr, "sa-bridge wal: --data is required (see sa-bridge wal --help)\n");
        return EXIT_USAGE;
    }
    if ((flags[F_FROM].value != NULL &&
         parse_u64("wal", "from", flags[F_FROM].value, &from) != 0) ||
        (flags[F_LIMIT].value != NULL &&
         parse_u64("wal", "limit", flags[F_LIMIT].value, &limit) != 0))
        return EXIT_USAGE;
    sa_err err;
    int rc =
        cli_wal_print(flags[F_DATA].value, from, limit, flags[F_JSON].value != NULL, stdout, &err);
    status = finish_stdout();
    if (rc != 0) {
        fprintf(stderr, "sa-bridge wal: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    return status;
}

/* ====================================================================== */
/* drop-slot                                                              */
/* ====================================================================== */

static int cmd_drop_slot(int argc, char **argv)
{
    flag flags[] = {
        {"pg", "CONNINFO",
         "PostgreSQL connection (libpq key=value string or postgresql:// URI); without it the "
         "PG* environment variables are used.",
         NULL},
        {"data", "DIR",
         "Drop the slot the bridge recorded in this data directory (read-only open: the "
         "bridge may run, but a running bridge holds its slot, which cannot then be dropped).",
         NULL},
        {"slot", "NAME", "Drop the slot of this name (wins over --data).", NULL},
        {"help", NULL, "Show this help and exit.", NULL},
    };
    enum { F_PG, F_DATA, F_SLOT, F_N = sizeof flags / sizeof flags[0] };
    int help;
    int status = parse_flags("drop-slot", argc, argv, flags, F_N, &help);
    if (status != 0)
        return status;
    if (help) {
        flags_usage(stdout, "sa-bridge drop-slot [--pg CONNINFO] (--slot NAME | --data DIR)",
                    "Drop a logical replication slot: the one named by --slot, or the one the "
                    "bridge created and recorded in its data directory. Nothing else is ever "
                    "dropped: with neither, or when the directory records no slot, it is an "
                    "error. The publication and the bridge's data stay as they are. A bridge "
                    "that starts again afterwards finds its slot gone and rebuilds from a "
                    "fresh initial sync. Exit status: 0 dropped, 1 error, 64 usage error.",
                    flags, F_N);
        return finish_stdout();
    }
    const char *slot = flags[F_SLOT].value;
    char recorded[REPL_NAME_MAX + 1];
    sa_err err;
    if (slot == NULL && flags[F_DATA].value == NULL) {
        fprintf(stderr, "sa-bridge drop-slot: name the slot with --slot NAME, or give --data DIR "
                        "to drop the slot the bridge recorded there\n");
        return EXIT_USAGE;
    }
    if (slot != NULL && repl_slot_name_check(slot, &err) != 0) {
        fprintf(stderr, "sa-bridge drop-slot: --slot: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (slot == NULL) {
        if (cli_recorded_slot(flags[F_DATA].value, recorded, &err) != 0) {
            fprintf(stderr, "sa-bridge drop-slot: %s%s\n", err.msg,
                    err.code == SA_ENOTFOUND ? "; name the slot with --slot NAME" : "");
            return EXIT_RUNTIME;
        }
        slot = recorded;
    }
    const char *pg = flags[F_PG].value != NULL ? flags[F_PG].value : "";
    if (cli_drop_slot(pg, slot, &err) != 0) {
        fprintf(stderr, "sa-bridge drop-slot: cannot drop replication slot \"%s\": %s\n", slot,
                err.msg);
        return EXIT_RUNTIME;
    }
    printf("dropped replication slot \"%s\"\n", slot);
    return finish_stdout();
}

/* ====================================================================== */
/* status                                                                 */
/* ====================================================================== */

typedef struct fetch_buf {
    char *data;
    size_t len;
} fetch_buf;

static size_t fetch_write(char *p, size_t sz, size_t n, void *ctx)
{
    fetch_buf *b = ctx;
    size_t add = sz * n;
    if (b->len + add > (16u << 20))
        return 0; /* a status is small: refuse anything huge */
    char *d = realloc(b->data, b->len + add + 1);
    if (d == NULL)
        return 0;
    memcpy(d + b->len, p, add);
    b->len += add;
    d[b->len] = '\0';
    b->data = d;
    return add;
}

/* "X/X", as PostgreSQL writes an LSN. */
static const char *lsn_text(json_int_t v, char *buf, size_t cap)
{
    uint64_t u = (uint64_t)v;
    snprintf(buf, cap, "%X/%X", (unsigned)(u >> 32), (unsigned)u);
    return buf;
}

static json_int_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static void status_print(const json_t *st)
{
    const json_t *repl = json_object_get(st, "replication"), *wal = json_object_get(st, "wal"),
                 *inbox = json_object_get(st, "inbox"), *parts = json_object_get(st, "parts");
    int healthy = json_is_true(json_object_get(st, "healthy"));
    printf("sa-bridge %s, instance %s: %s\n", json_string_value(json_object_get(st, "version")),
           json_string_value(json_object_get(st, "instance")), healthy ? "healthy" : "UNHEALTHY");
    static const char *const names[] = {"replication", "applier", "storage"};
    char l1[32], l2[32], l3[32];
    for (size_t i = 0; i < 3; i++) {
        const json_t *p = json_object_get(parts, names[i]);
        int ok = json_is_true(json_object_get(p, "ok"));
        printf("  %-12s %-4s", names[i], ok ? "ok" : "FAIL");
        if (!ok)
            printf("  %s", json_string_value(json_object_get(p, "reason")));
        else if (i == 0)
            printf("  lag %lld bytes, %.1f s; server %s, durable %s, confirmed %s",
                   (long long)jint(repl, "lag_bytes"),
                   json_number_value(json_object_get(repl, "lag_seconds")),
                   lsn_text(jint(repl, "server_lsn"), l1, sizeof l1),
                   lsn_text(jint(repl, "durable_lsn"), l2, sizeof l2),
                   lsn_text(jint(repl, "confirmed_lsn"), l3, sizeof l3));
        else if (i == 2)
            printf("  WAL %lld..%lld, %.1f MB", (long long)jint(wal, "first"),
                   (long long)jint(wal, "head"), (double)jint(wal, "bytes") / 1e6);
        printf("\n");
    }
    printf("  %-12s %lld ops (%lld bytes) waiting for PostgreSQL\n", "inbox",
           (long long)jint(inbox, "ops"), (long long)jint(inbox, "bytes"));
    const json_t *peers = json_object_get(st, "peers");
    printf("  peers: %zu\n", json_array_size(peers));
    if (json_array_size(peers) > 0)
        printf("    %-24s %12s %10s %14s\n", "PEER", "ACKED", "QUEUE", "LAST CONTACT");
    size_t i;
    const json_t *p;
    json_array_foreach(peers, i, p)
    {
        char seen[32] = "never";
        const json_t *lc = json_object_get(p, "last_contact_s");
        if (lc != NULL)
            snprintf(seen, sizeof seen, "%.1f s ago", json_number_value(lc));
        printf("    %-24s %12lld %10lld %14s\n", json_string_value(json_object_get(p, "peer")),
               (long long)jint(p, "acked"), (long long)jint(p, "queue_depth"), seen);
    }
}

static int cmd_status(int argc, char **argv)
{
    flag flags[] = {
        {"url", "URL",
         "The running bridge's HTTP API, e.g. http://127.0.0.1:8433 (the default, unless "
         "--data is given).",
         NULL},
        {"data", "DIR",
         "The running bridge's data directory: its API address is read from DIR/api.url, "
         "which sa-bridge run writes at start.",
         NULL},
        {"json", NULL, "Print the status as one JSON object (GET /v1/status) instead of text.",
         NULL},
        {"help", NULL, "Show this help and exit.", NULL},
    };
    enum { F_URL, F_DATA, F_JSON, F_N = sizeof flags / sizeof flags[0] };
    int help;
    int status = parse_flags("status", argc, argv, flags, F_N, &help);
    if (status != 0)
        return status;
    if (help) {
        flags_usage(stdout, "sa-bridge status [--url URL | --data DIR] [--json]",
                    "Show a running bridge at a glance: health of the replication connection, "
                    "the applier and the storage (with the reason when failing), replication lag "
                    "and LSNs, the WAL's retained range and size, the inbox, and per peer the "
                    "acknowledged seq, queue depth and last contact. The same figures as "
                    "/metrics, from GET /v1/status. Exit status: 0 healthy, 1 unhealthy or an "
                    "error, 2 the bridge is not reachable, 64 usage error.",
                    flags, F_N);
        return finish_stdout();
    }
    if (flags[F_URL].value != NULL && flags[F_DATA].value != NULL) {
        fprintf(stderr, "sa-bridge status: give --url or --data, not both\n");
        return EXIT_USAGE;
    }
    char url[600];
    if (flags[F_DATA].value != NULL) {
        char path[4200];
        snprintf(path, sizeof path, "%s/api.url", flags[F_DATA].value);
        FILE *f = fopen(path, "r");
        if (f == NULL || fgets(url, 512, f) == NULL) {
            fprintf(stderr, "sa-bridge status: cannot read %s (%s): is a bridge running with "
                            "--data %s?\n", path, f == NULL ? strerror(errno) : "empty",
                    flags[F_DATA].value);
            if (f != NULL)
                fclose(f);
            return EXIT_UNAVAILABLE;
        }
        fclose(f);
        url[strcspn(url, "\r\n")] = '\0';
    } else {
        snprintf(url, 512, "%s",
                 flags[F_URL].value != NULL ? flags[F_URL].value : "http://127.0.0.1:8433");
    }
    size_t ul = strlen(url);
    while (ul > 0 && url[ul - 1] == '/')
        url[--ul] = '\0';
    snprintf(url + ul, sizeof url - ul, "/v1/status");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "sa-bridge status: cannot initialise libcurl\n");
        return EXIT_RUNTIME;
    }
    CURL *c = curl_easy_init();
    fetch_buf b = {0};
    long code = 0;
    CURLcode cc = CURLE_FAILED_INIT;
    if (c != NULL) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fetch_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        cc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
    }
    curl_global_cleanup();
    url[ul] = '\0';
    if (cc != CURLE_OK) {
        fprintf(stderr, "sa-bridge status: no bridge answers at %s: %s\n", url,
                curl_easy_strerror(cc));
        free(b.data);
        return EXIT_UNAVAILABLE;
    }
    json_error_t je;
    json_t *st = code == 200 && b.data != NULL ? json_loads(b.data, 0, &je) : NULL;
    if (!json_is_object(st)) {
        fprintf(stderr, "sa-bridge status: %s answered HTTP %ld without a status: is it a "
                        "sa-bridge?\n", url, code);
        json_decref(st);
        free(b.data);
        return EXIT_RUNTIME;
    }
    free(b.data);
    if (flags[F_JSON].value != NULL) {
        char *line = json_dumps(st, JSON_COMPACT);
        if (line != NULL)
            printf("%s\n", line);
        free(line);
    } else {
        status_print(st);
    }
    int healthy = json_is_true(json_object_get(st, "healthy"));
    json_decref(st);
    status = finish_stdout();
    return status != 0 ? status : healthy ? 0 : EXIT_RUNTIME;
}

/* ====================================================================== */
/* Dispatch                                                               */
/* ====================================================================== */

typedef struct command {
    const char *name;
    const char *summary;
    /* argv[0] is the command name.  NULL while the command is not built. */
    int (*fn)(int argc, char **argv);
    /* What the stub prints to stderr, after "sa-bridge: ", when fn is NULL. */
    const char *unavailable;
} command;

static const command commands[] = {
    {"run", "stream changes from PostgreSQL into the bridge's durable WAL", cmd_run, NULL},
    {"wal", "print the ops of the bridge's WAL (works while it runs)", cmd_wal, NULL},
    {"drop-slot", "drop the bridge's replication slot (recorded, or --slot NAME)", cmd_drop_slot,
     NULL},
    {"status", "show a running bridge's health, replication lag and per-peer progress",
     cmd_status, NULL},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: sa-bridge [--help | --version] <command> [arguments]\n"
               "\n"
               "Softadastra bridge: syncs a PostgreSQL database with edge replicas.\n"
               "\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s  %s%s\n", commands[i].name, commands[i].summary,
                commands[i].fn == NULL ? " (not yet available)" : "");
    fprintf(f, "\n'sa-bridge <command> --help' describes a command and its options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "help") == 0) {
        usage(stdout);
        return finish_stdout();
    }
    if (strcmp(arg, "--version") == 0) {
        printf("sa-bridge %s\n", SA_VERSION);
        return finish_stdout();
    }
    if (arg[0] == '-') {
        fprintf(stderr, "sa-bridge: unknown option '%s' (see sa-bridge --help)\n", arg);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(arg, commands[i].name) != 0)
            continue;
        if (commands[i].fn == NULL) {
            fprintf(stderr, "sa-bridge: %s\n", commands[i].unavailable);
            return EXIT_UNAVAILABLE;
        }
        return commands[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "sa-bridge: unknown command '%s' (see sa-bridge --help)\n", arg);
    return EXIT_USAGE;
}
