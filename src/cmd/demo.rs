//! `migrate demo`: the README's first command. With no other input it starts
//! a sample container, shows it working, freezes and thaws it, suspends
//! and resumes it, live-migrates it to a second root over loopback QUIC,
//! and cleans up. Every step is checked; the demo fails loudly if one does not hold.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::runtime::{Root, RunSpec, Status};
use crate::{Error, Result};

const NAME: &str = "counter";
const SCRIPT: &str = "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done";

/// Removes the demo's root, and any container left in it, on every exit path.
struct DemoRoot {
    root: Root,
    dir: PathBuf,
}

impl Drop for DemoRoot {
    fn drop(&mut self) {
        let _ = self.root.remove(NAME, true, Duration::ZERO);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(ok: bool, what: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Demo(what.into()))
    }
}

/// The "tick N" numbers of the log.
fn ticks(root: &Root) -> Vec<u64> {
    std::fs::read_to_string(root.log_path(NAME))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .collect()
}

/// The last "tick N" in the log.
fn last_tick(root: &Root) -> u64 {
    ticks(root).last().copied().unwrap_or(0)
}

/// The log counts 1, 2, 3... with nothing skipped or repeated.
fn check_ticks(root: &Root, what: &str) -> Result<()> {
    let t = ticks(root);
    check(t == (1..=t.len() as u64).collect::<Vec<_>>(), what)
}

fn wait_for_tick(root: &Root, at_least: u64) -> Result<u64> {
    let start = Instant::now();
    loop {
        let t = last_tick(root);
        if t >= at_least {
            return Ok(t);
        }
        check(
            start.elapsed() < Duration::from_secs(10),
            format!("the counter did not reach {at_least} (at {t})"),
        )?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run() -> Result<i32> {
    let dir = std::env::temp_dir().join(format!("migrate-demo-{}", std::process::id()));
    let demo = DemoRoot {
        root: Root::open(&dir)?,
        dir,
    };
    let root = &demo.root;
    println!("migrate demo (state in {})", root.dir().display());
    println!();

    println!("1. run -d --name {NAME} -- sh -c '{SCRIPT}'");
    let started = root.run(&RunSpec {
        name: NAME.into(),
        command: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        detach: true,
        ..Default::default()
    })?;
    let t = wait_for_tick(root, 3)?;
    println!(
        "   running as host pid {} (PID 1 in its own PID namespace), cgroup {}",
        started.state.pid,
        started.state.cgroup.display()
    );
    println!("   log: tick {t}");

    let inside = exec_capture(root, &["sh", "-c", "echo pid=$$ host=$(cat /proc/sys/kernel/hostname)"])?;
    println!("2. exec -- sh -c 'echo pid=$$ host=$(hostname)'  ->  {}", inside.trim());
    check(
        inside.contains(&format!("host={NAME}")),
        "exec did not see the container's hostname",
    )?;

    println!("3. freeze");
    root.freeze(NAME)?;
    let frozen_at = last_tick(root);
    std::thread::sleep(Duration::from_secs(1));
    let still = last_tick(root);
    let status = root.load(NAME)?.status();
    println!("   status {status}; counter at {frozen_at}, one second later still {still}");
    check(
        status == Status::Frozen && still == frozen_at,
        "the frozen container kept counting",
    )?;

    println!("4. thaw");
    root.thaw(NAME)?;
    let moved = wait_for_tick(root, still + 3)?;
    println!("   status {}; counter moves on: {moved}", root.load(NAME)?.status());

    println!("5. suspend (checkpoint into its state directory, then stop it)");
    let report = crate::engine::suspend(root, NAME)?;
    let at_suspend = last_tick(root);
    println!(
        "   {} processes, {:.1} MiB of memory saved in {:.0} ms; status {}, counter at {at_suspend}",
        report.processes,
        report.resident_bytes as f64 / (1024.0 * 1024.0),
        report.total_ms,
        root.load(NAME)?.status()
    );
    check(
        root.load(NAME)?.status() == Status::Suspended,
        "the container is not suspended",
    )?;
    std::thread::sleep(Duration::from_secs(1));
    check(last_tick(root) == at_suspend, "the suspended container kept counting")?;

    println!("6. resume (restore it: same PIDs, memory, registers and clocks)");
    let restored = crate::engine::resume(root, NAME, true)?;
    let resumed = wait_for_tick(root, at_suspend + 3)?;
    println!(
        "   restored in {:.0} ms as host pid {}; counter moves on from {at_suspend}: {resumed}",
        restored.total_ms, restored.pid
    );
    check_ticks(root, "the counter reset or skipped across suspend")?;

    println!("7. send to a second root over loopback QUIC (pinned mutual TLS), with pre-copy");
    let dir_b = std::env::temp_dir().join(format!("migrate-demo-{}-b", std::process::id()));
    let demo_b = DemoRoot {
        root: Root::open(&dir_b)?,
        dir: dir_b,
    };
    let root_b = &demo_b.root;
    let (r, moved_at) = migrate_to(root, root_b)?;
    let on_b = wait_for_tick(root_b, moved_at + 3)?;
    println!(
        "   downtime {:.0} ms, total {:.0} ms: {} pre-copy round(s), {:.2} MiB sent, {} pages, {} not resent",
        r.downtime_ms,
        r.total_ms,
        r.precopy_rounds,
        r.bytes_sent as f64 / (1024.0 * 1024.0),
        r.pages_sent,
        r.pages_precopied
    );
    println!(
        "   freeze {:.1} ms, dump {:.1} ms, transfer {:.1} ms, restore {:.1} ms",
        r.freeze_ms, r.dump_ms, r.transfer_ms, r.restore_ms
    );
    println!("   gone from the first root; running in the second, counter moves on from {moved_at}: {on_b}");
    check(root.list()?.is_empty(), "the container is still on the source")?;
    check(
        root_b.load(NAME)?.status() == Status::Running,
        "the container is not running on the destination",
    )?;
    check_ticks(
        root_b,
        "the counter reset or skipped across the migration (or its log did not move)",
    )?;

    println!("8. rm -f");
    let cgroup = root_b.load(NAME)?.cgroup;
    root_b.remove(NAME, true, Duration::ZERO)?;
    check(!cgroup.exists(), "the cgroup is still there after rm")?;
    check(root_b.list()?.is_empty(), "the container is still listed after rm")?;
    println!("   gone: no process, no cgroup, no state");
    println!();
    println!("demo finished: all steps checked");
    Ok(0)
}

/// Live-migrates the demo container from `a` to `b` through a receiver
/// running in a thread of this process; returns the sender's report and
/// the counter when it left.
fn migrate_to(a: &Root, b: &Root) -> Result<(crate::engine::live::LiveReport, u64)> {
    use crate::transport::{identity, recv, tls};
    let id_a = identity::ensure(a.dir())?;
    let id_b = identity::ensure(b.dir())?;
    let trust_a = tls::trusted(b.dir(), &[id_a.cert])?;
    let trust_b = tls::trusted(a.dir(), &[id_b.cert])?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|source| Error::Io {
            what: "find a free port".into(),
            source,
        })?
        .port();
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let opts = recv::RecvOptions {
        listen,
        once: true,
        exe: std::env::current_exe().map_err(|source| Error::Io {
            what: "find own executable".into(),
            source,
        })?,
        verify: true,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let dir_b = b.dir().to_path_buf();
    let receiver = std::thread::spawn(move || {
        recv::serve(&dir_b, trust_a, &opts, &mut |e| {
            if let recv::Event::Listening(_) = e {
                let _ = ready_tx.send(());
            }
        })
    });
    check(
        ready_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the receiver did not start",
    )?;
    let live = crate::engine::live::LiveOptions {
        max_downtime_ms: 100,
        max_rounds: 8,
        level: Some(-1),
        checkpoint: Default::default(),
    };
    let sent = crate::transport::send::migrate(
        a,
        NAME,
        &listen.to_string(),
        trust_b,
        &live,
        crate::image::pages::Compression::Zstd(-1),
        &mut |_| {},
    );
    let moved_at = last_tick(b);
    let received = receiver
        .join()
        .map_err(|_| Error::Demo("the receiver thread panicked".into()))?;
    let report = sent?;
    let received = received?;
    check(
        received.map(|r| r.committed).unwrap_or(false),
        "the receiver did not commit",
    )?;
    Ok((report, moved_at))
}

/// Runs a command in the demo container and returns what it printed.
/// `exec` passes on the caller's stdio, so this goes through a child
/// `migrate exec` with a pipe.
fn exec_capture(root: &Root, cmd: &[&str]) -> Result<String> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "find own executable".into(),
        source,
    })?;
    let out = std::process::Command::new(exe)
        .arg("--root")
        .arg(root.dir())
        .args(["exec", NAME, "--"])
        .args(cmd)
        .output()
        .map_err(|source| Error::Io {
            what: "run migrate exec".into(),
            source,
        })?;
    check(
        out.status.success(),
        format!("exec failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
