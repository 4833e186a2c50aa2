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

pub fn run(job_id: i64, args: &ExpireArgs, status: &mut JobStatus) -> Result<serde_json::Value, Error> {
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
    Ok(serde_json::json!({
        "dry_run": args.dry_run,
        "repository": repository.describe(),
        "bytes": if args.dry_run { plan.bytes() } else { removed },
        "backups_removed": plan.count("backup"),
        "snapshots_removed": plan.count("snapshot") + plan.count("incomplete snapshot"),
        "wal_removed": plan.count("wal"),
        "packs_removed": plan.count("pack"),
        "kept_backups": plan.kept_backups,
        "kept_snapshots": plan.kept_snapshots,
        "held_back": plan.held_back,
        "removals": plan.removals,
    }))
}

/// The `expire` job, run in a worker (registered in [`crate::JOBS`]).
pub struct ExpireJob;

impl crate::jobs::Job for ExpireJob {
    fn kind(&self) -> backstop_core::schedule::job::JobKind {
        backstop_core::schedule::job::JobKind::Expire
    }

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        spec: &backstop_core::schedule::job::JobSpec,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<serde_json::Value, backstop_core::Error> {
        let backstop_core::schedule::job::JobSpec::Expire(args) = spec else {
            return Err(crate::jobs::spec_mismatch(self.kind(), spec));
        };
        run(request.id, args, status)
    }
}
