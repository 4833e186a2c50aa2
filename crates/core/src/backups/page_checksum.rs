//! PostgreSQL's data page checksums, checked as a base backup reads relation files (as
//! pg_basebackup does): a page damaged on disk is reported when it is backed up, not when a
//! restore replays onto it. The algorithm is `storage/checksum_impl.h`'s (the same in 15 to 18):
//! 32 interleaved FNV-1a-like sums over the page read as native-endian 32-bit words, with the
//! page's own checksum field taken as zero, folded with the block number into 1..=65535.
//!
//! Which pages are judged, as in pg_basebackup: a new page (`pd_upper` = 0) is never checksummed;
//! a page whose LSN is at or past the backup's start is being written now and WAL replay rewrites
//! it, so it is skipped; a page that fails is read once more before it is reported (a read that
//! met a concurrent write sees the new LSN the second time).

/// PostgreSQL's block size (`BLCKSZ`); backstop supports the default only.
pub const BLOCK_SIZE: usize = 8192;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C, 0xF8D4474F,
    0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC,
    0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6,
    0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

fn mix(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// `pg_checksum_page`: the checksum `page` should carry as block `block` of its relation.
pub fn checksum(page: &[u8], block: u32) -> u16 {
    assert_eq!(page.len(), BLOCK_SIZE, "a page is {BLOCK_SIZE} bytes");
    let mut sums = BASE_OFFSETS;
    for (index, word) in page.chunks_exact(4).enumerate() {
        let mut bytes: [u8; 4] = word.try_into().expect("chunks of 4");
        if index == 2 {
            // pd_checksum (bytes 8 and 9) counts as zero.
            bytes[0] = 0;
            bytes[1] = 0;
        }
        let j = index % N_SUMS;
        sums[j] = mix(sums[j], u32::from_ne_bytes(bytes));
    }
    for _ in 0..2 {
        for sum in &mut sums {
            *sum = mix(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, sum| acc ^ sum) ^ block;
    ((folded % 65535) + 1) as u16
}

/// The page header fields the check needs.
fn lsn(page: &[u8]) -> u64 {
    let high = u32::from_ne_bytes(page[0..4].try_into().expect("4 bytes"));
    let low = u32::from_ne_bytes(page[4..8].try_into().expect("4 bytes"));
    (u64::from(high) << 32) | u64::from(low)
}

fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_ne_bytes(page[8..10].try_into().expect("2 bytes"))
}

fn is_new(page: &[u8]) -> bool {
    u16::from_ne_bytes(page[14..16].try_into().expect("2 bytes")) == 0
}

/// What the check makes of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// New, or written since the backup started: not judged.
    Skipped,
    Failed {
        stored: u16,
        computed: u16,
    },
}

/// Judges `page` as block `block`, for a backup that started at WAL position `start_lsn`.
pub fn verify(page: &[u8], block: u32, start_lsn: u64) -> Verdict {
    if is_new(page) || lsn(page) >= start_lsn {
        return Verdict::Skipped;
    }
    let computed = checksum(page, block);
    let stored = stored_checksum(page);
    if computed == stored {
        Verdict::Valid
    } else {
        Verdict::Failed { stored, computed }
    }
}

/// The segment number of a relation file's name (`16384.2` is segment 2; `16384` is 0), whose
/// first block is `segment * blocks_per_segment`.
pub fn segment_of(name: &str) -> u32 {
    name.rsplit_once('.').and_then(|(_, n)| n.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator the reference values below were made with, in C, against PostgreSQL 18's own
    /// storage/checksum_impl.h (`pg_checksum_page`).
    fn page(seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..BLOCK_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0xff) as u8
            })
            .collect()
    }

    #[test]
    fn the_checksum_is_postgresql_s() {
        for (seed, block, expected) in [
            (1, 0, 30572),
            (1, 7, 30565),
            (1, 131071, 5692),
            (2, 0, 10304),
            (2, 7, 10299),
            (2, 131071, 35875),
            (12345, 0, 31122),
            (12345, 7, 31121),
            (12345, 131071, 35672),
        ] {
            assert_eq!(checksum(&page(seed), block), expected, "seed {seed}, block {block}");
        }
    }

    fn valid_page(seed: u32, block: u32, lsn: u64) -> Vec<u8> {
        let mut page = page(seed);
        page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        page[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        page[14..16].copy_from_slice(&8000u16.to_ne_bytes());
        let sum = checksum(&page, block);
        page[8..10].copy_from_slice(&sum.to_ne_bytes());
        page
    }

    #[test]
    fn a_flipped_bit_fails_and_new_or_recent_pages_are_not_judged() {
        let start = 0x1_0000_0000;
        let mut page = valid_page(9, 3, 0x100);
        assert_eq!(verify(&page, 3, start), Verdict::Valid);
        assert!(matches!(verify(&page, 4, start), Verdict::Failed { .. }), "the block number counts");
        page[5000] ^= 0x10;
        assert!(matches!(verify(&page, 3, start), Verdict::Failed { .. }));
        let recent = valid_page(9, 3, start);
        let mut recent_damaged = recent.clone();
        recent_damaged[5000] ^= 0x10;
        assert_eq!(verify(&recent_damaged, 3, start), Verdict::Skipped, "written since the start: replay fixes it");
        let mut new = vec![0u8; BLOCK_SIZE];
        new[100] = 1;
        assert_eq!(verify(&new, 0, start), Verdict::Skipped);
    }

    #[test]
    fn segments_are_numbered_from_the_file_name() {
        assert_eq!(segment_of("16384"), 0);
        assert_eq!(segment_of("16384.2"), 2);
        assert_eq!(segment_of("16384_fsm"), 0);
        assert_eq!(segment_of("16384_vm.1"), 1);
    }
}
