-- The object store goes away during a write burst: archiving fails loudly, pg_wal keeps every
-- segment, and when the store is back the archive catches up with no gap.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
ALTER SYSTEM SET backstop.s3_max_attempts = 2;
\set s3_prefix scenario-outage
\i pg_test/lib/use_garage.sql
CREATE TABLE burst (id bigint, payload text);
CREATE FUNCTION write_segments(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO burst SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
        PERFORM pg_switch_wal();
    END LOOP;
END $$;
SELECT write_segments(3);
SELECT pg_walfile_name(pg_current_wal_lsn()) AS before_outage \gset
SELECT pg_switch_wal() IS NOT NULL AS switched;
SELECT wait_for_archive(:'before_outage') AS archived_before_outage;
SELECT failed_count AS failures_before FROM backstop.archive_status;
\! wal.sh garage stop
SELECT write_segments(5);
SELECT pg_walfile_name(pg_current_wal_lsn()) AS during_outage \gset
SELECT pg_switch_wal() IS NOT NULL AS switched;
DO $$
BEGIN
    FOR attempt IN 1..300 LOOP
        EXIT WHEN (SELECT failed_count > 0 FROM backstop.archive_status);
        PERFORM pg_sleep(0.1);
        PERFORM pg_stat_clear_snapshot();  -- statistics are cached per transaction
    END LOOP;
END
$$;
SELECT failed_count > 0 AS archiving_fails, last_error LIKE '%could not reach the server%' AS says_why
FROM backstop.archive_status;
SELECT last_archived_wal < :'during_outage' AS nothing_acknowledged_while_down FROM pg_stat_archiver;
\! wal.sh ready-waiting
SELECT "check", status FROM backstop.doctor() WHERE "check" IN ('repository_reachable', 'archiver_failures');
\! wal.sh garage start
SELECT wait_for_archive(:'during_outage') AS caught_up_after_outage;
SELECT next_segment() IS NOT NULL AS archiving_continues;
\! wal.sh ready-count
\! wal.sh s3 verify
\! wal.sh s3 compare-all 8
ALTER SYSTEM RESET ALL;
SELECT pg_reload_conf();
