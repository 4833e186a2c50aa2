-- A DBA's week with the scheduler. The scheduler's clock runs an hour per second
-- (backstop.test_clock), so a day of cron passes in 24 seconds and nothing sleeps for minutes.
-- Schedules are created (bad ones refused with the reason) and fire on time; an exclusive lock
-- makes a snapshot time out, later runs of it skipped and the run retried; a damaged snapshot makes
-- the restore drill fail and doctor turn degraded; a killed job is recorded as failed; SIGTERM
-- stops the scheduler within seconds; schedules and history survive a restart, and runs that fell
-- due while the server was down are recorded as missed.
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
-- Job ids and progress NOTICEs differ from run to run; results and errors are printed instead.
SET client_min_messages = error;
CREATE TABLE orders (id int PRIMARY KEY, note text);
INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g;
-- The scheduler's clock reads noon today (UTC) now, so the habits fire in the same order whenever
-- the scenario runs: retention at 14:00, snapshot at 01:30 Berlin, base backup at 01:00, drills at
-- 08:00 and 10:00.
SELECT format('3600@%s@%s', floor(extract(epoch FROM now())), extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC') + interval '12 hours')::bigint) AS clock \gset
ALTER SYSTEM SET backstop.database = 'schedule_week';
ALTER SYSTEM SET backstop.test_clock = :'clock';
-- Runs up to six hours late (six seconds here) still run: a busy machine does not turn them into
-- missed runs.
ALTER SYSTEM SET backstop.missed_run_grace = '6h';
SELECT pg_reload_conf() AS reloaded;
SELECT wait_until($$EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'backstop scheduler' AND datname = 'schedule_week')$$, 30) AS scheduler_connected_here;

-- Refused at schedule(), with the reason: nothing bad reaches the scheduler.
SELECT error_of($$SELECT backstop.schedule('bad-cron', '61 2 * * *', 'base_backup')$$);
SELECT error_of($$SELECT backstop.schedule('bad-job', '0 2 * * *', 'vacuum')$$);
SELECT error_of($$SELECT backstop.schedule('bad-args', '0 2 * * *', 'expire', '{"backups": {"dayly": 14}}')$$);
SELECT error_of($$SELECT backstop.schedule('bad-zone', '0 2 * * *', 'base_backup', time_zone => 'Mars/Olympus')$$);
SELECT error_of($$SELECT backstop.schedule('bad-table', '0 2 * * *', 'snapshot', '{"tables": ["public.nope"]}')$$);
SELECT error_of($$SELECT backstop.schedule('bad-overlap', '0 2 * * *', 'base_backup', overlap => 'wait')$$);

-- The week's habits: nightly base backup and snapshot, daily drills and retention.
SELECT name, next_run_at > now() AS in_the_future FROM backstop.schedule('nightly-base', '0 1 * * *', 'base_backup', '{"kind": "auto"}');
SELECT name FROM backstop.schedule('nightly-orders', '30 1 * * *', 'snapshot', '{"tables": ["public.orders"]}', time_zone => 'Europe/Berlin');
SELECT name FROM backstop.schedule('drill-snapshot', '0 8 * * *', 'snapshot_restore', '{"table": "public.orders"}');
SELECT name FROM backstop.schedule('drill-wal', '0 10 * * *', 'wal_fetch', '{"newest": 2, "sample": 2}');
SELECT name FROM backstop.schedule('retention', '0 14 * * *', 'expire', '{"backups": {"keep_last": 2}, "snapshots": {"keep_last": 3}, "grace": "0s"}');
SELECT error_of($$SELECT backstop.schedule('retention', '0 7 * * *', 'expire', '{"backups": {"keep_last": 9}}')$$);
-- 01:30 in Berlin is 00:30 or 23:30 UTC, depending on the season.
SELECT name, to_char(next_run_at AT TIME ZONE 'Europe/Berlin', 'HH24:MI') AS berlin_time FROM backstop.schedules WHERE name = 'nightly-orders';

-- Three days and a bit pass: every habit runs every day, each in its own worker.
SELECT wait_until($$(SELECT count(*) FROM backstop.job_runs WHERE schedule = 'retention' AND state = 'succeeded') >= 4$$, 300) AS three_days_passed;
SELECT schedule, count(*) FILTER (WHERE state = 'succeeded') >= 2 AS ran_daily,
       count(*) FILTER (WHERE state NOT IN ('succeeded', 'running')) AS not_succeeded
  FROM backstop.job_runs WHERE schedule IS NOT NULL GROUP BY schedule ORDER BY schedule;
SELECT bool_and(seconds > 0) AS every_run_measured, bool_and(finished_at >= started_at) AS times_in_order
  FROM backstop.job_runs WHERE state = 'succeeded';
SELECT result->>'drill' AS drill, result->'tables'->0->>'rows' AS rows_compared
  FROM backstop.job_runs WHERE kind = 'snapshot_restore' AND state = 'succeeded' ORDER BY job_id DESC LIMIT 1;
SELECT (result->>'segments_in_chain')::int >= 1 AS wal_chain_checked, jsonb_array_length(result->'fetched') >= 1 AS segments_fetched
  FROM backstop.job_runs WHERE kind = 'wal_fetch' AND state = 'succeeded' ORDER BY job_id DESC LIMIT 1;
-- Retention keeps two base backups (three were taken); the drill left no scratch table behind.
SELECT count(*) AS backups_kept FROM backstop.backups();
SELECT (SELECT count(*) FROM backstop.job_runs WHERE kind = 'base_backup' AND state = 'succeeded') >= 3 AS three_or_more_taken,
       sum((result->>'backups_removed')::int) >= 1 AS older_ones_expired, sum((result->>'wal_removed')::int) > 0 AS their_wal_expired
  FROM backstop.job_runs WHERE schedule = 'retention';
SELECT count(*) AS scratch_tables FROM pg_class WHERE relname LIKE 'backstop_drill_%';
-- The PITR drill, on demand: the newest base backup restored into a throwaway server, replay
-- paused where the backup counted its rows and the table counted again there (rows written since
-- the backup must not be in that count), the rest of the WAL replayed, the primary key checked
-- with amcheck; then the server is stopped and its directory removed.
INSERT INTO orders SELECT g, 'written after the newest base backup' FROM generate_series(1001, 1005) g;
SELECT pg_walfile_name(pg_switch_wal()) AS switched_wal \gset
SELECT wait_until(format($$(SELECT last_archived_wal FROM pg_stat_archiver) >= %L$$, :'switched_wal'), 30) AS new_rows_archived;
SELECT state, result->>'drill' AS drill, result->'tables'->0->>'table' AS table_read,
       (result->'tables'->0->>'rows_at_backup')::int AS rows_at_backup,
       (result->'tables'->0->>'rows_recovered')::int AS rows_recovered, (SELECT count(*) FROM orders) AS rows_now,
       result->>'replayed_to' >= :'switched_wal' AS replayed_past_them,
       result->'indexes'->0->>'bt_index_check' AS primary_key_check, seconds > 0 AS measured
  FROM backstop.run_job('pitr', '{"tables": ["public.orders"], "indexes": ["public.orders_pkey"]}');
SELECT count(*) AS drill_directories_left FROM pg_ls_dir('/tmp') d WHERE d LIKE 'backstop-drill-%';
SELECT "check", status FROM backstop.doctor() WHERE "check" IN ('scheduler', 'schedules', 'drill_snapshot_restore', 'drill_wal_fetch', 'drill_pitr', 'snapshot_age') ORDER BY "check";
SELECT name, last_state FROM backstop.schedule_status ORDER BY name;

-- A snapshot blocked by an exclusive lock: it times out after 2 s, runs due meanwhile are
-- skipped (overlap = skip), and the timed-out run is retried once.
SELECT name FROM backstop.schedule('hourly-orders', '0 * * * *', 'snapshot', '{"tables": ["public.orders"]}',
                                   timeout => '2 seconds', max_retries => 1, retry_backoff => '1 second');
\! server.sh hold-lock schedule_week public.orders 6
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-orders' AND state = 'timed_out')$$, 30) AS timed_out;
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-orders' AND state = 'skipped')$$, 30) AS skipped_while_running;
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-orders' AND attempt = 2)$$, 30) AS retried;
SELECT error FROM backstop.job_runs WHERE schedule = 'hourly-orders' AND state = 'timed_out' ORDER BY job_id LIMIT 1;
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-orders' AND state = 'succeeded')$$, 30) AS succeeded_once_the_lock_went;
SELECT backstop.unschedule('hourly-orders') AS unscheduled;

-- With overlap = 'queue' a run that falls due while the previous one still runs waits, and starts
-- as soon as that one ends (one waits; the ones due meanwhile are skipped).
SELECT name FROM backstop.schedule('hourly-queued', '0 * * * *', 'snapshot', '{"tables": ["public.orders"]}', overlap => 'queue');
\! server.sh hold-lock schedule_week public.orders 4
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-queued' AND state = 'queued')$$, 30) AS queued_while_running;
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-queued' AND state = 'succeeded' AND not_before IS NOT NULL)$$, 30) AS queued_run_ran_after;
SELECT count(*) FILTER (WHERE state = 'queued') <= 1 AS at_most_one_waits FROM backstop.job_runs WHERE schedule = 'hourly-queued';
SELECT backstop.unschedule('hourly-queued') AS unscheduled;

-- Someone damages the newest snapshot: the next drill fails, saying what, and doctor turns degraded.
SELECT backstop.alter_schedule('nightly-orders', enabled => false) IS NOT NULL AS snapshots_paused;
SELECT wait_until($$NOT EXISTS (SELECT 1 FROM backstop.job_runs WHERE kind = 'snapshot' AND state = 'running')$$, 30) AS no_snapshot_running;
SELECT snapshot_id AS newest FROM backstop.snapshots('public.orders', false) ORDER BY taken_at DESC LIMIT 1 \gset
\setenv NEWEST :newest
\! snapshot.sh corrupt public orders $NEWEST
SELECT max(job_id) AS before_damage FROM backstop.job_runs \gset
SELECT wait_until(format($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE kind = 'snapshot_restore' AND job_id > %s AND state = 'failed')$$, :before_damage), 60) AS drill_failed;
SELECT regexp_replace(regexp_replace(regexp_replace(error, 'snap_[0-9a-f]+', 'snap_<id>', 'g'), '[0-9a-f]{64}', '<sha256>', 'g'),
                      '\m[0-9]{15,20}\M', '<cluster>', 'g') AS drill_error
  FROM backstop.job_runs WHERE kind = 'snapshot_restore' AND state = 'failed' ORDER BY job_id DESC LIMIT 1;
SELECT count(*) AS scratch_tables FROM pg_class WHERE relname LIKE 'backstop_drill_%';
SELECT "check", status FROM backstop.doctor() WHERE "check" IN ('schedules', 'drill_snapshot_restore') ORDER BY "check";
SELECT backstop.doctor_report()->>'verdict' AS verdict;
\! server.sh log-has 'backstop: job run failed: job'
-- Every pack damaged: the PITR drill fails with the reason, and leaves nothing behind.
\! pitr.sh damage-packs corrupt
-- Packs are fetched in parallel: whichever fails first names its checksum (the stored object's, or
-- one of its chunks'); either refuses the pack.
SELECT state, regexp_replace(regexp_replace(regexp_replace(regexp_replace(error, '[0-9a-f]{64}', '<sha256>', 'g'), '\m[0-9]{15,20}\M', '<cluster>', 'g'),
                             'packs/[0-9a-f]{2}/', 'packs/<xx>/', 'g'),
                             'is corrupt: (sha256 of the stored bytes is <sha256> but the object records <sha256>|chunk <sha256> does not match its checksum; it was not written)$',
                             'is corrupt: <a checksum does not match>') AS error
  FROM backstop.run_job('pitr', '{"tables": ["public.orders"]}');
SELECT count(*) AS drill_directories_left FROM pg_ls_dir('/tmp') d WHERE d LIKE 'backstop-drill-%';

-- A job killed with SIGKILL mid-run: the server restarts after the crash, and the run is recorded
-- as failed, not forgotten. A scheduled run the crash interrupts is also retried, as its schedule
-- allows (the schedule is paused once its run started, so nothing else fires, and the retry waits
-- queued until the schedule is enabled again).
\! server.sh hold-lock schedule_week public.orders 30
SELECT job_id AS killed_job FROM backstop.run_job('snapshot', '{"tables": ["public.orders"]}', wait => false) \gset
SELECT wait_until(format($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE job_id = %s AND state = 'running')$$, :killed_job), 30) AS job_running;
SELECT name FROM backstop.schedule('hourly-snapshot', '0 * * * *', 'snapshot', '{"tables": ["public.orders"]}', max_retries => 1, retry_backoff => '1 minute');
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-snapshot' AND state = 'running')$$, 30) AS scheduled_run_running;
SELECT count(*) AS paused FROM backstop.alter_schedule('hourly-snapshot', enabled => false);
SELECT job_id AS interrupted_job FROM backstop.job_runs WHERE schedule = 'hourly-snapshot' AND state = 'running' ORDER BY job_id LIMIT 1 \gset
SELECT pid AS killed_pid FROM backstop.job_runs WHERE job_id = :killed_job \gset
\setenv KILLED_PID :killed_pid
\! server.sh kill-9 $KILLED_PID
\c
SET client_min_messages = error;
SELECT wait_until(format($$(SELECT state FROM backstop.job_runs WHERE job_id = %s) = 'failed'$$, :killed_job), 60) AS recorded_failed;
SELECT state, error FROM backstop.job_runs WHERE job_id = :killed_job;
SELECT wait_until(format($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-snapshot' AND job_id > %s AND attempt = 2)$$, :interrupted_job), 60) AS retry_queued;
SELECT r.state, r.attempt, r.scheduled_for = i.scheduled_for AS same_occurrence, i.state AS interrupted_state
  FROM backstop.job_runs r, backstop.job_runs i
 WHERE i.job_id = :interrupted_job AND r.schedule = 'hourly-snapshot' AND r.job_id > i.job_id AND r.attempt = 2;
SELECT backstop.unschedule('hourly-snapshot') AS unscheduled;

-- SIGTERM stops the scheduler within seconds; the postmaster starts it again.
SELECT pid AS scheduler_pid FROM pg_stat_activity WHERE backend_type = 'backstop scheduler' \gset
SELECT pg_terminate_backend(:scheduler_pid) AS terminated;
SELECT wait_until(format($$NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)$$, :scheduler_pid), 5) AS stopped_within_5_seconds;
SELECT wait_until($$EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'backstop scheduler')$$, 30) AS started_again;

-- A restart: schedules and history survive, and runs that fell due while the server was down are
-- recorded as missed (eight seconds down are eight hours of the scheduler's clock: an hourly
-- schedule runs once for the newest hour, within the grace, and records the others as missed).
SELECT name FROM backstop.schedule('hourly-dry-expire', '0 * * * *', 'expire', '{"dry_run": true, "backups": {"keep_last": 2}}');
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'hourly-dry-expire' AND state = 'succeeded')$$, 30) AS hourly_ran;
SELECT count(*) AS runs_before FROM backstop.job_runs \gset
SELECT count(*) AS missed_before FROM backstop.job_runs WHERE state = 'missed' \gset
\! server.sh restart-after 8
\c
SET client_min_messages = error;
SELECT count(*) AS schedules FROM backstop.schedules;
SELECT count(*) >= :runs_before AS history_kept FROM backstop.job_runs;
SELECT wait_until(format($$(SELECT count(*) FROM backstop.job_runs WHERE state = 'missed') > %s$$, :missed_before), 30) AS missed_runs_recorded;
SELECT wait_until($$(SELECT count(*) FROM backstop.job_runs WHERE schedule = 'hourly-dry-expire' AND state = 'succeeded') >= 2$$, 30) AS runs_continue_after_restart;
SELECT regexp_replace(error, '^[0-9]+ ', 'N ') AS why FROM backstop.job_runs
 WHERE schedule = 'hourly-dry-expire' AND state = 'missed' ORDER BY job_id DESC LIMIT 1;
