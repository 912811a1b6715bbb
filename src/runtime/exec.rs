//! `exec`: a new process inside a running container.
//!
//! A forked helper joins the container's cgroup, then all of its namespaces
//! at once through a pidfd (setns with several CLONE_NEW* flags), then its
//! root. PID and time namespaces apply to children only, so the helper
//! forks again for the command, waits for it, and exits with its status.
//! The caller's own namespaces never change.

use std::ffi::CString;
use std::io::Read;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::spawn::{exec_or_report, report_and_exit};
use super::{state::ContainerState, sys_err, Error, Result};
use crate::sys::{self, Forked};

pub(super) fn exec(st: &ContainerState, command: &[String]) -> Result<i32> {
    let argv = command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::Exec {
            name: st.name.clone(),
            message: "an argument contains a NUL byte".into(),
        })?;
    // The caller ignores the terminal's signals while the command runs;
    // the command (same process group) gets them itself.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGQUIT);
    set.thread_block().map_err(sys_err("block signals", 0))?;
    let result = run_helper(st, &argv);
    let _ = set.thread_unblock();
    result
}

fn run_helper(st: &ContainerState, argv: &[CString]) -> Result<i32> {
    let (err_rd, err_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe", 0))?;
    let helper = match sys::fork().map_err(sys_err("fork", 0))? {
        Forked::Child => {
            drop(err_rd);
            if let Err(msg) = enter(st) {
                report_and_exit(err_wr, &msg);
            }
            match sys::fork() {
                Ok(Forked::Child) => {
                    let _ = sys::reset_signals();
                    exec_or_report(argv, err_wr)
                }
                Ok(Forked::Parent(cmd)) => {
                    drop(err_wr);
                    sys::exit_now(wait_code(cmd).unwrap_or(127))
                }
                Err(e) => report_and_exit(err_wr, &format!("fork: {e}")),
            }
        }
        Forked::Parent(pid) => pid,
    };
    drop(err_wr);
    let mut msg = String::new();
    let _ = std::fs::File::from(err_rd).read_to_string(&mut msg);
    let code = wait_code(helper).map_err(sys_err("wait", helper.as_raw()))?;
    if !msg.is_empty() {
        return Err(Error::Exec {
            name: st.name.clone(),
            message: msg,
        });
    }
    Ok(code)
}

/// In the helper: joins the container's cgroup, namespaces and root.
fn enter(st: &ContainerState) -> std::result::Result<(), String> {
    let pidfd = sys::pidfd_open(Pid::from_raw(st.pid)).map_err(|e| format!("pidfd_open {}: {e}", st.pid))?;
    // The pidfd pins the process; check that it is still ours, not a
    // process that reused the PID.
    if !st.process_alive() {
        return Err(format!("container {} has stopped", st.name));
    }
    let root_path = format!("/proc/{}/root", st.pid);
    let root = std::fs::File::open(&root_path).map_err(|e| format!("open {root_path}: {e}"))?;
    st.cgroup().add(std::process::id() as i32).map_err(|e| e.to_string())?;
    let all = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP
        | CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    nix::sched::setns(&pidfd, all).map_err(|e| format!("setns: {e}"))?;
    nix::unistd::fchdir(&root).map_err(|e| format!("fchdir to container root: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Waits for `pid` and returns its exit status (128+N for signal N).
fn wait_code(pid: Pid) -> std::result::Result<i32, nix::errno::Errno> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}
