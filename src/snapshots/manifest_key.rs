//! The manifest key of backstop 0.2: the shared secret (`backstop_manifest.key` in the data
//! directory) whose HMAC-SHA256 authenticated snapshot manifests before every object was signed.
//!
//! backstop 0.3 writes no HMAC and never creates the key: a snapshot manifest is authenticated
//! by its object signature, which a verifier checks with public keys only. The key is read for
//! one purpose: `adopt_repository()` vouches for a 0.2 snapshot manifest only when this key's
//! HMAC over it is intact, so an upgraded cluster's older snapshots stay restorable.

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use backstop_core::snapshot::manifest::ManifestKey;
use backstop_core::Error;
use pgrx::pg_sys;

pub const KEY_FILE: &str = "backstop_manifest.key";

static KEY: OnceLock<ManifestKey> = OnceLock::new();

fn key_path() -> PathBuf {
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
    PathBuf::from(data_dir).join(KEY_FILE)
}

fn read(path: &PathBuf) -> Result<Option<ManifestKey>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => ManifestKey::parse(&text).map(Some).map_err(|_| Error::Corrupt {
            key: path.display().to_string(),
            reason: "it does not hold a manifest key (64 hex digits)".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The key, if this cluster was a backstop 0.2 cluster that took snapshots.
pub fn existing() -> Result<Option<ManifestKey>, Error> {
    if let Some(key) = KEY.get() {
        return Ok(Some(key.clone()));
    }
    let key = read(&key_path())?;
    if let Some(key) = &key {
        let _ = KEY.set(key.clone());
    }
    Ok(key)
}
