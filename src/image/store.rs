//! Image sinks and sources. The engine writes named sections and one page
//! stream to a sink, and reads them back from a source; a directory is one
//! pair, a network stream another.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::pages::{Compression, PageReader, PageStats, PageWriter};
use super::{decode_section, encode_section, Error, FileEntry, MachineFacts, Manifest, Result, MANIFEST};

/// The name of the page stream in an image.
pub const PAGES: &str = "pages";

/// Where a checkpoint goes.
pub trait ImageSink {
    /// Stores one section under `name`.
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()>;
    /// The page stream; `finish_pages` must be called when it is complete.
    fn pages(&mut self) -> Result<&mut PageWriter<Box<dyn Write + Send>>>;
    fn finish_pages(&mut self) -> Result<PageStats>;
    /// Seals the image with its manifest; `created` is when the checkpoint
    /// was taken, in seconds since the Unix epoch. Returns the manifest and
    /// the image's total size.
    fn finish(&mut self, machine: MachineFacts, container: &str, created: u64) -> Result<(Manifest, u64)>;
    /// Removes what was written (a checkpoint that failed).
    fn abandon(&mut self);
}

/// Where a restore reads from.
pub trait ImageSource {
    fn manifest(&self) -> &Manifest;
    fn get(&mut self, name: &str) -> Result<Vec<u8>>;
    /// The page stream, from its start.
    fn pages(&mut self) -> Result<PageReader<Box<dyn Read + Send>>>;
    /// Pages sent ahead by live migration's pre-copy, if any.
    fn precopied(&self) -> Option<&super::precopy::PrecopyPages> {
        None
    }
}

/// Writes that count bytes and checksum them as they pass.
struct Tally<W> {
    inner: W,
    len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.len += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Shares a tally between the page writer (which owns its sink) and the
/// directory sink, which needs the totals at the end.
#[derive(Clone)]
struct SharedTally(std::sync::Arc<std::sync::Mutex<Tally<BufWriter<File>>>>);

impl Write for SharedTally {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("tally lock").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("tally lock").flush()
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: path.display().to_string(),
        source,
    }
}

/// An image directory being written.
pub struct DirSink {
    dir: PathBuf,
    compression: Compression,
    files: Vec<FileEntry>,
    pages: Option<(PageWriter<Box<dyn Write + Send>>, SharedTally)>,
}

impl DirSink {
    /// Prepares `dir` (created if needed; an image already there is
    /// replaced only when the new one is sealed).
    pub fn create(dir: &Path, compression: Compression) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        // A stale manifest must never describe new files.
        let _ = std::fs::remove_file(dir.join(MANIFEST));
        Ok(Self {
            dir: dir.to_path_buf(),
            compression,
            files: Vec::new(),
            pages: None,
        })
    }
}

impl ImageSink for DirSink {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(io_at(&path))?;
        self.files.push(FileEntry {
            name: name.to_string(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        });
        Ok(())
    }

    fn pages(&mut self) -> Result<&mut PageWriter<Box<dyn Write + Send>>> {
        if self.pages.is_none() {
            let path = self.dir.join(PAGES);
            let file = File::create(&path).map_err(io_at(&path))?;
            let tally = SharedTally(std::sync::Arc::new(std::sync::Mutex::new(Tally {
                inner: BufWriter::with_capacity(1 << 20, file),
                len: 0,
                crc: crc32fast::Hasher::new(),
            })));
            let writer = PageWriter::new(Box::new(tally.clone()) as Box<dyn Write + Send>, self.compression)?;
            self.pages = Some((writer, tally));
        }
        Ok(&mut self.pages.as_mut().expect("just set").0)
    }

    fn finish_pages(&mut self) -> Result<PageStats> {
        self.pages()?;
        let (writer, tally) = self.pages.take().expect("pages opened");
        let (_, stats) = writer.finish()?;
        let t = tally.0.lock().expect("tally lock");
        self.files.push(FileEntry {
            name: PAGES.to_string(),
            len: t.len,
            crc32: t.crc.clone().finalize(),
        });
        Ok(stats)
    }

    fn finish(&mut self, machine: MachineFacts, container: &str, created: u64) -> Result<(Manifest, u64)> {
        let manifest = Manifest {
            machine,
            created,
            container: container.to_string(),
            files: self.files.clone(),
        };
        let bytes = encode_section(&manifest);
        // fsync the data before the manifest makes it an image.
        for f in &manifest.files {
            if let Ok(file) = File::open(self.dir.join(&f.name)) {
                let _ = file.sync_all();
            }
        }
        let tmp = self.dir.join(".manifest.tmp");
        std::fs::write(&tmp, &bytes).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, self.dir.join(MANIFEST)).map_err(io_at(&tmp))?;
        let total = manifest.files.iter().map(|f| f.len).sum::<u64>() + bytes.len() as u64;
        Ok((manifest, total))
    }

    fn abandon(&mut self) {
        self.pages = None;
        for f in self
            .files
            .iter()
            .map(|f| f.name.clone())
            .chain([PAGES.to_string(), MANIFEST.to_string()])
        {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// An image directory being read. Opening it checks the manifest and the
/// length and checksum of every file, before anything is restored.
pub struct DirSource {
    dir: PathBuf,
    manifest: Manifest,
}

impl DirSource {
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST);
        let bytes = std::fs::read(&mpath).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Missing {
                name: mpath.display().to_string(),
            },
            _ => io_at(&mpath)(e),
        })?;
        let manifest: Manifest = decode_section(MANIFEST, &bytes)?;
        manifest.check()?;
        for f in &manifest.files {
            let path = dir.join(&f.name);
            let file = File::open(&path).map_err(|_| Error::Missing { name: f.name.clone() })?;
            let len = file.metadata().map_err(io_at(&path))?.len();
            if len != f.len {
                return Err(Error::Truncated {
                    name: f.name.clone(),
                    have: len,
                    want: f.len,
                });
            }
            if checksum_file(file, &path)? != f.crc32 {
                return Err(Error::Checksum { name: f.name.clone() });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }
}

fn checksum_file(mut file: File, path: &Path) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

impl ImageSource for DirSource {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn get(&mut self, name: &str) -> Result<Vec<u8>> {
        if !self.manifest.files.iter().any(|f| f.name == name) {
            return Err(Error::Missing { name: name.to_string() });
        }
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(io_at(&path))
    }

    fn pages(&mut self) -> Result<PageReader<Box<dyn Read + Send>>> {
        let path = self.dir.join(PAGES);
        let file = File::open(&path).map_err(io_at(&path))?;
        PageReader::new(Box::new(BufReader::with_capacity(1 << 20, file)) as Box<dyn Read + Send>)
    }
}

/// An image held in memory, as live migration's destination receives it:
/// sections, the page stream in segments, and pre-copied pages. Made only
/// after every part's length and checksum match the manifest.
pub struct MemSource {
    manifest: Manifest,
    sections: std::collections::HashMap<String, Vec<u8>>,
    segments: Option<Vec<Vec<u8>>>,
    precopied: super::precopy::PrecopyPages,
}

impl MemSource {
    pub fn new(
        manifest: Manifest,
        sections: std::collections::HashMap<String, Vec<u8>>,
        segments: Vec<Vec<u8>>,
        precopied: super::precopy::PrecopyPages,
    ) -> Result<Self> {
        manifest.check()?;
        for f in &manifest.files {
            let (len, crc) = if f.name == PAGES {
                let mut h = crc32fast::Hasher::new();
                segments.iter().for_each(|s| h.update(s));
                (segments.iter().map(|s| s.len() as u64).sum::<u64>(), h.finalize())
            } else {
                let b = sections
                    .get(&f.name)
                    .ok_or_else(|| Error::Missing { name: f.name.clone() })?;
                (b.len() as u64, crc32fast::hash(b))
            };
            if len != f.len {
                return Err(Error::Truncated {
                    name: f.name.clone(),
                    have: len,
                    want: f.len,
                });
            }
            if crc != f.crc32 {
                return Err(Error::Checksum { name: f.name.clone() });
            }
        }
        Ok(Self {
            manifest,
            sections,
            segments: Some(segments),
            precopied,
        })
    }
}

/// Reads a list of buffers as one stream.
struct Chain {
    bufs: std::collections::VecDeque<Vec<u8>>,
    pos: usize,
}

impl Read for Chain {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while let Some(front) = self.bufs.front() {
            if self.pos < front.len() {
                let n = out.len().min(front.len() - self.pos);
                out[..n].copy_from_slice(&front[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.bufs.pop_front();
            self.pos = 0;
        }
        Ok(0)
    }
}

impl ImageSource for MemSource {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn get(&mut self, name: &str) -> Result<Vec<u8>> {
        if !self.manifest.files.iter().any(|f| f.name == name) {
            return Err(Error::Missing { name: name.to_string() });
        }
        self.sections
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Missing { name: name.to_string() })
    }

    fn pages(&mut self) -> Result<PageReader<Box<dyn Read + Send>>> {
        let bufs = self
            .segments
            .take()
            .ok_or_else(|| Error::Pages("the page stream was already read".into()))?;
        PageReader::new(Box::new(Chain {
            bufs: bufs.into(),
            pos: 0,
        }) as Box<dyn Read + Send>)
    }

    fn precopied(&self) -> Option<&super::precopy::PrecopyPages> {
        Some(&self.precopied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> MachineFacts {
        MachineFacts {
            kernel: "6.18".into(),
            arch: "x86_64".into(),
            xstate_size: 2440,
        }
    }

    #[test]
    fn dir_roundtrip_and_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("img");
        let mut sink = DirSink::create(&dir, Compression::Zstd(1)).unwrap();
        sink.put("pstree", &encode_section(&vec![1u32, 2, 3])).unwrap();
        sink.pages().unwrap().write(&[9u8; 10000]).unwrap();
        sink.finish_pages().unwrap();
        sink.finish(facts(), "web", 1_700_000_000).unwrap();

        let mut src = DirSource::open(&dir).unwrap();
        assert_eq!(src.manifest().container, "web");
        assert_eq!(src.manifest().created, 1_700_000_000);
        let v: Vec<u32> = decode_section("pstree", &src.get("pstree").unwrap()).unwrap();
        assert_eq!(v, vec![1, 2, 3]);
        let mut pr = src.pages().unwrap();
        assert_eq!(pr.next_slice(20000).unwrap(), &[9u8; 10000][..]);

        // Corrupt a section: refused on open.
        let p = dir.join("pstree");
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(matches!(DirSource::open(&dir), Err(Error::Checksum { .. })));
        // Truncate the pages: refused on open.
        b[last] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let pages = dir.join(PAGES);
        let len = std::fs::metadata(&pages).unwrap().len();
        File::options()
            .write(true)
            .open(&pages)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert!(matches!(DirSource::open(&dir), Err(Error::Truncated { .. })));
    }

    #[test]
    fn section_framing_rejects_bad_input() {
        let good = encode_section(&"hello".to_string());
        assert_eq!(decode_section::<String>("s", &good).unwrap(), "hello");
        let mut v = good.clone();
        v[8] = 99;
        assert!(matches!(
            decode_section::<String>("s", &v),
            Err(Error::Version { found: 99, .. })
        ));
        let mut m = good.clone();
        m[0] = b'X';
        assert!(matches!(decode_section::<String>("s", &m), Err(Error::BadMagic { .. })));
        let mut big = good.clone();
        big[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_section::<String>("s", &big),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            decode_section::<String>("s", &good[..good.len() - 1]),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            decode_section::<String>("s", &good[..5]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn manifest_names_stay_inside_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("img");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(tmp.path().join("outside"), b"secret").unwrap();
        for name in ["../outside", "/etc/hostname", "", ".", "a/b", "manifest", "./pstree"] {
            let m = Manifest {
                machine: facts(),
                created: 0,
                container: "web".into(),
                files: vec![FileEntry {
                    name: name.into(),
                    len: 6,
                    crc32: crc32fast::hash(b"secret"),
                }],
            };
            std::fs::write(dir.join(MANIFEST), encode_section(&m)).unwrap();
            assert!(matches!(DirSource::open(&dir), Err(Error::BadName { .. })), "{name:?}");
            // No page is added, so no shadow is ever made.
            let precopied = crate::image::precopy::PrecopyPages::new(|_| Err(std::io::ErrorKind::Unsupported.into()));
            assert!(matches!(
                MemSource::new(m, Default::default(), vec![], precopied),
                Err(Error::BadName { .. })
            ));
        }
    }
}
