-- The table-recovery story, told against whichever repository the including scenario configured.
-- Progress NOTICEs carry snapshot ids, LSNs and times, so the story runs with warnings and errors only.
SET client_min_messages = warning;

-- 1. Every type round-trips exactly: restored rows equal the original rows, value for value.
\set ECHO none
\o /dev/null
\i pg_test/lib/type_matrix.sql
\o
\set ECHO all
SELECT backstop.snapshot_table('"Typ Matrix"."Every Type"') ~ '^snap_[0-9a-f]{8}$' AS snapshot_taken;
SELECT backstop.restore_table('"Typ Matrix"."Every Type"', target_table => '"Typ Matrix".restored') AS rows_restored;
SELECT contents('"Typ Matrix"."Every Type"') = contents('"Typ Matrix".restored') AS identical;
SELECT "check", passed FROM backstop.restore_validate('"Typ Matrix".restored');

-- 2. 3am: a million orders, then a DELETE without its WHERE clause's second half.
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer int NOT NULL,
    amount numeric(12,2) NOT NULL CHECK (amount >= 0),
    status text NOT NULL DEFAULT 'new',
    placed timestamptz NOT NULL,
    ref uuid NOT NULL,
    details jsonb
);
INSERT INTO orders (customer, amount, status, placed, ref, details)
SELECT g % 5000, (g % 100000) / 100.0, (ARRAY['new', 'paid', 'shipped'])[g % 3 + 1],
       timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', md5(g::text)::uuid,
       CASE WHEN g % 10 = 0 THEN jsonb_build_object('gift', true, 'note', 'order ' || g) END
  FROM generate_series(1, 1000000) g;
SELECT contents('orders') AS before \gset
SELECT backstop.snapshot_table('orders') ~ '^snap_' AS nightly_snapshot;
-- A snapshot cancelled half-way (here by statement_timeout) publishes nothing.
SET statement_timeout = '200ms';
SELECT backstop.snapshot_table('orders');
RESET statement_timeout;
SELECT count(*) AS committed_snapshots FROM backstop.snapshots('orders', verify => false) WHERE rows IS NOT NULL;
DELETE FROM orders WHERE status = 'paid';
SELECT count(*) AS orders_left FROM orders;
-- The guided path: newest snapshot that verifies, restored next to the original, validated, plans.
SELECT strategy, description FROM backstop.recover('orders');
SELECT count(*) AS restored_rows FROM orders_recovered;
SELECT sql FROM backstop.copyback_plan('orders_recovered') WHERE strategy = 'insert_missing' \gexec
SELECT contents('orders') = :'before' AS every_order_is_back;

-- 3. A dropped table with a name that needs quoting comes back under its own name.
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Order Items" (id serial PRIMARY KEY, "Qty" int NOT NULL CHECK ("Qty" > 0), note text);
CREATE INDEX order_items_note ON "Sales"."Order Items" (note);
INSERT INTO "Sales"."Order Items" ("Qty", note) SELECT g, 'item ' || g FROM generate_series(1, 10000) g;
SELECT contents('"Sales"."Order Items"') AS items_before \gset
SELECT backstop.snapshot_table('"Sales"."Order Items"') ~ '^snap_' AS snapshot_taken;
DROP TABLE "Sales"."Order Items";
SELECT strategy, description FROM backstop.recover('"Sales"."Order Items"');
SELECT sql FROM backstop.copyback_plan('"Sales"."Order Items_recovered"') \gexec
SELECT contents('"Sales"."Order Items"') = :'items_before' AS items_are_back,
       (SELECT count(*) FROM pg_indexes WHERE schemaname = 'Sales' AND tablename = 'Order Items') AS indexes;

-- 4. Damaged objects are refused before anything is written; recover falls back to an older snapshot.
CREATE TABLE ledger (id int PRIMARY KEY, entry text);
INSERT INTO ledger SELECT g, md5(g::text) FROM generate_series(1, 50000) g;
SELECT backstop.snapshot_table('ledger') AS older \gset
INSERT INTO ledger VALUES (0, 'the newest entry');
SELECT backstop.snapshot_table('ledger') AS newer \gset
\setenv OLDER :older
\setenv NEWER :newer
\! snapshot.sh corrupt public ledger $NEWER
SELECT error_of(format('SELECT backstop.restore_table(%L, snapshot_id => %L)', 'ledger', :'newer')) AS corrupt_refused;
SELECT count(*) AS half_written_tables FROM pg_class WHERE relname = 'ledger_recovered';
SELECT verified, problem ~ 'is corrupt' AS says_corrupt FROM backstop.snapshots('ledger') WHERE snapshot_id = :'newer';
-- The CLI sees the same, with the server down or up.
\! snapshot.sh cli-verify public ledger
SET client_min_messages = error;
SELECT strategy FROM backstop.recover('ledger');
SET client_min_messages = warning;
SELECT count(*) AS rows_from_the_older_snapshot FROM ledger_recovered;
\! snapshot.sh swap public ledger $NEWER $OLDER
SELECT error_of(format('SELECT backstop.restore_table(%L, snapshot_id => %L, target_table => %L)', 'ledger', :'newer', 'ledger_swapped')) AS mismatch_refused;

-- 5. Bad input: injection attempts are errors and nothing is executed; unknown snapshots are named.
SELECT error_of($$SELECT backstop.snapshot_table('ledger; DROP TABLE orders')$$) AS injection_in_regclass;
SELECT error_of($$SELECT backstop.restore_table('ledger; DROP TABLE orders')$$) AS injection_in_table_name;
SELECT error_of($$SELECT backstop.restore_table('ledger', target_table => 'x"; DROP TABLE orders; --')$$) AS injection_in_target;
SELECT count(*) AS orders_still_there FROM orders;
SELECT error_of($$SELECT backstop.restore_table('ledger', snapshot_id => 'snap_00000000', target_table => 'ledger_other')$$) AS unknown_snapshot;
SELECT error_of($$SELECT backstop.restore_table('ledger')$$) AS existing_target;

-- 6. Privileges: snapshots need SELECT on the table, restores need backstop_admin.
CREATE ROLE story_operator IN ROLE backstop_admin;
CREATE ROLE story_nobody;
GRANT EXECUTE ON FUNCTION error_of(text) TO story_operator, story_nobody;
SET ROLE story_operator;
SELECT error_of($$SELECT backstop.snapshot_table('ledger')$$) AS operator_without_select;
RESET ROLE;
SET ROLE story_nobody;
SELECT error_of($$SELECT backstop.restore_table('ledger', target_table => 'ledger_nobody')$$) AS without_backstop_admin;
RESET ROLE;
SELECT snapshot_id ~ '^snap_' AS listed, table_name, rows, verified
  FROM backstop.snapshots() WHERE snapshot_id <> :'newer' ORDER BY table_name, rows;
