/*
 * metrics.h — the bridge's own counters, gauges and histograms, and the
 * health of its parts, for /metrics (Prometheus text format 0.0.4),
 * /healthz and `sa-bridge status`.
 *
 * Every metric family is declared once, in metrics.c's table (name, type,
 * help); updating a name not in the table is a programming error and is
 * ignored.  Names follow Prometheus conventions: prefix softadastra_,
 * counters end in _total, durations are _seconds histograms.
 *
 * Labels are given as a NULL-terminated array of name, value pairs
 * ({"peer", "a", NULL}); values are escaped here.  A family holds at most
 * METRICS_MAX_SERIES label sets: beyond that, updates to new label sets
 * are dropped (counted in softadastra_metrics_dropped_total), so memory
 * stays bounded whatever the peers and tables.
 *
 * All calls are thread-safe (one mutex; an update is a hash lookup).
 * Nothing here prints.
 */
#ifndef SA_BRIDGE_METRICS_H
#define SA_BRIDGE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_buf.h"
#include "sa/sa_err.h"

#define METRICS_MAX_SERIES 4096

typedef struct metrics metrics;

int metrics_new(metrics **out /* out */, sa_err *err);
void metrics_free(metrics *m); /* NULL: no-op */

/* Counter += v (v >= 0). */
void metrics_add(metrics *m, const char *name, const char *const *labels, double v);
/* Gauge = v. */
void metrics_set(metrics *m, const char *name, const char *const *labels, double v);
/* Histogram observation (seconds). */
void metrics_observe(metrics *m, const char *name, const char *const *labels, double v);
/* The gauge's current value, or def when it was never set. */
double metrics_get(metrics *m, const char *name, const char *const *labels, double def);

/* Append every family with at least one series, in table order. */
int metrics_render(metrics *m, sa_buf *out, sa_err *err);
/* Append one sample line "name{labels} value" (for gauges computed at
 * scrape time by the caller) and its HELP/TYPE header when help != NULL. */
void metrics_line(sa_buf *out, const char *name, const char *type, const char *help,
                  const char *const *labels, double v);

/* --- health --------------------------------------------------------------- */

typedef enum metrics_part {
    METRICS_REPLICATION, /* the replication connection to PostgreSQL */
    METRICS_APPLIER,     /* the applier's connection and its last batch */
    METRICS_STORAGE,     /* the bridge's RocksDB store */
    METRICS_NPARTS
} metrics_part;

/* Record a part's health: ok, or not with a reason (copied, truncated to
 * 255 bytes).  A part never reported counts as "starting" (not ok). */
void metrics_health_set(metrics *m, metrics_part part, int ok, const char *reason);
/* The part's state: 1 ok, 0 not (reason filled, "" if none), -1 never
 * reported.  since_ms: CLOCK_REALTIME ms of the last change of state. */
int metrics_health_get(metrics *m, metrics_part part, char *reason, size_t cap,
                       uint64_t *since_ms /* out, may be NULL */);
const char *metrics_part_name(metrics_part part); /* "replication", ... */

#endif /* SA_BRIDGE_METRICS_H */
