//! Image sections: the framing (magic, version, length, CRC) and each
//! section's state type, with the checks restore runs on what it decoded.
//!
//! The first byte picks the type (low bits) and whether the rest is a
//! whole framed section (high bit clear) or a payload that gets a correct
//! header here (high bit set), so that the content behind the checksum is
//! explored too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate::engine::ContainerImage;
use migrate::image::{decode_section, Manifest, FORMAT_VERSION, SECTION_MAGIC};
use migrate::kinds::files::FilesImage;
use migrate::kinds::mounts::TmpfsImage;
use migrate::kinds::pstree::{self, ProcessImage};
use migrate::kinds::signals::SignalsImage;
use migrate::kinds::timens;

const PAGE: u64 = 4096;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = SECTION_MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let bytes = if sel & 0x80 != 0 {
        framed = frame(rest);
        &framed[..]
    } else {
        rest
    };
    match sel & 0x7f {
        0 => {
            if let Ok(m) = decode_section::<Manifest>("manifest", bytes) {
                let _ = m.check();
            }
        }
        1 => {
            if let Ok(c) = decode_section::<ContainerImage>("container", bytes) {
                if c.clocks.check().is_ok() {
                    timens::offsets_for(&c.clocks).expect("checked clocks format");
                }
            }
        }
        2 => {
            if let Ok(procs) = decode_section::<Vec<ProcessImage>>("pstree", bytes) {
                let _ = pstree::check(&procs);
            }
        }
        3 => {
            let Ok(mm) = migrate::kinds::memory::decode_section(bytes) else {
                return;
            };
            for (pid, m) in &mm {
                if m.check(*pid).is_err() {
                    continue;
                }
                // What restore computes with a checked image.
                let _ = m.stored_pages();
                for v in &m.vmas {
                    let _ = v.offset + v.len();
                    for r in &v.runs {
                        let len = u64::from(r.pages) * PAGE;
                        let _ = r.addr + len;
                        if let Some((_, at)) = r.from {
                            let _ = at + len;
                        }
                    }
                }
            }
        }
        4 => {
            if let Ok(s) = decode_section::<Vec<(i32, SignalsImage)>>("signals", bytes) {
                for (pid, s) in &s {
                    let _ = s.check(*pid);
                }
            }
        }
        5 => {
            if let Ok(f) = decode_section::<FilesImage>("files", bytes) {
                if f.check().is_ok() {
                    // Restore places its own descriptors above the image's.
                    let _ = f.max_fd().max(100) + 1;
                }
            }
        }
        6 => {
            let _ = decode_section::<Vec<TmpfsImage>>("mounts", bytes);
        }
        _ => {}
    }
});
