//! backstop: PostgreSQL backups you can prove will restore.
//!
//! This crate is PostgreSQL glue only: settings, SQL functions and (later) the archive module and
//! background worker. Storage, codecs and repository layout live in `backstop-core`.

// Set-returning SQL functions spell their result columns as `name!(...)` tuples in the signature:
// that is the SQL interface, and pgrx cannot read it through a type alias.
#![allow(clippy::type_complexity)]

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;

mod auth;
mod backups;
mod compat;
mod doctor;
mod errors;
mod expire;
mod gucs;
mod io;
mod jobs;
mod logical;
mod owner;
mod recover;
mod repo;
mod schedules;
mod snapshots;
mod spi;
mod throwaway;
mod timestamps;
mod verify;
mod wal;

#[cfg(any(test, feature = "pg_test"))]
mod pgrx_tests;

::pgrx::pg_module_magic!(name, version);

/// Set when `_PG_init` ran during `shared_preload_libraries` processing in the postmaster; every
/// process forked from it inherits the flag.
static LOADED_AT_STARTUP: AtomicBool = AtomicBool::new(false);

pub fn loaded_at_startup() -> bool {
    LOADED_AT_STARTUP.load(Ordering::Relaxed)
}

/// Is this server a standby (or still recovering)? For what differs by role (the RPO is the
/// primary's); where runs are recorded is [`jobs::RunLog::here`]'s to say.
pub fn in_recovery() -> bool {
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Every job kind the worker runtime runs, each defined in its feature: adding a kind is its
/// file plus one line here (a test checks that each `JobKind` is listed exactly once).
pub static JOBS: &[&dyn jobs::Registered] = &[
    &backups::worker::BaseBackupJob,
    &snapshots::job::SnapshotJob,
    &expire::job::ExpireJob,
    &snapshots::drill::SnapshotRestoreDrill,
    &wal::drill::WalFetchDrill,
    &backups::drill::PitrDrill,
    &logical::job::LogicalBackupJob,
    &logical::drill::LogicalRestoreDrill,
    &verify::job::VerifyJob,
    &recover::job::TableHistoryJob,
    &recover::table::TableRecoverJob,
];

/// Every doctor row, in the order doctor() shows them: server-wide rows first, then each
/// feature's `health.rs`. A new check is a function in its feature and one line here.
pub static HEALTH: &[fn(&mut doctor::Context) -> Vec<backstop_core::doctor::Check>] = &[
    doctor::server,
    wal::health::settings,
    doctor::repository,
    auth::checks,
    backups::health::encryption,
    wal::health::archiver,
    backups::health::checks,
    logical::health::checks,
    schedules::health::checks,
    snapshots::health::checks,
    wal::health::rpo,
    verify::health::checks,
];

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Runs in the postmaster when preloaded: register settings only. No thread, runtime or
    // connection may be created here, or every forked process would inherit a broken copy.
    gucs::init();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        LOADED_AT_STARTUP.store(true, Ordering::Relaxed);
        wal::stats::init();
        schedules::launcher::register();
    }
}

extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'backstop'",
            "backstop.repository = 'file:///tmp/backstop-pgrx-test-repo'",
            "wal_level = replica",
            "archive_mode = on",
            "archive_command = '/bin/true'",
            "backstop.database = 'pgrx_tests'",
        ]
    }
}
