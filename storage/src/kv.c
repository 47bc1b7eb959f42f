/*
 * kv.c — the only file that speaks RocksDB's C API.  It opens the database
 * with our column families, turns every errptr into an SA_E* code with a
 * message, and offers batches, gets, snapshots, bounded iterators and
 * checkpoints to the rest of storage/.
 */
#include "kv.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sa/sa_alloc.h"

static const char *const cf_names[SA_CF_COUNT] = {"wal", "state", "cursors", "inbox", "meta"};

struct sa__kv {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wo_sync;
    rocksdb_writeoptions_t *wo_nosync;
    rocksdb_readoptions_t *ro;
    rocksdb_column_family_handle_t *cf[SA_CF_COUNT + 1]; /* [SA_CF_COUNT] = default */
    int read_only;
    char *secondary; /* read-only opens: the secondary instance's directory */
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_secondary(sa__kv *kv)
{
    if (kv->secondary == NULL)
        return;
    nftw(kv->secondary, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    sa_free(kv->secondary);
    kv->secondary = NULL;
}

struct sa__kv_batch {
    sa__kv *kv; /* the database whose CF handles the batch names */
    rocksdb_writebatch_t *wb;
};

struct sa__kv_snap {
    const rocksdb_snapshot_t *snap;
};

struct sa__kv_iter {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro;
    void *hi; /* the upper bound must outlive the iterator */
};

/* Map a RocksDB error string to a code: lock contention, corruption,
 * everything else I/O.  Frees errstr. */
static int kv_fail(sa_err *err, char *errstr, const char *what)
{
    int code = SA_EIO;
    if (strstr(errstr, "lock") != NULL && strstr(errstr, "IO error") != NULL)
        code = SA_EBUSY;
    else if (strstr(errstr, "Corruption") != NULL)
        code = SA_ECORRUPT;
    sa_err_set(err, code, "%s: %s", what, errstr);
    rocksdb_free(errstr);
    return code;
}

int sa__kv_probe(const char *dir, int *kind, char *why, size_t whylen, sa_err *err)
{
    struct stat st;
    why[0] = '\0';
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) {
            *kind = SA_KV_ABSENT;
            return 0;
        }
        return sa_err_set(err, SA_ESYS, "cannot stat '%s': %s", dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        *kind = SA_KV_FOREIGN;
        snprintf(why, whylen, "it is not a directory");
        return 0;
    }
    DIR *d = opendir(dir);
    if (d == NULL)
        return sa_err_set(err, SA_ESYS, "cannot read directory '%s': %s", dir, strerror(errno));
    int entries = 0, has_current = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        entries++;
        if (strcmp(de->d_name, "CURRENT") == 0)
            has_current = 1;
    }
    closedir(d);
    if (entries == 0) {
        *kind = SA_KV_ABSENT;
        return 0;
    }
    if (!has_current) {
        *kind = SA_KV_FOREIGN;
        snprintf(why, whylen, "it is not empty and holds no RocksDB database");
        return 0;
    }

    rocksdb_options_t *o = rocksdb_options_create();
    char *errstr = NULL;
    size_t n = 0;
    char **names = rocksdb_list_column_families(o, dir, &n, &errstr);
    rocksdb_options_destroy(o);
    if (errstr != NULL)
        return kv_fail(err, errstr, "cannot list column families");
    int matched = 0, extra = 0;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        int ours = strcmp(names[i], "default") == 0;
        for (int c = 0; c < SA_CF_COUNT && !ours; c++)
            ours = strcmp(names[i], cf_names[c]) == 0;
        if (ours && strcmp(names[i], "default") != 0)
            matched++;
        if (!ours)
            extra++;
        if (off < whylen)
            off += (size_t)snprintf(why + off, whylen - off, "%s%s", i ? "," : "", names[i]);
    }
    rocksdb_list_column_families_destroy(names, n);
    if (matched == SA_CF_COUNT && extra == 0) {
        *kind = SA_KV_OURS;
        why[0] = '\0';
    } else {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", why);
        snprintf(why, whylen, "it holds a RocksDB database with other column families (%s)", tmp);
        *kind = SA_KV_FOREIGN;
    }
    return 0;
}

int sa__kv_open(const char *dir, int create, sa__kv **out, sa_err *err)
{
    return sa__kv_open_mode(dir, create ? SA_KV_CREATE : SA_KV_WRITE, out, err);
}

int sa__kv_open_mode(const char *dir, int mode, sa__kv **out, sa_err *err)
{
    int create = mode == SA_KV_CREATE;
    sa__kv *kv = sa_calloc(1, sizeof *kv);
    if (kv == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory opening '%s'", dir);
    kv->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(kv->opts, create);
    rocksdb_options_set_create_missing_column_families(kv->opts, create);
    /* Replay the RocksDB log up to the first damaged record and stop there:
     * a torn tail after a crash is dropped, never half-applied. */
    rocksdb_options_set_wal_recovery_mode(kv->opts, 2 /* kPointInTimeRecovery */);
    rocksdb_options_increase_parallelism(kv->opts, 2);
    rocksdb_options_set_max_background_jobs(kv->opts, 2);
    /* Bounded memory (contract 7): memtables of all column families share
     * 64 MiB, each at most 16 MiB, instead of RocksDB's 64 MiB per family. */
    rocksdb_options_set_write_buffer_size(kv->opts, 16u << 20);
    rocksdb_options_set_db_write_buffer_size(kv->opts, 64u << 20);
    rocksdb_options_set_max_write_buffer_number(kv->opts, 2);

    const char *names[SA_CF_COUNT + 1];
    const rocksdb_options_t *cfo[SA_CF_COUNT + 1];
    names[0] = "default";
    cfo[0] = kv->opts;
    for (int c = 0; c < SA_CF_COUNT; c++) {
        names[c + 1] = cf_names[c];
        cfo[c + 1] = kv->opts;
    }
    rocksdb_column_family_handle_t *h[SA_CF_COUNT + 1];
    char *errstr = NULL;
    if (mode == SA_KV_READONLY) {
        /* A secondary instance: takes no lock and follows the writer's
         * MANIFEST, so it never misses data a concurrent flush moved from the
         * log into a table file (a plain read-only open can).  Its own info
         * log goes to a private temporary directory. */
        char tmpl[] = "/tmp/sa-secondary-XXXXXX";
        if (mkdtemp(tmpl) == NULL) {
            int e = errno;
            rocksdb_options_destroy(kv->opts);
            sa_free(kv);
            return sa_err_set(err, SA_ESYS, "cannot create a directory for a read-only open: %s",
                              strerror(e));
        }
        kv->secondary = sa_strdup(tmpl);
        rocksdb_options_set_max_open_files(kv->opts, -1); /* required for secondaries */
        kv->db = rocksdb_open_as_secondary_column_families(kv->opts, dir, tmpl, SA_CF_COUNT + 1,
                                                            names, cfo, h, &errstr);
        if (errstr == NULL)
            rocksdb_try_catch_up_with_primary(kv->db, &errstr);
        if (errstr != NULL && kv->db != NULL) {
            for (int c = 0; c <= SA_CF_COUNT; c++)
                rocksdb_column_family_handle_destroy(h[c]);
            rocksdb_close(kv->db);
            kv->db = NULL;
        }
    } else

        kv->db = rocksdb_open_column_families(kv->opts, dir, SA_CF_COUNT + 1, names, cfo, h, &errstr);
    if (errstr != NULL) {
        int rc = kv_fail(err, errstr, "cannot open RocksDB");
        if (rc == SA_EBUSY)
            sa_err_set(err, SA_EBUSY, "data directory '%s' is in use by another process", dir);
        rocksdb_options_destroy(kv->opts);
        remove_secondary(kv);
        sa_free(kv);
        return rc;
    }
    kv->read_only = mode == SA_KV_READONLY;
    kv->cf[SA_CF_COUNT] = h[0];
    for (int c = 0; c < SA_CF_COUNT; c++)
        kv->cf[c] = h[c + 1];
    kv->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(kv->wo_sync, 1);
    kv->wo_nosync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(kv->wo_nosync, 0);
    kv->ro = rocksdb_readoptions_create();
    *out = kv;
    return 0;
}

void sa__kv_close(sa__kv *kv)
{
    if (kv == NULL)
        return;
    if (!kv->read_only) {
        /* flush the memtables so the next open need not replay the log
         * (a slow start grows with what was written since the last flush) */
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, 1);
        for (int c = 0; c < SA_CF_COUNT; c++) {
            char *errstr = NULL;
            rocksdb_flush_cf(kv->db, fo, kv->cf[c], &errstr);
            rocksdb_free(errstr); /* best effort: the log still holds it all */
        }
        rocksdb_flushoptions_destroy(fo);
    }
    for (int c = 0; c <= SA_CF_COUNT; c++)
        rocksdb_column_family_handle_destroy(kv->cf[c]);
    rocksdb_close(kv->db);
    rocksdb_writeoptions_destroy(kv->wo_sync);
    rocksdb_writeoptions_destroy(kv->wo_nosync);
    rocksdb_readoptions_destroy(kv->ro);
    rocksdb_options_destroy(kv->opts);
    remove_secondary(kv);
    sa_free(kv);
}

int sa__kv_get(sa__kv *kv, const sa__kv_snap *snap, int cf, const void *k, size_t kl, sa_buf *val,
               int *found, sa_err *err)
{
    rocksdb_readoptions_t *ro = kv->ro;
    rocksdb_readoptions_t *own = NULL;
    if (snap != NULL && snap->snap != NULL) {
        own = ro = rocksdb_readoptions_create();
        rocksdb_readoptions_set_snapshot(ro, snap->snap);
    }
    char *errstr = NULL;
    size_t vl = 0;
    char *v = rocksdb_get_cf(kv->db, ro, kv->cf[cf], k, kl, &vl, &errstr);
    if (own != NULL)
        rocksdb_readoptions_destroy(own);
    if (errstr != NULL)
        return kv_fail(err, errstr, "read failed");
    sa_buf_reset(val);
    *found = v != NULL;
    int rc = 0;
    if (v != NULL) {
        if (sa_buf_put(val, v, vl) != 0)
            rc = sa_err_set(err, SA_ENOMEM, "out of memory reading a %zu-byte value", vl);
        rocksdb_free(v);
    }
    return rc;
}

int sa__kv_batch_new(sa__kv *kv, sa__kv_batch **out, sa_err *err)
{
    sa__kv_batch *b = sa_malloc(sizeof *b);
    if (b == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    b->kv = kv;
    b->wb = rocksdb_writebatch_create();
    *out = b;
    return 0;
}

void sa__kv_batch_free(sa__kv_batch *b)
{
    if (b == NULL)
        return;
    rocksdb_writebatch_destroy(b->wb);
    sa_free(b);
}

void sa__kv_batch_clear(sa__kv_batch *b) { rocksdb_writebatch_clear(b->wb); }

void sa__kv_batch_put(sa__kv_batch *b, int cf, const void *k, size_t kl, const void *v, size_t vl)
{
    rocksdb_writebatch_put_cf(b->wb, b->kv->cf[cf], k, kl, v, vl);
}

void sa__kv_batch_del(sa__kv_batch *b, int cf, const void *k, size_t kl)
{
    rocksdb_writebatch_delete_cf(b->wb, b->kv->cf[cf], k, kl);
}

void sa__kv_batch_del_range(sa__kv_batch *b, int cf, const void *lo, size_t lol, const void *hi,
                            size_t hil)
{
    rocksdb_writebatch_delete_range_cf(b->wb, b->kv->cf[cf], lo, lol, hi, hil);
}

void sa__kv_batch_savepoint(sa__kv_batch *b) { rocksdb_writebatch_set_save_point(b->wb); }

int sa__kv_batch_rollback(sa__kv_batch *b, sa_err *err)
{
    char *errstr = NULL;
    rocksdb_writebatch_rollback_to_save_point(b->wb, &errstr);
    if (errstr != NULL)
        return kv_fail(err, errstr, "batch rollback failed");
    return 0;
}

void sa__kv_batch_pop_savepoint(sa__kv_batch *b)
{
    char *errstr = NULL;
    rocksdb_writebatch_pop_save_point(b->wb, &errstr);
    if (errstr != NULL)
        rocksdb_free(errstr);
}

size_t sa__kv_batch_bytes(const sa__kv_batch *b)
{
    size_t n = 0;
    rocksdb_writebatch_data(b->wb, &n);
    return n;
}

int sa__kv_write(sa__kv *kv, sa__kv_batch *b, int sync, sa_err *err)
{
    char *errstr = NULL;
    rocksdb_write(kv->db, sync ? kv->wo_sync : kv->wo_nosync, b->wb, &errstr);
    if (errstr != NULL)
        return kv_fail(err, errstr, "write failed");
    return 0;
}

int sa__kv_sync_wal(sa__kv *kv, sa_err *err)
{
    char *errstr = NULL;
    rocksdb_flush_wal(kv->db, 1, &errstr);
    if (errstr != NULL)
        return kv_fail(err, errstr, "syncing the RocksDB log failed");
    return 0;
}

int sa__kv_snap_new(sa__kv *kv, sa__kv_snap **out, sa_err *err)
{
    sa__kv_snap *s = sa_malloc(sizeof *s);
    if (s == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    /* A secondary instance has no snapshots, and needs none: it changes
     * only when told to catch up with the writer, which we never do after
     * open, so every read is consistent at the open. */
    s->snap = kv->secondary != NULL ? NULL : rocksdb_create_snapshot(kv->db);
    *out = s;
    return 0;
}

void sa__kv_snap_free(sa__kv *kv, sa__kv_snap *s)
{
    if (s == NULL)
        return;
    if (s->snap != NULL)
        rocksdb_release_snapshot(kv->db, s->snap);
    sa_free(s);
}

int sa__kv_iter_new(sa__kv *kv, const sa__kv_snap *snap, int cf, const void *lo, size_t lol,
                    const void *hi, size_t hil, sa__kv_iter **out, sa_err *err)
{
    sa__kv_iter *it = sa_calloc(1, sizeof *it);
    if (it == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    it->ro = rocksdb_readoptions_create();
    if (snap != NULL && snap->snap != NULL)
        rocksdb_readoptions_set_snapshot(it->ro, snap->snap);
    if (hi != NULL) {
        it->hi = sa_malloc(hil ? hil : 1);
        if (it->hi == NULL) {
            rocksdb_readoptions_destroy(it->ro);
            sa_free(it);
            return sa_err_set(err, SA_ENOMEM, "out of memory");
        }
        memcpy(it->hi, hi, hil);
        rocksdb_readoptions_set_iterate_upper_bound(it->ro, it->hi, hil);
    }
    it->it = rocksdb_create_iterator_cf(kv->db, it->ro, kv->cf[cf]);
    rocksdb_iter_seek(it->it, lo, lol);
    *out = it;
    return 0;
}

int sa__kv_iter_valid(sa__kv_iter *it) { return rocksdb_iter_valid(it->it); }
void sa__kv_iter_next(sa__kv_iter *it) { rocksdb_iter_next(it->it); }

const uint8_t *sa__kv_iter_key(sa__kv_iter *it, size_t *len)
{
    return (const uint8_t *)rocksdb_iter_key(it->it, len);
}

const uint8_t *sa__kv_iter_value(sa__kv_iter *it, size_t *len)
{
    return (const uint8_t *)rocksdb_iter_value(it->it, len);
}

int sa__kv_iter_status(sa__kv_iter *it, sa_err *err)
{
    char *errstr = NULL;
    rocksdb_iter_get_error(it->it, &errstr);
    if (errstr != NULL)
        return kv_fail(err, errstr, "iteration failed");
    return 0;
}

void sa__kv_iter_free(sa__kv_iter *it)
{
    if (it == NULL)
        return;
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ro);
    sa_free(it->hi);
    sa_free(it);
}

int sa__kv_checkpoint(sa__kv *kv, const char *dir, sa_err *err)
{
    char *errstr = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(kv->db, &errstr);
    if (errstr != NULL)
        return kv_fail(err, errstr, "cannot create checkpoint object");
    rocksdb_checkpoint_create(cp, dir, 0 /* always flush the log into it */, &errstr);
    rocksdb_checkpoint_object_destroy(cp);
    if (errstr != NULL)
        return kv_fail(err, errstr, "checkpoint failed");
    return 0;
}
