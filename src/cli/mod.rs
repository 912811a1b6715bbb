//! The command line, as clap structs. Nothing else lives here: the commands
//! are carried out in `crate::cmd`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "migrate", version, about = "Container checkpoint/restore and live migration")]
pub struct Cli {
    /// Directory holding all state: containers, logs, images. Two roots on
    /// one machine never share anything.
    #[arg(long, global = true, default_value = crate::runtime::DEFAULT_ROOT, env = "MIGRATE_ROOT")]
    pub root: PathBuf,

    /// More detail on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a container in new PID, mount, UTS, IPC, network, cgroup and time namespaces.
    Run(RunArgs),
    /// List containers.
    Ps {
        /// Print a JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a container's log (its stdout and stderr).
    Logs {
        name: String,
        /// Keep printing what the container writes, until it stops.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command inside a running container.
    Exec {
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Freeze every process of a container (cgroup.freeze).
    Freeze { name: String },
    /// Thaw a frozen container.
    Thaw { name: String },
    /// Stop containers and remove their cgroup and state.
    Rm {
        /// Kill at once with SIGKILL instead of SIGTERM and a grace period.
        #[arg(short, long)]
        force: bool,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Save a container to an image directory (and stop it, unless --leave-running).
    Checkpoint {
        name: String,
        #[command(flatten)]
        oci: OciArgs,
        /// Image directory to write.
        #[arg(long)]
        dir: PathBuf,
        /// Keep the container running after the checkpoint.
        #[arg(long)]
        leave_running: bool,
        /// Page compression: a zstd level (-7..19) or `none`. The default,
        /// -1, keeps up with memory reads; higher levels make smaller
        /// images more slowly.
        #[arg(long, default_value = "-1", allow_hyphen_values = true)]
        compress: String,
        /// Largest file carried in the image (deleted-but-open files,
        /// memfds): bytes, or with a K, M or G suffix. Default 64M.
        #[arg(long, value_parser = crate::cgroup::parse_bytes)]
        file_cap: Option<u64>,
        /// Save established TCP connections (TCP_REPAIR); restore with --tcp-established too.
        #[arg(long, conflicts_with = "tcp_close")]
        tcp_established: bool,
        /// Restore established TCP connections as closed sockets.
        #[arg(long)]
        tcp_close: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring a container back from an image directory.
    Restore {
        /// Image directory to read.
        #[arg(long)]
        dir: PathBuf,
        /// Restore under this name instead of the image's.
        #[arg(long)]
        name: Option<String>,
        /// Restore the established TCP connections the image holds.
        #[arg(long)]
        tcp_established: bool,
        /// Hand the restored container to this OCI runtime (runc or crun),
        /// or keep it under migrate (none). Default: the runtime it was
        /// taken from, if any.
        #[arg(long)]
        runtime: Option<String>,
        /// With --runtime: the container's bundle (config.json and rootfs).
        /// Default: the bundle it was taken from.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// With --runtime: the runtime's state directory, if not its
        /// default. Default: the one it was taken from.
        #[arg(long, requires = "runtime")]
        runtime_root: Option<PathBuf>,
        /// Only check that the image restores here: rebuild everything,
        /// then discard it without starting it.
        #[arg(long)]
        check: bool,
        /// Before the container runs, read its processes' kernel state back
        /// (threads, mappings, fds with their flags and offsets) and fail,
        /// removing it, if it differs from the image.
        #[arg(long, env = "MIGRATE_VERIFY", value_parser = clap::builder::FalseyValueParser::new())]
        verify: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checkpoint a container into its own state directory and stop it.
    Suspend {
        name: String,
        #[command(flatten)]
        oci: OciArgs,
        #[arg(long)]
        json: bool,
    },
    /// Restore a suspended container.
    Resume {
        name: String,
        /// As restore --verify.
        #[arg(long, env = "MIGRATE_VERIFY", value_parser = clap::builder::FalseyValueParser::new())]
        verify: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show what an image holds, without restoring it.
    Inspect {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print this root's certificate path and its SHA-256 fingerprint
    /// (made on first use), for peers to pin.
    Identity,
    /// Live-migrate a container to a receiver (`migrate recv`): memory is
    /// pre-copied while it runs, then it is frozen, the rest is sent, and it
    /// is removed here once it runs there. On any failure before that it
    /// keeps running here.
    Send {
        name: String,
        /// The receiver, HOST:PORT.
        dest: String,
        #[command(flatten)]
        oci: OciArgs,
        /// The receiver's certificate (`migrate identity` there), pinned.
        /// Also trusted: every file in ROOT/trusted/.
        #[arg(long = "peer-cert")]
        peer_cert: Vec<PathBuf>,
        /// Carry established TCP connections (TCP_REPAIR).
        #[arg(long)]
        tcp_established: bool,
        /// Downtime to aim for (ms): pre-copy goes on until the pages
        /// still dirty would take a quarter of it to send (the rest is for
        /// the other state and the restore), or stop shrinking.
        #[arg(long, default_value_t = 100)]
        max_downtime: u64,
        /// At most this many pre-copy rounds; 0 for plain stop-and-copy.
        #[arg(long, default_value_t = 8)]
        precopy_rounds: u32,
        /// Page compression: a zstd level (-7..19) or `none`.
        #[arg(long, default_value = "-1", allow_hyphen_values = true)]
        compress: String,
        /// Print one final stats document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Receive live migrations from pinned peers and restore them under this root.
    Recv {
        /// Address to listen on, ADDR:PORT (UDP).
        #[arg(long)]
        listen: String,
        /// Exit after one migration: status 0 if it committed.
        #[arg(long)]
        once: bool,
        /// A sender's certificate (`migrate identity` there), pinned.
        /// Also trusted: every file in ROOT/trusted/.
        #[arg(long = "peer-cert")]
        peer_cert: Vec<PathBuf>,
        /// As restore --verify, for each container received.
        #[arg(long, env = "MIGRATE_VERIFY", value_parser = clap::builder::FalseyValueParser::new())]
        verify: bool,
        /// Print each migration's stats as a JSON document.
        #[arg(long)]
        json: bool,
    },
    /// (Internal) the receiver's restore helper: reads one migration on
    /// stdin.
    #[command(hide = true)]
    RestoreHelper {
        #[arg(long)]
        verify: bool,
    },
    /// (Internal) stands in for `criu swrk FD` when an OCI runtime takes a
    /// restored container back.
    #[command(hide = true)]
    Swrk { fd: i32 },
    /// Show what migrate does, on a sample container, with no other input.
    Demo,
}

/// Naming a container an OCI runtime started.
#[derive(Debug, Clone, clap::Args)]
pub struct OciArgs {
    /// The container was started by this OCI runtime (runc or crun):
    /// NAME is its ID there. It is taken over into this root.
    #[arg(long)]
    pub runtime: Option<String>,
    /// The runtime's state directory, if not its default (`--root` of
    /// runc and crun: Docker's runc uses /run/docker/runtime-runc/moby).
    #[arg(long, requires = "runtime")]
    pub runtime_root: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run in the background; output goes to the container's log.
    #[arg(short, long)]
    pub detach: bool,
    /// The container's name (also its default hostname).
    #[arg(long)]
    pub name: String,
    /// Hostname inside the container (default: the name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Directory to use as the container's root filesystem (pivot_root).
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Run a small built-in init as PID 1 that reaps zombies and forwards SIGTERM/SIGINT.
    #[arg(long)]
    pub init: bool,
    /// CPU limit in CPUs (cpu.max), e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit (memory.max): bytes, or with a K, M or G suffix.
    #[arg(long, value_parser = crate::cgroup::parse_bytes)]
    pub memory: Option<u64>,
    /// Networking: `none` (loopback only) or `bridge` (a veth on a host
    /// bridge, eth0 inside with an address and a default route).
    #[arg(long, default_value = "none", value_parser = ["none", "bridge"])]
    pub net: String,
    /// The host bridge for --net bridge (made on demand, 10.89.0.1/24).
    #[arg(long, default_value = crate::net::DEFAULT_BRIDGE)]
    pub bridge: String,
    /// eth0's address for --net bridge, e.g. 10.89.0.5/24 (default: the first free one).
    #[arg(long, value_parser = crate::net::parse_cidr)]
    pub ip: Option<(std::net::Ipv4Addr, u8)>,
    /// eth0's MAC address for --net bridge (default: derived from the address).
    #[arg(long, value_parser = crate::net::parse_mac)]
    pub mac: Option<[u8; 6]>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}
