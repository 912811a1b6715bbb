//! Fault injection for tests: `MIGRATE_FAIL_AT=STEP[,STEP...]` makes the
//! engine fail at each named step, as if that step had gone wrong there.
//! The integration tests walk every step and check that the container runs
//! on exactly one side afterwards, with nothing left behind.
//!
//! A step is a name such as `checkpoint:after-freeze`, or a name with the
//! process it concerns, `checkpoint:dump-process:1` (PID in the container).
//! `STEP=panic` panics there instead of failing (for the paths that must
//! not unwind). The list of steps is [`STEPS`]; docs/failure-model.md
//! says what the user sees at each.
//!
//! Unset (every real use), a check is one relaxed load.

use std::sync::OnceLock;

/// The environment variable naming the steps to fail at.
pub const VAR: &str = "MIGRATE_FAIL_AT";

/// Every step the engine checks, in the order a migration passes them.
/// Steps marked `:N` take a PID in the container.
pub const STEPS: &[&str] = &[
    "send:before-precopy",
    "send:after-precopy",
    "checkpoint:after-freeze",
    "checkpoint:after-seize",
    "checkpoint:after-files",
    "checkpoint:dump-process:N",
    "checkpoint:after-seal",
    "inject:after-set-regs",
    "restore:after-namespaces",
    "restore:fork-process:N",
    "restore:process:N",
    "restore:before-ready",
    "send:before-commit",
    "recv:before-resume",
];

/// A failure injected at a step.
#[derive(Debug, Clone, thiserror::Error)]
#[error("failure injected at step {step} ({VAR})")]
pub struct Injected {
    pub step: String,
}

/// What to do at each named step.
#[derive(Debug, Default)]
struct Plan {
    fail: Vec<String>,
    panic: Vec<String>,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let mut p = Plan::default();
        for item in std::env::var(VAR)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
        {
            match item.strip_suffix("=panic") {
                Some(step) => p.panic.push(step.to_string()),
                None => p.fail.push(item.to_string()),
            }
        }
        p
    })
}

/// Fails if step `step` is named in [`VAR`].
pub fn check(step: &str) -> Result<(), Injected> {
    let p = plan();
    if p.fail.is_empty() && p.panic.is_empty() {
        return Ok(());
    }
    if p.panic.iter().any(|s| s == step) {
        panic!("panic injected at step {step} ({VAR})");
    }
    if p.fail.iter().any(|s| s == step) {
        tracing::warn!("failure injected at step {step}");
        return Err(Injected { step: step.to_string() });
    }
    Ok(())
}

/// [`check`] for a step about process `pid` (in the container):
/// `NAME:PID`.
pub fn check_pid(step: &str, pid: i32) -> Result<(), Injected> {
    let p = plan();
    if p.fail.is_empty() && p.panic.is_empty() {
        return Ok(());
    }
    check(&format!("{step}:{pid}"))
}
