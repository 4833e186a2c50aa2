//! Every `backstop.*` setting, with typed getters and check hooks that reject a bad value with a
//! message naming the setting and the accepted form. Secret-bearing settings are superuser-only,
//! hidden from SHOW ALL and pg_settings, and SHOW prints a mask instead of the value.

use std::ffi::{c_char, c_void, CStr, CString};

use backstop_core::codec::{self, CodecSettings, Compression};
use backstop_core::settings::{self as described, About, BoolSetting, IntSetting, TextSetting};
use backstop_core::store::S3Options;
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
static COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(described::COMPRESSION_LEVEL.default);
static ENCRYPTION_RECIPIENTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_FORCE_PATH_STYLE: GucSetting<bool> = GucSetting::<bool>::new(described::S3_FORCE_PATH_STYLE.default);
static S3_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(described::S3_MAX_ATTEMPTS.default);
static ARCHIVE_LOOKAHEAD: GucSetting<i32> = GucSetting::<i32>::new(described::ARCHIVE_LOOKAHEAD.default);
static BASE_BACKUP_WAL_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(described::BASE_BACKUP_WAL_TIMEOUT.default);
static BASE_BACKUP_REREAD_DAYS: GucSetting<i32> = GucSetting::<i32>::new(described::BASE_BACKUP_REREAD_DAYS.default);
static BASE_BACKUP_PARALLEL: GucSetting<i32> = GucSetting::<i32>::new(described::BASE_BACKUP_PARALLEL.default);
static BASE_BACKUP_COMPRESSION_LEVEL: GucSetting<i32> =
    GucSetting::<i32>::new(described::BASE_BACKUP_COMPRESSION_LEVEL.default);
static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(described::DATABASE.default);
static SCHEDULER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(described::SCHEDULER.default);
static BASE_BACKUP_WAL_SUMMARIES: GucSetting<bool> =
    GucSetting::<bool>::new(described::BASE_BACKUP_WAL_SUMMARIES.default);
static MISSED_RUN_GRACE: GucSetting<i32> = GucSetting::<i32>::new(described::MISSED_RUN_GRACE.default);
static JOB_RUNS_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(described::JOB_RUNS_RETENTION.default);
static MAX_BASE_BACKUP_AGE: GucSetting<i32> = GucSetting::<i32>::new(described::MAX_BASE_BACKUP_AGE.default);
static MAX_SNAPSHOT_AGE: GucSetting<i32> = GucSetting::<i32>::new(described::MAX_SNAPSHOT_AGE.default);
static MAX_LOGICAL_BACKUP_AGE: GucSetting<i32> = GucSetting::<i32>::new(described::MAX_LOGICAL_BACKUP_AGE.default);
static DRILL_DIRECTORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LOGICAL_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
#[cfg(feature = "test-hooks")]
static TEST_CLOCK: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
#[cfg(feature = "test-hooks")]
static TEST_BACKUP_PAUSE: GucSetting<i32> = GucSetting::<i32>::new(described::TEST_BACKUP_PAUSE.default);
#[cfg(feature = "test-hooks")]
static TEST_RECOVER_PAUSE: GucSetting<i32> = GucSetting::<i32>::new(described::TEST_RECOVER_PAUSE.default);
static ENCRYPTION_IDENTITY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SECRET_ACCESS_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SESSION_TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

const SECRET_FLAGS: GucFlags = GucFlags::SUPERUSER_ONLY.union(GucFlags::NO_SHOW_ALL);

pub fn init() {
    // Each setting as backstop_core::settings describes it (name, texts, type, bounds, default,
    // context, visibility): the CLI checks its flags with the same descriptions.
    text(&described::REPOSITORY, &REPOSITORY, Some(check_repository), None);
    text(&described::CLUSTER_NAME, &CLUSTER_NAME, Some(check_cluster_name), None);
    text(&described::RESTORED_FROM, &RESTORED_FROM, None, None);
    text(&described::TRUSTED_KEYS, &TRUSTED_KEYS, Some(check_trusted_keys), None);
    text(&described::ENCRYPTION_RECIPIENTS, &ENCRYPTION_RECIPIENTS, Some(check_recipients), None);
    text(&described::S3_ENDPOINT, &S3_ENDPOINT, Some(check_endpoint), None);
    text(&described::ENCRYPTION_IDENTITY_FILE, &ENCRYPTION_IDENTITY_FILE, None, None);
    let about = &described::COMPRESSION.about;
    GucRegistry::define_enum_guc(
        about.name,
        about.description,
        about.hint,
        &COMPRESSION,
        context(about),
        flags(about, false),
    );
    int(&described::COMPRESSION_LEVEL, &COMPRESSION_LEVEL);
    text(&described::S3_REGION, &S3_REGION, None, None);
    boolean(&described::S3_FORCE_PATH_STYLE, &S3_FORCE_PATH_STYLE);
    text(&described::S3_CA_FILE, &S3_CA_FILE, None, None);
    int(&described::ARCHIVE_LOOKAHEAD, &ARCHIVE_LOOKAHEAD);
    int(&described::BASE_BACKUP_WAL_TIMEOUT, &BASE_BACKUP_WAL_TIMEOUT);
    int(&described::BASE_BACKUP_REREAD_DAYS, &BASE_BACKUP_REREAD_DAYS);
    int(&described::BASE_BACKUP_COMPRESSION_LEVEL, &BASE_BACKUP_COMPRESSION_LEVEL);
    int(&described::BASE_BACKUP_PARALLEL, &BASE_BACKUP_PARALLEL);
    text(&described::DATABASE, &DATABASE, None, None);
    boolean(&described::SCHEDULER, &SCHEDULER_ENABLED);
    boolean(&described::BASE_BACKUP_WAL_SUMMARIES, &BASE_BACKUP_WAL_SUMMARIES);
    int(&described::MISSED_RUN_GRACE, &MISSED_RUN_GRACE);
    int(&described::JOB_RUNS_RETENTION, &JOB_RUNS_RETENTION_DAYS);
    int(&described::MAX_BASE_BACKUP_AGE, &MAX_BASE_BACKUP_AGE);
    int(&described::MAX_SNAPSHOT_AGE, &MAX_SNAPSHOT_AGE);
    int(&described::MAX_LOGICAL_BACKUP_AGE, &MAX_LOGICAL_BACKUP_AGE);
    text(&described::DRILL_DIRECTORY, &DRILL_DIRECTORY, None, None);
    text(&described::LOGICAL_ROLE, &LOGICAL_ROLE, None, None);
    #[cfg(feature = "test-hooks")]
    text(&described::TEST_CLOCK, &TEST_CLOCK, None, None);
    #[cfg(feature = "test-hooks")]
    int(&described::TEST_BACKUP_PAUSE, &TEST_BACKUP_PAUSE);
    #[cfg(feature = "test-hooks")]
    int(&described::TEST_RECOVER_PAUSE, &TEST_RECOVER_PAUSE);
    int(&described::S3_MAX_ATTEMPTS, &S3_MAX_ATTEMPTS);
    for (setting, value, show) in [
        (&described::S3_ACCESS_KEY_ID, &S3_ACCESS_KEY_ID, show_access_key_id as ShowHook),
        (&described::S3_SECRET_ACCESS_KEY, &S3_SECRET_ACCESS_KEY, show_secret_access_key),
        (&described::S3_SESSION_TOKEN, &S3_SESSION_TOKEN, show_session_token),
    ] {
        text(setting, value, None, Some(show));
    }
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"backstop".as_ptr());
    }
}

type CheckHook = unsafe extern "C-unwind" fn(*mut *mut c_char, *mut *mut c_void, pg_sys::GucSource::Type) -> bool;
type ShowHook = unsafe extern "C-unwind" fn() -> *const c_char;

/// Superuser-settable (SUSET: postgresql.conf, ALTER SYSTEM, or SET by a superuser), or only
/// on reload (SIGHUP) for what the scheduler reads.
fn context(about: &About) -> GucContext {
    if about.reload {
        GucContext::Sighup
    } else {
        GucContext::Suset
    }
}

fn flags(about: &About, seconds: bool) -> GucFlags {
    let mut flags = if about.hidden { SECRET_FLAGS } else { GucFlags::default() };
    if seconds {
        flags |= GucFlags::UNIT_S;
    }
    flags
}

fn text(
    setting: &'static TextSetting,
    value: &'static GucSetting<Option<CString>>,
    check: Option<CheckHook>,
    show: Option<ShowHook>,
) {
    let about = &setting.about;
    // SAFETY: the hooks are PostgreSQL-compatible functions defined below, guarded by pg_guard.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            about.name,
            about.description,
            about.hint,
            value,
            context(about),
            flags(about, false),
            check,
            None,
            show,
        );
    }
}

fn int(setting: &'static IntSetting, value: &'static GucSetting<i32>) {
    let about = &setting.about;
    GucRegistry::define_int_guc(
        about.name,
        about.description,
        about.hint,
        value,
        setting.min,
        setting.max,
        context(about),
        flags(about, setting.seconds),
    );
}

fn boolean(setting: &'static BoolSetting, value: &'static GucSetting<bool>) {
    let about = &setting.about;
    GucRegistry::define_bool_guc(about.name, about.description, about.hint, value, context(about), flags(about, false));
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

/// How long a base backup job pauses before it copies files: always 0 outside test builds.
pub fn test_backup_pause() -> std::time::Duration {
    #[cfg(feature = "test-hooks")]
    return std::time::Duration::from_millis(TEST_BACKUP_PAUSE.get().max(0) as u64);
    #[cfg(not(feature = "test-hooks"))]
    std::time::Duration::ZERO
}

/// How long a recover job pauses once its throwaway server runs: always 0 outside test builds.
pub fn test_recover_pause() -> std::time::Duration {
    #[cfg(feature = "test-hooks")]
    return std::time::Duration::from_millis(TEST_RECOVER_PAUSE.get().max(0) as u64);
    #[cfg(not(feature = "test-hooks"))]
    std::time::Duration::ZERO
}

/// The scheduler's clock: real time (test builds: see below).
#[cfg(not(feature = "test-hooks"))]
pub fn scheduler_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// The scheduler's clock: real time, or with `backstop.test_clock = 'SPEED@SINCE[@START]'` a clock
/// that reads START (default SINCE) at real unix second SINCE and runs SPEED times faster from then.
/// Only in test builds (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
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

pub fn base_backup_wal_summaries() -> bool {
    BASE_BACKUP_WAL_SUMMARIES.get()
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

/// Shared body of the string check hooks: NULL or empty is always accepted (unset); otherwise
/// the setting's own check (backstop_core::settings), whose reason becomes the error's detail.
unsafe fn check_string(newval: *mut *mut c_char, setting: &TextSetting) -> bool {
    if newval.is_null() || (*newval).is_null() {
        return true;
    }
    let text = CStr::from_ptr(*newval).to_string_lossy().into_owned();
    if text.trim().is_empty() {
        return true;
    }
    match setting.check.map_or(Ok(()), |check| check(text.trim())) {
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
    check_string(newval, &described::REPOSITORY)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_cluster_name(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, &described::CLUSTER_NAME)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_trusted_keys(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, &described::TRUSTED_KEYS)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_recipients(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, &described::ENCRYPTION_RECIPIENTS)
}

#[pg_guard]
unsafe extern "C-unwind" fn check_endpoint(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, &described::S3_ENDPOINT)
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
