//! The Service proxy's flags and wiring, shared by `server` and `agent`: start
//! `flotilla-proxy` over this process's kubelets, and plug it into the runtime so that
//! pods reach Services in process.

use anyhow::Context as _;
use clap::Args;
use flotilla_client::{Body, Cluster, Kubelets};
use flotilla_proxy::{Proxy, ProxyConfig};
use flotilla_runtime::{BoxFuture, Runtime, ServiceRouter};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What every node's proxy listens on (as kube-proxy's flags).
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The address NodePort Services listen on (kube-proxy's `--nodeport-addresses`).
    #[arg(long, env = "FLOTILLA_NODE_PORT_ADDRESS", default_value = "0.0.0.0")]
    pub node_port_address: IpAddr,
    /// The address LoadBalancer Services listen on, on their own port, and report in
    /// `status.loadBalancer.ingress` (as k3s's ServiceLB).
    #[arg(long, env = "FLOTILLA_LOAD_BALANCER_ADDRESS", default_value = "127.0.0.1")]
    pub load_balancer_address: IpAddr,
    /// The cluster's DNS domain: `SVC.NS.svc.DOMAIN` names a Service.
    #[arg(long, env = "FLOTILLA_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// A listen address, or none (an empty flag value turns a listener off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(OptionalAddr(None));
        }
        text.parse()
            .map(|addr| OptionalAddr(Some(addr)))
            .map_err(|e| format!("{text:?} is not an address such as 127.0.0.1:8080: {e}"))
    }
}

/// The proxy as the runtime's [`ServiceRouter`]: a pod's `http://SVC` goes through it.
#[derive(Debug)]
struct ServiceRoutes(Proxy);

impl ServiceRouter for ServiceRoutes {
    fn is_service_host(&self, namespace: &str, authority: &http::uri::Authority) -> bool {
        self.0.is_service_host(namespace, authority)
    }

    fn send(&self, namespace: &str, request: http::Request<Body>) -> BoxFuture<http::Response<Body>> {
        let proxy = self.0.clone();
        let namespace = namespace.to_string();
        Box::pin(async move { proxy.forward(&namespace, request).await })
    }
}

/// What the process gives each of its components: the metrics registry, the listeners'
/// limits and the supervisor of its tasks.
#[derive(Debug, Clone, Copy)]
pub struct Process<'a> {
    pub metrics: &'a prometheus::Registry,
    pub limits: flotilla_client::ConnectionLimits,
    pub supervisor: &'a flotilla_client::Supervisor,
}

/// Starts the proxy (Ingress on `http_addr`/`https_addr` when given; its metrics, limits
/// and supervision from `process`) and routes the runtime's Service calls through it.
pub async fn start(
    args: &ProxyArgs,
    cluster: Arc<dyn Cluster>,
    kubelets: Kubelets,
    runtime: &Runtime,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    process: Process<'_>,
) -> anyhow::Result<Proxy> {
    let Process { metrics, limits, supervisor } = process;
    let config = ProxyConfig {
        limits,
        supervisor: supervisor.clone(),
        http_addr,
        https_addr,
        node_port_address: args.node_port_address,
        load_balancer_address: args.load_balancer_address,
        cluster_domain: args.cluster_domain.clone(),
        metrics: metrics.clone(),
        ..ProxyConfig::default()
    };
    let proxy = Proxy::start(cluster, kubelets, config).await.context("starting the Service proxy")?;
    runtime.set_service_router(Arc::new(ServiceRoutes(proxy.clone()))).context("routing pods' Service calls")?;
    Ok(proxy)
}

/// The IngressClass the proxy serves, made the default one (as k3s ships Traefik's).
pub async fn ensure_ingress_class(cluster: &dyn Cluster, name: &str) -> anyhow::Result<()> {
    let rt = flotilla_client::resource("networking.k8s.io/v1", "IngressClass");
    let class = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "flotilla.dev/ingress"},
    });
    match cluster.create(rt, None, &class).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == flotilla_api::Reason::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating IngressClass {name}")),
    }
}

/// A `curl` to try for each host the Ingresses serve (printed after `--manifests`).
pub async fn try_lines(
    cluster: &dyn Cluster,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
) -> Vec<String> {
    let rt = flotilla_client::resource("networking.k8s.io/v1", "Ingress");
    let Ok(list) = cluster.list(rt, None, &Default::default()).await else { return Vec::new() };
    let mut lines = Vec::new();
    for ingress in list["items"].as_array().into_iter().flatten() {
        let name = flotilla_client::object_name(ingress);
        let tls_hosts: Vec<&str> = ingress["spec"]["tls"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["hosts"].as_array().into_iter().flatten().filter_map(|h| h.as_str()))
            .collect();
        for host in ingress["spec"]["rules"].as_array().into_iter().flatten().filter_map(|r| r["host"].as_str()) {
            if let Some(addr) = http_addr {
                lines.push(format!("ingress {name}: curl -H 'Host: {host}' http://{addr}/"));
            }
            if let Some(addr) = https_addr.filter(|_| tls_hosts.contains(&host)) {
                let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
                lines.push(format!("ingress {name}: curl -k --resolve {resolve} https://{host}:{}/", addr.port()));
            }
        }
    }
    lines
}
