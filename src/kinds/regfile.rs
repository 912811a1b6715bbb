//! Regular files, directories and devices behind fds: reopened by path
//! with their flags and offset, once per open file description (so dup'ed
//! and inherited fds share one offset again). Files deleted while open, and
//! memfds, travel in the image with their contents, within a size cap.
//! A file opened read-only whose size changed since the checkpoint is
//! refused at restore. A deleted file keeps its holes: only its data
//! extents (SEEK_DATA/SEEK_HOLE) travel, and the cap counts those.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use serde::{Deserialize, Serialize};

use crate::sys::Errno;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// Reopened by path.
    Path,
    /// Deleted while open: recreated unnamed (O_TMPFILE) in its directory.
    Deleted { contents: Vec<u8> },
    /// A memfd, recreated with its name and contents.
    Memfd { name: String, contents: Vec<u8> },
    /// A FIFO, reopened by path; `data` is what was buffered in it (stored
    /// with the first open description of that FIFO).
    Fifo { data: Vec<u8> },
    /// A file on a mount outside the container's mount namespaces (stdio a
    /// runtime or a user's shell opened before the container existed:
    /// `runc run -d ID > /tmp/out.log`): `path` is the host's path, opened
    /// by the restorer on the host's side and passed in.
    HostPath,
    /// A memfd made with MFD_ALLOW_SEALING, with its seals (F_SEAL_*); a
    /// plain [`FileKind::Memfd`] is sealed against sealing.
    SealedMemfd {
        name: String,
        contents: Vec<u8>,
        seals: i32,
    },
    /// Deleted while open, with its permission bits and owner (images of
    /// format 3 have [`FileKind::Deleted`], without them).
    DeletedFile {
        contents: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Deleted while open, with its holes: its size and its data extents
    /// (offset, bytes), with its permission bits and owner.
    SparseFile {
        size: u64,
        extents: Vec<(u64, Vec<u8>)>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A FIFO as [`FileKind::Fifo`], with the size of its buffer
    /// (F_SETPIPE_SZ; files layout 6).
    SizedFifo { data: Vec<u8>, capacity: u32 },
    /// A FIFO, directory or device node deleted while open: made again
    /// under its old name, opened and removed, once for every open
    /// description of the same node (`node`: its device and inode at
    /// checkpoint), with its permission bits and owner (files layout 6).
    Ghost {
        node: (u64, u64),
        what: GhostNode,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A file deleted under the name it was opened by and still linked
    /// under another: the same file, found again by its file handle on its
    /// mount (`mount`, where the container sees it), linked under its old
    /// name for the open and unlinked again (files layout 6). On another
    /// file system (another host) the handle finds nothing, and the restore
    /// fails, naming the file.
    Linked {
        handle_type: i32,
        handle: Vec<u8>,
        mount: String,
    },
    /// A file of /proc/N (`pid`: N, in the container) opened while process
    /// N lived, which has exited and been reaped since: opened again in a
    /// helper given PID N, which then ends and is reaped, so that reading
    /// it fails with ESRCH as it did (files layout 6; before, refused).
    OfExited { pid: i32 },
    /// A memfd (files layout 6; before, [`FileKind::Memfd`] and
    /// [`FileKind::SealedMemfd`], made anew for each open description): `id`
    /// names it as memory mappings name it (see
    /// [`super::memory::object_id`]). The restorer makes each memfd once,
    /// named `name`, with `contents` (held by its first open description
    /// only) and, once every process is rebuilt, its `seals` (F_SEAL_*;
    /// F_SEAL_SEAL alone for one made without MFD_ALLOW_SEALING). Every
    /// open description and every mapping of it opens that one memfd: a
    /// write through an fd shows in the mappings, as it did.
    MemfdOf {
        id: u64,
        name: String,
        contents: Vec<u8>,
        seals: i32,
    },
}

/// The PID N of a file of /proc/N (`target`, as process `pid` sees it)
/// whose process has exited (its /proc/N is gone).
fn exited_proc(pid: i32, target: &str) -> Option<i32> {
    let n = proc_number(target)?;
    let gone = !std::path::Path::new(&format!("/proc/{pid}/root/proc/{n}")).exists();
    gone.then(|| n.parse().ok()).flatten()
}

/// Whether fd `fd` of process `pid` is a file of /proc/N (`target`) of a
/// process that exited, N being another process's now: the same path
/// names another file (a new inode; the fd's own entry, which it pins, is
/// found again while its process lives).
pub fn of_other_process(pid: i32, fd: i32, target: &str) -> bool {
    if proc_number(target).is_none() {
        return false;
    }
    let (Ok(held), Ok(now)) = (
        std::fs::metadata(format!("/proc/{pid}/fd/{fd}")),
        std::fs::metadata(format!("/proc/{pid}/root{target}")),
    ) else {
        return false;
    };
    (held.dev(), held.ino()) != (now.dev(), now.ino())
}

/// N of a path /proc/N or /proc/N/...
fn proc_number(target: &str) -> Option<&str> {
    target
        .strip_prefix("/proc/")
        .and_then(|r| r.split('/').next())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// What a [`FileKind::Ghost`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GhostNode {
    /// With the bytes buffered in it (with the first open description of
    /// it) and the size of its buffer.
    Fifo {
        data: Vec<u8>,
        capacity: u32,
    },
    Directory,
    /// A memory device (see [`memory_device`]), by its device number.
    CharDevice {
        rdev: u64,
    },
}

/// Whether device number `rdev` (of a character device) is one whose
/// state is all in the kernel, not in the open file: null, zero, full,
/// random, urandom. Reopened by path, or made again when deleted; any
/// other device is refused.
pub(crate) fn memory_device(rdev: u64) -> bool {
    matches!((libc::major(rdev), libc::minor(rdev)), (1, 3 | 5 | 7 | 8 | 9))
}

impl FileImage {
    /// Whether a sparse file's extents are in order, apart, and inside its
    /// size (restore writes them at their offsets).
    pub fn extents_fit(&self) -> bool {
        match &self.kind {
            FileKind::SparseFile { size, extents, .. } => extents_fit(*size, extents),
            _ => true,
        }
    }

    /// Why the restore would not make this file again, if it would not: a
    /// deleted device node other than a memory device (an image must not
    /// give a container a device it did not have).
    pub fn unsafe_node(&self) -> Option<&'static str> {
        match &self.kind {
            FileKind::OfExited { pid } if *pid <= 1 => Some("is a file of /proc of a PID a helper can not take"),
            FileKind::Ghost {
                what: GhostNode::CharDevice { rdev },
                ..
            } if !memory_device(*rdev) => {
                Some("is a deleted device node other than null, zero, full, random or urandom")
            }
            _ => None,
        }
    }
}

/// Whether data `extents` (offset, bytes) are in order, apart, and inside
/// `size` (a restore writes them at their offsets).
pub(crate) fn extents_fit(size: u64, extents: &[(u64, Vec<u8>)]) -> bool {
    let mut end = 0u64;
    size <= i64::MAX as u64
        && extents.iter().all(|(off, bytes)| {
            let ok = *off >= end && off.checked_add(bytes.len() as u64).is_some_and(|e| e <= size);
            end = off + bytes.len() as u64;
            ok
        })
}

/// The data extents of the file behind `file` (offset, length), found
/// with SEEK_DATA/SEEK_HOLE; a file system without them reports one
/// extent, the whole file.
pub(crate) fn extents_of(file: &std::fs::File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let data = match lseek(file, at as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = (lseek(file, data as i64, Whence::SeekHole)? as u64).min(size);
        if hole > data {
            out.push((data, hole - data));
        }
        at = hole.max(data + 1);
    }
    Ok(out)
}

/// The bytes of fd `fd` of process `pid` (link `target`) that a
/// checkpoint would carry in the image, if it carries its contents (a
/// deleted file: its data extents; a memfd: its size); over `cap` is
/// refused before anything stops.
pub fn refuse_too_large(pid: i32, fd: i32, target: &str, cap: u64) -> Result<()> {
    let deleted = target.starts_with('/') && target.ends_with(" (deleted)");
    if !(deleted || target.starts_with("/memfd:")) {
        return Ok(());
    }
    let link = format!("/proc/{pid}/fd/{fd}");
    // An fd closed meanwhile carries nothing.
    let Ok(file) = std::fs::File::open(&link) else {
        return Ok(());
    };
    let Ok(meta) = file.metadata() else { return Ok(()) };
    if !meta.is_file() {
        return Ok(());
    }
    let size = match target.starts_with("/memfd:") {
        true => meta.len(),
        false => extents_of(&file, meta.len())
            .map_err(|source| Error::Read {
                path: target.to_string(),
                source,
            })?
            .iter()
            .map(|e| e.1)
            .sum(),
    };
    if size > cap {
        return Err(Error::TooLarge {
            path: target.to_string(),
            size,
            cap,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileImage {
    /// The path as the container sees it (without " (deleted)").
    pub path: String,
    /// open(2) flags (access mode, O_APPEND, O_NONBLOCK...).
    pub flags: i32,
    pub pos: u64,
    /// Size at checkpoint, for regular files.
    pub size: u64,
    pub regular: bool,
    pub kind: FileKind,
    /// A directory read part-way: how many entries a read from its start
    /// returns before its offset. The restore places the offset after as
    /// many entries of the directory it opens, whatever that file system's
    /// offsets are (a tmpfs made again numbers its entries anew, and ext4's
    /// are hashes seeded per file system). `None` for a directory whose
    /// offset is no entry's (it changed since it was read), which is set
    /// as it was (files layout 6; before, a directory's offset was lost and
    /// its reader read every entry again).
    pub dir_entries: Option<u64>,
}

/// [`FileImage`] as files layouts 3 to 5 wrote it.
#[derive(Deserialize)]
pub struct FileImageV5 {
    path: String,
    flags: i32,
    pos: u64,
    size: u64,
    regular: bool,
    kind: FileKind,
}

impl From<FileImageV5> for FileImage {
    fn from(o: FileImageV5) -> Self {
        FileImage {
            path: o.path,
            flags: o.flags,
            pos: o.pos,
            size: o.size,
            regular: o.regular,
            kind: o.kind,
            dir_entries: None,
        }
    }
}

/// Where the mount of fd `fd` of process `pid` is, as the process sees it
/// (fdinfo `mnt_id`, then mountinfo).
fn mount_point_of(pid: i32, fd: i32) -> std::io::Result<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let id = super::files::fdinfo_mnt_id(&info).ok_or_else(|| std::io::Error::other("no mnt_id in fdinfo"))?;
    let mounts = procfs::process::Process::new(pid)
        .and_then(|p| p.mountinfo())
        .map_err(std::io::Error::other)?;
    mounts
        .into_iter()
        .find(|m| u64::try_from(m.mnt_id).is_ok_and(|m| m == id))
        .map(|m| m.mount_point.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::other(format!("mount {id} is not in mountinfo")))
}

/// Reads directory `dir` from its start until `found(count, offset)`
/// holds, with `count` entries read and `offset` the directory's offset
/// after them; returns both then, or `None` at its end.
fn read_until(dir: impl AsFd, mut found: impl FnMut(u64, u64) -> bool) -> std::io::Result<Option<(u64, u64)>> {
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 32 << 10];
    let mut entries = rustix::fs::RawDir::new(dir, &mut buf);
    let mut count = 0;
    while let Some(e) = entries.next() {
        let offset = e?.next_entry_cookie();
        count += 1;
        if found(count, offset) {
            return Ok(Some((count, offset)));
        }
    }
    Ok(None)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is {size} bytes, over the {cap}-byte cap for files carried in the image (deleted files, memfds); raise it with --file-cap")]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} changed since the checkpoint: it was {was} bytes and is {now}; restore the file or checkpoint again"
    )]
    Changed { path: String, was: u64, now: u64 },
    #[error("directory {path} changed since the checkpoint: its reader had read {read} entries, and it holds fewer now; restore the directory or checkpoint again")]
    DirChanged { path: String, read: u64 },
    #[error("reopen {path}: {source}; files the container had open must exist at the same paths where it is restored")]
    Reopen {
        path: String,
        #[source]
        source: Errno,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Describes fd `fd` of process `pid`, whose link reads `target`.
/// `outside`: the file's mount is not in the container's mount namespaces.
pub fn dump(pid: i32, fd: i32, target: &str, flags: i32, pos: u64, cap: u64, outside: bool) -> Result<FileImage> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let meta = std::fs::metadata(&link).map_err(|source| Error::Read {
        path: target.to_string(),
        source,
    })?;
    let carried = |path: &str| -> Result<Vec<u8>> {
        if meta.len() > cap {
            return Err(Error::TooLarge {
                path: path.to_string(),
                size: meta.len(),
                cap,
            });
        }
        let mut v = Vec::with_capacity(meta.len() as usize);
        std::fs::File::open(&link)
            .and_then(|mut f| f.read_to_end(&mut v))
            .map_err(|source| Error::Read {
                path: path.to_string(),
                source,
            })?;
        Ok(v)
    };
    // A FIFO's buffered bytes and its size, through a read end of our own
    // onto it (which consumes nothing).
    let fifo_buffer = || -> Result<(Vec<u8>, u32)> {
        let read = |e: Errno| Error::Read {
            path: target.to_string(),
            source: e.into(),
        };
        let reader = nix::fcntl::open(
            link.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(read)?;
        let image = super::pipes::dump(meta.ino(), Some(&reader)).map_err(read)?;
        Ok((image.data, image.capacity))
    };
    let (path, kind) = if let Some(name) = target.strip_prefix("/memfd:") {
        let name = name.strip_suffix(" (deleted)").unwrap_or(name).to_string();
        let contents = carried(target)?;
        let seals = std::fs::File::open(&link)
            .and_then(|f| Ok(nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GET_SEALS)?))
            .map_err(|source| Error::Read {
                path: target.to_string(),
                source,
            })?;
        let dev = format!("{:02x}:{:02x}", libc::major(meta.dev()), libc::minor(meta.dev()));
        let kind = FileKind::MemfdOf {
            id: super::memory::object_id(&dev, meta.ino()),
            name,
            contents,
            seals,
        };
        (target.to_string(), kind)
    } else if let Some(orig) = target
        .strip_suffix(" (deleted)")
        .filter(|_| !meta.is_file() && (meta.is_dir() || meta.nlink() == 0))
    {
        use std::os::unix::fs::PermissionsExt;
        let what = match meta.file_type() {
            t if t.is_fifo() => {
                let (data, capacity) = fifo_buffer()?;
                GhostNode::Fifo { data, capacity }
            }
            t if t.is_dir() => GhostNode::Directory,
            t if t.is_char_device() => GhostNode::CharDevice { rdev: meta.rdev() },
            _ => {
                return Err(Error::Read {
                    path: orig.to_string(),
                    source: std::io::Error::other("a deleted file of a kind that is not made again"),
                })
            }
        };
        (
            orig.to_string(),
            FileKind::Ghost {
                node: (meta.dev(), meta.ino()),
                what,
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            },
        )
    } else if let Some(orig) = target
        .strip_suffix(" (deleted)")
        .filter(|_| meta.is_file() && meta.nlink() > 0)
    {
        let read = |source| Error::Read {
            path: orig.to_string(),
            source,
        };
        let file = std::fs::File::open(&link).map_err(read)?;
        let (handle_type, handle) = crate::sys::name_to_handle(file.as_fd()).map_err(|e| read(e.into()))?;
        let mount = mount_point_of(pid, fd).map_err(read)?;
        (
            orig.to_string(),
            FileKind::Linked {
                handle_type,
                handle,
                mount,
            },
        )
    } else if meta.file_type().is_fifo() {
        let (data, capacity) = fifo_buffer()?;
        (target.to_string(), FileKind::SizedFifo { data, capacity })
    } else if let Some(orig) = target.strip_suffix(" (deleted)") {
        use std::os::unix::fs::PermissionsExt;
        let read = |source| Error::Read {
            path: orig.to_string(),
            source,
        };
        let file = std::fs::File::open(&link).map_err(read)?;
        let spans = extents_of(&file, meta.len()).map_err(read)?;
        let data: u64 = spans.iter().map(|e| e.1).sum();
        if data > cap {
            return Err(Error::TooLarge {
                path: orig.to_string(),
                size: data,
                cap,
            });
        }
        let mut extents = Vec::with_capacity(spans.len());
        for (off, len) in spans {
            let mut bytes = vec![0u8; len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, off).map_err(read)?;
            extents.push((off, bytes));
        }
        (
            orig.to_string(),
            FileKind::SparseFile {
                size: meta.len(),
                extents,
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            },
        )
    } else if let Some(n) = exited_proc(pid, target) {
        (target.to_string(), FileKind::OfExited { pid: n })
    } else if outside {
        (target.to_string(), FileKind::HostPath)
    } else {
        (target.to_string(), FileKind::Path)
    };
    // Counted on a description of its own, from the start.
    // (A deleted directory has no entries to count: reading it fails.)
    let dir_entries = match meta.is_dir() && pos > 0 && !matches!(kind, FileKind::Ghost { .. }) {
        true => std::fs::File::open(&link)
            .and_then(|dir| read_until(dir, |_, offset| offset == pos))
            .map(|hit| hit.map(|(count, _)| count))
            .map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?,
        false => None,
    };
    Ok(FileImage {
        path,
        flags,
        pos,
        size: meta.len(),
        regular: meta.is_file(),
        kind,
        dir_entries,
    })
}

const REOPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_LARGEFILE
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_PATH;

/// Opens the file again (close-on-exec), at its offset.
/// `memfds`: the memfds the restorer made ([`FileKind::MemfdOf`]), by
/// object id, at the descriptor numbers this process inherited them at.
pub fn restore(f: &FileImage, memfds: &[(u64, std::os::fd::RawFd)]) -> Result<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let err = |source| Error::Reopen {
        path: f.path.clone(),
        source,
    };
    let flags = OFlag::from_bits_retain(f.flags & REOPEN_FLAGS) | OFlag::O_CLOEXEC;
    let fd = match &f.kind {
        FileKind::Path | FileKind::HostPath => {
            let fd = open(f.path.as_str(), flags, Mode::empty()).map_err(err)?;
            if f.regular && f.flags & libc::O_ACCMODE == libc::O_RDONLY {
                let now = nix::sys::stat::fstat(&fd).map_err(err)?.st_size as u64;
                if now != f.size {
                    return Err(Error::Changed {
                        path: f.path.clone(),
                        was: f.size,
                        now,
                    });
                }
            }
            fd
        }
        FileKind::Deleted { contents } => ghost(&f.path, contents, None, flags).map_err(err)?,
        FileKind::DeletedFile {
            contents,
            mode,
            uid,
            gid,
        } => ghost(&f.path, contents, Some((*mode, *uid, *gid)), flags).map_err(err)?,
        FileKind::SparseFile {
            size,
            extents,
            mode,
            uid,
            gid,
        } => ghost_sparse(&f.path, *size, extents, (*mode, *uid, *gid), flags).map_err(err)?,
        FileKind::Fifo { data } | FileKind::SizedFifo { data, .. } => {
            // Held open read-write meanwhile, so that no open of a single
            // end blocks, and the buffered bytes have somewhere to wait.
            let keeper = open(
                f.path.as_str(),
                OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            if let FileKind::SizedFifo { capacity, .. } = &f.kind {
                super::pipes::resize(&keeper, *capacity).map_err(err)?;
            }
            write_all(&keeper, data).map_err(err)?;
            let fd = open_fifo_end(&f.path, f.flags).map_err(err)?;
            KEEPERS.with(|k| k.borrow_mut().push(keeper));
            fd
        }
        FileKind::Ghost {
            node,
            what,
            mode,
            uid,
            gid,
        } => {
            let made = GHOSTS.with(|g| g.borrow().get(node).map(|k| k.try_clone())).transpose();
            let keeper = match made.map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF))))? {
                Some(keeper) => keeper,
                None => {
                    let keeper = make_node(&f.path, node.1, what, (*mode, *uid, *gid)).map_err(err)?;
                    let dup = keeper
                        .try_clone()
                        .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF))))?;
                    GHOSTS.with(|g| g.borrow_mut().insert(*node, dup));
                    keeper
                }
            };
            // The node, unnamed now, opened again through its keeper.
            let again = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&keeper));
            match what {
                GhostNode::Fifo { data, .. } => {
                    write_all(&keeper, data).map_err(err)?;
                    open_fifo_end(&again, f.flags).map_err(err)?
                }
                _ => open(again.as_str(), flags, Mode::empty()).map_err(err)?,
            }
        }
        FileKind::Linked {
            handle_type,
            handle,
            mount,
        } => linked(&f.path, mount, *handle_type, handle, flags).map_err(err)?,
        FileKind::OfExited { pid } => of_exited(&f.path, *pid, flags).map_err(err)?,
        FileKind::MemfdOf { id, .. } => {
            let &(_, n) = memfds.iter().find(|m| m.0 == *id).ok_or_else(|| err(Errno::EBADF))?;
            open(format!("/proc/self/fd/{n}").as_str(), flags, Mode::empty()).map_err(err)?
        }
        FileKind::Memfd { name, contents } => memfd(name, contents, None).map_err(err)?,
        FileKind::SealedMemfd { name, contents, seals } => memfd(name, contents, Some(*seals)).map_err(err)?,
    };
    let pos = match f.dir_entries {
        Some(count) => {
            // Counted on a description of its own, from the start.
            let dir = open(
                f.path.as_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            let after = read_until(&dir, |n, _| n == count)
                .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?
                .map(|(_, offset)| offset);
            Some(after.ok_or_else(|| Error::DirChanged {
                path: f.path.clone(),
                read: count,
            })?)
        }
        None if f.pos > 0
            && (f.regular || nix::sys::stat::fstat(&fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)) =>
        {
            Some(f.pos)
        }
        None => None,
    };
    if let Some(pos) = pos {
        nix::unistd::lseek(&fd, pos as i64, nix::unistd::Whence::SeekSet).map_err(err)?;
    }
    Ok(fd)
}

/// Opens `path`, a file of /proc/`pid`, while a helper holds PID `pid`
/// (it must be free: the process had exited), then ends and reaps the
/// helper (see [`FileKind::OfExited`]). Runs in the container's PID 1.
fn of_exited(path: &str, pid: i32, flags: nix::fcntl::OFlag) -> std::result::Result<OwnedFd, Errno> {
    use crate::sys::{clone3, CloneOpts, Forked};
    let opts = CloneOpts {
        flags: 0,
        cgroup: None,
        set_tid: &[pid],
    };
    let helper = match clone3(&opts)? {
        // Ended by SIGKILL below; it runs nothing of ours meanwhile.
        Forked::Child => loop {
            nix::unistd::pause();
        },
        Forked::Parent(helper) => helper,
    };
    let opened = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty());
    let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
    nix::sys::wait::waitpid(helper, None)?;
    opened
}

/// Opens a file deleted under `path` and still linked under another name
/// (see [`FileKind::Linked`]): found by its handle on `mount`, linked at
/// `path` for the open (so that its fd's link reads "PATH (deleted)"),
/// then unlinked; if `path` is taken, opened by its handle alone.
fn linked(
    path: &str,
    mount: &str,
    handle_type: i32,
    handle: &[u8],
    flags: nix::fcntl::OFlag,
) -> std::result::Result<OwnedFd, Errno> {
    use nix::fcntl::{open, OFlag, AT_FDCWD};
    // (Not O_PATH: open_by_handle_at takes no O_PATH descriptor.)
    let m = open(
        mount,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let inode = crate::sys::open_by_handle(m.as_fd(), handle_type, handle)?;
    let again = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&inode));
    match nix::unistd::linkat(&inode, "", AT_FDCWD, path, nix::fcntl::AtFlags::AT_EMPTY_PATH) {
        Ok(()) => {
            let opened = open(path, flags, nix::sys::stat::Mode::empty());
            nix::unistd::unlink(path)?;
            opened
        }
        Err(Errno::EEXIST) => open(again.as_str(), flags, nix::sys::stat::Mode::empty()),
        Err(e) => Err(e),
    }
}

/// Opens an end of the FIFO at `path` with open(2) flags `flags`, without
/// blocking (a read-write open of it is held meanwhile).
fn open_fifo_end(path: &str, flags: i32) -> std::result::Result<OwnedFd, Errno> {
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    let opened = OFlag::from_bits_retain(flags & REOPEN_FLAGS) | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let fd = open(path, opened, nix::sys::stat::Mode::empty())?;
    fcntl(
        &fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags & !libc::O_ACCMODE)),
    )?;
    Ok(fd)
}

/// Makes a FIFO, directory or device node deleted while open again: under
/// its old name `path` if that is free (so that the links of its fds read
/// the same, "PATH (deleted)"), or else beside it or in /tmp; opens it,
/// gives it its permission bits and owner (`meta`), and removes it.
/// Returns a keeper opened on it, through which each open description is
/// opened (a FIFO's keeper is open for reading and writing, holding its
/// buffer and size).
fn make_node(path: &str, ino: u64, what: &GhostNode, meta: (u32, u32, u32)) -> std::result::Result<OwnedFd, Errno> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let wanted = std::path::Path::new(path);
    let dir = wanted
        .parent()
        .filter(|d| d.is_dir())
        .unwrap_or(std::path::Path::new("/tmp"));
    let name = match wanted.symlink_metadata() {
        Err(_) if dir == wanted.parent().unwrap_or(dir) => wanted.to_path_buf(),
        _ => dir.join(format!(".migrate-ghost-{ino}-{}", std::process::id())),
    };
    let private = Mode::from_bits_truncate(0o600);
    let keep = match what {
        GhostNode::Fifo { .. } => {
            nix::unistd::mkfifo(&name, private)?;
            OFlag::O_RDWR | OFlag::O_NONBLOCK
        }
        GhostNode::Directory => {
            nix::unistd::mkdir(&name, Mode::from_bits_truncate(0o700))?;
            OFlag::O_RDONLY | OFlag::O_DIRECTORY
        }
        GhostNode::CharDevice { rdev } => {
            nix::sys::stat::mknod(&name, nix::sys::stat::SFlag::S_IFCHR, private, *rdev)?;
            OFlag::O_PATH
        }
    };
    let (mode, uid, gid) = meta;
    let opened = open(&name, keep | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty()).and_then(|keeper| {
        if let GhostNode::Fifo { capacity, .. } = what {
            super::pipes::resize(&keeper, *capacity)?;
        }
        // Owner first: a change of owner clears set-id bits.
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &name,
            Some(uid.into()),
            Some(gid.into()),
            nix::unistd::FchownatFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &name,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        Ok(keeper)
    });
    // Removed whatever happened.
    let removed = match what {
        GhostNode::Directory => {
            nix::unistd::unlinkat(nix::fcntl::AT_FDCWD, &name, nix::unistd::UnlinkatFlags::RemoveDir)
        }
        _ => nix::unistd::unlink(&name),
    };
    let keeper = opened?;
    removed?;
    Ok(keeper)
}

/// A file deleted while open, made again (under its old name, then
/// unlinked; or unnamed, O_TMPFILE, in the directory of `path` or /tmp)
/// with `contents`, its permission bits and
/// owner where the image has them, and opened with `flags`.
fn ghost(
    path: &str,
    contents: &[u8],
    meta: Option<(u32, u32, u32)>,
    flags: nix::fcntl::OFlag,
) -> std::result::Result<OwnedFd, Errno> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let dir = std::path::Path::new(path)
        .parent()
        .filter(|d| d.is_dir())
        .unwrap_or(std::path::Path::new("/tmp"));
    // Under its old name, then unlinked, so that its links read the same
    // ("PATH (deleted)"); unnamed (O_TMPFILE) if the name is taken.
    let named = open(
        path,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    );
    let tmp = match named {
        Ok(fd) => {
            nix::unistd::unlink(path)?;
            fd
        }
        Err(_) => open(
            dir,
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?,
    };
    write_all(&tmp, contents)?;
    if let Some((mode, uid, gid)) = meta {
        // Owner first: a change of owner clears set-id bits.
        nix::unistd::fchown(&tmp, Some(uid.into()), Some(gid.into()))?;
        nix::sys::stat::fchmod(&tmp, Mode::from_bits_truncate(mode))?;
    }
    // The same unnamed file, with the flags it had.
    open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&tmp)).as_str(),
        flags,
        Mode::empty(),
    )
}

/// A deleted file made again unnamed with its size, holes and data
/// `extents` (see [`ghost`]).
fn ghost_sparse(
    path: &str,
    size: u64,
    extents: &[(u64, Vec<u8>)],
    meta: (u32, u32, u32),
    flags: nix::fcntl::OFlag,
) -> std::result::Result<OwnedFd, Errno> {
    let (mode, uid, gid) = meta;
    let tmp = ghost(path, &[], None, nix::fcntl::OFlag::O_RDWR)?;
    nix::unistd::ftruncate(&tmp, size as i64)?;
    for (off, bytes) in extents {
        let mut done = 0;
        while done < bytes.len() {
            done += nix::sys::uio::pwrite(&tmp, &bytes[done..], (*off + done as u64) as i64)?;
        }
    }
    // Owner first: a change of owner clears set-id bits.
    nix::unistd::fchown(&tmp, Some(uid.into()), Some(gid.into()))?;
    nix::sys::stat::fchmod(&tmp, nix::sys::stat::Mode::from_bits_truncate(mode))?;
    nix::fcntl::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&tmp)).as_str(),
        flags,
        nix::sys::stat::Mode::empty(),
    )
}

/// A memfd named `name` holding `contents`, made to allow sealing if
/// `sealable`; its position is 0.
pub fn memfd_again(name: &str, contents: &[u8], sealable: bool) -> std::result::Result<OwnedFd, Errno> {
    use nix::sys::memfd::MFdFlags;
    let cname = std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)?;
    let flags = match sealable {
        true => MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        false => MFdFlags::MFD_CLOEXEC,
    };
    let m = nix::sys::memfd::memfd_create(cname.as_c_str(), flags)?;
    // At offsets: the position stays at 0 (the caller sets the image's).
    let mut at = 0;
    while at < contents.len() {
        at += nix::sys::uio::pwrite(&m, &contents[at..], at as i64)?;
    }
    Ok(m)
}

/// A memfd of an image before files layout 6's [`FileKind::MemfdOf`]:
/// [`memfd_again`], sealed with `seals` if given.
fn memfd(name: &str, contents: &[u8], seals: Option<i32>) -> std::result::Result<OwnedFd, Errno> {
    let m = memfd_again(name, contents, seals.is_some())?;
    if let Some(s) = seals.filter(|s| *s != 0) {
        nix::fcntl::fcntl(
            &m,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_retain(s)),
        )?;
    }
    Ok(m)
}

thread_local! {
    /// Read-write opens of FIFOs, kept while the rest of a restore opens
    /// their ends (see [`release_keepers`]).
    static KEEPERS: std::cell::RefCell<Vec<OwnedFd>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Deleted nodes made again (see [`make_node`]), by their device and
    /// inode at checkpoint: every open description of one opens the same.
    static GHOSTS: std::cell::RefCell<std::collections::HashMap<(u64, u64), OwnedFd>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Closes the opens held while a restore opens files: FIFOs' read-write
/// opens, and the keepers of deleted nodes made again, once every open
/// description of them exists.
pub fn release_keepers() {
    KEEPERS.with(|k| k.borrow_mut().clear());
    GHOSTS.with(|g| g.borrow_mut().clear());
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> std::result::Result<(), Errno> {
    while !data.is_empty() {
        let n = nix::unistd::write(fd.as_fd(), data)?;
        data = &data[n..];
    }
    Ok(())
}
