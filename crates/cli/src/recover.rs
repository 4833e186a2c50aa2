//! `backstop recover-table`: tables as they were at a recovery target, for when the server is
//! down (or from another host). The same plan (core `recover::plan`), partial restore (the
//! table's database whole, the others as holes: `recover::partial`) and throwaway-server settings
//! (`drills::scratch`) as `backstop.recover()`; each table is written with `pg_dump -Fc` from the
//! server paused at the target, with its row count and checksum, to restore with `pg_restore`.
//!
//! Invariants:
//! - Run as the OS user that owns PostgreSQL's files (the server refuses root). The scratch
//!   directory is fresh and private, the server reachable only over its socket there, by this OS
//!   user as `--user`; it is stopped and the directory removed however the command ends short
//!   of a signal that kills it.
//! - Nothing is written outside `--to` (created fresh) and the scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backstop_core::backups::restore::{RecoveryTarget, RestoreProgress};
use backstop_core::backups::{parse_time, Lsn};
use backstop_core::codec::CodecSettings;
use backstop_core::drills::scratch;
use backstop_core::recover::{partial, plan};
use backstop_core::repository::CancellationToken;
use backstop_core::Error;
use clap::Args;

use crate::config::RepositoryArgs;

#[derive(Args)]
pub struct RecoverTableArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// A table, schema-qualified (repeat for several: one server, one target, consistent).
    #[arg(long = "table", required = true)]
    pub tables: Vec<String>,
    /// The database that holds the tables.
    #[arg(long)]
    pub database: String,
    /// Recover to this time (e.g. "2026-11-22 14:32:00+00").
    #[arg(long, group = "target", required = true)]
    pub target_time: Option<String>,
    /// Recover to this LSN (a table_history row's target_lsn, with --exclusive).
    #[arg(long, group = "target")]
    pub target_lsn: Option<String>,
    /// Recover to the end of this transaction.
    #[arg(long, group = "target")]
    pub target_xid: Option<u64>,
    /// Recover to this restore point.
    #[arg(long, group = "target")]
    pub target_name: Option<String>,
    /// Stop just before the target (recovery_target_inclusive = off).
    #[arg(long)]
    pub exclusive: bool,
    /// Where the dump files go: created, and must not exist yet.
    #[arg(long)]
    pub to: PathBuf,
    /// Where the scratch data directory is created (a fresh private directory inside it).
    #[arg(long, default_value = "/tmp")]
    pub scratch: PathBuf,
    /// PostgreSQL's programs of the backup's major version (default: where they usually are).
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
    /// The restored cluster's superuser, as this OS user connects to the throwaway server.
    #[arg(long, default_value = "postgres")]
    pub user: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn target(args: &RecoverTableArgs) -> Result<RecoveryTarget, Error> {
    Ok(match (&args.target_time, &args.target_lsn, args.target_xid, &args.target_name) {
        (Some(time), _, _, _) => RecoveryTarget::Time(parse_time(time)?),
        (_, Some(lsn), _, _) => RecoveryTarget::Lsn(Lsn::parse(lsn)?),
        (_, _, Some(xid), _) => RecoveryTarget::Xid(xid),
        (_, _, _, Some(name)) => {
            backstop_core::schedule::job::check_restore_point_name(name)?;
            RecoveryTarget::Name(name.clone())
        }
        _ => return Err(Error::InvalidInput("give --target-time, --target-lsn, --target-xid or --target-name".into())),
    })
}

/// The scratch directory and the server in it: stopped and removed when dropped.
struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
    started: bool,
}

const PORT: u16 = 5432;

impl Scratch {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.data()).args(args).stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    /// One query over the private socket; the first column of every row.
    fn query(&self, user: &str, database: &str, sql: &str) -> Result<Vec<String>, Error> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &PORT.to_string(), "-U", user, "-c", sql])
            .env("PGDATABASE", database)
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .output()
            .map_err(|e| Error::io("run", self.bin.join("psql"), e))?;
        if !output.status.success() {
            return Err(Error::Job {
                message: format!(
                    "on the throwaway server, {sql} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                hint: "See the message; the throwaway server's log is removed with it.".into(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.started {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `pg_controldata`'s limits of the restored cluster, as the hot standby must have them at least.
fn limits(bin: &Path, data: &Path) -> Result<String, Error> {
    let output = Command::new(bin.join("pg_controldata"))
        .arg(data)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::io("run", bin.join("pg_controldata"), e))?;
    Ok(plan::hot_standby_limits(&String::from_utf8_lossy(&output.stdout)))
}

pub fn recover_table(args: RecoverTableArgs) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let runtime = backstop_core::runtime::build(4, "backstop-io").map_err(|e| Error::io("start", "runtime", e))?;
    let target = target(&args)?;
    let tables: Vec<String> = args.tables.iter().map(|t| qualified(t)).collect::<Result<_, _>>()?;
    if std::fs::symlink_metadata(&args.to).is_ok() {
        return Err(Error::InvalidInput(format!("{} exists: name a directory to create", args.to.display())));
    }
    let (resolved, _) = args.repository.resolve()?;
    let repository = runtime.block_on(resolved.open(CodecSettings::plain()))?;
    let say = |text: &str| {
        if !args.json {
            eprintln!("[{:6.1} s] {text}", started.elapsed().as_secs_f64());
        }
    };

    say("choosing the base backup and checking the target against the archive");
    let plan = runtime.block_on(plan::plan(&repository, None, &target))?;
    let manifest = plan.manifest.clone();
    let bin = match &args.pg_bin {
        Some(bin) => {
            backstop_core::backups::restore::check_binaries(bin, manifest.pg_version_num)?;
            bin.clone()
        }
        None => backstop_core::backups::restore::binaries_for(
            &backstop_core::backups::restore::usual_binaries(manifest.pg_version_num / 10000),
            manifest.pg_version_num,
        )?
        .ok_or_else(|| Error::InvalidInput("PostgreSQL's programs were not found: give --pg-bin".into()))?,
    };
    say("finding the WAL up to the target");
    let last_segment = runtime.block_on(plan.last_segment(&repository, &target))?;
    // A DROP, TRUNCATE or ALTER TABLE in progress at the target holds a lock the paused server
    // replays: stop just before it instead when that gives the same rows.
    let ids: Vec<plan::TableIds> = tables
        .iter()
        .filter_map(|table| manifest.relations.iter().find(|r| r.table == *table))
        .map(|found| plan::TableIds {
            oid: found.oid,
            database: found.database,
            files: manifest.relations.iter().filter(|r| r.oid == found.oid).map(|r| r.file()).collect(),
        })
        .collect();
    let (target, inclusive) = match runtime.block_on(plan.before_pending_locks(&repository, &target, &ids))? {
        Some(lock) => {
            say(&format!(
                "at the target a transaction that commits later (a DROP, TRUNCATE or ALTER TABLE) holds an exclusive lock on a table: recovering just before that lock, {lock}, which gives the same rows"
            ));
            (RecoveryTarget::Lsn(lock), false)
        }
        None => (target, !args.exclusive),
    };
    let (setting, value) = target.setting().ok_or_else(|| Error::InvalidInput("no recovery target given".into()))?;
    // The tables' database, from the relation files the backup recorded: the others are holes.
    let database_oid = manifest.relations.iter().find(|r| tables.contains(&r.table)).map(|r| r.database);
    let sparse = database_oid.map(|db| partial::sparse_databases(&manifest, db)).unwrap_or_default();
    if database_oid.is_none() {
        say("the backup recorded none of these tables (it records those of the database it ran in): restoring every database");
    }

    say(&format!(
        "restoring base backup {} into a scratch directory ({} other database(s) as empty sparse files)",
        manifest.id,
        sparse.len()
    ));
    let mut scratch = Scratch {
        dir: scratch::create_private_dir(&args.scratch, std::process::id() as i64)?,
        bin: bin.clone(),
        started: false,
    };
    let cancel = CancellationToken::new();
    let _stop_fetching = cancel.clone().drop_guard();
    let prepared = runtime.block_on(backstop_core::drills::pitr::prepare_backup(
        &repository,
        &scratch.dir,
        &manifest,
        &backstop_core::drills::pitr::Scope {
            last_segment,
            sparse_databases: sparse.clone(),
            wal_while_replaying: true,
        },
        Arc::new(RestoreProgress::default()),
        &cancel,
    ))?;

    say(&format!("replaying WAL to {setting} = {value} in a throwaway server"));
    let os_user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "postgres".into());
    scratch::write_config_files(&scratch.dir, &os_user, &[&args.user])?;
    let options = format!(
        "{} {}",
        scratch::server_options(
            &scratch.dir,
            PORT,
            &format!("-c shared_buffers=128MB -c wal_level=replica {}", limits(&bin, &scratch.data())?)
        ),
        plan::paused_at_target(setting, &value, inclusive, !sparse.is_empty())
    );
    let log = scratch.dir.join("server.log");
    scratch.started = true;
    let status = scratch
        .pg_ctl(&["-w", "-t", "86400", "-l", &log.to_string_lossy(), "-o", &options, "start"])
        .status()
        .map_err(|e| Error::io("run", bin.join("pg_ctl"), e))?;
    let fetch_error =
        || prepared.wal_fetch.as_ref().and_then(|f| f.error.lock().unwrap_or_else(|p| p.into_inner()).clone());
    let server_failed = |scratch: &Scratch| match fetch_error() {
        Some(error) => Error::Job {
            message: format!("fetching the WAL of backup {} failed: {error}", prepared.backup),
            hint: "Run backstop verify: the archive is damaged where it says.".into(),
        },
        None => Error::Job {
            message: format!(
                "the restored backup {} did not recover: {}",
                prepared.backup,
                first_errors(&std::fs::read_to_string(scratch.dir.join("server.log")).unwrap_or_default())
            ),
            hint: "The backup or its WAL cannot be recovered to this target: run backstop verify.".into(),
        },
    };
    if !status.success() {
        return Err(server_failed(&scratch));
    }
    loop {
        let paused = scratch.query(&args.user, &args.database, "SELECT pg_catalog.pg_get_wal_replay_pause_state()");
        if paused.as_ref().is_ok_and(|rows| rows.first().map(String::as_str) == Some("paused")) {
            break;
        }
        if !scratch.pg_ctl(&["status"]).status().is_ok_and(|s| s.success()) {
            return Err(server_failed(&scratch));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    say("writing the tables at the target");
    std::fs::create_dir_all(&args.to).map_err(|e| Error::io("create", &args.to, e))?;
    let mut written = Vec::new();
    for table in &tables {
        let exists = scratch.query(
            &args.user,
            &args.database,
            &format!("SELECT pg_catalog.to_regclass({})::text", backstop_core::quote::quote_literal(table)),
        )?;
        if exists.first().is_none_or(|t| t.is_empty()) {
            return Err(Error::InvalidInput(format!(
                "table {table} did not exist in {} at {setting} = {value} (backup {}): pick a later target",
                args.database, prepared.backup
            )));
        }
        let check = scratch.query(&args.user, &args.database, &plan::checksum_sql(table))?;
        let (rows, checksum) = check.first().and_then(|c| c.split_once(' ')).unwrap_or(("-1", ""));
        let file = args.to.join(format!("{}.dump", table.replace(['"', '/'], "")));
        let dump = Command::new(bin.join("pg_dump"))
            .args(["-Fc", "--no-owner", "--no-privileges", "-h"])
            .arg(&scratch.dir)
            .args(["-p", &PORT.to_string(), "-U", &args.user, "-t", table, "-f"])
            .arg(&file)
            .env("PGDATABASE", &args.database)
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::io("run", bin.join("pg_dump"), e))?;
        if !dump.status.success() {
            return Err(Error::Job {
                message: format!("pg_dump of {table} failed: {}", String::from_utf8_lossy(&dump.stderr).trim()),
                hint: "See the message.".into(),
            });
        }
        written.push(serde_json::json!({
            "table": table,
            "file": file,
            "rows": rows.parse::<i64>().unwrap_or(-1),
            "checksum": checksum,
        }));
    }
    let _ = scratch.pg_ctl(&["-m", "fast", "-w", "stop"]).status();
    scratch.started = false;
    let pages = partial::check_log(&std::fs::read_to_string(&log).unwrap_or_default(), &sparse);
    if !pages.problems.is_empty() {
        let _ = std::fs::remove_dir_all(&args.to);
        return Err(Error::Job {
            message: format!(
                "the partial restore replayed WAL onto missing pages of a database it restored whole: {}",
                pages.problems.iter().take(3).cloned().collect::<Vec<_>>().join(" | ")
            ),
            hint: "Nothing was kept. The backup or its WAL is damaged where these pages are: run backstop verify."
                .into(),
        });
    }
    drop(scratch);
    let seconds = started.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "backup": prepared.backup,
        "target": format!("{setting} = '{value}'"),
        "inclusive": inclusive,
        "skipped_databases": sparse.len(),
        "tables": written,
        "seconds": seconds,
        "finished_at": backstop_core::backups::format_utc(SystemTime::now()),
    });
    if args.json {
        println!("{result}");
    } else {
        for table in &written {
            println!(
                "{}: {} rows as at {setting} = '{value}' in {} (checksum {}); restore it with pg_restore -d <database> (it creates the table: rename or drop the original first, or restore into another database)",
                table["table"].as_str().unwrap_or_default(),
                table["rows"],
                table["file"].as_str().unwrap_or_default(),
                table["checksum"].as_str().unwrap_or_default(),
            );
        }
        println!("from backup {} in {seconds:.1} s", prepared.backup);
    }
    Ok(ExitCode::SUCCESS)
}

/// `schema.table` as given, with `public.` when no schema is named.
fn qualified(table: &str) -> Result<String, Error> {
    if table.is_empty() || table.contains(['\0', '\n', ';']) {
        return Err(Error::InvalidInput(format!("\"{table}\" is not a table name")));
    }
    Ok(if table.contains('.') { table.to_string() } else { format!("public.{table}") })
}

/// The first FATAL, PANIC or ERROR lines of a server log.
fn first_errors(log: &str) -> String {
    let lines: Vec<&str> =
        log.lines().filter(|l| l.contains("FATAL:") || l.contains("PANIC:") || l.contains("ERROR:")).take(3).collect();
    if lines.is_empty() {
        "the server stopped without saying why".into()
    } else {
        lines.join(" | ")
    }
}
