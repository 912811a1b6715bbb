//! Signal dispositions of a process: every handler with its flags, mask
//! and restorer. (Blocked masks are per thread, in `regs`.) Read and set
//! with injected rt_sigaction, since /proc does not show handlers.

use serde::{Deserialize, Serialize};

use super::remote::{self, nr, Remote};

pub type Error = remote::Error;
pub type Result<T> = std::result::Result<T, Error>;

/// struct kernel_sigaction for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// Every signal but SIGKILL and SIGSTOP.
fn signals() -> impl Iterator<Item = u32> {
    (1..=64u32).filter(|s| *s != libc::SIGKILL as u32 && *s != libc::SIGSTOP as u32 && !(32..=33).contains(s))
}

pub fn dump(remote: &Remote) -> Result<Vec<SigAction>> {
    let out = remote.scratch;
    let mut acts = Vec::new();
    for signo in signals() {
        remote.call("rt_sigaction (read)", nr::RT_SIGACTION, &[u64::from(signo), 0, out, 8])?;
        let mut b = [0u8; 32];
        remote.read(out, &mut b)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        acts.push(SigAction {
            signo,
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        });
    }
    Ok(acts)
}

/// Sets every disposition; signals missing from the image get SIG_DFL (the
/// restorer copy may have others, such as SIGPIPE ignored).
pub fn restore(remote: &Remote, acts: &[SigAction]) -> Result<()> {
    let at = remote.scratch;
    for signo in signals() {
        let a = acts.iter().find(|a| a.signo == signo).copied().unwrap_or(SigAction {
            signo,
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        });
        let mut b = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        remote.write(at, &b)?;
        remote.call("rt_sigaction (set)", nr::RT_SIGACTION, &[u64::from(signo), at, 0, 8])?;
    }
    Ok(())
}
