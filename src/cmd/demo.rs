//! `migrate demo`: the README's first command. With no other input it starts
//! a sample container, shows it working, freezes and thaws it, and cleans
//! up. Every step is checked; the demo fails loudly if one does not hold.

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

/// The last "tick N" in the log.
fn last_tick(root: &Root) -> u64 {
    std::fs::read_to_string(root.log_path(NAME))
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
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
    let restored = crate::engine::resume(root, NAME)?;
    let resumed = wait_for_tick(root, at_suspend + 3)?;
    println!(
        "   restored in {:.0} ms as host pid {}; counter moves on from {at_suspend}: {resumed}",
        restored.total_ms, restored.pid
    );
    let ticks: Vec<u64> = std::fs::read_to_string(root.log_path(NAME))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .collect();
    check(
        ticks == (1..=ticks.len() as u64).collect::<Vec<_>>(),
        "the counter reset or skipped across suspend",
    )?;

    println!("7. rm -f");
    let cgroup = root.load(NAME)?.cgroup;
    root.remove(NAME, true, Duration::ZERO)?;
    check(!cgroup.exists(), "the cgroup is still there after rm")?;
    check(root.list()?.is_empty(), "the container is still listed after rm")?;
    println!("   gone: no process, no cgroup, no state");
    println!();
    println!("demo finished: all steps checked");
    Ok(0)
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
