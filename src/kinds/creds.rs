//! Credentials: uid and gid sets, supplementary groups, capabilities
//! (effective, permitted, inheritable, bounding, ambient), no_new_privs and
//! the parent-death signal. Restored last, in every thread (credentials
//! are per thread; libc's setuid broadcasts to all threads, a raw syscall
//! does not).
//!
//! Order on restore: groups, gids, then uids with SECBIT_NO_SETUID_FIXUP
//! and SECBIT_KEEP_CAPS so that changing uid does not drop capabilities
//! yet, secure bits back off, the bounding set, then capset to the final
//! sets, ambient capabilities, no_new_privs and the death signal.
//! seccomp filters (classic BPF, read with PTRACE_SECCOMP_GET_FILTER) are
//! installed again after everything else, oldest first, with TSYNC.

use serde::{Deserialize, Serialize};

use super::remote::{self, nr, Remote};
use crate::proc::{self, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error(transparent)]
    Status(#[from] proc::Error),
    #[error("process {pid} (pid {ns_pid} in the container): {reason}")]
    Seccomp { pid: i32, ns_pid: i32, reason: String },
    #[error("process {pid} (pid {ns_pid} in the container), thread {tid}: runs in strict seccomp mode (SECCOMP_MODE_STRICT), which migrate does not carry")]
    StrictSeccomp { pid: i32, ns_pid: i32, tid: i32 },
    #[error("process {pid} (pid {ns_pid} in the container), thread {tid}: has credentials of its own (uids, gids, groups, capabilities or no_new_privs other than its process's, as a raw setresuid or capset in one thread leaves them), which migrate does not carry")]
    ThreadCreds { pid: i32, ns_pid: i32, tid: i32 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The default is all zero: root with no capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    /// real, effective, saved, fs
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub pdeathsig: i32,
    /// seccomp filters, oldest first, as raw sock_filter arrays.
    #[serde(default)]
    pub seccomp: Vec<Vec<u8>>,
}

impl Creds {
    /// The credentials a status file shows (no death signal or seccomp
    /// filters: those are read otherwise).
    pub fn from_status(s: &Status) -> Self {
        Self {
            uids: s.uids,
            gids: s.gids,
            groups: s.groups.clone(),
            cap_inh: s.cap_inh,
            cap_prm: s.cap_prm,
            cap_eff: s.cap_eff,
            cap_bnd: s.cap_bnd,
            cap_amb: s.cap_amb,
            no_new_privs: s.no_new_privs,
            pdeathsig: 0,
            seccomp: Vec::new(),
        }
    }

    /// The credentials of a freshly started container process (root with
    /// every capability): nothing to change.
    pub fn is_initial(&self, all_caps: u64) -> bool {
        self.uids == [0; 4]
            && self.gids == [0; 4]
            && self.groups.is_empty()
            && self.cap_eff == all_caps
            && self.cap_prm == all_caps
            && self.cap_bnd == all_caps
            && self.cap_inh == 0
            && self.cap_amb == 0
            && !self.no_new_privs
            && self.pdeathsig == 0
    }
}

/// Refuses process `pid` if any of its threads `tids` runs in strict
/// seccomp mode (migrate does not carry that mode, and a syscall injected
/// without PTRACE_O_SUSPEND_SECCOMP would kill the thread), or holds
/// credentials other than the process's (the dump reads them once, and the
/// restore gives them to every thread). Checked before the container is
/// frozen, and again once it is stopped.
pub fn refuse_uncarried(pid: i32, ns_pid: i32, tids: &[i32]) -> Result<()> {
    let main = proc::read_status(pid).ok().map(|s| Creds::from_status(&s));
    for &tid in tids {
        // A thread that ended meanwhile holds nothing.
        let Ok(status) = proc::read_task_status(pid, tid) else {
            continue;
        };
        if status.seccomp == 1 {
            return Err(Error::StrictSeccomp { pid, ns_pid, tid });
        }
        if main.as_ref().is_some_and(|m| *m != Creds::from_status(&status)) {
            return Err(Error::ThreadCreds { pid, ns_pid, tid });
        }
    }
    Ok(())
}

/// Reads the credentials of a stopped process (its main thread; `tids`
/// are all its threads, which must share its seccomp filters).
pub fn dump(remote: &Remote, ns_pid: i32, tids: &[i32]) -> Result<Creds> {
    let pid = remote.pid;
    let status = proc::read_status(pid)?;
    let (mut c, seccomp) = (Creds::from_status(&status), status.seccomp);
    let seccomp_err = |reason: String| Error::Seccomp { pid, ns_pid, reason };
    if seccomp == 1 {
        return Err(Error::StrictSeccomp { pid, ns_pid, tid: pid });
    }
    if seccomp == 2 {
        let read = |tid: i32| {
            crate::sys::ptrace::seccomp_filters(nix::unistd::Pid::from_raw(tid))
                .map_err(|e| seccomp_err(format!("read seccomp filters of thread {tid}: {e}")))
        };
        let mut filters = read(pid)?;
        for t in tids {
            if read(*t)? != filters {
                return Err(seccomp_err(
                    "threads with different seccomp filters are not supported".into(),
                ));
            }
        }
        filters.reverse();
        c.seccomp = filters;
    }
    const PR_GET_PDEATHSIG: u64 = 2;
    c.pdeathsig = remote.prctl_get_int("prctl(PR_GET_PDEATHSIG)", PR_GET_PDEATHSIG)?;
    Ok(c)
}

const PR_SET_PDEATHSIG: u64 = 1;
const PR_CAPBSET_DROP: u64 = 24;
const PR_SET_SECUREBITS: u64 = 28;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;
const SECBIT_KEEP_CAPS: u64 = 1 << 4;
const CAP_LAST: u64 = 40;

/// Applies credentials to one stopped thread (the remote's), through its
/// scratch area, and its `securebits` (kinds::prctls) while it may still
/// set them. The thread must still have every capability.
pub fn restore(remote: &Remote, c: &Creds, securebits: u64) -> Result<()> {
    let s = remote.scratch;
    let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    remote.write(s, &groups)?;
    remote.call("setgroups", libc::SYS_setgroups, &[c.groups.len() as u64, s])?;
    let [gr, ge, gs, _] = c.gids;
    remote.call("setresgid", libc::SYS_setresgid, &[gr.into(), ge.into(), gs.into()])?;
    remote.call("setfsgid", libc::SYS_setfsgid, &[c.gids[3].into()])?;
    remote.call(
        "securebits",
        nr::PRCTL,
        &[PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS],
    )?;
    let [ur, ue, us, _] = c.uids;
    remote.call("setresuid", libc::SYS_setresuid, &[ur.into(), ue.into(), us.into()])?;
    remote.call("setfsuid", libc::SYS_setfsuid, &[c.uids[3].into()])?;
    remote.call("securebits", nr::PRCTL, &[PR_SET_SECUREBITS, securebits])?;
    for cap in 0..=CAP_LAST {
        if c.cap_bnd & (1 << cap) == 0 {
            // EINVAL for capabilities this kernel does not know: ignore.
            let _ = remote.call("drop bounding capability", nr::PRCTL, &[PR_CAPBSET_DROP, cap]);
        }
    }
    // capset: a v3 header and two 32-bit halves of each set.
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    for half in [0, 32] {
        for set in [c.cap_eff, c.cap_prm, c.cap_inh] {
            b.extend_from_slice(&((set >> half) as u32).to_le_bytes());
        }
    }
    remote.write(s, &b)?;
    remote.call("capset", libc::SYS_capset, &[s, s + 8])?;
    for cap in 0..=CAP_LAST {
        if c.cap_amb & (1 << cap) != 0 {
            remote.call(
                "raise ambient capability",
                nr::PRCTL,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0],
            )?;
        }
    }
    if c.no_new_privs {
        remote.call("no_new_privs", nr::PRCTL, &[PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0])?;
    }
    if c.pdeathsig != 0 {
        remote.call("pdeathsig", nr::PRCTL, &[PR_SET_PDEATHSIG, c.pdeathsig as u64])?;
    }
    Ok(())
}

/// Installs the seccomp filters again (oldest first, synchronised to every
/// thread). Last of all: afterwards the filters apply to anything injected.
pub fn restore_seccomp(remote: &Remote, c: &Creds) -> Result<()> {
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
    let s = remote.scratch;
    for f in &c.seccomp {
        // struct sock_fprog { u16 len; sock_filter *filter; }, the
        // instructions right after it.
        let mut prog = Vec::with_capacity(16);
        prog.extend_from_slice(&((f.len() / 8) as u16).to_le_bytes());
        prog.extend_from_slice(&[0u8; 6]);
        prog.extend_from_slice(&(s + 16).to_le_bytes());
        remote.write(s, &prog)?;
        remote.write(s + 16, f)?;
        remote.call(
            "seccomp",
            libc::SYS_seccomp,
            &[SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, s],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_status() {
        let text = "State:\tS (sleeping)\nPPid:\t1\nNSpid:\t7\nNSpgid:\t7\nNSsid:\t7\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t65534 \nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n";
        let c = Creds::from_status(&proc::parse_status(7, text).unwrap());
        assert_eq!(c.uids, [65534; 4]);
        assert_eq!(c.groups, vec![65534]);
        assert_eq!(c.cap_bnd, 0x1ff_ffff_ffff);
        assert_eq!(c.cap_eff, 0);
        assert!(!c.is_initial(0x1ff_ffff_ffff));
        assert!(Creds {
            cap_eff: 0x1ff_ffff_ffff,
            cap_prm: 0x1ff_ffff_ffff,
            cap_bnd: 0x1ff_ffff_ffff,
            ..Creds::default()
        }
        .is_initial(0x1ff_ffff_ffff));
    }
}
