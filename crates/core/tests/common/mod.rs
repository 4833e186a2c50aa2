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
