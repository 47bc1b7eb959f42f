-- manage: synced tables, the publication, peers and their tokens.
CREATE EXTENSION softadastra;
\set SHOW_CONTEXT never

CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
CREATE TABLE events (at timestamptz, what text);
ALTER TABLE events REPLICA IDENTITY FULL;
CREATE TABLE nokey (a int, b text);
CREATE TABLE nothing (id int PRIMARY KEY, v text);
ALTER TABLE nothing REPLICA IDENTITY NOTHING;
CREATE TABLE byindex (id int PRIMARY KEY, code text NOT NULL UNIQUE);
ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_code_key;
CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
CREATE VIEW items_view AS SELECT * FROM items;
CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000);

-- a primary key, REPLICA IDENTITY FULL, a partitioned table: accepted
SELECT softadastra.add_table('items');
SELECT softadastra.add_table('events', 'server_wins');
SELECT softadastra.add_table('parted', 'manual');
-- refused, each naming the table
SELECT softadastra.add_table('nokey');
SELECT softadastra.add_table('nothing');
SELECT softadastra.add_table('byindex');
SELECT softadastra.add_table('scratch');
SELECT softadastra.add_table('items_view');
SELECT softadastra.add_table('softadastra.peers');
SELECT softadastra.add_table('items', 'newest');
SELECT softadastra.add_table('items', NULL);
SELECT softadastra.add_table(NULL);

SELECT relid, strategy FROM softadastra.tables ORDER BY relid::text;
SELECT pubname, schemaname, tablename FROM pg_publication_tables
 ORDER BY pubname, schemaname, tablename;
SELECT pubname, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot
  FROM pg_publication;

-- re-adding is idempotent and changes the strategy
SELECT softadastra.add_table('items', 'edge_wins');
SELECT relid, strategy FROM softadastra.tables ORDER BY relid::text;
SELECT count(*) FROM pg_publication_rel WHERE prrelid = 'items'::regclass;

-- set_strategy
SELECT softadastra.set_strategy('items', 'lww');
SELECT softadastra.set_strategy('items', 'bogus');
SELECT softadastra.set_strategy('nokey', 'lww');
SELECT relid, strategy FROM softadastra.tables ORDER BY relid::text;

-- remove_table: out of the tables, the publication and row_clocks
INSERT INTO softadastra.row_clocks (relid, key, row_xmin)
VALUES ('events'::regclass, '{"at": "x"}', NULL), ('items'::regclass, '{"id": "1"}', NULL);
SELECT softadastra.remove_table('events');
SELECT softadastra.remove_table('events');
SELECT relid, strategy FROM softadastra.tables ORDER BY relid::text;
SELECT pubname, schemaname, tablename FROM pg_publication_tables
 ORDER BY pubname, schemaname, tablename;
SELECT relid::regclass FROM softadastra.row_clocks;
-- and it can come back
SELECT softadastra.add_table('events');
SELECT tablename FROM pg_publication_tables WHERE pubname = 'softadastra' ORDER BY 1;

-- names that need quoting go through as identifiers, never as SQL
CREATE SCHEMA "Sch ema";
CREATE TABLE "Sch ema"."we""ird ta;ble ü" (id int PRIMARY KEY, "v a;l" text);
SELECT softadastra.add_table('"Sch ema"."we""ird ta;ble ü"');
SELECT relid, strategy FROM softadastra.tables WHERE relid = '"Sch ema"."we""ird ta;ble ü"'::regclass;
SELECT schemaname, tablename FROM pg_publication_tables
 WHERE pubname = 'softadastra' AND schemaname = 'Sch ema';
-- the publication name comes from softadastra.publication, quoted too
SET softadastra.publication = 'my pub"; DROP TABLE items; --';
SELECT softadastra.add_table('"Sch ema"."we""ird ta;ble ü"', 'manual');
SELECT pubname, schemaname, tablename FROM pg_publication_tables
 WHERE schemaname = 'Sch ema' ORDER BY pubname;
SELECT softadastra.remove_table('"Sch ema"."we""ird ta;ble ü"');
SELECT pubname, schemaname, tablename FROM pg_publication_tables
 WHERE schemaname = 'Sch ema' ORDER BY pubname;
RESET softadastra.publication;
SELECT count(*) FROM items;

-- an existing publication is extended, and learns to publish a partitioned
-- table under the table's own name
CREATE PUBLICATION sa_existing FOR TABLE nokey;
SET softadastra.publication = sa_existing;
SELECT softadastra.add_table('parted', 'manual');
SELECT pubname, pubviaroot FROM pg_publication WHERE pubname = 'sa_existing';
SELECT tablename FROM pg_publication_tables WHERE pubname = 'sa_existing' ORDER BY 1;
RESET softadastra.publication;

-- peers: the token is shown once, 43 characters; only its SHA-256 is kept
SELECT softadastra.create_peer('till-1') AS token \gset
SELECT length(:'token') AS token_length;
SELECT name, length(token_hash) AS hash_length,
       token_hash <> convert_to(:'token', 'UTF8') AS hash_is_not_token,
       token_hash = sha256(convert_to(:'token', 'UTF8')) AS hash_is_sha256,
       tables, disabled
  FROM softadastra.peers;
SELECT softadastra.check_token('till-1', :'token') AS right_token;
SELECT softadastra.check_token('till-1', 'x' || :'token') AS wrong_token;
SELECT softadastra.check_token('till-2', :'token') AS unknown_peer;
SELECT softadastra.disable_peer('till-1');
SELECT softadastra.check_token('till-1', :'token') AS disabled_peer;
SELECT softadastra.enable_peer('till-1');
SELECT softadastra.check_token('till-1', :'token') AS enabled_again;

-- two peers never get the same token
SELECT softadastra.create_peer('till-2', ARRAY['items', 'parted']::regclass[]) AS token2 \gset
SELECT :'token' <> :'token2' AS tokens_differ, length(:'token2') AS token_length;
SELECT name, tables FROM softadastra.peers ORDER BY name;

-- duplicates, bad names, unsynced tables
SELECT softadastra.create_peer('till-1');
SELECT softadastra.create_peer('');
SELECT softadastra.create_peer('pg');
SELECT softadastra.create_peer('till 3');
SELECT softadastra.create_peer('till''3');
SELECT softadastra.create_peer('-till');
SELECT softadastra.create_peer(repeat('a', 64));
SELECT softadastra.create_peer(NULL);
SELECT softadastra.create_peer('till-3', ARRAY['items', 'nokey']::regclass[]);
SELECT softadastra.create_peer('till-3', ARRAY['items', NULL]::regclass[]);
SELECT length(softadastra.create_peer(repeat('a', 63))) AS longest_name_ok;
SELECT name FROM softadastra.peers ORDER BY name;

-- rotate_token: a new hash, the old token stops working
CREATE TEMP TABLE old_hash AS SELECT token_hash FROM softadastra.peers WHERE name = 'till-1';
SELECT softadastra.rotate_token('till-1') AS token3 \gset
SELECT length(:'token3') AS token_length, :'token3' <> :'token' AS token_changed;
SELECT p.token_hash <> o.token_hash AS hash_changed,
       p.token_hash = sha256(convert_to(:'token3', 'UTF8')) AS hash_is_sha256
  FROM softadastra.peers p, old_hash o WHERE p.name = 'till-1';
SELECT softadastra.check_token('till-1', :'token') AS old_token,
       softadastra.check_token('till-1', :'token3') AS new_token;
SELECT softadastra.rotate_token('nobody');
SELECT softadastra.disable_peer('nobody');
SELECT softadastra.enable_peer('nobody');

-- set_peer_tables
SELECT softadastra.set_peer_tables('till-1', ARRAY['events']::regclass[]);
SELECT softadastra.set_peer_tables('till-1', ARRAY['nokey']::regclass[]);
SELECT softadastra.set_peer_tables('nobody', NULL);
SELECT name, tables FROM softadastra.peers WHERE name LIKE 'till%' ORDER BY name;
SELECT softadastra.set_peer_tables('till-1', NULL);
SELECT name, tables FROM softadastra.peers WHERE name = 'till-1';

-- note_peer: acked_seq only moves forward; last_contact is set
SELECT softadastra.note_peer('till-1', 1, 10);
SELECT softadastra.note_peer('till-1', 1, 7);
SELECT peer, epoch, applied_seq, acked_seq, last_contact IS NOT NULL AS contacted
  FROM softadastra.peer_progress ORDER BY peer, epoch;
SELECT softadastra.note_peer('till-1', 1, 12);
SELECT softadastra.note_peer('till-1', 1, NULL);
SELECT peer, epoch, acked_seq FROM softadastra.peer_progress ORDER BY peer, epoch;
SELECT softadastra.note_peer('nobody', 1, 1);
SELECT softadastra.note_peer('till-1', -1, 1);
SELECT softadastra.note_peer('till-1', 1, -1);

-- peer_status: the latest epoch of each peer, and its open conflicts
UPDATE softadastra.peer_progress SET applied_seq = 5, applied_at = now()
 WHERE peer = 'till-1' AND epoch = 1;
SELECT softadastra.note_peer('till-1', 2, 3);
INSERT INTO softadastra.conflicts (table_name, key, kind, origin, epoch, op_seq, op_hlc,
                                   strategy, resolution, resolved_at)
VALUES ('public.items', '{"id": "1"}', 'update_differ', 'till-1', 1, 4, 1, 'manual', 'open', NULL),
       ('public.items', '{"id": "2"}', 'update_differ', 'till-1', 1, 5, 2, 'manual', 'open', NULL),
       ('public.items', '{"id": "3"}', 'update_differ', 'till-1', 1, 6, 3, 'lww', 'applied_remote', now()),
       ('public.items', '{"id": "4"}', 'update_differ', 'till-2', 1, 6, 3, 'manual', 'open', NULL);
SELECT name, disabled, created_at IS NOT NULL AS has_created_at, epoch, applied_seq, acked_seq,
       last_contact IS NOT NULL AS contacted, open_conflicts
  FROM softadastra.peer_status ORDER BY name;
SELECT softadastra.disable_peer('till-2');
SELECT name, disabled, epoch, open_conflicts FROM softadastra.peer_status WHERE name = 'till-2';

-- nobody else may call the functions or read the tables
CREATE ROLE sa_manage_nobody;
GRANT USAGE ON SCHEMA softadastra TO sa_manage_nobody;
SET ROLE sa_manage_nobody;
SELECT softadastra.add_table('items');
SELECT softadastra.create_peer('sneaky');
SELECT * FROM softadastra.peer_status;
SELECT * FROM softadastra.peers;
SELECT softadastra.resolve_conflict(1, 'keep_local');
UPDATE softadastra.conflicts SET resolution = 'kept_local';
RESET ROLE;
REVOKE USAGE ON SCHEMA softadastra FROM sa_manage_nobody;
DROP ROLE sa_manage_nobody;

-- a search_path planting its own objects changes nothing
CREATE SCHEMA evil;
CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\x00'::bytea $$;
CREATE TABLE evil.peers (name text, token_hash bytea, tables regclass[]);
SET search_path = evil, pg_catalog, public;
SELECT length(softadastra.create_peer('till-9')) AS token_length;
SELECT length(token_hash) AS hash_length FROM softadastra.peers WHERE name = 'till-9';
SELECT count(*) AS planted_rows FROM evil.peers;
RESET search_path;
DROP SCHEMA evil CASCADE;

DROP EXTENSION softadastra;
SELECT count(*) AS publications_left FROM pg_publication WHERE pubname = 'softadastra';
DROP PUBLICATION softadastra;
DROP PUBLICATION sa_existing;
DROP PUBLICATION "my pub""; DROP TABLE items; --";
DROP TABLE items, events, nokey, nothing, byindex, scratch, parted CASCADE;
DROP SCHEMA "Sch ema" CASCADE;
