//! Scheduling math for the background worker: cron expressions, time zones, retention and (in
//! `plan`) which runs are due, missed, retried or skipped. Plain Rust, no PostgreSQL: the worker
//! in the extension only reads the clock and the tables and acts on what these functions decide.

pub mod cron;
pub mod job;
pub mod plan;
pub mod retention;
pub mod zone;

pub use cron::Cron;
pub use zone::Zone;
