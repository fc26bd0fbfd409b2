//! The listeners: Ingress over HTTP and HTTPS, and the NodePort and LoadBalancer ones
//! the Services ask for. Each serves HTTP/1.1 and HTTP/2 with one hyper service that
//! routes from the current snapshot.

use crate::dispatch::{self, error_response};
use crate::ingress::Target;
use crate::metrics::RouteMetrics;
use crate::proxy::Shared;
use crate::snapshot::{PortKind, Route, WantedListener};
use flotilla_client::{Body, BoxError};
use http::request::Parts;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::Instrument as _;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ingress,
    IngressTls,
    Port(PortKind),
}

/// Accepts connections until aborted; aborting it closes its connections too.
pub(crate) async fn serve(listener: TcpListener, kind: Kind, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, kind, shared.clone()).in_current_span());
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, kind: Kind, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let wait = shared.config.header_read_timeout;
    let for_requests = shared.clone();
    let service = hyper::service::service_fn(move |request| {
        let shared = for_requests.clone();
        async move { Ok::<_, Infallible>(handle(&shared, kind, peer, request).await) }
    });
    let served = if kind == Kind::IngressTls {
        let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.clone());
        match tokio::time::timeout(wait, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => shared.http.serve_connection(TokioIo::new(stream), service).await,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        }
    } else {
        // hyper's header timeout starts once it knows the protocol: a client that
        // connects and sends nothing is dropped here.
        let mut first = [0u8; 1];
        match tokio::time::timeout(wait, stream.peek(&mut first)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return,
        }
        shared.http.serve_connection(TokioIo::new(stream), service).await
    };
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// One request from a client of a listener. Requests to the Ingress listeners are
/// counted in the series of the rule they match (or of none).
async fn handle(shared: &Shared, kind: Kind, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (route, ingress) = route(shared, kind, &parts);
    let response = match route {
        Ok(route) => serve_route(shared, peer, kind == Kind::IngressTls, route, parts, body, started).await,
        Err(response) => response,
    };
    if let Some(ingress) = ingress {
        ingress.observe(response.status(), started.elapsed());
    }
    response
}

/// The Service port a request goes to (or the answer when none), and for a request to
/// an Ingress listener, the series it counts in.
fn route(shared: &Shared, kind: Kind, parts: &Parts) -> (Result<Route, Response<Body>>, Option<Arc<RouteMetrics>>) {
    let snapshot = shared.snapshot.load();
    match kind {
        Kind::Ingress | Kind::IngressTls => {
            let host = dispatch::lowercase(dispatch::request_host(parts));
            match snapshot.ingress.route(&host, parts.uri.path()) {
                Some(backend) => {
                    let route = match &backend.target {
                        Target::Service(route) => Ok(route.clone()),
                        Target::Missing(why) => Err(error_response(StatusCode::SERVICE_UNAVAILABLE, why.as_ref())),
                    };
                    (route, Some(backend.metrics.clone()))
                }
                None => {
                    let message = format!("no Ingress rule for host \"{host}\" and path \"{}\"", parts.uri.path());
                    (Err(error_response(StatusCode::NOT_FOUND, message)), Some(shared.unmatched.clone()))
                }
            }
        }
        Kind::Port(PortKind::NodePort(port)) => {
            let route = snapshot.node_ports.get(&port).cloned().ok_or_else(|| {
                error_response(StatusCode::SERVICE_UNAVAILABLE, format!("no Service has node port {port}"))
            });
            (route, None)
        }
        Kind::Port(PortKind::LoadBalancer(port)) => {
            let route = snapshot.load_balancer_ports.get(&port).cloned().ok_or_else(|| {
                error_response(StatusCode::SERVICE_UNAVAILABLE, format!("no LoadBalancer Service has port {port}"))
            });
            (route, None)
        }
    }
}

/// Sends a request from a client to its Service port, counted in the Service's series
/// when it reaches the Service (not when its announced body is too large).
async fn serve_route(
    shared: &Shared,
    peer: SocketAddr,
    tls: bool,
    route: Route,
    mut parts: Parts,
    body: Incoming,
    started: Instant,
) -> Response<Body> {
    let limit = shared.config.max_body_bytes;
    let length = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > limit) {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is over {limit} bytes"));
    }

    let client = peer.ip().to_canonical();
    dispatch::prepare_headers(&mut parts, Some((client, if tls { "https" } else { "http" })));
    // A body of unknown length is counted as it streams; past the limit the pod sees an
    // error and the client a 413.
    let (body, overflow) = if length.is_some() || body.is_end_stream() {
        (body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(), None)
    } else {
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).map_err(move |error| {
            if error.is::<LengthLimitError>() {
                flag.store(true, Ordering::Relaxed);
            }
            error
        });
        (limited.boxed_unsync(), Some(overflow))
    };
    let mut response = dispatch::dispatch(shared, &route, Some(client), parts, body).await;
    if overflow.is_some_and(|overflow| overflow.load(Ordering::Relaxed)) {
        response = error_response(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is over {limit} bytes"));
    }
    route.service.metrics.observe(response.status(), started.elapsed());
    response
}

/// An open NodePort or LoadBalancer listener; dropping it closes it.
#[derive(Debug)]
struct Open {
    kind: PortKind,
    owner: Arc<str>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The NodePort and LoadBalancer listeners, opened and closed as Services come and go.
#[derive(Debug, Default)]
pub(crate) struct PortListeners {
    open: HashMap<SocketAddr, Open>,
    /// Addresses that could not be bound, and for which Service (logged once).
    failed: HashMap<SocketAddr, Arc<str>>,
}

impl PortListeners {
    /// Opens the listeners `wanted` lists (a port that cannot be bound is logged and
    /// tried again on the next change) and closes the others.
    pub(crate) async fn reconcile(&mut self, wanted: &[WantedListener], shared: &Arc<Shared>) {
        let by_addr: HashMap<SocketAddr, &WantedListener> = wanted.iter().map(|w| (w.addr, w)).collect();
        self.open.retain(|addr, open| {
            let keep = by_addr.get(addr).is_some_and(|w| w.kind == open.kind);
            if !keep {
                tracing::info!(service = %open.owner, %addr, "closing listener");
            }
            keep
        });
        self.failed.retain(|addr, _| by_addr.contains_key(addr));
        for wanted in wanted {
            if let Some(open) = self.open.get_mut(&wanted.addr) {
                open.owner = wanted.owner.clone();
                continue;
            }
            match TcpListener::bind(wanted.addr).await {
                Ok(listener) => {
                    self.failed.remove(&wanted.addr);
                    tracing::info!(service = %wanted.owner, addr = %wanted.addr, kind = ?wanted.kind, "listening");
                    let span = tracing::info_span!("listener", service = %wanted.owner, addr = %wanted.addr);
                    let task = tokio::spawn(serve(listener, Kind::Port(wanted.kind), shared.clone()).instrument(span));
                    self.open.insert(wanted.addr, Open { kind: wanted.kind, owner: wanted.owner.clone(), task });
                }
                Err(error) => {
                    if self.failed.insert(wanted.addr, wanted.owner.clone()).as_ref() != Some(&wanted.owner) {
                        tracing::warn!(service = %wanted.owner, addr = %wanted.addr, %error, "cannot listen for the service");
                    }
                }
            }
        }
    }

    /// Whether `addr` is open for `owner`.
    pub(crate) fn serves(&self, addr: SocketAddr, owner: &str) -> bool {
        self.open.get(&addr).is_some_and(|open| &*open.owner == owner)
    }
}
