//! Containers started by an OCI runtime (runc, crun): found through the
//! runtime's own state (`runc state ID`, the documented interface), their
//! config.json read with oci-spec, and adopted into a root as a record the
//! engine can checkpoint like one of its own. The runtime keeps its own
//! record; after a checkpoint it sees the container stopped.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::state::{self, ContainerState};
use super::Root;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--runtime takes runc or crun, not {0:?}")]
    UnknownRuntime(String),
    #[error("`{runtime} state {id}` failed: {reason}")]
    State {
        runtime: String,
        id: String,
        reason: String,
    },
    #[error("OCI container {id} is {status}; only a running one can be checkpointed")]
    NotRunning { id: String, status: String },
    #[error("OCI container {id}: {path}: {reason}")]
    Config { id: String, path: PathBuf, reason: String },
    #[error("OCI container {id}: its process {pid} is in no cgroup v2 ({reason})")]
    NoCgroup { id: String, pid: i32, reason: String },
    #[error(transparent)]
    Runtime(#[from] super::Error),
    #[error("{name} did not come from an OCI runtime; pass --runtime and --bundle to hand it to one")]
    NoOrigin { name: String },
    #[error("handing {id} back to {runtime} failed: {reason}; it runs on under migrate (`migrate ps`)")]
    HandBack {
        runtime: String,
        id: String,
        reason: String,
    },
}

/// Where an adopted container came from, so that it can be handed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciOrigin {
    /// runc or crun.
    pub runtime: String,
    /// The container's ID there.
    pub id: String,
    /// Its bundle (config.json and rootfs); the same path must exist
    /// wherever it is restored.
    pub bundle: PathBuf,
    /// The network namespace its config gave it.
    #[serde(default)]
    pub net: OciNet,
    /// The runtime's state directory (`--root`), if not its default.
    #[serde(default)]
    pub state_root: Option<PathBuf>,
}

impl OciOrigin {
    /// `RUNTIME [--root DIR]`, to which the caller adds a command.
    fn command(&self) -> Command {
        runtime_command(&self.runtime, self.state_root.as_deref())
    }
}

fn runtime_command(runtime: &str, state_root: Option<&Path>) -> Command {
    let mut cmd = Command::new(runtime);
    if let Some(r) = state_root {
        cmd.arg("--root").arg(r);
    }
    cmd
}

/// Where an OCI container's network namespace comes from (config.json's
/// `linux.namespaces`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OciNet {
    /// One of its own, made with it (and by the restore).
    #[default]
    Own,
    /// The host's: none in the config. The restore stays in its own.
    Host,
    /// One made outside it (Podman's, a CNI plugin's), at this path: the
    /// restore joins it, so it must exist there.
    Join(PathBuf),
}

impl OciNet {
    fn of(spec: &oci_spec::runtime::Spec) -> Self {
        use oci_spec::runtime::LinuxNamespaceType;
        let ns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        match ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network) {
            None => Self::Host,
            Some(n) => match n.path() {
                Some(p) => Self::Join(p.clone()),
                None => Self::Own,
            },
        }
    }

    /// Whether the restore makes the namespace (and sets its sysctls).
    pub fn is_own(&self) -> bool {
        matches!(self, Self::Own)
    }
}

/// How long the runtime may take to start its CRIU (us) and to finish.
const HANDBACK_TIMEOUT: Duration = Duration::from_secs(30);

fn check_runtime(runtime: &str) -> Result<()> {
    if runtime != "runc" && runtime != "crun" {
        return Err(Error::UnknownRuntime(runtime.to_string()));
    }
    Ok(())
}

pub type Result<T> = std::result::Result<T, Error>;

/// What `runc state` / `crun state` print.
#[derive(Debug, Deserialize)]
struct RuntimeState {
    pid: i32,
    status: String,
    bundle: PathBuf,
}

/// The cgroup v2 directory of process `pid`, from /proc/PID/cgroup.
fn cgroup_of(pid: i32) -> std::result::Result<PathBuf, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::")).ok_or("no 0:: line")?;
    let v2 = crate::cgroup::v2_mount().map_err(|e| e.to_string())?;
    Ok(v2.join(rel.trim_start_matches('/')))
}

/// Finds OCI container `id` of `runtime` and records it in `root` under
/// the same name, so that checkpoint, suspend and send can take it.
pub fn adopt(root: &Root, runtime: &str, state_root: Option<&Path>, id: &str) -> Result<()> {
    check_runtime(runtime)?;
    if !state::valid_name(id) {
        return Err(super::Error::InvalidName(id.to_string()).into());
    }
    let out = runtime_command(runtime, state_root)
        .args(["state", id])
        .output()
        .map_err(|e| Error::State {
            runtime: runtime.into(),
            id: id.into(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::State {
            runtime: runtime.into(),
            id: id.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let st: RuntimeState = serde_json::from_slice(&out.stdout).map_err(|e| Error::State {
        runtime: runtime.into(),
        id: id.into(),
        reason: e.to_string(),
    })?;
    if st.status != "running" && st.status != "paused" {
        return Err(Error::NotRunning {
            id: id.into(),
            status: st.status,
        });
    }
    let config = st.bundle.join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| Error::Config {
        id: id.into(),
        path: config.clone(),
        reason: e.to_string(),
    })?;
    let rootfs = spec.root().as_ref().map(|r| {
        let p = r.path();
        if p.is_absolute() {
            p.clone()
        } else {
            st.bundle.join(p)
        }
    });
    let command = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let cgroup = cgroup_of(st.pid).map_err(|reason| Error::NoCgroup {
        id: id.into(),
        pid: st.pid,
        reason,
    })?;
    let record = ContainerState {
        version: state::STATE_VERSION,
        name: id.to_string(),
        pid: st.pid,
        start_time: state::process_start_time(st.pid).unwrap_or(0),
        created: state::now_secs(),
        cgroup,
        hostname: spec.hostname().clone().unwrap_or_else(|| id.to_string()),
        rootfs,
        init: false,
        command,
        limits: Default::default(),
        image: None,
        net: None,
        oci: Some(OciOrigin {
            runtime: runtime.to_string(),
            id: id.to_string(),
            bundle: st.bundle.clone(),
            net: OciNet::of(&spec),
            state_root: state_root.map(Path::to_path_buf),
        }),
    };
    root.adopt(&record)?;
    Ok(())
}

/// After the engine killed an adopted container: the runtime's record of
/// it goes too (`RUNTIME delete ID`), as after the runtime's own
/// checkpoint, so that the ID can be restored again. Best effort: the
/// error, if any, is returned for a note.
pub fn forget(origin: &OciOrigin) -> std::result::Result<(), String> {
    // Not known there (restored under migrate after a hand-back that could
    // not happen): nothing to forget.
    let known = origin
        .command()
        .args(["state", &origin.id])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !known {
        return Ok(());
    }
    let out = origin
        .command()
        .args(["delete", "--force", &origin.id])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} delete {}: {e}", origin.runtime, origin.id))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} delete {}: {}",
            origin.runtime,
            origin.id,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What a hand-back did.
#[derive(Debug, Clone, Serialize)]
pub struct HandedBack {
    pub runtime: String,
    pub id: String,
    /// Host PID of the container's init, as the runtime now records it.
    pub pid: i32,
}

/// Hands container `name` of `root`, restored and running, to the OCI
/// runtime it came from (or `over`): runs `RUNTIME restore` on its bundle
/// with migrate standing in for CRIU (see `swrk`), moves every process into
/// the cgroups the runtime made, and lets the runtime record the init PID.
/// Then `RUNTIME state ID` says running and `RUNTIME kill ID` reaches it;
/// migrate's record and cgroup go. On failure the container keeps running
/// under migrate, as before.
pub fn hand_back(root: &Root, name: &str, over: Option<&OciOrigin>) -> Result<HandedBack> {
    let st = root.load(name)?;
    let origin = over
        .or(st.oci.as_ref())
        .ok_or_else(|| Error::NoOrigin { name: name.to_string() })?
        .clone();
    check_runtime(&origin.runtime)?;
    let err = |reason: String| Error::HandBack {
        runtime: origin.runtime.clone(),
        id: origin.id.clone(),
        reason,
    };
    if !st.status().is_live() {
        return Err(err(format!("{name} is not running here")));
    }
    if origin.runtime == "crun" && !crun_restores() {
        return Err(err(
            "this crun was built without CRIU support (`crun --version` lacks +CRIU), so it can not take a restored container back".into(),
        ));
    }
    if !origin.bundle.join("config.json").is_file() {
        return Err(err(format!(
            "its bundle {} is missing here (the same bundle path must exist where it is restored)",
            origin.bundle.display()
        )));
    }
    // A scratch directory: the runtime's image and work directory, the
    // socket our stand-in connects to, and the runtime's stderr.
    let work = root.dir().join("handback").join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| err(format!("{}: {e}", work.display())))?;
    let _cleanup = RemoveDir(work.clone());
    let result = run_hand_back(&st, &origin, &work).map_err(err)?;
    // The processes left migrate's cgroup for the runtime's; the empty
    // cgroup and the record go.
    let cg = st.cgroup();
    let _ = cg.remove();
    cg.remove_parent_if_empty();
    root.unadopt(name);
    Ok(result)
}

/// Hands container `name` back to the runtime it was taken from, if it was
/// taken from one (None: it was not).
pub fn hand_back_if_adopted(root: &Root, name: &str) -> Result<Option<HandedBack>> {
    if root.load(name)?.oci.is_none() {
        return Ok(None);
    }
    hand_back(root, name, None).map(Some)
}

/// Whether the installed crun can restore at all (Debian 12's is built
/// without CRIU).
fn crun_restores() -> bool {
    Command::new("crun")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("+CRIU"))
        .unwrap_or(false)
}

/// The runtime's `restore`, never left behind: on an early return it is
/// given a moment to end by itself (our side of the socket is closed by
/// then, so its CRIU fails and it cleans up), then killed, and reaped.
struct RuntimeChild(Child);

impl Drop for RuntimeChild {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn run_hand_back(st: &ContainerState, origin: &OciOrigin, work: &Path) -> std::result::Result<HandedBack, String> {
    // The runtime reads the stdio the container had from here.
    std::fs::write(
        work.join("descriptors.json"),
        r#"["/dev/null","/dev/null","/dev/null"]"#,
    )
    .map_err(|e| format!("write descriptors.json: {e}"))?;
    // An abstract socket: no path to outgrow sun_path. Who connects is
    // checked below: the runtime's child, naming itself.
    let name = format!(
        "migrate-handback-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("hand-over socket: {e}"))?;
    let listener = UnixListener::bind_addr(&addr).map_err(|e| format!("hand-over socket: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("hand-over socket: {e}"))?;
    let me = std::env::current_exe().map_err(|e| format!("find migrate's own binary: {e}"))?;
    let errors = work.join("runtime.err");
    let stderr = std::fs::File::create(&errors).map_err(|e| format!("{}: {e}", errors.display()))?;
    let mut cmd = origin.command();
    if origin.runtime == "runc" {
        cmd.arg("--criu").arg(&me);
    } else {
        // crun runs `criu` from PATH (through libcriu).
        let bin = work.join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
        std::os::unix::fs::symlink(&me, bin.join("criu")).map_err(|e| format!("criu link: {e}"))?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).map_err(|e| e.to_string())?);
    }
    cmd.args(["restore", "--detach", "--bundle"])
        .arg(&origin.bundle)
        .arg("--image-path")
        .arg(work)
        .arg("--work-path")
        .arg(work)
        .arg(&origin.id)
        .env(super::swrk::HANDOFF_ENV, format!("@{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = RuntimeChild(
        cmd.spawn()
            .map_err(|e| format!("start `{} restore`: {e}", origin.runtime))?,
    );
    let said = || std::fs::read_to_string(&errors).unwrap_or_default().trim().to_string();
    // Our stand-in connects once the runtime has made the cgroups and
    // asked for the restore.
    let deadline = Instant::now() + HANDBACK_TIMEOUT;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!(
                "`{} restore` ended ({status}) before asking for the container: {}",
                origin.runtime,
                said()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            return Err(format!(
                "`{} restore` did not ask for the container in {HANDBACK_TIMEOUT:?}: {}",
                origin.runtime,
                said()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(HANDBACK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    lines
        .read_line(&mut line)
        .map_err(|e| format!("hand-over socket: {e}"))?;
    let (shim, cg_root): (i32, Vec<CgRoot>) = match line.trim_end().split_once(' ') {
        Some(("restore", rest)) => serde_json::from_str::<RestoreAsk>(rest)
            .map(|a| (a.pid, a.cg_root))
            .map_err(|e| format!("bad request {line:?}: {e}"))?,
        _ => return Err(format!("bad request {line:?} on the hand-over socket")),
    };
    let peer = nix::sys::socket::getsockopt(lines.get_ref(), nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("hand-over socket: {e}"))?;
    let parent = crate::proc::read_status(shim).map(|s| s.host_ppid).unwrap_or(0);
    if peer.pid() != shim || parent != child.0.id() as i32 {
        let _ = writeln!(writer, "fail not the runtime's CRIU");
        return Err(format!(
            "process {} connected to the hand-over socket; it is not {}'s CRIU",
            peer.pid(),
            origin.runtime
        ));
    }
    let tree = crate::proc::walk(st.pid).map_err(|e| e.to_string())?;
    if let Err(e) = join_cgroups_of(shim, &cg_root, &tree) {
        let _ = writeln!(writer, "fail {e}");
        let _ = child.0.wait();
        move_back(st, &tree);
        return Err(format!("moving the container into {}'s cgroups: {e}", origin.runtime));
    }
    writeln!(writer, "pid {}", st.pid).map_err(|e| e.to_string())?;
    line.clear();
    let _ = lines.read_line(&mut line);
    let status = child.0.wait().map_err(|e| e.to_string())?;
    if line.trim_end() != "ok" || !status.success() {
        move_back(st, &tree);
        return Err(format!("`{} restore` failed ({status}): {}", origin.runtime, said()));
    }
    Ok(HandedBack {
        runtime: origin.runtime.clone(),
        id: origin.id.clone(),
        pid: st.pid,
    })
}

/// What the CRIU stand-in asks of migrate over the hand-over socket, as
/// one line: `restore {JSON}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RestoreAsk {
    /// The stand-in itself, in the cgroups the runtime made (runc).
    pub pid: i32,
    /// Cgroups the runtime named in its request instead (crun, which does
    /// not move its CRIU): CRIU's cgroup roots.
    pub cg_root: Vec<CgRoot>,
}

/// A cgroup root of a CRIU request: `ctrl` names a v1 hierarchy by one of
/// its controllers or all of them ("cpu", "cpu,cpuacct", "name=systemd"),
/// "" is cgroup v2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgRoot {
    pub ctrl: String,
    pub path: String,
}

/// The cgroup.procs files the restored tree goes to, one per hierarchy
/// process `pid` is in (v1 hierarchies at their mount points, v2 under its
/// mount): the cgroup `cg_root` names for it, else `pid`'s own.
fn cgroup_procs_of(pid: i32, cg_root: &[CgRoot]) -> std::result::Result<Vec<PathBuf>, String> {
    let cgroups = procfs::process::Process::new(pid)
        .and_then(|p| p.cgroups())
        .map_err(|e| format!("/proc/{pid}/cgroup: {e}"))?;
    let mounts = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mut out = Vec::new();
    for cg in cgroups.0 {
        // The runtime's own choice for this hierarchy, if it made one.
        let ctrl = cg.controllers.join(",");
        let named = cg_root
            .iter()
            .find(|r| r.ctrl == ctrl || (!r.ctrl.is_empty() && cg.controllers.contains(&r.ctrl)))
            .map(|r| r.path.as_str());
        let rel = named.unwrap_or(&cg.pathname).trim_start_matches('/');
        let base = if cg.hierarchy == 0 {
            crate::cgroup::v2_mount().map_err(|e| e.to_string())?
        } else if cg.controllers.is_empty() {
            continue;
        } else {
            let found = mounts.0.iter().find(|m| {
                m.fs_type == "cgroup"
                    && cg.controllers.iter().all(|c| match c.split_once('=') {
                        Some((k, v)) => m.super_options.get(k) == Some(&Some(v.to_string())),
                        None => m.super_options.contains_key(c.as_str()),
                    })
            });
            match found {
                Some(m) => m.mount_point.clone(),
                None => continue,
            }
        };
        let dir = base.join(rel);
        if named.is_some() && !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        out.push(dir.join("cgroup.procs"));
    }
    Ok(out)
}

/// Moves every process of `tree` into the cgroups the runtime named
/// (`cg_root`), and for the other hierarchies those of process `of`.
fn join_cgroups_of(of: i32, cg_root: &[CgRoot], tree: &[i32]) -> std::result::Result<(), String> {
    for procs in cgroup_procs_of(of, cg_root)? {
        for pid in tree {
            if let Err(e) = std::fs::write(&procs, pid.to_string()) {
                // A zombie can not move and need not.
                if crate::proc::read_status(*pid).map(|s| s.state != 'Z').unwrap_or(false) {
                    return Err(format!("{}: pid {pid}: {e}", procs.display()));
                }
            }
        }
    }
    Ok(())
}

/// After a failed hand-back: the processes go back to migrate's cgroup.
fn move_back(st: &ContainerState, tree: &[i32]) {
    let procs = st.cgroup.join("cgroup.procs");
    for pid in tree {
        let _ = std::fs::write(&procs, pid.to_string());
    }
}
