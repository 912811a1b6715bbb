//! migrate: container checkpoint/restore and live migration.
//!
//! One library with a thin binary. `cli` holds the clap structs, `cmd`
//! carries out each subcommand and renders what the library reports; the
//! rest never prints. All `unsafe` code lives in `sys`.

#![deny(unsafe_code)]

pub mod cgroup;
pub mod cli;
pub mod cmd;
pub mod engine;
pub mod error;
pub mod fault;
pub mod image;
pub mod kinds;
pub mod net;
pub mod runtime;
#[allow(unsafe_code)]
pub mod sys;
pub mod transport;

pub use error::{Error, Result};
