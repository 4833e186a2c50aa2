//! Every `backstop.*` setting, with typed getters and check hooks that reject a bad value with a
//! message naming the setting and the accepted form. Secret-bearing settings are superuser-only,
//! hidden from SHOW ALL and pg_settings, and SHOW prints a mask instead of the value.

use std::ffi::{c_char, c_void, CStr, CString};

use backstop_core::codec::{self, CodecSettings, Compression};
use backstop_core::store::S3Options;
use backstop_core::Location;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use pgrx::PostgresGucEnum;

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum CompressionSetting {
    #[name = c"none"]
    None,
    #[name = c"zstd"]
    Zstd,
}

static REPOSITORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CLUSTER_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static RESTORED_FROM: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TRUSTED_KEYS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static COMPRESSION: GucSetting<CompressionSetting> = GucSetting::<CompressionSetting>::new(CompressionSetting::Zstd);
static COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(Compression::DEFAULT_ZSTD_LEVEL);
static ENCRYPTION_RECIPIENTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_FORCE_PATH_STYLE: GucSetting<bool> = GucSetting::<bool>::new(false);
static S3_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);
static ARCHIVE_LOOKAHEAD: GucSetting<i32> = GucSetting::<i32>::new(4);
static BASE_BACKUP_WAL_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(600);
static BASE_BACKUP_REREAD_DAYS: GucSetting<i32> = GucSetting::<i32>::new(7);
static BASE_BACKUP_PARALLEL: GucSetting<i32> = GucSetting::<i32>::new(2);
static BASE_BACKUP_COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(1);
static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
static SCHEDULER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static MISSED_RUN_GRACE: GucSetting<i32> = GucSetting::<i32>::new(3600);
static JOB_RUNS_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(90);
static MAX_BASE_BACKUP_AGE: GucSetting<i32> = GucSetting::<i32>::new(8 * 24 * 3600);
static MAX_SNAPSHOT_AGE: GucSetting<i32> = GucSetting::<i32>::new(2 * 24 * 3600);
static MAX_LOGICAL_BACKUP_AGE: GucSetting<i32> = GucSetting::<i32>::new(2 * 24 * 3600);
static DRILL_DIRECTORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LOGICAL_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TEST_CLOCK: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ENCRYPTION_IDENTITY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SECRET_ACCESS_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SESSION_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

const SECRET_FLAGS: GucFlags = GucFlags::SUPERUSER_ONLY.union(GucFlags::NO_SHOW_ALL);

pub fn init() {
    // Superuser-settable (SUSET): postgresql.conf, ALTER SYSTEM, or SET by a superuser in a session.
    let context = || GucContext::Suset;
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"backstop.repository",
            c"Where backups are stored: file:///absolute/path or s3://bucket/prefix.",
            c"The repository holds WAL, snapshots and base backups under a namespace per cluster.",
            &REPOSITORY,
            context(),
            GucFlags::default(),
            Some(check_repository),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"backstop.cluster_name",
            c"This cluster's namespace in the repository; empty means the database system identifier.",
            c"",
            &CLUSTER_NAME,
            context(),
            GucFlags::default(),
            Some(check_cluster_name),
            None,
            None,
        );
        GucRegistry::define_string_guc(
            c"backstop.restored_from",
            c"Set by backstop restore on a restored copy: what it was restored from.",
            c"While set (and backstop.cluster_name is not), nothing is written into or deleted from the repository namespace the copy shares with the cluster it was restored from. Reset it when the copy replaces the primary.",
            &RESTORED_FROM,
            context(),
            GucFlags::default(),
        );
        GucRegistry::define_string_guc_with_hooks(
            c"backstop.trusted_keys",
            c"Public keys (ed25519:<hex>, comma separated) whose signatures are accepted besides this cluster's own.",
            c"The repository trusts only what this cluster signed; add the key of the cluster a restore came from, or the previous key after a rotation. Public keys: not secret.",
            &TRUSTED_KEYS,
            context(),
            GucFlags::default(),
            Some(check_trusted_keys),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"backstop.encryption_recipients",
            c"age X25519 public keys (age1...) that objects are encrypted to; empty stores objects unencrypted.",
            c"The server holds only public keys; restoring needs the matching identity (secret key).",
            &ENCRYPTION_RECIPIENTS,
            context(),
            GucFlags::default(),
            Some(check_recipients),
            None,
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            c"backstop.s3_endpoint",
            c"S3 endpoint URL (http:// or https://); empty means AWS.",
            c"",
            &S3_ENDPOINT,
            context(),
            GucFlags::default(),
            Some(check_endpoint),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"backstop.encryption_identity_file",
        c"File with the age identities (AGE-SECRET-KEY-1...) that decrypt encrypted snapshots on restore.",
        c"Read by the server's operating system user when a restore needs it; keep it mode 0600. Unset, the server cannot read encrypted objects back.",
        &ENCRYPTION_IDENTITY_FILE,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"backstop.compression",
        c"Compression of stored objects: zstd or none.",
        c"",
        &COMPRESSION,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.compression_level",
        c"zstd compression level (1 fastest to 19 smallest).",
        c"",
        &COMPRESSION_LEVEL,
        1,
        19,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"backstop.s3_region",
        c"S3 region; empty means us-east-1.",
        c"",
        &S3_REGION,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"backstop.s3_force_path_style",
        c"Address buckets as endpoint/bucket instead of bucket.endpoint (needed by most self-hosted stores).",
        c"",
        &S3_FORCE_PATH_STYLE,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"backstop.s3_ca_file",
        c"PEM file of certificate authorities to trust for the S3 endpoint, besides the system's.",
        c"For a store whose certificate a private CA signed (MinIO, Ceph, a TLS proxy). Read by the server's operating system user.",
        &S3_CA_FILE,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.archive_lookahead",
        c"WAL files the archive module uploads ahead of the archiver's request, in parallel (0 = none).",
        c"Each is acknowledged only when the archiver asks for it and its upload is durable. Costs up to two segments of memory each.",
        &ARCHIVE_LOOKAHEAD,
        0,
        64,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.base_backup_wal_timeout",
        c"Seconds a base backup waits for the WAL it needs (up to its stop LSN) to reach the repository.",
        c"A backup whose WAL is not archived in time fails and publishes no manifest.",
        &BASE_BACKUP_WAL_TIMEOUT,
        1,
        86_400,
        context(),
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"backstop.base_backup_reread_days",
        c"An incremental base backup reads a file again, unchanged metadata or not, once its last read is this old.",
        c"The periodic full read that catches a file changed behind an unchanged size, mtime and inode. 0 reads every file every time.",
        &BASE_BACKUP_REREAD_DAYS,
        0,
        3650,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.base_backup_compression_level",
        c"zstd level of base backup packs (when backstop.compression = zstd).",
        c"Level 1 by default: on relation pages it is much faster than 3 and compresses about as well (see the README's benchmark).",
        &BASE_BACKUP_COMPRESSION_LEVEL,
        1,
        19,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.base_backup_parallel",
        c"Packs a base backup uploads at once.",
        c"Each holds up to 16 MiB of memory.",
        &BASE_BACKUP_PARALLEL,
        1,
        32,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"backstop.database",
        c"The database the scheduler connects to: the one where CREATE EXTENSION backstop ran.",
        c"On reload the scheduler reconnects to the new database.",
        &DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"backstop.scheduler",
        c"Whether the scheduler runs backstop.schedules (off pauses every schedule; runs due meanwhile are missed).",
        c"",
        &SCHEDULER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.missed_run_grace",
        c"A run that fell due while the server was down still runs at start-up if it is at most this late; older ones are recorded as missed.",
        c"",
        &MISSED_RUN_GRACE,
        0,
        7 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"backstop.job_runs_retention",
        c"Days backstop.job_runs keeps finished runs (the scheduler prunes older ones; 0 keeps everything).",
        c"",
        &JOB_RUNS_RETENTION_DAYS,
        0,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"backstop.max_base_backup_age",
        c"doctor() reports degraded when the newest valid base backup is older than this.",
        c"",
        &MAX_BASE_BACKUP_AGE,
        60,
        365 * 86_400,
        context(),
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"backstop.max_snapshot_age",
        c"doctor() reports degraded when a scheduled table's newest snapshot is older than this.",
        c"",
        &MAX_SNAPSHOT_AGE,
        60,
        365 * 86_400,
        context(),
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"backstop.max_logical_backup_age",
        c"doctor() reports degraded when a scheduled database's newest logical backup is older than this.",
        c"",
        &MAX_LOGICAL_BACKUP_AGE,
        60,
        365 * 86_400,
        context(),
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"backstop.drill_directory",
        c"Where the pitr drill restores its throwaway server (empty: the server's temporary directory, usually /tmp).",
        c"It needs room for the whole cluster and the WAL it replays; the drill refuses to start when the file system is short.",
        &DRILL_DIRECTORY,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"backstop.logical_role",
        c"The role pg_dump connects as for logical backups, over the server's Unix socket (empty: the bootstrap superuser).",
        c"pg_hba.conf must let the server's OS user connect as it locally (peer or trust), or its ~/.pgpass must name it; it must read every object of the database (e.g. pg_read_all_data).",
        &LOGICAL_ROLE,
        context(),
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"backstop.test_clock",
        c"For tests only: 'SPEED@SINCE[@START]' makes the scheduler's clock read START at unix second SINCE and run SPEED times faster.",
        c"Lets a test watch a week of schedules in minutes. Leave empty in production.",
        &TEST_CLOCK,
        GucContext::Sighup,
        GucFlags::NO_SHOW_ALL | GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"backstop.s3_max_attempts",
        c"Attempts per S3 request, with exponential backoff between them.",
        c"",
        &S3_MAX_ATTEMPTS,
        1,
        20,
        context(),
        GucFlags::default(),
    );
    unsafe {
        for (name, description, setting, show) in [
            (
                c"backstop.s3_access_key_id",
                c"S3 access key id; empty uses the server OS user's AWS credential chain.",
                &S3_ACCESS_KEY_ID,
                show_access_key_id as unsafe extern "C-unwind" fn() -> *const c_char,
            ),
            (
                c"backstop.s3_secret_access_key",
                c"S3 secret access key (superuser-only, never shown).",
                &S3_SECRET_ACCESS_KEY,
                show_secret_access_key,
            ),
            (
                c"backstop.s3_session_token",
                c"S3 session token (superuser-only, never shown).",
                &S3_SESSION_TOKEN,
                show_session_token,
            ),
        ] {
            GucRegistry::define_string_guc_with_hooks(
                name,
                description,
                c"",
                setting,
                context(),
                SECRET_FLAGS,
                None,
                None,
                Some(show),
            );
        }
    }
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"backstop".as_ptr());
    }
}

fn string_setting(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting.get().map(|value| value.to_string_lossy().trim().to_string()).filter(|value| !value.is_empty())
}

/// The configured repository, or None when backstop.repository is unset.
pub fn repository() -> Option<String> {
    string_setting(&REPOSITORY)
}

pub fn cluster_name() -> Option<String> {
    string_setting(&CLUSTER_NAME)
}

/// backstop.restored_from: set on a copy `backstop restore` made (unless --as-primary).
pub fn restored_from() -> Option<String> {
    string_setting(&RESTORED_FROM)
}

/// backstop.trusted_keys, parsed (the check hook has refused anything that does not parse).
pub fn trusted_keys() -> Result<Vec<backstop_core::auth::PublicKey>, backstop_core::Error> {
    match string_setting(&TRUSTED_KEYS) {
        Some(text) => backstop_core::auth::PublicKey::parse_list(&text),
        None => Ok(Vec::new()),
    }
}

pub fn database() -> String {
    string_setting(&DATABASE).unwrap_or_else(|| "postgres".into())
}

pub fn drill_directory() -> std::path::PathBuf {
    string_setting(&DRILL_DIRECTORY).map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// `backstop.logical_role`, None when unset (the caller uses the bootstrap superuser).
pub fn logical_role() -> Option<String> {
    string_setting(&LOGICAL_ROLE)
}

pub fn scheduler_enabled() -> bool {
    SCHEDULER_ENABLED.get()
}

pub fn missed_run_grace() -> std::time::Duration {
    std::time::Duration::from_secs(MISSED_RUN_GRACE.get().max(0) as u64)
}

pub fn job_runs_retention_days() -> i32 {
    JOB_RUNS_RETENTION_DAYS.get().max(0)
}

pub fn max_base_backup_age() -> std::time::Duration {
    std::time::Duration::from_secs(MAX_BASE_BACKUP_AGE.get().max(60) as u64)
}

pub fn max_logical_backup_age() -> std::time::Duration {
    std::time::Duration::from_secs(MAX_LOGICAL_BACKUP_AGE.get().max(60) as u64)
}

pub fn max_snapshot_age() -> std::time::Duration {
    std::time::Duration::from_secs(MAX_SNAPSHOT_AGE.get().max(60) as u64)
}

/// The scheduler's clock: real time, or with `backstop.test_clock = 'SPEED@SINCE[@START]'` a clock
/// that reads START (default SINCE) at real unix second SINCE and runs SPEED times faster from then.
pub fn scheduler_now() -> std::time::SystemTime {
    let real = std::time::SystemTime::now();
    let Some((speed, since, start)) = string_setting(&TEST_CLOCK).and_then(|text| {
        let mut parts = text.split('@').map(|p| p.trim().parse::<f64>().ok());
        let speed = parts.next()??;
        let since = parts.next()??;
        let start = parts.next().unwrap_or(Some(since))?;
        Some((speed, since, start))
    }) else {
        return real;
    };
    let real_secs = backstop_core::backups::unix_seconds(real);
    let virtual_secs = start + (real_secs - since).max(0.0) * speed.clamp(1.0, 100_000.0);
    std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(virtual_secs.max(0.0))
}

pub fn base_backup_wal_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(BASE_BACKUP_WAL_TIMEOUT.get().max(1) as u64)
}

pub fn base_backup_reread_after() -> std::time::Duration {
    std::time::Duration::from_secs(BASE_BACKUP_REREAD_DAYS.get().max(0) as u64 * 86_400)
}

pub fn base_backup_parallel() -> usize {
    BASE_BACKUP_PARALLEL.get().max(1) as usize
}

pub fn archive_lookahead() -> usize {
    ARCHIVE_LOOKAHEAD.get().max(0) as usize
}

pub fn encryption_recipients() -> Option<String> {
    string_setting(&ENCRYPTION_RECIPIENTS)
}

/// The age identities from backstop.encryption_identity_file; none when it is unset.
pub fn encryption_identities() -> Result<Vec<codec::Identity>, backstop_core::Error> {
    match string_setting(&ENCRYPTION_IDENTITY_FILE) {
        None => Ok(Vec::new()),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| backstop_core::Error::io("read backstop.encryption_identity_file", &path, e))?;
            codec::parse_identities(&text)
        }
    }
}

pub fn codec_settings() -> Result<CodecSettings, backstop_core::Error> {
    let compression = match COMPRESSION.get() {
        CompressionSetting::None => Compression::None,
        CompressionSetting::Zstd => Compression::zstd(COMPRESSION_LEVEL.get())?,
    };
    let recipients = match encryption_recipients() {
        Some(text) => codec::parse_recipients(&text)?,
        None => Vec::new(),
    };
    Ok(CodecSettings::new(compression, recipients))
}

/// How base backup packs are written: the repository's codec with the base backup's zstd level.
pub fn base_backup_codec_settings() -> Result<CodecSettings, backstop_core::Error> {
    let mut settings = codec_settings()?;
    if let Compression::Zstd { .. } = settings.compression {
        settings.compression = Compression::zstd(BASE_BACKUP_COMPRESSION_LEVEL.get())?;
    }
    Ok(settings)
}

pub fn s3_options() -> S3Options {
    S3Options {
        endpoint: string_setting(&S3_ENDPOINT),
        region: string_setting(&S3_REGION),
        force_path_style: S3_FORCE_PATH_STYLE.get(),
        access_key_id: string_setting(&S3_ACCESS_KEY_ID),
        secret_access_key: string_setting(&S3_SECRET_ACCESS_KEY),
        session_token: string_setting(&S3_SESSION_TOKEN),
        max_attempts: S3_MAX_ATTEMPTS.get().max(1) as u32,
        ca_file: string_setting(&S3_CA_FILE).map(std::path::PathBuf::from),
        ..S3Options::default()
    }
}

/// Every setting that shapes where and how objects are written, as one string to notice changes
/// after a reload. Contains secrets: compare it, never print it.
pub fn fingerprint() -> String {
    let s3 = s3_options();
    format!(
        "{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}",
        repository(),
        cluster_name(),
        COMPRESSION.get(),
        COMPRESSION_LEVEL.get(),
        encryption_recipients(),
        s3.endpoint,
        s3.region,
        s3.force_path_style,
        s3.access_key_id,
        s3.secret_access_key,
        s3.session_token,
        s3.max_attempts,
        s3.ca_file,
        // A reload that changes what is trusted, or ends a restored copy's read-only mode, must
        // reach a cached repository handle (the archiver's) too.
        string_setting(&TRUSTED_KEYS),
        restored_from()
    )
}

// ---------------------------------------------------------------------------------------------
// Check and show hooks

/// Shared body of the string check hooks: NULL or empty is always accepted (unset).
unsafe fn check_string(newval: *mut *mut c_char, validate: impl Fn(&str) -> Result<(), String>) -> bool {
    if newval.is_null() || (*newval).is_null() {
        return true;
    }
    let text = CStr::from_ptr(*newval).to_string_lossy().into_owned();
    if text.trim().is_empty() {
        return true;
    }
    match validate(text.trim()) {
        Ok(()) => true,
        Err(reason) => {
            let detail = CString::new(reason.replace('\0', "")).expect("no NUL bytes");
            pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
            false
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_repository(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| text.parse::<Location>().map(|_| ()).map_err(|e| e.to_string()))
}

#[pg_guard]
unsafe extern "C-unwind" fn check_cluster_name(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| {
        let valid = text.len() <= 128
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !text.starts_with('.');
        if valid {
            Ok(())
        } else {
            Err("backstop.cluster_name takes up to 128 letters, digits, '-', '_' or '.', not starting with '.'".into())
        }
    })
}

#[pg_guard]
unsafe extern "C-unwind" fn check_trusted_keys(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| backstop_core::auth::PublicKey::parse_list(text).map(|_| ()).map_err(|e| e.to_string()))
}

#[pg_guard]
unsafe extern "C-unwind" fn check_recipients(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| codec::parse_recipients(text).map(|_| ()).map_err(|e| e.to_string()))
}

#[pg_guard]
unsafe extern "C-unwind" fn check_endpoint(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| {
        let has_host = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if has_host {
            Ok(())
        } else {
            Err("backstop.s3_endpoint must be a URL starting with http:// or https://, e.g. https://s3.example.com:9000".into())
        }
    })
}

fn mask(setting: &GucSetting<Option<CString>>) -> *const c_char {
    if string_setting(setting).is_some() {
        c"(hidden)".as_ptr()
    } else {
        c"".as_ptr()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn show_access_key_id() -> *const c_char {
    mask(&S3_ACCESS_KEY_ID)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_secret_access_key() -> *const c_char {
    mask(&S3_SECRET_ACCESS_KEY)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_session_token() -> *const c_char {
    mask(&S3_SESSION_TOKEN)
}
