//! checkpoint, restore, suspend, resume and inspect: call the engine, render
//! its reports.

use std::path::{Path, PathBuf};

use crate::engine::checkpoint::{checkpoint, CheckpointOptions, CheckpointReport};
use crate::engine::restore::{restore, RestoreOptions, RestoreReport};
use crate::image::pages::Compression;
use crate::image::store::{DirSink, DirSource};
use crate::runtime::oci::{self, HandedBack, OciOrigin};
use crate::runtime::state::ImageRecord;
use crate::runtime::Root;
use crate::{Error, Result};

const MIB: f64 = 1024.0 * 1024.0;

pub fn parse_compression(s: &str) -> Result<Compression> {
    if s == "none" {
        return Ok(Compression::None);
    }
    match s.parse::<i32>() {
        Ok(level) if (-7..=19).contains(&level) => Ok(Compression::Zstd(level)),
        _ => Err(Error::Usage(format!(
            "--compress takes a zstd level from -7 to 19, or none (got {s:?})"
        ))),
    }
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("reports serialize"));
}

fn render_checkpoint(name: &str, r: &CheckpointReport, dir: &Path, json: bool) {
    if json {
        return print_json(r);
    }
    let secs = r.total_ms / 1000.0;
    println!(
        "checkpointed {name}: {} processes, {} threads, {:.1} MiB of memory in {:.0} ms ({:.2} GB/s); image {:.1} MiB in {}",
        r.processes,
        r.threads,
        r.resident_bytes as f64 / MIB,
        r.total_ms,
        if secs > 0.0 { r.resident_bytes as f64 / secs / 1e9 } else { 0.0 },
        r.image_bytes as f64 / MIB,
        dir.display()
    );
}

fn render_restore(r: &RestoreReport, json: bool) {
    if json {
        return print_json(r);
    }
    println!(
        "restored {}: {} processes, {} threads, {:.1} MiB of pages in {:.0} ms (host pid {})",
        r.name,
        r.processes,
        r.threads,
        r.pages as f64 * 4096.0 / MIB,
        r.total_ms,
        r.pid
    );
}

pub fn checkpoint_cmd(
    root: &Root,
    name: &str,
    dir: &Path,
    compress: &str,
    mut opts: CheckpointOptions,
    json: bool,
) -> Result<i32> {
    let dir = absolute(dir);
    let mut sink = DirSink::create(&dir, parse_compression(compress)?)?;
    opts.record = Some(ImageRecord {
        dir: dir.clone(),
        suspended: false,
    });
    let r = checkpoint(root, name, &mut sink, &opts)?;
    render_checkpoint(name, &r, &dir, json);
    Ok(0)
}

/// Where a restored container goes: restore's --runtime and --bundle.
pub enum HandBackTo {
    /// The runtime it was taken from, if any.
    Origin,
    /// Stays under migrate.
    Migrate,
    /// This runtime, with this bundle and state directory (None: the
    /// ones it was taken from).
    Runtime(String, Option<PathBuf>, Option<PathBuf>),
}

impl HandBackTo {
    pub fn from_args(runtime: Option<String>, bundle: Option<PathBuf>, state_root: Option<PathBuf>) -> Result<Self> {
        match (runtime.as_deref(), bundle) {
            (None, None) => Ok(Self::Origin),
            (Some("none"), None) if state_root.is_none() => Ok(Self::Migrate),
            (Some("none"), _) => Err(Error::Usage(
                "--bundle and --runtime-root go with --runtime runc or crun".into(),
            )),
            (None, Some(_)) => Err(Error::Usage(
                "--bundle needs --runtime (runc or crun) to hand the container to".into(),
            )),
            (Some(rt), bundle) => Ok(Self::Runtime(
                rt.to_string(),
                bundle.map(|b| absolute(&b)),
                state_root.map(|r| absolute(&r)),
            )),
        }
    }
}

/// Hands restored container `name` to its OCI runtime, if `to` says so
/// (or it came from one).
fn hand_back(root: &Root, name: &str, to: &HandBackTo) -> Result<Option<HandedBack>> {
    let over = match to {
        HandBackTo::Migrate => return Ok(None),
        HandBackTo::Origin => return Ok(oci::hand_back_if_adopted(root, name)?),
        HandBackTo::Runtime(rt, bundle, state_root) => {
            let origin = root.load(name)?.oci;
            let bundle = bundle
                .clone()
                .or_else(|| origin.as_ref().map(|o| o.bundle.clone()))
                .ok_or_else(|| Error::Usage(format!("{name} was not taken from an OCI runtime: --bundle is needed")))?;
            Some(OciOrigin {
                runtime: rt.clone(),
                net: origin.as_ref().map(|o| o.net.clone()).unwrap_or_default(),
                state_root: state_root
                    .clone()
                    .or_else(|| origin.as_ref().and_then(|o| o.state_root.clone())),
                id: origin.map(|o| o.id).unwrap_or_else(|| name.to_string()),
                bundle,
            })
        }
    };
    Ok(Some(oci::hand_back(root, name, over.as_ref())?))
}

/// A restore's report and, if it went to an OCI runtime, where.
#[derive(serde::Serialize)]
struct Restored<'a> {
    #[serde(flatten)]
    report: &'a RestoreReport,
    handed_back: Option<HandedBack>,
    handback_error: Option<String>,
}

fn finish_restore(root: &Root, r: &RestoreReport, to: &HandBackTo, json: bool) -> Result<i32> {
    // Asked for, a hand-back that fails is an error; by default (back
    // where it came from) a warning: the container runs either way.
    let (handed_back, handback_error) = match hand_back(root, &r.name, to) {
        Ok(h) => (h, None),
        Err(e) if matches!(to, HandBackTo::Origin) => (None, Some(e.to_string())),
        Err(e) => {
            render_restore(r, json);
            return Err(e);
        }
    };
    if json {
        print_json(&Restored {
            report: r,
            handed_back,
            handback_error,
        });
        return Ok(0);
    }
    render_restore(r, false);
    if let Some(h) = handed_back {
        println!("{}", super::handed_line(&r.name, &h));
    }
    if let Some(e) = handback_error {
        eprintln!("migrate: warning: {e}");
    }
    Ok(0)
}

/// restore's options besides where the container goes.
pub struct RestoreArgs {
    pub name: Option<String>,
    pub tcp_established: bool,
    pub check: bool,
    pub verify: bool,
    pub json: bool,
}

pub fn restore_cmd(root: &Root, dir: &Path, args: RestoreArgs, to: HandBackTo) -> Result<i32> {
    let RestoreArgs {
        name,
        tcp_established,
        check,
        verify,
        json,
    } = args;
    let mut src = DirSource::open(dir)?;
    let opts = RestoreOptions {
        name,
        tcp_established,
        verify,
        ..Default::default()
    };
    if check {
        let prepared = crate::engine::restore::prepare(root, &mut src, &opts)?;
        let r = prepared.report().clone();
        drop(prepared);
        if json {
            print_json(&r);
        } else {
            println!(
                "{} restores here: {} processes, {} threads rebuilt and discarded, not started",
                r.name, r.processes, r.threads
            );
        }
        return Ok(0);
    }
    let r = restore(root, &mut src, &opts)?;
    finish_restore(root, &r, &to, json)
}

pub fn suspend_cmd(root: &Root, name: &str, json: bool) -> Result<i32> {
    let r = crate::engine::suspend(root, name)?;
    render_checkpoint(name, &r, &root.container_dir(name).join("image"), json);
    Ok(0)
}

pub fn resume_cmd(root: &Root, name: &str, verify: bool, json: bool) -> Result<i32> {
    let r = crate::engine::resume(root, name, verify)?;
    finish_restore(root, &r, &HandBackTo::Origin, json)
}

pub fn inspect_cmd(dir: &Path, json: bool) -> Result<i32> {
    let i = crate::engine::inspect::inspect(dir)?;
    if json {
        print_json(&i);
        return Ok(0);
    }
    println!(
        "image of {} (hostname {}), written on {} {}",
        i.container, i.hostname, i.machine.kernel, i.machine.arch
    );
    println!("command: {}", i.command.join(" "));
    if let Some(o) = &i.oci {
        println!("taken from {} as {} (bundle {})", o.runtime, o.id, o.bundle.display());
    }
    for t in &i.tmpfs {
        println!(
            "tmpfs {} ({}): {} entries, {} bytes of files",
            t.target, t.options, t.entries, t.bytes
        );
    }
    println!("files:");
    for f in &i.files {
        println!("  {:<10} {:>12} bytes", f.name, f.len);
    }
    println!("processes:");
    for p in &i.processes {
        let state = match p.zombie {
            Some(s) => format!("zombie (status {s})"),
            None => format!("threads {:?}", p.threads),
        };
        println!(
            "  pid {} (host {}) ppid {} pgid {} sid {} {}: {}",
            p.pid, p.host_pid, p.ppid, p.pgid, p.sid, p.comm, state
        );
        for m in &p.mappings {
            println!(
                "    {:012x}-{:012x} {}{} {:>9} KiB, {:>7} pages stored  {}",
                m.start,
                m.end,
                m.prot,
                if m.shared { 's' } else { 'p' },
                (m.end - m.start) / 1024,
                m.stored_pages,
                m.backing
            );
        }
    }
    Ok(0)
}
