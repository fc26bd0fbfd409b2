//! One request to a Service port: pick an endpoint, send the request to its pod through
//! the pod's node agent, retry an idempotent request once on another endpoint when the
//! pod is gone, and turn failures into short text answers naming the Service. Upstream
//! failures are counted here, in the Service's series; the callers count the request.

use crate::balancer::{self, InFlight};
use crate::metrics::Upstream;
use crate::proxy::Shared;
use crate::snapshot::{Endpoint, Route, Service};
use bytes::Bytes;
use flotilla_client::{Body, full_body};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::Instrument as _;

/// Idempotent requests with a body up to this size are kept, to be sent again.
const MAX_REPLAY_BYTES: u64 = 64 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers of one hop only (RFC 9110 §7.6.1), which a proxy does not pass on. (`TE`
/// too, but `TE: trailers` is passed, as gRPC needs it end to end.)
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// A short text answer of the proxy's own.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(full_body(message));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The request's authority: the URI's (HTTP/2, absolute form) or the `Host` header's.
pub(crate) fn request_authority(parts: &Parts) -> Option<http::uri::Authority> {
    if let Some(authority) = parts.uri.authority() {
        return Some(authority.clone());
    }
    let host = parts.headers.get(header::HOST)?;
    http::uri::Authority::try_from(host.as_bytes()).ok()
}

/// `name` in ASCII lower case, copied only when it has upper case (host names match
/// case-insensitively; almost every client sends them lower case already).
pub(crate) fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The request's host without port, from the URI or the `Host` header.
pub(crate) fn request_host(parts: &Parts) -> &str {
    let host = match parts.uri.authority() {
        Some(authority) => authority.host(),
        None => parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default(),
    };
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Makes a request fit to send to a pod: origin-form URI with a `Host` header, no
/// hop-by-hop headers, and when it came from a client of a listener, the
/// `X-Forwarded-*` headers.
pub(crate) fn prepare_headers(parts: &mut Parts, forwarded: Option<(IpAddr, &'static str)>) {
    if let Some(authority) = parts.uri.authority() {
        if !parts.headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = http::Uri::from(path);
    }
    let headers = &mut parts.headers;
    if let Some(connection) = headers.get(header::CONNECTION).and_then(|c| c.to_str().ok()) {
        let named: Vec<HeaderName> =
            connection.split(',').filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()).collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
    if let Some((client, proto)) = forwarded {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(previous) => HeaderValue::from_str(&format!("{previous}, {client}")),
            None => HeaderValue::from_str(&client.to_string()),
        };
        if let Ok(value) = value {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// A request kept to be sent more than once.
fn replay(parts: &Parts, body: &Bytes) -> Request<Body> {
    let mut request = Request::new(full_body(body.clone()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// How one try went.
enum Outcome {
    Answered(Response<Body>),
    /// The pod is not there to take the request (its agent said so or is unknown).
    Gone(String),
    TimedOut,
}

async fn attempt(shared: &Shared, endpoint: &Endpoint, mut request: Request<Body>, deadline: Instant) -> Outcome {
    // Only the proxy says when a node may hold a request for a starting pod.
    let headers = request.headers_mut();
    headers.remove(flotilla_client::START_WAIT_HEADER);
    if endpoint.starting {
        let wait = deadline.saturating_duration_since(Instant::now()).as_millis();
        headers.insert(flotilla_client::START_WAIT_HEADER, HeaderValue::from(u64::try_from(wait).unwrap_or(u64::MAX)));
    }
    let kubelet = match &endpoint.kubelet {
        Some(kubelet) => kubelet.clone(),
        None => match shared.kubelets.get(&endpoint.node) {
            Some(kubelet) => kubelet,
            None => return Outcome::Gone(format!("node {} has no agent", endpoint.node)),
        },
    };
    let _in_flight = InFlight::start(&endpoint.in_flight);
    let sent = kubelet.proxy(&endpoint.namespace, &endpoint.pod, request);
    match tokio::time::timeout_at(deadline.into(), sent).await {
        Ok(Ok(response)) => Outcome::Answered(response),
        Ok(Err(error)) => Outcome::Gone(error.message),
        Err(_) => Outcome::TimedOut,
    }
}

/// Sends a request to a Service port (its headers already prepared) and answers.
pub(crate) async fn dispatch(
    shared: &Shared,
    route: &Route,
    client: Option<IpAddr>,
    mut parts: Parts,
    body: Body,
) -> Response<Body> {
    if !parts.headers.contains_key(&X_REQUEST_ID) {
        let id = shared.request_ids.fetch_add(1, Ordering::Relaxed);
        parts.headers.insert(X_REQUEST_ID.clone(), HeaderValue::from(id));
    }
    let span = tracing::info_span!(
        "request",
        service = %route.service.id,
        request_id = parts.headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default(),
    );
    send(shared, route, client, parts, body).instrument(span).await
}

async fn send(shared: &Shared, route: &Route, client: Option<IpAddr>, parts: Parts, body: Body) -> Response<Body> {
    let woken;
    let route = match (&route.service.wake, route.port().endpoints.is_empty()) {
        (Some(deployment), true) => match crate::wake::wake(shared, route, deployment).await {
            Ok(route) => {
                woken = route;
                &woken
            }
            Err(why) => {
                route.service.metrics.upstream_error(Upstream::NoEndpoints);
                return error_response(StatusCode::SERVICE_UNAVAILABLE, format!("service {}: {why}", route.service.id));
            }
        },
        _ => route,
    };
    let service = &route.service;
    let port = route.port();
    let endpoints = &port.endpoints;
    if endpoints.is_empty() {
        service.metrics.upstream_error(Upstream::NoEndpoints);
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service {} has no ready endpoints for port {}", service.id, port.port),
        );
    }
    let now = Instant::now();
    let deadline = now + shared.config.upstream_timeout;

    // The pod this client is pinned to, when the Service asks for affinity and it is
    // still an endpoint.
    let pinned = match (&service.affinity, client) {
        (Some(affinity), Some(client)) => {
            affinity.lookup(client, now).and_then(|pod| endpoints.iter().position(|e| e.pod == pod))
        }
        _ => None,
    };
    let choose = |exclude: Option<usize>| match (pinned, exclude) {
        (Some(pinned), None) => Some(pinned),
        _ => balancer::pick(service.policy, &service.counter, endpoints, exclude),
    };
    let remember = |index: usize| {
        if let (Some(affinity), Some(client)) = (&service.affinity, client) {
            affinity.remember(client, &endpoints[index].pod, Instant::now());
        }
    };

    // A request that can go to another endpoint when its pod is gone keeps its body.
    let retriable = endpoints.len() > 1 && is_idempotent(&parts.method);
    let payload = if retriable && body.is_end_stream() {
        Payload::Kept(Bytes::new())
    } else if retriable && body.size_hint().upper().is_some_and(|n| n <= MAX_REPLAY_BYTES) {
        match tokio::time::timeout_at(deadline.into(), body.collect()).await {
            Ok(Ok(collected)) => Payload::Kept(collected.to_bytes()),
            Ok(Err(error)) => {
                return error_response(StatusCode::BAD_REQUEST, format!("reading the request body: {error}"));
            }
            Err(_) => return error_response(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
        }
    } else {
        Payload::Stream(body)
    };

    let Some(first) = choose(None) else {
        service.metrics.upstream_error(Upstream::NoEndpoints);
        return error_response(StatusCode::SERVICE_UNAVAILABLE, format!("service {} has no endpoints", service.id));
    };
    let kept = match payload {
        Payload::Stream(body) => {
            let outcome = attempt(shared, &endpoints[first], Request::from_parts(parts, body), deadline).await;
            return finish(service, &endpoints[first], outcome, remember, first);
        }
        Payload::Kept(kept) => kept,
    };
    let outcome = attempt(shared, &endpoints[first], replay(&parts, &kept), deadline).await;
    let Outcome::Gone(why) = outcome else {
        return finish(service, &endpoints[first], outcome, remember, first);
    };
    let Some(second) = choose(Some(first)) else {
        return finish(service, &endpoints[first], Outcome::Gone(why), remember, first);
    };
    tracing::debug!(pod = %endpoints[first].pod, %why, retry = %endpoints[second].pod, "pod gone: trying another endpoint");
    service.metrics.upstream_error(Upstream::Retried);
    let outcome = attempt(shared, &endpoints[second], replay(&parts, &kept), deadline).await;
    finish(service, &endpoints[second], outcome, remember, second)
}

/// A request body, streamed or kept to be sent again.
enum Payload {
    Stream(Body),
    Kept(Bytes),
}

/// The answer of the last try, its failure counted.
fn finish(
    service: &Service,
    endpoint: &Endpoint,
    outcome: Outcome,
    remember: impl FnOnce(usize),
    index: usize,
) -> Response<Body> {
    let (metrics, service) = (&service.metrics, &service.id);
    match outcome {
        Outcome::Answered(response) => {
            remember(index);
            if response.status().is_server_error() {
                metrics.upstream_error(Upstream::PodError);
            }
            response
        }
        Outcome::Gone(why) => {
            metrics.upstream_error(Upstream::Unreachable);
            tracing::debug!(pod = %endpoint.pod, %why, "pod could not take the request");
            error_response(
                StatusCode::BAD_GATEWAY,
                format!(
                    "service {service}: pod {}/{} could not take the request: {why}",
                    endpoint.namespace, endpoint.pod
                ),
            )
        }
        Outcome::TimedOut => {
            metrics.upstream_error(Upstream::Timeout);
            tracing::debug!(pod = %endpoint.pod, "pod did not answer in time");
            error_response(
                StatusCode::GATEWAY_TIMEOUT,
                format!("service {service}: pod {}/{} did not answer in time", endpoint.namespace, endpoint.pod),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn requests_reach_pods_in_origin_form_with_forwarding_headers() {
        let mut h2 = parts(
            Request::get("https://shop.example.com:8443/cart?id=1")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "1")
                .header("x-forwarded-for", "203.0.113.9")
                .header("te", "gzip")
                .body(())
                .expect("a request"),
        );
        assert_eq!(request_host(&h2), "shop.example.com");
        prepare_headers(&mut h2, Some(("192.0.2.1".parse().expect("an address"), "https")));
        assert_eq!(h2.uri, "/cart?id=1");
        let header = |p: &Parts, name: &str| p.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header(&h2, "host").as_deref(), Some("shop.example.com:8443"));
        assert_eq!(header(&h2, "x-forwarded-for").as_deref(), Some("203.0.113.9, 192.0.2.1"));
        assert_eq!(header(&h2, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(header(&h2, "x-forwarded-host").as_deref(), Some("shop.example.com:8443"));
        for gone in ["connection", "x-hop", "te"] {
            assert_eq!(header(&h2, gone), None, "{gone}");
        }

        let mut h1 = parts(Request::get("/a").header("host", "[::1]:8080").body(()).expect("a request"));
        assert_eq!(request_host(&h1), "[::1]");
        assert_eq!(request_authority(&h1).map(|a| a.port_u16()), Some(Some(8080)));
        prepare_headers(&mut h1, None);
        assert_eq!(h1.uri, "/a");
        assert_eq!(header(&h1, "host").as_deref(), Some("[::1]:8080"));
        assert_eq!(header(&h1, "x-forwarded-for"), None);
    }
}
