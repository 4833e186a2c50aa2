//! `backstop backups list`, `backstop verify` and `backstop restore`: base backups while the server
//! is down. Listing, verifying and choosing a backup are the core's, shared with the extension.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backstop_core::backups::restore::{self, RecoveryTarget, RestoreOptions, RestoreProgress};
use backstop_core::backups::verify::{self, VerifyProgress};
use backstop_core::backups::{format_utc, from_unix_seconds, parse_time, BackupId, Lsn};
use backstop_core::codec::CodecSettings;
use backstop_core::repository::CancellationToken;
use backstop_core::Error;
use clap::{Args, Subcommand, ValueEnum};

use crate::config::RepositoryArgs;

#[derive(Subcommand)]
pub enum BackupsCommand {
    /// List base backups, oldest first, each checked: manifest readable and every pack present.
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Packs read at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The data directory to rebuild: empty or absent, or any state with --delta.
    #[arg(long)]
    pub target_dir: PathBuf,
    /// A backup id, or "latest" (the default: the newest backup that ends before the target).
    #[arg(long)]
    pub backup_id: Option<String>,
    /// Recover to this time: 2026-11-22 14:32:00+00 (no zone means UTC).
    #[arg(long, group = "target")]
    pub target_time: Option<String>,
    /// Recover to this WAL position (0/3000028).
    #[arg(long, group = "target")]
    pub target_lsn: Option<String>,
    /// Recover to this transaction id.
    #[arg(long, group = "target")]
    pub target_xid: Option<u64>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long, group = "target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "target")]
    pub immediate: bool,
    /// What the server does at the target.
    #[arg(long, value_enum, default_value = "promote")]
    pub target_action: TargetAction,
    /// latest, current, or a timeline number.
    #[arg(long, default_value = "latest")]
    pub target_timeline: String,
    /// Keep files whose chunks already match; fetch only the rest; remove what the backup lacks.
    #[arg(long)]
    pub delta: bool,
    /// Make a standby: standby.signal instead of recovery.signal, no recovery target.
    #[arg(long)]
    pub standby: bool,
    /// The restored cluster replaces the primary: keep its archiving and schedules. Without it a
    /// restore is a copy: archive_mode off, the scheduler paused, and nothing written into or
    /// deleted from the namespace it shares with the cluster it came from.
    #[arg(long, conflicts_with = "standby")]
    pub as_primary: bool,
    /// With --standby: the connection string to the primary, written to postgresql.auto.conf (mode
    /// 0600). Give a password through BACKSTOP_PRIMARY_CONNINFO or a passfile, never on the command
    /// line, where `ps` shows it.
    #[arg(long, env = "BACKSTOP_PRIMARY_CONNINFO")]
    pub primary_conninfo: Option<String>,
    /// Put a tablespace elsewhere: OID=DIR (repeatable).
    #[arg(long, value_parser = parse_tablespace)]
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// Packs downloaded at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// The PostgreSQL server programs that will start the restored directory: checked against
    /// the backup's major version before anything is written.
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
    /// Print a JSON summary at the end instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

fn parse_tablespace(text: &str) -> Result<(u32, PathBuf), String> {
    let (oid, dir) = text.split_once('=').ok_or("expected OID=DIR")?;
    let oid = oid.parse::<u32>().map_err(|_| format!("\"{oid}\" is not a tablespace OID"))?;
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(format!("{} must be an absolute path", dir.display()));
    }
    Ok((oid, dir))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    backstop_core::runtime::build(4, "backstop-io").map_err(|e| Error::io("start", "runtime", e))
}

fn time_text(seconds: f64) -> String {
    format_utc(from_unix_seconds(seconds))
}

pub fn list(args: ListArgs) -> Result<ExitCode, Error> {
    let runtime = runtime()?;
    let (repository_args, _) = args.repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(CodecSettings::plain()))?;
    let backups = runtime.block_on(verify::list_backups(&repository))?;
    if args.json {
        let rows: Vec<_> = backups
            .iter()
            .map(|b| {
                let m = b.manifest.as_ref();
                serde_json::json!({
                    "id": b.id,
                    "kind": m.map(|m| m.kind.as_str()),
                    "start_time": m.map(|m| time_text(m.start_time)),
                    "stop_time": m.map(|m| time_text(m.stop_time)),
                    "start_lsn": m.map(|m| m.start_lsn.to_string()),
                    "stop_lsn": m.map(|m| m.stop_lsn.to_string()),
                    "timeline": m.map(|m| m.timeline),
                    "bytes": m.map(|m| m.stats.bytes),
                    "bytes_new": m.map(|m| m.stats.bytes_new),
                    "bytes_stored": m.map(|m| m.stats.bytes_stored),
                    "verified": b.verified(),
                    "problem": b.problem,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "repository": repository.describe(), "backups": rows }));
    } else {
        for b in &backups {
            match &b.manifest {
                Some(m) => println!(
                    "{} {:<11} {} .. {}  {} .. {}  {} bytes, {} new  {}",
                    b.id,
                    m.kind.as_str(),
                    time_text(m.start_time),
                    time_text(m.stop_time),
                    m.start_lsn,
                    m.stop_lsn,
                    m.stats.bytes,
                    m.stats.bytes_new,
                    b.problem.as_deref().map(|p| format!("FAILED: {p}")).unwrap_or_else(|| b.state.clone())
                ),
                None => println!("{} FAILED: {}", b.id, b.problem.as_deref().unwrap_or("")),
            }
        }
        let failed = backups.iter().filter(|b| !b.verified()).count();
        println!("{} backups in {}, {failed} with problems", backups.len(), repository.describe());
    }
    Ok(if backups.iter().all(|b| b.verified()) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(crate) fn bar(hidden: bool, len: u64, template: &str) -> indicatif::ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode, Error> {
    let runtime = runtime()?;
    let (repository_args, _) = args.repository.resolve()?;
    // With the cluster's data directory at hand (PGDATA or --data-dir), damage found is recorded
    // under its signing key so that no later backup reuses the pack; without it, only reported.
    let signer = match repository_args.data_dir.as_deref() {
        Some(dir) => backstop_core::auth::load_signing_key(dir)?,
        None => None,
    };
    let repository = match signer {
        Some(signer) => runtime.block_on(repository_args.open_signing(CodecSettings::plain(), signer))?,
        None => runtime.block_on(repository_args.open(CodecSettings::plain()))?,
    };
    let progress = Arc::new(VerifyProgress::default());
    let bar = bar(args.json, 0, "{spinner} verifying packs {pos}/{len} [{bar:40}] {msg} {eta}");
    let report = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let work = verify::verify(&repository, args.parallel, &progress, &cancel);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    bar.set_length(progress.packs_total.load(Ordering::Relaxed));
                    bar.set_position(progress.packs_done.load(Ordering::Relaxed));
                    bar.set_message(format!("{} MiB", progress.bytes_done.load(Ordering::Relaxed) >> 20));
                }
            }
        }
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::json!({ "repository": repository.describe(), "ok": report.ok(), "report": report }));
    } else {
        for b in &report.backups {
            if b.ok {
                println!("{}: OK", b.id);
            } else {
                for problem in &b.problems {
                    println!("{}: FAILED: {problem}", b.id);
                }
            }
        }
        println!(
            "{} backups, {} packs ({} bytes) read and checked: {}",
            report.backups.len(),
            report.packs_checked,
            report.bytes_checked,
            if report.ok() { "all OK" } else { "PROBLEMS FOUND" }
        );
        if !report.damage_recorded.is_empty() {
            println!(
                "{} damaged pack(s) recorded under damaged/: no later backup references them (the next backup reads those files again)",
                report.damage_recorded.len()
            );
        }
        if let Some(why) = &report.damage_not_recorded {
            println!("damage found was not recorded ({why}): the next backup re-reads packs older than its re-read period only; run verify with --data-dir (or PGDATA) on the cluster's host to record it");
        }
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn target(args: &RestoreArgs) -> Result<RecoveryTarget, Error> {
    Ok(if let Some(t) = &args.target_time {
        RecoveryTarget::Time(parse_time(t)?)
    } else if let Some(lsn) = &args.target_lsn {
        RecoveryTarget::Lsn(Lsn::parse(lsn)?)
    } else if let Some(xid) = args.target_xid {
        RecoveryTarget::Xid(xid)
    } else if let Some(name) = &args.target_name {
        RecoveryTarget::Name(name.clone())
    } else if args.immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::Latest
    })
}

/// Quotes one word for the shell that runs restore_command.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The restore_command for the restored server: this binary, with the repository options that
/// were resolved here (never credentials: the server's environment, ~/.aws or the config file
/// supplies those).
fn restore_command(resolved: &RepositoryArgs, cluster: &str, standby: bool) -> Result<String, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the backstop executable", e))?;
    let mut words = vec![exe.to_string_lossy().into_owned(), "wal".into(), "fetch".into()];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            words.push(format!("--{name}"));
            words.push(value);
        }
    };
    flag("repository", resolved.repository.clone());
    flag("cluster", Some(cluster.to_string()));
    flag("s3-endpoint", resolved.s3_endpoint.clone());
    flag("s3-region", resolved.s3_region.clone());
    flag("s3-force-path-style", resolved.s3_force_path_style.map(|b| b.to_string()));
    flag("s3-ca-file", resolved.s3_ca_file.as_ref().map(|p| p.display().to_string()));
    flag("identity-file", resolved.identity_file.as_ref().map(|p| p.display().to_string()));
    // The keys this restore trusted, so that recovery trusts exactly them too. Public keys: no secret.
    if !resolved.trusted_keys.is_empty() {
        flag("trusted-key", Some(resolved.trusted_keys.join(",")));
    }
    flag("config", resolved.config.as_ref().map(|p| p.display().to_string()));
    if resolved.trust_unauthenticated {
        words.push("--trust-unauthenticated".into());
    }
    if standby {
        words.push("--standby".into());
    }
    let mut command: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
    command.push("%f".into());
    command.push("%p".into());
    Ok(command.join(" "))
}

pub fn restore(args: RestoreArgs) -> Result<ExitCode, Error> {
    let runtime = runtime()?;
    let (resolved, _) = args.repository.resolve()?;
    let repository = runtime.block_on(resolved.open(CodecSettings::plain()))?;
    let target = if args.standby { RecoveryTarget::Latest } else { target(&args)? };
    if args.standby
        && (args.target_time.is_some()
            || args.target_lsn.is_some()
            || args.target_xid.is_some()
            || args.target_name.is_some()
            || args.immediate)
    {
        return Err(Error::InvalidInput(
            "--standby follows the archive to its end: it takes no recovery target".into(),
        ));
    }
    let requested = match args.backup_id.as_deref() {
        None | Some("latest") => None,
        Some(id) => Some(BackupId::parse(id)?),
    };
    // The newest backup before the target; a time or LSN the archive cannot reach is refused now,
    // with the window, not after the restore when PostgreSQL would refuse to start.
    let manifest =
        runtime.block_on(backstop_core::recover::plan::plan(&repository, requested.as_ref(), &target))?.manifest;
    // The programs that will start it: checked when given; otherwise looked for where they
    // usually are, and a warning (not a refusal: it may be started on another host) when only
    // another major's are there.
    let (pg_bin, binaries_warning) = match &args.pg_bin {
        Some(bin_dir) => {
            restore::check_binaries(bin_dir, manifest.pg_version_num)?;
            (Some(bin_dir.clone()), None)
        }
        None => {
            let major = manifest.pg_version_num / 10000;
            match restore::binaries_for(&restore::usual_binaries(major), manifest.pg_version_num) {
                Ok(found) => (found, None),
                Err(e) => (None, Some(format!("{e} ({})", e.hint()))),
            }
        }
    };
    if let (Some(warning), false) = (&binaries_warning, args.json) {
        eprintln!("warning: {warning}");
    }
    if !args.json {
        eprintln!(
            "restoring backup {} ({}, ends {} at LSN {}) into {}",
            manifest.id,
            manifest.kind.as_str(),
            time_text(manifest.stop_time),
            manifest.stop_lsn,
            args.target_dir.display()
        );
    }
    let options = RestoreOptions {
        target_dir: args.target_dir.clone(),
        tablespace_map: args.tablespace_map.iter().cloned().collect::<HashMap<_, _>>(),
        delta: args.delta,
        parallel: args.parallel,
        sparse_databases: Default::default(),
    };
    let progress = Arc::new(RestoreProgress::default());
    let bar = bar(
        args.json,
        manifest.stats.bytes,
        "{spinner} restoring [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    );
    let started = SystemTime::now();
    let summary = runtime.block_on(async {
        let cancel = CancellationToken::new();
        let work = restore::restore(&repository, &manifest, &options, progress.clone(), &cancel);
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    bar.set_position(progress.bytes_done.load(Ordering::Relaxed));
                }
            }
        }
    })?;
    bar.finish_and_clear();

    // Recovery settings come from these arguments, never from the repository.
    let mut settings = vec![("restore_command", restore_command(&resolved, repository.cluster(), args.standby)?)];
    // The restored cluster has a key of its own; it keeps trusting the one(s) this restore trusted.
    if !resolved.trusted_keys.is_empty() {
        settings.push(("backstop.trusted_keys", resolved.trusted_keys.join(",")));
    }
    if !args.standby && !args.as_primary {
        let mut from = format!(
            "backup {} restored {}",
            manifest.id,
            time_text(backstop_core::time::unix_seconds(SystemTime::now()))
        );
        if resolved.trust_unauthenticated {
            from.push_str(", reading objects no trusted key signed (--trust-unauthenticated)");
        }
        settings.push(("archive_mode", "off".into()));
        settings.push(("backstop.scheduler", "off".into()));
        settings.push(("backstop.restored_from", from));
    }
    // What this restore trusted, kept with the restored cluster for whoever audits it later.
    let record = serde_json::json!({
        "backup_id": manifest.id,
        "restored_at": time_text(backstop_core::time::unix_seconds(SystemTime::now())),
        "repository": repository.describe(),
        "trusted_keys": resolved.trusted_keys,
        "trusted_unauthenticated": resolved.trust_unauthenticated,
        "unauthenticated_objects_read": backstop_core::auth::unauthenticated_count(),
        "as_primary": args.as_primary,
        "standby": args.standby,
    });
    let record_path = args.target_dir.join("backstop_restore.json");
    backstop_core::store::file::write_file_atomically(&record_path, record.to_string().as_bytes())?;
    if args.standby {
        if let Some(conninfo) = &args.primary_conninfo {
            settings.push(("primary_conninfo", conninfo.clone()));
        }
        settings.push(("recovery_target_timeline", args.target_timeline.clone()));
    } else {
        if let Some(setting) = target.setting() {
            settings.push(setting);
            let action = match args.target_action {
                TargetAction::Promote => "promote",
                TargetAction::Pause => "pause",
                TargetAction::Shutdown => "shutdown",
            };
            settings.push(("recovery_target_action", action.into()));
        }
        settings.push(("recovery_target_timeline", args.target_timeline.clone()));
    }
    restore::prepare_recovery(&args.target_dir, &manifest, &settings, args.standby)?;
    let seconds = started.elapsed().unwrap_or_default().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backup_id": manifest.id,
                "target_dir": args.target_dir,
                "recovery_target": target.setting().map(|(k, v)| format!("{k} = {v}")),
                "standby": args.standby,
                "seconds": seconds,
                "summary": summary,
                "pg_bin": pg_bin,
                "warning": binaries_warning,
            })
        );
    } else {
        println!(
            "restored backup {} into {}: {} files, {} bytes ({} fetched, {} kept) in {:.1} s",
            manifest.id,
            args.target_dir.display(),
            summary.files,
            summary.bytes,
            summary.bytes_fetched,
            summary.bytes_kept,
            seconds
        );
        match target.setting() {
            Some((key, value)) if !args.standby => {
                println!("recovery stops at {key} = '{value}'; start the server to recover")
            }
            _ if args.standby => println!(
                "standby.signal written; start the server to follow the archive{}",
                if args.primary_conninfo.is_some() { " and the primary" } else { "" }
            ),
            _ => println!("recovery replays all archived WAL; start the server to recover"),
        }
        if let Some(dir) = &pg_bin {
            println!("start it with PostgreSQL {}'s programs: {}", manifest.pg_version_num / 10000, dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
