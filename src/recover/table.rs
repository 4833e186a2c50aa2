//! The `table_recover` job: tables as they were at a recovery target. The newest base backup that
//! ends before the target is restored into a private scratch directory, a throwaway server (the
//! PITR drill's safe configuration) replays the WAL to the target and pauses there, read-only and
//! never promoted; each table's rows are copied out in binary COPY with a count and checksum of
//! their text, the server is stopped and removed, and the rows are loaded next to the originals as
//! `<table>_recovered`, owned by the caller, and checked against that count and checksum before
//! anything is kept.
//!
//! Invariants:
//! - Nothing of the backup's configuration runs (Throwaway); the target is refused up front when
//!   the archive cannot reach it (window::check_target); a restore point name is plain words.
//! - The live server is written only as the `_recovered` tables (which must not exist) and their
//!   `backstop.restores` rows, in one subtransaction: a table whose rows do not match what the
//!   throwaway server held is not kept.
//! - The scratch directory and server are removed however the job ends (Throwaway's Drop).

use std::sync::Arc;
use std::time::Duration;

use backstop_core::backups::restore::{self, RecoveryTarget};
use backstop_core::backups::Lsn;
use backstop_core::quote::{quote_ident, quote_literal};
use backstop_core::schedule::job::{JobKind, TableRecoverArgs};
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;

use crate::backups::drill::{did_not_recover, table_sql, wait_for_server};
use crate::jobs::{sql_step, Job, JobRequest, JobStatus, PhaseTimes};
use crate::throwaway::Throwaway;
use crate::{io, repo};

/// The `table_recover` job (registered in [`crate::JOBS`]).
pub struct TableRecoverJob;

/// One table recovered.
#[derive(Debug, serde::Serialize)]
pub struct RecoveredTable {
    pub table: String,
    pub recovered: String,
    pub rows: i64,
    /// Checksum of the rows' text (`checksum_sql`): equal in the throwaway server and in the
    /// recovered table.
    pub checksum: String,
}

#[derive(Debug, serde::Serialize)]
pub struct TableRecoverOutcome {
    pub backup: String,
    /// The recovery setting used, as PostgreSQL takes it.
    pub target: String,
    pub inclusive: bool,
    /// The target asked for stopped replay while a transaction that commits later held an
    /// exclusive lock on a table (a DROP or TRUNCATE in progress): the recovery stopped just
    /// before that lock, at this LSN, which gives the same rows of the tables.
    pub moved_before_lock: Option<String>,
    pub wal_files: u64,
    pub restored_bytes: u64,
    /// Databases skipped (their relation files holes), and the bytes not fetched for them.
    pub skipped_databases: usize,
    pub skipped_bytes: u64,
    /// What the skipped databases' files took on disk after replay (blocks allocated): the
    /// pages replay wrote into the holes, not their length.
    pub skipped_disk_bytes: u64,
    /// Pages of skipped databases replay found zero (logged by the throwaway server, expected).
    pub invalid_pages_tolerated: u64,
    pub tables: Vec<RecoveredTable>,
    /// Seconds per phase.
    pub phases: PhaseTimes,
}

impl Job for TableRecoverJob {
    type Args = TableRecoverArgs;
    type Outcome = TableRecoverOutcome;
    const KIND: JobKind = JobKind::TableRecover;
    /// The caller's SELECT on each table is checked (a dropped table: operators only).
    const NEEDS_OPERATOR: bool = false;
    const READ_ONLY: bool = false;

    fn authorize(&self, args: &Self::Args) {
        for table in &args.tables {
            super::sql::authorize(table, "recover it");
        }
    }

    fn run(
        &self,
        request: &JobRequest,
        args: TableRecoverArgs,
        status: &mut JobStatus,
    ) -> Result<Self::Outcome, Error> {
        run(request, &args, status)
    }
}

fn target_of(args: &TableRecoverArgs) -> Result<RecoveryTarget, Error> {
    Ok(match (&args.target_time, &args.target_lsn, &args.target_xid, &args.target_name) {
        (Some(time), _, _, _) => RecoveryTarget::Time(backstop_core::time::from_unix_seconds(*time)),
        (_, Some(lsn), _, _) => RecoveryTarget::Lsn(Lsn::parse(lsn)?),
        (_, _, Some(xid), _) => RecoveryTarget::Xid(*xid),
        (_, _, _, Some(name)) => RecoveryTarget::Name(name.clone()),
        _ => return Err(Error::InvalidInput("no recovery target given".into())),
    })
}

fn run(request: &JobRequest, args: &TableRecoverArgs, status: &mut JobStatus) -> Result<TableRecoverOutcome, Error> {
    args_check(args)?;
    let target = target_of(args)?;
    // Names as SQL, parsed and re-quoted; the recovered ones must not exist yet.
    let (tables, recovered) = BackgroundWorker::transaction(|| -> Result<(Vec<String>, Vec<String>), Error> {
        let tables =
            args.tables.iter().map(|t| sql_step(|| table_sql(t)).and_then(|r| r)).collect::<Result<Vec<_>, _>>()?;
        let recovered =
            args.recovered.iter().map(|t| sql_step(|| table_sql(t)).and_then(|r| r)).collect::<Result<Vec<_>, _>>()?;
        for name in &recovered {
            if crate::spi::text("SELECT pg_catalog.to_regclass($1)::text", &[name.as_str().into()]).is_some() {
                return Err(Error::InvalidInput(format!(
                    "{name} exists: drop it (or name another table for the recovered rows) and run this again"
                )));
            }
        }
        Ok((tables, recovered))
    })?;

    let mut timed = PhaseTimes::default();
    timed.enter(status, "choosing the base backup and checking the target against the archive");
    let repository = repo::open_checked()?;
    let plan = io::block_on(backstop_core::recover::plan::plan(&repository, None, &target))?;
    let manifest = plan.manifest.clone();
    timed.enter(status, "finding the WAL up to the target");
    let last_segment = io::block_on(plan.last_segment(&repository, &target))?;
    // A DROP, TRUNCATE or ALTER TABLE in progress at the target holds a lock the paused server
    // replays: stop just before it instead when that gives the same rows.
    let ids = table_ids(&tables, &manifest)?;
    let (target, inclusive, moved) = match io::block_on(plan.before_pending_locks(&repository, &target, &ids))? {
        Some(lock) => (RecoveryTarget::Lsn(lock), false, Some(lock.to_string())),
        None => (target, args.inclusive, None),
    };
    let (setting, value) = target.setting().ok_or_else(|| Error::InvalidInput("no recovery target given".into()))?;

    // Only this database's files (and what every database needs) are restored whole.
    let database_oid = BackgroundWorker::transaction(|| {
        crate::spi::one::<pgrx::pg_sys::Oid>(
            "SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()",
            &[],
        )
        .ok()
        .flatten()
        .map(u32::from)
    })
    .ok_or_else(|| Error::InvalidInput("this database's OID could not be read".into()))?;
    let sparse = backstop_core::recover::partial::sparse_databases(&manifest, database_oid);
    timed.enter(status,
        &format!(
            "restoring base backup {} into a scratch directory (this database whole, {} other database(s) as empty sparse files)",
            manifest.id,
            sparse.len()
        ),
    );
    let mut throwaway = Throwaway::create(request.id)?;
    let progress = Arc::new(restore::RestoreProgress::default());
    let cancel = backstop_core::repository::CancellationToken::new();
    // However the job ends, the WAL still being fetched in the background stops.
    let _stop_fetching = cancel.clone().drop_guard();
    let task = {
        let (repository, dir, progress, cancel, manifest, sparse) = (
            repository.clone(),
            throwaway.dir.clone(),
            progress.clone(),
            cancel.clone(),
            manifest.clone(),
            sparse.clone(),
        );
        // restore's future is not Send: a thread of its own blocks on the I/O runtime.
        std::thread::spawn(move || {
            io::runtime().block_on(backstop_core::drills::pitr::prepare_backup(
                &repository,
                &dir,
                &manifest,
                &backstop_core::drills::pitr::Scope {
                    last_segment,
                    sparse_databases: sparse,
                    wal_while_replaying: true,
                },
                progress,
                &cancel,
            ))
        })
    };
    while !task.is_finished() {
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(250))) {
            cancel.cancel();
        }
        status.bytes_total = progress.bytes_total.load(std::sync::atomic::Ordering::Relaxed);
        status.bytes_done = progress.bytes_done.load(std::sync::atomic::Ordering::Relaxed);
        crate::jobs::write_status(status);
    }
    let prepared = task
        .join()
        .map_err(|_| Error::Job { message: "the restore thread panicked".into(), hint: String::new() })??;

    // The drill's throwaway server: private socket, nothing archived or preloaded, this server's
    // limits (hot standby needs them), paused at the target and never promoted.
    let (user, database, limits) = BackgroundWorker::transaction(|| {
        let user = crate::spi::text("SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10", &[])
            .unwrap_or_else(|| "postgres".into());
        let database = crate::spi::text("SELECT pg_catalog.current_database()::text", &[]).unwrap_or_default();
        let limits = crate::spi::texts(
            "SELECT format('-c %s=%s', name, setting) FROM pg_catalog.pg_settings WHERE name IN \
             ('max_connections', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction') \
             AND setting ~ '^[0-9]+$' ORDER BY name",
            &[],
        )
        .unwrap_or_default()
        .join(" ");
        (user, database, limits)
    });
    let options = throwaway.configure(&[&user], &format!("-c shared_buffers=128MB -c wal_level=replica {limits}"))?;
    timed.enter(status, &format!("replaying WAL to {setting} = {value} in a throwaway server"));
    throwaway.start(
        // Replay finds zero pages in the skipped databases' holes: tolerated there (the log is
        // checked below), the server never promoted.
        &format!(
            "{options} {}",
            backstop_core::recover::plan::paused_at_target(setting, &value, inclusive, !sparse.is_empty())
        ),
        // A segment that could not be fetched ends the replay early: that is the reason.
        |log| fetch_failed(&prepared).unwrap_or_else(|| did_not_recover(log, &prepared.backup)),
    )?;
    wait_for_server(&throwaway, &prepared.backup, || {
        Ok(throwaway
            .query(&user, &database, "SELECT pg_catalog.pg_get_wal_replay_pause_state()")?
            .first()
            .map(String::as_str)
            == Some("paused"))
    })
    .map_err(|e| fetch_failed(&prepared).unwrap_or(e))?;

    timed.enter(status, "reading the tables at the target");
    // Test builds: a pause a scenario sets to cancel the job while its server runs.
    let pause = crate::gucs::test_recover_pause();
    if !pause.is_zero() && !BackgroundWorker::wait_latch(Some(pause)) {
        return Err(Error::Cancelled);
    }
    struct Read {
        columns: Vec<(String, String)>,
        file: std::path::PathBuf,
        rows: i64,
        checksum: String,
    }
    let mut read = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let exists = throwaway.query(
            &user,
            &database,
            &format!("SELECT pg_catalog.to_regclass({})::text", quote_literal(table)),
        )?;
        if exists.first().is_none_or(|t| t.is_empty()) {
            return Err(Error::InvalidInput(format!(
                "table {table} did not exist at {setting} = {value} (backup {}): pick a later target",
                prepared.backup
            )));
        }
        // Column names hex-encoded (any character survives the line-based reply); types as
        // format_type prints them, each checked to be one type name before it is used.
        let columns = throwaway.query(
            &user,
            &database,
            &format!(
                "SELECT pg_catalog.encode(pg_catalog.convert_to(attname::text, 'UTF8'), 'hex') || ' ' || \
                 pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute \
                 WHERE attrelid = {}::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                quote_literal(table)
            ),
        )?;
        let columns: Vec<(String, String)> = columns
            .iter()
            .map(|line| {
                let (hex_name, kind) = line.split_once(' ').unwrap_or((line, ""));
                let name = unhex(hex_name).and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
                (name, kind.to_string())
            })
            .collect();
        let file = throwaway.dir.join(format!("table_{index}.copy"));
        let path = file.to_str().filter(|p| !p.contains(['\'', '\\'])).ok_or_else(|| {
            Error::InvalidInput(format!(
                "the scratch directory {} has characters COPY cannot take",
                throwaway.dir.display()
            ))
        })?;
        throwaway
            .query(&user, &database, &format!("COPY {table} TO {} WITH (FORMAT binary)", quote_literal(path)))
            .map_err(|e| match e.to_string().contains("lock timeout") {
                true => Error::Job {
                    message: format!(
                        "{table} is locked at {setting} = {value}: a transaction in progress there holds an ACCESS EXCLUSIVE lock on it (a DROP, TRUNCATE or ALTER TABLE that commits later), and a server paused at the target cannot read it"
                    ),
                    hint: "Recover to before that transaction took its lock: backstop.table_history() gives that target_lsn (target_inclusive => false) for the change.".into(),
                },
                false => e,
            })?;
        let check = throwaway.query(&user, &database, &backstop_core::recover::plan::checksum_sql(table))?;
        let (rows, checksum) = check.first().and_then(|c| c.split_once(' ')).unwrap_or(("0", ""));
        read.push(Read { columns, file, rows: rows.parse().unwrap_or(-1), checksum: checksum.to_string() });
    }
    timed.enter(status, "stopping the throwaway server");
    throwaway.stop();
    let skipped_disk_bytes = allocated_bytes(&throwaway.data(), &sparse);
    let log = std::fs::read_to_string(throwaway.log()).unwrap_or_default();
    let pages = backstop_core::recover::partial::check_log(&log, &sparse);
    {
        let problems = pages.problems;
        if !problems.is_empty() {
            return Err(Error::Job {
                message: format!(
                    "the partial restore replayed WAL onto missing pages of a database it restored whole: {}",
                    problems.iter().take(3).cloned().collect::<Vec<_>>().join(" | ")
                ),
                hint: "Nothing was created in this database. The backup or its WAL is damaged where these pages are: run backstop verify and take a new base backup.".into(),
            });
        }
    }

    timed.enter(status, "loading the rows next to the originals");
    let owner = request.requested_by.clone();
    let snapshot_id = format!("{}{}:{setting}={value}", crate::snapshots::restore::PITR_RECORD_PREFIX, prepared.backup);
    let recovered_tables = BackgroundWorker::transaction(|| {
        sql_step(|| -> Result<Vec<RecoveredTable>, Error> {
            let mut out = Vec::new();
            for ((table, target), read) in tables.iter().zip(&recovered).zip(&read) {
                let mut definitions = Vec::new();
                for (name, kind) in &read.columns {
                    crate::snapshots::restore::ddl::check_type_name(kind).map_err(|why| {
                        Error::InvalidInput(format!("column {name} of {table} has type \"{kind}\", not one type name: {why}"))
                    })?;
                    definitions.push(format!("{} {kind}", quote_ident(name)));
                }
                spi_run(&format!("CREATE TABLE {target} ({})", definitions.join(", ")))?;
                let path = read.file.to_str().unwrap_or_default();
                spi_run(&format!("COPY {target} FROM {} WITH (FORMAT binary)", quote_literal(path)))?;
                let check = crate::spi::text(&backstop_core::recover::plan::checksum_sql(target), &[]).unwrap_or_default();
                let (rows, checksum) = check.split_once(' ').unwrap_or(("-1", ""));
                let rows: i64 = rows.parse().unwrap_or(-1);
                if rows != read.rows || checksum != read.checksum {
                    pgrx::error!(
                        "the rows loaded into {target} ({rows}, checksum {checksum}) are not those {table} held at the target ({}, checksum {}); nothing was kept",
                        read.rows,
                        read.checksum
                    );
                }
                spi_run(&format!("ALTER TABLE {target} OWNER TO {}", quote_ident(&owner)))?;
                let parts = crate::spi::texts("SELECT unnest(pg_catalog.parse_ident($1))", &[table.as_str().into()])
                    .map_err(|e| Error::InvalidInput(format!("{table}: {e}")))?;
                let (schema, name) = match parts.as_slice() {
                    [schema, name] => (schema.clone(), name.clone()),
                    _ => ("public".to_string(), parts.last().cloned().unwrap_or_default()),
                };
                pgrx::Spi::run_with_args(
                    "INSERT INTO backstop.restores (target_oid, target_table, source_table, snapshot_id, rows, restored_by, validated_at, validation_passed)
                     VALUES (pg_catalog.to_regclass($1)::oid, $1, $2, $3, $4, $5, now(), true)",
                    &[
                        target.as_str().into(),
                        backstop_core::quote::qualified_name(&schema, &name).into(),
                        snapshot_id.as_str().into(),
                        rows.into(),
                        owner.as_str().into(),
                    ],
                )
                .map_err(|e| Error::InvalidInput(format!("recording the restore of {target} failed: {e}")))?;
                out.push(RecoveredTable {
                    table: table.clone(),
                    recovered: target.clone(),
                    rows,
                    checksum: checksum.to_string(),
                });
            }
            Ok(out)
        })
        .and_then(|r| r)
    })?;
    timed.end();
    Ok(TableRecoverOutcome {
        backup: prepared.backup.clone(),
        target: format!("{setting} = '{value}'"),
        inclusive,
        moved_before_lock: moved,
        wal_files: prepared.wal_files,
        restored_bytes: prepared.restored.bytes - prepared.restored.sparse_bytes,
        skipped_databases: sparse.len(),
        skipped_bytes: prepared.restored.sparse_bytes,
        skipped_disk_bytes,
        invalid_pages_tolerated: pages.tolerated,
        tables: recovered_tables,
        phases: timed,
    })
}

fn args_check(args: &TableRecoverArgs) -> Result<(), Error> {
    backstop_core::schedule::job::JobArgs::check(args)
}

fn spi_run(sql: &str) -> Result<(), Error> {
    pgrx::Spi::run(sql).map_err(|e| Error::InvalidInput(format!("{sql}: {e}")))
}

/// Bytes from lowercase hex (what `encode(..., 'hex')` prints).
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Bytes allocated on disk (not the length) by the relation files of `databases` under the data
/// directory `data` (`base/` only: a tablespace's files are outside it).
fn allocated_bytes(data: &std::path::Path, databases: &std::collections::BTreeSet<u32>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for database in databases {
        let Ok(entries) = std::fs::read_dir(data.join("base").join(database.to_string())) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = format!("base/{database}/{}", name.to_string_lossy());
            if backstop_core::backups::restore::sparse_database(&path).is_some() {
                total += entry.metadata().map_or(0, |m| m.blocks() * 512);
            }
        }
    }
    total
}

/// Why the background fetching of the WAL stopped short, if it did (a damaged or missing segment).
fn fetch_failed(prepared: &backstop_core::drills::pitr::Prepared) -> Option<Error> {
    let state = prepared.wal_fetch.as_ref()?;
    let error = state.error.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    Some(Error::Job {
        message: format!("fetching the WAL of backup {} failed: {error}", prepared.backup),
        hint: "Nothing was created in this database. Run backstop verify: the archive is damaged where it says.".into(),
    })
}

/// Each table's OID, database and relation files (the current ones, and those base backups
/// recorded for it): what the WAL names it by. A dropped table by the name the backup recorded.
fn table_ids(
    tables: &[String],
    manifest: &backstop_core::backups::BackupManifest,
) -> Result<Vec<backstop_core::recover::plan::TableIds>, Error> {
    let mut ids = Vec::new();
    for table in tables {
        let current = BackgroundWorker::transaction(|| {
            let oid =
                crate::spi::one::<i64>("SELECT pg_catalog.to_regclass($1)::oid::bigint", &[table.as_str().into()])?;
            match oid {
                Some(oid) => crate::backups::relations::relation_files(Some(oid as u32)),
                None => Ok(Vec::new()),
            }
        })
        .map_err(|e| Error::InvalidInput(format!("reading the catalog failed: {e}")))?;
        // A dropped table: the backup's record of that name, both names parsed and quoted the
        // same way (the record is as regclass prints it, `table` always quoted).
        let recorded: Vec<_> = match current.is_empty() {
            false => Vec::new(),
            true => BackgroundWorker::transaction(|| {
                manifest.relations.iter().filter(|r| table_sql(&r.table).is_ok_and(|t| t == *table)).collect()
            }),
        };
        let Some((oid, database)) =
            current.first().map(|r| (r.oid, r.database)).or_else(|| recorded.first().map(|r| (r.oid, r.database)))
        else {
            continue;
        };
        let mut files: Vec<_> = current.iter().map(|r| r.file()).collect();
        for relation in manifest.relations.iter().filter(|r| r.oid == oid) {
            if !files.contains(&relation.file()) {
                files.push(relation.file());
            }
        }
        ids.push(backstop_core::recover::plan::TableIds { oid, database, files });
    }
    Ok(ids)
}
