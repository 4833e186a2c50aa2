//! What doctor() says about logical backups: are PostgreSQL's client programs of the server's
//! version where the jobs look for them (the "native tools" check), and is every scheduled
//! database's newest logical backup younger than `backstop.max_logical_backup_age`. The last
//! `logical_restore` drill is reported with the other drills (`schedule::health`).

use std::time::{Duration, SystemTime};

use backstop_core::doctor::Check;
use backstop_core::logical::{manifest, tools::Tools};
use pgrx::prelude::*;

use crate::{gucs, io, jobs, repo};
use backstop_core::time::age_text;

/// The databases enabled `logical_backup` schedules dump.
pub fn scheduled_databases() -> Vec<String> {
    crate::spi::texts(
        "SELECT DISTINCT coalesce(args->>'database', pg_catalog.current_setting('backstop.database')) \
           FROM backstop.schedules WHERE enabled AND job = 'logical_backup' ORDER BY 1",
        &[],
    )
    .unwrap_or_default()
}

pub fn checks(_: &mut crate::doctor::Context) -> Vec<Check> {
    let scheduled = scheduled_databases();
    vec![tools_check(!scheduled.is_empty()), age_check(&scheduled)]
}

fn tools_check(needed: bool) -> Check {
    let major = pg_sys::PG_VERSION_NUM / 10000;
    match Tools::find(&jobs::server_bin_dir(), major) {
        Ok(tools) => Check::ok("logical_tools", format!("{} and its pg_dumpall, pg_restore and psql", tools.version)),
        Err(e) if needed => Check::fail("logical_tools", e.to_string(), e.hint()),
        Err(e) => Check::warn("logical_tools", format!("{e}: logical backups cannot run"), e.hint()),
    }
}

fn age_check(scheduled: &[String]) -> Check {
    if scheduled.is_empty() {
        return Check::ok("logical_backup", "no logical_backup schedule");
    }
    let repository = match repo::open() {
        Ok(repository) => repository,
        Err(e) => return Check::warn("logical_backup", format!("not checked: {e}"), e.hint()),
    };
    let max = gucs::max_logical_backup_age();
    let now = backstop_core::backups::unix_seconds(SystemTime::now());
    let (mut fine, mut stale) = (Vec::new(), Vec::new());
    for database in scheduled {
        let newest = io::block_on(async {
            tokio::time::timeout(Duration::from_secs(60), manifest::pick(&repository, database, None)).await
        });
        match newest {
            Ok(Ok(m)) if Duration::from_secs_f64((now - m.stop_time).max(0.0)) <= max => {
                fine.push(format!("{database}: {} {} ago", m.id, age_text(now - m.stop_time)))
            }
            Ok(Ok(m)) => {
                stale.push(format!("{database}: newest logical backup {} is {} old", m.id, age_text(now - m.stop_time)))
            }
            Ok(Err(e)) => stale.push(format!("{database}: {e}")),
            Err(_) => stale.push(format!("{database}: the repository did not answer in time")),
        }
    }
    if stale.is_empty() {
        Check::ok("logical_backup", fine.join("; "))
    } else {
        Check::warn(
            "logical_backup",
            format!("{} (backstop.max_logical_backup_age is {})", stale.join("; "), age_text(max.as_secs_f64())),
            "Check the logical_backup schedules' runs in backstop.job_runs.",
        )
    }
}
