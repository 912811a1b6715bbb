//! Pages sent ahead while the container still runs (live migration's
//! pre-copy). A batch holds pages of one process from one round, by
//! address; batches are applied in the order they were sent, so a later
//! round's copy of a page replaces an earlier one. The final image refers
//! to them by run (see `PageRun::precopied`) instead of carrying them again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

const PAGE: usize = 4096;
/// Pages per arena block (faulted in as a whole).
const BLOCK_PAGES: usize = 4096;
/// A batch claiming more raw bytes than this is damage.
pub const BATCH_CAP: usize = 64 << 20;

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
            .map(|r| r.1 as usize * PAGE)
            .sum()
    }

    pub fn pages(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.1)).sum()
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

/// The destination's copy of the pre-copied pages, by process and address.
#[derive(Default)]
pub struct PrecopyPages {
    /// (pid, address) -> (round, slot); slot u32::MAX is an all-zero page.
    index: HashMap<(i32, u64), (u32, u32)>,
    blocks: Vec<Box<[u8]>>,
    used: usize,
    pub pages: u64,
}

const ZERO_SLOT: u32 = u32::MAX;
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

impl PrecopyPages {
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
        let mut off = 0;
        for &(addr, n, src) in &b.runs {
            for k in 0..u64::from(n) {
                let at = addr + k * PAGE as u64;
                let key = (b.pid, at);
                let slot = match src {
                    RunSrc::Zero => ZERO_SLOT,
                    RunSrc::Data => {
                        let slot = self.own_slot(key);
                        self.slot_mut(slot).copy_from_slice(&raw[off..off + PAGE]);
                        off += PAGE;
                        slot
                    }
                    RunSrc::Same { pid, addr: from } => {
                        let from = from + k * PAGE as u64;
                        let page: [u8; PAGE] = self
                            .page(pid, from)
                            .ok_or_else(|| bad(&format!("refers to page {from:#x} of process {pid}, never sent")))?
                            .try_into()
                            .expect("a page");
                        if page == ZERO_PAGE {
                            ZERO_SLOT
                        } else {
                            let slot = self.own_slot(key);
                            self.slot_mut(slot).copy_from_slice(&page);
                            slot
                        }
                    }
                };
                if self.index.insert(key, (b.round, slot)).is_none() {
                    self.pages += 1;
                }
            }
        }
        Ok(())
    }

    /// The page's own slot: the one it had, or a new one.
    fn own_slot(&mut self, key: (i32, u64)) -> u32 {
        match self.index.get(&key) {
            Some(&(_, slot)) if slot != ZERO_SLOT => slot,
            _ => self.alloc(),
        }
    }

    fn alloc(&mut self) -> u32 {
        if self.used == self.blocks.len() * BLOCK_PAGES {
            let mut block = vec![0u8; BLOCK_PAGES * PAGE].into_boxed_slice();
            crate::sys::populate(&mut block);
            self.blocks.push(block);
        }
        self.used += 1;
        (self.used - 1) as u32
    }

    fn slot_mut(&mut self, slot: u32) -> &mut [u8] {
        let (b, i) = (slot as usize / BLOCK_PAGES, slot as usize % BLOCK_PAGES);
        &mut self.blocks[b][i * PAGE..(i + 1) * PAGE]
    }

    /// The page of process `pid` at `addr`, if it was pre-copied.
    pub fn page(&self, pid: i32, addr: u64) -> Option<&[u8]> {
        let &(_, slot) = self.index.get(&(pid, addr))?;
        if slot == ZERO_SLOT {
            return Some(&ZERO_PAGE);
        }
        let (b, i) = (slot as usize / BLOCK_PAGES, slot as usize % BLOCK_PAGES);
        Some(&self.blocks[b][i * PAGE..(i + 1) * PAGE])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_batches_replace_earlier_pages() {
        let mut store = PrecopyPages::default();
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
        let dangling = vec![(0x1000, 1, RunSrc::Same { pid: 3, addr: 0 })];
        assert!(store.add(&PrecopyBatch::seal(1, 9, dangling, &[], None)).is_err());
    }

    #[test]
    fn damaged_batches_are_refused() {
        let mut store = PrecopyPages::default();
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
}
