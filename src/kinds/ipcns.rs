//! The container's IPC namespace: SysV message queues, semaphore sets and
//! shared memory segments, and POSIX message queues.
//!
//! None of them is carried yet (issue 17): a restore makes a new, empty
//! IPC namespace, so a program would find its queue, semaphores or segment
//! gone. The checkpoint refuses any such object before anything stops.
//!
//! The namespace is read by a short-lived thread that enters it (setns
//! works per thread for IPC): /proc/sysvipc/* shows the reader's own
//! namespace, and a mqueue file system opened there (fsopen, fsmount: a
//! detached mount, nothing is mounted anywhere) is that namespace's.

use std::io::BufRead;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read its IPC namespace: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("the IPC namespace's reader thread failed")]
    Thread,
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

/// Refuses the first IPC object in the IPC namespace of process `pid`.
pub fn refuse_uncarried(pid: i32) -> Result<()> {
    match objects(pid)?.into_iter().next() {
        Some(what) => Err(Error::Uncarried(what)),
        None => Ok(()),
    }
}

/// Every IPC object in the IPC namespace of process `pid`, described.
fn objects(pid: i32) -> Result<Vec<String>> {
    let err = |source| Error::Read { pid, source };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/ipc")).map_err(err)?;
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWIPC)?;
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
    });
    reader.join().map_err(|_| Error::Thread)?.map_err(err)
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
}
