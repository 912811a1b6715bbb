//! Engine II: real programs from Debian's packages, each checked by its
//! own client after restore, and the fd workload that verifies queued
//! data, eventfd, timerfd, signalfd and epoll state itself.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::checkpoint::survives_all_cycles;
use crate::common::*;

#[test]
fn fd_state_survives() -> Result<()> {
    let root = TestRoot::new("fds");
    root.run_d("fds", &[], &[workload("fds").to_str().unwrap()])?;
    survives_all_cycles(&root, "fds")
}

#[test]
fn cpython_thread_and_dict_survive() -> Result<()> {
    let root = TestRoot::new("cpython");
    start_cpython(&root, "py")?;
    survives_all_cycles(&root, "py")
}

/// CPython with a thread filling a dict, checking it every beat.
pub fn start_cpython(root: &TestRoot, name: &str) -> Result<()> {
    let script = root.dir.join("dict.py");
    std::fs::write(
        &script,
        "import threading, time\n\
         d = {}\n\
         def worker():\n\
         \x20   n = 0\n\
         \x20   while True:\n\
         \x20       n += 1\n\
         \x20       d[n] = str(n) * 3\n\
         \x20       time.sleep(0.005)\n\
         threading.Thread(target=worker, daemon=True).start()\n\
         beat, last = 0, 0\n\
         while True:\n\
         \x20   beat += 1\n\
         \x20   m = len(d)\n\
         \x20   if any(d[k] != str(k) * 3 for k in range(1, m + 1)) or m < last:\n\
         \x20       print('FAIL dict', m, last, flush=True)\n\
         \x20   if beat > 3 and m == last:\n\
         \x20       print('FAIL thread stalled', m, flush=True)\n\
         \x20   last = m\n\
         \x20   print(f'beat {beat}', flush=True)\n\
         \x20   time.sleep(0.1)\n",
    )?;
    root.run_d(name, &[], &["/usr/bin/python3", script.to_str().unwrap()])?;
    Ok(())
}

/// A bash loop hashing `yes | head` through a pipeline every beat.
pub const PIPELINE: &str = "want=$(yes | head -c 200000 | sha256sum); i=0; while true; do i=$((i+1)); \
                  h=$(yes | head -c 200000 | sha256sum); [ \"$h\" = \"$want\" ] || echo \"FAIL hash $h\"; \
                  echo \"beat $i\"; sleep 0.1; done";

#[test]
fn shell_pipeline_survives() -> Result<()> {
    let root = TestRoot::new("pipeline");
    root.run_d("pipe", &[], &["bash", "-c", PIPELINE])?;
    survives_all_cycles(&root, "pipe")
}

/// `redis-cli -s SOCK ARGS...`
pub fn redis(sock: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .context("run redis-cli")?;
    ensure!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts redis-server as container `name` of `root` on a unix socket
/// and loads `n` keys; returns the socket.
pub fn start_redis_with_keys(root: &TestRoot, name: &str, n: u32) -> Result<std::path::PathBuf> {
    let data = root.dir.join("redis");
    std::fs::create_dir_all(&data)?;
    let sock = data.join("redis.sock");
    root.run_d(
        name,
        &["--init"],
        &[
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            sock.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            data.to_str().unwrap(),
        ],
    )?;
    load_redis_keys(&sock, n)?;
    Ok(sock)
}

/// Waits for the redis-server at `sock`, loads `n` keys into it and checks
/// them.
pub fn load_redis_keys(sock: &std::path::Path, n: u32) -> Result<()> {
    wait_until(Duration::from_secs(10), "redis socket", || {
        redis(sock, &["ping"]).is_ok()
    })?;
    // The keys through the pipe mode, in the RESP protocol.
    let mut resp = Vec::new();
    for i in 0..n {
        let (k, v) = (format!("key:{i}"), format!("value:{i}"));
        write!(
            resp,
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        )?;
    }
    let mut child = Command::new("redis-cli")
        .arg("-s")
        .arg(sock)
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(&resp)?;
    ensure!(child.wait()?.success(), "redis-cli --pipe failed");
    check_redis_keys(sock, u64::from(n))
}

/// The database holds `size` keys, and sample keys have their values.
pub fn check_redis_keys(sock: &std::path::Path, size: u64) -> Result<()> {
    ensure!(redis(sock, &["dbsize"])? == size.to_string(), "dbsize");
    for i in [0, 777, 49_999] {
        ensure!(redis(sock, &["get", &format!("key:{i}")])? == format!("value:{i}"));
    }
    Ok(())
}

#[test]
fn redis_with_50k_keys_survives() -> Result<()> {
    let root = TestRoot::new("redis");
    let sock = start_redis_with_keys(&root, "redis", 50_000)?;
    for round in 0..2 {
        let dir = root.dir.join(format!("image-{round}"));
        root.ok(&["checkpoint", "redis", "--dir", dir.to_str().unwrap()])?;
        root.ok(&["restore", "--dir", dir.to_str().unwrap()])?;
        check_redis_keys(&sock, 50_000 + round)?;
        ensure!(
            redis(&sock, &["set", &format!("after:{round}"), "yes"])? == "OK",
            "writes after restore"
        );
    }
    root.ok(&["suspend", "redis"])?;
    root.ok(&["resume", "redis"])?;
    ensure!(redis(&sock, &["get", "after:1"])? == "yes");
    Ok(())
}

pub fn curl(sock: &std::path::Path) -> Result<String> {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--unix-socket"])
        .arg(sock)
        .arg("http://container/index.html")
        .output()?;
    if !out.status.success() {
        bail!("curl failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn nginx_master_and_workers_survive() -> Result<()> {
    let root = TestRoot::new("nginx");
    let sock = start_nginx(&root)?;
    let before = nginx_workers_uid(&root)?;
    ensure!(before.len() == 2, "workers: {before:?}");
    for round in 0..2 {
        let dir = root.dir.join(format!("image-{round}"));
        root.ok(&["checkpoint", "nginx", "--dir", dir.to_str().unwrap()])?;
        root.ok(&["restore", "--dir", dir.to_str().unwrap()])?;
        for _ in 0..5 {
            ensure!(curl(&sock)? == "hello from the container\n");
        }
        ensure!(nginx_workers_uid(&root)? == before, "worker credentials changed");
    }
    Ok(())
}

/// The Uid lines of the nginx container's workers.
pub fn nginx_workers_uid(root: &TestRoot) -> Result<Vec<String>> {
    let pid = root.pid("nginx")?;
    Ok(children(pid)
        .into_iter()
        .filter_map(|c| std::fs::read_to_string(format!("/proc/{c}/status")).ok())
        .filter_map(|s| s.lines().find(|l| l.starts_with("Uid:")).map(String::from))
        .collect())
}

/// nginx (master and two workers as nobody) as container "nginx", serving
/// a file on a unix socket; returns the socket once it serves.
pub fn start_nginx(root: &TestRoot) -> Result<std::path::PathBuf> {
    let d = root.dir.join("nginx");
    std::fs::create_dir_all(d.join("www"))?;
    std::fs::create_dir_all(d.join("tmp"))?;
    std::fs::write(d.join("www/index.html"), "hello from the container\n")?;
    let sock = d.join("nginx.sock");
    let conf = d.join("nginx.conf");
    let p = d.to_str().unwrap();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process on; worker_processes 2; pid {p}/nginx.pid; error_log {p}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log {p}/access.log; client_body_temp_path {p}/tmp; proxy_temp_path {p}/tmp;\n\
             fastcgi_temp_path {p}/tmp; uwsgi_temp_path {p}/tmp; scgi_temp_path {p}/tmp;\n\
             server {{ listen unix:{p}/nginx.sock; root {p}/www; }} }}\n"
        ),
    )?;
    // The workers run as nobody and must be able to read the files.
    Command::new("chmod").args(["-R", "a+rX"]).arg(&root.dir).status()?;
    root.run_d("nginx", &[], &["nginx", "-c", conf.to_str().unwrap()])?;
    wait_until(Duration::from_secs(10), "nginx to serve", || curl(&sock).is_ok())?;
    Ok(sock)
}

#[test]
fn interval_timers_and_altstack_survive() -> Result<()> {
    let root = TestRoot::new("timers");
    root.run_d("timers", &[], &[workload("timers").to_str().unwrap()])?;
    survives_all_cycles(&root, "timers")
}

#[test]
fn files_share_offsets_and_deleted_files_survive() -> Result<()> {
    let root = TestRoot::new("files");
    let dir = root.dir.join("data");
    std::fs::create_dir_all(&dir)?;
    root.run_d(
        "files",
        &[],
        &[workload("files").to_str().unwrap(), dir.to_str().unwrap(), "lease"],
    )?;
    survives_all_cycles(&root, "files")?;
    // A file opened read-only that changed is refused at restore.
    let image = root.dir.join("changed");
    root.ok(&["checkpoint", "files", "--dir", image.to_str().unwrap()])?;
    std::fs::write(dir.join("ro.txt"), "0123456789abc")?;
    let out = root.cmd(&["restore", "--dir", image.to_str().unwrap()]);
    ensure!(!out.status.success(), "restore with a changed file succeeded");
    ensure!(String::from_utf8_lossy(&out.stderr).contains("changed since the checkpoint"));
    // A deleted file over the cap fails the checkpoint, naming it.
    std::fs::write(dir.join("ro.txt"), "0123456789")?;
    root.ok(&["restore", "--dir", image.to_str().unwrap()])?;
    let out = root.cmd(&[
        "checkpoint",
        "files",
        "--dir",
        root.dir.join("capped").to_str().unwrap(),
        "--file-cap",
        "4",
    ]);
    ensure!(!out.status.success());
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("cap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(root.status("files")? == "running");
    Ok(())
}

#[test]
fn seccomp_filter_and_no_new_privs_survive() -> Result<()> {
    let root = TestRoot::new("seccomp");
    root.run_d("sc", &[], &[workload("seccomp").to_str().unwrap()])?;
    survives_all_cycles(&root, "sc")
}

#[test]
fn inotify_watches_survive() -> Result<()> {
    let root = TestRoot::new("inotify");
    let dir = root.dir.join("watched");
    std::fs::create_dir_all(&dir)?;
    root.run_d(
        "in",
        &[],
        &[workload("inotify").to_str().unwrap(), dir.to_str().unwrap()],
    )?;
    survives_all_cycles(&root, "in")
}
