//! sock_diag over netlink, asked from a thread that has joined the
//! network namespace of a container process (sock_diag answers for the
//! asking socket's namespace; setns(CLONE_NEWNET) changes only the calling
//! thread).

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::SockDiagMessage;

/// Sends each request in the netns of process `pid` and returns every
/// response message.
pub fn dump(pid: i32, requests: Vec<SockDiagMessage>) -> Result<Vec<SockDiagMessage>, String> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for r in requests {
                query(r, &mut out)?;
            }
            Ok(out)
        })
        .join()
        .map_err(|_| "the sock_diag thread panicked".to_string())?
    })
}

fn query(request: SockDiagMessage, out: &mut Vec<SockDiagMessage>) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG).map_err(|e| err(&e))?;
    sock.bind_auto().map_err(|e| err(&e))?;
    sock.connect(&netlink_sys::SocketAddr::new(0, 0)).map_err(|e| err(&e))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(hdr, request.into());
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    sock.send(&buf[..], 0).map_err(|e| err(&e))?;
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let n = sock.recv(&mut &mut rx[..], 0).map_err(|e| err(&e))?;
        let mut off = 0;
        while off < n {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[off..n]).map_err(|e| err(&e))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    // A protocol family the kernel lacks (no IPv6, say).
                    if e.raw_code() == -libc::ENOENT {
                        return Ok(());
                    }
                    return Err(format!("{e:?}"));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}
