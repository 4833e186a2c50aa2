//! Planning a recovery to a target: which base backup, whether the archive reaches the target,
//! and how much WAL to fetch. One implementation for the `table_recover` job, `backstop restore`
//! and `backstop recover-table`.
//!
//! Invariants:
//! - A target the archive cannot reach (before the backup's end, after the last commit archived,
//!   on a timeline nothing reaches) is refused here, with the window, before anything is written.
//! - The WAL fetched for a time target ends with the segment after the one holding the first
//!   commit past the target (where replay stops; its record may continue there), found by reading
//!   the WAL, never by a fixed count of segments.

use crate::backups::restore::{self, RecoveryTarget};
use crate::backups::verify::{self, ArchivedWal, BackupStatus};
use crate::backups::{window, BackupId, BackupManifest};
use crate::error::Result;
use crate::repository::{CancellationToken, Repository};
use crate::wal::events::PgTime;

/// A checked recovery: the backup to restore and the archive's WAL files.
pub struct Plan {
    pub manifest: BackupManifest,
    pub backups: Vec<BackupStatus>,
    pub wal_files: Vec<ArchivedWal>,
}

/// Picks the newest backup that ends before `target` (or `requested`) and checks that the archive
/// reaches the target from it (time and LSN targets; the others are checked by PostgreSQL).
pub async fn plan(repository: &Repository, requested: Option<&BackupId>, target: &RecoveryTarget) -> Result<Plan> {
    let backups = verify::list_backups(repository).await?;
    let manifest = restore::choose_backup(&backups, requested, target)?.clone();
    let wal_files = verify::archived_wal(repository).await?;
    if matches!(target, RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_)) {
        let segment_size = manifest.wal_segment_size;
        let parents = window::timeline_parents(repository, &wal_files).await;
        let mut parts = window::recovery_window(&backups, &wal_files, segment_size, None, &parents);
        window::read_commit_times(repository, &mut parts, segment_size).await?;
        window::check_target(&parts, &manifest, target)?;
    }
    Ok(Plan { manifest, backups, wal_files })
}

impl Plan {
    /// The last WAL segment number a recovery to `target` needs (u64::MAX: all there is).
    pub async fn last_segment(&self, repository: &Repository, target: &RecoveryTarget) -> Result<u64> {
        let segment_size = self.manifest.wal_segment_size;
        Ok(match target {
            RecoveryTarget::Lsn(lsn) => lsn.segment(segment_size) + 1,
            RecoveryTarget::Time(time) => {
                let segments = super::segments_along(&self.wal_files, self.manifest.timeline, &[], segment_size);
                let backup_start = self.manifest.start_lsn.segment(segment_size);
                let from = segments
                    .iter()
                    .position(|s| s.position(segment_size).is_some_and(|(_, n)| n >= backup_start))
                    .unwrap_or(0);
                let until = PgTime::from_unix_seconds(crate::time::unix_seconds(*time));
                let index = super::start_index(repository, &segments[from..], until, segment_size).await?;
                let range =
                    super::WalRange { segments: &segments, from: from + index, until, until_lsn: None, segment_size };
                let read =
                    super::read_events(repository, range, &CancellationToken::new(), &mut |_, _| {}, &mut |_| {})
                        .await?;
                read.last_segment
                    .filter(|_| read.reached_until)
                    .and_then(|name| segments.iter().find(|s| s.name == name))
                    .and_then(|segment| segment.position(segment_size))
                    .map_or(u64::MAX, |(_, n)| n + 1)
            }
            RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) | RecoveryTarget::Latest | RecoveryTarget::Immediate => {
                u64::MAX
            }
        })
    }
}
