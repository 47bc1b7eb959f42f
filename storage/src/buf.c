/* buf.c — growable byte buffer and the bounds-checked reader. */
#include "sa/sa_buf.h"

#include <string.h>

#include "sa/sa_alloc.h"
#include "sa/sa_err.h"

void sa_buf_init(sa_buf *b) { memset(b, 0, sizeof *b); }

void sa_buf_free(sa_buf *b)
{
    sa_free(b->data);
    memset(b, 0, sizeof *b);
}

void sa_buf_reset(sa_buf *b) { b->len = 0; }

int sa_buf_reserve(sa_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return SA_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = sa_realloc(b->data, cap);
    if (p == NULL)
        return SA_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}



int sa_buf_put_u16be(sa_buf *b, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return sa_buf_put(b, t, 2);
}

int sa_buf_put_u32be(sa_buf *b, uint32_t v)
{
    uint8_t t[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return sa_buf_put(b, t, 4);
}

int sa_buf_put_u64be(sa_buf *b, uint64_t v)
{
    uint8_t t[8];
    sa_put_u64be(t, v);
    return sa_buf_put(b, t, 8);
}


int sa_buf_put_bytes(sa_buf *b, const void *p, size_t n)
{
    size_t old = b->len;
    int rc = sa_buf_put_varint(b, n);
    if (rc == 0)
        rc = sa_buf_put(b, p, n);
    if (rc != 0)
        b->len = old;
    return rc;
}

int sa_buf_put_str(sa_buf *b, const char *s) { return sa_buf_put_bytes(b, s, strlen(s)); }

void sa_rd_init(sa_rd *r, const void *p, size_t n)
{
    r->p = p;
    r->left = n;
}

int sa_rd_raw(sa_rd *r, const uint8_t **out, size_t n)
{
    if (n > r->left)
        return SA_ETRUNCATED;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

int sa_rd_u8(sa_rd *r, uint8_t *out)
{
    const uint8_t *p;
    int rc = sa_rd_raw(r, &p, 1);
    if (rc == 0)
        *out = p[0];
    return rc;
}

int sa_rd_u16be(sa_rd *r, uint16_t *out)
{
    const uint8_t *p;
    int rc = sa_rd_raw(r, &p, 2);
    if (rc == 0)
        *out = (uint16_t)((p[0] << 8) | p[1]);
    return rc;
}

int sa_rd_u32be(sa_rd *r, uint32_t *out)
{
    const uint8_t *p;
    int rc = sa_rd_raw(r, &p, 4);
    if (rc == 0)
        *out = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return rc;
}

int sa_rd_u64be(sa_rd *r, uint64_t *out)
{
    const uint8_t *p;
    int rc = sa_rd_raw(r, &p, 8);
    if (rc == 0)
        *out = sa_get_u64be(p);
    return rc;
}

int sa_rd_varint(sa_rd *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        uint8_t c;
        if (r->left == 0)
            return SA_ETRUNCATED;
        c = *r->p++;
        r->left--;
        if (i == 9 && (c & 0x7e)) /* the 10th byte may carry only bit 63 */
            return SA_ECORRUPT;
        v |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return SA_ECORRUPT;
}

int sa_rd_bytes(sa_rd *r, const uint8_t **out, size_t *n, size_t max)
{
    uint64_t len;
    int rc = sa_rd_varint(r, &len);
    if (rc != 0)
        return rc;
    if (len > max)
        return SA_ETOOBIG;
    if (len > r->left)
        return SA_ETRUNCATED;
    *out = r->p;
    *n = (size_t)len;
    r->p += len;
    r->left -= len;
    return 0;
}
