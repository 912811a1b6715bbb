//! Live migration's pre-copy, on the source: which pages each process
//! wrote since the last round. A userfaultfd made inside the process (by
//! injected syscall) registers its private writable mappings for
//! asynchronous write-protect; PAGEMAP_SCAN then reports the pages written
//! since they were last protected, and protects them again in the same
//! walk. (There are no soft-dirty bits on the kernels this targets.)
//! Closing our copy of the userfaultfd ends the tracking.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::memory::{self, MapLine, PrecopyView, PM_EXCLUSIVE, PM_FILE, PM_PFN, PM_PRESENT};
use super::remote::{Remote, PAGE};
use crate::image::precopy::{PrecopyBatch, RunSrc, BATCH_PAGES};
use crate::sys::{self, uffd, Errno};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: dirty tracking: {what}: {source}")]
    Sys {
        pid: i32,
        what: &'static str,
        #[source]
        source: Errno,
    },
    #[error("process {pid}: dirty tracking: the kernel lacks UFFD_FEATURE_WP_ASYNC")]
    NoWpAsync { pid: i32 },
    #[error("process {pid}: pre-copy: read memory: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Remote(#[from] super::remote::Error),
    #[error(transparent)]
    Memory(#[from] memory::Error),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Raw page bytes per batch.
const BATCH_BYTES: usize = 4 << 20;
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// One process under dirty tracking.
pub struct Tracked {
    pub host: i32,
    pub ns: i32,
    _uffd: OwnedFd,
    pagemap: File,
    mem: File,
    ranges: Vec<(u64, u64)>,
    /// Pages sent so far, by address (ordered: the final dump wants ranges).
    sent: BTreeSet<u64>,
}

/// What one round sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundStats {
    pub pages: u64,
    pub zero_pages: u64,
    /// Pages sent as references to another process's copy.
    pub shared_pages: u64,
    pub raw_bytes: u64,
    pub batches: u64,
}

/// Page addresses as sorted disjoint ranges.
fn ranges(pages: BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some(r) if r.1 == p => r.1 += PAGE,
            _ => out.push((p, p + PAGE)),
        }
    }
    out
}

/// Appends a page to the runs, extending the last run where it continues.
fn push(runs: &mut Vec<(u64, u32, RunSrc)>, addr: u64, src: RunSrc) {
    if let Some(last) = runs.last_mut() {
        let len = u64::from(last.1) * PAGE;
        let follows = match (last.2, src) {
            (RunSrc::Same { pid: p, addr: a }, RunSrc::Same { pid: q, addr: b }) => p == q && a + len == b,
            (x, y) => x == y,
        };
        if follows && last.0 + len == addr {
            last.1 += 1;
            return;
        }
    }
    runs.push((addr, 1, src));
}

/// Starts tracking the stopped process behind `remote` (its main thread
/// seized and stopped). `exclude` is the dumper's scratch area, if any.
pub fn track(remote: &Remote, maps: &[MapLine], ns: i32) -> Result<Tracked> {
    let pid = remote.pid;
    // User-mode faults only: asynchronous write-protect faults are
    // resolved by the kernel before that distinction is made, and the flag
    // lets a process without CAP_SYS_PTRACE (an OCI container's, say) make
    // one while vm.unprivileged_userfaultfd is 0.
    const UFFD_USER_MODE_ONLY: u64 = 1;
    let fd = remote.call(
        "userfaultfd",
        libc::SYS_userfaultfd,
        &[(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY],
    )?;
    let taken =
        sys::pidfd_open(nix::unistd::Pid::from_raw(pid)).and_then(|pidfd| sys::pidfd_getfd(pidfd.as_fd(), fd as i32));
    // The process keeps no trace of it; our copy keeps it alive.
    remote.close(fd)?;
    let uffd = taken.map_err(|source| Error::Sys {
        pid,
        what: "take the userfaultfd",
        source,
    })?;
    let features = uffd::api(uffd.as_fd(), uffd::FEATURE_WP_ASYNC).map_err(|source| Error::Sys {
        pid,
        what: "UFFDIO_API",
        source,
    })?;
    if features & uffd::FEATURE_WP_ASYNC == 0 {
        return Err(Error::NoWpAsync { pid });
    }
    let mut ranges = Vec::new();
    for m in maps {
        let b = m.perms.as_bytes();
        let private_writable = b.get(1) == Some(&b'w') && b.get(3) == Some(&b'p');
        if !private_writable || m.path.starts_with("[v") {
            continue;
        }
        // A mapping that can not be registered is simply sent whole at the
        // end.
        if uffd::register_wp(uffd.as_fd(), m.start, m.end - m.start).is_ok() {
            ranges.push((m.start, m.end));
        }
    }
    let open = |what: &str| File::open(format!("/proc/{pid}/{what}")).map_err(|source| Error::Read { pid, source });
    Ok(Tracked {
        host: pid,
        ns,
        _uffd: uffd,
        pagemap: open("pagemap")?,
        mem: open("mem")?,
        ranges,
        sent: BTreeSet::new(),
    })
}

impl Tracked {
    fn scan(&self, start: u64, end: u64, reprotect: bool) -> Result<Vec<(u64, u64)>> {
        uffd::scan_written(self.pagemap.as_fd(), start, end, reprotect).map_err(|source| Error::Sys {
            pid: self.host,
            what: "PAGEMAP_SCAN",
            source,
        })
    }

    /// Pages written since the last round (not protected again).
    pub fn dirty_pages(&self) -> Result<u64> {
        let mut n = 0;
        for &(s, e) in &self.ranges {
            n += self.scan(s, e, false)?.iter().map(|r| (r.1 - r.0) / PAGE).sum::<u64>();
        }
        Ok(n)
    }

    /// One round: the pages written since the last one (all present pages,
    /// the first time) are protected again, read, and handed to `emit` in
    /// batches. `shared` maps the physical pages sent earlier in this round
    /// (by any process) to where they were: a page still shared
    /// copy-on-write is sent as a reference. A process that exited
    /// meanwhile sends nothing.
    pub fn round(
        &mut self,
        round: u32,
        level: Option<i32>,
        shared: &mut HashMap<u64, (i32, u64)>,
        emit: &mut dyn FnMut(PrecopyBatch) -> crate::image::Result<()>,
    ) -> Result<RoundStats> {
        let mut stats = RoundStats::default();
        let mut runs: Vec<(u64, u32, RunSrc)> = Vec::new();
        let mut batch_pages = 0u64;
        let mut raw: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let ranges = self.ranges.clone();
        for (s, e) in ranges {
            let written = match self.scan(s, e, true) {
                Ok(w) => w,
                Err(Error::Sys {
                    source: Errno::ESRCH, ..
                }) => return Ok(stats),
                Err(e) => return Err(e),
            };
            for (ws, we) in written {
                let entries = memory::read_pagemap(&self.pagemap, self.host, ws, (we - ws) / PAGE)?;
                // Only what the final dump would store: present anonymous
                // pages.
                let wanted = |e: u64| e & PM_PRESENT != 0 && e & PM_FILE == 0;
                let mut i = 0usize;
                while i < entries.len() {
                    if !wanted(entries[i]) {
                        i += 1;
                        continue;
                    }
                    let mut j = i;
                    while j < entries.len() && wanted(entries[j]) && (j - i) * (PAGE as usize) < buf.len() {
                        j += 1;
                    }
                    let at = ws + i as u64 * PAGE;
                    let len = (j - i) * PAGE as usize;
                    if self.mem.read_exact_at(&mut buf[..len], at).is_err() {
                        // Unmapped meanwhile: the final dump sees it.
                        i = j;
                        continue;
                    }
                    for k in 0..(j - i) {
                        let page = &buf[k * PAGE as usize..(k + 1) * PAGE as usize];
                        let addr = at + k as u64 * PAGE;
                        let entry = entries[i + k];
                        let pfn = entry & PM_PFN;
                        let mut src = if page.iter().all(|b| *b == 0) {
                            RunSrc::Zero
                        } else {
                            RunSrc::Data
                        };
                        if src == RunSrc::Data && pfn != 0 && entry & PM_EXCLUSIVE == 0 {
                            match shared.get(&pfn) {
                                Some(&(pid, from)) if pid != self.ns => src = RunSrc::Same { pid, addr: from },
                                Some(_) => {}
                                None => {
                                    shared.insert(pfn, (self.ns, addr));
                                }
                            }
                        }
                        push(&mut runs, addr, src);
                        match src {
                            RunSrc::Zero => stats.zero_pages += 1,
                            RunSrc::Same { .. } => stats.shared_pages += 1,
                            RunSrc::Data => raw.extend_from_slice(page),
                        }
                        stats.pages += 1;
                        batch_pages += 1;
                        self.sent.insert(addr);
                        if raw.len() >= BATCH_BYTES || runs.len() >= 65536 || batch_pages >= BATCH_PAGES {
                            stats.raw_bytes += raw.len() as u64;
                            stats.batches += 1;
                            emit(PrecopyBatch::seal(
                                round,
                                self.ns,
                                std::mem::take(&mut runs),
                                &raw,
                                level,
                            ))?;
                            raw.clear();
                            batch_pages = 0;
                        }
                    }
                    i = j;
                }
            }
        }
        if !runs.is_empty() {
            stats.raw_bytes += raw.len() as u64;
            stats.batches += 1;
            emit(PrecopyBatch::seal(round, self.ns, runs, &raw, level))?;
        }
        Ok(stats)
    }

    /// For the final dump, with the process stopped: what was sent, and
    /// what was written since. Tracking ends when this is dropped (which
    /// write-unprotects every page: kept out of the downtime).
    pub fn finish(&mut self) -> Result<PrecopyView> {
        // Untracked mappings (made after tracking began) count as written
        // throughout.
        let written = self.scan(0, TASK_SIZE, false)?;
        Ok(PrecopyView {
            sent: ranges(std::mem::take(&mut self.sent)),
            written,
        })
    }
}
