-- upgrade: 0.1 upgraded to 0.2 defines exactly what a fresh 0.2 install does.
CREATE EXTENSION softadastra VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'softadastra';
ALTER EXTENSION softadastra UPDATE TO '0.2';
SELECT extversion FROM pg_extension WHERE extname = 'softadastra';
CREATE TEMP TABLE upgraded_objs AS
  SELECT pg_describe_object(classid, objid, objsubid) AS obj
    FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'softadastra');
CREATE TEMP TABLE upgraded_cols AS
  SELECT table_name, column_name, data_type, column_default, is_nullable
    FROM information_schema.columns WHERE table_schema = 'softadastra';
DROP EXTENSION softadastra;
CREATE EXTENSION softadastra;
CREATE TEMP TABLE fresh_objs AS
  SELECT pg_describe_object(classid, objid, objsubid) AS obj
    FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'softadastra');
CREATE TEMP TABLE fresh_cols AS
  SELECT table_name, column_name, data_type, column_default, is_nullable
    FROM information_schema.columns WHERE table_schema = 'softadastra';
-- nothing on one side only
(SELECT 'only upgraded' AS side, obj FROM upgraded_objs EXCEPT SELECT 'only upgraded', obj FROM fresh_objs)
UNION ALL
(SELECT 'only fresh', obj FROM fresh_objs EXCEPT SELECT 'only fresh', obj FROM upgraded_objs);
(SELECT 'only upgraded' AS side, * FROM upgraded_cols EXCEPT SELECT 'only upgraded', * FROM fresh_cols)
UNION ALL
(SELECT 'only fresh', * FROM fresh_cols EXCEPT SELECT 'only fresh', * FROM upgraded_cols);
-- and both have the 0.2 objects
SELECT obj FROM fresh_objs WHERE obj LIKE 'table %' OR obj LIKE 'view %' ORDER BY obj;
SELECT count(*) > 20 AS many_objects FROM fresh_objs;
DROP EXTENSION softadastra;
