//! Schedules in SQL: what schedule() accepts and refuses, time zones, alter_schedule() and
//! unschedule(), and who may touch a schedule. The scheduler firing runs is shown end to end by
//! the schedule_week scenario (its clock runs fast; these tests run inside one transaction, which
//! the scheduler cannot see).

#[pgrx::pg_schema]
mod tests {
    use crate::pgrx_tests::error_of;
    use pgrx::prelude::*;

    fn refused(sql: &str) -> String {
        error_of(None, sql).unwrap_or_else(|| panic!("{sql} was accepted"))
    }

    #[pg_test]
    fn bad_schedules_are_refused_with_the_reason() {
        for (sql, expected) in [
            ("SELECT backstop.schedule('a', '61 2 * * *', 'base_backup')", "minute 61 is outside 0-59"),
            ("SELECT backstop.schedule('a', '0 2 * *', 'base_backup')", "it has 4 fields, not 5"),
            ("SELECT backstop.schedule('a', '0 2 * * *', 'vacuum')", "\"vacuum\" is not a backstop job"),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'expire', '{\"backups\": {\"dayly\": 14}}')",
                "unknown field `dayly`",
            ),
            ("SELECT backstop.schedule('a', '0 2 * * *', 'expire')", "needs a retention policy"),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'base_backup', time_zone => 'Mars/Olympus')",
                "\"Mars/Olympus\" is not a known time zone",
            ),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'snapshot', '{\"tables\": [\"public.nope\"]}')",
                "table public.nope does not exist",
            ),
            ("SELECT backstop.schedule('a', '0 2 * * *', 'base_backup', overlap => 'wait')", "overlap \"wait\""),
            ("SELECT backstop.schedule('a', '0 2 * * *', 'base_backup', max_retries => 11)", "max_retries 11"),
            ("SELECT backstop.schedule('a b', '0 2 * * *', 'base_backup')", "is not a schedule name"),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'pitr', '{\"tables\": [\"public.nope\"]}')",
                "table public.nope does not exist",
            ),
            ("SELECT backstop.schedule('a', '0 2 * * *', 'pitr', '{\"max_replay\": \"lots\"}')", "not a size"),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'logical_restore', '{\"backup_id\": \"yesterday\"}')",
                "\"yesterday\" is not a logical backup id",
            ),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'logical_backup', '{\"database\": \"\"}')",
                "\"database\" must name a database",
            ),
            ("SELECT backstop.schedule('a', '0 2 * * *', 'logical_backup', '{\"db\": \"app\"}')", "unknown field `db`"),
            (
                "SELECT backstop.schedule('a', '0 2 * * *', 'logical_backup', '{\"database\": \"nope\"}')",
                "3D000: database \"nope\" does not exist",
            ),
        ] {
            let error = refused(sql);
            assert!(error.contains(expected), "{sql}: {error}");
            // A parameter error, or PostgreSQL's own code for a database that does not exist.
            assert!(
                error.starts_with("22023") || error.starts_with("42") || error.starts_with("3D000"),
                "a parameter error: {error}"
            );
        }
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.schedules").unwrap(), Some(0));
    }

    #[pg_test]
    fn a_schedule_in_a_time_zone_runs_at_local_time() {
        Spi::run("SELECT backstop.schedule('nightly', '30 2 * * *', 'base_backup', time_zone => 'Europe/Berlin')")
            .unwrap();
        let local = Spi::get_one::<String>(
            "SELECT to_char(next_run_at AT TIME ZONE 'Europe/Berlin', 'HH24:MI') FROM backstop.schedules WHERE name = 'nightly'",
        )
        .unwrap();
        // 02:30 exists on every day but the spring-forward one, when it runs at 03:30.
        assert!(matches!(local.as_deref(), Some("02:30" | "03:30")), "{local:?}");
        let (job, overlap, retries) = Spi::get_three::<String, String, i32>(
            "SELECT job, overlap, max_retries FROM backstop.schedules WHERE name = 'nightly'",
        )
        .unwrap();
        assert_eq!((job.as_deref(), overlap.as_deref(), retries), (Some("base_backup"), Some("skip"), Some(0)));
        let duplicate = refused("SELECT backstop.schedule('nightly', '0 3 * * *', 'base_backup')");
        assert!(duplicate.starts_with("42710: schedule \"nightly\" already exists"), "{duplicate}");
    }

    #[pg_test]
    fn alter_schedule_changes_only_what_it_is_given_and_checks_it() {
        Spi::run("SELECT backstop.schedule('weekly', '0 3 * * sun', 'base_backup', max_retries => 2)").unwrap();
        Spi::run("SELECT backstop.alter_schedule('weekly', cron => '0 4 * * sat', overlap => 'queue')").unwrap();
        let (cron, overlap, retries) =
            Spi::get_three::<String, String, i32>("SELECT cron, overlap, max_retries FROM backstop.schedules").unwrap();
        assert_eq!((cron.as_deref(), overlap.as_deref(), retries), (Some("0 4 * * sat"), Some("queue"), Some(2)));
        let next_is_saturday = Spi::get_one::<bool>(
            "SELECT extract(dow FROM next_run_at AT TIME ZONE 'UTC') = 6 AND to_char(next_run_at AT TIME ZONE 'UTC', 'HH24:MI') = '04:00' FROM backstop.schedules",
        )
        .unwrap();
        assert_eq!(next_is_saturday, Some(true));
        let bad = refused("SELECT backstop.alter_schedule('weekly', job => 'expire')");
        assert!(bad.contains("needs a retention policy"), "the new job is checked with the kept args: {bad}");
        let missing = refused("SELECT backstop.alter_schedule('nope', enabled => false)");
        assert!(missing.starts_with("42704: schedule \"nope\" does not exist"), "{missing}");
        assert_eq!(Spi::get_one::<bool>("SELECT backstop.unschedule('weekly')").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.schedules").unwrap(), Some(0));
    }

    #[pg_test]
    fn only_the_owner_or_a_superuser_changes_a_schedule() {
        Spi::run("CREATE ROLE sched_other LOGIN; GRANT backstop_admin TO sched_other").unwrap();
        Spi::run("SELECT backstop.schedule('mine', '0 3 * * *', 'base_backup')").unwrap();
        let error = error_of(Some("sched_other"), "SELECT backstop.unschedule('mine')").expect("refused");
        assert!(error.starts_with("42501: schedule \"mine\" belongs to"), "{error}");
        let error = error_of(Some("sched_other"), "SELECT backstop.run_now('mine')").expect("refused");
        assert!(error.starts_with("42501"), "{error}");
        // And nobody outside backstop_admin calls schedule() at all.
        Spi::run("CREATE ROLE sched_plain LOGIN").unwrap();
        let error = error_of(Some("sched_plain"), "SELECT backstop.schedule('x', '0 3 * * *', 'base_backup')")
            .expect("refused");
        assert!(error.starts_with("42501"), "{error}");
        // The tables are written only through the functions.
        let error = error_of(Some("sched_other"), "DELETE FROM backstop.schedules").expect("refused");
        assert!(error.starts_with("42501"), "{error}");
    }

    #[pg_test]
    fn the_status_views_answer_with_no_schedules() {
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.schedule_status").unwrap(), Some(0));
        let status =
            Spi::get_one::<String>("SELECT status FROM backstop.status WHERE \"check\" = 'schedules'").unwrap();
        assert_eq!(status.as_deref(), Some("warn"), "no schedules is worth a warning");
        let drill = Spi::get_one::<String>("SELECT detail FROM backstop.status WHERE \"check\" = 'drill_wal_fetch'")
            .unwrap()
            .unwrap_or_default();
        assert!(drill.contains("never run"), "{drill}");
    }

    /// A crash in the middle of a scheduled base backup: when the server is back, the run is
    /// recorded as failed and, since its schedule allows retries, its next attempt is queued
    /// once, after the backoff; a run out of retries, a run asked for from SQL and a run_now() of
    /// the schedule (the caller's to repeat) are not retried.
    #[pg_test]
    fn a_run_interrupted_by_a_crash_is_failed_and_retried_once() {
        Spi::run(
            "SELECT backstop.schedule('crashy', '0 3 * * *', 'base_backup', max_retries => 2, retry_backoff => '10 minutes')",
        )
        .unwrap();
        // Runs left 'running' by workers that no longer exist (pid NULL: never started): a scheduled
        // one, one out of retries, one asked for from SQL, and a run_now() of the schedule.
        Spi::run(
            "INSERT INTO backstop.job_runs (job_id, schedule, kind, state, attempt, scheduled_for, requested_by) VALUES \
               (nextval('backstop.jobs_id_seq'), 'crashy', 'base_backup', 'running', 1, '2026-03-01 03:00Z', current_user), \
               (nextval('backstop.jobs_id_seq'), 'crashy', 'base_backup', 'running', 3, '2026-02-01 03:00Z', current_user), \
               (nextval('backstop.jobs_id_seq'), NULL, 'base_backup', 'running', 1, NULL, current_user), \
               (nextval('backstop.jobs_id_seq'), 'crashy', 'base_backup', 'running', 1, NULL, current_user)",
        )
        .unwrap();
        let crashed_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_772_340_000);
        let queued = crate::jobs::runlog::settle_interrupted_runs(crashed_at).unwrap();
        assert_eq!(queued.len(), 1, "only the scheduled run with retries left is retried: {queued:?}");
        let still_running = Spi::get_one::<i64>(
            "SELECT count(*) FROM backstop.job_runs WHERE state = 'running' AND pid IS NULL AND requested_by = current_user",
        )
        .unwrap();
        assert_eq!(still_running, Some(0), "every run without a worker is settled");
        let (attempt, scheduled_for, delay) = Spi::get_three_with_args::<i32, String, f64>(
            "SELECT attempt, to_char(scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), \
                    (extract(epoch FROM not_before) - 1772340000)::float8 \
               FROM backstop.job_runs WHERE job_id = $1 AND state = 'queued' AND schedule = 'crashy'",
            &[queued[0].into()],
        )
        .unwrap();
        assert_eq!(attempt, Some(2));
        assert_eq!(scheduled_for.as_deref(), Some("2026-03-01 03:00"), "the retry stands for the same occurrence");
        assert_eq!(delay, Some(600.0), "the first retry waits the schedule's backoff");
        // The scheduler reaping the same run, or a second clean-up, queues nothing more.
        let failed = Spi::get_one::<i64>(
            "SELECT job_id FROM backstop.job_runs WHERE schedule = 'crashy' AND attempt = 1 AND state = 'failed'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(crate::jobs::runlog::queue_retry(failed, crashed_at).unwrap(), None);
        assert_eq!(crate::jobs::runlog::settle_interrupted_runs(crashed_at).unwrap(), Vec::<i64>::new());
        let queued_total = Spi::get_one::<i64>(
            "SELECT count(*) FROM backstop.job_runs WHERE state = 'queued' AND schedule = 'crashy'",
        )
        .unwrap();
        assert_eq!(queued_total, Some(1));
    }

    /// Status files (progress, and on a standby the only history) do not pile up: those of runs
    /// that ended, or whose worker is gone, are removed once older than the age given; a fresh
    /// one and files that are not run history stay.
    #[pg_test]
    fn status_files_of_runs_that_ended_long_ago_are_pruned() {
        use crate::jobs::{self, JobRequest, JobState, JobStatus};
        use std::time::{Duration, SystemTime};
        let dir = jobs::jobs_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let status = |id: i64, state: JobState| {
            let request = JobRequest {
                id,
                kind: backstop_core::schedule::job::JobKind::BaseBackup,
                requested_by: "tester".into(),
                args: serde_json::json!({}),
                schedule: None,
                attempt: 1,
                scheduled_for: None,
            };
            let mut status = JobStatus::new(&request);
            status.state = state;
            jobs::write_status(&status);
            jobs::status_path(id)
        };
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
        let age = |path: &std::path::Path| {
            std::fs::File::options().write(true).open(path).unwrap().set_modified(two_days_ago).unwrap();
        };
        let old_done = status(-9_000_000_001, JobState::Succeeded);
        age(&old_done);
        let fresh_done = status(-9_000_000_002, JobState::Failed);
        // 'running', but its pid is this test's backend, not a job worker: an orphan.
        let old_orphan = status(-9_000_000_003, JobState::Running);
        age(&old_orphan);
        let old_temp = dir.join("-9000000004.tmp");
        std::fs::write(&old_temp, b"{").unwrap();
        age(&old_temp);
        let unrelated = dir.join("prune-test-keep-me");
        std::fs::write(&unrelated, b"not history").unwrap();
        age(&unrelated);

        let removed = jobs::prune_statuses(Duration::from_secs(86_400));

        let exists = |p: &std::path::Path| p.exists();
        assert!(!exists(&old_done), "a run that ended two days ago is pruned");
        assert!(!exists(&old_orphan), "a run whose worker is gone is pruned");
        assert!(!exists(&old_temp), "a crash's temporary file is pruned");
        assert!(exists(&fresh_done), "a run that ended just now stays");
        assert!(exists(&unrelated), "files that are not run history stay");
        assert!(removed >= 3, "{removed}");
        std::fs::remove_file(&fresh_done).unwrap();
        std::fs::remove_file(&unrelated).unwrap();
    }

    #[pg_test]
    fn every_job_kind_is_registered_exactly_once() {
        use backstop_core::schedule::job::ALL_KINDS;
        for &kind in ALL_KINDS {
            let entries = crate::JOBS.iter().filter(|job| job.kind() == kind).count();
            assert_eq!(entries, 1, "{} is listed {entries} times in JOBS", kind.as_str());
        }
        assert_eq!(crate::JOBS.len(), ALL_KINDS.len());
        // Who may run what, and where: each job says it of itself; this pins the privilege model.
        let kinds = |f: fn(&dyn crate::jobs::Registered) -> bool| -> Vec<&str> {
            crate::JOBS.iter().copied().filter(|j| f(*j)).map(|j| j.kind().as_str()).collect()
        };
        assert_eq!(
            kinds(|j| j.needs_operator()),
            ["base_backup", "expire", "pitr", "logical_backup", "logical_restore", "verify"]
        );
        assert_eq!(kinds(|j| j.read_only()), ["wal_fetch", "pitr", "table_history"]);
        assert_eq!(kinds(|j| j.dies_on_sigterm()), ["snapshot", "snapshot_restore"]);
        assert_eq!(kinds(|j| j.result_names_nothing()), ["wal_fetch"]);
    }

    #[pg_test]
    fn a_verify_job_is_scheduled_with_a_checked_sample_and_doctor_watches_it() {
        let error = refused("SELECT backstop.schedule('v', '0 4 * * 0', 'verify', '{\"sample\": 0}')");
        assert!(error.contains("sample"), "{error}");
        let error = refused("SELECT backstop.schedule('v', '0 4 * * 0', 'verify', '{\"sampel\": 0.1}')");
        assert!(error.contains("sampel"), "{error}");
        Spi::run("SELECT backstop.schedule('verify-weekly', '0 4 * * 0', 'verify', '{\"sample\": 0.05}')").unwrap();
        let doctor = Spi::get_one::<String>(
            "SELECT status || ': ' || detail FROM backstop.doctor() WHERE \"check\" = 'repository_verified'",
        )
        .unwrap()
        .unwrap();
        assert!(doctor.starts_with("warn: verify has never run"), "{doctor}");
        // A failed run makes it say so, with the run's error.
        Spi::run(
            "INSERT INTO backstop.job_runs (job_id, kind, state, requested_by, finished_at, error) \
             VALUES (-424242, 'verify', 'failed', 'tester', pg_catalog.now(), 'verify found damage: 1 of 2 backups fail')",
        )
        .unwrap();
        let doctor = Spi::get_one::<String>(
            "SELECT status || ': ' || detail FROM backstop.doctor() WHERE \"check\" = 'repository_verified'",
        )
        .unwrap()
        .unwrap();
        assert!(doctor.starts_with("warn: the last verify") && doctor.contains("1 of 2 backups fail"), "{doctor}");
    }
}
