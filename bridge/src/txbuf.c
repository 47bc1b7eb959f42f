/*
 * txbuf.c — a transaction's ops in memory up to a bound, then in a spill
 * file (format in txbuf.h).  Reading back decodes one op at a time.
 */
#include "txbuf.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sa/sa_alloc.h"
#include "sa/sa_buf.h"

struct txbuf {
    const char *dir;
    uint32_t xid;
    size_t mem_limit;
    sa_buf mem;  /* records while in memory */
    FILE *file;  /* records once spilled (mem emptied into it) */
    char *path;
    uint64_t count;
    uint32_t *aborted; /* aborted subxids */
    size_t naborted, abcap;
    /* reading */
    size_t rpos;
    sa_buf rbuf;
    sa_op *cur;
    /* the edge op range whose changes follow (softadastra message), if any */
    char src_peer[64];
    uint64_t src_epoch, src_seq;
    char conf_peer[64]; /* the edge ops this transaction applied (txbuf_set_confirm) */
    uint64_t conf_epoch, conf_to;
};

int txbuf_new(const char *staging_dir, uint32_t xid, size_t mem_limit, txbuf **out, sa_err *err)
{
    txbuf *t = sa_calloc(1, sizeof *t);
    if (t == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    t->dir = staging_dir;
    t->xid = xid;
    t->mem_limit = mem_limit;
    *out = t;
    return 0;
}

void txbuf_free(txbuf *t)
{
    if (t == NULL)
        return;
    if (t->file != NULL)
        fclose(t->file);
    if (t->path != NULL)
        unlink(t->path);
    sa_free(t->path);
    sa_buf_free(&t->mem);
    sa_buf_free(&t->rbuf);
    sa_free(t->aborted);
    sa_op_free(t->cur);
    sa_free(t);
}

uint32_t txbuf_xid(const txbuf *t) { return t->xid; }

void txbuf_set_source(txbuf *t, const char *peer, uint64_t epoch, uint64_t seq)
{
    snprintf(t->src_peer, sizeof t->src_peer, "%s", peer);
    t->src_epoch = epoch;
    t->src_seq = seq;
}

void txbuf_set_confirm(txbuf *t, const char *peer, uint64_t epoch, uint64_t to)
{
    snprintf(t->conf_peer, sizeof t->conf_peer, "%s", peer);
    t->conf_epoch = epoch;
    t->conf_to = to;
}

const char *txbuf_confirm(const txbuf *t, uint64_t *epoch, uint64_t *to)
{
    if (t->conf_peer[0] == '\0')
        return NULL;
    *epoch = t->conf_epoch;
    *to = t->conf_to;
    return t->conf_peer;
}

const char *txbuf_source(const txbuf *t, uint64_t *epoch, uint64_t *seq)
{
    if (t->src_peer[0] == '\0')
        return NULL;
    *epoch = t->src_epoch;
    *seq = t->src_seq;
    return t->src_peer;
}
uint64_t txbuf_count(const txbuf *t) { return t->count; }
int txbuf_spilled(const txbuf *t) { return t->file != NULL; }

static int spill(txbuf *t, sa_err *err)
{
    size_t n = strlen(t->dir) + 48;
    t->path = sa_malloc(n);
    if (t->path == NULL)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    snprintf(t->path, n, "%s/txn-%u-%p.ops", t->dir, t->xid, (void *)t);
    t->file = fopen(t->path, "w+");
    if (t->file == NULL)
        return sa_err_set(err, SA_ESYS, "cannot create staging file '%s': %s", t->path,
                          strerror(errno));
    if (t->mem.len > 0 && fwrite(t->mem.data, 1, t->mem.len, t->file) != t->mem.len)
        return sa_err_set(err, SA_EIO, "cannot write staging file '%s': %s", t->path,
                          strerror(errno));
    sa_buf_free(&t->mem);
    return 0;
}

int txbuf_add(txbuf *t, uint32_t subxid, const sa_op *op, sa_err *err)
{
    sa_buf *b = &t->mem;
    sa_buf tmp;
    sa_buf_init(&tmp);
    if (t->file != NULL)
        b = &tmp;
    size_t start = b->len;
    int rc = sa_buf_put_u32be(b, 0);
    if (rc == 0)
        rc = sa_buf_put_u32be(b, subxid);
    if (rc != 0) {
        rc = sa_err_set(err, SA_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = sa_op_encode(op, b, err)) != 0) {
        b->len = start;
        goto done;
    }
    uint32_t len = (uint32_t)(b->len - start - 8);
    b->data[start] = (uint8_t)(len >> 24);
    b->data[start + 1] = (uint8_t)(len >> 16);
    b->data[start + 2] = (uint8_t)(len >> 8);
    b->data[start + 3] = (uint8_t)len;
    t->count++;
    if (t->file != NULL) {
        if (fwrite(tmp.data, 1, tmp.len, t->file) != tmp.len)
            rc = sa_err_set(err, SA_EIO, "cannot write staging file '%s': %s", t->path,
                            strerror(errno));
    } else if (t->mem.len > t->mem_limit) {
        rc = spill(t, err);
    }
done:
    sa_buf_free(&tmp);
    return rc;
}

int txbuf_abort_sub(txbuf *t, uint32_t subxid, sa_err *err)
{
    if (t->naborted == t->abcap) {
        size_t cap = t->abcap ? t->abcap * 2 : 8;
        uint32_t *a = sa_realloc(t->aborted, cap * sizeof *a);
        if (a == NULL)
            return sa_err_set(err, SA_ENOMEM, "out of memory");
        t->aborted = a;
        t->abcap = cap;
    }
    t->aborted[t->naborted++] = subxid;
    return 0;
}

static int is_aborted(const txbuf *t, uint32_t xid)
{
    for (size_t i = 0; i < t->naborted; i++)
        if (t->aborted[i] == xid)
            return 1;
    return 0;
}

int txbuf_rewind(txbuf *t, sa_err *err)
{
    t->rpos = 0;
    if (t->file != NULL) {
        if (fflush(t->file) != 0 || fseek(t->file, 0, SEEK_SET) != 0)
            return sa_err_set(err, SA_EIO, "cannot read staging file '%s': %s", t->path,
                              strerror(errno));
    }
    return 0;
}

/* The next raw record: header and body into t->rbuf (file) or pointing into
 * memory.  0 at the end, 1 with a record. */
static int next_raw(txbuf *t, const uint8_t **p, uint32_t *len, uint32_t *xid, sa_err *err)
{
    uint8_t hdr[8];
    if (t->file == NULL) {
        if (t->rpos == t->mem.len)
            return 0;
        if (t->mem.len - t->rpos < 8)
            return sa_err_set(err, SA_ECORRUPT, "transaction buffer is damaged");
        memcpy(hdr, t->mem.data + t->rpos, 8);
    } else {
        size_t n = fread(hdr, 1, 8, t->file);
        if (n == 0 && feof(t->file))
            return 0;
        if (n != 8)
            return sa_err_set(err, SA_EIO, "staging file '%s' is truncated", t->path);
    }
    *len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    *xid = ((uint32_t)hdr[4] << 24) | ((uint32_t)hdr[5] << 16) | ((uint32_t)hdr[6] << 8) | hdr[7];
    if (t->file == NULL) {
        if (t->mem.len - t->rpos - 8 < *len)
            return sa_err_set(err, SA_ECORRUPT, "transaction buffer is damaged");
        *p = t->mem.data + t->rpos + 8;
        t->rpos += 8 + (size_t)*len;
        return 1;
    }
    sa_buf_reset(&t->rbuf);
    if (sa_buf_reserve(&t->rbuf, *len) != 0)
        return sa_err_set(err, SA_ENOMEM, "out of memory");
    if (fread(t->rbuf.data, 1, *len, t->file) != *len)
        return sa_err_set(err, SA_EIO, "staging file '%s' is truncated", t->path);
    *p = t->rbuf.data;
    return 1;
}

int txbuf_next(txbuf *t, sa_op **op, sa_err *err)
{
    sa_op_free(t->cur);
    t->cur = NULL;
    for (;;) {
        const uint8_t *p = NULL;
        uint32_t len = 0, xid = 0;
        int rc = next_raw(t, &p, &len, &xid, err);
        if (rc <= 0) {
            *op = NULL;
            return rc;
        }
        if (is_aborted(t, xid))
            continue;
        if ((rc = sa_op_decode(p, len, &t->cur, err)) != 0)
            return rc;
        *op = t->cur;
        return 0;
    }
}

int txbuf_clean_dir(const char *staging_dir, sa_err *err)
{
    DIR *d = opendir(staging_dir);
    if (d == NULL)
        return errno == ENOENT ? 0
                               : sa_err_set(err, SA_ESYS, "cannot read '%s': %s", staging_dir,
                                            strerror(errno));
    struct dirent *de;
    char path[4096];
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (strncmp(de->d_name, "txn-", 4) != 0 || n < 4 || strcmp(de->d_name + n - 4, ".ops") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", staging_dir, de->d_name);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = sa_err_set(err, SA_ESYS, "cannot remove '%s': %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}
