//! A repository written by backstop 0.1.0 stays readable: the fixture in
//! tests/fixtures/repository-0.1.0 was written by that release's code (see its README) and this
//! release must list its backups as verified, verify every chunk and the WAL chain, restore each
//! backup to exactly the files recorded in expected.json, and fetch every WAL segment intact.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use backstop_core::backups::{verify, BackupId};
use backstop_core::repository::CancellationToken;
use backstop_core::store::file::FileStore;
use common::backup_fixture::*;
use sha2::Digest;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/repository-0.1.0");

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_repository_written_by_0_1_0_lists_verifies_and_restores() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(FIXTURE).join("expected.json")).unwrap()).unwrap();
    // A copy: the test must not be able to change the fixture, whatever the code does.
    let scratch = tempfile::tempdir().unwrap();
    copy_tree(&Path::new(FIXTURE).join("repository"), &scratch.path().join("repository"));
    let repository = repository(Arc::new(FileStore::new(scratch.path().join("repository"))));
    assert_eq!(repository.cluster(), expected["cluster"].as_str().unwrap());

    // Its objects are unsigned: nothing of it is read until the DBA adopts it.
    let first_segment = expected["segments"].as_object().unwrap().keys().next().unwrap().clone();
    let segment = backstop_core::layout::wal(&backstop_core::wal::WalFileName::parse(&first_segment).unwrap());
    let refused = repository.get_bytes(&segment).await.unwrap_err();
    assert!(matches!(refused, backstop_core::Error::Unauthenticated { .. }), "{refused}");
    let listed = verify::list_backups(&repository).await.unwrap();
    assert!(listed.iter().all(|b| !b.verified()), "unadopted backups must not list as verified: {listed:?}");

    let report = backstop_core::adopt::adopt(&repository, None, &|_, _| {}).await.unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert!(report.adopted > 0 && report.record.is_some(), "{report:?}");
    // Adopting again finds nothing new.
    let again = backstop_core::adopt::adopt(&repository, None, &|_, _| {}).await.unwrap();
    assert_eq!((again.adopted, again.record.clone()), (0, None), "{again:?}");

    let listed = verify::list_backups(&repository).await.unwrap();
    let backups = expected["backups"].as_object().unwrap();
    assert_eq!(listed.len(), backups.len(), "{listed:?}");
    for status in &listed {
        assert!(status.verified(), "{} lists as {:?}", status.id, status.problem);
    }
    let report =
        verify::verify(&repository, 2, &verify::VerifyProgress::default(), &CancellationToken::new()).await.unwrap();
    for check in &report.backups {
        assert!(check.ok && check.wal_gaps.is_empty(), "{check:?}");
    }
    assert!(report.packs_checked > 0);

    for (id, files) in backups {
        let target = scratch.path().join(format!("restored-{id}"));
        restore_to(&repository, &BackupId::parse(id).unwrap(), &target, false).await.unwrap();
        let restored: BTreeMap<String, String> = tree(&target)
            .into_iter()
            .filter_map(|(path, bytes)| bytes.map(|b| (path, hex::encode(sha2::Sha256::digest(&b)))))
            .collect();
        for (path, sha) in files.as_object().unwrap() {
            assert_eq!(restored.get(path), Some(&sha.as_str().unwrap().to_string()), "{id}: {path}");
        }
    }

    for (name, sha) in expected["segments"].as_object().unwrap() {
        let path = backstop_core::layout::wal(&backstop_core::wal::WalFileName::parse(name).unwrap());
        let bytes = repository.get_bytes(&path).await.unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha.as_str().unwrap(), "{name}");
    }
}
