//! What the repository can restore: the one listing of backups (SQL `backstop.backups()` and CLI
//! `backstop backups list`), the deep verify (`backstop verify`), and the recovery window.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{manifest, BackupId, BackupManifest};
use crate::error::{Error, Result};
use crate::layout::{self, ObjectKind};
use crate::repository::Repository;
use crate::wal::{self, WalFileKind, WalFileName};

/// One backup as the listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    pub id: BackupId,
    /// None when the manifest itself could not be read.
    #[serde(skip)]
    pub manifest: Option<BackupManifest>,
    /// "verified" when the manifest checks out and every pack it needs is stored with its size;
    /// otherwise what is wrong.
    pub state: String,
    pub problem: Option<String>,
}

impl BackupStatus {
    pub fn verified(&self) -> bool {
        self.problem.is_none()
    }
}

/// How many distinct packs the readable backups reference that are stored unencrypted (recorded in
/// their manifests): in a repository that encrypts, what was written before encryption was
/// enabled and is still needed. New backups do not reuse them.
pub fn unencrypted_packs(backups: &[BackupStatus]) -> usize {
    let mut ids = std::collections::HashSet::new();
    for manifest in backups.iter().filter_map(|b| b.manifest.as_ref()) {
        ids.extend(manifest.packs.iter().filter(|p| p.encrypted == Some(false)).map(|p| p.id.as_str()));
    }
    ids.len()
}

/// Every committed backup, oldest first, each checked cheaply: manifest verified and validated,
/// every pack present with the stored size its trailer implies (one streamed listing of packs/).
pub async fn list_backups(repository: &Repository) -> Result<Vec<BackupStatus>> {
    let ids = manifest::list_ids(repository).await?;
    let stored = if ids.is_empty() { HashMap::new() } else { stored_packs(repository).await? };
    let mut out = Vec::new();
    for id in ids {
        out.push(status_of(repository, id, &stored).await);
    }
    Ok(out)
}

/// The ids of every committed backup (oldest first) and the newest one [`list_backups`] would call
/// verified, reading manifests from the newest back only until one is: what the next base
/// backup builds on, without parsing every manifest in the repository.
pub async fn newest_verified(repository: &Repository) -> Result<(Vec<BackupId>, Option<BackupStatus>)> {
    let ids = manifest::list_ids(repository).await?;
    let stored = if ids.is_empty() { HashMap::new() } else { stored_packs(repository).await? };
    for id in ids.iter().rev() {
        let status = status_of(repository, id.clone(), &stored).await;
        if status.verified() {
            return Ok((ids, Some(status)));
        }
    }
    Ok((ids, None))
}

/// Pack id -> stored size, from one streamed listing of packs/.
async fn stored_packs(repository: &Repository) -> Result<HashMap<String, u64>> {
    let mut stored = HashMap::new();
    let mut objects = repository.list(&layout::packs());
    while let Some(object) = objects.try_next().await? {
        if let Some(path) = object.path.filter(|p| p.kind() == ObjectKind::Pack) {
            if let Some(id) = path.as_str().rsplit('/').next() {
                stored.insert(id.to_string(), object.size);
            }
        }
    }
    Ok(stored)
}

async fn status_of(repository: &Repository, id: BackupId, stored: &HashMap<String, u64>) -> BackupStatus {
    match manifest::read(repository, &id).await {
        Ok(m) => {
            let missing: Vec<&str> =
                m.packs.iter().filter(|p| !stored.contains_key(&p.id)).map(|p| p.id.as_str()).collect();
            let problem = (!missing.is_empty()).then(|| {
                format!(
                    "{} of its {} packs are missing (first: {})",
                    missing.len(),
                    m.packs.len(),
                    layout::pack(missing[0]).map(|p| p.to_string()).unwrap_or_default()
                )
            });
            BackupStatus {
                id,
                state: if problem.is_some() { "incomplete".into() } else { "verified".into() },
                problem,
                manifest: Some(m),
            }
        }
        Err(e) => BackupStatus { id, manifest: None, state: "unreadable".into(), problem: Some(e.to_string()) },
    }
}

/// An archived WAL file and when it was stored.
#[derive(Debug, Clone)]
pub struct ArchivedWal {
    pub name: WalFileName,
    pub stored_bytes: u64,
    pub modified: Option<SystemTime>,
}

/// Every WAL file in the repository, in name order: the one listing behind `backstop wal list`,
/// `wal verify`, the recovery window and doctor().
pub async fn archived_wal(repository: &Repository) -> Result<Vec<ArchivedWal>> {
    let mut files = Vec::new();
    let mut objects = repository.list(&layout::wal_files());
    while let Some(object) = objects.try_next().await? {
        let Some(path) = object.path.filter(|p| p.kind() == ObjectKind::Wal) else { continue };
        let name = path.as_str().rsplit('/').next().unwrap_or("");
        if let Ok(name) = WalFileName::parse(name) {
            files.push(ArchivedWal { name, stored_bytes: object.size, modified: object.last_modified });
        }
    }
    files.sort_by(|a, b| a.name.name.cmp(&b.name.name));
    Ok(files)
}

/// The result of a deep verify.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub backups: Vec<BackupCheck>,
    pub packs_checked: u64,
    pub bytes_checked: u64,
    /// Packs found damaged and recorded so (`damaged/`): no later backup references them.
    pub damage_recorded: Vec<String>,
    /// Why damage found was not recorded (the handle may not write), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage_not_recorded: Option<String>,
    /// The share of packs and WAL files read back (1: all of them).
    pub sample: f64,
    /// Packs the backups need, read back or not.
    pub packs_total: u64,
    /// WAL files in the repository, and how many of them were read back whole.
    pub wal_total: u64,
    pub wal_checked: u64,
    /// WAL files that did not read back (name: why).
    pub wal_damaged: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackupCheck {
    pub id: BackupId,
    pub ok: bool,
    pub problems: Vec<String>,
    /// Missing WAL from the backup's start onward on its timeline.
    pub wal_gaps: Vec<wal::Gap>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.backups.iter().all(|b| b.ok) && self.wal_damaged.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct VerifyProgress {
    pub packs_total: AtomicU64,
    pub packs_done: AtomicU64,
    pub bytes_done: AtomicU64,
}

/// A pack's length, the chunks (offset, length, sha256) backups expect in it, and those backups.
type PackUse = (u64, HashSet<(u64, u32, String)>, HashSet<usize>);

/// Reads every pack every backup needs (each once), checks it and every chunk in it, and checks the
/// WAL from each backup's start onward for gaps.
pub async fn verify(
    repository: &Repository,
    parallel: usize,
    progress: &VerifyProgress,
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    verify_sample(repository, 1.0, false, parallel, progress, cancel).await
}

/// [`verify`] reading back only a random share `sample` of the packs and, with `read_wal`, the
/// same share of the WAL files (each streamed through its checksums and signature); every
/// manifest is still read and authenticated, and every backup's WAL still checked for gaps. Over
/// repeated runs every object is read back sooner or later, at `sample` of the cost per run.
pub async fn verify_sample(
    repository: &Repository,
    sample: f64,
    read_wal: bool,
    parallel: usize,
    progress: &VerifyProgress,
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    let picked = |_: &str| sample >= 1.0 || rand::random::<f64>() < sample;
    let backups = list_backups(repository).await?;
    let wal_files = archived_wal(repository).await?;
    // pack id -> chunks (offset, len, sha) any backup expects in it, and the backups using it.
    let mut packs: HashMap<String, PackUse> = HashMap::new();
    let mut report = VerifyReport::default();
    for (index, backup) in backups.iter().enumerate() {
        report.backups.push(BackupCheck {
            id: backup.id.clone(),
            ok: backup.problem.is_none(),
            problems: backup.problem.iter().cloned().collect(),
            wal_gaps: Vec::new(),
        });
        let Some(m) = &backup.manifest else { continue };
        for file in &m.files {
            for chunk in &file.chunks {
                let pack = &m.packs[chunk.pack as usize];
                let entry = packs.entry(pack.id.clone()).or_insert_with(|| (pack.len, HashSet::new(), HashSet::new()));
                entry.1.insert((chunk.offset, chunk.len, chunk.sha256.clone()));
                entry.2.insert(index);
            }
        }
        let segment_size = m.wal_segment_size;
        let first = m.start_lsn.segment(segment_size);
        let names: Vec<WalFileName> = wal_files
            .iter()
            .filter(|f| f.name.timeline == m.timeline && f.name.kind == WalFileKind::Segment)
            .filter(|f| f.name.position(segment_size).is_some_and(|(_, n)| n >= first))
            .map(|f| f.name.clone())
            .collect();
        let check = report.backups.last_mut().expect("pushed above");
        let stop = m.stop_lsn.segment(segment_size);
        let have: HashSet<u64> = names.iter().filter_map(|n| n.position(segment_size)).map(|(_, n)| n).collect();
        let missing_to_stop: Vec<u64> = (first..=stop).filter(|n| !have.contains(n)).collect();
        if let Some(&n) = missing_to_stop.first() {
            check.ok = false;
            check.problems.push(format!(
                "WAL needed to make it consistent is missing: {} ({} of {} segments)",
                wal::segment_name(m.timeline, n, segment_size),
                missing_to_stop.len(),
                stop - first + 1
            ));
        }
        let mut with_start = names.clone();
        with_start.push(WalFileName::parse(&wal::segment_name(m.timeline, first, segment_size))?);
        check.wal_gaps = wal::find_gaps(with_start.iter(), segment_size);
        if !check.wal_gaps.is_empty() {
            check.ok = false;
            check.problems.push(format!(
                "the WAL after it has {} gap(s): recovery cannot pass {}",
                check.wal_gaps.len(),
                check.wal_gaps[0].first_missing
            ));
        }
    }
    report.sample = sample;
    report.packs_total = packs.len() as u64;
    packs.retain(|id, _| picked(id));
    progress.packs_total.store(packs.len() as u64, Ordering::Relaxed);
    let results: Vec<(String, HashSet<usize>, Result<u64>)> =
        futures::stream::iter(packs.into_iter().map(|(id, (len, chunks, users))| async move {
            let result = check_pack(repository, &id, len, &chunks).await;
            progress.packs_done.fetch_add(1, Ordering::Relaxed);
            if let Ok(bytes) = &result {
                progress.bytes_done.fetch_add(*bytes, Ordering::Relaxed);
            }
            (id, users, result)
        }))
        .buffer_unordered(parallel.max(1))
        .take_until(cancel.cancelled())
        .collect()
        .await;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    for (id, users, result) in results {
        report.packs_checked += 1;
        match result {
            Ok(bytes) => report.bytes_checked += bytes,
            Err(e) => {
                for index in users {
                    let check = &mut report.backups[index];
                    check.ok = false;
                    check
                        .problems
                        .push(format!("pack {}: {e}", layout::pack(&id).map(|p| p.to_string()).unwrap_or(id.clone())));
                }
                // Stored but not what the manifests expect: recorded, so no backup reuses it.
                if matches!(e, Error::Corrupt { .. } | Error::Unauthenticated { .. })
                    && report.damage_not_recorded.is_none()
                {
                    match super::damage::record(repository, &id, &e.to_string()).await {
                        Ok(()) => report.damage_recorded.push(id),
                        Err(why) => report.damage_not_recorded = Some(why.to_string()),
                    }
                }
            }
        }
    }
    // WAL read back too when asked (`backstop verify` leaves that to `backstop wal verify`): the
    // same share, each file through every checksum.
    report.wal_total = wal_files.len() as u64;
    if read_wal {
        let chosen: Vec<&ArchivedWal> = wal_files.iter().filter(|w| picked(&w.name.name)).collect();
        let results: Vec<(String, Result<u64>)> = futures::stream::iter(chosen.into_iter().map(|w| async move {
            let path = layout::wal(&w.name);
            (w.name.name.clone(), repository.verify(&path).await.map(|v| v.trailer().plain_len))
        }))
        .buffer_unordered(parallel.max(1))
        .take_until(cancel.cancelled())
        .collect()
        .await;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        for (name, result) in results {
            report.wal_checked += 1;
            match result {
                Ok(bytes) => report.bytes_checked += bytes,
                Err(e) => report.wal_damaged.push(format!("{name}: {e}")),
            }
        }
        report.wal_damaged.sort();
    }
    Ok(report)
}

async fn check_pack(repository: &Repository, id: &str, len: u64, chunks: &HashSet<(u64, u32, String)>) -> Result<u64> {
    let path = layout::pack(id)?;
    let bytes = repository.get_bytes(&path).await?;
    let key = repository.key(&path);
    let chunks: Vec<(u64, u32, String)> = chunks.iter().cloned().collect();
    tokio::task::spawn_blocking(move || {
        let corrupt = |reason: String| Error::Corrupt { key: key.clone(), reason };
        if bytes.len() as u64 != len {
            return Err(corrupt(format!(
                "it holds {} bytes, the manifests expect {len} (not the pack they name)",
                bytes.len()
            )));
        }
        for (offset, chunk_len, sha) in &chunks {
            let data = bytes.get(*offset as usize..(*offset + *chunk_len as u64) as usize);
            if data.is_none_or(|d| hex::encode(Sha256::digest(d)) != *sha) {
                return Err(corrupt(format!("chunk {sha} does not match its checksum")));
            }
        }
        Ok(bytes.len() as u64)
    })
    .await
    .map_err(|e| Error::InvalidInput(format!("a verify thread failed: {e}")))?
}

/// Age beyond which the newest base backup is reported as stale by doctor().
/// The default of `backstop.max_base_backup_age`.
pub const STALE_BACKUP_AFTER: std::time::Duration = std::time::Duration::from_secs(8 * 86_400);

/// doctor()'s view of base backups: is there a recent one, and can point-in-time recovery reach
/// from it to the present (no gap in the archive, the archive close behind the server)?
/// `current` is the server's timeline and the segment it is writing.
pub fn doctor_checks(
    backups: &[BackupStatus],
    wal_files: &[ArchivedWal],
    current: (u32, u64),
    segment_size: u32,
    now: SystemTime,
    max_age: std::time::Duration,
) -> Vec<crate::doctor::Check> {
    use crate::doctor::Check;
    let schedule = "Take one with SELECT * FROM backstop.base_backup() (and schedule it).";
    let Some(newest) = backups.iter().rev().find(|b| b.verified()).and_then(|b| b.manifest.as_ref()) else {
        let detail = match backups.last() {
            Some(b) => format!(
                "no complete base backup: the newest, {}, is unusable ({})",
                b.id,
                b.problem.clone().unwrap_or_default()
            ),
            None => "no base backup in the repository: archived WAL alone restores nothing".to_string(),
        };
        return vec![
            Check::fail("base_backup", detail, schedule),
            Check::fail("pitr_reaches_now", "no base backup to recover from", schedule),
        ];
    };
    let age = now.duration_since(super::from_unix_seconds(newest.stop_time)).unwrap_or_default();
    let hours = age.as_secs() / 3600;
    let mut checks = vec![if age > max_age {
        Check::warn(
            "base_backup",
            format!(
                "the newest base backup, {}, is {} days old (backstop.max_base_backup_age is {} days): recovery replays that much WAL",
                newest.id,
                hours / 24,
                max_age.as_secs() / 86_400
            ),
            schedule,
        )
    } else {
        Check::ok("base_backup", format!("newest base backup {} finished {hours} h ago", newest.id))
    }];
    let (timeline, segment) = current;
    if newest.timeline != timeline {
        checks.push(Check::warn(
            "pitr_reaches_now",
            format!(
                "the newest base backup is on timeline {}, the server on timeline {timeline}: recovering to now needs the timeline history",
                newest.timeline
            ),
            "Take a new base backup on this timeline.",
        ));
        return checks;
    }
    let first = newest.start_lsn.segment(segment_size);
    let mut names: Vec<WalFileName> = wal_files
        .iter()
        .filter(|f| f.name.timeline == timeline && f.name.kind == WalFileKind::Segment)
        .filter(|f| f.name.position(segment_size).is_some_and(|(_, n)| n >= first))
        .map(|f| f.name.clone())
        .collect();
    let newest_archived = names.iter().filter_map(|n| n.position(segment_size)).map(|(_, n)| n).max();
    if let Ok(start) = WalFileName::parse(&wal::segment_name(timeline, first, segment_size)) {
        names.push(start);
    }
    let gaps = wal::find_gaps(names.iter(), segment_size);
    let hint = "Look for archiving failures (backstop.doctor() archive rows, pg_stat_archiver); a gap means recovery stops there: take a new base backup after it.";
    checks.push(match (gaps.first(), newest_archived) {
        (Some(gap), _) => Check::fail(
            "pitr_reaches_now",
            format!(
                "the archive has a gap after backup {}: {} to {} are missing, recovery cannot pass them",
                newest.id, gap.first_missing, gap.last_missing
            ),
            hint,
        ),
        (None, None) => Check::fail("pitr_reaches_now", format!("no WAL archived since backup {}", newest.id), hint),
        (None, Some(last)) if last + 2 < segment => Check::warn(
            "pitr_reaches_now",
            format!(
                "WAL is continuous from backup {} to {}, but the server is already writing {}",
                newest.id,
                wal::segment_name(timeline, last, segment_size),
                wal::segment_name(timeline, segment, segment_size)
            ),
            "Archiving is behind; see archive_backlog.",
        ),
        (None, Some(last)) => Check::ok(
            "pitr_reaches_now",
            format!(
                "WAL is continuous from backup {} to {}: recovery can reach the present",
                newest.id,
                wal::segment_name(timeline, last, segment_size)
            ),
        ),
    });
    checks
}

/// doctor()'s deletion check: what this server knows it wrote (the backups its job history
/// records as taken and not expired since, the WAL file the archiver shipped last) that the
/// repository no longer holds. Someone with delete access to the bucket removed it, or a lifecycle
/// rule did: a recovery window computed from what is left would silently skip it.
pub fn deletion_check(
    written: &[String],
    expired: &[String],
    backups: &[BackupStatus],
    last_archived: Option<&str>,
    wal_files: &[ArchivedWal],
) -> crate::doctor::Check {
    use crate::doctor::Check;
    let present: HashSet<String> = backups.iter().map(|b| b.id.to_string()).collect();
    let expired: HashSet<&str> = expired.iter().map(String::as_str).collect();
    let mut missing: Vec<&str> =
        written.iter().map(String::as_str).filter(|id| !expired.contains(id) && !present.contains(*id)).collect();
    missing.sort_unstable();
    missing.dedup();
    let last_gone = last_archived
        .filter(|name| WalFileName::parse(name).is_ok())
        .filter(|name| !wal_files.iter().any(|w| w.name.name == *name));
    let hint = "Someone with delete access to the repository, or a lifecycle rule on the bucket, removed what backstop wrote: check the bucket's access log and lifecycle rules, take a new base backup now, and do not rely on a recovery window that spans the loss.";
    match (missing.first(), last_gone) {
        (None, None) => Check::ok(
            "repository_complete",
            "every base backup this server took and did not expire, and the WAL file archived last, is there",
        ),
        (first, last) => {
            let mut parts = Vec::new();
            if let Some(first) = first {
                parts.push(format!(
                    "{} base backup(s) this server took and never expired are gone (first: {first})",
                    missing.len()
                ));
            }
            if let Some(last) = last {
                parts.push(format!("{last}, the WAL file archived last, is gone"));
            }
            Check::fail("repository_complete", parts.join("; "), hint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::manifest::tests::sample;
    use crate::doctor::Status;

    fn status_of(manifest: BackupManifest) -> BackupStatus {
        BackupStatus { id: manifest.id.clone(), manifest: Some(manifest), state: "verified".into(), problem: None }
    }

    fn wal(names: &[u64]) -> Vec<ArchivedWal> {
        names
            .iter()
            .map(|&n| ArchivedWal {
                name: WalFileName::parse(&wal::segment_name(1, n, 16 << 20)).unwrap(),
                stored_bytes: 0,
                modified: None,
            })
            .collect()
    }

    #[test]
    fn doctor_says_whether_recovery_reaches_the_present() {
        let seg = 16 << 20;
        let mut m = sample(); // starts in segment 3, ends in 3
        m.stop_time = super::super::unix_seconds(SystemTime::now());
        let now = SystemTime::now();
        let none = doctor_checks(&[], &[], (1, 9), seg, now, STALE_BACKUP_AFTER);
        assert_eq!((none[0].status, none[1].status), (Status::Fail, Status::Fail));
        let fine =
            doctor_checks(&[status_of(m.clone())], &wal(&[3, 4, 5, 6, 7, 8]), (1, 9), seg, now, STALE_BACKUP_AFTER);
        assert_eq!((fine[0].status, fine[1].status), (Status::Ok, Status::Ok), "{fine:?}");
        let gap = doctor_checks(&[status_of(m.clone())], &wal(&[3, 4, 6, 7, 8]), (1, 9), seg, now, STALE_BACKUP_AFTER);
        assert_eq!(gap[1].status, Status::Fail);
        assert!(gap[1].detail.contains("000000010000000000000005"), "{gap:?}");
        let behind = doctor_checks(&[status_of(m.clone())], &wal(&[3, 4]), (1, 9), seg, now, STALE_BACKUP_AFTER);
        assert_eq!(behind[1].status, Status::Warn);
        let old =
            doctor_checks(&[status_of(m)], &wal(&[3]), (1, 4), seg, now + STALE_BACKUP_AFTER * 2, STALE_BACKUP_AFTER);
        assert_eq!(old[0].status, Status::Warn);
    }

    #[test]
    fn what_this_server_wrote_and_the_repository_lost_is_named() {
        let listed = |ids: &[&str]| -> Vec<BackupStatus> {
            ids.iter()
                .map(|id| BackupStatus {
                    id: BackupId::parse(id).unwrap(),
                    state: "verified".into(),
                    problem: None,
                    manifest: None,
                })
                .collect()
        };
        let (a, b, c) = ("20261101T030000Z-F", "20261108T030000Z-I", "20261115T030000Z-I");
        let written: Vec<String> = [a, b, c].iter().map(|s| s.to_string()).collect();
        let wal = vec![ArchivedWal {
            name: WalFileName::parse("000000010000000000000007").unwrap(),
            stored_bytes: 1,
            modified: None,
        }];
        let ok = deletion_check(&written, &[a.to_string()], &listed(&[b, c]), Some("000000010000000000000007"), &wal);
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        let gone = deletion_check(&written, &[a.to_string()], &listed(&[c]), Some("000000010000000000000008"), &wal);
        assert_eq!(gone.status, Status::Fail);
        assert!(gone.detail.contains(b) && gone.detail.contains("000000010000000000000008"), "{gone:?}");
    }
}
