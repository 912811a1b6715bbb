//! The transport side of live migration, apart from the engine: this
//! root's identity for mutual TLS (and, next, the QUIC image sink and
//! source).

pub mod identity;
