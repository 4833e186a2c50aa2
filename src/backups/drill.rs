//! The `pitr` drill, run as a job: it restores something for real, compares it with what was
//! recorded when it was backed up, and leaves nothing behind. The run's measured duration (in
//! `backstop.job_runs.seconds`) is the recovery time a DBA can quote.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backstop_core::schedule::job::{parse_bytes, PitrArgs};
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;

use crate::jobs::phase;
use crate::jobs::{sql_step, JobRequest, JobStatus};
use crate::throwaway::Throwaway;
use crate::{io, repo};

/// A table the drill counted in the recovered server: against the rows the backup recorded, or
/// (none recorded) beside this server's estimate now.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum TableCheck {
    AtBackup(backstop_core::drills::pitr::ComparedTable),
    Estimated { table: String, rows_recovered: i64, rows_estimated_now: Option<i64> },
}

/// An index amcheck checked, or why none was.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum IndexCheck {
    Checked { index: String, bt_index_check: &'static str },
    NotChecked { amcheck: &'static str },
}

/// What a `pitr` drill restored, replayed and compared.
#[derive(serde::Serialize)]
pub struct PitrOutcome {
    pub drill: &'static str,
    pub backup: String,
    pub restored_bytes: u64,
    pub wal_files_replayed: u64,
    pub replayed_to: String,
    pub row_counts: &'static str,
    pub tables: Vec<TableCheck>,
    pub indexes: Vec<IndexCheck>,
    pub rows: i64,
    pub bytes: u64,
}

/// `pitr`: the newest base backup restored (with `backstop restore`'s code) into a scratch
/// directory and recovered by a throwaway server on a private socket with archiving, replication
/// and preloaded libraries off. Where the backup recorded row counts, replay first stops, paused
/// and read-only, just before the WAL position those counts match, and every counted table (or
/// the chosen ones) must hold exactly its recorded rows; then the rest of the WAL fetched (at most
/// `max_replay`) is replayed, the server promotes, and amcheck's `bt_index_check` runs on the
/// chosen indexes. The server is stopped and the directory removed afterwards, also on failure.
pub fn pitr(request: &JobRequest, args: &PitrArgs, status: &mut JobStatus) -> Result<PitrOutcome, Error> {
    let max_replay = args.max_replay.as_deref().map(parse_bytes).transpose()?.unwrap_or(1 << 30);
    let mut throwaway = Throwaway::create(request.id)?;
    phase(status, "restoring the newest base backup");
    let repository = repo::open_checked()?;
    let progress = Arc::new(backstop_core::backups::restore::RestoreProgress::default());
    let cancel = backstop_core::repository::CancellationToken::new();
    let task = {
        let (repository, dir, progress, cancel) =
            (repository.clone(), throwaway.dir.clone(), progress.clone(), cancel.clone());
        // restore's future is not Send (it is driven with block_on, as the CLI drives it): run it
        // on a thread of its own that blocks on the I/O runtime.
        std::thread::spawn(move || {
            io::runtime().block_on(backstop_core::drills::pitr::prepare(
                &repository,
                &dir,
                max_replay,
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
        .map_err(|_| Error::Job { message: "the drill's restore thread panicked".into(), hint: String::new() })??;

    // A throwaway server: private socket (0700 directory, no TCP), nothing archived, nothing
    // preloaded (no scheduler), little memory; settings from the backup are overridden on the
    // command line, which wins over postgresql.auto.conf. Hot standby needs the limits the
    // primary runs with (they are in the WAL it replays), so those are this server's.
    // A job worker runs SQL only inside a transaction of its own.
    let (user, this_database, limits) = BackgroundWorker::transaction(|| {
        // Read-only SPI throughout: the drill may run on a standby.
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
    // Peer authentication through a map that admits only this server's OS user as the bootstrap
    // superuser: no password to leak, no trust, even though the socket directory is private.
    let options = throwaway.configure(&[&user], &format!("-c shared_buffers=128MB -c wal_level=replica {limits}"))?;
    let database = prepared.row_counts.as_ref().map(|c| c.database.clone()).unwrap_or(this_database);

    // First stop where the backup counted its rows (just before that WAL position), paused, open
    // read-only: every counted table must hold exactly the rows it held then.
    let mut compared = Vec::new();
    let mut rows_total = 0i64;
    if let Some(counts) = &prepared.row_counts {
        phase(status, &format!("replaying WAL to {} (where the backup counted rows)", counts.lsn));
        throwaway.start(
            &format!(
                "{options} -c hot_standby=on -c recovery_target_lsn='{}' -c recovery_target_inclusive=off \
                 -c recovery_target_action=pause",
                counts.lsn
            ),
            |log| did_not_recover(log, &prepared.backup),
        )?;
        wait_for_server(&throwaway, &prepared.backup, || {
            Ok(throwaway
                .query(&user, &database, "SELECT pg_catalog.pg_get_wal_replay_pause_state()")?
                .first()
                .map(String::as_str)
                == Some("paused"))
        })?;
        phase(status, "comparing row counts with the backup's");
        let wanted: Vec<String> = args
            .tables
            .iter()
            .map(|t| BackgroundWorker::transaction(|| sql_step(|| table_sql(t)))?)
            .collect::<Result<_, _>>()?;
        let mut chosen = Vec::new();
        for recorded in &counts.tables {
            let table = BackgroundWorker::transaction(|| sql_step(|| table_sql(&recorded.table)))??;
            if wanted.is_empty()
                || wanted.iter().any(|w| *w == table || (!w.contains("\".\"") && table.ends_with(&format!(".{w}"))))
            {
                chosen.push((recorded, table));
            }
        }
        let quoted: std::collections::HashMap<&str, &str> =
            chosen.iter().map(|(r, t)| (r.table.as_str(), t.as_str())).collect();
        let matched = backstop_core::drills::pitr::compare_row_counts(
            &prepared.backup,
            counts,
            chosen.iter().map(|(r, _)| *r),
            |recorded| {
                let rows = throwaway
                    .query(&user, &database, &format!("SELECT count(*) FROM {}", quoted[recorded.table.as_str()]))
                    .map_err(|e| e.to_string())?;
                rows.first().and_then(|c| c.parse::<i64>().ok()).ok_or_else(|| "no count returned".to_string())
            },
        )?;
        rows_total = matched.iter().map(|t| t.rows_recovered).sum();
        compared = matched.into_iter().map(TableCheck::AtBackup).collect();
        phase(status, "stopping the paused server to replay the rest");
        if !throwaway.stop() {
            return Err(did_not_recover(&throwaway.log(), &prepared.backup));
        }
    }

    // Then replay the rest of the WAL fetched and promote. With hot standby off, the server
    // accepts connections only when replay has ended and it has promoted.
    phase(status, "replaying WAL in a throwaway server");
    throwaway.start(&format!("{options} -c hot_standby=off"), |log| did_not_recover(log, &prepared.backup))?;
    wait_for_server(&throwaway, &prepared.backup, || {
        Ok(throwaway.query(&user, &database, "SELECT pg_catalog.pg_is_in_recovery()")?.first().map(String::as_str)
            == Some("f"))
    })?;
    phase(status, "smoke checks");
    if prepared.row_counts.is_none() {
        // No counts recorded with this backup: count what the recovered server holds, beside
        // this server's estimate now (pg_class.reltuples, no scan of production).
        let tables: Vec<String> = if args.tables.is_empty() {
            throwaway.query(&user, &database,
                "SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
                 ORDER BY 1",
            )?
        } else {
            args.tables.clone()
        };
        for table in &tables {
            let quoted =
                format!("SELECT count(*) FROM {}", BackgroundWorker::transaction(|| sql_step(|| table_sql(table)))??);
            let recovered: i64 =
                throwaway.query(&user, &database, &quoted)?.first().and_then(|c| c.parse().ok()).unwrap_or(0);
            rows_total += recovered;
            let estimate = BackgroundWorker::transaction(|| {
                sql_step(|| {
                    crate::spi::text(
                        "SELECT reltuples::text FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass($1)",
                        &[table.as_str().into()],
                    )
                    .and_then(|t| t.parse::<f64>().ok())
                })
                .ok()
                .flatten()
            });
            compared.push(TableCheck::Estimated {
                table: table.clone(),
                rows_recovered: recovered,
                rows_estimated_now: estimate.filter(|e| *e >= 0.0).map(|e| e as i64),
            });
        }
    }
    let mut indexes = Vec::new();
    if !args.indexes.is_empty() {
        let available = throwaway.query(
            &user,
            &database,
            "SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck'",
        )?;
        if available.first().map(String::as_str) == Some("1") {
            throwaway.query(&user, &database, "CREATE EXTENSION IF NOT EXISTS amcheck")?;
            for index in &args.indexes {
                throwaway.query(
                    &user,
                    &database,
                    &format!(
                        "SELECT bt_index_check({}::pg_catalog.regclass)",
                        backstop_core::quote::quote_literal(index)
                    ),
                )?;
                indexes.push(IndexCheck::Checked { index: index.clone(), bt_index_check: "passed" });
            }
        } else {
            indexes.push(IndexCheck::NotChecked { amcheck: "not installed: indexes not checked" });
        }
    }
    Ok(PitrOutcome {
        drill: "pitr",
        row_counts: if prepared.row_counts.is_some() {
            "compared with the backup's"
        } else {
            "none recorded with the backup"
        },
        bytes: prepared.restored.bytes + prepared.wal_bytes,
        restored_bytes: prepared.restored.bytes,
        wal_files_replayed: prepared.wal_files,
        backup: prepared.backup,
        replayed_to: prepared.replay_to,
        tables: compared,
        indexes,
        rows: rows_total,
    })
}

/// pg_ctl returns once the server is consistent, not when replay is done: polls `ready` for as
/// long as the server lives (its death is reported with its log's reason).
pub(crate) fn wait_for_server(
    throwaway: &Throwaway,
    backup: &str,
    mut ready: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => {
                if !throwaway.alive() {
                    return Err(did_not_recover(&throwaway.log(), backup));
                }
                if started.elapsed() > Duration::from_secs(6 * 3600) {
                    return Err(error);
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(500))) {
            return Err(Error::Cancelled);
        }
    }
}

/// The throwaway server stopped or never became ready: the first FATAL/PANIC/ERROR lines of its
/// log say why.
pub(crate) fn did_not_recover(log: &std::path::Path, backup: &str) -> Error {
    let tail = crate::throwaway::log_errors(log);
    Error::Job {
        message: format!("the restored backup {backup} did not recover: {tail}"),
        hint: "The backup or its WAL cannot be recovered: take a new base backup now, and run backstop verify.".into(),
    }
}

/// A table name from the drill's args or the recovered catalog, as SQL: parsed by the server
/// (parse_ident) and re-quoted, never pasted.
pub(crate) fn table_sql(name: &str) -> Result<String, Error> {
    let parts = crate::spi::texts("SELECT unnest(pg_catalog.parse_ident($1))", &[name.into()])
        .map_err(|e| Error::InvalidInput(format!("\"{name}\" is not a table name: {e}")))?;
    if parts.is_empty() || parts.len() > 2 {
        return Err(Error::InvalidInput(format!("\"{name}\" is not a table name; write schema.table")));
    }
    Ok(parts.iter().map(|p| backstop_core::quote::quote_ident(p)).collect::<Vec<_>>().join("."))
}

/// The `pitr` job, run in a worker (registered in [`crate::JOBS`]).
pub struct PitrDrill;

impl crate::jobs::Job for PitrDrill {
    type Args = backstop_core::schedule::job::PitrArgs;
    type Outcome = PitrOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::Pitr;
    const NEEDS_OPERATOR: bool = true;
    const READ_ONLY: bool = true;

    /// The caller reads each table whose rows it compares.
    fn authorize(&self, args: &Self::Args) {
        crate::jobs::registry::require_readable(&args.tables);
    }

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        args: Self::Args,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<PitrOutcome, backstop_core::Error> {
        pitr(request, &args, status)
    }
}
