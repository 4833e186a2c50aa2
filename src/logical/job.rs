//! The `logical_backup` job, in its own background worker process: the connection to this
//! server and the client programs are worked out here (SQL, on the worker's thread), and the
//! backup itself is `backstop_core::logical::take`, run on the I/O runtime while this thread
//! reports progress and honours SIGTERM (the task is aborted, which kills pg_dump and psql).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backstop_core::logical::take::{self, TakeOptions, TakeProgress};
use backstop_core::logical::tools::{LocalConnection, Tools};
use backstop_core::schedule::job::LogicalBackupArgs;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;

use crate::jobs::{self, JobRequest, JobStatus};
use crate::{gucs, io, repo};

/// May `role` dump a whole database? Only a role that can already read everything: a superuser
/// or a member of pg_read_all_data. A dump runs as `backstop.logical_role`, so without this
/// check it would hand the caller rows it cannot read.
pub fn may_dump(role: &str) -> bool {
    crate::spi::text(
        "SELECT (r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'pg_read_all_data', 'MEMBER'))::text \
           FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
        &[role.into()],
    )
    .as_deref()
        == Some("true")
}

pub fn refused(role: &str) -> Error {
    Error::Job {
        message: format!("role {role} may not take a logical backup: it dumps every table of the database"),
        hint: "Run it as a superuser or a member of pg_read_all_data (GRANT pg_read_all_data TO ...).".into(),
    }
}

/// This server as the client programs reach it, and the programs: worked out in the worker's
/// transaction, for a job acting for `requested_by` on `database` (the worker's own by default).
pub struct Local {
    pub database: String,
    pub connection: LocalConnection,
    pub tools: Tools,
    pub version_num: u32,
}

pub fn local(database: Option<&str>, requested_by: &str) -> Result<Local, Error> {
    let (database, socket_dir, port, bootstrap, version_num, allowed) = BackgroundWorker::transaction(|| {
        let text = |sql: &str| crate::spi::text(sql, &[]).unwrap_or_default();
        (
            database.map(str::to_string).unwrap_or_else(|| text("SELECT pg_catalog.current_database()::text")),
            text("SELECT pg_catalog.current_setting('unix_socket_directories')"),
            text("SELECT pg_catalog.current_setting('port')"),
            text("SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10"),
            text("SELECT pg_catalog.current_setting('server_version_num')"),
            may_dump(requested_by),
        )
    });
    if !allowed {
        return Err(refused(requested_by));
    }
    let socket_dir =
        socket_dir.split(',').map(str::trim).find(|d| !d.is_empty()).map(str::to_string).ok_or_else(|| Error::Job {
            message: "the server listens on no Unix socket (unix_socket_directories is empty)".into(),
            hint: "Logical backups reach the server over its Unix socket: set unix_socket_directories.".into(),
        })?;
    let version_num: u32 = version_num.parse().unwrap_or(0);
    let tools = Tools::find(&jobs::server_bin_dir(), version_num / 10000)?;
    Ok(Local {
        database,
        connection: LocalConnection {
            socket_dir,
            port: port.parse().unwrap_or(5432),
            user: gucs::logical_role().unwrap_or(bootstrap),
        },
        tools,
        version_num,
    })
}

/// What a logical backup stored, and how long it took.
#[derive(serde::Serialize)]
pub struct LogicalBackupOutcome {
    pub backup_id: backstop_core::logical::LogicalId,
    pub database: String,
    pub bytes: u64,
    pub schema_bytes: u64,
    pub globals_bytes: u64,
    pub tables: usize,
    pub rows: i64,
    pub sequences: usize,
    pub list_entries: u64,
    pub pg_dump: String,
    pub seconds: f64,
}

pub fn run(
    request: &JobRequest,
    args: &LogicalBackupArgs,
    status: &mut JobStatus,
) -> Result<LogicalBackupOutcome, Error> {
    let started = Instant::now();
    let local = local(args.database.as_deref(), &request.requested_by)?;
    let options = TakeOptions {
        database: local.database,
        connection: local.connection,
        tools: local.tools,
        pg_version_num: local.version_num,
    };
    crate::jobs::phase(status, "opening the repository");
    let repository = repo::open_checked()?;
    let progress = Arc::new(TakeProgress::default());
    let cancel = backstop_core::repository::CancellationToken::new();
    let task = {
        let (progress, cancel) = (progress.clone(), cancel.clone());
        io::runtime().spawn(async move { take::take(&repository, &options, &progress, &cancel).await })
    };
    while !task.is_finished() {
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(250))) {
            // SIGTERM: dropping the task kills pg_dump and psql (kill_on_drop); nothing is
            // published without a manifest.
            cancel.cancel();
            task.abort();
            return Err(Error::Cancelled);
        }
        status.phase = progress.phase.lock().map(|p| p.clone()).unwrap_or_default();
        status.bytes_done = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
        jobs::write_status(status);
    }
    let manifest = io::runtime()
        .block_on(task)
        .map_err(|e| Error::Job { message: format!("the logical backup task failed: {e}"), hint: String::new() })??;
    Ok(LogicalBackupOutcome {
        backup_id: manifest.id,
        database: manifest.database,
        bytes: manifest.dump.bytes,
        schema_bytes: manifest.schema.bytes,
        globals_bytes: manifest.globals.bytes,
        tables: manifest.tables.len(),
        rows: manifest.tables.iter().map(|t| t.rows).sum::<i64>(),
        sequences: manifest.sequences.len(),
        list_entries: manifest.verification.list_entries,
        pg_dump: manifest.pg_dump_version,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The `logical_backup` job, run in a worker (registered in [`crate::JOBS`]).
pub struct LogicalBackupJob;

impl crate::jobs::Job for LogicalBackupJob {
    type Args = backstop_core::schedule::job::LogicalBackupArgs;
    type Outcome = LogicalBackupOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::LogicalBackup;
    const NEEDS_OPERATOR: bool = true;
    const READ_ONLY: bool = false;

    /// The database it dumps exists.
    fn authorize(&self, args: &Self::Args) {
        if let Some(database) = &args.database {
            crate::jobs::registry::require_database(database);
        }
    }

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        args: Self::Args,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<LogicalBackupOutcome, backstop_core::Error> {
        run(request, &args, status)
    }
}
