//! prctl state that /proc does not show, read and set by injected prctl:
//! per thread, the securebits (SECBIT_NOROOT, KEEP_CAPS... and their
//! locks), the TSC mode (PR_SET_TSC), the speculation controls (store
//! bypass, indirect branch) and the machine-check kill policy; per process,
//! memory-deny-write-execute (PR_SET_MDWE) and KSM merging of the whole
//! address space (PR_SET_MEMORY_MERGE). And the address space's core dump
//! filter (/proc/PID/coredump_filter), read and written from outside.
//!
//! Section `prctls` (from image format 4; an image without it restores
//! with what a restored task gets: all of these at their defaults).
//! The securebits go in with the credentials (setting them takes
//! CAP_SETPCAP, which the credentials may drop); the rest after the
//! credentials, MDWE last (it refuses later executable mappings).

use serde::{Deserialize, Serialize};

use super::remote::{self, nr, Remote};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error("process {pid}: its core dump filter: {source}")]
    Filter {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid}: section prctls holds {what} this build does not know; the image is damaged")]
    Damaged { pid: i32, what: &'static str },
    #[error("process {pid}, thread {tid}: {what}, which migrate does not carry yet")]
    Uncarried { pid: i32, tid: i32, what: &'static str },
    #[error("process {pid}, thread {tid}: has a {what} of its own ({value}, its process's is {main}), which migrate does not carry")]
    ThreadOwn {
        pid: i32,
        tid: i32,
        what: &'static str,
        value: u64,
        main: u64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One thread's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPrctls {
    pub securebits: u32,
    /// PR_TSC_ENABLE (1) or PR_TSC_SIGSEGV (2).
    pub tsc: u32,
    /// PR_GET_SPECULATION_CTRL for store bypass and indirect branch.
    pub spec: [u32; 2],
    /// PR_MCE_KILL_GET: late (0), early (1) or the default (2).
    pub mce_kill: u32,
}

/// One process's, its threads in the order of its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prctls {
    pub mdwe: u32,
    pub memory_merge: bool,
    pub coredump_filter: u32,
    pub threads: Vec<ThreadPrctls>,
}

/// The section `prctls`: (PID in the container, its state).
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "prctls";
    const VERSION: u32 = 4;
    const SINCE_FORMAT: u32 = 4;
    type State = Vec<(i32, Prctls)>;
    type Error = Error;

    fn validate(state: &Self::State) -> Result<()> {
        state.iter().try_for_each(|(pid, p)| p.check(*pid))
    }
}

const PR_GET_SECUREBITS: u64 = 27;
const PR_SET_SECUREBITS: u64 = 28;
const PR_GET_TSC: u64 = 25;
const PR_SET_TSC: u64 = 26;
const PR_MCE_KILL: u64 = 33;
const PR_MCE_KILL_GET: u64 = 34;
const PR_MCE_KILL_SET: u64 = 1;
const PR_GET_SPECULATION_CTRL: u64 = 52;
const PR_SET_SPECULATION_CTRL: u64 = 53;
/// PR_SPEC_STORE_BYPASS, PR_SPEC_INDIRECT_BRANCH.
const SPEC_KINDS: [u64; 2] = [0, 1];
/// PR_SPEC_PRCTL: the control can be set by prctl.
const PR_SPEC_PRCTL: u32 = 1;
const PR_SPEC_ENABLE: u32 = 2;
/// PR_SPEC_DISABLE, PR_SPEC_FORCE_DISABLE, PR_SPEC_DISABLE_NOEXEC.
const SPEC_SETTABLE: u32 = 4 | 8 | 16;
const PR_SET_MDWE: u64 = 65;
const PR_GET_MDWE: u64 = 66;
/// PR_MDWE_REFUSE_EXEC_GAIN, PR_MDWE_NO_INHERIT.
const MDWE_FLAGS: u32 = 1 | 2;
const PR_SET_MEMORY_MERGE: u64 = 67;
const PR_GET_MEMORY_MERGE: u64 = 68;
/// SECBIT_* and their locks (bits 0-7).
const SECUREBITS: u32 = 0xff;

const TSC_DEFAULT: u32 = 1;
/// Anonymous private and shared memory, ELF headers, private huge pages.
const COREDUMP_DEFAULT: u32 = 0x33;
const MCE_DEFAULT: u32 = 2;

impl Prctls {
    fn check(&self, pid: i32) -> Result<()> {
        let bad = |what| Err(Error::Damaged { pid, what });
        if self.mdwe & !MDWE_FLAGS != 0 {
            return bad("MDWE flags");
        }
        // Bits 0-8 (MMF_DUMP_FILTER_BITS).
        if self.coredump_filter & !0x1ff != 0 {
            return bad("core dump filter bits");
        }
        for t in &self.threads {
            if t.securebits & !SECUREBITS != 0 {
                return bad("securebits");
            }
            if !(1..=2).contains(&t.tsc) || t.mce_kill > 2 {
                return bad("a TSC mode or machine-check policy");
            }
            if t.spec
                .iter()
                .any(|s| s & !(PR_SPEC_PRCTL | PR_SPEC_ENABLE | SPEC_SETTABLE) != 0)
            {
                return bad("speculation controls");
            }
        }
        Ok(())
    }

    /// The securebits of thread `i` (0 for one the image does not have).
    pub fn securebits(&self, i: usize) -> u64 {
        self.threads.get(i).map(|t| u64::from(t.securebits)).unwrap_or(0)
    }
}

/// Reads the state of the stopped process behind `remote`, whose threads
/// (host TIDs) are `tids`, the main thread first.
pub fn dump(remote: &Remote, tids: &[i32]) -> Result<Prctls> {
    const PR_GET_PDEATHSIG: u64 = 2;
    const PR_GET_TIMERSLACK: u64 = 30;
    // Per thread, but carried once for the process (the parent-death
    // signal by kinds::creds, the timer slack by kinds::procattrs).
    let per_process = |t: &Remote| -> Result<[u64; 2]> {
        Ok([
            t.prctl_get_int("prctl(PR_GET_PDEATHSIG)", PR_GET_PDEATHSIG)? as u64,
            t.call("prctl(PR_GET_TIMERSLACK)", nr::PRCTL, &[PR_GET_TIMERSLACK])?,
        ])
    };
    let mut main = None;
    let mut threads = Vec::with_capacity(tids.len());
    for &tid in tids {
        let t = remote.thread(tid)?;
        let own = per_process(&t)?;
        // The first thread is the main one.
        let main = *main.get_or_insert(own);
        if let Some(i) = (0..2).find(|i| own[*i] != main[*i]) {
            return Err(Error::ThreadOwn {
                pid: remote.pid,
                tid,
                what: ["parent-death signal", "timer slack"][i],
                value: own[i],
                main: main[i],
            });
        }
        // x86 state a process may ask for that is not carried: CPUID
        // faulting (per thread), the AMX tile data permission (per process,
        // and it grows the xsave area). Kernels or CPUs without them say
        // EINVAL or ENODEV.
        const ARCH_GET_CPUID: u64 = 0x1011;
        const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
        const XFEATURE_XTILE_DATA: u64 = 1 << 18;
        let uncarried = |what| Error::Uncarried {
            pid: remote.pid,
            tid,
            what,
        };
        if t.call("arch_prctl(ARCH_GET_CPUID)", libc::SYS_arch_prctl, &[ARCH_GET_CPUID, 0])
            .ok()
            == Some(0)
        {
            return Err(uncarried("runs with CPUID faulting (arch_prctl ARCH_SET_CPUID)"));
        }
        let perm = t
            .call(
                "arch_prctl(ARCH_GET_XCOMP_PERM)",
                libc::SYS_arch_prctl,
                &[ARCH_GET_XCOMP_PERM, remote.scratch],
            )
            .and_then(|_| t.read_u64(remote.scratch));
        if perm.is_ok_and(|m| m & XFEATURE_XTILE_DATA != 0) {
            return Err(uncarried("may use AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM)"));
        }
        let get = |what, args: &[u64]| t.call(what, nr::PRCTL, args).map(|v| v as u32);
        let mut spec = [0; 2];
        for (s, kind) in spec.iter_mut().zip(SPEC_KINDS) {
            // EINVAL where the kernel has no such control.
            *s = get(
                "prctl(PR_GET_SPECULATION_CTRL)",
                &[PR_GET_SPECULATION_CTRL, kind, 0, 0, 0],
            )
            .unwrap_or(0);
        }
        threads.push(ThreadPrctls {
            securebits: get("prctl(PR_GET_SECUREBITS)", &[PR_GET_SECUREBITS])?,
            tsc: t
                .prctl_get_int("prctl(PR_GET_TSC)", PR_GET_TSC)
                .map(|v| v as u32)
                .unwrap_or(TSC_DEFAULT),
            spec,
            mce_kill: get("prctl(PR_MCE_KILL_GET)", &[PR_MCE_KILL_GET, 0, 0, 0, 0])?,
        });
    }
    let get = |what, op| remote.call(what, nr::PRCTL, &[op, 0, 0, 0, 0]).map(|v| v as u32);
    let filter =
        std::fs::read_to_string(format!("/proc/{}/coredump_filter", remote.pid)).map_err(|source| Error::Filter {
            pid: remote.pid,
            source,
        })?;
    Ok(Prctls {
        coredump_filter: u32::from_str_radix(filter.trim(), 16).unwrap_or(COREDUMP_DEFAULT),
        // EINVAL before Linux 6.3: none.
        mdwe: get("prctl(PR_GET_MDWE)", PR_GET_MDWE).unwrap_or(0),
        memory_merge: get("prctl(PR_GET_MEMORY_MERGE)", PR_GET_MEMORY_MERGE).unwrap_or(0) != 0,
        threads,
    })
}

/// Sets thread `thread`'s securebits: with its credentials, while it has
/// CAP_SETPCAP.
pub fn restore_securebits(thread: &Remote, bits: u64) -> Result<()> {
    thread.call("prctl(PR_SET_SECUREBITS)", nr::PRCTL, &[PR_SET_SECUREBITS, bits])?;
    Ok(())
}

/// Sets the rest on the restored process behind `remote` and its threads
/// `tids` (in the image's order), after the credentials; MDWE last.
pub fn restore(remote: &Remote, tids: &[i32], p: &Prctls) -> Result<()> {
    for (&tid, t) in tids.iter().zip(&p.threads) {
        let th = remote.thread(tid)?;
        let set = |what, args: &[u64]| th.call(what, nr::PRCTL, args).map(|_| ());
        if t.tsc != TSC_DEFAULT {
            set("prctl(PR_SET_TSC)", &[PR_SET_TSC, u64::from(t.tsc)])?;
        }
        for (s, kind) in t.spec.iter().zip(SPEC_KINDS) {
            if s & PR_SPEC_PRCTL != 0 && s & SPEC_SETTABLE != 0 {
                set(
                    "prctl(PR_SET_SPECULATION_CTRL)",
                    &[PR_SET_SPECULATION_CTRL, kind, u64::from(s & SPEC_SETTABLE), 0, 0],
                )?;
            }
        }
        if t.mce_kill != MCE_DEFAULT {
            set(
                "prctl(PR_MCE_KILL)",
                &[PR_MCE_KILL, PR_MCE_KILL_SET, u64::from(t.mce_kill), 0, 0],
            )?;
        }
    }
    // Always: the restored task has the restorer's.
    std::fs::write(
        format!("/proc/{}/coredump_filter", remote.pid),
        format!("{:#x}", p.coredump_filter),
    )
    .map_err(|source| Error::Filter {
        pid: remote.pid,
        source,
    })?;
    if p.memory_merge {
        remote.call(
            "prctl(PR_SET_MEMORY_MERGE)",
            nr::PRCTL,
            &[PR_SET_MEMORY_MERGE, 1, 0, 0, 0],
        )?;
    }
    if p.mdwe != 0 {
        remote.call(
            "prctl(PR_SET_MDWE)",
            nr::PRCTL,
            &[PR_SET_MDWE, u64::from(p.mdwe), 0, 0, 0],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_bits_are_refused() {
        let t = ThreadPrctls {
            securebits: 0x2f,
            tsc: 1,
            spec: [PR_SPEC_PRCTL | 4, 0],
            mce_kill: 2,
        };
        let ok = Prctls {
            mdwe: 1,
            memory_merge: true,
            coredump_filter: 0x7f,
            threads: vec![t],
        };
        assert!(ok.check(1).is_ok());
        for bad in [
            Prctls { mdwe: 4, ..ok.clone() },
            Prctls {
                threads: vec![ThreadPrctls { securebits: 0x100, ..t }],
                ..ok.clone()
            },
            Prctls {
                threads: vec![ThreadPrctls { tsc: 0, ..t }],
                ..ok.clone()
            },
            Prctls {
                threads: vec![ThreadPrctls { spec: [64, 0], ..t }],
                ..ok.clone()
            },
        ] {
            assert!(bad.check(1).is_err(), "{bad:?}");
        }
    }
}
