//! The storage suite: every test runs against `file://` and against a real S3 server (Garage).

mod common;

use std::io::Read;
use std::sync::Arc;

use backstop_core::auth::{SigningKey, Trust};
use backstop_core::codec::{CodecSettings, Compression};
use backstop_core::layout;
use backstop_core::repository::{ClusterIdentity, PutResult};
use backstop_core::store::s3::{S3Options, S3Store};
use backstop_core::{Error, ObjectPath, ObjectStore, Repository, WriteMode};
use bytes::Bytes;
use common::Backend;
use futures::StreamExt;
use sha2::{Digest, Sha256};

fn zstd() -> CodecSettings {
    CodecSettings::new(Compression::zstd(3).unwrap(), vec![])
}

/// One signing key for the whole suite: handles made by [`repository`] trust each other, as the
/// processes of one cluster do.
fn cluster_key() -> SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(SigningKey::generate).clone()
}

fn repository(store: &Arc<dyn ObjectStore>, codec: CodecSettings) -> Repository {
    Repository::new(store.clone(), "cluster-a", codec).unwrap().with_signer(cluster_key())
}

/// A streamed data object (a logical dump) named `name`.
fn data(name: &str) -> ObjectPath {
    common::stream_path(name)
}

/// A metadata object (a logical backup manifest) named `name`.
fn meta(name: &str) -> ObjectPath {
    let id = backstop_core::logical::LogicalId::parse("20261122T031500Z-L").unwrap();
    layout::logical(name, &id, layout::LogicalFile::Manifest)
}

/// The WAL segment numbered `n` on timeline 1.
fn segment(n: u64) -> ObjectPath {
    let name = backstop_core::wal::segment_name(1, n, 16 << 20);
    layout::wal(&backstop_core::wal::WalFileName::parse(&name).unwrap())
}

async fn small_objects_round_trip(backend: Backend) {
    let identity = age::x25519::Identity::generate();
    let encrypted = CodecSettings::new(Compression::zstd(3).unwrap(), vec![identity.to_public()]);
    for (name, codec) in [("plain", CodecSettings::plain()), ("zstd", zstd()), ("encrypted", encrypted)] {
        let repo = repository(&backend.store, codec).with_identities(vec![identity.clone()]);
        for (i, payload) in
            [Bytes::new(), Bytes::from_static(b"x"), Bytes::from(vec![42u8; 3 << 20])].into_iter().enumerate()
        {
            let relative = data(&format!("objects-{name}-{i}"));
            let result = repo.put_bytes(&relative, payload.clone(), WriteMode::CreateNew).await.unwrap();
            assert!(matches!(result, PutResult::Stored { .. }));
            assert_eq!(repo.get_bytes(&relative).await.unwrap(), payload, "{name} {i}");
            assert_eq!(repo.read_trailer(&relative).await.unwrap().plain_len, payload.len() as u64);
        }
    }
}

async fn missing_objects_are_reported_as_missing(backend: Backend) {
    let repo = repository(&backend.store, zstd());
    assert!(matches!(repo.get_bytes(&segment(99)).await, Err(Error::NotFound { .. })));
    assert!(backend.store.head(&repo.key(&segment(99))).await.unwrap().is_none());
    backend.store.delete(&repo.key(&segment(99))).await.expect("deleting an absent object succeeds");
}

async fn create_if_absent_tells_same_from_different(backend: Backend) {
    let identity = age::x25519::Identity::generate();
    // Encrypted twice, the same plain bytes give different stored bytes: still "the same".
    let codec = CodecSettings::new(Compression::zstd(3).unwrap(), vec![identity.to_public()]);
    let repo = repository(&backend.store, codec).with_identities(vec![identity]);
    let original = Bytes::from(vec![1u8; 100_000]);
    let first = repo.put_bytes(&segment(1), original.clone(), WriteMode::CreateNew).await.unwrap();
    assert!(matches!(first, PutResult::Stored { .. }));
    let again = repo.put_bytes(&segment(1), original.clone(), WriteMode::CreateNew).await.unwrap();
    assert!(matches!(again, PutResult::AlreadyIdentical { .. }), "{again:?}");

    let different = Bytes::from(vec![2u8; 100_000]);
    let error = repo.put_bytes(&segment(1), different.clone(), WriteMode::CreateNew).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Conflict { .. }), "{message}");
    assert!(message.contains(&hex::encode(Sha256::digest(&original))), "existing checksum named: {message}");
    assert!(message.contains(&hex::encode(Sha256::digest(&different))), "new checksum named: {message}");
    assert_eq!(repo.get_bytes(&segment(1)).await.unwrap(), original, "nothing was overwritten");

    // The streaming path follows the same rules.
    let mut writer = repo.writer(&segment(1), WriteMode::CreateNew).await.unwrap();
    writer.write(&different).await.unwrap();
    assert!(matches!(writer.finish().await, Err(Error::Conflict { .. })));
    let mut writer = repo.writer(&segment(1), WriteMode::CreateNew).await.unwrap();
    writer.write(&original).await.unwrap();
    assert!(matches!(writer.finish().await.unwrap(), PutResult::AlreadyIdentical { .. }));
    assert_eq!(repo.get_bytes(&segment(1)).await.unwrap(), original);
}

/// Overwrites the stored bytes of an object with `damage` applied, behind the repository's back.
async fn tamper(store: &Arc<dyn ObjectStore>, key: &str, damage: impl FnOnce(&mut Vec<u8>)) {
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut store.get(key).await.unwrap(), &mut raw).await.unwrap();
    damage(&mut raw);
    store.put(key, raw.into(), WriteMode::Overwrite).await.unwrap();
}

async fn corrupt_and_truncated_objects_are_refused(backend: Backend) {
    let repo = repository(&backend.store, zstd());
    // Incompressible bytes (zstd stores them raw: the checksum catches the damage) and compressible
    // ones (zstd itself trips over the damage first): both must be reported as corruption.
    let mut noise = vec![0u8; 300_000];
    common::NoiseSource::new(7).fill(&mut noise);
    let text: Vec<u8> = (0..300_000u32).flat_map(|i| format!("row {i} value {}\n", i % 97).into_bytes()).collect();
    for (kind, payload) in [("noise", noise), ("text", text)] {
        for (damage_name, damage) in [
            ("flipped-body", Box::new(|raw: &mut Vec<u8>| raw[1000] ^= 0x01) as Box<dyn FnOnce(&mut Vec<u8>)>),
            (
                "flipped-middle",
                Box::new(|raw: &mut Vec<u8>| {
                    let at = raw.len() / 2;
                    raw[at] ^= 0x10
                }),
            ),
            (
                "flipped-checksum",
                Box::new(|raw: &mut Vec<u8>| {
                    let at = raw.len() - 60;
                    raw[at] ^= 0x80
                }),
            ),
            ("truncated", Box::new(|raw: &mut Vec<u8>| raw.truncate(raw.len() - 5000))),
            ("tail-cut", Box::new(|raw: &mut Vec<u8>| raw.truncate(raw.len() - 1))),
        ] {
            let relative = data(&format!("{kind}-{damage_name}"));
            repo.put_bytes(&relative, Bytes::from(payload.clone()), WriteMode::CreateNew).await.unwrap();
            tamper(&backend.store, &repo.key(&relative), damage).await;
            // Damage to the body is corruption; damage to the signed tail (the trailer or the
            // signature over it) also fails authentication: either way nothing is returned.
            let refused = |e: &Error| match damage_name {
                "flipped-checksum" => matches!(e, Error::Corrupt { .. } | Error::Unauthenticated { .. }),
                _ => matches!(e, Error::Corrupt { .. }),
            };
            let error = repo.get_bytes(&relative).await.unwrap_err();
            assert!(refused(&error), "{relative}: {error}");
            // The streaming reader refuses it too: nothing it produced may be used.
            let handle = tokio::runtime::Handle::current();
            let streamed = {
                let repo = repo.clone();
                let relative = relative.clone();
                tokio::task::spawn_blocking(move || repo.open(&handle, &relative)?.copy_to(&mut std::io::sink()))
                    .await
                    .unwrap()
            };
            assert!(streamed.as_ref().is_err_and(refused), "{relative}: {streamed:?}");
            let verified = repo.verify(&relative).await;
            assert!(verified.as_ref().is_err_and(refused), "{relative}: {verified:?}");
            // A flipped body byte is reported as what it is, damage to the stored bytes, whether or
            // not the decompressor tripped over it first.
            if damage_name.starts_with("flipped-body") || damage_name == "flipped-middle" {
                let reason = verified.unwrap_err().to_string();
                assert!(reason.contains("sha256 of the stored bytes"), "{relative}: {reason}");
            }
        }
    }
}

/// An upload that meets an object already stored under its name counts only if that object is whole:
/// a damaged body behind an intact trailer must not let PostgreSQL recycle the only good copy.
async fn a_damaged_existing_object_is_never_acknowledged(backend: Backend) {
    let identity = age::x25519::Identity::generate();
    let encrypted = CodecSettings::new(Compression::zstd(3).unwrap(), vec![identity.to_public()]);
    // The server holds only public keys: an encrypted object is checked through its stored bytes.
    for (name, codec) in [("plain", zstd()), ("encrypted", encrypted)] {
        let repo = repository(&backend.store, codec);
        let mut payload = vec![0u8; 200_000];
        common::NoiseSource::new(11).fill(&mut payload);
        let relative = segment(if name == "plain" { 2 } else { 3 });
        repo.put_bytes(&relative, Bytes::from(payload.clone()), WriteMode::CreateNew).await.unwrap();
        // Same length, same trailer: only a body byte differs.
        tamper(&backend.store, &repo.key(&relative), |raw| {
            let at = raw.len() / 2;
            raw[at] ^= 0x04
        })
        .await;
        let error = repo.put_bytes(&relative, Bytes::from(payload.clone()), WriteMode::CreateNew).await.unwrap_err();
        assert!(matches!(error, Error::Corrupt { .. }), "{name}: {error}");
        assert!(error.to_string().contains(&repo.key(&relative)), "the key is named: {error}");
        let mut writer = repo.writer(&relative, WriteMode::CreateNew).await.unwrap();
        writer.write(&payload).await.unwrap();
        assert!(matches!(writer.finish().await, Err(Error::Corrupt { .. })), "{name}: the streamed path too");
    }
}

async fn wrong_or_missing_identity_is_a_clear_error(backend: Backend) {
    let identity = age::x25519::Identity::generate();
    let codec = CodecSettings::new(Compression::None, vec![identity.to_public()]);
    let writer = repository(&backend.store, codec.clone());
    writer.put_bytes(&data("secret"), Bytes::from_static(b"payroll"), WriteMode::CreateNew).await.unwrap();
    let no_key = repository(&backend.store, codec.clone());
    let message = no_key.get_bytes(&data("secret")).await.unwrap_err().to_string();
    assert!(message.contains("no age identity"), "{message}");
    let wrong_key = repository(&backend.store, codec).with_identities(vec![age::x25519::Identity::generate()]);
    let error = wrong_key.get_bytes(&data("secret")).await.unwrap_err();
    assert!(matches!(error, Error::Decryption { .. }) && error.to_string().contains("wrong key"), "{error}");
    // Metadata is never encrypted: the server, which holds only public keys, must read it back.
    writer.put_bytes(&meta("meta"), Bytes::from_static(b"{}"), WriteMode::CreateNew).await.unwrap();
    assert_eq!(no_key.get_bytes(&meta("meta")).await.unwrap(), b"{}".to_vec());
}

async fn listing_pages_past_a_thousand_keys(backend: Backend) {
    let store = backend.store.clone();
    let keys: Vec<String> = (0..1100).map(|i| format!("many/{:05}", i)).collect();
    futures::stream::iter(keys.clone())
        .map(|key| {
            let store = store.clone();
            async move { store.put(&key, Bytes::from(key.clone()), WriteMode::CreateNew).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    store.put("many-other/x", Bytes::from_static(b"x"), WriteMode::CreateNew).await.unwrap();
    let listed = store.list_all("many/").await.unwrap();
    assert_eq!(listed.iter().map(|o| o.key.clone()).collect::<Vec<_>>(), keys, "all 1100, in order, nothing else");
    assert!(listed.iter().all(|o| o.size == 10));
    assert_eq!(store.list_all("many/0109").await.unwrap().len(), 10);
    // The listing is a stream in byte order on every backend: "many-other" ('-' is below '/')
    // comes before "many/...", and a consumer can stop after the first page without the rest.
    let all: Vec<String> = store.list("many").map(|o| o.unwrap().key).collect().await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all[0], "many-other/x");
    let first_ten: Vec<_> = store.list("many/").take(10).collect().await;
    assert_eq!(first_ten.len(), 10);
    assert_eq!(first_ten[9].as_ref().unwrap().key, "many/00009");
    for key in keys.iter().take(5) {
        store.delete(key).await.unwrap();
    }
    assert_eq!(store.list_all("many/").await.unwrap().len(), 1095);
}

/// A source that fails part-way through: the upload must fail and publish nothing.
struct FailingReader {
    remaining: usize,
}

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("source device failed")));
        }
        let n = buf.remaining().min(self.remaining);
        let mut noise = vec![0u8; n];
        common::NoiseSource::new(self.remaining as u64).fill(&mut noise);
        buf.put_slice(&noise);
        self.remaining -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

async fn failed_uploads_publish_nothing(backend: Backend) {
    let repo = repository(&backend.store, CodecSettings::plain());
    let result = repo.put_reader(&data("failed"), FailingReader { remaining: 20 << 20 }, WriteMode::CreateNew).await;
    assert!(result.unwrap_err().to_string().contains("source device failed"));
    assert!(backend.store.head(&repo.key(&data("failed"))).await.unwrap().is_none());
    assert!(
        backend
            .store
            .list_all(&format!("cluster-a/{}", layout::logical_database("failed").as_str()))
            .await
            .unwrap()
            .is_empty(),
        "no partial or temporary object is listed"
    );
    let mut aborted = repo
        .writer(
            &layout::snapshot_data(
                "public",
                "t",
                &backstop_core::snapshot::SnapshotId::parse("snap_0000abcd").unwrap(),
            ),
            WriteMode::CreateNew,
        )
        .await
        .unwrap();
    aborted.write(&[7u8; 100_000]).await.unwrap();
    aborted.abort().await;
    assert!(
        repo.list_prefixes(&layout::snapshot_table("public", "t")).await.unwrap().is_empty(),
        "an aborted upload leaves no prefix behind that looks like it holds objects"
    );
    if let Some(dir) = &backend._dir {
        let leftovers: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.contains(".tmp-")).collect();
        assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            found.extend(walk(&entry.path()));
        } else {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

async fn cluster_file_guards_the_namespace(backend: Backend) {
    let repo = repository(&backend.store, zstd());
    let ours = ClusterIdentity {
        system_identifier: 7_345_678_901_234_567_890,
        pg_version_num: 150018,
        wal_segment_size: 16 << 20,
    };
    assert!(repo.cluster_file().await.unwrap().is_none());
    let created = repo.ensure_cluster(&ours).await.unwrap();
    assert_eq!(created.system_identifier, "7345678901234567890");
    assert_eq!(repo.ensure_cluster(&ours).await.unwrap(), created, "a second call reads the same file");
    let theirs = ClusterIdentity { system_identifier: 1, pg_version_num: 150018, wal_segment_size: 16 << 20 };
    let error = repo.ensure_cluster(&theirs).await.unwrap_err();
    assert!(matches!(error, Error::ForeignCluster { .. }), "{error}");
    assert!(error.to_string().contains("7345678901234567890"), "{error}");
    // The same system identifier under another major version (the namespace named by
    // backstop.cluster_name, kept across a major upgrade) is refused too; unknown (0) is not.
    let upgraded = ClusterIdentity { pg_version_num: 170004, ..ours.clone() };
    let error = repo.ensure_cluster(&upgraded).await.unwrap_err();
    assert!(matches!(error, Error::ForeignMajorVersion { expected: 17, found: 15, .. }), "{error}");
    assert!(error.hint().contains("backstop.cluster_name"), "{}", error.hint());
    assert!(repo.ensure_cluster(&ClusterIdentity { pg_version_num: 0, ..ours }).await.is_ok());
}

async fn round_trip_check_passes(backend: Backend) {
    let repo = repository(&backend.store, zstd());
    repo.round_trip_check().await.unwrap();
    assert!(
        backend.store.list_all(&format!("cluster-a/{}", layout::probes().as_str())).await.unwrap().is_empty(),
        "the probe cleans up after itself"
    );
}

/// Design rule 13: an object that is not signed by a trusted key is refused before a byte of it is
/// decoded, whoever wrote it and however valid its checksums are.
async fn forged_swapped_and_unsigned_objects_are_refused(backend: Backend) {
    let ours = repository(&backend.store, zstd());
    let payload = Bytes::from(vec![5u8; 50_000]);
    ours.put_bytes(&segment(10), payload.clone(), WriteMode::CreateNew).await.unwrap();
    assert_eq!(ours.get_bytes(&segment(10)).await.unwrap(), payload);

    // An attacker with write access to the bucket but not our key: perfectly formed objects,
    // signed with their own key.
    let attacker =
        Repository::new(backend.store.clone(), "cluster-a", zstd()).unwrap().with_signer(SigningKey::generate());
    attacker.put_bytes(&segment(11), Bytes::from_static(b"DROP TABLE users"), WriteMode::CreateNew).await.unwrap();
    attacker.put_bytes(&meta("forged"), Bytes::from_static(b"{}"), WriteMode::CreateNew).await.unwrap();
    for path in [segment(11), meta("forged")] {
        let error = ours.get_bytes(&path).await.unwrap_err();
        assert!(matches!(error, Error::Unauthenticated { .. }), "{path}: {error}");
        assert!(error.to_string().contains(&ours.key(&path)), "the key is named: {error}");
        assert!(matches!(ours.verify(&path).await, Err(Error::Unauthenticated { .. })), "{path}");
        assert!(matches!(ours.read_trailer(&path).await, Err(Error::Unauthenticated { .. })), "{path}");
    }
    // Streaming refuses it too, before producing a byte.
    let handle = tokio::runtime::Handle::current();
    let streamed = {
        let ours = ours.clone();
        tokio::task::spawn_blocking(move || ours.open(&handle, &segment(11)).map(|_| ())).await.unwrap()
    };
    assert!(matches!(streamed, Err(Error::Unauthenticated { .. })), "{streamed:?}");

    // One of our own objects copied to another name: the signature covers the path it was
    // written under.
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut backend.store.get(&ours.key(&segment(10))).await.unwrap(), &mut raw)
        .await
        .unwrap();
    backend.store.put(&ours.key(&segment(12)), raw.clone().into(), WriteMode::CreateNew).await.unwrap();
    let error = ours.get_bytes(&segment(12)).await.unwrap_err();
    assert!(matches!(error, Error::Unauthenticated { .. }), "{error}");
    // ... or to the same path in another cluster's namespace.
    let other = Repository::new(backend.store.clone(), "cluster-b", zstd()).unwrap().with_signer(cluster_key());
    backend.store.put(&other.key(&segment(10)), raw.into(), WriteMode::CreateNew).await.unwrap();
    assert!(matches!(other.get_bytes(&segment(10)).await, Err(Error::Unauthenticated { .. })));

    // A reader that trusts the attacker's public key (a key rotation, say) accepts their objects.
    let trusting = Repository::new(backend.store.clone(), "cluster-a", zstd())
        .unwrap()
        .with_trust(Trust::new([attacker.signer().unwrap().public()]));
    assert_eq!(trusting.get_bytes(&segment(11)).await.unwrap(), b"DROP TABLE users".to_vec());
    // A writer without a key writes nothing.
    let keyless = Repository::new(backend.store.clone(), "cluster-a", zstd()).unwrap();
    let error = keyless.put_bytes(&segment(13), payload, WriteMode::CreateNew).await.unwrap_err();
    assert!(matches!(error, Error::NoSigningKey { .. }), "{error}");
    assert!(backend.store.head(&ours.key(&segment(13))).await.unwrap().is_none());
}

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::common::memory_backend()).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::common::file_backend()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(backend) = super::common::s3_backend().await {
                        super::$test(backend).await;
                    }
                }
            )*
        }
        /// The same store over HTTPS, its certificate signed by a private CA (s3_ca_file).
        mod s3_tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(backend) = super::common::s3_tls_backend().await {
                        super::$test(backend).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    small_objects_round_trip,
    missing_objects_are_reported_as_missing,
    create_if_absent_tells_same_from_different,
    a_damaged_existing_object_is_never_acknowledged,
    corrupt_and_truncated_objects_are_refused,
    wrong_or_missing_identity_is_a_clear_error,
    listing_pages_past_a_thousand_keys,
    failed_uploads_publish_nothing,
    cluster_file_guards_the_namespace,
    round_trip_check_passes,
    forged_swapped_and_unsigned_objects_are_refused,
);

/// Over HTTPS the store's certificate must chain to a trusted CA and name the host: a private CA
/// that is not in s3_ca_file, or a certificate for another name, is refused before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_an_untrusted_or_misnamed_certificate_is_refused() {
    let Some(options) = common::s3_options() else { return };
    let front = common::TlsFront::start(&options, "localhost").await;
    let attempt = |endpoint: String, ca_file: Option<std::path::PathBuf>| {
        let options = S3Options { endpoint: Some(endpoint), ca_file, max_attempts: 1, ..options.clone() };
        async move {
            let store = S3Store::connect(&common::s3_bucket(), "tests/tls-refused", &options).await.unwrap();
            store.put("probe", Bytes::from_static(b"x"), WriteMode::Overwrite).await.map(|_| ())
        }
    };
    let trusted = attempt(format!("https://localhost:{}", front.port), Some(front.ca_file.clone())).await;
    assert!(trusted.is_ok(), "with the CA the same front works: {trusted:?}");
    let untrusted = attempt(format!("https://localhost:{}", front.port), None).await.unwrap_err().to_string();
    assert!(untrusted.contains("certificate") && untrusted.contains("UnknownIssuer"), "{untrusted}");
    let misnamed = attempt(format!("https://127.0.0.1:{}", front.port), Some(front.ca_file.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(misnamed.contains("certificate not valid for name"), "{misnamed}");
}

/// A CA file that is missing, empty, not PEM or holds a damaged certificate is a setting error
/// naming the file, not a panic inside the HTTP client.
#[tokio::test]
async fn a_bad_ca_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let connect = |path: std::path::PathBuf| async move {
        let options = S3Options {
            endpoint: Some("https://localhost:9".into()),
            ca_file: Some(path),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            ..S3Options::default()
        };
        S3Store::connect("bucket", "prefix", &options).await.map(|_| ()).unwrap_err()
    };
    let missing = connect(dir.path().join("absent.pem")).await;
    assert!(matches!(missing, Error::Io { .. }) && missing.to_string().contains("absent.pem"), "{missing}");
    for (name, content, expected) in [
        ("empty.pem", "", "holds no certificate"),
        ("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "holds no certificate"),
        ("garbled.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "is not a PEM file"),
        ("damaged.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "is not usable"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let error = connect(path).await;
        assert!(matches!(error, Error::InvalidSetting { .. }), "{name}: {error:?}");
        assert!(error.to_string().contains(name) && error.to_string().contains(expected), "{name}: {error}");
    }
}

#[test]
fn streamed_reads_verify_before_reporting_the_end() {
    // Synchronous use from a plain thread, as the CLI and the backend do.
    let runtime = backstop_core::runtime::build(1, "test-io").unwrap();
    let backend = common::file_backend();
    let repo = repository(&backend.store, zstd());
    let payload = vec![9u8; 5 << 20];
    runtime.block_on(repo.put_bytes(&data("streamed"), Bytes::from(payload.clone()), WriteMode::CreateNew)).unwrap();
    let mut reader = repo.open(runtime.handle(), &data("streamed")).unwrap();
    let mut read = Vec::new();
    reader.read_to_end(&mut read).unwrap();
    assert_eq!(read, payload);
}
