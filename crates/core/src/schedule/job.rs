//! The jobs a schedule (or an on-demand call) can run, with their arguments checked once, here:
//! `backstop.schedule()` refuses an unknown job or bad args with the reason, and the worker runs
//! only a [`JobSpec`] that parsed. Unknown argument keys are refused too: a typo such as
//! `{"dayly": 14}` must not silently mean "keep nothing by day".

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::retention::Policy;
use crate::error::{Error, Result};

/// Every job kind, closed: a new one fails to compile wherever jobs are dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Snapshot,
    BaseBackup,
    Expire,
    /// Drill: restore a table's newest snapshot into a scratch table, validate, drop.
    SnapshotRestore,
    /// Drill: fetch the newest archived segments and a sample, check continuity.
    WalFetch,
    /// Drill: restore the newest base backup into a throwaway server and replay.
    Pitr,
    /// pg_dump of one database into the repository, verified with pg_restore --list.
    LogicalBackup,
    /// Drill: restore the newest logical backup into a scratch database and compare.
    LogicalRestore,
    /// Repository verification: every manifest authenticated, a sample (or all) of the packs and
    /// WAL read back through every checksum; damaged packs recorded so no backup reuses them.
    Verify,
}

pub const ALL_KINDS: [JobKind; 9] = [
    JobKind::Snapshot,
    JobKind::BaseBackup,
    JobKind::Expire,
    JobKind::SnapshotRestore,
    JobKind::WalFetch,
    JobKind::Pitr,
    JobKind::LogicalBackup,
    JobKind::LogicalRestore,
    JobKind::Verify,
];

impl JobKind {
    /// Whether running it reads what the caller may not (every table, pg_authid, the server's
    /// configuration) or removes what others made: then only superusers and members of
    /// backstop_operator may start or schedule it. Snapshots and their drills check the caller's
    /// privileges on each table instead; the WAL drill reads only WAL.
    pub fn needs_operator(self) -> bool {
        match self {
            JobKind::BaseBackup
            | JobKind::Expire
            | JobKind::Pitr
            | JobKind::LogicalBackup
            | JobKind::LogicalRestore
            // It writes damage records into the repository and reads all of it.
            | JobKind::Verify => true,
            JobKind::Snapshot | JobKind::SnapshotRestore | JobKind::WalFetch => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Snapshot => "snapshot",
            JobKind::BaseBackup => "base_backup",
            JobKind::Expire => "expire",
            JobKind::SnapshotRestore => "snapshot_restore",
            JobKind::WalFetch => "wal_fetch",
            JobKind::Pitr => "pitr",
            JobKind::LogicalBackup => "logical_backup",
            JobKind::LogicalRestore => "logical_restore",
            JobKind::Verify => "verify",
        }
    }

    /// Writes nothing to the database or the repository (so it may run on a standby).
    pub fn read_only(self) -> bool {
        match self {
            JobKind::WalFetch | JobKind::Pitr => true,
            JobKind::Snapshot
            | JobKind::BaseBackup
            | JobKind::Expire
            | JobKind::SnapshotRestore
            | JobKind::LogicalBackup
            | JobKind::LogicalRestore
            | JobKind::Verify => false,
        }
    }

    pub fn parse(text: &str) -> Result<JobKind> {
        ALL_KINDS.into_iter().find(|k| k.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
            Error::InvalidInput(format!(
                "\"{}\" is not a backstop job; use one of {}",
                text.escape_debug(),
                names.join(", ")
            ))
        })
    }

    pub fn is_drill(self) -> bool {
        matches!(self, JobKind::SnapshotRestore | JobKind::WalFetch | JobKind::Pitr)
    }
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

/// A job with checked arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    Snapshot(SnapshotArgs),
    BaseBackup(BaseBackupArgs),
    Expire(ExpireArgs),
    SnapshotRestore(SnapshotRestoreArgs),
    WalFetch(WalFetchArgs),
    Pitr(PitrArgs),
    LogicalBackup(LogicalBackupArgs),
    LogicalRestore(LogicalRestoreArgs),
    Verify(VerifyArgs),
}

fn args<T: serde::de::DeserializeOwned>(kind: JobKind, value: &Value) -> Result<T> {
    let value = if value.is_null() { Value::Object(Default::default()) } else { value.clone() };
    serde_json::from_value(value)
        .map_err(|e| Error::InvalidInput(format!("the arguments of the {} job are not valid: {e}", kind.as_str())))
}

impl JobSpec {
    pub fn parse(job: &str, value: &Value) -> Result<JobSpec> {
        let kind = JobKind::parse(job)?;
        let spec = match kind {
            JobKind::Snapshot => {
                let a: SnapshotArgs = args(kind, value)?;
                if a.tables.is_empty() == a.schema.is_none() {
                    return Err(Error::InvalidInput(
                        "a snapshot job needs either \"tables\": [\"schema.table\", ...] or \"schema\": \"name\", not both and not neither".into(),
                    ));
                }
                JobSpec::Snapshot(a)
            }
            JobKind::BaseBackup => {
                let a: BaseBackupArgs = args(kind, value)?;
                if !matches!(a.kind.as_str(), "auto" | "full" | "incremental") {
                    return Err(Error::InvalidInput(format!(
                        "base backup kind \"{}\" is not one of auto, full, incremental",
                        a.kind.escape_debug()
                    )));
                }
                JobSpec::BaseBackup(a)
            }
            JobKind::Expire => {
                let a: ExpireArgs = args(kind, value)?;
                if a.backups.as_ref().is_none_or(PolicyArgs::is_empty)
                    && a.snapshots.as_ref().is_none_or(PolicyArgs::is_empty)
                    && a.logical.as_ref().is_none_or(PolicyArgs::is_empty)
                {
                    return Err(Error::InvalidInput(
                        "an expire job needs a retention policy: {\"backups\": {\"keep_last\": 2, \"daily\": 14, \"weekly\": 12, \"monthly\": 12, \"yearly\": 7}} and/or \"snapshots\": {...} and/or \"logical\": {...}".into(),
                    ));
                }
                for policy in [&a.backups, &a.snapshots, &a.logical].into_iter().flatten() {
                    policy.policy()?;
                }
                if let Some(grace) = &a.grace {
                    parse_duration(grace)?;
                }
                JobSpec::Expire(a)
            }
            JobKind::SnapshotRestore => JobSpec::SnapshotRestore(args(kind, value)?),
            JobKind::WalFetch => JobSpec::WalFetch(args(kind, value)?),
            JobKind::Pitr => {
                let a: PitrArgs = args(kind, value)?;
                if let Some(max) = &a.max_replay {
                    parse_bytes(max)?;
                }
                JobSpec::Pitr(a)
            }
            JobKind::LogicalBackup => {
                let a: LogicalBackupArgs = args(kind, value)?;
                if a.database.as_deref().is_some_and(|d| d.is_empty() || d.contains('\0')) {
                    return Err(Error::InvalidInput("\"database\" must name a database".into()));
                }
                JobSpec::LogicalBackup(a)
            }
            JobKind::LogicalRestore => {
                let a: LogicalRestoreArgs = args(kind, value)?;
                if a.database.as_deref().is_some_and(|d| d.is_empty() || d.contains('\0')) {
                    return Err(Error::InvalidInput("\"database\" must name a database".into()));
                }
                if let Some(id) = &a.backup_id {
                    crate::logical::LogicalId::parse(id)?;
                }
                JobSpec::LogicalRestore(a)
            }
            JobKind::Verify => {
                let a: VerifyArgs = args(kind, value)?;
                if !(a.sample > 0.0 && a.sample <= 1.0) {
                    return Err(Error::InvalidInput(format!(
                        "\"sample\" is the share of packs and WAL read back, above 0 and at most 1 (all); {} is not",
                        a.sample
                    )));
                }
                if !(1..=64).contains(&a.parallel) {
                    return Err(Error::InvalidInput("\"parallel\" is between 1 and 64".into()));
                }
                JobSpec::Verify(a)
            }
        };
        Ok(spec)
    }

    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Snapshot(_) => JobKind::Snapshot,
            JobSpec::BaseBackup(_) => JobKind::BaseBackup,
            JobSpec::Expire(_) => JobKind::Expire,
            JobSpec::SnapshotRestore(_) => JobKind::SnapshotRestore,
            JobSpec::WalFetch(_) => JobKind::WalFetch,
            JobSpec::Pitr(_) => JobKind::Pitr,
            JobSpec::LogicalBackup(_) => JobKind::LogicalBackup,
            JobSpec::LogicalRestore(_) => JobKind::LogicalRestore,
            JobSpec::Verify(_) => JobKind::Verify,
        }
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

    fn refused(job: &str, args: Value) -> String {
        JobSpec::parse(job, &args).unwrap_err().to_string()
    }

    #[test]
    fn good_jobs_parse_with_defaults() {
        assert_eq!(
            JobSpec::parse("base_backup", &json!({})).unwrap(),
            JobSpec::BaseBackup(BaseBackupArgs { kind: "auto".into(), fast: true, count_rows: true })
        );
        assert_eq!(
            JobSpec::parse("snapshot", &json!({"schema": "public"})).unwrap(),
            JobSpec::Snapshot(SnapshotArgs { tables: vec![], schema: Some("public".into()) })
        );
        let JobSpec::Expire(expire) =
            JobSpec::parse("expire", &json!({"backups": {"daily": 14, "weekly": 12, "keep_within": "2 days"}}))
                .unwrap()
        else {
            panic!()
        };
        let policy = expire.backups.unwrap().policy().unwrap();
        assert_eq!((policy.daily, policy.weekly), (14, 12));
        assert_eq!(policy.keep_within, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(
            JobSpec::parse("wal_fetch", &Value::Null).unwrap(),
            JobSpec::WalFetch(WalFetchArgs { newest: 3, sample: 3 })
        );
    }

    #[test]
    fn bad_jobs_and_args_are_refused_with_the_reason() {
        assert!(refused("vacuum", json!({})).contains("not a backstop job; use one of snapshot, base_backup"));
        assert!(refused("expire", json!({"backups": {"dayly": 14}})).contains("unknown field `dayly`"));
        assert!(refused("expire", json!({})).contains("needs a retention policy"));
        assert!(refused("expire", json!({"backups": {"keep_within": "a while"}})).contains("not a duration"));
        assert!(refused("snapshot", json!({})).contains("either \"tables\""));
        assert!(refused("snapshot", json!({"tables": "t"})).contains("invalid type"));
        assert!(refused("base_backup", json!({"kind": "differential"})).contains("not one of auto"));
        assert!(refused("pitr", json!({"max_replay": "lots"})).contains("not a size"));
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
