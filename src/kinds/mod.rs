//! Each kind of state a container holds, with its dump and restore sides
//! next to each other, and its [`Kind`]: the section it is carried in.

pub mod anonfd;
pub mod cow;
pub mod creds;
pub mod fdattrs;
pub mod files;
pub mod inet;
pub mod ipcns;
pub mod memory;
pub mod mounts;
pub mod multicast;
pub mod pidfd;
pub mod pipes;
pub mod policies;
pub mod prctls;
pub mod precopy;
pub mod procattrs;
pub mod pstree;
pub mod regfile;
pub mod regs;
pub mod remote;
pub mod signals;
pub mod sockdiag;
pub mod sockopts;
pub mod tcp;
pub mod timens;
pub mod timers;
pub mod unix;
pub mod uts;

use serde::{de::DeserializeOwned, Serialize};

/// The contract of a kind of state with its own section in an image (as
/// CRIU's per-kind ops tables and Firecracker's `Persist`): the section's
/// name, the layout version this build writes, the state type, how an
/// older layout is read, and the check of decoded state that runs before a
/// restore creates anything. The kind's dump and restore sit next to its
/// `impl` in the kind's file. `engine::SECTIONS` lists every kind once.
pub trait Kind {
    /// The section's name in the image (a file name in an image directory).
    const SECTION: &'static str;
    /// The layout this build writes.
    const VERSION: u32;
    /// The oldest image format holding the section; an image of an older
    /// format restores without it.
    const SINCE_FORMAT: u32 = crate::image::OLDEST_FORMAT_VERSION;
    /// What the section holds.
    type State: Serialize + DeserializeOwned;
    /// What [`Kind::validate`] refuses with.
    type Error: std::error::Error;

    /// Reads the section, framed at [`Kind::VERSION`] or at an older
    /// version with the same layout (down to the oldest image format).
    /// A kind whose layout moved on reads its older layouts here.
    fn decode(bytes: &[u8]) -> crate::image::Result<Self::State> {
        crate::image::decode_versioned(Self::SECTION, bytes, Self::VERSION, |same: Self::State| same)
    }

    /// Frames the section at [`Kind::VERSION`].
    fn encode(state: &Self::State) -> Vec<u8> {
        crate::image::encode_section_at(Self::VERSION, state)
    }

    /// Refuses decoded state that a restore could not use (the checksums
    /// only say the bytes are as they were written).
    fn validate(_state: &Self::State) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Runs `read` on a short-lived thread that has entered the namespace
/// `ns` ("ipc", "uts": kinds that setns per thread) of process `pid`, and
/// returns what it read. What a thread reads from /proc/sys or a syscall
/// there is that namespace's; the calling thread stays where it is.
pub(crate) fn in_namespace<T: Send>(
    pid: i32,
    ns: &str,
    kind: nix::sched::CloneFlags,
    read: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let file = std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, kind)?;
            read()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(format!(
                "the {ns} namespace's reader thread failed"
            )))
        })
    })
}
