//! Mutual TLS 1.3 with pinned certificates: each side accepts exactly the
//! peer certificates it was given (by file, or in ROOT/trusted/), and
//! proves its own identity with its key. No certificate authorities, no
//! names: a peer is who its pinned certificate says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::{self, Identity};
use super::wire::ALPN;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate {path}: not a PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("no trusted peer: give the peer's certificate with --peer-cert FILE or put it in {dir}")]
    NoPeers { dir: PathBuf },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error(transparent)]
    Identity(#[from] identity::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The certificates in a PEM file (one or more).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<_> = pem::parse_many(&text)
        .map_err(|_| Error::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        })?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The peers this root trusts: the files given, and every file in
/// ROOT/trusted/.
pub fn trusted(root: &Path, given: &[PathBuf]) -> Result<Vec<CertificateDer<'static>>> {
    let dir = root.join("trusted");
    let mut files: Vec<PathBuf> = given.to_vec();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        found.sort();
        files.extend(found);
    }
    let mut out = Vec::new();
    for f in files {
        out.extend(read_certs(&f)?);
    }
    if out.is_empty() {
        return Err(Error::NoPeers { dir });
    }
    Ok(out)
}

/// This root's certificate and key.
fn own(root: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let id: Identity = identity::ensure(root)?;
    let certs = read_certs(&id.cert)?;
    let text = std::fs::read(&id.key).map_err(|source| Error::Io {
        path: id.key.clone(),
        source,
    })?;
    let key = pem::parse(text)
        .ok()
        .filter(|p| p.tag() == "PRIVATE KEY")
        .ok_or_else(|| Error::Pem {
            path: id.key.clone(),
            what: "PKCS#8 private key",
        })?;
    Ok((
        certs,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.into_contents())),
    ))
}

/// Accepts exactly the pinned certificates.
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, end_entity: &CertificateDer<'_>) -> std::result::Result<(), rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

/// Timeouts and flow-control windows sized for bulk page transfer.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // A peer that vanished (killed, link down) is given up after 5 s of
    // silence; keep-alives make silence mean exactly that.
    t.max_idle_timeout(Some(
        Duration::from_secs(5).try_into().expect("5 s is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_concurrent_uni_streams(64u32.into());
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((128u32 << 20).into());
    t.send_window(128 << 20);
    Arc::new(t)
}

/// The receiver's QUIC configuration: its identity, and only `peers` as
/// clients.
pub fn server_config(root: &Path, peers: Vec<CertificateDer<'static>>) -> Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certs, key) = own(root)?;
    let verifier = Arc::new(Pinned {
        certs: peers,
        provider: provider.clone(),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The sender's QUIC configuration: its identity, and only `peers` as
/// servers.
pub fn client_config(root: &Path, peers: Vec<CertificateDer<'static>>) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certs, key) = own(root)?;
    let verifier = Arc::new(Pinned {
        certs: peers,
        provider: provider.clone(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}
