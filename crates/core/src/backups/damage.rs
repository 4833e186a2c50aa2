//! Damage records: a pack that `verify` found damaged is recorded as `damaged/<pack id>.json`,
//! and no later backup references it, however recently a backup read it back whole.
//!
//! Invariants:
//! - Only a record's name (from a listing) is ever used, never its body: a record can only stop
//!   a backup from reusing a pack, so a forged one costs the re-read of the files that pointed
//!   into that pack, and a deleted one leaves it to the periodic read-back (`reread_after`) to find
//!   the damage again. The body (which pack, why, when) is for the humans who look.
//! - Recording is best effort: a handle that may not write (a restored copy, a CLI without the
//!   cluster's signing key) reports why it did not record, and the finding stands in the report.
//! - Expire deletes a pack's record together with the pack.

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::layout;
use crate::repository::Repository;
use crate::store::WriteMode;

/// Records that pack `pack_id` is damaged (`reason` says how). Recording it twice is success.
pub async fn record(repository: &Repository, pack_id: &str, reason: &str) -> Result<()> {
    let body = serde_json::json!({
        "pack": pack_id,
        "reason": reason,
        "found_at_unix": crate::time::unix_seconds(SystemTime::now()),
        "found_by": format!("backstop {}", env!("CARGO_PKG_VERSION")),
    });
    match repository
        .put_bytes(&layout::damage_record(pack_id)?, Bytes::from(body.to_string()), WriteMode::CreateNew)
        .await
    {
        Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The packs recorded as damaged.
pub async fn damaged_packs(repository: &Repository) -> Result<HashSet<String>> {
    let listed: Vec<_> = repository.list(&layout::damage_records()).try_collect().await?;
    Ok(listed.iter().filter_map(|item| item.path.as_ref().and_then(layout::damaged_pack).map(str::to_string)).collect())
}
