//! tmpfs mounts of the container, with their contents: /dev/shm, any tmpfs
//! an OCI bundle mounts (/run, /tmp...), and any the container mounted
//! itself. They live only in memory, so they are carried in the image like
//! memory is. The rootfs and the host's mounts the container was given are
//! external and must exist where the container is restored. /proc, /sys
//! and /dev are made anew by the restore. Any other mount (a bind mount
//! the container made, another file system) is refused before anything
//! stops ([`refuse_uncarried`]).
//!
//! Dump reads the frozen container's mounts (/proc/PID/mountinfo) and walks
//! each tmpfs through /proc/PID/root, staying on that file system. Restore
//! runs in the new PID 1, after it entered the rootfs and before any file
//! is reopened: it mounts each tmpfs again with its options and fills it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// At most this many bytes of tmpfs contents are carried (an image
/// section holds at most 256 MiB).
pub const CONTENT_CAP: u64 = 192 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read the mounts of process {pid}: {reason}")]
    Mountinfo { pid: i32, reason: String },
    #[error("tmpfs {target}: {path}: {source}")]
    Walk {
        target: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's tmpfs mounts hold more than {} MiB; that much is not carried yet (empty them, or keep the data on the rootfs)", CONTENT_CAP >> 20)]
    TooBig,
    #[error("the image's tmpfs contents hold a gap of more than {MAX_GAP} offsets; the image is damaged")]
    BadGap,
    #[error("the container has a mount it made itself, which migrate does not carry yet: {fs_type} {device} at {target} (root {root}); a restore would come back without it (unmount it, or use a tmpfs)")]
    Uncarried {
        target: String,
        fs_type: String,
        device: String,
        root: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The section `mounts`: the container's tmpfs mounts with their files.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "mounts";
    const VERSION: u32 = 5;
    type State = Vec<TmpfsImage>;
    type Error = Error;

    fn validate(state: &Self::State) -> Result<()> {
        let gaps = state.iter().flat_map(|m| &m.entries).filter_map(|e| match e.kind {
            EntryKind::Gap(n) => Some(n),
            _ => None,
        });
        match gaps.into_iter().any(|n| n > MAX_GAP) {
            true => Err(Error::BadGap),
            false => Ok(()),
        }
    }

    /// Layout 4 had no source name: those were "tmpfs".
    fn decode(bytes: &[u8]) -> crate::image::Result<Self::State> {
        crate::image::decode_versioned(Self::SECTION, bytes, Self::VERSION, |old: Vec<TmpfsImageV4>| {
            old.into_iter()
                .map(|m| TmpfsImage {
                    target: m.target,
                    source: "tmpfs".into(),
                    flags: m.flags,
                    data: m.data,
                    entries: m.entries,
                })
                .collect()
        })
    }
}

/// Layout 4 of [`TmpfsImage`].
#[derive(Deserialize)]
struct TmpfsImageV4 {
    target: String,
    flags: u64,
    data: String,
    entries: Vec<Entry>,
}

/// One tmpfs mount and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TmpfsImage {
    /// Where it is mounted, inside the container.
    pub target: String,
    /// The name it was mounted with (`mount -t tmpfs NAME`), as mountinfo
    /// shows it.
    pub source: String,
    /// Per-mount flags (MS_NOSUID, MS_RDONLY...).
    pub flags: u64,
    /// The file system's options (size=, mode=, nr_inodes=...).
    pub data: String,
    /// Its tree, each directory before what it holds; "" is its root.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    File(#[serde(with = "serde_bytes")] Vec<u8>),
    Symlink(String),
    Device {
        block: bool,
        rdev: u64,
    },
    Fifo,
    /// Another mount sits here: only the directory (or file) under it.
    MountPoint {
        dir: bool,
    },
    /// In directory `path`, before the entry made next: this many offsets
    /// taken by entries deleted since (each entry of a tmpfs directory is
    /// numbered when it is made, and listed and found by that number). Made
    /// again as entries made and removed at once, so that the entries keep
    /// their numbers: the order they are listed in and a directory's offset
    /// (`telldir`) stay as they were (a variant at the end that earlier
    /// builds never wrote).
    Gap(u32),
}

/// The number a tmpfs gives the first entry made in a directory.
const FIRST_ENTRY_OFFSET: i64 = 2;
/// At most this many offsets between two entries are made again.
const MAX_GAP: u32 = 1 << 20;

/// The entries of a directory in the order they were made, each with the
/// number of offsets taken before it by entries deleted since ([`EntryKind::Gap`]),
/// from its listing (`listed`: names with their d_off, in getdents64
/// order, "." and ".." too). Each entry is found at the d_off of the one
/// listed before it. A kernel that lists a tmpfs directory newest first
/// (6.14 and later) finds an entry numbered N at N + 1, in decreasing order:
/// then the numbers, and the gaps between them, are known. Otherwise (an
/// older kernel lists in the order they were made; or too few entries to
/// tell) the listing's order, without gaps.
fn creation_order(listed: Vec<(std::ffi::OsString, i64)>) -> Vec<(std::ffi::OsString, u32)> {
    let mut found_at = Vec::new();
    let mut before = 0i64;
    for (name, off) in listed {
        if name != "." && name != ".." {
            found_at.push((name, before));
        }
        before = off;
    }
    let newest_first = found_at.len() >= 2 && found_at.windows(2).all(|w| w[0].1 > w[1].1);
    if !newest_first {
        return found_at.into_iter().map(|(n, _)| (n, 0)).collect();
    }
    found_at.reverse();
    let mut next = FIRST_ENTRY_OFFSET;
    found_at
        .into_iter()
        .map(|(name, at)| {
            let number = at - 1;
            let gap = (number - next).clamp(0, i64::from(MAX_GAP)) as u32;
            next = number.max(next) + 1;
            (name, gap)
        })
        .collect()
}

/// Mount options that are per-mount flags, and theirs.
const FLAGS: &[(&str, MsFlags)] = &[
    ("ro", MsFlags::MS_RDONLY),
    ("nosuid", MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC),
    ("noatime", MsFlags::MS_NOATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME),
    ("relatime", MsFlags::MS_RELATIME),
    ("strictatime", MsFlags::MS_STRICTATIME),
];

/// Whether a tmpfs mounted at `target` belongs to the container: made for
/// it (not the host's, which the host's own mount table also shows), and
/// not part of /dev, /proc or /sys, which the restore makes anew.
fn carried(target: &Path, root: &str, majmin: &str, host: &[String]) -> bool {
    let anew = made_anew(target) && !target.starts_with("/dev/shm");
    root == "/" && target != Path::new("/") && !anew && !host.iter().any(|h| h == majmin)
}

/// Where a restore makes mounts anew (/proc, /sys, /dev and what is under
/// them: docs/checkpoint-restore.md says which).
fn made_anew(target: &Path) -> bool {
    ["/dev", "/proc", "/sys"].iter().any(|p| target.starts_with(p))
}

/// Refuses, while the container runs, a mount in its mount namespace
/// (`pid` is its PID 1) that a restore would not make again: one that is
/// neither its root, nor made anew, nor a tmpfs of its own (carried), nor
/// the host's as the container was given it (the host's mount table shows
/// it at the same place, with the same device and root; `rootfs` is the
/// container's root on the host, `None` for the host's own).
pub fn refuse_uncarried(pid: i32, rootfs: Option<&Path>) -> Result<()> {
    let (mounts, host) = mount_tables(pid)?;
    let host_devices: Vec<String> = host.iter().map(|m| m.majmin.clone()).collect();
    for m in mounts {
        let at = m.mount_point.as_path();
        if at == Path::new("/") || made_anew(at) {
            continue;
        }
        if m.fs_type == "tmpfs" && carried(at, &m.root, &m.majmin, &host_devices) {
            continue;
        }
        let on_host = match rootfs {
            Some(r) => r.join(at.strip_prefix("/").unwrap_or(at)),
            None => at.to_path_buf(),
        };
        if host
            .iter()
            .any(|h| h.mount_point == on_host && h.majmin == m.majmin && h.root == m.root)
        {
            continue;
        }
        return Err(Error::Uncarried {
            target: at.display().to_string(),
            fs_type: m.fs_type,
            device: m.mount_source.unwrap_or_else(|| "none".into()),
            root: m.root,
        });
    }
    Ok(())
}

/// The mount table of process `pid`'s mount namespace, and the host's
/// (this process's).
fn mount_tables(pid: i32) -> Result<(Vec<procfs::process::MountInfo>, Vec<procfs::process::MountInfo>)> {
    let err = |e: procfs::ProcError| Error::Mountinfo {
        pid,
        reason: e.to_string(),
    };
    let mounts = procfs::process::Process::new(pid)
        .and_then(|p| p.mountinfo())
        .map_err(err)?;
    let host = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(err)?;
    Ok((mounts.0, host.0))
}

/// The container's own tmpfs mounts, with their contents. `pid` is its
/// PID 1, frozen.
pub fn dump(pid: i32) -> Result<Vec<TmpfsImage>> {
    let (mounts, host) = mount_tables(pid)?;
    let host: Vec<String> = host.into_iter().map(|m| m.majmin).collect();
    let mut total = 0u64;
    let mut out = Vec::new();
    for m in mounts {
        if m.fs_type != "tmpfs" || !carried(&m.mount_point, &m.root, &m.majmin, &host) {
            continue;
        }
        let mut flags = MsFlags::empty();
        for (name, f) in FLAGS {
            if m.mount_options.contains_key(*name) {
                flags |= *f;
            }
        }
        let mut data: Vec<String> = m
            .super_options
            .iter()
            .filter(|(k, _)| k.as_str() != "rw" && k.as_str() != "ro")
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        data.sort();
        let target = m.mount_point.to_string_lossy().into_owned();
        let top =
            PathBuf::from(format!("/proc/{pid}/root")).join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point));
        let mut entries = Vec::new();
        walk(&top, &top, None, &mut entries, &mut total).map_err(|(path, source)| Error::Walk {
            target: target.clone(),
            path,
            source,
        })?;
        if total > CONTENT_CAP {
            return Err(Error::TooBig);
        }
        out.push(TmpfsImage {
            target,
            // procfs reads "none" as no source.
            source: m.mount_source.clone().unwrap_or_else(|| "none".into()),
            flags: flags.bits(),
            data: data.join(","),
            entries,
        });
    }
    Ok(out)
}

type WalkError = (PathBuf, std::io::Error);

fn walk(
    top: &Path,
    at: &Path,
    dev: Option<u64>,
    out: &mut Vec<Entry>,
    total: &mut u64,
) -> std::result::Result<(), WalkError> {
    let io = |e| (at.to_path_buf(), e);
    let md = std::fs::symlink_metadata(at).map_err(io)?;
    let dev = dev.unwrap_or(md.dev());
    let ft = md.file_type();
    let kind = if md.dev() != dev {
        EntryKind::MountPoint { dir: ft.is_dir() }
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        *total += md.len();
        if *total > CONTENT_CAP {
            return Ok(());
        }
        EntryKind::File(std::fs::read(at).map_err(io)?)
    } else if ft.is_symlink() {
        EntryKind::Symlink(std::fs::read_link(at).map_err(io)?.to_string_lossy().into_owned())
    } else if ft.is_char_device() || ft.is_block_device() {
        EntryKind::Device {
            block: ft.is_block_device(),
            rdev: md.rdev(),
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        // Sockets: a listening socket binds its path again on restore.
        return Ok(());
    };
    let descend = matches!(kind, EntryKind::Dir);
    out.push(Entry {
        path: at.strip_prefix(top).unwrap_or(at).to_string_lossy().into_owned(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
    });
    if descend {
        let dir = std::fs::File::open(at).map_err(io)?;
        let listed = crate::sys::dir_offsets(std::os::fd::AsFd::as_fd(&dir)).map_err(|e| io(e.into()))?;
        let path = at.strip_prefix(top).unwrap_or(at).to_string_lossy().into_owned();
        for (n, gap) in creation_order(listed) {
            if gap > 0 {
                out.push(Entry {
                    path: path.clone(),
                    kind: EntryKind::Gap(gap),
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: (0, 0),
                });
            }
            walk(top, &at.join(n), Some(dev), out, total)?;
        }
    }
    Ok(())
}

/// Mounts and fills every tmpfs of the image, in the restored PID 1 after
/// it entered the rootfs. Errors are one line, for the restorer's report.
pub fn restore(mounts: &[TmpfsImage]) -> std::result::Result<(), String> {
    let mut mounts: Vec<&TmpfsImage> = mounts.iter().collect();
    mounts.sort_by(|a, b| a.target.cmp(&b.target));
    for m in mounts {
        restore_one(m).map_err(|e| format!("tmpfs {}: {e}", m.target))?;
    }
    Ok(())
}

fn restore_one(m: &TmpfsImage) -> std::result::Result<(), String> {
    let target = Path::new(&m.target);
    if m.target == "/dev/shm" {
        // The empty one made with /dev gives way to this one.
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir: {e}"))?;
    let flags = MsFlags::from_bits_truncate(m.flags);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    mount(
        Some(m.source.as_str()),
        target,
        Some("tmpfs"),
        flags - MsFlags::MS_RDONLY,
        data,
    )
    .map_err(|e| format!("mount: {e}"))?;
    for e in &m.entries {
        let p = if e.path.is_empty() {
            target.to_path_buf()
        } else {
            target.join(&e.path)
        };
        make(&p, e).map_err(|err| format!("{}: {err}", p.display()))?;
    }
    // Directory modes and times last: filling them changed their times.
    for e in m.entries.iter().rev() {
        let p = if e.path.is_empty() {
            target.to_path_buf()
        } else {
            target.join(&e.path)
        };
        if matches!(e.kind, EntryKind::Dir) {
            set_attrs(&p, e).map_err(|err| format!("{}: {err}", p.display()))?;
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .map_err(|e| format!("remount read-only: {e}"))?;
    }
    Ok(())
}

fn make(p: &Path, e: &Entry) -> std::result::Result<(), String> {
    let mode = Mode::from_bits_truncate(e.mode);
    match &e.kind {
        EntryKind::Gap(n) => {
            let taken = p.join(".migrate-gap");
            for _ in 0..*n {
                std::fs::File::create(&taken).map_err(|e| format!("take an offset: {e}"))?;
                std::fs::remove_file(&taken).map_err(|e| format!("take an offset: {e}"))?;
            }
            return Ok(());
        }
        EntryKind::Dir => {
            if !p.is_dir() {
                std::fs::create_dir(p).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        EntryKind::MountPoint { dir: true } => {
            std::fs::create_dir(p).map_err(|e| e.to_string())?;
        }
        EntryKind::MountPoint { dir: false } => {
            std::fs::File::create(p).map_err(|e| e.to_string())?;
        }
        EntryKind::File(bytes) => std::fs::write(p, bytes).map_err(|e| e.to_string())?,
        EntryKind::Symlink(to) => {
            std::os::unix::fs::symlink(to, p).map_err(|e| e.to_string())?;
        }
        EntryKind::Device { block, rdev } => {
            let kind = if *block { SFlag::S_IFBLK } else { SFlag::S_IFCHR };
            mknod(p, kind, mode, *rdev).map_err(|e| format!("mknod: {e}"))?;
        }
        EntryKind::Fifo => nix::unistd::mkfifo(p, mode).map_err(|e| format!("mkfifo: {e}"))?,
    }
    set_attrs(p, e)
}

/// Owner, mode and modification time (a symlink: owner and time only).
fn set_attrs(p: &Path, e: &Entry) -> std::result::Result<(), String> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use nix::unistd::{fchownat, FchownatFlags, Gid, Uid};
    fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        Some(Uid::from_raw(e.uid)),
        Some(Gid::from_raw(e.gid)),
        FchownatFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|err| format!("chown: {err}"))?;
    if !matches!(e.kind, EntryKind::Symlink(_)) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(e.mode)).map_err(|err| format!("chmod: {err}"))?;
    }
    let t = TimeSpec::new(e.mtime.0, e.mtime.1);
    utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|err| format!("utimes: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kind;

    #[test]
    fn layout_4_reads_with_the_name_tmpfs() {
        #[derive(Serialize)]
        struct V4 {
            target: String,
            flags: u64,
            data: String,
            entries: Vec<Entry>,
        }
        let old = vec![V4 {
            target: "/run".into(),
            flags: 6,
            data: "size=16m".into(),
            entries: Vec::new(),
        }];
        let read = Section::decode(&crate::image::encode_section_at(4, &old)).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].target.as_str(), read[0].source.as_str()), ("/run", "tmpfs"));
        assert_eq!(Section::decode(&Section::encode(&read)).unwrap(), read);
    }

    #[test]
    fn which_tmpfs_mounts_are_carried() {
        let host = vec!["0:5".to_string()];
        let yes = |t: &str| carried(Path::new(t), "/", "0:99", &host);
        assert!(yes("/dev/shm"));
        assert!(yes("/run"));
        assert!(yes("/tmp/cache"));
        assert!(!yes("/"));
        assert!(!yes("/dev"));
        assert!(!yes("/proc/acpi"));
        assert!(!yes("/sys/fs/cgroup"));
        // The host's own tmpfs, or a bind of part of one: external.
        assert!(!carried(Path::new("/run"), "/", "0:5", &host));
        assert!(!carried(Path::new("/data"), "/srv/data", "0:99", &host));
    }

    /// Listed newest first (zeta, alpha, mid, beta made in that order,
    /// alpha removed, gamma made): made again oldest first, with a gap
    /// where alpha was; an order that tells nothing is kept.
    #[test]
    fn entries_come_in_the_order_they_were_made() {
        let os = |s: &str| std::ffi::OsString::from(s);
        let listed = vec![
            (os("."), 1),
            (os(".."), 7),
            (os("gamma"), 6),
            (os("beta"), 5),
            (os("mid"), 3),
            (os("zeta"), i64::from(i32::MAX)),
        ];
        let got = creation_order(listed);
        let want = vec![(os("zeta"), 0), (os("mid"), 1), (os("beta"), 0), (os("gamma"), 0)];
        assert_eq!(got, want);
        let older = vec![(os("."), 1), (os(".."), 2), (os("a"), 3), (os("b"), 4)];
        assert_eq!(creation_order(older), vec![(os("a"), 0), (os("b"), 0)]);
    }

    #[test]
    fn a_tree_round_trips_through_walk_and_make() {
        let src = tempfile::tempdir().unwrap();
        let d = src.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), b"hello").unwrap();
        std::fs::set_permissions(d.join("sub/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/f", d.join("link")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let mut entries = Vec::new();
        let mut total = 0;
        walk(d, d, None, &mut entries, &mut total).unwrap();
        assert_eq!(total, 5);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["", "fifo", "link", "sub", "sub/f"]);

        let dst = tempfile::tempdir().unwrap();
        for e in entries.iter().skip(1) {
            make(&dst.path().join(&e.path), e).unwrap();
        }
        let again = {
            let mut v = Vec::new();
            let mut t = 0;
            walk(dst.path(), dst.path(), None, &mut v, &mut t).unwrap();
            v
        };
        // Same tree, contents, modes and file times (directory times are
        // set last by restore_one).
        for (a, b) in entries.iter().zip(&again).skip(1) {
            assert_eq!(a.path, b.path);
            assert_eq!(a.kind, b.kind);
            assert_eq!(a.mode, b.mode);
            if !matches!(a.kind, EntryKind::Dir) {
                assert_eq!(a.mtime, b.mtime);
            }
        }
    }
}
