//! Logical backups (pg_dump). Rooms: [`sql`] (`logical_backup()`, `logical_backups()`), [`job`]
//! (the `logical_backup` job), [`drill`] (the `logical_restore` drill), [`health`] (doctor's
//! `logical_tools` and `logical_backup` rows).

pub mod drill;
pub mod health;
pub mod job;
mod sql;
