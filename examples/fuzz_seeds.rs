//! Writes the seed corpora of the fuzz targets (fuzz/fuzz_targets) from
//! real values, encoded as migrate encodes them:
//!
//!     cargo run --example fuzz_seeds -- fuzz/corpus
//!
//! Each target's input layout (a leading mode byte) is described in the
//! target itself.

use std::path::{Path, PathBuf};

use anyhow::Result;
use migrate::engine::{Container, ContainerImage};
use migrate::image::pages::{Compression, PageWriter};
use migrate::image::precopy::{PrecopyBatch, RunSrc};
use migrate::image::{encode_section, FileEntry, MachineFacts, Manifest};
use migrate::kinds::files::{FdImage, FdKind, FilesImage};
use migrate::kinds::memory::{Backing, MemoryImage, MmFields, PageRun, Vma};
use migrate::kinds::mounts::{Entry, EntryKind, TmpfsImage};
use migrate::kinds::pstree::{ProcessImage, Rlimit};
use migrate::kinds::regs::ThreadImage;
use migrate::kinds::signals::{SigAction, SignalsImage};
use migrate::kinds::timens::Clocks;
use migrate::kinds::Kind;
use migrate::runtime::swrk::{CgroupRoot, CriuOpts, CriuReq, CriuResp, RestoreResp, Version};
use migrate::transport::wire::{self, Facts, Msg};
use prost::Message;

fn write(dir: &Path, target: &str, name: &str, mode: u8, bytes: &[u8]) -> Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    std::fs::write(d.join(name), out)?;
    Ok(())
}

fn manifest() -> Manifest {
    Manifest {
        machine: MachineFacts {
            kernel: "6.18".into(),
            arch: "x86_64".into(),
            xstate_size: 2696,
        },
        created: 1_760_000_000,
        container: "web".into(),
        files: vec![FileEntry {
            name: "pstree".into(),
            len: 120,
            crc32: 0xdead_beef,
        }],
    }
}

fn container() -> ContainerImage {
    ContainerImage {
        name: "web".into(),
        hostname: "web".into(),
        rootfs: Some(PathBuf::from("/var/lib/migrate/web/rootfs")),
        init: true,
        command: vec!["/bin/sh".into(), "-c".into(), "sleep 1000".into()],
        limits: Default::default(),
        created: 1_760_000_000,
        clocks: Clocks {
            monotonic_ns: 5_000_000_000,
            boottime_ns: 6_000_000_000,
        },
        net: None,
        sysctls: vec![("net.ipv4.ip_forward".into(), "0".into())],
        oci: None,
    }
}

fn pstree() -> Vec<ProcessImage> {
    let thread = ThreadImage {
        tid: 1,
        regs: vec![0x1000; 27],
        xstate: vec![0; 64],
        sigmask: 0,
        rseq: None,
        robust_head: 0,
        robust_len: 24,
        clear_tid: 0,
        comm: "sh".into(),
    };
    let init = ProcessImage {
        pid: 1,
        ppid: 0,
        pgid: 1,
        sid: 1,
        host_pid: 4242,
        comm: "sh".into(),
        zombie: None,
        threads: vec![thread.clone()],
        cwd: "/".into(),
        umask: 0o22,
        rlimits: vec![Rlimit {
            resource: 7,
            soft: 1024,
            hard: 4096,
        }],
        creds: None,
        timers: None,
    };
    let zombie = ProcessImage {
        pid: 2,
        ppid: 1,
        zombie: Some(0),
        threads: vec![],
        ..init.clone()
    };
    vec![init, zombie]
}

fn mm() -> Vec<(i32, MemoryImage)> {
    let run = |addr, pages, zero| PageRun {
        addr,
        pages,
        zero,
        from: None,
        precopied: false,
    };
    let vmas = vec![
        Vma {
            start: 0x40_0000,
            end: 0x40_4000,
            prot: 5,
            shared: false,
            offset: 0,
            backing: Backing::File { path: "/bin/sh".into() },
            flags: vec![],
            runs: vec![run(0x40_1000, 1, true)],
        },
        Vma {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0001_0000,
            prot: 3,
            shared: false,
            offset: 0,
            backing: Backing::Anon,
            flags: vec!["gd".into()],
            runs: vec![
                run(0x7f00_0000_0000, 2, false),
                PageRun {
                    from: Some((1, 0x7f00_0000_0000)),
                    ..run(0x7f00_0000_4000, 1, false)
                },
            ],
        },
        Vma {
            start: 0x7f10_0000_0000,
            end: 0x7f10_0000_2000,
            prot: 3,
            shared: true,
            offset: 0x1000,
            backing: Backing::Shmem { id: 9 },
            flags: vec![],
            runs: vec![run(0x1000, 2, false)],
        },
        Vma {
            start: 0x7ffd_0000_0000,
            end: 0x7ffd_0000_2000,
            prot: 5,
            shared: false,
            offset: 0,
            backing: Backing::Special { name: "[vdso]".into() },
            flags: vec![],
            runs: vec![],
        },
    ];
    let mm = MmFields {
        start_code: 0x40_0000,
        end_code: 0x40_4000,
        auxv: vec![6, 4096, 0, 0],
        exe: "/bin/sh".into(),
        ..Default::default()
    };
    vec![(
        1,
        MemoryImage {
            vmas,
            mm,
            guards: vec![(0x1000, 1)],
        },
    )]
}

fn signals() -> Vec<(i32, SignalsImage)> {
    let mut info = vec![0u8; 128];
    info[0] = 10;
    vec![(
        1,
        SignalsImage {
            actions: vec![SigAction {
                signo: 10,
                handler: 0x40_1000,
                flags: 0x0400_0000,
                restorer: 0x40_2000,
                mask: 0,
            }],
            shared: vec![info.clone()],
            threads: vec![(1, vec![info])],
            altstacks: vec![(1, [0x7f00_0000_8000, 0, 8192])],
        },
    )]
}

fn files() -> FilesImage {
    FilesImage {
        procs: vec![(
            1,
            vec![
                FdImage {
                    fd: 0,
                    flags: 0,
                    kind: FdKind::Log,
                },
                FdImage {
                    fd: 3,
                    flags: 0o2000000,
                    kind: FdKind::Pipe { pipe: 0, write: true },
                },
            ],
        )],
        ..Default::default()
    }
}

fn mounts() -> Vec<TmpfsImage> {
    vec![TmpfsImage {
        target: "/tmp".into(),
        source: "tmpfs".into(),
        flags: 6,
        data: "size=65536k,mode=1777".into(),
        entries: vec![
            Entry {
                path: "".into(),
                kind: EntryKind::Dir,
                mode: 0o1777,
                uid: 0,
                gid: 0,
                mtime: (1_760_000_000, 0),
            },
            Entry {
                path: "a".into(),
                kind: EntryKind::File(b"hello".to_vec()),
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: (1_760_000_000, 5),
            },
        ],
    }]
}

fn sections(dir: &Path) -> Result<()> {
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("manifest", postcard::to_stdvec(&manifest())?),
        ("container", postcard::to_stdvec(&container())?),
        ("pstree", postcard::to_stdvec(&pstree())?),
        ("mm", postcard::to_stdvec(&mm())?),
        ("signals", postcard::to_stdvec(&signals())?),
        ("files", postcard::to_stdvec(&files())?),
        ("mounts", postcard::to_stdvec(&mounts())?),
    ];
    let framed = [
        encode_section(&manifest()),
        Container::encode(&container()),
        migrate::kinds::pstree::Section::encode(&pstree()),
        migrate::kinds::memory::Section::encode(&mm()),
        migrate::kinds::signals::Section::encode(&signals()),
        migrate::kinds::files::Section::encode(&files()),
        migrate::kinds::mounts::Section::encode(&mounts()),
    ];
    for (i, ((name, payload), framed)) in payloads.iter().zip(&framed).enumerate() {
        write(dir, "section", &format!("{name}-framed"), i as u8, framed)?;
        write(dir, "section", &format!("{name}-payload"), i as u8 | 0x80, payload)?;
    }
    Ok(())
}

fn pages(dir: &Path) -> Result<()> {
    let data: Vec<u8> = (0..3 * 4096).map(|i: usize| ((i * 7919) >> 9) as u8).collect();
    for (name, c) in [("raw", Compression::None), ("zstd", Compression::Zstd(1))] {
        let mut w = PageWriter::new(Vec::new(), c)?;
        w.write(&data)?;
        let (bytes, _) = w.finish()?;
        write(dir, "pages", name, 0, &bytes)?;
        write(dir, "pages", &format!("{name}-repair"), 3, &bytes[12..])?;
    }
    Ok(())
}

fn precopy(dir: &Path) -> Result<()> {
    let page = |b: u8| vec![b; 4096];
    let first = PrecopyBatch::seal(
        1,
        7,
        vec![(0x1000, 2, RunSrc::Data), (0x3000, 1, RunSrc::Zero)],
        &[page(1), page(2)].concat(),
        Some(1),
    );
    let shared = PrecopyBatch::seal(
        1,
        8,
        vec![(0x1000, 2, RunSrc::Same { pid: 7, addr: 0x1000 })],
        &[],
        None,
    );
    let later = PrecopyBatch::seal(2, 7, vec![(0x2000, 1, RunSrc::Data)], &page(3), None);
    let mut seq = Vec::new();
    for b in [&first, &shared, &later] {
        seq.extend(postcard::to_stdvec(b)?);
    }
    write(dir, "precopy", "rounds", 0, &seq)?;
    write(dir, "precopy", "one", 1, &postcard::to_stdvec(&later)?)?;
    Ok(())
}

fn wire(dir: &Path) -> Result<()> {
    let facts = Facts {
        kernel: "6.18".into(),
        arch: "x86_64".into(),
        cpu_flags: vec!["sse2".into(), "avx2".into()],
        image_version: migrate::image::FORMAT_VERSION,
    };
    let msgs = [
        (
            "hello",
            Msg::Hello {
                magic: wire::MAGIC,
                version: wire::VERSION,
                facts: facts.clone(),
                container: "web".into(),
                tcp_established: false,
                lease_owner: None,
            },
        ),
        ("welcome", Msg::Welcome { facts }),
        (
            "section",
            Msg::Section {
                name: "pstree".into(),
                bytes: encode_section(&pstree()),
            },
        ),
        (
            "precopy",
            Msg::Precopy(PrecopyBatch::seal(
                1,
                7,
                vec![(0x1000, 1, RunSrc::Data)],
                &[5; 4096],
                Some(1),
            )),
        ),
        (
            "pages",
            Msg::Pages {
                seq: 3,
                bytes: vec![7; 64],
            },
        ),
        (
            "sealed",
            Msg::Sealed {
                manifest: encode_section(&manifest()),
                page_segments: 2,
                precopy_batches: 1,
            },
        ),
        ("ready", Msg::Ready { restore_ms: 12.5 }),
        ("sync", Msg::Sync { batches: 4 }),
        ("go", Msg::Go),
    ];
    let mut stream = Vec::new();
    for (name, m) in &msgs {
        let f = wire::encode(m);
        write(dir, "wire", name, 0, &f)?;
        stream.extend_from_slice(&f);
    }
    write(dir, "wire", "stream", 0, &stream)?;
    let payload = &wire::encode(&msgs[5].1)[8..];
    write(dir, "wire", "sealed-payload", 1, payload)?;
    Ok(())
}

fn criu_rpc(dir: &Path) -> Result<()> {
    let req = |r#type, opts| CriuReq {
        r#type,
        opts,
        notify_success: None,
    };
    let opts = CriuOpts {
        images_dir_fd: 7,
        log_file: Some("restore.log".into()),
        work_dir_fd: Some(8),
        cg_root: vec![CgroupRoot {
            ctrl: None,
            path: "/sys/fs/cgroup/web".into(),
        }],
    };
    let mut version = CriuResp {
        r#type: 10,
        success: true,
        ..Default::default()
    };
    version.version = Some(Version {
        major_number: 3,
        minor_number: 17,
        name: Some("migrate".into()),
    });
    let restored = CriuResp {
        r#type: 2,
        success: true,
        restore: Some(RestoreResp { pid: 4242 }),
        ..Default::default()
    };
    let seeds = [
        ("version", req(10, None).encode_to_vec()),
        ("feature-check", req(9, None).encode_to_vec()),
        ("restore", req(2, Some(opts)).encode_to_vec()),
        (
            "notify-ack",
            CriuReq {
                notify_success: Some(true),
                ..req(6, None)
            }
            .encode_to_vec(),
        ),
        ("resp-version", version.encode_to_vec()),
        ("resp-restore", restored.encode_to_vec()),
    ];
    for (name, bytes) in seeds {
        let d = dir.join("criu_rpc");
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    sections(&dir)?;
    pages(&dir)?;
    precopy(&dir)?;
    wire(&dir)?;
    criu_rpc(&dir)?;
    Ok(())
}
