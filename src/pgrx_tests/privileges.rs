#[pgrx::pg_schema]
mod tests {
    use crate::pgrx_tests::error_of;
    use pgrx::prelude::*;

    fn create_roles() {
        Spi::run(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'backstop_test_plain') THEN
                     CREATE ROLE backstop_test_plain NOLOGIN;
                 END IF;
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'backstop_test_operator') THEN
                     CREATE ROLE backstop_test_operator NOLOGIN IN ROLE backstop_admin;
                 END IF;
             END $$",
        )
        .unwrap();
        Spi::run("GRANT EXECUTE ON FUNCTION public.backstop_test_error_of(text, text) TO PUBLIC").unwrap();
    }

    #[pg_test]
    fn plain_users_are_refused_every_function() {
        error_of(None, "SELECT 1"); // creates the helper
        create_roles();
        let functions = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'backstop' AND has_function_privilege('backstop_test_plain', p.oid, 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(functions, Some(0), "no backstop function is executable by a plain user");
        for statement in ["SELECT * FROM backstop.doctor()", "SELECT backstop.doctor_report()"] {
            let error = error_of(Some("backstop_test_plain"), statement).expect("refused");
            assert!(error.starts_with("42501: permission denied for schema backstop"), "{statement}: {error}");
        }
    }

    #[pg_test]
    fn backstop_admin_members_may_run_doctor() {
        error_of(None, "SELECT 1");
        create_roles();
        assert_eq!(error_of(Some("backstop_test_operator"), "SELECT * FROM backstop.doctor()"), None);
        let executable = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'backstop' AND NOT has_function_privilege('backstop_admin', p.oid, 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(executable, Some(0), "backstop_admin can execute every backstop function");
    }

    #[pg_test]
    fn table_history_is_refused_to_whoever_may_not_read_the_table() {
        error_of(None, "SELECT 1");
        create_roles();
        Spi::run("CREATE TABLE public.history_secret (id int)").unwrap();
        // backstop_admin may run the function, but not read this table: nothing of its history.
        let error =
            error_of(Some("backstop_test_operator"), "SELECT * FROM backstop.table_history('public.history_secret')")
                .expect("refused");
        assert!(error.starts_with("42501: you cannot read table public.history_secret"), "{error}");
        // A dropped table's history (only the repository knows it) is for those who read everything.
        let error =
            error_of(Some("backstop_test_operator"), "SELECT * FROM backstop.table_history('public.gone_long_ago')")
                .expect("refused");
        assert!(error.starts_with("42P01: table public.gone_long_ago does not exist"), "{error}");
        // Bad arguments are refused before any worker starts.
        let error = error_of(None, "SELECT * FROM backstop.table_history('public.history_secret', max_rows => 0)")
            .expect("refused");
        assert!(error.contains("max_rows must be at least 1"), "{error}");
    }

    #[pg_test]
    fn plain_users_cannot_read_or_set_secret_settings() {
        error_of(None, "SELECT 1");
        create_roles();
        Spi::run("SET backstop.s3_secret_access_key = 'wJalrXUtnFEMI-very-secret'").unwrap();
        for statement in
            ["SHOW backstop.s3_secret_access_key", "SELECT current_setting('backstop.s3_secret_access_key')"]
        {
            let error = error_of(Some("backstop_test_plain"), statement).expect("refused");
            assert!(error.contains("must be superuser or have privileges of pg_read_all_settings"), "{error}");
            assert!(!error.contains("very-secret"), "{error}");
        }
        let error = error_of(Some("backstop_test_plain"), "SET backstop.s3_secret_access_key = 'x'").expect("refused");
        assert!(error.starts_with("42501: permission denied to set parameter"), "{error}");
        let error = error_of(Some("backstop_test_plain"), "SET backstop.repository = 'file:///tmp/elsewhere'")
            .expect("refused");
        assert!(error.starts_with("42501"), "{error}");
        // Visible settings stay visible, secret ones do not exist for a plain user.
        Spi::run("GRANT USAGE ON SCHEMA public TO backstop_test_plain").unwrap();
        let visible = error_of(
            Some("backstop_test_plain"),
            "DO $do$ BEGIN IF (SELECT count(*) FROM pg_settings WHERE name LIKE 'backstop.s3%') <> 5 \
             THEN RAISE EXCEPTION 'plain user sees: %', \
             (SELECT string_agg(name, ',') FROM pg_settings WHERE name LIKE 'backstop.s3%'); END IF; END $do$",
        );
        assert_eq!(
            visible, None,
            "a plain user sees exactly the 5 non-secret S3 settings (endpoint, region, path style, attempts, CA file)"
        );
    }
}
