-- What the scheduler reports at a glance, for monitoring queries: one row per schedule with its
-- last run, last success and whether it is overdue. doctor() reads the same facts. It reads
-- job_runs with the caller's rights (security_invoker), so row security shows a plain
-- backstop_admin member only the runs she may see there.
CREATE VIEW schedule_status WITH (security_invoker = true) AS
SELECT s.name, s.job, s.cron, s.time_zone, s.enabled, s.next_run_at,
       last.state AS last_state, last.started_at AS last_started_at, last.error AS last_error,
       ok.finished_at AS last_success_at, ok.seconds AS last_success_seconds,
       pg_catalog.now() - ok.finished_at AS last_success_age
  FROM schedules s
  LEFT JOIN LATERAL (SELECT r.state, r.started_at, r.error FROM job_runs r
                      WHERE r.schedule = s.name AND r.state NOT IN ('queued')
                      ORDER BY r.job_id DESC LIMIT 1) last ON true
  LEFT JOIN LATERAL (SELECT r.finished_at, r.seconds FROM job_runs r
                      WHERE r.schedule = s.name AND r.state = 'succeeded'
                      ORDER BY r.job_id DESC LIMIT 1) ok ON true;

