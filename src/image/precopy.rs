//! Pages sent ahead while the container still runs (live migration's
//! pre-copy). A batch holds pages of one process from one round, by
//! address; batches are applied in the order they were sent, so a later
//! round's copy of a page replaces an earlier one. The final image refers
//! to them by run (see `PageRun::precopied`) instead of carrying them again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

const PAGE: usize = 4096;
/// A batch claiming more raw bytes than this is damage.
pub const BATCH_CAP: usize = 64 << 20;
/// A batch covers at most this many pages (1 GiB), zero and shared ones
/// included: the sender starts a new batch there.
pub const BATCH_PAGES: u64 = 1 << 18;
/// A batch covering more pages than this (16 GiB) is refused: each page
/// costs an index entry here. Far above [`BATCH_PAGES`], since senders of
/// the previous release did not split batches by pages (a large run of
/// zero pages is one run) and must still be received.
pub const BATCH_PAGES_CAP: u64 = 1 << 22;

/// Where the pages of a run are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunSrc {
    /// In the batch's data.
    Data,
    /// All zero.
    Zero,
    /// The same as the pages of process `pid` at `addr`, sent in an
    /// earlier batch of this round (shared copy-on-write after a fork).
    Same { pid: i32, addr: u64 },
}

/// Pages of one process from one pre-copy round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecopyBatch {
    /// Send order: batches are applied in it.
    pub seq: u64,
    pub round: u32,
    /// The process's PID in the container.
    pub pid: i32,
    /// Runs of pages: address, count, and where their contents are.
    pub runs: Vec<(u64, u32, RunSrc)>,
    /// The `Data` pages, in run order, zstd-compressed or raw.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub compressed: bool,
    /// CRC-32 of the raw page bytes.
    pub crc32: u32,
}

impl PrecopyBatch {
    /// Raw page bytes this batch carries.
    pub fn raw_len(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| r.2 == RunSrc::Data)
            .fold(0usize, |sum, r| sum.saturating_add(r.1 as usize * PAGE))
    }

    /// Builds a batch from raw page bytes (`raw` holds the `Data` runs),
    /// compressed at zstd `level` where that makes it smaller.
    pub fn seal(round: u32, pid: i32, runs: Vec<(u64, u32, RunSrc)>, raw: &[u8], level: Option<i32>) -> Self {
        let crc32 = crc32fast::hash(raw);
        let compressed = level.and_then(|l| zstd::bulk::compress(raw, l).ok().filter(|c| c.len() < raw.len()));
        let (data, compressed) = match compressed {
            Some(c) => (c, true),
            None => (raw.to_vec(), false),
        };
        Self {
            seq: 0,
            round,
            pid,
            runs,
            data,
            compressed,
            crc32,
        }
    }
}

/// The memory of one shadow: [`SHADOW_SPAN`] bytes at a fixed address of
/// this process (and of children forked from it) that read as zero until
/// written. Making it is the system's part (an anonymous mapping reserved
/// without committing memory, see `kinds::memory::reserve_shadow`); this
/// module only keeps pages in it.
pub trait ShadowMem: Send + Sync {
    /// Its address in this process (and in children forked from it).
    fn addr(&self) -> u64;
    /// Its length in bytes.
    fn span(&self) -> usize;
    /// The page (4096 bytes) at offset `off`.
    fn page(&self, off: usize) -> &[u8];
    fn page_mut(&mut self, off: usize) -> &mut [u8];
    /// Drops the pages of `off..off+len`: they read as zero again.
    fn discard(&mut self, off: usize, len: usize);
    /// Faults in the pages of `off..off+len` for writing in one go (best
    /// effort): far cheaper than one fault per page as they are written.
    fn populate(&mut self, off: usize, len: usize);
}

/// Makes the memory of a shadow of the given length.
pub type ReserveShadow = fn(usize) -> std::io::Result<Box<dyn ShadowMem>>;

/// The destination's copy of the pre-copied pages. Each process's pages
/// sit in shadow mappings that mirror its address space, one per GiB of
/// addresses it uses: the page at address A is at offset A mod 1 GiB of the
/// shadow for A's GiB. The restored processes are forked from the process
/// holding this, so they inherit the shadows, and a run of pages is moved
/// into place with one mremap: no copy, no fresh memory, during downtime.
pub struct PrecopyPages {
    /// Every page received: (pid, address) -> whether it is all zero.
    index: HashMap<(i32, u64), bool>,
    /// (pid, GiB number) -> shadow.
    shadows: HashMap<(i32, u64), Box<dyn ShadowMem>>,
    /// Makes a shadow's memory.
    reserve: ReserveShadow,
    pub pages: u64,
}

/// Addresses covered by one shadow mapping.
pub const SHADOW_SPAN: u64 = 1 << 30;
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

impl PrecopyPages {
    /// An empty store whose shadows' memory `reserve` makes.
    pub fn new(reserve: ReserveShadow) -> Self {
        Self {
            index: HashMap::new(),
            shadows: HashMap::new(),
            reserve,
            pages: 0,
        }
    }

    /// Checks a batch and keeps its pages. Batches must come in send order.
    pub fn add(&mut self, b: &PrecopyBatch) -> Result<()> {
        let bad = |why: &str| Error::Pages(format!("pre-copy batch of process {}: {why}", b.pid));
        let raw_len = b.raw_len();
        if raw_len > BATCH_CAP {
            return Err(bad("over the size cap"));
        }
        let raw = if b.compressed {
            zstd::bulk::decompress(&b.data, raw_len).map_err(|e| bad(&e.to_string()))?
        } else {
            b.data.clone()
        };
        if raw.len() != raw_len {
            return Err(bad("length does not match its runs"));
        }
        if crc32fast::hash(&raw) != b.crc32 {
            return Err(Error::Checksum {
                name: format!("pre-copy batch of process {}", b.pid),
            });
        }
        self.check_runs(b)?;
        let mut off = 0;
        for &(addr, n, src) in &b.runs {
            if src != RunSrc::Zero {
                self.populate(b.pid, addr, u64::from(n) * PAGE as u64)?;
            }
            for k in 0..u64::from(n) {
                let at = addr + k * PAGE as u64;
                let zero = match src {
                    RunSrc::Zero => true,
                    RunSrc::Data => {
                        self.shadow_page_mut(b.pid, at)?.copy_from_slice(&raw[off..off + PAGE]);
                        off += PAGE;
                        false
                    }
                    RunSrc::Same { pid, addr: from } => {
                        let from = from + k * PAGE as u64;
                        let page: [u8; PAGE] = self
                            .page(pid, from)
                            .ok_or_else(|| bad(&format!("refers to page {from:#x} of process {pid}, never sent")))?
                            .try_into()
                            .expect("a page");
                        if page == ZERO_PAGE {
                            true
                        } else {
                            self.shadow_page_mut(b.pid, at)?.copy_from_slice(&page);
                            false
                        }
                    }
                };
                if zero {
                    // A page that was data before reads as zero again.
                    if let Some(sh) = self.shadows.get_mut(&(b.pid, at / SHADOW_SPAN)) {
                        sh.discard((at % SHADOW_SPAN) as usize, PAGE);
                    }
                }
                if self.index.insert((b.pid, at), zero).is_none() {
                    self.pages += 1;
                }
            }
        }
        Ok(())
    }

    /// Checks a batch's runs before anything of it is kept: a bounded
    /// number of pages, at user addresses, and shared pages that were
    /// sent before.
    fn check_runs(&self, b: &PrecopyBatch) -> Result<()> {
        let pages = b.runs.iter().fold(0u64, |sum, r| sum.saturating_add(u64::from(r.1)));
        if pages > BATCH_PAGES_CAP {
            return Err(Error::PrecopyTooLarge {
                pid: b.pid,
                pages,
                cap: BATCH_PAGES_CAP,
            });
        }
        let user_range = |addr: u64, n: u32| {
            addr % PAGE as u64 == 0
                && addr
                    .checked_add(u64::from(n) * PAGE as u64)
                    .is_some_and(|e| e <= TASK_SIZE)
        };
        for &(addr, n, src) in &b.runs {
            let bad = |reason| Error::PrecopyRun {
                pid: b.pid,
                addr,
                pages: n,
                reason,
            };
            if !user_range(addr, n) {
                return Err(bad("is not a user address range"));
            }
            if let RunSrc::Same { pid, addr: from } = src {
                if !user_range(from, n) {
                    return Err(bad("copies from outside user address space"));
                }
                if !self.has_all(pid, from, u64::from(n) * PAGE as u64) {
                    return Err(bad("copies pages of another process never sent"));
                }
            }
        }
        Ok(())
    }

    /// Faults in the shadow pages of a run in one go: far cheaper than
    /// one fault per page.
    fn populate(&mut self, pid: i32, addr: u64, len: u64) -> Result<()> {
        let mut at = addr;
        while at < addr + len {
            let piece = (SHADOW_SPAN - at % SHADOW_SPAN).min(addr + len - at);
            self.shadow_page_mut(pid, at)?;
            let sh = self.shadows.get_mut(&(pid, at / SHADOW_SPAN)).expect("just made");
            sh.populate((at % SHADOW_SPAN) as usize, piece as usize);
            at += piece;
        }
        Ok(())
    }

    fn shadow_page_mut(&mut self, pid: i32, at: u64) -> Result<&mut [u8]> {
        let sh = match self.shadows.entry((pid, at / SHADOW_SPAN)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let r = (self.reserve)(SHADOW_SPAN as usize)
                    .map_err(|e| Error::Pages(format!("reserve memory for pre-copied pages: {e}")))?;
                e.insert(r)
            }
        };
        Ok(sh.page_mut((at % SHADOW_SPAN) as usize))
    }

    /// The page of process `pid` at `addr`, if it was pre-copied.
    pub fn page(&self, pid: i32, addr: u64) -> Option<&[u8]> {
        if *self.index.get(&(pid, addr))? {
            return Some(&ZERO_PAGE);
        }
        let sh = self.shadows.get(&(pid, addr / SHADOW_SPAN))?;
        Some(sh.page((addr % SHADOW_SPAN) as usize))
    }

    /// Whether every page of `addr..addr+len` of `pid` was pre-copied.
    pub fn has_all(&self, pid: i32, addr: u64, len: u64) -> bool {
        (0..len / PAGE as u64).all(|k| self.index.contains_key(&(pid, addr + k * PAGE as u64)))
    }

    /// Every shadow: (pid, address here, length).
    pub fn all_shadows(&self) -> Vec<(i32, u64, u64)> {
        self.shadows
            .iter()
            .map(|((pid, _), r)| (*pid, r.addr(), r.span() as u64))
            .collect()
    }

    /// Where process `pid`'s shadows are (in this process, and in children
    /// forked from it): (first address they mirror, shadow address, length).
    pub fn shadows_of(&self, pid: i32) -> Vec<(u64, u64, u64)> {
        let mut v: Vec<(u64, u64, u64)> = self
            .shadows
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .map(|((_, gib), r)| (gib * SHADOW_SPAN, r.addr(), r.span() as u64))
            .collect();
        v.sort();
        v
    }
}

const TASK_SIZE: u64 = 0x7fff_ffff_f000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Pages faulted in ahead by this thread's test.
        static POPULATED: Cell<usize> = const { Cell::new(0) };
    }

    /// Shadow memory on the heap, a page at a time.
    #[derive(Default)]
    struct Heap(HashMap<usize, Box<[u8; PAGE]>>);

    impl ShadowMem for Heap {
        fn addr(&self) -> u64 {
            0
        }
        fn span(&self) -> usize {
            SHADOW_SPAN as usize
        }
        fn page(&self, off: usize) -> &[u8] {
            self.0.get(&off).map_or(&ZERO_PAGE[..], |p| &p[..])
        }
        fn page_mut(&mut self, off: usize) -> &mut [u8] {
            &mut self.0.entry(off).or_insert_with(|| Box::new([0; PAGE]))[..]
        }
        fn discard(&mut self, off: usize, len: usize) {
            for at in (off..off + len).step_by(PAGE) {
                self.0.remove(&at);
            }
        }
        fn populate(&mut self, _off: usize, len: usize) {
            POPULATED.with(|n| n.set(n.get() + len / PAGE));
        }
    }

    fn heap_store() -> PrecopyPages {
        POPULATED.with(|n| n.set(0));
        PrecopyPages::new(|_| Ok(Box::new(Heap::default())))
    }

    #[test]
    fn later_batches_replace_earlier_pages() {
        let mut store = heap_store();
        let a = [1u8; PAGE];
        let b = [2u8; PAGE];
        let mut raw = a.to_vec();
        raw.extend_from_slice(&a);
        let runs = vec![(0x1000, 2, RunSrc::Data), (0x3000, 1, RunSrc::Zero)];
        store.add(&PrecopyBatch::seal(1, 7, runs, &raw, Some(1))).unwrap();
        // Process 8 shares 7's pages.
        let same = vec![(0x1000, 2, RunSrc::Same { pid: 7, addr: 0x1000 })];
        store.add(&PrecopyBatch::seal(1, 8, same, &[], None)).unwrap();
        let later = vec![(0x2000, 1, RunSrc::Data), (0x1000, 1, RunSrc::Zero)];
        store.add(&PrecopyBatch::seal(2, 7, later, &b, None)).unwrap();
        assert_eq!(store.page(7, 0x1000).unwrap(), &[0u8; PAGE][..]);
        assert_eq!(store.page(7, 0x2000).unwrap(), &b[..]);
        assert_eq!(store.page(7, 0x3000).unwrap(), &[0u8; PAGE][..]);
        // 7's later writes do not show through 8's copies.
        assert_eq!(store.page(8, 0x1000).unwrap(), &a[..]);
        assert_eq!(store.page(8, 0x2000).unwrap(), &a[..]);
        assert!(store.page(9, 0x1000).is_none());
        assert_eq!(store.pages, 5);
        // Every run of pages that are not all zero was faulted in ahead.
        assert_eq!(POPULATED.with(Cell::get), 5);
        let dangling = vec![(0x1000, 1, RunSrc::Same { pid: 3, addr: 0 })];
        assert!(store.add(&PrecopyBatch::seal(1, 9, dangling, &[], None)).is_err());
    }

    #[test]
    fn damaged_batches_are_refused() {
        let mut store = heap_store();
        let one = || vec![(0x1000, 1, RunSrc::Data)];
        let mut bad = PrecopyBatch::seal(1, 7, one(), &[5u8; PAGE], None);
        bad.data[10] ^= 1;
        assert!(matches!(store.add(&bad), Err(Error::Checksum { .. })));
        let mut short = PrecopyBatch::seal(1, 7, one(), &[5u8; PAGE], Some(1));
        short.runs[0].1 = 2;
        assert!(store.add(&short).is_err());
        let mut huge = PrecopyBatch::seal(1, 7, one(), &[5u8; PAGE], None);
        huge.runs[0].1 = u32::MAX;
        assert!(store.add(&huge).is_err());
        assert_eq!(store.pages, 0);
    }

    #[test]
    fn runs_that_would_wrap_or_exhaust_memory_are_refused() {
        let mut store = heap_store();
        // Shared pages of a process never sent: refused before anything
        // is reserved or populated for them.
        let dangling = vec![(0x1000, u32::MAX >> 14, RunSrc::Same { pid: 3, addr: 0x1000 })];
        assert!(matches!(
            store.add(&PrecopyBatch::seal(1, 9, dangling, &[], None)),
            Err(Error::PrecopyRun { pid: 9, .. })
        ));
        assert!(store.all_shadows().is_empty());
        // A source address whose end wraps.
        store
            .add(&PrecopyBatch::seal(1, 3, vec![(0x1000, 1, RunSrc::Zero)], &[], None))
            .unwrap();
        let wraps = vec![(
            0x1000,
            2,
            RunSrc::Same {
                pid: 3,
                addr: !0xfff_u64,
            },
        )];
        assert!(matches!(
            store.add(&PrecopyBatch::seal(1, 9, wraps, &[], None)),
            Err(Error::PrecopyRun { .. })
        ));
        // Billions of zero pages in a few bytes.
        let zeros = vec![(0x1000, u32::MAX, RunSrc::Zero)];
        assert!(matches!(
            store.add(&PrecopyBatch::seal(1, 9, zeros, &[], None)),
            Err(Error::PrecopyTooLarge { pid: 9, .. })
        ));
        // Data runs whose sizes sum past usize: refused, not wrapped.
        let mut many = PrecopyBatch::seal(1, 9, vec![], &[], None);
        many.runs = vec![(0x1000, u32::MAX, RunSrc::Data); 1 << 21];
        assert_eq!(many.raw_len(), usize::MAX);
        assert!(store.add(&many).is_err());
        assert_eq!(store.pages, 1);
    }
}
