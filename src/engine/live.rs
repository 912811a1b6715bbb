//! Live migration, the source side: pre-copy rounds while the container
//! runs, then freeze, the rest of the image, and the commit handshake.
//! The sink is the transport; this side decides what to send and when,
//! and never lets go of the container before the destination has it
//! running.

use std::time::Instant;

use nix::unistd::Pid;
use serde::Serialize;

use super::checkpoint::{self, CheckpointOptions, Seized};
use super::{ms_since, Error, Result};
use crate::image::precopy::PrecopyBatch;
use crate::image::store::ImageSink;
use crate::kinds::precopy::{self, Tracked};
use crate::kinds::{memory, remote::Remote};
use crate::proc;
use crate::runtime::{Root, FREEZE_TIMEOUT};
use crate::sys::ptrace;

/// The section that carries the container's log.
pub const LOG_SECTION: &str = "log";

/// Why the destination did not confirm the commit.
#[derive(Debug)]
pub enum CommitFailure {
    /// It said it did not start the container (and removed it).
    Refused(String),
    /// Contact was lost after it was told to start: it may run there.
    Unknown(String),
}

/// A sink that is a live destination.
pub trait LiveSink: ImageSink {
    /// Sends pages ahead, while the container runs.
    fn precopy(&mut self, batch: PrecopyBatch) -> crate::image::Result<()>;
    /// Returns once the destination has everything sent so far.
    fn flush(&mut self) -> crate::image::Result<()>;
    /// Waits until the destination has rebuilt the container, stopped.
    /// Returns its restore time in milliseconds.
    fn await_ready(&mut self) -> crate::image::Result<f64>;
    /// Tells the destination to start it; returns once it runs there.
    fn commit(&mut self) -> std::result::Result<(), CommitFailure>;
    /// Bytes put on the wire so far.
    fn bytes_sent(&self) -> u64;
}

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Stop pre-copy once the rest is expected to take this long to send.
    pub max_downtime_ms: u64,
    /// At most this many pre-copy rounds; 0 is plain stop-and-copy.
    pub max_rounds: u32,
    /// zstd level for pre-copied pages (None: raw).
    pub level: Option<i32>,
    pub checkpoint: CheckpointOptions,
}

/// One pre-copy round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReport {
    pub round: u32,
    pub pages: u64,
    pub bytes: u64,
    pub ms: f64,
    /// Pages written while the round ran (the next round's work).
    pub dirty_after: u64,
}

/// What a migration did, from the source's side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveReport {
    pub name: String,
    pub total_ms: f64,
    /// From freezing the container here to its running on the destination.
    pub downtime_ms: f64,
    pub precopy_rounds: u32,
    pub precopy_ms: f64,
    pub bytes_sent: u64,
    /// Pages sent: in pre-copy rounds and in the final image.
    pub pages_sent: u64,
    /// Mapped pages never sent: untouched, or clean file pages.
    pub pages_skipped: u64,
    /// Pre-copied pages not written since, so not sent again.
    pub pages_precopied: u64,
    pub freeze_ms: f64,
    pub dump_ms: f64,
    /// Waiting for the destination to have everything, after the dump.
    pub transfer_ms: f64,
    /// The destination's restore.
    pub restore_ms: f64,
    pub processes: usize,
    pub rounds: Vec<RoundReport>,
    /// Why pre-copy was off or ended, and processes it could not track.
    pub notes: Vec<String>,
}

/// What the source reports while it works.
#[derive(Debug, Clone)]
pub enum Progress {
    Phase(&'static str),
    Round(RoundReport),
}

/// Migrates container `name` of `root` into `sink`: on success it runs at
/// the destination and is gone here; on failure it runs here as before,
/// unless contact was lost after the destination was told to start it
/// (then it is left frozen here, and the error says so).
pub fn send(
    root: &Root,
    name: &str,
    sink: &mut dyn LiveSink,
    opts: &LiveOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<LiveReport> {
    let t0 = Instant::now();
    let lock = root.lock_state()?;
    let (st, status) = super::load_live(root, name)?;
    let mut report = LiveReport {
        name: name.to_string(),
        ..Default::default()
    };
    let failed = |e: Error| Error::Failed {
        op: "migration",
        name: name.to_string(),
        kept_running: true,
        source: Box::new(e),
    };

    // Refused before anything is stopped or injected.
    checkpoint::preflight(&st, opts.checkpoint.file_cap.unwrap_or(checkpoint::DEFAULT_FILE_CAP)).map_err(failed)?;

    // Pre-copy.
    crate::fault::check("send:before-precopy").map_err(|e| failed(e.into()))?;
    let mut tracked = Vec::new();
    if opts.max_rounds == 0 {
        report.notes.push("pre-copy off: stop-and-copy".into());
    } else if status == crate::runtime::Status::Frozen {
        report.notes.push("the container is frozen: stop-and-copy".into());
    } else {
        progress(Progress::Phase("pre-copy"));
        tracked = start_tracking(&st, &mut report.notes).map_err(failed)?;
        if tracked.is_empty() {
            report
                .notes
                .push("pre-copy off: no process could be tracked; stop-and-copy".into());
        }
        let t_pre = Instant::now();
        let mut last_dirty = u64::MAX;
        let rounds = if tracked.is_empty() { 0 } else { opts.max_rounds };
        for round in 1..=rounds {
            let t = Instant::now();
            let mut r = RoundReport {
                round,
                ..Default::default()
            };
            let mut shared = std::collections::HashMap::new();
            let mut gone = Vec::new();
            for (i, p) in tracked.iter_mut().enumerate() {
                match p.round(round, opts.level, &mut shared, &mut |b| sink.precopy(b)) {
                    Ok(s) => {
                        r.pages += s.pages;
                        r.bytes += s.raw_bytes;
                    }
                    // A process that exited since (a shell's short-lived
                    // child) has nothing left to send.
                    Err(_) if !crate::proc::running(p.host) => gone.push(i),
                    Err(e) => return Err(failed(e.into())),
                }
            }
            for i in gone.into_iter().rev() {
                tracked.remove(i);
            }
            // A round ends when the destination has it: the rate below is
            // the real one, and nothing is left in flight at the freeze.
            sink.flush().map_err(|e| failed(e.into()))?;
            r.ms = ms_since(t);
            for p in &tracked {
                r.dirty_after += p.dirty_pages().unwrap_or(0);
            }
            report.pages_sent += r.pages;
            report.precopy_rounds = round;
            progress(Progress::Round(r.clone()));
            report.rounds.push(r.clone());
            // Expected time to send what is dirty now, at this round's rate.
            let rate = (r.pages.max(1) as f64) / r.ms.max(0.001);
            let expect_ms = r.dirty_after as f64 / rate;
            // A quarter of the budget: freezing, the rest of the state and
            // the restore take the rest.
            if expect_ms <= opts.max_downtime_ms as f64 / 4.0 {
                report.notes.push(format!(
                    "pre-copy converged after round {round}: {} dirty pages, about {expect_ms:.1} ms to send",
                    r.dirty_after
                ));
                break;
            }
            if r.dirty_after >= last_dirty {
                report.notes.push(format!(
                    "pre-copy stopped after round {round}: the dirty set stopped shrinking ({} pages)",
                    r.dirty_after
                ));
                break;
            }
            if round == opts.max_rounds {
                report
                    .notes
                    .push(format!("pre-copy stopped after the last round ({round})"));
            }
            last_dirty = r.dirty_after;
        }
        report.precopy_ms = ms_since(t_pre);
    }
    drop(st);
    if let Err(e) = crate::fault::check("send:after-precopy") {
        drop(tracked);
        return Err(failed(e.into()));
    }

    // Stop, and send the rest.
    progress(Progress::Phase("freeze and dump"));
    // The bulk of the log now; the rest once every task is stopped.
    let log_head = std::fs::read(root.log_path(name)).unwrap_or_default();
    let frozen = checkpoint::freeze_and_dump(root, lock, name, sink, &opts.checkpoint, tracked, Some(log_head))?;
    let t_sealed = Instant::now();
    let ck = frozen.report.clone();
    report.freeze_ms = ck.freeze_ms;
    report.dump_ms = ck.dump_ms;
    report.processes = ck.processes;
    report.pages_sent += ck.pages_stored + ck.pages_zero;
    report.pages_skipped = ck.pages_skipped;
    report.pages_precopied = ck.pages_precopied;
    progress(Progress::Phase("restore on the destination"));
    let restore_ms = match sink.await_ready() {
        Ok(ms) => ms,
        Err(e) => {
            drop(frozen);
            return Err(failed(e.into()));
        }
    };
    report.restore_ms = restore_ms;
    report.transfer_ms = (ms_since(t_sealed) - restore_ms).max(0.0);
    progress(Progress::Phase("commit"));
    if let Err(e) = crate::fault::check("send:before-commit") {
        drop(frozen);
        return Err(failed(e.into()));
    }
    match sink.commit() {
        Ok(()) => {}
        Err(CommitFailure::Refused(why)) => {
            drop(frozen);
            return Err(failed(Error::Stage {
                phase: "commit",
                message: why,
            }));
        }
        Err(CommitFailure::Unknown(why)) => {
            frozen.keep_frozen();
            return Err(Error::InDoubt {
                name: name.to_string(),
                reason: why,
            });
        }
    }
    let t_freeze = frozen.t0;
    report.downtime_ms = ms_since(t_freeze);
    frozen.kill(None)?;
    report.bytes_sent = sink.bytes_sent();
    report.total_ms = ms_since(t0);
    Ok(report)
}

/// Injects a userfaultfd into every process of the container and starts
/// dirty tracking. A process that can not be tracked is sent whole at the
/// end (with a note).
fn start_tracking(st: &crate::runtime::ContainerState, notes: &mut Vec<String>) -> Result<Vec<Tracked>> {
    let tree = proc::walk(st.pid)?;
    let cg = st.cgroup();
    cg.set_frozen(true, FREEZE_TIMEOUT)?;
    let mut seized = Seized::default();
    let mut procs = Vec::new();
    for host in tree {
        let Ok(status) = proc::read_status(host) else {
            continue;
        };
        if status.state == 'Z' {
            continue;
        }
        let p = Pid::from_raw(host);
        if ptrace::seize(p, ptrace::seize_options(false, false)).is_ok() {
            seized.tids.push((host, Vec::new()));
            let _ = ptrace::interrupt(p);
            procs.push((host, status.ns_pid));
        }
    }
    let thawed = cg.set_frozen(false, FREEZE_TIMEOUT);
    let mut out = Vec::new();
    let mut stopped = Vec::new();
    for entry in seized.tids.iter_mut() {
        match ptrace::wait_stop(Pid::from_raw(entry.0)) {
            Ok(held) => {
                entry.1 = held;
                stopped.push(entry.0);
            }
            Err(e) => notes.push(format!("process {}: not tracked ({e}); sent whole at the end", entry.0)),
        }
    }
    thawed?;
    for (host, ns) in procs {
        if !stopped.contains(&host) {
            continue;
        }
        let tracked = memory::mappings_fast(host).map_err(Error::from).and_then(|maps| {
            let ip = memory::syscall_ip(host, &maps)?;
            let remote = Remote::new(host, host, ip)?;
            Ok(precopy::track(&remote, &maps, ns)?)
        });
        match tracked {
            Ok(t) => out.push(t),
            Err(e) => notes.push(format!(
                "process {ns} (host {host}): not tracked ({e}); sent whole at the end"
            )),
        }
    }
    seized.detach_all();
    Ok(out)
}
