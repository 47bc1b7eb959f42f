/* test_hlc.c — unit tests for the hybrid logical clock (sa_hlc.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "sa/sa_alloc.h"
#include "sa/sa_err.h"
#include "sa/sa_hlc.h"

/* An injectable wall clock the test moves by hand.  Only written while no
 * other thread uses the clock. */
typedef struct fake_wall {
    uint64_t ms;
} fake_wall;

static uint64_t fake_now(void *ctx) { return ((fake_wall *)ctx)->ms; }

static sa_hlc_clock *new_fake_clock(fake_wall *w, uint64_t max_drift_ms)
{
    sa_hlc_options o = {.now_ms = fake_now, .ctx = w, .max_drift_ms = max_drift_ms};
    sa_hlc_clock *c = NULL;
    sa_err err;
    assert_int_equal(sa_hlc_clock_new(&o, &c, &err), 0);
    assert_non_null(c);
    return c;
}

static uint64_t now_ok(sa_hlc_clock *c)
{
    uint64_t v = 0;
    sa_err err;
    assert_int_equal(sa_hlc_now(c, &v, &err), 0);
    return v;
}

static const uint64_t T = UINT64_C(1732575000000); /* a 2024 wall-clock ms */

/* ------------------------------------------------------------------------ */

static void test_hlc_pack_unpack_roundtrip(void **state)
{
    (void)state;
    const uint64_t ms_cases[] = {0, 1, T, SA_HLC_MS_MAX - 1, SA_HLC_MS_MAX};
    const uint16_t ctr_cases[] = {0, 1, 3, 0x7FFF, 0xFFFF};
    for (size_t i = 0; i < sizeof ms_cases / sizeof ms_cases[0]; i++) {
        for (size_t j = 0; j < sizeof ctr_cases / sizeof ctr_cases[0]; j++) {
            uint64_t v = sa_hlc_pack(ms_cases[i], ctr_cases[j]);
            uint64_t ms = 0;
            uint16_t ctr = 0;
            sa_hlc_unpack(v, &ms, &ctr);
            assert_int_equal(ms, ms_cases[i]);
            assert_int_equal(ctr, ctr_cases[j]);
            uint64_t w = 0;
            assert_int_equal(sa_hlc_pack_checked(ms_cases[i], ctr_cases[j], &w, NULL), 0);
            assert_int_equal(w, v);
        }
    }
    /* Layout: ms in the high 48 bits, counter in the low 16. */
    assert_int_equal(sa_hlc_pack(1, 0), UINT64_C(0x10000));
    assert_int_equal(sa_hlc_pack(SA_HLC_MS_MAX, 0xFFFF), UINT64_MAX);
    /* Order of packed values is (ms, counter) order. */
    assert_true(sa_hlc_pack(T, 0xFFFF) < sa_hlc_pack(T + 1, 0));
    /* NULL outputs are allowed. */
    sa_hlc_unpack(UINT64_MAX, NULL, NULL);
}

static void test_hlc_pack_bounds(void **state)
{
    (void)state;
    sa_err err;
    uint64_t out = 42;
    assert_int_equal(sa_hlc_pack_checked(SA_HLC_MS_MAX + 1, 0, &out, &err), SA_ERANGE);
    assert_int_equal(err.code, SA_ERANGE);
    assert_non_null(strstr(err.msg, "281474976710656"));
    assert_int_equal(out, 42);
    assert_int_equal(sa_hlc_pack_checked(T, 0x10000, &out, &err), SA_ERANGE);
    assert_non_null(strstr(err.msg, "65536"));
    assert_int_equal(out, 42);
    /* The unchecked pack masks instead. */
    assert_int_equal(sa_hlc_pack(SA_HLC_MS_MAX + 1, 0), 0);
}

static void test_hlc_format_parse(void **state)
{
    (void)state;
    char buf[SA_HLC_FORMAT_MAX];
    assert_int_equal(sa_hlc_format(sa_hlc_pack(T, 3), buf, sizeof buf), 0);
    assert_string_equal(buf, "1732575000000.3");
    assert_int_equal(sa_hlc_format(UINT64_MAX, buf, sizeof buf), 0);
    assert_string_equal(buf, "281474976710655.65535");

    /* Too small: error, buffer untouched. */
    char small[8] = "keep";
    assert_int_equal(sa_hlc_format(sa_hlc_pack(T, 3), small, sizeof small), SA_ERANGE);
    assert_string_equal(small, "keep");

    uint64_t v = 0;
    sa_err err;
    assert_int_equal(sa_hlc_parse("1732575000000.3", &v, &err), 0);
    assert_int_equal(v, sa_hlc_pack(T, 3));
    assert_int_equal(sa_hlc_parse("281474976710655.65535", &v, &err), 0);
    assert_int_equal(v, UINT64_MAX);

    const char *bad[] = {"", ".", "1.", ".1", "1", "1.2.3", "1.2x", "-1.2", " 1.2", "1.+2", "a.b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        assert_int_equal(sa_hlc_parse(bad[i], &v, &err), SA_EINVAL);
        assert_int_equal(v, 7);
    }
    assert_int_equal(sa_hlc_parse("281474976710656.0", &v, &err), SA_ERANGE);
    assert_int_equal(sa_hlc_parse("1.65536", &v, &err), SA_ERANGE);
    assert_int_equal(sa_hlc_parse("99999999999999999999999.0", &v, &err), SA_ERANGE);
    assert_int_equal(v, 7);
}

static void test_hlc_monotonic_million(void **state)
{
    (void)state;
    sa_hlc_clock *c = NULL;
    assert_int_equal(sa_hlc_clock_new(NULL, &c, NULL), 0); /* real CLOCK_REALTIME */
    uint64_t prev = sa_hlc_last(c);
    assert_int_equal(prev, 0);
    for (int i = 0; i < 1000000; i++) {
        uint64_t v = now_ok(c);
        if (v <= prev)
            fail_msg("call %d: %llu after %llu", i, (unsigned long long)v,
                     (unsigned long long)prev);
        prev = v;
    }
    assert_int_equal(sa_hlc_last(c), prev);
    /* The real clock's ms part is near the wall clock (after 2020-01-01). */
    uint64_t ms;
    sa_hlc_unpack(prev, &ms, NULL);
    assert_true(ms > UINT64_C(1577836800000));
    sa_hlc_clock_free(c);
}

static void test_hlc_wall_steps_back(void **state)
{
    (void)state;
    fake_wall w = {T};
    sa_hlc_clock *c = new_fake_clock(&w, 0);
    uint64_t a = now_ok(c);
    assert_int_equal(a, sa_hlc_pack(T, 0));
    w.ms = T - 3600 * 1000; /* an NTP step back by an hour */
    uint64_t prev = a;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = now_ok(c);
        assert_true(v > prev);
        prev = v;
        if (i % 100 == 0)
            w.ms += 1; /* the wall clock creeps on, still an hour behind */
    }
    /* The logical time stayed at T; only the counter moved. */
    uint64_t ms;
    uint16_t ctr;
    sa_hlc_unpack(prev, &ms, &ctr);
    assert_int_equal(ms, T);
    assert_int_equal(ctr, 1000);
    /* Once the wall clock passes the logical time again, it takes over. */
    w.ms = T + 5;
    assert_int_equal(now_ok(c), sa_hlc_pack(T + 5, 0));
    sa_hlc_clock_free(c);
}

static void test_hlc_counter_overflow(void **state)
{
    (void)state;
    fake_wall w = {T};
    sa_hlc_clock *c = new_fake_clock(&w, 0);
    uint64_t prev = now_ok(c);
    assert_int_equal(prev, sa_hlc_pack(T, 0));
    for (uint32_t i = 1; i <= 0xFFFF; i++) {
        uint64_t v = now_ok(c);
        assert_int_equal(v, sa_hlc_pack(T, (uint16_t)i));
        prev = v;
    }
    /* The counter is full: the logical ms advances by one, counter resets. */
    uint64_t v = now_ok(c);
    assert_true(v > prev);
    assert_int_equal(v, sa_hlc_pack(T + 1, 0));
    /* The wall clock catching up to T+1 does not repeat that value. */
    w.ms = T + 1;
    assert_int_equal(now_ok(c), sa_hlc_pack(T + 1, 1));
    sa_hlc_clock_free(c);
}

static void test_hlc_update_within_drift(void **state)
{
    (void)state;
    fake_wall w = {T};
    sa_hlc_clock *c = new_fake_clock(&w, 1000);
    uint64_t local = now_ok(c);
    sa_err err;
    uint64_t out = 0;

    /* Remote ahead, within drift: we jump past it. */
    uint64_t remote = sa_hlc_pack(T + 500, 7);
    assert_int_equal(sa_hlc_update(c, remote, &out, &err), 0);
    assert_int_equal(out, sa_hlc_pack(T + 500, 8));
    assert_true(out > local && out > remote);
    assert_int_equal(sa_hlc_last(c), out);
    uint64_t next = now_ok(c);
    assert_true(next > remote);
    assert_int_equal(next, sa_hlc_pack(T + 500, 9));

    /* Exactly at the drift bound is still accepted. */
    remote = sa_hlc_pack(T + 1000, 0xFFFF);
    assert_int_equal(sa_hlc_update(c, remote, &out, &err), 0);
    assert_int_equal(out, sa_hlc_pack(T + 1001, 0)); /* the carry again */

    /* Remote behind: the local value still advances. */
    uint64_t before = sa_hlc_last(c);
    assert_int_equal(sa_hlc_update(c, sa_hlc_pack(T - 10000, 0), &out, &err), 0);
    assert_int_equal(out, before + 1);

    /* Wall clock ahead of both: the wall wins, counter 0. */
    w.ms = T + 5000;
    assert_int_equal(sa_hlc_update(c, sa_hlc_pack(T + 4000, 3), &out, &err), 0);
    assert_int_equal(out, sa_hlc_pack(T + 5000, 0));
    sa_hlc_clock_free(c);
}

static void test_hlc_update_beyond_drift_refused(void **state)
{
    (void)state;
    fake_wall w = {T};
    sa_hlc_clock *c = new_fake_clock(&w, 1000);
    uint64_t local = now_ok(c);
    sa_err err;
    uint64_t out = 99;
    uint64_t remote = sa_hlc_pack(T + 1001, 0);
    assert_int_equal(sa_hlc_update(c, remote, &out, &err), SA_ECLOCK);
    assert_int_equal(err.code, SA_ECLOCK);
    /* The message names the remote value and our wall clock. */
    assert_non_null(strstr(err.msg, "1732575001001.0"));
    assert_non_null(strstr(err.msg, "1732575000000"));
    assert_non_null(strstr(err.msg, "1000"));
    /* Nothing moved. */
    assert_int_equal(out, 99);
    assert_int_equal(sa_hlc_last(c), local);
    assert_int_equal(now_ok(c), local + 1);

    /* An unlimited clock accepts the same remote. */
    sa_hlc_clock *u = new_fake_clock(&w, 0);
    assert_int_equal(sa_hlc_update(u, remote, &out, &err), 0);
    assert_int_equal(out, remote + 1);
    sa_hlc_clock_free(u);
    sa_hlc_clock_free(c);
}

static void test_hlc_restore(void **state)
{
    (void)state;
    fake_wall w = {T};
    sa_hlc_clock *c = new_fake_clock(&w, 0);
    /* A previous run persisted a value ahead of today's wall clock (its
     * clock was fast, or ours was stepped back across the restart). */
    uint64_t persisted = sa_hlc_pack(T + 10000, 5);
    sa_hlc_clock_restore(c, persisted);
    assert_int_equal(sa_hlc_last(c), persisted);
    assert_int_equal(now_ok(c), sa_hlc_pack(T + 10000, 6));
    /* Restoring an older value never lowers the clock. */
    sa_hlc_clock_restore(c, sa_hlc_pack(T, 0));
    assert_int_equal(sa_hlc_last(c), sa_hlc_pack(T + 10000, 6));
    assert_int_equal(now_ok(c), sa_hlc_pack(T + 10000, 7));
    sa_hlc_clock_free(c);
}

static void test_hlc_exhausted(void **state)
{
    (void)state;
    fake_wall w = {T};
    sa_hlc_clock *c = new_fake_clock(&w, 0);
    sa_hlc_clock_restore(c, UINT64_MAX);
    uint64_t out = 5;
    sa_err err;
    assert_int_equal(sa_hlc_now(c, &out, &err), SA_ERANGE);
    assert_int_equal(sa_hlc_update(c, 0, &out, &err), SA_ERANGE);
    assert_int_equal(out, 5);
    assert_int_equal(sa_hlc_last(c), UINT64_MAX);
    sa_hlc_clock_free(c);

    /* A wall clock beyond 48 bits is refused, not silently masked. */
    w.ms = SA_HLC_MS_MAX + 1;
    c = new_fake_clock(&w, 0);
    assert_int_equal(sa_hlc_now(c, &out, &err), SA_ECLOCK);
    assert_int_equal(sa_hlc_last(c), 0);
    sa_hlc_clock_free(c);
}

static void test_hlc_new_out_of_memory(void **state)
{
    (void)state;
    sa_hlc_clock *c = (sa_hlc_clock *)(uintptr_t)1; /* must stay untouched */
    sa_err err;
    sa_alloc_fail_after(0);
    assert_int_equal(sa_hlc_clock_new(NULL, &c, &err), SA_ENOMEM);
    sa_alloc_fail_reset();
    assert_ptr_equal(c, (sa_hlc_clock *)(uintptr_t)1);
    sa_hlc_clock_free(NULL); /* no-op */
}

/* --- concurrency --------------------------------------------------------- */

#define N_THREADS 4
#define N_PER_THREAD 50000

typedef struct worker {
    sa_hlc_clock *clock;
    uint64_t *vals;
    int ok; /* 1 if every call succeeded and values rose strictly */
} worker;

static void *worker_main(void *arg)
{
    worker *wk = arg;
    wk->ok = 1;
    for (int i = 0; i < N_PER_THREAD; i++) {
        /* Mix sends and receives: every 7th call receives a peer's value. */
        int rc = (i % 7 == 6) ? sa_hlc_update(wk->clock, wk->vals[i - 1] - 1, &wk->vals[i], NULL)
                              : sa_hlc_now(wk->clock, &wk->vals[i], NULL);
        if (rc != 0 || (i > 0 && wk->vals[i] <= wk->vals[i - 1]))
            wk->ok = 0;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void run_threads(sa_hlc_clock *c)
{
    uint64_t *all = calloc((size_t)N_THREADS * N_PER_THREAD, sizeof *all);
    assert_non_null(all);
    worker wk[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        wk[t].clock = c;
        wk[t].vals = all + (size_t)t * N_PER_THREAD;
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &wk[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_true(wk[t].ok);
    }
    size_t n = (size_t)N_THREADS * N_PER_THREAD;
    qsort(all, n, sizeof *all, cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (all[i] == all[i - 1])
            fail_msg("duplicate hlc value %llu", (unsigned long long)all[i]);
    /* The clock ends at the largest value anyone got. */
    assert_int_equal(sa_hlc_last(c), all[n - 1]);
    free(all);
}

static void test_hlc_concurrent_unique(void **state)
{
    (void)state;
    /* Real clock. */
    sa_hlc_clock *c = NULL;
    assert_int_equal(sa_hlc_clock_new(NULL, &c, NULL), 0);
    run_threads(c);
    sa_hlc_clock_free(c);
    /* Frozen clock: 200000 values in one wall ms forces counter carries
     * under contention. */
    fake_wall w = {T};
    c = new_fake_clock(&w, 0);
    run_threads(c);
    assert_true(sa_hlc_last(c) >= sa_hlc_pack(T + 3, 0));
    sa_hlc_clock_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hlc_pack_unpack_roundtrip),
        cmocka_unit_test(test_hlc_pack_bounds),
        cmocka_unit_test(test_hlc_format_parse),
        cmocka_unit_test(test_hlc_monotonic_million),
        cmocka_unit_test(test_hlc_wall_steps_back),
        cmocka_unit_test(test_hlc_counter_overflow),
        cmocka_unit_test(test_hlc_update_within_drift),
        cmocka_unit_test(test_hlc_update_beyond_drift_refused),
        cmocka_unit_test(test_hlc_restore),
        cmocka_unit_test(test_hlc_exhausted),
        cmocka_unit_test(test_hlc_new_out_of_memory),
        cmocka_unit_test(test_hlc_concurrent_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
