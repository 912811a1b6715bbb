//! Timers: the three interval timers (ITIMER_REAL, ITIMER_VIRTUAL,
//! ITIMER_PROF), read with injected getitimer and armed again with
//! setitimer at the very end of a restore. POSIX timers (timer_create) are
//! not supported yet: a process that has any fails the checkpoint, naming
//! it, rather than losing them.

use serde::{Deserialize, Serialize};

use super::remote::{self, Remote};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error("process {pid} (pid {ns_pid} in the container) has POSIX timers (timer_create), which migrate can not checkpoint yet")]
    PosixTimers { pid: i32, ns_pid: i32 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One interval timer: (interval, remaining) in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ITimer {
    pub interval_us: u64,
    pub value_us: u64,
}

/// A process's timers, indexed by ITIMER_REAL, _VIRTUAL, _PROF.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimersImage {
    pub itimers: [ITimer; 3],
}

fn decode(b: &[u8; 32]) -> ITimer {
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    ITimer {
        interval_us: w(0) * 1_000_000 + w(1),
        value_us: w(2) * 1_000_000 + w(3),
    }
}

fn encode(t: &ITimer) -> Vec<u8> {
    [
        t.interval_us / 1_000_000,
        t.interval_us % 1_000_000,
        t.value_us / 1_000_000,
        t.value_us % 1_000_000,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect()
}

pub fn dump(remote: &Remote, ns_pid: i32) -> Result<TimersImage> {
    let pid = remote.pid;
    let posix = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    if posix.lines().any(|l| l.starts_with("ID:")) {
        return Err(Error::PosixTimers { pid, ns_pid });
    }
    let mut img = TimersImage::default();
    for (which, slot) in img.itimers.iter_mut().enumerate() {
        remote.call("getitimer", libc::SYS_getitimer, &[which as u64, remote.scratch])?;
        let mut b = [0u8; 32];
        remote.read(remote.scratch, &mut b)?;
        *slot = decode(&b);
    }
    Ok(img)
}

/// Arms the timers again (last thing before the task resumes).
pub fn restore(remote: &Remote, img: &TimersImage) -> Result<()> {
    for (which, t) in img.itimers.iter().enumerate() {
        if t.value_us == 0 && t.interval_us == 0 {
            continue;
        }
        // An expired periodic timer whose signal is pending still runs on.
        let t = ITimer {
            value_us: if t.value_us == 0 { t.interval_us } else { t.value_us },
            ..*t
        };
        remote.write(remote.scratch, &encode(&t))?;
        remote.call("setitimer", libc::SYS_setitimer, &[which as u64, remote.scratch, 0])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itimerval_roundtrip() {
        let t = ITimer {
            interval_us: 2_500_000,
            value_us: 700,
        };
        let b: [u8; 32] = encode(&t).try_into().unwrap();
        assert_eq!(decode(&b), t);
    }
}
