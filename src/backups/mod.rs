//! Base backups and point-in-time recovery. Rooms: [`sql`] (`base_backup()`, `backups()`,
//! `recovery_window()`), [`worker`] (the `base_backup` job), [`drill`] (the `pitr` drill),
//! [`health`] (doctor's backup rows).

pub mod drill;
pub mod health;
mod sql;
pub mod worker;
