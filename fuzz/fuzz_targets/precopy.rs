//! Pre-copy batches as the destination receives them: postcard-decoded
//! `PrecopyBatch`es, applied in order to one `PrecopyPages` store.
//!
//! The input is a sequence of postcard-encoded batches. First byte bit 0
//! repairs each batch's CRC (of its raw pages) so that the pages are
//! applied, not just refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate::image::precopy::{PrecopyBatch, BATCH_CAP};

/// The harness's own budget per input (not the decoder's limits): a
/// destination's memory grows with what the source sends, which is not
/// what is fuzzed here.
const MAX_BATCHES: usize = 8;
const MAX_RUNS: usize = 1024;
const MAX_MAPPED_PAGES: u64 = 1 << 15;

fn raw_of(b: &PrecopyBatch) -> Option<Vec<u8>> {
    if b.compressed {
        zstd::bulk::decompress(&b.data, b.raw_len().min(BATCH_CAP)).ok()
    } else {
        Some(b.data.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut store = migrate::engine::restore::precopy_store();
    let (mut runs, mut mapped) = (0usize, 0u64);
    for _ in 0..MAX_BATCHES {
        let Ok((mut b, tail)) = postcard::take_from_bytes::<PrecopyBatch>(rest) else {
            return;
        };
        rest = tail;
        runs += b.runs.len();
        mapped += b
            .runs
            .iter()
            .filter(|r| r.2 != migrate::image::precopy::RunSrc::Zero)
            .map(|r| u64::from(r.1))
            .fold(0u64, u64::saturating_add);
        if runs > MAX_RUNS || mapped > MAX_MAPPED_PAGES {
            return;
        }
        if mode & 1 != 0 {
            if let Some(raw) = raw_of(&b) {
                b.crc32 = crc32fast::hash(&raw);
            }
        }
        let before = store.pages;
        if store.add(&b).is_err() {
            continue;
        }
        assert!(store.pages >= before);
        for &(addr, n, _) in &b.runs {
            assert!(store.has_all(b.pid, addr, u64::from(n) * 4096));
        }
    }
});
