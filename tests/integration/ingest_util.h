/*
 * ingest_util.h — helpers for the ingest integration tests: run sa-bridge
 * as a real process, inspect its store read-only while it runs, wait for it
 * to catch up, and compare its state with a table row for row.
 * Header-only (static functions): each test binary is one file plus this.
 */
#ifndef SA_INGEST_UTIL_H
#define SA_INGEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg_harness.h"
#include "repl.h"
#include "sa/sa_alloc.h"
#include "sa/sa_store.h"

typedef struct it_bridge {
    pid_t pid;
    char data[1024];
    char log[1100];
} it_bridge;

static inline int64_t it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void it_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Path of the sa-bridge binary (ctest sets SA_BINARY_DIR). */
static inline const char *it_bridge_bin(void)
{
    static char path[1024];
    const char *b = getenv("SA_BINARY_DIR");
    snprintf(path, sizeof path, "%s/bridge/sa-bridge", b ? b : "build");
    return path;
}

/* A fresh data directory path under $SA_TEST_TMPDIR (not created). */
static inline void it_data_dir(char *out, size_t cap, const char *tag)
{
    const char *base = getenv("SA_TEST_TMPDIR");
    char tmpl[1024];
    snprintf(tmpl, sizeof tmpl, "%s/ingest-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
    if (base && base[0]) {
        char cmd[1100];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", base);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot create %s\n", base);
    }
    if (mkdtemp(tmpl) == NULL)
        snprintf(tmpl, sizeof tmpl, "/tmp/ingest-%s-%d", tag, (int)getpid());
    snprintf(out, cap, "%s", tmpl);
}

static inline void it_rmrf(const char *path)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

/*
 * Start `sa-bridge run --pg conninfo --data data --tables tables
 * --log-level debug [extra args...]` with its stderr appended to
 * data/../<basename>.log (b->log).  extra: NULL-terminated argv tail.
 */
static inline int it_bridge_start(it_bridge *b, const char *conninfo, const char *data,
                                  const char *tables, const char *const *extra)
{
    snprintf(b->data, sizeof b->data, "%s", data);
    snprintf(b->log, sizeof b->log, "%s.log", data);
    const char *argv[64];
    int n = 0;
    argv[n++] = it_bridge_bin();
    argv[n++] = "run";
    argv[n++] = "--pg";
    argv[n++] = conninfo;
    argv[n++] = "--data";
    argv[n++] = data;
    if (tables != NULL) { /* else: the extension's softadastra.tables */
        argv[n++] = "--tables";
        argv[n++] = tables;
    }
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    argv[n++] = "--no-progress";
    int listen = 0; /* tests run side by side: no fixed port unless asked */
    for (int i = 0; extra != NULL && extra[i] != NULL && n < 60; i++) {
        listen |= strcmp(extra[i], "--listen") == 0;
        argv[n++] = extra[i];
    }
    if (!listen) {
        argv[n++] = "--listen";
        argv[n++] = "127.0.0.1:0";
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    b->pid = pid;
    return 0;
}

/* Send sig (0 = just reap if exited) and wait; returns the wait status. */
static inline int it_bridge_stop(it_bridge *b, int sig)
{
    int status = 0;
    if (b->pid <= 0)
        return 0;
    if (sig != 0)
        kill(b->pid, sig);
    waitpid(b->pid, &status, 0);
    b->pid = 0;
    return status;
}

/* Exited already?  Fills *status. */
static inline int it_bridge_exited(it_bridge *b, int *status)
{
    if (b->pid <= 0)
        return 1;
    pid_t r = waitpid(b->pid, status, WNOHANG);
    if (r == b->pid) {
        b->pid = 0;
        return 1;
    }
    return 0;
}

/* Peak resident set (VmHWM) of the running bridge, in kB; -1 if unknown. */
static inline long it_bridge_peak_rss_kb(const it_bridge *b)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)b->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* Print the last lines of the file at path on stderr, or `none` when
 * that fails. */
static inline void it_tail(const char *path, int lines, const char *none)
{
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "tail -n %d '%s' >&2", lines, path);
    if (system(cmd) != 0)
        fprintf(stderr, "%s\n", none);
}

/* Print the tail of the bridge's log (for failing tests). */
static inline void it_bridge_dump_log(const it_bridge *b, int lines)
{
    it_tail(b->log, lines, "(no log)");
}

/* Open the bridge's store read-only (works beside the running bridge). */
static inline sa_store *it_store_ro(const char *data)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/store", data);
    sa_store_options o;
    sa_store_options_init(&o);
    o.read_only = 1;
    sa_store *s = NULL;
    sa_err err;
    if (sa_store_open(dir, &o, &s, &err) != 0)
        return NULL;
    return s;
}

/* One LSN-valued metadata key of the store (0 when absent or unreadable). */
static inline uint64_t it_meta_lsn(const char *data, const char *key)
{
    sa_store *s = it_store_ro(data);
    uint64_t lsn = 0;
    if (s == NULL)
        return 0;
    void *v = NULL;
    size_t len = 0;
    sa_err err;
    if (sa_store_meta_get(s, key, &v, &len, &err) == 0) {
        if (repl_lsn_parse((const char *)v, &lsn, &err) != 0)
            lsn = 0;
        sa_free(v);
    }
    sa_store_close(s);
    return lsn;
}

/* A single-value query on an ordinary connection; returns a malloc'd
 * string (NULL on error or SQL NULL). */
static inline char *it_query1(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    char *out = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        out = strdup(PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "query failed: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return out;
}

static inline uint64_t it_lsn_query(PGconn *c, const char *sql)
{
    char *s = it_query1(c, sql);
    uint64_t lsn = 0;
    sa_err err;
    if (s != NULL && repl_lsn_parse(s, &lsn, &err) != 0)
        lsn = 0;
    free(s);
    return lsn;
}

/*
 * Wait until the slot has confirmed everything the server has written up
 * to now (the bridge confirms only what is durable in its WAL, and follows
 * the server when idle).  1 when caught up, 0 on timeout.
 */
static inline int it_wait_caught_up(PGconn *c, const char *slot, int timeout_ms)
{
    uint64_t target = it_lsn_query(c, "SELECT pg_current_wal_lsn()");
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'", slot);
    int64_t nudge = it_now_ms() + 500;
    for (int64_t end = it_now_ms() + timeout_ms; it_now_ms() < end; it_sleep_ms(100)) {
        if (it_lsn_query(c, sql) >= target)
            return 1;
        if (it_now_ms() >= nudge) {
            /* pg_current_wal_lsn() can sit past the last record (the start
             * of the next page) where the walsender has nothing to read
             * until more WAL comes: a message nobody syncs gives it some */
            PQclear(PQexec(c, "SELECT pg_logical_emit_message(false, 'sa-test-nudge', '')"));
            nudge = it_now_ms() + 2000;
        }
    }
    return 0;
}

static int it_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The bridge's durable position: max(ingest.end_lsn, ingest.confirmed_lsn)
 * read from one read-only open (both keys of the same moment).  0 and *out
 * filled on success; -1 when the store cannot be opened or read (e.g. while
 * a restarted bridge is recovering), so a caller can skip that sample.
 */
static inline int it_durable_lsn(const char *data, uint64_t *out)
{
    static const char *const keys[2] = {"ingest.end_lsn", "ingest.confirmed_lsn"};
    sa_store *s = it_store_ro(data);
    *out = 0;
    if (s == NULL)
        return -1;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        void *v = NULL;
        size_t len = 0;
        sa_err err;
        uint64_t lsn = 0;
        int g = sa_store_meta_get(s, keys[i], &v, &len, &err);
        if (g == 0) {
            char buf[64];
            snprintf(buf, sizeof buf, "%.*s", (int)len, (const char *)v);
            sa_free(v);
            if (repl_lsn_parse(buf, &lsn, &err) != 0)
                rc = -1;
        } else if (g != SA_ENOTFOUND) {
            rc = -1;
        }
        if (lsn > *out)
            *out = lsn;
    }
    sa_store_close(s);
    return rc;
}

/* A string-valued metadata key ("" when absent); 0, or -1 when unreadable. */
static inline int it_meta_str(const char *data, const char *key, char *out, size_t cap)
{
    sa_store *s = it_store_ro(data);
    out[0] = '\0';
    if (s == NULL)
        return -1;
    void *v = NULL;
    size_t len = 0;
    sa_err err;
    int rc = sa_store_meta_get(s, key, &v, &len, &err);
    if (rc == 0) {
        snprintf(out, cap, "%.*s", (int)len, (const char *)v);
        sa_free(v);
    }
    sa_store_close(s);
    return rc == 0 || rc == SA_ENOTFOUND ? 0 : -1;
}

/* Wait until the bridge's store says ingest.state = "streaming" (initial
 * sync done) and its process still runs.  1 when so, 0 on timeout/exit. */
static inline int it_wait_streaming(it_bridge *b, int timeout_ms)
{
    char st[64];
    for (int64_t end = it_now_ms() + timeout_ms; it_now_ms() < end; it_sleep_ms(100)) {
        int status;
        if (it_bridge_exited(b, &status))
            return 0;
        if (it_meta_str(b->data, "ingest.state", st, sizeof st) == 0 && strcmp(st, "streaming") == 0)
            return 1;
    }
    return 0;
}

/* Size of the bridge's log now (an offset for the _from functions, so a
 * restarted bridge's lines are told apart from the previous run's). */
static inline long it_log_size(const it_bridge *b)
{
    FILE *f = fopen(b->log, "r");
    if (f == NULL)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n < 0 ? 0 : n;
}

/* Does the bridge's log, from byte `from` on, contain `needle`?  1 / 0. */
static inline int it_log_contains_from(const it_bridge *b, long from, const char *needle)
{
    FILE *f = fopen(b->log, "r");
    if (f == NULL)
        return 0;
    fseek(f, from, SEEK_SET);
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static inline int it_log_contains(const it_bridge *b, const char *needle)
{
    return it_log_contains_from(b, 0, needle);
}

/*
 * Wait until the log, from byte `from` on, contains `needle`: 1 when it
 * does; 0 on timeout; -1 when the bridge exited first (*status filled when
 * status != NULL).
 */
static inline int it_wait_log(it_bridge *b, long from, const char *needle, int timeout_ms,
                              int *status)
{
    int st = 0;
    for (int64_t end = it_now_ms() + timeout_ms;; it_sleep_ms(20)) {
        if (it_log_contains_from(b, from, needle))
            return 1;
        if (b->pid > 0 && it_bridge_exited(b, &st)) {
            if (status != NULL)
                *status = st;
            return it_log_contains_from(b, from, needle) ? 1 : -1;
        }
        if (b->pid <= 0 || it_now_ms() >= end)
            return 0;
    }
}

/* The HTTP port the bridge logged ("HTTP API v1 listening on
 * 127.0.0.1:PORT"), from byte `from` of its log on; the last one, or 0. */
static inline int it_bridge_port(const it_bridge *b, long from)
{
    static const char needle[] = "HTTP API v1 listening on 127.0.0.1:";
    FILE *f = fopen(b->log, "r");
    char line[4096];
    int port = 0;
    if (f == NULL)
        return 0;
    fseek(f, from, SEEK_SET);
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p = strstr(line, needle);
        if (p != NULL)
            port = atoi(p + strlen(needle));
    }
    fclose(f);
    return port;
}

/*
 * Start a PostgreSQL cluster (*h) and connect to it (*c), then CREATE
 * EXTENSION softadastra: 1; 0 when the extension is not installed (a
 * "# SKIP" line printed: the caller skips); -1 and err when the cluster did
 * not start.  The caller stops *h and finishes *c.
 */
static inline int it_pg_start_ext(sa_pgh **h, PGconn **c, sa_err *err)
{
    if (sa_pgh_start(NULL, h, err) != 0)
        return -1;
    *c = PQconnectdb(sa_pgh_conninfo(*h));
    PGresult *r = PQexec(*c, "CREATE EXTENSION softadastra");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        printf("# SKIP: softadastra extension not installed: %s", PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* Wait for the bridge to exit on its own: 1 and *status, or 0 on timeout. */
static inline int it_wait_exit(it_bridge *b, int timeout_ms, int *status)
{
    for (int64_t end = it_now_ms() + timeout_ms; it_now_ms() < end; it_sleep_ms(20))
        if (it_bridge_exited(b, status))
            return 1;
    return 0;
}

/* The WAL records read back: clones of the ops (free with it_wal_free). */
typedef struct it_walrec {
    uint64_t seq;
    int group_end;
    sa_op *op;
} it_walrec;

/* Every WAL record with seq >= from (read-only open, so it works beside the
 * running bridge).  *n records; NULL (and *n 0) on error. */
static inline it_walrec *it_wal_collect(const char *data, uint64_t from, size_t *n)
{
    *n = 0;
    sa_store *s = it_store_ro(data);
    if (s == NULL)
        return NULL;
    size_t cap = 1024;
    it_walrec *v = malloc(cap * sizeof *v);
    sa_wal_iter *it = NULL;
    sa_wal_rec rec;
    sa_err err;
    int rc = sa_wal_iter_open(s, from, &it, &err);
    while (rc == 0 && (rc = sa_wal_iter_next(it, &rec, &err)) == 1) {
        if (*n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof *v);
        }
        v[*n].seq = rec.seq;
        v[*n].group_end = rec.group_end;
        if (sa_op_clone(rec.op, &v[*n].op, &err) != 0) {
            rc = -1;
            break;
        }
        (*n)++;
        rc = 0;
    }
    sa_wal_iter_close(it);
    sa_store_close(s);
    if (rc < 0) {
        fprintf(stderr, "reading the WAL of %s: %s\n", data, err.msg);
        for (size_t i = 0; i < *n; i++)
            sa_op_free(v[i].op);
        free(v);
        *n = 0;
        return NULL;
    }
    return v;
}

static inline void it_wal_free(it_walrec *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        sa_op_free(v[i].op);
    free(v);
}

/* The field named `name` in f[0..n), or NULL. */
static inline const sa_field *it_field(const sa_field *f, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

/*
 * Compare the bridge's state rows of `table` ("schema.name") with the table
 * itself, row for row and column for column, each table value rendered by
 * its type's output function (libpq text results: bool 't', char(n)
 * padded) — what pgoutput and COPY send; NULL is kept apart from every text
 * (also from a text '\N').  Extra state columns are ignored.  1 when equal;
 * else 0 and prints the first difference.
 */
static inline int it_state_equals_table(const char *data, PGconn *c, const char *table)
{
    const char *dot = strchr(table, '.');
    char schema[256], rel[256], sql[1024];
    snprintf(schema, sizeof schema, "%.*s", (int)(dot - table), table);
    snprintf(rel, sizeof rel, "%s", dot + 1);
    char *qs = PQescapeIdentifier(c, schema, strlen(schema));
    char *qr = PQescapeIdentifier(c, rel, strlen(rel));
    snprintf(sql, sizeof sql, "SELECT * FROM %s.%s", qs, qr);
    PQfreemem(qs);
    PQfreemem(qr);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "row query failed: %s", PQerrorMessage(c));
        PQclear(r);
        return 0;
    }
    int nf = PQnfields(r);
    size_t npg = (size_t)PQntuples(r);
    char **pg = calloc(npg + 1, sizeof *pg);
    for (size_t i = 0; i < npg; i++) {
        size_t len = 1;
        for (int k = 0; k < nf; k++)
            len += strlen(PQfname(r, k)) + (size_t)PQgetlength(r, (int)i, k) + 4;
        char *line = malloc(len), *p = line;
        for (int k = 0; k < nf; k++) {
            p += sprintf(p, "%s%s=", k ? "\x1f" : "", PQfname(r, k));
            if (PQgetisnull(r, (int)i, k))
                *p++ = '\x1e';
            else {
                memcpy(p, PQgetvalue(r, (int)i, k), (size_t)PQgetlength(r, (int)i, k));
                p += PQgetlength(r, (int)i, k);
            }
        }
        *p = '\0';
        pg[i] = line;
    }
    size_t ncap = 1024, nst = 0;
    char **st = calloc(ncap, sizeof *st);
    sa_store *s = it_store_ro(data);
    int ok = s != NULL;
    sa_snapshot *sn = NULL;
    sa_state_iter *it = NULL;
    sa_err err;
    if (ok && (sa_snapshot_open(s, &sn, &err) != 0 || sa_state_iter_open(sn, table, &it, &err) != 0))
        ok = 0;
    const sa_row *row;
    int irc = 0;
    while (ok && (irc = sa_state_iter_next(it, &row, &err)) == 1) {
        size_t len = 1;
        for (int k = 0; k < nf; k++) {
            const sa_field *f = it_field(row->cols, row->ncols, PQfname(r, k));
            len += strlen(PQfname(r, k)) + 16 + (f && f->val.kind == SA_VAL_TEXT ? f->val.len : 0);
        }
        char *line = malloc(len), *p = line;
        for (int k = 0; k < nf; k++) {
            const sa_field *f = it_field(row->cols, row->ncols, PQfname(r, k));
            p += sprintf(p, "%s%s=", k ? "\x1f" : "", PQfname(r, k));
            if (f == NULL)
                p += sprintf(p, "<absent>");
            else if (f->val.kind == SA_VAL_NULL)
                *p++ = '\x1e';
            else if (f->val.kind == SA_VAL_UNCHANGED)
                p += sprintf(p, "<unchanged-toast>");
            else {
                memcpy(p, f->val.data, f->val.len);
                p += f->val.len;
            }
        }
        *p = '\0';
        if (nst == ncap) {
            ncap *= 2;
            st = realloc(st, ncap * sizeof *st);
        }
        st[nst++] = line;
    }
    PQclear(r);
    sa_state_iter_close(it);
    sa_snapshot_close(sn);
    sa_store_close(s);
    if (ok) {
        qsort(pg, npg, sizeof *pg, it_strcmp_p);
        qsort(st, nst, sizeof *st, it_strcmp_p);
        if (npg != nst) {
            fprintf(stderr, "%s: table has %zu rows, state has %zu\n", table, npg, nst);
            ok = 0;
        }
        for (size_t i = 0; ok && i < npg; i++)
            if (strcmp(pg[i], st[i]) != 0) {
                fprintf(stderr, "%s: first difference (0x1f separates columns, 0x1e is NULL):\n"
                        "  table: %.400s\n  state: %.400s\n", table, pg[i], st[i]);
                ok = 0;
            }
    } else {
        fprintf(stderr, "cannot read the bridge's state in %s\n", data);
    }
    for (size_t i = 0; i < npg; i++)
        free(pg[i]);
    for (size_t i = 0; i < nst; i++)
        free(st[i]);
    free(pg);
    free(st);
    return ok;
}

#endif /* SA_INGEST_UTIL_H */
