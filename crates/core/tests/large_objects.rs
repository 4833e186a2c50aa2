//! Large objects: bounded memory in both directions, and a real S3 server stopped mid-upload.
//! Tests in this binary run one at a time: they measure this process's heap, and one of them stops
//! the shared Garage server.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use backstop_core::codec::{CodecSettings, Compression};
use backstop_core::repository::PutResult;
use backstop_core::{Error, ObjectPath, Repository, WriteMode};
use common::{Backend, NoiseSource};

struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            if new_size > layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const OBJECT_SIZE: usize = 64 << 20;
const PIECE: usize = 1 << 20;

/// Peak heap growth while `work` runs, in bytes.
fn peak_growth<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let result = work();
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(baseline))
}

fn full_pipeline(identity: &age::x25519::Identity) -> CodecSettings {
    CodecSettings::new(Compression::zstd(3).unwrap(), vec![identity.to_public()])
}

async fn write_noise(repo: &Repository, relative: &ObjectPath, seed: u64, size: usize) -> Result<PutResult, Error> {
    let mut writer = repo.writer(relative, WriteMode::CreateNew).await?;
    let mut noise = NoiseSource::new(seed);
    let mut piece = vec![0u8; PIECE];
    for _ in 0..size / PIECE {
        noise.fill(&mut piece);
        writer.write(&piece).await?;
    }
    writer.finish().await
}

/// Reads the object back in pieces, comparing it with the regenerated noise as it goes.
fn read_and_compare(repo: &Repository, handle: &tokio::runtime::Handle, relative: &ObjectPath, seed: u64) -> usize {
    let mut reader = repo.open(handle, relative).unwrap();
    let mut expected = NoiseSource::new(seed);
    let (mut got, mut want) = (vec![0u8; PIECE], vec![0u8; PIECE]);
    let mut total = 0;
    loop {
        let mut filled = 0;
        while filled < PIECE {
            let n = reader.read(&mut got[filled..]).unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return total;
        }
        expected.fill(&mut want[..filled]);
        assert!(got[..filled] == want[..filled], "byte mismatch in piece at offset {total}");
        total += filled;
    }
}

fn bounded_round_trip(backend: Backend, name: &str) {
    let runtime = backstop_core::runtime::build(2, "test-io").unwrap();
    let identity = age::x25519::Identity::generate();
    let repo = common::signed_repository(backend.store.clone(), "cluster-a", full_pipeline(&identity))
        .with_identities(vec![identity]);
    let (stored, write_peak) =
        peak_growth(|| runtime.block_on(write_noise(&repo, &common::stream_path("big"), 11, OBJECT_SIZE)).unwrap());
    assert_eq!(stored.trailer().plain_len, OBJECT_SIZE as u64);
    let (read, read_peak) = peak_growth(|| read_and_compare(&repo, runtime.handle(), &common::stream_path("big"), 11));
    assert_eq!(read, OBJECT_SIZE);
    eprintln!(
        "{name}: 64 MiB object, peak heap growth writing {} MiB, reading {} MiB",
        write_peak >> 20,
        read_peak >> 20
    );
    assert!(write_peak < 40 << 20, "{name}: writing 64 MiB grew the heap by {write_peak} bytes");
    assert!(read_peak < 16 << 20, "{name}: reading 64 MiB grew the heap by {read_peak} bytes");
}

#[test]
fn file_64_mib_object_round_trips_in_bounded_memory() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    bounded_round_trip(common::file_backend(), "file");
}

#[test]
fn s3_64_mib_object_round_trips_in_bounded_memory() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = backstop_core::runtime::build(1, "setup").unwrap();
    let Some(backend) = runtime.block_on(common::s3_backend()) else { return };
    drop(runtime);
    bounded_round_trip(backend, "s3");
}

/// Restarts Garage when dropped, so a failing assertion cannot leave it stopped for other tests.
struct RestartOnDrop<'a>(&'a str);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        garage(self.0, "start");
    }
}

fn garage(ctl: &str, action: &str) {
    let status = std::process::Command::new(ctl).arg(action).stdout(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "{ctl} {action} failed");
}

#[test]
fn s3_server_stopped_mid_upload_returns_an_error_and_publishes_nothing() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut options) = common::s3_options() else { return };
    let ctl = std::env::var("BACKSTOP_TEST_GARAGE_CTL").expect("BACKSTOP_TEST_GARAGE_CTL names scripts/garage.sh");
    options.max_attempts = 2;
    let runtime = backstop_core::runtime::build(2, "test-io").unwrap();
    let backend = runtime.block_on(common::s3_backend_with(&options));
    let identity = age::x25519::Identity::generate();
    let repo = common::signed_repository(backend.store.clone(), "cluster-a", full_pipeline(&identity))
        .with_identities(vec![identity]);

    let outcome = {
        let _restart = RestartOnDrop(&ctl);
        runtime.block_on(async {
            let mut writer = repo.writer(&common::stream_path("outage"), WriteMode::CreateNew).await.unwrap();
            let mut noise = NoiseSource::new(5);
            let mut piece = vec![0u8; PIECE];
            for _ in 0..16 {
                noise.fill(&mut piece);
                writer.write(&piece).await.unwrap();
            }
            // Some parts are on the server now. Stop it and keep going.
            garage(&ctl, "stop");
            for _ in 0..16 {
                noise.fill(&mut piece);
                writer.write(&piece).await?;
            }
            writer.finish().await
        })
    };
    let error = outcome.expect_err("an upload to a stopped server must fail");
    assert!(matches!(error, Error::Backend { .. }), "{error}");
    assert!(error.to_string().contains("could not reach the server"), "{error}");

    // The server is back: nothing of the failed upload is visible, and the same upload now works.
    runtime.block_on(async {
        assert!(repo.head(&common::stream_path("outage")).await.unwrap().is_none());
        assert!(repo
            .store()
            .list_all(&format!("cluster-a/{}", backstop_core::layout::logical_database("outage").as_str()))
            .await
            .unwrap()
            .is_empty());
        let stored = write_noise(&repo, &common::stream_path("outage"), 5, 32 << 20).await.unwrap();
        assert!(matches!(stored, PutResult::Stored { .. }));
    });
    assert_eq!(read_and_compare(&repo, runtime.handle(), &common::stream_path("outage"), 5), 32 << 20);
}
