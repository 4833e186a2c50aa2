//! Jobs: long work (base backups now; the scheduler's jobs later) in a background worker process
//! of its own, never in the caller's transaction, so a multi-hour backup holds back no vacuum
//! horizon and survives no longer than it should.
//!
//! - The caller takes a job id from `backstop.jobs_id_seq` (non-transactional), writes a request
//!   file, and starts a dynamic background worker with the id as its argument.
//! - The worker connects to the caller's database as the bootstrap superuser, records the job in
//!   `backstop.job_runs` in its own short transactions, and publishes its progress in a status file
//!   (`$PGDATA/pg_stat_tmp/backstop_jobs/<id>.json`, replaced atomically about twice a second).
//!   A file and not a table: the caller reads it whatever its isolation level, without taking a
//!   snapshot, and nothing of it outlives a restart (pg_stat_tmp is not backed up either).
//! - A caller that waits reads the file on its latch, sends progress NOTICEs, and on cancel or
//!   statement_timeout terminates the worker (a drop guard does it while the ERROR unwinds).
//!   The worker sees SIGTERM at its next check and stops without publishing anything.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde::{Deserialize, Serialize};

use crate::errors::{notice, raise_with};

// The tables are created in the order their releases introduced them (restores in 0.1.0, then
// jobs and schedules); pgrx orders unrelated items by hash-map iteration, so without these
// edges the rendered SQL differs from build to build and packages are not reproducible.
extension_sql_file!("../sql/jobs.sql", name = "jobs_table", requires = ["restores_table"]);

pub use backstop_core::schedule::job::JobKind;

/// What the caller asks for; read by the worker.
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

fn ensure_jobs_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = jobs_dir();
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) => Err(e),
    }
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    fs::rename(&temp, path)
}

/// Job ids come from `backstop.jobs_id_seq`, one per database where the extension is installed,
/// while the status files share one directory: each file's name carries the database's OID
/// (`<database oid>-<job id>.json`), so a job in one database never reads or overwrites the
/// status of another database's job with the same id.
fn job_file(id: i64, suffix: &str) -> PathBuf {
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

/// The SQLSTATE a caller raises for a run that did not succeed: the worker's own, so a caller
/// can tell "another job holds the lease" (55006) from "the repository is corrupt" (XX001).
pub fn failure_code(status: &JobStatus) -> PgSqlErrorCode {
    match (status.state, status.sqlstate) {
        (JobState::Cancelled, _) => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
        (_, Some(code)) => PgSqlErrorCode::from(code),
        (_, None) => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
    }
}

/// Says what the job does now (job_progress, the caller's NOTICEs).
pub fn phase(status: &mut JobStatus, phase: &str) {
    status.phase = phase.to_string();
    write_status(status);
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

/// The runs this standby's scheduler started (their status files: a standby cannot write the
/// history tables), newest first.
pub fn standby_history() -> Vec<JobStatus> {
    let mut statuses: Vec<JobStatus> = all_statuses().into_iter().filter(|s| s.id < 0).collect();
    statuses.sort_by(|a, b| b.started_at.total_cmp(&a.started_at));
    statuses
}

/// Is a process with this pid still a backstop job worker? (`kill 0` plus the name PostgreSQL
/// gives it, so a recycled pid is not mistaken for the job.)
pub fn worker_alive(pid: i32) -> bool {
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/cmdline")).map(|c| c.contains("backstop job")).unwrap_or(true)
}

/// Takes the next job id (non-transactional: a rolled-back caller never reuses one).
pub fn next_id() -> i64 {
    Spi::get_one::<i64>("SELECT pg_catalog.nextval('backstop.jobs_id_seq')").ok().flatten().unwrap_or_else(|| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "could not allocate a job id", "This is a bug in backstop.")
    })
}

/// Whether the caller is a superuser or a member of backstop_operator (who reads every table):
/// who may see row counts and names of any table in what backstop reports.
pub fn caller_reads_everything() -> bool {
    // Read-only SPI: this runs on standbys too (standby_runs), where no transaction id exists.
    crate::spi::one::<bool>(
        "SELECT r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'backstop_operator', 'MEMBER') \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
        &[],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Refuses `kind` to a caller who is neither superuser nor a member of backstop_operator, when
/// [`JobKind::needs_operator`] says it must be.
pub fn require_operator(kind: JobKind) {
    if !kind.needs_operator() {
        return;
    }
    if !caller_reads_everything() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("only superusers and members of backstop_operator may run {} jobs", kind.as_str()),
            "It reads every table (and for base backups pg_authid and the server's configuration) or removes what others stored: a superuser grants that with GRANT backstop_operator TO the role, which includes pg_read_all_data.",
        );
    }
}

/// Starts a job's worker for the calling backend; returns its id and handle.
pub fn start(kind: JobKind, args: serde_json::Value) -> (i64, DynamicBackgroundWorker) {
    let id = next_id();
    let requested_by = Spi::get_one::<String>("SELECT current_user::text").ok().flatten().unwrap_or_default();
    let database =
        Spi::get_one::<String>("SELECT pg_catalog.current_database()::text").ok().flatten().unwrap_or_default();
    let request = JobRequest { id, kind, requested_by, args, schedule: None, attempt: 1, scheduled_for: None };
    let worker = launch(&request, &database).unwrap_or_else(|(code, message, hint)| raise_with(code, &message, hint));
    (id, worker)
}

/// Writes the request file and starts the worker, waiting until it runs. The caller's process is
/// notified of the worker's start and end (its latch is set).
pub fn launch(
    request: &JobRequest,
    database: &str,
) -> Result<DynamicBackgroundWorker, (PgSqlErrorCode, String, &'static str)> {
    let id = request.id;
    ensure_jobs_dir().map_err(|e| {
        (
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("could not create {}: {e}", jobs_dir().display()),
            "Check the data directory's permissions.",
        )
    })?;
    // A status left under this name (by an earlier installation of the extension, whose id
    // sequence started over) must not be taken for this job's.
    let _ = fs::remove_file(job_file(id, ".json"));
    write_json(&job_file(id, ".request.json"), request).map_err(|e| {
        (
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            format!("could not write the job request: {e}"),
            "Check free space in the data directory.",
        )
    })?;
    let worker = BackgroundWorkerBuilder::new(&format!("backstop job {id} ({})", request.kind.as_str()))
        .set_type("backstop job")
        .set_library("backstop")
        .set_function("backstop_job_main")
        .set_argument(id.into_datum())
        .set_extra(database)
        .enable_spi_access()
        // After enable_spi_access, which sets RecoveryFinished: a hot standby runs the read-only
        // jobs its schedules allow, which would otherwise wait until recovery ends.
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .map_err(|_| {
            (
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                "could not start a background worker for the job: all max_worker_processes slots are in use".into(),
                "Raise max_worker_processes (needs a restart) or wait for other background workers to finish.",
            )
        })?;
    if let Err(status) = worker.wait_for_startup() {
        return Err((
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("the job's background worker did not start ({status:?})"),
            "See the server log for why the worker could not start.",
        ));
    }
    Ok(worker)
}

/// Terminates the worker if the caller leaves before the job ended (cancel, statement_timeout,
/// any ERROR): the unwinding drops it.
struct TerminateOnDrop(Option<DynamicBackgroundWorker>);

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        if let Some(worker) = self.0.take() {
            let _ = worker.terminate();
        }
    }
}

/// Waits for a job to end, sending a NOTICE from `describe` every few seconds.
pub fn wait(id: i64, worker: DynamicBackgroundWorker, describe: impl Fn(&JobStatus) -> String) -> JobStatus {
    let mut guard = TerminateOnDrop(Some(worker));
    let mut last_notice = Instant::now();
    let mut last_phase = String::new();
    loop {
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                250,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
        let status = read_status(id);
        if let Some(status) = &status {
            if status.state.is_final() {
                guard.0.take();
                return status.clone();
            }
            if status.phase != last_phase || last_notice.elapsed() >= Duration::from_secs(5) {
                if status.state == JobState::Running {
                    notice(&describe(status));
                }
                last_phase = status.phase.clone();
                last_notice = Instant::now();
            }
        }
        let stopped = matches!(guard.0.as_ref().map(|w| w.pid()), Some(Err(BackgroundWorkerStatus::Stopped)));
        if stopped {
            guard.0.take();
            if let Some(status) = read_status(id).filter(|s| s.state.is_final()) {
                return status;
            }
            raise_with(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                &format!("job {id}'s background worker exited without finishing"),
                "See the server log for the worker's error; nothing was published.",
            );
        }
    }
}

extern "C-unwind" {
    /// PostgreSQL's own SIGTERM handler for backends (`die` in postgres.c), taken by symbol:
    /// pgrx's binding wraps it in a Rust function that cannot be a signal handler.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// From now on SIGTERM ends this job process the way it ends a backend: the ERROR path aborts
/// the transaction, also inside a long scan or a lock wait, where a flag would go unchecked.
pub fn die_on_sigterm() {
    unsafe { pg_sys::pqsignal(libc::SIGTERM, Some(postgres_die)) };
}

/// Is this server a standby (or still recovering)? Its tables are read-only then: runs live in
/// their status files.
pub fn in_recovery() -> bool {
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Records a job row in its own transaction (worker side).
pub fn record(sql: &str, args: &[pgrx::datum::DatumWithOid]) {
    if in_recovery() {
        return; // a standby's tables are read-only: its runs live in their status files
    }
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(sql, args).unwrap_or_else(|e| pgrx::warning!("backstop could not record the job: {e}"));
    });
}

/// The stable prefix of the LOG line every failed run raises, for log-based alerting.
pub const FAILED_RUN_LOG_PREFIX: &str = "backstop: job run failed:";

/// Marks runs whose worker is gone (server crash, immediate shutdown, a killed process) as failed,
/// and queues the next attempt of each scheduled one with retries left: an interrupted run is
/// recorded and retried, never forgotten. Runs in its own transaction.
pub fn fail_interrupted_runs() {
    if in_recovery() {
        return; // a standby's tables are read-only: its runs live in their status files
    }
    BackgroundWorker::transaction(|| {
        if let Err(e) = settle_interrupted_runs(crate::gucs::scheduler_now()) {
            pgrx::warning!("backstop could not settle interrupted runs: {e}");
        }
    });
}

/// [`fail_interrupted_runs`] inside the caller's transaction; returns the retries it queued.
pub fn settle_interrupted_runs(now: std::time::SystemTime) -> Result<Vec<i64>, pgrx::spi::Error> {
    let failed = write_returning_ids(
        "UPDATE backstop.job_runs SET state = 'failed', finished_at = pg_catalog.now(), \
         error = 'the job''s worker ended without recording an outcome (server crash, restart or a killed process)', \
         hint = 'See the server log around the run''s start; the run left nothing published.' \
         WHERE state = 'running' AND (pid IS NULL OR pid NOT IN (SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid IS NOT NULL)) \
         RETURNING job_id",
        &[],
    )?;
    let mut queued = Vec::new();
    for id in failed {
        queued.extend(queue_retry(id, now)?);
    }
    Ok(queued)
}

/// Queues the next attempt of run `id` when the scheduler started it (it stands for a cron
/// occurrence: a `run_now()` run is the caller's to repeat), it failed or timed out, and its
/// schedule has retries left, not before `failed_at` plus the schedule's backoff (doubling per attempt). Once per
/// attempt: the scheduler (which saw the worker end) and a job cleaning up after a crash (which
/// saw the run left `running`) may both ask; the row lock on the failed run serialises them.
/// Returns the queued run's id.
pub fn queue_retry(id: i64, failed_at: std::time::SystemTime) -> Result<Option<i64>, pgrx::spi::Error> {
    let row = Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT r.attempt, pg_catalog.date_part('epoch', s.retry_backoff)::float8 \
               FROM backstop.job_runs r JOIN backstop.schedules s ON s.name = r.schedule \
              WHERE r.job_id = $1 AND r.state IN ('failed', 'timed_out') AND r.attempt <= s.max_retries \
                AND r.scheduled_for IS NOT NULL \
                FOR UPDATE OF r",
            None,
            &[id.into()],
        )?;
        let mut found = None;
        for row in rows {
            found = Some((row.get::<i32>(1)?.unwrap_or(1), row.get::<f64>(2)?.unwrap_or(300.0)));
        }
        Ok::<_, pgrx::spi::Error>(found)
    })?;
    let Some((attempt, backoff)) = row else { return Ok(None) };
    let next = attempt + 1;
    let at = backstop_core::schedule::plan::retry_at(
        failed_at,
        next as u32,
        std::time::Duration::from_secs_f64(backoff.max(1.0)),
    );
    let queued = write_returning_ids(
        "INSERT INTO backstop.job_runs (job_id, schedule, kind, args, state, attempt, scheduled_for, not_before, requested_by) \
         SELECT pg_catalog.nextval('backstop.jobs_id_seq'), r.schedule, r.kind, r.args, 'queued', $2, r.scheduled_for, \
                pg_catalog.to_timestamp($3), r.requested_by \
           FROM backstop.job_runs r \
          WHERE r.job_id = $1 AND NOT EXISTS ( \
                SELECT 1 FROM backstop.job_runs n \
                 WHERE n.schedule = r.schedule AND n.attempt = $2 AND n.job_id > r.job_id \
                   AND n.scheduled_for IS NOT DISTINCT FROM r.scheduled_for) \
         RETURNING job_id",
        &[id.into(), next.into(), backstop_core::backups::unix_seconds(at).into()],
    )?;
    Ok(queued.first().copied())
}

/// Runs a writing statement whose RETURNING list is one bigint id.
fn write_returning_ids(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<Vec<i64>, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        let mut ids = Vec::new();
        for row in client.update(sql, None, args)? {
            ids.extend(row.get::<i64>(1)?);
        }
        Ok(ids)
    })
}

/// Runs `f` (which may call SQL) in a subtransaction, turning an ERROR into the error's message
/// and hint instead of ending the worker, so the run is recorded with what went wrong.
pub fn sql_step<T>(f: impl FnOnce() -> T) -> Result<T, backstop_core::Error> {
    subtransaction(f, true)
}

/// [`sql_step`] whose every effect is rolled back even when it succeeds: for drills, which must
/// leave nothing behind (scratch tables, restore records), also when they fail.
pub fn sql_scratch<T>(f: impl FnOnce() -> T) -> Result<T, backstop_core::Error> {
    subtransaction(f, false)
}

fn subtransaction<T>(f: impl FnOnce() -> T, keep: bool) -> Result<T, backstop_core::Error> {
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    let restore = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        let value = f();
        if keep {
            unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        } else {
            unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        }
        restore();
        Ok(value)
    }))
    .catch_others(|caught| {
        restore();
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        let (message, hint) = match &caught {
            pgrx::pg_sys::panic::CaughtError::PostgresError(report)
            | pgrx::pg_sys::panic::CaughtError::ErrorReport(report) => {
                (report.message().to_string(), report.hint().unwrap_or_default().to_string())
            }
            pgrx::pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                (ereport.message().to_string(), String::new())
            }
        };
        Err(backstop_core::Error::Job { message, hint })
    })
    .execute()
}

/// A kind of job the worker runtime runs. Each lives in its feature (`job.rs`, `drill.rs`) and is
/// listed once in [`crate::JOBS`]; the runtime, which knows no feature, finds it there by kind.
pub trait Job: Sync {
    fn kind(&self) -> JobKind;

    /// Whether SIGTERM ends the worker the way it ends a backend (the ERROR path aborts the
    /// transaction), for jobs that run SQL, which may wait on a lock where no flag is checked.
    /// The scheduler settles the run's state.
    fn dies_on_sigterm(&self) -> bool {
        false
    }

    /// Runs it with its arguments (parsed and checked once, by the runtime).
    fn run(
        &self,
        request: &JobRequest,
        spec: &backstop_core::schedule::job::JobSpec,
        status: &mut JobStatus,
    ) -> Result<serde_json::Value, backstop_core::Error>;
}

/// The registered job of `kind`.
pub fn job(kind: JobKind) -> &'static dyn Job {
    crate::JOBS.iter().copied().find(|job| job.kind() == kind).unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            &format!("no {} job is registered", kind.as_str()),
            "This is a bug in backstop: every job kind is listed in JOBS.",
        )
    })
}

/// A job handed the arguments of another kind: a bug in the runtime, reported, never run.
pub fn spec_mismatch(kind: JobKind, spec: &backstop_core::schedule::job::JobSpec) -> backstop_core::Error {
    backstop_core::Error::InvalidInput(format!(
        "the {} job was handed the arguments of a {} job (a bug in backstop)",
        kind.as_str(),
        spec.kind().as_str()
    ))
}

fn run_job(
    job: &dyn Job,
    request: &JobRequest,
    status: &mut JobStatus,
) -> Result<serde_json::Value, backstop_core::Error> {
    let spec = backstop_core::schedule::job::JobSpec::parse(request.kind.as_str(), &request.args)?;
    job.run(request, &spec, status)
}

/// The worker's entry point: runs one job and records how it ended.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn backstop_job_main(arg: pg_sys::Datum) {
    let id = arg.value() as i64;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let request_path = job_file(id, ".request.json");
    let request: JobRequest = match fs::read(&request_path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(request) => request,
        None => {
            pgrx::warning!("backstop job {id}: its request file {} is missing or unreadable", request_path.display());
            return;
        }
    };
    let _ = fs::remove_file(&request_path);
    let job = job(request.kind);
    if job.dies_on_sigterm() {
        die_on_sigterm();
    }
    let mut status = JobStatus::new(&request);
    status.state = JobState::Running;
    write_status(&status);
    let pid = status.pid;
    fail_interrupted_runs();
    record(
        "INSERT INTO backstop.job_runs (job_id, kind, args, state, requested_by, pid, schedule, attempt, scheduled_for) \
         VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, pg_catalog.to_timestamp($8)) \
         ON CONFLICT (job_id) DO UPDATE SET state = 'running', pid = EXCLUDED.pid, started_at = pg_catalog.now()",
        &[
            id.into(),
            request.kind.as_str().into(),
            pgrx::JsonB(request.args.clone()).into(),
            request.requested_by.as_str().into(),
            pid.into(),
            request.schedule.clone().into(),
            request.attempt.into(),
            request.scheduled_for.into(),
        ],
    );
    let started = Instant::now();
    let outcome = run_job(job, &request, &mut status);
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(result) => {
            status.state = JobState::Succeeded;
            status.result = Some(result);
        }
        Err(error) => {
            status.state =
                if matches!(error, backstop_core::Error::Cancelled) { JobState::Cancelled } else { JobState::Failed };
            status.error = Some(error.to_string());
            status.hint = Some(error.hint().to_string());
            status.sqlstate = Some(crate::errors::sqlstate(&error) as i32);
            pgrx::log!(
                "{FAILED_RUN_LOG_PREFIX} job {id} ({}{}) {}: {error}",
                request.kind.as_str(),
                request.schedule.as_deref().map(|s| format!(", schedule {s}")).unwrap_or_default(),
                status.state.as_str()
            );
        }
    }
    status.phase = status.state.as_str().into();
    status.seconds = Some(seconds);
    let number = |key: &str| status.result.as_ref().and_then(|r| r.get(key)).and_then(|v| v.as_i64());
    record(
        "UPDATE backstop.job_runs SET state = $2, finished_at = pg_catalog.now(), result = $3, error = $4, hint = $5, \
         seconds = $6, bytes = $7, rows = $8 WHERE job_id = $1",
        &[
            id.into(),
            status.state.as_str().into(),
            status.result.clone().map(pgrx::JsonB).into(),
            status.error.clone().into(),
            status.hint.clone().into(),
            seconds.into(),
            number("bytes").into(),
            number("rows").into(),
        ],
    );
    write_status(&status);
}

/// Which of these jobs the caller may see: those whose `backstop.job_runs` row row security shows
/// her (read with her rights), and on a standby (no rows there) every job for superusers and
/// backstop_operator members only. One rule for the history and for the progress of a job.
fn visible_to_caller(ids: &[i64]) -> std::collections::HashSet<i64> {
    if caller_reads_everything() {
        return ids.iter().copied().collect();
    }
    Spi::connect(|client| {
        let mut seen = std::collections::HashSet::new();
        let rows = client.select(
            "SELECT job_id FROM backstop.job_runs WHERE job_id = ANY($1)",
            None,
            &[ids.to_vec().into()],
        )?;
        for row in rows {
            if let Some(id) = row.get::<i64>(1)? {
                seen.insert(id);
            }
        }
        Ok::<_, pgrx::spi::Error>(seen)
    })
    .unwrap_or_default()
}

/// Jobs running now and their progress: the `backstop.job_progress` view.
#[pg_extern(volatile, parallel_unsafe)]
fn job_progress() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(kind, String),
        name!(pid, i32),
        name!(started_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(phase, String),
        name!(files_done, i64),
        name!(files_total, i64),
        name!(bytes_done, i64),
        name!(bytes_total, i64),
        name!(bytes_new, i64),
        name!(bytes_per_second, f64),
        name!(eta_seconds, Option<f64>),
    ),
> {
    let running: Vec<JobStatus> =
        all_statuses().into_iter().filter(|s| !s.state.is_final() && worker_alive(s.pid)).collect();
    let visible = visible_to_caller(&running.iter().map(|s| s.id).collect::<Vec<_>>());
    let rows: Vec<_> = running
        .into_iter()
        .filter(|s| visible.contains(&s.id))
        .map(|s| {
            (
                s.id,
                s.kind.as_str().to_string(),
                s.pid,
                crate::timestamps::from_unix_seconds(s.started_at),
                s.phase.clone(),
                s.files_done as i64,
                s.files_total as i64,
                s.bytes_done as i64,
                s.bytes_total as i64,
                s.bytes_new as i64,
                s.rate(),
                s.eta_seconds(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The runs of scheduled jobs on this standby, newest first: the standby's job history, kept in
/// status files since its tables are read-only (empty on a primary, whose history is
/// `backstop.job_runs`).
#[pg_extern(volatile, parallel_unsafe)]
fn standby_runs() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(schedule, Option<String>),
        name!(kind, String),
        name!(state, String),
        name!(started_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(seconds, Option<f64>),
        name!(result, Option<pgrx::JsonB>),
        name!(error, Option<String>),
        name!(hint, Option<String>),
    ),
> {
    // No row security on a status file: results naming tables and row counts are for superusers
    // and backstop_operator members; others see the WAL drills (which name none).
    let everything = caller_reads_everything();
    let statuses = standby_history();
    let rows: Vec<_> = statuses
        .into_iter()
        .filter(|s| everything || s.kind == JobKind::WalFetch)
        .map(|s| {
            let state = if !s.state.is_final() && !worker_alive(s.pid) { "failed" } else { s.state.as_str() };
            (
                s.id,
                s.schedule.clone(),
                s.kind.as_str().to_string(),
                state.to_string(),
                crate::timestamps::from_unix_seconds(s.started_at),
                s.seconds,
                s.result.clone().map(pgrx::JsonB),
                s.error.clone(),
                s.hint.clone(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE VIEW job_progress AS SELECT * FROM job_progress();
"#,
    name = "job_progress_view",
    requires = [job_progress]
);
