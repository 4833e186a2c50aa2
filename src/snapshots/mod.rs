//! Table snapshots: a table's rows as Parquet in the repository, committed by a manifest written
//! last. Rooms: [`take`] (taking one), `sql` (`snapshot_table`, `snapshots`), [`job`] (the
//! scheduled `snapshot` job), [`drill`] (`snapshot_restore`), [`restore`] (restore_table, validation,
//! copy-back, recover); [`catalog`] and [`reader`] read a table's definition and rows. What is
//! shared among them (naming a table, listing and reading snapshots) is here.

pub mod catalog;
pub mod drill;
pub mod health;
pub mod job;
pub mod manifest_key;
pub mod reader;
pub mod restore;
mod sql;
pub mod take;

use std::time::Duration;

use backstop_core::snapshot as layout;
use backstop_core::snapshot::manifest::SnapshotManifest;
use backstop_core::snapshot::stored::{self, StoredSnapshot, TableFilter};
use backstop_core::{Error, Repository};
use pgrx::prelude::*;

use crate::errors::{raise_with, OrRaise};
use crate::{io, repo};

/// How often long operations report progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Resolves a table named as text: an existing table by the usual rules (search_path, quoting);
/// a dropped one as `schema.table`, or by a bare name that exactly one schema has snapshots of.
pub fn resolve_table_name(repository: &Repository, name: &str) -> (String, String) {
    let (existing, parts) = Spi::connect(|client| {
        let parts: Vec<String> = client
            .select("SELECT pg_catalog.parse_ident($1)", Some(1), &[name.into()])?
            .first()
            .get::<Vec<String>>(1)?
            .unwrap_or_default();
        let row = client.select(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = pg_catalog.to_regclass($1)",
            Some(1),
            &[name.into()],
        )?;
        let existing = if row.is_empty() {
            None
        } else {
            let row = row.first();
            Some((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()))
        };
        Ok::<_, pgrx::spi::Error>((existing, parts))
    })
    .unwrap_or_else(|e| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            &e.to_string(),
            "Name the table as [schema.]table, quoting names as in SQL.",
        )
    });
    if let Some(found) = existing {
        return found;
    }
    match parts.as_slice() {
        [schema, table] => (schema.clone(), table.clone()),
        [table] => {
            let listed = io::block_on(stored::list(repository, None)).or_raise();
            let mut schemas: Vec<&str> =
                listed.iter().filter(|s| &s.table == table).map(|s| s.schema.as_str()).collect();
            schemas.dedup();
            match schemas.as_slice() {
                [schema] => (schema.to_string(), table.clone()),
                [] => raise_with(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    &format!(
                        "table \"{table}\" does not exist and the repository has no snapshots of a table by that name"
                    ),
                    "backstop.snapshots() lists the tables the repository has snapshots of; name one as schema.table.",
                ),
                several => raise_with(
                    PgSqlErrorCode::ERRCODE_AMBIGUOUS_ALIAS,
                    &format!(
                        "table \"{table}\" does not exist and snapshots of it exist in several schemas ({})",
                        several.join(", ")
                    ),
                    "Name the table with its schema, as schema.table.",
                ),
            }
        }
        _ => raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            &format!("\"{name}\" is not a table name"),
            "Name the table as [schema.]table, quoting names as in SQL.",
        ),
    }
}

/// A listed snapshot with its manifest, or why the manifest could not be used.
pub struct Listed {
    pub snapshot: StoredSnapshot,
    pub manifest: Result<SnapshotManifest, Error>,
}

/// Snapshots of one table (or all), newest first; unreadable manifests sort last.
pub fn list_with_manifests(repository: &Repository, table: Option<(&str, &str)>) -> Vec<Listed> {
    let snapshots = io::block_on(stored::list(repository, table)).or_raise();
    let mut listed: Vec<Listed> = snapshots
        .into_iter()
        .map(|snapshot| {
            pgrx::check_for_interrupts!();
            let manifest = io::block_on(stored::read_manifest(repository, &snapshot));
            Listed { snapshot, manifest }
        })
        .collect();
    listed.sort_by_key(|l| std::cmp::Reverse(l.manifest.as_ref().map(|m| m.taken_at_unix_ms).unwrap_or(i64::MIN)));
    listed
}

/// Reads a snapshot's data object through into `file`, verified ([`stored::read_data`]), on an I/O
/// thread: the backend waits honouring cancel and statement_timeout even when the store stops
/// answering, and `progress` gets the plain bytes read so far. Returns the file on success.
pub fn fetch_verified(
    repository: &Repository,
    snapshot: &StoredSnapshot,
    manifest: &SnapshotManifest,
    file: std::fs::File,
    mut progress: impl FnMut(u64),
) -> Result<std::fs::File, Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let copied = std::sync::Arc::new(AtomicU64::new(0));
    let counter = copied.clone();
    let (repository, snapshot, manifest) = (repository.clone(), snapshot.clone(), manifest.clone());
    io::run_blocking(
        move |cancel| {
            let mut file = file;
            let handle = tokio::runtime::Handle::current();
            let progress = |n| counter.store(n, Ordering::Relaxed);
            stored::read_data(&repository, &handle, &snapshot, &manifest, &mut file, progress, cancel).map(|()| file)
        },
        || progress(copied.load(Ordering::Relaxed)),
    )
}

fn may_see_snapshot(status: &stored::SnapshotStatus) -> bool {
    let qualified = layout::qualified_name(&status.snapshot.schema, &status.snapshot.table);
    let owner = status.manifest.as_ref().map(|m| m.table.access.owner.clone()).unwrap_or_default();
    crate::spi::one::<bool>(
        "SELECT CASE WHEN pg_catalog.to_regclass($1) IS NOT NULL
                     THEN pg_catalog.has_table_privilege(pg_catalog.to_regclass($1), 'SELECT')
                     ELSE EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $2) AND pg_catalog.pg_has_role($2, 'MEMBER') END",
        &[qualified.into(), owner.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The snapshots (of one table, or all) the caller may see, newest first, each checked: its
/// manifest, and with `verify` its whole data object; the same listing and verification as
/// `backstop snapshots list`, in the same words. Rows and sizes of a table are for who may read
/// it (as for a restore of it): a plain backstop_admin member sees snapshots of tables she may
/// SELECT, and of dropped tables whose recorded owner role she is a member of. Only those are
/// read through: the data of a snapshot hidden from the caller is never fetched for her.
pub fn statuses(table_name: Option<&str>, verify: bool) -> Vec<stored::SnapshotStatus> {
    let repository = repo::open().or_raise().with_identities(crate::gucs::encryption_identities().or_raise());
    let filter = match table_name.map(|name| resolve_table_name(&repository, name)) {
        Some((schema, table)) => TableFilter { schema: Some(schema), table: Some(table) },
        None => TableFilter::default(),
    };
    let listing = repository.clone();
    let mut statuses = io::run_blocking(
        move |cancel| stored::list_statuses(&listing, &tokio::runtime::Handle::current(), &filter, cancel),
        || {},
    )
    .or_raise();
    if !crate::jobs::caller_reads_everything() {
        statuses.retain(may_see_snapshot);
    }
    if !verify {
        return statuses;
    }
    io::run_blocking(
        move |cancel| {
            stored::verify_statuses(&repository, &tokio::runtime::Handle::current(), &mut statuses, cancel, |_| {})
                .map(|()| statuses)
        },
        || {},
    )
    .or_raise()
}
