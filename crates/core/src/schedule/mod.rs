//! Scheduling math for the background worker (issue 10): cron expressions now; time zones, overlap
//! policy, retries and missed-run handling next. Plain Rust, no PostgreSQL.

pub mod cron;
pub mod retention;

pub use cron::Cron;
