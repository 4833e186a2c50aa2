//! Base backups against a fake data directory, on the file store and on Garage: a full backup, an
//! incremental one after a small change, restores that equal the source byte for byte, a delta
//! restore over a stale copy, and damaged or missing packs refused before anything is started.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::{verify, window, BackupKind};
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

fn restore_options(
    target: &Path,
    map: &[(u32, &Path)],
    delta: bool,
) -> backstop_core::backups::restore::RestoreOptions {
    backstop_core::backups::restore::RestoreOptions {
        target_dir: target.to_path_buf(),
        tablespace_map: map.iter().map(|(oid, p)| (*oid, p.to_path_buf())).collect(),
        delta,
        parallel: 2,
        sparse_databases: Default::default(),
    }
}

async fn restore_with(
    repository: &backstop_core::Repository,
    manifest: &backstop_core::backups::BackupManifest,
    options: &backstop_core::backups::restore::RestoreOptions,
) -> backstop_core::Result<backstop_core::backups::restore::RestoreSummary> {
    backstop_core::backups::restore::restore(
        repository,
        manifest,
        options,
        Arc::new(Default::default()),
        &CancellationToken::new(),
    )
    .await
}

/// Design rule 13 behind the signature (a manifest of ours, or one signed with a leaked key): a
/// restore writes only inside the directories it was given, with the owner's modes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_cannot_make_a_restore_write_outside_its_target() {
    use backstop_core::backups::manifest::{FileEntry, FileKind, Tablespace};
    use std::os::unix::fs::PermissionsExt;
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let repository = repository(backend.store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    let full = take_backup(&repository, &data, BackupKind::Full, None, t0).await;
    let key = "manifest";

    // A file where the tablespace link belongs, a chunk longer than any chunk, a location with '..'.
    let mut file_link = full.clone();
    let mut entry = full.files.iter().find(|f| f.kind == FileKind::File && f.size > 0).unwrap().clone();
    entry.path = "pg_tblspc/1".into();
    file_link.tablespaces.push(Tablespace { oid: 1, location: "/tmp/x".into() });
    file_link.files.push(entry);
    assert!(file_link.validate(key).unwrap_err().to_string().contains("tablespace link"));
    let mut long_chunk = full.clone();
    let file = long_chunk.files.iter_mut().find(|f| !f.chunks.is_empty()).unwrap();
    file.chunks[0].len = (backstop_core::backups::CHUNK_SIZE + 1) as u32;
    assert!(long_chunk.validate(key).is_err());
    let mut dotdot = full.clone();
    dotdot.tablespaces.push(Tablespace { oid: 7, location: "/srv/../etc".into() });
    assert!(dotdot.validate(key).unwrap_err().to_string().contains("invalid location"));

    // A tablespace recorded at a location inside the target, or two inside one another: refused
    // before anything is written.
    let target = scratch.path().join("restored");
    let mut inside = full.clone();
    let space_dir = |oid: u32| FileEntry {
        path: format!("pg_tblspc/{oid}"),
        kind: FileKind::Dir,
        mode: 0o700,
        size: 0,
        mtime_s: 0,
        mtime_ns: 0,
        inode: 0,
        read_at: 0.0,
        chunks: vec![],
    };
    inside.tablespaces.push(Tablespace { oid: 9, location: target.join("base").display().to_string() });
    inside.files.push(space_dir(9));
    let error = restore_with(&repository, &inside, &restore_options(&target, &[], false)).await.unwrap_err();
    assert!(error.to_string().contains("inside one another"), "{error}");
    let outer = scratch.path().join("outer");
    let mut nested = full.clone();
    nested.tablespaces.push(Tablespace { oid: 9, location: outer.display().to_string() });
    nested.tablespaces.push(Tablespace { oid: 10, location: outer.join("inner").display().to_string() });
    nested.files.extend([space_dir(9), space_dir(10)]);
    let error = restore_with(&repository, &nested, &restore_options(&target, &[], false)).await.unwrap_err();
    assert!(error.to_string().contains("inside tablespace"), "{error}");
    // A delta restore writes only where it is told: an unmapped tablespace is refused.
    let mut with_space = full.clone();
    let live = scratch.path().join("live-tablespace");
    fs::create_dir_all(&live).unwrap();
    fs::write(live.join("PG_15_202209061"), b"a running cluster's").unwrap();
    with_space.tablespaces.push(Tablespace { oid: 9, location: live.display().to_string() });
    with_space.files.push(space_dir(9));
    let error = restore_with(&repository, &with_space, &restore_options(&target, &[], true)).await.unwrap_err();
    assert!(error.to_string().contains("not mapped"), "{error}");
    assert_eq!(fs::read(live.join("PG_15_202209061")).unwrap(), b"a running cluster's", "untouched");
    assert!(!target.exists(), "nothing was written");

    // Recorded setuid, world-writable and sticky modes: restored with the owner's bits only.
    let mut modes = with_space.clone();
    for f in modes.files.iter_mut() {
        f.mode = if f.kind == FileKind::Dir { 0o1777 } else { 0o6777 };
    }
    let mapped = scratch.path().join("mapped-tablespace");
    restore_with(&repository, &modes, &restore_options(&target, &[(9, &mapped)], false)).await.unwrap();
    for (path, _) in tree(&target) {
        let metadata = fs::symlink_metadata(target.join(&path)).unwrap();
        let mode = metadata.permissions().mode() & 0o7777;
        assert!(metadata.file_type().is_symlink() || mode == 0o600 || mode == 0o700, "{path}: {mode:o}");
    }
    assert_eq!(fs::read_link(target.join("pg_tblspc/9")).unwrap(), mapped);
    assert_eq!(fs::read(live.join("PG_15_202209061")).unwrap(), b"a running cluster's", "still untouched");
}

/// Nothing damaged is reused: an incremental does not reference a pack that is missing or not the
/// length its signed trailer says (it reads those files again), and a full backup references no
/// earlier pack at all, so it restores byte for byte whatever happened to the older ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_packs_are_never_referenced_by_a_new_backup() {
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let store = backend.store.clone();
    let repository = repository(store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    let first = take_backup(&repository, &data, BackupKind::Full, None, t0).await;

    // The only pack cut short: the incremental cannot reuse anything and reads every file again.
    let cut = &first.packs[0];
    let cut_key = repository.key(&backstop_core::layout::pack(&cut.id).unwrap());
    let raw = read_object(&store, &cut_key).await;
    store.put(&cut_key, raw[..raw.len() / 2].to_vec().into(), backstop_core::WriteMode::Overwrite).await.unwrap();
    let incremental =
        take_backup(&repository, &data, BackupKind::Incremental, Some(first.clone()), t0 + Duration::from_secs(60))
            .await;
    assert!(!incremental.packs.iter().any(|p| p.id == cut.id), "the cut pack is not referenced");
    assert_eq!(incremental.stats.files_reused, 0, "{:?}", incremental.stats);
    let target = scratch.path().join("restored-incremental");
    restore_to(&repository, &incremental.id, &target, false).await.unwrap();
    assert_same(&target, &data);

    // The incremental's pack flipped in place (same length: only a full read can tell): the next
    // full backup references no earlier pack, so it restores byte for byte.
    let flipped_key = repository.key(&backstop_core::layout::pack(&incremental.packs[0].id).unwrap());
    let mut raw = read_object(&store, &flipped_key).await;
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    store.put(&flipped_key, raw.into(), backstop_core::WriteMode::Overwrite).await.unwrap();
    // An incremental reuses an earlier pack only after reading it back whole when it was last
    // read more than the re-read period ago: here, as for a manifest older than 0.3.0, never.
    let mut due = incremental.clone();
    for pack in &mut due.packs {
        pack.verified_at = 0;
    }
    let next = take_backup(&repository, &data, BackupKind::Incremental, Some(due), t0 + Duration::from_secs(90)).await;
    assert!(!next.packs.iter().any(|p| p.id == incremental.packs[0].id), "the flipped pack is not referenced");
    assert_eq!((next.stats.packs_unusable, next.stats.packs_rechecked), (1, incremental.packs.len() as u64 - 1));
    let target = scratch.path().join("restored-next");
    restore_to(&repository, &next.id, &target, false).await.unwrap();
    assert_same(&target, &data);
    // The same with the period over (0: read back every earlier pack), and the packs read back
    // and found good are recorded as such.
    let again = take_backup_rereading(
        &repository,
        &data,
        BackupKind::Incremental,
        Some(incremental.clone()),
        t0 + Duration::from_secs(100),
        None,
        Duration::ZERO,
    )
    .await;
    assert!(!again.packs.iter().any(|p| p.id == incremental.packs[0].id), "the flipped pack is not referenced");
    assert!(again.packs.iter().all(|p| p.verified_at > 0));
    let target = scratch.path().join("restored-again");
    restore_to(&repository, &again.id, &target, false).await.unwrap();
    assert_same(&target, &data);
    let full =
        take_backup(&repository, &data, BackupKind::Full, Some(incremental.clone()), t0 + Duration::from_secs(120))
            .await;
    let earlier: Vec<&str> = first.packs.iter().chain(&incremental.packs).map(|p| p.id.as_str()).collect();
    assert!(full.packs.iter().all(|p| !earlier.contains(&p.id.as_str())), "a full backup writes its own packs");
    assert_eq!(full.stats.bytes_read, first.stats.bytes_read, "and reads every file");
    let target = scratch.path().join("restored-full");
    restore_to(&repository, &full.id, &target, false).await.unwrap();
    assert_same(&target, &data);
}

/// A base-backup manifest edited by someone who can write the bucket but holds no trusted key,
/// re-wrapped with a valid codec header (signed with a key of their own, or unsigned as backstop
/// 0.2 wrote): a tablespace at /tmp/x, a file entry at pg_tblspc/1, a setuid mode, a
/// postgresql.auto.conf of their choosing. Restore, verify, the recovery window and expire all
/// refuse it (it is newer than the genuine backup, so each would otherwise pick it), nothing is
/// written anywhere, and expire removes nothing of the genuine backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_rewrapped_backup_manifest_is_refused_by_every_consumer() {
    use backstop_core::backups::manifest::{self, FileKind, Tablespace};
    use backstop_core::codec::{self, CodecSettings};
    use backstop_core::expire;
    use backstop_core::layout::{self, BackupId};
    use backstop_core::schedule::job::{ExpireArgs, PolicyArgs};
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let store = backend.store.clone();
    let repository = repository(store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    let genuine = take_backup(&repository, &data, BackupKind::Full, None, t0).await;

    let outside = scratch.path().join("x");
    let forge = |at: SystemTime| {
        let mut forged = genuine.clone();
        forged.id = BackupId::new(at, BackupKind::Full);
        forged.start_time = backstop_core::time::unix_seconds(at);
        forged.stop_time = forged.start_time + 1.0;
        // Ending before the genuine one: were it accepted, the recovery window would start at it.
        forged.start_lsn = backstop_core::backups::Lsn(0x1000028);
        forged.stop_lsn = backstop_core::backups::Lsn(0x1000100);
        forged.tablespaces.push(Tablespace { oid: 1, location: outside.display().to_string() });
        let mut link = forged.files.iter().find(|f| f.kind == FileKind::File && f.size > 0).unwrap().clone();
        link.path = "pg_tblspc/1".into();
        forged.files.push(link);
        let mut conf = forged.files.iter().find(|f| f.kind == FileKind::File && f.size > 0).unwrap().clone();
        conf.path = "postgresql.auto.conf".into();
        conf.mode = 0o4755;
        forged.files.retain(|f| f.path != "postgresql.auto.conf");
        forged.files.push(conf);
        forged
    };
    // Signed with the attacker's own key (another repository handle: a key of its own).
    let signed_forgery = forge(t0 + Duration::from_secs(60));
    let attacker = common::backup_fixture::repository(store.clone());
    let json = serde_json::to_vec(&signed_forgery).unwrap();
    attacker
        .put_bytes(&layout::backup_manifest(&signed_forgery.id), json.into(), backstop_core::WriteMode::CreateNew)
        .await
        .unwrap();
    // Unsigned, as backstop 0.2 wrote objects, never adopted.
    let unsigned_forgery = forge(t0 + Duration::from_secs(120));
    let (encoded, _) =
        codec::encode_to_vec(&CodecSettings::plain(), &serde_json::to_vec(&unsigned_forgery).unwrap(), None).unwrap();
    let key = repository.key(&layout::backup_manifest(&unsigned_forgery.id));
    store.put(&key, encoded.into(), backstop_core::WriteMode::CreateNew).await.unwrap();

    for forged in [&signed_forgery, &unsigned_forgery] {
        // Restore: refused before anything is written.
        let target = scratch.path().join(format!("restored-{}", forged.id));
        let error = restore_to(&repository, &forged.id, &target, false).await.unwrap_err();
        assert!(matches!(error, backstop_core::Error::Unauthenticated { .. }), "{error}");
        assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none(), "nothing restored");
        assert!(manifest::read(&repository, &forged.id).await.is_err());
    }
    assert!(!outside.exists(), "nothing was written at the forged tablespace location");

    // The WAL the backups need (segments 1 to 3), so that the genuine one is complete and each
    // forgery, recording the same positions, would be a candidate start of the recovery window.
    for n in 1..=3u64 {
        let name = backstop_core::wal::WalFileName::parse(&backstop_core::wal::segment_name(1, n, 16 << 20)).unwrap();
        repository
            .put_bytes(&layout::wal(&name), vec![n as u8; 4096].into(), backstop_core::WriteMode::CreateNew)
            .await
            .unwrap();
    }
    // Listing and verify: the forgeries are named as not authenticated, the genuine backup is fine.
    let listed = verify::list_backups(&repository).await.unwrap();
    for forged in [&signed_forgery, &unsigned_forgery] {
        let status = listed.iter().find(|b| b.id == forged.id).unwrap();
        assert!(!status.verified(), "{status:?}");
        assert!(status.problem.as_deref().unwrap_or_default().contains("not authenticated"), "{status:?}");
    }
    let report =
        verify::verify(&repository, 2, &verify::VerifyProgress::default(), &CancellationToken::new()).await.unwrap();
    for forged in [&signed_forgery, &unsigned_forgery] {
        let check = report.backups.iter().find(|b| b.id == forged.id).unwrap();
        assert!(!check.ok && check.problems.iter().any(|p| p.contains("not authenticated")), "{check:?}");
    }
    let check = report.backups.iter().find(|b| b.id == genuine.id).unwrap();
    assert!(check.ok, "{check:?}");
    // The recovery window starts at the genuine backup only.
    let wal_files = verify::archived_wal(&repository).await.unwrap();
    let parents = window::timeline_parents(&repository, &wal_files).await;
    let window = window::recovery_window(&listed, &wal_files, 16 << 20, None, &parents);
    let starts: Vec<_> = window.iter().filter_map(|p| p.backup.clone()).collect();
    assert_eq!(starts, vec![genuine.id.clone()], "{window:?}");

    // Expire with keep_last 1: the newest *valid* backup is the genuine one; it keeps it and every
    // pack (a manifest it cannot read holds back all pack removal).
    let args = ExpireArgs {
        dry_run: false,
        backups: Some(PolicyArgs { keep_last: 1, ..Default::default() }),
        snapshots: None,
        logical: None,
        grace: Some("0s".into()),
    };
    let plan = expire::plan(&repository, &args, SystemTime::now()).await.unwrap();
    assert!(plan.removals.iter().all(|r| r.what != "pack"), "{:?}", plan.removals);
    assert!(
        plan.kept_backups.iter().any(|(id, why)| id == genuine.id.as_str() && why.contains(&"newest valid")),
        "{:?}",
        plan.kept_backups
    );
    assert!(!plan.removals.iter().any(|r| r.name == genuine.id.as_str()));
    expire::apply(&repository, &plan, &CancellationToken::new()).await.unwrap();
    let target = scratch.path().join("restored-genuine");
    restore_to(&repository, &genuine.id, &target, false).await.unwrap();
    assert_same(&target, &data);
}

/// A pack damaged in place after a backup read it back (same length, so only a full read can
/// tell): once verify found it, no later backup references it, however recent its last read-back;
/// the next incremental reads those files again and restores byte for byte. A damage record is
/// used by its name only, so even one nobody signed only ever costs a re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_verify_found_damaged_is_never_referenced_again() {
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let store = backend.store.clone();
    let repository = repository(store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    let first = take_backup(&repository, &data, BackupKind::Full, None, t0).await;
    assert!(first.packs.iter().all(|p| p.verified_at > 0), "written just now: not due for a read-back");
    let damaged = first.packs[0].id.clone();
    let key = repository.key(&backstop_core::layout::pack(&damaged).unwrap());
    let mut raw = read_object(&store, &key).await;
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    store.put(&key, raw.into(), backstop_core::WriteMode::Overwrite).await.unwrap();

    let report =
        verify::verify(&repository, 2, &verify::VerifyProgress::default(), &CancellationToken::new()).await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.damage_recorded, vec![damaged.clone()], "{report:?}");
    assert_eq!(report.damage_not_recorded, None);
    // Verifying again records nothing new and fails nothing more.
    let again =
        verify::verify(&repository, 2, &verify::VerifyProgress::default(), &CancellationToken::new()).await.unwrap();
    assert_eq!(again.damage_recorded, vec![damaged.clone()]);

    let next =
        take_backup(&repository, &data, BackupKind::Incremental, Some(first.clone()), t0 + Duration::from_secs(60))
            .await;
    assert!(!next.packs.iter().any(|p| p.id == damaged), "the damaged pack is not referenced");
    assert_eq!(next.stats.packs_unusable, 1, "{:?}", next.stats);
    let target = scratch.path().join("restored-next");
    restore_to(&repository, &next.id, &target, false).await.unwrap();
    assert_same(&target, &data);

    // A record no key signed (garbage under a pack's record name) still only keeps that pack out.
    let good = next.packs[0].id.clone();
    let record = repository.key(&backstop_core::layout::damage_record(&good).unwrap());
    store.put(&record, b"not even json".to_vec().into(), backstop_core::WriteMode::Overwrite).await.unwrap();
    let after =
        take_backup(&repository, &data, BackupKind::Incremental, Some(next.clone()), t0 + Duration::from_secs(90))
            .await;
    assert!(!after.packs.iter().any(|p| p.id == good || p.id == damaged));
    let target = scratch.path().join("restored-after");
    restore_to(&repository, &after.id, &target, false).await.unwrap();
    assert_same(&target, &data);
}

/// Encryption enabled on a repository that holds unencrypted backups: the next incremental
/// reuses none of the unencrypted packs (every pack it references is encrypted), restores byte
/// for byte with the identity, and what the older backup still needs unencrypted is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_encryption_is_enabled_new_backups_reference_only_encrypted_packs() {
    use backstop_core::codec::{CodecSettings, Compression};
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let plain = repository(backend.store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    let first = take_backup(&plain, &data, BackupKind::Full, None, t0).await;
    assert!(first.packs.iter().all(|p| p.encrypted == Some(false)));

    let identity = age::x25519::Identity::generate();
    let encrypted = plain
        .clone()
        .with_codec(CodecSettings::new(Compression::zstd(3).unwrap(), vec![identity.to_public()]))
        .with_identities(vec![identity]);
    let next =
        take_backup(&encrypted, &data, BackupKind::Incremental, Some(first.clone()), t0 + Duration::from_secs(60))
            .await;
    assert!(next.packs.iter().all(|p| p.encrypted == Some(true)), "{:?}", next.packs);
    assert!(!next.packs.iter().any(|p| first.packs.iter().any(|f| f.id == p.id)), "no unencrypted pack reused");
    assert_eq!(next.stats.packs_unusable, first.packs.len() as u64);
    let target = scratch.path().join("restored");
    restore_to(&encrypted, &next.id, &target, false).await.unwrap();
    assert_same(&target, &data);
    let listed = verify::list_backups(&encrypted).await.unwrap();
    assert_eq!(verify::unencrypted_packs(&listed), first.packs.len(), "the first backup's packs are still needed");
}

/// A page with checksum `checksum(page, block)` and LSN `lsn`, the rest noise.
fn checksummed_page(seed: u64, block: u32, lsn: u64) -> Vec<u8> {
    use backstop_core::backups::page_checksum::checksum;
    let mut page = noise(seed, 8192);
    page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
    page[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
    page[14..16].copy_from_slice(&8000u16.to_ne_bytes());
    let sum = checksum(&page, block);
    page[8..10].copy_from_slice(&sum.to_ne_bytes());
    page
}

/// Data checksums on (PostgreSQL 18's default): the backup checks every relation page it reads,
/// as pg_basebackup does, and names a damaged one; a page written since the backup started is not
/// judged (WAL replay rewrites it), and a segment file's blocks are numbered from its segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_checksum_fails_is_named_and_pages_written_since_the_start_are_not_judged() {
    use backstop_core::backups::take::{self, PageChecks, Progress, TakeOptions};
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let repository = repository(backend.store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    // The fixture's noise files have LSNs far beyond this start: not judged.
    let start = 0x10_0000;
    let mut damaged = checksummed_page(12, 2, 0x300);
    damaged[6000] ^= 0x01;
    let mut recent = checksummed_page(13, 3, start + 8);
    recent[6000] ^= 0x01;
    let table = [checksummed_page(10, 0, 0x100), checksummed_page(11, 1, 0x200), damaged, recent].concat();
    write(&data.join("base/5/16384"), &table);
    // Block 131072 is the first of segment 1: valid there, invalid as block 0.
    write(&data.join("base/5/16384.1"), &checksummed_page(14, 131_072, 0x400));
    write(&data.join("global/1262"), &checksummed_page(15, 0, 0x500));
    let options = |page_checks| TakeOptions {
        data_dir: data.clone(),
        kind: BackupKind::Full,
        previous: None,
        reread_after: take::DEFAULT_REREAD_AFTER,
        include_manifest_key: false,
        parallel: 2,
        page_checks,
        changed: None,
    };
    let checks = PageChecks { start_lsn: start, blocks_per_segment: 131_072 };
    let taken =
        take::copy_files(&repository, options(Some(checks)), Arc::new(Progress::default()), &CancellationToken::new())
            .await
            .unwrap();
    assert_eq!(taken.stats.page_checksum_failures, 1, "{:?}", taken.stats.damaged_pages);
    assert_eq!(taken.stats.damaged_pages.len(), 1);
    assert!(
        taken.stats.damaged_pages[0].starts_with("base/5/16384 block 2 (checksum "),
        "{:?}",
        taken.stats.damaged_pages
    );
    // Checks off (the cluster has no data checksums): nothing is judged.
    let taken = take::copy_files(&repository, options(None), Arc::new(Progress::default()), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(taken.stats.page_checksum_failures, 0);
}

/// PostgreSQL 17's WAL summaries say which blocks changed: a changed relation file reads only
/// those blocks (and everything from a limit block on, and what it grew by), stores them as chunks
/// of their own, and references the previous backup's chunks, whole or in part, for the rest
/// without reading them. Shown by changes the summaries do not name: the backup keeps the earlier
/// bytes there, which only a block it did not read can. A file that is not a relation's is read
/// whole, and so is a free space map (not WAL-logged). A second such backup on top of the first
/// takes parts of parts; each restores byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_summaries_let_an_incremental_read_only_the_changed_blocks() {
    use backstop_core::backups::summaries::ChangedBlocks;
    let backend = common::file_backend();
    let scratch = tempfile::tempdir().unwrap();
    let repository = repository(backend.store.clone());
    let data = scratch.path().join("data");
    fake_data_dir(&data);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    age_tree(&data, t0 - Duration::from_secs(60));
    let full = take_backup(&repository, &data, BackupKind::Full, None, t0).await;

    const CHUNK: usize = 256 << 10;
    const BLOCK: usize = 8192;
    let table_path = data.join("base/5/16384");
    let before = fs::read(&table_path).unwrap();
    let mut table = before.clone();
    table[40 * BLOCK + 100] ^= 0xff; // block 40 (chunk 1): named
    table[32 * BLOCK + 100] ^= 0xff; // block 32 (chunk 1): not named (a hint bit WAL never saw)
    table[5 * CHUNK + 100] ^= 0xff; // chunk 5: not named
    table[7 * CHUNK + 25 * BLOCK] ^= 0xff; // past the limit block (7 * 32 + 20)
    table[10 * CHUNK + 100] ^= 0xff; // past the limit block
    table.extend_from_slice(&noise(77, 3 * BLOCK)); // grown: three new blocks
                                                    // Rewritten in place (same inode), as PostgreSQL writes relation files.
    fs::write(&table_path, &table).unwrap();
    write(&data.join("postgresql.auto.conf"), b"# changed, not a relation file\n");
    // The free space map changed: no summary names its blocks (not WAL-logged); read whole.
    let fsm = fs::read(data.join("base/5/16384_fsm")).unwrap();
    fs::remove_file(data.join("base/5/16384_fsm")).unwrap();
    let mut new_fsm = fsm.clone();
    new_fsm[100] ^= 0xff;
    write(&data.join("base/5/16384_fsm"), &new_fsm);

    let mut changed = ChangedBlocks::new(131_072);
    changed.add_block(1663, 5, 16384, 0, 40);
    changed.add_limit(1663, 5, 16384, 0, 7 * 32 + 20); // chunk 7 from block 20 (12 blocks), then all
    changed.described = "WAL summaries from 0/2000028 to 0/3000028".into();
    let incr = take_backup_summarized(
        &repository,
        &data,
        BackupKind::Incremental,
        Some(full.clone()),
        t0 + Duration::from_secs(60),
        None,
        backstop_core::backups::take::DEFAULT_REREAD_AFTER,
        Some(changed),
    )
    .await;
    // Read: block 40, blocks 20..31 of chunk 7, chunks 8..31 whole, the three new blocks.
    let table_read = (BLOCK + 12 * BLOCK + 24 * CHUNK + 3 * BLOCK) as u64;
    let table_skipped = (6 * CHUNK + (CHUNK - BLOCK) + 20 * BLOCK) as u64;
    assert_eq!(incr.stats.bytes_skipped, table_skipped, "{:?}", incr.stats);
    assert_eq!(incr.stats.files_summarized, 1, "{:?}", incr.stats);
    assert_eq!(
        incr.stats.bytes_read,
        table_read + new_fsm.len() as u64 + b"# changed, not a relation file\n".len() as u64,
        "{:?}",
        incr.stats
    );
    assert_eq!(incr.stats.changed_blocks.as_deref(), Some("WAL summaries from 0/2000028 to 0/3000028"));
    assert_eq!(incr.format_version, 2, "parts of chunks need format 2");
    let record = incr.files.iter().find(|f| f.path == "base/5/16384").unwrap();
    assert_eq!(record.size, table.len() as u64);
    assert!(
        record.chunks.iter().any(|c| c.range.is_some()),
        "unchanged blocks beside a changed one are parts of a chunk"
    );

    let restored = scratch.path().join("restored");
    restore_to(&repository, &incr.id, &restored, false).await.unwrap();
    let got = fs::read(restored.join("base/5/16384")).unwrap();
    // What it was told had not changed keeps the earlier bytes.
    let mut expected = table.clone();
    expected[32 * BLOCK + 100] = before[32 * BLOCK + 100];
    expected[5 * CHUNK + 100] = before[5 * CHUNK + 100];
    assert!(got == expected, "the restored table is the blocks read plus the previous backup's others");
    assert_eq!(fs::read(restored.join("base/5/16384_fsm")).unwrap(), new_fsm);
    assert_eq!(fs::read(restored.join("postgresql.auto.conf")).unwrap(), b"# changed, not a relation file\n");
    fs::write(&table_path, &expected).unwrap();
    assert_same(&restored, &data);

    // A second one on top: block 41 changes; the blocks around it are parts of parts.
    let mut table = expected;
    table[41 * BLOCK + 7] ^= 0xff;
    fs::write(&table_path, &table).unwrap();
    let mut changed = ChangedBlocks::new(131_072);
    changed.add_block(1663, 5, 16384, 0, 41);
    let second = take_backup_summarized(
        &repository,
        &data,
        BackupKind::Incremental,
        Some(incr.clone()),
        t0 + Duration::from_secs(120),
        None,
        backstop_core::backups::take::DEFAULT_REREAD_AFTER,
        Some(changed),
    )
    .await;
    // Of the table, one block read; the rest referenced (the two small files written moments
    // before the first one read them are read again: their mtime could hide a change).
    assert_eq!(second.stats.bytes_skipped, (table.len() - BLOCK) as u64, "{:?}", second.stats);
    assert_eq!(second.stats.bytes_read, (BLOCK + new_fsm.len() + 31) as u64, "{:?}", second.stats);
    let again = scratch.path().join("restored-second");
    restore_to(&repository, &second.id, &again, false).await.unwrap();
    assert_same(&again, &data);
    // A delta restore over the first restore fetches what changed, parts included.
    restore_to(&repository, &second.id, &restored, true).await.unwrap();
    assert_same(&restored, &data);

    // Without summaries the same incremental reads the whole changed file.
    fs::write(&table_path, &table).unwrap();
    let plain =
        take_backup(&repository, &data, BackupKind::Incremental, Some(second), t0 + Duration::from_secs(180)).await;
    assert_eq!(plain.stats.bytes_skipped, 0);
    assert!(plain.stats.bytes_read >= table.len() as u64, "{:?}", plain.stats);
    assert_eq!(plain.stats.changed_blocks, None);
    assert_eq!(plain.format_version, 1, "whole chunks only: the format older backstops read");
}
