-- 20_resolve.sql — resolving conflicts in SQL.
--
-- Part of softadastra--0.2.sql and softadastra--0.1--0.2.sql, which the
-- Makefile assembles from pgext/src/*.sql in name order.
--
-- A BEFORE UPDATE trigger on softadastra.conflicts does the work, so both
--     UPDATE softadastra.conflicts SET resolution = 'applied_remote' WHERE id = 7;
--     SELECT softadastra.resolve_conflict(7, 'take_remote');
-- resolve conflict 7.  The chosen values are written to the user's table
-- as an ordinary change, in the same transaction, so logical decoding sends
-- them to every edge.
--
-- Values in the ledger are jsonb objects column -> text form (a JSON
-- string) or JSON null; other JSON scalars, arrays and objects are taken by
-- their JSON text.  A value the ledger did not keep ({"omitted": true,
-- "length": N}) cannot be applied.  Values never become SQL text: the
-- statements are built from quoted identifiers, type names and parameter
-- numbers only, and the values travel as a text[] parameter, each cast to
-- its column's type (format_type(type, -1): no typmod, so the assignment to
-- the column applies and checks it, as for any INSERT or UPDATE).

-- The type of column col of rel, as a name to cast to, or an error.
-- writing: the column is to be written (a generated column cannot be).
-- what: which values name the column, for the error's detail.
CREATE FUNCTION conflict_column(conflict_id bigint, rel regclass, col text,
                                writing boolean, what text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ  text;
    gen  "char";
BEGIN
    SELECT format_type(a.atttypid, -1), a.attgenerated INTO typ, gen
      FROM pg_attribute a
     WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no column "%"', rel, col
            USING ERRCODE = 'undefined_column',
                  DETAIL = format('The %s of conflict %s name it.', what, conflict_id);
    END IF;
    IF writing AND gen <> '' THEN
        RAISE EXCEPTION 'cannot write generated column "%" of table %', col, rel
            USING ERRCODE = 'generated_always',
                  DETAIL = format('The %s of conflict %s name it.', what, conflict_id);
    END IF;
    RETURN typ;
END
$$;
REVOKE ALL ON FUNCTION conflict_column(bigint, regclass, text, boolean, text) FROM PUBLIC;

-- The text form of a ledger value (NULL for JSON null or a missing value),
-- or an error for a value the ledger did not keep.
CREATE FUNCTION conflict_value(conflict_id bigint, col text, v jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) = 'object' AND v -> 'omitted' = 'true'::jsonb THEN
        RAISE EXCEPTION 'the value of column "%" in conflict % was not kept and cannot be applied', col, conflict_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The value was too large for the conflict log (%s bytes).',
                                  coalesce(v ->> 'length', 'unknown')),
                  HINT = 'Resolve with merged values (softadastra.resolve_conflict(id, ''merge'', values)), or keep the local values (''keep_local'').';
    END IF;
    RETURN v #>> '{}';
END
$$;
REVOKE ALL ON FUNCTION conflict_value(bigint, text, jsonb) FROM PUBLIC;

-- The predicate "row t has this key" over the parameter $1 (the key's
-- values, in the order of pred's columns): = for primary-key columns, so
-- the primary key's index serves it; text forms otherwise (a REPLICA
-- IDENTITY FULL key can hold columns of types without equality, like json);
-- IS NULL for a null.
CREATE FUNCTION conflict_key(conflict_id bigint, rel regclass, key jsonb,
                             OUT pred text, OUT vals text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e      record;
    typ    text;
    v      text;
    is_pk  boolean;
BEGIN
    IF key IS NULL OR jsonb_typeof(key) <> 'object' OR key = '{}'::jsonb THEN
        RAISE EXCEPTION 'conflict % has no key', conflict_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Resolve it with keep_local.';
    END IF;
    pred := 'true';
    vals := '{}';
    FOR e IN SELECT j.k, j.v FROM jsonb_each(key) AS j(k, v) ORDER BY j.k LOOP
        typ := softadastra.conflict_column(conflict_id, rel, e.k, false, 'key');
        v := softadastra.conflict_value(conflict_id, e.k, e.v);
        IF v IS NULL THEN
            pred := pred || format(' AND t.%I IS NULL', e.k);
            CONTINUE;
        END IF;
        vals := array_append(vals, v);
        SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a
                                  ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                        WHERE i.indrelid = rel AND i.indisprimary AND a.attname = e.k)
          INTO is_pk;
        IF is_pk THEN
            pred := pred || format(' AND t.%I = ($1[%s])::%s', e.k, cardinality(vals), typ);
        ELSE
            pred := pred || format(' AND t.%I::text = (($1[%s])::%s)::text',
                                   e.k, cardinality(vals), typ);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION conflict_key(bigint, regclass, jsonb) FROM PUBLIC;

-- Write vals (column -> value) into the row of rel with this key: update
-- the columns whose value differs if the row exists (nothing at all if none
-- does), else insert key + vals, taking further columns from fill.
-- vals_what names vals in errors ('remote values', 'merged values').
CREATE FUNCTION conflict_write_row(conflict_id bigint, rel regclass, key jsonb,
                                   vals jsonb, fill jsonb, vals_what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k       record;
    e       record;
    typ     text;
    rows    bigint;
    setl    text[] := '{}';
    oldl    text[] := '{}';
    newl    text[] := '{}';
    cols    text[] := '{}';
    exprs   text[] := '{}';
    vv      text[] := '{}';
BEGIN
    k := softadastra.conflict_key(conflict_id, rel, key);
    EXECUTE format('SELECT count(*) FROM (SELECT FROM %s AS t WHERE %s FOR UPDATE OF t) AS s',
                   rel, k.pred)
       INTO rows USING k.vals;

    IF rows > 0 THEN
        FOR e IN SELECT j.k, j.v FROM jsonb_each(vals) AS j(k, v) ORDER BY j.k LOOP
            typ := softadastra.conflict_column(conflict_id, rel, e.k, true, vals_what);
            vv := array_append(vv, softadastra.conflict_value(conflict_id, e.k, e.v));
            setl := array_append(setl, format('%I = ($2[%s])::%s', e.k, cardinality(vv), typ));
            oldl := array_append(oldl, format('t.%I::text', e.k));
            newl := array_append(newl, format('(($2[%s])::%s)::text', cardinality(vv), typ));
        END LOOP;
        IF cardinality(vv) = 0 THEN
            RETURN;
        END IF;
        -- Rows already holding the values are left alone: no change to send.
        EXECUTE format('UPDATE %s AS t SET %s WHERE %s AND ROW(%s) IS DISTINCT FROM ROW(%s)',
                       rel, array_to_string(setl, ', '), k.pred,
                       array_to_string(oldl, ', '), array_to_string(newl, ', '))
          USING k.vals, vv;
        RETURN;
    END IF;

    -- No such row: insert it.  The chosen values win over the key's, the
    -- key's over fill's.
    FOR e IN SELECT j.k, j.v,
                    CASE WHEN vals ? j.k THEN vals_what
                         WHEN key ? j.k THEN 'key'
                         ELSE 'remote or base values' END AS what
               FROM jsonb_each(coalesce(fill, '{}') || key || coalesce(vals, '{}')) AS j(k, v)
              ORDER BY j.k LOOP
        typ := softadastra.conflict_column(conflict_id, rel, e.k, true, e.what);
        vv := array_append(vv, softadastra.conflict_value(conflict_id, e.k, e.v));
        cols := array_append(cols, format('%I', e.k));
        exprs := array_append(exprs, format('($1[%s])::%s', cardinality(vv), typ));
    END LOOP;
    EXECUTE format('INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE VALUES (%s)',
                   rel, array_to_string(cols, ', '), array_to_string(exprs, ', '))
      USING vv;
END
$$;
REVOKE ALL ON FUNCTION conflict_write_row(bigint, regclass, jsonb, jsonb, jsonb, text) FROM PUBLIC;

-- The trigger: check the resolution, mark it, write the chosen values.
CREATE FUNCTION conflicts_resolve()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed  text;
    rel      regclass;
    k        record;
    col      text;
    vals     jsonb := '{}';
BEGIN
    IF OLD.resolution <> 'open' THEN
        RAISE EXCEPTION 'conflict % is already resolved (%)', OLD.id, OLD.resolution
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT o.key INTO changed
      FROM jsonb_each(to_jsonb(OLD)) AS o
     WHERE o.key NOT IN ('resolution', 'merged', 'resolved_at', 'resolved_by')
       AND o.value IS DISTINCT FROM (to_jsonb(NEW) -> o.key)
     ORDER BY o.key
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot change column "%" of conflict %', changed, OLD.id
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A conflict records what happened; only its resolution is set.',
                  HINT = 'Set resolution (and merged), or call softadastra.resolve_conflict().';
    END IF;
    IF NEW.resolution IS NULL
       OR NEW.resolution NOT IN ('applied_remote', 'kept_local', 'merged') THEN
        RAISE EXCEPTION 'invalid resolution "%" for conflict %',
                        coalesce(NEW.resolution, 'NULL'), OLD.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Resolve with applied_remote, kept_local or merged; an open conflict cannot be reopened.';
    END IF;
    IF NEW.resolution = 'merged' THEN
        IF NEW.merged IS NULL OR jsonb_typeof(NEW.merged) <> 'object' THEN
            RAISE EXCEPTION 'resolution merged of conflict % needs the merged values', OLD.id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Set merged to a JSON object of column names and values (text or null), e.g. {"qty": "3"}.';
        END IF;
    ELSIF NEW.merged IS NOT NULL THEN
        RAISE EXCEPTION 'merged values are only for resolution merged (conflict %)', OLD.id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    NEW.resolved_at := now();
    NEW.resolved_by := coalesce(NEW.resolved_by, current_user::text);

    IF NEW.resolution = 'kept_local'
       OR (NEW.resolution = 'applied_remote' AND OLD.kind = 'delete_missing') THEN
        RETURN NEW;             -- the table keeps what it has
    END IF;

    rel := to_regclass(OLD.table_name);
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table % of conflict % no longer exists', OLD.table_name, OLD.id
            USING ERRCODE = 'undefined_table',
                  HINT = 'Resolve it with keep_local.';
    END IF;

    IF NEW.resolution = 'merged' THEN
        PERFORM softadastra.conflict_write_row(OLD.id, rel, OLD.key, NEW.merged, NULL,
                                               'merged values');
    ELSIF OLD.kind = 'delete_differ' THEN
        k := softadastra.conflict_key(OLD.id, rel, OLD.key);
        EXECUTE format('DELETE FROM %s AS t WHERE %s', rel, k.pred) USING k.vals;
    ELSE
        -- insert_exists, update_differ, update_missing: the remote values
        -- of the conflicting columns (all remote values if none is listed).
        IF OLD.remote IS NULL OR jsonb_typeof(OLD.remote) <> 'object' THEN
            RAISE EXCEPTION 'conflict % has no remote values to apply', OLD.id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Resolve it with merged values or keep_local.';
        END IF;
        FOREACH col IN ARRAY
                CASE WHEN cardinality(OLD.columns) > 0 THEN OLD.columns
                     ELSE ARRAY(SELECT jsonb_object_keys(OLD.remote)) END LOOP
            IF NOT OLD.remote ? col THEN
                RAISE EXCEPTION 'the remote values of conflict % have no column "%"', OLD.id, col
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          HINT = 'Resolve it with merged values or keep_local.';
            END IF;
            vals := vals || jsonb_build_object(col, OLD.remote -> col);
        END LOOP;
        PERFORM softadastra.conflict_write_row(OLD.id, rel, OLD.key, vals,
                                               coalesce(OLD.base, '{}') || OLD.remote,
                                               'remote values');
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION conflicts_resolve() FROM PUBLIC;

CREATE TRIGGER resolve BEFORE UPDATE ON conflicts
    FOR EACH ROW EXECUTE FUNCTION conflicts_resolve();

-- Resolve conflict id: take_remote (apply the edge's values), keep_local
-- (keep PostgreSQL's), or merge (apply the given values, a JSON object of
-- column -> text or null).  Returns the resolved conflict.
CREATE FUNCTION resolve_conflict(id bigint, choice text, merged jsonb DEFAULT NULL)
RETURNS softadastra.conflicts
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    res  text;
    r    softadastra.conflicts;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'conflict id must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF choice IS NULL THEN
        RAISE EXCEPTION 'choice must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Valid choices are take_remote, keep_local and merge.';
    END IF;
    res := CASE choice WHEN 'take_remote' THEN 'applied_remote'
                       WHEN 'keep_local'  THEN 'kept_local'
                       WHEN 'merge'       THEN 'merged' END;
    IF res IS NULL THEN
        RAISE EXCEPTION 'unknown choice "%"', choice
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Valid choices are take_remote, keep_local and merge.';
    END IF;
    IF res = 'merged' AND merged IS NULL THEN
        RAISE EXCEPTION 'choice merge needs the merged values'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass them as a JSON object of column names and values (text or null), e.g. {"qty": "3"}.';
    ELSIF res <> 'merged' AND merged IS NOT NULL THEN
        RAISE EXCEPTION 'merged values are only for choice merge'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    UPDATE softadastra.conflicts c
       SET resolution = res, merged = resolve_conflict.merged
     WHERE c.id = resolve_conflict.id
    RETURNING c.* INTO r;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conflict % does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN r;
END
$$;
REVOKE ALL ON FUNCTION resolve_conflict(bigint, text, jsonb) FROM PUBLIC;
