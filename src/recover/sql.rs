//! `backstop.table_history(table, since, until, max_rows)`: "when did it happen?" Runs the
//! `table_history` job in its own worker (reading WAL can take a while) and lists what it found,
//! newest first, each row with the recovery target that undoes it.

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

/// A caller reads the history of a table it may SELECT from; the history of a dropped table
/// (only the repository knows it) is for those who may read every table.
pub fn authorize(table: &str) {
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
            &format!("you cannot read table {table}, so you cannot read its history"),
            "Ask for SELECT on the table.",
        ),
        None if jobs::caller_reads_everything() => {}
        None => raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            &format!("table {table} does not exist"),
            "The history of a dropped table is for superusers and members of backstop_operator; name a table that exists otherwise.",
        ),
    }
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
    authorize(tbl);
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
    let (id, worker) = jobs::start(JobKind::TableHistory, args);
    let status = jobs::wait(id, worker, |s| format!("table_history job {}: {}", s.id, s.phase));
    if status.state != JobState::Succeeded {
        raise_with(
            jobs::failure_code(&status),
            &format!("table_history job {id} {}: {}", status.state.as_str(), status.error.unwrap_or_default()),
            &status.hint.unwrap_or_else(|| "See backstop.job_runs and the server log.".into()),
        );
    }
    let result = status.result.unwrap_or_default();
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
