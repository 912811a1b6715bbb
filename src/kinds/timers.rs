//! Timers: the three interval timers (ITIMER_REAL, ITIMER_VIRTUAL,
//! ITIMER_PROF), read with injected getitimer and armed again with
//! setitimer at the very end of a restore; and POSIX timers (timer_create)
//! with their IDs, clock, notification and remaining time, from
//! /proc/PID/timers and injected timer_gettime, made again with
//! prctl(PR_TIMER_CREATE_RESTORE_IDS) so that each gets its old ID.

use serde::{Deserialize, Serialize};

use super::remote::{self, Remote};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remote::Error),
    #[error("process {pid}: POSIX timer {id}: {reason}")]
    PosixTimer { pid: i32, id: i32, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One interval timer: (interval, remaining) in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ITimer {
    pub interval_us: u64,
    pub value_us: u64,
}

/// One POSIX timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    /// SIGEV_SIGNAL (0), SIGEV_NONE (1) or SIGEV_THREAD_ID (4).
    pub notify: i32,
    pub signo: i32,
    pub sival: u64,
    /// For SIGEV_THREAD_ID: the thread, as the container sees it.
    pub tid: i32,
    pub interval_ns: u64,
    pub value_ns: u64,
}

/// A process's timers: the interval timers (by ITIMER_REAL, _VIRTUAL,
/// _PROF) and its POSIX timers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimersImage {
    pub itimers: [ITimer; 3],
    #[serde(default)]
    pub posix: Vec<PosixTimer>,
}

/// Parses /proc/PID/timers. Thread targets are host TIDs there.
pub fn parse_posix(text: &str) -> Vec<PosixTimer> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let (k, v) = match line.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => continue,
        };
        match k {
            "ID" => out.push(PosixTimer {
                id: v.parse().unwrap_or(0),
                ..Default::default()
            }),
            "signal" => {
                if let (Some(t), Some((sig, val))) = (out.last_mut(), v.split_once('/')) {
                    t.signo = sig.parse().unwrap_or(0);
                    t.sival = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some(t) = out.last_mut() {
                    let (how, target) = v.split_once('/').unwrap_or((v, ""));
                    t.notify = match how {
                        "thread" => 4,
                        "none" => 1,
                        _ => 0,
                    };
                    t.tid = target.rsplit('.').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                }
            }
            "ClockID" => {
                if let Some(t) = out.last_mut() {
                    t.clock = v.parse().unwrap_or(1);
                }
            }
            _ => {}
        }
    }
    out
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

/// Reads the timers of a stopped process. `ns_tid` maps a host TID of the
/// process to its TID in the container.
pub fn dump(remote: &Remote, ns_tid: &dyn Fn(i32) -> i32) -> Result<TimersImage> {
    let pid = remote.pid;
    let mut img = TimersImage::default();
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    for mut t in parse_posix(&text) {
        if t.notify == 4 {
            t.tid = ns_tid(t.tid);
        } else if t.notify == 0 && t.tid != 0 && t.tid != pid {
            return Err(Error::PosixTimer {
                pid,
                id: t.id,
                reason: "it signals another process, which migrate does not support".into(),
            });
        }
        remote.call("timer_gettime", libc::SYS_timer_gettime, &[t.id as u64, remote.scratch])?;
        let mut b = [0u8; 32];
        remote.read(remote.scratch, &mut b)?;
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        t.interval_ns = w(0) * 1_000_000_000 + w(1);
        t.value_ns = w(2) * 1_000_000_000 + w(3);
        img.posix.push(t);
    }
    for (which, slot) in img.itimers.iter_mut().enumerate() {
        remote.call("getitimer", libc::SYS_getitimer, &[which as u64, remote.scratch])?;
        let mut b = [0u8; 32];
        remote.read(remote.scratch, &mut b)?;
        *slot = decode(&b);
    }
    Ok(img)
}

/// Makes the POSIX timers again with their IDs, and arms them; `pid` is
/// the process's PID in the container (the target of SIGEV_SIGNAL).
fn restore_posix(remote: &Remote, pid: i32, timers: &[PosixTimer]) -> Result<()> {
    const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
    if timers.is_empty() {
        return Ok(());
    }
    remote.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        super::remote::nr::PRCTL,
        &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
    )?;
    let s = remote.scratch;
    let result = (|| -> Result<()> {
        for t in timers {
            // struct sigevent: value, signo, notify, then the thread ID.
            let mut ev = vec![0u8; 64];
            ev[0..8].copy_from_slice(&t.sival.to_le_bytes());
            ev[8..12].copy_from_slice(&t.signo.to_le_bytes());
            ev[12..16].copy_from_slice(&t.notify.to_le_bytes());
            let target = if t.notify == 4 { t.tid } else { pid };
            ev[16..20].copy_from_slice(&target.to_le_bytes());
            remote.write(s, &ev)?;
            remote.write(s + 64, &t.id.to_le_bytes())?;
            remote.call("timer_create", libc::SYS_timer_create, &[t.clock as u64, s, s + 64])?;
            let got = {
                let mut b = [0u8; 4];
                remote.read(s + 64, &mut b)?;
                i32::from_le_bytes(b)
            };
            if got != t.id {
                return Err(Error::PosixTimer {
                    pid,
                    id: t.id,
                    reason: format!("came back as timer {got}"),
                });
            }
            // An expired periodic timer runs on from its next interval.
            let value = if t.value_ns == 0 { t.interval_ns } else { t.value_ns };
            if value != 0 {
                let spec: Vec<u8> = [
                    t.interval_ns / 1_000_000_000,
                    t.interval_ns % 1_000_000_000,
                    value / 1_000_000_000,
                    value % 1_000_000_000,
                ]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
                remote.write(s + 128, &spec)?;
                remote.call("timer_settime", libc::SYS_timer_settime, &[t.id as u64, 0, s + 128, 0])?;
            }
        }
        Ok(())
    })();
    remote.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        super::remote::nr::PRCTL,
        &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
    )?;
    result
}

/// Arms the timers again (last thing before the task resumes).
pub fn restore(remote: &Remote, pid: i32, img: &TimersImage) -> Result<()> {
    restore_posix(remote, pid, &img.posix)?;
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
    fn parses_proc_timers() {
        let text = "ID: 42\nsignal: 10/0000000000000007\nnotify: thread/pid.7442\nClockID: 1\nID: 43\nsignal: 14/0000000000000000\nnotify: signal/pid.7442\nClockID: 0\n";
        let t = parse_posix(text);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].id, t[0].signo, t[0].sival, t[0].notify, t[0].tid, t[0].clock),
            (42, 10, 7, 4, 7442, 1)
        );
        assert_eq!((t[1].id, t[1].notify, t[1].clock), (43, 0, 0));
    }

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
