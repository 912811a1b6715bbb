//! The source side: a QUIC connection as an image sink. The engine runs on
//! the calling thread (ptrace stays there); the connection lives in a
//! tokio runtime on a thread of its own, and channels bridge the two.
//! Sections and the handshake go on one control stream; page data (the
//! final page stream in segments, and pre-copy batches) each on a
//! unidirectional stream of its own, several in flight at once.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::wire::{self, Facts, Msg};
use super::Error;
use crate::engine::live::{CommitFailure, LiveSink};
use crate::image::pages::{Compression, PageStats, PageWriter};
use crate::image::precopy::PrecopyBatch;
use crate::image::store::{ImageSink, PAGES};
use crate::image::{self, encode_section, FileEntry, MachineFacts, Manifest};

/// Page stream bytes per segment (one stream each).
const SEGMENT: usize = 4 << 20;
/// Page streams in flight at once.
const IN_FLIGHT: usize = 8;
/// How long the destination may take to restore and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the destination may take to start the container after Go.
const DONE_TIMEOUT: Duration = Duration::from_secs(60);

enum Out {
    Control(Vec<u8>),
    Bulk(Vec<u8>),
    /// Answered once every bulk stream so far is acknowledged.
    Flush(mpsc::Sender<()>),
}

enum Incoming {
    Msg(Msg),
    Lost(String),
}

/// A live destination over QUIC.
pub struct QuicSink {
    out: Option<tokio::sync::mpsc::Sender<Out>>,
    inc: mpsc::Receiver<Incoming>,
    bytes: Arc<AtomicU64>,
    files: Vec<FileEntry>,
    pages: Option<PageWriter<Box<dyn Write + Send>>>,
    page_tally: Arc<Mutex<(u64, crc32fast::Hasher, u64)>>,
    precopy_batches: u64,
    compression: Compression,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The destination's facts, from its welcome.
    pub peer: Facts,
}

fn lost(what: &str) -> image::Error {
    image::Error::Peer(what.to_string())
}

/// Resolves HOST:PORT.
pub fn resolve(addr: &str) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .map_err(|e| Error::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| Error::Connect {
            addr: addr.to_string(),
            reason: "no address".into(),
        })
}

/// Connects to the receiver at `addr`, authenticates both ways against
/// `peers`, and exchanges hellos. `hello` must be a [`Msg::Hello`].
pub fn connect(
    root: &Path,
    addr: SocketAddr,
    peers: Vec<CertificateDer<'static>>,
    hello: Msg,
    compression: Compression,
) -> Result<QuicSink, Error> {
    let config = super::tls::client_config(root, peers)?;
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Out>(4);
    let (in_tx, in_rx) = mpsc::channel::<Incoming>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Facts, Error>>();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    let thread = std::thread::Builder::new()
        .name("quic".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::Io {
                        what: "start the network runtime",
                        source: e,
                    }));
                    return;
                }
            };
            rt.block_on(run_client(addr, config, hello, out_rx, in_tx, ready_tx, counter));
        })
        .map_err(|source| Error::Io {
            what: "start the network thread",
            source,
        })?;
    let peer = match ready_rx.recv() {
        Ok(Ok(facts)) => facts,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(Error::Lost {
                phase: "hello",
                reason: "the network thread stopped".into(),
            });
        }
    };
    Ok(QuicSink {
        out: Some(out_tx),
        inc: in_rx,
        bytes,
        files: Vec::new(),
        pages: None,
        page_tally: Arc::new(Mutex::new((0, crc32fast::Hasher::new(), 0))),
        precopy_batches: 0,
        compression,
        thread: Some(thread),
        peer,
    })
}

async fn run_client(
    addr: SocketAddr,
    config: quinn::ClientConfig,
    hello: Msg,
    mut out_rx: tokio::sync::mpsc::Receiver<Out>,
    in_tx: mpsc::Sender<Incoming>,
    ready_tx: mpsc::Sender<Result<Facts, Error>>,
    bytes: Arc<AtomicU64>,
) {
    let connect_err = |reason: String| Error::Connect {
        addr: addr.to_string(),
        reason,
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let endpoint = match quinn::Endpoint::client(bind) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready_tx.send(Err(connect_err(e.to_string())));
            return;
        }
    };
    let hello_frame = wire::encode(&hello);
    let setup = async {
        let conn = endpoint
            .connect_with(config, addr, "migrate")
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connect_err(e.to_string()))?;
        send.write_all(&hello_frame)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        bytes.fetch_add(hello_frame.len() as u64, Ordering::Relaxed);
        let answer = match wire::read_async(&mut recv).await {
            Ok(Some(a)) => a,
            // TLS 1.3: a client learns that the server refused its
            // certificate only when the connection closes.
            _ => {
                let why = conn
                    .close_reason()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "no answer".into());
                return Err(connect_err(format!(
                    "the receiver closed the connection during the handshake ({why}); is this root's certificate (`migrate identity`) pinned there?"
                )));
            }
        };
        match wire::decode_frame(&answer)? {
            Msg::Welcome { facts } => Ok((conn, send, recv, facts)),
            Msg::Refuse { reason } => Err(Error::Refused { reason }),
            other => Err(Error::Protocol(format!("expected a welcome, got {}", name_of(&other)))),
        }
    };
    let setup = tokio::time::timeout(Duration::from_secs(20), setup).await;
    let (conn, mut ctrl, mut ctrl_recv, facts) = match setup {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let _ = ready_tx.send(Err(e));
            endpoint.close(0u32.into(), b"");
            return;
        }
        Err(_) => {
            let _ = ready_tx.send(Err(connect_err("no answer within 20 s".into())));
            return;
        }
    };
    // Ctrl-C (or SIGTERM) from here on calls the migration off: the
    // engine sees the connection gone and lets the container run again.
    // Registered before the engine freezes anything.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut sigint, mut sigterm) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            let _ = ready_tx.send(Err(connect_err("could not handle Ctrl-C".into())));
            return;
        }
    };
    let _ = ready_tx.send(Ok(facts));

    // Messages from the destination.
    let reader_tx = in_tx.clone();
    let reader = tokio::spawn(async move {
        loop {
            let got = match wire::read_async(&mut ctrl_recv).await {
                Ok(Some(frame)) => wire::decode_frame(&frame).map_err(|e| e.to_string()),
                Ok(None) => Err("the destination closed the connection".into()),
                Err(e) => Err(e.to_string()),
            };
            let stop = got.is_err();
            let _ = reader_tx.send(match got {
                Ok(m) => Incoming::Msg(m),
                Err(e) => Incoming::Lost(e),
            });
            if stop {
                break;
            }
        }
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut failed = false;
    loop {
        tokio::select! {
            m = out_rx.recv() => match m {
                Some(Out::Control(frame)) => {
                    if let Err(e) = ctrl.write_all(&frame).await {
                        let _ = in_tx.send(Incoming::Lost(format!("send: {e}")));
                        failed = true;
                        break;
                    }
                    bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                Some(Out::Bulk(frame)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else { break };
                    let conn = conn.clone();
                    tasks.spawn(async move {
                        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
                        s.write_all(&frame).await.map_err(|e| e.to_string())?;
                        s.finish().map_err(|e| e.to_string())?;
                        // Done when the destination has it all: a permit
                        // is data in flight.
                        s.stopped().await.map_err(|e| e.to_string())?;
                        drop(permit);
                        Ok::<u64, String>(frame.len() as u64)
                    });
                }
                Some(Out::Flush(answer)) => {
                    while let Some(done) = tasks.join_next().await {
                        if !counted(done, &bytes, &in_tx) {
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        break;
                    }
                    let _ = answer.send(());
                }
                None => break,
            },
            Some(done) = tasks.join_next() => {
                if !counted(done, &bytes, &in_tx) {
                    failed = true;
                    break;
                }
            }
            _ = async { tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} } } => {
                conn.close(1u32.into(), b"interrupted");
                let _ = in_tx.send(Incoming::Lost("interrupted (Ctrl-C)".into()));
                failed = true;
                break;
            }
            e = conn.closed() => {
                let _ = in_tx.send(Incoming::Lost(format!("connection lost: {e}")));
                failed = true;
                break;
            }
        }
    }
    drop(out_rx);
    if !failed {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Ok(n)) = done {
                bytes.fetch_add(n, Ordering::Relaxed);
            }
        }
        let _ = ctrl.finish();
        conn.close(0u32.into(), b"done");
    }
    reader.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// Counts a finished page stream's bytes; on failure reports why and
/// returns false.
fn counted(
    done: std::result::Result<std::result::Result<u64, String>, tokio::task::JoinError>,
    bytes: &AtomicU64,
    in_tx: &mpsc::Sender<Incoming>,
) -> bool {
    match done {
        Ok(Ok(n)) => {
            bytes.fetch_add(n, Ordering::Relaxed);
            true
        }
        Ok(Err(e)) => {
            let _ = in_tx.send(Incoming::Lost(format!("send pages: {e}")));
            false
        }
        Err(e) => {
            let _ = in_tx.send(Incoming::Lost(format!("send pages: {e}")));
            false
        }
    }
}

/// A message's name, for errors.
pub(crate) fn name_of(m: &Msg) -> &'static str {
    match m {
        Msg::Hello { .. } => "hello",
        Msg::Welcome { .. } => "welcome",
        Msg::Refuse { .. } => "refusal",
        Msg::Section { .. } => "section",
        Msg::Precopy(_) => "pre-copy batch",
        Msg::Pages { .. } => "page segment",
        Msg::Sealed { .. } => "seal",
        Msg::Abort { .. } => "abort",
        Msg::Ready { .. } => "ready",
        Msg::Failed { .. } => "failure",
        Msg::Go => "go",
        Msg::Done => "done",
        Msg::Sync { .. } => "sync",
        Msg::Synced => "synced",
    }
}

/// Page stream bytes, cut into segments, each sent on a stream of its own.
struct Segments {
    out: tokio::sync::mpsc::Sender<Out>,
    buf: Vec<u8>,
    tally: Arc<Mutex<(u64, crc32fast::Hasher, u64)>>,
}

impl Segments {
    fn send_segment(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let seq = {
            let mut t = self.tally.lock().expect("tally lock");
            t.0 += self.buf.len() as u64;
            t.1.update(&self.buf);
            t.2 += 1;
            t.2 - 1
        };
        let frame = wire::encode(&Msg::Pages {
            seq,
            bytes: std::mem::take(&mut self.buf),
        });
        self.out
            .blocking_send(Out::Bulk(frame))
            .map_err(|_| std::io::Error::other("the connection to the destination is gone"))
    }
}

impl Write for Segments {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SEGMENT {
            self.send_segment()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_segment()
    }
}

impl QuicSink {
    fn send(&mut self, out: Out) -> image::Result<()> {
        let sent = match &self.out {
            Some(tx) => tx.blocking_send(out).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.why_lost())
        }
    }

    /// Why the connection is gone, as the network side reported it.
    fn why_lost(&self) -> image::Error {
        while let Ok(m) = self.inc.try_recv() {
            match m {
                Incoming::Lost(why) => return lost(&why),
                Incoming::Msg(Msg::Failed { reason }) => return lost(&format!("the destination failed: {reason}")),
                Incoming::Msg(_) => {}
            }
        }
        lost("the connection to the destination is gone")
    }

    fn wait(&self, timeout: Duration) -> std::result::Result<Msg, String> {
        match self.inc.recv_timeout(timeout) {
            Ok(Incoming::Msg(m)) => Ok(m),
            Ok(Incoming::Lost(why)) => Err(why),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {} s", timeout.as_secs())),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the connection to the destination is gone".into()),
        }
    }

    fn control(&mut self, msg: &Msg) -> image::Result<()> {
        self.send(Out::Control(wire::encode(msg)))
    }
}

impl ImageSink for QuicSink {
    fn put(&mut self, name: &str, bytes: &[u8]) -> image::Result<()> {
        self.files.push(FileEntry {
            name: name.to_string(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        });
        self.control(&Msg::Section {
            name: name.to_string(),
            bytes: bytes.to_vec(),
        })
    }

    fn pages(&mut self) -> image::Result<&mut PageWriter<Box<dyn Write + Send>>> {
        if self.pages.is_none() {
            let out = self.out.clone().ok_or_else(|| self.why_lost())?;
            let seg = Segments {
                out,
                buf: Vec::with_capacity(SEGMENT + (64 << 10)),
                tally: self.page_tally.clone(),
            };
            self.pages = Some(PageWriter::new(
                Box::new(seg) as Box<dyn Write + Send>,
                self.compression,
            )?);
        }
        Ok(self.pages.as_mut().expect("just set"))
    }

    fn finish_pages(&mut self) -> image::Result<PageStats> {
        self.pages()?;
        let writer = self.pages.take().expect("pages opened");
        let (_, stats) = writer.finish()?;
        let t = self.page_tally.lock().expect("tally lock");
        self.files.push(FileEntry {
            name: PAGES.to_string(),
            len: t.0,
            crc32: t.1.clone().finalize(),
        });
        Ok(stats)
    }

    fn finish(&mut self, machine: MachineFacts, container: &str, created: u64) -> image::Result<(Manifest, u64)> {
        let manifest = Manifest {
            machine,
            created,
            container: container.to_string(),
            files: self.files.clone(),
        };
        let total = manifest.files.iter().map(|f| f.len).sum::<u64>();
        let page_segments = self.page_tally.lock().expect("tally lock").2;
        self.control(&Msg::Sealed {
            manifest: encode_section(&manifest),
            page_segments,
            precopy_batches: self.precopy_batches,
        })?;
        Ok((manifest, total))
    }

    fn abandon(&mut self) {
        self.pages = None;
        let _ = self.control(&Msg::Abort {
            reason: "the checkpoint failed on the source".into(),
        });
    }
}

impl LiveSink for QuicSink {
    fn flush(&mut self) -> image::Result<()> {
        // Every stream acknowledged...
        let (tx, rx) = mpsc::channel();
        self.send(Out::Flush(tx))?;
        rx.recv().map_err(|_| self.why_lost())?;
        // ...and every batch applied at the destination.
        self.control(&Msg::Sync {
            batches: self.precopy_batches,
        })?;
        match self.wait(READY_TIMEOUT) {
            Ok(Msg::Synced) => Ok(()),
            Ok(Msg::Failed { reason }) => Err(lost(&format!("the destination failed: {reason}"))),
            Ok(other) => Err(lost(&format!("unexpected {} from the destination", name_of(&other)))),
            Err(why) => Err(lost(&why)),
        }
    }

    fn precopy(&mut self, mut batch: PrecopyBatch) -> image::Result<()> {
        batch.seq = self.precopy_batches;
        self.precopy_batches += 1;
        self.send(Out::Bulk(wire::encode(&Msg::Precopy(batch))))
    }

    fn await_ready(&mut self) -> image::Result<f64> {
        match self.wait(READY_TIMEOUT) {
            Ok(Msg::Ready { restore_ms }) => Ok(restore_ms),
            Ok(Msg::Failed { reason }) => Err(lost(&format!("the destination failed: {reason}"))),
            Ok(other) => Err(lost(&format!("unexpected {} from the destination", name_of(&other)))),
            Err(why) => Err(lost(&why)),
        }
    }

    fn commit(&mut self) -> std::result::Result<(), CommitFailure> {
        self.control(&Msg::Go)
            .map_err(|e| CommitFailure::Unknown(e.to_string()))?;
        match self.wait(DONE_TIMEOUT) {
            Ok(Msg::Done) => Ok(()),
            Ok(Msg::Failed { reason }) => Err(CommitFailure::Refused(reason)),
            Ok(other) => Err(CommitFailure::Unknown(format!(
                "unexpected {} from the destination",
                name_of(&other)
            ))),
            Err(why) => Err(CommitFailure::Unknown(why)),
        }
    }

    fn bytes_sent(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for QuicSink {
    fn drop(&mut self) {
        self.pages = None;
        self.out = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Migrates container `name` of `root` to the receiver at `addr`, which
/// must present one of `peers`' certificates (see
/// [`crate::engine::live::send`] for what happens on failure).
pub fn migrate(
    root: &crate::runtime::Root,
    name: &str,
    addr: &str,
    peers: Vec<CertificateDer<'static>>,
    opts: &crate::engine::live::LiveOptions,
    compression: Compression,
    progress: &mut dyn FnMut(crate::engine::live::Progress),
) -> Result<crate::engine::live::LiveReport, Error> {
    let st = root.load(name)?;
    let hello = Msg::Hello {
        magic: wire::MAGIC,
        version: wire::VERSION,
        facts: Facts::local(),
        container: name.to_string(),
        tcp_established: opts.checkpoint.tcp == crate::engine::TcpMode::Repair,
        lease_owner: st
            .net
            .as_ref()
            .map(|_| root.state_path(name).to_string_lossy().into_owned()),
    };
    progress(crate::engine::live::Progress::Phase("connect"));
    let unmoved = |e: Error| Error::Unmoved {
        name: name.to_string(),
        source: Box::new(e),
    };
    let addr = resolve(addr).map_err(unmoved)?;
    let mut sink = connect(root.dir(), addr, peers, hello, compression).map_err(unmoved)?;
    let report = crate::engine::live::send(root, name, &mut sink, opts, progress)?;
    Ok(report)
}
