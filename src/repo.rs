//! Opening this cluster's repository from the settings.

use backstop_core::auth::{SigningKey, Trust};
use backstop_core::store::{self};
use backstop_core::{ClusterIdentity, Error, Location, Repository};
use pgrx::prelude::*;

use crate::{gucs, io};

pub fn system_identifier() -> u64 {
    unsafe { pg_sys::GetSystemIdentifier() }
}

pub fn cluster_identity() -> ClusterIdentity {
    ClusterIdentity {
        system_identifier: system_identifier(),
        pg_version_num: pg_sys::PG_VERSION_NUM,
        wal_segment_size: unsafe { pg_sys::wal_segment_size } as u32,
    }
}

/// This cluster's namespace: backstop.cluster_name, or the system identifier.
pub fn cluster_namespace() -> String {
    gucs::cluster_name().unwrap_or_else(|| system_identifier().to_string())
}

pub fn location() -> Result<Location, Error> {
    gucs::repository().ok_or(Error::NotConfigured("backstop.repository"))?.parse()
}

/// The data directory: where the signing key lives.
pub fn data_dir() -> std::path::PathBuf {
    let dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    std::path::PathBuf::from(dir.to_string_lossy().into_owned())
}

/// This cluster's signing key, created on first use (the server runs in its data directory as
/// its owner: the only process that may create it).
pub fn signing_key() -> Result<SigningKey, Error> {
    backstop_core::auth::load_or_create_signing_key(&data_dir())
}

/// The repository, signing with this cluster's key and trusting it and backstop.trusted_keys.
pub fn open() -> Result<Repository, Error> {
    let location = location()?;
    let codec = gucs::codec_settings()?;
    let s3 = gucs::s3_options();
    let store = io::block_on(store::open(&location, &s3))?;
    let repository = Repository::new(store, &cluster_namespace(), codec)?
        .with_signer(signing_key()?)
        .with_trust(Trust::new(gucs::trusted_keys()?));
    // A restored copy shares its namespace (its system identifier) with the cluster it came from:
    // it may read it (restore a table), never write or expire into it.
    Ok(match (gucs::restored_from(), gucs::cluster_name()) {
        (Some(from), None) => repository.read_only(format!(
            "this cluster is a restored copy ({from}), and {} is the namespace of the cluster it was restored from",
            cluster_namespace()
        )),
        _ => repository,
    })
}

/// The repository with this cluster's ownership checked, and the identities that let it read
/// encrypted objects back: for snapshot and restore functions.
pub fn open_checked() -> Result<Repository, Error> {
    let repository = open()?.with_identities(gucs::encryption_identities()?);
    io::block_on(repository.ensure_cluster(&cluster_identity()))?;
    Ok(repository)
}
