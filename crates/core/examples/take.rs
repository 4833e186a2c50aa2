//! Takes the file-copy part of a base backup of a (stopped) data directory into a file repository
//! and prints the time and counters: for profiling the pipeline without a server.
//!   cargo run --release -p backstop-core --example take -- DATA_DIR REPOSITORY_DIR [zstd level]
use std::sync::Arc;
use std::time::Instant;

use backstop_core::backups::take::{self, Progress, TakeOptions};
use backstop_core::backups::BackupKind;
use backstop_core::codec::{CodecSettings, Compression};
use backstop_core::repository::CancellationToken;
use backstop_core::store::file::FileStore;
use backstop_core::Repository;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let level: i32 = args.get(3).map(|l| l.parse().expect("a zstd level")).unwrap_or(3);
    let runtime = backstop_core::runtime::build(2, "take").expect("runtime");
    let store = Arc::new(FileStore::new(args[2].clone().into()));
    let repository =
        Repository::new(store, "profile", CodecSettings::new(Compression::zstd(level).unwrap(), vec![])).unwrap();
    let started = Instant::now();
    let taken = runtime
        .block_on(take::copy_files(
            &repository,
            TakeOptions {
                data_dir: args[1].clone().into(),
                kind: BackupKind::Full,
                previous: None,
                reread_after: take::DEFAULT_REREAD_AFTER,
                include_manifest_key: false,
                parallel: 2,
                page_checks: None,
                changed: None,
            },
            Arc::new(Progress::default()),
            &CancellationToken::new(),
        ))
        .expect("copy");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} files, {} MB read, {} MB new, {} MB stored, {} packs in {seconds:.2} s ({:.0} MB/s)",
        taken.stats.files,
        taken.stats.bytes_read >> 20,
        taken.stats.bytes_new >> 20,
        taken.stats.bytes_stored >> 20,
        taken.stats.packs_new,
        taken.stats.bytes_read as f64 / 1e6 / seconds
    );
}
