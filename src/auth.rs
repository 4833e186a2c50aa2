//! The repository's authentication, seen from SQL: this cluster's public key (for the recovery
//! kit and for `--trusted-key`), adopting a repository written by backstop 0.2, and doctor's row.
//!
//! The signing key itself never leaves the data directory (`backstop_signing.key`, 0600, excluded
//! from base backups): no SQL function returns it, and it is not a setting.

use backstop_core::adopt;
use backstop_core::doctor::Check;
use pgrx::prelude::*;

use crate::errors::{notice, OrRaise};
use crate::snapshots::manifest_key;
use crate::{io, repo};

/// This cluster's public key, `ed25519:<hex>`: what `backstop restore --trusted-key` and another
/// cluster's `backstop.trusted_keys` take. Keep it with the recovery kit, away from the bucket.
#[pg_extern(volatile, parallel_unsafe)]
fn repository_key() -> String {
    repo::signing_key().or_raise().public().to_string()
}

/// Vouches, once, for the unsigned objects a repository written by backstop 0.2 holds: each is
/// read through its checksums (a snapshot manifest through its 0.2 HMAC too) and recorded in a
/// signed adoption record; after that they read as authentic and nothing unsigned added later
/// does. Run it right after upgrading, while the bucket is known to be intact.
#[pg_extern(volatile, parallel_unsafe)]
fn adopt_repository() -> TableIterator<
    'static,
    (
        name!(adopted, i64),
        name!(bytes, i64),
        name!(already_authenticated, i64),
        name!(refused, i64),
        name!(record, Option<String>),
    ),
> {
    let repository = repo::open_checked().or_raise();
    // The 0.2 HMAC key of snapshot manifests: a forged 0.2 manifest is not adopted.
    let snapshot_key = manifest_key::existing().or_raise();
    notice(&format!("adopting the unsigned objects of {}", repository.describe()));
    let report = io::block_on(adopt::adopt(&repository, snapshot_key.as_ref(), &|_, _| {})).or_raise();
    for refused in &report.refused {
        pgrx::warning!("not adopted: {}: {}", refused.path, refused.reason);
    }
    TableIterator::once((
        report.adopted as i64,
        report.bytes as i64,
        report.already_authenticated as i64,
        report.refused.len() as i64,
        report.record,
    ))
}

/// doctor(): the key objects are signed with, and whether 0.2 objects still wait for adoption.
/// `repository_signing`.
pub fn checks(_: &mut crate::doctor::Context) -> Vec<Check> {
    vec![check()]
}

fn check() -> Check {
    let key = match repo::signing_key() {
        Ok(key) => key.public(),
        Err(e) => return Check::fail("repository_signing", e.to_string(), e.hint()),
    };
    let repository = match repo::open() {
        Ok(repository) => repository,
        Err(e) => {
            return Check::warn(
                "repository_signing",
                format!("signing key {}; repository not checked: {e}", key.id()),
                e.hint(),
            )
        }
    };
    let trusted = repository.trust().keys().len();
    match io::block_on(adopt::needs_adoption(&repository)) {
        Ok(false) => Check::ok(
            "repository_signing",
            format!("objects are signed with {key}; {trusted} key(s) trusted; keep the key with the recovery kit"),
        ),
        Ok(true) => Check::warn(
            "repository_signing",
            format!(
                "{} holds objects written by backstop 0.2 that are not adopted: they are refused",
                repository.describe()
            ),
            "Run SELECT * FROM backstop.adopt_repository() once, while the bucket is known to be intact.",
        ),
        Err(e) => Check::warn("repository_signing", format!("could not check adoption: {e}"), e.hint()),
    }
}
