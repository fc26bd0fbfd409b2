//! The disruption controller (kube-controller-manager's `disruption`): keeps each
//! PodDisruptionBudget's status — the pods it selects, how many are healthy, how many it
//! needs, and so how many may be disrupted now. The API server's `pods/eviction` spends
//! from `disruptionsAllowed` and records the pod in `disruptedPods`; this controller
//! recomputes both from the pods, writing only on the version it read so that it never
//! undoes an eviction it has not seen.

use crate::deployment::util::scaled_value;
use crate::error::{Error, Result};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_api::LabelSelector;
use flotilla_client::{Cluster, Informer, ObjectKey, resource};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How long an evicted pod stays in `disruptedPods`, not counted healthy, while its
/// deletion is awaited (kube's `DeletionTimeout`).
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

pub(crate) struct DisruptionController {
    cluster: Arc<dyn Cluster>,
    budgets: Informer,
    pods: Informer,
    replica_sets: Informer,
    deployments: Informer,
}

/// A budget's selector; in policy/v1 an empty one selects every pod of its namespace, a
/// missing one none.
fn selector(budget: &Value) -> Option<LabelSelector> {
    LabelSelector::from_json(budget["spec"].get("selector").filter(|s| !s.is_null())?).ok()
}

/// The healthy pods a budget wants (`desiredHealthy`) and the pods it expects to exist
/// (`expectedPods`), given the pods it selects and `scale`, the replicas their controllers
/// want (counted only when the budget is a percentage or a `maxUnavailable`, as kube does).
pub(crate) fn desired_and_expected(spec: &Value, selected: i64, scale: impl FnOnce() -> i64) -> (i64, i64) {
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    match (min, max) {
        (_, Some(max)) => {
            let expected = scale();
            ((expected - scaled_value(max, expected, true)).max(0), expected)
        }
        (Some(Value::Number(n)), None) => (n.as_i64().unwrap_or(0), selected),
        (Some(min), None) => {
            let expected = scale();
            (scaled_value(min, expected, true), expected)
        }
        (None, None) => (0, selected),
    }
}

impl DisruptionController {
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        budgets: Informer,
        pods: Informer,
        replica_sets: Informer,
        deployments: Informer,
        config: RunnerConfig,
    ) {
        let controller = Arc::new(DisruptionController {
            cluster,
            budgets: budgets.clone(),
            pods: pods.clone(),
            replica_sets: replica_sets.clone(),
            deployments: deployments.clone(),
        });
        let all: AllKeys<ObjectKey> = {
            let budgets = budgets.clone();
            Arc::new(move || budgets.list().iter().map(|b| ObjectKey::of(b)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|budget, _| vec![ObjectKey::of(budget)]);
        // A pod, or a controller's scale, concerns every budget of its namespace (a
        // namespace has few budgets; the reconcile sorts out which select what).
        let namespace_budgets: Mapper<ObjectKey> = {
            let budgets = budgets.clone();
            Arc::new(move |object, _| {
                let namespace = meta::namespace(object);
                budgets.filter(|b| meta::namespace(b) == namespace).iter().map(|b| ObjectKey::of(b)).collect()
            })
        };
        Controller::new("disruption", all, config)
            .reports_failures(&budgets, controller.cluster.clone())
            .watches(budgets, own)
            .watches(pods, namespace_budgets.clone())
            .watches(replica_sets, namespace_budgets.clone())
            .watches(deployments, namespace_budgets)
            .run(controller)
            .await;
    }

    /// The replicas the controllers of `pods` want: a ReplicaSet counts its Deployment's
    /// replicas when a Deployment owns it; a pod of any other controller, or of none,
    /// counts as itself.
    fn scale(&self, namespace: &str, pods: &[Arc<Value>]) -> i64 {
        let mut seen = HashSet::new();
        let mut total = 0;
        for pod in pods {
            let owner = meta::controller_of(pod);
            let replica_set = owner
                .filter(|o| o["kind"] == "ReplicaSet")
                .and_then(|o| o["name"].as_str())
                .and_then(|name| self.replica_sets.get(namespace, name));
            let Some(replica_set) = replica_set else {
                total += 1;
                continue;
            };
            let deployment = meta::controller_of(&replica_set)
                .filter(|o| o["kind"] == "Deployment")
                .and_then(|o| o["name"].as_str())
                .and_then(|name| self.deployments.get(namespace, name));
            let scaled = deployment.unwrap_or(replica_set);
            if seen.insert(meta::uid(&scaled).to_string()) {
                total += scaled["spec"]["replicas"].as_i64().unwrap_or(1);
            }
        }
        total
    }
}

impl Reconciler<ObjectKey> for DisruptionController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(budget) = self.budgets.get(&key.namespace, &key.name) else { return Ok(Action::AwaitChange) };
        if meta::is_terminating(&budget) {
            return Ok(Action::AwaitChange);
        }
        let namespace = key.namespace.as_str();
        let selected: Vec<Arc<Value>> = match selector(&budget) {
            Some(selector) => self.pods.filter(|p| meta::namespace(p) == namespace && meta::selects(&selector, p)),
            None => Vec::new(),
        };
        let now = Timestamp::now();
        // Evicted pods wait here, unhealthy, until they are seen going or time out.
        let mut disrupted = Map::new();
        let mut next_expiry: Option<Timestamp> = None;
        if let Some(listed) = budget["status"]["disruptedPods"].as_object() {
            for (name, at) in listed {
                let Some(at) = at.as_str().and_then(meta::parse_time) else { continue };
                let expires = at.checked_add(DELETION_TIMEOUT).unwrap_or(at);
                let pending = selected.iter().any(|p| meta::name(p) == name && !meta::is_terminating(p));
                if pending && expires > now {
                    disrupted.insert(name.clone(), json!(meta::format_time(at)));
                    next_expiry = Some(next_expiry.map_or(expires, |n| n.min(expires)));
                }
            }
        }
        let healthy = selected
            .iter()
            .filter(|p| !meta::is_terminating(p) && meta::is_pod_ready(p) && !disrupted.contains_key(meta::name(p)))
            .count();
        let healthy = i64::try_from(healthy).unwrap_or(i64::MAX);
        let count = i64::try_from(selected.len()).unwrap_or(i64::MAX);
        let (desired, expected) = desired_and_expected(&budget["spec"], count, || self.scale(namespace, &selected));
        let allowed = (healthy - desired).max(0);

        let generation = meta::generation(&budget);
        let (condition_status, reason) =
            if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
        let previous = meta::condition(&budget, "DisruptionAllowed");
        let since = previous
            .filter(|c| c["status"] == condition_status)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map_or_else(|| meta::format_time(now), str::to_string);
        let mut status = json!({
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": [{"type": "DisruptionAllowed", "status": condition_status, "reason": reason,
                "message": "", "lastTransitionTime": since, "observedGeneration": generation}],
        });
        if !disrupted.is_empty() {
            status["disruptedPods"] = Value::Object(disrupted);
        }
        let requeue = next_expiry
            .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
            .map_or(Action::AwaitChange, |wait| Action::Requeue(wait + Duration::from_millis(10)));
        if budget["status"] == status {
            return Ok(requeue);
        }
        let mut updated = (*budget).clone();
        updated["status"] = status;
        let rt = resource("policy/v1", "PodDisruptionBudget");
        // Conditional on the version read: an eviction since then makes this a Conflict,
        // retried on the newer budget.
        self.cluster
            .replace(rt, Some(namespace), &key.name, &updated, Some("status"))
            .await
            .map_err(|e| Error::api(format!("updating the status of PodDisruptionBudget {key}"), e))?;
        Ok(requeue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_count_as_kube_counts_them() {
        let scale = || 10;
        // minAvailable as a number: of the pods there are.
        assert_eq!(desired_and_expected(&json!({"minAvailable": 2}), 3, scale), (2, 3));
        // As a percentage, or a maxUnavailable: of what the controllers want, rounded up.
        assert_eq!(desired_and_expected(&json!({"minAvailable": "25%"}), 3, scale), (3, 10));
        assert_eq!(desired_and_expected(&json!({"maxUnavailable": 1}), 3, scale), (9, 10));
        assert_eq!(desired_and_expected(&json!({"maxUnavailable": "15%"}), 3, scale), (8, 10));
        assert_eq!(desired_and_expected(&json!({"maxUnavailable": "100%"}), 3, scale), (0, 10));
        assert_eq!(desired_and_expected(&json!({}), 3, scale), (0, 3));
    }

    #[test]
    fn an_empty_selector_selects_everything_and_none_nothing() {
        let labels = json!({"metadata": {"labels": {"app": "web"}}});
        let of = |spec: Value| selector(&json!({"spec": spec}));
        assert!(of(json!({"selector": {}})).is_some_and(|s| meta::selects(&s, &labels)));
        assert!(of(json!({"selector": {"matchLabels": {"app": "db"}}})).is_some_and(|s| !meta::selects(&s, &labels)));
        assert!(of(json!({})).is_none());
    }
}
