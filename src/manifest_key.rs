//! The cluster's manifest key: the secret that authenticates the manifests this cluster writes.
//!
//! Manifests are stored in the clear and guarded by unkeyed checksums, so whoever can write to the
//! repository could forge one and have its DDL run by the restorer. Every manifest is signed with
//! HMAC-SHA256 under a key that lives only in the data directory (`backstop_manifest.key`, mode
//! 0600, created on the first snapshot); restores accept only manifests this key signed, unless the
//! caller opts in, explicitly and logged, to an unauthenticated one (restoring into a new cluster).
//!
//! Invariant: the key file is created once, create-if-absent (`link(2)` of an fsynced temporary
//! file), so concurrent first snapshots can never leave manifests signed by a key that lost a race.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

/// The key, if this cluster has one yet (restores: no key means nothing is authenticated).
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

/// The key, created on first use (snapshots).
pub fn get_or_create() -> Result<ManifestKey, Error> {
    if let Some(key) = existing()? {
        return Ok(key);
    }
    let path = key_path();
    let temp = path.with_file_name(format!(".{KEY_FILE}.tmp-{}", std::process::id()));
    let written = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).and_then(|mut file| {
        file.write_all(ManifestKey::generate().to_text().as_bytes()).and_then(|_| file.sync_all())
    });
    let linked = written.and_then(|_| match fs::hard_link(&temp, &path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&temp);
    linked.map_err(|e| Error::io("create", &path, e))?;
    let dir = path.parent().expect("a file in the data directory");
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))?;
    // Whichever backend linked first, everyone uses the key that is in the file.
    let key =
        read(&path)?.ok_or_else(|| Error::NotFound { store: "the data directory".into(), key: KEY_FILE.into() })?;
    let _ = KEY.set(key.clone());
    Ok(key)
}
