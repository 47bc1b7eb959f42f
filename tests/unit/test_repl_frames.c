/*
 * test_repl_frames.c — the sans-I/O half of repl: CopyData framing of the
 * replication protocol ('w' XLogData, 'k' keepalive, 'r' status update) and
 * the LSN text helpers, from byte fixtures, with no server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "repl.h"
#include "sa/sa_alloc.h"

/* 'w': dataStart 0/16B3748, walEnd 0/16B3800, sendTime 0x0002A3B4C5D6E7F8,
 * payload "B..." (4 bytes). */
static const uint8_t fx_w[] = {
    'w',  0x00, 0x00, 0x00, 0x00, 0x01, 0x6B, 0x37, 0x48, /* dataStart */
    0x00, 0x00, 0x00, 0x00, 0x01, 0x6B, 0x38, 0x00,       /* walEnd */
    0x00, 0x02, 0xA3, 0xB4, 0xC5, 0xD6, 0xE7, 0xF8,       /* sendTime */
    'B',  0x01, 0x02, 0x03,                               /* payload */
};

/* 'k': walEnd 1/2, sendTime -1 (all ones, signed), replyRequested 1. */
static const uint8_t fx_k[] = {
    'k',  0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, /* walEnd */
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,       /* sendTime */
    0x01,                                                 /* replyRequested */
};

static void test_repl_parse_xlogdata(void **state)
{
    (void)state;
    repl_frame f;
    sa_err err = {0};
    assert_int_equal(repl_parse_copydata(fx_w, sizeof fx_w, &f, &err), 0);
    assert_int_equal(f.type, REPL_FRAME_XLOGDATA);
    assert_true(f.data_start == 0x16B3748u);
    assert_true(f.wal_end == 0x16B3800u);
    assert_true(f.send_time == 0x0002A3B4C5D6E7F8LL);
    assert_false(f.reply_requested);
    assert_ptr_equal(f.payload, fx_w + 25);
    assert_int_equal(f.payload_len, 4);
    assert_int_equal(f.payload[0], 'B');
}

static void test_repl_parse_keepalive(void **state)
{
    (void)state;
    repl_frame f;
    sa_err err = {0};
    assert_int_equal(repl_parse_copydata(fx_k, sizeof fx_k, &f, &err), 0);
    assert_int_equal(f.type, REPL_FRAME_KEEPALIVE);
    assert_true(f.wal_end == 0x100000002ULL);
    assert_true(f.send_time == -1);
    assert_true(f.reply_requested);
    assert_null(f.payload);
    assert_int_equal(f.payload_len, 0);

    uint8_t k0[sizeof fx_k];
    memcpy(k0, fx_k, sizeof k0);
    k0[17] = 0;
    assert_int_equal(repl_parse_copydata(k0, sizeof k0, &f, &err), 0);
    assert_false(f.reply_requested);
    k0[17] = 2; /* only 0 and 1 exist */
    assert_int_equal(repl_parse_copydata(k0, sizeof k0, &f, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "replyRequested"));
}

/* Every strict prefix of a header is refused and leaves *out untouched. */
static void test_repl_parse_truncated(void **state)
{
    (void)state;
    sa_err err = {0};
    repl_frame f, canary;
    memset(&canary, 0x5A, sizeof canary);
    for (size_t n = 0; n <= 25; n++) {
        memcpy(&f, &canary, sizeof f);
        int rc = repl_parse_copydata(fx_w, n, &f, &err);
        assert_int_equal(rc, SA_EPROTO);
        assert_memory_equal(&f, &canary, sizeof f);
        if (n > 0 && n < 25) {
            char want[32];
            snprintf(want, sizeof want, "of %zu bytes", n);
            assert_non_null(strstr(err.msg, want));
            assert_non_null(strstr(err.msg, "truncated"));
        }
    }
    assert_non_null(strstr(err.msg, "no payload")); /* n == 25 */
    for (size_t n = 0; n < sizeof fx_k; n++) {
        memcpy(&f, &canary, sizeof f);
        assert_int_equal(repl_parse_copydata(fx_k, n, &f, &err), SA_EPROTO);
        assert_memory_equal(&f, &canary, sizeof f);
    }
    assert_non_null(strstr(err.msg, "'k'"));
    assert_non_null(strstr(err.msg, "17 bytes"));
    /* The payload may be any length from 1: every longer prefix of 'w' parses. */
    for (size_t n = 26; n <= sizeof fx_w; n++) {
        assert_int_equal(repl_parse_copydata(fx_w, n, &f, &err), 0);
        assert_int_equal(f.payload_len, n - 25);
    }
}

static void test_repl_parse_trailing(void **state)
{
    (void)state;
    uint8_t k[sizeof fx_k + 3];
    memcpy(k, fx_k, sizeof fx_k);
    memset(k + sizeof fx_k, 0, 3);
    repl_frame f;
    sa_err err = {0};
    assert_int_equal(repl_parse_copydata(k, sizeof k, &f, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "3 trailing bytes"));
    assert_int_equal(repl_parse_copydata(k, sizeof fx_k + 1, &f, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "1 trailing bytes"));
}

static void test_repl_parse_unknown_type(void **state)
{
    (void)state;
    repl_frame f;
    sa_err err = {0};
    uint8_t b[sizeof fx_w];
    memcpy(b, fx_w, sizeof b);
    b[0] = 'r'; /* ours, never the server's */
    assert_int_equal(repl_parse_copydata(b, sizeof b, &f, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "0x72"));
    assert_non_null(strstr(err.msg, "('r')"));
    b[0] = 0x00;
    assert_int_equal(repl_parse_copydata(b, 1, &f, &err), SA_EPROTO);
    assert_non_null(strstr(err.msg, "0x00"));
    assert_int_equal(repl_parse_copydata(NULL, 0, &f, NULL), SA_EPROTO); /* err may be NULL */
}

static void test_repl_status_bytes(void **state)
{
    (void)state;
    uint8_t got[REPL_STATUS_LEN];
    memset(got, 0xEE, sizeof got);
    size_t n = repl_build_status(got, 0x0102030405060708ULL, 0x1112131415161718ULL,
                                 0x2122232425262728ULL, 0x3132333435363738LL, true);
    static const uint8_t want[REPL_STATUS_LEN] = {
        'r',  0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* write */
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,       /* flush */
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,       /* apply */
        0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38,       /* clock */
        0x01,                                                 /* reply */
    };
    assert_int_equal(n, REPL_STATUS_LEN);
    assert_memory_equal(got, want, REPL_STATUS_LEN);

    /* A realistic one: LSN 0/16B3748 everywhere, clock 0, no reply. */
    repl_build_status(got, 0x16B3748, 0x16B3748, 0, 0, false);
    static const uint8_t want2[REPL_STATUS_LEN] = {
        'r', 0, 0, 0, 0, 0x01, 0x6B, 0x37, 0x48, 0, 0, 0, 0, 0x01, 0x6B, 0x37, 0x48,
        0,   0, 0, 0, 0, 0,    0,    0,    0,    0, 0, 0, 0, 0,    0,    0,    0,
    };
    assert_memory_equal(got, want2, REPL_STATUS_LEN);
}

static void test_repl_clock_epoch(void **state)
{
    (void)state;
    /* 2000-01-01 is 946684800 s after 1970: "now" must be well past 20 years
     * of microseconds and not in the far future. */
    int64_t now = repl_now_pg_us();
    assert_true(now > 20LL * 365 * 86400 * 1000000);
    assert_true(now < 200LL * 365 * 86400 * 1000000);
    int64_t a = repl_clock_ms(), b = repl_clock_ms();
    assert_true(b >= a);
}

static void test_repl_lsn_round_trip(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        const char *s;
    } cases[] = {
        {0, "0/0"},
        {0x16B3748, "0/16B3748"},
        {0x100000000ULL, "1/0"},
        {0xFFFFFFFFFFFFFFFFULL, "FFFFFFFF/FFFFFFFF"},
        {0xABCDEF0012345678ULL, "ABCDEF00/12345678"},
    };
    char buf[REPL_LSN_STRLEN];
    sa_err err = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(repl_lsn_format(cases[i].v, buf), cases[i].s);
        uint64_t back = 1;
        assert_int_equal(repl_lsn_parse(cases[i].s, &back, &err), 0);
        assert_true(back == cases[i].v);
    }
    uint64_t v = 0;
    assert_int_equal(repl_lsn_parse("abcdef00/0000001a", &v, &err), 0); /* lower case, zeros */
    assert_true(v == 0xABCDEF000000001AULL);
}

static void test_repl_lsn_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "1/",
        "/1",
        "G/0",
        "0/G",
        "1/2/3",
        " 0/1",
        "0/1 ",
        "0 /1",
        "-1/0",
        "0x1/0",
        "100000000/0",
        "0/100000000",
        "1",
        "+1/0",
        "0/1\n",
        "00000000000/1",
    };
    sa_err err = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        int rc = repl_lsn_parse(bad[i], &v, &err);
        if (rc != SA_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(v == 42); /* untouched */
        assert_non_null(strstr(err.msg, "invalid LSN"));
    }
    assert_int_equal(repl_lsn_parse(NULL, &(uint64_t){0}, NULL), SA_EINVAL);
}

static void test_repl_slot_name_rules(void **state)
{
    (void)state;
    sa_err err = {0};
    char longest[64], toolong[65];
    memset(longest, 'a', 63);
    longest[63] = '\0';
    memset(toolong, 'a', 64);
    toolong[64] = '\0';
    assert_int_equal(repl_slot_name_check("sa_bridge_1", &err), 0);
    assert_int_equal(repl_slot_name_check(longest, &err), 0);
    assert_int_equal(repl_slot_name_check(toolong, &err), SA_EINVAL);
    assert_non_null(strstr(err.msg, "at most 63"));
    assert_int_equal(repl_slot_name_check("", &err), SA_EINVAL);
    assert_int_equal(repl_slot_name_check(NULL, &err), SA_EINVAL);
    static const char *const bad[] = {"Slot", "a-b", "a b", "x\"y", "x'y", "é", "a;b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(repl_slot_name_check(bad[i], &err), SA_EINVAL);
        assert_non_null(strstr(err.msg, "lower case letters, digits and '_'"));
    }
    assert_int_equal(repl_publication_name_check("Pub \"x\", 'y' \\z", &err), 0);
    assert_int_equal(repl_publication_name_check("", &err), SA_EINVAL);
    assert_int_equal(repl_publication_name_check(toolong, &err), SA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repl_parse_xlogdata),     cmocka_unit_test(test_repl_parse_keepalive),
        cmocka_unit_test(test_repl_parse_truncated),    cmocka_unit_test(test_repl_parse_trailing),
        cmocka_unit_test(test_repl_parse_unknown_type), cmocka_unit_test(test_repl_status_bytes),
        cmocka_unit_test(test_repl_clock_epoch),        cmocka_unit_test(test_repl_lsn_round_trip),
        cmocka_unit_test(test_repl_lsn_rejects),        cmocka_unit_test(test_repl_slot_name_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
