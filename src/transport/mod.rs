//! The transport side of live migration, apart from the engine: this
//! root's identity, pinned mutual TLS, the wire protocol, the QUIC sink
//! (source side), and the receiver with its restore helper (destination
//! side).

pub mod helper;
pub mod identity;
pub mod recv;
pub mod send;
pub mod tls;
pub mod wire;

/// Errors of the transport: connecting, the handshake, the peer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("protocol: {0}")]
    Wire(#[from] wire::Error),
    #[error("connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the receiver refused the migration: {reason}")]
    Refused { reason: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{phase}: {reason}")]
    Lost { phase: &'static str, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{source} ({name} is still running here)")]
    Unmoved { name: String, source: Box<Error> },
    #[error(transparent)]
    Engine(#[from] crate::engine::Error),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
}
