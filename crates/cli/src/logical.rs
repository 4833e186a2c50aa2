//! `backstop logical`: the logical backups (pg_dump) in a repository, readable while the server is
//! down. The listing is `backstop_core::logical::manifest::list`, as in SQL's
//! `backstop.logical_backups()`; a restore is `backstop_core::logical::restore::restore`, the
//! code the `logical_restore` drill runs.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backstop_core::codec::CodecSettings;
use backstop_core::logical::conninfo;
use backstop_core::logical::manifest;
use backstop_core::logical::restore::{self, Connection, RestoreOptions, RestoreProgress};
use backstop_core::logical::tools::Tools;
use backstop_core::logical::LogicalId;
use backstop_core::repository::{CancellationToken, Repository};
use backstop_core::Error;
use clap::{Args, Subcommand};

use crate::config::RepositoryArgs;

#[derive(Subcommand)]
pub enum LogicalCommand {
    /// List logical backups, oldest first per database. Exit 1 when any manifest cannot be read.
    List(ListArgs),
    /// Restore a logical backup into a database with pg_restore: the dump is verified through its
    /// checksums before pg_restore sees a byte; a database holding anything is refused unless
    /// --clean. Connects as libpq's environment says (PGHOST, PGPORT, PGUSER, ~/.pgpass).
    Restore(RestoreArgs),
    /// Print a logical backup's schema (plain SQL from pg_dump --schema-only) or its global
    /// objects (roles without passwords, tablespaces), checked against the manifest first.
    Show(ShowArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ShowWhat {
    Schema,
    Globals,
}

#[derive(Args)]
pub struct ShowArgs {
    /// What to print.
    pub what: ShowWhat,
    /// An id from `backstop logical list`, or latest.
    #[arg(long, default_value = "latest")]
    pub backup_id: String,
    /// Whose backups (needed when the repository holds several databases).
    #[arg(long)]
    pub database: Option<String>,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup to restore: an id from `backstop logical list`, or latest.
    #[arg(long, default_value = "latest")]
    pub backup_id: String,
    /// Whose backups: the dumped database (needed when the repository holds several and it is
    /// not --dbname).
    #[arg(long)]
    pub database: Option<String>,
    /// The database to restore into; created (from template0) when missing. Like pg_restore -d,
    /// also a connection string ("host=db2 port=5433 dbname=app" or postgresql://db2:5433/app),
    /// whose settings reach the client programs through libpq's environment (a password in it is
    /// never on a command line; ~/.pgpass keeps it off this one too).
    #[arg(long)]
    pub dbname: String,
    /// Drop the dump's objects before recreating them (pg_restore --clean --if-exists).
    #[arg(long)]
    pub clean: bool,
    /// pg_restore --jobs; above 1 the verified dump is spooled into --spool-dir first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Restore only this table (repeatable; pg_restore --table, any schema).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Where --jobs spools the dump (default: the temporary directory).
    #[arg(long)]
    pub spool_dir: Option<std::path::PathBuf>,
    /// Restore as the connecting role, which must not be a superuser, taking no owners or grants
    /// from the dump (pg_restore --no-owner --no-privileges): code in the dump (CHECK
    /// constraints, index expressions, defaults, triggers) runs with that role's rights only.
    /// What such a role may not restore is skipped and counted. For dumps of databases where
    /// roles you do not trust owned objects; connect as e.g. PGUSER=restorer (LOGIN CREATEDB).
    #[arg(long)]
    pub sandboxed: bool,
    /// The PostgreSQL client programs to use (default: those of the dump's version,
    /// /usr/lib/postgresql/<major>/bin, or `pg_config --bindir`).
    #[arg(long)]
    pub pg_bin: Option<std::path::PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this database's backups.
    #[arg(long)]
    pub database: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

pub fn run(command: LogicalCommand) -> Result<ExitCode, Error> {
    match command {
        LogicalCommand::List(args) => list(args),
        LogicalCommand::Restore(args) => restore(args),
        LogicalCommand::Show(args) => show(args),
    }
}

fn list(args: ListArgs) -> Result<ExitCode, Error> {
    let runtime = backstop_core::runtime::build(2, "backstop-io").map_err(|e| Error::io("start", "runtime", e))?;
    let (repository_args, _) = args.repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(CodecSettings::plain()))?;
    let listed = runtime.block_on(manifest::list(&repository, args.database.as_deref()))?;
    if args.json {
        let json: Vec<_> = listed
            .iter()
            .map(|l| {
                let m = l.manifest.as_ref().ok();
                serde_json::json!({
                    "database": l.database,
                    "backup_id": l.id,
                    "start_time": m.map(|m| m.start_time),
                    "stop_time": m.map(|m| m.stop_time),
                    "bytes": m.map(|m| m.dump.bytes),
                    "tables": m.map(|m| m.tables.len()),
                    "rows": m.map(|m| m.tables.iter().map(|t| t.rows).sum::<i64>()),
                    "list_entries": m.map(|m| m.verification.list_entries),
                    "pg_dump": m.map(|m| m.pg_dump_version.clone()),
                    "verified": m.is_some(),
                    "problem": l.manifest.as_ref().err(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "repository": repository.describe(), "logical_backups": json }));
    } else {
        for l in &listed {
            match &l.manifest {
                Ok(m) => println!(
                    "{} {} {} bytes, {} tables, {} rows, {} entries listed by pg_restore",
                    l.id,
                    l.database,
                    m.dump.bytes,
                    m.tables.len(),
                    m.tables.iter().map(|t| t.rows).sum::<i64>(),
                    m.verification.list_entries
                ),
                Err(problem) => println!("{} {} FAILED: {problem}", l.id, l.database),
            }
        }
        let failed = listed.iter().filter(|l| l.manifest.is_err()).count();
        println!("{} logical backups in {}, {failed} with problems", listed.len(), repository.describe());
    }
    Ok(if listed.iter().any(|l| l.manifest.is_err()) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Whose backups a restore reads: --database, else the only database with backups, else
/// --dbname when it has backups. An id alone names the database when exactly one holds it.
async fn source_database(
    repository: &Repository,
    database: Option<&str>,
    dbname: Option<&str>,
    id: Option<&LogicalId>,
) -> Result<String, Error> {
    if let Some(database) = database {
        return Ok(database.to_string());
    }
    let listed = manifest::list_ids(repository, None).await?;
    let mut databases: Vec<&String> =
        listed.iter().filter(|(_, i)| id.is_none_or(|id| i == id)).map(|(d, _)| d).collect();
    databases.dedup();
    match databases.as_slice() {
        [only] => Ok((*only).clone()),
        [] => Err(Error::Job {
            message: match id {
                Some(id) => format!("there is no logical backup {id} in {}", repository.describe()),
                None => format!("there is no logical backup in {}", repository.describe()),
            },
            hint: "backstop logical list shows what the repository holds.".into(),
        }),
        several if dbname.is_some_and(|d| several.iter().any(|s| s.as_str() == d)) => {
            Ok(dbname.unwrap_or_default().to_string())
        }
        several => Err(Error::InvalidInput(format!(
            "the repository holds logical backups of several databases ({}); say which with --database",
            several.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn bin_dir(args: &RestoreArgs, major: u32) -> std::path::PathBuf {
    if let Some(dir) = &args.pg_bin {
        return dir.clone();
    }
    let debian = std::path::PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join("pg_restore").is_file() {
        return debian;
    }
    std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or(debian)
}

/// The runtime, the repository, and the backup id asked for (None for latest).
fn open(
    repository: &RepositoryArgs,
    backup_id: &str,
) -> Result<(tokio::runtime::Runtime, Repository, Option<LogicalId>), Error> {
    let runtime = backstop_core::runtime::build(2, "backstop-io").map_err(|e| Error::io("start", "runtime", e))?;
    let (repository_args, _) = repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(CodecSettings::plain()))?;
    let id = match backup_id {
        "latest" => None,
        text => Some(LogicalId::parse(text)?),
    };
    Ok((runtime, repository, id))
}

/// The target of `--dbname`: a database name, or (like `pg_restore -d`) a connection string
/// whose settings reach the client programs through libpq's environment, never their command line.
fn target(dbname: &str) -> Result<(String, Connection, String), Error> {
    if !conninfo::is_conninfo(dbname) {
        return Ok((dbname.to_string(), Connection::Environment, dbname.to_string()));
    }
    let parsed = conninfo::Conninfo::parse(dbname)?;
    let database = parsed.database().map(str::to_string).ok_or_else(|| {
        Error::InvalidInput(format!(
            "the connection string --dbname \"{}\" names no database: add dbname=... (or /database to a URI)",
            parsed.describe()
        ))
    })?;
    let shown = format!("{database} ({})", parsed.describe());
    Ok((database, Connection::Conninfo(parsed), shown))
}

fn restore(args: RestoreArgs) -> Result<ExitCode, Error> {
    let (target_database, connection, target_shown) = target(&args.dbname)?;
    let (runtime, repository, id) = open(&args.repository, &args.backup_id)?;
    let database = runtime.block_on(source_database(
        &repository,
        args.database.as_deref(),
        Some(&target_database),
        id.as_ref(),
    ))?;
    let manifest = runtime.block_on(manifest::pick(&repository, &database, id.as_ref()))?;
    let tools =
        Tools::find_for_restore(&bin_dir(&args, manifest.pg_version_num / 10000), manifest.pg_version_num / 10000)?;
    if !args.json {
        eprintln!(
            "restoring logical backup {} of database {} ({} bytes, {} tables) into database {}",
            manifest.id,
            manifest.database,
            manifest.dump.bytes,
            manifest.tables.len(),
            target_shown
        );
    }
    let options = RestoreOptions {
        tools,
        connection,
        database: target_database,
        clean: args.clean,
        jobs: args.jobs,
        tables: args.tables.clone(),
        spool_dir: args.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        sandboxed: args.sandboxed,
    };
    // pg_restore's own rule: code in a dump runs as whoever restores it. Said before it runs.
    let warning = match args.sandboxed {
        true => None,
        false => {
            let (role, superuser) = runtime.block_on(restore::connecting_role(&options.tools, &options.connection))?;
            superuser.then(|| format!(
                "restoring as superuser {role}: code in the dump (CHECK constraints, index expressions, defaults, triggers) runs with superuser rights; for a database where roles you do not trust owned objects, restore with --sandboxed as a role without rights"
            ))
        }
    };
    if let Some(warning) = warning.as_ref().filter(|_| !args.json) {
        eprintln!("backstop: warning: {warning}");
    }
    let progress = Arc::new(RestoreProgress::default());
    // Both passes (verify, then restore) move the bar: twice the dump's size in all.
    let bar = crate::backups::bar(
        args.json,
        manifest.dump.bytes * 2,
        "{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    );
    let started = Instant::now();
    let restored = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let work = restore::restore(&repository, &manifest, &options, &progress, &cancel);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    bar.set_message(progress.phase.lock().map(|p| p.clone()).unwrap_or_default());
                    bar.set_position(progress.verified.load(Ordering::Relaxed) + progress.restored.load(Ordering::Relaxed));
                }
            }
        }
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::json!({ "restored": restored, "seconds": seconds, "warning": warning }));
    } else {
        if restored.skipped > 0 {
            eprintln!(
                "backstop: {} entries of the dump could not be restored without rights and were skipped; the first: {}",
                restored.skipped,
                restored.skipped_messages.first().map(String::as_str).unwrap_or("")
            );
        }
        println!(
            "restored logical backup {} of database {} into database {}{}: {} bytes verified and restored with {} job(s) in {:.1} s",
            restored.backup_id,
            restored.source_database,
            restored.database,
            if restored.created { " (created)" } else { "" },
            restored.bytes,
            restored.jobs,
            seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> Result<ExitCode, Error> {
    let (runtime, repository, id) = open(&args.repository, &args.backup_id)?;
    let database = runtime.block_on(source_database(&repository, args.database.as_deref(), None, id.as_ref()))?;
    let manifest = runtime.block_on(manifest::pick(&repository, &database, id.as_ref()))?;
    let which = match args.what {
        ShowWhat::Schema => backstop_core::logical::SqlObject::Schema,
        ShowWhat::Globals => backstop_core::logical::SqlObject::Globals,
    };
    let bytes = runtime.block_on(backstop_core::logical::read_sql_object(&repository, &manifest, which))?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes).map_err(|e| Error::io("write", "stdout", e))?;
    Ok(ExitCode::SUCCESS)
}
