//! The built-in init (`run --init`): PID 1 of the container forks the
//! command, reaps every process that is reparented to it, forwards the
//! usual termination signals to the command, and exits with the command's
//! status. For programs that are poor PID 1s (they neither reap orphans nor
//! install handlers, so SIGTERM from the host would be ignored).

use std::ffi::CString;
use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::spawn::{exec_or_report, report_and_exit};
use crate::sys::{self, Forked};

/// Signals that the init passes on to the command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The comm name of the init process, as `ps` inside the container shows it.
pub const INIT_COMM: &std::ffi::CStr = c"migrate-init";

/// Runs as PID 1. Never returns.
pub(super) fn run(argv: &[CString], err_pipe: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_name(INIT_COMM);
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        report_and_exit(err_pipe, &format!("init: block signals: {e}"));
    }
    let child = match sys::fork() {
        Ok(Forked::Child) => {
            if let Err(e) = sys::reset_signals() {
                report_and_exit(err_pipe, &format!("init: reset signals: {e}"));
            }
            exec_or_report(argv, err_pipe)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => report_and_exit(err_pipe, &format!("init: fork: {e}")),
    };
    // The command holds the error pipe until it execs; the init keeps no
    // descriptor of the parent's (the state lock among them).
    drop(err_pipe);
    let _ = sys::close_from(3);
    loop {
        let Ok(sig) = set.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        // One SIGCHLD can stand for many exits: reap until none is left.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => sys::exit_now(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => sys::exit_now(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
