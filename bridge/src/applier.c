/*
 * applier.c — inbox → softadastra.apply_ops (contract in applier.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "applier.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "sa/sa_alloc.h"
#include "sa/sa_op.h"
#include "sa/sa_retry.h"

#define APPLIER_TICK_MS 200

struct applier {
    char *pg;
    sa_store *store;
    metrics *m;
    ingest_log_fn log;
    void *log_ctx;
    int log_level;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kicked;
    PGconn *conn;
    sa_retry retry;
    /* origins stopped on a gap (PostgreSQL behind the inbox): skipped */
    char stuck[16][96];
    int nstuck;
};

__attribute__((format(printf, 3, 4))) static void say(applier *a, int level, const char *fmt, ...)
{
    if (a->log == NULL || level > a->log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    a->log(a->log_ctx, level, line);
}

/* Sleep up to ms, or until kicked / stopped. */
static void nap(applier *a, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&a->mu);
    while (!a->stop && !a->kicked)
        if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) != 0)
            break;
    a->kicked = 0;
    pthread_mutex_unlock(&a->mu);
}

static int stopping(applier *a)
{
    pthread_mutex_lock(&a->mu);
    int s = a->stop;
    pthread_mutex_unlock(&a->mu);
    return s;
}

/* An open connection, or SA_EPG (the caller waits and tries again). */
static int connect_pg(applier *a, sa_err *err)
{
    if (a->conn != NULL && PQstatus(a->conn) == CONNECTION_OK)
        return 0;
    if (a->conn != NULL)
        PQfinish(a->conn);
    a->conn = PQconnectdb(a->pg);
    if (PQstatus(a->conn) != CONNECTION_OK)
        return sa_err_set(err, SA_EPG, "cannot connect to PostgreSQL: %s", PQerrorMessage(a->conn));
    PGresult *r = PQexec(a->conn, "SET application_name = 'sa-bridge applier'");
    PQclear(r);
    return 0;
}

/* Is this failure worth another try later (vs. a bug or bad data)? */
static int transient_sqlstate(const char *st)
{
    return st == NULL || strncmp(st, "08", 2) == 0 /* connection */ ||
           strncmp(st, "57P", 3) == 0 /* shutdown */ || strcmp(st, "40001") == 0 ||
           strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0 /* lock timeout */ ||
           strncmp(st, "53", 2) == 0 /* resources */;
}

typedef struct outcome {
    uint64_t seq;
    char status[16];
    long long conflict_id; /* 0: none */
    char resolution[20];
    char kind[20];   /* conflicts: their kind and table, for metrics */
    char table[128];
    char *message; /* malloc'd or NULL */
} outcome;

static json_t *outcome_json(const outcome *o)
{
    json_t *j = json_object();
    json_object_set_new(j, "seq", json_integer((json_int_t)o->seq));
    json_object_set_new(j, "status", json_string(o->status));
    if (o->conflict_id > 0)
        json_object_set_new(j, "conflict_id", json_integer(o->conflict_id));
    if (o->resolution[0] != '\0')
        json_object_set_new(j, "resolution", json_string(o->resolution));
    if (o->message != NULL)
        json_object_set_new(j, "message", json_string(o->message));
    return j;
}

/* The outcome of op seq that PostgreSQL applied earlier (apply_ops said
 * "duplicate"): a conflicts row, a rejections row, or applied. */
static int recover_outcome(applier *a, const char *peer, uint64_t epoch, outcome *o, sa_err *err)
{
    char e[24], s[24];
    snprintf(e, sizeof e, "%" PRIu64, epoch);
    snprintf(s, sizeof s, "%" PRIu64, o->seq);
    const char *params[3] = {peer, e, s};
    PGresult *r = PQexecParams(
        a->conn,
        "SELECT 'conflict', c.id, c.resolution, NULL FROM softadastra.conflicts c "
        " WHERE c.origin = $1 AND c.epoch = $2::bigint AND c.op_seq = $3::bigint "
        "UNION ALL "
        "SELECT 'rejected', NULL, NULL, j.message FROM softadastra.rejections j "
        " WHERE j.peer = $1 AND j.epoch = $2::bigint AND j.op_seq = $3::bigint "
        "LIMIT 1",
        3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = sa_err_set(err, SA_EPG, "cannot read an op's outcome back: %s",
                            PQresultErrorMessage(r));
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) == 0) {
        snprintf(o->status, sizeof o->status, "applied");
    } else {
        snprintf(o->status, sizeof o->status, "%s", PQgetvalue(r, 0, 0));
        if (!PQgetisnull(r, 0, 1))
            o->conflict_id = atoll(PQgetvalue(r, 0, 1));
        if (!PQgetisnull(r, 0, 2))
            snprintf(o->resolution, sizeof o->resolution, "%s", PQgetvalue(r, 0, 2));
        if (!PQgetisnull(r, 0, 3))
            o->message = strdup(PQgetvalue(r, 0, 3));
    }
    PQclear(r);
    return 0;
}

/*
 * One batch of origin: 1 when something was applied (more may follow), 0
 * when its inbox is empty, < 0 on failure (err; SA_EPG for transient).
 */
static int apply_batch(applier *a, const char *origin, sa_err *err)
{
    const char *at = strrchr(origin, '@');
    if (at == NULL || at == origin)
        return 0; /* not ours */
    char peer[96];
    snprintf(peer, sizeof peer, "%.*s", (int)(at - origin), origin);
    uint64_t epoch = strtoull(at + 1, NULL, 10);
    uint64_t wm = 0;
    int rc = sa_watermark_get(a->store, origin, &wm, err);
    if (rc != 0)
        return rc;

    /* the batch, as the wire form */
    sa_inbox_iter *it = NULL;
    const sa_op *op;
    json_t *arr = json_array();
    uint64_t first = 0;
    size_t n = 0;
    if ((rc = sa_inbox_iter_open(a->store, origin, wm + 1, &it, err)) != 0) {
        json_decref(arr);
        return rc;
    }
    while (n < APPLIER_BATCH && (rc = sa_inbox_iter_next(it, &op, err)) == 1) {
        json_t *j = NULL;
        if ((rc = sa_op_to_json(op, &j, err)) != 0)
            break;
        json_array_append_new(arr, j);
        if (n == 0)
            first = op->seq;
        n++;
    }
    sa_inbox_iter_close(it);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    if (n == 0) {
        json_decref(arr);
        return 0;
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (text == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    if ((rc = connect_pg(a, err)) != 0) {
        free(text);
        return rc;
    }

    char e[24];
    snprintf(e, sizeof e, "%" PRIu64, epoch);
    const char *params[3] = {peer, e, text};
    PGresult *r = PQexec(a->conn, "BEGIN");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = ok ? PQexecParams(a->conn,
                          "SELECT seq, status, conflict_id, message FROM "
                          "softadastra.apply_ops($1, $2::bigint, $3::jsonb)",
                          3, NULL, params, NULL, NULL, 0)
           : NULL;
    free(text);
    if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *st = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        rc = sa_err_set(err, transient_sqlstate(st) ? SA_EPG : SA_EPROTO,
                        "apply_ops for %s failed: %s", origin,
                        r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(a->conn));
        PQclear(r);
        PQclear(PQexec(a->conn, "ROLLBACK"));
        return rc;
    }
    int rows = PQntuples(r);
    outcome *oc = calloc((size_t)rows + 1, sizeof *oc);
    int noc = 0, gap = 0;
    uint64_t done = wm;
    for (int i = 0; oc != NULL && i < rows; i++) {
        if (PQgetisnull(r, i, 0))
            continue; /* an op without a seq: cannot come from the inbox */
        outcome *o = &oc[noc++];
        o->seq = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        snprintf(o->status, sizeof o->status, "%s", PQgetvalue(r, i, 1));
        if (!PQgetisnull(r, i, 2))
            o->conflict_id = atoll(PQgetvalue(r, i, 2));
        if (!PQgetisnull(r, i, 3))
            o->message = strdup(PQgetvalue(r, i, 3));
        if (strcmp(o->status, "gap") == 0) {
            gap = 1;
            noc--;
            free(o->message);
            break;
        }
        done = o->seq;
    }
    PQclear(r);
    r = PQexec(a->conn, "COMMIT");
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        rc = sa_err_set(err, transient_sqlstate(st) ? SA_EPG : SA_EPROTO, "commit for %s failed: %s",
                        origin, PQresultErrorMessage(r));
    }
    PQclear(r);
    /* conflict resolutions, and outcomes of ops applied before a crash */
    for (int i = 0; rc == 0 && oc != NULL && i < noc; i++) {
        if (strcmp(oc[i].status, "duplicate") == 0)
            rc = recover_outcome(a, peer, epoch, &oc[i], err);
        else if (strcmp(oc[i].status, "conflict") == 0 && oc[i].conflict_id > 0) {
            char id[24];
            snprintf(id, sizeof id, "%lld", oc[i].conflict_id);
            const char *p1[1] = {id};
            PGresult *q = PQexecParams(a->conn,
                                       "SELECT resolution, kind, table_name FROM "
                                       "softadastra.conflicts WHERE id = $1::bigint",
                                       1, NULL, p1, NULL, NULL, 0);
            if (PQresultStatus(q) == PGRES_TUPLES_OK && PQntuples(q) == 1) {
                snprintf(oc[i].resolution, sizeof oc[i].resolution, "%s", PQgetvalue(q, 0, 0));
                snprintf(oc[i].kind, sizeof oc[i].kind, "%s", PQgetvalue(q, 0, 1));
                snprintf(oc[i].table, sizeof oc[i].table, "%s", PQgetvalue(q, 0, 2));
            }
            PQclear(q);
        }
    }
    if (rc == 0 && oc == NULL)
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");

    /* the outcomes, the inbox and the watermark: one synced write */
    sa_batch *b = NULL;
    if (rc == 0 && done > wm && (rc = sa_batch_new(&b, err)) == 0) {
        for (int i = 0; rc == 0 && i < noc; i++) {
            char key[160];
            snprintf(key, sizeof key, APPLIER_RESULT_PREFIX "%.100s.%020" PRIu64, origin, oc[i].seq);
            json_t *j = outcome_json(&oc[i]);
            char *s = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            rc = s == NULL ? sa_err_set(err, SA_ENOMEM, "out of memory")
                           : sa_batch_meta_put(b, key, s, strlen(s), err);
            free(s);
        }
        if (rc == 0)
            rc = sa_batch_inbox_remove(b, origin, done, err);
        if (rc == 0)
            rc = sa_batch_watermark(b, origin, done, err);
        if (rc == 0)
            rc = sa_store_commit(a->store, b, NULL, err);
        sa_batch_free(b);
    }
    int napplied = 0, nconf = 0, nrej = 0;
    for (int i = 0; oc != NULL && i < noc; i++) {
        napplied += strcmp(oc[i].status, "applied") == 0;
        nconf += strcmp(oc[i].status, "conflict") == 0;
        nrej += strcmp(oc[i].status, "rejected") == 0;
        if (rc == 0 && done > wm) { /* recorded: count it, once */
            const char *lo[] = {"outcome", oc[i].status, NULL};
            metrics_add(a->m, "softadastra_applied_ops_total", lo, 1);
            if (strcmp(oc[i].status, "conflict") == 0 && oc[i].kind[0] != '\0') {
                const char *lc[] = {"table", oc[i].table, "kind", oc[i].kind,
                                    "resolution", oc[i].resolution, NULL};
                metrics_add(a->m, "softadastra_conflicts_total", lc, 1);
            }
            if (strcmp(oc[i].status, "rejected") == 0) {
                const char *lr[] = {"peer", peer, NULL};
                metrics_add(a->m, "softadastra_rejections_total", lr, 1);
            }
        }
        free(oc[i].message);
    }
    free(oc);
    if (rc != 0)
        return rc;
    say(a, 3, "applied %s ops %" PRIu64 "..%" PRIu64 ": %d applied, %d conflicts, %d rejected",
        origin, first, done, napplied, nconf, nrej);
    if (gap) {
        if (a->nstuck < 16)
            snprintf(a->stuck[a->nstuck++], sizeof a->stuck[0], "%.95s", origin);
        say(a, 0, "applier: PostgreSQL's watermark for %s is below the bridge's (%" PRIu64
            "): was it restored from an older backup? Its ops wait until this is repaired",
            origin, wm);
        return 0;
    }
    return done > wm ? 1 : 0;
}

typedef struct origin_list {
    char (*names)[96];
    int n, cap;
} origin_list;

static int add_origin(const char *origin, void *ctx)
{
    origin_list *l = ctx;
    if (l->n < l->cap)
        snprintf(l->names[l->n++], 96, "%.95s", origin);
    return l->n >= l->cap;
}

static void *applier_main(void *p)
{
    applier *a = p;
    char names[256][96];
    while (!stopping(a)) {
        origin_list l = {names, 0, 256};
        sa_err err = {0};
        int rc = sa_inbox_origins(a->store, add_origin, &l, &err);
        int more = 0;
        for (int i = 0; rc == 0 && i < l.n && !stopping(a); i++) {
            int skip = 0;
            for (int k = 0; k < a->nstuck; k++)
                skip |= strcmp(a->stuck[k], names[i]) == 0;
            if (skip)
                continue;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int r = apply_batch(a, names[i], &err);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (r > 0)
                metrics_observe(a->m, "softadastra_apply_seconds", NULL,
                                (double)(t1.tv_sec - t0.tv_sec) +
                                    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
            if (r > 0)
                more = 1;
            else if (r < 0)
                rc = r;
        }
        if (rc != 0) {
            metrics_add(a->m, "softadastra_apply_retries_total", NULL, 1);
            metrics_health_set(a->m, METRICS_APPLIER, 0, err.msg);
            uint64_t delay = 1000;
            sa_err e2;
            sa_retry_next(&a->retry, 0, &delay, &e2);
            say(a, rc == SA_EPG ? 1 : 0, "applier: %s; trying again in %" PRIu64 " ms", err.msg,
                delay);
            if (a->conn != NULL && PQstatus(a->conn) != CONNECTION_OK) {
                PQfinish(a->conn);
                a->conn = NULL;
            }
            nap(a, delay);
            continue;
        }
        sa_retry_success(&a->retry);
        metrics_health_set(a->m, METRICS_APPLIER, 1, NULL);
        if (!more)
            nap(a, APPLIER_TICK_MS);
    }
    return NULL;
}

int applier_start(const char *pg, sa_store *store, metrics *m, ingest_log_fn log, void *log_ctx,
                  int log_level, applier **out, sa_err *err)
{
    applier *a = sa_calloc(1, sizeof *a);
    if (a == NULL || (a->pg = sa_strdup(pg)) == NULL) {
        sa_free(a);
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    }
    a->store = store;
    a->m = m;
    a->log = log;
    a->log_ctx = log_ctx;
    a->log_level = log_level;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    metrics_health_set(m, METRICS_APPLIER, 1, NULL); /* healthy until a batch fails */
    sa_retry_policy pol = sa_retry_policy_default();
    int rc = sa_retry_init(&a->retry, &pol, 0, err);
    if (rc == 0 && pthread_create(&a->thread, NULL, applier_main, a) != 0)
        rc = sa_err_set(err, SA_ESYS, "cannot start the applier thread");
    if (rc != 0) {
        pthread_cond_destroy(&a->cv);
        pthread_mutex_destroy(&a->mu);
        sa_free(a->pg);
        sa_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void applier_kick(applier *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->kicked = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void applier_stop(applier *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    if (a->conn != NULL)
        PQfinish(a->conn);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    sa_free(a->pg);
    sa_free(a);
}
