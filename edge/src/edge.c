/*
 * edge.c — libsa_edge's local side: the edge store (two libsa_storage
 * stores and a pointer file), local writes with their outbox and overlay,
 * reads that show pending writes over the server's state, the retirement
 * of overlay entries, status and outcomes.  The network side is in
 * edge_sync.c.
 *
 * ON-DISK FORMAT (edge format version 1)
 * ======================================
 *
 *   DIR/local/          an sa_store that is never replaced (config, local
 *                       ops, outcomes)
 *   DIR/SERVER          text "<gen>\n": which server replica is active.
 *                       Written temp file -> fsync -> rename -> fsync DIR,
 *                       so it names the old or the new replica after any
 *                       crash.  Absent before the first bootstrap.
 *   DIR/server.<gen>/   an sa_store holding the server's rows as of its
 *                       cursor.  A bootstrap fills server.<gen+1> (the
 *                       staging area) and switches SERVER to it; open
 *                       removes every server.* directory SERVER does not
 *                       name (an interrupted bootstrap, or the replica a
 *                       switch left behind).
 *
 * local store
 *   meta (application keys; numbers are decimal text):
 *     "cfg.version"   "1"
 *     "cfg.peer"      the token's peer name (the ops' origin)
 *     "cfg.epoch"     random 63-bit number drawn at init (never 0)
 *     "cfg.store_id"  32 hex characters drawn at init
 *     "cfg.bridge", "cfg.token"   where and as whom to sync
 *     "seq.last"      highest local op seq issued
 *     "hlc.last"      hlc of the last local op
 *     "push.accepted" highest seq the bridge acknowledged as queued
 *     "push.applied"  highest seq the bridge reported applied (results)
 *     "results.after" outcomes fetched for every seq up to this
 *     "retire.upto"   every op up to this seq has retired (left the outbox)
 *     "outcome.<seq, 20 digits>"  JSON {"seq","status","conflict_id",
 *                     "resolution","message","table","key","head"}: a
 *                     conflict or rejection of one of our ops as the bridge
 *                     reported it; head = the bridge's WAL head read just
 *                     after the report.  Kept (sa-edge conflicts lists them).
 *     "schema.<table>" JSON {"key": [column...], "types": {column: oid}}:
 *                     the key columns and column types learned from the
 *                     rows the bridge sent
 *     "tables"        JSON array of the tables the peer may read (snapshot)
 *   cursors CF, name "sync": attempts, last attempt, next retry and last
 *     error of the sync loop (sa_batch_cursor_attempt).
 *   inbox CF (origin 0x00 u64 seq -> op binary encoding):
 *     origin "o"      THE OUTBOX: every local op by seq, from retire.upto+1
 *                     to seq.last; pushed from push.accepted+1.
 *     origin "w"      RETIRED, OUTCOME NOT FETCHED: a copy of each op that
 *                     retired (rule (a) below) while results.after was
 *                     still below its seq — its server version can arrive
 *                     before the bridge reports its outcome — so that the
 *                     outcome, when fetched, still names the op's table,
 *                     key and kind.  Removed once results.after passes it.
 *     origin "r" 0x1f TABLE 0x1f KEYTEXT   ONE ROW'S OVERLAY QUEUE: the
 *                     local ops on that row still shown over the server's
 *                     state.  KEYTEXT: per key column, in key order,
 *                     NAME "=" VALUE joined by 0x1e; VALUE is "\N" for NULL,
 *                     else the text with bytes < 0x20 and '\' written as
 *                     "\xx" (two hex digits).
 *
 * server store
 *   state CF: the server's rows, written by appending the bridge's ops (the
 *     snapshot's rows as inserts, then each pulled transaction as one WAL
 *     group) — the WAL itself is truncated after each pull.
 *   meta: "instance" (the bridge instance the rows come from), "cursor"
 *     (bridge WAL seq everything up to which is here), "head" (the bridge's
 *     head at the last pull), "confirmed" (highest origin_seq of our (peer,
 *     epoch) seen in the change stream), "hlc.max" (highest hlc seen).
 *     Written in the same batch as the rows they describe: a pulled batch,
 *     its cursor and its confirmations are one RocksDB write.
 *
 * Invariants:
 *   E1  A local op is in the outbox and in its row's queue, or in neither:
 *       both are written, and removed, in one batch.
 *   E2  retire.upto <= seq.last; the outbox holds exactly (retire.upto,
 *       seq.last].  Ops retire in seq order.
 *   E3  Reads = the server row, then every op of its row queue in seq order.
 *
 * THE OVERLAY RULE.  Local op s (of peer P, epoch E) retires — leaves the
 * outbox and its row queue, so reads show the server's row alone — when
 * every op before it has retired and either
 *   (a) the server's version of it has arrived: a pulled op with origin P,
 *       epoch E and origin_seq >= s (server meta "confirmed" >= s, recorded
 *       with the pull that brought it).  A snapshot does not say which of
 *       our ops it contains, so a bootstrap carries "confirmed" over and
 *       raises it to the "applied" watermark the bridge reports right after
 *       the snapshot was received: ops applied before the snapshot are in
 *       it, and those applied since arrive with the pull that follows in
 *       the same round, before anything retires.  (Only an op applied in
 *       PostgreSQL but not yet ingested by the bridge at that pull can
 *       retire a little early: reads then show the server's previous row
 *       until the next pull brings the change.)  The bridge also says,
 *       with the outcomes, "confirmed" C at "confirmed_at" H: ops up to C
 *       were applied by transactions its WAL holds at or below H; once the
 *       cursor reaches H they count as confirmed too (server meta
 *       "confirm.to", "confirm.at") — the only way an op that changed no
 *       row, and so never comes back, is confirmed; or
 *   (b) its outcome says the server's state did not change for it (status
 *       rejected, or conflict resolved kept_local or left open) and the
 *       cursor has reached the head recorded with that outcome (so the
 *       replica holds the server's version of the row at least as of then); or
 *   (c) the bridge reported it applied (push.applied >= s, whatever its status)
 *       and it changes nothing in the server's row as the replica has it now
 *       (every column it writes already has its value there; for a delete,
 *       the row is absent): showing it over that row changes no read.  This
 *       retires the ops apply_ops applied without writing anything (their
 *       values were PostgreSQL's already, or the row they delete was gone),
 *       which no change in the stream confirms by (a), and which would
 *       otherwise stay shown forever, holding back every later op.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "edge_int.h"
#include "sa/sa_alloc.h"

/* ---------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------- */

uint64_t edge__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int edge__meta_u64(sa_store *s, const char *key, uint64_t def, uint64_t *out, sa_err *err)
{
    void *v = NULL;
    size_t len = 0;
    int rc = sa_store_meta_get(s, key, &v, &len, err);
    if (rc == SA_ENOTFOUND) {
        *out = def;
        return 0;
    }
    if (rc != 0)
        return rc;
    char buf[32];
    char *end = NULL;
    if (len == 0 || len >= sizeof buf) {
        sa_free(v);
        return sa_err_set(err, SA_ECORRUPT, "metadata \"%s\" is not a number", key);
    }
    memcpy(buf, v, len);
    buf[len] = '\0';
    sa_free(v);
    errno = 0;
    unsigned long long x = strtoull(buf, &end, 10);
    if (errno != 0 || *end != '\0')
        return sa_err_set(err, SA_ECORRUPT, "metadata \"%s\" is not a number: \"%s\"", key, buf);
    *out = x;
    return 0;
}

int edge__meta_put_u64(sa_batch *b, const char *key, uint64_t v, sa_err *err)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRIu64, v);
    return sa_batch_meta_put(b, key, buf, (size_t)n, err);
}

int edge__meta_put_str(sa_batch *b, const char *key, const char *v, sa_err *err)
{
    return sa_batch_meta_put(b, key, v, strlen(v), err);
}

int edge__meta_str(sa_store *s, const char *key, char **out, sa_err *err)
{
    void *v = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = sa_store_meta_get(s, key, &v, &len, err);
    if (rc == SA_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    *out = sa_strndup(v, len);
    sa_free(v);
    return *out == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
}

/* A JSON metadata value (*out new reference, NULL when absent). */
static int meta_json(sa_store *s, const char *key, json_t **out, sa_err *err)
{
    void *v = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = sa_store_meta_get(s, key, &v, &len, err);
    if (rc == SA_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    *out = json_loadb(v, len, 0, NULL);
    sa_free(v);
    return *out == NULL ? sa_err_set(err, SA_ECORRUPT, "metadata \"%s\" is not JSON", key) : 0;
}

static int meta_put_json(sa_batch *b, const char *key, const json_t *j, sa_err *err)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    int rc = sa_batch_meta_put(b, key, s, strlen(s), err);
    free(s);
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

static int rm_tree(const char *path, sa_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return sa_err_set(err, SA_ESYS, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

static int fsync_dir(const char *dir, sa_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return sa_err_set(err, SA_ESYS, "cannot open %s: %s", dir, strerror(errno));
    int rc = fsync(fd) != 0 ? sa_err_set(err, SA_ESYS, "fsync %s: %s", dir, strerror(errno)) : 0;
    close(fd);
    return rc;
}

/* "public.x" for "x"; the name as is when it has a dot. */
static void table_name(const char *in, char *out, size_t cap)
{
    if (strchr(in, '.') != NULL)
        snprintf(out, cap, "%s", in);
    else
        snprintf(out, cap, "public.%s", in);
}

/* ---------------------------------------------------------------------
 * Opening and closing
 * ------------------------------------------------------------------- */

void sa_edge_options_init(sa_edge_options *o)
{
    memset(o, 0, sizeof *o);
    o->http_timeout_s = 30;
    o->batch_ops = 500;
}

static int store_open(const char *path, int create, sa_store **out, sa_err *err)
{
    sa_store_options so;
    sa_store_options_init(&so);
    so.durability = SA_DUR_SYNC; /* contract 1: durable before put returns */
    so.create_if_missing = create;
    return sa_store_open(path, &so, out, err);
}

int edge__server_open(sa_edge *e, uint64_t gen, int create, sa_store **out, sa_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/server.%" PRIu64, e->dir, gen);
    if (create) {
        int rc = rm_tree(path, err); /* a staging area left by a crash */
        if (rc != 0)
            return rc;
    }
    return store_open(path, create, out, err);
}

int edge__server_switch(sa_edge *e, uint64_t gen, sa_store *s, sa_err *err)
{
    char tmp[4096], dst[4096], old[4096];
    snprintf(tmp, sizeof tmp, "%s/SERVER.tmp", e->dir);
    snprintf(dst, sizeof dst, "%s/SERVER", e->dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return sa_err_set(err, SA_ESYS, "cannot create %s: %s", tmp, strerror(errno));
    char line[32];
    int n = snprintf(line, sizeof line, "%" PRIu64 "\n", gen);
    int rc = 0;
    if (write(fd, line, (size_t)n) != n || fsync(fd) != 0)
        rc = sa_err_set(err, SA_ESYS, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, dst) != 0)
        rc = sa_err_set(err, SA_ESYS, "cannot rename %s: %s", tmp, strerror(errno));
    if (rc == 0)
        rc = fsync_dir(e->dir, err);
    if (rc != 0)
        return rc;
    pthread_rwlock_wrlock(&e->srv_lock);
    sa_store *prev = e->server;
    uint64_t prev_gen = e->server_gen;
    e->server = s;
    e->server_gen = gen;
    pthread_rwlock_unlock(&e->srv_lock);
    if (prev != NULL) {
        sa_store_close(prev);
        snprintf(old, sizeof old, "%s/server.%" PRIu64, e->dir, prev_gen);
        sa_err ignore;
        rm_tree(old, &ignore); /* open removes it if this fails */
    }
    return 0;
}

/* The active generation from DIR/SERVER: 1 and *gen, 0 when absent. */
static int server_gen_read(const char *dir, uint64_t *gen, sa_err *err)
{
    char path[4096], buf[32];
    snprintf(path, sizeof path, "%s/SERVER", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        return sa_err_set(err, SA_ESYS, "cannot open %s: %s", path, strerror(errno));
    }
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    char *end = NULL;
    unsigned long long g = ok ? strtoull(buf, &end, 10) : 0;
    if (!ok || end == buf || (*end != '\n' && *end != '\0'))
        return sa_err_set(err, SA_ECORRUPT, "%s does not hold a generation number", path);
    *gen = g;
    return 1;
}

/* Remove server.* directories other than the active one. */
static void server_gc(const char *dir, uint64_t keep, int have)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    char path[4096];
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "server.", 7) != 0)
            continue;
        char *end = NULL;
        unsigned long long g = strtoull(de->d_name + 7, &end, 10);
        if (end == de->d_name + 7 || *end != '\0' || (have && g == keep))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        sa_err ignore;
        rm_tree(path, &ignore);
    }
    closedir(d);
}

static int random_bytes(void *p, size_t n, sa_err *err)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t got = getrandom(b, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return sa_err_set(err, SA_ESYS, "getrandom: %s", strerror(errno));
        }
        b += got;
        n -= (size_t)got;
    }
    return 0;
}

static int init_config(sa_store *local, const sa_edge_options *o, sa_err *err)
{
    uint64_t epoch = 0;
    uint8_t id[16];
    char hex[33];
    int rc = 0;
    while (rc == 0 && epoch == 0) {
        rc = random_bytes(&epoch, sizeof epoch, err);
        epoch &= INT64_MAX; /* JSON integers are int64 on the wire */
    }
    if (rc == 0)
        rc = random_bytes(id, sizeof id, err);
    if (rc != 0)
        return rc;
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
    sa_batch *b = NULL;
    rc = sa_batch_new(&b, err);
    if (rc == 0)
        rc = edge__meta_put_str(b, "cfg.version", EDGE_FORMAT_VERSION, err);
    if (rc == 0)
        rc = edge__meta_put_str(b, "cfg.peer", o->peer, err);
    if (rc == 0)
        rc = edge__meta_put_u64(b, "cfg.epoch", epoch, err);
    if (rc == 0)
        rc = edge__meta_put_str(b, "cfg.store_id", hex, err);
    if (rc == 0)
        rc = edge__meta_put_u64(b, "seq.last", 0, err);
    if (rc == 0)
        rc = sa_store_commit(local, b, NULL, err);
    sa_batch_free(b);
    return rc;
}

/* Store the bridge URL / token given on open when they differ. */
static int update_config(sa_store *local, const sa_edge_options *o, sa_err *err)
{
    const char *keys[2] = {"cfg.bridge", "cfg.token"};
    const char *vals[2] = {o->bridge, o->token};
    sa_batch *b = NULL;
    int rc = sa_batch_new(&b, err);
    for (int i = 0; rc == 0 && i < 2; i++) {
        if (vals[i] == NULL)
            continue;
        char *cur = NULL;
        rc = edge__meta_str(local, keys[i], &cur, err);
        if (rc == 0 && (cur == NULL || strcmp(cur, vals[i]) != 0))
            rc = edge__meta_put_str(b, keys[i], vals[i], err);
        sa_free(cur);
    }
    if (rc == 0 && !sa_batch_empty(b))
        rc = sa_store_commit(local, b, NULL, err);
    sa_batch_free(b);
    return rc;
}

static int load_config(sa_edge *e, sa_err *err)
{
    char *ver = NULL, *peer = NULL;
    uint64_t hlc_local = 0, hlc_srv = 0;
    int rc = edge__meta_str(e->local, "cfg.version", &ver, err);
    if (rc == 0 && (ver == NULL || strcmp(ver, EDGE_FORMAT_VERSION) != 0))
        rc = sa_err_set(err, SA_EVERSION, "%s/local: edge format version %s, this build reads %s",
                        e->dir, ver ? ver : "(none)", EDGE_FORMAT_VERSION);
    if (rc == 0)
        rc = edge__meta_str(e->local, "cfg.peer", &peer, err);
    if (rc == 0 && peer == NULL)
        rc = sa_err_set(err, SA_ECORRUPT, "%s/local: no peer name recorded", e->dir);
    if (rc == 0)
        snprintf(e->peer, sizeof e->peer, "%s", peer);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "cfg.epoch", 0, &e->epoch, err);
    if (rc == 0)
        rc = edge__meta_str(e->local, "cfg.bridge", &e->bridge, err);
    if (rc == 0)
        rc = edge__meta_str(e->local, "cfg.token", &e->token, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "seq.last", 0, &e->last_seq, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "hlc.last", 0, &hlc_local, err);
    if (rc == 0 && e->server != NULL)
        rc = edge__meta_u64(e->server, "hlc.max", 0, &hlc_srv, err);
    if (rc == 0)
        sa_hlc_clock_restore(e->clock, hlc_local > hlc_srv ? hlc_local : hlc_srv);
    sa_free(ver);
    sa_free(peer);
    return rc;
}

int sa_edge_open(const char *dir, const sa_edge_options *o, sa_edge **out, sa_err *err)
{
    sa_edge_options defaults;
    if (o == NULL) {
        sa_edge_options_init(&defaults);
        o = &defaults;
    }
    if (dir == NULL || dir[0] == '\0')
        return sa_err_set(err, SA_EINVAL, "no data directory given");
    if (o->create && (o->peer == NULL || o->peer[0] == '\0' || strlen(o->peer) > 100))
        return sa_err_set(err, SA_EINVAL, "init needs the token's peer name (1 to 100 bytes)");
    sa_edge *e = sa_calloc(1, sizeof *e);
    if (e == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    pthread_rwlock_init(&e->srv_lock, NULL);
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->sync_mu, NULL);
    if ((e->multi = curl_multi_init()) == NULL) {
        pthread_mutex_destroy(&e->sync_mu);
        pthread_mutex_destroy(&e->mu);
        pthread_rwlock_destroy(&e->srv_lock);
        sa_free(e);
        return sa_err_set(err, SA_ENOMEM, "cannot create a libcurl multi handle");
    }
    e->http_timeout_s = o->http_timeout_s ? o->http_timeout_s : 30;
    e->batch_ops = o->batch_ops ? o->batch_ops : 500;
    int rc = 0;
    char path[4096];
    struct stat st;
    if ((e->dir = sa_strdup(dir)) == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof path, "%s/local", dir);
    int exists = stat(path, &st) == 0;
    if (o->create && exists) {
        rc = sa_err_set(err, SA_EEXISTS, "%s already holds an edge store", dir);
        goto fail;
    }
    if (!o->create && !exists) {
        rc = sa_err_set(err, SA_ENOTFOUND, "%s holds no edge store (run sa-edge init first)", dir);
        goto fail;
    }
    if (o->create && mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = sa_err_set(err, SA_ESYS, "cannot create %s: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = store_open(path, o->create, &e->local, err)) != 0)
        goto fail;
    if (o->create && (rc = init_config(e->local, o, err)) != 0)
        goto fail;
    if ((rc = update_config(e->local, o, err)) != 0)
        goto fail;
    uint64_t gen = 0;
    int have = server_gen_read(dir, &gen, err);
    if (have < 0) {
        rc = have;
        goto fail;
    }
    server_gc(dir, gen, have);
    if (have) {
        if ((rc = edge__server_open(e, gen, 0, &e->server, err)) != 0)
            goto fail;
        e->server_gen = gen;
    }
    if ((rc = sa_hlc_clock_new(NULL, &e->clock, err)) != 0)
        goto fail;
    if ((rc = load_config(e, err)) != 0)
        goto fail;
    sa_retry_policy pol = sa_retry_policy_default();
    if ((rc = sa_retry_init(&e->retry, &pol, 0, err)) != 0)
        goto fail;
    *out = e;
    return 0;
fail:
    sa_edge_close(e);
    return rc;
}

void sa_edge_close(sa_edge *e)
{
    if (e == NULL)
        return;
    sa_edge_stop(e);
    pthread_mutex_lock(&e->sync_mu); /* a sync in progress notices the stop */
    pthread_mutex_unlock(&e->sync_mu);
    if (e->curl != NULL)
        curl_easy_cleanup(e->curl);
    if (e->multi != NULL)
        curl_multi_cleanup(e->multi);
    sa_store_close(e->server);
    sa_store_close(e->local);
    sa_hlc_clock_free(e->clock);
    sa_free(e->bridge);
    sa_free(e->token);
    sa_free(e->dir);
    pthread_rwlock_destroy(&e->srv_lock);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->sync_mu);
    sa_free(e);
}

void sa_edge_stop(sa_edge *e)
{
    if (e != NULL)
        atomic_store(&e->stop, 1);
}

int edge__record_attempt(sa_edge *e, int ok, const char *msg, uint64_t next_retry_ms, sa_err *err)
{
    sa_batch *b = NULL;
    int rc = sa_batch_new(&b, err);
    if (rc == 0)
        rc = sa_batch_cursor_attempt(b, EDGE_SYNC_CURSOR, ok, msg, edge__now_ms(), next_retry_ms,
                                     err);
    if (rc == 0)
        rc = sa_store_commit(e->local, b, NULL, err);
    sa_batch_free(b);
    return rc;
}

/* ---------------------------------------------------------------------
 * Schemas: key columns and types, learned from the server's rows
 * ------------------------------------------------------------------- */

int edge__learn_schema(sa_edge *e, json_t *cache, const sa_op *op, sa_batch *b, sa_err *err)
{
    if (op->kind == SA_OP_TRUNCATE || op->nkey == 0)
        return 0;
    json_t *sc = json_object_get(cache, op->table);
    int fresh = 0;
    if (sc == NULL) {
        char key[1100];
        snprintf(key, sizeof key, "schema.%s", op->table);
        int rc = meta_json(e->local, key, &sc, err);
        if (rc != 0)
            return rc;
        if (sc == NULL) {
            sc = json_pack("{s:[],s:{}}", "key", "types");
            fresh = 1;
        }
        if (sc == NULL || json_object_set_new(cache, op->table, sc) != 0)
            return sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    int changed = fresh;
    json_t *keys = json_object_get(sc, "key"), *types = json_object_get(sc, "types");
    if (!json_is_array(keys) || !json_is_object(types))
        return sa_err_set(err, SA_ECORRUPT, "schema of %s is malformed", op->table);
    /* the key columns: as the latest op names them */
    int same = json_array_size(keys) == op->nkey;
    for (uint32_t i = 0; same && i < op->nkey; i++)
        same = strcmp(json_string_value(json_array_get(keys, i)), op->key[i].name) == 0;
    if (!same) {
        json_array_clear(keys);
        for (uint32_t i = 0; i < op->nkey; i++)
            json_array_append_new(keys, json_string(op->key[i].name));
        changed = 1;
    }
    const sa_field *secs[2] = {op->key, op->cols};
    uint32_t ns[2] = {op->nkey, op->ncols};
    for (int s = 0; s < 2; s++) {
        for (uint32_t i = 0; i < ns[s]; i++) {
            const sa_field *f = &secs[s][i];
            json_t *t = json_object_get(types, f->name);
            if (f->val.type_oid != 0 &&
                (t == NULL || json_integer_value(t) != (json_int_t)f->val.type_oid)) {
                json_object_set_new(types, f->name, json_integer(f->val.type_oid));
                changed = 1;
            }
        }
    }
    if (!changed)
        return 0;
    char key[1100];
    snprintf(key, sizeof key, "schema.%s", op->table);
    return meta_put_json(b, key, sc, err);
}

/* The schema the bridge gave for table ({"key": [column], "types":
 * {column: oid}}, borrowed): into the cache and, in b, the store. */
int edge__set_schema(json_t *cache, const char *table, json_t *schema, sa_batch *b, sa_err *err)
{
    json_t *keys = json_object_get(schema, "key"), *types = json_object_get(schema, "types");
    if (!json_is_array(keys) || json_array_size(keys) == 0 || !json_is_object(types))
        return sa_err_set(err, SA_EPROTO, "snapshot: malformed schema of %s", table);
    size_t i;
    json_t *v;
    json_array_foreach(keys, i, v) if (!json_is_string(v)) return sa_err_set(
        err, SA_EPROTO, "snapshot: malformed key of %s", table);
    if (json_object_set(cache, table, schema) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    char key[1100];
    snprintf(key, sizeof key, "schema.%s", table);
    return meta_put_json(b, key, schema, err);
}

/* 0 when table is one the peer syncs; SA_EINVAL naming it when not. */
static int table_known(sa_edge *e, const char *table, sa_err *err)
{
    json_t *tables = NULL;
    int rc = meta_json(e->local, "tables", &tables, err);
    if (rc != 0)
        return rc;
    if (tables == NULL)
        return sa_err_set(err, SA_ENOTFOUND, "no table is known yet: run sa-edge sync first");
    int found = 0;
    size_t i;
    json_t *v;
    json_array_foreach(tables, i, v) found |=
        json_is_string(v) && strcmp(json_string_value(v), table) == 0;
    json_decref(tables);
    if (!found)
        return sa_err_set(err, SA_EINVAL, "unknown table \"%s\": not one this peer syncs", table);
    return 0;
}

/* The schema of table (*out new reference).  SA_EINVAL when the table is
 * not one the peer syncs; SA_ENOTFOUND when its key is not known yet. */
static int schema_get(sa_edge *e, const char *table, json_t **out, sa_err *err)
{
    int rc = table_known(e, table, err);
    if (rc != 0)
        return rc;
    char key[1100];
    snprintf(key, sizeof key, "schema.%s", table);
    json_t *sc = NULL;
    if ((rc = meta_json(e->local, key, &sc, err)) != 0)
        return rc;
    if (sc == NULL || json_array_size(json_object_get(sc, "key")) == 0) {
        json_decref(sc);
        return sa_err_set(err, SA_ENOTFOUND,
                          "the key columns of \"%s\" are not known yet: the "
                          "table had no rows when this edge last synced",
                          table);
    }
    *out = sc;
    return 0;
}

/* ---------------------------------------------------------------------
 * Values between JSON and fields
 * ------------------------------------------------------------------- */

static int is_int_oid(uint32_t oid)
{
    return oid == SA_OID_INT2 || oid == SA_OID_INT4 || oid == SA_OID_INT8 || oid == SA_OID_OID;
}

/* The user's value for a column of type oid, in the form the wire codec
 * takes (a new reference in *out). */
static int norm_value(const char *col, uint32_t oid, json_t *v, json_t **out, sa_err *err)
{
    if (oid == SA_OID_JSON || oid == SA_OID_JSONB || json_is_null(v) || json_is_string(v)) {
        *out = json_incref(v);
        return 0;
    }
    if (json_is_boolean(v)) {
        *out =
            oid == SA_OID_BOOL ? json_incref(v) : json_string(json_is_true(v) ? "true" : "false");
    } else if (json_is_integer(v)) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        *out = is_int_oid(oid) ? json_incref(v) : json_string(buf);
    } else if (json_is_real(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        *out = s ? json_string(s) : NULL;
        free(s);
    } else {
        return sa_err_set(err, SA_EINVAL,
                          "column \"%s\": %s is accepted only for json and jsonb "
                          "columns",
                          col, json_is_object(v) ? "an object" : "an array");
    }
    return *out == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory") : 0;
}

/*
 * The user's row (or key) for table as an op (kind update: key + cols, no
 * other meaning) decoded by the wire codec, so values get exactly the text
 * the bridge would give them.  Every member must be a column of the table;
 * every key column must be present.  *out sa_op_free.
 */
static int user_fields(sa_edge *e, const char *table, const json_t *schema, const json_t *row,
                       sa_op **out, sa_err *err)
{
    if (!json_is_object(row))
        return sa_err_set(err, SA_EINVAL, "the row must be a JSON object of column -> value");
    json_t *keys = json_object_get(schema, "key"), *types = json_object_get(schema, "types");
    json_t *j = json_object(), *jk = json_object(), *jc = json_object(), *jt = json_object();
    int rc = 0;
    if (j == NULL || jk == NULL || jc == NULL || jt == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    const char *col;
    json_t *v;
    json_object_foreach((json_t *)row, col, v)
    {
        json_t *t = json_object_get(types, col);
        if (t == NULL) {
            rc = sa_err_set(err, SA_EINVAL, "table \"%s\" has no column \"%s\"", table, col);
            goto done;
        }
        int is_key = 0;
        size_t i;
        json_t *k;
        json_array_foreach(keys, i, k) is_key |= strcmp(json_string_value(k), col) == 0;
        json_t *nv = NULL;
        if ((rc = norm_value(col, (uint32_t)json_integer_value(t), v, &nv, err)) != 0)
            goto done;
        json_object_set_new(is_key ? jk : jc, col, nv);
        json_object_set(jt, col, t);
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (json_object_get(jk, json_string_value(k)) == NULL) {
            rc = sa_err_set(err, SA_EINVAL, "key column \"%s\" of \"%s\" is missing",
                            json_string_value(k), table);
            goto done;
        }
    }
    /* key fields in the table's key order (the row queue's name needs it) */
    json_t *ordered = json_object();
    json_array_foreach(keys, i, k)
        json_object_set(ordered, json_string_value(k), json_object_get(jk, json_string_value(k)));
    json_object_set_new(j, "origin", json_string(e->peer));
    json_object_set_new(j, "epoch", json_integer(0));
    json_object_set_new(j, "seq", json_integer(0));
    json_object_set_new(j, "hlc", json_integer(0));
    json_object_set_new(j, "kind", json_string("update"));
    json_object_set_new(j, "table", json_string(table));
    json_object_set_new(j, "key", ordered);
    json_object_set(j, "cols", jc);
    json_object_set(j, "types", jt);
    rc = sa_op_from_json(j, out, err);
    if (rc != 0)
        sa_err_wrap(err, "bad row for \"%s\"", table);
done:
    json_decref(j);
    json_decref(jk);
    json_decref(jc);
    json_decref(jt);
    return rc;
}

/* Fields as a JSON object (new reference), through the wire codec. */
static json_t *fields_json(const char *table, const sa_field *f, uint32_t n, const char *member)
{
    sa_op op;
    memset(&op, 0, sizeof op);
    op.origin = "pg";
    op.kind = SA_OP_UPDATE;
    op.table = table;
    op.key = f;
    op.nkey = n;
    json_t *j = NULL, *res = NULL;
    sa_err err;
    if (n > 0 && sa_op_to_json(&op, &j, &err) == 0)
        res = json_incref(json_object_get(j, member ? member : "key"));
    json_decref(j);
    return res != NULL ? res : json_object();
}

int edge__rowq(const char *table, const sa_field *key, uint32_t nkey, char *out, sa_err *err)
{
    size_t n = 0;
#define PUTC(c)                                                                                    \
    do {                                                                                           \
        if (n >= EDGE_ROWQ_MAX)                                                                    \
            goto toolong;                                                                          \
        out[n++] = (char)(c);                                                                      \
    } while (0)
    for (const char *p = EDGE_ROWQ_PREFIX; *p; p++)
        PUTC(*p);
    for (const char *p = table; *p; p++)
        PUTC(*p);
    PUTC(0x1f);
    for (uint32_t i = 0; i < nkey; i++) {
        if (i > 0)
            PUTC(0x1e);
        for (const char *p = key[i].name; *p; p++)
            PUTC(*p);
        PUTC('=');
        if (key[i].val.kind != SA_VAL_TEXT) {
            PUTC('\\');
            PUTC('N');
            continue;
        }
        for (uint32_t k = 0; k < key[i].val.len; k++) {
            unsigned char c = (unsigned char)key[i].val.data[k];
            if (c < 0x20 || c == '\\') {
                static const char hx[] = "0123456789abcdef";
                PUTC('\\');
                PUTC(hx[c >> 4]);
                PUTC(hx[c & 15]);
            } else {
                PUTC(c);
            }
        }
    }
#undef PUTC
    out[n] = '\0';
    return 0;
toolong:
    return sa_err_set(err, SA_ETOOBIG,
                      "the key of a row of \"%s\" is too long for the overlay "
                      "(more than %d bytes)",
                      table, EDGE_ROWQ_MAX);
}

/* ---------------------------------------------------------------------
 * Reads: the server's row with the pending local ops over it
 * ------------------------------------------------------------------- */

typedef struct vrow {
    json_t *cols; /* every visible column; NULL when the row is absent */
    uint32_t pending;
} vrow;

/* Apply one local op to the view. */
static void vrow_apply(vrow *v, const sa_op *op)
{
    if (op->kind == SA_OP_DELETE) {
        json_decref(v->cols);
        v->cols = NULL;
        return;
    }
    if (op->kind == SA_OP_INSERT || v->cols == NULL) {
        json_decref(v->cols);
        v->cols = fields_json(op->table, op->key, op->nkey, "key");
    }
    json_t *c = fields_json(op->table, op->cols, op->ncols, "key");
    json_object_update(v->cols, c);
    json_decref(c);
}

/* The visible row of (table, key) given the server's row (may be NULL).
 * Caller holds srv_lock for reading.  v->cols NULL when absent. */
static int vrow_build(sa_edge *e, const char *table, const sa_field *key, uint32_t nkey,
                      const sa_row *srv, vrow *v, sa_err *err)
{
    char q[EDGE_ROWQ_MAX + 1];
    v->cols = srv != NULL ? fields_json(table, srv->cols, srv->ncols, "key") : NULL;
    v->pending = 0;
    int rc = edge__rowq(table, key, nkey, q, err);
    if (rc != 0)
        return rc;
    sa_inbox_iter *it = NULL;
    const sa_op *op;
    if ((rc = sa_inbox_iter_open(e->local, q, 0, &it, err)) != 0)
        return rc;
    while ((rc = sa_inbox_iter_next(it, &op, err)) == 1) {
        vrow_apply(v, op);
        v->pending++;
    }
    sa_inbox_iter_close(it);
    return rc < 0 ? rc : 0;
}

static json_t *row_out(const char *table, const sa_field *key, uint32_t nkey, const vrow *v)
{
    return json_pack("{s:s,s:o,s:O,s:i}", "table", table, "key",
                     fields_json(table, key, nkey, "key"), "cols", v->cols, "pending",
                     (json_int_t)v->pending);
}

/* Server row of (table, key) or NULL (*out sa_row_free).  Holds srv_lock. */
static int server_row(sa_edge *e, const char *table, const sa_field *key, uint32_t nkey,
                      sa_row **out, sa_err *err)
{
    *out = NULL;
    if (e->server == NULL)
        return 0;
    int rc = sa_state_get(e->server, table, key, nkey, out, err);
    return rc == SA_ENOTFOUND ? 0 : rc;
}

int sa_edge_get(sa_edge *e, const char *tbl, const json_t *key, json_t **out, sa_err *err)
{
    char table[600];
    table_name(tbl, table, sizeof table);
    json_t *sc = NULL;
    sa_op *k = NULL;
    sa_row *srv = NULL;
    vrow v = {0};
    int rc = schema_get(e, table, &sc, err);
    if (rc == 0)
        rc = user_fields(e, table, sc, key, &k, err);
    if (rc == 0 && k->ncols > 0)
        rc = sa_err_set(err, SA_EINVAL, "get takes the key columns only");
    pthread_rwlock_rdlock(&e->srv_lock);
    if (rc == 0)
        rc = server_row(e, table, k->key, k->nkey, &srv, err);
    if (rc == 0)
        rc = vrow_build(e, table, k->key, k->nkey, srv, &v, err);
    pthread_rwlock_unlock(&e->srv_lock);
    if (rc == 0 && v.cols == NULL)
        rc = sa_err_set(err, SA_ENOTFOUND, "no such row in \"%s\"", table);
    if (rc == 0 && (*out = row_out(table, k->key, k->nkey, &v)) == NULL)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
    json_decref(v.cols);
    sa_row_free(srv);
    sa_op_free(k);
    json_decref(sc);
    return rc;
}

typedef struct list_ctx {
    sa_edge *e;
    const char *table;
    char prefix[700];
    int (*cb)(const json_t *, void *);
    void *ctx;
    int stopped, has_overlay, rc;
    sa_err *err;
} list_ctx;

static int list_emit(list_ctx *lc, const sa_field *key, uint32_t nkey, const vrow *v)
{
    if (v->cols == NULL)
        return 0;
    json_t *r = row_out(lc->table, key, nkey, v);
    if (r == NULL) {
        lc->rc = sa_err_set(lc->err, SA_ENOMEM, "out of memory");
        return 1;
    }
    lc->stopped = lc->cb(r, lc->ctx) != 0;
    json_decref(r);
    return lc->stopped;
}

static int any_overlay_cb(const char *origin, void *ctx)
{
    list_ctx *lc = ctx;
    lc->has_overlay |= strncmp(origin, lc->prefix, strlen(lc->prefix)) == 0;
    return lc->has_overlay;
}

/* Rows only the overlay has (local inserts the server has not sent yet). */
static int overlay_only_cb(const char *origin, void *ctx)
{
    list_ctx *lc = ctx;
    if (strncmp(origin, lc->prefix, strlen(lc->prefix)) != 0)
        return 0;
    sa_inbox_iter *it = NULL;
    const sa_op *op = NULL;
    sa_op *first = NULL;
    sa_row *srv = NULL;
    vrow v = {0};
    int rc = sa_inbox_iter_open(lc->e->local, origin, 0, &it, lc->err);
    if (rc == 0 && (rc = sa_inbox_iter_next(it, &op, lc->err)) == 1)
        rc = sa_op_clone(op, &first, lc->err);
    sa_inbox_iter_close(it);
    if (rc == 0 && first != NULL)
        rc = server_row(lc->e, lc->table, first->key, first->nkey, &srv, lc->err);
    if (rc == 0 && first != NULL && srv == NULL) {
        rc = vrow_build(lc->e, lc->table, first->key, first->nkey, NULL, &v, lc->err);
        if (rc == 0)
            list_emit(lc, first->key, first->nkey, &v);
    }
    json_decref(v.cols);
    sa_row_free(srv);
    sa_op_free(first);
    if (rc < 0)
        lc->rc = rc;
    return lc->rc != 0 || lc->stopped;
}

int sa_edge_list(sa_edge *e, const char *tbl, int (*cb)(const json_t *row, void *ctx), void *ctx,
                 sa_err *err)
{
    char table[600];
    table_name(tbl, table, sizeof table);
    int rc = table_known(e, table, err);
    if (rc != 0)
        return rc;
    list_ctx lc = {.e = e, .table = table, .cb = cb, .ctx = ctx, .err = err};
    snprintf(lc.prefix, sizeof lc.prefix, EDGE_ROWQ_PREFIX "%s\x1f", table);
    pthread_rwlock_rdlock(&e->srv_lock);
    rc = sa_inbox_origins(e->local, any_overlay_cb, &lc, err);
    if (rc == 0 && e->server != NULL) {
        sa_snapshot *sn = NULL;
        sa_state_iter *it = NULL;
        const sa_row *row;
        rc = sa_snapshot_open(e->server, &sn, err);
        if (rc == 0)
            rc = sa_state_iter_open(sn, table, &it, err);
        while (rc == 0 && !lc.stopped && (rc = sa_state_iter_next(it, &row, err)) == 1) {
            rc = 0;
            vrow v = {0};
            if (lc.has_overlay) {
                rc = vrow_build(e, table, row->key, row->nkey, row, &v, err);
            } else {
                v.cols = fields_json(table, row->cols, row->ncols, "key");
            }
            if (rc == 0)
                list_emit(&lc, row->key, row->nkey, &v);
            json_decref(v.cols);
            if (lc.rc != 0)
                rc = lc.rc;
        }
        if (rc > 0)
            rc = 0;
        sa_state_iter_close(it);
        sa_snapshot_close(sn);
    }
    if (rc == 0 && lc.has_overlay && !lc.stopped) {
        rc = sa_inbox_origins(e->local, overlay_only_cb, &lc, err);
        if (rc == 0)
            rc = lc.rc;
    }
    pthread_rwlock_unlock(&e->srv_lock);
    return rc;
}

/* ---------------------------------------------------------------------
 * Local writes
 * ------------------------------------------------------------------- */

/* Append op (seq and hlc assigned here) to the outbox and its row queue in
 * one synced write.  Caller holds mu. */
static int local_append(sa_edge *e, sa_op *op, uint64_t *seq, sa_err *err)
{
    char q[EDGE_ROWQ_MAX + 1];
    uint64_t hlc = 0;
    int rc = edge__rowq(op->table, op->key, op->nkey, q, err);
    if (rc == 0)
        rc = sa_hlc_now(e->clock, &hlc, err);
    if (rc != 0)
        return rc;
    op->origin = e->peer;
    op->epoch = e->epoch;
    op->seq = e->last_seq + 1;
    op->hlc = hlc;
    if ((rc = sa_op_validate(op, err)) != 0)
        return rc;
    sa_batch *b = NULL;
    rc = sa_batch_new(&b, err);
    if (rc == 0)
        rc = sa_batch_inbox_put(b, EDGE_OUTBOX, op, err);
    if (rc == 0)
        rc = sa_batch_inbox_put(b, q, op, err);
    if (rc == 0)
        rc = edge__meta_put_u64(b, "seq.last", op->seq, err);
    if (rc == 0)
        rc = edge__meta_put_u64(b, "hlc.last", hlc, err);
    if (rc == 0)
        rc = sa_store_commit(e->local, b, NULL, err);
    sa_batch_free(b);
    if (rc == 0) {
        e->last_seq = op->seq;
        if (seq != NULL)
            *seq = op->seq;
        atomic_store(&e->kick, 1);
        curl_multi_wakeup(e->multi); /* a long poll in progress ends now */
    }
    return rc;
}

/* The server row's fields named in names (the base of a change). */
static uint32_t base_of(const sa_row *srv, const sa_field *names, uint32_t n, sa_field *out)
{
    uint32_t nb = 0;
    for (uint32_t i = 0; srv != NULL && i < n; i++)
        for (uint32_t k = 0; k < srv->ncols; k++)
            if (strcmp(srv->cols[k].name, names[i].name) == 0)
                out[nb++] = srv->cols[k];
    return nb;
}

int sa_edge_put(sa_edge *e, const char *tbl, const json_t *row, uint64_t *seq, sa_err *err)
{
    char table[600];
    table_name(tbl, table, sizeof table);
    json_t *sc = NULL;
    sa_op *u = NULL;
    sa_row *srv = NULL;
    sa_field *base = NULL;
    vrow v = {0};
    if (seq != NULL)
        *seq = 0;
    int rc = schema_get(e, table, &sc, err);
    if (rc == 0)
        rc = user_fields(e, table, sc, row, &u, err);
    if (rc != 0)
        goto done;
    pthread_mutex_lock(&e->mu);
    pthread_rwlock_rdlock(&e->srv_lock);
    rc = server_row(e, table, u->key, u->nkey, &srv, err);
    if (rc == 0)
        rc = vrow_build(e, table, u->key, u->nkey, srv, &v, err);
    pthread_rwlock_unlock(&e->srv_lock);
    sa_op op;
    memset(&op, 0, sizeof op);
    op.table = table;
    op.key = u->key;
    op.nkey = u->nkey;
    op.cols = u->cols;
    op.ncols = u->ncols;
    if (rc == 0 && v.cols == NULL) {
        op.kind = SA_OP_INSERT;
        if (u->ncols == 0) /* an insert of the key alone: the codec wants cols */
            rc = sa_err_set(err, SA_EINVAL, "a new row of \"%s\" needs a column besides its key",
                            table);
    } else if (rc == 0) {
        op.kind = SA_OP_UPDATE;
        if (srv != NULL && u->ncols > 0) {
            base = sa_calloc(u->ncols, sizeof *base);
            if (base == NULL)
                rc = sa_err_set(err, SA_ENOMEM, "out of memory");
            else {
                op.base = base;
                op.nbase = base_of(srv, u->cols, u->ncols, base);
                op.flags |= SA_OP_HAS_BASE;
            }
        }
    }
    if (rc == 0 && !(op.kind == SA_OP_UPDATE && u->ncols == 0)) /* nothing to change: no op */
        rc = local_append(e, &op, seq, err);
    pthread_mutex_unlock(&e->mu);
done:
    json_decref(v.cols);
    sa_free(base);
    sa_row_free(srv);
    sa_op_free(u);
    json_decref(sc);
    return rc;
}

int sa_edge_delete(sa_edge *e, const char *tbl, const json_t *key, uint64_t *seq, sa_err *err)
{
    char table[600];
    table_name(tbl, table, sizeof table);
    json_t *sc = NULL;
    sa_op *u = NULL;
    sa_row *srv = NULL;
    sa_field *base = NULL;
    vrow v = {0};
    if (seq != NULL)
        *seq = 0;
    int rc = schema_get(e, table, &sc, err);
    if (rc == 0)
        rc = user_fields(e, table, sc, key, &u, err);
    if (rc == 0 && u->ncols > 0)
        rc = sa_err_set(err, SA_EINVAL, "delete takes the key columns only");
    if (rc != 0)
        goto done;
    pthread_mutex_lock(&e->mu);
    pthread_rwlock_rdlock(&e->srv_lock);
    rc = server_row(e, table, u->key, u->nkey, &srv, err);
    if (rc == 0)
        rc = vrow_build(e, table, u->key, u->nkey, srv, &v, err);
    pthread_rwlock_unlock(&e->srv_lock);
    if (rc == 0 && v.cols == NULL)
        rc = sa_err_set(err, SA_ENOTFOUND, "no such row in \"%s\"", table);
    sa_op op;
    memset(&op, 0, sizeof op);
    op.kind = SA_OP_DELETE;
    op.table = table;
    op.key = u->key;
    op.nkey = u->nkey;
    if (rc == 0 && srv != NULL) {
        /* base: the server's values of the non-key columns */
        base = sa_calloc(srv->ncols + 1, sizeof *base);
        if (base == NULL)
            rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        for (uint32_t i = 0; base != NULL && i < srv->ncols; i++) {
            int is_key = 0;
            for (uint32_t k = 0; k < u->nkey; k++)
                is_key |= strcmp(srv->cols[i].name, u->key[k].name) == 0;
            if (!is_key)
                base[op.nbase++] = srv->cols[i];
        }
        op.base = base;
        op.flags |= SA_OP_HAS_BASE;
    }
    if (rc == 0)
        rc = local_append(e, &op, seq, err);
    pthread_mutex_unlock(&e->mu);
done:
    json_decref(v.cols);
    sa_free(base);
    sa_row_free(srv);
    sa_op_free(u);
    json_decref(sc);
    return rc;
}

/* ---------------------------------------------------------------------
 * Retirement (the overlay rule at the top of this file)
 * ------------------------------------------------------------------- */

/* 1 when op s may retire by rule (b). */
static int outcome_retires(sa_edge *e, uint64_t s, uint64_t cursor, sa_err *err)
{
    char key[64];
    snprintf(key, sizeof key, "outcome.%020" PRIu64, s);
    json_t *o = NULL;
    if (meta_json(e->local, key, &o, err) != 0 || o == NULL)
        return 0;
    const char *st = json_string_value(json_object_get(o, "status"));
    const char *res = json_string_value(json_object_get(o, "resolution"));
    uint64_t head = (uint64_t)json_integer_value(json_object_get(o, "head"));
    int unchanged = st != NULL && (strcmp(st, "rejected") == 0 ||
                                   (strcmp(st, "conflict") == 0 && res != NULL &&
                                    (strcmp(res, "kept_local") == 0 || strcmp(res, "open") == 0)));
    json_decref(o);
    return unchanged && cursor >= head;
}

/* 1 when op changes nothing in the server's row of its key: rule (c).  An
 * insert counts as an update here (apply_ops treats an insert over an
 * existing row with the same values as applied, writing nothing).  Caller
 * holds mu, not srv_lock. */
static int noop_on_server(sa_edge *e, const sa_op *op, sa_err *err)
{
    sa_row *srv = NULL;
    pthread_rwlock_rdlock(&e->srv_lock);
    int rc = server_row(e, op->table, op->key, op->nkey, &srv, err);
    pthread_rwlock_unlock(&e->srv_lock);
    int same = 0;
    if (rc == 0 && op->kind == SA_OP_DELETE) {
        same = srv == NULL;
    } else if (rc == 0 && srv != NULL) {
        vrow v = {fields_json(op->table, srv->cols, srv->ncols, "key"), 0};
        json_t *before = json_deep_copy(v.cols);
        sa_op upd = *op;
        upd.kind = SA_OP_UPDATE;
        if (v.cols != NULL && before != NULL) {
            vrow_apply(&v, &upd);
            same = json_equal(before, v.cols);
        }
        json_decref(before);
        json_decref(v.cols);
    }
    sa_row_free(srv);
    return same;
}

int edge__retire(sa_edge *e, sa_err *err)
{
    uint64_t confirmed = 0, cursor = 0, accepted = 0, results_after = 0, applied = 0;
    int rc = 0;
    pthread_mutex_lock(&e->mu);
    pthread_rwlock_rdlock(&e->srv_lock);
    uint64_t conf_to = 0, conf_at = 0;
    if (e->server != NULL) {
        rc = edge__meta_u64(e->server, "confirmed", 0, &confirmed, err);
        if (rc == 0)
            rc = edge__meta_u64(e->server, "cursor", 0, &cursor, err);
        if (rc == 0)
            rc = edge__meta_u64(e->server, "confirm.to", 0, &conf_to, err);
        if (rc == 0)
            rc = edge__meta_u64(e->server, "confirm.at", 0, &conf_at, err);
    }
    pthread_rwlock_unlock(&e->srv_lock);
    /* rule (a) by the bridge's word: applied by transactions the replica
     * holds (edge_sync.c, confirm_record) */
    if (conf_to > confirmed && conf_at > 0 && cursor >= conf_at)
        confirmed = conf_to;
    if (rc == 0)
        rc = edge__meta_u64(e->local, "push.accepted", 0, &accepted, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "results.after", 0, &results_after, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "push.applied", 0, &applied, err);
    for (int more = 1; rc == 0 && more;) {
        sa_inbox_iter *it = NULL;
        sa_batch *b = NULL;
        const sa_op *op;
        uint64_t upto = 0;
        size_t n = 0;
        char q[EDGE_ROWQ_MAX + 1];
        more = 0;
        rc = sa_batch_new(&b, err);
        if (rc == 0)
            rc = sa_inbox_iter_open(e->local, EDGE_OUTBOX, 0, &it, err);
        while (rc == 0 && (rc = sa_inbox_iter_next(it, &op, err)) == 1) {
            rc = 0;
            if (op->seq > confirmed && !outcome_retires(e, op->seq, cursor, err) &&
                !(op->seq <= applied && noop_on_server(e, op, err)))
                break;
            if ((rc = edge__rowq(op->table, op->key, op->nkey, q, err)) == 0)
                rc = sa_batch_inbox_remove(b, q, op->seq, err);
            if (rc == 0 && op->seq > results_after) /* its outcome is still to come */
                rc = sa_batch_inbox_put(b, EDGE_AWAIT, op, err);
            upto = op->seq;
            if (++n == 1000) {
                more = 1;
                break;
            }
        }
        if (rc > 0)
            rc = 0;
        sa_inbox_iter_close(it);
        if (rc == 0 && upto > 0) {
            rc = sa_batch_inbox_remove(b, EDGE_OUTBOX, upto, err);
            if (rc == 0)
                rc = edge__meta_put_u64(b, "retire.upto", upto, err);
            if (rc == 0 && upto > accepted) /* retired means the bridge had it */
                rc = edge__meta_put_u64(b, "push.accepted", accepted = upto, err);
            if (rc == 0)
                rc = sa_store_commit(e->local, b, NULL, err);
        }
        sa_batch_free(b);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* ---------------------------------------------------------------------
 * Status and outcomes
 * ------------------------------------------------------------------- */

static int count_cb(const char *key, const void *val, size_t len, void *ctx)
{
    (void)key;
    (void)val;
    (void)len;
    (*(uint64_t *)ctx)++;
    return 0;
}

int sa_edge_status_get(sa_edge *e, sa_edge_status *st, sa_err *err)
{
    memset(st, 0, sizeof *st);
    snprintf(st->peer, sizeof st->peer, "%s", e->peer);
    st->epoch = e->epoch;
    snprintf(st->bridge, sizeof st->bridge, "%s", e->bridge ? e->bridge : "");
    uint64_t retired = 0;
    pthread_mutex_lock(&e->mu);
    st->last_seq = e->last_seq;
    pthread_mutex_unlock(&e->mu);
    int rc = edge__meta_u64(e->local, "push.accepted", 0, &st->accepted, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "push.applied", 0, &st->applied, err);
    if (rc == 0)
        rc = edge__meta_u64(e->local, "retire.upto", 0, &retired, err);
    pthread_rwlock_rdlock(&e->srv_lock);
    if (rc == 0 && e->server != NULL) {
        char *inst = NULL;
        rc = edge__meta_str(e->server, "instance", &inst, err);
        if (inst != NULL)
            snprintf(st->instance, sizeof st->instance, "%s", inst);
        sa_free(inst);
        if (rc == 0)
            rc = edge__meta_u64(e->server, "cursor", 0, &st->cursor, err);
        if (rc == 0)
            rc = edge__meta_u64(e->server, "head", 0, &st->head, err);
        if (rc == 0)
            rc = edge__meta_u64(e->server, "confirmed", 0, &st->confirmed, err);
    }
    pthread_rwlock_unlock(&e->srv_lock);
    if (rc == 0)
        rc = sa_store_meta_scan(e->local, "outcome.", NULL, count_cb, &st->outcomes, err);
    sa_cursor c;
    if (rc == 0) {
        int g = sa_cursor_get(e->local, EDGE_SYNC_CURSOR, &c, err);
        if (g == 0) {
            st->attempts = c.attempts;
            st->last_attempt_ms = c.last_attempt_ms;
            st->next_retry_ms = c.attempts > 0 ? c.next_retry_ms : 0;
            snprintf(st->last_error, sizeof st->last_error, "%s", c.last_error);
        } else if (g != SA_ENOTFOUND) {
            rc = g;
        }
    }
    st->pending = st->last_seq > st->accepted ? st->last_seq - st->accepted : 0;
    st->overlay = st->last_seq > retired ? st->last_seq - retired : 0;
    return rc;
}

int sa_edge_status_json(const sa_edge_status *st, json_t **out, sa_err *err)
{
    json_t *j = json_pack(
        "{s:s,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:s}", "peer", st->peer,
        "epoch", (json_int_t)st->epoch, "bridge", st->bridge, "instance", st->instance, "cursor",
        (json_int_t)st->cursor, "head", (json_int_t)st->head, "last_seq", (json_int_t)st->last_seq,
        "accepted", (json_int_t)st->accepted, "applied", (json_int_t)st->applied, "confirmed",
        (json_int_t)st->confirmed, "pending", (json_int_t)st->pending, "overlay",
        (json_int_t)st->overlay, "outcomes", (json_int_t)st->outcomes, "attempts",
        (int)st->attempts, "last_attempt_ms", (json_int_t)st->last_attempt_ms, "next_retry_ms",
        (json_int_t)st->next_retry_ms, "last_error", st->last_error);
    if (j == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    *out = j;
    return 0;
}

typedef struct outcome_ctx {
    int (*cb)(const json_t *, void *);
    void *ctx;
} outcome_ctx;

static int outcome_cb(const char *key, const void *val, size_t len, void *vctx)
{
    (void)key;
    outcome_ctx *oc = vctx;
    json_t *j = json_loadb(val, len, 0, NULL);
    if (j == NULL)
        return 0;
    json_object_del(j, "head"); /* bookkeeping, not part of the report */
    int stop = oc->cb(j, oc->ctx);
    json_decref(j);
    return stop;
}

int sa_edge_outcomes(sa_edge *e, int (*cb)(const json_t *o, void *ctx), void *ctx, sa_err *err)
{
    outcome_ctx oc = {cb, ctx};
    return sa_store_meta_scan(e->local, "outcome.", NULL, outcome_cb, &oc, err);
}
