//! The node lifecycle controller: a node whose agent stops renewing its Ready condition is
//! marked `Ready=Unknown` (`NodeStatusUnknown`) and tainted
//! `node.kubernetes.io/unreachable:NoExecute` after a grace period; once it has been
//! unreachable for the eviction timeout its pods are deleted (no kubelet is left to stop
//! them gracefully), so their controllers replace them on other nodes. A node that comes
//! back loses the taint.
//!
//! Level-triggered: every tick reads the nodes and pods from the informers and acts on
//! what they say; nothing is remembered between ticks.

use crate::events::{EventSeverity, Recorder};
use flotilla_client::{Cluster, DeleteParams, Informer, Patch, resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The taint of a node whose status is unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// How the controller judges nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without a heartbeat before it is Unknown (kube's
    /// `--node-monitor-grace-period`, 40 s).
    pub grace_period: Duration,
    /// How long an unreachable node's pods stay before they are deleted (kube's default
    /// toleration of the unreachable taint, 300 s).
    pub eviction_timeout: Duration,
    /// How often nodes are checked.
    pub period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
            period: Duration::from_secs(1),
        }
    }
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")
}

fn age(timestamp: Option<&str>, now: jiff::Timestamp) -> Option<Duration> {
    let then: jiff::Timestamp = timestamp?.parse().ok()?;
    Duration::try_from(now.duration_since(then)).ok()
}

fn has_unreachable_taint(node: &Value) -> bool {
    node["spec"]["taints"].as_array().into_iter().flatten().any(|t| t["key"] == UNREACHABLE_TAINT)
}

/// Whether a pod tolerates the unreachable taint forever (no `tolerationSeconds`).
fn tolerates_unreachable(pod: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().into_iter().flatten().any(|t| {
        let key_matches = t["key"] == UNREACHABLE_TAINT || (t["key"].is_null() && t["operator"] == "Exists");
        let effect_matches = t["effect"].is_null() || t["effect"] == "NoExecute";
        key_matches && effect_matches && t["tolerationSeconds"].is_null()
    })
}

/// What to do about one node now.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Healthy,
    /// Heartbeat missed: mark Unknown and taint.
    MarkUnknown,
    /// Back: remove the taint.
    Recovered,
    /// Unknown for longer than the eviction timeout: evict its pods.
    Evict,
    /// Unknown, waiting for the eviction timeout.
    Waiting,
}

fn judge(node: &Value, config: &NodeLifecycleConfig, now: jiff::Timestamp) -> Verdict {
    let Some(ready) = ready_condition(node) else { return Verdict::Healthy };
    let status = ready["status"].as_str().unwrap_or("");
    let since_heartbeat = age(ready["lastHeartbeatTime"].as_str(), now).unwrap_or_default();
    match status {
        "True" if since_heartbeat > config.grace_period => Verdict::MarkUnknown,
        "True" if has_unreachable_taint(node) => Verdict::Recovered,
        "True" => Verdict::Healthy,
        "Unknown" => {
            let since_transition = age(ready["lastTransitionTime"].as_str(), now).unwrap_or_default();
            if since_transition > config.eviction_timeout { Verdict::Evict } else { Verdict::Waiting }
        }
        // A node that says it is not ready is alive: it evicts nothing here.
        _ => Verdict::Healthy,
    }
}

/// Runs the controller until the task is dropped.
pub(crate) async fn run(cluster: Arc<dyn Cluster>, nodes: Informer, pods: Informer, config: NodeLifecycleConfig) {
    let recorder = Recorder::new(cluster.clone(), "node-controller");
    nodes.synced().await;
    pods.synced().await;
    let mut tick = tokio::time::interval(config.period);
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        for node in nodes.list() {
            let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let result = match judge(&node, &config, now) {
                Verdict::Healthy | Verdict::Waiting => Ok(()),
                Verdict::MarkUnknown => mark_unknown(cluster.as_ref(), &node, &name, now).await.map(|()| {
                    recorder.event(
                        &node,
                        EventSeverity::Normal,
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    );
                }),
                Verdict::Recovered => set_unreachable_taint(cluster.as_ref(), &node, &name, None).await,
                Verdict::Evict => evict(cluster.as_ref(), &pods, &name, &recorder).await,
            };
            if let Err(error) = result {
                tracing::warn!(node = %name, %error, "node lifecycle");
            }
        }
    }
}

async fn mark_unknown(
    cluster: &dyn Cluster,
    node: &Value,
    name: &str,
    now: jiff::Timestamp,
) -> Result<(), flotilla_api::ApiError> {
    let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let conditions: Vec<Value> = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut c = c.clone();
            c["status"] = json!("Unknown");
            c["reason"] = json!("NodeStatusUnknown");
            c["message"] = json!("Kubelet stopped posting node status.");
            c["lastTransitionTime"] = json!(stamp);
            c
        })
        .collect();
    let patch = Patch::Merge(json!({"status": {"conditions": conditions}}));
    cluster.patch(resource("v1", "Node"), None, name, &patch, Some("status")).await?;
    set_unreachable_taint(cluster, node, name, Some(&stamp)).await
}

/// Adds (`Some(time added)`) or removes (`None`) the unreachable NoExecute taint.
async fn set_unreachable_taint(
    cluster: &dyn Cluster,
    node: &Value,
    name: &str,
    added: Option<&str>,
) -> Result<(), flotilla_api::ApiError> {
    let mut taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["key"] != UNREACHABLE_TAINT)
        .cloned()
        .collect();
    if let Some(added) = added {
        taints.push(json!({"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": added}));
    }
    let patch = Patch::Merge(json!({"spec": {"taints": taints}}));
    cluster.patch(resource("v1", "Node"), None, name, &patch, None).await.map(|_| ())
}

async fn evict(
    cluster: &dyn Cluster,
    pods: &Informer,
    node: &str,
    recorder: &Recorder,
) -> Result<(), flotilla_api::ApiError> {
    let doomed = pods.filter(|p| p["spec"]["nodeName"] == node && !tolerates_unreachable(p));
    for pod in doomed {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        // No kubelet is left to stop it gracefully.
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: pod["metadata"]["uid"].as_str().map(str::to_string),
            ..DeleteParams::default()
        };
        match cluster.delete(resource("v1", "Pod"), Some(namespace), name, &params).await {
            Ok(_) => recorder.event(
                &pod,
                EventSeverity::Normal,
                "TaintManagerEviction",
                format!("Marking for deletion Pod {namespace}/{name}"),
            ),
            Err(e) if matches!(e.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(status: &str, heartbeat: &str, transition: &str, tainted: bool) -> Value {
        let taints = if tainted { json!([{"key": UNREACHABLE_TAINT, "effect": "NoExecute"}]) } else { json!([]) };
        json!({"spec": {"taints": taints}, "status": {"conditions": [{"type": "Ready", "status": status,
            "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition}]}})
    }

    #[test]
    fn nodes_are_judged_by_their_heartbeat() {
        let config = NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
            ..NodeLifecycleConfig::default()
        };
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().expect("a time");
        let recent = "2026-01-01T00:09:50Z";
        let old = "2026-01-01T00:09:00Z";
        let long_ago = "2026-01-01T00:00:00Z";
        assert_eq!(judge(&node("True", recent, long_ago, false), &config, now), Verdict::Healthy);
        assert_eq!(judge(&node("True", old, long_ago, false), &config, now), Verdict::MarkUnknown);
        assert_eq!(judge(&node("True", recent, long_ago, true), &config, now), Verdict::Recovered);
        assert_eq!(judge(&node("Unknown", old, recent, true), &config, now), Verdict::Waiting);
        assert_eq!(judge(&node("Unknown", long_ago, long_ago, true), &config, now), Verdict::Evict);
        assert_eq!(judge(&node("False", old, long_ago, false), &config, now), Verdict::Healthy);
    }

    #[test]
    fn only_unbounded_tolerations_keep_a_pod_on_an_unreachable_node() {
        let pod = |tolerations: Value| json!({"spec": {"tolerations": tolerations}});
        assert!(!tolerates_unreachable(&pod(json!([]))));
        assert!(tolerates_unreachable(&pod(json!([{"operator": "Exists"}]))));
        assert!(tolerates_unreachable(&pod(
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}])
        )));
        assert!(!tolerates_unreachable(&pod(
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "tolerationSeconds": 300}])
        )));
    }
}
