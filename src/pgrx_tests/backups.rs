#[pgrx::pg_schema]
mod tests {
    use crate::pgrx_tests::error_of;
    use pgrx::prelude::*;

    fn own_namespace(name: &str) {
        Spi::run(&format!("SET backstop.cluster_name = 'pgrx_{name}_{}'", crate::repo::system_identifier())).unwrap();
    }

    #[pg_test]
    fn an_empty_namespace_has_no_backups_and_no_recovery_window() {
        crate::pgrx_tests::exclusive_with_base_backup_jobs();
        own_namespace("backups_empty");
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.backups()").unwrap(), Some(0));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.recovery_window()").unwrap(), Some(0));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.job_progress").unwrap(), Some(0));
    }

    #[pg_test]
    fn a_bad_backup_kind_is_refused_before_any_job_starts() {
        own_namespace("backups_kind");
        let jobs_before = Spi::get_one::<i64>("SELECT count(*) FROM backstop.job_runs").unwrap();
        let error = error_of(None, "SELECT * FROM backstop.base_backup(kind => 'differential')").expect("refused");
        assert!(error.starts_with("22023: kind \"differential\" is not a base backup kind"), "{error}");
        assert!(error.contains("'auto'"), "the hint names the accepted kinds: {error}");
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.job_runs").unwrap(), jobs_before);
    }

    /// Another server writing the same namespace (a standby, a copy restored as primary) holds the
    /// repository lease: the base backup refuses, naming it, and publishes nothing; expire too.
    #[pg_test]
    fn a_base_backup_or_expire_refuses_while_another_server_holds_the_lease() {
        // The server's own namespace, the one its job workers use (a session's SET does not
        // reach them); a regression must not hang the suite on the WAL wait.
        crate::pgrx_tests::exclusive_with_base_backup_jobs();
        Spi::run("SET statement_timeout = '60s'").unwrap();
        let repository = crate::repo::open_checked().unwrap();
        let holder = backstop_core::lease::Holder { server: "standby-host:/srv/standby".into(), job: "41".into() };
        let lease = crate::io::block_on(backstop_core::lease::acquire(
            &repository,
            &holder,
            "expire",
            std::time::SystemTime::now(),
        ))
        .unwrap();
        for job in ["run_job('base_backup')", "run_job('expire', '{\"backups\": {\"keep_last\": 1}}')"] {
            let outcome =
                Spi::get_one::<String>(&format!("SELECT state || ': ' || coalesce(error, '') FROM backstop.{job}"))
                    .unwrap()
                    .unwrap_or_default();
            assert!(
                outcome.starts_with("failed: ")
                    && outcome.contains("leased to standby-host:/srv/standby (expire, job 41)"),
                "{job}: {outcome}"
            );
        }
        // base_backup() raises the worker's error with the worker's SQLSTATE (object in use), its
        // message and its hint intact, not a generic "job failed".
        let error = error_of(None, "SELECT * FROM backstop.base_backup()").expect("refused");
        assert!(error.starts_with("55006: base backup job "), "{error}");
        assert!(
            error.contains("leased to standby-host:/srv/standby") && error.contains("Wait for it to finish"),
            "{error}"
        );
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM backstop.backups()").unwrap(), Some(0));
        // Released, the next base backup may take it (here it stops at archiving, which this test
        // server does not do, but no longer at the lease).
        crate::io::block_on(backstop_core::lease::release(&repository, &lease)).unwrap();
        let lease_now = crate::io::block_on(repository.head(&backstop_core::layout::lease())).unwrap();
        assert!(lease_now.is_none());
    }

    #[pg_test]
    fn an_unreachable_repository_is_refused_in_the_callers_words() {
        Spi::run("SET backstop.repository = ''").unwrap();
        let error = error_of(None, "SELECT * FROM backstop.base_backup()").expect("refused");
        assert!(error.contains("backstop.repository is not set"), "{error}");
    }
}
