//! The wire protocol of live migration. Every message is one frame:
//! length (u32 LE), CRC-32 of the payload (u32 LE), and the payload, a
//! postcard-encoded [`Msg`]. Frames over [`FRAME_CAP`] are refused before
//! they are read. The first message each way is the hello: magic, protocol
//! version and the machine's facts. docs/protocol.md has the sequence.

use serde::{Deserialize, Serialize};

use crate::image::precopy::PrecopyBatch;

pub const MAGIC: [u8; 8] = *b"MIGRWIRE";
/// Protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The oldest protocol version a receiver accepts: the previous one, so
/// that a destination upgraded first still takes containers from sources
/// that are not (rolling upgrades).
pub const OLDEST_VERSION: u32 = 1;
/// TLS application protocol name.
pub const ALPN: &[u8] = b"migrate/1";
/// No frame may be larger (image sections are capped at 256 MiB).
pub const FRAME_CAP: usize = (256 << 20) + (1 << 20);
const HEADER: usize = 8;
/// Buffer reserved up front for a frame being read; more as it arrives.
const READ_AHEAD: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("frame of {0} bytes is over the cap; the peer is broken or hostile")]
    TooLarge(usize),
    #[error("frame checksum mismatch: corrupted in transit")]
    Checksum,
    #[error("undecodable message: {0}")]
    Decode(String),
    #[error("the stream ended in the middle of a frame")]
    Truncated,
}

pub type Result<T> = std::result::Result<T, Error>;

/// What each side says about its machine in the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub kernel: String,
    pub arch: String,
    /// /proc/cpuinfo flags of the first CPU.
    pub cpu_flags: Vec<String>,
    /// The image format version this build writes and reads.
    pub image_version: u32,
}

impl Facts {
    pub fn local() -> Self {
        let flags = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("flags"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.split_whitespace().map(String::from).collect())
            })
            .unwrap_or_default();
        let m = crate::image::MachineFacts::of_this_machine(0);
        Self {
            kernel: m.kernel,
            arch: m.arch,
            cpu_flags: flags,
            image_version: crate::image::FORMAT_VERSION,
        }
    }

    /// Why a container from `source` can not run on this machine, if so.
    pub fn refuse_from(&self, source: &Facts) -> Option<String> {
        if source.arch != self.arch {
            return Some(format!(
                "the source is {}, this machine is {}: CPU architectures differ",
                source.arch, self.arch
            ));
        }
        if !(crate::image::OLDEST_FORMAT_VERSION..=self.image_version).contains(&source.image_version) {
            return Some(format!(
                "the source writes image format {}, this machine reads formats {} to {}: upgrade migrate here (or run the same version on both)",
                source.image_version,
                crate::image::OLDEST_FORMAT_VERSION,
                self.image_version
            ));
        }
        let missing: Vec<&str> = source
            .cpu_flags
            .iter()
            .filter(|f| !self.cpu_flags.contains(f))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(8).copied().collect();
            return Some(format!(
                "this CPU lacks {} feature(s) the source's has ({}): programs there may use them",
                missing.len(),
                shown.join(" ")
            ));
        }
        None
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    /// Source -> destination, first on the control stream.
    Hello {
        magic: [u8; 8],
        version: u32,
        facts: Facts,
        container: String,
        tcp_established: bool,
        /// The source's lease on the container's address, handed over when
        /// both roots share a host.
        lease_owner: Option<String>,
    },
    /// Destination -> source: the hello is accepted.
    Welcome { facts: Facts },
    /// Destination -> source: the hello is refused; the connection ends.
    Refuse { reason: String },
    /// An image section.
    Section {
        name: String,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Pre-copied pages (on their own stream).
    Precopy(PrecopyBatch),
    /// A segment of the final page stream, in order by `seq` (on its own
    /// stream).
    Pages {
        seq: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Source -> destination: the image is complete. `manifest` is a framed
    /// section listing every part with its length and checksum.
    Sealed {
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
        page_segments: u64,
        precopy_batches: u64,
    },
    /// Source -> destination: give up; discard everything.
    Abort { reason: String },
    /// Destination -> source: restored and stopped, waiting for Go.
    Ready { restore_ms: f64 },
    /// Destination -> source: the restore (or the commit) failed; nothing
    /// is left there.
    Failed { reason: String },
    /// Source -> destination: start it. The commit point.
    Go,
    /// Destination -> source: it runs.
    Done,
    /// Source -> destination: answer once the first `batches` pre-copy
    /// batches are applied (the end of a pre-copy round).
    Sync { batches: u64 },
    /// Destination -> source: the answer to `Sync`.
    Synced,
}

/// Whether a whole frame holds a page message (by its postcard variant
/// index), without decoding it: what may come on a unidirectional stream.
pub fn is_bulk_frame(frame: &[u8]) -> bool {
    matches!(frame.get(HEADER), Some(4) | Some(5))
}

/// Encodes one frame.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let payload = postcard::to_stdvec(msg).expect("messages serialize");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The payload length a frame header announces, checked against the cap.
pub fn frame_len(header: &[u8; HEADER]) -> Result<usize> {
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    if len > FRAME_CAP {
        return Err(Error::TooLarge(len));
    }
    Ok(len)
}

/// Checks and decodes a frame's payload.
pub fn decode(header: &[u8; HEADER], payload: &[u8]) -> Result<Msg> {
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != crc {
        return Err(Error::Checksum);
    }
    postcard::from_bytes(payload).map_err(|e| Error::Decode(e.to_string()))
}

/// Decodes a whole frame held in memory.
pub fn decode_frame(frame: &[u8]) -> Result<Msg> {
    if frame.len() < HEADER {
        return Err(Error::Truncated);
    }
    let header: [u8; HEADER] = frame[..HEADER].try_into().expect("8 bytes");
    if frame_len(&header)? != frame.len() - HEADER {
        return Err(Error::Truncated);
    }
    decode(&header, &frame[HEADER..])
}

/// Reads one frame from a blocking reader; None at a clean end.
pub fn read_sync(r: &mut impl std::io::Read) -> Result<Option<Msg>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::Io { what: "read", source }),
        }
    }
    let len = frame_len(&header)?;
    // Memory grows with what arrives, not with what the header claims.
    let mut payload = Vec::with_capacity(len.min(READ_AHEAD));
    use std::io::Read as _;
    r.take(len as u64)
        .read_to_end(&mut payload)
        .map_err(|_| Error::Truncated)?;
    if payload.len() != len {
        return Err(Error::Truncated);
    }
    decode(&header, &payload).map(Some)
}

/// Writes one frame to a blocking writer.
pub fn write_sync(w: &mut impl std::io::Write, msg: &Msg) -> Result<()> {
    w.write_all(&encode(msg))
        .and_then(|_| w.flush())
        .map_err(|source| Error::Io { what: "write", source })
}

/// Reads one frame from an async reader; None at a clean end.
pub async fn read_async(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(source) => return Err(Error::Io { what: "read", source }),
        }
    }
    let len = frame_len(&header)?;
    // Memory grows with what arrives, not with what the header claims.
    let mut frame = Vec::with_capacity(HEADER + len.min(READ_AHEAD));
    frame.extend_from_slice(&header);
    r.take(len as u64)
        .read_to_end(&mut frame)
        .await
        .map_err(|_| Error::Truncated)?;
    if frame.len() != HEADER + len {
        return Err(Error::Truncated);
    }
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_reject_damage() {
        let msg = Msg::Section {
            name: "pstree".into(),
            bytes: vec![1, 2, 3],
        };
        let f = encode(&msg);
        assert!(matches!(decode_frame(&f).unwrap(), Msg::Section { name, .. } if name == "pstree"));
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(decode_frame(&bad), Err(Error::Checksum)));
        assert!(matches!(decode_frame(&f[..f.len() - 1]), Err(Error::Truncated)));
        let mut huge = f.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_frame(&huge), Err(Error::TooLarge(_))));
        let mut r = std::io::Cursor::new([f.clone(), f].concat());
        assert!(read_sync(&mut r).unwrap().is_some());
        assert!(read_sync(&mut r).unwrap().is_some());
        assert!(read_sync(&mut r).unwrap().is_none());
        assert!(is_bulk_frame(&encode(&Msg::Precopy(Default::default()))));
        assert!(is_bulk_frame(&encode(&Msg::Pages { seq: 1, bytes: vec![] })));
        assert!(!is_bulk_frame(&encode(&Msg::Go)));
        let mut garbage = std::io::Cursor::new(b"\x05\x00\x00\x00\x00\x00\x00\x00hello".to_vec());
        assert!(read_sync(&mut garbage).is_err());
    }

    #[test]
    fn facts_refusals() {
        let here = Facts {
            kernel: "6.18".into(),
            arch: "x86_64".into(),
            cpu_flags: vec!["sse2".into(), "avx2".into()],
            image_version: crate::image::FORMAT_VERSION,
        };
        let mut src = here.clone();
        assert!(here.refuse_from(&src).is_none());
        src.cpu_flags.push("avx512f".into());
        assert!(here.refuse_from(&src).unwrap().contains("avx512f"));
        src.cpu_flags.pop();
        src.arch = "aarch64".into();
        assert!(here.refuse_from(&src).unwrap().contains("architectures"));
        src.arch = "x86_64".into();
        src.image_version = crate::image::OLDEST_FORMAT_VERSION;
        assert!(here.refuse_from(&src).is_none(), "the previous format is read");
        src.image_version = crate::image::OLDEST_FORMAT_VERSION - 1;
        assert!(here.refuse_from(&src).unwrap().contains("image format"));
        src.image_version = crate::image::FORMAT_VERSION + 1;
        assert!(here.refuse_from(&src).unwrap().contains("upgrade migrate here"));
    }

    #[test]
    fn a_claimed_length_is_not_allocated_up_front() {
        // A header announcing a frame just under the cap, with 5 bytes
        // behind it: refused as truncated once the stream ends.
        let mut f = ((FRAME_CAP - 1) as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(b"hello");
        assert!(matches!(read_sync(&mut std::io::Cursor::new(f)), Err(Error::Truncated)));
    }
}
