//! SysV IPC in the calling thread's IPC namespace: message queues,
//! semaphore sets and shared memory segments (neither nix nor rustix
//! covers them).

use super::Errno;

/// `msgrcv` flag: copy message number N of the queue, leaving it queued
/// (kernels with CONFIG_CHECKPOINT_RESTORE).
const MSG_COPY: i32 = 0o40000;
/// `shmat` flag: attach read-only.
pub const SHM_RDONLY: i32 = 0o10000;

fn check(ret: libc::c_int) -> Result<i32, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Who owns an object, and its mode, as IPC_SET sets them.
#[derive(Debug, Clone, Copy)]
pub struct Perm {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// msgget(2).
pub fn msg_get(key: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::msgget(key, flags) })
}

/// The queue's capacity in bytes (`msg_qbytes` of IPC_STAT).
pub fn msg_qbytes(id: i32) -> Result<u64, Errno> {
    // SAFETY: msqid_ds is plain data; IPC_STAT fills it.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid msqid_ds the kernel writes into.
    check(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) })?;
    Ok(ds.msg_qbytes)
}

/// Sets the queue's owner, mode and capacity (IPC_SET).
pub fn msg_set(id: i32, perm: Perm, qbytes: u64) -> Result<(), Errno> {
    // SAFETY: msqid_ds is plain data; IPC_STAT fills it.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid msqid_ds the kernel reads and writes.
    check(unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) })?;
    ds.msg_perm.uid = perm.uid;
    ds.msg_perm.gid = perm.gid;
    ds.msg_perm.mode = perm.mode as _;
    ds.msg_qbytes = qbytes;
    // SAFETY: as above.
    check(unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) })?;
    Ok(())
}

/// Message number `n` of queue `id` (its type and text, at most `max`
/// bytes), left in the queue.
pub fn msg_copy(id: i32, n: usize, max: usize) -> Result<(i64, Vec<u8>), Errno> {
    let mut buf = vec![0u8; 8 + max];
    // SAFETY: `buf` holds a long (the type) and `max` bytes of text, as
    // msgrcv writes; with MSG_COPY, `n` is the message's index.
    let got = unsafe {
        libc::msgrcv(
            id,
            buf.as_mut_ptr().cast(),
            max,
            n as libc::c_long,
            MSG_COPY | libc::IPC_NOWAIT | libc::MSG_NOERROR,
        )
    };
    if got < 0 {
        return Err(Errno::last());
    }
    let kind = i64::from_ne_bytes(buf[..8].try_into().expect("eight bytes"));
    buf.truncate(8 + got as usize);
    Ok((kind, buf.split_off(8)))
}

/// Queues a message without waiting.
pub fn msg_send(id: i32, kind: i64, text: &[u8]) -> Result<(), Errno> {
    let mut buf = kind.to_ne_bytes().to_vec();
    buf.extend_from_slice(text);
    // SAFETY: `buf` is a long type followed by `text.len()` bytes.
    check(unsafe { libc::msgsnd(id, buf.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) })?;
    Ok(())
}

/// semget(2).
pub fn sem_get(key: i32, nsems: i32, flags: i32) -> Result<i32, Errno> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::semget(key, nsems, flags) })
}

/// Every semaphore's value (GETALL).
pub fn sem_values(id: i32, nsems: usize) -> Result<Vec<u16>, Errno> {
    let mut values = vec![0u16; nsems];
    // SAFETY: GETALL writes `nsems` unsigned shorts to the array passed as
    // the union semun's pointer.
    check(unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) })?;
    Ok(values)
}

/// Sets every semaphore's value (SETALL).
pub fn sem_set_values(id: i32, values: &[u16]) -> Result<(), Errno> {
    // SAFETY: SETALL reads as many unsigned shorts as the set holds, which
    // the caller made with `values.len()` semaphores.
    check(unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) })?;
    Ok(())
}

/// Sets the set's owner and mode (IPC_SET).
pub fn sem_set(id: i32, perm: Perm) -> Result<(), Errno> {
    // SAFETY: semid_ds is plain data; IPC_STAT fills it.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT and IPC_SET read and write the semid_ds passed as
    // the union semun's pointer.
    check(unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) })?;
    ds.sem_perm.uid = perm.uid;
    ds.sem_perm.gid = perm.gid;
    ds.sem_perm.mode = perm.mode as _;
    // SAFETY: as above.
    check(unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) })?;
    Ok(())
}

/// shmget(2).
pub fn shm_get(key: i32, size: u64, flags: i32) -> Result<i32, Errno> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::shmget(key, size as usize, flags) })
}

/// shmctl(2) with a command that takes no buffer (IPC_RMID, SHM_LOCK).
pub fn shm_ctl(id: i32, cmd: i32) -> Result<(), Errno> {
    // SAFETY: these commands ignore the buffer.
    check(unsafe { libc::shmctl(id, cmd, std::ptr::null_mut()) })?;
    Ok(())
}

/// Sets the segment's owner and mode (IPC_SET).
pub fn shm_set(id: i32, perm: Perm) -> Result<(), Errno> {
    // SAFETY: shmid_ds is plain data; IPC_STAT fills it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid shmid_ds the kernel reads and writes.
    check(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) })?;
    ds.shm_perm.uid = perm.uid;
    ds.shm_perm.gid = perm.gid;
    ds.shm_perm.mode = perm.mode as _;
    // SAFETY: as above.
    check(unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) })?;
    Ok(())
}

/// A segment attached to this process, detached when dropped.
pub struct Attached {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is process-wide; nothing in it is tied to a thread.
unsafe impl Send for Attached {}

impl Attached {
    /// Attaches segment `id` (of `len` bytes) anywhere, read-only or not.
    pub fn new(id: i32, len: u64, read_only: bool) -> Result<Attached, Errno> {
        let flags = if read_only { SHM_RDONLY } else { 0 };
        // SAFETY: the kernel picks a free range; nothing of ours is there.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if addr as isize == -1 {
            return Err(Errno::last());
        }
        Ok(Attached {
            addr,
            len: len as usize,
        })
    }

    /// Its address, for /proc/self/map_files.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Which of its pages are in memory (mincore): reading a page that is
    /// not would allocate it.
    pub fn resident(&self) -> Result<Vec<bool>, Errno> {
        let mut vec = vec![0u8; self.len.div_ceil(4096)];
        // SAFETY: `vec` has one byte per page of the attached range.
        check(unsafe { libc::mincore(self.addr, self.len, vec.as_mut_ptr()) })?;
        Ok(vec.iter().map(|b| b & 1 != 0).collect())
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the segment is mapped at `addr` for at least `len` bytes
        // while `self` lives. Other processes may write it meanwhile; the
        // callers read it while every writer is stopped.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }

    /// Its bytes, to fill it (attached writable).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: `addr` is where shmat attached the segment; no slice of
        // it outlives `self`.
        unsafe {
            libc::shmdt(self.addr);
        }
    }
}
