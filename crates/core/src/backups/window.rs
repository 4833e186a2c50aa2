//! "To which points in time can I restore right now?" Per timeline: stretches of WAL a restore
//! can replay, each starting where a verified base backup becomes consistent (or where the
//! timeline branched off a parent that is itself restorable up to that point), and ending at a
//! gap; every gap is a break.
//!
//! Invariants:
//! - Times come from the WAL itself, never from object modification dates: `from_time` is the
//!   first commit at or after the start, `to_time` the last commit before the end of the
//!   stretch's WAL, both read from authenticated segments ([`read_commit_times`]).
//! - A timeline above 1 is restorable only when a backup on it, or its parent (by its history
//!   file) restorable up to the switch point, reaches it.
//! - Reading is bounded: at most [`MOST_SEGMENTS_READ`] segments per end of each stretch.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::verify::{ArchivedWal, BackupStatus};
use super::{BackupId, BackupManifest, Lsn};
use crate::error::Result;
use crate::repository::Repository;
use crate::wal::events::{Decoder, Event};
use crate::wal::history::Switch;
use crate::wal::{self, WalFileKind, WalFileName};

/// Segments read at most at each end of a stretch looking for a commit.
pub const MOST_SEGMENTS_READ: u64 = 32;

/// A stretch of time one can recover to, or a break in the WAL.
#[derive(Debug, Clone, Serialize)]
pub struct WindowPart {
    pub timeline: u32,
    /// "restorable" or "break".
    pub status: &'static str,
    /// Where recovery becomes consistent: the end of the backup the stretch starts from, or the
    /// point where the timeline branched off its parent.
    pub from_lsn: Lsn,
    /// The end of the last commit record a restore can reach (the end of the stretch's WAL when
    /// it holds no commit).
    pub to_lsn: Lsn,
    /// Unix seconds: the first commit at or after `from_lsn` (before that is read: the backup's
    /// end).
    pub from_time: Option<f64>,
    /// Unix seconds: the last commit a restore can reach.
    pub to_time: Option<f64>,
    /// The end of the stretch's contiguous WAL.
    pub wal_end: Lsn,
    pub backup: Option<BackupId>,
    pub detail: String,
}

/// The stretches and breaks, without commit times yet ([`read_commit_times`] adds them).
/// `last_archived` is the WAL file this server archived last into this repository (when known):
/// segments up to it that the repository no longer holds are a break at the end, so a deleted
/// tail shows as a hole instead of a window that silently ends early. `parents` maps a timeline
/// to where it branched off (the last line of its history file).
pub fn recovery_window(
    backups: &[BackupStatus],
    wal_files: &[ArchivedWal],
    segment_size: u32,
    last_archived: Option<&WalFileName>,
    parents: &HashMap<u32, Switch>,
) -> Vec<WindowPart> {
    let seg = segment_size as u64;
    let mut per_timeline: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for file in wal_files.iter().filter(|f| f.name.kind == WalFileKind::Segment) {
        if let Some((timeline, number)) = file.name.position(segment_size) {
            per_timeline.entry(timeline).or_default().push(number);
        }
    }
    let verified: Vec<&BackupManifest> =
        backups.iter().filter(|b| b.verified()).filter_map(|b| b.manifest.as_ref()).collect();
    let mut parts: Vec<WindowPart> = Vec::new();
    // Timelines in ascending order: a parent's stretches are known before its children's.
    for (timeline, mut segments) in per_timeline {
        segments.sort_unstable();
        segments.dedup();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for n in segments {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == n => *end = n,
                _ => runs.push((n, n)),
            }
        }
        let mut reachable = false;
        for (index, &(first, last)) in runs.iter().enumerate() {
            if index > 0 {
                let (_, previous_end) = runs[index - 1];
                parts.push(WindowPart {
                    timeline,
                    status: "break",
                    from_lsn: Lsn((previous_end + 1) * seg),
                    to_lsn: Lsn(first * seg),
                    from_time: None,
                    to_time: None,
                    wal_end: Lsn(first * seg),
                    backup: None,
                    detail: format!(
                        "segments {} to {} are missing: no recovery across this point",
                        wal::segment_name(timeline, previous_end + 1, segment_size),
                        wal::segment_name(timeline, first - 1, segment_size)
                    ),
                });
                reachable = false;
            }
            let wal_end = Lsn((last + 1) * seg);
            let backup = verified
                .iter()
                .filter(|b| b.timeline == timeline)
                .filter(|b| b.start_lsn.segment(segment_size) >= first && b.stop_lsn.segment(segment_size) <= last)
                .min_by(|a, b| a.stop_lsn.cmp(&b.stop_lsn));
            let part = |status, from_lsn, from_time, backup: Option<BackupId>, detail| WindowPart {
                timeline,
                status,
                from_lsn,
                to_lsn: wal_end,
                from_time,
                to_time: None,
                wal_end,
                backup,
                detail,
            };
            // Branched off a parent restorable up to the switch point, inside this run.
            let from_parent = parents.get(&timeline).filter(|_| !reachable).and_then(|switch| {
                let in_run = (first..=last).contains(&switch.at.segment(segment_size));
                let parent = parts.iter().find(|p| {
                    p.timeline == switch.parent
                        && p.status == "restorable"
                        && p.from_lsn <= switch.at
                        && p.wal_end.0 >= switch.at.segment(segment_size) * seg
                })?;
                in_run.then(|| (switch, parent.backup.clone(), parent.from_time))
            });
            match (backup, from_parent) {
                (Some(backup), _) => {
                    parts.push(part(
                        "restorable",
                        backup.stop_lsn,
                        Some(backup.stop_time),
                        Some(backup.id.clone()),
                        format!("from the end of backup {} to the last commit archived", backup.id),
                    ));
                    reachable = true;
                }
                (None, Some((switch, parent_backup, _))) => {
                    let through = parent_backup.as_ref().map(|b| format!(" (backup {b})")).unwrap_or_default();
                    parts.push(part(
                        "restorable",
                        switch.at,
                        None,
                        parent_backup.clone(),
                        format!(
                            "timeline {timeline} from where it branched off timeline {} at {}, reached from it{through}",
                            switch.parent, switch.at
                        ),
                    ));
                    reachable = true;
                }
                (None, None) if reachable => {
                    // Still the stretch above: nothing to add.
                }
                (None, None) => {
                    let why = match parents.get(&timeline) {
                        Some(switch) => format!(
                            "no verified base backup on timeline {timeline}, and timeline {} does not reach its switch point {} with a backup",
                            switch.parent, switch.at
                        ),
                        None if timeline > 1 => format!(
                            "no verified base backup on timeline {timeline}, and its history file is not in the repository"
                        ),
                        None => "archived WAL with no verified base backup to start from".to_string(),
                    };
                    parts.push(part("break", Lsn(first * seg), None, None, why));
                }
            }
        }
    }
    parts.extend(missing_tail(wal_files, last_archived, segment_size));
    parts
}

/// The segments from the newest one the repository holds on the last archived file's timeline
/// up to that file, when the repository no longer holds them.
fn missing_tail(
    wal_files: &[ArchivedWal],
    last_archived: Option<&WalFileName>,
    segment_size: u32,
) -> Option<WindowPart> {
    let last = last_archived.filter(|name| name.kind == WalFileKind::Segment)?;
    let (timeline, number) = last.position(segment_size)?;
    let newest_held = wal_files
        .iter()
        .filter(|f| f.name.kind == WalFileKind::Segment)
        .filter_map(|f| f.name.position(segment_size))
        .filter(|(t, _)| *t == timeline)
        .map(|(_, n)| n)
        .max();
    let first_missing = match newest_held {
        Some(n) if n >= number => return None,
        Some(n) => n + 1,
        None => number,
    };
    let seg = segment_size as u64;
    Some(WindowPart {
        timeline,
        status: "break",
        from_lsn: Lsn(first_missing * seg),
        to_lsn: Lsn((number + 1) * seg),
        from_time: None,
        to_time: None,
        wal_end: Lsn(first_missing * seg),
        backup: None,
        detail: format!(
            "segments {} to {} were archived by this server but are gone from the repository (deleted?): recovery ends before them",
            wal::segment_name(timeline, first_missing, segment_size),
            last.name
        ),
    })
}

/// The direct parent of every timeline whose history file the repository holds (authenticated
/// reads, each capped). A history file that does not read or parse is left out: its timeline is
/// then reachable only from a backup of its own.
pub async fn timeline_parents(repository: &Repository, wal_files: &[ArchivedWal]) -> HashMap<u32, Switch> {
    let mut parents = HashMap::new();
    for file in wal_files.iter().filter(|f| f.name.kind == WalFileKind::History) {
        let Ok(bytes) = repository.get_bytes(&crate::layout::wal(&file.name)).await else { continue };
        let Ok(switches) = crate::wal::history::parse(&String::from_utf8_lossy(&bytes)) else { continue };
        if let Some(last) = switches.last() {
            parents.insert(file.name.timeline, *last);
        }
    }
    parents
}

/// Refuses, before anything is restored, a recovery target the archive cannot reach from
/// `backup`: a time after the last commit a restore reaches, an LSN past the end of the WAL that
/// follows the backup, or a backup whose WAL is not there at all. PostgreSQL would replay
/// everything and then refuse to start ("recovery ended before configured recovery target was
/// reached"); this says so at once, with the window. `parts` must hold commit times
/// ([`read_commit_times`]); a stretch whose end has no time is not checked by time.
pub fn check_target(
    parts: &[WindowPart],
    backup: &BackupManifest,
    target: &super::restore::RecoveryTarget,
) -> Result<()> {
    use super::restore::RecoveryTarget;
    // The stretches a recovery from this backup can follow: its own (the one its end lies in),
    // and those of later timelines that go on past its end.
    let own = parts.iter().find(|p| {
        p.status == "restorable"
            && p.timeline == backup.timeline
            && p.from_lsn <= backup.stop_lsn
            && backup.stop_lsn <= p.wal_end
    });
    let Some(own) = own else {
        return Err(crate::error::Error::InvalidInput(format!(
            "the WAL that follows backup {} (from {} on timeline {}) is not in the repository without a gap: it cannot be recovered; recovery_window() (or backstop wal list) shows what is",
            backup.id, backup.stop_lsn, backup.timeline
        )));
    };
    let reachable: Vec<&WindowPart> = parts
        .iter()
        .filter(|p| p.status == "restorable")
        .filter(|p| std::ptr::eq(*p, own) || (p.timeline > backup.timeline && p.wal_end > backup.stop_lsn))
        .collect();
    let last = |key: fn(&WindowPart) -> Option<f64>| {
        reachable.iter().filter_map(|p| key(p)).fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))))
    };
    let window = |p: &WindowPart| {
        format!(
            "timeline {}: from {} to {} (last commit {})",
            p.timeline,
            p.from_lsn,
            p.wal_end,
            p.to_time.map(|t| super::format_utc(super::from_unix_seconds(t))).unwrap_or_else(|| "not read".into())
        )
    };
    let windows: Vec<String> = reachable.iter().map(|p| window(p)).collect();
    match target {
        RecoveryTarget::Time(time) => {
            let wanted = super::unix_seconds(*time);
            if let Some(last_commit) = last(|p| p.to_time) {
                if wanted > last_commit {
                    return Err(crate::error::Error::InvalidInput(format!(
                        "the recovery target {} is after the last commit the archive holds ({}): recovery would end before reaching it and PostgreSQL would not start; recover to {} or earlier, or to the end of the archive (no target). Reachable from backup {}: {}",
                        super::format_utc(*time),
                        super::format_utc(super::from_unix_seconds(last_commit)),
                        super::format_utc(super::from_unix_seconds(last_commit)),
                        backup.id,
                        windows.join("; ")
                    )));
                }
            }
        }
        RecoveryTarget::Lsn(lsn) => {
            let end = reachable.iter().map(|p| p.wal_end).max().unwrap_or(own.wal_end);
            if *lsn > end {
                return Err(crate::error::Error::InvalidInput(format!(
                    "the recovery target LSN {lsn} is past the end of the archived WAL ({end}): recovery would end before reaching it and PostgreSQL would not start. Reachable from backup {}: {}",
                    backup.id,
                    windows.join("; ")
                )));
            }
        }
        RecoveryTarget::Latest | RecoveryTarget::Immediate | RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => {}
    }
    Ok(())
}

/// A commit found in the WAL: its time, and the end of its record.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Commit {
    time: f64,
    end: Lsn,
}

/// Fills in each restorable stretch's first and last commit, read from its segments: forward
/// from `from_lsn` and backward from `wal_end`, each at most [`MOST_SEGMENTS_READ`] segments.
/// A segment that does not read (damaged, not authentic) is an error: the window would be wrong.
pub async fn read_commit_times(repository: &Repository, parts: &mut [WindowPart], segment_size: u32) -> Result<()> {
    let seg = segment_size as u64;
    for part in parts.iter_mut().filter(|p| p.status == "restorable") {
        let (first, last) = (part.from_lsn.segment(segment_size), (part.wal_end.0 / seg).saturating_sub(1));
        if last < first {
            continue;
        }
        // The first commit at or after the start.
        let mut upto = first;
        let mut found = None;
        while found.is_none() && upto <= last && upto - first < MOST_SEGMENTS_READ {
            let hi = (upto + 3).min(last);
            let commits = commits_in(repository, part.timeline, first.max(upto.saturating_sub(1)), hi, seg).await?;
            found = commits.into_iter().find(|c| c.end > part.from_lsn);
            upto = hi + 1;
        }
        if let Some(commit) = found {
            part.from_time = Some(commit.time);
        }
        // The last commit before the end, looking back a few segments at a time.
        let mut hi = last;
        let (found, read) = loop {
            let lo = hi.saturating_sub(3).max(first);
            // One segment more before: a commit record may start there and end in `lo`.
            let commits = commits_in(repository, part.timeline, lo.saturating_sub(1).max(first), hi, seg).await?;
            let found = commits.into_iter().rev().find(|c| c.end > part.from_lsn);
            if found.is_some() || lo == first || last - lo + 1 >= MOST_SEGMENTS_READ {
                break (found, last - lo + 1);
            }
            hi = lo - 1;
        };
        match found {
            Some(commit) => {
                part.to_time = Some(commit.time);
                part.to_lsn = commit.end;
            }
            None => {
                part.to_lsn = part.wal_end;
                part.detail.push_str(&format!("; no commit in its last {read} segment(s), so its end has no time"));
            }
        }
    }
    Ok(())
}

/// The commits in segments `lo..=hi` of `timeline`, in WAL order (read through one decoder, so a
/// record crossing from one segment into the next is seen whole).
async fn commits_in(repository: &Repository, timeline: u32, lo: u64, hi: u64, seg: u64) -> Result<Vec<Commit>> {
    let mut decoder = Decoder::new(seg as u32);
    let mut commits = Vec::new();
    for number in lo..=hi {
        let name = WalFileName::parse(&wal::segment_name(timeline, number, seg as u32))?;
        let bytes = repository.get_bytes(&crate::layout::wal(&name)).await?;
        decoder.segment(&name, &bytes, &mut |found| {
            if let Event::Xact(end) = &found.event {
                if end.kind.committed() {
                    commits.push(Commit { time: end.time.unix_seconds(), end: found.end_lsn });
                }
            }
            Ok(())
        })?;
    }
    Ok(commits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::manifest::tests::sample;

    fn status_of(manifest: BackupManifest) -> BackupStatus {
        BackupStatus { id: manifest.id.clone(), manifest: Some(manifest), state: "verified".into(), problem: None }
    }

    fn wal_on(timeline: u32, names: &[u64]) -> Vec<ArchivedWal> {
        names
            .iter()
            .map(|&n| ArchivedWal {
                name: WalFileName::parse(&wal::segment_name(timeline, n, 16 << 20)).unwrap(),
                stored_bytes: 0,
                modified: None,
            })
            .collect()
    }

    fn wal(names: &[u64]) -> Vec<ArchivedWal> {
        wal_on(1, names)
    }

    fn recovery_window(
        backups: &[BackupStatus],
        wal_files: &[ArchivedWal],
        segment_size: u32,
        last_archived: Option<&WalFileName>,
    ) -> Vec<WindowPart> {
        super::recovery_window(backups, wal_files, segment_size, last_archived, &HashMap::new())
    }

    #[test]
    fn the_recovery_window_starts_at_a_backup_and_breaks_at_a_gap() {
        let seg = 16 << 20;
        let mut m = sample(); // starts and ends in segment 3
        m.stop_time = 1000.0;
        let parts = recovery_window(&[status_of(m.clone())], &wal(&[3, 4, 5, 7, 8]), seg, None);
        let summary: Vec<(&str, String, String)> =
            parts.iter().map(|p| (p.status, p.from_lsn.to_string(), p.to_lsn.to_string())).collect();
        assert_eq!(
            summary,
            vec![
                ("restorable", m.stop_lsn.to_string(), "0/6000000".to_string()),
                ("break", "0/6000000".to_string(), "0/7000000".to_string()),
                ("break", "0/7000000".to_string(), "0/9000000".to_string()),
            ],
            "{parts:?}"
        );
        assert_eq!(parts[0].backup.as_ref(), Some(&m.id));
        assert_eq!(parts[0].from_time, Some(1000.0));
        assert!(parts[1].detail.contains("000000010000000000000006"), "{:?}", parts[1]);
        // Without a verified backup nothing is restorable.
        let mut broken = status_of(m);
        broken.problem = Some("missing packs".into());
        assert!(recovery_window(&[broken], &wal(&[3, 4]), seg, None).iter().all(|p| p.status == "break"));
    }

    #[test]
    fn a_deleted_tail_of_what_this_server_archived_is_a_break_at_the_end() {
        let seg = 16 << 20;
        let m = sample(); // segment 3
        let name = |n| WalFileName::parse(&wal::segment_name(1, n, seg)).unwrap();
        // Archived up to segment 8; 6 to 8 were deleted from the bucket.
        let parts = recovery_window(&[status_of(m.clone())], &wal(&[3, 4, 5]), seg, Some(&name(8)));
        let last = parts.last().unwrap();
        assert_eq!(
            (last.status, last.from_lsn.to_string(), last.to_lsn.to_string()),
            ("break", "0/6000000".into(), "0/9000000".into())
        );
        assert!(last.detail.contains("000000010000000000000006") && last.detail.contains("gone"), "{last:?}");
        assert_eq!(parts[0].status, "restorable", "the window before the loss is still there: {parts:?}");
        // Nothing missing (or the last archived file is not a segment): no extra row.
        assert_eq!(recovery_window(&[status_of(m.clone())], &wal(&[3, 4, 5]), seg, Some(&name(5))).len(), 1);
        let history = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(recovery_window(&[status_of(m)], &wal(&[3, 4, 5]), seg, Some(&history)).len(), 1);
    }

    #[test]
    fn a_later_timeline_is_restorable_only_when_its_parent_reaches_the_switch_point() {
        let seg = 16 << 20;
        let m = sample(); // timeline 1, segment 3
        let switch = Switch { parent: 1, at: Lsn(5 * seg as u64 + 0x100) };
        let parents = HashMap::from([(2, switch)]);
        let summary = |parts: &[WindowPart]| -> Vec<(u32, &'static str)> {
            parts.iter().map(|p| (p.timeline, p.status)).collect()
        };
        // Timeline 1 holds segments 3..=4, timeline 2 5..=7: the parent reaches the start of the
        // switch segment, whose first part timeline 2's own segment 5 holds.
        let mut files = wal(&[3, 4]);
        files.extend(wal_on(2, &[5, 6, 7]));
        let parts = super::recovery_window(&[status_of(m.clone())], &files, seg, None, &parents);
        assert_eq!(summary(&parts), vec![(1, "restorable"), (2, "restorable")], "{parts:?}");
        assert_eq!(parts[1].from_lsn, switch.at);
        assert_eq!(parts[1].backup.as_ref(), Some(&m.id), "restored from the parent's backup");

        // A gap on the parent before the switch: timeline 2 is not reachable.
        let mut files = wal(&[3]);
        files.extend(wal_on(2, &[5, 6, 7]));
        let parts = super::recovery_window(&[status_of(m.clone())], &files, seg, None, &parents);
        assert_eq!(summary(&parts), vec![(1, "restorable"), (2, "break")], "{parts:?}");
        assert!(parts[1].detail.contains("does not reach its switch point"), "{:?}", parts[1]);

        // Without its history file, timeline 2 is not reachable either (it used to be).
        let mut files = wal(&[3, 4]);
        files.extend(wal_on(2, &[5, 6, 7]));
        let parts = super::recovery_window(&[status_of(m)], &files, seg, None, &HashMap::new());
        assert_eq!(summary(&parts), vec![(1, "restorable"), (2, "break")], "{parts:?}");
        assert!(parts[1].detail.contains("history file"), "{:?}", parts[1]);
    }

    /// A repository holding segments of timeline 1, each with one commit: (segment, commit time
    /// in PostgreSQL microseconds). Returns the end of each commit record.
    async fn repository_with_commits(commits: &[(u64, i64)]) -> (Repository, Vec<Lsn>) {
        use crate::wal::records::build;
        let seg: usize = 16 << 20;
        let store: std::sync::Arc<dyn crate::ObjectStore> =
            std::sync::Arc::new(crate::store::memory::MemoryStore::new());
        let codec = crate::codec::CodecSettings::new(crate::codec::Compression::None, vec![]);
        let repository = Repository::new(store, "c1", codec).unwrap().with_signer(crate::auth::SigningKey::generate());
        let mut ends = Vec::new();
        for &(segment, time) in commits {
            let body = build::main_data(&time.to_le_bytes());
            let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> =
                vec![Box::new(move |p| build::record(p, 700, crate::wal::events::RM_XACT_ID, 0, &body))];
            let all: Vec<&dyn Fn(u64) -> Vec<u8>> = makers.iter().map(|m| m.as_ref()).collect();
            let start = segment * seg as u64;
            let (bytes, lsns) = build::segments(start, seg, 0xD110, &all);
            ends.push(Lsn(lsns[0] + 24 + 10));
            let name = WalFileName::parse(&wal::segment_name(1, segment, seg as u32)).unwrap();
            repository
                .put_bytes(&crate::layout::wal(&name), bytes[0].clone().into(), crate::store::WriteMode::CreateNew)
                .await
                .unwrap();
        }
        (repository, ends)
    }

    #[tokio::test]
    async fn commit_times_come_from_the_wal_records() {
        let seg = 16u32 << 20;
        let t0 = 800_000_000_000_000i64;
        // Segments 3 to 6, a commit in 3 (before the backup ends), 4 and 5; none in 6.
        let (repository, ends) = repository_with_commits(&[(3, t0), (4, t0 + 1_000_000), (5, t0 + 2_000_000)]).await;
        let filler = WalFileName::parse(&wal::segment_name(1, 6, seg)).unwrap();
        let (bytes, _) = crate::wal::records::build::segments(
            6 * seg as u64,
            seg as usize,
            0xD110,
            &[&|p| crate::wal::records::build::record(p, 0, 0, 0x20, &[])],
        );
        repository
            .put_bytes(&crate::layout::wal(&filler), bytes[0].clone().into(), crate::store::WriteMode::CreateNew)
            .await
            .unwrap();
        let mut m = sample(); // stops in segment 3
        m.stop_lsn = Lsn(3 * seg as u64 + 0x1000);
        let mut parts = recovery_window(&[status_of(m)], &wal(&[3, 4, 5, 6]), seg, None);
        read_commit_times(&repository, &mut parts, seg).await.unwrap();
        let pg = |t: i64| crate::wal::events::PgTime(t).unix_seconds();
        assert_eq!(parts[0].from_time, Some(pg(t0 + 1_000_000)), "the first commit after the backup's end");
        assert_eq!(parts[0].to_time, Some(pg(t0 + 2_000_000)), "the last commit, not a file date");
        assert_eq!(parts[0].to_lsn, ends[2]);
        assert!(parts[0].to_time >= parts[0].from_time);

        // A target after the last commit is refused up front, naming the window; one before it
        // passes; an LSN past the archived WAL is refused.
        use crate::backups::restore::RecoveryTarget;
        let m = {
            let mut m = sample();
            m.stop_lsn = Lsn(3 * seg as u64 + 0x1000);
            m
        };
        let at = |t: i64| RecoveryTarget::Time(crate::time::from_unix_seconds(pg(t)));
        let error = check_target(&parts, &m, &at(t0 + 3_000_000)).unwrap_err().to_string();
        assert!(error.contains("after the last commit") && error.contains("timeline 1"), "{error}");
        check_target(&parts, &m, &at(t0 + 1_500_000)).unwrap();
        check_target(&parts, &m, &RecoveryTarget::Lsn(Lsn(7 * seg as u64))).unwrap();
        let error = check_target(&parts, &m, &RecoveryTarget::Lsn(Lsn(7 * seg as u64 + 1))).unwrap_err().to_string();
        assert!(error.contains("past the end of the archived WAL"), "{error}");
        // A backup whose WAL is not there.
        let mut elsewhere = m.clone();
        elsewhere.stop_lsn = Lsn(9 * seg as u64);
        let error = check_target(&parts, &elsewhere, &RecoveryTarget::Latest).unwrap_err().to_string();
        assert!(error.contains("not in the repository"), "{error}");
    }
}
