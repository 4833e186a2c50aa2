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
use backstop_core::schedule::job::{JobKind, VerifyArgs};
use backstop_core::Error;

use crate::jobs::{self, Job, JobRequest, JobStatus};
use crate::{io, repo};

/// The `verify` job (registered in [`crate::JOBS`]).
pub struct VerifyJob;

impl Job for VerifyJob {
    type Args = VerifyArgs;
    type Outcome = VerifyOutcome;
    const KIND: JobKind = JobKind::Verify;
    /// It reads all of the repository and writes damage records into it.
    const NEEDS_OPERATOR: bool = true;
    const READ_ONLY: bool = false;

    fn run(&self, _request: &JobRequest, args: VerifyArgs, status: &mut JobStatus) -> Result<VerifyOutcome, Error> {
        run(&args, status)
    }
}

fn run(args: &VerifyArgs, status: &mut JobStatus) -> Result<VerifyOutcome, Error> {
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
#[derive(serde::Serialize)]
pub struct VerifyOutcome {
    pub ok: bool,
    pub sample: f64,
    pub backups: usize,
    pub backups_failed: usize,
    pub packs_total: u64,
    pub packs_checked: u64,
    pub wal_total: u64,
    pub wal_checked: u64,
    pub bytes: u64,
    pub damage_recorded: Vec<String>,
    pub damage_not_recorded: Option<String>,
}

fn summary(report: &VerifyReport) -> VerifyOutcome {
    VerifyOutcome {
        ok: report.ok(),
        sample: report.sample,
        backups: report.backups.len(),
        backups_failed: report.backups.iter().filter(|b| !b.ok).count(),
        packs_total: report.packs_total,
        packs_checked: report.packs_checked,
        wal_total: report.wal_total,
        wal_checked: report.wal_checked,
        bytes: report.bytes_checked,
        damage_recorded: report.damage_recorded.clone(),
        damage_not_recorded: report.damage_not_recorded.clone(),
    }
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
