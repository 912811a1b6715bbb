//! The engine: checkpoint (in phases) and restore (in stages). It reads and
//! writes images through sinks and sources, and reports what it did; it
//! never prints.

pub mod checkpoint;
pub mod inspect;
pub mod live;
pub mod restore;
pub mod verify;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::Limits;
use crate::kinds::{creds, files, memory, mounts, precopy, pstree, regs, remote, timens, timers, Kind};
use crate::sys::Errno;
use crate::{cgroup, image, runtime};

/// One section of an image, as [`SECTIONS`] lists it.
#[derive(Debug, Clone, Copy)]
pub struct SectionInfo {
    pub name: &'static str,
    /// The layout this build writes.
    pub version: u32,
    /// The oldest image format that holds it.
    pub since_format: u32,
    /// Decodes the section's bytes and validates what they hold, as a
    /// restore does before it creates anything.
    pub check: fn(&[u8]) -> Result<()>,
}

const fn info<K: Kind>() -> SectionInfo
where
    Error: From<K::Error>,
{
    SectionInfo {
        name: K::SECTION,
        version: K::VERSION,
        since_format: K::SINCE_FORMAT,
        check: check_section::<K>,
    }
}

/// Every kind of state with a section of its own, once: a checkpoint
/// writes each, a restore reads each and refuses an image holding any
/// other (state it would drop). Adding a kind adds its line here.
pub const SECTIONS: &[SectionInfo] = &[
    info::<Container>(),
    info::<pstree::Section>(),
    info::<memory::Section>(),
    info::<crate::kinds::signals::Section>(),
    info::<files::Section>(),
    info::<mounts::Section>(),
    info::<crate::kinds::procattrs::Section>(),
    info::<crate::kinds::prctls::Section>(),
    info::<crate::kinds::policies::Section>(),
    info::<crate::kinds::uts::Section>(),
    info::<crate::kinds::ipcns::Section>(),
    info::<crate::kinds::fdattrs::Section>(),
    info::<memory::Ghosts>(),
];

/// The other files an image holds: its manifest, its page stream, and a
/// live migration's log.
pub const OTHER_FILES: &[&str] = &[image::MANIFEST, image::store::PAGES, live::LOG_SECTION];

fn check_section<K: Kind>(bytes: &[u8]) -> Result<()>
where
    Error: From<K::Error>,
{
    K::validate(&K::decode(bytes)?)?;
    Ok(())
}

/// Writes the section of kind `K`.
pub(crate) fn put<K: Kind>(sink: &mut dyn image::store::ImageSink, state: &K::State) -> Result<()> {
    Ok(sink.put(K::SECTION, &K::encode(state))?)
}

/// Reads the section of kind `K`, decoded and validated.
pub(crate) fn get<K: Kind>(src: &mut dyn image::store::ImageSource) -> Result<K::State>
where
    Error: From<K::Error>,
{
    let state = K::decode(&src.get(K::SECTION)?)?;
    K::validate(&state)?;
    Ok(state)
}

/// [`get`], or `None` for an image of a format from before the section.
pub(crate) fn get_since<K: Kind>(src: &mut dyn image::store::ImageSource) -> Result<Option<K::State>>
where
    Error: From<K::Error>,
{
    let listed = src.manifest().files.iter().any(|f| f.name == K::SECTION);
    if !listed && K::SINCE_FORMAT > image::OLDEST_FORMAT_VERSION {
        return Ok(None);
    }
    get::<K>(src).map(Some)
}

/// Refuses an image holding a file that is none of [`SECTIONS`] and
/// [`OTHER_FILES`]: state of a kind this build does not know, which a
/// restore would drop.
pub fn refuse_unknown_sections(manifest: &image::Manifest) -> Result<()> {
    match manifest
        .files
        .iter()
        .find(|f| !SECTIONS.iter().any(|s| s.name == f.name) && !OTHER_FILES.contains(&f.name.as_str()))
    {
        Some(f) => Err(Error::UnknownSection { name: f.name.clone() }),
        None => Ok(()),
    }
}

/// The section `container`: what the image records about the container
/// itself.
pub struct Container;

impl Kind for Container {
    const SECTION: &'static str = "container";
    const VERSION: u32 = 4;
    type State = ContainerImage;
    type Error = ContainerError;

    /// The sysctls are written under /proc/sys by the restored PID 1: only
    /// the network namespace's own that a checkpoint carries, since a
    /// global one (kernel.core_pattern...) would be the host's.
    fn validate(c: &ContainerImage) -> std::result::Result<(), ContainerError> {
        c.clocks.check()?;
        match c
            .sysctls
            .iter()
            .find(|(k, v)| !crate::net::is_carried_sysctl(k) || v.len() > 4096)
        {
            Some((k, _)) => Err(ContainerError::Sysctl { key: k.clone() }),
            None => Ok(()),
        }
    }
}

/// What [`Container::validate`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Clocks(#[from] timens::Error),
    #[error("section container holds sysctl {key:?}, which is not one of the network namespace's own that migrate carries; the image is damaged")]
    Sysctl { key: String },
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
    Container(#[from] ContainerError),
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
    Ipc(#[from] crate::kinds::ipcns::Error),
    #[error(transparent)]
    Multicast(#[from] crate::kinds::multicast::Error),
    #[error(transparent)]
    Prctls(#[from] crate::kinds::prctls::Error),
    #[error(transparent)]
    Policies(#[from] crate::kinds::policies::Error),
    #[error(transparent)]
    Verify(#[from] verify::Error),
    #[error(transparent)]
    FdAttrs(#[from] crate::kinds::fdattrs::Error),
    #[error(transparent)]
    Fault(#[from] crate::fault::Injected),
    #[error("process {pid} (pid {ns_pid} in the container) shares {what} with process {other} ({flag}), which migrate does not carry yet")]
    SharedWithProcess {
        pid: i32,
        ns_pid: i32,
        other: i32,
        what: &'static str,
        flag: &'static str,
    },
    #[error("image section {section}: process {pid}: {what}; the image is damaged")]
    Damaged {
        section: &'static str,
        pid: i32,
        what: &'static str,
    },
    #[error("the image holds section {name}, which this build of migrate does not know (a newer one wrote it?); restoring without it would lose state")]
    UnknownSection { name: String },
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
/// Restores suspended container `name` (checking the restored processes
/// against the image first with `verify`, see [`verify`]).
pub fn resume(root: &runtime::Root, name: &str, verify: bool) -> Result<restore::RestoreReport> {
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
            verify,
            ..Default::default()
        },
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(names: &[&str]) -> image::Manifest {
        image::Manifest {
            machine: image::MachineFacts::of_this_machine(0),
            created: 0,
            container: "c".into(),
            files: names
                .iter()
                .map(|n| image::FileEntry {
                    name: n.to_string(),
                    len: 0,
                    crc32: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn only_the_network_sysctls_carried_are_valid() {
        let image = |key: &str| ContainerImage {
            name: "c".into(),
            hostname: "c".into(),
            rootfs: None,
            init: false,
            command: vec![],
            limits: Default::default(),
            created: 0,
            clocks: timens::Clocks {
                monotonic_ns: 1,
                boottime_ns: 1,
            },
            net: None,
            sysctls: vec![(key.into(), "1".into())],
            oci: None,
        };
        assert!(Container::validate(&image("net/core/somaxconn")).is_ok());
        assert!(Container::validate(&image("net/unix/max_dgram_qlen")).is_ok());
        for bad in [
            "kernel/core_pattern",
            "net/../kernel/core_pattern",
            "/proc/sys/vm/overcommit_memory",
            "net/ipv4/conf/eth0/forwarding",
            "net//core",
        ] {
            assert!(
                matches!(Container::validate(&image(bad)), Err(ContainerError::Sysctl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn each_section_is_listed_once() {
        let mut names: Vec<&str> = SECTIONS
            .iter()
            .map(|s| s.name)
            .chain(OTHER_FILES.iter().copied())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name is listed twice: {names:?}");
        for s in SECTIONS {
            assert!(s.since_format >= image::OLDEST_FORMAT_VERSION && s.since_format <= image::FORMAT_VERSION);
            assert!(s.version >= s.since_format, "{}", s.name);
            // Bytes that are no section are refused by each.
            assert!((s.check)(b"").is_err(), "{}", s.name);
            assert!(
                (s.check)(&image::encode_section_at(s.version + 1, &0u8)).is_err(),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn an_image_with_a_section_this_build_does_not_know_is_refused() {
        let known: Vec<&str> = SECTIONS
            .iter()
            .map(|s| s.name)
            .chain(OTHER_FILES.iter().copied())
            .collect();
        refuse_unknown_sections(&manifest(&known)).unwrap();
        let mut more = known.clone();
        more.push("sockets");
        assert!(matches!(
            refuse_unknown_sections(&manifest(&more)),
            Err(Error::UnknownSection { name }) if name == "sockets"
        ));
    }

    #[test]
    fn a_section_reads_back_what_was_written_and_is_validated() {
        let tree: Vec<pstree::ProcessImage> = Vec::new();
        let bytes = <pstree::Section as Kind>::encode(&tree);
        assert_eq!(<pstree::Section as Kind>::decode(&bytes).unwrap(), tree);
        // An empty tree decodes, and is refused by the kind's check.
        let check = SECTIONS.iter().find(|s| s.name == "pstree").unwrap().check;
        assert!(matches!(check(&bytes), Err(Error::Pstree(_))));
    }
}
