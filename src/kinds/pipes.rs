//! Pipes and FIFOs: both ends, in any processes, with the bytes buffered in
//! them. Dump takes a duplicate of a read end (pidfd_getfd) and copies the
//! buffer with tee(2), which does not consume it. Restore makes a pipe of
//! the same capacity and writes the bytes back.

use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::sys::Errno;

/// One pipe (both ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeImage {
    /// The pipe's inode at checkpoint time.
    pub ino: u64,
    pub capacity: u32,
    pub data: Vec<u8>,
}

/// Reads the buffered bytes of the pipe whose read end is `read_end` (a
/// descriptor of ours, duplicated from the container).
pub fn dump(ino: u64, read_end: Option<&OwnedFd>) -> Result<PipeImage, Errno> {
    let Some(r) = read_end else {
        // No reader anywhere: nothing can ever read the buffer.
        return Ok(PipeImage {
            ino,
            capacity: 65536,
            data: Vec::new(),
        });
    };
    let capacity = nix::fcntl::fcntl(r, nix::fcntl::FcntlArg::F_GETPIPE_SZ)? as u32;
    let (tr, tw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    // Our pipe must hold what theirs holds (up to 1 MiB without
    // CAP_SYS_RESOURCE, which is also the most theirs can hold here).
    let _ = nix::fcntl::fcntl(&tw, nix::fcntl::FcntlArg::F_SETPIPE_SZ(capacity as i32));
    let n = crate::sys::tee(r.as_fd(), tw.as_fd(), capacity as usize)?;
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match nix::unistd::read(&tr, &mut data[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    data.truncate(got);
    Ok(PipeImage { ino, capacity, data })
}

/// Gives the pipe or FIFO open at `fd` the buffer size `capacity`, where a
/// new one's differs: grown or shrunk (F_SETPIPE_SZ), or made small by the
/// user's pipe limits, as it was (before, only a grown one was).
pub fn resize(fd: &impl AsFd, capacity: u32) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg};
    if fcntl(fd, FcntlArg::F_GETPIPE_SZ)? != capacity as i32 {
        fcntl(fd, FcntlArg::F_SETPIPE_SZ(capacity as i32))?;
    }
    Ok(())
}

/// Makes the pipe again, with its bytes; returns (read end, write end).
pub fn restore(p: &PipeImage) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    resize(&w, p.capacity)?;
    let mut off = 0;
    while off < p.data.len() {
        off += nix::unistd::write(&w, &p.data[off..])?;
    }
    Ok((r, w))
}
