-- apply: softadastra.apply_ops — every conflict kind under every strategy,
-- column-disjoint merges, last-writer-wins against arrival order and plain
-- SQL, idempotent replays, gaps, epochs, rejections, the ledger's omitted
-- values, and the logical message that tags applied changes.
CREATE EXTENSION softadastra;
SET client_min_messages = warning;

-- A slot to watch the logical messages apply_ops emits.
SELECT 'ok' FROM pg_create_logical_replication_slot('apply_watch', 'test_decoding');

-- One table per strategy, the same rows in each (plain SQL writes).
CREATE FUNCTION mk(name text, strategy text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, a text, b text)', name);
    EXECUTE format($q$INSERT INTO %I VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2'),
                   (3, 'a3', 'b3'), (4, 'a4', 'b4')$q$, name);
    PERFORM softadastra.add_table(name::regclass, strategy);
END $$;
SELECT mk('t_lww_old', 'lww'), mk('t_lww_new', 'lww'), mk('t_server', 'server_wins'),
       mk('t_edge', 'edge_wins'), mk('t_manual', 'manual');
SELECT length(softadastra.create_peer('e1')) AS token_length;

-- The same six ops against each table.  hlc: 1 is older than any plain
-- write; 2^62 is newer.
CREATE FUNCTION six(tab text, hlc bigint, epoch bigint)
RETURNS TABLE (seq bigint, status text, conflict_id bigint, message text) LANGUAGE sql AS $$
    SELECT * FROM softadastra.apply_ops('e1', epoch, jsonb_build_array(
      -- 1 insert_exists: row 1 exists, a differs, b is the same
      jsonb_build_object('origin','e1','seq',1,'hlc',hlc,'kind','insert','table','public.'||tab,
        'key', '{"id":1}'::jsonb, 'cols', '{"a":"A1","b":"b1"}'::jsonb),
      -- 2 update_differ on a (the edge saw 'old'); b changes without conflict
      jsonb_build_object('origin','e1','seq',2,'hlc',hlc,'kind','update','table','public.'||tab,
        'key', '{"id":2}'::jsonb, 'cols', '{"a":"A2","b":"B2"}'::jsonb,
        'base', '{"a":"old","b":"b2"}'::jsonb),
      -- 3 update_missing
      jsonb_build_object('origin','e1','seq',3,'hlc',hlc,'kind','update','table','public.'||tab,
        'key', '{"id":99}'::jsonb, 'cols', '{"a":"A99"}'::jsonb, 'base', '{"a":"a99","b":"b99"}'::jsonb),
      -- 4 delete_differ: the edge saw b = 'old'
      jsonb_build_object('origin','e1','seq',4,'hlc',hlc,'kind','delete','table','public.'||tab,
        'key', '{"id":3}'::jsonb, 'base', '{"a":"a3","b":"old"}'::jsonb),
      -- 5 delete_missing
      jsonb_build_object('origin','e1','seq',5,'hlc',hlc,'kind','delete','table','public.'||tab,
        'key', '{"id":98}'::jsonb),
      -- 6 no conflict: the base matches
      jsonb_build_object('origin','e1','seq',6,'hlc',hlc,'kind','update','table','public.'||tab,
        'key', '{"id":4}'::jsonb, 'cols', '{"a":"A4"}'::jsonb, 'base', '{"a":"a4"}'::jsonb)))
$$;

SELECT seq, status, message FROM six('t_lww_old', 1, 1);
SELECT * FROM t_lww_old ORDER BY id;
SELECT seq, status, message FROM six('t_lww_new', 4611686018427387904, 2);
SELECT * FROM t_lww_new ORDER BY id;
SELECT seq, status, message FROM six('t_server', 1, 3);
SELECT * FROM t_server ORDER BY id;
SELECT seq, status, message FROM six('t_edge', 1, 4);
SELECT * FROM t_edge ORDER BY id;
SELECT seq, status, message FROM six('t_manual', 1, 5);
SELECT * FROM t_manual ORDER BY id;

-- The ledger: one row per conflict, exactly.
SELECT table_name, key, kind, origin, epoch, op_seq, columns, base, local, remote,
       strategy, resolution, resolved_at IS NOT NULL AS resolved, resolved_by
  FROM softadastra.conflicts ORDER BY epoch, op_seq;
SELECT * FROM softadastra.conflict_counts ORDER BY table_name, kind, resolution;
SELECT table_name, op_seq, kind FROM softadastra.open_conflicts ORDER BY id;

-- Replaying a batch changes nothing.
SELECT count(*) AS conflicts_before FROM softadastra.conflicts;
SELECT seq, status FROM six('t_edge', 1, 4);
SELECT count(*) AS conflicts_after FROM softadastra.conflicts;
SELECT * FROM t_edge ORDER BY id;
SELECT peer, epoch, applied_seq FROM softadastra.peer_progress ORDER BY epoch;

-- A gap stops the batch; nothing after it is applied.
SELECT seq, status, message FROM softadastra.apply_ops('e1', 1, '[
  {"origin":"e1","seq":7,"hlc":5,"kind":"insert","table":"public.t_lww_old","key":{"id":7},"cols":{"a":"x"}},
  {"origin":"e1","seq":9,"hlc":5,"kind":"insert","table":"public.t_lww_old","key":{"id":9},"cols":{"a":"x"}},
  {"origin":"e1","seq":10,"hlc":5,"kind":"insert","table":"public.t_lww_old","key":{"id":10},"cols":{"a":"x"}}]');
SELECT id FROM t_lww_old WHERE id >= 7 ORDER BY id;
-- A new epoch starts from seq 1.
SELECT seq, status FROM softadastra.apply_ops('e1', 100, '[
  {"origin":"e1","seq":1,"hlc":5,"kind":"insert","table":"public.t_lww_old","key":{"id":11},"cols":{"a":"epoch"}}]');
SELECT peer, epoch, applied_seq FROM softadastra.peer_progress WHERE epoch IN (1, 100) ORDER BY epoch;

-- Column-disjoint edits from two peers merge with no conflict.
SELECT length(softadastra.create_peer('e2')) AS token_length;
SELECT seq, status FROM softadastra.apply_ops('e1', 1, '[
  {"origin":"e1","seq":8,"hlc":50,"kind":"update","table":"public.t_manual","key":{"id":1},"cols":{"a":"from e1"},"base":{"a":"a1"}}]');
SELECT seq, status FROM softadastra.apply_ops('e2', 1, '[
  {"origin":"e2","seq":1,"hlc":40,"kind":"update","table":"public.t_manual","key":{"id":1},"cols":{"b":"from e2"},"base":{"b":"b1"}}]');
SELECT * FROM t_manual WHERE id = 1;

-- Last writer wins by clock, not arrival: e1 (hlc 1000) and e2 (hlc 2000)
-- change the same column from the same base, in both orders.
CREATE TABLE race (id int PRIMARY KEY, v text);
SELECT softadastra.add_table('race');
SELECT seq, status FROM softadastra.apply_ops('e1', 10, '[
  {"origin":"e1","seq":1,"hlc":10,"kind":"insert","table":"public.race","key":{"id":1},"cols":{"v":"base"}},
  {"origin":"e1","seq":2,"hlc":10,"kind":"insert","table":"public.race","key":{"id":2},"cols":{"v":"base"}},
  {"origin":"e1","seq":3,"hlc":1000,"kind":"update","table":"public.race","key":{"id":1},"cols":{"v":"e1"},"base":{"v":"base"}}]');
SELECT seq, status FROM softadastra.apply_ops('e2', 10, '[
  {"origin":"e2","seq":1,"hlc":2000,"kind":"update","table":"public.race","key":{"id":1},"cols":{"v":"e2"},"base":{"v":"base"}},
  {"origin":"e2","seq":2,"hlc":2000,"kind":"update","table":"public.race","key":{"id":2},"cols":{"v":"e2"},"base":{"v":"base"}}]');
SELECT seq, status FROM softadastra.apply_ops('e1', 10, '[
  {"origin":"e1","seq":4,"hlc":1000,"kind":"update","table":"public.race","key":{"id":2},"cols":{"v":"e1"},"base":{"v":"base"}}]');
SELECT * FROM race ORDER BY id;
SELECT key, columns, local, remote, resolution FROM softadastra.conflicts
 WHERE table_name = 'public.race' ORDER BY id;
-- Equal clocks: the larger origin wins ('e2' > 'e1').
SELECT seq, status FROM softadastra.apply_ops('e2', 10, '[
  {"origin":"e2","seq":3,"hlc":5000,"kind":"update","table":"public.race","key":{"id":1},"cols":{"v":"tie e2"},"base":{"v":"stale"}}]');
SELECT seq, status FROM softadastra.apply_ops('e1', 10, '[
  {"origin":"e1","seq":5,"hlc":5000,"kind":"update","table":"public.race","key":{"id":1},"cols":{"v":"tie e1"},"base":{"v":"stale"}}]');
SELECT * FROM race WHERE id = 1;
-- A later plain SQL write is newer than an old edge clock, older than a future one.
UPDATE race SET v = 'sql' WHERE id = 2;
SELECT seq, status FROM softadastra.apply_ops('e1', 10, '[
  {"origin":"e1","seq":6,"hlc":3000,"kind":"update","table":"public.race","key":{"id":2},"cols":{"v":"old edge"},"base":{"v":"e2"}}]');
SELECT * FROM race WHERE id = 2;
SELECT seq, status FROM softadastra.apply_ops('e1', 10, '[
  {"origin":"e1","seq":7,"hlc":4611686018427387904,"kind":"update","table":"public.race","key":{"id":2},"cols":{"v":"future edge"},"base":{"v":"e2"}}]');
SELECT * FROM race WHERE id = 2;
-- A row apply_ops deleted stays deleted for an older update, comes back for a newer one.
SELECT seq, status FROM softadastra.apply_ops('e1', 10, '[
  {"origin":"e1","seq":8,"hlc":6000,"kind":"delete","table":"public.race","key":{"id":1}},
  {"origin":"e1","seq":9,"hlc":5500,"kind":"update","table":"public.race","key":{"id":1},"cols":{"v":"older"},"base":{"v":"tie e2"}}]');
SELECT * FROM race WHERE id = 1;
SELECT seq, status FROM softadastra.apply_ops('e2', 10, '[
  {"origin":"e2","seq":4,"hlc":7000,"kind":"update","table":"public.race","key":{"id":1},"cols":{"v":"newer"},"base":{"v":"tie e2"}}]');
SELECT * FROM race WHERE id = 1;

-- Open conflicts that apply_ops recorded, resolved in SQL: the chosen values
-- land in the table as ordinary changes; a second resolution is refused.
CREATE FUNCTION conflict_of(k text) RETURNS bigint LANGUAGE sql AS
  $$ SELECT id FROM softadastra.conflicts WHERE table_name = 'public.t_manual' AND kind = k $$;
SELECT (softadastra.resolve_conflict(conflict_of('update_differ'), 'take_remote')).resolution;
UPDATE softadastra.conflicts SET resolution = 'applied_remote' WHERE id = conflict_of('update_missing');
SELECT (softadastra.resolve_conflict(conflict_of('delete_differ'), 'keep_local')).resolution;
SELECT (softadastra.resolve_conflict(conflict_of('insert_exists'), 'merge', '{"a": "merged"}')).resolution;
SELECT * FROM t_manual ORDER BY id;
SELECT kind, resolution, resolved_by = current_user AS by_me, resolved_at IS NOT NULL AS dated
  FROM softadastra.conflicts WHERE table_name = 'public.t_manual' ORDER BY op_seq;
SELECT softadastra.resolve_conflict(conflict_of('update_differ'), 'keep_local');
UPDATE softadastra.conflicts SET resolution = 'kept_local' WHERE id = conflict_of('update_missing');

-- Clocks are per column: after a newer write to a, b keeps its older clock.
CREATE TABLE cols2 (id int PRIMARY KEY, a text, b text);
SELECT softadastra.add_table('cols2');
SELECT seq, status FROM softadastra.apply_ops('e1', 30, '[
  {"origin":"e1","seq":1,"hlc":100,"kind":"insert","table":"public.cols2","key":{"id":1},"cols":{"a":"a100","b":"b100"}},
  {"origin":"e1","seq":2,"hlc":300,"kind":"update","table":"public.cols2","key":{"id":1},"cols":{"a":"a300"},"base":{"a":"a100"}}]');
SELECT seq, status FROM softadastra.apply_ops('e2', 30, '[
  {"origin":"e2","seq":1,"hlc":200,"kind":"update","table":"public.cols2","key":{"id":1},"cols":{"a":"a200","b":"b200"},"base":{"a":"x","b":"x"}}]');
SELECT * FROM cols2;
SELECT columns, resolution FROM softadastra.conflicts WHERE table_name = 'public.cols2';
SELECT key, clocks, base_hlc, base_origin, row_xmin IS NOT NULL AS live
  FROM softadastra.row_clocks WHERE relid = 'cols2'::regclass;

-- Bad input is rejected, recorded, and does not stall the ops after it.
CREATE TABLE other (id int PRIMARY KEY, n int NOT NULL CHECK (n > 0));
SELECT softadastra.add_table('other');
CREATE TABLE unsynced (id int PRIMARY KEY);
SELECT length(softadastra.create_peer('e3', ARRAY['race']::regclass[])) AS token_length;
SELECT seq, status, message FROM softadastra.apply_ops('e1', 20, '[
  {"origin":"e1","seq":1,"hlc":1,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":"x"}},
  {"origin":"e1","seq":2,"hlc":1,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":-1}},
  {"origin":"e1","seq":3,"hlc":1,"kind":"insert","table":"public.other","key":{"id":2},"cols":{"n":null}},
  {"origin":"e1","seq":4,"hlc":1,"kind":"insert","table":"public.other","key":{"id":3},"cols":{"nope":1}},
  {"origin":"e1","seq":5,"hlc":1,"kind":"insert","table":"public.unsynced","key":{"id":1},"cols":{}},
  {"origin":"e1","seq":6,"hlc":1,"kind":"insert","table":"public.missing","key":{"id":1},"cols":{}},
  {"origin":"e1","seq":7,"hlc":1,"kind":"insert","table":"other","key":{"id":1},"cols":{}},
  {"origin":"e1","seq":8,"hlc":1,"kind":"insert","table":"public.other","key":{"n":1},"cols":{}},
  {"origin":"e1","seq":9,"hlc":1,"kind":"insert","table":"public.other","key":{"id":null},"cols":{"n":1}},
  {"origin":"e1","seq":10,"hlc":1,"kind":"truncate","table":"public.other"},
  {"origin":"e1","seq":11,"hlc":1,"kind":"upsert","table":"public.other","key":{"id":1},"cols":{"n":1}},
  {"origin":"e2","seq":12,"hlc":1,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":1}},
  {"origin":"e1","seq":13,"epoch":7,"hlc":1,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":1}},
  {"origin":"e1","seq":14,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":1}},
  {"origin":"e1","seq":15,"hlc":1,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":[1]}},
  "not an op",
  {"origin":"e1","seq":16,"hlc":1,"kind":"insert","table":"public.other","key":{"id":1},"cols":{"n":5}}]');
SELECT * FROM other;
SELECT op_seq, message FROM softadastra.rejections ORDER BY id;
SELECT seq, status, message FROM softadastra.apply_ops('e3', 1, '[
  {"origin":"e3","seq":1,"hlc":1,"kind":"insert","table":"public.other","key":{"id":9},"cols":{"n":1}},
  {"origin":"e3","seq":2,"hlc":1,"kind":"insert","table":"public.race","key":{"id":9},"cols":{"v":"ok"}}]');
SELECT * FROM softadastra.apply_ops('nobody', 1, '[]');
SELECT softadastra.disable_peer('e3');
SELECT * FROM softadastra.apply_ops('e3', 1, '[]');
SELECT * FROM softadastra.apply_ops('e1', -1, '[]');
SELECT * FROM softadastra.apply_ops('e1', 1, '{"seq": 1}');

-- Large values are kept in the ledger up to softadastra.conflict_value_max.
SET softadastra.conflict_value_max = 10;
SELECT seq, status FROM softadastra.apply_ops('e1', 20, '[
  {"origin":"e1","seq":17,"hlc":1,"kind":"update","table":"public.race","key":{"id":2},"cols":{"v":"a long remote value"},"base":{"v":"short"}}]');
SELECT base, local, remote FROM softadastra.conflicts WHERE epoch = 20 AND op_seq = 17;
RESET softadastra.conflict_value_max;

-- Types: values go through each column's input function, json embedded.
CREATE TABLE typed (id uuid PRIMARY KEY, n numeric, ts timestamptz, arr int[], j jsonb, flag boolean, raw json);
SELECT softadastra.add_table('typed');
SET timezone = 'UTC';
SELECT seq, status, message FROM softadastra.apply_ops('e1', 20, '[
  {"origin":"e1","seq":18,"hlc":1,"kind":"insert","table":"public.typed","key":{"id":"00000000-0000-0000-0000-000000000001"},
   "cols":{"n":"NaN","ts":"infinity","arr":"{{1,NULL},{3,4}}","j":{"k":[1,"two",null]},"flag":true,"raw":"{\"a\" : 1}"},
   "raw":{"cols":["raw"]}},
  {"origin":"e1","seq":19,"hlc":1,"kind":"insert","table":"public.typed","key":{"id":"00000000-0000-0000-0000-000000000002"},
   "cols":{"n":123456789012345678901234567890.5,"j":"just a string","flag":false}}]');
SELECT id, n, ts, arr, j, flag, raw FROM typed ORDER BY id;

-- Each applied op is announced by a transactional logical message, and
-- each call that finished ops ends with a "final" one naming them all.
SELECT count(*) AS messages,
       count(*) FILTER (WHERE data LIKE '%"peer": "e1", "epoch": 20, "from": 18, "to": 18}') AS seq18,
       count(*) FILTER (WHERE data LIKE '%"final": true}') AS finals,
       count(*) FILTER (WHERE data LIKE '%"peer": "e1", "epoch": 20, "from": 18, "to": 19, "final": true}') AS final18
  FROM pg_logical_slot_get_changes('apply_watch', NULL, NULL)
 WHERE data LIKE 'message: transactional: 1 prefix: softadastra%';
SELECT pg_drop_replication_slot('apply_watch');

DROP EXTENSION softadastra;
