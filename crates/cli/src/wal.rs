//! `backstop wal ...`: fetch for restore_command, push for archive_command, list and verify.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::StreamExt;

use backstop_core::backups::verify::{archived_wal, ArchivedWal};
use backstop_core::codec::CodecSettings;
use backstop_core::repository::{ClusterIdentity, PutResult, Verified};
use backstop_core::spool::Spool;
use backstop_core::store::file::write_file_atomically;
use backstop_core::wal::{self, WalFileKind, WalFileName};
use backstop_core::{Error, Repository};

use crate::config::{RepositoryArgs, WriteArgs};

/// restore_command exit codes. PostgreSQL takes 1 as "not in the archive" (end of recovery or
/// keep waiting); above 125 it aborts recovery instead of ending it early at the wrong point.
const EXIT_NOT_FOUND: u8 = 1;
const EXIT_ABORT_RECOVERY: u8 = 255;

#[derive(Subcommand)]
pub enum WalCommand {
    /// Fetch a WAL file for restore_command: `backstop wal fetch %f %p`. Verifies every checksum,
    /// writes the file atomically, and prefetches the following segments into a spool directory.
    /// Exit 0: fetched; 1: not in the archive; 255: error (recovery stops rather than ending early).
    Fetch(FetchArgs),
    /// Archive a WAL file for archive_command: `backstop wal push %p`. Exit 0 only once stored.
    Push(PushArgs),
    /// List the archived WAL files.
    List(ListArgs),
    /// Check every archived WAL object's checksums and look for gaps in each timeline.
    Verify(VerifyArgs),
    /// Print the transactions, restore points and row changes in WAL segment files (for example
    /// a copy of pg_wal), one line each: what pg_waldump shows, without the grep.
    Records(RecordsArgs),
}

#[derive(Args)]
pub struct RecordsArgs {
    /// WAL segment files (or .partial files), read in name order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Only transaction ends and restore points (no row changes or file events).
    #[arg(long)]
    pub transactions: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct FetchArgs {
    /// WAL file name (%f).
    pub file: String,
    /// Where PostgreSQL wants it (%p), relative to the data directory.
    pub destination: PathBuf,
    /// How many following segments to fetch ahead, in parallel.
    #[arg(long, env = "BACKSTOP_PREFETCH", default_value_t = 8)]
    pub prefetch: usize,
    /// Spool directory for prefetched segments (default: backstop-spool next to the destination).
    #[arg(long, env = "BACKSTOP_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// The server is a standby (also assumed when standby.signal is in the working directory, the
    /// data directory): a transient store error exits 1 so PostgreSQL retries, instead of 255.
    #[arg(long)]
    pub standby: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

#[derive(Args)]
pub struct PushArgs {
    /// Path of the WAL file (%p); its name is the file name.
    pub path: PathBuf,
    #[command(flatten)]
    pub repository: RepositoryArgs,
    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
    /// Objects checked at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
}

pub fn run(command: WalCommand) -> Result<ExitCode, Error> {
    let runtime = backstop_core::runtime::build(4, "backstop-io").map_err(|e| Error::io("start", "runtime", e))?;
    match command {
        WalCommand::Fetch(args) => fetch(&runtime, args),
        WalCommand::Push(args) => runtime.block_on(push(args)),
        WalCommand::List(args) => runtime.block_on(list(args)),
        WalCommand::Verify(args) => runtime.block_on(verify(args)),
        WalCommand::Records(args) => records(args),
    }
}

async fn segment_size(repository: &Repository) -> u32 {
    match repository.cluster_file().await {
        Ok(Some(file)) => file.wal_segment_size,
        _ => wal::DEFAULT_SEGMENT_SIZE,
    }
}

fn fetch(runtime: &tokio::runtime::Runtime, args: FetchArgs) -> Result<ExitCode, Error> {
    // restore_command must tell "not there" from "could not look": only the first may end recovery.
    match fetch_inner(runtime, &args) {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => {
            eprintln!("backstop: {} is not in the archive", args.file);
            Ok(ExitCode::from(EXIT_NOT_FOUND))
        }
        Err(error) if error.is_transient() && is_standby(&args) => {
            // A standby asks again (after trying streaming replication); 255 would shut it down.
            eprintln!("backstop: could not fetch {} (standby: PostgreSQL will retry): {error}", args.file);
            eprintln!("hint: {}", error.hint());
            Ok(ExitCode::from(EXIT_NOT_FOUND))
        }
        Err(error) => {
            eprintln!("backstop: could not fetch {}: {error}", args.file);
            eprintln!("hint: {}", error.hint());
            Ok(ExitCode::from(EXIT_ABORT_RECOVERY))
        }
    }
}

/// restore_command runs in the data directory, where a standby has its standby.signal.
fn is_standby(args: &FetchArgs) -> bool {
    args.standby || Path::new("standby.signal").exists()
}

/// How long a seen namespace is trusted without asking a remote store again. File repositories are
/// checked every time (a stat): an unmounted directory must never pass for an empty archive.
const NAMESPACE_SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(60);
const NAMESPACE_MARKER: &str = ".namespace-seen";

/// Proves the namespace is there before a missing file may be reported as "not archived" (design
/// rule 9). A remote store's answer is remembered in the spool for a minute, so a standby polling
/// for the next segment does not pay an extra round trip on every poll.
async fn check_namespace(repository: &Repository, spool: &Spool) -> Result<(), Error> {
    let marker = spool.dir().join(NAMESPACE_MARKER);
    let remote = !repository.store().lookups_are_local();
    if remote {
        let fresh = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < NAMESPACE_SEEN_FOR));
        if fresh && std::fs::read_to_string(&marker).is_ok_and(|seen| seen == repository.describe()) {
            return Ok(());
        }
    }
    repository.check_namespace_visible().await?;
    if remote {
        let _ = write_file_atomically(&marker, repository.describe().as_bytes());
    }
    Ok(())
}

fn default_spool_dir(destination: &Path) -> PathBuf {
    let parent = destination.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parent.join("backstop-spool")
}

/// Ok(false) when the file is not archived.
fn fetch_inner(runtime: &tokio::runtime::Runtime, args: &FetchArgs) -> Result<bool, Error> {
    let name = WalFileName::parse(&args.file)?;
    let (repository_args, _) = args.repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(CodecSettings::plain()))?;
    let spool = Spool::open(args.spool_dir.clone().unwrap_or_else(|| default_spool_dir(&args.destination)))?;
    let _ = spool.prune_before(&name);

    if let Some(raw) = spool.take(&name)? {
        match runtime.block_on(repository.decode(&backstop_core::layout::wal(&name), raw)) {
            Ok(plain) => {
                write_file_atomically(&args.destination, &plain)?;
                return Ok(true);
            }
            // A damaged spool file is only a cache miss: fetch it again from the repository.
            Err(error) => eprintln!("backstop: spooled copy of {} refused ({error}); fetching it again", name.name),
        }
    }

    runtime.block_on(async {
        let segment_size = segment_size(&repository).await;
        let mut upcoming = Vec::new();
        if name.kind == WalFileKind::Segment {
            let mut next = name.next_segment(segment_size);
            while let Some(segment) = next.filter(|_| upcoming.len() < args.prefetch) {
                next = segment.next_segment(segment_size);
                if !spool.contains(&segment) {
                    upcoming.push(segment);
                }
            }
        }
        let requested_path = backstop_core::layout::wal(&name);
        let requested = repository.get_raw(&requested_path);
        let ahead = futures::stream::iter(upcoming)
            .map(|segment| {
                let repository = &repository;
                async move { (repository.get_raw(&backstop_core::layout::wal(&segment)).await, segment) }
            })
            .buffered(args.prefetch.max(1))
            .collect::<Vec<_>>();
        let (requested, ahead) = futures::join!(requested, ahead);
        for (fetched, segment) in ahead {
            match fetched {
                Ok(raw) => {
                    if let Err(error) = spool.put(&segment, &raw) {
                        eprintln!("backstop: could not spool {}: {error}", segment.name);
                    }
                }
                // The end of the archive, or a problem the request for that segment will report.
                Err(_) => break,
            }
        }
        let raw = match requested {
            Ok(raw) => raw,
            Err(Error::NotFound { .. }) => {
                check_namespace(&repository, &spool).await?;
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        let plain = repository.decode(&backstop_core::layout::wal(&name), raw).await?;
        write_file_atomically(&args.destination, &plain)?;
        Ok(true)
    })
}

/// The namespace a file is pushed into, and the system identifier the data directory's pg_control
/// records (when `%p` lies in a data directory's pg_wal). Never guessed: `.history` and `.backup`
/// files carry no system identifier, so without --cluster they need pg_control.
fn push_namespace(
    args: &PushArgs,
    name: &WalFileName,
    contents: &[u8],
) -> Result<(Option<String>, Option<u64>), Error> {
    let control = match wal::control_file_for(&args.path) {
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => Some(wal::control_file_system_identifier(&path, &bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", path, e)),
        },
        None => None,
    };
    let own = control.or_else(|| wal::segment_system_identifier(name, contents));
    Ok((own.map(|id| id.to_string()), control.or(own)))
}

async fn push(args: PushArgs) -> Result<ExitCode, Error> {
    let (mut repository_args, config) = args.repository.resolve()?;
    let codec = args.write.codec(&config)?;
    let file = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidSetting {
            setting: "path",
            reason: format!("{} has no file name", args.path.display()),
        })?
        .to_string();
    let name = WalFileName::parse(&file)?;
    let contents = std::fs::read(&args.path).map_err(|e| Error::io("read", &args.path, e))?;
    let (default_namespace, own_system_identifier) = push_namespace(&args, &name, &contents)?;
    // The server's default namespace is its system identifier; never the repository's only cluster.
    if repository_args.cluster.is_none() {
        repository_args.cluster = Some(default_namespace.ok_or_else(|| Error::InvalidSetting {
            setting: "cluster",
            reason: format!(
                "{file} carries no system identifier and no global/pg_control lies next to its pg_wal directory, \
                 so its cluster cannot be told: pass --cluster (the server's backstop.cluster_name, by default its \
                 system identifier)"
            ),
        })?);
    }
    // Signed with the cluster's own key, as the server signs what it archives: created once, in
    // the data directory, if the server has not created it yet.
    let data_dir = wal::control_file_for(&args.path)
        .and_then(|c| c.parent()?.parent().map(Path::to_path_buf))
        .or_else(|| repository_args.data_dir.clone())
        .ok_or_else(|| Error::InvalidSetting {
            setting: "data-dir",
            reason: format!(
                "{} does not lie in a data directory's pg_wal, so the cluster's signing key cannot be found: pass \
                 --data-dir",
                args.path.display()
            ),
        })?;
    let signer = backstop_core::auth::load_or_create_signing_key(&data_dir)?;
    let repository = repository_args.open_signing(codec, signer).await?;
    // The namespace's owner is authoritative; an unclaimed namespace is claimed by the file's cluster.
    let cluster_key = repository.key(&backstop_core::layout::cluster_file());
    // The data directory's PG_VERSION says the major ("17"); 0 where it cannot be read.
    let major = std::fs::read_to_string(data_dir.join("PG_VERSION"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let system_identifier = match (repository.cluster_file().await?, own_system_identifier) {
        (Some(owner), own) => {
            let owner_id = owner.system_identifier(&cluster_key)?;
            let owner_major = owner.pg_version_num / 10000;
            if major != 0 && owner_major != 0 && major != owner_major {
                return Err(Error::ForeignMajorVersion {
                    store: repository.describe(),
                    expected: major,
                    found: owner_major,
                });
            }
            // Segments are checked against their own page header below, with a sharper message.
            let text_file = wal::segment_system_identifier(&name, &contents).is_none();
            if let Some(own) = own.filter(|own| text_file && *own != owner_id) {
                return Err(Error::ForeignCluster {
                    store: repository.describe(),
                    expected: own.to_string(),
                    found: owner_id.to_string(),
                });
            }
            owner_id
        }
        (None, Some(own)) => {
            let segment_size = wal::parse_long_page_header(&contents)
                .filter(|_| wal::segment_system_identifier(&name, &contents).is_some())
                .map(|h| h.segment_size)
                .unwrap_or(wal::DEFAULT_SEGMENT_SIZE);
            let identity = ClusterIdentity {
                system_identifier: own,
                pg_version_num: major * 10000,
                wal_segment_size: segment_size,
            };
            repository.ensure_cluster(&identity).await?;
            own
        }
        (None, None) => {
            return Err(Error::InvalidSetting {
                setting: "cluster",
                reason: format!("{} is not claimed yet: archive a WAL segment before {file}", repository.describe()),
            })
        }
    };
    match wal::archive_file(&repository, &file, contents, system_identifier).await? {
        PutResult::Stored { .. } => Ok(ExitCode::SUCCESS),
        PutResult::AlreadyIdentical { .. } => {
            eprintln!("backstop: {file} was already archived with identical contents");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn kind_label(kind: WalFileKind) -> &'static str {
    match kind {
        WalFileKind::Segment => "segment",
        WalFileKind::Partial => "partial",
        WalFileKind::Backup => "backup",
        WalFileKind::History => "history",
    }
}

/// The repository, its archived WAL files in order, and the gaps between them.
async fn archive_contents(args: &RepositoryArgs) -> Result<(Repository, Vec<ArchivedWal>, Vec<wal::Gap>), Error> {
    let (repository_args, _) = args.resolve()?;
    let repository = repository_args.open(CodecSettings::plain()).await?;
    let files = archived_wal(&repository).await?;
    let gaps = wal::find_gaps(files.iter().map(|f| &f.name), segment_size(&repository).await);
    Ok((repository, files, gaps))
}

fn describe_gap(gap: &wal::Gap) -> String {
    format!(
        "gap on timeline {}: {} to {} ({} segments missing)",
        gap.timeline, gap.first_missing, gap.last_missing, gap.count
    )
}

fn records(args: RecordsArgs) -> Result<ExitCode, Error> {
    use backstop_core::wal::events::{Decoder, Event};
    use backstop_core::wal::records::SegmentEnd;
    use std::io::Write;
    let mut files: Vec<(WalFileName, &PathBuf)> = Vec::new();
    for path in &args.files {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = WalFileName::parse(&file_name)?;
        if !matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
            return Err(Error::InvalidInput(format!("{} is not a WAL segment or .partial file", path.display())));
        }
        files.push((name, path));
    }
    files.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut decoder = None;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (name, path) in files {
        // Read whole: a segment is 16 MB by default (at most 1 GB), one at a time.
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let segment_size = wal::parse_long_page_header(&bytes)
            .map(|h| h.segment_size)
            .ok_or_else(|| Error::InvalidInput(format!("{} does not start with a WAL page header", path.display())))?;
        let decoder = decoder.get_or_insert_with(|| Decoder::new(segment_size));
        let end = decoder.segment(&name, &bytes, &mut |found| {
            if args.transactions && !matches!(found.event, Event::Xact(_) | Event::RestorePoint { .. }) {
                return Ok(());
            }
            let line = match args.json {
                true => serde_json::to_string(&found).map_err(|e| Error::InvalidInput(e.to_string()))?,
                false => found.to_string(),
            };
            writeln!(out, "{line}").map_err(|e| Error::io("write", "standard output", e))
        })?;
        if let SegmentEnd::Ended { lsn, reason } = end {
            eprintln!("{}: the WAL ends at {}: {reason}", name.name, backstop_core::wal::Lsn(lsn));
        }
    }
    out.flush().map_err(|e| Error::io("write", "standard output", e))?;
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> Result<ExitCode, Error> {
    let (repository, files, gaps) = archive_contents(&args.repository).await?;
    if args.json {
        let files: Vec<_> = files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name.name,
                    "kind": kind_label(f.name.kind),
                    "timeline": f.name.timeline,
                    "stored_bytes": f.stored_bytes,
                    "modified": f.modified.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "repository": repository.describe(), "files": files, "gaps": gaps }));
    } else {
        for f in &files {
            let modified = f.modified.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default();
            println!("{:<42} {:<8} {:>12} {}", f.name.name, kind_label(f.name.kind), f.stored_bytes, modified);
        }
        println!("{} files in {}", files.len(), repository.describe());
        for gap in &gaps {
            println!("{}", describe_gap(gap));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(args: VerifyArgs) -> Result<ExitCode, Error> {
    let (repository, files, gaps) = archive_contents(&args.repository).await?;

    let progress = if !args.json && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} verifying {pos}/{len} [{bar:40}] {per_sec} {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let results: Vec<(String, Result<Verified, Error>)> = futures::stream::iter(files.iter())
        .map(|f| {
            let repository = &repository;
            let progress = &progress;
            async move {
                let result = repository.verify(&backstop_core::layout::wal(&f.name)).await;
                progress.inc(1);
                progress.set_message(f.name.name.clone());
                (f.name.name.clone(), result)
            }
        })
        .buffered(args.parallel.max(1))
        .collect()
        .await;
    progress.finish_and_clear();

    let contents = results.iter().filter(|(_, r)| matches!(r, Ok(Verified::Contents(_)))).count();
    let stored_only = results.iter().filter(|(_, r)| matches!(r, Ok(Verified::StoredBytes(_)))).count();
    let failures: Vec<(String, String)> =
        results.iter().filter_map(|(name, r)| r.as_ref().err().map(|e| (name.clone(), e.to_string()))).collect();
    let ok = failures.is_empty() && gaps.is_empty();
    if args.json {
        let failures: Vec<_> = failures.iter().map(|(n, e)| serde_json::json!({ "name": n, "error": e })).collect();
        println!(
            "{}",
            serde_json::json!({
                "repository": repository.describe(),
                "ok": ok,
                "objects": results.len(),
                "verified_contents": contents,
                "verified_stored_bytes_only": stored_only,
                "failures": failures,
                "gaps": gaps,
            })
        );
    } else {
        println!("{}: {} WAL objects", repository.describe(), results.len());
        println!("  {contents} verified completely");
        if stored_only > 0 {
            println!(
                "  {stored_only} encrypted: stored bytes verified; pass --identity-file to verify their contents too"
            );
        }
        for (name, error) in &failures {
            println!("  FAILED {name}: {error}");
        }
        for gap in &gaps {
            println!("  {}", describe_gap(gap));
        }
        println!("{}", if ok { "archive OK" } else { "archive has problems" });
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
