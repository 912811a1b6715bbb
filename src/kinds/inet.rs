//! TCP and UDP sockets of a bridged container: TCP listening sockets with
//! their backlog and options, UDP sockets bound and connected. Found with
//! sock_diag inside the container's network namespace, options read from a
//! duplicate of the socket; restored by the container's PID 1 after its
//! network is back (same address), before anything else runs.
//!
//! A TCP connection in any other state (established, closing...) is
//! refused at checkpoint time, naming it: restoring it needs TCP_REPAIR,
//! which is not built yet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use serde::{Deserialize, Serialize};

use crate::sys::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sock_diag (inet) in the container's network namespace: {0}")]
    Diag(String),
    #[error("{what} socket {addr}: {source}")]
    Sys {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: Errno,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Names a socket that sock_diag did not list, from the socket itself:
/// its family, type and protocol, and where it is bound. An unbound or
/// bound-but-not-listening TCP socket is one of these (diag lists only
/// listening and connected ones).
pub fn describe_unlisted(fd: &OwnedFd) -> String {
    let int_opt = |opt: i32| {
        let mut b = [0u8; 4];
        crate::sys::getsockopt_raw(fd.as_fd(), libc::SOL_SOCKET, opt, &mut b)
            .ok()
            .map(|_| i32::from_ne_bytes(b))
    };
    let (Some(domain), Some(ty), Some(proto)) = (
        int_opt(libc::SO_DOMAIN),
        int_opt(libc::SO_TYPE),
        int_opt(libc::SO_PROTOCOL),
    ) else {
        return "socket whose family can not be read".into();
    };
    let family = match domain {
        libc::AF_INET => "IPv4",
        libc::AF_INET6 => "IPv6",
        libc::AF_NETLINK => return format!("netlink socket (protocol {proto})"),
        libc::AF_PACKET => return "packet socket".into(),
        libc::AF_UNIX => return "unix socket that sock_diag does not list".into(),
        other => return format!("socket of address family {other}"),
    };
    let kind = match (ty, proto) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => "TCP",
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => "UDP",
        (libc::SOCK_RAW, _) => "raw",
        (libc::SOCK_STREAM, libc::IPPROTO_MPTCP) => "MPTCP",
        (libc::SOCK_SEQPACKET | libc::SOCK_STREAM, libc::IPPROTO_SCTP) => "SCTP",
        _ => "",
    };
    let kind = if kind.is_empty() {
        format!("{family} socket (type {ty}, protocol {proto})")
    } else {
        format!("{kind} socket ({family})")
    };
    let bound = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| SocketAddr::from(std::net::SocketAddrV4::from(*s)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|s| SocketAddr::from(std::net::SocketAddrV6::from(*s)))
                })
        })
        .filter(|a| a.port() != 0 || !a.ip().is_unspecified());
    match bound {
        Some(a) if kind.starts_with("TCP") => format!("{kind} bound to {a}, not listening or connected"),
        Some(a) => format!("{kind} bound to {a}"),
        None if kind.starts_with("TCP") => format!("{kind} not bound, listening or connected"),
        None => format!("{kind}, not bound"),
    }
}

/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

/// The name of a TCP state number.
pub fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "unknown state",
    }
}

/// What sock_diag says about one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub tcp: bool,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// For a listener, the backlog limit.
    pub backlog: u32,
    /// For a listener, the connections not yet accepted; for a UDP
    /// socket, the buffer memory of datagrams not yet read.
    pub queued: u32,
}

impl Diag {
    /// Human words for a refusal: "TCP connection 10.89.0.2:8000 ->
    /// 10.89.0.1:41234 (ESTABLISHED)".
    pub fn describe(&self) -> String {
        format!(
            "{} {} -> {} ({})",
            if self.tcp { "TCP connection" } else { "UDP socket" },
            self.local,
            self.remote,
            if self.tcp { state_name(self.state) } else { "UDP" }
        )
    }

    /// What it holds that a restore would lose: connections a listener
    /// has not accepted yet (their server side lives only in its queue),
    /// datagrams a UDP socket has not read.
    pub fn waiting(&self) -> Option<String> {
        match (self.tcp, self.state) {
            _ if self.queued == 0 => None,
            (true, TCP_LISTEN) => Some(format!(
                "TCP listener on {} with {} connections not accepted yet",
                self.local, self.queued
            )),
            (false, _) => Some(format!("UDP socket on {} with datagrams not read yet", self.local)),
            _ => None,
        }
    }

    /// Whether this module can restore it.
    pub fn supported(&self) -> bool {
        if self.tcp {
            self.state == TCP_LISTEN || (self.state == TCP_CLOSE && self.local.port() == 0)
        } else {
            true
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InetImage {
    pub tcp: bool,
    pub v6: bool,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub backlog: u32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    /// Options the program set (kinds::sockopts; files layout 5).
    pub opts: Vec<super::sockopts::SockOpt>,
}

/// The kind of fresh socket whose options `d`'s are compared with.
pub fn fresh(d: &Diag) -> super::sockopts::Fresh {
    let family = if d.local.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    (family, if d.tcp { SockType::Stream } else { SockType::Datagram })
}

/// [`InetImage`] as files layout 4 wrote it, without its options.
#[derive(Deserialize)]
pub struct InetImageV4 {
    tcp: bool,
    v6: bool,
    state: u8,
    local: SocketAddr,
    remote: SocketAddr,
    backlog: u32,
    reuseaddr: bool,
    reuseport: bool,
    v6only: bool,
}

impl From<InetImageV4> for InetImage {
    fn from(o: InetImageV4) -> Self {
        InetImage {
            tcp: o.tcp,
            v6: o.v6,
            state: o.state,
            local: o.local,
            remote: o.remote,
            backlog: o.backlog,
            reuseaddr: o.reuseaddr,
            reuseport: o.reuseport,
            v6only: o.v6only,
            opts: Vec::new(),
        }
    }
}

/// Every TCP and UDP socket of process `pid`'s network namespace, by inode.
pub fn diag(pid: i32) -> Result<HashMap<u64, Diag>> {
    let mut out = HashMap::new();
    for family in [AF_INET, AF_INET6] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            let request = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            });
            // The answer does not name the protocol: one request each.
            for m in super::sockdiag::dump(pid, vec![request]).map_err(Error::Diag)? {
                let SockDiagMessage::InetResponse(r) = m else { continue };
                let h = &r.header;
                let id = &h.socket_id;
                out.insert(
                    u64::from(h.inode),
                    Diag {
                        tcp: protocol == IPPROTO_TCP,
                        state: h.state,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        backlog: h.send_queue,
                        queued: h.recv_queue,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Reads a socket's protocol from a duplicate of it, `fd`; `opts` are the
/// options its program set (kinds::sockopts).
pub fn dump(d: &Diag, fd: &OwnedFd, opts: Vec<super::sockopts::SockOpt>) -> Result<InetImage> {
    let err = |what| {
        move |source| Error::Sys {
            what,
            addr: d.local,
            source,
        }
    };
    let ty = socket::getsockopt(fd, sockopt::SockType).map_err(err("read type of"))?;
    let v6 = matches!(d.local.ip(), IpAddr::V6(_));
    Ok(InetImage {
        tcp: ty == SockType::Stream,
        v6,
        state: d.state,
        local: d.local,
        remote: d.remote,
        backlog: d.backlog.max(1),
        reuseaddr: socket::getsockopt(fd, sockopt::ReuseAddr).unwrap_or(false),
        reuseport: socket::getsockopt(fd, sockopt::ReusePort).unwrap_or(false),
        v6only: v6 && socket::getsockopt(fd, sockopt::Ipv6V6Only).unwrap_or(false),
        opts,
    })
}

pub(crate) fn sockaddr(a: SocketAddr) -> SockaddrStorage {
    match a {
        SocketAddr::V4(v4) => SockaddrStorage::from(v4),
        SocketAddr::V6(v6) => SockaddrStorage::from(v6),
    }
}

/// Makes the socket again (in the container's network namespace).
pub fn restore(s: &InetImage) -> Result<OwnedFd> {
    let err = |what| {
        move |source| Error::Sys {
            what,
            addr: s.local,
            source,
        }
    };
    let family = if s.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let ty = if s.tcp { SockType::Stream } else { SockType::Datagram };
    let fd = socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, None).map_err(err("create"))?;
    super::sockopts::restore(fd.as_fd(), &s.opts).map_err(|(what, source)| Error::Sys {
        what,
        addr: s.local,
        source,
    })?;
    if s.reuseaddr {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err("set SO_REUSEADDR on"))?;
    }
    if s.reuseport {
        socket::setsockopt(&fd, sockopt::ReusePort, &true).map_err(err("set SO_REUSEPORT on"))?;
    }
    if s.v6 {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &s.v6only).map_err(err("set IPV6_V6ONLY on"))?;
    }
    if s.local.port() != 0 || !s.local.ip().is_unspecified() {
        socket::bind(fd.as_raw_fd(), &sockaddr(s.local)).map_err(err("bind"))?;
    }
    if s.tcp && s.state == TCP_LISTEN {
        let backlog = socket::Backlog::new(s.backlog.min(4096) as i32).unwrap_or(socket::Backlog::MAXCONN);
        socket::listen(&fd.as_fd(), backlog).map_err(err("listen on"))?;
    } else if !s.tcp && s.state == TCP_ESTABLISHED && s.remote.port() != 0 {
        socket::connect(fd.as_raw_fd(), &sockaddr(s.remote)).map_err(err("connect"))?;
    }
    Ok(fd)
}
