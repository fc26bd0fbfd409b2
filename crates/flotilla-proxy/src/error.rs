//! Why the proxy could not start.

use std::net::SocketAddr;

/// Why [`Proxy::start`](crate::Proxy::start) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// An Ingress listener could not be bound.
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be made.
    #[error("configuring TLS")]
    Tls {
        #[source]
        source: rustls::Error,
    },
    /// The proxy's metrics could not be registered (their names are taken in the
    /// registry of [`ProxyConfig::metrics`](crate::ProxyConfig::metrics)).
    #[error("registering the proxy's metrics")]
    Metrics(#[source] prometheus::Error),
}

pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
