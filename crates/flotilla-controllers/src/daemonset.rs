//! The DaemonSet controller: one pod from the template on every eligible node, following
//! nodes as they join and leave; RollingUpdate replaces pods of an old template
//! `maxUnavailable` at a time (OnDelete leaves them); status as kubectl reads it.
//!
//! A node is eligible when it matches the pod's `nodeSelector` and required node affinity
//! and the pod tolerates its NoSchedule and NoExecute taints (DaemonSet pods get
//! Kubernetes' default tolerations for not-ready, unreachable and unschedulable nodes).
//! Each pod is pinned to its node by required node affinity on `metadata.name` (which
//! replaces the template's, as kube's `ReplaceDaemonSetPodNodeNameNodeAffinity` does), so
//! the scheduler binds it.

use crate::deployment::util::{pod_template_hash, scaled_value};
use crate::error::{Error, Result};
use crate::events::{EventSeverity, Recorder};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig, controller_mapper};
use flotilla_api::k8s_openapi::api::core::v1::NodeSelector;
use flotilla_client::{Cluster, DeleteParams, Informer, ObjectKey, Patch, resource};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const COMPONENT: &str = "daemonset-controller";
/// The label carrying the hash of the template a pod was made from.
const HASH_LABEL: &str = "controller-revision-hash";

#[derive(Debug)]
pub(crate) struct DaemonSetController {
    cluster: Arc<dyn Cluster>,
    daemon_sets: Informer,
    nodes: Informer,
    pods: Informer,
    recorder: Recorder,
}

/// The tolerations every DaemonSet pod gets, as kube's controller adds them.
fn default_tolerations() -> Vec<Value> {
    let mut tolerations: Vec<Value> = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .into_iter()
        .map(|key| json!({"key": key, "operator": "Exists", "effect": "NoExecute"}))
        .collect();
    for key in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoSchedule"}));
    }
    tolerations
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = t["key"].is_null() && t["operator"] == "Exists" || t["key"] == taint["key"];
        let value_ok =
            t["operator"] == "Exists" || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        let effect_ok = t["effect"].is_null() || t["effect"] == taint["effect"];
        key_ok && value_ok && effect_ok
    })
}

/// Whether the DaemonSet's pods belong on `node`.
fn eligible(template: &Value, node: &Value) -> bool {
    let labels = meta::labels(node);
    let selected = template["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let mut tolerations: Vec<Value> = template["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.extend(default_tolerations());
    let tolerated = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
        .all(|t| tolerates(&tolerations, t));
    // Required node affinity, as the scheduler will judge it (a template whose affinity
    // does not parse places no pod, as kube's does).
    let required = &template["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let affine = required.is_null()
        || serde_json::from_value::<NodeSelector>(required.clone()).is_ok_and(|selector| {
            flotilla_api::node_selector_matches(&selector, meta::name(node), |key| labels.get(key)?.as_str())
        });
    selected && affine && tolerated && !meta::is_terminating(node)
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        ["matchFields"][0]["values"][0]
        .as_str()
        .or_else(|| pod["spec"]["nodeName"].as_str())
}

fn pod_for(ds: &Value, node: &str, hash: &str) -> Value {
    let template = &ds["spec"]["template"];
    let mut labels = template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), json!(hash));
    let mut metadata = Map::new();
    metadata.insert("generateName".into(), json!(format!("{}-", meta::name(ds))));
    metadata.insert("namespace".into(), json!(meta::namespace(ds)));
    metadata.insert("labels".into(), Value::Object(labels));
    metadata.insert("ownerReferences".into(), json!([meta::controller_reference(ds, "apps/v1", "DaemonSet")]));
    let mut spec = template["spec"].clone();
    let mut tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.extend(default_tolerations());
    spec["tolerations"] = json!(tolerations);
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms":
        [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

impl DaemonSetController {
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        daemon_sets: Informer,
        nodes: Informer,
        pods: Informer,
        config: RunnerConfig,
    ) {
        let controller = Arc::new(DaemonSetController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            daemon_sets: daemon_sets.clone(),
            nodes: nodes.clone(),
            pods: pods.clone(),
        });
        let all: AllKeys<ObjectKey> = {
            let daemon_sets = daemon_sets.clone();
            Arc::new(move || daemon_sets.list().iter().map(|ds| ObjectKey::of(ds)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|ds, _| vec![ObjectKey::of(ds)]);
        let pods_to_owner = controller_mapper("DaemonSet");
        // Any node change may change where every DaemonSet belongs.
        let every: Mapper<ObjectKey> = {
            let daemon_sets = daemon_sets.clone();
            Arc::new(move |_, _| daemon_sets.list().iter().map(|ds| ObjectKey::of(ds)).collect())
        };
        Controller::new("daemonset", all, config)
            .reports_failures(&daemon_sets, controller.cluster.clone())
            .watches(daemon_sets, own)
            .watches(pods, pods_to_owner)
            .watches(nodes, every)
            .run(controller)
            .await;
    }

    async fn delete_pod(&self, pod: &Value) -> Result<()> {
        let params = DeleteParams { precondition_uid: Some(meta::uid(pod).to_string()), ..DeleteParams::default() };
        match self.cluster.delete(resource("v1", "Pod"), Some(meta::namespace(pod)), meta::name(pod), &params).await {
            Ok(_) => {
                let message = format!("Deleted pod: {}", meta::name(pod));
                self.recorder.event(pod, EventSeverity::Normal, "SuccessfulDelete", message);
                Ok(())
            }
            Err(e) if matches!(e.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Conflict) => Ok(()),
            Err(e) => Err(Error::api(format!("deleting pod {}", meta::name(pod)), e)),
        }
    }

    /// Waits briefly until the cache shows the pods just created (kube's expectations).
    async fn await_pods(&self, ds: &Value, at_least: usize) {
        for _ in 0..200 {
            if self.pods_of(ds).len() >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pods_of(&self, ds: &Value) -> Vec<Arc<Value>> {
        let (namespace, uid) = (meta::namespace(ds), meta::uid(ds));
        self.pods.filter(|p| meta::namespace(p) == namespace && meta::controller_uid(p, "DaemonSet") == Some(uid))
    }
}

impl Reconciler<ObjectKey> for DaemonSetController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(ds) = self.daemon_sets.get(&key.namespace, &key.name) else { return Ok(Action::AwaitChange) };
        if meta::is_terminating(&ds) {
            return Ok(Action::AwaitChange);
        }
        let template = &ds["spec"]["template"];
        let hash = pod_template_hash(template, None);
        let nodes: Vec<Arc<Value>> = self.nodes.list();
        let wanted: Vec<String> =
            nodes.iter().filter(|n| eligible(template, n)).map(|n| meta::name(n).to_string()).collect();
        let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for pod in self.pods_of(&ds) {
            if meta::is_terminating(&pod) {
                continue;
            }
            if let Some(node) = node_of(&pod) {
                by_node.entry(node.to_string()).or_default().push(pod);
            }
        }

        // Pods on nodes that no longer want one, failed pods, and duplicates go.
        let mut doomed = Vec::new();
        for (node, pods) in &by_node {
            if !wanted.contains(node) {
                doomed.extend(pods.iter().cloned());
                continue;
            }
            let (failed, alive): (Vec<_>, Vec<_>) =
                pods.iter().cloned().partition(|p| p["status"]["phase"] == "Failed");
            doomed.extend(failed);
            doomed.extend(alive.into_iter().skip(1));
        }
        // RollingUpdate: old-template pods, at most maxUnavailable missing at once.
        let rolling = ds["spec"]["updateStrategy"]["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate";
        if rolling {
            let desired = i64::try_from(wanted.len()).unwrap_or(i64::MAX);
            let max_unavailable =
                scaled_value(&ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], desired, false).max(1);
            let unavailable = wanted
                .iter()
                .filter(|node| !by_node.get(*node).is_some_and(|pods| pods.iter().any(|p| meta::is_pod_ready(p))))
                .count();
            let budget = usize::try_from(max_unavailable).unwrap_or(usize::MAX).saturating_sub(unavailable);
            let stale = wanted
                .iter()
                .filter_map(|node| by_node.get(node)?.first())
                .filter(|p| meta::labels(p).get(HASH_LABEL).and_then(Value::as_str) != Some(hash.as_str()))
                .filter(|p| !doomed.iter().any(|d| meta::uid(d) == meta::uid(p)))
                .take(budget)
                .cloned()
                .collect::<Vec<_>>();
            doomed.extend(stale);
        }
        for pod in &doomed {
            self.delete_pod(pod).await?;
        }
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|node| {
                by_node
                    .get(*node)
                    .is_none_or(|pods| pods.iter().all(|p| doomed.iter().any(|d| meta::uid(d) == meta::uid(p))))
            })
            .collect();
        let known = self.pods_of(&ds).len();
        for node in &missing {
            let pod = pod_for(&ds, node, &hash);
            match self.cluster.create(resource("v1", "Pod"), Some(meta::namespace(&ds)), &pod).await {
                Ok(created) => self.recorder.event(
                    &ds,
                    EventSeverity::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", meta::name(&created)),
                ),
                Err(e) => return Err(Error::api("creating a pod", e)),
            }
        }
        if !missing.is_empty() {
            self.await_pods(&ds, known + missing.len()).await;
        }

        // Status, from what is on the nodes now.
        let current: Vec<Arc<Value>> = self.pods_of(&ds).into_iter().filter(|p| !meta::is_terminating(p)).collect();
        let on = |node: &String| -> Vec<&Arc<Value>> {
            current.iter().filter(|p| node_of(p) == Some(node.as_str())).collect()
        };
        let scheduled = wanted.iter().filter(|n| !on(n).is_empty()).count();
        let ready = wanted.iter().filter(|n| on(n).iter().any(|p| meta::is_pod_ready(p))).count();
        let updated = wanted
            .iter()
            .filter(|n| {
                on(n).iter().any(|p| meta::labels(p).get(HASH_LABEL).and_then(Value::as_str) == Some(hash.as_str()))
            })
            .count();
        let misscheduled =
            current.iter().filter(|p| node_of(p).is_some_and(|n| !wanted.iter().any(|w| w == n))).count();
        let status = json!({
            "desiredNumberScheduled": wanted.len(),
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": wanted.len() - ready,
            "updatedNumberScheduled": updated,
            "observedGeneration": meta::generation(&ds),
        });
        let mut merged = ds["status"].clone();
        if !merged.is_object() {
            merged = json!({});
        }
        for (key, value) in status.as_object().into_iter().flatten() {
            merged[key] = value.clone();
        }
        if merged != ds["status"] {
            let patch = Patch::Merge(json!({"status": merged}));
            self.cluster
                .patch(
                    resource("apps/v1", "DaemonSet"),
                    Some(meta::namespace(&ds)),
                    meta::name(&ds),
                    &patch,
                    Some("status"),
                )
                .await
                .map_err(|e| Error::api("updating the daemon set status", e))?;
        }
        Ok(Action::AwaitChange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let node = |labels: Value, taints: Value| json!({"metadata": {"name": "n", "labels": labels}, "spec": {"taints": taints}});
        let plain = json!({"spec": {}});
        let picky = json!({"spec": {"nodeSelector": {"disk": "ssd"}}});
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}});
        let gpu = json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]);
        assert!(eligible(&plain, &node(json!({}), json!([]))));
        assert!(!eligible(&picky, &node(json!({}), json!([]))));
        assert!(eligible(&picky, &node(json!({"disk": "ssd"}), json!([]))));
        assert!(!eligible(&plain, &node(json!({}), gpu.clone())));
        assert!(eligible(&tolerant, &node(json!({}), gpu)));
        let unreachable = json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]);
        assert!(eligible(&plain, &node(json!({}), unreachable)), "default tolerations");
        let affine = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}}});
        assert!(eligible(&affine, &node(json!({"zone": "b"}), json!([]))));
        assert!(!eligible(&affine, &node(json!({"zone": "c"}), json!([]))), "required node affinity");
        assert!(!eligible(&affine, &node(json!({}), json!([]))));
    }

    #[test]
    fn pods_are_pinned_to_their_node() {
        let ds = json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": []}}}});
        let pod = pod_for(&ds, "node-1", "abc");
        assert_eq!(node_of(&pod), Some("node-1"));
        assert_eq!(pod["metadata"]["labels"][HASH_LABEL], "abc");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        assert!(pod["spec"]["tolerations"].as_array().is_some_and(|t| t.len() == 6));
    }
}
