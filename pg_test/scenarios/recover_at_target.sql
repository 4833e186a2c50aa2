-- One table as it was at any second: backstop.recover('orders', target_time => ...) brings back
-- exactly the rows it had then, next to the original, validated, with the copy-back plans; the
-- target can come straight from table_history().
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
CREATE TABLE orders (id int PRIMARY KEY, note text, amount numeric(10,2), placed timestamptz, tags text[], doc jsonb);
INSERT INTO orders SELECT g, 'order ' || g, g * 1.5, '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
                          array['a', g::text], jsonb_build_object('n', g)
  FROM generate_series(1, 200) g;
-- A second table, dropped later (the base backup records its file: how it is found by name).
CREATE TABLE items (id int, label text);
CREATE TABLE order_items (order_id int, qty int);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
RESET client_min_messages;
-- Step 1: more orders. What the table holds then is kept aside, and the time noted.
INSERT INTO orders SELECT g, 'order ' || g, g * 1.5, now(), NULL, NULL FROM generate_series(201, 300) g;
INSERT INTO order_items SELECT g, g % 3 + 1 FROM generate_series(150, 300) g;
CREATE TABLE state_1 AS SELECT * FROM orders;
CREATE TABLE items_state_1 AS SELECT * FROM order_items;
SELECT pg_sleep(0.1);
SELECT now() AS t1 \gset
SELECT pg_sleep(0.1);
-- Step 2: a bad UPDATE.
UPDATE orders SET amount = 0 WHERE id % 2 = 0;
CREATE TABLE state_2 AS SELECT * FROM orders;
-- Step 3: a mass DELETE.
BEGIN;
DELETE FROM orders WHERE id > 100;
DELETE FROM order_items WHERE order_id > 100;
COMMIT;
SELECT next_segment() IS NOT NULL AS archived;
SET client_min_messages = warning;
-- At t1: the rows of step 1, before the UPDATE.
SELECT strategy FROM backstop.recover('orders', target_time => :'t1') ORDER BY 1;
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM state_1 t) AS same_rows_as_at_t1,
       (SELECT count(*) FROM orders_recovered) AS rows_at_t1,
       (SELECT tableowner FROM pg_tables WHERE tablename = 'orders_recovered') = current_user AS owned_by_the_caller;
DROP TABLE orders_recovered;
-- Two tables at once, consistent with each other (one server, one target).
SELECT table_name, strategy FROM backstop.recover(array['orders', 'order_items'], target_time => :'t1') ORDER BY 1, 2;
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM state_1 t) AS orders_as_at_t1,
       (SELECT md5(string_agg(t::text, ',' ORDER BY order_id)) FROM order_items_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY order_id)) FROM items_state_1 t) AS order_items_as_at_t1;
DROP TABLE orders_recovered, order_items_recovered;
-- The same from the command line, as when the server is down: one dump file per table, written
-- from a throwaway server paused at t1; restored into another database, the rows are those of t1.
\setenv T1 :t1
\setenv SCENARIO_DB :DBNAME
\set home :DBNAME
\! rm -rf /tmp/backstop-scenario-recovered
\! backstop recover-table --table public.orders --table public.order_items --database "$SCENARIO_DB" --target-time "$T1" --to /tmp/backstop-scenario-recovered --json > /tmp/backstop-scenario-recovered.json 2> /tmp/backstop-scenario-recovered.err && echo 'recover-table: written' || cat /tmp/backstop-scenario-recovered.err
\! ls /tmp/backstop-scenario-recovered
\! python3 -c 'import json; r = json.load(open("/tmp/backstop-scenario-recovered.json")); print("rows:", [(t["table"], t["rows"]) for t in r["tables"]])'
CREATE DATABASE from_the_cli;
\! pg_restore -d from_the_cli /tmp/backstop-scenario-recovered/public.orders.dump && echo 'pg_restore: done'
\c from_the_cli
SELECT md5(string_agg(t::text, ',' ORDER BY id)) AS from_cli FROM orders t \gset
\c :home
SET client_min_messages = warning;
SELECT :'from_cli' = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM state_1 t) AS cli_rows_as_at_t1;
-- Just before the DELETE, found by table_history (its target_lsn, not inclusive).
SELECT target_lsn AS before_delete FROM backstop.table_history('orders') WHERE deleted > 0 ORDER BY commit_time DESC LIMIT 1 \gset
SELECT strategy FROM backstop.recover('orders', target_lsn => :'before_delete', target_inclusive => false) ORDER BY 1;
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM orders_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM state_2 t) AS same_rows_as_before_the_delete;
-- The copy-back plan puts the deleted rows back.
SELECT sql FROM backstop.copyback_plan('orders_recovered') WHERE strategy = 'insert_missing' \gexec
SELECT count(*) AS orders_after_copy_back FROM orders;
-- A target after the last commit archived is refused with the window, and nothing is created.
DROP TABLE orders_recovered;
DO $$
BEGIN
    PERFORM * FROM backstop.recover('orders', target_time => now() + interval '1 day');
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'refused: %', SQLERRM LIKE '%after the last commit the archive holds%';
END $$;
SELECT to_regclass('orders_recovered') IS NULL AS nothing_created;
-- A dropped table, recovered to just before the DROP that table_history finds: the target stops
-- before the transaction's lock (a server paused between the lock and the commit could not read it).
INSERT INTO items VALUES (51, 'the last item');
CREATE TABLE items_before_drop AS SELECT * FROM items;
SELECT pg_sleep(0.1);
SELECT now() AS before_drop_time \gset
SELECT pg_sleep(0.1);
BEGIN;
DELETE FROM items WHERE id > 40;
DROP TABLE items;
COMMIT;
SELECT next_segment() IS NOT NULL AS archived;
SELECT target_lsn AS before_drop, commit_lsn AS drop_commit FROM backstop.table_history('public.items')
 WHERE file_change = 'dropped' \gset
SELECT strategy, sql FROM backstop.recover('public.items', target_lsn => :'before_drop', target_inclusive => false);
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items_before_drop t) AS same_rows_as_before_the_drop;
-- Stopping between its lock and its commit: a server paused there has replayed the DROP's lock
-- and could not read the table, so the recovery stops just before the lock instead, which no change
-- to the table separates from the target: the same rows.
DROP TABLE items_recovered;
SELECT count(*) AS plans FROM backstop.recover('public.items', target_lsn => :'drop_commit', target_inclusive => false);
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items_before_drop t) AS same_rows_again,
       (SELECT result->>'moved_before_lock' IS NOT NULL FROM backstop.job_runs WHERE kind = 'table_recover'
         ORDER BY job_id DESC LIMIT 1) AS stopped_before_the_lock;
DROP TABLE items_recovered;
-- The same with a time just before the DROP's transaction: replay goes on to the first commit after
-- the time (the DROP's), so it would hold the lock too.
SELECT count(*) AS plans FROM backstop.recover('public.items', target_time => :'before_drop_time');
SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items_recovered t)
     = (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items_before_drop t) AS same_rows_at_the_time,
       (SELECT result->>'moved_before_lock' IS NOT NULL FROM backstop.job_runs WHERE kind = 'table_recover'
         ORDER BY job_id DESC LIMIT 1) AS stopped_before_the_lock;
-- A caller who may not read the table gets nothing of it.
CREATE ROLE nosy;
GRANT backstop_admin TO nosy;
SET ROLE nosy;
SELECT * FROM backstop.recover('orders', target_time => :'t1');
RESET ROLE;
