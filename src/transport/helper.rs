//! The destination's restore helper: a process of its own, started by the
//! receiver for each migration, because the restore forks the container's
//! tree and must be single-threaded (the receiver runs QUIC on tokio). It
//! reads the receiver's relay of the source's messages on stdin and
//! answers on stdout, in the wire protocol's frames:
//!
//! hello, sections, page segments, pre-copy batches, seal -> (restore,
//! stopped) -> Ready -> Go -> (start) -> Done.
//!
//! Anything else, or stdin closing, before Go: everything made is removed
//! and the helper exits with a failure. It never runs a container the
//! source has not said to.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::Instant;

use super::send::name_of;
use super::wire::{self, Msg};
use super::Error;
use crate::engine::live::LOG_SECTION;
use crate::engine::restore::{self, RestoreOptions};
use crate::image::store::MemSource;
use crate::image::{decode_section, Manifest, MANIFEST};
use crate::runtime::Root;

/// At most this many sections in an image.
const MAX_SECTIONS: usize = 64;
/// At most this many pre-copy batches may wait for an earlier one.
const MAX_WAITING: u64 = 256;
/// At most this many page segments (4 MiB each: 4 TiB).
const MAX_SEGMENTS: u64 = 1 << 20;

/// Serves one migration (checking the restored processes against the
/// image with `verify`, see engine::verify). On failure, a `Failed`
/// message says why (if the receiver still listens) and nothing is left
/// behind.
pub fn serve(root: &Root, input: &mut impl Read, output: &mut impl Write, verify: bool) -> Result<(), Error> {
    let hello = wire::read_sync(input)?.ok_or_else(|| lost("the receiver closed before the hello"))?;
    let Msg::Hello {
        container,
        tcp_established,
        lease_owner,
        ..
    } = hello
    else {
        return Err(Error::Protocol(format!("expected a hello, got {}", name_of(&hello))));
    };
    let existed = root.container_dir(&container).exists();
    let result = restore_and_wait(root, input, output, &container, (tcp_established, verify), lease_owner);
    if let Err(e) = &result {
        let _ = wire::write_sync(output, &Msg::Failed { reason: e.to_string() });
        if !existed {
            let _ = std::fs::remove_dir_all(root.container_dir(&container));
        }
    }
    result
}

fn lost(why: &str) -> Error {
    Error::Lost {
        phase: "receive",
        reason: why.to_string(),
    }
}

fn restore_and_wait(
    root: &Root,
    input: &mut impl Read,
    output: &mut impl Write,
    name: &str,
    (tcp_established, verify): (bool, bool),
    lease_owner: Option<String>,
) -> Result<(), Error> {
    let t_in = Instant::now();
    let (mut src, log) = receive(input, output)?;
    let t = Instant::now();
    tracing::info!(ms = (t - t_in).as_secs_f64() * 1000.0, "image received");
    let opts = RestoreOptions {
        name: Some(name.to_string()),
        tcp_established,
        lease_from: lease_owner.map(Into::into),
        log,
        verify,
    };
    let prepared = restore::prepare(root, &mut src, &opts)?;
    let restore_ms = t.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(report = ?prepared.report(), "restored, waiting for go");
    wire::write_sync(output, &Msg::Ready { restore_ms })?;
    match wire::read_sync(input)? {
        Some(Msg::Go) => {}
        Some(Msg::Abort { reason }) => return Err(lost(&format!("the source aborted: {reason}"))),
        Some(other) => {
            return Err(Error::Protocol(format!("expected go, got {}", name_of(&other))));
        }
        None => return Err(lost("the connection ended before the source said go")),
    }
    crate::fault::check("recv:before-resume").map_err(crate::engine::Error::from)?;
    prepared.commit()?;
    wire::write_sync(output, &Msg::Done)?;
    // Unmapping the shadows takes a while for large memory: after the
    // container runs, not during its downtime.
    drop(src);
    Ok(())
}

/// Takes in the whole image: returns it checked against its manifest, and
/// the log.
fn receive(input: &mut impl Read, output: &mut impl Write) -> Result<(MemSource, Option<Vec<u8>>), Error> {
    let mut sections: HashMap<String, Vec<u8>> = HashMap::new();
    let mut segments: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut precopied = restore::precopy_store();
    // Pre-copy batches are applied in send order; those that overtook an
    // earlier one wait here.
    let mut waiting: BTreeMap<u64, crate::image::precopy::PrecopyBatch> = BTreeMap::new();
    let mut batches = 0u64;
    // The source waits for this many batches to be applied.
    let mut sync: Option<u64> = None;
    let mut sealed: Option<(Vec<u8>, u64, u64)> = None;
    loop {
        if let Some(n) = sync {
            if batches >= n {
                wire::write_sync(output, &Msg::Synced)?;
                sync = None;
            }
        }
        if let Some((_, want_segments, want_batches)) = &sealed {
            if segments.len() as u64 == *want_segments && batches == *want_batches {
                break;
            }
        }
        let msg = wire::read_sync(input)?.ok_or_else(|| lost("the connection ended before the image was complete"))?;
        match msg {
            Msg::Section { name, bytes } => {
                if sections.len() >= MAX_SECTIONS || sections.contains_key(&name) {
                    return Err(Error::Protocol(format!(
                        "section {name} repeated, or too many sections"
                    )));
                }
                sections.insert(name, bytes);
            }
            Msg::Precopy(b) => {
                if b.seq < batches || b.seq >= batches + MAX_WAITING || waiting.contains_key(&b.seq) {
                    return Err(Error::Protocol(format!(
                        "pre-copy batch {} repeated or out of range",
                        b.seq
                    )));
                }
                waiting.insert(b.seq, b);
                while let Some(b) = waiting.remove(&batches) {
                    precopied.add(&b)?;
                    batches += 1;
                }
            }
            Msg::Sync { batches: n } => {
                if sync.is_some() {
                    return Err(Error::Protocol("a sync before the last was answered".into()));
                }
                sync = Some(n);
            }
            Msg::Pages { seq, bytes } => {
                if seq >= MAX_SEGMENTS || segments.insert(seq, bytes).is_some() {
                    return Err(Error::Protocol(format!("page segment {seq} repeated or out of range")));
                }
            }
            Msg::Sealed {
                manifest,
                page_segments,
                precopy_batches,
            } => {
                if sealed.is_some() || page_segments > MAX_SEGMENTS {
                    return Err(Error::Protocol("a second or impossible seal".into()));
                }
                sealed = Some((manifest, page_segments, precopy_batches));
            }
            Msg::Abort { reason } => return Err(lost(&format!("the source aborted: {reason}"))),
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected {} while receiving the image",
                    name_of(&other)
                )))
            }
        }
    }
    let (manifest_bytes, want_segments, _) = sealed.expect("loop ends sealed");
    if sync.is_some() {
        return Err(Error::Protocol("sealed while a sync was pending".into()));
    }
    if segments.keys().copied().ne(0..want_segments) {
        return Err(Error::Protocol("page segments are not numbered 0..n".into()));
    }
    let manifest: Manifest = decode_section(MANIFEST, &manifest_bytes)?;
    let log = sections.get(LOG_SECTION).cloned();
    let src = MemSource::new(manifest, sections, segments.into_values().collect(), precopied)?;
    Ok((src, log))
}
