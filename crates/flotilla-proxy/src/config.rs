//! How the proxy is configured.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How the proxy listens and what it allows.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The Ingress plain-HTTP listener (port 0 picks one); `None` for none.
    pub http_addr: Option<SocketAddr>,
    /// The Ingress HTTPS listener (port 0 picks one); `None` for none.
    pub https_addr: Option<SocketAddr>,
    /// NodePort listeners bind this address on each `nodePort`.
    pub node_port_address: IpAddr,
    /// LoadBalancer Services get a listener on this address on each service port, and
    /// this address in `status.loadBalancer.ingress`, as k3s' ServiceLB does.
    pub load_balancer_address: IpAddr,
    /// The DNS domain of Service names (`SVC.NS.svc.<cluster_domain>`).
    pub cluster_domain: String,
    /// The Ingresses served: those with this `ingressClassName` (or legacy
    /// `kubernetes.io/ingress.class` annotation), and those with no class when the
    /// IngressClass of this name is the default one
    /// (`ingressclass.kubernetes.io/is-default-class: "true"`) or no IngressClass is.
    pub ingress_class: String,
    /// How long a pod may take to answer (to its response head): 504 after.
    pub upstream_timeout: Duration,
    /// How long the listeners' clients may take (TLS handshake, headers, idle) and how
    /// many connections each listener holds.
    pub limits: flotilla_client::ConnectionLimits,
    /// Runs the listeners, restarting them after a panic, and counts the panics of
    /// requests' handlers (a panicking request gets a 500).
    pub supervisor: flotilla_client::Supervisor,
    /// The largest request head accepted (HTTP/1.1: 431 past it; HTTP/2: the header
    /// list size). At least 8 KiB, hyper's minimum.
    pub max_header_bytes: usize,
    /// The largest request body accepted: 413 past it.
    pub max_body_bytes: u64,
    /// Where the proxy registers its metrics (`flotilla_service_*`, `flotilla_ingress_*`);
    /// by default a registry of its own that nobody reads. One proxy per registry.
    pub metrics: prometheus::Registry,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        ProxyConfig {
            http_addr: Some(SocketAddr::new(any, 80)),
            https_addr: Some(SocketAddr::new(any, 443)),
            node_port_address: any,
            load_balancer_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cluster_domain: "cluster.local".into(),
            ingress_class: "flotilla".into(),
            upstream_timeout: Duration::from_secs(60),
            limits: flotilla_client::ConnectionLimits::default(),
            supervisor: flotilla_client::Supervisor::default(),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            metrics: prometheus::Registry::new(),
        }
    }
}
