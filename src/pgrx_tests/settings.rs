#[pgrx::pg_schema]
pub mod tests {
    use crate::pgrx_tests::{error_of, one_text};
    use pgrx::prelude::*;

    /// A valid age X25519 recipient (public key only; its identity is not kept anywhere).
    pub const SAMPLE_RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    /// The server defines every setting backstop_core::settings describes (the CLI's source too),
    /// with its description, bounds, unit and context.
    #[pg_test]
    fn the_server_defines_each_setting_as_described() {
        use backstop_core::settings;
        for about in settings::all() {
            let defined = Spi::get_one_with_args::<bool>(
                "SELECT pg_catalog.current_setting($1, true) IS NOT NULL",
                &[about.name().into()],
            )
            .unwrap();
            assert_eq!(defined, Some(true), "{} is not defined", about.name());
        }
        for setting in settings::INTS.iter().copied() {
            let row = one_text(&format!(
                "SELECT concat_ws('|', min_val, max_val, boot_val, coalesce(unit, ''), context, short_desc) \
                   FROM pg_catalog.pg_settings WHERE name = '{}'",
                setting.about.name()
            ));
            let expected = format!(
                "{}|{}|{}|{}|{}|{}",
                setting.min,
                setting.max,
                setting.default,
                if setting.seconds { "s" } else { "" },
                if setting.about.reload { "sighup" } else { "superuser" },
                setting.about.description.to_str().unwrap()
            );
            assert_eq!(row, expected, "{}", setting.about.name());
        }
        let error = error_of(None, "SET backstop.s3_endpoint = 's3.example.com'").expect("rejected");
        let reason = settings::S3_ENDPOINT.check_as("s3_endpoint", "s3.example.com").unwrap_err().to_string();
        let reason = reason.trim_start_matches("invalid setting s3_endpoint: ");
        assert!(error.contains(reason), "the CLI and the server give the same reason: {error} / {reason}");
    }

    #[pg_test]
    fn repository_setting_rejects_unknown_schemes_and_relative_paths() {
        for (value, expected) in [
            ("ftp://host/dir", "unknown scheme \"ftp\""),
            ("file://relative/dir", "absolute path"),
            ("/var/lib/backstop", "no scheme"),
            ("s3://Bad_Bucket", "not a valid bucket name"),
        ] {
            let error = error_of(None, &format!("SET backstop.repository = '{value}'")).expect("rejected");
            assert!(error.starts_with("22023: invalid value for parameter \"backstop.repository\""), "{error}");
            assert!(error.contains(expected), "{value}: {error}");
            assert!(error.contains("file:///absolute/path or s3://bucket"), "the accepted form is named: {error}");
        }
        Spi::run("SET backstop.repository = 's3://backups/prod/db1'").unwrap();
        assert_eq!(one_text("SHOW backstop.repository"), "s3://backups/prod/db1");
    }

    #[pg_test]
    fn recipients_setting_rejects_malformed_keys() {
        let error = error_of(None, "SET backstop.encryption_recipients = 'age1notarealkey'").expect("rejected");
        assert!(error.contains("backstop.encryption_recipients") && error.contains("age-keygen"), "{error}");
        let error = error_of(None, "SET backstop.encryption_recipients = 'AGE-SECRET-KEY-1XYZ'").expect("rejected");
        assert!(error.contains("not an age X25519 recipient"), "{error}");
        Spi::run(&format!("SET backstop.encryption_recipients = '{SAMPLE_RECIPIENT}'")).unwrap();
        assert_eq!(one_text("SHOW backstop.encryption_recipients"), SAMPLE_RECIPIENT);
    }

    #[pg_test]
    fn endpoint_cluster_name_and_compression_are_checked() {
        let error = error_of(None, "SET backstop.s3_endpoint = 'localhost:3900'").expect("rejected");
        assert!(error.contains("http:// or https://"), "{error}");
        let error = error_of(None, "SET backstop.cluster_name = 'a/b'").expect("rejected");
        assert!(error.contains("backstop.cluster_name takes"), "{error}");
        let error = error_of(None, "SET backstop.compression = 'gzip'").expect("rejected");
        assert!(error.contains("Available values: none, zstd"), "{error}");
        let error = error_of(None, "SET backstop.compression_level = 40").expect("rejected");
        assert!(error.contains("40 is outside the valid range"), "{error}");
        let error = error_of(None, "SET backstop.no_such_setting = 1").expect("rejected");
        assert!(error.contains("backstop"), "the prefix is reserved: {error}");
    }

    #[pg_test]
    fn secrets_are_masked_even_for_superusers_and_absent_from_show_all() {
        Spi::run("SET backstop.s3_secret_access_key = 'wJalrXUtnFEMI-very-secret'").unwrap();
        Spi::run("SET backstop.s3_access_key_id = 'GK-key-id'").unwrap();
        assert_eq!(one_text("SHOW backstop.s3_secret_access_key"), "(hidden)");
        assert_eq!(one_text("SELECT current_setting('backstop.s3_access_key_id')"), "(hidden)");
        let listed = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_settings WHERE name IN \
             ('backstop.s3_secret_access_key', 'backstop.s3_access_key_id', 'backstop.s3_session_token')",
        )
        .unwrap();
        assert_eq!(listed, Some(0));
        let leaked = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_show_all_settings() WHERE setting LIKE '%very-secret%'",
        )
        .unwrap();
        assert_eq!(leaked, Some(0));
    }
}
