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

/* pg_cryptohash_error arrived in PostgreSQL 15. */
#if PG_VERSION_NUM < 150000
#define pg_cryptohash_error(ctx) "cryptographic hash failure"
#endif

/* PostgreSQL 17 added LogLogicalMessage's "flush" argument. */
#if PG_VERSION_NUM >= 170000
#define SA_LOG_LOGICAL_MESSAGE(prefix, msg, len, transactional) \
	LogLogicalMessage(prefix, msg, len, transactional, false)
#else
#define SA_LOG_LOGICAL_MESSAGE(prefix, msg, len, transactional) \
	LogLogicalMessage(prefix, msg, len, transactional)
#endif

#endif							/* SA_COMPAT_H */
