/*
 * config.c — sa-bridge's settings: every default set in cfg_defaults, one
 * table describing every option (name, value, help, range), and the two
 * strict parsers that fill the struct from it: a config file and the
 * `sa-bridge run` flags.  Nothing here prints; errors name the option (and
 * for a file, the file and line).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl.h"
#include "sa/sa_alloc.h"

/* ====================================================================== */
/* The option table                                                       */
/* ====================================================================== */

typedef enum opt_id {
    OPT_PG,
    OPT_DATA,
    OPT_SLOT,
    OPT_PUBLICATION,
    OPT_TABLES,
    OPT_CONFIG,
    OPT_DURABILITY,
    OPT_STATUS_INTERVAL,
    OPT_DEAD_AFTER,
    OPT_RETRY_BASE,
    OPT_RETRY_CAP,
    OPT_TXN_MEMORY,
    OPT_LISTEN,
    OPT_MAX_BODY,
    OPT_INBOX_CAP,
    OPT_WAL_RETENTION,
    OPT_WAL_CAP,
    OPT_MAX_CONNS,
    OPT_MAX_CONNS_IP,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_LOG_LEVEL,
    OPT_HELP,
    OPT_COUNT
} opt_id;

typedef struct opt_def {
    cfg_option doc;
    opt_id id;
    opt_id setting;    /* what duplicate detection counts: --progress and
                        * --no-progress set one setting */
    uint32_t min, max; /* numbers only */
    size_t off;        /* numbers only: offsetof the uint32_t in the config */
} opt_def;

#define NUM(field) offsetof(sa_bridge_config, field)

/* One option a block reads better than one field a line. */
/* clang-format off */
static const opt_def opt_defs[] = {
    {{"pg", "CONNINFO",
      "PostgreSQL connection: a libpq key=value string or a postgresql:// URI. Without it "
      "(or when empty) libpq takes every setting from the standard environment: PGHOST, "
      "PGPORT, PGDATABASE, PGUSER, PGPASSWORD (or ~/.pgpass), PGSSLMODE and the other PG* "
      "variables. The role needs REPLICATION (or superuser).",
      1},
     OPT_PG, OPT_PG, 0, 0, 0},
    {{"data", "DIR",
      "Data directory (required): the bridge's RocksDB store lives in DIR/store, large "
      "transactions are staged in DIR/staging. Created if missing.",
      1},
     OPT_DATA, OPT_DATA, 0, 0, 0},
    {{"slot", "NAME",
      "Logical replication slot the bridge creates or reuses: 1-63 characters from a-z, 0-9 "
      "and _. The bridge never drops it (see sa-bridge drop-slot).",
      1},
     OPT_SLOT, OPT_SLOT, 0, 0, 0},
    {{"publication", "NAME", "Publication of the synced tables, created or reused (1-63 bytes).",
      1},
     OPT_PUBLICATION, OPT_PUBLICATION, 0, 0, 0},
    {{"tables", "LIST",
      "Comma-separated tables to sync, e.g. public.items,orders,\"Mixed Case\": each name or "
      "schema.name, quoted as in SQL where needed, at most 1024. Each needs a primary key or "
      "REPLICA IDENTITY FULL. Default: the tables of softadastra.tables, when the softadastra "
      "extension is installed (softadastra.add_table), read at start.",
      1},
     OPT_TABLES, OPT_TABLES, 0, 0, 0},
    {{"config", "FILE",
      "Read settings from FILE first, wherever this flag appears; flags on the command line "
      "override them (format below).",
      0},
     OPT_CONFIG, OPT_CONFIG, 0, 0, 0},
    {{"durability", "sync|group|none-unsafe",
      "When a received transaction counts as durable (and is confirmed to PostgreSQL): sync "
      "fsyncs every commit; group shares one fsync among commits arriving together, as safe "
      "as sync; none-unsafe never fsyncs (tests only: a crash loses what PostgreSQL was told "
      "is safe).",
      1},
     OPT_DURABILITY, OPT_DURABILITY, 0, 0, 0},
    {{"status-interval-ms", "MS",
      "Send the server a standby status update at least this often, 100-600000; keep it well "
      "below the server's wal_sender_timeout.",
      1},
     OPT_STATUS_INTERVAL, OPT_STATUS_INTERVAL, 100, 600000, NUM(status_interval_ms)},
    {{"dead-after-ms", "MS",
      "Replace a replication connection silent for this long (a dead server or half-open TCP), "
      "1000-3600000; more than --status-interval-ms.",
      1},
     OPT_DEAD_AFTER, OPT_DEAD_AFTER, 1000, 3600000, NUM(dead_after_ms)},
    {{"retry-base-ms", "MS",
      "First delay before reconnecting, doubled with jitter after each failure, 1-600000.", 1},
     OPT_RETRY_BASE, OPT_RETRY_BASE, 1, 600000, NUM(retry_base_ms)},
    {{"retry-cap-ms", "MS",
      "Longest delay between reconnects, 1-3600000; at least --retry-base-ms.", 1},
     OPT_RETRY_CAP, OPT_RETRY_CAP, 1, 3600000, NUM(retry_cap_ms)},
    {{"txn-memory-kb", "KB",
      "A transaction larger than this is staged on disk instead of held in memory, "
      "64-16777216.",
      1},
     OPT_TXN_MEMORY, OPT_TXN_MEMORY, 64, 16777216, NUM(txn_memory_kb)},
    {{"listen", "HOST:PORT|off",
      "Serve the HTTP API v1 (edges pull and push) on this address; port 0 picks a free one, "
      "logged at start. off: no HTTP API. Default 127.0.0.1:8433.",
      1},
     OPT_LISTEN, OPT_LISTEN, 0, 0, 0},
    {{"max-body-kb", "KB",
      "Largest request body the HTTP API reads (a larger push gets 413), 1-1048576.", 1},
     OPT_MAX_BODY, OPT_MAX_BODY, 1, 1048576, NUM(max_body_kb)},
    {{"inbox-cap-mb", "MB",
      "Edges' pushes wait (503, Retry-After) while the inbox holds more than this, 1-1048576.",
      1},
     OPT_INBOX_CAP, OPT_INBOX_CAP, 1, 1048576, NUM(inbox_cap_mb)},
    {{"wal-retention-s", "S",
      "Keep the WAL an edge seen within this many seconds has not acknowledged yet; an edge "
      "silent longer must bootstrap again (409 must_resnapshot), 1-31536000.",
      1},
     OPT_WAL_RETENTION, OPT_WAL_RETENTION, 1, 31536000, NUM(wal_retention_s)},
    {{"wal-cap-mb", "MB",
      "Truncate the oldest WAL beyond this size even if an edge still needs it, 1-1048576.", 1},
     OPT_WAL_CAP, OPT_WAL_CAP, 1, 1048576, NUM(wal_cap_mb)},
    {{"max-connections", "N",
      "HTTP connections at once (each waiting long poll holds one, but no thread), 1-1000000.",
      1},
     OPT_MAX_CONNS, OPT_MAX_CONNS, 1, 1000000, NUM(max_conns)},
    {{"max-connections-per-ip", "N",
      "HTTP connections at once from one address (edges behind one NAT share it), 1-1000000.",
      1},
     OPT_MAX_CONNS_IP, OPT_MAX_CONNS_IP, 1, 1000000, NUM(max_conns_per_ip)},
    {{"progress", NULL,
      "Show a progress line (rows, rows/s, tables, ETA) during the initial sync; by default "
      "only when standard error is a terminal. In a config file: progress = auto|on|off.",
      1},
     OPT_PROGRESS, OPT_PROGRESS, 0, 0, 0},
    {{"no-progress", NULL, "Plain log lines only, never a progress line.", 0},
     OPT_NO_PROGRESS, OPT_PROGRESS, 0, 0, 0},
    {{"log-level", "error|warn|info|debug", "Least severe messages written to standard error.", 1},
     OPT_LOG_LEVEL, OPT_LOG_LEVEL, 0, 0, 0},
    {{"help", NULL, "Show this help and exit.", 0}, OPT_HELP, OPT_HELP, 0, 0, 0},
};
/* clang-format on */

#define N_OPTS (sizeof opt_defs / sizeof opt_defs[0])

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

const cfg_option *cfg_option_at(size_t i)
{
    return i < N_OPTS ? &opt_defs[i].doc : NULL;
}

const char *cfg_log_level_name(int level)
{
    return level >= 0 && level <= 3 ? log_level_names[level] : "?";
}

/* The option named exactly name[0..len), or NULL. */
static const opt_def *opt_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strlen(opt_defs[i].doc.name) == len && memcmp(opt_defs[i].doc.name, name, len) == 0)
            return &opt_defs[i];
    return NULL;
}

/* ====================================================================== */
/* Defaults and lifetime                                                  */
/* ====================================================================== */

int cfg_defaults(sa_bridge_config *cfg, sa_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->pg = sa_strdup("");
    cfg->data = NULL; /* required: no default */
    cfg->slot = sa_strdup("softadastra");
    cfg->publication = sa_strdup("softadastra");
    cfg->ntables = 0;
    cfg->durability = SA_DUR_GROUP;
    cfg->status_interval_ms = 1000;
    cfg->dead_after_ms = 30000;
    cfg->retry_base_ms = 200;
    cfg->retry_cap_ms = 10000;
    cfg->txn_memory_kb = 16384;
    cfg->listen = sa_strdup("127.0.0.1:8433");
    cfg->max_body_kb = 8192;
    cfg->inbox_cap_mb = 256;
    cfg->wal_retention_s = 7 * 24 * 3600;
    cfg->wal_cap_mb = 1024;
    cfg->max_conns = 4096;
    cfg->max_conns_per_ip = 1024;
    cfg->progress = -1;
    cfg->log_level = 2;
    cfg->config_file = NULL;
    if (cfg->pg == NULL || cfg->slot == NULL || cfg->publication == NULL || cfg->listen == NULL) {
        cfg_free(cfg);
        return sa_err_set(err, SA_ENOMEM, "out of memory setting defaults");
    }
    return 0;
}

void cfg_free(sa_bridge_config *cfg)
{
    if (cfg == NULL)
        return;
    sa_free(cfg->pg);
    sa_free(cfg->data);
    sa_free(cfg->slot);
    sa_free(cfg->publication);
    sa_free(cfg->listen);
    for (size_t i = 0; i < cfg->ntables; i++)
        sa_free(cfg->tables[i]);
    sa_free(cfg->config_file);
    memset(cfg, 0, sizeof *cfg);
}

/* Replace *slot (owned) with a copy of value. */
static int set_str(char **slot, const char *value, sa_err *err)
{
    char *copy = sa_strdup(value);
    if (copy == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    sa_free(*slot);
    *slot = copy;
    return 0;
}

/* ====================================================================== */
/* Values                                                                 */
/* ====================================================================== */

/* Strict unsigned decimal: digits only (no sign, blank or suffix). */
static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out, sa_err *err)
{
    if (s[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "empty value (expected a whole number %u-%u)", min, max);
    for (const char *p = s; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return sa_err_set(err, SA_EINVAL, "'%.40s' is not a whole number (expected %u-%u)", s,
                              min, max);
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE || *end != '\0' || v < min || v > max)
        return sa_err_set(err, SA_ERANGE, "%.40s is out of range (expected %u-%u)", s, min, max);
    *out = (uint32_t)v;
    return 0;
}

static int parse_progress(const char *s, int *out, sa_err *err)
{
    static const struct {
        const char *name;
        int val;
    } names[] = {{"auto", -1}, {"on", 1}, {"yes", 1},  {"true", 1},
                 {"off", 0},   {"no", 0}, {"false", 0}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].val;
            return 0;
        }
    }
    return sa_err_set(err, SA_EINVAL, "unknown value '%.40s' (expected auto, on or off)", s);
}

static int parse_log_level(const char *s, int *out, sa_err *err)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, log_level_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return sa_err_set(err, SA_EINVAL, "unknown level '%.40s' (expected error, warn, info or debug)",
                      s);
}

/*
 * Apply one setting.  value is the text given (NULL for a switch).  Errors
 * carry the bare problem; the caller says where (flag or file:line).
 */
static int opt_apply(sa_bridge_config *cfg, const opt_def *d, const char *value, sa_err *err)
{
    int rc = 0;
    switch (d->id) {
    case OPT_PG:
        rc = set_str(&cfg->pg, value, err);
        break;
    case OPT_DATA:
        if (value[0] == '\0')
            return sa_err_set(err, SA_EINVAL, "the data directory must not be empty");
        rc = set_str(&cfg->data, value, err);
        break;
    case OPT_SLOT:
        if ((rc = repl_slot_name_check(value, err)) == 0)
            rc = set_str(&cfg->slot, value, err);
        break;
    case OPT_PUBLICATION:
        if ((rc = repl_publication_name_check(value, err)) == 0)
            rc = set_str(&cfg->publication, value, err);
        break;
    case OPT_TABLES:
        rc = cfg_set_tables(cfg, value, err);
        break;
    case OPT_LISTEN: {
        const char *colon = strrchr(value, ':');
        char *end = NULL;
        long port = colon != NULL ? strtol(colon + 1, &end, 10) : -1;
        if (strcmp(value, "off") != 0 &&
            (colon == NULL || colon == value || colon[1] == '\0' || *end != '\0' || port < 0 ||
             port > 65535))
            return sa_err_set(err, SA_EINVAL, "listen address '%.80s' is not HOST:PORT or off",
                              value);
        rc = set_str(&cfg->listen, value, err);
        break;
    }
    case OPT_DURABILITY: {
        /* sa_durability_parse also takes "none"; here the unsafe policy must
         * be asked for by its full name. */
        sa_durability dur = SA_DUR_SYNC;
        if (strcmp(value, "none") == 0 || sa_durability_parse(value, &dur, NULL) != 0)
            return sa_err_set(err, SA_EINVAL,
                              "unknown policy '%.40s' (expected sync, group or none-unsafe)",
                              value);
        cfg->durability = dur;
        break;
    }
    case OPT_STATUS_INTERVAL:
    case OPT_DEAD_AFTER:
    case OPT_RETRY_BASE:
    case OPT_RETRY_CAP:
    case OPT_TXN_MEMORY:
    case OPT_MAX_BODY:
    case OPT_INBOX_CAP:
    case OPT_WAL_RETENTION:
    case OPT_WAL_CAP:
    case OPT_MAX_CONNS:
    case OPT_MAX_CONNS_IP: {
        uint32_t v = 0;
        if ((rc = parse_u32(value, d->min, d->max, &v, err)) == 0)
            *(uint32_t *)(void *)((char *)cfg + d->off) = v;
        break;
    }
    case OPT_PROGRESS:
        if (value == NULL)
            cfg->progress = 1;
        else
            rc = parse_progress(value, &cfg->progress, err);
        break;
    case OPT_NO_PROGRESS:
        cfg->progress = 0;
        break;
    case OPT_LOG_LEVEL:
        rc = parse_log_level(value, &cfg->log_level, err);
        break;
    case OPT_CONFIG:
    case OPT_HELP:
    case OPT_COUNT:
        /* handled by the callers */
        break;
    }
    return rc;
}

/* Relations between settings, checked once everything is read. */
static int cfg_check(const sa_bridge_config *cfg, sa_err *err)
{
    if (cfg->data == NULL || cfg->data[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "--data is required");
    if (cfg->retry_base_ms > cfg->retry_cap_ms)
        return sa_err_set(err, SA_EINVAL, "retry-base-ms (%u) is larger than retry-cap-ms (%u)",
                          cfg->retry_base_ms, cfg->retry_cap_ms);
    if (cfg->dead_after_ms <= cfg->status_interval_ms)
        return sa_err_set(err, SA_EINVAL,
                          "dead-after-ms (%u) must be larger than status-interval-ms (%u)",
                          cfg->dead_after_ms, cfg->status_interval_ms);
    return 0;
}

int cfg_format_value(const sa_bridge_config *cfg, const char *name, char *buf, size_t cap,
                     sa_err *err)
{
    const opt_def *d = opt_find(name, strlen(name));
    if (d == NULL || cap == 0)
        return sa_err_set(err, SA_ENOTFOUND, "no option '%.40s'", name);
    const char *s = NULL;
    switch (d->id) {
    case OPT_PG:
        s = cfg->pg;
        break;
    case OPT_DATA:
        s = cfg->data;
        break;
    case OPT_SLOT:
        s = cfg->slot;
        break;
    case OPT_PUBLICATION:
        s = cfg->publication;
        break;
    case OPT_LISTEN:
        s = cfg->listen;
        break;
    case OPT_CONFIG:
        s = cfg->config_file;
        break;
    case OPT_TABLES: {
        size_t used = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < cfg->ntables && used < cap; i++)
            used +=
                (size_t)snprintf(buf + used, cap - used, "%s%s", i > 0 ? "," : "", cfg->tables[i]);
        if (cfg->ntables == 0)
            snprintf(buf, cap, "(none)");
        return 0;
    }
    case OPT_DURABILITY:
        s = sa_durability_name(cfg->durability);
        break;
    case OPT_STATUS_INTERVAL:
    case OPT_DEAD_AFTER:
    case OPT_RETRY_BASE:
    case OPT_RETRY_CAP:
    case OPT_TXN_MEMORY:
    case OPT_MAX_BODY:
    case OPT_INBOX_CAP:
    case OPT_WAL_RETENTION:
    case OPT_WAL_CAP:
    case OPT_MAX_CONNS:
    case OPT_MAX_CONNS_IP:
        snprintf(buf, cap, "%u", *(const uint32_t *)(const void *)((const char *)cfg + d->off));
        return 0;
    case OPT_PROGRESS:
        s = cfg->progress < 0 ? "auto" : cfg->progress ? "on" : "off";
        break;
    case OPT_LOG_LEVEL:
        s = cfg_log_level_name(cfg->log_level);
        break;
    case OPT_NO_PROGRESS:
    case OPT_HELP:
    case OPT_COUNT:
        return sa_err_set(err, SA_ENOTFOUND, "option '%s' has no value", name);
    }
    snprintf(buf, cap, "%s", s == NULL ? "(none)" : s);
    return 0;
}

/* ====================================================================== */
/* Table lists                                                            */
/* ====================================================================== */

static int ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int ident_char(unsigned char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/*
 * Loose SQL name check: one or two parts joined by '.', each an unquoted
 * identifier or a non-empty "quoted" one ("" inside stands for a quote).
 * PostgreSQL resolves the name later (to_regclass); this only keeps out
 * what can never be a table name.  Returns 1 if it looks like one.
 */
static int table_name_ok(const char *s, size_t len)
{
    size_t i = 0;
    for (int part = 0; part < 2; part++) {
        if (i < len && s[i] == '"') {
            size_t start = ++i;
            for (;;) {
                if (i >= len)
                    return 0; /* unterminated */
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i++;
            }
            if (i == start)
                return 0; /* "" */
            i++;
        } else {
            if (i >= len || !ident_start((unsigned char)s[i]))
                return 0;
            while (i < len && ident_char((unsigned char)s[i]))
                i++;
        }
        if (i == len)
            return 1;
        if (s[i] != '.' || part == 1)
            return 0;
        i++;
    }
    return 0;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int cfg_set_tables(sa_bridge_config *cfg, const char *list, sa_err *err)
{
    char *names[CFG_MAX_TABLES];
    size_t n = 0;
    int rc = 0;
    const char *p = list;
    for (;;) {
        /* One entry: up to a comma outside double quotes. */
        const char *start = p;
        int quoted = 0;
        while (*p != '\0' && (quoted || *p != ',')) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        const char *end = p;
        while (start < end && is_blank(*start))
            start++;
        while (end > start && is_blank(end[-1]))
            end--;
        size_t len = (size_t)(end - start);
        if (len == 0) {
            rc = sa_err_set(err, SA_EINVAL, "table list '%.80s' has an empty entry (number %zu)",
                            list, n + 1);
            goto done;
        }
        if (n == CFG_MAX_TABLES) {
            rc = sa_err_set(err, SA_ETOOBIG, "more than %d tables listed", CFG_MAX_TABLES);
            goto done;
        }
        if (len > CFG_TABLE_NAME_MAX) {
            rc = sa_err_set(err, SA_ETOOBIG, "table name '%.40s...' is %zu bytes, at most %d",
                            start, len, CFG_TABLE_NAME_MAX);
            goto done;
        }
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)start[i];
            if (c < 0x20 || c == 0x7f) {
                rc = sa_err_set(err, SA_EINVAL,
                                "table name number %zu contains a control character (byte 0x%02x)",
                                n + 1, c);
                goto done;
            }
        }
        if (!table_name_ok(start, len)) {
            rc = sa_err_set(err, SA_EINVAL,
                            "'%.*s' is not a table name (expected name or schema.name, each an "
                            "identifier, \"quoted\" where needed)",
                            (int)len, start);
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            if (strlen(names[i]) == len && memcmp(names[i], start, len) == 0) {
                rc = sa_err_set(err, SA_EINVAL, "table '%.*s' is listed twice", (int)len, start);
                goto done;
            }
        }
        if ((names[n] = sa_strndup(start, len)) == NULL) {
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            goto done;
        }
        n++;
        if (*p == '\0')
            break;
        p++; /* the comma */
    }
    /* Success: replace the old list. */
    for (size_t i = 0; i < cfg->ntables; i++)
        sa_free(cfg->tables[i]);
    memcpy(cfg->tables, names, n * sizeof names[0]);
    cfg->ntables = n;
    n = 0;
done:
    for (size_t i = 0; i < n; i++)
        sa_free(names[i]);
    return rc;
}

/* ====================================================================== */
/* Config files                                                           */
/* ====================================================================== */

static char *trim(char *s)
{
    while (is_blank(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && (is_blank(s[n - 1]) || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int cfg_load_string(sa_bridge_config *cfg, const char *name, const char *text, size_t len,
                    sa_err *err)
{
    unsigned seen[OPT_COUNT] = {0}; /* line where each setting was set */
    int rc = 0;
    if (memchr(text, '\0', len) != NULL)
        return sa_err_set(err, SA_EINVAL, "%s: contains a NUL byte: not a config file", name);
    char *copy = sa_strndup(text, len);
    if (copy == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory reading %s", name);
    char *next = copy;
    for (unsigned lineno = 1; next != NULL; lineno++) {
        char *line = next;
        char *nl = strchr(line, '\n');
        next = nl != NULL ? nl + 1 : NULL;
        if (nl != NULL)
            *nl = '\0';
        line = trim(line);
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            rc = sa_err_set(err, SA_EINVAL, "%s:%u: expected 'key = value', got '%.60s'", name,
                            lineno, line);
            goto done;
        }
        *eq = '\0';
        char *key = trim(line);
        char *value = trim(eq + 1);
        if (key[0] == '\0') {
            rc = sa_err_set(err, SA_EINVAL, "%s:%u: missing key before '='", name, lineno);
            goto done;
        }
        const opt_def *d = opt_find(key, strlen(key));
        if (d == NULL) {
            rc = sa_err_set(err, SA_EINVAL, "%s:%u: unknown key '%.60s'", name, lineno, key);
            goto done;
        }
        if (!d->doc.in_file) {
            rc = sa_err_set(err, SA_EINVAL, "%s:%u: key '%s' is not allowed in a config file", name,
                            lineno, key);
            goto done;
        }
        if (value[0] == '\0') {
            rc = sa_err_set(err, SA_EINVAL, "%s:%u: key '%s' has no value", name, lineno, key);
            goto done;
        }
        if (seen[d->setting] != 0) {
            rc = sa_err_set(err, SA_EINVAL, "%s:%u: duplicate key '%s' (first set on line %u)",
                            name, lineno, key, seen[d->setting]);
            goto done;
        }
        seen[d->setting] = lineno;
        if ((rc = opt_apply(cfg, d, value, err)) != 0) {
            sa_err_wrap(err, "%s:%u: key '%s'", name, lineno, key);
            goto done;
        }
    }
done:
    sa_free(copy);
    return rc;
}

int cfg_load_file(sa_bridge_config *cfg, const char *path, sa_err *err)
{
    int rc = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        return sa_err_set(err, e == ENOENT ? SA_ENOTFOUND : SA_EIO,
                          "cannot open config file '%s': %s", path, strerror(e));
    }
    if ((buf = sa_malloc(CFG_FILE_MAX + 1)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory reading '%s'", path);
        goto done;
    }
    size_t n = fread(buf, 1, CFG_FILE_MAX + 1, f);
    if (ferror(f)) {
        rc = sa_err_set(err, SA_EIO, "cannot read config file '%s': %s", path, strerror(errno));
        goto done;
    }
    if (n > CFG_FILE_MAX) {
        rc = sa_err_set(err, SA_ETOOBIG, "config file '%s' is larger than %u bytes", path,
                        CFG_FILE_MAX);
        goto done;
    }
    if ((rc = cfg_load_string(cfg, path, buf, n, err)) != 0)
        goto done;
    rc = set_str(&cfg->config_file, path, err);
done:
    sa_free(buf);
    fclose(f);
    return rc;
}

/* ====================================================================== */
/* Command-line flags                                                     */
/* ====================================================================== */

/*
 * Take the flag at argv[*i]: its definition and value (NULL for a switch),
 * advancing *i past what it used.  "--name=value" and "--name value" both
 * work for options taking a value; a switch takes none.
 */
static int next_flag(int argc, char **argv, int *i, const opt_def **def, const char **value,
                     sa_err *err)
{
    const char *arg = argv[*i];
    if (strcmp(arg, "-h") == 0)
        arg = "--help";
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        if (arg[0] == '-')
            return sa_err_set(err, SA_EINVAL, "unknown option '%.60s'", arg);
        return sa_err_set(err, SA_EINVAL, "unexpected argument '%.60s'", arg);
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
    const opt_def *d = opt_find(name, nlen);
    if (d == NULL)
        return sa_err_set(err, SA_EINVAL, "unknown option '--%.*s'", (int)(nlen > 60 ? 60 : nlen),
                          name);
    if (d->doc.arg == NULL) {
        if (eq != NULL)
            return sa_err_set(err, SA_EINVAL, "option '--%s' takes no value", d->doc.name);
        *value = NULL;
    } else if (eq != NULL) {
        *value = eq + 1;
    } else {
        if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
            return sa_err_set(err, SA_EINVAL, "option '--%s' needs a value (%s)", d->doc.name,
                              d->doc.arg);
        *value = argv[++*i];
    }
    ++*i;
    *def = d;
    return 0;
}

int cfg_env_name(const char *option, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "SA_BRIDGE_%s", option);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    for (char *p = buf; *p; p++)
        *p = *p == '-' ? '_' : (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
    return 0;
}

int cfg_load_env(sa_bridge_config *cfg, const char *(*get)(const char *name), sa_err *err)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_defs[i];
        if (!d->doc.in_file)
            continue;
        char name[64];
        if (cfg_env_name(d->doc.name, name, sizeof name) != 0)
            continue;
        const char *value = get(name);
        if (value == NULL || value[0] == '\0')
            continue;
        int rc = opt_apply(cfg, d, value, err);
        if (rc != 0)
            return sa_err_wrap(err, "environment variable %s", name);
    }
    return 0;
}

static const char *env_get(const char *name) { return getenv(name); }

int cfg_parse_run_args(sa_bridge_config *cfg, int argc, char **argv, int *help, sa_err *err)
{
    int rc = 0;
    const opt_def *d;
    const char *value;
    const char *config = NULL;

    /* Pass 1: --help and --config, wherever they are.  A malformed flag
     * ends the pass; pass 2 reports it (unless --help came first). */
    for (int i = 1; i < argc;) {
        if (next_flag(argc, argv, &i, &d, &value, NULL) != 0)
            break;
        if (d->id == OPT_HELP) {
            *help = 1;
            return 0;
        }
        if (d->id == OPT_CONFIG) {
            if (config != NULL)
                return sa_err_set(err, SA_EINVAL, "option '--config' given twice");
            if (value[0] == '\0')
                return sa_err_set(err, SA_EINVAL, "option '--config' needs a file name");
            config = value;
        }
    }
    *help = 0;
    if (config == NULL && getenv("SA_BRIDGE_CONFIG") != NULL && getenv("SA_BRIDGE_CONFIG")[0] != '\0')
        config = getenv("SA_BRIDGE_CONFIG");
    if (config != NULL && (rc = cfg_load_file(cfg, config, err)) != 0)
        return rc;
    /* then the environment (SA_BRIDGE_<KEY>), then the flags */
    if ((rc = cfg_load_env(cfg, env_get, err)) != 0)
        return rc;

    /* Pass 2: every other flag, overriding the file. */
    int seen[OPT_COUNT] = {0};
    for (int i = 1; i < argc;) {
        if ((rc = next_flag(argc, argv, &i, &d, &value, err)) != 0)
            return rc;
        if (d->id == OPT_CONFIG)
            continue;
        if (seen[d->setting]) {
            const char *first = opt_defs[seen[d->setting] - 1].doc.name;
            if (strcmp(first, d->doc.name) == 0)
                return sa_err_set(err, SA_EINVAL, "option '--%s' given twice", d->doc.name);
            return sa_err_set(err, SA_EINVAL, "options '--%s' and '--%s' contradict each other",
                              first, d->doc.name);
        }
        seen[d->setting] = (int)(d - opt_defs) + 1;
        if ((rc = opt_apply(cfg, d, value, err)) != 0) {
            sa_err_wrap(err, "--%s", d->doc.name);
            return rc;
        }
    }
    return cfg_check(cfg, err);
}
