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
                backstop_core::quote::quote_ident(role)
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

/// One table's snapshot taken by a run.
#[derive(serde::Serialize)]
pub struct Taken {
    pub table: String,
    pub snapshot_id: String,
    pub rows: i64,
}

/// What a snapshot run took.
#[derive(serde::Serialize)]
pub struct SnapshotOutcome {
    pub snapshots: Vec<Taken>,
    pub rows: i64,
}

pub fn run(request: &JobRequest, args: &SnapshotArgs, status: &mut JobStatus) -> Result<SnapshotOutcome, Error> {
    let tables = tables(request, args)?;
    status.files_total = tables.len() as u64;
    let mut taken = Vec::new();
    let mut failed = Vec::new();
    for table in &tables {
        phase(status, &format!("snapshot of {table}"));
        let outcome = as_role(&request.requested_by, || {
            // The name as the owner's session resolves it (her search_path is pg_catalog here,
            // so names are schema-qualified by the listing or by the schedule).
            let relid = Spi::get_one_with_args::<pg_sys::Oid>(
                "SELECT $1::pg_catalog.regclass::pg_catalog.oid",
                &[table.as_str().into()],
            )
            .map_err(|e| Error::InvalidInput(e.to_string()))?
            .ok_or_else(|| Error::InvalidInput(format!("table {table} does not exist")))?;
            let taken = crate::snapshots::take::take(relid);
            Ok((taken.id.to_string(), taken.rows as i64))
        });
        match outcome {
            Ok((snapshot_id, rows)) => taken.push(Taken { table: table.clone(), snapshot_id, rows }),
            Err(e) => failed.push(format!("{table}: {e}")),
        }
        status.files_done += 1;
    }
    let rows: i64 = taken.iter().map(|t| t.rows).sum();
    if !failed.is_empty() {
        return Err(Error::Job {
            message: format!("{} of {} snapshots failed: {}", failed.len(), tables.len(), failed.join("; ")),
            hint: "The other tables were snapshotted; fix the named ones (see the reasons) and run the job again."
                .into(),
        });
    }
    Ok(SnapshotOutcome { snapshots: taken, rows })
}

/// The `snapshot` job, run in a worker (registered in [`crate::JOBS`]).
pub struct SnapshotJob;

impl crate::jobs::Job for SnapshotJob {
    type Args = backstop_core::schedule::job::SnapshotArgs;
    type Outcome = SnapshotOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::Snapshot;
    const NEEDS_OPERATOR: bool = false;
    const READ_ONLY: bool = false;
    /// It runs SQL, which may wait on a lock: SIGTERM ends it as it ends a backend.
    const DIES_ON_SIGTERM: bool = true;

    /// The caller reads each named table; a named schema exists.
    fn authorize(&self, args: &Self::Args) {
        crate::jobs::registry::require_readable(&args.tables);
        if let Some(schema) = &args.schema {
            crate::jobs::registry::require_schema(schema);
        }
    }

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        args: Self::Args,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<SnapshotOutcome, backstop_core::Error> {
        run(request, &args, status)
    }
}
