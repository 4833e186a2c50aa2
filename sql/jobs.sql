-- Every run of every backstop job, on demand or scheduled (base backups, snapshots, retention and
-- drills), with what it measured: the history a DBA reads to know a habit still holds. Written
-- only by backstop's own code (job workers and the scheduler, as the extension's owner); readable
-- by backstop_admin. Pruned by backstop.job_runs_retention.
CREATE SEQUENCE jobs_id_seq;
CREATE TABLE job_runs (
    job_id bigint PRIMARY KEY,
    -- The schedule that fired it; NULL for a run asked for from SQL.
    schedule text,
    kind text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                         'timed_out', 'skipped', 'missed')),
    attempt integer NOT NULL DEFAULT 1,
    -- The cron occurrence this run stands for (NULL on demand).
    scheduled_for timestamptz,
    -- When a queued run (overlap 'queue' or a retry) may start.
    not_before timestamptz,
    requested_by name NOT NULL,
    pid integer,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz,
    -- Measured by the worker's monotonic clock: the number a DBA quotes as the job's (or the
    -- drill's) duration.
    seconds double precision,
    bytes bigint,
    rows bigint,
    -- What the job produced or compared (backup id, tables, counts ...), as JSON.
    result jsonb,
    error text,
    hint text
);
CREATE INDEX job_runs_kind_started ON job_runs (kind, started_at DESC);
CREATE INDEX job_runs_schedule_started ON job_runs (schedule, started_at DESC);
SELECT pg_catalog.pg_extension_config_dump('job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('jobs_id_seq', '');

-- Schedules the background worker runs (pg_cron's shape, plus what its users ask for: overlap
-- policy, retries with backoff, a timeout, a time zone). Changed only through backstop.schedule(),
-- alter_schedule() and unschedule(), which check every field.
CREATE TABLE schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    time_zone text NOT NULL DEFAULT 'UTC',
    job text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT true,
    overlap text NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'queue')),
    max_retries integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 10),
    retry_backoff interval NOT NULL DEFAULT '5 minutes',
    timeout interval,
    -- Where it runs: 'primary', 'standby' (standbys only) or 'any'. Only read-only jobs (the
    -- wal_fetch and pitr drills) may run on a standby; schedule() checks it.
    runs_on text NOT NULL DEFAULT 'primary' CHECK (runs_on IN ('primary', 'standby', 'any')),
    -- The next cron occurrence, kept by the scheduler (NULL: compute at the next tick).
    next_run_at timestamptz,
    -- The role the jobs run as: the one who created the schedule.
    owner name NOT NULL DEFAULT CURRENT_USER,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
SELECT pg_catalog.pg_extension_config_dump('schedules', '');
