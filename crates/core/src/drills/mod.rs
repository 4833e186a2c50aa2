//! Restore drills that need only the repository (the ones that need a server live in the
//! extension and call back into this crate). Each returns what it compared, so a pass says what
//! was proven and a failure says what broke.

pub mod logical;
pub mod pitr;
pub mod scratch;

use rand::seq::SliceRandom;
use serde::Serialize;

use crate::backups::verify;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::schedule::job::WalFetchArgs;
use crate::wal::{self, WalFileKind};

#[derive(Debug, Clone, Serialize)]
pub struct WalDrill {
    pub backup: String,
    pub from_segment: String,
    pub newest_segment: String,
    /// Segments from the backup's start to the newest, all present.
    pub segments_in_chain: u64,
    /// Segments fetched and decoded through every checksum.
    pub fetched: Vec<String>,
    pub bytes: u64,
}

/// The `wal_fetch` drill: the chain of segments from the newest valid base backup's start to the
/// newest archived segment has no gap, and the newest segments plus a random sample of older
/// ones fetch and decode through every checksum. Fails naming the first problem.
pub async fn wal_fetch(repository: &Repository, args: &WalFetchArgs) -> Result<WalDrill> {
    let fail = |message: String, hint: &str| Error::Job { message, hint: hint.to_string() };
    let backups = verify::list_backups(repository).await?;
    let newest = backups.iter().rev().find(|b| b.verified()).and_then(|b| b.manifest.clone()).ok_or_else(|| {
        fail(
            "the repository holds no valid base backup to replay WAL from".into(),
            "Take a base backup (SELECT * FROM backstop.base_backup()) and run the drill again.",
        )
    })?;
    let segment_size = newest.wal_segment_size;
    let first = newest.start_lsn.segment(segment_size);
    let archived = verify::archived_wal(repository).await?;
    let chain: Vec<&wal::WalFileName> = archived
        .iter()
        .map(|a| &a.name)
        .filter(|n| n.kind == WalFileKind::Segment)
        .filter(|n| n.position(segment_size).is_some_and(|(tli, number)| tli >= newest.timeline && number >= first))
        .collect();
    let start_name = wal::segment_name(newest.timeline, first, segment_size);
    if !chain.iter().any(|n| n.name == start_name) {
        return Err(fail(
            format!("segment {start_name}, where backup {} starts, is not in the repository", newest.id),
            "The backup cannot be restored without it: take a new base backup, and check archiving (SELECT * FROM backstop.doctor()).",
        ));
    }
    if let Some(gap) = wal::find_gaps(chain.iter().copied(), segment_size).first() {
        return Err(fail(
            format!(
                "WAL after backup {} has a gap: {} segment(s) from {} to {} are missing on timeline {}",
                newest.id, gap.count, gap.first_missing, gap.last_missing, gap.timeline
            ),
            "Recovery cannot pass the gap: take a new base backup now, and find why archiving skipped segments.",
        ));
    }
    let newest_segment = chain.last().map(|n| n.name.clone()).unwrap_or_else(|| start_name.clone());
    let mut picked: Vec<&wal::WalFileName> = chain.iter().rev().take(args.newest).copied().collect();
    let older: Vec<&wal::WalFileName> = chain.iter().rev().skip(args.newest).copied().collect();
    picked.extend(older.choose_multiple(&mut rand::thread_rng(), args.sample).copied());
    let mut fetched = Vec::new();
    let mut bytes = 0;
    for name in picked {
        let verified = repository
            .verify(&crate::layout::wal(name))
            .await
            .map_err(|e| fail(format!("segment {} does not fetch: {e}", name.name), e.hint()))?;
        bytes += verified.trailer().object_len();
        fetched.push(name.name.clone());
    }
    Ok(WalDrill {
        backup: newest.id.to_string(),
        from_segment: start_name,
        newest_segment,
        segments_in_chain: chain.len() as u64,
        fetched,
        bytes,
    })
}
