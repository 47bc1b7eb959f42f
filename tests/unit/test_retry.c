/* test_retry.c — unit tests for backoff with full jitter (sa_retry.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sa/sa_err.h"
#include "sa/sa_retry.h"

/* The window computed independently of the library: double with saturation. */
static uint64_t expected_window(uint64_t base, uint64_t cap, uint32_t attempt)
{
    uint64_t w = base;
    for (uint32_t i = 0; i < attempt && w < cap; i++)
        w = w > UINT64_MAX / 2 ? UINT64_MAX : w * 2;
    return w < cap ? w : cap;
}

static sa_retry_policy policy(uint64_t base, uint64_t cap, uint64_t max_ra, uint32_t max_attempts)
{
    sa_retry_policy p = {
        .base_ms = base, .cap_ms = cap, .max_retry_after_ms = max_ra, .max_attempts = max_attempts};
    return p;
}

static uint64_t next_ok(sa_retry *r, uint64_t retry_after)
{
    uint64_t d = UINT64_MAX;
    sa_err err;
    int rc = sa_retry_next(r, retry_after, &d, &err);
    if (rc != 0)
        fail_msg("sa_retry_next: %s: %s", sa_err_name(rc), err.msg);
    return d;
}

/* ------------------------------------------------------------------------ */

static void test_retry_default_policy(void **state)
{
    (void)state;
    sa_retry_policy p = sa_retry_policy_default();
    assert_true(p.base_ms > 0);
    assert_true(p.cap_ms >= p.base_ms);
    assert_true(p.max_retry_after_ms > 0);
    assert_int_equal(p.max_attempts, 0);
    sa_retry r;
    assert_int_equal(sa_retry_init(&r, &p, 0, NULL), 0); /* OS seed */
    assert_true(next_ok(&r, 0) <= p.base_ms);
}

static void test_retry_init_rejects_bad_policy(void **state)
{
    (void)state;
    sa_retry r;
    memset(&r, 0xAB, sizeof r);
    sa_err err;
    sa_retry_policy p = policy(0, 100, 0, 0);
    assert_int_equal(sa_retry_init(&r, &p, 1, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "base_ms"));
    p = policy(100, 99, 0, 0);
    assert_int_equal(sa_retry_init(&r, &p, 1, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "cap_ms 99"));
    assert_non_null(strstr(err.msg, "base_ms 100"));
    assert_int_equal(sa_retry_init(&r, NULL, 1, &err), SA_EINVAL);
    /* r untouched on error. */
    unsigned char expect[sizeof r];
    memset(expect, 0xAB, sizeof expect);
    assert_memory_equal(&r, expect, sizeof r);
}

static void test_retry_window_overflow_safe(void **state)
{
    (void)state;
    const uint64_t bases[] = {1, 3, 100, UINT64_C(1) << 40, UINT64_MAX / 3, UINT64_MAX};
    const uint32_t attempts[] = {0, 1, 2, 10, 30, 62, 63, 64, 65, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        uint64_t caps[] = {bases[i], bases[i] * 2 > bases[i] ? bases[i] * 2 : UINT64_MAX,
                           UINT64_MAX};
        for (size_t c = 0; c < 3; c++) {
            sa_retry_policy p = policy(bases[i], caps[c], 0, 0);
            for (size_t a = 0; a < sizeof attempts / sizeof attempts[0]; a++)
                assert_int_equal(sa_retry_window(&p, attempts[a]),
                                 expected_window(bases[i], caps[c], attempts[a]));
        }
    }
}

static void test_retry_bounds_many_seeds(void **state)
{
    (void)state;
    sa_retry_policy p = policy(100, 30000, 0, 0);
    for (uint64_t seed = 1; seed <= 200; seed++) {
        sa_retry r;
        assert_int_equal(sa_retry_init(&r, &p, seed, NULL), 0);
        for (uint32_t n = 0; n < 40; n++) {
            assert_int_equal(sa_retry_attempts(&r), n);
            uint64_t d = next_ok(&r, 0);
            uint64_t w = expected_window(p.base_ms, p.cap_ms, n);
            if (d > w)
                fail_msg("seed %llu attempt %u: delay %llu above window %llu",
                         (unsigned long long)seed, n, (unsigned long long)d, (unsigned long long)w);
        }
    }
}

static void test_retry_cap_at_attempt_1000(void **state)
{
    (void)state;
    sa_retry_policy p = policy(50, 10000, 0, 0);
    sa_retry r;
    assert_int_equal(sa_retry_init(&r, &p, 7, NULL), 0);
    uint64_t max_seen = 0;
    for (int n = 0; n <= 1000; n++) {
        uint64_t d = next_ok(&r, 0);
        assert_true(d <= p.cap_ms);
        if (n > 100 && d > max_seen)
            max_seen = d;
    }
    assert_int_equal(sa_retry_attempts(&r), 1001);
    assert_int_equal(sa_retry_window(&p, 1000), p.cap_ms);
    /* Past the cap the window is the whole cap, not something smaller. */
    assert_true(max_seen > p.cap_ms / 2);

    /* The attempt counter saturates instead of wrapping back to window(0).
     * (White-box: the field is private, set it to skip 4e9 calls.) */
    r.attempts = UINT32_MAX - 1;
    next_ok(&r, 0);
    next_ok(&r, 0);
    assert_int_equal(sa_retry_attempts(&r), UINT32_MAX);
    for (int i = 0; i < 100; i++)
        assert_true(next_ok(&r, 0) <= p.cap_ms);
}

static void test_retry_reset_on_success(void **state)
{
    (void)state;
    sa_retry_policy p = policy(10, 1000000, 0, 0);
    sa_retry r;
    assert_int_equal(sa_retry_init(&r, &p, 99, NULL), 0);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 15; i++)
            next_ok(&r, 0);
        assert_int_equal(sa_retry_attempts(&r), 15);
        sa_retry_success(&r);
        assert_int_equal(sa_retry_attempts(&r), 0);
        /* Back in the first window [0, base]. */
        assert_true(next_ok(&r, 0) <= p.base_ms);
        assert_true(next_ok(&r, 0) <= 2 * p.base_ms);
        sa_retry_success(&r);
    }
}

static void test_retry_after_honoured_and_clamped(void **state)
{
    (void)state;
    sa_retry_policy p = policy(100, 1000, 60000, 0);
    sa_retry r;
    assert_int_equal(sa_retry_init(&r, &p, 3, NULL), 0);
    for (int i = 0; i < 1000; i++) {
        /* Retry-After below the window: at least that, at most the window. */
        uint64_t d = next_ok(&r, 50);
        assert_true(d >= 50);
        assert_true(d <= sa_retry_window(&p, sa_retry_attempts(&r) - 1));
        /* Retry-After above the cap: exactly honoured. */
        assert_int_equal(next_ok(&r, 5000), 5000);
        /* A hostile Retry-After (a day) is clamped to max_retry_after_ms. */
        assert_int_equal(next_ok(&r, 86400000), p.max_retry_after_ms);
        assert_int_equal(next_ok(&r, UINT64_MAX), p.max_retry_after_ms);
        sa_retry_success(&r);
    }
    /* Retry-After counts as an attempt. */
    next_ok(&r, 10);
    assert_int_equal(sa_retry_attempts(&r), 1);
}

static void test_retry_max_attempts_gives_up(void **state)
{
    (void)state;
    sa_retry_policy p = policy(100, 1000, 0, 3);
    sa_retry r;
    assert_int_equal(sa_retry_init(&r, &p, 11, NULL), 0);
    for (int i = 0; i < 3; i++)
        next_ok(&r, 0);
    uint64_t d = 12345;
    sa_err err;
    assert_int_equal(sa_retry_next(&r, 0, &d, &err), SA_ETIMEOUT);
    assert_int_equal(err.code, SA_ETIMEOUT);
    assert_non_null(strstr(err.msg, "3"));
    assert_int_equal(d, 12345);
    /* Stays given up, state unchanged. */
    assert_int_equal(sa_retry_next(&r, 0, &d, NULL), SA_ETIMEOUT);
    assert_int_equal(sa_retry_attempts(&r), 3);
    /* A success restores the budget. */
    sa_retry_success(&r);
    assert_true(next_ok(&r, 0) <= p.base_ms);
}

static void test_retry_deterministic(void **state)
{
    (void)state;
    sa_retry_policy p = policy(1000, UINT64_C(1) << 40, 0, 0);
    sa_retry a, b, c;
    assert_int_equal(sa_retry_init(&a, &p, 42, NULL), 0);
    assert_int_equal(sa_retry_init(&b, &p, 42, NULL), 0);
    assert_int_equal(sa_retry_init(&c, &p, 43, NULL), 0);
    int differ = 0;
    for (int i = 0; i < 30; i++) {
        uint64_t x = next_ok(&a, 0), y = next_ok(&b, 0), z = next_ok(&c, 0);
        assert_int_equal(x, y);
        differ += x != z;
    }
    assert_true(differ >= 25); /* windows are wide: ties are rare */

    /* Two OS-seeded states differ too. */
    sa_retry o1, o2;
    assert_int_equal(sa_retry_init(&o1, &p, 0, NULL), 0);
    assert_int_equal(sa_retry_init(&o2, &p, 0, NULL), 0);
    assert_memory_not_equal(o1.rng, o2.rng, sizeof o1.rng);
}

static void test_retry_jitter_uniform(void **state)
{
    (void)state;
    /* Attempt 3 with base 125 000: window W = 1 000 000 ms. */
    const uint32_t attempt = 3;
    sa_retry_policy p = policy(125000, UINT64_C(1) << 40, 0, 0);
    const uint64_t W = sa_retry_window(&p, attempt);
    assert_int_equal(W, 1000000);
    sa_retry r;
    assert_int_equal(sa_retry_init(&r, &p, 2024, NULL), 0);

    const int samples = 100000;
    long buckets[10] = {0};
    double sum = 0;
    for (int s = 0; s < samples; s++) {
        sa_retry_success(&r);
        for (uint32_t i = 0; i < attempt; i++)
            next_ok(&r, 0);
        uint64_t d = next_ok(&r, 0);
        assert_true(d <= W);
        sum += (double)d;
        buckets[d * 10 / (W + 1)]++;
    }
    double mean = sum / samples;
    double half = (double)W / 2;
    if (mean < half * 0.98 || mean > half * 1.02)
        fail_msg("mean %.1f not within 2%% of %.1f", mean, half);
    for (int b = 0; b < 10; b++) {
        double share = (double)buckets[b] / samples;
        if (share < 0.085 || share > 0.115)
            fail_msg("bucket %d holds %.4f of samples, want 0.100 +- 0.015", b, share);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_default_policy),
        cmocka_unit_test(test_retry_init_rejects_bad_policy),
        cmocka_unit_test(test_retry_window_overflow_safe),
        cmocka_unit_test(test_retry_bounds_many_seeds),
        cmocka_unit_test(test_retry_cap_at_attempt_1000),
        cmocka_unit_test(test_retry_reset_on_success),
        cmocka_unit_test(test_retry_after_honoured_and_clamped),
        cmocka_unit_test(test_retry_max_attempts_gives_up),
        cmocka_unit_test(test_retry_deterministic),
        cmocka_unit_test(test_retry_jitter_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
