//! A seized, stopped task as the dump and restore sides use it: syscalls
//! run inside it, its memory read and written through /proc/PID/mem, and a
//! scratch area in its address space for syscall arguments.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::unistd::Pid;

use crate::sys::ptrace::Injector;
use crate::sys::Errno;

/// Errors talking to a stopped task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("task {tid}: {what}: {source}")]
    Sys {
        tid: i32,
        what: String,
        #[source]
        source: Errno,
    },
    #[error("task {tid}: {what}: {source}")]
    Mem {
        tid: i32,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {tid}: no `syscall` instruction found in its vDSO")]
    NoSyscallInsn { tid: i32 },
    #[error("process {pid}: a pending signal's siginfo in the image is {len} bytes, not {SIGINFO_LEN}; the image is damaged")]
    BadSiginfo { pid: i32, len: usize },
}

/// The size of a siginfo_t.
pub const SIGINFO_LEN: usize = 128;

pub type Result<T> = std::result::Result<T, Error>;

/// Syscall numbers used by injection (x86_64).
pub mod nr {
    pub const MMAP: i64 = libc::SYS_mmap;
    pub const MUNMAP: i64 = libc::SYS_munmap;
    pub const MREMAP: i64 = libc::SYS_mremap;
    pub const MADVISE: i64 = libc::SYS_madvise;
    pub const BRK: i64 = libc::SYS_brk;
    pub const OPEN: i64 = libc::SYS_open;
    pub const CLOSE: i64 = libc::SYS_close;
    pub const PRCTL: i64 = libc::SYS_prctl;
    pub const RT_SIGACTION: i64 = libc::SYS_rt_sigaction;
    pub const SET_TID_ADDRESS: i64 = libc::SYS_set_tid_address;
    pub const SET_ROBUST_LIST: i64 = libc::SYS_set_robust_list;
    pub const RSEQ: i64 = libc::SYS_rseq;
    pub const CLONE3: i64 = libc::SYS_clone3;
}

pub const PAGE: u64 = 4096;
/// Size of the scratch area mapped into a task during dump or restore.
pub const SCRATCH_LEN: u64 = 4 * PAGE;

/// One stopped thread of a process, with the process's memory.
pub struct Remote {
    pub pid: i32,
    pub tid: i32,
    inj: Injector,
    mem: File,
    /// Address of the scratch area, once mapped.
    pub scratch: u64,
    /// Whether this handle mapped the scratch area (and unmaps it when
    /// dropped); handles made by [`Self::thread`] only borrow it.
    owns_scratch: bool,
}

impl Remote {
    /// `pid` and `tid` are host IDs; `syscall_ip` the address of a
    /// `syscall` instruction in the task.
    pub fn new(pid: i32, tid: i32, syscall_ip: u64) -> Result<Self> {
        Ok(Self {
            pid,
            tid,
            inj: Injector {
                tid: Pid::from_raw(tid),
                syscall_ip,
            },
            mem: open_mem(pid, tid)?,
            scratch: 0,
            owns_scratch: true,
        })
    }

    /// The same process, through another of its threads.
    pub fn thread(&self, tid: i32) -> Result<Self> {
        Ok(Self {
            pid: self.pid,
            tid,
            inj: Injector {
                tid: Pid::from_raw(tid),
                syscall_ip: self.inj.syscall_ip,
            },
            mem: open_mem(self.pid, tid)?,
            scratch: self.scratch,
            owns_scratch: false,
        })
    }

    pub fn set_syscall_ip(&mut self, ip: u64) {
        self.inj.syscall_ip = ip;
    }

    pub fn syscall_ip(&self) -> u64 {
        self.inj.syscall_ip
    }

    /// Runs a syscall in the task; a negative result becomes an error that
    /// names `what`.
    pub fn call(&self, what: &str, nr: i64, args: &[u64]) -> Result<u64> {
        let r = self.inj.call(nr, args);
        tracing::trace!(tid = self.tid, what, nr, ?args, ?r, "injected syscall");
        r.map_err(|source| Error::Sys {
            tid: self.tid,
            what: what.to_string(),
            source,
        })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.mem.read_exact_at(buf, addr).map_err(|source| Error::Mem {
            tid: self.tid,
            what: format!("read {} bytes at {addr:#x}", buf.len()),
            source,
        })
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        self.mem.write_all_at(buf, addr).map_err(|source| Error::Mem {
            tid: self.tid,
            what: format!("write {} bytes at {addr:#x}", buf.len()),
            source,
        })
    }

    /// A prctl that writes an int through its second argument
    /// (PR_GET_PDEATHSIG, PR_GET_CHILD_SUBREAPER...): that int.
    pub fn prctl_get_int(&self, what: &str, op: u64) -> Result<i32> {
        self.call(what, nr::PRCTL, &[op, self.scratch])?;
        let mut b = [0u8; 4];
        self.read(self.scratch, &mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Maps the scratch area (anywhere the kernel likes, or at `at`).
    pub fn map_scratch(&mut self, at: Option<u64>) -> Result<u64> {
        let (addr, extra) = match at {
            Some(a) => (a, libc::MAP_FIXED_NOREPLACE as u64),
            None => (0, 0),
        };
        let got = self.call(
            "mmap scratch",
            nr::MMAP,
            &[
                addr,
                SCRATCH_LEN,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64 | extra,
                u64::MAX,
                0,
            ],
        )?;
        self.scratch = got;
        Ok(got)
    }

    /// Unmaps the scratch area; tried once (a failure is not retried when
    /// the handle is dropped).
    pub fn unmap_scratch(&mut self) -> Result<()> {
        let at = std::mem::take(&mut self.scratch);
        if at != 0 && self.owns_scratch {
            self.call("munmap scratch", nr::MUNMAP, &[at, SCRATCH_LEN])?;
        }
        Ok(())
    }

    /// Writes a NUL-terminated string at scratch+`off`; returns its address.
    pub fn put_cstr(&self, off: u64, s: &str) -> Result<u64> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.write(self.scratch + off, &b)?;
        Ok(self.scratch + off)
    }

    /// Opens `path` inside the task; returns the task's fd.
    pub fn open(&self, path: &str, flags: i32) -> Result<u64> {
        let p = self.put_cstr(PAGE, path)?;
        self.call(&format!("open {path}"), nr::OPEN, &[p, flags as u64, 0])
    }

    pub fn close(&self, fd: u64) -> Result<()> {
        self.call("close", nr::CLOSE, &[fd]).map(|_| ())
    }
}

impl Drop for Remote {
    /// A handle dropped on an error path still takes its scratch area out
    /// of the task, which may run on (a failed checkpoint).
    fn drop(&mut self) {
        if self.scratch != 0 && self.owns_scratch {
            if let Err(e) = self.unmap_scratch() {
                tracing::warn!("{e}");
            }
        }
    }
}

fn open_mem(pid: i32, tid: i32) -> Result<File> {
    let path = format!("/proc/{pid}/mem");
    File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Mem {
            tid,
            what: format!("open {path}"),
            source,
        })
}

/// Finds a `syscall` instruction (0f 05) in the vDSO at `start..end` of
/// process `pid`, read through `/proc/pid/mem`.
pub fn find_syscall_insn(pid: i32, start: u64, end: u64) -> Result<u64> {
    let mem = open_mem(pid, pid)?;
    let mut buf = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut buf, start).map_err(|source| Error::Mem {
        tid: pid,
        what: "read vDSO".into(),
        source,
    })?;
    buf.windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|off| start + off as u64)
        .ok_or(Error::NoSyscallInsn { tid: pid })
}
