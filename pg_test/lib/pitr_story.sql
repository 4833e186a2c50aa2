-- The PITR story, shared by the file:// and Garage scenarios.
CREATE FUNCTION wait_for_job(id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text;
BEGIN
    FOR attempt IN 1..1200 LOOP
        SELECT state INTO s FROM backstop.job_runs WHERE job_id = id;
        IF s IS NOT NULL AND s <> 'running' THEN RETURN s; END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN 'still running';
END $$;
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
INSERT INTO accounts SELECT g, g * 10, repeat('a', 50) FROM generate_series(1, 20000) g;
-- A tablespace outside the data directory: backed up, and relocated by every restore below.
\getenv pgdata PGDATA
\set ts_dir :pgdata '_ts1'
\! mkdir -p "$PGDATA"_ts1
CREATE TABLESPACE ts1 LOCATION :'ts_dir';
CREATE TABLE audit (id int, what text) TABLESPACE ts1;
INSERT INTO audit SELECT g, 'row ' || g FROM generate_series(1, 5000) g;
-- Files written less than 2 s before a backup reads them are read again by the next one (their
-- mtime could hide a change); the cluster is seconds old, so let its files age first.
SELECT pg_sleep(2.5);
-- A full backup, waited for: the caller's session only waits, the worker does the work. Its
-- progress NOTICEs carry rates and sizes that differ on every run: counted here, then silenced.
-- This one pauses a second before copying (a test build's hook), so it runs long enough to report
-- progress on any machine: a backup over in a quarter second says nothing on the way.
ALTER SYSTEM SET backstop.test_backup_pause = 1000;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
\! psql -X -c "SELECT 1 FROM backstop.base_backup(kind => 'full')" 2>&1 | grep -c 'NOTICE:  base backup job [0-9]*: ' | sed -E 's/^[1-9][0-9]*$/progress notices: yes/'
ALTER SYSTEM RESET backstop.test_backup_pause;
SELECT pg_reload_conf();
SET client_min_messages = warning;
-- A second full backup reads and writes everything again: it references no pack of the first, so
-- damage to an older pack can never reach it.
SELECT state, kind, files > 500 AS all_files, bytes_new < bytes / 5 AS reused_earlier_packs FROM backstop.base_backup(kind => 'full');
SELECT count(*) AS backups, bool_and(verified) AS verified, min(kind) AS kind FROM backstop.backups();
SELECT count(*) AS running_jobs FROM backstop.job_progress;
-- Changes, then an incremental backup started without waiting.
UPDATE accounts SET balance = balance + 1 WHERE id <= 200;
SELECT job_id AS job, state FROM backstop.base_backup(wait => false) \gset
SELECT :'state' AS started_as;
SELECT wait_for_job(:job) AS incremental_job;
SELECT kind, bytes_new < bytes / 5 AS stored_a_fraction, verified FROM backstop.backups() ORDER BY backup_id DESC LIMIT 1;
SELECT state, result->>'kind' AS kind, (result->>'files_reused')::int > 0 AS reused_unchanged_files
FROM backstop.job_runs WHERE job_id = :job;
-- Later changes, each a recovery target.
INSERT INTO accounts SELECT g, 0, 'after backup' FROM generate_series(20001, 20500) g;
SELECT contents('accounts') AS at_lsn \gset
SELECT pg_current_wal_insert_lsn() AS target_lsn \gset
INSERT INTO accounts SELECT g, 0, 'after the LSN' FROM generate_series(20501, 20600) g;
BEGIN;
INSERT INTO accounts SELECT g, 0, 'the xid' FROM generate_series(20601, 20700) g;
SELECT txid_current() AS target_xid \gset
COMMIT;
SELECT contents('accounts') AS at_xid \gset
UPDATE accounts SET note = 'after the xid' WHERE id = 1;
SELECT pg_create_restore_point('before_migration') IS NOT NULL AS restore_point;
INSERT INTO audit SELECT g, 'after the backups' FROM generate_series(5001, 5100) g;
SELECT contents('accounts') AS at_t \gset
SELECT contents('audit') AS audit_at_t \gset
SELECT pg_sleep(1.1);
SELECT now() AS target_time \gset
SELECT pg_sleep(1.1);
-- The bad migration, and writes after it.
DROP TABLE accounts;
CREATE TABLE written_after_t AS SELECT 1 AS x;
SELECT next_segment() IS NOT NULL AS archived_to_here;
SELECT count(*) AS restorable_parts FROM backstop.recovery_window() WHERE status = 'restorable' AND timeline = 1;
SELECT "check", status FROM backstop.doctor() WHERE "check" IN ('base_backup', 'pitr_reaches_now', 'backup_job');
-- Rebuild the cluster as it was at T, on another port, archiving (its promotion starts timeline 2):
-- it replaces the primary (--as-primary), so it keeps archiving into the namespace. The other
-- restores below are copies: archive_mode off, schedules paused, the namespace read-only to them.
\setenv TARGET_TIME :target_time
\! pitr.sh restore at_time --target-time "$TARGET_TIME" --as-primary
\! pitr.sh start at_time 5441 archive
\! pitr.sh sql at_time 5441 "SELECT contents('accounts')"
SELECT :'at_t' AS expected_at_t;
\! pitr.sh sql at_time 5441 "SELECT contents('audit'), pg_tablespace_location(oid) LIKE '%at_time.ts%' AS relocated FROM pg_tablespace WHERE spcname = 'ts1'"
SELECT :'audit_at_t' AS expected_audit_at_t;
\! pitr.sh sql at_time 5441 "SELECT to_regclass('written_after_t') IS NULL AS nothing_after_t"
-- Timeline 2: write there, archive it, stop.
\! pitr.sh sql at_time 5441 "INSERT INTO accounts VALUES (99999, 0, 'timeline 2')"
\! pitr.sh sql at_time 5441 "SELECT next_segment() IS NOT NULL AS archived"
\! pitr.sh stop at_time
-- By LSN, into a new directory.
\setenv TARGET_LSN :target_lsn
\! pitr.sh restore at_lsn --target-lsn "$TARGET_LSN" --target-timeline current
\! pitr.sh start at_lsn 5442
\! pitr.sh sql at_lsn 5442 "SELECT contents('accounts')"
SELECT :'at_lsn' AS expected_at_lsn;
\! pitr.sh stop at_lsn
-- A delta restore over that stale, already promoted copy, to the restore point.
\! pitr.sh restore at_lsn --delta --target-name before_migration --target-timeline current
\! pitr.sh start at_lsn 5442
\! pitr.sh sql at_lsn 5442 "SELECT contents('accounts')"
\! pitr.sh stop at_lsn
-- By xid.
\setenv TARGET_XID :target_xid
\! pitr.sh restore at_xid --target-xid "$TARGET_XID" --target-timeline current
-- Not told --pg-bin, the restore looked for the programs of the backup's major and named them.
\! pitr.sh programs at_xid
-- Started as the restore left it, as a DBA would (nothing overridden): a copy is not production.
-- Archiving is off and its schedules paused (doctor says so and how to change it); WAL it writes
-- never reaches the namespace, and a base backup or expire on it is refused.
\! pitr.sh start at_xid 5443 as-restored
\! pitr.sh sql at_xid 5443 "SELECT contents('accounts')"
SELECT :'at_xid' AS expected_at_xid;
\! pitr.sh sql at_xid 5443 "SELECT current_setting('archive_mode') AS archive_mode, current_setting('backstop.scheduler') AS scheduler"
\! pitr.sh sql at_xid 5443 "SELECT status, detail FROM backstop.doctor() WHERE \"check\" = 'restored_copy'"
\! pitr.sh sql at_xid 5443 "CREATE TABLE on_the_copy AS SELECT 1 AS x; SELECT pg_switch_wal() IS NOT NULL AS switched"
\! pitr.sh sql at_xid 5443 "SELECT state, error FROM backstop.run_job('expire', '{\"backups\": {\"keep_last\": 1}}')"
\! pitr.sh sql at_xid 5443 "SELECT backup_id FROM backstop.base_backup()"
SELECT pg_sleep(2);
SELECT count(*) AS copy_timeline_in_namespace FROM backstop.recovery_window() WHERE timeline = 3;
\! pitr.sh stop at_xid
-- Timeline 2's end, through its .history file.
\! pitr.sh restore on_tl2 --target-timeline latest
\! pitr.sh start on_tl2 5444
\! pitr.sh sql on_tl2 5444 "SELECT note FROM accounts WHERE id = 99999"
\! pitr.sh stop on_tl2
-- A new replica from a backup, following the archive, without touching the primary.
\! pitr.sh restore replica --standby --target-timeline current
\! pitr.sh start-standby replica 5445
CREATE TABLE after_replica AS SELECT 42 AS answer;
SELECT next_segment() IS NOT NULL AS archived;
\! pitr.sh sql-until replica 5445 "SELECT answer FROM after_replica" 42
\! pitr.sh stop replica
