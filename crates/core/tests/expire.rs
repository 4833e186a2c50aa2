//! `expire` against a real repository (file store and Garage): three base backups a day apart
//! with changes between them, WAL around them, a pack left by an interrupted backup, and table
//! snapshots. Keeping the newest two must remove exactly the oldest backup, the WAL before the
//! oldest kept backup's start, the packs only the removed backup and the interrupted one used,
//! and nothing a kept backup needs: every kept backup still restores byte for byte.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::{verify, BackupKind, Lsn};
use backstop_core::expire;
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::{ExpireArgs, PolicyArgs};
use backstop_core::{ObjectStore, WriteMode};
use common::backup_fixture::*;

const SEGMENT: u64 = 16 << 20;

async fn story(store: Arc<dyn ObjectStore>, scratch: &std::path::Path) {
    let repository = repository(store.clone());
    let data = scratch.join("data");
    fake_data_dir(&data);
    let day = Duration::from_secs(86_400);
    let t0 = SystemTime::now() - 3 * day;
    // A 40 MiB table that is dropped after the first backup: whole packs only that backup needs.
    // (A pack is freed only when no kept backup names any of its chunks.)
    fs::write(data.join("base/5/17000"), noise(77, 40 << 20)).unwrap();
    age_tree(&data, t0 - Duration::from_secs(60));
    let first = take_backup_from(&repository, &data, BackupKind::Full, None, t0, Some(Lsn(2 * SEGMENT + 0x28))).await;
    // Change the big table so the next backups need packs of their own.
    let change = |seed: u64| {
        let mut table = fs::read(data.join("base/5/16384")).unwrap();
        table[..8192].copy_from_slice(&noise(seed, 8192));
        fs::write(data.join("base/5/16384"), &table).unwrap();
    };
    change(101);
    fs::remove_file(data.join("base/5/17000")).unwrap();
    let second = take_backup_from(
        &repository,
        &data,
        BackupKind::Incremental,
        Some(first.clone()),
        t0 + day,
        Some(Lsn(4 * SEGMENT + 0x28)),
    )
    .await;
    change(102);
    let third = take_backup_from(
        &repository,
        &data,
        BackupKind::Incremental,
        Some(second.clone()),
        t0 + 2 * day,
        Some(Lsn(6 * SEGMENT + 0x28)),
    )
    .await;
    // WAL segments 1 to 7 on timeline 1, and a history file.
    for n in 1..=7u64 {
        let name = backstop_core::wal::segment_name(1, n, SEGMENT as u32);
        let path = backstop_core::layout::wal(&backstop_core::wal::WalFileName::parse(&name).unwrap());
        repository.put_bytes(&path, noise(n, 1024).into(), WriteMode::Overwrite).await.unwrap();
    }
    let history = backstop_core::layout::wal(&backstop_core::wal::WalFileName::parse("00000002.history").unwrap());
    repository.put_bytes(&history, "1\t0/5000000\tno reason\n".into(), WriteMode::Overwrite).await.unwrap();
    // A pack an interrupted backup left (no manifest names it).
    let orphan = backstop_core::layout::pack(&"ab".repeat(32)).unwrap();
    repository.put_bytes(&orphan, noise(7, 4096).into(), WriteMode::Overwrite).await.unwrap();

    let args = |keep_last: usize, dry_run: bool| ExpireArgs {
        dry_run,
        backups: Some(PolicyArgs { keep_last, ..Default::default() }),
        snapshots: None,
        logical: None,
        grace: Some("0s".into()),
    };
    let packs_of =
        |m: &backstop_core::backups::BackupManifest| -> Vec<String> { m.packs.iter().map(|p| p.id.clone()).collect() };
    let only_first: Vec<String> = packs_of(&first)
        .into_iter()
        .filter(|p| !packs_of(&second).contains(p) && !packs_of(&third).contains(p))
        .collect();
    assert!(!only_first.is_empty(), "the first backup has a pack of its own");

    // A dry run lists what would go and removes nothing.
    let plan = expire::plan(&repository, &args(2, true), SystemTime::now()).await.unwrap();
    let names = |what: &str| -> Vec<String> {
        plan.removals.iter().filter(|r| r.what == what).map(|r| r.name.clone()).collect()
    };
    assert_eq!(names("backup"), vec![first.id.to_string()]);
    // WAL before segment 4 (where the oldest kept backup starts) goes; the history file stays.
    assert_eq!(names("wal"), vec!["000000010000000000000001", "000000010000000000000002", "000000010000000000000003"]);
    let mut expected_packs = only_first.clone();
    expected_packs.push("ab".repeat(32));
    expected_packs.sort();
    let mut packs = names("pack");
    packs.sort();
    assert_eq!(packs, expected_packs);
    assert!(plan.bytes() > 0);
    assert_eq!(verify::list_backups(&repository).await.unwrap().len(), 3, "a dry run removes nothing");

    // Applying it removes exactly that; both kept backups still restore to their source.
    expire::apply(&repository, &plan, &CancellationToken::new()).await.unwrap();
    let left = verify::list_backups(&repository).await.unwrap();
    assert_eq!(left.iter().map(|b| b.id.clone()).collect::<Vec<_>>(), vec![second.id.clone(), third.id.clone()]);
    assert!(left.iter().all(|b| b.verified()), "kept backups have every pack: {left:?}");
    let restored = scratch.join("restored");
    restore_to(&repository, &third.id, &restored, false).await.unwrap();
    assert_same(&restored, &data);
    let wal: Vec<String> = verify::archived_wal(&repository).await.unwrap().into_iter().map(|w| w.name.name).collect();
    assert_eq!(wal[0], "000000010000000000000004");
    assert!(wal.contains(&"00000002.history".to_string()));

    // keep_last 0 still keeps the newest valid backup and the WAL from its start.
    let plan = expire::plan(&repository, &args(0, false), SystemTime::now()).await.unwrap();
    let gone: Vec<&str> = plan.removals.iter().filter(|r| r.what == "backup").map(|r| r.name.as_str()).collect();
    assert_eq!(gone, vec![second.id.as_str()], "the newest valid backup is never removed");
    assert!(plan.kept_backups.iter().any(|(id, why)| id == third.id.as_str() && why.contains(&"newest valid")));

    // A signed backup dated a year ahead (a wrong clock, or a key holder's trick) does not become
    // "the newest valid backup": keep_last 1 keeps the real newest and the future one, removes
    // only the older real one, and says why the future one stayed.
    change(103);
    let future = take_backup_from(
        &repository,
        &data,
        BackupKind::Incremental,
        Some(third.clone()),
        SystemTime::now() + 365 * day,
        Some(Lsn(7 * SEGMENT + 0x28)),
    )
    .await;
    let plan = expire::plan(&repository, &args(1, false), SystemTime::now()).await.unwrap();
    let gone: Vec<&str> = plan.removals.iter().filter(|r| r.what == "backup").map(|r| r.name.as_str()).collect();
    assert_eq!(gone, vec![second.id.as_str()]);
    assert!(plan.kept_backups.iter().any(|(id, why)| id == third.id.as_str() && why.contains(&"newest valid")));
    assert!(plan.kept_backups.iter().any(|(id, why)| id == future.id.as_str() && why == &vec!["dated in the future"]));
    assert!(
        plan.held_back.iter().any(|h| h.contains(future.id.as_str()) && h.contains("future")),
        "{:?}",
        plan.held_back
    );

    // A backup whose manifest cannot be read holds every pack back (its references are unknown).
    let broken = backstop_core::layout::backup_manifest(&second.id);
    store.put(&repository.key(&broken), b"not a manifest".to_vec().into(), WriteMode::Overwrite).await.unwrap();
    let plan = expire::plan(&repository, &args(1, false), SystemTime::now()).await.unwrap();
    assert_eq!(plan.count("pack"), 0, "{:?}", plan.held_back);
    assert!(plan.held_back.iter().any(|h| h.contains("could not be read")), "{:?}", plan.held_back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_expire() {
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    story(backend.store.clone(), scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_expire() {
    let Some(backend) = common::s3_backend().await else { return };
    let scratch = tempfile::tempdir().unwrap();
    story(backend.store.clone(), scratch.path()).await;
}
