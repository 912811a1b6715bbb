//! File descriptors. Supported so far: files and devices reopened by path
//! with their flags and offset, and the container's log (reopened at the
//! restoring side's log path). Any other kind (pipes, sockets, eventfd...)
//! is refused at checkpoint time, naming the process and the fd, so that
//! nothing is silently dropped.

use std::os::fd::{AsFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::sys::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid} fd {fd}: {what}: {source}")]
    Proc {
        pid: i32,
        fd: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} (pid {ns_pid} in the container) fd {fd} is a {kind}, which migrate can not checkpoint yet; the container keeps running")]
    Unsupported {
        pid: i32,
        ns_pid: i32,
        fd: i32,
        kind: String,
    },
    #[error("reopen fd {fd} ({path}): {source}; files the container had open must exist at the same paths where it is restored")]
    Reopen {
        fd: i32,
        path: String,
        #[source]
        source: Errno,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// A file or device, reopened by path.
    Path { path: String, pos: u64 },
    /// The container's log.
    Log,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdImage {
    pub fd: i32,
    /// open(2) flags from fdinfo, O_CLOEXEC included.
    pub flags: i32,
    pub kind: FdKind,
}

/// Parses "pos:" and "flags:" (octal) from an fdinfo text.
pub fn parse_fdinfo(text: &str) -> (u64, i32) {
    let mut pos = 0;
    let mut flags = 0;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("pos:") {
            pos = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("flags:") {
            flags = i32::from_str_radix(v.trim(), 8).unwrap_or(0);
        }
    }
    (pos, flags)
}

/// The fds of process `pid`. `log` is the container's log path.
pub fn dump(pid: i32, ns_pid: i32, log: &std::path::Path) -> Result<Vec<FdImage>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Proc {
        pid,
        fd: -1,
        what: "list fds",
        source,
    })?;
    let mut fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    fds.sort_unstable();
    let mut out = Vec::new();
    for fd in fds {
        let target = std::fs::read_link(format!("{dir}/{fd}")).map_err(|source| Error::Proc {
            pid,
            fd,
            what: "readlink",
            source,
        })?;
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).map_err(|source| Error::Proc {
            pid,
            fd,
            what: "fdinfo",
            source,
        })?;
        let (pos, flags) = parse_fdinfo(&info);
        let path = target.to_string_lossy().into_owned();
        let kind = if target == log {
            FdKind::Log
        } else if path.starts_with('/') && !path.ends_with(" (deleted)") {
            let meta = std::fs::metadata(format!("{dir}/{fd}")).map_err(|source| Error::Proc {
                pid,
                fd,
                what: "stat",
                source,
            })?;
            use std::os::unix::fs::FileTypeExt;
            let ft = meta.file_type();
            if !(ft.is_file() || ft.is_char_device() || ft.is_dir()) {
                return Err(Error::Unsupported {
                    pid,
                    ns_pid,
                    fd,
                    kind: format!("special file {path}"),
                });
            }
            FdKind::Path { path, pos }
        } else {
            return Err(Error::Unsupported {
                pid,
                ns_pid,
                fd,
                kind: describe(&path),
            });
        };
        out.push(FdImage { fd, flags, kind });
    }
    Ok(out)
}

/// "pipe:[123]" -> "pipe", "anon_inode:[eventfd]" -> "eventfd"...
fn describe(target: &str) -> String {
    if let Some(r) = target.strip_prefix("anon_inode:") {
        return r.trim_matches(|c| c == '[' || c == ']').to_string();
    }
    match target.split_once(':') {
        Some((k, _)) => k.to_string(),
        None => target.to_string(),
    }
}

const REOPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY;

/// Sets up the fd table of a restored task (runs in the task itself, before
/// its memory is replaced): every image fd at its number, and nothing else
/// open but `keep`, whose numbers must all be above the image's.
///
/// Afterwards no descriptor that Rust code of this process owned may be
/// used or dropped: the caller only writes to `keep` and waits.
pub fn restore(fds: &[FdImage], log: Option<&OwnedFd>, keep: &[RawFd]) -> Result<()> {
    use nix::fcntl::{open, OFlag};
    let top = fds
        .iter()
        .map(|f| f.fd)
        .max()
        .unwrap_or(2)
        .max(keep.iter().copied().max().unwrap_or(0))
        + 1;
    // Open everything first, parked above every number that will be used.
    let mut parked: Vec<(OwnedFd, &FdImage)> = Vec::new();
    for f in fds {
        let err = |path: &str| {
            let path = path.to_string();
            move |source| Error::Reopen { fd: f.fd, path, source }
        };
        let (opened, what) = match &f.kind {
            FdKind::Log => {
                let log = log.ok_or(Error::Reopen {
                    fd: f.fd,
                    path: "log".into(),
                    source: Errno::EBADF,
                })?;
                (
                    log.as_fd().try_clone_to_owned().map_err(|e| Error::Reopen {
                        fd: f.fd,
                        path: "log".into(),
                        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
                    })?,
                    "log".to_string(),
                )
            }
            FdKind::Path { path, pos } => {
                let flags = OFlag::from_bits_retain(f.flags & REOPEN_FLAGS) | OFlag::O_CLOEXEC;
                let fd = open(path.as_str(), flags, nix::sys::stat::Mode::empty()).map_err(err(path))?;
                if *pos > 0 {
                    nix::unistd::lseek(&fd, *pos as i64, nix::unistd::Whence::SeekSet).map_err(err(path))?;
                }
                (fd, path.clone())
            }
        };
        let high = crate::sys::dup_above(opened.as_fd(), top).map_err(err(&what))?;
        parked.push((high, f));
    }
    for (fd, img) in &parked {
        crate::sys::place_fd(fd.as_fd(), img.fd, img.flags & libc::O_CLOEXEC != 0).map_err(|source| Error::Reopen {
            fd: img.fd,
            path: format!("{:?}", img.kind),
            source,
        })?;
    }
    drop(parked);
    let mut open_set: Vec<RawFd> = fds.iter().map(|f| f.fd).collect();
    open_set.extend_from_slice(keep);
    crate::sys::close_all_but(&open_set).map_err(|source| Error::Reopen {
        fd: -1,
        path: "close the restorer's descriptors".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_and_kinds() {
        assert_eq!(
            parse_fdinfo("pos:\t42\nflags:\t02100002\nmnt_id:\t5\n"),
            (42, 0o2100002)
        );
        assert_eq!(describe("pipe:[1234]"), "pipe");
        assert_eq!(describe("socket:[99]"), "socket");
        assert_eq!(describe("anon_inode:[eventfd]"), "eventfd");
        assert_eq!(describe("anon_inode:[io_uring]"), "io_uring");
    }
}
