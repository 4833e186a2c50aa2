//! What doctor() says about table snapshots: the newest snapshot of every table a snapshot
//! schedule names, against `backstop.max_snapshot_age`.

use std::time::Duration;

use backstop_core::doctor::Check;
use backstop_core::time::age_text;

use crate::doctor::Context;
use crate::gucs;

/// `snapshot_age`.
pub fn checks(_: &mut Context) -> Vec<Check> {
    vec![snapshot_age_check()]
}

/// The newest snapshot of every table a snapshot schedule names, against backstop.max_snapshot_age.
fn snapshot_age_check() -> Check {
    let tables = crate::spi::texts(
        "SELECT DISTINCT t FROM backstop.schedules, pg_catalog.jsonb_array_elements_text(coalesce(args->'tables', '[]')) t \
          WHERE enabled AND job = 'snapshot' ORDER BY 1",
        &[],
    )
    .unwrap_or_default();
    if tables.is_empty() {
        return Check::ok("snapshot_age", "no snapshot schedule names a table");
    }
    let max = gucs::max_snapshot_age();
    let mut stale = Vec::new();
    let mut newest = Vec::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    for table in &tables {
        // The same listing backstop.snapshots() makes for the caller; a table that cannot be
        // resolved or listed is reported on its row instead of failing doctor.
        let newest_ms = crate::jobs::sql_step(|| {
            crate::snapshots::statuses(Some(table), false)
                .iter()
                .filter_map(|s| s.manifest.as_ref().map(|m| m.taken_at_unix_ms))
                .max()
        });
        match newest_ms.map(|ms| ms.map(|ms| (now_ms - ms) as f64 / 1000.0)) {
            Ok(Some(age)) if Duration::from_secs_f64(age.max(0.0)) <= max => {
                newest.push(format!("{table} {} ago", age_text(age)))
            }
            Ok(Some(age)) => stale.push(format!("{table}: newest snapshot {} old", age_text(age))),
            Ok(None) => stale.push(format!("{table}: no snapshot")),
            Err(e) => stale.push(format!("{table}: {e}")),
        }
    }
    if stale.is_empty() {
        Check::ok("snapshot_age", newest.join("; "))
    } else {
        Check::warn(
            "snapshot_age",
            format!("{} (backstop.max_snapshot_age is {})", stale.join("; "), age_text(max.as_secs_f64())),
            "Check the snapshot schedules' runs in backstop.job_runs.",
        )
    }
}
