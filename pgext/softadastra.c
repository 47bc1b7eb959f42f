/*-------------------------------------------------------------------------
 *
 * softadastra.c
 *	  Entry points of the softadastra extension that are not apply_ops
 *	  (apply.c): the module magic, settings, softadastra.version(), and the
 *	  peer tokens.
 *
 *	  Tokens: a peer's token is 32 bytes from pg_strong_random, written as
 *	  43 characters of unpadded base64url.  softadastra.peers keeps only
 *	  SHA-256(token) (token_hash); check_token hashes what it is given and
 *	  compares the digests in constant time, so neither the token nor the
 *	  timing of a comparison tells anything about a stored hash.
 *
 *-------------------------------------------------------------------------
 */
#include "sa_compat.h"

#include "common/base64.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "sa_pgext.h"

PG_MODULE_MAGIC;

/* Bumped with the SQL script version (softadastra--X.Y.sql). */
#define SOFTADASTRA_VERSION "0.2"

#define SA_TOKEN_BYTES 32

/* softadastra.conflict_value_max: see sa_pgext.h */
int			sa_conflict_value_max = 8192;

/* softadastra.publication: the bridge's publication (add_table adds to it) */
static char *sa_publication = NULL;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("softadastra.conflict_value_max",
							"Largest value, in bytes of its text form, kept in a conflict row.",
							"A longer base, local or remote value is recorded as "
							"{\"omitted\": true, \"length\": N}.",
							&sa_conflict_value_max,
							8192, 0, 1024 * 1024 * 1024,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("softadastra.publication",
							   "Publication the bridge streams; add_table and remove_table keep it in step.",
							   NULL,
							   &sa_publication,
							   "softadastra",
							   PGC_USERSET, 0,
							   NULL, NULL, NULL);
	MarkGUCPrefixReserved("softadastra");
}

PG_FUNCTION_INFO_V1(softadastra_version);
PG_FUNCTION_INFO_V1(softadastra_new_token);
PG_FUNCTION_INFO_V1(softadastra_check_token);

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

/*
 * softadastra.new_token() returns text: 43 characters of base64url.
 */
Datum
softadastra_new_token(PG_FUNCTION_ARGS)
{
	uint8		raw[SA_TOKEN_BYTES];
	char		enc[64];
	int			n;

	if (!pg_strong_random(raw, sizeof raw))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random token")));
	n = pg_b64_encode((const char *) raw, sizeof raw, enc, sizeof enc - 1);
	if (n < 0)
		elog(ERROR, "could not encode a token");
	while (n > 0 && enc[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++)
	{
		if (enc[i] == '+')
			enc[i] = '-';
		else if (enc[i] == '/')
			enc[i] = '_';
	}
	enc[n] = '\0';
	explicit_bzero(raw, sizeof raw);
	PG_RETURN_TEXT_P(cstring_to_text(enc));
}

/* SHA-256 of len bytes at data into out. */
void
sa_sha256(const char *data, size_t len, uint8 out[PG_SHA256_DIGEST_LENGTH])
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
	{
		const char *why = ctx != NULL ? pg_cryptohash_error(ctx) : "out of memory";

		pg_cryptohash_free(ctx);
		elog(ERROR, "could not compute SHA-256: %s", why);
	}
	pg_cryptohash_free(ctx);
}

/*
 * softadastra.check_token(peer text, token text) returns boolean
 *
 * True when token hashes to the token_hash of peer and the peer is not
 * disabled.  The digest is computed and compared (in constant time) even
 * for an unknown peer, against a dummy, so the answer's timing does not
 * say whether the peer exists.
 */
Datum
softadastra_check_token(PG_FUNCTION_ARGS)
{
	text	   *peer = PG_GETARG_TEXT_PP(0);
	text	   *token = PG_GETARG_TEXT_PP(1);
	uint8		given[PG_SHA256_DIGEST_LENGTH];
	uint8		stored[PG_SHA256_DIGEST_LENGTH];
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	bool		ok = false;
	uint8		diff = 0;

	memset(stored, 0xA5, sizeof stored);
	sa_sha256(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), given);

	args[0] = PointerGetDatum(peer);
	SPI_connect();
	if (SPI_execute_with_args("SELECT token_hash, disabled FROM softadastra.peers WHERE name = $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read softadastra.peers");
	if (SPI_processed == 1)
	{
		bool		isnull_h,
					isnull_d;
		Datum		h = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull_h);
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull_d);

		if (!isnull_h && !isnull_d)
		{
			bytea	   *b = DatumGetByteaPP(h);

			if (VARSIZE_ANY_EXHDR(b) == PG_SHA256_DIGEST_LENGTH)
			{
				memcpy(stored, VARDATA_ANY(b), PG_SHA256_DIGEST_LENGTH);
				ok = !DatumGetBool(d);
			}
		}
	}
	SPI_finish();

	for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		diff |= given[i] ^ stored[i];
	PG_RETURN_BOOL(ok && diff == 0);
}
