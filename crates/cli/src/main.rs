//! `backstop`: the parts of backstop that run while the server is down or outside it.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod backups;
mod config;
mod logical;
mod recover;
mod snapshots;
mod wal;

use config::RepositoryArgs;

#[derive(Parser)]
#[command(name = "backstop", version, about = "PostgreSQL backups you can prove will restore")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that a repository is usable: write, read back, list and delete a probe object.
    Check(CheckArgs),
    /// Generate an age identity for encrypting backups; prints the secret identity and its public key.
    Keygen,
    /// WAL archive: fetch (restore_command), push (archive_command), list, verify.
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Base backups: list what the repository holds.
    #[command(subcommand)]
    Backups(backups::BackupsCommand),
    /// Read every pack of every base backup and check it, and the WAL after each backup for gaps.
    Verify(backups::VerifyArgs),
    /// Rebuild a data directory from a base backup, ready for point-in-time recovery (server stopped).
    Restore(Box<backups::RestoreArgs>),
    /// One table (or several) as it was at a recovery target, written with pg_dump while the server
    /// is down: the table's database restored into a scratch directory, replayed there and read.
    RecoverTable(Box<recover::RecoverTableArgs>),
    /// Table snapshots: list (and verify) what the repository holds.
    #[command(subcommand)]
    Snapshots(snapshots::SnapshotsCommand),
    /// Logical backups (pg_dump): list what the repository holds.
    #[command(subcommand)]
    Logical(logical::LogicalCommand),
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    repository: RepositoryArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check(args).map(|()| ExitCode::SUCCESS),
        Command::Keygen => keygen().map(|()| ExitCode::SUCCESS),
        Command::Wal(command) => wal::run(command),
        Command::Snapshots(command) => snapshots::run(command),
        Command::Logical(command) => logical::run(command),
        Command::Backups(backups::BackupsCommand::List(args)) => backups::list(args),
        Command::Verify(args) => backups::verify(args),
        Command::Restore(args) => backups::restore(*args),
        Command::RecoverTable(args) => recover::recover_table(*args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("backstop: {error}");
            eprintln!("hint: {}", error.hint());
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs) -> Result<(), backstop_core::Error> {
    let runtime =
        backstop_core::runtime::build(2, "backstop-io").map_err(|e| backstop_core::Error::io("start", "runtime", e))?;
    let (repository_args, _) = args.repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(backstop_core::codec::CodecSettings::plain()))?;
    let elapsed = runtime.block_on(repository.round_trip_check())?;
    let cluster = runtime.block_on(repository.cluster_file())?;
    if args.json {
        let report = serde_json::json!({
            "repository": repository.describe(),
            "round_trip_ms": elapsed.as_millis() as u64,
            "cluster": cluster,
        });
        println!("{report}");
    } else {
        println!("{}: write, read back, list and delete took {} ms", repository.describe(), elapsed.as_millis());
        match cluster {
            Some(file) => println!("namespace owned by system identifier {}", file.system_identifier),
            None => println!("namespace not claimed yet (no cluster.json)"),
        }
    }
    Ok(())
}

fn keygen() -> Result<(), backstop_core::Error> {
    let (identity, recipient) = backstop_core::codec::generate_identity();
    println!("# public key: {recipient}");
    println!("# set backstop.encryption_recipients = '{recipient}' on the server;");
    println!("# keep this identity off the server: restores need it.");
    println!("{identity}");
    Ok(())
}
