//! Serving HTTP on a TCP listener within bounds, written once for every listener of the
//! process (the API server, the kubelet API, the Ingress, NodePort and LoadBalancer
//! listeners): [`ConnectionLimits`] says how long a client may take and how many
//! connections it may hold, [`HttpServer`] accepts and serves within them.
//!
//! - At most [`ConnectionLimits::max_connections`] connections are open on a listener;
//!   past it the listener stops accepting (new connections wait in the kernel's backlog)
//!   until one closes.
//! - A TLS handshake must finish within [`ConnectionLimits::tls_handshake_timeout`].
//! - The first request's headers must arrive within
//!   [`ConnectionLimits::header_read_timeout`] (and, on HTTP/1.1, each later request's,
//!   through hyper's own timer); a client that connects and sends nothing, or half a
//!   header, is disconnected.
//! - A connection with no request in flight (a response body still streaming, such as a
//!   watch, counts as in flight) is closed after [`ConnectionLimits::idle_timeout`], on
//!   HTTP/1.1 and HTTP/2 alike; HTTP/2 connections are also pinged, and closed when a
//!   ping goes unanswered.
//! - Each request's handler runs under [`Supervisor::catch`]: a panic answers 500 with a
//!   `Status` body instead of dropping the connection, and is counted.

use crate::supervise::Supervisor;
use crate::{Body, full_body};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

/// How long a client of a listener may take, and how many connections it may hold. The
/// defaults are kube-apiserver's where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to finish the TLS handshake (10 s, Go's
    /// `TLSHandshakeTimeout`).
    pub tls_handshake_timeout: Duration,
    /// How long a client may take to send a request's headers (32 s, kube-apiserver's
    /// `ReadHeaderTimeout`).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight (90 s,
    /// kube-apiserver's `IdleTimeout` for HTTP/1.1 and HTTP/2).
    pub idle_timeout: Duration,
    /// How often an HTTP/2 connection is pinged, and how long its answer may take: a
    /// peer that does not answer is disconnected.
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    /// HTTP/2 streams (requests) at once on one connection (250, kube-apiserver's
    /// `MaxConcurrentStreams`).
    pub http2_max_concurrent_streams: u32,
    /// Connections open at once on one listener; past it the listener stops accepting
    /// until one closes.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 250,
            max_connections: 4096,
        }
    }
}

/// Serves connections within [`ConnectionLimits`], one hyper service (HTTP/1.1 and
/// HTTP/2) for every connection of a listener.
#[derive(Debug, Clone)]
pub struct HttpServer {
    limits: ConnectionLimits,
    http: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    supervisor: Supervisor,
    task: &'static str,
}

impl HttpServer {
    /// A server within `limits`, counting its handlers' panics in `supervisor` as panics
    /// of `task` (a static name: it is a metric label).
    pub fn new(limits: ConnectionLimits, supervisor: Supervisor, task: &'static str) -> Self {
        let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        http.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keep_alive_interval)
            .keep_alive_timeout(limits.http2_keep_alive_timeout)
            .max_concurrent_streams(limits.http2_max_concurrent_streams);
        HttpServer { limits, http, supervisor, task }
    }

    /// The largest request head accepted (HTTP/1.1: the read buffer, 431 past it; HTTP/2:
    /// the header list size). hyper's minimum is 8 KiB.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.http.http1().max_buf_size(bytes.max(8192));
        self.http.http2().max_header_list_size(u32::try_from(bytes).unwrap_or(u32::MAX));
        self
    }

    /// The limits it serves within.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Accepts connections on `listener` (shared, so that a restarted accept loop takes it
    /// up again; with TLS when `tls` is given) and serves each
    /// request with `handler(peer, request)`, until dropped or aborted; dropping it closes
    /// its connections too.
    pub async fn serve<H, F>(self, listener: Arc<TcpListener>, tls: Option<tokio_rustls::TlsAcceptor>, handler: H)
    where
        H: Fn(SocketAddr, Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let server = Arc::new(self);
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(server.limits.max_connections.max(1)));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = accept(&listener, &slots) => match accepted {
                    Ok((stream, peer, slot)) => {
                        let connection = server.clone().connection(stream, peer, tls.clone(), handler.clone(), slot);
                        connections.spawn(connection.in_current_span());
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = joined
                        && error.is_panic()
                    {
                        server.supervisor.panicked(server.task, error.into_panic().as_ref());
                    }
                }
            }
        }
    }

    /// Serves one connection; `_slot` is its place under the connection cap.
    async fn connection<H, F>(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: Arc<H>,
        _slot: OwnedSemaphorePermit,
    ) where
        H: Fn(SocketAddr, Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let (supervisor, task, for_requests) = (self.supervisor.clone(), self.task, activity.clone());
        let service = hyper::service::service_fn(move |request| {
            let in_flight = for_requests.start();
            let supervisor = supervisor.clone();
            let response = handler(peer, request);
            async move {
                let response = supervisor.catch(task, response).await.unwrap_or_else(internal_error);
                Ok::<_, Infallible>(response.map(|body| hold_until_done(body, in_flight)))
            }
        });
        let limits = self.limits;
        let idle = activity.idle(limits.header_read_timeout, limits.idle_timeout);
        let served = match tls {
            Some(acceptor) => match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let connection = self.http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        served = connection => served,
                        () = idle => Ok(()),
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            None => {
                let connection = self.http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::select! {
                    served = connection => served,
                    () = idle => Ok(()),
                }
            }
        };
        if let Err(error) = served {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// A connection slot, then a connection (cancel safe: a slot taken and dropped is given
/// back, and an accepted connection is only returned).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let Ok(slot) = slots.clone().acquire_owned().await else {
        // The semaphore is never closed.
        return std::future::pending().await;
    };
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, slot))
}

/// A 500 with a `Status` body, for a handler that panicked.
fn internal_error() -> Response<Body> {
    let error = flotilla_api::ApiError::internal("an internal error occurred while serving the request");
    let body = serde_json::to_vec(&error.to_status()).unwrap_or_default();
    let mut response = Response::new(full_body(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// `body`, keeping `guard` alive until the body is sent or dropped: what holds a request's
/// place (in flight on its connection, under an in-flight cap) while its response streams.
pub fn hold_until_done<G: Send + 'static>(body: Body, guard: G) -> Body {
    body.map_frame(move |frame| {
        let _ = &guard;
        frame
    })
    .boxed_unsync()
}

/// The requests in flight on one connection, and how many have started.
#[derive(Debug)]
struct Activity(watch::Sender<(usize, u64)>);

impl Default for Activity {
    fn default() -> Self {
        Activity(watch::Sender::new((0, 0)))
    }
}

/// One request in flight on its connection, until dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.send_modify(|(in_flight, _)| *in_flight = in_flight.saturating_sub(1));
    }
}

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.0.send_modify(|(in_flight, started)| {
            *in_flight += 1;
            *started += 1;
        });
        InFlight(self.clone())
    }

    /// Ends when the connection has had no request in flight for `first` before its first
    /// request, or for `idle` after a later one.
    async fn idle(&self, first: Duration, idle: Duration) {
        let mut seen = self.0.subscribe();
        let mut wait = first;
        loop {
            let started = seen.borrow_and_update().1;
            if seen.borrow().0 == 0 {
                let next = seen.wait_for(|(in_flight, now)| *in_flight > 0 || *now != started);
                if tokio::time::timeout(wait, next).await.is_err() {
                    return;
                }
            }
            // `self` holds the sender: waiting cannot fail.
            let _ = seen.wait_for(|(in_flight, _)| *in_flight == 0).await;
            wait = idle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_flight() {
        let activity = Arc::new(Activity::default());
        let started = tokio::time::Instant::now();
        activity.idle(Duration::from_secs(5), Duration::from_secs(60)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5), "no first request");

        let activity = Arc::new(Activity::default());
        let request = activity.start();
        let idle = activity.idle(Duration::from_secs(5), Duration::from_secs(60));
        tokio::pin!(idle);
        let started = tokio::time::Instant::now();
        tokio::select! {
            () = &mut idle => panic!("idle with a request in flight"),
            () = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
        drop(request);
        idle.await;
        assert_eq!(started.elapsed(), Duration::from_secs(660), "idle 60 s after the request");
    }
}
