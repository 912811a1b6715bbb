//! Every raw syscall that the safe wrappers in `nix` do not cover, and every
//! `unsafe` block of the crate. Each block carries a `// SAFETY:` comment.
//!
//! Functions here are thin: they take and return plain Rust types and report
//! failures as [`Errno`]. Context (which pid, which phase) is added by the
//! callers, in their own error enums.

pub mod ptrace;
pub mod sysvipc;
pub mod uffd;

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use nix::errno::Errno;
use nix::unistd::Pid;

/// The result of [`clone3`] or [`fork`]: which side of the fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent; the child's PID as the parent sees it.
    Parent(Pid),
    /// In the child.
    Child,
}

/// The host's /proc, opened on first use and kept: after a process joins a
/// container's mount namespace, its "/proc" may belong to another PID
/// namespace. The host's procfs resolves "self" for a process of any
/// descendant PID namespace. (The container's init closes all descriptors
/// after its only fork, this one included, and forks no more.)
fn host_proc() -> Option<BorrowedFd<'static>> {
    static PROC: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    PROC.get_or_init(|| {
        nix::fcntl::open(
            "/proc",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    })
    .as_ref()
    .map(|fd| fd.as_fd())
}

/// The number of threads of the calling process, from /proc/self/status.
pub fn thread_count() -> usize {
    let status = host_proc().and_then(|proc| {
        nix::fcntl::openat(
            proc,
            "self/status",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    });
    let mut text = String::new();
    if let Some(fd) = status {
        use std::io::Read;
        let _ = std::fs::File::from(fd).read_to_string(&mut text);
    }
    crate::proc::field(&text, "Threads")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

fn ensure_single_threaded() -> Result<(), Errno> {
    // A thread just joined (a page reader's worker) may still be counted
    // for a moment: joining returns when it has let go of its memory, a
    // little before the kernel drops it from the thread group.
    for _ in 0..500 {
        if thread_count() == 1 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    // Forking a multi-threaded process leaves locks held by other threads
    // locked forever in the child.
    Err(Errno::EDEADLK)
}

/// The arguments of clone3(2), laid out as the kernel expects them
/// (`struct clone_args`, version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 flag: start the child in the cgroup given by `cgroup`
/// (linux/sched.h; libc's constant is an i32 that overflows).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Options for [`clone3`].
#[derive(Debug, Default)]
pub struct CloneOpts<'a> {
    /// CLONE_* flags (namespaces and the like). CLONE_INTO_CGROUP is added
    /// when `cgroup` is set.
    pub flags: u64,
    /// Place the child in this cgroup v2 directory from its first instruction.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// PIDs to give the child, innermost PID namespace first (set_tid).
    pub set_tid: &'a [libc::pid_t],
}

/// clone3(2) without CLONE_VM: a fork that can create namespaces, choose the
/// child's PIDs and place it in a cgroup. The child gets SIGCHLD as its exit
/// signal.
///
/// Fails with EDEADLK if the calling process has more than one thread.
pub fn clone3(opts: &CloneOpts<'_>) -> Result<Forked, Errno> {
    ensure_single_threaded()?;
    let mut args = CloneArgs {
        flags: opts.flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = opts.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    if !opts.set_tid.is_empty() {
        args.set_tid = opts.set_tid.as_ptr() as u64;
        args.set_tid_size = opts.set_tid.len() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size we pass and outlives
    // the call; `set_tid` points into a live slice of `set_tid_size` pids.
    // Without CLONE_VM the child runs on a copy-on-write copy of our memory,
    // exactly as after fork(2), and we checked that we are single-threaded,
    // so no lock can be held by a thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => {
            in_forked_child();
            Ok(Forked::Child)
        }
        pid => Ok(Forked::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// Called first thing in every forked child: from then on a panic in it
/// ends it at once (`_exit(101)`, after the message) instead of unwinding
/// into the parent's code, whose destructors (the cgroup's removal, the
/// root's lock, a half-restored container's undo) are not the child's to
/// run.
fn in_forked_child() {
    static HOOKED: std::sync::Once = std::sync::Once::new();
    HOOKED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            let (fd, id) = unpack_report(PANIC_REPORT.load(std::sync::atomic::Ordering::Relaxed));
            if fd >= 0 {
                let line = format!("err {id} panicked: {}\n", info.to_string().replace('\n', " "));
                // SAFETY: write(2) on a descriptor number with a buffer we
                // own; a closed or wrong fd only makes it fail.
                let _ = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
            }
            exit_now(101)
        }));
    });
}

/// Where a forked child reports its panic before it ends: fd (high half)
/// and an ID (low half) for the line `err ID panicked: MESSAGE`; -1: nowhere.
static PANIC_REPORT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

fn unpack_report(v: i64) -> (RawFd, i32) {
    if v < 0 {
        (-1, 0)
    } else {
        ((v >> 32) as RawFd, v as i32)
    }
}

/// In a forked child: a panic is reported as `err ID panicked: ...` on
/// `fd` (a pipe the parent reads) before the child ends.
pub fn report_panics_to(fd: BorrowedFd<'_>, id: i32) {
    let v = (i64::from(fd.as_raw_fd()) << 32) | i64::from(id as u32);
    PANIC_REPORT.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// fork(2), refused (EDEADLK) when the process has more than one thread.
pub fn fork() -> Result<Forked, Errno> {
    ensure_single_threaded()?;
    // SAFETY: we checked that the process is single-threaded, so the child
    // can run arbitrary code: no other thread held a lock at the fork.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => {
            in_forked_child();
            Ok(Forked::Child)
        }
    }
}

/// pidfd_open(2): a file descriptor that refers to the process `pid`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Marks every descriptor from `first` upwards close-on-exec.
pub fn cloexec_from(first: RawFd) -> Result<(), Errno> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor
    // flags; it closes nothing that Rust code might still own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Restores every signal's default disposition and unblocks all signals:
/// the state a freshly exec'ed program expects.
pub fn reset_signals() -> Result<(), Errno> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL can not run any handler code.
        unsafe { sigaction(sig, &dfl) }?;
    }
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A signal's disposition, as /proc/PID/status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Default,
    Ignored,
    /// Caught by a handler (here, one that does nothing).
    Caught,
}

/// Gives signal `signo` (1 to 64, also the real-time signals the C
/// library keeps for itself) of the calling process a disposition, with
/// the raw rt_sigaction. A caught one gets a handler that does nothing and
/// no signal return trampoline: only for a task about to end (a
/// zombie-to-be, which shows only that it has a handler), to which no one
/// sends a signal meanwhile.
pub fn set_disposition(signo: i32, how: Disposition) -> Result<(), Errno> {
    let handler = match how {
        Disposition::Default => libc::SIG_DFL,
        Disposition::Ignored => libc::SIG_IGN,
        Disposition::Caught => ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
    };
    // struct kernel_sigaction on x86_64: handler, flags, restorer, mask.
    let act: [u64; 4] = [handler as u64, libc::SA_RESTART as u64, 0, 0];
    // SAFETY: rt_sigaction reads 32 bytes from `act`, alive for the call,
    // and writes nothing (no old action asked for); the handler touches no
    // state, and SIG_DFL/SIG_IGN run no code.
    let ret = unsafe { libc::syscall(libc::SYS_rt_sigaction, signo, act.as_ptr(), 0usize, 8usize) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Ends the calling process at once, without running destructors or atexit
/// handlers: the right way out of a forked child that must not flush the
/// parent's buffers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Converts a path or argument to a C string, mapping an interior NUL to
/// EINVAL.
pub fn cstring(s: &str) -> Result<std::ffi::CString, Errno> {
    std::ffi::CString::new(s).map_err(|_| Errno::EINVAL)
}

/// execvp(3), for the child side of a fork. Returns only on failure.
pub fn execvp(argv: &[std::ffi::CString]) -> Errno {
    let Some(file) = argv.first() else {
        return Errno::EINVAL;
    };
    let args: Vec<&CStr> = argv.iter().map(|a| a.as_c_str()).collect();
    match nix::unistd::execvp(file, &args) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// Closes every descriptor from `first` upwards.
///
/// Only for a forked child that runs no other Rust code owning those
/// descriptors afterwards (the container's init after it forked the
/// command): an `OwnedFd` for a closed number must never be used again.
pub fn close_from(first: RawFd) -> Result<(), Errno> {
    // SAFETY: see the contract above; the caller owns no live handle to any
    // descriptor at or above `first` that it will use after this call.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// dup3(2): makes descriptor number `target` refer to `fd`'s open file.
/// The new descriptor is deliberately owned by no Rust object: it is part
/// of a process image being restored, and outlives this code.
///
/// # Safety
/// Whatever was open at `target` is closed: no Rust object (an `OwnedFd`,
/// a `File`...) of this process may own or use that number afterwards.
pub unsafe fn place_fd(fd: BorrowedFd<'_>, target: RawFd, cloexec: bool) -> Result<(), Errno> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 only changes the descriptor table; the caller vouches
    // that nothing of ours uses `target` (the function's contract).
    let ret = unsafe { libc::dup3(fd.as_raw_fd(), target, flags) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Closes every descriptor whose number is not in `keep`.
///
/// # Safety
/// Only for a process that is about to be replaced (a restored task before
/// its memory is swapped in): no Rust object may use or drop a closed
/// number again.
pub unsafe fn close_all_but(keep: &[RawFd]) -> Result<(), Errno> {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    keep.dedup();
    let mut from: libc::c_uint = 0;
    for k in keep.iter().map(|k| *k as libc::c_uint).chain([libc::c_uint::MAX]) {
        if k > from {
            // SAFETY: close_range only changes the descriptor table; the
            // caller vouches that no Rust object uses what it closes.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
            if ret < 0 {
                return Err(Errno::last());
            }
        }
        from = k.saturating_add(1);
    }
    Ok(())
}

/// Sets a resource limit of the calling process. Where the hard limit can
/// not be raised (no CAP_SYS_RESOURCE), it is clamped to the current hard
/// limit rather than failing.
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
    let set = |soft: u64, hard: u64| {
        let lim = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: prlimit64 on ourselves (pid 0) reads one rlimit64 from
        // `lim`, which lives for the call; the old-value pointer is null.
        let ret = unsafe { libc::prlimit64(0, resource as _, &lim, std::ptr::null_mut()) };
        if ret < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    };
    match set(soft, hard) {
        Err(Errno::EPERM) => {
            let hard = hard.min(rlimit(resource)?.1);
            set(soft.min(hard), hard)
        }
        other => other,
    }
}

/// This process's limit `resource` (RLIMIT_*): (soft, hard).
pub fn rlimit(resource: u32) -> Result<(u64, u64), Errno> {
    let mut cur = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on ourselves writes one rlimit64 into `cur`, which
    // lives for the call.
    let ret = unsafe { libc::prlimit64(0, resource as _, std::ptr::null(), &mut cur) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok((cur.rlim_cur, cur.rlim_max))
    }
}

/// Shared anonymous memory of `len` bytes (what mmap(MAP_SHARED |
/// MAP_ANONYMOUS) makes, which maps shows as /dev/zero), as an fd: mapped
/// here for a moment, opened through /proc/self/map_files, and unmapped.
/// Mappings of the fd share its pages and show as /dev/zero too.
pub fn shared_anon(len: usize) -> Result<OwnedFd, Errno> {
    // SAFETY: a fresh shared anonymous mapping at an address the kernel
    // picks; it aliases nothing, and nothing reads or writes it here.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    let (start, end) = (p as usize, p as usize + len);
    let opened = nix::fcntl::open(
        format!("/proc/self/map_files/{start:x}-{end:x}").as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    );
    // SAFETY: our own mapping from above, unmapped once; no reference to
    // it exists.
    unsafe {
        libc::munmap(p, len);
    }
    opened
}

/// The entries of directory `dir` in the order getdents64 lists them, each
/// with its d_off (where a read continues after it), "." and ".." too.
/// Reads from the directory's current offset; leaves it at the end.
pub fn dir_offsets(dir: BorrowedFd<'_>) -> Result<Vec<(std::ffi::OsString, i64)>, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`,
        // alive for the call.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(Errno::last());
        }
        if n == 0 {
            return Ok(out);
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            // struct linux_dirent64: ino (8), off (8), reclen (2), type
            // (1), then the NUL-terminated name.
            let off = i64::from_ne_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
            let reclen = u16::from_ne_bytes(buf[at + 16..at + 18].try_into().expect("2 bytes")) as usize;
            if reclen < 20 || at + reclen > n as usize {
                return Err(Errno::EIO);
            }
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            out.push((std::ffi::OsStr::from_bytes(name).to_os_string(), off));
            at += reclen;
        }
    }
}

/// fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate of `fd` numbered
/// `min` or above.
pub fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1; it does not
    // touch any other descriptor.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// Restores the default SIGPIPE disposition (Rust starts programs with it
/// ignored, which turns a closed output pipe into a panic in `println!`).
pub fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

const PAGE_SIZE: usize = 4096;

/// A private anonymous mapping of this process: pages exist only once
/// written. Unmapped when dropped.
pub struct Reserved {
    addr: usize,
    len: usize,
    /// What is mapped: `len`, and a fence page after it.
    mapped: usize,
}

impl Reserved {
    /// A private anonymous mapping of `len` bytes, readable and writable,
    /// without MAP_NORESERVE, followed by an inaccessible page: a fence,
    /// so that two such mappings never lie side by side and merge. (The
    /// kernel checks each accounted mapping of a process it forks against
    /// the machine's memory on its own: shadows of pre-copied pages merged
    /// into one mapping of hundreds of GiB failed the fork with ENOMEM.)
    pub fn fenced(len: usize) -> Result<Self, Errno> {
        let mut r = Self::anon(len + PAGE_SIZE, false)?;
        // SAFETY: the last page of our own mapping, which nothing uses.
        if unsafe { libc::mprotect((r.addr + len) as *mut libc::c_void, PAGE_SIZE, libc::PROT_NONE) } < 0 {
            return Err(Errno::last());
        }
        r.len = len;
        Ok(r)
    }

    /// A private anonymous mapping of `len` bytes, readable and writable,
    /// with MAP_NORESERVE if `noreserve`: a restored mapping moved out of
    /// it keeps its flags.
    pub fn anon(len: usize, noreserve: bool) -> Result<Self, Errno> {
        let extra = if noreserve { libc::MAP_NORESERVE } else { 0 };
        // SAFETY: a fresh anonymous mapping at an address the kernel
        // picks; it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(Self {
            addr: p as usize,
            len,
            mapped: len,
        })
    }

    /// Its address in this process (and in children forked from it).
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, readable, and lives as long
        // as `self`; writes go through `bytes_mut`, which borrows mutably.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the mutable borrow of `self` makes
        // this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }

    /// Drops the pages of `off..off+len`: they read as zero again.
    pub fn discard(&mut self, off: usize, len: usize) {
        if off + len <= self.len {
            // SAFETY: the range lies inside our mapping; MADV_DONTNEED on
            // private anonymous memory just zeroes it.
            unsafe {
                libc::madvise((self.addr + off) as *mut libc::c_void, len, libc::MADV_DONTNEED);
            }
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no reference outlives
        // `self`.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.mapped);
        }
    }
}

/// Sets or clears MADV_DONTFORK on `addr..addr+len` of this process: a
/// mapping marked so is not inherited by children forked meanwhile.
pub fn set_dontfork(addr: u64, len: u64, dontfork: bool) -> Result<(), Errno> {
    let advice = if dontfork {
        libc::MADV_DONTFORK
    } else {
        libc::MADV_DOFORK
    };
    // SAFETY: the advice only changes whether children inherit the range;
    // it touches no memory. A range that is not mapped fails with ENOMEM.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice) };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Faults in every page of `buf` for writing, in one call
/// (MADV_POPULATE_WRITE): far cheaper than touching each page, where page
/// faults are slow. Best effort: an older kernel just faults them later.
pub fn populate(buf: &mut [u8]) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let start = buf.as_mut_ptr() as usize;
    let page = 4096;
    let aligned = (start + page - 1) & !(page - 1);
    let end = (start + buf.len()) & !(page - 1);
    if end > aligned {
        // SAFETY: the range lies inside `buf`, which we borrow mutably;
        // MADV_POPULATE_WRITE only faults pages in, leaving contents as
        // they are.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, end - aligned, MADV_POPULATE_WRITE);
        }
    }
}

/// pidfd_getfd(2): a duplicate, in this process, of descriptor `fd` of the
/// process behind `pidfd` (close-on-exec).
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes two integers and a flags word, and returns
    // a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// fcntl(F_GETOWN_EX): who receives SIGIO/SIGURG for an open file, as
/// (F_OWNER_TID, _PID or _PGRP, id in this process's PID namespace); id 0
/// when nobody does.
pub fn file_owner(fd: BorrowedFd<'_>) -> Result<(i32, i32), Errno> {
    // struct f_owner_ex { int type; pid_t pid; } (not in the libc crate).
    const F_GETOWN_EX: libc::c_int = 16;
    let mut owner = [0i32; 2];
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex (two ints) into
    // `owner`, alive for the call.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, owner.as_mut_ptr()) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok((owner[0], owner[1]))
    }
}

/// fcntl(F_GETSIG): the signal an open file sends its owner (0: SIGIO).
pub fn file_signal(fd: BorrowedFd<'_>) -> Result<i32, Errno> {
    const F_GETSIG: libc::c_int = 11;
    // SAFETY: F_GETSIG takes no argument and returns an int.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETSIG) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// kcmp(KCMP_FILE): whether fd `a` of `pid_a` and fd `b` of `pid_b` are
/// the same open file description.
pub fn same_file(pid_a: i32, a: RawFd, pid_b: i32, b: RawFd) -> Result<bool, Errno> {
    Ok(kcmp(pid_a, pid_b, KCMP_FILE, a, b)? == 0)
}

/// kcmp(KCMP_FILE).
const KCMP_FILE: libc::c_int = 0;

/// kcmp(2) on integers: 0 for the same object, 1 or 2 for an order, 3 for
/// different objects without one.
fn kcmp(pid_a: i32, pid_b: i32, kind: i32, a: RawFd, b: RawFd) -> Result<i64, Errno> {
    // SAFETY: kcmp compares kernel objects by integers; it touches no memory.
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, pid_a, pid_b, kind, a, b) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// kcmp(KCMP_FILE) as an order: how fd `a` of `pid_a`'s open file
/// description compares with fd `b` of `pid_b`'s in the kernel's (stable,
/// obfuscated) order of files; Equal for the same description.
pub fn file_order(pid_a: i32, a: RawFd, pid_b: i32, b: RawFd) -> Result<std::cmp::Ordering, Errno> {
    kcmp_order(pid_a, pid_b, KCMP_FILE, a, b)
}

/// kcmp as an order: how `pid_a`'s kernel object of kind `kind` (with
/// index `a`, for an fd) compares with `pid_b`'s in the kernel's stable,
/// obfuscated order; Equal for the same object.
pub fn kcmp_order(pid_a: i32, pid_b: i32, kind: i32, a: RawFd, b: RawFd) -> Result<std::cmp::Ordering, Errno> {
    match kcmp(pid_a, pid_b, kind, a, b)? {
        0 => Ok(std::cmp::Ordering::Equal),
        1 => Ok(std::cmp::Ordering::Less),
        2 => Ok(std::cmp::Ordering::Greater),
        _ => Err(Errno::EINVAL),
    }
}

/// kcmp(KCMP_EPOLL_TFD): whether fd `fd` of `pid` is the open file
/// registered in the epoll at fd `efd` of `epoll_pid` as the `toff`-th
/// registration made through fd number `tfd` (an epoll keys registrations
/// by file and number, so one number can name several).
pub fn epoll_target_is(pid: i32, fd: RawFd, epoll_pid: i32, efd: RawFd, tfd: RawFd, toff: u32) -> Result<bool, Errno> {
    const KCMP_EPOLL_TFD: libc::c_int = 7;
    // struct kcmp_epoll_slot.
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    let slot = Slot {
        efd: efd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: kcmp reads one kcmp_epoll_slot from `slot`, which lives for
    // the call; it writes nothing.
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, pid, epoll_pid, KCMP_EPOLL_TFD, fd, &slot as *const Slot) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret == 0)
    }
}

/// Registers the open file of `file` in epoll `epfd` under descriptor
/// number `number` (the number a program made the registration through
/// and has closed since): `file` is placed at `number` for the call, then
/// what was open there is put back with its close-on-exec flag (parked
/// meanwhile at `above` or higher), or the number is closed again.
///
/// # Safety
/// As [`place_fd`]: no Rust object of this process may own or use
/// `number`.
pub unsafe fn epoll_add_as(
    epfd: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    number: RawFd,
    (events, data): (u32, u64),
    above: RawFd,
) -> Result<(), Errno> {
    // SAFETY: F_GETFD reads a descriptor's flags; EBADF for a free number.
    let fd_flags = unsafe { libc::fcntl(number, libc::F_GETFD) };
    let parked = match fd_flags {
        // SAFETY: `number` is open (F_GETFD said so) for the duration of
        // the borrow, which only duplicates it.
        f if f >= 0 => Some(dup_above(unsafe { BorrowedFd::borrow_raw(number) }, above)?),
        _ => None,
    };
    // SAFETY: the caller vouches for `number` (the function's contract).
    unsafe { place_fd(file, number, true) }?;
    let added = epoll_add(epfd, number, events, data);
    let back = match &parked {
        // SAFETY: as above.
        Some(p) => unsafe { place_fd(p.as_fd(), number, fd_flags & libc::FD_CLOEXEC != 0) },
        None => {
            // SAFETY: `number` holds only the duplicate placed above, which
            // no Rust object owns.
            match unsafe { libc::close(number) } {
                0 => Ok(()),
                _ => Err(Errno::last()),
            }
        }
    };
    added.and(back)
}

/// kcmp(2) kinds: the address space, the fd table, the filesystem
/// information (cwd, root, umask).
pub const KCMP_VM: i32 = 1;
pub const KCMP_FILES: i32 = 2;
pub const KCMP_FS: i32 = 3;

/// Whether processes `pid_a` and `pid_b` share one kernel object of kcmp
/// kind `kind` ([`KCMP_VM`], [`KCMP_FILES`], [`KCMP_FS`]).
pub fn kcmp_same(pid_a: i32, pid_b: i32, kind: i32) -> Result<bool, Errno> {
    Ok(kcmp(pid_a, pid_b, kind, 0, 0)? == 0)
}

/// tee(2) with SPLICE_F_NONBLOCK: copies up to `len` bytes from pipe `from`
/// to pipe `to` without consuming them. 0 when `from` is empty.
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<usize, Errno> {
    // SAFETY: tee works on two descriptors and a length; no memory.
    let ret = unsafe { libc::tee(from.as_raw_fd(), to.as_raw_fd(), len, libc::SPLICE_F_NONBLOCK) };
    match ret {
        -1 if Errno::last() == Errno::EAGAIN => Ok(0),
        -1 => Err(Errno::last()),
        n => Ok(n as usize),
    }
}

/// Sets the number of expirations a timerfd reports (TFD_IOC_SET_TICKS).
pub fn timerfd_set_ticks(fd: BorrowedFd<'_>, ticks: u64) -> Result<(), Errno> {
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from `ticks`, alive for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS as _, &ticks as *const u64) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// epoll_ctl(EPOLL_CTL_ADD) of descriptor number `target`, which the
/// calling task has open (it was placed there by number).
pub fn epoll_add(epfd: BorrowedFd<'_>, target: RawFd, events: u32, data: u64) -> Result<(), Errno> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event from `ev`, alive for the call.
    let ret = unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, target, &mut ev) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// signalfd(2) for the signals in `mask` (bit N-1 for signal N), with
/// SFD_CLOEXEC.
pub fn signalfd(mask: u64) -> Result<OwnedFd, Errno> {
    // The kernel reads a sigset of _NSIG/8 = 8 bytes.
    // SAFETY: signalfd reads 8 bytes from `mask`, alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, libc::SFD_CLOEXEC) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// recvmsg(MSG_PEEK | MSG_DONTWAIT) into `buf`: the bytes peeked, and
/// whether they came with file descriptors (SCM_RIGHTS, which the peek
/// installs here and this closes again) or with more control data than
/// fits (MSG_CTRUNC).
pub fn peek_with_rights(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, bool), Errno> {
    // Room for the most descriptors one message may carry (SCM_MAX_FD).
    let mut control = vec![0u64; 160];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid (no name, no buffers).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() * 8;
    // SAFETY: the kernel writes at most iov_len bytes into `buf` and at
    // most msg_controllen into `control`, both alive for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(Errno::last());
    }
    let mut rights = msg.msg_flags & libc::MSG_CTRUNC != 0;
    // SAFETY: msg is the header recvmsg filled in; CMSG_FIRSTHDR/NXTHDR
    // stay inside msg_controllen, and each SCM_RIGHTS header is followed
    // by (cmsg_len - CMSG_LEN(0)) / 4 descriptors now ours, each closed
    // once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                rights = true;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let fds = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..count {
                    drop(OwnedFd::from_raw_fd(std::ptr::read_unaligned(fds.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, rights))
}

/// setsockopt(SO_PEEK_OFF): where the next MSG_PEEK starts (-1: off).
pub fn set_peek_off(fd: BorrowedFd<'_>, off: i32) -> Result<(), Errno> {
    // SAFETY: setsockopt reads one int from `off`, alive for the call.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            &off as *const i32 as *const libc::c_void,
            4,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// getsockopt(2) into a byte buffer; returns the length the kernel wrote.
pub fn getsockopt_raw(fd: BorrowedFd<'_>, level: i32, opt: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and updates
    // `len`; both live for the call.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(len as usize)
    }
}

/// getsockopt(2) of an int-valued option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32) -> Result<i32, Errno> {
    let mut v = [0u8; 4];
    getsockopt_raw(fd, level, opt, &mut v)?;
    Ok(i32::from_ne_bytes(v))
}

/// setsockopt(2) from a byte buffer.
pub fn setsockopt_raw(fd: BorrowedFd<'_>, level: i32, opt: i32, buf: &[u8]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `buf.len()` bytes from `buf`.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_ptr() as *const libc::c_void,
            buf.len() as libc::socklen_t,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// An ioctl that reads one int (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD...).
pub fn ioctl_int(fd: BorrowedFd<'_>, request: libc::c_ulong) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int into `v`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut v as *mut libc::c_int) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(v)
    }
}

/// name_to_handle_at(2) of the file open at `fd` (AT_EMPTY_PATH): its
/// handle type and bytes.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> Result<(i32, Vec<u8>), Errno> {
    const MAX_HANDLE_SZ: usize = 128;
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` holds a struct file_handle with room for handle_bytes
    // bytes, `mount_id` an int, the path a NUL-terminated empty string;
    // all live for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    let len = (u32::from_ne_bytes(buf[..4].try_into().expect("four bytes")) as usize).min(MAX_HANDLE_SZ);
    let handle_type = i32::from_ne_bytes(buf[4..8].try_into().expect("four bytes"));
    Ok((handle_type, buf[8..8 + len].to_vec()))
}

/// open_by_handle_at(2) with O_PATH: the file behind a file handle, found
/// through a descriptor on its mount.
pub fn open_by_handle(mount: BorrowedFd<'_>, handle_type: i32, handle: &[u8]) -> Result<OwnedFd, Errno> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    // SAFETY: `buf` holds a complete struct file_handle of handle_bytes
    // bytes and lives for the call; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// inotify_add_watch(2); returns the watch descriptor.
pub fn inotify_add(fd: BorrowedFd<'_>, path: &str, mask: u32) -> Result<i32, Errno> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    let ret = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// inotify_rm_watch(2).
pub fn inotify_rm(fd: BorrowedFd<'_>, wd: i32) -> Result<(), Errno> {
    // SAFETY: two integers, no memory.
    let ret = unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Takes ownership of descriptor `fd`, inherited from the process that
/// started this one (named on its command line), after checking that it is
/// open. Each number may be taken once: the caller passes it on from argv.
pub fn take_inherited_fd(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd < 3 {
        return Err(Errno::EBADF);
    }
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the descriptor is open, was handed to this process by its
    // parent for this purpose, and nothing else in this process owns it
    // (stdio is refused above; the caller takes each number once).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setpriority(PRIO_PROCESS, tid, nice): the nice value of one task.
pub fn set_nice(tid: i32, nice: i32) -> Result<(), Errno> {
    // SAFETY: setpriority takes plain integers and changes only the
    // scheduling of task `tid`.
    let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// ioprio_get(IOPRIO_WHO_PROCESS, tid): the I/O priority of one task
/// (class << 13 | level).
pub fn get_ioprio(tid: i32) -> Result<i32, Errno> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: ioprio_get takes plain integers and reads nothing of ours.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as i32)
    }
}

/// ioprio_set(IOPRIO_WHO_PROCESS, tid, prio).
pub fn set_ioprio(tid: i32, prio: i32) -> Result<(), Errno> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: ioprio_set takes plain integers and changes only task `tid`.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, prio) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// sched_setscheduler(tid, policy, {priority}): the scheduling policy and
/// real-time priority of one task (SCHED_RESET_ON_FORK may be or'ed in).
pub fn set_scheduler(tid: i32, policy: i32, priority: i32) -> Result<(), Errno> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call, which
    // only reads it.
    let ret = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// sched_getscheduler(tid): the policy of one task, SCHED_RESET_ON_FORK
/// included.
pub fn get_scheduler(tid: i32) -> Result<i32, Errno> {
    // SAFETY: sched_getscheduler takes a task ID and reads nothing of ours.
    let ret = unsafe { libc::sched_getscheduler(tid) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// setdomainname(2): the NIS domain name of the caller's UTS namespace.
pub fn set_domainname(name: &str) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe `name`'s bytes, which the
    // kernel only reads during the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The scheduling attributes of a task (struct sched_attr, first version:
/// no utilization clamps).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    /// For a fair policy (since Linux 6.12), the task's time slice.
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// sched_getattr(2) of task `tid` (0: the calling thread).
pub fn sched_getattr(tid: i32) -> Result<SchedAttr, Errno> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: the kernel writes at most `size` bytes into `attr`, a
    // repr(C) struct of that size.
    let ret = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut attr as *mut SchedAttr, size, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(attr)
}

/// sched_setattr(2) of task `tid`.
pub fn sched_setattr(tid: i32, attr: &SchedAttr) -> Result<(), Errno> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        ..*attr
    };
    // SAFETY: the kernel reads `attr.size` bytes of `attr`.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const SchedAttr, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
