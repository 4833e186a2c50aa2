//! The snapshot feature's SQL functions: `snapshot_table` and `snapshots`.

use backstop_core::snapshot as layout;
use pgrx::prelude::*;
use pgrx::PgRelation;

/// Takes one consistent snapshot of a table and returns its id.
#[pg_extern(volatile, parallel_unsafe)]
fn snapshot_table(table: PgRelation) -> String {
    let relid = table.oid();
    drop(table);
    super::take::take(relid).id.to_string()
}

/// Lists snapshots (of one table, or all), newest first, and checks each: the manifest, and with
/// `verify` the whole data object against its checksums and the manifest.
#[pg_extern(volatile, parallel_unsafe)]
fn snapshots(
    table_name: default!(Option<String>, "NULL"),
    verify: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(snapshot_id, String),
        name!(table_name, String),
        name!(taken_at, Option<TimestampWithTimeZone>),
        name!(rows, Option<i64>),
        name!(bytes, Option<i64>),
        name!(lsn, Option<String>),
        name!(verified, Option<bool>),
        name!(problem, Option<String>),
    ),
> {
    let rows: Vec<_> = super::statuses(table_name.as_deref(), verify)
        .into_iter()
        .map(|status| {
            let m = status.manifest.as_ref();
            (
                status.snapshot.id.to_string(),
                layout::qualified_name(&status.snapshot.schema, &status.snapshot.table),
                m.and_then(|m| crate::timestamps::from_unix_ms(m.taken_at_unix_ms)),
                m.map(|m| m.rows as i64),
                m.map(|m| m.data.stored_bytes as i64),
                m.map(|m| m.lsn.clone()),
                status.state.verified(),
                status.state.problem(),
            )
        })
        .collect();
    TableIterator::new(rows)
}
