//! The `snapshot` job: one snapshot per table (named, or every table of a schema as it is when the
//! run starts), each in its own transaction run as the schedule's owner, so a scheduled snapshot
//! reads nothing its owner could not read. One table failing does not stop the others; the run
//! fails if any did, naming them.

use backstop_core::schedule::job::SnapshotArgs;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::jobs::phase;
use crate::jobs::{sql_step, JobRequest, JobStatus};

/// Runs `f` in a transaction as `role` with search_path = pg_catalog.
pub fn as_role<T>(role: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let f = std::panic::AssertUnwindSafe(f);
    BackgroundWorker::transaction(move || {
        sql_step(|| {
            Spi::run(&format!(
                "SET LOCAL SESSION AUTHORIZATION {}; SET LOCAL search_path = pg_catalog",
                backstop_core::snapshot::quote_ident(role)
            ))
            .map_err(|e| Error::InvalidInput(format!("could not act as role {role}: {e}")))?;
            f()
        })?
    })
}

fn tables(request: &JobRequest, args: &SnapshotArgs) -> Result<Vec<String>, Error> {
    match &args.schema {
        None => Ok(args.tables.clone()),
        Some(schema) => as_role(&request.requested_by, || {
            let names = crate::spi::texts(
                "SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname",
                &[schema.as_str().into()],
            )
            .map_err(|e| Error::InvalidInput(format!("could not list the tables of schema {schema}: {e}")))?;
            if names.is_empty() {
                return Err(Error::InvalidInput(format!("schema \"{schema}\" has no tables to snapshot")));
            }
            Ok(names)
        }),
    }
}

pub fn run(request: &JobRequest, args: &SnapshotArgs, status: &mut JobStatus) -> Result<serde_json::Value, Error> {
    let tables = tables(request, args)?;
    status.files_total = tables.len() as u64;
    let mut taken = Vec::new();
    let mut failed = Vec::new();
    for table in &tables {
        phase(status, &format!("snapshot of {table}"));
        let outcome = as_role(&request.requested_by, || {
            let id = Spi::get_one_with_args::<String>(
                "SELECT backstop.snapshot_table($1::pg_catalog.regclass)",
                &[table.as_str().into()],
            )
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
            let rows = Spi::get_one_with_args::<i64>(
                "SELECT rows FROM backstop.snapshots($2, false) WHERE snapshot_id = $1",
                &[id.clone().into(), table.as_str().into()],
            )
            .ok()
            .flatten();
            Ok((id, rows))
        });
        match outcome {
            Ok((id, rows)) => taken.push(serde_json::json!({ "table": table, "snapshot_id": id, "rows": rows })),
            Err(e) => failed.push(format!("{table}: {e}")),
        }
        status.files_done += 1;
    }
    let rows: i64 = taken.iter().filter_map(|t| t["rows"].as_i64()).sum();
    if !failed.is_empty() {
        return Err(Error::Job {
            message: format!("{} of {} snapshots failed: {}", failed.len(), tables.len(), failed.join("; ")),
            hint: "The other tables were snapshotted; fix the named ones (see the reasons) and run the job again."
                .into(),
        });
    }
    Ok(serde_json::json!({ "snapshots": taken, "rows": rows }))
}

/// The `snapshot` job, run in a worker (registered in [`crate::JOBS`]).
pub struct SnapshotJob;

impl crate::jobs::Job for SnapshotJob {
    fn kind(&self) -> backstop_core::schedule::job::JobKind {
        backstop_core::schedule::job::JobKind::Snapshot
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
        let backstop_core::schedule::job::JobSpec::Snapshot(args) = spec else {
            return Err(crate::jobs::spec_mismatch(self.kind(), spec));
        };
        run(request, args, status)
    }
}
