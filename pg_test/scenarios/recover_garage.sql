-- One table (and two at once) as they were at a target, with the repository on S3 (Garage): the
-- base backup, the WAL and the snapshot read through the S3 API; another database skipped.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\set s3_prefix scenario-recover
\i pg_test/lib/use_garage.sql
SELECT next_segment() IS NOT NULL AS archiving_to_s3;
CREATE DATABASE elsewhere;
CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(10,2), tags text[]);
CREATE TABLE order_items (order_id int, qty int);
INSERT INTO orders SELECT g, 'order ' || g, g * 1.5, array['a', g::text] FROM generate_series(1, 400) g;
INSERT INTO order_items SELECT g, g % 4 FROM generate_series(1, 400) g;
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
RESET client_min_messages;
BEGIN;
UPDATE orders SET amount = 0 WHERE id <= 40;
DELETE FROM order_items WHERE order_id <= 40;
COMMIT;
CREATE TABLE orders_1 AS SELECT * FROM orders;
CREATE TABLE items_1 AS SELECT * FROM order_items;
SELECT pg_sleep(0.1);
SELECT now() AS t1 \gset
SELECT pg_sleep(0.1);
BEGIN;
DELETE FROM orders WHERE id > 200;
DELETE FROM order_items WHERE order_id > 200;
COMMIT;
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
SELECT table_name, strategy FROM backstop.recover(array['orders', 'order_items'], target_time => :'t1') ORDER BY 1, 2;
RESET client_min_messages;
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_1 t) AS orders_as_at_t1,
       (SELECT md5(string_agg(t::text, ',' ORDER BY order_id)) FROM order_items_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY order_id)) FROM items_1 t) AS order_items_as_at_t1;
SELECT (result->>'skipped_databases')::int >= 1 AS another_database_skipped
  FROM backstop.job_runs WHERE kind = 'table_recover' ORDER BY job_id DESC LIMIT 1;
DROP TABLE orders_recovered, order_items_recovered;
-- A snapshot taken before the target stands for it when nothing changed in between (the fast path).
SET client_min_messages = warning;
SELECT backstop.snapshot_table('orders') IS NOT NULL AS snapshot_taken;
RESET client_min_messages;
SELECT pg_sleep(0.1);
SELECT now() AS t2 \gset
INSERT INTO order_items VALUES (1, 1);
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
SELECT count(*) AS plans FROM backstop.recover('orders', target_time => :'t2');
RESET client_min_messages;
SELECT (SELECT count(*) FROM orders_recovered) AS rows_at_t2,
       (SELECT snapshot_id NOT LIKE 'pitr:%' FROM backstop.restores ORDER BY restored_at DESC LIMIT 1) AS from_the_snapshot;
