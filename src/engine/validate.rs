//! The content of an image, checked before anything is created. A section
//! whose checksum is right can still say something impossible (a damaged
//! or hostile image, a bug in the writer): processes whose parent is not
//! in the tree, mappings out of order or past the address space, page runs
//! outside their mapping, fds pointing at objects the image lacks. Each is
//! refused here with a message naming the section, the process and what is
//! wrong, so that no restore step wraps, panics or indexes out of bounds.

use std::collections::{HashMap, HashSet};

use crate::kinds::files::{FdKind, FilesImage};
use crate::kinds::memory::{Backing, MemoryImage};
use crate::kinds::pstree::ProcessImage;
use crate::kinds::remote::PAGE;
use crate::kinds::signals::SignalsImage;

/// Errors: what in which section is impossible.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image section {section}: {what}; the image is damaged")]
    Section { section: &'static str, what: &'static str },
    #[error("image section {section}: process {pid}: {what}; the image is damaged")]
    Process {
        section: &'static str,
        pid: i32,
        what: &'static str,
    },
    #[error("image section mm: process {pid}: mapping {start:#x}-{end:#x}: {what}; the image is damaged")]
    Mapping {
        pid: i32,
        start: u64,
        end: u64,
        what: &'static str,
    },
    #[error("image section files: process {pid} fd {fd}: {what}; the image is damaged")]
    Fd { pid: i32, fd: i32, what: &'static str },
}

type Result<T> = std::result::Result<T, Error>;

/// The largest PID the kernel hands out (PID_MAX_LIMIT on 64-bit).
const PID_MAX: i32 = 4 << 20;
/// At most this many processes in one image.
const MAX_PROCESSES: usize = 1 << 16;
/// At most this many threads per process.
const MAX_THREADS: usize = 1 << 16;
/// The highest user address on x86_64 with 5-level page tables.
const TASK_SIZE_MAX: u64 = 1 << 56;
/// The largest fd number the kernel allows (NR_OPEN).
const FD_MAX: i32 = 1 << 20;
/// user_regs_struct in words; the largest xsave area a CPU reports.
const REGS_WORDS: usize = 27;
const XSTATE_MAX: usize = 16384;

/// Checks everything the restore uses from the image.
pub fn image(
    procs: &[ProcessImage],
    mm: &[(i32, MemoryImage)],
    signals: &[(i32, SignalsImage)],
    files: &FilesImage,
) -> Result<()> {
    let live = tree(procs)?;
    memory(mm, &live)?;
    fds(files, &live)?;
    for (pid, s) in signals {
        let proc_err = |what| Error::Process {
            section: "signals",
            pid: *pid,
            what,
        };
        let tids = live.get(pid).ok_or(proc_err("not a live process of the tree"))?;
        let threads = s
            .threads
            .iter()
            .map(|(t, _)| t)
            .chain(s.altstacks.iter().map(|(t, _)| t));
        if threads.into_iter().any(|t| !tids.contains(t)) {
            return Err(proc_err("signal state for a thread the process does not have"));
        }
        if s.actions.len() > 64 {
            return Err(proc_err("more than 64 signal handlers"));
        }
    }
    Ok(())
}

/// The tree: PID 1 first with no parent, every other process after its
/// parent, which is alive; PIDs and TIDs unique and in range. Returns the
/// live processes with their threads.
fn tree(procs: &[ProcessImage]) -> Result<HashMap<i32, HashSet<i32>>> {
    let section = "pstree";
    match procs.first() {
        None => {
            return Err(Error::Section {
                section,
                what: "no processes",
            })
        }
        Some(p) if p.pid != 1 || p.ppid != 0 || p.zombie.is_some() => {
            return Err(Error::Section {
                section,
                what: "the first process is not a live PID 1",
            })
        }
        Some(_) => {}
    }
    if procs.len() > MAX_PROCESSES {
        return Err(Error::Section {
            section,
            what: "more processes than a restore takes",
        });
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let mut tids_seen: HashSet<i32> = HashSet::new();
    let mut live: HashMap<i32, HashSet<i32>> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        let err = |what| Error::Process {
            section,
            pid: p.pid,
            what,
        };
        if !(1..=PID_MAX).contains(&p.pid) || !(0..=PID_MAX).contains(&p.pgid) || !(0..=PID_MAX).contains(&p.sid) {
            return Err(err("a PID, group or session out of range"));
        }
        if !seen.insert(p.pid) {
            return Err(err("listed twice"));
        }
        if i > 0 && !live.contains_key(&p.ppid) {
            return Err(err("its parent is not a live process listed before it"));
        }
        match p.zombie {
            Some(_) if !p.threads.is_empty() => return Err(err("a zombie with threads")),
            Some(_) => continue,
            None => {}
        }
        if p.threads.first().map(|t| t.tid) != Some(p.pid) || p.threads.len() > MAX_THREADS {
            return Err(err("its threads do not start with its main thread"));
        }
        if p.creds.is_none() || p.timers.is_none() {
            return Err(err("a live process without credentials or timers"));
        }
        let mut tids = HashSet::new();
        for t in &p.threads {
            if !(1..=PID_MAX).contains(&t.tid) || !tids_seen.insert(t.tid) {
                return Err(err("a thread ID out of range or listed twice"));
            }
            if t.regs.len() != REGS_WORDS || t.xstate.len() > XSTATE_MAX {
                return Err(err("a thread's registers are not of this architecture"));
            }
            tids.insert(t.tid);
        }
        live.insert(p.pid, tids);
    }
    Ok(live)
}

/// Mappings: in order, not overlapping, page-aligned, inside the address
/// space; their page runs inside them; copies from processes of the tree.
fn memory(mm: &[(i32, MemoryImage)], live: &HashMap<i32, HashSet<i32>>) -> Result<()> {
    let mut seen = HashSet::new();
    for (pid, m) in mm {
        let pid = *pid;
        if !live.contains_key(&pid) || !seen.insert(pid) {
            return Err(Error::Process {
                section: "mm",
                pid,
                what: "memory for a process that is not live in the tree, or twice",
            });
        }
        let mut prev_end = 0;
        for v in &m.vmas {
            let err = |what| Error::Mapping {
                pid,
                start: v.start,
                end: v.end,
                what,
            };
            if v.start >= v.end || v.start % PAGE != 0 || v.end % PAGE != 0 || v.end > TASK_SIZE_MAX {
                return Err(err("not a page-aligned range of the address space"));
            }
            if v.start < prev_end {
                return Err(err("out of order or overlapping the one before"));
            }
            prev_end = v.end;
            let len = v.end - v.start;
            if v.offset % PAGE != 0 || v.offset.checked_add(len).is_none() {
                return Err(err("a file offset out of range"));
            }
            // Runs are addresses in the mapping; for shared memory, offsets
            // in its object.
            let (lo, hi) = match v.backing {
                Backing::Shmem { .. } => (v.offset, v.offset + len),
                _ => (v.start, v.end),
            };
            for r in &v.runs {
                let bytes = u64::from(r.pages) * PAGE;
                match r.addr.checked_add(bytes) {
                    Some(end) if r.pages > 0 && r.addr % PAGE == 0 && r.addr >= lo && end <= hi => {}
                    _ => return Err(err("a page run outside the mapping")),
                }
                if let Some((from, at)) = r.from {
                    let inside = at % PAGE == 0 && at.checked_add(bytes).is_some_and(|e| e <= TASK_SIZE_MAX);
                    if !live.contains_key(&from) || !inside {
                        return Err(err(
                            "pages copied from a process that is not in the tree, or from outside it",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// fd tables: numbers in range and unique, every object they name present.
fn fds(files: &FilesImage, live: &HashMap<i32, HashSet<i32>>) -> Result<()> {
    let mut seen_procs = HashSet::new();
    for (pid, table) in &files.procs {
        let pid = *pid;
        if !live.contains_key(&pid) || !seen_procs.insert(pid) {
            return Err(Error::Process {
                section: "files",
                pid,
                what: "an fd table for a process that is not live in the tree, or twice",
            });
        }
        let mut numbers = HashSet::new();
        for f in table {
            let err = |what| Error::Fd { pid, fd: f.fd, what };
            if !(0..FD_MAX).contains(&f.fd) || !numbers.insert(f.fd) {
                return Err(err("an fd number out of range or listed twice"));
            }
            let (index, count) = match &f.kind {
                FdKind::File { file } => (*file, files.files.len()),
                FdKind::Pipe { pipe, .. } => (*pipe, files.pipes.len()),
                FdKind::Socket { sock } => (*sock, files.sockets.len()),
                FdKind::Inet { sock } => (*sock, files.inet.len()),
                FdKind::Tcp { conn } => (*conn, files.tcp.len()),
                FdKind::Anon { obj } => (*obj, files.anon.len()),
                FdKind::Log | FdKind::Epoll { .. } => continue,
            };
            if index as usize >= count {
                return Err(err("it names an object the image does not hold"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::memory::{MmFields, PageRun, Vma};
    use crate::kinds::regs::ThreadImage;

    fn thread(tid: i32) -> ThreadImage {
        ThreadImage {
            tid,
            regs: vec![0; REGS_WORDS],
            xstate: Vec::new(),
            sigmask: 0,
            rseq: None,
            robust_head: 0,
            robust_len: 0,
            clear_tid: 0,
            comm: String::new(),
        }
    }

    fn process(pid: i32, ppid: i32) -> ProcessImage {
        ProcessImage {
            pid,
            ppid,
            pgid: 1,
            sid: 1,
            host_pid: 100 + pid,
            comm: "p".into(),
            zombie: None,
            threads: vec![thread(pid)],
            cwd: "/".into(),
            umask: 0o22,
            rlimits: Vec::new(),
            creds: Some(crate::kinds::creds::parse_status("").0),
            timers: Some(Default::default()),
        }
    }

    fn vma(start: u64, end: u64, runs: Vec<PageRun>) -> Vma {
        Vma {
            start,
            end,
            prot: 3,
            shared: false,
            offset: 0,
            backing: Backing::Anon,
            flags: Vec::new(),
            runs,
        }
    }

    fn run(addr: u64, pages: u32) -> PageRun {
        PageRun {
            addr,
            pages,
            zero: false,
            from: None,
            precopied: false,
        }
    }

    fn mm(vmas: Vec<Vma>) -> MemoryImage {
        MemoryImage {
            vmas,
            mm: MmFields {
                start_code: 0,
                end_code: 0,
                start_data: 0,
                end_data: 0,
                start_brk: 0,
                brk: 0,
                start_stack: 0,
                arg_start: 0,
                arg_end: 0,
                env_start: 0,
                env_end: 0,
                auxv: Vec::new(),
                exe: String::new(),
            },
        }
    }

    fn check(procs: &[ProcessImage], m: Vec<Vma>) -> Result<()> {
        image(procs, &[(1, mm(m))], &[], &FilesImage::default())
    }

    #[test]
    fn a_sound_image_passes() {
        let procs = [process(1, 0), process(2, 1)];
        let v = vec![vma(0x1000, 0x4000, vec![run(0x1000, 2)]), vma(0x4000, 0x5000, vec![])];
        check(&procs, v).unwrap();
    }

    #[test]
    fn impossible_trees_are_refused() {
        assert!(check(&[], vec![]).is_err());
        assert!(check(&[process(2, 0)], vec![]).is_err(), "no PID 1");
        assert!(check(&[process(1, 0), process(3, 2)], vec![]).is_err(), "orphan");
        assert!(check(&[process(1, 0), process(1, 1)], vec![]).is_err(), "twice");
        let mut p = process(1, 0);
        p.threads[0].regs.pop();
        assert!(check(&[p], vec![]).is_err(), "short registers");
        let mut p = process(1, 0);
        p.threads.push(thread(1));
        assert!(check(&[p], vec![]).is_err(), "a TID twice");
    }

    #[test]
    fn impossible_mappings_are_refused() {
        let procs = [process(1, 0)];
        for (what, v) in [
            ("reversed", vec![vma(0x4000, 0x1000, vec![])]),
            ("unaligned", vec![vma(0x1001, 0x4000, vec![])]),
            ("past the address space", vec![vma(0x1000, !0xfff, vec![])]),
            (
                "overlapping",
                vec![vma(0x1000, 0x4000, vec![]), vma(0x3000, 0x5000, vec![])],
            ),
            ("run outside", vec![vma(0x1000, 0x2000, vec![run(0x1000, 2)])]),
            ("run wraps", vec![vma(0x1000, 0x2000, vec![run(!0xfff, u32::MAX)])]),
        ] {
            assert!(check(&procs, v).is_err(), "{what}");
        }
    }

    #[test]
    fn fds_naming_missing_objects_are_refused() {
        use crate::kinds::files::FdImage;
        let procs = [process(1, 0)];
        let mut files = FilesImage::default();
        files.procs.push((
            1,
            vec![FdImage {
                fd: 3,
                flags: 0,
                kind: FdKind::Pipe { pipe: 0, write: false },
            }],
        ));
        assert!(image(&procs, &[], &[], &files).is_err());
        files.procs[0].1[0].kind = FdKind::Log;
        image(&procs, &[], &[], &files).unwrap();
        files.procs[0].1[0].fd = -1;
        assert!(image(&procs, &[], &[], &files).is_err());
    }
}
