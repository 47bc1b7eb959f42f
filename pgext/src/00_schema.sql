-- 00_schema.sql — the tables of schema softadastra (what a DBA queries).
--
-- Part of softadastra--0.2.sql and softadastra--0.1--0.2.sql, which the
-- Makefile assembles from pgext/src/*.sql in name order.

-- Synced tables and their conflict strategy.
CREATE TABLE tables (
    relid      regclass    PRIMARY KEY,
    strategy   text        NOT NULL DEFAULT 'lww'
               CHECK (strategy IN ('lww', 'server_wins', 'edge_wins', 'manual')),
    added_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tables IS 'Tables synced to edges, with their conflict strategy';

-- Edges allowed to sync.  The token itself is never stored: token_hash is
-- its SHA-256, and check_token compares in constant time.
CREATE TABLE peers (
    name        text        PRIMARY KEY
                CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' AND name <> 'pg'),
    token_hash  bytea       NOT NULL CHECK (length(token_hash) = 32),
    tables      regclass[],          -- NULL: every synced table
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled    boolean     NOT NULL DEFAULT false
);
COMMENT ON TABLE peers IS 'Edges allowed to sync (tokens stored as SHA-256 only)';

-- Per peer and epoch: the highest op seq applied (apply_ops' watermark,
-- advanced in the same transaction as the op's effect), and what the
-- bridge last saw of the peer on the down path.
CREATE TABLE peer_progress (
    peer          text        NOT NULL REFERENCES peers (name) ON DELETE CASCADE,
    epoch         bigint      NOT NULL CHECK (epoch >= 0),
    applied_seq   bigint      NOT NULL DEFAULT 0 CHECK (applied_seq >= 0),
    applied_at    timestamptz,
    acked_seq     bigint,              -- bridge WAL seq the edge has acknowledged
    last_contact  timestamptz,
    PRIMARY KEY (peer, epoch)
);
COMMENT ON TABLE peer_progress IS 'Per peer and epoch: applied watermark, acked position, last contact';

-- The conflict ledger.  Values are jsonb objects column -> text form (or
-- null); a value longer than softadastra.conflict_value_max bytes is kept as
-- {"omitted": true, "length": N}.
CREATE TABLE conflicts (
    id           bigserial   PRIMARY KEY,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    table_name   text        NOT NULL,   -- schema-qualified, quoted as needed
    key          jsonb       NOT NULL,
    kind         text        NOT NULL
                 CHECK (kind IN ('insert_exists', 'update_differ', 'update_missing',
                                 'delete_differ', 'delete_missing')),
    origin       text        NOT NULL,   -- the peer whose op conflicted
    epoch        bigint      NOT NULL,
    op_seq       bigint      NOT NULL,
    op_hlc       bigint      NOT NULL,
    columns      text[]      NOT NULL DEFAULT '{}',
    base         jsonb,                  -- what the edge saw
    local        jsonb,                  -- what PostgreSQL had
    remote       jsonb,                  -- what the edge wrote
    merged       jsonb,                  -- the values a 'merged' resolution chose
    strategy     text        NOT NULL,
    resolution   text        NOT NULL
                 CHECK (resolution IN ('applied_remote', 'kept_local', 'merged', 'open')),
    resolved_at  timestamptz,
    resolved_by  text,
    CHECK ((resolution = 'open') = (resolved_at IS NULL))
);
CREATE INDEX conflicts_open ON conflicts (table_name) WHERE resolution = 'open';
COMMENT ON TABLE conflicts IS 'Every conflict apply_ops detected, and how it was resolved';

CREATE VIEW open_conflicts AS
    SELECT * FROM conflicts WHERE resolution = 'open' ORDER BY id;

CREATE VIEW conflict_counts AS
    SELECT table_name, kind, resolution, count(*) AS conflicts
      FROM conflicts GROUP BY table_name, kind, resolution;

-- Ops refused for bad input, quarantined so the ops after them still apply.
CREATE TABLE rejections (
    id           bigserial   PRIMARY KEY,
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    peer         text        NOT NULL,
    epoch        bigint      NOT NULL,
    op_seq       bigint,
    op           jsonb,
    message      text        NOT NULL
);
COMMENT ON TABLE rejections IS 'Ops apply_ops refused (bad input), with the reason';

-- Per-column clocks of rows written by apply_ops on lww tables, so
-- last-writer-wins compares writer clocks exactly, whatever the arrival
-- order.  row_xmin is the row version apply_ops wrote: while the row's
-- xmin is still that, a column's clock is clocks->column ([hlc, origin]),
-- or (base_hlc, base_origin) for columns apply_ops did not write.  When
-- the row's xmin differs, plain SQL wrote the row since, and every column's
-- clock is that transaction's commit timestamp (track_commit_timestamp).
-- row_xmin NULL: apply_ops deleted the row at (base_hlc, base_origin).
CREATE TABLE row_clocks (
    relid        oid    NOT NULL,
    key          text   COLLATE "C" NOT NULL,  -- {"col": "text", ...} in attnum order
    row_xmin     xid,
    clocks       jsonb  NOT NULL DEFAULT '{}',
    base_hlc     bigint NOT NULL DEFAULT 0,
    base_origin  text   NOT NULL DEFAULT 'pg',
    PRIMARY KEY (relid, key)
) WITH (fillfactor = 70);   -- room for HOT updates: apply rewrites entries in place

-- Nobody but the owner changes sync metadata by accident.
REVOKE ALL ON tables, peers, peer_progress, conflicts, rejections, row_clocks FROM PUBLIC;

-- pg_dump keeps the sync configuration and history (extension tables are
-- otherwise left out of dumps).
SELECT pg_catalog.pg_extension_config_dump('tables', '');
SELECT pg_catalog.pg_extension_config_dump('peers', '');
SELECT pg_catalog.pg_extension_config_dump('peer_progress', '');
SELECT pg_catalog.pg_extension_config_dump('conflicts', '');
SELECT pg_catalog.pg_extension_config_dump('conflicts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('rejections', '');
SELECT pg_catalog.pg_extension_config_dump('rejections_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('row_clocks', '');

-- peer_status counts open conflicts per origin.
CREATE INDEX conflicts_open_origin ON conflicts (origin) WHERE resolution = 'open';
