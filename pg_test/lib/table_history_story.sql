-- The story of the table_history scenarios (file:// and Garage): a table changed in steps, each
-- found again in the WAL with its transaction id and row counts.
CREATE TABLE orders (id int PRIMARY KEY, note text);
CREATE TABLE audit (id int, what text);
-- A base backup records every table's relation file (where a dropped table is found again).
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
RESET client_min_messages;
BEGIN;
INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 100) g;
SELECT txid_current() AS insert_xid \gset
COMMIT;
BEGIN;
UPDATE orders SET note = 'paid' WHERE id <= 10;
SELECT txid_current() AS update_xid \gset
COMMIT;
-- Rolled back: not a change.
BEGIN;
DELETE FROM orders;
ROLLBACK;
-- A mass delete, with part of it in a subtransaction.
BEGIN;
DELETE FROM orders WHERE id > 80;
SAVEPOINT more;
DELETE FROM orders WHERE id > 60;
RELEASE more;
SELECT txid_current() AS delete_xid \gset
COMMIT;
BEGIN;
TRUNCATE orders;
SELECT txid_current() AS truncate_xid \gset
COMMIT;
-- Rows written to the table's new file after the TRUNCATE are its rows too.
BEGIN;
INSERT INTO orders SELECT g, 'again' FROM generate_series(1, 5) g;
SELECT txid_current() AS refill_xid \gset
COMMIT;
-- Another table's changes are not listed.
INSERT INTO audit VALUES (1, 'x');
-- Archived, so the history is read from the repository (the server's own pg_wal serves only what
-- is not archived yet).
SELECT next_segment() IS NOT NULL AS archived;
-- (Progress NOTICEs depend on the machine's speed.)
SET client_min_messages = warning;
SELECT CASE xid WHEN :insert_xid THEN 'insert' WHEN :update_xid THEN 'update' WHEN :delete_xid THEN 'delete'
                WHEN :truncate_xid THEN 'truncate' WHEN :refill_xid THEN 'refill' ELSE 'other' END AS step,
       inserted, updated, deleted, file_change,
       CASE WHEN target_lsn = commit_lsn THEN 'its commit' WHEN target_lsn::pg_lsn < commit_lsn::pg_lsn THEN 'its lock' END AS stops_before,
       target_inclusive, commit_time <= now() AS committed_before_now
  FROM backstop.table_history('orders');
SELECT (result->'archived'->>'segments_read')::int > 0 AS read_from_the_repository
  FROM backstop.job_runs WHERE kind = 'table_history' ORDER BY job_id DESC LIMIT 1;
-- A window that ends before the TRUNCATE does not list it; max_rows keeps the newest.
SELECT count(*) AS changes_until_the_update FROM backstop.table_history('orders', until => (
    SELECT commit_time FROM backstop.table_history('orders') WHERE xid = :update_xid));
SELECT count(*) AS newest_two FROM backstop.table_history('orders', max_rows => 2);
-- A dropped table, found by the name the base backup recorded.
BEGIN;
DROP TABLE audit;
SELECT txid_current() AS drop_xid \gset
COMMIT;
SELECT xid = :drop_xid AS the_drop, file_change, inserted,
       target_lsn::pg_lsn < commit_lsn::pg_lsn AS stops_before_its_lock FROM backstop.table_history('public.audit');
-- Someone who may not read the table gets nothing of its history.
CREATE ROLE nosy;
GRANT backstop_admin TO nosy;
SET ROLE nosy;
SELECT * FROM backstop.table_history('orders');
SELECT * FROM backstop.table_history('public.audit');
RESET ROLE;
