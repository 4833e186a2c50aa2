//! The `snapshot_restore` drill, run as a job: it restores something for real, compares it with what was
//! recorded when it was backed up, and leaves nothing behind. The run's measured duration (in
//! `backstop.job_runs.seconds`) is the recovery time a DBA can quote.

use backstop_core::schedule::job::SnapshotRestoreArgs;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use backstop_core::snapshot as layout;

use super::restore;
use crate::jobs::phase;
use crate::jobs::{sql_scratch, JobRequest, JobStatus};

/// One table the drill restored and validated.
#[derive(serde::Serialize)]
pub struct Compared {
    pub table: String,
    pub rows: i64,
    pub checks: &'static str,
}

/// What a `snapshot_restore` drill restored and validated.
#[derive(serde::Serialize)]
pub struct SnapshotRestoreOutcome {
    pub drill: &'static str,
    pub tables: Vec<Compared>,
    pub rows: i64,
}

/// `snapshot_restore`: the newest snapshot of the table (or of every snapshotted table) restored
/// into a scratch table, validated against its manifest (columns, row count, checksum of every
/// value), and rolled back, so nothing is left even when the drill fails.
pub fn snapshot_restore(
    request: &JobRequest,
    args: &SnapshotRestoreArgs,
    status: &mut JobStatus,
) -> Result<SnapshotRestoreOutcome, Error> {
    let tables: Vec<String> = match &args.table {
        Some(table) => vec![table.clone()],
        // The snapshots its requester may see, as `backstop.snapshots()` lists them for her.
        None => crate::snapshots::job::as_role(&request.requested_by, || {
            let mut names: Vec<String> = crate::snapshots::statuses(None, false)
                .into_iter()
                .filter(|s| s.state.verified() != Some(false))
                .map(|s| layout::qualified_name(&s.snapshot.schema, &s.snapshot.table))
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })?,
    };
    if tables.is_empty() {
        return Err(Error::Job {
            message: "the repository holds no table snapshot to drill".into(),
            hint: "Snapshot a table (SELECT backstop.snapshot_table('schema.table')) or schedule a snapshot job."
                .into(),
        });
    }
    let mut compared = Vec::new();
    let mut rows_total = 0i64;
    for table in &tables {
        phase(status, &format!("restoring the newest snapshot of {table}"));
        let scratch = format!("backstop_drill_{}", request.id);
        let outcome = BackgroundWorker::transaction(|| {
            sql_scratch(|| -> Result<(i64, Vec<String>), Error> {
                Spi::run(&format!(
                    "SET LOCAL SESSION AUTHORIZATION {}; SET LOCAL client_min_messages = warning",
                    backstop_core::quote::quote_ident(&request.requested_by)
                ))
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
                let (rows, restored) = restore::restore(table, None, Some(&scratch), false, None);
                let failed = restore::validate_restored(&restored)
                    .into_iter()
                    .filter(|(_, _, _, passed)| !passed)
                    .map(|(check, expected, found, _)| format!("{check}: expected {expected}, found {found}"))
                    .collect::<Vec<_>>();
                Ok((rows as i64, failed))
            })
        });
        match outcome {
            Ok(Ok((rows, failed))) if failed.is_empty() => {
                rows_total += rows;
                compared.push(Compared { table: table.clone(), rows, checks: "passed" });
            }
            Ok(Ok((_, failed))) => {
                return Err(Error::Job {
                    message: format!(
                        "the restored snapshot of {table} does not match its manifest: {}",
                        failed.join("; ")
                    ),
                    hint: "Do not rely on this snapshot: take a new one, and run backstop verify on the repository."
                        .into(),
                })
            }
            Ok(Err(e)) | Err(e) => {
                return Err(Error::Job {
                    message: format!("the newest snapshot of {table} could not be restored: {e}"),
                    hint: e.hint().to_string(),
                })
            }
        }
    }
    Ok(SnapshotRestoreOutcome { drill: "snapshot_restore", tables: compared, rows: rows_total })
}

/// The `snapshot_restore` job, run in a worker (registered in [`crate::JOBS`]).
pub struct SnapshotRestoreDrill;

impl crate::jobs::Job for SnapshotRestoreDrill {
    type Args = backstop_core::schedule::job::SnapshotRestoreArgs;
    type Outcome = SnapshotRestoreOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::SnapshotRestore;
    const NEEDS_OPERATOR: bool = false;
    const READ_ONLY: bool = false;
    /// It runs SQL, which may wait on a lock: SIGTERM ends it as it ends a backend.
    const DIES_ON_SIGTERM: bool = true;

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        args: Self::Args,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<SnapshotRestoreOutcome, backstop_core::Error> {
        snapshot_restore(request, &args, status)
    }
}
