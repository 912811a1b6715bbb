//! Container networking: bridged containers keep their address, MAC and
//! listening/UDP sockets across checkpoint + restore. All bridged cases
//! run in one test, one after another, on the default bridge; the bridge
//! is removed at the end when no port is left on it.
//!
//! Traffic goes only to addresses inside the containers' namespaces; each
//! request first checks that the route to the address is the bridge.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::common::*;

const BRIDGE: &str = "migrate0";

/// Removes the test bridge when dropped, if nothing uses it any more.
struct BridgeGuard;

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let ports = std::fs::read_dir(format!("/sys/class/net/{BRIDGE}/brif"))
            .map(|d| d.count())
            .unwrap_or(0);
        if ports == 0 {
            let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        }
    }
}

/// The container's address, from its state.
fn ip_of(root: &TestRoot, name: &str) -> Result<String> {
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.dir.join("containers").join(name).join("state.json"),
    )?)?;
    Ok(st["net"]["ip"].as_str().context("no ip in state")?.to_string())
}

/// Checks that `ip` is reached through the bridge before sending to it.
fn route_is_bridge(ip: &str) -> Result<()> {
    let out = Command::new("ip").args(["route", "get", ip]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains(&format!("dev {BRIDGE}")),
        "route to {ip} is not the bridge: {text}"
    );
    Ok(())
}

fn http_get(ip: &str, port: u16) -> Result<String> {
    route_is_bridge(ip)?;
    let out = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:{port}/index.html")])
        .output()?;
    ensure!(out.status.success(), "curl {ip}:{port} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn udp_echo(ip: &str, port: u16, msg: &str) -> Result<String> {
    route_is_bridge(ip)?;
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        s.send_to(msg.as_bytes(), (ip, port))?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    anyhow::bail!("no UDP answer from {ip}:{port}")
}

fn mac_inside(root: &TestRoot, name: &str) -> Result<String> {
    Ok(root
        .ok(&["exec", name, "--", "cat", "/sys/class/net/eth0/address"])?
        .trim()
        .to_string())
}

#[test]
fn bridged_containers_keep_address_mac_and_sockets() -> Result<()> {
    let _bridge = BridgeGuard;
    let root = TestRoot::new("net");
    let www = root.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello over the bridge\n")?;
    let server = format!(
        "import http.server, socket, socketserver, threading, functools\n\
         def udp():\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('0.0.0.0', 9000))\n\
         \x20   while True:\n\
         \x20       d, a = s.recvfrom(256)\n\
         \x20       s.sendto(b'echo ' + d, a)\n\
         threading.Thread(target=udp, daemon=True).start()\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='{}')\n\
         class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):\n\
         \x20   allow_reuse_address = True\n\
         \x20   daemon_threads = True\n\
         # socketserver, not http.server.HTTPServer: no getfqdn(), no DNS.\n\
         Server(('0.0.0.0', 8000), h).serve_forever()\n",
        www.display()
    );
    let script = root.dir.join("server.py");
    std::fs::write(&script, server)?;
    root.run_d(
        "web",
        &["--net", "bridge", "--mac", "02:42:0a:59:00:77"],
        &["/usr/bin/python3", script.to_str().unwrap()],
    )?;
    let ip = ip_of(&root, "web")?;
    wait_until(Duration::from_secs(10), "the HTTP server", || {
        http_get(&ip, 8000).is_ok()
    })?;
    ensure!(http_get(&ip, 8000)? == "hello over the bridge\n");
    ensure!(udp_echo(&ip, 9000, "ping")? == "echo ping");
    ensure!(mac_inside(&root, "web")? == "02:42:0a:59:00:77");
    for round in 0..2 {
        let dir = root.dir.join(format!("image-{round}"));
        root.ok(&["checkpoint", "web", "--dir", dir.to_str().unwrap()])?;
        root.ok(&["restore", "--dir", dir.to_str().unwrap()])?;
        ensure!(ip_of(&root, "web")? == ip, "address changed");
        ensure!(mac_inside(&root, "web")? == "02:42:0a:59:00:77", "MAC changed");
        ensure!(
            http_get(&ip, 8000)? == "hello over the bridge\n",
            "HTTP after restore {round}"
        );
        ensure!(udp_echo(&ip, 9000, &format!("round {round}"))? == format!("echo round {round}"));
    }

    // An established TCP connection fails the checkpoint, naming it; the
    // container keeps serving.
    route_is_bridge(&ip)?;
    let held = TcpStream::connect((ip.as_str(), 8000))?;
    std::thread::sleep(Duration::from_millis(200));
    let out = root.cmd(&["checkpoint", "web", "--dir", root.dir.join("refused").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "checkpoint with an established connection succeeded"
    );
    ensure!(
        err.contains("TCP connection") && err.contains(":8000") && err.contains("still running"),
        "{err}"
    );
    drop(held);
    ensure!(http_get(&ip, 8000)? == "hello over the bridge\n");

    root.ok(&["rm", "-f", "web"])?;
    established_tcp_survives(&root)?;
    redis_over_tcp_keeps_its_client(&root)?;
    established_tcp_migrates()?;
    failures_keep_the_connection()?;

    // Two roots: same container name, distinct veths and addresses.
    root.run_d("web", &["--net", "bridge"], &["sleep", "100"])?;
    let ip = ip_of(&root, "web")?;
    let other = TestRoot::new("net2");
    other.run_d("web", &["--net", "bridge"], &["sleep", "100"])?;
    let ip2 = ip_of(&other, "web")?;
    ensure!(ip2 != ip, "two roots got the same address {ip}");
    root.ok(&["rm", "-f", "web"])?;
    other.ok(&["rm", "-f", "web"])?;
    ensure!(
        !std::path::Path::new(&format!("/run/migrate-net/{ip}")).exists(),
        "lease left behind"
    );
    Ok(())
}

/// A client on the host exchanges numbered lines with an echo server in
/// the container; lines sent while the container is checkpointed are
/// answered after the restore, in order, on the same connection.
fn established_tcp_survives(root: &TestRoot) -> Result<()> {
    start_echo(root)?;
    let ip = ip_of(root, "echo")?;
    let (mut out, mut lines) = open_echo(&ip)?;
    let mut next = 0u32;
    exchange(&mut out, &mut lines, &mut next, 5)?;
    for round in 0..2 {
        let dir = root.dir.join(format!("tcp-image-{round}"));
        root.ok(&[
            "checkpoint",
            "echo",
            "--dir",
            dir.to_str().unwrap(),
            "--tcp-established",
        ])?;
        // Sent while the container is gone: the kernel retransmits them.
        for i in 0..3 {
            writeln!(out, "line {}", next + i)?;
        }
        let refused = root.cmd(&["restore", "--dir", dir.to_str().unwrap()]);
        ensure!(
            !refused.status.success(),
            "restore without --tcp-established accepted connections"
        );
        root.ok(&["restore", "--dir", dir.to_str().unwrap(), "--tcp-established"])?;
        expect_echoes(&mut lines, &mut next, 3).with_context(|| format!("after restore {round}"))?;
        exchange(&mut out, &mut lines, &mut next, 5)?;
    }
    root.ok(&["rm", "-f", "echo"])?;
    Ok(())
}

/// A bridged echo server with an established connection from the host is
/// live-migrated to another root and back (--tcp-established): same
/// address and MAC, the connection carries on, lines sent during the
/// migration included.
fn established_tcp_migrates() -> Result<()> {
    let pair = crate::migration::Pair::new("net-mig")?;
    start_echo(&pair.a)?;
    let ip = ip_of(&pair.a, "echo")?;
    let mac = mac_inside(&pair.a, "echo")?;
    let (mut out, mut lines) = open_echo(&ip)?;
    let mut next = 0u32;
    exchange(&mut out, &mut lines, &mut next, 5)?;
    for (from, to) in [(&pair.a, &pair.b), (&pair.b, &pair.a)] {
        // Lines go out while the migration runs; none may be lost.
        let mut writer = out.try_clone()?;
        let first = next;
        let feeder = std::thread::spawn(move || {
            for i in 0..20 {
                let _ = writeln!(writer, "line {}", first + i);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        crate::migration::migrate(from, to, "echo", &["--tcp-established"])?;
        feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))?;
        expect_echoes(&mut lines, &mut next, 20).context("after migration")?;
        ensure!(ip_of(to, "echo")? == ip, "address changed");
        ensure!(mac_inside(to, "echo")? == mac, "MAC changed");
        exchange(&mut out, &mut lines, &mut next, 5)?;
        wait_beats(to, "echo", 3)?;
    }
    pair.a.ok(&["rm", "-f", "echo"])?;
    ensure!(
        !std::path::Path::new(&format!("/run/migrate-net/{ip}")).exists(),
        "lease left behind"
    );
    Ok(())
}

/// Whether the host side of a container's veth is up.
fn host_link_up(root: &TestRoot, name: &str) -> Result<bool> {
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.dir.join("containers").join(name).join("state.json"),
    )?)?;
    let veth = st["net"]["host_veth"].as_str().context("no veth in state")?;
    let flags = std::fs::read_to_string(format!("/sys/class/net/{veth}/flags"))?;
    Ok(u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)? & 1 == 1)
}

/// A checkpoint or a migration with --tcp-established that fails at any
/// step (MIGRATE_FAIL_AT) leaves the bridged container's connection
/// working (out of repair mode, its link up) and the destination without
/// a veth or a lease.
fn failures_keep_the_connection() -> Result<()> {
    let pair = crate::migration::Pair::new("net-fault")?;
    start_echo(&pair.a)?;
    let ip = ip_of(&pair.a, "echo")?;
    let (mut out, mut lines) = open_echo(&ip)?;
    let mut next = 0u32;
    exchange(&mut out, &mut lines, &mut next, 3)?;
    let dir = pair.a.dir.join("image");
    for step in [
        "checkpoint:after-files",
        "checkpoint:dump-process:1",
        "checkpoint:after-seal",
    ] {
        let args = [
            "checkpoint",
            "echo",
            "--dir",
            dir.to_str().unwrap(),
            "--tcp-established",
        ];
        let res = pair.a.cmd_env(&[("MIGRATE_FAIL_AT", step)], &args);
        ensure!(!res.status.success(), "checkpoint failing at {step} succeeded");
        ensure!(host_link_up(&pair.a, "echo")?, "at {step}: the link stayed down");
        exchange(&mut out, &mut lines, &mut next, 3).with_context(|| format!("after a failure at {step}"))?;
    }
    for (step, on_sender) in [("send:before-commit", true), ("recv:before-resume", false)] {
        let env = [("MIGRATE_FAIL_AT", step)];
        let none: [(&str, &str); 0] = [];
        let recv_env: &[(&str, &str)] = if on_sender { &none } else { &env };
        let send_env: &[(&str, &str)] = if on_sender { &env } else { &none };
        let links_before = veths();
        let mut recv = crate::migration::Receiver::start_env(&pair.b, "127.0.0.1", true, None, recv_env)?;
        let res = pair
            .a
            .cmd_env(send_env, &["send", "echo", &recv.addr, "--tcp-established"]);
        ensure!(!res.status.success(), "migration failing at {step} succeeded");
        let _ = recv.wait(Duration::from_secs(30));
        ensure!(pair.a.status("echo")? == "running", "at {step}");
        ensure!(host_link_up(&pair.a, "echo")?, "at {step}: the link stayed down");
        exchange(&mut out, &mut lines, &mut next, 3).with_context(|| format!("after a failure at {step}"))?;
        crate::migration::nothing_left(&pair.b, "echo")?;
        wait_until(Duration::from_secs(10), "the destination's veth to go", || {
            veths() == links_before
        })
        .with_context(|| format!("at {step}: veths {links_before:?} became {:?}", veths()))?;
    }
    pair.a.ok(&["rm", "-f", "echo"])?;
    Ok(())
}

/// The host ends of containers' veths (migrate names them mg...).
fn veths() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("mg"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A bridged container "echo": a Python server on port 7000 that echoes
/// each line back, and prints a heartbeat.
fn start_echo(root: &TestRoot) -> Result<()> {
    let script = root.dir.join("echo.py");
    std::fs::write(
        &script,
        "import socket, threading, time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', 7000)); s.listen(5)\n\
         def serve(c):\n\
         \x20   f = c.makefile('rb')\n\
         \x20   for line in f:\n\
         \x20       c.sendall(b'echo ' + line)\n\
         def beat():\n\
         \x20   i = 0\n\
         \x20   while True:\n\
         \x20       i += 1; print(f'beat {i}', flush=True); time.sleep(0.1)\n\
         threading.Thread(target=beat, daemon=True).start()\n\
         while True:\n\
         \x20   c, a = s.accept()\n\
         \x20   threading.Thread(target=serve, args=(c,), daemon=True).start()\n",
    )?;
    root.run_d(
        "echo",
        &["--net", "bridge"],
        &["/usr/bin/python3", script.to_str().unwrap()],
    )?;
    Ok(())
}

/// A connection to the echo server: a writer and a line reader.
fn open_echo(ip: &str) -> Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = connect_retrying(ip, 7000)?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    Ok((stream.try_clone()?, BufReader::new(stream)))
}

/// Connects to a server in a container, retrying for up to 10 s while it
/// starts.
fn connect_retrying(ip: &str, port: u16) -> Result<TcpStream> {
    route_is_bridge(ip)?;
    let mut tries = 0;
    loop {
        match TcpStream::connect((ip, port)) {
            Ok(s) => return Ok(s),
            Err(_) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the echoes of `count` numbered lines, from `next` on.
fn expect_echoes(lines: &mut BufReader<TcpStream>, next: &mut u32, count: u32) -> Result<()> {
    for _ in 0..count {
        let mut l = String::new();
        lines.read_line(&mut l)?;
        ensure!(l == format!("echo line {next}\n"), "got {l:?}, want line {next}");
        *next += 1;
    }
    Ok(())
}

/// Sends `count` numbered lines, then reads their echoes in order.
fn exchange(out: &mut TcpStream, lines: &mut BufReader<TcpStream>, next: &mut u32, count: u32) -> Result<()> {
    for i in 0..count {
        writeln!(out, "line {}", *next + i)?;
    }
    expect_echoes(lines, next, count)
}

/// One RESP command on an open connection; returns the first reply line.
fn resp(conn: &mut TcpStream, reader: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String> {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd += &format!("${}\r\n{a}\r\n", a.len());
    }
    conn.write_all(cmd.as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.starts_with('$') && !line.starts_with("$-1") {
        line.clear();
        reader.read_line(&mut line)?;
    }
    Ok(line.trim().to_string())
}

/// redis-server on TCP in a bridged container keeps a client connection
/// open across checkpoint + restore.
fn redis_over_tcp_keeps_its_client(root: &TestRoot) -> Result<()> {
    root.run_d(
        "redis",
        &["--net", "bridge", "--init"],
        &[
            "redis-server",
            "--port",
            "6379",
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )?;
    let ip = ip_of(root, "redis")?;
    let mut conn = connect_retrying(&ip, 6379)?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    ensure!(resp(&mut conn, &mut reader, &["PING"])? == "+PONG");
    ensure!(resp(&mut conn, &mut reader, &["SET", "k", "before"])? == "+OK");
    let dir = root.dir.join("redis-image");
    root.ok(&[
        "checkpoint",
        "redis",
        "--dir",
        dir.to_str().unwrap(),
        "--tcp-established",
    ])?;
    root.ok(&["restore", "--dir", dir.to_str().unwrap(), "--tcp-established"])?;
    ensure!(
        resp(&mut conn, &mut reader, &["GET", "k"])? == "before",
        "value after restore"
    );
    ensure!(
        resp(&mut conn, &mut reader, &["SET", "k", "after"])? == "+OK",
        "write on the same connection"
    );
    ensure!(resp(&mut conn, &mut reader, &["GET", "k"])? == "after");
    root.ok(&["rm", "-f", "redis"])?;
    Ok(())
}
