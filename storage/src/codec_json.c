/*
 * codec_json.c — the JSON (wire) form of an operation, with jansson.
 *
 * WIRE MAPPING
 * ============
 *
 * An op is one JSON object; members are emitted in this order:
 *
 *   "origin"    string, the writer (non-empty)
 *   "epoch"     integer >= 0          \  JSON integers are int64 here: values
 *   "seq"       integer >= 0           > above INT64_MAX cannot be sent
 *   "hlc"       integer >= 0          /  (SA_ERANGE); an HLC's 48-bit ms fit
 *   "kind"      "insert" | "update" | "delete" | "truncate"
 *   "table"     string, schema-qualified
 *   "key"       object column -> value   (always emitted, may be {})
 *   "cols"      object column -> value   (always emitted, may be {})
 *   "base"      object column -> value   only when SA_OP_HAS_BASE
 *   "types"     object column -> type OID (integer 0..2^32-1), one entry for
 *               every column of key, cols, base and unchanged, no other
 *   "pg"        {"lsn": "X/X", "xid": n, "commit_time": µs since 1970}
 *               only when SA_OP_HAS_PG; lsn in PostgreSQL's text form
 *               (1 to 8 hex digits, '/', 1 to 8 hex digits)
 *   "unchanged" [column, ...]  cols holding the unchanged-TOAST marker; they
 *               are not in "cols".  Omitted when empty.
 *   "raw"       {"key": [col...], "cols": [...], "base": [...]}: json/jsonb
 *               columns whose value is sent as a string holding the PG text
 *               rather than embedded (see below).  Omitted when empty; a
 *               section is present only when non-empty.
 *
 * Column order within key/cols/base is kept both ways (jansson keeps object
 * insertion order).  Decoded UNCHANGED columns are appended to cols in
 * "unchanged" order; sa_op_equal does not depend on column order.
 *
 * Values (text is PostgreSQL's text form of the value):
 *
 *   SQL NULL                      null
 *   bool (16) "t" / "f"           true / false
 *   int2/int4/int8/oid (21,23,20,26) whose text is a canonical decimal int64
 *                                 (what "%lld" prints back)  integer
 *   json (114), jsonb (3802)      the embedded JSON value, when it is
 *                                 faithful: jansson parses the text
 *                                 (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES),
 *                                 it is not the JSON literal null (which
 *                                 would read as SQL NULL), and serializing it
 *                                 back gives the very same text — for json in
 *                                 compact form ({"a":1}), for jsonb in
 *                                 PostgreSQL's jsonb output form ({"a": 1}).
 *                                 Otherwise (big or long-decimal numbers,
 *                                 other spacing, duplicate keys...) a string
 *                                 holding the text, and the column is listed
 *                                 in "raw".  So no digit or byte is ever lost.
 *   everything else (and any text the rules above do not take)  string
 *
 * Decoding reverses it and accepts, per column type: null; a string (its
 * bytes are the text; for json/jsonb only if listed in "raw", else a string
 * is the JSON string value); true/false for bool ("t"/"f"); an integer
 * within the type's range for int2/int4/int8/oid (decimal text); any other
 * JSON value for json/jsonb (serialized in the form above).  Anything else
 * is an error.
 *
 * Errors from sa_op_from_json name the member (and column): SA_EPROTO for a
 * wrong shape (type, missing/unknown member, unknown kind, bad column
 * reference), SA_ERANGE for numbers out of range, SA_ETOOBIG for limits;
 * sa_op_validate's errors pass through.  Text values and names must be
 * valid UTF-8 to be sent (SA_EINVAL otherwise).  jansson out-of-memory is
 * SA_ENOMEM.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa/sa_alloc.h"
#include "sa/sa_op.h"

enum { SEC_KEY, SEC_COLS, SEC_BASE, SEC_N };
static const char *const sec_names[SEC_N] = {"key", "cols", "base"};

static int is_int_oid(uint32_t oid)
{
    return oid == SA_OID_INT2 || oid == SA_OID_INT4 || oid == SA_OID_INT8 ||
           oid == SA_OID_OID;
}

static int is_json_oid(uint32_t oid) { return oid == SA_OID_JSON || oid == SA_OID_JSONB; }

/* json: compact; jsonb: PostgreSQL's output form, which jansson's indent-0
 * non-compact form matches (", " and ": "). */
static size_t json_style(uint32_t oid)
{
    return JSON_ENCODE_ANY | (oid == SA_OID_JSON ? JSON_COMPACT : 0);
}

/* RFC 3629 UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static const char *jtype_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* ==== op -> JSON ========================================================== */

static int nomem(sa_err *err) { return sa_err_set(err, SA_ENOMEM, "building JSON: out of memory"); }

/* Steals v (NULL means jansson ran out of memory). */
static int jset(json_t *obj, const char *key, json_t *v, sa_err *err)
{
    if (v == NULL || json_object_set_new_nocheck(obj, key, v) != 0)
        return nomem(err);
    return 0;
}

static int japp(json_t *arr, json_t *v, sa_err *err)
{
    if (v == NULL || json_array_append_new(arr, v) != 0)
        return nomem(err);
    return 0;
}

static int jstr(const char *what, const char *col, const char *p, size_t n, json_t **out,
                sa_err *err)
{
    if (!utf8_valid((const uint8_t *)p, n))
        return sa_err_set(err, SA_EINVAL, "%s%s%s%s: not valid UTF-8", what,
                          col ? ": column \"" : "", col ? col : "", col ? "\"" : "");
    *out = json_stringn_nocheck(n ? p : "", n); /* jansson refuses NULL */
    return *out ? 0 : nomem(err);
}

/* 1 and *v if text is exactly what "%lld" prints for some int64. */
static int canonical_int64(const char *p, size_t n, long long *v)
{
    char buf[24], out[24];
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    snprintf(out, sizeof out, "%lld", x);
    if (strcmp(out, buf) != 0)
        return 0;
    *v = x;
    return 1;
}

/* The faithful embedding of a json/jsonb text, or *out = NULL (send raw). */
static int json_embed(const sa_value *v, json_t **out, sa_err *err)
{
    json_error_t jerr;
    char *buf = NULL;
    int rc = 0;
    *out = NULL;
    if (v->len == 0)
        return 0; /* not JSON at all; jansson also refuses a NULL buffer */
    json_t *j = json_loadb(v->data, v->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        /* jansson leaves the message empty when an allocation fails; other
         * memory failures inside it look like syntax errors and end up as a
         * raw string, which is still a faithful (if less pretty) form. */
        if (jerr.text[0] == '\0' || json_error_code(&jerr) == json_error_out_of_memory)
            rc = nomem(err);
        goto done;
    }
    if (json_is_null(j))
        goto done;
    size_t flags = json_style(v->type_oid);
    size_t n = json_dumpb(j, NULL, 0, flags);
    if (n == 0) {
        rc = nomem(err); /* dumping a parsed value only fails for memory */
        goto done;
    }
    if (n != v->len)
        goto done;
    buf = sa_malloc(n);
    if (buf == NULL) {
        rc = nomem(err);
        goto done;
    }
    if (json_dumpb(j, buf, n, flags) != n) {
        rc = nomem(err);
        goto done;
    }
    if (memcmp(buf, v->data, n) == 0) {
        *out = j;
        j = NULL;
    }
done:
    sa_free(buf);
    json_decref(j);
    return rc;
}

/* *raw set when a json/jsonb column went out as a string. */
static int value_to_json(const char *sec, const sa_field *f, json_t **out, int *raw,
                         sa_err *err)
{
    const sa_value *v = &f->val;
    long long iv;
    *raw = 0;
    if (v->kind == SA_VAL_NULL) {
        *out = json_null();
        return *out ? 0 : nomem(err);
    }
    if (v->type_oid == SA_OID_BOOL && v->len == 1 && (v->data[0] == 't' || v->data[0] == 'f')) {
        *out = json_boolean(v->data[0] == 't');
        return *out ? 0 : nomem(err);
    }
    if (is_int_oid(v->type_oid) && canonical_int64(v->data, v->len, &iv)) {
        *out = json_integer(iv);
        return *out ? 0 : nomem(err);
    }
    if (is_json_oid(v->type_oid)) {
        int rc = json_embed(v, out, err);
        if (rc != 0 || *out != NULL)
            return rc;
        *raw = 1;
    }
    return jstr(sec, f->name, v->data, v->len, out, err);
}

static int section_to_json(json_t *root, int sec, const sa_field *f, uint32_t n,
                           json_t *types, json_t *unchanged, json_t *raw, sa_err *err)
{
    json_t *obj = json_object();
    json_t *rawlist = json_array();
    int rc = 0;
    if (obj == NULL || rawlist == NULL) {
        rc = nomem(err);
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *name = f[i].name;
        json_t *jv = NULL;
        int is_raw = 0;
        if (!utf8_valid((const uint8_t *)name, strlen(name))) {
            rc = sa_err_set(err, SA_EINVAL, "%s: column name is not valid UTF-8",
                            sec_names[sec]);
            goto done;
        }
        if (json_object_get(types, name) == NULL) {
            rc = jset(types, name, json_integer(f[i].val.type_oid), err);
            if (rc != 0)
                goto done;
        }
        if (f[i].val.kind == SA_VAL_UNCHANGED) {
            rc = japp(unchanged, json_string_nocheck(name), err);
            if (rc != 0)
                goto done;
            continue;
        }
        rc = value_to_json(sec_names[sec], &f[i], &jv, &is_raw, err);
        if (rc == 0)
            rc = jset(obj, name, jv, err);
        if (rc == 0 && is_raw)
            rc = japp(rawlist, json_string_nocheck(name), err);
        if (rc != 0)
            goto done;
    }
    rc = jset(root, sec_names[sec], obj, err);
    obj = NULL;
    if (rc == 0 && json_array_size(rawlist) > 0)
        rc = jset(raw, sec_names[sec], json_incref(rawlist), err);
done:
    json_decref(obj);
    json_decref(rawlist);
    return rc;
}

static int check_int64(const char *member, uint64_t v, sa_err *err)
{
    if (v > INT64_MAX)
        return sa_err_set(err, SA_ERANGE, "member \"%s\": %" PRIu64 " does not fit a JSON "
                          "integer (int64)", member, v);
    return 0;
}

int sa_op_to_json(const sa_op *op, json_t **out, sa_err *err)
{
    json_t *root = NULL, *types = NULL, *unchanged = NULL, *raw = NULL;
    int rc = sa_op_validate(op, err);
    if (rc == 0)
        rc = check_int64("epoch", op->epoch, err);
    if (rc == 0)
        rc = check_int64("seq", op->seq, err);
    if (rc == 0)
        rc = check_int64("hlc", op->hlc, err);
    if (rc != 0)
        goto done;
    root = json_object();
    types = json_object();
    unchanged = json_array();
    raw = json_object();
    if (root == NULL || types == NULL || unchanged == NULL || raw == NULL) {
        rc = nomem(err);
        goto done;
    }
    json_t *s = NULL;
    rc = jstr("origin", NULL, op->origin, strlen(op->origin), &s, err);
    if (rc == 0)
        rc = jset(root, "origin", s, err);
    if (rc == 0)
        rc = jset(root, "epoch", json_integer((json_int_t)op->epoch), err);
    if (rc == 0)
        rc = jset(root, "seq", json_integer((json_int_t)op->seq), err);
    if (rc == 0)
        rc = jset(root, "hlc", json_integer((json_int_t)op->hlc), err);
    if (rc == 0)
        rc = jset(root, "kind", json_string(sa_op_kind_name(op->kind)), err);
    if (rc == 0)
        rc = jstr("table", NULL, op->table, strlen(op->table), &s, err);
    if (rc == 0)
        rc = jset(root, "table", s, err);
    if (rc == 0)
        rc = section_to_json(root, SEC_KEY, op->key, op->nkey, types, unchanged, raw, err);
    if (rc == 0)
        rc = section_to_json(root, SEC_COLS, op->cols, op->ncols, types, unchanged, raw, err);
    if (rc == 0 && (op->flags & SA_OP_HAS_BASE))
        rc = section_to_json(root, SEC_BASE, op->base, op->nbase, types, unchanged, raw, err);
    if (rc == 0)
        rc = jset(root, "types", json_incref(types), err);
    if (rc == 0 && (op->flags & SA_OP_HAS_PG)) {
        char lsn[32];
        snprintf(lsn, sizeof lsn, "%X/%X", (unsigned)(op->pg_lsn >> 32), (unsigned)op->pg_lsn);
        json_t *pg = json_object();
        rc = jset(root, "pg", pg, err);
        if (rc == 0)
            rc = jset(pg, "lsn", json_string(lsn), err);
        if (rc == 0)
            rc = jset(pg, "xid", json_integer(op->pg_xid), err);
        if (rc == 0)
            rc = jset(pg, "commit_time", json_integer(op->pg_commit_time), err);
    }
    if (rc == 0 && json_array_size(unchanged) > 0)
        rc = jset(root, "unchanged", json_incref(unchanged), err);
    if (rc == 0 && json_object_size(raw) > 0)
        rc = jset(root, "raw", json_incref(raw), err);
done:
    json_decref(types);
    json_decref(unchanged);
    json_decref(raw);
    if (rc == 0)
        *out = root;
    else
        json_decref(root);
    return rc;
}

/* ==== JSON -> op ========================================================== */

enum {
    M_ORIGIN, M_EPOCH, M_SEQ, M_HLC, M_KIND, M_TABLE, M_KEY, M_COLS, M_BASE,
    M_TYPES, M_PG, M_UNCHANGED, M_RAW, M_N
};
static const char *const member_names[M_N] = {
    "origin", "epoch", "seq", "hlc", "kind", "table", "key", "cols", "base",
    "types", "pg", "unchanged", "raw",
};

/* Everything sa_op_from_json collects before building the op. */
typedef struct jop {
    const json_t *m[M_N]; /* members by index into member_names */
    const json_t *raw[SEC_N];
    sa_field *fields;  /* key, cols + unchanged, base: one temporary array */
    char **texts;      /* per field: text we produced (sa_free), or NULL */
    size_t nfields;    /* fields filled so far */
    size_t total;      /* fields allocated */
} jop;

static int get_uint(const char *member, const json_t *v, uint64_t max, uint64_t *out,
                    sa_err *err)
{
    if (!json_is_integer(v))
        return sa_err_set(err, SA_EPROTO, "member \"%s\": expected an integer, got %s", member,
                          jtype_name(v));
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > max)
        return sa_err_set(err, SA_ERANGE, "member \"%s\": %lld is out of range 0..%" PRIu64,
                          member, (long long)x, max);
    *out = (uint64_t)x;
    return 0;
}

static int get_name(const char *member, const json_t *v, const char **out, sa_err *err)
{
    if (!json_is_string(v))
        return sa_err_set(err, SA_EPROTO, "member \"%s\": expected a string, got %s", member,
                          jtype_name(v));
    if (strlen(json_string_value(v)) != json_string_length(v))
        return sa_err_set(err, SA_EPROTO, "member \"%s\": contains a NUL character", member);
    *out = json_string_value(v);
    return 0;
}

static int parse_lsn(const char *s, uint64_t *out)
{
    uint64_t part[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        int nd = 0;
        for (; *s && *s != '/'; s++, nd++) {
            int c = (unsigned char)*s, d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                return -1;
            part[i] = part[i] << 4 | (uint64_t)d;
        }
        if (nd < 1 || nd > 8 || (i == 0 && *s++ != '/') || (i == 1 && *s != '\0'))
            return -1;
    }
    *out = part[0] << 32 | part[1];
    return 0;
}

static int parse_pg(const json_t *pg, sa_op *op, sa_err *err)
{
    const json_t *lsn = NULL, *xid = NULL, *ct = NULL;
    const char *key;
    json_t *v;
    uint64_t x = 0;
    if (!json_is_object(pg))
        return sa_err_set(err, SA_EPROTO, "member \"pg\": expected an object, got %s",
                          jtype_name(pg));
    json_object_foreach((json_t *)pg, key, v) {
        if (strcmp(key, "lsn") == 0)
            lsn = v;
        else if (strcmp(key, "xid") == 0)
            xid = v;
        else if (strcmp(key, "commit_time") == 0)
            ct = v;
        else
            return sa_err_set(err, SA_EPROTO, "member \"pg\": unknown member \"%s\"", key);
    }
    if (lsn == NULL || xid == NULL || ct == NULL)
        return sa_err_set(err, SA_EPROTO, "member \"pg\": missing member \"%s\"",
                          lsn == NULL ? "lsn" : xid == NULL ? "xid" : "commit_time");
    if (!json_is_string(lsn) || parse_lsn(json_string_value(lsn), &op->pg_lsn) != 0)
        return sa_err_set(err, SA_EPROTO, "member \"pg.lsn\": expected an LSN string \"X/X\"");
    int rc = get_uint("pg.xid", xid, UINT32_MAX, &x, err);
    if (rc != 0)
        return rc;
    op->pg_xid = (uint32_t)x;
    if (!json_is_integer(ct))
        return sa_err_set(err, SA_EPROTO, "member \"pg.commit_time\": expected an integer, "
                          "got %s", jtype_name(ct));
    op->pg_commit_time = json_integer_value(ct);
    op->flags |= SA_OP_HAS_PG;
    return 0;
}

/* The column's type from "types". */
static int col_type(const jop *p, const char *sec, const char *name, uint32_t *oid,
                    sa_err *err)
{
    const json_t *t = p->m[M_TYPES] ? json_object_get(p->m[M_TYPES], name) : NULL;
    if (t == NULL)
        return sa_err_set(err, SA_EPROTO, "member \"%s\": column \"%s\": no entry in \"types\"",
                          sec, name);
    *oid = (uint32_t)json_integer_value(t); /* range checked in check_types */
    return 0;
}

static int in_string_array(const json_t *arr, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (strcmp(json_string_value(v), name) == 0)
            return 1;
    }
    return 0;
}

/* Keep text we produced; the field borrows it until the op is cloned. */
static int own_text(jop *p, sa_field *f, char *s, size_t n, sa_err *err)
{
    if (s == NULL)
        return nomem(err);
    p->texts[p->nfields] = s;
    f->val.data = s;
    f->val.len = (uint32_t)n;
    return 0;
}

static int value_from_json(jop *p, const char *sec, sa_field *f, const json_t *jv,
                           int is_raw, sa_err *err)
{
    uint32_t oid = f->val.type_oid;
    f->val.kind = SA_VAL_TEXT;
    if (json_is_null(jv) && !is_raw) {
        f->val.kind = SA_VAL_NULL;
        return 0;
    }
    if (json_is_string(jv) && (is_raw || !is_json_oid(oid))) {
        size_t n = json_string_length(jv);
        if (n > SA_OP_MAX_VALUE)
            return sa_err_set(err, SA_ETOOBIG, "member \"%s\": column \"%s\": value of %zu "
                              "bytes, more than %u", sec, f->name, n, SA_OP_MAX_VALUE);
        f->val.data = json_string_value(jv);
        f->val.len = (uint32_t)n;
        return 0;
    }
    if (is_raw)
        return sa_err_set(err, SA_EPROTO, "member \"%s\": column \"%s\": listed in \"raw\" "
                          "but %s, not a string", sec, f->name, jtype_name(jv));
    if (oid == SA_OID_BOOL && json_is_boolean(jv)) {
        f->val.data = json_is_true(jv) ? "t" : "f";
        f->val.len = 1;
        return 0;
    }
    if (is_int_oid(oid) && json_is_integer(jv)) {
        json_int_t x = json_integer_value(jv);
        long long lo = oid == SA_OID_INT2 ? INT16_MIN : oid == SA_OID_INT4 ? INT32_MIN
                     : oid == SA_OID_OID  ? 0 : INT64_MIN;
        long long hi = oid == SA_OID_INT2 ? INT16_MAX : oid == SA_OID_INT4 ? INT32_MAX
                     : oid == SA_OID_OID  ? (long long)UINT32_MAX : INT64_MAX;
        if (x < lo || x > hi)
            return sa_err_set(err, SA_ERANGE, "member \"%s\": column \"%s\": %lld is out of "
                              "range for type oid %u", sec, f->name, (long long)x,
                              (unsigned)oid);
        char *s = sa_malloc(24);
        int n = s ? snprintf(s, 24, "%lld", (long long)x) : 0;
        return own_text(p, f, s, (size_t)n, err);
    }
    if (is_json_oid(oid)) {
        size_t flags = json_style(oid);
        size_t n = json_dumpb(jv, NULL, 0, flags);
        if (n == 0)
            return nomem(err);
        if (n > SA_OP_MAX_VALUE)
            return sa_err_set(err, SA_ETOOBIG, "member \"%s\": column \"%s\": value of %zu "
                              "bytes, more than %u", sec, f->name, n, SA_OP_MAX_VALUE);
        char *s = sa_malloc(n);
        if (s != NULL && json_dumpb(jv, s, n, flags) != n) {
            sa_free(s);
            s = NULL;
        }
        return own_text(p, f, s, n, err);
    }
    return sa_err_set(err, SA_EPROTO, "member \"%s\": column \"%s\": expected %s for type "
                      "oid %u, got %s", sec, f->name,
                      oid == SA_OID_BOOL ? "a string or a boolean"
                      : is_int_oid(oid)  ? "a string or an integer"
                                         : "a string or null",
                      (unsigned)oid, jtype_name(jv));
}

static int section_from_json(jop *p, int sec, const sa_field **out, uint32_t *n,
                             sa_err *err)
{
    const char *sn = sec_names[sec];
    const json_t *obj = p->m[M_KEY + sec];
    const char *name;
    json_t *jv;
    *out = p->fields + p->nfields;
    *n = 0;
    if (obj == NULL)
        return 0;
    json_object_foreach((json_t *)obj, name, jv) {
        sa_field *f = &p->fields[p->nfields];
        f->name = name;
        int rc = col_type(p, sn, name, &f->val.type_oid, err);
        if (rc == 0)
            rc = value_from_json(p, sn, f, jv,
                                 p->raw[sec] != NULL && in_string_array(p->raw[sec], name), err);
        if (rc != 0)
            return rc;
        p->nfields++;
        (*n)++;
    }
    return 0;
}

/* Shapes of members that hold collections, and their limits. */
static int check_shapes(jop *p, sa_err *err)
{
    for (int m = M_KEY; m <= M_BASE; m++) {
        const json_t *o = p->m[m];
        if (o == NULL)
            continue;
        if (!json_is_object(o))
            return sa_err_set(err, SA_EPROTO, "member \"%s\": expected an object, got %s",
                              member_names[m], jtype_name(o));
        if (json_object_size(o) > SA_OP_MAX_FIELDS)
            return sa_err_set(err, SA_ETOOBIG, "member \"%s\": more than %u columns",
                              member_names[m], SA_OP_MAX_FIELDS);
    }
    const json_t *u = p->m[M_UNCHANGED];
    if (u != NULL) {
        size_t i;
        json_t *v;
        if (!json_is_array(u))
            return sa_err_set(err, SA_EPROTO, "member \"unchanged\": expected an array, got %s",
                              jtype_name(u));
        if (json_array_size(u) > SA_OP_MAX_FIELDS)
            return sa_err_set(err, SA_ETOOBIG, "member \"unchanged\": more than %u columns",
                              SA_OP_MAX_FIELDS);
        json_array_foreach(u, i, v) {
            if (!json_is_string(v))
                return sa_err_set(err, SA_EPROTO, "member \"unchanged\": element %zu is %s, "
                                  "not a column name", i, jtype_name(v));
            if (p->m[M_COLS] && json_object_get(p->m[M_COLS], json_string_value(v)))
                return sa_err_set(err, SA_EPROTO, "member \"unchanged\": column \"%s\" is also "
                                  "in \"cols\"", json_string_value(v));
        }
    }
    const json_t *t = p->m[M_TYPES];
    if (t != NULL && !json_is_object(t))
        return sa_err_set(err, SA_EPROTO, "member \"types\": expected an object, got %s",
                          jtype_name(t));
    return 0;
}

/* Every "types" entry is an OID and names a column that is present. */
static int check_types(jop *p, sa_err *err)
{
    const char *name;
    json_t *v;
    if (p->m[M_TYPES] == NULL)
        return 0;
    json_object_foreach((json_t *)p->m[M_TYPES], name, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > (json_int_t)UINT32_MAX)
            return sa_err_set(err, SA_EPROTO, "member \"types\": column \"%s\": expected a "
                              "type oid (integer 0..4294967295), got %s", name,
                              json_is_integer(v) ? "an integer out of range" : jtype_name(v));
        int found = p->m[M_UNCHANGED] && in_string_array(p->m[M_UNCHANGED], name);
        for (int m = M_KEY; !found && m <= M_BASE; m++)
            found = p->m[m] && json_object_get(p->m[m], name) != NULL;
        if (!found)
            return sa_err_set(err, SA_EPROTO, "member \"types\": column \"%s\" is in no key, "
                              "cols, base or unchanged", name);
    }
    return 0;
}

/* "raw": {"key"|"cols"|"base": [json/jsonb column names of that section]}. */
static int check_raw(jop *p, sa_err *err)
{
    const json_t *r = p->m[M_RAW];
    const char *key;
    json_t *arr;
    if (r == NULL)
        return 0;
    if (!json_is_object(r))
        return sa_err_set(err, SA_EPROTO, "member \"raw\": expected an object, got %s",
                          jtype_name(r));
    json_object_foreach((json_t *)r, key, arr) {
        int sec = 0;
        while (sec < SEC_N && strcmp(key, sec_names[sec]) != 0)
            sec++;
        if (sec == SEC_N)
            return sa_err_set(err, SA_EPROTO, "member \"raw\": unknown member \"%s\"", key);
        if (!json_is_array(arr))
            return sa_err_set(err, SA_EPROTO, "member \"raw.%s\": expected an array, got %s",
                              key, jtype_name(arr));
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            const json_t *t;
            const char *col = json_string_value(v);
            if (col == NULL)
                return sa_err_set(err, SA_EPROTO, "member \"raw.%s\": element %zu is %s, not "
                                  "a column name", key, i, jtype_name(v));
            if (p->m[M_KEY + sec] == NULL || !json_object_get(p->m[M_KEY + sec], col))
                return sa_err_set(err, SA_EPROTO, "member \"raw.%s\": column \"%s\" is not in "
                                  "\"%s\"", key, col, key);
            t = p->m[M_TYPES] ? json_object_get(p->m[M_TYPES], col) : NULL;
            if (t != NULL && !is_json_oid((uint32_t)json_integer_value(t)))
                return sa_err_set(err, SA_EPROTO, "member \"raw.%s\": column \"%s\" is not of "
                                  "type json or jsonb", key, col);
        }
        p->raw[sec] = arr;
    }
    return 0;
}

static int header_from_json(jop *p, sa_op *op, sa_err *err)
{
    static const int required[] = {M_ORIGIN, M_EPOCH, M_SEQ, M_HLC, M_KIND, M_TABLE};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (p->m[required[i]] == NULL)
            return sa_err_set(err, SA_EPROTO, "member \"%s\" is missing",
                              member_names[required[i]]);
    }
    const char *kind = NULL;
    int rc = get_name("origin", p->m[M_ORIGIN], &op->origin, err);
    if (rc == 0)
        rc = get_uint("epoch", p->m[M_EPOCH], INT64_MAX, &op->epoch, err);
    if (rc == 0)
        rc = get_uint("seq", p->m[M_SEQ], INT64_MAX, &op->seq, err);
    if (rc == 0)
        rc = get_uint("hlc", p->m[M_HLC], INT64_MAX, &op->hlc, err);
    if (rc == 0)
        rc = get_name("kind", p->m[M_KIND], &kind, err);
    if (rc == 0 && sa_op_kind_parse(kind, &op->kind) != 0)
        rc = sa_err_set(err, SA_EPROTO, "member \"kind\": unknown op kind \"%s\"", kind);
    if (rc == 0)
        rc = get_name("table", p->m[M_TABLE], &op->table, err);
    if (rc == 0 && p->m[M_PG] != NULL)
        rc = parse_pg(p->m[M_PG], op, err);
    return rc;
}

int sa_op_from_json(const json_t *j, sa_op **out, sa_err *err)
{
    jop p = {0};
    sa_op op = {0};
    sa_op *res = NULL;
    const char *key;
    json_t *v;
    int rc = 0;
    if (!json_is_object(j)) {
        rc = sa_err_set(err, SA_EPROTO, "op: expected an object, got %s",
                        j ? jtype_name(j) : "nothing");
        goto done;
    }
    /* jansson's iteration API takes non-const pointers; nothing is modified. */
    json_object_foreach((json_t *)j, key, v) {
        int m = 0;
        while (m < M_N && strcmp(key, member_names[m]) != 0)
            m++;
        if (m == M_N) {
            rc = sa_err_set(err, SA_EPROTO, "member \"%s\": unknown member", key);
            goto done;
        }
        p.m[m] = v;
    }
    rc = header_from_json(&p, &op, err);
    if (rc == 0)
        rc = check_shapes(&p, err);
    if (rc == 0)
        rc = check_types(&p, err);
    if (rc == 0)
        rc = check_raw(&p, err);
    if (rc != 0)
        goto done;

    size_t total = json_array_size(p.m[M_UNCHANGED]);
    for (int m = M_KEY; m <= M_BASE; m++)
        total += json_object_size(p.m[m]);
    p.total = total;
    p.fields = sa_calloc(total, sizeof *p.fields);
    p.texts = sa_calloc(total, sizeof *p.texts);
    if (p.fields == NULL || p.texts == NULL) {
        rc = sa_err_set(err, SA_ENOMEM, "reading JSON op: out of memory");
        goto done;
    }
    rc = section_from_json(&p, SEC_KEY, &op.key, &op.nkey, err);
    if (rc == 0)
        rc = section_from_json(&p, SEC_COLS, &op.cols, &op.ncols, err);
    if (rc != 0)
        goto done;
    size_t i;
    json_array_foreach(p.m[M_UNCHANGED], i, v) {
        sa_field *f = &p.fields[p.nfields];
        f->name = json_string_value(v);
        f->val.kind = SA_VAL_UNCHANGED;
        rc = col_type(&p, "unchanged", f->name, &f->val.type_oid, err);
        if (rc != 0)
            goto done;
        p.nfields++;
        op.ncols++;
    }
    if (p.m[M_BASE] != NULL) {
        op.flags |= SA_OP_HAS_BASE;
        rc = section_from_json(&p, SEC_BASE, &op.base, &op.nbase, err);
        if (rc != 0)
            goto done;
    }
    rc = sa_op_validate(&op, err);
    if (rc == 0)
        rc = sa_op_clone(&op, &res, err);
done:
    for (size_t k = 0; p.texts != NULL && k < p.total; k++)
        sa_free(p.texts[k]);
    sa_free(p.texts);
    sa_free(p.fields);
    if (rc == 0)
        *out = res;
    return rc;
}
