//! PostgreSQL 17+'s WAL summaries, asked for the blocks changed since the previous backup started
//! (the decisions are core's `backups::summaries`). Runs in the base backup's worker, between
//! pg_backup_start and the file copy, in short read-only transactions.

use std::time::{Duration, Instant};

use backstop_core::backups::summaries::{self, ChangedBlocks, Summary, BLOCKS_PER_CHUNK};
use backstop_core::backups::{BackupManifest, Lsn};
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// How long the backup waits for the summarizer to reach its start LSN before it reads every
/// changed file whole instead (PostgreSQL's own incremental backup waits the same way).
const SUMMARIZER_WAIT: Duration = Duration::from_secs(60);

/// PostgreSQL 17 added WAL summaries.
pub fn server_has_summaries() -> bool {
    pg_sys::PG_VERSION_NUM >= 170000
}

/// The changed blocks from `previous`'s start to `start` (this backup's, on `timeline`), or why
/// they cannot be had: said in the job's result and the manifest, and the backup goes on reading
/// every changed file whole. `Err(Error)` only for cancellation.
pub fn changed_since(
    previous: &BackupManifest,
    start: Lsn,
    timeline: u32,
    blocks_per_segment: u32,
) -> Result<Result<ChangedBlocks, String>, Error> {
    if !server_has_summaries() {
        return Ok(Err("WAL summaries need PostgreSQL 17".into()));
    }
    if !crate::gucs::base_backup_wal_summaries() {
        return Ok(Err("backstop.base_backup_wal_summaries is off".into()));
    }
    let enabled =
        BackgroundWorker::transaction(|| crate::spi::text("SELECT pg_catalog.current_setting('summarize_wal')", &[]));
    if enabled.as_deref() != Some("on") {
        return Ok(Err("summarize_wal is off (ALTER SYSTEM SET summarize_wal = on; then reload)".into()));
    }
    if previous.timeline != timeline {
        return Ok(Err(format!(
            "the previous backup was taken on timeline {}, this one on {timeline}",
            previous.timeline
        )));
    }
    if blocks_per_segment == 0 || !blocks_per_segment.is_multiple_of(BLOCKS_PER_CHUNK) {
        return Ok(Err(format!("segment_size ({blocks_per_segment} blocks) is not a whole number of chunks")));
    }
    // pg_backup_start's checkpoint ends a summary at its redo point: wait for the summarizer to write it.
    let deadline = Instant::now() + SUMMARIZER_WAIT;
    let mut backoff = crate::jobs::Backoff::new(Duration::from_millis(50));
    loop {
        crate::compat::wake_wal_summarizer();
        let state = BackgroundWorker::transaction(|| {
            crate::spi::two::<i64, String>(
                "SELECT summarized_tli, summarized_lsn::pg_catalog.text FROM pg_catalog.pg_get_wal_summarizer_state()",
            )
        })
        .map_err(super::worker::spi_error)?;
        let reached = match state {
            (Some(tli), Some(lsn)) => tli as u32 > timeline || (tli as u32 == timeline && Lsn::parse(&lsn)? >= start),
            _ => false,
        };
        if reached {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(Err(format!(
                "the WAL summarizer had not reached the backup's start ({start}) after {} s",
                SUMMARIZER_WAIT.as_secs()
            )));
        }
        if !BackgroundWorker::wait_latch(Some(backoff.next())) {
            return Err(Error::Cancelled);
        }
    }
    let available = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let mut out = Vec::new();
            let rows = client.select(
                "SELECT tli, start_lsn::pg_catalog.text, end_lsn::pg_catalog.text FROM pg_catalog.pg_available_wal_summaries()",
                None,
                &[],
            )?;
            for row in rows {
                if let (Some(tli), Some(start), Some(end)) =
                    (row.get::<i64>(1)?, row.get::<String>(2)?, row.get::<String>(3)?)
                {
                    out.push((tli, start, end));
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
    })
    .map_err(super::worker::spi_error)?;
    let mut listed = Vec::with_capacity(available.len());
    for (tli, from, to) in available {
        listed.push(Summary { timeline: tli as u32, start: Lsn::parse(&from)?, end: Lsn::parse(&to)? });
    }
    let chosen = match summaries::covering(&listed, timeline, previous.start_lsn, start) {
        Ok(chosen) => chosen,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut changed = ChangedBlocks::new(blocks_per_segment);
    for summary in &chosen {
        // Blocks grouped by chunk on the server, with a mask of which: one row per changed chunk.
        let rows = BackgroundWorker::transaction(|| {
            Spi::connect(|client| {
                let mut out = Vec::new();
                let rows = client.select(
                    "SELECT reltablespace::pg_catalog.int8, reldatabase::pg_catalog.int8, relfilenode::pg_catalog.int8, \
                            relforknumber::pg_catalog.int4, \
                            CASE WHEN is_limit_block THEN relblocknumber ELSE relblocknumber / $4 * $4 END, is_limit_block, \
                            pg_catalog.bit_or(CASE WHEN is_limit_block THEN 0 \
                                              ELSE (1::pg_catalog.int8) << (relblocknumber % $4)::pg_catalog.int4 END) \
                     FROM pg_catalog.pg_wal_summary_contents($1, $2::pg_catalog.pg_lsn, $3::pg_catalog.pg_lsn) \
                     GROUP BY 1, 2, 3, 4, 5, 6",
                    None,
                    &[
                        i64::from(summary.timeline).into(),
                        summary.start.to_string().into(),
                        summary.end.to_string().into(),
                        i64::from(BLOCKS_PER_CHUNK).into(),
                    ],
                )?;
                for row in rows {
                    let (Some(spc), Some(db), Some(node), Some(fork), Some(block), Some(limit), Some(mask)) = (
                        row.get::<i64>(1)?,
                        row.get::<i64>(2)?,
                        row.get::<i64>(3)?,
                        row.get::<i32>(4)?,
                        row.get::<i64>(5)?,
                        row.get::<bool>(6)?,
                        row.get::<i64>(7)?,
                    ) else {
                        continue;
                    };
                    out.push((spc as u32, db as u32, node as u32, fork as u8, block as u32, limit, mask as u32));
                }
                Ok::<_, pgrx::spi::Error>(out)
            })
        })
        .map_err(super::worker::spi_error)?;
        for (spc, db, node, fork, block, limit, mask) in rows {
            match limit {
                true => changed.add_limit(spc, db, node, fork, block),
                false => changed.add_blocks(spc, db, node, fork, block, mask),
            }
        }
        if BackgroundWorker::sigterm_received() {
            return Err(Error::Cancelled);
        }
    }
    changed.described = format!(
        "WAL summaries from {} to {} on timeline {timeline} ({} summar{}, {} changed block{} in {} chunk{})",
        previous.start_lsn,
        start,
        chosen.len(),
        if chosen.len() == 1 { "y" } else { "ies" },
        changed.blocks(),
        if changed.blocks() == 1 { "" } else { "s" },
        changed.len(),
        if changed.len() == 1 { "" } else { "s" }
    );
    Ok(Ok(changed))
}
