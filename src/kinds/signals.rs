//! Signals: every handler of a process with its flags, mask and restorer
//! (read and set with injected rt_sigaction, since /proc does not show
//! them), and the pending signals with their siginfo, of the process and
//! of each thread (read with PTRACE_PEEKSIGINFO, queued again from inside
//! the task with rt_sigqueueinfo / rt_tgsigqueueinfo). Blocked masks are
//! per thread, in `regs`.

use serde::{Deserialize, Serialize};

use super::remote::{self, nr, Remote};

pub type Error = remote::Error;
pub type Result<T> = std::result::Result<T, Error>;

/// struct kernel_sigaction for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The section `signals`: each process's dispositions, pending signals and
/// alternate stacks, by PID in the container.
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "signals";
    const VERSION: u32 = 4;
    type State = Vec<(i32, SignalsImage)>;
    type Error = Error;

    fn validate(state: &Self::State) -> Result<()> {
        state.iter().try_for_each(|(pid, s)| s.check(*pid))
    }
}

/// A process's signal state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalsImage {
    pub actions: Vec<SigAction>,
    /// Pending for the process (any thread may take them): raw siginfo.
    pub shared: Vec<Vec<u8>>,
    /// Pending for one thread, by thread ID in the container.
    pub threads: Vec<(i32, Vec<Vec<u8>>)>,
    /// Each thread's alternate signal stack (stack_t: sp, flags, size).
    pub altstacks: Vec<(i32, [u64; 3])>,
}

impl SignalsImage {
    /// Checks the pending signals, each queued again from a siginfo
    /// written into the restored task's scratch page.
    pub fn check(&self, pid: i32) -> Result<()> {
        let infos = self.shared.iter().chain(self.threads.iter().flat_map(|(_, q)| q));
        if let Some(info) = infos.into_iter().find(|i| i.len() != remote::SIGINFO_LEN) {
            return Err(Error::BadSiginfo { pid, len: info.len() });
        }
        Ok(())
    }
}

/// A thread's alternate signal stack (injected sigaltstack in the thread).
pub fn dump_altstack(remote: &Remote) -> Result<[u64; 3]> {
    remote.call("sigaltstack (read)", libc::SYS_sigaltstack, &[0, remote.scratch])?;
    let mut b = [0u8; 24];
    remote.read(remote.scratch, &mut b)?;
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok([w(0), w(1) & 0xffff_ffff, w(2)])
}

/// Sets a thread's alternate signal stack again (if it had one).
pub fn restore_altstack(remote: &Remote, ss: &[u64; 3]) -> Result<()> {
    if ss[1] & libc::SS_DISABLE as u64 != 0 || ss[2] == 0 {
        return Ok(());
    }
    // SS_ONSTACK is a state, not a flag one can set.
    let flags = ss[1] & !(libc::SS_ONSTACK as u64);
    let b: Vec<u8> = [ss[0], flags, ss[2]].iter().flat_map(|w| w.to_le_bytes()).collect();
    remote.write(remote.scratch, &b)?;
    remote.call("sigaltstack (set)", libc::SYS_sigaltstack, &[remote.scratch, 0])?;
    Ok(())
}

/// Pending signals of a stopped thread: its own queue, or with `shared`
/// the process's.
pub fn dump_pending(tid: i32, shared: bool) -> std::result::Result<Vec<Vec<u8>>, crate::sys::Errno> {
    let p = nix::unistd::Pid::from_raw(tid);
    Ok(crate::sys::ptrace::pending_signals(p, shared)?
        .into_iter()
        .map(|i| i.to_vec())
        .collect())
}

/// The signal number of a raw siginfo (0 if it is too short).
fn signo_of(info: &[u8]) -> i32 {
    info.get(..4)
        .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or(0)
}

/// Whether signal `sig` is among the pending `infos`.
pub fn holds(infos: &[Vec<u8>], sig: i32) -> bool {
    infos.iter().any(|i| signo_of(i) == sig)
}

/// Queues signals again from inside a thread (`remote`), to the process
/// `tgid` (shared) or to thread `tid` of it; IDs as the container sees
/// them. The thread's signals must be blocked meanwhile (see the engine).
pub fn restore_pending(remote: &Remote, tgid: i32, tid: Option<i32>, infos: &[Vec<u8>]) -> Result<()> {
    for info in infos {
        let signo = signo_of(info);
        if signo <= 0 || signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        remote.write(remote.scratch, info)?;
        match tid {
            Some(t) => remote.call(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                &[tgid as u64, t as u64, signo as u64, remote.scratch],
            )?,
            None => remote.call(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                &[tgid as u64, signo as u64, remote.scratch],
            )?,
        };
    }
    Ok(())
}

/// Every signal but SIGKILL and SIGSTOP (32 and 33 included: glibc's
/// SIGCANCEL and SIGSETXID, whose handlers setuid() in a multithreaded
/// process needs).
fn signals() -> impl Iterator<Item = u32> {
    (1..=64u32).filter(|s| *s != libc::SIGKILL as u32 && *s != libc::SIGSTOP as u32)
}

/// The handler a zombie's caught signals are given back: a zombie runs no
/// handler, and shows only that it has one (SigCgt).
pub const ZOMBIE_HANDLER: u64 = 2;

/// A zombie's dispositions, from its status (`ignored`, `caught`: SigIgn,
/// SigCgt): all a zombie shows of them (nothing can be injected into it).
/// A caught signal's handler is [`ZOMBIE_HANDLER`].
pub fn of_zombie(ignored: u64, caught: u64) -> Vec<SigAction> {
    let set = |mask: u64, s: u32| mask & (1 << (s - 1)) != 0;
    signals()
        .filter_map(|signo| {
            let handler = match () {
                _ if set(caught, signo) => ZOMBIE_HANDLER,
                _ if set(ignored, signo) => libc::SIG_IGN as u64,
                _ => return None,
            };
            Some(SigAction {
                signo,
                handler,
                flags: 0,
                restorer: 0,
                mask: 0,
            })
        })
        .collect()
}

pub fn dump(remote: &Remote) -> Result<Vec<SigAction>> {
    let out = remote.scratch;
    let mut acts = Vec::new();
    for signo in signals() {
        remote.call("rt_sigaction (read)", nr::RT_SIGACTION, &[u64::from(signo), 0, out, 8])?;
        let mut b = [0u8; 32];
        remote.read(out, &mut b)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        acts.push(SigAction {
            signo,
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        });
    }
    Ok(acts)
}

/// Sets every disposition; signals missing from the image get SIG_DFL (the
/// restorer copy may have others, such as SIGPIPE ignored).
pub fn restore(remote: &Remote, acts: &[SigAction]) -> Result<()> {
    let at = remote.scratch;
    for signo in signals() {
        // Images before 32 and 33 were carried leave them as they are.
        if (32..=33).contains(&signo) && !acts.iter().any(|a| a.signo == signo) {
            continue;
        }
        let a = acts.iter().find(|a| a.signo == signo).copied().unwrap_or(SigAction {
            signo,
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        });
        let mut b = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        remote.write(at, &b)?;
        remote.call("rt_sigaction (set)", nr::RT_SIGACTION, &[u64::from(signo), at, 0, 8])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siginfo_of_the_wrong_size_is_refused() {
        let img = |info: Vec<u8>| SignalsImage {
            actions: vec![],
            shared: vec![],
            threads: vec![(3, vec![info])],
            altstacks: vec![],
        };
        img(vec![0; remote::SIGINFO_LEN]).check(1).unwrap();
        // Written into the task's scratch page: longer would run past it.
        for len in [0, 4, remote::SIGINFO_LEN + 1, 1 << 20] {
            assert!(matches!(img(vec![0; len]).check(1), Err(Error::BadSiginfo { pid: 1, len: l }) if l == len));
        }
    }
}
