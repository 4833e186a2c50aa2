//! The archive module: `archive_library = 'backstop'`.
//!
//! PostgreSQL's archiver calls `archive_file` once per WAL file, serially. We return true only once
//! the object is durably stored and verified (design rule 1): on a file system after fsync, rename
//! and directory fsync; on S3 after the server accepted it against its Content-MD5. Any failure is a
//! WARNING and `false`, never an ERROR: in PG 15/16 an ERROR here is FATAL for the archiver, which
//! would restart in a loop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::path::Path;

use backstop_core::repository::PutResult;
use backstop_core::{wal, Error, Repository};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::{errors, gucs, io, repo};

/// The repository the archiver writes to, rebuilt when the settings change (SIGHUP). Opening it
/// also checks cluster.json, so a namespace owned by another cluster is refused before any write.
struct ArchiveTarget {
    settings: String,
    repository: Repository,
}

thread_local! {
    static TARGET: RefCell<Option<ArchiveTarget>> = const { RefCell::new(None) };
}

fn archive_target() -> Result<Repository, Error> {
    let settings = gucs::fingerprint();
    TARGET.with(|cell| {
        let mut target = cell.borrow_mut();
        if target.as_ref().is_none_or(|t| t.settings != settings) {
            *target = None;
            let repository = repo::open()?;
            io::block_on(repository.ensure_cluster(&repo::cluster_identity()))?;
            *target = Some(ArchiveTarget { settings, repository });
        }
        Ok(target.as_ref().expect("just set").repository.clone())
    })
}

/// An upload started ahead of the archiver's request, with the settings it was started under.
struct InFlight {
    settings: String,
    upload: tokio::task::JoinHandle<Result<PutResult, Error>>,
}

thread_local! {
    static LOOKAHEAD: RefCell<HashMap<String, InFlight>> = RefCell::new(HashMap::new());
}

async fn upload_wal_file(
    repository: Repository,
    file: String,
    path: String,
    system_identifier: u64,
) -> Result<PutResult, Error> {
    let contents = tokio::fs::read(&path).await.map_err(|e| Error::io("read", &path, e))?;
    wal::archive_file(&repository, &file, contents, system_identifier).await
}

/// Starts uploading the next `.ready` files (up to backstop.archive_lookahead at once) while the
/// archiver is still busy with `current`. Nothing is acknowledged here: each result waits for the
/// archiver to ask for its file.
fn start_lookahead(current: &str, repository: &Repository, settings: &str) {
    let limit = gucs::archive_lookahead();
    let upcoming = if limit == 0 { Vec::new() } else { wal::archive_order(crate::wal::stats::ready_files()) };
    LOOKAHEAD.with(|cell| {
        let mut in_flight = cell.borrow_mut();
        // Files no longer .ready were archived some other way; their uploads are of no use.
        in_flight.retain(|name, _| name == current || upcoming.contains(name));
        for name in upcoming.iter().filter(|name| name.as_str() != current) {
            if in_flight.len() >= limit {
                break;
            }
            if in_flight.contains_key(name) {
                continue;
            }
            let upload = io::runtime().spawn(upload_wal_file(
                repository.clone(),
                name.clone(),
                format!("pg_wal/{name}"),
                repo::system_identifier(),
            ));
            in_flight.insert(name.clone(), InFlight { settings: settings.to_string(), upload });
        }
        crate::wal::stats::record_in_flight(in_flight.len());
    });
}

/// Archives one WAL file. `path` is relative to the data directory, the archiver's working
/// directory. Returns the result and whether it came from a look-ahead upload.
pub fn archive_wal_file(file: &str, path: &Path) -> Result<(PutResult, bool), Error> {
    let settings = gucs::fingerprint();
    let repository = archive_target()?;
    start_lookahead(file, &repository, &settings);
    if let Some(started) = LOOKAHEAD.with(|cell| cell.borrow_mut().remove(file)) {
        // Under other settings (a reload since) it went to the wrong place: upload again.
        if started.settings == settings {
            if let Ok(Ok(result)) = io::block_on(started.upload) {
                return Ok((result, true));
            }
            // A failed look-ahead is retried now, so the error reported is a fresh one.
        }
    }
    let path = path.to_string_lossy().into_owned();
    let result = io::block_on(upload_wal_file(repository, file.to_string(), path, repo::system_identifier()))?;
    Ok((result, false))
}

unsafe fn archive_callback(file: *const c_char, path: *const c_char) -> bool {
    let file = CStr::from_ptr(file).to_string_lossy().into_owned();
    let path = CStr::from_ptr(path).to_string_lossy().into_owned();
    let attempt = || match archive_wal_file(&file, Path::new(&path)) {
        Ok((PutResult::Stored { trailer }, from_lookahead)) => {
            debug1!("backstop archived {file} ({} bytes, {} stored)", trailer.plain_len, trailer.object_len());
            crate::wal::stats::record_archived(&file, trailer.plain_len, trailer.object_len(), false, from_lookahead);
            true
        }
        Ok((PutResult::AlreadyIdentical { .. }, from_lookahead)) => {
            log!("backstop: {file} was already archived with identical contents; acknowledging it");
            crate::wal::stats::record_archived(&file, 0, 0, true, from_lookahead);
            true
        }
        Err(error) => {
            errors::warn(&format!("backstop could not archive {file}"), &error);
            crate::wal::stats::record_failure(&file, &error.to_string());
            false
        }
    };
    PgTryBuilder::new(attempt)
        .catch_others(|caught| {
            let message = match &caught {
                CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report.message().to_string(),
                CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            };
            warning!("backstop could not archive {file}: {message}");
            crate::wal::stats::record_failure(&file, &message);
            false
        })
        .execute()
}

unsafe fn check_configured() -> bool {
    gucs::repository().is_some()
}

#[cfg(feature = "pg15")]
mod callbacks {
    use super::*;

    #[pg_guard]
    #[no_mangle]
    pub unsafe extern "C-unwind" fn _PG_archive_module_init(callbacks: *mut pg_sys::ArchiveModuleCallbacks) {
        (*callbacks).check_configured_cb = Some(check_configured_cb);
        (*callbacks).archive_file_cb = Some(archive_file_cb);
        (*callbacks).shutdown_cb = None;
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn check_configured_cb() -> bool {
        check_configured()
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn archive_file_cb(file: *const c_char, path: *const c_char) -> bool {
        archive_callback(file, path)
    }
}

/// PostgreSQL 16 changed the module API: the init function returns the callbacks and each callback
/// receives a state pointer (`archive/archive_module.h`, the same in 16, 17 and 18). pgrx's
/// bindings leave that header out, so its two structs are declared here as the header has them.
#[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
mod callbacks {
    use super::*;

    #[repr(C)]
    pub struct ArchiveModuleState {
        pub private_data: *mut std::ffi::c_void,
    }

    #[repr(C)]
    pub struct ArchiveModuleCallbacks {
        pub startup_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
        pub check_configured_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState) -> bool>,
        pub archive_file_cb:
            Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState, *const c_char, *const c_char) -> bool>,
        pub shutdown_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
    }

    static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
        startup_cb: None,
        check_configured_cb: Some(check_configured_cb),
        archive_file_cb: Some(archive_file_cb),
        shutdown_cb: None,
    };

    /// PostgreSQL 17 and later could take an ERROR from the callback; backstop keeps the
    /// WARNING-and-false contract on every version, so the archiver's retry behaves the same.
    #[pg_guard]
    #[no_mangle]
    pub unsafe extern "C-unwind" fn _PG_archive_module_init() -> *const ArchiveModuleCallbacks {
        &CALLBACKS
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn check_configured_cb(_state: *mut ArchiveModuleState) -> bool {
        check_configured()
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn archive_file_cb(
        _state: *mut ArchiveModuleState,
        file: *const c_char,
        path: *const c_char,
    ) -> bool {
        archive_callback(file, path)
    }
}
