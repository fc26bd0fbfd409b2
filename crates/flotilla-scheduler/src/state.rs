//! The scheduler's view of the cluster, without I/O: nodes and what their pods request,
//! the queue of pods to place, the pods no node fits, and the assumptions made.
//!
//! Everything here is derived from the informers' objects plus the pods the scheduler
//! has bound (or is binding) but not yet seen bound through the watch — kube-scheduler's
//! assume cache, so that a burst of pods does not overcommit a node. An assumption ends
//! when the watch shows the pod bound (or gone), or when its binding fails. Nothing else
//! is kept: a restarted scheduler rebuilds the same state from the informers.
//!
//! Usage is kept per node and updated as each pod changes, so placing a pod costs one
//! pass over the nodes, not over the pods.

use crate::Scoring;
use crate::algorithm;
use crate::model::{InvalidPod, NodeInfo, NodeUsage, PodInfo, Requests};
use crate::report;
use flotilla_client::ObjectKey;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The scheduler a pod without `spec.schedulerName` belongs to.
pub(crate) const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// What to do with a pod taken from the queue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Bind it to `node`: it is assumed there already.
    Bind { node: String, uid: String },
    /// No node fits it. `report` is the pod to record `message` on, when the pod does not
    /// say so already and no report of it is in flight.
    Unschedulable { message: String, report: Option<Arc<Value>> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No node yet; `schedulable` if it is this scheduler's, not gated and not being
    /// deleted.
    Pending {
        schedulable: bool,
    },
    Bound(String),
    /// Succeeded or Failed: it uses nothing any more.
    Finished,
}

#[derive(Debug)]
struct PodEntry {
    object: Arc<Value>,
    resource_version: Option<u64>,
    uid: String,
    generation: i64,
    phase: Phase,
    /// The spec as the filters read it; parsed when first needed, kept while the
    /// generation (the spec) does not change.
    info: Option<Result<Arc<PodInfo>, InvalidPod>>,
    /// The node it was bound to by this scheduler, until the watch shows it bound.
    assumed: Option<String>,
    /// The node whose usage counts it, and what it counted.
    counted: Option<(String, Requests)>,
    /// The unschedulable message last reported (patch and Event in flight or done).
    reported: Option<String>,
    /// Bindings that failed in a row, for the back-off.
    failures: u32,
}

impl PodEntry {
    fn info(&mut self) -> &Result<Arc<PodInfo>, InvalidPod> {
        let object = &self.object;
        self.info.get_or_insert_with(|| PodInfo::of(object).map(Arc::new))
    }

    /// The node that should count the pod: where it is bound, else where it is assumed.
    fn placement(&self) -> Option<&str> {
        match &self.phase {
            Phase::Bound(node) => Some(node),
            Phase::Pending { .. } => self.assumed.as_deref(),
            Phase::Finished => None,
        }
    }
}

#[derive(Debug)]
struct NodeEntry {
    resource_version: Option<u64>,
    info: NodeInfo,
    usage: NodeUsage,
}

/// The scheduler's state (see the module documentation).
#[derive(Debug)]
pub(crate) struct State {
    scheduler_name: String,
    scoring: Scoring,
    nodes: BTreeMap<String, NodeEntry>,
    /// Usage on nodes not (yet, or no longer) in the node cache.
    orphan_usage: HashMap<String, NodeUsage>,
    pods: HashMap<ObjectKey, PodEntry>,
    queue: VecDeque<ObjectKey>,
    /// The keys in `queue` that count; a key removed from here is skipped when popped.
    queued: HashSet<ObjectKey>,
    /// Pods no node fit at their last attempt.
    unschedulable: HashSet<ObjectKey>,
    /// Something changed that may make an unschedulable pod fit.
    retry_wanted: bool,
}

fn resource_version(object: &Value) -> Option<u64> {
    object["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse().ok())
}

/// Whether an object at `incoming` is older than what is kept at `kept` (unknown
/// versions are never older).
fn is_stale(kept: Option<u64>, incoming: Option<u64>) -> bool {
    matches!((kept, incoming), (Some(kept), Some(incoming)) if incoming < kept)
}

fn usage_mut<'a>(
    nodes: &'a mut BTreeMap<String, NodeEntry>,
    orphans: &'a mut HashMap<String, NodeUsage>,
    node: &str,
) -> &'a mut NodeUsage {
    match nodes.get_mut(node) {
        Some(entry) => &mut entry.usage,
        None => orphans.entry(node.to_string()).or_default(),
    }
}

impl State {
    pub fn new(scheduler_name: &str, scoring: Scoring) -> Self {
        State {
            scheduler_name: scheduler_name.to_string(),
            scoring,
            nodes: BTreeMap::new(),
            orphan_usage: HashMap::new(),
            pods: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            unschedulable: HashSet::new(),
            retry_wanted: false,
        }
    }

    fn phase_of(&self, pod: &Value) -> Phase {
        if matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            return Phase::Finished;
        }
        let spec = &pod["spec"];
        if let Some(node) = spec["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Phase::Bound(node.to_string());
        }
        let scheduler = spec["schedulerName"].as_str().filter(|n| !n.is_empty()).unwrap_or(DEFAULT_SCHEDULER);
        let gated = spec["schedulingGates"].as_array().is_some_and(|gates| !gates.is_empty());
        let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
        Phase::Pending { schedulable: scheduler == self.scheduler_name && !gated && !deleting }
    }

    fn enqueue(&mut self, key: &ObjectKey) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key.clone());
        }
    }

    /// Whether the pod is one to place now: pending, ours, not assumed anywhere.
    fn is_schedulable(&self, key: &ObjectKey) -> bool {
        self.pods.get(key).is_some_and(|e| e.phase == Phase::Pending { schedulable: true } && e.assumed.is_none())
    }

    /// Makes the pod's node usage match its placement.
    fn recount(&mut self, key: &ObjectKey) {
        let Some(entry) = self.pods.get_mut(key) else { return };
        let wanted = entry.placement().map(str::to_string);
        if entry.counted.as_ref().map(|(node, _)| node) == wanted.as_ref() {
            return;
        }
        let new = wanted.map(|node| {
            let requests = match entry.info() {
                Ok(info) => info.requests.clone(),
                // A bound pod whose spec cannot be read still takes a pod slot.
                Err(_) => Requests::default(),
            };
            (node, requests)
        });
        let old = std::mem::replace(&mut entry.counted, new.clone());
        if let Some((node, requests)) = old {
            usage_mut(&mut self.nodes, &mut self.orphan_usage, &node).remove(&requests);
            if self.orphan_usage.get(&node).is_some_and(NodeUsage::is_empty) {
                self.orphan_usage.remove(&node);
            }
            self.retry_wanted = true;
        }
        if let Some((node, requests)) = new {
            usage_mut(&mut self.nodes, &mut self.orphan_usage, &node).add(&requests);
        }
    }

    /// A pod as the informer has it now (added or modified).
    pub fn apply_pod(&mut self, object: Arc<Value>) {
        let key = ObjectKey::of(&object);
        let rv = resource_version(&object);
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
        let phase = self.phase_of(&object);
        if self.pods.get(&key).is_some_and(|e| e.uid != uid) {
            // Another pod of that name: the one we knew is gone.
            self.forget_pod(&key);
        }
        let mut spec_changed = false;
        match self.pods.get_mut(&key) {
            Some(entry) => {
                if is_stale(entry.resource_version, rv) {
                    return;
                }
                if entry.generation != generation {
                    entry.info = None;
                    spec_changed = true;
                }
                entry.object = object;
                entry.resource_version = rv;
                entry.generation = generation;
                entry.phase = phase;
            }
            None => {
                let entry = PodEntry {
                    object,
                    resource_version: rv,
                    uid,
                    generation,
                    phase,
                    info: None,
                    assumed: None,
                    counted: None,
                    reported: None,
                    failures: 0,
                };
                self.pods.insert(key.clone(), entry);
            }
        }
        let Some(entry) = self.pods.get_mut(&key) else { return };
        match entry.phase {
            Phase::Pending { schedulable: true } => {}
            Phase::Pending { schedulable: false } | Phase::Bound(_) | Phase::Finished => {
                entry.assumed = None;
                entry.reported = None;
                entry.failures = 0;
                self.unschedulable.remove(&key);
            }
        }
        self.recount(&key);
        if self.is_schedulable(&key) {
            // A pod no node fit waits for a retry, unless its spec changed.
            if spec_changed || !self.unschedulable.contains(&key) {
                self.unschedulable.remove(&key);
                self.enqueue(&key);
            }
        }
    }

    /// A pod deleted (its last state).
    pub fn delete_pod(&mut self, object: &Value) {
        let key = ObjectKey::of(object);
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
        if self.pods.get(&key).is_some_and(|e| !uid.is_empty() && !e.uid.is_empty() && e.uid != uid) {
            // The deletion of an older pod of that name.
            return;
        }
        self.forget_pod(&key);
    }

    fn forget_pod(&mut self, key: &ObjectKey) {
        if let Some(entry) = self.pods.get_mut(key) {
            entry.phase = Phase::Finished;
            entry.assumed = None;
        }
        self.recount(key);
        self.pods.remove(key);
        self.queued.remove(key);
        self.unschedulable.remove(key);
    }

    /// Every pod, after the informer listed again (or this scheduler fell behind its
    /// feed): pods missing from `objects` are gone.
    pub fn resync_pods(&mut self, objects: Vec<Arc<Value>>) {
        let present: HashSet<ObjectKey> = objects.iter().map(|o| ObjectKey::of(o)).collect();
        let gone: Vec<ObjectKey> = self.pods.keys().filter(|k| !present.contains(*k)).cloned().collect();
        for key in gone {
            self.forget_pod(&key);
        }
        for object in objects {
            self.apply_pod(object);
        }
    }

    /// A node as the informer has it now.
    pub fn apply_node(&mut self, object: &Value) {
        let rv = resource_version(object);
        let info = NodeInfo::of(object);
        if info.name.is_empty() {
            return;
        }
        match self.nodes.get_mut(&info.name) {
            Some(entry) => {
                if is_stale(entry.resource_version, rv) {
                    return;
                }
                entry.resource_version = rv;
                if entry.info != info {
                    entry.info = info;
                    self.retry_wanted = true;
                }
            }
            None => {
                let usage = self.orphan_usage.remove(&info.name).unwrap_or_default();
                self.nodes.insert(info.name.clone(), NodeEntry { resource_version: rv, info, usage });
                self.retry_wanted = true;
            }
        }
    }

    /// A node deleted. Its pods still count, should it come back.
    pub fn delete_node(&mut self, object: &Value) {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(entry) = self.nodes.remove(name)
            && !entry.usage.is_empty()
        {
            self.orphan_usage.insert(name.to_string(), entry.usage);
        }
    }

    /// Every node, after a fresh list.
    pub fn resync_nodes(&mut self, objects: Vec<Arc<Value>>) {
        let present: HashSet<&str> = objects.iter().filter_map(|o| o["metadata"]["name"].as_str()).collect();
        let gone: Vec<String> = self.nodes.keys().filter(|n| !present.contains(n.as_str())).cloned().collect();
        for name in gone {
            self.delete_node(&serde_json::json!({"metadata": {"name": name}}));
        }
        for object in &objects {
            self.apply_node(object);
        }
    }

    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Pods waiting in the queue.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Pods no node fits, waiting for a change.
    pub fn unschedulable_len(&self) -> usize {
        self.unschedulable.len()
    }

    /// The next pod to place, if any.
    pub fn next_pod(&mut self) -> Option<ObjectKey> {
        while let Some(key) = self.queue.pop_front() {
            if self.queued.remove(&key) && self.is_schedulable(&key) {
                return Some(key);
            }
        }
        None
    }

    /// Decides where `key` goes (it must be one [`State::next_pod`] gave; `None` if it is
    /// no longer to place). A pod placed is assumed on its node at once.
    pub fn schedule(&mut self, key: &ObjectKey) -> Option<Decision> {
        if !self.is_schedulable(key) {
            return None;
        }
        let entry = self.pods.get_mut(key)?;
        let placed = match entry.info() {
            Ok(info) => {
                let info = info.clone();
                let nodes = self.nodes.values().map(|n| (&n.info, &n.usage));
                algorithm::schedule(&info, nodes, self.scoring).map(str::to_string).map_err(|u| u.message)
            }
            Err(InvalidPod(message)) => Err(message.clone()),
        };
        let entry = self.pods.get_mut(key)?;
        match placed {
            Ok(node) => {
                entry.assumed = Some(node.clone());
                let uid = entry.uid.clone();
                self.unschedulable.remove(key);
                self.recount(key);
                Some(Decision::Bind { node, uid })
            }
            Err(message) => {
                let report = if report::says_unschedulable(&entry.object, &message)
                    || entry.reported.as_deref() == Some(message.as_str())
                {
                    None
                } else {
                    entry.reported = Some(message.clone());
                    Some(entry.object.clone())
                };
                if self.unschedulable.is_empty() {
                    // This attempt saw every change so far.
                    self.retry_wanted = false;
                }
                self.unschedulable.insert(key.clone());
                Some(Decision::Unschedulable { message, report })
            }
        }
    }

    /// The binding of `key` was accepted (or the pod was bound already): the assumption
    /// holds until the watch shows the pod bound.
    pub fn binding_done(&mut self, key: &ObjectKey) {
        if let Some(entry) = self.pods.get_mut(key) {
            entry.failures = 0;
        }
    }

    /// The binding of `key` to `node` failed: the assumption ends. Answers how many
    /// bindings of the pod failed in a row.
    pub fn binding_failed(&mut self, key: &ObjectKey, node: &str) -> u32 {
        let Some(entry) = self.pods.get_mut(key) else { return 0 };
        entry.failures = entry.failures.saturating_add(1);
        let failures = entry.failures;
        if entry.assumed.as_deref() == Some(node) {
            entry.assumed = None;
            self.recount(key);
        }
        failures
    }

    /// Recording that `key` is unschedulable failed: the next attempt reports again.
    pub fn report_failed(&mut self, key: &ObjectKey) {
        if let Some(entry) = self.pods.get_mut(key) {
            entry.reported = None;
        }
    }

    /// Puts `key` back in the queue now (after a back-off), if it is still to place.
    pub fn requeue(&mut self, key: &ObjectKey) {
        if self.is_schedulable(key) {
            self.unschedulable.remove(key);
            self.enqueue(key);
        }
    }

    pub fn has_unschedulable(&self) -> bool {
        !self.unschedulable.is_empty()
    }

    /// Whether a node or pod changed in a way that may let an unschedulable pod fit.
    pub fn retry_wanted(&self) -> bool {
        self.retry_wanted && !self.unschedulable.is_empty()
    }

    /// Queues every unschedulable pod again.
    pub fn retry_unschedulable(&mut self) {
        self.retry_wanted = false;
        let keys: Vec<ObjectKey> = self.unschedulable.drain().collect();
        for key in &keys {
            self.enqueue(key);
        }
    }

    #[cfg(test)]
    fn usage(&self, node: &str) -> NodeUsage {
        match self.nodes.get(node) {
            Some(entry) => entry.usage.clone(),
            None => self.orphan_usage.get(node).cloned().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, pods: u32) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "resourceVersion": "1"},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": pods.to_string()},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
    }

    fn pod(name: &str, rv: u64, cpu: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "resourceVersion": rv.to_string(), "generation": 1},
            "spec": {"schedulerName": "default-scheduler",
                     "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Pending"},
        })
    }

    fn bound(mut pod: Value, node: &str, rv: u64) -> Value {
        pod["spec"]["nodeName"] = json!(node);
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        pod
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    fn state_with(nodes: &[Arc<Value>]) -> State {
        let mut state = State::new(DEFAULT_SCHEDULER, Scoring::LeastAllocated);
        state.resync_nodes(nodes.to_vec());
        state
    }

    /// Schedules everything queued; answers (pod, decision) in order.
    fn drain(state: &mut State) -> Vec<(String, Decision)> {
        let mut out = Vec::new();
        while let Some(key) = state.next_pod() {
            if let Some(decision) = state.schedule(&key) {
                out.push((key.name, decision));
            }
        }
        out
    }

    fn bind_target(decision: &Decision) -> Option<&str> {
        match decision {
            Decision::Bind { node, .. } => Some(node),
            Decision::Unschedulable { .. } => None,
        }
    }

    #[test]
    fn pending_pods_of_this_scheduler_are_queued() {
        let mut state = state_with(&[node("n1", "4", 10)]);
        state.apply_pod(Arc::new(pod("a", 2, "1")));
        let mut other = pod("b", 3, "1");
        other["spec"]["schedulerName"] = json!("someone-else");
        state.apply_pod(Arc::new(other));
        let mut gated = pod("c", 4, "1");
        gated["spec"]["schedulingGates"] = json!([{"name": "wait"}]);
        state.apply_pod(Arc::new(gated));
        let mut deleting = pod("d", 5, "1");
        deleting["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
        state.apply_pod(Arc::new(deleting));
        state.apply_pod(Arc::new(bound(pod("e", 6, "1"), "n1", 6)));
        let decisions = drain(&mut state);
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].0, "a");
        assert_eq!(bind_target(&decisions[0].1), Some("n1"));
    }

    #[test]
    fn assumed_pods_keep_a_burst_from_overcommitting_a_node() {
        let mut state = state_with(&[node("n1", "2", 10), node("n2", "1", 10)]);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            state.apply_pod(Arc::new(pod(name, 10 + i as u64, "1")));
        }
        let decisions = drain(&mut state);
        let targets: Vec<Option<&str>> = decisions.iter().map(|(_, d)| bind_target(d)).collect();
        assert_eq!(targets, [Some("n1"), Some("n2"), Some("n1"), None]);
        assert_eq!(state.usage("n1").requested.milli_cpu, 2000);
        assert_eq!(state.usage("n2").requested.milli_cpu, 1000);
        let Decision::Unschedulable { message, report } = &decisions[3].1 else { panic!("d fits nowhere") };
        assert_eq!(message, "0/2 nodes are available: 2 Insufficient cpu.");
        assert!(report.is_some());
    }

    #[test]
    fn the_watch_confirms_an_assumption_without_counting_twice() {
        let mut state = state_with(&[node("n1", "4", 10)]);
        state.apply_pod(Arc::new(pod("a", 2, "1")));
        assert_eq!(bind_target(&drain(&mut state)[0].1), Some("n1"));
        // The informer still shows it pending (another status write): still assumed.
        state.apply_pod(Arc::new(pod("a", 3, "1")));
        assert!(drain(&mut state).is_empty());
        state.binding_done(&key("a"));
        state.apply_pod(Arc::new(bound(pod("a", 2, "1"), "n1", 4)));
        let usage = state.usage("n1");
        assert_eq!((usage.pods, usage.requested.milli_cpu), (1, 1000));
    }

    #[test]
    fn a_pod_bound_elsewhere_moves_its_usage() {
        let mut state = state_with(&[node("n1", "4", 10), node("n2", "4", 10)]);
        state.apply_pod(Arc::new(pod("a", 2, "1")));
        let target = bind_target(&drain(&mut state)[0].1).map(str::to_string).expect("placed");
        let other = if target == "n1" { "n2" } else { "n1" };
        state.apply_pod(Arc::new(bound(pod("a", 2, "1"), other, 3)));
        assert_eq!(state.usage(&target).pods, 0);
        assert_eq!(state.usage(other).pods, 1);
    }

    #[test]
    fn a_failed_binding_frees_the_node_and_counts_failures() {
        let mut state = state_with(&[node("n1", "1", 10)]);
        state.apply_pod(Arc::new(pod("a", 2, "1")));
        state.apply_pod(Arc::new(pod("b", 3, "1")));
        let decisions = drain(&mut state);
        assert_eq!(bind_target(&decisions[0].1), Some("n1"));
        assert_eq!(bind_target(&decisions[1].1), None);
        assert_eq!(state.binding_failed(&key("a"), "n1"), 1);
        assert_eq!(state.usage("n1").pods, 0);
        assert!(state.retry_wanted(), "capacity was freed");
        state.requeue(&key("a"));
        assert_eq!(bind_target(&drain(&mut state)[0].1), Some("n1"));
        assert_eq!(state.binding_failed(&key("a"), "n1"), 2);
        state.binding_done(&key("a"));
    }

    #[test]
    fn unschedulable_pods_wait_for_a_retry() {
        let mut state = state_with(&[]);
        state.apply_pod(Arc::new(pod("a", 2, "1")));
        let decisions = drain(&mut state);
        let Decision::Unschedulable { message, .. } = &decisions[0].1 else { panic!("no nodes") };
        assert_eq!(message, "no nodes available to schedule pods");
        // Its own status write does not queue it again.
        state.apply_pod(Arc::new(pod("a", 3, "1")));
        assert!(!state.has_queued());
        assert!(!state.retry_wanted());
        state.apply_node(&node("n1", "4", 10));
        assert!(state.retry_wanted());
        state.retry_unschedulable();
        assert!(!state.retry_wanted());
        assert_eq!(bind_target(&drain(&mut state)[0].1), Some("n1"));
        assert!(!state.has_unschedulable());
    }

    #[test]
    fn a_spec_change_queues_an_unschedulable_pod_at_once() {
        let mut state = state_with(&[node("n1", "4", 10)]);
        let mut picky = pod("a", 2, "1");
        picky["spec"]["nodeSelector"] = json!({"zone": "b"});
        state.apply_pod(Arc::new(picky.clone()));
        assert_eq!(bind_target(&drain(&mut state)[0].1), None);
        picky["spec"]["nodeSelector"] = json!({});
        picky["metadata"]["generation"] = json!(2);
        picky["metadata"]["resourceVersion"] = json!("3");
        state.apply_pod(Arc::new(picky));
        assert_eq!(bind_target(&drain(&mut state)[0].1), Some("n1"));
    }

    #[test]
    fn node_heartbeats_do_not_trigger_retries() {
        let mut state = state_with(&[node("n1", "1", 10)]);
        state.apply_pod(Arc::new(pod("a", 2, "2")));
        drain(&mut state);
        let mut beat = (*node("n1", "1", 10)).clone();
        beat["metadata"]["resourceVersion"] = json!("5");
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2030-01-01T00:00:00Z");
        state.apply_node(&beat);
        assert!(!state.retry_wanted());
        let mut bigger = beat.clone();
        bigger["metadata"]["resourceVersion"] = json!("6");
        bigger["status"]["allocatable"]["cpu"] = json!("2");
        state.apply_node(&bigger);
        assert!(state.retry_wanted());
    }

    #[test]
    fn finished_and_deleted_pods_free_their_node() {
        let mut state = state_with(&[node("n1", "2", 10)]);
        state.apply_pod(Arc::new(bound(pod("a", 2, "1"), "n1", 2)));
        state.apply_pod(Arc::new(bound(pod("b", 3, "1"), "n1", 3)));
        assert_eq!(state.usage("n1").pods, 2);
        let mut done = bound(pod("a", 2, "1"), "n1", 4);
        done["status"]["phase"] = json!("Succeeded");
        state.apply_pod(Arc::new(done));
        assert_eq!(state.usage("n1").pods, 1);
        state.delete_pod(&bound(pod("b", 3, "1"), "n1", 5));
        assert_eq!(state.usage("n1"), NodeUsage::default());
    }

    #[test]
    fn stale_versions_are_ignored() {
        let mut state = state_with(&[node("n1", "2", 10)]);
        state.apply_pod(Arc::new(bound(pod("a", 2, "1"), "n1", 5)));
        state.apply_pod(Arc::new(pod("a", 3, "1")));
        assert_eq!(state.usage("n1").pods, 1);
        assert!(!state.has_queued());
    }

    #[test]
    fn a_resync_rebuilds_the_same_state() {
        let mut state = state_with(&[node("n1", "4", 10)]);
        state.apply_pod(Arc::new(bound(pod("a", 2, "1"), "n1", 2)));
        state.apply_pod(Arc::new(bound(pod("b", 3, "1"), "n1", 3)));
        state.apply_pod(Arc::new(pod("c", 4, "1")));
        drain(&mut state);
        // After the relist: b is gone, c is still pending (binding in flight), d is new.
        state.resync_pods(vec![
            Arc::new(bound(pod("a", 2, "1"), "n1", 2)),
            Arc::new(pod("c", 4, "1")),
            Arc::new(pod("d", 6, "1")),
        ]);
        let usage = state.usage("n1");
        assert_eq!((usage.pods, usage.requested.milli_cpu), (2, 2000), "a bound, c assumed");
        let decisions = drain(&mut state);
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].0, "d");
        // A fresh scheduler rebuilt from the same objects (c now bound) agrees.
        let mut fresh = state_with(&[node("n1", "4", 10)]);
        fresh.resync_pods(vec![
            Arc::new(bound(pod("a", 2, "1"), "n1", 2)),
            Arc::new(bound(pod("c", 4, "1"), "n1", 7)),
            Arc::new(bound(pod("d", 6, "1"), "n1", 8)),
        ]);
        state.apply_pod(Arc::new(bound(pod("c", 4, "1"), "n1", 7)));
        state.apply_pod(Arc::new(bound(pod("d", 6, "1"), "n1", 8)));
        assert_eq!(fresh.usage("n1"), state.usage("n1"));
    }

    #[test]
    fn pods_on_unknown_nodes_count_when_the_node_appears() {
        let mut state = state_with(&[]);
        state.apply_pod(Arc::new(bound(pod("a", 2, "3"), "later", 2)));
        state.apply_node(&node("later", "4", 10));
        assert_eq!(state.usage("later").requested.milli_cpu, 3000);
        state.apply_pod(Arc::new(pod("b", 3, "2")));
        let Decision::Unschedulable { message, .. } = &drain(&mut state)[0].1 else { panic!("no room") };
        assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
        state.delete_node(&node("later", "4", 10));
        assert_eq!(state.usage("later").requested.milli_cpu, 3000, "kept while its pods exist");
    }

    #[test]
    fn reports_are_made_once_per_message() {
        let mut state = state_with(&[]);
        state.apply_pod(Arc::new(pod("a", 2, "1")));
        let Decision::Unschedulable { report, .. } = &drain(&mut state)[0].1 else { panic!() };
        assert!(report.is_some());
        state.retry_unschedulable();
        let Decision::Unschedulable { report, .. } = &drain(&mut state)[0].1 else { panic!() };
        assert!(report.is_none(), "in flight already");
        state.report_failed(&key("a"));
        state.retry_unschedulable();
        let Decision::Unschedulable { report, message } = &drain(&mut state)[0].1 else { panic!() };
        assert!(report.is_some(), "reported again after a failure");
        // The pod now says so (the watch shows the patch): a restarted scheduler is quiet.
        let mut said = pod("a", 3, "1");
        said["status"]["conditions"] =
            json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]);
        let mut fresh = state_with(&[]);
        fresh.apply_pod(Arc::new(said));
        let Decision::Unschedulable { report, .. } = &drain(&mut fresh)[0].1 else { panic!() };
        assert!(report.is_none());
    }

    #[test]
    fn invalid_pods_are_unschedulable_with_the_reason() {
        let mut state = state_with(&[node("n1", "4", 10)]);
        state.apply_pod(Arc::new(pod("a", 2, "a-lot")));
        let Decision::Unschedulable { message, .. } = &drain(&mut state)[0].1 else { panic!("invalid") };
        assert!(
            message.starts_with("invalid resource request: spec.containers[0].resources.requests.cpu"),
            "{message}"
        );
        // Bound anyway (by hand), it takes a pod slot and nothing else.
        state.apply_pod(Arc::new(bound(pod("a", 2, "a-lot"), "n1", 3)));
        assert_eq!(state.usage("n1").pods, 1);
        assert_eq!(state.usage("n1").requested.milli_cpu, 0);
    }

    #[test]
    fn a_recreated_pod_replaces_the_old_one() {
        let mut state = state_with(&[node("n1", "4", 10)]);
        state.apply_pod(Arc::new(bound(pod("a", 2, "1"), "n1", 2)));
        let mut again = pod("a", 5, "1");
        again["metadata"]["uid"] = json!("uid-new");
        state.apply_pod(Arc::new(again));
        assert_eq!(state.usage("n1").pods, 0);
        assert_eq!(bind_target(&drain(&mut state)[0].1), Some("n1"));
        // The old pod's deletion, late, changes nothing.
        state.delete_pod(&bound(pod("a", 2, "1"), "n1", 6));
        assert_eq!(state.usage("n1").pods, 1);
    }
}
