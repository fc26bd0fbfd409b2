//! The [`Proxy`] handle: start-up, the in-process entry points, and what the request
//! path and the background tasks share.

use crate::ProxyConfig;
use crate::error::{ProxyError, Result};
use crate::metrics::{ProxyMetrics, RouteMetrics};
use crate::{dispatch, listener, snapshot, tls, watcher};
use arc_swap::ArcSwap;
use flotilla_client::{Body, Cluster, HttpServer, Kubelets};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// hyper's smallest HTTP/1 read buffer.
const MIN_HEADER_BYTES: usize = 8192;

/// The running proxy: a handle on its routing tables and listeners. Cheap to clone; the
/// informers and listeners stop when the last clone is dropped.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("http_addr", &self.shared.http_addr)
            .field("https_addr", &self.shared.https_addr)
            .finish_non_exhaustive()
    }
}

/// What the request path and the background tasks share.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) kubelets: Kubelets,
    /// The current routing tables.
    pub(crate) snapshot: Arc<ArcSwap<snapshot::Snapshot>>,
    /// How every listener serves a connection.
    pub(crate) http: HttpServer,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) request_ids: AtomicU64,
    /// Bumped after each routing-table swap (what a request waiting for a woken
    /// Deployment's first endpoint waits on).
    pub(crate) rebuilt: watch::Sender<u64>,
    /// Writes the scale of Deployments woken from zero.
    pub(crate) cluster: Arc<dyn Cluster>,
    /// The Deployments being woken now (`namespace/name`), so one request scales each
    /// and watches for its first ready pod; the others wait on what it finds.
    pub(crate) waking: std::sync::Mutex<std::collections::HashMap<Arc<str>, crate::wake::Waking>>,
    /// The metric families, where the routing tables get each object's series.
    pub(crate) metrics: ProxyMetrics,
    /// The series of Ingress requests that match no rule.
    pub(crate) unmatched: Arc<RouteMetrics>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    ready: watch::Receiver<bool>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The proxy's background tasks, aborted with the last [`Proxy`] clone.
#[derive(Debug, Default)]
pub(crate) struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn bind(addr: Option<SocketAddr>) -> Result<Option<(TcpListener, SocketAddr)>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr).await.map_err(|source| ProxyError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ProxyError::Bind { addr, source })?;
    Ok(Some((listener, local)))
}

impl Proxy {
    /// Binds the Ingress listeners, starts watching the cluster and serving. NodePort and
    /// LoadBalancer listeners open as their Services appear (a port that cannot be bound
    /// is logged, not fatal). Fails when an Ingress listener cannot be bound, or when the
    /// metrics cannot be registered in [`ProxyConfig::metrics`] (it already has them).
    pub async fn start(cluster: Arc<dyn Cluster>, kubelets: Kubelets, config: ProxyConfig) -> Result<Proxy> {
        let mut config = config;
        config.max_header_bytes = config.max_header_bytes.max(MIN_HEADER_BYTES);
        config.cluster_domain = config.cluster_domain.trim_matches('.').to_ascii_lowercase();
        let metrics = ProxyMetrics::register(&config.metrics).map_err(ProxyError::Metrics)?;
        let unmatched = Arc::new(metrics.route("", "", ""));

        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot::Snapshot::default()));
        let tls = tls::server_config(snapshot.clone()).map_err(|source| ProxyError::Tls { source })?;
        let http_listener = bind(config.http_addr).await?;
        let https_listener = bind(config.https_addr).await?;

        let http = HttpServer::new(config.limits, config.supervisor.clone(), "proxy-request")
            .max_header_bytes(config.max_header_bytes);

        let (ready_tx, ready) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            kubelets,
            snapshot,
            http,
            tls,
            request_ids: AtomicU64::new(1),
            rebuilt: watch::channel(0).0,
            cluster: cluster.clone(),
            waking: std::sync::Mutex::default(),
            metrics,
            unmatched,
            http_addr: http_listener.as_ref().map(|(_, addr)| *addr),
            https_addr: https_listener.as_ref().map(|(_, addr)| *addr),
            ready,
        });

        let mut tasks = Tasks::default();
        // The routing tables' builder, supervised like the listeners: a panic restarts it
        // (its informers list again) instead of freezing the routes.
        let (for_routes, span) = (shared.clone(), tracing::info_span!("proxy-routes"));
        let routes = move || watcher::run(cluster.clone(), for_routes.clone(), ready_tx.clone());
        tasks.0.push(span.in_scope(|| shared.config.supervisor.spawn("proxy-routes", routes)));
        for (listener, kind) in [(http_listener, listener::Kind::Ingress), (https_listener, listener::Kind::IngressTls)]
        {
            if let Some((listener, addr)) = listener {
                tracing::info!(%addr, tls = kind == listener::Kind::IngressTls, "Ingress listening");
                let span = tracing::info_span!("ingress", %addr);
                let (listener, for_task) = (Arc::new(listener), shared.clone());
                let serve = move || listener::serve(listener.clone(), kind, for_task.clone());
                tasks.0.push(span.in_scope(|| shared.config.supervisor.spawn("ingress-listener", serve)));
            }
        }
        Ok(Proxy { shared, _tasks: Arc::new(tasks) })
    }

    /// The Ingress HTTP listener's address (with the real port when 0 was asked for).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.shared.http_addr
    }

    /// The Ingress HTTPS listener's address (with the real port when 0 was asked for).
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.shared.https_addr
    }

    /// Whether a request from a pod in `namespace` to this authority is for a cluster
    /// Service: `SVC`, `SVC.NS`, `SVC.NS.svc`, `SVC.NS.svc.<cluster_domain>` (short names
    /// resolve in `namespace`, like DNS search paths), or `CLUSTER_IP[:PORT]`; the port
    /// defaults to 80 and must be a port of the Service. One pod of a headless Service
    /// (`clusterIP: None`) is `HOST.SVC[.NS[.svc[.<cluster_domain>]]]`, HOST being its
    /// `spec.hostname` under `spec.subdomain: SVC`, or its name; headless names take any
    /// port, as DNS would give the pods' own addresses.
    pub fn is_service_host(&self, namespace: &str, authority: &http::uri::Authority) -> bool {
        let snapshot = self.shared.snapshot.load();
        snapshot.resolve_authority(namespace, authority, &self.shared.config.cluster_domain).is_some()
    }

    /// Routes one request from a pod in `namespace` to the Service its URI authority (or
    /// `Host` header) names, in process. Always answers: 502 when it names no Service,
    /// 503 when the Service has no ready endpoint, 502 when the pod could not take the
    /// request, 504 when it did not answer in time, each with a short text body. The
    /// request has no client address, so `sessionAffinity` does not apply, and no
    /// `X-Forwarded-*` headers are added. Counted in the Service's metrics.
    pub async fn forward(&self, namespace: &str, request: http::Request<Body>) -> http::Response<Body> {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let route = {
            let snapshot = self.shared.snapshot.load();
            dispatch::request_authority(&parts)
                .and_then(|authority| {
                    snapshot.resolve_authority(namespace, &authority, &self.shared.config.cluster_domain)
                })
                .map(|(service, port)| snapshot::Route { service: service.clone(), port })
        };
        let Some(route) = route else {
            let host = dispatch::request_authority(&parts).map(|a| a.to_string()).unwrap_or_default();
            return dispatch::error_response(
                http::StatusCode::BAD_GATEWAY,
                format!("\"{host}\" is not a Service reachable from namespace {namespace}"),
            );
        };
        dispatch::prepare_headers(&mut parts, None);
        let response = dispatch::dispatch(&self.shared, &route, None, parts, body).await;
        route.service.metrics.observe(response.status(), started.elapsed());
        response
    }

    /// Waits until the informers have synced and the first routing tables are in use.
    pub async fn ready(&self) {
        let mut ready = self.shared.ready.clone();
        // The sender lives as long as the routes task, which the last handle aborts.
        let _ = ready.wait_for(|r| *r).await;
    }
}
