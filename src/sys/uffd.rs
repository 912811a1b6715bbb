//! userfaultfd write-protect tracking and the PAGEMAP_SCAN ioctl: dirty
//! page tracking without soft-dirty bits. The userfaultfd is created in the
//! tracked process (by injection) and taken with pidfd_getfd; its ioctls
//! act on that process's address space.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::Errno;

const UFFD_API: u64 = 0xAA;
/// Write faults on write-protected pages are resolved by the kernel, which
/// only clears the protection: the "written" bit PAGEMAP_SCAN reports.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// UFFDIO_API handshake asking for `features`; returns what the kernel has.
pub fn api(uffd: BorrowedFd<'_>, features: u64) -> Result<u64, Errno> {
    let mut arg = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes exactly one uffdio_api, which
    // `arg` is, for the length of the call.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut arg as *mut UffdioApi) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(arg.features)
}

/// Registers `start..start+len` of the uffd's address space for
/// write-protect tracking.
pub fn register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> Result<(), Errno> {
    let mut arg = UffdioRegister {
        start,
        len,
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register, `arg`.
    let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut arg as *mut UffdioRegister) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The written pages of `start..end` in the process whose pagemap is
/// `pagemap`, as address ranges. With `reprotect`, the pages found are
/// write-protected again in the same walk (only in ranges registered for
/// async write-protect; others are skipped). Without it, every page of an
/// untracked range that is present counts as written.
pub fn scan_written(pagemap: BorrowedFd<'_>, start: u64, end: u64, reprotect: bool) -> Result<Vec<(u64, u64)>, Errno> {
    let mut out = Vec::new();
    let mut regions = vec![PageRegion::default(); 512];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: if reprotect { PM_SCAN_WP_MATCHING } else { 0 },
            start: at,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: PAGE_IS_WRITTEN,
            category_anyof_mask: 0,
            return_mask: PAGE_IS_WRITTEN,
        };
        // SAFETY: PAGEMAP_SCAN reads one pm_scan_arg (`arg`) and writes at
        // most `vec_len` page_region entries to `vec`, which points at
        // `regions`, alive and that long for the whole call.
        let r = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
        if r < 0 {
            return Err(Errno::last());
        }
        let n = r as usize;
        out.extend(regions[..n].iter().map(|p| (p.start, p.end)));
        if arg.walk_end <= at || arg.walk_end >= end {
            break;
        }
        at = arg.walk_end;
    }
    Ok(out)
}
