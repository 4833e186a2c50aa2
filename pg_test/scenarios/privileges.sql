-- Nothing in backstop is open to PUBLIC, and secrets stay with superusers.
CREATE EXTENSION backstop;
CREATE ROLE scenario_plain LOGIN;
CREATE ROLE scenario_operator LOGIN IN ROLE backstop_admin;
ALTER SYSTEM SET backstop.s3_secret_access_key = 'scenario-secret-do-not-show';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
\c - scenario_plain
SELECT * FROM backstop.doctor();
SELECT backstop.doctor_report();
SHOW backstop.s3_secret_access_key;
SELECT current_setting('backstop.s3_secret_access_key');
SELECT name FROM pg_settings WHERE name LIKE 'backstop.%' ORDER BY name;
SET backstop.repository = 'file:///tmp/elsewhere';
\c - scenario_operator
SELECT count(*) AS checks FROM backstop.doctor();
SHOW backstop.s3_secret_access_key;
\c - postgres
SHOW backstop.s3_secret_access_key;
SELECT count(*) AS secret_in_pg_settings FROM pg_settings WHERE setting LIKE '%scenario-secret%';
ALTER SYSTEM RESET backstop.s3_secret_access_key;
SELECT pg_reload_conf();
-- backstop_admin members read the restore log but cannot write it: the validation gate holds.
\c - scenario_operator
SELECT count(*) AS restores FROM backstop.restores;
INSERT INTO backstop.restores (target_oid, target_table, source_table, snapshot_id, rows, validation_passed)
     VALUES ('pg_catalog.pg_class'::regclass, 'x', 'y', 'snap_00000000', 0, true);
UPDATE backstop.restores SET validation_passed = true;
-- A base backup reads every table, pg_authid and the server's configuration: a plain
-- backstop_admin member may not take one, run expire or the PITR drill, or schedule them.
SELECT * FROM backstop.base_backup();
SELECT * FROM backstop.run_job('expire', '{"dry_run": true, "backups": {"keep_last": 2}}');
SELECT * FROM backstop.run_job('pitr');
SELECT * FROM backstop.schedule('sneaky', '0 3 * * *', 'base_backup');
\c - postgres
-- backstop_operator says what it gives: every table (pg_read_all_data).
SELECT pg_has_role('backstop_operator', 'pg_read_all_data', 'MEMBER') AS operator_reads_all_data,
       pg_has_role('backstop_operator', 'backstop_admin', 'MEMBER') AS operator_is_admin;
GRANT backstop_operator TO scenario_operator;
\c - scenario_operator
-- Granted it, they take base backups (the job's worker runs as the server), and read the job
-- history but cannot write it.
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup();
RESET client_min_messages;
SELECT count(*) AS jobs, min(requested_by) AS requested_by, min(state) AS state FROM backstop.job_runs;
INSERT INTO backstop.job_runs (job_id, kind, state, requested_by) VALUES (999, 'base_backup', 'succeeded', 'x');
SELECT count(*) AS running FROM backstop.job_progress;
-- A plain backstop_admin member does not see that run (its result names tables and their row
-- counts), yet her doctor() reports the history as a superuser's does.
\c - postgres
CREATE ROLE scenario_admin LOGIN IN ROLE backstop_admin;
SELECT count(*) AS base_backup_runs_superuser_sees FROM backstop.job_runs WHERE kind = 'base_backup';
SELECT "check", status, detail LIKE 'the last base backup job, %, succeeded' AS saw_the_run FROM backstop.doctor() WHERE "check" = 'backup_job';
\c - scenario_admin
SELECT count(*) AS base_backup_runs_she_sees FROM backstop.job_runs WHERE kind = 'base_backup';
SELECT "check", status, detail LIKE 'the last base backup job, %, succeeded' AS saw_the_run FROM backstop.doctor() WHERE "check" = 'backup_job';
-- The same rule for schedule_status (a scheduled base backup's last run) and job_progress (a
-- base backup running now, stalled waiting for its WAL): she sees neither, a superuser both.
\c - postgres
SET client_min_messages = warning;
SELECT name FROM backstop.schedule('nightly_backup', '0 3 * * *', 'base_backup');
SELECT state FROM backstop.run_now('nightly_backup', wait => true);
RESET client_min_messages;
SELECT name, last_state, last_success_at IS NOT NULL AS shows_success FROM backstop.schedule_status;
\! pitr.sh chmod-wal 555
SELECT job_id AS stalled_job FROM backstop.base_backup(wait => false) \gset
DO $$
BEGIN
    FOR attempt IN 1..600 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM backstop.job_progress WHERE phase = 'waiting for WAL to be archived');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT kind, phase FROM backstop.job_progress;
\c - scenario_admin
SELECT name, last_state, last_success_at IS NOT NULL AS shows_success FROM backstop.schedule_status;
SELECT count(*) AS running_jobs_she_sees FROM backstop.job_progress;
\c - postgres
SELECT pg_terminate_backend(pid) AS cancelled FROM backstop.job_progress;
\! pitr.sh chmod-wal 755
SELECT backstop.unschedule('nightly_backup');
-- Snapshots, the restore log and logical backups name tables and row counts: she sees those of
-- tables she may read (none here), a superuser all of them.
CREATE TABLE salaries (id int PRIMARY KEY, amount int);
INSERT INTO salaries SELECT g, g * 1000 FROM generate_series(1, 42) g;
SET client_min_messages = warning;
SELECT backstop.snapshot_table('salaries') ~ '^snap_' AS snapshot_taken;
SELECT backstop.restore_table('salaries') AS rows_restored;
SELECT state FROM backstop.logical_backup();
RESET client_min_messages;
SELECT table_name, rows FROM backstop.snapshots(verify => false);
SELECT target_table, rows FROM backstop.restores;
SELECT tables > 0 AS counts_tables, rows AS rows_dumped FROM backstop.logical_backups();
\c - scenario_admin
SELECT count(*) AS snapshots_she_sees FROM backstop.snapshots(verify => false);
SELECT count(*) AS restores_she_sees FROM backstop.restores;
SELECT count(*) AS logical_backups, max(tables) AS tables, max(rows) AS rows FROM backstop.logical_backups();
\c - scenario_plain
SELECT * FROM backstop.base_backup();
\c - postgres
-- A backstop_admin left behind that can log in is refused; a plain group role is adopted, its
-- members named.
DROP EXTENSION backstop;
ALTER ROLE backstop_admin LOGIN;
CREATE EXTENSION backstop;
ALTER ROLE backstop_admin NOLOGIN;
CREATE EXTENSION backstop;
DROP ROLE scenario_plain;
DROP ROLE scenario_admin;
REVOKE backstop_operator FROM scenario_operator;
DROP ROLE scenario_operator;
