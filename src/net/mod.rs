//! Network interfaces of a container's network namespace, through netlink
//! (rtnetlink). Today: bringing loopback up in a fresh namespace.

/// Errors of the network module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink: {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, Error>;

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

/// Sets the loopback interface of the calling process's network namespace
/// up. `lo` is always interface index 1 in a namespace.
pub fn loopback_up() -> Result<()> {
    with_handle("set lo up", |handle| async move {
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                op: "set lo up",
                source,
            })
    })
}
