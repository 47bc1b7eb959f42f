/*
 * repl.c — the streaming replication client: framing of the replication
 * protocol's CopyData messages (sans-I/O), the libpq replication connection
 * with bounded waits, and slot administration over an ordinary connection.
 * Formats and the connection's state machine are specified in repl.h.
 */
#include "repl.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sa/sa_alloc.h"
#include "sa/sa_buf.h"

/* ====================================================================== */
/* Framing                                                                */
/* ====================================================================== */

int repl_parse_copydata(const uint8_t *buf, size_t len, repl_frame *out, sa_err *err)
{
    if (len == 0 || buf == NULL)
        return sa_err_set(err, SA_EPROTO, "empty CopyData message in the replication stream");

    repl_frame f;
    memset(&f, 0, sizeof f);
    switch (buf[0]) {
    case REPL_FRAME_XLOGDATA:
        if (len < REPL_XLOGDATA_HDR_LEN)
            return sa_err_set(err, SA_EPROTO,
                              "XLogData ('w') message of %zu bytes is truncated: "
                              "its header alone is %d bytes",
                              len, REPL_XLOGDATA_HDR_LEN);
        /* Logical decoding sends exactly one plugin message per XLogData,
         * never an empty one. */
        if (len == REPL_XLOGDATA_HDR_LEN)
            return sa_err_set(err, SA_EPROTO,
                              "XLogData ('w') message of %zu bytes carries no payload", len);
        f.type = REPL_FRAME_XLOGDATA;
        f.data_start = sa_get_u64be(buf + 1);
        f.wal_end = sa_get_u64be(buf + 9);
        f.send_time = (int64_t)sa_get_u64be(buf + 17);
        f.payload = buf + REPL_XLOGDATA_HDR_LEN;
        f.payload_len = len - REPL_XLOGDATA_HDR_LEN;
        break;
    case REPL_FRAME_KEEPALIVE:
        if (len < REPL_KEEPALIVE_LEN)
            return sa_err_set(err, SA_EPROTO,
                              "keepalive ('k') message of %zu bytes is truncated: "
                              "it must be %d bytes",
                              len, REPL_KEEPALIVE_LEN);
        if (len > REPL_KEEPALIVE_LEN)
            return sa_err_set(err, SA_EPROTO,
                              "keepalive ('k') message of %zu bytes has %zu trailing bytes: "
                              "it must be %d bytes",
                              len, len - REPL_KEEPALIVE_LEN, REPL_KEEPALIVE_LEN);
        if (buf[17] > 1)
            return sa_err_set(err, SA_EPROTO,
                              "keepalive ('k') replyRequested byte is %u, expected 0 or 1",
                              (unsigned)buf[17]);
        f.type = REPL_FRAME_KEEPALIVE;
        f.wal_end = sa_get_u64be(buf + 1);
        f.send_time = (int64_t)sa_get_u64be(buf + 9);
        f.reply_requested = buf[17] == 1;
        break;
    default:
        return sa_err_set(err, SA_EPROTO,
                          "unknown replication message type byte 0x%02x%s%c%s "
                          "(expected 'w' or 'k'; message of %zu bytes)",
                          (unsigned)buf[0], isprint(buf[0]) ? " ('" : "",
                          isprint(buf[0]) ? buf[0] : ' ', isprint(buf[0]) ? "')" : "", len);
    }
    *out = f;
    return 0;
}

size_t repl_build_status(uint8_t buf[REPL_STATUS_LEN], uint64_t write_lsn, uint64_t flush_lsn,
                         uint64_t apply_lsn, int64_t now_pg_us, bool reply_requested)
{
    buf[0] = REPL_FRAME_STATUS;
    sa_put_u64be(buf + 1, write_lsn);
    sa_put_u64be(buf + 9, flush_lsn);
    sa_put_u64be(buf + 17, apply_lsn);
    sa_put_u64be(buf + 25, (uint64_t)now_pg_us);
    buf[33] = reply_requested ? 1 : 0;
    return REPL_STATUS_LEN;
}

int64_t repl_now_pg_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec - REPL_PG_EPOCH_UNIX_S) * 1000000 + ts.tv_nsec / 1000;
}

int64_t repl_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ====================================================================== */
/* LSNs and names                                                         */
/* ====================================================================== */

char *repl_lsn_format(uint64_t lsn, char buf[REPL_LSN_STRLEN])
{
    snprintf(buf, REPL_LSN_STRLEN, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
    return buf;
}

/* Value of 1–8 hex digits at s, stopping at the first non-hex; *n digits. */
static uint32_t repl__hex32(const char *s, size_t *n)
{
    uint32_t v = 0;
    size_t i = 0;
    for (; isxdigit((unsigned char)s[i]) && i < 9; i++) {
        int c = (unsigned char)s[i];
        int d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
        v = (v << 4) | (uint32_t)d;
    }
    *n = i;
    return v;
}

int repl_lsn_parse(const char *s, uint64_t *out, sa_err *err)
{
    if (s == NULL)
        return sa_err_set(err, SA_EINVAL, "LSN is NULL");
    size_t n1, n2;
    uint32_t hi = repl__hex32(s, &n1);
    if (n1 == 0 || n1 > 8 || s[n1] != '/')
        goto bad;
    uint32_t lo = repl__hex32(s + n1 + 1, &n2);
    if (n2 == 0 || n2 > 8 || s[n1 + 1 + n2] != '\0')
        goto bad;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
bad:
    return sa_err_set(err, SA_EINVAL,
                      "invalid LSN \"%.40s\": expected 1-8 hex digits, '/', 1-8 hex digits", s);
}

int repl_slot_name_check(const char *name, sa_err *err)
{
    if (name == NULL || name[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "replication slot name is empty");
    size_t len = strlen(name);
    if (len > REPL_NAME_MAX)
        return sa_err_set(err, SA_EINVAL,
                          "replication slot name \"%.70s...\" is %zu bytes, at most %d allowed",
                          name, len, REPL_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return sa_err_set(err, SA_EINVAL,
                              "replication slot name \"%s\" contains an invalid character at "
                              "byte %zu: only lower case letters, digits and '_' are allowed",
                              name, i);
    }
    return 0;
}

int repl_publication_name_check(const char *name, sa_err *err)
{
    if (name == NULL || name[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "publication name is empty");
    size_t len = strlen(name);
    if (len > REPL_NAME_MAX)
        return sa_err_set(err, SA_EINVAL, "publication name \"%.70s...\" is %zu bytes, at most %d",
                          name, len, REPL_NAME_MAX);
    return 0;
}

/* ====================================================================== */
/* libpq helpers                                                          */
/* ====================================================================== */

const char *repl__pg_msg(PGconn *conn, const PGresult *res, char *buf, size_t cap)
{
    const char *m = res != NULL ? PQresultErrorMessage(res) : "";
    if ((m == NULL || m[0] == '\0') && conn != NULL)
        m = PQerrorMessage(conn);
    if (m == NULL || m[0] == '\0')
        m = "no message from libpq";
    snprintf(buf, cap, "%s", m);
    /* One line: newlines (before DETAIL/HINT) become spaces, the end is trimmed. */
    size_t n = strlen(buf);
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')
            buf[i] = ' ';
    return buf;
}

/* SQLSTATE of res, "" if none. */
static const char *repl__sqlstate(const PGresult *res)
{
    const char *s = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s != NULL ? s : "";
}

/* Copy column col of row 0 into dst[cap]; NULL → "".  SA_EPROTO if longer. */
static int repl__copy_col(const PGresult *res, int col, char *dst, size_t cap, sa_err *err)
{
    const char *v = PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col);
    size_t n = strlen(v);
    if (n >= cap)
        return sa_err_set(err, SA_EPROTO, "column \"%s\" value of %zu bytes exceeds %zu",
                          PQfname(res, col), n, cap - 1);
    memcpy(dst, v, n + 1);
    return 0;
}

/* LSN column of row 0; NULL → 0. */
static int repl__lsn_col(const PGresult *res, int col, uint64_t *out, sa_err *err)
{
    if (PQgetisnull(res, 0, col)) {
        *out = 0;
        return 0;
    }
    const char *v = PQgetvalue(res, 0, col);
    if (repl_lsn_parse(v, out, NULL) != 0)
        return sa_err_set(err, SA_EPROTO, "column \"%s\" is \"%.40s\", not an LSN",
                          PQfname(res, col), v);
    return 0;
}

static bool repl__bool_col(const PGresult *res, int col)
{
    return !PQgetisnull(res, 0, col) && PQgetvalue(res, 0, col)[0] == 't';
}

/* Strict decimal in [min, max]. */
static int repl__long_col(const PGresult *res, int col, long min, long max, long *out, sa_err *err)
{
    const char *v = PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col);
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || x < min || x > max)
        return sa_err_set(err, SA_EPROTO,
                          "column \"%s\" is \"%.40s\", expected an integer in "
                          "[%ld, %ld]",
                          PQfname(res, col), v, min, max);
    *out = x;
    return 0;
}

/* ====================================================================== */
/* The replication connection                                             */
/* ====================================================================== */

enum repl_state { REPL_ST_IDLE, REPL_ST_STREAMING, REPL_ST_DEAD };

struct repl_conn {
    PGconn *pg; /* owned */
    enum repl_state state;
    char *copybuf;        /* the last PQgetCopyData buffer (PQfreemem), or NULL */
    int64_t last_recv_ms; /* repl_clock_ms() of the last byte received */
};

static void repl__drop_copybuf(repl_conn *c)
{
    if (c->copybuf != NULL)
        PQfreemem(c->copybuf);
    c->copybuf = NULL;
}

/* The connection broke: mark it DEAD and say so with libpq's message. */
static int repl__lost(repl_conn *c, const char *doing, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    c->state = REPL_ST_DEAD;
    return sa_err_set(err, SA_EIO, "replication connection lost while %s: %s", doing,
                      repl__pg_msg(c->pg, NULL, m, sizeof m));
}

int repl_conn_open(const char *conninfo, repl_conn **out, sa_err *err)
{
    const char *kw[6], *val[6];
    int i = 0, rc = 0;
    char m[SA_ERR_MSG_MAX];
    repl_conn *c = NULL;
    PGconn *pg = NULL;

    /* Keywords are applied in order and an expanded dbname overrides those
     * before it, so the caller's connect_timeout beats our default while
     * replication=database, placed after, beats the caller's. */
    if (getenv("PGCONNECT_TIMEOUT") == NULL) {
        kw[i] = "connect_timeout";
        val[i++] = "10";
    }
    kw[i] = "dbname";
    val[i++] = conninfo;
    kw[i] = "replication";
    val[i++] = "database";
    kw[i] = "fallback_application_name";
    val[i++] = "sa-bridge";
    kw[i] = NULL;
    val[i] = NULL;

    c = sa_calloc(1, sizeof *c);
    if (c == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory opening a replication connection");
        goto done;
    }
    pg = PQconnectdbParams(kw, val, 1);
    if (pg == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory in libpq opening a replication connection");
        goto done;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = sa_err_set(err, SA_EPG, "cannot open a replication connection: %s",
                        repl__pg_msg(pg, NULL, m, sizeof m));
        goto done;
    }
    c->pg = pg;
    c->state = REPL_ST_IDLE;
    c->last_recv_ms = repl_clock_ms();
    *out = c;
    pg = NULL;
    c = NULL;
done:
    if (pg != NULL)
        PQfinish(pg);
    sa_free(c);
    return rc;
}

void repl_conn_close(repl_conn *c)
{
    if (c == NULL)
        return;
    repl__drop_copybuf(c);
    if (c->pg != NULL) {
        /* Best effort: tell the walsender we are done; PQfinish then sends
         * Terminate and closes.  Nothing here waits for the server. */
        if (c->state == REPL_ST_STREAMING && PQputCopyEnd(c->pg, NULL) == 1)
            (void)PQflush(c->pg);
        PQfinish(c->pg);
    }
    sa_free(c);
}

PGconn *repl_conn_pg(repl_conn *c)
{
    return c->pg;
}

/*
 * Run one replication command in IDLE state and expect `want`.  On success
 * *res is the result (caller PQclears it).  what names the command in
 * errors.  SQLSTATE 42710 (duplicate object) maps to SA_EEXISTS.
 */
static int repl__command(repl_conn *c, const char *cmd, ExecStatusType want, const char *what,
                         PGresult **res, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    if (c->state != REPL_ST_IDLE)
        return sa_err_set(err, SA_ECLOSED, "%s: the replication connection is %s", what,
                          c->state == REPL_ST_STREAMING ? "streaming" : "closed after an error");
    PGresult *r = PQexec(c->pg, cmd);
    if (r != NULL && PQresultStatus(r) == want) {
        *res = r;
        return 0;
    }
    int code = SA_EPG;
    if (r == NULL)
        code = PQstatus(c->pg) == CONNECTION_BAD ? SA_EIO : SA_ENOMEM;
    else if (strcmp(repl__sqlstate(r), "42710") == 0)
        code = SA_EEXISTS;
    else if (PQstatus(c->pg) == CONNECTION_BAD)
        code = SA_EIO;
    if (PQstatus(c->pg) == CONNECTION_BAD)
        c->state = REPL_ST_DEAD;
    sa_err_set(err, code, "%s failed: %s", what, repl__pg_msg(c->pg, r, m, sizeof m));
    PQclear(r);
    return code;
}

int repl_identify_system(repl_conn *c, repl_system *out, sa_err *err)
{
    PGresult *res = NULL;
    repl_system s;
    memset(&s, 0, sizeof s);
    int rc = repl__command(c, "IDENTIFY_SYSTEM", PGRES_TUPLES_OK, "IDENTIFY_SYSTEM", &res, err);
    if (rc != 0)
        goto done;
    if (PQntuples(res) != 1 || PQnfields(res) < 4) {
        rc = sa_err_set(err, SA_EPROTO,
                        "IDENTIFY_SYSTEM returned %d rows of %d columns, "
                        "expected 1 row of at least 4",
                        PQntuples(res), PQnfields(res));
        goto done;
    }
    long tli = 0;
    if ((rc = repl__copy_col(res, 0, s.systemid, sizeof s.systemid, err)) != 0 ||
        (rc = repl__long_col(res, 1, 1, (long)UINT32_MAX, &tli, err)) != 0 ||
        (rc = repl__lsn_col(res, 2, &s.xlogpos, err)) != 0 ||
        (rc = repl__copy_col(res, 3, s.dbname, sizeof s.dbname, err)) != 0) {
        sa_err_wrap(err, "IDENTIFY_SYSTEM");
        goto done;
    }
    s.timeline = (uint32_t)tli;
    *out = s;
done:
    PQclear(res);
    return rc;
}

int repl_create_slot(repl_conn *c, const char *slot_name, bool export_snapshot,
                     repl_slot_created *out, sa_err *err)
{
    return repl_create_slot_ex(c, slot_name, export_snapshot, false, out, err);
}

int repl_create_slot_ex(repl_conn *c, const char *slot_name, bool export_snapshot, bool temporary,
                        repl_slot_created *out, sa_err *err)
{
    PGresult *res = NULL;
    char cmd[256];
    repl_slot_created s;
    memset(&s, 0, sizeof s);
    int rc = repl_slot_name_check(slot_name, err);
    if (rc != 0)
        goto done;
    /* The name is [a-z0-9_]{1,63}: quoting it cannot be escaped from. */
    if (PQserverVersion(c->pg) >= 150000)
        snprintf(cmd, sizeof cmd,
                 "CREATE_REPLICATION_SLOT \"%s\"%s LOGICAL pgoutput (SNAPSHOT '%s')", slot_name,
                 temporary ? " TEMPORARY" : "", export_snapshot ? "export" : "nothing");
    else
        snprintf(cmd, sizeof cmd, "CREATE_REPLICATION_SLOT \"%s\"%s LOGICAL pgoutput %s",
                 slot_name, temporary ? " TEMPORARY" : "",
                 export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
    rc = repl__command(c, cmd, PGRES_TUPLES_OK, "CREATE_REPLICATION_SLOT", &res, err);
    if (rc != 0) {
        sa_err_wrap(err, "slot \"%s\"", slot_name);
        goto done;
    }
    if (PQntuples(res) != 1 || PQnfields(res) < 3) {
        rc = sa_err_set(err, SA_EPROTO,
                        "CREATE_REPLICATION_SLOT returned %d rows of %d columns, "
                        "expected 1 row of at least 3",
                        PQntuples(res), PQnfields(res));
        goto done;
    }
    if ((rc = repl__lsn_col(res, 1, &s.consistent_point, err)) != 0 ||
        (rc = repl__copy_col(res, 2, s.snapshot_name, sizeof s.snapshot_name, err)) != 0) {
        sa_err_wrap(err, "CREATE_REPLICATION_SLOT");
        goto done;
    }
    if (export_snapshot && s.snapshot_name[0] == '\0') {
        rc = sa_err_set(err, SA_EPROTO, "CREATE_REPLICATION_SLOT exported no snapshot");
        goto done;
    }
    *out = s;
done:
    PQclear(res);
    return rc;
}

/*
 * Append s as a string literal of the replication command grammar.  That
 * lexer (repl_scanner.l) knows only '...' with '' for a quote — no E'' and
 * no backslash escapes, so PQescapeLiteral (which emits E'..\\..' for a
 * backslash) would produce a syntax error.  Everything but ' is literal.
 */
static int repl__put_literal(sa_buf *b, const char *s)
{
    int rc = sa_buf_put_u8(b, '\'');
    for (; rc == 0 && *s != '\0'; s++)
        rc = *s == '\'' ? sa_buf_put(b, "''", 2) : sa_buf_put_u8(b, (uint8_t)*s);
    return rc != 0 ? rc : sa_buf_put_u8(b, '\'');
}

/*
 * The value of publication_names: pgoutput splits it with
 * SplitIdentifierString, so each name goes double-quoted ("" for a quote),
 * keeping its case and any comma, quote or backslash inside it.
 */
static int repl__put_publications(sa_buf *b, const repl_start_opts *o)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < o->npublications; i++) {
        if (i > 0)
            rc = sa_buf_put_u8(b, ',');
        rc = rc != 0 ? rc : sa_buf_put_u8(b, '"');
        for (const char *s = o->publications[i]; rc == 0 && *s != '\0'; s++)
            rc = *s == '"' ? sa_buf_put(b, "\"\"", 2) : sa_buf_put_u8(b, (uint8_t)*s);
        rc = rc != 0 ? rc : sa_buf_put_u8(b, '"');
    }
    return rc != 0 ? rc : sa_buf_put_u8(b, '\0');
}

static int repl__start_check(const char *slot_name, const repl_start_opts *o, sa_err *err)
{
    int rc = repl_slot_name_check(slot_name, err);
    if (rc != 0)
        return rc;
    if (o == NULL)
        return sa_err_set(err, SA_EINVAL, "START_REPLICATION: no options given");
    if (o->proto_version < REPL_PROTO_MIN || o->proto_version > REPL_PROTO_MAX)
        return sa_err_set(err, SA_EINVAL, "pgoutput proto_version %u is outside [%d, %d]",
                          o->proto_version, REPL_PROTO_MIN, REPL_PROTO_MAX);
    if (o->streaming && o->proto_version < 2)
        return sa_err_set(err, SA_EINVAL,
                          "streaming needs pgoutput proto_version 2 or higher, got %u",
                          o->proto_version);
    if (o->npublications == 0 || o->publications == NULL)
        return sa_err_set(err, SA_EINVAL, "START_REPLICATION needs at least one publication");
    for (size_t i = 0; i < o->npublications; i++) {
        rc = repl_publication_name_check(o->publications[i], err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int repl_start(repl_conn *c, const char *slot_name, uint64_t start_lsn, const repl_start_opts *o,
               sa_err *err)
{
    sa_buf cmd, pubs;
    char head[256], lsn[REPL_LSN_STRLEN];
    PGresult *res = NULL;
    sa_buf_init(&cmd);
    sa_buf_init(&pubs);
    int rc = repl__start_check(slot_name, o, err);
    if (rc != 0)
        goto done;
    snprintf(head, sizeof head, "START_REPLICATION SLOT \"%s\" LOGICAL %s (\"proto_version\" '%u'",
             slot_name, repl_lsn_format(start_lsn, lsn), o->proto_version);
    if ((rc = repl__put_publications(&pubs, o)) != 0 ||
        (rc = sa_buf_put(&cmd, head, strlen(head))) != 0 ||
        (rc = sa_buf_put(&cmd, ", \"publication_names\" ", 22)) != 0 ||
        (rc = repl__put_literal(&cmd, (const char *)pubs.data)) != 0 ||
        (o->streaming && (rc = sa_buf_put(&cmd, ", \"streaming\" 'on'", 18)) != 0) ||
        (o->messages && (rc = sa_buf_put(&cmd, ", \"messages\" 'true'", 19)) != 0) ||
        (rc = sa_buf_put(&cmd, ")", 1)) != 0 || (rc = sa_buf_put_u8(&cmd, '\0')) != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory building START_REPLICATION");
        goto done;
    }
    rc = repl__command(c, (const char *)cmd.data, PGRES_COPY_BOTH, "START_REPLICATION", &res, err);
    if (rc != 0) {
        sa_err_wrap(err, "slot \"%s\" from %s", slot_name, lsn);
        goto done;
    }
    /* From here on every wait is ours (poll with a bound), never libpq's. */
    if (PQsetnonblocking(c->pg, 1) != 0) {
        rc = repl__lost(c, "switching to non-blocking mode", err);
        goto done;
    }
    c->state = REPL_ST_STREAMING;
    c->last_recv_ms = repl_clock_ms();
done:
    PQclear(res);
    sa_buf_free(&cmd);
    sa_buf_free(&pubs);
    return rc;
}

/*
 * Wait for the socket: readable always, writable too when want_write.
 * Returns 1 when ready (input consumed into libpq's buffer if readable),
 * 0 when ms elapsed, < 0 on error (the connection is then DEAD).
 */
static int repl__wait(repl_conn *c, bool want_write, int64_t ms, const char *doing, sa_err *err)
{
    int sock = PQsocket(c->pg);
    if (sock < 0)
        return repl__lost(c, doing, err);
    struct pollfd p = {.fd = sock, .events = (short)(POLLIN | (want_write ? POLLOUT : 0))};
    int pr = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)(ms < 0 ? 0 : ms));
    if (pr < 0)
        return errno == EINTR
                   ? 1
                   : sa_err_set(err, SA_ESYS, "poll while %s: %s", doing, strerror(errno));
    if (pr == 0)
        return 0;
    if (p.revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
        if (!PQconsumeInput(c->pg))
            return repl__lost(c, doing, err);
        c->last_recv_ms = repl_clock_ms();
    }
    return 1;
}

/*
 * PQgetCopyData said the COPY is over: fetch why (bounded), drain, and
 * report.  The connection is DEAD afterwards either way.
 */
static int repl__stream_ended(repl_conn *c, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    int64_t end = repl_clock_ms() + 1000;
    PGresult *res = NULL;
    while (PQisBusy(c->pg) && repl_clock_ms() < end)
        if (repl__wait(c, false, end - repl_clock_ms(), "reading the end of the stream", NULL) < 0)
            break;
    if (!PQisBusy(c->pg) || PQstatus(c->pg) == CONNECTION_BAD)
        res = PQgetResult(c->pg);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_EMPTY_QUERY;
    int rc;
    if (res != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK))
        rc = sa_err_set(err, SA_EIO, "the server ended the replication stream (CopyDone)");
    else
        rc = sa_err_set(err, SA_EIO, "the server ended the replication stream: %s",
                        repl__pg_msg(c->pg, res, m, sizeof m));
    PQclear(res);
    c->state = REPL_ST_DEAD;
    return rc;
}

int repl_next(repl_conn *c, int timeout_ms, repl_frame *out, sa_err *err)
{
    int rc = 0;
    repl__drop_copybuf(c);
    if (c->state != REPL_ST_STREAMING)
        return sa_err_set(err, SA_ECLOSED, "repl_next: the replication connection is %s",
                          c->state == REPL_ST_IDLE ? "not streaming" : "closed after an error");
    int64_t deadline = repl_clock_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c->pg, &buf, 1);
        if (n > 0) {
            c->copybuf = buf;
            c->last_recv_ms = repl_clock_ms();
            rc = repl_parse_copydata((const uint8_t *)buf, (size_t)n, out, err);
            if (rc != 0)
                c->state = REPL_ST_DEAD; /* we can no longer follow the stream */
            else
                rc = 1;
            goto done;
        }
        if (n == -1) {
            rc = repl__stream_ended(c, err);
            goto done;
        }
        if (n < -1) {
            rc = repl__lost(c, "reading the replication stream", err);
            goto done;
        }
        /* Nothing complete yet: push out any queued status, then wait. */
        int fl = PQflush(c->pg);
        if (fl < 0) {
            rc = repl__lost(c, "flushing a status update", err);
            goto done;
        }
        int64_t left = deadline - repl_clock_ms();
        if (left <= 0)
            goto done; /* rc == 0: timeout */
        rc = repl__wait(c, fl == 1, left, "waiting for the replication stream", err);
        if (rc < 0)
            goto done;
        rc = 0;
    }
done:
    return rc;
}

int repl_send_status(repl_conn *c, uint64_t write_lsn, uint64_t flush_lsn, uint64_t apply_lsn,
                     bool reply_requested, sa_err *err)
{
    uint8_t msg[REPL_STATUS_LEN];
    int rc = 0;
    if (c->state != REPL_ST_STREAMING)
        return sa_err_set(err, SA_ECLOSED, "repl_send_status: the replication connection is %s",
                          c->state == REPL_ST_IDLE ? "not streaming" : "closed after an error");
    repl_build_status(msg, write_lsn, flush_lsn, apply_lsn, repl_now_pg_us(), reply_requested);
    int64_t deadline = repl_clock_ms() + REPL_SEND_TIMEOUT_MS;
    bool queued = false;
    for (;;) {
        if (!queued) {
            int q = PQputCopyData(c->pg, (const char *)msg, REPL_STATUS_LEN);
            if (q < 0) {
                rc = repl__lost(c, "sending a status update", err);
                goto done;
            }
            queued = q == 1;
        }
        int fl = queued ? PQflush(c->pg) : 1;
        if (fl < 0) {
            rc = repl__lost(c, "flushing a status update", err);
            goto done;
        }
        if (queued && fl == 0)
            goto done;
        int64_t left = deadline - repl_clock_ms();
        if (left <= 0) {
            rc = sa_err_set(err, SA_ETIMEOUT,
                            "status update not %s within %d ms: the server does not read",
                            queued ? "flushed" : "queued", REPL_SEND_TIMEOUT_MS);
            goto done;
        }
        /* Readable too: a server blocked on writing to us must be drained
         * (into libpq's buffer, for repl_next) or neither side moves. */
        rc = repl__wait(c, true, left, "sending a status update", err);
        if (rc < 0)
            goto done;
        rc = 0;
    }
done:
    return rc;
}

int64_t repl_last_server_activity_ms(const repl_conn *c)
{
    return c->last_recv_ms;
}

bool repl_is_stale(const repl_conn *c, int64_t now_ms, int64_t timeout_ms)
{
    return now_ms - c->last_recv_ms > timeout_ms;
}

/* ====================================================================== */
/* Slot administration on an ordinary connection                          */
/* ====================================================================== */

/* Run sql with one text parameter; expect TUPLES_OK with ≤ 1 row. */
static int repl__query1(PGconn *pg, const char *sql, const char *param, const char *what,
                        PGresult **res, sa_err *err)
{
    char m[SA_ERR_MSG_MAX];
    const char *params[1] = {param};
    PGresult *r = PQexecParams(pg, sql, param != NULL ? 1 : 0, NULL, params, NULL, NULL, 0);
    if (r == NULL)
        return sa_err_set(err, PQstatus(pg) == CONNECTION_BAD ? SA_EPG : SA_ENOMEM, "%s: %s", what,
                          repl__pg_msg(pg, NULL, m, sizeof m));
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *st = repl__sqlstate(r);
        int code = strcmp(st, "42704") == 0   ? SA_ENOTFOUND
                   : strcmp(st, "55006") == 0 ? SA_EBUSY
                                              : SA_EPG;
        sa_err_set(err, code, "%s: %s", what, repl__pg_msg(pg, r, m, sizeof m));
        PQclear(r);
        return code;
    }
    if (PQntuples(r) > 1) {
        int n = PQntuples(r);
        PQclear(r);
        return sa_err_set(err, SA_EPROTO, "%s: %d rows, expected at most 1", what, n);
    }
    *res = r;
    return 0;
}

int repl_slot_get(PGconn *pg, const char *slot_name, bool *exists, repl_slot_info *out, sa_err *err)
{
    static const char sql[] =
        "SELECT slot_name, plugin, slot_type, database, confirmed_flush_lsn, restart_lsn, "
        "wal_status, temporary, active, active_pid, two_phase "
        "FROM pg_catalog.pg_replication_slots WHERE slot_name = $1";
    PGresult *res = NULL;
    repl_slot_info s;
    memset(&s, 0, sizeof s);
    int rc = repl_slot_name_check(slot_name, err);
    if (rc != 0)
        goto done;
    rc = repl__query1(pg, sql, slot_name, "reading pg_replication_slots", &res, err);
    if (rc != 0)
        goto done;
    if (PQntuples(res) == 0) {
        *exists = false;
        goto done;
    }
    long pid = 0;
    if ((rc = repl__copy_col(res, 0, s.slot_name, sizeof s.slot_name, err)) != 0 ||
        (rc = repl__copy_col(res, 1, s.plugin, sizeof s.plugin, err)) != 0 ||
        (rc = repl__copy_col(res, 2, s.slot_type, sizeof s.slot_type, err)) != 0 ||
        (rc = repl__copy_col(res, 3, s.database, sizeof s.database, err)) != 0 ||
        (rc = repl__lsn_col(res, 4, &s.confirmed_flush_lsn, err)) != 0 ||
        (rc = repl__lsn_col(res, 5, &s.restart_lsn, err)) != 0 ||
        (rc = repl__copy_col(res, 6, s.wal_status, sizeof s.wal_status, err)) != 0 ||
        (!PQgetisnull(res, 0, 9) && (rc = repl__long_col(res, 9, 1, INT_MAX, &pid, err)) != 0)) {
        sa_err_wrap(err, "slot \"%s\" in pg_replication_slots", slot_name);
        goto done;
    }
    s.temporary = repl__bool_col(res, 7);
    s.active = repl__bool_col(res, 8);
    s.active_pid = (int)pid;
    s.two_phase = repl__bool_col(res, 10);
    *exists = true;
    *out = s;
done:
    PQclear(res);
    return rc;
}

int repl_slot_drop(PGconn *pg, const char *slot_name, sa_err *err)
{
    PGresult *res = NULL;
    int rc = repl_slot_name_check(slot_name, err);
    if (rc == 0)
        rc = repl__query1(pg, "SELECT pg_catalog.pg_drop_replication_slot($1)", slot_name,
                          "dropping replication slot", &res, err);
    PQclear(res);
    return rc;
}

int repl_current_wal_lsn(PGconn *pg, uint64_t *out, sa_err *err)
{
    PGresult *res = NULL;
    uint64_t lsn = 0;
    int rc = repl__query1(pg, "SELECT pg_catalog.pg_current_wal_lsn()", NULL,
                          "reading pg_current_wal_lsn()", &res, err);
    if (rc != 0)
        goto done;
    if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0)) {
        rc = sa_err_set(err, SA_EPROTO, "pg_current_wal_lsn() returned no value");
        goto done;
    }
    if ((rc = repl__lsn_col(res, 0, &lsn, err)) != 0)
        goto done;
    *out = lsn;
done:
    PQclear(res);
    return rc;
}
