//! A repository writer cannot run code in the server, a restore grants no access its caller lacked,
//! restores check their disk, and every wait on a store can be cancelled.

#[pgrx::pg_schema]
mod tests {
    use std::time::{Duration, Instant};

    use backstop_core::codec::{self, CodecSettings};
    use backstop_core::snapshot::SnapshotId;
    use pgrx::pg_sys::panic::CaughtError;
    use pgrx::prelude::*;

    use crate::pgrx_tests::{error_of, one_text};
    use crate::{io, repo};

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn truth(sql: &str) -> bool {
        Spi::get_one::<bool>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or(false)
    }

    fn manifest_file(schema: &str, table: &str, id: &str) -> std::path::PathBuf {
        let repository = repo::open().unwrap();
        let path = backstop_core::layout::snapshot_manifest(schema, table, &SnapshotId::parse(id).unwrap());
        std::path::Path::new("/tmp/backstop-pgrx-test-repo").join(repository.key(&path))
    }

    /// Rewrites a stored manifest with contents of the writer's choosing, signed by `signer`: valid
    /// object encoding and checksums. A random key is what someone with write access to the bucket
    /// has; the cluster's own key (None) stands for a leaked key or a bug of ours, and lets the
    /// checks behind the signature be tested on their own.
    fn forge_manifest(
        schema: &str,
        table: &str,
        id: &str,
        signer: Option<backstop_core::auth::SigningKey>,
        edit: impl FnOnce(&mut serde_json::Value),
    ) {
        let file = manifest_file(schema, table, id);
        let repository = repo::open().unwrap();
        let relative = backstop_core::layout::snapshot_manifest(schema, table, &SnapshotId::parse(id).unwrap());
        let plain = io::block_on(repository.get_bytes(&relative)).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        edit(&mut json);
        let sign = codec::SignWith {
            key: signer.unwrap_or_else(|| repo::signing_key().unwrap()),
            object_key: repository.key(&relative),
        };
        let (encoded, _) =
            codec::encode_to_vec(&CodecSettings::plain(), &serde_json::to_vec(&json).unwrap(), Some(&sign)).unwrap();
        std::fs::write(file, encoded).unwrap();
    }

    /// [`forge_manifest`] with the cluster's own key.
    fn tamper_manifest(schema: &str, table: &str, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        forge_manifest(schema, table, id, None, edit)
    }

    fn no_forged_role() -> bool {
        !truth("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'backstop_forged')")
    }

    const INJECTION: &str = "CHECK (true); CREATE ROLE backstop_forged SUPERUSER; --";

    #[pg_test]
    fn a_forged_manifest_is_refused_and_runs_nothing() {
        run("CREATE TABLE public.forge_me (id int PRIMARY KEY, n int CHECK (n > 0));
             INSERT INTO public.forge_me SELECT g, g FROM generate_series(1, 100) g;");
        let id = one_text("SELECT backstop.snapshot_table('public.forge_me')");
        let restore = |extra: &str| {
            error_of(
                None,
                &format!("SELECT backstop.restore_table('public.forge_me', snapshot_id => '{id}', target_table => 'public.forged'{extra})"),
            )
        };
        let check_at = |json: &serde_json::Value| {
            json["table"]["constraints"].as_array().unwrap().iter().position(|c| c["kind"] == "c").unwrap()
        };

        // Written into the bucket by someone without the cluster's signing key: refused before a
        // byte of it is parsed. No opt-in exists on the server: asking for one is refused too.
        let genuine = std::fs::read(manifest_file("public", "forge_me", &id)).unwrap();
        forge_manifest("public", "forge_me", &id, Some(backstop_core::auth::SigningKey::generate()), |m| {
            let at = check_at(m);
            m["table"]["constraints"][at]["definition"] = INJECTION.into();
        });
        let error = restore("").expect("refused");
        assert!(error.starts_with("XX001") && error.contains("is not authenticated"), "{error}");
        assert!(error.contains("not trusted here"), "{error}");
        let error = restore(", trust_unauthenticated => true").expect("refused");
        assert!(error.starts_with("22023") && error.contains("no longer accepted"), "{error}");
        assert!(error.contains("backstop.trusted_keys"), "the hint says how to trust another cluster: {error}");
        assert!(no_forged_role());
        assert!(!truth("SELECT to_regclass('public.forged') IS NOT NULL"), "nothing was created");

        // The genuine manifest altered in place (one byte, its signature kept): refused.
        let mut altered = genuine.clone();
        let middle = altered.len() / 2;
        altered[middle] ^= 0x20;
        std::fs::write(manifest_file("public", "forge_me", &id), &altered).unwrap();
        let error = restore("").expect("refused");
        assert!(error.starts_with("XX001"), "{error}");
        assert!(no_forged_role());
        std::fs::write(manifest_file("public", "forge_me", &id), &genuine).unwrap();

        // Behind the signature, the manifest's own checks hold on their own (defence in depth):
        // signed with the cluster's own key (a leaked key, or a bug of ours), injected DDL is
        // refused and nothing is pasted.
        tamper_manifest("public", "forge_me", &id, |m| {
            let at = check_at(m);
            m["table"]["constraints"][at]["definition"] = INJECTION.into();
        });
        let error = restore("").expect("the injected definition is refused");
        assert!(error.starts_with("XX001") && error.contains("will not run"), "{error}");
        assert!(no_forged_role());
        assert!(!truth("SELECT to_regclass('public.forged') IS NOT NULL"), "nothing was created");

        for (path, text) in [
            ("type_name", "int) ; CREATE ROLE backstop_forged SUPERUSER; CREATE TABLE x (y int"),
            ("default", "1); CREATE ROLE backstop_forged SUPERUSER; SELECT (1"),
            ("default", "1) FROM pg_catalog.pg_authid WHERE (true"),
            ("collation", "\"C\" ; CREATE ROLE backstop_forged SUPERUSER"),
        ] {
            tamper_manifest("public", "forge_me", &id, |m| {
                let at = check_at(m);
                m["table"]["constraints"][at]["definition"] = "CHECK ((n > 0))".into();
                m["table"]["columns"][1][path] = text.into();
            });
            let error = restore("").expect("refused");
            assert!(!error.contains("already exists"), "{path}: {error}");
            assert!(no_forged_role(), "{path}: {error}");
            assert!(!truth("SELECT to_regclass('public.forged') IS NOT NULL"), "{path}");
        }

        // The genuine manifest restores, recorded as authenticated.
        std::fs::write(manifest_file("public", "forge_me", &id), &genuine).unwrap();
        assert_eq!(restore(""), None);
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM public.forged").unwrap(), Some(100));
        assert!(!truth(
            "SELECT trusted_unauthenticated FROM backstop.restores WHERE target_table = '\"public\".\"forged\"'"
        ));
        // Snapshots are authenticated by their signature alone: no shared secret's HMAC is written.
        let stored: serde_json::Value = serde_json::from_slice(
            &io::block_on(repo::open().unwrap().get_bytes(&backstop_core::layout::snapshot_manifest(
                "public",
                "forge_me",
                &SnapshotId::parse(&id).unwrap(),
            )))
            .unwrap(),
        )
        .unwrap();
        assert!(stored["authentication"].is_null(), "{}", stored["authentication"]);
    }

    #[pg_test]
    fn definitions_are_captured_and_replayed_with_search_path_pg_catalog() {
        run("CREATE SCHEMA sp_lib;
             CREATE FUNCTION sp_lib.is_positive(int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
             CREATE SCHEMA sp_evil;
             CREATE TABLE sp_evil.calls (n int);
             CREATE FUNCTION sp_evil.is_positive(int) RETURNS bool LANGUAGE plpgsql
                 AS $$ BEGIN INSERT INTO sp_evil.calls VALUES ($1); RETURN true; END $$;
             SET LOCAL search_path = sp_lib, public;
             CREATE TABLE public.sp_checked (id int PRIMARY KEY, n int CHECK (is_positive(n)));
             INSERT INTO public.sp_checked SELECT g, g FROM generate_series(1, 3) g;");
        let id = one_text("SELECT backstop.snapshot_table('public.sp_checked')");
        let relative =
            backstop_core::layout::snapshot_manifest("public", "sp_checked", &SnapshotId::parse(&id).unwrap());
        let manifest = io::block_on(repo::open().unwrap().get_bytes(&relative)).unwrap();
        let text = String::from_utf8_lossy(&manifest);
        assert!(text.contains("sp_lib.is_positive(n)"), "the CHECK names its schema: {text}");

        // The restorer's path puts a look-alike first; the restore must never call it.
        run("SET LOCAL search_path = sp_evil, sp_lib, public");
        let restored = Spi::get_one::<i64>(&format!(
            "SELECT backstop.restore_table('public.sp_checked', snapshot_id => '{id}', target_table => 'public.sp_restored')"
        ))
        .unwrap();
        assert_eq!(restored, Some(3));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM sp_evil.calls").unwrap(), Some(0));
        assert_eq!(one_text("SHOW search_path"), "sp_evil, sp_lib, public", "the caller's search_path is back");
        run("SET LOCAL search_path = public");
    }

    fn create_roles() {
        error_of(None, "SELECT 1"); // creates the helper
        run("CREATE ROLE bs_rs_alice NOLOGIN IN ROLE backstop_admin;
             CREATE ROLE bs_rs_owner NOLOGIN;
             CREATE ROLE bs_rs_reader NOLOGIN;
             CREATE SCHEMA bs_rs_space AUTHORIZATION bs_rs_alice;
             GRANT EXECUTE ON FUNCTION public.backstop_test_error_of(text, text) TO PUBLIC;");
    }

    #[pg_test]
    fn a_restore_grants_no_access_the_caller_did_not_have() {
        create_roles();
        run("CREATE TABLE public.rs_secret (id int PRIMARY KEY, salary int);
             INSERT INTO public.rs_secret SELECT g, g * 1000 FROM generate_series(1, 10) g;");
        let secret = one_text("SELECT backstop.snapshot_table('public.rs_secret')");
        let as_alice = |sql: &str| error_of(Some("bs_rs_alice"), sql);
        let error = as_alice(&format!(
            "SELECT backstop.restore_table('public.rs_secret', snapshot_id => '{secret}', target_table => 'bs_rs_space.stolen')"
        ))
        .expect("refused");
        assert!(error.starts_with("42501") && error.contains("needs SELECT"), "{error}");
        let error =
            as_alice("SELECT * FROM backstop.recover('public.rs_secret', target_table => 'bs_rs_space.stolen')")
                .expect("refused");
        assert!(error.contains("needs SELECT"), "{error}");

        // Row-level security that hides rows from her counts as not being able to read them.
        run("GRANT SELECT ON public.rs_secret TO bs_rs_alice;
             ALTER TABLE public.rs_secret ENABLE ROW LEVEL SECURITY;
             CREATE POLICY first_three ON public.rs_secret TO bs_rs_alice USING (id <= 3);");
        let error = as_alice(&format!(
            "SELECT backstop.restore_table('public.rs_secret', snapshot_id => '{secret}', target_table => 'bs_rs_space.stolen')"
        ))
        .expect("refused");
        assert!(error.contains("row-level security"), "{error}");

        // A dropped table: only members of its owner role.
        run("CREATE TABLE public.rs_dropped (id int); INSERT INTO public.rs_dropped VALUES (1);
             ALTER TABLE public.rs_dropped OWNER TO bs_rs_owner;");
        let dropped = one_text("SELECT backstop.snapshot_table('public.rs_dropped')");
        run("DROP TABLE public.rs_dropped");
        let error = as_alice(&format!(
            "SELECT backstop.restore_table('public.rs_dropped', snapshot_id => '{dropped}', target_table => 'bs_rs_space.mine')"
        ))
        .expect("refused");
        assert!(error.contains("membership in its owner role \"bs_rs_owner\""), "{error}");

        // backstop.restores is written by backstop alone: the validation gate cannot be forged.
        let error = as_alice(
            "INSERT INTO backstop.restores (target_oid, target_table, source_table, snapshot_id, rows, validation_passed)
             VALUES ('pg_catalog.pg_class'::regclass, 'x', 'y', 'snap_00000000', 0, true)",
        )
        .expect("refused");
        assert!(error.starts_with("42501"), "{error}");
        let error = as_alice("UPDATE backstop.restores SET validation_passed = true").expect("refused");
        assert!(error.starts_with("42501"), "{error}");
    }

    #[pg_test]
    fn a_restored_copy_keeps_the_original_owner_grants_and_policies() {
        create_roles();
        run("CREATE TABLE public.rs_shared (id int PRIMARY KEY, note text);
             INSERT INTO public.rs_shared SELECT g, 'n' || g FROM generate_series(1, 10) g;
             ALTER TABLE public.rs_shared OWNER TO bs_rs_owner;
             GRANT SELECT ON public.rs_shared TO bs_rs_reader;
             ALTER TABLE public.rs_shared ENABLE ROW LEVEL SECURITY;
             CREATE POLICY low_ids ON public.rs_shared FOR SELECT TO bs_rs_reader USING (id <= 5);");
        let id = one_text("SELECT backstop.snapshot_table('public.rs_shared')");
        run(&format!("SELECT backstop.restore_table('public.rs_shared', snapshot_id => '{id}', target_table => 'public.rs_shared_copy')"));
        assert_eq!(
            one_text(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'public.rs_shared_copy'::regclass"
            ),
            "bs_rs_owner"
        );
        assert!(truth("SELECT has_table_privilege('bs_rs_reader', 'public.rs_shared_copy', 'SELECT')"));
        assert!(!truth("SELECT has_table_privilege('bs_rs_alice', 'public.rs_shared_copy', 'SELECT')"));
        assert!(truth("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.rs_shared_copy'::regclass"));
        assert_eq!(
            one_text("SELECT polname || ' ' || pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = 'public.rs_shared_copy'::regclass"),
            "low_ids (id <= 5)"
        );
    }

    #[pg_test]
    fn a_restore_that_would_not_fit_is_refused_and_recover_does_not_fall_back() {
        run("CREATE TABLE public.rs_big (id int, payload text);
             INSERT INTO public.rs_big SELECT g, md5(g::text) FROM generate_series(1, 20000) g;");
        let _older = one_text("SELECT backstop.snapshot_table('public.rs_big')");
        let newer = one_text("SELECT backstop.snapshot_table('public.rs_big')");
        run("SET LOCAL temp_file_limit = '64kB'");
        let error =
            error_of(None, &format!("SELECT backstop.restore_table('public.rs_big', snapshot_id => '{newer}')"))
                .expect("refused");
        assert!(error.starts_with("53400") && error.contains("temp_file_limit"), "{error}");
        let error = error_of(None, "SELECT * FROM backstop.recover('public.rs_big')").expect("refused");
        assert!(error.contains("temp_file_limit"), "reported as what it is, not as damage: {error}");
        assert!(!truth("SELECT to_regclass('public.rs_big_recovered') IS NOT NULL"));
        run("RESET temp_file_limit");
        // The spool is an unnamed file: nothing is left in pgsql_tmp by a failed or finished restore.
        let leftovers = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let tmp = std::path::Path::new(&one_text("SHOW data_directory")).join("base/pgsql_tmp");
        let before = leftovers(&tmp);
        run(&format!("SELECT backstop.restore_table('public.rs_big', snapshot_id => '{newer}')"));
        assert_eq!(leftovers(&tmp), before);
    }

    #[pg_test]
    fn copy_back_plans_name_the_tables_a_delete_would_cascade_into() {
        run("CREATE TABLE public.fk_orders (id int PRIMARY KEY, total int);
             CREATE TABLE public.fk_lines (id int PRIMARY KEY, order_id int REFERENCES public.fk_orders ON DELETE CASCADE);
             INSERT INTO public.fk_orders SELECT g, g FROM generate_series(1, 10) g;
             INSERT INTO public.fk_lines SELECT g, g FROM generate_series(1, 10) g;");
        one_text("SELECT backstop.snapshot_table('public.fk_orders')");
        run("DELETE FROM public.fk_orders WHERE id > 5");
        let plans = Spi::connect(|client| {
            client
                .select("SELECT strategy, description, sql FROM backstop.recover('public.fk_orders')", None, &[])
                .unwrap()
                .map(|row| {
                    (
                        row.get::<String>(1).unwrap().unwrap(),
                        row.get::<String>(2).unwrap().unwrap(),
                        row.get::<String>(3).unwrap().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        });
        let replace_all = plans.iter().find(|p| p.0 == "replace_all").unwrap();
        assert!(
            replace_all.1.contains("public.fk_lines (\"fk_lines_order_id_fkey\"")
                && replace_all.1.contains("ON DELETE CASCADE"),
            "{}",
            replace_all.1
        );
        let sync = plans.iter().find(|p| p.0 == "sync_by_key").expect("a plan that avoids the cascade");
        // Run it: the rows deleted since the snapshot come back, and no line of a kept order is lost.
        run("INSERT INTO public.fk_lines VALUES (100, 1)");
        run(&sync.2.replace("BEGIN;", "").replace("COMMIT;", ""));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM public.fk_orders").unwrap(), Some(10));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM public.fk_lines WHERE order_id = 1").unwrap(), Some(2));
    }

    /// An S3 endpoint that accepts connections and never answers.
    fn silent_repository() -> (std::net::TcpListener, backstop_core::Repository) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let options = backstop_core::store::S3Options {
            endpoint: Some(format!("http://{}", listener.local_addr().unwrap())),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id: Some("backstop-test".into()),
            secret_access_key: Some("backstop-test".into()),
            max_attempts: 1,
            ..Default::default()
        };
        let store = io::block_on(backstop_core::store::s3::S3Store::connect("silent", "", &options)).unwrap();
        let repository = backstop_core::Repository::new(std::sync::Arc::new(store), "silent", CodecSettings::plain())
            .unwrap()
            .with_signer(backstop_core::auth::SigningKey::generate());
        (listener, repository)
    }

    /// Runs `wait` and cancels it after one second the way pg_cancel_backend does (SIGINT to this
    /// backend, which sets QueryCancelPending, the flag statement_timeout sets too); returns the
    /// error it ended with and how long it took.
    fn cancelled_after_a_second(wait: impl FnOnce()) -> (String, Duration) {
        let pid = std::process::id() as i32;
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            unsafe { libc::kill(pid, libc::SIGINT) };
        });
        let started = Instant::now();
        let wait = std::panic::AssertUnwindSafe(wait);
        let message = PgTryBuilder::new(move || {
            let wait = wait;
            (wait.0)();
            "it returned".to_string()
        })
        .catch_others(|caught| match caught {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => report.message().to_string(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
        })
        .execute();
        let took = started.elapsed();
        canceller.join().unwrap();
        (message, took)
    }

    fn assert_cancelled_promptly((message, took): (String, Duration)) {
        assert!(message.contains("canceling statement"), "{message}");
        assert!(took < Duration::from_secs(2), "the cancel took {took:?} to be honoured");
    }

    #[pg_test]
    fn opening_and_streaming_an_object_from_a_silent_store_can_be_cancelled() {
        let (_listener, repository) = silent_repository();
        let snapshot = backstop_core::snapshot::stored::StoredSnapshot {
            schema: "public".into(),
            table: "t".into(),
            id: SnapshotId::parse("snap_00000001").unwrap(),
        };
        let manifest: backstop_core::snapshot::SnapshotManifest = serde_json::from_str(
            r#"{"format_version":1,"snapshot_id":"snap_00000001","table":{"schema":"public","name":"t","relkind":"r","unlogged":false,"columns":[],"constraints":[],"indexes":[],"ddl":""},
               "rows":0,"content_checksum":"","data":{"path":"data.parquet","sha256":"","bytes":0,"stored_bytes":0,"row_groups":0},
               "lsn":"0/0","taken_at":"","taken_at_unix_ms":0,"database":"","postgres_version":"","pg_version_num":0,"system_identifier":"0","server_encoding":"UTF8","backstop_version":""}"#,
        )
        .unwrap();
        assert_cancelled_promptly(cancelled_after_a_second(move || {
            let file = tempfile::tempfile().unwrap();
            let _ = crate::snapshots::fetch_verified(&repository, &snapshot, &manifest, file, |_| {});
        }));
    }

    #[pg_test]
    fn a_multipart_upload_to_a_silent_store_can_be_cancelled() {
        let (_listener, repository) = silent_repository();
        assert_cancelled_promptly(cancelled_after_a_second(move || {
            let _ = io::block_on(async {
                let mut writer = repository
                    .writer(
                        &backstop_core::layout::snapshot_data(
                            "public",
                            "t",
                            &SnapshotId::parse("snap_00000001").unwrap(),
                        ),
                        backstop_core::WriteMode::Overwrite,
                    )
                    .await?;
                writer.write(&vec![7u8; 12 << 20]).await?;
                writer.finish().await
            });
        }));
    }

    #[pg_test]
    fn listing_snapshots_on_a_silent_store_can_be_cancelled() {
        let (listener, _) = silent_repository();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        run(&format!(
            "SET LOCAL backstop.repository = 's3://silent/x'; SET LOCAL backstop.s3_endpoint = '{endpoint}';
             SET LOCAL backstop.s3_force_path_style = on; SET LOCAL backstop.s3_max_attempts = 1;
             SET LOCAL backstop.s3_access_key_id = 'k'; SET LOCAL backstop.s3_secret_access_key = 's';"
        ));
        assert_cancelled_promptly(cancelled_after_a_second(|| run("SELECT * FROM backstop.snapshots()")));
    }
}
