//! The `logical_restore` drill, in its own background worker process: the newest logical backup
//! of a database (or a chosen one) is restored with `backstop_core::logical::restore` (the code
//! `backstop logical restore` runs) into a scratch database `backstop_drill_logical_<job id>` of a
//! **throwaway server** (`crate::throwaway`: initdb into a fresh private directory, its own
//! configuration, peer authentication on a private socket), as a role without rights that owns
//! only that database. Every table's rows and every sequence are counted there (as that role) and
//! compared with what the dump's snapshot held (`backstop_core::drills::logical::compare`); then
//! the server is stopped and its directory removed.
//!
//! Invariants:
//! - Nothing in a dump runs with rights: pg_restore connects as `backstop_restorer` (LOGIN, no
//!   superuser, no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS) with `--no-owner --no-privileges`,
//!   so a CHECK, a default or an index expression a user of the database wrote runs as that role,
//!   in a server that holds nothing else and is gone after the drill. Only `CREATE ROLE` and
//!   `CREATE DATABASE` run as the throwaway server's superuser, and they carry no dump content.
//! - What that role could not restore is counted in the result (`skipped`, with pg_restore's
//!   first messages); the drill passes only when every table and sequence matches.
//! - The production server is only read (the source database's encoding and locale); scratch
//!   databases older versions created in it are dropped.
//! - The measured time is the restore alone plus the comparison: the RTO a DBA can quote for
//!   "restore yesterday's dump" (initdb and the server's start are not in it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backstop_core::logical::manifest;
use backstop_core::logical::restore::{self, Connection, RestoreOptions, RestoreProgress};
use backstop_core::logical::tools::LocalConnection;
use backstop_core::logical::LogicalId;
use backstop_core::schedule::job::LogicalRestoreArgs;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;

use crate::jobs::{self, JobRequest, JobStatus};
use crate::throwaway::Throwaway;
use crate::{io, repo};

pub const SCRATCH_PREFIX: &str = "backstop_drill_logical_";

/// The role the throwaway server restores and counts as.
pub const RESTORER: &str = "backstop_restorer";

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

/// `CREATE DATABASE` for the scratch database on the throwaway server: owned by the restorer,
/// with the source database's encoding and locale as this server's catalog records them (the
/// defaults when the source database is gone), quoted by this server's `format()`.
fn create_scratch_sql(source: &str, scratch: &str) -> String {
    BackgroundWorker::transaction(|| {
        crate::spi::text(
            "SELECT pg_catalog.format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L', \
                    $1, $2, pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype) \
               FROM pg_catalog.pg_database WHERE datname = $3",
            &[scratch.into(), RESTORER.into(), source.into()],
        )
        .or_else(|| {
            crate::spi::text(
                "SELECT pg_catalog.format('CREATE DATABASE %I OWNER %I TEMPLATE template0', $1, $2)",
                &[scratch.into(), RESTORER.into()],
            )
        })
        .unwrap_or_default()
    })
}

/// initdb into the throwaway's data directory: the bootstrap superuser is this OS user, reached
/// only by peer authentication through the ident map `configure` writes.
fn initdb(throwaway: &Throwaway) -> Result<(), Error> {
    let child = std::process::Command::new(jobs::server_bin_dir().join("initdb"))
        .arg("-D")
        .arg(throwaway.data())
        .args(["--no-sync", "--no-instructions", "--auth=peer", "--encoding=UTF8", "--locale=C"])
        .arg(format!("--username={}", crate::throwaway::os_user()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Job {
            message: format!("could not run initdb: {e}"),
            hint: "Install PostgreSQL's server binaries next to this server's.".into(),
        })?;
    let output = crate::throwaway::wait_child(child, Duration::from_secs(600), "initdb of the throwaway server")?;
    if !output.status.success() {
        return Err(Error::Job {
            message: format!(
                "initdb of the drill's throwaway server failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            hint: "Check backstop.drill_directory: it needs room and must be writable by the server's OS user.".into(),
        });
    }
    Ok(())
}

fn server_failed(log: &std::path::Path) -> Error {
    Error::Job {
        message: format!("the logical drill's throwaway server did not start: {}", crate::throwaway::log_errors(log)),
        hint: "Check backstop.drill_directory (room, permissions) and the server's log.".into(),
    }
}

/// What a `logical_restore` drill restored and compared, and how long it took.
#[derive(serde::Serialize)]
pub struct LogicalRestoreOutcome {
    pub backup_id: backstop_core::logical::LogicalId,
    pub database: String,
    pub scratch_database: String,
    pub bytes: u64,
    pub tables: usize,
    pub rows: i64,
    pub sequences: usize,
    pub restored_as: &'static str,
    pub skipped: u64,
    pub skipped_messages: Vec<String>,
    pub pg_dump: String,
    pub seconds: f64,
}

pub fn run(
    request: &JobRequest,
    args: &LogicalRestoreArgs,
    status: &mut JobStatus,
) -> Result<LogicalRestoreOutcome, Error> {
    let local = super::job::local(args.database.as_deref(), &request.requested_by)?;
    let id = args.backup_id.as_deref().map(LogicalId::parse).transpose()?;
    let scratch = format!("{SCRATCH_PREFIX}{}", request.id.unsigned_abs());
    let production = Connection::Local(local.connection.clone());
    for old in leftovers(&scratch) {
        pgrx::log!("backstop: dropping {old}, the scratch database of an interrupted logical_restore drill");
        io::block_on(restore::drop_database(&local.tools, &production, &old))?;
    }
    crate::jobs::phase(status, "opening the repository");
    let repository = repo::open_checked()?;

    crate::jobs::phase(status, "starting a throwaway server");
    let mut throwaway = Throwaway::create(request.id)?;
    initdb(&throwaway)?;
    let superuser = crate::throwaway::os_user();
    let options = throwaway.configure(
        &[&superuser, RESTORER],
        "-c shared_buffers=128MB -c max_connections=20 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c wal_level=minimal -c max_wal_senders=0",
    )?;
    throwaway.start(&options, server_failed)?;
    throwaway.query(
        &superuser,
        restore::MAINTENANCE_DATABASE,
        &format!("CREATE ROLE {RESTORER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"),
    )?;
    throwaway.query(&superuser, restore::MAINTENANCE_DATABASE, &create_scratch_sql(&local.database, &scratch))?;
    let connection = Connection::Local(LocalConnection {
        socket_dir: throwaway.dir.to_string_lossy().into_owned(),
        port: throwaway.port,
        user: RESTORER.into(),
    });
    let options = RestoreOptions {
        tools: local.tools.clone(),
        connection: connection.clone(),
        database: scratch.clone(),
        clean: false,
        jobs: 1,
        tables: Vec::new(),
        spool_dir: throwaway.dir.clone(),
        sandboxed: true,
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
            // killed; then the throwaway server and its directory go below.
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
    crate::jobs::phase(status, "stopping the throwaway server");
    drop(throwaway);
    if cancelled {
        return Err(Error::Cancelled);
    }
    let (manifest, restored, compared) = outcome?;
    Ok(LogicalRestoreOutcome {
        backup_id: manifest.id,
        database: manifest.database,
        scratch_database: restored.database,
        bytes: restored.bytes,
        tables: compared.tables,
        rows: compared.rows,
        sequences: compared.sequences,
        restored_as: RESTORER,
        skipped: restored.skipped,
        skipped_messages: restored.skipped_messages,
        pg_dump: manifest.pg_dump_version,
        seconds,
    })
}

/// The `logical_restore` job, run in a worker (registered in [`crate::JOBS`]).
pub struct LogicalRestoreDrill;

impl crate::jobs::Job for LogicalRestoreDrill {
    type Args = backstop_core::schedule::job::LogicalRestoreArgs;
    type Outcome = LogicalRestoreOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::LogicalRestore;
    const NEEDS_OPERATOR: bool = true;
    const READ_ONLY: bool = false;

    /// The database whose backup it restores exists.
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
    ) -> Result<LogicalRestoreOutcome, backstop_core::Error> {
        run(request, &args, status)
    }
}
