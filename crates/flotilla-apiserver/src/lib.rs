//! Flotilla's API server: the Kubernetes REST API over HTTPS, backed by a
//! [`flotilla_store::Store`].
//!
//! It owns routing, authentication, discovery, the verbs' semantics (system fields,
//! optimistic concurrency, patches, finalizers, subresources), watches, the server's
//! certificates and kubeconfig, the namespace lifecycle, and Services' cluster IPs and
//! node ports (allocated from the ranges in [`Config`], with the `kubernetes` Service),
//! and the resource metrics API (`metrics.k8s.io`, from scraping the nodes' kubelets, as
//! metrics-server does; [`ResourceMetrics`] is the same usage for the autoscaler).
//! It serves within [`ConnectionLimits`] (through [`flotilla_client::HttpServer`], as
//! every listener of the process does), caps the requests in flight as kube-apiserver's
//! `--max-requests-inflight` does, and runs its accept loop and background loops under
//! [`Config::supervisor`]: a panic in one is logged, counted and the loop restarted.
//! It must not run pods or reconcile workloads: controllers and node agents are clients
//! of this API like any other, through the store's objects and watches.

mod apply;
mod discovery;
mod error;
mod eviction;
mod http;
mod images;
mod inflight;
mod kubelet;
mod local;
mod metrics;
mod namespaces;
mod openapi;
mod patch;
mod pki;
mod protobuf;
mod registry;
mod resource_metrics;
mod services;
mod strategic;
mod tables;
mod watch;

pub use error::{Error, Result};
pub use http::MAX_BODY_BYTES;
pub use local::LocalCluster;
pub use patch::PatchType;
pub use pki::{Identity, PkiPaths, write_kubeconfig};
pub use registry::{DeleteOptions, Deleted, FieldValidation, ListQuery, Registry, WriteOptions};
pub use resource_metrics::{ContainerUsage, NodeUsage, PodUsage, ResourceMetrics};
pub use services::{NodePortRange, ServiceCidr};

use flotilla_client::{ConnectionLimits, HttpServer};
use flotilla_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::Instrument as _;

/// How the API server listens.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the certificates, token and kubeconfig live.
    pub data_dir: PathBuf,
    /// The address to listen on; port 0 picks a free port.
    pub api_addr: SocketAddr,
    /// Serve plain HTTP instead of HTTPS (local experiments only; the token is still
    /// required).
    pub insecure_http: bool,
    /// Extra DNS names or IPs for the serving certificate.
    pub tls_names: Vec<String>,
    /// The nodes' agents, for `pods/log`, `pods/proxy` and their stats.
    pub kubelets: flotilla_client::Kubelets,
    /// How often the nodes' stats are scraped for the resource metrics (metrics-server's
    /// `--metric-resolution`): usage is the rate between the last two scrapes.
    pub metric_resolution: std::time::Duration,
    /// The range Service cluster IPs come from (`--service-cluster-ip-range`).
    pub service_cidr: ServiceCidr,
    /// The range Service node ports come from (`--service-node-port-range`).
    pub service_node_port_range: NodePortRange,
    /// Where the server registers its metrics (`apiserver_*`), and what `/metrics`
    /// serves: every family of this registry, the other components' too.
    pub metrics: prometheus::Registry,
    /// Runs the accept loop and the background loops, restarting them after a panic, and
    /// counts the panics of requests' handlers.
    pub supervisor: flotilla_client::Supervisor,
    /// How long clients may take and how many connections they may hold.
    pub limits: ConnectionLimits,
    /// Requests in flight at once that do not change anything (get, list), past which
    /// the server answers 429 (`--max-requests-inflight`); 0 for no limit.
    pub max_requests_inflight: usize,
    /// Requests in flight at once that change something (create, update, patch,
    /// delete), past which the server answers 429 (`--max-mutating-requests-inflight`);
    /// 0 for no limit.
    pub max_mutating_requests_inflight: usize,
    /// The built-in images the nodes run (`busybox`, `nginx`), as `flotilla image ls`
    /// lists them: `(name, what it is)`.
    pub builtin_images: Vec<(String, String)>,
}

impl Config {
    /// A server keeping its files in `data_dir`, serving HTTPS on a free loopback port,
    /// with kube-apiserver's default Service ranges; change fields from there:
    /// `Config { insecure_http: true, ..Config::new(dir) }`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            insecure_http: false,
            tls_names: Vec::new(),
            kubelets: flotilla_client::Kubelets::default(),
            metric_resolution: std::time::Duration::from_secs(15),
            service_cidr: ServiceCidr::default(),
            service_node_port_range: NodePortRange::default(),
            metrics: prometheus::Registry::new(),
            supervisor: flotilla_client::Supervisor::default(),
            limits: ConnectionLimits::default(),
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            builtin_images: Vec::new(),
        }
    }
}

/// A started API server.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (with the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// The file holding the token node agents join with (`flotilla agent --token`).
    pub join_token: PathBuf,
    /// The node token (the secret of the join token): what this process's components
    /// present to other nodes' kubelet APIs.
    pub node_token: String,
    /// The in-process client of this server, for the components `flotilla server` runs.
    pub cluster: LocalCluster,
    /// Ends when the server stops accepting connections.
    pub task: tokio::task::JoinHandle<()>,
    resource_metrics: ResourceMetrics,
}

impl Running {
    /// The pods' and nodes' usage the server scrapes (what `metrics.k8s.io` serves), for
    /// the autoscaler.
    pub fn resource_metrics(&self) -> ResourceMetrics {
        self.resource_metrics.clone()
    }
}

/// Loads or makes the server's identity, bootstraps the system namespaces, binds the
/// listener, makes the `kubernetes` Service, writes the kubeconfig, and starts serving.
pub async fn start(config: Config, store: Arc<dyn Store>) -> Result<Running> {
    let paths = PkiPaths::new(&config.data_dir);
    let identity = pki::load_or_create(&config.data_dir, &config.tls_names)?;
    let metrics = metrics::ApiMetrics::register(&config.metrics).map_err(Error::Metrics)?;
    let registry = Registry::with_service_ranges(store, config.service_cidr, config.service_node_port_range)
        .with_metrics(metrics.clone());
    namespaces::bootstrap(&registry).await.map_err(|e| Error::Tls(format!("bootstrapping namespaces: {e}")))?;

    let listener =
        TcpListener::bind(config.api_addr).await.map_err(|source| Error::Bind { addr: config.api_addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Bind { addr: config.api_addr, source })?;
    if let Err(e) = services::bootstrap_kubernetes(&registry, local_addr.port()).await {
        // As kube-apiserver, which keeps retrying: the API still serves without it.
        tracing::warn!(error = %e, "could not make the kubernetes Service");
    }
    let client_addr = pki::client_address(local_addr);
    let scheme = if config.insecure_http { "http" } else { "https" };
    write_kubeconfig(&paths.kubeconfig, &format!("{scheme}://{client_addr}"), &identity.ca_pem, &identity.admin_token)?;

    let namespace_poke = Arc::new(Notify::new());
    let supervisor = config.supervisor.clone();
    let finalizer = {
        let (registry, poke, supervisor) = (registry.clone(), namespace_poke.clone(), supervisor.clone());
        move || {
            namespaces::run_finalizer(registry.clone(), poke.clone(), supervisor.clone())
                .instrument(tracing::info_span!("namespace-finalizer"))
        }
    };
    let resource_metrics = ResourceMetrics::default();
    let scraper = {
        let (usage, registry, kubelets) = (resource_metrics.clone(), registry.clone(), config.kubelets.clone());
        let (token, resolution) = (identity.node_token.clone(), config.metric_resolution);
        move || {
            resource_metrics::scrape(usage.clone(), registry.clone(), kubelets.clone(), token.clone(), resolution)
                .instrument(tracing::info_span!("resource-metrics"))
        }
    };
    let inflight = inflight::InFlightLimits::new(
        config.max_requests_inflight,
        config.max_mutating_requests_inflight,
        &config.metrics,
    )
    .map_err(Error::Metrics)?;
    let state = Arc::new(http::ApiState {
        registry,
        admin_token: identity.admin_token.clone(),
        node_token: identity.node_token.clone(),
        ca_pem: identity.ca_pem.clone(),
        server_address: client_addr.to_string(),
        namespace_poke: namespace_poke.clone(),
        kubelets: config.kubelets.clone(),
        images_dir: config.data_dir.join("images"),
        builtin_images: config.builtin_images.clone(),
        request_ids: AtomicU64::new(1),
        metrics,
        metrics_registry: config.metrics.clone(),
        resource_metrics: resource_metrics.clone(),
    });
    let cluster = LocalCluster::new(state.registry.clone(), namespace_poke);
    let tls = (!config.insecure_http).then(|| tokio_rustls::TlsAcceptor::from(identity.tls.clone()));
    tracing::info!(addr = %local_addr, scheme, "API server listening");
    let server = HttpServer::new(config.limits, supervisor.clone(), "apiserver-request");
    let listener = Arc::new(listener);
    let accept = move || {
        let (state, inflight) = (state.clone(), inflight.clone());
        let handler = move |_peer, request| inflight.clone().serve(request, state.clone());
        server.clone().serve(listener.clone(), tls.clone(), handler)
    };
    // The server's background loops live and end with its accept loop (aborting `task`
    // stops them all, and lets go of the store). Each is supervised: a panic restarts
    // it, and never ends the others.
    let task = tokio::spawn(async move {
        tokio::join!(
            supervisor.run("apiserver-accept", accept),
            supervisor.run("namespace-finalizer", finalizer),
            supervisor.run("resource-metrics", scraper),
        );
        // Should every loop return, the task stays (it is what `flotilla server` waits on).
        std::future::pending::<()>().await
    });
    Ok(Running {
        local_addr,
        kubeconfig: paths.kubeconfig,
        join_token: paths.join_token,
        node_token: identity.node_token.clone(),
        cluster,
        task,
        resource_metrics,
    })
}

/// Entry points for the fuzz targets in `fuzz/`, not an API: they reach what the HTTP
/// edge does (protobuf bodies, strategic merge, the whole router) without a socket.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Registry, Result, http, metrics};
    use hyper_util::rt::TokioIo;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    /// Decodes an `application/vnd.kubernetes.protobuf` object body, as a POST or PUT does.
    pub fn decode_protobuf(body: &[u8]) -> Result<serde_json::Value, flotilla_api::ApiError> {
        crate::protobuf::decode_object(body)
    }

    pub use crate::strategic::apply as strategic_merge;

    /// The server's router over `registry`, accepting `token` as the admin's.
    #[derive(Debug, Clone)]
    pub struct Router(Arc<http::ApiState>);

    impl Router {
        pub fn new(registry: Registry, token: &str) -> Result<Self> {
            let metrics_registry = prometheus::Registry::new();
            let metrics = metrics::ApiMetrics::register(&metrics_registry).map_err(super::Error::Metrics)?;
            Ok(Router(Arc::new(http::ApiState {
                registry: registry.with_metrics(metrics.clone()),
                admin_token: token.to_string(),
                node_token: token.to_string(),
                ca_pem: String::new(),
                server_address: "127.0.0.1:6443".into(),
                namespace_poke: Arc::default(),
                kubelets: flotilla_client::Kubelets::default(),
                images_dir: std::env::temp_dir().join("flotilla-fuzz-images"),
                builtin_images: Vec::new(),
                request_ids: AtomicU64::new(1),
                metrics,
                metrics_registry,
                resource_metrics: crate::ResourceMetrics::default(),
            })))
        }

        /// Serves HTTP/1.1 on `io` (one end of an in-memory pipe) as a connection of the
        /// real server is served.
        pub async fn serve<IO>(&self, io: IO) -> Result<(), hyper::Error>
        where
            IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            let state = self.0.clone();
            let service = hyper::service::service_fn(move |request| http::handle(state.clone(), request));
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await
        }
    }
}
