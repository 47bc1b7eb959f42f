/*
 * edge_int.h — libsa_edge's insides, shared by edge.c (the store, local
 * writes, reads, retirement, status) and edge_sync.c (HTTP: bootstrap,
 * pull, push, results, follow).  Not installed.  The on-disk format is
 * specified at the top of edge.c.
 */
#ifndef SA_EDGE_INT_H
#define SA_EDGE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "sa/sa_edge.h"
#include "sa/sa_hlc.h"
#include "sa/sa_retry.h"
#include "sa/sa_store.h"

#define EDGE_FORMAT_VERSION "1"
#define EDGE_OUTBOX "o"          /* inbox-CF origin of the outbox */
#define EDGE_ROWQ_PREFIX "r\x1f" /* inbox-CF origins of per-row overlay queues */
#define EDGE_AWAIT "w"           /* inbox-CF origin of retired ops awaiting their outcome */
#define EDGE_SYNC_CURSOR "sync"  /* cursors-CF name holding attempts / errors */
#define EDGE_ROWQ_MAX 1000       /* longest row-queue origin (the store allows 1024) */

struct sa_edge {
    char *dir;
    sa_store *local;  /* DIR/local: config, outbox, overlay, outcomes */
    sa_store *server; /* DIR/server.<gen>: the server's rows, cursor; NULL before bootstrap */
    uint64_t server_gen;
    pthread_rwlock_t srv_lock; /* readers of `server` vs the bootstrap's swap */
    pthread_mutex_t mu;        /* local writes: seq allocation, outbox order */
    pthread_mutex_t sync_mu;   /* one sync at a time (and the curl handle) */
    atomic_int stop;           /* sa_edge_stop */
    atomic_int kick;           /* a local write happened: cut a long poll short */
    sa_hlc_clock *clock;
    char peer[128];
    uint64_t epoch;
    char *bridge, *token;
    uint64_t last_seq; /* highest local seq issued (under mu) */
    sa_retry retry;    /* under sync_mu */
    CURL *curl;        /* under sync_mu */
    CURLM *multi;      /* drives curl (under sync_mu); curl_multi_wakeup from any thread */
    uint32_t http_timeout_s;
    uint32_t batch_ops;
    /* open conflicts of our ops, looked up again for a DBA's resolution
     * (under sync_mu): when last, and the seq the next look starts after */
    uint64_t refresh_ms, refresh_after;
};

/* --- edge.c helpers used by edge_sync.c ---------------------------------- */

uint64_t edge__now_ms(void);
/* Decimal u64 metadata (def when absent).  0 or an error code. */
int edge__meta_u64(sa_store *s, const char *key, uint64_t def, uint64_t *out, sa_err *err);
int edge__meta_put_u64(sa_batch *b, const char *key, uint64_t v, sa_err *err);
int edge__meta_put_str(sa_batch *b, const char *key, const char *v, sa_err *err);
/* String metadata into a new sa_malloc'd string (*out, sa_free), or NULL
 * when absent. */
int edge__meta_str(sa_store *s, const char *key, char **out, sa_err *err);
/* Merge what a server row or op tells about table's key columns and
 * column types into meta "schema.<table>" of the local store (in b). */
int edge__learn_schema(sa_edge *e, json_t *cache, const sa_op *op, sa_batch *b, sa_err *err);
/* Record the schema the bridge's snapshot gave for table (borrowed). */
int edge__set_schema(json_t *cache, const char *table, json_t *schema, sa_batch *b, sa_err *err);
/* Retire overlay entries per the rule in edge.c.  Takes mu. */
int edge__retire(sa_edge *e, sa_err *err);
/* Record a sync attempt: ok, or failed with msg and the next retry time. */
int edge__record_attempt(sa_edge *e, int ok, const char *msg, uint64_t next_retry_ms, sa_err *err);
/* Open the server replica store at gen (creating it when create). */
int edge__server_open(sa_edge *e, uint64_t gen, int create, sa_store **out, sa_err *err);
/* Make gen the active server replica (durable pointer file), swap the
 * handle, remove the previous one. */
int edge__server_switch(sa_edge *e, uint64_t gen, sa_store *s, sa_err *err);
/* The row-queue origin of (table, key) into out (EDGE_ROWQ_MAX + 1). */
int edge__rowq(const char *table, const sa_field *key, uint32_t nkey, char *out, sa_err *err);

#endif /* SA_EDGE_INT_H */
