/*
 * metrics.c — the registry behind /metrics and /healthz (contract in
 * metrics.h).
 *
 * Families are a static table; each family's series live in one
 * open-addressing hash table keyed by the rendered label text
 * ("peer=\"a\",route=\"/v1/ops\"").  The table grows by doubling up to
 * METRICS_MAX_SERIES series; a histogram series carries its bucket
 * counts inline.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sa/sa_alloc.h"

typedef enum kind { K_COUNTER, K_GAUGE, K_HIST } kind;

typedef struct family_def {
    const char *name;
    kind kind;
    const char *help;
} family_def;

/* clang-format off */
static const family_def defs[] = {
    /* peers (edges) */
    {"softadastra_peer_pulls_total", K_COUNTER, "GET /v1/changes requests answered, by peer."},
    {"softadastra_peer_pushes_total", K_COUNTER, "POST /v1/ops batches accepted, by peer."},
    {"softadastra_peer_pushed_ops_total", K_COUNTER, "Ops newly accepted into the inbox, by peer."},
    {"softadastra_peer_retries_total", K_COUNTER,
     "Requests a peer repeated: pushes re-sending ops already accepted, and pushes refused "
     "(gap, inbox full) that the peer must retry, by peer."},
    {"softadastra_peer_converge_seconds", K_HIST,
     "Time from a PostgreSQL commit to its acknowledgement by each peer (the peer's next "
     "pull after holding it)."},
    /* the applier */
    {"softadastra_applied_ops_total", K_COUNTER,
     "Edge ops the applier finished, by outcome (applied, conflict, rejected, duplicate)."},
    {"softadastra_conflicts_total", K_COUNTER, "Conflicts recorded, by table, kind and resolution."},
    {"softadastra_rejections_total", K_COUNTER, "Edge ops rejected (quarantined), by peer."},
    {"softadastra_apply_seconds", K_HIST,
     "Time of one apply batch: softadastra.apply_ops, its commit and the bridge's bookkeeping."},
    {"softadastra_apply_retries_total", K_COUNTER,
     "Apply batches retried after a transient failure (connection, deadlock, restart)."},
    /* replication */
    {"softadastra_replication_connected", K_GAUGE, "1 while the replication connection is streaming."},
    {"softadastra_replication_lag_bytes", K_GAUGE,
     "Server WAL position minus the position the bridge holds durably."},
    {"softadastra_replication_lag_seconds", K_GAUGE,
     "Age (by its commit time) of the transaction the bridge is receiving, while the server "
     "is ahead of what the bridge holds durably; 0 when caught up."},
    {"softadastra_replication_server_lsn", K_GAUGE, "Server WAL end last reported (bytes)."},
    {"softadastra_replication_durable_lsn", K_GAUGE,
     "End LSN of the last transaction written durably to the bridge's WAL (bytes)."},
    {"softadastra_replication_confirmed_lsn", K_GAUGE,
     "Flush LSN last confirmed to PostgreSQL (bytes); never above the durable one except "
     "while idle."},
    {"softadastra_replication_transactions_total", K_COUNTER,
     "Transactions received and written to the WAL."},
    {"softadastra_replication_reconnects_total", K_COUNTER, "Replication connections replaced."},
    /* HTTP */
    {"softadastra_http_requests_total", K_COUNTER, "HTTP requests answered, by route and status."},
    {"softadastra_metrics_dropped_total", K_COUNTER,
     "Metric updates dropped because a family reached its series limit."},
};
/* clang-format on */

#define NFAM (sizeof defs / sizeof defs[0])

/* histogram bucket upper bounds, seconds (+Inf implied) */
static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                0.5,   1,      2.5,   5,    10,    30,    60,  300};
#define NB (sizeof bounds / sizeof bounds[0])

typedef struct series {
    char *labels; /* NULL: empty slot */
    double value; /* counter, gauge; histogram: sum */
    uint64_t count;
    uint64_t buckets[NB]; /* histogram: per bucket (not cumulative) */
} series;

typedef struct family {
    series *s;
    size_t cap, n;
} family;

typedef struct health {
    int state; /* -1 never, 0 failing, 1 ok */
    char reason[256];
    uint64_t since_ms;
} health;

struct metrics {
    pthread_mutex_t mu;
    family fam[NFAM];
    health parts[METRICS_NPARTS];
};

int metrics_new(metrics **out, sa_err *err)
{
    metrics *m = sa_calloc(1, sizeof *m);
    if (m == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    for (int i = 0; i < METRICS_NPARTS; i++)
        m->parts[i].state = -1;
    *out = m;
    return 0;
}

void metrics_free(metrics *m)
{
    if (m == NULL)
        return;
    for (size_t f = 0; f < NFAM; f++) {
        for (size_t i = 0; i < m->fam[f].cap; i++)
            sa_free(m->fam[f].s[i].labels);
        sa_free(m->fam[f].s);
    }
    pthread_mutex_destroy(&m->mu);
    sa_free(m);
}

static int fam_index(const char *name)
{
    for (size_t i = 0; i < NFAM; i++)
        if (strcmp(defs[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Label pairs as Prometheus text: k="v",k2="v2" (values escaped). */
static void labels_text(sa_buf *b, const char *const *labels)
{
    for (size_t i = 0; labels != NULL && labels[i] != NULL && labels[i + 1] != NULL; i += 2) {
        if (i > 0)
            sa_buf_put_u8(b, ',');
        sa_buf_put(b, labels[i], strlen(labels[i]));
        sa_buf_put(b, "=\"", 2);
        for (const char *v = labels[i + 1]; *v; v++) {
            if (*v == '\n') {
                sa_buf_put(b, "\\n", 2);
                continue;
            }
            if (*v == '\\' || *v == '"')
                sa_buf_put_u8(b, '\\');
            sa_buf_put_u8(b, (uint8_t)*v);
        }
        sa_buf_put_u8(b, '"');
    }
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* The series of family f with these labels, created if room (mu held). */
static series *find(metrics *m, size_t f, const char *key, int create)
{
    family *fa = &m->fam[f];
    if (fa->cap > 0) {
        for (size_t i = hash(key) & (fa->cap - 1);; i = (i + 1) & (fa->cap - 1)) {
            if (fa->s[i].labels == NULL)
                break;
            if (strcmp(fa->s[i].labels, key) == 0)
                return &fa->s[i];
        }
    }
    if (!create)
        return NULL;
    if (fa->n >= METRICS_MAX_SERIES)
        return NULL;
    if ((fa->n + 1) * 2 > fa->cap) { /* grow: load at most one half */
        size_t cap = fa->cap ? fa->cap * 2 : 16;
        series *s = sa_calloc(cap, sizeof *s);
        if (s == NULL)
            return NULL;
        for (size_t i = 0; i < fa->cap; i++) {
            if (fa->s[i].labels == NULL)
                continue;
            size_t j = hash(fa->s[i].labels) & (cap - 1);
            while (s[j].labels != NULL)
                j = (j + 1) & (cap - 1);
            s[j] = fa->s[i];
        }
        sa_free(fa->s);
        fa->s = s;
        fa->cap = cap;
    }
    size_t i = hash(key) & (fa->cap - 1);
    while (fa->s[i].labels != NULL)
        i = (i + 1) & (fa->cap - 1);
    if ((fa->s[i].labels = sa_strdup(key)) == NULL)
        return NULL;
    fa->n++;
    return &fa->s[i];
}

static void update(metrics *m, const char *name, kind want, const char *const *labels, double v)
{
    if (m == NULL)
        return;
    int f = fam_index(name);
    if (f < 0 || defs[f].kind != want)
        return;
    sa_buf key;
    sa_buf_init(&key);
    labels_text(&key, labels);
    if (sa_buf_put_u8(&key, '\0') != 0) {
        sa_buf_free(&key);
        return;
    }
    pthread_mutex_lock(&m->mu);
    series *s = find(m, (size_t)f, (const char *)key.data, 1);
    if (s == NULL) {
        series *d = find(m, (size_t)fam_index("softadastra_metrics_dropped_total"), "", 1);
        if (d != NULL)
            d->value += 1;
    } else if (want == K_COUNTER) {
        s->value += v;
    } else if (want == K_GAUGE) {
        s->value = v;
    } else {
        s->value += v;
        s->count++;
        size_t b = 0;
        while (b < NB && v > bounds[b])
            b++;
        if (b < NB)
            s->buckets[b]++;
    }
    pthread_mutex_unlock(&m->mu);
    sa_buf_free(&key);
}

void metrics_add(metrics *m, const char *name, const char *const *labels, double v)
{
    update(m, name, K_COUNTER, labels, v);
}

void metrics_set(metrics *m, const char *name, const char *const *labels, double v)
{
    update(m, name, K_GAUGE, labels, v);
}

void metrics_observe(metrics *m, const char *name, const char *const *labels, double v)
{
    update(m, name, K_HIST, labels, v < 0 ? 0 : v);
}

double metrics_get(metrics *m, const char *name, const char *const *labels, double def)
{
    int f = m != NULL ? fam_index(name) : -1;
    if (f < 0)
        return def;
    sa_buf key;
    sa_buf_init(&key);
    labels_text(&key, labels);
    double v = def;
    if (sa_buf_put_u8(&key, '\0') == 0) {
        pthread_mutex_lock(&m->mu);
        series *s = find(m, (size_t)f, (const char *)key.data, 0);
        if (s != NULL)
            v = s->value;
        pthread_mutex_unlock(&m->mu);
    }
    sa_buf_free(&key);
    return v;
}

static int put_header(sa_buf *b, const char *name, const char *type, const char *help)
{
    char line[640];
    int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    return sa_buf_put(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* name{labels[,extra]} value; non-zero when out of memory */
static int put_sample(sa_buf *b, const char *name, const char *suffix, const char *labels,
                      const char *extra, double v)
{
    char line[512];
    int n = snprintf(line, sizeof line, "%s%s%s%s%s%s%s %.17g\n", name, suffix,
                     labels[0] != '\0' || extra != NULL ? "{" : "", labels,
                     labels[0] != '\0' && extra != NULL ? "," : "", extra != NULL ? extra : "",
                     labels[0] != '\0' || extra != NULL ? "}" : "", v);
    if ((size_t)n < sizeof line)
        return sa_buf_put(b, line, (size_t)n);
    /* long label values: the same line, built piecewise */
    int rc = sa_buf_put(b, name, strlen(name)) | sa_buf_put(b, suffix, strlen(suffix)) |
             sa_buf_put_u8(b, '{') | sa_buf_put(b, labels, strlen(labels));
    if (extra != NULL)
        rc |= (labels[0] != '\0' ? sa_buf_put_u8(b, ',') : 0) | sa_buf_put(b, extra, strlen(extra));
    n = snprintf(line, sizeof line, "} %.17g\n", v);
    return rc | sa_buf_put(b, line, (size_t)n);
}

void metrics_line(sa_buf *out, const char *name, const char *type, const char *help,
                  const char *const *labels, double v)
{
    if (help != NULL)
        put_header(out, name, type, help);
    sa_buf key;
    sa_buf_init(&key);
    labels_text(&key, labels);
    if (sa_buf_put_u8(&key, '\0') == 0)
        put_sample(out, name, "", (const char *)key.data, NULL, v);
    sa_buf_free(&key);
}

int metrics_render(metrics *m, sa_buf *out, sa_err *err)
{
    int bad = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t f = 0; f < NFAM; f++) {
        family *fa = &m->fam[f];
        if (fa->n == 0)
            continue;
        const char *type = defs[f].kind == K_COUNTER ? "counter"
                           : defs[f].kind == K_GAUGE ? "gauge"
                                                     : "histogram";
        bad |= put_header(out, defs[f].name, type, defs[f].help);
        for (size_t i = 0; i < fa->cap; i++) {
            const series *s = &fa->s[i];
            if (s->labels == NULL)
                continue;
            if (defs[f].kind != K_HIST) {
                bad |= put_sample(out, defs[f].name, "", s->labels, NULL, s->value);
                continue;
            }
            uint64_t cum = 0;
            char le[48];
            for (size_t b = 0; b < NB; b++) {
                cum += s->buckets[b];
                snprintf(le, sizeof le, "le=\"%g\"", bounds[b]);
                bad |= put_sample(out, defs[f].name, "_bucket", s->labels, le, (double)cum);
            }
            bad |= put_sample(out, defs[f].name, "_bucket", s->labels, "le=\"+Inf\"",
                              (double)s->count);
            bad |= put_sample(out, defs[f].name, "_sum", s->labels, NULL, s->value);
            bad |= put_sample(out, defs[f].name, "_count", s->labels, NULL, (double)s->count);
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (bad)
        return sa_err_set(err, SA_ENOMEM, "out of memory rendering metrics");
    return 0;
}

/* --- health --------------------------------------------------------------- */

static const char *const part_names[METRICS_NPARTS] = {"replication", "applier", "storage"};

const char *metrics_part_name(metrics_part part)
{
    return part < METRICS_NPARTS ? part_names[part] : "?";
}

void metrics_health_set(metrics *m, metrics_part part, int ok, const char *reason)
{
    if (m == NULL || part >= METRICS_NPARTS)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&m->mu);
    health *h = &m->parts[part];
    int state = ok ? 1 : 0;
    if (h->state != state)
        h->since_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    h->state = state;
    snprintf(h->reason, sizeof h->reason, "%s", ok || reason == NULL ? "" : reason);
    pthread_mutex_unlock(&m->mu);
}

int metrics_health_get(metrics *m, metrics_part part, char *reason, size_t cap, uint64_t *since_ms)
{
    if (m == NULL || part >= METRICS_NPARTS)
        return -1;
    pthread_mutex_lock(&m->mu);
    health h = m->parts[part];
    pthread_mutex_unlock(&m->mu);
    if (cap > 0)
        snprintf(reason, cap, "%s", h.reason);
    if (since_ms != NULL)
        *since_ms = h.since_ms;
    return h.state;
}
