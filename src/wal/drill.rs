//! The `wal_fetch` drill, run as a job: it fetches archived WAL for real (the newest segments and
//! a sample) and checks continuity, leaving nothing behind.

use backstop_core::schedule::job::WalFetchArgs;
use backstop_core::Error;

use crate::jobs::phase;
use crate::jobs::JobStatus;
use crate::{io, repo};

/// `wal_fetch`: see `backstop_core::drills::wal_fetch`.
pub fn wal_fetch(args: &WalFetchArgs, status: &mut JobStatus) -> Result<serde_json::Value, Error> {
    phase(status, "fetching WAL");
    let repository = repo::open_checked()?;
    let report = io::block_on(backstop_core::drills::wal_fetch(&repository, args))?;
    let mut value = serde_json::to_value(&report).unwrap_or_default();
    value["drill"] = "wal_fetch".into();
    Ok(value)
}

/// The `wal_fetch` job, run in a worker (registered in [`crate::JOBS`]).
pub struct WalFetchDrill;

impl crate::jobs::Job for WalFetchDrill {
    fn kind(&self) -> backstop_core::schedule::job::JobKind {
        backstop_core::schedule::job::JobKind::WalFetch
    }

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        spec: &backstop_core::schedule::job::JobSpec,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<serde_json::Value, backstop_core::Error> {
        let backstop_core::schedule::job::JobSpec::WalFetch(args) = spec else {
            return Err(crate::jobs::spec_mismatch(self.kind(), spec));
        };
        let _ = request;
        wal_fetch(args, status)
    }
}
