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
int sa_buf_reserve(sa_buf *b, size_t extra);
int sa_buf_put(sa_buf *b, const void *p, size_t n);
int sa_buf_put_u8(sa_buf *b, uint8_t v);
int sa_buf_put_u16be(sa_buf *b, uint16_t v);
int sa_buf_put_u32be(sa_buf *b, uint32_t v);
int sa_buf_put_u64be(sa_buf *b, uint64_t v);
int sa_buf_put_varint(sa_buf *b, uint64_t v); /* LEB128, at most 10 bytes */
/* varint length then bytes */
int sa_buf_put_bytes(sa_buf *b, const void *p, size_t n);
int sa_buf_put_str(sa_buf *b, const char *s); /* as bytes, NUL not stored */

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
