//! `backstop snapshots`: the table snapshots in a repository, readable while the server is down.

use std::io::IsTerminal;
use std::process::ExitCode;

use backstop_core::codec::CodecSettings;
use backstop_core::snapshot::stored::{self, StoredSnapshot};
use backstop_core::snapshot::SnapshotManifest;
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

struct Row {
    snapshot: StoredSnapshot,
    manifest: Option<SnapshotManifest>,
    /// Why the snapshot cannot be used, if it cannot.
    problem: Option<String>,
    /// None when its data object was not read.
    verified: Option<bool>,
}

pub fn run(command: SnapshotsCommand) -> Result<ExitCode, Error> {
    let SnapshotsCommand::List(args) = command;
    let runtime = backstop_core::runtime::build(2, "backstop-io").map_err(|e| Error::io("start", "runtime", e))?;
    let (repository_args, _) = args.repository.resolve()?;
    let repository = runtime.block_on(repository_args.open(CodecSettings::plain()))?;
    let filter = args.table.as_deref().map(|t| match t.split_once('.') {
        Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
        None => (None, t.to_string()),
    });
    let listed = runtime.block_on(stored::list(&repository, None))?;
    let mut rows: Vec<Row> = Vec::new();
    for snapshot in listed {
        if let Some((schema, table)) = &filter {
            if &snapshot.table != table || schema.as_ref().is_some_and(|s| s != &snapshot.schema) {
                continue;
            }
        }
        let (manifest, problem) = match runtime.block_on(stored::read_manifest(&repository, &snapshot)) {
            Ok(manifest) => (Some(manifest), None),
            Err(Error::NotFound { .. }) => (None, Some("incomplete: no manifest".to_string())),
            Err(e) => (None, Some(e.to_string())),
        };
        let verified = if problem.is_some() { Some(false) } else { None };
        rows.push(Row { snapshot, manifest, problem, verified });
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.manifest.as_ref().map(|m| m.taken_at_unix_ms).unwrap_or(i64::MIN)));

    if args.verify {
        let bar = progress_bar(&args, rows.iter().filter_map(|r| r.manifest.as_ref()).map(|m| m.data.bytes).sum());
        for row in rows.iter_mut() {
            let Some(manifest) = &row.manifest else { continue };
            let done = bar.position();
            let result = stored::read_data(
                &repository,
                runtime.handle(),
                &row.snapshot,
                manifest,
                &mut std::io::sink(),
                |copied| bar.set_position(done + copied),
            );
            bar.set_position(done + manifest.data.bytes);
            match result {
                Ok(()) => row.verified = Some(true),
                Err(e) => {
                    row.verified = Some(false);
                    row.problem = Some(e.to_string());
                }
            }
        }
        bar.finish_and_clear();
    }

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
                    "verified": r.verified,
                    "problem": r.problem,
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
            let state = match (r.verified, &r.problem) {
                (_, Some(problem)) => format!("FAILED: {problem}"),
                (Some(true), None) => "verified".to_string(),
                _ => "not verified".to_string(),
            };
            println!("{} {}.{} {taken} {count} {bytes} {state}", r.snapshot.id, r.snapshot.schema, r.snapshot.table);
        }
        let failed = rows.iter().filter(|r| r.problem.is_some()).count();
        println!("{} snapshots in {}, {failed} with problems", rows.len(), repository.describe());
    }
    Ok(if rows.iter().any(|r| r.problem.is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn progress_bar(args: &ListArgs, total: u64) -> indicatif::ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} verifying [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
