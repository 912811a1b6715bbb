//! Pages shared copy-on-write between processes (a parent and the children
//! it forked), rebuilt shared: one physical page for every holder again,
//! as after the fork, not one copy each.
//!
//! The dump stores such a page once, for its first holder, and records it
//! in the others as "same as process O at address A" ([`PageRun::from`]).
//! At restore, a private anonymous mapping of an owner O that others hold
//! at the same addresses is a *base*: before the tree is forked, the
//! restorer reads O's pages of it into a mapping of its own (a shadow, with
//! the mapping's MAP_NORESERVE), and every restored task inherits the
//! shadow by fork, copy-on-write. O and each holder (a *sharer*) then move
//! the whole shadow into place with one mremap: one mapping, as before,
//! sharing the shadow's pages. A sharer first drops the pages it did not
//! share with O (MADV_DONTNEED), then its own pages are written as usual,
//! each write breaking the sharing of just that page, as the program's own
//! writes did after the fork.
//!
//! Only private anonymous mappings that are neither stacks (growsdown),
//! wipe-on-fork, don't-fork nor droppable, held over the same range, with
//! the same MAP_NORESERVE, take part, and only without pre-copied pages (a
//! live migration keeps its own shadows). The pages of other mappings,
//! and of mappings that do not take part, are read ahead into memory with
//! them and written as before: stacks and the written pages of private
//! file mappings come back as copies.

use std::collections::HashMap;

use super::memory::{Backing, MemoryImage, PageRun, Vma};
use crate::sys;

/// Where the pages of a process come from at restore: the image's page
/// stream, or what [`Preloaded`] read ahead of it.
pub trait PageSource {
    /// The next at most `max` bytes of the process's stored pages.
    fn next_slice(&mut self, max: usize) -> crate::image::Result<&[u8]>;
}

impl<R: std::io::Read + Send + 'static> PageSource for crate::image::pages::PageReader<R> {
    fn next_slice(&mut self, max: usize) -> crate::image::Result<&[u8]> {
        crate::image::pages::PageReader::next_slice(self, max)
    }
}

/// One process's pages read ahead, in stream order.
pub struct Buffered<'a> {
    data: &'a [u8],
    pos: usize,
}

impl PageSource for Buffered<'_> {
    fn next_slice(&mut self, max: usize) -> crate::image::Result<&[u8]> {
        let n = max.min(self.data.len() - self.pos);
        if n == 0 && max > 0 {
            return Err(crate::image::Error::Pages("the pages read ahead end early".into()));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

/// A mapping's part in the sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its pages fill the shadow.
    Owner,
    /// It shares the shadow of process `owner`'s mapping at the same range.
    Sharer { owner: i32 },
}

/// One base: an owner's mapping others share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub owner: i32,
    pub start: u64,
    pub end: u64,
    pub noreserve: bool,
    /// The processes that share it.
    pub sharers: Vec<i32>,
}

/// Which mappings of the image share pages, and with whom.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub bases: Vec<Base>,
}

/// Whether mapping `v` can take part.
fn eligible(v: &Vma) -> bool {
    v.backing == Backing::Anon
        && !v.shared
        && !v.flags.iter().any(|f| matches!(f.as_str(), "gd" | "wf" | "dc" | "dp"))
        && !v.runs.iter().any(|r| r.precopied)
}

fn noreserve(v: &Vma) -> bool {
    v.flags.iter().any(|f| f == "nr")
}

/// Whether run `r` of a mapping is page-for-page process `owner`'s, at the
/// same addresses.
pub fn same_as(r: &PageRun, owner: i32) -> bool {
    r.from == Some((owner, r.addr))
}

impl Plan {
    /// The plan for the processes' memory, `procs` in the page stream's
    /// order (an owner comes before those that share its pages).
    pub fn of(procs: &[(i32, &MemoryImage)]) -> Self {
        // Every eligible mapping not sharing another's is a candidate;
        // (owner, start, end, noreserve) -> index in `bases`.
        let mut bases: Vec<Base> = Vec::new();
        let mut index: HashMap<(i32, u64, u64), usize> = HashMap::new();
        for (pid, mm) in procs {
            for v in mm.vmas.iter().filter(|v| eligible(v)) {
                // The owner this mapping shares most pages with.
                let mut counts: HashMap<usize, u64> = HashMap::new();
                for r in &v.runs {
                    if let Some((o, at)) = r.from {
                        if at == r.addr {
                            if let Some(&i) = index.get(&(o, v.start, v.end)) {
                                if bases[i].noreserve == noreserve(v) {
                                    *counts.entry(i).or_default() += u64::from(r.pages);
                                }
                            }
                        }
                    }
                }
                match counts.into_iter().max_by_key(|(i, n)| (*n, std::cmp::Reverse(*i))) {
                    Some((i, _)) => bases[i].sharers.push(*pid),
                    None => {
                        index.insert((*pid, v.start, v.end), bases.len());
                        bases.push(Base {
                            owner: *pid,
                            start: v.start,
                            end: v.end,
                            noreserve: noreserve(v),
                            sharers: Vec::new(),
                        });
                    }
                }
            }
        }
        bases.retain(|b| !b.sharers.is_empty());
        Plan { bases }
    }

    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The part of process `pid`'s mapping at `start` in the sharing, and
    /// its base.
    pub fn role(&self, pid: i32, start: u64) -> Option<(usize, Role)> {
        self.bases.iter().enumerate().find_map(|(i, b)| {
            if b.start != start {
                None
            } else if b.owner == pid {
                Some((i, Role::Owner))
            } else if b.sharers.contains(&pid) {
                Some((i, Role::Sharer { owner: b.owner }))
            } else {
                None
            }
        })
    }
}

/// The pages read ahead of the tree's fork: the bases' shadows, and every
/// other stored page by process.
pub struct Preloaded {
    plan: Plan,
    shadows: Vec<sys::Reserved>,
    /// The shadows' addresses and lengths (in the restored tasks too, once
    /// this process has let go of its copies).
    at: Vec<(u64, u64)>,
    data: HashMap<i32, Vec<u8>>,
}

/// A mapping of a process that moves into place from a shadow: (its
/// start, the shadow's address, length, the owner it shares with).
pub type Shadowed = (u64, u64, u64, Option<i32>);

impl Preloaded {
    /// Reads the whole page stream: `procs` in its order.
    pub fn read(plan: Plan, procs: &[(i32, &MemoryImage)], pages: &mut dyn PageSource) -> super::memory::Result<Self> {
        let mut shadows = Vec::with_capacity(plan.bases.len());
        for b in &plan.bases {
            let r = sys::Reserved::anon((b.end - b.start) as usize, b.noreserve).map_err(|e| {
                super::memory::Error::Proc {
                    pid: b.owner,
                    what: format!("make the shadow of mapping {:#x}-{:#x}", b.start, b.end),
                    source: e.into(),
                }
            })?;
            shadows.push(r);
        }
        let mut data: HashMap<i32, Vec<u8>> = HashMap::new();
        for (pid, mm) in procs {
            let buf = data.entry(*pid).or_default();
            for v in &mm.vmas {
                let owned = match plan.role(*pid, v.start) {
                    Some((i, Role::Owner)) => Some(i),
                    _ => None,
                };
                for r in v.runs.iter().filter(|r| !r.zero && r.from.is_none() && !r.precopied) {
                    let mut left = u64::from(r.pages) * super::remote::PAGE;
                    let mut at = r.addr;
                    while left > 0 {
                        let s = pages.next_slice(left as usize)?;
                        let n = s.len() as u64;
                        match owned {
                            Some(i) => {
                                let off = (at - v.start) as usize;
                                shadows[i].bytes_mut()[off..off + s.len()].copy_from_slice(s);
                            }
                            None => buf.extend_from_slice(s),
                        }
                        at += n;
                        left -= n;
                    }
                }
            }
        }
        let at = shadows.iter().map(|s| (s.addr(), s.len() as u64)).collect();
        Ok(Self {
            plan,
            shadows,
            at,
            data,
        })
    }

    /// Every shadow with the processes that use it: (pid, address,
    /// length), for the fork to leave out of a subtree that needs none.
    pub fn users(&self) -> Vec<(i32, u64, u64)> {
        let mut out = Vec::new();
        for (b, &(at, len)) in self.plan.bases.iter().zip(&self.at) {
            for pid in std::iter::once(b.owner).chain(b.sharers.iter().copied()) {
                out.push((pid, at, len));
            }
        }
        out
    }

    /// The mappings of process `pid` that move into place from a shadow.
    pub fn shadowed(&self, pid: i32) -> Vec<Shadowed> {
        self.plan
            .bases
            .iter()
            .zip(&self.at)
            .filter_map(|(b, &(at, len))| {
                let owner = if b.owner == pid {
                    None
                } else if b.sharers.contains(&pid) {
                    Some(b.owner)
                } else {
                    return None;
                };
                Some((b.start, at, len, owner))
            })
            .collect()
    }

    /// Process `pid`'s other stored pages.
    pub fn pages_of(&self, pid: i32) -> Buffered<'_> {
        Buffered {
            data: self.data.get(&pid).map(|d| d.as_slice()).unwrap_or(&[]),
            pos: 0,
        }
    }

    /// Lets go of this process's copies of the shadows (the restored tasks
    /// keep theirs); their addresses stay known.
    pub fn release_shadows(&mut self) {
        self.shadows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::memory::MmFields;

    fn vma(start: u64, runs: Vec<PageRun>) -> Vma {
        Vma {
            start,
            end: start + 16 * 4096,
            prot: 3,
            shared: false,
            offset: 0,
            backing: Backing::Anon,
            flags: Vec::new(),
            runs,
        }
    }

    fn run(addr: u64, from: Option<(i32, u64)>) -> PageRun {
        PageRun {
            addr,
            pages: 4,
            zero: false,
            from,
            precopied: false,
        }
    }

    fn mm(vmas: Vec<Vma>) -> MemoryImage {
        MemoryImage {
            vmas,
            mm: MmFields::default(),
            guards: Vec::new(),
        }
    }

    #[test]
    fn a_mapping_shared_at_the_same_range_is_a_base() {
        let a = 0x10000;
        let parent = mm(vec![vma(a, vec![run(a, None)]), vma(0x90000, vec![run(0x90000, None)])]);
        // The child shares the first mapping's pages; its second mapping
        // holds a page of the parent's first at another address: copied.
        let child = mm(vec![
            vma(a, vec![run(a, Some((1, a))), run(a + 0x4000, None)]),
            vma(0x90000, vec![run(0x90000, Some((1, a)))]),
        ]);
        let grandchild = mm(vec![vma(a, vec![run(a, Some((1, a)))])]);
        let plan = Plan::of(&[(1, &parent), (2, &child), (3, &grandchild)]);
        assert_eq!(plan.bases.len(), 1);
        assert_eq!(plan.bases[0].owner, 1);
        assert_eq!(plan.bases[0].sharers, vec![2, 3]);
        assert_eq!(plan.role(1, a), Some((0, Role::Owner)));
        assert_eq!(plan.role(3, a), Some((0, Role::Sharer { owner: 1 })));
        assert_eq!(plan.role(2, 0x90000), None);
    }

    #[test]
    fn stacks_and_other_ranges_take_no_part() {
        let a = 0x10000;
        let mut stack = vma(a, vec![run(a, None)]);
        stack.flags.push("gd".into());
        let parent = mm(vec![stack.clone()]);
        let child = mm(vec![Vma {
            runs: vec![run(a, Some((1, a)))],
            ..stack
        }]);
        assert!(Plan::of(&[(1, &parent), (2, &child)]).is_empty());
        let parent = mm(vec![vma(a, vec![run(a, None)])]);
        let mut grown = vma(a, vec![run(a, Some((1, a)))]);
        grown.end += 4096;
        assert!(Plan::of(&[(1, &parent), (2, &mm(vec![grown]))]).is_empty());
    }
}
