//! migrate: container checkpoint/restore and live migration.
//!
//! One library with a thin binary. `cli` holds the clap structs, `cmd`
//! carries out each subcommand and renders what the library reports; the
//! rest never prints. All `unsafe` code lives in `sys`, but for the calls of
//! its `unsafe fn`s whose contract only the caller can keep (the fd table
//! of a restored task), each with its `// SAFETY:` reason.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroup;
pub mod cli;
pub mod cmd;
pub mod engine;
pub mod error;
pub mod fault;
pub mod image;
pub mod kinds;
pub mod net;
pub mod proc;
pub mod runtime;
#[allow(unsafe_code)]
pub mod sys;
pub mod transport;

pub use error::{Error, Result};
