#[pgrx::pg_schema]
mod tests {
    use crate::pgrx_tests::settings::tests::SAMPLE_RECIPIENT;
    use crate::{io, repo};
    use backstop_core::repository::ClusterIdentity;
    use pgrx::prelude::*;
    use std::collections::HashMap;

    fn doctor_checks() -> HashMap<String, (String, String, Option<String>)> {
        Spi::connect(|client| {
            client
                .select(r#"SELECT "check", status, detail, hint FROM backstop.doctor()"#, None, &[])
                .unwrap()
                .map(|row| {
                    (
                        row.get::<String>(1).unwrap().unwrap(),
                        (
                            row.get::<String>(2).unwrap().unwrap(),
                            row.get::<String>(3).unwrap().unwrap(),
                            row.get::<String>(4).unwrap(),
                        ),
                    )
                })
                .collect()
        })
    }

    fn status(checks: &HashMap<String, (String, String, Option<String>)>, name: &str) -> String {
        checks.get(name).unwrap_or_else(|| panic!("check {name} missing from {checks:?}")).0.clone()
    }

    #[pg_test]
    fn doctor_reports_each_check_from_the_real_configuration() {
        // The test server: preloaded, wal_level replica, archive_mode on, archive_command /bin/true,
        // archive_timeout 0, a fresh file:// repository, no encryption.
        crate::pgrx_tests::exclusive_with_base_backup_jobs();
        let checks = doctor_checks();
        assert_eq!(checks.len(), 26, "{checks:?}");
        assert_eq!(status(&checks, "repository_verified"), "warn", "no verify has run here");
        assert_eq!(status(&checks, "repository_signing"), "ok");
        assert!(checks["repository_signing"].1.contains("ed25519:"), "{:?}", checks["repository_signing"]);
        assert_eq!(status(&checks, "shared_preload_libraries"), "ok");
        assert_eq!(status(&checks, "wal_level"), "ok");
        assert_eq!(status(&checks, "archive_mode"), "ok");
        assert_eq!(status(&checks, "archive_library"), "fail");
        assert!(checks["archive_library"].1.contains("/bin/true"), "{:?}", checks["archive_library"]);
        assert_eq!(status(&checks, "archive_timeout"), "warn");
        assert_eq!(status(&checks, "repository_reachable"), "ok");
        assert!(checks["repository_reachable"].1.contains("file:///tmp/backstop-pgrx-test-repo"));
        assert_eq!(status(&checks, "encryption"), "warn");
        assert_eq!(status(&checks, "archiver_failures"), "ok");
        // No base backup yet: the archive alone restores nothing, and doctor says so.
        assert_eq!(status(&checks, "base_backup"), "fail");
        assert!(checks["base_backup"].1.contains("no base backup"), "{:?}", checks["base_backup"]);
        assert_eq!(status(&checks, "pitr_reaches_now"), "fail");
        // The only base backup jobs here are the lease test's, refused: whether they ran before
        // this test depends on the order the suite ran in, and doctor must say which.
        let last_failed = Spi::get_one::<i64>(
            "SELECT max(job_id) FROM backstop.job_runs WHERE kind = 'base_backup' AND state = 'failed' \
             AND job_id = (SELECT max(job_id) FROM backstop.job_runs WHERE kind = 'base_backup')",
        )
        .unwrap();
        match last_failed {
            None => assert_eq!(status(&checks, "backup_job"), "ok", "{:?}", checks["backup_job"]),
            Some(id) => {
                assert_eq!(status(&checks, "backup_job"), "warn", "{:?}", checks["backup_job"]);
                let said = &checks["backup_job"].1;
                assert!(said.contains(&format!("the last base backup job, {id}, failed")), "{said}");
            }
        }
        // PostgreSQL 15 has no WAL summaries: said, never held against it.
        assert_eq!(status(&checks, "wal_summaries"), "ok");
        assert!(
            checks["wal_summaries"].1.starts_with("PostgreSQL 15 has no WAL summaries"),
            "{:?}",
            checks["wal_summaries"]
        );
        // The habits: no schedule, no drill yet, and doctor says both are worth fixing.
        assert_eq!(status(&checks, "scheduler"), "ok", "{:?}", checks["scheduler"]);
        assert_eq!(status(&checks, "schedules"), "warn");
        for drill in ["drill_snapshot_restore", "drill_wal_fetch", "drill_pitr"] {
            assert_eq!(status(&checks, drill), "warn", "{drill}");
            assert!(checks[drill].1.contains("never run"), "{:?}", checks[drill]);
        }
        assert_eq!(status(&checks, "snapshot_age"), "ok");
        assert!(checks.contains_key("rpo"));
        // Logical backups: the client programs of the server's version are found; nothing is
        // scheduled, so neither their age nor their drill is a concern yet.
        assert_eq!(status(&checks, "logical_tools"), "ok", "{:?}", checks["logical_tools"]);
        assert!(checks["logical_tools"].1.starts_with("pg_dump (PostgreSQL) 15."), "{:?}", checks["logical_tools"]);
        assert_eq!(status(&checks, "logical_backup"), "ok");
        assert!(!checks.contains_key("drill_logical_restore"), "{checks:?}");
        for (name, (status, _, hint)) in &checks {
            // Every non-ok check carries a hint; an ok one only when it suggests something
            // (wal_summaries on 17+ with summarize_wal off), which it does not here.
            assert_eq!(status != "ok", hint.is_some(), "{name}: every non-ok check carries a hint, no ok one here");
        }
        let report = Spi::get_one::<pgrx::JsonB>("SELECT backstop.doctor_report()").unwrap().unwrap().0;
        assert_eq!(report["verdict"], "not_ready");
        assert!(report["reason"].as_str().unwrap().contains("archive_library"), "{report}");
        assert_eq!(report["checks"].as_array().unwrap().len(), 26);
    }

    #[pg_test]
    fn doctor_fails_an_unset_or_unreachable_repository_and_says_why() {
        Spi::run("SET backstop.repository = ''").unwrap();
        let checks = doctor_checks();
        assert_eq!(status(&checks, "repository_reachable"), "fail");
        assert!(checks["repository_reachable"].1.contains("backstop.repository is not set"), "{checks:?}");
        assert_eq!(status(&checks, "repository_owner"), "fail");
        assert!(checks["repository_owner"].1.contains("not checked"));

        // A directory the server cannot create: the round trip fails at its first step.
        Spi::run("SET backstop.repository = 'file:///proc/backstop-cannot-exist'").unwrap();
        let checks = doctor_checks();
        assert_eq!(status(&checks, "repository_reachable"), "fail");
        assert!(checks["repository_reachable"].1.contains("failed at write"), "{:?}", checks["repository_reachable"]);
    }

    #[pg_test]
    fn doctor_never_shows_s3_secrets_in_its_output() {
        Spi::run("SET backstop.repository = 's3://backstop-doctor/test'").unwrap();
        Spi::run("SET backstop.s3_endpoint = 'http://127.0.0.1:9'").unwrap();
        Spi::run("SET backstop.s3_max_attempts = 1").unwrap();
        Spi::run("SET backstop.s3_access_key_id = 'GKdoctortestkeyid'").unwrap();
        Spi::run("SET backstop.s3_secret_access_key = 'doctor-test-secret-value'").unwrap();
        let checks = doctor_checks();
        assert_eq!(status(&checks, "repository_reachable"), "fail");
        let report = Spi::get_one::<pgrx::JsonB>("SELECT backstop.doctor_report()").unwrap().unwrap().0.to_string();
        assert!(!report.contains("doctor-test-secret-value"), "{report}");
        assert!(report.contains("s3://backstop-doctor/test"), "{report}");
    }

    #[pg_test]
    fn doctor_checks_who_owns_the_repository() {
        // Fixed names: clear what an earlier run's server (another signing key) left there.
        let namespace = format!("owned-by-someone-else-{}", repo::system_identifier());
        let _ = std::fs::remove_dir_all(std::path::Path::new("/tmp/backstop-pgrx-test-repo").join(&namespace));
        Spi::run(&format!("SET backstop.cluster_name = '{namespace}'")).unwrap();
        let repository = repo::open().unwrap();
        io::block_on(repository.ensure_cluster(&ClusterIdentity {
            system_identifier: 42,
            pg_version_num: 150000,
            wal_segment_size: 16 << 20,
        }))
        .unwrap();
        let checks = doctor_checks();
        assert_eq!(status(&checks, "repository_owner"), "fail");
        assert!(checks["repository_owner"].1.contains("system identifier 42"), "{checks:?}");

        Spi::run(&format!("SET backstop.cluster_name = 'ours-{}'", repo::system_identifier())).unwrap();
        let checks_before = doctor_checks();
        assert_eq!(status(&checks_before, "repository_owner"), "warn", "unclaimed namespace");
        io::block_on(repo::open().unwrap().ensure_cluster(&repo::cluster_identity())).unwrap();
        assert_eq!(status(&doctor_checks(), "repository_owner"), "ok");
    }

    #[pg_test]
    fn doctor_sees_encryption_configured() {
        Spi::run(&format!("SET backstop.encryption_recipients = '{SAMPLE_RECIPIENT}'")).unwrap();
        let checks = doctor_checks();
        assert_eq!(status(&checks, "encryption"), "ok");
        assert!(checks["encryption"].1.contains("1 recipient"));
    }
}
