//! `backstop.doctor()` and `backstop.doctor_report()`: is this cluster ready to be backed up and
//! restored? Every check looks at the real thing; one that cannot look says why and fails.

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

pub fn run_checks() -> Vec<Check> {
    let mut checks: Vec<Check> = restored_copy_check().into_iter().collect();
    checks.extend([
        preload_check(),
        wal_level_check(),
        archive_mode_check(),
        archive_library_check(),
        archive_timeout_check(),
    ]);
    checks.extend(repository_checks());
    checks.push(crate::auth::check());
    let (backup_checks, unencrypted) = base_backup_checks();
    checks.push(encryption_check(unencrypted));
    checks.push(archiver_failures_check());
    checks.push(archive_backlog_check());
    checks.extend(backup_checks);
    checks.push(backup_job_check());
    // Features contribute their rows through one registry (crate::HEALTH), in its order.
    for feature_checks in crate::HEALTH {
        checks.extend(feature_checks());
    }
    checks
}

/// The newest base backup and its age, and whether WAL continues from it to the present; and how
/// many packs the backups reference that are stored unencrypted (None when not listed).
fn base_backup_checks() -> (Vec<Check>, Option<usize>) {
    let not_checked = |detail: String, hint: &str| {
        (
            vec![
                Check::fail("base_backup", detail.clone(), hint),
                Check::fail("pitr_reaches_now", detail.clone(), hint),
                Check::fail("repository_complete", detail, hint),
            ],
            None,
        )
    };
    let repository = match repo::open() {
        Ok(repository) => repository,
        Err(e) => return not_checked(format!("not checked: {e}"), e.hint()),
    };
    let listed = io::block_on(async {
        tokio::time::timeout(REPOSITORY_CHECK_TIMEOUT, async {
            let backups = backstop_core::backups::verify::list_backups(&repository).await?;
            let wal = backstop_core::backups::verify::archived_wal(&repository).await?;
            Ok::<_, Error>((backups, wal))
        })
        .await
    });
    let (backups, wal) = match listed {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return not_checked(format!("could not list the repository: {e}"), e.hint()),
        Err(_) => return not_checked("the repository did not answer in time".into(), "Check repository_reachable."),
    };
    // The WAL position now: where the primary writes, or where a standby has replayed to (the
    // WAL functions that name files refuse to run during recovery).
    let current = crate::spi::two::<i32, String>(
        "SELECT timeline_id, pg_catalog.pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery() \
                THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END, '0/0')::text \
           FROM pg_catalog.pg_control_checkpoint()",
    );
    let segment_size = unsafe { pg_sys::wal_segment_size } as u32;
    let current = match current {
        Ok((Some(timeline), Some(bytes))) => {
            // The segment holding the last byte written (as pg_walfile_name counts: a position
            // on a boundary belongs to the segment before it).
            bytes
                .parse::<u64>()
                .ok()
                .map(|bytes| (timeline as u32, bytes.saturating_sub(1) / u64::from(segment_size.max(1))))
        }
        _ => None,
    };
    let Some(current) = current else {
        return not_checked(
            "could not read the server's WAL position".into(),
            "Check that pg_control_checkpoint() answers; this is a bug in backstop if it does.",
        );
    };
    let mut checks = backstop_core::backups::verify::doctor_checks(
        &backups,
        &wal,
        current,
        segment_size,
        std::time::SystemTime::now(),
        gucs::max_base_backup_age(),
    );
    checks.push(deletion_check(&repository.describe(), &backups, &wal));
    (checks, Some(backstop_core::backups::verify::unencrypted_packs(&backups)))
}

/// What this server wrote (its job history, the archiver's last file) against what the
/// repository still holds.
fn deletion_check(
    repository: &str,
    backups: &[backstop_core::backups::BackupStatus],
    wal: &[backstop_core::backups::verify::ArchivedWal],
) -> Check {
    // Only what was written into this repository (and namespace).
    let written = crate::spi::texts(
        "SELECT result->>'backup_id' FROM backstop.job_runs \
          WHERE kind = 'base_backup' AND state = 'succeeded' AND result->>'repository' = $1",
        &[repository.into()],
    );
    let expired = crate::spi::texts(
        "SELECT r->>'name' FROM backstop.job_runs j, pg_catalog.jsonb_array_elements(j.result->'removals') r \
          WHERE j.kind = 'expire' AND j.state = 'succeeded' AND NOT coalesce((j.result->>'dry_run')::bool, false) \
            AND j.result->>'repository' = $1 AND r->>'what' = 'backup'",
        &[repository.into()],
    );
    let last = crate::wal::stats::last_archived_here();
    match (written, expired) {
        (Ok(written), Ok(expired)) => {
            backstop_core::backups::verify::deletion_check(&written, &expired, backups, last.as_deref(), wal)
        }
        _ => Check::warn(
            "repository_complete",
            "not checked: backstop.job_runs could not be read",
            "Check the extension's installation.",
        ),
    }
}

/// A base backup running now, or how the last one ended.
fn backup_job_check() -> Check {
    use crate::jobs::{self, JobKind, JobState};
    if let Some(running) = jobs::all_statuses()
        .into_iter()
        .find(|s| s.kind == JobKind::BaseBackup && !s.state.is_final() && jobs::worker_alive(s.pid))
    {
        return Check::ok(
            "backup_job",
            format!("base backup job {} is running (pid {}): {}", running.id, running.pid, running.phase),
        );
    }
    let last = crate::spi::three::<i64, String, String>(
        // An aggregate: one row, NULLs when no job ran.
        "SELECT max(job_id), (array_agg(state ORDER BY job_id DESC))[1], \
         (array_agg(coalesce(error, '') ORDER BY job_id DESC))[1] FROM backstop.job_runs WHERE kind = 'base_backup'",
    );
    match last {
        Ok((Some(id), Some(state), error)) if state == JobState::Failed.as_str() => Check::warn(
            "backup_job",
            format!("the last base backup job, {id}, failed: {}", error.unwrap_or_default()),
            "See backstop.job_runs for its error and hint, fix the cause, and run backstop.base_backup() again.",
        ),
        Ok((Some(id), Some(state), _)) => Check::ok("backup_job", format!("the last base backup job, {id}, {state}")),
        Ok(_) => Check::ok("backup_job", "no base backup job has run yet"),
        Err(e) => Check::fail(
            "backup_job",
            format!("could not read backstop.job_runs: {e}"),
            "Check the extension's installation.",
        ),
    }
}

fn setting(name: &str) -> Option<String> {
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

fn archive_mode_check() -> Check {
    match setting("archive_mode").as_deref() {
        Some(mode @ ("on" | "always")) => Check::ok("archive_mode", format!("archive_mode = {mode}")),
        Some(mode) => Check::fail(
            "archive_mode",
            format!("archive_mode = {mode}: no WAL is archived, so point-in-time recovery is impossible"),
            "Set archive_mode = on in postgresql.conf and restart the server.",
        ),
        None => Check::fail("archive_mode", "could not read archive_mode", "Check the server configuration."),
    }
}

fn archive_library_check() -> Check {
    let library = setting("archive_library").unwrap_or_default();
    let command = setting("archive_command").unwrap_or_default();
    if library == "backstop" {
        Check::ok("archive_library", "archive_library = 'backstop'")
    } else if library.is_empty() && command.contains("backstop wal push") {
        Check::ok("archive_library", "archive_command runs backstop wal push")
    } else {
        let current = if library.is_empty() {
            format!("archive_library is not set and archive_command = '{command}'")
        } else {
            format!("archive_library = '{library}'")
        };
        Check::fail(
            "archive_library",
            format!("{current}: WAL is not shipped by backstop"),
            "Set archive_library = 'backstop' (and archive_command = '') in postgresql.conf and reload.",
        )
    }
}

fn archive_timeout_check() -> Check {
    let seconds = unsafe { pg_sys::XLogArchiveTimeout };
    let hint = "Set archive_timeout = '60s' so a quiet server still ships its WAL at least every minute.";
    match seconds {
        0 => Check::warn(
            "archive_timeout",
            "archive_timeout = 0: on a quiet server the last changes may wait indefinitely in an unfinished segment",
            hint,
        ),
        s if s > 3600 => Check::warn(
            "archive_timeout",
            format!("archive_timeout = {s}s: up to {} minutes of changes can be lost with the server", s / 60),
            hint,
        ),
        s => Check::ok("archive_timeout", format!("archive_timeout = {s}s bounds unarchived changes to {s} seconds")),
    }
}

const REPOSITORY_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

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

fn encryption_check(unencrypted: Option<usize>) -> Check {
    match gucs::codec_settings() {
        Ok(codec) if !codec.recipients.is_empty() && unencrypted.is_some_and(|n| n > 0) => Check::warn(
            "encryption",
            format!(
                "objects are encrypted with age to {} recipient(s), but base backups still reference {} pack(s) stored unencrypted (written before encryption was enabled)",
                codec.recipients.len(),
                unencrypted.unwrap_or_default()
            ),
            "The next base backup stores everything it needs encrypted; once the older backups are expired, nothing unencrypted is left.",
        ),
        Ok(codec) if !codec.recipients.is_empty() => Check::ok(
            "encryption",
            format!("objects are encrypted with age to {} recipient(s)", codec.recipients.len()),
        ),
        Ok(_) => Check::warn(
            "encryption",
            "objects are stored unencrypted: anyone who can read the repository can read the data",
            "Set backstop.encryption_recipients to an age public key (age-keygen -y) and keep the identity off this server.",
        ),
        Err(e) => Check::fail("encryption", e.to_string(), e.hint()),
    }
}

fn archiver_failures_check() -> Check {
    let query = "SELECT failed_count, last_failed_wal, last_failed_time::text, \
                 coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) \
                 FROM pg_stat_archiver";
    let row = Spi::connect(|client| {
        let table = client.select(query, Some(1), &[])?.first();
        Ok::<_, pgrx::spi::Error>((
            table.get::<i64>(1)?.unwrap_or(0),
            table.get::<String>(2)?,
            table.get::<String>(3)?,
            table.get::<bool>(4)?.unwrap_or(false),
        ))
    });
    match row {
        Err(e) => Check::fail("archiver_failures", format!("could not read pg_stat_archiver: {e}"), "Check the server log."),
        Ok((0, _, _, _)) => Check::ok("archiver_failures", "no failed archive attempts since statistics were reset"),
        Ok((failed, wal, at, true)) => Check::fail(
            "archiver_failures",
            format!(
                "archiving is failing: {failed} failed attempts, the latest for {} at {}, none succeeded since",
                wal.unwrap_or_default(),
                at.unwrap_or_default()
            ),
            "Read the WARNINGs in the server log; pg_wal keeps growing until archiving succeeds again.",
        ),
        Ok((failed, wal, at, false)) => Check::warn(
            "archiver_failures",
            format!(
                "{failed} failed archive attempts since statistics were reset (latest for {} at {}); archiving has succeeded since",
                wal.unwrap_or_default(),
                at.unwrap_or_default()
            ),
            "Read the WARNINGs in the server log for the cause; SELECT pg_stat_reset_shared('archiver') clears the count.",
        ),
    }
}

/// How far archiving is behind: WAL files waiting in pg_wal, and how long since the last success.
fn archive_backlog_check() -> Check {
    let waiting = crate::wal::stats::ready_files().len();
    let query =
        "SELECT extract(epoch FROM now() - last_archived_time)::bigint, last_archived_wal FROM pg_stat_archiver";
    let last = Spi::connect(|client| {
        let row = client.select(query, Some(1), &[])?.first();
        Ok::<_, pgrx::spi::Error>((row.get::<i64>(1)?, row.get::<String>(2)?))
    });
    let (age, wal) = match last {
        Ok(found) => found,
        Err(e) => {
            return Check::fail(
                "archive_backlog",
                format!("could not read pg_stat_archiver: {e}"),
                "Check the server log.",
            )
        }
    };
    let timeout = unsafe { pg_sys::XLogArchiveTimeout } as i64;
    let stalled_after = (2 * timeout).max(300);
    let hint = "Read the backstop WARNINGs in the server log and SELECT * FROM backstop.archive_status; \
                pg_wal keeps every unarchived segment, so a long stall fills the disk.";
    match (waiting, age) {
        (0, Some(age)) => Check::ok(
            "archive_backlog",
            format!("nothing waiting; last archived {} {age}s ago", wal.unwrap_or_default()),
        ),
        (0, None) => Check::ok("archive_backlog", "nothing waiting to be archived"),
        (n, Some(age)) if age > stalled_after => Check::fail(
            "archive_backlog",
            format!("{n} WAL files wait in pg_wal and nothing was archived for {age}s"),
            hint,
        ),
        (n, None) if n > 1 => Check::fail(
            "archive_backlog",
            format!("{n} WAL files wait in pg_wal and none has been archived since statistics were reset"),
            hint,
        ),
        (n, _) if n > 16 => Check::warn(
            "archive_backlog",
            format!("{n} WAL files wait in pg_wal: archiving is behind the write rate"),
            "Raise backstop.archive_lookahead to upload more segments in parallel, or check the repository's throughput.",
        ),
        (n, _) => Check::ok("archive_backlog", format!("{n} WAL file(s) waiting, archiving keeps up")),
    }
}
