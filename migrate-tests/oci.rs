//! Containers started by runc: a real OCI bundle (busybox rootfs, config
//! from `runc spec`), `runc run -d`, then checkpoint and migration with
//! `--runtime runc`. The restored container runs under migrate's own
//! management (see docs/oci.md for why, and what that means).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::common::*;

/// A runc container from a fresh bundle, deleted when dropped.
struct RuncContainer {
    id: String,
}

impl RuncContainer {
    /// Starts `script` under busybox sh in a new bundle at `bundle`.
    fn start(bundle: &Path, id: &str, script: &str) -> Result<Self> {
        let rootfs = bundle.join("rootfs");
        busybox_rootfs(&rootfs)?;
        for d in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        let st = Command::new("runc").arg("spec").current_dir(bundle).status()?;
        ensure!(st.success(), "runc spec failed");
        let path = bundle.join("config.json");
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
        config["root"]["readonly"] = false.into();
        config["hostname"] = id.into();
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        let st = Command::new("runc")
            .args(["run", "-d", id])
            .current_dir(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        ensure!(st.success(), "runc run -d failed");
        Ok(Self { id: id.to_string() })
    }

    fn status(&self) -> Result<String> {
        let out = Command::new("runc").args(["state", &self.id]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("runc state")?;
        Ok(v["status"].as_str().unwrap_or_default().to_string())
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["delete", "-f", &self.id]).status();
    }
}

/// The beats the container wrote into its own /tmp.
fn beats_in(rootfs: &Path) -> String {
    std::fs::read_to_string(rootfs.join("tmp/beats")).unwrap_or_default()
}

#[test]
fn runc_container_checkpoints_restores_and_migrates() -> Result<()> {
    let pair = crate::migration::Pair::new("oci")?;
    let bundle = pair.a.dir.join("bundle");
    let id = format!("mig-oci-{}", std::process::id());
    let script = "i=0; while true; do i=$((i+1)); echo \"beat $i\" >> /tmp/beats; sleep 0.1; done";
    let c = RuncContainer::start(&bundle, &id, script)?;
    let rootfs = bundle.join("rootfs");
    wait_until(Duration::from_secs(10), "the runc container to beat", || {
        beats(&beats_in(&rootfs)).len() >= 3
    })?;
    ensure!(c.status()? == "running");

    // Checkpoint by its runc ID; runc sees it stopped, migrate restores it.
    let img = pair.a.dir.join("image");
    pair.a
        .ok(&["checkpoint", "--runtime", "runc", &id, "--dir", img.to_str().unwrap()])?;
    ensure!(c.status()? == "stopped", "runc still sees it running");
    let at = beats(&beats_in(&rootfs)).len() as u64;
    pair.a.ok(&["restore", "--dir", img.to_str().unwrap()])?;
    wait_until(Duration::from_secs(10), "the heartbeat to go on", || {
        beats(&beats_in(&rootfs)).len() as u64 >= at + 3
    })?;
    check_heartbeat(&beats_in(&rootfs))?;

    // And live-migrated to another root.
    crate::migration::migrate(&pair.a, &pair.b, &id, &[])?;
    let at = beats(&beats_in(&rootfs)).len() as u64;
    wait_until(Duration::from_secs(10), "the heartbeat to go on after the move", || {
        beats(&beats_in(&rootfs)).len() as u64 >= at + 3
    })?;
    check_heartbeat(&beats_in(&rootfs))?;
    pair.b.ok(&["rm", "-f", &id])?;
    Ok(())
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
    Ok(())
}
