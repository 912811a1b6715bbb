//! File descriptors: which object each fd of each process refers to, and
//! how to give every task the same table again.
//!
//! - files and devices: reopened by path with their flags and offset;
//! - the container's log: reopened at the restoring side's log path;
//! - pipes (`pipes`), unix sockets (`unix`), eventfd/timerfd/signalfd
//!   (`anonfd`): "objects", made once by the restored PID 1 before it forks,
//!   so that every task inherits them and shares them as before;
//! - epoll: rebuilt by its owner once its other fds are in place.
//!
//! The dump dispatches each fd through [`FD_TYPES`], one entry per type
//! of fd (the log, pipe ends, sockets, anonymous inodes, files by path):
//! the first that claims the fd by its link reads it into the image, with
//! a [`DumpCtx`] that knows the objects already seen.
//!
//! Anything else (io_uring, perf events, BPF...) is refused at checkpoint
//! time, naming the process and the fd, so that nothing is silently
//! dropped.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::anonfd::{self, AnonImage, EpollTarget};
use super::inet::{self, InetImage};
use super::pipes::{self, PipeImage};
use super::regfile::{self, FileImage};
use super::tcp::{self, TcpImage};
use super::unix::{self, UnixImage};
use crate::sys::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the container's fds would need {needed} descriptor numbers in one process of a restore (its fd numbers go up to {max_fd}, and the {objects} open files and other objects they share are made before the tree is forked, above them), more than a process may have here ({limit}, the hard limit of open files)")]
    TooManyFds {
        needed: u64,
        max_fd: i32,
        objects: u64,
        limit: u64,
    },
    #[error("process {pid} fd {fd}: {what}: {source}")]
    Proc {
        pid: i32,
        fd: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} (pid {ns_pid} in the container) fd {fd} is a {kind}, which migrate can not checkpoint yet")]
    Unsupported {
        pid: i32,
        ns_pid: i32,
        fd: i32,
        kind: String,
    },
    #[error("process {pid}: read a fresh socket's options in its network namespace: {source}")]
    SockOpts {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} fd {fd}: {what}: {source}")]
    Dump {
        pid: i32,
        fd: i32,
        what: &'static str,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Unix(#[from] unix::Error),
    #[error(transparent)]
    File(#[from] regfile::Error),
    #[error(transparent)]
    Inet(#[from] inet::Error),
    #[error(transparent)]
    Tcp(#[from] tcp::Error),
    #[error("reopen fd {fd} ({path}): {source}; files the container had open must exist at the same paths where it is restored")]
    Reopen {
        fd: i32,
        path: String,
        #[source]
        source: Errno,
    },
    #[error("process {pid}: fd {fd} in the image {reason}; the image is damaged")]
    BadFd { pid: i32, fd: i32, reason: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The highest descriptor number the kernel allows (the largest
/// fs.nr_open, minus one).
pub const FD_MAX: i32 = (i32::MAX & !63) - 1;

/// What an fd refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// File number `file` of the image (a path, a deleted file, a memfd).
    File { file: u32 },
    /// The container's log.
    Log,
    /// One end of pipe number `pipe` of the image.
    Pipe { pipe: u32, write: bool },
    /// Unix socket number `sock` of the image.
    Socket { sock: u32 },
    /// TCP or UDP socket number `sock` of the image.
    Inet { sock: u32 },
    /// Established TCP connection number `conn` of the image.
    Tcp { conn: u32 },
    /// eventfd, timerfd or signalfd number `obj` of the image.
    Anon { obj: u32 },
    /// An epoll instance with its interest list.
    Epoll { targets: Vec<EpollTarget> },
    /// A pidfd of process `pid` of the container (kinds::pidfd).
    Pidfd { pid: i32 },
    /// An epoll instance as [`FdKind::Epoll`], some of whose registrations
    /// were made through fd numbers closed (or reused) since: for each
    /// target, where its file is (files layout 6; before, such an epoll
    /// was refused).
    EpollVia {
        targets: Vec<EpollTarget>,
        via: Vec<TargetFile>,
    },
    /// An epoll instance, object number `obj` of the image
    /// ([`AnonImage::Epoll`]): one instance for every fd of it, in any
    /// process (a child inherited it, or it was duplicated), as it was;
    /// with its interest list and where this holder has each target's file
    /// (as [`FdKind::EpollVia`]). Each holder registers the targets it has,
    /// and what another holder registered already is there (files layout 6,
    /// a variant at the end; before, one instance per fd).
    EpollOf {
        obj: u32,
        targets: Vec<EpollTarget>,
        via: Vec<TargetFile>,
    },
    /// A pidfd of process `pid` of the container that is the same open
    /// file description as fd `fd` of process `holder` (a
    /// [`FdKind::Pidfd`] of a process rebuilt earlier, or of this one at
    /// a lower number): a child inherited it, or it was duplicated (files
    /// layout 6, a variant at the end; before, one description per fd).
    PidfdAs { pid: i32, holder: i32, fd: i32 },
}

/// Where the holder of an epoll has the file of one of its registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetFile {
    /// At the number the registration was made through.
    AtNumber,
    /// At this fd: the number was closed or reused since. The restore
    /// registers the file under its old number.
    Fd(i32),
    /// Nowhere: another holder of the epoll (which a child inherited) has
    /// it; this holder's copy is built without it.
    NotHere,
}

impl FdKind {
    /// An epoll's interest list, and for each target where its file is
    /// (empty: every target's at its number).
    pub fn epoll(&self) -> Option<(&[EpollTarget], &[TargetFile])> {
        match self {
            FdKind::Epoll { targets } => Some((targets, &[])),
            FdKind::EpollVia { targets, via } | FdKind::EpollOf { targets, via, .. } => Some((targets, via)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdImage {
    pub fd: i32,
    /// open(2) flags from fdinfo, O_CLOEXEC included.
    pub flags: i32,
    pub kind: FdKind,
}

/// The section `files`: every process's fds and the objects behind them.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "files";
    const VERSION: u32 = 6;
    type State = FilesImage;
    type Error = Error;

    /// Layout 5 had no options of unix sockets and TCP connections, and no
    /// directory positions; layout 4 (and 3) no timerfd settime flags and no
    /// inet socket options either.
    fn decode(bytes: &[u8]) -> crate::image::Result<FilesImage> {
        let unix = |s: Vec<unix::UnixImageV5>| s.into_iter().map(UnixImage::from).collect();
        let tcp = |t: Vec<tcp::TcpImageV5>| t.into_iter().map(TcpImage::from).collect();
        let files = |f: Vec<regfile::FileImageV5>| f.into_iter().map(FileImage::from).collect();
        match crate::image::open_section(Self::SECTION, bytes)? {
            (5, payload) => crate::image::decode_payload(Self::SECTION, payload).map(|old: FilesImageV5| FilesImage {
                procs: old.procs,
                pipes: old.pipes,
                sockets: unix(old.sockets),
                anon: old.anon,
                files: files(old.files),
                inet: old.inet,
                tcp: tcp(old.tcp),
            }),
            _ => crate::image::decode_versioned(Self::SECTION, bytes, Self::VERSION, |old: FilesImageV4| FilesImage {
                procs: old.procs,
                pipes: old.pipes,
                sockets: unix(old.sockets),
                anon: old.anon.into_iter().map(AnonImage::from).collect(),
                files: files(old.files),
                inet: old.inet.into_iter().map(InetImage::from).collect(),
                tcp: tcp(old.tcp),
            }),
        }
    }

    fn validate(state: &FilesImage) -> Result<()> {
        state.check()
    }
}

/// The fds of every process, and the objects they share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesImage {
    pub procs: Vec<(i32, Vec<FdImage>)>,
    pub pipes: Vec<PipeImage>,
    pub sockets: Vec<UnixImage>,
    pub anon: Vec<AnonImage>,
    pub files: Vec<FileImage>,
    pub inet: Vec<InetImage>,
    pub tcp: Vec<TcpImage>,
}

/// [`FilesImage`] as layout 5 wrote it.
#[derive(Deserialize)]
struct FilesImageV5 {
    procs: Vec<(i32, Vec<FdImage>)>,
    pipes: Vec<PipeImage>,
    sockets: Vec<unix::UnixImageV5>,
    anon: Vec<AnonImage>,
    files: Vec<regfile::FileImageV5>,
    inet: Vec<InetImage>,
    tcp: Vec<tcp::TcpImageV5>,
}

/// [`FilesImage`] as layout 4 (and 3) wrote it.
#[derive(Deserialize)]
struct FilesImageV4 {
    procs: Vec<(i32, Vec<FdImage>)>,
    pipes: Vec<PipeImage>,
    sockets: Vec<unix::UnixImageV5>,
    anon: Vec<anonfd::AnonImageV4>,
    files: Vec<regfile::FileImageV5>,
    inet: Vec<inet::InetImageV4>,
    tcp: Vec<tcp::TcpImageV5>,
}

/// What [`dump_all`] does with an established TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstablishedTcp {
    /// Fails, naming it.
    Refuse,
    /// Saves it with TCP_REPAIR.
    Repair,
    /// Saves it as a TCP socket that is not connected.
    Close,
}

/// Duplicates of the connections put in repair mode by a dump. Unless
/// disarmed (the container is killed), they leave repair mode again when
/// dropped, so that a container that keeps running keeps its connections.
#[derive(Default)]
pub struct Repaired(Vec<OwnedFd>);

impl Repaired {
    pub fn disarm(&mut self) {
        self.0.clear();
    }
}

impl Drop for Repaired {
    fn drop(&mut self) {
        for fd in &self.0 {
            tcp::leave_repair(fd);
        }
    }
}

impl FilesImage {
    pub fn of(&self, pid: i32) -> &[FdImage] {
        self.procs
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[])
    }

    /// How many objects PID 1 of a restore makes before it forks (each an
    /// fd above every number of the image).
    pub fn objects(&self) -> u64 {
        (self.files.len()
            + 2 * self.pipes.len()
            + self.sockets.len()
            + self.anon.len()
            + self.inet.len()
            + self.tcp.len()) as u64
    }

    /// Refuses an image whose restore would need more fd numbers in one
    /// process than `limit` (the hard limit of open files): its numbers,
    /// its objects above them, and a margin for the restore's own fds
    /// (shared memory, the log, a pipe).
    pub fn check_room(&self, limit: u64, extra: u64) -> Result<()> {
        let (max_fd, objects) = (self.max_fd(), self.objects());
        let needed = max_fd.max(100) as u64 + 1 + objects + extra + 16;
        if needed > limit {
            return Err(Error::TooManyFds {
                needed,
                max_fd,
                objects,
                limit,
            });
        }
        Ok(())
    }

    pub fn max_fd(&self) -> i32 {
        self.procs
            .iter()
            .flat_map(|(_, f)| f.iter().map(|f| f.fd))
            .max()
            .unwrap_or(2)
    }

    /// Checks the descriptor numbers, which restore counts above.
    pub fn check(&self) -> Result<()> {
        for (i, (pid, fds)) in self.procs.iter().enumerate() {
            let mut numbers = std::collections::HashSet::new();
            for f in fds {
                let bad = |reason| Error::BadFd {
                    pid: *pid,
                    fd: f.fd,
                    reason,
                };
                if !(0..=FD_MAX).contains(&f.fd) {
                    return Err(bad("is not a descriptor number"));
                }
                if !numbers.insert(f.fd) {
                    return Err(bad("is listed twice"));
                }
                let (index, count) = match &f.kind {
                    FdKind::File { file } => (*file, self.files.len()),
                    FdKind::Pipe { pipe, .. } => (*pipe, self.pipes.len()),
                    FdKind::Socket { sock } => (*sock, self.sockets.len()),
                    FdKind::Inet { sock } => (*sock, self.inet.len()),
                    FdKind::Tcp { conn } => (*conn, self.tcp.len()),
                    FdKind::Anon { obj } => (*obj, self.anon.len()),
                    FdKind::Pidfd { pid } | FdKind::PidfdAs { pid, .. } if *pid <= 0 => {
                        return Err(bad("is a pidfd of no process"))
                    }
                    FdKind::PidfdAs {
                        pid: target,
                        holder,
                        fd,
                    } => {
                        // Made before this one: by a process rebuilt
                        // earlier, or at a lower number of this one.
                        let first = self.procs[..=i]
                            .iter()
                            .find(|(p, _)| p == holder)
                            .and_then(|(p, hf)| hf.iter().find(|h| h.fd == *fd && (p != pid || h.fd < f.fd)));
                        match first.map(|h| &h.kind) {
                            Some(FdKind::Pidfd { pid: p }) if p == target => continue,
                            _ => return Err(bad("is a pidfd the same as one the image does not hold before it")),
                        }
                    }
                    FdKind::EpollVia { targets, via } | FdKind::EpollOf { targets, via, .. } => {
                        let own = |v: &TargetFile| match v {
                            TargetFile::Fd(v) => fds.iter().any(|o| o.fd == *v && o.fd != f.fd),
                            _ => true,
                        };
                        if via.len() != targets.len() || !via.iter().all(own) {
                            return Err(bad(
                                "is an epoll whose registrations name fds the process does not have",
                            ));
                        }
                        match f.kind {
                            FdKind::EpollOf { obj, .. } => match self.anon.get(obj as usize) {
                                Some(AnonImage::Epoll) => continue,
                                _ => return Err(bad("is an epoll whose object is not an epoll")),
                            },
                            _ => continue,
                        }
                    }
                    FdKind::Log | FdKind::Epoll { .. } | FdKind::Pidfd { .. } => continue,
                };
                if index as usize >= count {
                    return Err(bad("names an object the image does not hold"));
                }
                if let FdKind::File { file } = f.kind {
                    if !self.files[file as usize].extents_fit() {
                        return Err(bad("is a file whose data lies outside its size"));
                    }
                    if let Some(why) = self.files[file as usize].unsafe_node() {
                        return Err(bad(why));
                    }
                }
                let opts = match f.kind {
                    FdKind::Inet { sock } => Some(&self.inet[sock as usize].opts),
                    FdKind::Tcp { conn } => Some(&self.tcp[conn as usize].opts),
                    FdKind::Socket { sock } => Some(&self.sockets[sock as usize].opts),
                    _ => None,
                };
                if let Some(opts) = opts {
                    if !super::sockopts::check(opts) {
                        return Err(bad("is a socket with options this build does not know"));
                    }
                }
                if let FdKind::Anon { obj } = f.kind {
                    if !self.anon[obj as usize].known() {
                        return Err(bad("is a timerfd with settime flags this build does not know"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The IDs of every mount in the mount namespaces of `procs` (host PIDs),
/// from their mountinfo (read once per namespace).
fn container_mounts(procs: &[(i32, i32)]) -> Result<std::collections::HashSet<u64>> {
    let mut seen_ns = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for &(pid, _) in procs {
        // A process that ended meanwhile (a running tree) has none to add.
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if !seen_ns.insert(ns) {
            continue;
        }
        if let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
            ids.extend(mount_ids(&info));
        }
    }
    Ok(ids)
}

/// The mount IDs of a mountinfo text.
fn mount_ids(mountinfo: &str) -> impl Iterator<Item = u64> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().next().and_then(|id| id.parse::<u64>().ok()))
}

/// The mount IDs of the host's mount namespace (this process's), where a
/// file outside the container's mounts is reopened.
fn host_mounts() -> std::collections::HashSet<u64> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_ids(&info).collect()
}

/// The mounts a file held open may be on: the container's (every
/// process's mount table; a chrooted one sees only part of it) and the
/// host's.
pub struct KnownMounts {
    container: std::collections::HashSet<u64>,
    host: std::collections::HashSet<u64>,
}

impl KnownMounts {
    /// Of processes `procs` (host PID, PID in the container).
    pub fn of(procs: &[(i32, i32)]) -> Result<Self> {
        Ok(Self {
            container: container_mounts(procs)?,
            host: host_mounts(),
        })
    }

    /// Whether a file (its fdinfo text) is on a mount in neither table:
    /// detached (`umount -l`) while the file stayed open, or another
    /// namespace's. Its path leads nowhere at restore.
    fn unreachable(&self, info: &str) -> bool {
        fdinfo_mnt_id(info).is_some_and(|m| !self.container.contains(&m) && !self.host.contains(&m))
    }
}

const UNREACHABLE_MOUNT: &str =
    "file on a mount detached since it was opened (umount -l) or in another mount namespace";

/// The "mnt_id:" of an fdinfo text.
pub(crate) fn fdinfo_mnt_id(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
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

fn bracket_id(target: &str, prefix: &str) -> Option<u64> {
    target
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The anon_inode kinds migrate carries (besides eventpoll).
const ANON_CARRIED: [&str; 6] = ["eventpoll", "eventfd", "timerfd", "signalfd", "inotify", "pidfd"];

/// What a unix socket with descriptors in flight is refused as.
const FDS_IN_FLIGHT: &str = "unix socket whose queue holds file descriptors in flight (SCM_RIGHTS)";

/// Refuses, while the container runs, an fd migrate never carries (see
/// [`refuse_fd`]), a file on a mount it can not reach (`mounts`), a unix
/// socket with descriptors in flight, a TCP or UDP socket holding what a
/// restore would lose (`inet`: sock_diag of the container's network
/// namespace, [`inet::Diag::waiting`]), or one whose contents would be
/// over `file_cap`, before anything is stopped. The dump checks each fd
/// again as it reads it.
pub fn refuse_uncarried(pid: i32, ns_pid: i32, file_cap: u64, mounts: &KnownMounts, sockets: &Sockets) -> Result<()> {
    for fd in list_fds(pid)? {
        // An fd closed meanwhile holds nothing.
        let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let target = target.to_string_lossy();
        refuse_fd(pid, ns_pid, fd, &target, &info)?;
        // A memfd lives on the kernel's internal mount, in no table.
        if target.starts_with('/') && !target.starts_with("/memfd:") && mounts.unreachable(&info) {
            // Or on a file system of the kernel's own that no path reaches.
            let what = special_fs(pid, fd).unwrap_or(UNREACHABLE_MOUNT);
            return Err(Error::Unsupported {
                pid,
                ns_pid,
                fd,
                kind: format!("{what} ({target})"),
            });
        }
        if let Some(ino) = bracket_id(&target, "socket:") {
            let sock = steal(pid, fd).ok();
            // Options first: the peek for fds in flight starts at a peek offset.
            let kind = sock
                .as_ref()
                .and_then(uncarried_option)
                .or_else(|| match sockets.inet.get(&ino) {
                    Some(d) => d.waiting(),
                    None => sockets.unix.get(&ino).and_then(unix::Diag::uncarried).or_else(|| {
                        sock.as_ref()
                            .is_some_and(unix::holds_fds_in_flight)
                            .then(|| FDS_IN_FLIGHT.into())
                    }),
                });
            if let Some(kind) = kind {
                return Err(Error::Unsupported { pid, ns_pid, fd, kind });
            }
        }
        // Contents the image would carry, over the cap.
        regfile::refuse_too_large(pid, fd, &target, file_cap)?;
    }
    Ok(())
}

/// What sock_diag says of the sockets in a network namespace.
pub struct Sockets {
    pub inet: HashMap<u64, inet::Diag>,
    pub unix: HashMap<u64, unix::Diag>,
}

impl Sockets {
    /// The sockets of the network namespace of process `pid`.
    pub fn of(pid: i32) -> Result<Self> {
        Ok(Self {
            inet: inet::diag(pid)?,
            unix: unix::diag(pid)?,
        })
    }
}

/// Refuses fd `fd` of process `pid` (link `target`, fdinfo `info`) if it
/// is of a kind never carried (io_uring, perf events, BPF objects,
/// userfaultfd...), a deleted block device, a file deleted under one name
/// and linked under another, or a file with a lease on it.
fn refuse_fd(pid: i32, ns_pid: i32, fd: i32, target: &str, info: &str) -> Result<()> {
    let unsupported = |kind: String| Error::Unsupported { pid, ns_pid, fd, kind };
    if target == "/secretmem (deleted)" {
        if let Some(what) = special_fs(pid, fd) {
            return Err(unsupported(format!("{what} ({target})")));
        }
    }
    if target.starts_with('/') && !target.starts_with("/memfd:") && target.ends_with(" (deleted)") {
        if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            use std::os::unix::fs::FileTypeExt;
            let ft = meta.file_type();
            use std::os::unix::fs::MetadataExt;
            // Deleted under this name, but still linked under another: it
            // is found again by its file handle (kinds::regfile), if its
            // file system gives one.
            if !ft.is_dir() && meta.nlink() > 0 {
                // (Only a regular file is opened here: a FIFO's open would
                // wait for a writer.)
                let handle = ft
                    .is_file()
                    .then(|| std::fs::File::open(format!("/proc/{pid}/fd/{fd}")).ok())
                    .flatten()
                    .and_then(|f| crate::sys::name_to_handle(f.as_fd()).ok());
                if handle.is_none() {
                    return Err(unsupported(format!(
                        "file deleted under this name and still linked under another, which migrate can not find again ({target})"
                    )));
                }
            }
            // Regular files, FIFOs, directories and memory devices are made
            // again (kinds::regfile; other devices are refused below).
            if ft.is_block_device() {
                return Err(unsupported(format!("block device node that was deleted ({target})")));
            }
            if !(ft.is_file() || ft.is_dir() || ft.is_fifo() || ft.is_char_device()) {
                return Err(unsupported(format!("special file that was deleted ({target})")));
            }
        }
    }
    // A file of /proc/N whose process exited, N taken since by another:
    // a restore would open the other's (one of an N that is free is made
    // again: kinds::regfile::FileKind::OfExited).
    if regfile::of_other_process(pid, fd, target) {
        return Err(unsupported(format!(
            "file of a process that exited, whose PID another process has now ({target})"
        )));
    }
    // Locks are carried (kinds::fdattrs); leases are not.
    super::fdattrs::locks_of(info).map_err(unsupported)?;
    // A packet-mode pipe keeps each write's boundary in its buffer, which
    // the dump's tee does not see.
    if target.starts_with("pipe:[") && parse_fdinfo(info).1 & libc::O_DIRECT != 0 {
        return Err(unsupported(format!(
            "packet-mode pipe (O_DIRECT), whose message boundaries migrate does not carry yet ({target})"
        )));
    }
    if target.starts_with('/') {
        if let Some(what) = stateful_device(&format!("/proc/{pid}/fd/{fd}")) {
            return Err(unsupported(format!("{what} ({target})")));
        }
    }
    if let Some(anon) = target.strip_prefix("anon_inode:") {
        let anon = anon.trim_matches(|c| c == '[' || c == ']');
        if !ANON_CARRIED.contains(&anon) {
            return Err(unsupported(anon.to_string()));
        }
        if anon == "pidfd" {
            if let Some(why) = super::pidfd::uncarried(pid, info) {
                return Err(unsupported(why));
            }
        }
        // Watches whose files can not be found again (deleted).
        if anon == "inotify" {
            anonfd::dump_inotify(pid, info).map_err(unsupported)?;
            // Events queued but not read yet: the kernel offers no way to
            // queue them again.
            let queued = steal(pid, fd)
                .ok()
                .and_then(|f| crate::sys::ioctl_int(f.as_fd(), libc::FIONREAD as libc::c_ulong).ok())
                .unwrap_or(0);
            if queued > 0 {
                return Err(unsupported(format!(
                    "inotify instance with {queued} bytes of events not read yet"
                )));
            }
        }
    }
    Ok(())
}

/// What a character device held open is, if reopening it by its path
/// would not give back the same state: anything but the memory devices
/// (null, zero, full, random, urandom). A terminal's pair, line
/// discipline and buffered input, a tun device's interface, a FUSE
/// connection live in the open file.
fn stateful_device(fd_path: &str) -> Option<&'static str> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(fd_path).ok()?;
    if !meta.file_type().is_char_device() {
        return None;
    }
    match libc::major(meta.rdev()) {
        _ if regfile::memory_device(meta.rdev()) => None,
        2..=5 | 128..=143 => Some("terminal (a pty or tty)"),
        _ => Some("character device whose state lives in the open file"),
    }
}

/// The fd numbers of process `pid`, in order.
pub(crate) fn list_fds(pid: i32) -> Result<Vec<i32>> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|source| Error::Proc {
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
    Ok(fds)
}

/// A process's fd to read an object's state through.
type Holder = (i32, i32);

/// One fd of a process, as the dump finds it.
struct OpenFd<'a> {
    pid: i32,
    ns_pid: i32,
    fd: i32,
    /// Its link in /proc/PID/fd, as a path and as text.
    target: &'a std::path::Path,
    path: &'a str,
    info: &'a str,
    flags: i32,
    pos: u64,
}

impl OpenFd<'_> {
    /// The refusal of this fd, naming what it is.
    fn unsupported(&self, kind: String) -> Error {
        Error::Unsupported {
            pid: self.pid,
            ns_pid: self.ns_pid,
            fd: self.fd,
            kind,
        }
    }
}

/// What the dump of every fd shares: the image being built, the objects
/// already seen (an object several fds refer to is dumped once), and the
/// container's sockets as sock_diag lists them.
struct DumpCtx<'a> {
    procs: &'a [(i32, i32)],
    log: &'a std::path::Path,
    netns_pid: i32,
    file_cap: u64,
    tcp_mode: EstablishedTcp,
    repaired: &'a mut Repaired,
    ns_pid_of: &'a dyn Fn(i32) -> Option<i32>,
    img: FilesImage,
    diag: HashMap<u64, unix::Diag>,
    inet_diag: HashMap<u64, inet::Diag>,
    /// A fresh socket's options, by family and type.
    opt_defaults: HashMap<(i32, i32), Vec<super::sockopts::SockOpt>>,
    tcp_idx: HashMap<u64, u32>,
    inet_idx: HashMap<u64, u32>,
    pipe_idx: HashMap<u64, (u32, Option<Holder>)>,
    sock_idx: HashMap<u64, (u32, Holder)>,
    /// The eventfd, timerfd, signalfd, inotify and epoll descriptions
    /// dumped so far, with their object numbers.
    anon_holders: Descriptions<u32>,
    /// Each pidfd description dumped so far.
    pidfd_holders: Descriptions<()>,
    /// The files dumped so far, with their numbers.
    file_holders: Descriptions<u32>,
    fifos_seen: std::collections::HashSet<u64>,
    /// Memfds stored with their contents, by object id.
    memfds_seen: std::collections::HashSet<u64>,
    /// Which registrations of each epoll object a holder dumped so far
    /// makes again.
    epoll_added: HashMap<u32, Vec<bool>>,
    reachable: KnownMounts,
}

/// A type of fd: which fds it takes (by their link), and how one is read
/// into the image. [`FD_TYPES`] lists them; the first that takes an fd
/// dumps it, and an fd none takes is refused.
struct FdType {
    claims: fn(&DumpCtx<'_>, &OpenFd<'_>) -> bool,
    dump: fn(&mut DumpCtx<'_>, &OpenFd<'_>) -> Result<FdKind>,
}

/// Every type of fd the dump carries, in the order they are tried.
const FD_TYPES: [FdType; 5] = [
    FdType {
        claims: |c, f| f.target == c.log,
        dump: |_, _| Ok(FdKind::Log),
    },
    FdType {
        claims: |_, f| bracket_id(f.path, "pipe:").is_some(),
        dump: dump_pipe_end,
    },
    FdType {
        claims: |_, f| bracket_id(f.path, "socket:").is_some(),
        dump: dump_socket,
    },
    FdType {
        claims: |_, f| f.path.starts_with("anon_inode:"),
        dump: dump_anon_inode,
    },
    FdType {
        claims: |_, f| f.path.starts_with('/'),
        dump: dump_file,
    },
];

/// Reads the fd tables of `procs` (host pid, container pid) and the state
/// of every object they refer to. `netns_pid` is a process of the
/// container (for its network namespace).
pub fn dump_all(
    procs: &[(i32, i32)],
    log: &std::path::Path,
    netns_pid: i32,
    file_cap: u64,
    tcp_mode: EstablishedTcp,
    repaired: &mut Repaired,
    ns_pid_of: &dyn Fn(i32) -> Option<i32>,
) -> Result<FilesImage> {
    let mut ctx = DumpCtx {
        procs,
        log,
        netns_pid,
        file_cap,
        tcp_mode,
        repaired,
        ns_pid_of,
        img: FilesImage::default(),
        diag: unix::diag(netns_pid)?,
        inet_diag: inet::diag(netns_pid)?,
        opt_defaults: HashMap::new(),
        tcp_idx: HashMap::new(),
        inet_idx: HashMap::new(),
        pipe_idx: HashMap::new(),
        sock_idx: HashMap::new(),
        anon_holders: Descriptions::default(),
        pidfd_holders: Descriptions::default(),
        file_holders: Descriptions::default(),
        fifos_seen: std::collections::HashSet::new(),
        memfds_seen: std::collections::HashSet::new(),
        epoll_added: HashMap::new(),
        reachable: KnownMounts::of(procs)?,
    };
    for &(pid, ns_pid) in procs {
        let dir = format!("/proc/{pid}/fd");
        let mut out = Vec::new();
        for fd in list_fds(pid)? {
            let proc_err = |what| move |source| Error::Proc { pid, fd, what, source };
            let target = std::fs::read_link(format!("{dir}/{fd}")).map_err(proc_err("readlink"))?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).map_err(proc_err("fdinfo"))?;
            let (pos, flags) = parse_fdinfo(&info);
            let path = target.to_string_lossy().into_owned();
            refuse_fd(pid, ns_pid, fd, &path, &info)?;
            let open = OpenFd {
                pid,
                ns_pid,
                fd,
                target: &target,
                path: &path,
                info: &info,
                flags,
                pos,
            };
            let kind = match FD_TYPES.iter().find(|t| (t.claims)(&ctx, &open)) {
                Some(t) => (t.dump)(&mut ctx, &open)?,
                None => return Err(open.unsupported(describe(&path))),
            };
            out.push(FdImage { fd, flags, kind });
        }
        ctx.img.procs.push((ns_pid, out));
    }
    dump_pipes(&mut ctx)?;
    dump_unix_sockets(&mut ctx)?;
    // A restore here would fail for want of fd numbers: refused now, while
    // the container can still go on.
    let (_, hard) = crate::sys::rlimit(libc::RLIMIT_NOFILE).unwrap_or((0, u64::MAX));
    ctx.img.check_room(hard, 0)?;
    Ok(ctx.img)
}

/// One end of a pipe: the pipe is numbered by its inode; its contents are
/// read once every fd is known ([`dump_pipes`]).
fn dump_pipe_end(ctx: &mut DumpCtx<'_>, f: &OpenFd<'_>) -> Result<FdKind> {
    let ino = bracket_id(f.path, "pipe:").unwrap_or(0);
    let n = ctx.pipe_idx.len() as u32;
    let entry = ctx.pipe_idx.entry(ino).or_insert((n, None));
    let write = f.flags & libc::O_ACCMODE == libc::O_WRONLY;
    if !write && entry.1.is_none() {
        entry.1 = Some((f.pid, f.fd));
    }
    Ok(FdKind::Pipe { pipe: entry.0, write })
}

/// A socket: a TCP or UDP one (from inet_diag), or a unix one (from
/// unix_diag, its queue read once every fd is known:
/// [`dump_unix_sockets`]). Options a program set that are not carried are
/// refused.
fn dump_socket(ctx: &mut DumpCtx<'_>, f: &OpenFd<'_>) -> Result<FdKind> {
    let ino = bracket_id(f.path, "socket:").unwrap_or(0);
    if let Some(why) = steal(f.pid, f.fd).ok().as_ref().and_then(uncarried_option) {
        return Err(f.unsupported(why));
    }
    if let Some(d) = ctx
        .inet_diag
        .get(&ino)
        .filter(|d| d.tcp && d.state == inet::TCP_ESTABLISHED)
        .cloned()
    {
        return dump_established(ctx, f, ino, &d);
    }
    if let Some(d) = ctx.inet_diag.get(&ino).cloned() {
        if let Some(what) = d.waiting() {
            return Err(f.unsupported(what));
        }
        if !d.supported() {
            return Err(f.unsupported(format!(
                "{} (established TCP connections are not supported yet)",
                d.describe()
            )));
        }
        let sock = match ctx.inet_idx.get(&ino) {
            Some(i) => *i,
            None => {
                let dup = steal(f.pid, f.fd)?;
                let opts =
                    super::sockopts::dump_cached(dup.as_fd(), ctx.netns_pid, inet::fresh(&d), &mut ctx.opt_defaults)
                        .map_err(|source| Error::SockOpts {
                            pid: ctx.netns_pid,
                            source,
                        })?;
                ctx.img.inet.push(inet::dump(&d, &dup, opts)?);
                let i = ctx.img.inet.len() as u32 - 1;
                ctx.inet_idx.insert(ino, i);
                i
            }
        };
        return Ok(FdKind::Inet { sock });
    }
    if !ctx.diag.contains_key(&ino) {
        return Err(f.unsupported(inet::describe_unlisted(&steal(f.pid, f.fd)?)));
    }
    let n = ctx.sock_idx.len() as u32;
    Ok(FdKind::Socket {
        sock: ctx.sock_idx.entry(ino).or_insert((n, (f.pid, f.fd))).0,
    })
}

/// An established TCP connection, as `--tcp-established` / `--tcp-close`
/// say: in repair mode (its queues and sequence numbers), as a closed
/// socket, or refused.
fn dump_established(ctx: &mut DumpCtx<'_>, f: &OpenFd<'_>, ino: u64, d: &inet::Diag) -> Result<FdKind> {
    match ctx.tcp_mode {
        EstablishedTcp::Refuse => Err(f.unsupported(format!(
            "{}; checkpoint and restore with --tcp-established to keep it, or --tcp-close to restore it closed",
            d.describe()
        ))),
        EstablishedTcp::Repair => {
            let conn = match ctx.tcp_idx.get(&ino) {
                Some(i) => *i,
                None => {
                    let dup = steal(f.pid, f.fd)?;
                    let opts =
                        super::sockopts::dump_cached(dup.as_fd(), ctx.netns_pid, inet::fresh(d), &mut ctx.opt_defaults)
                            .map_err(|source| Error::SockOpts {
                                pid: ctx.netns_pid,
                                source,
                            })?;
                    let t = tcp::dump(&dup, d.local, d.remote, opts)?;
                    ctx.repaired.0.push(dup);
                    ctx.img.tcp.push(t);
                    let i = ctx.img.tcp.len() as u32 - 1;
                    ctx.tcp_idx.insert(ino, i);
                    i
                }
            };
            Ok(FdKind::Tcp { conn })
        }
        EstablishedTcp::Close => {
            // A TCP socket that is not connected.
            ctx.img.inet.push(InetImage {
                tcp: true,
                v6: d.local.is_ipv6(),
                state: inet::TCP_CLOSE,
                local: std::net::SocketAddr::new(d.local.ip(), 0),
                remote: std::net::SocketAddr::new(d.remote.ip(), 0),
                backlog: 1,
                reuseaddr: false,
                reuseport: false,
                v6only: false,
                opts: Vec::new(),
            });
            Ok(FdKind::Inet {
                sock: ctx.img.inet.len() as u32 - 1,
            })
        }
    }
}

/// Where the holder of epoll `f` has the file of each of its registrations
/// (`targets`, in fdinfo order). A registration whose file the holder has
/// under no number is refused, unless another holder of the epoll has it
/// at its number.
fn epoll_via(ctx: &DumpCtx<'_>, f: &OpenFd<'_>, targets: &[EpollTarget]) -> Result<Vec<TargetFile>> {
    let (pid, fd) = (f.pid, f.fd);
    let inodes = anonfd::epoll_target_inodes(f.info);
    // kcmp where the kernel has it, else the inode at the number.
    let is = |p: i32, e: i32, n: i32, toff: u32| {
        crate::sys::epoll_target_is(p, e, pid, fd, n, toff).unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            let ino = inodes.iter().find(|(t, _)| *t == n).map(|(_, i)| *i);
            std::fs::metadata(format!("/proc/{p}/fd/{e}")).is_ok_and(|m| Some(m.ino()) == ino)
        })
    };
    let own = list_fds(pid)?;
    let mut seen: HashMap<i32, u32> = HashMap::new();
    let mut via = Vec::with_capacity(targets.len());
    for t in targets {
        let n = t.fd;
        let toff = *seen.entry(n).and_modify(|k| *k += 1).or_insert(0);
        if is(pid, n, n, toff) {
            via.push(TargetFile::AtNumber);
            continue;
        }
        if let Some(e) = own.iter().copied().find(|&e| e != n && is(pid, e, n, toff)) {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{e}")).unwrap_or_default();
            // A pidfd holds a placeholder while the epolls are built.
            if link.to_string_lossy() == "anon_inode:[pidfd]" {
                return Err(f.unsupported(format!(
                    "epoll with a pidfd registered through fd {n}, which is closed now or another file"
                )));
            }
            via.push(TargetFile::Fd(e));
            continue;
        }
        let elsewhere = ctx.procs.iter().any(|&(q, _)| {
            q != pid
                && list_fds(q)
                    .unwrap_or_default()
                    .into_iter()
                    .any(|e| crate::sys::same_file(pid, fd, q, e).unwrap_or(false) && is(q, n, n, toff))
        });
        if !elsewhere {
            return Err(f.unsupported(format!(
                "epoll with a registration made through fd {n}, whose file no fd of the process holds any more"
            )));
        }
        via.push(TargetFile::NotHere);
    }
    Ok(via)
}

/// An anonymous inode: epoll, pidfd, eventfd, timerfd, signalfd, inotify
/// (any other is refused by its name).
fn dump_anon_inode(ctx: &mut DumpCtx<'_>, f: &OpenFd<'_>) -> Result<FdKind> {
    let anon = f
        .path
        .strip_prefix("anon_inode:")
        .unwrap_or(f.path)
        .trim_matches(|c| c == '[' || c == ']');
    let pid = f.pid;
    match anon {
        // One instance for all its fds (a child inherited it, or it was
        // duplicated), which each holder fills with what it holds.
        // A registration is made again by the first holder (in tree
        // order) that has its file: the one that made it, most likely (a
        // signalfd's readiness follows the signals of whoever added it).
        "eventpoll" => {
            let targets = anonfd::parse_epoll(f.info);
            let mut via = epoll_via(ctx, f, &targets)?;
            let obj = anon_object(ctx, f, || Ok(AnonImage::Epoll))?;
            let added = ctx.epoll_added.entry(obj).or_insert_with(|| vec![false; targets.len()]);
            for (v, done) in via.iter_mut().zip(added.iter_mut()) {
                match (*done, *v) {
                    (true, _) => *v = TargetFile::NotHere,
                    (false, TargetFile::NotHere) => {}
                    (false, _) => *done = true,
                }
            }
            Ok(FdKind::EpollOf { obj, targets, via })
        }
        "pidfd" => {
            let target = super::pidfd::target(f.info).and_then(ctx.ns_pid_of);
            let pid = target.ok_or_else(|| f.unsupported("pidfd of a process outside the container".into()))?;
            match ctx.pidfd_holders.find(f.pid, f.fd) {
                Ok(((p, h), ())) => {
                    let holder = (ctx.ns_pid_of)(p)
                        .ok_or_else(|| f.unsupported("pidfd also held outside the container".into()))?;
                    Ok(FdKind::PidfdAs { pid, holder, fd: h })
                }
                Err(at) => {
                    ctx.pidfd_holders.insert(at, (f.pid, f.fd), ());
                    Ok(FdKind::Pidfd { pid })
                }
            }
        }
        "eventfd" | "timerfd" | "signalfd" | "inotify" => {
            let obj = anon_object(ctx, f, || {
                if anon == "inotify" {
                    anonfd::dump_inotify(pid, f.info).map_err(|k| f.unsupported(k))
                } else {
                    anonfd::parse(anon, f.info).ok_or_else(|| f.unsupported(format!("{anon} with unreadable state")))
                }
            })?;
            Ok(FdKind::Anon { obj })
        }
        other => Err(f.unsupported(other.to_string())),
    }
}

/// The object number of anonymous-inode file `f`: the one an fd of the
/// same open description has already, else a new one that `read`
/// describes.
fn anon_object(ctx: &mut DumpCtx<'_>, f: &OpenFd<'_>, read: impl FnOnce() -> Result<AnonImage>) -> Result<u32> {
    let at = match ctx.anon_holders.find(f.pid, f.fd) {
        Ok((_, i)) => return Ok(i),
        Err(at) => at,
    };
    ctx.img.anon.push(read()?);
    let i = ctx.img.anon.len() as u32 - 1;
    ctx.anon_holders.insert(at, (f.pid, f.fd), i);
    Ok(i)
}

/// Open file descriptions seen so far, each with an fd of it and what the
/// dump made of it, in the kernel's order of files (kcmp), so that an fd
/// is looked up with a logarithmic number of comparisons: a process may
/// hold thousands. Where kcmp fails (a kernel without it) every fd is a
/// description of its own.
struct Descriptions<T> {
    seen: Vec<(Holder, T)>,
}

impl<T> Default for Descriptions<T> {
    fn default() -> Self {
        Self { seen: Vec::new() }
    }
}

impl<T: Copy> Descriptions<T> {
    /// The description of fd `fd` of process `pid`, if seen: an fd of it
    /// and its value; else where it goes.
    fn find(&self, pid: i32, fd: i32) -> std::result::Result<(Holder, T), usize> {
        let mut failed = false;
        let found = self.seen.binary_search_by(|((p, h), _)| {
            crate::sys::file_order(*p, *h, pid, fd).unwrap_or_else(|_| {
                failed = true;
                std::cmp::Ordering::Less
            })
        });
        match found {
            _ if failed => Err(self.seen.len()),
            Ok(i) => Ok(self.seen[i]),
            Err(at) => Err(at),
        }
    }

    fn insert(&mut self, at: usize, holder: Holder, v: T) {
        self.seen.insert(at.min(self.seen.len()), (holder, v));
    }
}

/// A file by path: a regular file, directory, FIFO or device; a deleted
/// file or memfd with its contents (kinds::regfile). One image file per
/// open file description.
fn dump_file(ctx: &mut DumpCtx<'_>, f: &OpenFd<'_>) -> Result<FdKind> {
    let (pid, fd, path) = (f.pid, f.fd, f.path);
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).map_err(|source| Error::Proc {
        pid,
        fd,
        what: "stat",
        source,
    })?;
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    // A symlink or a socket's node can only be held by an O_PATH fd,
    // which is reopened the same way (with O_NOFOLLOW for the symlink).
    let by_path = f.flags & libc::O_PATH != 0 && (ft.is_symlink() || ft.is_socket());
    if !(ft.is_file() || ft.is_char_device() || ft.is_dir() || ft.is_fifo() || by_path) {
        return Err(f.unsupported(format!("special file {path}")));
    }
    let at = match ctx.file_holders.find(pid, fd) {
        Ok((_, file)) => return Ok(FdKind::File { file }),
        Err(at) => at,
    };
    if !path.starts_with("/memfd:") && ctx.reachable.unreachable(f.info) {
        return Err(f.unsupported(format!("{UNREACHABLE_MOUNT} ({path})")));
    }
    let outside = fdinfo_mnt_id(f.info).is_some_and(|m| !ctx.reachable.container.contains(&m));
    let mut file = regfile::dump(pid, fd, path, f.flags, f.pos, ctx.file_cap, outside)?;
    // A FIFO's bytes go back in once, with its first open description.
    use std::os::unix::fs::MetadataExt;
    if let regfile::FileKind::Fifo { data }
    | regfile::FileKind::SizedFifo { data, .. }
    | regfile::FileKind::Ghost {
        what: regfile::GhostNode::Fifo { data, .. },
        ..
    } = &mut file.kind
    {
        if !ctx.fifos_seen.insert(meta.ino()) {
            data.clear();
        }
    }
    // A memfd's contents too, with its first open description.
    if let regfile::FileKind::MemfdOf { id, contents, .. } = &mut file.kind {
        if !ctx.memfds_seen.insert(*id) {
            contents.clear();
        }
    }
    ctx.img.files.push(file);
    let i = ctx.img.files.len() as u32 - 1;
    ctx.file_holders.insert(at, (pid, fd), i);
    Ok(FdKind::File { file: i })
}

/// Pipe contents, through a duplicate of a read end.
fn dump_pipes(ctx: &mut DumpCtx<'_>) -> Result<()> {
    let mut pipes: Vec<(u64, u32, Option<Holder>)> = ctx.pipe_idx.iter().map(|(ino, (i, h))| (*ino, *i, *h)).collect();
    pipes.sort_by_key(|p| p.1);
    // A pipe read only from outside the container (a runtime's or conmon's
    // stdio pipe): after a restore nothing would read it, so what the
    // container writes there goes to its log instead.
    let unread: Vec<u32> = pipes.iter().filter(|p| p.2.is_none()).map(|p| p.1).collect();
    for (_, fds) in ctx.img.procs.iter_mut() {
        for f in fds.iter_mut() {
            if let FdKind::Pipe { pipe, write: true } = f.kind {
                if unread.contains(&pipe) {
                    f.kind = FdKind::Log;
                    f.flags &= !libc::O_NONBLOCK;
                }
            }
        }
    }
    for (ino, _, holder) in pipes {
        let dup = holder.map(|(pid, fd)| steal(pid, fd)).transpose()?;
        let image = pipes::dump(ino, dup.as_ref()).map_err(|source| Error::Dump {
            pid: holder.map(|h| h.0).unwrap_or(0),
            fd: holder.map(|h| h.1).unwrap_or(-1),
            what: "read pipe buffer",
            source,
        })?;
        ctx.img.pipes.push(image);
    }
    Ok(())
}

/// Unix sockets: state from sock_diag, queues through a duplicate.
fn dump_unix_sockets(ctx: &mut DumpCtx<'_>) -> Result<()> {
    let mut socks: Vec<(u64, u32, Holder)> = ctx.sock_idx.iter().map(|(ino, (i, h))| (*ino, *i, *h)).collect();
    socks.sort_by_key(|s| s.1);
    for (ino, _, (pid, fd)) in socks {
        let d = &ctx.diag[&ino];
        let ns_pid = ctx.procs.iter().find(|p| p.0 == pid).map(|p| p.1).unwrap_or(0);
        let unsupported = |kind: String| Error::Unsupported { pid, ns_pid, fd, kind };
        if let Some(why) = d.uncarried() {
            return Err(unsupported(why));
        }
        if d.listening && d.rqlen > 0 {
            return Err(unsupported(format!(
                "listening unix socket with {} connections not yet accepted",
                d.rqlen
            )));
        }
        if let Some(peer) = d.peer {
            if !ctx.sock_idx.contains_key(&peer) && ctx.diag.get(&peer).is_none_or(|p| p.name.is_none()) {
                return Err(unsupported(
                    "unix socket connected to a socket outside the container".into(),
                ));
            }
        }
        let dup = steal(pid, fd)?;
        let opts = super::sockopts::dump_cached(dup.as_fd(), ctx.netns_pid, unix::fresh(d.kind), &mut ctx.opt_defaults)
            .map_err(|source| Error::SockOpts {
                pid: ctx.netns_pid,
                source,
            })?;
        let queue = match unix::peek_queue(ino, d, &dup)? {
            unix::Queue::Data(q) => q,
            unix::Queue::FdsInFlight => return Err(unsupported(FDS_IN_FLIGHT.into())),
        };
        ctx.img.sockets.push(UnixImage {
            ino,
            kind: d.kind,
            listening: d.listening,
            backlog: d.wqlen,
            name: d.name.clone(),
            peer: d.peer,
            queue,
            opts,
        });
    }
    Ok(())
}

/// SO_PASSPIDFD (Linux 6.5; not in the libc crate yet).
const SO_PASSPIDFD: i32 = 76;

/// Socket options a program set that are not carried: a peek offset
/// (SO_PEEK_OFF; the dump's own peeks at the queue would start there), a
/// classic packet filter (SO_ATTACH_FILTER), and
/// on a unix socket, receiving the sender's credentials or pidfd with each
/// message (SO_PASSCRED, SO_PASSPIDFD).
fn uncarried_option(sock: &OwnedFd) -> Option<String> {
    let int = |opt| crate::sys::getsockopt_int(sock.as_fd(), libc::SOL_SOCKET, opt).ok();
    if let Some(off) = int(libc::SO_PEEK_OFF).filter(|off| *off >= 0) {
        return Some(format!("socket with a peek offset set (SO_PEEK_OFF {off})"));
    }
    // With no room, SO_GET_FILTER tells how many instructions the attached
    // classic filter has; an eBPF program attached has no classic form to
    // show, and the kernel refuses with EACCES.
    match crate::sys::getsockopt_raw(sock.as_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &mut []) {
        Ok(n) if n > 0 => return Some("socket with a packet filter attached (SO_ATTACH_FILTER)".into()),
        Err(crate::sys::Errno::EACCES) => {
            return Some("socket with an eBPF program attached as its filter (SO_ATTACH_BPF)".into())
        }
        _ => {}
    }
    if int(libc::SO_DOMAIN) != Some(libc::AF_UNIX) {
        return None;
    }
    [("SO_PASSCRED", libc::SO_PASSCRED), ("SO_PASSPIDFD", SO_PASSPIDFD)]
        .into_iter()
        .find(|(_, opt)| int(*opt).is_some_and(|on| on != 0))
        .map(|(name, _)| format!("unix socket receiving its senders' credentials ({name})"))
}

/// A duplicate of fd `fd` of process `pid`, in this process.
fn steal(pid: i32, fd: i32) -> Result<OwnedFd> {
    let err = |what| move |source| Error::Dump { pid, fd, what, source };
    let pidfd = crate::sys::pidfd_open(nix::unistd::Pid::from_raw(pid)).map_err(err("pidfd_open"))?;
    crate::sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(err("pidfd_getfd"))
}

/// "pipe:[123]" -> "pipe", "anon_inode:[eventfd]" -> "eventfd"...
fn describe(target: &str) -> String {
    if let Some(r) = target.strip_prefix("anon_inode:") {
        return r.trim_matches(|c| c == '[' || c == ']').to_string();
    }
    const NAMESPACES: [&str; 9] = [
        "cgroup",
        "ipc",
        "mnt",
        "net",
        "pid",
        "pid_for_children",
        "time",
        "user",
        "uts",
    ];
    match target.split_once(':') {
        Some((k, _)) if NAMESPACES.contains(&k) => format!("namespace file ({target}, from /proc/PID/ns)"),
        Some((k, _)) => k.to_string(),
        None => target.to_string(),
    }
}

/// What a file on a file system migrate never carries is, by the magic
/// number of fd `fd` of process `pid`'s file system: secret memory
/// (memfd_secret), whose pages no other process can read; a POSIX
/// message queue (carried with the IPC namespace: issue 17).
fn special_fs(pid: i32, fd: i32) -> Option<&'static str> {
    /// SECRETMEM_MAGIC and MQUEUE_MAGIC (linux/magic.h).
    const SECRETMEM: i64 = 0x5345_434d;
    const MQUEUE: i64 = 0x1980_0202;
    let fs = nix::sys::statfs::statfs(format!("/proc/{pid}/fd/{fd}").as_str()).ok()?;
    match fs.filesystem_type().0 as i64 {
        SECRETMEM => Some("secret memory (memfd_secret), whose pages no other process can read"),
        MQUEUE => Some("POSIX message queue"),
        _ => None,
    }
}

/// File status flags that fcntl(F_SETFL) can set on an object's fd.
const STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

/// The shared objects of a restore, made by the container's PID 1 before
/// it forks: every task inherits them at the same numbers.
pub struct Objects {
    pub pipes: Vec<(OwnedFd, OwnedFd)>,
    pub sockets: Vec<OwnedFd>,
    pub anon: Vec<OwnedFd>,
    pub files: Vec<OwnedFd>,
    pub inet: Vec<OwnedFd>,
    pub tcp: Vec<OwnedFd>,
}

/// Opens the image's files that lie outside the container (see
/// [`regfile::FileKind::HostPath`]), by the restorer on the host's side
/// before the container's mount namespace exists; by file number.
pub fn open_host_files(img: &FilesImage) -> Result<HashMap<u32, OwnedFd>> {
    let mut out = HashMap::new();
    for (i, f) in img.files.iter().enumerate() {
        if f.kind == regfile::FileKind::HostPath {
            out.insert(i as u32, regfile::restore(f, &[])?);
        }
    }
    Ok(out)
}

/// Makes every pipe, socket and eventfd/timerfd/signalfd of the image, at
/// descriptor numbers of `above` or more. `host_files` are the files
/// [`open_host_files`] opened; `memfds` the memfds the restorer made (see
/// [`regfile::restore`]).
pub fn make_objects(
    img: &FilesImage,
    above: RawFd,
    host_files: &HashMap<u32, OwnedFd>,
    memfds: &[(u64, RawFd)],
) -> Result<Objects> {
    let high = |fd: OwnedFd, what: &'static str| {
        crate::sys::dup_above(fd.as_fd(), above).map_err(|source| Error::Reopen {
            fd: -1,
            path: what.into(),
            source,
        })
    };
    let mut objs = Objects {
        pipes: Vec::new(),
        sockets: Vec::new(),
        anon: Vec::new(),
        files: Vec::new(),
        inet: Vec::new(),
        tcp: Vec::new(),
    };
    for s in &img.inet {
        let fd = inet::restore(s)?;
        objs.inet.push(high(fd, "inet socket")?);
    }
    // Connections after their listeners.
    for t in &img.tcp {
        let fd = tcp::restore(t)?;
        objs.tcp.push(high(fd, "tcp connection")?);
    }
    for (i, f) in img.files.iter().enumerate() {
        let fd = match host_files.get(&(i as u32)) {
            Some(opened) => opened.try_clone().map_err(|e| Error::Reopen {
                fd: -1,
                path: f.path.clone(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
            })?,
            None => regfile::restore(f, memfds)?,
        };
        objs.files.push(high(fd, "file")?);
    }
    regfile::release_keepers();
    for p in &img.pipes {
        let (r, w) = pipes::restore(p).map_err(|source| Error::Reopen {
            fd: -1,
            path: format!("pipe:[{}]", p.ino),
            source,
        })?;
        objs.pipes.push((high(r, "pipe")?, high(w, "pipe")?));
    }
    for s in unix::restore_all(&img.sockets)? {
        objs.sockets.push(high(s, "socket")?);
    }
    for a in &img.anon {
        let fd = anonfd::restore(a).map_err(|source| Error::Reopen {
            fd: -1,
            path: format!("{a:?}"),
            source,
        })?;
        objs.anon.push(high(fd, "anon")?);
    }
    Ok(objs)
}

/// An fd of [`restore`] waiting to be placed: above every number it places.
enum Parked<'a> {
    /// Where it was made (an object of PID 1's).
    There(std::os::fd::BorrowedFd<'a>),
    /// A duplicate of one that was below.
    Moved(OwnedFd),
}

impl AsFd for Parked<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Parked::There(fd) => *fd,
            Parked::Moved(fd) => fd.as_fd(),
        }
    }
}

/// Sets up the fd table of a restored task (runs in the task itself, before
/// its memory is replaced): every image fd at its number, and nothing else
/// open but `keep`, whose numbers must all be above the image's.
///
/// # Safety
/// Afterwards no descriptor that Rust code of this process owned may be
/// used or dropped, but those in `keep`: the caller only writes to `keep`
/// and waits to be replaced (a forked task of a restore).
#[allow(unsafe_code)]
pub unsafe fn restore(fds: &[FdImage], log: Option<&OwnedFd>, objects: Option<&Objects>, keep: &[RawFd]) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let top = fds
        .iter()
        .map(|f| f.fd)
        .max()
        .unwrap_or(2)
        .max(keep.iter().copied().max().unwrap_or(0))
        + 1;
    let missing = |f: &FdImage| Error::Reopen {
        fd: f.fd,
        path: format!("{:?}", f.kind),
        source: Errno::EBADF,
    };
    // Open or duplicate everything first, parked above every number that
    // will be used: what is there already (PID 1's objects) stays where
    // it is (a duplicate of each would take as many numbers again, over
    // the limit of a process with thousands of fds).
    let mut parked: Vec<(Parked<'_>, &FdImage)> = Vec::new();
    for f in fds {
        let err = |path: &str| {
            let path = path.to_string();
            move |source| Error::Reopen { fd: f.fd, path, source }
        };
        // Object number `i` of one kind, as PID 1 made it.
        let object = |kind: fn(&Objects) -> &Vec<OwnedFd>, i: u32| {
            objects
                .and_then(|o| kind(o).get(i as usize))
                .map(|fd| fd.as_fd())
                .ok_or_else(|| missing(f))
        };
        let (source, what): (std::os::fd::BorrowedFd<'_>, String) = match &f.kind {
            FdKind::Epoll { .. } | FdKind::EpollVia { .. } => continue,
            // Placed now, filled with the epolls below.
            FdKind::EpollOf { obj, .. } => (object(|o| &o.anon, *obj)?, "epoll".into()),
            // Held until every process exists, when the pidfd replaces it.
            FdKind::Pidfd { .. } | FdKind::PidfdAs { .. } => {
                let placeholder = nix::sys::memfd::memfd_create(c"pidfd", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                    .map_err(err("pidfd placeholder"))?;
                let high = crate::sys::dup_above(placeholder.as_fd(), top).map_err(err("pidfd placeholder"))?;
                parked.push((Parked::Moved(high), f));
                continue;
            }
            FdKind::Log => (log.ok_or_else(|| missing(f))?.as_fd(), "log".into()),
            FdKind::Pipe { pipe, write } => {
                let p = objects
                    .and_then(|o| o.pipes.get(*pipe as usize))
                    .ok_or_else(|| missing(f))?;
                (if *write { p.1.as_fd() } else { p.0.as_fd() }, "pipe".into())
            }
            FdKind::Tcp { conn } => (object(|o| &o.tcp, *conn)?, "tcp connection".into()),
            FdKind::Inet { sock } => (object(|o| &o.inet, *sock)?, "inet socket".into()),
            FdKind::Socket { sock } => (object(|o| &o.sockets, *sock)?, "socket".into()),
            FdKind::Anon { obj } => (object(|o| &o.anon, *obj)?, "anon".into()),
            FdKind::File { file } => (object(|o| &o.files, *file)?, "file".into()),
        };
        let high = if std::os::fd::AsRawFd::as_raw_fd(&source) >= top {
            Parked::There(source)
        } else {
            Parked::Moved(crate::sys::dup_above(source, top).map_err(err(&what))?)
        };
        if !matches!(f.kind, FdKind::Log | FdKind::File { .. }) {
            // Shared objects: the open file's status flags (O_NONBLOCK...).
            fcntl(
                &high,
                FcntlArg::F_SETFL(OFlag::from_bits_retain(f.flags & STATUS_FLAGS)),
            )
            .map_err(err(&what))?;
        }
        parked.push((high, f));
    }
    for (fd, img) in &parked {
        // SAFETY: the function's contract: nothing of the caller's is used
        // again, and our own descriptors are all parked above `top`.
        unsafe { crate::sys::place_fd(fd.as_fd(), img.fd, img.flags & libc::O_CLOEXEC != 0) }.map_err(|source| {
            Error::Reopen {
                fd: img.fd,
                path: format!("{:?}", img.kind),
                source,
            }
        })?;
    }
    drop(parked);
    // Nothing of the restorer's may be open when the epolls are built: an
    // interest list naming an fd this task does not have must fail (and be
    // skipped), not register one of ours.
    let built = |f: &FdImage| matches!(f.kind, FdKind::Epoll { .. } | FdKind::EpollVia { .. });
    let mut open_set: Vec<RawFd> = fds.iter().filter(|f| !built(f)).map(|f| f.fd).collect();
    open_set.extend_from_slice(keep);
    // SAFETY: the function's contract; `parked` was dropped above, and what
    // stays open is the placed table and `keep`.
    unsafe { crate::sys::close_all_but(&open_set) }.map_err(|source| Error::Reopen {
        fd: -1,
        path: "close the restorer's descriptors".into(),
        source,
    })?;
    // Epolls last: their interest lists name the fds just placed. An epoll
    // that watches another is built after it (the kernel allows no loops).
    let mut epolls: Vec<&FdImage> = fds.iter().filter(|f| f.kind.epoll().is_some()).collect();
    let mut order: Vec<&FdImage> = Vec::with_capacity(epolls.len());
    while !epolls.is_empty() {
        let waiting = |f: &FdImage| {
            f.kind.epoll().is_some_and(|(targets, via)| {
                targets.iter().enumerate().any(|(i, t)| {
                    let at = match via.get(i) {
                        Some(TargetFile::Fd(v)) => *v,
                        _ => t.fd,
                    };
                    epolls.iter().any(|e| e.fd == at && e.fd != f.fd)
                })
            })
        };
        let next = epolls.iter().position(|f| !waiting(f)).unwrap_or(0);
        order.push(epolls.remove(next));
    }
    for f in order {
        let Some((targets, via)) = f.kind.epoll() else { continue };
        let err = |source| Error::Reopen {
            fd: f.fd,
            path: "epoll".into(),
            source,
        };
        // An epoll object is placed already: this holder adds what it has
        // (another holder may have added it: EEXIST).
        let placed = matches!(f.kind, FdKind::EpollOf { .. });
        let ep = match placed {
            // SAFETY: `f.fd` was placed above and stays open. (A copy above
            // `top`: a free number below may be one an interest list names.)
            true => crate::sys::dup_above(unsafe { std::os::fd::BorrowedFd::borrow_raw(f.fd) }, top).map_err(err)?,
            false => {
                let ep = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC).map_err(err)?;
                // The first descriptor may hold a number an interest list
                // names.
                crate::sys::dup_above(ep.0.as_fd(), top).map_err(err)?
            }
        };
        for (i, t) in targets.iter().enumerate() {
            let added = match via.get(i).copied().unwrap_or(TargetFile::AtNumber) {
                TargetFile::AtNumber => crate::sys::epoll_add(ep.as_fd(), t.fd, t.events, t.data),
                TargetFile::NotHere => continue,
                // SAFETY: the function's contract; `via` is a placed fd,
                // and what is at `t.fd` is put back as it was.
                TargetFile::Fd(v) => unsafe {
                    crate::sys::epoll_add_as(
                        ep.as_fd(),
                        std::os::fd::BorrowedFd::borrow_raw(v),
                        t.fd,
                        (t.events, t.data),
                        top,
                    )
                },
            };
            match added {
                // A registration on an fd this holder does not have (an
                // epoll inherited by a child that closed it).
                Err(Errno::EBADF) | Err(Errno::EPERM) => {}
                Err(Errno::EEXIST) if placed => {}
                other => other.map_err(err)?,
            }
        }
        if !placed {
            // SAFETY: the function's contract; `ep` is parked above `top`.
            unsafe { crate::sys::place_fd(ep.as_fd(), f.fd, f.flags & libc::O_CLOEXEC != 0) }.map_err(err)?;
        }
    }
    Ok(())
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

    #[test]
    fn fd_numbers_out_of_range_are_refused() {
        let with = |fd| FilesImage {
            procs: vec![(
                5,
                vec![FdImage {
                    fd,
                    flags: 0,
                    kind: FdKind::Log,
                }],
            )],
            ..Default::default()
        };
        with(0).check().unwrap();
        with(FD_MAX).check().unwrap();
        // Restore counts above the highest fd: it must not overflow.
        assert!(with(FD_MAX).max_fd().checked_add(1).is_some());
        for fd in [-1, i32::MIN, i32::MAX] {
            assert!(matches!(with(fd).check(), Err(Error::BadFd { pid: 5, fd: f, .. }) if f == fd));
        }
    }

    #[test]
    fn fds_twice_or_naming_missing_objects_are_refused() {
        let fd = |fd, kind| FdImage { fd, flags: 0, kind };
        let mut img = FilesImage {
            procs: vec![(1, vec![fd(3, FdKind::Pipe { pipe: 0, write: false })])],
            ..Default::default()
        };
        assert!(
            matches!(img.check(), Err(Error::BadFd { fd: 3, .. })),
            "a pipe the image lacks"
        );
        img.procs[0].1 = vec![fd(3, FdKind::Log), fd(3, FdKind::Log)];
        assert!(matches!(img.check(), Err(Error::BadFd { fd: 3, .. })), "fd 3 twice");
        img.procs[0].1.pop();
        img.check().unwrap();
    }

    /// An epoll's registration through a closed number names a file the
    /// process holds at another fd, which must be in the image.
    #[test]
    fn epoll_registrations_through_closed_numbers_name_held_fds() {
        let target = EpollTarget {
            fd: 9,
            events: 1,
            data: 7,
        };
        let epoll = |via| FdImage {
            fd: 3,
            flags: 0,
            kind: FdKind::EpollVia {
                targets: vec![target],
                via: vec![via],
            },
        };
        let held = FdImage {
            fd: 4,
            flags: 0,
            kind: FdKind::Log,
        };
        let mut img = FilesImage {
            procs: vec![(1, vec![epoll(TargetFile::Fd(4)), held])],
            ..Default::default()
        };
        img.check().unwrap();
        img.procs[0].1[0] = epoll(TargetFile::Fd(5));
        assert!(
            matches!(img.check(), Err(Error::BadFd { fd: 3, .. })),
            "fd 5 is not held"
        );
        img.procs[0].1[0] = epoll(TargetFile::Fd(3));
        assert!(
            matches!(img.check(), Err(Error::BadFd { fd: 3, .. })),
            "the epoll itself"
        );
    }

    /// A deleted device node is made again only if it is a memory device:
    /// an image may not give a container a disk.
    #[test]
    fn deleted_devices_other_than_memory_devices_are_refused() {
        let node = |rdev| regfile::FileImage {
            path: "/tmp/gone".into(),
            flags: libc::O_RDWR,
            pos: 0,
            size: 0,
            regular: false,
            kind: regfile::FileKind::Ghost {
                node: (1, 2),
                what: regfile::GhostNode::CharDevice { rdev },
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
            dir_entries: None,
        };
        let mut img = FilesImage {
            procs: vec![(
                1,
                vec![FdImage {
                    fd: 3,
                    flags: 0,
                    kind: FdKind::File { file: 0 },
                }],
            )],
            files: vec![node(libc::makedev(1, 3))],
            ..Default::default()
        };
        img.check().unwrap();
        img.files[0] = node(libc::makedev(8, 0));
        assert!(matches!(img.check(), Err(Error::BadFd { fd: 3, .. })), "a disk");
    }

    /// A layout-5 section (unix sockets without options) still decodes.
    #[test]
    fn layout_5_reads_with_no_socket_options() {
        use crate::kinds::Kind;
        #[derive(serde::Serialize)]
        struct UnixV5 {
            ino: u64,
            kind: u8,
            listening: bool,
            backlog: u32,
            name: Option<unix::UnixName>,
            peer: Option<u64>,
            queue: Vec<Vec<u8>>,
        }
        #[derive(serde::Serialize)]
        struct V5 {
            procs: Vec<(i32, Vec<FdImage>)>,
            pipes: Vec<PipeImage>,
            sockets: Vec<UnixV5>,
            anon: Vec<AnonImage>,
            files: Vec<()>,
            inet: Vec<InetImage>,
            tcp: Vec<()>,
        }
        let old = V5 {
            procs: vec![(
                1,
                vec![FdImage {
                    fd: 3,
                    flags: 2,
                    kind: FdKind::Socket { sock: 0 },
                }],
            )],
            pipes: vec![],
            sockets: vec![UnixV5 {
                ino: 7,
                kind: libc::SOCK_DGRAM as u8,
                listening: false,
                backlog: 0,
                name: Some(unix::UnixName::Abstract(b"x".to_vec())),
                peer: None,
                queue: vec![b"queued".to_vec()],
            }],
            anon: vec![],
            files: vec![],
            inet: vec![],
            tcp: vec![],
        };
        let img = Section::decode(&crate::image::encode_section_at(5, &old)).unwrap();
        Section::validate(&img).unwrap();
        assert_eq!(img.sockets[0].queue, vec![b"queued".to_vec()]);
        assert!(img.sockets[0].opts.is_empty());
        assert_eq!(img.procs, old.procs);
    }
}
