-- 30_apply.sql — the C functions: tokens and apply_ops.

-- A fresh random token (43 characters of base64url, 256 bits from the
-- server's strong random source).  create_peer and rotate_token use it.
CREATE FUNCTION new_token()
RETURNS text
AS 'MODULE_PATHNAME', 'softadastra_new_token'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION new_token() FROM PUBLIC;

-- Does token belong to the enabled peer?  Compares SHA-256 digests in
-- constant time; false for an unknown or disabled peer.
CREATE FUNCTION check_token(peer text, token text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'softadastra_check_token'
LANGUAGE C STRICT STABLE;
REVOKE ALL ON FUNCTION check_token(text, text) FROM PUBLIC;

-- Apply a batch of one peer's ops (a JSON array of ops in the wire form,
-- see storage/src/codec_json.c) inside the caller's transaction.  One row
-- per op, in order: applied | conflict | duplicate | rejected, or gap for
-- the first op after a missing seq (the batch stops there).
CREATE FUNCTION apply_ops(peer text, epoch bigint, ops jsonb)
RETURNS TABLE (seq bigint, status text, conflict_id bigint, message text)
AS 'MODULE_PATHNAME', 'softadastra_apply_ops'
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION apply_ops(text, bigint, jsonb) FROM PUBLIC;
