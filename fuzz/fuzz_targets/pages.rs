//! The page store reader: the stream header, chunk headers, checksums and
//! zstd chunks, both by `verify_all` and by reading the pages back.
//!
//! First byte: bit 0 prepends a valid stream header, bit 1 repairs every
//! chunk header's magic, length and CRC, so that decoding is reached.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use migrate::image::pages::{PageReader, PAGES_MAGIC};
use migrate::image::FORMAT_VERSION;

const CHUNK_HEADER: usize = 20;

fn repair_chunks(stream: &mut [u8]) {
    let mut at = 12;
    while stream.len() >= at + CHUNK_HEADER {
        let body = stream.len() - at - CHUNK_HEADER;
        let h = &mut stream[at..at + CHUNK_HEADER];
        h[0..4].copy_from_slice(b"PGCK");
        let stored = (u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize).min(body);
        h[8..12].copy_from_slice(&(stored as u32).to_le_bytes());
        let start = at + CHUNK_HEADER;
        let crc = crc32fast::hash(&stream[start..start + stored]);
        stream[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        at = start + stored;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut stream = Vec::with_capacity(rest.len() + 12);
    if mode & 1 != 0 {
        stream.extend_from_slice(&PAGES_MAGIC);
        stream.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    }
    stream.extend_from_slice(rest);
    if mode & 2 != 0 {
        repair_chunks(&mut stream);
    }
    if let Ok(r) = PageReader::new(Cursor::new(stream.clone())) {
        let _ = r.verify_all();
    }
    if let Ok(mut r) = PageReader::new(Cursor::new(stream)) {
        let mut total = 0u64;
        while let Ok(s) = r.next_slice(1 << 16) {
            total += s.len() as u64;
        }
        assert_eq!(total, r.consumed);
    }
});
