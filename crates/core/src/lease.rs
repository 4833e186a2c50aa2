//! The repository lease: base backups and expire exclude each other across servers that write the
//! same namespace (a primary and its standby, a copy restored `--as-primary`), where the in-server
//! lock cannot reach. One small signed object, `<cluster>/lease`, names its holder and when it
//! expires; the holder renews it while it works and deletes it when done.
//!
//! Invariants:
//! - A lease is honoured only when it is authenticated (signed by a trusted key); an unreadable or
//!   forged lease object is treated as held by someone unknown until it expires by the store's
//!   clock of its last write ([`STALE_AFTER`] past it), never as free.
//! - Where no lease is stored and the store decides `CreateNew` itself (a file system), acquiring
//!   is that one exclusive create. Otherwise (taking over an expired or own lease; S3, where
//!   Garage ignores `If-None-Match` and two writers can race) it is write-then-read-back: the
//!   read-back after [`SETTLE`] names the one that won; the loser backs off.
//! - A lease held by another *server* is respected until its expiry; one held by an earlier job of
//!   this same server is taken over (the caller already holds the in-server lock, so that job is
//!   gone).
//! - Expiry is [`TTL`] after each renewal; a holder that cannot renew stops its work (the caller
//!   cancels it), since after expiry another server may start removing what it uses.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout;
use crate::repository::{PutResult, Repository};
use crate::store::WriteMode;
use crate::time::unix_seconds;

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(600);
/// How often a holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(120);
/// How long a writer waits before reading its lease back.
pub const SETTLE: Duration = Duration::from_millis(300);
/// An unreadable lease object counts as held for this long after its last write.
pub const STALE_AFTER: Duration = TTL;

/// Who holds a lease: a server (its system identifier, host and data directory) and a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub server: String,
    pub job: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: Holder,
    /// "base_backup" or "expire".
    pub operation: String,
    pub acquired_at: f64,
    pub expires_at: f64,
}

/// What the lease object says now: None when there is none; Err(Unauthenticated/Corrupt) when it
/// cannot be read as ours.
async fn read(repository: &Repository) -> Result<Option<Lease>> {
    match repository.get_bytes(&layout::lease()).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Corrupt {
            key: repository.key(&layout::lease()),
            reason: format!("it is not a lease: {e}"),
        }),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn held_elsewhere(lease: &Lease) -> Error {
    Error::Busy {
        message: format!(
            "the repository is leased to {} ({}, job {}) until {}: another server is running a base backup or expire on this namespace",
            lease.holder.server,
            lease.operation,
            lease.holder.job,
            crate::time::format_utc(crate::time::from_unix_seconds(lease.expires_at))
        ),
        hint: "Wait for it to finish (the lease is renewed while it runs and expires 10 minutes after it stops), then run this again.".into(),
    }
}

/// Takes the lease for `holder` at `now`, or explains who holds it.
pub async fn acquire(repository: &Repository, holder: &Holder, operation: &str, now: SystemTime) -> Result<Lease> {
    let lease = Lease {
        holder: holder.clone(),
        operation: operation.to_string(),
        acquired_at: unix_seconds(now),
        expires_at: unix_seconds(now + TTL),
    };
    match read(repository).await {
        Ok(Some(lease)) if lease.holder.server != holder.server && lease.expires_at > unix_seconds(now) => {
            return Err(held_elsewhere(&lease))
        }
        // No lease, and a store that decides CreateNew itself: whoever creates it holds it, with
        // no settling wait. Losing that race means another writer holds it now: never overwrite theirs.
        Ok(None) if repository.store().create_is_exclusive() => {
            return match create(repository, &lease).await {
                Ok(PutResult::Stored { .. }) => Ok(lease),
                Ok(PutResult::AlreadyIdentical { .. }) | Err(Error::Conflict { .. }) => match read(repository).await {
                    Ok(Some(other)) => Err(held_elsewhere(&other)),
                    _ => Err(raced()),
                },
                Err(e) => Err(e),
            };
        }
        Ok(_) => {}
        Err(e @ (Error::Unauthenticated { .. } | Error::Corrupt { .. })) => {
            let written = repository.head(&layout::lease()).await?.and_then(|i| i.last_modified);
            if written.is_none_or(|w| now.duration_since(w).unwrap_or_default() < STALE_AFTER) {
                return Err(Error::Job {
                    message: format!("the repository's lease object cannot be trusted ({e}), and it was written less than 10 minutes ago"),
                    hint: "Someone else wrote it: find out who can write the bucket. It is ignored 10 minutes after its last write.".into(),
                });
            }
        }
        Err(e) => return Err(e),
    }
    write(repository, &lease).await?;
    tokio::time::sleep(SETTLE).await;
    match read(repository).await? {
        Some(read) if read.holder == *holder => Ok(lease),
        Some(other) => Err(held_elsewhere(&other)),
        None => Err(raced()),
    }
}

fn raced() -> Error {
    Error::Job {
        message: "the repository's lease changed hands while this job was taking it".into(),
        hint: "Another server is releasing or taking it: run this again in a minute.".into(),
    }
}

async fn write(repository: &Repository, lease: &Lease) -> Result<()> {
    put(repository, lease, WriteMode::Overwrite).await.map(drop)
}

/// Writes the lease only where none is stored.
async fn create(repository: &Repository, lease: &Lease) -> Result<PutResult> {
    put(repository, lease, WriteMode::CreateNew).await
}

async fn put(repository: &Repository, lease: &Lease, mode: WriteMode) -> Result<PutResult> {
    let bytes = serde_json::to_vec(lease).map_err(|e| Error::InvalidInput(e.to_string()))?;
    repository.put_bytes(&layout::lease(), bytes.into(), mode).await
}

/// Extends `lease` by [`TTL`] from `now`, if it is still ours.
pub async fn renew(repository: &Repository, lease: &mut Lease, now: SystemTime) -> Result<()> {
    match read(repository).await? {
        Some(current) if current.holder == lease.holder => {
            lease.expires_at = unix_seconds(now + TTL);
            write(repository, lease).await
        }
        Some(other) => Err(held_elsewhere(&other)),
        None => Err(Error::Job {
            message: "the repository's lease was removed while this job held it".into(),
            hint: "Someone deleted it: find out who can write the bucket, and run the job again.".into(),
        }),
    }
}

/// Gives the lease up, if it is still ours.
pub async fn release(repository: &Repository, lease: &Lease) -> Result<()> {
    match read(repository).await {
        Ok(Some(current)) if current.holder == lease.holder => repository.delete(&layout::lease()).await,
        _ => Ok(()),
    }
}

/// Renews `lease` every [`RENEW_EVERY`] until dropped; when a renewal fails, `lost` is cancelled
/// (the caller's work stops) and the task ends with that error.
pub fn keep(
    repository: Repository,
    mut lease: Lease,
    lost: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            if let Err(e) = renew(&repository, &mut lease, SystemTime::now()).await {
                lost.cancel();
                return Err(e);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecSettings, Compression};
    use std::sync::Arc;

    fn repository(store: Arc<dyn crate::ObjectStore>, key: &crate::auth::SigningKey) -> Repository {
        Repository::new(store, "c1", CodecSettings::new(Compression::None, vec![])).unwrap().with_signer(key.clone())
    }

    fn holder(server: &str, job: &str) -> Holder {
        Holder { server: server.into(), job: job.into() }
    }

    #[tokio::test]
    async fn two_servers_exclude_each_other_until_the_lease_is_released_or_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::ObjectStore> = Arc::new(crate::store::file::FileStore::new(dir.path().to_path_buf()));
        let key = crate::auth::SigningKey::generate();
        let (a, b) = (repository(store.clone(), &key), repository(store.clone(), &key));
        let now = SystemTime::now();
        let lease = acquire(&a, &holder("primary", "7"), "base_backup", now).await.unwrap();
        let refused = acquire(&b, &holder("standby", "3"), "expire", now).await.unwrap_err();
        assert!(refused.to_string().contains("leased to primary (base_backup, job 7)"), "{refused}");
        // The same server's later job takes over a lease its crashed job left.
        let mut again = acquire(&a, &holder("primary", "8"), "expire", now).await.unwrap();
        // Past its expiry, another server may take it; the old holder's renewal then fails.
        let later = now + TTL + Duration::from_secs(1);
        let taken = acquire(&b, &holder("standby", "3"), "expire", later).await.unwrap();
        let lost = renew(&a, &mut again, later).await.unwrap_err();
        assert!(lost.to_string().contains("leased to standby"), "{lost}");
        // Release frees it; releasing someone else's lease does nothing.
        release(&a, &lease).await.unwrap();
        assert!(acquire(&a, &holder("primary", "9"), "base_backup", later).await.is_err());
        release(&b, &taken).await.unwrap();
        acquire(&a, &holder("primary", "9"), "base_backup", later).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_servers_racing_for_a_free_lease_on_a_file_system_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::ObjectStore> = Arc::new(crate::store::file::FileStore::new(dir.path().to_path_buf()));
        assert!(store.create_is_exclusive());
        let key = crate::auth::SigningKey::generate();
        for round in 0..5 {
            let racers = (0..6).map(|n| {
                let repository = repository(store.clone(), &key);
                tokio::spawn(async move {
                    acquire(&repository, &holder(&format!("server{n}"), "1"), "base_backup", SystemTime::now()).await
                })
            });
            let outcomes = futures::future::join_all(racers).await;
            let won: Vec<Lease> = outcomes.into_iter().filter_map(|o| o.unwrap().ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            // The one stored is the winner's.
            assert_eq!(read(&repository(store.clone(), &key)).await.unwrap().unwrap().holder, won[0].holder);
            release(&repository(store.clone(), &key), &won[0]).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_lease_not_signed_by_a_trusted_key_is_never_taken_as_free() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::ObjectStore> = Arc::new(crate::store::file::FileStore::new(dir.path().to_path_buf()));
        let ours = crate::auth::SigningKey::generate();
        let stranger = repository(store.clone(), &crate::auth::SigningKey::generate());
        acquire(&stranger, &holder("attacker", "1"), "base_backup", SystemTime::now()).await.unwrap();
        let error =
            acquire(&repository(store, &ours), &holder("primary", "2"), "expire", SystemTime::now()).await.unwrap_err();
        assert!(error.to_string().contains("cannot be trusted"), "{error}");
    }
}
