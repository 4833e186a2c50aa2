//! Schedules: when each job runs. Rooms: [`sql`] (`schedule()`, `alter_schedule()`,
//! `unschedule()`, `run_job()`, `run_now()`: every field checked there, at `schedule()` time, with
//! the reason, so an invalid cron expression, an unknown job, bad args or an unknown time zone
//! never reach the scheduler), [`launcher`] (the scheduler worker), [`health`] (doctor's
//! `scheduler`, `schedules` and drill rows).

pub mod health;
pub mod launcher;
mod sql;
