/*
 * txbuf.h — a received transaction's ops, held in memory up to a bound and
 * spilled to a file beyond it, so a transaction of any size costs bounded
 * memory (DESIGN.md contract 7).  Used for ordinary transactions (between
 * Begin and Commit) and for streamed ones (Stream Start ... Stream Commit,
 * possibly interleaved, with subtransaction aborts).
 *
 * Record format (memory and file alike): u32 BE length of the op encoding,
 * u32 BE xid of the (sub)transaction that made it, then the op encoding.
 * Spill files live in a staging directory and are removed when the buffer
 * is freed; a crash leaves them behind and txbuf_clean_dir removes them at
 * start (the server resends every transaction not confirmed).
 */
#ifndef SA_BRIDGE_TXBUF_H
#define SA_BRIDGE_TXBUF_H

#include <stddef.h>
#include <stdint.h>

#include "sa/sa_err.h"
#include "sa/sa_op.h"

typedef struct txbuf txbuf;

/* staging_dir is borrowed (must outlive the buffer); mem_limit in bytes. */
int txbuf_new(const char *staging_dir, uint32_t xid, size_t mem_limit, txbuf **out, sa_err *err);
void txbuf_free(txbuf *t); /* removes its spill file; NULL is a no-op */

uint32_t txbuf_xid(const txbuf *t);
/* The source of the changes that follow in this (streamed) transaction:
 * the edge peer, epoch and op seq a softadastra message named. */
void txbuf_set_source(txbuf *t, const char *peer, uint64_t epoch, uint64_t seq);
/* The current source (borrowed), or NULL when none was named. */
const char *txbuf_source(const txbuf *t, uint64_t *epoch, uint64_t *seq);
/* The edge ops this (streamed) transaction applied, up to op seq `to`
 * (ingest.h INGEST_META_CONFIRM), and the getter: NULL when none. */
void txbuf_set_confirm(txbuf *t, const char *peer, uint64_t epoch, uint64_t to);
const char *txbuf_confirm(const txbuf *t, uint64_t *epoch, uint64_t *to);
uint64_t txbuf_count(const txbuf *t); /* ops added, aborted ones included */
int txbuf_spilled(const txbuf *t);

/* Append op (encoded now; nothing borrowed) made by (sub)transaction xid. */
int txbuf_add(txbuf *t, uint32_t subxid, const sa_op *op, sa_err *err);

/* Forget the ops of subtransaction subxid (Stream Abort of a subxact). */
int txbuf_abort_sub(txbuf *t, uint32_t subxid, sa_err *err);

/* Read the ops back in order, skipping aborted subtransactions.  *op is
 * owned by the buffer until the next call (NULL at the end).  Restartable
 * with txbuf_rewind. */
int txbuf_rewind(txbuf *t, sa_err *err);
int txbuf_next(txbuf *t, sa_op **op /* out */, sa_err *err);

/* Remove leftover spill files of a previous run. */
int txbuf_clean_dir(const char *staging_dir, sa_err *err);

#endif /* SA_BRIDGE_TXBUF_H */
