//! `restore --verify`: before a restored container runs, the kernel's view
//! of every restored process is read back from /proc and compared with
//! the image; a difference fails the restore (everything made is removed)
//! and is named. It reads kernel state, not memory: the threads with their
//! blocked signals and credentials, the umask, every mapping's range,
//! protection and sharing, the fd table with each fd's status flags and a
//! regular file's offset.
//!
//! What a restore is known to change is not compared: the order mappings
//! are split or merged in (only that each image mapping is covered, with
//! its protection and sharing), what backs a mapping (a memfd for shared
//! memory), the flags the kernel adds on its own (O_LARGEFILE).

use crate::kinds::creds::Creds;
use crate::kinds::files::{FdKind, FilesImage};
use crate::kinds::memory::{Backing, MapLine, MemoryImage};
use crate::kinds::pstree::ProcessImage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read /proc/{host}/{what} of the restored process: {source}")]
    Read {
        pid: i32,
        host: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("restore --verify: process {pid}: {what}: the image has {image}, the restored process {restored}")]
    Differs {
        pid: i32,
        what: String,
        image: String,
        restored: String,
    },
}

/// The status flags compared: those a program chose (the kernel adds
/// O_LARGEFILE by itself).
const FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_CLOEXEC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_PATH
    | libc::O_SYNC;

/// Compares each live process of `procs` (restored as host PID
/// `host_of(pid)`) with its memory image `mm` and its fds in `files`.
pub fn restored(
    procs: &[ProcessImage],
    mm: &[(i32, MemoryImage)],
    files: &FilesImage,
    host_of: &dyn Fn(i32) -> Option<i32>,
) -> Result<(), Error> {
    for p in procs.iter().filter(|p| p.zombie.is_none()) {
        let Some(host) = host_of(p.pid) else { continue };
        let pid = p.pid;
        let read = |what: &'static str| {
            std::fs::read_to_string(format!("/proc/{host}/{what}")).map_err(|source| Error::Read {
                pid,
                host,
                what,
                source,
            })
        };
        let differs = |what: String, image: String, restored: String| {
            Err(Error::Differs {
                pid,
                what,
                image,
                restored,
            })
        };
        let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{host}/task"))
            .map_err(|source| Error::Read {
                pid,
                host,
                what: "task",
                source,
            })?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        if tids.len() != p.threads.len() {
            return differs("threads".into(), p.threads.len().to_string(), tids.len().to_string());
        }
        // Each thread's blocked signals and credentials, the umask.
        for tid in tids {
            let text =
                std::fs::read_to_string(format!("/proc/{host}/task/{tid}/status")).map_err(|source| Error::Read {
                    pid,
                    host,
                    what: "task/TID/status",
                    source,
                })?;
            let Ok(st) = crate::proc::parse_status(tid, &text) else {
                return differs("a thread's status".into(), "one".into(), "none readable".into());
            };
            let Some(t) = p.threads.iter().find(|t| t.tid == st.ns_pid) else {
                return differs(format!("thread {}", st.ns_pid), "none".into(), "one".into());
            };
            let blocked = crate::proc::field(&text, "SigBlk").and_then(|v| u64::from_str_radix(v, 16).ok());
            if blocked != Some(t.sigmask) {
                return differs(
                    format!("thread {} blocked signals", t.tid),
                    format!("{:#x}", t.sigmask),
                    format!("{blocked:#x?}"),
                );
            }
            if let Some(c) = &p.creds {
                let want = Creds {
                    pdeathsig: 0,
                    seccomp: Vec::new(),
                    ..c.clone()
                };
                let got = Creds::from_status(&st);
                if got != want {
                    return differs(
                        format!("thread {} credentials", t.tid),
                        format!("{want:?}"),
                        format!("{got:?}"),
                    );
                }
            }
            if st.ns_pid == pid && st.umask != p.umask {
                return differs("umask".into(), format!("{:o}", p.umask), format!("{:o}", st.umask));
            }
        }
        if let Some((_, m)) = mm.iter().find(|(q, _)| *q == pid) {
            let maps = crate::kinds::memory::parse_maps(pid, &read("maps")?).unwrap_or_default();
            for v in m.vmas.iter().filter(|v| !matches!(v.backing, Backing::Special { .. })) {
                let want = perms(v.prot, v.shared);
                if let Some(got) = cover(&maps, v.start, v.end, &want) {
                    return differs(format!("mapping {:#x}-{:#x}", v.start, v.end), want, got);
                }
            }
        }
        let fds = files.of(pid);
        // Sorted.
        let table = crate::kinds::files::list_fds(host).map_err(|e| Error::Read {
            pid,
            host,
            what: "fd",
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut want: Vec<i32> = fds.iter().map(|f| f.fd).collect();
        want.sort_unstable();
        if table != want {
            return differs("fd table".into(), format!("{want:?}"), format!("{table:?}"));
        }
        for f in fds {
            let info = read_fdinfo(host, f.fd).map_err(|source| Error::Read {
                pid,
                host,
                what: "fdinfo",
                source,
            })?;
            let (pos, flags) = crate::kinds::files::parse_fdinfo(&info);
            if flags & FLAGS != f.flags & FLAGS {
                return differs(
                    format!("fd {} status flags", f.fd),
                    format!("{:#o}", f.flags & FLAGS),
                    format!("{:#o}", flags & FLAGS),
                );
            }
            if let FdKind::File { file } = f.kind {
                let img = files.files.get(file as usize);
                if let Some(img) = img.filter(|i| i.regular && i.dir_entries.is_none()) {
                    if pos != img.pos {
                        return differs(format!("fd {} offset", f.fd), img.pos.to_string(), pos.to_string());
                    }
                }
            }
        }
    }
    Ok(())
}

fn read_fdinfo(host: i32, fd: i32) -> std::io::Result<String> {
    std::fs::read_to_string(format!("/proc/{host}/fdinfo/{fd}"))
}

/// "rwxs" / "r--p" as maps shows them.
fn perms(prot: u32, shared: bool) -> String {
    let bit = |b: i32, c: char| if prot & b as u32 != 0 { c } else { '-' };
    format!(
        "{}{}{}{}",
        bit(libc::PROT_READ, 'r'),
        bit(libc::PROT_WRITE, 'w'),
        bit(libc::PROT_EXEC, 'x'),
        if shared { 's' } else { 'p' }
    )
}

/// None if `start..end` is covered by mappings of `maps` with `perms`;
/// else what is there instead.
fn cover(maps: &[MapLine], start: u64, end: u64, perms: &str) -> Option<String> {
    let mut at = start;
    while at < end {
        match maps.iter().find(|m| m.start <= at && at < m.end) {
            Some(m) if m.perms == perms => at = m.end,
            Some(m) => return Some(format!("{} at {:#x}-{:#x}", m.perms, m.start, m.end)),
            None => return Some(format!("nothing mapped at {at:#x}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_covered_with_their_protection() {
        let maps = crate::kinds::memory::parse_maps(
            1,
            "1000-3000 rw-p 0 00:00 0\n3000-4000 rw-p 0 00:00 0\n5000-6000 r--s 0 00:01 3 /x\n",
        )
        .unwrap();
        assert_eq!(cover(&maps, 0x1000, 0x4000, "rw-p"), None);
        assert_eq!(cover(&maps, 0x2000, 0x3000, "rw-p"), None);
        assert!(cover(&maps, 0x1000, 0x5000, "rw-p")
            .unwrap()
            .contains("nothing mapped at 0x4000"));
        assert!(cover(&maps, 0x5000, 0x6000, "rw-s").unwrap().contains("r--s"));
        assert_eq!(perms((libc::PROT_READ | libc::PROT_EXEC) as u32, false), "r-xp");
    }
}
