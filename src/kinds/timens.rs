//! Time: the container's CLOCK_MONOTONIC and CLOCK_BOOTTIME at checkpoint,
//! and the time-namespace offsets that make them continue from there on
//! restore (no jump back, no jump forward by the time spent checkpointed).

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("time namespace offsets of process {pid}: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("write /proc/self/timens_offsets: {0}")]
    Write(#[source] std::io::Error),
    #[error("the image's {clock} clock reads {ns} ns, which no clock can; the image is damaged")]
    BadClock { clock: &'static str, ns: i128 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The container's clocks at checkpoint, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    pub monotonic_ns: i128,
    pub boottime_ns: i128,
}

fn now_ns(clock: nix::time::ClockId) -> i128 {
    let t = nix::time::clock_gettime(clock).expect("clock_gettime of a standard clock");
    i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
}

/// Parses /proc/PID/timens_offsets into (monotonic, boottime) offsets in ns.
pub fn parse_offsets(text: &str) -> (i128, i128) {
    let mut mono = 0;
    let mut boot = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(name), Some(s), Some(ns)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let v = s.parse::<i128>().unwrap_or(0) * 1_000_000_000 + ns.parse::<i128>().unwrap_or(0);
        match name {
            "monotonic" | "1" => mono = v,
            "boottime" | "7" => boot = v,
            _ => {}
        }
    }
    (mono, boot)
}

/// The clocks as process `pid` (in the container) sees them now.
pub fn dump(pid: i32) -> Result<Clocks> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/timens_offsets")).map_err(|source| Error::Read { pid, source })?;
    let (mono, boot) = parse_offsets(&text);
    Ok(Clocks {
        monotonic_ns: now_ns(nix::time::ClockId::CLOCK_MONOTONIC) + mono,
        boottime_ns: now_ns(nix::time::ClockId::CLOCK_BOOTTIME) + boot,
    })
}

impl Clocks {
    /// Checks that both clocks read what a clock can: from zero up to
    /// the largest `timespec` (which restore subtracts from).
    pub fn check(&self) -> Result<()> {
        const MAX_NS: i128 = i64::MAX as i128 * 1_000_000_000 + 999_999_999;
        for (clock, ns) in [("monotonic", self.monotonic_ns), ("boottime", self.boottime_ns)] {
            if !(0..=MAX_NS).contains(&ns) {
                return Err(Error::BadClock { clock, ns });
            }
        }
        Ok(())
    }
}

/// The offsets text for a new time namespace that continues `clocks`.
pub fn offsets_for(clocks: &Clocks) -> Result<String> {
    clocks.check()?;
    let fmt = |clock: i32, off: i128| {
        let s = off.div_euclid(1_000_000_000);
        let ns = off.rem_euclid(1_000_000_000);
        format!("{clock} {s} {ns}\n")
    };
    let mono = clocks.monotonic_ns - now_ns(nix::time::ClockId::CLOCK_MONOTONIC);
    let boot = clocks.boottime_ns - now_ns(nix::time::ClockId::CLOCK_BOOTTIME);
    Ok(fmt(libc::CLOCK_MONOTONIC, mono) + &fmt(libc::CLOCK_BOOTTIME, boot))
}

/// Writes the offsets for the calling process's new time namespace (after
/// unshare(CLONE_NEWTIME), before any task enters it).
pub fn restore(clocks: &Clocks) -> Result<()> {
    std::fs::write("/proc/self/timens_offsets", offsets_for(clocks)?).map_err(Error::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_and_format() {
        assert_eq!(
            parse_offsets("monotonic 5 100\nboottime -2 0\n"),
            (5_000_000_100, -2_000_000_000)
        );
        let c = Clocks {
            monotonic_ns: 0,
            boottime_ns: 0,
        };
        let text = offsets_for(&c).unwrap();
        let (m, b) = parse_offsets(&text);
        // Negative offsets come out as negative seconds and positive ns.
        assert!(m < 0 && b < 0, "{text}");
        assert!(text
            .lines()
            .all(|l| l.split_whitespace().nth(2).unwrap().parse::<i64>().unwrap() >= 0));
    }

    #[test]
    fn clocks_out_of_range_are_refused() {
        for (monotonic_ns, boottime_ns) in [(i128::MIN, 0), (0, -1), (i128::MAX, 0)] {
            let c = Clocks {
                monotonic_ns,
                boottime_ns,
            };
            assert!(matches!(offsets_for(&c), Err(Error::BadClock { .. })), "{c:?}");
        }
    }
}
