-- needs: PostgreSQL 17 (WAL summaries, summarize_wal)
-- PostgreSQL 17's WAL summaries: an incremental backup asks the server which blocks changed since
-- the previous backup started and reads only the chunks of changed relation files that hold them;
-- without summaries (off, or not reaching back far enough) it reads every changed file whole and
-- says why. Whatever it skipped, the restored tables equal the originals, indexes check clean.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\setenv PGDATABASE :DBNAME
CREATE TABLE orders (id int PRIMARY KEY, customer int NOT NULL, note text);
INSERT INTO orders SELECT g, g % 1000, repeat('x', 80) FROM generate_series(1, 600000) g;
CREATE TABLE shrinking AS SELECT g AS id, repeat('s', 40) AS pad FROM generate_series(1, 200000) g;
CREATE TABLE rewritten AS SELECT g AS id FROM generate_series(1, 100000) g;
CREATE TABLE dropped AS SELECT g AS id FROM generate_series(1, 50000) g;
VACUUM;
-- summarize_wal is off by default: doctor suggests it, without a worse verdict.
SELECT "check", status, detail, hint LIKE 'ALTER SYSTEM SET summarize_wal = on;%' AS suggests
  FROM backstop.doctor() WHERE "check" = 'wal_summaries';
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
CREATE VIEW last_backup AS
  SELECT result->>'kind' AS kind, result->>'changed_blocks' AS changed_blocks,
         (result->>'bytes_read')::bigint AS bytes_read, (result->>'bytes_skipped')::bigint AS bytes_skipped,
         (result->>'files_summarized')::bigint AS files_summarized, (result->>'bytes')::bigint AS bytes
    FROM backstop.job_runs WHERE kind = 'base_backup' ORDER BY job_id DESC LIMIT 1;
-- Off: every changed file is read whole, and the job says why.
UPDATE orders SET note = 'one' WHERE id % 60000 < 600;
SELECT state, kind FROM backstop.base_backup();
SELECT kind, changed_blocks, bytes_skipped FROM last_backup;
-- On: the incremental after it uses the summaries (the summarizer starts from the WAL the server
-- still holds, here back to the previous backup's start; when it does not reach back that far
-- the backup reads changed files whole, as above, and names the gap).
ALTER SYSTEM SET summarize_wal = on;
SELECT pg_reload_conf();
-- This session reads the new value between statements, once the signal has arrived.
SELECT pg_sleep(0.5);
SELECT "check", status, detail, hint IS NULL AS no_hint FROM backstop.doctor() WHERE "check" = 'wal_summaries';
-- Then: 1 % of the orders changed (in runs across the table), the tail of a table deleted and
-- vacuumed off its file (a limit block), a table rewritten into a new file, one dropped and one
-- created. Only chunks holding changed blocks are read.
UPDATE orders SET note = 'three', customer = customer + 1 WHERE id % 60000 < 600;
DELETE FROM shrinking WHERE id > 120000;
VACUUM shrinking;
VACUUM FULL rewritten;
DROP TABLE dropped;
CREATE TABLE created AS SELECT g AS id FROM generate_series(1, 50000) g;
-- The tables as they are at the backup, and as the restored copy of it has them.
CREATE VIEW fingerprint AS
  SELECT 'orders' AS t, md5(string_agg(id || ':' || customer || ':' || note, ',' ORDER BY id)) AS md5, count(*) FROM orders
  UNION ALL SELECT 'shrinking', md5(string_agg(id || pad, ',' ORDER BY id)), count(*) FROM shrinking
  UNION ALL SELECT 'rewritten', md5(string_agg(id::text, ',' ORDER BY id)), count(*) FROM rewritten
  UNION ALL SELECT 'created', md5(string_agg(id::text, ',' ORDER BY id)), count(*) FROM created;
\! psql -X -c "SELECT 1 FROM backstop.base_backup()" 2>&1 | grep -o 'NOTICE:  base backup [^ ]*: changed blocks: WAL summaries from [0-9A-F/]* to [0-9A-F/]* on timeline 1' | sed -E 's/[0-9]{8}T[0-9]{6}Z-I/<backup id>/; s#[0-9A-F]+/[0-9A-F]+#<lsn>#g'
SELECT kind, changed_blocks ~ '^WAL summaries from [0-9A-F]+/[0-9A-F]+ to [0-9A-F]+/[0-9A-F]+ on timeline 1 \(' AS from_summaries,
       files_summarized > 0 AS read_files_in_part, bytes_skipped > 0 AS skipped_unchanged_chunks,
       bytes_read + bytes_skipped < bytes AS unchanged_files_not_read,
       bytes_read < (SELECT (result->>'bytes_read')::bigint FROM backstop.job_runs WHERE kind = 'base_backup'
                      ORDER BY job_id DESC OFFSET 1 LIMIT 1) AS read_less_than_without_summaries
  FROM last_backup;
SELECT count(*) AS backups, bool_and(verified) AS verified FROM backstop.backups();
SELECT * FROM fingerprint;
SET client_min_messages = warning;
\! pitr.sh restore summarized --immediate
\! pitr.sh start summarized 5446
\! pitr.sh sql summarized 5446 "SELECT * FROM fingerprint"
\! pitr.sh sql summarized 5446 "SELECT to_regclass('dropped') IS NULL AS dropped_is_gone"
\! pitr.sh sql summarized 5446 "SET client_min_messages = warning; CREATE EXTENSION amcheck; SELECT bt_index_check('orders_pkey', true) IS NOT NULL AS index_checks, count(*) FROM verify_heapam('orders') AS corrupt_tuples"
\! pitr.sh stop summarized
