/*
 * cli_slot.c — `sa-bridge drop-slot`: the slot ingest recorded in the store,
 * and dropping a slot over an ordinary libpq connection.
 */
#include "cli_slot.h"

#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "cli_wal.h"
#include "ingest.h" /* INGEST_META_SLOT only: nothing of ingest.c is linked */
#include "sa/sa_alloc.h"
#include "sa/sa_store.h"

int cli_recorded_slot(const char *data_dir, char buf[REPL_NAME_MAX + 1], sa_err *err)
{
    sa_store *s = NULL;
    void *val = NULL;
    size_t len = 0;
    int rc = cli_store_open_ro(data_dir, &s, err);
    if (rc != 0)
        goto done;
    rc = sa_store_meta_get(s, INGEST_META_SLOT, &val, &len, err);
    if (rc == SA_ENOTFOUND) {
        rc = sa_err_set(err, SA_ENOTFOUND, "no replication slot is recorded in '%s'", data_dir);
        goto done;
    }
    if (rc != 0)
        goto done;
    /* sa_store_meta_get NUL-terminates; a NUL inside is as bad as a bad name. */
    if (strlen(val) != len || repl_slot_name_check(val, err) != 0) {
        rc = sa_err_set(err, SA_ECORRUPT, "the slot name recorded in '%s' is not a valid slot name",
                        data_dir);
        goto done;
    }
    memcpy(buf, val, len + 1);
done:
    sa_free(val);
    sa_store_close(s);
    return rc;
}

int cli_drop_slot(const char *conninfo, const char *slot_name, sa_err *err)
{
    PGconn *pg = NULL;
    const char *kw[5];
    const char *val[5];
    size_t i = 0;
    char m[SA_ERR_MSG_MAX];
    int rc = repl_slot_name_check(slot_name, err);
    if (rc != 0)
        goto done;
    /* As repl_conn_open: our connect_timeout is a default that conninfo
     * (expanded after it) and PGCONNECT_TIMEOUT override. */
    if (getenv("PGCONNECT_TIMEOUT") == NULL) {
        kw[i] = "connect_timeout";
        val[i++] = "10";
    }
    kw[i] = "dbname";
    val[i++] = conninfo != NULL ? conninfo : "";
    kw[i] = "fallback_application_name";
    val[i++] = "sa-bridge";
    kw[i] = NULL;
    val[i] = NULL;
    if ((pg = PQconnectdbParams(kw, val, 1)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory in libpq");
        goto done;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = sa_err_set(err, SA_EPG, "cannot connect to PostgreSQL: %s",
                        repl__pg_msg(pg, NULL, m, sizeof m));
        goto done;
    }
    rc = repl_slot_drop(pg, slot_name, err);
done:
    PQfinish(pg);
    return rc;
}
