//! `backstop.doctor()` and `backstop.doctor_report()`: is this cluster ready to be backed up and
//! restored? Every check looks at the real thing; one that cannot look says why and fails.
//!
//! The rows come from [`crate::HEALTH`], each feature's `health.rs` in the order DBAs read them
//! (settings, the repository, WAL, backups, habits); doctor itself makes only the server-wide
//! rows and knows no feature.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::time::Duration;

use backstop_core::doctor::{self, Check};
use backstop_core::Error;
use pgrx::prelude::*;

use crate::{gucs, io, repo};

type DoctorRow = (String, String, String, Option<String>);

/// One row per check: check, status (ok / warn / fail), detail, hint.
#[pg_extern(volatile, parallel_unsafe)]
fn doctor() -> TableIterator<
    'static,
    (name!(check, String), name!(status, String), name!(detail, String), name!(hint, Option<String>)),
> {
    let rows: Vec<DoctorRow> = crate::spi::as_extension_owner(run_checks)
        .into_iter()
        .map(|c| (c.check.to_string(), c.status.as_str().to_string(), c.detail, c.hint))
        .collect();
    TableIterator::new(rows)
}

// doctor()'s checks as a view, for monitoring queries: SELECT * FROM backstop.status WHERE status <> 'ok'.
extension_sql!(
    r#"
CREATE VIEW status AS SELECT * FROM doctor();
"#,
    name = "status_view",
    requires = [doctor]
);

/// The verdict (ready / degraded / not_ready), a reason and every check, for automation.
#[pg_extern(volatile, parallel_unsafe)]
fn doctor_report() -> pgrx::JsonB {
    pgrx::JsonB(doctor::report(&crate::spi::as_extension_owner(run_checks)))
}

/// Every row, in the order of [`crate::HEALTH`].
pub fn run_checks() -> Vec<Check> {
    let mut context = Context::default();
    crate::HEALTH.iter().flat_map(|checks| checks(&mut context)).collect()
}

/// What one doctor run computes once and several rows read (the repository's backups, say): each
/// feature keeps its own findings here under their type, so doctor knows none of them.
#[derive(Default)]
pub struct Context {
    memo: HashMap<TypeId, Box<dyn Any>>,
}

impl Context {
    /// The `T` this run computed, computing it the first time it is asked for.
    pub fn memo<T: Any>(&mut self, compute: impl FnOnce() -> T) -> &T {
        self.memo
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(compute()))
            .downcast_ref::<T>()
            .expect("memo entries are keyed by their own type")
    }
}

/// The server-wide rows: `restored_copy` (only on a copy `backstop restore` made),
/// `shared_preload_libraries`, `wal_level`.
pub fn server(_: &mut Context) -> Vec<Check> {
    let mut checks: Vec<Check> = restored_copy_check().into_iter().collect();
    checks.extend([preload_check(), wal_level_check()]);
    checks
}

/// `repository_reachable`, `repository_owner`.
pub fn repository(_: &mut Context) -> Vec<Check> {
    repository_checks()
}

pub fn setting(name: &str) -> Option<String> {
    let name = CString::new(name).expect("setting names have no NUL");
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

fn preload_check() -> Check {
    if crate::loaded_at_startup() {
        Check::ok("shared_preload_libraries", "backstop was loaded at server start")
    } else {
        Check::fail(
            "shared_preload_libraries",
            format!(
                "backstop was loaded on demand, not at server start (shared_preload_libraries = '{}')",
                setting("shared_preload_libraries").unwrap_or_default()
            ),
            "Add backstop to shared_preload_libraries in postgresql.conf and restart the server.",
        )
    }
}

fn wal_level_check() -> Check {
    match setting("wal_level").as_deref() {
        Some(level @ ("replica" | "logical")) => Check::ok("wal_level", format!("wal_level = {level}")),
        Some(level) => Check::fail(
            "wal_level",
            format!("wal_level = {level}: WAL does not carry enough to restore a base backup"),
            "Set wal_level = replica in postgresql.conf and restart the server.",
        ),
        None => Check::fail("wal_level", "could not read wal_level", "Check the server configuration."),
    }
}

/// Only on a copy `backstop restore` made (backstop.restored_from is set): it is not production,
/// and its other rows (no archiving, paused schedules, a read-only repository) follow from that.
fn restored_copy_check() -> Option<Check> {
    let from = gucs::restored_from()?;
    let namespace = if gucs::cluster_name().is_some() {
        "it writes into a namespace of its own (backstop.cluster_name)"
    } else {
        "the repository namespace it was restored from is read-only to it"
    };
    Some(Check::warn(
        "restored_copy",
        format!(
            "this cluster is a restored copy ({from}): archive_mode is off, its schedules are paused and {namespace}"
        ),
        "If it replaces the primary: ALTER SYSTEM RESET backstop.restored_from; ALTER SYSTEM SET archive_mode = on; \
         ALTER SYSTEM SET backstop.scheduler = on; then restart. If it stays a copy and should be backed up: \
         ALTER SYSTEM SET backstop.cluster_name = '<a name of its own>' first.",
    ))
}

pub const REPOSITORY_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Reachability (a real write / read / list / delete round trip) and ownership (cluster.json).
fn repository_checks() -> Vec<Check> {
    let unreachable = |detail: String, hint: &str| {
        vec![
            Check::fail("repository_reachable", detail, hint),
            Check::fail(
                "repository_owner",
                "not checked: the repository is not reachable",
                "Fix repository_reachable first.",
            ),
        ]
    };
    let repository = match repo::open() {
        Ok(repository) => repository,
        Err(e) => return unreachable(e.to_string(), e.hint()),
    };
    let outcome = io::block_on(async {
        tokio::time::timeout(REPOSITORY_CHECK_TIMEOUT, async {
            let elapsed = repository.round_trip_check().await?;
            let owner = repository.cluster_file().await;
            Ok::<_, Error>((elapsed, owner))
        })
        .await
    });
    let (elapsed, owner) = match outcome {
        Err(_) => {
            return unreachable(
                format!("no answer from {} within {}s", repository.describe(), REPOSITORY_CHECK_TIMEOUT.as_secs()),
                "Check the network path and endpoint of the repository.",
            )
        }
        Ok(Err(e)) => return unreachable(e.to_string(), e.hint()),
        Ok(Ok(result)) => result,
    };
    let reachable = Check::ok(
        "repository_reachable",
        format!("write, read back, list and delete on {} took {} ms", repository.describe(), elapsed.as_millis()),
    );
    let me = repo::system_identifier().to_string();
    let owner = match owner {
        Ok(Some(file)) if file.system_identifier == me => Check::ok(
            "repository_owner",
            format!("{} belongs to this cluster (system identifier {me})", repository.describe()),
        ),
        Ok(Some(file)) => Check::fail(
            "repository_owner",
            format!(
                "{} belongs to system identifier {}, this server is {me}: archiving into it would mix two clusters",
                repository.describe(),
                file.system_identifier
            ),
            Error::ForeignCluster { store: String::new(), expected: String::new(), found: String::new() }.hint(),
        ),
        Ok(None) => Check::warn(
            "repository_owner",
            format!("{} is not claimed yet (no cluster.json)", repository.describe()),
            "It is claimed by the first archived WAL segment; run SELECT pg_switch_wal() once archiving is configured.",
        ),
        Err(e) => Check::fail("repository_owner", format!("could not read cluster.json: {e}"), e.hint()),
    };
    vec![reachable, owner]
}
