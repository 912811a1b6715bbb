//! The benchmark is not part of the suite, but its `--quick` mode must keep
//! working: run it small (with the debug binary, no QUIC limit) and check
//! that it writes the JSON rows the documentation promises.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::common::*;

#[test]
fn bench_quick_writes_valid_json() -> Result<()> {
    let dir = TestRoot::new("bench");
    let json = dir.dir.join("bench.json");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrate-tests/bench"))
        .args([
            "--quick",
            "--sizes",
            "16",
            // Enough processes that their pre-copy shadows, were they one
            // mapping, would be more than the machine's memory (a fork of
            // the restorer then failed with ENOMEM).
            "--many",
            "40",
            "--migrate-sizes",
            "16",
            "--no-quic",
            "--migrate",
            MIGRATE,
        ])
        .arg("--json")
        .arg(&json)
        .output()?;
    ensure!(
        out.status.success(),
        "bench failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let rows = doc["rows"].as_array().context("rows")?;
    ensure!(rows.len() == 2, "rows: {rows:?}");
    for r in rows {
        for k in [
            "workload",
            "checkpoint_gbps",
            "restore_gbps",
            "limit_gbps",
            "downtime_ms",
            "image_bytes",
        ] {
            ensure!(r.get(k).is_some(), "row lacks {k}: {r}");
        }
        ensure!(r["restored_ok"] == true, "{r}");
        if doc["criu"].as_str().map(|c| c.starts_with('/')).unwrap_or(false) {
            ensure!(r.get("criu_dump_s").is_some() || r.get("criu_error").is_some());
        }
    }
    ensure!(doc["migrations"].as_array().map(|m| m.len()) == Some(2));
    Ok(())
}
