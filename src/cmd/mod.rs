//! One function per subcommand: each calls the library and renders what it
//! reports. This is the only layer that prints.

mod demo;
mod image;
mod live;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use crate::cli::{Cli, Command, OciArgs, RunArgs};
use crate::runtime::{ContainerState, Root, RunSpec, Status};
use crate::{Error, Result};

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    init_tracing(cli.verbose);
    let root = || Root::open(&cli.root);
    match cli.command {
        Command::Run(args) => run_container(&root()?, args),
        Command::Ps { json } => ps(&root()?, json),
        Command::Logs { name, follow } => logs(&root()?, &name, follow),
        Command::Exec { name, command } => Ok(root()?.exec(&name, &command)?),
        Command::Freeze { name } => {
            root()?.freeze(&name)?;
            Ok(0)
        }
        Command::Thaw { name } => {
            root()?.thaw(&name)?;
            Ok(0)
        }
        Command::Rm { force, time, names } => {
            let root = root()?;
            for name in names {
                root.remove(&name, force, Duration::from_secs(time))?;
            }
            Ok(0)
        }
        Command::Checkpoint {
            name,
            oci,
            dir,
            leave_running,
            compress,
            file_cap,
            tcp_established,
            tcp_close,
            json,
        } => {
            let tcp = if tcp_established {
                crate::engine::TcpMode::Repair
            } else if tcp_close {
                crate::engine::TcpMode::Close
            } else {
                crate::engine::TcpMode::Refuse
            };
            let opts = crate::engine::checkpoint::CheckpointOptions {
                leave_running,
                record: None,
                file_cap,
                tcp,
            };
            let root = root()?;
            with_adopted(&root, &oci, &name, || {
                image::checkpoint_cmd(&root, &name, &dir, &compress, opts, json)
            })
        }
        Command::Restore {
            dir,
            name,
            tcp_established,
            runtime,
            bundle,
            runtime_root,
            check,
            verify,
            json,
        } => {
            let to = image::HandBackTo::from_args(runtime, bundle, runtime_root)?;
            let opts = image::RestoreArgs {
                name,
                tcp_established,
                check,
                verify,
                json,
            };
            image::restore_cmd(&root()?, &dir, opts, to)
        }
        Command::Suspend { name, oci, json } => {
            let root = root()?;
            with_adopted(&root, &oci, &name, || image::suspend_cmd(&root, &name, json))
        }
        Command::Resume { name, verify, json } => image::resume_cmd(&root()?, &name, verify, json),
        Command::Inspect { dir, json } => image::inspect_cmd(&dir, json),
        Command::Identity => {
            let root = root()?;
            let id = crate::transport::identity::ensure(root.dir())?;
            println!("{}", id.cert.display());
            println!("{}", id.fingerprint);
            Ok(0)
        }
        Command::Send {
            name,
            oci,
            dest,
            peer_cert,
            tcp_established,
            max_downtime,
            precopy_rounds,
            compress,
            json,
        } => {
            let compression = image::parse_compression(&compress)?;
            let opts = crate::engine::live::LiveOptions {
                max_downtime_ms: max_downtime,
                max_rounds: precopy_rounds,
                level: match compression {
                    crate::image::pages::Compression::Zstd(l) => Some(l),
                    crate::image::pages::Compression::None => None,
                },
                checkpoint: crate::engine::checkpoint::CheckpointOptions {
                    tcp: if tcp_established {
                        crate::engine::TcpMode::Repair
                    } else {
                        crate::engine::TcpMode::Refuse
                    },
                    ..Default::default()
                },
            };
            let root = root()?;
            with_adopted(&root, &oci, &name, || {
                live::send_cmd(&root, &name, &dest, &peer_cert, &opts, compression, json)
            })
        }
        Command::Recv {
            listen,
            once,
            peer_cert,
            verify,
            json,
        } => live::recv_cmd(&root()?, &listen, (once, verify), &peer_cert, json),
        Command::RestoreHelper { verify } => live::helper_cmd(&root()?, verify),
        Command::Swrk { fd } => {
            let sock = crate::sys::take_inherited_fd(fd).map_err(|e| {
                Error::Usage(format!(
                    "swrk {fd}: not an open descriptor ({e}); this command is for OCI runtimes"
                ))
            })?;
            crate::runtime::swrk::serve(sock)?;
            Ok(0)
        }
        Command::Demo => demo::run(),
    }
}

/// Runs `op` on container `name`; with --runtime, on the OCI container of
/// that ID, taken into `root` first (and dropped after, if it still runs
/// under its runtime).
fn with_adopted<T>(root: &Root, oci: &OciArgs, name: &str, op: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(rt) = &oci.runtime else {
        return op();
    };
    crate::runtime::oci::adopt(root, rt, oci.runtime_root.as_deref(), name)?;
    let result = op();
    unadopt(root, name);
    result
}

/// After an operation on an adopted OCI container that left it running
/// (a failure, or --leave-running): the runtime still owns it, so migrate's
/// record of it goes. One left frozen (a migration in doubt) keeps its
/// record, for `migrate thaw` or `migrate rm -f`.
fn unadopt(root: &Root, name: &str) {
    if let Ok(st) = root.load(name) {
        if st.oci.is_some() && st.status() == crate::runtime::Status::Running {
            root.unadopt(name);
        }
    }
}

/// "handed NAME to RUNTIME as ID (init pid N)"
fn handed_line(name: &str, h: &crate::runtime::oci::HandedBack) -> String {
    format!("handed {name} to {} as {} (init pid {})", h.runtime, h.id, h.pid)
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MIGRATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run_container(root: &Root, args: RunArgs) -> Result<i32> {
    let spec = RunSpec {
        name: args.name,
        hostname: args.hostname,
        rootfs: args.rootfs,
        init: args.init,
        limits: crate::cgroup::Limits {
            cpus: args.cpus,
            memory: args.memory,
        },
        command: args.command,
        detach: args.detach,
        net: (args.net == "bridge").then_some(crate::runtime::NetSpec {
            bridge: args.bridge,
            ip: args.ip,
            mac: args.mac,
        }),
    };
    let started = root.run(&spec)?;
    if spec.detach {
        println!("{}", started.state.name);
        return Ok(0);
    }
    Ok(root.wait_foreground(&started)?)
}

/// A container as `ps --json` prints it.
#[derive(serde::Serialize)]
struct PsEntry<'a> {
    name: &'a str,
    status: Status,
    pid: i32,
    created: u64,
    command: &'a [String],
    hostname: &'a str,
    cgroup: &'a std::path::Path,
}

fn ps(root: &Root, json: bool) -> Result<i32> {
    let list = root.list()?;
    if json {
        let entries: Vec<_> = list.iter().map(|(st, status)| ps_entry(st, *status)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("ps entries serialize")
        );
        return Ok(0);
    }
    println!(
        "{:<20} {:<10} {:>8}  {:<12} COMMAND",
        "NAME", "STATUS", "PID", "CREATED"
    );
    let now = crate::runtime::state::now_secs();
    for (st, status) in &list {
        println!(
            "{:<20} {:<10} {:>8}  {:<12} {}",
            st.name,
            status.to_string(),
            st.pid,
            ago(now.saturating_sub(st.created)),
            st.command.join(" ")
        );
    }
    Ok(0)
}

fn ps_entry(st: &ContainerState, status: Status) -> PsEntry<'_> {
    PsEntry {
        name: &st.name,
        status,
        pid: st.pid,
        created: st.created,
        command: &st.command,
        hostname: &st.hostname,
        cgroup: &st.cgroup,
    }
}

/// "5s ago", "3m ago", "2h ago", "4d ago".
fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

fn logs(root: &Root, name: &str, follow: bool) -> Result<i32> {
    let st = root.load(name)?;
    let path = root.log_path(name);
    let io = |source| Error::Io {
        what: format!("log {}", path.display()),
        source,
    };
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n > 0 {
            out.write_all(&buf[..n]).map_err(io)?;
            continue;
        }
        if !follow || !st.process_alive() {
            // One more read: what the container wrote just before it ended.
            let rest = file.read(&mut buf).map_err(io)?;
            out.write_all(&buf[..rest]).map_err(io)?;
            if rest == 0 {
                break;
            }
            continue;
        }
        out.flush().map_err(io)?;
        std::thread::sleep(Duration::from_millis(100));
        // A log truncated under us starts over.
        let pos = file.stream_position().map_err(io)?;
        if std::fs::metadata(&path).map(|m| m.len() < pos).unwrap_or(false) {
            file.seek(SeekFrom::Start(0)).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ago() {
        assert_eq!(super::ago(5), "5s ago");
        assert_eq!(super::ago(125), "2m ago");
        assert_eq!(super::ago(7200), "2h ago");
        assert_eq!(super::ago(200000), "2d ago");
    }
}
