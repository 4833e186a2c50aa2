//! The schedules' SQL functions (pg_cron's shape) and on-demand runs of any job. Every field is
//! checked here, at `schedule()` time, with the reason: an invalid cron expression, an unknown
//! job, bad args or an unknown time zone never reach the scheduler.

use std::time::SystemTime;

use backstop_core::schedule::job::JobKind;
use backstop_core::schedule::plan::{Overlap, RunsOn};
use backstop_core::schedule::{Cron, Zone};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};

use crate::errors::{raise_with, OrRaise};
use crate::jobs::{self, JobState};

extension_sql_file!("../../sql/schedules.sql", name = "schedules_table", requires = ["jobs_table"]);

fn current_user() -> String {
    Spi::get_one::<String>("SELECT current_user::text").ok().flatten().unwrap_or_default()
}

fn invalid(message: &str, hint: &str) -> ! {
    raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, hint)
}

fn to_timestamptz(time: SystemTime) -> Option<TimestampWithTimeZone> {
    crate::timestamps::from_system_time(time)
}

/// Checks a job and its args as the caller would run them (its job's own checks, see
/// [`jobs::Registered::check_as_caller`]).
fn check_job(job: &str, args: &serde_json::Value) -> &'static dyn jobs::Registered {
    jobs::registry::checked(job, args)
}

fn check_name(name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        invalid(
            &format!("\"{}\" is not a schedule name", name.escape_debug()),
            "Use up to 63 letters, digits, '_', '-' or '.', e.g. 'nightly-orders'.",
        );
    }
}

fn interval_seconds(interval: &Interval) -> f64 {
    Spi::get_one_with_args::<f64>("SELECT pg_catalog.date_part('epoch', $1)::float8", &[(*interval).into()])
        .ok()
        .flatten()
        .unwrap_or(0.0)
}

/// Creates a schedule. Returns its name and next run.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn schedule(
    name: &str,
    cron: &str,
    job: &str,
    args: default!(JsonB, "'{}'"),
    time_zone: default!(&str, "'UTC'"),
    overlap: default!(&str, "'skip'"),
    max_retries: default!(i32, 0),
    retry_backoff: default!(Interval, "'5 minutes'"),
    timeout: default!(Option<Interval>, "NULL"),
    enabled: default!(bool, true),
    runs_on: default!(&str, "'primary'"),
) -> TableIterator<'static, (name!(name, String), name!(next_run_at, Option<TimestampWithTimeZone>))> {
    check_name(name);
    let parsed = Cron::parse(cron).or_raise();
    let zone = Zone::parse(time_zone).or_raise();
    let checked = check_job(job, &args.0);
    RunsOn::parse(runs_on).and_then(|r| r.check(checked.kind(), checked.read_only())).or_raise();
    Overlap::parse(overlap).or_raise();
    if !(0..=10).contains(&max_retries) {
        invalid(&format!("max_retries {max_retries} is outside 0 to 10"), "Use 0 (no retry) to 10.");
    }
    if interval_seconds(&retry_backoff) < 1.0 {
        invalid("retry_backoff must be at least one second", "Use e.g. '5 minutes'.");
    }
    if timeout.as_ref().is_some_and(|t| interval_seconds(t) < 1.0) {
        invalid("timeout must be at least one second", "Use e.g. '2 hours', or NULL for none.");
    }
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM backstop.schedules WHERE name = $1)",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if exists {
        raise_with(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            &format!("schedule \"{name}\" already exists"),
            "Change it with backstop.alter_schedule(), or remove it with backstop.unschedule() first.",
        );
    }
    let next = zone.next_run(&parsed, crate::gucs::scheduler_now());
    let caller = current_user();
    crate::owner::as_owner_of("backstop.schedules", || Spi::run_with_args(
        "INSERT INTO backstop.schedules (name, cron, time_zone, job, args, enabled, overlap, max_retries, retry_backoff, timeout, next_run_at, owner, runs_on) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            name.into(),
            parsed.as_str().into(),
            zone.name().into(),
            job.into(),
            args.into(),
            enabled.into(),
            overlap.into(),
            max_retries.into(),
            retry_backoff.into(),
            timeout.into(),
            next.and_then(to_timestamptz).into(),
            caller.as_str().into(),
            runs_on.into(),
        ],
    ))
    .unwrap_or_else(|e| raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop."));
    if !crate::loaded_at_startup() {
        pgrx::warning!(
            "schedule \"{name}\" is stored, but the scheduler runs only with shared_preload_libraries = 'backstop' (then restart the server)"
        );
    }
    TableIterator::new(vec![(name.to_string(), next.and_then(to_timestamptz))])
}

/// Only the owner of a schedule (or a superuser) changes or removes it.
fn owned_schedule(name: &str) -> String {
    let owner =
        Spi::get_one_with_args::<String>("SELECT owner::text FROM backstop.schedules WHERE name = $1", &[name.into()])
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                raise_with(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    &format!("schedule \"{name}\" does not exist"),
                    "SELECT name FROM backstop.schedules lists the schedules.",
                )
            });
    let allowed = Spi::get_one_with_args::<bool>(
        "SELECT current_user::text = $1 OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)",
        &[owner.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !allowed {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("schedule \"{name}\" belongs to {owner}"),
            "Only its owner or a superuser can change, run or remove it.",
        );
    }
    owner
}

/// Removes a schedule; its past runs stay in backstop.job_runs.
#[pg_extern(volatile, parallel_unsafe)]
fn unschedule(name: &str) -> bool {
    owned_schedule(name);
    crate::owner::as_owner_of("backstop.schedules", || {
        Spi::run_with_args("DELETE FROM backstop.schedules WHERE name = $1", &[name.into()])
    })
    .unwrap_or_else(|e| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop.")
    });
    crate::owner::as_owner_of("backstop.job_runs", || {
        Spi::run_with_args(
            "UPDATE backstop.job_runs SET state = 'cancelled', finished_at = pg_catalog.now(), error = 'its schedule was removed' \
             WHERE schedule = $1 AND state = 'queued'",
            &[name.into()],
        )
    })
    .ok();
    true
}

/// Changes the given fields of a schedule (NULL leaves a field as it is) and returns its next run.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn alter_schedule(
    name: &str,
    cron: default!(Option<&str>, "NULL"),
    job: default!(Option<&str>, "NULL"),
    args: default!(Option<JsonB>, "NULL"),
    time_zone: default!(Option<&str>, "NULL"),
    overlap: default!(Option<&str>, "NULL"),
    max_retries: default!(Option<i32>, "NULL"),
    retry_backoff: default!(Option<Interval>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    enabled: default!(Option<bool>, "NULL"),
    runs_on: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(name, String), name!(next_run_at, Option<TimestampWithTimeZone>))> {
    owned_schedule(name);
    let (old_cron, old_zone, old_job, old_args, old_runs_on) = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT cron, time_zone, job, args, runs_on FROM backstop.schedules WHERE name = $1",
                Some(1),
                &[name.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<String>(1)?,
            row.get::<String>(2)?,
            row.get::<String>(3)?,
            row.get::<JsonB>(4)?,
            row.get::<String>(5)?,
        ))
    })
    .unwrap_or_else(|e| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop.")
    });
    let cron_text = cron.map(str::to_string).or(old_cron).unwrap_or_default();
    let parsed = Cron::parse(&cron_text).or_raise();
    let zone = Zone::parse(time_zone.map(str::to_string).or(old_zone).as_deref().unwrap_or("UTC")).or_raise();
    let job_text = job.map(str::to_string).or(old_job).unwrap_or_default();
    let args_value = args.map(|a| a.0).or(old_args.map(|a| a.0)).unwrap_or_default();
    let checked = check_job(&job_text, &args_value);
    let runs_on = runs_on.map(str::to_string).or(old_runs_on).unwrap_or_else(|| "primary".into());
    RunsOn::parse(&runs_on).and_then(|r| r.check(checked.kind(), checked.read_only())).or_raise();
    if let Some(overlap) = overlap {
        Overlap::parse(overlap).or_raise();
    }
    if max_retries.is_some_and(|m| !(0..=10).contains(&m)) {
        invalid("max_retries is outside 0 to 10", "Use 0 (no retry) to 10.");
    }
    let next = zone.next_run(&parsed, crate::gucs::scheduler_now());
    crate::owner::as_owner_of("backstop.schedules", || Spi::run_with_args(
        "UPDATE backstop.schedules SET cron = $2, time_zone = $3, job = $4, args = $5, \
         overlap = coalesce($6, overlap), max_retries = coalesce($7, max_retries), \
         retry_backoff = coalesce($8, retry_backoff), timeout = CASE WHEN $9::interval IS NULL THEN timeout ELSE $9 END, \
         enabled = coalesce($10, enabled), next_run_at = $11, runs_on = $12 WHERE name = $1",
        &[
            name.into(),
            parsed.as_str().into(),
            zone.name().into(),
            job_text.as_str().into(),
            JsonB(args_value).into(),
            overlap.into(),
            max_retries.into(),
            retry_backoff.into(),
            timeout.into(),
            enabled.into(),
            next.and_then(to_timestamptz).into(),
            runs_on.as_str().into(),
        ],
    ))
    .unwrap_or_else(|e| raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop."));
    TableIterator::new(vec![(name.to_string(), next.and_then(to_timestamptz))])
}

type RunRow = (
    name!(job_id, i64),
    name!(state, String),
    name!(seconds, Option<f64>),
    name!(result, Option<JsonB>),
    name!(error, Option<String>),
    name!(hint, Option<String>),
);

fn run(
    kind: JobKind,
    args: serde_json::Value,
    schedule: Option<String>,
    requested_by: String,
    wait: bool,
) -> TableIterator<'static, RunRow> {
    let id = jobs::next_id();
    let database =
        Spi::get_one::<String>("SELECT pg_catalog.current_database()::text").ok().flatten().unwrap_or_default();
    let request = jobs::JobRequest { id, kind, requested_by, args, schedule, attempt: 1, scheduled_for: None };
    let worker =
        jobs::launch(&request, &database).unwrap_or_else(|(code, message, hint)| raise_with(code, &message, hint));
    if !wait {
        return TableIterator::new(vec![(id, "running".to_string(), None, None, None, None)]);
    }
    crate::errors::notice(&format!("{} job {id} started in a background worker", kind.as_str()));
    let status = jobs::wait(id, worker, |s| format!("{} job {id}: {}", kind.as_str(), s.phase));
    let seconds =
        Spi::get_one_with_args::<f64>("SELECT seconds FROM backstop.job_runs WHERE job_id = $1", &[id.into()])
            .ok()
            .flatten();
    if status.state != JobState::Succeeded {
        pgrx::warning!(
            "{} job {id} {}: {}",
            kind.as_str(),
            status.state.as_str(),
            status.error.clone().unwrap_or_default()
        );
    }
    TableIterator::new(vec![(
        id,
        status.state.as_str().to_string(),
        seconds,
        status.result.map(JsonB),
        status.error,
        status.hint,
    )])
}

/// Runs any job now, with the same arguments a schedule takes, as the caller. With `wait` (the
/// default) returns how it ended; a failed run is returned (and logged), not raised, so a drill's
/// failure can be read like its success.
#[pg_extern(volatile, parallel_unsafe)]
fn run_job(
    job: &str,
    args: default!(JsonB, "'{}'"),
    wait: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(state, String),
        name!(seconds, Option<f64>),
        name!(result, Option<JsonB>),
        name!(error, Option<String>),
        name!(hint, Option<String>),
    ),
> {
    let job = check_job(job, &args.0);
    run(job.kind(), args.0, None, current_user(), wait)
}

/// Runs a schedule's job now (outside its cron times), as the schedule's owner.
#[pg_extern(volatile, parallel_unsafe)]
fn run_now(
    name: &str,
    wait: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(state, String),
        name!(seconds, Option<f64>),
        name!(result, Option<JsonB>),
        name!(error, Option<String>),
        name!(hint, Option<String>),
    ),
> {
    let owner = owned_schedule(name);
    let (job, args) = Spi::get_two_with_args::<String, JsonB>(
        "SELECT job, args FROM backstop.schedules WHERE name = $1",
        &[name.into()],
    )
    .unwrap_or_else(|e| {
        raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, &e.to_string(), "This is a bug in backstop.")
    });
    let args = args.map(|a| a.0).unwrap_or_default();
    let job = check_job(&job.unwrap_or_default(), &args);
    run(job.kind(), args, Some(name.to_string()), owner, wait)
}
