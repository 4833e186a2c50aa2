-- A table recovered at a target restores only its database whole: the other databases' relation
-- files are holes, and WAL that vacuums, truncates, creates and drops in them (records without a
-- full-page image land on zero pages there) does not stop the throwaway server nor change the
-- rows recovered. On PostgreSQL 18 the cluster has data checksums on (initdb's default), on 15-17
-- off: the cross-version runs cover both.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
SELECT current_database() AS home \gset
CREATE DATABASE skipped_a;
\c skipped_a
CREATE TABLE big (id int, v text);
INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g;
CREATE INDEX big_hash ON big USING hash (id);
CREATE TABLE gone (id int);
INSERT INTO gone SELECT generate_series(1, 1000);
-- Over 1 GB (four rows a page, stored plain): its file has a second segment, `.1`, a hole too.
CREATE TABLE huge (id int, pad char(1900));
ALTER TABLE huge ALTER pad SET STORAGE PLAIN;
INSERT INTO huge SELECT g, 'x' FROM generate_series(1, 560000) g;
SELECT pg_relation_size('huge') > 1024 * 1024 * 1024 AS huge_over_1_gb;
-- Hint bits and visibility set before the backup: with data checksums (18), the first scan after a
-- checkpoint would otherwise log a full-page image of every page, which replay writes into the hole.
VACUUM huge;
\c :home
CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(10,2));
INSERT INTO orders SELECT g, 'order ' || g, g * 1.5 FROM generate_series(1, 1000) g;
SELECT pg_database_size('skipped_a') AS skipped_size \gset
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
RESET client_min_messages;
-- After the backup, in the skipped database: a mass delete, VACUUM (pruning, the hash index,
-- the visibility map), TRUNCATE; a database created with each strategy and one dropped; a
-- checkpoint, then more of the same, and rows changed across the 1 GB table's two segments.
\c skipped_a
DELETE FROM big WHERE id > 54000;
VACUUM big;
TRUNCATE gone;
\c :home
CREATE DATABASE skipped_b STRATEGY FILE_COPY;
CREATE DATABASE skipped_c STRATEGY WAL_LOG;
DROP DATABASE skipped_b;
CHECKPOINT;
\c skipped_a
UPDATE big SET v = 'y' WHERE id <= 3000;
VACUUM big;
UPDATE huge SET id = -id WHERE id % 100000 = 0;
\c :home
-- The table changes; what it holds at t1 is kept aside.
UPDATE orders SET note = 'paid', amount = 0 WHERE id <= 100;
CREATE TABLE state_1 AS SELECT * FROM orders;
SELECT pg_sleep(0.1);
SELECT now() AS t1 \gset
SELECT pg_sleep(0.1);
DELETE FROM orders WHERE id > 500;
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
SELECT strategy FROM backstop.recover('orders', target_time => :'t1') ORDER BY 1;
RESET client_min_messages;
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM state_1 t) AS same_rows_as_at_t1,
       (SELECT count(*) FROM orders_recovered) AS rows_at_t1;
-- skipped_a was not fetched (its length is in skipped_bytes) and, after replay, took a fraction
-- of that on disk (measured when the throwaway server has stopped).
SELECT (result->>'skipped_databases')::int >= 1 AS databases_skipped,
       (result->>'skipped_bytes')::bigint >= :skipped_size * 0.8 AS skipped_a_not_fetched,
       (result->>'skipped_disk_bytes')::bigint < (result->>'skipped_bytes')::bigint / 2 AS holes_on_disk,
       -- Without data checksums VACUUM's visibility records carry no page image: replay met the
       -- holes (the server logged invalid pages there, tolerated) and still recovered the rows.
       current_setting('data_checksums')::bool OR (result->>'invalid_pages_tolerated')::int > 0 AS holes_met_by_replay
  FROM backstop.job_runs WHERE kind = 'table_recover' ORDER BY job_id DESC LIMIT 1;
