//! The loopback QUIC limit for `migrate-tests/bench`: the same crates and
//! TLS setup as `migrate send`/`recv` (quinn, rustls, pinned mutual TLS),
//! each side on its own thread with a current-thread runtime as in the
//! product, moving page-sized streams (4 MiB each, 8 in flight).
//!
//! usage: quic_throughput MiB   -> prints "quic_gbps X"

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use migrate::transport::{identity, tls};

const STREAM: usize = 4 << 20;

fn main() -> Result<()> {
    let mib: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(512);
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let cert_a = identity::ensure(&a)?.cert;
    let cert_b = identity::ensure(&b)?.cert;
    let server = tls::server_config(&b, tls::trusted(&b, &[cert_a])?)?;
    let client = tls::client_config(&a, tls::trusted(&a, &[cert_b])?)?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = socket.local_addr()?;
    drop(socket);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || -> Result<u64> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let endpoint = quinn::Endpoint::server(server, addr)?;
            ready_tx.send(())?;
            let conn = endpoint.accept().await.context("no connection")?.await?;
            let mut total = 0u64;
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok(mut s) = conn.accept_uni().await {
                tasks.spawn(async move { s.read_to_end(STREAM + 1).await.map(|v| v.len() as u64) });
                while let Some(r) = tasks.try_join_next() {
                    total += r??;
                }
            }
            while let Some(r) = tasks.join_next().await {
                total += r.unwrap_or(Ok(0)).unwrap_or(0);
            }
            Ok(total)
        })
    });
    ready_rx.recv()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let streams = mib * (1 << 20) / STREAM;
    let elapsed = rt.block_on(async move {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let conn = endpoint.connect_with(client, addr, "migrate")?.await?;
        let data = Arc::new(vec![0x5au8; STREAM]);
        let permits = Arc::new(tokio::sync::Semaphore::new(8));
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..streams {
            let permit = permits.clone().acquire_owned().await?;
            let (conn, data) = (conn.clone(), data.clone());
            tasks.spawn(async move {
                let mut s = conn.open_uni().await?;
                s.write_all(&data).await?;
                s.finish()?;
                s.stopped().await?;
                drop(permit);
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let elapsed = t.elapsed();
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        anyhow::Ok(elapsed)
    })?;
    let got = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    anyhow::ensure!(got == (streams * STREAM) as u64, "received {got} bytes");
    println!("quic_gbps {:.3}", got as f64 / elapsed.as_secs_f64() / 1e9);
    Ok(())
}
