-- WAL written under load reaches the archive and comes back byte for byte.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\setenv PGDATABASE :DBNAME
\! pgbench -i -s 10 -q > /dev/null 2>&1 && pgbench -c 4 -j 2 -T 8 > /dev/null 2>&1 && echo "pgbench done"
-- And a burst of segment switches.
DO $$
BEGIN
    FOR i IN 1..15 LOOP
        INSERT INTO pgbench_history SELECT 1, 1, 1, i, now(), 'x' FROM generate_series(1, 20000);
        PERFORM pg_switch_wal();
    END LOOP;
END
$$;
-- Wait until everything finished so far is archived.
INSERT INTO pgbench_history SELECT 1, 1, 1, 0, now(), 'last' FROM generate_series(1, 1000);
SELECT pg_walfile_name(pg_current_wal_lsn()) AS current_segment \gset
SELECT pg_switch_wal() IS NOT NULL AS switched;
SELECT wait_for_archive(:'current_segment') AS caught_up;
SELECT failed_count FROM pg_stat_archiver;
SELECT archived_count >= 20 AS archived_20_or_more, failed_count, compression_ratio > 1.5 AS compressed,
       last_error IS NULL AS no_error
FROM backstop.archive_status;
-- A base backup's .backup file is archived too: pg_backup_stop waits until it is.
SELECT pg_backup_start('scenario', true) IS NOT NULL AS backup_started;
SELECT labelfile LIKE '%LABEL: scenario%' AS backup_stopped_after_archiving FROM pg_backup_stop(true);
\! wal.sh kinds
\! wal.sh compare-all 20
\! wal.sh verify
SELECT "check", status FROM backstop.doctor() WHERE "check" IN ('archiver_failures', 'archive_backlog');
