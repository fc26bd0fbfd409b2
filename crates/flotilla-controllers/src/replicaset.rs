//! The ReplicaSet controller, as kube-controller-manager's: keeps `spec.replicas` active
//! pods matching the selector, adopting orphans and releasing pods that stop matching;
//! creates in slow-start batches and deletes the least useful pods first; writes status
//! through the status subresource when it changes.

use crate::claim::{self, Owner};
use crate::error::{Error, Result};
use crate::events::{EventSeverity, Recorder};
use crate::expectations::{Expectations, Observed, Tracked};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use crate::written::Written;
use flotilla_api::Reason;
use flotilla_client::{Cluster, DeleteParams, Informer, ObjectKey, Patch, resource};
use serde_json::{Map, Value, json};
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

const COMPONENT: &str = "replicaset-controller";
/// kube's `maxGeneratedNameLength`: a generated name's base is cut to this.
const MAX_GENERATE_NAME_BASE: usize = 58;

#[derive(Debug)]
pub(crate) struct ReplicaSetController {
    cluster: Arc<dyn Cluster>,
    replica_sets: Informer,
    pods: Informer,
    expectations: Expectations,
    /// The status writes the cache has not shown yet.
    written: Written,
    recorder: Recorder,
    /// Pods created or deleted per reconcile at most (kube's `burstReplicas`).
    burst: usize,
}

/// The pod cache, as expectations ask it.
struct PodCache<'a>(&'a Informer, &'a str);

impl Observed for PodCache<'_> {
    fn has_created(&self, pod: &Tracked) -> bool {
        self.0.get(self.1, &pod.name).is_some_and(|p| meta::uid(&p) == pod.uid)
    }

    fn has_deleted(&self, pod: &Tracked) -> bool {
        self.0.get(self.1, &pod.name).is_none_or(|p| meta::uid(&p) != pod.uid || meta::is_terminating(&p))
    }
}

impl ReplicaSetController {
    /// Runs the controller until dropped.
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        replica_sets: Informer,
        pods: Informer,
        config: RunnerConfig,
        expectations_ttl: Duration,
        burst: usize,
    ) {
        let controller = Arc::new(ReplicaSetController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            replica_sets: replica_sets.clone(),
            pods: pods.clone(),
            expectations: Expectations::new(expectations_ttl),
            written: Written::default(),
            burst: burst.max(1),
        });
        let all: AllKeys<ObjectKey> = {
            let replica_sets = replica_sets.clone();
            Arc::new(move || replica_sets.list().iter().map(|rs| ObjectKey::of(rs)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|rs, _| vec![ObjectKey::of(rs)]);
        let pods_to_owner = owner_mapper(replica_sets.clone(), "ReplicaSet");
        Controller::new("replicaset", all, config)
            .reports_failures(&replica_sets, controller.cluster.clone())
            .watches(replica_sets, own)
            .watches(pods, pods_to_owner)
            .run(controller)
            .await;
    }

    async fn manage(&self, rs: &Value, key: &ObjectKey, active: &[Arc<Value>]) -> Result<()> {
        let desired = meta::int(&rs["spec"]["replicas"]);
        let diff = i64::try_from(active.len()).unwrap_or(i64::MAX) - desired;
        let burst = i64::try_from(self.burst).unwrap_or(i64::MAX);
        if diff < 0 {
            let count = usize::try_from((-diff).min(burst)).unwrap_or(0);
            let (created, result) = self.create_pods(rs, count).await;
            self.expectations.expect(key, created, Vec::new());
            result
        } else if diff > 0 {
            let count = usize::try_from(diff.min(burst)).unwrap_or(0);
            let victims = pods_to_delete(active, count);
            let tracked = victims
                .iter()
                .map(|p| Tracked { name: meta::name(p).to_string(), uid: meta::uid(p).to_string() })
                .collect();
            // Expected before the deletes start: their effects may reach the cache first.
            self.expectations.expect(key, Vec::new(), tracked);
            self.delete_pods(rs, victims).await
        } else {
            Ok(())
        }
    }

    /// Creates `count` pods in batches of 1, 2, 4, … stopping at the first batch with a
    /// failure (as kube's `slowStartBatch`): a bad template fails once, not `count` times.
    async fn create_pods(&self, rs: &Value, count: usize) -> (Vec<Tracked>, Result<()>) {
        let namespace = meta::namespace(rs).to_string();
        let pod = pod_from_template(rs);
        let mut created = Vec::new();
        let mut batch = 1;
        let mut remaining = count;
        while remaining > 0 {
            let size = batch.min(remaining);
            let mut tasks = JoinSet::new();
            for _ in 0..size {
                let cluster = self.cluster.clone();
                let pod = pod.clone();
                let namespace = namespace.clone();
                tasks.spawn(async move { cluster.create(resource("v1", "Pod"), Some(&namespace), &pod).await });
            }
            let mut failure = None;
            let mut failed = 0;
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(pod)) => {
                        let name = meta::name(&pod).to_string();
                        self.recorder.event(
                            rs,
                            EventSeverity::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                        created.push(Tracked { name, uid: meta::uid(&pod).to_string() });
                    }
                    Ok(Err(error)) => {
                        failed += 1;
                        if error.reason != Reason::Forbidden {
                            let message = format!("Error creating: {}", error.message);
                            self.recorder.event(rs, EventSeverity::Warning, "FailedCreate", message);
                        }
                        failure.get_or_insert(error);
                    }
                    Err(join) => {
                        failed += 1;
                        failure.get_or_insert(flotilla_api::ApiError::internal(join.to_string()));
                    }
                }
            }
            if let Some(source) = failure {
                return (created, Err(Error::Batch { what: "pod creations", failed, attempted: size, source }));
            }
            remaining -= size;
            batch *= 2;
        }
        (created, Ok(()))
    }

    async fn delete_pods(&self, rs: &Value, victims: Vec<Arc<Value>>) -> Result<()> {
        let attempted = victims.len();
        let mut tasks = JoinSet::new();
        for pod in victims {
            let cluster = self.cluster.clone();
            tasks.spawn(async move {
                let key = ObjectKey::of(&pod);
                let params = DeleteParams { precondition_uid: Some(meta::uid(&pod).to_string()), ..Default::default() };
                let result = cluster.delete(resource("v1", "Pod"), Some(&key.namespace), &key.name, &params).await;
                (key.name, result)
            });
        }
        let mut failure = None;
        let mut failed = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, Ok(_))) => {
                    self.recorder.event(rs, EventSeverity::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
                }
                Ok((_, Err(error))) if matches!(error.reason, Reason::NotFound | Reason::Conflict) => {}
                Ok((_, Err(error))) => {
                    failed += 1;
                    let message = format!("Error deleting: {}", error.message);
                    self.recorder.event(rs, EventSeverity::Warning, "FailedDelete", message);
                    failure.get_or_insert(error);
                }
                Err(join) => {
                    failed += 1;
                    failure.get_or_insert(flotilla_api::ApiError::internal(join.to_string()));
                }
            }
        }
        match failure {
            Some(source) => Err(Error::Batch { what: "pod deletions", failed, attempted, source }),
            None => Ok(()),
        }
    }

    /// Deletes failed pods the replica set owns, so that they are replaced and do not pile
    /// up.
    async fn delete_failed(&self, rs: &Value, pods: &[Arc<Value>]) -> Result<()> {
        for pod in pods.iter().filter(|p| p["status"]["phase"] == "Failed" && !meta::is_terminating(p)) {
            let key = ObjectKey::of(pod);
            let params = DeleteParams { precondition_uid: Some(meta::uid(pod).to_string()), ..Default::default() };
            match self.cluster.delete(resource("v1", "Pod"), Some(&key.namespace), &key.name, &params).await {
                Ok(_) => {
                    let message = format!("Deleted pod: {}", key.name);
                    self.recorder.event(rs, EventSeverity::Normal, "SuccessfulDelete", message);
                }
                Err(error) if matches!(error.reason, Reason::NotFound | Reason::Conflict) => {}
                Err(source) => return Err(Error::api(format!("deleting failed pod {key}"), source)),
            }
        }
        Ok(())
    }
}

impl Reconciler<ObjectKey> for ReplicaSetController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(rs) = self.replica_sets.get(&key.namespace, &key.name) else {
            self.expectations.forget(key);
            self.written.forget(key);
            return Ok(Action::AwaitChange);
        };
        if self.written.is_stale(key, meta::resource_version(&rs)) {
            // Our last status write is on its way to the cache, and will trigger this
            // key again: working from the copy it replaced could only conflict.
            return Ok(Action::AwaitChange);
        }
        let selector = match meta::selector(&rs) {
            Ok(Some(selector)) => selector,
            Ok(None) => return Ok(Action::AwaitChange),
            Err(error) => {
                tracing::warn!(%error, "invalid selector; ignoring the replica set");
                return Ok(Action::AwaitChange);
            }
        };
        let rs_uid = meta::uid(&rs).to_string();
        let candidates = self.pods.filter(|p| meta::namespace(p) == key.namespace && claim::is_candidate(&rs_uid, p));
        let owner = Owner { object: &rs, api_version: "apps/v1", kind: "ReplicaSet", selector: &selector };
        let owned = claim::claim(self.cluster.as_ref(), resource("v1", "Pod"), &owner, candidates).await?;
        let active: Vec<Arc<Value>> = owned.iter().filter(|p| meta::is_active_pod(p)).cloned().collect();

        let satisfied = self.expectations.satisfied(key, &PodCache(&self.pods, &key.namespace));
        let mut outcome = Ok(());
        if satisfied.is_ok() && !meta::is_terminating(&rs) {
            outcome = self.manage(&rs, key, &active).await;
        }
        if outcome.is_ok() {
            outcome = self.delete_failed(&rs, &owned).await;
        }

        let (status, next_available) = status_of(&rs, &active, jiff::Timestamp::now());
        if status_changed(&rs["status"], &status) {
            let patch = json!({"metadata": {"resourceVersion": meta::resource_version(&rs)}, "status": status});
            let written = self
                .cluster
                .patch(
                    resource("apps/v1", "ReplicaSet"),
                    Some(&key.namespace),
                    &key.name,
                    &Patch::Merge(patch),
                    Some("status"),
                )
                .await
                .map_err(|source| Error::api("updating the status", source))?;
            self.written.wrote(key, meta::resource_version(&rs), meta::resource_version(&written));
        }
        outcome?;
        let wait = [satisfied.err(), next_available].into_iter().flatten().min();
        Ok(wait.map_or(Action::AwaitChange, Action::Requeue))
    }
}

/// Maps a changed object to its controller of `kind`, or, for an orphan, to every owner
/// of that kind in its namespace whose selector matches it (which may adopt it).
pub(crate) fn owner_mapper(owners: Informer, kind: &'static str) -> Mapper<ObjectKey> {
    Arc::new(move |object, deleted| match meta::controller_of(object) {
        Some(reference) if reference["kind"] == kind => reference["name"]
            .as_str()
            .map(|name| vec![ObjectKey::new(meta::namespace(object), name)])
            .unwrap_or_default(),
        Some(_) => Vec::new(),
        None if deleted => Vec::new(),
        None => {
            let namespace = meta::namespace(object);
            owners
                .filter(|owner| {
                    meta::namespace(owner) == namespace
                        && matches!(meta::selector(owner), Ok(Some(s)) if meta::selects(&s, object))
                })
                .iter()
                .map(|owner| ObjectKey::of(owner))
                .collect()
        }
    })
}

/// The pod a replica set creates: its template, a generated name, its controller
/// reference.
pub(crate) fn pod_from_template(rs: &Value) -> Value {
    let template = &rs["spec"]["template"];
    let base: String = format!("{}-", meta::name(rs)).chars().take(MAX_GENERATE_NAME_BASE).collect();
    let mut metadata = Map::new();
    metadata.insert("generateName".into(), json!(base));
    metadata.insert("namespace".into(), json!(meta::namespace(rs)));
    for field in ["labels", "annotations"] {
        if let Some(value) = template["metadata"].get(field).filter(|v| v.is_object()) {
            metadata.insert(field.into(), value.clone());
        }
    }
    metadata.insert("ownerReferences".into(), json!([meta::controller_reference(rs, "apps/v1", "ReplicaSet")]));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// The `count` pods to delete first, as kube ranks them: not yet scheduled, then
/// pending before unknown before running, not ready before ready, ready for less time,
/// more restarts, newer.
pub(crate) fn pods_to_delete(pods: &[Arc<Value>], count: usize) -> Vec<Arc<Value>> {
    let mut ranked: Vec<Arc<Value>> = pods.to_vec();
    ranked.sort_by_cached_key(|pod| {
        let assigned = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        let phase = match pod["status"]["phase"].as_str() {
            Some("Pending") => 0,
            Some("Unknown") => 1,
            Some("Running") => 2,
            _ => 0,
        };
        let ready = meta::is_pod_ready(pod);
        let ready_since = meta::condition(pod, "Ready")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or_default()
            .to_string();
        let restarts: i64 = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .sum();
        (assigned, phase, ready, Reverse(ready_since), Reverse(restarts), Reverse(meta::creation(pod).to_string()))
    });
    ranked.truncate(count);
    ranked
}

/// The status the replica set's active pods give it, and when the next ready pod becomes
/// available (if one waits for `minReadySeconds`).
pub(crate) fn status_of(rs: &Value, active: &[Arc<Value>], now: jiff::Timestamp) -> (Value, Option<Duration>) {
    let template_labels = rs["spec"]["template"]["metadata"]["labels"].as_object();
    let min_ready = Duration::from_secs(u64::try_from(meta::int(&rs["spec"]["minReadySeconds"])).unwrap_or(0));
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut next: Option<Duration> = None;
    for pod in active {
        let labels = meta::labels(pod);
        if template_labels.is_none_or(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v))) {
            fully_labeled += 1;
        }
        if meta::is_pod_ready(pod) {
            ready += 1;
        }
        match meta::until_available(pod, min_ready, now) {
            Some(wait) if wait.is_zero() => available += 1,
            Some(wait) => next = Some(next.map_or(wait, |n| n.min(wait))),
            None => {}
        }
    }
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": meta::generation(rs),
    });
    (status, next)
}

fn status_changed(current: &Value, next: &Value) -> bool {
    ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
        .iter()
        .any(|field| meta::int(&current[field]) != meta::int(&next[field]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "creationTimestamp": created, "labels": {"app": "web"}},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2025-01-01T00:00:00Z"}]},
        }))
    }

    fn names(pods: &[Arc<Value>]) -> Vec<&str> {
        pods.iter().map(|p| meta::name(p)).collect()
    }

    #[test]
    fn surplus_pods_go_unscheduled_then_not_ready_then_newest_first() {
        let pods = vec![
            pod("old-ready", Some("n1"), "Running", true, "2025-01-01T00:00:00Z"),
            pod("new-ready", Some("n1"), "Running", true, "2025-01-02T00:00:00Z"),
            pod("not-ready", Some("n1"), "Running", false, "2025-01-01T00:00:00Z"),
            pod("unscheduled", None, "Pending", false, "2025-01-01T00:00:00Z"),
            pod("pending", Some("n1"), "Pending", false, "2025-01-01T00:00:00Z"),
        ];
        assert_eq!(names(&pods_to_delete(&pods, 5)), ["unscheduled", "pending", "not-ready", "new-ready", "old-ready"]);
        assert_eq!(names(&pods_to_delete(&pods, 1)), ["unscheduled"]);
        assert!(pods_to_delete(&pods, 0).is_empty());
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let rs = json!({
            "metadata": {"name": "web-7d4b9", "namespace": "shop", "uid": "rs-uid"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "hello"}]}}},
        });
        let pod = pod_from_template(&rs);
        assert_eq!(pod["metadata"]["generateName"], "web-7d4b9-");
        assert_eq!(pod["metadata"]["namespace"], "shop");
        assert_eq!(pod["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(pod["metadata"]["annotations"], json!({"a": "b"}));
        assert_eq!(
            pod["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9", "uid": "rs-uid",
                    "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "hello");
        let long = json!({"metadata": {"name": "x".repeat(80)}, "spec": {}});
        assert_eq!(pod_from_template(&long)["metadata"]["generateName"].as_str().map(str::len), Some(58));
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled_pods() {
        let rs = json!({"metadata": {"generation": 4}, "spec": {"minReadySeconds": 30,
            "template": {"metadata": {"labels": {"app": "web", "tier": "front"}}}}});
        let mut labeled = pod("a", Some("n"), "Running", true, "t");
        if let Some(p) = Arc::get_mut(&mut labeled) {
            p["metadata"]["labels"]["tier"] = json!("front");
        }
        let pods = vec![labeled, pod("b", Some("n"), "Running", false, "t")];
        let now: jiff::Timestamp = "2025-01-01T00:00:10Z".parse().expect("a time");
        let (status, next) = status_of(&rs, &pods, now);
        assert_eq!(
            status,
            json!({"replicas": 2, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 0,
                   "observedGeneration": 4})
        );
        assert_eq!(next, Some(Duration::from_secs(20)));
        let later: jiff::Timestamp = "2025-01-01T00:00:30Z".parse().expect("a time");
        assert_eq!(status_of(&rs, &pods, later).0["availableReplicas"], 1);
        assert!(status_changed(&json!({}), &status));
        assert!(!status_changed(&status, &status));
    }
}
