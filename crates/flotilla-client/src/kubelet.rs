//! What the API server asks of a node, as kube-apiserver asks a kubelet: a pod's logs
//! (`pods/log`), HTTP to a pod (`pods/proxy`), commands in a pod and connections to its
//! ports (`pods/exec`, `pods/attach`, `pods/portforward`; their wire protocols are
//! [`streaming`](crate::streaming)'s), and its pods' resource use (`/stats/summary`,
//! which the resource metrics scraper reads).

use crate::stats::Summary;
use crate::streaming::{Duplex, ExecOptions, ExecSession};
use async_trait::async_trait;
use bytes::Bytes;
use flotilla_api::ApiError;
use http_body_util::BodyExt as _;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A header of a `proxy` request from the Service proxy waking a pod from zero: the pod is
/// bound to the node but may not have started yet, and the node may hold the request this
/// many milliseconds for it to start instead of answering that it has no such pod. The
/// node removes it before the pod sees the request; the proxy removes it from what
/// clients send.
pub const START_WAIT_HEADER: &str = "x-flotilla-start-wait-ms";

/// An error inside a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body between the API server and a node.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> Body {
    full_body(Bytes::new())
}

/// `pods/log` options, as kubectl sends them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Which container; the only one when `None`.
    pub container: Option<String>,
    /// Keep streaming new lines until the container stops or the client goes.
    pub follow: bool,
    /// The previous run's log (after a restart).
    pub previous: bool,
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<u64>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// A node's agent, as the API server reaches it.
#[async_trait]
pub trait Kubelet: Send + Sync + std::fmt::Debug {
    /// The pod's container log, as a stream of lines.
    async fn logs(&self, namespace: &str, pod: &str, options: &LogOptions) -> Result<Body, ApiError>;

    /// One HTTP request to the pod (its path already stripped of the `…/proxy` prefix).
    async fn proxy(
        &self,
        namespace: &str,
        pod: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ApiError>;

    /// The node's pods and what they use now (kubelet's `GET /stats/summary`). A kubelet
    /// that measures nothing answers `NotFound`.
    async fn stats(&self) -> Result<Summary, ApiError> {
        Err(ApiError::new(flotilla_api::Reason::NotFound, "this kubelet serves no stats"))
    }

    /// Runs a command in the pod (`pods/exec`), or attaches to its container
    /// (`pods/attach`, `options.command` empty), with the streams `options` ask for.
    /// Errors before the command starts (no such container, not running) come here;
    /// the command's own end comes through [`ExecSession::exit`].
    async fn exec(&self, namespace: &str, pod: &str, options: &ExecOptions) -> Result<ExecSession, ApiError> {
        let _ = (namespace, pod, options);
        Err(ApiError::new(flotilla_api::Reason::BadRequest, "this kubelet cannot run commands in pods"))
    }

    /// A connection to the pod's `port` (`pods/portforward`): the pod's own listener on
    /// it, as `localhost:PORT` inside the pod would reach it.
    async fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<Box<dyn Duplex>, ApiError> {
        let _ = (namespace, pod, port);
        Err(ApiError::new(flotilla_api::Reason::BadRequest, "this kubelet cannot forward ports"))
    }
}

/// The kubelets this process can reach (the API server for logs and `pods/proxy`, the
/// Service proxy for endpoints), by node name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Kubelets {
    nodes: Arc<RwLock<HashMap<String, Registered>>>,
}

#[derive(Debug, Clone)]
enum Registered {
    /// An agent in this process.
    Local(Arc<dyn Kubelet>),
    /// An agent elsewhere, reached over HTTP at this base URL.
    Remote(String, Arc<dyn Kubelet>),
}

impl Kubelets {
    /// Registers an agent running in this process (it wins over a remote entry).
    pub fn register(&self, node: &str, kubelet: Arc<dyn Kubelet>) {
        self.write().insert(node.to_string(), Registered::Local(kubelet));
    }

    pub fn get(&self, node: &str) -> Option<Arc<dyn Kubelet>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).get(node).map(|entry| match entry {
            Registered::Local(kubelet) | Registered::Remote(_, kubelet) => kubelet.clone(),
        })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Registered>> {
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps an [`HttpKubelet`] (with the node `token`) registered for every Node that has
    /// no agent in this process, following Nodes as they join, move and leave. Runs until
    /// the task is dropped.
    pub async fn follow_nodes(self, cluster: Arc<dyn crate::Cluster>, token: String) {
        let nodes = crate::Informer::start(cluster, crate::resource("v1", "Node"), None, Default::default());
        let mut changes = nodes.subscribe();
        nodes.synced().await;
        loop {
            let current = nodes.list();
            {
                let mut registered = self.write();
                registered.retain(|name, entry| {
                    matches!(entry, Registered::Local(_)) || current.iter().any(|n| crate::object_name(n) == *name)
                });
                for node in &current {
                    let name = crate::object_name(node);
                    let Ok(base) = kubelet_base(node) else { continue };
                    let known = match registered.get(&name) {
                        Some(Registered::Local(_)) => true,
                        Some(Registered::Remote(at, _)) => *at == base,
                        None => false,
                    };
                    if !known && let Ok(kubelet) = HttpKubelet::new(&base, &token) {
                        registered.insert(name, Registered::Remote(base, Arc::new(kubelet)));
                    }
                }
            }
            match changes.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Where a Node's agent serves its kubelet API: its `InternalIP` and
/// `daemonEndpoints.kubeletEndpoint.Port`, as `http://IP:PORT`.
pub fn kubelet_base(node: &serde_json::Value) -> Result<String, String> {
    let address = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or("the node reports no InternalIP")?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .ok_or("the node reports no kubelet port")?;
    let host = if address.contains(':') { format!("[{address}]") } else { address.to_string() };
    Ok(format!("http://{host}:{port}"))
}

/// A node agent in another process, reached over its HTTP kubelet API
/// (`GET /containerLogs/NS/POD[/CONTAINER]`, `/pods/NS/POD/proxy/…`, `GET /stats/summary`)
/// with the node token.
#[derive(Debug, Clone)]
pub struct HttpKubelet {
    client: crate::Client,
}

impl HttpKubelet {
    /// The kubelet at `base` (`http://10.0.0.5:10250`).
    pub fn new(base: &str, token: &str) -> Result<HttpKubelet, crate::Error> {
        Ok(HttpKubelet { client: crate::Client::new(base, Some(token.to_string()), None, "default".into())? })
    }
}

/// A path segment as it goes into a URL.
fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[async_trait]
impl Kubelet for HttpKubelet {
    async fn logs(&self, namespace: &str, pod: &str, options: &LogOptions) -> Result<Body, ApiError> {
        let mut path = format!("/containerLogs/{}/{}", segment(namespace), segment(pod));
        if let Some(container) = &options.container {
            path.push('/');
            path.push_str(&segment(container));
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (key, on) in
                [("follow", options.follow), ("previous", options.previous), ("timestamps", options.timestamps)]
            {
                if on {
                    query.append_pair(key, "true");
                }
            }
            for (key, value) in [
                ("tailLines", options.tail_lines.map(|n| n as u64)),
                ("sinceSeconds", options.since_seconds),
                ("limitBytes", options.limit_bytes.map(|n| n as u64)),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, &value.to_string());
                }
            }
            query.finish()
        };
        let path = format!("{path}?{query}");
        let (status, body) = self.client.stream(&path).await?;
        if !status.is_success() {
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(ApiError::from_status_body(status.as_u16(), &bytes));
        }
        Ok(body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
    }

    async fn proxy(
        &self,
        namespace: &str,
        pod: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ApiError> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
            .to_bytes();
        let rest = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let path = format!("/pods/{}/{}/proxy{rest}", segment(namespace), segment(pod));
        let response = self.client.forward(parts.method, &path, &parts.headers, body).await?;
        Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
    }

    async fn exec(&self, namespace: &str, pod: &str, options: &ExecOptions) -> Result<ExecSession, ApiError> {
        let verb = if options.command.is_empty() { "attach" } else { "exec" };
        let mut path = format!("/{verb}/{}/{}", segment(namespace), segment(pod));
        if let Some(container) = &options.container {
            path.push('/');
            path.push_str(&segment(container));
        }
        path.push('?');
        path.push_str(&options.query());
        let (protocol, socket) = self.client.websocket(&path, crate::streaming::EXEC_PROTOCOLS).await?;
        Ok(crate::streaming::exec_client(socket, &protocol, options))
    }

    async fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<Box<dyn Duplex>, ApiError> {
        let path = format!("/portForward/{}/{}?ports={port}", segment(namespace), segment(pod));
        let (_, socket) = self.client.websocket(&path, &[crate::streaming::V4_CHANNEL]).await?;
        Ok(Box::new(crate::streaming::port_forward_client(socket)))
    }

    async fn stats(&self) -> Result<Summary, ApiError> {
        let response = self.client.get("/stats/summary").await?;
        if !response.status.is_success() {
            return Err(response.api_error());
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| ApiError::internal(format!("the node's /stats/summary is not a summary: {e}")))
    }
}
