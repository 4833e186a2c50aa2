//! The [`Job`] trait each job kind implements next to its feature, and what the runtime makes of
//! it: one object-safe [`Registered`] view over every kind, listed once in [`crate::JOBS`].
//!
//! Invariants:
//! - A job's arguments are parsed and checked in one place ([`backstop_core::schedule::job::parse_args`]),
//!   by the same code when a schedule is made, when `run_job` is called and when the worker runs
//!   it; a job never sees arguments of another kind (its `Args` type says which).
//! - Who may run a kind, whether it writes, and whether SIGTERM ends it are constants of the job
//!   itself, not of a table elsewhere: a new kind is its file plus one line in `JOBS`, and the
//!   compiler asks for each of them.
//! - [`Job::authorize`] runs as the caller (schedule(), alter_schedule(), run_job(), run_now())
//!   and raises: a job that names a table the caller cannot read is refused before it is stored.

use backstop_core::schedule::job::{parse_args, JobArgs, JobKind};
use backstop_core::Error;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{JobRequest, JobStatus};
use crate::errors::{raise_with, OrRaise};

/// A kind of job the worker runtime runs. Each lives in its feature (`job.rs`, `drill.rs`).
pub trait Job: Sync + 'static {
    /// Its arguments, as a schedule or `run_job` gives them (checked by `JobArgs::check`).
    type Args: JobArgs;

    /// What a run that succeeded reports (`backstop.job_runs.result`, run_job()'s `result`).
    type Outcome: serde::Serialize;

    const KIND: JobKind;

    /// Whether running it reads what the caller may not (every table, pg_authid, the server's
    /// configuration) or removes what others made: then only superusers and members of
    /// backstop_operator may start or schedule it. Jobs that read tables the caller names check
    /// the caller's privileges on each in [`Job::authorize`] instead.
    const NEEDS_OPERATOR: bool;

    /// Writes nothing to the database or the repository, so it may run on a standby.
    const READ_ONLY: bool;

    /// Whether SIGTERM ends the worker the way it ends a backend (the ERROR path aborts the
    /// transaction), for jobs that run SQL, which may wait on a lock where no flag is checked.
    /// The scheduler settles the run's state.
    const DIES_ON_SIGTERM: bool = false;

    /// Its result names no table, row count or database (the WAL drill's), so any caller who may
    /// list runs may read it where no row security applies (a standby's status files).
    const RESULT_NAMES_NOTHING: bool = false;

    /// Checks, as the caller, what the arguments name: tables readable, schemas and databases
    /// that exist. Raises with the reason.
    fn authorize(&self, _args: &Self::Args) {}

    /// Runs it, in its worker, with its arguments.
    fn run(&self, request: &JobRequest, args: Self::Args, status: &mut JobStatus) -> Result<Self::Outcome, Error>;
}

/// What the runtime, schedules and doctor see of a [`Job`], whatever its arguments' type.
pub trait Registered: Sync {
    fn kind(&self) -> JobKind;
    fn needs_operator(&self) -> bool;
    fn read_only(&self) -> bool;
    fn dies_on_sigterm(&self) -> bool;
    fn result_names_nothing(&self) -> bool;
    /// Parses and checks `args`, refuses a caller who may not run it (raises).
    fn check_as_caller(&self, args: &serde_json::Value);
    /// Parses the request's arguments and runs the job.
    fn run_request(&self, request: &JobRequest, status: &mut JobStatus) -> Result<serde_json::Value, Error>;
}

impl<J: Job> Registered for J {
    fn kind(&self) -> JobKind {
        J::KIND
    }
    fn needs_operator(&self) -> bool {
        J::NEEDS_OPERATOR
    }
    fn read_only(&self) -> bool {
        J::READ_ONLY
    }
    fn dies_on_sigterm(&self) -> bool {
        J::DIES_ON_SIGTERM
    }
    fn result_names_nothing(&self) -> bool {
        J::RESULT_NAMES_NOTHING
    }
    fn check_as_caller(&self, args: &serde_json::Value) {
        let args: J::Args = parse_args(J::KIND, args).or_raise();
        require_operator(self);
        self.authorize(&args);
    }
    fn run_request(&self, request: &JobRequest, status: &mut JobStatus) -> Result<serde_json::Value, Error> {
        let args: J::Args = parse_args(J::KIND, &request.args)?;
        let outcome = self.run(request, args, status)?;
        serde_json::to_value(outcome).map_err(|e| Error::Job {
            message: format!("the {} job's result could not be recorded: {e}", J::KIND.as_str()),
            hint: "This is a bug in backstop; what the job did is in the repository.".into(),
        })
    }
}

/// The registered job of `kind`.
pub fn job(kind: JobKind) -> &'static dyn Registered {
    crate::JOBS.iter().copied().find(|job| job.kind() == kind).unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            &format!("no {} job is registered", kind.as_str()),
            "This is a bug in backstop: every job kind is listed in JOBS.",
        )
    })
}

/// The job named `name`, its arguments checked as the caller would run them (raises).
pub fn checked(name: &str, args: &serde_json::Value) -> &'static dyn Registered {
    let job = job(JobKind::parse(name).or_raise());
    job.check_as_caller(args);
    job
}

/// Refuses a job that needs it to a caller who is neither superuser nor a member of
/// backstop_operator.
pub fn require_operator(job: &dyn Registered) {
    if job.needs_operator() && !super::caller_reads_everything() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("only superusers and members of backstop_operator may run {} jobs", job.kind().as_str()),
            "It reads every table (and for base backups pg_authid and the server's configuration) or removes what others stored: a superuser grants that with GRANT backstop_operator TO the role, which includes pg_read_all_data.",
        );
    }
}

fn invalid(message: &str, hint: &str) -> ! {
    raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, hint)
}

/// Raises unless each table exists and the caller may read it.
pub fn require_readable<'a>(tables: impl IntoIterator<Item = &'a String>) {
    for table in tables {
        let readable = Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.has_table_privilege(pg_catalog.to_regclass($1), 'SELECT')",
            &[table.as_str().into()],
        )
        .ok()
        .flatten();
        match readable {
            Some(true) => {}
            Some(false) => raise_with(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                &format!("you cannot read table {table}, so you cannot schedule a job that reads it"),
                "A scheduled job runs as the schedule's owner; ask for SELECT on the table.",
            ),
            None => {
                invalid(&format!("table {table} does not exist"), "Name tables schema-qualified, e.g. 'public.orders'.")
            }
        }
    }
}

/// Raises unless the schema exists.
pub fn require_schema(schema: &str) {
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        &[schema.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !exists {
        invalid(&format!("schema {schema} does not exist"), "Name an existing schema, e.g. 'public'.");
    }
}

/// Raises unless the database exists (`logical_backup()` and the jobs say the same words).
pub fn require_database(database: &str) {
    let exists = crate::spi::text(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)::text",
        &[database.into()],
    );
    if exists.as_deref() != Some("true") {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_CATALOG_NAME,
            &format!("database \"{database}\" does not exist"),
            "SELECT datname FROM pg_database lists the databases.",
        );
    }
}
