//! `flotilla server`: the control plane in one process.

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flotilla_store::{RedbStore, RedbStoreOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServerCommand {
    /// Where the store, certificates, token and kubeconfig live.
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The API server's listen address (port 0 picks a free port).
    #[arg(long, env = "FLOTILLA_API_ADDR", default_value = "127.0.0.1:6443")]
    api_addr: SocketAddr,
    /// Serve the API over plain HTTP (local experiments only; tokens are still checked).
    #[arg(long, env = "FLOTILLA_INSECURE_HTTP")]
    insecure_http: bool,
    /// Extra DNS names or IP addresses for the API server's certificate.
    #[arg(long = "tls-san", env = "FLOTILLA_TLS_SAN", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// Manifests (files or directories) to apply once the API serves, as k3s applies
    /// its manifests directory: objects are created, or updated when they changed.
    #[arg(long = "manifests", env = "FLOTILLA_MANIFESTS", value_delimiter = ',')]
    manifests: Vec<String>,
    /// How many store revisions of watch history to keep.
    #[arg(long, env = "FLOTILLA_WATCH_HISTORY", default_value_t = 100_000)]
    watch_history: u64,
    /// MiB of memory the store's page cache may hold (redb's own default is 1024).
    #[arg(long, env = "FLOTILLA_STORE_CACHE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    store_cache_mib: u64,
    /// Log format.
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `flotilla_apiserver=debug` (FLOTILLA_LOG also works).
    #[arg(long, env = "FLOTILLA_LOG", default_value = "info")]
    log_level: String,
    /// How the scheduler scores nodes: LeastAllocated spreads pods, MostAllocated packs
    /// them (bin packing).
    #[arg(long, env = "FLOTILLA_SCHEDULER_SCORING", default_value = "LeastAllocated")]
    scheduler_scoring: flotilla_scheduler::Scoring,
    /// Controllers to run, as kube-controller-manager's `--controllers`: `*` for all, or
    /// names (`replicaset`, `deployment`, `garbagecollector`), `-NAME` to leave one out;
    /// empty runs none (an API server and nodes only).
    #[arg(long, env = "FLOTILLA_CONTROLLERS", value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// How long a node may go without a heartbeat before it is marked Unknown and tainted
    /// unreachable (kube-controller-manager's flag).
    #[arg(long, env = "FLOTILLA_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How long an unreachable node's pods stay before they are evicted and replaced
    /// elsewhere (Kubernetes' default toleration of the unreachable taint).
    #[arg(long, env = "FLOTILLA_POD_EVICTION_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pod_eviction_timeout: std::time::Duration,
    /// How long Events are kept after they last happened (kube-apiserver's flag).
    #[arg(long, env = "FLOTILLA_EVENT_TTL", default_value = "60m", value_parser = parse_duration)]
    event_ttl: std::time::Duration,
    /// How often the nodes' stats are scraped for `kubectl top` and the autoscaler
    /// (metrics-server's flag): usage is the rate between the last two scrapes.
    #[arg(long, env = "FLOTILLA_METRIC_RESOLUTION", default_value = "15s", value_parser = parse_positive_duration)]
    metric_resolution: std::time::Duration,
    /// How often each HorizontalPodAutoscaler is evaluated (kube-controller-manager's flag).
    #[arg(
        long,
        env = "FLOTILLA_HORIZONTAL_POD_AUTOSCALER_SYNC_PERIOD",
        default_value = "15s",
        value_parser = parse_positive_duration
    )]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long a Deployment annotated `flotilla.dev/scale-to-zero: "true"` (and no HPA)
    /// may serve nothing before it is scaled to zero, unless its
    /// `flotilla.dev/scale-to-zero-idle` says otherwise.
    #[arg(long, env = "FLOTILLA_SCALE_TO_ZERO_IDLE", default_value = "5m", value_parser = parse_positive_duration)]
    scale_to_zero_idle: std::time::Duration,
    /// The range Service cluster IPs come from (kube-apiserver's flag); its first
    /// address is the `kubernetes` Service's.
    #[arg(long, env = "FLOTILLA_SERVICE_CLUSTER_IP_RANGE", default_value = "10.96.0.0/12")]
    service_cluster_ip_range: flotilla_apiserver::ServiceCidr,
    /// The range Service node ports come from (kube-apiserver's flag).
    #[arg(long, env = "FLOTILLA_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767")]
    service_node_port_range: flotilla_apiserver::NodePortRange,
    /// The Ingress listener for plain HTTP (empty: none).
    #[arg(long, env = "FLOTILLA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: super::proxy::OptionalAddr,
    /// The Ingress listener for HTTPS, with certificates from the Ingresses' TLS Secrets
    /// (empty: none).
    #[arg(long, env = "FLOTILLA_HTTPS_ADDR", default_value = "127.0.0.1:8443")]
    https_addr: super::proxy::OptionalAddr,
    /// Read-only requests (get, list) in flight at once, past which the API server
    /// answers 429 with `Retry-After: 1` (kube-apiserver's flag); watches, logs and proxy
    /// requests are not counted. 0: no limit.
    #[arg(long, env = "FLOTILLA_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    max_requests_inflight: usize,
    /// Mutating requests (create, update, patch, delete) in flight at once, past which the
    /// API server answers 429 with `Retry-After: 1` (kube-apiserver's flag). 0: no limit.
    #[arg(long, env = "FLOTILLA_MAX_MUTATING_REQUESTS_INFLIGHT", default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    proxy: super::proxy::ProxyArgs,
    #[command(flatten)]
    node: NodeArgs,
}

/// What every listener of the process allows its clients (the API server, the kubelet
/// API, the Ingress, NodePort and LoadBalancer listeners).
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// How long a client may take to finish a TLS handshake before it is disconnected.
    #[arg(long, env = "FLOTILLA_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: std::time::Duration,
    /// How long a client may take to send a request's headers before it is disconnected
    /// (kube-apiserver's 32s).
    #[arg(long, env = "FLOTILLA_HEADER_READ_TIMEOUT", default_value = "32s", value_parser = parse_positive_duration)]
    pub header_read_timeout: std::time::Duration,
    /// How long a connection (HTTP/1.1 keep-alive or HTTP/2) may stay open with no request
    /// in flight before it is closed (kube-apiserver's 90s).
    #[arg(long, env = "FLOTILLA_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_positive_duration)]
    pub idle_timeout: std::time::Duration,
    /// Connections open at once on each listener; past it the listener stops accepting
    /// until one closes.
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl ConnectionArgs {
    /// The limits every listener serves within.
    pub fn limits(&self) -> flotilla_client::ConnectionLimits {
        flotilla_client::ConnectionLimits {
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            ..flotilla_client::ConnectionLimits::default()
        }
    }
}

/// The built-in node agent's settings (`flotilla agent` takes the same).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name (default: this machine's hostname).
    #[arg(long, env = "FLOTILLA_NODE_NAME")]
    pub node_name: Option<String>,
    /// Directories of images to preload: `DIR/NAME.wasm` is `NAME:latest`,
    /// `DIR/NAME/TAG.wasm` is `NAME:TAG`. The built-in examples are always there.
    #[arg(long = "images", env = "FLOTILLA_IMAGES", value_delimiter = ',')]
    pub images: Vec<PathBuf>,
    /// The most pods the node runs (kubelet's --max-pods; wasm pods are small).
    #[arg(long, env = "FLOTILLA_MAX_PODS", default_value_t = 1000)]
    pub max_pods: u32,
    /// The range of the node's pod addresses.
    #[arg(long, env = "FLOTILLA_POD_CIDR", default_value = "10.244.0.0/16")]
    pub pod_cidr: String,
    /// First restart back-off of a crashing container, doubling up to 5 min.
    #[arg(long, env = "FLOTILLA_CRASH_BACKOFF", default_value = "10s", value_parser = parse_duration)]
    pub crash_backoff: std::time::Duration,
    /// How often the node renews its Ready condition (kubelet's flag).
    #[arg(long, env = "FLOTILLA_NODE_STATUS_UPDATE_FREQUENCY", default_value = "10s", value_parser = parse_duration)]
    pub node_status_update_frequency: std::time::Duration,
    /// Component instances alive at once on the node (the pooling allocator's size).
    #[arg(long, env = "FLOTILLA_MAX_INSTANCES", default_value_t = 1000)]
    pub max_instances: u32,
    /// Let pods mount `hostPath` volumes, i.e. the node's own files (refused by default,
    /// with CreateContainerConfigError).
    #[arg(long, env = "FLOTILLA_ALLOW_HOST_PATH_VOLUMES")]
    pub allow_host_path_volumes: bool,
    /// Let pods run `file:///PATH` images, i.e. any file the node can read (refused by
    /// default, with ErrImagePull; push images with `flotilla image push` instead).
    #[arg(long, env = "FLOTILLA_ALLOW_FILE_IMAGES")]
    pub allow_file_images: bool,
    /// Run `image: busybox` (any tag) as the built-in toolbox (`sh` and the everyday
    /// commands) and `image: nginx` (any tag) as a built-in static file server; an image
    /// pushed under the same name wins. `--builtin-images=false` turns the aliases off
    /// (`kubectl exec` still runs its commands from the toolbox).
    #[arg(long, env = "FLOTILLA_BUILTIN_IMAGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub builtin_images: bool,
    /// How often the node measures emptyDir volumes against their `sizeLimit`, evicting a
    /// pod whose volume is over it (kubelet's eviction monitoring period).
    #[arg(
        long,
        env = "FLOTILLA_EVICTION_MONITORING_PERIOD",
        default_value = "10s",
        value_parser = parse_positive_duration
    )]
    pub eviction_monitoring_period: std::time::Duration,
}

/// Logs to stderr with `filter` (`info`, `flotilla_node=debug`) as text or JSON lines.
pub fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("invalid --log-level {filter:?}"))?;
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    Ok(())
}

/// The process's one metrics registry: every component registers its families in it
/// (each next to the code that updates them), and `/metrics` serves it whole. On Linux it
/// also has the process's own (`process_cpu_seconds_total`, `process_resident_memory_bytes`…).
pub fn metrics_registry() -> anyhow::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .context("registering the process metrics")?;
    Ok(registry)
}

/// `250ms`, `10s`, `5m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 500ms, 10s or 5m"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(number)),
        "s" | "" => Ok(std::time::Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long a duration")),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s or m)")),
    }
}

/// A [`parse_duration`] that must not be zero (a period).
fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text).and_then(|d| if d.is_zero() { Err(format!("{text:?}: must be more than 0")) } else { Ok(d) })
}

impl NodeArgs {
    /// The node's configuration, runtime and image store under `data_dir`.
    pub fn build(
        &self,
        data_dir: &std::path::Path,
        metrics: &prometheus::Registry,
    ) -> anyhow::Result<(flotilla_node::NodeConfig, flotilla_runtime::Runtime, flotilla_node::ImageStore)> {
        let name = match &self.node_name {
            Some(name) => name.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_lowercase())
                .filter(|h| flotilla_api::is_dns1123_subdomain(h).is_empty())
                .unwrap_or_else(|| "flotilla".to_string()),
        };
        let (ip, prefix) = self
            .pod_cidr
            .split_once('/')
            .and_then(|(ip, prefix)| Some((ip.parse().ok()?, prefix.parse::<u8>().ok().filter(|p| *p <= 30)?)))
            .with_context(|| format!("--pod-cidr {}: want an IPv4 range such as 10.244.0.0/16", self.pod_cidr))?;
        let mut config = flotilla_node::NodeConfig::for_this_machine(&name, data_dir.to_path_buf());
        config.pod_cidr = (ip, prefix);
        config.max_pods = self.max_pods;
        config.backoff_initial = self.crash_backoff;
        config.heartbeat = self.node_status_update_frequency;
        config.backoff_max = std::time::Duration::from_secs(300).max(self.crash_backoff);
        config.allow_host_path_volumes = self.allow_host_path_volumes;
        config.eviction_monitoring_period = self.eviction_monitoring_period;
        config.metrics = metrics.clone();
        let runtime = flotilla_runtime::Runtime::new(flotilla_runtime::RuntimeConfig {
            cache_dir: Some(data_dir.join("compiled")),
            max_instances: self.max_instances,
            ..flotilla_runtime::RuntimeConfig::default()
        })
        .context("starting the wasm runtime")?;
        for dir in &self.images {
            anyhow::ensure!(dir.is_dir(), "--images {}: not a directory", dir.display());
        }
        let images = flotilla_node::ImageStore::new(runtime.clone(), data_dir.join("images"), self.images.clone());
        images.allow_file_images(self.allow_file_images);
        // The toolbox and nginx are built-in images (below), not examples by name.
        for (example, path) in flotilla_examples::ALL.iter().filter(|(e, _)| !["toolbox", "nginx"].contains(e)) {
            images.preload(example, PathBuf::from(path))?;
        }
        let builtin = data_dir.join("builtin");
        let toolbox = install(&builtin.join("toolbox.wasm"), flotilla_examples::TOOLBOX_WASM)?;
        images.set_toolbox(toolbox.clone());
        if self.builtin_images {
            images.builtin("busybox", toolbox);
            images.builtin("nginx", install(&builtin.join("nginx.wasm"), flotilla_examples::NGINX_WASM)?);
        }
        Ok((config, runtime, images))
    }

    /// The built-in images as `flotilla image ls` lists them.
    pub fn builtin_images(&self) -> Vec<(String, String)> {
        if !self.builtin_images {
            return Vec::new();
        }
        vec![
            ("busybox".into(), "the toolbox: sh, ls, cat, grep, tar, wget, curl and more".into()),
            ("nginx".into(), "a static file server for /usr/share/nginx/html".into()),
        ]
    }
}

/// Writes a built-in image's `bytes` to `path` unless it holds them already.
fn install(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        let parent = path.parent().unwrap_or(path);
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let temporary = path.with_extension("wasm.tmp");
        std::fs::write(&temporary, bytes).with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path.to_path_buf())
}

impl ServerCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        // Everything is checked before anything listens.
        for path in &self.manifests {
            anyhow::ensure!(std::path::Path::new(path).exists(), "--manifests {path}: no such file or directory");
        }
        let mut controllers_config = flotilla_controllers::ControllersConfig::default();
        let names: Vec<String> = self.controllers.iter().filter(|n| !n.is_empty()).cloned().collect();
        controllers_config.select(&names).map_err(|e| anyhow::anyhow!("--controllers: {e}"))?;
        controllers_config.node_lifecycle.grace_period = self.node_monitor_grace_period;
        controllers_config.node_lifecycle.eviction_timeout = self.pod_eviction_timeout;
        controllers_config.event_ttl = self.event_ttl;
        controllers_config.hpa.sync_period = self.horizontal_pod_autoscaler_sync_period;
        controllers_config.scale_to_zero_idle = self.scale_to_zero_idle;
        init_logging(&self.log_level, self.log_format)?;
        let data_dir = self.data_dir.unwrap_or_else(crate::default_data_dir);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let metrics = metrics_registry()?;
        let supervisor = flotilla_client::Supervisor::register(&metrics).context("registering the task metrics")?;
        controllers_config.metrics = metrics.clone();
        controllers_config.supervisor = supervisor.clone();
        let (mut node_config, runtime, images) = self.node.build(&data_dir, &metrics)?;
        node_config.supervisor = supervisor.clone();
        let kubelets = flotilla_client::Kubelets::default();
        let store_path = data_dir.join("store.redb");
        let options = RedbStoreOptions {
            history: self.watch_history,
            metrics: metrics.clone(),
            cache_bytes: usize::try_from(self.store_cache_mib << 20).unwrap_or(usize::MAX),
            ..RedbStoreOptions::default()
        };
        let store = RedbStore::open(&store_path, options)
            .with_context(|| format!("opening the store {}", store_path.display()))?;
        let config = flotilla_apiserver::Config {
            data_dir: data_dir.clone(),
            api_addr: self.api_addr,
            insecure_http: self.insecure_http,
            tls_names: self.tls_sans,
            kubelets: kubelets.clone(),
            metric_resolution: self.metric_resolution,
            service_cidr: self.service_cluster_ip_range,
            service_node_port_range: self.service_node_port_range,
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            limits: self.connections.limits(),
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            builtin_images: self.node.builtin_images(),
        };
        let running = flotilla_apiserver::start(config, Arc::new(store)).await?;
        let cluster = running.cluster.clone();
        let scheduler = Arc::new(cluster.with_field_manager("default-scheduler"));
        let scheduling = flotilla_scheduler::SchedulerConfig {
            scoring: self.scheduler_scoring,
            metrics: metrics.clone(),
            supervisor: supervisor.clone(),
            ..Default::default()
        };
        tokio::spawn(flotilla_scheduler::run(scheduler, scheduling));
        let controllers = Arc::new(cluster.with_field_manager("kube-controller-manager"));
        controllers_config.hpa.metrics = Some(super::resource_metrics::autoscaler_source(running.resource_metrics()));
        tokio::spawn(flotilla_controllers::run(controllers, controllers_config));
        let node_cluster = Arc::new(cluster.with_field_manager(&format!("kubelet/{}", node_config.name)));
        let node = flotilla_node::Node::start(node_cluster, runtime.clone(), images, node_config).await?;
        kubelets.register(node.name(), Arc::new(node.clone()));
        let proxy_cluster: Arc<dyn flotilla_client::Cluster> = Arc::new(cluster.with_field_manager("flotilla-proxy"));
        // Pods on agents are reached through their kubelet API, with the node token.
        supervisor.spawn("follow-nodes", {
            let (kubelets, cluster, token) = (kubelets.clone(), proxy_cluster.clone(), running.node_token.clone());
            move || kubelets.clone().follow_nodes(cluster.clone(), token.clone())
        });
        super::proxy::ensure_ingress_class(proxy_cluster.as_ref(), "flotilla").await?;
        let proxy = super::proxy::start(
            &self.proxy,
            proxy_cluster,
            kubelets.clone(),
            &runtime,
            self.http_addr.0,
            self.https_addr.0,
            super::proxy::Process { metrics: &metrics, limits: self.connections.limits(), supervisor: &supervisor },
        )
        .await?;
        if !self.manifests.is_empty() {
            let client = crate::client::Client::from_kubeconfig(&running.kubeconfig)?;
            let namespace = client.default_namespace.clone();
            super::apply::apply_files(&client, &self.manifests, None, &namespace)
                .await
                .context("applying --manifests")?;
            for line in super::proxy::try_lines(&cluster, proxy.http_addr(), proxy.https_addr()).await {
                println!("{line}");
            }
        }
        // Scripts and tests wait for this line: the kubeconfig is written and the API serves.
        let ingress = [("http", proxy.http_addr()), ("https", proxy.https_addr())]
            .into_iter()
            .filter_map(|(scheme, addr)| Some(format!("{scheme}://{}", addr?)))
            .collect::<Vec<_>>();
        let ingress = if ingress.is_empty() { "none".to_string() } else { ingress.join(" ") };
        println!(
            "flotilla API server listening on {} (kubeconfig: {}, node join token: {}, ingress: {ingress})",
            running.local_addr,
            running.kubeconfig.display(),
            running.join_token.display()
        );
        // The API server's task restarts its loops after a panic: it ends only when the
        // runtime does.
        tokio::select! {
            result = running.task => result.context("the API server stopped")?,
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                tracing::info!("shutting down");
            }
        }
        Ok(())
    }
}
