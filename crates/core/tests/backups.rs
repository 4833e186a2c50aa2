//! Base backups against a fake data directory, on the file store and on Garage: a full backup, an
//! incremental one after a small change, restores that equal the source byte for byte, a delta
//! restore over a stale copy, and damaged or missing packs refused before anything is started.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::restore::{self, RestoreOptions, RestoreProgress};
use backstop_core::backups::take::{self, BackupFacts, Progress, TakeOptions};
use backstop_core::backups::{manifest, verify, BackupId, BackupKind, BackupManifest, Lsn};
use backstop_core::codec::{CodecSettings, Compression};
use backstop_core::repository::CancellationToken;
use backstop_core::{ObjectStore, Repository};
use common::NoiseSource;

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    NoiseSource::new(seed).fill(&mut bytes);
    bytes
}

/// A data directory shaped like PostgreSQL's, with things a backup must skip.
fn fake_data_dir(root: &Path) {
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
    write(&root.join("postgresql.auto.conf"), b"# auto\n");
    fs::create_dir_all(root.join("pg_stat_tmp")).unwrap();
    fs::create_dir_all(root.join("empty_dir")).unwrap();
}

/// Every regular file under `root` (relative path -> bytes), and every directory.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
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
fn expected_tree(source: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
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
    ] {
        assert!(t.remove(skipped).is_some(), "{skipped}");
    }
    t.insert("backup_label".into(), Some(label().into_bytes()));
    t
}

/// The restored tree equals the source's (as a backup keeps it); names what differs, not bytes.
fn assert_same(restored: &Path, source: &Path) {
    let (got, want) = (tree(restored), expected_tree(source));
    let differ: Vec<&String> = got.keys().chain(want.keys()).filter(|k| got.get(*k) != want.get(*k)).collect();
    assert!(differ.is_empty(), "restored {} differs from the source in {differ:?}", restored.display());
}

fn label() -> String {
    "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n".into()
}

async fn take_backup(
    repository: &Repository,
    data: &Path,
    kind: BackupKind,
    previous: Option<BackupManifest>,
    at: SystemTime,
) -> BackupManifest {
    let previous_id = previous.as_ref().map(|p| p.id.clone());
    let taken = take::copy_files(
        repository,
        TakeOptions {
            data_dir: data.to_path_buf(),
            kind,
            previous,
            reread_after: take::DEFAULT_REREAD_AFTER,
            include_manifest_key: false,
            parallel: 2,
        },
        Arc::new(Progress::default()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let (start_lsn, timeline) = take::parse_label(&label()).unwrap();
    let manifest = taken.into_manifest(BackupFacts {
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
    });
    manifest::write(repository, &manifest).await.unwrap();
    manifest
}

async fn restore_to(
    repository: &Repository,
    id: &BackupId,
    target: &Path,
    delta: bool,
) -> backstop_core::Result<restore::RestoreSummary> {
    let manifest = manifest::read(repository, id).await?;
    let options =
        RestoreOptions { target_dir: target.to_path_buf(), tablespace_map: Default::default(), delta, parallel: 3 };
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

fn repository(store: Arc<dyn ObjectStore>) -> Repository {
    Repository::new(store, "c1", CodecSettings::new(Compression::zstd(3).unwrap(), vec![])).unwrap()
}

async fn full_story(store: Arc<dyn ObjectStore>, scratch: &Path) {
    let repository = repository(store.clone());
    let data = scratch.join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    // mtimes must be older than the read for reuse to be allowed: age the whole tree.
    age_tree(&data, t0 - Duration::from_secs(60));
    let full = take_backup(&repository, &data, BackupKind::Full, None, t0).await;
    // The 3 MiB file of one repeated byte is twelve identical chunks: stored once.
    assert_eq!(full.stats.bytes_new, full.stats.bytes_read - (3 << 20) + (256 << 10));
    // A handful of packs for ~11 MiB, not one object per chunk.
    assert!(full.stats.packs_new <= 2, "{:?}", full.stats);

    // Change one 8 KiB page of the big table; the incremental stores about that much.
    let mut table = fs::read(data.join("base/5/16384")).unwrap();
    table[4 << 20..(4 << 20) + 8192].copy_from_slice(&noise(99, 8192));
    fs::write(data.join("base/5/16384"), &table).unwrap();
    let incr =
        take_backup(&repository, &data, BackupKind::Incremental, Some(full.clone()), t0 + Duration::from_secs(60))
            .await;
    assert!(incr.stats.bytes_new <= 256 << 10, "one chunk changed, stored {:?}", incr.stats);
    assert!(incr.stats.files_reused >= 3, "unchanged files are not re-read: {:?}", incr.stats);
    assert!(incr.stats.bytes_read >= 8 << 20, "the changed file is read");

    // Each backup restores to exactly its source.
    let restored_incr = scratch.join("restored-incr");
    restore_to(&repository, &incr.id, &restored_incr, false).await.unwrap();
    assert_same(&restored_incr, &data);

    // Deleting the full backup's manifest does not break the incremental (no chains).
    store.delete(&repository.key(&backstop_core::backups::manifest_path(&full.id))).await.unwrap();
    let again = scratch.join("restored-again");
    restore_to(&repository, &incr.id, &again, false).await.unwrap();
    assert_same(&again, &data);

    // A non-empty directory is refused without --delta.
    let refused = restore_to(&repository, &incr.id, &again, false).await.unwrap_err();
    assert!(refused.to_string().contains("not empty"), "{refused}");

    // Delta over a stale copy: a damaged file, an extra file, a missing file.
    let stale = restored_incr;
    let mut damaged = fs::read(stale.join("base/5/16384")).unwrap();
    damaged[100] ^= 0xff;
    fs::write(stale.join("base/5/16384"), &damaged).unwrap();
    write(&stale.join("base/5/99999"), b"left over");
    fs::remove_file(stale.join("base/5/16390")).unwrap();
    let summary = restore_to(&repository, &incr.id, &stale, true).await.unwrap();
    assert_same(&stale, &data);
    // Kept: the big table but its one damaged chunk; fetched: that chunk, the missing file, and
    // pg_control (a delta restore removes it first, so an interrupted one cannot be started).
    assert!(summary.bytes_kept >= (8 << 20) - (256 << 10), "delta keeps matching chunks: {summary:?}");
    assert_eq!(summary.bytes_fetched, (3 << 20) + (256 << 10) + 8192, "delta fetches only what differs: {summary:?}");
    assert!(summary.removed >= 1);

    // Listing and the deep verify agree that it is whole.
    let listed = verify::list_backups(&repository).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].verified(), "{:?}", listed[0].problem);
    let report = verify::verify(&repository, 2, &Default::default(), &CancellationToken::new()).await.unwrap();
    assert!(report.backups[0].problems.iter().all(|p| p.contains("WAL")), "{report:?}");

    // A damaged pack: the restore is refused and the directory cannot be started.
    let pack = &incr.packs[incr.files.iter().find(|f| f.path == "base/5/16384").unwrap().chunks[0].pack as usize];
    let pack_key = repository.key(&backstop_core::backups::pack_path(&pack.id));
    let original = read_object(&store, &pack_key).await;
    let mut bad = original.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    store.put(&pack_key, bad.into(), backstop_core::WriteMode::Overwrite).await.unwrap();
    let target = scratch.join("restored-corrupt");
    let error = restore_to(&repository, &incr.id, &target, false).await.unwrap_err();
    assert!(matches!(error, backstop_core::Error::Corrupt { .. }), "{error}");
    assert!(!target.join("global/pg_control").exists(), "a half restore must not be startable");
    let report = verify::verify(&repository, 2, &Default::default(), &CancellationToken::new()).await.unwrap();
    assert!(report.backups[0].problems.iter().any(|p| p.contains(&pack.id)), "{report:?}");

    // A missing pack: refused before anything is written.
    store.delete(&pack_key).await.unwrap();
    let target = scratch.join("restored-missing");
    let error = restore_to(&repository, &incr.id, &target, false).await.unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none(), "nothing written");
    assert_eq!(verify::list_backups(&repository).await.unwrap()[0].state, "incomplete");
}

async fn read_object(store: &Arc<dyn ObjectStore>, key: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    store.get(key).await.unwrap().read_to_end(&mut out).await.unwrap();
    out
}

fn age_tree(root: &Path, when: SystemTime) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_backup_and_restore() {
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    full_story(backend.store.clone(), scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_backup_and_restore() {
    let Some(backend) = common::s3_backend().await else { return };
    let scratch = tempfile::tempdir().unwrap();
    full_story(backend.store.clone(), scratch.path()).await;
}
