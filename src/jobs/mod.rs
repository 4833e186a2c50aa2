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
//!
//! Rooms: [`status`] (the status files), [`worker`] (start, wait, the worker's entry point),
//! [`runlog`] (where runs are recorded: the table on a primary, status files on a standby),
//! [`registry`] (the [`Job`] trait each kind implements, and the checks made as the caller),
//! [`sql`] (the runtime's own SQL functions). The runtime imports no feature: it finds each job
//! kind's [`Job`] in [`crate::JOBS`].

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub mod registry;
pub mod runlog;
mod sql;
pub mod status;
pub mod worker;

/// Poll intervals that start short and double up to `max`: a wait that ends soon ends with little
/// latency (an incremental of a few seconds is not made longer by its own polling), a long one
/// polls at `max`.
pub struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    pub fn new(max: std::time::Duration) -> Self {
        Backoff { next: std::time::Duration::from_millis(10).min(max), max }
    }

    pub fn next(&mut self) -> std::time::Duration {
        let interval = self.next;
        self.next = (self.next * 2).min(self.max);
        interval
    }
}

pub use registry::{job, Job, Registered};
pub use runlog::{RunLog, FAILED_RUN_LOG_PREFIX};
pub use status::*;
pub use worker::*;

// The tables are created in the order their releases introduced them (restores in 0.1.0, then
// jobs and schedules); pgrx orders unrelated items by hash-map iteration, so without these
// edges the rendered SQL differs from build to build and packages are not reproducible.
extension_sql_file!("../../sql/jobs.sql", name = "jobs_table", requires = ["restores_table"]);

pub use backstop_core::schedule::job::JobKind;

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

/// How long each phase of a job took, in order (in its result as `phases`): where the time of a
/// slow one went.
#[derive(Default, serde::Serialize, Debug)]
#[serde(transparent)]
pub struct PhaseTimes {
    phases: Vec<PhaseTime>,
    #[serde(skip)]
    started: Option<std::time::Instant>,
}

#[derive(serde::Serialize, Debug)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

impl PhaseTimes {
    /// Ends the phase running (if any) and starts `name`, shown in job_progress.
    pub fn enter(&mut self, status: &mut JobStatus, name: &str) {
        self.end();
        self.started = Some(std::time::Instant::now());
        self.phases.push(PhaseTime { phase: name.to_string(), seconds: 0.0 });
        phase(status, name);
    }

    pub fn end(&mut self) {
        if let (Some(started), Some(last)) = (self.started.take(), self.phases.last_mut()) {
            last.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        }
    }
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
