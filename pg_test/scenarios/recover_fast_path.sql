-- recover() at a target takes the fastest path it can prove right: a snapshot taken before the
-- target stands for the table there when the WAL shows nothing changed the table between them
-- (no rows, no new file, no ALTER TABLE); then no base backup is restored and no WAL replayed.
-- Otherwise it replays. backstop.restores says which path each recovery took.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(10,2));
INSERT INTO orders SELECT g, 'order ' || g, g * 1.5 FROM generate_series(1, 500) g;
CREATE TABLE other (id int);
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
SELECT backstop.snapshot_table('orders') IS NOT NULL AS snapshot_taken;
RESET client_min_messages;
CREATE TABLE state_1 AS SELECT * FROM orders;
-- Other tables change; this one does not until after t1.
INSERT INTO other SELECT generate_series(1, 100);
SELECT pg_sleep(0.1);
SELECT now() AS t1 \gset
SELECT pg_sleep(0.1);
DELETE FROM orders WHERE id > 250;
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
SELECT strategy FROM backstop.recover('orders', target_time => :'t1') ORDER BY 1;
RESET client_min_messages;
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM state_1 t) AS same_rows_as_at_t1,
       (SELECT snapshot_id NOT LIKE 'pitr:%' FROM backstop.restores ORDER BY restored_at DESC LIMIT 1) AS from_the_snapshot,
       (SELECT count(*) FROM backstop.job_runs WHERE kind = 'table_recover') AS replays;
DROP TABLE orders_recovered;
-- The target table_history gives for the DELETE (an LSN): the snapshot again.
SET client_min_messages = warning;
SELECT target_lsn AS before_delete FROM backstop.table_history('orders') WHERE deleted > 0 \gset
SELECT count(*) AS plans FROM backstop.recover('orders', target_lsn => :'before_delete', target_inclusive => false);
RESET client_min_messages;
SELECT (SELECT count(*) FROM orders_recovered) AS rows_before_delete,
       (SELECT snapshot_id NOT LIKE 'pitr:%' FROM backstop.restores ORDER BY restored_at DESC LIMIT 1) AS from_the_snapshot,
       (SELECT count(*) FROM backstop.job_runs WHERE kind = 'table_recover') AS replays;
DROP TABLE orders_recovered;
-- After the DELETE the snapshot no longer stands for the table: a target after it replays.
SELECT pg_sleep(0.1);
SELECT now() AS t2 \gset
INSERT INTO other VALUES (0);
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
SELECT count(*) AS plans FROM backstop.recover('orders', target_time => :'t2');
RESET client_min_messages;
SELECT (SELECT count(*) FROM orders_recovered) AS rows_at_t2,
       (SELECT snapshot_id LIKE 'pitr:%' FROM backstop.restores ORDER BY restored_at DESC LIMIT 1) AS replayed;
DROP TABLE orders_recovered;
-- A new snapshot, then a column added (no row or file changes): the ALTER TABLE's lock rules the
-- snapshot out, and the replayed table has the column.
SET client_min_messages = warning;
SELECT backstop.snapshot_table('orders') IS NOT NULL AS snapshot_taken;
RESET client_min_messages;
SELECT pg_sleep(0.1);
ALTER TABLE orders ADD COLUMN shipped boolean;
SELECT pg_sleep(0.1);
SELECT now() AS t3 \gset
INSERT INTO other VALUES (0);
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
SELECT count(*) AS plans FROM backstop.recover('orders', target_time => :'t3');
RESET client_min_messages;
SELECT (SELECT snapshot_id LIKE 'pitr:%' FROM backstop.restores ORDER BY restored_at DESC LIMIT 1) AS replayed,
       (SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders_recovered' AND column_name = 'shipped') AS has_the_new_column;
