//! What doctor() says about WAL shipping: the server's archiving settings, the archiver's failures
//! and backlog, and the live RPO (how much WAL is not in the repository yet).

use backstop_core::doctor::Check;
use backstop_core::time::age_text;
use pgrx::prelude::*;

use crate::doctor::{setting, Context};

/// `archive_mode`, `archive_library`, `archive_timeout`.
pub fn settings(_: &mut Context) -> Vec<Check> {
    vec![archive_mode_check(), archive_library_check(), archive_timeout_check()]
}

/// `archiver_failures`, `archive_backlog`.
pub fn archiver(_: &mut Context) -> Vec<Check> {
    vec![archiver_failures_check(), archive_backlog_check()]
}

/// `rpo`.
pub fn rpo(_: &mut Context) -> Vec<Check> {
    vec![rpo_check()]
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

/// Live RPO: WAL written but not yet in the repository, in bytes and seconds.
fn rpo_check() -> Check {
    if crate::in_recovery() {
        return Check::ok("rpo", "this server is a standby: the primary's RPO is what counts");
    }
    let row = crate::spi::three::<f64, f64, String>(
        "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), '0/0')::float8, \
                pg_catalog.date_part('epoch', pg_catalog.now() - a.last_archived_time)::float8, \
                a.last_archived_wal FROM pg_catalog.pg_stat_archiver a",
    );
    let segment_size = unsafe { pg_sys::wal_segment_size } as u64;
    let row = row.map(|(insert, seconds, last)| {
        let archived_end = last
            .as_deref()
            .and_then(|name| backstop_core::wal::WalFileName::parse(name).ok())
            .and_then(|name| name.position(segment_size as u32))
            .map(|(_, number)| (number + 1) * segment_size);
        (insert.zip(archived_end).map(|(insert, end)| insert - end as f64), seconds, last.unwrap_or_default())
    });
    match row {
        Ok((Some(bytes), seconds, last)) => {
            let bytes = bytes.max(0.0) as u64;
            let detail = format!(
                "{bytes} bytes of WAL not yet archived; the newest archived segment, {last}, was archived {} ago",
                seconds.map(age_text).unwrap_or_else(|| "?".into())
            );
            if bytes > 0 && seconds.is_some_and(|s| s > 3600.0) {
                Check::warn("rpo", detail, "Writes since then would be lost with the server: set archive_timeout (e.g. 60s) and check archiving.")
            } else {
                Check::ok("rpo", detail)
            }
        }
        _ => Check::warn(
            "rpo",
            "nothing has been archived yet: every write since the cluster started would be lost",
            "Check archive_mode and archive_library, and SELECT pg_switch_wal() to archive the current segment.",
        ),
    }
}
