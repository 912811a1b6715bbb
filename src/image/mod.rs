//! The checkpoint image: a manifest, postcard-encoded sections (one per
//! kind of state), and a page store.
//!
//! Every section is framed: magic, the section's own version, payload
//! length and a CRC-32 of the payload, and decodes with a size cap.
//!
//! Versions: images outlive binaries, and a cluster is upgraded one host
//! at a time, so this build also reads the previous format
//! ([`OLDEST_FORMAT_VERSION`]). Each section carries its own version, so
//! that one kind can change its layout (and keep a decoder for its older
//! one, see [`open_section`]) without invalidating every image. The manifest lists
//! every other file of the image with its length and checksum, plus the
//! kernel and CPU facts of the machine that wrote it. Sinks and sources
//! (a directory today, a QUIC stream later) move named blobs and the page
//! stream; the engine does not know which it has.

pub mod pages;
pub mod precopy;
pub mod store;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Magic at the start of every section file.
pub const SECTION_MAGIC: [u8; 8] = *b"MIGRSECT";
/// Image format version this build writes: format 4 is format 3 with a
/// version per section.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest image format this build reads. A format-3 image's sections
/// are all at version 3, which every section of this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 3;
/// The version a section is written at unless its kind has moved on.
pub const SECTION_VERSION: u32 = 4;
/// No section may be larger than this (pages live in the page store).
pub const SECTION_CAP: u64 = 256 << 20;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// Errors reading or writing an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image section {name}: not a migrate image section (bad magic)")]
    BadMagic { name: String },
    #[error("image section {name}: version {found}, this build reads versions {oldest} to {newest}; restore it with a migrate of its version (or newer)")]
    Version {
        name: String,
        found: u32,
        oldest: u32,
        newest: u32,
    },
    #[error("image section {name}: {len} bytes is over the {cap}-byte cap; the image is damaged")]
    TooLarge { name: String, len: u64, cap: u64 },
    #[error("image section {name}: truncated ({have} of {want} bytes)")]
    Truncated { name: String, have: u64, want: u64 },
    #[error("image {name}: checksum mismatch; the image is corrupted")]
    Checksum { name: String },
    #[error("image section {name}: undecodable: {reason}")]
    Decode { name: String, reason: String },
    #[error("image file {name} is listed in the manifest but missing")]
    Missing { name: String },
    #[error("image manifest lists {name:?}, which is not a file name inside the image; the image is damaged")]
    BadName { name: String },
    #[error("image page store: {0}")]
    Pages(String),
    #[error("pre-copy batch of process {pid}: {pages} pages is over the {cap}-page cap; the peer is broken")]
    PrecopyTooLarge { pid: i32, pages: u64, cap: u64 },
    #[error("pre-copy batch of process {pid}: run of {pages} pages at {addr:#x} {reason}")]
    PrecopyRun {
        pid: i32,
        addr: u64,
        pages: u32,
        reason: &'static str,
    },
    #[error("destination: {0}")]
    Peer(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Encodes `value` as a framed section at [`SECTION_VERSION`].
pub fn encode_section<T: Serialize>(value: &T) -> Vec<u8> {
    encode_section_at(SECTION_VERSION, value)
}

/// Encodes `value` as a framed section of version `version` (a kind whose
/// layout moved on writes its own).
pub fn encode_section_at<T: Serialize>(version: u32, value: &T) -> Vec<u8> {
    let payload = postcard::to_stdvec(value).expect("image sections serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&SECTION_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a framed section of a version from [`OLDEST_FORMAT_VERSION`] to
/// [`SECTION_VERSION`], checking magic, version, size and checksum.
pub fn decode_section<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T> {
    let (version, payload) = open_section(name, bytes)?;
    if !(OLDEST_FORMAT_VERSION..=SECTION_VERSION).contains(&version) {
        return Err(Error::Version {
            name: name.to_string(),
            found: version,
            oldest: OLDEST_FORMAT_VERSION,
            newest: SECTION_VERSION,
        });
    }
    decode_payload(name, payload)
}

/// Decodes a section whose kind writes it at `version`: at that version as
/// `T`, at an older one (down to [`OLDEST_FORMAT_VERSION`]) as `Old`,
/// converted by `upgrade`; a newer one is refused.
pub fn decode_versioned<T: DeserializeOwned, Old: DeserializeOwned>(
    name: &str,
    bytes: &[u8],
    version: u32,
    upgrade: impl FnOnce(Old) -> T,
) -> Result<T> {
    let (found, payload) = open_section(name, bytes)?;
    match found {
        v if v == version => decode_payload(name, payload),
        v if (OLDEST_FORMAT_VERSION..version).contains(&v) => decode_payload(name, payload).map(upgrade),
        found => Err(Error::Version {
            name: name.to_string(),
            found,
            oldest: OLDEST_FORMAT_VERSION,
            newest: version,
        }),
    }
}

/// Decodes a section's payload (from [`open_section`]).
pub fn decode_payload<T: DeserializeOwned>(name: &str, payload: &[u8]) -> Result<T> {
    postcard::from_bytes(payload).map_err(|e| Error::Decode {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Checks a framed section's magic, size and checksum; returns its
/// version and payload, for a kind to decode by version.
pub fn open_section<'b>(name: &str, bytes: &'b [u8]) -> Result<(u32, &'b [u8])> {
    let name_s = || name.to_string();
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated {
            name: name_s(),
            have: bytes.len() as u64,
            want: HEADER_LEN as u64,
        });
    }
    if bytes[..8] != SECTION_MAGIC {
        return Err(Error::BadMagic { name: name_s() });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if len > SECTION_CAP {
        return Err(Error::TooLarge {
            name: name_s(),
            len,
            cap: SECTION_CAP,
        });
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < len {
        return Err(Error::Truncated {
            name: name_s(),
            have: payload.len() as u64,
            want: len,
        });
    }
    let payload = &payload[..len as usize];
    if crc32fast::hash(payload) != crc {
        return Err(Error::Checksum { name: name_s() });
    }
    Ok((version, payload))
}

/// Facts about the machine that wrote an image, checked at restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineFacts {
    pub kernel: String,
    pub arch: String,
    /// Size of the xsave area; register state only moves between CPUs
    /// with the same layout.
    pub xstate_size: u32,
}

impl MachineFacts {
    /// The facts of this machine that an image records and a restore
    /// checks. `xstate_size` is the xsave area size of this CPU, as read
    /// from a traced thread.
    pub fn of_this_machine(xstate_size: u32) -> Self {
        let uts = nix::sys::utsname::uname().ok();
        Self {
            kernel: uts
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            arch: std::env::consts::ARCH.to_string(),
            xstate_size,
        }
    }
}

/// One file of the image with its length and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub len: u64,
    pub crc32: u32,
}

/// The manifest: what the image holds and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub machine: MachineFacts,
    /// Seconds since the Unix epoch when the checkpoint was taken.
    pub created: u64,
    pub container: String,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Checks that every listed file is a plain name inside the image
    /// (the directory reader opens and checksums each).
    pub fn check(&self) -> Result<()> {
        for f in &self.files {
            let mut parts = std::path::Path::new(&f.name).components();
            let plain = matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(n)), None) if n == f.name.as_str()
            );
            if !plain || f.name == MANIFEST {
                return Err(Error::BadName { name: f.name.clone() });
            }
        }
        Ok(())
    }
}

/// The name of the manifest file in an image.
pub const MANIFEST: &str = "manifest";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_of_the_previous_format_are_read_and_newer_ones_refused() {
        let value = (7u32, "seven".to_string());
        for v in OLDEST_FORMAT_VERSION..=SECTION_VERSION {
            let got: (u32, String) = decode_section("s", &encode_section_at(v, &value)).unwrap();
            assert_eq!(got, value);
        }
        for v in [OLDEST_FORMAT_VERSION - 1, SECTION_VERSION + 1] {
            let err = decode_section::<(u32, String)>("s", &encode_section_at(v, &value)).unwrap_err();
            assert!(matches!(err, Error::Version { found, .. } if found == v), "{err}");
        }
        let newer = encode_section_at(9, &value);
        let (v, payload) = open_section("s", &newer).unwrap();
        assert_eq!(v, 9);
        assert_eq!(decode_payload::<(u32, String)>("s", payload).unwrap(), value);
    }
}
