//! A container's record on disk (ROOT/containers/NAME/state.json) and how
//! its live status is derived from the host.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, Limits};

use super::Error;

/// Version of the state file layout. A file with another version is refused.
pub const STATE_VERSION: u32 = 1;

/// What `ps` shows for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Frozen,
    Stopped,
    /// Checkpointed (and killed) with `checkpoint`; `restore --dir` brings it back.
    Checkpointed,
    /// Suspended into its own state directory; `resume` brings it back.
    Suspended,
}

impl Status {
    /// Whether the name is taken: only a live container holds its name.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Frozen)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Running => "running",
            Status::Frozen => "frozen",
            Status::Stopped => "stopped",
            Status::Checkpointed => "checkpointed",
            Status::Suspended => "suspended",
        })
    }
}

/// The record of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub version: u32,
    pub name: String,
    /// Host PID of the container's PID 1.
    pub pid: i32,
    /// Start time of that process (clock ticks since boot, /proc/PID/stat
    /// field 22). Tells our process apart from a later one that reuses the
    /// PID.
    pub start_time: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// The container's cgroup v2 directory.
    pub cgroup: PathBuf,
    pub hostname: String,
    pub rootfs: Option<PathBuf>,
    pub init: bool,
    pub command: Vec<String>,
    pub limits: Limits,
    /// Set while the container lives only as an image.
    #[serde(default)]
    pub image: Option<ImageRecord>,
    /// Bridged networking, if any.
    #[serde(default)]
    pub net: Option<crate::net::NetConfig>,
    /// Taken over from an OCI runtime: where to hand it back.
    #[serde(default)]
    pub oci: Option<super::oci::OciOrigin>,
}

/// Where a checkpointed or suspended container's image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub dir: PathBuf,
    pub suspended: bool,
}

impl ContainerState {
    pub fn cgroup(&self) -> Cgroup {
        Cgroup::at(&self.cgroup)
    }

    /// Whether the recorded PID 1 is still our live process.
    pub fn process_alive(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }

    /// The live status, from the process and the cgroup.
    pub fn status(&self) -> Status {
        // A record of an image means the processes were killed after the
        // checkpoint (they may take a moment to be reaped).
        match &self.image {
            Some(r) if r.suspended => return Status::Suspended,
            Some(_) => return Status::Checkpointed,
            None => {}
        }
        if !self.process_alive() {
            return Status::Stopped;
        }
        match self.cgroup().frozen() {
            Ok(true) => Status::Frozen,
            _ => Status::Running,
        }
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::StateIo {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
        let state: ContainerState = serde_json::from_slice(&bytes).map_err(|e| Error::BadState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(Error::BadState {
                path: path.to_path_buf(),
                reason: format!("state version {} (this build reads {STATE_VERSION})", state.version),
            });
        }
        Ok(state)
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |op| {
            move |source| Error::StateIo {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text).map_err(io("write"))?;
        std::fs::rename(&tmp, path).map_err(io("rename"))
    }
}

/// The start time of a live (not zombie) process, or None.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return None;
    }
    Some(stat.starttime)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Container names: 1-64 characters of [A-Za-z0-9_.-], starting with a
/// letter or digit. They become directory and cgroup names.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn state_roundtrip_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let st = ContainerState {
            version: STATE_VERSION,
            name: "web".into(),
            pid: 42,
            start_time: 7,
            created: 1,
            cgroup: "/sys/fs/cgroup/x".into(),
            hostname: "web".into(),
            rootfs: None,
            init: false,
            command: vec!["sleep".into(), "1".into()],
            limits: Limits::default(),
            image: None,
            net: None,
            oci: Some(crate::runtime::oci::OciOrigin {
                runtime: "runc".into(),
                id: "web".into(),
                bundle: "/srv/web".into(),
                net: crate::runtime::oci::OciNet::Join("/run/netns/web".into()),
                state_root: Some("/run/other-runc".into()),
            }),
        };
        st.save(&p).unwrap();
        assert_eq!(ContainerState::load(&p).unwrap(), st);
        let mut bad = st.clone();
        bad.version = 99;
        bad.save(&p).unwrap();
        assert!(matches!(ContainerState::load(&p), Err(Error::BadState { .. })));
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(ContainerState::load(&p), Err(Error::BadState { .. })));
    }

    #[test]
    fn dead_pid_is_not_alive() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(t));
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
