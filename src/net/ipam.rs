//! Host-wide address leases for bridged containers: one file per leased
//! address under /run/migrate-net, created with O_EXCL, holding the state
//! file of the container that has it. A lease whose container record is
//! gone is stale and reclaimed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::{Error, BRIDGE_ADDR};

const LEASES: &str = "/run/migrate-net";

fn lease_path(ip: Ipv4Addr) -> PathBuf {
    Path::new(LEASES).join(ip.to_string())
}

/// Takes `ip` for the container whose state file is `owner`. Fails if a
/// live lease of another container holds it.
pub fn take(ip: Ipv4Addr, owner: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(LEASES).map_err(|source| Error::Io {
        op: "lease directory",
        source,
    })?;
    let path = lease_path(ip);
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(owner.as_os_str().as_encoded_bytes())
                    .map_err(|source| Error::Io {
                        op: "write lease",
                        source,
                    })?;
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                if Path::new(&holder) == owner {
                    return Ok(());
                }
                if !holder.is_empty() && Path::new(&holder).exists() {
                    return Err(Error::Config(format!(
                        "address {ip} is in use by the container at {holder}"
                    )));
                }
                // Stale: its container is gone.
                let _ = std::fs::remove_file(&path);
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "take lease",
                    source,
                })
            }
        }
    }
    Err(Error::Config(format!("could not lease {ip}")))
}

/// The first free address of the bridge's /24, leased to `owner`.
pub fn allocate(owner: &Path) -> Result<Ipv4Addr, Error> {
    let base = BRIDGE_ADDR.octets();
    for host in 2..255u8 {
        let ip = Ipv4Addr::new(base[0], base[1], base[2], host);
        if take(ip, owner).is_ok() {
            return Ok(ip);
        }
    }
    Err(Error::Exhausted(format!("{BRIDGE_ADDR}/24")))
}

/// Moves the lease on `ip` from `from` to `to`, if `from` holds it.
/// Returns whether `to` holds it now.
pub fn take_over(ip: Ipv4Addr, from: &Path, to: &Path) -> bool {
    let path = lease_path(ip);
    let holder = std::fs::read_to_string(&path).unwrap_or_default();
    if Path::new(&holder) == to {
        return true;
    }
    if Path::new(&holder) != from {
        return false;
    }
    let tmp = path.with_extension("moving");
    std::fs::write(&tmp, to.as_os_str().as_encoded_bytes()).is_ok() && std::fs::rename(&tmp, &path).is_ok()
}

/// Gives `ip` back, if `owner` holds it.
pub fn release(ip: Ipv4Addr, owner: &Path) {
    let path = lease_path(ip);
    if std::fs::read_to_string(&path)
        .map(|h| Path::new(&h) == owner)
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(path);
    }
}
