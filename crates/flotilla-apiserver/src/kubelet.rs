//! `pods/log`, `pods/proxy`, `pods/exec`, `pods/attach` and `pods/portforward`: the API
//! server finds the node a pod runs on and hands the request to that node's
//! [`Kubelet`](flotilla_client::Kubelet), as kube-apiserver proxies to a kubelet.

use crate::http::{ApiState, Body, Query};
use flotilla_api::{ApiError, Reason};
use flotilla_client::streaming;
use flotilla_client::{Kubelet, LogOptions};
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;

/// The kubelet of the node `pod` is bound to.
async fn kubelet_of(state: &ApiState, namespace: &str, pod: &str) -> Result<(Value, Arc<dyn Kubelet>), ApiError> {
    let rt = flotilla_api::by_kind("v1", "Pod").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let object = state.registry.get(rt, Some(namespace), pod).await?;
    let Some(node) = object["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {pod} is not scheduled to a node yet: it has no logs and cannot be reached"
        )));
    };
    let kubelet = match state.kubelets.get(node) {
        Some(kubelet) => kubelet,
        None => remote_kubelet(state, node).await.map_err(|why| {
            ApiError::new(Reason::ServiceUnavailable, format!("node \"{node}\" of pod {pod} cannot be reached: {why}"))
        })?,
    };
    Ok((object, kubelet))
}

/// The kubelet of a node whose agent runs in another process: its Node's `InternalIP`
/// and `daemonEndpoints.kubeletEndpoint.Port`, over HTTP with the node token.
async fn remote_kubelet(state: &ApiState, node: &str) -> Result<Arc<dyn Kubelet>, String> {
    let rt = flotilla_api::by_kind("v1", "Node").ok_or("nodes are not served")?;
    let object = state.registry.get(rt, None, node).await.map_err(|e| e.message)?;
    let base = flotilla_client::kubelet_base(&object)?;
    let kubelet = flotilla_client::HttpKubelet::new(&base, &state.node_token).map_err(|e| e.to_string())?;
    Ok(Arc::new(kubelet))
}

pub(crate) async fn logs(
    state: &ApiState,
    namespace: &str,
    pod: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let number = |key: &str| -> Result<Option<u64>, ApiError> { query.number(key) };
    let options = LogOptions {
        container: query.get("container").filter(|c| !c.is_empty()).map(str::to_string),
        follow: query.flag("follow")?,
        previous: query.flag("previous")?,
        tail_lines: number("tailLines")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        since_seconds: number("sinceSeconds")?,
        timestamps: query.flag("timestamps")?,
        limit_bytes: number("limitBytes")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let (object, kubelet) = kubelet_of(state, namespace, pod).await?;
    if let Some(container) = &options.container {
        let known = object["spec"]["containers"].as_array().into_iter().flatten().any(|c| c["name"] == **container);
        if !known {
            return Err(ApiError::bad_request(format!("container {container} is not valid for pod {pod}")));
        }
    }
    // As kube-apiserver: a container that never ran has no log to show, say why instead.
    let container = options.container.as_deref().or_else(|| object["spec"]["containers"][0]["name"].as_str());
    let status = object["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == container);
    if let Some(status) = status
        && let Some(reason) = status["state"]["waiting"]["reason"].as_str()
        && status["restartCount"].as_u64().unwrap_or(0) == 0
        && status["lastState"]["terminated"].is_null()
    {
        return Err(ApiError::bad_request(format!(
            "container \"{}\" in pod \"{pod}\" is waiting to start: {reason}",
            container.unwrap_or_default()
        )));
    }
    let body = kubelet.logs(namespace, pod, &options).await?;
    let mut response = Response::new(body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// `/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`: the request goes to the pod with
/// its path made `/PATH`.
pub(crate) async fn proxy(
    state: &Arc<ApiState>,
    namespace: &str,
    pod: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    // A port may follow the name (`web:8080`); every HTTP pod listens on all of them.
    let pod = pod.split(':').next().unwrap_or(pod);
    let (_, kubelet) = kubelet_of(state, namespace, pod).await?;
    let (mut parts, body) = request.into_parts();
    let prefix = format!("/api/v1/namespaces/{namespace}/pods/");
    let rest = parts.uri.path().strip_prefix(&prefix).and_then(|p| p.split_once("/proxy")).map(|(_, rest)| rest);
    let mut path = match rest {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => "/".to_string(),
    };
    if let Some(query) = parts.uri.query() {
        path.push('?');
        path.push_str(query);
    }
    parts.uri = path.parse().map_err(|e| ApiError::bad_request(format!("proxy path {path}: {e}")))?;
    // The API server's credentials are not the pod's business.
    parts.headers.remove(http::header::AUTHORIZATION);
    let request =
        Request::from_parts(parts, body.map_err(|e| -> flotilla_client::BoxError { Box::new(e) }).boxed_unsync());
    kubelet.proxy(namespace, pod, request).await
}

/// `pods/exec`, `pods/attach` and `pods/portforward` (GET or POST, upgraded to a
/// WebSocket): checked here against the pod object as kube-apiserver checks them, then
/// served by the pod's node (see `flotilla_client::streaming` for the wire protocols).
pub(crate) async fn stream(
    state: &Arc<ApiState>,
    namespace: &str,
    pod: &str,
    subresource: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if request.method() != http::Method::GET && request.method() != http::Method::POST {
        return Err(ApiError::new(
            Reason::MethodNotAllowed,
            format!("the server does not allow this method on the requested resource: {}", request.method()),
        ));
    }
    let (object, kubelet) = kubelet_of(state, namespace, pod).await?;
    let phase = object["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        let verb = if subresource == "portforward" { "forward ports to" } else { "exec into" };
        return Err(ApiError::bad_request(format!(
            "cannot {verb} a container in a completed pod; current phase is {phase}"
        )));
    }
    let (namespace, pod) = (namespace.to_string(), pod.to_string());
    match subresource {
        "portforward" => {
            let connect = move |port: u16| -> streaming::BoxFuture<Result<Box<dyn streaming::Duplex>, String>> {
                let (kubelet, namespace, pod) = (kubelet.clone(), namespace.clone(), pod.clone());
                Box::pin(async move { kubelet.port_forward(&namespace, &pod, port).await.map_err(|e| e.message) })
            };
            let uid = object["metadata"]["uid"].as_str().unwrap_or_default().to_string();
            let spdy =
                flotilla_spdy::PortForwardOptions::new(object["metadata"]["name"].as_str().unwrap_or_default(), uid);
            port_forward(request, spdy, connect)
        }
        _ => {
            let attach = subresource == "attach";
            streaming::upgrade_exec(request, attach, |mut options| async move {
                let containers: Vec<&str> = object["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                match &options.container {
                    Some(container) if !containers.contains(&container.as_str()) => {
                        return Err(ApiError::bad_request(format!("container {container} is not valid for pod {pod}")));
                    }
                    Some(_) => {}
                    None => options.container = containers.first().map(|c| c.to_string()),
                }
                kubelet.exec(&namespace, &pod, &options).await
            })
            .await
        }
    }
}

/// Serves `pods/portforward` in whichever protocol the client asks for: the SPDY session
/// tunnelled in a WebSocket (kubectl 1.31+), the legacy `Upgrade: SPDY/3.1` (older
/// kubectl, client-go's SPDY dialer), or `v4.channel.k8s.io` (the Python client, kube-rs).
fn port_forward<C>(
    mut request: Request<Incoming>,
    spdy: flotilla_spdy::PortForwardOptions,
    connect: C,
) -> Result<Response<Body>, ApiError>
where
    C: Fn(u16) -> streaming::BoxFuture<Result<Box<dyn streaming::Duplex>, String>> + Send + Sync + 'static,
{
    let headers = request.headers();
    let legacy_spdy = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    let tunnel = streaming::is_websocket(headers)
        && streaming::negotiate(headers, &[streaming::SPDY_TUNNEL]) == Some(streaming::SPDY_TUNNEL);
    if !legacy_spdy && !tunnel {
        return streaming::upgrade_port_forward(request, connect);
    }
    let response = if tunnel {
        streaming::accept(headers, Some(streaming::SPDY_TUNNEL), flotilla_client::empty_body())?
    } else {
        let mut response = Response::new(flotilla_client::empty_body());
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
        headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("SPDY/3.1"));
        headers.insert("X-Stream-Protocol-Version", http::HeaderValue::from_static("portforward.k8s.io"));
        response
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let connect = std::sync::Arc::new(connect);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, "the port-forward upgrade failed"),
        };
        let connect = move |port: u16| {
            let connecting = connect(port);
            async move { connecting.await.map_err(std::io::Error::other) }
        };
        let served = if tunnel {
            let socket = streaming::server_socket(upgraded).await;
            flotilla_spdy::serve_port_forward(streaming::websocket_bytes(socket), spdy, connect).await
        } else {
            flotilla_spdy::serve_port_forward(hyper_util::rt::TokioIo::new(upgraded), spdy, connect).await
        };
        if let Err(error) = served {
            tracing::debug!(%error, "a port-forward session ended with an error");
        }
    });
    Ok(response)
}
