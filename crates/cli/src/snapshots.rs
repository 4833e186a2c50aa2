//! `backstop snapshots`: the table snapshots in a repository, readable while the server is down.

use std::io::IsTerminal;
use std::process::ExitCode;

use backstop_core::codec::CodecSettings;
use backstop_core::repository::CancellationToken;
use backstop_core::snapshot::stored::{self, TableFilter};
use backstop_core::Error;
use clap::{Args, Subcommand};

use crate::config::RepositoryArgs;

#[derive(Subcommand)]
pub enum SnapshotsCommand {
    /// List table snapshots, newest first; with --verify, read every data object through and check
    /// it against its checksums and its manifest. Exit 1 when any snapshot is incomplete or fails.
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this table: `schema.table`, or `table` in any schema (names as stored, unquoted).
    #[arg(long)]
    pub table: Option<String>,
    /// Read every data object and check it (encrypted ones need --identity-file).
    #[arg(long)]
    pub verify: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repository: RepositoryArgs,
}

pub fn run(command: SnapshotsCommand) -> Result<ExitCode, Error> {
    let SnapshotsCommand::List(args) = command;
    let runtime = backstop_core::runtime::build(2, "backstop-io").map_err(|e| Error::io("start", "runtime", e))?;
    let (repository_args, _) = args.repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(CodecSettings::plain()))?;
    let filter = match args.table.as_deref().map(|t| t.split_once('.')) {
        None => TableFilter::default(),
        Some(Some((schema, table))) => TableFilter { schema: Some(schema.into()), table: Some(table.into()) },
        Some(None) => TableFilter { schema: None, table: args.table.clone() },
    };
    // The bar's length is only known once the manifests are read: it starts empty and grows.
    let bar = progress_bar(&args);
    let rows = stored::check_snapshots(
        &repository,
        runtime.handle(),
        &filter,
        args.verify,
        &CancellationToken::new(),
        |copied| bar.set_position(copied),
    )?;
    bar.finish_and_clear();

    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "snapshot_id": r.snapshot.id.as_str(),
                    "schema": r.snapshot.schema,
                    "table": r.snapshot.table,
                    "taken_at": r.manifest.as_ref().map(|m| m.taken_at.clone()),
                    "rows": r.manifest.as_ref().map(|m| m.rows),
                    "stored_bytes": r.manifest.as_ref().map(|m| m.data.stored_bytes),
                    "lsn": r.manifest.as_ref().map(|m| m.lsn.clone()),
                    "verified": r.state.verified(),
                    "problem": r.state.problem(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "repository": repository.describe(), "snapshots": json }));
    } else {
        for r in &rows {
            let (taken, count, bytes) = match &r.manifest {
                Some(m) => (m.taken_at.clone(), format!("{} rows", m.rows), format!("{} bytes", m.data.stored_bytes)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let state = match (r.state.verified(), r.state.problem()) {
                (Some(false), Some(problem)) => format!("FAILED: {problem}"),
                (_, Some(problem)) => problem,
                (Some(true), None) => "verified".to_string(),
                _ => "not verified".to_string(),
            };
            println!("{} {}.{} {taken} {count} {bytes} {state}", r.snapshot.id, r.snapshot.schema, r.snapshot.table);
        }
        let failed = rows.iter().filter(|r| r.state.verified() == Some(false)).count();
        println!("{} snapshots in {}, {failed} with problems", rows.len(), repository.describe());
    }
    // Exit 1 when a snapshot is unusable, or when verification could not run at all.
    let unusable = rows.iter().any(|r| r.state.verified() == Some(false));
    let unverified = args.verify && rows.iter().any(|r| r.state.verified().is_none());
    Ok(if unusable || unverified { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn progress_bar(args: &ListArgs) -> indicatif::ProgressBar {
    if !args.verify || args.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} verifying {bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
