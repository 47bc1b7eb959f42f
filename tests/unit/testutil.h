/*
 * testutil.h — small helpers shared by the unit tests: temp directories,
 * building ops from strings, and replaying a WAL into an in-memory model.
 * Header-only so each test binary stays one file plus this.
 */
#ifndef SA_TESTUTIL_H
#define SA_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sa/sa_alloc.h"
#include "sa/sa_op.h"
#include "sa/sa_store.h"

/* A fresh empty directory path (not created) under $SA_TEST_TMPDIR or /tmp.
 * Caller frees with free(); remove with tu_rmrf. */
static inline char *tu_tmpdir(const char *tag)
{
    const char *base = getenv("SA_TEST_TMPDIR");
    char tmpl[4096];
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", base);
    if (system(cmd) != 0)
        return NULL;
    snprintf(tmpl, sizeof tmpl, "%s/sa-%s-XXXXXX", base, tag);
    if (mkdtemp(tmpl) == NULL)
        return NULL;
    rmdir(tmpl); /* the store creates it: we test creation too */
    return strdup(tmpl);
}

static inline void tu_rmrf(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

/* Fields from "name=value" strings; "name" alone = NULL, "name=~" = the
 * unchanged marker.  Names and values point into the strings (borrowed). */
typedef struct tu_fields {
    sa_field f[16];
    char store[16][128];
    uint32_t n;
} tu_fields;

static inline void tu_fields_set(tu_fields *t, int n, const char *const *spec)
{
    t->n = (uint32_t)n;
    for (int i = 0; i < n; i++) {
        snprintf(t->store[i], sizeof t->store[i], "%s", spec[i]);
        char *eq = strchr(t->store[i], '=');
        t->f[i].name = t->store[i];
        t->f[i].val.type_oid = SA_OID_TEXT;
        if (eq == NULL) {
            t->f[i].val.kind = SA_VAL_NULL;
            t->f[i].val.data = NULL;
            t->f[i].val.len = 0;
            continue;
        }
        *eq = '\0';
        if (strcmp(eq + 1, "~") == 0) {
            t->f[i].val.kind = SA_VAL_UNCHANGED;
            t->f[i].val.data = NULL;
            t->f[i].val.len = 0;
        } else {
            t->f[i].val.kind = SA_VAL_TEXT;
            t->f[i].val.data = eq + 1;
            t->f[i].val.len = (uint32_t)strlen(eq + 1);
        }
    }
}

/* Look up a column's text value in a row ("<null>" / "<unchanged>"). */
static inline const char *tu_col(const sa_field *f, uint32_t n, const char *name, char *buf,
                                 size_t cap)
{
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(f[i].name, name) != 0)
            continue;
        if (f[i].val.kind == SA_VAL_NULL)
            return "<null>";
        if (f[i].val.kind == SA_VAL_UNCHANGED)
            return "<unchanged>";
        snprintf(buf, cap, "%.*s", (int)f[i].val.len, f[i].val.data);
        return buf;
    }
    return "<absent>";
}

static inline sa_op tu_op(sa_op_kind kind, const char *table, const tu_fields *key,
                          const tu_fields *cols, uint64_t hlc)
{
    sa_op op;
    memset(&op, 0, sizeof op);
    op.origin = "pg";
    op.kind = kind;
    op.table = table;
    op.hlc = hlc;
    if (key != NULL) {
        op.key = key->f;
        op.nkey = key->n;
    }
    if (cols != NULL) {
        op.cols = cols->f;
        op.ncols = cols->n;
    }
    return op;
}

static inline sa_store *tu_open(const char *dir, sa_durability d)
{
    sa_store_options o;
    sa_store_options_init(&o);
    o.durability = d;
    sa_store *s = NULL;
    sa_err err;
    int rc = sa_store_open(dir, &o, &s, &err);
    if (rc != 0)
        fail_msg("open %s: %s", dir, err.msg);
    return s;
}

#endif /* SA_TESTUTIL_H */
