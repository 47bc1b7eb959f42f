/*
 * pg_harness.h — a throwaway PostgreSQL cluster for integration tests.
 *
 * sa_pgh_start() creates a temp directory, runs initdb, and starts a server
 * configured for logical decoding (wal_level=logical, slots, wal senders,
 * pgoutput/test_decoding allowed) on a free 127.0.0.1 port and on a unix
 * socket inside the temp directory.  sa_pgh_stop() stops it and removes the
 * directory.
 *
 * Cleanup guarantee: the cluster and its directory go away however the test
 * process ends —
 *   - normal end:           the test calls sa_pgh_stop();
 *   - exit() (cmocka fail): an atexit handler stops every live cluster;
 *   - SIGINT/TERM/HUP/QUIT/ABRT: a signal handler wakes the guardian (below),
 *                           waits for it to finish, then re-raises the signal;
 *   - SIGKILL, crash:       a guardian process, started with the cluster,
 *                           holds the read end of a pipe whose only write end
 *                           is in the test process; when the test dies the
 *                           read returns EOF and the guardian runs
 *                           `pg_ctl stop -m immediate` and removes the
 *                           directory.  The guardian is double-forked into
 *                           its own session so a process-tree kill of the test
 *                           (ctest timeout) does not take it down too.
 * A test that fork()s without exec keeps a copy of the pipe's write end, so
 * the guardian fires only when all those processes are gone; handlers only
 * act on clusters created by the current pid.
 *
 * When the caller is root, initdb and the server run as the `postgres` user
 * (PostgreSQL refuses root); otherwise as the caller.
 *
 * Environment: SA_TEST_TMPDIR (parent of the temp dir, created if missing;
 * default /tmp); PG_BINDIR overrides the compiled-in SA_PG_BINDIR.
 *
 * Not thread-safe: use one handle from one thread.
 */
#ifndef SA_PG_HARNESS_H
#define SA_PG_HARNESS_H

#include "sa/sa_err.h"

/* An opaque running (or stopped) cluster.  Free with sa_pgh_stop(). */
typedef struct sa_pgh sa_pgh;

/* Options for sa_pgh_start(); zero-initialise, or pass NULL for defaults. */
typedef struct sa_pgh_options {
    /* Lines appended last to the server configuration (so they override the
     * harness defaults), e.g. "logical_decoding_work_mem = '1MB'\n".
     * Borrowed for the duration of sa_pgh_start(); may be NULL. */
    const char *extra_conf;
} sa_pgh_options;

/* --- lifecycle ----------------------------------------------------------- */

/*
 * Create, initdb and start a cluster.  On success *out is a new handle the
 * caller frees with sa_pgh_stop().  On error *out is untouched, nothing is
 * left on disk or running, and err says what failed (for a failed server
 * start, with the tail of the server log).
 */
int sa_pgh_start(const sa_pgh_options *opt, sa_pgh **out /* out */, sa_err *err);

/* Stop the server (fast shutdown), remove the temp directory, stop the
 * guardian, free the handle.  NULL is a no-op.  Never fails loudly: this is
 * cleanup, so it does what it can. */
void sa_pgh_stop(sa_pgh *h);

/* Stop only the server; the directory stays.  immediate != 0 uses
 * `-m immediate` (a crash as far as Postgres is concerned: recovery runs at
 * the next start), else `-m fast`.  The cached connection is closed. */
int sa_pgh_stop_server(sa_pgh *h, int immediate, sa_err *err);

/* Start the server again after sa_pgh_stop_server(), on the same port. */
int sa_pgh_start_server(sa_pgh *h, sa_err *err);

/* Fast stop + start.  The cached connection is closed (reopened lazily). */
int sa_pgh_restart(sa_pgh *h, sa_err *err);

/* --- facts about the cluster (strings borrowed; valid until sa_pgh_stop) - */

/* libpq keyword/value string over the unix socket:
 * "host=<socketdir> port=N user=postgres dbname=postgres". */
const char *sa_pgh_conninfo(const sa_pgh *h);
/* The same over TCP: "host=127.0.0.1 port=N user=postgres dbname=postgres". */
const char *sa_pgh_conninfo_tcp(const sa_pgh *h);
/* The data directory (PGDATA). */
const char *sa_pgh_datadir(const sa_pgh *h);
/* The temp directory holding everything (data dir, logs); removed on stop. */
const char *sa_pgh_dir(const sa_pgh *h);
/* The server log file. */
const char *sa_pgh_logfile(const sa_pgh *h);
/* The unix socket directory. */
const char *sa_pgh_sockdir(const sa_pgh *h);
int sa_pgh_port(const sa_pgh *h);
/* The postmaster's pid from postmaster.pid, or -1 if the server is not
 * running (no readable pid file). */
long sa_pgh_server_pid(const sa_pgh *h);

/* --- SQL ----------------------------------------------------------------- */

/*
 * Run one or many ;-separated statements (PQexec) on a connection the handle
 * caches (opened on first use, reopened if it broke).  If out_text is not
 * NULL, on success *out_text is the text of the last result like
 * `psql -At`: rows separated by '\n' (no trailing newline), columns by '|',
 * NULL as an empty string; "" for commands without rows.  Caller frees it
 * with sa_free().  Errors: SA_EPG with the server's message (SQL errors,
 * connection failures), SA_ENOMEM.
 */
int sa_pgh_exec(sa_pgh *h, const char *sql, char **out_text /* out */, sa_err *err);

#endif /* SA_PG_HARNESS_H */
