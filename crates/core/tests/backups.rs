//! Base backups against a fake data directory, on the file store and on Garage: a full backup, an
//! incremental one after a small change, restores that equal the source byte for byte, a delta
//! restore over a stale copy, and damaged or missing packs refused before anything is started.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::{verify, BackupKind};
use backstop_core::repository::CancellationToken;
use backstop_core::ObjectStore;
use common::backup_fixture::*;

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
    store.delete(&repository.key(&backstop_core::layout::backup_manifest(&full.id))).await.unwrap();
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
    let pack_key = repository.key(&backstop_core::layout::pack(&pack.id).unwrap());
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
