//! The jobs a schedule (or an on-demand call) can run, with their arguments checked once, here:
//! `backstop.schedule()` refuses an unknown job or bad args with the reason, and the worker runs
//! only a [`JobSpec`] that parsed. Unknown argument keys are refused too: a typo such as
//! `{"dayly": 14}` must not silently mean "keep nothing by day".

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::retention::Policy;
use crate::error::{Error, Result};

/// Declares the job kinds: the enum, [`ALL_KINDS`] and each kind's name, from one list, so a
/// new kind is one line here (and its job one line in the extension's `JOBS` registry). The
/// names are stored in `backstop.schedules` and `backstop.job_runs`: never rename one.
macro_rules! job_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every job kind, closed: a new one fails to compile wherever kinds are matched. What a
        /// kind does, who may run it and where is its job's to say (the extension's `Job` trait).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
        pub enum JobKind {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        /// Every kind, in the order they were introduced.
        pub const ALL_KINDS: &[JobKind] = &[$(JobKind::$variant,)*];

        impl JobKind {
            /// The name schedules and the job history use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(JobKind::$variant => $name,)*
                }
            }
        }
    };
}

job_kinds! {
    /// Table snapshots (`snapshot_table`) of named tables or a schema.
    Snapshot = "snapshot",
    /// A physical base backup.
    BaseBackup = "base_backup",
    /// Retention: what the policies no longer keep, and what only it needed.
    Expire = "expire",
    /// Drill: restore a table's newest snapshot into a scratch table, validate, drop.
    SnapshotRestore = "snapshot_restore",
    /// Drill: fetch the newest archived segments and a sample, check continuity.
    WalFetch = "wal_fetch",
    /// Drill: restore the newest base backup into a throwaway server and replay.
    Pitr = "pitr",
    /// pg_dump of one database into the repository, verified with pg_restore --list.
    LogicalBackup = "logical_backup",
    /// Drill: restore the newest logical backup into a scratch database and compare.
    LogicalRestore = "logical_restore",
    /// Repository verification: every manifest authenticated, a sample (or all) of the packs and
    /// WAL read back through every checksum; damaged packs recorded so no backup reuses them.
    Verify = "verify",
    /// The transactions that changed one table, read from the archived WAL (`table_history`).
    TableHistory = "table_history",
    /// Tables as they were at a recovery target, read from a throwaway server recovered there and
    /// loaded next to the originals (`recover(..., target_time => ...)`).
    TableRecover = "table_recover",
}

impl JobKind {
    pub fn parse(text: &str) -> Result<JobKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
            Error::InvalidInput(format!(
                "\"{}\" is not a backstop job; use one of {}",
                text.escape_debug(),
                names.join(", ")
            ))
        })
    }
}

/// A job's arguments, as a schedule or `run_job` gives them in JSON: parsed by [`parse_args`],
/// which refuses unknown keys (each struct denies them) and then calls [`JobArgs::check`].
pub trait JobArgs: serde::de::DeserializeOwned {
    /// What the types cannot say (a policy that keeps something, a share between 0 and 1).
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// The arguments of a `kind` job, checked: `null` means every default.
pub fn parse_args<A: JobArgs>(kind: JobKind, value: &Value) -> Result<A> {
    let value = if value.is_null() { Value::Object(Default::default()) } else { value.clone() };
    let args: A = serde_json::from_value(value)
        .map_err(|e| Error::InvalidInput(format!("the arguments of the {} job are not valid: {e}", kind.as_str())))?;
    args.check()?;
    Ok(args)
}

fn database_name(database: &Option<String>) -> Result<()> {
    if database.as_deref().is_some_and(|d| d.is_empty() || d.contains('\0')) {
        return Err(Error::InvalidInput("\"database\" must name a database".into()));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// Tables by name (resolved with the worker's search_path = pg_catalog, so schema-qualify).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Or every ordinary and partitioned table of one schema, as it is when the run starts.
    pub schema: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseBackupArgs {
    #[serde(default = "auto")]
    pub kind: String,
    #[serde(default = "yes")]
    pub fast: bool,
    /// Count every table's rows right after the backup, for the `pitr` drill to compare with
    /// (one scan of each table; turn off where that costs too much).
    #[serde(default = "yes")]
    pub count_rows: bool,
}

fn auto() -> String {
    "auto".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalBackupArgs {
    /// The database to dump (the one the job runs in by default).
    pub database: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalRestoreArgs {
    /// Whose newest logical backup to restore (the database the job runs in by default).
    pub database: Option<String>,
    /// A particular backup instead of the newest.
    pub backup_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableHistoryArgs {
    /// The table, schema-qualified (resolved by the caller); a dropped table by the name a base
    /// backup recorded.
    pub table: String,
    /// Unix seconds: list changes committed from then (a day before `until` by default).
    pub since: Option<f64>,
    /// Unix seconds: up to then (now by default).
    pub until: Option<f64>,
    /// The newest this many changes (100 by default).
    pub max_rows: Option<usize>,
    /// Up to this LSN too (exclusive): `recover()`'s fast path asks whether anything changed the
    /// table between a snapshot and an LSN target.
    #[serde(default)]
    pub until_lsn: Option<String>,
    /// More relation files the table is known to have had (a snapshot's).
    #[serde(default)]
    pub files: Vec<crate::wal::records::RelFile>,
}

impl JobArgs for TableHistoryArgs {
    fn check(&self) -> Result<()> {
        if self.table.is_empty() || self.table.contains('\0') {
            return Err(Error::InvalidInput("\"table\" must name a table".into()));
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since > until {
                return Err(Error::InvalidInput("\"since\" is after \"until\"".into()));
            }
        }
        if self.max_rows == Some(0) {
            return Err(Error::InvalidInput("\"max_rows\" must be at least 1".into()));
        }
        if let Some(lsn) = &self.until_lsn {
            crate::wal::Lsn::parse(lsn)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRecoverArgs {
    /// The tables, schema-qualified (resolved by the caller), read at one target so that they
    /// are consistent with each other.
    pub tables: Vec<String>,
    /// Where each one's rows go, schema-qualified; none of them may exist.
    pub recovered: Vec<String>,
    /// Unix seconds.
    pub target_time: Option<f64>,
    pub target_lsn: Option<String>,
    pub target_xid: Option<u64>,
    pub target_name: Option<String>,
    /// Whether the target itself is included (PostgreSQL's recovery_target_inclusive).
    #[serde(default = "yes")]
    pub inclusive: bool,
}

impl JobArgs for TableRecoverArgs {
    fn check(&self) -> Result<()> {
        let given = [
            self.target_time.is_some(),
            self.target_lsn.is_some(),
            self.target_xid.is_some(),
            self.target_name.is_some(),
        ];
        if given.iter().filter(|t| **t).count() != 1 {
            return Err(Error::InvalidInput(
                "give exactly one recovery target: target_time, target_lsn, target_xid or target_name".into(),
            ));
        }
        if self.tables.is_empty() || self.tables.len() != self.recovered.len() {
            return Err(Error::InvalidInput("name the tables to recover, each with where it goes".into()));
        }
        if self.tables.iter().chain(&self.recovered).any(|t| t.is_empty() || t.contains('\0')) {
            return Err(Error::InvalidInput("table names must not be empty".into()));
        }
        if let Some(name) = &self.target_name {
            check_restore_point_name(name)?;
        }
        Ok(())
    }
}

/// Restore point names go on a throwaway server's command line: plain words only.
pub fn check_restore_point_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || " _-.:".contains(c)) {
        return Err(Error::InvalidInput(format!(
            "restore point \"{}\": only letters, digits, spaces and _ - . : are accepted here",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// A GFS policy as written in a schedule's args.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyArgs {
    #[serde(default)]
    pub keep_last: usize,
    /// "7 days", "36h", "2 weeks".
    pub keep_within: Option<String>,
    #[serde(default)]
    pub daily: usize,
    #[serde(default)]
    pub weekly: usize,
    #[serde(default)]
    pub monthly: usize,
    #[serde(default)]
    pub yearly: usize,
}

impl PolicyArgs {
    pub fn policy(&self) -> Result<Policy> {
        Ok(Policy {
            keep_last: self.keep_last,
            keep_within: self.keep_within.as_deref().map(parse_duration).transpose()?,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
        })
    }

    fn is_empty(&self) -> bool {
        self.keep_last == 0 && self.keep_within.is_none() && self.daily + self.weekly + self.monthly + self.yearly == 0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireArgs {
    /// List what would go and the bytes it frees; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Base backups (and with them the WAL and packs only they need).
    #[serde(default)]
    pub backups: Option<PolicyArgs>,
    /// Table snapshots, per table.
    #[serde(default)]
    pub snapshots: Option<PolicyArgs>,
    /// Logical backups (pg_dump), per database.
    #[serde(default)]
    pub logical: Option<PolicyArgs>,
    /// Interrupted backups' packs and snapshots' files older than this go ("1 day" by default).
    pub grace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRestoreArgs {
    /// The table whose newest snapshot is restored; every snapshotted table when absent.
    pub table: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalFetchArgs {
    /// How many of the newest segments to fetch.
    #[serde(default = "three")]
    pub newest: usize,
    /// How many older segments, picked at random, to fetch too.
    #[serde(default = "three")]
    pub sample: usize,
}

fn three() -> usize {
    3
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PitrArgs {
    /// Tables whose row counts are compared (all user tables when empty).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Indexes checked with amcheck's bt_index_check when amcheck is installed.
    #[serde(default)]
    pub indexes: Vec<String>,
    /// Replay at most this many bytes of WAL past the backup's end ("1 GB" by default).
    pub max_replay: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyArgs {
    /// The share of packs and of WAL files read back whole (0 < sample <= 1; 1 reads everything).
    /// Manifests are always all read and authenticated.
    #[serde(default = "everything")]
    pub sample: f64,
    /// Objects read at a time.
    #[serde(default = "four")]
    pub parallel: usize,
}

impl Eq for VerifyArgs {}

fn everything() -> f64 {
    1.0
}

fn four() -> usize {
    4
}

impl JobArgs for SnapshotArgs {
    fn check(&self) -> Result<()> {
        if self.tables.is_empty() == self.schema.is_none() {
            return Err(Error::InvalidInput(
                "a snapshot job needs either \"tables\": [\"schema.table\", ...] or \"schema\": \"name\", not both and not neither".into(),
            ));
        }
        Ok(())
    }
}

impl JobArgs for BaseBackupArgs {
    fn check(&self) -> Result<()> {
        if !matches!(self.kind.as_str(), "auto" | "full" | "incremental") {
            return Err(Error::InvalidInput(format!(
                "base backup kind \"{}\" is not one of auto, full, incremental",
                self.kind.escape_debug()
            )));
        }
        Ok(())
    }
}

impl JobArgs for ExpireArgs {
    fn check(&self) -> Result<()> {
        if self.backups.as_ref().is_none_or(PolicyArgs::is_empty)
            && self.snapshots.as_ref().is_none_or(PolicyArgs::is_empty)
            && self.logical.as_ref().is_none_or(PolicyArgs::is_empty)
        {
            return Err(Error::InvalidInput(
                "an expire job needs a retention policy: {\"backups\": {\"keep_last\": 2, \"daily\": 14, \"weekly\": 12, \"monthly\": 12, \"yearly\": 7}} and/or \"snapshots\": {...} and/or \"logical\": {...}".into(),
            ));
        }
        for policy in [&self.backups, &self.snapshots, &self.logical].into_iter().flatten() {
            policy.policy()?;
        }
        if let Some(grace) = &self.grace {
            parse_duration(grace)?;
        }
        Ok(())
    }
}

impl JobArgs for SnapshotRestoreArgs {}

impl JobArgs for WalFetchArgs {}

impl JobArgs for PitrArgs {
    fn check(&self) -> Result<()> {
        if let Some(max) = &self.max_replay {
            parse_bytes(max)?;
        }
        Ok(())
    }
}

impl JobArgs for LogicalBackupArgs {
    fn check(&self) -> Result<()> {
        database_name(&self.database)
    }
}

impl JobArgs for LogicalRestoreArgs {
    fn check(&self) -> Result<()> {
        database_name(&self.database)?;
        if let Some(id) = &self.backup_id {
            crate::logical::LogicalId::parse(id)?;
        }
        Ok(())
    }
}

impl JobArgs for VerifyArgs {
    fn check(&self) -> Result<()> {
        if !(self.sample > 0.0 && self.sample <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "\"sample\" is the share of packs and WAL read back, above 0 and at most 1 (all); {} is not",
                self.sample
            )));
        }
        if !(1..=64).contains(&self.parallel) {
            return Err(Error::InvalidInput("\"parallel\" is between 1 and 64".into()));
        }
        Ok(())
    }
}

/// "90s", "15 min", "36h", "7 days", "2 weeks" (one number and one unit).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::InvalidInput(format!(
            "\"{}\" is not a duration; write a number and a unit, e.g. '30 min', '36 hours', '7 days', '2 weeks'",
            text.escape_debug()
        ))
    };
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let number: u64 = trimmed[..split].parse().map_err(|_| bad())?;
    let unit = match trimmed[split..].trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return Err(bad()),
    };
    number.checked_mul(unit).map(Duration::from_secs).ok_or_else(bad)
}

/// "512 MB", "1 GB", "1048576" (bytes).
pub fn parse_bytes(text: &str) -> Result<u64> {
    let bad =
        || Error::InvalidInput(format!("\"{}\" is not a size; write e.g. '512 MB' or '2 GB'", text.escape_debug()));
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let number: u64 = trimmed[..split].parse().map_err(|_| bad())?;
    let unit: u64 = match trimmed[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return Err(bad()),
    };
    number.checked_mul(unit).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused<A: JobArgs + std::fmt::Debug>(kind: &str, args: Value) -> String {
        parse_args::<A>(JobKind::parse(kind).unwrap(), &args).unwrap_err().to_string()
    }

    #[test]
    fn kinds_have_unique_names_that_parse_back() {
        for kind in ALL_KINDS {
            assert_eq!(JobKind::parse(kind.as_str()).unwrap(), *kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        let mut names: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL_KINDS.len());
    }

    #[test]
    fn good_jobs_parse_with_defaults() {
        assert_eq!(
            parse_args::<BaseBackupArgs>(JobKind::BaseBackup, &json!({})).unwrap(),
            BaseBackupArgs { kind: "auto".into(), fast: true, count_rows: true }
        );
        assert_eq!(
            parse_args::<SnapshotArgs>(JobKind::Snapshot, &json!({"schema": "public"})).unwrap(),
            SnapshotArgs { tables: vec![], schema: Some("public".into()) }
        );
        let expire = parse_args::<ExpireArgs>(
            JobKind::Expire,
            &json!({"backups": {"daily": 14, "weekly": 12, "keep_within": "2 days"}}),
        )
        .unwrap();
        let policy = expire.backups.unwrap().policy().unwrap();
        assert_eq!((policy.daily, policy.weekly), (14, 12));
        assert_eq!(policy.keep_within, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(
            parse_args::<WalFetchArgs>(JobKind::WalFetch, &Value::Null).unwrap(),
            WalFetchArgs { newest: 3, sample: 3 }
        );
    }

    #[test]
    fn bad_jobs_and_args_are_refused_with_the_reason() {
        assert!(JobKind::parse("vacuum")
            .unwrap_err()
            .to_string()
            .contains("not a backstop job; use one of snapshot, base_backup"));
        assert!(refused::<ExpireArgs>("expire", json!({"backups": {"dayly": 14}})).contains("unknown field `dayly`"));
        assert!(refused::<ExpireArgs>("expire", json!({})).contains("needs a retention policy"));
        assert!(
            refused::<ExpireArgs>("expire", json!({"backups": {"keep_within": "a while"}})).contains("not a duration")
        );
        assert!(refused::<SnapshotArgs>("snapshot", json!({})).contains("either \"tables\""));
        assert!(refused::<SnapshotArgs>("snapshot", json!({"tables": "t"})).contains("invalid type"));
        assert!(refused::<BaseBackupArgs>("base_backup", json!({"kind": "differential"})).contains("not one of auto"));
        assert!(refused::<PitrArgs>("pitr", json!({"max_replay": "lots"})).contains("not a size"));
        assert!(refused::<VerifyArgs>("verify", json!({"sample": 0})).contains("above 0"));
        assert!(refused::<LogicalBackupArgs>("logical_backup", json!({"database": ""})).contains("must name"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2 weeks").unwrap(), Duration::from_secs(14 * 86_400));
        assert!(parse_duration("7").is_err());
        assert_eq!(parse_bytes("1 GB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
    }
}
