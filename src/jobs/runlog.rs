//! Where runs are recorded. On a primary a run is a row of `backstop.job_runs` (its status file
//! holds only the live progress, pruned a day after it ended); on a standby the tables are
//! read-only, so a run's status file is its record (listed by `backstop.standby_runs`, pruned by
//! `backstop.job_runs_retention`) and the standby scheduler's next runs live in a file too.
//!
//! [`RunLog::here`] is the one place that asks the server which it is: the worker, the scheduler
//! and doctor record and read runs through the [`RunLog`] they got, never by asking
//! `RecoveryInProgress()` themselves. A standby that is promoted restarts its scheduler, which then
//! takes the table log; a worker keeps the log it started with.
//!
//! Invariants: every run a worker started ends recorded (succeeded, failed, cancelled or
//! timed out), by the worker or, when it died first, by whoever saw it gone (the scheduler's
//! reaper, the next job's [`RunLog::settle_interrupted`]); a run the scheduler stopped is recorded
//! with the scheduler's reason, whatever the worker wrote on its way out.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::JsonB;

use super::status::{
    all_statuses, prune_statuses, read_status, standby_next_runs, write_standby_next_runs, write_status,
};
use super::{JobRequest, JobState, JobStatus};

/// Where this server records its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLog {
    /// A primary: the `backstop.job_runs` table.
    Table,
    /// A standby (or a server still recovering): the runs' status files.
    StatusFiles,
}

/// Why the scheduler stopped a run, for the state it records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Timeout,
    Shutdown,
}

/// A run whose worker process ended, as the scheduler that started it saw it.
pub struct EndedRun<'a> {
    pub id: i64,
    pub schedule: &'a str,
    pub owner: &'a str,
    pub attempt: i32,
    pub kind: &'a str,
    pub timeout: Option<Duration>,
    pub elapsed: Duration,
    pub stopped: Option<StopReason>,
}

/// A scheduled run that got no worker: skipped, missed, queued for later, or failed to start.
pub struct UnstartedRun<'a> {
    pub schedule: &'a str,
    pub kind: &'a str,
    pub args: &'a serde_json::Value,
    pub owner: &'a str,
    pub state: &'a str,
    pub scheduled_for: SystemTime,
    pub not_before: Option<SystemTime>,
    pub error: Option<String>,
}

fn unix(time: SystemTime) -> f64 {
    backstop_core::time::unix_seconds(time)
}

impl RunLog {
    /// The log of this server as it is now.
    pub fn here() -> RunLog {
        if unsafe { pg_sys::RecoveryInProgress() } {
            RunLog::StatusFiles
        } else {
            RunLog::Table
        }
    }

    /// Whether this is a standby's log (its runs are its own, not the primary's history).
    pub fn on_standby(self) -> bool {
        self == RunLog::StatusFiles
    }

    /// A worker starts run `request` (its status file says so already).
    pub fn started(self, request: &JobRequest, pid: i32) {
        self.write(
            "INSERT INTO backstop.job_runs (job_id, kind, args, state, requested_by, pid, schedule, attempt, scheduled_for) \
             VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, pg_catalog.to_timestamp($8)) \
             ON CONFLICT (job_id) DO UPDATE SET state = 'running', pid = EXCLUDED.pid, started_at = pg_catalog.now()",
            &[
                request.id.into(),
                request.kind.as_str().into(),
                JsonB(request.args.clone()).into(),
                request.requested_by.as_str().into(),
                pid.into(),
                request.schedule.clone().into(),
                request.attempt.into(),
                request.scheduled_for.into(),
            ],
        );
    }

    /// A worker's run ended as `status` says; its status file is written after this.
    pub fn ended(self, status: &JobStatus) {
        let number = |key: &str| status.result.as_ref().and_then(|r| r.get(key)).and_then(|v| v.as_i64());
        self.write(
            "UPDATE backstop.job_runs SET state = $2, finished_at = pg_catalog.now(), result = $3, error = $4, hint = $5, \
             seconds = $6, bytes = $7, rows = $8 WHERE job_id = $1",
            &[
                status.id.into(),
                status.state.as_str().into(),
                status.result.clone().map(JsonB).into(),
                status.error.clone().into(),
                status.hint.clone().into(),
                status.seconds.into(),
                number("bytes").into(),
                number("rows").into(),
            ],
        );
    }

    /// Records a row in its own transaction; a standby's status files already hold the run.
    fn write(self, sql: &str, args: &[pgrx::datum::DatumWithOid]) {
        match self {
            RunLog::Table => BackgroundWorker::transaction(|| {
                Spi::run_with_args(sql, args)
                    .unwrap_or_else(|e| pgrx::warning!("backstop could not record the job: {e}"));
            }),
            RunLog::StatusFiles => {}
        }
    }

    /// Marks runs whose worker is gone (server crash, immediate shutdown, a killed process) as
    /// failed, and queues the next attempt of each scheduled one with retries left: an
    /// interrupted run is recorded and retried, never forgotten. Runs in its own transaction. A
    /// standby's status files need nothing: `standby_runs` shows a run whose worker is gone as
    /// failed.
    pub fn settle_interrupted(self) {
        match self {
            RunLog::Table => BackgroundWorker::transaction(|| {
                if let Err(e) = settle_interrupted_runs(crate::gucs::scheduler_now()) {
                    pgrx::warning!("backstop could not settle interrupted runs: {e}");
                }
            }),
            RunLog::StatusFiles => {}
        }
    }

    /// Records a scheduled run that got no worker. A standby keeps no history of those but the
    /// server log's line (which the scheduler writes for a missed or failed one).
    pub fn unstarted(self, run: UnstartedRun) {
        match self {
            RunLog::Table => BackgroundWorker::transaction(|| {
                let id = super::next_id();
                let done = !matches!(run.state, "queued");
                if let Err(e) = Spi::run_with_args(
                    "INSERT INTO backstop.job_runs (job_id, schedule, kind, args, state, scheduled_for, not_before, requested_by, finished_at, error) \
                     VALUES ($1, $2, $3, $4, $5, pg_catalog.to_timestamp($6), pg_catalog.to_timestamp($7), $8, \
                             CASE WHEN $9 THEN pg_catalog.now() END, $10)",
                    &[
                        id.into(),
                        run.schedule.into(),
                        run.kind.into(),
                        JsonB(run.args.clone()).into(),
                        run.state.into(),
                        unix(run.scheduled_for).into(),
                        run.not_before.map(unix).into(),
                        run.owner.into(),
                        done.into(),
                        run.error.clone().into(),
                    ],
                ) {
                    pgrx::warning!("backstop scheduler could not record a {} run of {}: {e}", run.state, run.schedule);
                }
            }),
            RunLog::StatusFiles => {}
        }
    }

    /// Settles a run whose worker ended: one it did not finish recording is failed (or timed out
    /// or cancelled, when the scheduler stopped it) and logged; a failed or timed-out one with
    /// retries left is queued again (on a primary: a standby runs again at the next cron time).
    pub fn settle_ended(self, run: &EndedRun, now: SystemTime) {
        let (state, error) = match run.stopped {
            Some(StopReason::Timeout) => (
                JobState::TimedOut,
                format!(
                    "it ran longer than its timeout of {} s and was stopped",
                    run.timeout.unwrap_or_default().as_secs()
                ),
            ),
            Some(StopReason::Shutdown) => (
                JobState::Cancelled,
                match self {
                    RunLog::Table => "the scheduler stopped (server shutdown or SIGTERM)",
                    RunLog::StatusFiles => "the scheduler stopped (server shutdown, promotion or SIGTERM)",
                }
                .to_string(),
            ),
            None => {
                (JobState::Failed, "the job's worker ended without recording an outcome (see the server log)".into())
            }
        };
        let settled = match self {
            RunLog::Table => settle_row(run, state, &error, now),
            RunLog::StatusFiles => settle_status_file(run, state, &error),
        };
        if settled && state != JobState::Cancelled {
            pgrx::log!(
                "{FAILED_RUN_LOG_PREFIX} job {} ({}, schedule {}{}) {}: {error}",
                run.id,
                run.kind,
                run.schedule,
                if self.on_standby() { ", on this standby" } else { "" },
                state.as_str()
            );
        }
    }

    /// The runs this server recorded that `backstop.job_runs` does not hold (a standby's own,
    /// newest first); none on a primary.
    pub fn own_runs(self) -> Vec<JobStatus> {
        match self {
            RunLog::Table => Vec::new(),
            RunLog::StatusFiles => standby_history(),
        }
    }

    /// The scheduler's next run per schedule (Unix seconds) where `backstop.schedules` cannot
    /// keep it (a standby); None on a primary, whose next runs are the table's.
    pub fn next_runs(self) -> Option<HashMap<String, f64>> {
        match self {
            RunLog::Table => None,
            RunLog::StatusFiles => Some(standby_next_runs()),
        }
    }

    /// Removes history older than `retention_days` (0 keeps it): rows of the table, and status
    /// files of ended runs (a day after they ended on a primary, where they are only progress; by
    /// the retention on a standby, where they are the history).
    pub fn prune(self, retention_days: i32) {
        let day = Duration::from_secs(86_400);
        match self {
            RunLog::Table => {
                prune_statuses(day);
                if retention_days > 0 {
                    BackgroundWorker::transaction(|| {
                        if let Err(e) = Spi::run_with_args(
                            "DELETE FROM backstop.job_runs WHERE finished_at < pg_catalog.now() - pg_catalog.make_interval(days => $1)",
                            &[retention_days.into()],
                        ) {
                            pgrx::warning!("backstop scheduler could not prune job history: {e}");
                        }
                    });
                }
            }
            RunLog::StatusFiles => {
                if retention_days > 0 {
                    prune_statuses(day * retention_days as u32);
                }
            }
        }
    }

    /// Keeps the scheduler's next runs (a standby's file; a primary's live in its table).
    pub fn keep_next_runs(self, next_runs: &HashMap<String, f64>) {
        match self {
            RunLog::Table => {}
            RunLog::StatusFiles => write_standby_next_runs(next_runs),
        }
    }
}

/// [`RunLog::settle_ended`] on a primary; whether it changed the row.
fn settle_row(run: &EndedRun, state: JobState, error: &str, now: SystemTime) -> bool {
    let id = run.id;
    let previous = BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<String>("SELECT state FROM backstop.job_runs WHERE job_id = $1", &[id.into()])
            .ok()
            .flatten()
            .unwrap_or_default()
    });
    let run_sql = |sql: &str, args: &[pgrx::datum::DatumWithOid]| {
        BackgroundWorker::transaction(|| {
            if let Err(e) = Spi::run_with_args(sql, args) {
                pgrx::warning!("backstop scheduler: {e}");
            }
        })
    };
    if previous.is_empty() {
        // The worker died before it recorded the run (it could not connect, its request was
        // unreadable): record it here, or it would be forgotten.
        run_sql(
            "INSERT INTO backstop.job_runs (job_id, schedule, kind, state, attempt, requested_by) \
             VALUES ($1, $2, $3, 'running', $4, $5) ON CONFLICT (job_id) DO NOTHING",
            &[id.into(), run.schedule.into(), run.kind.into(), run.attempt.into(), run.owner.into()],
        );
    }
    // When the scheduler stopped the run, its reason is the truth, whatever the worker (or
    // another job's clean-up of interrupted runs) recorded on the way out.
    let settle = previous.is_empty()
        || previous == "running"
        || previous == "queued"
        || (run.stopped.is_some() && matches!(previous.as_str(), "cancelled" | "failed"));
    if settle {
        run_sql(
            "UPDATE backstop.job_runs SET state = $2, error = $3, hint = $4, \
             finished_at = coalesce(finished_at, pg_catalog.now()), seconds = coalesce(seconds, $5) WHERE job_id = $1",
            &[
                id.into(),
                state.as_str().into(),
                error.into(),
                "See the server log around the run; its schedule runs again at its next time.".into(),
                run.elapsed.as_secs_f64().into(),
            ],
        );
    }
    let final_state = if settle { state.as_str().to_string() } else { previous };
    // queue_retry reads the schedule's retries and backoff as they are now.
    if matches!(final_state.as_str(), "failed" | "timed_out") {
        BackgroundWorker::transaction(|| {
            if let Err(e) = queue_retry(id, now) {
                pgrx::warning!("backstop scheduler could not queue a retry of job {id}: {e}");
            }
        });
    }
    settle
}

/// [`RunLog::settle_ended`] on a standby: the run's status file is its record.
fn settle_status_file(run: &EndedRun, state: JobState, error: &str) -> bool {
    let Some(mut status) = read_status(run.id) else { return false };
    if status.state.is_final() && run.stopped.is_none() {
        return false;
    }
    status.state = state;
    status.phase = state.as_str().into();
    status.error = Some(error.into());
    status.seconds = Some(run.elapsed.as_secs_f64());
    write_status(&status);
    true
}

/// The stable prefix of the LOG line every failed run raises, for log-based alerting.
pub const FAILED_RUN_LOG_PREFIX: &str = "backstop: job run failed:";

/// [`RunLog::settle_interrupted`] inside the caller's transaction; returns the retries it queued.
pub fn settle_interrupted_runs(now: std::time::SystemTime) -> Result<Vec<i64>, pgrx::spi::Error> {
    let failed = write_returning_ids(
        "UPDATE backstop.job_runs SET state = 'failed', finished_at = pg_catalog.now(), \
         error = 'the job''s worker ended without recording an outcome (server crash, restart or a killed process)', \
         hint = 'See the server log around the run''s start; the run left nothing published.' \
         WHERE state = 'running' AND (pid IS NULL OR pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid IS NOT NULL)) \
         RETURNING job_id",
        &[],
    )?;
    let mut queued = Vec::new();
    for id in failed {
        queued.extend(queue_retry(id, now)?);
    }
    Ok(queued)
}

/// Queues the next attempt of run `id` when the scheduler started it (it stands for a cron
/// occurrence: a `run_now()` run is the caller's to repeat), it failed or timed out, and its
/// schedule has retries left, not before `failed_at` plus the schedule's backoff (doubling per attempt). Once per
/// attempt: the scheduler (which saw the worker end) and a job cleaning up after a crash (which
/// saw the run left `running`) may both ask; the row lock on the failed run serialises them.
/// Returns the queued run's id.
pub fn queue_retry(id: i64, failed_at: std::time::SystemTime) -> Result<Option<i64>, pgrx::spi::Error> {
    let row = Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT r.attempt, pg_catalog.date_part('epoch', s.retry_backoff)::float8 \
               FROM backstop.job_runs r JOIN backstop.schedules s ON s.name = r.schedule \
              WHERE r.job_id = $1 AND r.state IN ('failed', 'timed_out') AND r.attempt <= s.max_retries \
                AND r.scheduled_for IS NOT NULL \
                FOR UPDATE OF r",
            None,
            &[id.into()],
        )?;
        let mut found = None;
        for row in rows {
            found = Some((row.get::<i32>(1)?.unwrap_or(1), row.get::<f64>(2)?.unwrap_or(300.0)));
        }
        Ok::<_, pgrx::spi::Error>(found)
    })?;
    let Some((attempt, backoff)) = row else { return Ok(None) };
    let next = attempt + 1;
    let at = backstop_core::schedule::plan::retry_at(
        failed_at,
        next as u32,
        std::time::Duration::from_secs_f64(backoff.max(1.0)),
    );
    let queued = write_returning_ids(
        "INSERT INTO backstop.job_runs (job_id, schedule, kind, args, state, attempt, scheduled_for, not_before, requested_by) \
         SELECT pg_catalog.nextval('backstop.jobs_id_seq'), r.schedule, r.kind, r.args, 'queued', $2, r.scheduled_for, \
                pg_catalog.to_timestamp($3), r.requested_by \
           FROM backstop.job_runs r \
          WHERE r.job_id = $1 AND NOT EXISTS ( \
                SELECT 1 FROM backstop.job_runs n \
                 WHERE n.schedule = r.schedule AND n.attempt = $2 AND n.job_id > r.job_id \
                   AND n.scheduled_for IS NOT DISTINCT FROM r.scheduled_for) \
         RETURNING job_id",
        &[id.into(), next.into(), backstop_core::backups::unix_seconds(at).into()],
    )?;
    Ok(queued.first().copied())
}

/// Runs a writing statement whose RETURNING list is one bigint id.
fn write_returning_ids(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<Vec<i64>, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        let mut ids = Vec::new();
        for row in client.update(sql, None, args)? {
            ids.extend(row.get::<i64>(1)?);
        }
        Ok(ids)
    })
}

/// The runs this standby's scheduler started (their status files: a standby cannot write the
/// history tables), newest first.
fn standby_history() -> Vec<JobStatus> {
    let mut statuses: Vec<JobStatus> = all_statuses().into_iter().filter(|s| s.id < 0).collect();
    statuses.sort_by(|a, b| b.started_at.total_cmp(&a.started_at));
    statuses
}
