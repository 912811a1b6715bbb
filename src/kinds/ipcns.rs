//! The container's IPC namespace: its limits, SysV message queues,
//! semaphore sets and shared memory segments, and POSIX message queues.
//!
//! The limits (kernel.msgmax, sem, shmmax..., fs.mqueue.*: each IPC
//! namespace has its own, and a new one starts at the defaults) are
//! carried in section `ipcns` (from format 4; an image without it restores
//! with the defaults), written by the container's PID 1 in its new
//! namespace before anything else runs there.
//!
//! The objects are not carried yet (issue 17): a restore makes a new, empty
//! IPC namespace, so a program would find its queue, semaphores or segment
//! gone. The checkpoint refuses any such object before anything stops.
//!
//! The namespace is read by a short-lived thread that enters it (setns
//! works per thread for IPC): /proc/sysvipc/* and the IPC sysctls show the
//! reader's own namespace, and a mqueue file system opened there (fsopen,
//! fsmount: a detached mount, nothing is mounted anywhere) is that
//! namespace's.

use serde::{Deserialize, Serialize};
use std::io::BufRead;

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
}

pub type Result<T> = std::result::Result<T, Error>;

/// The SysV listings in /proc/sysvipc, and what one of their lines is.
const SYSV: [(&str, &str); 3] = [
    ("msg", "a SysV message queue"),
    ("sem", "a SysV semaphore set"),
    ("shm", "a SysV shared memory segment"),
];

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
}

/// The section `ipcns` (from image format 4).
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "ipcns";
    const VERSION: u32 = 4;
    const SINCE_FORMAT: u32 = 4;
    type State = IpcImage;
    type Error = Error;

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
        Ok(())
    }
}

/// The limits of the IPC namespace of process `pid`.
pub fn dump(pid: i32) -> Result<IpcImage> {
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
        Ok(IpcImage { limits })
    })
    .map_err(|source| Error::Read { pid, source })
}

/// Sets the limits in the calling process's (new) IPC namespace, those
/// that differ from its defaults (a next id of -1, "none chosen", cannot
/// be written, only be left as it is).
pub fn restore(img: &IpcImage) -> std::result::Result<(), String> {
    for (name, value) in &img.limits {
        let path = format!("/proc/sys/{name}");
        let now = std::fs::read_to_string(&path).map_err(|e| format!("read IPC limit {name}: {e}"))?;
        if now.split_whitespace().ne(value.split_whitespace()) {
            std::fs::write(&path, value).map_err(|e| format!("set IPC limit {name} to {value}: {e}"))?;
        }
    }
    Ok(())
}

/// Refuses the first IPC object in the IPC namespace of process `pid`.
pub fn refuse_uncarried(pid: i32) -> Result<()> {
    match objects(pid)?.into_iter().next() {
        Some(what) => Err(Error::Uncarried(what)),
        None => Ok(()),
    }
}

/// Every IPC object in the IPC namespace of process `pid`, described.
fn objects(pid: i32) -> Result<Vec<String>> {
    super::in_namespace(pid, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC, || {
        let mut found = Vec::new();
        for (file, what) in SYSV {
            // A kernel without SysV IPC has no listings, and no objects.
            let listing = match std::fs::File::open(format!("/proc/sysvipc/{file}")) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other?,
            };
            for line in std::io::BufReader::new(listing).lines().skip(1) {
                if let Some(d) = describe_sysv(what, &line?) {
                    found.push(d);
                }
            }
        }
        found.extend(posix_queues()?);
        Ok(found)
    })
    .map_err(|source| Error::Read { pid, source })
}

/// One line of /proc/sysvipc/{msg,sem,shm}: "key id perms ...".
fn describe_sysv(what: &str, line: &str) -> Option<String> {
    let mut cols = line.split_whitespace();
    let key: i64 = cols.next()?.parse().ok()?;
    let id = cols.next()?;
    let perms = cols.next()?;
    Some(format!("{what} (key {:#010x}, id {id}, mode {perms})", key as i32))
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

    #[test]
    fn sysv_lines_are_described_with_key_id_and_mode() {
        let line = "     1234          5        600            0            0";
        assert_eq!(
            describe_sysv("a SysV message queue", line).as_deref(),
            Some("a SysV message queue (key 0x000004d2, id 5, mode 600)")
        );
        assert_eq!(
            describe_sysv("x", "         -1 3 666").as_deref(),
            Some("x (key 0xffffffff, id 3, mode 666)")
        );
        assert_eq!(describe_sysv("x", "garbage"), None);
    }

    #[test]
    fn only_known_limits_with_numbers_are_valid() {
        use crate::kinds::Kind;
        let img = |pairs: &[(&str, &str)]| IpcImage {
            limits: pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
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
