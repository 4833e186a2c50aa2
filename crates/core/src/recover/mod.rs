//! Recovering one table as it was: finding when it changed ([`history`]), from archived WAL read
//! in order along a timeline and its ancestors ([`segments_along`], [`read_events`]).
//!
//! Invariants:
//! - Every segment is read through the repository's authenticated path; a segment that does not
//!   read is an error (a history with a silent hole would point the DBA at the wrong time).
//! - One segment in memory at a time; the reading stops at cancel between segments.

pub mod history;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::wal::events::{Decoder, Event, Found, PgTime};
use crate::wal::history::Switch;
use crate::wal::{WalFileKind, WalFileName};

/// The archived segments on the way to `timeline`'s WAL, in WAL order: each segment number from
/// the timeline that holds it for a recovery following `ancestors` (oldest first, as the
/// timeline's history file lists them) into `timeline`. The segment holding a switch point is
/// the child's (it holds the parent's WAL up to the switch, then the child's).
pub fn segments_along(
    wal_files: &[crate::backups::verify::ArchivedWal],
    timeline: u32,
    ancestors: &[Switch],
    segment_size: u32,
) -> Vec<WalFileName> {
    let seg = u64::from(segment_size);
    let owner = |number: u64| -> u32 {
        let end = (number + 1) * seg;
        ancestors.iter().find(|a| a.at.0 >= end).map_or(timeline, |a| a.parent)
    };
    let mut segments: Vec<(u64, WalFileName)> = wal_files
        .iter()
        .filter(|f| f.name.kind == WalFileKind::Segment)
        .filter_map(|f| f.name.position(segment_size).map(|(t, n)| (t, n, f.name.clone())))
        .filter(|(t, n, _)| owner(*n) == *t)
        .map(|(_, n, name)| (n, name))
        .collect();
    segments.sort_by_key(|(n, _)| *n);
    segments.into_iter().map(|(_, name)| name).collect()
}

/// The first commit time in a segment, if it holds a commit.
async fn first_commit(repository: &Repository, name: &WalFileName, segment_size: u32) -> Result<Option<PgTime>> {
    let bytes = repository.get_bytes(&crate::layout::wal(name)).await?;
    let mut first = None;
    Decoder::new(segment_size).segment(name, &bytes, &mut |found| {
        if let (None, Event::Xact(end)) = (first, &found.event) {
            first = Some(end.time);
        }
        Ok(())
    })?;
    Ok(first)
}

/// Where to start reading for changes committed at or after `since`: the index of the last
/// segment whose first commit is not after `since` (binary search: about log2(n) segments read).
/// Segments without a commit count as before `since`, so the start is never too late.
pub async fn start_index(
    repository: &Repository,
    segments: &[WalFileName],
    since: PgTime,
    segment_size: u32,
) -> Result<usize> {
    let (mut lo, mut hi) = (0usize, segments.len());
    // Invariant: segments before `lo` start at or before `since`; from `hi` on, after it.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_commit(repository, &segments[mid], segment_size).await? {
            Some(time) if time > since => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(lo.saturating_sub(1))
}

/// What [`read_events`] read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReadSummary {
    pub segments_read: u64,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    /// It stopped at a commit after `until` (rather than at the end of the archive).
    pub reached_until: bool,
    /// A gap in the archive stopped it before `until`: the segment missing.
    pub gap_at: Option<String>,
}

/// Which WAL [`read_events`] reads: `segments[from..]`, up to the first commit after `until`.
#[derive(Debug, Clone, Copy)]
pub struct WalRange<'a> {
    pub segments: &'a [WalFileName],
    pub from: usize,
    pub until: PgTime,
    pub segment_size: u32,
}

/// Reads the range's segments in order, handing every event to `each`, until the first commit
/// after `until` (not handed out) or the end. `progress(read, total)` is called per segment.
pub async fn read_events(
    repository: &Repository,
    range: WalRange<'_>,
    cancel: &CancellationToken,
    progress: &mut (dyn FnMut(usize, usize) + Send),
    each: &mut (dyn FnMut(&Found) + Send),
) -> Result<ReadSummary> {
    let WalRange { segments, from, until, segment_size } = range;
    let mut decoder = Decoder::new(segment_size);
    let mut summary = ReadSummary::default();
    let mut previous: Option<u64> = None;
    let total = segments.len().saturating_sub(from);
    for (index, name) in segments.iter().enumerate().skip(from) {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (_, number) = name.position(segment_size).unwrap_or_default();
        if previous.is_some_and(|p| p + 1 != number) {
            summary.gap_at = Some(crate::wal::segment_name(name.timeline, previous.unwrap_or(0) + 1, segment_size));
            break;
        }
        previous = Some(number);
        let bytes = repository.get_bytes(&crate::layout::wal(name)).await?;
        summary.segments_read += 1;
        summary.first_segment.get_or_insert_with(|| name.name.clone());
        summary.last_segment = Some(name.name.clone());
        let mut stop = false;
        decoder.segment(name, &bytes, &mut |found| {
            if stop {
                return Ok(());
            }
            if let Event::Xact(end) = &found.event {
                if end.time > until {
                    stop = true;
                    return Ok(());
                }
            }
            each(&found);
            Ok(())
        })?;
        progress(index - from + 1, total);
        if stop {
            summary.reached_until = true;
            break;
        }
    }
    Ok(summary)
}
