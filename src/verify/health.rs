//! doctor's `repository_verified` row: degraded when the last `verify` run found damage, when the
//! last clean one is older than [`MAX_AGE`], or when none ever ran.

use backstop_core::doctor::Check;
use backstop_core::time::age_text;

/// A weekly verify, and a day of slack.
const MAX_AGE: f64 = 8.0 * 86_400.0;

pub fn checks(_: &mut crate::doctor::Context) -> Vec<Check> {
    vec![verified_check()]
}

fn verified_check() -> Check {
    let hint_schedule =
        "Schedule it: SELECT * FROM backstop.schedule('verify-weekly', '0 4 * * 0', 'verify', '{\"sample\": 0.05}').";
    let last = crate::spi::three::<String, f64, String>(
        "SELECT state, extract(epoch FROM pg_catalog.now() - finished_at)::float8, coalesce(error, '') \
           FROM backstop.job_runs WHERE kind = 'verify' AND state IN ('succeeded', 'failed') \
          ORDER BY job_id DESC LIMIT 1",
    );
    match last {
        Ok((Some(state), Some(age), error)) if state == "failed" => Check::warn(
            "repository_verified",
            format!("the last verify, {} ago, failed: {}", age_text(age), error.unwrap_or_default()),
            "See its row in backstop.job_runs; if it found damage, take a new full base backup (damaged packs are never reused) and find out what damaged the repository.",
        ),
        Ok((Some(_), Some(age), _)) if age > MAX_AGE => Check::warn(
            "repository_verified",
            format!("the last clean verify was {} ago", age_text(age)),
            hint_schedule,
        ),
        Ok((Some(_), Some(age), _)) => {
            Check::ok("repository_verified", format!("the last verify, {} ago, found nothing damaged", age_text(age)))
        }
        Ok(_) => Check::warn(
            "repository_verified",
            "verify has never run: damage to stored backups is found only when something reads them",
            hint_schedule,
        ),
        Err(e) => Check::warn("repository_verified", format!("could not read the job history: {e}"), "Check the extension's installation."),
    }
}
