//! A root's identity: a key pair and a self-signed certificate made with
//! rcgen on first use, kept in ROOT/identity (the key with mode 0600).
//! Peers pin each other's certificates; the SHA-256 fingerprint of the
//! certificate (DER) is what a person compares.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("identity {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity: generate the certificate: {0}")]
    Generate(String),
    #[error("identity {path}: not a PEM certificate: {reason}; remove the directory to make a new identity")]
    BadCert { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// This root's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate's DER, as colon-separated hex.
    pub fingerprint: String,
}

/// The fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The identity of the root at `root`, made on first use.
pub fn ensure(root: &Path) -> Result<Identity> {
    let dir = root.join("identity");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let made = rcgen::generate_simple_self_signed(vec![format!("migrate-{host}"), "migrate".into()])
            .map_err(|e| Error::Generate(e.to_string()))?;
        // The key first, never readable by others, then the certificate:
        // a certificate without its key is never left behind.
        let tmp_key = dir.join(".key.pem.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp_key)
            .map_err(io(&tmp_key))?;
        f.write_all(made.signing_key.serialize_pem().as_bytes())
            .map_err(io(&tmp_key))?;
        std::fs::rename(&tmp_key, &key).map_err(io(&key))?;
        let tmp_cert = dir.join(".cert.pem.tmp");
        std::fs::write(&tmp_cert, made.cert.pem()).map_err(io(&tmp_cert))?;
        std::fs::rename(&tmp_cert, &cert).map_err(io(&cert))?;
    }
    let text = std::fs::read_to_string(&cert).map_err(io(&cert))?;
    let parsed = pem::parse(text).map_err(|e| Error::BadCert {
        path: cert.clone(),
        reason: e.to_string(),
    })?;
    Ok(Identity {
        fingerprint: fingerprint(parsed.contents()),
        cert,
        key,
    })
}
