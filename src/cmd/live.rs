//! send, recv and the restore helper: call the transport, render progress
//! (a bar on a terminal) and the final stats.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::image::print_json;
use crate::engine::live::{LiveOptions, Progress};
use crate::image::pages::Compression;
use crate::runtime::Root;
use crate::transport::recv::{self, Event, RecvOptions};
use crate::{Error, Result};

const MIB: f64 = 1024.0 * 1024.0;

fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn send_cmd(
    root: &Root,
    name: &str,
    dest: &str,
    peer_certs: &[PathBuf],
    opts: &LiveOptions,
    compression: Compression,
    json: bool,
) -> Result<i32> {
    let peers = crate::transport::tls::trusted(root.dir(), peer_certs)?;
    let bar = spinner();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut on = |p: Progress| match p {
        Progress::Phase(phase) => bar.set_message(format!("{name}: {phase}")),
        Progress::Round(r) => {
            sent += r.bytes;
            let secs = t0.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{name}: pre-copy round {}: {:.1} MiB sent, {:.0} MiB/s, {} pages dirty",
                r.round,
                sent as f64 / MIB,
                sent as f64 / MIB / secs,
                r.dirty_after
            ));
        }
    };
    let result = crate::transport::send::migrate(root, name, dest, peers, opts, compression, &mut on);
    bar.finish_and_clear();
    let r = result?;
    if json {
        print_json(&r);
    } else {
        println!(
            "migrated {name} to {dest}: downtime {:.0} ms, total {:.0} ms; {} pre-copy rounds, {:.1} MiB sent, {} pages sent, {} not resent",
            r.downtime_ms,
            r.total_ms,
            r.precopy_rounds,
            r.bytes_sent as f64 / MIB,
            r.pages_sent,
            r.pages_precopied
        );
        for n in &r.notes {
            println!("  note: {n}");
        }
    }
    Ok(0)
}

/// `migrate recv`; `(once, verify)` as its options say.
pub fn recv_cmd(
    root: &Root,
    listen: &str,
    (once, verify): (bool, bool),
    peer_certs: &[PathBuf],
    json: bool,
) -> Result<i32> {
    let peers = crate::transport::tls::trusted(root.dir(), peer_certs)?;
    let listen = crate::transport::send::resolve(listen)?;
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "find this program".into(),
        source,
    })?;
    let opts = RecvOptions {
        listen,
        once,
        exe,
        verify,
    };
    let mut bar: Option<(ProgressBar, Instant)> = None;
    let mut on = |e: Event| match e {
        Event::Listening(addr) => eprintln!("migrate: listening on {addr}"),
        Event::Rejected { peer, reason } => eprintln!("migrate: turned away {peer}: {reason}"),
        Event::Started { peer, name } => {
            let b = spinner();
            b.set_message(format!("{name} from {peer}: receiving"));
            bar = Some((b, Instant::now()));
        }
        Event::Received { bytes } => {
            if let Some((b, t)) = &bar {
                let secs = t.elapsed().as_secs_f64().max(0.001);
                b.set_message(format!(
                    "receiving: {:.1} MiB, {:.0} MiB/s",
                    bytes as f64 / MIB,
                    bytes as f64 / MIB / secs
                ));
            }
        }
        Event::Finished(r) => {
            if let Some((b, _)) = bar.take() {
                b.finish_and_clear();
            }
            if json {
                print_json(&r);
            } else if r.committed {
                println!(
                    "received {} from {}: running; restore {:.0} ms, total {:.0} ms, {:.1} MiB",
                    r.name,
                    r.peer,
                    r.restore_ms,
                    r.total_ms,
                    r.bytes_received as f64 / MIB
                );
                if let Some(h) = &r.handed_back {
                    println!("{}", super::handed_line(&r.name, h));
                }
                if let Some(e) = &r.handback_error {
                    eprintln!("migrate: {e}");
                }
            } else {
                println!(
                    "migration of {} from {} failed, nothing kept: {}",
                    r.name,
                    r.peer,
                    r.error.as_deref().unwrap_or("unknown")
                );
            }
        }
    };
    let last = recv::serve(root.dir(), peers, &opts, &mut on)?;
    Ok(match last {
        Some(r) if r.committed => 0,
        Some(_) => 1,
        None => 0,
    })
}

pub fn helper_cmd(root: &Root, verify: bool) -> Result<i32> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    match crate::transport::helper::serve(root, &mut stdin.lock(), &mut stdout.lock(), verify) {
        Ok(_) => Ok(0),
        Err(e) => {
            tracing::info!("restore helper: {e}");
            Ok(1)
        }
    }
}
