//! The restore spool: WAL objects fetched ahead of PostgreSQL's requests, kept as stored (encoded)
//! bytes so that taking one out decodes and verifies it like any other read (design rule 3).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::file::write_file_atomically;
use crate::wal::WalFileName;

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create spool directory", &dir, e))?;
        Ok(Spool { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(&name.name)
    }

    pub fn contains(&self, name: &WalFileName) -> bool {
        self.path(name).is_file()
    }

    /// Removes and returns a spooled object.
    pub fn take(&self, name: &WalFileName) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(raw) => {
                fs::remove_file(&path).map_err(|e| Error::io("remove spooled", &path, e))?;
                Ok(Some(raw))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read spooled", path, e)),
        }
    }

    pub fn put(&self, name: &WalFileName, raw: &[u8]) -> Result<()> {
        write_file_atomically(&self.path(name), raw)
    }

    /// Drops spooled segments PostgreSQL will not ask for any more: those before the segment
    /// `current`. Requests for history or backup files (a standby polls for new timelines) prune
    /// nothing.
    pub fn prune_before(&self, current: &WalFileName) -> Result<usize> {
        use crate::wal::WalFileKind::{Partial, Segment};
        if current.kind != Segment {
            return Ok(0);
        }
        let mut removed = 0;
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list spool", &self.dir, e))?;
        for entry in entries.flatten() {
            let Some(file) = entry.file_name().to_str().map(str::to_string) else { continue };
            let stale_wal =
                WalFileName::parse(&file).is_ok_and(|n| matches!(n.kind, Segment | Partial) && n.name < current.name);
            let stale_temp = file.starts_with('.') && file.contains(".tmp-");
            if stale_wal || stale_temp {
                let _ = fs::remove_file(entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_objects_are_taken_once_and_pruned_when_passed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool")).unwrap();
        let names: Vec<WalFileName> =
            ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"]
                .iter()
                .map(|n| WalFileName::parse(n).unwrap())
                .collect();
        for name in &names {
            spool.put(name, name.name.as_bytes()).unwrap();
        }
        assert_eq!(spool.take(&names[1]).unwrap().unwrap(), names[1].name.as_bytes());
        assert_eq!(spool.take(&names[1]).unwrap(), None);
        assert_eq!(spool.prune_before(&names[2]).unwrap(), 1);
        assert!(!spool.contains(&names[0]));
        assert!(spool.contains(&names[2]));
        // A standby asking for a newer timeline's history must not empty the spool.
        let history = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(spool.prune_before(&history).unwrap(), 0);
        assert!(spool.contains(&names[2]));
    }
}
