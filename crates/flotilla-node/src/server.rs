//! The agent's own HTTP API, for an API server in another process (the kubelet port):
//! `GET /containerLogs/NS/POD[/CONTAINER]` with `pods/log`'s query, and
//! `/pods/NS/POD/proxy/PATH` into the pod, `/exec|attach/NS/POD[/CONTAINER]` and
//! `/portForward/NS/POD` (WebSockets, the protocols of `flotilla_client::streaming`),
//! `/metrics` (the agent process's metrics,
//! in Prometheus' text format), and `GET /stats/summary` (its pods' resource use, JSON,
//! for the API server's resource metrics). Every request needs the node token. It
//! listens within the process's [`ConnectionLimits`], as every listener does.

use crate::Node;
use flotilla_api::ApiError;
use flotilla_client::streaming;
use flotilla_client::{Body, BoxError, ConnectionLimits, HttpServer, Kubelet as _, LogOptions, Supervisor, full_body};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the kubelet API on `listener` until the process ends, within `limits`: its
/// accept loop restarted by `supervisor` after a panic, a request whose handler panics
/// answered 500.
pub async fn serve(node: Node, listener: TcpListener, token: String, limits: ConnectionLimits, supervisor: Supervisor) {
    let token: Arc<str> = token.into();
    let listener = Arc::new(listener);
    let server = HttpServer::new(limits, supervisor.clone(), "kubelet-request");
    supervisor
        .run("kubelet-accept", move || {
            let (node, token) = (node.clone(), token.clone());
            let handler = move |_peer, request| {
                let (node, token) = (node.clone(), token.clone());
                async move { handle(&node, &token, request).await }
            };
            server.clone().serve(listener.clone(), None, handler)
        })
        .await;
}

fn status(error: &ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&error.to_status()).unwrap_or_default();
    let mut response = Response::new(full_body(body));
    *response.status_mut() = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

async fn handle(node: &Node, token: &str, request: Request<Incoming>) -> Response<Body> {
    let given = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let matches =
        given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if !matches {
        return status(&ApiError::new(flotilla_api::Reason::Unauthorized, "Unauthorized: the node token is required"));
    }
    match route(node, request).await {
        Ok(response) => response,
        Err(error) => status(&error),
    }
}

async fn route(node: &Node, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .splitn(5, '/')
        .map(|s| {
            form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
        })
        .collect();
    let query: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let flag = |key: &str| query.get(key).is_some_and(|v| v == "true" || v == "1");
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
    match segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["metrics"] if request.method() == http::Method::GET => {
            let text =
                node.metrics_text().map_err(|e| ApiError::internal(format!("encoding the metrics failed: {e}")))?;
            let mut response = Response::new(full_body(text));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
            Ok(response)
        }
        ["stats", "summary"] if request.method() == http::Method::GET => {
            let body = serde_json::to_vec(&node.stats_summary())
                .map_err(|e| ApiError::internal(format!("encoding the stats summary failed: {e}")))?;
            let mut response = Response::new(full_body(body));
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            Ok(response)
        }
        ["containerLogs", namespace, pod, rest @ ..] if rest.len() <= 1 => {
            let options = LogOptions {
                container: rest.first().filter(|c| !c.is_empty()).map(|c| c.to_string()),
                follow: flag("follow"),
                previous: flag("previous"),
                tail_lines: number("tailLines").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                since_seconds: number("sinceSeconds"),
                timestamps: flag("timestamps"),
                limit_bytes: number("limitBytes").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            Ok(Response::new(node.logs(namespace, pod, &options).await?))
        }
        ["pods", namespace, pod, "proxy", ..] => {
            let prefix = format!("/pods/{}/{}/proxy", segments[1], segments[2]);
            let (namespace, pod) = (namespace.to_string(), pod.to_string());
            let (mut parts, body) = request.into_parts();
            let rest = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut rest = rest.strip_prefix(prefix.as_str()).unwrap_or(rest).to_string();
            if !rest.starts_with('/') {
                rest.insert(0, '/');
            }
            parts.uri = rest.parse().map_err(|e| ApiError::bad_request(format!("proxy path {rest}: {e}")))?;
            parts.headers.remove(http::header::AUTHORIZATION);
            let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
            node.dispatch(&namespace, &pod, Request::from_parts(parts, body)).await
        }
        ["exec" | "attach", namespace, pod, rest @ ..] if rest.len() <= 1 => {
            let attach = segments[0] == "attach";
            let (namespace, pod) = (namespace.to_string(), pod.to_string());
            let container = rest.first().filter(|c| !c.is_empty()).map(|c| c.to_string());
            streaming::upgrade_exec(request, attach, |mut options| async move {
                options.container = options.container.or(container);
                node.exec(&namespace, &pod, &options).await
            })
            .await
        }
        ["portForward", namespace, pod] => {
            let (namespace, pod, node) = (namespace.to_string(), pod.to_string(), node.clone());
            streaming::upgrade_port_forward(request, move |port| {
                let result = node.port_forward_stream(&namespace, &pod, port).map_err(|e| e.message);
                Box::pin(async move { result })
            })
        }
        _ => Err(ApiError::new(flotilla_api::Reason::NotFound, format!("no kubelet endpoint {path}"))),
    }
}
