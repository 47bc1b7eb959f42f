/*-------------------------------------------------------------------------
 *
 * sa_compat.h
 *	  The one place for PostgreSQL version checks in the softadastra
 *	  extension.  Every other file includes this instead of testing
 *	  PG_VERSION_NUM itself, so supporting a new major version means
 *	  touching one file.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SA_COMPAT_H
#define SA_COMPAT_H

#include "postgres.h"

/*
 * PostgreSQL 14 is the oldest we support: pgoutput's protocol version 2
 * (streaming of in-progress transactions) and transactional logical
 * messages with pg_logical_emit_message, which the loop detection relies
 * on, are both available from there.
 */
#if PG_VERSION_NUM < 140000
#error "softadastra requires PostgreSQL 14 or later"
#endif

/* PostgreSQL 15 renamed EmitWarningsOnPlaceholders. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

#endif							/* SA_COMPAT_H */
