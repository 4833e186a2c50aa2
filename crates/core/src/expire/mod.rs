//! `expire`: retention applied to a repository. Planning reads everything and decides; applying
//! deletes in an order that never leaves a retained backup without what it needs:
//!
//! 1. manifests of expired backups (the commit point: once it is gone the backup is gone),
//!    snapshot and logical backup manifests before their data;
//! 2. WAL before the start of the oldest retained valid backup (PITR stays possible from it);
//! 3. packs no retained manifest names, older than the grace period (a running backup writes its
//!    packs before its manifest; the caller also holds the base-backup lock while expiring).
//!
//! Safety rules (design.md rule 6): the newest valid backup is never removed (the retention math
//! guarantees it); no pack is removed when any backup's manifest could not be read (its references
//! are unknown); no WAL is removed when no valid backup is retained.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backups::verify;
use crate::error::Result;
use crate::layout::{self, ObjectKind, ObjectPath, Prefix};
use crate::repository::{CancellationToken, Repository};
use crate::schedule::job::{parse_duration, ExpireArgs};
use crate::schedule::retention::{self, Item};
use crate::snapshot::stored;

/// Interrupted backups' packs and snapshot directories younger than this are left alone.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Removal {
    /// "backup", "snapshot", "incomplete snapshot", "logical backup", "incomplete logical backup",
    /// "wal", "pack".
    pub what: &'static str,
    /// The backup or snapshot id, WAL file or pack.
    pub name: String,
    /// Keys (relative to the cluster) deleted, in order.
    #[serde(skip)]
    pub keys: Vec<String>,
    pub bytes: u64,
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub removals: Vec<Removal>,
    /// Backups kept, with the reasons (newest valid, daily, ...).
    pub kept_backups: Vec<(String, Vec<&'static str>)>,
    pub kept_snapshots: usize,
    pub kept_logical: usize,
    /// What was deliberately not removed, and why (unreadable manifests, no valid backup).
    pub held_back: Vec<String>,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.removals.iter().map(|r| r.bytes).sum()
    }

    pub fn count(&self, what: &str) -> usize {
        self.removals.iter().filter(|r| r.what == what).count()
    }
}

/// Items kept because they are dated in the future are named in what was held back: a DBA should
/// look at the clock of the server that wrote them (or at who did).
fn note_future(plan: &mut Plan, what: &str, decisions: &[retention::Decision]) {
    for decision in decisions.iter().filter(|d| d.reasons.contains(&"dated in the future")) {
        plan.held_back.push(format!(
            "{what} {}: dated in the future, so kept and not counted as the newest (check the clock of the server that wrote it)",
            decision.id
        ));
    }
}

fn unix(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

/// Decides what `args` removes from `repository` at `now`. Reads, never deletes.
pub async fn plan(repository: &Repository, args: &ExpireArgs, now: SystemTime) -> Result<Plan> {
    let grace = args.grace.as_deref().map(parse_duration).transpose()?.unwrap_or(DEFAULT_GRACE);
    let mut plan = Plan::default();
    if let Some(policy) = &args.backups {
        plan_backups(repository, &policy.policy()?, grace, now, &mut plan).await?;
    }
    if let Some(policy) = &args.snapshots {
        plan_snapshots(repository, &policy.policy()?, grace, now, &mut plan).await?;
    }
    if let Some(policy) = &args.logical {
        plan_logical(repository, &policy.policy()?, grace, now, &mut plan).await?;
    }
    Ok(plan)
}

async fn plan_backups(
    repository: &Repository,
    policy: &retention::Policy,
    grace: Duration,
    now: SystemTime,
    plan: &mut Plan,
) -> Result<()> {
    let backups = verify::list_backups(repository).await?;
    let items: Vec<Item> = backups
        .iter()
        .map(|b| Item {
            id: b.id.to_string(),
            time: b.manifest.as_ref().map(|m| unix(m.stop_time)).unwrap_or(UNIX_EPOCH),
            valid: b.verified(),
        })
        .collect();
    let decisions = retention::decide(&items, policy, now);
    note_future(plan, "backup", &decisions);
    let mut referenced = HashSet::new();
    let mut unreadable = Vec::new();
    let mut oldest_retained: Option<&crate::backups::manifest::BackupManifest> = None;
    for (backup, decision) in backups.iter().zip(&decisions) {
        if decision.keep || backup.manifest.is_none() {
            // A backup whose manifest cannot be read is kept: what it references is unknown, and
            // removing it is a decision for a DBA, not for retention.
            match &backup.manifest {
                Some(manifest) => {
                    referenced.extend(manifest.packs.iter().map(|p| p.id.clone()));
                    if backup.verified() && oldest_retained.is_none_or(|o| manifest.start_lsn < o.start_lsn) {
                        oldest_retained = Some(manifest);
                    }
                }
                None => unreadable.push(backup.id.to_string()),
            }
            plan.kept_backups.push((backup.id.to_string(), decision.reasons.clone()));
        } else {
            plan.removals.push(Removal {
                what: "backup",
                name: backup.id.to_string(),
                keys: vec![layout::backup_manifest(&backup.id).to_string()],
                bytes: backup.manifest.as_ref().map(|m| m.stats.bytes_stored).unwrap_or(0),
                why: if backup.verified() {
                    "outside the retention policy".into()
                } else {
                    format!("not restorable ({}) and outside the retention policy", backup.state)
                },
            });
        }
    }
    // WAL: only what precedes the oldest retained valid backup.
    match oldest_retained {
        Some(oldest) => {
            let wal = verify::archived_wal(repository).await?;
            let names: Vec<crate::wal::WalFileName> = wal.iter().map(|w| w.name.clone()).collect();
            let gone: HashSet<String> =
                retention::wal_to_expire(&names, Some(oldest.start_lsn), oldest.wal_segment_size).into_iter().collect();
            for file in wal.iter().filter(|w| gone.contains(&w.name.name)) {
                plan.removals.push(Removal {
                    what: "wal",
                    name: file.name.name.clone(),
                    keys: vec![layout::wal(&file.name).to_string()],
                    bytes: file.stored_bytes,
                    why: format!("before the oldest retained backup {} (starts at {})", oldest.id, oldest.start_lsn),
                });
            }
        }
        None => plan.held_back.push("WAL: no valid backup is retained, so every WAL file is kept".into()),
    }
    // Packs: unreferenced and older than the grace period.
    if unreadable.is_empty() {
        let packs: Vec<_> = listed(repository, &layout::packs())
            .await?
            .into_iter()
            .filter(|o| ObjectPath::parse(&o.key).is_some_and(|p| p.kind() == ObjectKind::Pack))
            .collect();
        for pack in retention::packs_to_expire(&packs, &referenced, grace, now) {
            let name = pack.key.rsplit('/').next().unwrap_or_default().to_string();
            // The pack, then the record that it was damaged, if there is one (absent is fine).
            let mut keys = vec![pack.key.clone()];
            keys.extend(layout::damage_record(&name).ok().map(|record| record.to_string()));
            plan.removals.push(Removal {
                what: "pack",
                keys,
                name,
                bytes: pack.size,
                why: "no retained backup names it".into(),
            });
        }
    } else {
        plan.held_back.push(format!(
            "packs: the manifests of {} could not be read, so no pack is removed",
            unreadable.join(", ")
        ));
    }
    Ok(())
}

/// A stored snapshot and its manifest, None when it has none (interrupted) or it does not read.
type SnapshotWithManifest = (stored::StoredSnapshot, Option<crate::snapshot::manifest::SnapshotManifest>);

async fn plan_snapshots(
    repository: &Repository,
    policy: &retention::Policy,
    grace: Duration,
    now: SystemTime,
    plan: &mut Plan,
) -> Result<()> {
    let mut by_table: BTreeMap<(String, String), Vec<SnapshotWithManifest>> = BTreeMap::new();
    for snapshot in stored::list(repository, None).await? {
        let manifest = match stored::read_manifest(repository, &snapshot).await {
            Ok(manifest) => Some(manifest),
            // No manifest: an interrupted snapshot (collected below once older than the grace).
            Err(crate::error::Error::NotFound { .. }) => None,
            // A manifest that is there but does not verify is kept, and so is its data: that is
            // for a DBA to look at, not for retention to erase.
            Err(e @ (crate::error::Error::Corrupt { .. } | crate::error::Error::Unauthenticated { .. })) => {
                plan.held_back.push(format!(
                    "snapshot {}.{} {}: its manifest does not verify ({e}); kept",
                    snapshot.schema,
                    snapshot.table,
                    snapshot.id.as_str()
                ));
                continue;
            }
            // Anything else (the store did not answer) stops the plan: deciding on half a
            // listing could remove what the other half needs.
            Err(e) => return Err(e),
        };
        by_table.entry((snapshot.schema.clone(), snapshot.table.clone())).or_default().push((snapshot, manifest));
    }
    for snapshots in by_table.values() {
        let mut items = Vec::new();
        let mut incomplete = Vec::new();
        for (snapshot, manifest) in snapshots {
            match manifest {
                Some(m) => items.push(Item {
                    id: snapshot.id.as_str().to_string(),
                    time: UNIX_EPOCH + Duration::from_millis(m.taken_at_unix_ms.max(0) as u64),
                    valid: true,
                }),
                None => incomplete.push(snapshot),
            }
        }
        let decisions = retention::decide(&items, policy, now);
        note_future(plan, "snapshot", &decisions);
        for (decision, (snapshot, manifest)) in decisions.iter().zip(snapshots.iter().filter(|(_, m)| m.is_some())) {
            if decision.keep {
                plan.kept_snapshots += 1;
                continue;
            }
            let manifest = manifest.as_ref().expect("filtered");
            plan.removals.push(Removal {
                what: "snapshot",
                name: format!("{}.{} {}", snapshot.schema, snapshot.table, snapshot.id.as_str()),
                keys: vec![
                    layout::snapshot_manifest(&snapshot.schema, &snapshot.table, &snapshot.id).to_string(),
                    layout::snapshot_data(&snapshot.schema, &snapshot.table, &snapshot.id).to_string(),
                ],
                bytes: manifest.data.stored_bytes,
                why: "outside the retention policy".into(),
            });
        }
        // A directory without a manifest is an interrupted snapshot once older than the grace.
        for snapshot in incomplete {
            let data = layout::snapshot_data(&snapshot.schema, &snapshot.table, &snapshot.id);
            let Some(info) = repository.head(&data).await? else { continue };
            if info.last_modified.is_some_and(|m| now.duration_since(m).unwrap_or_default() >= grace) {
                plan.removals.push(Removal {
                    what: "incomplete snapshot",
                    name: format!("{}.{} {}", snapshot.schema, snapshot.table, snapshot.id.as_str()),
                    keys: vec![data.to_string()],
                    bytes: info.size,
                    why: "interrupted (no manifest) and older than the grace period".into(),
                });
            }
        }
    }
    Ok(())
}

/// Everything under `prefix`, keys relative to the namespace.
async fn listed(repository: &Repository, prefix: &Prefix) -> Result<Vec<crate::store::ObjectInfo>> {
    use futures::TryStreamExt;
    repository
        .list(prefix)
        .map_ok(|o| crate::store::ObjectInfo { key: o.rel, size: o.size, last_modified: o.last_modified })
        .try_collect()
        .await
}

/// The objects of one logical backup directory, and its manifest when it has one that reads.
struct LogicalDir {
    objects: Vec<crate::store::ObjectInfo>,
    manifest: Option<crate::logical::manifest::LogicalManifest>,
}

/// Logical backups, per database, by the same count/age/GFS rules; a directory without a
/// manifest (an interrupted dump) goes once older than the grace period.
async fn plan_logical(
    repository: &Repository,
    policy: &retention::Policy,
    grace: Duration,
    now: SystemTime,
    plan: &mut Plan,
) -> Result<()> {
    use crate::logical::{self, manifest, LogicalId, MANIFEST_FILE};
    let mut dirs: BTreeMap<(String, LogicalId), LogicalDir> = BTreeMap::new();
    for object in listed(repository, &layout::logical_backups()).await? {
        let mut parts = object.key.splitn(4, '/').skip(1);
        let (Some(dir), Some(id), Some(_file)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Some(database), Ok(id)) = (logical::database_from_dir(dir), LogicalId::parse(id)) else { continue };
        dirs.entry((database, id))
            .or_insert_with(|| LogicalDir { objects: Vec::new(), manifest: None })
            .objects
            .push(object);
    }
    let mut by_database: BTreeMap<String, Vec<(LogicalId, LogicalDir)>> = BTreeMap::new();
    for ((database, id), mut dir) in dirs {
        let has_manifest = dir.objects.iter().any(|o| o.key.ends_with(&format!("/{MANIFEST_FILE}")));
        if has_manifest {
            match manifest::read(repository, &database, &id).await {
                Ok(m) => dir.manifest = Some(m),
                Err(e @ (crate::error::Error::Corrupt { .. } | crate::error::Error::Unauthenticated { .. })) => {
                    plan.held_back
                        .push(format!("logical backup {database} {id}: its manifest does not verify ({e}); kept"));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        by_database.entry(database).or_default().push((id, dir));
    }
    for (database, backups) in &by_database {
        let complete: Vec<&(LogicalId, LogicalDir)> = backups.iter().filter(|(_, d)| d.manifest.is_some()).collect();
        let items: Vec<Item> = complete
            .iter()
            .map(|(id, d)| Item {
                id: id.to_string(),
                time: unix(d.manifest.as_ref().map(|m| m.stop_time).unwrap_or(0.0)),
                valid: true,
            })
            .collect();
        let decisions = retention::decide(&items, policy, now);
        note_future(plan, "logical backup", &decisions);
        for (decision, (id, dir)) in decisions.iter().zip(&complete) {
            if decision.keep {
                plan.kept_logical += 1;
                continue;
            }
            plan.removals.push(Removal {
                what: "logical backup",
                name: format!("{database} {id}"),
                keys: logical_keys(dir),
                bytes: dir.objects.iter().map(|o| o.size).sum(),
                why: "outside the retention policy".into(),
            });
        }
        for (id, dir) in backups.iter().filter(|(_, d)| d.manifest.is_none()) {
            let newest = dir.objects.iter().filter_map(|o| o.last_modified).max();
            if newest.is_some_and(|m| now.duration_since(m).unwrap_or_default() >= grace) {
                plan.removals.push(Removal {
                    what: "incomplete logical backup",
                    name: format!("{database} {id}"),
                    keys: logical_keys(dir),
                    bytes: dir.objects.iter().map(|o| o.size).sum(),
                    why: "interrupted (no manifest) and older than the grace period".into(),
                });
            }
        }
    }
    Ok(())
}

/// A logical backup's keys relative to the cluster, its manifest first (the commit point).
fn logical_keys(dir: &LogicalDir) -> Vec<String> {
    let mut keys: Vec<String> = dir.objects.iter().map(|o| o.key.clone()).collect();
    keys.sort_by_key(|k| !k.ends_with(&format!("/{}", crate::logical::MANIFEST_FILE)));
    keys
}

/// Deletes what `plan` lists, in its order (manifests first). Stops at the first failure: what
/// was not deleted yet is still consistent, and the next run picks it up.
pub async fn apply(repository: &Repository, plan: &Plan, cancel: &CancellationToken) -> Result<u64> {
    let mut removed = 0;
    let order =
        ["backup", "snapshot", "incomplete snapshot", "logical backup", "incomplete logical backup", "wal", "pack"];
    for what in order {
        for removal in plan.removals.iter().filter(|r| r.what == what) {
            if cancel.is_cancelled() {
                return Err(crate::error::Error::Cancelled);
            }
            for key in &removal.keys {
                repository.delete_listed(key).await?;
            }
            removed += removal.bytes;
        }
    }
    Ok(removed)
}
