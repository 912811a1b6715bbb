//! Checkpoint, in phases:
//! 1. freeze the cgroup (a race-free task list);
//! 2. seize and interrupt every thread while frozen, then thaw (the tasks
//!    stay in ptrace-stop);
//! 3. collect the tree and check what can not be dumped (fds) first;
//! 4. dump each process: threads and registers, signal handlers, memory;
//! 5. seal the image, then kill the container or let it run again.
//!
//! Any failure detaches every task and puts the cgroup back as it was: the
//! container keeps running.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use nix::unistd::Pid;
use serde::Serialize;

use super::{ms_since, put, Container, ContainerImage, Error, Result, TcpMode};
use crate::image::{store::ImageSink, MachineFacts};
use crate::kinds::memory::{self, DumpStats, MemoryImage, SeenPages};
use crate::kinds::pstree::{self, ProcessImage};
use crate::kinds::remote::Remote;
use crate::kinds::{creds, files, regs, signals, timens, timers};
use crate::proc;
use crate::runtime::state::ImageRecord;
use crate::runtime::{Root, Status, FREEZE_TIMEOUT};
use crate::sys::ptrace;

/// How to checkpoint.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// Thaw and keep the container running afterwards instead of killing it.
    pub leave_running: bool,
    /// Recorded in the container's state when it is killed, so that `ps`
    /// shows it as checkpointed or suspended and restore can find it.
    pub record: Option<ImageRecord>,
    /// Largest file carried in the image (deleted-but-open files, memfds);
    /// None: [`DEFAULT_FILE_CAP`].
    pub file_cap: Option<u64>,
    /// Established TCP connections: refuse, repair or close.
    pub tcp: TcpMode,
}

/// The default cap for files carried in the image.
pub const DEFAULT_FILE_CAP: u64 = 64 << 20;

/// What a checkpoint did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointReport {
    pub processes: usize,
    pub threads: usize,
    pub zombies: usize,
    pub pages_stored: u64,
    pub pages_zero: u64,
    pub pages_skipped: u64,
    /// Pages live migration's pre-copy sent that were not written since.
    pub pages_precopied: u64,
    /// Bytes of memory saved (stored and all-zero pages).
    pub resident_bytes: u64,
    pub image_bytes: u64,
    pub freeze_ms: f64,
    pub dump_ms: f64,
    /// How long the container could not run.
    pub frozen_ms: f64,
    pub total_ms: f64,
}

/// The threads seized so far, detached again if the checkpoint fails.
#[derive(Default)]
pub(crate) struct Seized {
    pub(crate) tids: Vec<(i32, Vec<i32>)>,
}

impl Seized {
    pub(crate) fn detach_all(&mut self) {
        for (tid, held) in self.tids.drain(..) {
            let pid = Pid::from_raw(tid);
            let mut first = held.into_iter();
            let _ = ptrace::detach(pid, first.next());
            // Re-sent to the thread (its process for shared ones would be
            // as good: they were pending either way).
            let tgid = proc::read_status(tid).map(|s| s.tgid).unwrap_or(tid);
            for sig in first {
                let _ = ptrace::tgkill(tgid, tid, sig);
            }
        }
    }

    /// After the tasks were killed: collects their exits, which go to us
    /// as their tracer first. Until then a PID namespace's init, waiting
    /// for its children in its own exit, does not end.
    pub(crate) fn reap_killed(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        // In any order: an init's exit waits for its children's.
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let mut left: Vec<i32> = self.tids.drain(..).map(|(tid, _)| tid).collect();
        while !left.is_empty() && Instant::now() < deadline {
            left.retain(|tid| {
                !matches!(
                    waitpid(Pid::from_raw(*tid), Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_)
                )
            });
            if !left.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Checkpoints container `name` of `root` into `sink`.
pub fn checkpoint(
    root: &Root,
    name: &str,
    sink: &mut dyn ImageSink,
    opts: &CheckpointOptions,
) -> Result<CheckpointReport> {
    let lock = root.lock_state()?;
    let frozen = freeze_and_dump(root, lock, name, sink, opts, Vec::new(), None)?;
    let t0 = frozen.t0;
    let mut report = if opts.leave_running {
        frozen.resume()?
    } else {
        frozen.kill(opts.record.clone())?
    };
    report.frozen_ms = ms_since(t0);
    report.total_ms = ms_since(t0);
    Ok(report)
}

/// A container whose image is sealed, still held: frozen or ptrace-stopped,
/// its connections in repair mode and its host link down. It is killed
/// ([`Frozen::kill`]) or let run again ([`Frozen::resume`]); dropped
/// without either, it runs again as before.
pub(crate) struct Frozen<'r> {
    root: &'r Root,
    st: crate::runtime::ContainerState,
    cg: crate::cgroup::Cgroup,
    was_frozen: bool,
    link_down: bool,
    seized: Seized,
    repaired: files::Repaired,
    /// Locks let go of for a live migration's destination.
    released: crate::kinds::fdattrs::Released,
    pub report: CheckpointReport,
    /// When the container was frozen.
    pub t0: Instant,
    done: bool,
    /// Pre-copy's dirty tracking, ended when this goes.
    tracking: Vec<crate::kinds::precopy::Tracked>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Frozen<'_> {
    fn relink(&self) {
        if self.link_down {
            if let Some(n) = &self.st.net {
                let _ = crate::net::set_host_link(n, true);
            }
        }
    }

    /// Lets the container run again, all tasks together.
    pub(crate) fn resume(mut self) -> Result<CheckpointReport> {
        self.done = true;
        // Locks back while the tasks can still run injected syscalls (a
        // frozen cgroup would hold them).
        self.released.retake()?;
        // Detach while frozen, so that every task starts again together.
        self.cg.set_frozen(true, FREEZE_TIMEOUT)?;
        drop(std::mem::take(&mut self.repaired));
        self.relink();
        self.seized.detach_all();
        if !self.was_frozen {
            self.cg.set_frozen(false, FREEZE_TIMEOUT)?;
        }
        Ok(self.report.clone())
    }

    /// Kills the container; `record` says where its image is (None: its
    /// state is removed too).
    pub(crate) fn kill(mut self, record: Option<ImageRecord>) -> Result<CheckpointReport> {
        self.done = true;
        // Connections stay in repair mode: they close without a word.
        self.repaired.disarm();
        self.cg.kill_all(FREEZE_TIMEOUT)?;
        self.seized.reap_killed();
        let owner = self.root.state_path(&self.st.name);
        self.root.forget_processes(&self.st, record.clone())?;
        // Taken from an OCI runtime: the runtime's record goes too, so that
        // the ID can come back there.
        if let Some(origin) = &self.st.oci {
            if let Err(why) = crate::runtime::oci::forget(origin) {
                tracing::warn!("{why}");
            }
        }
        if record.is_none() {
            if let Some(n) = &self.st.net {
                crate::net::ipam::release(n.ip, &owner);
            }
        }
        Ok(self.report.clone())
    }

    /// Leaves the container frozen, its tasks detached, its link down: for
    /// when it is not known whether it runs elsewhere now.
    pub(crate) fn keep_frozen(mut self) {
        self.done = true;
        let _ = self.cg.set_frozen(true, FREEZE_TIMEOUT);
        drop(std::mem::take(&mut self.repaired));
        self.seized.detach_all();
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.released.retake() {
                tracing::warn!("the container runs again, but a lock it held could not be taken back: {e}");
            }
            let _ = self.cg.set_frozen(true, FREEZE_TIMEOUT);
            drop(std::mem::take(&mut self.repaired));
            self.relink();
            self.seized.detach_all();
            let _ = self.cg.set_frozen(self.was_frozen, FREEZE_TIMEOUT);
        }
    }
}

/// Phases 1-4 and the seal, under the root's `lock`. On failure the sink
/// is abandoned and the container runs again. `precopy` are the processes
/// whose pages live migration already sent. `log_head` (the container's
/// log as read before the freeze) puts the log into the image: the rest of
/// it is read once every task is stopped, so that no line written before
/// the freeze stays behind and the bulk is not read during the downtime.
pub(crate) fn freeze_and_dump<'r>(
    root: &'r Root,
    lock: nix::fcntl::Flock<std::fs::File>,
    name: &str,
    sink: &mut dyn ImageSink,
    opts: &CheckpointOptions,
    precopy: Vec<crate::kinds::precopy::Tracked>,
    log_head: Option<Vec<u8>>,
) -> Result<Frozen<'r>> {
    let t0 = Instant::now();
    let (st, status) = super::load_live(root, name)?;
    let was_frozen = status == Status::Frozen;
    let cg = st.cgroup();
    preflight(&st, opts.file_cap.unwrap_or(DEFAULT_FILE_CAP)).map_err(|e| Error::Failed {
        op: "checkpoint",
        name: name.to_string(),
        kept_running: true,
        source: Box::new(e),
    })?;
    cg.set_frozen(true, FREEZE_TIMEOUT)?;
    // Traffic to the container waits (and is retransmitted) while it is
    // frozen, rather than being answered by a closed socket.
    let link_down = st
        .net
        .as_ref()
        .map(|n| crate::net::set_host_link(n, false).is_ok())
        .unwrap_or(false);
    let mut frozen = Frozen {
        root,
        cg: cg.clone(),
        was_frozen,
        link_down,
        seized: Seized::default(),
        repaired: files::Repaired::default(),
        released: Default::default(),
        report: CheckpointReport {
            freeze_ms: ms_since(t0),
            ..Default::default()
        },
        t0,
        done: false,
        tracking: Vec::new(),
        _lock: lock,
        st,
    };
    let t_dump = Instant::now();
    let what = Dumping {
        root,
        st: &frozen.st,
        cg: &cg,
        file_cap: opts.file_cap.unwrap_or(DEFAULT_FILE_CAP),
        tcp: opts.tcp,
        log_head: log_head.as_deref(),
        release_locks: log_head.is_some(),
    };
    let mut report = frozen.report.clone();
    let mut seized = Seized::default();
    let mut repaired = files::Repaired::default();
    let mut released = Default::default();
    let mut precopy = precopy;
    let mut held = Held {
        seized: &mut seized,
        repaired: &mut repaired,
        released: &mut released,
    };
    let dumped = dump(&what, sink, &mut held, &mut report, &mut precopy).and_then(|(procs, xstate)| {
        let (_, image_bytes) = sink.finish(
            MachineFacts::of_this_machine(xstate),
            name,
            crate::runtime::state::now_secs(),
        )?;
        crate::fault::check("checkpoint:after-seal")?;
        Ok((procs, image_bytes))
    });
    frozen.seized = seized;
    frozen.repaired = repaired;
    frozen.released = released;
    frozen.tracking = precopy;
    report.dump_ms = ms_since(t_dump);
    match dumped {
        Ok((procs, image_bytes)) => {
            report.processes = procs;
            report.image_bytes = image_bytes;
            frozen.report = report;
            Ok(frozen)
        }
        Err(e) => {
            sink.abandon();
            drop(frozen);
            Err(Error::Failed {
                op: "checkpoint",
                name: name.to_string(),
                kept_running: true,
                source: Box::new(e),
            })
        }
    }
}

/// What can be refused while the container runs, before anything is
/// stopped: state migrate does not carry. Checked again on the stopped
/// tree ([`refuse_uncarried`]), since a process may change in between.
pub(crate) fn preflight(st: &crate::runtime::ContainerState, file_cap: u64) -> Result<()> {
    let tree = proc::walk(st.pid)?;
    let mut statuses = Vec::new();
    let mut procs = Vec::new();
    for host in tree {
        // A process that ended meanwhile holds nothing to refuse.
        let (Ok(s), Ok(tids)) = (proc::read_status(host), pstree::threads(host)) else {
            continue;
        };
        if s.state != 'Z' {
            procs.push((host, s.ns_pid, tids));
        }
        statuses.push((host, s));
    }
    // Only while it runs: once seized, every task is stopped and traced.
    pstree::refuse_uncarried(&statuses)?;
    refuse_namespaces_and_mounts(st, &procs)?;
    st.cgroup().refuse_nested()?;
    // A vfork not done yet shares its parent's address space for the
    // moment its child takes to exec or exit (dash runs commands so).
    for _ in 0..VFORK_WAITS {
        if !vfork_pending(&statuses) {
            break;
        }
        std::thread::sleep(VFORK_WAIT);
    }
    refuse_shared_with_processes(&procs)?;
    let pairs: Vec<(i32, i32)> = procs.iter().map(|(h, n, _)| (*h, *n)).collect();
    let mounts = files::KnownMounts::of(&pairs)?;
    let sockets = files::Sockets::of(st.pid)?;
    for (host, ns, tids) in &procs {
        // A process that ended meanwhile (a shell's short-lived child)
        // holds nothing to refuse.
        let checked = refuse_uncarried_by(*host, *ns, tids).and_then(|()| {
            // The dump checks these again as it reads each fd and mapping.
            files::refuse_uncarried(*host, *ns, file_cap, &mounts, &sockets)?;
            Ok(memory::refuse_uncarried(*host)?)
        });
        match checked {
            Err(_) if !proc::running(*host) => {}
            other => other?,
        }
    }
    // Owners outside the container.
    crate::kinds::fdattrs::dump(&procs, &ns_tid, true)?;
    // After the processes: their mappings of SysV segments are checked
    // against the segments.
    crate::kinds::ipcns::refuse_uncarried(st.pid, &procs, file_cap)?;
    refuse_multicast(st)
}

/// Multicast groups joined in the container's network namespace, if it is
/// its own (in one it shares, they may be anyone's).
fn refuse_multicast(st: &crate::runtime::ContainerState) -> Result<()> {
    if st.oci.as_ref().is_none_or(|o| o.net.is_own()) {
        crate::kinds::multicast::refuse_uncarried(st.pid)?;
    }
    Ok(())
}

/// The refusals of [`preflight`] that the dump would not make itself as it
/// reads each fd and mapping, run again on the stopped tree; on processes
/// (host PID, PID in the container, threads).
fn refuse_uncarried(
    st: &crate::runtime::ContainerState,
    cg: &crate::cgroup::Cgroup,
    procs: &[(i32, i32, Vec<i32>)],
    file_cap: u64,
) -> Result<()> {
    refuse_namespaces_and_mounts(st, procs)?;
    cg.refuse_nested()?;
    refuse_shared_with_processes(procs)?;
    for (host, ns, tids) in procs {
        refuse_uncarried_by(*host, *ns, tids)?;
    }
    crate::kinds::ipcns::refuse_uncarried(st.pid, procs, file_cap)?;
    refuse_multicast(st)
}

/// Processes in namespaces of their own, and mounts a restore would not
/// make again.
fn refuse_namespaces_and_mounts(st: &crate::runtime::ContainerState, procs: &[(i32, i32, Vec<i32>)]) -> Result<()> {
    let pairs: Vec<(i32, i32)> = procs.iter().map(|(h, n, _)| (*h, *n)).collect();
    pstree::refuse_own_namespaces(st.pid, &pairs)?;
    Ok(crate::kinds::mounts::refuse_uncarried(st.pid, st.rootfs.as_deref())?)
}

/// The refusals of one process's own threads' state.
fn refuse_uncarried_by(host: i32, ns: i32, tids: &[i32]) -> Result<()> {
    creds::refuse_uncarried(host, ns, tids)?;
    crate::kinds::policies::refuse_uncarried(host, ns)?;
    Ok(crate::kinds::procattrs::refuse_uncarried(host, ns, tids)?)
}

/// How long a checkpoint lets a vfork in the container finish (an exec or
/// exit of the child), before it refuses the shared address space.
const VFORK_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
const VFORK_WAITS: usize = 250;

/// Whether a process of `statuses` (host PID, status) shares its parent's
/// address space without being a thread of it: a vfork not done yet (or a
/// clone with CLONE_VM, which does not end by itself).
fn vfork_pending(statuses: &[(i32, proc::Status)]) -> bool {
    statuses.iter().any(|(host, s)| {
        s.state != 'Z'
            && statuses.iter().any(|(p, _)| *p == s.host_ppid)
            && crate::sys::kcmp_same(*host, s.host_ppid, crate::sys::KCMP_VM).unwrap_or(false)
    })
}

/// Processes sharing one fd table (CLONE_FILES), one address space
/// (CLONE_VM without CLONE_THREAD, or a vfork not done yet) or one cwd,
/// root and umask (CLONE_FS) would come back with one each.
fn refuse_shared_with_processes(procs: &[(i32, i32, Vec<i32>)]) -> Result<()> {
    const SHARED: [(i32, &str, &str); 3] = [
        (crate::sys::KCMP_FILES, "its fd table", "CLONE_FILES"),
        (
            crate::sys::KCMP_VM,
            "its address space",
            "CLONE_VM, or a vfork not done yet",
        ),
        (crate::sys::KCMP_FS, "its working directory, root and umask", "CLONE_FS"),
    ];
    for (kind, what, flag) in SHARED {
        // In kcmp's order of the objects: each process is looked up among
        // those before it with a binary search (pairs would be quadratic
        // in a tree of hundreds). A failed comparison is no sharing.
        let mut seen: Vec<usize> = Vec::with_capacity(procs.len());
        for (i, (b, b_ns, _)) in procs.iter().enumerate() {
            let found = seen.binary_search_by(|&j| {
                crate::sys::kcmp_order(procs[j].0, *b, kind, 0, 0).unwrap_or(std::cmp::Ordering::Less)
            });
            match found {
                Ok(k) => {
                    let (a, a_ns, _) = &procs[seen[k]];
                    return Err(Error::SharedWithProcess {
                        pid: *a,
                        ns_pid: *a_ns,
                        other: *b_ns,
                        what,
                        flag,
                    });
                }
                Err(at) => seen.insert(at, i),
            }
        }
    }
    Ok(())
}

/// What phases 2-4 work on.
struct Dumping<'a> {
    root: &'a Root,
    st: &'a crate::runtime::ContainerState,
    cg: &'a crate::cgroup::Cgroup,
    file_cap: u64,
    tcp: TcpMode,
    log_head: Option<&'a [u8]>,
    /// A live migration: let go of file locks once the image is complete,
    /// for the destination to take.
    release_locks: bool,
}

/// What a dump takes hold of and [`Frozen`] gives back: the seized tasks,
/// connections in repair mode, locks let go of.
struct Held<'a> {
    seized: &'a mut Seized,
    repaired: &'a mut files::Repaired,
    released: &'a mut crate::kinds::fdattrs::Released,
}

/// Phases 2-4. Returns the number of processes and the xstate size.
fn dump(
    what: &Dumping<'_>,
    sink: &mut dyn ImageSink,
    held: &mut Held<'_>,
    report: &mut CheckpointReport,
    precopy: &mut [crate::kinds::precopy::Tracked],
) -> Result<(usize, u32)> {
    let (seized, repaired) = (&mut *held.seized, &mut *held.repaired);
    let (root, st, cg) = (what.root, what.st, what.cg);
    crate::fault::check("checkpoint:after-freeze")?;
    // Exiting tasks do not freeze: one caught on its way out is let become
    // a zombie first (it takes microseconds), so that no task without an
    // address space is taken for a live one.
    let mut tree = proc::walk(st.pid)?;
    for _ in 0..200 {
        if !tree.iter().any(|p| proc::exiting(*p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        tree = proc::walk(st.pid)?;
    }
    // A vfork caught by the freeze is let finish: thawed for a moment,
    // frozen again (see [`preflight`]).
    for _ in 0..VFORK_WAITS {
        let statuses: Vec<_> = tree
            .iter()
            .filter_map(|p| Some((*p, proc::read_status(*p).ok()?)))
            .collect();
        if !vfork_pending(&statuses) {
            break;
        }
        cg.set_frozen(false, FREEZE_TIMEOUT)?;
        std::thread::sleep(VFORK_WAIT);
        cg.set_frozen(true, FREEZE_TIMEOUT)?;
        tree = proc::walk(st.pid)?;
    }
    // The tree, and anything in the cgroup outside it.
    let in_tree: HashSet<i32> = tree.iter().copied().collect();
    if let Some(stray) = cg.procs()?.into_iter().find(|p| !in_tree.contains(p)) {
        return Err(pstree::Error::Stray { host_pid: stray }.into());
    }
    // A process that was exiting as the cgroup froze (exiting tasks do not
    // freeze) may be gone since the walk, reaped: it holds nothing.
    let gone = |pid: i32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    let mut statuses = Vec::new();
    for p in &tree {
        match proc::read_status(*p) {
            Ok(s) => statuses.push((*p, s)),
            Err(_) if gone(*p) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Seize every thread while frozen, then thaw: they stay stopped.
    // One that ended since its status was read is a zombie now, or gone.
    let mut live_threads = Vec::new();
    let mut ended = Vec::new();
    for (host, s) in statuses.iter_mut().filter(|(_, s)| s.state != 'Z') {
        match pstree::threads(*host) {
            Ok(tids) => live_threads.push((*host, tids)),
            Err(e) => match proc::read_status(*host) {
                Ok(now) if now.state == 'Z' => *s = now,
                Err(_) if gone(*host) => ended.push(*host),
                _ => return Err(e.into()),
            },
        }
    }
    statuses.retain(|(h, _)| !ended.contains(h));
    let host_to_ns = |host: i32| {
        statuses
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, s)| s.ns_pid)
            .unwrap_or(0)
    };

    let alive: Vec<_> = statuses.iter().filter(|(_, s)| s.state != 'Z').collect();
    let mut thread_lists = Vec::new();
    for (_, tids) in live_threads {
        for tid in &tids {
            let p = Pid::from_raw(*tid);
            ptrace::seize(p, ptrace::seize_options(false, false)).map_err(|source| Error::Ptrace {
                phase: "seize",
                tid: *tid,
                source,
            })?;
            seized.tids.push((*tid, Vec::new()));
            ptrace::interrupt(p).map_err(|source| Error::Ptrace {
                phase: "interrupt",
                tid: *tid,
                source,
            })?;
        }
        thread_lists.push(tids);
    }
    cg.set_frozen(false, FREEZE_TIMEOUT)?;
    let t_phase = Instant::now();
    tracing::debug!("dump: seized, thawed");
    for entry in seized.tids.iter_mut() {
        entry.1 = ptrace::wait_stop(Pid::from_raw(entry.0)).map_err(|source| Error::Ptrace {
            phase: "wait for stop (a process in vfork or in an uninterruptible wait did not stop; try again)",
            tid: entry.0,
            source,
        })?;
    }
    // Everything is stopped: what was refused before the freeze is checked
    // again, the log is complete, and what pre-copy sent that is still as
    // it was.
    tracing::debug!(ms = ms_since(t_phase), "dump: all stopped");
    let procs: Vec<_> = alive
        .iter()
        .zip(&thread_lists)
        .map(|((h, s), tids)| (*h, s.ns_pid, tids.clone()))
        .collect();
    refuse_uncarried(st, cg, &procs, what.file_cap)?;
    crate::fault::check("checkpoint:after-seize")?;
    if let Some(head) = what.log_head {
        let path = root.log_path(&st.name);
        let log = log_tail(&path, head).map_err(|source| Error::Io {
            phase: "read the container's log",
            path,
            source,
        })?;
        sink.put(super::live::LOG_SECTION, &log)?;
    }
    let mut views = std::collections::HashMap::new();
    // A tracked process that exited before the freeze is not dumped.
    // One exiting as it was frozen has no address space left to scan
    // (ESRCH): without a view, its memory is read whole, if it is dumped.
    for t in precopy.iter_mut().filter(|t| alive.iter().any(|(h, _)| *h == t.host)) {
        match t.finish() {
            Ok(v) => {
                views.insert(t.host, v);
            }
            Err(crate::kinds::precopy::Error::Sys {
                source: crate::sys::Errno::ESRCH,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!(ms = ms_since(t_phase), "dump: pre-copy views done");

    // What can not be dumped is found before any heavy work.
    let log = root.log_path(&st.name);
    let pairs: Vec<(i32, i32)> = alive.iter().map(|(h, s)| (*h, s.ns_pid)).collect();
    let ns_pid_of = |host: i32| statuses.iter().find(|(h, _)| *h == host).map(|(_, s)| s.ns_pid);
    let fd_images = files::dump_all(
        &pairs,
        &log,
        st.pid,
        what.file_cap,
        what.tcp.into(),
        repaired,
        &ns_pid_of,
    )?;
    let fdattrs = crate::kinds::fdattrs::dump(&procs, &ns_tid, false)?;
    tracing::debug!(ms = ms_since(t_phase), "dump: files done");
    crate::fault::check("checkpoint:after-files")?;

    let mut processes = Vec::new();
    let mut mm_images: Vec<(i32, MemoryImage)> = Vec::new();
    let mut sig_images = Vec::new();
    let mut attrs = Vec::new();
    let mut prctls = Vec::new();
    let mut policies = Vec::new();
    let mut seen_pages = SeenPages::default();
    seen_pages.ghost_cap = what.file_cap;
    let mut stats = DumpStats::default();
    let mut xstate = 0u32;
    let mut alive_idx = 0;
    for (host, s) in &statuses {
        let mut p = ProcessImage {
            pid: s.ns_pid,
            ppid: host_to_ns(s.host_ppid),
            pgid: s.ns_pgid,
            sid: s.ns_sid,
            host_pid: *host,
            comm: s.name.clone(),
            zombie: None,
            threads: Vec::new(),
            cwd: String::new(),
            umask: s.umask,
            rlimits: Vec::new(),
            creds: None,
            timers: None,
        };
        if s.state == 'Z' {
            p.zombie = Some(pstree::zombie_status(*host));
            report.zombies += 1;
            // Its dispositions, as its status shows them.
            let actions = signals::of_zombie(s.sig_ign, s.sig_cgt);
            if !actions.is_empty() {
                sig_images.push((
                    s.ns_pid,
                    signals::SignalsImage {
                        actions,
                        shared: Vec::new(),
                        threads: Vec::new(),
                        altstacks: Vec::new(),
                    },
                ));
            }
            processes.push(p);
            continue;
        }
        let tids = &thread_lists[alive_idx];
        alive_idx += 1;
        p.cwd = std::fs::read_link(format!("/proc/{host}/cwd"))
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".into());
        p.rlimits = pstree::rlimits(*host);
        let maps = memory::mappings(*host)?;
        let ip = memory::syscall_ip(*host, &maps)?;
        let mut main = Remote::new(*host, *host, ip)?;
        let scratch = main.map_scratch(None)?;
        crate::fault::check_pid("checkpoint:dump-process", s.ns_pid)?;
        for tid in tids {
            let thread = main.thread(*tid)?;
            let regs = ptrace::get_regs(Pid::from_raw(*tid)).map_err(|source| Error::Ptrace {
                phase: "read registers",
                tid: *tid,
                source,
            })?;
            let ns_tid = ns_tid(*host, *tid);
            let img = regs::dump(&thread, ns_tid, &regs)?;
            xstate = img.xstate.len() as u32;
            p.threads.push(img);
            report.threads += 1;
        }
        let pending = |tid: i32, shared: bool| {
            signals::dump_pending(tid, shared).map_err(|source| Error::Ptrace {
                phase: "read pending signals",
                tid,
                source,
            })
        };
        let mut per_thread = Vec::new();
        let mut altstacks = Vec::new();
        for (tid, t) in tids.iter().zip(&p.threads) {
            per_thread.push((t.tid, pending(*tid, false)?));
            altstacks.push((t.tid, signals::dump_altstack(&main.thread(*tid)?)?));
        }
        sig_images.push((
            s.ns_pid,
            signals::SignalsImage {
                actions: signals::dump(&main)?,
                shared: pending(*host, true)?,
                threads: per_thread,
                altstacks,
            },
        ));
        p.creds = Some(creds::dump(&main, s.ns_pid, tids)?);
        let mut a = crate::kinds::procattrs::dump(&main)?;
        // Seen before the seize, which stops every task for the tracer.
        a.stopped = s.state == 'T';
        if a.stopped {
            a.stop_signal = crate::kinds::procattrs::stop_signal_of(*host)?;
            tracing::debug!(pid = s.ns_pid, signal = a.stop_signal, "dump: stopped by job control");
        }
        a.chroot = crate::kinds::procattrs::chroot_of(*host, st.pid);
        attrs.push((s.ns_pid, a));
        prctls.push((s.ns_pid, crate::kinds::prctls::dump(&main, tids)?));
        policies.push((s.ns_pid, crate::kinds::policies::dump(&main, tids)?));
        let host_to_ns_tid = |tid: i32| ns_tid(*host, tid);
        p.timers = Some(timers::dump(&main, &host_to_ns_tid)?);
        tracing::debug!(
            ms = ms_since(t_phase),
            pid = s.ns_pid,
            "dump: process state done, memory next"
        );
        let mm = memory::dump(
            &main,
            &maps,
            (scratch, scratch + crate::kinds::remote::SCRATCH_LEN),
            sink.pages()?,
            &mut seen_pages,
            s.ns_pid,
            &mut stats,
            views.get(host),
        )?;
        if what.release_locks {
            if let Some((_, a)) = fdattrs.iter().find(|(p, _)| *p == s.ns_pid) {
                held.released.release(&main, a)?;
            }
        }
        main.unmap_scratch()?;
        mm_images.push((s.ns_pid, mm));
        processes.push(p);
    }
    sink.finish_pages()?;
    tracing::debug!(ms = ms_since(t_phase), "dump: memory and page stream done");
    report.pages_stored = stats.pages_stored;
    report.pages_zero = stats.pages_zero;
    report.pages_skipped = stats.pages_skipped;
    report.pages_precopied = stats.pages_precopied;
    report.resident_bytes = (stats.pages_stored + stats.pages_zero) * crate::kinds::remote::PAGE;

    let container = ContainerImage {
        name: st.name.clone(),
        hostname: st.hostname.clone(),
        rootfs: st.rootfs.clone(),
        init: st.init,
        command: st.command.clone(),
        limits: st.limits.clone(),
        created: st.created,
        clocks: timens::dump(st.pid)?,
        net: st.net.clone(),
        oci: st.oci.clone(),
        sysctls: crate::net::read_sysctls(st.pid).map_err(|e| Error::Stage {
            phase: "read network sysctls",
            message: e.to_string(),
        })?,
    };
    put::<Container>(sink, &container)?;
    put::<pstree::Section>(sink, &processes)?;
    put::<memory::Section>(sink, &mm_images)?;
    put::<signals::Section>(sink, &sig_images)?;
    put::<files::Section>(sink, &fd_images)?;
    put::<crate::kinds::procattrs::Section>(sink, &attrs)?;
    put::<crate::kinds::fdattrs::Section>(sink, &fdattrs)?;
    put::<crate::kinds::prctls::Section>(sink, &prctls)?;
    put::<crate::kinds::policies::Section>(sink, &policies)?;
    put::<memory::Ghosts>(sink, &seen_pages.ghosts)?;
    put::<crate::kinds::uts::Section>(sink, &crate::kinds::uts::dump(st.pid)?)?;
    put::<crate::kinds::ipcns::Section>(sink, &crate::kinds::ipcns::dump(st.pid, what.file_cap)?)?;
    // The tmpfs mounts the container made (not the host's, which a
    // container without a root of its own sees).
    put::<crate::kinds::mounts::Section>(sink, &crate::kinds::mounts::dump(st.pid)?)?;
    Ok((statuses.len(), xstate))
}

/// The whole log at `path`, given `head`, what was read of it before: the
/// rest is read now (the log only grows; if it shrank, all of it is).
fn log_tail(path: &Path, head: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut f = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let len = f.metadata()?.len();
    let mut log = Vec::with_capacity(len as usize);
    if len >= head.len() as u64 {
        log.extend_from_slice(head);
        f.seek(std::io::SeekFrom::Start(head.len() as u64))?;
    }
    f.read_to_end(&mut log)?;
    Ok(log)
}

/// The TID of host thread `tid` inside the container.
fn ns_tid(pid: i32, tid: i32) -> i32 {
    proc::read_task_status(pid, tid).map(|s| s.ns_pid).unwrap_or(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_appends_what_came_after_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert_eq!(log_tail(&path, b"gone").unwrap(), b"");
        std::fs::write(&path, b"line 1\nline 2\nline 3\n").unwrap();
        // The head is taken as read (the log only grows), the rest read now.
        assert_eq!(log_tail(&path, b"LINE 1\n").unwrap(), b"LINE 1\nline 2\nline 3\n");
        // A log shorter than the head was replaced: all of it is read.
        let long = vec![b'x'; 100];
        assert_eq!(log_tail(&path, &long).unwrap(), b"line 1\nline 2\nline 3\n");
    }
}
