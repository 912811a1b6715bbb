//! Containers started by an OCI runtime (runc, crun): found through the
//! runtime's own state (`runc state ID`, the documented interface), their
//! config.json read with oci-spec, and adopted into a root as a record the
//! engine can checkpoint like one of its own. The runtime keeps its own
//! record; after a checkpoint it sees the container stopped.

use std::path::PathBuf;

use serde::Deserialize;

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
pub fn adopt(root: &Root, runtime: &str, id: &str) -> Result<()> {
    if runtime != "runc" && runtime != "crun" {
        return Err(Error::UnknownRuntime(runtime.to_string()));
    }
    if !state::valid_name(id) {
        return Err(super::Error::InvalidName(id.to_string()).into());
    }
    let out = std::process::Command::new(runtime)
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
    };
    root.adopt(&record)?;
    Ok(())
}
