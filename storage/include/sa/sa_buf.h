/*
 * sa_buf.h — a growable byte buffer and big-endian/varint primitives, used
 * by every encoder (op codec, key layouts, state rows).  The reader half
 * (sa_rd) never reads past its end: each get returns SA_ETRUNCATED instead.
 */
#ifndef SA_BUF_H
#define SA_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Caller-allocated; zero-initialise (or sa_buf_init) and release with
 * sa_buf_free.  data is owned by the buffer. */
typedef struct sa_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} sa_buf;

void sa_buf_init(sa_buf *b);
void sa_buf_free(sa_buf *b);  /* frees data; leaves b empty and reusable */
void sa_buf_reset(sa_buf *b); /* len = 0, keeps the allocation */
/* Make room for `extra` more bytes; SA_ENOMEM (buffer untouched) if not. */
int sa_buf_reserve(sa_buf *b, size_t extra);
int sa_buf_put_u16be(sa_buf *b, uint16_t v);
int sa_buf_put_u32be(sa_buf *b, uint32_t v);
int sa_buf_put_u64be(sa_buf *b, uint64_t v);
/* varint length then bytes */
int sa_buf_put_bytes(sa_buf *b, const void *p, size_t n);
int sa_buf_put_str(sa_buf *b, const char *s); /* as bytes, NUL not stored */

/* The hot appenders are inline: encoders call them per field, and the
 * common case (room already reserved) is a bounds check and a copy. */
static inline int sa_buf_put(sa_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->cap - b->len < n) {
        int rc = sa_buf_reserve(b, n);
        if (rc != 0)
            return rc;
    }
    __builtin_memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int sa_buf_put_u8(sa_buf *b, uint8_t v)
{
    if (b->len == b->cap) {
        int rc = sa_buf_reserve(b, 1);
        if (rc != 0)
            return rc;
    }
    b->data[b->len++] = v;
    return 0;
}

/* LEB128, at most 10 bytes */
static inline int sa_buf_put_varint(sa_buf *b, uint64_t v)
{
    if (b->cap - b->len < 10) {
        int rc = sa_buf_reserve(b, 10);
        if (rc != 0)
            return rc;
    }
    uint8_t *p = b->data + b->len;
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    b->len += n;
    return 0;
}

/* A bounds-checked reader over borrowed bytes. */
typedef struct sa_rd {
    const uint8_t *p;
    size_t left;
} sa_rd;

void sa_rd_init(sa_rd *r, const void *p, size_t n);
int sa_rd_u8(sa_rd *r, uint8_t *out);
int sa_rd_u16be(sa_rd *r, uint16_t *out);
int sa_rd_u32be(sa_rd *r, uint32_t *out);
int sa_rd_u64be(sa_rd *r, uint64_t *out);
int sa_rd_varint(sa_rd *r, uint64_t *out); /* rejects >10 bytes / overflow */
/* *out borrows from the reader's bytes; *n is the length.  `max` bounds n. */
int sa_rd_bytes(sa_rd *r, const uint8_t **out, size_t *n, size_t max);
int sa_rd_raw(sa_rd *r, const uint8_t **out, size_t n);

static inline void sa_put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
static inline uint64_t sa_get_u64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

#endif /* SA_BUF_H */
