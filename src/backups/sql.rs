//! SQL for base backups: `backstop.base_backup()` starts the job (see `worker`) and by default
//! waits for it with progress NOTICEs; `backstop.backups()` and `backstop.recovery_window()` read
//! the repository through the same core functions as `backstop backups list`.

use backstop_core::backups::BackupStatus;
use backstop_core::backups::{verify, window};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::{raise_with, OrRaise};
use crate::jobs::{self, JobKind, JobState, JobStatus};
use crate::{io, repo};

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn describe(status: &JobStatus) -> String {
    let mut text = format!("base backup job {}: {}", status.id, status.phase);
    if status.files_total > 0 {
        text.push_str(&format!(
            ", {}/{} files, {} of {} read or reused, {} new, {}/s",
            status.files_done,
            status.files_total,
            mib(status.bytes_done),
            mib(status.bytes_total),
            mib(status.bytes_new),
            mib(status.rate() as u64)
        ));
        if let Some(eta) = status.eta_seconds() {
            text.push_str(&format!(", ETA {eta:.0} s"));
        }
    }
    text
}

fn setting(name: &str) -> String {
    Spi::get_one_with_args::<String>("SELECT pg_catalog.current_setting($1, true)", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Takes an online base backup of the whole cluster in a background worker. With `wait` (the
/// default) the caller sees progress NOTICEs and a cancel stops the backup; without it the job id
/// comes back at once (`backstop.job_progress`, `backstop.job_runs`).
#[pg_extern(volatile, parallel_unsafe)]
fn base_backup(
    wait: default!(bool, true),
    kind: default!(&str, "'auto'"),
    fast: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(state, String),
        name!(backup_id, Option<String>),
        name!(kind, Option<String>),
        name!(files, Option<i64>),
        name!(bytes, Option<i64>),
        name!(bytes_new, Option<i64>),
        name!(bytes_stored, Option<i64>),
        name!(seconds, Option<f64>),
    ),
> {
    crate::jobs::registry::require_operator(jobs::job(JobKind::BaseBackup));
    if !matches!(kind, "auto" | "full" | "incremental") {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            &format!("kind \"{kind}\" is not a base backup kind"),
            "Use 'auto' (incremental when an earlier backup exists), 'full' or 'incremental'.",
        );
    }
    if setting("archive_mode") == "off" {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "archive_mode is off: a base backup without its WAL cannot be restored",
            "Set archive_mode = on and archive_library = 'backstop' in postgresql.conf and restart the server.",
        );
    }
    // Fail here, in the caller's words, rather than in the worker's log.
    repo::open_checked().or_raise();
    if let Some(running) = jobs::all_statuses()
        .into_iter()
        .find(|s| s.kind == JobKind::BaseBackup && !s.state.is_final() && jobs::worker_alive(s.pid))
    {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            &format!("base backup job {} is already running (pid {})", running.id, running.pid),
            "Only one base backup runs at a time; wait for it (SELECT * FROM backstop.job_progress) or stop it with pg_terminate_backend(pid), which cancels it.",
        );
    }
    let (id, worker) = jobs::start(JobKind::BaseBackup, serde_json::json!({ "kind": kind, "fast": fast }));
    if !wait {
        return TableIterator::new(vec![(id, "running".to_string(), None, None, None, None, None, None, None)]);
    }
    crate::errors::notice(&format!("base backup job {id} started in a background worker"));
    let status = jobs::wait(id, worker, describe);
    match status.state {
        JobState::Succeeded => {
            let r = status.result.unwrap_or_default();
            let text = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let int = |k: &str| r.get(k).and_then(|v| v.as_i64());
            if let Some(changed) = text("changed_blocks") {
                // How an incremental on PostgreSQL 17+ found what changed: the DBA sees whether
                // the WAL summaries served it, and why not.
                crate::errors::notice(&format!(
                    "base backup {}: changed blocks: {changed}; {} byte(s) read, {} not read",
                    text("backup_id").unwrap_or_default(),
                    int("bytes_read").unwrap_or_default(),
                    int("bytes_skipped").unwrap_or_default()
                ));
            }
            if let Some(failures) = int("page_checksum_failures").filter(|n| *n > 0) {
                let named: Vec<&str> = r
                    .get("damaged_pages")
                    .and_then(|v| v.as_array())
                    .map(|pages| pages.iter().filter_map(|p| p.as_str()).collect())
                    .unwrap_or_default();
                pgrx::warning!(
                    "base backup {}: {failures} page(s) failed their checksum and were backed up as found: {}",
                    text("backup_id").unwrap_or_default(),
                    named.join("; ")
                );
            }
            TableIterator::new(vec![(
                id,
                "succeeded".to_string(),
                text("backup_id"),
                text("kind"),
                int("files"),
                int("bytes"),
                int("bytes_new"),
                int("bytes_stored"),
                r.get("seconds").and_then(|v| v.as_f64()),
            )])
        }
        state => raise_with(
            jobs::failure_code(&status),
            &format!("base backup job {id} {}: {}", state.as_str(), status.error.unwrap_or_default()),
            &status.hint.unwrap_or_else(|| "See backstop.job_runs and the server log.".into()),
        ),
    }
}

fn timestamptz(seconds: f64) -> Option<TimestampWithTimeZone> {
    crate::timestamps::from_unix_seconds(seconds)
}

fn list() -> Vec<BackupStatus> {
    let repository = repo::open_checked().or_raise();
    io::block_on(verify::list_backups(&repository)).or_raise()
}

/// Every base backup in the repository, oldest first, each checked (manifest verified, every pack
/// present): the same listing as `backstop backups list`.
#[pg_extern(volatile, parallel_unsafe)]
fn backups() -> TableIterator<
    'static,
    (
        name!(backup_id, String),
        name!(kind, Option<String>),
        name!(start_time, Option<TimestampWithTimeZone>),
        name!(stop_time, Option<TimestampWithTimeZone>),
        name!(start_lsn, Option<String>),
        name!(stop_lsn, Option<String>),
        name!(timeline, Option<i64>),
        name!(files, Option<i64>),
        name!(bytes, Option<i64>),
        name!(bytes_new, Option<i64>),
        name!(bytes_stored, Option<i64>),
        name!(verified, bool),
        name!(problem, Option<String>),
    ),
> {
    let rows: Vec<_> = list()
        .into_iter()
        .map(|b| {
            let verified = b.verified();
            let m = b.manifest.as_ref();
            (
                b.id.to_string(),
                m.map(|m| m.kind.as_str().to_string()),
                m.and_then(|m| timestamptz(m.start_time)),
                m.and_then(|m| timestamptz(m.stop_time)),
                m.map(|m| m.start_lsn.to_string()),
                m.map(|m| m.stop_lsn.to_string()),
                m.map(|m| m.timeline as i64),
                m.map(|m| m.stats.files as i64),
                m.map(|m| m.stats.bytes as i64),
                m.map(|m| m.stats.bytes_new as i64),
                m.map(|m| m.stats.bytes_stored as i64),
                verified,
                b.problem,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// To which points in time can this cluster be restored right now? Per timeline, from the end of
/// the oldest verified backup (or where the timeline branched off a restorable parent) to the
/// last commit in the WAL reachable from it, with the times of the first and last commits read
/// from the WAL records; gaps are breaks.
#[pg_extern(volatile, parallel_unsafe)]
fn recovery_window() -> TableIterator<
    'static,
    (
        name!(timeline, i64),
        name!(status, String),
        name!(from_time, Option<TimestampWithTimeZone>),
        name!(to_time, Option<TimestampWithTimeZone>),
        name!(from_lsn, String),
        name!(to_lsn, String),
        name!(backup_id, Option<String>),
        name!(detail, String),
    ),
> {
    let repository = repo::open_checked().or_raise();
    let backups = io::block_on(verify::list_backups(&repository)).or_raise();
    let wal_files = io::block_on(verify::archived_wal(&repository)).or_raise();
    let segment_size = unsafe { pg_sys::wal_segment_size } as u32;
    let last_archived =
        crate::wal::stats::last_archived_here().and_then(|name| backstop_core::wal::WalFileName::parse(&name).ok());
    let parents = io::block_on(window::timeline_parents(&repository, &wal_files));
    let mut parts = window::recovery_window(&backups, &wal_files, segment_size, last_archived.as_ref(), &parents);
    io::block_on(window::read_commit_times(&repository, &mut parts, segment_size)).or_raise();
    let rows: Vec<_> = parts
        .into_iter()
        .map(|p| {
            (
                p.timeline as i64,
                p.status.to_string(),
                p.from_time.and_then(timestamptz),
                p.to_time.and_then(timestamptz),
                p.from_lsn.to_string(),
                p.to_lsn.to_string(),
                p.backup.map(|b| b.to_string()),
                p.detail,
            )
        })
        .collect();
    TableIterator::new(rows)
}
