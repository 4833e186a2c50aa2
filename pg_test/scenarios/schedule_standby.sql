-- Nothing runs on a standby unless its schedule says so. The drills that write nothing (wal_fetch,
-- pitr) can be moved off the primary with runs_on => 'standby'; a job that writes is refused there.
-- A standby's tables are read-only, so it keeps its own runs, listed by backstop.standby_runs().
-- The scheduler's clock runs a minute per second (backstop.test_clock).
CREATE EXTENSION backstop;
\set ECHO none
\o /dev/null
\i pg_test/lib/helpers.sql
\o
\set ECHO all
SET client_min_messages = error;
CREATE TABLE orders (id int PRIMARY KEY, note text);
INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g;
SELECT state FROM backstop.run_job('base_backup', '{}');
SELECT format('60@%s', floor(extract(epoch FROM now()))) AS clock \gset
ALTER SYSTEM SET backstop.database = 'schedule_standby';
ALTER SYSTEM SET backstop.test_clock = :'clock';
SELECT pg_reload_conf() AS reloaded;
SELECT wait_until($$EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'backstop scheduler' AND datname = 'schedule_standby')$$, 30) AS scheduler_connected_here;

-- Refused, with the reason: a job that writes runs only on the primary.
SELECT error_of($$SELECT backstop.schedule('standby-backup', '0 1 * * *', 'base_backup', runs_on => 'standby')$$);
SELECT error_of($$SELECT backstop.schedule('standby-where', '0 1 * * *', 'wal_fetch', runs_on => 'replica')$$);

-- The WAL drill every minute on the standby only, and the same drill on the primary only.
SELECT name FROM backstop.schedule('wal-drill-on-standby', '* * * * *', 'wal_fetch', runs_on => 'standby');
SELECT name FROM backstop.schedule('wal-drill-on-primary', '* * * * *', 'wal_fetch');
-- The PITR drill, the heavy one, every ten minutes on the standby: the primary restores nothing.
SELECT name FROM backstop.schedule('pitr-drill-on-standby', '*/10 * * * *', 'pitr', '{"tables": ["public.orders"]}', runs_on => 'standby');
SELECT error_of($$SELECT backstop.alter_schedule('wal-drill-on-standby', job => 'expire', args => '{"backups": {"keep_last": 2}}')$$);
\! server.sh standby-start
\! server.sh standby-wait schedule_standby "SELECT count(*) >= 2 FROM backstop.standby_runs() WHERE schedule = 'wal-drill-on-standby' AND state = 'succeeded'" 60
\! server.sh standby-wait schedule_standby "SELECT count(*) >= 1 FROM backstop.standby_runs() WHERE schedule = 'pitr-drill-on-standby' AND state = 'succeeded'" 180
-- On the standby only the standby's schedules ran; the WAL drill checked the WAL for real, and the
-- PITR drill found the rows the base backup counted.
\! server.sh standby-sql schedule_standby "SELECT DISTINCT schedule, kind FROM backstop.standby_runs() ORDER BY 1"
\! server.sh standby-sql schedule_standby "SELECT count(*) FILTER (WHERE state NOT IN ('succeeded', 'running', 'starting')) = 0 FROM backstop.standby_runs()"
\! server.sh standby-sql schedule_standby "SELECT bool_and((result->>'segments_in_chain')::int >= 1) FROM backstop.standby_runs() WHERE state = 'succeeded' AND kind = 'wal_fetch'"
\! server.sh standby-sql schedule_standby "SELECT result->'tables'->0->>'table', result->'tables'->0->>'rows_at_backup', result->'tables'->0->>'rows_recovered' FROM backstop.standby_runs() WHERE state = 'succeeded' AND kind = 'pitr' LIMIT 1"
-- doctor on the standby judges the schedules and drills that run there by the standby's own runs
-- (the PITR drill ran only there); the primary's history is not the standby's.
\! server.sh standby-sql schedule_standby "SELECT count(*) >= 20 AS answers, string_agg(\"check\", ',') FILTER (WHERE status = 'fail') AS failing FROM backstop.doctor()"
\! server.sh standby-sql schedule_standby "SELECT \"check\", status FROM backstop.doctor() WHERE \"check\" IN ('base_backup', 'pitr_reaches_now') ORDER BY 1"
\! server.sh standby-sql schedule_standby "SELECT \"check\", status, detail ~ 'passed .* ago on this standby in' FROM backstop.status WHERE \"check\" = 'drill_pitr'"
\! server.sh standby-sql schedule_standby "SELECT \"check\", status, detail ~ 'pitr-drill-on-standby: last success' AND detail ~ 'wal-drill-on-standby: last success' FROM backstop.status WHERE \"check\" = 'schedules'"
-- On the primary the primary's schedule ran, and the standby's never did.
SELECT wait_until($$EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = 'wal-drill-on-primary' AND state = 'succeeded')$$, 30) AS primary_drill_ran;
SELECT count(*) AS standby_schedule_runs_here FROM backstop.job_runs WHERE schedule IN ('wal-drill-on-standby', 'pitr-drill-on-standby');
SELECT count(*) AS standby_runs_listed_here FROM backstop.standby_runs();
-- doctor on the primary does not call the standby's schedules overdue or never run.
SELECT "check", status, detail ~ 'pitr-drill-on-standby: runs on standbys' AS standby_schedule_named FROM backstop.status WHERE "check" = 'schedules';

-- Paused on the primary, the standby's schedules stop there too; its drills left nothing behind.
SELECT count(*) AS paused FROM backstop.schedules s, backstop.alter_schedule(s.name, enabled => false) WHERE s.runs_on = 'standby';
\! server.sh standby-wait schedule_standby "SELECT bool_and(NOT enabled) FROM backstop.schedules WHERE runs_on = 'standby'" 30
\! server.sh standby-wait schedule_standby "SELECT count(*) = 0 FROM backstop.standby_runs() WHERE state IN ('running', 'starting')" 120
SELECT count(*) AS drill_directories_left FROM pg_ls_dir('/tmp') d WHERE d LIKE 'backstop-drill-%';
\! server.sh standby-stop
