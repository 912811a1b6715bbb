//! Network interfaces of a container's network namespace, through netlink
//! (rtnetlink): loopback, and bridged containers (a veth pair, the host end
//! on a bridge, the container end `eth0` with its address, MAC and default
//! route). Addresses are leased host-wide, so that two roots sharing the
//! bridge never hand out the same one.

pub mod ipam;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

/// Errors of the network module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink: {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace of process {pid}: {source}")]
    Netns {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("no free address left in {0}; remove a bridged container or pass --ip")]
    Exhausted(String),
}

type Result<T> = std::result::Result<T, Error>;

/// The default bridge and its address.
pub const DEFAULT_BRIDGE: &str = "migrate0";
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
pub const BRIDGE_PREFIX: u8 = 24;

/// A bridged container's network, as recorded in its state and image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub bridge: String,
    /// Host end of the veth pair.
    pub host_veth: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> std::result::Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("{s:?} is not a MAC address (like 02:42:0a:59:00:05)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s} is a multicast address; use a unicast one (first byte even)"
        ));
    }
    Ok(mac)
}

pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses "10.89.0.5/24" (or a bare address: /24).
pub fn parse_cidr(s: &str) -> std::result::Result<(Ipv4Addr, u8), String> {
    let (a, p) = s.split_once('/').unwrap_or((s, "24"));
    let ip: Ipv4Addr = a.parse().map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{s:?}: bad prefix length"))?;
    Ok((ip, prefix))
}

/// A locally administered MAC derived from the address (stable, unique
/// per address).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The host-side veth name for container `name` of the root tagged `tag`:
/// at most 15 characters, distinct across roots.
pub fn host_veth_name(root_tag: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in root_tag.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("mg{:011x}", h & 0xfff_ffff_ffff)
}

/// Runs a netlink conversation on a private single-threaded tokio runtime.
/// Used from processes that must stay single-threaded afterwards (a
/// container's init before exec): the runtime and its socket are gone when
/// this returns.
fn with_handle<F, Fut, T>(op: &'static str, f: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| Error::Io { op, source })?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Io { op, source })?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

/// Like [`with_handle`], in the network namespace of process `pid`, from a
/// helper thread (setns(CLONE_NEWNET) changes only the calling thread).
fn in_netns<F, Fut, T>(pid: i32, op: &'static str, f: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>>,
    T: Send,
{
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|source| Error::Netns { pid, source })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netns { pid, source: e.into() })?;
            with_handle(op, f)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Config(format!("{op}: helper thread panicked"))))
    })
}

fn nl(op: &str) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
    move |source| Error::Netlink {
        op: op.to_string(),
        source,
    }
}

/// Sets the loopback interface of the calling process's network namespace
/// up. `lo` is always interface index 1 in a namespace.
pub fn loopback_up() -> Result<()> {
    with_handle("set lo up", |handle| async move {
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(nl("set lo up"))
    })
}

async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl("find link")(e)),
    }
}

/// Makes the bridge (with its address) if it does not exist, and sets it up.
pub fn ensure_bridge(name: &str) -> Result<()> {
    let name = name.to_string();
    with_handle("bridge", |handle| async move {
        let index = match link_index(&handle, &name).await? {
            Some(i) => i,
            None => {
                handle
                    .link()
                    .add(rtnetlink::LinkBridge::new(&name).build())
                    .execute()
                    .await
                    .map_err(nl("add bridge"))?;
                let i = link_index(&handle, &name)
                    .await?
                    .ok_or_else(|| Error::Config(format!("bridge {name} vanished")))?;
                handle
                    .address()
                    .add(i, IpAddr::V4(BRIDGE_ADDR), BRIDGE_PREFIX)
                    .execute()
                    .await
                    .map_err(nl("address the bridge"))?;
                i
            }
        };
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("set bridge up"))
    })
}

/// Connects the network namespace of process `pid` to the bridge: a veth
/// pair, the host end on the bridge, the other end `eth0` inside, with the
/// configured MAC, MTU, address and default route.
pub fn attach(cfg: &NetConfig, pid: i32) -> Result<()> {
    ensure_bridge(&cfg.bridge)?;
    let c = cfg.clone();
    let peer = format!("{}p", &cfg.host_veth[..cfg.host_veth.len().min(14)]);
    let peer2 = peer.clone();
    with_handle("veth", |handle| async move {
        if let Some(old) = link_index(&handle, &c.host_veth).await? {
            // A leftover from a container that is gone.
            let _ = handle.link().del(old).execute().await;
        }
        handle
            .link()
            .add(rtnetlink::LinkVeth::new(&c.host_veth, &peer2).build())
            .execute()
            .await
            .map_err(nl("add veth"))?;
        let bridge = link_index(&handle, &c.bridge)
            .await?
            .ok_or_else(|| Error::Config(format!("no bridge {}", c.bridge)))?;
        let host = link_index(&handle, &c.host_veth)
            .await?
            .ok_or_else(|| Error::Config("veth vanished".into()))?;
        let inside = link_index(&handle, &peer2)
            .await?
            .ok_or_else(|| Error::Config("veth peer vanished".into()))?;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(host)
                    .controller(bridge)
                    .mtu(c.mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("attach veth to the bridge"))?;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(inside)
                    .setns_by_pid(pid as u32)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("move veth into the container"))
    })?;
    let c = cfg.clone();
    in_netns(pid, "configure eth0", |handle| async move {
        let i = link_index(&handle, &peer)
            .await?
            .ok_or_else(|| Error::Config("veth peer not in the container".into()))?;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(i)
                    .name("eth0")
                    .address(c.mac.to_vec())
                    .mtu(c.mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("configure eth0"))?;
        handle
            .address()
            .add(i, IpAddr::V4(c.ip), c.prefix)
            .execute()
            .await
            .map_err(nl("address eth0"))?;
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(c.gateway)
            .build();
        handle.route().add(route).execute().await.map_err(nl("default route"))
    })
}

/// Removes the host end of a container's veth pair (the other end goes
/// with it). Missing is fine.
pub fn detach(cfg: &NetConfig) -> Result<()> {
    let name = cfg.host_veth.clone();
    with_handle("remove veth", |handle| async move {
        if let Some(i) = link_index(&handle, &name).await? {
            let _ = handle.link().del(i).execute().await;
        }
        Ok(())
    })
}

/// Sets the host end of a container's veth pair down (no traffic reaches
/// the container) or up again.
pub fn set_host_link(cfg: &NetConfig, up: bool) -> Result<()> {
    let name = cfg.host_veth.clone();
    with_handle("host veth", |handle| async move {
        let Some(i) = link_index(&handle, &name).await? else {
            return Ok(());
        };
        let b = rtnetlink::LinkUnspec::new_with_index(i);
        let msg = if up { b.up() } else { b.down() }.build();
        handle.link().set(msg).execute().await.map_err(nl("set host veth"))
    })
}

/// Per-namespace sysctls always carried across a checkpoint (images of
/// earlier builds hold these only).
pub const SYSCTLS: [&str; 4] = [
    "net/core/somaxconn",
    "net/ipv4/ip_forward",
    "net/ipv4/tcp_keepalive_time",
    "net/ipv4/ip_local_port_range",
];

/// The directories of /proc/sys/net whose entries are per interface (not
/// carried yet: issue 16).
const PER_INTERFACE: [&str; 4] = ["net/ipv4/conf", "net/ipv6/conf", "net/ipv4/neigh", "net/ipv6/neigh"];

/// Whether `key` names a sysctl a checkpoint may carry: one of the network
/// namespace's own under /proc/sys/net, outside the per-interface
/// directories, by a plain relative path. (A restore writes each under
/// /proc/sys as root: a global one would be the host's.)
pub fn is_carried_sysctl(key: &str) -> bool {
    let plain = key.split('/').all(|c| {
        !c.is_empty() && c != "." && c != ".." && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    });
    plain && key.starts_with("net/") && !PER_INTERFACE.iter().any(|d| key.starts_with(&format!("{d}/")))
}

/// Every readable and writable sysctl of the calling thread's network
/// namespace that [`is_carried_sysctl`] allows, with its value.
fn namespace_sysctls() -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut dirs = vec![String::from("net")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(Path::new("/proc/sys").join(&dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let key = format!("{dir}/{}", e.file_name().to_string_lossy());
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if !PER_INTERFACE.contains(&key.as_str()) {
                    dirs.push(key);
                }
            } else if meta.permissions().mode() & 0o200 != 0 && is_carried_sysctl(&key) {
                // Write-only entries (route/flush) do not read.
                if let Ok(v) = std::fs::read_to_string(e.path()) {
                    out.insert(key, v.trim().to_string());
                }
            }
        }
    }
    out
}

/// The network namespace sysctls of process `pid` that a restore sets
/// again: those that differ from a new namespace's on this machine (the
/// container or its program tuned them), and [`SYSCTLS`].
pub fn read_sysctls(pid: i32) -> Result<Vec<(String, String)>> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|source| Error::Netns { pid, source })?;
    std::thread::scope(|s| {
        let container = s.spawn(|| -> Result<BTreeMap<String, String>> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netns { pid, source: e.into() })?;
            // Sysctls under /proc/sys/net follow the opener's namespace.
            Ok(namespace_sysctls())
        });
        let fresh = s.spawn(|| -> Result<BTreeMap<String, String>> {
            // A namespace of this thread's own, gone when it ends.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netns { pid, source: e.into() })?;
            Ok(namespace_sysctls())
        });
        let panicked = || Error::Config("sysctl thread panicked".into());
        let container = container.join().map_err(|_| panicked())??;
        let fresh = fresh.join().map_err(|_| panicked())??;
        Ok(container
            .into_iter()
            .filter(|(k, v)| SYSCTLS.contains(&k.as_str()) || fresh.get(k) != Some(v))
            .collect())
    })
}

/// Writes namespace sysctls in the calling process's own namespace, each
/// only if it differs from what the namespace holds.
pub fn write_sysctls(values: &[(String, String)]) -> std::result::Result<(), String> {
    for (k, v) in values {
        let path = Path::new("/proc/sys").join(k);
        let now = std::fs::read_to_string(&path).map_err(|e| format!("read sysctl {k}: {e}"))?;
        if now.split_whitespace().ne(v.split_whitespace()) {
            std::fs::write(&path, v).map_err(|e| format!("set sysctl {k} to {v}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(parse_mac("02:42:0a:59:00:05").unwrap(), [2, 0x42, 10, 0x59, 0, 5]);
        assert!(parse_mac("01:00:00:00:00:00").is_err());
        assert!(parse_mac("zz").is_err());
        assert_eq!(format_mac(&[2, 0x42, 10, 0x59, 0, 5]), "02:42:0a:59:00:05");
        assert_eq!(parse_cidr("10.89.0.7/24").unwrap(), (Ipv4Addr::new(10, 89, 0, 7), 24));
        assert_eq!(parse_cidr("10.89.0.7").unwrap().1, 24);
        assert!(parse_cidr("10.89.0.7/33").is_err());
    }

    #[test]
    fn veth_names_fit_and_differ() {
        let a = host_veth_name("rootA", "web");
        let b = host_veth_name("rootB", "web");
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
    }
}
