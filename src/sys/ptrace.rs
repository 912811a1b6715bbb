//! ptrace: seizing tasks, register sets, signal masks, rseq configuration,
//! and running syscalls inside a stopped task (syscall injection).

use std::os::raw::c_void;

use nix::sys::ptrace::{self, Options};
use nix::unistd::Pid;

use super::Errno;

pub use libc::user_regs_struct as UserRegs;

/// PTRACE_EVENT_STOP: the stop that PTRACE_INTERRUPT and group-stop report
/// under PTRACE_SEIZE.
pub const EVENT_STOP: i32 = 128;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const NT_X86_XSTATE: libc::c_int = 0x202;
/// Room for the largest xsave area a current x86 CPU reports (AMX needs
/// about 11 KiB).
pub const XSTATE_MAX: usize = 16384;

/// Seizes `tid` (no stop yet) with the given options, and with seccomp
/// suspended while it is traced (PTRACE_O_SUSPEND_SECCOMP), so that a
/// syscall injected into a task whose filters forbid it does not kill the
/// task. Where that is not allowed (no CAP_SYS_ADMIN, a kernel without
/// CONFIG_CHECKPOINT_RESTORE) the task is seized without it.
pub fn seize(tid: Pid, opts: Options) -> Result<(), Errno> {
    let suspend = Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
    match ptrace::seize(tid, opts | suspend) {
        Err(Errno::EPERM | Errno::EINVAL) => ptrace::seize(tid, opts),
        r => r,
    }
}

/// Asks a seized task to stop; wait for the stop with [`wait_stop`].
pub fn interrupt(tid: Pid) -> Result<(), Errno> {
    ptrace::interrupt(tid)
}

/// A traced task's state change, decoded from the raw wait status (nix's
/// `WaitStatus` can not represent stops for real-time signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Exited or killed.
    Gone,
    /// A syscall entry or exit stop (PTRACE_O_TRACESYSGOOD).
    Syscall,
    /// A ptrace event stop (PTRACE_EVENT_*).
    Event(i32),
    /// A signal-delivery stop, with the signal number (1-64).
    Signal(i32),
}

/// Waits for the next state change of a traced task (any thread).
pub fn wait(tid: Pid) -> Result<Stop, Errno> {
    wait_until(tid, None)
}

/// [`wait`], giving up with ETIMEDOUT at `deadline`.
pub fn wait_until(tid: Pid, deadline: Option<std::time::Instant>) -> Result<Stop, Errno> {
    let mut status: libc::c_int = 0;
    let flags = match deadline {
        Some(_) => libc::__WALL | libc::WNOHANG,
        None => libc::__WALL,
    };
    loop {
        // SAFETY: waitpid writes the status into `status`, alive for the call.
        let ret = unsafe { libc::waitpid(tid.as_raw(), &mut status, flags) };
        if ret > 0 || (ret == 0 && deadline.is_none()) {
            break;
        }
        if ret == 0 {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Errno::ETIMEDOUT);
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
            continue;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Ok(Stop::Gone);
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    Ok(if sig == libc::SIGTRAP | 0x80 {
        Stop::Syscall
    } else if event != 0 {
        Stop::Event(event)
    } else {
        Stop::Signal(sig)
    })
}

/// How long a seized task may take to stop.
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `tid` reports a ptrace event-stop (PTRACE_EVENT_STOP),
/// passing over signal-delivery stops. Signals seen meanwhile are returned
/// so that the caller can deliver them again when it lets the task go.
///
/// Gives up with ETIMEDOUT after [`STOP_TIMEOUT`]: a task may not stop at
/// all (a parent in vfork waits, uninterruptibly, for a child that is
/// stopped itself).
pub fn wait_stop(tid: Pid) -> Result<Vec<i32>, Errno> {
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    let mut held = Vec::new();
    loop {
        match wait_until(tid, Some(deadline))? {
            Stop::Event(EVENT_STOP) => return Ok(held),
            Stop::Signal(sig) => {
                // A signal arrived before our stop: keep it, and suppress it
                // for now by restarting without it.
                held.push(sig);
                ptrace::cont(tid, None)?;
            }
            Stop::Gone => return Err(Errno::ESRCH),
            _ => ptrace::cont(tid, None)?,
        }
    }
}

/// Detaches, delivering signal `sig` (any number, real-time ones too).
pub fn detach(tid: Pid, sig: Option<i32>) -> Result<(), Errno> {
    // SAFETY: PTRACE_DETACH takes the signal number as its data word; no
    // memory is passed.
    let ret = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid.as_raw(), 0usize, sig.unwrap_or(0) as usize) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Lets a traced task go on from its stop (PTRACE_CONT), delivering
/// signal `sig` (0: none) if the stop is a signal-delivery stop.
pub fn resume(tid: Pid, sig: i32) -> Result<(), Errno> {
    // SAFETY: PTRACE_CONT takes the signal number as its data word; no
    // memory is passed.
    let ret = unsafe { libc::ptrace(libc::PTRACE_CONT, tid.as_raw(), 0usize, sig as usize) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Sends signal `sig` (any number) to thread `tid` of process `tgid`.
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: tgkill takes three integers.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

pub fn get_regs(tid: Pid) -> Result<UserRegs, Errno> {
    ptrace::getregs(tid)
}

pub fn set_regs(tid: Pid, regs: &UserRegs) -> Result<(), Errno> {
    ptrace::setregs(tid, *regs)
}

/// The task's xsave area (FPU, SSE, AVX, PKRU... state), as many bytes as
/// the kernel reports.
pub fn get_xstate(tid: Pid) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: PTRACE_GETREGSET writes at most iov_len bytes to iov_base,
    // which points at `buf`, alive for the call; it updates iov_len.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            tid.as_raw(),
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    buf.truncate(iov.iov_len);
    Ok(buf)
}

pub fn set_xstate(tid: Pid, xstate: &[u8]) -> Result<(), Errno> {
    let mut copy = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: copy.as_mut_ptr() as *mut c_void,
        iov_len: copy.len(),
    };
    // SAFETY: PTRACE_SETREGSET reads iov_len bytes from iov_base (`copy`,
    // alive for the call).
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            tid.as_raw(),
            NT_X86_XSTATE,
            &mut iov as *mut libc::iovec,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The blocked-signal mask of a stopped thread.
pub fn get_sigmask(tid: Pid) -> Result<u64, Errno> {
    let mut mask: u64 = 0;
    // SAFETY: PTRACE_GETSIGMASK writes 8 bytes (the size we pass) to `mask`.
    let ret = unsafe { libc::ptrace(PTRACE_GETSIGMASK, tid.as_raw(), 8usize, &mut mask as *mut u64) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(mask)
    }
}

pub fn set_sigmask(tid: Pid, mask: u64) -> Result<(), Errno> {
    // SAFETY: PTRACE_SETSIGMASK reads 8 bytes from `mask`.
    let ret = unsafe { libc::ptrace(PTRACE_SETSIGMASK, tid.as_raw(), 8usize, &mask as *const u64) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// A thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RseqConfig {
    pub ptr: u64,
    pub len: u32,
    pub flags: u32,
    pub sig: u32,
}

#[repr(C)]
#[derive(Default)]
struct RawRseqConfig {
    rseq_abi_pointer: u64,
    rseq_abi_size: u32,
    signature: u32,
    flags: u32,
    pad: u32,
}

/// None when the thread has no rseq area registered.
pub fn rseq_config(tid: Pid) -> Result<Option<RseqConfig>, Errno> {
    let mut raw = RawRseqConfig::default();
    // SAFETY: the kernel writes at most `size_of::<RawRseqConfig>()` bytes
    // (the size we pass) into `raw`.
    let ret = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid.as_raw(),
            std::mem::size_of::<RawRseqConfig>(),
            &mut raw as *mut RawRseqConfig,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok((raw.rseq_abi_pointer != 0).then_some(RseqConfig {
        ptr: raw.rseq_abi_pointer,
        len: raw.rseq_abi_size,
        flags: raw.flags,
        sig: raw.signature,
    }))
}

/// A thread's robust futex list head and its length (get_robust_list(2)).
pub fn robust_list(tid: Pid) -> Result<(u64, u64), Errno> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: get_robust_list writes one pointer and one size_t to the two
    // locations we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok((head, len as u64))
    }
}

/// Runs syscalls inside a stopped, seized task. The task must be in a
/// ptrace-stop; `syscall_ip` must point at a `syscall` instruction (0f 05)
/// mapped executable in the task.
pub struct Injector {
    pub tid: Pid,
    pub syscall_ip: u64,
}

impl Injector {
    /// Executes syscall `nr` with `args` in the task and returns its raw
    /// result (negative errno on failure). The task's registers are put
    /// back afterwards.
    pub fn syscall(&self, nr: i64, args: &[u64]) -> Result<i64, Errno> {
        let saved = get_regs(self.tid)?;
        let ret = self.run(&saved, nr, args);
        // The task's own registers go back on every exit, not only on
        // success: a failed checkpoint lets the task run on from them.
        let put = set_regs(self.tid, &saved);
        let ret = ret?;
        put?;
        Ok(ret)
    }

    /// [`Self::syscall`] without putting the registers back.
    fn run(&self, saved: &UserRegs, nr: i64, args: &[u64]) -> Result<i64, Errno> {
        let mut regs = *saved;
        regs.rax = nr as u64;
        // -1 in orig_rax: no syscall-restart fix-up may touch our registers.
        regs.orig_rax = u64::MAX;
        regs.rip = self.syscall_ip;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        regs.rdi = a(0);
        regs.rsi = a(1);
        regs.rdx = a(2);
        regs.r10 = a(3);
        regs.r8 = a(4);
        regs.r9 = a(5);
        set_regs(self.tid, &regs)?;
        if crate::fault::check("inject:after-set-regs").is_err() {
            return Err(Errno::ECANCELED);
        }
        // To the entry of our syscall: the stop must show our number in
        // orig_rax, just past our instruction. Any other syscall stop (one
        // left over from a signal being handled on the way) is passed by.
        let after = self.syscall_ip + 2;
        let mut tries = 0;
        loop {
            self.step_syscall()?;
            let r = get_regs(self.tid)?;
            if r.orig_rax == nr as u64 && r.rip == after {
                break;
            }
            tries += 1;
            if tries > 8 {
                return Err(Errno::EPROTO);
            }
            tracing::debug!(
                tid = self.tid.as_raw(),
                rip = r.rip,
                orig_rax = r.orig_rax as i64,
                "passing a foreign syscall stop"
            );
            // Put our syscall back in place and try again.
            set_regs(self.tid, &regs)?;
        }
        self.step_syscall()?; // to syscall exit
        let exit = get_regs(self.tid)?;
        let ret = exit.rax as i64;
        if (-4095..0).contains(&ret) {
            tracing::debug!(
                tid = self.tid.as_raw(),
                nr,
                exit_rip = exit.rip,
                exit_orig = exit.orig_rax as i64,
                ret,
                "injected syscall failed"
            );
        }
        Ok(ret)
    }

    /// Like [`Self::syscall`], mapping a negative result to its errno.
    pub fn call(&self, nr: i64, args: &[u64]) -> Result<u64, Errno> {
        let ret = self.syscall(nr, args)?;
        if (-4095..0).contains(&ret) {
            Err(Errno::from_raw(-ret as i32))
        } else {
            Ok(ret as u64)
        }
    }

    fn step_syscall(&self) -> Result<(), Errno> {
        ptrace::syscall(self.tid, None)?;
        loop {
            match wait(self.tid)? {
                Stop::Syscall => return Ok(()),
                Stop::Gone => return Err(Errno::ESRCH),
                Stop::Signal(sig) if is_fault(sig) => {
                    // The task faulted at our instruction pointer: the
                    // syscall address is not executable any more.
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let rip = get_regs(self.tid).map(|r| r.rip).unwrap_or(0);
                        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.tid)).unwrap_or_default();
                        tracing::debug!(
                            tid = self.tid.as_raw(),
                            sig,
                            rip,
                            syscall_ip = self.syscall_ip,
                            maps,
                            "fault in an injected syscall"
                        );
                    }
                    return Err(Errno::EFAULT);
                }
                // A signal or an event in the middle of our syscall:
                // suppress it and go on to the syscall stop.
                Stop::Signal(_) | Stop::Event(_) => ptrace::syscall(self.tid, None)?,
            }
        }
    }
}

fn is_fault(sig: i32) -> bool {
    matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE)
}

/// The options every seize uses: syscall stops marked, tracees killed if
/// the tracer dies before it detached them (only at restore, see callers).
pub fn seize_options(exit_kill: bool, trace_clone: bool) -> Options {
    let mut o = Options::PTRACE_O_TRACESYSGOOD;
    if exit_kill {
        o |= Options::PTRACE_O_EXITKILL;
    }
    if trace_clone {
        o |= Options::PTRACE_O_TRACECLONE;
    }
    o
}

/// `user_regs_struct` in 64-bit words.
pub const REGS_WORDS: usize = 27;

/// The registers as 27 words in `user_regs_struct` order, for images.
pub fn regs_to_words(r: &UserRegs) -> [u64; REGS_WORDS] {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx, r.rsi, r.rdi,
        r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds, r.es, r.fs, r.gs,
    ]
}

pub fn words_to_regs(w: &[u64; REGS_WORDS]) -> UserRegs {
    UserRegs {
        r15: w[0],
        r14: w[1],
        r13: w[2],
        r12: w[3],
        rbp: w[4],
        rbx: w[5],
        r11: w[6],
        r10: w[7],
        r9: w[8],
        r8: w[9],
        rax: w[10],
        rcx: w[11],
        rdx: w[12],
        rsi: w[13],
        rdi: w[14],
        orig_rax: w[15],
        rip: w[16],
        cs: w[17],
        eflags: w[18],
        rsp: w[19],
        ss: w[20],
        fs_base: w[21],
        gs_base: w[22],
        ds: w[23],
        es: w[24],
        fs: w[25],
        gs: w[26],
    }
}

/// The queued signals of a stopped thread (PTRACE_PEEKSIGINFO), as raw
/// 128-byte siginfo records: its own queue, or with `shared` its
/// process's.
pub fn pending_signals(tid: Pid, shared: bool) -> Result<Vec<[u8; 128]>, Errno> {
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
    const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
    let mut out = Vec::new();
    let mut buf = vec![[0u8; 128]; 32];
    loop {
        let args = PeekArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: buf.len() as i32,
        };
        // SAFETY: the kernel reads `args` and writes at most `nr` 128-byte
        // siginfo records into `buf`, which holds that many.
        let ret = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid.as_raw(),
                &args as *const PeekArgs,
                buf.as_mut_ptr(),
            )
        };
        if ret < 0 {
            return Err(Errno::last());
        }
        let n = ret as usize;
        out.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            return Ok(out);
        }
    }
}

/// The classic-BPF seccomp filters of a stopped thread, newest first
/// (PTRACE_SECCOMP_GET_FILTER), each as raw 8-byte `sock_filter`s.
pub fn seccomp_filters(tid: Pid) -> Result<Vec<Vec<u8>>, Errno> {
    const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
    let mut out = Vec::new();
    for index in 0usize.. {
        // SAFETY: with a null buffer the kernel only returns the count.
        let n = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid.as_raw(),
                index,
                std::ptr::null_mut::<u8>(),
            )
        };
        if n < 0 {
            return match Errno::last() {
                Errno::ENOENT => Ok(out),
                // EINVAL: the thread has no filter (seccomp off or strict).
                Errno::EINVAL if index == 0 => Ok(out),
                e => Err(e),
            };
        }
        let mut buf = vec![0u8; n as usize * 8];
        // SAFETY: the kernel writes `n` 8-byte instructions into `buf`,
        // which holds exactly that many.
        let got = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid.as_raw(), index, buf.as_mut_ptr()) };
        if got < 0 {
            return Err(Errno::last());
        }
        out.push(buf);
    }
    Ok(out)
}
