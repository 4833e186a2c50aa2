//! The `wal_fetch` drill, run as a job: it fetches archived WAL for real (the newest segments and
//! a sample) and checks continuity, leaving nothing behind.

use backstop_core::schedule::job::WalFetchArgs;
use backstop_core::Error;

use crate::jobs::phase;
use crate::jobs::JobStatus;
use crate::{io, repo};

/// What a `wal_fetch` drill fetched and checked.
#[derive(serde::Serialize)]
pub struct WalFetchOutcome {
    pub drill: &'static str,
    #[serde(flatten)]
    pub report: backstop_core::drills::WalDrill,
}

/// `wal_fetch`: see `backstop_core::drills::wal_fetch`.
pub fn wal_fetch(args: &WalFetchArgs, status: &mut JobStatus) -> Result<WalFetchOutcome, Error> {
    phase(status, "fetching WAL");
    let repository = repo::open_checked()?;
    let report = io::block_on(backstop_core::drills::wal_fetch(&repository, args))?;
    Ok(WalFetchOutcome { drill: "wal_fetch", report })
}

/// The `wal_fetch` job, run in a worker (registered in [`crate::JOBS`]).
pub struct WalFetchDrill;

impl crate::jobs::Job for WalFetchDrill {
    type Args = backstop_core::schedule::job::WalFetchArgs;
    type Outcome = WalFetchOutcome;
    const KIND: backstop_core::schedule::job::JobKind = backstop_core::schedule::job::JobKind::WalFetch;
    const NEEDS_OPERATOR: bool = false;
    const READ_ONLY: bool = true;
    /// Segment names and counts only.
    const RESULT_NAMES_NOTHING: bool = true;

    fn run(
        &self,
        request: &crate::jobs::JobRequest,
        args: Self::Args,
        status: &mut crate::jobs::JobStatus,
    ) -> Result<WalFetchOutcome, backstop_core::Error> {
        let _ = request;
        wal_fetch(&args, status)
    }
}
