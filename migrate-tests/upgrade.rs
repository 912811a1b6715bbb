//! Rolling upgrades: a cluster is upgraded one host at a time and images
//! outlive binaries, so this build restores an image the previous release
//! wrote and receives a container the previous release sends.
//! migrate-tests/run builds the previous release (the commit named in
//! migrate-tests/previous-release) and names its binary in
//! MIGRATE_PREVIOUS; without it this test says so and does nothing.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::common::*;
use crate::migration::{Pair, Receiver};

fn previous() -> Option<PathBuf> {
    std::env::var_os("MIGRATE_PREVIOUS").map(PathBuf::from)
}

/// The previous release's `migrate --root ROOT ARGS...`.
fn old(bin: &PathBuf, root: &TestRoot, args: &[&str]) -> Result<Output> {
    let out = Command::new(bin).arg("--root").arg(&root.dir).args(args).output()?;
    ensure!(
        out.status.success(),
        "previous release: migrate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

#[test]
fn previous_release_images_and_senders_work() -> Result<()> {
    let Some(bin) = previous() else {
        eprintln!("skipped: MIGRATE_PREVIOUS is not set (migrate-tests/run builds the previous release)");
        return Ok(());
    };
    ensure!(
        bin.exists(),
        "MIGRATE_PREVIOUS names {}, which is missing",
        bin.display()
    );
    let pair = Pair::new("upgrade")?;
    let memory = workload("memory");
    old(
        &bin,
        &pair.a,
        &["run", "-d", "--name", "u", "--", memory.to_str().unwrap(), "8"],
    )?;
    let last = wait_beats(&pair.a, "u", 3)?;
    // An image of the previous format, restored by this build.
    let img = pair.a.dir.join("image");
    let img = img.to_str().unwrap();
    old(&bin, &pair.a, &["checkpoint", "u", "--dir", img])?;
    pair.a.ok(&["restore", "--dir", img])?;
    let last = wait_beats(&pair.a, "u", last + 3)?;
    // A sender of the previous release, received by this build.
    old(&bin, &pair.a, &["suspend", "u"])?;
    pair.a.ok(&["resume", "u"])?;
    let last = wait_beats(&pair.a, "u", last + 3)?;
    let mut recv = Receiver::start(&pair.b, "127.0.0.1", true, None)?;
    old(&bin, &pair.a, &["send", "u", &recv.addr]).with_context(|| recv.stderr())?;
    ensure!(recv.wait(Duration::from_secs(30))?.success(), "{}", recv.stderr());
    ensure!(pair.b.status("u")? == "running");
    ensure!(pair.a.ps()?.is_empty(), "the source kept it");
    // The log came along whole, and the heartbeat goes on.
    wait_beats(&pair.b, "u", last + 3)?;
    Ok(())
}
