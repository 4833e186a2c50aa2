//! The `backstop wal` commands as PostgreSQL runs them: real binary, real repository directory.

use std::path::PathBuf;
use std::process::{Command, Output};

const SYSTEM_IDENTIFIER: u64 = 7_400_000_000_000_000_001;
const SEGMENT: usize = 16 << 20;

/// A 16 MiB segment with a long page header naming our test cluster, and content that varies.
fn segment(seed: u8) -> Vec<u8> {
    let mut page = vec![0u8; SEGMENT];
    page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    page[4..8].copy_from_slice(&1u32.to_le_bytes());
    page[24..32].copy_from_slice(&SYSTEM_IDENTIFIER.to_le_bytes());
    page[32..36].copy_from_slice(&(SEGMENT as u32).to_le_bytes());
    page[36..40].copy_from_slice(&8192u32.to_le_bytes());
    for (i, byte) in page.iter_mut().enumerate().skip(40) {
        *byte = (i as u8).wrapping_mul(seed).wrapping_add((i >> 12) as u8);
    }
    page
}

struct Setup {
    dir: tempfile::TempDir,
    /// The data directory's public key, trusted by every command.
    key: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::create_dir_all(dir.path().join("pgdata/pg_wal")).unwrap();
        let key =
            backstop_core::auth::load_or_create_signing_key(&dir.path().join("pgdata")).unwrap().public().to_string();
        Setup { dir, key }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn backstop(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(args)
            .current_dir(self.path("pgdata"))
            .env("BACKSTOP_REPOSITORY", format!("file://{}", self.path("repo").display()))
            .env("BACKSTOP_DATA_DIR", self.path("pgdata"))
            .env("BACKSTOP_TRUSTED_KEYS", &self.key)
            .env_remove("BACKSTOP_TRUST_UNAUTHENTICATED")
            .env_remove("BACKSTOP_CLUSTER")
            .env_remove("BACKSTOP_CONFIG")
            .env_remove("BACKSTOP_IDENTITY_FILE")
            .env_remove("BACKSTOP_ENCRYPTION_RECIPIENTS")
            .output()
            .unwrap()
    }

    /// Writes segment `name` into a scratch directory and pushes it.
    fn push(&self, name: &str, contents: &[u8], extra: &[&str]) -> Output {
        let source = self.path(&format!("source/{name}"));
        std::fs::create_dir_all(source.parent().unwrap()).unwrap();
        std::fs::write(&source, contents).unwrap();
        let mut args = vec!["wal", "push", source.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.backstop(&args)
    }

    fn object(&self, name: &str) -> PathBuf {
        self.path(&format!("repo/{SYSTEM_IDENTIFIER}/wal/{}/{name}", &name[..16]))
    }
}

fn name(n: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, 0, n)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

#[test]
fn fetch_is_byte_identical_prefetches_and_serves_from_the_spool() {
    let setup = Setup::new();
    for n in 1..=6 {
        assert_eq!(code(&setup.push(&name(n), &segment(n as u8), &[])), 0);
    }
    let fetched = setup.backstop(&["wal", "fetch", &name(1), "pg_wal/RECOVERYXLOG", "--prefetch", "3"]);
    assert_eq!(code(&fetched), 0, "{}", stderr(&fetched));
    assert!(std::fs::read(setup.path("pgdata/pg_wal/RECOVERYXLOG")).unwrap() == segment(1));
    let spool = setup.path("pgdata/pg_wal/backstop-spool");
    for n in 2..=4 {
        assert!(spool.join(name(n)).is_file(), "segment {n} prefetched");
    }
    assert!(!spool.join(name(5)).exists(), "no more than --prefetch ahead");

    // The repository copy is gone: segment 2 can only come from the spool.
    std::fs::remove_file(setup.object(&name(2))).unwrap();
    let fetched = setup.backstop(&["wal", "fetch", &name(2), "pg_wal/RECOVERYXLOG", "--prefetch", "3"]);
    assert_eq!(code(&fetched), 0, "{}", stderr(&fetched));
    assert!(std::fs::read(setup.path("pgdata/pg_wal/RECOVERYXLOG")).unwrap() == segment(2));
    assert!(!spool.join(name(2)).exists(), "a spooled segment is handed out once");

    // A damaged spool file is a cache miss, never a wrong answer.
    let spooled = spool.join(name(3));
    let mut bytes = std::fs::read(&spooled).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&spooled, bytes).unwrap();
    let fetched = setup.backstop(&["wal", "fetch", &name(3), "pg_wal/RECOVERYXLOG", "--prefetch", "0"]);
    assert_eq!(code(&fetched), 0, "{}", stderr(&fetched));
    assert!(stderr(&fetched).contains("spooled copy"), "{}", stderr(&fetched));
    assert!(std::fs::read(setup.path("pgdata/pg_wal/RECOVERYXLOG")).unwrap() == segment(3));
}

#[test]
fn fetch_exit_codes_follow_restore_command_conventions() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0);
    let missing = setup.backstop(&["wal", "fetch", &name(9), "pg_wal/RECOVERYXLOG"]);
    assert_eq!(code(&missing), 1, "not in the archive: {}", stderr(&missing));
    assert!(!setup.path("pgdata/pg_wal/RECOVERYXLOG").exists());

    let object = setup.object(&name(1));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let corrupt = setup.backstop(&["wal", "fetch", &name(1), "pg_wal/RECOVERYXLOG"]);
    assert_eq!(code(&corrupt), 255, "an error must stop recovery, not end it: {}", stderr(&corrupt));
    assert!(stderr(&corrupt).contains("is corrupt"), "{}", stderr(&corrupt));
    assert!(!setup.path("pgdata/pg_wal/RECOVERYXLOG").exists(), "nothing written for PostgreSQL to replay");

    let unreachable = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["wal", "fetch", &name(1), "pg_wal/RECOVERYXLOG", "--repository", "ftp://nowhere"])
        .current_dir(setup.path("pgdata"))
        .output()
        .unwrap();
    assert_eq!(code(&unreachable), 255, "{}", stderr(&unreachable));
}

#[test]
fn push_accepts_the_same_bytes_again_and_refuses_different_ones() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0);
    let again = setup.push(&name(1), &segment(1), &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("already archived with identical contents"));
    let before = std::fs::read(setup.object(&name(1))).unwrap();
    let different = setup.push(&name(1), &segment(2), &[]);
    assert_eq!(code(&different), 1, "{}", stderr(&different));
    let message = stderr(&different);
    assert!(message.contains("different contents") && message.matches("sha256 ").count() == 2, "{message}");
    assert_eq!(std::fs::read(setup.object(&name(1))).unwrap(), before, "nothing overwritten");

    let mut foreign = segment(3);
    foreign[24..32].copy_from_slice(&42u64.to_le_bytes());
    let refused = setup.push(&name(2), &foreign, &["--cluster", &SYSTEM_IDENTIFIER.to_string()]);
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("system identifier 42"), "{}", stderr(&refused));
}

#[test]
fn encrypted_archives_need_the_identity_to_fetch_but_not_to_verify() {
    let setup = Setup::new();
    let keygen = setup.backstop(&["keygen"]);
    let key_text = String::from_utf8(keygen.stdout).unwrap();
    let recipient = key_text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_string();
    let identity_file = setup.path("identity.txt");
    std::fs::write(&identity_file, &key_text).unwrap();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &["--encryption-recipients", &recipient])), 0);

    let without = setup.backstop(&["wal", "fetch", &name(1), "pg_wal/RECOVERYXLOG"]);
    assert_eq!(code(&without), 255);
    assert!(stderr(&without).contains("no age identity"), "{}", stderr(&without));
    let with = setup.backstop(&[
        "wal",
        "fetch",
        &name(1),
        "pg_wal/RECOVERYXLOG",
        "--identity-file",
        identity_file.to_str().unwrap(),
    ]);
    assert_eq!(code(&with), 0, "{}", stderr(&with));
    assert!(std::fs::read(setup.path("pgdata/pg_wal/RECOVERYXLOG")).unwrap() == segment(1));

    let verify = setup.backstop(&["wal", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["verified_stored_bytes_only"], 1);
}

#[test]
fn verify_and_list_report_gaps_and_damage() {
    let setup = Setup::new();
    for n in [1, 2, 5] {
        assert_eq!(code(&setup.push(&name(n), &segment(n as u8), &[])), 0);
    }
    let list = setup.backstop(&["wal", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed["files"].as_array().unwrap().len(), 3);
    assert_eq!(listed["gaps"][0]["first_missing"], name(3));
    assert_eq!(listed["gaps"][0]["count"], 2);

    let clean = setup.backstop(&["wal", "verify", "--json"]);
    assert_eq!(code(&clean), 1, "a gap is a problem");
    let object = setup.object(&name(2));
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let damaged = setup.backstop(&["wal", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&damaged.stdout).unwrap();
    assert_eq!(code(&damaged), 1);
    assert_eq!(report["failures"][0]["name"], name(2), "{report}");
    assert_eq!(report["verified_contents"], 2);
}

#[test]
fn the_cluster_is_found_when_the_repository_holds_one_and_asked_for_otherwise() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0);
    assert_eq!(code(&setup.backstop(&["wal", "list"])), 0);
    std::fs::create_dir_all(setup.path("repo/other")).unwrap();
    let mut other = segment(1);
    other[24..32].copy_from_slice(&99u64.to_le_bytes());
    assert_eq!(code(&setup.push(&name(1), &other, &["--cluster", "other"])), 0);
    let ambiguous = setup.backstop(&["wal", "list"]);
    assert_ne!(code(&ambiguous), 0);
    assert!(stderr(&ambiguous).contains("several clusters"), "{}", stderr(&ambiguous));
}

/// `backstop` run from the data directory against another repository location.
fn backstop_at(setup: &Setup, repository: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .current_dir(setup.path("pgdata"))
        .env("BACKSTOP_REPOSITORY", repository)
        .env("BACKSTOP_DATA_DIR", setup.path("pgdata"))
        .env("BACKSTOP_TRUSTED_KEYS", &setup.key)
        .env("AWS_ACCESS_KEY_ID", "backstop-test")
        .env("AWS_SECRET_ACCESS_KEY", "backstop-test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("BACKSTOP_CLUSTER")
        .env_remove("BACKSTOP_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn fetch_never_says_not_archived_for_a_repository_it_cannot_see() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0);
    let cluster = SYSTEM_IDENTIFIER.to_string();
    let visible = setup.backstop(&["wal", "fetch", &name(9), "pg_wal/RECOVERYXLOG", "--cluster", &cluster]);
    assert_eq!(code(&visible), 1, "the namespace is there and the file is not: {}", stderr(&visible));

    let mistyped = format!("file://{}", setup.path("repo-typo").display());
    let unmounted = format!("file://{}", setup.path("not-mounted/backups").display());
    for repository in [&mistyped, &unmounted] {
        for file in [name(9), name(1)] {
            let fetched =
                backstop_at(&setup, repository, &["wal", "fetch", &file, "pg_wal/RECOVERYXLOG", "--cluster", &cluster]);
            assert_eq!(code(&fetched), 255, "{repository}: {}", stderr(&fetched));
            assert!(stderr(&fetched).contains("cluster.json does not exist"), "{}", stderr(&fetched));
        }
    }
    let wrong_cluster =
        setup.backstop(&["wal", "fetch", &name(9), "pg_wal/RECOVERYXLOG", "--cluster", "7400000000000000002"]);
    assert_eq!(code(&wrong_cluster), 255, "{}", stderr(&wrong_cluster));
    assert!(
        stderr(&wrong_cluster).contains("7400000000000000002"),
        "the namespace is named: {}",
        stderr(&wrong_cluster)
    );
    // Not a transient error: a standby stops too rather than waiting forever on the wrong place.
    std::fs::write(setup.path("pgdata/standby.signal"), "").unwrap();
    let standby =
        backstop_at(&setup, &mistyped, &["wal", "fetch", &name(9), "pg_wal/RECOVERYXLOG", "--cluster", &cluster]);
    assert_eq!(code(&standby), 255, "{}", stderr(&standby));
    assert!(!setup.path("pgdata/pg_wal/RECOVERYXLOG").exists());
}

#[test]
fn a_standby_retries_transient_errors_and_stops_on_damage() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0);
    let cluster = SYSTEM_IDENTIFIER.to_string();
    // Nothing listens on the discard port: a store that is down for now.
    let down = ["--s3-endpoint", "http://127.0.0.1:9", "--s3-force-path-style", "true", "--cluster", &cluster];
    let fetch_down = |extra: &[&str]| {
        let mut args = vec!["wal", "fetch", "000000010000000000000001", "pg_wal/RECOVERYXLOG"];
        args.extend_from_slice(&down);
        args.extend_from_slice(extra);
        backstop_at(&setup, "s3://backups/prod", &args)
    };
    let primary = fetch_down(&[]);
    assert_eq!(code(&primary), 255, "recovery stops rather than ending early: {}", stderr(&primary));
    let flagged = fetch_down(&["--standby"]);
    assert_eq!(code(&flagged), 1, "{}", stderr(&flagged));
    assert!(stderr(&flagged).contains("will retry"), "{}", stderr(&flagged));
    std::fs::write(setup.path("pgdata/standby.signal"), "").unwrap();
    let standby = fetch_down(&[]);
    assert_eq!(code(&standby), 1, "standby.signal makes it a standby: {}", stderr(&standby));

    // Corruption is never transient: the standby stops instead of replaying damage or looping.
    let object = setup.object(&name(1));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let corrupt = setup.backstop(&["wal", "fetch", &name(1), "pg_wal/RECOVERYXLOG", "--cluster", &cluster]);
    assert_eq!(code(&corrupt), 255, "{}", stderr(&corrupt));
}

#[test]
fn push_without_cluster_takes_the_namespace_from_the_data_directory_never_a_guess() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0, "the repository holds exactly one cluster");
    let history = "00000002.history";
    let text = b"1\t0/3000000\tno recovery target specified\n";

    // Outside a data directory nothing tells whose timeline history this is.
    let refused = setup.push(history, text, &[]);
    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("pass --cluster"), "{}", stderr(&refused));
    assert!(
        !setup.path(&format!("repo/{SYSTEM_IDENTIFIER}/wal/{history}")).exists(),
        "not written into the only cluster"
    );

    // From pg_wal with the data directory's pg_control: that cluster's namespace.
    let control = |system_identifier: u64| {
        let mut bytes = vec![0u8; 8192];
        bytes[0..8].copy_from_slice(&system_identifier.to_le_bytes());
        bytes[8..12].copy_from_slice(&1300u32.to_le_bytes());
        bytes
    };
    std::fs::create_dir_all(setup.path("pgdata/global")).unwrap();
    std::fs::write(setup.path("pgdata/global/pg_control"), control(SYSTEM_IDENTIFIER)).unwrap();
    std::fs::write(setup.path(&format!("pgdata/pg_wal/{history}")), text).unwrap();
    let pushed = setup.backstop(&["wal", "push", &format!("pg_wal/{history}")]);
    assert_eq!(code(&pushed), 0, "{}", stderr(&pushed));
    assert!(setup.path(&format!("repo/{SYSTEM_IDENTIFIER}/wal/{history}")).is_file());

    // Another cluster's data directory never writes into this one's namespace.
    std::fs::write(setup.path("pgdata/global/pg_control"), control(99)).unwrap();
    std::fs::write(setup.path("pgdata/pg_wal/00000003.history"), text).unwrap();
    let foreign =
        setup.backstop(&["wal", "push", "pg_wal/00000003.history", "--cluster", &SYSTEM_IDENTIFIER.to_string()]);
    assert_eq!(code(&foreign), 1, "{}", stderr(&foreign));
    assert!(stderr(&foreign).contains("belongs to another cluster"), "{}", stderr(&foreign));
    assert!(!setup.path(&format!("repo/{SYSTEM_IDENTIFIER}/wal/00000003.history")).exists());

    // A damaged control file is an error, not a namespace.
    std::fs::write(setup.path("pgdata/global/pg_control"), b"not a control file").unwrap();
    let damaged = setup.backstop(&["wal", "push", "pg_wal/00000003.history"]);
    assert_eq!(code(&damaged), 1, "{}", stderr(&damaged));
    assert!(stderr(&damaged).contains("pg_control"), "{}", stderr(&damaged));
}

#[test]
fn a_corrupt_cluster_file_is_an_error_not_system_identifier_zero() {
    let setup = Setup::new();
    let cluster_file = setup.path("repo/ns/cluster.json");
    std::fs::create_dir_all(cluster_file.parent().unwrap()).unwrap();
    let json = br#"{"format_version":1,"cluster":"ns","system_identifier":"garbage","pg_version_num":150000,"created_at_unix":0,"created_by":"x"}"#;
    // Signed by this cluster's own key: damaged metadata that is authentic is still refused.
    let sign = backstop_core::codec::SignWith {
        key: backstop_core::auth::load_signing_key(&setup.path("pgdata")).unwrap().unwrap(),
        object_key: "ns/cluster.json".into(),
    };
    let (encoded, _) =
        backstop_core::codec::encode_to_vec(&backstop_core::codec::CodecSettings::plain(), json, Some(&sign)).unwrap();
    std::fs::write(&cluster_file, encoded).unwrap();
    let pushed = setup.push(&name(1), &segment(1), &["--cluster", "ns"]);
    assert_eq!(code(&pushed), 1, "{}", stderr(&pushed));
    assert!(stderr(&pushed).contains("is corrupt") && stderr(&pushed).contains("garbage"), "{}", stderr(&pushed));
    assert!(!setup.path("repo/ns/wal").exists(), "nothing archived");
}

#[test]
fn fetch_from_a_missing_bucket_or_prefix_stops_recovery() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(endpoint) = var("BACKSTOP_TEST_S3_ENDPOINT") else {
        assert_eq!(var("BACKSTOP_SKIP_S3").as_deref(), Some("1"), "S3 tests need Garage (scripts/garage.sh start)");
        return;
    };
    let bucket = var("BACKSTOP_TEST_S3_BUCKET").unwrap_or_else(|| "backstop-test".into());
    let setup = Setup::new();
    let fetch = |repository: &str| {
        Command::new(env!("CARGO_BIN_EXE_backstop"))
            .args(["wal", "fetch", &name(1), "pg_wal/RECOVERYXLOG", "--cluster", &SYSTEM_IDENTIFIER.to_string()])
            .args(["--s3-endpoint", &endpoint, "--s3-force-path-style", "true"])
            .args(["--s3-region", &var("BACKSTOP_TEST_S3_REGION").unwrap_or_else(|| "garage".into())])
            .current_dir(setup.path("pgdata"))
            .env("BACKSTOP_REPOSITORY", repository)
            .env("AWS_ACCESS_KEY_ID", var("BACKSTOP_TEST_S3_ACCESS_KEY_ID").unwrap())
            .env("AWS_SECRET_ACCESS_KEY", var("BACKSTOP_TEST_S3_SECRET_ACCESS_KEY").unwrap())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("BACKSTOP_CLUSTER")
            .env_remove("BACKSTOP_CONFIG")
            .output()
            .unwrap()
    };
    let prefix = format!("s3://{bucket}/tests/never-written-{:016x}", std::process::id());
    for repository in ["s3://backstop-no-such-bucket/prod".to_string(), prefix] {
        let fetched = fetch(&repository);
        assert_eq!(code(&fetched), 255, "{repository}: {}", stderr(&fetched));
    }
}

/// A segment in the archive that no trusted key signed (written with another cluster's key, or
/// a signed one copied under another name) is never handed to PostgreSQL, and fetch says "stop"
/// (255), not "not archived" (1), which would end recovery early and quietly.
#[test]
fn fetch_refuses_forged_and_swapped_segments_and_stops_recovery() {
    let setup = Setup::new();
    assert_eq!(code(&setup.push(&name(1), &segment(1), &[])), 0);
    assert_eq!(code(&setup.push(&name(2), &segment(2), &[])), 0);

    // Another key writes a perfectly formed segment 3 straight into our namespace.
    let sign = backstop_core::codec::SignWith {
        key: backstop_core::auth::SigningKey::generate(),
        object_key: format!("{SYSTEM_IDENTIFIER}/wal/{}/{}", &name(3)[..16], name(3)),
    };
    let (forged, _) =
        backstop_core::codec::encode_to_vec(&backstop_core::codec::CodecSettings::plain(), &segment(3), Some(&sign))
            .unwrap();
    std::fs::write(setup.object(&name(3)), forged).unwrap();
    // Segment 2's stored bytes copied over segment 4's name.
    std::fs::create_dir_all(setup.object(&name(4)).parent().unwrap()).unwrap();
    std::fs::copy(setup.object(&name(2)), setup.object(&name(4))).unwrap();

    let cluster = SYSTEM_IDENTIFIER.to_string();
    for n in [3, 4] {
        let destination = setup.path(&format!("pgdata/pg_wal/RECOVERY{n}"));
        let fetched = setup.backstop(&[
            "wal",
            "fetch",
            &name(n),
            destination.to_str().unwrap(),
            "--cluster",
            &cluster,
            "--prefetch",
            "0",
        ]);
        assert_eq!(code(&fetched), 255, "segment {n}: {}", stderr(&fetched));
        assert!(stderr(&fetched).contains("is not authenticated"), "segment {n}: {}", stderr(&fetched));
        assert!(!destination.exists(), "segment {n}: nothing was handed to PostgreSQL");
    }
    // The genuine ones still fetch; without a trusted key nothing is read at all.
    let genuine = setup.path("pgdata/pg_wal/RECOVERY1");
    let fetched = setup.backstop(&["wal", "fetch", &name(1), genuine.to_str().unwrap(), "--cluster", &cluster]);
    assert_eq!(code(&fetched), 0, "{}", stderr(&fetched));
    assert_eq!(std::fs::read(&genuine).unwrap(), segment(1));
    let untrusting = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["wal", "fetch", &name(1), genuine.to_str().unwrap(), "--cluster", &cluster])
        .env("BACKSTOP_REPOSITORY", format!("file://{}", setup.path("repo").display()))
        .env_remove("BACKSTOP_TRUSTED_KEYS")
        .env_remove("BACKSTOP_DATA_DIR")
        .env_remove("PGDATA")
        .env_remove("BACKSTOP_CONFIG")
        .output()
        .unwrap();
    assert_eq!(code(&untrusting), 255, "{}", stderr(&untrusting));
    assert!(stderr(&untrusting).contains("--trusted-key"), "{}", stderr(&untrusting));
}
