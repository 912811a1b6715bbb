//! Process attributes the scheduler and prctl hold: the nice value,
//! scheduling policy (with SCHED_RESET_ON_FORK) and real-time priority,
//! oom_score_adj and loginuid, read and set from outside (/proc,
//! sched_setscheduler, setpriority); and the prctl flags dumpable, child
//! subreaper, THP disable and the timer slack, read and set by injected
//! prctl; the membarrier registrations of the address space
//! (MEMBARRIER_CMD_GET_REGISTRATIONS) and `mlockall(MCL_FUTURE)`, which
//! /proc does not show: an injected one-page mmap is locked (VmLck grows)
//! when mappings made from now on are, and populated unless MCL_ONFAULT.
//!
//! A process stopped by job control (SIGSTOP, SIGTSTP...) is stopped
//! again with the same signal while it is still traced, and its parent
//! takes the stop's report if it had taken it before (an injected
//! `waitid`), so that it can not wait for it a second time; the SIGCHLD
//! the stop sends it is dropped.
//!
//! Section `procattrs`, one entry per live process, at version 6 (version
//! 5 had no stop signal, and reads as a stop its parent did not wait for;
//! version 4 had no membarrier or mlockall fields, and reads as none). An image
//! without it (format 3) restores with the attributes a restored task
//! gets anyway.
//! Threads of one process whose nice value or policy differ are refused
//! before anything stops: only the process's are carried.

use serde::{Deserialize, Serialize};

use crate::image;

use super::remote::{self, nr, Remote};
use crate::sys::{self, ptrace, Errno};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error("process {pid}: read {what}: {source}")]
    Read {
        pid: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid}: /proc/{pid}/stat has no {what}")]
    Stat { pid: i32, what: &'static str },
    #[error("process {pid}: set {what}: {source}")]
    Set {
        pid: i32,
        what: &'static str,
        #[source]
        source: Errno,
    },
    #[error("process {pid}: read its scheduling policy: {source}")]
    Sched {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("process {pid}: write {what}: {source}")]
    Write {
        pid: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid}: section procattrs has membarrier or mlockall flags this build does not know, a bad stop signal or chroot path; the image is damaged")]
    Damaged { pid: i32 },
    #[error("process {pid}: stop it again by job control: {step}: {source}")]
    Stop {
        pid: i32,
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("process {pid} (pid {ns_pid} in the container): thread {tid} has another {what} than the process, which migrate does not carry yet")]
    ThreadsDiffer {
        pid: i32,
        ns_pid: i32,
        tid: i32,
        what: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One process's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcAttrs {
    pub nice: i32,
    /// SCHED_* with SCHED_RESET_ON_FORK or'ed in.
    pub policy: i32,
    pub rt_priority: i32,
    pub oom_score_adj: i32,
    /// None where the kernel has no audit (no loginuid file).
    pub loginuid: Option<u32>,
    pub dumpable: u64,
    pub subreaper: bool,
    pub thp_disable: bool,
    pub timerslack_ns: u64,
    /// MEMBARRIER_CMD_REGISTER_* commands the process has made.
    pub membarrier: u32,
    /// mlockall flags for mappings made from now on: 0, MCL_FUTURE, or
    /// MCL_FUTURE | MCL_ONFAULT.
    pub mlock_future: u32,
    /// Stopped by a signal (job control) when the checkpoint began: it is
    /// sent SIGSTOP once restored, before the container is thawed.
    pub stopped: bool,
    /// The root directory of a process in a chroot, inside the
    /// container's root; None: the container's root.
    pub chroot: Option<String>,
    /// personality(2) flags (`setarch -R`: ADDR_NO_RANDOMIZE...).
    pub personality: u32,
    /// I/O priority (ioprio_get: class << 13 | level).
    pub ioprio: i32,
    /// The CPUs the process may run on, if not every CPU of the machine
    /// (sched_setaffinity, `taskset`).
    pub affinity: Option<Vec<u32>>,
    /// For a process stopped by job control: the signal that stopped it
    /// while its parent has not taken the stop's report yet (waitpid
    /// `WUNTRACED`; what /proc/PID/stat shows as its exit code), 0 once it
    /// has.
    pub stop_signal: i32,
}

/// Version 5 of the section's entries.
#[derive(Deserialize)]
struct ProcAttrsV5 {
    nice: i32,
    policy: i32,
    rt_priority: i32,
    oom_score_adj: i32,
    loginuid: Option<u32>,
    dumpable: u64,
    subreaper: bool,
    thp_disable: bool,
    timerslack_ns: u64,
    membarrier: u32,
    mlock_future: u32,
    stopped: bool,
    chroot: Option<String>,
    personality: u32,
    ioprio: i32,
    affinity: Option<Vec<u32>>,
}

/// Version 4 of the section's entries.
#[derive(Deserialize)]
struct ProcAttrsV4 {
    nice: i32,
    policy: i32,
    rt_priority: i32,
    oom_score_adj: i32,
    loginuid: Option<u32>,
    dumpable: u64,
    subreaper: bool,
    thp_disable: bool,
    timerslack_ns: u64,
}

/// The section `procattrs` (from image format 4): each process's
/// scheduling, prctl and other attributes, by PID in the container.
/// Layout 5 added membarrier, mlockall, stop, chroot, personality, I/O
/// priority and affinity; layout 6 the stop signal.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "procattrs";
    const VERSION: u32 = 6;
    const SINCE_FORMAT: u32 = 4;
    type State = Vec<(i32, ProcAttrs)>;
    type Error = Error;

    fn decode(bytes: &[u8]) -> image::Result<Self::State> {
        match image::open_section(Self::SECTION, bytes)? {
            (5, payload) => image::decode_payload(Self::SECTION, payload).map(upgrade_v5),
            _ => image::decode_versioned(Self::SECTION, bytes, Self::VERSION, upgrade_v4),
        }
    }

    fn validate(state: &Self::State) -> Result<()> {
        state.iter().try_for_each(|(pid, a)| a.check(*pid))
    }
}

/// Layout 5 read as 6: a stopped process's parent had not taken its stop's
/// report (a restore then sent SIGSTOP, which leaves one).
fn upgrade_v5(old: Vec<(i32, ProcAttrsV5)>) -> Vec<(i32, ProcAttrs)> {
    old.into_iter()
        .map(|(pid, a)| {
            let a = ProcAttrs {
                nice: a.nice,
                policy: a.policy,
                rt_priority: a.rt_priority,
                oom_score_adj: a.oom_score_adj,
                loginuid: a.loginuid,
                dumpable: a.dumpable,
                subreaper: a.subreaper,
                thp_disable: a.thp_disable,
                timerslack_ns: a.timerslack_ns,
                membarrier: a.membarrier,
                mlock_future: a.mlock_future,
                stopped: a.stopped,
                chroot: a.chroot,
                personality: a.personality,
                ioprio: a.ioprio,
                affinity: a.affinity,
                stop_signal: if a.stopped { libc::SIGSTOP } else { 0 },
            };
            (pid, a)
        })
        .collect()
}

/// Layout 4 read as 6: none of what 5 and 6 added.
fn upgrade_v4(old: Vec<(i32, ProcAttrsV4)>) -> Vec<(i32, ProcAttrs)> {
    let as_v5 = old.into_iter().map(|(pid, a)| {
        let a = ProcAttrsV5 {
            nice: a.nice,
            policy: a.policy,
            rt_priority: a.rt_priority,
            oom_score_adj: a.oom_score_adj,
            loginuid: a.loginuid,
            dumpable: a.dumpable,
            subreaper: a.subreaper,
            thp_disable: a.thp_disable,
            timerslack_ns: a.timerslack_ns,
            membarrier: 0,
            mlock_future: 0,
            stopped: false,
            chroot: None,
            personality: 0,
            ioprio: 0,
            affinity: None,
        };
        (pid, a)
    });
    upgrade_v5(as_v5.collect())
}

impl ProcAttrs {
    /// Refuses values restore could not set.
    pub fn check(&self, pid: i32) -> Result<()> {
        let known = MEMBARRIER_REGISTER.iter().fold(0, |m, c| m | c);
        let futures = [
            0,
            libc::MCL_FUTURE as u32,
            (libc::MCL_FUTURE | libc::MCL_ONFAULT) as u32,
        ];
        if self.membarrier & !known != 0 || !futures.contains(&self.mlock_future) {
            return Err(Error::Damaged { pid });
        }
        let stops = [0, libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
        if !stops.contains(&self.stop_signal) || (self.stop_signal != 0 && !self.stopped) {
            return Err(Error::Damaged { pid });
        }
        if self
            .chroot
            .as_ref()
            .is_some_and(|r| !r.starts_with('/') || r.contains('\0') || r.len() > 4095)
        {
            return Err(Error::Damaged { pid });
        }
        Ok(())
    }
}

/// MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, _PRIVATE_EXPEDITED,
/// _PRIVATE_EXPEDITED_SYNC_CORE, _PRIVATE_EXPEDITED_RSEQ, in the order
/// they are made again.
const MEMBARRIER_REGISTER: [u32; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;

const PR_SET_DUMPABLE: u64 = 4;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;

/// Fields of process `pid`'s stat (of its thread `tid`'s, if given), each
/// numbered as in proc(5) (the state is field 3) and named for an error.
fn stat_fields<const N: usize>(pid: i32, tid: Option<i32>, want: [(usize, &'static str); N]) -> Result<[i32; N]> {
    let path = match tid {
        Some(tid) => format!("/proc/{pid}/task/{tid}/stat"),
        None => format!("/proc/{pid}/stat"),
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        pid,
        what: "stat",
        source,
    })?;
    let rest = text.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut out = [0; N];
    for (o, (n, what)) in out.iter_mut().zip(want) {
        *o = fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or(Error::Stat { pid, what })?;
    }
    Ok(out)
}

/// (nice, rt_priority) of task `tid` of process `pid`, from its stat.
fn sched_of(pid: i32, tid: i32) -> Result<(i32, i32)> {
    let [nice, rt] = stat_fields(pid, Some(tid), [(19, "nice"), (40, "rt_priority")])?;
    Ok((nice, rt))
}

/// For process `pid`, stopped by job control: the signal of the stop's
/// report if its parent has not taken it yet, else 0 (stat's exit code,
/// which shows the report while the process is stopped: the process's,
/// not a thread's; seizing it does not change the report).
pub fn stop_signal_of(pid: i32) -> Result<i32> {
    let [code] = stat_fields(pid, None, [(52, "exit_code")])?;
    Ok(code & 0x7f)
}

/// Whether process group `pgid` of the image's tree is orphaned, as the
/// kernel judges it before it lets SIGTSTP, SIGTTIN or SIGTTOU stop a
/// process (they are dropped then): no live member has a parent in
/// another group of the same session. A parent outside the container
/// counts as none (the group is taken as orphaned).
pub fn orphaned(procs: &[super::pstree::ProcessImage], pgid: i32) -> bool {
    !procs
        .iter()
        .filter(|p| p.pgid == pgid && p.zombie.is_none())
        .filter_map(|p| procs.iter().find(|q| q.pid == p.ppid).map(|q| (p, q)))
        .any(|(p, parent)| parent.pgid != pgid && parent.sid == p.sid)
}

/// Stops process `pid` (host PID; its threads `tids`, the main thread
/// first, each seized, rebuilt and in a ptrace stop) by job control with
/// stop signal `sig`, as the kernel stops it: the main thread takes a
/// SIGSTOP (every other signal blocked meanwhile, so that none pending is
/// taken before it), which is then delivered as `sig`; each thread joins
/// the group stop, and the main thread's mask is its own again. Every thread is left in the group stop's ptrace trap;
/// once detached it stays stopped, without a second report. Its parent
/// gets the report (and a SIGCHLD) now: see [`take_stop_report`].
pub fn stop_again(pid: i32, tids: &[i32], sig: i32) -> Result<()> {
    let err = |step| move |source| Error::Stop { pid, step, source };
    let Some((&main, others)) = tids.split_first() else {
        return Ok(());
    };
    let main_t = nix::unistd::Pid::from_raw(main);
    let mask = ptrace::get_sigmask(main_t).map_err(err("read the signal mask"))?;
    ptrace::set_sigmask(main_t, u64::MAX).map_err(err("block signals"))?;
    ptrace::tgkill(pid, main, libc::SIGSTOP).map_err(err("send SIGSTOP"))?;
    ptrace::resume(main_t, 0).map_err(err("let it take SIGSTOP"))?;
    wait_for(main, |s| s == ptrace::Stop::Signal(libc::SIGSTOP)).map_err(err("wait for SIGSTOP"))?;
    // Delivered with only itself unblocked: a blocked one would be queued
    // again and the task would run on; the mask is the process's again
    // once it is in the group stop.
    ptrace::set_sigmask(main_t, !(1u64 << (sig - 1))).map_err(err("block signals but the stop signal"))?;
    ptrace::resume(main_t, sig).map_err(err("deliver the stop signal"))?;
    wait_for(main, |s| s == ptrace::Stop::Event(ptrace::EVENT_STOP)).map_err(err("wait for the group stop"))?;
    ptrace::set_sigmask(main_t, mask).map_err(err("set the signal mask again"))?;
    for &tid in others {
        let t = nix::unistd::Pid::from_raw(tid);
        ptrace::resume(t, 0).map_err(err("let a thread join the group stop"))?;
        wait_for(tid, |s| s == ptrace::Stop::Event(ptrace::EVENT_STOP)).map_err(err("wait for a thread's stop"))?;
    }
    Ok(())
}

/// Waits until traced task `tid` stops as `want` says; any other stop
/// (one left over from the rebuild) is passed by, without a signal.
fn wait_for(tid: i32, want: impl Fn(ptrace::Stop) -> bool) -> std::result::Result<(), Errno> {
    let t = nix::unistd::Pid::from_raw(tid);
    let deadline = std::time::Instant::now() + ptrace::STOP_TIMEOUT;
    loop {
        match ptrace::wait_until(t, Some(deadline))? {
            s if want(s) => return Ok(()),
            ptrace::Stop::Gone => return Err(Errno::ESRCH),
            _ => ptrace::resume(t, 0)?,
        }
    }
}

/// In the parent (`remote`, a seized and rebuilt process) of a process
/// [`stop_again`] stopped, PID `child` in the container: takes the stop's
/// report if `taken` (the parent had waited for the stop before the
/// checkpoint: an injected `waitid(WSTOPPED | WNOHANG)`), and drops the
/// SIGCHLD the stop sent if `drop_sigchld` (none was pending at the
/// checkpoint: an injected `rt_sigtimedwait` that does not wait). Every
/// signal is blocked meanwhile, so that none is taken by the injected
/// calls.
pub fn take_stop_report(remote: &mut Remote, child: i32, taken: bool, drop_sigchld: bool) -> Result<()> {
    let pid = remote.pid;
    let err = |step| move |source| Error::Stop { pid, step, source };
    let t = nix::unistd::Pid::from_raw(remote.tid);
    let mask = ptrace::get_sigmask(t).map_err(err("read the parent's signal mask"))?;
    ptrace::set_sigmask(t, u64::MAX).map_err(err("block the parent's signals"))?;
    if taken {
        let flags = (libc::WSTOPPED | libc::WNOHANG) as u64;
        remote.call(
            &format!("waitid for the stop of process {child}"),
            libc::SYS_waitid,
            &[libc::P_PID as u64, child as u64, 0, flags, 0],
        )?;
    }
    if drop_sigchld {
        remote.map_scratch(None)?;
        // A signal set of SIGCHLD, and a zero timeout after it.
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&(1u64 << (libc::SIGCHLD - 1)).to_le_bytes());
        remote.write(remote.scratch, &b)?;
        match remote.call(
            "rt_sigtimedwait(SIGCHLD) without waiting",
            libc::SYS_rt_sigtimedwait,
            &[remote.scratch, 0, remote.scratch + 8, 8],
        ) {
            Ok(_)
            | Err(remote::Error::Sys {
                source: Errno::EAGAIN, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        remote.unmap_scratch()?;
    }
    ptrace::set_sigmask(t, mask).map_err(err("set the parent's signal mask again"))
}

fn read_proc(pid: i32, what: &'static str) -> Result<Option<String>> {
    match std::fs::read_to_string(format!("/proc/{pid}/{what}")) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { pid, what, source }),
    }
}

/// Refuses, while the container runs, a process whose threads differ in
/// nice value, scheduling policy, I/O priority, CPU affinity or
/// personality (only the process's are carried).
pub fn refuse_uncarried(pid: i32, ns_pid: i32, tids: &[i32]) -> Result<()> {
    let main = (sched_of(pid, pid)?, sys::get_scheduler(pid).ok());
    let personality = |tid: i32| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/personality")).ok();
    for &tid in tids.iter().filter(|t| **t != pid) {
        // A thread that ended meanwhile holds nothing.
        let Ok(sched) = sched_of(pid, tid) else { continue };
        let what = if sched != main.0 {
            "nice value or real-time priority"
        } else if sys::get_scheduler(tid).ok() != main.1 {
            "scheduling policy"
        } else if sys::get_ioprio(tid).ok() != sys::get_ioprio(pid).ok() {
            "I/O priority"
        } else if affinity_of(tid).ok() != affinity_of(pid).ok() {
            "CPU affinity"
        } else if personality(tid) != personality(pid) {
            "personality"
        } else {
            continue;
        };
        return Err(Error::ThreadsDiffer { pid, ns_pid, tid, what });
    }
    Ok(())
}

/// Reads the attributes of the stopped process behind `remote`.
pub fn dump(remote: &Remote) -> Result<ProcAttrs> {
    let pid = remote.pid;
    let (nice, rt_priority) = sched_of(pid, pid)?;
    let policy = sys::get_scheduler(pid).map_err(|source| Error::Sched { pid, source })?;
    let oom_score_adj = read_proc(pid, "oom_score_adj")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let loginuid = read_proc(pid, "loginuid")?.and_then(|v| v.parse().ok());
    let get = |what, op| remote.call(what, nr::PRCTL, &[op]);
    let dumpable = get("prctl(PR_GET_DUMPABLE)", PR_GET_DUMPABLE)?;
    let thp_disable = get("prctl(PR_GET_THP_DISABLE)", PR_GET_THP_DISABLE)? != 0;
    let timerslack_ns = get("prctl(PR_GET_TIMERSLACK)", PR_GET_TIMERSLACK)?;
    let subreaper = remote.prctl_get_int("prctl(PR_GET_CHILD_SUBREAPER)", PR_GET_CHILD_SUBREAPER)? != 0;
    // Kernels before 6.3 can not say (EINVAL): none are carried there.
    let membarrier = match remote.call(
        "membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)",
        libc::SYS_membarrier,
        &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0],
    ) {
        Ok(mask) => mask as u32,
        Err(remote::Error::Sys {
            source: Errno::EINVAL, ..
        }) => 0,
        Err(e) => return Err(e.into()),
    };
    let mlock_future = mlock_future(remote)?;
    Ok(ProcAttrs {
        nice,
        policy,
        rt_priority,
        oom_score_adj,
        loginuid,
        dumpable,
        subreaper,
        thp_disable,
        timerslack_ns,
        membarrier,
        mlock_future,
        // Known to the caller, which saw the process before seizing it.
        stopped: false,
        chroot: None,
        personality: read_proc(pid, "personality")?
            .and_then(|v| u32::from_str_radix(&v, 16).ok())
            .unwrap_or(0),
        ioprio: sys::get_ioprio(pid).map_err(|source| Error::Sched { pid, source })?,
        affinity: affinity_of(pid)?,
        stop_signal: 0,
    })
}

/// The CPUs task `tid` may run on, unless it may run on all of them.
fn affinity_of(tid: i32) -> Result<Option<Vec<u32>>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid))
        .map_err(|source| Error::Sched { pid: tid, source })?;
    let cpus: Vec<u32> = (0..nix::sched::CpuSet::count())
        .filter(|c| set.is_set(*c).unwrap_or(false))
        .map(|c| c as u32)
        .collect();
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let all = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .map(|s| cpu_list_len(s.trim()))
        .unwrap_or(online);
    Ok((cpus.len() < all).then_some(cpus))
}

/// How many CPUs a list like "0-3,8" names.
fn cpu_list_len(list: &str) -> usize {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0),
            None => 1,
        })
        .sum()
}

/// The process's VmLck, in kB.
fn locked_kb(pid: i32) -> Result<u64> {
    let status = read_proc(pid, "status")?.unwrap_or_default();
    Ok(crate::proc::field(&status, "VmLck")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0))
}

/// mlockall's flags for future mappings, by a probe: a one-page mapping
/// made in the process is locked if they include MCL_FUTURE, and then
/// populated unless they include MCL_ONFAULT.
fn mlock_future(remote: &Remote) -> Result<u32> {
    let pid = remote.pid;
    let before = locked_kb(pid)?;
    let probe = remote.call(
        "mmap a probe page",
        nr::MMAP,
        &[
            0,
            remote::PAGE,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    )?;
    let probed = (|| {
        if locked_kb(pid)? <= before {
            return Ok(0);
        }
        remote.call(
            "mincore the probe page",
            libc::SYS_mincore,
            &[probe, remote::PAGE, remote.scratch],
        )?;
        let mut resident = [0u8; 1];
        remote.read(remote.scratch, &mut resident)?;
        Ok(match resident[0] & 1 {
            1 => libc::MCL_FUTURE as u32,
            _ => (libc::MCL_FUTURE | libc::MCL_ONFAULT) as u32,
        })
    })();
    remote.call("munmap the probe page", nr::MUNMAP, &[probe, remote::PAGE])?;
    probed
}

/// The root directory of process `host`, inside the container's (that of
/// its PID 1, `init`), if it differs: a chroot.
pub fn chroot_of(host: i32, init: i32) -> Option<String> {
    let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/root")).ok();
    let (mine, base) = (link(host)?, link(init)?);
    if mine == base {
        return None;
    }
    let rel = mine.strip_prefix(&base).ok()?;
    Some(format!("/{}", rel.display()))
}

/// Puts the restored process behind `remote` in its chroot, if it had
/// one: after its memory (mapped files are opened by their paths in the
/// container's root) and before its credentials (chroot takes
/// CAP_SYS_CHROOT, which the process may have dropped).
pub fn restore_chroot(remote: &Remote, a: &ProcAttrs) -> Result<()> {
    if let Some(root) = &a.chroot {
        let at = remote.put_cstr(remote::PAGE, root)?;
        remote.call(&format!("chroot {root}"), libc::SYS_chroot, &[at])?;
    }
    Ok(())
}

/// Sets the audit login uid of every thread `tids` of the restored process
/// behind `remote` again, where it differs from the restorer's: each
/// thread writes its own (/proc/thread-self/loginuid: the kernel lets no
/// other task set it), before the credentials (changing a set one takes
/// CAP_AUDIT_CONTROL). Before, the restorer wrote the main thread's from
/// outside, which the kernel refuses: such a restore failed.
pub fn restore_loginuid(remote: &Remote, tids: &[i32], a: &ProcAttrs) -> Result<()> {
    let Some(uid) = a.loginuid else { return Ok(()) };
    let pid = remote.pid;
    for &tid in tids {
        let what = "loginuid";
        let now = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/loginuid"))
            .map_err(|source| Error::Read { pid, what, source })?;
        if now.trim().parse().ok() == Some(uid) {
            continue;
        }
        let thread = remote.thread(tid)?;
        let fd = thread.open("/proc/thread-self/loginuid", libc::O_WRONLY | libc::O_CLOEXEC)?;
        let text = uid.to_string();
        let at = thread.put_cstr(remote::PAGE, &text)?;
        let wrote = thread.call("write loginuid", libc::SYS_write, &[fd, at, text.len() as u64]);
        thread.close(fd)?;
        wrote?;
    }
    Ok(())
}

/// Sets the attributes again on the restored process behind `remote`
/// (host PID) and its threads `tids`, after its credentials (which reset
/// dumpable) and before it runs.
pub fn restore(remote: &Remote, tids: &[i32], a: &ProcAttrs) -> Result<()> {
    let pid = remote.pid;
    let set = |what| move |source| Error::Set { pid, what, source };
    for &tid in tids {
        // SCHED_DEADLINE is kinds::policies' (sched_setattr, with its
        // parameters); sched_setscheduler can not set it.
        if a.policy & 0xff != super::policies::SCHED_DEADLINE as i32 {
            sys::set_scheduler(tid, a.policy, a.rt_priority).map_err(set("scheduling policy"))?;
        }
        sys::set_nice(tid, a.nice).map_err(set("nice value"))?;
        sys::set_ioprio(tid, a.ioprio).map_err(set("I/O priority"))?;
        if let Some(cpus) = &a.affinity {
            let mut set_of = nix::sched::CpuSet::new();
            for c in cpus {
                set_of.set(*c as usize).map_err(set("CPU affinity"))?;
            }
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set_of).map_err(set("CPU affinity"))?;
        }
    }
    // Per thread: every thread of the process had the process's (others
    // are refused). Before, only the main thread got them back.
    for &tid in tids {
        let thread = remote.thread(tid)?;
        if a.personality != 0 {
            thread.call("personality", libc::SYS_personality, &[u64::from(a.personality)])?;
        }
        thread.call(
            "prctl(PR_SET_TIMERSLACK)",
            nr::PRCTL,
            &[PR_SET_TIMERSLACK, a.timerslack_ns],
        )?;
    }
    let write = |what: &'static str, value: String| {
        std::fs::write(format!("/proc/{pid}/{what}"), value).map_err(|source| Error::Write { pid, what, source })
    };
    write("oom_score_adj", a.oom_score_adj.to_string())?;

    let prctl = |what, op, value| remote.call(what, nr::PRCTL, &[op, value]).map(|_| ());
    // 2 (suid_dumpable) is the kernel's to set, on exec of a set-id file.
    if a.dumpable <= 1 {
        prctl("prctl(PR_SET_DUMPABLE)", PR_SET_DUMPABLE, a.dumpable)?;
    }
    prctl(
        "prctl(PR_SET_THP_DISABLE)",
        PR_SET_THP_DISABLE,
        u64::from(a.thp_disable),
    )?;
    prctl(
        "prctl(PR_SET_CHILD_SUBREAPER)",
        PR_SET_CHILD_SUBREAPER,
        u64::from(a.subreaper),
    )?;
    for cmd in MEMBARRIER_REGISTER.iter().filter(|c| a.membarrier & **c != 0) {
        remote.call(
            &format!("membarrier(register {cmd:#x})"),
            libc::SYS_membarrier,
            &[u64::from(*cmd), 0, 0],
        )?;
    }
    // Last: mappings made from now on are locked (the restore makes none
    // after this).
    if a.mlock_future != 0 {
        remote.call("mlockall", libc::SYS_mlockall, &[u64::from(a.mlock_future)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_scheduling() {
        let me = std::process::id() as i32;
        let (nice, prio) = sched_of(me, me).unwrap();
        assert!((-20..=19).contains(&nice));
        assert_eq!(prio, 0);
        refuse_uncarried(me, 1, &[me]).unwrap();
    }

    #[test]
    fn version_4_entries_read_as_no_membarrier_or_mlockall() {
        #[derive(Serialize)]
        struct V4(i32, i32, i32, i32, Option<u32>, u64, bool, bool, u64);
        let old = vec![(1, V4(5, 3, 0, 500, Some(7), 1, true, false, 50_000))];
        use crate::kinds::Kind;
        let got = Section::decode(&image::encode_section_at(4, &old)).unwrap();
        assert_eq!(got[0].1.nice, 5);
        assert_eq!(got[0].1.timerslack_ns, 50_000);
        assert_eq!((got[0].1.membarrier, got[0].1.mlock_future), (0, 0));
        got[0].1.check(1).unwrap();
        let now = Section::decode(&Section::encode(&got)).unwrap();
        assert_eq!(now, got);
        assert!(Section::decode(&image::encode_section_at(Section::VERSION + 1, &got)).is_err());
        let mut bad = got[0].1.clone();
        bad.mlock_future = 1 << 7;
        assert!(bad.check(1).is_err());
    }

    #[test]
    fn version_5_stops_read_as_not_taken_and_stop_signals_are_checked() {
        #[derive(Serialize)]
        #[allow(clippy::type_complexity)]
        struct V5(
            (i32, i32, i32, i32, Option<u32>, u64, bool, bool, u64, u32, u32),
            bool,
            Option<String>,
            u32,
            i32,
            Option<Vec<u32>>,
        );
        let fields = (0, 0, 0, 0, None, 1, false, false, 50_000, 0, 0);
        let old = vec![
            (2, V5(fields, true, None, 0, 0, None)),
            (3, V5(fields, false, None, 0, 0, None)),
        ];
        use crate::kinds::Kind;
        let got = Section::decode(&image::encode_section_at(5, &old)).unwrap();
        assert_eq!((got[0].1.stopped, got[0].1.stop_signal), (true, libc::SIGSTOP));
        assert_eq!((got[1].1.stopped, got[1].1.stop_signal), (false, 0));
        let mut a = got[0].1.clone();
        for (sig, ok) in [
            (0, true),
            (libc::SIGTSTP, true),
            (libc::SIGTTOU, true),
            (libc::SIGKILL, false),
        ] {
            a.stop_signal = sig;
            assert_eq!(a.check(2).is_ok(), ok, "signal {sig}");
        }
        a.stopped = false;
        a.stop_signal = libc::SIGSTOP;
        assert!(a.check(2).is_err(), "a stop signal of a process not stopped");
    }

    #[test]
    fn orphaned_groups_are_judged_as_the_kernel_does() {
        let p = |pid, ppid, pgid, sid| crate::kinds::pstree::ProcessImage {
            pid,
            ppid,
            pgid,
            sid,
            host_pid: 0,
            comm: String::new(),
            zombie: None,
            threads: Vec::new(),
            cwd: "/".into(),
            umask: 0o22,
            rlimits: Vec::new(),
            creds: None,
            timers: None,
        };
        // PID 1 leads session 1; 2 is in its group, 3 leads a group of its
        // own in the session, 4 a group in a session of its own.
        let tree = [p(1, 0, 1, 1), p(2, 1, 1, 1), p(3, 1, 3, 1), p(4, 1, 4, 4)];
        assert!(!orphaned(&tree, 3), "a parent in another group of the session");
        assert!(orphaned(&tree, 4), "a parent in another session only");
        assert!(orphaned(&tree, 1), "PID 1's parent is outside; 2's is in the group");
    }
}
