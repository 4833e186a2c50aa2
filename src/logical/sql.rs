//! SQL for logical backups: `backstop.logical_backup()` starts the job (see `job`) and by default
//! waits for it with progress NOTICEs; `backstop.logical_backups()` lists the repository's
//! logical backups through the same core function as `backstop logical list`.

use super::job;
use backstop_core::logical::manifest;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::{raise_with, OrRaise};
use crate::jobs::{self, JobKind, JobState, JobStatus};
use crate::{io, repo};

fn describe(status: &JobStatus) -> String {
    format!(
        "logical backup job {}: {}, {:.1} MiB dumped",
        status.id,
        status.phase,
        status.bytes_done as f64 / (1u64 << 20) as f64
    )
}

/// Dumps one database (the current one by default) with pg_dump into the repository, in a
/// background worker: the dump streams into the store, is read back into `pg_restore --list`,
/// and only then is the backup published. With `wait` (the default) the caller sees progress
/// NOTICEs; without it the job id comes back at once.
#[pg_extern(volatile, parallel_unsafe)]
fn logical_backup(
    database: default!(Option<&str>, "NULL"),
    wait: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(state, String),
        name!(backup_id, Option<String>),
        name!(database, Option<String>),
        name!(bytes, Option<i64>),
        name!(tables, Option<i64>),
        name!(rows, Option<i64>),
        name!(seconds, Option<f64>),
    ),
> {
    let caller = crate::spi::text("SELECT current_user::text", &[]).unwrap_or_default();
    if !job::may_dump(&caller) {
        let error = job::refused(&caller);
        raise_with(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, &error.to_string(), error.hint());
    }
    if let Some(name) = database {
        jobs::registry::require_database(name);
    }
    // Fail here, in the caller's words, rather than in the worker's log.
    repo::open_checked().or_raise();
    let args = match database {
        Some(name) => serde_json::json!({ "database": name }),
        None => serde_json::json!({}),
    };
    let (id, worker) = jobs::start(JobKind::LogicalBackup, args);
    if !wait {
        return TableIterator::new(vec![(id, "running".to_string(), None, None, None, None, None, None)]);
    }
    crate::errors::notice(&format!("logical backup job {id} started in a background worker"));
    let status = jobs::wait(id, worker, describe);
    match status.state {
        JobState::Succeeded => {
            let r = status.result.unwrap_or_default();
            let text = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let int = |k: &str| r.get(k).and_then(|v| v.as_i64());
            TableIterator::new(vec![(
                id,
                "succeeded".to_string(),
                text("backup_id"),
                text("database"),
                int("bytes"),
                int("tables"),
                int("rows"),
                r.get("seconds").and_then(|v| v.as_f64()),
            )])
        }
        state => raise_with(
            jobs::failure_code(&status),
            &format!("logical backup job {id} {}: {}", state.as_str(), status.error.unwrap_or_default()),
            &status.hint.unwrap_or_else(|| "See backstop.job_runs and the server log.".into()),
        ),
    }
}

/// Every logical backup in the repository (of `database`, or of all), oldest first per database:
/// the same listing as `backstop logical list`. `verified` means its manifest reads and records
/// that `pg_restore --list` accepted the stored dump; `problem` says why not.
#[pg_extern(volatile, parallel_unsafe)]
fn logical_backups(
    database: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(database, String),
        name!(backup_id, String),
        name!(start_time, Option<TimestampWithTimeZone>),
        name!(stop_time, Option<TimestampWithTimeZone>),
        name!(bytes, Option<i64>),
        name!(tables, Option<i64>),
        name!(rows, Option<i64>),
        name!(list_entries, Option<i64>),
        name!(pg_dump, Option<String>),
        name!(verified, bool),
        name!(problem, Option<String>),
    ),
> {
    let repository = repo::open_checked().or_raise();
    let listed = io::block_on(manifest::list(&repository, database)).or_raise();
    // A dump holds every table of its database: its table and row counts are for superusers and
    // backstop_operator members (who read every table), NULL for a plain backstop_admin member.
    let counts = jobs::caller_reads_everything();
    let rows: Vec<_> = listed
        .into_iter()
        .map(|l| {
            let m = l.manifest.as_ref().ok();
            let c = m.filter(|_| counts);
            (
                l.database.clone(),
                l.id.to_string(),
                m.and_then(|m| crate::timestamps::from_unix_seconds(m.start_time)),
                m.and_then(|m| crate::timestamps::from_unix_seconds(m.stop_time)),
                m.map(|m| m.dump.bytes as i64),
                c.map(|m| m.tables.len() as i64),
                c.map(|m| m.tables.iter().map(|t| t.rows).sum::<i64>()),
                m.map(|m| m.verification.list_entries as i64),
                m.map(|m| m.pg_dump_version.clone()),
                m.is_some(),
                l.manifest.as_ref().err().cloned(),
            )
        })
        .collect();
    TableIterator::new(rows)
}
