//! The `verify` job: every manifest authenticated and checked, a random share (`sample`, all by
//! default) of the packs the backups need and of the WAL read back through every checksum, every
//! backup's WAL checked for gaps; a damaged pack is recorded so that no later backup reuses it.
//! pgBackRest's verify reads everything, by hand; this one runs on a schedule at the cost its
//! sample sets:
//!
//! ```sql
//! SELECT * FROM backstop.schedule('verify-weekly', '0 4 * * 0', 'verify', '{"sample": 0.05}');
//! SELECT * FROM backstop.run_job('verify');
//! ```
//!
//! Damage fails the run, its error naming what was found; a clean run records what it read.

use std::time::Duration;

use backstop_core::backups::verify::{self, VerifyProgress, VerifyReport};
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::{JobKind, JobSpec, VerifyArgs};
use backstop_core::Error;

use crate::jobs::{self, Job, JobRequest, JobStatus};
use crate::{io, repo};

/// The `verify` job (registered in [`crate::JOBS`]).
pub struct VerifyJob;

impl Job for VerifyJob {
    fn kind(&self) -> JobKind {
        JobKind::Verify
    }

    fn run(&self, _request: &JobRequest, spec: &JobSpec, status: &mut JobStatus) -> Result<serde_json::Value, Error> {
        let JobSpec::Verify(args) = spec else {
            return Err(jobs::spec_mismatch(self.kind(), spec));
        };
        run(args, status)
    }
}

fn run(args: &VerifyArgs, status: &mut JobStatus) -> Result<serde_json::Value, Error> {
    status.phase = format!("verifying the repository (sample {})", args.sample);
    jobs::write_status(status);
    let repository = repo::open_checked()?;
    let progress = VerifyProgress::default();
    let cancel = CancellationToken::new();
    let report = io::block_on(async {
        let work = verify::verify_sample(&repository, args.sample, true, args.parallel, &progress, &cancel);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    status.files_total = progress.packs_total.load(std::sync::atomic::Ordering::Relaxed);
                    status.files_done = progress.packs_done.load(std::sync::atomic::Ordering::Relaxed);
                    status.bytes_done = progress.bytes_done.load(std::sync::atomic::Ordering::Relaxed);
                    jobs::write_status(status);
                }
            }
        }
    })?;
    let summary = summary(&report);
    if report.ok() {
        return Ok(summary);
    }
    Err(Error::Job { message: damage_text(&report), hint: HINT.into() })
}

const HINT: &str = "Take a new full base backup now (SELECT * FROM backstop.base_backup(kind => 'full')): damaged packs are recorded and never reused. Then find out what damaged the repository (its access log, lifecycle rules, the disk).";

/// What the run read and found, for the job history.
fn summary(report: &VerifyReport) -> serde_json::Value {
    serde_json::json!({
        "ok": report.ok(),
        "sample": report.sample,
        "backups": report.backups.len(),
        "backups_failed": report.backups.iter().filter(|b| !b.ok).count(),
        "packs_total": report.packs_total,
        "packs_checked": report.packs_checked,
        "wal_total": report.wal_total,
        "wal_checked": report.wal_checked,
        "bytes": report.bytes_checked,
        "damage_recorded": report.damage_recorded,
        "damage_not_recorded": report.damage_not_recorded,
    })
}

/// The run's error: how much is damaged and the first problems.
fn damage_text(report: &VerifyReport) -> String {
    let failed: Vec<_> = report.backups.iter().filter(|b| !b.ok).collect();
    let mut problems: Vec<String> =
        failed.iter().flat_map(|b| b.problems.iter().map(move |p| format!("{}: {p}", b.id))).collect();
    problems.extend(report.wal_damaged.iter().cloned());
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    format!(
        "verify found damage: {} of {} backups fail, {} WAL file(s) do not read back, {} damaged pack(s) recorded (read {} of {} packs, {} of {} WAL files); first: {}",
        failed.len(),
        report.backups.len(),
        report.wal_damaged.len(),
        report.damage_recorded.len(),
        report.packs_checked,
        report.packs_total,
        report.wal_checked,
        report.wal_total,
        shown.join("; ")
    )
}
