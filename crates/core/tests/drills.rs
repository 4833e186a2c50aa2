//! Drills that need only the repository, on the file store and Garage: `wal_fetch` passes on a
//! whole chain and fails naming a gap or a damaged segment; the PITR drill's preparation restores
//! the newest backup, fetches exactly the WAL to replay, and writes recovery settings that read only
//! its own spool, with pg_control last.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::restore::RestoreProgress;
use backstop_core::backups::{BackupKind, Lsn};
use backstop_core::drills;
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::WalFetchArgs;
use backstop_core::{ObjectStore, WriteMode};
use common::backup_fixture::*;

const SEGMENT: u64 = 16 << 20;

async fn put_segment(repository: &backstop_core::Repository, n: u64) -> backstop_core::ObjectPath {
    let name = backstop_core::wal::segment_name(1, n, SEGMENT as u32);
    let path = backstop_core::layout::wal(&backstop_core::wal::WalFileName::parse(&name).unwrap());
    repository.put_bytes(&path, noise(n, 2048).into(), WriteMode::Overwrite).await.unwrap();
    path
}

async fn story(store: Arc<dyn ObjectStore>, scratch: &std::path::Path) {
    let repository = repository(store.clone());
    let data = scratch.join("data");
    fake_data_dir(&data);
    let at = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, at - Duration::from_secs(60));

    // No backup yet: both drills fail, saying so.
    let none = drills::wal_fetch(&repository, &WalFetchArgs { newest: 2, sample: 2 }).await.unwrap_err();
    assert!(none.to_string().contains("no valid base backup"), "{none}");

    take_backup_from(&repository, &data, BackupKind::Full, None, at, Some(Lsn(2 * SEGMENT + 0x28))).await;
    let mut paths = Vec::new();
    for n in 1..=6 {
        paths.push(put_segment(&repository, n).await);
    }
    // A whole chain from segment 2 (the backup's start) to 6.
    let passed = drills::wal_fetch(&repository, &WalFetchArgs { newest: 2, sample: 2 }).await.unwrap();
    assert_eq!(passed.from_segment, "000000010000000000000002");
    assert_eq!(passed.newest_segment, "000000010000000000000006");
    assert_eq!(passed.segments_in_chain, 5);
    assert_eq!(passed.fetched.len(), 4);
    assert!(passed
        .fetched
        .starts_with(&["000000010000000000000006".to_string(), "000000010000000000000005".to_string()]));

    // The PITR drill's preparation: backup restored, WAL from its start up to one segment past its
    // end fetched, recovery reading only the spool, pg_control in place.
    let drill = scratch.join("drill");
    let prepared = drills::pitr::prepare(
        &repository,
        &drill,
        SEGMENT,
        Arc::new(RestoreProgress::default()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(prepared.replay_to, "000000010000000000000003", "at most max_replay past the backup's end");
    let mut spooled: Vec<String> =
        fs::read_dir(drill.join("wal")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    spooled.sort();
    assert_eq!(spooled, vec!["000000010000000000000002", "000000010000000000000003"]);
    assert_eq!(fs::read(drill.join("wal/000000010000000000000003")).unwrap(), noise(3, 2048), "stored plain");
    let settings = fs::read_to_string(drill.join("data/postgresql.auto.conf")).unwrap();
    assert!(settings.contains(&format!("restore_command = 'cp \"{}/wal/%f\" \"%p\"'", drill.display())), "{settings}");
    assert!(drill.join("data/recovery.signal").exists());
    assert!(drill.join("data/global/pg_control").exists());
    // Nothing of the backup's postgresql.auto.conf survives (its commands and libraries would run
    // as the server's user); apart from it and recovery.signal, the data directory is the
    // backup's, byte for byte.
    assert!(!settings.contains("# auto"), "the backed-up settings are replaced: {settings}");
    assert!(settings.starts_with("# written by the backstop pitr drill\n"), "{settings}");
    fs::remove_file(drill.join("data/recovery.signal")).unwrap();
    fs::write(drill.join("data/postgresql.auto.conf"), "# auto\n").unwrap();
    assert_same(&drill.join("data"), &data);

    // A damaged segment: the preparation refuses it (nothing is replayed from bad bytes), and the
    // wal_fetch drill fails naming it when it is among those fetched.
    let key = repository.key(&paths[2]); // segment 3
    let mut bytes = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        store.get(&key).await.unwrap().read_to_end(&mut bytes).await.unwrap();
    }
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    store.put(&key, bytes.into(), WriteMode::Overwrite).await.unwrap();
    let refused = drills::pitr::prepare(
        &repository,
        &scratch.join("drill2"),
        SEGMENT,
        Arc::new(RestoreProgress::default()),
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, backstop_core::Error::Corrupt { .. }), "{refused}");
    let failed = drills::wal_fetch(&repository, &WalFetchArgs { newest: 10, sample: 0 }).await.unwrap_err();
    assert!(failed.to_string().contains("segment 000000010000000000000003 does not fetch"), "{failed}");

    // A gap after the backup: the drill fails naming it.
    store.delete(&repository.key(&paths[4])).await.unwrap(); // segment 5
    let gap = drills::wal_fetch(&repository, &WalFetchArgs { newest: 1, sample: 0 }).await.unwrap_err();
    assert!(gap.to_string().contains("has a gap: 1 segment(s) from 000000010000000000000005"), "{gap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_drills() {
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    story(backend.store.clone(), scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_drills() {
    let Some(backend) = common::s3_backend().await else { return };
    let scratch = tempfile::tempdir().unwrap();
    story(backend.store.clone(), scratch.path()).await;
}
