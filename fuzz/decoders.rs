//! The decoders of untrusted bytes, one module per fuzz target: each
//! `run` takes one input and panics only on a bug (a failed assertion, an
//! overflow in a debug build). The fuzz targets (fuzz_targets/) call them
//! under libFuzzer; the integration tests (migrate-tests/fuzz_corpus.rs)
//! run them on every input of the committed corpus, without a nightly
//! toolchain.

pub mod section {
    //! Image sections: the framing (magic, version, length, CRC) and each
    //! section's state type (every kind in `engine::SECTIONS`), with the checks
    //! restore runs on what it decoded.
    //!
    //! The first byte picks the type (low bits) and whether the rest is a
    //! whole framed section (high bit clear) or a payload that gets a correct
    //! header here (high bit set), so that the content behind the checksum is
    //! explored too.

    use migrate::engine::{Container, SECTIONS};
    use migrate::image::{decode_section, Manifest, FORMAT_VERSION, SECTION_MAGIC};
    use migrate::kinds::{files, memory, timens, Kind};

    const PAGE: u64 = 4096;

    fn frame(version: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = SECTION_MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// One input.
    pub fn run(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        // Framed at the version this build writes (a section's own layout).
        let version = match usize::from(sel & 0x7f).checked_sub(1) {
            Some(i) => SECTIONS.get(i).map_or(FORMAT_VERSION, |s| s.version),
            None => FORMAT_VERSION,
        };
        let framed;
        let bytes = if sel & 0x80 != 0 {
            framed = frame(version, rest);
            &framed[..]
        } else {
            rest
        };
        match sel & 0x7f {
            0 => {
                if let Ok(m) = decode_section::<Manifest>("manifest", bytes) {
                    let _ = m.check();
                    let _ = migrate::engine::refuse_unknown_sections(&m);
                }
            }
            1 => {
                if let Ok(c) = Container::decode(bytes) {
                    if Container::validate(&c).is_ok() {
                        timens::offsets_for(&c.clocks).expect("checked clocks format");
                    }
                }
            }
            3 => {
                let Ok(mm) = memory::Section::decode(bytes) else {
                    return;
                };
                if memory::Section::validate(&mm).is_err() {
                    return;
                }
                for (_, m) in &mm {
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
            5 => {
                if let Ok(f) = files::Section::decode(bytes) {
                    if files::Section::validate(&f).is_ok() {
                        // Restore places its own descriptors above the image's.
                        let _ = f.max_fd().max(100) + 1;
                    }
                }
            }
            // Every other section as a restore reads it, by its place in the
            // registry (1 is the first).
            n => {
                if let Some(s) = SECTIONS.get(usize::from(n) - 1) {
                    let _ = (s.check)(bytes);
                }
            }
        }
    }
}

pub mod pages {
    //! The page store reader: the stream header, chunk headers, checksums and
    //! zstd chunks, both by `verify_all` and by reading the pages back.
    //!
    //! First byte: bit 0 prepends a valid stream header, bit 1 repairs every
    //! chunk header's magic, length and CRC, so that decoding is reached.

    use std::io::Cursor;

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

    /// One input.
    pub fn run(data: &[u8]) {
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
    }
}

pub mod precopy {
    //! Pre-copy batches as the destination receives them: postcard-decoded
    //! `PrecopyBatch`es, applied in order to one `PrecopyPages` store.
    //!
    //! The input is a sequence of postcard-encoded batches. First byte bit 0
    //! repairs each batch's CRC (of its raw pages) so that the pages are
    //! applied, not just refused.

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

    /// One input.
    pub fn run(data: &[u8]) {
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
    }
}

pub mod wire {
    //! The wire protocol: frames (length, CRC, postcard `Msg`) as whole frames
    //! and from a stream, and what the destination decodes inside them (the
    //! sealed image's manifest).
    //!
    //! First byte bit 0: the rest is a payload that gets a correct frame
    //! header here, so that message decoding is reached past the checksum.

    use std::io::Cursor;

    use migrate::image::{decode_section, Manifest, MANIFEST};
    use migrate::transport::wire::{decode_frame, is_bulk_frame, read_sync, Msg};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// One input.
    pub fn run(data: &[u8]) {
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
    }
}

pub mod criu_rpc {
    //! CRIU's RPC messages as the stand-in (`migrate` run as `criu swrk`)
    //! decodes them from the runtime's socket, and the responses it sends
    //! (decoded back as runc would), with an encode/decode round trip.

    use migrate::runtime::swrk::{CriuReq, CriuResp};
    use prost::Message;

    /// One input.
    pub fn run(data: &[u8]) {
        if let Ok(req) = CriuReq::decode(data) {
            let again = CriuReq::decode(&req.encode_to_vec()[..]).expect("re-encoded request decodes");
            assert_eq!(again, req);
        }
        if let Ok(resp) = CriuResp::decode(data) {
            let again = CriuResp::decode(&resp.encode_to_vec()[..]).expect("re-encoded response decodes");
            assert_eq!(again, resp);
        }
    }
}
