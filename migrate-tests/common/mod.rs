//! Shared helpers: a private state root per test that removes every
//! container, cgroup and file it holds when dropped, pass or fail.

#![allow(dead_code)]

pub mod differ;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const MIGRATE: &str = env!("CARGO_BIN_EXE_migrate");

/// A state root of one test.
pub struct TestRoot {
    pub dir: PathBuf,
}

impl TestRoot {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("migrate-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test root");
        Self { dir }
    }

    /// `migrate --root DIR ARGS...`, capturing its output.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(&[], args)
    }

    /// [`Self::cmd`] with extra environment variables.
    pub fn cmd_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(MIGRATE)
            .arg("--root")
            .arg(&self.dir)
            .args(args)
            // Every restore and resume of the tests checks the restored
            // processes against the image before they run.
            .env("MIGRATE_VERIFY", "1")
            .envs(env.iter().copied())
            .output()
            .expect("run migrate")
    }

    /// Like `cmd`, but fails unless it exits 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd(args);
        if !out.status.success() {
            bail!(
                "migrate {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ps --json` as values.
    pub fn ps(&self) -> Result<Vec<serde_json::Value>> {
        Ok(serde_json::from_str(&self.ok(&["ps", "--json"])?)?)
    }

    /// One container's `ps --json` entry.
    pub fn entry(&self, name: &str) -> Result<serde_json::Value> {
        self.ps()?
            .into_iter()
            .find(|e| e["name"] == name)
            .with_context(|| format!("{name} not in ps"))
    }

    pub fn status(&self, name: &str) -> Result<String> {
        Ok(self.entry(name)?["status"].as_str().unwrap_or_default().to_string())
    }

    /// Host PID of the container's PID 1.
    pub fn pid(&self, name: &str) -> Result<i32> {
        Ok(self.entry(name)?["pid"].as_i64().context("pid")? as i32)
    }

    pub fn cgroup(&self, name: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(self.entry(name)?["cgroup"].as_str().context("cgroup")?))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("containers").join(name).join("log")).unwrap_or_default()
    }

    /// Starts a detached container.
    pub fn run_d(&self, name: &str, extra: &[&str], cmd: &[&str]) -> Result<i32> {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(cmd);
        self.ok(&args)?;
        self.pid(name)
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let cgroups: Vec<PathBuf> = self
            .ps()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["cgroup"].as_str().map(PathBuf::from))
            .collect();
        for e in self.ps().unwrap_or_default() {
            if let Some(n) = e["name"].as_str() {
                let _ = self.cmd(&["rm", "-f", n]);
            }
        }
        // Whatever `rm` could not remove: kill and rmdir by hand.
        for cg in cgroups {
            if cg.exists() {
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                std::thread::sleep(Duration::from_millis(50));
                remove_cgroup_tree(&cg);
            }
            if let Some(parent) = cg.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a cgroup and the cgroups a container made inside it, deepest
/// first.
fn remove_cgroup_tree(cg: &Path) {
    for e in std::fs::read_dir(cg).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(cg);
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap_or('?'));
            !matches!(state, Some('Z') | Some('X'))
        })
        .unwrap_or(false)
}

/// The state letter (R, S, Z...) of `pid`.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ").and_then(|(_, r)| r.chars().next())
}

/// The children of `pid` (zombies included), from /proc.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The highest "tick N" line in a log.
pub fn last_tick(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .max()
        .unwrap_or(0)
}

/// A shell loop that prints "tick N" every 100 ms.
pub const TICKER: &str = "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done";

/// A minimal root filesystem: a static busybox and a few applet links.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox is not installed (migrate-tests/run installs busybox-static)")?;
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy(busybox, dir.join("bin/busybox"))?;
    for applet in ["sh", "ls", "cat", "sleep", "hostname", "ps", "mount"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    Ok(())
}

/// Compiles workload `name` (migrate-tests/workloads/NAME.c) once per
/// build and returns the binary's path. Safe to call from parallel tests:
/// each compiles to a private file and renames it into place.
pub fn workload(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrate-tests/workloads")
        .join(format!("{name}.c"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&out_dir).expect("workload dir");
    let out = out_dir.join(name);
    let fresh = |o: &Path| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(o), std::fs::metadata(&src)) else {
            return false;
        };
        let hdr = std::fs::metadata(src.with_file_name("beat.h"))
            .and_then(|m| m.modified())
            .ok();
        a.modified().ok() >= b.modified().ok() && a.modified().ok() >= hdr
    };
    if fresh(&out) {
        return out;
    }
    // One compiler at a time (test binaries run in parallel): a second
    // install would replace the binary under a workload already running,
    // whose executable would then read "(deleted)".
    let lock = std::fs::File::create(out_dir.join(format!("{name}.lock"))).expect("workload lock");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).expect("lock workload");
    if !fresh(&out) {
        let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
        let st = Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(st.success(), "compiling {} failed", src.display());
        std::fs::rename(&tmp, &out).expect("install workload");
    }
    out
}

/// The "beat N" numbers of a log.
pub fn beats(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("beat ").and_then(|n| n.trim().parse().ok()))
        .collect()
}

/// Checks a heartbeat log: beats 1..=N in order with none missing or
/// repeated (no reset), and no FAIL line.
pub fn check_heartbeat(log: &str) -> Result<u64> {
    if let Some(f) = log.lines().find(|l| l.starts_with("FAIL")) {
        bail!("workload reported: {f}");
    }
    let b = beats(log);
    let last = *b.last().context("no beats")?;
    if b != (1..=last).collect::<Vec<_>>() {
        bail!("heartbeat not continuous: {:?}", b);
    }
    Ok(last)
}

/// Waits until the log of `name` shows at least `n` beats; returns the last.
pub fn wait_beats(root: &TestRoot, name: &str, n: u64) -> Result<u64> {
    wait_until(Duration::from_secs(20), &format!("{name} to reach beat {n}"), || {
        beats(&root.log(name)).last().copied().unwrap_or(0) >= n
    })?;
    check_heartbeat(&root.log(name))
}
