//! The destination side: `migrate recv`. A QUIC server that accepts only
//! pinned peers; for each migration it starts a restore helper (a process
//! of its own, see `helper`), relays the source's messages to it and its
//! answers back. Closing the helper's stdin is how a migration is called
//! off: the helper then removes everything it made.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::send::name_of;
use super::wire::{self, Facts, Msg};
use super::Error;

/// How long a connected peer may take to open its control stream and say
/// hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the helper may take to clean up after a failed migration.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RecvOptions {
    pub listen: SocketAddr,
    /// Return after the first migration (whatever its outcome).
    pub once: bool,
    /// The program to run as the restore helper (this binary).
    pub exe: PathBuf,
    /// Check each restored container against its image before it runs
    /// (restore --verify).
    pub verify: bool,
}

/// What one migration did, from the destination's side.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecvReport {
    pub name: String,
    pub peer: String,
    pub committed: bool,
    pub total_ms: f64,
    pub restore_ms: f64,
    pub bytes_received: u64,
    pub error: Option<String>,
    /// Taken from an OCI runtime at the source: handed to it here.
    pub handed_back: Option<crate::runtime::oci::HandedBack>,
    /// Why that hand-back failed (the container runs on under migrate).
    pub handback_error: Option<String>,
}

/// What the receiver reports while it works.
#[derive(Debug, Clone)]
pub enum Event {
    Listening(SocketAddr),
    /// A peer failed the handshake (not pinned, not TLS, ...).
    Rejected {
        peer: SocketAddr,
        reason: String,
    },
    Started {
        peer: SocketAddr,
        name: String,
    },
    Received {
        bytes: u64,
    },
    Finished(RecvReport),
}

/// Serves migrations into the root at `root` until interrupted (or after
/// one, with `once`). Returns the last migration's report.
pub fn serve(
    root: &Path,
    peers: Vec<CertificateDer<'static>>,
    opts: &RecvOptions,
    events: &mut dyn FnMut(Event),
) -> Result<Option<RecvReport>, Error> {
    let config = super::tls::server_config(root, peers)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "start the network runtime",
            source,
        })?;
    rt.block_on(async {
        let endpoint =
            quinn::Endpoint::server(config, opts.listen).map_err(|source| Error::Io { what: "listen", source })?;
        events(Event::Listening(endpoint.local_addr().unwrap_or(opts.listen)));
        // Ctrl-C: a migration in flight is called off (its helper cleans
        // up), then the receiver stops.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        });
        let interrupted = || Error::Lost {
            phase: "receive",
            reason: "interrupted (Ctrl-C)".into(),
        };
        let mut last = None;
        loop {
            let mut stopped = stop.clone();
            let incoming = tokio::select! {
                i = endpoint.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
                _ = stopped.changed() => {
                    endpoint.close(1u32.into(), b"receiver stopped");
                    return Err(interrupted());
                }
            };
            let peer = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    events(Event::Rejected {
                        peer,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            let report = migration(root, &conn, opts, stop.clone(), events).await;
            if *stop.borrow() {
                if let Ok(r) = report {
                    events(Event::Finished(r));
                }
                endpoint.close(1u32.into(), b"receiver stopped");
                // Let the close reach the source, so it rolls back now.
                let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
                return Err(interrupted());
            }
            let report = match report {
                Ok(r) => r,
                Err(Handshake(e)) => {
                    events(Event::Rejected {
                        peer,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            events(Event::Finished(report.clone()));
            last = Some(report);
            if opts.once {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(last)
    })
}

/// A failure before the hello was accepted: the peer is turned away and
/// the migration does not count.
struct Handshake(Error);

/// The helper process, killed if dropped before it was waited for.
struct Helper {
    child: Option<tokio::process::Child>,
}

impl Helper {
    async fn finish(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        match tokio::time::timeout(CLEANUP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
    }
}

/// Reads frames from `stream` into `tx`, each decoded and as received (to
/// be passed on as it is), until it ends; decoding errors end it too.
async fn pump_frames(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    tx: tokio::sync::mpsc::Sender<Result<(Msg, Vec<u8>), String>>,
) {
    loop {
        let got = match wire::read_async(&mut stream).await {
            Ok(Some(frame)) => wire::decode_frame(&frame)
                .map(|m| (m, frame))
                .map_err(|e| e.to_string()),
            Ok(None) => Err("closed".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let stop = got.is_err();
        if tx.send(got).await.is_err() || stop {
            break;
        }
    }
}

/// One migration on an authenticated connection.
async fn migration(
    root: &Path,
    conn: &quinn::Connection,
    opts: &RecvOptions,
    stop: tokio::sync::watch::Receiver<bool>,
    events: &mut dyn FnMut(Event),
) -> Result<RecvReport, Handshake> {
    let t0 = Instant::now();
    let peer = conn.remote_address();
    let (mut ctrl, mut ctrl_rx) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| Handshake(Error::Protocol("no control stream within 10 s".into())))?
        .map_err(|e| Handshake(Error::Protocol(e.to_string())))?;
    let hello_frame = tokio::time::timeout(HELLO_TIMEOUT, wire::read_async(&mut ctrl_rx))
        .await
        .map_err(|_| Handshake(Error::Protocol("no hello within 10 s".into())))?
        .map_err(|e| Handshake(e.into()))?
        .ok_or_else(|| Handshake(Error::Protocol("the peer closed before its hello".into())))?;
    let hello = wire::decode_frame(&hello_frame).map_err(|e| Handshake(e.into()))?;
    let here = Facts::local();
    let refusal = match &hello {
        Msg::Hello {
            magic,
            version,
            facts,
            container,
            ..
        } => {
            if *magic != wire::MAGIC || !(wire::OLDEST_VERSION..=wire::VERSION).contains(version) {
                Some(format!(
                    "the source speaks protocol version {version}, this receiver speaks versions {} to {}",
                    wire::OLDEST_VERSION,
                    wire::VERSION
                ))
            } else if !crate::runtime::state::valid_name(container) {
                Some(format!("{container:?} is not a valid container name"))
            } else {
                here.refuse_from(facts)
            }
        }
        other => Some(format!("expected a hello, got {}", name_of(other))),
    };
    if let Some(reason) = refusal {
        let _ = ctrl
            .write_all(&wire::encode(&Msg::Refuse { reason: reason.clone() }))
            .await;
        let _ = ctrl.finish();
        // Let the refusal reach the peer before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return Err(Handshake(Error::Refused { reason }));
    }
    let Msg::Hello { container: name, .. } = &hello else {
        unreachable!("refused above")
    };
    let name = name.clone();
    events(Event::Started {
        peer,
        name: name.clone(),
    });
    let mut report = RecvReport {
        name: name.clone(),
        peer: peer.to_string(),
        ..Default::default()
    };
    let result = relay(
        root,
        conn,
        opts,
        &mut ctrl,
        ctrl_rx,
        &hello_frame,
        &mut report,
        stop,
        events,
    )
    .await;
    report.total_ms = t0.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => {
            report.committed = true;
            // The source closes once it has our Done, and has killed its
            // copy (and removed its runtime's record of it).
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            let (root, name) = (root.to_path_buf(), name.clone());
            let handed = tokio::task::spawn_blocking(move || hand_back_if_adopted(&root, &name)).await;
            match handed {
                Ok(Ok(h)) => report.handed_back = h,
                Ok(Err(e)) => report.handback_error = Some(e),
                Err(e) => report.handback_error = Some(e.to_string()),
            }
        }
        Err(e) => {
            report.error = Some(e.to_string());
            // Whatever was said (the helper's reason) reaches the source
            // before the connection goes: it closes on its own once it has
            // read it, or in 2 s.
            let _ = ctrl.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(2u32.into(), b"migration failed");
        }
    }
    Ok(report)
}

/// Starts the helper and relays between it and the source until Done or
/// failure. The helper is finished (and has cleaned up) when this returns.
#[allow(clippy::too_many_arguments)]
async fn relay(
    root: &Path,
    conn: &quinn::Connection,
    opts: &RecvOptions,
    ctrl: &mut quinn::SendStream,
    ctrl_rx: quinn::RecvStream,
    hello_frame: &[u8],
    report: &mut RecvReport,
    mut stop: tokio::sync::watch::Receiver<bool>,
    events: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    ctrl.write_all(&wire::encode(&Msg::Welcome { facts: Facts::local() }))
        .await
        .map_err(|e| lost(e.to_string()))?;
    let mut child = tokio::process::Command::new(&opts.exe)
        .arg("--root")
        .arg(root)
        .arg("restore-helper")
        .args(opts.verify.then_some("--verify"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Not in the terminal's process group: Ctrl-C reaches the
        // receiver, which tells the helper by closing its stdin.
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Io {
            what: "start the restore helper",
            source,
        })?;
    let mut hin = child.stdin.take().expect("piped");
    let hout = child.stdout.take().expect("piped");
    let mut helper = Helper { child: Some(child) };
    let received = Arc::new(AtomicU64::new(hello_frame.len() as u64));

    // Everything for the helper goes through one writer task; aborting it
    // closes the helper's stdin.
    let (to_helper, mut to_helper_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let first = hello_frame.to_vec();
    let writer = tokio::spawn(async move {
        if hin.write_all(&first).await.is_err() {
            return;
        }
        while let Some(f) = to_helper_rx.recv().await {
            if hin.write_all(&f).await.is_err() {
                return;
            }
        }
    });
    // Page data, one frame per unidirectional stream.
    let bulk = {
        let conn = conn.clone();
        let to_helper = to_helper.clone();
        let received = received.clone();
        tokio::spawn(async move {
            let mut readers = tokio::task::JoinSet::new();
            while let Ok(mut s) = conn.accept_uni().await {
                let to_helper = to_helper.clone();
                let received = received.clone();
                let conn = conn.clone();
                readers.spawn(async move {
                    match wire::read_async(&mut s).await {
                        Ok(Some(frame)) if wire::is_bulk_frame(&frame) => {
                            received.fetch_add(frame.len() as u64, Ordering::Relaxed);
                            let _ = to_helper.send(frame).await;
                        }
                        _ => conn.close(3u32.into(), b"bad page stream"),
                    }
                });
                while readers.try_join_next().is_some() {}
            }
        })
    };
    let (src_tx, mut from_source) = tokio::sync::mpsc::channel(4);
    let source_reader = tokio::spawn(pump_frames(ctrl_rx, src_tx));
    let (help_tx, mut from_helper) = tokio::sync::mpsc::channel(4);
    let helper_reader = tokio::spawn(pump_frames(hout, help_tx));
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    let outcome: Result<(), Error> = loop {
        tokio::select! {
            m = from_source.recv() => match m {
                Some(Ok((msg, frame))) => {
                    received.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    match msg {
                        Msg::Section { .. } | Msg::Sealed { .. } | Msg::Go | Msg::Abort { .. } | Msg::Sync { .. } => {
                            if to_helper.send(frame).await.is_err() {
                                break Err(lost("the restore helper stopped".into()));
                            }
                        }
                        other => break Err(Error::Protocol(format!("unexpected {} from the source", name_of(&other)))),
                    }
                }
                Some(Err(e)) => break Err(lost(format!("the source: {e}"))),
                None => break Err(lost("the source went away".into())),
            },
            m = from_helper.recv() => match m {
                Some(Ok((msg, frame))) => {
                    let _ = ctrl.write_all(&frame).await;
                    match msg {
                        Msg::Ready { restore_ms } => report.restore_ms = restore_ms,
                        Msg::Synced => {}
                        Msg::Done => break Ok(()),
                        Msg::Failed { reason } => break Err(Error::Lost { phase: "restore", reason }),
                        other => break Err(Error::Protocol(format!("unexpected {} from the helper", name_of(&other)))),
                    }
                }
                _ => break Err(lost("the restore helper stopped".into())),
            },
            _ = stop.changed() => break Err(lost("interrupted (Ctrl-C)".into())),
            _ = tick.tick() => events(Event::Received { bytes: received.load(Ordering::Relaxed) }),
        }
    };
    // Calls off the helper unless it finished: its stdin closes.
    writer.abort();
    bulk.abort();
    source_reader.abort();
    drop(to_helper);
    let status = helper.finish().await;
    helper_reader.abort();
    report.bytes_received = received.load(Ordering::Relaxed);
    match (&outcome, status) {
        (Ok(()), Some(s)) if !s.success() => Err(Error::Protocol(format!("the restore helper exited with {s}"))),
        _ => outcome,
    }
}

/// A container the source took from an OCI runtime goes to the same
/// runtime here.
fn hand_back_if_adopted(root: &Path, name: &str) -> Result<Option<crate::runtime::oci::HandedBack>, String> {
    let root = crate::runtime::Root::open(root).map_err(|e| e.to_string())?;
    crate::runtime::oci::hand_back_if_adopted(&root, name).map_err(|e| e.to_string())
}

fn lost(reason: String) -> Error {
    Error::Lost {
        phase: "receive",
        reason,
    }
}
