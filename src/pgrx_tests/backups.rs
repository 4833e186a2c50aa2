#[pgrx::pg_schema]
mod tests {
    use crate::pgrx_tests::error_of;
    use pgrx::prelude::*;

    fn own_namespace(name: &str) {
        Spi::run(&format!("SET backstop.cluster_name = 'pgrx_{name}_{}'", crate::repo::system_identifier())).unwrap();
    }

    #[pg_test]
    fn an_empty_namespace_has_no_backups_and_no_recovery_window() {
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

    #[pg_test]
    fn an_unreachable_repository_is_refused_in_the_callers_words() {
        Spi::run("SET backstop.repository = ''").unwrap();
        let error = error_of(None, "SELECT * FROM backstop.base_backup()").expect("refused");
        assert!(error.contains("backstop.repository is not set"), "{error}");
    }
}
