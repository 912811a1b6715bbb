//! The container's IPC namespace: its limits, SysV message queues,
//! semaphore sets and shared memory segments, and POSIX message queues.
//!
//! The limits (kernel.msgmax, sem, shmmax..., fs.mqueue.*: each IPC
//! namespace has its own, and a new one starts at the defaults) are
//! carried in section `ipcns` (from format 4; an image without it restores
//! with the defaults), written by the container's PID 1 in its new
//! namespace before anything else runs there.
//!
//! The SysV objects are carried in the same section (layout 5): message
//! queues with their messages (read with `MSG_COPY`, which leaves them
//! queued), semaphore sets with their values, shared memory segments with
//! the pages they hold (attached read-only by the reader; pages not in
//! memory are holes), each with its id, key, owner, creator and mode. The
//! restored PID 1 makes each again under its old id (`*_next_id`) as its
//! creator, before the limits are written; a segment's attachments are made
//! by the rebuild of each process (`shmat` at the old address), and a
//! segment removed while attached (`IPC_RMID`, mode `SHM_DEST`) is removed
//! again once they are. What the kernel shows of them and cannot be set
//! (the last sender's or attacher's PID, the times) comes back as the
//! restore made it.
//!
//! POSIX message queues are not carried yet (issue 17): the checkpoint
//! refuses one before anything stops.
//!
//! The namespace is read by a short-lived thread that enters it (setns
//! works per thread for IPC): /proc/sysvipc/* and the IPC sysctls show the
//! reader's own namespace, and a mqueue file system opened there (fsopen,
//! fsmount: a detached mount, nothing is mounted anywhere) is that
//! namespace's.

use crate::sys::sysvipc;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read its IPC namespace: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("IPC limit {name}: {why}")]
    BadLimit { name: String, why: &'static str },
    #[error("the container's IPC namespace holds {0}, which migrate does not carry yet; a restore would come back without it (remove it, or keep the state elsewhere)")]
    Uncarried(String),
    #[error("process {pid}: mapping {start:#x}-{end:#x} of SysV shared memory segment {id} {why}, which migrate does not carry")]
    Attachment {
        pid: i32,
        start: u64,
        end: u64,
        id: i32,
        why: &'static str,
    },
    #[error("SysV shared memory segment {id} holds {bytes} bytes, over the cap of {cap} (--file-cap)")]
    TooBig { id: i32, bytes: u64, cap: u64 },
    #[error("IPC object {id} in the image {why}; the image is damaged")]
    BadObject { id: i32, why: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The IPC namespace's limits under /proc/sys, in the order they are
/// written back (a queue's maximum before its default).
const LIMITS: [&str; 16] = [
    "kernel/msgmax",
    "kernel/msgmnb",
    "kernel/msgmni",
    "kernel/sem",
    "kernel/shmall",
    "kernel/shmmax",
    "kernel/shmmni",
    "kernel/shm_rmid_forced",
    "kernel/msg_next_id",
    "kernel/sem_next_id",
    "kernel/shm_next_id",
    "fs/mqueue/queues_max",
    "fs/mqueue/msg_max",
    "fs/mqueue/msgsize_max",
    "fs/mqueue/msg_default",
    "fs/mqueue/msgsize_default",
];

/// What section `ipcns` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcImage {
    /// Each limit of [`LIMITS`] this kernel has, with its value as
    /// /proc/sys shows it ("250\t32000\t32\t128" for sem).
    pub limits: Vec<(String, String)>,
    /// The SysV objects (layout 5).
    pub objects: Vec<IpcObject>,
}

/// Layout 4: the limits only.
#[derive(Deserialize)]
struct IpcImageV4 {
    limits: Vec<(String, String)>,
}

/// What every SysV object has: its id and key, owner, creator and mode
/// (for a segment with `SHM_DEST` and `SHM_LOCKED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcOwner {
    pub key: i32,
    pub id: i32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
}

/// A SysV object and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpcObject {
    /// A message queue: its capacity and its messages (type, text), oldest
    /// first.
    Queue {
        owner: IpcOwner,
        qbytes: u64,
        messages: Vec<(i64, Vec<u8>)>,
    },
    /// A semaphore set: each semaphore's value.
    Semaphores { owner: IpcOwner, values: Vec<u16> },
    /// A shared memory segment: its size and its pages that hold data
    /// (offset, bytes: whole pages, in order); the rest reads as zeros.
    Segment {
        owner: IpcOwner,
        size: u64,
        pages: Vec<(u64, Vec<u8>)>,
    },
}

impl IpcObject {
    pub fn owner(&self) -> &IpcOwner {
        match self {
            IpcObject::Queue { owner, .. } | IpcObject::Semaphores { owner, .. } | IpcObject::Segment { owner, .. } => {
                owner
            }
        }
    }

    /// Which listing (and `*_next_id`) it belongs to.
    fn file(&self) -> &'static str {
        match self {
            IpcObject::Queue { .. } => "msg",
            IpcObject::Semaphores { .. } => "sem",
            IpcObject::Segment { .. } => "shm",
        }
    }
}

/// Mode bits of a segment: removed while attached, locked in memory.
const SHM_DEST: u32 = 0o1000;
const SHM_LOCKED: u32 = 0o2000;
/// The largest value of a semaphore (SEMVMX) and of a message's text.
const SEM_VALUE_MAX: u16 = 32767;
const MESSAGE_MAX: usize = 1 << 24;
const PAGE: u64 = 4096;

/// The section `ipcns` (from image format 4).
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "ipcns";
    const VERSION: u32 = 5;
    const SINCE_FORMAT: u32 = 4;
    type State = IpcImage;
    type Error = Error;

    fn decode(bytes: &[u8]) -> crate::image::Result<IpcImage> {
        crate::image::decode_versioned(Self::SECTION, bytes, Self::VERSION, |old: IpcImageV4| IpcImage {
            limits: old.limits,
            objects: Vec::new(),
        })
    }

    /// The names are written under /proc/sys: only the known limits, once
    /// each, with numbers for values.
    fn validate(img: &IpcImage) -> Result<()> {
        for (i, (name, value)) in img.limits.iter().enumerate() {
            let bad = |why| Error::BadLimit {
                name: name.clone(),
                why,
            };
            if !LIMITS.contains(&name.as_str()) {
                return Err(bad("not a limit of the IPC namespace"));
            }
            if img.limits[..i].iter().any(|(n, _)| n == name) {
                return Err(bad("named twice"));
            }
            let numbers = value.split_whitespace().all(|n| n.parse::<i128>().is_ok());
            if value.len() > 64 || value.trim().is_empty() || !numbers {
                return Err(bad("not a list of numbers"));
            }
        }
        for (i, o) in img.objects.iter().enumerate() {
            check_object(o, &img.objects[..i])?;
        }
        Ok(())
    }
}

/// Refuses an object a restore could not make as it was: a duplicate id,
/// a mode that is no mode, a message or value the kernel would refuse,
/// pages outside the segment.
fn check_object(o: &IpcObject, before: &[IpcObject]) -> Result<()> {
    let w = o.owner();
    let bad = |why| Error::BadObject { id: w.id, why };
    if w.id < 0 || before.iter().any(|b| b.file() == o.file() && b.owner().id == w.id) {
        return Err(bad("has a negative or repeated id"));
    }
    let flags = if o.file() == "shm" { SHM_DEST | SHM_LOCKED } else { 0 };
    if w.mode & !(0o777 | flags) != 0 {
        return Err(bad("has a mode with unknown bits"));
    }
    match o {
        IpcObject::Queue { messages, .. } => {
            if messages.iter().any(|(t, m)| *t <= 0 || m.len() > MESSAGE_MAX) {
                return Err(bad("holds a message of no type, or too long"));
            }
        }
        IpcObject::Semaphores { values, .. } => {
            if values.is_empty() || values.len() > 32000 || values.iter().any(|v| *v > SEM_VALUE_MAX) {
                return Err(bad("holds no semaphore, too many, or a value over 32767"));
            }
        }
        IpcObject::Segment { size, pages, .. } => {
            let mut next = 0;
            for (at, bytes) in pages {
                let fits = at
                    .checked_add(bytes.len() as u64)
                    .is_some_and(|e| e <= size.next_multiple_of(PAGE));
                if *at < next || at % PAGE != 0 || bytes.is_empty() || bytes.len() as u64 % PAGE != 0 || !fits {
                    return Err(bad("holds pages out of order or outside it"));
                }
                next = at + bytes.len() as u64;
            }
            if *size == 0 || *size > 1 << 46 {
                return Err(bad("has no size, or one no kernel allows"));
            }
        }
    }
    Ok(())
}

/// The limits and SysV objects of the IPC namespace of process `pid`, on
/// the stopped tree: nothing may send, signal or write meanwhile. A
/// segment's pages are read through an attachment of the reader's own.
pub fn dump(pid: i32, cap: u64) -> Result<IpcImage> {
    super::in_namespace(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
        let mut limits = Vec::new();
        for name in LIMITS {
            // A kernel without SysV IPC or POSIX queues has no such limit.
            match std::fs::read_to_string(format!("/proc/sys/{name}")) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
                Ok(v) => limits.push((name.to_string(), v.trim().to_string())),
            }
        }
        let mut objects = Vec::new();
        for row in listing("msg")? {
            let owner = row.owner()?;
            let (qnum, cbytes) = (row.num("qnum")? as usize, row.num("cbytes")? as usize);
            let messages = (0..qnum)
                .map(|n| sysvipc::msg_copy(owner.id, n, cbytes.max(1)))
                .collect::<std::result::Result<_, _>>()?;
            let qbytes = sysvipc::msg_qbytes(owner.id)?;
            objects.push(IpcObject::Queue {
                owner,
                qbytes,
                messages,
            });
        }
        for row in listing("sem")? {
            let owner = row.owner()?;
            let values = sysvipc::sem_values(owner.id, row.num("nsems")? as usize)?;
            objects.push(IpcObject::Semaphores { owner, values });
        }
        for row in listing("shm")? {
            let owner = row.owner()?;
            let size = row.num("size")? as u64;
            let pages = segment_pages(owner.id, size, row.num("swap")? > 0)?;
            let bytes = pages.iter().map(|(_, p)| p.len() as u64).sum();
            if bytes > cap {
                return Err(std::io::Error::other(Error::TooBig {
                    id: owner.id,
                    bytes,
                    cap,
                }));
            }
            objects.push(IpcObject::Segment { owner, size, pages });
        }
        // POSIX message queues were refused on the stopped tree already
        // (refuse_uncarried), just before.
        Ok(IpcImage { limits, objects })
    })
    .map_err(read_error(pid))
}

/// The error of a reader thread in the IPC namespace of process `pid`: a
/// refusal it made, or a failure to read.
fn read_error(pid: i32) -> impl Fn(std::io::Error) -> Error {
    move |source| match source.downcast::<Error>() {
        Ok(e) => e,
        Err(source) => Error::Read { pid, source },
    }
}

/// The pages of segment `id` that hold data, in runs: those in memory
/// (all of them if some are swapped out), less those all zeros.
fn segment_pages(id: i32, size: u64, swapped: bool) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    let seg = sysvipc::Attached::new(id, size, true)?;
    let end = seg.addr() + size.next_multiple_of(PAGE);
    let fs = nix::sys::statfs::statfs(format!("/proc/self/map_files/{:x}-{end:x}", seg.addr()).as_str())?;
    if fs.filesystem_type().0 as i64 == HUGETLBFS_MAGIC {
        return Err(std::io::Error::other(Error::Uncarried(format!(
            "a SysV shared memory segment of huge pages (id {id}, SHM_HUGETLB)"
        ))));
    }
    let resident = seg.resident()?;
    let bytes = seg.bytes();
    let mut pages: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, page) in bytes.chunks(PAGE as usize).enumerate() {
        let at = i as u64 * PAGE;
        if !(swapped || resident[i]) || page.iter().all(|b| *b == 0) {
            continue;
        }
        match pages.last_mut() {
            Some((start, run)) if *start + run.len() as u64 == at => run.extend_from_slice(page),
            _ => pages.push((at, page.to_vec())),
        }
    }
    // The last page's tail past the size reads as zeros: pad to a page.
    if let Some((_, run)) = pages.last_mut() {
        run.resize(run.len().next_multiple_of(PAGE as usize), 0);
    }
    Ok(pages)
}

/// One row of /proc/sysvipc/{msg,sem,shm}, by column name.
struct Row(Vec<(String, String)>);

impl Row {
    fn num(&self, name: &str) -> std::io::Result<i128> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no number {name} in /proc/sysvipc"),
            )
        };
        let (_, v) = self.0.iter().find(|(n, _)| n == name).ok_or_else(bad)?;
        v.parse().map_err(|_| bad())
    }

    /// Key, id (the second column: msqid, semid or shmid), mode (octal),
    /// owner and creator.
    fn owner(&self) -> std::io::Result<IpcOwner> {
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "a short line in /proc/sysvipc");
        let id = self.0.get(1).ok_or_else(bad)?.1.parse().map_err(|_| bad())?;
        let mode = u32::from_str_radix(&self.0.get(2).ok_or_else(bad)?.1, 8).map_err(|_| bad())?;
        let u = |n| self.num(n).map(|v| v as u32);
        Ok(IpcOwner {
            key: self.num("key")? as i32,
            id,
            mode,
            uid: u("uid")?,
            gid: u("gid")?,
            cuid: u("cuid")?,
            cgid: u("cgid")?,
        })
    }
}

/// The rows of /proc/sysvipc/{file} of the calling thread's IPC namespace
/// (none on a kernel without SysV IPC).
fn listing(file: &str) -> std::io::Result<Vec<Row>> {
    let text = match std::fs::read_to_string(format!("/proc/sysvipc/{file}")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            Row(names
                .iter()
                .zip(l.split_whitespace())
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect())
        })
        .collect())
}

/// Makes the limits and SysV objects again in the calling process's (new)
/// IPC namespace: the objects first, each under its old id, as its creator
/// (limits a program lowered after making one would refuse it: a queue's
/// capacity and message size are raised while they are made), then the
/// limits that differ from a new namespace's, and last the next ids (a
/// next id of -1, "none chosen", cannot be written, only be left as it is).
/// A segment removed while attached is removed by [`remove_destroyed`],
/// once its attachments are made.
pub fn restore(img: &IpcImage) -> std::result::Result<(), String> {
    let write = |name: &str, value: &str| {
        let path = format!("/proc/sys/{name}");
        let now = std::fs::read_to_string(&path).map_err(|e| format!("read IPC limit {name}: {e}"))?;
        if now.split_whitespace().ne(value.split_whitespace()) {
            std::fs::write(&path, value).map_err(|e| format!("set IPC limit {name} to {value}: {e}"))?;
        }
        Ok::<(), String>(())
    };
    let queues = img.objects.iter().filter_map(|o| match o {
        IpcObject::Queue { qbytes, messages, .. } => Some((*qbytes, messages)),
        _ => None,
    });
    let (mut qbytes, mut longest) = (0u64, 0usize);
    for (q, messages) in queues {
        qbytes = qbytes.max(q).max(messages.iter().map(|(_, m)| m.len() as u64).sum());
        longest = longest.max(messages.iter().map(|(_, m)| m.len()).max().unwrap_or(0));
    }
    let raise = |name: &str, at_least: u64| {
        let now: u64 = std::fs::read_to_string(format!("/proc/sys/{name}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if now < at_least {
            write(name, &at_least.min(i32::MAX as u64).to_string())?;
        }
        Ok::<(), String>(())
    };
    if !img.objects.is_empty() {
        raise("kernel/msgmnb", qbytes)?;
        raise("kernel/msgmax", longest as u64)?;
    }
    for o in &img.objects {
        make_object(o).map_err(|e| format!("make {} {} again: {e}", o.file(), o.owner().id))?;
    }
    for (name, value) in img.limits.iter().filter(|(n, _)| !n.ends_with("_next_id")) {
        write(name, value)?;
    }
    for (name, value) in img.limits.iter().filter(|(n, _)| n.ends_with("_next_id")) {
        write(name, value)?;
    }
    Ok(())
}

/// Makes one SysV object under its id, as its creator, fills it, and gives
/// it its owner and mode.
fn make_object(o: &IpcObject) -> std::io::Result<()> {
    use nix::unistd::{setegid, seteuid, Gid, Uid};
    let w = o.owner();
    std::fs::write(format!("/proc/sys/kernel/{}_next_id", o.file()), w.id.to_string())?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
    // A segment removed while attached lost its key.
    let key = if w.mode & SHM_DEST != 0 {
        libc::IPC_PRIVATE
    } else {
        w.key
    };
    setegid(Gid::from_raw(w.cgid))?;
    seteuid(Uid::from_raw(w.cuid))?;
    let made = match o {
        IpcObject::Queue { .. } => sysvipc::msg_get(key, flags),
        IpcObject::Semaphores { values, .. } => sysvipc::sem_get(key, values.len() as i32, flags),
        IpcObject::Segment { size, .. } => sysvipc::shm_get(key, *size, flags),
    };
    seteuid(Uid::from_raw(0))?;
    setegid(Gid::from_raw(0))?;
    let id = made?;
    if id != w.id {
        return Err(std::io::Error::other(format!("made as {id}")));
    }
    let perm = sysvipc::Perm {
        uid: w.uid,
        gid: w.gid,
        mode: w.mode & 0o777,
    };
    match o {
        IpcObject::Queue { qbytes, messages, .. } => {
            let room = messages.iter().map(|(_, m)| m.len() as u64).sum::<u64>().max(*qbytes);
            sysvipc::msg_set(id, perm, room)?;
            for (kind, text) in messages {
                sysvipc::msg_send(id, *kind, text)?;
            }
            sysvipc::msg_set(id, perm, *qbytes)?;
        }
        IpcObject::Semaphores { values, .. } => {
            sysvipc::sem_set_values(id, values)?;
            sysvipc::sem_set(id, perm)?;
        }
        IpcObject::Segment { size, pages, .. } => {
            if !pages.is_empty() {
                let mut seg = sysvipc::Attached::new(id, *size, false)?;
                let mem = seg.bytes_mut();
                for (at, bytes) in pages {
                    let at = *at as usize;
                    let n = bytes.len().min(mem.len() - at);
                    mem[at..at + n].copy_from_slice(&bytes[..n]);
                }
            }
            if w.mode & SHM_LOCKED != 0 {
                sysvipc::shm_ctl(id, libc::SHM_LOCK)?;
            }
            sysvipc::shm_set(id, perm)?;
        }
    }
    Ok(())
}

/// Removes again, in the IPC namespace of process `pid`, the segments
/// that were removed while attached (once the restored processes have
/// attached them).
pub fn remove_destroyed(pid: i32, img: &IpcImage) -> Result<()> {
    let ids: Vec<i32> = img
        .objects
        .iter()
        .filter(|o| matches!(o, IpcObject::Segment { .. }) && o.owner().mode & SHM_DEST != 0)
        .map(|o| o.owner().id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    super::in_namespace(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
        ids.iter().try_for_each(|id| Ok(sysvipc::shm_ctl(*id, libc::IPC_RMID)?))
    })
    .map_err(|source| Error::Read { pid, source })
}

/// Whether the SysV attachments among `vmas` (see
/// [`super::memory::sysv_attachments`]) each cover a segment of `objects`
/// whole.
pub fn attachments_fit(objects: &[IpcObject], vmas: &[super::memory::Vma]) -> bool {
    let sizes = segment_sizes(objects.iter().filter_map(|o| match o {
        IpcObject::Segment { owner, size, .. } => Some((owner.id, *size)),
        _ => None,
    }));
    super::memory::sysv_attachments(vmas.iter().filter_map(super::memory::Vma::sysv_piece))
        .is_ok_and(|all| all.iter().all(|(id, _, _, len)| sizes.get(id) == Some(len)))
}

/// Segment sizes by id, rounded up to whole pages (what an attachment
/// maps).
fn segment_sizes(segments: impl Iterator<Item = (i32, u64)>) -> std::collections::HashMap<i32, u64> {
    segments.map(|(id, size)| (id, size.next_multiple_of(PAGE))).collect()
}

/// Refuses, while the container runs, what a checkpoint would not carry
/// of its IPC namespace: a POSIX message queue, a segment holding more
/// than `cap` bytes, a segment some process (of `procs`, host PIDs) has
/// attached only in part.
pub fn refuse_uncarried(pid: i32, procs: &[(i32, i32, Vec<i32>)], cap: u64) -> Result<()> {
    let segments = super::in_namespace(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
        if let Some(q) = posix_queues()?.into_iter().next() {
            return Err(std::io::Error::other(Error::Uncarried(q)));
        }
        let mut sizes = Vec::new();
        for row in listing("shm")? {
            let id = row.owner()?.id;
            let bytes = (row.num("rss")? + row.num("swap")?) as u64;
            if bytes > cap {
                return Err(std::io::Error::other(Error::TooBig { id, bytes, cap }));
            }
            sizes.push((id, row.num("size")? as u64));
        }
        Ok(segment_sizes(sizes.into_iter()))
    })
    .map_err(read_error(pid))?;
    if segments.is_empty() {
        return Ok(());
    }
    for &(p, _, _) in procs {
        let maps = match super::memory::mappings_fast(p) {
            Ok(m) => m,
            Err(_) if !crate::proc::running(p) => continue,
            Err(e) => {
                return Err(Error::Read {
                    pid: p,
                    source: std::io::Error::other(e.to_string()),
                })
            }
        };
        refuse_partial(p, &maps, &segments)?;
    }
    Ok(())
}

/// Refuses an attachment a restore's `shmat` would not make again: one of
/// which a part was unmapped (or moved), one of a segment not in the
/// namespace (`sizes`, by id, in whole pages).
fn refuse_partial(
    pid: i32,
    maps: &[super::memory::MapLine],
    sizes: &std::collections::HashMap<i32, u64>,
) -> Result<()> {
    let pieces = maps
        .iter()
        .filter(|m| m.path.starts_with("/SYSV"))
        // The inode of a segment's file is its id.
        .map(|m| (m.inode as i32, m.start, m.end, m.offset));
    let refuse = |id, start, end, why| Error::Attachment {
        pid,
        start,
        end,
        id,
        why,
    };
    let attachments = super::memory::sysv_attachments(pieces).map_err(|(id, start, end, _)| {
        refuse(
            id,
            start,
            end,
            "is attached only in part (its start was unmapped, or it was moved)",
        )
    })?;
    match attachments
        .into_iter()
        .find(|(id, _, _, len)| sizes.get(id) != Some(len))
    {
        Some((id, start, end, _)) => Err(refuse(
            id,
            start,
            end,
            "is attached only in part (a part was unmapped), or its segment is gone",
        )),
        None => Ok(()),
    }
}

/// The POSIX message queues of the calling thread's IPC namespace.
fn posix_queues() -> std::io::Result<Vec<String>> {
    use rustix::mount::{fsconfig_create, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags};
    // A kernel without POSIX message queues (ENODEV) has none.
    let fs = match fsopen("mqueue", FsOpenFlags::FSOPEN_CLOEXEC) {
        Err(rustix::io::Errno::NODEV) => return Ok(Vec::new()),
        other => other?,
    };
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    // The mount's fd is a path only: open its root to read it.
    use rustix::fs::{openat, Mode, OFlags};
    let root = openat(
        &mnt,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dir = rustix::fs::Dir::read_from(&root)?;
    let mut found = Vec::new();
    for entry in dir {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            found.push(format!("a POSIX message queue (/{name})"));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, offset: u64, id: u64) -> crate::kinds::memory::MapLine {
        let line = format!("{start:x}-{end:x} rw-s {offset:08x} 00:01 {id} /SYSV00000000 (deleted)\n");
        crate::kinds::memory::parse_maps(1, &line).unwrap().remove(0)
    }

    #[test]
    fn attachments_must_cover_their_segment() {
        let sizes = segment_sizes([(5, 3 * 4096 + 100), (6, 4096)].into_iter());
        // Whole, split by mprotect, two attachments of one segment, another.
        let whole = [
            map(0x10000, 0x12000, 0, 5),
            map(0x12000, 0x14000, 0x2000, 5),
            map(0x20000, 0x24000, 0, 5),
            map(0x30000, 0x31000, 0, 6),
        ];
        assert!(refuse_partial(1, &whole, &sizes).is_ok());
        // Its end unmapped, its start unmapped, a segment not there.
        for bad in [
            vec![map(0x10000, 0x12000, 0, 5)],
            vec![map(0x11000, 0x14000, 0x1000, 5)],
            vec![map(0x10000, 0x12000, 0, 5), map(0x13000, 0x15000, 0x2000, 5)],
            vec![map(0x10000, 0x11000, 0, 7)],
        ] {
            assert!(
                matches!(refuse_partial(1, &bad, &sizes), Err(Error::Attachment { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sysvipc_rows_are_read_by_column() {
        let header = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid";
        let names: Vec<&str> = header.split_whitespace().collect();
        let line = "     -1234     32769  1640                 12388   10    11      2  1000   100     0     0";
        let row = Row(names
            .iter()
            .zip(line.split_whitespace())
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect());
        let o = row.owner().unwrap();
        assert_eq!(
            (o.key, o.id, o.mode, o.uid, o.gid, o.cuid),
            (-1234, 32769, 0o1640, 1000, 100, 0)
        );
        assert_eq!(row.num("size").unwrap(), 12388);
        assert!(row.num("swap").is_err());
    }

    #[test]
    fn objects_a_restore_could_not_make_are_refused() {
        use crate::kinds::Kind;
        let owner = |id, mode| IpcOwner {
            key: 1,
            id,
            mode,
            uid: 0,
            gid: 0,
            cuid: 0,
            cgid: 0,
        };
        let seg = |pages: Vec<(u64, Vec<u8>)>| IpcObject::Segment {
            owner: owner(1, 0o1600),
            size: 5000,
            pages,
        };
        let good = IpcImage {
            limits: vec![],
            objects: vec![
                IpcObject::Queue {
                    owner: owner(1, 0o600),
                    qbytes: 10,
                    messages: vec![(3, b"x".to_vec())],
                },
                IpcObject::Semaphores {
                    owner: owner(2, 0o600),
                    values: vec![0, 32767],
                },
                seg(vec![(4096, vec![1; 4096])]),
            ],
        };
        assert!(Section::validate(&good).is_ok());
        for bad in [
            IpcObject::Queue {
                owner: owner(1, 0o600),
                qbytes: 10,
                messages: vec![(0, vec![])],
            },
            IpcObject::Queue {
                owner: owner(9, 0o1600),
                qbytes: 10,
                messages: vec![],
            },
            IpcObject::Semaphores {
                owner: owner(9, 0o600),
                values: vec![32768],
            },
            IpcObject::Semaphores {
                owner: owner(9, 0o600),
                values: vec![],
            },
            IpcObject::Semaphores {
                owner: owner(2, 0o600),
                values: vec![1],
            },
            seg(vec![(8192, vec![1; 4096])]),
            seg(vec![(4096, vec![1; 100])]),
            seg(vec![(4096, vec![1; 4096]), (0, vec![1; 4096])]),
        ] {
            let mut img = good.clone();
            img.objects.retain(|o| o.file() != bad.file());
            if let IpcObject::Semaphores {
                owner: IpcOwner { id: 2, .. },
                ..
            } = bad
            {
                img = good.clone();
            }
            img.objects.push(bad.clone());
            assert!(Section::validate(&img).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_known_limits_with_numbers_are_valid() {
        use crate::kinds::Kind;
        let img = |pairs: &[(&str, &str)]| IpcImage {
            limits: pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            objects: vec![],
        };
        assert!(Section::validate(&img(&[
            ("kernel/msgmax", "8192"),
            ("kernel/sem", "250\t32000\t32\t128")
        ]))
        .is_ok());
        assert!(Section::validate(&img(&[
            ("kernel/msg_next_id", "-1"),
            ("kernel/shmall", "18446744073692774399")
        ]))
        .is_ok());
        for bad in [
            img(&[("kernel/core_pattern", "1")]),
            img(&[("../kernel/msgmax", "1")]),
            img(&[("kernel/msgmax", "1"), ("kernel/msgmax", "2")]),
            img(&[("kernel/msgmax", "|/bin/sh")]),
            img(&[("kernel/msgmax", "")]),
        ] {
            assert!(Section::validate(&bad).is_err(), "{bad:?}");
        }
    }
}
