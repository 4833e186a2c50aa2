//! A fake PostgreSQL data directory and helpers to back it up and restore it, shared by the base
//! backup and expire suites.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::restore::{self, RestoreOptions, RestoreProgress};
use backstop_core::backups::take::{self, BackupFacts, Progress, TakeOptions};
use backstop_core::backups::{manifest, BackupId, BackupKind, BackupManifest, Lsn};
use backstop_core::codec::{CodecSettings, Compression};
use backstop_core::repository::CancellationToken;
use backstop_core::{ObjectStore, Repository};

use super::NoiseSource;

pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    NoiseSource::new(seed).fill(&mut bytes);
    bytes
}

/// A data directory shaped like PostgreSQL's, with things a backup must skip.
pub fn fake_data_dir(root: &Path) {
    write(&root.join("PG_VERSION"), b"15\n");
    write(&root.join("global/pg_control"), &noise(1, 8192));
    write(&root.join("base/5/16384"), &noise(2, 8 << 20)); // a big table: 32 chunks
    write(&root.join("base/5/16384_fsm"), &noise(3, 24576));
    write(&root.join("base/5/16390"), &vec![7u8; 3 << 20]); // compressible
    write(&root.join("base/5/16400"), &noise(4, 8192)); // unlogged: skipped
    write(&root.join("base/5/16400_init"), &noise(5, 8192)); // its init fork: kept
    write(&root.join("base/5/t3_16500"), b"temp relation"); // skipped
    write(&root.join("base/5/pg_internal.init"), b"cache"); // skipped
    write(&root.join("base/pgsql_tmp/pgsql_tmp123.0"), b"sort spill"); // skipped
    write(&root.join("pg_wal/000000010000000000000001"), &noise(6, 4096)); // skipped
    fs::create_dir_all(root.join("pg_wal/archive_status")).unwrap();
    write(&root.join("pg_replslot/slot/state"), b"slot"); // skipped
    write(&root.join("postmaster.pid"), b"123"); // skipped
    write(&root.join("backstop_manifest.key"), b"secret"); // skipped: the repository is not encrypted
    write(&root.join("backstop_signing.key"), b"signing secret"); // skipped, always
    write(&root.join(".backstop_signing.key.tmp-42"), b"half a key"); // skipped, always
    write(&root.join("postgresql.auto.conf"), b"# auto\n");
    fs::create_dir_all(root.join("pg_stat_tmp")).unwrap();
    fs::create_dir_all(root.join("empty_dir")).unwrap();
}

/// Every regular file under `root` (relative path -> bytes), and every directory.
pub fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if path.is_dir() {
                out.insert(rel, None);
                visit(root, &path, out);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

/// What a restore must reproduce: the source minus what backups skip, plus backup_label.
pub fn expected_tree(source: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut t = tree(source);
    for skipped in [
        "base/5/16400",
        "base/5/t3_16500",
        "base/5/pg_internal.init",
        "base/pgsql_tmp",
        "base/pgsql_tmp/pgsql_tmp123.0",
        "pg_wal/000000010000000000000001",
        "pg_replslot/slot",
        "pg_replslot/slot/state",
        "postmaster.pid",
        "backstop_manifest.key",
        "backstop_signing.key",
        ".backstop_signing.key.tmp-42",
    ] {
        assert!(t.remove(skipped).is_some(), "{skipped}");
    }
    t.insert("backup_label".into(), Some(label().into_bytes()));
    t
}

/// The restored tree equals the source's (as a backup keeps it); names what differs, not bytes.
pub fn assert_same(restored: &Path, source: &Path) {
    let (got, want) = (tree(restored), expected_tree(source));
    let differ: Vec<&String> = got.keys().chain(want.keys()).filter(|k| got.get(*k) != want.get(*k)).collect();
    assert!(differ.is_empty(), "restored {} differs from the source in {differ:?}", restored.display());
}

pub fn label() -> String {
    "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n".into()
}

pub async fn take_backup(
    repository: &Repository,
    data: &Path,
    kind: BackupKind,
    previous: Option<BackupManifest>,
    at: SystemTime,
) -> BackupManifest {
    take_backup_from(repository, data, kind, previous, at, None).await
}

/// [`take_backup`] whose WAL starts at `start` (the label's position when None).
pub async fn take_backup_from(
    repository: &Repository,
    data: &Path,
    kind: BackupKind,
    previous: Option<BackupManifest>,
    at: SystemTime,
    start: Option<Lsn>,
) -> BackupManifest {
    take_backup_rereading(repository, data, kind, previous, at, start, take::DEFAULT_REREAD_AFTER).await
}

/// [`take_backup_from`] with a re-read period of its own (files and earlier packs).
pub async fn take_backup_rereading(
    repository: &Repository,
    data: &Path,
    kind: BackupKind,
    previous: Option<BackupManifest>,
    at: SystemTime,
    start: Option<Lsn>,
    reread_after: Duration,
) -> BackupManifest {
    take_backup_summarized(repository, data, kind, previous, at, start, reread_after, None).await
}

/// [`take_backup_rereading`] told which blocks changed, as WAL summaries would.
#[allow(clippy::too_many_arguments)]
pub async fn take_backup_summarized(
    repository: &Repository,
    data: &Path,
    kind: BackupKind,
    previous: Option<BackupManifest>,
    at: SystemTime,
    start: Option<Lsn>,
    reread_after: Duration,
    changed: Option<backstop_core::backups::summaries::ChangedBlocks>,
) -> BackupManifest {
    let previous_id = previous.as_ref().map(|p| p.id.clone());
    let taken = take::copy_files(
        repository,
        TakeOptions {
            data_dir: data.to_path_buf(),
            kind,
            previous,
            reread_after,
            include_manifest_key: false,
            parallel: 2,
            page_checks: None,
            changed,
        },
        Arc::new(Progress::default()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let (start_lsn, timeline) = take::parse_label(&label()).unwrap();
    let mut manifest = taken.into_manifest(BackupFacts {
        id: BackupId::new(at, kind),
        cluster: repository.cluster().to_string(),
        system_identifier: 42,
        pg_version_num: 150000,
        wal_segment_size: 16 << 20,
        timeline,
        start_lsn,
        stop_lsn: Lsn(0x2000100),
        start_time: at,
        stop_time: at + Duration::from_secs(1),
        previous: previous_id,
        backup_label: label(),
        tablespace_map: String::new(),
        row_counts: None,
        relations: Vec::new(),
    });
    if let Some(start) = start {
        manifest.start_lsn = start;
        manifest.stop_lsn = Lsn(start.0 + 0x100);
    }
    manifest::write(repository, &manifest).await.unwrap();
    manifest
}

pub async fn restore_to(
    repository: &Repository,
    id: &BackupId,
    target: &Path,
    delta: bool,
) -> backstop_core::Result<restore::RestoreSummary> {
    let manifest = manifest::read(repository, id).await?;
    let options = RestoreOptions {
        target_dir: target.to_path_buf(),
        tablespace_map: Default::default(),
        delta,
        parallel: 3,
        sparse_databases: Default::default(),
    };
    let summary = restore::restore(
        repository,
        &manifest,
        &options,
        Arc::new(RestoreProgress::default()),
        &CancellationToken::new(),
    )
    .await?;
    restore::publish_control_file(target)?;
    Ok(summary)
}

pub fn repository(store: Arc<dyn ObjectStore>) -> Repository {
    super::signed_repository(store, "c1", CodecSettings::new(Compression::zstd(3).unwrap(), vec![]))
}

pub fn age_tree(root: &Path, when: SystemTime) {
    for entry in fs::read_dir(root).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        if path.is_dir() {
            age_tree(&path, when);
        } else {
            let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_times(fs::FileTimes::new().set_modified(when)).unwrap();
        }
    }
}
