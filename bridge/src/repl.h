/*
 * repl.h — the streaming replication client: one libpq connection in
 * replication=database mode that creates a logical slot (pgoutput), starts
 * streaming from it and reports progress back.
 *
 * Two halves:
 *
 *   - Framing, sans-I/O (repl_parse_copydata, repl_build_status, the LSN
 *     helpers): bytes in, values out, no socket.  Unit-tested with fixtures.
 *   - The connection (repl_conn_*, repl_next, repl_send_status): libpq, with
 *     every wait bounded.  repl_next never blocks longer than its timeout.
 *
 * Plus slot administration over an ordinary (non-replication) connection:
 * repl_slot_get, repl_slot_drop, repl_current_wal_lsn.  All SQL there binds
 * its values as parameters.
 *
 * Wire formats (PostgreSQL "Streaming Replication Protocol", all integers
 * big-endian, inside CopyData messages of a COPY BOTH stream):
 *
 *   server → us   'w' XLogData     int64 dataStart, int64 walEnd,
 *                                  int64 sendTime, then the payload (one
 *                                  pgoutput message) up to the end
 *   server → us   'k' keepalive    int64 walEnd, int64 sendTime,
 *                                  byte replyRequested            (18 bytes)
 *   us → server   'r' status       int64 write, int64 flush, int64 apply,
 *                                  int64 clock, byte replyRequested (34 bytes)
 *
 * Times on the wire are microseconds since 2000-01-01 00:00:00 UTC (the
 * PostgreSQL epoch).
 *
 * Lifetime of a connection:
 *
 *     repl_conn_open ──▶ IDLE ──repl_start──▶ STREAMING ──(server ends, or
 *                         │  ▲                    │        connection lost)──▶ DEAD
 *                         │  └ identify_system,   │
 *                         │    create_slot        │
 *                         └────────── repl_conn_close (any state) ◀──┘
 *
 * In IDLE, commands run; in STREAMING, only repl_next / repl_send_status;
 * in DEAD, everything fails with SA_ECLOSED except repl_conn_close.
 * A repl_conn is not thread-safe: one thread at a time.
 */
#ifndef SA_REPL_H
#define SA_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "sa/sa_err.h"

/* --- constants ----------------------------------------------------------- */

/* "FFFFFFFF/FFFFFFFF" plus NUL. */
#define REPL_LSN_STRLEN 18
/* The Standby Status Update is always this long. */
#define REPL_STATUS_LEN 34
/* Fixed parts of the server's messages (type byte included). */
#define REPL_XLOGDATA_HDR_LEN 25
#define REPL_KEEPALIVE_LEN 18
/* PostgreSQL's NAMEDATALEN - 1: the longest slot / publication name. */
#define REPL_NAME_MAX 63
/* Seconds between 1970-01-01 and 2000-01-01 (the PostgreSQL epoch). */
#define REPL_PG_EPOCH_UNIX_S 946684800LL
/* repl_send_status waits at most this long for the socket to take a
 * status message before giving up with SA_ETIMEOUT. */
#define REPL_SEND_TIMEOUT_MS 10000
/* Supported pgoutput protocol versions (errors name both ends). */
#define REPL_PROTO_MIN 1
#define REPL_PROTO_MAX 4

/* --- framing (sans-I/O) -------------------------------------------------- */

/* The message type bytes; the enum values are the wire bytes. */
typedef enum repl_frame_type {
    REPL_FRAME_XLOGDATA = 'w',
    REPL_FRAME_KEEPALIVE = 'k',
    REPL_FRAME_STATUS = 'r', /* ours, never parsed from the server */
} repl_frame_type;

/* One parsed CopyData message from the server.  Caller-allocated. */
typedef struct repl_frame {
    repl_frame_type type;
    uint64_t data_start;  /* 'w': WAL position of the payload; 'k': 0 */
    uint64_t wal_end;     /* both: the server's current end of WAL */
    int64_t send_time;    /* both: server clock, µs since 2000-01-01 */
    bool reply_requested; /* 'k': the server wants a status now; 'w': false */
    /* 'w': the pgoutput message, borrowed from the parsed buffer (from
     * repl_next: owned by the connection, valid until the next repl_next or
     * repl_conn_close on it; repl_send_status leaves it alone).  'k': NULL / 0. */
    const uint8_t *payload;
    size_t payload_len;
} repl_frame;

/*
 * Parse one CopyData payload (buf, len; borrowed).  On success fills *out;
 * out->payload points into buf.  SA_EPROTO (message names the type byte and
 * the lengths) for an empty buffer, an unknown type byte, a truncated
 * message or a keepalive with trailing bytes; *out is then untouched.
 */
int repl_parse_copydata(const uint8_t *buf, size_t len, repl_frame *out /* out */, sa_err *err);

/*
 * Write the 34-byte Standby Status Update into buf: 'r', write, flush,
 * apply (LSNs), now (µs since 2000-01-01), reply_requested (0/1).
 * Never fails.  Returns REPL_STATUS_LEN.
 */
size_t repl_build_status(uint8_t buf[REPL_STATUS_LEN], uint64_t write_lsn, uint64_t flush_lsn,
                         uint64_t apply_lsn, int64_t now_pg_us, bool reply_requested);

/* The wall clock as µs since 2000-01-01 (what the status message carries). */
int64_t repl_now_pg_us(void);

/* A monotonic clock in milliseconds (for repl_is_stale and timeouts). */
int64_t repl_clock_ms(void);

/* --- LSNs ---------------------------------------------------------------- */

/* Format as PostgreSQL does ("%X/%X": upper-case hex, no padding, e.g.
 * "0/16B3748").  Returns buf. */
char *repl_lsn_format(uint64_t lsn, char buf[REPL_LSN_STRLEN]);

/*
 * Parse "hi/lo": 1–8 hex digits, '/', 1–8 hex digits, nothing else (the
 * rule of pg_lsn_in; either case of hex digits).  SA_EINVAL naming the text
 * otherwise; *out untouched then.
 */
int repl_lsn_parse(const char *s, uint64_t *out /* out */, sa_err *err);

/* --- names --------------------------------------------------------------- */

/*
 * PostgreSQL's slot name rule: 1–63 characters from [a-z0-9_].  0 if valid,
 * else SA_EINVAL saying which rule the name breaks.  Checked locally by
 * every function taking a slot name, before anything is sent.
 */
int repl_slot_name_check(const char *name, sa_err *err);

/*
 * Publication names are identifiers of 1–63 bytes; any character is allowed
 * (they are always sent double-quoted, so case is kept and quotes, commas and
 * backslashes are safe).  SA_EINVAL for NULL, empty or too long.
 */
int repl_publication_name_check(const char *name, sa_err *err);

/* --- the replication connection ----------------------------------------- */

typedef struct repl_conn repl_conn;

/*
 * Open a replication connection.  conninfo (borrowed; a key=value string or
 * a postgresql:// URI; NULL or "" = the PG* environment only) is expanded by
 * libpq, then replication=database is forced; fallback_application_name is
 * "sa-bridge" (the caller's application_name wins, since it may be named in
 * synchronous_standby_names), and connect_timeout defaults to 10 s unless
 * conninfo or PGCONNECT_TIMEOUT sets it.  Blocks for at most that.
 *
 * On success *out is a new handle the caller frees with repl_conn_close().
 * Errors: SA_EPG with libpq's message (bad conninfo, refused, auth failed,
 * no replication entry in pg_hba.conf...), SA_ENOMEM.  *out untouched.
 */
int repl_conn_open(const char *conninfo, repl_conn **out /* out */, sa_err *err);

/*
 * Close: if streaming, sends CopyDone (best effort, not waited for), then
 * PQfinish.  Frees the handle and any frame payload it owned.  NULL is a
 * no-op.
 */
void repl_conn_close(repl_conn *c);

/* The libpq connection, borrowed (for PQserverVersion, PQbackendPID...).
 * Do not run commands on it while streaming; do not PQfinish it. */
PGconn *repl_conn_pg(repl_conn *c);

/* Result of IDENTIFY_SYSTEM.  Caller-allocated, holds no pointers. */
typedef struct repl_system {
    char systemid[24];              /* decimal 64-bit database system identifier */
    uint32_t timeline;              /* current timeline */
    uint64_t xlogpos;               /* current WAL flush position */
    char dbname[REPL_NAME_MAX + 1]; /* database connected to */
} repl_system;

/* IDENTIFY_SYSTEM.  SA_EPG (server's message), SA_EPROTO (unexpected
 * shape), SA_ECLOSED if streaming or dead.  *out untouched on error. */
int repl_identify_system(repl_conn *c, repl_system *out /* out */, sa_err *err);

/* Result of CREATE_REPLICATION_SLOT.  Caller-allocated, no pointers. */
typedef struct repl_slot_created {
    uint64_t consistent_point; /* stream from here: changes after the snapshot */
    /* With export_snapshot: the exported snapshot's name, else "".  The
     * snapshot exists only until the NEXT command on this replication
     * connection (repl_start included): another, ordinary connection must
     * import it first (BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION
     * SNAPSHOT '<name>') — then that transaction sees the database exactly
     * as of consistent_point, for as long as it stays open. */
    char snapshot_name[64];
} repl_slot_created;

/*
 * CREATE_REPLICATION_SLOT "slot_name" LOGICAL pgoutput, exporting a snapshot
 * or not (PG15+: (SNAPSHOT 'export'|'nothing'); PG14: EXPORT_SNAPSHOT /
 * NOEXPORT_SNAPSHOT — chosen by PQserverVersion).  slot_name is borrowed and
 * checked by repl_slot_name_check first (SA_EINVAL, nothing sent).
 * Errors: SA_EEXISTS (the slot exists: SQLSTATE 42710), SA_EPG (other server
 * errors, e.g. no free slot), SA_EPROTO, SA_ECLOSED.  *out untouched on error.
 */
int repl_create_slot(repl_conn *c, const char *slot_name, bool export_snapshot,
                     repl_slot_created *out /* out */, sa_err *err);

/* What repl_start asks pgoutput for.  Caller-allocated; borrowed. */
/* As repl_create_slot; a temporary slot disappears with the connection
 * (used to take a snapshot for copying a table added later). */
int repl_create_slot_ex(repl_conn *c, const char *slot_name, bool export_snapshot, bool temporary,
                        repl_slot_created *out /* out */, sa_err *err);

typedef struct repl_start_opts {
    uint32_t proto_version;          /* REPL_PROTO_MIN..REPL_PROTO_MAX; 2 for streaming */
    bool streaming;                  /* stream in-progress transactions (proto >= 2) */
    bool messages;                   /* logical decoding messages (pg_logical_emit_message) */
    const char *const *publications; /* borrowed, npublications names */
    size_t npublications;            /* >= 1 */
} repl_start_opts;

/*
 * START_REPLICATION SLOT "slot" LOGICAL start_lsn ("proto_version" 'N',
 * "streaming" 'on', "messages" 'true', "publication_names" '"a","b"') and
 * check that the server answered with COPY BOTH.  Names are checked before
 * anything is sent (SA_EINVAL).  On success the connection is STREAMING (and
 * in libpq non-blocking mode).  Errors: SA_EPG with the server's message
 * (unknown slot, slot in use, unknown publication, ...), SA_EINVAL,
 * SA_ECLOSED.
 */
int repl_start(repl_conn *c, const char *slot_name, uint64_t start_lsn, const repl_start_opts *opts,
               sa_err *err);

/*
 * Wait at most timeout_ms (0 = just look; < 0 is treated as 0) for the next
 * message.  Returns 1 with *out filled (payload owned by the connection: see
 * repl_frame), 0 on timeout with nothing received, < 0 on error:
 *   SA_EIO      connection lost (libpq's message) or the server ended the
 *               stream (CopyDone; the message says so and includes the
 *               server's error if it sent one).  The connection is DEAD.
 *   SA_EPROTO   a message that does not parse (the stream is unusable).
 *   SA_ECLOSED  not streaming.
 * Pending outgoing bytes (a status that did not fit the socket) are flushed
 * along the way.  Every call frees the previous call's payload.
 */
int repl_next(repl_conn *c, int timeout_ms, repl_frame *out /* out */, sa_err *err);

/*
 * Send a Standby Status Update (clock = now) and flush it, waiting for the
 * socket at most REPL_SEND_TIMEOUT_MS (SA_ETIMEOUT: if the message was queued
 * the next repl_next keeps flushing it; else it was not sent — send again).  flush_lsn is the
 * promise "everything up to here is durable on our side": the server may
 * recycle WAL before it, and the slot's confirmed_flush_lsn becomes it.
 * Errors: SA_EIO (libpq's message; the connection is DEAD), SA_ETIMEOUT,
 * SA_ECLOSED.
 */
int repl_send_status(repl_conn *c, uint64_t write_lsn, uint64_t flush_lsn, uint64_t apply_lsn,
                     bool reply_requested, sa_err *err);

/*
 * repl_clock_ms() time of the last byte received from the server (set at
 * open, then whenever data arrives).  A healthy walsender sends a keepalive
 * at least every wal_sender_timeout / 2 when idle, so silence much longer
 * than that means a dead peer or a half-open TCP connection.
 */
int64_t repl_last_server_activity_ms(const repl_conn *c);

/*
 * True when nothing was received for more than timeout_ms before now_ms
 * (a repl_clock_ms() value).  The caller picks the bound — e.g. twice the
 * server's wal_sender_timeout — and on true closes the connection and
 * reconnects: a half-open connection never errors by itself.
 */
bool repl_is_stale(const repl_conn *c, int64_t now_ms, int64_t timeout_ms);

/* --- slot administration (ordinary connection, parameters bound) --------- */

/* One row of pg_replication_slots.  Caller-allocated, no pointers.  NULL
 * columns are "" / 0. */
typedef struct repl_slot_info {
    char slot_name[REPL_NAME_MAX + 1];
    char plugin[REPL_NAME_MAX + 1];   /* "" for a physical slot */
    char slot_type[16];               /* "logical" / "physical" */
    char database[REPL_NAME_MAX + 1]; /* "" for a physical slot */
    uint64_t confirmed_flush_lsn;     /* 0 when NULL */
    uint64_t restart_lsn;             /* 0 when NULL (e.g. lost) */
    char wal_status[16];              /* reserved/extended/unreserved/lost, "" */
    bool temporary;
    bool active;
    int active_pid; /* 0 when inactive */
    bool two_phase;
} repl_slot_info;

/*
 * Look up slot_name (borrowed; checked by repl_slot_name_check) in
 * pg_replication_slots on the ordinary connection pg (borrowed).  On success
 * *exists says whether it was found and, if so, *out is filled; *out is
 * untouched when it does not exist or on error.  Errors: SA_EINVAL,
 * SA_EPG (server's message), SA_EPROTO.
 */
int repl_slot_get(PGconn *pg, const char *slot_name, bool *exists /* out */,
                  repl_slot_info *out /* out */, sa_err *err);

/* SELECT pg_drop_replication_slot($1).  SA_ENOTFOUND if there is no such
 * slot, SA_EBUSY if a walsender holds it (the message has the pid),
 * SA_EINVAL, SA_EPG. */
int repl_slot_drop(PGconn *pg, const char *slot_name, sa_err *err);

/* pg_current_wal_lsn() into *out.  SA_EPG (e.g. on a standby). */
int repl_current_wal_lsn(PGconn *pg, uint64_t *out /* out */, sa_err *err);

/* --- internal, shared with pgcheck.c ------------------------------------- */

/* libpq's error text for conn (or res, if not NULL) without the trailing
 * newline, copied into buf.  Returns buf. */
const char *repl__pg_msg(PGconn *conn, const PGresult *res, char *buf, size_t cap);

#endif /* SA_REPL_H */
