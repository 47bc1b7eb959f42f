/*
 * cli_wal.h — `sa-bridge wal`: print the bridge's WAL for inspection, from
 * a read-only open of DIR/store, so it works while the bridge runs.
 */
#ifndef SA_BRIDGE_CLI_WAL_H
#define SA_BRIDGE_CLI_WAL_H

#include <stdint.h>
#include <stdio.h>

#include "sa/sa_err.h"
#include "sa/sa_store.h"

/* DIR/store for the data directory DIR (what ingest_store_dir gives).
 * Caller frees with sa_free; NULL when out of memory. */
char *cli_store_dir(const char *data_dir);

/*
 * Open the store of the data directory data_dir (borrowed) READ-ONLY,
 * beside a running writer; it sees the database as of the open.  Errors:
 * SA_ENOTFOUND (no such directory), SA_EFORMAT (not a data directory: no
 * store inside, or something else there), SA_EVERSION, SA_EIO, SA_ENOMEM;
 * each message names the directory.  *out: sa_store_close; untouched on
 * error.
 */
int cli_store_open_ro(const char *data_dir, sa_store **out /* out */, sa_err *err);

/*
 * Write the WAL records of data_dir with seq >= from (at most limit of
 * them; 0 = all) to out (borrowed), one line each:
 *
 *   json = 0:  SEQ KIND TABLE key={...} cols={...} [origin=O] [lsn=X/X xid=N]
 *              [unchanged=[...]] [end]     ("end": last op of a transaction)
 *   json = 1:  the op's wire object (sa_op_to_json) with "seq" set to the
 *              WAL seq ("op_seq" added when the op has its own, e.g. from an
 *              edge) and these members added:
 *                "commit_lsn": "X/X" | null, "xid": n | null,
 *                "commit_time": µs since 1970 | null   (null without a
 *                PostgreSQL position), "group_end": true | false
 *
 * Key and column values are JSON in both forms.  Does not flush out.
 * Errors: those of cli_store_open_ro, SA_ECORRUPT / SA_EIO reading, SA_EIO
 * when writing to out fails.  Lines written before an error stay written.
 */
int cli_wal_print(const char *data_dir, uint64_t from, uint64_t limit, int json, FILE *out,
                  sa_err *err);

#endif /* SA_BRIDGE_CLI_WAL_H */
