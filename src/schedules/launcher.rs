//! The scheduler: one background worker, registered at server start when backstop is in
//! `shared_preload_libraries`, connected to `backstop.database`. About once a second it
//!
//! 1. reaps the job workers it started: a run whose worker ended without recording an outcome is
//!    failed (or timed out, when the scheduler stopped it), and a failed run with retries left is
//!    queued again with exponential backoff;
//! 2. stops runs that passed their schedule's timeout;
//! 3. starts due runs (each in its own job worker process, so a long base backup does not hold
//!    back a snapshot), applying the overlap policy, and records skipped and missed runs;
//! 4. starts queued runs whose time came and whose schedule is idle;
//! 5. prunes `backstop.job_runs` past `backstop.job_runs_retention`, and job status files
//!    (a day after their run ended on a primary; by the same retention on a standby, where they
//!    are the history).
//!
//! Decisions come from `backstop_core::schedule::plan`; this file only reads the clock and the
//! tables and acts. On a standby (the scheduler starts once it is consistent) only schedules
//! with `runs_on` 'standby' or 'any' run, and only read-only jobs may say so; their runs are kept
//! in status files (`backstop.standby_runs`), since the tables are read-only there, and a
//! promotion restarts the scheduler as the primary's. SIGHUP reloads the
//! configuration; SIGTERM stops the runs it started (recorded as cancelled) and exits, and the
//! postmaster starts the scheduler again unless the server is shutting down. A run interrupted by
//! a crash or restart is recorded as failed when the scheduler starts, never forgotten, and
//! queued again when its schedule has retries left.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backstop_core::schedule::job::JobKind;
use backstop_core::schedule::plan::{self, Busy, Due, Overlap, RunsOn};
use backstop_core::schedule::{Cron, Zone};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::gucs;
use crate::jobs::runlog::{EndedRun, StopReason, UnstartedRun};
use crate::jobs::{self, JobRequest, RunLog};

/// Registers the scheduler with the postmaster (from `_PG_init` while preloading).
pub fn register() {
    BackgroundWorkerBuilder::new("backstop scheduler")
        .set_type("backstop scheduler")
        .set_library("backstop")
        .set_function("backstop_scheduler_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

struct Running {
    schedule: String,
    owner: String,
    attempt: i32,
    kind: String,
    timeout: Option<Duration>,
    started: Instant,
    worker: DynamicBackgroundWorker,
    stopped: Option<StopReason>,
}

struct ScheduleRow {
    name: String,
    cron: String,
    time_zone: String,
    job: String,
    args: serde_json::Value,
    overlap: String,
    timeout: Option<f64>,
    next_run_at: Option<f64>,
    owner: String,
    runs_on: RunsOn,
}

fn unix(time: SystemTime) -> f64 {
    backstop_core::backups::unix_seconds(time)
}

fn from_unix(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

fn run_sql(sql: &str, args: &[pgrx::datum::DatumWithOid]) {
    BackgroundWorker::transaction(|| {
        if let Err(e) = Spi::run_with_args(sql, args) {
            pgrx::warning!("backstop scheduler: {e}");
        }
    });
}

fn extension_installed() -> bool {
    BackgroundWorker::transaction(|| {
        // Read-only SPI: this runs on a standby too.
        crate::spi::text("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'backstop')::text", &[])
            .as_deref()
            == Some("true")
    })
}

/// Records a run that did not start (skipped, missed, queued, failed to start) in the run log.
fn record_run(
    run_log: RunLog,
    schedule: &ScheduleRow,
    state: &str,
    scheduled_for: SystemTime,
    not_before: Option<SystemTime>,
    error: Option<String>,
) {
    run_log.unstarted(UnstartedRun {
        schedule: &schedule.name,
        kind: &schedule.job,
        args: &schedule.args,
        owner: &schedule.owner,
        state,
        scheduled_for,
        not_before,
        error,
    });
}

fn load_schedules() -> Vec<ScheduleRow> {
    BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT name, cron, time_zone, job, args, overlap, \
                        pg_catalog.date_part('epoch', timeout)::float8, \
                        pg_catalog.date_part('epoch', next_run_at)::float8, owner::text, runs_on \
                   FROM backstop.schedules WHERE enabled ORDER BY name",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for row in rows {
                out.push(ScheduleRow {
                    name: row.get(1)?.unwrap_or_default(),
                    cron: row.get(2)?.unwrap_or_default(),
                    time_zone: row.get(3)?.unwrap_or_default(),
                    job: row.get(4)?.unwrap_or_default(),
                    args: row.get::<JsonB>(5)?.map(|j| j.0).unwrap_or_default(),
                    overlap: row.get(6)?.unwrap_or_default(),
                    timeout: row.get(7)?,
                    next_run_at: row.get(8)?,
                    owner: row.get(9)?.unwrap_or_default(),
                    runs_on: RunsOn::parse(&row.get::<String>(10)?.unwrap_or_default()).unwrap_or(RunsOn::Primary),
                });
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap_or_else(|e| {
            pgrx::warning!("backstop scheduler could not read backstop.schedules: {e}");
            Vec::new()
        })
    })
}

/// Schedules with a run in progress (started by this scheduler or still alive from before).
fn busy_schedules() -> Vec<String> {
    BackgroundWorker::transaction(|| {
        crate::spi::texts(
            "SELECT DISTINCT schedule FROM backstop.job_runs WHERE state = 'running' AND schedule IS NOT NULL",
            &[],
        )
        .unwrap_or_default()
    })
}

struct Scheduler {
    database: String,
    running: HashMap<i64, Running>,
    last_prune: Option<Instant>,
    /// Where runs are recorded: fixed for the scheduler's life (a promotion restarts it).
    run_log: RunLog,
    /// After a launch found no free worker slot: no launch is tried before this instant, and the
    /// next wait is twice as long (up to [`MAX_SLOT_BACKOFF`]).
    slot_backoff: Option<(Instant, Duration)>,
}

const FIRST_SLOT_BACKOFF: Duration = Duration::from_secs(10);
const MAX_SLOT_BACKOFF: Duration = Duration::from_secs(300);

impl Scheduler {
    fn start_run(&mut self, id: Option<i64>, schedule: &ScheduleRow, attempt: i32, scheduled_for: Option<SystemTime>) {
        let kind = match JobKind::parse(&schedule.job) {
            Ok(kind) => kind,
            Err(e) => {
                record_run(
                    self.run_log,
                    schedule,
                    "failed",
                    scheduled_for.unwrap_or_else(SystemTime::now),
                    None,
                    Some(e.to_string()),
                );
                return;
            }
        };
        if let Some((until, _)) = self.slot_backoff.filter(|(until, _)| Instant::now() < *until) {
            // No slot was free a moment ago: a queued run (a retry) stays queued for later; a run
            // that fell due now is missed once, with one row, and no LOG line per tick.
            if id.is_none() {
                let wait = until.saturating_duration_since(Instant::now()).as_secs();
                record_run(
        self.run_log,
                    schedule,
                    "failed",
                    scheduled_for.unwrap_or_else(SystemTime::now),
                    None,
                    Some(format!(
                        "no background worker slot was free (max_worker_processes); the scheduler tries again in {wait} s"
                    )),
                );
            }
            return;
        }
        let queued = id.is_some();
        let id = id.unwrap_or_else(|| BackgroundWorker::transaction(jobs::next_id));
        let request = JobRequest {
            id,
            kind,
            requested_by: schedule.owner.clone(),
            args: schedule.args.clone(),
            schedule: Some(schedule.name.clone()),
            attempt,
            scheduled_for: scheduled_for.map(unix),
        };
        match jobs::launch(&request, &self.database) {
            Ok(worker) => {
                self.slot_backoff = None;
                self.running.insert(
                    id,
                    Running {
                        schedule: schedule.name.clone(),
                        owner: schedule.owner.clone(),
                        attempt,
                        kind: schedule.job.clone(),
                        timeout: schedule.timeout.map(|t| Duration::from_secs_f64(t.max(1.0))),
                        started: Instant::now(),
                        worker,
                        stopped: None,
                    },
                );
            }
            Err((code, message, hint)) => {
                pgrx::log!("{} schedule {}: {message} ({hint})", jobs::FAILED_RUN_LOG_PREFIX, schedule.name);
                if code == PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED {
                    let wait =
                        self.slot_backoff.map(|(_, w)| (w * 2).min(MAX_SLOT_BACKOFF)).unwrap_or(FIRST_SLOT_BACKOFF);
                    self.slot_backoff = Some((Instant::now() + wait, wait));
                }
                // A queued retry keeps its queued row and is started once a slot is free.
                if queued {
                    return;
                }
                record_run(
                    self.run_log,
                    schedule,
                    "failed",
                    scheduled_for.unwrap_or_else(SystemTime::now),
                    None,
                    Some(message),
                );
            }
        }
    }

    /// Runs that ended: settle their state, queue retries.
    /// The runs whose worker process has ended, taken out of `running`.
    fn take_ended(&mut self) -> Vec<(i64, Running)> {
        let ended: Vec<i64> = self
            .running
            .iter()
            .filter(|(_, r)| matches!(r.worker.pid(), Err(pgrx::bgworkers::BackgroundWorkerStatus::Stopped)))
            .map(|(id, _)| *id)
            .collect();
        ended.into_iter().filter_map(|id| self.running.remove(&id).map(|run| (id, run))).collect()
    }

    fn reap(&mut self, now: SystemTime) {
        for (id, run) in self.take_ended() {
            self.run_log.settle_ended(
                &EndedRun {
                    id,
                    schedule: &run.schedule,
                    owner: &run.owner,
                    attempt: run.attempt,
                    kind: &run.kind,
                    timeout: run.timeout,
                    elapsed: run.started.elapsed(),
                    stopped: run.stopped,
                },
                now,
            );
        }
    }

    fn enforce_timeouts(&mut self) {
        for run in self.running.values_mut() {
            if run.stopped.is_none() && run.timeout.is_some_and(|t| run.started.elapsed() > t) {
                run.stopped = Some(StopReason::Timeout);
                terminate(&run.worker);
            }
        }
    }

    fn stop_all(&mut self) {
        for run in self.running.values_mut() {
            if run.stopped.is_none() {
                run.stopped = Some(StopReason::Shutdown);
                terminate(&run.worker);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.running.is_empty() && Instant::now() < deadline {
            self.reap(SystemTime::now());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A standby's tick: the schedules that may run here fire by their cron in this server's own
    /// memory of their next run (kept in a file beside the job status files, since the tables
    /// are read-only), a run still going is skipped, and a run missed by more than the grace
    /// period is logged, not run. No retries and no queue: those need the history tables.
    fn fire_due_on_standby(&mut self, now: SystemTime) {
        let schedules = load_schedules();
        let mut next_runs = self.run_log.next_runs().unwrap_or_default();
        next_runs.retain(|name, _| schedules.iter().any(|s| s.name == *name && s.runs_on.runs_here(true)));
        for schedule in schedules.iter().filter(|s| s.runs_on.runs_here(true)) {
            let (Ok(cron), Ok(zone)) = (Cron::parse(&schedule.cron), Zone::parse(&schedule.time_zone)) else {
                continue;
            };
            let Some(next_run_at) = next_runs.get(&schedule.name).copied().map(from_unix) else {
                if let Some(next) = zone.next_run(&cron, now) {
                    next_runs.insert(schedule.name.clone(), unix(next));
                }
                continue;
            };
            match plan::due(&cron, &zone, next_run_at, now, gucs::missed_run_grace()) {
                Due::NotYet => {}
                Due::Missed { count, next, .. } => {
                    pgrx::log!(
                        "{} schedule {}: {count} run(s) missed on this standby",
                        jobs::FAILED_RUN_LOG_PREFIX,
                        schedule.name
                    );
                    set_or_remove(&mut next_runs, &schedule.name, next);
                }
                Due::Run { scheduled_for, next, .. } => {
                    set_or_remove(&mut next_runs, &schedule.name, next);
                    if self.running.values().any(|r| r.schedule == schedule.name) {
                        pgrx::log!("backstop scheduler: schedule {} skipped a run on this standby: the previous one still runs", schedule.name);
                        continue;
                    }
                    self.start_run(Some(jobs::standby_job_id()), schedule, 1, Some(scheduled_for));
                }
            }
        }
        self.run_log.keep_next_runs(&next_runs);
    }

    fn fire_due(&mut self, now: SystemTime) {
        let schedules = load_schedules();
        let mut busy = busy_schedules();
        busy.extend(self.running.values().map(|r| r.schedule.clone()));
        for schedule in schedules.iter().filter(|s| s.runs_on.runs_here(false)) {
            let (Ok(cron), Ok(zone)) = (Cron::parse(&schedule.cron), Zone::parse(&schedule.time_zone)) else {
                continue; // schedule() checked both; a row edited by hand is ignored, doctor says so
            };
            let Some(next_run_at) = schedule.next_run_at.map(from_unix) else {
                let next = zone.next_run(&cron, now);
                set_next_run(&schedule.name, next);
                continue;
            };
            match plan::due(&cron, &zone, next_run_at, now, gucs::missed_run_grace()) {
                Due::NotYet => {}
                Due::Missed { newest, count, next } => {
                    record_run(
        self.run_log,
                        schedule,
                        "missed",
                        newest,
                        None,
                        Some(format!(
                            "{count} run(s) fell due while the scheduler was not running; the newest is older than backstop.missed_run_grace"
                        )),
                    );
                    pgrx::log!("{} schedule {}: {count} run(s) missed", jobs::FAILED_RUN_LOG_PREFIX, schedule.name);
                    set_next_run(&schedule.name, next);
                }
                Due::Run { scheduled_for, missed, next } => {
                    if missed > 0 {
                        record_run(
        self.run_log,
                            schedule,
                            "missed",
                            next_run_at,
                            None,
                            Some(format!("{missed} earlier run(s) fell due while the scheduler was not running; the newest ran instead")),
                        );
                    }
                    set_next_run(&schedule.name, next);
                    let is_busy = busy.contains(&schedule.name);
                    let queued = is_busy && has_queued(&schedule.name);
                    let policy = Overlap::parse(&schedule.overlap).unwrap_or(Overlap::Skip);
                    match plan::on_busy(policy, is_busy, queued) {
                        Busy::Start => {
                            self.start_run(None, schedule, 1, Some(scheduled_for));
                            busy.push(schedule.name.clone());
                        }
                        Busy::Skip => record_run(
                            self.run_log,
                            schedule,
                            "skipped",
                            scheduled_for,
                            None,
                            Some("the previous run of this schedule was still running (overlap = skip)".into()),
                        ),
                        Busy::Queue => record_run(self.run_log, schedule, "queued", scheduled_for, Some(now), None),
                    }
                }
            }
        }
        self.start_queued(&schedules, &busy, now);
    }

    /// Queued runs (overlap 'queue', retries) whose time came, one per idle schedule.
    fn start_queued(&mut self, schedules: &[ScheduleRow], busy: &[String], now: SystemTime) {
        let queued: Vec<(i64, String, i32, Option<f64>, serde_json::Value)> = BackgroundWorker::transaction(|| {
            Spi::connect(|client| {
                let rows = client.select(
                    "SELECT DISTINCT ON (schedule) job_id, schedule, attempt, \
                            pg_catalog.date_part('epoch', scheduled_for)::float8, args \
                       FROM backstop.job_runs WHERE state = 'queued' AND not_before <= pg_catalog.to_timestamp($1) \
                      ORDER BY schedule, job_id",
                    None,
                    &[unix(now).into()],
                )?;
                let mut out = Vec::new();
                for row in rows {
                    out.push((
                        row.get::<i64>(1)?.unwrap_or_default(),
                        row.get::<String>(2)?.unwrap_or_default(),
                        row.get::<i32>(3)?.unwrap_or(1),
                        row.get::<f64>(4)?,
                        row.get::<JsonB>(5)?.map(|j| j.0).unwrap_or_default(),
                    ));
                }
                Ok::<_, pgrx::spi::Error>(out)
            })
            .unwrap_or_default()
        });
        for (id, name, attempt, scheduled_for, args) in queued {
            if busy.contains(&name) || self.running.values().any(|r| r.schedule == name) {
                continue;
            }
            let Some(schedule) = schedules.iter().find(|s| s.name == name) else {
                continue; // disabled or removed: the run waits (unschedule cancels it)
            };
            let row = ScheduleRow { args, ..clone_schedule(schedule) };
            self.start_run(Some(id), &row, attempt, scheduled_for.map(from_unix));
        }
    }

    /// Hourly: old job history and the status files of runs that ended (the run log's prune).
    fn prune(&mut self) {
        if self.last_prune.is_some_and(|t| t.elapsed() < Duration::from_secs(3600)) {
            return;
        }
        self.last_prune = Some(Instant::now());
        self.run_log.prune(gucs::job_runs_retention_days());
    }
}

/// Asks a job worker to stop (SIGTERM, as TerminateBackgroundWorker would have the postmaster
/// send), keeping the handle so the scheduler still sees when it ended.
fn terminate(worker: &DynamicBackgroundWorker) {
    if let Ok(pid) = worker.pid() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

fn clone_schedule(s: &ScheduleRow) -> ScheduleRow {
    ScheduleRow {
        name: s.name.clone(),
        cron: s.cron.clone(),
        time_zone: s.time_zone.clone(),
        job: s.job.clone(),
        args: s.args.clone(),
        overlap: s.overlap.clone(),
        timeout: s.timeout,
        next_run_at: s.next_run_at,
        owner: s.owner.clone(),
        runs_on: s.runs_on,
    }
}

fn has_queued(name: &str) -> bool {
    BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM backstop.job_runs WHERE schedule = $1 AND state = 'queued')",
            &[name.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    })
}

fn set_or_remove(next_runs: &mut HashMap<String, f64>, name: &str, next: Option<SystemTime>) {
    match next {
        Some(next) => next_runs.insert(name.to_string(), unix(next)),
        None => next_runs.remove(name),
    };
}

fn set_next_run(name: &str, next: Option<SystemTime>) {
    run_sql(
        "UPDATE backstop.schedules SET next_run_at = pg_catalog.to_timestamp($2) WHERE name = $1",
        &[name.into(), next.map(unix).into()],
    );
}

/// The scheduler's main loop.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn backstop_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let run_log = RunLog::here();
    let standby = run_log.on_standby();
    pgrx::log!(
        "backstop scheduler started (database {database}{})",
        if standby { ", on a standby: only schedules with runs_on 'standby' or 'any' run here" } else { "" }
    );
    let mut scheduler = Scheduler { database, running: HashMap::new(), last_prune: None, run_log, slot_backoff: None };
    let mut announced_missing = false;
    let mut started = false;
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(200))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            if gucs::database() != scheduler.database {
                // A worker stays connected to one database: exit and let the postmaster start
                // the scheduler again, connected to the new one.
                pgrx::log!(
                    "backstop scheduler: backstop.database changed from {} to {}; restarting",
                    scheduler.database,
                    gucs::database()
                );
                scheduler.stop_all();
                unsafe { pg_sys::proc_exit(1) };
            }
        }
        if RunLog::here() != run_log {
            // Promoted: start again as the primary's scheduler (interrupted runs recorded, the
            // primary's schedules from their stored next run). Standby runs still going go on.
            pgrx::log!("backstop scheduler: this server was promoted; restarting as the primary's scheduler");
            unsafe { pg_sys::proc_exit(1) };
        }
        if !extension_installed() {
            if !announced_missing {
                pgrx::log!(
                    "backstop scheduler: the extension is not installed in database {}; waiting for CREATE EXTENSION backstop",
                    scheduler.database
                );
                announced_missing = true;
            }
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        let now = gucs::scheduler_now();
        if !started {
            // Runs a crash or restart interrupted: failed, never forgotten.
            run_log.settle_interrupted();
            started = true;
        }
        scheduler.reap(now);
        scheduler.enforce_timeouts();
        if gucs::scheduler_enabled() {
            // Which schedules run here and how they fire: a primary by the tables (queues,
            // retries, overlap), a standby by its cron alone.
            match run_log {
                RunLog::Table => scheduler.fire_due(now),
                RunLog::StatusFiles => scheduler.fire_due_on_standby(now),
            }
        }
        scheduler.prune();
    }
    // SIGTERM: stop the runs this scheduler started, recorded as cancelled, and exit with a code
    // that has the postmaster start the scheduler again (unless the server is shutting down).
    scheduler.stop_all();
    pgrx::log!("backstop scheduler stopped");
    unsafe { pg_sys::proc_exit(1) };
}
