//! `inspect`: what an image holds, decoded but not restored.

use std::path::Path;

use serde::Serialize;

use super::{get, Container, Result};
use crate::image::store::{DirSource, ImageSource};
use crate::image::{FileEntry, MachineFacts};
use crate::kinds::memory::Backing;

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub container: String,
    pub created: u64,
    pub machine: MachineFacts,
    pub hostname: String,
    pub command: Vec<String>,
    pub files: Vec<FileEntry>,
    pub processes: Vec<ProcessSummary>,
    /// The OCI runtime it was taken from.
    pub oci: Option<crate::runtime::oci::OciOrigin>,
    pub tmpfs: Vec<TmpfsSummary>,
}

#[derive(Debug, Serialize)]
pub struct TmpfsSummary {
    pub target: String,
    pub options: String,
    pub entries: usize,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ProcessSummary {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub host_pid: i32,
    pub comm: String,
    pub zombie: Option<i32>,
    pub threads: Vec<i32>,
    pub mappings: Vec<MappingSummary>,
}

#[derive(Debug, Serialize)]
pub struct MappingSummary {
    pub start: u64,
    pub end: u64,
    pub prot: String,
    pub shared: bool,
    pub backing: String,
    pub stored_pages: u64,
}

fn prot_str(p: u32) -> String {
    let f = |bit: i32, c: char| if p & bit as u32 != 0 { c } else { '-' };
    [
        f(libc::PROT_READ, 'r'),
        f(libc::PROT_WRITE, 'w'),
        f(libc::PROT_EXEC, 'x'),
    ]
    .iter()
    .collect()
}

/// Opens (and checks) the image in `dir` and summarises it.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    let mut src = DirSource::open(dir)?;
    let container = get::<Container>(&mut src)?;
    let procs = get::<crate::kinds::pstree::Section>(&mut src)?;
    let mm = get::<crate::kinds::memory::Section>(&mut src)?;
    let mounts = get::<crate::kinds::mounts::Section>(&mut src)?;
    let tmpfs = mounts
        .iter()
        .map(|t| TmpfsSummary {
            target: t.target.clone(),
            options: t.data.clone(),
            entries: t.entries.len(),
            bytes: t
                .entries
                .iter()
                .map(|e| match &e.kind {
                    crate::kinds::mounts::EntryKind::File(b) => b.len() as u64,
                    _ => 0,
                })
                .sum(),
        })
        .collect();
    let m = src.manifest().clone();
    let processes = procs
        .iter()
        .map(|p| ProcessSummary {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            sid: p.sid,
            host_pid: p.host_pid,
            comm: p.comm.clone(),
            zombie: p.zombie,
            threads: p.threads.iter().map(|t| t.tid).collect(),
            mappings: mm
                .iter()
                .find(|(pid, _)| *pid == p.pid)
                .map(|(_, img)| {
                    img.vmas
                        .iter()
                        .map(|v| MappingSummary {
                            start: v.start,
                            end: v.end,
                            prot: prot_str(v.prot),
                            shared: v.shared,
                            backing: match &v.backing {
                                Backing::Anon => "anon".into(),
                                Backing::File { path } => path.clone(),
                                Backing::Shmem { id } => format!("shmem:{id:x}"),
                                Backing::SysvShm { id } => format!("SysV segment {id}"),
                                Backing::Special { name } => name.clone(),
                                Backing::Ghost { id } => format!("deleted file:{id:x}"),
                            },
                            stored_pages: v.stored_pages(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    Ok(Inspection {
        container: m.container,
        created: m.created,
        machine: m.machine,
        hostname: container.hostname,
        command: container.command,
        files: m.files,
        processes,
        oci: container.oci,
        tmpfs,
    })
}
