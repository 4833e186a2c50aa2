-- Every job backstop ran in a background worker of its own (base backups now; the scheduler's
-- snapshots, dumps, retention and drills later), with what it measured. Written only by the job
-- worker, as the extension's owner; readable by backstop_admin.
CREATE SEQUENCE jobs_id_seq;
CREATE TABLE jobs (
    job_id bigint PRIMARY KEY,
    kind text NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    requested_by name NOT NULL,
    pid integer,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz,
    -- What the job produced (backup id, bytes, seconds ...), as JSON.
    result jsonb,
    error text,
    hint text
);
CREATE INDEX jobs_kind_started ON jobs (kind, started_at DESC);
SELECT pg_catalog.pg_extension_config_dump('jobs', '');
SELECT pg_catalog.pg_extension_config_dump('jobs_id_seq', '');
