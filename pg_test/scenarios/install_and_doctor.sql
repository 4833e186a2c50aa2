-- A DBA installs backstop on a cluster configured for it and asks whether it is ready.
CREATE EXTENSION backstop;
SELECT extversion, nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'backstop';
-- Ship one segment so the archive module claims the repository namespace.
SELECT pg_switch_wal() IS NOT NULL AS switched;
DO $$
BEGIN
    FOR attempt IN 1..200 LOOP
        EXIT WHEN (SELECT archived_count > 0 FROM pg_stat_archiver);
        PERFORM pg_sleep(0.05);
        PERFORM pg_stat_clear_snapshot();  -- statistics are cached per transaction
    END LOOP;
END
$$;
SELECT archived_count > 0 AS archived, failed_count FROM pg_stat_archiver;
SELECT "check", status FROM backstop.doctor();
-- Every check that is not ok says what to do.
SELECT "check" FROM backstop.doctor() WHERE status <> 'ok' AND coalesce(hint, '') = '';
SELECT r ->> 'verdict' AS verdict, r ->> 'reason' AS reason, jsonb_array_length(r -> 'checks') AS checks
FROM backstop.doctor_report() AS r;
-- A base backup: without one, archived WAL restores nothing and doctor says so.
SET client_min_messages = warning;
SELECT state, kind FROM backstop.base_backup();
RESET client_min_messages;
SELECT "check", status FROM backstop.doctor() WHERE "check" IN ('base_backup', 'pitr_reaches_now', 'backup_job');
-- With encryption configured too, the cluster is ready.
SET backstop.encryption_recipients = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p';
SELECT backstop.doctor_report() ->> 'verdict' AS verdict;
SELECT "check", status FROM backstop.doctor() WHERE "check" = 'repository_complete';
-- Someone with delete access to the bucket removes the newest WAL: recovery_window ends in a break
-- naming what is gone (not a window that quietly ends earlier), and doctor says so.
CREATE TABLE written_before_the_loss AS SELECT 1 AS x;
SELECT pg_walfile_name(pg_switch_wal()) AS newest_segment \gset
SET scenario.newest_segment = :'newest_segment';
DO $$
BEGIN
    FOR attempt IN 1..600 LOOP
        EXIT WHEN (SELECT last_archived_wal = current_setting('scenario.newest_segment') FROM pg_stat_archiver);
        PERFORM pg_sleep(0.05);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
END $$;
\setenv NEWEST_SEGMENT :newest_segment
SELECT last_archived_wal = :'newest_segment' AS archived FROM pg_stat_archiver;
\! rm "$(dirname "$PGDATA")"/repository/*/wal/*/"$NEWEST_SEGMENT"
SELECT status, detail = 'segments ' || :'newest_segment' || ' to ' || :'newest_segment'
       || ' were archived by this server but are gone from the repository (deleted?): recovery ends before them' AS names_the_hole
  FROM backstop.recovery_window() WHERE status = 'break';
SELECT count(*) AS restorable_parts FROM backstop.recovery_window() WHERE status = 'restorable';
SELECT "check", status, detail = :'newest_segment' || ', the WAL file archived last, is gone' AS names_it
  FROM backstop.doctor() WHERE "check" = 'repository_complete';
-- Someone with delete access to the bucket removes that backup: doctor names what this server
-- wrote and the repository lost, instead of a recovery window that quietly starts later.
\! rm -r "$(dirname "$PGDATA")"/repository/*/backups
SELECT "check", status, detail LIKE '1 base backup(s) this server took and never expired are gone (first: %' AS names_it
  FROM backstop.doctor() WHERE "check" = 'repository_complete';
SELECT backstop.doctor_report() ->> 'verdict' AS verdict;
-- The same checks against an S3 repository (Garage on loopback).
SELECT set_config('backstop.repository', 's3://' || :'s3_bucket' || '/scenario-doctor', false) AS repository;
SET backstop.s3_endpoint = :'s3_endpoint';
SET backstop.s3_region = 'garage';
SET backstop.s3_force_path_style = on;
SET backstop.s3_access_key_id = :'s3_access_key_id';
SET backstop.s3_secret_access_key = :'s3_secret_access_key';
SELECT "check", status FROM backstop.doctor() WHERE "check" LIKE 'repository%';
-- Wrong credentials: not reachable, and the detail says why without showing any secret.
SET backstop.s3_secret_access_key = 'not-the-right-secret';
SELECT "check", status, detail LIKE '%access denied%' AS says_access_denied,
       detail LIKE '%not-the-right-secret%' AS leaks_secret
FROM backstop.doctor() WHERE "check" = 'repository_reachable';
-- A bad setting is refused with the accepted form.
SET backstop.repository = 'ftp://backups.example.com/pg';
