//! The proxy against a real API server in process (its `LocalCluster`), with real HTTP
//! over loopback. Pods are a fake kubelet that answers with the pod's name (and echoes
//! what it was sent), and can be told to be slow, to fail, or to be gone.

mod forward;
mod ingress;
mod listeners;
mod metrics;
mod services;
mod tls;
mod wake;

use crate::{Proxy, ProxyConfig};
use async_trait::async_trait;
use bytes::Bytes;
use flotilla_api::{ApiError, Reason};
use flotilla_apiserver::{Config, LocalCluster, Running};
use flotilla_client::{Body, Cluster, Kubelet, Kubelets, LogOptions, Patch, full_body, resource};
use flotilla_store::{RedbStore, RedbStoreOptions};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// The node the fake kubelet is registered as.
pub(crate) const NODE: &str = "node-a";

/// How a fake pod answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Behaviour {
    /// 200 with the pod's name.
    #[default]
    Answer,
    /// Answers after this long.
    Slow(Duration),
    /// 502, as the runtime answers for a request that trapped.
    Fail,
    /// `Err(ServiceUnavailable)`: the pod is not running on the node.
    Gone,
}

/// A node agent whose pods answer with their name.
#[derive(Debug, Default)]
pub(crate) struct FakeKubelet {
    behaviours: Mutex<HashMap<String, Behaviour>>,
    /// Requests each pod got.
    hits: Mutex<HashMap<String, usize>>,
    /// The pods whose requests said they may wait for the pod to start.
    start_waits: Mutex<Vec<String>>,
}

impl FakeKubelet {
    pub(crate) fn set(&self, pod: &str, behaviour: Behaviour) {
        self.behaviours.lock().expect("behaviours").insert(pod.to_string(), behaviour);
    }

    pub(crate) fn hits(&self, pod: &str) -> usize {
        self.hits.lock().expect("hits").get(pod).copied().unwrap_or(0)
    }

    pub(crate) fn start_waits(&self) -> Vec<String> {
        self.start_waits.lock().expect("start waits").clone()
    }
}

#[async_trait]
impl Kubelet for FakeKubelet {
    async fn logs(&self, _namespace: &str, _pod: &str, _options: &LogOptions) -> Result<Body, ApiError> {
        Err(ApiError::bad_request("no logs here"))
    }

    async fn proxy(
        &self,
        namespace: &str,
        pod: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ApiError> {
        let behaviour = self.behaviours.lock().expect("behaviours").get(pod).copied().unwrap_or_default();
        if behaviour == Behaviour::Gone {
            return Err(ApiError::new(
                Reason::ServiceUnavailable,
                format!("pod {namespace}/{pod} is not running on node {NODE}"),
            ));
        }
        *self.hits.lock().expect("hits").entry(pod.to_string()).or_default() += 1;
        if request.headers().contains_key(flotilla_client::START_WAIT_HEADER) {
            self.start_waits.lock().expect("start waits").push(pod.to_string());
        }
        match behaviour {
            Behaviour::Slow(delay) => tokio::time::sleep(delay).await,
            Behaviour::Fail => {
                let mut response = http::Response::new(full_body(format!("pod {namespace}/{pod}: request trapped\n")));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                return Ok(response);
            }
            _ => {}
        }
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => {
                let mut response = http::Response::new(full_body(format!("reading the body: {error}")));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(response);
            }
        };
        let mut response = http::Response::new(full_body(pod.to_string()));
        let echo = response.headers_mut();
        for (name, seen) in [
            ("host", "x-seen-host"),
            ("x-forwarded-for", "x-seen-forwarded-for"),
            ("x-forwarded-proto", "x-seen-forwarded-proto"),
            ("x-forwarded-host", "x-seen-forwarded-host"),
            ("x-request-id", "x-seen-request-id"),
            ("connection", "x-seen-connection"),
        ] {
            if let Some(value) = parts.headers.get(name) {
                echo.insert(seen, value.clone());
            }
        }
        echo.insert("x-seen-uri", parts.uri.to_string().parse().expect("a header value"));
        echo.insert("x-seen-method", parts.method.as_str().parse().expect("a header value"));
        echo.insert("x-seen-body-bytes", body.len().into());
        Ok(response)
    }
}

/// An API server, a fake node and a proxy.
pub(crate) struct Env {
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) kubelet: Arc<FakeKubelet>,
    pub(crate) proxy: Proxy,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    /// The registry of the proxy's metrics.
    pub(crate) metrics: prometheus::Registry,
    _server: Running,
    _dir: tempfile::TempDir,
}

/// Ingress on loopback ports the OS picks; NodePort and LoadBalancer listeners on
/// 127.0.0.1 (tests that use them pick an address of their own).
pub(crate) fn test_config() -> ProxyConfig {
    let loopback = "127.0.0.1".parse().expect("an address");
    ProxyConfig {
        http_addr: Some("127.0.0.1:0".parse().expect("an address")),
        https_addr: Some("127.0.0.1:0".parse().expect("an address")),
        node_port_address: loopback,
        load_balancer_address: loopback,
        upstream_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    }
}

pub(crate) async fn start(config: ProxyConfig) -> Env {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default()).expect("a store");
    let server_config = Config::new(dir.path());
    let server = flotilla_apiserver::start(server_config, Arc::new(store)).await.expect("the API server starts");
    let cluster: LocalCluster = server.cluster.with_field_manager("proxy-test");
    let cluster: Arc<dyn Cluster> = Arc::new(cluster);
    let kubelet = Arc::new(FakeKubelet::default());
    let kubelets = Kubelets::default();
    kubelets.register(NODE, kubelet.clone());
    let metrics = config.metrics.clone();
    let proxy = Proxy::start(cluster.clone(), kubelets, config).await.expect("the proxy starts");
    tokio::time::timeout(Duration::from_secs(10), proxy.ready()).await.expect("the proxy syncs");
    let client = Client::builder(TokioExecutor::new()).build_http();
    Env { cluster, kubelet, proxy, client, metrics, _server: server, _dir: dir }
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

impl Env {
    pub(crate) async fn create(&self, object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let rt = resource(&api_version, &kind);
        let namespace = rt.namespaced.then_some(namespace.as_str());
        self.cluster.create(rt, namespace, &object).await.unwrap_or_else(|e| panic!("creating {kind}: {e}"))
    }

    pub(crate) async fn patch(&self, api_version: &str, kind: &str, name: &str, patch: Value) -> Value {
        self.cluster
            .patch(resource(api_version, kind), Some("default"), name, &Patch::Merge(patch), None)
            .await
            .unwrap_or_else(|e| panic!("patching {kind} {name}: {e}"))
    }

    pub(crate) async fn delete(&self, api_version: &str, kind: &str, name: &str) {
        self.cluster
            .delete(resource(api_version, kind), Some("default"), name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {kind} {name}: {e}"));
    }

    /// A request to `addr` with this `Host`.
    pub(crate) async fn send(&self, addr: SocketAddr, request: Request<Full<Bytes>>) -> Answer {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        parts.uri = format!("http://{addr}{path}").parse().expect("a URI");
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .unwrap_or_else(|e| panic!("a request to {addr}: {e:?}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("the body").to_bytes();
        Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// `GET path` on the Ingress HTTP listener, for `host`.
    pub(crate) async fn get(&self, host: &str, path: &str) -> Answer {
        let addr = self.proxy.http_addr().expect("an HTTP listener");
        self.send(addr, Request::get(path).header("host", host).body(Full::default()).expect("a request")).await
    }

    /// Creates a ClusterIP Service `name` with these ports.
    pub(crate) async fn service(&self, name: &str, ports: Value) -> Value {
        self.create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name}, "ports": ports}}))
            .await
    }

    /// Creates or replaces the EndpointSlice `slice` of `service`, with one unnamed port.
    pub(crate) async fn endpoints(&self, service: &str, slice: &str, pods: &[(&str, bool)]) {
        self.slice(service, slice, json!([{"port": 8080, "protocol": "TCP"}]), pods).await;
    }

    /// Creates or replaces an EndpointSlice of `service` whose pods are on [`NODE`] with
    /// these readiness conditions, as kube's EndpointSlice controller writes them.
    pub(crate) async fn slice(&self, service: &str, slice: &str, ports: Value, pods: &[(&str, bool)]) {
        let endpoints: Vec<Value> = pods
            .iter()
            .enumerate()
            .map(|(i, (pod, ready))| {
                json!({"addresses": [format!("10.244.0.{}", i + 10)],
                       "conditions": {"ready": ready, "serving": ready, "terminating": false},
                       "nodeName": NODE,
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}})
            })
            .collect();
        let object = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints});
        let rt = resource("discovery.k8s.io/v1", "EndpointSlice");
        match self.cluster.get(rt, Some("default"), slice).await {
            Ok(_) => {
                self.cluster.replace(rt, Some("default"), slice, &object, None).await.expect("the slice replaced");
            }
            Err(_) => {
                self.create(object).await;
            }
        }
    }

    /// An Ingress sending every request to `service` port 80.
    pub(crate) async fn ingress_to(&self, service: &str) {
        self.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": format!("{service}-all"), "namespace": "default"},
            "spec": {"ingressClassName": "flotilla",
                     "defaultBackend": {"service": {"name": service, "port": {"number": 80}}}}}))
            .await;
    }

    /// The metrics in the text exposition format.
    pub(crate) fn metrics_text(&self) -> String {
        crate::metrics::tests::text(&self.metrics)
    }

    /// The value of one series (`name{labels}`, labels in name order as the text format
    /// writes them), 0 when it is not there.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `GET host path` until `done` holds for the answer (10 s at most).
    pub(crate) async fn get_until(&self, host: &str, path: &str, done: impl Fn(&Answer) -> bool) -> Answer {
        wait_for(&format!("GET {host}{path}"), || async {
            let answer = self.get(host, path).await;
            done(&answer).then_some(answer)
        })
        .await
    }
}

/// Polls `check` until it answers `Some` (10 s at most).
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
