//! What the scheduler does at a tick, decided from plain values so it is unit-tested with a test
//! clock instead of minutes of real waiting:
//!
//! - [`due`]: is a schedule's next run due, and was it missed? Runs that fell due while the server
//!   was down (or the worker was busy) collapse into one: the newest is run if it is within the
//!   grace period, else they are recorded as missed. Either way the next run is computed from now,
//!   so a scheduler never loses a run silently and never fires a backlog.
//! - [`on_busy`]: the overlap policy when the previous run of the same schedule still runs.
//! - [`retry_at`]: exponential backoff for a failed run's retries.

use std::time::{Duration, SystemTime};

use super::{Cron, Zone};
use crate::error::{Error, Result};

/// What to do with a run that falls due while the previous one of its schedule still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Record the run as skipped (pg_cron's only behaviour, and the default).
    Skip,
    /// Start it as soon as the previous one ends (at most one waits).
    Queue,
}

/// Where a schedule runs: on the primary (the default), on standbys only, or on both. Nothing
/// runs on a standby unless its schedule says so, and only jobs that write nothing to the
/// database or the repository may (a standby's tables are read-only, and a standby must not
/// race the primary's backups and retention over the repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    Primary,
    Standby,
    Any,
}

impl RunsOn {
    pub fn parse(text: &str) -> Result<RunsOn> {
        match text {
            "primary" => Ok(RunsOn::Primary),
            "standby" => Ok(RunsOn::Standby),
            "any" => Ok(RunsOn::Any),
            other => Err(Error::InvalidInput(format!(
                "runs_on \"{}\" is not a place; use 'primary' (the default), 'standby' (standbys only) or 'any' (the primary and every standby)",
                other.escape_debug()
            ))),
        }
    }

    /// Checks that a `kind` job may run where this says: off the primary only a job that writes
    /// nothing (`read_only`, its job says).
    pub fn check(self, kind: crate::schedule::job::JobKind, read_only: bool) -> Result<RunsOn> {
        if self != RunsOn::Primary && !read_only {
            return Err(Error::InvalidInput(format!(
                "the {} job writes to the database or the repository, so it runs only on the primary; on a standby only the drills wal_fetch and pitr may run",
                kind.as_str()
            )));
        }
        Ok(self)
    }

    /// Does a schedule with this setting run on a server that is (or is not) in recovery?
    pub fn runs_here(self, in_recovery: bool) -> bool {
        match self {
            RunsOn::Primary => !in_recovery,
            RunsOn::Standby => in_recovery,
            RunsOn::Any => true,
        }
    }
}

impl Overlap {
    pub fn parse(text: &str) -> Result<Overlap> {
        match text {
            "skip" => Ok(Overlap::Skip),
            "queue" => Ok(Overlap::Queue),
            other => Err(Error::InvalidInput(format!(
                "overlap \"{}\" is not a policy; use 'skip' (a run due while the previous one still runs is skipped) or 'queue' (it starts when the previous one ends)",
                other.escape_debug()
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }
}

/// The outcome of checking one schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing to do before `next`.
    NotYet,
    /// Run now for the occurrence `scheduled_for`; `missed` earlier occurrences were passed over
    /// (the server was down) and are recorded as missed.
    Run { scheduled_for: SystemTime, missed: u32, next: Option<SystemTime> },
    /// The newest due occurrence is older than the grace period: record `count` runs as missed,
    /// the newest at `newest`, and wait for `next`.
    Missed { newest: SystemTime, count: u32, next: Option<SystemTime> },
}

/// Stop counting missed occurrences here (a minutely schedule and a server down for a month).
const MAX_COUNTED: u32 = 100_000;

/// Is the run planned for `next_run_at` due at `now`?
pub fn due(cron: &Cron, zone: &Zone, next_run_at: SystemTime, now: SystemTime, grace: Duration) -> Due {
    if next_run_at > now {
        return Due::NotYet;
    }
    let mut newest = next_run_at;
    let mut count = 1u32;
    while let Some(following) = zone.next_run(cron, newest).filter(|t| *t <= now) {
        newest = following;
        count += 1;
        if count >= MAX_COUNTED {
            break;
        }
    }
    let next = zone.next_run(cron, now.max(newest));
    if now.duration_since(newest).unwrap_or_default() <= grace {
        Due::Run { scheduled_for: newest, missed: count - 1, next }
    } else {
        Due::Missed { newest, count, next }
    }
}

/// What happens to a due run when the previous run of its schedule has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Start,
    Skip,
    Queue,
}

pub fn on_busy(policy: Overlap, previous_running: bool, already_queued: bool) -> Busy {
    match (previous_running, policy) {
        (false, _) => Busy::Start,
        (true, Overlap::Skip) => Busy::Skip,
        // One waiting run stands for all: a second one due meanwhile is skipped.
        (true, Overlap::Queue) if already_queued => Busy::Skip,
        (true, Overlap::Queue) => Busy::Queue,
    }
}

/// When retry `attempt` (2 for the first retry) of a run that failed at `failed_at` starts:
/// `backoff`, doubled for every further attempt, capped at a day.
pub fn retry_at(failed_at: SystemTime, attempt: u32, backoff: Duration) -> SystemTime {
    let doublings = attempt.saturating_sub(2).min(16);
    let delay = backoff.saturating_mul(1 << doublings).min(Duration::from_secs(86_400));
    failed_at + delay
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::parse_time;

    fn t(text: &str) -> SystemTime {
        parse_time(text).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_run_is_due_at_its_minute_and_not_before() {
        let cron = Cron::parse("30 2 * * *").unwrap();
        let utc = Zone::utc();
        let planned = t("2026-11-22 02:30:00");
        assert_eq!(due(&cron, &utc, planned, t("2026-11-22 02:29:59"), HOUR), Due::NotYet);
        assert_eq!(
            due(&cron, &utc, planned, t("2026-11-22 02:30:01"), HOUR),
            Due::Run { scheduled_for: planned, missed: 0, next: Some(t("2026-11-23 02:30:00")) }
        );
    }

    #[test]
    fn runs_missed_while_down_run_once_within_grace_else_are_recorded() {
        let cron = Cron::parse("0 * * * *").unwrap();
        let utc = Zone::utc();
        // Down from 09:50 to 12:20: 10:00, 11:00 and 12:00 fell due. 12:00 is within the grace.
        assert_eq!(
            due(&cron, &utc, t("2026-11-22 10:00:00"), t("2026-11-22 12:20:00"), HOUR),
            Due::Run { scheduled_for: t("2026-11-22 12:00:00"), missed: 2, next: Some(t("2026-11-22 13:00:00")) }
        );
        // With a 10-minute grace the newest is too old: all three are missed, none runs.
        assert_eq!(
            due(&cron, &utc, t("2026-11-22 10:00:00"), t("2026-11-22 12:20:00"), Duration::from_secs(600)),
            Due::Missed { newest: t("2026-11-22 12:00:00"), count: 3, next: Some(t("2026-11-22 13:00:00")) }
        );
        // A nightly run missed by a day-long outage: once, not twice.
        let nightly = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(
            due(&nightly, &utc, t("2026-11-21 02:30:00"), t("2026-11-22 02:40:00"), HOUR),
            Due::Run { scheduled_for: t("2026-11-22 02:30:00"), missed: 1, next: Some(t("2026-11-23 02:30:00")) }
        );
    }

    #[test]
    fn overlap_policy() {
        assert_eq!(on_busy(Overlap::Skip, false, false), Busy::Start);
        assert_eq!(on_busy(Overlap::Skip, true, false), Busy::Skip);
        assert_eq!(on_busy(Overlap::Queue, true, false), Busy::Queue);
        assert_eq!(on_busy(Overlap::Queue, true, true), Busy::Skip);
        assert_eq!(on_busy(Overlap::Queue, false, true), Busy::Start);
        assert!(Overlap::parse("wait").unwrap_err().to_string().contains("'skip'"));
    }

    #[test]
    fn retries_back_off_exponentially_and_stop_at_a_day() {
        let failed = t("2026-11-22 00:00:00");
        let backoff = Duration::from_secs(60);
        assert_eq!(retry_at(failed, 2, backoff), failed + Duration::from_secs(60));
        assert_eq!(retry_at(failed, 3, backoff), failed + Duration::from_secs(120));
        assert_eq!(retry_at(failed, 5, backoff), failed + Duration::from_secs(480));
        assert_eq!(retry_at(failed, 40, backoff), failed + Duration::from_secs(86_400));
    }

    #[test]
    fn standbys_run_only_what_says_so_and_only_read_only_jobs() {
        use crate::schedule::job::JobKind;
        assert!(RunsOn::Primary.runs_here(false) && !RunsOn::Primary.runs_here(true));
        assert!(RunsOn::Standby.runs_here(true) && !RunsOn::Standby.runs_here(false));
        assert!(RunsOn::Any.runs_here(true) && RunsOn::Any.runs_here(false));
        assert!(RunsOn::Standby.check(JobKind::WalFetch, true).is_ok());
        assert!(RunsOn::Any.check(JobKind::Pitr, true).is_ok());
        for kind in [JobKind::BaseBackup, JobKind::Expire, JobKind::Snapshot, JobKind::SnapshotRestore] {
            let error = RunsOn::Standby.check(kind, false).unwrap_err().to_string();
            assert!(error.contains("the ") && error.contains(kind.as_str()), "{error}");
            assert!(error.contains("runs only on the primary"), "{error}");
            assert!(RunsOn::Primary.check(kind, false).is_ok());
        }
        assert!(RunsOn::parse("replica").unwrap_err().to_string().contains("'standby'"));
    }
}
