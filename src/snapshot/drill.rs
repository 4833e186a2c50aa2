//! The `snapshot_restore` drill, run as a job: it restores something for real, compares it with what was
//! recorded when it was backed up, and leaves nothing behind. The run's measured duration (in
//! `backstop.job_runs.seconds`) is the recovery time a DBA can quote.

use backstop_core::schedule::job::SnapshotRestoreArgs;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::jobs::phase;
use crate::jobs::{sql_scratch, JobRequest, JobStatus};

/// `snapshot_restore`: the newest snapshot of the table (or of every snapshotted table) restored
/// into a scratch table, validated against its manifest (columns, row count, checksum of every
/// value), and rolled back, so nothing is left even when the drill fails.
pub fn snapshot_restore(
    request: &JobRequest,
    args: &SnapshotRestoreArgs,
    status: &mut JobStatus,
) -> Result<serde_json::Value, Error> {
    let tables: Vec<String> = match &args.table {
        Some(table) => vec![table.clone()],
        None => crate::snapshot::job::as_role(&request.requested_by, || {
            crate::spi::texts(
                "SELECT DISTINCT table_name FROM backstop.snapshots(NULL, false) WHERE verified IS NOT FALSE ORDER BY 1",
                &[],
            )
            .map_err(|e| Error::InvalidInput(format!("could not list snapshots: {e}")))
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
                    backstop_core::snapshot::quote_ident(&request.requested_by)
                ))
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
                let rows = Spi::get_one_with_args::<i64>(
                    "SELECT backstop.restore_table($1, target_table => $2)",
                    &[table.as_str().into(), scratch.as_str().into()],
                )
                .map_err(|e| Error::InvalidInput(e.to_string()))?
                .unwrap_or(0);
                let mut failed = Vec::new();
                Spi::connect(|client| {
                    let checks = client.select(
                        "SELECT \"check\", expected, found, passed FROM backstop.restore_validate(( \
                         SELECT r.target_table FROM backstop.restores r WHERE r.target_table LIKE '%' || $1 \
                         ORDER BY r.restored_at DESC LIMIT 1))",
                        None,
                        &[scratch.as_str().into()],
                    )?;
                    for check in checks {
                        if check.get::<bool>(4)? != Some(true) {
                            failed.push(format!(
                                "{}: expected {}, found {}",
                                check.get::<String>(1)?.unwrap_or_default(),
                                check.get::<String>(2)?.unwrap_or_default(),
                                check.get::<String>(3)?.unwrap_or_default()
                            ));
                        }
                    }
                    Ok::<_, pgrx::spi::Error>(())
                })
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
                Ok((rows, failed))
            })
        });
        match outcome {
            Ok(Ok((rows, failed))) if failed.is_empty() => {
                rows_total += rows;
                compared.push(serde_json::json!({ "table": table, "rows": rows, "checks": "passed" }));
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
    Ok(serde_json::json!({ "drill": "snapshot_restore", "tables": compared, "rows": rows_total }))
}

/// The `snapshot_restore` job, run in a worker (registered in [`crate::JOBS`]).
pub struct SnapshotRestoreDrill;

impl crate::jobs::Job for SnapshotRestoreDrill {
    fn kind(&self) -> backstop_core::schedule::job::JobKind {
        backstop_core::schedule::job::JobKind::SnapshotRestore
    }

    /// It runs SQL, which may wait on a lock: SIGTERM ends it as it ends a backend.
    fn dies_on_sigterm(&self) -> bool {
        true
    }

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        spec: &backstop_core::schedule::job::JobSpec,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<serde_json::Value, backstop_core::Error> {
        let backstop_core::schedule::job::JobSpec::SnapshotRestore(args) = spec else {
            return Err(crate::jobs::spec_mismatch(self.kind(), spec));
        };
        snapshot_restore(request, args, status)
    }
}
