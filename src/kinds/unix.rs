//! Unix sockets: socketpairs and named sockets, stream, seqpacket and
//! datagram, listening and connected, with the data queued in them.
//!
//! Dump asks sock_diag (from a thread inside the container's network
//! namespace) for each socket's type, state, name, peer and queue, and
//! reads the queue without consuming it (MSG_PEEK, stepping through
//! datagrams with SO_PEEK_OFF) from a duplicate of the socket
//! (pidfd_getfd). Restore makes connected pairs with socketpair, binds and
//! listens named sockets again (unlinking the stale socket file first), and
//! sends the queued data back in from the peer, boundaries kept.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use serde::{Deserialize, Serialize};

use crate::sys::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sock_diag in the container's network namespace: {0}")]
    Diag(String),
    #[error("unix socket {ino}: {what}: {source}")]
    Sys {
        ino: u64,
        what: &'static str,
        #[source]
        source: Errno,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A socket's bound name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnixName {
    Path(String),
    Abstract(Vec<u8>),
}

/// What sock_diag says about one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub kind: u8,
    pub listening: bool,
    pub name: Option<UnixName>,
    pub peer: Option<u64>,
    /// Pending connections (listening) or queued bytes.
    pub rqlen: u32,
    /// Backlog (listening).
    pub wqlen: u32,
    /// Shut down for receiving (1), sending (2), or both (3).
    pub shutdown: u8,
}

impl Diag {
    /// What is not carried about the socket itself, if anything.
    pub fn uncarried(&self) -> Option<String> {
        let how = match self.shutdown & 3 {
            0 => return None,
            1 => "reading",
            2 => "writing",
            _ => "reading and writing",
        };
        Some(format!(
            "unix socket shut down for {how} (shutdown(2), or its peer's), which is not carried yet"
        ))
    }
}

/// One socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixImage {
    pub ino: u64,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: u8,
    pub listening: bool,
    pub backlog: u32,
    pub name: Option<UnixName>,
    pub peer: Option<u64>,
    /// Data received and not yet read: one entry per datagram or record;
    /// for a stream, one entry.
    pub queue: Vec<Vec<u8>>,
    /// Options the program set (kinds::sockopts; files layout 6).
    pub opts: Vec<super::sockopts::SockOpt>,
}

/// [`UnixImage`] as files layouts 3 to 5 wrote it, without its options.
#[derive(Deserialize)]
pub struct UnixImageV5 {
    ino: u64,
    kind: u8,
    listening: bool,
    backlog: u32,
    name: Option<UnixName>,
    peer: Option<u64>,
    queue: Vec<Vec<u8>>,
}

impl From<UnixImageV5> for UnixImage {
    fn from(o: UnixImageV5) -> Self {
        UnixImage {
            ino: o.ino,
            kind: o.kind,
            listening: o.listening,
            backlog: o.backlog,
            name: o.name,
            peer: o.peer,
            queue: o.queue,
            opts: Vec::new(),
        }
    }
}

/// The kind of fresh socket whose options a socket of `kind` is compared with.
pub fn fresh(kind: u8) -> super::sockopts::Fresh {
    (AddressFamily::Unix, sock_type(kind))
}

/// Every unix socket of the network namespace of process `pid`, by inode.
pub fn diag(pid: i32) -> Result<HashMap<u64, Diag>> {
    use netlink_packet_sock_diag::unix::nlas::{Nla, UnixDiagName};
    let request = SockDiagMessage::UnixRequest(UnixRequest {
        state_flags: StateFlags::all(),
        inode: 0,
        show_flags: ShowFlags::NAME | ShowFlags::PEER | ShowFlags::RQLEN,
        cookie: [0xff; 8],
    });
    let mut out = HashMap::new();
    for m in super::sockdiag::dump(pid, vec![request]).map_err(Error::Diag)? {
        let SockDiagMessage::UnixResponse(r) = m else { continue };
        let mut d = Diag {
            kind: r.header.kind,
            listening: r.header.state == 10, // TCP_LISTEN
            name: None,
            peer: r.peer().map(u64::from),
            rqlen: 0,
            wqlen: 0,
            shutdown: 0,
        };
        for nla in &r.nlas {
            match nla {
                Nla::Name(UnixDiagName::Pathname(p)) => d.name = Some(UnixName::Path(p.to_string_lossy().into_owned())),
                Nla::Name(UnixDiagName::Abstract(a)) => d.name = Some(UnixName::Abstract(a.clone())),
                Nla::ReceiveQueueLength(rq, wq) => {
                    d.rqlen = *rq;
                    d.wqlen = *wq;
                }
                Nla::Shutdown(how) => d.shutdown = *how,
                _ => {}
            }
        }
        out.insert(u64::from(r.header.inode), d);
    }
    Ok(out)
}

/// What a socket's queue holds.
pub enum Queue {
    /// Its bytes: one entry for a stream, one per datagram or record.
    Data(Vec<Vec<u8>>),
    /// File descriptors in flight (SCM_RIGHTS), which are not carried.
    FdsInFlight,
}

/// Reads a socket's queue without consuming it, from `fd` (a duplicate),
/// stepping through it with a peek offset (a stream's peek stops where
/// the sender's credentials or passed descriptors change), then puts the
/// offset back (-1: off).
pub fn peek_queue(ino: u64, d: &Diag, fd: &OwnedFd) -> Result<Queue> {
    if d.listening || (d.kind == libc::SOCK_STREAM as u8 && d.rqlen == 0) {
        return Ok(Queue::Data(Vec::new()));
    }
    peek_all(ino, d.kind == libc::SOCK_STREAM as u8, fd)
}

/// Whether unix socket `fd` (a duplicate of a running process's) has file
/// descriptors in flight in its queue; false for any other socket.
pub fn holds_fds_in_flight(fd: &OwnedFd) -> bool {
    let int = |opt| crate::sys::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, opt);
    let (Ok(domain), Ok(kind), Ok(listening)) = (int(libc::SO_DOMAIN), int(libc::SO_TYPE), int(libc::SO_ACCEPTCONN))
    else {
        return false;
    };
    domain == libc::AF_UNIX
        && listening == 0
        && matches!(peek_all(0, kind == libc::SOCK_STREAM, fd), Ok(Queue::FdsInFlight))
}

fn peek_all(ino: u64, stream: bool, fd: &OwnedFd) -> Result<Queue> {
    let sys = |what| sys_err(ino, what);
    crate::sys::set_peek_off(fd.as_fd(), 0).map_err(sys("set SO_PEEK_OFF"))?;
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let res = loop {
        match crate::sys::peek_with_rights(fd.as_fd(), &mut buf) {
            Ok((_, true)) => break Ok(false),
            Ok((0, false)) if stream => break Ok(true),
            Ok((n, false)) => {
                match out.first_mut() {
                    Some(all) if stream => all.extend_from_slice(&buf[..n]),
                    _ => out.push(buf[..n].to_vec()),
                }
                if out.len() > 100_000 {
                    break Ok(true);
                }
            }
            Err(Errno::EAGAIN) => break Ok(true),
            Err(e) => break Err(sys("peek the queue")(e)),
        }
    };
    let _ = crate::sys::set_peek_off(fd.as_fd(), -1);
    match res? {
        true => Ok(Queue::Data(out)),
        false => Ok(Queue::FdsInFlight),
    }
}

fn sys_err(ino: u64, what: &'static str) -> impl Fn(Errno) -> Error {
    move |source| Error::Sys { ino, what, source }
}

/// A new unix socket of type `kind` (close-on-exec).
fn new_socket(kind: u8) -> std::result::Result<OwnedFd, Errno> {
    socket::socket(AddressFamily::Unix, sock_type(kind), SockFlag::SOCK_CLOEXEC, None)
}

fn sock_type(kind: u8) -> SockType {
    match i32::from(kind) {
        libc::SOCK_DGRAM => SockType::Datagram,
        libc::SOCK_SEQPACKET => SockType::SeqPacket,
        _ => SockType::Stream,
    }
}

fn addr(name: &UnixName) -> std::result::Result<UnixAddr, Errno> {
    match name {
        UnixName::Path(p) => UnixAddr::new(p.as_str()),
        UnixName::Abstract(a) => UnixAddr::new_abstract(a),
    }
}

/// Makes every socket again, in the calling process (the container's PID 1,
/// inside its namespaces). Returns each socket's fd, by index.
pub fn restore_all(socks: &[UnixImage]) -> Result<Vec<OwnedFd>> {
    let mut made: Vec<Option<OwnedFd>> = (0..socks.len()).map(|_| None).collect();
    let index: HashMap<u64, usize> = socks.iter().enumerate().map(|(i, s)| (s.ino, i)).collect();
    // Named and listening sockets first, so that others can connect.
    for (i, s) in socks.iter().enumerate() {
        let sys = |what| sys_err(s.ino, what);
        let paired = s
            .peer
            .is_some_and(|p| index.contains_key(&p) && socks[index[&p]].peer == Some(s.ino));
        if paired || s.name.is_none() {
            continue;
        }
        let fd = new_socket(s.kind).map_err(sys("socket"))?;
        let name = s.name.as_ref().expect("named");
        if let UnixName::Path(p) = name {
            // The socket file of the checkpointed process is still there.
            let _ = std::fs::remove_file(p);
        }
        socket::bind(fd.as_raw_fd(), &addr(name).map_err(sys("address"))?).map_err(sys("bind"))?;
        if s.listening {
            socket::listen(
                &fd,
                socket::Backlog::new(s.backlog.clamp(1, 4096) as i32).unwrap_or(socket::Backlog::MAXCONN),
            )
            .map_err(sys("listen"))?;
        }
        made[i] = Some(fd);
    }
    // Connected pairs, then the rest.
    for (i, s) in socks.iter().enumerate() {
        if made[i].is_some() {
            continue;
        }
        let sys = |what| sys_err(s.ino, what);
        let peer = s.peer.and_then(|p| index.get(&p).copied());
        match peer {
            Some(j) if made[j].is_none() && socks[j].peer == Some(s.ino) => {
                let (a, b) = socket::socketpair(AddressFamily::Unix, sock_type(s.kind), None, SockFlag::SOCK_CLOEXEC)
                    .map_err(sys("socketpair"))?;
                made[i] = Some(a);
                made[j] = Some(b);
            }
            Some(j) => {
                // Connected to a named socket (a datagram client).
                let fd = new_socket(s.kind).map_err(sys("socket"))?;
                if let Some(name) = &socks[j].name {
                    socket::connect(fd.as_raw_fd(), &addr(name).map_err(sys("address"))?).map_err(sys("connect"))?;
                }
                made[i] = Some(fd);
            }
            None => {
                made[i] = Some(new_socket(s.kind).map_err(sys("socket"))?);
            }
        }
    }
    let made: Vec<OwnedFd> = made.into_iter().map(|m| m.expect("every socket made")).collect();
    // Options before the queues, which were filled under them.
    for (s, fd) in socks.iter().zip(&made) {
        super::sockopts::restore(fd.as_fd(), &s.opts).map_err(|(what, source)| sys_err(s.ino, what)(source))?;
    }
    // Queued data goes back in from the peer (or, for a named datagram
    // socket, from a throwaway sender).
    for s in socks {
        if s.queue.is_empty() {
            continue;
        }
        let sys = |what| sys_err(s.ino, what);
        let peer = s.peer.and_then(|p| index.get(&p).copied());
        match (peer, &s.name) {
            (Some(j), _) if socks[j].peer == Some(s.ino) => {
                for m in &s.queue {
                    send_all(&made[j], m, s.kind).map_err(sys("requeue"))?;
                }
            }
            (_, Some(name)) => {
                let tmp = new_socket(s.kind).map_err(sys("socket"))?;
                let to = addr(name).map_err(sys("address"))?;
                for m in &s.queue {
                    socket::sendto(tmp.as_raw_fd(), m, &to, MsgFlags::empty()).map_err(sys("requeue"))?;
                }
            }
            _ => {}
        }
    }
    Ok(made)
}

fn send_all(fd: &OwnedFd, data: &[u8], kind: u8) -> std::result::Result<(), Errno> {
    if kind != libc::SOCK_STREAM as u8 {
        socket::send(fd.as_fd().as_raw_fd(), data, MsgFlags::empty())?;
        return Ok(());
    }
    let mut off = 0;
    while off < data.len() {
        off += socket::send(fd.as_fd().as_raw_fd(), &data[off..], MsgFlags::empty())?;
    }
    Ok(())
}
