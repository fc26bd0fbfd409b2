//! The routing tables: an immutable [`Snapshot`] built from the watched objects by a
//! [`Builder`], which keeps what must outlive one snapshot (in-flight counts, turn
//! counters, affinity tables, parsed certificates).

use crate::ProxyConfig;
use crate::balancer::{Affinity, POLICY_ANNOTATION, Policy};
use crate::ingress::IngressTable;
use crate::metrics::{ProxyMetrics, RouteMetrics, ServiceMetrics};
use crate::tls::{CertCache, TlsTable};
use flotilla_client::{Kubelet, Kubelets, ObjectKey};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours), as kube's.
const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// One pod a Service port sends requests to.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) namespace: Arc<str>,
    pub(crate) pod: Arc<str>,
    /// Its name under a headless Service: the EndpointSlice's `hostname` (the pod's
    /// `spec.hostname` under its `spec.subdomain`), else the pod's name.
    pub(crate) hostname: Arc<str>,
    pub(crate) node: Arc<str>,
    /// The node's agent when the snapshot was built (looked up again if it had none).
    pub(crate) kubelet: Option<Arc<dyn Kubelet>>,
    /// Requests in flight to the pod, shared by every snapshot.
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// A pod woken from zero that is bound but maybe not started: its node may hold a
    /// request until it starts (`START_WAIT_HEADER`).
    pub(crate) starting: bool,
}

#[cfg(test)]
impl Endpoint {
    pub(crate) fn for_test(pod: &str) -> Endpoint {
        Endpoint {
            namespace: Arc::from("default"),
            pod: Arc::from(pod),
            hostname: Arc::from(pod),
            node: Arc::from("node"),
            kubelet: None,
            in_flight: Arc::default(),
            starting: false,
        }
    }
}

/// A Service port and the endpoints its requests may go to.
#[derive(Debug)]
pub(crate) struct ServicePort {
    /// "" when unnamed.
    pub(crate) name: Box<str>,
    pub(crate) port: u16,
    /// The ready endpoints, or when none is, the serving and terminating ones.
    pub(crate) endpoints: Arc<[Endpoint]>,
}

/// A Service as the data plane routes it.
#[derive(Debug)]
pub(crate) struct Service {
    /// `namespace/name`.
    pub(crate) id: Arc<str>,
    pub(crate) ports: Vec<ServicePort>,
    pub(crate) policy: Policy,
    /// Set for `sessionAffinity: ClientIP`.
    pub(crate) affinity: Option<Arc<Affinity>>,
    /// The turn counter of round robin, shared by every snapshot.
    pub(crate) counter: Arc<AtomicUsize>,
    /// The Deployment (same namespace) to scale up from zero when a request finds no
    /// endpoint: one whose pods the Service selects and that may sit at zero (an HPA
    /// with `minReplicas: 0` targets it, or it is annotated `flotilla.dev/scale-to-zero`).
    pub(crate) wake: Option<Arc<str>>,
    /// Its series, shared by every snapshot (a headless Service's pods count in it too).
    pub(crate) metrics: Arc<ServiceMetrics>,
}

/// A Service port a request goes to.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) service: Arc<Service>,
    /// The index in `service.ports`.
    pub(crate) port: usize,
}

impl Route {
    pub(crate) fn port(&self) -> &ServicePort {
        &self.service.ports[self.port]
    }
}

/// What a NodePort or LoadBalancer listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PortKind {
    NodePort(u16),
    LoadBalancer(u16),
}

/// A NodePort or LoadBalancer listener the Services ask for.
#[derive(Debug, Clone)]
pub(crate) struct WantedListener {
    pub(crate) addr: SocketAddr,
    pub(crate) kind: PortKind,
    /// The Service's `namespace/name`.
    pub(crate) owner: Arc<str>,
}

/// A Service whose `status.loadBalancer` the proxy may have to write.
#[derive(Debug, Clone)]
pub(crate) struct LoadBalancerStatus {
    pub(crate) id: Arc<str>,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) resource_version: String,
    /// `spec.type: LoadBalancer`.
    pub(crate) wanted: bool,
    /// The status already names exactly this proxy's address.
    pub(crate) current: bool,
    /// The status names this proxy's address (among others, or for a Service that is no
    /// longer a LoadBalancer).
    pub(crate) mentions_us: bool,
    /// The listeners the Service needs, all of which must be its own before its status
    /// says it is served.
    pub(crate) addrs: Vec<SocketAddr>,
}

/// The routing tables at one moment.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// By namespace, then name.
    services: HashMap<String, HashMap<String, Arc<Service>>>,
    /// The pods of headless Services, each as a Service of one endpoint: by namespace,
    /// then `HOSTNAME.SERVICE` (cluster DNS's per-pod records of a headless Service).
    headless_pods: HashMap<String, HashMap<String, Arc<Service>>>,
    /// `(namespace, name)` of the headless Services.
    headless_services: HashSet<(String, String)>,
    by_cluster_ip: HashMap<IpAddr, Arc<Service>>,
    pub(crate) node_ports: HashMap<u16, Route>,
    pub(crate) load_balancer_ports: HashMap<u16, Route>,
    pub(crate) ingress: IngressTable,
    pub(crate) tls: TlsTable,
    pub(crate) listeners: Vec<WantedListener>,
    pub(crate) load_balancers: Vec<LoadBalancerStatus>,
    /// The agent of each node the endpoints are on, as the endpoints hold it.
    kubelets: HashMap<Arc<str>, Option<Arc<dyn Kubelet>>>,
}

impl Snapshot {
    /// Whether a node's agent was registered, replaced or removed since the snapshot
    /// was built (its endpoints hold the agent they were built with).
    pub(crate) fn kubelets_changed(&self, kubelets: &Kubelets) -> bool {
        self.kubelets.iter().any(|(node, held)| {
            let current = kubelets.get(node);
            match (held, &current) {
                (Some(held), Some(current)) => !std::ptr::addr_eq(Arc::as_ptr(held), Arc::as_ptr(current)),
                (None, None) => false,
                _ => true,
            }
        })
    }

    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services.get(namespace)?.get(name)
    }

    /// The Service and port index a pod in `namespace` means by `authority`, resolved
    /// as cluster DNS with the pod's search path would: `SVC`, `SVC.NS`, `SVC.NS.svc`,
    /// `SVC.NS.svc.DOMAIN`, a ClusterIP, and for a headless Service one pod of it as
    /// `HOST.SVC`, `HOST.SVC.NS`, `HOST.SVC.NS.svc[.DOMAIN]`. A headless Service has no
    /// port of its own (DNS gives pod addresses): any port reaches it.
    pub(crate) fn resolve_authority(
        &self,
        namespace: &str,
        authority: &http::uri::Authority,
        cluster_domain: &str,
    ) -> Option<(&Arc<Service>, usize)> {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let (service, headless) = match literal.parse::<IpAddr>() {
            Ok(ip) => (self.by_cluster_ip.get(&ip)?, false),
            Err(_) => {
                let host = crate::dispatch::lowercase(host.strip_suffix('.').unwrap_or(host));
                self.resolve_name(namespace, &host, cluster_domain)?
            }
        };
        let index = match service.ports.iter().position(|p| p.port == port) {
            Some(index) => index,
            None if headless && !service.ports.is_empty() => 0,
            None => return None,
        };
        Some((service, index))
    }

    /// A DNS name (lowercase, no trailing dot) → the Service, and whether it is headless.
    fn resolve_name(&self, namespace: &str, host: &str, cluster_domain: &str) -> Option<(&Arc<Service>, bool)> {
        let service = |ns: &str, name: &str| {
            let service = self.service(ns, name)?;
            Some((service, self.is_headless(ns, name)))
        };
        let pod = |ns: &str, hostname: &str, name: &str| {
            let pods = self.headless_pods.get(ns)?;
            pods.get(&format!("{hostname}.{name}")).map(|pod| (pod, true))
        };
        // The fully qualified forms end in `svc` or `svc.DOMAIN`.
        let qualified = host
            .strip_suffix(cluster_domain)
            .and_then(|h| h.strip_suffix(".svc."))
            .or_else(|| host.strip_suffix(".svc"));
        let labels: Vec<&str> = qualified.unwrap_or(host).split('.').collect();
        match (qualified.is_some(), labels.as_slice()) {
            (true, [name, ns]) => service(ns, name),
            (true, [hostname, name, ns]) => pod(ns, hostname, name),
            (false, [name]) => service(namespace, name),
            // `A.B`: the search path tries pod A of headless Service B here first, then
            // Service A of namespace B.
            (false, [first, second]) => pod(namespace, first, second).or_else(|| service(second, first)),
            (false, [hostname, name, ns]) => pod(ns, hostname, name),
            _ => None,
        }
    }

    fn is_headless(&self, namespace: &str, name: &str) -> bool {
        self.headless_services.contains(&(namespace.to_string(), name.to_string()))
    }
}

/// Each pod of a headless Service as a Service of its own (same ports, that one
/// endpoint), keyed `HOSTNAME.SERVICE`.
fn pods_of_headless(service: &Service, name: &str) -> Vec<(String, Arc<Service>)> {
    let mut hostnames: Vec<&Endpoint> = service.ports.iter().flat_map(|p| p.endpoints.iter()).collect();
    hostnames.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    hostnames.dedup_by(|a, b| a.hostname == b.hostname);
    hostnames
        .into_iter()
        .map(|endpoint| {
            let ports = service
                .ports
                .iter()
                .map(|port| ServicePort {
                    name: port.name.clone(),
                    port: port.port,
                    endpoints: port.endpoints.iter().filter(|e| e.pod == endpoint.pod).cloned().collect(),
                })
                .collect();
            let pod = Service {
                id: Arc::from(format!("{}/{}", service.id, endpoint.hostname)),
                ports,
                policy: Policy::RoundRobin,
                affinity: None,
                counter: Arc::default(),
                wake: None,
                metrics: service.metrics.clone(),
            };
            (format!("{}.{name}", endpoint.hostname), Arc::new(pod))
        })
        .collect()
}

/// The objects a snapshot is built from.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub(crate) services: Vec<Arc<Value>>,
    pub(crate) slices: Vec<Arc<Value>>,
    pub(crate) ingresses: Vec<Arc<Value>>,
    pub(crate) classes: Vec<Arc<Value>>,
    pub(crate) secrets: Vec<Arc<Value>>,
    pub(crate) deployments: Vec<Arc<Value>>,
    pub(crate) autoscalers: Vec<Arc<Value>>,
}

/// What a Service keeps from one snapshot to the next.
#[derive(Debug, Clone)]
struct ServiceState {
    counter: Arc<AtomicUsize>,
    affinity: Option<Arc<Affinity>>,
    metrics: Arc<ServiceMetrics>,
}

/// The labels of an Ingress route's series: namespace, Ingress, Service.
type RouteKey = (String, String, String);

/// Builds snapshots, keeping the state that outlives each.
#[derive(Debug)]
pub(crate) struct Builder {
    node_port_address: IpAddr,
    load_balancer_address: IpAddr,
    ingress_class: String,
    kubelets: Kubelets,
    /// By `namespace/pod`.
    in_flight: HashMap<Arc<str>, Arc<AtomicUsize>>,
    /// By `namespace/name`.
    states: HashMap<Arc<str>, ServiceState>,
    metrics: ProxyMetrics,
    /// The series of the Ingress routes.
    routes: HashMap<RouteKey, Arc<RouteMetrics>>,
    certs: CertCache,
    /// The warnings of the last build, so each is logged once.
    warned: HashSet<String>,
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

/// Oldest first, then by namespace and name: the order in which conflicting objects win.
pub(crate) fn by_age(objects: &[Arc<Value>]) -> Vec<&Value> {
    let mut sorted: Vec<&Value> = objects.iter().map(|o| o.as_ref()).collect();
    sorted.sort_by(|a, b| {
        (meta_str(a, "creationTimestamp"), meta_str(a, "namespace"), meta_str(a, "name")).cmp(&(
            meta_str(b, "creationTimestamp"),
            meta_str(b, "namespace"),
            meta_str(b, "name"),
        ))
    });
    sorted
}

impl Builder {
    pub(crate) fn new(config: &ProxyConfig, kubelets: Kubelets, metrics: ProxyMetrics) -> Builder {
        Builder {
            node_port_address: config.node_port_address,
            load_balancer_address: config.load_balancer_address,
            ingress_class: config.ingress_class.clone(),
            kubelets,
            in_flight: HashMap::new(),
            states: HashMap::new(),
            metrics,
            routes: HashMap::new(),
            certs: CertCache::default(),
            warned: HashSet::new(),
        }
    }

    /// The routing tables of these objects. Logs each new problem once; removes the series
    /// of the Services and Ingress routes that are gone.
    pub(crate) fn build(&mut self, inputs: &Inputs) -> Snapshot {
        let mut warnings = Vec::new();
        let mut snapshot = Snapshot::default();

        let mut slices: HashMap<(&str, &str), Vec<&Value>> = HashMap::new();
        for slice in &inputs.slices {
            if let Some(service) = slice["metadata"]["labels"][SERVICE_NAME_LABEL].as_str() {
                slices.entry((meta_str(slice, "namespace"), service)).or_default().push(slice);
            }
        }

        let mut in_flight = HashMap::new();
        let mut nodes = HashMap::new();
        let mut states = HashMap::new();
        let mut listener_addrs = HashSet::new();
        for object in by_age(&inputs.services) {
            let namespace = meta_str(object, "namespace");
            let name = meta_str(object, "name");
            let id: Arc<str> = Arc::from(format!("{namespace}/{name}"));
            let spec = &object["spec"];
            let service_type = spec["type"].as_str().unwrap_or("ClusterIP");
            let is_load_balancer = service_type == "LoadBalancer";
            if let Some(status) = self.load_balancer_status(object, &id, is_load_balancer) {
                snapshot.load_balancers.push(status);
            }
            if service_type == "ExternalName" {
                continue;
            }

            let annotation = object["metadata"]["annotations"][POLICY_ANNOTATION].as_str().unwrap_or("");
            let policy = Policy::parse(annotation).unwrap_or_else(|| {
                warnings.push(format!(
                    "service {id}: unknown {POLICY_ANNOTATION} \"{annotation}\" (round-robin, least-request or p2c): using round-robin"
                ));
                Policy::RoundRobin
            });
            let affinity_timeout = (spec["sessionAffinity"] == "ClientIP").then(|| {
                spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
                    .as_u64()
                    .filter(|s| *s > 0)
                    .map_or(DEFAULT_AFFINITY_TIMEOUT, Duration::from_secs)
            });
            let state = match self.states.get(&id) {
                Some(state) if state.affinity.as_ref().map(|a| a.timeout) == affinity_timeout => state.clone(),
                Some(previous) => ServiceState {
                    affinity: affinity_timeout.map(|timeout| Arc::new(Affinity::new(timeout))),
                    ..previous.clone()
                },
                None => ServiceState {
                    counter: Arc::default(),
                    affinity: affinity_timeout.map(|timeout| Arc::new(Affinity::new(timeout))),
                    metrics: Arc::new(self.metrics.service(namespace, name)),
                },
            };
            states.insert(id.clone(), state.clone());

            let service_slices = slices.get(&(namespace, name)).map(Vec::as_slice).unwrap_or_default();
            let mut ports = Vec::new();
            let mut node_ports = Vec::new();
            for port in spec["ports"].as_array().into_iter().flatten() {
                if port["protocol"].as_str().is_some_and(|p| p != "TCP") {
                    continue;
                }
                let Some(number) = port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
                let port_name = port["name"].as_str().unwrap_or_default();
                let endpoints = self.endpoints(service_slices, port_name, namespace, &mut in_flight, &mut nodes);
                if let Some(node_port) =
                    port["nodePort"].as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0)
                    && (service_type == "NodePort" || is_load_balancer)
                {
                    node_ports.push((node_port, ports.len()));
                }
                ports.push(ServicePort { name: port_name.into(), port: number, endpoints: endpoints.into() });
            }
            let service = Arc::new(Service {
                id: id.clone(),
                ports,
                policy,
                affinity: state.affinity.clone(),
                counter: state.counter.clone(),
                wake: crate::wake::target(object, &inputs.deployments, &inputs.autoscalers),
                metrics: state.metrics.clone(),
            });

            let ips = spec["clusterIPs"].as_array().into_iter().flatten().chain(std::iter::once(&spec["clusterIP"]));
            for ip in ips.filter_map(Value::as_str).filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                snapshot.by_cluster_ip.entry(ip).or_insert_with(|| service.clone());
            }

            for (node_port, index) in node_ports {
                let addr = SocketAddr::new(self.node_port_address, node_port);
                self.want_listener(
                    &mut snapshot,
                    &mut listener_addrs,
                    &mut warnings,
                    WantedListener { addr, kind: PortKind::NodePort(node_port), owner: id.clone() },
                    Route { service: service.clone(), port: index },
                );
            }
            if is_load_balancer {
                for (index, port) in service.ports.iter().enumerate() {
                    let addr = SocketAddr::new(self.load_balancer_address, port.port);
                    self.want_listener(
                        &mut snapshot,
                        &mut listener_addrs,
                        &mut warnings,
                        WantedListener { addr, kind: PortKind::LoadBalancer(port.port), owner: id.clone() },
                        Route { service: service.clone(), port: index },
                    );
                }
            }
            if spec["clusterIP"] == "None" {
                snapshot.headless_services.insert((namespace.to_string(), name.to_string()));
                let pods = snapshot.headless_pods.entry(namespace.to_string()).or_default();
                for (key, pod) in pods_of_headless(&service, name) {
                    pods.entry(key).or_insert(pod);
                }
            }
            snapshot.services.entry(namespace.to_string()).or_default().insert(name.to_string(), service);
        }
        self.in_flight = in_flight;
        snapshot.kubelets = nodes;
        for (id, gone) in &self.states {
            if !states.contains_key(id) {
                gone.metrics.remove();
            }
        }
        self.states = states;

        let mut routes = HashMap::new();
        let (ingress, tls_refs) = crate::ingress::build(
            &inputs.ingresses,
            &inputs.classes,
            &self.ingress_class,
            |namespace, name| snapshot.service(namespace, name).cloned(),
            |namespace, ingress, service| {
                let key = (namespace.to_string(), ingress.to_string(), service.to_string());
                let metrics = match self.routes.get(&key) {
                    Some(metrics) => metrics.clone(),
                    None => Arc::new(self.metrics.route(namespace, ingress, service)),
                };
                routes.entry(key).or_insert(metrics).clone()
            },
            &mut warnings,
        );
        for (key, gone) in &self.routes {
            if !routes.contains_key(key) {
                gone.remove();
            }
        }
        self.routes = routes;
        snapshot.ingress = ingress;
        let secrets: HashMap<ObjectKey, &Value> =
            inputs.secrets.iter().map(|s| (ObjectKey::of(s), s.as_ref())).collect();
        snapshot.tls = self.certs.table(&tls_refs, &secrets, &mut warnings);

        let warnings: HashSet<String> = warnings.into_iter().collect();
        for warning in warnings.difference(&self.warned) {
            tracing::warn!("{warning}");
        }
        self.warned = warnings;
        snapshot
    }

    /// Records a listener a Service asks for; the first Service to ask for an address
    /// gets it.
    fn want_listener(
        &self,
        snapshot: &mut Snapshot,
        taken: &mut HashSet<SocketAddr>,
        warnings: &mut Vec<String>,
        wanted: WantedListener,
        route: Route,
    ) {
        if !taken.insert(wanted.addr) {
            let holder = snapshot.listeners.iter().find(|l| l.addr == wanted.addr).map(|l| l.owner.clone());
            warnings.push(format!(
                "service {}: {} is already taken by service {}",
                wanted.owner,
                wanted.addr,
                holder.as_deref().unwrap_or("?")
            ));
            return;
        }
        match wanted.kind {
            PortKind::NodePort(port) => snapshot.node_ports.insert(port, route),
            PortKind::LoadBalancer(port) => snapshot.load_balancer_ports.insert(port, route),
        };
        snapshot.listeners.push(wanted);
    }

    /// The endpoints of the slices' port named `port_name`: the ready ones, or when none
    /// is, the serving and terminating ones (as kube-proxy falls back to).
    fn endpoints(
        &self,
        slices: &[&Value],
        port_name: &str,
        namespace: &str,
        in_flight: &mut HashMap<Arc<str>, Arc<AtomicUsize>>,
        nodes: &mut HashMap<Arc<str>, Option<Arc<dyn Kubelet>>>,
    ) -> Vec<Endpoint> {
        let mut ready = Vec::new();
        let mut fallback = Vec::new();
        let mut seen = HashSet::new();
        for slice in slices {
            let has_port = slice["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"].as_str().unwrap_or_default() == port_name);
            if !has_port {
                continue;
            }
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                let target = &endpoint["targetRef"];
                let (Some(pod), Some(node)) = (target["name"].as_str(), endpoint["nodeName"].as_str()) else {
                    continue;
                };
                if target["kind"].as_str().is_some_and(|k| k != "Pod") {
                    continue;
                }
                let pod_namespace = target["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(namespace);
                let conditions = &endpoint["conditions"];
                let is_ready = conditions["ready"].as_bool().unwrap_or(true);
                let serving = conditions["serving"].as_bool().unwrap_or(is_ready);
                let terminating = conditions["terminating"].as_bool().unwrap_or(false);
                if !(is_ready || serving && terminating) {
                    continue;
                }
                let key: Arc<str> = Arc::from(format!("{pod_namespace}/{pod}"));
                if !seen.insert(key.clone()) {
                    continue;
                }
                let counter = match (in_flight.get(&key), self.in_flight.get(&key)) {
                    (Some(counter), _) | (None, Some(counter)) => counter.clone(),
                    (None, None) => Arc::default(),
                };
                in_flight.insert(key, counter.clone());
                let (node, kubelet) = match nodes.get_key_value(node) {
                    Some((name, kubelet)) => (name.clone(), kubelet.clone()),
                    None => {
                        let name: Arc<str> = Arc::from(node);
                        let kubelet = self.kubelets.get(node);
                        nodes.insert(name.clone(), kubelet.clone());
                        (name, kubelet)
                    }
                };
                let hostname = endpoint["hostname"].as_str().filter(|h| !h.is_empty()).unwrap_or(pod);
                let built = Endpoint {
                    namespace: Arc::from(pod_namespace),
                    pod: Arc::from(pod),
                    hostname: Arc::from(hostname),
                    node,
                    kubelet,
                    in_flight: counter,
                    starting: false,
                };
                if is_ready { ready.push(built) } else { fallback.push(built) }
            }
        }
        let mut endpoints = if ready.is_empty() { fallback } else { ready };
        endpoints.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        endpoints
    }

    fn load_balancer_status(&self, object: &Value, id: &Arc<str>, wanted: bool) -> Option<LoadBalancerStatus> {
        let ours = self.load_balancer_address.to_string();
        let ingress = object["status"]["loadBalancer"]["ingress"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mentions_us = ingress.iter().any(|i| i["ip"] == ours.as_str());
        let current = ingress.len() == 1 && mentions_us && ingress[0]["ipMode"].as_str().is_none_or(|m| m == "VIP");
        let addrs = object["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["protocol"].as_str().is_none_or(|p| p == "TCP"))
            .filter_map(|p| p["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .map(|port| SocketAddr::new(self.load_balancer_address, port))
            .collect();
        (wanted || mentions_us).then(|| LoadBalancerStatus {
            id: id.clone(),
            namespace: meta_str(object, "namespace").to_string(),
            name: meta_str(object, "name").to_string(),
            resource_version: meta_str(object, "resourceVersion").to_string(),
            wanted,
            current,
            mentions_us,
            addrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, spec: Value) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    }

    fn slice(service: &str, port: Option<&str>, endpoints: Value) -> Arc<Value> {
        let port = match port {
            Some(name) => json!({"name": name, "port": 8080}),
            None => json!({"port": 8080}),
        };
        Arc::new(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "ports": [port], "endpoints": endpoints,
        }))
    }

    fn ep(pod: &str, conditions: Value) -> Value {
        json!({"addresses": ["10.0.0.1"], "conditions": conditions, "nodeName": "n",
               "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}})
    }

    fn pods(snapshot: &Snapshot, service: &str, port: usize) -> Vec<String> {
        let service = snapshot.service("default", service).expect("the service");
        service.ports[port].endpoints.iter().map(|e| e.pod.to_string()).collect()
    }

    fn builder() -> Builder {
        Builder::new(&ProxyConfig::default(), Kubelets::default(), metrics())
    }

    fn metrics() -> ProxyMetrics {
        ProxyMetrics::register(&prometheus::Registry::new()).expect("the metrics")
    }

    #[test]
    fn ports_take_endpoints_of_the_slice_port_with_the_same_name() {
        let inputs = Inputs {
            services: vec![service(
                "web",
                json!({"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]}),
            )],
            slices: vec![
                slice("web", Some("http"), json!([ep("a", json!({"ready": true})), ep("b", json!({}))])),
                slice("web", Some("admin"), json!([ep("c", json!({"ready": true}))])),
                slice("other", Some("http"), json!([ep("z", json!({}))])),
            ],
            ..Inputs::default()
        };
        let snapshot = builder().build(&inputs);
        assert_eq!(pods(&snapshot, "web", 0), ["a", "b"]);
        assert_eq!(pods(&snapshot, "web", 1), ["c"]);
    }

    #[test]
    fn only_ready_endpoints_unless_none_then_serving_terminating_ones() {
        let inputs = Inputs {
            services: vec![service("web", json!({"ports": [{"port": 80}]}))],
            slices: vec![slice(
                "web",
                None,
                json!([
                    ep("ready", json!({"ready": true})),
                    ep("not-ready", json!({"ready": false, "serving": false})),
                    ep("draining", json!({"ready": false, "serving": true, "terminating": true})),
                ]),
            )],
            ..Inputs::default()
        };
        let mut builder = builder();
        assert_eq!(pods(&builder.build(&inputs), "web", 0), ["ready"]);
        let inputs = Inputs {
            slices: vec![slice(
                "web",
                None,
                json!([
                    ep("not-ready", json!({"ready": false})),
                    ep("draining", json!({"ready": false, "serving": true, "terminating": true})),
                ]),
            )],
            ..inputs
        };
        assert_eq!(pods(&builder.build(&inputs), "web", 0), ["draining"]);
    }

    #[derive(Debug)]
    struct NoAgent;

    #[async_trait::async_trait]
    impl Kubelet for NoAgent {
        async fn logs(
            &self,
            _: &str,
            _: &str,
            _: &flotilla_client::LogOptions,
        ) -> Result<flotilla_client::Body, flotilla_api::ApiError> {
            Err(flotilla_api::ApiError::bad_request("none"))
        }

        async fn proxy(
            &self,
            _: &str,
            _: &str,
            _: http::Request<flotilla_client::Body>,
        ) -> Result<http::Response<flotilla_client::Body>, flotilla_api::ApiError> {
            Err(flotilla_api::ApiError::bad_request("none"))
        }
    }

    #[test]
    fn a_snapshot_knows_when_a_node_agent_changed() {
        let inputs = Inputs {
            services: vec![service("web", json!({"ports": [{"port": 80}]}))],
            slices: vec![slice("web", None, json!([ep("a", json!({}))]))],
            ..Inputs::default()
        };
        let kubelets = Kubelets::default();
        let mut builder = Builder::new(&ProxyConfig::default(), kubelets.clone(), metrics());
        let snapshot = builder.build(&inputs);
        assert!(!snapshot.kubelets_changed(&kubelets));
        kubelets.register("n", Arc::new(NoAgent));
        assert!(snapshot.kubelets_changed(&kubelets), "registered");
        let snapshot = builder.build(&inputs);
        assert!(snapshot.service("default", "web").expect("web").ports[0].endpoints[0].kubelet.is_some());
        assert!(!snapshot.kubelets_changed(&kubelets));
        kubelets.register("n", Arc::new(NoAgent));
        assert!(snapshot.kubelets_changed(&kubelets), "replaced");
        kubelets.register("other", Arc::new(NoAgent));
        let snapshot = builder.build(&inputs);
        assert!(!snapshot.kubelets_changed(&kubelets), "nodes without endpoints do not matter");
    }

    #[test]
    fn in_flight_counts_and_turns_outlive_a_rebuild() {
        let inputs = Inputs {
            services: vec![service("web", json!({"ports": [{"port": 80}]}))],
            slices: vec![slice("web", None, json!([ep("a", json!({}))]))],
            ..Inputs::default()
        };
        let mut builder = builder();
        let first = builder.build(&inputs);
        let second = builder.build(&inputs);
        let a = |s: &Snapshot| s.service("default", "web").expect("web").ports[0].endpoints[0].in_flight.clone();
        assert!(Arc::ptr_eq(&a(&first), &a(&second)));
        let counter = |s: &Snapshot| s.service("default", "web").expect("web").counter.clone();
        assert!(Arc::ptr_eq(&counter(&first), &counter(&second)));
    }

    #[test]
    fn authorities_resolve_like_cluster_dns() {
        let inputs = Inputs {
            services: vec![
                service(
                    "web",
                    json!({"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}, {"name": "alt", "port": 8080}]}),
                ),
                Arc::new(json!({"metadata": {"name": "db", "namespace": "prod"}, "spec": {"ports": [{"port": 5432}]}})),
            ],
            ..Inputs::default()
        };
        let snapshot = builder().build(&inputs);
        let resolve = |ns: &str, authority: &str| {
            let authority: http::uri::Authority = authority.parse().expect("an authority");
            snapshot.resolve_authority(ns, &authority, "cluster.local").map(|(s, p)| (s.id.to_string(), p))
        };
        let web = Some(("default/web".to_string(), 0));
        assert_eq!(resolve("default", "web"), web);
        assert_eq!(resolve("default", "WEB"), web);
        assert_eq!(resolve("default", "web.default"), web);
        assert_eq!(resolve("prod", "web.default"), web);
        assert_eq!(resolve("default", "web.default.svc"), web);
        assert_eq!(resolve("default", "web.default.svc.cluster.local"), web);
        assert_eq!(resolve("default", "web.default.svc.cluster.local."), web);
        assert_eq!(resolve("default", "web:8080"), Some(("default/web".to_string(), 1)));
        assert_eq!(resolve("default", "10.96.0.5"), web);
        assert_eq!(resolve("default", "10.96.0.5:8080"), Some(("default/web".to_string(), 1)));
        assert_eq!(resolve("default", "db:5432"), None);
        assert_eq!(resolve("prod", "db:5432"), Some(("prod/db".to_string(), 0)));
        for not_a_service in [
            "web:81",
            "10.96.0.6",
            "web.other",
            "web.default.svc.example.com",
            "web.default.pod.cluster.local",
            "example.com",
        ] {
            assert_eq!(resolve("default", not_a_service), None, "{not_a_service}");
        }
    }

    #[test]
    fn headless_services_resolve_per_pod() {
        let ready = json!({"ready": true});
        let mut named = ep("db-0-pod", ready.clone());
        named["hostname"] = json!("db-0");
        let inputs = Inputs {
            services: vec![
                service("db", json!({"clusterIP": "None", "ports": [{"name": "sql", "port": 5432}]})),
                service("web", json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]})),
            ],
            slices: vec![slice("db", Some("sql"), json!([named, ep("db-1-pod", ready.clone())]))],
            ..Inputs::default()
        };
        let snapshot = builder().build(&inputs);
        let resolve = |ns: &str, authority: &str| {
            let authority: http::uri::Authority = authority.parse().expect("an authority");
            snapshot.resolve_authority(ns, &authority, "cluster.local").map(|(s, _)| {
                let pods: Vec<String> = s.ports[0].endpoints.iter().map(|e| e.pod.to_string()).collect();
                (s.id.to_string(), pods)
            })
        };
        let db_0 = Some(("default/db/db-0".to_string(), vec!["db-0-pod".to_string()]));
        // The pod's hostname under its subdomain, in every form the search path knows.
        assert_eq!(resolve("default", "db-0.db"), db_0);
        assert_eq!(resolve("default", "db-0.db:5432"), db_0);
        assert_eq!(resolve("other", "db-0.db.default"), db_0);
        assert_eq!(resolve("other", "db-0.db.default.svc"), db_0);
        assert_eq!(resolve("other", "db-0.db.default.svc.cluster.local"), db_0);
        // A pod without a hostname goes by its name.
        assert_eq!(resolve("default", "db-1-pod.db").map(|(_, pods)| pods), Some(vec!["db-1-pod".to_string()]));
        // The headless Service itself spreads over its pods, on any port (DNS gives pods).
        let all = resolve("default", "db:8080").expect("the headless service");
        assert_eq!((all.0.as_str(), all.1.len()), ("default/db", 2));
        // A ClusterIP Service keeps its ports, and `A.B` still means Service A of namespace B.
        assert_eq!(resolve("default", "web:8080"), None);
        assert_eq!(resolve("default", "db-2.db"), None);
        assert_eq!(resolve("default", "web.default").map(|(id, _)| id), Some("default/web".to_string()));
    }

    #[test]
    fn node_ports_and_load_balancers_ask_for_listeners_first_come_first_served() {
        let config = ProxyConfig {
            node_port_address: "127.0.0.1".parse().expect("an address"),
            load_balancer_address: "127.0.0.2".parse().expect("an address"),
            ..ProxyConfig::default()
        };
        let mut old = json!({"metadata": {"name": "lb", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.2", "ipMode": "VIP"}]}}});
        let new = json!({"metadata": {"name": "lb2", "namespace": "default", "creationTimestamp": "2024-02-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "nodePort": 30081}]}});
        let plain = json!({"metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30090}]}});
        let inputs = Inputs {
            services: vec![Arc::new(new.clone()), Arc::new(old.clone()), Arc::new(plain)],
            ..Inputs::default()
        };
        let snapshot = Builder::new(&config, Kubelets::default(), metrics()).build(&inputs);
        let listeners: Vec<String> =
            snapshot.listeners.iter().map(|l| format!("{} {:?} {}", l.addr, l.kind, l.owner)).collect();
        assert_eq!(
            listeners,
            [
                "127.0.0.1:30080 NodePort(30080) default/lb",
                "127.0.0.2:8080 LoadBalancer(8080) default/lb",
                "127.0.0.1:30081 NodePort(30081) default/lb2",
            ]
        );
        assert_eq!(snapshot.load_balancer_ports[&8080].service.id.as_ref(), "default/lb");
        let statuses: Vec<(String, bool)> =
            snapshot.load_balancers.iter().map(|s| (s.id.to_string(), s.current)).collect();
        assert_eq!(statuses, [("default/lb".to_string(), true), ("default/lb2".to_string(), false)]);

        old["status"]["loadBalancer"]["ingress"][0]["ip"] = json!("10.1.1.1");
        let inputs = Inputs { services: vec![Arc::new(old)], ..Inputs::default() };
        let snapshot = Builder::new(&config, Kubelets::default(), metrics()).build(&inputs);
        assert!(!snapshot.load_balancers[0].current);
    }
}
