//! Each kind of state a container holds, with its dump and restore sides
//! next to each other.

pub mod anonfd;
pub mod creds;
pub mod fdattrs;
pub mod files;
pub mod inet;
pub mod memory;
pub mod mounts;
pub mod pidfd;
pub mod pipes;
pub mod precopy;
pub mod procattrs;
pub mod pstree;
pub mod regfile;
pub mod regs;
pub mod remote;
pub mod signals;
pub mod sockdiag;
pub mod tcp;
pub mod timens;
pub mod timers;
pub mod unix;
pub mod uts;
