//! Backends for the storage suites: a temporary directory, and the Garage server started by
//! scripts/garage.sh (its env file names endpoint, bucket and key). S3 tests fail, never skip
//! silently, when Garage is not configured, unless BACKSTOP_SKIP_S3=1 says so explicitly.
#![allow(dead_code)]

pub mod backup_fixture;

use std::sync::Arc;

use backstop_core::store::file::FileStore;
use backstop_core::store::s3::{S3Options, S3Store};
use backstop_core::ObjectStore;

pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    /// Keeps a file backend's directory alive for the test's duration.
    pub _dir: Option<tempfile::TempDir>,
}

pub fn file_backend() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    Backend { store: Arc::new(FileStore::new(dir.path().join("repo"))), _dir: Some(dir) }
}

/// The in-memory store: the same contract, no disk.
pub fn memory_backend() -> Backend {
    Backend { store: Arc::new(backstop_core::store::memory::MemoryStore::new()), _dir: None }
}

pub fn s3_options() -> Option<S3Options> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(endpoint) = var("BACKSTOP_TEST_S3_ENDPOINT") else {
        if var("BACKSTOP_SKIP_S3").as_deref() == Some("1") {
            eprintln!("BACKSTOP_SKIP_S3=1: skipping an S3 test");
            return None;
        }
        panic!(
            "S3 tests need Garage: run `scripts/garage.sh start` and `source /var/lib/backstop-test/garage/env` \
             (or set BACKSTOP_SKIP_S3=1 to skip them knowingly)"
        );
    };
    Some(S3Options {
        endpoint: Some(endpoint),
        region: var("BACKSTOP_TEST_S3_REGION"),
        force_path_style: true,
        access_key_id: var("BACKSTOP_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: var("BACKSTOP_TEST_S3_SECRET_ACCESS_KEY"),
        session_token: None,
        max_attempts: 3,
        part_size: 5 << 20,
        upload_concurrency: 2,
        ca_file: None,
    })
}

pub fn s3_bucket() -> String {
    std::env::var("BACKSTOP_TEST_S3_BUCKET").unwrap_or_else(|_| "backstop-test".into())
}

/// A fresh prefix per test, so tests never see each other's objects.
pub async fn s3_backend_with(options: &S3Options) -> Backend {
    let prefix = format!("tests/{:016x}", rand::random::<u64>());
    Backend { store: Arc::new(S3Store::connect(&s3_bucket(), &prefix, options).await.expect("S3 client")), _dir: None }
}

pub async fn s3_backend() -> Option<Backend> {
    match s3_options() {
        Some(options) => Some(s3_backend_with(&options).await),
        None => None,
    }
}

/// Garage behind HTTPS: a TLS front on loopback whose certificate (for "localhost") a throwaway
/// CA signed, reached with that CA in `ca_file`. The front runs on the test's runtime.
pub async fn s3_tls_backend() -> Option<Backend> {
    let options = s3_options()?;
    let front = TlsFront::start(&options, "localhost").await;
    let options = S3Options {
        endpoint: Some(format!("https://localhost:{}", front.port)),
        ca_file: Some(front.ca_file.clone()),
        ..options
    };
    let mut backend = s3_backend_with(&options).await;
    backend._dir = Some(front.dir);
    Some(backend)
}

/// A TLS-terminating TCP proxy in front of Garage's plain HTTP port, with a CA of its own.
pub struct TlsFront {
    pub port: u16,
    /// The CA certificate (PEM) that signed the front's certificate.
    pub ca_file: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

impl TlsFront {
    /// Starts the front with a certificate for `server_name` (a DNS name).
    pub async fn start(options: &S3Options, server_name: &str) -> TlsFront {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "backstop test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate =
            CertificateParams::new(vec![server_name.to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = options
            .endpoint
            .as_deref()
            .and_then(|e| e.strip_prefix("http://"))
            .expect("Garage's endpoint is plain http://")
            .trim_end_matches('/')
            .to_string();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // A refused handshake (the client does not trust the CA) just ends here.
                    let Ok(mut tls) = acceptor.accept(client).await else { return };
                    let Ok(mut garage) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut garage).await;
                });
            }
        });
        TlsFront { port, ca_file, dir }
    }
}

/// Deterministic incompressible bytes: a xorshift stream, so a 64 MiB object can be generated and
/// checked piece by piece without ever holding it.
pub struct NoiseSource {
    state: u64,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        NoiseSource { state: seed | 1 }
    }

    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A repository handle that signs with a fresh key and trusts it: what every writer is.
pub fn signed_repository(
    store: Arc<dyn ObjectStore>,
    cluster: &str,
    codec: backstop_core::codec::CodecSettings,
) -> backstop_core::Repository {
    backstop_core::Repository::new(store, cluster, codec)
        .unwrap()
        .with_signer(backstop_core::auth::SigningKey::generate())
}

/// A path for a large streamed object in tests: a logical dump of database `name`.
pub fn stream_path(name: &str) -> backstop_core::ObjectPath {
    let id = backstop_core::logical::LogicalId::parse("20261122T031500Z-L").unwrap();
    backstop_core::layout::logical(name, &id, backstop_core::layout::LogicalFile::Dump)
}
