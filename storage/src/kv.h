/*
 * kv.h — internal: the thin layer over RocksDB's C API.  kv.c is the only
 * file that includes rocksdb/c.h or sees an errptr; everything else in
 * storage/ talks to RocksDB through these sa__kv_ calls, which return SA_E*
 * codes and fill an sa_err.
 */
#ifndef SA_KV_H
#define SA_KV_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_buf.h"
#include "sa/sa_err.h"

/* Column families; the order is the order of handles inside kv.c. */
enum sa__cf {
    SA_CF_WAL = 0,
    SA_CF_STATE,
    SA_CF_CURSORS,
    SA_CF_INBOX,
    SA_CF_META,
    SA_CF_COUNT
};

typedef struct sa__kv sa__kv;
typedef struct sa__kv_batch sa__kv_batch;
typedef struct sa__kv_snap sa__kv_snap;
typedef struct sa__kv_iter sa__kv_iter;

/* What a directory holds, as far as opening it is concerned. */
enum sa__kv_probe {
    SA_KV_ABSENT = 0,  /* no directory, or an empty one */
    SA_KV_OURS,        /* a RocksDB database with exactly our column families */
    SA_KV_FOREIGN,     /* something else; *why says what */
};

int sa__kv_probe(const char *dir, int *kind /* out */, char *why, size_t whylen, sa_err *err);
int sa__kv_open(const char *dir, int create, sa__kv **out /* out */, sa_err *err);
enum sa__kv_mode { SA_KV_WRITE = 0, SA_KV_CREATE, SA_KV_READONLY };
int sa__kv_open_mode(const char *dir, int mode, sa__kv **out /* out */, sa_err *err);
void sa__kv_close(sa__kv *kv);

/* found = 0 when the key is absent (not an error).  val replaced. */
int sa__kv_get(sa__kv *kv, const sa__kv_snap *snap, int cf, const void *k, size_t kl,
               sa_buf *val /* out */, int *found /* out */, sa_err *err);

/* A batch for kv (borrowed; must outlive the batch). */
int sa__kv_batch_new(sa__kv *kv, sa__kv_batch **out, sa_err *err);
void sa__kv_batch_free(sa__kv_batch *b);
void sa__kv_batch_clear(sa__kv_batch *b);
void sa__kv_batch_put(sa__kv_batch *b, int cf, const void *k, size_t kl, const void *v, size_t vl);
void sa__kv_batch_del(sa__kv_batch *b, int cf, const void *k, size_t kl);
void sa__kv_batch_del_range(sa__kv_batch *b, int cf, const void *lo, size_t lol, const void *hi,
                            size_t hil);
void sa__kv_batch_savepoint(sa__kv_batch *b);
int sa__kv_batch_rollback(sa__kv_batch *b, sa_err *err);
void sa__kv_batch_pop_savepoint(sa__kv_batch *b);
size_t sa__kv_batch_bytes(const sa__kv_batch *b);
int sa__kv_write(sa__kv *kv, sa__kv_batch *b, int sync, sa_err *err);
int sa__kv_sync_wal(sa__kv *kv, sa_err *err);

int sa__kv_snap_new(sa__kv *kv, sa__kv_snap **out, sa_err *err);
void sa__kv_snap_free(sa__kv *kv, sa__kv_snap *snap);

/* Iterator over [lo, hi) of one CF (hi NULL = to the end), positioned on
 * the first key >= lo.  Keys/values are borrowed until the next move. */
int sa__kv_iter_new(sa__kv *kv, const sa__kv_snap *snap, int cf, const void *lo, size_t lol,
                    const void *hi, size_t hil, sa__kv_iter **out, sa_err *err);
int sa__kv_iter_valid(sa__kv_iter *it);
void sa__kv_iter_next(sa__kv_iter *it);
const uint8_t *sa__kv_iter_key(sa__kv_iter *it, size_t *len);
const uint8_t *sa__kv_iter_value(sa__kv_iter *it, size_t *len);
int sa__kv_iter_status(sa__kv_iter *it, sa_err *err); /* after !valid: error or 0 */
void sa__kv_iter_free(sa__kv_iter *it);

int sa__kv_checkpoint(sa__kv *kv, const char *dir, sa_err *err);

#endif /* SA_KV_H */
