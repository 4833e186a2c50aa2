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
mod doctor;
mod errors;
mod expire;
mod gucs;
mod io;
mod jobs;
mod logical;
mod owner;
mod repo;
mod schedule;
mod snapshot;
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
pub static JOBS: &[&dyn jobs::Job] = &[
    &backups::worker::BaseBackupJob,
    &snapshot::job::SnapshotJob,
    &expire::job::ExpireJob,
    &snapshot::drill::SnapshotRestoreDrill,
    &wal::drill::WalFetchDrill,
    &backups::drill::PitrDrill,
    &logical::job::LogicalBackupJob,
    &logical::drill::LogicalRestoreDrill,
    &verify::job::VerifyJob,
];

/// The doctor rows each feature contributes (its `health.rs`), after the server-wide ones
/// `doctor::run_checks` makes: a new feature's checks are one line here.
pub static HEALTH: &[fn() -> Vec<backstop_core::doctor::Check>] =
    &[logical::health::checks, schedule::health::checks, verify::health::checks];

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Runs in the postmaster when preloaded: register settings only. No thread, runtime or
    // connection may be created here, or every forked process would inherit a broken copy.
    gucs::init();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        LOADED_AT_STARTUP.store(true, Ordering::Relaxed);
        wal::stats::init();
        schedule::launcher::register();
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
