-- Upgrading keeps the data: backstop 0.1.0 (created from the SQL it shipped with,
-- sql/released/backstop--0.1.0.sql) is filled the way a DBA's would be (a guided restore, a
-- schedule, job history, an operator's grant), then ALTER EXTENSION backstop UPDATE moves it
-- through 0.2.0 to 0.3.0. Every row and grant is still there, the new functions carry backstop's
-- privileges, and the upgraded catalog is exactly a fresh install's.
SET client_min_messages = error;
CREATE EXTENSION backstop VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'backstop';
SELECT count(*) AS logical_functions_in_0_1_0 FROM pg_proc WHERE pronamespace = 'backstop'::regnamespace AND proname LIKE 'logical%';

-- A DBA's 0.1.0: a table recovered from a snapshot and validated, a schedule, runs, an operator.
CREATE TABLE orders (id int PRIMARY KEY, customer text);
INSERT INTO orders SELECT g, 'c' || g FROM generate_series(1, 500) g;
SELECT backstop.snapshot_table('orders') ~ '^snap_' AS snapshot_taken;
DELETE FROM orders WHERE id > 400;
SELECT backstop.restore_table('orders') AS rows_restored;
SELECT bool_and(passed) AS validated FROM backstop.restore_validate('orders_recovered');
-- 02:00 in Berlin (03:00 on the spring-forward day, when 02:00 does not exist), within a day.
SELECT name, to_char(next_run_at AT TIME ZONE 'Europe/Berlin', 'HH24:MI') IN ('02:00', '03:00') AS at_two_in_berlin,
       next_run_at > now() AND next_run_at <= now() + interval '25 hours' AS next_run_within_a_day
  FROM backstop.schedule('nightly-orders', '0 2 * * *', 'snapshot', '{"tables": ["public.orders"]}', time_zone => 'Europe/Berlin');
SELECT state FROM backstop.run_job('expire', '{"dry_run": true, "snapshots": {"keep_last": 3}}');
SELECT state FROM backstop.run_job('snapshot', '{"tables": ["public.orders"]}');
CREATE ROLE upgrade_operator LOGIN IN ROLE backstop_admin;
GRANT SELECT ON orders, orders_recovered TO upgrade_operator;

-- What must survive, fingerprinted: every row of the three tables, and every privilege on
-- backstop's schema, functions, tables and sequences.
SELECT (SELECT md5(string_agg(r::text, ',' ORDER BY r.restored_at)) FROM backstop.restores r) AS restores_md5,
       (SELECT count(*) FROM backstop.restores) AS restores_rows,
       (SELECT md5(string_agg(j::text, ',' ORDER BY j.job_id)) FROM backstop.job_runs j) AS job_runs_md5,
       (SELECT count(*) FROM backstop.job_runs) AS job_runs_rows,
       (SELECT md5(string_agg(s::text, ',' ORDER BY s.name)) FROM backstop.schedules s) AS schedules_md5,
       (SELECT md5(string_agg(p.oid::regprocedure::text || coalesce(p.proacl::text, '-'), ',' ORDER BY p.oid::regprocedure::text))
          FROM pg_proc p WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname <> 'recover') AS function_acl_md5, -- recover() takes new arguments in 0.3.0: its grants are checked below
       (SELECT md5(string_agg(c.relname || coalesce(c.relacl::text, '-'), ',' ORDER BY c.relname))
          FROM pg_class c WHERE c.relnamespace = 'backstop'::regnamespace) AS relation_acl_md5,
       (SELECT nspacl::text FROM pg_namespace WHERE nspname = 'backstop') AS schema_acl
\gset
SELECT :restores_rows AS restores_rows, :job_runs_rows AS job_runs_rows;

ALTER EXTENSION backstop UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'backstop';

-- Every row is intact.
SELECT (SELECT md5(string_agg(r::text, ',' ORDER BY r.restored_at)) FROM backstop.restores r) = :'restores_md5' AS restores_intact,
       (SELECT md5(string_agg(j::text, ',' ORDER BY j.job_id)) FROM backstop.job_runs j) = :'job_runs_md5' AS job_runs_intact,
       (SELECT md5(string_agg(s::text, ',' ORDER BY s.name)) FROM backstop.schedules s) = :'schedules_md5' AS schedules_intact;
-- Every 0.1.0 privilege is intact; the new functions have backstop's: none for PUBLIC, EXECUTE for
-- backstop_admin.
SELECT (SELECT md5(string_agg(p.oid::regprocedure::text || coalesce(p.proacl::text, '-'), ',' ORDER BY p.oid::regprocedure::text))
          FROM pg_proc p WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname NOT IN ('logical_backup', 'logical_backups', 'repository_key', 'adopt_repository', 'table_history', 'recover')) = :'function_acl_md5' AS function_grants_intact,
       (SELECT md5(string_agg(c.relname || coalesce(c.relacl::text, '-'), ',' ORDER BY c.relname))
          FROM pg_class c WHERE c.relnamespace = 'backstop'::regnamespace) = :'relation_acl_md5' AS table_grants_intact,
       (SELECT nspacl::text FROM pg_namespace WHERE nspname = 'backstop') = :'schema_acl' AS schema_grants_intact;
SELECT p.oid::regprocedure AS new_function, has_function_privilege('upgrade_operator', p.oid, 'EXECUTE') AS operator_may,
       EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS public_may
  FROM pg_proc p WHERE p.pronamespace = 'backstop'::regnamespace AND p.proname IN ('logical_backup', 'logical_backups', 'repository_key', 'adopt_repository', 'table_history', 'recover') ORDER BY 1;
-- The upgraded data still works: the validated restore still gates its copy-back plan, the
-- schedule still fires at local time, and the new functions run.
SELECT count(*) > 0 AS copyback_plan_available FROM backstop.copyback_plan('orders_recovered');
SELECT name, job, time_zone FROM backstop.schedules;
SELECT state, rows FROM backstop.logical_backup();
SELECT backstop.repository_key() ~ '^ed25519:[0-9a-f]{64}$' AS has_a_public_key;
SELECT adopted, refused FROM backstop.adopt_repository();

-- The upgraded catalog is exactly what CREATE EXTENSION makes for this version: every function (arguments,
-- result, volatility, symbol, privileges), every relation (columns, defaults, constraints,
-- indexes, views, privileges) and every member of the extension.
\i pg_test/lib/catalog_fingerprint.sql
SELECT * FROM catalog_fingerprint \gset upgraded_
CREATE DATABASE fresh_install;
\c fresh_install
SET client_min_messages = error;
CREATE EXTENSION backstop;
SELECT extversion FROM pg_extension WHERE extname = 'backstop';
\i pg_test/lib/catalog_fingerprint.sql
SELECT functions = :'upgraded_functions' AS same_functions, relations = :'upgraded_relations' AS same_relations,
       members = :upgraded_members AS same_members
  FROM catalog_fingerprint;
