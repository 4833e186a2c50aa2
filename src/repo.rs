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

/// The repository lease (`backstop_core::lease`) held by a base backup or expire job of this
/// server, renewed on the I/O runtime while the job runs and released when this is dropped,
/// however the job ends.
pub struct HeldLease {
    repository: Repository,
    lease: backstop_core::lease::Lease,
    keeper: tokio::task::JoinHandle<Result<(), Error>>,
    lost: backstop_core::repository::CancellationToken,
}

impl HeldLease {
    pub fn acquire(repository: &Repository, operation: &str, job_id: i64) -> Result<HeldLease, Error> {
        let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned();
        let mut host = [0u8; 256];
        let host = if unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0 {
            String::from_utf8_lossy(&host[..host.iter().position(|b| *b == 0).unwrap_or(host.len())]).into_owned()
        } else {
            "unknown host".into()
        };
        let holder = backstop_core::lease::Holder {
            server: format!("{host}:{data_dir} (system {})", system_identifier()),
            job: job_id.to_string(),
        };
        let lease =
            io::block_on(backstop_core::lease::acquire(repository, &holder, operation, std::time::SystemTime::now()))?;
        let lost = backstop_core::repository::CancellationToken::new();
        let keeper = {
            let _runtime = io::runtime().enter();
            backstop_core::lease::keep(repository.clone(), lease.clone(), lost.clone())
        };
        Ok(HeldLease { repository: repository.clone(), lease, keeper, lost })
    }

    /// The lease could not be renewed: another server may now take it, so the job must stop.
    pub fn lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// An error when the lease was lost (before publishing anything that relies on it).
    pub fn check(&self) -> Result<(), Error> {
        if self.lost() {
            return Err(Error::Job {
                message: "this job lost the repository lease (it could not be renewed), so it stopped before publishing"
                    .into(),
                hint: "Another server or someone with write access to the bucket took or removed it; see the server log, then run the job again.".into(),
            });
        }
        Ok(())
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.keeper.abort();
        // Not io::block_on: that checks for interrupts, which must not raise while unwinding.
        let released = io::runtime().block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                backstop_core::lease::release(&self.repository, &self.lease),
            )
            .await
        });
        if !matches!(released, Ok(Ok(()))) {
            pgrx::log!("backstop: could not release the repository lease; it expires by itself within 10 minutes");
        }
    }
}
