//! Service cluster IPs and node ports, allocated as kube-apiserver does: a random free
//! address of the service range (`--service-cluster-ip-range`) and random free node
//! ports (`--service-node-port-range`) for Services that ask for none; the ones a
//! Service asks for are honoured if free and in range, else the write is Invalid. A
//! deleted Service frees what it held; a type change allocates or releases node ports.
//!
//! The truth is the stored Services: the allocator's tables are rebuilt from them on
//! first use and changed only after a Service write reached the store. Every Service
//! write runs under one lock from allocation to store write, so concurrent creates
//! cannot pick the same address. (One API server per store: several over etcd would
//! each need kube's allocation objects; Flotilla does not run that way yet.)
//!
//! Dynamic allocation prefers the upper part of each range and leaves the lower band
//! to addresses and ports people pick themselves (kube's KEP-3070 and KEP-3668), so
//! that `10.96.0.10` for a DNS Service is rarely taken by chance.

use crate::Registry;
use crate::registry::{WriteOptions, name_of};
use flotilla_api::service::{CLUSTER_IP_NONE, is_headless, needs_cluster_ip, needs_node_ports, service_type};
use flotilla_api::{ApiError, FieldError, Reason};
use flotilla_store::{ListOptions, Store};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use tokio::sync::{Mutex, MutexGuard};

/// The range Service cluster IPs come from (kube-apiserver's
/// `--service-cluster-ip-range`), IPv4, between a /12 and a /30. Its first address is
/// the `kubernetes` Service's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl ServiceCidr {
    /// The range `network/prefix` (host bits of `network` are ignored).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if !(12..=30).contains(&prefix) {
            return Err(format!(
                "{network}/{prefix}: the service range must be between a /12 and a /30 (kube-apiserver's limits)"
            ));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(ServiceCidr { network: Ipv4Addr::from(u32::from(network) & mask), prefix })
    }

    /// How many addresses may be allocated: all but the network and broadcast ones.
    fn usable(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix))) - 2
    }

    /// The `index`th allocatable address (0 is the first after the network address).
    fn address(&self, index: u64) -> Ipv4Addr {
        let offset = u32::try_from(index + 1).unwrap_or(0);
        Ipv4Addr::from(u32::from(self.network).wrapping_add(offset))
    }

    /// The first allocatable address (`10.96.0.1`): the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        self.address(0)
    }

    /// Whether `ip` may be allocated: inside the range, neither its network nor its
    /// broadcast address.
    pub fn allocatable(&self, ip: Ipv4Addr) -> bool {
        let offset = u64::from(u32::from(ip).wrapping_sub(u32::from(self.network)));
        (1..=self.usable()).contains(&offset)
    }
}

impl Default for ServiceCidr {
    /// `10.96.0.0/12`, kube-apiserver's default.
    fn default() -> Self {
        ServiceCidr { network: Ipv4Addr::new(10, 96, 0, 0), prefix: 12 }
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for ServiceCidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IPv4 range such as 10.96.0.0/12");
        let (ip, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        ServiceCidr::new(ip, prefix)
    }
}

/// The node ports Services get (kube-apiserver's `--service-node-port-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortRange {
    first: u16,
    last: u16,
}

impl NodePortRange {
    /// The ports `first..=last`.
    pub fn new(first: u16, last: u16) -> Result<Self, String> {
        if first == 0 || last < first {
            return Err(format!("{first}-{last} is not a port range such as 30000-32767"));
        }
        Ok(NodePortRange { first, last })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

impl Default for NodePortRange {
    /// `30000-32767`, kube-apiserver's default.
    fn default() -> Self {
        NodePortRange { first: 30000, last: 32767 }
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for NodePortRange {
    type Err = String;

    /// `30000-32767`, or kube's other form `30000+2767` (first port + how many more).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a port range such as 30000-32767");
        let text = text.trim();
        if let Some((first, more)) = text.split_once('+') {
            let first: u16 = first.parse().map_err(|_| bad())?;
            let more: u16 = more.parse().map_err(|_| bad())?;
            return NodePortRange::new(first, first.checked_add(more).ok_or_else(bad)?);
        }
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        NodePortRange::new(first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?)
    }
}

/// What one Service holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Holding {
    ip: Option<Ipv4Addr>,
    node_ports: Vec<u16>,
}

impl Holding {
    fn of(service: &Value) -> Holding {
        let ip = needs_cluster_ip(service)
            .then(|| service["spec"]["clusterIP"].as_str().and_then(|ip| ip.parse().ok()))
            .flatten();
        let mut node_ports: Vec<u16> =
            flotilla_api::service::node_ports(service).into_iter().filter_map(|p| u16::try_from(p).ok()).collect();
        node_ports.sort_unstable();
        node_ports.dedup();
        Holding { ip, node_ports }
    }
}

/// Who holds what, by Service storage key.
#[derive(Debug, Default)]
struct Tables {
    ips: HashMap<Ipv4Addr, String>,
    ports: HashMap<u16, String>,
    by_key: HashMap<String, Holding>,
}

impl Tables {
    fn release(&mut self, key: &str) {
        let Some(held) = self.by_key.remove(key) else { return };
        if let Some(ip) = held.ip
            && self.ips.get(&ip).is_some_and(|owner| owner == key)
        {
            self.ips.remove(&ip);
        }
        for port in held.node_ports {
            if self.ports.get(&port).is_some_and(|owner| owner == key) {
                self.ports.remove(&port);
            }
        }
    }

    fn hold(&mut self, key: &str, held: Holding) {
        self.release(key);
        if let Some(ip) = held.ip
            && let Some(other) = self.ips.insert(ip, key.to_string()).filter(|o| o != key)
        {
            tracing::warn!(%ip, service = key, other = %other, "two stored Services hold one cluster IP");
        }
        for port in &held.node_ports {
            if let Some(other) = self.ports.insert(*port, key.to_string()).filter(|o| o != key) {
                tracing::warn!(port, service = key, other = %other, "two stored Services hold one node port");
            }
        }
        if held != Holding::default() {
            self.by_key.insert(key.to_string(), held);
        }
    }

    fn ip_taken(&self, ip: Ipv4Addr, key: &str) -> bool {
        self.ips.get(&ip).is_some_and(|owner| owner != key)
    }

    fn port_taken(&self, port: u16, key: &str) -> bool {
        self.ports.get(&port).is_some_and(|owner| owner != key)
    }
}

/// The Service allocations of one API server.
#[derive(Debug)]
pub(crate) struct ServiceAllocator {
    cidr: ServiceCidr,
    node_ports: NodePortRange,
    /// `None` until loaded from the store.
    tables: Mutex<Option<Tables>>,
}

/// The allocator held for one Service write: allocate, write, then commit.
#[derive(Debug)]
pub(crate) struct Allocation<'a> {
    allocator: &'a ServiceAllocator,
    tables: MutexGuard<'a, Option<Tables>>,
}

/// A random index below `bound` (> 0).
fn random_below(bound: u64) -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 % bound
}

/// A free index in `0..total`, random, from the upper part (`low_band..total`) first.
fn pick(total: u64, low_band: u64, free: impl Fn(u64) -> bool) -> Option<u64> {
    let low_band = low_band.min(total);
    for (from, to) in [(low_band, total), (0, low_band)] {
        let count = to - from;
        if count == 0 {
            continue;
        }
        let start = random_below(count);
        if let Some(found) = (0..count).map(|i| from + (start + i) % count).find(|i| free(*i)) {
            return Some(found);
        }
    }
    None
}

impl ServiceAllocator {
    pub(crate) fn new(cidr: ServiceCidr, node_ports: NodePortRange) -> Self {
        ServiceAllocator { cidr, node_ports, tables: Mutex::new(None) }
    }

    pub(crate) fn cidr(&self) -> ServiceCidr {
        self.cidr
    }

    /// Takes the allocation lock, loading the tables from the stored Services first if
    /// this is the first Service write since the start.
    pub(crate) async fn lock(&self, store: &dyn Store) -> Result<Allocation<'_>, ApiError> {
        let mut tables = self.tables.lock().await;
        if tables.is_none() {
            let prefix = flotilla_api::by_kind("v1", "Service")
                .ok_or_else(|| ApiError::internal("Services are not served"))?
                .key_prefix(None);
            let listed = store
                .list(&prefix, ListOptions::default())
                .await
                .map_err(|e| ApiError::internal(format!("loading Service allocations: {e}")))?;
            let mut loaded = Tables::default();
            for kv in &listed.items {
                match serde_json::from_slice::<Value>(&kv.value) {
                    Ok(service) => loaded.hold(&kv.key, Holding::of(&service)),
                    Err(e) => tracing::warn!(key = %kv.key, error = %e, "a stored Service is corrupt"),
                }
            }
            tracing::debug!(services = listed.items.len(), ips = loaded.ips.len(), "Service allocations loaded");
            *tables = Some(loaded);
        }
        Ok(Allocation { allocator: self, tables })
    }
}

impl Allocation<'_> {
    fn tables(&self) -> &Tables {
        static EMPTY: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
        self.tables.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Tables::default))
    }

    /// Records what the Service stored under `key` holds now (`None`: it is gone).
    pub(crate) fn commit(&mut self, key: &str, service: Option<&Value>) {
        if let Some(tables) = self.tables.as_mut() {
            match service {
                Some(service) => tables.hold(key, Holding::of(service)),
                None => tables.release(key),
            }
        }
    }

    /// Fills in the cluster IP and node ports `service` (about to be stored under `key`,
    /// replacing `current` if given) needs, checking the ones it asks for. Changes no
    /// tables: [`Allocation::commit`] does, once the write succeeded.
    pub(crate) fn allocate(&self, key: &str, current: Option<&Value>, service: &mut Value) -> Result<(), ApiError> {
        let name = name_of(service).to_string();
        let invalid = |errors: Vec<FieldError>| ApiError::invalid("Service", "", &name, &errors);
        let mut errors = self.check_families(service);
        if errors.is_empty() {
            errors.extend(self.allocate_cluster_ip(key, current, service)?);
        }
        if errors.is_empty() {
            errors.extend(self.allocate_node_ports(key, current, service)?);
        }
        if errors.is_empty() { Ok(()) } else { Err(invalid(errors)) }
    }

    /// A single-stack IPv4 cluster: IPv6 families and required dual-stack are refused,
    /// as kube-apiserver refuses them on such a cluster.
    fn check_families(&self, service: &Value) -> Vec<FieldError> {
        let spec = &service["spec"];
        let mut errors = Vec::new();
        if !needs_cluster_ip(service) {
            return errors;
        }
        let selectorless_headless = is_headless(service) && spec["selector"].as_object().is_none_or(|s| s.is_empty());
        if selectorless_headless {
            // kube allows every family here: such a Service allocates nothing.
            return errors;
        }
        for (i, family) in spec["ipFamilies"].as_array().into_iter().flatten().enumerate() {
            if family != "IPv4" {
                errors.push(FieldError::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    family,
                    "not configured on this cluster",
                ));
            }
        }
        if spec["ipFamilyPolicy"] == "RequireDualStack" {
            errors.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &spec["ipFamilyPolicy"],
                "this cluster is not configured for dual-stack services",
            ));
        }
        errors
    }

    fn allocate_cluster_ip(
        &self,
        key: &str,
        current: Option<&Value>,
        service: &mut Value,
    ) -> Result<Vec<FieldError>, ApiError> {
        if !needs_cluster_ip(service) || is_headless(service) {
            return Ok(Vec::new());
        }
        let cidr = self.allocator.cidr;
        let requested = service["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        if requested.is_empty() {
            let tables = self.tables();
            let index = pick(cidr.usable(), ip_low_band(cidr.usable()), |i| !tables.ips.contains_key(&cidr.address(i)))
                .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?;
            let ip = cidr.address(index).to_string();
            service["spec"]["clusterIP"] = json!(ip);
            service["spec"]["clusterIPs"] = json!([ip]);
            return Ok(Vec::new());
        }
        let ips = service["spec"]["clusterIPs"].clone();
        let failed = |why: String| vec![FieldError::invalid("spec.clusterIPs", &ips, why)];
        let ip = match requested.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ip,
            Ok(IpAddr::V6(_)) => {
                return Ok(vec![FieldError::invalid(
                    "spec.clusterIPs[0]",
                    &ips,
                    "IPv6 is not configured on this cluster",
                )]);
            }
            // Validation refused it already; this keeps a bad value out regardless.
            Err(_) if requested == CLUSTER_IP_NONE => return Ok(Vec::new()),
            Err(_) => return Ok(failed(format!("failed to allocate IP {requested}: not an IP address"))),
        };
        let held_before = current.filter(|c| needs_cluster_ip(c)).and_then(|c| Holding::of(c).ip);
        if held_before == Some(ip) {
            return Ok(Vec::new());
        }
        if !cidr.allocatable(ip) {
            return Ok(failed(format!(
                "failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {cidr}"
            )));
        }
        if self.tables().ip_taken(ip, key) {
            return Ok(failed(format!("failed to allocate IP {ip}: provided IP is already allocated")));
        }
        Ok(Vec::new())
    }

    fn allocate_node_ports(
        &self,
        key: &str,
        current: Option<&Value>,
        service: &mut Value,
    ) -> Result<Vec<FieldError>, ApiError> {
        if !needs_node_ports(service) {
            return Ok(Vec::new());
        }
        let range = self.allocator.node_ports;
        // A LoadBalancer may opt out of node ports, keeping the ones it asks for.
        let allocate_new =
            !(service_type(service) == "LoadBalancer" && service["spec"]["allocateLoadBalancerNodePorts"] == false);
        let held_before: HashSet<u16> =
            current.map(|c| Holding::of(c).node_ports).unwrap_or_default().into_iter().collect();
        let tables = self.tables();
        let mut errors = Vec::new();
        let ports = service["spec"]["ports"].as_array().cloned().unwrap_or_default();
        // Ports of one number (TCP and UDP 53) share a node port, as kube gives them.
        let mut by_number: HashMap<i64, u16> = HashMap::new();
        for port in &ports {
            if let (Some(number), Some(node_port)) = (
                port["port"].as_i64(),
                port["nodePort"].as_i64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0),
            ) {
                by_number.entry(number).or_insert(node_port);
            }
        }
        let mut taken_here: HashSet<u16> = by_number.values().copied().collect();
        for (i, port) in ports.iter().enumerate() {
            let at = format!("spec.ports[{i}].nodePort");
            let requested = port["nodePort"].as_i64().unwrap_or(0);
            if requested == 0 {
                if !allocate_new {
                    continue;
                }
                let number = port["port"].as_i64().unwrap_or(0);
                let node_port = match by_number.get(&number) {
                    Some(shared) => *shared,
                    None => {
                        let free = |i: u64| {
                            let p = range.first.saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
                            !tables.ports.contains_key(&p) && !taken_here.contains(&p)
                        };
                        let index = pick(range.size(), port_low_band(range.size()), free)
                            .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
                        range.first.saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
                    }
                };
                by_number.insert(number, node_port);
                taken_here.insert(node_port);
                service["spec"]["ports"][i]["nodePort"] = json!(node_port);
                continue;
            }
            let Ok(node_port) = u16::try_from(requested) else { continue };
            if held_before.contains(&node_port) {
                continue;
            }
            if !range.contains(node_port) {
                errors.push(FieldError::invalid(
                    at,
                    &requested,
                    format!("provided port is not in the valid range. The range of valid ports is {range}"),
                ));
            } else if tables.port_taken(node_port, key) {
                errors.push(FieldError::invalid(at, &requested, "provided port is already allocated"));
            }
        }
        Ok(errors)
    }
}

/// kube's reserved lower band of a service IP range: min(max(16, size/16), 256).
fn ip_low_band(size: u64) -> u64 {
    (size / 16).clamp(16, 256)
}

/// kube's reserved lower band of the node port range: min(max(16, size/32), 128).
fn port_low_band(size: u64) -> u64 {
    (size / 32).clamp(16, 128)
}

/// Makes the `kubernetes` Service in `default` if it is missing, with the range's first
/// address and port 443 to the API server's port, as kube-apiserver does at start; keeps
/// its target port current (it moves when the server listens on port 0).
pub(crate) async fn bootstrap_kubernetes(registry: &Registry, api_port: u16) -> Result<(), ApiError> {
    let rt = flotilla_api::by_kind("v1", "Service").ok_or_else(|| ApiError::internal("Services are not served"))?;
    let options = WriteOptions { field_manager: "kube-apiserver".into(), ..WriteOptions::default() };
    let ports = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}]);
    match registry.get(rt, Some("default"), "kubernetes").await {
        Ok(mut existing) => {
            if existing["spec"]["ports"] != ports {
                existing["spec"]["ports"] = ports;
                registry.update(rt, Some("default"), "kubernetes", existing, None, &options).await?;
            }
            Ok(())
        }
        Err(e) if e.reason == Reason::NotFound => {
            let ip = registry.service_cidr().first().to_string();
            let service = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": ip, "sessionAffinity": "None", "ports": ports},
            });
            match registry.create(rt, Some("default"), service, &options).await {
                Ok(_) => Ok(()),
                Err(e) if e.reason == Reason::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_kube_apiserver_flags() {
        let cidr: ServiceCidr = "10.96.0.0/12".parse().expect("a range");
        assert_eq!(cidr, ServiceCidr::default());
        assert_eq!(cidr.first(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(cidr.allocatable(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!cidr.allocatable(Ipv4Addr::new(10, 111, 255, 255)), "broadcast");
        assert!(!cidr.allocatable(Ipv4Addr::new(10, 96, 0, 0)), "network");
        assert!(!cidr.allocatable(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!("10.0.0.7/24".parse::<ServiceCidr>().map(|c| c.to_string()), Ok("10.0.0.0/24".to_string()));
        assert!("10.0.0.0/8".parse::<ServiceCidr>().is_err(), "too large");
        assert!("10.0.0.0".parse::<ServiceCidr>().is_err());
        assert!("fd00::/108".parse::<ServiceCidr>().is_err());

        assert_eq!("30000-32767".parse::<NodePortRange>(), Ok(NodePortRange::default()));
        assert_eq!("30000+2767".parse::<NodePortRange>(), Ok(NodePortRange::default()));
        assert!("32767-30000".parse::<NodePortRange>().is_err());
        assert!("0-10".parse::<NodePortRange>().is_err());
    }

    #[test]
    fn picks_are_free_and_prefer_the_upper_band() {
        for _ in 0..100 {
            let found = pick(100, 16, |i| i != 50).expect("room");
            assert!((16..100).contains(&found) && found != 50, "{found}");
        }
        // Only the lower band is left.
        assert_eq!(pick(100, 16, |i| i == 3), Some(3));
        assert_eq!(pick(100, 16, |_| false), None);
        assert_eq!(pick(4, 16, |i| i == 2), Some(2), "a band larger than the range");
    }

    fn locked(allocator: &ServiceAllocator) -> Allocation<'_> {
        let Ok(mut tables) = allocator.tables.try_lock() else { panic!("the lock is free") };
        tables.get_or_insert_with(Tables::default);
        Allocation { allocator, tables }
    }

    fn service(name: &str, spec: Value) -> (String, Value) {
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec});
        let rt = flotilla_api::by_kind("v1", "Service").expect("Services are served");
        (format!("/registry/services/default/{name}"), rt.validate(service).expect("a valid Service"))
    }

    #[test]
    fn a_tiny_range_allocates_every_address_once_then_is_full() {
        let allocator = ServiceAllocator::new("10.0.0.0/29".parse().expect("a range"), NodePortRange::default());
        let mut seen = HashSet::new();
        for i in 0..6 {
            let (key, mut svc) = service(&format!("s{i}"), json!({"ports": [{"port": 80}]}));
            let mut allocation = locked(&allocator);
            allocation.allocate(&key, None, &mut svc).expect("room");
            allocation.commit(&key, Some(&svc));
            let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().and_then(|ip| ip.parse().ok()).expect("an IP");
            assert!(allocator.cidr.allocatable(ip) && seen.insert(ip), "{ip}");
            assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
        }
        let (key, mut one_more) = service("x", json!({"ports": [{"port": 80}]}));
        let full = locked(&allocator).allocate(&key, None, &mut one_more).expect_err("full");
        assert_eq!(full.reason, Reason::InternalError);
        assert!(full.message.contains("range is full"), "{}", full.message);
        // Deleting one frees its address.
        locked(&allocator).commit("/registry/services/default/s3", None);
        locked(&allocator).allocate(&key, None, &mut one_more).expect("room again");
    }

    #[test]
    fn requested_addresses_and_ports_are_checked() {
        let allocator = ServiceAllocator::new(ServiceCidr::default(), NodePortRange::default());
        let (a_key, mut a) = service(
            "a",
            json!({"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let mut allocation = locked(&allocator);
        allocation.allocate(&a_key, None, &mut a).expect("free");
        allocation.commit(&a_key, Some(&a));
        drop(allocation);

        let (b_key, mut b) = service(
            "b",
            json!({"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let error = locked(&allocator).allocate(&b_key, None, &mut b).expect_err("taken");
        assert_eq!(
            error.message,
            "Service \"b\" is invalid: spec.clusterIPs: Invalid value: [\"10.96.0.5\"]: failed to allocate IP \
             10.96.0.5: provided IP is already allocated"
        );
        b["spec"]["clusterIP"] = json!("10.96.0.6");
        b["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
        let error = locked(&allocator).allocate(&b_key, None, &mut b).expect_err("port taken");
        assert_eq!(
            error.message,
            "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        b["spec"]["ports"][0]["nodePort"] = json!(80);
        b["spec"]["clusterIP"] = json!("192.168.0.1");
        b["spec"]["clusterIPs"] = json!(["192.168.0.1"]);
        let error = locked(&allocator).allocate(&b_key, None, &mut b).expect_err("out of range");
        assert!(
            error.message.ends_with(
                "failed to allocate IP 192.168.0.1: provided IP is not in the valid range. The range of valid IPs is \
                 10.96.0.0/12"
            ),
            "{}",
            error.message
        );
        b["spec"]["clusterIP"] = json!("10.96.0.6");
        b["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
        let error = locked(&allocator).allocate(&b_key, None, &mut b).expect_err("port out of range");
        assert!(
            error.message.ends_with(
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of \
                 valid ports is 30000-32767"
            ),
            "{}",
            error.message
        );

        // An update of `a` keeps what it holds; its own address and port are not "taken".
        let mut again = a.clone();
        locked(&allocator).allocate(&a_key, Some(&a), &mut again).expect("its own");
        assert_eq!(again, a);

        // TCP and UDP of one port number share one node port; others get their own.
        let (c_key, mut c) = service(
            "c",
            json!({"type": "LoadBalancer", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "web", "port": 80}]}),
        );
        locked(&allocator).allocate(&c_key, None, &mut c).expect("room");
        let ports: Vec<i64> =
            c["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_i64()).collect();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[0], ports[1]);
        assert_ne!(ports[0], ports[2]);
        // kube's lower band of 30000-32767: min(max(16, 2768 / 32), 128) = 86 ports.
        let upper_band = 30000 + i64::try_from(port_low_band(NodePortRange::default().size())).unwrap_or(0)..=32767;
        assert_eq!(upper_band.start(), &30086);
        assert!(ports.iter().all(|p| upper_band.contains(p)), "upper band: {ports:?}");
    }
}
