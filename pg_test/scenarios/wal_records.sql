-- "When did it happen?" starts with reading the WAL: backstop's reader sees the same
-- transactions, restore points and row changes as pg_waldump, across pages and segments.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
-- Commit timestamps on, to compare the recovery window with; no autovacuum committing on its own.
ALTER SYSTEM SET track_commit_timestamp = on;
ALTER SYSTEM SET autovacuum = off;
\! server.sh restart-after 0
\c
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
RESET client_min_messages;
SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS first_segment \gset
CREATE TABLE orders (id int PRIMARY KEY, note text);
INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 50) g;
BEGIN;
INSERT INTO orders VALUES (1000, 'rolled back');
ROLLBACK;
SELECT pg_create_restore_point('before cleanup') IS NOT NULL AS restore_point;
UPDATE orders SET note = 'paid' WHERE id <= 10;
DELETE FROM orders WHERE id > 40;
-- COPY writes multi-insert records.
COPY orders FROM stdin;
2001	copied
2002	copied
2003	copied
\.
BEGIN;
CREATE TABLE scratch (a int);
SAVEPOINT s;
INSERT INTO scratch VALUES (1);
RELEASE s;
COMMIT;
-- TRUNCATE and DROP: their commits drop relation files.
TRUNCATE scratch;
DROP TABLE scratch;
-- A catalog-heavy transaction: its commit record (invalidations) spans pages.
DO $$ BEGIN FOR i IN 1..150 LOOP EXECUTE format('CREATE TABLE t_%s (a int, b text)', i); END LOOP; END $$;
DO $$ BEGIN FOR i IN 1..150 LOOP EXECUTE format('DROP TABLE t_%s', i); END LOOP; END $$;
-- VACUUM cuts the emptied end of a file (a file truncation record).
CREATE TABLE shrinking AS SELECT g AS id FROM generate_series(1, 20000) g;
DELETE FROM shrinking WHERE id > 100;
VACUUM shrinking;
-- Records across a segment boundary.
CREATE TABLE wide (id int, pad text);
INSERT INTO wide SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g;
SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS last_segment \gset
SELECT :'last_segment' > :'first_segment' AS crossed_segments;
CHECKPOINT;
\setenv FIRST_SEGMENT :first_segment
\setenv LAST_SEGMENT :last_segment
\! wal.sh records-vs-waldump "$FIRST_SEGMENT" "$LAST_SEGMENT" 1000

-- The recovery window's times come from the WAL: it ends at the last commit's own timestamp
-- (not when a file was stored), after it starts.
INSERT INTO orders VALUES (3001, 'the last commit');
SELECT timestamp AS last_commit FROM pg_last_committed_xact() \gset
SELECT pg_walfile_name(pg_current_wal_lsn()) AS tail_segment \gset
SELECT pg_switch_wal() IS NOT NULL AS switched;
SELECT wait_for_archive(:'tail_segment') AS archived;
SELECT status, to_time >= from_time AS ordered, to_time = :'last_commit'::timestamptz AS ends_at_the_last_commit,
       backup_id IS NOT NULL AS from_a_backup, to_lsn::pg_lsn <= pg_current_wal_lsn() AS to_lsn_in_the_wal
  FROM backstop.recovery_window() WHERE timeline = 1;
-- A restore to a time after the last commit archived is refused before anything is written (it
-- would replay everything, then PostgreSQL would refuse to start).
\! pitr.sh restore too_late --target-time '2099-01-01 00:00:00+00' | sed -E 's/ \(.*//'
