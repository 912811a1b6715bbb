//! eventfd (count, semaphore mode), timerfd (clock, remaining time,
//! interval, pending expirations), signalfd (mask), and epoll (its interest
//! list). All of it is read from /proc/PID/fdinfo.
//!
//! A timerfd that expired and has not been read shows it_value 0; if it has
//! an interval it is re-armed for its next interval, not left disarmed.

use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::sys::Errno;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnonImage {
    EventFd {
        count: u64,
        semaphore: bool,
    },
    TimerFd {
        clockid: i32,
        value_ns: u64,
        interval_ns: u64,
        ticks: u64,
    },
    SignalFd {
        mask: u64,
    },
}

/// One entry of an epoll interest list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpollTarget {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// "(4, 999773210)" -> nanoseconds.
fn timespec_ns(v: &str) -> Option<u64> {
    let (s, ns) = v.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
    Some(s.trim().parse::<u64>().ok()? * 1_000_000_000 + ns.trim().parse::<u64>().ok()?)
}

/// Parses the fdinfo of an anon inode of kind `kind` ("eventfd",
/// "timerfd", "signalfd"). None for other kinds or unreadable text.
pub fn parse(kind: &str, info: &str) -> Option<AnonImage> {
    Some(match kind {
        "eventfd" => AnonImage::EventFd {
            count: u64::from_str_radix(field(info, "eventfd-count:")?, 16).ok()?,
            semaphore: field(info, "eventfd-semaphore:") == Some("1"),
        },
        "timerfd" => AnonImage::TimerFd {
            clockid: field(info, "clockid:")?.parse().ok()?,
            value_ns: timespec_ns(field(info, "it_value:")?)?,
            interval_ns: timespec_ns(field(info, "it_interval:")?)?,
            ticks: field(info, "ticks:")?.parse().ok()?,
        },
        "signalfd" => AnonImage::SignalFd {
            mask: u64::from_str_radix(field(info, "sigmask:")?, 16).ok()?,
        },
        _ => return None,
    })
}

/// The interest list of an epoll fd, from its fdinfo.
pub fn parse_epoll(info: &str) -> Vec<EpollTarget> {
    info.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            if it.next()? != "tfd:" {
                return None;
            }
            let fd = it.next()?.parse().ok()?;
            it.next(); // events:
            let events = u32::from_str_radix(it.next()?, 16).ok()?;
            it.next(); // data:
            let data = u64::from_str_radix(it.next()?, 16).ok()?;
            Some(EpollTarget { fd, events, data })
        })
        .collect()
}

/// Makes the object again (close-on-exec; the caller sets file flags).
pub fn restore(a: &AnonImage) -> Result<OwnedFd, Errno> {
    match *a {
        AnonImage::EventFd { count, semaphore } => {
            let mut flags = nix::sys::eventfd::EfdFlags::EFD_CLOEXEC;
            if semaphore {
                flags |= nix::sys::eventfd::EfdFlags::EFD_SEMAPHORE;
            }
            let efd = nix::sys::eventfd::EventFd::from_value_and_flags(0, flags)?;
            if count > 0 {
                nix::unistd::write(efd.as_fd(), &count.to_ne_bytes())?;
            }
            Ok(efd.into())
        }
        AnonImage::TimerFd {
            clockid,
            value_ns,
            interval_ns,
            ticks,
        } => {
            use nix::sys::time::TimeSpec;
            use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
            let clock = match clockid {
                libc::CLOCK_REALTIME => ClockId::CLOCK_REALTIME,
                libc::CLOCK_BOOTTIME => ClockId::CLOCK_BOOTTIME,
                libc::CLOCK_REALTIME_ALARM => ClockId::CLOCK_REALTIME_ALARM,
                libc::CLOCK_BOOTTIME_ALARM => ClockId::CLOCK_BOOTTIME_ALARM,
                _ => ClockId::CLOCK_MONOTONIC,
            };
            let tfd = TimerFd::new(clock, TimerFlags::TFD_CLOEXEC)?;
            let ts = |ns: u64| TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64);
            // Expired but unread, with an interval: armed for the next one.
            let value = if value_ns == 0 { interval_ns } else { value_ns };
            let exp = match (value, interval_ns) {
                (0, _) => None,
                (v, 0) => Some(Expiration::OneShot(ts(v))),
                (v, i) if v == i => Some(Expiration::Interval(ts(i))),
                (v, i) => Some(Expiration::IntervalDelayed(ts(v), ts(i))),
            };
            if let Some(exp) = exp {
                tfd.set(exp, TimerSetTimeFlags::empty())?;
            }
            let fd: OwnedFd = tfd.into();
            if ticks > 0 {
                crate::sys::timerfd_set_ticks(fd.as_fd(), ticks)?;
            }
            Ok(fd)
        }
        AnonImage::SignalFd { mask } => crate::sys::signalfd(mask),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo() {
        let ev = "pos:\t0\nflags:\t02\neventfd-count:              12c\neventfd-id: 3\neventfd-semaphore: 1\n";
        assert_eq!(
            parse("eventfd", ev),
            Some(AnonImage::EventFd {
                count: 300,
                semaphore: true
            })
        );
        let t = "clockid: 1\nticks: 2\nsettime flags: 00\nit_value: (4, 999773210)\nit_interval: (2, 500)\n";
        assert_eq!(
            parse("timerfd", t),
            Some(AnonImage::TimerFd {
                clockid: 1,
                value_ns: 4_999_773_210,
                interval_ns: 2_000_000_500,
                ticks: 2
            })
        );
        assert_eq!(
            parse("signalfd", "sigmask:\t0000000000004200\n"),
            Some(AnonImage::SignalFd { mask: 0x4200 })
        );
        let ep = "pos:\t0\ntfd:        3 events: 80000019 data:                3  pos:0 ino:11 sdev:10\n";
        assert_eq!(
            parse_epoll(ep),
            vec![EpollTarget {
                fd: 3,
                events: 0x8000_0019,
                data: 3
            }]
        );
        assert_eq!(parse("io_uring", ""), None);
    }

    #[test]
    fn objects_come_back() {
        let e = restore(&AnonImage::EventFd {
            count: 5,
            semaphore: false,
        })
        .unwrap();
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", std::os::fd::AsRawFd::as_raw_fd(&e))).unwrap();
        assert_eq!(
            parse("eventfd", &info),
            Some(AnonImage::EventFd {
                count: 5,
                semaphore: false
            })
        );
        let t = restore(&AnonImage::TimerFd {
            clockid: 1,
            value_ns: 0,
            interval_ns: 3_000_000_000,
            ticks: 0,
        })
        .unwrap();
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", std::os::fd::AsRawFd::as_raw_fd(&t))).unwrap();
        match parse("timerfd", &info) {
            Some(AnonImage::TimerFd {
                value_ns, interval_ns, ..
            }) => {
                assert!(value_ns > 2_000_000_000, "an expired periodic timer must be re-armed");
                assert_eq!(interval_ns, 3_000_000_000);
            }
            other => panic!("{other:?}"),
        }
    }
}
