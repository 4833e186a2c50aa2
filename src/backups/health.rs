//! What doctor() says about base backups: the newest one and its age, whether WAL continues from
//! it to now (`pitr_reaches_now`), whether anything this server wrote has gone missing from the
//! repository (`repository_complete`), the last base backup job, and whether what the backups
//! need is stored encrypted (`encryption`), and whether PostgreSQL 17's WAL summaries serve
//! incrementals (`wal_summaries`). One listing of the repository serves them all (kept
//! in doctor's [`Context`] for the run).

use backstop_core::doctor::Check;
use backstop_core::Error;
use pgrx::prelude::*;

use crate::doctor::{Context, REPOSITORY_CHECK_TIMEOUT};
use crate::{gucs, io, repo};

/// The rows the repository's backups give, and how many packs they reference unencrypted
/// (None when not listed).
#[derive(Clone)]
struct Findings(Vec<Check>, Option<usize>);

fn findings(context: &mut Context) -> Findings {
    context
        .memo(|| {
            let (checks, unencrypted) = base_backup_checks();
            Findings(checks, unencrypted)
        })
        .clone()
}

/// `encryption`.
pub fn encryption(context: &mut Context) -> Vec<Check> {
    vec![encryption_check(findings(context).1)]
}

/// `base_backup`, `pitr_reaches_now`, `repository_complete`, `backup_job`, `wal_summaries`.
pub fn checks(context: &mut Context) -> Vec<Check> {
    let mut checks = findings(context).0;
    checks.push(backup_job_check());
    checks.push(wal_summaries_check());
    checks
}

/// Whether incrementals can read only changed blocks (PostgreSQL 17+ with `summarize_wal`); a
/// suggestion, never a reason for a worse verdict: without summaries they read changed files whole.
fn wal_summaries_check() -> Check {
    let major = pg_sys::PG_VERSION_NUM / 10000;
    if !super::summaries::server_has_summaries() {
        return Check::ok(
            "wal_summaries",
            format!("PostgreSQL {major} has no WAL summaries: incremental backups read every changed file whole"),
        );
    }
    match crate::spi::text("SELECT pg_catalog.current_setting('summarize_wal')", &[]).as_deref() {
        Some("on") => {
            Check::ok("wal_summaries", "summarize_wal is on: incremental backups read only the changed blocks")
        }
        _ => Check::suggest(
            "wal_summaries",
            "summarize_wal is off: incremental backups read every changed file whole",
            "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then incremental backups read only the blocks changed since the previous backup, once the summaries reach back to that backup's start.",
        ),
    }
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
