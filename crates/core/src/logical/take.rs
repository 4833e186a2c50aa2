//! Taking a logical backup of one database, with nothing of it written to local disk:
//!
//! 1. a `psql` session opens a REPEATABLE READ, READ ONLY transaction, exports its snapshot, and
//!    counts every table's rows and reads every sequence in it ([`tools::SNAPSHOT_SESSION`]);
//! 2. `pg_dump -Fc --snapshot` (the same snapshot, so the counts describe the dump) streams into
//!    the repository as it is produced; then the schema as plain SQL, from the same snapshot;
//! 3. the session ends; `pg_dumpall --globals-only --no-role-passwords` stores roles (without
//!    passwords) and tablespaces;
//! 4. the stored dump is read back through every checksum into `pg_restore --list`, which must
//!    accept it;
//! 5. the manifest is written: the commit point. A failure anywhere before leaves no manifest,
//!    and `expire` collects the objects of such an interrupted backup after the grace period.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::manifest::{self, LogicalManifest, SequenceValue, Verification, LOGICAL_FORMAT_VERSION};
use super::tools::{self, LocalConnection, SessionLine, Tools};
use super::{store_object, LogicalId};
use crate::backups::manifest::TableRows;
use crate::backups::unix_seconds;
use crate::error::{Error, Result};
use crate::layout::{self, LogicalFile};
use crate::repository::{CancellationToken, Repository};

pub struct TakeOptions {
    pub database: String,
    pub connection: LocalConnection,
    pub tools: Tools,
    /// The server's version number (150000 style), recorded in the manifest.
    pub pg_version_num: u32,
}

/// What a running logical backup is doing, for progress reports.
#[derive(Debug, Default)]
pub struct TakeProgress {
    pub phase: Mutex<String>,
    /// Bytes of dump output streamed into the repository so far.
    pub bytes: AtomicU64,
}

impl TakeProgress {
    fn set(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_string();
    }
}

fn job_error(message: String, hint: &str) -> Error {
    Error::Job { message, hint: hint.into() }
}

fn spawn(program: &std::path::Path, args: &[&str], options: &TakeOptions, database: &str) -> Result<Child> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    options.connection.apply(&mut command, database);
    command.spawn().map_err(|e| {
        job_error(format!("could not run {}: {e}", program.display()), "Check the PostgreSQL client programs.")
    })
}

/// Reads a child's stderr to its end in the background (so a chatty child never blocks on a full
/// pipe); the text explains a failure.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text).await;
        }
        text
    })
}

/// Counts what passes through, for progress.
struct Counting<'a, R> {
    inner: R,
    bytes: &'a AtomicU64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        poll
    }
}

/// Runs a client program and streams its standard output into one object of the backup.
async fn dump_into(
    repository: &Repository,
    options: &TakeOptions,
    id: &LogicalId,
    file: LogicalFile,
    program: &std::path::Path,
    args: &[&str],
    progress: &TakeProgress,
) -> Result<manifest::StoredObject> {
    let mut child = spawn(program, args, options, &options.database)?;
    let stderr = collect_stderr(&mut child);
    let stdout = child.stdout.take().expect("piped");
    let stored =
        store_object(repository, &options.database, id, file, Counting { inner: stdout, bytes: &progress.bytes }).await;
    let status = child.wait().await.map_err(|e| job_error(format!("{}: {e}", program.display()), ""))?;
    let messages = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(job_error(
            format!("{} failed ({status}): {}", program.display(), messages.trim()),
            "Check that backstop.logical_role may connect over the server's socket and read every object of the database.",
        ));
    }
    stored
}

/// The session holding the dump's snapshot: open until [`Session::close`].
struct Session {
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl Session {
    async fn open(options: &TakeOptions) -> Result<(Session, String, Vec<TableRows>, Vec<SequenceValue>)> {
        let mut command = Command::new(&options.tools.psql);
        command
            .args(["-X", "-q", "-A", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        options.connection.apply(&mut command, &options.database);
        let mut child = command.spawn().map_err(|e| {
            job_error(
                format!("could not run {}: {e}", options.tools.psql.display()),
                "Check the PostgreSQL client programs.",
            )
        })?;
        let stderr = collect_stderr(&mut child);
        let mut stdin = child.stdin.take().expect("piped");
        // A psql that cannot connect exits without reading: the broken pipe is not the reason,
        // its stderr (reported below) is.
        let written = match stdin.write_all(tools::SNAPSHOT_SESSION.as_bytes()).await {
            Ok(()) => stdin.flush().await,
            Err(e) => Err(e),
        };
        child.stdin = Some(stdin); // kept open: closing it would end the transaction
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let (mut snapshot, mut tables, mut sequences) = (None, Vec::new(), Vec::new());
        let mut done = false;
        while let Some(line) = match written {
            Ok(()) => lines.next_line().await.map_err(|e| job_error(format!("reading psql: {e}"), ""))?,
            Err(_) => None,
        } {
            if line == tools::SESSION_DONE {
                done = true;
                break;
            }
            match tools::parse_session_line(&line) {
                Some(SessionLine::Snapshot(id)) => snapshot = Some(id),
                Some(SessionLine::Table { table, rows }) => tables.push(TableRows { table, rows }),
                Some(SessionLine::Sequence { sequence, last_value, is_called }) => {
                    sequences.push(SequenceValue { sequence, last_value, is_called })
                }
                None => {}
            }
        }
        let snapshot = match (done, snapshot) {
            (true, Some(snapshot)) => snapshot,
            _ => {
                let _ = child.kill().await;
                let messages = stderr.await.unwrap_or_default();
                return Err(job_error(
                    format!("could not open a snapshot of database {} and count its rows: {}", options.database, messages.trim()),
                    "Check that backstop.logical_role may connect over the server's socket (pg_hba.conf: local peer or trust) and read every table and sequence (e.g. GRANT pg_read_all_data).",
                ));
            }
        };
        Ok((Session { child, stderr }, snapshot, tables, sequences))
    }

    async fn close(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"COMMIT;\n\\q\n").await;
        }
        let _ = self.child.wait().await;
        let _ = self.stderr.await;
    }
}

/// A pipe into a child that may stop reading before the end: `pg_restore --list` exits once it
/// has read the table of contents. Bytes after that are still read (and so checked) by the
/// caller, then discarded here.
pub(crate) struct UntilClosed<W> {
    inner: W,
    closed: bool,
}

impl<W> UntilClosed<W> {
    pub(crate) fn new(inner: W) -> Self {
        UntilClosed { inner, closed: false }
    }
}

impl<W: std::io::Write> std::io::Write for UntilClosed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// Reads the stored dump back whole through every checksum into `pg_restore --list` (which stops
/// reading once it has the table of contents; the rest is still read and checked), compares it
/// with what was stored, and returns how many entries `pg_restore` listed. Runs on a blocking
/// thread (the verified reader blocks on the runtime).
async fn list_stored_dump(
    repository: &Repository,
    options: &TakeOptions,
    id: &LogicalId,
    expected: &manifest::StoredObject,
) -> Result<u64> {
    let expected = expected.clone();
    let repository = repository.clone();
    let pg_restore = options.tools.pg_restore.clone();
    let path = layout::logical(&options.database, id, LogicalFile::Dump);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let reader = repository.open(&handle, &path)?;
        let mut child = std::process::Command::new(&pg_restore)
            .arg("--list")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| job_error(format!("could not run {}: {e}", pg_restore.display()), ""))?;
        let mut stdout = child.stdout.take().expect("piped");
        let listing = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        let key = reader.key().to_string();
        let mut stdin = UntilClosed::new(child.stdin.take().expect("piped"));
        let copied = reader.copy_to(&mut stdin);
        drop(stdin);
        let output = child.wait_with_output().map_err(|e| job_error(format!("pg_restore --list: {e}"), ""))?;
        let listing = listing.join().unwrap_or_default();
        // A checksum mismatch fails the verification whatever pg_restore said.
        let trailer = copied?;
        if trailer.plain_len != expected.bytes || trailer.plain_sha256_hex() != expected.sha256 {
            return Err(Error::Corrupt {
                key,
                reason: format!(
                    "it holds {} bytes with SHA-256 {}, not the {} bytes with SHA-256 {} pg_dump produced",
                    trailer.plain_len,
                    trailer.plain_sha256_hex(),
                    expected.bytes,
                    expected.sha256
                ),
            });
        }
        if !output.status.success() {
            return Err(job_error(
                format!(
                    "pg_restore --list refused the stored dump: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                "The dump is not usable: take a new logical backup and check pg_dump's version.",
            ));
        }
        Ok(tools::count_list_entries(&listing))
    })
    .await
    .map_err(|e| job_error(format!("the verification task failed: {e}"), ""))?
}

/// Takes, stores, verifies and publishes one logical backup; returns its manifest.
pub async fn take(
    repository: &Repository,
    options: &TakeOptions,
    progress: &TakeProgress,
    cancel: &CancellationToken,
) -> Result<LogicalManifest> {
    let cancelled = || if cancel.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) };
    // Ids have one-second resolution: never reuse one of this database's.
    let existing = manifest::list_ids(repository, Some(&options.database)).await?;
    let (start, id) = loop {
        let now = SystemTime::now();
        let id = LogicalId::new(now);
        if existing.iter().all(|(_, e)| *e != id) {
            break (now, id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        cancelled()?;
    };

    progress.set("opening a snapshot and counting rows");
    let (session, snapshot, tables, sequences) = Session::open(options).await?;
    cancelled()?;
    progress.set("dumping");
    let snapshot_arg = format!("--snapshot={snapshot}");
    // -Z0: the repository compresses (zstd) and encrypts; a second compression would only cost.
    let dump = dump_into(
        repository,
        options,
        &id,
        LogicalFile::Dump,
        &options.tools.pg_dump,
        &["-Fc", "-Z0", &snapshot_arg],
        progress,
    )
    .await;
    let dump = match dump {
        Ok(dump) => dump,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    cancelled()?;
    progress.set("dumping the schema as SQL");
    let schema = dump_into(
        repository,
        options,
        &id,
        LogicalFile::Schema,
        &options.tools.pg_dump,
        &["--schema-only", &snapshot_arg],
        progress,
    )
    .await;
    session.close().await;
    let schema = schema?;
    cancelled()?;
    progress.set("dumping global objects");
    let globals = dump_into(
        repository,
        options,
        &id,
        LogicalFile::Globals,
        &options.tools.pg_dumpall,
        &["--globals-only", "--no-role-passwords"],
        progress,
    )
    .await?;
    cancelled()?;

    progress.set("verifying the stored dump");
    let list_entries = list_stored_dump(repository, options, &id, &dump).await?;
    if list_entries == 0 {
        return Err(job_error(
            "pg_restore --list found no entry in the stored dump".into(),
            "The dump is empty or unreadable: take a new logical backup.",
        ));
    }
    cancelled()?;
    progress.set("writing the manifest");
    let manifest = LogicalManifest {
        format_version: LOGICAL_FORMAT_VERSION,
        id,
        cluster: repository.cluster().to_string(),
        database: options.database.clone(),
        pg_version_num: options.pg_version_num,
        pg_dump_version: options.tools.version.clone(),
        start_time: unix_seconds(start),
        stop_time: unix_seconds(SystemTime::now()),
        dump,
        schema,
        globals,
        tables,
        sequences,
        verification: Verification { list_entries, verified_at: unix_seconds(SystemTime::now()) },
    };
    manifest::write(repository, &manifest).await?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A reader that stops early (pg_restore --list after the TOC) must not fail the copy: the
    /// caller keeps reading, and so checking, the rest.
    #[test]
    fn a_pipe_closed_early_swallows_the_rest() {
        struct Closing(usize);
        impl Write for Closing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                self.0 -= 1;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut sink = UntilClosed::new(Closing(1));
        sink.write_all(b"toc").unwrap();
        sink.write_all(b"data after the reader left").unwrap();
        sink.flush().unwrap();
        assert!(sink.closed);
        // Any other error still fails.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(UntilClosed::new(Full).write_all(b"x").is_err());
    }
}
