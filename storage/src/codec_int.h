/*
 * codec_int.h — internal: encoders without validation, for callers inside
 * storage/ that already ran sa_op_validate on the same op (validating once
 * per op, not once per layer, keeps the append path cheap).
 */
#ifndef SA_CODEC_INT_H
#define SA_CODEC_INT_H

#include "sa/sa_op.h"

/* sa_op_encode without sa_op_validate: op MUST have passed it. */
int sa__op_encode_trusted(const sa_op *op, sa_buf *out, sa_err *err);
/* sa_fields_encode without checks: the fields come from a validated op.
 * Returns SA_ENOMEM (no message) on allocation failure; out unchanged. */
int sa__fields_encode_trusted(const sa_field *f, uint32_t n, sa_buf *out);

/* Bytes sa_fields_encode writes for these fields. */
size_t sa__fields_size(const sa_field *f, uint32_t n);
/* Where an op's key field list starts in its encoding (the cols list
 * follows it at once): lets the state row copy those bytes instead of
 * encoding them again.  Tied to the layout at the head of codec.c. */
size_t sa__op_fields_offset(const sa_op *op);

#endif /* SA_CODEC_INT_H */
