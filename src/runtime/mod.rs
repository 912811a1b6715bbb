//! The container runtime: a root directory of containers, and the
//! lifecycle of each (run, status, freeze, thaw, exec, remove).
//!
//! Layout of a root (default /run/migrate):
//! ```text
//! ROOT/lock                       flock'ed by every command that changes state
//! ROOT/containers/NAME/state.json the record (see state.rs)
//! ROOT/containers/NAME/log        the container's stdout and stderr
//! ```
//! Cgroups live at V2/migrate-HASH/NAME, where HASH is derived from the
//! root's path, so two roots on one machine never share a cgroup.

mod exec;
mod init;
pub mod oci;
pub(crate) mod spawn;
pub mod state;
pub mod swrk;

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup::{self, Cgroup, Limits};
use crate::sys::{self, Errno, Forked};
pub use state::{ContainerState, Status};

pub use init::INIT_COMM;

/// The default state root.
pub const DEFAULT_ROOT: &str = "/run/migrate";

/// How long freeze and thaw wait for cgroup.events to confirm.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the runtime. Each says what failed and, where there is one,
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migrate must run as root (it creates namespaces and cgroups); try again with sudo")]
    NotRoot,
    #[error("this kernel has no time namespaces (/proc/self/ns/time is missing); migrate needs Linux 5.6 or later")]
    NoTimeNamespace,
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(
        "invalid container name {0:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("no command given: put it after `--`, e.g. `migrate run -d --name web -- sleep 100`")]
    NoCommand,
    #[error("no container named {name} in {root}; `migrate ps` lists them")]
    UnknownContainer { name: String, root: PathBuf },
    #[error("container {name} is {status}: the name is in use; pick another or `migrate rm -f {name}`")]
    NameInUse { name: String, status: Status },
    #[error("container {name} is stopped (its process is gone); remove it with `migrate rm {name}`")]
    Stopped { name: String },
    #[error("container {name} is frozen; `migrate thaw {name}` first")]
    Frozen { name: String },
    #[error("starting container {name} failed: {message}")]
    Start { name: String, message: String },
    #[error("exec in container {name} failed: {message}")]
    Exec { name: String, message: String },
    #[error("state file {path}: {op}: {source}")]
    StateIo {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} is unreadable ({reason}); remove the container with `migrate rm -f` or delete the file"
    )]
    BadState { path: PathBuf, reason: String },
    #[error("{op} (pid {pid}): {source}")]
    Sys { op: &'static str, pid: i32, source: Errno },
    #[error(transparent)]
    Net(#[from] crate::net::Error),
    #[error("rootfs {0} is not a directory")]
    BadRootfs(PathBuf),
}

type Result<T> = std::result::Result<T, Error>;

fn sys_err(op: &'static str, pid: i32) -> impl FnOnce(Errno) -> Error {
    move |source| Error::Sys { op, pid, source }
}

/// Checks what every container operation needs: root, cgroup v2 and time
/// namespaces.
pub fn preflight() -> Result<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    if !Path::new("/proc/self/ns/time").exists() {
        return Err(Error::NoTimeNamespace);
    }
    Ok(cgroup::v2_mount()?)
}

/// What `run` is asked to start.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub name: String,
    pub hostname: Option<String>,
    pub rootfs: Option<PathBuf>,
    pub init: bool,
    pub limits: Limits,
    pub command: Vec<String>,
    /// Detached (-d): stdio to /dev/null and the log, and `run` returns
    /// once the command has been exec'ed. Otherwise the caller's stdio is
    /// inherited and the caller waits with [`Root::wait_foreground`].
    pub detach: bool,
    /// Bridged networking; None: loopback only.
    pub net: Option<NetSpec>,
}

/// What `--net bridge` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetSpec {
    pub bridge: String,
    /// Address and prefix; None: the first free one on the bridge.
    pub ip: Option<(std::net::Ipv4Addr, u8)>,
    /// None: derived from the address.
    pub mac: Option<[u8; 6]>,
}

/// A started container.
#[derive(Debug, Clone)]
pub struct Started {
    pub state: ContainerState,
}

/// A root directory holding containers.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    cgroup_base: PathBuf,
}

/// FNV-1a, 64 bits: a stable short tag for a root's path.
fn path_tag(path: &Path) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

impl Root {
    /// Opens (and creates) a root, after the preflight checks.
    pub fn open(dir: &Path) -> Result<Self> {
        let v2 = preflight()?;
        let io = |op| {
            move |source| Error::StateIo {
                path: dir.to_path_buf(),
                op,
                source,
            }
        };
        std::fs::create_dir_all(dir.join("containers")).map_err(io("create root"))?;
        let dir = dir.canonicalize().map_err(io("resolve root"))?;
        let cgroup_base = v2.join(format!("migrate-{}", path_tag(&dir)));
        Ok(Self { dir, cgroup_base })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of container `name` (state file, log, images).
    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("log")
    }

    pub(crate) fn state_path(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("state.json")
    }

    /// The cgroup a container of this name gets under this root.
    pub fn cgroup_for(&self, name: &str) -> Cgroup {
        Cgroup::at(self.cgroup_base.join(name))
    }

    /// Takes the root's lock (blocking) for the life of the returned guard.
    pub(crate) fn lock_state(&self) -> Result<Flock<File>> {
        self.lock()
    }

    /// Writes a container's record.
    pub(crate) fn save_state(&self, st: &ContainerState) -> Result<()> {
        let dir = self.container_dir(&st.name);
        std::fs::create_dir_all(&dir).map_err(|source| Error::StateIo {
            path: dir.clone(),
            op: "create",
            source,
        })?;
        st.save(&self.state_path(&st.name))
    }

    /// Opens (creating) a container's log for appending.
    pub(crate) fn open_log(&self, name: &str) -> Result<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.container_dir(name);
        let path = self.log_path(name);
        let io = |op| {
            let path = path.clone();
            move |source| Error::StateIo { path, op, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("create"))?;
        let f = File::options()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)
            .map_err(io("open log"))?;
        Ok(f.into())
    }

    /// Records a container that another runtime started (see `oci`), so
    /// that the engine can take it. Refused if the name is in use here.
    pub(crate) fn adopt(&self, st: &ContainerState) -> Result<()> {
        let _lock = self.lock()?;
        if let Ok(old) = self.load(&st.name) {
            let status = old.status();
            if status.is_live() {
                return Err(Error::NameInUse {
                    name: st.name.clone(),
                    status,
                });
            }
        }
        self.save_state(st)
    }

    /// Drops the record of an adopted container that its runtime still
    /// runs (its processes and cgroup are the runtime's).
    pub fn unadopt(&self, name: &str) {
        let _lock = self.lock();
        let _ = std::fs::remove_dir_all(self.container_dir(name));
    }

    /// Writes `bytes` as the log of container `name` (replacing any).
    pub(crate) fn seed_log(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.log_path(name);
        std::fs::create_dir_all(self.container_dir(name))
            .and_then(|_| std::fs::write(&path, bytes))
            .map_err(|source| Error::StateIo {
                path,
                op: "write log",
                source,
            })
    }

    /// Before a restore under `name`: refuses a live container of that
    /// name; otherwise removes its leftover cgroup, keeping its directory
    /// (log, and the image of a suspended container).
    pub(crate) fn prepare_restore(&self, name: &str) -> Result<()> {
        if !state::valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        if let Ok(st) = self.load(name) {
            let status = st.status();
            if status.is_live() {
                return Err(Error::NameInUse {
                    name: name.to_string(),
                    status,
                });
            }
        }
        let cg = self.cgroup_for(name);
        if cg.exists() {
            cg.kill_all(FREEZE_TIMEOUT)?;
            cg.remove()?;
        }
        Ok(())
    }

    /// After a checkpoint that killed the container: removes its cgroup,
    /// and records where its image is (or, with no record, removes it).
    pub(crate) fn forget_processes(&self, st: &ContainerState, image: Option<state::ImageRecord>) -> Result<()> {
        // The veth goes too; the address stays leased to the image.
        tear_down(&st.cgroup(), st.net.as_ref())?;
        match image {
            Some(record) => {
                let mut st = st.clone();
                st.image = Some(record);
                self.save_state(&st)
            }
            None => remove_dir(&self.container_dir(&st.name)),
        }
    }

    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::StateIo {
                path: path.clone(),
                op: "open lock",
                source,
            })?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::StateIo {
            path,
            op: "lock",
            source: e.into(),
        })
    }

    /// Loads the record of container `name`.
    pub fn load(&self, name: &str) -> Result<ContainerState> {
        if !state::valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let path = self.state_path(name);
        if !path.exists() {
            return Err(Error::UnknownContainer {
                name: name.to_string(),
                root: self.dir.clone(),
            });
        }
        ContainerState::load(&path)
    }

    /// Every container of the root with its status, sorted by name.
    /// Unreadable records are skipped.
    pub fn list(&self) -> Result<Vec<(ContainerState, Status)>> {
        let dir = self.dir.join("containers");
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::StateIo {
            path: dir.clone(),
            op: "list",
            source,
        })?;
        let mut out: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| ContainerState::load(&e.path().join("state.json")).ok())
            .map(|st| {
                let status = st.status();
                (st, status)
            })
            .collect();
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// A live container's record, or the error that says why not.
    fn live(&self, name: &str) -> Result<(ContainerState, Status)> {
        let st = self.load(name)?;
        let status = st.status();
        if !status.is_live() {
            return Err(Error::Stopped { name: name.to_string() });
        }
        Ok((st, status))
    }

    /// Starts a container. Detached: returns once the command runs. A
    /// failure removes the half-made cgroup and state.
    pub fn run(&self, spec: &RunSpec) -> Result<Started> {
        if !state::valid_name(&spec.name) {
            return Err(Error::InvalidName(spec.name.clone()));
        }
        if spec.command.is_empty() {
            return Err(Error::NoCommand);
        }
        if let Some(r) = &spec.rootfs {
            if !r.is_dir() {
                return Err(Error::BadRootfs(r.clone()));
            }
        }
        let argv = spec
            .command
            .iter()
            .map(|a| {
                CString::new(a.as_str()).map_err(|_| Error::Start {
                    name: spec.name.clone(),
                    message: format!("argument {a:?} contains a NUL byte"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rootfs = match &spec.rootfs {
            Some(r) => Some(r.canonicalize().map_err(|_| Error::BadRootfs(r.clone()))?),
            None => None,
        };
        let _lock = self.lock()?;
        self.clear_stale(&spec.name)?;

        let dir = self.container_dir(&spec.name);
        let cg = self.cgroup_for(&spec.name);
        let mut guard = Cleanup::new(cg.clone(), dir.clone());
        std::fs::create_dir_all(&dir).map_err(|source| Error::StateIo {
            path: dir.clone(),
            op: "create",
            source,
        })?;
        if cg.exists() {
            cg.kill_all(FREEZE_TIMEOUT)?;
            cg.remove()?;
        }
        cg.create()?;
        cg.apply(&spec.limits)?;

        let log = self.log_path(&spec.name);
        let stdio = if spec.detach {
            spawn::open_detached_stdio(&log).map_err(|source| Error::StateIo {
                path: log.clone(),
                op: "open log",
                source,
            })?
        } else {
            spawn::Stdio::Inherit
        };
        let hostname = spec.hostname.clone().unwrap_or_else(|| spec.name.clone());
        let net = match &spec.net {
            Some(n) => Some(self.lease_net(&spec.name, n)?),
            None => None,
        };
        guard.lease = net.as_ref().map(|n| (n.ip, self.state_path(&spec.name)));
        let (go_rd, go_wr) = spawn::go_channel().map_err(sys_err("socketpair", 0))?;
        let setup = spawn::ChildSetup {
            hostname: &hostname,
            rootfs: rootfs.as_deref(),
            init: spec.init,
            argv,
            stdio,
            go: go_rd,
        };
        let (err_rd, err_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe", 0))?;
        let cg_dir = File::open(cg.path()).map_err(|source| cgroup::Error::Io {
            path: cg.path().to_path_buf(),
            op: "open",
            source,
        })?;
        if !spec.detach {
            // Blocked before the clone so that no signal is lost between
            // the clone and wait_foreground; the child resets its mask.
            foreground_signals()
                .thread_block()
                .map_err(sys_err("block signals", 0))?;
        }
        let flags = CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET;
        let opts = sys::CloneOpts {
            flags: flags.bits() as u64 | libc::CLONE_NEWTIME as u64,
            cgroup: Some(cg_dir.as_fd()),
            set_tid: &[],
        };
        let pid = match sys::clone3(&opts).map_err(sys_err("clone3", 0))? {
            Forked::Child => {
                drop(err_rd);
                drop(go_wr);
                spawn::child_main(setup, err_wr)
            }
            Forked::Parent(pid) => pid,
        };
        drop(err_wr);
        drop(setup);
        // From outside: the network, then "go".
        if let Some(cfg) = &net {
            guard.net = Some(cfg.clone());
            if let Err(e) = crate::net::attach(cfg, pid.as_raw()) {
                drop(go_wr);
                let _ = waitpid(pid, None);
                return Err(Error::Net(e));
            }
        }
        spawn::send_go(&go_wr);
        drop(go_wr);
        let mut msg = String::new();
        let _ = File::from(err_rd).read_to_string(&mut msg);
        if !msg.is_empty() {
            let _ = waitpid(pid, None);
            return Err(Error::Start {
                name: spec.name.clone(),
                message: msg,
            });
        }
        let start_time = state::process_start_time(pid.as_raw()).unwrap_or(0);
        let st = ContainerState {
            version: state::STATE_VERSION,
            name: spec.name.clone(),
            pid: pid.as_raw(),
            start_time,
            created: state::now_secs(),
            cgroup: cg.path().to_path_buf(),
            hostname,
            rootfs,
            init: spec.init,
            command: spec.command.clone(),
            limits: spec.limits.clone(),
            image: None,
            net,
            oci: None,
        };
        st.save(&self.state_path(&spec.name))?;
        guard.disarm();
        Ok(Started { state: st })
    }

    /// Waits for a foreground container, forwarding SIGINT and SIGTERM to
    /// it (a second one kills it), then removes it. Returns the command's
    /// exit status (128+N for a signal).
    pub fn wait_foreground(&self, started: &Started) -> Result<i32> {
        let pid = Pid::from_raw(started.state.pid);
        let set = foreground_signals();
        let mut asked = false;
        let code = loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break code,
                Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                Ok(_) => {}
                Err(e) => return Err(sys_err("wait", pid.as_raw())(e)),
            }
            match set.wait() {
                Ok(Signal::SIGCHLD) | Err(_) => {}
                Ok(sig) if !asked => {
                    asked = true;
                    let _ = kill(pid, sig);
                }
                Ok(_) => {
                    let _ = started.state.cgroup().kill_all(FREEZE_TIMEOUT);
                }
            }
        };
        let _ = set.thread_unblock();
        let _lock = self.lock()?;
        self.destroy(&started.state)?;
        Ok(code)
    }

    /// Removes a stopped container's leftovers so that its name can be used
    /// again. A live one is an error.
    fn clear_stale(&self, name: &str) -> Result<()> {
        match self.load(name) {
            Ok(st) => {
                let status = st.status();
                if status.is_live() {
                    return Err(Error::NameInUse {
                        name: name.to_string(),
                        status,
                    });
                }
                self.destroy(&st)
            }
            Err(Error::UnknownContainer { .. }) | Err(Error::BadState { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Freezes a running container (cgroup.freeze) and waits until it is.
    pub fn freeze(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let (st, _) = self.live(name)?;
        st.cgroup().set_frozen(true, FREEZE_TIMEOUT)?;
        Ok(())
    }

    /// Thaws a frozen container and waits until it runs.
    pub fn thaw(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let (st, _) = self.live(name)?;
        st.cgroup().set_frozen(false, FREEZE_TIMEOUT)?;
        Ok(())
    }

    /// Stops a container and removes its cgroup and state. Gracefully: it
    /// gets SIGTERM and `grace` to exit before SIGKILL. `force`: SIGKILL at
    /// once.
    pub fn remove(&self, name: &str, force: bool, grace: Duration) -> Result<()> {
        let _lock = self.lock()?;
        let st = match self.load(name) {
            Ok(st) => st,
            Err(Error::BadState { .. }) if force => {
                let dir = self.container_dir(name);
                let cg = self.cgroup_for(name);
                cg.kill_all(FREEZE_TIMEOUT)?;
                cg.remove()?;
                return remove_dir(&dir);
            }
            Err(e) => return Err(e),
        };
        let cg = st.cgroup();
        if st.status().is_live() && !force && cg.exists() {
            if cg.frozen()? {
                cg.set_frozen(false, FREEZE_TIMEOUT)?;
            }
            let _ = kill(Pid::from_raw(st.pid), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < grace && cg.populated()? {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.destroy(&st)
    }

    /// Kills whatever is left of a container, removes its cgroup and its
    /// directory.
    fn destroy(&self, st: &ContainerState) -> Result<()> {
        tear_down(&st.cgroup(), st.net.as_ref())?;
        if let Some(n) = &st.net {
            crate::net::ipam::release(n.ip, &self.state_path(&st.name));
        }
        remove_dir(&self.container_dir(&st.name))
    }

    /// The host-side name of container `name`'s veth under this root.
    pub fn host_veth(&self, name: &str) -> String {
        crate::net::host_veth_name(&path_tag(&self.dir), name)
    }

    /// Leases an address and builds the network config of a bridged
    /// container `name`.
    pub(crate) fn lease_net(&self, name: &str, spec: &NetSpec) -> Result<crate::net::NetConfig> {
        let owner = self.state_path(name);
        let (ip, prefix) = match spec.ip {
            Some((ip, prefix)) => {
                crate::net::ipam::take(ip, &owner)?;
                (ip, prefix)
            }
            None => (crate::net::ipam::allocate(&owner)?, crate::net::BRIDGE_PREFIX),
        };
        Ok(crate::net::NetConfig {
            bridge: if spec.bridge.is_empty() {
                crate::net::DEFAULT_BRIDGE.into()
            } else {
                spec.bridge.clone()
            },
            host_veth: self.host_veth(name),
            ip,
            prefix,
            gateway: crate::net::BRIDGE_ADDR,
            mac: spec.mac.unwrap_or_else(|| crate::net::mac_for(ip)),
            mtu: 1500,
        })
    }

    /// Runs `command` inside container `name` (all its namespaces, its
    /// cgroup and its root) with the caller's stdio, and returns its exit
    /// status.
    pub fn exec(&self, name: &str, command: &[String]) -> Result<i32> {
        if command.is_empty() {
            return Err(Error::NoCommand);
        }
        let (st, status) = self.live(name)?;
        if status == Status::Frozen {
            return Err(Error::Frozen { name: name.to_string() });
        }
        exec::exec(&st, command)
    }
}

/// Kills every process of a container, removes its cgroup (and the root's
/// cgroup parent once empty) and the host end of its veth.
pub(crate) fn tear_down(cg: &Cgroup, net: Option<&crate::net::NetConfig>) -> std::result::Result<(), cgroup::Error> {
    if cg.exists() {
        cg.kill_all(FREEZE_TIMEOUT)?;
        cg.remove()?;
        cg.remove_parent_if_empty();
    }
    if let Some(n) = net {
        let _ = crate::net::detach(n);
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::StateIo {
            path: dir.to_path_buf(),
            op: "remove",
            source,
        }),
    }
}

/// Signals a foreground `run` handles itself.
fn foreground_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Undoes a half-made container unless disarmed.
struct Cleanup {
    cgroup: Cgroup,
    dir: PathBuf,
    armed: bool,
    net: Option<crate::net::NetConfig>,
    lease: Option<(std::net::Ipv4Addr, PathBuf)>,
}

impl Cleanup {
    fn new(cgroup: Cgroup, dir: PathBuf) -> Self {
        Self {
            cgroup,
            dir,
            armed: true,
            net: None,
            lease: None,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = tear_down(&self.cgroup, self.net.as_ref());
            if let Some((ip, owner)) = &self.lease {
                crate::net::ipam::release(*ip, owner);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_per_root() {
        let a = path_tag(Path::new("/run/migrate"));
        let b = path_tag(Path::new("/tmp/other"));
        assert_ne!(a, b);
        assert_eq!(a, path_tag(Path::new("/run/migrate")));
        assert_eq!(a.len(), 12);
    }
}
