//! Restoring a logical backup into a database with `pg_restore`, shared by `backstop logical
//! restore` and the `logical_restore` drill.
//!
//! Invariants:
//! - `pg_restore` never sees a byte that was not verified first. With one job the stored dump is
//!   read whole through every checksum and compared with its manifest, then streamed again into
//!   `pg_restore --single-transaction`; the second read is checked too, and a mismatch there
//!   kills `pg_restore`, whose transaction then rolls back, so nothing is half restored (a
//!   sandboxed restore has no single transaction: it goes into a throwaway database, which is
//!   discarded whole). With `--jobs N` (which needs a seekable file) the dump is spooled into a
//!   private file while it is verified, and `pg_restore` starts on that file only after it
//!   matched; the file is removed.
//! - A target that holds anything of its own is refused unless `clean` is asked for (then
//!   `pg_restore --clean --if-exists`); a missing target is created from `template0`.
//! - Every program gets the database in its environment (`PGDATABASE`), never on its command
//!   line: a database name may look like a connection string, which libpq would expand.
//! - A sandboxed restore (the drill's) runs as a role without rights that owns only the target:
//!   `--no-owner --no-privileges`, entry by entry, so what a role without rights cannot restore
//!   (an untrusted extension, a grant to a missing role) is skipped and counted, never retried
//!   with more rights. Code in the dump (a CHECK, an index expression, a default) runs as that
//!   role.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::manifest::{LogicalManifest, SequenceValue};
use super::take::UntilClosed;
use super::tools::{self, LocalConnection, SessionLine, Tools};
use super::verify_object;
use crate::backups::manifest::TableRows;
use crate::error::{Error, Result};
use crate::layout::{self, LogicalFile};
use crate::repository::{CancellationToken, Repository};

/// How the client programs reach the target server.
#[derive(Debug, Clone)]
pub enum Connection {
    /// This server over its socket, as the extension's jobs reach it.
    Local(LocalConnection),
    /// libpq's environment (PGHOST, PGPORT, PGUSER, ~/.pgpass ...) as the CLI's user set it.
    Environment,
    /// That environment with a connection string's settings over it (`--dbname "host=..."`).
    Conninfo(super::conninfo::Conninfo),
}

impl Connection {
    fn apply(&self, command: &mut Command, database: &str) {
        match self {
            Connection::Local(local) => local.apply(command, database),
            Connection::Environment => {
                command.env("PGDATABASE", database).env("PGAPPNAME", "backstop");
            }
            Connection::Conninfo(conninfo) => {
                command.env("PGAPPNAME", "backstop");
                for (name, value) in conninfo.environment() {
                    command.env(name, value);
                }
                command.env("PGDATABASE", database);
            }
        }
    }

    fn std_command(&self, program: &Path, database: &str) -> std::process::Command {
        // The same environment as `apply`, for programs driven from a blocking thread.
        let mut async_command = Command::new(program);
        self.apply(&mut async_command, database);
        let mut command = std::process::Command::new(program);
        for (name, value) in async_command.as_std().get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command
    }
}

/// The database the maintenance statements (CREATE and DROP DATABASE) connect to.
pub const MAINTENANCE_DATABASE: &str = "postgres";

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub tools: Tools,
    pub connection: Connection,
    /// The database to restore into.
    pub database: String,
    /// Drop and recreate the objects the dump holds (`pg_restore --clean --if-exists`).
    pub clean: bool,
    /// `pg_restore --jobs`; above 1 the dump is spooled (verified) into `spool_dir` first.
    pub jobs: u32,
    /// Restore only these tables (`pg_restore --table`, which matches a name in any schema).
    pub tables: Vec<String>,
    pub spool_dir: PathBuf,
    /// The connection's role has no rights beyond owning the target (see the module's invariants).
    pub sandboxed: bool,
}

/// What a running restore is doing, for progress reports.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub phase: std::sync::Mutex<String>,
    /// Bytes of the dump read through the checksums so far (both passes).
    pub verified: AtomicU64,
    /// Bytes handed to pg_restore so far.
    pub restored: AtomicU64,
    /// The dump's size, for a percentage.
    pub total: AtomicU64,
}

impl RestoreProgress {
    fn set(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_string();
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub backup_id: String,
    pub source_database: String,
    pub database: String,
    pub created: bool,
    pub bytes: u64,
    pub jobs: u32,
    /// Archive entries a sandboxed restore could not restore (pg_restore's "errors ignored").
    pub skipped: u64,
    /// The first of pg_restore's messages about them.
    pub skipped_messages: Vec<String>,
    /// The role the restore ran as, and whether it is a superuser (then code in the dump ran
    /// with a superuser's rights).
    pub role: String,
    pub superuser: bool,
}

fn job_error(message: String, hint: &str) -> Error {
    Error::Job { message, hint: hint.into() }
}

/// Output and exit status of one short client-program run.
async fn run_psql(
    tools: &Tools,
    connection: &Connection,
    database: &str,
    vars: &[(&str, &str)],
    script: &str,
) -> Result<String> {
    let mut command = Command::new(&tools.psql);
    command.args(["-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for (name, value) in vars {
        // Values are names, not secrets; psql quotes them itself (:'name').
        command.arg("-v").arg(format!("{name}={value}"));
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    connection.apply(&mut command, database);
    let mut child = command.spawn().map_err(|e| {
        job_error(format!("could not run {}: {e}", tools.psql.display()), "Check the PostgreSQL client programs.")
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    // psql that cannot connect exits before reading its script (at once, since PostgreSQL 17's
    // psql): its own error then says why, not the broken pipe this write meets.
    let written = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let output = child.wait_with_output().await.map_err(|e| job_error(format!("psql: {e}"), ""))?;
    if output.status.success() {
        written.map_err(|e| job_error(format!("could not talk to psql: {e}"), ""))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(job_error(
            String::from_utf8_lossy(&output.stderr).trim().trim_start_matches("psql: ").to_string(),
            "Check that the role may connect to the server and the database.",
        ))
    }
}

/// The role the client programs connect as, and whether it is a superuser.
pub async fn connecting_role(tools: &Tools, connection: &Connection) -> Result<(String, bool)> {
    let out = run_psql(
        tools,
        connection,
        MAINTENANCE_DATABASE,
        &[],
        "SELECT r.rolname || '|' || r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER;\n",
    )
    .await?;
    match out.trim().rsplit_once('|') {
        Some((name, superuser)) => Ok((name.to_string(), superuser == "true")),
        None => Err(job_error(format!("could not read the connecting role: {}", out.trim()), "")),
    }
}

/// The major version of the server the client programs connect to (15, 17...).
pub async fn server_major(tools: &Tools, connection: &Connection) -> Result<u32> {
    let out = run_psql(tools, connection, MAINTENANCE_DATABASE, &[], "SHOW server_version_num;\n").await?;
    out.trim()
        .parse::<u32>()
        .map(|number| number / 10000)
        .map_err(|_| job_error(format!("could not read the server's version: {}", out.trim()), ""))
}

/// A dump restores into a server of its own major version or a newer one (pg_restore's rule):
/// refused before anything is created, saying why.
pub fn check_target_major(dump_major: u32, server_major: u32) -> Result<()> {
    if dump_major == 0 || dump_major <= server_major {
        return Ok(());
    }
    Err(job_error(
        format!(
            "the dump was written by pg_dump {dump_major} and the target server is PostgreSQL {server_major}: a dump restores only into its own or a newer major version"
        ),
        &format!(
            "Restore it into a PostgreSQL {dump_major} (or newer) server; to move data to an older version, dump it with that version's pg_dump."
        ),
    ))
}

/// What a target database holds before a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Missing,
    Empty,
    /// It holds this many objects of its own (relations, functions, types, schemas, extensions
    /// beyond a new database's).
    Holds(u64),
}

const OBJECTS_OF_ITS_OWN: &str = r#"SELECT
  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%')
+ (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
+ (SELECT pg_catalog.count(*) FROM pg_catalog.pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND n.nspname NOT LIKE 'pg\_%')
+ (SELECT pg_catalog.count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql')
+ (SELECT pg_catalog.count(*) FROM pg_catalog.pg_largeobject_metadata);
"#;

/// Reads what `database` holds: missing, empty, or how many objects of its own.
pub async fn target_state(tools: &Tools, connection: &Connection, database: &str) -> Result<TargetState> {
    match run_psql(tools, connection, database, &[], OBJECTS_OF_ITS_OWN).await {
        Ok(out) => match out.trim().parse::<u64>() {
            Ok(0) => Ok(TargetState::Empty),
            Ok(n) => Ok(TargetState::Holds(n)),
            Err(_) => Err(job_error(format!("could not read what database {database} holds: {}", out.trim()), "")),
        },
        Err(Error::Job { message, .. }) if message.contains("does not exist") && message.contains("database") => {
            Ok(TargetState::Missing)
        }
        Err(e) => Err(e),
    }
}

/// `CREATE DATABASE <name> TEMPLATE template0`, through psql (it cannot run in a transaction).
pub async fn create_database(tools: &Tools, connection: &Connection, database: &str) -> Result<()> {
    run_psql(
        tools,
        connection,
        MAINTENANCE_DATABASE,
        &[("target", database)],
        "SELECT pg_catalog.format('CREATE DATABASE %I TEMPLATE template0', :'target') \\gexec\n",
    )
    .await
    .map(drop)
    .map_err(|e| {
        job_error(
            format!("could not create database {database}: {e}"),
            "The role needs CREATEDB (or run as a superuser).",
        )
    })
}

/// `DROP DATABASE IF EXISTS <name> WITH (FORCE)`, through psql.
pub async fn drop_database(tools: &Tools, connection: &Connection, database: &str) -> Result<()> {
    run_psql(
        tools,
        connection,
        MAINTENANCE_DATABASE,
        &[("target", database)],
        "SELECT pg_catalog.format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'target') \\gexec\n",
    )
    .await
    .map(drop)
    .map_err(|e| job_error(format!("could not drop database {database}: {e}"), "Drop it by hand."))
}

/// The arguments `pg_restore` gets: never a connection string (PGDATABASE carries the target;
/// libpq reads an empty `--dbname` as "not set").
pub fn pg_restore_args(options: &RestoreOptions, file: Option<&Path>) -> Vec<String> {
    let mut args = vec!["--dbname=".to_string(), "--no-password".to_string()];
    if options.sandboxed {
        // Entry by entry, nothing owned by or granted to the dump's roles.
        args.push("--no-owner".into());
        args.push("--no-privileges".into());
    } else {
        args.insert(1, "--exit-on-error".into());
    }
    if options.jobs > 1 {
        args.push(format!("--jobs={}", options.jobs));
    } else if !options.sandboxed {
        args.push("--single-transaction".into());
    }
    if options.clean {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    let named: Vec<_> = options.tables.iter().map(|t| split_table(t)).collect();
    let mut schemas: Vec<&String> = named.iter().filter_map(|(schema, _)| schema.as_ref()).collect();
    schemas.sort();
    schemas.dedup();
    for schema in schemas {
        args.push(format!("--schema={schema}"));
    }
    for (_, table) in &named {
        args.push(format!("--table={table}"));
    }
    if let Some(file) = file {
        args.push(file.display().to_string());
    }
    args
}

/// `schema.table` as (Some(schema), table), `table` as (None, table); a part in double quotes
/// keeps its dots and loses its quotes (`"a.b"."C"` is schema `a.b`, table `C`).
pub fn split_table(name: &str) -> (Option<String>, String) {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().expect("one part").push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted && parts.len() == 1 => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    match parts.len() {
        2 => {
            let table = parts.pop().expect("two parts");
            (Some(parts.pop().expect("two parts")), table)
        }
        _ => (None, parts.pop().expect("one part")),
    }
}

/// A sink that counts what it passes on and fails once `cancel` fires, so a long copy stops.
struct Watched<'a, W> {
    inner: W,
    counter: &'a AtomicU64,
    cancel: &'a CancellationToken,
}

impl<W: Write> Write for Watched<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        let n = self.inner.write(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn check_trailer(key: &str, trailer: &crate::codec::Trailer, manifest: &LogicalManifest) -> Result<()> {
    if trailer.plain_len != manifest.dump.bytes || trailer.plain_sha256_hex() != manifest.dump.sha256 {
        return Err(Error::Corrupt {
            key: key.to_string(),
            reason: format!(
                "it holds {} bytes with SHA-256 {}, not the {} bytes with SHA-256 {} its manifest records",
                trailer.plain_len,
                trailer.plain_sha256_hex(),
                manifest.dump.bytes,
                manifest.dump.sha256
            ),
        });
    }
    Ok(())
}

/// A spooled copy of the dump, removed when dropped.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Restores `manifest`'s dump into `options.database` (see the module's invariants).
pub async fn restore(
    repository: &Repository,
    manifest: &LogicalManifest,
    options: &RestoreOptions,
    progress: &Arc<RestoreProgress>,
    cancel: &CancellationToken,
) -> Result<Restored> {
    progress.total.store(manifest.dump.bytes, Ordering::Relaxed);
    progress.set("checking the role and the target database");
    let (role, superuser) = connecting_role(&options.tools, &options.connection).await?;
    check_target_major(manifest.pg_version_num / 10000, server_major(&options.tools, &options.connection).await?)?;
    if options.sandboxed && superuser {
        return Err(Error::Job {
            message: format!(
                "a sandboxed restore runs code in the dump without rights, and role {role} is a superuser"
            ),
            hint: "Connect as a role without rights that may create databases (for example CREATE ROLE restorer LOGIN CREATEDB, then PGUSER=restorer).".into(),
        });
    }
    let missing = match target_state(&options.tools, &options.connection, &options.database).await? {
        TargetState::Missing => true,
        TargetState::Empty => false,
        TargetState::Holds(_) if options.clean => false,
        TargetState::Holds(n) => {
            return Err(Error::Job {
                message: format!(
                    "database {} is not empty (it holds {n} objects of its own): restoring into it would mix two databases",
                    options.database
                ),
                hint: "Restore into a new database (it is created for you), or pass --clean to drop and recreate the dump's objects in this one.".into(),
            })
        }
    };
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let path = layout::logical(&manifest.database, &manifest.id, LogicalFile::Dump);
    let handle = tokio::runtime::Handle::current();
    let spool = if options.jobs > 1 {
        progress.set("verifying the dump into a spool file");
        let spool = Spool(options.spool_dir.join(format!(".backstop-restore-{}-{}", manifest.id, std::process::id())));
        let (repository, progress2, cancel2, target, handle2) =
            (repository.clone(), progress.clone(), cancel.clone(), spool.0.clone(), handle.clone());
        let key = repository.key(&path);
        let manifest2 = manifest.clone();
        let path2 = path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options.open(&target).map_err(|e| Error::io("create", &target, e))?;
            let mut sink =
                Watched { inner: std::io::BufWriter::new(file), counter: &progress2.verified, cancel: &cancel2 };
            let reader = repository.open_cancellable(&handle2, &path2, &cancel2)?;
            let trailer = reader.copy_to(&mut sink)?;
            sink.flush().map_err(|e| Error::io("write", &target, e))?;
            check_trailer(&key, &trailer, &manifest2)
        })
        .await
        .map_err(|e| job_error(format!("the verification task failed: {e}"), ""))??;
        Some(spool)
    } else {
        progress.set("verifying the dump");
        verify_object(repository, &manifest.database, &manifest.id, LogicalFile::Dump, &manifest.dump).await?;
        progress.verified.store(manifest.dump.bytes, Ordering::Relaxed);
        None
    };
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    // Created only now that the dump is known good: a damaged dump leaves nothing behind.
    if missing {
        progress.set("creating the target database");
        create_database(&options.tools, &options.connection, &options.database).await?;
    }
    // pg_restore --schema restores the schema's objects but not the schema: a table named with
    // its schema needs the schema to exist.
    for schema in options.tables.iter().filter_map(|t| split_table(t).0) {
        run_psql(
            &options.tools,
            &options.connection,
            &options.database,
            &[("schema", &schema)],
            "SELECT pg_catalog.format('CREATE SCHEMA IF NOT EXISTS %I', :'schema') \\gexec\n",
        )
        .await?;
    }
    progress.set("restoring with pg_restore");
    let args = pg_restore_args(options, spool.as_ref().map(|s| s.0.as_path()));
    let mut command = options.connection.std_command(&options.tools.pg_restore, &options.database);
    command.args(&args).stdout(Stdio::null()).stderr(Stdio::piped());
    command.stdin(if spool.is_some() { Stdio::null() } else { Stdio::piped() });
    let (repository2, progress2, cancel2, key, manifest2) =
        (repository.clone(), progress.clone(), cancel.clone(), repository.key(&path), manifest.clone());
    let pg_restore = options.tools.pg_restore.clone();
    let sandboxed = options.sandboxed;
    let outcome = tokio::task::spawn_blocking(move || -> Result<(u64, Vec<String>)> {
        let mut child =
            command.spawn().map_err(|e| job_error(format!("could not run {}: {e}", pg_restore.display()), ""))?;
        let mut stderr = child.stderr.take().expect("piped");
        let messages = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let fed = match child.stdin.take() {
            None => Ok(()),
            Some(stdin) => {
                let mut sink = Watched { inner: UntilClosed::new(stdin), counter: &progress2.restored, cancel: &cancel2 };
                repository2
                    .open_cancellable(&handle, &path, &cancel2)
                    .and_then(|reader| reader.copy_to(&mut sink))
                    .and_then(|trailer| check_trailer(&key, &trailer, &manifest2))
            }
        };
        if let Err(e) = fed {
            // The stream changed since it was verified (or the restore was cancelled): kill
            // pg_restore before it commits; its single transaction rolls back.
            let _ = child.kill();
            let _ = child.wait();
            let _ = messages.join();
            return Err(if cancel2.is_cancelled() { Error::Cancelled } else { e });
        }
        let status = child.wait().map_err(|e| job_error(format!("pg_restore: {e}"), ""))?;
        let messages = messages.join().unwrap_or_default();
        if cancel2.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if !status.success() {
            if let Some(skipped) = ignored_errors(&messages).filter(|_| sandboxed) {
                return Ok((skipped, error_messages(&messages, 5)));
            }
            return Err(job_error(
                format!("pg_restore failed ({status}): {}", last_lines(&messages, 6)),
                "Nothing was committed when restoring with one job; read pg_restore's message, fix the cause (a missing role, extension or tablespace), and run the restore again.",
            ));
        }
        Ok((0, Vec::new()))
    })
    .await
    .map_err(|e| job_error(format!("the restore task failed: {e}"), ""))?;
    drop(spool);
    let (skipped, skipped_messages) = outcome?;
    Ok(Restored {
        backup_id: manifest.id.to_string(),
        source_database: manifest.database.clone(),
        database: options.database.clone(),
        created: missing,
        bytes: manifest.dump.bytes,
        jobs: options.jobs.max(1),
        skipped,
        skipped_messages,
        role,
        superuser,
    })
}

/// The count in pg_restore's closing "errors ignored on restore: N" (printed when it went on
/// past failed entries).
pub fn ignored_errors(messages: &str) -> Option<u64> {
    messages.lines().rev().find_map(|line| line.split("errors ignored on restore:").nth(1)?.trim().parse().ok())
}

/// The first `n` of pg_restore's error lines, each cut to a readable length.
pub fn error_messages(messages: &str, n: usize) -> Vec<String> {
    messages
        .lines()
        .filter_map(|line| line.strip_prefix("pg_restore: error: "))
        .map(|line| line.trim_start_matches("could not execute query: ").chars().take(300).collect())
        .take(n)
        .collect()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// Every table's rows and every sequence's state in `database` now, counted as a logical backup
/// counts them (the same script, so the same tables).
pub async fn count(
    tools: &Tools,
    connection: &Connection,
    database: &str,
) -> Result<(Vec<TableRows>, Vec<SequenceValue>)> {
    // The script sets ON_ERROR_STOP itself and prints SESSION_DONE once everything is counted.
    let script = format!("{}COMMIT;\n", tools::SNAPSHOT_SESSION);
    let out = run_psql(tools, connection, database, &[], &script).await.map_err(|e| {
        job_error(
            format!("could not count the rows of database {database}: {e}"),
            "Check that the role may read every table and sequence of the database.",
        )
    })?;
    if !out.lines().any(|l| l == tools::SESSION_DONE) {
        return Err(job_error(
            format!("counting the rows of database {database} stopped before the end"),
            "Check that the role may read every table and sequence of the database.",
        ));
    }
    let (mut tables, mut sequences) = (Vec::new(), Vec::new());
    for line in out.lines() {
        match tools::parse_session_line(line) {
            Some(SessionLine::Table { table, rows }) => tables.push(TableRows { table, rows }),
            Some(SessionLine::Sequence { sequence, last_value, is_called }) => {
                sequences.push(SequenceValue { sequence, last_value, is_called })
            }
            _ => {}
        }
    }
    Ok((tables, sequences))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(jobs: u32, clean: bool, tables: &[&str]) -> RestoreOptions {
        RestoreOptions {
            tools: Tools {
                pg_dump: "pg_dump".into(),
                pg_dumpall: "pg_dumpall".into(),
                pg_restore: "pg_restore".into(),
                psql: "psql".into(),
                version: "pg_dump (PostgreSQL) 15.0".into(),
            },
            connection: Connection::Environment,
            database: "postgresql://evil@elsewhere/db".into(),
            clean,
            jobs,
            tables: tables.iter().map(|t| t.to_string()).collect(),
            spool_dir: "/tmp".into(),
            sandboxed: false,
        }
    }

    /// psql 17 exits as soon as it cannot connect, without reading its script: the caller gets
    /// psql's reason, not the broken pipe its write met.
    #[tokio::test]
    async fn a_psql_that_cannot_connect_is_reported_with_its_own_reason() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let psql = dir.path().join("psql");
        std::fs::write(
            &psql,
            "#!/bin/sh\necho 'psql: error: connection to server on socket \"/nowhere/.s.PGSQL.5432\" failed' >&2\nexit 2\n",
        )
        .unwrap();
        std::fs::set_permissions(&psql, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut tools = options(1, false, &[]).tools;
        tools.psql = psql;
        // Far more than a pipe holds, so the write meets a closed pipe whatever the timing.
        let script = "SELECT 1;\n".repeat(200_000);
        let error = run_psql(&tools, &Connection::Environment, "db", &[], &script).await.unwrap_err().to_string();
        assert!(error.starts_with("error: connection to server on socket"), "{error}");
    }

    #[test]
    fn a_dump_restores_into_its_own_or_a_newer_major_only() {
        assert!(check_target_major(15, 15).is_ok());
        assert!(check_target_major(15, 17).is_ok(), "an older dump moves forward");
        let error = check_target_major(17, 15).unwrap_err();
        assert!(error.to_string().contains("pg_dump 17") && error.to_string().contains("PostgreSQL 15"), "{error}");
        assert!(error.hint().contains("PostgreSQL 17 (or newer)"), "{}", error.hint());
    }

    #[test]
    fn pg_restore_never_gets_the_database_on_its_command_line() {
        let args = pg_restore_args(&options(1, false, &[]), None);
        assert_eq!(args, ["--dbname=", "--exit-on-error", "--no-password", "--single-transaction"]);
        assert!(!args.iter().any(|a| a.contains("evil")));
    }

    #[test]
    fn jobs_use_the_spooled_file_and_clean_drops_first() {
        let args = pg_restore_args(&options(4, true, &["orders"]), Some(Path::new("/spool/x")));
        assert_eq!(
            args,
            [
                "--dbname=",
                "--exit-on-error",
                "--no-password",
                "--jobs=4",
                "--clean",
                "--if-exists",
                "--table=orders",
                "/spool/x"
            ]
        );
    }

    #[test]
    fn tables_named_with_their_schema_restore_with_it() {
        assert_eq!(split_table("orders"), (None, "orders".into()));
        assert_eq!(split_table("sales.orders"), (Some("sales".into()), "orders".into()));
        assert_eq!(split_table("\"a.b\".\"Odd\"\"q\""), (Some("a.b".into()), "Odd\"q".into()));
        let args = pg_restore_args(&options(1, false, &["sales.orders", "sales.audit", "t"]), None);
        assert_eq!(&args[4..], ["--schema=sales", "--table=orders", "--table=audit", "--table=t"]);
    }

    #[test]
    fn a_sandboxed_restore_owns_nothing_grants_nothing_and_goes_on_past_what_it_may_not_do() {
        let mut sandboxed = options(1, false, &[]);
        sandboxed.sandboxed = true;
        let args = pg_restore_args(&sandboxed, None);
        assert_eq!(args, ["--dbname=", "--no-password", "--no-owner", "--no-privileges"]);
        let messages =
            "pg_restore: error: could not execute query: ERROR:  permission denied to create extension \"backstop\"\n\
                        Command was: CREATE EXTENSION IF NOT EXISTS backstop;\n\
                        pg_restore: error: could not execute query: ERROR:  role \"alice\" does not exist\n\
                        pg_restore: warning: errors ignored on restore: 2\n";
        assert_eq!(ignored_errors(messages), Some(2));
        assert_eq!(
            error_messages(messages, 5),
            ["ERROR:  permission denied to create extension \"backstop\"", "ERROR:  role \"alice\" does not exist"]
        );
        assert_eq!(ignored_errors("pg_restore: error: connection failed"), None);
    }

    #[test]
    fn the_tail_of_pg_restores_messages_explains_a_failure() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b / c");
        assert_eq!(last_lines("", 2), "");
    }
}
