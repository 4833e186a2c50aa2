//! The worker process: starting it for a caller or the scheduler, waiting for it with progress
//! NOTICEs, and its entry point, which runs the registered [`super::Job`] and records how it ended
//! in the [`super::RunLog`].

use std::fs;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::status::{ensure_jobs_dir, job_file, jobs_dir, read_status, write_json, write_status};
use super::{job, JobKind, JobRequest, JobState, JobStatus, RunLog, FAILED_RUN_LOG_PREFIX};
use crate::errors::{notice, raise_with};

/// Takes the next job id (non-transactional: a rolled-back caller never reuses one).
pub fn next_id() -> i64 {
    Spi::get_one::<i64>("SELECT pg_catalog.nextval('backstop.jobs_id_seq')").ok().flatten().unwrap_or_else(|| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "could not allocate a job id", "This is a bug in backstop.")
    })
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
    let mut backoff = super::Backoff::new(Duration::from_millis(250));
    let started = Instant::now();
    loop {
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                backoff.next().as_millis() as std::ffi::c_long,
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
            // A job ending within its first quarter second says nothing on the way (its result
            // does): polling starts fast, the progress NOTICEs do not.
            let quiet = started.elapsed() < Duration::from_millis(250);
            if !quiet && (status.phase != last_phase || last_notice.elapsed() >= Duration::from_secs(5)) {
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
    crate::compat::set_signal_handler(libc::SIGTERM, postgres_die);
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
    let run_log = RunLog::here();
    run_log.settle_interrupted();
    run_log.started(&request, pid);
    let started = Instant::now();
    let outcome = job.run_request(&request, &mut status);
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
    run_log.ended(&status);
    write_status(&status);
}
