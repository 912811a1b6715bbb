//! Memory: the address space of a process (every mapping with its
//! protection, flags and backing), the pages worth saving, and the mm
//! descriptor fields (code/data/brk/stack/args/env/auxv/exe).
//!
//! Dump: mappings come from /proc/PID/smaps, page presence from
//! /proc/PID/pagemap, page contents from /proc/PID/mem. Pages never touched
//! are skipped; file pages are saved only where the process has its own
//! copy (copy-on-write), and all-zero anonymous pages are not stored.
//!
//! Restore (into a task that is a stopped copy of the restorer): unmap
//! everything but the vDSO, move the vDSO and vvar to their old addresses,
//! map each mapping again, write the pages through /proc/PID/mem, and set
//! the mm fields with PR_SET_MM_MAP.
//!
//! Guard regions (MADV_GUARD_INSTALL; pagemap bit 58) are not pages: their
//! ranges are recorded, and installed again once the pages are in place.
//! Droppable mappings (MAP_DROPPABLE, VmFlags `dp`) are made droppable
//! again. Section `mm` is at version 5 (version 4 had no guard regions).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use super::remote::{self, nr, Remote, PAGE, SCRATCH_LEN};
use crate::image::pages::PageWriter;
use crate::image::precopy::{PrecopyPages, ShadowMem};
use crate::sys;

/// Errors of the memory kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error("process {pid}: {what}: {source}")]
    Proc {
        pid: i32,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid}: cannot parse {what}: {line:?}")]
    Parse { pid: i32, what: &'static str, line: String },
    #[error("process {pid}: mapping {start:#x}-{end:#x} of {path}: {reason}")]
    Unsupported {
        pid: i32,
        start: u64,
        end: u64,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(
        "process {pid}: the vDSO layout differs from the image's ({reason}); restore on a kernel with the same vDSO"
    )]
    Vdso { pid: i32, reason: String },
    #[error("process {pid}: no free address range for the restorer's scratch area")]
    NoGap { pid: i32 },
    #[error("process {pid}: image mapping {start:#x}-{end:#x} (offset {offset:#x}) {reason}; the image is damaged")]
    BadVma {
        pid: i32,
        start: u64,
        end: u64,
        offset: u64,
        reason: &'static str,
    },
    #[error(
        "process {pid}: image mapping at {start:#x}: run of {pages} pages at {addr:#x} {reason}; the image is damaged"
    )]
    BadRun {
        pid: i32,
        start: u64,
        addr: u64,
        pages: u32,
        reason: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The special kernel mappings moved, never copied.
const SPECIALS: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vdso]"];
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backing {
    /// Private anonymous memory (heap, stack, malloc arenas...).
    Anon,
    /// A file, by path.
    File { path: String },
    /// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfds):
    /// mappings with the same id share one object.
    Shmem { id: u64 },
    /// [vdso], [vvar], [vvar_vclock]: moved to their old address.
    Special { name: String },
    /// A private mapping of a file that was deleted (a library an upgrade
    /// replaced, a memfd): the file's contents travel in section `ghosts`
    /// (one per id) and are mapped again from a memfd named after it.
    Ghost { id: u64 },
    /// An attachment of a SysV shared memory segment (shmat), by the
    /// segment's id: its pages travel with the segment (section `ipcns`),
    /// and the mapping that starts the attachment (offset 0) attaches the
    /// whole segment again; those after it (mprotect split it) follow.
    /// (Last: variants are numbered in the image by their order.)
    SysvShm { id: i32 },
}

/// One mapping of an attachment of a SysV segment: (the segment's id,
/// start, end, offset in the segment).
pub type SysvPiece = (i32, u64, u64, u64);

/// The attachments of SysV segments that `pieces` (in address order) make
/// up, each as (id, its first mapping's start, its last one's end, bytes
/// covered): a piece at offset 0 starts one; each other piece must follow
/// the one before it (mprotect split them), or it is returned as the error:
/// an attachment that was partly unmapped or moved.
pub fn sysv_attachments(pieces: impl IntoIterator<Item = SysvPiece>) -> std::result::Result<Vec<SysvPiece>, SysvPiece> {
    let mut out: Vec<SysvPiece> = Vec::new();
    for piece @ (id, start, end, offset) in pieces {
        match out.last_mut() {
            _ if offset == 0 => out.push((id, start, end, end - start)),
            Some((g, _, last_end, len)) if *g == id && *last_end == start && *len == offset => {
                *last_end = end;
                *len += end - start;
            }
            _ => return Err(piece),
        }
    }
    Ok(out)
}

/// The section `ghosts`: the contents of deleted mapped files (from
/// image format 4). Each is checked where a mapping names it.
pub struct Ghosts;

impl super::Kind for Ghosts {
    const SECTION: &'static str = "ghosts";
    const VERSION: u32 = 4;
    const SINCE_FORMAT: u32 = 4;
    type State = Vec<GhostFile>;
    type Error = Error;
}

/// A deleted file some process maps privately, with its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhostFile {
    pub id: u64,
    /// Its path, without " (deleted)".
    pub path: String,
    pub size: u64,
    /// Data extents (offset, bytes); the rest is holes.
    pub extents: Vec<(u64, Vec<u8>)>,
}

impl GhostFile {
    /// Whether its extents are in order and inside its size (restore
    /// writes them at their offsets).
    pub fn fits(&self) -> bool {
        super::regfile::extents_fit(self.size, &self.extents)
    }
}

/// A run of consecutive pages in the page stream (or all-zero pages, which
/// are not in the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    /// Virtual address, or for shmem the offset in the shared object.
    pub addr: u64,
    pub pages: u32,
    pub zero: bool,
    /// Pages shared copy-on-write with an earlier process of the image
    /// (its PID in the container, and the address there): not in the
    /// stream, copied from that process at restore.
    #[serde(default)]
    pub from: Option<(i32, u64)>,
    /// Pages sent ahead by live migration's pre-copy and not written
    /// since: not in the stream, taken from the destination's pre-copied
    /// pages.
    #[serde(default)]
    pub precopied: bool,
}

/// One mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    pub shared: bool,
    /// File offset in bytes.
    pub offset: u64,
    pub backing: Backing,
    /// smaps VmFlags worth restoring ([`KEPT_FLAGS`]), and "anon:NAME" for
    /// a named private anonymous mapping.
    pub flags: Vec<String>,
    pub runs: Vec<PageRun>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// This mapping as a piece of a SysV attachment, if it is one.
    pub fn sysv_piece(&self) -> Option<SysvPiece> {
        match self.backing {
            Backing::SysvShm { id } => Some((id, self.start, self.end, self.offset)),
            _ => None,
        }
    }

    /// The name it was given with PR_SET_VMA_ANON_NAME, if any.
    pub fn anon_name(&self) -> Option<&str> {
        self.flags.iter().find_map(|f| f.strip_prefix(ANON_NAME))
    }

    /// The path maps showed for a shared memory object ("/dev/zero",
    /// "/memfd:NAME"), without " (deleted)", if the image has it.
    pub fn shmem_name(&self) -> Option<&str> {
        self.flags.iter().find_map(|f| f.strip_prefix(SHMEM_NAME))
    }

    /// Pages in the page stream (not zero, not copied from another process).
    pub fn stored_pages(&self) -> u64 {
        self.runs
            .iter()
            .filter(|r| !r.zero && r.from.is_none() && !r.precopied)
            .map(|r| u64::from(r.pages))
            .sum()
    }
}

/// The mm descriptor fields (see prctl(PR_SET_MM_MAP)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: Vec<u64>,
    pub exe: String,
}

/// A process's memory image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryImage {
    pub vmas: Vec<Vma>,
    pub mm: MmFields,
    /// Guard regions: (address, pages), each inside a mapping.
    pub guards: Vec<(u64, u64)>,
}

/// The section `mm`: each process's mappings and memory layout, by PID in
/// the container. Layout 5 added guard regions.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "mm";
    const VERSION: u32 = 5;
    type State = Vec<(i32, MemoryImage)>;
    type Error = Error;

    fn decode(bytes: &[u8]) -> crate::image::Result<Self::State> {
        crate::image::decode_versioned(Self::SECTION, bytes, Self::VERSION, |old: Vec<(i32, MemoryImageV4)>| {
            old.into_iter()
                .map(|(pid, m)| {
                    let m = MemoryImage {
                        vmas: m.vmas,
                        mm: m.mm,
                        guards: Vec::new(),
                    };
                    (pid, m)
                })
                .collect()
        })
    }

    fn validate(state: &Self::State) -> Result<()> {
        state.iter().try_for_each(|(pid, m)| m.check(*pid))
    }
}

/// Version 4 of [`MemoryImage`]: no guard regions.
#[derive(Deserialize)]
struct MemoryImageV4 {
    vmas: Vec<Vma>,
    mm: MmFields,
}

impl MemoryImage {
    pub fn stored_pages(&self) -> u64 {
        self.vmas.iter().map(Vma::stored_pages).sum()
    }

    /// Checks what restore computes with: every mapping a page-aligned,
    /// non-empty range of user addresses whose file offset does not wrap,
    /// every run of pages inside its mapping (for shared memory, inside
    /// its range of the object), and pages copied from another process at
    /// user addresses. Refuses a decoded image that would wrap or land
    /// outside its mapping.
    pub fn check(&self, pid: i32) -> Result<()> {
        let mut prev_end = 0;
        for v in &self.vmas {
            let bad = |reason| Error::BadVma {
                pid,
                start: v.start,
                end: v.end,
                offset: v.offset,
                reason,
            };
            if v.start >= v.end {
                return Err(bad("is empty or ends before it starts"));
            }
            if v.start % PAGE != 0 || v.end % PAGE != 0 {
                return Err(bad("is not page-aligned"));
            }
            if v.end > TASK_SIZE {
                return Err(bad("is not in user address space"));
            }
            if v.start < prev_end {
                return Err(bad("is out of order or overlaps the one before"));
            }
            if v.anon_name()
                .is_some_and(|n| n.len() > ANON_NAME_MAX || n.bytes().any(|b| b < 0x20 || b == 0x7f))
            {
                return Err(bad("has a name prctl(PR_SET_VMA_ANON_NAME) would not take"));
            }
            if v.shmem_name().is_some_and(|n| {
                !matches!(v.backing, Backing::Shmem { .. })
                    || !(n == "/dev/zero" || n.starts_with("/memfd:"))
                    || n.len() > SHMEM_NAME_MAX
                    || n.contains('\0')
            }) {
                return Err(bad("names a shared memory object that is not /dev/zero or a memfd"));
            }
            if let Backing::SysvShm { id } = v.backing {
                if id < 0 || !v.shared || !v.runs.is_empty() {
                    return Err(bad("is a SysV attachment that holds pages"));
                }
            }
            prev_end = v.end;
            // The object's (or file's) range this mapping covers.
            let Some(offset_end) = v.offset.checked_add(v.len()).filter(|e| *e <= i64::MAX as u64) else {
                return Err(bad("has a file offset out of range"));
            };
            let (lo, hi) = match v.backing {
                Backing::Shmem { .. } => (v.offset, offset_end),
                _ => (v.start, v.end),
            };
            for r in &v.runs {
                let bad = |reason| Error::BadRun {
                    pid,
                    start: v.start,
                    addr: r.addr,
                    pages: r.pages,
                    reason,
                };
                let len = u64::from(r.pages) * PAGE;
                if r.pages == 0 || r.addr % PAGE != 0 {
                    return Err(bad("is empty or not page-aligned"));
                }
                if r.addr < lo || r.addr.checked_add(len).is_none_or(|e| e > hi) {
                    return Err(bad("is outside its mapping"));
                }
                if let Some((_, at)) = r.from {
                    if at % PAGE != 0 || at.checked_add(len).is_none_or(|e| e > TASK_SIZE) {
                        return Err(bad("copies from outside user address space"));
                    }
                }
            }
        }
        // An attachment's mappings follow each other from offset 0.
        if let Err((_, start, end, offset)) = sysv_attachments(self.vmas.iter().filter_map(Vma::sysv_piece)) {
            return Err(Error::BadVma {
                pid,
                start,
                end,
                offset,
                reason: "is a SysV attachment that does not start at its segment",
            });
        }
        for &(addr, pages) in &self.guards {
            let end = pages.checked_mul(PAGE).and_then(|l| addr.checked_add(l));
            let inside = end.is_some_and(|e| {
                self.vmas
                    .iter()
                    .any(|v| v.start <= addr && e <= v.end && !matches!(v.backing, Backing::Special { .. }))
            });
            if addr % PAGE != 0 || pages == 0 || !inside {
                return Err(Error::BadRun {
                    pid,
                    start: addr,
                    addr,
                    pages: pages.min(u64::from(u32::MAX)) as u32,
                    reason: "is a guard region outside the mappings",
                });
            }
        }
        Ok(())
    }
}

/// A mapping line of /proc/PID/smaps or maps, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    pub path: String,
    pub vmflags: Vec<String>,
    /// The memory protection key (pkey_mprotect), from smaps.
    pub pkey: u32,
}

/// Parses /proc/PID/smaps (or maps: VmFlags then stay empty).
pub fn parse_maps(pid: i32, text: &str) -> Result<Vec<MapLine>> {
    let mut out: Vec<MapLine> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(last) = out.last_mut() {
                last.vmflags = flags.split_whitespace().map(String::from).collect();
            }
            continue;
        }
        if let Some(key) = line.strip_prefix("ProtectionKey:") {
            if let Some(last) = out.last_mut() {
                last.pkey = key.trim().parse().unwrap_or(u32::MAX);
            }
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let Some((a, b)) = first.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue; // a "Key: value" line of smaps
        };
        let bad = || Error::Parse {
            pid,
            what: "maps",
            line: line.to_string(),
        };
        let mut it = line.splitn(6, ' ');
        it.next();
        let perms = it.next().ok_or_else(bad)?.to_string();
        let offset = u64::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let dev = it.next().ok_or_else(bad)?.to_string();
        let inode = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let path = it.next().unwrap_or("").trim_start().to_string();
        out.push(MapLine {
            start,
            end,
            perms,
            offset,
            dev,
            inode,
            path,
            vmflags: Vec::new(),
            pkey: 0,
        });
    }
    Ok(out)
}

fn read_proc(pid: i32, file: &str) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| Error::Proc {
        pid,
        what: format!("read /proc/{pid}/{file}"),
        source,
    })
}

/// The mappings of a process.
pub fn mappings(pid: i32) -> Result<Vec<MapLine>> {
    parse_maps(pid, &read_proc(pid, "smaps")?)
}

/// The mappings without their VmFlags, from /proc/PID/maps: unlike smaps,
/// reading it does not walk the page tables (tens of ms per GiB mapped).
pub fn mappings_fast(pid: i32) -> Result<Vec<MapLine>> {
    parse_maps(pid, &read_proc(pid, "maps")?)
}

/// Refuses a process with a mapping migrate does not carry (read from
/// /proc/PID/smaps while it runs, before anything is stopped: its VmFlags
/// and protection keys too).
pub fn refuse_uncarried(pid: i32) -> Result<()> {
    for m in mappings(pid)? {
        backing_of(pid, &m)?;
    }
    Ok(())
}

fn prot_of(perms: &str) -> u32 {
    let b = perms.as_bytes();
    let mut p = 0;
    if b.first() == Some(&b'r') {
        p |= libc::PROT_READ;
    }
    if b.get(1) == Some(&b'w') {
        p |= libc::PROT_WRITE;
    }
    if b.get(2) == Some(&b'x') {
        p |= libc::PROT_EXEC;
    }
    p as u32
}

/// A private anonymous mapping's name (prctl PR_SET_VMA_ANON_NAME: maps
/// show "[anon:NAME]") is kept among its flags as "anon:NAME" (older builds
/// ignore it).
const ANON_NAME: &str = "anon:";
/// The longest name the kernel takes, without its NUL.
const ANON_NAME_MAX: usize = 79;

/// A shared memory object's path as maps shows it, in [`Vma::flags`] after
/// this prefix (memory images from before it have none, and such objects
/// come back as memfds named migrate-shmem).
const SHMEM_NAME: &str = "shmem:";
/// Longest memfd name (249 bytes, and "/memfd:").
const SHMEM_NAME_MAX: usize = 256;

/// The name of mapping `m`, if it is a named private anonymous one.
fn anon_name(m: &MapLine) -> Option<&str> {
    m.path.strip_prefix("[anon:")?.strip_suffix(']')
}

const KEPT_FLAGS: [&str; 16] = [
    "gd", "dc", "wf", "hg", "nh", "dd", "sr", "rr", "mg", "lo", "dp", "mw", "nr", "lf", "sl", "sh",
];

/// The VmFlags a mapping may show: those carried ([`KEPT_FLAGS`]), those
/// that follow from how it is mapped again (protection, sharing, `ac`
/// accounting, `gu` where guard regions were installed, `sd` soft-dirty
/// tracking), and userfaultfd registrations (`um`, `uw`, `ui`): migrate's
/// own, tracking memory for pre-copy (a program's own would need a
/// userfaultfd, an fd the checkpoint refuses). Any other (a shadow stack
/// `ss`, hugetlb `ht`, device and PFN mappings `io`/`pf`/`mm`/`ar`, DAX
/// `sf`...) is refused rather than lost.
const UNDERSTOOD_FLAGS: [&str; 28] = [
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "ac", "gu", "sd", "um", "uw", "ui", "gd", "dc", "wf", "hg", "nh",
    "dd", "sr", "rr", "mg", "lo", "dp", "nr", "lf", "sl",
];

/// What backs mapping `m` of process `pid`, refusing what migrate does not
/// carry: by its path first (which names it best), then by its VmFlags and
/// protection key.
fn backing_of(pid: i32, m: &MapLine) -> Result<Option<Backing>> {
    let backing = backing_by_path(pid, m)?;
    if matches!(backing, None | Some(Backing::Special { .. })) {
        return Ok(backing);
    }
    let unsupported = |reason: String| Error::Unsupported {
        pid,
        start: m.start,
        end: m.end,
        path: m.path.clone(),
        reason,
    };
    if let Some(flag) = m.vmflags.iter().find(|f| !UNDERSTOOD_FLAGS.contains(&f.as_str())) {
        return Err(unsupported(format!(
            "a mapping with VmFlags {flag}, which migrate does not carry"
        )));
    }
    if m.pkey != 0 {
        return Err(unsupported(format!(
            "a mapping tagged with memory protection key {} (pkey_mprotect), which migrate does not carry",
            m.pkey
        )));
    }
    Ok(backing)
}

fn backing_by_path(pid: i32, m: &MapLine) -> Result<Option<Backing>> {
    let shared = m.perms.as_bytes().get(3) == Some(&b's');
    let unsupported = |reason: &str| Error::Unsupported {
        pid,
        start: m.start,
        end: m.end,
        path: m.path.clone(),
        reason: reason.to_string(),
    };
    Ok(Some(match m.path.as_str() {
        "[vsyscall]" => return Ok(None),
        p if SPECIALS.contains(&p) => Backing::Special { name: p.to_string() },
        // The inode of a segment's file is its id.
        p if p.starts_with("/SYSV") && shared => Backing::SysvShm { id: m.inode as i32 },
        p if p.starts_with("/SYSV") => {
            return Err(unsupported(
                "a private mapping of a SysV shared memory segment (not shmat), which migrate does not carry",
            ))
        }
        "/[aio] (deleted)" => return Err(unsupported("an AIO ring (io_setup), which migrate does not carry yet")),
        p if p.starts_with("/anon_hugepage") => {
            return Err(unsupported(
                "anonymous huge pages (MAP_HUGETLB), which migrate does not carry yet",
            ))
        }
        p if shared && m.inode != 0 && (p.starts_with("/dev/zero") || p.starts_with("/memfd:") || p.is_empty()) => {
            Backing::Shmem {
                id: object_id(&m.dev, m.inode),
            }
        }
        "" | "[heap]" | "[stack]" if !shared => Backing::Anon,
        p if p.starts_with("[anon:") && !shared => Backing::Anon,
        p if p.starts_with('[') => return Err(unsupported("special mapping not supported")),
        p if p.ends_with(" (deleted)") && !shared && m.inode != 0 => Backing::Ghost {
            id: object_id(&m.dev, m.inode),
        },
        p if p.ends_with(" (deleted)") => {
            return Err(unsupported(
                "the file was deleted (deleted files are not supported yet)",
            ))
        }
        p if p.starts_with('/') => Backing::File { path: p.to_string() },
        _ => return Err(unsupported("unknown mapping kind")),
    }))
}

/// The number that names a shared memory object or deleted file across
/// processes (and across the fds and mappings of it: see
/// [`super::regfile::FileKind::MemfdOf`]): its device as maps shows it
/// (`MAJOR:MINOR` in hex) and its inode.
pub fn object_id(dev: &str, inode: u64) -> u64 {
    let dev = u64::from_str_radix(&dev.replace(':', ""), 16).unwrap_or(0);
    (dev << 40) ^ inode
}

// pagemap bits
pub(crate) const PM_PRESENT: u64 = 1 << 63;
pub(crate) const PM_SWAPPED: u64 = 1 << 62;
pub(crate) const PM_FILE: u64 = 1 << 61;
pub(crate) const PM_EXCLUSIVE: u64 = 1 << 56;
/// A guard region's page (MADV_GUARD_INSTALL), shown as a swap marker.
pub(crate) const PM_GUARD: u64 = 1 << 58;
pub(crate) const PM_PFN: u64 = (1 << 55) - 1;
/// Bytes read from /proc/PID/mem at a time.
const READ_BATCH: usize = 1 << 20;

/// What the dump of one process's memory wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub pages_stored: u64,
    pub pages_zero: u64,
    /// Private pages shared copy-on-write with an earlier process: stored
    /// once.
    pub pages_cow: u64,
    /// Mapped pages not stored: never touched, or clean file pages.
    pub pages_skipped: u64,
    /// Pages sent by pre-copy and not written since: not stored again.
    pub pages_precopied: u64,
}

/// What live migration's pre-copy already sent of one process, and which
/// of its pages were written since (sorted address ranges).
#[derive(Debug, Default)]
pub struct PrecopyView {
    /// Sorted, disjoint address ranges.
    pub sent: Vec<(u64, u64)>,
    /// Sorted, disjoint address ranges.
    pub written: Vec<(u64, u64)>,
}

/// Whether sorted disjoint `ranges` hold `addr`.
fn in_ranges(ranges: &[(u64, u64)], addr: u64) -> bool {
    let i = ranges.partition_point(|r| r.1 <= addr);
    i < ranges.len() && ranges[i].0 <= addr
}

impl PrecopyView {
    /// Whether the destination already has the page at `addr` as it is.
    fn clean(&self, addr: u64) -> bool {
        in_ranges(&self.sent, addr) && !in_ranges(&self.written, addr)
    }
}

/// Per-checkpoint state shared between processes: which pages of each
/// shmem object are already stored, and which physical pages (by PFN) an
/// earlier process already stored.
#[derive(Debug, Default)]
pub struct SeenPages {
    shmem: HashMap<u64, HashSet<u64>>,
    pfns: HashMap<u64, (i32, u64)>,
    /// Deleted mapped files read so far, and the cap on their data.
    pub ghosts: Vec<GhostFile>,
    pub ghost_cap: u64,
}

/// Dumps the memory of a stopped process. `exclude` is the dumper's own
/// scratch area in the task, left out of the image. `remote` runs brk(0).
#[allow(clippy::too_many_arguments)]
pub fn dump<W: std::io::Write + Send + 'static>(
    remote: &Remote,
    maps: &[MapLine],
    exclude: (u64, u64),
    pages: &mut PageWriter<W>,
    seen_pages: &mut SeenPages,
    ns_pid: i32,
    stats: &mut DumpStats,
    precopy: Option<&PrecopyView>,
) -> Result<MemoryImage> {
    let clean = |addr: u64| precopy.map(|p| p.clean(addr)).unwrap_or(false);
    let pid = remote.pid;
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).map_err(|source| Error::Proc {
        pid,
        what: "open pagemap".into(),
        source,
    })?;
    let mut vmas = Vec::new();
    let mut guards: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; READ_BATCH];
    for m in maps {
        if m.start >= exclude.0 && m.end <= exclude.1 {
            continue;
        }
        let Some(backing) = backing_of(pid, m)? else { continue };
        let shared = m.perms.as_bytes().get(3) == Some(&b's');
        let mut vma = Vma {
            start: m.start,
            end: m.end,
            prot: prot_of(&m.perms),
            shared,
            offset: m.offset,
            backing: backing.clone(),
            flags: m
                .vmflags
                .iter()
                .filter(|f| KEPT_FLAGS.contains(&f.as_str()))
                .cloned()
                .chain(anon_name(m).map(|n| format!("{ANON_NAME}{n}")))
                .chain(
                    matches!(backing, Backing::Shmem { .. })
                        .then(|| m.path.strip_suffix(" (deleted)").unwrap_or(&m.path))
                        .filter(|p| !p.is_empty())
                        .map(|p| format!("{SHMEM_NAME}{p}")),
                )
                .collect(),
            runs: Vec::new(),
        };
        let npages = (m.end - m.start) / PAGE;
        let wanted: Box<dyn Fn(u64) -> bool> = match &backing {
            Backing::Special { .. } => {
                vmas.push(vma);
                continue;
            }
            Backing::File { .. } | Backing::SysvShm { .. } if shared => {
                stats.pages_skipped += npages;
                vmas.push(vma);
                continue;
            }
            Backing::File { .. } | Backing::Ghost { .. } | Backing::SysvShm { .. } => {
                Box::new(|e| e & PM_GUARD == 0 && ((e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAPPED != 0))
            }
            Backing::Anon | Backing::Shmem { .. } => {
                Box::new(|e| e & PM_GUARD == 0 && e & (PM_PRESENT | PM_SWAPPED) != 0)
            }
        };
        if let Backing::Ghost { id } = backing {
            if !seen_pages.ghosts.iter().any(|g| g.id == id) {
                let g = read_ghost(pid, m, id, seen_pages.ghost_cap)?;
                seen_pages.ghosts.push(g);
            }
        }
        let entries = read_pagemap(&pagemap, pid, m.start, npages)?;
        for (k, e) in entries.iter().enumerate() {
            if e & PM_GUARD != 0 {
                let at = m.start + k as u64 * PAGE;
                match guards.last_mut() {
                    Some((a, n)) if *a + *n * PAGE == at => *n += 1,
                    _ => guards.push((at, 1)),
                }
            }
        }
        let shmem_base = m.offset;
        let mut seen = match &backing {
            Backing::Shmem { id } => Some(seen_pages.shmem.entry(*id).or_default()),
            _ => None,
        };
        // Walk maximal runs of wanted pages.
        let mut i = 0u64;
        while i < npages {
            if !wanted(entries[i as usize]) {
                stats.pages_skipped += 1;
                i += 1;
                continue;
            }
            if seen.is_none() && clean(m.start + i * PAGE) {
                stats.pages_precopied += 1;
                push_run(&mut vma.runs, m.start + i * PAGE, RunKind::Precopied);
                i += 1;
                continue;
            }
            let mut j = i;
            while j < npages && wanted(entries[j as usize]) && (seen.is_some() || !clean(m.start + j * PAGE)) {
                j += 1;
            }
            // Pages i..j are wanted: read them in batches.
            let mut p = i;
            while p < j {
                let n = (j - p).min((READ_BATCH as u64) / PAGE);
                let bytes = (n * PAGE) as usize;
                let addr = m.start + p * PAGE;
                remote.read(addr, &mut buf[..bytes])?;
                for k in 0..n {
                    let page = &buf[(k * PAGE) as usize..((k + 1) * PAGE) as usize];
                    let at = addr + k * PAGE;
                    let key = match &mut seen {
                        Some(set) => {
                            let off = shmem_base + (at - m.start);
                            if !set.insert(off) {
                                continue; // stored from another mapping
                            }
                            off
                        }
                        None => at,
                    };
                    let zero = page.iter().all(|b| *b == 0);
                    // Fresh anonymous memory and shmem read as zero
                    // already: such a page is left out (also the kernel's
                    // zero page, which every reader of an unwritten page
                    // maps, and which is not sharing copy-on-write).
                    let file = matches!(backing, Backing::File { .. } | Backing::Ghost { .. });
                    if zero && !file {
                        stats.pages_zero += 1;
                        continue;
                    }
                    // A private page still shared with an earlier process
                    // (copy-on-write after fork): stored once.
                    let entry = entries[((at - m.start) / PAGE) as usize];
                    let pfn = entry & PM_PFN;
                    if seen.is_none() && pfn != 0 && entry & PM_EXCLUSIVE == 0 {
                        match seen_pages.pfns.get(&pfn) {
                            Some(&(owner, owner_at)) if owner != ns_pid => {
                                stats.pages_cow += 1;
                                push_run(&mut vma.runs, key, RunKind::From(owner, owner_at));
                                continue;
                            }
                            Some(_) => {}
                            None => {
                                seen_pages.pfns.insert(pfn, (ns_pid, at));
                            }
                        }
                    }
                    if zero {
                        // A file page's copy must be zeroed.
                        stats.pages_zero += 1;
                        push_run(&mut vma.runs, key, RunKind::Zero);
                        continue;
                    }
                    pages.write(page)?;
                    stats.pages_stored += 1;
                    push_run(&mut vma.runs, key, RunKind::Stored);
                }
                p += n;
            }
            i = j;
        }
        vmas.push(vma);
    }
    let mm = mm_fields(remote)?;
    Ok(MemoryImage { vmas, mm, guards })
}

/// The contents of the deleted file mapped at `m` (through
/// /proc/PID/map_files), its data extents only, up to `cap` bytes.
fn read_ghost(pid: i32, m: &MapLine, id: u64, cap: u64) -> Result<GhostFile> {
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path).to_string();
    let err = |source| Error::Proc {
        pid,
        what: format!("read the deleted file {path} it maps"),
        source,
    };
    let file = File::open(&link).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let spans = super::regfile::extents_of(&file, size).map_err(err)?;
    let data: u64 = spans.iter().map(|e| e.1).sum();
    if data > cap {
        return Err(Error::Unsupported {
                pid,
                start: m.start,
                end: m.end,
                path: m.path.clone(),
                reason: format!(
                    "a deleted file of more than {cap} bytes of data, over the cap for files carried in the image; raise it with --file-cap"
                ),
            });
    }
    let mut extents = Vec::with_capacity(spans.len());
    for (start, len) in spans {
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, start).map_err(err)?;
        extents.push((start, bytes));
    }
    Ok(GhostFile {
        id,
        path,
        size,
        extents,
    })
}

/// Where a page of a run comes from at restore.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunKind {
    Stored,
    Zero,
    From(i32, u64),
    Precopied,
}

fn push_run(runs: &mut Vec<PageRun>, addr: u64, kind: RunKind) {
    let (zero, from, precopied) = match kind {
        RunKind::Stored => (false, None, false),
        RunKind::Zero => (true, None, false),
        RunKind::From(p, a) => (false, Some((p, a)), false),
        RunKind::Precopied => (false, None, true),
    };
    if let Some(last) = runs.last_mut() {
        let len = u64::from(last.pages) * PAGE;
        let follows = match (last.from, from) {
            (None, None) => true,
            (Some((p, a)), Some((q, b))) => p == q && a + len == b,
            _ => false,
        };
        if last.zero == zero && last.precopied == precopied && follows && last.addr + len == addr {
            last.pages += 1;
            return;
        }
    }
    runs.push(PageRun {
        addr,
        pages: 1,
        zero,
        from,
        precopied,
    });
}

pub(crate) fn read_pagemap(pagemap: &File, pid: i32, start: u64, npages: u64) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; (npages * 8) as usize];
    pagemap
        .read_exact_at(&mut raw, start / PAGE * 8)
        .map_err(|source| Error::Proc {
            pid,
            what: format!("read pagemap at {start:#x}"),
            source,
        })?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// The mm fields of a stopped process: /proc/PID/stat, auxv, exe, and an
/// injected brk(0) for the current break.
fn mm_fields(remote: &Remote) -> Result<MmFields> {
    let pid = remote.pid;
    let stat = read_proc(pid, "stat")?;
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    // Fields after "(comm) ": index 0 is field 3 (state).
    let f: Vec<u64> = after.split_whitespace().map(|s| s.parse().unwrap_or(0)).collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let mut auxv_raw = Vec::new();
    File::open(format!("/proc/{pid}/auxv"))
        .and_then(|mut fl| fl.read_to_end(&mut auxv_raw))
        .map_err(|source| Error::Proc {
            pid,
            what: "read auxv".into(),
            source,
        })?;
    let auxv = auxv_raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let brk = remote.call("brk(0)", nr::BRK, &[0])?;
    Ok(MmFields {
        start_code: field(26),
        end_code: field(27),
        start_stack: field(28),
        start_data: field(45),
        end_data: field(46),
        start_brk: field(47),
        brk,
        arg_start: field(48),
        arg_end: field(49),
        env_start: field(50),
        env_end: field(51),
        auxv,
        exe,
    })
}

/// The vDSO of a process: its special mappings and where one of its
/// `syscall` instructions is.
pub fn specials(maps: &[MapLine]) -> Vec<(String, u64, u64)> {
    maps.iter()
        .filter(|m| SPECIALS.contains(&m.path.as_str()))
        .map(|m| (m.path.clone(), m.start, m.end))
        .collect()
}

/// The address of a `syscall` instruction in the vDSO of `pid`.
pub fn syscall_ip(pid: i32, maps: &[MapLine]) -> Result<u64> {
    let vdso = maps.iter().find(|m| m.path == "[vdso]").ok_or_else(|| Error::Vdso {
        pid,
        reason: "the process has no [vdso]".into(),
    })?;
    Ok(remote::find_syscall_insn(pid, vdso.start, vdso.end)?)
}

/// Shared memory objects made by the restorer (memfds), by shmem id. The
/// restored tasks inherit them at the same fd numbers (they are forked
/// from the restorer) and keep them until their mappings are made.
pub type ShmemFds = HashMap<u64, File>;

/// Rebuilds the address space of a stopped restorer copy. Afterwards the
/// remote's syscall address points into the moved vDSO and its scratch
/// area is mapped in a hole of the new layout.
/// `shadows` are the pre-copied pages' shadow mappings of this process
/// (see `PrecopyPages`), inherited from the restorer: kept, and moved out
/// of the way of the image's layout. Returns where each went: (first
/// address it mirrors, address now, length).
pub fn restore_layout(
    remote: &mut Remote,
    img: &MemoryImage,
    shmem: &ShmemFds,
    shadows: &[(u64, u64, u64)],
    cow: &[super::cow::Shadowed],
) -> Result<Vec<(u64, u64, u64)>> {
    let pid = remote.pid;
    let now = mappings_fast(pid)?;
    let cur = specials(&now);
    let want: Vec<(String, u64, u64)> = img
        .vmas
        .iter()
        .filter_map(|v| match &v.backing {
            Backing::Special { name } => Some((name.clone(), v.start, v.end)),
            _ => None,
        })
        .collect();
    let sizes = |v: &[(String, u64, u64)]| {
        let mut s: Vec<(String, u64)> = v.iter().map(|(n, a, b)| (n.clone(), b - a)).collect();
        s.sort();
        s
    };
    if sizes(&cur) != sizes(&want) {
        return Err(Error::Vdso {
            pid,
            reason: format!("here {:?}, image {:?}", sizes(&cur), sizes(&want)),
        });
    }
    let vdso_now = cur.iter().find(|s| s.0 == "[vdso]").map(|s| s.1).unwrap_or(0);
    let insn_off = remote.syscall_ip() - vdso_now;

    // 1. Unmap everything but the specials (and [vsyscall], which is fixed)
    // and the shadows.
    let mut keep: Vec<(u64, u64)> = cur.iter().map(|s| (s.1, s.2)).collect();
    keep.extend(shadows.iter().map(|s| (s.1, s.1 + s.2)));
    keep.extend(cow.iter().map(|s| (s.1, s.1 + s.2)));
    keep.sort();
    let mut from = PAGE;
    for (a, b) in keep.iter().copied().chain([(TASK_SIZE, TASK_SIZE)]) {
        if a > from {
            remote.call("munmap restorer memory", nr::MUNMAP, &[from, a - from])?;
        }
        from = b;
    }

    // 2. Move the specials: first out of the way (a hole of the target
    // layout), then to their old addresses.
    let total: u64 = cur.iter().map(|s| s.2 - s.1).sum();
    let mut taken: Vec<(u64, u64)> = img.vmas.iter().map(|v| (v.start, v.end)).collect();
    taken.extend(keep.iter().copied());
    let temp = find_gap(&taken, total + SCRATCH_LEN).ok_or(Error::NoGap { pid })?;
    // Our `syscall` instruction lives in the [vdso]: follow it as it moves.
    let move_special = |remote: &mut Remote, name: &str, from: u64, len: u64, to: u64| -> Result<()> {
        mremap(remote, from, len, to)?;
        if name == "[vdso]" {
            remote.set_syscall_ip(to + insn_off);
        }
        Ok(())
    };
    let mut at = temp;
    let mut parked = Vec::new();
    for (name, a, b) in &cur {
        move_special(remote, name, *a, b - a, at)?;
        parked.push((name.clone(), at, b - a));
        at += b - a;
    }

    // 3. Shadows that overlap the layout move to a hole of it, before the
    // specials land there (a special moved into a shadow would travel
    // with it).
    let mut taken: Vec<(u64, u64)> = img.vmas.iter().map(|v| (v.start, v.end)).collect();
    taken.extend(shadows.iter().map(|s| (s.1, s.1 + s.2)));
    taken.extend(cow.iter().map(|s| (s.1, s.1 + s.2)));
    taken.push((temp, temp + total + SCRATCH_LEN));
    let mut moved = Vec::new();
    // Shadows of shared mappings: (mapping's start, address now, length,
    // owner shared with).
    let mut cow_at: Vec<super::cow::Shadowed> = Vec::new();
    for &(start, at, len, owner) in cow {
        let to = clear_of_layout(remote, img, &mut taken, at, len)?;
        cow_at.push((start, to, len, owner));
    }
    for &(mirrors, at, len) in shadows {
        let to = clear_of_layout(remote, img, &mut taken, at, len)?;
        moved.push((mirrors, to, len));
    }
    for (name, a, len) in &parked {
        let target = want.iter().find(|w| &w.0 == name).expect("same names").1;
        move_special(remote, name, *a, *len, target)?;
    }

    // 4. Scratch area in a hole of the target layout.
    let gap = find_gap(&taken, SCRATCH_LEN).ok_or(Error::NoGap { pid })?;
    remote.map_scratch(Some(gap))?;
    taken.push((gap, gap + SCRATCH_LEN));

    // 5. Every other mapping (a shared one moved in from its shadow);
    // then the inherited memfds can go.
    for (i, v) in img.vmas.iter().enumerate() {
        match cow_at.iter().find(|s| s.0 == v.start) {
            Some(&(_, at, _, owner)) => move_shared(remote, v, at, owner)?,
            None if kept_apart(&img.vmas, i) => map_apart(remote, v, &taken)?,
            None => map_vma(remote, v, shmem)?,
        }
    }
    for f in shmem.values() {
        remote.close(f.as_raw_fd() as u64)?;
    }
    Ok(moved)
}

/// Whether private anonymous mapping `vmas[i]` lies right next to one
/// that the kernel would merge it with if both were mapped afresh (the
/// same protection and flags): the kernel had kept them apart, each with
/// an anon_vma of its own (made before they met, or inherited).
fn kept_apart(vmas: &[Vma], i: usize) -> bool {
    let v = &vmas[i];
    let alike = |w: &Vma| plain_anon(w) && w.prot == v.prot && w.flags == v.flags;
    plain_anon(v)
        && (i
            .checked_sub(1)
            .is_some_and(|p| vmas[p].end == v.start && alike(&vmas[p]))
            || vmas.get(i + 1).is_some_and(|w| w.start == v.end && alike(w)))
}

/// Private anonymous memory, not a stack nor droppable.
fn plain_anon(v: &Vma) -> bool {
    v.backing == Backing::Anon && !v.shared && !v.flags.iter().any(|f| f == "gd" || f == "dp")
}

/// Maps private anonymous mapping `v` with an anon_vma of its own, so that
/// the kernel keeps it apart from a neighbour as it had (see
/// [`kept_apart`]): made in a hole of `taken`, where a page written (the
/// fault makes the anon_vma) and dropped again leaves it as new, then
/// moved into place, where the kernel does not merge two mappings of
/// different anon_vmas.
fn map_apart(remote: &Remote, v: &Vma, taken: &[(u64, u64)]) -> Result<()> {
    let at = find_gap(taken, v.len()).ok_or(Error::NoGap { pid: remote.pid })?;
    let flags = (libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64 | map_flags(v);
    let what = format!("mmap {:#x}-{:#x} apart from its neighbour", v.start, v.end);
    remote.call(&what, nr::MMAP, &[at, v.len(), u64::from(v.prot), flags, u64::MAX, 0])?;
    // Through /proc/PID/mem, which writes a mapping of any protection.
    remote.write(at, &[0])?;
    // No page kept: the one written is dropped again.
    move_into_place(remote, v, at, "mremap a mapping kept apart", Some(Vec::new()))
}

/// Moves a shadow at `at` (`len` bytes) that overlaps the image's layout
/// into a hole of it and of `taken` (which it then takes). Returns where
/// the shadow is now.
fn clear_of_layout(remote: &Remote, img: &MemoryImage, taken: &mut Vec<(u64, u64)>, at: u64, len: u64) -> Result<u64> {
    if !img.vmas.iter().any(|v| v.start < at + len && at < v.end) {
        return Ok(at);
    }
    let to = find_gap(taken, len).ok_or(Error::NoGap { pid: remote.pid })?;
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    remote.call("mremap shadow", nr::MREMAP, &[at, len, len, flags, to])?;
    taken.push((to, to + len));
    Ok(to)
}

/// Moves mapping `v`, shared copy-on-write with others, into place from
/// its shadow at `at` (see kinds::cow). A sharer of process `owner`'s
/// pages drops those it did not share, so that they read as before (not
/// there) until its own pages are written.
fn move_shared(remote: &Remote, v: &Vma, at: u64, owner: Option<i32>) -> Result<()> {
    let kept = owner.map(|owner| v.runs.iter().filter(|r| super::cow::same_as(r, owner)).collect());
    move_into_place(remote, v, at, "mremap a shared mapping", kept)
}

/// Moves the whole of mapping `v` into place from `at` (a shadow) with one
/// mremap: one mapping, with its protection and advice. With `kept`, the
/// pages outside those runs are dropped (MADV_DONTNEED): they read as not
/// there, as in the image.
fn move_into_place(remote: &Remote, v: &Vma, at: u64, what: &str, kept: Option<Vec<&PageRun>>) -> Result<()> {
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    remote.call(what, nr::MREMAP, &[at, v.len(), v.len(), flags, v.start])?;
    if let Some(kept) = kept {
        let mut runs: Vec<(u64, u64)> = kept
            .iter()
            .map(|r| (r.addr, r.addr + u64::from(r.pages) * PAGE))
            .collect();
        runs.sort_unstable();
        let mut from = v.start;
        for (a, b) in runs.into_iter().chain([(v.end, v.end)]) {
            if a > from {
                remote.call(
                    &format!("madvise({from:#x}, MADV_DONTNEED)"),
                    libc::SYS_madvise,
                    &[from, a - from, libc::MADV_DONTNEED as u64],
                )?;
            }
            from = from.max(b);
        }
    }
    if v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
        remote.call("mprotect", libc::SYS_mprotect, &[v.start, v.len(), u64::from(v.prot)])?;
    }
    advise(remote, v, v.start, v.len())
}

fn mremap(remote: &Remote, from: u64, len: u64, to: u64) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    remote.call("mremap vDSO", nr::MREMAP, &[from, len, len, flags, to])?;
    Ok(())
}

/// The highest free range of `len` bytes below the usual mmap area that
/// overlaps none of `taken`.
fn find_gap(taken: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut t: Vec<(u64, u64)> = taken.to_vec();
    t.sort();
    // Walk down from the top of user space; start below 0x7f00_0000_0000
    // is not required, any hole works.
    let mut hi = TASK_SIZE - PAGE * 16;
    for &(a, b) in t.iter().rev() {
        if b <= hi && hi - b >= len + 2 * PAGE {
            return Some(hi - len - PAGE);
        }
        hi = hi.min(a);
    }
    (hi > len + 0x10000).then(|| hi - len - PAGE)
}

/// The mmap flags that make a mapping like `v`: its type (shared,
/// droppable, private), MAP_GROWSDOWN and MAP_NORESERVE.
fn map_flags(v: &Vma) -> u64 {
    /// MAP_DROPPABLE (not in the libc crate): private, and the kernel may
    /// free its pages under memory pressure.
    const MAP_DROPPABLE: u64 = 0x08;
    let mut flags = match () {
        _ if v.shared => libc::MAP_SHARED as u64,
        _ if v.flags.iter().any(|f| f == "dp") => MAP_DROPPABLE,
        _ => libc::MAP_PRIVATE as u64,
    };
    if v.flags.iter().any(|f| f == "gd") {
        flags |= libc::MAP_GROWSDOWN as u64;
    }
    if v.flags.iter().any(|f| f == "nr") {
        flags |= libc::MAP_NORESERVE as u64;
    }
    flags
}

fn map_vma(remote: &Remote, v: &Vma, shmem: &ShmemFds) -> Result<()> {
    let mut flags = libc::MAP_FIXED as u64 | map_flags(v);
    let what = format!("mmap {:#x}-{:#x}", v.start, v.end);
    match &v.backing {
        Backing::Special { .. } => return Ok(()),
        Backing::Anon => {
            flags |= libc::MAP_ANONYMOUS as u64;
            remote.call(
                &what,
                nr::MMAP,
                &[v.start, v.len(), u64::from(v.prot), flags, u64::MAX, 0],
            )?;
        }
        Backing::File { path } => map_opened(remote, v, flags, path, shared_mode(v))?,
        Backing::SysvShm { id } => {
            // The first mapping attaches the whole segment; each gets its
            // own protection (the attachment's is read and write, or read
            // only: VM_MAYWRITE, `mw`, says which).
            let read_only = !v.flags.iter().any(|f| f == "mw");
            if v.offset == 0 {
                let flags = if read_only { crate::sys::sysvipc::SHM_RDONLY } else { 0 };
                let at = remote.call(
                    &format!("shmat segment {id} at {:#x}", v.start),
                    libc::SYS_shmat,
                    &[*id as u64, v.start, flags as u64],
                )?;
                if at != v.start {
                    return Err(Error::BadVma {
                        pid: remote.pid,
                        start: v.start,
                        end: v.end,
                        offset: v.offset,
                        reason: "was attached elsewhere (shmat)",
                    });
                }
            }
            let attached = libc::PROT_READ as u32 | if read_only { 0 } else { libc::PROT_WRITE as u32 };
            if v.prot != attached {
                remote.call(
                    "mprotect attachment",
                    libc::SYS_mprotect,
                    &[v.start, v.len(), u64::from(v.prot)],
                )?;
            }
        }
        Backing::Shmem { id } => {
            // Through an open of its own, read-only unless the mapping may
            // be written: a memfd sealed against writes (F_SEAL_WRITE, once
            // every mapping is made) may have no mapping that could be.
            let memfd = shmem.get(id).expect("restorer made every shmem and ghost object");
            let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
            map_opened(remote, v, flags, &path, shared_mode(v))?;
        }
        Backing::Ghost { id } => {
            // Through an open of its own, as a file mapping is: pieces of
            // one open file that differ only in VM_ACCOUNT (a RELRO piece,
            // written before it was made read-only) would merge.
            let file = shmem.get(id).expect("restorer made every shmem and ghost object");
            let path = format!("/proc/self/fd/{}", file.as_raw_fd());
            map_opened(remote, v, flags, &path, libc::O_RDONLY)?;
        }
    }
    advise(remote, v, v.start, v.len())
}

/// How a file is opened to map `v`: read and write for a shared mapping
/// that is writable or may be made so (mprotect) because its file was open
/// for writing (VM_MAYWRITE, `mw`), or that was made through a file open
/// for writing (VM_SHARED, `sh`, without `mw`: a memfd sealed against
/// writes, F_SEAL_WRITE, which the restorer seals before it is mapped);
/// else read-only (the kernel then drops VM_SHARED, as it had).
fn shared_mode(v: &Vma) -> i32 {
    let may_write = v.prot & libc::PROT_WRITE as u32 != 0 || v.flags.iter().any(|f| f == "mw" || f == "sh");
    if v.shared && may_write {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    }
}

/// Maps `v` (mmap `flags`) from the file at `path`, which the process
/// opens (`mode`) for the call.
fn map_opened(remote: &Remote, v: &Vma, flags: u64, path: &str, mode: i32) -> Result<()> {
    let fd = remote.open(path, mode | libc::O_CLOEXEC)?;
    let r = remote.call(
        &format!("mmap {:#x}-{:#x}", v.start, v.end),
        nr::MMAP,
        &[v.start, v.len(), u64::from(v.prot), flags, fd, v.offset],
    );
    remote.close(fd)?;
    r?;
    Ok(())
}

/// Applies the mapping's madvise flags to `start..start+len` of it.
fn advise(remote: &Remote, v: &Vma, start: u64, len: u64) -> Result<()> {
    for (flag, advice) in [
        ("dc", libc::MADV_DONTFORK),
        ("wf", libc::MADV_WIPEONFORK),
        ("hg", libc::MADV_HUGEPAGE),
        ("nh", libc::MADV_NOHUGEPAGE),
        ("dd", libc::MADV_DONTDUMP),
        ("sr", libc::MADV_SEQUENTIAL),
        ("rr", libc::MADV_RANDOM),
        ("mg", libc::MADV_MERGEABLE),
    ] {
        if v.flags.iter().any(|f| f == flag) {
            remote.call("madvise", nr::MADVISE, &[start, len, advice as u64])?;
        }
    }
    Ok(())
}

/// Locks the mappings that were locked (mlock, MAP_LOCKED: VmFlags `lo`)
/// again, once their pages are in place and before the process drops its
/// credentials (and with them, perhaps, CAP_IPC_LOCK).
pub fn restore_locks(remote: &Remote, img: &MemoryImage) -> Result<()> {
    for v in img.vmas.iter().filter(|v| v.flags.iter().any(|f| f == "lo")) {
        // Locked on fault (mlock2 MLOCK_ONFAULT): not populated.
        match v.flags.iter().any(|f| f == "lf") {
            true => remote.call("mlock2(MLOCK_ONFAULT)", libc::SYS_mlock2, &[v.start, v.len(), 1])?,
            false => remote.call("mlock", libc::SYS_mlock, &[v.start, v.len()])?,
        };
    }
    Ok(())
}

/// Seals the mappings that were sealed (mseal(2), VmFlags `sl`): last of
/// everything done to the memory, since a sealed mapping can no longer be
/// moved, unmapped or protected otherwise.
pub fn restore_seals(remote: &Remote, img: &MemoryImage) -> Result<()> {
    const SYS_MSEAL: i64 = 462;
    for v in img.vmas.iter().filter(|v| v.flags.iter().any(|f| f == "sl")) {
        remote.call("mseal", SYS_MSEAL, &[v.start, v.len(), 0])?;
    }
    Ok(())
}

/// Names the anonymous mappings that were named (PR_SET_VMA_ANON_NAME),
/// through the scratch area.
pub fn restore_names(remote: &Remote, img: &MemoryImage) -> Result<()> {
    const PR_SET_VMA: u64 = 0x5356_4d41;
    const PR_SET_VMA_ANON_NAME: u64 = 0;
    for v in &img.vmas {
        if let Some(name) = v.anon_name() {
            let at = remote.put_cstr(0, name)?;
            remote.call(
                &format!("prctl(PR_SET_VMA_ANON_NAME, {name})"),
                libc::SYS_prctl,
                &[PR_SET_VMA, PR_SET_VMA_ANON_NAME, v.start, v.len(), at],
            )?;
        }
    }
    Ok(())
}

/// Installs the guard regions again, once the pages are in place.
pub fn restore_guards(remote: &Remote, img: &MemoryImage) -> Result<()> {
    const MADV_GUARD_INSTALL: u64 = 102;
    for &(addr, pages) in &img.guards {
        remote.call(
            &format!("madvise({addr:#x}, {pages} pages, MADV_GUARD_INSTALL)"),
            nr::MADVISE,
            &[addr, pages * PAGE, MADV_GUARD_INSTALL],
        )?;
    }
    Ok(())
}

/// A shadow of pre-copied pages (see `PrecopyPages`): a private anonymous
/// mapping of this process, reserved without committing memory, which the
/// restored processes inherit and move their pages out of.
impl ShadowMem for sys::Reserved {
    fn addr(&self) -> u64 {
        sys::Reserved::addr(self)
    }

    fn span(&self) -> usize {
        self.len()
    }

    fn page(&self, off: usize) -> &[u8] {
        &self.bytes()[off..off + PAGE as usize]
    }

    fn page_mut(&mut self, off: usize) -> &mut [u8] {
        &mut self.bytes_mut()[off..off + PAGE as usize]
    }

    fn discard(&mut self, off: usize, len: usize) {
        sys::Reserved::discard(self, off, len);
    }

    fn populate(&mut self, off: usize, len: usize) {
        sys::populate(&mut self.bytes_mut()[off..off + len]);
    }
}

/// Reserves the memory of a shadow of pre-copied pages: `len` bytes of
/// this process's address space (see [`PrecopyPages::new`]). Without
/// MAP_NORESERVE: a mapping moved out of it whole keeps the shadow's flags,
/// and the mappings moved whole are the ones without MAP_NORESERVE (the
/// kernel's default overcommit heuristic lets such a reservation be; it
/// costs memory only as its pages are written). Fenced: see
/// [`sys::Reserved::fenced`].
pub fn reserve_shadow(len: usize) -> std::io::Result<Box<dyn ShadowMem>> {
    Ok(Box::new(sys::Reserved::fenced(len)?))
}

/// Moves a private anonymous mapping `v` with pre-copied pages into place
/// whole, from the process's shadow (`moved`, from [`restore_layout`]),
/// with one mremap: one mapping, as it was, not one per run of pre-copied
/// pages. Only where the mapping lies in one shadow; returns false
/// (nothing done) otherwise, and its pre-copied runs are then moved in one
/// by one. Pages of the shadow that the image has as holes are dropped;
/// the image's other pages are written over it afterwards.
fn move_whole(remote: &Remote, v: &Vma, moved: &[(u64, u64, u64)]) -> Result<bool> {
    let span = crate::image::precopy::SHADOW_SPAN;
    let mirrors = v.start - v.start % span;
    let Some(&(_, base, _)) = moved.iter().find(|m| m.0 == mirrors) else {
        return Ok(false);
    };
    if (v.end - 1) / span != v.start / span {
        return Ok(false);
    }
    let shadow = base + v.start % span;
    let all = v.runs.iter().collect();
    move_into_place(remote, v, shadow, "mremap a mapping with pre-copied pages", Some(all))?;
    Ok(true)
}

/// Moves pre-copied pages `at..at+len` of a private anonymous mapping into
/// place from the process's shadows (`moved`, from [`restore_layout`]):
/// page tables move, no page is copied or allocated. Pages never written
/// in the shadow (all-zero ones) come out as holes, which read as zero.
fn move_precopied(remote: &Remote, v: &Vma, at: u64, len: u64, moved: &[(u64, u64, u64)]) -> Result<()> {
    let mut a = at;
    while a < at + len {
        let span = crate::image::precopy::SHADOW_SPAN;
        let piece = (span - a % span).min(at + len - a);
        let mirrors = a - a % span;
        let shadow = moved
            .iter()
            .find(|m| m.0 == mirrors)
            .map(|m| m.1 + a % span)
            .ok_or_else(|| not_precopied(remote.pid, a))?;
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        remote.call("mremap pre-copied pages", nr::MREMAP, &[shadow, piece, piece, flags, a])?;
        if v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
            remote.call("mprotect", libc::SYS_mprotect, &[a, piece, u64::from(v.prot)])?;
        }
        advise(remote, v, a, piece)?;
        a += piece;
    }
    Ok(())
}

/// The pages of a process that are not in the page stream: pre-copied
/// ones (the store and the process's PID in it, and its shadows as
/// [`restore_layout`] left them), and mappings moved in from shadows of
/// shared pages (see kinds::cow).
#[derive(Clone, Copy)]
pub struct Shadows<'a> {
    pub precopied: Option<(&'a PrecopyPages, i32)>,
    pub moved: &'a [(u64, u64, u64)],
    pub cow: &'a [super::cow::Shadowed],
}

/// Writes the pages of a process from the page stream, in the order the
/// dump stored them.
pub fn restore_pages(
    remote: &Remote,
    img: &MemoryImage,
    pages: &mut dyn super::cow::PageSource,
    shmem: &ShmemFds,
    host_of: &dyn Fn(i32) -> Option<i32>,
    shadows: &Shadows<'_>,
) -> Result<()> {
    let Shadows { precopied, moved, cow } = *shadows;
    let zeros = vec![0u8; READ_BATCH];
    let mut copy = vec![0u8; READ_BATCH];
    let mut sources: HashMap<i32, File> = HashMap::new();
    // Private anonymous memory, not a stack, droppable nor MAP_NORESERVE
    // (the shadows are not), nor kept apart from a neighbour (that moved
    // in from the same shadow would share its anon_vma, and merge with
    // it): pre-copied pages move in. Others' are copied.
    let movable = |i: usize| {
        let v = &img.vmas[i];
        plain_anon(v) && !v.flags.iter().any(|f| f == "nr") && !kept_apart(&img.vmas, i)
    };
    for (i, v) in img.vmas.iter().enumerate() {
        // A mapping moved in from a shared shadow has its owner's pages
        // already (see kinds::cow).
        let shared = cow.iter().find(|s| s.0 == v.start).map(|s| s.3);
        // A memfd sealed against writes holds its contents already (its
        // fd's, the same pages): its pages are read, not written.
        let sealed = match &v.backing {
            Backing::Shmem { id } => write_sealed(shmem.get(id).expect("restorer made every shmem object")),
            _ => false,
        };
        let precopied_here = v.runs.iter().any(|r| r.precopied);
        let whole = match precopied {
            Some((store, pid)) if precopied_here && shared.is_none() && movable(i) => {
                let all = v
                    .runs
                    .iter()
                    .filter(|r| r.precopied)
                    .all(|r| store.has_all(pid, r.addr, u64::from(r.pages) * PAGE));
                if !all {
                    return Err(not_precopied(remote.pid, v.start));
                }
                move_whole(remote, v, moved)?
            }
            _ => false,
        };
        for run in &v.runs {
            if whole && run.precopied {
                continue;
            }
            match shared {
                Some(None) if run.from.is_none() => continue,
                Some(Some(owner)) if super::cow::same_as(run, owner) => continue,
                _ => {}
            }
            let mut left = u64::from(run.pages) * PAGE;
            let mut at = run.addr;
            if run.precopied && movable(i) {
                let (store, pid) = precopied.ok_or_else(|| not_precopied(remote.pid, at))?;
                if !store.has_all(pid, at, left) {
                    return Err(not_precopied(remote.pid, at));
                }
                move_precopied(remote, v, at, left, moved)?;
                continue;
            }
            while left > 0 {
                let n;
                let data: &[u8] = if let Some((owner, owner_at)) = run.from {
                    // Shared copy-on-write with an earlier process, which
                    // is already rebuilt: copied from its memory.
                    let host = host_of(owner).ok_or_else(|| Error::Proc {
                        pid: remote.pid,
                        what: format!("copy pages from process {owner}"),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    })?;
                    let src = match sources.entry(host) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(File::open(format!("/proc/{host}/mem")).map_err(|source| Error::Proc {
                                pid: host,
                                what: "open memory".into(),
                                source,
                            })?)
                        }
                    };
                    n = left.min(copy.len() as u64);
                    let offset = owner_at + (at - run.addr);
                    src.read_exact_at(&mut copy[..n as usize], offset)
                        .map_err(|source| Error::Proc {
                            pid: host,
                            what: format!("read shared pages at {offset:#x}"),
                            source,
                        })?;
                    &copy[..n as usize]
                } else if run.precopied {
                    // Gathered into one write as long as the run allows.
                    n = left.min(copy.len() as u64);
                    let (store, pid) = precopied.ok_or_else(|| not_precopied(remote.pid, at))?;
                    for k in 0..n / PAGE {
                        let page = store
                            .page(pid, at + k * PAGE)
                            .ok_or_else(|| not_precopied(remote.pid, at + k * PAGE))?;
                        copy[(k * PAGE) as usize..((k + 1) * PAGE) as usize].copy_from_slice(page);
                    }
                    &copy[..n as usize]
                } else if run.zero {
                    n = left.min(zeros.len() as u64);
                    &zeros[..n as usize]
                } else {
                    let s = pages.next_slice(left as usize)?;
                    n = s.len() as u64;
                    s
                };
                match &v.backing {
                    Backing::Shmem { .. } if sealed => {}
                    Backing::Shmem { id } => {
                        let f = shmem.get(id).expect("restorer made every shmem object");
                        f.write_all_at(data, at).map_err(|source| Error::Proc {
                            pid: remote.pid,
                            what: "write shared memory".into(),
                            source,
                        })?;
                    }
                    _ => remote.write(at, data)?,
                }
                at += n;
                left -= n;
            }
        }
    }
    // What is left of the shadows (pages written since, other runs) goes.
    for &(_, at, len) in moved {
        remote.call("munmap shadow", nr::MUNMAP, &[at, len])?;
    }
    Ok(())
}

/// Whether memfd `f` is sealed against writes (F_SEAL_WRITE).
fn write_sealed(f: &File) -> bool {
    nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok_and(|s| s & libc::F_SEAL_WRITE != 0)
}

fn not_precopied(pid: i32, at: u64) -> Error {
    Error::Image(crate::image::Error::Pages(format!(
        "page {at:#x} of process {pid} was not pre-copied"
    )))
}

/// Gives deleted mapped files their names back. Runs in PID 1 of a
/// restore, in the container's mount namespace, before anything is
/// forked: each ghost whose path is free is made there again (mode 0755:
/// an executable's exe link needs one), filled, removed, and put at the
/// number of the memfd that holds it now (`fds`: ghost id, number), so that
/// maps and exe links read "PATH (deleted)" as at checkpoint. Where the
/// path is taken (a library an upgrade replaced since) or can not be made,
/// the memfd stays, and maps show /memfd:PATH. A memfd's ghost stays one.
pub fn name_ghosts(ghosts: &[GhostFile], fds: &[(u64, i32)]) {
    use nix::fcntl::{open, OFlag};
    for g in ghosts.iter().filter(|g| !g.path.starts_with("/memfd:")) {
        let Some(&(_, number)) = fds.iter().find(|(id, _)| *id == g.id) else {
            continue;
        };
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let Ok(fd) = open(g.path.as_str(), flags, nix::sys::stat::Mode::from_bits_truncate(0o755)) else {
            continue;
        };
        let file = File::from(fd);
        // (Whatever the umask.)
        use std::os::unix::fs::PermissionsExt;
        let filled = file.set_permissions(std::fs::Permissions::from_mode(0o755)).is_ok()
            && file.set_len(g.size).is_ok()
            && g.extents
                .iter()
                .all(|(off, bytes)| std::os::unix::fs::FileExt::write_all_at(&file, bytes, *off).is_ok());
        let removed = nix::unistd::unlink(g.path.as_str()).is_ok();
        // Read-only from here: an exe link may not be set to a file open
        // for writing (and the mappings are private).
        let again = format!("/proc/self/fd/{}", file.as_raw_fd());
        let read_only = open(
            again.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        if let (true, true, Ok(ro)) = (filled, removed, read_only) {
            // SAFETY: `number` stays an open descriptor (of this file now
            // instead of the memfd), and whatever owns it owns an open file
            // still, with the same contents.
            #[allow(unsafe_code)]
            let _ = unsafe { crate::sys::place_fd(std::os::fd::AsFd::as_fd(&ro), number, true) };
        }
    }
}

/// Sets the mm descriptor fields and the exe link (PR_SET_MM_MAP). An
/// executable deleted since it started is the deleted file mapped at the
/// code's start (a ghost, see [`Backing::Ghost`]), opened through
/// /proc/self/map_files.
pub fn restore_mm(remote: &Remote, img: &MemoryImage) -> Result<()> {
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    let mm = &img.mm;
    let ghost = img
        .vmas
        .iter()
        .find(|v| v.start <= mm.start_code && mm.start_code < v.end && matches!(v.backing, Backing::Ghost { .. }));
    let exe_fd = match ghost {
        _ if mm.exe.is_empty() => None,
        Some(v) if mm.exe.ends_with(" (deleted)") => Some(remote.open(
            &format!("/proc/self/map_files/{:x}-{:x}", v.start, v.end),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )?),
        _ => remote.open(&mm.exe, libc::O_RDONLY | libc::O_CLOEXEC).ok(),
    };
    let auxv_at = remote.scratch + 2 * PAGE;
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    remote.write(auxv_at, &auxv)?;
    let mut s = Vec::with_capacity(104);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_at,
    ] {
        s.extend_from_slice(&w.to_le_bytes());
    }
    s.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    s.extend_from_slice(&(exe_fd.map(|f| f as u32).unwrap_or(u32::MAX)).to_le_bytes());
    remote.write(remote.scratch, &s)?;
    let r = remote.call(
        "prctl(PR_SET_MM_MAP)",
        nr::PRCTL,
        &[PR_SET_MM, PR_SET_MM_MAP, remote.scratch, s.len() as u64, 0],
    );
    if let Some(fd) = exe_fd {
        remote.close(fd)?;
    }
    r?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
ProtectionKey:         0
VmFlags: rd wr mr mw me ac sd
7f1c2a000000-7f1c2a200000 r--p 00010000 fe:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd mr mw me sd
7f1c2b000000-7f1c2b001000 rw-s 00000000 00:01 77                         /dev/zero (deleted)
7ffd1000000-7ffd1021000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
7ffd1100000-7ffd1102000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_smaps_and_classifies() {
        let maps = parse_maps(1, SMAPS).unwrap();
        assert_eq!(maps.len(), 6);
        assert_eq!(maps[0].path, "[heap]");
        assert_eq!(maps[0].vmflags, vec!["rd", "wr", "mr", "mw", "me", "ac", "sd"]);
        assert_eq!(maps[1].offset, 0x10000);
        assert_eq!(maps[1].inode, 1234);
        assert_eq!(backing_of(1, &maps[0]).unwrap(), Some(Backing::Anon));
        assert!(matches!(backing_of(1, &maps[1]).unwrap(), Some(Backing::File { .. })));
        assert!(matches!(backing_of(1, &maps[2]).unwrap(), Some(Backing::Shmem { .. })));
        assert!(maps[3].vmflags.contains(&"gd".to_string()));
        let named = parse_maps(1, "7f00-7f01 rw-p 00000000 00:00 0 [anon:my name]\n").unwrap();
        assert_eq!(anon_name(&named[0]), Some("my name"));
        assert_eq!(backing_of(1, &named[0]).unwrap(), Some(Backing::Anon));
        assert!(matches!(
            backing_of(1, &maps[4]).unwrap(),
            Some(Backing::Special { .. })
        ));
        assert_eq!(backing_of(1, &maps[5]).unwrap(), None);
        assert_eq!(prot_of("r-xp"), (libc::PROT_READ | libc::PROT_EXEC) as u32);
        // What migrate does not carry is refused, not dropped.
        let mut odd = maps[0].clone();
        odd.pkey = 2;
        assert!(format!("{}", backing_of(1, &odd).unwrap_err()).contains("protection key 2"));
        odd.pkey = 0;
        odd.vmflags.push("ss".into());
        assert!(format!("{}", backing_of(1, &odd).unwrap_err()).contains("VmFlags ss"));
    }

    #[test]
    fn deleted_files_mapped_privately_are_ghosts_and_shared_are_refused() {
        let m = parse_maps(7, "7f00-7f01 r--p 00000000 fe:01 9 /tmp/x (deleted)\n").unwrap();
        assert!(matches!(backing_of(7, &m[0]), Ok(Some(Backing::Ghost { .. }))));
        let m = parse_maps(7, "7f00-7f01 rw-s 00000000 fe:01 9 /tmp/x (deleted)\n").unwrap();
        assert!(matches!(backing_of(7, &m[0]), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn mappings_are_named_for_what_they_are() {
        let reason = |line: &str| match backing_of(7, &parse_maps(7, line).unwrap()[0]) {
            Err(Error::Unsupported { reason, .. }) => reason,
            other => panic!("{line}: {other:?}"),
        };
        assert!(reason("7f00-7f01 rw-p 00000000 00:01 32768 /SYSV00000000 (deleted)\n").contains("SysV shared memory"));
        let attached = parse_maps(7, "7f00-7f01 rw-s 00000000 00:01 32768 /SYSV00000000 (deleted)\n").unwrap();
        assert_eq!(
            backing_of(7, &attached[0]).unwrap(),
            Some(Backing::SysvShm { id: 32768 })
        );
        assert!(reason("7f00-7f01 rw-s 00000000 00:14 3 /[aio] (deleted)\n").contains("AIO ring"));
        assert!(reason("7f00-7f01 rw-p 00000000 00:10 5 /anon_hugepage (deleted)\n").contains("MAP_HUGETLB"));
        assert!(reason("7f00-7f01 rw-s 00000000 fe:01 9 /tmp/x (deleted)\n").contains("deleted"));
    }

    #[test]
    fn runs_merge() {
        let mut runs = Vec::new();
        push_run(&mut runs, 0x1000, RunKind::Stored);
        push_run(&mut runs, 0x2000, RunKind::Stored);
        push_run(&mut runs, 0x3000, RunKind::Zero);
        push_run(&mut runs, 0x5000, RunKind::Stored);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].pages, 2);
        // Shared runs merge only while their source is contiguous too.
        let mut shared = Vec::new();
        push_run(&mut shared, 0x1000, RunKind::From(1, 0x9000));
        push_run(&mut shared, 0x2000, RunKind::From(1, 0xa000));
        push_run(&mut shared, 0x3000, RunKind::From(1, 0xc000));
        push_run(&mut shared, 0x4000, RunKind::Stored);
        assert_eq!(shared.len(), 3);
        assert_eq!(shared[0].pages, 2);
        // Pre-copied pages are a run kind of their own.
        let mut pre = Vec::new();
        push_run(&mut pre, 0x1000, RunKind::Precopied);
        push_run(&mut pre, 0x2000, RunKind::Precopied);
        push_run(&mut pre, 0x3000, RunKind::Stored);
        assert_eq!(pre.len(), 2);
        assert!(pre[0].precopied && pre[0].pages == 2 && !pre[1].precopied);
    }

    #[test]
    fn precopy_view_cleanliness() {
        let view = PrecopyView {
            sent: vec![(0x1000, 0x3000), (0x5000, 0x6000)],
            written: vec![(0x2000, 0x3000), (0x8000, 0x9000)],
        };
        assert!(view.clean(0x1000));
        assert!(!view.clean(0x2000), "written since");
        assert!(!view.clean(0x3000), "never sent");
        assert!(view.clean(0x5000));
    }

    #[test]
    fn gaps() {
        let taken = [(0x1000, 0x5000), (0x7fff_0000_0000, 0x7fff_ffff_0000)];
        let g = find_gap(&taken, 0x4000).unwrap();
        for (a, b) in taken {
            assert!(g + 0x4000 <= a || g >= b, "gap {g:#x} overlaps");
        }
    }

    #[test]
    fn damaged_layouts_are_refused() {
        let run = |addr, pages| PageRun {
            addr,
            pages,
            zero: false,
            from: None,
            precopied: false,
        };
        let vma = |start, end, backing, runs| Vma {
            start,
            end,
            prot: 3,
            shared: false,
            offset: 0,
            backing,
            flags: vec![],
            runs,
        };
        let img = |v: Vma| MemoryImage {
            vmas: vec![v],
            mm: MmFields::default(),
            guards: vec![],
        };
        let good = vma(0x1000, 0x4000, Backing::Anon, vec![run(0x2000, 2)]);
        img(good.clone()).check(1).unwrap();
        // Guard regions lie inside a mapping.
        let mut guarded = img(good.clone());
        guarded.guards = vec![(0x3000, 1)];
        guarded.check(1).unwrap();
        guarded.guards = vec![(0x3000, 2)];
        assert!(guarded.check(1).is_err());
        // The previous layout reads with none.
        #[derive(Serialize)]
        struct V4 {
            vmas: Vec<Vma>,
            mm: MmFields,
        }
        let old = vec![(
            1,
            V4 {
                vmas: vec![good.clone()],
                mm: MmFields::default(),
            },
        )];
        use crate::kinds::Kind;
        let read = Section::decode(&crate::image::encode_section_at(4, &old)).unwrap();
        assert_eq!(read, vec![(1, img(good.clone()))]);
        assert_eq!(Section::decode(&Section::encode(&read)).unwrap(), read);
        let vma_err = |v: Vma| matches!(img(v).check(1), Err(Error::BadVma { pid: 1, .. }));
        let run_err = |v: Vma| matches!(img(v).check(1), Err(Error::BadRun { pid: 1, .. }));
        // end - start would wrap.
        assert!(vma_err(vma(0x4000, 0x1000, Backing::Anon, vec![])));
        assert!(vma_err(vma(0x1001, 0x4000, Backing::Anon, vec![])));
        assert!(vma_err(vma(0x1000, !0xfff_u64, Backing::Anon, vec![])));
        // offset + len would wrap.
        assert!(vma_err(Vma {
            offset: u64::MAX - 0x1000,
            ..good.clone()
        }));
        // A name the kernel would not take.
        let named = |name: &str| Vma {
            flags: vec!["dd".into(), format!("{ANON_NAME}{name}")],
            ..good.clone()
        };
        assert_eq!(named("heap of mine").anon_name(), Some("heap of mine"));
        assert!(img(named("heap of mine")).check(1).is_ok());
        assert!(vma_err(named("bad\nname")));
        assert!(vma_err(named(&"x".repeat(80))));
        // Runs outside the mapping, or whose end wraps.
        assert!(run_err(vma(0x1000, 0x4000, Backing::Anon, vec![run(0x3000, 2)])));
        assert!(run_err(vma(0x1000, 0x4000, Backing::Anon, vec![run(0, 1)])));
        assert!(run_err(vma(
            0x1000,
            0x4000,
            Backing::Anon,
            vec![run(!0xfff_u64, u32::MAX)]
        )));
        assert!(run_err(vma(0x1000, 0x4000, Backing::Anon, vec![run(0x2000, 0)])));
        // Copied from a wrapping address.
        let from = PageRun {
            from: Some((2, !0xfff_u64)),
            ..run(0x2000, 2)
        };
        assert!(run_err(vma(0x1000, 0x4000, Backing::Anon, vec![from])));
        // Shared memory runs are offsets in the object's range.
        let shm = Vma {
            offset: 0x10000,
            ..vma(0x1000, 0x3000, Backing::Shmem { id: 1 }, vec![run(0x10000, 2)])
        };
        img(shm.clone()).check(1).unwrap();
        assert!(run_err(Vma {
            runs: vec![run(0x11000, 2)],
            ..shm
        }));
    }

    #[test]
    fn precopied_pages_are_kept_in_reserved_shadows() {
        use crate::image::precopy::{PrecopyBatch, RunSrc, SHADOW_SPAN};
        let mut store = PrecopyPages::new(reserve_shadow);
        let data = [7u8; PAGE as usize];
        let runs = vec![(0x1000, 1, RunSrc::Data), (SHADOW_SPAN + 0x2000, 1, RunSrc::Data)];
        let mut raw = data.to_vec();
        raw.extend_from_slice(&data);
        store.add(&PrecopyBatch::seal(1, 5, runs, &raw, None)).unwrap();
        assert_eq!(store.page(5, 0x1000).unwrap(), &data[..]);
        assert_eq!(store.page(5, SHADOW_SPAN + 0x2000).unwrap(), &data[..]);
        let shadows = store.shadows_of(5);
        assert_eq!(shadows.len(), 2);
        assert_eq!((shadows[0].0, shadows[0].2), (0, SHADOW_SPAN));
        assert_eq!((shadows[1].0, shadows[1].2), (SHADOW_SPAN, SHADOW_SPAN));
        assert_ne!(shadows[0].1, shadows[1].1);
        store
            .add(&PrecopyBatch::seal(2, 5, vec![(0x1000, 1, RunSrc::Zero)], &[], None))
            .unwrap();
        assert_eq!(store.page(5, 0x1000).unwrap(), &[0u8; PAGE as usize][..]);
        assert_eq!(store.pages, 2);
    }
}
