//! Socket options of the TCP and UDP sockets carried by kinds::inet
//! (listeners, unconnected TCP sockets, UDP sockets) and of unix sockets
//! (kinds::unix): those a program set, that is, whose value differs from a
//! fresh socket's of the same family and type in the container's network
//! namespace (so that a buffer size left to the kernel's autotuning is not
//! pinned by the restore).
//!
//! Each is read with getsockopt as raw bytes and set again with setsockopt
//! before the socket is bound (IP_FREEBIND, SO_BINDTODEVICE must be), the
//! buffer sizes with SO_RCVBUFFORCE/SO_SNDBUFFORCE at half what getsockopt
//! shows (the kernel doubles them). Not carried: multicast group
//! memberships and socket filters, which getsockopt can not list.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::socket::{AddressFamily, SockType};

use crate::sys::{self, Errno};

/// (level, option, value as getsockopt wrote it).
pub type SockOpt = (i32, i32, Vec<u8>);

const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const TCP: i32 = libc::IPPROTO_TCP;
const UDP: i32 = libc::IPPROTO_UDP;
const IP: i32 = libc::IPPROTO_IP;
const IPV6: i32 = libc::IPPROTO_IPV6;

/// The options carried: (level, option, name), for any family (`None`),
/// IPv4 only (`Some(false)`) or IPv6 only (`Some(true)`).
const OPTIONS: &[(i32, i32, &str, Option<bool>)] = &[
    (SOL_SOCKET, libc::SO_BINDTODEVICE, "SO_BINDTODEVICE", None),
    (SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE", None),
    (SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST", None),
    (SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF", None),
    (SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF", None),
    (SOL_SOCKET, libc::SO_PRIORITY, "SO_PRIORITY", None),
    (SOL_SOCKET, libc::SO_OOBINLINE, "SO_OOBINLINE", None),
    (SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT", None),
    (SOL_SOCKET, libc::SO_DONTROUTE, "SO_DONTROUTE", None),
    (SOL_SOCKET, libc::SO_MARK, "SO_MARK", None),
    (SOL_SOCKET, libc::SO_LINGER, "SO_LINGER", None),
    (SOL_SOCKET, libc::SO_TIMESTAMP, "SO_TIMESTAMP", None),
    (SOL_SOCKET, libc::SO_TIMESTAMPNS, "SO_TIMESTAMPNS", None),
    (SOL_SOCKET, libc::SO_RCVTIMEO, "SO_RCVTIMEO", None),
    (SOL_SOCKET, libc::SO_SNDTIMEO, "SO_SNDTIMEO", None),
    (SOL_SOCKET, libc::SO_RXQ_OVFL, "SO_RXQ_OVFL", None),
    (SOL_SOCKET, libc::SO_PASSSEC, "SO_PASSSEC", None),
    (TCP, libc::TCP_NODELAY, "TCP_NODELAY", None),
    (TCP, libc::TCP_MAXSEG, "TCP_MAXSEG", None),
    (TCP, libc::TCP_CORK, "TCP_CORK", None),
    (TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", None),
    (TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL", None),
    (TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT", None),
    (TCP, libc::TCP_SYNCNT, "TCP_SYNCNT", None),
    (TCP, libc::TCP_LINGER2, "TCP_LINGER2", None),
    (TCP, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", None),
    (TCP, libc::TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP", None),
    (TCP, libc::TCP_CONGESTION, "TCP_CONGESTION", None),
    (TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", None),
    (TCP, libc::TCP_FASTOPEN, "TCP_FASTOPEN", None),
    (TCP, libc::TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", None),
    (UDP, libc::UDP_CORK, "UDP_CORK", None),
    (IP, libc::IP_TOS, "IP_TOS", Some(false)),
    (IP, libc::IP_TTL, "IP_TTL", Some(false)),
    (IP, libc::IP_RECVERR, "IP_RECVERR", Some(false)),
    (IP, libc::IP_PKTINFO, "IP_PKTINFO", Some(false)),
    (IP, libc::IP_RECVTOS, "IP_RECVTOS", Some(false)),
    (IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER", Some(false)),
    (IP, libc::IP_FREEBIND, "IP_FREEBIND", Some(false)),
    (IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT", Some(false)),
    (IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL", Some(false)),
    (IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", Some(false)),
    (IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", Some(true)),
    (IPV6, libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", Some(true)),
    (IPV6, libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", Some(true)),
    (IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", Some(true)),
    (IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS", Some(true)),
    (IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR", Some(true)),
    (IPV6, libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", Some(true)),
    (IPV6, libc::IPV6_FREEBIND, "IPV6_FREEBIND", Some(true)),
    (IPV6, libc::IPV6_TRANSPARENT, "IPV6_TRANSPARENT", Some(true)),
];

/// The name of option `opt` at `level`.
pub fn name(level: i32, opt: i32) -> &'static str {
    OPTIONS
        .iter()
        .find(|o| o.0 == level && o.1 == opt)
        .map(|o| o.2)
        .unwrap_or("an option")
}

/// Every carried option socket `fd` (of IPv6 if `v6`) can report (a unix
/// socket reports the options of no protocol level, only SOL_SOCKET's).
fn read_all(fd: BorrowedFd<'_>, v6: bool) -> Vec<SockOpt> {
    let mut out = Vec::new();
    for &(level, opt, _, family) in OPTIONS {
        if family.is_some_and(|f| f != v6) {
            continue;
        }
        let mut buf = [0u8; 64];
        if let Ok(n) = sys::getsockopt_raw(fd, level, opt, &mut buf) {
            out.push((level, opt, buf[..n].to_vec()));
        }
    }
    out
}

/// A kind of socket, as a fresh one is made: (family, type).
pub type Fresh = (AddressFamily, SockType);

/// The options of a fresh socket of this family and type in the network
/// namespace of process `pid`, from a thread that joins it.
pub fn defaults(pid: i32, (family, ty): Fresh) -> std::io::Result<Vec<SockOpt>> {
    super::in_namespace(pid, "net", nix::sched::CloneFlags::CLONE_NEWNET, || {
        let fd = nix::sys::socket::socket(family, ty, nix::sys::socket::SockFlag::SOCK_CLOEXEC, None)?;
        Ok(read_all(fd.as_fd(), family == AddressFamily::Inet6))
    })
}

/// The options of socket `fd` that differ from `defaults`.
pub fn dump(fd: BorrowedFd<'_>, v6: bool, defaults: &[SockOpt]) -> Vec<SockOpt> {
    read_all(fd, v6).into_iter().filter(|o| !defaults.contains(o)).collect()
}

/// The options socket `fd` of kind `fresh` holds that a fresh one in the
/// network namespace of process `pid` would not; the defaults of each kind
/// are read once into `cache`.
pub fn dump_cached(
    fd: BorrowedFd<'_>,
    pid: i32,
    fresh: Fresh,
    cache: &mut std::collections::HashMap<(i32, i32), Vec<SockOpt>>,
) -> std::io::Result<Vec<SockOpt>> {
    let defaults = match cache.entry((fresh.0 as i32, fresh.1 as i32)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(defaults(pid, fresh)?),
    };
    Ok(dump(fd, fresh.0 == AddressFamily::Inet6, defaults))
}

/// Of the options a connected TCP socket shows, those its program set can
/// be told from a fresh socket's; these the kernel sets on every
/// connection: the buffer sizes it tunes as data flows (so that, unlike a
/// listener's, a connection's set by its program is not carried), the MSS
/// and window clamp negotiated (carried by kinds::tcp's repair options),
/// and on an accepted one the multicast hop limit copied from the SYN's
/// (which no program can set on a TCP socket).
pub fn of_connection(mut opts: Vec<SockOpt>) -> Vec<SockOpt> {
    const TUNED: [(i32, i32); 6] = [
        (SOL_SOCKET, libc::SO_RCVBUF),
        (SOL_SOCKET, libc::SO_SNDBUF),
        (TCP, libc::TCP_MAXSEG),
        (TCP, libc::TCP_WINDOW_CLAMP),
        (IP, libc::IP_MULTICAST_TTL),
        (IPV6, libc::IPV6_MULTICAST_HOPS),
    ];
    opts.retain(|(l, o, _)| !TUNED.contains(&(*l, *o)));
    opts
}

/// Sets `opts` on socket `fd`, before it is bound. The failing option's
/// name with the error.
pub fn restore(fd: BorrowedFd<'_>, opts: &[SockOpt]) -> Result<(), (&'static str, Errno)> {
    for (level, opt, value) in opts {
        let (opt, value) = match (*level, *opt) {
            // getsockopt shows twice what was asked for.
            (SOL_SOCKET, libc::SO_RCVBUF) => (libc::SO_RCVBUFFORCE, half(value)),
            (SOL_SOCKET, libc::SO_SNDBUF) => (libc::SO_SNDBUFFORCE, half(value)),
            (_, o) => (o, value.clone()),
        };
        sys::setsockopt_raw(fd, *level, opt, &value).map_err(|e| (name(*level, opt), e))?;
    }
    Ok(())
}

fn half(v: &[u8]) -> Vec<u8> {
    let n = v
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(0);
    (n / 2).to_ne_bytes().to_vec()
}

/// Refuses option lists a restore could not set: options this build does
/// not carry, or values longer than any of them.
pub fn check(opts: &[SockOpt]) -> bool {
    opts.iter()
        .all(|(l, o, v)| OPTIONS.iter().any(|c| c.0 == *l && c.1 == *o) && v.len() <= 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn fresh((family, ty): Fresh) -> OwnedFd {
        nix::sys::socket::socket(family, ty, nix::sys::socket::SockFlag::SOCK_CLOEXEC, None).unwrap()
    }

    const TCP4: Fresh = (AddressFamily::Inet, SockType::Stream);

    #[test]
    fn options_a_program_set_come_back() {
        let d = defaults(std::process::id() as i32, TCP4).unwrap();
        let fd = fresh(TCP4);
        assert!(
            dump(fd.as_fd(), false, &d).is_empty(),
            "a fresh socket has no options set"
        );
        let one = 1i32.to_ne_bytes();
        sys::setsockopt_raw(fd.as_fd(), TCP, libc::TCP_NODELAY, &one).unwrap();
        sys::setsockopt_raw(fd.as_fd(), SOL_SOCKET, libc::SO_RCVBUF, &100_000i32.to_ne_bytes()).unwrap();
        let set = dump(fd.as_fd(), false, &d);
        let names: Vec<&str> = set.iter().map(|(l, o, _)| name(*l, *o)).collect();
        assert_eq!(names, vec!["SO_RCVBUF", "TCP_NODELAY"]);
        assert!(check(&set));
        let again = fresh(TCP4);
        restore(again.as_fd(), &set).unwrap();
        assert_eq!(dump(again.as_fd(), false, &d), set);
        assert!(!check(&[(SOL_SOCKET, 9999, vec![1])]));
    }

    #[test]
    fn unix_socket_timeouts_and_buffers_come_back() {
        let unix = (AddressFamily::Unix, SockType::Datagram);
        let mut cache = std::collections::HashMap::new();
        let pid = std::process::id() as i32;
        let fd = fresh(unix);
        assert!(dump_cached(fd.as_fd(), pid, unix, &mut cache).unwrap().is_empty());
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 500_000,
        };
        let bytes: Vec<u8> = [timeout.tv_sec.to_ne_bytes(), timeout.tv_usec.to_ne_bytes()].concat();
        sys::setsockopt_raw(fd.as_fd(), SOL_SOCKET, libc::SO_RCVTIMEO, &bytes).unwrap();
        sys::setsockopt_raw(fd.as_fd(), SOL_SOCKET, libc::SO_SNDBUF, &100_000i32.to_ne_bytes()).unwrap();
        let set = dump_cached(fd.as_fd(), pid, unix, &mut cache).unwrap();
        let names: Vec<&str> = set.iter().map(|(l, o, _)| name(*l, *o)).collect();
        assert_eq!(names, vec!["SO_SNDBUF", "SO_RCVTIMEO"]);
        let again = fresh(unix);
        restore(again.as_fd(), &set).unwrap();
        assert_eq!(dump_cached(again.as_fd(), pid, unix, &mut cache).unwrap(), set);
    }
}
