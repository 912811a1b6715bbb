//! The container's UTS namespace: its host name and NIS domain name as the
//! container left them (it may set them itself), not only as it was
//! started with.
//!
//! Section `uts`. Dumped by a short-lived thread that enters the
//! namespace (setns works per thread for UTS) and reads
//! /proc/sys/kernel/{hostname,domainname}, which show the reader's own
//! namespace; restored by the container's PID 1 once its namespace
//! exists. An image without it (format 3) keeps the host name the
//! container was started with.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid}: read its UTS namespace: {source}")]
    Read {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtsImage {
    pub hostname: String,
    pub domainname: String,
}

/// The section `uts` (from image format 4).
pub struct Section;

impl super::Kind for Section {
    const SECTION: &'static str = "uts";
    const VERSION: u32 = 4;
    const SINCE_FORMAT: u32 = 4;
    type State = UtsImage;
    type Error = Error;
}

/// The names in the UTS namespace of process `pid`.
pub fn dump(pid: i32) -> Result<UtsImage> {
    super::in_namespace(pid, "uts", nix::sched::CloneFlags::CLONE_NEWUTS, || {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/sys/kernel/{f}")).map(|s| s.trim_end().to_string());
        Ok(UtsImage {
            hostname: read("hostname")?,
            domainname: read("domainname")?,
        })
    })
    .map_err(|source| Error::Read { pid, source })
}

/// Sets the names in the calling process's (new) UTS namespace.
pub fn restore(img: &UtsImage) -> std::result::Result<(), String> {
    nix::unistd::sethostname(&img.hostname).map_err(|e| format!("set the host name: {e}"))?;
    crate::sys::set_domainname(&img.domainname).map_err(|e| format!("set the domain name: {e}"))
}
