//! `/apis/metrics.k8s.io/v1beta1`: `PodMetrics` (namespaced) and `NodeMetrics` (cluster
//! scoped), `get` and `list` only, in the JSON metrics-server answers (quantities and
//! the window as Go prints them), with the group's discovery documents and tables.
//!
//! Which pods and nodes exist, and their labels, come from the registry (so label and
//! field selectors work as on the objects themselves); what they use comes from the
//! samples. Objects without usage yet are left out of lists and are `NotFound` alone.

use super::{NodeUsage, PodUsage};
use crate::http::{ApiState, Query};
use crate::registry::ListQuery;
use flotilla_api::{ApiError, FieldSelector, LabelSelector, ObjectRef, Reason, ResourceType};
use http::Method;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// The API group.
pub(crate) const GROUP: &str = "metrics.k8s.io";
/// Its one version.
pub(crate) const VERSION: &str = "v1beta1";
const VERBS: [&str; 2] = ["get", "list"];

/// The group as `/apis` lists it.
pub(crate) fn group_entry() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/metrics.k8s.io/v1beta1`. The singular names are empty, as metrics-server
/// leaves them (metrics-server#1436), so that clients guess them from the kinds and
/// `kubectl get podmetrics` / `nodemetrics` work.
fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": VERBS},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": VERBS},
        ],
    })
}

/// The group's item of aggregated discovery (`/apis` as `APIGroupDiscoveryList`).
pub(crate) fn aggregated_discovery() -> Value {
    let resource = |plural: &str, kind: &str, scope: &str| {
        json!({
            "resource": plural,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "singularResource": "",
            "verbs": VERBS,
        })
    };
    json!({
        "metadata": {"name": GROUP},
        "versions": [{
            "version": VERSION,
            "resources": [
                resource("nodes", "NodeMetrics", "Cluster"),
                resource("pods", "PodMetrics", "Namespaced"),
            ],
            "freshness": "Current",
        }],
    })
}

/// What a path under `/apis/metrics.k8s.io` names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `/apis/metrics.k8s.io`.
    Group,
    /// `/apis/metrics.k8s.io/v1beta1`.
    Resources,
    /// `…/pods`, `…/namespaces/NS/pods[/NAME]`.
    Pods { namespace: Option<String>, name: Option<String> },
    /// `…/nodes[/NAME]`.
    Nodes { name: Option<String> },
}

impl Target {
    fn is_resource(&self) -> bool {
        matches!(self, Target::Pods { .. } | Target::Nodes { .. })
    }
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(Reason::NotFound, format!("the server could not find the requested resource ({path})"))
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        Reason::MethodNotAllowed,
        format!("the server does not allow the method {method} on this resource: resource metrics are read-only"),
    )
}

fn watch_not_allowed() -> ApiError {
    ApiError::new(Reason::MethodNotAllowed, "resource metrics cannot be watched: list them again instead")
}

/// The target of `rest` (the path after `/apis/metrics.k8s.io`), if `method` (and a
/// `watch`) may be used on it.
fn parse(method: &Method, rest: &[&str], watch: bool, path: &str) -> Result<Target, ApiError> {
    let name = |segment: &str| -> Result<String, ApiError> {
        let problems = flotilla_api::validate_path_segment_name(segment);
        if !problems.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid resource name \"{segment}\": [{}]",
                problems.join(", ")
            )));
        }
        Ok(segment.to_string())
    };
    let target = match rest {
        [] => Target::Group,
        [VERSION] => Target::Resources,
        [VERSION, "pods"] => Target::Pods { namespace: None, name: None },
        [VERSION, "namespaces", ns, "pods"] => Target::Pods { namespace: Some(name(ns)?), name: None },
        [VERSION, "namespaces", ns, "pods", pod] => Target::Pods { namespace: Some(name(ns)?), name: Some(name(pod)?) },
        [VERSION, "nodes"] => Target::Nodes { name: None },
        [VERSION, "nodes", node] => Target::Nodes { name: Some(name(node)?) },
        [VERSION, "watch", ..] => return Err(watch_not_allowed()),
        _ => return Err(not_found_path(path)),
    };
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    if watch && target.is_resource() {
        return Err(watch_not_allowed());
    }
    Ok(target)
}

/// A served document, and whether it is a `Table`.
#[derive(Debug)]
pub(crate) enum Answer {
    Object(Value),
    Table(Value),
}

/// Serves `method` on `path` (whose segments after `/apis/metrics.k8s.io` are `rest`);
/// `table` when the client asked for a `Table`.
pub(crate) async fn serve(
    state: &ApiState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    rest: &[&str],
    table: bool,
) -> Result<Answer, ApiError> {
    let query = Query::parse(query);
    let target = parse(method, rest, query.flag("watch")?, path)?;
    let now = Timestamp::now();
    let metrics = &state.resource_metrics;
    let object = match target {
        Target::Group => {
            let mut group = group_entry();
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            return Ok(Answer::Object(group));
        }
        Target::Resources => return Ok(Answer::Object(resource_list())),
        Target::Pods { namespace, name: Some(name) } => {
            let namespace = namespace.unwrap_or_default();
            let pod = state.registry.get(kind("Pod")?, Some(&namespace), &name).await.map_err(|e| match e.reason {
                Reason::NotFound => pod_not_found(&name),
                _ => e,
            })?;
            let usage = metrics.pod(&namespace, &name).ok_or_else(|| pod_not_found(&name))?;
            let mut object = pod_metrics(&pod, &usage, now);
            object["kind"] = json!("PodMetrics");
            object["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            object
        }
        Target::Pods { namespace, name: None } => {
            let rt = kind("Pod")?;
            let pods = list(state, rt, namespace.as_deref(), &query).await?;
            let usage: HashMap<(String, String), PodUsage> = metrics
                .pods(namespace.as_deref())
                .into_iter()
                .map(|usage| ((usage.namespace.clone(), usage.name.clone()), usage))
                .collect();
            let items: Vec<Value> = pods
                .iter()
                .filter_map(|pod| {
                    let key = (meta(pod, "namespace").to_string(), meta(pod, "name").to_string());
                    usage.get(&key).map(|usage| pod_metrics(pod, usage, now))
                })
                .collect();
            metrics_list("PodMetricsList", items)
        }
        Target::Nodes { name: Some(name) } => {
            let node = state.registry.get(kind("Node")?, None, &name).await.map_err(|e| match e.reason {
                Reason::NotFound => node_not_found(&name),
                _ => e,
            })?;
            let usage = metrics.node(&name).ok_or_else(|| node_not_found(&name))?;
            let mut object = node_metrics(&node, &usage, now);
            object["kind"] = json!("NodeMetrics");
            object["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            object
        }
        Target::Nodes { name: None } => {
            let nodes = list(state, kind("Node")?, None, &query).await?;
            let usage: HashMap<String, NodeUsage> =
                metrics.nodes().into_iter().map(|usage| (usage.name.clone(), usage)).collect();
            let items: Vec<Value> = nodes
                .iter()
                .filter_map(|node| usage.get(meta(node, "name")).map(|usage| node_metrics(node, usage, now)))
                .collect();
            metrics_list("NodeMetricsList", items)
        }
    };
    Ok(if table { Answer::Table(to_table(&object)) } else { Answer::Object(object) })
}

fn kind(kind: &str) -> Result<&'static ResourceType, ApiError> {
    flotilla_api::by_kind("v1", kind).ok_or_else(|| ApiError::internal(format!("{kind}s are not served")))
}

fn pod_not_found(name: &str) -> ApiError {
    ApiError::not_found(ObjectRef { group: GROUP, resource: "pods", name })
}

fn node_not_found(name: &str) -> ApiError {
    ApiError::not_found(ObjectRef { group: GROUP, resource: "nodes", name })
}

fn meta<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

/// The objects of `rt` the query's selectors pick.
async fn list(
    state: &ApiState,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Vec<Value>, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))?;
    fields.check_supported(&rt.field_selectors())?;
    let mut list = state.registry.list(rt, namespace, &ListQuery { labels, fields, ..ListQuery::default() }).await?;
    Ok(match list["items"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

fn metrics_list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// `metav1.Time`: RFC 3339 in whole seconds.
fn go_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The metadata metrics-server gives a metrics object: the object's name, namespace and
/// labels, created now.
fn metrics_metadata(object: &Value, now: Timestamp) -> Value {
    let mut metadata = json!({"name": meta(object, "name"), "creationTimestamp": go_time(now)});
    if let Some(namespace) = object["metadata"]["namespace"].as_str() {
        metadata["namespace"] = json!(namespace);
    }
    if let Some(labels) = object["metadata"]["labels"].as_object().filter(|l| !l.is_empty()) {
        metadata["labels"] = json!(labels);
    }
    metadata
}

/// A `PodMetrics` (without `kind`/`apiVersion`, as list items are).
fn pod_metrics(pod: &Value, usage: &PodUsage, now: Timestamp) -> Value {
    let containers: Vec<Value> = usage
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "usage": {
                "cpu": cpu_quantity(c.cpu_nanocores),
                "memory": memory_quantity(c.memory_bytes),
            }})
        })
        .collect();
    json!({
        "metadata": metrics_metadata(pod, now),
        "timestamp": go_time(usage.timestamp),
        "window": go_duration(usage.window),
        "containers": containers,
    })
}

/// A `NodeMetrics` (without `kind`/`apiVersion`, as list items are).
fn node_metrics(node: &Value, usage: &NodeUsage, now: Timestamp) -> Value {
    json!({
        "metadata": metrics_metadata(node, now),
        "timestamp": go_time(usage.timestamp),
        "window": go_duration(usage.window),
        "usage": {"cpu": cpu_quantity(usage.cpu_nanocores), "memory": memory_quantity(usage.memory_bytes)},
    })
}

/// A metrics object or list as a meta.k8s.io/v1 `Table`, with metrics-server's columns.
fn to_table(object: &Value) -> Value {
    let items: Vec<&Value> = match object["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![object],
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let (cpu, memory) = match item["containers"].as_array() {
                Some(containers) => {
                    let sum = |field: &str| -> i128 {
                        containers
                            .iter()
                            .filter_map(|c| c["usage"][field].as_str())
                            .filter_map(|q| flotilla_api::parse_quantity(q).ok())
                            .map(|q| q.as_nanos())
                            .sum()
                    };
                    let cpu = u64::try_from(sum("cpu")).unwrap_or(0);
                    let memory = u64::try_from(sum("memory") / 1_000_000_000).unwrap_or(0);
                    (cpu_quantity(cpu), memory_quantity(memory))
                }
                None => (
                    item["usage"]["cpu"].as_str().unwrap_or_default().to_string(),
                    item["usage"]["memory"].as_str().unwrap_or_default().to_string(),
                ),
            };
            json!({
                "cells": [item["metadata"]["name"], cpu, memory, item["window"]],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]},
            })
        })
        .collect();
    let column = |name: &str, format: &str, description: &str| json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0});
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            column("Name", "name", "Name must be unique within a namespace."),
            column("CPU", "", "CPU usage"),
            column("Memory", "", "Memory usage"),
            column("Window", "", "Time window of the usage"),
        ],
        "rows": rows,
    })
}

/// `value × 10^exponent` in Go's canonical decimal form: the largest exponent (a multiple
/// of 3) that keeps the value whole, with its SI suffix (`250m`, `1234567n`, `2`, `3k`).
fn decimal_quantity(mut value: u64, mut exponent: i32) -> String {
    if value == 0 {
        return "0".to_string();
    }
    while value.is_multiple_of(1000) && exponent < 18 {
        value /= 1000;
        exponent += 3;
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => "",
    };
    format!("{value}{suffix}")
}

/// CPU in nanocores as metrics-server writes it (`resource.NewScaledQuantity(n, -9)`).
fn cpu_quantity(nanocores: u64) -> String {
    decimal_quantity(nanocores, -9)
}

/// Bytes as metrics-server writes them (`resource.NewQuantity(b, BinarySI)`): a power of
/// 1024 suffix when it divides, else the plain number (under 1024: Go's decimal form).
fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return decimal_quantity(bytes, 0);
    }
    let mut value = bytes;
    let mut power = 0;
    while value.is_multiple_of(1024) && power < 6 {
        value /= 1024;
        power += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
    format!("{value}{suffix}")
}

/// A duration as Go's `time.Duration.String` prints it (`metav1.Duration` in JSON):
/// `0s`, `500ms`, `1.5s`, `15.004s`, `1m0s`, `2h3m4s`.
fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    /// `value / unit` with the remainder as decimals, trailing zeros trimmed.
    fn fraction(value: u128, unit: u128, digits: usize) -> String {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let decimals = format!("{rest:0digits$}");
        format!("{whole}.{}", decimals.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000, 6));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&fraction(nanos % 60_000_000_000, 1_000_000_000, 9));
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::super::ContainerUsage;
    use super::*;

    #[test]
    fn quantities_are_written_as_go_writes_them() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_500_000_000), "1500m");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(512), "512");
        assert_eq!(memory_quantity(1000), "1k", "under 1024 Go falls back to decimal");
        assert_eq!(memory_quantity(1234 * 1024), "1234Ki");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(1_234_567), "1234567");
        for (text, nanos) in [("250m", 250_000_000), ("1234567n", 1_234_567)] {
            assert_eq!(flotilla_api::parse_quantity(text).map(|q| q.as_nanos()), Ok(nanos));
        }
    }

    #[test]
    fn windows_are_written_as_go_durations() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(12)), "12ns");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_micros(7)), "7µs");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(15_004)), "15.004s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_millis(90_500)), "1m30.5s");
        assert_eq!(go_duration(Duration::from_secs(7384)), "2h3m4s");
    }

    #[test]
    fn paths_name_pods_and_nodes_and_nothing_else() {
        let get = Method::GET;
        let p = |rest: &[&str]| parse(&get, rest, false, "/p");
        assert_eq!(p(&[]), Ok(Target::Group));
        assert_eq!(p(&["v1beta1"]), Ok(Target::Resources));
        assert_eq!(p(&["v1beta1", "pods"]), Ok(Target::Pods { namespace: None, name: None }));
        assert_eq!(
            p(&["v1beta1", "namespaces", "shop", "pods", "web-1"]),
            Ok(Target::Pods { namespace: Some("shop".into()), name: Some("web-1".into()) })
        );
        assert_eq!(p(&["v1beta1", "nodes", "n1"]), Ok(Target::Nodes { name: Some("n1".into()) }));
        for missing in [&["v1"][..], &["v1beta1", "deployments"], &["v1beta1", "nodes", "n1", "status"]] {
            assert_eq!(p(missing).map_err(|e| e.reason), Err(Reason::NotFound), "{missing:?}");
        }
        assert_eq!(p(&["v1beta1", "namespaces", "a/b", "pods"]).map_err(|e| e.code()), Err(400));
        // Read-only.
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let refused = parse(&method, &["v1beta1", "namespaces", "shop", "pods", "web-1"], false, "/p");
            assert_eq!(refused.map_err(|e| e.code()), Err(405), "{method}");
        }
        assert_eq!(parse(&get, &["v1beta1", "pods"], true, "/p").map_err(|e| e.code()), Err(405));
        assert_eq!(parse(&get, &["v1beta1", "watch", "pods"], false, "/p").map_err(|e| e.code()), Err(405));
        assert_eq!(pod_not_found("web").message, "pods.metrics.k8s.io \"web\" not found");
    }

    #[test]
    fn pod_and_node_metrics_have_the_shape_kubectl_reads() {
        let now: Timestamp = "2025-01-01T00:00:10Z".parse().unwrap_or(Timestamp::UNIX_EPOCH);
        let pod = json!({"metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u"}});
        let usage = PodUsage {
            namespace: "shop".into(),
            name: "web".into(),
            node: "n1".into(),
            timestamp: now,
            window: Duration::from_millis(1002),
            containers: vec![ContainerUsage { name: "main".into(), cpu_nanocores: 250_000_000, memory_bytes: 2048 }],
            requests_per_second: 0.0,
        };
        let object = pod_metrics(&pod, &usage, now);
        assert_eq!(
            object,
            json!({
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                    "creationTimestamp": "2025-01-01T00:00:10Z"},
                "timestamp": "2025-01-01T00:00:10Z",
                "window": "1.002s",
                "containers": [{"name": "main", "usage": {"cpu": "250m", "memory": "2Ki"}}],
            })
        );
        let table = to_table(&metrics_list("PodMetricsList", vec![object]));
        assert_eq!(table["rows"][0]["cells"], json!(["web", "250m", "2Ki", "1.002s"]));
        let node = json!({"metadata": {"name": "n1"}});
        let usage = NodeUsage {
            name: "n1".into(),
            timestamp: now,
            window: Duration::from_secs(1),
            cpu_nanocores: 1_234_567,
            memory_bytes: 3 << 20,
        };
        let object = node_metrics(&node, &usage, now);
        assert_eq!(object["usage"], json!({"cpu": "1234567n", "memory": "3Mi"}));
        assert_eq!(object["metadata"].get("namespace"), None);
        assert_eq!(to_table(&object)["rows"][0]["cells"], json!(["n1", "1234567n", "3Mi", "1s"]));
    }

    #[test]
    fn discovery_names_both_resources() {
        let list = resource_list();
        let names: Vec<&str> =
            list["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(names, ["nodes", "pods"]);
        assert_eq!(list["resources"][1]["kind"], "PodMetrics");
        let aggregated = aggregated_discovery();
        assert_eq!(aggregated["versions"][0]["resources"][0]["scope"], "Cluster");
        assert_eq!(group_entry()["preferredVersion"]["groupVersion"], "metrics.k8s.io/v1beta1");
    }
}
