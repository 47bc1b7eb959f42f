/*
 * cli_wal.c — `sa-bridge wal`: walks the WAL of a data directory through a
 * read-only store handle and writes one line per op (human or JSON) to a
 * stream the caller gives.  Formats are described in cli_wal.h.
 */
#include "cli_wal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "repl.h"
#include "sa/sa_alloc.h"

/* ====================================================================== */
/* Opening the store                                                      */
/* ====================================================================== */

/* Must stay the join ingest_store_dir (ingest.c) makes. */
char *cli_store_dir(const char *data_dir)
{
    size_t n = strlen(data_dir);
    while (n > 1 && data_dir[n - 1] == '/')
        n--;
    char *p = sa_malloc(n + sizeof "/store");
    if (p == NULL)
        return NULL;
    memcpy(p, data_dir, n);
    memcpy(p + n, "/store", sizeof "/store");
    return p;
}

int cli_store_open_ro(const char *data_dir, sa_store **out, sa_err *err)
{
    int rc = 0;
    struct stat st;
    char *dir = NULL;
    if (stat(data_dir, &st) != 0) {
        int e = errno;
        rc = e == ENOENT
                 ? sa_err_set(err, SA_ENOTFOUND, "data directory '%s' does not exist", data_dir)
                 : sa_err_set(err, SA_EIO, "cannot read data directory '%s': %s", data_dir,
                              strerror(e));
        goto done;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = sa_err_set(err, SA_EFORMAT, "'%s' is not a directory", data_dir);
        goto done;
    }
    if ((dir = cli_store_dir(data_dir)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    if (stat(dir, &st) != 0) {
        int e = errno;
        rc = e == ENOENT
                 ? sa_err_set(err, SA_EFORMAT,
                              "'%s' is not a sa-bridge data directory (it has no store)", data_dir)
                 : sa_err_set(err, SA_EIO, "cannot read '%s': %s", dir, strerror(e));
        goto done;
    }
    sa_store_options opt;
    sa_store_options_init(&opt);
    opt.read_only = 1;
    opt.create_if_missing = 0;
    rc = sa_store_open(dir, &opt, out, err);
done:
    sa_free(dir);
    return rc;
}

/* ====================================================================== */
/* One record                                                             */
/* ====================================================================== */

static int set_member(json_t *obj, const char *key, json_t *val, sa_err *err)
{
    if (val == NULL || json_object_set_new(obj, key, val) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory building '%s'", key);
    return 0;
}

/* The JSON line of a record: a new reference in *out. */
static int rec_json(const sa_wal_rec *rec, json_t **out, sa_err *err)
{
    const sa_op *op = rec->op;
    json_t *j = NULL;
    int rc = sa_op_to_json(op, &j, err);
    if (rc != 0)
        goto done;
    if (op->seq != 0 && op->seq != rec->seq &&
        (rc = set_member(j, "op_seq", json_integer((json_int_t)op->seq), err)) != 0)
        goto done;
    if ((rc = set_member(j, "seq", json_integer((json_int_t)rec->seq), err)) != 0)
        goto done;
    int has_pg = (op->flags & SA_OP_HAS_PG) != 0;
    char lsn[REPL_LSN_STRLEN];
    if ((rc = set_member(j, "commit_lsn",
                         has_pg ? json_string(repl_lsn_format(op->pg_lsn, lsn)) : json_null(),
                         err)) != 0 ||
        (rc = set_member(j, "xid", has_pg ? json_integer((json_int_t)op->pg_xid) : json_null(),
                         err)) != 0 ||
        (rc = set_member(j, "commit_time",
                         has_pg ? json_integer((json_int_t)op->pg_commit_time) : json_null(),
                         err)) != 0 ||
        (rc = set_member(j, "group_end", json_boolean(rec->group_end), err)) != 0)
        goto done;
    *out = j;
    j = NULL;
done:
    json_decref(j);
    return rc;
}

/* fputs that reports a failed write. */
static int put(FILE *out, const char *s, sa_err *err)
{
    if (fputs(s, out) == EOF)
        return sa_err_set(err, SA_EIO, "cannot write the output: %s", strerror(errno));
    return 0;
}

/* Write member `key` of j compactly after prefix (" key=").  Absent: skip. */
static int put_member(FILE *out, const json_t *j, const char *key, const char *prefix, sa_err *err)
{
    json_t *v = json_object_get(j, key);
    if (v == NULL)
        return 0;
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory formatting '%s'", key);
    int rc = put(out, prefix, err);
    if (rc == 0)
        rc = put(out, s, err);
    free(s); /* jansson's allocator */
    return rc;
}

static int print_human(FILE *out, const sa_wal_rec *rec, const json_t *j, sa_err *err)
{
    const sa_op *op = rec->op;
    char lsn[REPL_LSN_STRLEN];
    int rc;
    if (fprintf(out, "%llu %s %s", (unsigned long long)rec->seq, sa_op_kind_name(op->kind),
                op->table) < 0)
        return sa_err_set(err, SA_EIO, "cannot write the output: %s", strerror(errno));
    if ((rc = put_member(out, j, "key", " key=", err)) != 0 ||
        (rc = put_member(out, j, "cols", " cols=", err)) != 0)
        return rc;
    if (strcmp(op->origin, "pg") != 0 && (rc = put_member(out, j, "origin", " origin=", err)) != 0)
        return rc;
    if ((op->flags & SA_OP_HAS_PG) != 0 &&
        fprintf(out, " lsn=%s xid=%u", repl_lsn_format(op->pg_lsn, lsn), op->pg_xid) < 0)
        return sa_err_set(err, SA_EIO, "cannot write the output: %s", strerror(errno));
    if ((rc = put_member(out, j, "unchanged", " unchanged=", err)) != 0)
        return rc;
    return put(out, rec->group_end ? " end\n" : "\n", err);
}

/* ====================================================================== */
/* The command                                                            */
/* ====================================================================== */

int cli_wal_print(const char *data_dir, uint64_t from, uint64_t limit, int json, FILE *out,
                  sa_err *err)
{
    sa_store *s = NULL;
    sa_wal_iter *it = NULL;
    json_t *j = NULL;
    char *line = NULL;
    int rc = cli_store_open_ro(data_dir, &s, err);
    if (rc != 0)
        goto done;
    if ((rc = sa_wal_iter_open(s, from, &it, err)) != 0)
        goto done;
    for (uint64_t n = 0; limit == 0 || n < limit; n++) {
        sa_wal_rec rec;
        int more = sa_wal_iter_next(it, &rec, err);
        if (more <= 0) {
            rc = more;
            break;
        }
        if ((rc = rec_json(&rec, &j, err)) != 0) {
            sa_err_wrap(err, "WAL record %llu", (unsigned long long)rec.seq);
            goto done;
        }
        if (json) {
            if ((line = json_dumps(j, JSON_COMPACT)) == NULL) {
                rc = sa_err_set(err, SA_ENOMEM, "out of memory formatting record %llu",
                                (unsigned long long)rec.seq);
                goto done;
            }
            if ((rc = put(out, line, err)) != 0 || (rc = put(out, "\n", err)) != 0)
                goto done;
            free(line);
            line = NULL;
        } else if ((rc = print_human(out, &rec, j, err)) != 0) {
            goto done;
        }
        json_decref(j);
        j = NULL;
    }
done:
    free(line);
    json_decref(j);
    sa_wal_iter_close(it);
    sa_store_close(s);
    return rc;
}
