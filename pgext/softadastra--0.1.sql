/* softadastra--0.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION softadastra" to load this file. \quit

-- The build's version string, so the bridge can check which extension it
-- talks to.
CREATE FUNCTION version()
RETURNS text
AS 'MODULE_PATHNAME', 'softadastra_version'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
