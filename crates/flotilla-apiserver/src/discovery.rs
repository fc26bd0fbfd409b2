//! Discovery documents: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}[/{version}]`,
//! built from the resource table so a kind added there is discoverable at once, plus the
//! resource metrics group (`metrics.k8s.io`), which is served from samples, not stored.

use crate::resource_metrics;
use flotilla_api::{ResourceType, Subresource, all_resources, groups};
use serde_json::{Value, json};

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub fn version() -> Value {
    let (major, minor) = flotilla_api::KUBERNETES_VERSION;
    json!({
        "major": major.to_string(),
        "minor": minor.to_string(),
        "gitVersion": format!("v{major}.{minor}.0-flotilla.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn api_group_list() -> Value {
    let mut groups: Vec<Value> =
        groups().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, v)| group_entry(g, v)).collect();
    groups.push(resource_metrics::group_entry());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group && !g.is_empty())?;
    let mut entry = group_entry(g, v);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

fn resource_entry(rt: &ResourceType) -> Value {
    let mut entry = json!({
        "name": rt.plural,
        "singularName": rt.singular(),
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": VERBS,
    });
    if !rt.short_names.is_empty() {
        entry["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        entry["categories"] = json!(rt.categories);
    }
    entry
}

fn subresource_entry(rt: &ResourceType, sub: Subresource) -> Value {
    let mut entry = json!({
        "name": format!("{}/{}", rt.plural, sub.name()),
        "singularName": "",
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": ["get", "patch", "update"],
    });
    if sub == Subresource::Scale {
        entry["group"] = json!("autoscaling");
        entry["version"] = json!("v1");
        entry["kind"] = json!("Scale");
    }
    entry
}

/// A subresource's name, response kind (group, version, kind) and verbs.
type Action = (&'static str, (&'static str, &'static str, &'static str), &'static [&'static str]);

/// The pod subresources that are actions rather than views of the pod (served by the
/// request path apart from the object's verbs): name, response kind, verbs. kubectl drain
/// evicts through `pods/eviction` only where discovery lists it.
const POD_ACTIONS: &[Action] = &[
    ("attach", ("", "v1", "PodAttachOptions"), &["create", "get"]),
    ("binding", ("", "v1", "Binding"), &["create"]),
    ("eviction", ("policy", "v1", "Eviction"), &["create"]),
    ("exec", ("", "v1", "PodExecOptions"), &["create", "get"]),
    ("log", ("", "v1", "Pod"), &["get"]),
    ("portforward", ("", "v1", "PodPortForwardOptions"), &["create", "get"]),
    ("proxy", ("", "v1", "NodeProxyOptions"), &["create", "delete", "get", "patch", "update"]),
];

fn pod_actions(rt: &ResourceType) -> &'static [Action] {
    if rt.group.is_empty() && rt.kind == "Pod" { POD_ACTIONS } else { &[] }
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for rt in all_resources().iter().filter(|r| r.group == group && r.version == version) {
        resources.push(resource_entry(rt));
        for sub in rt.subresources {
            resources.push(subresource_entry(rt, *sub));
        }
        for (name, (group, version, kind), verbs) in pod_actions(rt) {
            resources.push(json!({
                "name": format!("{}/{name}", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "group": group,
                "version": version,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// The media type of aggregated discovery, as kubectl asks for it and reads it back
/// from the response's Content-Type.
pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery (v2) before anything else.
pub fn wants_aggregated(accept: &str) -> bool {
    let first = accept.split(',').next().unwrap_or("");
    let params: Vec<String> = first.split(';').skip(1).map(|p| p.trim().replace(' ', "")).collect();
    ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"].iter().all(|want| params.iter().any(|p| p == want))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// `/api` (core, when `core` is true) or `/apis` (every other group) in the aggregated
/// form: every group, version and resource in one document.
pub fn aggregated(core: bool) -> Value {
    let mut items: Vec<Value> = groups()
        .into_iter()
        .filter(|(group, _)| group.is_empty() == core)
        .map(|(group, version)| {
            let resources: Vec<Value> = all_resources()
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|rt| {
                    let views = rt.subresources.iter().map(|sub| {
                        let kind = match sub {
                            Subresource::Scale => gvk("autoscaling", "v1", "Scale"),
                            Subresource::Status => gvk(rt.group, rt.version, rt.kind),
                        };
                        json!({"subresource": sub.name(), "responseKind": kind, "verbs": ["get", "patch", "update"]})
                    });
                    let actions = pod_actions(rt).iter().map(|(name, (group, version, kind), verbs)| {
                        json!({"subresource": name, "responseKind": gvk(group, version, kind), "verbs": verbs})
                    });
                    let subresources: Vec<Value> = views.chain(actions).collect();
                    let mut entry = json!({
                        "resource": rt.plural,
                        "responseKind": gvk(rt.group, rt.version, rt.kind),
                        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": rt.singular(),
                        "verbs": VERBS,
                        "subresources": subresources,
                    });
                    if !rt.short_names.is_empty() {
                        entry["shortNames"] = json!(rt.short_names);
                    }
                    if !rt.categories.is_empty() {
                        entry["categories"] = json!(rt.categories);
                    }
                    entry
                })
                .collect();
            json!({
                "metadata": {"name": group},
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    if !core {
        items.push(resource_metrics::aggregated_discovery());
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_lists_groups_resources_and_subresources() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let apis = aggregated(false);
        let apps = apis["items"].as_array().into_iter().flatten().find(|g| g["metadata"]["name"] == "apps").cloned();
        let apps = apps.expect("apps group");
        let resources = apps["versions"][0]["resources"].as_array().cloned().unwrap_or_default();
        let deployments = resources.iter().find(|r| r["resource"] == "deployments").expect("deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["shortNames"], json!(["deploy"]));
        let scale = deployments["subresources"].as_array().into_iter().flatten().find(|s| s["subresource"] == "scale");
        assert_eq!(scale.map(|s| s["responseKind"]["group"].clone()), Some(json!("autoscaling")));
    }

    #[test]
    fn core_and_apps_are_discoverable_with_short_names_and_scale() {
        let core = api_resource_list("", "v1").expect("core v1");
        let pods =
            core["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "pods").cloned().expect("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        // Where kubectl drain looks for evictions.
        let eviction = core["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "pods/eviction");
        let eviction = eviction.cloned().expect("pods/eviction");
        assert_eq!(
            (&eviction["group"], &eviction["version"], &eviction["kind"]),
            (&json!("policy"), &json!("v1"), &json!("Eviction"))
        );
        assert_eq!(eviction["verbs"], json!(["create"]));
        let apps = api_resource_list("apps", "v1").expect("apps v1");
        let scale = apps["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == "deployments/scale")
            .cloned()
            .expect("scale");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["group"], "autoscaling");
        assert!(api_resource_list("apps", "v2").is_none());
        let groups = api_group_list();
        let names: Vec<&str> =
            groups["groups"].as_array().into_iter().flatten().filter_map(|g| g["name"].as_str()).collect();
        assert!(names.contains(&"apps") && names.contains(&"networking.k8s.io") && !names.contains(&""));
        assert!(names.contains(&"metrics.k8s.io"));
        let apis = aggregated(false);
        assert!(apis["items"].as_array().into_iter().flatten().any(|g| g["metadata"]["name"] == "metrics.k8s.io"));
    }
}
