//! The process tree: every process with its PID, parent, process group and
//! session inside the container's PID namespace, its threads, zombies with
//! their exit status, and per-process attributes (comm, cwd, umask,
//! rlimits).
//!
//! Dump walks /proc from the container's PID 1 through the children lists
//! (zombies included; they have left the cgroup; see `crate::proc::walk`). Restore forks the same
//! tree with clone3(set_tid), see the engine.

use serde::{Deserialize, Serialize};

use super::regs::ThreadImage;
use crate::proc::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read {what}: {source}")]
    Proc {
        pid: i32,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("process {host_pid} is in the container's cgroup but not in its process tree (was it started with `migrate exec`?); it can not be checkpointed. Wait for it to end, or kill it")]
    Stray { host_pid: i32 },
    #[error("the image's process tree is damaged: process {pid} {reason}")]
    BadTree { pid: i32, reason: &'static str },
    #[error("process {pid} (pid {ns_pid} in the container) {what}, which migrate does not carry yet")]
    Uncarried { pid: i32, ns_pid: i32, what: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One resource limit (RLIMIT_* number, soft, hard; u64::MAX is infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// The section `pstree`: every process (PID 1 first, parents before
/// children) with its threads' registers, credentials and timers.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "pstree";
    const VERSION: u32 = 4;
    type State = Vec<ProcessImage>;
    type Error = Error;

    fn validate(state: &Self::State) -> Result<()> {
        check(state)
    }
}

/// One process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessImage {
    /// IDs inside the container's PID namespace.
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Host PID at checkpoint time (for `inspect`).
    pub host_pid: i32,
    pub comm: String,
    /// For a zombie: its wait status (as waitpid would report it).
    pub zombie: Option<i32>,
    /// Threads, the main thread first. Empty for zombies.
    pub threads: Vec<ThreadImage>,
    pub cwd: String,
    pub umask: u32,
    pub rlimits: Vec<Rlimit>,
    /// None for zombies.
    pub creds: Option<super::creds::Creds>,
    /// None for zombies.
    pub timers: Option<super::timers::TimersImage>,
}

/// Checks a decoded tree before restore forks it: PID 1 first and
/// alive, every PID once, every live process with a thread, and every
/// other process the child of a live one (or it would never be forked).
/// The largest PID the kernel hands out (PID_MAX_LIMIT on 64-bit).
pub const PID_MAX: i32 = 4 << 20;
/// At most this many processes in one image, and threads in a process.
const MAX_PROCESSES: usize = 1 << 16;
const MAX_THREADS: usize = 1 << 16;

pub fn check(procs: &[ProcessImage]) -> Result<()> {
    let bad = |pid, reason| Err(Error::BadTree { pid, reason });
    let Some(init) = procs.first() else {
        return bad(1, "is missing (the tree is empty)");
    };
    if init.pid != 1 {
        return bad(init.pid, "comes first, where PID 1 belongs");
    }
    if procs.len() > MAX_PROCESSES {
        return bad(init.pid, "heads a tree of more processes than a restore takes");
    }
    let mut seen = std::collections::HashSet::new();
    let mut tids = std::collections::HashSet::new();
    for p in procs {
        if !(1..=PID_MAX).contains(&p.pid) {
            return bad(p.pid, "is not a PID");
        }
        if !(0..=PID_MAX).contains(&p.pgid) || !(0..=PID_MAX).contains(&p.sid) {
            return bad(p.pid, "has a process group or session that is not a PID");
        }
        if !seen.insert(p.pid) {
            return bad(p.pid, "appears twice");
        }
        if p.zombie.is_some() {
            if !p.threads.is_empty() {
                return bad(p.pid, "is a zombie with threads");
            }
            continue;
        }
        if p.threads.first().map(|t| t.tid) != Some(p.pid) || p.threads.len() > MAX_THREADS {
            return bad(p.pid, "has no threads, or does not list its main thread first");
        }
        if p.creds.is_none() || p.timers.is_none() {
            return bad(p.pid, "is alive without credentials or timers");
        }
        for t in &p.threads {
            if !(1..=PID_MAX).contains(&t.tid) || !tids.insert(t.tid) {
                return bad(p.pid, "has a thread ID that is not a PID, or one listed twice");
            }
            if t.regs.len() != super::regs::REGS_WORDS || t.xstate.len() > super::regs::XSTATE_MAX {
                return bad(p.pid, "has a thread whose registers are not of this architecture");
            }
        }
    }
    if init.zombie.is_some() {
        return bad(1, "is a zombie");
    }
    // Forked from PID 1 down, each by its live parent.
    let mut forked = std::collections::HashSet::from([1]);
    let mut parents = std::collections::HashSet::from([1]);
    loop {
        let before = forked.len();
        for p in &procs[1..] {
            if parents.contains(&p.ppid) && forked.insert(p.pid) && p.zombie.is_none() {
                parents.insert(p.pid);
            }
        }
        if forked.len() == before {
            break;
        }
    }
    match procs.iter().find(|p| !forked.contains(&p.pid)) {
        Some(p) => bad(p.pid, "is not the child of a live process forked from PID 1"),
        None => Ok(()),
    }
}

/// Refuses, while the tree runs untouched, process state migrate does not
/// carry yet: a traced process, a process group or session
/// whose leader has exited, a zombie outside its parent's group, a
/// chroot, a deleted working directory. `statuses` are the tree's
/// processes (host PID, status), PID 1 first.
pub fn refuse_uncarried(statuses: &[(i32, Status)]) -> Result<()> {
    let pids: std::collections::HashSet<i32> = statuses.iter().map(|(_, s)| s.ns_pid).collect();
    let link = |host: i32, what: &str| std::fs::read_link(format!("/proc/{host}/{what}")).ok();
    let init_root = statuses.first().and_then(|(h, _)| link(*h, "root"));
    for (host, s) in statuses {
        let refuse = |what| {
            Err(Error::Uncarried {
                pid: *host,
                ns_pid: s.ns_pid,
                what,
            })
        };
        match s.state {
            't' => return refuse("is stopped by a tracer"),
            _ if s.tracer != 0 => return refuse("is traced by another process (a debugger, strace...)"),
            _ => {}
        }
        // 0: a group or session from outside the container's PID
        // namespace, which the restore does not touch.
        let dead_pgid = s.ns_pgid > 0 && !pids.contains(&s.ns_pgid);
        let dead_sid = s.ns_sid > 0 && !pids.contains(&s.ns_sid);
        let parent = statuses.iter().find(|(h, _)| *h == s.host_ppid).map(|(_, p)| p);
        if dead_sid {
            // A helper with the leader's PID makes the session again and
            // forks its members, which it leaves to PID 1 as orphans.
            if parent.map(|p| p.ns_pid) != Some(1) {
                return refuse("is in a session whose leader has exited, and its parent is not PID 1");
            }
            if dead_pgid && s.ns_pgid != s.ns_sid {
                return refuse("is in a process group and a session whose leaders have both exited");
            }
        } else if dead_pgid {
            // A helper with the leader's PID holds the group while the
            // parent forks the members into it.
            let others = statuses
                .iter()
                .any(|(_, t)| t.ns_pgid == s.ns_pgid && t.host_ppid != s.host_ppid);
            if parent.map(|p| p.ns_sid) != Some(s.ns_sid) || others {
                return refuse(
                    "is in a process group whose leader has exited, with members of other parents or sessions",
                );
            }
        }
        // A zombie makes its group or session again before it exits, and
        // joins a group a sibling forked before it leads; its parent waits
        // for that before it forks the next child (a shell's job whose
        // first command ended). Members of a zombie's group must be its
        // siblings, and a zombie's session its own.
        let zombie = |pid: i32| statuses.iter().any(|(_, t)| t.ns_pid == pid && t.state == 'Z');
        let sibling = |pid: i32| {
            statuses
                .iter()
                .any(|(_, t)| t.ns_pid == pid && t.host_ppid == s.host_ppid)
        };
        if s.ns_sid != s.ns_pid && zombie(s.ns_sid) {
            return refuse("is in a session whose leader is a zombie");
        }
        if s.ns_pgid != s.ns_pid && zombie(s.ns_pgid) && !sibling(s.ns_pgid) {
            return refuse("is in a process group whose leader is a zombie of another parent");
        }
        if s.state == 'Z' {
            if let Some(p) = parent {
                if s.ns_sid != p.ns_sid && s.ns_sid != s.ns_pid {
                    return refuse("is a zombie in another session than its parent's, which it does not lead");
                }
                let leads = s.ns_pgid == s.ns_pid;
                if s.ns_pgid != p.ns_pgid && !leads && !sibling(s.ns_pgid) {
                    return refuse("is a zombie in the process group of a process other than its parent or a sibling");
                }
            }
            continue;
        }
        // A chroot is carried inside the container's root only.
        if link(*host, "root")
            .zip(init_root.as_ref())
            .is_some_and(|(r, i)| !r.starts_with(i))
        {
            return refuse("runs in a chroot outside the container's root");
        }
    }
    Ok(())
}

/// The namespaces a restored process is put in: PID 1's, all of them.
const NAMESPACES: [(&str, &str); 10] = [
    ("mnt", "is in a mount namespace of its own (unshare -m, setns)"),
    ("uts", "is in a UTS namespace of its own"),
    ("ipc", "is in an IPC namespace of its own"),
    ("net", "is in a network namespace of its own"),
    ("pid", "is in a PID namespace of its own"),
    ("pid_for_children", "forks into a PID namespace of its own (unshare -p)"),
    ("user", "is in a user namespace of its own"),
    ("cgroup", "is in a cgroup namespace of its own"),
    ("time", "is in a time namespace of its own"),
    ("time_for_children", "forks into a time namespace of its own"),
];

/// Refuses a process in a namespace PID 1 (host PID `init`) is not in: a
/// restore puts every process in PID 1's. `procs`: (host PID, PID in the
/// container). A zombie, or a process gone meanwhile, has none to compare.
pub fn refuse_own_namespaces(init: i32, procs: &[(i32, i32)]) -> Result<()> {
    let link = |path: String| std::fs::read_link(path).ok();
    let of_init: Vec<_> = NAMESPACES
        .iter()
        .map(|(ns, _)| link(format!("/proc/{init}/ns/{ns}")))
        .collect();
    for &(host, ns_pid) in procs {
        // Every thread: setns works per thread for most kinds.
        let own = threads(host).unwrap_or_default().into_iter().find_map(|tid| {
            NAMESPACES.iter().zip(&of_init).find_map(|((ns, what), want)| {
                match (link(format!("/proc/{host}/task/{tid}/ns/{ns}")), want) {
                    (Some(a), Some(b)) if a != *b => Some(what),
                    _ => None,
                }
            })
        });
        if let Some(what) = own {
            return Err(Error::Uncarried {
                pid: host,
                ns_pid,
                what,
            });
        }
    }
    Ok(())
}

/// Host thread IDs of a process, the main thread first.
pub fn threads(pid: i32) -> Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| Error::Proc {
            pid,
            what: "task list".into(),
            source,
        })?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    tids.sort_unstable_by_key(|t| (*t != pid, *t));
    Ok(tids)
}

/// The wait status of a zombie, from /proc/PID/stat field 52.
pub fn zombie_status(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(") ")?.1.to_string();
            after.split_whitespace().nth(52 - 3)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The limits of a process, from /proc/PID/limits.
pub fn rlimits(pid: i32) -> Vec<Rlimit> {
    const NAMES: [(&str, u32); 16] = [
        ("Max cpu time", 0),
        ("Max file size", 1),
        ("Max data size", 2),
        ("Max stack size", 3),
        ("Max core file size", 4),
        ("Max resident set", 5),
        ("Max processes", 6),
        ("Max open files", 7),
        ("Max locked memory", 8),
        ("Max address space", 9),
        ("Max file locks", 10),
        ("Max pending signals", 11),
        ("Max msgqueue size", 12),
        ("Max nice priority", 13),
        ("Max realtime priority", 14),
        ("Max realtime timeout", 15),
    ];
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let val = |s: &str| {
        if s == "unlimited" {
            u64::MAX
        } else {
            s.parse().unwrap_or(u64::MAX)
        }
    };
    NAMES
        .iter()
        .filter_map(|(name, resource)| {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let mut it = line[name.len()..].split_whitespace();
            Some(Rlimit {
                resource: *resource,
                soft: val(it.next()?),
                hard: val(it.next()?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_limits_and_threads() {
        let me = std::process::id() as i32;
        let l = rlimits(me);
        assert!(l.iter().any(|r| r.resource == 7 && r.soft > 0));
        assert_eq!(threads(me).unwrap()[0], me);
    }

    #[test]
    fn damaged_trees_are_refused() {
        let thread = |tid| ThreadImage {
            tid,
            regs: vec![0; super::super::regs::REGS_WORDS],
            xstate: vec![],
            sigmask: 0,
            rseq: None,
            robust_head: 0,
            robust_len: 0,
            clear_tid: 0,
            comm: "sh".into(),
        };
        let p = |pid, ppid| ProcessImage {
            pid,
            ppid,
            pgid: 1,
            sid: 1,
            host_pid: 100 + pid,
            comm: "sh".into(),
            zombie: None,
            threads: vec![thread(pid)],
            cwd: "/".into(),
            umask: 0o22,
            rlimits: vec![],
            creds: Some(crate::kinds::creds::Creds::default()),
            timers: Some(Default::default()),
        };
        let zombie = |pid, ppid| ProcessImage {
            zombie: Some(0),
            threads: vec![],
            ..p(pid, ppid)
        };
        check(&[p(1, 0), p(2, 1), zombie(3, 2)]).unwrap();
        let refused =
            |procs: &[ProcessImage], at: i32| matches!(check(procs), Err(Error::BadTree { pid, .. }) if pid == at);
        assert!(refused(&[], 1));
        assert!(refused(&[p(2, 1), p(1, 0)], 2));
        assert!(refused(&[p(1, 0), p(2, 1), p(2, 1)], 2));
        assert!(refused(&[p(1, 0), p(-4, 1)], -4));
        assert!(refused(
            &[
                p(1, 0),
                ProcessImage {
                    threads: vec![],
                    ..p(2, 1)
                }
            ],
            2
        ));
        assert!(refused(&[zombie(1, 0)], 1));
        // Never forked: its parent is not in the tree, or is a zombie.
        assert!(refused(&[p(1, 0), p(2, 9)], 2));
        assert!(refused(&[p(1, 0), zombie(2, 1), p(3, 2)], 3));
        assert!(refused(&[p(1, 0), p(2, 2)], 2));
        assert!(refused(&[p(1, 0), p(2, 3), p(3, 2)], 2));
        // Listed before its parent: still forked.
        check(&[p(1, 0), p(3, 2), p(2, 1)]).unwrap();
        // Threads: the main one first, TIDs unique, registers of x86_64.
        let with_threads = |tids: Vec<i32>| ProcessImage {
            threads: tids.into_iter().map(thread).collect(),
            ..p(2, 1)
        };
        check(&[p(1, 0), with_threads(vec![2, 5])]).unwrap();
        assert!(refused(&[p(1, 0), with_threads(vec![5, 2])], 2));
        assert!(refused(&[p(1, 0), with_threads(vec![2, 1])], 2));
        let mut short = p(2, 1);
        short.threads[0].regs.pop();
        assert!(refused(&[p(1, 0), short], 2));
        assert!(refused(&[p(1, 0), ProcessImage { pgid: -1, ..p(2, 1) }], 2));
        assert!(refused(&[p(1, 0), ProcessImage { creds: None, ..p(2, 1) }], 2));
        assert!(refused(
            &[
                p(1, 0),
                ProcessImage {
                    threads: vec![thread(3)],
                    ..zombie(3, 1)
                }
            ],
            3
        ));
    }
}
