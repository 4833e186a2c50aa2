//! The `expire` job: the retention policy of its args applied to the repository (the math and the
//! deletion order live in `backstop_core::expire`). Runs in a job worker holding the base-backup
//! lock, so no backup can be writing packs or reusing an older backup's chunks meanwhile.

use std::time::SystemTime;

use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::ExpireArgs;
use backstop_core::Error;

use crate::backups::worker::{release_backup_lock, try_backup_lock};
use crate::jobs::phase;
use crate::jobs::JobStatus;
use crate::{io, repo};

/// What an expire run removed (or, dry, would remove) and kept.
#[derive(serde::Serialize)]
pub struct ExpireOutcome {
    pub dry_run: bool,
    /// doctor()'s deletion check tells removals of this repository from damage.
    pub repository: String,
    pub bytes: u64,
    pub backups_removed: usize,
    pub snapshots_removed: usize,
    pub wal_removed: usize,
    pub packs_removed: usize,
    pub kept_backups: Vec<(String, Vec<&'static str>)>,
    pub kept_snapshots: usize,
    pub held_back: Vec<String>,
    pub removals: Vec<backstop_core::expire::Removal>,
}

pub fn run(job_id: i64, args: &ExpireArgs, status: &mut JobStatus) -> Result<ExpireOutcome, Error> {
    if !try_backup_lock()? {
        return Err(Error::Busy {
            message: "a base backup is running; expire waits for it to end (a running backup may still reference what expire would remove)".into(),
            hint: "Run expire again once the base backup ended (schedules retry on their next run).".into(),
        });
    }
    phase(status, "planning");
    let repository = repo::open_checked()?;
    // Across servers writing this namespace: a dry run removes nothing and needs no lease.
    let lease = if args.dry_run { None } else { Some(repo::HeldLease::acquire(&repository, "expire", job_id)?) };
    let plan = io::block_on(backstop_core::expire::plan(&repository, args, SystemTime::now()))?;
    let removed = match &lease {
        None => 0,
        Some(lease) => {
            phase(status, "removing");
            lease.check()?;
            let cancel = CancellationToken::new();
            io::block_on(backstop_core::expire::apply(&repository, &plan, &cancel))?
        }
    };
    drop(lease);
    release_backup_lock();
    Ok(ExpireOutcome {
        dry_run: args.dry_run,
        repository: repository.describe(),
        bytes: if args.dry_run { plan.bytes() } else { removed },
        backups_removed: plan.count("backup"),
        snapshots_removed: plan.count("snapshot") + plan.count("incomplete snapshot"),
        wal_removed: plan.count("wal"),
        packs_removed: plan.count("pack"),
        kept_backups: plan.kept_backups,
        kept_snapshots: plan.kept_snapshots,
        held_back: plan.held_back,
        removals: plan.removals,
    })
}

/// The `expire` job, run in a worker (registered in [`crate::JOBS`]).
pub struct ExpireJob;

impl crate::jobs::Job for ExpireJob {
    type Args = backstop_core::schedule::job::ExpireArgs;
    type Outcome = ExpireOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::Expire;
    const NEEDS_OPERATOR: bool = true;
    const READ_ONLY: bool = false;

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        args: Self::Args,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<ExpireOutcome, backstop_core::Error> {
        run(request.id, &args, status)
    }
}
