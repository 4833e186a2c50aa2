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
-- The caller's ERROR returns at once; the worker stops at its next check, moments later.
SELECT wait_for_job(max(job_id)) AS cancelled_job_ended FROM backstop.job_runs;
-- Still stalled: a backup started without waiting shows in job_progress, a second one is refused
-- (one at a time), doctor says it runs; terminating its worker cancels it.
CREATE FUNCTION wait_for_phase(id bigint, wanted text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR attempt IN 1..600 LOOP
        IF EXISTS (SELECT 1 FROM backstop.job_progress WHERE job_id = id AND phase = wanted) THEN RETURN true; END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;
SELECT job_id AS stalled_job FROM backstop.base_backup(wait => false) \gset
SELECT wait_for_phase(:stalled_job, 'waiting for WAL to be archived') AS waiting_for_wal;
SELECT kind, phase, files_done = files_total AND files_total > 500 AS copied_every_file, eta_seconds IS NULL AS no_eta
FROM backstop.job_progress;
SELECT regexp_replace(error_of('SELECT * FROM backstop.base_backup()'), 'pid [0-9]+', 'pid <pid>') AS second_backup;
SELECT status, detail LIKE '%is running%' AS says_running FROM backstop.doctor() WHERE "check" = 'backup_job';
SELECT pg_terminate_backend(pid) AS terminated FROM backstop.job_progress;
SELECT wait_for_job(:stalled_job) AS stalled_job_ended;
\! pitr.sh chmod-wal 755
SELECT count(*) AS backups_after_cancel FROM backstop.backups();
SELECT pg_sleep(1);
SELECT state, error LIKE '%cancel%' AS says_cancelled FROM backstop.job_runs ORDER BY job_id DESC LIMIT 1;
-- Expire run from another database while a base backup runs: the cluster-wide lock refuses it
-- (its job fails and removes nothing), and the running backup ends whole and verified.
\! pitr.sh chmod-wal 555
SELECT job_id AS running_job FROM backstop.base_backup(wait => false) \gset
SELECT wait_for_phase(:running_job, 'waiting for WAL to be archived') AS waiting_for_wal_again;
\set home :DBNAME
CREATE DATABASE pitr_file_other;
\c pitr_file_other
CREATE EXTENSION backstop;
SELECT state, error FROM backstop.run_job('expire', '{"backups": {"keep_last": 1}}');
\c :home
\! pitr.sh chmod-wal 755
SELECT wait_for_job(:running_job) AS running_job_ended;
\! pitr.sh verify
-- The verify job, on demand here (on a schedule in production), reads WAL back too: the history
-- file the copy restored --as-primary archived is signed by that copy's key, not trusted here.
SET client_min_messages = error;
SELECT state, error ~ 'WAL file\(s\) do not read back.*00000002.history.*not trusted here' AS names_the_untrusted_file
  FROM backstop.run_job('verify');
RESET client_min_messages;
SELECT "check", status FROM backstop.doctor() WHERE "check" = 'repository_verified';
-- Trusting the new primary's public key, as a DBA does: every pack and WAL file reads back, then
-- a sample of them; doctor says the repository is verified.
\! pitr.sh trust-restored
SELECT pg_sleep(0.5);
SET client_min_messages = error;
SELECT state, result->>'ok' AS ok, result->>'packs_checked' = result->>'packs_total' AS read_every_pack,
       result->>'wal_checked' = result->>'wal_total' AS read_all_wal
  FROM backstop.run_job('verify');
RESET client_min_messages;
SET client_min_messages = error;
SELECT state, result->>'sample' AS sample FROM backstop.run_job('verify', '{"sample": 0.5}');
RESET client_min_messages;
SELECT "check", status FROM backstop.doctor() WHERE "check" = 'repository_verified';
-- Damage: a corrupted chunk, then a missing one; each refused with nothing startable left behind.
\! pitr.sh damage-packs corrupt
\! pitr.sh restore damaged --target-time "$TARGET_TIME"
\! pitr.sh verify
SET client_min_messages = error;
SELECT state, error LIKE 'verify found damage: %' AS names_the_damage FROM backstop.run_job('verify');
RESET client_min_messages;
SELECT "check", status FROM backstop.doctor() WHERE "check" = 'repository_verified';
\! pitr.sh damage-packs remove
\! pitr.sh restore missing --target-time "$TARGET_TIME"
SELECT count(*) FILTER (WHERE NOT verified) AS unverified_backups FROM backstop.backups();
