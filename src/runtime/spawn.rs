//! The child side of `run`: code that runs as the container's PID 1 between
//! clone3 and exec. It sets up the namespaces it was born into, then execs
//! the command (or runs the built-in init). A failure is written to the
//! error pipe as one line, and the child exits 127; the parent turns that
//! line into the error the user sees.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{chdir, pivot_root, sethostname, setsid};

use crate::sys;

/// Where the container's standard streams go.
pub(super) enum Stdio {
    /// stdin from /dev/null, stdout and stderr to the log; a new session.
    Detached { null: OwnedFd, log: OwnedFd },
    /// The caller's terminal or pipes (foreground `run`).
    Inherit,
}

/// Everything the child needs, prepared by the parent before clone3.
pub(super) struct ChildSetup<'a> {
    pub hostname: &'a str,
    pub rootfs: Option<&'a Path>,
    pub init: bool,
    pub argv: Vec<CString>,
    pub stdio: Stdio,
    /// Read end of a pipe on which the parent says "go" (one byte) once it
    /// has set up what it sets up from outside (the network).
    pub go: OwnedFd,
}

/// A failed setup step, as the parent will report it.
struct StepError(String);

trait Step<T> {
    fn step(self, what: &str) -> Result<T, StepError>;
}

impl<T, E: std::fmt::Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, StepError> {
        self.map_err(|e| StepError(format!("{what}: {e}")))
    }
}

/// Runs in the cloned child. Never returns.
pub(super) fn child_main(setup: ChildSetup<'_>, err_pipe: OwnedFd) -> ! {
    if let Err(StepError(msg)) = prepare(&setup) {
        report_and_exit(err_pipe, &msg);
    }
    if !wait_go(&setup.go) {
        // The parent failed and has said why; nothing to add.
        sys::exit_now(127);
    }
    if setup.init {
        super::init::run(&setup.argv, err_pipe)
    }
    exec_or_report(&setup.argv, err_pipe)
}

/// The channel on which a parent tells its new child "go" (a socketpair,
/// close-on-exec): (the child's end, the parent's end).
pub(crate) fn go_channel() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
}

/// Says "go" to the child, if it still listens: one that has failed and
/// exited meanwhile closed its end, and a write to a pipe would raise
/// SIGPIPE, which kills migrate before it can clean up or say why (a
/// restore failing early in PID 1 did, now and then). So a socket, sent
/// to without SIGPIPE; the child's own report says what went wrong.
pub(crate) fn send_go(go: &OwnedFd) {
    let _ = nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(go),
        &[1],
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    );
}

/// Waits for the parent's "go" byte; false if the parent gave up (EOF).
pub(crate) fn wait_go(go: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(go, &mut b) {
            Ok(1) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

/// Execs `argv`; on failure reports why on the error pipe and exits 127.
pub(super) fn exec_or_report(argv: &[CString], err_pipe: OwnedFd) -> ! {
    let errno = sys::execvp(argv);
    let msg = format!("cannot execute {:?}: {}", argv[0], errno.desc());
    report_and_exit(err_pipe, &msg)
}

/// Writes one line to the error pipe and exits 127.
pub(super) fn report_and_exit(err_pipe: OwnedFd, msg: &str) -> ! {
    let _ = std::fs::File::from(err_pipe).write_all(msg.as_bytes());
    sys::exit_now(127)
}

fn prepare(setup: &ChildSetup<'_>) -> Result<(), StepError> {
    setup_namespaces(setup.hostname, setup.rootfs).map_err(StepError)?;
    if let Stdio::Detached { null, log } = &setup.stdio {
        nix::unistd::dup2_stdin(null).step("stdin")?;
        nix::unistd::dup2_stdout(log).step("stdout")?;
        nix::unistd::dup2_stderr(log).step("stderr")?;
        setsid().step("setsid")?;
    }
    sys::cloexec_from(3).step("mark descriptors close-on-exec")?;
    sys::reset_signals().step("reset signals")?;
    Ok(())
}

/// What PID 1 of a new container does in the namespaces it was born into,
/// for `run` and for `restore` alike: its own cgroup namespace, private
/// mounts, a fresh /proc and /sys (or the rootfs), the hostname, and lo up.
pub(crate) fn setup_namespaces(hostname: &str, rootfs: Option<&Path>) -> Result<(), String> {
    let inner = || -> Result<(), StepError> {
        // clone3 placed us in the container's cgroup; a cgroup namespace
        // made now has that cgroup as its root, so /proc/self/cgroup reads
        // "0::/".
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).step("unshare cgroup namespace")?;
        // Nothing we mount may propagate back to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .step("make / private")?;
        match rootfs {
            Some(root) => enter_rootfs(root)?,
            None => {
                mount_fs(
                    "proc",
                    "/proc",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                )?;
                mount_fs(
                    "sysfs",
                    "/sys",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                )?;
            }
        }
        sethostname(hostname).step("set hostname")?;
        crate::net::loopback_up().step("bring loopback up")?;
        Ok(())
    };
    inner().map_err(|StepError(m)| m)
}

fn mount_fs(fstype: &str, target: &str, flags: MsFlags) -> Result<(), StepError> {
    std::fs::create_dir_all(target).step(&format!("mkdir {target}"))?;
    mount(Some(fstype), target, Some(fstype), flags, None::<&str>).step(&format!("mount {fstype} on {target}"))
}

/// The device nodes bound from the host into the container's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Makes `root` the container's root: /proc, /sys and a minimal /dev
/// inside it, then pivot_root, and the old root detached.
fn enter_rootfs(root: &Path) -> Result<(), StepError> {
    let root_s = root
        .to_str()
        .ok_or_else(|| StepError(format!("rootfs {root:?} is not UTF-8")))?;
    mount(
        Some(root_s),
        root_s,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .step("bind-mount rootfs")?;
    let at = |p: &str| format!("{root_s}/{p}");
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", &at("proc"), hardened)?;
    mount_fs("sysfs", &at("sys"), hardened | MsFlags::MS_RDONLY)?;
    let dev = at("dev");
    std::fs::create_dir_all(&dev).step("mkdir /dev")?;
    mount(
        Some("tmpfs"),
        dev.as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=64k"),
    )
    .step("mount tmpfs on /dev")?;
    for d in DEVICES {
        let target = format!("{dev}/{d}");
        std::fs::File::create(&target).step(&format!("create {target}"))?;
        mount(
            Some(format!("/dev/{d}").as_str()),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(&format!("bind /dev/{d}"))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, format!("{dev}/{link}")).step(&format!("symlink /dev/{link}"))?;
    }
    mount_fs("tmpfs", &format!("{dev}/shm"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    std::fs::create_dir_all(format!("{dev}/pts")).step("mkdir /dev/pts")?;
    mount(
        Some("devpts"),
        format!("{dev}/pts").as_str(),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .step("mount devpts")?;
    std::os::unix::fs::symlink("pts/ptmx", format!("{dev}/ptmx")).step("symlink /dev/ptmx")?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // "." afterwards removes it without needing a directory for it.
    chdir(root).step("chdir to rootfs")?;
    pivot_root(".", ".").step("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).step("detach old root")?;
    chdir("/").step("chdir /")?;
    Ok(())
}

/// Opens the standard streams of a detached container, in the parent.
pub(super) fn open_detached_stdio(log: &Path) -> std::io::Result<Stdio> {
    use std::os::unix::fs::OpenOptionsExt;
    let null = std::fs::File::open("/dev/null")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(log)?;
    Ok(Stdio::Detached {
        null: null.into(),
        log: log.into(),
    })
}
