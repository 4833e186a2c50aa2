//! WAL shipping: the archive module (`archive.rs`), its statistics in shared memory (`stats.rs`,
//! `backstop.archive_status`), and the `wal_fetch` drill (`drill.rs`).

pub mod archive;
pub mod drill;
pub mod health;
pub mod stats;
