-- The archive never overwrites, never mixes clusters, and never hands out damaged WAL.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
SELECT next_segment() AS first \gset
SELECT next_segment() AS second \gset
SELECT next_segment() AS third \gset
\setenv FIRST :first
\setenv THIRD :third

-- 1. The same segment archived again: identical bytes are success, nothing is rewritten.
\! wal.sh rearchive $THIRD
SELECT pg_switch_wal() IS NOT NULL AS woke_archiver;
SELECT wait_for_done(:'third') AS archived_again;
SELECT already_archived_count AS already_archived, failed_count FROM backstop.archive_status;

-- 2. Different bytes already stored under that name: refused with both checksums, nothing overwritten.
\! wal.sh replace-object $THIRD
\! wal.sh rearchive $THIRD
SELECT pg_switch_wal() IS NOT NULL AS woke_archiver;
SELECT wait_for_failures(1) AS archiving_refused;
SELECT last_failed_wal = :'third' AS refused_that_segment,
       last_error ~ 'already exists .* with different contents \(stored sha256 [0-9a-f]{64}, new sha256 [0-9a-f]{64}\); refusing to overwrite it' AS names_both_checksums
FROM backstop.archive_status;
\! wal.sh remove-object $THIRD
SELECT pg_switch_wal() IS NOT NULL AS woke_archiver;
SELECT wait_for_done(:'third') AS archived_once_the_impostor_is_gone;

-- 3. A namespace owned by another cluster is refused before anything is written.
\! wal.sh claim-foreign foreign-namespace
ALTER SYSTEM SET backstop.cluster_name = 'foreign-namespace';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT failed_count AS failures_so_far FROM backstop.archive_status \gset
-- Finish a segment without waiting for it to be archived: it must not be.
INSERT INTO filler SELECT repeat('y', 100) FROM generate_series(1, 1000);
SELECT pg_switch_wal() IS NOT NULL AS wrote_wal;
SELECT wait_for_failures(:failures_so_far + 1) AS archiving_refused;
SELECT last_error LIKE '%belongs to another cluster: cluster.json records system identifier 42%' AS says_foreign
FROM backstop.archive_status;
SELECT "check", status FROM backstop.doctor() WHERE "check" = 'repository_owner';
ALTER SYSTEM RESET backstop.cluster_name;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT next_segment() IS NOT NULL AS wrote_wal;
\! wal.sh ready-count

-- 4. A damaged object is refused by fetch: error exit, nothing written for PostgreSQL to replay.
\! wal.sh corrupt-object $FIRST
\! wal.sh fetch $FIRST
\! wal.sh fetch 0000000100000000000000FF
\! wal.sh verify
