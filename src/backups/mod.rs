//! Base backups and point-in-time recovery. Rooms: [`sql`] (`base_backup()`, `backups()`,
//! `recovery_window()`), [`worker`] (the `base_backup` job, [`summaries`]: PostgreSQL 17's changed blocks), [`drill`] (the `pitr` drill),
//! [`health`] (doctor's backup rows), [`relations`] (each table's relation file, recorded by every backup).

pub mod drill;
pub mod health;
pub mod relations;
mod sql;
mod summaries;
pub mod worker;
