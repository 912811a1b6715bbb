//! The page store: one logical stream of page data, cut into independent
//! chunks. Each chunk is zstd-compressed (or stored raw where compression
//! does not pay) and carries its own CRC-32, so a chunk can be checked,
//! sent and decoded on its own. Which pages the stream holds, and in what
//! order, is recorded by the memory sections (runs of pages per mapping).

use std::io::{Read, Write};

use super::{Error, Result, FORMAT_VERSION, OLDEST_FORMAT_VERSION};

pub const PAGES_MAGIC: [u8; 8] = *b"MIGRPAGE";
const CHUNK_MAGIC: u32 = u32::from_le_bytes(*b"PGCK");
/// Raw bytes per chunk.
pub const CHUNK_SIZE: usize = 4 << 20;
/// A chunk header claiming more than this is damage, not data.
const CHUNK_CAP: usize = CHUNK_SIZE + (64 << 10);
const FLAG_ZSTD: u32 = 1;
const CHUNK_HEADER: usize = 20;

/// How page chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at this level (negative levels are the fast ones).
    Zstd(i32),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// What a page writer wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Raw page bytes.
    pub raw: u64,
    /// Bytes written, headers included.
    pub stored: u64,
    pub chunks: u64,
}

/// Writes the page stream. Chunks are compressed and written by a worker
/// thread, so that the caller's copying and the compression overlap.
pub struct PageWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    raw: u64,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<Result<(W, u64, u64)>>>,
}

impl<W: Write + Send + 'static> PageWriter<W> {
    pub fn new(mut out: W, compression: Compression) -> Result<Self> {
        let mut header = PAGES_MAGIC.to_vec();
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&header).map_err(io("write page store"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (free_tx, free) = std::sync::mpsc::channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("page-writer".into())
            .spawn(move || {
                let mut stored = header.len() as u64;
                let mut chunks = 0u64;
                for mut chunk in rx {
                    stored += write_chunk(&mut out, &chunk, compression)?;
                    chunks += 1;
                    chunk.clear();
                    let _ = free_tx.send(chunk);
                }
                out.flush().map_err(io("flush page store"))?;
                Ok((out, stored, chunks))
            })
            .map_err(io("start page writer"))?;
        Ok(Self {
            buf: Vec::with_capacity(CHUNK_SIZE),
            raw: 0,
            tx: Some(tx),
            free,
            worker: Some(worker),
        })
    }

    /// Room left in the current chunk.
    fn spare(&self) -> usize {
        CHUNK_SIZE - self.buf.len()
    }

    /// Appends raw page bytes.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = data.len().min(self.spare());
            self.buf.extend_from_slice(&data[..n]);
            self.raw += n as u64;
            data = &data[n..];
            if self.buf.len() == CHUNK_SIZE {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    /// Hands the current chunk to the worker.
    fn flush_chunk(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.free.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK_SIZE));
        let chunk = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk).is_ok()).unwrap_or(false);
        if !sent {
            // The worker stopped: its error says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| Error::Pages("the page writer stopped".into())));
        }
        Ok(())
    }

    fn join(&mut self) -> Result<(W, u64, u64)> {
        self.tx = None;
        match self.worker.take() {
            Some(h) => h.join().map_err(|_| Error::Pages("the page writer panicked".into()))?,
            None => Err(Error::Pages("the page writer already stopped".into())),
        }
    }

    /// Writes the last chunk and returns the sink and the totals.
    pub fn finish(mut self) -> Result<(W, PageStats)> {
        self.flush_chunk()?;
        let (out, stored, chunks) = self.join()?;
        Ok((
            out,
            PageStats {
                raw: self.raw,
                stored,
                chunks,
            },
        ))
    }
}

/// Compresses (where it pays) and writes one chunk; returns bytes written.
fn write_chunk<W: Write>(out: &mut W, raw: &[u8], compression: Compression) -> Result<u64> {
    let compressed = match compression {
        Compression::None => None,
        Compression::Zstd(level) => zstd::bulk::compress(raw, level)
            .ok()
            .filter(|c| c.len() + c.len() / 16 < raw.len()),
    };
    let (flags, body): (u32, &[u8]) = match &compressed {
        Some(c) => (FLAG_ZSTD, c),
        None => (0, raw),
    };
    let mut header = [0u8; CHUNK_HEADER];
    header[0..4].copy_from_slice(&CHUNK_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header[16..20].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.write_all(&header).map_err(io("write page chunk"))?;
    out.write_all(body).map_err(io("write page chunk"))?;
    Ok((CHUNK_HEADER + body.len()) as u64)
}

/// Reads chunks: checks each and decodes it.
struct ChunkSource<R: Read> {
    inp: R,
    stored: Vec<u8>,
}

impl<R: Read> ChunkSource<R> {
    /// Reads the next chunk header and body; None at a clean end.
    fn next_chunk(&mut self) -> Result<Option<(u32, u32)>> {
        let mut header = [0u8; CHUNK_HEADER];
        match read_full(&mut self.inp, &mut header).map_err(io("read page chunk"))? {
            0 => return Ok(None),
            CHUNK_HEADER => {}
            _ => return Err(Error::Pages("truncated chunk header".into())),
        }
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        if word(0) != CHUNK_MAGIC {
            return Err(Error::Pages("bad chunk magic; the page store is corrupted".into()));
        }
        let (raw_len, stored_len, flags, crc) = (word(4), word(8), word(12), word(16));
        if raw_len as usize > CHUNK_CAP || stored_len as usize > CHUNK_CAP {
            return Err(Error::Pages(format!("chunk of {stored_len} bytes is over the cap")));
        }
        self.stored.resize(stored_len as usize, 0);
        if read_full(&mut self.inp, &mut self.stored).map_err(io("read page chunk"))? != stored_len as usize {
            return Err(Error::Pages("truncated chunk".into()));
        }
        if crc32fast::hash(&self.stored) != crc {
            return Err(Error::Checksum { name: "pages".into() });
        }
        Ok(Some((raw_len, flags)))
    }

    /// The next decoded chunk, into `out`; false at the end.
    fn decode_next(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        let Some((raw_len, flags)) = self.next_chunk()? else {
            return Ok(false);
        };
        out.clear();
        if flags & FLAG_ZSTD != 0 {
            out.resize(raw_len as usize, 0);
            let n = zstd::bulk::decompress_to_buffer(&self.stored, out)
                .map_err(|e| Error::Pages(format!("undecodable chunk: {e}")))?;
            if n != raw_len as usize {
                return Err(Error::Pages("chunk decodes to the wrong size".into()));
            }
        } else {
            std::mem::swap(out, &mut self.stored);
        }
        Ok(true)
    }
}

/// Reads the page stream back. A worker thread reads and decodes the next
/// chunks while the caller writes pages.
pub struct PageReader<R: Read + Send + 'static> {
    src: Option<ChunkSource<R>>,
    rx: Option<std::sync::mpsc::Receiver<Result<Vec<u8>>>>,
    back: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    /// Raw bytes handed out so far.
    pub consumed: u64,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl<R: Read + Send + 'static> PageReader<R> {
    pub fn new(mut inp: R) -> Result<Self> {
        let mut header = [0u8; 12];
        inp.read_exact(&mut header)
            .map_err(|_| Error::Pages("the page store is truncated (no header)".into()))?;
        if header[..8] != PAGES_MAGIC {
            return Err(Error::Pages("not a migrate page store (bad magic)".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::Version {
                name: "pages".into(),
                found: version,
                oldest: OLDEST_FORMAT_VERSION,
                newest: FORMAT_VERSION,
            });
        }
        Ok(Self {
            src: Some(ChunkSource {
                inp,
                stored: Vec::new(),
            }),
            rx: None,
            back: None,
            chunk: Vec::new(),
            pos: 0,
            consumed: 0,
            worker: None,
        })
    }

    fn start(&mut self) {
        let Some(mut src) = self.src.take() else { return };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(2);
        let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("page-reader".into())
            .spawn(move || loop {
                let mut buf = spare.try_recv().unwrap_or_default();
                match src.decode_next(&mut buf) {
                    Ok(true) => {
                        if tx.send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Ok(false) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            });
        if let Ok(worker) = spawned {
            self.rx = Some(rx);
            self.back = Some(back);
            self.worker = Some(worker);
        }
    }

    /// The next at most `max` raw bytes, straight from the decoded chunk.
    pub fn next_slice(&mut self, max: usize) -> Result<&[u8]> {
        if self.pos == self.chunk.len() {
            self.start();
            let next = match &self.rx {
                Some(rx) => rx
                    .recv()
                    .unwrap_or_else(|_| Err(Error::Pages("the page store ends early".into())))?,
                None => return Err(Error::Pages("could not start the page reader".into())),
            };
            let used = std::mem::replace(&mut self.chunk, next);
            if let Some(back) = &self.back {
                let _ = back.send(used);
            }
            self.pos = 0;
        }
        let n = max.min(self.chunk.len() - self.pos);
        let start = self.pos;
        self.pos += n;
        self.consumed += n as u64;
        Ok(&self.chunk[start..start + n])
    }

    /// Checks every chunk's checksum without decoding it and returns the
    /// raw length of the stream. For checking an image before anything is
    /// restored from it.
    pub fn verify_all(mut self) -> Result<u64> {
        let mut src = self.src.take().ok_or_else(|| Error::Pages("already reading".into()))?;
        let mut total = 0u64;
        while let Some((raw, _)) = src.next_chunk()? {
            total += u64::from(raw);
        }
        Ok(total)
    }
}

impl<R: Read + Send + 'static> Drop for PageReader<R> {
    /// Stops the worker: it decodes at most the chunk it is on, finds
    /// nobody to hand it to, and ends; nothing of the stream outlives the
    /// reader.
    fn drop(&mut self) {
        self.rx = None;
        self.back = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(compression: Compression, data: &[u8]) -> Vec<u8> {
        let mut w = PageWriter::new(Vec::new(), compression).unwrap();
        w.write(data).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.raw, data.len() as u64);
        assert_eq!(
            PageReader::new(std::io::Cursor::new(bytes.clone()))
                .unwrap()
                .verify_all()
                .unwrap(),
            data.len() as u64
        );
        let mut r = PageReader::new(std::io::Cursor::new(bytes.clone())).unwrap();
        let mut out = Vec::new();
        while out.len() < data.len() {
            out.extend_from_slice(r.next_slice(100_000).unwrap());
        }
        assert!(r.next_slice(1).is_err(), "stream must end");
        bytes
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7919) >> 9) as u8).collect()
    }

    #[test]
    fn roundtrips_raw_and_zstd_across_chunks() {
        let data = sample(CHUNK_SIZE * 2 + 12345);
        let raw = roundtrip(Compression::None, &data);
        let z = roundtrip(Compression::Zstd(1), &data);
        assert!(z.len() < raw.len());
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let data = sample(100_000);
        let mut w = PageWriter::new(Vec::new(), Compression::Zstd(1)).unwrap();
        w.write(&data).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let mut bad = bytes.clone();
        let last = bad.len() - 10;
        bad[last] ^= 0xff;
        assert!(matches!(
            PageReader::new(std::io::Cursor::new(bad)).unwrap().verify_all(),
            Err(Error::Checksum { .. })
        ));
        let cut = &bytes[..bytes.len() - 5];
        assert!(PageReader::new(std::io::Cursor::new(cut.to_vec()))
            .unwrap()
            .verify_all()
            .is_err());
        assert!(PageReader::new(std::io::Cursor::new(b"NOTPAGES0000".to_vec())).is_err());
    }

    #[test]
    fn dropping_a_reader_stops_its_worker() {
        /// A stream that counts its live copies.
        struct Counted {
            inner: std::io::Cursor<Vec<u8>>,
            _alive: std::sync::Arc<()>,
        }
        impl Read for Counted {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.inner.read(buf)
            }
        }
        let mut w = PageWriter::new(Vec::new(), Compression::Zstd(1)).unwrap();
        w.write(&sample(CHUNK_SIZE * 4)).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let alive = std::sync::Arc::new(());
        let mut r = PageReader::new(Counted {
            inner: std::io::Cursor::new(bytes),
            _alive: alive.clone(),
        })
        .unwrap();
        assert_eq!(r.next_slice(10).unwrap().len(), 10);
        drop(r);
        // The worker owned the stream: it is gone with the reader.
        assert_eq!(std::sync::Arc::strong_count(&alive), 1);
    }
}
