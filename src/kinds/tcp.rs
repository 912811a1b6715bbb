//! Established TCP connections, through TCP_REPAIR (with
//! `--tcp-established`).
//!
//! Dump, on a duplicate of the socket: repair mode on; for the receive
//! and the send queue, its sequence number and contents (MSG_PEEK in repair
//! mode reads the queue selected with TCP_REPAIR_QUEUE); MSS, window scales,
//! SACK and timestamp options (TCP_INFO, TCP_MAXSEG), the window
//! (TCP_REPAIR_WINDOW), the timestamp, TCP_NODELAY and SO_KEEPALIVE, and
//! the other options the program set (kinds::sockopts, but for those the
//! kernel tunes on a connection, see [`super::sockopts::of_connection`]). The
//! socket stays in repair mode, so that killing the container closes it
//! silently: no FIN, no RST reaches the peer.
//!
//! Restore, in the container's network namespace once its address is back:
//! a socket in repair mode, both queues' sequence numbers, bind, connect
//! (no SYN in repair mode), the queued bytes written back into each queue,
//! the options, the window and the timestamp, then repair mode off: the
//! connection continues, and the kernel retransmits what the peer has not
//! acknowledged.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::sys::{self, Errno};

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const SIOCINQ: libc::c_ulong = 0x541B;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

#[derive(Debug, thiserror::Error)]
#[error("TCP connection {local} -> {remote}: {what}: {source}")]
pub struct Error {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub what: &'static str,
    #[source]
    pub source: Errno,
}

pub type Result<T> = std::result::Result<T, Error>;

/// One established connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpImage {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Sequence number after the last byte in the receive queue, and the
    /// queued bytes (received, not yet read by the program).
    pub rcv_seq: u32,
    pub rcv_data: Vec<u8>,
    /// Sequence number after the last byte in the send queue, and the
    /// queued bytes (sent but not acknowledged, or not sent yet).
    pub snd_seq: u32,
    pub snd_data: Vec<u8>,
    pub mss: u32,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub sack: bool,
    pub timestamps: bool,
    pub timestamp: u32,
    /// struct tcp_repair_window, as five u32s.
    pub window: [u32; 5],
    pub nodelay: bool,
    pub keepalive: bool,
    /// Options the program set (kinds::sockopts; files layout 6), set
    /// before the socket is bound.
    pub opts: Vec<super::sockopts::SockOpt>,
}

/// [`TcpImage`] as files layouts 3 to 5 wrote it, without its options.
#[derive(Deserialize)]
pub struct TcpImageV5 {
    local: SocketAddr,
    remote: SocketAddr,
    rcv_seq: u32,
    rcv_data: Vec<u8>,
    snd_seq: u32,
    snd_data: Vec<u8>,
    mss: u32,
    snd_wscale: u8,
    rcv_wscale: u8,
    sack: bool,
    timestamps: bool,
    timestamp: u32,
    window: [u32; 5],
    nodelay: bool,
    keepalive: bool,
}

impl From<TcpImageV5> for TcpImage {
    fn from(o: TcpImageV5) -> Self {
        TcpImage {
            local: o.local,
            remote: o.remote,
            rcv_seq: o.rcv_seq,
            rcv_data: o.rcv_data,
            snd_seq: o.snd_seq,
            snd_data: o.snd_data,
            mss: o.mss,
            snd_wscale: o.snd_wscale,
            rcv_wscale: o.rcv_wscale,
            sack: o.sack,
            timestamps: o.timestamps,
            timestamp: o.timestamp,
            window: o.window,
            nodelay: o.nodelay,
            keepalive: o.keepalive,
            opts: Vec::new(),
        }
    }
}

fn opt_u32(fd: &OwnedFd, level: i32, opt: i32) -> std::result::Result<u32, Errno> {
    sys::getsockopt_int(fd.as_fd(), level, opt).map(|v| v as u32)
}

fn set_u32(fd: &OwnedFd, level: i32, opt: i32, v: u32) -> std::result::Result<(), Errno> {
    sys::setsockopt_raw(fd.as_fd(), level, opt, &v.to_ne_bytes())
}

fn set_i32(fd: &OwnedFd, level: i32, opt: i32, v: i32) -> std::result::Result<(), Errno> {
    sys::setsockopt_raw(fd.as_fd(), level, opt, &v.to_ne_bytes())
}

/// Selects `queue` and sets the sequence number of its first byte: the
/// saved sequence (after the last byte) minus the queued bytes.
fn set_queue_seq(fd: &OwnedFd, queue: i32, seq: u32, data: &[u8]) -> std::result::Result<(), Errno> {
    set_i32(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)?;
    set_u32(
        fd,
        libc::IPPROTO_TCP,
        TCP_QUEUE_SEQ,
        seq.wrapping_sub(data.len() as u32),
    )
}

/// Reads one queue in repair mode: its sequence number and its bytes.
fn read_queue(fd: &OwnedFd, queue: i32, len: usize) -> std::result::Result<(u32, Vec<u8>), Errno> {
    set_i32(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)?;
    let seq = opt_u32(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ)?;
    let mut data = vec![0u8; len];
    // MSG_PEEK starts from the head each time: one read takes it all.
    let got = match socket::recv(fd.as_raw_fd(), &mut data, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => 0,
        Err(e) => return Err(e),
    };
    data.truncate(got);
    Ok((seq, data))
}

/// Puts the connection behind `fd` (a duplicate) in repair mode and reads
/// it; `opts` are the options its program set, read before. The socket is
/// left in repair mode.
pub fn dump(
    fd: &OwnedFd,
    local: SocketAddr,
    remote: SocketAddr,
    opts: Vec<super::sockopts::SockOpt>,
) -> Result<TcpImage> {
    let err = |what| {
        move |source| Error {
            local,
            remote,
            what,
            source,
        }
    };
    set_i32(fd, libc::IPPROTO_TCP, TCP_REPAIR, 1).map_err(err("enter repair mode"))?;
    let inq = sys::ioctl_int(fd.as_fd(), SIOCINQ).map_err(err("receive queue length"))? as usize;
    let outq = sys::ioctl_int(fd.as_fd(), SIOCOUTQ).map_err(err("send queue length"))? as usize;
    let (rcv_seq, rcv_data) = read_queue(fd, TCP_RECV_QUEUE, inq).map_err(err("read receive queue"))?;
    let (snd_seq, snd_data) = read_queue(fd, TCP_SEND_QUEUE, outq).map_err(err("read send queue"))?;
    let mut info = [0u8; 232];
    sys::getsockopt_raw(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, &mut info).map_err(err("TCP_INFO"))?;
    let options = info[5];
    let mut window = [0u8; 20];
    sys::getsockopt_raw(fd.as_fd(), libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &mut window).map_err(err("read window"))?;
    let w = |i: usize| u32::from_ne_bytes(window[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    Ok(TcpImage {
        local,
        remote,
        rcv_seq,
        rcv_data,
        snd_seq,
        snd_data,
        mss: opt_u32(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG).map_err(err("read MSS"))?,
        snd_wscale: if options & TCPI_OPT_WSCALE != 0 {
            info[6] & 0x0f
        } else {
            0
        },
        rcv_wscale: if options & TCPI_OPT_WSCALE != 0 {
            info[6] >> 4
        } else {
            0
        },
        sack: options & TCPI_OPT_SACK != 0,
        timestamps: options & TCPI_OPT_TIMESTAMPS != 0,
        timestamp: opt_u32(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP).map_err(err("read timestamp"))?,
        window: [w(0), w(1), w(2), w(3), w(4)],
        nodelay: opt_u32(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap_or(0) != 0,
        keepalive: opt_u32(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE).unwrap_or(0) != 0,
        opts: super::sockopts::of_connection(opts),
    })
}

/// Lets a connection that was dumped with `--leave-running` go on.
pub fn leave_repair(fd: &OwnedFd) {
    // TCP_REPAIR_OFF_NO_WP (-1): off, without a window probe.
    let _ = set_i32(fd, libc::IPPROTO_TCP, TCP_REPAIR, -1);
}

/// Makes the connection again (in the container's network namespace).
/// An error about connection `t` in step `what`.
fn failed<'t>(t: &'t TcpImage, what: &'static str) -> impl Fn(Errno) -> Error + 't {
    move |source| Error {
        local: t.local,
        remote: t.remote,
        what,
        source,
    }
}

pub fn restore(t: &TcpImage) -> Result<OwnedFd> {
    let err = |what| failed(t, what);
    let family = if t.local.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(err("socket"))?;
    super::sockopts::restore(fd.as_fd(), &t.opts).map_err(|(what, source)| err(what)(source))?;
    // Repair mode also forces address reuse (SK_FORCE_REUSE): the
    // connection binds next to its listener. Setting SO_REUSEADDR now
    // would undo that.
    set_i32(&fd, libc::IPPROTO_TCP, TCP_REPAIR, 1).map_err(err("enter repair mode"))?;
    // Sequence numbers of the first byte of each queue.
    set_queue_seq(&fd, TCP_SEND_QUEUE, t.snd_seq, &t.snd_data).map_err(err("send sequence"))?;
    set_queue_seq(&fd, TCP_RECV_QUEUE, t.rcv_seq, &t.rcv_data).map_err(err("receive sequence"))?;
    socket::bind(fd.as_raw_fd(), &super::inet::sockaddr(t.local)).map_err(err("bind"))?;
    socket::connect(fd.as_raw_fd(), &super::inet::sockaddr(t.remote)).map_err(err("connect in repair mode"))?;
    // Options, as the handshake negotiated them.
    let mut opts: Vec<u8> = Vec::new();
    let mut push = |code: u32, val: u32| {
        opts.extend_from_slice(&code.to_ne_bytes());
        opts.extend_from_slice(&val.to_ne_bytes());
    };
    push(TCPOPT_MSS, t.mss);
    if t.snd_wscale != 0 || t.rcv_wscale != 0 {
        push(TCPOPT_WINDOW, u32::from(t.snd_wscale) | (u32::from(t.rcv_wscale) << 16));
    }
    if t.sack {
        push(TCPOPT_SACK_PERM, 0);
    }
    if t.timestamps {
        push(TCPOPT_TIMESTAMP, 0);
    }
    sys::setsockopt_raw(fd.as_fd(), libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &opts).map_err(err("options"))?;
    if t.timestamps {
        set_u32(&fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, t.timestamp).map_err(err("timestamp"))?;
    }
    // The queued bytes, back into their queues.
    for (queue, data) in [(TCP_RECV_QUEUE, &t.rcv_data), (TCP_SEND_QUEUE, &t.snd_data)] {
        if data.is_empty() {
            continue;
        }
        set_i32(&fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, queue).map_err(err("select queue"))?;
        let mut off = 0;
        while off < data.len() {
            off += socket::send(fd.as_raw_fd(), &data[off..], MsgFlags::empty()).map_err(err("refill queue"))?;
        }
    }
    let window: Vec<u8> = t.window.iter().flat_map(|w| w.to_ne_bytes()).collect();
    sys::setsockopt_raw(fd.as_fd(), libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &window).map_err(err("window"))?;
    if t.nodelay {
        set_i32(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).map_err(err("TCP_NODELAY"))?;
    }
    if t.keepalive {
        set_i32(&fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1).map_err(err("SO_KEEPALIVE"))?;
    }
    // Still in repair mode: a restore that is discarded (a migration that
    // fails before its commit) then closes it without a word, instead of
    // resetting the peer that the source, running on, still talks to.
    // [`go_live`] ends repair at the commit.
    Ok(fd)
}

/// At the commit of a restore: takes connection `t`, held as fd `fd` by
/// process `pid` (host PID), out of repair mode, with a window probe.
pub fn go_live(t: &TcpImage, pid: i32, fd: i32) -> Result<()> {
    let err = |what| failed(t, what);
    let pidfd = sys::pidfd_open(nix::unistd::Pid::from_raw(pid)).map_err(err("pidfd_open"))?;
    let sock = sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(err("pidfd_getfd"))?;
    set_i32(&sock, libc::IPPROTO_TCP, TCP_REPAIR, 0).map_err(err("leave repair mode"))
}
