/*
 * applier.h — the up path's last step: drain the inbox into PostgreSQL
 * through softadastra.apply_ops, and keep every op's outcome.
 *
 * One thread, its own PostgreSQL connection.  For each origin ("peer@epoch")
 * with queued ops, in seq order, batches of at most APPLIER_BATCH ops:
 *
 *   BEGIN; SELECT ... FROM softadastra.apply_ops(peer, epoch, ops); COMMIT
 *   then, in one synced store write: each op's outcome
 *   (meta "result.<origin>.<seq, 20 digits>" = {"seq", "status",
 *   "conflict_id", "resolution", "message"}), the ops removed from the inbox,
 *   and the origin's applied watermark.
 *
 * Crash between the COMMIT and the store write: the ops are still queued,
 * apply_ops answers "duplicate" for them (its watermark in PostgreSQL is
 * the truth), and their outcomes are read back from softadastra.conflicts
 * and softadastra.rejections — never reported twice, never lost.
 * Transient failures (connection lost, PostgreSQL restarting, deadlocks,
 * serialization failures) are retried with the retry policy; a gap in
 * PostgreSQL's watermark (restored from an older backup) stops that origin
 * with an error in the log.
 */
#ifndef SA_BRIDGE_APPLIER_H
#define SA_BRIDGE_APPLIER_H

#include <stdint.h>

#include "ingest.h"
#include "metrics.h"
#include "sa/sa_err.h"
#include "sa/sa_store.h"

#define APPLIER_BATCH 500
#define APPLIER_RESULT_PREFIX "result."

typedef struct applier applier;

/* store, m: borrowed (must outlive the applier; m may be NULL); pg:
 * conninfo (copied); log: the bridge's log sink (thread-safe), level as
 * ingest's.  Counts outcomes, conflicts (by table, kind, resolution),
 * rejections, batch times and retries in m, and reports its health there
 * (METRICS_APPLIER: failing with the last error while it retries). */
int applier_start(const char *pg, sa_store *store, metrics *m, ingest_log_fn log, void *log_ctx,
                  int log_level, applier **out /* out */, sa_err *err);
/* New ops are queued: look now rather than at the next tick.  Any thread. */
void applier_kick(applier *a);
/* Stop the thread (after the batch in progress) and free.  NULL: no-op. */
void applier_stop(applier *a);

#endif /* SA_BRIDGE_APPLIER_H */
