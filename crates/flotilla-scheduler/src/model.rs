//! What the scheduler reads from pods and nodes, parsed once per object version: a pod's
//! resource requests and placement constraints, a node's allocatable resources, labels
//! and taints, and what the pods on a node already request.
//!
//! Parsing never fails on odd input: a pod whose spec or requests cannot be read is an
//! [`InvalidPod`] (the scheduler reports it as unschedulable), a node whose allocatable
//! cannot be read keeps the reason and fits nothing.

use flotilla_api::k8s_openapi::api::core::v1::{NodeSelector, ResourceRequirements, Taint, Toleration};
use flotilla_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// kube-scheduler's CPU request for a container that sets none, counted by the scores
/// only (so that pods without requests still spread): 100m.
pub(crate) const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The same for memory: 200 MiB.
pub(crate) const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

pub(crate) const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub(crate) const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub(crate) const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub(crate) const NO_SCHEDULE: &str = "NoSchedule";
pub(crate) const NO_EXECUTE: &str = "NoExecute";

/// Amounts of resources in the units the scheduler compares: millicores of CPU, bytes of
/// memory and ephemeral storage, whole units of anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (`example.com/gpu`) and hugepages, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Sets resource `name` to `amount` (in its comparison unit).
    fn set(&mut self, name: &str, amount: i64) {
        match name {
            "cpu" => self.milli_cpu = amount,
            "memory" => self.memory = amount,
            "ephemeral-storage" => self.ephemeral_storage = amount,
            // The pod count is not a request; nodes carry it apart (`Allocatable::pods`).
            "pods" => {}
            other => {
                self.scalar.insert(other.to_string(), amount);
            }
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let mine = self.scalar.entry(name.clone()).or_default();
            *mine = mine.saturating_add(*amount);
        }
    }

    pub fn subtract(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let mine = self.scalar.entry(name.clone()).or_default();
            *mine = mine.saturating_sub(*amount);
            if *mine == 0 {
                self.scalar.remove(name);
            }
        }
    }

    /// Each resource as the larger of the two.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            let mine = self.scalar.entry(name.clone()).or_default();
            *mine = (*mine).max(*amount);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.values().all(|a| *a == 0)
    }

    /// A resource list (`requests`, `allocatable`…); `path` names it in errors.
    fn from_list(list: &BTreeMap<String, ApiQuantity>, path: &str) -> Result<Resources, String> {
        let mut resources = Resources::default();
        for (name, quantity) in list {
            resources.set(name, amount(name, quantity, &format!("{path}.{name}"))?);
        }
        Ok(resources)
    }
}

/// `quantity` of resource `name` in its comparison unit: millicores for CPU, whole
/// units (rounded up, as Go's `Value`) for everything else.
fn amount(name: &str, quantity: &ApiQuantity, path: &str) -> Result<i64, String> {
    let parsed = flotilla_api::parse_quantity(quantity.0.trim())
        .map_err(|error| format!("{path}: invalid quantity {:?}: {error}", quantity.0))?;
    if parsed.is_negative() {
        return Err(format!("{path}: {:?} must be greater than or equal to 0", quantity.0));
    }
    let amount = if name == "cpu" { parsed.as_milli() } else { parsed.as_value() };
    Ok(i64::try_from(amount).unwrap_or(i64::MAX))
}

/// What a pod asks of a node's resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Requests {
    /// What the filters compare with a node's free resources.
    pub resources: Resources,
    /// CPU (millicores) with kube-scheduler's default for containers that request none:
    /// what the scores count.
    pub non_zero_milli_cpu: i64,
    /// Memory (bytes), likewise.
    pub non_zero_memory: i64,
}

/// The parts of a container (or of the pod, for pod-level resources) that request
/// resources.
#[derive(Debug, Clone, Default, PartialEq)]
struct ContainerResources {
    /// Where it is in the pod, for messages (`spec.containers[0]`).
    path: String,
    resources: ResourceRequirements,
    /// An init container with `restartPolicy: Always`: a sidecar that keeps running.
    sidecar: bool,
}

impl ContainerResources {
    /// Every container of `spec[field]`.
    fn list(spec: &Value, field: &str) -> Result<Vec<ContainerResources>, InvalidPod> {
        let containers = spec[field].as_array().map(Vec::as_slice).unwrap_or_default();
        containers
            .iter()
            .enumerate()
            .map(|(i, container)| {
                let path = format!("spec.{field}[{i}]");
                let resources = decode_or_default(&container["resources"])
                    .map_err(|error| InvalidPod(format!("{path}.resources cannot be read: {error}")))?;
                let sidecar = container["restartPolicy"] == "Always";
                Ok(ContainerResources { path, resources, sidecar })
            })
            .collect()
    }

    /// What it requests, a missing request defaulting to the limit as kube-apiserver
    /// defaults it; with `defaults`, a CPU or memory request still missing is the
    /// scheduler's default (for scoring).
    fn requests(&self, defaults: bool) -> Result<Resources, String> {
        let requests = self.resources.requests.as_ref();
        let limits = self.resources.limits.as_ref();
        let mut out = Resources::default();
        let mut names: Vec<&String> = requests.into_iter().chain(limits).flat_map(BTreeMap::keys).collect();
        names.sort();
        names.dedup();
        for name in &names {
            let (quantity, field) = match requests.and_then(|r| r.get(*name)) {
                Some(quantity) => (quantity, "requests"),
                None => match limits.and_then(|l| l.get(*name)) {
                    Some(quantity) => (quantity, "limits"),
                    None => continue,
                },
            };
            out.set(name, amount(name, quantity, &format!("{}.resources.{field}.{name}", self.path))?);
        }
        if defaults {
            if !names.iter().any(|n| *n == "cpu") {
                out.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if !names.iter().any(|n| *n == "memory") {
                out.memory = DEFAULT_MEMORY_REQUEST;
            }
        }
        Ok(out)
    }

    /// Whether it sets a request or limit for `name`.
    fn names(&self, name: &str) -> bool {
        let has = |list: &Option<BTreeMap<String, ApiQuantity>>| list.as_ref().is_some_and(|l| l.contains_key(name));
        has(&self.resources.requests) || has(&self.resources.limits)
    }
}

/// The parts of a pod spec that request resources.
#[derive(Debug, Clone, Default, PartialEq)]
struct PodResources {
    containers: Vec<ContainerResources>,
    init_containers: Vec<ContainerResources>,
    /// `spec.resources` (pod-level requests and limits).
    pod_level: ContainerResources,
    overhead: BTreeMap<String, ApiQuantity>,
}

impl PodResources {
    fn of(spec: &Value) -> Result<PodResources, InvalidPod> {
        let pod_level = decode_or_default(&spec["resources"])
            .map_err(|error| InvalidPod(format!("spec.resources cannot be read: {error}")))?;
        Ok(PodResources {
            containers: ContainerResources::list(spec, "containers")?,
            init_containers: ContainerResources::list(spec, "initContainers")?,
            pod_level: ContainerResources { path: "spec".into(), resources: pod_level, sidecar: false },
            overhead: decode_or_default(&spec["overhead"])
                .map_err(|error| InvalidPod(format!("spec.overhead cannot be read: {error}")))?,
        })
    }

    /// Kubernetes' `PodRequests`: the containers' sum; sidecars (init containers with
    /// `restartPolicy: Always`) added to it; each other init container with the sidecars
    /// started before it, of which the largest counts if it beats the sum; pod-level
    /// requests, when set, for CPU and memory; plus the pod's overhead.
    fn aggregate(&self, defaults: bool) -> Result<Resources, String> {
        let mut total = Resources::default();
        for container in &self.containers {
            total.add(&container.requests(defaults)?);
        }
        let mut sidecars = Resources::default();
        let mut init_max = Resources::default();
        for container in &self.init_containers {
            let requests = container.requests(defaults)?;
            let running_with = if container.sidecar {
                total.add(&requests);
                sidecars.add(&requests);
                sidecars.clone()
            } else {
                let mut with_sidecars = requests;
                with_sidecars.add(&sidecars);
                with_sidecars
            };
            init_max.max_with(&running_with);
        }
        total.max_with(&init_max);

        let pod = self.pod_level.requests(false)?;
        if self.pod_level.names("cpu") {
            total.milli_cpu = pod.milli_cpu;
        }
        if self.pod_level.names("memory") {
            total.memory = pod.memory;
        }
        total.add(&Resources::from_list(&self.overhead, "spec.overhead")?);
        Ok(total)
    }
}

impl Requests {
    fn of(resources: &PodResources) -> Result<Requests, String> {
        let non_zero = resources.aggregate(true)?;
        Ok(Requests {
            resources: resources.aggregate(false)?,
            non_zero_milli_cpu: non_zero.milli_cpu,
            non_zero_memory: non_zero.memory,
        })
    }
}

/// A pod that cannot be scheduled whatever the nodes: its spec or requests cannot be
/// read. The message says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidPod(pub String);

/// What the filters and scores need from a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PodInfo {
    pub requests: Requests,
    pub node_selector: BTreeMap<String, String>,
    /// `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_affinity: Option<NodeSelector>,
    pub tolerations: Vec<Toleration>,
}

/// `value` as `T`, a missing or null value being `T::default()`.
fn decode_or_default<'a, T: Deserialize<'a> + Default>(value: &'a Value) -> Result<T, String> {
    if value.is_null() { Ok(T::default()) } else { T::deserialize(value).map_err(|e| e.to_string()) }
}

impl PodInfo {
    /// Reads a pod (API form): only the fields scheduling looks at, so that nothing else
    /// in the spec can make it unreadable.
    pub fn of(pod: &Value) -> Result<PodInfo, InvalidPod> {
        let spec = &pod["spec"];
        if !spec.is_object() {
            return Err(InvalidPod("the pod has no spec".into()));
        }
        let field = |path: &str, error: String| InvalidPod(format!("{path} cannot be read: {error}"));
        let requests = Requests::of(&PodResources::of(spec)?)
            .map_err(|error| InvalidPod(format!("invalid resource request: {error}")))?;
        let affinity = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        let required_affinity = if affinity.is_null() {
            None
        } else {
            Some(NodeSelector::deserialize(affinity).map_err(|e| {
                field("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution", e.to_string())
            })?)
        };
        Ok(PodInfo {
            requests,
            node_selector: decode_or_default(&spec["nodeSelector"]).map_err(|e| field("spec.nodeSelector", e))?,
            required_affinity,
            tolerations: decode_or_default(&spec["tolerations"]).map_err(|e| field("spec.tolerations", e))?,
        })
    }
}

/// What a node offers pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allocatable {
    pub resources: Resources,
    /// How many pods it may run.
    pub pods: i64,
}

/// What the filters and scores need from a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// The taints that keep pods off (`NoSchedule`, `NoExecute`), including the
    /// `not-ready` or `unreachable` taint a node whose `Ready` condition is not `True`
    /// carries in Kubernetes (there the node lifecycle controller adds it).
    pub taints: Vec<Taint>,
    /// `status.allocatable`, or why it cannot be read.
    pub allocatable: Result<Allocatable, String>,
}

impl NodeInfo {
    /// Reads a node (API form): only the fields scheduling looks at, so that nothing else
    /// in its status (which its agent writes) can make it unreadable.
    pub fn of(node: &Value) -> NodeInfo {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let labels = decode_or_default(&node["metadata"]["labels"]);
        let taints = decode_or_default::<Vec<Taint>>(&node["spec"]["taints"]);
        let allocatable = decode_or_default::<BTreeMap<String, ApiQuantity>>(&node["status"]["allocatable"]);
        let (labels, taints, allocatable) = match (labels, taints, allocatable) {
            (Ok(labels), Ok(taints), Ok(allocatable)) => (labels, taints, allocatable),
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                let allocatable = Err(format!("the node cannot be read: {error}"));
                let labels = BTreeMap::new();
                return NodeInfo { name, labels, unschedulable: false, taints: Vec::new(), allocatable };
            }
        };

        let mut taints: Vec<Taint> =
            taints.into_iter().filter(|t| t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE).collect();
        let conditions = node["status"]["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
        let ready = conditions.iter().find(|c| c["type"] == "Ready").and_then(|c| c["status"].as_str());
        let readiness_taint = match ready {
            Some("True") => None,
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            // False, or no status posted yet.
            _ => Some(TAINT_NOT_READY),
        };
        if let Some(key) = readiness_taint
            && !taints.iter().any(|t| t.key == key)
        {
            taints.push(Taint { key: key.to_string(), effect: NO_SCHEDULE.to_string(), ..Taint::default() });
        }

        let allocatable = Resources::from_list(&allocatable, "status.allocatable").and_then(|resources| {
            let pods = match allocatable.get("pods") {
                Some(quantity) => amount("pods", quantity, "status.allocatable.pods")?,
                None => 0,
            };
            Ok(Allocatable { resources, pods })
        });
        let unschedulable = node["spec"]["unschedulable"].as_bool().unwrap_or(false);
        NodeInfo { name, labels, unschedulable, taints, allocatable }
    }
}

/// What the pods on a node (bound, or assumed bound) request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeUsage {
    pub requested: Resources,
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub pods: i64,
}

impl NodeUsage {
    pub fn add(&mut self, requests: &Requests) {
        self.requested.add(&requests.resources);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_add(requests.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_add(requests.non_zero_memory);
        self.pods += 1;
    }

    pub fn remove(&mut self, requests: &Requests) {
        self.requested.subtract(&requests.resources);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_sub(requests.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_sub(requests.non_zero_memory);
        self.pods -= 1;
    }

    pub fn is_empty(&self) -> bool {
        self.pods == 0 && self.requested.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    fn requests(spec: Value) -> Requests {
        PodInfo::of(&pod(spec)).expect("a valid pod").requests
    }

    fn container(resources: Value) -> Value {
        json!({"name": "c", "image": "i", "resources": resources})
    }

    #[test]
    fn requests_sum_the_containers() {
        let r = requests(json!({"containers": [
            container(json!({"requests": {"cpu": "100m", "memory": "64Mi"}})),
            container(json!({"requests": {"cpu": "1.5", "memory": "1Gi", "ephemeral-storage": "1G", "example.com/gpu": "2"}})),
        ]}));
        assert_eq!(r.resources.milli_cpu, 1600);
        assert_eq!(r.resources.memory, 64 * 1024 * 1024 + 1024 * 1024 * 1024);
        assert_eq!(r.resources.ephemeral_storage, 1_000_000_000);
        assert_eq!(r.resources.scalar.get("example.com/gpu"), Some(&2));
        assert_eq!((r.non_zero_milli_cpu, r.non_zero_memory), (1600, r.resources.memory));
    }

    #[test]
    fn a_missing_request_falls_back_to_the_limit() {
        let r = requests(json!({"containers": [
            container(json!({"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"memory": "512Mi"}})),
        ]}));
        assert_eq!(r.resources.milli_cpu, 2000);
        assert_eq!(r.resources.memory, 512 * 1024 * 1024);
    }

    #[test]
    fn scores_count_defaults_for_containers_without_requests() {
        let r = requests(json!({"containers": [container(json!({})), container(json!({"requests": {"cpu": "0"}}))]}));
        assert!(r.resources.is_zero());
        // The second container asks for 0 CPU explicitly: that stays 0.
        assert_eq!(r.non_zero_milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn init_containers_count_by_their_maximum_and_sidecars_add_up() {
        let r = requests(json!({
            "initContainers": [
                container(json!({"requests": {"cpu": "3"}})),
                {"name": "sidecar", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                container(json!({"requests": {"cpu": "2800m"}})),
            ],
            "containers": [container(json!({"requests": {"cpu": "1"}}))],
        }));
        // Containers + sidecar = 1.5; the first init container alone = 3; the last one
        // runs beside the sidecar = 3.3.
        assert_eq!(r.resources.milli_cpu, 3300);
    }

    #[test]
    fn pod_level_requests_and_overhead_count() {
        let r = requests(json!({
            "resources": {"requests": {"cpu": "4"}},
            "overhead": {"cpu": "250m", "memory": "10Mi"},
            "containers": [container(json!({"requests": {"cpu": "1", "memory": "1Mi"}}))],
        }));
        assert_eq!(r.resources.milli_cpu, 4250);
        assert_eq!(r.resources.memory, 11 * 1024 * 1024);
    }

    #[test]
    fn unreadable_requests_make_an_invalid_pod_not_a_panic() {
        let bad = PodInfo::of(&pod(json!({"containers": [container(json!({"requests": {"cpu": "lots"}}))]})));
        let InvalidPod(message) = bad.expect_err("an invalid pod");
        assert!(
            message.starts_with("invalid resource request: spec.containers[0].resources.requests.cpu"),
            "{message}"
        );
        let negative = PodInfo::of(&pod(json!({"containers": [container(json!({"limits": {"memory": "-1"}}))]})));
        assert!(negative.is_err());
        let no_spec = PodInfo::of(&json!({"metadata": {"name": "p"}}));
        assert_eq!(no_spec, Err(InvalidPod("the pod has no spec".into())));
        let bad_tolerations = PodInfo::of(&pod(json!({"containers": [], "tolerations": "all"})));
        assert!(bad_tolerations.expect_err("unreadable").0.starts_with("spec.tolerations cannot be read"));
    }

    #[test]
    fn nodes_read_allocatable_taints_and_readiness() {
        let node = NodeInfo::of(&json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [
                {"key": "gpu", "value": "true", "effect": "NoSchedule"},
                {"key": "soft", "effect": "PreferNoSchedule"},
            ]},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "False"}],
            },
        }));
        assert_eq!(node.name, "n1");
        assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
        let keys: Vec<&str> = node.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["gpu", TAINT_NOT_READY]);
        let allocatable = node.allocatable.expect("readable");
        assert_eq!(allocatable.resources.milli_cpu, 4000);
        assert_eq!(allocatable.resources.memory, 8 << 30);
        assert_eq!(allocatable.pods, 110);

        let unknown = NodeInfo::of(&json!({"metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        assert_eq!(unknown.taints[0].key, TAINT_UNREACHABLE);
        let ready = NodeInfo::of(&json!({"metadata": {"name": "n3"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        assert!(ready.taints.is_empty());
        assert_eq!(ready.allocatable, Ok(Allocatable::default()));
    }

    #[test]
    fn fields_scheduling_ignores_cannot_make_a_pod_or_node_unreadable() {
        let odd_pod =
            pod(json!({"containers": [{"resources": {"requests": {"cpu": 1}}, "ports": "odd"}], "volumes": 7}));
        assert_eq!(PodInfo::of(&odd_pod).expect("readable").requests.resources.milli_cpu, 1000);
        let odd_node = NodeInfo::of(&json!({
            "metadata": {"name": "n"},
            "status": {"allocatable": {"pods": 3}, "nodeInfo": {"kernelVersion": 5}, "conditions": [{"type": "Ready", "status": "True"}]},
        }));
        assert_eq!(odd_node.allocatable.map(|a| a.pods), Ok(3));
    }

    #[test]
    fn an_unreadable_allocatable_is_kept_as_a_reason() {
        let node = NodeInfo::of(&json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "x"}}}));
        assert!(node.allocatable.expect_err("unreadable").contains("status.allocatable.cpu"));
    }

    #[test]
    fn usage_adds_and_removes_exactly() {
        let r = requests(json!({"containers": [container(json!({"requests": {"cpu": "1", "example.com/gpu": "1"}}))]}));
        let mut usage = NodeUsage::default();
        usage.add(&r);
        usage.add(&r);
        assert_eq!((usage.pods, usage.requested.milli_cpu), (2, 2000));
        usage.remove(&r);
        usage.remove(&r);
        assert!(usage.is_empty());
        assert_eq!(usage, NodeUsage::default());
    }
}
