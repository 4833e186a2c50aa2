//! Logical backup manifests against a real repository (file store and Garage): any database name
//! is stored under one path component and listed back as itself, a manifest is read back only
//! where it was written, and a manifest is never replaced.

mod common;

use std::sync::Arc;

use backstop_core::backups::manifest::TableRows;
use backstop_core::expire;
use backstop_core::layout::{self, LogicalFile};
use backstop_core::logical::manifest::{self, LogicalManifest, StoredObject, Verification, LOGICAL_FORMAT_VERSION};
use backstop_core::logical::{self, LogicalId};
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::{ExpireArgs, PolicyArgs};
use backstop_core::{ObjectStore, WriteMode};
use common::backup_fixture::repository;

fn sample(database: &str, id: &str) -> LogicalManifest {
    let object = |bytes| StoredObject { bytes, sha256: "ab".repeat(32) };
    LogicalManifest {
        format_version: LOGICAL_FORMAT_VERSION,
        id: LogicalId::parse(id).unwrap(),
        cluster: "c1".into(),
        database: database.into(),
        pg_version_num: 150000,
        pg_dump_version: "pg_dump (PostgreSQL) 15.20".into(),
        start_time: 1.0,
        stop_time: 2.0,
        dump: object(4096),
        schema: object(10),
        globals: object(10),
        tables: vec![TableRows { table: "public.orders".into(), rows: 3 }],
        sequences: vec![],
        verification: Verification { list_entries: 9, verified_at: 2.0 },
    }
}

async fn story(store: Arc<dyn ObjectStore>) {
    let repository = repository(store);
    let names = ["app", "my db", "a/b", ".."];
    for (i, name) in names.iter().enumerate() {
        manifest::write(&repository, &sample(name, &format!("2026112{i}T031500Z-L"))).await.unwrap();
    }
    manifest::write(&repository, &sample("app", "20261129T031500Z-L")).await.unwrap();
    // A manifest is the commit point: written once, never replaced by another (writing the same
    // bytes again is the idempotent retry of a write that was cut off).
    let mut other = sample("app", "20261129T031500Z-L");
    other.tables[0].rows = 4;
    assert!(manifest::write(&repository, &other).await.is_err());
    manifest::write(&repository, &sample("app", "20261129T031500Z-L")).await.unwrap();

    let all = manifest::list_ids(&repository, None).await.unwrap();
    let listed: Vec<(&str, &str)> = all.iter().map(|(d, id)| (d.as_str(), id.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("..", "20261123T031500Z-L"),
            ("a/b", "20261122T031500Z-L"),
            ("app", "20261120T031500Z-L"),
            ("app", "20261129T031500Z-L"),
            ("my db", "20261121T031500Z-L"),
        ]
    );
    let app = manifest::list_ids(&repository, Some("app")).await.unwrap();
    assert_eq!(app.len(), 2);
    let (database, id) = &app[1];
    assert_eq!(manifest::read(&repository, database, id).await.unwrap(), sample("app", "20261129T031500Z-L"));

    // A manifest copied under another database is refused: it says which one it describes.
    let copied = LogicalId::parse("20261130T031500Z-L").unwrap();
    let bytes = repository.get_bytes(&layout::logical("app", id, LogicalFile::Manifest)).await.unwrap();
    repository
        .put_bytes(&layout::logical("other", &copied, LogicalFile::Manifest), bytes.into(), WriteMode::CreateNew)
        .await
        .unwrap();
    let error = manifest::read(&repository, "other", &copied).await.unwrap_err().to_string();
    assert!(error.contains("moved or copied"), "{error}");
}

/// A dump streamed in is read back whole through its checksums; a damaged or swapped object is
/// refused with the key and both checksums.
async fn objects_story(store: Arc<dyn ObjectStore>) {
    let repository = repository(store.clone());
    let id = LogicalId::parse("20261122T031500Z-L").unwrap();
    let dump: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let stored = logical::store_object(&repository, "app", &id, LogicalFile::Dump, &dump[..]).await.unwrap();
    assert_eq!(stored.bytes, dump.len() as u64);
    logical::verify_object(&repository, "app", &id, LogicalFile::Dump, &stored).await.unwrap();

    // Another object under the dump's name (same codec, valid checksums) is not the recorded dump.
    let other = LogicalId::parse("20261123T031500Z-L").unwrap();
    logical::store_object(&repository, "app", &other, LogicalFile::Dump, &b"not the dump"[..]).await.unwrap();
    let error =
        logical::verify_object(&repository, "app", &other, LogicalFile::Dump, &stored).await.unwrap_err().to_string();
    assert!(error.contains("not the 3000000 bytes"), "{error}");

    // A flipped byte in the stored object fails its checksums.
    let key = repository.key(&layout::logical("app", &id, LogicalFile::Dump));
    let mut raw = repository.get_raw(&layout::logical("app", &id, LogicalFile::Dump)).await.unwrap();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x40;
    store.delete(&key).await.unwrap();
    store.put(&key, raw.into(), WriteMode::CreateNew).await.unwrap();
    assert!(logical::verify_object(&repository, "app", &id, LogicalFile::Dump, &stored).await.is_err());
}

/// Retention keeps the newest logical backups of each database by the policy, removes the
/// others with every object they hold, and an interrupted dump (no manifest) past the grace.
async fn expire_story(store: Arc<dyn ObjectStore>) {
    let repository = repository(store);
    let now = std::time::SystemTime::now();
    let day = 86_400.0;
    let now_s = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for (i, database) in [(0, "app"), (1, "app"), (2, "app"), (3, "app"), (1, "other")] {
        let mut m = sample(database, &format!("2026112{i}T031500Z-L"));
        m.start_time = now_s - (4 - i) as f64 * day;
        m.stop_time = m.start_time + 60.0;
        let id = m.id.clone();
        logical::store_object(&repository, database, &id, LogicalFile::Dump, &b"dump bytes"[..]).await.unwrap();
        manifest::write(&repository, &m).await.unwrap();
    }
    // A dump cut off before its manifest.
    let cut = LogicalId::parse("20261101T031500Z-L").unwrap();
    logical::store_object(&repository, "app", &cut, LogicalFile::Dump, &b"half a dump"[..]).await.unwrap();

    let args = ExpireArgs {
        dry_run: false,
        backups: None,
        snapshots: None,
        logical: Some(PolicyArgs { keep_last: 2, ..Default::default() }),
        grace: Some("0s".into()),
    };
    let plan = expire::plan(&repository, &args, now).await.unwrap();
    let mut gone: Vec<(&str, String)> = plan.removals.iter().map(|r| (r.what, r.name.clone())).collect();
    gone.sort();
    assert_eq!(
        gone,
        [
            ("incomplete logical backup", "app 20261101T031500Z-L".to_string()),
            ("logical backup", "app 20261120T031500Z-L".to_string()),
            ("logical backup", "app 20261121T031500Z-L".to_string()),
        ]
    );
    assert_eq!(plan.kept_logical, 3);
    let removed = plan.removals.iter().find(|r| r.what == "logical backup").unwrap();
    assert!(removed.keys[0].ends_with("/manifest.json"), "the commit point goes first: {:?}", removed.keys);
    expire::apply(&repository, &plan, &CancellationToken::new()).await.unwrap();
    let left: Vec<String> =
        manifest::list_ids(&repository, None).await.unwrap().into_iter().map(|(d, id)| format!("{d} {id}")).collect();
    assert_eq!(left, ["app 20261122T031500Z-L", "app 20261123T031500Z-L", "other 20261121T031500Z-L"]);
    let objects = repository.store().list_all("c1/logical/").await.unwrap();
    assert_eq!(objects.len(), 6, "two objects for each of the three kept, nothing else: {objects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_logical_expire() {
    expire_story(common::file_backend().store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_logical_expire() {
    let Some(backend) = common::s3_backend().await else { return };
    expire_story(backend.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_logical_objects() {
    objects_story(common::file_backend().store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_logical_objects() {
    let Some(backend) = common::s3_backend().await else { return };
    objects_story(backend.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_logical_manifests() {
    let backend = common::file_backend();
    story(backend.store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_logical_manifests() {
    let Some(backend) = common::s3_backend().await else { return };
    story(backend.store.clone()).await;
}
