//! The crate's top-level error: one variant per module, each carrying that
//! module's own context. Its Display is the one line a user sees.

use crate::{cgroup, engine, image, runtime};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Identity(#[from] crate::transport::identity::Error),
    #[error(transparent)]
    Transport(#[from] crate::transport::Error),
    #[error(transparent)]
    Oci(#[from] crate::runtime::oci::Error),
    #[error(transparent)]
    Swrk(#[from] crate::runtime::swrk::Error),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::Error),
    #[error("{0}")]
    Usage(String),
    #[error("demo failed: {0}")]
    Demo(String),
}

pub type Result<T> = std::result::Result<T, Error>;
