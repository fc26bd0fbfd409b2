//! Errors of starting and running the API server (request failures are `ApiError`s).

use std::path::PathBuf;

/// What can stop the API server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file under the data directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Making or loading the certificates failed.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server's metrics could not be registered (their names are taken in the
    /// registry given).
    #[error("registering the API server's metrics")]
    Metrics(#[source] prometheus::Error),
    /// The store failed while bootstrapping.
    #[error("the store failed")]
    Store(#[from] flotilla_store::Error),
}

/// The API server's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
