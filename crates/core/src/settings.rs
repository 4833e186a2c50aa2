//! Every `backstop.*` setting described once: its name, description and hint, its type, bounds
//! and default, whether only a reload changes it, whether it is hidden, and for text the check
//! that refuses a bad value. The extension defines its GUCs from these (`src/gucs.rs`, whose
//! check hooks call [`TextSetting::check`]) and the CLI checks its flags and config-file keys
//! with the same ones, so a bad `backstop.s3_endpoint` and a bad `--s3-endpoint` are refused in
//! the same words. Invariants (unit-tested): names are unique and start with `backstop.`;
//! defaults lie within bounds; the extension's pgrx test checks PostgreSQL reports these bounds.

use std::ffi::CStr;

use crate::error::{Error, Result};

/// What every setting has.
#[derive(Debug, Clone, Copy)]
pub struct About {
    /// The full name, `backstop.<key>`.
    pub name: &'static CStr,
    pub description: &'static CStr,
    pub hint: &'static CStr,
    /// Set in postgresql.conf (or ALTER SYSTEM) and applied on reload (SIGHUP); otherwise a
    /// superuser may also SET it in a session.
    pub reload: bool,
    /// Superuser-only and left out of SHOW ALL (secrets, test hooks).
    pub hidden: bool,
}

impl About {
    pub fn name(&self) -> &'static str {
        self.name.to_str().expect("setting names are ASCII")
    }

    /// The name without `backstop.`: the CLI's config-file key where it has one.
    pub fn key(&self) -> &'static str {
        self.name().trim_start_matches("backstop.")
    }
}

/// Refuses a value with the reason, or accepts it.
pub type Check = fn(&str) -> std::result::Result<(), String>;

#[derive(Debug, Clone, Copy)]
pub struct TextSetting {
    pub about: About,
    pub default: Option<&'static CStr>,
    /// Refuses a non-empty value with the reason (empty always means unset).
    pub check: Option<Check>,
}

impl TextSetting {
    /// Checks `value` as the server's check hook does; the error names `setting` (the CLI's flag
    /// or key, or the server's name).
    pub fn check_as(&self, setting: &'static str, value: &str) -> Result<()> {
        let value = value.trim();
        match self.check {
            Some(check) if !value.is_empty() => {
                check(value).map_err(|reason| Error::InvalidSetting { setting, reason })
            }
            Some(_) | None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IntSetting {
    pub about: About,
    pub min: i32,
    pub max: i32,
    pub default: i32,
    /// The value is in seconds (PostgreSQL accepts '5min', '2h').
    pub seconds: bool,
}

impl IntSetting {
    /// `value` within bounds, or why not, naming `setting`.
    pub fn check_as(&self, setting: &'static str, value: i64) -> Result<i32> {
        if (i64::from(self.min)..=i64::from(self.max)).contains(&value) {
            Ok(value as i32)
        } else {
            Err(Error::InvalidSetting {
                setting,
                reason: format!("{value} is outside {} to {} ({})", self.min, self.max, self.about.name()),
            })
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BoolSetting {
    pub about: About,
    pub default: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct EnumSetting {
    pub about: About,
    pub values: &'static [&'static str],
}

fn check_repository(text: &str) -> std::result::Result<(), String> {
    text.parse::<crate::Location>().map(|_| ()).map_err(|e| e.to_string())
}

fn check_cluster_name(text: &str) -> std::result::Result<(), String> {
    let valid = text.len() <= 128
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !text.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err("backstop.cluster_name takes up to 128 letters, digits, '-', '_' or '.', not starting with '.'".into())
    }
}

fn check_trusted_keys(text: &str) -> std::result::Result<(), String> {
    crate::auth::PublicKey::parse_list(text).map(|_| ()).map_err(|e| e.to_string())
}

fn check_recipients(text: &str) -> std::result::Result<(), String> {
    crate::codec::parse_recipients(text).map(|_| ()).map_err(|e| e.to_string())
}

fn check_endpoint(text: &str) -> std::result::Result<(), String> {
    let has_host = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if has_host {
        Ok(())
    } else {
        Err("backstop.s3_endpoint must be a URL starting with http:// or https://, e.g. https://s3.example.com:9000"
            .into())
    }
}

pub const REPOSITORY: TextSetting = TextSetting {
    about: About {
        name: c"backstop.repository",
        description: c"Where backups are stored: file:///absolute/path or s3://bucket/prefix.",
        hint: c"The repository holds WAL, snapshots and base backups under a namespace per cluster.",
        reload: false,
        hidden: false,
    },
    default: None,
    check: Some(check_repository),
};

pub const CLUSTER_NAME: TextSetting = TextSetting {
    about: About {
        name: c"backstop.cluster_name",
        description: c"This cluster's namespace in the repository; empty means the database system identifier.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    default: None,
    check: Some(check_cluster_name),
};

pub const RESTORED_FROM: TextSetting = TextSetting {
    about: About {
        name: c"backstop.restored_from",
        description: c"Set by backstop restore on a restored copy: what it was restored from.",
        hint: c"While set (and backstop.cluster_name is not), nothing is written into or deleted from the repository namespace the copy shares with the cluster it was restored from. Reset it when the copy replaces the primary.",
        reload: false,
        hidden: false,
    },
    default: None,
    check: None,
};

pub const TRUSTED_KEYS: TextSetting = TextSetting {
    about: About {
        name: c"backstop.trusted_keys",
        description: c"Public keys (ed25519:<hex>, comma separated) whose signatures are accepted besides this cluster's own.",
        hint: c"The repository trusts only what this cluster signed; add the key of the cluster a restore came from, or the previous key after a rotation. Public keys: not secret.",
        reload: false,
        hidden: false,
    },
    default: None,
    check: Some(check_trusted_keys),
};

pub const ENCRYPTION_RECIPIENTS: TextSetting = TextSetting {
    about: About {
        name: c"backstop.encryption_recipients",
        description:
            c"age X25519 public keys (age1...) that objects are encrypted to; empty stores objects unencrypted.",
        hint: c"The server holds only public keys; restoring needs the matching identity (secret key).",
        reload: false,
        hidden: false,
    },
    default: None,
    check: Some(check_recipients),
};

pub const S3_ENDPOINT: TextSetting = TextSetting {
    about: About {
        name: c"backstop.s3_endpoint",
        description: c"S3 endpoint URL (http:// or https://); empty means AWS.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    default: None,
    check: Some(check_endpoint),
};

pub const ENCRYPTION_IDENTITY_FILE: TextSetting = TextSetting {
    about: About {
        name: c"backstop.encryption_identity_file",
        description: c"File with the age identities (AGE-SECRET-KEY-1...) that decrypt encrypted snapshots on restore.",
        hint: c"Read by the server's operating system user when a restore needs it; keep it mode 0600. Unset, the server cannot read encrypted objects back.",
        reload: false,
        hidden: false,
    },
    default: None,
    check: None,
};

pub const COMPRESSION: EnumSetting = EnumSetting {
    about: About {
        name: c"backstop.compression",
        description: c"Compression of stored objects: zstd or none.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    values: &["none", "zstd"],
};

pub const COMPRESSION_LEVEL: IntSetting = IntSetting {
    about: About {
        name: c"backstop.compression_level",
        description: c"zstd compression level (1 fastest to 19 smallest).",
        hint: c"",
        reload: false,
        hidden: false,
    },
    min: 1,
    max: 19,
    default: crate::codec::Compression::DEFAULT_ZSTD_LEVEL,
    seconds: false,
};

pub const S3_REGION: TextSetting = TextSetting {
    about: About {
        name: c"backstop.s3_region",
        description: c"S3 region; empty means us-east-1.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    default: None,
    check: None,
};

pub const S3_FORCE_PATH_STYLE: BoolSetting = BoolSetting {
    about: About {
        name: c"backstop.s3_force_path_style",
        description:
            c"Address buckets as endpoint/bucket instead of bucket.endpoint (needed by most self-hosted stores).",
        hint: c"",
        reload: false,
        hidden: false,
    },
    default: false,
};

pub const S3_CA_FILE: TextSetting = TextSetting {
    about: About {
        name: c"backstop.s3_ca_file",
        description: c"PEM file of certificate authorities to trust for the S3 endpoint, besides the system's.",
        hint: c"For a store whose certificate a private CA signed (MinIO, Ceph, a TLS proxy). Read by the server's operating system user.",
        reload: false,
        hidden: false,
    },
    default: None,
    check: None,
};

pub const ARCHIVE_LOOKAHEAD: IntSetting = IntSetting {
    about: About {
        name: c"backstop.archive_lookahead",
        description: c"WAL files the archive module uploads ahead of the archiver's request, in parallel (0 = none).",
        hint: c"Each is acknowledged only when the archiver asks for it and its upload is durable. Costs up to two segments of memory each.",
        reload: false,
        hidden: false,
    },
    min: 0,
    max: 64,
    default: 4,
    seconds: false,
};

pub const BASE_BACKUP_WAL_TIMEOUT: IntSetting = IntSetting {
    about: About {
        name: c"backstop.base_backup_wal_timeout",
        description: c"Seconds a base backup waits for the WAL it needs (up to its stop LSN) to reach the repository.",
        hint: c"A backup whose WAL is not archived in time fails and publishes no manifest.",
        reload: false,
        hidden: false,
    },
    min: 1,
    max: 86_400,
    default: 600,
    seconds: true,
};

pub const BASE_BACKUP_REREAD_DAYS: IntSetting = IntSetting {
    about: About {
        name: c"backstop.base_backup_reread_days",
        description: c"An incremental base backup reads a file again, unchanged metadata or not, once its last read is this old.",
        hint: c"The periodic full read that catches a file changed behind an unchanged size, mtime and inode. 0 reads every file every time.",
        reload: false,
        hidden: false,
    },
    min: 0,
    max: 3650,
    default: 7,
    seconds: false,
};

pub const BASE_BACKUP_COMPRESSION_LEVEL: IntSetting = IntSetting {
    about: About {
        name: c"backstop.base_backup_compression_level",
        description: c"zstd level of base backup packs (when backstop.compression = zstd).",
        hint: c"Level 1 by default: on relation pages it is much faster than 3 and compresses about as well (see the README's benchmark).",
        reload: false,
        hidden: false,
    },
    min: 1,
    max: 19,
    default: 1,
    seconds: false,
};

pub const BASE_BACKUP_PARALLEL: IntSetting = IntSetting {
    about: About {
        name: c"backstop.base_backup_parallel",
        description: c"Packs a base backup uploads at once.",
        hint: c"Each holds up to 16 MiB of memory.",
        reload: false,
        hidden: false,
    },
    min: 1,
    max: 32,
    default: 2,
    seconds: false,
};

pub const BASE_BACKUP_WAL_SUMMARIES: BoolSetting = BoolSetting {
    about: About {
        name: c"backstop.base_backup_wal_summaries",
        description: c"Whether incremental base backups on PostgreSQL 17+ read only the blocks the WAL summaries name as changed (with summarize_wal = on).",
        hint: c"Off reads every changed file whole, as on PostgreSQL 15 and 16.",
        reload: false,
        hidden: false,
    },
    default: true,
};

pub const DATABASE: TextSetting = TextSetting {
    about: About {
        name: c"backstop.database",
        description: c"The database the scheduler connects to: the one where CREATE EXTENSION backstop ran.",
        hint: c"On reload the scheduler reconnects to the new database.",
        reload: true,
        hidden: false,
    },
    default: Some(c"postgres"),
    check: None,
};

pub const SCHEDULER: BoolSetting = BoolSetting {
    about: About {
        name: c"backstop.scheduler",
        description:
            c"Whether the scheduler runs backstop.schedules (off pauses every schedule; runs due meanwhile are missed).",
        hint: c"",
        reload: true,
        hidden: false,
    },
    default: true,
};

pub const MISSED_RUN_GRACE: IntSetting = IntSetting {
    about: About {
        name: c"backstop.missed_run_grace",
        description: c"A run that fell due while the server was down still runs at start-up if it is at most this late; older ones are recorded as missed.",
        hint: c"",
        reload: true,
        hidden: false,
    },
    min: 0,
    max: 7 * 86_400,
    default: 3600,
    seconds: true,
};

pub const JOB_RUNS_RETENTION: IntSetting = IntSetting {
    about: About {
        name: c"backstop.job_runs_retention",
        description:
            c"Days backstop.job_runs keeps finished runs (the scheduler prunes older ones; 0 keeps everything).",
        hint: c"",
        reload: true,
        hidden: false,
    },
    min: 0,
    max: 36_500,
    default: 90,
    seconds: false,
};

pub const MAX_BASE_BACKUP_AGE: IntSetting = IntSetting {
    about: About {
        name: c"backstop.max_base_backup_age",
        description: c"doctor() reports degraded when the newest valid base backup is older than this.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    min: 60,
    max: 365 * 86_400,
    default: 8 * 24 * 3600,
    seconds: true,
};

pub const MAX_SNAPSHOT_AGE: IntSetting = IntSetting {
    about: About {
        name: c"backstop.max_snapshot_age",
        description: c"doctor() reports degraded when a scheduled table's newest snapshot is older than this.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    min: 60,
    max: 365 * 86_400,
    default: 2 * 24 * 3600,
    seconds: true,
};

pub const MAX_LOGICAL_BACKUP_AGE: IntSetting = IntSetting {
    about: About {
        name: c"backstop.max_logical_backup_age",
        description: c"doctor() reports degraded when a scheduled database's newest logical backup is older than this.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    min: 60,
    max: 365 * 86_400,
    default: 2 * 24 * 3600,
    seconds: true,
};

pub const DRILL_DIRECTORY: TextSetting = TextSetting {
    about: About {
        name: c"backstop.drill_directory",
        description: c"Where the pitr drill restores its throwaway server (empty: the server's temporary directory, usually /tmp).",
        hint: c"It needs room for the whole cluster and the WAL it replays; the drill refuses to start when the file system is short.",
        reload: false,
        hidden: false,
    },
    default: None,
    check: None,
};

pub const LOGICAL_ROLE: TextSetting = TextSetting {
    about: About {
        name: c"backstop.logical_role",
        description: c"The role pg_dump connects as for logical backups, over the server's Unix socket (empty: the bootstrap superuser).",
        hint: c"pg_hba.conf must let the server's OS user connect as it locally (peer or trust), or its ~/.pgpass must name it; it must read every object of the database (e.g. pg_read_all_data).",
        reload: false,
        hidden: false,
    },
    default: None,
    check: None,
};

/// Test builds only (the extension's feature `test-hooks`), so not in [`TEXTS`].
pub const TEST_CLOCK: TextSetting = TextSetting {
    about: About {
        name: c"backstop.test_clock",
        description: c"For tests only: 'SPEED@SINCE[@START]' makes the scheduler's clock read START at unix second SINCE and run SPEED times faster.",
        hint: c"Lets a test watch a week of schedules in minutes. Leave empty in production.",
        reload: true,
        hidden: true,
    },
    default: None,
    check: None,
};

/// Test builds only (the extension's feature `test-hooks`), so not in [`INTS`].
pub const TEST_BACKUP_PAUSE: IntSetting = IntSetting {
    about: About {
        name: c"backstop.test_backup_pause",
        description: c"For tests only: milliseconds a base backup job pauses before it copies files.",
        hint: c"Lets a test watch a running backup's progress whatever the machine's speed. Leave 0 in production.",
        reload: true,
        hidden: true,
    },
    min: 0,
    max: 60_000,
    default: 0,
    seconds: false,
};

/// Test builds only (the extension's feature `test-hooks`), so not in [`INTS`].
pub const TEST_RECOVER_PAUSE: IntSetting = IntSetting {
    about: About {
        name: c"backstop.test_recover_pause",
        description: c"For tests only: milliseconds a recover job pauses once its throwaway server runs.",
        hint: c"Lets a test cancel a recovery while its throwaway server runs. Leave 0 in production.",
        reload: true,
        hidden: true,
    },
    min: 0,
    max: 600_000,
    default: 0,
    seconds: false,
};

pub const S3_MAX_ATTEMPTS: IntSetting = IntSetting {
    about: About {
        name: c"backstop.s3_max_attempts",
        description: c"Attempts per S3 request, with exponential backoff between them.",
        hint: c"",
        reload: false,
        hidden: false,
    },
    min: 1,
    max: 20,
    default: 5,
    seconds: false,
};

pub const S3_ACCESS_KEY_ID: TextSetting = TextSetting {
    about: About {
        name: c"backstop.s3_access_key_id",
        description: c"S3 access key id; empty uses the server OS user's AWS credential chain.",
        hint: c"",
        reload: false,
        hidden: true,
    },
    default: None,
    check: None,
};

pub const S3_SECRET_ACCESS_KEY: TextSetting = TextSetting {
    about: About {
        name: c"backstop.s3_secret_access_key",
        description: c"S3 secret access key (superuser-only, never shown).",
        hint: c"",
        reload: false,
        hidden: true,
    },
    default: None,
    check: None,
};

pub const S3_SESSION_TOKEN: TextSetting = TextSetting {
    about: About {
        name: c"backstop.s3_session_token",
        description: c"S3 session token (superuser-only, never shown).",
        hint: c"",
        reload: false,
        hidden: true,
    },
    default: None,
    check: None,
};

/// Every text setting (secrets included), in the order the extension defines them.
pub const TEXTS: &[&TextSetting] = &[
    &REPOSITORY,
    &CLUSTER_NAME,
    &RESTORED_FROM,
    &TRUSTED_KEYS,
    &ENCRYPTION_RECIPIENTS,
    &S3_ENDPOINT,
    &ENCRYPTION_IDENTITY_FILE,
    &S3_REGION,
    &S3_CA_FILE,
    &DATABASE,
    &DRILL_DIRECTORY,
    &LOGICAL_ROLE,
    &S3_ACCESS_KEY_ID,
    &S3_SECRET_ACCESS_KEY,
    &S3_SESSION_TOKEN,
];

/// Every integer setting.
pub const INTS: &[&IntSetting] = &[
    &COMPRESSION_LEVEL,
    &ARCHIVE_LOOKAHEAD,
    &BASE_BACKUP_WAL_TIMEOUT,
    &BASE_BACKUP_REREAD_DAYS,
    &BASE_BACKUP_COMPRESSION_LEVEL,
    &BASE_BACKUP_PARALLEL,
    &MISSED_RUN_GRACE,
    &JOB_RUNS_RETENTION,
    &MAX_BASE_BACKUP_AGE,
    &MAX_SNAPSHOT_AGE,
    &MAX_LOGICAL_BACKUP_AGE,
    &S3_MAX_ATTEMPTS,
];

/// Every boolean setting.
pub const BOOLS: &[&BoolSetting] = &[&S3_FORCE_PATH_STYLE, &SCHEDULER, &BASE_BACKUP_WAL_SUMMARIES];

/// Every enum setting.
pub const ENUMS: &[&EnumSetting] = &[&COMPRESSION];

/// Every setting's common description.
pub fn all() -> impl Iterator<Item = &'static About> {
    TEXTS
        .iter()
        .map(|s| &s.about)
        .chain(INTS.iter().map(|s| &s.about))
        .chain(BOOLS.iter().map(|s| &s.about))
        .chain(ENUMS.iter().map(|s| &s.about))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<&str> = all().map(|a| a.name()).collect();
        assert!(names.iter().all(|n| n.starts_with("backstop.") && n.len() > "backstop.".len()), "{names:?}");
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a setting is described twice");
        assert_eq!(REPOSITORY.about.key(), "repository");
    }

    #[test]
    fn defaults_lie_within_bounds() {
        for setting in INTS {
            assert!(setting.min <= setting.default && setting.default <= setting.max, "{}", setting.about.name());
            assert!(setting.check_as("x", i64::from(setting.default)).is_ok());
        }
        let error = COMPRESSION_LEVEL.check_as("compression_level", 23).unwrap_err().to_string();
        assert!(error.contains("compression_level") && error.contains("1 to 19"), "{error}");
    }

    #[test]
    fn text_checks_refuse_with_the_reason_and_accept_empty() {
        let error = S3_ENDPOINT.check_as("s3_endpoint", "s3.example.com").unwrap_err().to_string();
        assert!(error.contains("http:// or https://"), "{error}");
        assert!(S3_ENDPOINT.check_as("s3_endpoint", "https://s3.example.com:9000").is_ok());
        assert!(S3_ENDPOINT.check_as("s3_endpoint", "  ").is_ok(), "empty means unset");
        assert!(CLUSTER_NAME.check_as("cluster", ".hidden").is_err());
        assert!(CLUSTER_NAME.check_as("cluster", "prod-eu.1").is_ok());
        assert!(REPOSITORY.check_as("repository", "ftp://x").is_err());
        assert!(TRUSTED_KEYS.check_as("trusted_keys", "ed25519:zz").is_err());
        assert!(ENCRYPTION_RECIPIENTS.check_as("encryption_recipients", "age1nope").is_err());
        assert!(DATABASE.default.is_some() && RESTORED_FROM.check.is_none());
    }
}
