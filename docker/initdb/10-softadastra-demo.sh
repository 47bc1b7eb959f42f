#!/bin/sh
# docker/initdb/10-softadastra-demo.sh — the demo's database, made once when
# the postgres container initialises an empty data volume (the postgres
# image runs /docker-entrypoint-initdb.d/*.sh): the softadastra extension,
# the table public.items synced with strategy lww, and the peers edge-a and
# edge-b whose tokens are SA_EDGE_A_TOKEN and SA_EDGE_B_TOKEN from the
# environment (never from the image).
#
# softadastra.create_peer makes a random token; the demo's edges get theirs
# from the environment instead, so the peer's token_hash is then set to the
# SHA-256 of that token, which is how softadastra.peers stores tokens (and
# what the bridge compares).  Outside docker, use the token create_peer or
# rotate_token returns.
set -eu
: "${SA_EDGE_A_TOKEN:?SA_EDGE_A_TOKEN must be set (the token of peer edge-a)}"
: "${SA_EDGE_B_TOKEN:?SA_EDGE_B_TOKEN must be set (the token of peer edge-b)}"

psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
     --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
     -v token_a="$SA_EDGE_A_TOKEN" -v token_b="$SA_EDGE_B_TOKEN" <<'SQL'
CREATE EXTENSION softadastra;

CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2));
INSERT INTO public.items VALUES (1, 'espresso', 2.10), (2, 'croissant', 1.80);
SELECT softadastra.add_table('public.items');

-- PERFORM: the random tokens are not printed into the container's log.
DO $$
BEGIN
    PERFORM softadastra.create_peer('edge-a');
    PERFORM softadastra.create_peer('edge-b');
END
$$;
UPDATE softadastra.peers SET token_hash = sha256(convert_to(:'token_a', 'UTF8'))
 WHERE name = 'edge-a';
UPDATE softadastra.peers SET token_hash = sha256(convert_to(:'token_b', 'UTF8'))
 WHERE name = 'edge-b';
SQL
