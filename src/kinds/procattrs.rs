//! Process attributes the scheduler and prctl hold: the nice value,
//! scheduling policy (with SCHED_RESET_ON_FORK) and real-time priority,
//! oom_score_adj and loginuid, read and set from outside (/proc,
//! sched_setscheduler, setpriority); and the prctl flags dumpable, child
//! subreaper, THP disable and the timer slack, read and set by injected
//! prctl.
//!
//! Section `procattrs`, one entry per live process. An image without it
//! (format 3) restores with the attributes a restored task gets anyway.
//! Threads of one process whose nice value or policy differ are refused
//! before anything stops: only the process's are carried.

use serde::{Deserialize, Serialize};

use super::remote::{self, nr, Remote};
use crate::sys::{self, Errno};

/// The section's name.
pub const SECTION: &str = "procattrs";

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
}

const PR_SET_DUMPABLE: u64 = 4;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;

/// (nice, rt_priority) of task `tid` of process `pid`, from its stat.
fn sched_of(pid: i32, tid: i32) -> Result<(i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).map_err(|source| Error::Read {
        pid,
        what: "stat",
        source,
    })?;
    // Fields after the command: state is field 3, nice 19, rt_priority 40.
    let rest = text.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize, what| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or(Error::Stat { pid, what })
    };
    Ok((field(19, "nice")?, field(40, "rt_priority")?))
}

fn read_proc(pid: i32, what: &'static str) -> Result<Option<String>> {
    match std::fs::read_to_string(format!("/proc/{pid}/{what}")) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { pid, what, source }),
    }
}

/// Refuses, while the container runs, a process whose threads differ in
/// nice value or scheduling policy (only the process's are carried).
pub fn refuse_uncarried(pid: i32, ns_pid: i32, tids: &[i32]) -> Result<()> {
    let main = (sched_of(pid, pid)?, sys::get_scheduler(pid).ok());
    for &tid in tids.iter().filter(|t| **t != pid) {
        // A thread that ended meanwhile holds nothing.
        let Ok(sched) = sched_of(pid, tid) else { continue };
        let what = if sched != main.0 {
            "nice value or real-time priority"
        } else if sys::get_scheduler(tid).ok() != main.1 {
            "scheduling policy"
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
    })
}

/// Sets the attributes again on the restored process behind `remote`
/// (host PID) and its threads `tids`, after its credentials (which reset
/// dumpable) and before it runs.
pub fn restore(remote: &Remote, tids: &[i32], a: &ProcAttrs) -> Result<()> {
    let pid = remote.pid;
    let set = |what| move |source| Error::Set { pid, what, source };
    for &tid in tids {
        sys::set_scheduler(tid, a.policy, a.rt_priority).map_err(set("scheduling policy"))?;
        sys::set_nice(tid, a.nice).map_err(set("nice value"))?;
    }
    let write = |what: &'static str, value: String| {
        std::fs::write(format!("/proc/{pid}/{what}"), value).map_err(|source| Error::Write { pid, what, source })
    };
    write("oom_score_adj", a.oom_score_adj.to_string())?;
    if let Some(uid) = a.loginuid {
        if read_proc(pid, "loginuid")?.and_then(|v| v.parse().ok()) != Some(uid) {
            write("loginuid", uid.to_string())?;
        }
    }
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
    prctl("prctl(PR_SET_TIMERSLACK)", PR_SET_TIMERSLACK, a.timerslack_ns)?;
    prctl(
        "prctl(PR_SET_CHILD_SUBREAPER)",
        PR_SET_CHILD_SUBREAPER,
        u64::from(a.subreaper),
    )?;
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
}
