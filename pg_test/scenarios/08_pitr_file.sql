-- Base backups and point-in-time recovery on the embedded default, a local-directory repository:
-- the bad migration dropped a table; the cluster is rebuilt as it was just before, by time, LSN,
-- xid and restore point, from a full and an incremental backup, on a second timeline too.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
\setenv PGDATABASE :DBNAME
\i pg_test/lib/pitr_story.sql
-- Refusals: a target before every backup's end; a busy directory without --delta.
\! pitr.sh restore too_early --target-time "2000-01-01 00:00:00+00"
\! pitr.sh restore at_xid --target-time "$TARGET_TIME"
-- A backup cancelled while it waits for its WAL (archiving stalled) leaves no manifest.
\! pitr.sh chmod-wal 555
SET statement_timeout = '4s';
SELECT * FROM backstop.base_backup();
RESET statement_timeout;
\! pitr.sh chmod-wal 755
SELECT count(*) AS backups_after_cancel FROM backstop.backups();
SELECT pg_sleep(1);
SELECT state, error LIKE '%cancel%' AS says_cancelled FROM backstop.jobs ORDER BY job_id DESC LIMIT 1;
-- Damage: a corrupted chunk, then a missing one; each refused with nothing startable left behind.
\! pitr.sh damage-packs corrupt
\! pitr.sh restore damaged --target-time "$TARGET_TIME"
\! pitr.sh verify
\! pitr.sh damage-packs remove
\! pitr.sh restore missing --target-time "$TARGET_TIME"
SELECT count(*) FILTER (WHERE NOT verified) AS unverified_backups FROM backstop.backups();
