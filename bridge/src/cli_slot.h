/*
 * cli_slot.h — `sa-bridge drop-slot`: find which replication slot to drop
 * (named explicitly, or the one the bridge recorded in its store) and drop
 * it over an ordinary connection.  Never picks a slot by guessing.
 */
#ifndef SA_BRIDGE_CLI_SLOT_H
#define SA_BRIDGE_CLI_SLOT_H

#include "repl.h"
#include "sa/sa_err.h"

/*
 * The slot name ingest recorded (INGEST_META_SLOT) in the store of the data
 * directory data_dir (borrowed), opened read-only.  SA_ENOTFOUND when none
 * is recorded; SA_ECORRUPT when the recorded value is not a valid slot
 * name; errors of cli_store_open_ro.  buf untouched on error.
 */
int cli_recorded_slot(const char *data_dir, char buf[REPL_NAME_MAX + 1] /* out */, sa_err *err);

/*
 * Connect with conninfo (borrowed; "" or NULL = the PG* environment) and
 * drop slot_name (checked first).  Errors: SA_EINVAL (bad name, nothing
 * sent), SA_EPG (cannot connect, server error), SA_ENOTFOUND (no such slot),
 * SA_EBUSY (a walsender holds it: the message has its pid).
 */
int cli_drop_slot(const char *conninfo, const char *slot_name, sa_err *err);

#endif /* SA_BRIDGE_CLI_SLOT_H */
