//! The container runtime: namespaces, PID 1, hostname, freeze/thaw, exec,
//! rm, two roots, --init, and the error paths.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::common::*;

const NAMESPACES: [&str; 7] = ["pid", "mnt", "uts", "ipc", "net", "cgroup", "time"];

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn namespaces_are_distinct_from_the_host() -> Result<()> {
    let root = TestRoot::new("ns");
    let pid = root.run_d("c", &[], &["sleep", "100"])?.to_string();
    for kind in NAMESPACES {
        let (inside, host) = (ns(&pid, kind), ns("self", kind));
        ensure!(
            !inside.is_empty() && inside != host,
            "{kind}: container {inside} vs host {host}"
        );
    }
    // Its cgroup namespace is rooted at its own cgroup.
    let cg = root.ok(&["exec", "c", "--", "cat", "/proc/self/cgroup"])?;
    ensure!(cg.lines().any(|l| l == "0::/"), "cgroup view inside: {cg}");
    Ok(())
}

#[test]
fn command_is_pid1_with_its_hostname_and_loopback() -> Result<()> {
    let root = TestRoot::new("pid1");
    let script = "echo pid=$$; cat /proc/sys/kernel/hostname; cat /sys/class/net/lo/operstate; sleep 100";
    root.run_d("c", &["--hostname", "box1"], &["sh", "-c", script])?;
    wait_until(Duration::from_secs(5), "log", || root.log("c").lines().count() >= 3)?;
    let log = root.log("c");
    let lines: Vec<&str> = log.lines().collect();
    ensure!(lines[0] == "pid=1", "log: {log}");
    ensure!(lines[1] == "box1", "log: {log}");
    // lo is up; with no carrier its operstate reads "unknown", never "down".
    ensure!(lines[2] != "down", "lo is down: {log}");
    // A fresh /proc: PID 1 inside is the command.
    let comm = root.ok(&["exec", "c", "--", "cat", "/proc/1/comm"])?;
    ensure!(comm.trim() == "sh", "PID 1 inside is {comm}");
    Ok(())
}

#[test]
fn freeze_stops_progress_and_thaw_resumes_it() -> Result<()> {
    let root = TestRoot::new("freeze");
    root.run_d("c", &[], &["sh", "-c", TICKER])?;
    wait_until(Duration::from_secs(5), "ticks", || last_tick(&root.log("c")) >= 2)?;
    root.ok(&["freeze", "c"])?;
    ensure!(root.status("c")? == "frozen");
    let at = last_tick(&root.log("c"));
    std::thread::sleep(Duration::from_millis(700));
    ensure!(last_tick(&root.log("c")) == at, "counted while frozen");
    root.ok(&["freeze", "c"])?; // freezing twice is fine
    root.ok(&["thaw", "c"])?;
    ensure!(root.status("c")? == "running");
    wait_until(Duration::from_secs(5), "ticks after thaw", || {
        last_tick(&root.log("c")) >= at + 3
    })?;
    Ok(())
}

#[test]
fn exec_lands_in_the_same_namespaces() -> Result<()> {
    let root = TestRoot::new("exec");
    let pid = root.run_d("c", &[], &["sleep", "100"])?.to_string();
    for kind in NAMESPACES {
        let inside = root.ok(&["exec", "c", "--", "readlink", &format!("/proc/self/ns/{kind}")])?;
        ensure!(
            inside.trim() == ns(&pid, kind),
            "{kind}: exec {} vs container {}",
            inside.trim(),
            ns(&pid, kind)
        );
    }
    // Its PID is inside the container's PID namespace, and it sees the
    // container's processes only.
    let out = root.ok(&["exec", "c", "--", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"])?;
    let mut it = out.lines();
    let own: i32 = it.next().unwrap_or("").parse()?;
    let count: i32 = it.next().unwrap_or("").parse()?;
    ensure!(
        own > 1 && own < 100 && count <= 5,
        "exec saw pid {own}, {count} processes"
    );
    // The exit status comes through; a missing program is a clear error.
    let st = root.cmd(&["exec", "c", "--", "sh", "-c", "exit 3"]);
    ensure!(st.status.code() == Some(3));
    let missing = root.cmd(&["exec", "c", "--", "/no/such/program"]);
    ensure!(!missing.status.success());
    ensure!(String::from_utf8_lossy(&missing.stderr).contains("cannot execute"));
    Ok(())
}

#[test]
fn rm_force_leaves_nothing_behind() -> Result<()> {
    let root = TestRoot::new("rm");
    let pid = root.run_d("c", &[], &["sh", "-c", "sleep 100 & sleep 100"])?;
    let cg = root.cgroup("c")?;
    ensure!(cg.exists());
    root.ok(&["rm", "-f", "c"])?;
    ensure!(!cg.exists(), "cgroup {} left", cg.display());
    ensure!(!root.dir.join("containers/c").exists(), "state left");
    ensure!(root.ps()?.is_empty());
    wait_until(Duration::from_secs(5), "process gone", || !alive(pid))?;
    Ok(())
}

#[test]
fn rm_stops_gracefully_through_init() -> Result<()> {
    let root = TestRoot::new("rmg");
    root.run_d("c", &["--init"], &["sleep", "100"])?;
    let start = std::time::Instant::now();
    root.ok(&["rm", "c"])?;
    // The init forwards SIGTERM, so rm does not wait out its grace period.
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "rm took {:?}",
        start.elapsed()
    );
    ensure!(root.ps()?.is_empty());
    Ok(())
}

#[test]
fn two_roots_run_containers_of_the_same_name() -> Result<()> {
    let a = TestRoot::new("rootA");
    let b = TestRoot::new("rootB");
    let pa = a.run_d("web", &[], &["sh", "-c", TICKER])?;
    let pb = b.run_d("web", &[], &["sh", "-c", TICKER])?;
    ensure!(pa != pb);
    ensure!(a.cgroup("web")? != b.cgroup("web")?);
    ensure!(a.status("web")? == "running" && b.status("web")? == "running");
    a.ok(&["freeze", "web"])?;
    ensure!(b.status("web")? == "running", "freezing one root froze the other");
    a.ok(&["rm", "-f", "web"])?;
    ensure!(b.status("web")? == "running");
    ensure!(alive(pb));
    Ok(())
}

/// Zombie children of `pid` after orphans had time to exit.
fn zombies_under(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|c| proc_state(*c) == Some('Z'))
        .collect()
}

#[test]
fn init_reaps_orphaned_zombies() -> Result<()> {
    let root = TestRoot::new("init");
    // Two orphans get reparented to PID 1 and exit at once; PID 1 is
    // `sleep`, which never reaps.
    let orphans = "(sleep 0.1 &); (sleep 0.1 &); exec sleep 100";
    let plain = root.run_d("plain", &[], &["sh", "-c", orphans])?;
    let with_init = root.run_d("init", &["--init"], &["sh", "-c", orphans])?;
    // Without init the zombies stay: this is what the test detects.
    wait_until(Duration::from_secs(5), "zombies under the plain container", || {
        zombies_under(plain).len() == 2
    })?;
    let comm = std::fs::read_to_string(format!("/proc/{with_init}/comm"))?;
    ensure!(comm.trim() == "migrate-init", "PID 1 is {comm}");
    std::thread::sleep(Duration::from_millis(300));
    ensure!(zombies_under(with_init).is_empty(), "init left zombies");
    ensure!(children(with_init).len() == 1, "init has {:?}", children(with_init));
    Ok(())
}

#[test]
fn foreground_run_returns_the_exit_status_and_cleans_up() -> Result<()> {
    let root = TestRoot::new("fg");
    let out = root.cmd(&["run", "--name", "fg", "--", "sh", "-c", "echo out=$$; exit 7"]);
    ensure!(out.status.code() == Some(7), "status {}", out.status);
    ensure!(String::from_utf8_lossy(&out.stdout).trim() == "out=1");
    ensure!(root.ps()?.is_empty(), "foreground container left state");
    Ok(())
}

#[test]
fn rootfs_pivots_into_a_directory() -> Result<()> {
    let root = TestRoot::new("rootfs");
    let rootfs = root.dir.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let out = root.ok(&[
        "run",
        "--name",
        "r",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "ls /; ls /dev; cat /proc/1/comm",
    ])?;
    for want in ["bin", "dev", "proc", "sys", "null", "urandom", "pts"] {
        ensure!(out.lines().any(|l| l == want), "{want} missing in: {out}");
    }
    ensure!(
        !out.lines().any(|l| l == "etc" || l == "usr"),
        "host root visible: {out}"
    );
    Ok(())
}

fn one_line_error(out: &std::process::Output) -> Result<String> {
    ensure!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    ensure!(err.lines().count() == 1 && err.starts_with("migrate: "), "error: {err}");
    ensure!(!err.contains("panicked"), "panic: {err}");
    Ok(err)
}

#[test]
fn bad_input_gets_a_clear_error_and_nothing_is_left() -> Result<()> {
    let root = TestRoot::new("errors");
    for args in [
        &["freeze", "nope"][..],
        &["exec", "nope", "--", "true"],
        &["rm", "nope"],
        &["logs", "nope"],
    ] {
        let err = one_line_error(&root.cmd(args))?;
        ensure!(err.contains("no container named nope"), "{err}");
    }
    let err = one_line_error(&root.cmd(&["run", "-d", "--name", "bad/name", "--", "true"]))?;
    ensure!(err.contains("invalid container name"), "{err}");

    // A command that does not exist: a clear error, and no cgroup or state.
    let err = one_line_error(&root.cmd(&["run", "-d", "--name", "x", "--", "/no/such/cmd"]))?;
    ensure!(err.contains("cannot execute") && err.contains("/no/such/cmd"), "{err}");
    ensure!(!root.dir.join("containers/x").exists(), "state left behind");
    ensure!(root.ps()?.is_empty());

    // A name in use.
    root.run_d("web", &[], &["sleep", "100"])?;
    let err = one_line_error(&root.cmd(&["run", "-d", "--name", "web", "--", "true"]))?;
    ensure!(err.contains("in use"), "{err}");
    root.ok(&["freeze", "web"])?;
    let err = one_line_error(&root.cmd(&["exec", "web", "--", "true"]))?;
    ensure!(err.contains("frozen"), "{err}");
    root.ok(&["rm", "-f", "web"])?;

    // A container whose process died is stopped; its name is free again.
    let pid = root.run_d("gone", &[], &["true"])?;
    wait_until(Duration::from_secs(5), "stopped", || {
        root.status("gone").ok().as_deref() == Some("stopped")
    })?;
    ensure!(!alive(pid) || root.status("gone")? == "stopped");
    let err = one_line_error(&root.cmd(&["exec", "gone", "--", "true"]))?;
    ensure!(err.contains("stopped"), "{err}");
    let err = one_line_error(&root.cmd(&["freeze", "gone"]))?;
    ensure!(err.contains("stopped"), "{err}");
    root.run_d("gone", &[], &["sleep", "100"])?;
    ensure!(root.status("gone")? == "running");

    // A corrupt state file: ps skips it, rm -f removes it.
    std::fs::create_dir_all(root.dir.join("containers/junk"))?;
    std::fs::write(root.dir.join("containers/junk/state.json"), "{oops")?;
    let err = one_line_error(&root.cmd(&["exec", "junk", "--", "true"]))?;
    ensure!(err.contains("unreadable"), "{err}");
    root.ok(&["rm", "-f", "junk"])?;
    ensure!(!root.dir.join("containers/junk").exists());
    Ok(())
}

#[test]
fn limits_are_applied_or_refused_clearly() -> Result<()> {
    let root = TestRoot::new("limits");
    let v2 = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4).map(String::from))
        .expect("cgroup2 mounted");
    let controllers = std::fs::read_to_string(Path::new(&v2).join("cgroup.controllers"))?;
    let out = root.cmd(&["run", "-d", "--name", "m", "--memory", "64M", "--", "sleep", "100"]);
    if controllers.split_whitespace().any(|c| c == "memory") {
        ensure!(out.status.success());
        let max = std::fs::read_to_string(root.cgroup("m")?.join("memory.max"))?;
        ensure!(max.trim() == (64u64 << 20).to_string(), "memory.max {max}");
    } else {
        let err = one_line_error(&out)?;
        ensure!(err.contains("memory controller is not available"), "{err}");
        ensure!(root.ps()?.is_empty(), "a refused run left state");
    }
    Ok(())
}

#[test]
fn logs_show_the_output() -> Result<()> {
    let root = TestRoot::new("logs");
    root.run_d("c", &[], &["sh", "-c", "echo one; echo two >&2; exec sleep 100"])?;
    wait_until(Duration::from_secs(5), "log", || root.log("c").lines().count() >= 2)?;
    let out = root.ok(&["logs", "c"])?;
    ensure!(out.contains("one\n") && out.contains("two\n"), "logs: {out}");
    // -f returns once the container stops.
    let root2 = TestRoot::new("logsf");
    root2.run_d("c", &[], &["sh", "-c", "for i in 1 2 3; do echo l$i; sleep 0.2; done"])?;
    let out = root2.ok(&["logs", "-f", "c"])?;
    ensure!(out.contains("l1\nl2\nl3\n"), "logs -f: {out}");
    Ok(())
}

#[test]
fn demo_runs() -> Result<()> {
    let out = std::process::Command::new(MIGRATE).arg("demo").output()?;
    ensure!(
        out.status.success(),
        "demo failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).contains("demo finished"));
    Ok(())
}

#[test]
fn identity_is_made_once_per_root() -> Result<()> {
    let a = TestRoot::new("idA");
    let b = TestRoot::new("idB");
    let first = a.ok(&["identity"])?;
    let again = a.ok(&["identity"])?;
    ensure!(first == again, "identity changed: {first} / {again}");
    let lines: Vec<&str> = first.lines().collect();
    ensure!(lines.len() == 2 && lines[0].ends_with("identity/cert.pem"), "{first}");
    ensure!(lines[1].split(':').count() == 32, "fingerprint {}", lines[1]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a.dir.join("identity/key.pem"))?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "key mode {mode:o}");
    ensure!(
        b.ok(&["identity"])?.lines().nth(1) != Some(lines[1]),
        "two roots share an identity"
    );
    // The fingerprint is the certificate's, as openssl computes it.
    if let Ok(out) = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(lines[0])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        ensure!(text.contains(lines[1]), "openssl says {text}");
    }
    Ok(())
}
