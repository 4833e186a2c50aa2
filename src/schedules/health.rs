//! What doctor() (and the `backstop.status` view) say about the habits: is the scheduler alive,
//! did every schedule's last run succeed and is none overdue, when did each drill last pass and
//! how long it took (the RTO to quote), how old are the scheduled tables' snapshots, and the live
//! RPO (how much WAL is not in the repository yet).

use backstop_core::doctor::Check;
use pgrx::prelude::*;

use backstop_core::time::age_text;

use crate::gucs;
use crate::jobs::{self, RunLog};
use backstop_core::backups::unix_seconds;

/// A drill's newest finished run, from the history table or this standby's own runs.
struct LastRun {
    state: String,
    seconds: f64,
    /// Seconds since it ended.
    age: f64,
    error: String,
    hint: String,
    on_this_standby: bool,
}

impl LastRun {
    fn where_text(&self) -> &'static str {
        if self.on_this_standby {
            " on this standby"
        } else {
            ""
        }
    }
}

fn query<T>(
    sql: &str,
    row: impl Fn(&pgrx::spi::SpiHeapTupleData) -> Result<T, pgrx::spi::Error>,
) -> Result<Vec<T>, String> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for r in client.select(sql, None, &[])? {
            out.push(row(&r)?);
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| e.to_string())
}

pub fn checks(_: &mut crate::doctor::Context) -> Vec<Check> {
    let mut checks = vec![scheduler_check(), schedules_check()];
    checks.extend(drill_checks());
    checks
}

fn enabled_schedules() -> i64 {
    crate::spi::one::<i64>("SELECT count(*) FROM backstop.schedules WHERE enabled", &[]).ok().flatten().unwrap_or(0)
}

fn scheduler_check() -> Check {
    let schedules = enabled_schedules();
    let running = crate::spi::two::<i32, String>(
        "SELECT pid, datname::text FROM pg_catalog.pg_stat_activity WHERE backend_type = 'backstop scheduler' LIMIT 1",
    );
    let here = crate::spi::text("SELECT pg_catalog.current_database()::text", &[]).unwrap_or_default();
    if schedules > 0 && !gucs::scheduler_enabled() {
        return Check::warn(
            "scheduler",
            format!("backstop.scheduler = off: {schedules} enabled schedule(s) do not run"),
            "On a restored copy this is on purpose (see restored_copy). Otherwise: ALTER SYSTEM SET backstop.scheduler = on, then SELECT pg_reload_conf().",
        );
    }
    match running {
        Ok((Some(pid), Some(database))) if database == here => {
            Check::ok("scheduler", format!("running (pid {pid}), {schedules} enabled schedule(s)"))
        }
        Ok((Some(pid), database)) if schedules > 0 => Check::fail(
            "scheduler",
            format!(
                "the scheduler (pid {pid}) is connected to database {}, not to {here}, where these {schedules} schedule(s) are",
                database.unwrap_or_default()
            ),
            format!("Set backstop.database = '{here}' (ALTER SYSTEM, then SELECT pg_reload_conf())."),
        ),
        _ if schedules == 0 => Check::ok("scheduler", "no schedules: nothing runs on its own"),
        _ if !crate::loaded_at_startup() => Check::fail(
            "scheduler",
            format!("{schedules} schedule(s) exist but the scheduler is not running: backstop is not in shared_preload_libraries"),
            "Add backstop to shared_preload_libraries in postgresql.conf and restart the server.",
        ),
        _ if RunLog::here().on_standby() => {
            Check::ok("scheduler", "this server is a standby: schedules run on the primary")
        }
        _ => Check::fail(
            "scheduler",
            format!(
                "{schedules} schedule(s) exist but the scheduler is not running (backstop.database is {})",
                gucs::database()
            ),
            "It restarts 5 s after an error: check the server log for 'backstop scheduler'. backstop.database must name the database where the extension is installed.",
        ),
    }
}

fn schedules_check() -> Check {
    let rows = query(
        "SELECT st.name, st.last_state, coalesce(st.last_error, ''), \
                pg_catalog.date_part('epoch', st.last_success_age)::float8, \
                pg_catalog.date_part('epoch', pg_catalog.now() - st.next_run_at)::float8, s.runs_on \
           FROM backstop.schedule_status st JOIN backstop.schedules s USING (name) \
          WHERE st.enabled ORDER BY st.name",
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?,
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<f64>(4)?,
                r.get::<f64>(5)?,
                r.get::<String>(6)?.unwrap_or_default(),
            ))
        },
    );
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            return Check::fail(
                "schedules",
                format!("could not read backstop.schedules: {e}"),
                "Check the extension's installation.",
            )
        }
    };
    if rows.is_empty() {
        return Check::warn(
            "schedules",
            "no schedules: backups, retention and drills run only when someone remembers",
            "Schedule them, e.g. SELECT backstop.schedule('weekly-base', '0 3 * * sun', 'base_backup').",
        );
    }
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    let run_log = RunLog::here();
    let standby = run_log.on_standby();
    let standby_runs = run_log.own_runs();
    let standby_next = run_log.next_runs().unwrap_or_default();
    // Status files hold real times; the scheduler's next runs are on its own clock (which only
    // backstop.test_clock makes differ).
    let now = unix_seconds(std::time::SystemTime::now());
    let scheduler_now = unix_seconds(gucs::scheduler_now());
    for (name, mut last_state, mut error, mut success_age, mut late, runs_on) in rows {
        match (standby, runs_on.as_str()) {
            // The primary's history has no runs of these, and its next_run_at does not move.
            (false, "standby") => {
                fine.push(format!("{name}: runs on standbys (see backstop.standby_runs() there)"));
                continue;
            }
            // Judged by this standby's own runs and its scheduler's next run, not by the
            // primary's replicated history.
            (true, "standby" | "any") => {
                let mine = || standby_runs.iter().filter(|r| r.schedule.as_deref() == Some(name.as_str()));
                let last = mine().find(|r| r.state.is_final());
                last_state = last.map(|r| r.state.as_str().to_string());
                error = last.and_then(|r| r.error.clone()).unwrap_or_default();
                success_age = mine()
                    .filter(|r| r.state == jobs::JobState::Succeeded)
                    .find_map(|r| r.finished_at())
                    .map(|at| now - at);
                late = standby_next.get(&name).map(|next| scheduler_now - next);
            }
            _ => {}
        }
        match last_state.as_deref() {
            Some("failed" | "timed_out" | "missed" | "cancelled") => {
                problems.push(format!("{name}: last run {} ({error})", last_state.unwrap_or_default()))
            }
            _ if late.is_some_and(|l| l > 300.0) => {
                problems.push(format!("{name}: overdue by {}", age_text(late.unwrap_or_default())))
            }
            _ => fine.push(match success_age {
                Some(age) => format!("{name}: last success {} ago", age_text(age)),
                None => format!("{name}: not run yet"),
            }),
        }
    }
    if problems.is_empty() {
        Check::ok("schedules", fine.join("; "))
    } else {
        Check::warn(
            "schedules",
            problems.join("; "),
            "See SELECT * FROM backstop.job_runs WHERE state <> 'succeeded' ORDER BY job_id DESC for errors and hints.",
        )
    }
}

fn drill_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    let mut drills =
        vec![("drill_snapshot_restore", "snapshot_restore"), ("drill_wal_fetch", "wal_fetch"), ("drill_pitr", "pitr")];
    // The logical drill is reported once logical backups are in use (scheduled or drilled).
    let logical_drilled =
        crate::spi::text("SELECT EXISTS (SELECT 1 FROM backstop.job_runs WHERE kind = 'logical_restore')::text", &[])
            .as_deref()
            == Some("true");
    if logical_drilled || !crate::logical::health::scheduled_databases().is_empty() {
        drills.push(("drill_logical_restore", "logical_restore"));
    }
    let standby_runs = RunLog::here().own_runs();
    let now = unix_seconds(std::time::SystemTime::now());
    for (check, kind) in drills {
        let last = query(
            &format!(
                "SELECT state, coalesce(seconds, 0), pg_catalog.date_part('epoch', pg_catalog.now() - coalesce(finished_at, started_at))::float8, \
                        coalesce(error, ''), coalesce(hint, '') \
                   FROM backstop.job_runs WHERE kind = '{kind}' AND state IN ('succeeded', 'failed', 'timed_out') \
                  ORDER BY job_id DESC LIMIT 1"
            ),
            |r| {
                Ok(LastRun {
                    state: r.get::<String>(1)?.unwrap_or_default(),
                    seconds: r.get::<f64>(2)?.unwrap_or_default(),
                    age: r.get::<f64>(3)?.unwrap_or_default(),
                    error: r.get::<String>(4)?.unwrap_or_default(),
                    hint: r.get::<String>(5)?.unwrap_or_default(),
                    on_this_standby: false,
                })
            },
        );
        // On a standby, a drill it ran itself counts when it is newer than the primary's.
        let here = standby_runs
            .iter()
            .filter(|r| r.kind.as_str() == kind && r.state != jobs::JobState::Cancelled)
            .find_map(|r| {
                Some(LastRun {
                    state: r.state.as_str().to_string(),
                    seconds: r.seconds.unwrap_or_default(),
                    age: now - r.finished_at()?,
                    error: r.error.clone().unwrap_or_default(),
                    hint: r.hint.clone().unwrap_or_default(),
                    on_this_standby: true,
                })
            });
        let last = last.map(|rows| {
            let primary = rows.into_iter().next();
            match (primary, here) {
                (Some(p), Some(h)) => Some(if h.age < p.age { h } else { p }),
                (p, h) => p.or(h),
            }
        });
        checks.push(match last {
            Ok(Some(run)) if run.state == "succeeded" => Check::ok(
                check,
                format!(
                    "passed {} ago{} in {:.1} s (the measured recovery time)",
                    age_text(run.age),
                    run.where_text(),
                    run.seconds
                ),
            ),
            Ok(Some(run)) => Check::warn(
                check,
                format!("{} {} ago{}: {}", run.state, age_text(run.age), run.where_text(), run.error),
                if run.hint.is_empty() { "See backstop.job_runs for the run's error.".to_string() } else { run.hint },
            ),
            Ok(None) => Check::warn(
                check,
                "has never run: no restore of this kind has been tested",
                format!("Run it now (SELECT * FROM backstop.run_job('{kind}')) and schedule it."),
            ),
            Err(e) => Check::fail(
                check,
                format!("could not read backstop.job_runs: {e}"),
                "Check the extension's installation.",
            ),
        });
    }
    checks
}
