//! The runtime's SQL functions: `job_progress` (the view of running jobs) and `standby_runs`.

use pgrx::prelude::*;

use super::status::{all_statuses, worker_alive};
use super::{caller_reads_everything, JobStatus, RunLog};

/// Which of these jobs the caller may see: those whose `backstop.job_runs` row row security shows
/// her (read with her rights), and on a standby (no rows there) every job for superusers and
/// backstop_operator members only. One rule for the history and for the progress of a job.
fn visible_to_caller(ids: &[i64]) -> std::collections::HashSet<i64> {
    if caller_reads_everything() {
        return ids.iter().copied().collect();
    }
    Spi::connect(|client| {
        let mut seen = std::collections::HashSet::new();
        let rows = client.select(
            "SELECT job_id FROM backstop.job_runs WHERE job_id = ANY($1)",
            None,
            &[ids.to_vec().into()],
        )?;
        for row in rows {
            if let Some(id) = row.get::<i64>(1)? {
                seen.insert(id);
            }
        }
        Ok::<_, pgrx::spi::Error>(seen)
    })
    .unwrap_or_default()
}

/// Jobs running now and their progress: the `backstop.job_progress` view.
#[pg_extern(volatile, parallel_unsafe)]
fn job_progress() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(kind, String),
        name!(pid, i32),
        name!(started_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(phase, String),
        name!(files_done, i64),
        name!(files_total, i64),
        name!(bytes_done, i64),
        name!(bytes_total, i64),
        name!(bytes_new, i64),
        name!(bytes_per_second, f64),
        name!(eta_seconds, Option<f64>),
    ),
> {
    let running: Vec<JobStatus> =
        all_statuses().into_iter().filter(|s| !s.state.is_final() && worker_alive(s.pid)).collect();
    let visible = visible_to_caller(&running.iter().map(|s| s.id).collect::<Vec<_>>());
    let rows: Vec<_> = running
        .into_iter()
        .filter(|s| visible.contains(&s.id))
        .map(|s| {
            (
                s.id,
                s.kind.as_str().to_string(),
                s.pid,
                crate::timestamps::from_unix_seconds(s.started_at),
                s.phase.clone(),
                s.files_done as i64,
                s.files_total as i64,
                s.bytes_done as i64,
                s.bytes_total as i64,
                s.bytes_new as i64,
                s.rate(),
                s.eta_seconds(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The runs of scheduled jobs on this standby, newest first: the standby's job history, kept in
/// status files since its tables are read-only (empty on a primary, whose history is
/// `backstop.job_runs`).
#[pg_extern(volatile, parallel_unsafe)]
fn standby_runs() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(schedule, Option<String>),
        name!(kind, String),
        name!(state, String),
        name!(started_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(seconds, Option<f64>),
        name!(result, Option<pgrx::JsonB>),
        name!(error, Option<String>),
        name!(hint, Option<String>),
    ),
> {
    // No row security on a status file: results naming tables and row counts are for superusers
    // and backstop_operator members; others see the runs of jobs whose results name none.
    let everything = caller_reads_everything();
    let statuses = RunLog::here().own_runs();
    let rows: Vec<_> = statuses
        .into_iter()
        .filter(|s| everything || super::job(s.kind).result_names_nothing())
        .map(|s| {
            let state = if !s.state.is_final() && !worker_alive(s.pid) { "failed" } else { s.state.as_str() };
            (
                s.id,
                s.schedule.clone(),
                s.kind.as_str().to_string(),
                state.to_string(),
                crate::timestamps::from_unix_seconds(s.started_at),
                s.seconds,
                s.result.clone().map(pgrx::JsonB),
                s.error.clone(),
                s.hint.clone(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE VIEW job_progress AS SELECT * FROM job_progress();
"#,
    name = "job_progress_view",
    requires = [job_progress]
);
