//! The fuzz targets' committed corpus (fuzz/corpus/TARGET/), every input
//! run through the same decoders as under libFuzzer (fuzz/decoders.rs), in
//! this build: a decoder change that breaks on an input fuzzing once found
//! fails here, without a nightly toolchain. Fuzzing itself (new inputs) is
//! `fuzz/run`.

use std::path::Path;

use anyhow::{ensure, Context, Result};

#[allow(dead_code)]
#[path = "../fuzz/decoders.rs"]
mod decoders;

/// One decoder's `run`.
type Decoder = fn(&[u8]);

/// Runs `run` on every file of fuzz/corpus/`target`; returns how many.
fn replay(target: &str, run: Decoder) -> Result<usize> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let data = std::fs::read(&path)?;
        let caught = std::panic::catch_unwind(|| run(&data));
        ensure!(caught.is_ok(), "{target}: input {} fails", path.display());
        n += 1;
    }
    ensure!(n > 0, "{target}: the corpus in {} is empty", dir.display());
    Ok(n)
}

#[test]
fn committed_fuzz_corpus_decodes_without_a_panic() -> Result<()> {
    let targets: [(&str, Decoder); 5] = [
        ("section", decoders::section::run),
        ("pages", decoders::pages::run),
        ("precopy", decoders::precopy::run),
        ("wire", decoders::wire::run),
        ("criu_rpc", decoders::criu_rpc::run),
    ];
    for (target, run) in targets {
        let n = replay(target, run)?;
        eprintln!("{target}: {n} inputs");
    }
    Ok(())
}
