-- recover() at a target when things go wrong: cancelled while its throwaway server runs, a damaged
-- WAL segment, damaged packs. Each time nothing is created in the live server, and no process and
-- no scratch directory is left behind.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\setenv PGDATABASE :DBNAME
CREATE FUNCTION wait_for_phase(wanted text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..1200 LOOP
        IF EXISTS (SELECT 1 FROM backstop.job_progress WHERE kind = 'table_recover' AND phase = wanted) THEN RETURN true; END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;
CREATE FUNCTION wait_for_last_recover() RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text;
BEGIN
    FOR attempt IN 1..1200 LOOP
        SELECT state INTO s FROM backstop.job_runs WHERE kind = 'table_recover' ORDER BY job_id DESC LIMIT 1;
        IF s IS NOT NULL AND s <> 'running' THEN RETURN s; END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN 'still running';
END $$;
CREATE VIEW leftovers AS
SELECT (SELECT count(*) FROM pg_ls_dir(coalesce(nullif(current_setting('backstop.drill_directory', true), ''), '/tmp')) d
         WHERE d LIKE 'backstop-drill-%') AS scratch_directories,
       to_regclass('orders_recovered') IS NOT NULL AS table_created;
CREATE TABLE orders (id int PRIMARY KEY, note text);
INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 300) g;
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup(kind => 'full');
RESET client_min_messages;
SELECT pg_walfile_name(pg_current_wal_lsn()) AS after_backup \gset
\setenv AFTER_BACKUP :after_backup
UPDATE orders SET note = 'paid' WHERE id <= 50;
SELECT pg_sleep(0.1);
SELECT now() AS t1 \gset
\setenv T1 :t1
SELECT pg_sleep(0.1);
DELETE FROM orders WHERE id > 100;
SELECT next_segment() IS NOT NULL AS archived;
-- Cancelled while the throwaway server runs (a test build holds the job there): the worker is
-- terminated, and the server and its directory go with it.
ALTER SYSTEM SET backstop.test_recover_pause = 600000;
SELECT pg_reload_conf();
\! (psql -X -q -c "SELECT * FROM backstop.recover('orders', target_time => '$T1')" > /dev/null 2>&1 &)
SELECT wait_for_phase('reading the tables at the target') AS throwaway_server_running;
\! pgrep -f 'backstop-dril[l]-' > /dev/null && echo 'a throwaway server runs' || echo 'no throwaway server'
SELECT pg_terminate_backend(pid) AS terminated FROM backstop.job_progress WHERE kind = 'table_recover';
SELECT wait_for_last_recover() AS cancelled_job;
SELECT pg_sleep(1);
\! pgrep -f 'backstop-dril[l]-' > /dev/null && echo 'a throwaway server is LEFT' || echo 'no throwaway server left'
SELECT * FROM leftovers;
ALTER SYSTEM RESET backstop.test_recover_pause;
SELECT pg_reload_conf();
-- A damaged WAL segment the replay needs: refused, nothing created.
SET client_min_messages = warning;
\! wal.sh corrupt-object "$AFTER_BACKUP"
SELECT error_of(format('SELECT * FROM backstop.recover(%L, target_time => %L)', 'orders', :'t1')) ~ 'checksum|authentic|damaged|corrupt' AS refused_damaged_wal;
SELECT * FROM leftovers;
\! wal.sh corrupt-object "$AFTER_BACKUP" > /dev/null
-- Damaged packs: refused, nothing created.
\! pitr.sh damage-packs corrupt
SELECT error_of(format('SELECT * FROM backstop.recover(%L, target_time => %L)', 'orders', :'t1')) ~ 'checksum|authentic|damaged|corrupt' AS refused_damaged_packs;
SELECT * FROM leftovers;
\! pitr.sh damage-packs corrupt > /dev/null
-- Both undone: the same recovery works.
SELECT count(*) AS plans FROM backstop.recover('orders', target_time => :'t1');
RESET client_min_messages;
SELECT count(*) AS rows_at_t1, count(*) FILTER (WHERE note = 'paid') AS paid FROM orders_recovered;
