//! The resource kinds Flotilla serves, and what the API needs to know about each: its
//! group/version/kind, REST names, scope, discovery facts, storage prefix, and how to
//! check an object of that kind.
//!
//! Objects travel through the server as JSON values. Checking one is two steps: a typed
//! round trip through the k8s-openapi struct (types and shapes, unknown fields dropped,
//! as kube-apiserver prunes them), then the kind's own rules (names, replicas, pod
//! specs, quantities).

use crate::error::FieldError;
use crate::validation::{NameRule, validate_object_meta};
use crate::workloads;
use k8s_openapi::api::{apps, autoscaling, batch, core, discovery, networking, policy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A subresource served under `/{resource}/{name}/{subresource}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: writes touch only `.status`; writes to the main resource ignore it.
    Status,
    /// `scale`: autoscaling/v1 Scale over `.spec.replicas`.
    Scale,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Scale => "scale",
        }
    }
}

/// Everything the API knows about one kind.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The REST name (`deployments`).
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all` makes `kubectl get all` include the kind).
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Which rule the object's name must follow.
    pub name_rule: NameRule,
    /// Fields a field selector may use beyond `metadata.name` and `metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    normalize: fn(Value) -> Result<Value, FieldError>,
    validate_kind: fn(&Value) -> Vec<FieldError>,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The singular REST name: the lowercased kind (`deployment`).
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// `deployments.apps` / `pods`: the name kube-apiserver uses in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The storage key prefix of every object of this kind (`/registry/deployments/`),
    /// or of one namespace's objects when `namespace` is given.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.plural),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    /// Every field a field selector may name for this kind.
    pub fn field_selectors(&self) -> Vec<&'static str> {
        let mut fields = vec!["metadata.name", "metadata.namespace"];
        fields.extend_from_slice(self.selectable_fields);
        fields
    }

    /// Checks an object of this kind and returns it in canonical form (kube-apiserver's
    /// defaults filled in, typed round trip, unknown fields dropped), or every problem
    /// found, each naming its field.
    ///
    /// The object must already carry its `apiVersion` and `kind`.
    pub fn validate(&self, mut object: Value) -> Result<Value, Vec<FieldError>> {
        workloads::apply_defaults(self.kind, &mut object);
        let mut errors = Vec::new();
        if let Some(meta) = object.get("metadata") {
            errors.extend(validate_object_meta(meta, self.namespaced, self.name_rule));
        } else {
            errors.push(FieldError::required("metadata.name", "name or generateName is required"));
        }
        let canonical = match (self.normalize)(object) {
            Ok(canonical) => canonical,
            Err(e) => {
                errors.push(e);
                return Err(errors);
            }
        };
        errors.extend((self.validate_kind)(&canonical));
        if errors.is_empty() { Ok(canonical) } else { Err(errors) }
    }
}

/// The typed round trip: decode into `T` (reporting the failing field's path), encode
/// back. Serde's messages ("invalid type: string \"x\", expected i32") name the problem;
/// the path names where.
fn normalize_as<T: DeserializeOwned + Serialize>(object: Value) -> Result<Value, FieldError> {
    let typed: T = serde_path_to_error::deserialize(object).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(crate::error::FieldErrorType::Invalid, field, None, e.into_inner().to_string())
    })?;
    serde_json::to_value(typed)
        .map_err(|e| FieldError::new(crate::error::FieldErrorType::Invalid, "", None, e.to_string()))
}

fn no_rules(_: &Value) -> Vec<FieldError> {
    Vec::new()
}

macro_rules! resource {
    ($ty:ty, $group:literal, $version:literal, $kind:literal, $plural:literal,
     namespaced: $ns:literal, short: [$($short:literal),*], categories: [$($cat:literal),*],
     subresources: [$($sub:ident),*], name: $rule:ident, fields: [$($field:literal),*],
     rules: $rules:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$(Subresource::$sub),*],
            name_rule: NameRule::$rule,
            selectable_fields: &[$($field),*],
            normalize: normalize_as::<$ty>,
            validate_kind: $rules,
        }
    };
}

static RESOURCES: &[ResourceType] = &[
    resource!(core::v1::Namespace, "", "v1", "Namespace", "namespaces",
        namespaced: false, short: ["ns"], categories: [], subresources: [Status],
        name: Label, fields: ["status.phase"], rules: no_rules),
    resource!(core::v1::Pod, "", "v1", "Pod", "pods",
        namespaced: true, short: ["po"], categories: ["all"], subresources: [Status],
        name: Subdomain,
        fields: ["spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                 "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                 "status.podIP", "status.nominatedNodeName"],
        rules: workloads::validate_pod),
    resource!(core::v1::Service, "", "v1", "Service", "services",
        namespaced: true, short: ["svc"], categories: ["all"], subresources: [Status],
        name: Dns1035Label, fields: ["spec.clusterIP", "spec.type"],
        rules: crate::service::validate_service),
    resource!(core::v1::Endpoints, "", "v1", "Endpoints", "endpoints",
        namespaced: true, short: ["ep"], categories: [], subresources: [],
        name: Subdomain, fields: [], rules: no_rules),
    resource!(core::v1::ConfigMap, "", "v1", "ConfigMap", "configmaps",
        namespaced: true, short: ["cm"], categories: [], subresources: [],
        name: Subdomain, fields: [], rules: workloads::validate_config_map),
    resource!(core::v1::Secret, "", "v1", "Secret", "secrets",
        namespaced: true, short: [], categories: [], subresources: [],
        name: Subdomain, fields: ["type"], rules: workloads::validate_secret),
    resource!(core::v1::ServiceAccount, "", "v1", "ServiceAccount", "serviceaccounts",
        namespaced: true, short: ["sa"], categories: [], subresources: [],
        name: Subdomain, fields: [], rules: no_rules),
    resource!(core::v1::Node, "", "v1", "Node", "nodes",
        namespaced: false, short: ["no"], categories: [], subresources: [Status],
        name: Subdomain, fields: ["spec.unschedulable"], rules: no_rules),
    resource!(core::v1::Event, "", "v1", "Event", "events",
        namespaced: true, short: ["ev"], categories: [], subresources: [],
        name: Subdomain,
        fields: ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                 "involvedObject.uid", "involvedObject.apiVersion",
                 "involvedObject.resourceVersion", "involvedObject.fieldPath",
                 "reason", "reportingComponent", "source", "type"],
        rules: no_rules),
    resource!(apps::v1::ReplicaSet, "apps", "v1", "ReplicaSet", "replicasets",
        namespaced: true, short: ["rs"], categories: ["all"], subresources: [Status, Scale],
        name: Subdomain, fields: ["status.replicas"], rules: workloads::validate_replica_set),
    resource!(apps::v1::Deployment, "apps", "v1", "Deployment", "deployments",
        namespaced: true, short: ["deploy"], categories: ["all"],
        subresources: [Status, Scale], name: Subdomain, fields: [],
        rules: workloads::validate_deployment),
    resource!(apps::v1::DaemonSet, "apps", "v1", "DaemonSet", "daemonsets",
        namespaced: true, short: ["ds"], categories: ["all"], subresources: [Status],
        name: Subdomain, fields: [], rules: workloads::validate_daemon_set),
    resource!(batch::v1::Job, "batch", "v1", "Job", "jobs",
        namespaced: true, short: [], categories: ["all"], subresources: [Status],
        name: Subdomain, fields: ["status.successful"], rules: workloads::validate_job),
    resource!(batch::v1::CronJob, "batch", "v1", "CronJob", "cronjobs",
        namespaced: true, short: ["cj"], categories: ["all"], subresources: [Status],
        name: Subdomain, fields: [], rules: workloads::validate_cron_job),
    resource!(discovery::v1::EndpointSlice, "discovery.k8s.io", "v1", "EndpointSlice",
        "endpointslices", namespaced: true, short: [], categories: [], subresources: [],
        name: Subdomain, fields: [], rules: no_rules),
    resource!(networking::v1::Ingress, "networking.k8s.io", "v1", "Ingress", "ingresses",
        namespaced: true, short: ["ing"], categories: [], subresources: [Status],
        name: Subdomain, fields: [], rules: no_rules),
    resource!(networking::v1::IngressClass, "networking.k8s.io", "v1", "IngressClass",
        "ingressclasses", namespaced: false, short: [], categories: [], subresources: [],
        name: Subdomain, fields: [], rules: no_rules),
    resource!(policy::v1::PodDisruptionBudget, "policy", "v1", "PodDisruptionBudget",
        "poddisruptionbudgets", namespaced: true, short: ["pdb"], categories: [],
        subresources: [Status], name: Subdomain, fields: [], rules: workloads::validate_pdb),
    resource!(autoscaling::v2::HorizontalPodAutoscaler, "autoscaling", "v2",
        "HorizontalPodAutoscaler", "horizontalpodautoscalers", namespaced: true,
        short: ["hpa"], categories: ["all"], subresources: [Status], name: PathSegment,
        fields: [], rules: workloads::validate_hpa),
];

/// The fields of `input` that its canonical form dropped because no schema declares
/// them, as paths (`spec.replicass`, `spec.template.spec.containers[0].imagee`): what
/// `fieldValidation=Strict|Warn` reports. Nulls in the input are not fields.
pub fn unknown_fields(input: &Value, canonical: &Value) -> Vec<String> {
    fn walk(input: &Value, canonical: &Value, path: &str, out: &mut Vec<String>) {
        match (input, canonical) {
            (Value::Object(given), Value::Object(kept)) => {
                for (key, value) in given {
                    if value.is_null() {
                        continue;
                    }
                    let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    match kept.get(key) {
                        Some(kept_value) => walk(value, kept_value, &child, out),
                        None => out.push(child),
                    }
                }
            }
            (Value::Array(given), Value::Array(kept)) if given.len() == kept.len() => {
                for (index, (value, kept_value)) in given.iter().zip(kept).enumerate() {
                    walk(value, kept_value, &format!("{path}[{index}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(input, canonical, "", &mut out);
    out
}

/// Every kind the API serves, in discovery order.
pub fn all() -> &'static [ResourceType] {
    RESOURCES
}

/// The kind served at `/{group}/{version}/{plural}`.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The kind named by a manifest's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.kind == kind && r.api_version() == api_version)
}

/// A kind named the way a person types it on the command line: plural, singular,
/// short name or kind, optionally qualified by group (`deploy`, `deployments.apps`).
pub fn by_cli_name(name: &str) -> Option<&'static ResourceType> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((base, group)) => (base.to_string(), Some(group.to_string())),
        None => (lower, None),
    };
    RESOURCES.iter().find(|r| {
        let name_matches =
            r.plural == base || r.short_names.contains(&base.as_str()) || r.kind.eq_ignore_ascii_case(&base);
        name_matches && group.as_deref().is_none_or(|g| g == r.group)
    })
}

/// The API groups served, each with its one version, core ("") first.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookups_by_every_name_people_use() {
        let deploy = by_cli_name("deploy").map(|r| r.kind);
        assert_eq!(deploy, Some("Deployment"));
        assert_eq!(by_cli_name("deployments.apps").map(|r| r.kind), Some("Deployment"));
        assert_eq!(by_cli_name("Pod").map(|r| r.plural), Some("pods"));
        assert_eq!(by_cli_name("ing").map(|r| r.group), Some("networking.k8s.io"));
        assert!(by_cli_name("deployments.batch").is_none());
        assert_eq!(by_kind("apps/v1", "ReplicaSet").map(|r| r.plural), Some("replicasets"));
        assert!(by_kind("v1", "Deployment").is_none());
        assert_eq!(
            by_plural("autoscaling", "v2", "horizontalpodautoscalers").map(|r| r.kind),
            Some("HorizontalPodAutoscaler")
        );
    }

    #[test]
    fn every_kind_round_trips_a_minimal_object() {
        for r in all() {
            let mut meta = json!({"name": "x"});
            if r.namespaced {
                meta["namespace"] = json!("default");
            }
            let mut object = json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": meta});
            // Kinds whose rules need a body get the smallest valid one.
            match r.kind {
                "Pod" => object["spec"] = json!({"containers": [{"name": "c", "image": "i"}]}),
                "Deployment" | "ReplicaSet" | "DaemonSet" => {
                    object["spec"] = json!({
                        "selector": {"matchLabels": {"app": "x"}},
                        "template": {"metadata": {"labels": {"app": "x"}},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}
                    })
                }
                "Job" => {
                    object["spec"] = json!({"template": {"spec": {
                    "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}})
                }
                "CronJob" => {
                    object["spec"] = json!({"schedule": "* * * * *", "jobTemplate": {
                    "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                        "containers": [{"name": "c", "image": "i"}]}}}}})
                }
                "Service" => object["spec"] = json!({"ports": [{"port": 80}]}),
                "HorizontalPodAutoscaler" => {
                    object["spec"] = json!({"maxReplicas": 3,
                    "scaleTargetRef": {"kind": "Deployment", "name": "x", "apiVersion": "apps/v1"}})
                }
                "EndpointSlice" => object["addressType"] = json!("IPv4"),
                "Event" => object["involvedObject"] = json!({"kind": "Pod", "name": "x"}),
                _ => {}
            }
            let result = r.validate(object);
            assert!(result.is_ok(), "{}: {:?}", r.kind, result.err());
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        let deploy = by_kind("apps/v1", "Deployment").expect("deployment kind");
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"replicas": "three"}});
        let errors = deploy.validate(object).expect_err("type error");
        assert_eq!(errors[0].field, "spec.replicas", "{errors:?}");
    }

    #[test]
    fn unknown_fields_are_found_by_path() {
        let deploy = by_kind("apps/v1", "Deployment").expect("deployment kind");
        let input = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "namespace": "default", "creationTimestamp": null},
            "spec": {"replicass": 2, "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo"}]}}}});
        let canonical = deploy.validate(input.clone()).expect("valid once pruned");
        assert_eq!(unknown_fields(&input, &canonical), ["spec.replicass", "spec.template.spec.containers[0].imagee"]);
        assert!(unknown_fields(&canonical, &canonical).is_empty());
    }

    #[test]
    fn unknown_fields_are_dropped() {
        let cm = by_kind("v1", "ConfigMap").expect("configmap kind");
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "default"}, "bogus": 1, "data": {"a": "b"}});
        let canonical = cm.validate(object).expect("valid");
        assert!(canonical.get("bogus").is_none());
        assert_eq!(canonical["data"]["a"], "b");
    }
}
