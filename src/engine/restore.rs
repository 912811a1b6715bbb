//! Restore, in stages:
//! 1. read and check the image (checksums were verified when it was opened);
//! 2. make the cgroup, and a time namespace whose offsets continue the
//!    container's clocks;
//! 3. fork the tree: PID 1 by clone3 into new namespaces, every other task
//!    by its own parent with clone3(set_tid), so each gets its old PID.
//!    Each task (still a copy of this program) sets its session and group,
//!    cwd, umask, rlimits and fds, reports ready and waits;
//! 4. seize every task and rebuild it by injected syscalls: address space
//!    and pages, mm fields, signal handlers, threads (clone3 with their
//!    TIDs), per-thread kernel state, then registers;
//! 5. freeze the cgroup, detach everything, thaw: all tasks start together.
//!
//! A failure kills what was made and removes the cgroup; the image is left
//! as it was, so the restore can be tried again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::Serialize;

use super::{get, get_since, ms_since, Container, ContainerImage, Error, Result};
use crate::image::precopy::PrecopyPages;
use crate::image::store::ImageSource;
use crate::kinds::files::{self, FilesImage, Objects};
use crate::kinds::memory::{self, Backing, MemoryImage, ShmemFds};
use crate::kinds::pstree::{self, ProcessImage};
use crate::kinds::regs::{self, ThreadImage};
use crate::kinds::remote::Remote;
use crate::kinds::signals::{self, SignalsImage};
use crate::kinds::{cow, creds, fdattrs, procattrs, timens, timers, Kind};
use crate::proc;
use crate::runtime::state::{self, ContainerState};
use crate::runtime::{Root, FREEZE_TIMEOUT};
use crate::sys::{self, ptrace, Forked};

/// How long the forked tree may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore under this name instead of the image's.
    pub name: Option<String>,
    /// The image's established TCP connections may be restored.
    pub tcp_established: bool,
    /// The container's address may be taken over from this lease holder
    /// (live migration between two roots of one host); it gets it back if
    /// the restore fails.
    pub lease_from: Option<std::path::PathBuf>,
    /// The container's log so far, written before it runs (live migration
    /// brings it along).
    pub log: Option<Vec<u8>>,
    /// Compare the restored processes' kernel state with the image before
    /// they run, and fail on a difference (engine::verify).
    pub verify: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub name: String,
    /// Host PID of the restored PID 1.
    pub pid: i32,
    pub processes: usize,
    pub threads: usize,
    pub pages: u64,
    pub fork_ms: f64,
    pub memory_ms: f64,
    pub total_ms: f64,
}

/// Everything the image holds, decoded.
struct Image {
    container: ContainerImage,
    procs: Vec<ProcessImage>,
    mm: Vec<(i32, MemoryImage)>,
    signals: Vec<(i32, SignalsImage)>,
    files: FilesImage,
    tmpfs: Vec<crate::kinds::mounts::TmpfsImage>,
    attrs: Vec<(i32, procattrs::ProcAttrs)>,
    uts: Option<crate::kinds::uts::UtsImage>,
    ipc: Option<crate::kinds::ipcns::IpcImage>,
    fdattrs: fdattrs::Image,
    prctls: Vec<(i32, crate::kinds::prctls::Prctls)>,
    policies: Vec<(i32, Vec<crate::kinds::policies::ThreadPolicies>)>,
    ghosts: Vec<memory::GhostFile>,
}

fn load(src: &mut dyn ImageSource) -> Result<Image> {
    super::refuse_unknown_sections(src.manifest())?;
    let img = Image {
        container: get::<Container>(src)?,
        procs: get::<pstree::Section>(src)?,
        mm: get::<memory::Section>(src)?,
        signals: get::<signals::Section>(src)?,
        files: get::<files::Section>(src)?,
        tmpfs: get::<crate::kinds::mounts::Section>(src)?,
        // Not in format-3 images.
        attrs: get_since::<procattrs::Section>(src)?.unwrap_or_default(),
        uts: get_since::<crate::kinds::uts::Section>(src)?,
        ipc: get_since::<crate::kinds::ipcns::Section>(src)?,
        fdattrs: get_since::<fdattrs::Section>(src)?.unwrap_or_default(),
        prctls: get_since::<crate::kinds::prctls::Section>(src)?.unwrap_or_default(),
        policies: get_since::<crate::kinds::policies::Section>(src)?.unwrap_or_default(),
        ghosts: get_since::<memory::Ghosts>(src)?.unwrap_or_default(),
    };
    check(&img)?;
    Ok(img)
}

/// Refuses a decoded image whose sections, each valid on its own
/// ([`Kind::validate`], in [`get`]), do not fit together: restore would
/// compute with them and could not use them.
fn check(img: &Image) -> Result<()> {
    // Every process named by another section is a live one of the tree,
    // once; threads named are its own.
    let live: HashMap<i32, Vec<i32>> = img
        .procs
        .iter()
        .filter(|p| p.zombie.is_none())
        .map(|p| (p.pid, p.threads.iter().map(|t| t.tid).collect()))
        .collect();
    let named = |section: &'static str, pids: Vec<i32>| {
        let mut seen = std::collections::HashSet::new();
        match pids.into_iter().find(|p| !live.contains_key(p) || !seen.insert(*p)) {
            Some(pid) => Err(Error::Damaged {
                section,
                pid,
                what: "a process that is not live in the tree, or one named twice",
            }),
            None => Ok(()),
        }
    };
    named(memory::Section::SECTION, img.mm.iter().map(|(p, _)| *p).collect())?;
    // A zombie's dispositions are there too (and nothing else of it).
    let zombie = |pid: i32| img.procs.iter().any(|p| p.pid == pid && p.zombie.is_some());
    let (of_zombies, of_live): (Vec<_>, Vec<_>) = img.signals.iter().partition(|(p, _)| zombie(*p));
    named(signals::Section::SECTION, of_live.iter().map(|(p, _)| *p).collect())?;
    for (i, (pid, s)) in of_zombies.iter().enumerate() {
        let again = of_zombies[..i].iter().any(|(q, _)| q == pid);
        if again || !s.shared.is_empty() || !s.threads.is_empty() || !s.altstacks.is_empty() {
            return Err(Error::Damaged {
                section: signals::Section::SECTION,
                pid: *pid,
                what: "signal state of a zombie other than its dispositions, or named twice",
            });
        }
    }
    named(
        files::Section::SECTION,
        img.files.procs.iter().map(|(p, _)| *p).collect(),
    )?;
    // A pidfd taken from another process: from one rebuilt before it.
    let order = |pid: i32| img.procs.iter().position(|p| p.pid == pid);
    for (pid, fds) in &img.files.procs {
        for f in fds {
            if let files::FdKind::PidfdAs { holder, .. } = f.kind {
                if holder != *pid && order(holder) >= order(*pid) {
                    return Err(Error::Damaged {
                        section: files::Section::SECTION,
                        pid: *pid,
                        what: "a pidfd taken from a process rebuilt after it",
                    });
                }
            }
        }
    }
    named(procattrs::Section::SECTION, img.attrs.iter().map(|(p, _)| *p).collect())?;
    named(fdattrs::Section::SECTION, img.fdattrs.iter().map(|(p, _)| *p).collect())?;
    named(
        crate::kinds::prctls::Section::SECTION,
        img.prctls.iter().map(|(p, _)| *p).collect(),
    )?;
    named(
        crate::kinds::policies::Section::SECTION,
        img.policies.iter().map(|(p, _)| *p).collect(),
    )?;
    fdattrs::check(&img.fdattrs, &|pid| {
        let fds = img.files.procs.iter().find(|(p, _)| *p == pid)?;
        Some(fds.1.iter().map(|f| f.fd).collect())
    })?;
    for (pid, mm) in &img.mm {
        let ghost = |id: u64| img.ghosts.iter().any(|g| g.id == id && g.fits());
        if mm
            .vmas
            .iter()
            .any(|v| matches!(v.backing, Backing::Ghost { id } if !ghost(id)))
        {
            return Err(Error::Damaged {
                section: memory::Ghosts::SECTION,
                pid: *pid,
                what: "a mapping of a deleted file the image does not hold, or holds damaged",
            });
        }
        let ipc = img.ipc.as_ref().map(|i| i.objects.as_slice()).unwrap_or_default();
        if !crate::kinds::ipcns::attachments_fit(ipc, &mm.vmas) {
            return Err(Error::Damaged {
                section: crate::kinds::ipcns::Section::SECTION,
                pid: *pid,
                what: "an attachment of a SysV segment the image does not hold, or of another size",
            });
        }
        let copies = mm.vmas.iter().flat_map(|v| v.runs.iter().filter_map(|r| r.from));
        if copies.into_iter().any(|(from, _)| !live.contains_key(&from)) {
            return Err(Error::Damaged {
                section: memory::Section::SECTION,
                pid: *pid,
                what: "pages copied from a process that is not live in the tree",
            });
        }
    }
    for (pid, s) in &img.signals {
        let threads = s
            .threads
            .iter()
            .map(|(t, _)| t)
            .chain(s.altstacks.iter().map(|(t, _)| t));
        if threads
            .into_iter()
            .any(|t| !live.get(pid).is_some_and(|own| own.contains(t)))
        {
            return Err(Error::Damaged {
                section: signals::Section::SECTION,
                pid: *pid,
                what: "signal state of a thread the process does not have",
            });
        }
    }
    Ok(())
}

fn stage(phase: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Stage { phase, message }
}

/// Kills and removes a half-restored container unless disarmed.
struct Undo {
    cgroup: crate::cgroup::Cgroup,
    armed: bool,
    net: Option<crate::net::NetConfig>,
    /// A lease taken over: (address, its holder before, us).
    lease_back: Option<(std::net::Ipv4Addr, std::path::PathBuf, std::path::PathBuf)>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.armed {
            let _ = crate::runtime::tear_down(&self.cgroup, self.net.as_ref());
            if let Some((ip, from, us)) = &self.lease_back {
                crate::net::ipam::take_over(*ip, us, from);
            }
        }
    }
}

/// Restores a container from `src` into `root`.
pub fn restore(root: &Root, src: &mut dyn ImageSource, opts: &RestoreOptions) -> Result<RestoreReport> {
    prepare(root, src, opts)?.commit()
}

/// A restored container whose tasks are all rebuilt and stopped in its
/// frozen cgroup, not running yet and not yet recorded. [`Prepared::commit`]
/// starts it; dropping it uncommitted kills what was made and leaves the
/// image as it was. (Live migration commits only once the source has said
/// so.) The root's lock is held meanwhile.
pub struct Prepared<'r> {
    root: &'r Root,
    state: ContainerState,
    undo: Undo,
    report: RestoreReport,
    t0: Instant,
    /// Established TCP connections, still in repair mode until the commit:
    /// each with a holder (host PID, fd).
    tcp: Vec<(crate::kinds::tcp::TcpImage, i32, i32)>,
    _lock: nix::fcntl::Flock<File>,
}

impl Prepared<'_> {
    pub fn report(&self) -> &RestoreReport {
        &self.report
    }

    /// Records the container and lets every task run, all together.
    pub fn commit(mut self) -> Result<RestoreReport> {
        let fail = |e: Error| Error::Failed {
            op: "restore",
            name: self.state.name.clone(),
            kept_running: false,
            source: Box::new(e),
        };
        for (t, pid, fd) in &self.tcp {
            crate::kinds::tcp::go_live(t, *pid, *fd).map_err(|e| fail(files::Error::from(e).into()))?;
        }
        self.root.save_state(&self.state).map_err(|e| fail(e.into()))?;
        self.undo
            .cgroup
            .set_frozen(false, FREEZE_TIMEOUT)
            .map_err(|e| fail(e.into()))?;
        self.undo.armed = false;
        self.report.total_ms = ms_since(self.t0);
        Ok(self.report.clone())
    }
}

/// Restores everything up to, not including, starting it (see [`Prepared`]).
pub fn prepare<'r>(root: &'r Root, src: &mut dyn ImageSource, opts: &RestoreOptions) -> Result<Prepared<'r>> {
    let name = opts.name.clone().unwrap_or_else(|| src.manifest().container.clone());
    restore_inner(root, src, &name, opts).map_err(|e| Error::Failed {
        op: "restore",
        name,
        kept_running: false,
        source: Box::new(e),
    })
}

/// An empty store for pages pre-copied ahead of a restore (live
/// migration's destination): its shadows are mappings of this process,
/// which the restored tree inherits.
pub fn precopy_store() -> PrecopyPages {
    PrecopyPages::new(memory::reserve_shadow)
}

fn restore_inner<'r>(
    root: &'r Root,
    src: &mut dyn ImageSource,
    name: &str,
    opts: &RestoreOptions,
) -> Result<Prepared<'r>> {
    let t0 = Instant::now();
    let facts = src.manifest().machine.clone();
    if facts.arch != std::env::consts::ARCH {
        return Err(Error::Incompatible {
            what: "CPU architectures",
            image: facts.arch,
            here: std::env::consts::ARCH.into(),
        });
    }
    let img = load(src)?;
    tracing::debug!(ms = ms_since(t0), "restore: image decoded and checked");
    // PID 1 makes every shared object above the image's fd numbers before
    // it forks: the soft limit of open files goes up to the hard one (the
    // tasks get their own from the image), and an image that needs more
    // is refused before anything is made.
    let nofile = libc::RLIMIT_NOFILE;
    if let Ok((_, hard)) = sys::rlimit(nofile) {
        let _ = sys::set_rlimit(nofile, hard, hard);
        // Shared memory objects and deleted mapped files: an fd each.
        let shared: std::collections::HashSet<u64> = img
            .mm
            .iter()
            .flat_map(|(_, m)| &m.vmas)
            .filter_map(|v| match v.backing {
                Backing::Shmem { id } => Some(id),
                _ => None,
            })
            .collect();
        img.files.check_room(hard, (shared.len() + img.ghosts.len()) as u64)?;
    }
    if !img.files.tcp.is_empty() && !opts.tcp_established {
        return Err(Error::TcpNotRequested(img.files.tcp.len()));
    }
    let lock = root.lock_state()?;
    root.prepare_restore(name)?;
    let cg = root.cgroup_for(name);
    let mut undo = Undo {
        cgroup: cg.clone(),
        armed: true,
        net: None,
        lease_back: None,
    };
    cg.create()?;
    tracing::debug!(ms = ms_since(t0), "restore: cgroup made");
    cg.apply(&img.container.limits)?;
    if let Some(bytes) = &opts.log {
        root.seed_log(name, bytes)?;
    }
    let log = root.open_log(name)?;

    let max_fd = img.files.max_fd();
    // Shared memory objects, one memfd each, sized to what is mapped.
    let mut shmem: ShmemFds = HashMap::new();
    // Memfds first, once each (their open descriptions, and mappings of
    // them, are opened from these); sealed once every process is rebuilt.
    let mut seals: Vec<(u64, i32)> = Vec::new();
    for f in &img.files.files {
        let crate::kinds::regfile::FileKind::MemfdOf {
            id,
            name,
            contents,
            seals: s,
        } = &f.kind
        else {
            continue;
        };
        if shmem.contains_key(id) {
            continue;
        }
        let fail = |e: sys::Errno| stage("make a memfd again")(format!("{}: {e}", f.path));
        let m = crate::kinds::regfile::memfd_again(name, contents, *s != libc::F_SEAL_SEAL).map_err(fail)?;
        // Sealed against writes now, before it is mapped: a shared mapping
        // of it made then, through an fd open for writing, is VM_SHARED
        // but not VM_MAYWRITE, as it was (the pages it would have written
        // are its contents already). The other seals once it is mapped:
        // F_SEAL_FUTURE_WRITE forbids a writable mapping made after it.
        if s & libc::F_SEAL_WRITE != 0 {
            let write = nix::fcntl::SealFlag::F_SEAL_WRITE;
            nix::fcntl::fcntl(&m, nix::fcntl::FcntlArg::F_ADD_SEALS(write)).map_err(fail)?;
        }
        let high = sys::dup_above(m.as_fd(), max_fd.max(100) + 1).map_err(fail)?;
        shmem.insert(*id, File::from(high));
        seals.push((*id, *s & !libc::F_SEAL_WRITE));
    }
    for g in &img.ghosts {
        if shmem.contains_key(&g.id) {
            continue;
        }
        let fail = |e: std::io::Error| stage("make a deleted mapped file again")(format!("{}: {e}", g.path));
        // Named after the file: a memfd's own name comes back as it was.
        let name = g.path.strip_prefix("/memfd:").unwrap_or(&g.path);
        let name = std::ffi::CString::new(name).unwrap_or_else(|_| c"ghost".into());
        let fd = nix::sys::memfd::memfd_create(name.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| fail(e.into()))?;
        let high = sys::dup_above(fd.as_fd(), max_fd.max(100) + 1).map_err(|e| fail(e.into()))?;
        let f = File::from(high);
        f.set_len(g.size).map_err(fail)?;
        for (off, bytes) in &g.extents {
            std::os::unix::fs::FileExt::write_all_at(&f, bytes, *off).map_err(fail)?;
        }
        shmem.insert(g.id, f);
    }
    for (_, mm) in &img.mm {
        for v in &mm.vmas {
            if let Backing::Shmem { id } = v.backing {
                // A memfd's size is its own, whatever is mapped.
                if seals.iter().any(|s| s.0 == id) {
                    continue;
                }
                let need = v.offset + v.len();
                let f = match shmem.get(&id) {
                    Some(f) => f,
                    None => {
                        // Made as it was: shared anonymous memory (maps
                        // reads /dev/zero), or a memfd under its name.
                        let memfd = |name: &str| crate::kinds::regfile::memfd_again(name, &[], false);
                        let fd = match v.shmem_name() {
                            Some("/dev/zero") => sys::shared_anon(need as usize),
                            Some(name) => memfd(name.strip_prefix("/memfd:").unwrap_or(name)),
                            None => memfd("migrate-shmem"),
                        }
                        .map_err(|e| stage("create shared memory")(e.to_string()))?;
                        // Above every fd number of the image: the tasks
                        // inherit it there and keep it until mapped.
                        let high = sys::dup_above(fd.as_fd(), max_fd.max(100) + 1)
                            .map_err(|e| stage("create shared memory")(e.to_string()))?;
                        shmem.entry(id).or_insert(File::from(high))
                    }
                };
                if f.metadata().map(|m| m.len()).unwrap_or(0) < need {
                    f.set_len(need)
                        .map_err(|e| stage("size shared memory")(e.to_string()))?;
                }
            }
        }
    }

    // The ready pipe, its write end above every fd number of the image.
    let (ready_rd, ready_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| stage("pipe")(e.to_string()))?;
    let ready_high = sys::dup_above(ready_wr.as_fd(), max_fd.max(100) + 1).map_err(|e| stage("pipe")(e.to_string()))?;
    drop(ready_wr);
    let ready_wr = ready_high;

    // A time namespace for the children whose clocks continue the image's.
    // Later children of this process get our own again, however this ends.
    let time_back = NsReturn::save("/proc/self/ns/time_for_children", libc::CLONE_NEWTIME)?;
    nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
        .map_err(|e| stage("unshare time namespace")(e.to_string()))?;
    let timens_set = timens::restore(&img.container.clocks);

    let shmem_fds: Vec<(u64, i32)> = shmem.iter().map(|(id, f)| (*id, f.as_raw_fd())).collect();
    // Files outside the container, opened here while this process still
    // sees the host's mounts; PID 1 inherits them, above every fd number of
    // the image.
    let mut host_files = HashMap::new();
    for (i, fd) in files::open_host_files(&img.files)? {
        let high = sys::dup_above(fd.as_fd(), max_fd.max(100) + 1)
            .map_err(|e| stage("open files outside the container")(e.to_string()))?;
        host_files.insert(i, high);
    }
    // The container's network: the same address and MAC, a veth named for
    // this root.
    let net = match &img.container.net {
        Some(n) => {
            let mut n = n.clone();
            n.host_veth = root.host_veth(name);
            let owner = root.state_path(name);
            let taken = crate::net::ipam::take(n.ip, &owner);
            match (&opts.lease_from, taken) {
                (_, Ok(())) => {}
                (Some(from), Err(e)) => {
                    if !crate::net::ipam::take_over(n.ip, from, &owner) {
                        return Err(stage("network")(e.to_string()));
                    }
                    undo.lease_back = Some((n.ip, from.clone(), owner));
                }
                (None, Err(e)) => return Err(stage("network")(e.to_string())),
            }
            Some(n)
        }
        None => None,
    };
    // Pages shared copy-on-write between processes: read ahead into
    // shadows the tree inherits (see kinds::cow). The page stream is read
    // in the order of the live processes.
    let order: Vec<(i32, &memory::MemoryImage)> = img
        .procs
        .iter()
        .filter(|p| p.zombie.is_none())
        .map(|p| {
            img.mm
                .iter()
                .find(|(pid, _)| *pid == p.pid)
                .map(|(_, m)| (p.pid, m))
                .ok_or_else(|| stage("image")(format!("no memory for process {}", p.pid)))
        })
        .collect::<Result<_>>()?;
    let plan = cow::Plan::of(&order);
    let mut preloaded = match src.precopied() {
        None if !plan.is_empty() => {
            let mut stream = src.pages()?;
            Some(cow::Preloaded::read(plan, &order, &mut stream)?)
        }
        _ => None,
    };
    let mut shadows = src.precopied().map(|p| p.all_shadows()).unwrap_or_default();
    shadows.extend(preloaded.iter().flat_map(|p| p.users()));
    let (go_rd, go_wr) = crate::runtime::spawn::go_channel().map_err(|e| stage("socketpair")(e.to_string()))?;
    let ctx = TreeCtx {
        img: &img,
        log: &log,
        ready: &ready_wr,
        shmem: &shmem_fds,
        objects: None,
        host_files: &host_files,
        go: &go_rd,
        shadows: &shadows,
        above: shmem_fds
            .iter()
            .map(|s| s.1)
            .chain(host_files.values().map(|f| f.as_raw_fd()))
            .chain([ready_wr.as_raw_fd()])
            .max()
            .unwrap_or(100)
            + 1,
    };
    let cg_dir = File::open(cg.path()).map_err(|e| stage("open cgroup")(e.to_string()))?;
    let mut flags =
        CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    // An OCI container may live in the host's network namespace, or one
    // made for it outside (Podman's): PID 1 is forked into that one.
    use crate::runtime::oci::OciNet;
    let net_back = match img.container.oci.as_ref().map(|o| &o.net) {
        None | Some(OciNet::Own) => {
            flags |= CloneFlags::CLONE_NEWNET;
            None
        }
        Some(OciNet::Host) => None,
        Some(OciNet::Join(path)) => {
            let theirs = File::open(path)
                .map_err(|e| stage("network namespace")(format!("{}: {e} (it must exist here)", path.display())))?;
            let back = NsReturn::save("/proc/thread-self/ns/net", libc::CLONE_NEWNET)?;
            nix::sched::setns(&theirs, CloneFlags::CLONE_NEWNET)
                .map_err(|e| stage("network namespace")(format!("join {}: {e}", path.display())))?;
            Some(back)
        }
    };
    crate::fault::check("restore:after-namespaces")?;
    let forked = match timens_set {
        Ok(()) => sys::clone3(&sys::CloneOpts {
            flags: flags.bits() as u64,
            cgroup: Some(cg_dir.as_fd()),
            set_tid: &[],
        }),
        Err(_) => Err(sys::Errno::EINVAL),
    };
    if let Ok(Forked::Child) = forked {
        drop(go_wr);
        pre_image(&ctx, 0);
    }
    drop(go_rd);
    if let Some(back) = net_back {
        back.now()?;
    }
    time_back.now()?;
    timens_set?;
    let pid1 = match forked.map_err(|e| stage("clone3 PID 1")(e.to_string()))? {
        Forked::Child => unreachable!("the child ran pre_image"),
        Forked::Parent(pid) => pid,
    };
    // The network, from outside, before PID 1 makes any socket.
    if let Some(n) = &net {
        undo.net = Some(n.clone());
        crate::net::attach(n, pid1.as_raw()).map_err(|e| stage("network")(e.to_string()))?;
    }
    crate::runtime::spawn::send_go(&go_wr);
    drop(go_wr);
    let ready_fd = ready_wr.as_raw_fd();
    drop(ready_wr);
    drop(log);

    // Wait until every live task reports ready.
    let alive: Vec<&ProcessImage> = img.procs.iter().filter(|p| p.zombie.is_none()).collect();
    wait_ready(ready_rd, alive.len())?;
    tracing::debug!(ms = ms_since(t0), "restore: tree forked and ready");
    // The tasks hold their own copies of the shadows now.
    if let Some(p) = preloaded.as_mut() {
        p.release_shadows();
    }
    let fork_ms = ms_since(t0);
    let hosts = host_pids(pid1.as_raw())?;
    let host_of = |ns: i32| {
        hosts
            .get(&ns)
            .copied()
            .ok_or_else(|| stage("map PIDs")(format!("restored process {ns} not found")))
    };

    // Seize every task (one thread each so far).
    let mut traced: Vec<i32> = Vec::new();
    for p in &alive {
        let host = host_of(p.pid)?;
        let tid = Pid::from_raw(host);
        let pe = |phase| {
            move |source| Error::Ptrace {
                phase,
                tid: host,
                source,
            }
        };
        ptrace::seize(tid, ptrace::seize_options(true, true)).map_err(pe("seize"))?;
        traced.push(host);
        ptrace::interrupt(tid).map_err(pe("interrupt"))?;
        ptrace::wait_stop(tid).map_err(pe("wait for stop"))?;
    }
    if let Some(first) = traced.first() {
        let here = ptrace::get_xstate(Pid::from_raw(*first))
            .map(|x| x.len() as u32)
            .unwrap_or(0);
        if facts.xstate_size != 0 && here != facts.xstate_size {
            return Err(Error::Incompatible {
                what: "xsave layouts (CPU features)",
                image: format!("{} bytes", facts.xstate_size),
                here: format!("{here} bytes"),
            });
        }
    }

    // Rebuild each process, in the order the page stream was written.
    let t_mem = Instant::now();
    let mut stream = match preloaded {
        Some(_) => None,
        None => Some(src.pages()?),
    };
    let mut report = RestoreReport {
        name: name.to_string(),
        pid: pid1.as_raw(),
        fork_ms,
        ..Default::default()
    };
    // Threads of the processes stopped by job control, by PID.
    let mut stopped: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &alive {
        let host = host_of(p.pid)?;
        let mm = &img
            .mm
            .iter()
            .find(|(pid, _)| *pid == p.pid)
            .ok_or_else(|| stage("image")(format!("no memory for process {}", p.pid)))?
            .1;
        let sigs = img.signals.iter().find(|(pid, _)| *pid == p.pid).map(|(_, s)| s);
        let with = Rebuild {
            shmem: &shmem,
            ready_fd,
            hosts: &hosts,
            precopied: src.precopied(),
            attrs: &img.attrs,
            fdattrs: &img.fdattrs,
            prctls: &img.prctls,
            policies: &img.policies,
            files: &img.files,
        };
        crate::fault::check_pid("restore:process", p.pid)?;
        let (mut buffered, cow) = match &preloaded {
            Some(pre) => (Some(pre.pages_of(p.pid)), pre.shadowed(p.pid)),
            None => (None, Vec::new()),
        };
        let pages: &mut dyn cow::PageSource = match (&mut buffered, &mut stream) {
            (Some(b), _) => b,
            (None, Some(s)) => s,
            (None, None) => return Err(stage("pages")("neither read ahead nor a stream".into())),
        };
        let tids = rebuild(host, p, mm, sigs, pages, &cow, &with)?;
        traced.extend(tids.iter().skip(1));
        if img.attrs.iter().any(|(pid, a)| *pid == p.pid && a.stopped) {
            stopped.insert(p.pid, tids.clone());
        }
        report.threads += tids.len();
        report.pages += mm.stored_pages();
    }
    report.memory_ms = ms_since(t_mem);
    tracing::debug!(ms = ms_since(t0), "restore: processes rebuilt");
    stop_again(&img, &hosts, &stopped)?;
    // Memfds' seals, now that their pages are written and every mapping
    // of them made (a write seal forbids both).
    for &(id, s) in seals.iter().filter(|s| s.1 != libc::F_SEAL_SEAL && s.1 != 0) {
        let f = shmem.get(&id).expect("made above");
        nix::fcntl::fcntl(
            f,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_retain(s)),
        )
        .map_err(|e| stage("seal a memfd")(format!("seals {s:#x}: {e}")))?;
    }
    // Segments removed while attached are removed again, now attached.
    if let Some(ipc) = &img.ipc {
        crate::kinds::ipcns::remove_destroyed(pid1.as_raw(), ipc)?;
    }
    // Last of everything that opens files in the container: what the
    // rebuild opened under an inotify watch is not the program's event.
    for (i, _) in img
        .files
        .anon
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, crate::kinds::anonfd::AnonImage::Inotify { .. }))
    {
        let holder = img.files.procs.iter().find_map(|(pid, fds)| {
            fds.iter()
                .find(|f| f.kind == files::FdKind::Anon { obj: i as u32 })
                .and_then(|f| Some((*hosts.get(pid)?, f.fd)))
        });
        if let Some((host, fd)) = holder {
            let err = |e: sys::Errno| stage("empty a restored inotify queue")(format!("process {host} fd {fd}: {e}"));
            let pidfd = sys::pidfd_open(Pid::from_raw(host)).map_err(err)?;
            let dup = sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(err)?;
            crate::kinds::anonfd::drop_restore_events(&dup).map_err(err)?;
        }
    }
    if opts.verify {
        super::verify::restored(&img.procs, &img.mm, &img.files, &|pid| hosts.get(&pid).copied())?;
        tracing::debug!(ms = ms_since(t0), "restore: verified");
    }
    report.processes = img.procs.len();

    // Detached inside the frozen cgroup: everything starts together, at
    // commit.
    cg.set_frozen(true, FREEZE_TIMEOUT)?;
    tracing::debug!(ms = ms_since(t0), "restore: frozen");
    for tid in &traced {
        ptrace::detach(Pid::from_raw(*tid), None).map_err(|source| Error::Ptrace {
            phase: "detach",
            tid: *tid,
            source,
        })?;
    }
    // A holder of each established connection, to end its repair mode at
    // the commit.
    let mut tcp = Vec::new();
    for (i, t) in img.files.tcp.iter().enumerate() {
        let holder = img.files.procs.iter().find_map(|(pid, fds)| {
            fds.iter()
                .find(|f| f.kind == files::FdKind::Tcp { conn: i as u32 })
                .map(|f| (*pid, f.fd))
        });
        if let Some((pid, fd)) = holder {
            tcp.push((t.clone(), host_of(pid)?, fd));
        }
    }
    crate::fault::check("restore:before-ready")?;
    let c = &img.container;
    let st = ContainerState {
        version: state::STATE_VERSION,
        name: name.to_string(),
        pid: pid1.as_raw(),
        start_time: state::process_start_time(pid1.as_raw()).unwrap_or(0),
        created: c.created,
        cgroup: cg.path().to_path_buf(),
        hostname: c.hostname.clone(),
        rootfs: c.rootfs.clone(),
        init: c.init,
        command: c.command.clone(),
        limits: c.limits.clone(),
        image: None,
        net,
        oci: c.oci.clone(),
    };
    Ok(Prepared {
        root,
        state: st,
        undo,
        report,
        t0,
        tcp,
        _lock: lock,
    })
}

/// A namespace this process left, entered again when dropped (on every
/// early return) or by [`NsReturn::now`].
struct NsReturn {
    to: Option<File>,
    kind: libc::c_int,
}

impl NsReturn {
    /// Remembers the namespace behind `link` (a /proc/self/ns entry).
    fn save(link: &'static str, kind: libc::c_int) -> Result<Self> {
        let to = File::open(link).map_err(|source| Error::Io {
            phase: "remember this process's namespace",
            path: link.into(),
            source,
        })?;
        Ok(Self { to: Some(to), kind })
    }

    /// Enters it again now.
    fn now(mut self) -> Result<()> {
        match self.to.take() {
            Some(to) => nix::sched::setns(&to, CloneFlags::from_bits_retain(self.kind))
                .map_err(|e| stage("enter this process's namespace again")(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for NsReturn {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            if let Err(e) = nix::sched::setns(&to, CloneFlags::from_bits_retain(self.kind)) {
                tracing::warn!("enter this process's namespace again: {e}");
            }
        }
    }
}

/// What every process's rebuild shares.
struct Rebuild<'a> {
    shmem: &'a ShmemFds,
    ready_fd: i32,
    /// Container PID -> host PID.
    hosts: &'a HashMap<i32, i32>,
    precopied: Option<&'a PrecopyPages>,
    /// Scheduling and prctl attributes (none in older images).
    attrs: &'a [(i32, procattrs::ProcAttrs)],
    /// Locks and owners of fds (none in older images).
    fdattrs: &'a fdattrs::Image,
    /// prctl state /proc does not show (none in older images).
    prctls: &'a [(i32, crate::kinds::prctls::Prctls)],
    /// NUMA memory policies and time slices (none in older images).
    policies: &'a [(i32, Vec<crate::kinds::policies::ThreadPolicies>)],
    files: &'a FilesImage,
}

/// Stops again each process that job control had stopped (its threads
/// `stopped`, by PID), with the signal that had stopped it, while every
/// process is still seized; its parent then takes the stop's report if it
/// had taken it, and loses the SIGCHLD the stop sent it if it had none
/// pending (see procattrs). Children before their parents: a parent's
/// injected calls come before its own stop.
fn stop_again(img: &Image, hosts: &HashMap<i32, i32>, stopped: &HashMap<i32, Vec<i32>>) -> Result<()> {
    for p in img.procs.iter().rev() {
        let (Some(tids), Some(a), Some(&host)) = (
            stopped.get(&p.pid),
            img.attrs.iter().find(|(pid, _)| *pid == p.pid).map(|(_, a)| a),
            hosts.get(&p.pid),
        ) else {
            continue;
        };
        // SIGTSTP, SIGTTIN and SIGTTOU do not stop a process of an
        // orphaned group (the kernel drops them): SIGSTOP does.
        let sig = match a.stop_signal {
            s @ (libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) if !procattrs::orphaned(&img.procs, p.pgid) => s,
            _ => libc::SIGSTOP,
        };
        procattrs::stop_again(host, tids, sig)?;
        let Some((parent, &parent_host)) = img
            .procs
            .iter()
            .find(|q| q.pid == p.ppid && q.zombie.is_none())
            .and_then(|q| Some((q, hosts.get(&q.pid)?)))
        else {
            continue;
        };
        // The SIGCHLD goes to the process; the injected calls run in its
        // main thread, which would take one pending for it first.
        let sigs = img.signals.iter().find(|(pid, _)| *pid == parent.pid).map(|(_, s)| s);
        let shared = sigs.map(|s| s.shared.as_slice()).unwrap_or(&[]);
        let own = sigs
            .zip(parent.threads.first())
            .and_then(|(s, t)| s.threads.iter().find(|(tid, _)| *tid == t.tid))
            .map(|(_, q)| q.as_slice())
            .unwrap_or(&[]);
        let drop = !signals::holds(shared, libc::SIGCHLD) && !signals::holds(own, libc::SIGCHLD);
        let mut remote = hold(parent_host)?;
        procattrs::take_stop_report(&mut remote, p.pid, a.stop_signal == 0, drop)?;
    }
    Ok(())
}

/// A handle on seized process `host` (host PID), through its main thread,
/// injecting syscalls at a `syscall` instruction of its own.
fn hold(host: i32) -> Result<Remote> {
    let maps = memory::mappings_fast(host)?;
    let ip = memory::syscall_ip(host, &maps)?;
    Ok(Remote::new(host, host, ip)?)
}

/// Rebuilds one seized process; returns the host TIDs of its threads, the
/// main thread first.
fn rebuild(
    host: i32,
    p: &ProcessImage,
    mm: &MemoryImage,
    sigs: Option<&SignalsImage>,
    pages: &mut dyn cow::PageSource,
    cow: &[cow::Shadowed],
    with: &Rebuild<'_>,
) -> Result<Vec<i32>> {
    let (shmem, ready_fd) = (with.shmem, with.ready_fd);
    let host_of = |ns: i32| with.hosts.get(&ns).copied();
    let mut remote = hold(host)?;
    remote.close(ready_fd as u64)?;
    if tracing::enabled!(tracing::Level::DEBUG) {
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{host}/fd"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        tracing::debug!(pid = p.pid, host, ?fds, "rebuilding process");
    }
    regs::drop_rseq(&remote)?;
    let shadows = with.precopied.map(|s| s.shadows_of(p.pid)).unwrap_or_default();
    let t = Instant::now();
    let moved = memory::restore_layout(&mut remote, mm, shmem, &shadows, cow)?;
    tracing::debug!(ms = ms_since(t), pid = p.pid, "rebuild: layout done");
    let precopied = with.precopied.map(|s| (s, p.pid));
    let elsewhere = memory::Shadows {
        precopied,
        moved: &moved,
        cow,
    };
    memory::restore_pages(&remote, mm, pages, shmem, &host_of, &elsewhere)?;
    tracing::debug!(ms = ms_since(t), pid = p.pid, "rebuild: pages done");
    memory::restore_mm(&remote, mm)?;
    memory::restore_names(&remote, mm)?;
    // Guards before locks: a guard region can not be installed in a
    // locked mapping.
    memory::restore_guards(&remote, mm)?;
    memory::restore_locks(&remote, mm)?;
    memory::restore_seals(&remote, mm)?;
    signals::restore(&remote, sigs.map(|s| s.actions.as_slice()).unwrap_or(&[]))?;
    let (main, others) = p
        .threads
        .split_first()
        .ok_or_else(|| stage("image")(format!("process {} has no threads", p.pid)))?;
    regs::restore_kernel_state(&remote, main)?;
    let mut tids = vec![host];
    for t in others {
        let tid = spawn_thread(&remote, t, &tids)?;
        regs::restore_kernel_state(&remote.thread(tid)?, t)?;
        tids.push(tid);
    }
    // pidfds once every process exists (their numbers hold placeholders),
    // before the credentials: taking a pidfd another process holds
    // (pidfd_getfd) takes the right to trace it.
    let fds = with.files.of(p.pid);
    let epolls: Vec<(i32, &[crate::kinds::anonfd::EpollTarget])> = fds
        .iter()
        .filter_map(|f| f.kind.epoll().map(|(targets, _)| (f.fd, targets)))
        .collect();
    for f in fds {
        let (pid, same_as) = match f.kind {
            files::FdKind::Pidfd { pid } => (pid, None),
            files::FdKind::PidfdAs { pid, holder, fd } => (pid, Some((holder, fd))),
            _ => continue,
        };
        let made = crate::kinds::pidfd::Made {
            pid,
            same_as,
            own: p.pid,
        };
        crate::kinds::pidfd::restore(&remote, f.fd, &made, f.flags, &epolls)?;
    }
    // seccomp filters before the credentials: installing one takes
    // CAP_SYS_ADMIN or no_new_privs, which the process may not have once
    // its own credentials are back. The injected syscalls after this pass
    // the filters by (the tasks are seized with seccomp suspended).
    let attrs = with.attrs.iter().find(|(pid, _)| *pid == p.pid).map(|(_, a)| a);
    if let Some(a) = attrs {
        // Through the container's /proc: before a chroot.
        procattrs::restore_loginuid(&remote, &tids, a)?;
        procattrs::restore_chroot(&remote, a)?;
    }
    let filtered = p.creds.as_ref().is_some_and(|c| !c.seccomp.is_empty());
    if let Some(c) = p.creds.as_ref().filter(|_| filtered) {
        creds::restore_seccomp(&remote, c)?;
    }
    // Credentials last: once dropped, nothing else could be done.
    let current = proc::read_status(host)
        .map(|s| creds::Creds::from_status(&s))
        .unwrap_or_default();
    // prctl state, with every privilege still there (KSM merging takes
    // CAP_SYS_RESOURCE).
    let prctls = with.prctls.iter().find(|(pid, _)| *pid == p.pid).map(|(_, s)| s);
    if let Some(s) = prctls {
        crate::kinds::prctls::restore(&remote, &tids, s)?;
    }
    for (i, (tid, t)) in tids.iter().zip(&p.threads).enumerate() {
        let thread = remote.thread(*tid)?;
        regs::set_comm(&thread, &t.comm)?;
        if let Some((_, ss)) = sigs.and_then(|s| s.altstacks.iter().find(|(ns, _)| *ns == t.tid)) {
            signals::restore_altstack(&thread, ss)?;
        }
        let securebits = prctls.map(|s| s.securebits(i)).unwrap_or(0);
        match p.creds.as_ref().filter(|c| **c != current) {
            Some(c) => creds::restore(&thread, c, securebits)?,
            None if securebits != 0 => crate::kinds::prctls::restore_securebits(&thread, securebits)?,
            None => {}
        }
    }
    // Pending signals, queued from inside while every signal is blocked
    // (so that none is taken before the task runs); restore_cpu then sets
    // the real masks.
    if let Some(s) = sigs {
        for tid in &tids {
            ptrace::set_sigmask(Pid::from_raw(*tid), u64::MAX).map_err(|source| Error::Ptrace {
                phase: "block signals",
                tid: *tid,
                source,
            })?;
        }
        signals::restore_pending(&remote, p.pid, None, &s.shared)?;
        for (tid, t) in tids.iter().zip(&p.threads) {
            let queued = s
                .threads
                .iter()
                .find(|(ns, _)| *ns == t.tid)
                .map(|(_, q)| q.as_slice())
                .unwrap_or(&[]);
            signals::restore_pending(&remote.thread(*tid)?, p.pid, Some(t.tid), queued)?;
        }
    }
    if let Some(t) = &p.timers {
        timers::restore(&remote, p.pid, t)?;
    }
    if let Some(a) = attrs {
        procattrs::restore(&remote, &tids, a)?;
    }
    if let Some((_, t)) = with.policies.iter().find(|(pid, _)| *pid == p.pid) {
        crate::kinds::policies::restore(&remote, &tids, t)?;
    }
    // After the memory (its rebuild closes files, which drops POSIX
    // locks) and the credentials (F_SETOWN records the setter's).
    if let Some((_, a)) = with.fdattrs.iter().find(|(pid, _)| *pid == p.pid) {
        fdattrs::restore(&remote, a)?;
    }
    if filtered {
        // Where seccomp could not be suspended, the filters may forbid
        // munmap: then the scratch pages stay.
        let _ = remote.unmap_scratch();
    } else {
        remote.unmap_scratch()?;
    }
    for (tid, t) in tids.iter().zip(&p.threads) {
        regs::restore_cpu(*tid, t)?;
    }
    Ok(tids)
}

/// Creates a thread with its old TID by an injected clone3 in the process's
/// main thread; returns its host TID once it is in its first stop.
fn spawn_thread(remote: &Remote, t: &ThreadImage, known: &[i32]) -> Result<i32> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let set_tid_at = remote.scratch + 512;
    remote.write(set_tid_at, &t.tid.to_le_bytes())?;
    let mut args = Vec::with_capacity(88);
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup
    for w in [flags, 0, 0, 0, 0, 0, 0, 0, set_tid_at, 1, 0] {
        args.extend_from_slice(&w.to_le_bytes());
    }
    remote.write(remote.scratch, &args)?;
    remote.call(
        &format!("clone3 thread {}", t.tid),
        crate::kinds::remote::nr::CLONE3,
        &[remote.scratch, 88],
    )?;
    let host = host_tid(remote.pid, t.tid, known)
        .ok_or_else(|| stage("create thread")(format!("thread {} not found after clone3", t.tid)))?;
    ptrace::wait_stop(Pid::from_raw(host)).map_err(|source| Error::Ptrace {
        phase: "wait for new thread",
        tid: host,
        source,
    })?;
    Ok(host)
}

/// The host TID of namespace TID `ns_tid` in process `pid`.
/// Threads in `known` (host TIDs) are not it: only a new one is read.
fn host_tid(pid: i32, ns_tid: i32, known: &[i32]) -> Option<i32> {
    pstree::threads(pid)
        .ok()?
        .into_iter()
        .filter(|t| !known.contains(t))
        .find(|tid| {
            proc::read_task_status(pid, *tid)
                .map(|s| s.ns_pid == ns_tid)
                .unwrap_or(false)
        })
}

/// Namespace PID -> host PID for the tree under `pid1`.
fn host_pids(pid1: i32) -> Result<HashMap<i32, i32>> {
    let mut map = HashMap::new();
    for host in proc::walk(pid1)? {
        map.insert(proc::read_status(host)?.ns_pid, host);
    }
    Ok(map)
}

/// Reads "ok PID" / "err PID MESSAGE" lines until `count` tasks are ready,
/// or until none more has been for [`READY_TIMEOUT`] (a deep tree is
/// forked one level after another: it takes as long as it is deep).
fn wait_ready(rd: OwnedFd, count: usize) -> Result<()> {
    let mut deadline = Instant::now() + READY_TIMEOUT;
    let mut reader = BufReader::new(File::from(rd));
    let mut ready = 0;
    let mut line = String::new();
    while ready < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            reader.get_ref().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout = nix::poll::PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(nix::poll::PollTimeout::ZERO);
        if reader.buffer().is_empty()
            && nix::poll::poll(&mut fds, timeout).map_err(|e| stage("wait for the tree")(e.to_string()))? == 0
        {
            return Err(stage("wait for the tree")(format!(
                "{ready} of {count} processes ready, and none more for {READY_TIMEOUT:?}"
            )));
        }
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|e| stage("wait for the tree")(e.to_string()))?
            == 0
        {
            return Err(stage("wait for the tree")(format!(
                "the tree ended with {ready} of {count} processes ready"
            )));
        }
        match line.trim_end().split_once(' ') {
            Some(("ok", _)) => {
                ready += 1;
                deadline = Instant::now() + READY_TIMEOUT;
            }
            Some(("err", rest)) => {
                let (pid, msg) = rest.split_once(' ').unwrap_or(("?", rest));
                return Err(stage("fork the tree")(format!("process {pid}: {msg}")));
            }
            _ => return Err(stage("fork the tree")(format!("unexpected report {line:?}"))),
        }
    }
    Ok(())
}

/// What each forked task needs (it has a copy of all of it).
#[derive(Clone, Copy)]
struct TreeCtx<'a> {
    img: &'a Image,
    log: &'a OwnedFd,
    ready: &'a OwnedFd,
    /// The restorer's memfds, kept open in every task until mapped, by the
    /// object id of the shared memory, memfd or deleted mapped file each
    /// holds: (id, number).
    shmem: &'a [(u64, i32)],
    /// The shared objects (pipes, sockets...), once PID 1 has made them.
    objects: Option<&'a Objects>,
    /// Files outside the container, opened by the restorer (by file number).
    host_files: &'a HashMap<u32, OwnedFd>,
    /// Shared objects are made at this descriptor number or above.
    above: i32,
    /// Where the restorer says "go" to PID 1 once the network is there.
    go: &'a OwnedFd,
    /// Pre-copied pages' shadows: (pid, address, length). A child inherits
    /// only those of its own subtree.
    shadows: &'a [(i32, u64, u64)],
}

/// Runs in every forked task: makes its children, sets its attributes and
/// fds, reports ready and waits to be seized. Never returns.
fn pre_image(ctx: &TreeCtx<'_>, idx: usize) -> ! {
    let p = &ctx.img.procs[idx];
    sys::report_panics_to(ctx.ready.as_fd(), p.pid);
    let result = prepare_task(ctx, idx);
    let msg = match &result {
        Ok(()) => format!("ok {}\n", p.pid),
        Err(e) => format!("err {} {}\n", p.pid, e.replace('\n', " ")),
    };
    if result.is_err() {
        let _ = nix::unistd::write(ctx.ready, msg.as_bytes());
        sys::exit_now(1);
    }
    // Nothing of this program may stay open in the restored process but
    // the memfds and the ready pipe, which the restorer closes once the
    // task is seized: it may be seized any time after the report.
    let mut fds: Vec<i32> = ctx.img.files.of(p.pid).iter().map(|f| f.fd).collect();
    fds.extend(ctx.shmem.iter().map(|s| s.1));
    fds.push(ctx.ready.as_raw_fd());
    // SAFETY: this forked task never returns (it pauses until it is
    // replaced) and drops nothing: no Rust object uses what is closed.
    #[allow(unsafe_code)]
    let _ = unsafe { sys::close_all_but(&fds) };
    let _ = nix::unistd::write(ctx.ready, msg.as_bytes());
    loop {
        nix::unistd::pause();
    }
}

fn prepare_task(ctx: &TreeCtx<'_>, idx: usize) -> std::result::Result<(), String> {
    let p = &ctx.img.procs[idx];
    crate::fault::check_pid("restore:fork-process", p.pid).map_err(|e| e.to_string())?;
    let c = &ctx.img.container;
    let with_objects;
    let ctx = if p.pid == 1 {
        crate::runtime::spawn::setup_namespaces(&c.hostname, c.rootfs.as_deref())?;
        if let Some(u) = &ctx.img.uts {
            crate::kinds::uts::restore(u)?;
        }
        if let Some(ipc) = &ctx.img.ipc {
            crate::kinds::ipcns::restore(ipc)?;
        }
        crate::kinds::mounts::restore(&ctx.img.tmpfs)?;
        // Once the container's mounts are there.
        memory::name_ghosts(&ctx.img.ghosts, ctx.shmem);
        if !crate::runtime::spawn::wait_go(ctx.go) {
            return Err("the restorer gave up before the network was ready".into());
        }
        // Only in a namespace of its own: a shared one is not its to set.
        if c.oci.as_ref().is_none_or(|o| o.net.is_own()) {
            crate::net::write_sysctls(&c.sysctls)?;
        }
        // Made before anything is forked, so that every task inherits them.
        // Leaked on purpose: their descriptors become the restored tasks'
        // own (or are closed by number), and must never be dropped here.
        let objects: &'static Objects = Box::leak(Box::new(
            files::make_objects(&ctx.img.files, ctx.above, ctx.host_files, ctx.shmem).map_err(|e| e.to_string())?,
        ));
        with_objects = TreeCtx {
            objects: Some(objects),
            ..*ctx
        };
        &with_objects
    } else {
        ctx
    };
    let me = Pid::from_raw(0);
    join_group(p)?;
    let procs = &ctx.img.procs;
    // Group leaders first: their groups exist before a member joins.
    let mut mine: Vec<usize> = (0..procs.len())
        .filter(|&ci| ci != idx && procs[ci].ppid == p.pid)
        .collect();
    mine.sort_by_key(|&ci| procs[ci].pgid != procs[ci].pid);
    let exists = |pid: i32| procs.iter().any(|q| q.pid == pid);
    // Children in a session whose leader has exited (a daemon's double
    // fork): a helper takes the leader's PID, makes the session and forks
    // them, then exits; they are orphans again, as they were (checkpoint
    // refuses the case unless this task is PID 1, their reaper).
    let mut sessions: Vec<i32> = mine
        .iter()
        .map(|&ci| procs[ci].sid)
        .filter(|s| *s > 0 && !exists(*s))
        .collect();
    sessions.dedup();
    for sid in sessions {
        let members: Vec<usize> = mine.iter().copied().filter(|&ci| procs[ci].sid == sid).collect();
        match clone_with_pid(sid).map_err(|e| format!("clone3 helper for session {sid}: {e}"))? {
            Forked::Child => {
                let made = nix::unistd::setsid()
                    .map_err(|e| format!("setsid in the helper for session {sid}: {e}"))
                    .and_then(|_| members.iter().try_for_each(|&ci| fork_child(ctx, ci).map(|_| ())));
                if let Err(e) = made {
                    let _ = nix::unistd::write(ctx.ready, format!("err {sid} {e}\n").as_bytes());
                }
                sys::exit_now(0);
            }
            Forked::Parent(helper) => reap(helper, sid)?,
        }
    }
    // Children in a process group whose leader has exited: a helper holds
    // the group (with the leader's PID) until they are in it.
    let mut groups: Vec<i32> = mine
        .iter()
        .filter(|&&ci| exists(procs[ci].sid) || procs[ci].sid == 0)
        .map(|&ci| procs[ci].pgid)
        .filter(|g| *g > 0 && !exists(*g))
        .collect();
    groups.dedup();
    for pgid in &groups {
        let helper = match clone_with_pid(*pgid).map_err(|e| format!("clone3 helper for group {pgid}: {e}"))? {
            Forked::Child => {
                let _ = nix::unistd::setpgid(me, me);
                loop {
                    nix::unistd::pause();
                }
            }
            Forked::Parent(helper) => helper,
        };
        // Set here too, so that the group exists before any member asks
        // to join it.
        if let Err(e) = nix::unistd::setpgid(helper, helper) {
            let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
            reap(helper, *pgid)?;
            return Err(format!("setpgid of the helper for group {pgid}: {e}"));
        }
        let joined = mine.iter().filter(|&&ci| procs[ci].pgid == *pgid).try_for_each(|&ci| {
            let child = fork_child(ctx, ci)?;
            // Done by the parent, so that it is done before the helper goes.
            nix::unistd::setpgid(child, Pid::from_raw(*pgid)).map_err(|e| format!("setpgid {pgid}: {e}"))
        });
        let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
        reap(helper, *pgid)?;
        joined?;
    }
    for &ci in &mine {
        let c = &procs[ci];
        let by_helper = (c.sid > 0 && !exists(c.sid)) || groups.contains(&c.pgid);
        if !by_helper {
            fork_child(ctx, ci)?;
        }
    }
    enter_cwd(&p.cwd)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(p.umask));
    for l in &p.rlimits {
        sys::set_rlimit(l.resource, l.soft, l.hard).map_err(|e| format!("setrlimit {}: {e}", l.resource))?;
    }
    let fds = ctx.img.files.of(p.pid);
    let mut keep: Vec<i32> = ctx.shmem.iter().map(|s| s.1).collect();
    keep.push(ctx.ready.as_raw_fd());
    // SAFETY: only pre_image calls this, in a forked task that never
    // returns and drops nothing afterwards; it writes to the ready pipe
    // (in `keep`) and waits to be replaced.
    #[allow(unsafe_code)]
    let placed = unsafe { files::restore(fds, Some(ctx.log), ctx.objects, &keep) };
    placed.map_err(|e| e.to_string())
}

/// Forks child `ci` of the image with its PID; the child becomes it (a
/// zombie, or a task that prepares itself). Returns the child's PID.
fn fork_child(ctx: &TreeCtx<'_>, ci: usize) -> std::result::Result<Pid, String> {
    let child = &ctx.img.procs[ci];
    // Copying page tables of shadows the child does not need costs
    // time during the downtime: they are left out of the fork. A shadow of
    // shared pages is listed once per process that uses it.
    let subtree = subtree(&ctx.img.procs, child.pid);
    let needed: std::collections::HashSet<u64> = ctx
        .shadows
        .iter()
        .filter(|s| subtree.contains(&s.0))
        .map(|s| s.1)
        .collect();
    let hidden: Vec<&(i32, u64, u64)> = ctx.shadows.iter().filter(|s| !needed.contains(&s.1)).collect();
    for s in &hidden {
        let _ = sys::set_dontfork(s.1, s.2, true);
    }
    let forked = clone_with_pid(child.pid);
    if let Ok(Forked::Parent(_)) | Err(_) = forked {
        for s in &hidden {
            let _ = sys::set_dontfork(s.1, s.2, false);
        }
    }
    match forked.map_err(|e| format!("clone3 pid {}: {e}", child.pid))? {
        Forked::Child => match child.zombie {
            Some(status) => {
                if let Err(e) = join_group(child) {
                    let _ = nix::unistd::write(ctx.ready, format!("err {} {e}\n", child.pid).as_bytes());
                }
                let sigs = ctx.img.signals.iter().find(|(pid, _)| *pid == child.pid);
                become_zombie(
                    status,
                    &child.comm,
                    sigs.map(|(_, s)| s.actions.as_slice()).unwrap_or(&[]),
                )
            }
            None => pre_image(ctx, ci),
        },
        Forked::Parent(pid) => {
            if child.zombie.is_some() {
                // Its group or session exists (it made or joined it) before
                // anything else is forked.
                use nix::sys::wait::{waitid, Id, WaitPidFlag};
                waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
                    .map_err(|e| format!("wait for zombie {} to exit: {e}", child.pid))?;
            } else if child.pgid == child.pid && child.sid != child.pid {
                // Done by the parent too, so that the group exists before a
                // sibling forked next asks to join it.
                let _ = nix::unistd::setpgid(pid, pid);
            }
            Ok(pid)
        }
    }
}

/// Puts the calling task (process `p` of the image, a zombie-to-be too)
/// in its session and process group, as it was.
fn join_group(p: &ProcessImage) -> std::result::Result<(), String> {
    let me = Pid::from_raw(0);
    if p.sid == p.pid {
        nix::unistd::setsid().map(|_| ()).map_err(|e| format!("setsid: {e}"))
    } else if p.pgid == p.pid {
        nix::unistd::setpgid(me, me).map_err(|e| format!("setpgid: {e}"))
    } else if p.pgid > 0 && nix::unistd::getpgrp().as_raw() != p.pgid {
        nix::unistd::setpgid(me, Pid::from_raw(p.pgid)).map_err(|e| format!("setpgid {}: {e}", p.pgid))
    } else {
        Ok(())
    }
}

/// clone3 with the PID `pid` in the container.
fn clone_with_pid(pid: i32) -> std::result::Result<Forked, sys::Errno> {
    let set_tid = [pid];
    sys::clone3(&sys::CloneOpts {
        flags: 0,
        cgroup: None,
        set_tid: &set_tid,
    })
}

/// Waits for helper `helper` (PID `pid` in the container) to end.
fn reap(helper: Pid, pid: i32) -> std::result::Result<(), String> {
    nix::sys::wait::waitpid(helper, None)
        .map(|_| ())
        .map_err(|e| format!("wait for the helper with PID {pid}: {e}"))
}

/// Makes `cwd` (as /proc showed it) the working directory. One that had
/// been deleted ("PATH (deleted)") is made again, empty, entered and
/// removed, so that the process holds a deleted directory as it did:
/// under its old name if that is free (/proc shows the same), or else
/// beside it.
fn enter_cwd(cwd: &str) -> std::result::Result<(), String> {
    let chdir = |dir: &str| nix::unistd::chdir(dir).map_err(|e| format!("chdir {dir}: {e}"));
    let path = match cwd.strip_suffix(" (deleted)") {
        Some(path) if !std::path::Path::new(cwd).is_dir() => path,
        _ => return chdir(cwd),
    };
    let beside;
    let dir = if std::path::Path::new(path).exists() {
        beside = format!("{path}.migrate-{}", std::process::id());
        beside.as_str()
    } else {
        path
    };
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o700);
    nix::unistd::mkdir(dir, mode).map_err(|e| format!("make the deleted working directory {dir} again: {e}"))?;
    chdir(dir)?;
    std::fs::remove_dir(dir).map_err(|e| format!("remove the working directory {dir} again: {e}"))
}

/// `top` and its descendants in the image's tree.
fn subtree(procs: &[ProcessImage], top: i32) -> std::collections::HashSet<i32> {
    let mut set = std::collections::HashSet::from([top]);
    // Parents usually come first: one pass, and one more to see nothing
    // changes.
    loop {
        let before = set.len();
        for p in procs {
            if p.ppid != 0 && set.contains(&p.ppid) {
                set.insert(p.pid);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

/// Ends the calling task the way the zombie it stands for ended, with its
/// dispositions (`actions`: ignored, or caught).
fn become_zombie(status: i32, comm: &str, actions: &[signals::SigAction]) -> ! {
    // Its name, as ps shows it (else the restorer's).
    if let Ok(name) = std::ffi::CString::new(comm) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let sig = status & 0x7f;
    // Every signal's disposition as the image has it (the signal it dies of
    // had the default), none blocked.
    for signo in (1..=64).filter(|s| ![libc::SIGKILL, libc::SIGSTOP].contains(s)) {
        let how = match actions.iter().find(|a| a.signo as i32 == signo) {
            Some(a) if signo != sig && a.handler == libc::SIG_IGN as u64 => sys::Disposition::Ignored,
            Some(_) if signo != sig => sys::Disposition::Caught,
            _ => sys::Disposition::Default,
        };
        let _ = sys::set_disposition(signo, how);
    }
    let none = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&none), None);
    if sig != 0 {
        if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
            let _ = nix::sys::signal::raise(s);
        }
        sys::exit_now(128 + sig);
    }
    sys::exit_now((status >> 8) & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_ns() -> std::path::PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").expect("read ns link")
    }

    /// Leaves this thread's network namespace, then fails: the guard must
    /// bring it back on the early return.
    fn leave_and_fail() -> Result<()> {
        let _back = NsReturn::save("/proc/thread-self/ns/net", libc::CLONE_NEWNET)?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| stage("unshare")(e.to_string()))?;
        Err(stage("test")("an early return".into()))
    }

    #[test]
    fn a_namespace_left_is_entered_again_on_every_exit() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let before = net_ns();
        assert!(leave_and_fail().is_err());
        assert_eq!(
            net_ns(),
            before,
            "the early return left the thread in another namespace"
        );
        let back = NsReturn::save("/proc/thread-self/ns/net", libc::CLONE_NEWNET).unwrap();
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
        assert_ne!(net_ns(), before);
        back.now().unwrap();
        assert_eq!(net_ns(), before);
    }
}
