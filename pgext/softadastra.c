/*-------------------------------------------------------------------------
 *
 * softadastra.c
 *	  Entry points of the softadastra extension.  For now only the module
 *	  magic and softadastra.version(); apply and conflict resolution come
 *	  later.
 *
 *-------------------------------------------------------------------------
 */
#include "sa_compat.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;

/* Bumped with the SQL script version (softadastra--X.Y.sql). */
#define SOFTADASTRA_VERSION "0.1"

PG_FUNCTION_INFO_V1(softadastra_version);

/*
 * softadastra.version() returns text
 *
 * The version of the loaded shared library, which can differ from the
 * installed SQL script's version after an upgrade without ALTER EXTENSION.
 */
Datum
softadastra_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(SOFTADASTRA_VERSION));
}
