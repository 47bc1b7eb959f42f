-- resolve: resolving conflicts in SQL writes the chosen values to the table.
CREATE EXTENSION softadastra;
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text);
SELECT softadastra.add_table('items', 'manual');
INSERT INTO items VALUES (1, 'apple', 10, 'a'), (2, 'pear', 20, 'p'), (3, 'plum', 30, 'x'),
                         (4, 'fig', 40, 'f'), (5, 'kiwi', 50, 'k');
-- every write to items, as logical decoding would see it.  (Resolving runs
-- with search_path = pg_catalog, pg_temp, as PostgreSQL's own apply worker
-- runs with an empty one: a trigger on a synced table names its objects
-- with their schema.)
CREATE TABLE writes (n serial, op text, old_row text, new_row text);
CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.writes (op, old_row, new_row)
    VALUES (TG_OP, CASE WHEN TG_OP <> 'INSERT' THEN OLD::text END,
                   CASE WHEN TG_OP <> 'DELETE' THEN NEW::text END);
    RETURN NULL;
END $$;
CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON items
    FOR EACH ROW EXECUTE FUNCTION log_write();

INSERT INTO softadastra.conflicts
       (id, table_name, key, kind, origin, epoch, op_seq, op_hlc, columns, base, local, remote,
        strategy, resolution)
VALUES (1, 'public.items', '{"id": "1"}', 'insert_exists', 'till-1', 1, 1, 100, '{name,qty}',
        NULL, '{"id": "1", "name": "apple", "qty": "10", "note": "a"}',
        '{"id": "1", "name": "APPLE", "qty": "11", "note": "a"}', 'manual', 'open'),
       (2, 'public.items', '{"id": "2"}', 'update_differ', 'till-1', 1, 2, 101, '{qty}',
        '{"qty": "19"}', '{"qty": "20"}', '{"qty": "25"}', 'manual', 'open'),
       (3, 'public.items', '{"id": "6"}', 'update_missing', 'till-1', 1, 3, 102, '{name,qty}',
        '{"id": "6", "name": "mel", "qty": "6", "note": "m"}', NULL,
        '{"name": "melon", "qty": "60"}', 'manual', 'open'),
       (4, 'public.items', '{"id": "3"}', 'delete_differ', 'till-1', 1, 4, 103, '{note}',
        '{"id": "3", "name": "plum", "qty": "30", "note": "p"}', '{"note": "x"}', NULL,
        'manual', 'open'),
       (5, 'public.items', '{"id": "7"}', 'delete_missing', 'till-1', 1, 5, 104, '{}',
        '{"id": "7", "name": "gone"}', NULL, NULL, 'manual', 'open'),
       (6, 'public.items', '{"id": "4"}', 'update_differ', 'till-2', 1, 1, 105, '{qty}',
        '{"qty": "39"}', '{"qty": "40"}', '{"qty": "44"}', 'manual', 'open'),
       (7, 'public.items', '{"id": "5"}', 'update_differ', 'till-2', 1, 2, 106, '{qty,note}',
        '{"qty": "49", "note": "k"}', '{"qty": "50", "note": "k"}',
        '{"qty": "51", "note": "K"}', 'manual', 'open'),
       (8, 'public.items', '{"id": "8"}', 'update_missing', 'till-2', 1, 3, 107, '{name}',
        '{"id": "8", "name": "grap"}', NULL, '{"name": "grape"}', 'manual', 'open'),
       (9, 'public.items', '{"id": "4"}', 'delete_differ', 'till-2', 1, 4, 108, '{qty}',
        '{"id": "4", "qty": "39"}', '{"qty": "40"}', NULL, 'manual', 'open'),
       (10, 'public.items', '{"id": "2"}', 'update_differ', 'till-2', 1, 5, 109, '{note}',
        '{"note": "p"}', '{"note": "p2"}', '{"note": {"omitted": true, "length": 70000}}',
        'manual', 'open'),
       (11, 'public.items', '{"id": "1"}', 'update_differ', 'till-2', 1, 6, 110, '{name}',
        '{"name": "apple"}', '{"name": "APPLE"}', '{"name": "APPLE"}', 'manual', 'open'),
       (12, 'public.items', '{"id": "99"}', 'delete_differ', 'till-2', 1, 7, 111, '{qty}',
        '{"id": "99"}', '{"qty": "1"}', NULL, 'manual', 'open'),
       (13, 'public.items', '{"id": "5"}', 'update_differ', 'till-2', 1, 8, 112, '{qty}',
        '{"qty": "1"}', '{"qty": "2"}', '{"qty": "3"}', 'manual', 'open');
CREATE VIEW c AS
    SELECT id, kind, key, resolution, merged, resolved_at IS NOT NULL AS resolved,
           resolved_by = current_user AS by_me
      FROM softadastra.conflicts ORDER BY id;
SELECT count(*) AS open FROM softadastra.open_conflicts;

-- insert_exists, take_remote: the conflicting columns get the edge's values
SELECT id, kind, resolution, resolved_at IS NOT NULL AS resolved, resolved_by = current_user AS by_me
  FROM softadastra.resolve_conflict(1, 'take_remote');
SELECT * FROM items ORDER BY id;
-- update_differ, by UPDATE
UPDATE softadastra.conflicts SET resolution = 'applied_remote' WHERE id = 2;
SELECT * FROM items ORDER BY id;
-- update_missing, take_remote: the row comes back from key + remote + base
SELECT resolution FROM softadastra.resolve_conflict(3, 'take_remote');
SELECT * FROM items ORDER BY id;
-- delete_differ, take_remote: the row goes
SELECT resolution FROM softadastra.resolve_conflict(4, 'take_remote');
SELECT * FROM items ORDER BY id;
-- delete_missing, take_remote (by UPDATE): nothing to do
UPDATE softadastra.conflicts SET resolution = 'applied_remote' WHERE id = 5;
-- update_differ, keep_local: the table is not touched
SELECT resolution FROM softadastra.resolve_conflict(6, 'keep_local');
-- update_differ, merge: the given values
SELECT resolution, merged FROM softadastra.resolve_conflict(7, 'merge', '{"qty": "55", "note": null}');
SELECT * FROM items ORDER BY id;
-- update_missing, merged by UPDATE: the row is inserted from key + merged
UPDATE softadastra.conflicts SET resolution = 'merged', merged = '{"name": "grape", "qty": "80"}'
 WHERE id = 8;
-- delete_differ, kept_local by UPDATE, naming who resolved it
UPDATE softadastra.conflicts SET resolution = 'kept_local', resolved_by = 'alice' WHERE id = 9;
SELECT * FROM items ORDER BY id;
SELECT * FROM c WHERE id <= 9;
SELECT id, resolved_by FROM softadastra.conflicts WHERE id = 9;
-- the writes: ordinary changes, one per resolution that changed the table
SELECT n, op, old_row, new_row FROM writes ORDER BY n;

-- nothing is written when the table already holds the values, or the row
-- to delete is gone
TRUNCATE writes;
SELECT resolution FROM softadastra.resolve_conflict(11, 'take_remote');
SELECT resolution FROM softadastra.resolve_conflict(12, 'take_remote');
SELECT count(*) AS writes FROM writes;

-- a second resolution is refused, by either way
SELECT softadastra.resolve_conflict(1, 'keep_local');
UPDATE softadastra.conflicts SET resolution = 'kept_local' WHERE id = 7;
-- bad choices and values
SELECT softadastra.resolve_conflict(13, 'take_both');
SELECT softadastra.resolve_conflict(13, NULL);
SELECT softadastra.resolve_conflict(13, 'merge');
SELECT softadastra.resolve_conflict(13, 'keep_local', '{"qty": "1"}');
SELECT softadastra.resolve_conflict(13, 'merge', '{"qty": "3", "colour": "red"}');
SELECT softadastra.resolve_conflict(13, 'merge', '{"qty": "three"}');
SELECT softadastra.resolve_conflict(13, 'merge', '"qty"');
SELECT softadastra.resolve_conflict(1000, 'keep_local');
SELECT softadastra.resolve_conflict(NULL, 'keep_local');
UPDATE softadastra.conflicts SET resolution = 'merged' WHERE id = 13;
UPDATE softadastra.conflicts SET resolution = 'applied_remote', merged = '{"qty": "3"}' WHERE id = 13;
UPDATE softadastra.conflicts SET resolution = 'open' WHERE id = 13;
UPDATE softadastra.conflicts SET resolution = 'resolved' WHERE id = 13;
-- the record of what happened cannot be changed
UPDATE softadastra.conflicts SET remote = '{"qty": "1000"}' WHERE id = 13;
UPDATE softadastra.conflicts SET resolution = 'applied_remote', columns = '{qty,name}' WHERE id = 13;
UPDATE softadastra.conflicts SET detected_at = detected_at - interval '1 day' WHERE id = 13;
UPDATE softadastra.conflicts SET resolution = 'kept_local', kind = 'update_missing' WHERE id = 13;
-- a value the ledger did not keep cannot be applied; merge or keep_local can
SELECT softadastra.resolve_conflict(10, 'take_remote');
SELECT resolution, merged FROM softadastra.resolve_conflict(10, 'merge', '{"note": "short"}');
SELECT * FROM items WHERE id = 2;
-- the refused attempts left conflict 13 open and unchanged, and the table too
SELECT id, kind, columns, remote, resolution, resolved_at FROM softadastra.conflicts WHERE id = 13;
SELECT * FROM items ORDER BY id;
SELECT resolution FROM softadastra.resolve_conflict(13, 'take_remote');
SELECT * FROM items WHERE id = 5;

-- a table that is gone: only keep_local resolves
CREATE TABLE doomed (id int PRIMARY KEY, v text);
INSERT INTO softadastra.conflicts
       (id, table_name, key, kind, origin, epoch, op_seq, op_hlc, columns, base, local, remote,
        strategy, resolution)
VALUES (20, 'public.doomed', '{"id": "1"}', 'update_differ', 'till-1', 1, 9, 120, '{v}',
        '{"v": "a"}', '{"v": "b"}', '{"v": "c"}', 'manual', 'open');
DROP TABLE doomed;
SELECT softadastra.resolve_conflict(20, 'take_remote');
SELECT resolution FROM softadastra.resolve_conflict(20, 'keep_local');

-- awkward names and values: identifiers are quoted, values are parameters
CREATE SCHEMA "Sp ace";
CREATE TABLE "Sp ace"."semi;colon ""q""" ("i'd" int PRIMARY KEY, "va;l ""ue""" text, "ü" text);
SELECT softadastra.add_table('"Sp ace"."semi;colon ""q"""', 'manual');
INSERT INTO "Sp ace"."semi;colon ""q""" VALUES (1, 'one', 'eins'), (2, 'two', 'zwei');
SELECT '"Sp ace"."semi;colon ""q"""'::regclass::text AS table_name \gset
INSERT INTO softadastra.conflicts
       (id, table_name, key, kind, origin, epoch, op_seq, op_hlc, columns, base, local, remote,
        strategy, resolution)
VALUES (30, :'table_name', '{"i''d": "1"}', 'update_differ', 'till-1', 1, 10, 130,
        '{"va;l \"ue\"", ü}', '{"va;l \"ue\"": "one", "ü": "eins"}',
        '{"va;l \"ue\"": "one", "ü": "eins"}',
        jsonb_build_object('va;l "ue"', E'x''); DROP TABLE items; --', 'ü', E'back\\slash "dq" $$ ünï€ 😀'),
        'manual', 'open'),
       (31, :'table_name', '{"i''d": "3"}', 'update_missing', 'till-1', 1, 11, 131,
        '{"va;l \"ue\""}', NULL, NULL,
        jsonb_build_object('va;l "ue"', E'\'; SELECT 1; \\'), 'manual', 'open'),
       (32, :'table_name', '{"i''d": "2"}', 'update_differ', 'till-1', 1, 12, 132, '{ü}',
        NULL, NULL, '{"ü": "x"}', 'manual', 'open');
SELECT id, table_name, key FROM softadastra.conflicts WHERE id >= 30 ORDER BY id;
SELECT resolution FROM softadastra.resolve_conflict(30, 'take_remote');
SELECT resolution FROM softadastra.resolve_conflict(31, 'take_remote');
SELECT resolution FROM softadastra.resolve_conflict(32, 'merge',
           jsonb_build_object('ü', E'--\n/* */ ; \\x00 ''"', 'va;l "ue"', NULL));
SELECT * FROM "Sp ace"."semi;colon ""q""" ORDER BY 1;
SELECT "va;l ""ue""" = E'x''); DROP TABLE items; --' AS literal_1,
       "ü" = E'back\\slash "dq" $$ ünï€ 😀' AS literal_2
  FROM "Sp ace"."semi;colon ""q""" WHERE "i'd" = 1;
SELECT count(*) AS items_still_there FROM items;

-- types: each value is cast to its column's type, which checks it
CREATE TABLE typed (id bigint PRIMARY KEY, amount numeric(8,2), at timestamptz, doc jsonb,
                    raw bytea, tags text[], code char(3), total numeric
                    GENERATED ALWAYS AS (amount * 2) STORED);
INSERT INTO typed (id, amount, code) VALUES (1, 1, 'a'), (2, 2, 'b');
SELECT softadastra.add_table('typed');
INSERT INTO softadastra.conflicts
       (id, table_name, key, kind, origin, epoch, op_seq, op_hlc, columns, base, local, remote,
        strategy, resolution)
VALUES (40, 'public.typed', '{"id": "1"}', 'update_differ', 'till-1', 1, 13, 140,
        '{amount,at,doc,raw,tags,code}', NULL, NULL,
        '{"amount": "12.345", "at": "2024-01-02 03:04:05+02", "doc": "{\"a\": [1, \"x\"]}",
          "raw": "\\x00ff", "tags": "{a,\"b c\"}", "code": "ab"}', 'manual', 'open'),
       (41, 'public.typed', '{"id": "2"}', 'update_differ', 'till-1', 1, 14, 141, '{code}',
        NULL, NULL, '{"code": "abcd"}', 'manual', 'open'),
       (42, 'public.typed', '{"id": "2"}', 'update_differ', 'till-1', 1, 15, 142, '{total}',
        NULL, NULL, '{"total": "9"}', 'manual', 'open');
SELECT resolution FROM softadastra.resolve_conflict(40, 'take_remote');
SELECT id, amount, at, doc, jsonb_typeof(doc) AS doc_type, raw, tags, code, total
  FROM typed ORDER BY id;
SELECT softadastra.resolve_conflict(41, 'take_remote');
SELECT softadastra.resolve_conflict(42, 'take_remote');
SELECT softadastra.resolve_conflict(42, 'merge', '{"total": "9"}');
SELECT resolution FROM softadastra.resolve_conflict(42, 'merge', '{"amount": "4.5"}');
SELECT id, amount, total FROM typed ORDER BY id;

-- REPLICA IDENTITY FULL: the key is the whole row, json and nulls included
CREATE TABLE logbook (at text, body json, tag text);
ALTER TABLE logbook REPLICA IDENTITY FULL;
SELECT softadastra.add_table('logbook');
INSERT INTO logbook VALUES ('t1', '{"x": 1}', NULL), ('t2', '{"x": 2}', 'keep');
INSERT INTO softadastra.conflicts
       (id, table_name, key, kind, origin, epoch, op_seq, op_hlc, columns, base, local, remote,
        strategy, resolution)
VALUES (50, 'public.logbook', '{"at": "t1", "body": "{\"x\": 1}", "tag": null}', 'delete_differ',
        'till-1', 1, 16, 150, '{tag}', NULL, NULL, NULL, 'manual', 'open'),
       (51, 'public.logbook', '{"at": "t2", "body": "{\"x\": 2}", "tag": "keep"}', 'update_differ',
        'till-1', 1, 17, 151, '{tag}', NULL, NULL, '{"tag": "kept"}', 'manual', 'open');
SELECT resolution FROM softadastra.resolve_conflict(50, 'take_remote');
SELECT resolution FROM softadastra.resolve_conflict(51, 'take_remote');
SELECT * FROM logbook ORDER BY at;

SELECT resolution, count(*) FROM softadastra.conflicts GROUP BY resolution ORDER BY resolution;

DROP VIEW c;
DROP EXTENSION softadastra;
DROP PUBLICATION softadastra;
DROP TABLE items, writes, typed, logbook;
DROP FUNCTION log_write();
DROP SCHEMA "Sp ace" CASCADE;
