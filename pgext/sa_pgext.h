/*-------------------------------------------------------------------------
 *
 * sa_pgext.h
 *	  What the softadastra extension's C files share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SA_PGEXT_H
#define SA_PGEXT_H

#include "sa_compat.h"

#include "common/sha2.h"

/*
 * softadastra.conflict_value_max (bytes, default 8192): a base, local or
 * remote value whose text form is longer is kept in softadastra.conflicts
 * as {"omitted": true, "length": N}.
 */
extern int	sa_conflict_value_max;

/* SHA-256 of len bytes at data (ERROR on failure). */
extern void sa_sha256(const char *data, size_t len, uint8 out[PG_SHA256_DIGEST_LENGTH]);

#endif							/* SA_PGEXT_H */
