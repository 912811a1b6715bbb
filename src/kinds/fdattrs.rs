//! What an open file holds besides its contents, flags and position: the
//! locks taken through it (POSIX record locks, OFD locks, flock) and who
//! it signals (the owner of F_SETOWN_EX and the signal of F_SETSIG).
//!
//! Section `fdattrs`, one entry per live process listing only the fds that
//! hold something. An image without it (older formats) restores with no
//! locks and no owners, as those checkpoints refused locks.
//!
//! - Dump: the `lock:` lines of each fd's fdinfo (the kernel lists there
//!   the POSIX locks the process holds through that file, and the OFD and
//!   flock locks of the open file itself); owner and signal by
//!   F_GETOWN_EX / F_GETSIG on a duplicate (both belong to the open file
//!   description). Owners are translated to container PIDs; an owner
//!   outside the container, or a thread other than the main one of
//!   another process, is refused.
//!   Leases are carried (read or write; one being broken is refused), as
//!   are their owner and signal; delegations are refused.
//! - Restore: injected into the restored process, after its memory is
//!   rebuilt (closing any fd of a file drops the process's POSIX locks on
//!   it, and the rebuild opens and closes mapped files) and after its
//!   credentials (F_SETOWN records the setter's credentials): `fcntl`
//!   F_SETLK / F_OFD_SETLK with the same range and type, `flock`,
//!   F_SETLEASE (which makes the caller the file's owner), then
//!   F_SETOWN_EX and F_SETSIG.

use std::collections::HashMap;
use std::os::fd::AsFd;

use serde::{Deserialize, Serialize};

use super::remote::{self, Remote};
use crate::sys::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error(transparent)]
    Files(#[from] crate::kinds::files::Error),
    #[error(transparent)]
    Memory(#[from] crate::kinds::memory::Error),
    #[error("process {pid} (pid {ns_pid} in the container) fd {fd} is a {kind}, which migrate can not checkpoint yet")]
    Unsupported {
        pid: i32,
        ns_pid: i32,
        fd: i32,
        kind: String,
    },
    #[error("process {pid} fd {fd}: {what}: {source}")]
    Dump {
        pid: i32,
        fd: i32,
        what: &'static str,
        #[source]
        source: Errno,
    },
    #[error("task {tid}: fd {fd}: its lease can not be taken again: the file is open elsewhere (for a write lease, open at all; for a read lease, open for writing), by the source of a migration on this host or a process outside the container; checkpoint and restore instead, or migrate to a host that does not share the file")]
    LeaseTaken { tid: i32, fd: i32 },
    #[error("process {pid}: fd {fd} in section fdattrs {reason}; the image is damaged")]
    Damaged { pid: i32, fd: i32, reason: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which kind of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// A POSIX record lock (fcntl F_SETLK), owned by the process.
    Posix,
    /// An open file description lock (F_OFD_SETLK).
    Ofd,
    /// flock(2).
    Flock,
    /// A lease (F_SETLEASE), held by the open file; read or write.
    Lease,
}

/// One lock held through an fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub kind: LockKind,
    pub write: bool,
    /// First byte.
    pub start: u64,
    /// Last byte, or None: to the end of the file, whatever its size.
    pub end: Option<u64>,
}

/// Who an open file signals (F_SETOWN_EX), in the container's PIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// F_OWNER_TID (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
    pub kind: i32,
    pub id: i32,
}

/// What one fd holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdAttrs {
    pub fd: i32,
    pub locks: Vec<Lock>,
    pub owner: Option<Owner>,
    /// F_SETSIG; 0 is SIGIO.
    pub signal: i32,
}

/// The section: per process (container PID), its fds that hold something.
pub type Image = Vec<(i32, Vec<FdAttrs>)>;

/// The section `fdattrs` (from image format 4). Checked against the
/// `files` section ([`check`]), since it names their fds.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "fdattrs";
    const VERSION: u32 = 4;
    const SINCE_FORMAT: u32 = 4;
    type State = Image;
    type Error = Error;
}

const F_OWNER_TID: i32 = 0;
const F_OWNER_PGRP: i32 = 2;

/// The lock an fdinfo `lock:` line describes ("1: POSIX  ADVISORY  WRITE
/// 1234 00:2a:1234 0 EOF"); None for a request still waiting ("1: ->
/// ..."), which the interrupted syscall makes again; Err naming a lease
/// being broken, a delegation or anything else migrate does not carry.
fn parse_lock(line: &str) -> std::result::Result<Option<Lock>, String> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.get(1) == Some(&"->") {
        return Ok(None);
    }
    let what = || t.iter().skip(1).take(3).copied().collect::<Vec<_>>().join(" ");
    let kind = match t.get(1).copied() {
        Some("POSIX") => LockKind::Posix,
        Some("OFDLCK") => LockKind::Ofd,
        Some("FLOCK") => LockKind::Flock,
        // A lease being broken has a process waiting for it to go (its
        // open blocks), and a deadline: neither is carried.
        Some("LEASE") if t.get(2) == Some(&"ACTIVE") => LockKind::Lease,
        Some("LEASE") => return Err(format!("file with a lease being broken ({})", what())),
        _ => {
            return Err(format!(
                "file with a delegation or lock migrate does not know on it ({})",
                what()
            ))
        }
    };
    let write = match t.get(3).copied() {
        Some("WRITE") => true,
        Some("READ") => false,
        _ => return Err(format!("file with a lock migrate does not know ({})", what())),
    };
    let start = t.get(6).and_then(|s| s.parse().ok());
    let end = match t.get(7).copied() {
        Some("EOF") => Some(None),
        Some(n) => n.parse().ok().map(Some),
        None => None,
    };
    match (start, end) {
        (Some(start), Some(end)) => Ok(Some(Lock {
            kind,
            write,
            start,
            end,
        })),
        _ => Err(format!("file with a lock migrate can not read ({})", line.trim())),
    }
}

/// The locks an fd's fdinfo lists, or the name of one that is not carried.
pub fn locks_of(info: &str) -> std::result::Result<Vec<Lock>, String> {
    let mut out = Vec::new();
    for line in info.lines().filter_map(|l| l.strip_prefix("lock:")) {
        if let Some(l) = parse_lock(line)? {
            out.push(l);
        }
    }
    Ok(out)
}

/// Reads the locks and owners of the fds of `procs` (host PID, container
/// PID, host TIDs). `ns_tid(host_pid, host_tid)` is a thread's TID in the
/// container. Works on a running tree too (the refusals before a freeze,
/// `running_tree`), where a process that ended meanwhile is passed over.
pub fn dump(procs: &[(i32, i32, Vec<i32>)], ns_tid: &dyn Fn(i32, i32) -> i32, running_tree: bool) -> Result<Image> {
    let ns_of: HashMap<i32, i32> = procs.iter().map(|(h, n, _)| (*h, *n)).collect();
    let mut image = Vec::new();
    for (pid, ns_pid, tids) in procs {
        match dump_process(*pid, *ns_pid, tids, &ns_of, ns_tid) {
            Ok(attrs) if attrs.is_empty() => {}
            Ok(attrs) => image.push((*ns_pid, attrs)),
            Err(_) if running_tree && !crate::proc::running(*pid) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(image)
}

/// The locks and owners of the fds of one process.
fn dump_process(
    pid: i32,
    ns_pid: i32,
    tids: &[i32],
    ns_of: &HashMap<i32, i32>,
    ns_tid: &dyn Fn(i32, i32) -> i32,
) -> Result<Vec<FdAttrs>> {
    let err = |fd, what| move |source| Error::Dump { pid, fd, what, source };
    let pidfd = crate::sys::pidfd_open(nix::unistd::Pid::from_raw(pid)).map_err(err(-1, "pidfd_open"))?;
    let mut attrs = Vec::new();
    for fd in crate::kinds::files::list_fds(pid)? {
        let unsupported = |kind: String| Error::Unsupported { pid, ns_pid, fd, kind };
        // An fd closed meanwhile (a running tree) holds nothing.
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let locks = locks_of(&info).map_err(unsupported)?;
        let dup = match crate::sys::pidfd_getfd(pidfd.as_fd(), fd) {
            Ok(d) => d,
            Err(Errno::EBADF) => continue,
            Err(e) => return Err(err(fd, "pidfd_getfd")(e)),
        };
        // An O_PATH fd has neither (fcntl says EBADF).
        let (kind, host_id) = match crate::sys::file_owner(dup.as_fd()) {
            Err(Errno::EBADF) => (0, 0),
            other => other.map_err(err(fd, "F_GETOWN_EX"))?,
        };
        let signal = match crate::sys::file_signal(dup.as_fd()) {
            Err(Errno::EBADF) => 0,
            other => other.map_err(err(fd, "F_GETSIG"))?,
        };
        let owner = match host_id {
            0 => None,
            _ => {
                let id = match kind {
                    // A thread of this process, or the main thread of
                    // any (the owner belongs to the open file, which
                    // a child inherits). Another process's other
                    // threads are not carried: they may not exist yet
                    // when this process is restored.
                    F_OWNER_TID if tids.contains(&host_id) => Some(ns_tid(pid, host_id)),
                    _ => ns_of.get(&host_id).copied(),
                };
                let Some(id) = id else {
                    let what = match kind {
                        F_OWNER_TID => "thread",
                        F_OWNER_PGRP => "process group",
                        _ => "process",
                    };
                    return Err(unsupported(format!(
                        "file that signals {what} {host_id} (F_SETOWN), which is outside the container or a thread of another process"
                    )));
                };
                Some(Owner { kind, id })
            }
        };
        if !locks.is_empty() || owner.is_some() || signal != 0 {
            attrs.push(FdAttrs {
                fd,
                locks,
                owner,
                signal,
            });
        }
    }
    Ok(attrs)
}

/// Checks the section before anything is made: every fd is one the
/// process has in the files section (`fds_of(pid)`), ranges are ordered,
/// owners and signals in range.
pub fn check(image: &Image, fds_of: &dyn Fn(i32) -> Option<Vec<i32>>) -> Result<()> {
    for (pid, attrs) in image {
        let pid = *pid;
        let fds = fds_of(pid).ok_or(Error::Damaged {
            pid,
            fd: -1,
            reason: "is of a process not in the tree",
        })?;
        for a in attrs {
            let bad = |reason| Error::Damaged { pid, fd: a.fd, reason };
            if !fds.contains(&a.fd) {
                return Err(bad("is not an fd of the process"));
            }
            if a.locks
                .iter()
                .any(|l| l.end.is_some_and(|e| e < l.start) || l.start > i64::MAX as u64)
            {
                return Err(bad("has a lock with a bad range"));
            }
            if a.owner.is_some_and(|o| !(0..=2).contains(&o.kind) || o.id <= 0) {
                return Err(bad("has a bad owner"));
            }
            if !(0..=64).contains(&a.signal) {
                return Err(bad("has a bad signal"));
            }
        }
    }
    Ok(())
}

/// struct flock (x86_64): l_type, l_whence, l_start, l_len, l_pid.
fn flock_bytes(l: &Lock) -> [u8; 32] {
    let mut b = [0u8; 32];
    let kind: i16 = if l.write {
        libc::F_WRLCK as i16
    } else {
        libc::F_RDLCK as i16
    };
    b[0..2].copy_from_slice(&kind.to_le_bytes());
    b[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_le_bytes());
    b[8..16].copy_from_slice(&(l.start as i64).to_le_bytes());
    let len = l.end.map(|e| (e - l.start + 1) as i64).unwrap_or(0);
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b
}

/// An injected fcntl on fd `fd` of the task behind `remote`.
fn fcntl(remote: &Remote, what: &str, fd: i32, cmd: u64, arg: u64) -> Result<()> {
    remote
        .call(
            &format!("fcntl(fd {fd}, {what})"),
            libc::SYS_fcntl,
            &[fd as u64, cmd, arg],
        )
        .map(|_| ())?;
    Ok(())
}

/// Takes lock `l` through fd `fd` of the task behind `remote`.
fn take(remote: &Remote, fd: i32, l: &Lock) -> Result<()> {
    match l.kind {
        LockKind::Posix | LockKind::Ofd => {
            remote.write(remote.scratch, &flock_bytes(l))?;
            let (what, cmd) = match l.kind {
                LockKind::Posix => ("F_SETLK", libc::F_SETLK),
                _ => ("F_OFD_SETLK", libc::F_OFD_SETLK),
            };
            fcntl(remote, what, fd, cmd as u64, remote.scratch)
        }
        LockKind::Flock => {
            let op = if l.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
            remote.call(&format!("flock(fd {fd})"), libc::SYS_flock, &[fd as u64, op as u64])?;
            Ok(())
        }
        LockKind::Lease => {
            let kind = if l.write { libc::F_WRLCK } else { libc::F_RDLCK };
            match fcntl(remote, "F_SETLEASE", fd, libc::F_SETLEASE as u64, kind as u64) {
                Err(Error::Remote(remote::Error::Sys {
                    source: Errno::EAGAIN, ..
                })) => Err(Error::LeaseTaken { tid: remote.tid, fd }),
                other => other,
            }
        }
    }
}

/// Locks a live migration's source let go of once its image is sealed, so
/// that the destination (this host, or one sharing the files) can take
/// them while the source still waits for the commit; taken back if the
/// container runs here again. Per process: host PID and its fds' attrs.
#[derive(Default)]
pub struct Released(Vec<(i32, Vec<FdAttrs>)>);

impl Released {
    /// Lets go of the locks of the stopped process behind `remote`.
    pub fn release(&mut self, remote: &Remote, attrs: &[FdAttrs]) -> Result<()> {
        let held: Vec<FdAttrs> = attrs.iter().filter(|a| !a.locks.is_empty()).cloned().collect();
        if held.is_empty() {
            return Ok(());
        }
        // Recorded first: what was let go of before a failure is taken back.
        self.0.push((remote.pid, held.clone()));
        for a in &held {
            for l in &a.locks {
                let mut b = flock_bytes(l);
                b[0..2].copy_from_slice(&(libc::F_UNLCK as i16).to_le_bytes());
                match l.kind {
                    LockKind::Posix | LockKind::Ofd => {
                        remote.write(remote.scratch, &b)?;
                        let cmd = if l.kind == LockKind::Posix {
                            libc::F_SETLK
                        } else {
                            libc::F_OFD_SETLK
                        };
                        fcntl(remote, "unlock", a.fd, cmd as u64, remote.scratch)?;
                    }
                    LockKind::Flock => {
                        remote.call("flock(LOCK_UN)", libc::SYS_flock, &[a.fd as u64, libc::LOCK_UN as u64])?;
                    }
                    // Else the destination's open of the file would wait
                    // for the frozen source to give it up. A lease is the
                    // open file's: let go of already (EAGAIN) through a
                    // process sharing it.
                    LockKind::Lease => {
                        let unlock = libc::F_UNLCK as u64;
                        match fcntl(remote, "F_SETLEASE F_UNLCK", a.fd, libc::F_SETLEASE as u64, unlock) {
                            Err(Error::Remote(remote::Error::Sys {
                                source: Errno::EAGAIN, ..
                            })) => {}
                            other => other?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes every released lock back, in the still stopped processes.
    pub fn retake(&mut self) -> Result<()> {
        for (pid, attrs) in std::mem::take(&mut self.0) {
            let maps = super::memory::mappings(pid)?;
            let mut remote = Remote::new(pid, pid, super::memory::syscall_ip(pid, &maps)?)?;
            remote.map_scratch(None)?;
            for a in &attrs {
                for l in &a.locks {
                    take(&remote, a.fd, l)?;
                }
            }
            remote.unmap_scratch()?;
        }
        Ok(())
    }
}

/// Takes the locks again and sets owners and signals, in the restored
/// process behind `remote` (see the module's comment for when).
pub fn restore(remote: &Remote, attrs: &[FdAttrs]) -> Result<()> {
    const F_SETSIG: u64 = 10;
    const F_SETOWN_EX: u64 = 15;
    let fcntl = |what: &str, fd: i32, cmd: u64, arg: u64| fcntl(remote, what, fd, cmd, arg);
    for a in attrs {
        for l in &a.locks {
            take(remote, a.fd, l)?;
        }
        if let Some(o) = a.owner {
            let mut b = [0u8; 8];
            b[0..4].copy_from_slice(&o.kind.to_le_bytes());
            b[4..8].copy_from_slice(&o.id.to_le_bytes());
            remote.write(remote.scratch, &b)?;
            fcntl("F_SETOWN_EX", a.fd, F_SETOWN_EX, remote.scratch)?;
        }
        if a.signal != 0 {
            fcntl("F_SETSIG", a.fd, F_SETSIG, a.signal as u64)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t5\nino:\t9\n\
            lock:\t1: POSIX  ADVISORY  WRITE 1234 00:2a:1234 10 19\n\
            lock:\t2: OFDLCK ADVISORY  READ  -1 00:2a:1234 0 EOF\n\
            lock:\t3: FLOCK  ADVISORY  WRITE 1234 00:2a:1234 0 EOF\n\
            lock:\t4: -> POSIX  ADVISORY  WRITE 99 00:2a:1234 0 EOF\n";
        let got = locks_of(info).unwrap();
        assert_eq!(
            got,
            vec![
                Lock {
                    kind: LockKind::Posix,
                    write: true,
                    start: 10,
                    end: Some(19)
                },
                Lock {
                    kind: LockKind::Ofd,
                    write: false,
                    start: 0,
                    end: None
                },
                Lock {
                    kind: LockKind::Flock,
                    write: true,
                    start: 0,
                    end: None
                },
            ]
        );
        let lease = locks_of("lock:\t1: LEASE  ACTIVE    WRITE 1 00:2a:1 0 EOF\n").unwrap();
        assert_eq!(
            lease,
            vec![Lock {
                kind: LockKind::Lease,
                write: true,
                start: 0,
                end: None
            }]
        );
        let breaking = locks_of("lock:\t1: LEASE  BREAKING  READ  1 00:2a:1 0 EOF\n").unwrap_err();
        assert!(breaking.contains("lease being broken"), "{breaking}");
        assert!(locks_of("lock:\t1: DELEG  ACTIVE    READ  1 00:2a:1 0 EOF\n").is_err());
        assert!(locks_of("lock:\t1: POSIX ADVISORY WRITE 1 00:2a:1 x EOF\n").is_err());
        let b = flock_bytes(&got[0]);
        assert_eq!(i64::from_le_bytes(b[16..24].try_into().unwrap()), 10);
    }

    #[test]
    fn check_refuses_what_a_process_does_not_have() {
        let img: Image = vec![(
            1,
            vec![FdAttrs {
                fd: 3,
                locks: vec![],
                owner: Some(Owner { kind: 1, id: 1 }),
                signal: 0,
            }],
        )];
        check(&img, &|p| (p == 1).then(|| vec![3])).unwrap();
        assert!(check(&img, &|p| (p == 1).then(|| vec![4])).is_err());
        assert!(check(&img, &|_| None).is_err());
        let mut bad = img.clone();
        bad[0].1[0].signal = 99;
        assert!(check(&bad, &|_| Some(vec![3])).is_err());
    }
}
