//! Ingress rules as lookup tables: hosts exact, then `*.` wildcards (one label), then
//! rules for any host, then the default backend; within a host an Exact path, then the
//! longest Prefix (element-wise on `/`).

use crate::metrics::RouteMetrics;
use crate::snapshot::{Route, Service, by_age};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Where a rule sends requests.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Service(Route),
    /// The backend names no Service port that exists: why (503).
    Missing(Arc<str>),
}

/// A rule's target, and the series of the requests it matches.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) target: Target,
    /// `{namespace, ingress, service}`: the Ingress of the rule and the Service it names.
    pub(crate) metrics: Arc<RouteMetrics>,
}

/// The paths of one host.
#[derive(Debug, Default)]
pub(crate) struct HostRules {
    exact: HashMap<String, Backend>,
    /// Normalised (no trailing `/`; "" for `/`), longest first.
    prefixes: Vec<(String, Backend)>,
}

impl HostRules {
    fn find(&self, path: &str) -> Option<&Backend> {
        if let Some(target) = self.exact.get(path) {
            return Some(target);
        }
        self.prefixes.iter().find(|(prefix, _)| prefix_matches(prefix, path)).map(|(_, target)| target)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// Whether `path` is under `prefix` element by element: `/foo` matches `/foo`, `/foo/`
/// and `/foo/bar`, not `/foobar`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

/// All the Ingress rules of the proxy's class.
#[derive(Debug, Default)]
pub(crate) struct IngressTable {
    hosts: HashMap<String, HostRules>,
    /// `*.example.com` under `example.com`.
    wildcards: HashMap<String, HostRules>,
    any_host: HostRules,
    default_backend: Option<Backend>,
}

impl IngressTable {
    /// The target of a request to `host` (lowercase, no port) and `path`.
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<&Backend> {
        if let Some(target) = self.hosts.get(host).and_then(|rules| rules.find(path)) {
            return Some(target);
        }
        if let Some((_, parent)) = host.split_once('.')
            && let Some(target) = self.wildcards.get(parent).and_then(|rules| rules.find(path))
        {
            return Some(target);
        }
        self.any_host.find(path).or(self.default_backend.as_ref())
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.wildcards.is_empty() && self.any_host.is_empty() && self.default_backend.is_none()
    }
}

/// A `spec.tls` entry: the Secret holding the certificate for these hosts.
#[derive(Debug, Clone)]
pub(crate) struct TlsRef {
    pub(crate) ingress: String,
    pub(crate) namespace: String,
    pub(crate) secret: String,
    pub(crate) hosts: Vec<String>,
}

/// Whether an Ingress is for the proxy: its class is ours, or it has none and ours is
/// the default class (or no class is).
fn is_ours(ingress: &Value, class: &str, classless_are_ours: bool) -> bool {
    let named = ingress["spec"]["ingressClassName"]
        .as_str()
        .or_else(|| ingress["metadata"]["annotations"][LEGACY_CLASS_ANNOTATION].as_str())
        .filter(|c| !c.is_empty());
    match named {
        Some(named) => named == class,
        None => classless_are_ours,
    }
}

/// The backend of a rule of Ingress `namespace/ingress`, with the series its requests
/// count in (from `metrics`, by namespace, Ingress and Service names).
fn backend_target(
    namespace: &str,
    ingress: &str,
    backend: &Value,
    service: &dyn Fn(&str, &str) -> Option<Arc<Service>>,
    metrics: &mut dyn FnMut(&str, &str, &str) -> Arc<RouteMetrics>,
) -> Result<Backend, String> {
    let Some(name) = backend["service"]["name"].as_str() else {
        return Err("only service backends are supported".into());
    };
    let target = target(namespace, name, &backend["service"]["port"], service);
    Ok(Backend { target, metrics: metrics(namespace, ingress, name) })
}

fn target(namespace: &str, name: &str, port: &Value, service: &dyn Fn(&str, &str) -> Option<Arc<Service>>) -> Target {
    let Some(found) = service(namespace, name) else {
        return Target::Missing(Arc::from(format!("service {namespace}/{name} not found")));
    };
    let index = if let Some(number) = port["number"].as_u64() {
        found.ports.iter().position(|p| u64::from(p.port) == number)
    } else if let Some(port_name) = port["name"].as_str() {
        found.ports.iter().position(|p| &*p.name == port_name)
    } else if found.ports.len() == 1 {
        Some(0)
    } else {
        None
    };
    match index {
        Some(port) => Target::Service(Route { service: found, port }),
        None => {
            let wanted = port["number"].as_u64().map(|n| n.to_string()).or(port["name"].as_str().map(str::to_string));
            Target::Missing(Arc::from(format!(
                "service {namespace}/{name} has no port {}",
                wanted.as_deref().unwrap_or("(none given)")
            )))
        }
    }
}

/// The table of the Ingresses of `class`, and their TLS entries, oldest Ingress first
/// (it wins where two claim the same host and path). `metrics` gives the series of the
/// rules of an Ingress (namespace, name) that send to a Service (name).
pub(crate) fn build(
    ingresses: &[Arc<Value>],
    classes: &[Arc<Value>],
    class: &str,
    service: impl Fn(&str, &str) -> Option<Arc<Service>>,
    mut metrics: impl FnMut(&str, &str, &str) -> Arc<RouteMetrics>,
    warnings: &mut Vec<String>,
) -> (IngressTable, Vec<TlsRef>) {
    let is_default = |c: &Value| c["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true";
    let ours_is_default = classes.iter().any(|c| c["metadata"]["name"] == class && is_default(c));
    let classless_are_ours = ours_is_default || !classes.iter().any(|c| is_default(c));

    let mut table = IngressTable::default();
    let mut tls = Vec::new();
    for ingress in by_age(ingresses) {
        if !is_ours(ingress, class, classless_are_ours) {
            continue;
        }
        let namespace = ingress["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = ingress["metadata"]["name"].as_str().unwrap_or_default();
        let id = format!("{namespace}/{name}");
        let spec = &ingress["spec"];
        if !spec["defaultBackend"].is_null() && table.default_backend.is_none() {
            match backend_target(namespace, name, &spec["defaultBackend"], &service, &mut metrics) {
                Ok(target) => table.default_backend = Some(target),
                Err(why) => warnings.push(format!("ingress {id}: defaultBackend: {why}")),
            }
        }
        for rule in spec["rules"].as_array().into_iter().flatten() {
            let host = rule["host"].as_str().unwrap_or_default().to_ascii_lowercase();
            let rules = if host.is_empty() {
                &mut table.any_host
            } else if let Some(parent) = host.strip_prefix("*.") {
                table.wildcards.entry(parent.to_string()).or_default()
            } else {
                table.hosts.entry(host.clone()).or_default()
            };
            for path in rule["http"]["paths"].as_array().into_iter().flatten() {
                let target = match backend_target(namespace, name, &path["backend"], &service, &mut metrics) {
                    Ok(target) => target,
                    Err(why) => {
                        warnings.push(format!("ingress {id}: host \"{host}\": {why}"));
                        continue;
                    }
                };
                let value = path["path"].as_str().unwrap_or("/");
                match path["pathType"].as_str().unwrap_or("ImplementationSpecific") {
                    "Exact" => {
                        rules.exact.entry(value.to_string()).or_insert(target);
                    }
                    // ImplementationSpecific is Prefix here.
                    _ => {
                        let normalised = value.trim_end_matches('/').to_string();
                        if !rules.prefixes.iter().any(|(p, _)| *p == normalised) {
                            rules.prefixes.push((normalised, target));
                        }
                    }
                }
            }
        }
        for entry in spec["tls"].as_array().into_iter().flatten() {
            let Some(secret) = entry["secretName"].as_str().filter(|s| !s.is_empty()) else { continue };
            let hosts = entry["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect();
            tls.push(TlsRef {
                ingress: id.clone(),
                namespace: namespace.to_string(),
                secret: secret.to_string(),
                hosts,
            });
        }
    }
    let sort = |rules: &mut HostRules| rules.prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    table.hosts.values_mut().for_each(sort);
    table.wildcards.values_mut().for_each(sort);
    sort(&mut table.any_host);
    (table, tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::Policy;
    use crate::metrics::ProxyMetrics;
    use crate::snapshot::ServicePort;
    use serde_json::json;

    fn lookup(namespace: &str, name: &str) -> Option<Arc<Service>> {
        (namespace == "default" && name != "missing").then(|| {
            Arc::new(Service {
                id: Arc::from(format!("{namespace}/{name}")),
                ports: vec![
                    ServicePort { name: "http".into(), port: 80, endpoints: Arc::new([]) },
                    ServicePort { name: "admin".into(), port: 9000, endpoints: Arc::new([]) },
                ],
                policy: Policy::RoundRobin,
                affinity: None,
                counter: Arc::default(),
                wake: None,
                metrics: Arc::new(test_metrics().service(namespace, name)),
            })
        })
    }

    fn test_metrics() -> ProxyMetrics {
        ProxyMetrics::register(&prometheus::Registry::new()).expect("the metrics")
    }

    /// The table of these Ingresses, each route with series of its own.
    fn build_table(
        ingresses: &[Arc<Value>],
        classes: &[Arc<Value>],
        warnings: &mut Vec<String>,
    ) -> (IngressTable, Vec<TlsRef>) {
        let metrics = test_metrics();
        build(
            ingresses,
            classes,
            "flotilla",
            lookup,
            |ns, ingress, svc| Arc::new(metrics.route(ns, ingress, svc)),
            warnings,
        )
    }

    fn backend(service: &str) -> Value {
        json!({"service": {"name": service, "port": {"number": 80}}})
    }

    fn ingress(name: &str, class: Option<&str>, spec: Value) -> Arc<Value> {
        let mut object = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
        if let Some(class) = class {
            object["spec"]["ingressClassName"] = json!(class);
        }
        Arc::new(object)
    }

    fn path(path: &str, path_type: &str, service: &str) -> Value {
        json!({"path": path, "pathType": path_type, "backend": backend(service)})
    }

    fn routed(table: &IngressTable, host: &str, path: &str) -> Option<String> {
        match &table.route(host, path)?.target {
            Target::Service(route) => Some(format!("{}:{}", route.service.id, route.port().port)),
            Target::Missing(why) => Some(format!("missing: {why}")),
        }
    }

    #[test]
    fn exact_before_longest_prefix_element_wise() {
        let rules = json!({"rules": [{"host": "shop.example.com", "http": {"paths": [
            path("/", "Prefix", "root"),
            path("/api", "Prefix", "api"),
            path("/api/v2/", "Prefix", "v2"),
            path("/api/exact", "Exact", "exact"),
            path("/legacy", "ImplementationSpecific", "legacy"),
        ]}}]});
        let (table, _) = build_table(&[ingress("shop", Some("flotilla"), rules)], &[], &mut Vec::new());
        let at = |p: &str| routed(&table, "shop.example.com", p).unwrap_or_default();
        assert_eq!(at("/"), "default/root:80");
        assert_eq!(at("/api"), "default/api:80");
        assert_eq!(at("/api/"), "default/api:80");
        assert_eq!(at("/api/users"), "default/api:80");
        assert_eq!(at("/apikeys"), "default/root:80");
        assert_eq!(at("/api/v2"), "default/v2:80");
        assert_eq!(at("/api/v2/x"), "default/v2:80");
        assert_eq!(at("/api/exact"), "default/exact:80");
        assert_eq!(at("/api/exact/"), "default/api:80");
        assert_eq!(at("/legacy/x"), "default/legacy:80");
        assert_eq!(routed(&table, "other.example.com", "/"), None);
    }

    #[test]
    fn exact_hosts_before_wildcards_of_one_label_before_any_host_then_default() {
        let spec = json!({
        "defaultBackend": backend("fallback"),
        "rules": [
            {"host": "www.example.com", "http": {"paths": [path("/", "Prefix", "www")]}},
            {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
            {"http": {"paths": [path("/anywhere", "Prefix", "any")]}},
        ]});
        let (table, _) = build_table(&[ingress("all", Some("flotilla"), spec)], &[], &mut Vec::new());
        let at = |h: &str, p: &str| routed(&table, h, p).unwrap_or_default();
        assert_eq!(at("www.example.com", "/x"), "default/www:80");
        assert_eq!(at("shop.example.com", "/x"), "default/wild:80");
        assert_eq!(at("a.shop.example.com", "/x"), "default/fallback:80");
        assert_eq!(at("example.com", "/x"), "default/fallback:80");
        assert_eq!(at("example.com", "/anywhere/y"), "default/any:80");
        assert_eq!(at("10.0.0.1", "/"), "default/fallback:80");
    }

    #[test]
    fn classes_decide_which_ingresses_are_served() {
        let rule = |svc: &str| json!({"rules": [{"host": format!("{svc}.test"), "http": {"paths": [path("/", "Prefix", svc)]}}]});
        let ingresses = [
            ingress("mine", Some("flotilla"), rule("mine")),
            ingress("theirs", Some("nginx"), rule("theirs")),
            ingress("classless", None, rule("classless")),
        ];
        let class = |name: &str, default: bool| {
            Arc::new(json!({"metadata": {"name": name, "annotations":
                if default { json!({DEFAULT_CLASS_ANNOTATION: "true"}) } else { json!({}) }}}))
        };
        let served = |classes: &[Arc<Value>]| {
            let (table, _) = build_table(&ingresses, classes, &mut Vec::new());
            ["mine", "theirs", "classless"]
                .into_iter()
                .filter(|s| routed(&table, &format!("{s}.test"), "/").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(served(&[]), ["mine", "classless"]);
        assert_eq!(served(&[class("flotilla", true), class("nginx", false)]), ["mine", "classless"]);
        assert_eq!(served(&[class("flotilla", false), class("nginx", true)]), ["mine"]);
    }

    #[test]
    fn backends_by_port_name_and_missing_services_and_tls_entries() {
        let spec = json!({
        "tls": [{"hosts": ["A.test"], "secretName": "a-cert"}, {"secretName": ""}],
        "rules": [{"host": "a.test", "http": {"paths": [
            {"path": "/admin", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "admin"}}}},
            {"path": "/gone", "pathType": "Prefix", "backend": backend("missing")},
            {"path": "/bad-port", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 81}}}},
            {"path": "/resource", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
        ]}}]});
        let mut warnings = Vec::new();
        let (table, tls) = build_table(&[ingress("a", Some("flotilla"), spec)], &[], &mut warnings);
        assert_eq!(routed(&table, "a.test", "/admin").as_deref(), Some("default/web:9000"));
        assert_eq!(routed(&table, "a.test", "/gone").as_deref(), Some("missing: service default/missing not found"));
        assert_eq!(
            routed(&table, "a.test", "/bad-port").as_deref(),
            Some("missing: service default/web has no port 81")
        );
        assert_eq!(routed(&table, "a.test", "/resource"), None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(tls.len(), 1);
        assert_eq!((tls[0].secret.as_str(), tls[0].hosts.as_slice()), ("a-cert", &["a.test".to_string()][..]));
    }

    #[test]
    fn the_oldest_ingress_wins_a_conflict() {
        let spec = |svc: &str| json!({"rules": [{"host": "x.test", "http": {"paths": [path("/", "Prefix", svc)]}}]});
        let mut newer = (*ingress("newer", Some("flotilla"), spec("newer"))).clone();
        newer["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
        let mut older = (*ingress("older", Some("flotilla"), spec("older"))).clone();
        older["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        let (table, _) = build_table(&[Arc::new(newer), Arc::new(older)], &[], &mut Vec::new());
        assert_eq!(routed(&table, "x.test", "/").as_deref(), Some("default/older:80"));
        assert!(!table.is_empty());
    }
}
