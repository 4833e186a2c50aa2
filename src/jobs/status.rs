//! Status files: each run's progress and outcome in `$PGDATA/pg_stat_tmp/backstop_jobs/`,
//! replaced atomically, readable without a snapshot whatever the reader's isolation level. On a
//! standby they are the run history too (see [`super::runlog`]).

use std::fs;
use std::path::PathBuf;

use pgrx::prelude::*;
use serde::{Deserialize, Serialize};

use super::JobKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRequest {
    pub id: i64,
    pub kind: JobKind,
    /// The role the job acts for: the caller, or the schedule's owner.
    pub requested_by: String,
    pub args: serde_json::Value,
    /// Set when the scheduler started the run.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default = "first_attempt")]
    pub attempt: i32,
    /// Unix seconds of the cron occurrence the run stands for.
    #[serde(default)]
    pub scheduled_for: Option<f64>,
}

fn first_attempt() -> i32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped by the scheduler past its schedule's timeout (settled in a status file on a standby).
    #[serde(rename = "timed_out")]
    TimedOut,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }
}

/// The worker's status file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: i64,
    pub kind: JobKind,
    pub state: JobState,
    pub pid: i32,
    /// Unix seconds.
    pub started_at: f64,
    pub phase: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_new: u64,
    pub message: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub hint: Option<String>,
    /// The schedule that started it, if any.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Measured duration, once it ended.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// The SQLSTATE (PostgreSQL's packed code) of the error a failed run ended with, so that a
    /// caller waiting for it raises the same one.
    #[serde(default)]
    pub sqlstate: Option<i32>,
}

impl JobStatus {
    pub fn new(request: &JobRequest) -> Self {
        JobStatus {
            id: request.id,
            kind: request.kind,
            state: JobState::Starting,
            pid: unsafe { pg_sys::MyProcPid },
            started_at: backstop_core::backups::unix_seconds(std::time::SystemTime::now()),
            phase: "starting".into(),
            files_done: 0,
            files_total: 0,
            bytes_done: 0,
            bytes_total: 0,
            bytes_new: 0,
            message: String::new(),
            result: None,
            error: None,
            hint: None,
            schedule: request.schedule.clone(),
            seconds: None,
            sqlstate: None,
        }
    }

    /// Seconds since the job started.
    pub fn elapsed(&self) -> f64 {
        (backstop_core::backups::unix_seconds(std::time::SystemTime::now()) - self.started_at).max(0.0)
    }

    pub fn rate(&self) -> f64 {
        let elapsed = self.elapsed();
        if elapsed > 0.0 {
            self.bytes_done as f64 / elapsed
        } else {
            0.0
        }
    }

    /// Unix seconds when the run ended (its start plus its measured duration), once it has.
    pub fn finished_at(&self) -> Option<f64> {
        self.state.is_final().then(|| self.started_at + self.seconds.unwrap_or(0.0))
    }

    /// Seconds left at the rate so far; None once everything is read (or nothing is yet).
    pub fn eta_seconds(&self) -> Option<f64> {
        let rate = self.rate();
        (rate > 0.0 && self.bytes_total > self.bytes_done).then(|| (self.bytes_total - self.bytes_done) as f64 / rate)
    }
}

/// The directory of the PostgreSQL binaries this server runs from (pg_ctl, psql, pg_dump...).
pub fn server_bin_dir() -> PathBuf {
    let exec = unsafe { std::ffi::CStr::from_ptr(std::ptr::addr_of!(pg_sys::my_exec_path) as *const std::ffi::c_char) };
    PathBuf::from(exec.to_string_lossy().into_owned()).parent().map(|p| p.to_path_buf()).unwrap_or_default()
}

fn data_dir() -> PathBuf {
    let dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    PathBuf::from(dir.to_string_lossy().into_owned())
}

pub fn jobs_dir() -> PathBuf {
    data_dir().join("pg_stat_tmp").join("backstop_jobs")
}

pub(super) fn ensure_jobs_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = jobs_dir();
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) => Err(e),
    }
}

pub(super) fn write_json(path: &std::path::Path, value: &impl Serialize) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    fs::rename(&temp, path)
}

/// Job ids come from `backstop.jobs_id_seq`, one per database where the extension is installed,
/// while the status files share one directory: each file's name carries the database's OID
/// (`<database oid>-<job id>.json`), so a job in one database never reads or overwrites the
/// status of another database's job with the same id.
pub(super) fn job_file(id: i64, suffix: &str) -> PathBuf {
    jobs_dir().join(format!("{}-{id}{suffix}", u32::from(unsafe { pg_sys::MyDatabaseId })))
}

/// The database OID and job id in a status file's name; None for other files (requests,
/// temporary files, the standby's next runs, and the `<id>.json` files of backstop 0.3.0 and
/// earlier).
fn status_file_key(name: &str) -> Option<(u32, i64)> {
    let (database, id) = name.strip_suffix(".json")?.split_once('-')?;
    Some((database.parse().ok()?, id.parse().ok()?))
}

fn read_status_file(path: &std::path::Path) -> Option<JobStatus> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

pub fn write_status(status: &JobStatus) {
    // Progress is best effort: a full disk must not fail the job itself.
    if ensure_jobs_dir().is_ok() {
        let _ = write_json(&job_file(status.id, ".json"), status);
    }
}

/// A job id for a run on a standby, which cannot take one from the primary's sequence: negative
/// (never one of the primary's), from the clock in microseconds (unique on this server).
pub fn standby_job_id() -> i64 {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    -(micros as i64)
}

fn standby_next_runs_path() -> PathBuf {
    jobs_dir().join("standby_next_runs")
}

/// A standby scheduler's next run per schedule (Unix seconds), which it cannot keep in
/// `backstop.schedules` there.
pub fn standby_next_runs() -> std::collections::HashMap<String, f64> {
    fs::read(standby_next_runs_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

pub fn write_standby_next_runs(next_runs: &std::collections::HashMap<String, f64>) {
    if ensure_jobs_dir().is_ok() {
        let _ = write_json(&standby_next_runs_path(), next_runs);
    }
}

/// Where this database's job `id` keeps its status.
#[cfg(any(test, feature = "pg_test"))]
pub fn status_path(id: i64) -> PathBuf {
    job_file(id, ".json")
}

/// The status of this database's job `id`.
pub fn read_status(id: i64) -> Option<JobStatus> {
    read_status_file(&job_file(id, ".json"))
}

/// Every status file of this database's jobs whose worker is alive or that finished, newest first.
pub fn all_statuses() -> Vec<JobStatus> {
    let here = u32::from(unsafe { pg_sys::MyDatabaseId });
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(jobs_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if status_file_key(&name).is_some_and(|(database, _)| database == here) {
                if let Some(status) = read_status_file(&entry.path()) {
                    out.push(status);
                }
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.id));
    out
}

/// Removes the status files of runs that ended (or whose worker is gone) and were last written
/// more than `max_age` ago, and temporary files a crash left; returns how many it removed. On a
/// primary the history lives in `backstop.job_runs`, so a day of files is plenty; on a standby
/// the files are the history and go by `backstop.job_runs_retention`.
pub fn prune_statuses(max_age: std::time::Duration) -> usize {
    let Ok(entries) = fs::read_dir(jobs_dir()) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if !old {
            continue;
        }
        let legacy = name.strip_suffix(".json").is_some_and(|id| id.parse::<i64>().is_ok());
        let finished = if name.ends_with(".tmp") || name.ends_with(".request.json") {
            true // a crash's leftovers, a request no worker picked up
        } else if status_file_key(&name).is_some() || legacy {
            read_status_file(&entry.path()).is_none_or(|status| status.state.is_final() || !worker_alive(status.pid))
        } else {
            false // standby_next_runs, job requests: not history
        };
        if finished && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Is a process with this pid still a backstop job worker? (`kill 0` plus the name PostgreSQL
/// gives it, so a recycled pid is not mistaken for the job.)
pub fn worker_alive(pid: i32) -> bool {
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/cmdline")).map(|c| c.contains("backstop job")).unwrap_or(true)
}
