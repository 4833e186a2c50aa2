//! Recovering one table as it was: finding when it changed ([`history`]), from archived WAL read
//! in order along a timeline and its ancestors ([`segments_along`], [`read_events`]).
//!
//! Invariants:
//! - Every segment is read through the repository's authenticated path; a segment that does not
//!   read is an error (a history with a silent hole would point the DBA at the wrong time).
//! - One segment in memory at a time; the reading stops at cancel between segments.

pub mod fast_path;
pub mod history;
pub mod partial;
pub mod plan;

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

/// Segments read at most, forward from a probe, looking for a commit (a bulk load writes many
/// segments without one).
const MOST_SEGMENTS_PER_PROBE: usize = 16;

/// The time of the first commit at or after the start of `segments[index]`, reading forward at
/// most [`MOST_SEGMENTS_PER_PROBE`] segments; None when none was found that far.
async fn first_commit_from(
    repository: &Repository,
    segments: &[WalFileName],
    index: usize,
    segment_size: u32,
) -> Result<Option<PgTime>> {
    let mut decoder = Decoder::new(segment_size);
    for name in segments.iter().skip(index).take(MOST_SEGMENTS_PER_PROBE) {
        let bytes = repository.get_bytes(&crate::layout::wal(name)).await?;
        let mut first = None;
        decoder.segment(name, &bytes, &mut |found| {
            if let (None, Event::Xact(end)) = (first, &found.event) {
                first = Some(end.time);
            }
            Ok(())
        })?;
        if first.is_some() {
            return Ok(first);
        }
    }
    Ok(None)
}

/// Where to start reading for changes committed at or after `since`: the segment before the first
/// one from which the next commit is after `since` (binary search, each probe reading forward to
/// the next commit). A probe that finds no commit counts as after `since`, so the start is never
/// too late; a transaction that wrote rows before the segment where `since` falls and committed
/// after it is listed with the rows from there on only.
pub async fn start_index(
    repository: &Repository,
    segments: &[WalFileName],
    since: PgTime,
    segment_size: u32,
) -> Result<usize> {
    let (mut lo, mut hi) = (0usize, segments.len());
    // Invariant: from segments before `lo` the next commit is at or before `since`; from `hi` on,
    // after it (or unknown).
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_commit_from(repository, segments, mid, segment_size).await? {
            Some(time) if time <= since => lo = mid + 1,
            _ => hi = mid,
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

/// Which WAL [`read_events`] reads: `segments[from..]`, up to the first commit after `until`
/// (and, when `until_lsn` is given, the first record at or past it).
#[derive(Debug, Clone, Copy)]
pub struct WalRange<'a> {
    pub segments: &'a [WalFileName],
    pub from: usize,
    pub until: PgTime,
    pub until_lsn: Option<crate::wal::Lsn>,
    pub segment_size: u32,
}

/// Where a read of WAL up to `until` (a commit time) and `until_lsn` stops: at the first event
/// past either, which is not handed out.
#[derive(Debug, Clone, Copy)]
pub struct Until {
    pub time: PgTime,
    pub lsn: Option<crate::wal::Lsn>,
}

impl Until {
    /// Whether `found` is past the end.
    pub fn past(&self, found: &Found) -> bool {
        if self.lsn.is_some_and(|lsn| found.lsn >= lsn) {
            return true;
        }
        matches!(&found.event, Event::Xact(end) if end.time > self.time)
    }
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
    let WalRange { segments, from, until, until_lsn, segment_size } = range;
    let until = Until { time: until, lsn: until_lsn };
    let mut decoder = Decoder::new(segment_size);
    let mut summary = ReadSummary::default();
    let mut previous: Option<u64> = None;
    let total = segments.len().saturating_sub(from);
    // The next segments are fetched (read, authenticated, decompressed) on other tasks while this
    // one is decoded: at most READ_AHEAD segments in memory besides it.
    const READ_AHEAD: usize = 2;
    let mut ahead: std::collections::VecDeque<tokio::task::JoinHandle<Result<Vec<u8>>>> = Default::default();
    let fetch = |name: &WalFileName| {
        let (repository, path) = (repository.clone(), crate::layout::wal(name));
        tokio::spawn(async move { repository.get_bytes(&path).await })
    };
    for (index, name) in segments.iter().enumerate().skip(from) {
        while ahead.len() <= READ_AHEAD {
            match segments.get(index + ahead.len()) {
                Some(next) => ahead.push_back(fetch(next)),
                None => break,
            }
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (_, number) = name.position(segment_size).unwrap_or_default();
        if previous.is_some_and(|p| p + 1 != number) {
            summary.gap_at = Some(crate::wal::segment_name(name.timeline, previous.unwrap_or(0) + 1, segment_size));
            break;
        }
        previous = Some(number);
        let fetched = ahead.pop_front().ok_or(Error::Cancelled)?;
        let bytes = fetched.await.map_err(|e| Error::InvalidInput(format!("reading {} failed: {e}", name.name)))??;
        summary.segments_read += 1;
        summary.first_segment.get_or_insert_with(|| name.name.clone());
        summary.last_segment = Some(name.name.clone());
        let mut stop = false;
        decoder.segment(name, &bytes, &mut |found| {
            if stop {
                return Ok(());
            }
            if until.past(&found) {
                stop = true;
                return Ok(());
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
    for task in ahead {
        task.abort();
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::records::build;

    /// Segments 1 to 8 of timeline 1, each with one record: a commit at `time` or, for None, a
    /// record of other work.
    async fn archive(times: &[Option<i64>]) -> (Repository, Vec<WalFileName>) {
        let seg: usize = 16 << 20;
        let store: std::sync::Arc<dyn crate::ObjectStore> =
            std::sync::Arc::new(crate::store::memory::MemoryStore::new());
        let codec = crate::codec::CodecSettings::new(crate::codec::Compression::None, vec![]);
        let repository = Repository::new(store, "c1", codec).unwrap().with_signer(crate::auth::SigningKey::generate());
        let mut names = Vec::new();
        for (index, time) in times.iter().enumerate() {
            let number = index as u64 + 1;
            let record = move |prev: u64| match time {
                Some(t) => {
                    build::record(prev, 700, crate::wal::events::RM_XACT_ID, 0, &build::main_data(&t.to_le_bytes()))
                }
                None => build::record(prev, 700, 10, 0, &build::main_data(&[0; 3])),
            };
            let (bytes, _) = build::segments(number * seg as u64, seg, 0xD110, &[&record]);
            let name = WalFileName::parse(&crate::wal::segment_name(1, number, seg as u32)).unwrap();
            repository
                .put_bytes(&crate::layout::wal(&name), bytes[0].clone().into(), crate::store::WriteMode::CreateNew)
                .await
                .unwrap();
            names.push(name);
        }
        (repository, names)
    }

    #[tokio::test]
    async fn the_start_is_found_across_segments_without_commits_and_never_too_late() {
        let seg = 16u32 << 20;
        let times = [Some(10), Some(20), None, None, None, None, Some(70), Some(80)];
        let (repository, names) = archive(&times).await;
        // Changes from 25 on: segment 2 (index 1) is the last from which the next commit is not
        // after 25; a bulk load without commits after it must not push the start past 70.
        assert_eq!(start_index(&repository, &names, PgTime(25), seg).await.unwrap(), 1);
        assert_eq!(start_index(&repository, &names, PgTime(5), seg).await.unwrap(), 0);
        assert_eq!(start_index(&repository, &names, PgTime(75), seg).await.unwrap(), 6);
        assert_eq!(start_index(&repository, &names, PgTime(1000), seg).await.unwrap(), 7);
        // Reading from there to 70 sees the commits 20 and 70 and stops before 80.
        let mut commits = Vec::new();
        let range = WalRange { segments: &names, from: 1, until: PgTime(70), until_lsn: None, segment_size: seg };
        let read = read_events(&repository, range, &CancellationToken::new(), &mut |_, _| {}, &mut |found| {
            if let Event::Xact(end) = &found.event {
                commits.push(end.time.0);
            }
        })
        .await
        .unwrap();
        assert_eq!(commits, vec![20, 70]);
        assert!(read.reached_until);
    }
}
