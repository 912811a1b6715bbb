//! eventfd (count, semaphore mode), timerfd (clock, remaining time,
//! interval, pending expirations), signalfd (mask), epoll (its interest
//! list) and inotify (its watches, by path). All of it is read from
//! /proc/PID/fdinfo; an inotify watch's path comes from its file handle.
//! Watches come back with their old descriptors (inotify numbers them
//! cyclically, so a gap is reproduced by adding and removing a watch).
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
        /// TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET (files layout 5).
        settime_flags: u32,
        /// An absolute timer on the real-time clock: when it expires (ns
        /// since the epoch), which the downtime does not move.
        deadline_ns: u64,
    },
    SignalFd {
        mask: u64,
    },
    Inotify {
        watches: Vec<InotifyWatch>,
    },
    /// An epoll instance, made empty: its holders register their targets
    /// (see `files::FdKind::EpollOf`; files layout 6, a variant at the end
    /// that earlier builds never wrote).
    Epoll,
}

/// [`AnonImage`] as files layout 4 wrote it: timerfds without their
/// settime flags (all were relative then).
#[derive(Deserialize)]
pub enum AnonImageV4 {
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
    Inotify {
        watches: Vec<InotifyWatch>,
    },
}

impl From<AnonImageV4> for AnonImage {
    fn from(a: AnonImageV4) -> Self {
        match a {
            AnonImageV4::EventFd { count, semaphore } => AnonImage::EventFd { count, semaphore },
            AnonImageV4::TimerFd {
                clockid,
                value_ns,
                interval_ns,
                ticks,
            } => AnonImage::TimerFd {
                clockid,
                value_ns,
                interval_ns,
                ticks,
                settime_flags: 0,
                deadline_ns: 0,
            },
            AnonImageV4::SignalFd { mask } => AnonImage::SignalFd { mask },
            AnonImageV4::Inotify { watches } => AnonImage::Inotify { watches },
        }
    }
}

/// TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET.
const TFD_ABSTIME: u32 = 1;
const TFD_SETTIME_FLAGS: u32 = 1 | 2;

impl AnonImage {
    /// Whether a restore knows everything in it (a timerfd's flags).
    pub fn known(&self) -> bool {
        !matches!(self, AnonImage::TimerFd { settime_flags, .. } if settime_flags & !TFD_SETTIME_FLAGS != 0)
    }
}

/// Whether `clockid` is a real-time clock (not moved by a time namespace;
/// an absolute timer on it keeps its wall-clock deadline).
fn realtime(clockid: i32) -> bool {
    clockid == libc::CLOCK_REALTIME || clockid == libc::CLOCK_REALTIME_ALARM
}

/// Now on clock `clockid`, in ns, as the calling task sees it.
fn now_ns(clockid: i32) -> u64 {
    let clock = nix::time::ClockId::from_raw(clockid);
    nix::time::clock_gettime(clock)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// One inotify watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InotifyWatch {
    pub wd: i32,
    pub path: String,
    pub mask: u32,
}

/// A watch as fdinfo shows it: wd, device, file handle, mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawWatch {
    pub wd: i32,
    pub sdev: u32,
    pub mask: u32,
    pub handle_type: i32,
    pub handle: Vec<u8>,
}

/// Parses the watches of an inotify fdinfo.
pub fn parse_inotify(info: &str) -> Vec<RawWatch> {
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("inotify ")?;
            let get = |k: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(k));
            let handle_hex = get("f_handle:")?;
            let handle = (0..handle_hex.len() / 2)
                .map(|i| u8::from_str_radix(&handle_hex[i * 2..i * 2 + 2], 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .ok()?;
            Some(RawWatch {
                wd: get("wd:")?.parse().ok()?,
                sdev: u32::from_str_radix(get("sdev:")?, 16).ok()?,
                mask: u32::from_str_radix(get("mask:")?, 16).ok()?,
                handle_type: get("fhandle-type:")?.parse().ok()?,
                handle,
            })
        })
        .collect()
}

/// The watches of an inotify fd of process `pid` (its fdinfo `info`), with
/// their paths as the container sees them.
pub fn dump_inotify(pid: i32, info: &str) -> std::result::Result<AnonImage, String> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).map_err(|e| e.to_string())?;
    let root = std::fs::read_link(format!("/proc/{pid}/root")).map_err(|e| e.to_string())?;
    let mut watches = Vec::new();
    for w in parse_inotify(info) {
        let (major, minor) = (w.sdev >> 20, w.sdev & 0xfffff);
        let mountpoint = mountinfo
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                let dev = it.nth(2)?;
                let mp = it.nth(1)?;
                (dev == format!("{major}:{minor}")).then(|| mp.to_string())
            })
            .ok_or_else(|| format!("inotify watch {}: no mount of device {major}:{minor}", w.wd))?;
        let mount = std::fs::File::open(format!("/proc/{pid}/root{mountpoint}"))
            .map_err(|e| format!("open mount {mountpoint}: {e}"))?;
        let fd = crate::sys::open_by_handle(mount.as_fd(), w.handle_type, &w.handle)
            .map_err(|e| format!("inotify watch {}: open by handle: {e}", w.wd))?;
        let host = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
            .map_err(|e| e.to_string())?;
        if host.to_string_lossy().ends_with(" (deleted)") {
            return Err(format!(
                "inotify instance watching a file that was deleted ({}, watch {})",
                host.display(),
                w.wd
            ));
        }
        // The path as the container sees it.
        let path = match host.strip_prefix(&root) {
            Ok(rel) if root != std::path::Path::new("/") => std::path::Path::new("/").join(rel),
            _ => host,
        };
        watches.push(InotifyWatch {
            wd: w.wd,
            path: path.to_string_lossy().into_owned(),
            mask: w.mask,
        });
    }
    watches.sort_by_key(|w| w.wd);
    Ok(AnonImage::Inotify { watches })
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
        "timerfd" => {
            let clockid = field(info, "clockid:")?.parse().ok()?;
            let value_ns = timespec_ns(field(info, "it_value:")?)?;
            // Printed in octal ("settime flags: 03").
            let settime_flags = u32::from_str_radix(field(info, "settime flags:")?, 8).ok()?;
            let absolute = settime_flags & TFD_ABSTIME != 0 && realtime(clockid) && value_ns > 0;
            AnonImage::TimerFd {
                clockid,
                value_ns,
                interval_ns: timespec_ns(field(info, "it_interval:")?)?,
                ticks: field(info, "ticks:")?.parse().ok()?,
                settime_flags,
                deadline_ns: if absolute { now_ns(clockid) + value_ns } else { 0 },
            }
        }
        "signalfd" => AnonImage::SignalFd {
            mask: u64::from_str_radix(field(info, "sigmask:")?, 16).ok()?,
        },
        _ => return None,
    })
}

/// The interest list of an epoll fd, from its fdinfo.
pub fn parse_epoll(info: &str) -> Vec<EpollTarget> {
    // (The tfd lines: "tfd: 5 events: 19 data: 5  pos:0 ino:61d sdev:7".)
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

/// The inode number of each target of an epoll's fdinfo (fd, ino).
pub fn epoll_target_inodes(info: &str) -> Vec<(i32, u64)> {
    info.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            if it.next()? != "tfd:" {
                return None;
            }
            let fd = it.next()?.parse().ok()?;
            let ino = it.find_map(|w| w.strip_prefix("ino:"))?;
            Some((fd, u64::from_str_radix(ino, 16).ok()?))
        })
        .collect()
}

/// Takes from a new inotify instance the `count` IN_IGNORED events that
/// removing the watches made to step its counter queued (before, the
/// restored program read them: one event for each gap in its watch
/// numbers). Anything else queued fails the restore.
fn drop_ignored(fd: &OwnedFd, count: usize) -> Result<(), Errno> {
    // struct inotify_event without a name: wd, mask, cookie, len.
    const EVENT: usize = 16;
    const IN_IGNORED: u32 = 0x8000;
    if count == 0 {
        return Ok(());
    }
    let buf = take_queue(fd)?;
    if buf.len() != count * EVENT {
        return Err(Errno::EBUSY);
    }
    let ours = buf
        .chunks(EVENT)
        .all(|e| u32::from_ne_bytes(e[4..8].try_into().expect("four bytes")) == IN_IGNORED && e[12..16] == [0; 4]);
    match ours {
        true => Ok(()),
        false => Err(Errno::EBUSY),
    }
}

/// Empties the queue of a restored inotify instance (`fd`, a duplicate of
/// a task's) of the events the restore made: the rebuild opens the files
/// the processes map, and their exe links, under watches it has already
/// added (before, a program watching such a directory read IN_OPEN and
/// IN_CLOSE_NOWRITE events after every restore). Returns how many bytes.
pub fn drop_restore_events(fd: &OwnedFd) -> Result<usize, Errno> {
    take_queue(fd).map(|events| events.len())
}

/// Reads every event queued in inotify instance `fd` (FIONREAD says how
/// many bytes), without waiting.
fn take_queue(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let queued = crate::sys::ioctl_int(fd.as_fd(), libc::FIONREAD as libc::c_ulong)? as usize;
    let mut buf = vec![0u8; queued];
    if queued > 0 {
        let got = nix::unistd::read(fd, &mut buf)?;
        buf.truncate(got);
    }
    Ok(buf)
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
            settime_flags,
            deadline_ns,
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
            let mut value = if value_ns == 0 { interval_ns } else { value_ns };
            // An absolute timer is set absolute: on a real-time clock to its
            // deadline, on another (which the container's time namespace
            // continues) to what was left of it from now.
            let flags = TimerSetTimeFlags::from_bits_truncate(settime_flags as libc::c_int);
            if settime_flags & TFD_ABSTIME != 0 && value != 0 {
                value = match deadline_ns {
                    0 => now_ns(clockid) + value,
                    d => d,
                };
            }
            let exp = match (value, interval_ns) {
                (0, _) => None,
                (v, 0) => Some(Expiration::OneShot(ts(v))),
                (v, i) if v == i => Some(Expiration::Interval(ts(i))),
                (v, i) => Some(Expiration::IntervalDelayed(ts(v), ts(i))),
            };
            if let Some(exp) = exp {
                tfd.set(exp, flags)?;
            }
            let fd: OwnedFd = tfd.into();
            if ticks > 0 {
                crate::sys::timerfd_set_ticks(fd.as_fd(), ticks)?;
            }
            Ok(fd)
        }
        AnonImage::SignalFd { mask } => crate::sys::signalfd(mask),
        AnonImage::Epoll => Ok(nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)?.0),
        AnonImage::Inotify { ref watches } => {
            let fd: OwnedFd = nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::IN_CLOEXEC)?.into();
            let mut stepped = 0usize;
            for w in watches {
                // Step the cyclic counter up to the old descriptor.
                let mut tries = 0;
                loop {
                    let wd = crate::sys::inotify_add(fd.as_fd(), &w.path, w.mask)?;
                    if wd == w.wd {
                        break;
                    }
                    crate::sys::inotify_rm(fd.as_fd(), wd)?;
                    stepped += 1;
                    tries += 1;
                    if wd > w.wd || tries > 65536 {
                        return Err(Errno::EEXIST);
                    }
                }
            }
            drop_ignored(&fd, stepped)?;
            Ok(fd)
        }
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
                ticks: 2,
                settime_flags: 0,
                deadline_ns: 0,
            })
        );
        // Absolute, cancelled when the clock is set: on the real-time
        // clock, its deadline is kept.
        let abs = "clockid: 0\nticks: 0\nsettime flags: 03\nit_value: (60, 0)\nit_interval: (0, 0)\n";
        match parse("timerfd", abs) {
            Some(AnonImage::TimerFd {
                settime_flags: 3,
                deadline_ns,
                ..
            }) => assert!(deadline_ns > now_ns(0) + 50_000_000_000),
            other => panic!("{other:?}"),
        }
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
        let ino = "inotify wd:2 ino:263 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:6302000000000000\n";
        let w = parse_inotify(ino);
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].wd, w[0].sdev, w[0].mask, w[0].handle_type), (2, 0xfe0_0000, 2, 1));
        assert_eq!(w[0].handle, vec![0x63, 2, 0, 0, 0, 0, 0, 0]);
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
            settime_flags: 0,
            deadline_ns: 0,
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
