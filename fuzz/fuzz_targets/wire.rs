//! The wire protocol: frames (length, CRC, postcard `Msg`) as whole frames
//! and from a stream, and what the destination decodes inside them (the
//! sealed image's manifest).
//!
//! First byte bit 0: the rest is a payload that gets a correct frame
//! header here, so that message decoding is reached past the checksum.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use migrate::image::{decode_section, Manifest, MANIFEST};
use migrate::transport::wire::{decode_frame, is_bulk_frame, read_sync, Msg};

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let bytes = if mode & 1 != 0 {
        framed = frame(rest);
        &framed[..]
    } else {
        rest
    };
    let _ = is_bulk_frame(bytes);
    if let Ok(msg) = decode_frame(bytes) {
        match &msg {
            Msg::Sealed { manifest, .. } => {
                if let Ok(m) = decode_section::<Manifest>(MANIFEST, manifest) {
                    let _ = m.check();
                }
            }
            Msg::Hello { facts, .. } | Msg::Welcome { facts } => {
                let _ = facts.refuse_from(facts);
            }
            _ => {}
        }
    }
    // The same bytes as a stream of frames.
    let mut r = Cursor::new(bytes);
    while let Ok(Some(_)) = read_sync(&mut r) {}
});
