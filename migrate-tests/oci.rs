//! Containers started by runc: real OCI bundles (config from `runc spec`),
//! `runc run -d`, then checkpoint + restore, suspend + resume and live
//! migration with `--runtime runc`. Each time the container goes back to
//! runc: `runc state` says running with the restored init, `runc exec`
//! and `runc kill` reach it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::common::*;
use crate::migration::{Pair, Receiver};

/// A runc container from a fresh bundle, deleted when dropped.
struct RuncContainer {
    id: String,
    rootfs: PathBuf,
    bundle: PathBuf,
    /// runc's --root, if not its default.
    state_root: Option<PathBuf>,
}

impl RuncContainer {
    /// Writes the bundle's config (from `runc spec`) to run `args`, and
    /// starts it. The rootfs must be in place.
    fn start(bundle: &Path, id: &str, args: &[&str]) -> Result<Self> {
        Self::start_with(bundle, id, args, |_| Ok(()))
    }

    /// As `start`, with `edit` changing the config first.
    fn start_with(
        bundle: &Path,
        id: &str,
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value) -> Result<()>,
    ) -> Result<Self> {
        Self::bundle(bundle, id, args, edit)?.run()
    }

    /// `runc [--root DIR] ARGS...`
    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        if let Some(r) = &self.state_root {
            cmd.arg("--root").arg(r);
        }
        cmd
    }

    /// Starts the container of a written bundle: `runc run -d`.
    fn run(self) -> Result<Self> {
        let st = self
            .runc()
            .args(["run", "-d", &self.id])
            .current_dir(&self.bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(st.success(), "runc run -d failed");
        Ok(self)
    }

    /// Writes the bundle's config only (dropping the result deletes the
    /// container `id` from runc, if it got there).
    fn bundle(
        bundle: &Path,
        id: &str,
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value) -> Result<()>,
    ) -> Result<Self> {
        let rootfs = bundle.join("rootfs");
        for d in ["proc", "dev", "sys", "tmp", "run"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        let st = Command::new("runc").arg("spec").current_dir(bundle).status()?;
        ensure!(st.success(), "runc spec failed");
        let path = bundle.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(args);
        config["root"]["readonly"] = false.into();
        config["hostname"] = id.into();
        // A tmpfs of the bundle's own, besides /dev/shm.
        config["mounts"]
            .as_array_mut()
            .context("mounts")?
            .push(serde_json::json!({
                "destination": "/run",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755", "size=16m"]
            }));
        edit(&mut config)?;
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        Ok(Self {
            id: id.to_string(),
            rootfs,
            bundle: bundle.to_path_buf(),
            state_root: None,
        })
    }

    /// `runc state`: (status, init pid); ("gone", 0) if runc has no record.
    fn state(&self) -> Result<(String, i64)> {
        let out = self.runc().args(["state", &self.id]).output()?;
        if !out.status.success() {
            return Ok(("gone".into(), 0));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("runc state")?;
        Ok((
            v["status"].as_str().unwrap_or_default().to_string(),
            v["pid"].as_i64().unwrap_or(0),
        ))
    }

    /// Checks that runc knows it, running as `pid` (if given), and that
    /// `runc exec` reaches it.
    fn check_runc_owns(&self, pid: Option<i64>) -> Result<()> {
        let (status, runc_pid) = self.state()?;
        ensure!(status == "running", "runc state says {status}");
        if let Some(p) = pid {
            ensure!(runc_pid == p, "runc has pid {runc_pid}, the restored init is {p}");
            // In runc's cgroups: `runc ps` lists what they hold.
            let out = self.runc().args(["ps", "--format", "json", &self.id]).output()?;
            let pids: Vec<i64> = serde_json::from_slice(&out.stdout).context("runc ps")?;
            ensure!(pids.contains(&p), "runc ps lists {pids:?}, not the init {p}");
        }
        let out = self
            .runc()
            .args(["exec", &self.id, "/bin/sh", "-c", "hostname"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == self.id,
            "runc exec: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Runs `script` in it with `runc exec`; returns its output.
    fn exec(&self, script: &str) -> Result<String> {
        let out = self
            .runc()
            .args(["exec", &self.id, "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "runc exec {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `runc kill ID KILL` stops it, as runc sees it.
    fn kill_with_runc(&self) -> Result<()> {
        let st = self.runc().args(["kill", &self.id, "KILL"]).status()?;
        ensure!(st.success(), "runc kill failed");
        wait_until(Duration::from_secs(10), "runc to see it stopped", || {
            self.state().map(|s| s.0 == "stopped").unwrap_or(false)
        })
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = self.runc().args(["delete", "-f", &self.id]).status();
    }
}

/// Copies `bin` and the shared libraries it loads (per ldd) into `rootfs`
/// at the same paths.
fn copy_with_libs(bin: &str, rootfs: &Path) -> Result<()> {
    let out = Command::new("ldd").arg(bin).output().context("ldd")?;
    let mut files = vec![PathBuf::from(bin)];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let to = rootfs.join(f.strip_prefix("/")?);
        std::fs::create_dir_all(to.parent().context("parent")?)?;
        std::fs::copy(std::fs::canonicalize(&f)?, &to).with_context(|| format!("copy {}", f.display()))?;
    }
    Ok(())
}

/// The beats the container wrote into its own /tmp.
fn beats_in(rootfs: &Path) -> String {
    std::fs::read_to_string(rootfs.join("tmp/beats")).unwrap_or_default()
}

/// Waits for three more beats than now, and checks the whole heartbeat.
fn beats_on(rootfs: &Path) -> Result<()> {
    let at = beats(&beats_in(rootfs)).len() as u64;
    wait_until(Duration::from_secs(10), "the heartbeat to go on", || {
        beats(&beats_in(rootfs)).len() as u64 >= at + 3
    })?;
    check_heartbeat(&beats_in(rootfs)).map(|_| ())
}

/// The restored init's host pid from a restore/resume --json report, after
/// checking it was handed to runc.
fn handed_pid(report: &str) -> Result<i64> {
    let v: serde_json::Value = serde_json::from_str(report)?;
    ensure!(v["handed_back"]["runtime"] == "runc", "not handed to runc: {v}");
    v["handed_back"]["pid"].as_i64().context("handed_back.pid")
}

/// Live-migrates runc container `id` from a to b; returns the init pid
/// the destination handed to runc.
fn migrate_runc(from: &TestRoot, to: &TestRoot, id: &str, extra: &[&str]) -> Result<i64> {
    let mut recv = Receiver::start(to, "127.0.0.1", true, None)?;
    let mut args = vec!["send", "--runtime", "runc", id, recv.addr.as_str(), "--json"];
    args.extend_from_slice(extra);
    from.ok(&args).with_context(|| recv.stderr())?;
    let st = recv.wait(Duration::from_secs(30))?;
    ensure!(st.success(), "the receiver failed: {}", recv.stderr());
    let v: serde_json::Value = serde_json::from_str(&recv.stdout())?;
    ensure!(v["committed"] == true, "receiver stats: {v}");
    if v["handback_error"].is_string() {
        bail!("hand-back failed: {}", v["handback_error"]);
    }
    ensure!(v["handed_back"]["runtime"] == "runc", "not handed to runc: {v}");
    ensure!(from.ps()?.is_empty() && to.ps()?.is_empty(), "migrate kept a record");
    v["handed_back"]["pid"].as_i64().context("handed_back.pid")
}

#[test]
fn runc_shell_loop_goes_back_to_runc() -> Result<()> {
    let pair = Pair::new("oci")?;
    let bundle = pair.a.dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"))?;
    let id = format!("mig-oci-{}", std::process::id());
    // Files in its tmpfs mounts (one held open), which live only in memory.
    let script = "echo in-shm > /dev/shm/a; mkdir /run/d; echo in-run > /run/d/b; ln -s d/b /run/l; \
                  exec 3</dev/shm/a; \
                  i=0; while true; do i=$((i+1)); echo \"beat $i\" >> /tmp/beats; sleep 0.1; done";
    let tmpfs_intact = |c: &RuncContainer| -> Result<()> {
        let got = c.exec("cat /dev/shm/a /run/d/b /run/l; readlink /proc/1/fd/3")?;
        ensure!(got == "in-shm\nin-run\nin-run\n/dev/shm/a\n", "tmpfs contents: {got:?}");
        Ok(())
    };
    let c = RuncContainer::start(&bundle, &id, &["/bin/sh", "-c", script])?;
    wait_until(Duration::from_secs(10), "the runc container to beat", || {
        beats(&beats_in(&c.rootfs)).len() >= 3
    })?;
    c.check_runc_owns(None)?;
    tmpfs_intact(&c)?;

    // Checkpoint by its runc ID: runc forgets it, as after its own checkpoint.
    let img = pair.a.dir.join("image");
    let img = img.to_str().unwrap();
    pair.a.ok(&["checkpoint", "--runtime", "runc", &id, "--dir", img])?;
    ensure!(c.state()?.0 == "gone", "runc still has it: {:?}", c.state()?);
    let i: serde_json::Value = serde_json::from_str(&pair.a.ok(&["inspect", img, "--json"])?)?;
    ensure!(
        i["oci"]["runtime"] == "runc" && i["oci"]["id"] == id.as_str(),
        "{}",
        i["oci"]
    );
    let tmpfs: Vec<&str> = i["tmpfs"]
        .as_array()
        .context("tmpfs")?
        .iter()
        .filter_map(|t| t["target"].as_str())
        .collect();
    ensure!(tmpfs == ["/dev/shm", "/run"], "tmpfs carried: {tmpfs:?}");
    // Restored, and handed back to runc.
    let pid = handed_pid(&pair.a.ok(&["restore", "--dir", img, "--json"])?)?;
    c.check_runc_owns(Some(pid))?;
    ensure!(pair.a.ps()?.is_empty(), "migrate kept a record");
    tmpfs_intact(&c)?;
    beats_on(&c.rootfs)?;

    // Suspended and resumed.
    pair.a.ok(&["suspend", "--runtime", "runc", &id])?;
    ensure!(c.state()?.0 == "gone");
    let pid = handed_pid(&pair.a.ok(&["resume", &id, "--json"])?)?;
    c.check_runc_owns(Some(pid))?;
    beats_on(&c.rootfs)?;

    // Live-migrated to another root (same host, same runc) and back.
    let pid = migrate_runc(&pair.a, &pair.b, &id, &[])?;
    c.check_runc_owns(Some(pid))?;
    beats_on(&c.rootfs)?;
    let pid = migrate_runc(&pair.b, &pair.a, &id, &[])?;
    c.check_runc_owns(Some(pid))?;
    tmpfs_intact(&c)?;
    beats_on(&c.rootfs)?;

    // runc's own kill ends it.
    c.kill_with_runc()
}

/// A network namespace made with `ip netns add`, deleted when dropped.
struct NamedNetns(String);

impl NamedNetns {
    fn new(name: &str) -> Result<Self> {
        let st = Command::new("ip").args(["netns", "add", name]).status()?;
        ensure!(st.success(), "ip netns add {name}");
        Ok(Self(name.to_string()))
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The inode of a network namespace file.
fn netns_ino(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

/// Containers whose network namespace is not their own (the host's, or
/// one made outside, as Podman's is) stay in it across a checkpoint and
/// restore.
#[test]
fn runc_network_namespace_from_outside_is_kept() -> Result<()> {
    let root = TestRoot::new("oci-netns");
    let pid_tag = std::process::id();
    let ns = NamedNetns::new(&format!("mig-oci-{pid_tag}"))?;
    let script = "i=0; while true; do i=$((i+1)); echo \"beat $i\" >> /tmp/beats; sleep 0.1; done";
    let set_net = |path: Option<PathBuf>| {
        move |config: &mut serde_json::Value| -> Result<()> {
            let list = config["linux"]["namespaces"].as_array_mut().context("namespaces")?;
            list.retain(|n| n["type"] != "network");
            if let Some(p) = &path {
                list.push(serde_json::json!({"type": "network", "path": p}));
            }
            Ok(())
        }
    };
    let cases = [
        ("joined", Some(ns.path()), ns.path()),
        ("host", None, PathBuf::from("/proc/self/ns/net")),
    ];
    for (tag, path, want) in cases {
        let bundle = root.dir.join(tag);
        busybox_rootfs(&bundle.join("rootfs"))?;
        let id = format!("mig-ocn-{tag}-{pid_tag}");
        let c = RuncContainer::start_with(&bundle, &id, &["/bin/sh", "-c", script], set_net(path))?;
        let want = netns_ino(&want)?;
        ensure!(netns_ino(&PathBuf::from(format!("/proc/{}/ns/net", c.state()?.1)))? == want);
        let img = root.dir.join(format!("{tag}-image"));
        let img = img.to_str().unwrap();
        root.ok(&["checkpoint", "--runtime", "runc", &id, "--dir", img])?;
        let pid = handed_pid(&root.ok(&["restore", "--dir", img, "--json"])?)?;
        c.check_runc_owns(Some(pid))?;
        let now = netns_ino(&PathBuf::from(format!("/proc/{pid}/ns/net")))?;
        ensure!(now == want, "{tag}: restored into another network namespace");
        beats_on(&c.rootfs)?;
        c.kill_with_runc()?;
    }
    Ok(())
}

#[test]
fn runc_redis_keeps_its_keys() -> Result<()> {
    let pair = Pair::new("oci-redis")?;
    let bundle = pair.a.dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    busybox_rootfs(&rootfs)?;
    copy_with_libs("/usr/bin/redis-server", &rootfs)?;
    let id = format!("mig-ocr-{}", std::process::id());
    // In a runc state directory of its own (as Docker's runc keeps its).
    let runc_root = pair.a.dir.join("runc-root");
    let runc_root_s = runc_root.to_str().unwrap();
    let mut c = RuncContainer::bundle(
        &bundle,
        &id,
        &[
            "/usr/bin/redis-server",
            "--port",
            "0",
            "--unixsocket",
            "/tmp/redis.sock",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/tmp",
        ],
        |_| Ok(()),
    )?;
    c.state_root = Some(runc_root.clone());
    let c = c.run()?;
    let sock = rootfs.join("tmp/redis.sock");
    crate::programs::load_redis_keys(&sock, 50_000)?;

    let img = pair.a.dir.join("image");
    let img = img.to_str().unwrap();
    pair.a.ok(&[
        "checkpoint",
        "--runtime",
        "runc",
        "--runtime-root",
        runc_root_s,
        &id,
        "--dir",
        img,
    ])?;
    ensure!(c.state()?.0 == "gone");
    let pid = handed_pid(&pair.a.ok(&["restore", "--dir", img, "--json"])?)?;
    c.check_runc_owns(Some(pid))?;
    crate::programs::check_redis_keys(&sock, 50_000)?;
    ensure!(crate::programs::redis(&sock, &["set", "restored", "1"])? == "OK");

    let pid = migrate_runc(&pair.a, &pair.b, &id, &["--runtime-root", runc_root_s])?;
    c.check_runc_owns(Some(pid))?;
    crate::programs::check_redis_keys(&sock, 50_001)?;
    ensure!(crate::programs::redis(&sock, &["get", "restored"])? == "1");
    c.kill_with_runc()
}

/// A container migrate started can be handed to runc too, given a bundle
/// for it.
#[test]
fn a_container_migrate_started_goes_to_runc() -> Result<()> {
    let root = TestRoot::new("oci-native");
    let bundle = root.dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"))?;
    let id = format!("mig-ocm-{}", std::process::id());
    let script = "i=0; while true; do i=$((i+1)); echo \"beat $i\" >> /tmp/beats; sleep 0.1; done";
    let c = RuncContainer::bundle(&bundle, &id, &["/bin/sh", "-c", script], |_| Ok(()))?;
    let rootfs = c.rootfs.to_str().unwrap();
    root.run_d(
        &id,
        &["--rootfs", rootfs, "--hostname", &id],
        &["/bin/sh", "-c", script],
    )?;
    let img = root.dir.join("image");
    let img = img.to_str().unwrap();
    root.ok(&["checkpoint", &id, "--dir", img])?;
    let out = root.ok(&[
        "restore",
        "--dir",
        img,
        "--runtime",
        "runc",
        "--bundle",
        bundle.to_str().unwrap(),
        "--json",
    ])?;
    c.check_runc_owns(Some(handed_pid(&out)?))?;
    ensure!(root.ps()?.is_empty(), "migrate kept a record");
    beats_on(&c.rootfs)?;
    c.kill_with_runc()
}

#[test]
fn unknown_runtime_and_container_are_refused() -> Result<()> {
    let root = TestRoot::new("oci-bad");
    let out = root.cmd(&["checkpoint", "--runtime", "docker", "x", "--dir", "/tmp/none"]);
    ensure!(String::from_utf8_lossy(&out.stderr).contains("runc or crun"));
    let out = root.cmd(&[
        "checkpoint",
        "--runtime",
        "runc",
        "no-such-container",
        "--dir",
        "/tmp/none",
    ]);
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("runc state no-such-container"));
    // A hand-back that can not happen leaves the container running under
    // migrate, and says so.
    root.run_d("plain", &[], &["sleep", "1000"])?;
    let img = root.dir.join("plain-image");
    let img = img.to_str().unwrap();
    root.ok(&["checkpoint", "plain", "--dir", img])?;
    let out = root.cmd(&["restore", "--dir", img, "--bundle", "/nowhere"]);
    ensure!(String::from_utf8_lossy(&out.stderr).contains("--bundle needs --runtime"));
    let out = root.cmd(&["restore", "--dir", img, "--runtime", "runc", "--bundle", "/nowhere"]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("/nowhere") && err.contains("runs on under migrate"),
        "{err}"
    );
    ensure!(root.status("plain")? == "running");
    root.ok(&["rm", "-f", "plain"])?;
    // The CRIU stand-in refuses what it does not serve, in one line.
    let out = root.cmd(&["swrk", "1"]);
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("for OCI runtimes"));
    Ok(())
}

/// `runc run -d ID > FILE` with FILE outside the container's root: the
/// container's stdout is a file on the host's mounts. Checkpoint,
/// restore and a migration keep writing to that very file, at its offset,
/// with no beat lost or written twice.
#[test]
fn runc_stdout_to_a_host_file_survives() -> Result<()> {
    let pair = Pair::new("oci-out")?;
    let bundle = pair.a.dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"))?;
    let id = format!("mig-out-{}", std::process::id());
    let script = "i=0; while true; do i=$((i+1)); echo \"beat $i\"; sleep 0.1; done";
    let c = RuncContainer::bundle(&bundle, &id, &["/bin/sh", "-c", script], |_| Ok(()))?;
    let out = pair.a.dir.join("out.log");
    let st = c
        .runc()
        .args(["run", "-d", &id])
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null())
        .status()?;
    ensure!(st.success(), "runc run -d failed");
    let beats_on = || -> Result<()> {
        let log = || std::fs::read_to_string(&out).unwrap_or_default();
        let at = beats(&log()).len();
        wait_until(Duration::from_secs(10), "beats in the host file", || {
            beats(&log()).len() >= at + 3
        })?;
        check_heartbeat(&log()).map(|_| ())
    };
    beats_on()?;
    let img = pair.a.dir.join("image");
    let img = img.to_str().unwrap();
    pair.a.ok(&["checkpoint", "--runtime", "runc", &id, "--dir", img])?;
    let pid = handed_pid(&pair.a.ok(&["restore", "--dir", img, "--json"])?)?;
    c.check_runc_owns(Some(pid))?;
    let fd1 = std::fs::read_link(format!("/proc/{pid}/fd/1"))?;
    ensure!(fd1 == out, "stdout of the restored init is {}", fd1.display());
    beats_on()?;
    let pid = migrate_runc(&pair.a, &pair.b, &id, &[])?;
    c.check_runc_owns(Some(pid))?;
    beats_on()?;
    c.kill_with_runc()
}
