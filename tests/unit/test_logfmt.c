/*
 * test_logfmt.c — log lines never carry a secret and are always one line
 * (logfmt.c), and the metrics registry (metrics.c): exposition format,
 * histograms, label escaping, the series bound, health.
 */
#include "testutil.h"

#include "logfmt.h"
#include "metrics.h"

static void scrub(const char *msg, const char *const *secrets, size_t n, char *out, size_t cap)
{
    logfmt_scrub(msg, secrets, n, out, cap);
    assert_true(strlen(out) < cap);
}

static void test_logfmt_scrub(void **state)
{
    (void)state;
    char out[512];
    const char *secrets[] = {"s3cr3t-pw", NULL};
    scrub("could not connect: host=db user=u password=hunter22 dbname=x", NULL, 0, out, sizeof out);
    assert_string_equal(out, "could not connect: host=db user=u password=*** dbname=x");
    scrub("conninfo password='a b\\' c' port=5", NULL, 0, out, sizeof out);
    assert_string_equal(out, "conninfo password=*** port=5");
    scrub("PASSWORD=XyZ", NULL, 0, out, sizeof out);
    assert_string_equal(out, "PASSWORD=***");
    scrub("postgresql://app:pa:ss@db:5432/shop failed", NULL, 0, out, sizeof out);
    assert_string_equal(out, "postgresql://app:***@db:5432/shop failed");
    scrub("postgresql://app@db/shop and http://host:8433/v1", NULL, 0, out, sizeof out);
    assert_string_equal(out, "postgresql://app@db/shop and http://host:8433/v1");
    scrub("Authorization: Bearer abcdef0123 rejected", NULL, 0, out, sizeof out);
    assert_string_equal(out, "Authorization: Bearer *** rejected");
    scrub("the password s3cr3t-pw appeared twice: s3cr3t-pw.", secrets, 1, out, sizeof out);
    assert_string_equal(out, "the password *** appeared twice: ***.");
    scrub("password= nothing", NULL, 0, out, sizeof out);
    assert_string_equal(out, "password= nothing");
    /* truncation keeps the terminator and never exposes a secret's prefix */
    char small[8];
    scrub("password=abcdefghijkl", NULL, 0, small, sizeof small);
    assert_null(strstr(small, "abc"));
}

static void test_logfmt_quote(void **state)
{
    (void)state;
    char out[128];
    logfmt_quote("plain", out, sizeof out);
    assert_string_equal(out, "\"plain\"");
    logfmt_quote("a \"q\" \\ b\nc\rd\te\x01", out, sizeof out);
    assert_string_equal(out, "\"a \\\"q\\\" \\\\ b\\nc\\rd\\te?\"");
    char tiny[6];
    logfmt_quote("abcdefgh", tiny, sizeof tiny);
    assert_true(strlen(tiny) < sizeof tiny);
    assert_int_equal(tiny[0], '"');
    assert_int_equal(tiny[strlen(tiny) - 1], '"');
}

static char *render(metrics *m)
{
    sa_buf b;
    sa_buf_init(&b);
    sa_err err;
    assert_int_equal(metrics_render(m, &b, &err), 0);
    assert_int_equal(sa_buf_put_u8(&b, '\0'), 0);
    return (char *)b.data;
}

static void test_metrics_render(void **state)
{
    (void)state;
    metrics *m;
    sa_err err;
    assert_int_equal(metrics_new(&m, &err), 0);
    char *t = render(m);
    assert_string_equal(t, ""); /* nothing updated, nothing shown */
    free(t);

    const char *pa[] = {"peer", "a", NULL};
    const char *pq[] = {"peer", "we\"ird\\\n", NULL};
    metrics_add(m, "softadastra_peer_pulls_total", pa, 1);
    metrics_add(m, "softadastra_peer_pulls_total", pa, 2);
    metrics_add(m, "softadastra_peer_pulls_total", pq, 1);
    metrics_set(m, "softadastra_replication_lag_bytes", NULL, 5);
    metrics_set(m, "softadastra_replication_lag_bytes", NULL, 7);
    metrics_add(m, "softadastra_no_such_metric_total", NULL, 1); /* ignored */
    metrics_set(m, "softadastra_peer_pulls_total", pa, 100);    /* wrong type: ignored */
    metrics_observe(m, "softadastra_apply_seconds", NULL, 0.003);
    metrics_observe(m, "softadastra_apply_seconds", NULL, 0.2);
    metrics_observe(m, "softadastra_apply_seconds", NULL, 1000);
    t = render(m);
    assert_non_null(strstr(t, "# TYPE softadastra_peer_pulls_total counter\n"));
    assert_non_null(strstr(t, "softadastra_peer_pulls_total{peer=\"a\"} 3\n"));
    assert_non_null(strstr(t, "softadastra_peer_pulls_total{peer=\"we\\\"ird\\\\\\n\"} 1\n"));
    assert_non_null(strstr(t, "# TYPE softadastra_replication_lag_bytes gauge\n"));
    assert_non_null(strstr(t, "softadastra_replication_lag_bytes 7\n"));
    assert_null(strstr(t, "no_such"));
    assert_non_null(strstr(t, "# TYPE softadastra_apply_seconds histogram\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_bucket{le=\"0.001\"} 0\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_bucket{le=\"0.25\"} 2\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_bucket{le=\"300\"} 2\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_count 3\n"));
    assert_non_null(strstr(t, "softadastra_apply_seconds_sum 1000.203"));
    free(t);
    assert_true(metrics_get(m, "softadastra_replication_lag_bytes", NULL, -1) == 7);
    assert_true(metrics_get(m, "softadastra_replication_lag_seconds", NULL, -1) == -1);

    /* bounded: new label sets beyond the limit are dropped, and counted */
    char name[32];
    for (int i = 0; i < METRICS_MAX_SERIES + 50; i++) {
        snprintf(name, sizeof name, "p%d", i);
        const char *l[] = {"peer", name, NULL};
        metrics_add(m, "softadastra_peer_pushes_total", l, 1);
    }
    const char *first[] = {"peer", "p0", NULL};
    metrics_add(m, "softadastra_peer_pushes_total", first, 1); /* an existing one still counts */
    t = render(m);
    assert_non_null(strstr(t, "softadastra_peer_pushes_total{peer=\"p0\"} 2\n"));
    assert_non_null(strstr(t, "softadastra_metrics_dropped_total 50\n"));
    snprintf(name, sizeof name, "{peer=\"p%d\"}", METRICS_MAX_SERIES + 10);
    assert_null(strstr(t, name));
    free(t);
    metrics_free(m);
}

static void test_metrics_health(void **state)
{
    (void)state;
    metrics *m;
    sa_err err;
    assert_int_equal(metrics_new(&m, &err), 0);
    char reason[256];
    uint64_t since = 0;
    assert_int_equal(metrics_health_get(m, METRICS_APPLIER, reason, sizeof reason, &since), -1);
    metrics_health_set(m, METRICS_APPLIER, 0, "connection refused");
    assert_int_equal(metrics_health_get(m, METRICS_APPLIER, reason, sizeof reason, &since), 0);
    assert_string_equal(reason, "connection refused");
    assert_true(since > 0);
    metrics_health_set(m, METRICS_APPLIER, 1, "ignored when ok");
    assert_int_equal(metrics_health_get(m, METRICS_APPLIER, reason, sizeof reason, NULL), 1);
    assert_string_equal(reason, "");
    assert_string_equal(metrics_part_name(METRICS_REPLICATION), "replication");
    assert_string_equal(metrics_part_name(METRICS_STORAGE), "storage");
    metrics_free(m);
    metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt_scrub),
        cmocka_unit_test(test_logfmt_quote),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_metrics_health),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
