//! The physical limits behind the benchmarks, per core on this machine: SHA-256, zstd level 3 and
//! backstop's whole encoder on WAL-like data (hex text, about 2:1 compressible).
//!   cargo run --release -p backstop-core --example limits

use std::time::Instant;

use backstop_core::codec::{self, CodecSettings, Compression};
use sha2::{Digest, Sha256};

fn wal_like(len: usize) -> Vec<u8> {
    let mut state = 0x2545F4914F6CDD1Du64;
    let hex = b"0123456789abcdef";
    (0..len)
        .map(|i| {
            if i % 128 < 24 {
                0
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                hex[(state & 15) as usize]
            }
        })
        .collect()
}

fn rate(label: &str, bytes: usize, rounds: usize, mut work: impl FnMut()) {
    work();
    let started = Instant::now();
    for _ in 0..rounds {
        work();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{label:<34} {:>8.0} MB/s  {:>6.1} ms per 16 MiB segment",
        (bytes * rounds) as f64 / seconds / 1e6,
        seconds * 1e3 / rounds as f64
    );
}

fn main() {
    let segment = wal_like(16 << 20);
    let rounds = 10;
    rate("sha256", segment.len(), rounds, || {
        std::hint::black_box(Sha256::digest(&segment));
    });
    rate("zstd level 3 (bulk)", segment.len(), rounds, || {
        std::hint::black_box(zstd::bulk::compress(&segment, 3).unwrap());
    });
    let plain = CodecSettings::new(Compression::zstd(3).unwrap(), vec![]);
    // Every object is signed (Ed25519 over its header and trailer): the cost is in the numbers.
    let sign = codec::SignWith {
        key: backstop_core::auth::SigningKey::generate(),
        object_key: "cluster/wal/0000000100000000/000000010000000000000001".into(),
    };
    rate("backstop encode (zstd 3 + sha256 + ed25519)", segment.len(), rounds, || {
        std::hint::black_box(codec::encode_to_vec(&plain, &segment, Some(&sign)).unwrap());
    });
    let identity = age::x25519::Identity::generate();
    let encrypted = CodecSettings::new(Compression::zstd(3).unwrap(), vec![identity.to_public()]);
    rate("backstop encode + age", segment.len(), rounds, || {
        std::hint::black_box(codec::encode_to_vec(&encrypted, &segment, Some(&sign)).unwrap());
    });
    let (stored, _) = codec::encode_to_vec(&plain, &segment, Some(&sign)).unwrap();
    println!("compressed size: {:.1}% of plain", stored.len() as f64 * 100.0 / segment.len() as f64);
}
