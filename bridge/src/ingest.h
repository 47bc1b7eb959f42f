/*
 * ingest.h — the down path's first half: from a PostgreSQL commit to the
 * bridge's durable WAL (logical replication with pgoutput).  ingest_run is
 * the `sa-bridge run` job: it checks preconditions, creates or reuses the
 * publication and slot, performs the initial sync, then streams until
 * *stop becomes non-zero, reconnecting with the retry policy.
 */
#ifndef SA_BRIDGE_INGEST_H
#define SA_BRIDGE_INGEST_H

#include <signal.h>

#include "config.h"
#include "sa/sa_err.h"

/* Log sink: level 0 error .. 3 debug, or INGEST_LOG_PROGRESS for the
 * initial sync's progress line (a terminal may redraw it in place; logs
 * print it as a plain line).  msg is one line without a newline. */
#define INGEST_LOG_PROGRESS 4
typedef void (*ingest_log_fn)(void *ctx, int level, const char *msg);

/* Runs until *stop (set from a signal handler) or a fatal error.  Returns 0
 * after a clean stop. */
int ingest_run(const sa_bridge_config *cfg, volatile sig_atomic_t *stop, ingest_log_fn log,
               void *log_ctx, sa_err *err);

/* The store directory inside a data directory: DIR/store.  Caller frees. */
char *ingest_store_dir(const char *data_dir);

/* Meta keys the ingest keeps in the store (sa_batch_meta_put), for the
 * admin commands: */
#define INGEST_META_SLOT "ingest.slot"                 /* slot name we created */
#define INGEST_META_SLOT_LSN "ingest.slot_lsn"         /* its consistent point, X/X */
#define INGEST_META_SYSID "ingest.sysid"               /* server system identifier */
#define INGEST_META_COMMIT_LSN "ingest.commit_lsn"     /* last durable commit LSN */
#define INGEST_META_END_LSN "ingest.end_lsn"           /* its end LSN (flush position) */
#define INGEST_META_CONFIRMED "ingest.confirmed_lsn"   /* highest LSN ever confirmed */
#define INGEST_META_RESYNC_SEQ "ingest.resync_seq"     /* WAL seq of the last resync point */
#define INGEST_META_STATE "ingest.state"               /* "initial-sync" | "streaming" */
/* + "peer@epoch": the highest edge op seq of that origin that a
 * transaction in the WAL applied (written with that transaction) */
#define INGEST_META_CONFIRM "confirm."

#endif /* SA_BRIDGE_INGEST_H */
