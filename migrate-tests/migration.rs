//! Live migration between two roots ("hosts") over loopback QUIC, or
//! across a veth link between two network namespaces (entered with
//! nsenter --net: `ip netns exec` would remount /sys and hide the cgroup
//! v2 mount): real workloads
//! there and back with their heartbeat continuing, and the failure cases,
//! each leaving the source container healthy and nothing on the
//! destination.

use std::net::UdpSocket;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::common::*;

/// Two roots that trust each other.
pub struct Pair {
    pub a: TestRoot,
    pub b: TestRoot,
}

impl Pair {
    pub fn new(tag: &str) -> Result<Self> {
        let pair = Self {
            a: TestRoot::new(&format!("{tag}-a")),
            b: TestRoot::new(&format!("{tag}-b")),
        };
        trust(&pair.a, &pair.b)?;
        trust(&pair.b, &pair.a)?;
        Ok(pair)
    }
}

/// Makes `who` trust `whom`'s identity.
pub fn trust(who: &TestRoot, whom: &TestRoot) -> Result<()> {
    let cert = whom.ok(&["identity"])?;
    let cert = cert.lines().next().context("identity path")?;
    let dir = who.dir.join("trusted");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(
        cert,
        dir.join(format!("{}.pem", whom.dir.file_name().unwrap().to_string_lossy())),
    )?;
    Ok(())
}

/// A free UDP port on `ip`.
fn free_port(ip: &str) -> Result<u16> {
    Ok(UdpSocket::bind((ip, 0))?.local_addr()?.port())
}

/// A running `migrate recv`, stopped (Ctrl-C, then SIGKILL) when dropped.
pub struct Receiver {
    child: Option<Child>,
    pub addr: String,
    err: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Receiver {
    /// Starts `migrate recv` for `root` on `ip` (in network namespace
    /// `netns`, if given) and waits until it listens.
    pub fn start(root: &TestRoot, ip: &str, once: bool, netns: Option<&str>) -> Result<Self> {
        Self::start_env(root, ip, once, netns, &[])
    }

    /// [`Self::start`] with extra environment variables for the receiver.
    pub fn start_env(root: &TestRoot, ip: &str, once: bool, netns: Option<&str>, env: &[(&str, &str)]) -> Result<Self> {
        let port = match netns {
            Some(_) => 7000 + (std::process::id() % 2000) as u16,
            None => free_port(ip)?,
        };
        let addr = format!("{ip}:{port}");
        let err = root.dir.join(format!("recv-{port}.err"));
        let out = root.dir.join(format!("recv-{port}.out"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(MIGRATE);
                c
            }
            None => Command::new(MIGRATE),
        };
        // Its restores check the restored processes against the image.
        cmd.env("MIGRATE_VERIFY", "1")
            .arg("--root")
            .arg(&root.dir)
            .args(["recv", "--listen", &addr, "--json"]);
        if once {
            cmd.arg("--once");
        }
        let child = cmd
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .stdin(Stdio::null())
            .spawn()?;
        let mut r = Self {
            child: Some(child),
            addr,
            err,
            out,
        };
        wait_until(Duration::from_secs(10), "the receiver to listen", || {
            r.stderr().contains("listening on")
        })
        .with_context(|| r.stderr())?;
        if let Some(c) = r.child.as_mut() {
            ensure!(c.try_wait()?.is_none(), "the receiver exited: {}", r.stderr());
        }
        Ok(r)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Waits for a `--once` receiver to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("already waited")?;
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if start.elapsed() > timeout {
                bail!("the receiver did not exit: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGINT);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Migrates `name` from `from` to `to` over loopback; returns the sender's
/// stats.
pub fn migrate(from: &TestRoot, to: &TestRoot, name: &str, extra: &[&str]) -> Result<serde_json::Value> {
    let mut recv = Receiver::start(to, "127.0.0.1", true, None)?;
    let mut args = vec!["send", name, recv.addr.as_str(), "--json"];
    args.extend_from_slice(extra);
    let stats = from.ok(&args).with_context(|| recv.stderr())?;
    let st = recv.wait(Duration::from_secs(30))?;
    ensure!(st.success(), "the receiver failed: {}", recv.stderr());
    let recv_stats: serde_json::Value = serde_json::from_str(&recv.stdout())?;
    ensure!(recv_stats["committed"] == true, "receiver stats: {recv_stats}");
    let stats: serde_json::Value = serde_json::from_str(&stats)?;
    for k in [
        "total_ms",
        "downtime_ms",
        "precopy_rounds",
        "bytes_sent",
        "pages_sent",
        "pages_skipped",
        "freeze_ms",
        "dump_ms",
        "transfer_ms",
        "restore_ms",
    ] {
        ensure!(stats.get(k).is_some(), "stats lack {k}: {stats}");
    }
    ensure!(
        from.ps()?.iter().all(|e| e["name"] != name),
        "{name} is still on the source"
    );
    ensure!(
        to.status(name)? == "running",
        "{name} is not running on the destination"
    );
    Ok(stats)
}

/// Migrates `name` from a to b and back, its heartbeat continuing.
pub fn there_and_back(pair: &Pair, name: &str) -> Result<()> {
    let last = wait_beats(&pair.a, name, 3)?;
    let stats = migrate(&pair.a, &pair.b, name, &[])?;
    ensure!(stats["precopy_rounds"].as_u64() >= Some(1), "no pre-copy: {stats}");
    // The log came along: the whole heartbeat, from beat 1, on b.
    let last = wait_beats(&pair.b, name, last + 3)?;
    migrate(&pair.b, &pair.a, name, &["--precopy-rounds", "0"])?;
    wait_beats(&pair.a, name, last + 3)?;
    Ok(())
}

fn workload_there_and_back(tag: &str, program: &str, args: &[&str]) -> Result<()> {
    let pair = Pair::new(tag)?;
    let bin = workload(program);
    let mut cmd = vec![bin.to_str().unwrap()];
    cmd.extend_from_slice(args);
    pair.a.run_d(tag, &[], &cmd)?;
    there_and_back(&pair, tag)
}

#[test]
fn memory_migrates() -> Result<()> {
    workload_there_and_back("mig-mem", "memory", &["32"])
}

#[test]
fn process_tree_migrates() -> Result<()> {
    workload_there_and_back("mig-tree", "tree", &[])
}

#[test]
fn threads_migrate() -> Result<()> {
    workload_there_and_back("mig-threads", "threads", &[])
}

#[test]
fn clocks_continue_across_migration() -> Result<()> {
    workload_there_and_back("mig-clock", "clock", &[])
}

#[test]
fn fd_state_migrates() -> Result<()> {
    workload_there_and_back("mig-fds", "fds", &[])
}

#[test]
fn timers_migrate() -> Result<()> {
    workload_there_and_back("mig-timers", "timers", &[])
}

#[test]
fn seccomp_migrates() -> Result<()> {
    workload_there_and_back("mig-sc", "seccomp", &[])
}

/// A workload that takes a directory of its own (made under root a).
fn workload_with_dir_there_and_back(tag: &str, program: &str, sub: &str) -> Result<()> {
    let pair = Pair::new(tag)?;
    let dir = pair.a.dir.join(sub);
    std::fs::create_dir_all(&dir)?;
    pair.a
        .run_d(tag, &[], &[workload(program).to_str().unwrap(), dir.to_str().unwrap()])?;
    there_and_back(&pair, tag)
}

#[test]
fn files_migrate() -> Result<()> {
    workload_with_dir_there_and_back("mig-files", "files", "data")
}

/// A write lease can not come back on this host while the source still
/// has its file open: the destination fails, naming it, and the container
/// runs on at the source with its lease.
#[test]
fn a_write_lease_fails_a_migration_to_the_same_host_cleanly() -> Result<()> {
    let pair = Pair::new("mig-lease")?;
    let dir = pair.a.dir.join("data");
    std::fs::create_dir_all(&dir)?;
    pair.a.run_d(
        "f",
        &[],
        &[workload("files").to_str().unwrap(), dir.to_str().unwrap(), "lease"],
    )?;
    wait_beats(&pair.a, "f", 3)?;
    let mut recv = Receiver::start(&pair.b, "127.0.0.1", true, None)?;
    let out = pair.a.cmd(&["send", "f", &recv.addr]);
    ensure!(
        !out.status.success(),
        "a migration with a write lease on this host succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("its lease can not be taken again"), "{err}");
    ensure!(!recv.wait(Duration::from_secs(30))?.success());
    still_healthy(&pair.a, "f")?;
    nothing_left(&pair.b, "f")
}

#[test]
fn inotify_migrates() -> Result<()> {
    workload_with_dir_there_and_back("mig-ino", "inotify", "watched")
}

#[test]
fn bash_loop_migrates() -> Result<()> {
    let pair = Pair::new("mig-bash")?;
    let script = "i=0; while true; do i=$((i+1)); echo \"beat $i\"; sleep 0.1; done";
    pair.a.run_d("bash", &[], &["bash", "-c", script])?;
    there_and_back(&pair, "bash")
}

#[test]
fn redis_with_50k_keys_migrates() -> Result<()> {
    let pair = Pair::new("mig-redis")?;
    let sock = crate::programs::start_redis_with_keys(&pair.a, "redis", 50_000)?;
    migrate(&pair.a, &pair.b, "redis", &[])?;
    crate::programs::check_redis_keys(&sock, 50_000)?;
    ensure!(crate::programs::redis(&sock, &["set", "moved", "1"])? == "OK");
    migrate(&pair.b, &pair.a, "redis", &[])?;
    crate::programs::check_redis_keys(&sock, 50_001)?;
    ensure!(crate::programs::redis(&sock, &["get", "moved"])? == "1");
    Ok(())
}

#[test]
fn cpython_migrates() -> Result<()> {
    let pair = Pair::new("mig-py")?;
    crate::programs::start_cpython(&pair.a, "py")?;
    there_and_back(&pair, "py")
}

#[test]
fn shell_pipeline_migrates() -> Result<()> {
    let pair = Pair::new("mig-pipe")?;
    pair.a.run_d("pipe", &[], &["bash", "-c", crate::programs::PIPELINE])?;
    there_and_back(&pair, "pipe")
}

#[test]
fn nginx_migrates() -> Result<()> {
    let pair = Pair::new("mig-nginx")?;
    let sock = crate::programs::start_nginx(&pair.a)?;
    let before = crate::programs::nginx_workers_uid(&pair.a)?;
    migrate(&pair.a, &pair.b, "nginx", &[])?;
    for _ in 0..5 {
        ensure!(crate::programs::curl(&sock)? == "hello from the container\n");
    }
    ensure!(
        crate::programs::nginx_workers_uid(&pair.b)? == before,
        "worker credentials changed"
    );
    migrate(&pair.b, &pair.a, "nginx", &[])?;
    ensure!(crate::programs::curl(&sock)? == "hello from the container\n");
    Ok(())
}

#[test]
fn unsupported_fd_keeps_the_source() -> Result<()> {
    let pair = Pair::new("mig-uring")?;
    pair.a.run_d("u", &[], &[workload("uring").to_str().unwrap()])?;
    wait_beats(&pair.a, "u", 2)?;
    let mut recv = Receiver::start(&pair.b, "127.0.0.1", true, None)?;
    let out = pair.a.cmd(&["send", "u", &recv.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a container with io_uring migrated");
    ensure!(err.contains("io_uring") && err.contains("still running"), "{err}");
    ensure!(!recv.wait(Duration::from_secs(30))?.success());
    still_healthy(&pair.a, "u")?;
    nothing_left(&pair.b, "u")?;
    Ok(())
}

/// Nothing of `name` is on `root`: no state, no cgroup, no helper.
pub fn nothing_left(root: &TestRoot, name: &str) -> Result<()> {
    ensure!(root.ps()?.iter().all(|e| e["name"] != name), "{name} left in ps");
    ensure!(
        !root.dir.join("containers").join(name).exists(),
        "{name}'s directory left behind"
    );
    let helpers = Command::new("pgrep")
        .args(["-f", &format!("{} restore-helper", root.dir.display())])
        .output()?;
    ensure!(helpers.stdout.is_empty(), "a restore helper is still running");
    Ok(())
}

/// The source container runs on: status, and fresh beats.
pub fn still_healthy(root: &TestRoot, name: &str) -> Result<()> {
    wait_until(Duration::from_secs(20), &format!("{name} to run again"), || {
        root.status(name).map(|s| s == "running").unwrap_or(false)
    })?;
    let last = check_heartbeat(&root.log(name))?;
    wait_beats(root, name, last + 3)?;
    Ok(())
}

fn ticker(pair: &Pair, name: &str, mib: &str) -> Result<()> {
    pair.a.run_d(name, &[], &[workload("memory").to_str().unwrap(), mib])?;
    wait_beats(&pair.a, name, 2)?;
    Ok(())
}

#[test]
fn untrusted_sender_and_garbage_are_refused() -> Result<()> {
    let pair = Pair::new("mig-trust")?;
    ticker(&pair, "t", "8")?;
    let stranger = TestRoot::new("mig-trust-c");
    trust(&stranger, &pair.b)?;
    stranger.run_d("t", &[], &[workload("memory").to_str().unwrap(), "8"])?;
    wait_beats(&stranger, "t", 2)?;
    let recv = Receiver::start(&pair.b, "127.0.0.1", false, None)?;
    // Garbage datagrams at the port.
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..1200u32)
            .map(|j| (i.wrapping_mul(31).wrapping_add(j * 7)) as u8)
            .collect();
        sock.send_to(&junk, &recv.addr)?;
    }
    // A sender b does not trust: refused before anything is read.
    let out = stranger.cmd(&["send", "t", &recv.addr]);
    ensure!(!out.status.success(), "an untrusted sender got through");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("still running"), "{err}");
    still_healthy(&stranger, "t")?;
    nothing_left(&pair.b, "t")?;
    // The receiver survived both, and serves a trusted sender.
    let out = pair
        .a
        .ok(&["send", "t", &recv.addr, "--json"])
        .with_context(|| recv.stderr())?;
    ensure!(out.contains("downtime_ms"));
    wait_until(Duration::from_secs(10), "the receiver to report", || {
        recv.stdout().contains("\"committed\": true")
    })?;
    ensure!(recv.stderr().contains("turned away"), "{}", recv.stderr());
    wait_beats(&pair.b, "t", 4)?;
    drop(recv);
    Ok(())
}

#[test]
fn failing_restore_keeps_the_source() -> Result<()> {
    let pair = Pair::new("mig-fail")?;
    ticker(&pair, "t", "16")?;
    // The destination already runs a container of that name: its restore
    // fails after the whole image arrived.
    pair.b.run_d("t", &[], &["sleep", "1000"])?;
    let mut recv = Receiver::start(&pair.b, "127.0.0.1", true, None)?;
    let out = pair.a.cmd(&["send", "t", &recv.addr]);
    ensure!(!out.status.success(), "migration onto a taken name succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("still running") && err.contains("in use"), "{err}");
    ensure!(
        !recv.wait(Duration::from_secs(30))?.success(),
        "--once receiver reported success"
    );
    still_healthy(&pair.a, "t")?;
    ensure!(
        pair.b.ps()?.len() == 1,
        "the destination kept more than its own container"
    );
    pair.b.ok(&["rm", "-f", "t"])?;
    nothing_left(&pair.b, "t")?;
    // And the source can still migrate once the name is free.
    migrate(&pair.a, &pair.b, "t", &[])?;
    Ok(())
}

/// `migrate send NAME ADDR` for `root`, from network namespace `netns` if
/// given, its output captured.
fn sender(root: &TestRoot, netns: Option<&str>, name: &str, addr: &str) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(MIGRATE);
            c
        }
        None => Command::new(MIGRATE),
    };
    cmd.arg("--root").arg(&root.dir).args(["send", name, addr]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs `send` (a migration of "big" from a to b) and calls `cut` with the
/// sender's PID once the destination's helper is receiving; the migration
/// must fail, the source run on, and the destination hold nothing. Returns
/// the sender's stderr.
fn cut_mid_transfer(
    pair: &Pair,
    recv: &mut Receiver,
    mut send: Command,
    cut: impl FnOnce(&mut Receiver, i32) -> Result<()>,
) -> Result<String> {
    let send = send.spawn()?;
    let pattern = format!("{} restore-helper", pair.b.dir.display());
    wait_until(Duration::from_secs(20), "the transfer to start", || {
        Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false)
    })?;
    cut(recv, send.id() as i32)?;
    let out = send.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "the migration succeeded anyway");
    ensure!(err.contains("still running"), "{err}");
    still_healthy(&pair.a, "big")?;
    wait_until(Duration::from_secs(60), "the destination to clean up", || {
        nothing_left(&pair.b, "big").is_ok()
    })?;
    Ok(err)
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
    Ok(())
}

/// A large container on a, a `--once` receiver on b, and a sender for it.
fn big_pair(tag: &str) -> Result<(Pair, Receiver, Command)> {
    let pair = Pair::new(tag)?;
    ticker(&pair, "big", "384")?;
    let recv = Receiver::start(&pair.b, "127.0.0.1", true, None)?;
    let send = sender(&pair.a, None, "big", &recv.addr);
    Ok((pair, recv, send))
}

#[test]
fn killed_receiver_keeps_the_source() -> Result<()> {
    let (pair, mut recv, send) = big_pair("mig-kill")?;
    cut_mid_transfer(&pair, &mut recv, send, |r, _| {
        signal(r.pid(), nix::sys::signal::SIGKILL)
    })?;
    Ok(())
}

#[test]
fn interrupted_receiver_keeps_the_source() -> Result<()> {
    let (pair, mut recv, send) = big_pair("mig-int")?;
    cut_mid_transfer(&pair, &mut recv, send, |r, _| signal(r.pid(), nix::sys::signal::SIGINT))?;
    Ok(())
}

#[test]
fn interrupted_sender_keeps_the_container() -> Result<()> {
    let (pair, mut recv, send) = big_pair("mig-sint")?;
    let err = cut_mid_transfer(&pair, &mut recv, send, |_, sender| {
        signal(sender, nix::sys::signal::SIGINT)
    })?;
    ensure!(err.contains("interrupted"), "{err}");
    ensure!(!recv.wait(Duration::from_secs(60))?.success());
    Ok(())
}

/// Two network namespaces joined by a veth pair; removed when dropped.
struct Link {
    a: String,
    b: String,
    veth: String,
}

impl Link {
    fn new(tag: &str) -> Result<Self> {
        let id = std::process::id() % 100_000;
        let link = Self {
            a: format!("mg-{tag}-a{id}"),
            b: format!("mg-{tag}-b{id}"),
            veth: format!("mgl{tag}{id}"),
        };
        let ip = |args: &[&str]| -> Result<()> {
            let st = Command::new("ip").args(args).status()?;
            ensure!(st.success(), "ip {args:?} failed");
            Ok(())
        };
        ip(&["netns", "add", &link.a])?;
        ip(&["netns", "add", &link.b])?;
        let peer = format!("{}p", link.veth);
        ip(&[
            "link", "add", &link.veth, "netns", &link.a, "type", "veth", "peer", "name", &peer, "netns", &link.b,
        ])?;
        ip(&["-n", &link.a, "addr", "add", "10.98.0.1/30", "dev", &link.veth])?;
        ip(&["-n", &link.b, "addr", "add", "10.98.0.2/30", "dev", &peer])?;
        for (ns, dev) in [(&link.a, link.veth.as_str()), (&link.b, peer.as_str())] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(link)
    }

    fn set(&self, up: bool) -> Result<()> {
        let st = Command::new("ip")
            .args(["-n", &self.a, "link", "set", &self.veth, if up { "up" } else { "down" }])
            .status()?;
        ensure!(st.success());
        Ok(())
    }

    /// `migrate send` from namespace a.
    fn send(&self, root: &TestRoot, name: &str, addr: &str) -> Result<String> {
        let out = sender(root, Some(&self.a), name, addr).arg("--json").output()?;
        ensure!(
            out.status.success(),
            "send over the link failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn migrates_across_a_link_and_survives_it_going_down() -> Result<()> {
    let pair = Pair::new("mig-link")?;
    let link = Link::new("l")?;
    ticker(&pair, "t", "32")?;
    // Over the link, there and back.
    let mut recv = Receiver::start(&pair.b, "10.98.0.2", true, Some(&link.b))?;
    let stats = link.send(&pair.a, "t", &recv.addr)?;
    ensure!(stats.contains("downtime_ms"));
    ensure!(recv.wait(Duration::from_secs(30))?.success(), "{}", recv.stderr());
    let last = wait_beats(&pair.b, "t", 3)?;
    migrate(&pair.b, &pair.a, "t", &[])?;
    wait_beats(&pair.a, "t", last + 3)?;
    pair.a.ok(&["rm", "-f", "t"])?;

    // The link drops in the middle of a transfer.
    ticker(&pair, "big", "384")?;
    let mut recv = Receiver::start(&pair.b, "10.98.0.2", true, Some(&link.b))?;
    let send = sender(&pair.a, Some(&link.a), "big", &recv.addr);
    cut_mid_transfer(&pair, &mut recv, send, |_, _| link.set(false))?;
    ensure!(!recv.wait(Duration::from_secs(60))?.success());
    link.set(true)?;
    Ok(())
}

/// The "line N" numbers of a log must be 1..=N: none lost, none repeated.
fn check_lines(log: &str) -> Result<u64> {
    let nums: Vec<u64> = log
        .lines()
        .filter_map(|l| l.strip_prefix("line ").and_then(|n| n.parse().ok()))
        .collect();
    let last = *nums.last().context("no lines")?;
    if let Some(i) = (0..nums.len()).find(|&i| nums[i] != i as u64 + 1) {
        bail!("log not gap-free: line {} where {} was due (of {last})", nums[i], i + 1);
    }
    Ok(last)
}

#[test]
fn log_is_gap_free_across_twenty_migrations() -> Result<()> {
    let pair = Pair::new("mig-lines")?;
    pair.a.run_d("l", &[], &[workload("lines").to_str().unwrap()])?;
    let mut last = 0;
    for i in 0..20 {
        let (from, to) = if i % 2 == 0 {
            (&pair.a, &pair.b)
        } else {
            (&pair.b, &pair.a)
        };
        wait_until(Duration::from_secs(20), "new lines", || {
            check_lines(&from.log("l")).unwrap_or(0) > last + 100
        })?;
        migrate(from, to, "l", &[])?;
        // Every line written before the freeze arrived, in order.
        last = check_lines(&to.log("l")).with_context(|| format!("after send {}", i + 1))?;
    }
    wait_until(Duration::from_secs(20), "lines after the last send", || {
        check_lines(&pair.a.log("l")).unwrap_or(0) > last + 100
    })?;
    check_lines(&pair.a.log("l"))?;
    Ok(())
}
