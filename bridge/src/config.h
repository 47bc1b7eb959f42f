/*
 * config.h — sa-bridge's settings: one struct, one function that sets every
 * default (cfg_defaults), and the parsers that fill it from a config file
 * and from command-line flags (flags win).  Unknown or duplicate keys are
 * errors naming the key; nothing is guessed.
 */
#ifndef SA_BRIDGE_CONFIG_H
#define SA_BRIDGE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"
#include "sa/sa_store.h"

#define CFG_MAX_TABLES 1024

typedef struct sa_bridge_config {
    char *pg;          /* libpq conninfo (URI or key=value); "" = PG* environment */
    char *data;        /* data directory: DIR/store (RocksDB), DIR/staging */
    char *slot;        /* replication slot name; default "softadastra" */
    char *publication; /* publication name; default "softadastra" */
    char *tables[CFG_MAX_TABLES]; /* synced tables, as given ("public.items", "items") */
    size_t ntables;
    sa_durability durability;      /* default SA_DUR_GROUP */
    uint32_t status_interval_ms;   /* standby status period; default 1000 */
    uint32_t dead_after_ms;        /* silent connection replaced after; default 30000 */
    uint32_t retry_base_ms;        /* reconnect backoff base; default 200 */
    uint32_t retry_cap_ms;         /* reconnect backoff cap; default 10000 */
    uint32_t txn_memory_kb;        /* a transaction beyond this is staged on disk; default 16384 */
    char *listen;                  /* HTTP API address "HOST:PORT", or "off"; default 127.0.0.1:8433 */
    uint32_t max_body_kb;          /* HTTP request body limit; default 8192 */
    uint32_t inbox_cap_mb;         /* pushes get 503 above this inbox size; default 256 */
    uint32_t wal_retention_s;      /* WAL kept for edges seen this recently; default 7 days */
    uint32_t wal_cap_mb;           /* WAL truncated beyond this size regardless; default 1024 */
    uint32_t max_conns;            /* HTTP connections at once; default 4096 */
    uint32_t max_conns_per_ip;     /* ... from one address; default 1024 */
    int progress;                  /* -1 auto (a terminal), 0 plain log lines, 1 progress line */
    int log_level;                 /* 0 error, 1 warn, 2 info (default), 3 debug */
    char *config_file;             /* the file the settings came from, if any */
} sa_bridge_config;

/* Every default, in one place.  cfg is caller-allocated; strings are owned
 * by cfg afterwards (cfg_free). */
int cfg_defaults(sa_bridge_config *cfg, sa_err *err);
void cfg_free(sa_bridge_config *cfg);

/* Read "key = value" lines (# comments, blank lines) from path; keys are the
 * long flag names without "--" (pg, data, slot, publication, tables,
 * durability, ...).  Unknown or duplicate keys, bad values: error naming the
 * file, line and key. */
int cfg_load_file(sa_bridge_config *cfg, const char *path, sa_err *err);

/* Parse `sa-bridge run` flags (argv[0] is "run").  Precedence, lowest
 * first: defaults, the config file (--config FILE wherever it appears, else
 * $SA_BRIDGE_CONFIG), the environment (cfg_load_env with getenv), the
 * flags.  --help sets *help. */
int cfg_parse_run_args(sa_bridge_config *cfg, int argc, char **argv, int *help, sa_err *err);

/* The environment variable of a config key: "SA_BRIDGE_" + the key in
 * upper case with '-' as '_' (log-level: SA_BRIDGE_LOG_LEVEL).  -1 if it
 * does not fit cap. */
int cfg_env_name(const char *option, char *buf, size_t cap);
/* Apply every config-file key whose variable get() returns non-empty
 * (get: getenv, or a test's lookup).  A bad value: error naming the
 * variable and the problem. */
int cfg_load_env(sa_bridge_config *cfg, const char *(*get)(const char *name), sa_err *err);

/* Comma-separated table list into cfg->tables (replacing it). */
int cfg_set_tables(sa_bridge_config *cfg, const char *list, sa_err *err);

/* --- additions ------------------------------------------------------------ */

/* The largest config file cfg_load_file reads (a config is a few lines). */
#define CFG_FILE_MAX (1u << 20)
/* The longest table name cfg_set_tables accepts, in bytes. */
#define CFG_TABLE_NAME_MAX 255

/*
 * Parse config-file text (what cfg_load_file reads), without I/O.  `name`
 * (borrowed) is the file name used in messages ("NAME:LINE: ...").  The text
 * (borrowed, len bytes, need not be NUL-terminated) is:
 *
 *     # a comment: a line whose first non-blank character is '#'
 *     key = value            one setting a line; blanks around both trimmed
 *
 * The value is the rest of the line, taken literally (no quoting or inline
 * comments: a conninfo may hold '#' and a table list quotes).  Each key at
 * most once.  On error cfg may hold the settings of the lines before.
 */
int cfg_load_string(sa_bridge_config *cfg, const char *name, const char *text, size_t len,
                    sa_err *err);

/* One `sa-bridge run` option, as --help shows it (static data). */
typedef struct cfg_option {
    const char *name; /* long name without "--"; also the config-file key */
    const char *arg;  /* what the value is ("NAME", "MS"...); NULL for a switch */
    const char *help; /* one or more sentences, no newline */
    int in_file;      /* 1 if the key is accepted in a config file */
} cfg_option;

/* The i-th option in --help order, NULL past the last.  Static. */
const cfg_option *cfg_option_at(size_t i);

/* The current value of option `name` as text (what --help shows as the
 * default, given a cfg_defaults struct): "" for an empty string, "(none)"
 * for an unset one.  SA_ENOTFOUND for a switch or an unknown name. */
int cfg_format_value(const sa_bridge_config *cfg, const char *name, char *buf, size_t cap,
                     sa_err *err);

/* "error", "warn", "info", "debug" for 0..3; "?" otherwise.  Static. */
const char *cfg_log_level_name(int level);

#endif /* SA_BRIDGE_CONFIG_H */
