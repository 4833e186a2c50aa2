//! Tests that run inside a real PostgreSQL 15 started by `cargo pgrx test`.

// The test server's repository is file:///tmp/backstop-pgrx-test-repo (see pg_test in lib.rs). Tests
// run concurrently in one server and across runs, so each claims namespaces of its own that include
// the system identifier of this run's server.

mod authentication;
mod backups;
mod doctor;
mod privileges;
mod restore_safety;
mod schedules;
mod settings;
mod snapshots;

use pgrx::prelude::*;

/// The tests share one server, run side by side, and base backup jobs commit their job_runs rows
/// and status files outside any test's transaction: a test that starts base backup jobs and one
/// that looks at running jobs or the last job's outcome take this lock first (held until the test's
/// transaction ends, by when the jobs it waited for have ended), so neither sees the other midway.
pub fn exclusive_with_base_backup_jobs() {
    pgrx::Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(7301, 1)").unwrap();
}

/// Runs `sql` (as `role` when given) and returns "SQLSTATE: message | detail | hint" if it failed,
/// None if it succeeded. The statement runs in a subtransaction, so a failure leaves no trace.
pub fn error_of(role: Option<&str>, sql: &str) -> Option<String> {
    Spi::run(
        r#"CREATE OR REPLACE FUNCTION public.backstop_test_error_of(run_as text, statement text) RETURNS text
           LANGUAGE plpgsql AS $$
           DECLARE message text; detail text; hint text; state text;
           BEGIN
               IF run_as IS NOT NULL THEN EXECUTE format('SET LOCAL ROLE %I', run_as); END IF;
               EXECUTE statement;
               RESET ROLE;
               RETURN NULL;
           EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                       hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
               RETURN state || ': ' || message || ' | ' || coalesce(detail, '') || ' | ' || coalesce(hint, '');
           END $$"#,
    )
    .expect("helper function");
    Spi::get_one_with_args::<String>(
        "SELECT public.backstop_test_error_of($1, $2)",
        &[role.map(str::to_string).into(), sql.into()],
    )
    .expect("helper call")
}

pub fn one_text(sql: &str) -> String {
    Spi::get_one::<String>(sql).expect("query runs").unwrap_or_default()
}
