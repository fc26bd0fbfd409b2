//! A Service's rules that need no cluster state, as kube-apiserver's defaulting,
//! validation and update strategy have them: the defaults every write gets, the shape
//! checks (`clusterIP` vs `clusterIPs`, `nodePort` only where a type uses it), and what
//! an update keeps or drops (`patchAllocatedValues`, `dropTypeDependentFields`).
//!
//! Allocating addresses and ports from the cluster's ranges needs the cluster's state
//! and lives in the API server.

use crate::error::FieldError;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::IpAddr;

/// `spec.clusterIP` of a headless Service.
pub const CLUSTER_IP_NONE: &str = "None";

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

fn str_at<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get(field).and_then(Value::as_str)
}

/// The Service's `spec.type`, `ClusterIP` when unset.
pub fn service_type(service: &Value) -> &str {
    str_at(&service["spec"], "type").filter(|t| !t.is_empty()).unwrap_or("ClusterIP")
}

/// Whether the type gets node ports (`NodePort` and `LoadBalancer`).
pub fn needs_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

/// Whether the type has a cluster IP (or "None"): every type but `ExternalName`.
pub fn needs_cluster_ip(service: &Value) -> bool {
    service_type(service) != "ExternalName"
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(service: &Value) -> bool {
    str_at(&service["spec"], "clusterIP") == Some(CLUSTER_IP_NONE)
}

fn has_selector(spec: &Value) -> bool {
    spec.get("selector").and_then(Value::as_object).is_some_and(|s| !s.is_empty())
}

fn set_if_missing(object: &mut Value, field: &str, value: Value) {
    if let Value::Object(map) = object
        && map.get(field).is_none_or(Value::is_null)
    {
        map.insert(field.to_string(), value);
    }
}

fn is_unset(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// kube-apiserver's defaults for a Service's spec, on every write: the type, session
/// affinity, each port's protocol and target port, the traffic policies and IP families
/// of a single-stack IPv4 cluster, and `clusterIP` / `clusterIPs` mirroring each other.
pub(crate) fn default_service(spec: &mut Value) {
    set_if_missing(spec, "type", json!("ClusterIP"));
    set_if_missing(spec, "sessionAffinity", json!("None"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports {
            set_if_missing(port, "protocol", json!("TCP"));
            let number = port.get("port").cloned().unwrap_or(Value::Null);
            set_if_missing(port, "targetPort", number);
        }
    }
    let service_type = str_at(spec, "type").unwrap_or("ClusterIP").to_string();
    if service_type == "ExternalName" {
        return;
    }
    set_if_missing(spec, "internalTrafficPolicy", json!("Cluster"));
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        set_if_missing(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        set_if_missing(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    // clusterIPs[0] is clusterIP: whichever a client set fills in the other.
    match (is_unset(spec.get("clusterIP")), is_unset(spec.get("clusterIPs"))) {
        (false, true) => {
            let ip = spec["clusterIP"].clone();
            spec["clusterIPs"] = json!([ip]);
        }
        (true, false) => {
            let first = spec["clusterIPs"][0].clone();
            spec["clusterIP"] = first;
        }
        _ => {}
    }
    // A headless Service without a selector asks for every family the cluster has, as
    // kube does (its endpoints are whatever the user puts there).
    let headless_selectorless = str_at(spec, "clusterIP") == Some(CLUSTER_IP_NONE) && !has_selector(spec);
    if headless_selectorless {
        set_if_missing(spec, "ipFamilyPolicy", json!("RequireDualStack"));
    } else {
        set_if_missing(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    set_if_missing(spec, "ipFamilies", json!(["IPv4"]));
}

/// The shape rules of a Service, as kube-apiserver's `ValidateService` has them (the
/// ones a single object shows; ranges and collisions are the API server's).
pub(crate) fn validate_service(object: &Value) -> Vec<FieldError> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let mut errors = Vec::new();
    if let Some(kind) = str_at(spec, "type")
        && !TYPES.contains(&kind)
    {
        errors.push(FieldError::not_supported("spec.type", kind, TYPES));
    }
    let service_type = service_type(object);
    let headless = is_headless(object);
    let empty = Vec::new();
    let ports = spec.get("ports").and_then(Value::as_array).unwrap_or(&empty);
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match port.get("port").and_then(Value::as_i64) {
            Some(p) if (1..=65535).contains(&p) => {}
            Some(p) => {
                errors.push(FieldError::invalid(format!("{at}.port"), &p, "must be between 1 and 65535, inclusive"))
            }
            None => errors.push(FieldError::required(format!("{at}.port"), "")),
        }
        match str_at(port, "name") {
            Some(name) if !name.is_empty() && !names.insert(name) => {
                errors.push(FieldError::duplicate(format!("{at}.name"), &name));
            }
            Some(name) if !name.is_empty() => {}
            _ if ports.len() > 1 => errors.push(FieldError::required(format!("{at}.name"), "")),
            _ => {}
        }
        let protocol = str_at(port, "protocol").unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            errors.push(FieldError::not_supported(format!("{at}.protocol"), protocol, &["SCTP", "TCP", "UDP"]));
        }
        match port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0) {
            None => {}
            Some(node_port) if !(1..=65535).contains(&node_port) => errors.push(FieldError::invalid(
                format!("{at}.nodePort"),
                &node_port,
                "must be between 1 and 65535, inclusive",
            )),
            Some(_) if service_type == "ClusterIP" => errors
                .push(FieldError::forbidden(format!("{at}.nodePort"), "may not be used when `type` is 'ClusterIP'")),
            Some(node_port) if !node_ports.insert((node_port, protocol)) => {
                errors.push(FieldError::duplicate(format!("{at}.nodePort"), &node_port));
            }
            Some(_) => {}
        }
    }
    errors.extend(validate_cluster_ips(spec, service_type));
    if service_type == "ExternalName" && str_at(spec, "externalName").is_none_or(str::is_empty) {
        errors.push(FieldError::required("spec.externalName", ""));
    }
    errors
}

/// `clusterIP` and `clusterIPs`: agree with each other, are addresses (or "None"),
/// fit the type.
fn validate_cluster_ips(spec: &Value, service_type: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let cluster_ips: Vec<&str> =
        spec.get("clusterIPs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let cluster_ip = str_at(spec, "clusterIP").unwrap_or("");
    if service_type == "ExternalName" {
        if !cluster_ip.is_empty() || !cluster_ips.is_empty() {
            errors.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
        }
        return errors;
    }
    if cluster_ip.is_empty() {
        if !cluster_ips.is_empty() {
            errors.push(FieldError::required("spec.clusterIP", "must be set when clusterIPs is"));
        }
        return errors;
    }
    if cluster_ips.first().is_some_and(|first| *first != cluster_ip) {
        errors.push(FieldError::invalid("spec.clusterIPs", &cluster_ips, "first value must match `clusterIP`"));
    }
    if cluster_ips.len() > 2 {
        errors.push(FieldError::invalid("spec.clusterIPs", &cluster_ips, "may only hold up to 2 values"));
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        let at = format!("spec.clusterIPs[{i}]");
        if *ip == CLUSTER_IP_NONE {
            if i > 0 {
                errors.push(FieldError::invalid(at, ip, "may only be set to 'None' as the first value"));
            } else if matches!(service_type, "NodePort" | "LoadBalancer") {
                let detail = format!("may not be set to 'None' for {service_type} services");
                errors.push(FieldError::invalid(at, ip, detail));
            }
        } else if ip.parse::<IpAddr>().is_err() {
            errors.push(FieldError::invalid(at, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
        }
    }
    errors
}

/// The nonzero `nodePort`s of a Service's ports.
pub fn node_ports(service: &Value) -> Vec<i64> {
    service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .filter(|p| *p != 0)
        .collect()
}

/// What an update of a Service keeps and drops before it is validated, as kube's
/// service storage does: values the server allocated and the client left out are kept
/// (re-applying the manifest that created a Service succeeds: kube's
/// `patchAllocatedValues`); fields that a new type no longer uses are dropped when the
/// client did not also change them, to be released (`dropTypeDependentFields`).
///
/// `next` is the client's object (defaults are applied here first); `current` is stored.
pub fn prepare_service_update(current: &Value, next: &mut Value) {
    if !next["spec"].is_object() {
        return;
    }
    default_service(&mut next["spec"]);
    let (old_spec, next_type) = (&current["spec"], service_type(next).to_string());
    let same = |next: &Value, field: &str| old_spec.get(field) == next["spec"].get(field);

    // A client that changed (or cleared) only `clusterIP` means `clusterIPs` too
    // (kube's `normalizeClusterIPs`).
    if !same(next, "clusterIP") && same(next, "clusterIPs") {
        match next["spec"]["clusterIP"].as_str().filter(|ip| !ip.is_empty()).map(str::to_string) {
            Some(ip) => next["spec"]["clusterIPs"] = json!([ip]),
            None => {
                if let Some(spec) = next["spec"].as_object_mut() {
                    spec.remove("clusterIPs");
                }
            }
        }
    }

    // Type-dependent fields the new type does not use, unchanged by the client.
    if needs_cluster_ip(current) && !needs_cluster_ip(next) {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"] {
            if same(next, field)
                && let Some(spec) = next["spec"].as_object_mut()
            {
                spec.remove(field);
            }
        }
    }
    if needs_node_ports(current) && !needs_node_ports(next) {
        let old: HashSet<i64> = node_ports(current).into_iter().collect();
        if node_ports(next).iter().all(|p| old.contains(p))
            && let Some(ports) = next["spec"]["ports"].as_array_mut()
        {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                port.remove("nodePort");
            }
        }
    }
    if service_type(current) == "LoadBalancer"
        && next_type != "LoadBalancer"
        && same(next, "allocateLoadBalancerNodePorts")
        && let Some(spec) = next["spec"].as_object_mut()
    {
        spec.remove("allocateLoadBalancerNodePorts");
    }
    if needs_node_ports(current)
        && !needs_node_ports(next)
        && same(next, "externalTrafficPolicy")
        && let Some(spec) = next["spec"].as_object_mut()
    {
        spec.remove("externalTrafficPolicy");
    }

    // Allocated values the client left out.
    if needs_cluster_ip(current) && needs_cluster_ip(next) {
        for field in ["clusterIP", "clusterIPs"] {
            if is_unset(next["spec"].get(field)) && !is_unset(old_spec.get(field)) {
                next["spec"][field] = old_spec[field].clone();
            }
        }
    }
    if needs_node_ports(current) && needs_node_ports(next) {
        let in_use: HashSet<i64> = node_ports(next).into_iter().collect();
        let old_ports = old_spec["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = next["spec"]["ports"].as_array_mut() {
            for port in ports.iter_mut() {
                if port["nodePort"].as_i64().unwrap_or(0) != 0 {
                    continue;
                }
                // By name, as kube matches them; a port another one now uses stays free.
                let kept = old_ports
                    .iter()
                    .find(|old| old["name"].as_str().unwrap_or("") == port["name"].as_str().unwrap_or(""))
                    .and_then(|old| old["nodePort"].as_i64())
                    .filter(|p| *p != 0 && !in_use.contains(p));
                if let Some(node_port) = kept {
                    port["nodePort"] = json!(node_port);
                }
            }
        }
    }
}

/// What an update may not change, as kube-apiserver's `ValidateServiceUpdate`: a cluster
/// IP once set (unless the type moves to or from `ExternalName`).
pub fn validate_service_update(current: &Value, next: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !needs_cluster_ip(current) || !needs_cluster_ip(next) {
        return errors;
    }
    let ips = |service: &Value| -> Vec<String> {
        service["spec"]["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str().map(str::to_string))
            .collect()
    };
    let (old, new) = (ips(current), ips(next));
    if old.is_empty() {
        return errors;
    }
    if is_headless(current) && is_headless(next) {
        return errors;
    }
    for (i, ip) in old.iter().enumerate() {
        if new.get(i).is_some_and(|n| n != ip) || (i == 0 && new.is_empty()) {
            errors.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), &new, "may not change once set"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn defaulted(spec: Value) -> Value {
        let mut service = json!({"spec": spec});
        default_service(&mut service["spec"]);
        service
    }

    #[test]
    fn defaults_per_type() {
        let svc = defaulted(json!({"ports": [{"port": 80}]}));
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert!(spec.get("clusterIP").is_none(), "allocated by the server, not defaulted");

        let lb = defaulted(json!({"type": "LoadBalancer", "ports": [{"port": 80}], "clusterIP": "10.96.0.9"}));
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["clusterIPs"], json!(["10.96.0.9"]));

        let plural = defaulted(json!({"clusterIPs": ["10.96.0.7"], "ports": [{"port": 80}]}));
        assert_eq!(plural["spec"]["clusterIP"], "10.96.0.7");

        let external = defaulted(json!({"type": "ExternalName", "externalName": "db.example.com"}));
        assert!(external["spec"].get("ipFamilies").is_none());
        assert!(external["spec"].get("internalTrafficPolicy").is_none());

        let headless = defaulted(json!({"clusterIP": "None"}));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        let headless = defaulted(json!({"clusterIP": "None", "selector": {"app": "x"}}));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "SingleStack");
    }

    #[test]
    fn shape_rules() {
        let bad = defaulted(json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"],
            "ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(fields(&validate_service(&bad)), ["spec.ports[0].nodePort", "spec.clusterIPs"]);
        let errors = validate_service(&bad);
        assert!(errors[0].to_string().contains("may not be used when `type` is 'ClusterIP'"), "{errors:?}");

        let garbage = defaulted(json!({"clusterIP": "ten", "ports": [{"port": 80}]}));
        assert_eq!(fields(&validate_service(&garbage)), ["spec.clusterIPs[0]"]);

        let headless_node_port = defaulted(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
        let errors = validate_service(&headless_node_port);
        assert!(errors[0].to_string().contains("may not be set to 'None' for NodePort services"), "{errors:?}");

        let duplicate = defaulted(json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]}));
        assert_eq!(fields(&validate_service(&duplicate)), ["spec.ports[1].nodePort"]);

        let external = defaulted(json!({"type": "ExternalName"}));
        assert_eq!(fields(&validate_service(&external)), ["spec.externalName"]);
    }

    #[test]
    fn updates_keep_allocations_and_drop_what_a_type_no_longer_uses() {
        let current = defaulted(json!({"type": "NodePort", "clusterIP": "10.96.0.9",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        // kubectl apply of the original manifest: no clusterIP, no nodePort.
        let mut next = defaulted(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}));
        prepare_service_update(&current, &mut next);
        assert_eq!(next["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(next["spec"]["clusterIPs"], json!(["10.96.0.9"]));
        assert_eq!(next["spec"]["ports"][0]["nodePort"], 30080);
        assert!(validate_service_update(&current, &next).is_empty());

        // To ClusterIP with the node ports as they were: they are dropped (and released).
        let mut to_cluster_ip = current.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_service_update(&current, &mut to_cluster_ip);
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert!(to_cluster_ip["spec"].get("externalTrafficPolicy").is_none());
        assert!(validate_service(&to_cluster_ip).is_empty());

        let mut moved = current.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.10");
        moved["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
        let errors = validate_service_update(&current, &moved);
        assert_eq!(fields(&errors), ["spec.clusterIPs[0]"]);
        assert!(errors[0].to_string().ends_with("may not change once set"), "{errors:?}");
    }
}
