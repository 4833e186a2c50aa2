//! The `logical_restore` drill, in its own background worker process: the newest logical backup
//! of a database (or a chosen one) is restored with `backstop_core::logical::restore` (the code
//! `backstop logical restore` runs) into a scratch database `backstop_drill_logical_<job id>`,
//! every table's rows and every sequence are counted there and compared with what the dump's
//! snapshot held (`backstop_core::drills::logical::compare`), and the scratch database is dropped.
//!
//! Invariants:
//! - The scratch database is dropped from this thread after the restore task ended, however it
//!   ended (passed, failed, cancelled); a process killed before that leaves one, and the next
//!   drill drops it (names are `backstop_drill_logical_<digits>`, never a user's database).
//! - The measured time is the restore alone plus the comparison: the RTO a DBA can quote for
//!   "restore yesterday's dump".

use std::sync::Arc;
use std::time::{Duration, Instant};

use backstop_core::logical::manifest;
use backstop_core::logical::restore::{self, Connection, RestoreOptions, RestoreProgress};
use backstop_core::logical::LogicalId;
use backstop_core::schedule::job::LogicalRestoreArgs;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;

use crate::jobs::{self, JobRequest, JobStatus};
use crate::{io, repo};

pub const SCRATCH_PREFIX: &str = "backstop_drill_logical_";

/// Scratch databases earlier drills left behind (a killed worker), other than `keep`.
fn leftovers(keep: &str) -> Vec<String> {
    BackgroundWorker::transaction(|| {
        crate::spi::texts(
            "SELECT datname::text FROM pg_catalog.pg_database \
              WHERE datname ~ ('^' || $1 || '[0-9]+$') AND datname <> $2 ORDER BY 1",
            &[SCRATCH_PREFIX.into(), keep.into()],
        )
        .unwrap_or_default()
    })
}

pub fn run(
    request: &JobRequest,
    args: &LogicalRestoreArgs,
    status: &mut JobStatus,
) -> Result<serde_json::Value, Error> {
    let local = super::job::local(args.database.as_deref(), &request.requested_by)?;
    let id = args.backup_id.as_deref().map(LogicalId::parse).transpose()?;
    let scratch = format!("{SCRATCH_PREFIX}{}", request.id.unsigned_abs());
    let connection = Connection::Local(local.connection.clone());
    for old in leftovers(&scratch) {
        pgrx::log!("backstop: dropping {old}, the scratch database of an interrupted logical_restore drill");
        io::block_on(restore::drop_database(&local.tools, &connection, &old))?;
    }
    crate::backups::worker::phase(status, "opening the repository");
    let repository = repo::open_checked()?;
    let options = RestoreOptions {
        tools: local.tools.clone(),
        connection: connection.clone(),
        database: scratch.clone(),
        clean: false,
        jobs: 1,
        tables: Vec::new(),
        spool_dir: std::env::temp_dir(),
    };
    let source = local.database.clone();
    let progress = Arc::new(RestoreProgress::default());
    let cancel = backstop_core::repository::CancellationToken::new();
    let started = Instant::now();
    let task = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        io::runtime().spawn(async move {
            let manifest = manifest::pick(&repository, &source, id.as_ref()).await?;
            let restored = restore::restore(&repository, &manifest, &options, &progress, &cancel).await?;
            *progress.phase.lock().unwrap_or_else(|e| e.into_inner()) = "counting rows in the restored database".into();
            let (tables, sequences) = restore::count(&options.tools, &options.connection, &options.database).await?;
            let compared = backstop_core::drills::logical::compare(&manifest, &tables, &sequences)?;
            Ok::<_, Error>((manifest, restored, compared))
        })
    };
    let mut cancelled = false;
    while !task.is_finished() {
        if !cancelled && !BackgroundWorker::wait_latch(Some(Duration::from_millis(250))) {
            // SIGTERM: the copy into pg_restore stops at its next write and pg_restore is
            // killed (its one transaction rolls back); then the scratch database goes below.
            cancel.cancel();
            cancelled = true;
        } else if cancelled {
            std::thread::sleep(Duration::from_millis(50));
        }
        status.phase = progress.phase.lock().map(|p| p.clone()).unwrap_or_default();
        status.bytes_done = progress.verified.load(std::sync::atomic::Ordering::Relaxed)
            + progress.restored.load(std::sync::atomic::Ordering::Relaxed);
        jobs::write_status(status);
    }
    let outcome = io::runtime()
        .block_on(task)
        .map_err(|e| Error::Job { message: format!("the logical restore task failed: {e}"), hint: String::new() })
        .and_then(|outcome| outcome);
    let seconds = started.elapsed().as_secs_f64();
    crate::backups::worker::phase(status, "dropping the scratch database");
    let dropped = io::block_on(restore::drop_database(&local.tools, &connection, &scratch));
    if cancelled {
        return Err(Error::Cancelled);
    }
    let (manifest, restored, compared) = outcome?;
    dropped?;
    Ok(serde_json::json!({
        "backup_id": manifest.id,
        "database": manifest.database,
        "scratch_database": restored.database,
        "bytes": restored.bytes,
        "tables": compared.tables,
        "rows": compared.rows,
        "sequences": compared.sequences,
        "pg_dump": manifest.pg_dump_version,
        "seconds": seconds,
    }))
}
