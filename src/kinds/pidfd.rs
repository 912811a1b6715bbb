//! pidfds (pidfd_open, clone's CLONE_PIDFD): an fd that refers to a
//! process of the container, alive or a zombie.
//!
//! - Dump: fdinfo's `Pid:` (the target's PID as the dumper sees it) is
//!   translated to the container's PID; the fd's flags keep O_NONBLOCK.
//!   Refused before anything stops: a pidfd of a process that has been
//!   reaped (`Pid: -1`), of a process in another PID namespace (outside
//!   the container), or of a thread (PIDFD_THREAD).
//!   fds of one open file description (a child inherited it, or it was
//!   duplicated) are one description again: the first fd of it in tree
//!   order is the image's `Pidfd`, every other a `PidfdAs` naming it.
//! - Restore: the task holds a placeholder at the fd's number until every
//!   process of the tree exists; then `pidfd_open` is injected into it and
//!   the new pidfd moved onto the number (`dup3`), and each epoll of the
//!   process that watched the pidfd registers it again (the placeholder
//!   could not be registered). A `PidfdAs` takes its description from the
//!   process that has it (rebuilt earlier): an injected `pidfd_open` of
//!   that process and `pidfd_getfd`, before the credentials (it takes the
//!   right to trace that process); or `dup3` of its own lower fd.

use super::anonfd::EpollTarget;
use super::remote::{self, Remote};

/// What refuses a pidfd whose fdinfo is `info`, held by process `holder`
/// (host PID); None if it is carried.
pub fn uncarried(holder: i32, info: &str) -> Option<String> {
    let target: i32 = field(info, "Pid:")?.parse().ok()?;
    if target <= 0 {
        return Some("pidfd of a process that has exited and been reaped".into());
    }
    if flags(info) & libc::O_EXCL != 0 {
        return Some("pidfd of a thread (PIDFD_THREAD)".into());
    }
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    if ns(target) != ns(holder) {
        return Some(format!(
            "pidfd of process {target}, which is outside the container's PID namespace"
        ));
    }
    None
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

fn flags(info: &str) -> i32 {
    field(info, "flags:")
        .and_then(|f| i32::from_str_radix(f, 8).ok())
        .unwrap_or(0)
}

/// The target of a pidfd (host PID) from its fdinfo; None for one that has
/// been reaped.
pub fn target(info: &str) -> Option<i32> {
    field(info, "Pid:")?.parse().ok().filter(|p: &i32| *p > 0)
}

/// How a pidfd is made, PIDs as the container sees them.
pub struct Made {
    /// The process it refers to.
    pub pid: i32,
    /// The same description as this fd of this process (made already).
    pub same_as: Option<(i32, i32)>,
    /// The process it is made in.
    pub own: i32,
}

/// Puts pidfd `fd` (flags `fd_flags`, made as `made` says) in place in the
/// restored process behind `remote`, and registers it again in the
/// process's epolls that watched it (`epolls`: epoll fd and its interest
/// list; a registration of the description another holder made already is
/// there).
pub fn restore(
    remote: &Remote,
    fd: i32,
    made: &Made,
    fd_flags: i32,
    epolls: &[(i32, &[EpollTarget])],
) -> remote::Result<()> {
    let pid = made.pid;
    let cloexec = (fd_flags & libc::O_CLOEXEC) as u64;
    let dup3 = |new: u64| {
        remote.call(
            &format!("dup3 pidfd to fd {fd}"),
            libc::SYS_dup3,
            &[new, fd as u64, cloexec],
        )
    };
    match made.same_as {
        Some((holder, from)) if holder == made.own => {
            dup3(from as u64)?;
        }
        Some((holder, from)) => {
            let of_holder = remote.call(
                &format!("pidfd_open({holder}) to take its fd {from} for fd {fd}"),
                libc::SYS_pidfd_open,
                &[holder as u64, 0],
            )?;
            let new = remote.call(
                &format!("pidfd_getfd(process {holder}, fd {from}) for fd {fd}"),
                libc::SYS_pidfd_getfd,
                &[of_holder, from as u64, 0],
            );
            remote.close(of_holder)?;
            let new = new?;
            dup3(new)?;
            remote.close(new)?;
        }
        None => {
            let new = remote.call(
                &format!("pidfd_open({pid}) for fd {fd}"),
                libc::SYS_pidfd_open,
                &[pid as u64, (fd_flags & libc::O_NONBLOCK) as u64],
            )?;
            dup3(new)?;
            remote.close(new)?;
        }
    }
    for (epfd, targets) in epolls {
        for t in targets.iter().filter(|t| t.fd == fd) {
            // struct epoll_event is packed on x86_64: events, then data.
            let mut ev = [0u8; 12];
            ev[0..4].copy_from_slice(&t.events.to_le_bytes());
            ev[4..12].copy_from_slice(&t.data.to_le_bytes());
            remote.write(remote.scratch, &ev)?;
            let added = remote.call(
                &format!("epoll_ctl(fd {epfd}, ADD, pidfd {fd})"),
                libc::SYS_epoll_ctl,
                &[*epfd as u64, libc::EPOLL_CTL_ADD as u64, fd as u64, remote.scratch],
            );
            match added {
                // An epoll another holder registered it in already.
                Err(remote::Error::Sys {
                    source: crate::sys::Errno::EEXIST,
                    ..
                }) => {}
                other => {
                    other?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo() {
        let me = std::process::id() as i32;
        let info = format!("pos:\t0\nflags:\t02004002\nmnt_id:\t4\nino:\t1\nPid:\t{me}\nNSpid:\t{me}\n");
        assert_eq!(target(&info), Some(me));
        assert_eq!(uncarried(me, &info), None);
        let gone = "pos:\t0\nflags:\t02000002\nPid:\t-1\nNSpid:\t-1\n";
        assert_eq!(target(gone), None);
        assert!(uncarried(me, gone).unwrap().contains("reaped"));
        let thread = format!("flags:\t02000202\nPid:\t{me}\n");
        assert!(uncarried(me, &thread).unwrap().contains("thread"));
    }
}
