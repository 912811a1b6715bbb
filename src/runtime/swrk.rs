//! A stand-in for CRIU's service mode (`criu swrk FD`), so that an OCI
//! runtime's own `restore` can take back a container that migrate has
//! restored. runc and crun restore by starting `criu swrk` and speaking
//! CRIU's RPC protocol (protobuf messages on a SOCK_SEQPACKET socket) with
//! it; they put the CRIU process into the container's cgroups, send a
//! RESTORE request, and learn the restored init's PID from CRIU's
//! "post-restore" notification, which is when they write their state.
//!
//! migrate runs the runtime with itself as CRIU ([`super::oci::hand_back`])
//! and an environment variable naming a socket. This stand-in, started by
//! the runtime, answers the version and feature checks, and on RESTORE asks
//! migrate (over that socket) to move the already running tree into the
//! cgroups the runtime made, then reports its init PID to the runtime as
//! CRIU would. Every other request is refused with a message.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recv, send, MsgFlags};

/// The environment variable naming migrate's hand-over socket.
pub const HANDOFF_ENV: &str = "MIGRATE_HANDOFF";

/// The CRIU version this stand-in answers with: the RPC of CRIU 3.17,
/// which is all runc and crun ask of it.
const VERSION: (i32, i32) = (3, 17);

/// Largest request accepted (runc's are a few hundred bytes).
const MAX_MSG: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CRIU stand-in: the runtime's socket: {0}")]
    Socket(nix::errno::Errno),
    #[error("CRIU stand-in: undecodable request from the runtime: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("CRIU stand-in: {0}")]
    Refused(String),
    #[error("CRIU stand-in: migrate's hand-over socket: {0}")]
    Handoff(std::io::Error),
}

/// CRIU's request types (rpc.proto `criu_req_type`).
pub mod req_type {
    pub const RESTORE: i32 = 2;
    pub const NOTIFY: i32 = 6;
    pub const FEATURE_CHECK: i32 = 9;
    pub const VERSION: i32 = 10;
}

// The subset of CRIU's rpc.proto (proto2) that runc and crun use; fields
// not listed here are skipped when decoding.

#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuReq {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub opts: Option<CriuOpts>,
    #[prost(bool, optional, tag = "3")]
    pub notify_success: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuOpts {
    #[prost(int32, required, tag = "1")]
    pub images_dir_fd: i32,
    #[prost(string, optional, tag = "10")]
    pub log_file: Option<String>,
    #[prost(int32, optional, tag = "17")]
    pub work_dir_fd: Option<i32>,
    #[prost(message, repeated, tag = "25")]
    pub cg_root: Vec<CgroupRoot>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CgroupRoot {
    #[prost(string, optional, tag = "1")]
    pub ctrl: Option<String>,
    #[prost(string, required, tag = "2")]
    pub path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CriuResp {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(bool, required, tag = "2")]
    pub success: bool,
    #[prost(message, optional, tag = "4")]
    pub restore: Option<RestoreResp>,
    #[prost(message, optional, tag = "5")]
    pub notify: Option<Notify>,
    #[prost(int32, optional, tag = "7")]
    pub cr_errno: Option<i32>,
    #[prost(message, optional, tag = "8")]
    pub features: Option<Features>,
    #[prost(string, optional, tag = "9")]
    pub cr_errmsg: Option<String>,
    #[prost(message, optional, tag = "10")]
    pub version: Option<Version>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RestoreResp {
    #[prost(int32, required, tag = "1")]
    pub pid: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Notify {
    #[prost(string, optional, tag = "1")]
    pub script: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Features {
    #[prost(bool, optional, tag = "1")]
    pub mem_track: Option<bool>,
    #[prost(bool, optional, tag = "2")]
    pub lazy_pages: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Version {
    #[prost(int32, required, tag = "1")]
    pub major_number: i32,
    #[prost(int32, required, tag = "2")]
    pub minor_number: i32,
    #[prost(string, optional, tag = "6")]
    pub name: Option<String>,
}

impl CriuResp {
    fn ok(r#type: i32) -> Self {
        Self {
            r#type,
            success: true,
            ..Default::default()
        }
    }

    fn failed(r#type: i32, msg: &str) -> Self {
        Self {
            r#type,
            success: false,
            cr_errno: Some(libc::EINVAL),
            cr_errmsg: Some(msg.to_string()),
            ..Default::default()
        }
    }
}

fn read_req(sock: &OwnedFd) -> Result<Option<CriuReq>, Error> {
    let mut buf = vec![0u8; MAX_MSG];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(Error::Socket)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(<CriuReq as prost::Message>::decode(&buf[..n])?))
}

fn write_resp(sock: &OwnedFd, resp: &CriuResp) -> Result<(), Error> {
    let bytes = prost::Message::encode_to_vec(resp);
    send(sock.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(Error::Socket)?;
    Ok(())
}

/// Serves the runtime on `sock` (the descriptor named on `criu swrk FD`)
/// until it closes the connection or a restore is done.
pub fn serve(sock: OwnedFd) -> Result<(), Error> {
    while let Some(req) = read_req(&sock)? {
        match req.r#type {
            req_type::VERSION => {
                let mut resp = CriuResp::ok(req_type::VERSION);
                resp.version = Some(Version {
                    major_number: VERSION.0,
                    minor_number: VERSION.1,
                    name: Some("migrate".into()),
                });
                write_resp(&sock, &resp)?;
            }
            req_type::FEATURE_CHECK => {
                let mut resp = CriuResp::ok(req_type::FEATURE_CHECK);
                resp.features = Some(Features {
                    mem_track: Some(false),
                    lazy_pages: Some(false),
                });
                write_resp(&sock, &resp)?;
            }
            req_type::RESTORE => return restore(&sock, &req),
            other => {
                let msg = format!(
                    "migrate stands in for CRIU only to hand a restored container back to its runtime; request type {other} is not served (checkpoint with `migrate checkpoint --runtime`)"
                );
                log_to_runtime(&sock, &req, &msg);
                write_resp(&sock, &CriuResp::failed(other, &msg))?;
                return Err(Error::Refused(msg));
            }
        }
    }
    Ok(())
}

/// The RESTORE request: migrate moves its running tree into our cgroups
/// (which the runtime set up before sending the request) and tells us the
/// init's PID; we tell the runtime.
fn restore(sock: &OwnedFd, req: &CriuReq) -> Result<(), Error> {
    let fail = |msg: String| -> Result<(), Error> {
        log_to_runtime(sock, req, &msg);
        write_resp(sock, &CriuResp::failed(req_type::RESTORE, &msg))?;
        Err(Error::Refused(msg))
    };
    let Some(path) = std::env::var_os(HANDOFF_ENV) else {
        return fail(
            "nothing to restore: with migrate as its CRIU, the runtime's restore only takes back a container that `migrate restore` hands it"
                .into(),
        );
    };
    // "@NAME": an abstract socket.
    let name = path.to_string_lossy();
    let conn = match name.strip_prefix('@') {
        Some(n) => {
            std::os::unix::net::SocketAddr::from_abstract_name(n.as_bytes()).and_then(|a| UnixStream::connect_addr(&a))
        }
        None => UnixStream::connect(&path),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => return fail(format!("migrate's hand-over socket {}: {e}", path.to_string_lossy())),
    };
    let mut writer = conn.try_clone().map_err(Error::Handoff)?;
    let mut lines = BufReader::new(conn);
    let ask = super::oci::RestoreAsk {
        pid: std::process::id() as i32,
        cg_root: req
            .opts
            .iter()
            .flat_map(|o| &o.cg_root)
            .map(|r| super::oci::CgRoot {
                ctrl: r.ctrl.clone().unwrap_or_default(),
                path: r.path.clone(),
            })
            .collect(),
    };
    let ask = serde_json::to_string(&ask).map_err(|e| Error::Refused(e.to_string()))?;
    writeln!(writer, "restore {ask}").map_err(Error::Handoff)?;
    let mut line = String::new();
    lines.read_line(&mut line).map_err(Error::Handoff)?;
    let pid = match line.trim_end().split_once(' ') {
        Some(("pid", n)) => match n.parse::<i32>() {
            Ok(pid) if pid > 0 => pid,
            _ => return fail(format!("migrate sent a bad PID {n:?}")),
        },
        Some(("fail", why)) => return fail(why.to_string()),
        _ => return fail(format!("migrate answered {:?}", line.trim_end())),
    };
    let mut notify = CriuResp::ok(req_type::NOTIFY);
    notify.notify = Some(Notify {
        script: Some("post-restore".into()),
        pid: Some(pid),
    });
    write_resp(sock, &notify)?;
    match read_req(sock)? {
        Some(ack) if ack.r#type == req_type::NOTIFY && ack.notify_success == Some(true) => {}
        _ => {
            let _ = writeln!(writer, "fail the runtime did not accept the restored process");
            return fail("the runtime did not accept the restored process".into());
        }
    }
    let mut done = CriuResp::ok(req_type::RESTORE);
    done.restore = Some(RestoreResp { pid });
    write_resp(sock, &done)?;
    writeln!(writer, "ok").map_err(Error::Handoff)?;
    Ok(())
}

/// Appends `msg` to the log file the runtime named in its work directory
/// (it points its users there when CRIU fails). Best effort.
fn log_to_runtime(sock: &OwnedFd, req: &CriuReq, msg: &str) {
    let Some(opts) = &req.opts else { return };
    let (Some(dir_fd), Some(file)) = (opts.work_dir_fd, opts.log_file.as_deref()) else {
        return;
    };
    if file.contains('/') {
        return;
    }
    let Ok(peer) = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials) else {
        return;
    };
    let path = format!("/proc/{}/fd/{dir_fd}/{file}", peer.pid());
    if let Ok(mut f) = std::fs::File::options().create(true).append(true).open(path) {
        let _ = writeln!(f, "migrate: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn version_answer_is_what_runc_reads() {
        let mut resp = CriuResp::ok(req_type::VERSION);
        resp.version = Some(Version {
            major_number: 3,
            minor_number: 17,
            name: None,
        });
        let bytes = resp.encode_to_vec();
        // type=10 (field 1 varint), success=1 (field 2), version (field 10,
        // length-delimited: major 3, minor 17).
        assert_eq!(bytes, [0x08, 10, 0x10, 1, 0x52, 4, 0x08, 3, 0x10, 17]);
        assert_eq!(CriuResp::decode(&bytes[..]).unwrap(), resp);
    }

    #[test]
    fn requests_decode_skipping_unknown_fields() {
        // type=RESTORE, opts{images_dir_fd=7, rst_sibling(26)=true,
        // log_file="restore.log", work_dir_fd=8}, then an unknown field 40.
        let mut opts = vec![0x08, 7, 0xd0, 0x01, 1, 0x52, 11];
        opts.extend_from_slice(b"restore.log");
        opts.extend_from_slice(&[0x88, 0x01, 8]);
        let mut bytes = vec![0x08, 2, 0x12, opts.len() as u8];
        bytes.extend_from_slice(&opts);
        bytes.extend_from_slice(&[0xc0, 0x02, 1]);
        let req = CriuReq::decode(&bytes[..]).unwrap();
        assert_eq!(req.r#type, req_type::RESTORE);
        let o = req.opts.unwrap();
        assert_eq!(o.images_dir_fd, 7);
        assert_eq!(o.work_dir_fd, Some(8));
        assert_eq!(o.log_file.as_deref(), Some("restore.log"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(CriuReq::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }
}
