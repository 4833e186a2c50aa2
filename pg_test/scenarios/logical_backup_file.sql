-- A logical backup: pg_dump of the database streamed into the repository (no local copy), read
-- back through its checksums into pg_restore --list before it is published, with every table's
-- rows and every sequence recorded in the dump's own snapshot.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
SET client_min_messages = error;
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(10, 2));
INSERT INTO sales.orders (customer, amount) SELECT 'c' || (g % 17), g / 10.0 FROM generate_series(1, 5000) g;
CREATE TABLE sales.audit (order_id bigint, at timestamptz DEFAULT now());
CREATE FUNCTION sales.audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO sales.audit (order_id) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER orders_audit AFTER INSERT ON sales.orders FOR EACH ROW EXECUTE FUNCTION sales.audit_order();
INSERT INTO sales.orders (customer, amount) VALUES ('after-trigger', 1);
CREATE TABLE metrics (day date NOT NULL, value int) PARTITION BY RANGE (day);
CREATE TABLE metrics_2026 PARTITION OF metrics FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO metrics SELECT date '2026-01-01' + g, g FROM generate_series(0, 299) g;
SELECT lo_from_bytea(0, 'a large object') IS NOT NULL AS large_object;

SELECT state, database, tables, rows FROM backstop.logical_backup();
SELECT database, verified, tables, rows, list_entries > 10 AS listed_by_pg_restore, pg_dump LIKE 'pg_dump (PostgreSQL) ' || current_setting('server_version_num')::int / 10000 || '.%' AS same_major, problem
  FROM backstop.logical_backups();
-- What the manifest recorded, from the dump's snapshot: each table, and the sequence's position.
SELECT result->>'tables' AS tables, result->>'sequences' AS sequences, (result->>'list_entries')::int > 10 AS listed
  FROM backstop.job_runs WHERE kind = 'logical_backup' AND state = 'succeeded';

-- Refused, with the reason: a database that does not exist, and a role that cannot read everything.
SELECT error_of($$SELECT * FROM backstop.logical_backup('no_such_db')$$);
CREATE ROLE scenario_operator LOGIN IN ROLE backstop_admin;
SET ROLE scenario_operator;
SELECT error_of($$SELECT * FROM backstop.logical_backup()$$);
RESET ROLE;
-- A second backup of the same database gets an id of its own; both are listed.
SELECT state FROM backstop.logical_backup();
SELECT count(*) AS logical_backups, count(DISTINCT backup_id) AS distinct_ids FROM backstop.logical_backups('logical_backup_file');
-- The CLI lists the same backups from the repository alone (the server may be down).
\! pitr.sh cli logical list | sed -E 's/[0-9]+ bytes/N bytes/'
-- The schema is readable as plain SQL without unpacking the dump; the global objects carry roles
-- but never a password.
\! pitr.sh cli logical show schema | grep -E '^CREATE (TABLE|TRIGGER|FUNCTION)' | sed -E 's/ \(.*//; s/ AFTER.*//'
\! pitr.sh cli logical show globals | grep -cE '^CREATE ROLE (postgres|scenario_operator);'
\! pitr.sh cli logical show globals | grep -ci 'password' || true

-- Restore with the CLI (server up, as a DBA would at 3am) into a database that does not exist yet:
-- it is created, the dump verified, then restored; every table compared with the original.
\! pitr.sh cli logical restore --dbname restored_copy | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
SELECT max(id) AS orders_max,
       md5(string_agg(o::text, ',' ORDER BY o.id)) AS orders_md5,
       (SELECT md5(string_agg(a::text, ',' ORDER BY a.order_id)) FROM sales.audit a) AS audit_md5,
       (SELECT md5(string_agg(m::text, ',' ORDER BY m.day)) FROM metrics m) AS metrics_md5
  FROM sales.orders o \gset
\c restored_copy
SELECT count(*) AS orders, md5(string_agg(o::text, ',' ORDER BY o.id)) = :'orders_md5' AS orders_identical FROM sales.orders o;
SELECT md5(string_agg(a::text, ',' ORDER BY a.order_id)) = :'audit_md5' AS audit_identical FROM sales.audit a;
SELECT relkind AS metrics_kind, (SELECT count(*) FROM pg_inherits WHERE inhparent = 'metrics'::regclass) AS partitions,
       (SELECT md5(string_agg(m::text, ',' ORDER BY m.day)) FROM metrics m) = :'metrics_md5' AS metrics_identical
  FROM pg_class WHERE oid = 'metrics'::regclass;
SELECT convert_from(lo_get(oid), 'UTF8') AS large_object FROM pg_largeobject_metadata;
-- The restored sequence hands out a new key, and the restored trigger and function still fire.
INSERT INTO sales.orders (customer, amount) VALUES ('after restore', 2) RETURNING id > :orders_max AS new_key;
SELECT count(*) AS audited_after_restore FROM sales.audit WHERE order_id > :orders_max;
\c logical_backup_file
SET client_min_messages = error;
-- A database that holds anything is refused (nothing is touched); --clean drops and recreates.
\! pitr.sh cli logical restore --dbname restored_copy | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
\! pitr.sh cli logical restore --dbname restored_copy --clean | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
\! psql -X -qAt -d restored_copy -c "SELECT 'after --clean: ' || count(*) || ' orders' FROM sales.orders"
-- Parallel restore (--jobs spools the verified dump first) and one table alone.
\! pitr.sh cli logical restore --dbname restored_parallel --jobs 2 --json | python3 -c 'import json,sys; r=json.load(sys.stdin)["restored"]; print("jobs", r["jobs"], "created", r["created"])'
\! psql -X -qAt -d restored_parallel -c "SELECT 'parallel: ' || count(*) || ' orders, ' || (SELECT count(*) FROM metrics) || ' metrics' FROM sales.orders"
\! pitr.sh cli logical restore --dbname one_table --table sales.orders | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
\! psql -X -qAt -d one_table -c "SELECT 'one table: ' || string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind IN ('r', 'p') AND relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)"

-- --dbname takes a connection string, as pg_restore -d does: its settings are the ones used (a
-- host that is not there fails there, before anything is created), and a password in it is never
-- shown; with the right host the restore goes through.
\! pitr.sh cli logical restore --database logical_backup_file --dbname "host=/nonexistent-socket-dir dbname=via_conninfo password=not-shown" | sed -E 's/[0-9]+ bytes/N bytes/'
\! pitr.sh cli logical restore --database logical_backup_file --dbname "host=$PGHOST port=$PGPORT dbname=via_conninfo" | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
\! psql -X -qAt -d via_conninfo -c "SELECT 'via a connection string: ' || count(*) || ' orders' FROM sales.orders"
-- A nightly dump on a schedule makes doctor watch its age.
SELECT name, to_char(next_run_at AT TIME ZONE 'UTC', 'HH24:MI') AS utc_time,
       next_run_at > now() AND next_run_at <= now() + interval '1 day' AS next_run_within_a_day
  FROM backstop.schedule('nightly-dump', '30 1 * * *', 'logical_backup', '{"database": "logical_backup_file"}');
-- The drill: the newest dump restored into a scratch database, every table and sequence compared
-- with what the dump's snapshot held, the scratch database dropped.
SELECT state, result->>'tables' AS tables, result->>'rows' AS rows, result->>'sequences' AS sequences,
       result->>'scratch_database' LIKE 'backstop_drill_logical_%' AS scratch, (result->>'seconds')::float8 > 0 AS timed
  FROM backstop.run_job('logical_restore');
SELECT count(*) AS scratch_databases_left FROM pg_database WHERE datname LIKE 'backstop\_drill\_logical\_%';
SELECT "check", status, CASE "check" WHEN 'drill_logical_restore' THEN detail LIKE 'passed % ago in % s (the measured recovery time)'
                          WHEN 'logical_backup' THEN detail LIKE 'logical_backup_file: %-L % ago'
                          ELSE detail LIKE 'pg_dump (PostgreSQL) ' || current_setting('server_version_num')::int / 10000 || '.% and its pg_dumpall, pg_restore and psql' END AS says_so
  FROM backstop.doctor() WHERE "check" IN ('logical_tools', 'logical_backup', 'drill_logical_restore') ORDER BY 1;

-- A damaged dump: the CLI refuses it before pg_restore sees a byte (the new database is never
-- created), and the drill fails naming the object, with doctor turning degraded.
\! pitr.sh damage-logical logical_backup_file
\! pitr.sh cli logical restore --dbname from_damaged | sed -E 's/[0-9]+ bytes/N bytes/'
SELECT count(*) AS from_damaged_created FROM pg_database WHERE datname = 'from_damaged';
SELECT state, error LIKE '%/logical/logical_backup_file/%-L/dump is corrupt%' AS names_the_dump, hint IS NOT NULL AS has_hint
  FROM backstop.run_job('logical_restore');
SELECT count(*) AS scratch_databases_left FROM pg_database WHERE datname LIKE 'backstop\_drill\_logical\_%';
SELECT "check", status FROM backstop.doctor() WHERE "check" = 'drill_logical_restore';
-- The older, intact dump still restores when named.
SELECT backup_id AS older_backup FROM backstop.logical_backups('logical_backup_file') ORDER BY backup_id LIMIT 1 \gset
SELECT state, result->>'rows' AS rows FROM backstop.run_job('logical_restore', jsonb_build_object('backup_id', :'older_backup'));

-- A genuine dump of a database where a user without rights planted code for whoever restores
-- it: a CHECK calling her function, which starts a shell program (COPY TO PROGRAM) as soon as a
-- superuser evaluates it. The drill restores as a role without rights in a throwaway server:
-- the rows come back, the check runs, and the program never does.
\! rm -f /tmp/backstop-scenario-planted-marker
CREATE ROLE mallory LOGIN;
CREATE DATABASE drill_hostile OWNER mallory;
\c drill_hostile
SET ROLE mallory;
CREATE FUNCTION plant(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF pg_catalog.current_setting('is_superuser') = 'on' THEN
    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch /tmp/backstop-scenario-planted-marker''';
  END IF;
  RETURN v > 0;
END $$;
CREATE TABLE planted (v int CHECK (plant(v)));
INSERT INTO planted SELECT g FROM generate_series(1, 100) g;
RESET ROLE;
\c logical_backup_file
SET client_min_messages = error;
SELECT state FROM backstop.logical_backup('drill_hostile');
SELECT state, result->>'tables' AS tables, result->>'rows' AS rows, result->>'restored_as' AS restored_as,
       result->>'skipped' AS skipped
  FROM backstop.run_job('logical_restore', '{"database": "drill_hostile"}');
\! test -e /tmp/backstop-scenario-planted-marker && echo 'the planted program RAN' || echo 'the planted program never ran'
-- The CLI restores it the same way when told (--sandboxed), connecting as a role without rights:
-- the rows come back and the program never runs. A superuser is refused for a sandboxed restore.
CREATE ROLE restorer LOGIN CREATEDB;
\! PGUSER=restorer pitr.sh cli logical restore --database drill_hostile --dbname hostile_copy --sandboxed | sed -E 's/[0-9]+ bytes/N bytes/; s/in [0-9.]+ s/in T s/'
\! psql -X -qAt -U restorer -d hostile_copy -c "SELECT count(*) AS rows, pg_catalog.pg_get_userbyid(relowner) AS owner FROM planted, pg_class WHERE relname = 'planted' GROUP BY relowner"
\! test -e /tmp/backstop-scenario-planted-marker && echo 'the planted program RAN' || echo 'the planted program never ran'
\! pitr.sh cli logical restore --database drill_hostile --dbname hostile_super --sandboxed | sed -E "s/[0-9]+ bytes/N bytes/"
-- The drill of a database with backstop installed reports what a role without rights could not
-- restore (the extension), and still passes: every table and sequence matched.
SELECT state, (result->>'skipped')::int > 0 AS skipped_some, result->'skipped_messages'->>0 AS first_skipped
  FROM backstop.run_job('logical_restore', jsonb_build_object('backup_id', :'older_backup'));
SELECT count(*) AS drill_directories_left FROM pg_ls_dir(coalesce(nullif(current_setting('backstop.drill_directory', true), ''), '/tmp')) d
 WHERE d LIKE 'backstop-drill-%';
