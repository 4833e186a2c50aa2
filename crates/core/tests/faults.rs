//! Failure paths, driven by the fault-injecting store over the in-memory one: an upload that
//! fails half-way, a read cut short, a delete refused in the middle of expire. Each test checks
//! that the fault it injects was hit, then what a DBA cares about: nothing acknowledged that is
//! not stored, nothing half-published, and the next run completes.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::{manifest, verify, BackupKind};
use backstop_core::expire;
use backstop_core::layout;
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::{ExpireArgs, PolicyArgs};
use backstop_core::store::faulty::{Fault, FaultyStore, Operation};
use backstop_core::store::memory::MemoryStore;
use backstop_core::wal::{self, WalFileName};
use backstop_core::{ObjectStore, PutResult};
use common::backup_fixture::*;

const SYSTEM_IDENTIFIER: u64 = 42;
const SEGMENT: u32 = 16 << 20;

fn faulty() -> (FaultyStore, Arc<dyn ObjectStore>) {
    let faulty = FaultyStore::new(Arc::new(MemoryStore::new()));
    let store: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
    (faulty, store)
}

/// A WAL segment's bytes whose page header names `SYSTEM_IDENTIFIER`.
fn segment_bytes(fill: u8) -> Vec<u8> {
    let mut bytes = vec![fill; 64 << 10];
    // XLogLongPageHeaderData: magic (u16), info (u16, XLP_LONG_HEADER = 2), tli, pageaddr, rem_len,
    // then system identifier (u64 at 24), segment size (u32 at 32), block size (u32 at 36).
    bytes[..40].fill(0);
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&2u16.to_le_bytes());
    bytes[24..32].copy_from_slice(&SYSTEM_IDENTIFIER.to_le_bytes());
    bytes[32..36].copy_from_slice(&SEGMENT.to_le_bytes());
    bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
    bytes
}

/// WAL push: a store that fails the upload is never acknowledged (PostgreSQL keeps the segment and
/// retries), and the retry stores it whole. A second push of the same segment that meets a read
/// cut short while comparing with the stored copy is not acknowledged either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_upload_is_never_acknowledged_and_the_retry_stores_it() {
    let (faults, store) = faulty();
    let repository = repository(store.clone());
    let name = wal::segment_name(1, 5, SEGMENT);
    let path = layout::wal(&WalFileName::parse(&name).unwrap());
    let contents = segment_bytes(7);

    let rule = faults.inject(Operation::Put, &name, 0, 1, Fault::Fail);
    let error = wal::archive_file(&repository, &name, contents.clone(), SYSTEM_IDENTIFIER).await.unwrap_err();
    assert_eq!(faults.fired(rule), 1, "the upload met the fault");
    assert!(error.to_string().contains("injected fault"), "{error}");
    assert!(store.head(&repository.key(&path)).await.unwrap().is_none(), "nothing is stored under its name");

    let stored = wal::archive_file(&repository, &name, contents.clone(), SYSTEM_IDENTIFIER).await.unwrap();
    assert!(matches!(stored, PutResult::Stored { .. }), "{stored:?}");
    assert_eq!(repository.get_bytes(&path).await.unwrap(), contents);

    // Pushed again (PostgreSQL retries after a crash): the stored copy is read back to compare;
    // cut short, it proves nothing, so nothing is acknowledged.
    let cut = faults.inject(Operation::Get, &name, 0, u64::MAX, Fault::Truncate(20));
    let again = wal::archive_file(&repository, &name, contents.clone(), SYSTEM_IDENTIFIER).await;
    assert!(faults.fired(cut) >= 1, "the comparison read met the fault");
    assert!(again.is_err(), "{again:?}");
    faults.heal();
    let again = wal::archive_file(&repository, &name, contents, SYSTEM_IDENTIFIER).await.unwrap();
    assert!(matches!(again, PutResult::AlreadyIdentical { .. }), "{again:?}");
}

/// A base backup whose second pack upload fails publishes no manifest (the commit point), so
/// nothing lists or restores a half backup; the next backup completes and restores byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_that_fails_half_way_publishes_nothing_and_the_next_one_restores() {
    use backstop_core::backups::take::{self, Progress, TakeOptions};
    let (faults, store) = faulty();
    let repository = repository(store.clone());
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    // Enough data for several packs (packs close at 16 MiB).
    let mut noise = vec![0u8; 40 << 20];
    common::NoiseSource::new(3).fill(&mut noise);
    std::fs::write(data.join("base/5/big"), &noise).unwrap();
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, t0 - Duration::from_secs(60));

    let rule = faults.inject(Operation::Put, "packs/", 1, 1, Fault::Fail);
    let failed = take::copy_files(
        &repository,
        TakeOptions {
            data_dir: data.clone(),
            kind: BackupKind::Full,
            previous: None,
            reread_after: Duration::from_secs(7 * 86_400),
            include_manifest_key: false,
            parallel: 2,
            page_checks: None,
            changed: None,
        },
        Arc::new(Progress::default()),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(faults.fired(rule), 1, "the second pack upload met the fault");
    assert!(failed.is_err(), "the backup fails");
    let listed = verify::list_backups(&repository).await.unwrap();
    assert!(listed.is_empty(), "no manifest was published: {listed:?}");

    let backup = take_backup(&repository, &data, BackupKind::Full, None, t0).await;
    assert!(backup.packs.len() >= 3, "{} packs", backup.packs.len());
    let target = scratch.path().join("restored");
    restore_to(&repository, &backup.id, &target, false).await.unwrap();
    assert_same(&target, &data);
}

/// Expire refused a delete half-way: it stops there (the manifest it could not delete still
/// lists its backup, and its packs are all still there, so that backup still restores), and the
/// next run finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_stopped_by_a_failed_delete_leaves_a_consistent_repository_and_the_next_run_finishes() {
    let (faults, store) = faulty();
    let repository = repository(store.clone());
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3 * 3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    let first = take_backup(&repository, &data, BackupKind::Full, None, t0).await;
    std::fs::write(data.join("base/5/changed"), vec![9u8; 300_000]).unwrap();
    let second =
        take_backup(&repository, &data, BackupKind::Full, Some(first.clone()), t0 + Duration::from_secs(3600)).await;
    let third =
        take_backup(&repository, &data, BackupKind::Full, Some(second.clone()), t0 + Duration::from_secs(7200)).await;
    let args = ExpireArgs {
        dry_run: false,
        backups: Some(PolicyArgs { keep_last: 1, ..Default::default() }),
        snapshots: None,
        logical: None,
        grace: Some("0s".into()),
    };
    let plan = expire::plan(&repository, &args, SystemTime::now()).await.unwrap();
    let doomed: Vec<&str> = plan.removals.iter().filter(|r| r.what == "backup").map(|r| r.name.as_str()).collect();
    assert_eq!(doomed, vec![first.id.as_str(), second.id.as_str()]);

    // The second backup's manifest cannot be deleted.
    let rule = faults.inject(Operation::Delete, &format!("backups/{}/", second.id), 0, 1, Fault::Fail);
    let error = expire::apply(&repository, &plan, &CancellationToken::new()).await.unwrap_err();
    assert_eq!(faults.fired(rule), 1);
    assert!(error.to_string().contains("injected fault"), "{error}");
    let listed: Vec<String> =
        verify::list_backups(&repository).await.unwrap().iter().map(|b| b.id.to_string()).collect();
    assert_eq!(listed, vec![second.id.to_string(), third.id.to_string()], "the first went, the second stays listed");
    let target = scratch.path().join("restored-second");
    restore_to(&repository, &second.id, &target, false).await.expect("what is still listed still restores");

    let plan = expire::plan(&repository, &args, SystemTime::now()).await.unwrap();
    expire::apply(&repository, &plan, &CancellationToken::new()).await.unwrap();
    let listed: Vec<String> =
        verify::list_backups(&repository).await.unwrap().iter().map(|b| b.id.to_string()).collect();
    assert_eq!(listed, vec![third.id.to_string()]);
    assert!(manifest::read(&repository, &second.id).await.is_err());
    let target = scratch.path().join("restored-third");
    restore_to(&repository, &third.id, &target, false).await.unwrap();
    assert_same(&target, &data);
}

/// The next base backup builds on the newest backup whose packs are all stored, found by reading
/// manifests from the newest back: a newer backup with a lost pack is passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_backup_builds_on_the_newest_backup_with_every_pack_stored() {
    let (_faults, store) = faulty();
    let repository = repository(store.clone());
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3 * 3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    assert!(verify::newest_verified(&repository).await.unwrap().1.is_none(), "an empty repository has none");
    let first = take_backup(&repository, &data, BackupKind::Full, None, t0).await;
    std::fs::write(data.join("base/5/changed"), vec![9u8; 300_000]).unwrap();
    let second =
        take_backup(&repository, &data, BackupKind::Incremental, Some(first.clone()), t0 + Duration::from_secs(3600))
            .await;
    let (ids, newest) = verify::newest_verified(&repository).await.unwrap();
    assert_eq!(ids, vec![first.id.clone(), second.id.clone()]);
    assert_eq!(newest.unwrap().manifest.unwrap().id, second.id);

    // Lose a pack only the second backup uses: it is incomplete, the first is what comes next.
    let own = second.packs.iter().find(|p| first.packs.iter().all(|q| q.id != p.id)).expect("a pack of its own");
    repository.delete(&layout::pack(&own.id).unwrap()).await.unwrap();
    let (ids, newest) = verify::newest_verified(&repository).await.unwrap();
    assert_eq!(ids.len(), 2, "both are still listed");
    assert_eq!(newest.unwrap().manifest.unwrap().id, first.id);
    let listed = verify::list_backups(&repository).await.unwrap();
    assert_eq!(listed.iter().rev().find(|b| b.verified()).map(|b| b.id.clone()), Some(first.id.clone()));
}
