/*
 * test_copy_text.c — the COPY text-format row parser (copy.h): every escape,
 * NULL versus a literal backslash-N versus the empty string, column counts,
 * malformed rows, buffer reuse, out of memory, a round trip through an
 * encoder written from the COPY documentation, and random bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "sa/sa_alloc.h"

/* Parse a NUL-terminated fixture; fail the test on error. */
static void parse_ok(cp_row_buf *b, const char *line, uint32_t ncols)
{
    sa_err err = {0};
    int rc = cp_parse_text_row(line, strlen(line), ncols, b, &err);
    if (rc != 0)
        fail_msg("parse \"%s\": %s (%s)", line, err.msg, sa_err_name(rc));
    assert_int_equal(b->nfields, ncols);
}

static void assert_field_text(const cp_row_buf *b, uint32_t i, const void *want, size_t len)
{
    assert_true(i < b->nfields);
    assert_int_equal(b->fields[i].kind, SA_VAL_TEXT);
    assert_int_equal(b->fields[i].len, len);
    assert_memory_equal(b->fields[i].data, want, len);
    assert_int_equal(b->fields[i].data[len], '\0');
}

static void assert_sqlnull(const cp_row_buf *b, uint32_t i)
{
    assert_true(i < b->nfields);
    assert_int_equal(b->fields[i].kind, SA_VAL_NULL);
}

/* Expect an error whose message contains `needle`. */
static void parse_fails(const char *line, size_t len, uint32_t ncols, int code, const char *needle)
{
    cp_row_buf b;
    cp_row_buf_init(&b);
    sa_err err = {0};
    int rc = cp_parse_text_row(line, len, ncols, &b, &err);
    assert_int_equal(rc, code);
    assert_int_equal(b.nfields, 0);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
    cp_row_buf_free(&b);
}

static void test_copy_text_simple_escapes(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    parse_ok(&b, "a\\bb\\fc\\nd\\re\\tf\\vg\\\\h\n", 1);
    assert_field_text(&b, 0, "a\bb\fc\nd\re\tf\vg\\h", 15);
    /* any other backslash-char is that char, including \. and \N inside */
    parse_ok(&b, "\\q\\.\\N\\\"\\ \\Z", 1);
    assert_field_text(&b, 0, "q.N\" Z", 6);
    cp_row_buf_free(&b);
}

static void test_copy_text_octal(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    /* 1-3 digits; an 8 or a 4th digit ends the escape; \777 wraps to 0xff */
    parse_ok(&b, "\\101\\1\\12\\0\\777\\08\\1011", 1);
    assert_field_text(&b, 0,
                      "A\x01\n\0\xff\0"
                      "8A1",
                      9);
    parse_ok(&b, "\\7\t\\77\t\\000", 3);
    assert_field_text(&b, 0, "\x07", 1);
    assert_field_text(&b, 1, "\x3f", 1);
    assert_field_text(&b, 2, "\0", 1); /* len stays authoritative */
    cp_row_buf_free(&b);
}

static void test_copy_text_hex(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    parse_ok(&b, "\\x41\\x4\\xg\\xZZ\\x4142\\xfF\\x", 1);
    /* \x41=A, \x4=0x04, \xg = "xg", \xZZ = "xZZ", \x41 then "42", \xfF, \x at end = x */
    assert_field_text(&b, 0, "A\x04xgxZZA42\xffx", 12);
    parse_ok(&b, "\\x0\t\\x00\t\\xa", 3);
    assert_field_text(&b, 0, "\0", 1);
    assert_field_text(&b, 1, "\0", 1);
    assert_field_text(&b, 2, "\n", 1);
    cp_row_buf_free(&b);
}

static void test_copy_text_null_vs_literal(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    /* \N = NULL; \\N = the two characters \N; "" = empty; \Nx = "Nx" */
    parse_ok(&b, "\\N\t\\\\N\t\t\\Nx\tN\n", 5);
    assert_sqlnull(&b, 0);
    assert_field_text(&b, 1, "\\N", 2);
    assert_field_text(&b, 2, "", 0);
    assert_field_text(&b, 3, "Nx", 2);
    assert_field_text(&b, 4, "N", 1);
    /* all NULL */
    parse_ok(&b, "\\N\t\\N\t\\N\n", 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_sqlnull(&b, i);
    cp_row_buf_free(&b);
}

static void test_copy_text_embedded_separators(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    parse_ok(&b, "a\\tb\tc\\nd\\r\\n\t\\\\t\n", 3);
    assert_field_text(&b, 0, "a\tb", 3);
    assert_field_text(&b, 1, "c\nd\r\n", 5);
    assert_field_text(&b, 2, "\\t", 2);
    /* UTF-8 passes through untouched */
    parse_ok(&b, "h\xc3\xa9llo \xe2\x82\xac\n", 1);
    assert_field_text(&b, 0, "h\xc3\xa9llo \xe2\x82\xac", 10);
    cp_row_buf_free(&b);
}

static void test_copy_text_empty_rows(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    parse_ok(&b, "\n", 1); /* one empty string */
    assert_field_text(&b, 0, "", 0);
    parse_ok(&b, "", 1);
    assert_field_text(&b, 0, "", 0);
    parse_ok(&b, "\t\n", 2);
    assert_field_text(&b, 0, "", 0);
    assert_field_text(&b, 1, "", 0);
    parse_ok(&b, "\n", 0); /* a table without columns */
    parse_ok(&b, "", 0);
    parse_fails("a\n", 2, 0, SA_EPROTO, "expected 0 columns, found 1");
    cp_row_buf_free(&b);
}

static void test_copy_text_column_count(void **state)
{
    (void)state;
    parse_fails("a\tb\n", 4, 3, SA_EPROTO, "expected 3 columns, found 2");
    parse_fails("a\tb\tc\td\te\n", 10, 3, SA_EPROTO, "expected 3 columns, found 5");
    parse_fails("a\tb", 3, 1, SA_EPROTO, "expected 1 column, found 2");
    parse_fails("\t", 1, 1, SA_EPROTO, "expected 1 column, found 2");
    parse_fails("", 0, 2, SA_EPROTO, "expected 2 columns, found 1");
}

static void test_copy_text_malformed(void **state)
{
    (void)state;
    parse_fails("abc\\", 4, 1, SA_EPROTO, "backslash at the end");
    /* the newline is stripped first, so this ends in a backslash too */
    parse_fails("abc\\\n", 5, 1, SA_EPROTO, "backslash at the end");
    parse_fails("a\tb\\", 4, 2, SA_EPROTO, "column 2");
    /* exactly one newline is stripped; COPY escapes the others */
    parse_fails("a\n\n", 3, 1, SA_EPROTO, "unescaped newline");
    parse_fails("a\nb\n", 4, 1, SA_EPROTO, "unescaped newline");
    parse_fails("a\r\n", 3, 1, SA_EPROTO, "unescaped carriage return");
    parse_fails("", 0, SA_OP_MAX_FIELDS + 1, SA_ETOOBIG, "columns");
}

static void test_copy_text_reuse_and_errors(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 100; i += 2)
        big[i * 20 + 1] = '\t'; /* 51 columns */
    parse_ok(&b, big, 51);
    parse_ok(&b, "p\tq", 2);
    assert_field_text(&b, 0, "p", 1);
    assert_field_text(&b, 1, "q", 1);
    sa_err err = {0};
    assert_int_equal(cp_parse_text_row("z", 1, 2, &b, &err), SA_EPROTO);
    assert_int_equal(b.nfields, 0);
    parse_ok(&b, "r\t\\N", 2);
    assert_field_text(&b, 0, "r", 1);
    assert_sqlnull(&b, 1);
    cp_row_buf_free(&b);
    cp_row_buf_free(&b); /* idempotent */
    cp_row_buf_free(NULL);
}

static void test_copy_text_oom(void **state)
{
    (void)state;
    for (long n = 0; n < 2; n++) {
        cp_row_buf b;
        cp_row_buf_init(&b);
        sa_err err = {0};
        sa_alloc_fail_after(n);
        int rc = cp_parse_text_row("a\tb\n", 4, 2, &b, &err);
        sa_alloc_fail_reset();
        assert_int_equal(rc, SA_ENOMEM);
        assert_int_equal(b.nfields, 0);
        cp_row_buf_free(&b);
    }
}

/* ---- round trip through an encoder that writes what COPY TO writes ------ */

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* CopyAttributeOutText: backslash, the delimiter, newline, carriage return
 * and \b \f \v are escaped; other bytes are written as they are. */
static size_t encode_field(char *out, const uint8_t *v, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *esc = NULL;
        switch (v[i]) {
        case '\\':
            esc = "\\\\";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\v':
            esc = "\\v";
            break;
        }
        if (esc != NULL) {
            memcpy(out + o, esc, 2);
            o += 2;
        } else if (v[i] == 0 || (rng() % 8) == 0) {
            /* not produced by COPY, but valid input: octal or hex */
            o += (size_t)sprintf(out + o, (rng() & 1) ? "\\%03o" : "\\x%02x", v[i]);
        } else {
            out[o++] = (char)v[i];
        }
    }
    return o;
}

static void test_copy_text_round_trip(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    rng_state = 424242;
    for (int iter = 0; iter < 5000; iter++) {
        uint32_t ncols = 1 + rng() % 6;
        uint8_t vals[6][16];
        size_t lens[6];
        int isnull[6];
        char line[6 * 16 * 4 + 16];
        size_t o = 0;
        for (uint32_t c = 0; c < ncols; c++) {
            isnull[c] = rng() % 5 == 0;
            lens[c] = rng() % 16;
            for (size_t k = 0; k < lens[c]; k++) {
                static const char alpha[] = "\\\t\n\r\b\f\vNx07ab\0\xff";
                vals[c][k] =
                    (rng() & 1) ? (uint8_t)alpha[rng() % (sizeof alpha - 1)] : (uint8_t)rng();
            }
            if (c > 0)
                line[o++] = '\t';
            if (isnull[c]) {
                memcpy(line + o, "\\N", 2);
                o += 2;
            } else {
                o += encode_field(line + o, vals[c], lens[c]);
            }
        }
        if (rng() & 1)
            line[o++] = '\n';
        sa_err err = {0};
        int rc = cp_parse_text_row(line, o, ncols, &b, &err);
        if (rc != 0)
            fail_msg("iteration %d: %s", iter, err.msg);
        for (uint32_t c = 0; c < ncols; c++) {
            if (isnull[c])
                assert_sqlnull(&b, c);
            else
                assert_field_text(&b, c, vals[c], lens[c]);
        }
    }
    cp_row_buf_free(&b);
}

static void test_copy_text_random_bytes(void **state)
{
    (void)state;
    cp_row_buf b;
    cp_row_buf_init(&b);
    rng_state = 987654321;
    int ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rng() % 48;
        /* exactly len bytes on the heap, so ASan catches any overread */
        char *line = malloc(len ? len : 1);
        assert_non_null(line);
        for (size_t k = 0; k < len; k++) {
            static const char alpha[] = "\\\t\nNx0179afAFr";
            line[k] = (rng() % 3) ? alpha[rng() % (sizeof alpha - 1)] : (char)rng();
        }
        uint32_t ncols = rng() % 7;
        sa_err err = {0};
        int rc = cp_parse_text_row(line, len, ncols, &b, &err);
        if (rc == 0) {
            ok++;
            assert_int_equal(b.nfields, ncols);
            size_t total = 0;
            for (uint32_t c = 0; c < ncols; c++) {
                if (b.fields[c].kind == SA_VAL_TEXT) {
                    assert_int_equal(b.fields[c].data[b.fields[c].len], '\0');
                    total += b.fields[c].len;
                } else {
                    assert_int_equal(b.fields[c].kind, SA_VAL_NULL);
                }
            }
            assert_true(total <= len);
        } else {
            assert_true(rc == SA_EPROTO);
            assert_int_equal(b.nfields, 0);
            assert_true(err.msg[0] != '\0');
        }
        free(line);
    }
    assert_true(ok > 100); /* the fixture reaches the success path too */
    cp_row_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_text_simple_escapes),
        cmocka_unit_test(test_copy_text_octal),
        cmocka_unit_test(test_copy_text_hex),
        cmocka_unit_test(test_copy_text_null_vs_literal),
        cmocka_unit_test(test_copy_text_embedded_separators),
        cmocka_unit_test(test_copy_text_empty_rows),
        cmocka_unit_test(test_copy_text_column_count),
        cmocka_unit_test(test_copy_text_malformed),
        cmocka_unit_test(test_copy_text_reuse_and_errors),
        cmocka_unit_test(test_copy_text_oom),
        cmocka_unit_test(test_copy_text_round_trip),
        cmocka_unit_test(test_copy_text_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
