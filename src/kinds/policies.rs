//! Per-thread policies /proc shows only in part: the NUMA memory policy of
//! each thread (set_mempolicy: `numactl --interleave=all`, `--membind`),
//! read and set by injected `get_mempolicy` / `set_mempolicy` in the
//! thread; and the time slice a thread under a fair policy asked for
//! (`sched_setattr` with `sched_runtime`, Linux 6.12 on), read and set
//! from outside with `sched_getattr` / `sched_setattr`; and a thread under
//! SCHED_DEADLINE, with its runtime, deadline, period and flags (layout 5),
//! set from outside with `sched_setattr` in place of the policy
//! kinds::procattrs sets for others. Its budget in the current period is
//! not carried: it starts a new period, as after any wakeup.
//!
//! Section `policies` (from image format 4; an image without it restores
//! with the default policy and slice, as before). The slice is set after
//! the scheduling policy (kinds::procattrs), which resets it.
//!
//! A memory policy of a mapping's own (`mbind`) is not carried: the
//! checkpoint refuses it before anything stops, from /proc/PID/numa_maps
//! (a mapping without a policy of its own shows its process's).

use serde::{Deserialize, Serialize};

use super::remote::{self, Remote};
use crate::sys::{self, Errno};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error("thread {tid}: {what}: {source}")]
    Sched {
        tid: i32,
        what: &'static str,
        #[source]
        source: Errno,
    },
    #[error("process {pid}: read its NUMA memory policies: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} (pid {ns_pid} in the container): mapping at {start:#x} has a NUMA memory policy of its own ({policy}, mbind), which migrate does not carry yet")]
    MappingPolicy {
        pid: i32,
        ns_pid: i32,
        start: u64,
        policy: String,
    },
    #[error("process {pid}: section policies holds {what}; the image is damaged")]
    Damaged { pid: i32, what: &'static str },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One thread's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPolicies {
    /// MPOL_* with its mode flags (MPOL_F_STATIC_NODES...), and its node
    /// mask (64 nodes a word); None: MPOL_DEFAULT.
    pub mempolicy: Option<(u32, Vec<u64>)>,
    /// A time slice asked for (ns), if not the default.
    pub slice_ns: Option<u64>,
    /// SCHED_DEADLINE: its flags, runtime, deadline and period (ns).
    pub deadline: Option<Deadline>,
}

/// A thread's SCHED_DEADLINE parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    pub flags: u64,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// [`ThreadPolicies`] as layout 4 wrote it.
#[derive(Deserialize)]
struct ThreadPoliciesV4 {
    mempolicy: Option<(u32, Vec<u64>)>,
    slice_ns: Option<u64>,
}

/// The section `policies`: (PID in the container, its threads' in the
/// order of its image).
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "policies";
    const VERSION: u32 = 5;
    const SINCE_FORMAT: u32 = 4;
    type State = Vec<(i32, Vec<ThreadPolicies>)>;
    type Error = Error;

    /// Layout 4 had no SCHED_DEADLINE (it was refused).
    fn decode(bytes: &[u8]) -> crate::image::Result<Self::State> {
        crate::image::decode_versioned(
            Self::SECTION,
            bytes,
            Self::VERSION,
            |old: Vec<(i32, Vec<ThreadPoliciesV4>)>| {
                old.into_iter()
                    .map(|(pid, threads)| {
                        let threads = threads
                            .into_iter()
                            .map(|t| ThreadPolicies {
                                mempolicy: t.mempolicy,
                                slice_ns: t.slice_ns,
                                deadline: None,
                            })
                            .collect();
                        (pid, threads)
                    })
                    .collect()
            },
        )
    }

    /// Modes and flags set_mempolicy knows, masks of up to 1024 nodes,
    /// slices the kernel takes (0.1 to 100 ms).
    fn validate(state: &Self::State) -> Result<()> {
        for (pid, threads) in state {
            let bad = |what| Err(Error::Damaged { pid: *pid, what });
            for t in threads {
                if let Some((mode, nodes)) = &t.mempolicy {
                    if mode & !MPOL_FLAGS > MPOL_MAX || nodes.len() > MASK_WORDS {
                        return bad("a memory policy set_mempolicy does not know");
                    }
                }
                if t.slice_ns.is_some_and(|s| !(100_000..=100_000_000).contains(&s)) {
                    return bad("a time slice out of range");
                }
                // The kernel's own rule: runtime <= deadline <= period.
                if t.deadline.is_some_and(|d| {
                    d.runtime < 1024 || d.runtime > d.deadline || (d.period != 0 && d.deadline > d.period)
                }) {
                    return bad("SCHED_DEADLINE parameters the kernel would refuse");
                }
            }
        }
        Ok(())
    }
}

/// MPOL_WEIGHTED_INTERLEAVE, the highest mode.
const MPOL_MAX: u32 = 6;
/// MPOL_F_NUMA_BALANCING, MPOL_F_RELATIVE_NODES, MPOL_F_STATIC_NODES.
const MPOL_FLAGS: u32 = (1 << 13) | (1 << 14) | (1 << 15);
/// 1024 nodes.
const MASK_WORDS: usize = 16;
/// SCHED_OTHER, SCHED_BATCH, SCHED_IDLE: the fair policies.
const FAIR: [u32; 3] = [0, 3, 5];
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
/// SCHED_DEADLINE.
pub const SCHED_DEADLINE: u32 = 6;
/// The sched_setattr flags a deadline thread keeps: SCHED_FLAG_RESET_ON_FORK,
/// SCHED_FLAG_RECLAIM, SCHED_FLAG_DL_OVERRUN.
const DEADLINE_FLAGS: u64 = 0x1 | 0x2 | 0x4;

/// The SCHED_DEADLINE parameters of a thread's attributes `a`, if it runs
/// under it.
fn deadline_of(a: &sys::SchedAttr) -> Option<Deadline> {
    (a.policy == SCHED_DEADLINE).then_some(Deadline {
        flags: a.flags & DEADLINE_FLAGS,
        runtime: a.runtime,
        deadline: a.deadline,
        period: a.period,
    })
}

/// sched_getattr of thread `tid` (0: this one).
fn sched_attr(tid: i32) -> Result<sys::SchedAttr> {
    sys::sched_getattr(tid).map_err(|source| Error::Sched {
        tid,
        what: "sched_getattr",
        source,
    })
}

/// The time slice of a thread whose attributes are `theirs`, if it asked
/// for one (it differs from `ours`, this thread's: the default).
fn slice_of(theirs: &sys::SchedAttr, ours: &sys::SchedAttr) -> Option<u64> {
    (FAIR.contains(&theirs.policy) && theirs.runtime != 0 && theirs.runtime != ours.runtime).then_some(theirs.runtime)
}

/// Reads the policies of the stopped process behind `remote`, whose
/// threads (host TIDs) are `tids`, the main thread first.
pub fn dump(remote: &Remote, tids: &[i32]) -> Result<Vec<ThreadPolicies>> {
    let mut out = Vec::with_capacity(tids.len());
    let ours = sched_attr(0)?;
    for &tid in tids {
        let t = remote.thread(tid)?;
        let (mode_at, mask_at) = (remote.scratch, remote.scratch + 8);
        t.call(
            "get_mempolicy",
            libc::SYS_get_mempolicy,
            &[mode_at, mask_at, (MASK_WORDS * 64) as u64, 0, 0],
        )?;
        let mut buf = [0u8; 8 + MASK_WORDS * 8];
        t.read(mode_at, &mut buf)?;
        let mode = u32::from_ne_bytes(buf[..4].try_into().expect("four bytes"));
        let mut nodes: Vec<u64> = buf[8..]
            .chunks(8)
            .map(|w| u64::from_ne_bytes(w.try_into().expect("eight bytes")))
            .collect();
        while nodes.last() == Some(&0) {
            nodes.pop();
        }
        let theirs = sched_attr(tid)?;
        out.push(ThreadPolicies {
            mempolicy: (mode != 0).then_some((mode, nodes)),
            slice_ns: slice_of(&theirs, &ours),
            deadline: deadline_of(&theirs),
        });
    }
    Ok(out)
}

/// Sets the policies again on the restored threads `tids` (host TIDs, in
/// the image's order) of the process behind `remote`: after its
/// scheduling policy, which resets the slice.
pub fn restore(remote: &Remote, tids: &[i32], policies: &[ThreadPolicies]) -> Result<()> {
    for (&tid, p) in tids.iter().zip(policies) {
        if let Some((mode, nodes)) = &p.mempolicy {
            let t = remote.thread(tid)?;
            let bytes: Vec<u8> = nodes.iter().flat_map(|w| w.to_ne_bytes()).collect();
            t.write(remote.scratch, &bytes)?;
            // The kernel reads one bit fewer than it is told.
            let maxnode = if nodes.is_empty() {
                0
            } else {
                nodes.len() as u64 * 64 + 1
            };
            let at = if nodes.is_empty() { 0 } else { remote.scratch };
            t.call(
                &format!("set_mempolicy({mode:#x})"),
                libc::SYS_set_mempolicy,
                &[u64::from(*mode), at, maxnode],
            )?;
        }
        if let Some(d) = p.deadline {
            let attr = sys::SchedAttr {
                size: std::mem::size_of::<sys::SchedAttr>() as u32,
                policy: SCHED_DEADLINE,
                flags: d.flags,
                runtime: d.runtime,
                deadline: d.deadline,
                period: d.period,
                ..Default::default()
            };
            sys::sched_setattr(tid, &attr).map_err(|source| Error::Sched {
                tid,
                what: "sched_setattr (SCHED_DEADLINE)",
                source,
            })?;
        }
        if let Some(slice) = p.slice_ns {
            let now = sched_attr(tid)?;
            let attr = sys::SchedAttr {
                flags: now.flags & SCHED_FLAG_RESET_ON_FORK,
                runtime: slice,
                ..now
            };
            sys::sched_setattr(tid, &attr).map_err(|source| Error::Sched {
                tid,
                what: "sched_setattr (time slice)",
                source,
            })?;
        }
    }
    Ok(())
}

/// Refuses, for process `pid`, a mapping with a NUMA memory policy of its
/// own: one whose policy in numa_maps is not the one most mappings show
/// (the process's, which a mapping without its own shows).
pub fn refuse_uncarried(pid: i32, ns_pid: i32) -> Result<()> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/numa_maps")) {
        // A kernel without NUMA, or a process that ended meanwhile.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(())
        }
        other => other.map_err(|source| Error::Read { pid, source })?,
    };
    match own_policy(&text) {
        Some((start, policy)) => Err(Error::MappingPolicy {
            pid,
            ns_pid,
            start,
            policy,
        }),
        None => Ok(()),
    }
}

/// The first mapping of numa_maps `text` whose policy is not the most
/// common one.
fn own_policy(text: &str) -> Option<(u64, String)> {
    let lines: Vec<(u64, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            Some((u64::from_str_radix(cols.next()?, 16).ok()?, cols.next()?))
        })
        .collect();
    // Counted once each: a process may have tens of thousands of mappings.
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (_, p) in &lines {
        *counts.entry(p).or_default() += 1;
    }
    let common = counts.into_iter().max_by_key(|&(_, n)| n).map(|(p, _)| p)?;
    lines
        .iter()
        .find(|(_, p)| *p != common)
        .map(|(start, p)| (*start, p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kind;

    #[test]
    fn a_mapping_with_its_own_policy_is_found() {
        let same = "5500 default file=/bin/x mapped=2 N0=2\n7f00 default anon=3 dirty=3 N0=3\n";
        assert_eq!(own_policy(same), None);
        let task = "5500 interleave:0-1 file=/bin/x\n7f00 interleave:0-1 anon=3\n7f10 interleave:0-1\n";
        assert_eq!(own_policy(task), None);
        let own = "5500 default file=/bin/x\n7f00 bind:0 anon=3\n7f10 default\n";
        assert_eq!(own_policy(own), Some((0x7f00, "bind:0".into())));
        assert_eq!(own_policy(""), None);
    }

    #[test]
    fn policies_the_kernel_would_refuse_are_damage() {
        let img = |mempolicy, slice_ns| {
            vec![(
                1,
                vec![ThreadPolicies {
                    mempolicy,
                    slice_ns,
                    deadline: None,
                }],
            )]
        };
        assert!(Section::validate(&img(Some((2 | (1 << 15), vec![1])), Some(5_000_000))).is_ok());
        assert!(Section::validate(&img(None, None)).is_ok());
        for bad in [
            img(Some((7, vec![1])), None),
            img(Some((2 | (1 << 12), vec![1])), None),
            img(Some((2, vec![1; 17])), None),
            img(None, Some(1)),
            img(None, Some(200_000_000)),
        ] {
            assert!(Section::validate(&bad).is_err(), "{bad:?}");
        }
        let dl = |runtime, deadline, period| {
            vec![(
                1,
                vec![ThreadPolicies {
                    deadline: Some(Deadline {
                        flags: 0,
                        runtime,
                        deadline,
                        period,
                    }),
                    ..Default::default()
                }],
            )]
        };
        assert!(Section::validate(&dl(10_000_000, 30_000_000, 30_000_000)).is_ok());
        assert!(Section::validate(&dl(40_000_000, 30_000_000, 30_000_000)).is_err());
        assert!(Section::validate(&dl(10_000_000, 30_000_000, 20_000_000)).is_err());
    }

    /// A layout-4 section (no SCHED_DEADLINE) still decodes.
    #[test]
    fn layout_4_reads_without_deadlines() {
        use crate::kinds::Kind;
        #[derive(Serialize)]
        struct V4 {
            mempolicy: Option<(u32, Vec<u64>)>,
            slice_ns: Option<u64>,
        }
        let old = vec![(
            3,
            vec![V4 {
                mempolicy: None,
                slice_ns: Some(3_000_000),
            }],
        )];
        let bytes = crate::image::encode_section_at(4, &old);
        let got = Section::decode(&bytes).unwrap();
        assert_eq!(got[0].1[0].slice_ns, Some(3_000_000));
        assert_eq!(got[0].1[0].deadline, None);
    }
}
