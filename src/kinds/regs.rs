//! Threads and their CPU state: general registers (fs/gs base included),
//! the xsave area (FPU/SSE/AVX/PKRU), the blocked-signal mask, the rseq
//! registration, the robust futex list and the clear-child-tid address.

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use crate::sys::ptrace::{REGS_WORDS, XSTATE_MAX};

use super::remote::{self, nr, Remote};
use crate::sys::ptrace::{self, RseqConfig};
use crate::sys::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("thread {tid}: {what}: {source}")]
    Ptrace {
        tid: i32,
        what: &'static str,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Remote(#[from] remote::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn pt(tid: i32, what: &'static str) -> impl FnOnce(Errno) -> Error {
    move |source| Error::Ptrace { tid, what, source }
}

/// One thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadImage {
    /// TID inside the container's PID namespace.
    pub tid: i32,
    /// user_regs_struct, as 27 words.
    pub regs: Vec<u64>,
    pub xstate: Vec<u8>,
    pub sigmask: u64,
    pub rseq: Option<RseqConfig>,
    pub robust_head: u64,
    pub robust_len: u64,
    pub clear_tid: u64,
    /// The thread's name (/proc/PID/task/TID/comm).
    pub comm: String,
}

impl ThreadImage {
    pub fn words(&self) -> [u64; REGS_WORDS] {
        let mut w = [0u64; REGS_WORDS];
        for (d, s) in w.iter_mut().zip(&self.regs) {
            *d = *s;
        }
        w
    }
}

/// Reads a stopped thread. `remote` is the thread itself (for the injected
/// prctl(PR_GET_TID_ADDRESS), which reports the calling thread's value).
pub fn dump(remote: &Remote, ns_tid: i32, regs: &ptrace::UserRegs) -> Result<ThreadImage> {
    let tid = remote.tid;
    let p = Pid::from_raw(tid);
    let xstate = ptrace::get_xstate(p).map_err(pt(tid, "read xstate"))?;
    let sigmask = ptrace::get_sigmask(p).map_err(pt(tid, "read signal mask"))?;
    let rseq = ptrace::rseq_config(p).map_err(pt(tid, "read rseq configuration"))?;
    let (robust_head, robust_len) = ptrace::robust_list(p).map_err(pt(tid, "read robust list"))?;
    const PR_GET_TID_ADDRESS: u64 = 40;
    remote.call(
        "prctl(PR_GET_TID_ADDRESS)",
        nr::PRCTL,
        &[PR_GET_TID_ADDRESS, remote.scratch],
    )?;
    let clear_tid = remote.read_u64(remote.scratch)?;
    let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", remote.pid))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    Ok(ThreadImage {
        comm,
        tid: ns_tid,
        regs: ptrace::regs_to_words(regs).to_vec(),
        xstate,
        sigmask,
        rseq,
        robust_head,
        robust_len,
        clear_tid,
    })
}

// Kernel-internal syscall-restart codes, as a stopped task's rax shows them.
const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// The registers to resume a thread with. A thread caught inside an
/// interrupted syscall runs that syscall again, except where the kernel's
/// restart block is needed (nanosleep, poll with a timeout): that one
/// returns EINTR, and the program retries as it would after a signal.
pub fn resume_regs(img: &ThreadImage) -> ptrace::UserRegs {
    let mut r = ptrace::words_to_regs(&img.words());
    if (r.orig_rax as i64) >= 0 {
        match r.rax as i64 {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = r.orig_rax;
                r.rip = r.rip.wrapping_sub(2);
            }
            ERESTART_RESTARTBLOCK => r.rax = (-libc::EINTR) as i64 as u64,
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// Restores the kernel-side per-thread state through injected syscalls in
/// that thread: clear-child-tid, robust list and rseq.
pub fn restore_kernel_state(remote: &Remote, img: &ThreadImage) -> Result<()> {
    if img.clear_tid != 0 {
        remote.call("set_tid_address", nr::SET_TID_ADDRESS, &[img.clear_tid])?;
    }
    if img.robust_head != 0 {
        remote.call(
            "set_robust_list",
            nr::SET_ROBUST_LIST,
            &[img.robust_head, img.robust_len],
        )?;
    }
    if let Some(r) = img.rseq {
        remote.call(
            "rseq register",
            nr::RSEQ,
            &[r.ptr, u64::from(r.len), 0, u64::from(r.sig)],
        )?;
    }
    Ok(())
}

/// Sets a thread's name (only the thread itself can: injected prctl).
pub fn set_comm(remote: &Remote, comm: &str) -> Result<()> {
    if comm.is_empty() {
        return Ok(());
    }
    const PR_SET_NAME: u64 = 15;
    let name: String = comm.chars().take(15).collect();
    let at = remote.put_cstr(remote::PAGE, &name)?;
    remote.call("prctl(PR_SET_NAME)", nr::PRCTL, &[PR_SET_NAME, at])?;
    Ok(())
}

/// Unregisters the rseq area a restorer copy inherited (glibc registers one
/// per thread), before its memory goes away.
pub fn drop_rseq(remote: &Remote) -> Result<()> {
    let p = Pid::from_raw(remote.tid);
    if let Some(r) = ptrace::rseq_config(p).map_err(pt(remote.tid, "read rseq configuration"))? {
        const RSEQ_FLAG_UNREGISTER: u64 = 1;
        remote.call(
            "rseq unregister",
            nr::RSEQ,
            &[r.ptr, u64::from(r.len), RSEQ_FLAG_UNREGISTER, u64::from(r.sig)],
        )?;
    }
    Ok(())
}

/// Sets the final registers, xstate and signal mask of a thread.
pub fn restore_cpu(tid: i32, img: &ThreadImage) -> Result<()> {
    let p = Pid::from_raw(tid);
    ptrace::set_sigmask(p, img.sigmask).map_err(pt(tid, "set signal mask"))?;
    if !img.xstate.is_empty() {
        ptrace::set_xstate(p, &img.xstate).map_err(pt(tid, "set xstate"))?;
    }
    ptrace::set_regs(p, &resume_regs(img)).map_err(pt(tid, "set registers"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_with(orig_rax: u64, rax: i64, rip: u64) -> ThreadImage {
        let mut r = ptrace::words_to_regs(&[0; 27]);
        r.orig_rax = orig_rax;
        r.rax = rax as u64;
        r.rip = rip;
        ThreadImage {
            tid: 1,
            regs: ptrace::regs_to_words(&r).to_vec(),
            xstate: vec![],
            sigmask: 0,
            rseq: None,
            robust_head: 0,
            robust_len: 0,
            clear_tid: 0,
            comm: String::new(),
        }
    }

    #[test]
    fn interrupted_syscalls_restart_or_return_eintr() {
        let r = resume_regs(&thread_with(61, ERESTARTSYS, 0x1002));
        assert_eq!((r.rax, r.rip), (61, 0x1000));
        let r = resume_regs(&thread_with(230, ERESTART_RESTARTBLOCK, 0x1002));
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1002));
        // Not in a syscall: untouched.
        let r = resume_regs(&thread_with(u64::MAX, 5, 0x1002));
        assert_eq!((r.rax, r.rip), (5, 0x1002));
        // A syscall that completed: untouched.
        let r = resume_regs(&thread_with(0, 17, 0x1002));
        assert_eq!((r.rax, r.rip), (17, 0x1002));
        assert_eq!(r.orig_rax, u64::MAX);
    }
}
