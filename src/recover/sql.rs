//! `backstop.table_history(table, since, until, max_rows)`: "when did it happen?" Runs the
//! `table_history` job in its own worker (reading WAL can take a while) and lists what it found,
//! newest first, each row with the recovery target that undoes it.
//!
//! `backstop.recover(table, ...)`: the 3am path. Without a recovery target, from the newest
//! snapshot that verifies (`crate::snapshots::restore`); with one (`target_time`, `target_lsn`,
//! `target_xid`, `target_name`), the table as it was there, through the `table_recover` job
//! ([`super::table`]). Either way it ends with the copy-back plans of the validated copy.

use backstop_core::schedule::job::JobKind;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::raise_with;
use crate::jobs::{self, JobState};

/// The table as the worker resolves it whatever its search_path: `schema.name` for a table that
/// exists (resolved with the caller's search_path), the name as given otherwise.
fn qualified(table: &str) -> Option<String> {
    crate::spi::text(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = pg_catalog.to_regclass($1)",
        &[table.into()],
    )
}

/// A caller reads the history of a table it may SELECT from, and recovers only such a table; a
/// dropped table's (only the repository knows it) are for those who may read every table. `what`
/// says which ("read its history", "recover it").
pub fn authorize(table: &str, what: &str) {
    let readable = crate::spi::one::<bool>(
        "SELECT pg_catalog.has_table_privilege(pg_catalog.to_regclass($1), 'SELECT')",
        &[table.into()],
    )
    .ok()
    .flatten();
    match readable {
        Some(true) => {}
        Some(false) => raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            &format!("you cannot read table {table}, so you cannot {what}"),
            "Ask for SELECT on the table.",
        ),
        None if jobs::caller_reads_everything() => {}
        None => raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            &format!("table {table} does not exist"),
            "A dropped table's history and recovery are for superusers and members of backstop_operator; name a table that exists otherwise.",
        ),
    }
}

/// Runs the `table_history` job with `args` and waits for it: its result, or raises.
fn run_table_history(args: serde_json::Value) -> serde_json::Value {
    let (id, worker) = jobs::start(JobKind::TableHistory, args);
    let status = jobs::wait(id, worker, |s| format!("table_history job {}: {}", s.id, s.phase));
    if status.state != JobState::Succeeded {
        raise_with(
            jobs::failure_code(&status),
            &format!("table_history job {id} {}: {}", status.state.as_str(), status.error.unwrap_or_default()),
            &status.hint.unwrap_or_else(|| "See backstop.job_runs and the server log.".into()),
        );
    }
    status.result.unwrap_or_default()
}

fn to_unix(time: Option<TimestampWithTimeZone>) -> Option<f64> {
    time.map(crate::timestamps::to_unix_seconds)
}

/// The transactions that changed `tbl` between `since` (a day before `until` by default) and
/// `until` (now), newest first: commit time, transaction id, rows inserted, updated and deleted,
/// and whether its file was truncated, rewritten or dropped. `target_lsn` with
/// `target_inclusive = false` is the recovery target that undoes it (stop just before its
/// commit): pass it to `backstop restore --target-lsn` (or recovery_target_lsn).
#[pg_extern(volatile, parallel_unsafe)]
fn table_history(
    tbl: &str,
    since: default!(Option<TimestampWithTimeZone>, "NULL"),
    until: default!(Option<TimestampWithTimeZone>, "NULL"),
    max_rows: default!(i32, 100),
) -> TableIterator<
    'static,
    (
        name!(commit_time, Option<TimestampWithTimeZone>),
        name!(xid, i64),
        name!(inserted, i64),
        name!(updated, i64),
        name!(deleted, i64),
        name!(file_change, Option<String>),
        name!(commit_lsn, String),
        name!(target_lsn, String),
        name!(target_inclusive, bool),
    ),
> {
    authorize(tbl, "read its history");
    if max_rows < 1 {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "max_rows must be at least 1",
            "Ask for the newest N changes with max_rows => N.",
        );
    }
    let table = qualified(tbl).unwrap_or_else(|| tbl.to_string());
    let args = serde_json::json!({
        "table": table,
        "since": to_unix(since),
        "until": to_unix(until),
        "max_rows": max_rows,
    });
    let result = run_table_history(args);
    let int = |v: &serde_json::Value, k: &str| v.get(k).and_then(|v| v.as_i64()).unwrap_or_default();
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|v| v.as_str()).map(str::to_string);
    if let Some(omitted) = result.get("omitted").and_then(|v| v.as_u64()).filter(|n| *n > 0) {
        crate::errors::notice(&format!(
            "table_history: {omitted} older change(s) not listed; raise max_rows or narrow since/until"
        ));
    }
    let rows: Vec<_> = result
        .get("changes")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|change| {
            let time =
                change.get("commit_unix_micros").and_then(|v| v.as_i64()).and_then(crate::timestamps::from_unix_micros);
            (
                time,
                int(change, "xid"),
                int(change, "inserted"),
                int(change, "updated"),
                int(change, "deleted"),
                text(change, "file_change"),
                text(change, "commit_lsn").unwrap_or_default(),
                text(change, "target_lsn").unwrap_or_default(),
                false,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The 3am path: a table brought back next to the original as `<table>_recovered`, validated, and
/// the copy-back SQL to review and run. Without a recovery target: from the newest snapshot that
/// verifies (or `snapshot_id`). With one (`target_time`, `target_lsn`, `target_xid` or
/// `target_name`; `target_inclusive` as PostgreSQL's recovery_target_inclusive): the table as it
/// was at that point, read from a throwaway server that a base backup and the archived WAL
/// recovered there (`table_history` rows give `target_lsn` with `target_inclusive => false`).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn recover(
    table_name: &str,
    snapshot_id: default!(Option<&str>, "NULL"),
    target_table: default!(Option<&str>, "NULL"),
    replace_target: default!(Option<&str>, "NULL"),
    trust_unauthenticated: default!(bool, false),
    target_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    target_lsn: default!(Option<&str>, "NULL"),
    target_xid: default!(Option<i64>, "NULL"),
    target_name: default!(Option<&str>, "NULL"),
    target_inclusive: default!(bool, true),
) -> TableIterator<'static, (name!(strategy, String), name!(description, String), name!(sql, String))> {
    let target =
        Target { time: target_time, lsn: target_lsn, xid: target_xid, name: target_name, inclusive: target_inclusive };
    if !target.given() {
        return crate::snapshots::restore::recover_from_snapshot(
            table_name,
            snapshot_id,
            target_table,
            replace_target,
            trust_unauthenticated,
        );
    }
    if snapshot_id.is_some() || replace_target.is_some() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "a recovery target and a snapshot (snapshot_id, replace_target) are two ways to recover; give one",
            "Recover at a point in time with target_time, target_lsn, target_xid or target_name alone.",
        );
    }
    let (table, default_recovered) = table_and_recovered(table_name);
    if let Some(snapshot) = snapshot_fast_path(&table, &target) {
        return crate::snapshots::restore::recover_from_snapshot(
            &table,
            Some(&snapshot),
            Some(target_table.unwrap_or(&default_recovered)),
            None,
            false,
        );
    }
    let recovered = target_table.map_or(default_recovered, str::to_string);
    recover_at_target(&[(table, recovered.clone())], &target);
    TableIterator::new(crate::snapshots::restore::plans_of(&recovered))
}

/// Several tables as they were at one recovery target, consistent with each other (one throwaway
/// server, one target): each next to its original as `<table>_recovered`, validated, and the
/// copy-back plans of each (the `table_name` column says whose).
#[pg_extern(name = "recover", volatile, parallel_unsafe)]
fn recover_tables(
    table_names: Vec<String>,
    target_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    target_lsn: default!(Option<&str>, "NULL"),
    target_xid: default!(Option<i64>, "NULL"),
    target_name: default!(Option<&str>, "NULL"),
    target_inclusive: default!(bool, true),
) -> TableIterator<
    'static,
    (name!(table_name, String), name!(strategy, String), name!(description, String), name!(sql, String)),
> {
    let target =
        Target { time: target_time, lsn: target_lsn, xid: target_xid, name: target_name, inclusive: target_inclusive };
    if !target.given() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "recovering several tables needs a recovery target",
            "Give target_time, target_lsn, target_xid or target_name; recover one table at a time from snapshots.",
        );
    }
    if table_names.is_empty() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "no table given",
            "Name the tables as array['orders', 'order_items'].",
        );
    }
    let pairs: Vec<(String, String)> = table_names.iter().map(|name| table_and_recovered(name)).collect();
    let mut seen = std::collections::HashSet::new();
    if let Some((duplicate, _)) = pairs.iter().find(|(table, _)| !seen.insert(table.clone())) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            &format!("{duplicate} is named twice"),
            "Name each table once.",
        );
    }
    recover_at_target(&pairs, &target);
    let rows: Vec<_> = pairs
        .iter()
        .flat_map(|(table, recovered)| {
            crate::snapshots::restore::plans_of(recovered)
                .into_iter()
                .map(|(strategy, description, sql)| (table.clone(), strategy, description, sql))
        })
        .collect();
    TableIterator::new(rows)
}

/// A recovery target as `recover()` takes it.
struct Target<'a> {
    time: Option<TimestampWithTimeZone>,
    lsn: Option<&'a str>,
    xid: Option<i64>,
    name: Option<&'a str>,
    inclusive: bool,
}

impl Target<'_> {
    fn given(&self) -> bool {
        self.time.is_some() || self.lsn.is_some() || self.xid.is_some() || self.name.is_some()
    }
}

/// A table name as the caller gave it: checked (the caller must read it), qualified, and the
/// default name of its recovered copy (`schema.<table>_recovered`).
fn table_and_recovered(table_name: &str) -> (String, String) {
    authorize(table_name, "recover it");
    let table = qualified(table_name).unwrap_or_else(|| table_name.to_string());
    let (schema, name) = crate::spi::texts("SELECT unnest(pg_catalog.parse_ident($1))", &[table.as_str().into()])
        .ok()
        .and_then(|parts| match parts.as_slice() {
            [schema, name] => Some((schema.clone(), name.clone())),
            [name] => Some(("public".to_string(), name.clone())),
            _ => None,
        })
        .unwrap_or_else(|| {
            raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_NAME,
                &format!("\"{table_name}\" is not a table name"),
                "Name the table as [schema.]table.",
            )
        });
    (
        backstop_core::quote::qualified_name(&schema, &name),
        backstop_core::quote::qualified_name(&schema, &format!("{name}_recovered")),
    )
}

/// Runs the `table_recover` job for `tables` (each with the name of its recovered copy) and waits
/// for it; NOTICEs say what each recovered table holds. Raises on failure (nothing created).
fn recover_at_target(tables: &[(String, String)], target: &Target<'_>) {
    let args = serde_json::json!({
        "tables": tables.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        "recovered": tables.iter().map(|(_, r)| r).collect::<Vec<_>>(),
        "target_time": to_unix(target.time),
        "target_lsn": target.lsn,
        "target_xid": target.xid,
        "target_name": target.name,
        "inclusive": target.inclusive,
    });
    let (id, worker) = jobs::start(JobKind::TableRecover, args);
    crate::errors::notice(&format!("recover job {id} started in a background worker"));
    let status = jobs::wait(id, worker, |s| format!("recover job {}: {}", s.id, s.phase));
    if status.state != JobState::Succeeded {
        raise_with(
            jobs::failure_code(&status),
            &format!("recover job {id} {}: {}", status.state.as_str(), status.error.unwrap_or_default()),
            &status.hint.unwrap_or_else(|| {
                "Nothing was created in this database; see backstop.job_runs and the server log.".into()
            }),
        );
    }
    let result = status.result.unwrap_or_default();
    let text = |k: &str| result.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    if let Some(lock) = result.get("moved_before_lock").and_then(|v| v.as_str()) {
        crate::errors::notice(&format!(
            "at the target asked for, a transaction that commits later (a DROP, TRUNCATE or ALTER TABLE) held an exclusive lock on the table, which a server paused there cannot read: recovered just before that lock ({lock}) instead, which no change to the table separates from the target"
        ));
    }
    for table in result.get("tables").and_then(|t| t.as_array()).cloned().unwrap_or_default() {
        crate::errors::notice(&format!(
            "{} holds the {} rows {} had at {} (backup {}, validated: rows and checksum equal to the recovered server's); review one of the plans below and run it to bring them back",
            table.get("recovered").and_then(|v| v.as_str()).unwrap_or_default(),
            table.get("rows").and_then(|v| v.as_i64()).unwrap_or_default(),
            table.get("table").and_then(|v| v.as_str()).unwrap_or_default(),
            text("target"),
            text("backup"),
        ));
    }
    // The job's worker created the table after this statement began: take in the catalog
    // changes other backends committed, or the name would not resolve here yet.
    unsafe { pgrx::pg_sys::AcceptInvalidationMessages() };
}

/// Seconds before a snapshot's time from which the WAL is read for changes the snapshot may not
/// hold: a transaction is visible to snapshots only once it left the process array, a moment
/// after its commit record (longer while it waits for a synchronous standby).
const SNAPSHOT_VISIBILITY_MARGIN_S: f64 = 300.0;

/// The fastest path to a table at a time or LSN target: the newest snapshot taken at or before the
/// target, when every transaction the WAL shows changing the table from a little before the
/// snapshot to the target (rows, a new file, an ACCESS EXCLUSIVE lock such as an ALTER TABLE) is
/// one the snapshot holds (core `recover::fast_path`). Needs a snapshot from 0.3.0 on (it records
/// the table's relation file and its MVCC snapshot); an xid or restore-point target always
/// replays. Says which path it takes and why.
fn snapshot_fast_path(table: &str, target: &Target<'_>) -> Option<String> {
    use backstop_core::recover::fast_path::{stands_for_target, Found, MvccSnapshot};
    let now = backstop_core::time::unix_seconds(std::time::SystemTime::now());
    let target_unix = to_unix(target.time);
    let target_lsn = match target.lsn {
        Some(text) => Some(backstop_core::wal::Lsn::parse(text).ok()?),
        None => None,
    };
    // A target in the future is the replay path's to refuse (with the window).
    if (target_unix.is_none() && target_lsn.is_none()) || target_unix.is_some_and(|t| t > now) {
        return None;
    }
    let repository = crate::repo::open_checked().ok()?;
    let (schema, name) = crate::spi::texts("SELECT unnest(pg_catalog.parse_ident($1))", &[table.into()])
        .ok()
        .and_then(|parts| match parts.as_slice() {
            [schema, name] => Some((schema.clone(), name.clone())),
            _ => None,
        })?;
    let listed = crate::snapshots::list_with_manifests(&repository, Some((&schema, &name)));
    let chosen = listed.iter().find_map(|listed| {
        let manifest = listed.manifest.as_ref().ok()?;
        let file = manifest.relation_file?;
        let mvcc = MvccSnapshot::parse(manifest.mvcc_snapshot.as_deref()?).ok()?;
        let taken = manifest.taken_at_unix_ms as f64 / 1000.0;
        let before_time = target_unix.is_none_or(|t| taken <= t);
        let before_lsn = target_lsn.is_none_or(|l| backstop_core::wal::Lsn::parse(&manifest.lsn).is_ok_and(|s| s <= l));
        (before_time && before_lsn).then(|| (listed.snapshot.id.to_string(), file, mvcc, taken))
    });
    let Some((snapshot, file, mvcc, taken)) = chosen else {
        crate::errors::notice(
            "no snapshot of the table from before the target can stand for it (snapshots from 0.3.0 on record what that needs): replaying WAL from a base backup",
        );
        return None;
    };
    // Inclusive: the record at the target LSN is part of the state asked for.
    let until_lsn = target_lsn.map(|l| if target.inclusive { backstop_core::wal::Lsn(l.0 + 1) } else { l });
    crate::errors::notice(&format!(
        "snapshot {snapshot} was taken before the target: reading the WAL from then to the target for changes to {table}"
    ));
    let result = run_table_history(serde_json::json!({
        "table": table,
        "since": taken - SNAPSHOT_VISIBILITY_MARGIN_S,
        "until": target_unix.unwrap_or(now).max(taken),
        "until_lsn": until_lsn.map(|l| l.to_string()),
        "max_rows": 1000,
        "files": [file],
    }));
    let xids = |key: &str, each: &str| -> Vec<u32> {
        result
            .get(key)
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| match each {
                        "" => item.as_u64(),
                        field => item.get(field).and_then(|v| v.as_u64()),
                    })
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let count = |k: &str| result.get(k).and_then(|v| v.as_u64()).unwrap_or_default();
    let found = Found {
        change_xids: xids("changes", "xid"),
        changes_omitted: count("omitted"),
        lock_xids: xids("lock_xids", ""),
        locks_omitted: count("locks_omitted"),
        gap_at: result.get("archived").and_then(|a| a.get("gap_at")).and_then(|g| g.as_str()).map(str::to_string),
    };
    match stands_for_target(&mvcc, &found) {
        Ok(()) => {
            crate::errors::notice(&format!(
                "fast path: every change to {table} the WAL shows up to the target is in snapshot {snapshot}, so the snapshot is the table at the target: restoring it, no WAL replayed"
            ));
            Some(snapshot)
        }
        Err(why) => {
            crate::errors::notice(&format!(
                "snapshot {snapshot} cannot stand for the target: {why}; replaying WAL from a base backup"
            ));
            None
        }
    }
}
