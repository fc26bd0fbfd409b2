//! The listeners: Ingress over HTTP and HTTPS, and the NodePort and LoadBalancer ones
//! the Services ask for. Each serves HTTP/1.1 and HTTP/2 with one hyper service that
//! routes from the current snapshot, within the proxy's connection limits
//! ([`flotilla_client::HttpServer`]), its accept loop supervised.

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
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::net::TcpListener;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ingress,
    IngressTls,
    Port(PortKind),
}

/// Accepts connections until aborted (within the proxy's connection limits); aborting it
/// closes its connections too.
pub(crate) async fn serve(listener: Arc<TcpListener>, kind: Kind, shared: Arc<Shared>) {
    let tls = (kind == Kind::IngressTls).then(|| tokio_rustls::TlsAcceptor::from(shared.tls.clone()));
    let for_requests = shared.clone();
    let handler = move |peer, request| {
        let shared = for_requests.clone();
        async move { handle(&shared, kind, peer, request).await }
    };
    shared.http.clone().serve(listener, tls, handler).await;
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
                    let (listener, kind, for_task) = (Arc::new(listener), Kind::Port(wanted.kind), shared.clone());
                    let serve = move || serve(listener.clone(), kind, for_task.clone());
                    let task = span.in_scope(|| shared.config.supervisor.spawn("service-listener", serve));
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
