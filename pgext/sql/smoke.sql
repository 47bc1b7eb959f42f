-- smoke: the extension loads and its library answers.
CREATE EXTENSION softadastra;
SELECT softadastra.version();
SELECT extversion FROM pg_extension WHERE extname = 'softadastra';
SELECT nspname FROM pg_namespace WHERE nspname = 'softadastra';
DROP EXTENSION softadastra;
