/*
 * store_int.h — internal: the store handle and the key layouts shared by
 * store.c (writes) and read.c (reads).  The layouts are specified at the
 * top of store.c.
 */
#ifndef SA_STORE_INT_H
#define SA_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kv.h"
#include "sa/sa_store.h"

#define SA_STORE_MAGIC "SADASTRA"
#define SA_STORE_FORMAT 1u

#define SA_WALREC_VERSION 1u
#define SA_WALREC_GROUP_END 0x01u
#define SA_ROW_VERSION 1u
#define SA_CURSOR_VERSION 1u

/* meta CF keys (internal ones start with 0x00; user keys with 'u') */
#define SA_META_FORMAT "\x00" "format"
#define SA_META_WAL "\x00" "wal"

typedef struct sa__req sa__req;

struct sa_store {
    char *dir;
    sa__kv *kv;
    sa_store_options opt;

    /* Serialises every write (commits, truncation, large groups). */
    pthread_mutex_t wmu;
    /* Guards the published counters below: writers change them holding
     * wmu and cmu, readers take only cmu, so a reader never waits for a
     * write in progress (a large group's state phase may take seconds). */
    pthread_mutex_t cmu;
    uint64_t first_seq, last_seq, wal_count, wal_bytes;
    uint64_t inbox_count, inbox_bytes;
    uint64_t durable_seq;
    uint64_t state_seq; /* state reflects the WAL up to here (S3) */
    int broken;         /* 1: a large group's state phase failed (reopen to redo); 2: read-only */
    struct sa__kv_batch *kb;          /* reused for every write (under wmu) */
    struct sa_batch *_Atomic spare;   /* a batch sa_wal_append may reuse */
    uint64_t writes; /* RocksDB writes made by commits (group commit shows in it) */

    /* group commit queue */
    pthread_mutex_t qmu;
    pthread_cond_t qcond;
    sa__req *qhead, *qtail;
    size_t qlen;
    int leader_active;
};

/* State key: table, 0x00, then per key field: kind u8 (+ varint len and
 * bytes for TEXT).  Values only, so the same row has one key whatever type
 * OIDs or names a writer attached. */
int sa__state_key(sa_buf *out, const char *table, const sa_field *key, uint32_t nkey);
/* Decode a state row value (and its key for the table name). */
int sa__row_decode(const uint8_t *k, size_t kl, const uint8_t *v, size_t vl, sa_row **out,
                   sa_err *err);
int sa__cursor_decode(const uint8_t *v, size_t vl, sa_cursor *c, sa_err *err);
/* WAL record: decode value into rec (op owned by *op_out). */
int sa__walrec_decode(uint64_t seq, const uint8_t *v, size_t vl, sa_op **op_out, int *group_end,
                      sa_err *err);
/* Number of RocksDB writes commits made so far (for tests and metrics). */
uint64_t sa__store_write_count(sa_store *s);
#define SA_WAL_COUNTERS_LEN 40
void sa__wal_counters_encode(uint8_t out[SA_WAL_COUNTERS_LEN], uint64_t first, uint64_t last,
                             uint64_t count, uint64_t bytes, uint64_t state_seq);

#endif /* SA_STORE_INT_H */
