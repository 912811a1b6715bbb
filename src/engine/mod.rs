//! The engine: checkpoint (in phases) and restore (in stages). It reads and
//! writes images through sinks and sources, and reports what it did; it
//! never prints.

pub mod checkpoint;
pub mod inspect;
pub mod live;
pub mod restore;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::Limits;
use crate::kinds::{creds, files, memory, mounts, precopy, pstree, regs, remote, timens, timers};
use crate::sys::Errno;
use crate::{cgroup, image, runtime};

/// Section names in an image.
pub mod section {
    pub const CONTAINER: &str = "container";
    pub const PSTREE: &str = "pstree";
    pub const MM: &str = crate::kinds::memory::SECTION;
    pub const SIGNALS: &str = "signals";
    pub const FILES: &str = "files";
    pub const MOUNTS: &str = "mounts";
    pub const PROCATTRS: &str = crate::kinds::procattrs::SECTION;
    pub const UTS: &str = crate::kinds::uts::SECTION;
    pub const FDATTRS: &str = crate::kinds::fdattrs::SECTION;
}

/// Errors of checkpoint and restore, with the phase they happened in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Memory(#[from] memory::Error),
    #[error(transparent)]
    Regs(#[from] regs::Error),
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error(transparent)]
    Pstree(#[from] pstree::Error),
    #[error(transparent)]
    Proc(#[from] crate::proc::Error),
    #[error(transparent)]
    Files(#[from] files::Error),
    #[error(transparent)]
    Timens(#[from] timens::Error),
    #[error(transparent)]
    Creds(#[from] creds::Error),
    #[error(transparent)]
    Timers(#[from] timers::Error),
    #[error(transparent)]
    Precopy(#[from] precopy::Error),
    #[error(transparent)]
    Mounts(#[from] mounts::Error),
    #[error(transparent)]
    ProcAttrs(#[from] crate::kinds::procattrs::Error),
    #[error(transparent)]
    Uts(#[from] crate::kinds::uts::Error),
    #[error(transparent)]
    FdAttrs(#[from] crate::kinds::fdattrs::Error),
    #[error(transparent)]
    Fault(#[from] crate::fault::Injected),
    #[error("process {pid} (pid {ns_pid} in the container) shares its fd table with process {other} (CLONE_FILES), which migrate does not carry yet")]
    SharedFdTable { pid: i32, ns_pid: i32, other: i32 },
    #[error("image section {section}: process {pid}: {what}; the image is damaged")]
    Damaged {
        section: &'static str,
        pid: i32,
        what: &'static str,
    },
    #[error("{phase} (task {tid}): {source}")]
    Ptrace {
        phase: &'static str,
        tid: i32,
        #[source]
        source: Errno,
    },
    #[error("{phase}: {message}")]
    Stage { phase: &'static str, message: String },
    #[error("{phase} {}: {source}", path.display())]
    Io {
        phase: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image was written on {image}, this machine is {here}: {what} differ, so it can not be restored here")]
    Incompatible {
        what: &'static str,
        image: String,
        here: String,
    },
    #[error("container {name} is {status}; only a running or frozen container can be checkpointed")]
    NotLive { name: String, status: runtime::Status },
    #[error("the image holds {0} established TCP connections; restore with --tcp-established")]
    TcpNotRequested(usize),
    #[error("lost contact with the destination after telling it to start {name} ({reason}); {name} is left frozen here: if it runs on the destination, remove it here with `migrate rm -f {name}`, otherwise `migrate thaw {name}`")]
    InDoubt { name: String, reason: String },
    #[error("container {name} is {status}, not suspended; `migrate ps` shows its state")]
    NotSuspended { name: String, status: runtime::Status },
    #[error("{op} of {name} failed: {source}{}", if *.kept_running { " (the container is still running)" } else { "" })]
    Failed {
        op: &'static str,
        name: String,
        kept_running: bool,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the image records about the container itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerImage {
    pub name: String,
    pub hostname: String,
    pub rootfs: Option<PathBuf>,
    pub init: bool,
    pub command: Vec<String>,
    pub limits: Limits,
    pub created: u64,
    pub clocks: timens::Clocks,
    /// Bridged networking (address, MAC, MTU), recreated before any socket.
    pub net: Option<crate::net::NetConfig>,
    /// Network namespace sysctls.
    pub sysctls: Vec<(String, String)>,
    /// The OCI runtime it was taken from, to hand it back after a restore.
    pub oci: Option<runtime::oci::OciOrigin>,
}

/// What a checkpoint does with established TCP connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcpMode {
    /// Fail the checkpoint, naming them.
    #[default]
    Refuse,
    /// Save them with TCP_REPAIR (`--tcp-established`).
    Repair,
    /// Restore them as closed sockets (`--tcp-close`).
    Close,
}

impl From<TcpMode> for files::EstablishedTcp {
    fn from(mode: TcpMode) -> Self {
        match mode {
            TcpMode::Refuse => Self::Refuse,
            TcpMode::Repair => Self::Repair,
            TcpMode::Close => Self::Close,
        }
    }
}

/// Container `name`'s state, if it is running or frozen (what checkpoint
/// and migration need).
pub(crate) fn load_live(root: &runtime::Root, name: &str) -> Result<(runtime::ContainerState, runtime::Status)> {
    let st = root.load(name)?;
    let status = st.status();
    if !status.is_live() {
        return Err(Error::NotLive {
            name: name.to_string(),
            status,
        });
    }
    Ok((st, status))
}

/// Milliseconds since `t`, as a float for reports.
pub(crate) fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Checkpoints a container into its own state directory and stops it.
pub fn suspend(root: &runtime::Root, name: &str) -> Result<checkpoint::CheckpointReport> {
    let dir = root.container_dir(name).join("image");
    let mut sink = image::store::DirSink::create(&dir, image::pages::Compression::Zstd(-1))?;
    let opts = checkpoint::CheckpointOptions {
        leave_running: false,
        record: Some(runtime::state::ImageRecord { dir, suspended: true }),
        file_cap: None,
        tcp: Default::default(),
    };
    checkpoint::checkpoint(root, name, &mut sink, &opts)
}

/// Restores a suspended container; its image is removed once it runs.
pub fn resume(root: &runtime::Root, name: &str) -> Result<restore::RestoreReport> {
    let st = root.load(name)?;
    let status = st.status();
    let dir = match (&st.image, status) {
        (Some(rec), runtime::Status::Suspended) => rec.dir.clone(),
        _ => {
            return Err(Error::NotSuspended {
                name: name.to_string(),
                status,
            })
        }
    };
    let mut src = image::store::DirSource::open(&dir)?;
    let report = restore::restore(
        root,
        &mut src,
        &restore::RestoreOptions {
            name: Some(name.to_string()),
            tcp_established: false,
            ..Default::default()
        },
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}
