-- 10_manage.sql — managing synced tables and peers (edges).
--
-- Part of softadastra--0.2.sql and softadastra--0.1--0.2.sql, which the
-- Makefile assembles from pgext/src/*.sql in name order.
--
-- Every function here runs with search_path = pg_catalog, pg_temp and names
-- the extension's objects schema-qualified, so a caller's search_path cannot
-- substitute objects of its own.  Identifiers reach dynamic SQL only through
-- format('%I') or the text form of a regclass, which quotes as needed.
-- None is SECURITY DEFINER: the caller needs the privileges on the
-- extension's tables, the synced tables and the publication themselves.

-- The publication the bridge decodes: the GUC softadastra.publication when
-- set, else 'softadastra'.
CREATE FUNCTION publication_name()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting('softadastra.publication', true), ''),
                    'softadastra')
$$;
REVOKE ALL ON FUNCTION publication_name() FROM PUBLIC;

-- Refuse an unknown conflict strategy.
CREATE FUNCTION check_strategy(strategy text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF strategy IS NULL THEN
        RAISE EXCEPTION 'conflict strategy must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Valid strategies are lww, server_wins, edge_wins and manual.';
    END IF;
    IF strategy NOT IN ('lww', 'server_wins', 'edge_wins', 'manual') THEN
        RAISE EXCEPTION 'unknown conflict strategy "%"', strategy
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Valid strategies are lww, server_wins, edge_wins and manual.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION check_strategy(text) FROM PUBLIC;

-- Refuse a peer's table list naming a table that is not synced.  NULL
-- (every synced table) and an empty list (none) are fine.
CREATE FUNCTION check_peer_tables(tables regclass[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing regclass;
BEGIN
    IF tables IS NULL THEN
        RETURN;
    END IF;
    IF array_position(tables, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'the list of a peer''s tables contains a null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass NULL instead of a list to allow every synced table.';
    END IF;
    SELECT u.rel INTO missing
      FROM unnest(tables) WITH ORDINALITY AS u(rel, n)
     WHERE NOT EXISTS (SELECT 1 FROM softadastra.tables s WHERE s.relid = u.rel)
     ORDER BY u.n
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table % is not synced', missing
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Add it first with softadastra.add_table(%L).', missing::text);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION check_peer_tables(regclass[]) FROM PUBLIC;

-- Sync table t to the edges with the given conflict strategy: record it in
-- softadastra.tables (re-adding only changes the strategy) and make sure the
-- bridge's publication contains it.
CREATE FUNCTION add_table(t regclass, strategy text DEFAULT 'lww')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel      record;
    pub      text := softadastra.publication_name();
    pubrow   record;
    has_pk   boolean;
BEGIN
    IF t IS NULL THEN
        RAISE EXCEPTION 'table must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM softadastra.check_strategy(add_table.strategy);

    SELECT c.relkind, c.relpersistence, c.relreplident, n.nspname
      INTO rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with OID % does not exist', t::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'cannot sync % because it is not a table', t
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = format('%s is a %s.', t,
                                  CASE rel.relkind
                                      WHEN 'v' THEN 'view'
                                      WHEN 'm' THEN 'materialized view'
                                      WHEN 'f' THEN 'foreign table'
                                      WHEN 'S' THEN 'sequence'
                                      WHEN 'i' THEN 'index'
                                      WHEN 'I' THEN 'partitioned index'
                                      WHEN 'c' THEN 'composite type'
                                      WHEN 't' THEN 'TOAST table'
                                      ELSE 'relation of kind ' || rel.relkind::text
                                  END),
                  HINT = 'Only ordinary and partitioned tables can be synced.';
    END IF;
    IF rel.nspname = 'softadastra' THEN
        RAISE EXCEPTION 'cannot sync % because it belongs to the softadastra extension', t
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Sync only your own tables.';
    END IF;
    IF rel.relpersistence <> 'p' THEN
        RAISE EXCEPTION 'cannot sync % because it is %', t,
                        CASE rel.relpersistence WHEN 'u' THEN 'unlogged' ELSE 'temporary' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Logical decoding sees only permanent, logged tables.',
                  HINT = 'Use a permanent table (ALTER TABLE ... SET LOGGED for an unlogged one).';
    END IF;

    -- The key of every change is the primary key or, with REPLICA IDENTITY
    -- FULL, the whole row.  NOTHING sends no key at all, and USING INDEX on
    -- another index would send keys that are not the primary key's.
    SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t AND i.indisprimary)
      INTO has_pk;
    IF rel.relreplident = 'n' THEN
        RAISE EXCEPTION 'cannot sync % because its replica identity is NOTHING', t
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Updates and deletes of the table would carry no key.',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or REPLICA IDENTITY FULL.', t);
    ELSIF rel.relreplident = 'i' AND NOT EXISTS (
              SELECT 1 FROM pg_index i
               WHERE i.indrelid = t AND i.indisreplident AND i.indisprimary) THEN
        RAISE EXCEPTION 'cannot sync % because its replica identity index is not its primary key', t
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key) or REPLICA IDENTITY FULL.', t);
    ELSIF rel.relreplident <> 'f' AND NOT has_pk THEN
        RAISE EXCEPTION 'cannot sync % because it has no primary key', t
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Add a primary key to %s, or ALTER TABLE %s REPLICA IDENTITY FULL.', t, t);
    END IF;

    INSERT INTO softadastra.tables AS s (relid, strategy)
    VALUES (t, add_table.strategy)
    ON CONFLICT (relid) DO UPDATE SET strategy = EXCLUDED.strategy;

    -- The bridge knows a partitioned table by its own name, not by its
    -- partitions': publish_via_partition_root.
    SELECT p.oid, p.puballtables, p.pubviaroot INTO pubrow
      FROM pg_publication p WHERE p.pubname = pub;
    IF NOT FOUND THEN
        EXECUTE format('CREATE PUBLICATION %I FOR TABLE %s WITH (publish_via_partition_root = true)',
                       pub, t);
        RETURN;
    END IF;
    IF rel.relkind = 'p' AND NOT pubrow.pubviaroot THEN
        EXECUTE format('ALTER PUBLICATION %I SET (publish_via_partition_root = true)', pub);
    END IF;
    IF pubrow.puballtables THEN
        NULL;                   -- FOR ALL TABLES: it is in already
    ELSIF NOT EXISTS (SELECT 1 FROM pg_publication_rel pr
                       WHERE pr.prpubid = pubrow.oid AND pr.prrelid = t)
      AND NOT EXISTS (SELECT 1 FROM pg_publication_namespace pn
                       JOIN pg_class c ON c.relnamespace = pn.pnnspid
                       WHERE pn.pnpubid = pubrow.oid AND c.oid = t) THEN
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', pub, t);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION add_table(regclass, text) FROM PUBLIC;

-- Stop syncing table t: forget it and its row clocks, and take it out of
-- the publication if it was added there by name.
CREATE FUNCTION remove_table(t regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pub    text := softadastra.publication_name();
BEGIN
    DELETE FROM softadastra.tables s WHERE s.relid = t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not synced', t
            USING ERRCODE = 'undefined_object';
    END IF;
    DELETE FROM softadastra.row_clocks rc WHERE rc.relid = t::oid;
    IF EXISTS (SELECT 1 FROM pg_publication p
                 JOIN pg_publication_rel pr ON pr.prpubid = p.oid
                WHERE p.pubname = pub AND pr.prrelid = t) THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', pub, t);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION remove_table(regclass) FROM PUBLIC;

-- Change the conflict strategy of a synced table.
CREATE FUNCTION set_strategy(t regclass, strategy text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM softadastra.check_strategy(set_strategy.strategy);
    UPDATE softadastra.tables s SET strategy = set_strategy.strategy WHERE s.relid = t;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not synced', t
            USING ERRCODE = 'undefined_object',
                  HINT = 'Add it with softadastra.add_table().';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION set_strategy(regclass, text) FROM PUBLIC;

-- Create a peer (an edge) and return its bearer token.  The token is shown
-- this once: only its SHA-256 is stored.  tables NULL: every synced table.
CREATE FUNCTION create_peer(name text, tables regclass[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token      text;
    constr     text;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'peer name must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM softadastra.check_peer_tables(create_peer.tables);
    token := softadastra.new_token();
    BEGIN
        INSERT INTO softadastra.peers (name, token_hash, tables)
        VALUES (create_peer.name, sha256(convert_to(token, 'UTF8')), create_peer.tables);
    EXCEPTION
        WHEN unique_violation THEN
            RAISE EXCEPTION 'peer "%" already exists', create_peer.name
                USING ERRCODE = 'duplicate_object',
                      HINT = 'Use softadastra.rotate_token() for a new token.';
        WHEN check_violation THEN
            GET STACKED DIAGNOSTICS constr = CONSTRAINT_NAME;
            IF constr = 'peers_name_check' THEN
                RAISE EXCEPTION 'invalid peer name "%"', create_peer.name
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'A peer name is 1 to 63 characters: ASCII letters, digits, "_", "." and "-", starting with a letter or digit; "pg" is reserved for the central database.';
            END IF;
            RAISE;
    END;
    RETURN token;
END
$$;
REVOKE ALL ON FUNCTION create_peer(text, regclass[]) FROM PUBLIC;

-- Raise the error for an unknown peer.
CREATE FUNCTION unknown_peer(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'peer "%" does not exist', name
        USING ERRCODE = 'undefined_object',
              HINT = 'Create it with softadastra.create_peer().';
END
$$;
REVOKE ALL ON FUNCTION unknown_peer(text) FROM PUBLIC;

-- Give a peer a new token (returned, shown once); the old one stops working.
CREATE FUNCTION rotate_token(name text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    token text := softadastra.new_token();
BEGIN
    UPDATE softadastra.peers p SET token_hash = sha256(convert_to(token, 'UTF8'))
     WHERE p.name = rotate_token.name;
    IF NOT FOUND THEN
        PERFORM softadastra.unknown_peer(rotate_token.name);
    END IF;
    RETURN token;
END
$$;
REVOKE ALL ON FUNCTION rotate_token(text) FROM PUBLIC;

-- A disabled peer's token is refused; its data and progress are kept.
CREATE FUNCTION disable_peer(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE softadastra.peers p SET disabled = true WHERE p.name = disable_peer.name;
    IF NOT FOUND THEN
        PERFORM softadastra.unknown_peer(disable_peer.name);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION disable_peer(text) FROM PUBLIC;

CREATE FUNCTION enable_peer(name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE softadastra.peers p SET disabled = false WHERE p.name = enable_peer.name;
    IF NOT FOUND THEN
        PERFORM softadastra.unknown_peer(enable_peer.name);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION enable_peer(text) FROM PUBLIC;

-- Set which synced tables a peer sees (NULL: all of them).
CREATE FUNCTION set_peer_tables(name text, tables regclass[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM softadastra.peers p WHERE p.name = set_peer_tables.name) THEN
        PERFORM softadastra.unknown_peer(set_peer_tables.name);
    END IF;
    PERFORM softadastra.check_peer_tables(set_peer_tables.tables);
    UPDATE softadastra.peers p SET tables = set_peer_tables.tables
     WHERE p.name = set_peer_tables.name;
END
$$;
REVOKE ALL ON FUNCTION set_peer_tables(text, regclass[]) FROM PUBLIC;

-- The bridge records what a peer acknowledged of the down path, and when it
-- last heard from it.  acked_seq never moves back (NULL leaves it as is).
CREATE FUNCTION note_peer(peer text, epoch bigint, acked_seq bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF peer IS NULL OR NOT EXISTS (SELECT 1 FROM softadastra.peers p
                                    WHERE p.name = note_peer.peer) THEN
        PERFORM softadastra.unknown_peer(note_peer.peer);
    END IF;
    IF epoch IS NULL OR epoch < 0 THEN
        RAISE EXCEPTION 'invalid epoch % for peer "%"', coalesce(epoch::text, 'NULL'), peer
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'An epoch is a non-negative number.';
    END IF;
    IF acked_seq < 0 THEN
        RAISE EXCEPTION 'invalid acked seq % for peer "%"', acked_seq, peer
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A seq is a non-negative number.';
    END IF;
    INSERT INTO softadastra.peer_progress AS pp (peer, epoch, acked_seq, last_contact)
    VALUES (note_peer.peer, note_peer.epoch, note_peer.acked_seq, now())
    ON CONFLICT ON CONSTRAINT peer_progress_pkey DO UPDATE
       SET acked_seq = GREATEST(pp.acked_seq, EXCLUDED.acked_seq),
           last_contact = GREATEST(pp.last_contact, EXCLUDED.last_contact);
END
$$;
REVOKE ALL ON FUNCTION note_peer(text, bigint, bigint) FROM PUBLIC;

-- Per peer: its latest epoch's progress and its open conflicts.
CREATE VIEW peer_status AS
    SELECT p.name, p.disabled, p.created_at, p.tables,
           pp.epoch, pp.applied_seq, pp.applied_at, pp.acked_seq, pp.last_contact,
           (SELECT count(*) FROM softadastra.conflicts c
             WHERE c.origin = p.name AND c.resolution = 'open') AS open_conflicts
      FROM softadastra.peers p
      LEFT JOIN LATERAL (SELECT x.epoch, x.applied_seq, x.applied_at, x.acked_seq, x.last_contact
                           FROM softadastra.peer_progress x
                          WHERE x.peer = p.name
                          ORDER BY x.epoch DESC
                          LIMIT 1) pp ON true;
COMMENT ON VIEW peer_status IS 'Per peer: its latest epoch''s applied and acked positions, last contact and open conflicts';
REVOKE ALL ON peer_status FROM PUBLIC;
