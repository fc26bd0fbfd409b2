//! The objects the scheduler writes, built without I/O: a pod's `Binding`, the
//! `PodScheduled=False` status patch of a pod no node fits, and its `FailedScheduling`
//! Event.

use flotilla_client::ObjectKey;
use serde_json::{Value, json};

/// The `Binding` that `pods/binding` takes.
pub(crate) fn binding(pod: &ObjectKey, uid: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    })
}

fn pod_scheduled(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "PodScheduled")
}

/// Whether the pod already says it is unschedulable for `message`.
pub(crate) fn says_unschedulable(pod: &Value, message: &str) -> bool {
    pod_scheduled(pod)
        .is_some_and(|c| c["status"] == "False" && c["reason"] == "Unschedulable" && c["message"] == message)
}

/// The merge patch of the `status` subresource that sets `PodScheduled=False`
/// (`Unschedulable`, `message`). A merge patch replaces a list whole, so this is the
/// pod's conditions with that one set; `lastTransitionTime` moves only if the status
/// does. The pod's `resourceVersion` makes it a precondition: a pod that changed since
/// (bound meanwhile, say) is a `Conflict`, not overwritten.
pub(crate) fn unschedulable_patch(pod: &Value, message: &str, now: &str) -> Value {
    let transition = match pod_scheduled(pod) {
        Some(c) if c["status"] == "False" && c["lastTransitionTime"].is_string() => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let condition = json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    });
    let mut conditions: Vec<Value> = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    match conditions.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
    let mut patch = json!({"status": {"conditions": conditions}});
    if let Some(rv) = pod["metadata"]["resourceVersion"].as_str() {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    patch
}

/// The `FailedScheduling` Warning Event about `pod`, as kube-scheduler records it.
pub(crate) fn failed_scheduling_event(pod: &Value, message: &str, component: &str, now: &str) -> Value {
    let mut involved = pod.clone();
    involved["apiVersion"] = json!("v1");
    involved["kind"] = json!("Pod");
    flotilla_client::event(&involved, "Warning", "FailedScheduling", message, component, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(conditions: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42"},
            "spec": {"containers": []},
            "status": {"phase": "Pending", "conditions": conditions},
        })
    }

    #[test]
    fn binding_names_the_pod_and_the_node() {
        let body = binding(&ObjectKey::new("shop", "web"), "u-1", "node-a");
        assert_eq!(body["kind"], "Binding");
        assert_eq!(body["metadata"], json!({"name": "web", "namespace": "shop", "uid": "u-1"}));
        assert_eq!(body["target"], json!({"apiVersion": "v1", "kind": "Node", "name": "node-a"}));
    }

    #[test]
    fn the_patch_sets_the_condition_and_keeps_the_others() {
        let p = pod(json!([{"type": "Initialized", "status": "True"}]));
        let patch = unschedulable_patch(&p, "0/1 nodes are available: 1 Too many pods.", "2030-01-01T00:00:00Z");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["status"]["conditions"],
            json!([
                {"type": "Initialized", "status": "True"},
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Too many pods.", "lastProbeTime": null,
                 "lastTransitionTime": "2030-01-01T00:00:00Z"},
            ])
        );
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let p = pod(json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "old", "lastTransitionTime": "2029-01-01T00:00:00Z"}]));
        let patch = unschedulable_patch(&p, "new", "2030-01-01T00:00:00Z");
        assert_eq!(patch["status"]["conditions"][0]["lastTransitionTime"], "2029-01-01T00:00:00Z");
        assert_eq!(patch["status"]["conditions"][0]["message"], "new");
        assert_eq!(patch["status"]["conditions"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_pod_says_unschedulable_only_with_the_same_message() {
        let p = pod(json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}]));
        assert!(says_unschedulable(&p, "m"));
        assert!(!says_unschedulable(&p, "other"));
        assert!(!says_unschedulable(&pod(json!(null)), "m"));
        assert!(!says_unschedulable(&json!({}), "m"));
    }

    #[test]
    fn the_event_is_a_failed_scheduling_warning_about_the_pod() {
        let p = pod(json!([]));
        let event = failed_scheduling_event(&p, "why", "default-scheduler", "2030-01-01T00:00:00Z");
        let name = event["metadata"]["name"].as_str().expect("a name");
        assert!(name.starts_with("web.") && name.len() > 4, "{name}");
        assert_eq!(event["metadata"]["namespace"], "shop");
        assert_eq!(event["involvedObject"]["kind"], "Pod");
        assert_eq!(event["involvedObject"]["name"], "web");
        assert_eq!(event["involvedObject"]["uid"], "u-1");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "FailedScheduling");
        assert_eq!(event["message"], "why");
        assert_eq!(event["source"]["component"], "default-scheduler");
        assert_eq!(event["reportingComponent"], "default-scheduler");
        assert_eq!(event["count"], 1);
        assert_eq!(event["firstTimestamp"], "2030-01-01T00:00:00Z");
        let again = failed_scheduling_event(&p, "why", "default-scheduler", "2030-01-01T00:00:00Z");
        assert_ne!(again["metadata"]["name"], event["metadata"]["name"]);
    }

    #[test]
    fn event_names_stay_valid_for_long_pod_names() {
        let long = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        let p = json!({"metadata": {"name": long, "namespace": "ns", "uid": "u"}});
        let event = failed_scheduling_event(&p, "m", "s", "t");
        let name = event["metadata"]["name"].as_str().expect("a name");
        assert!(name.len() <= 253, "{}", name.len());
        assert!(flotilla_api::is_dns1123_subdomain(name).is_empty(), "{name}");
    }
}
