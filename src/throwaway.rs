//! The throwaway servers drills run: one per drill, in a fresh private directory
//! (`backstop_core::drills::scratch`), configured only by files the drill writes, reachable only
//! over a socket in that directory by this OS user (peer, through an ident map), and stopped and
//! removed when the drill ends however it ends.
//!
//! Invariants:
//! - Nothing of a backup's configuration is read: the server gets `config_file`, `hba_file` and
//!   `ident_file` written here, archiving off, nothing preloaded, no TCP listener; settings on
//!   the command line win over any `postgresql.auto.conf` in the data directory.
//! - The stale-drill sweep stops a server only in a directory it recognises as one this server
//!   created: its name, a private directory owned by this OS user, and an owner file naming this
//!   server's data directory; a drill whose worker is alive is left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backstop_core::drills::scratch;
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;

use crate::gucs;

/// In a drill's directory: the data directory of the server that runs the drill and, on a second
/// line, the database whose job it is (job ids are per database).
const OWNER_FILE: &str = "server";

/// A drill's private directory and the server that may run in it. Dropping it stops the server
/// (if started) and removes the directory: a drill leaves nothing behind.
pub struct Throwaway {
    pub dir: PathBuf,
    pub started: bool,
    pub port: u16,
}

impl Throwaway {
    /// A fresh private directory under `backstop.drill_directory` for job `job_id`, marked as
    /// this server's.
    pub fn create(job_id: i64) -> Result<Throwaway, Error> {
        sweep_stale(job_id);
        let dir = scratch::create_private_dir(&gucs::drill_directory(), job_id)?;
        let throwaway = Throwaway { dir, started: false, port: free_port() };
        let marker = throwaway.dir.join(OWNER_FILE);
        std::fs::write(&marker, format!("{}\n{}", this_data_dir(), this_database()))
            .map_err(|e| Error::io("write", &marker, e))?;
        Ok(throwaway)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pg_ctl(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(crate::jobs::server_bin_dir().join("pg_ctl"));
        command.arg("-D").arg(self.data()).args(args);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        command
    }

    /// Writes the server's own configuration files (peer authentication for this OS user as
    /// each of `roles`) and returns the `-o` options that make the server use only them.
    pub fn configure(&self, roles: &[&str], extra: &str) -> Result<String, Error> {
        scratch::write_config_files(&self.dir, &os_user(), roles)?;
        Ok(scratch::server_options(&self.dir, self.port, extra))
    }

    /// Starts the server; `pg_ctl -w` returns once it accepts connections or has failed, and
    /// `failed` explains a failure from the server's log.
    pub fn start(&mut self, options: &str, failed: impl Fn(&Path) -> Error) -> Result<(), Error> {
        let log = self.log();
        let child = self
            .pg_ctl(&["-w", "-t", "86400", "-l", log.to_str().unwrap_or_default(), "-o", options, "start"])
            .spawn()
            .map_err(|e| Error::Job {
                message: format!("could not run pg_ctl: {e}"),
                hint: "Install PostgreSQL's server binaries.".into(),
            })?;
        self.started = true;
        let output = wait_child(child, Duration::from_secs(6 * 3600), "the throwaway server's start")?;
        if !output.status.success() {
            return Err(failed(&log));
        }
        Ok(())
    }

    /// Stops the server cleanly (`pg_ctl -m fast`); false when it did not stop.
    pub fn stop(&mut self) -> bool {
        let stopped = self.pg_ctl(&["-m", "fast", "-w", "-t", "600", "stop"]).status().is_ok_and(|s| s.success());
        if stopped {
            self.started = false;
        }
        stopped
    }

    pub fn alive(&self) -> bool {
        self.pg_ctl(&["status"]).status().map(|s| s.success()).unwrap_or(false)
    }

    /// One query through psql over the private socket, as `user`; the first column of every row.
    pub fn query(&self, user: &str, database: &str, sql: &str) -> Result<Vec<String>, Error> {
        let child = std::process::Command::new(crate::jobs::server_bin_dir().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", user, "-c", sql])
            // The database name may come from a manifest: an environment variable is taken as a
            // name, where -d would also read a connection string.
            .env("PGDATABASE", database)
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::Job {
                message: format!("could not run psql: {e}"),
                hint: "Install PostgreSQL's client binaries next to the server's.".into(),
            })?;
        let output = wait_child(child, Duration::from_secs(3600), "a query on the throwaway server")?;
        if !output.status.success() {
            return Err(Error::Job {
                message: format!(
                    "on the drill's throwaway server, {sql} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                hint: "The restored copy is damaged where this query reads: take a new backup and run backstop verify."
                    .into(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if self.started {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first FATAL, PANIC or ERROR lines of a throwaway server's log, joined: why it stopped.
pub fn log_errors(log: &Path) -> String {
    let lines: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("FATAL") || l.contains("PANIC") || l.contains("ERROR"))
        .take(3)
        .map(str::to_string)
        .collect();
    lines.join(" / ")
}

/// A loopback port nobody listens on now (the server itself listens only on its socket, whose
/// name carries the port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").ok().and_then(|l| l.local_addr().ok()).map(|a| a.port()).unwrap_or(54329)
}

fn this_data_dir() -> String {
    unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned()
}

fn this_database() -> String {
    format!("database {}", u32::from(unsafe { pg_sys::MyDatabaseId }))
}

/// The OS user this server runs as.
pub fn os_user() -> String {
    unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        (!entry.is_null()).then(|| std::ffi::CStr::from_ptr((*entry).pw_name).to_string_lossy().into_owned())
    }
    .unwrap_or_else(|| "postgres".into())
}

/// A drill whose process died (a crash, `kill -9`) could not clean up after itself: stop any
/// server still running in its directory and remove it, unless that drill's worker is alive.
fn sweep_stale(current: i64) {
    let base = gucs::drill_directory();
    let Ok(entries) = std::fs::read_dir(&base) else { return };
    for entry in entries.flatten() {
        let Some(id) = scratch::job_of(&entry.file_name().to_string_lossy()) else { continue };
        // Only directories this server's user created, private, not a link: another local user
        // cannot plant one for the sweep to stop a server in.
        let private = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|m| scratch::is_private_dir_of(&m, unsafe { libc::geteuid() }));
        if !private {
            continue;
        }
        // Only this server's drills (a primary and its standby may share the directory, and job
        // ids), of jobs in this database (each database has its own ids). A directory from
        // before the database was recorded names only the server.
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE)).unwrap_or_default();
        let (server, database) = owner.split_once('\n').unwrap_or((owner.as_str(), ""));
        if server != this_data_dir() || !(database.is_empty() || database == this_database()) {
            continue;
        }
        let alive =
            crate::jobs::read_status(id).is_some_and(|s| !s.state.is_final() && crate::jobs::worker_alive(s.pid));
        if id == current || alive {
            continue;
        }
        let stale =
            Throwaway { dir: entry.path(), started: entry.path().join("data/postmaster.pid").exists(), port: 0 };
        pgrx::log!("backstop: removing the directory of interrupted drill {id} ({})", stale.dir.display());
        drop(stale);
    }
}

/// Waits for a child process, honouring SIGTERM (the child is killed) and a deadline.
pub fn wait_child(
    mut child: std::process::Child,
    deadline: Duration,
    what: &str,
) -> Result<std::process::Output, Error> {
    let started = Instant::now();
    loop {
        if let Some(_status) =
            child.try_wait().map_err(|e| Error::Job { message: format!("{what}: {e}"), hint: String::new() })?
        {
            return child
                .wait_with_output()
                .map_err(|e| Error::Job { message: format!("{what}: {e}"), hint: String::new() });
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(200))) {
            let _ = child.kill();
            return Err(Error::Cancelled);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            return Err(Error::Job {
                message: format!("{what} did not finish within {} s", deadline.as_secs()),
                hint:
                    "Replay more slowly bounded: lower max_replay, or take a newer base backup so less WAL is replayed."
                        .into(),
            });
        }
    }
}
