//! The repository half of the `pitr` drill: the newest valid base backup restored into a scratch
//! directory with the same code as `backstop restore`, the WAL to replay fetched through every
//! checksum into a spool beside it, and recovery settings that read only that spool. The
//! extension then starts a throwaway server on it and runs the smoke checks.
//!
//! The spool keeps the drill independent of the CLI binary and of the network once prepared:
//! `restore_command` is a plain `cp` from a directory this drill wrote and verified.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backups::restore::{self, RestoreOptions, RestoreProgress, RestoreSummary};
use crate::backups::verify;
use crate::error::{Error, Result};
use crate::repository::{CancellationToken, Repository};
use crate::wal::WalFileKind;

#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    #[serde(skip)]
    pub data_dir: PathBuf,
    pub backup: String,
    /// Unix seconds when the backup ended: recovery reaches at least this point.
    pub backup_end: f64,
    pub restored: RestoreSummary,
    /// WAL files fetched for replay (segments and timeline history files).
    pub wal_files: u64,
    pub wal_bytes: u64,
    /// The newest segment fetched: recovery replays up to its end.
    pub replay_to: String,
}

/// Prepares `dir` (which must be empty or absent) for a recovery of the newest valid backup,
/// replaying at most `max_replay` bytes of WAL past its end. Refuses up front, with the reason,
/// when the file system holding `dir` lacks room for the files and the WAL.
pub async fn prepare(
    repository: &Repository,
    dir: &Path,
    max_replay: u64,
    progress: Arc<RestoreProgress>,
    cancel: &CancellationToken,
) -> Result<Prepared> {
    let backups = verify::list_backups(repository).await?;
    let manifest =
        backups.iter().rev().find(|b| b.verified()).and_then(|b| b.manifest.clone()).ok_or_else(|| Error::Job {
            message: "the repository holds no valid base backup to drill".into(),
            hint: "Take a base backup (SELECT * FROM backstop.base_backup()) and run the drill again.".into(),
        })?;
    let segment_size = manifest.wal_segment_size as u64;
    let first = manifest.start_lsn.segment(segment_size as u32);
    let last_allowed = manifest.stop_lsn.segment(segment_size as u32) + (max_replay / segment_size).max(1);
    let archived = verify::archived_wal(repository).await?;
    let mut wal: Vec<verify::ArchivedWal> = archived
        .into_iter()
        .filter(|a| match a.name.kind {
            WalFileKind::History => true,
            WalFileKind::Segment => a
                .name
                .position(segment_size as u32)
                .is_some_and(|(tli, number)| tli >= manifest.timeline && (first..=last_allowed).contains(&number)),
            _ => false,
        })
        .collect();
    wal.sort_by(|a, b| a.name.name.cmp(&b.name.name));
    let replay_to =
        wal.iter().filter(|a| a.name.kind == WalFileKind::Segment).map(|a| a.name.name.clone()).max().ok_or_else(
            || Error::Job {
                message: format!("no WAL from backup {} is in the repository", manifest.id),
                hint:
                    "The backup cannot be recovered without its WAL: check archiving (SELECT * FROM backstop.doctor())."
                        .into(),
            },
        )?;
    let segments = wal.iter().filter(|a| a.name.kind == WalFileKind::Segment).count() as u64;

    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    crate::disk::check_room(dir, manifest.stats.bytes + segments * segment_size)?;

    let data_dir = dir.join("data");
    let tablespace_map: HashMap<u32, PathBuf> =
        manifest.tablespaces.iter().map(|t| (t.oid, dir.join(format!("tablespace_{}", t.oid)))).collect();
    let options = RestoreOptions { target_dir: data_dir.clone(), tablespace_map, delta: false, parallel: 2 };
    let restored = restore::restore(repository, &manifest, &options, progress, cancel).await?;

    let spool = dir.join("wal");
    std::fs::create_dir_all(&spool).map_err(|e| Error::io("create", &spool, e))?;
    let mut wal_bytes = 0;
    for file in &wal {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let plain = repository.get_bytes(&file.name.object_path()).await?;
        wal_bytes += plain.len() as u64;
        let path = spool.join(&file.name.name);
        std::fs::write(&path, plain).map_err(|e| Error::io("write", &path, e))?;
    }
    let spool_text = spool.to_str().filter(|s| !s.contains(['\'', '"', '\\', '\n'])).ok_or_else(|| {
        Error::InvalidInput(format!("the drill directory {} has characters a shell command cannot hold", dir.display()))
    })?;
    let settings = [
        ("restore_command", format!("cp \"{spool_text}/%f\" \"%p\"")),
        ("recovery_target_timeline", "latest".to_string()),
    ];
    restore::prepare_recovery(&data_dir, &manifest, &settings, false)?;
    Ok(Prepared {
        data_dir,
        backup: manifest.id.to_string(),
        backup_end: manifest.stop_time,
        restored,
        wal_files: wal.len() as u64,
        wal_bytes,
        replay_to,
    })
}
