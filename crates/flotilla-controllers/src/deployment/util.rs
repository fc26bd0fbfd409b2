//! The pure parts of the Deployment controller, after kube's `deployment/util`: template
//! hashes, revisions and annotations, surge and unavailability, proportions, conditions.
//! All work on JSON objects in API form and tolerate missing or odd fields.

use crate::meta;
use serde_json::{Value, json};

pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations not copied to its replica sets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// `spec.replicas` (the API defaults it to 1).
pub(crate) fn replicas(object: &Value) -> i64 {
    object["spec"]["replicas"].as_i64().unwrap_or(1).max(0)
}

pub(crate) fn status_int(object: &Value, field: &str) -> i64 {
    meta::int(&object["status"][field])
}

/// The available pods a replica set counts for in scaling decisions: its status, but
/// never more than its size. A replica set just scaled down reports the pods it is
/// deleting as available until it syncs again; trusting that would let a rolling update
/// scale old replica sets down too far (below `replicas - maxUnavailable`).
pub(crate) fn available(rs: &Value) -> i64 {
    status_int(rs, "availableReplicas").min(replicas(rs))
}

pub(crate) fn revision(rs: &Value) -> i64 {
    meta::annotation(rs, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub(crate) fn is_rolling(d: &Value) -> bool {
    d["spec"]["strategy"]["type"].as_str().is_none_or(|t| t == "RollingUpdate")
}

/// `progressDeadlineSeconds`, unless unset or "never" (MaxInt32).
pub(crate) fn progress_deadline(d: &Value) -> Option<i64> {
    d["spec"]["progressDeadlineSeconds"].as_i64().filter(|s| *s != i64::from(i32::MAX))
}

/// An int-or-percent of `total`: percents round up or down.
pub(crate) fn scaled_value(value: &Value, total: i64, round_up: bool) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return s.parse().unwrap_or(0);
            };
            let product = percent.saturating_mul(total);
            if round_up { (product + 99).div_euclid(100) } else { product.div_euclid(100) }
        }
        _ => 0,
    }
}

/// maxSurge and maxUnavailable as numbers of pods (kube's `ResolveFenceposts`): surge
/// rounds up, unavailability down, and they are not both 0.
pub(crate) fn fenceposts(d: &Value) -> (i64, i64) {
    let desired = replicas(d);
    let rolling = &d["spec"]["strategy"]["rollingUpdate"];
    let surge_value = rolling.get("maxSurge").cloned().unwrap_or_else(|| json!("25%"));
    let unavailable_value = rolling.get("maxUnavailable").cloned().unwrap_or_else(|| json!("25%"));
    let surge = scaled_value(&surge_value, desired, true).max(0);
    let unavailable = scaled_value(&unavailable_value, desired, false).max(0);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

pub(crate) fn max_surge(d: &Value) -> i64 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

pub(crate) fn max_unavailable(d: &Value) -> i64 {
    let desired = replicas(d);
    if !is_rolling(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

/// The template without the `pod-template-hash` label, to compare a deployment's with a
/// replica set's.
fn without_hash(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty()
            && let Some(metadata) = template["metadata"].as_object_mut()
        {
            metadata.remove("labels");
        }
    }
    template
}

pub(crate) fn template_equal_ignoring_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

/// A stable hash of the pod template (and the collision count), as kube renders it:
/// FNV-1a (32 bits) of the template's canonical JSON, its decimal digits mapped to
/// kube's "safe" alphabet (no vowels, no confusable characters), up to 10 characters.
pub(crate) fn pod_template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut canonical = String::new();
    canonical_json(template, &mut canonical);
    let mut hash = fnv1a(0x811c_9dc5, canonical.as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::try_from(count.max(0) & 0xffff_ffff).unwrap_or(0).to_le_bytes());
        hash = fnv1a(hash, &bytes);
    }
    safe_encode(&hash.to_string())
}

fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// kube's `rand.SafeEncodeString`.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes().map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()])).collect()
}

/// JSON with object keys sorted, whatever order the map keeps.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn set_annotation(object: &mut Value, key: &str, value: String) -> bool {
    if !object["metadata"]["annotations"].is_object() {
        object["metadata"]["annotations"] = json!({});
    }
    let Some(annotations) = object["metadata"]["annotations"].as_object_mut() else { return false };
    if annotations.get(key).and_then(Value::as_str) == Some(value.as_str()) {
        return false;
    }
    annotations.insert(key.to_string(), Value::String(value));
    true
}

/// kube's `SetNewReplicaSetAnnotations`: copies the deployment's annotations, moves the
/// revision forward (keeping the old one in the history when a template comes back), and
/// for a replica set about to be created adds the replica annotations. Whether anything
/// changed.
pub(crate) fn set_new_rs_annotations(d: &Value, rs: &mut Value, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    if let Some(annotations) = d["metadata"]["annotations"].as_object() {
        for (key, value) in annotations {
            if NOT_COPIED.contains(&key.as_str()) {
                continue;
            }
            if let Some(value) = value.as_str() {
                changed |= set_annotation(rs, key, value.to_string());
            }
        }
    }
    let old = meta::annotation(rs, REVISION).map(str::to_string);
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(r)) => r,
        Some(Err(_)) => return changed,
    };
    if old_revision < new_revision {
        changed |= set_annotation(rs, REVISION, new_revision.to_string());
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match meta::annotation(rs, REVISION_HISTORY).filter(|h| !h.is_empty()) {
                Some(history) => format!("{history},{old}"),
                None => old,
            };
            changed |= set_annotation(rs, REVISION_HISTORY, history);
        }
    }
    if !exists {
        changed |= set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d));
    }
    changed
}

/// Sets `desired-replicas` and `max-replicas`; whether they changed.
pub(crate) fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let a = set_annotation(rs, DESIRED_REPLICAS, desired.to_string());
    let b = set_annotation(rs, MAX_REPLICAS, max.to_string());
    a || b
}

pub(crate) fn replicas_annotations_need_update(rs: &Value, desired: i64, max: i64) -> bool {
    meta::annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || meta::annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

pub(crate) fn desired_replicas_annotation(rs: &Value) -> Option<i64> {
    meta::annotation(rs, DESIRED_REPLICAS).and_then(|v| v.parse().ok())
}

/// kube's `getReplicaSetFraction`: how much `rs` should grow or shrink when the
/// deployment is scaled, proportionally to its share of the previous size.
pub(crate) fn replica_set_fraction(rs: &Value, d: &Value) -> i64 {
    let rs_replicas = replicas(rs);
    if replicas(d) == 0 {
        return -rs_replicas;
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = meta::annotation(rs, MAX_REPLICAS)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| status_int(d, "replicas"));
    if annotated <= 0 {
        return 0;
    }
    #[expect(clippy::cast_precision_loss, clippy::cast_possible_truncation, reason = "replica counts are small")]
    let size = ((rs_replicas * deployment_replicas) as f64 / annotated as f64).round() as i64;
    size - rs_replicas
}

/// kube's `GetProportion`.
pub(crate) fn proportion(rs: &Value, d: &Value, to_add: i64, added: i64) -> i64 {
    if replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

pub(crate) fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

pub(crate) fn new_condition(kind: &str, status: &str, reason: &str, message: String, now: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": now, "lastTransitionTime": now})
}

/// kube's `SetDeploymentCondition`: nothing changes when status and reason are the same;
/// the transition time stays when only the reason changes.
pub(crate) fn set_condition(status: &mut Value, mut condition: Value) {
    let kind = condition["type"].clone();
    if let Some(current) = condition_of(status, &kind) {
        if current["status"] == condition["status"] && current["reason"] == condition["reason"] {
            return;
        }
        if current["status"] == condition["status"] {
            condition["lastTransitionTime"] = current["lastTransitionTime"].clone();
        }
    }
    remove_condition(status, &kind);
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(conditions) = status["conditions"].as_array_mut() {
        conditions.push(condition);
    }
}

fn condition_of<'a>(status: &'a Value, kind: &Value) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| &c["type"] == kind)
}

pub(crate) fn remove_condition(status: &mut Value, kind: &Value) {
    if let Some(conditions) = status["conditions"].as_array_mut() {
        conditions.retain(|c| &c["type"] != kind);
    }
}

/// kube's `DeploymentComplete`.
pub(crate) fn is_complete(d: &Value, status: &Value) -> bool {
    let desired = replicas(d);
    meta::int(&status["updatedReplicas"]) == desired
        && meta::int(&status["replicas"]) == desired
        && meta::int(&status["availableReplicas"]) == desired
        && meta::int(&status["observedGeneration"]) >= meta::generation(d)
}

/// kube's `DeploymentProgressing`: more updated, fewer old, or more ready or available
/// pods than the stored status says.
pub(crate) fn is_progressing(d: &Value, status: &Value) -> bool {
    let old = &d["status"];
    let old_old = meta::int(&old["replicas"]) - meta::int(&old["updatedReplicas"]);
    let new_old = meta::int(&status["replicas"]) - meta::int(&status["updatedReplicas"]);
    meta::int(&status["updatedReplicas"]) > meta::int(&old["updatedReplicas"])
        || new_old < old_old
        || meta::int(&status["readyReplicas"]) > meta::int(&old["readyReplicas"])
        || meta::int(&status["availableReplicas"]) > meta::int(&old["availableReplicas"])
}

/// kube's `DeploymentTimedOut`.
pub(crate) fn is_timed_out(d: &Value, status: &Value, now: jiff::Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else { return false };
    let Some(progressing) = condition(status, "Progressing") else { return false };
    match progressing["reason"].as_str() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => progressing["lastUpdateTime"]
            .as_str()
            .and_then(meta::parse_time)
            .is_some_and(|from| crate::meta::plus_seconds(from, deadline) < now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, surge: Value, unavailable: Value) -> Value {
        json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
    }

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        assert_eq!(fenceposts(&deployment(10, json!("25%"), json!("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(3, json!("25%"), json!("25%"))), (1, 0));
        assert_eq!(fenceposts(&deployment(3, json!(0), json!(0))), (0, 1), "never both zero");
        assert_eq!(fenceposts(&deployment(4, json!(2), json!("50%"))), (2, 2));
        assert_eq!(max_unavailable(&deployment(2, json!(0), json!(5))), 2, "at most the replicas");
        assert_eq!(max_unavailable(&deployment(0, json!(0), json!(5))), 0);
        let recreate = json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}});
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
        assert_eq!(scaled_value(&json!("bogus"), 10, true), 0);
    }

    #[test]
    fn the_template_hash_is_stable_short_and_safe() {
        let template =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let reordered =
            json!({"spec": {"containers": [{"image": "a", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}});
        let hash = pod_template_hash(&template, None);
        assert_eq!(hash, pod_template_hash(&reordered, None));
        assert!(hash.len() <= 10 && !hash.is_empty(), "{hash}");
        assert!(hash.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{hash}");
        assert_ne!(hash, pod_template_hash(&template, Some(1)));
        let other =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}});
        assert_ne!(hash, pod_template_hash(&other, None));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let d = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"x": 1}});
        let rs = json!({"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {"x": 1}});
        assert!(template_equal_ignoring_hash(&d, &rs));
        let only_hash = json!({"metadata": {"labels": {"pod-template-hash": "abc"}}, "spec": {"x": 1}});
        assert!(template_equal_ignoring_hash(&json!({"metadata": {}, "spec": {"x": 1}}), &only_hash));
        assert!(!template_equal_ignoring_hash(&d, &json!({"metadata": {"labels": {"app": "web"}}, "spec": {"x": 2}})));
    }

    #[test]
    fn a_returning_template_takes_a_new_revision_and_keeps_its_history() {
        let d = json!({"metadata": {"annotations": {"team": "a", REVISION: "3"}}, "spec": {"replicas": 4}});
        let mut rs = json!({"metadata": {"annotations": {REVISION: "1"}}});
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        assert_eq!(meta::annotation(&rs, REVISION), Some("3"));
        assert_eq!(meta::annotation(&rs, REVISION_HISTORY), Some("1"));
        assert_eq!(meta::annotation(&rs, "team"), Some("a"));
        assert!(!set_new_rs_annotations(&d, &mut rs, 3, true), "nothing more to do");
        let mut fresh = json!({"metadata": {}});
        assert!(set_new_rs_annotations(&d, &mut fresh, 1, false));
        assert_eq!(meta::annotation(&fresh, DESIRED_REPLICAS), Some("4"));
        assert_eq!(meta::annotation(&fresh, MAX_REPLICAS), Some("5"));
    }

    #[test]
    fn proportions_follow_the_previous_size() {
        let d = deployment(20, json!(3), json!(0));
        let rs = json!({"metadata": {"annotations": {MAX_REPLICAS: "13"}}, "spec": {"replicas": 5}});
        // 5 * 23 / 13 = 8.8 → 9: four more.
        assert_eq!(replica_set_fraction(&rs, &d), 4);
        assert_eq!(proportion(&rs, &d, 10, 8), 2, "at most what is left to add");
        assert_eq!(proportion(&json!({"spec": {"replicas": 0}}), &d, 10, 0), 0);
        let scaled_to_zero = deployment(0, json!(3), json!(0));
        assert_eq!(replica_set_fraction(&rs, &scaled_to_zero), -5);
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut status = json!({});
        set_condition(&mut status, new_condition("Available", "False", "MinimumReplicasUnavailable", "m".into(), "t1"));
        set_condition(&mut status, new_condition("Available", "False", "MinimumReplicasUnavailable", "m".into(), "t2"));
        assert_eq!(status["conditions"][0]["lastUpdateTime"], "t1", "same status and reason: unchanged");
        set_condition(&mut status, new_condition("Available", "False", "Other", "m".into(), "t3"));
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(status["conditions"][0]["lastUpdateTime"], "t3");
        set_condition(&mut status, new_condition("Available", "True", "MinimumReplicasAvailable", "m".into(), "t4"));
        assert_eq!(status["conditions"][0]["lastTransitionTime"], "t4");
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_rollout_times_out_after_its_deadline_without_progress() {
        let d = json!({"spec": {"progressDeadlineSeconds": 60}});
        let status = |reason: &str| {
            json!({"conditions": [{"type": "Progressing", "status": "True", "reason": reason,
                "lastUpdateTime": "2025-01-01T00:00:00Z"}]})
        };
        let at = |s: &str| s.parse::<jiff::Timestamp>().expect("a time");
        assert!(!is_timed_out(&d, &status("ReplicaSetUpdated"), at("2025-01-01T00:01:00Z")));
        assert!(is_timed_out(&d, &status("ReplicaSetUpdated"), at("2025-01-01T00:01:01Z")));
        assert!(!is_timed_out(&d, &status("NewReplicaSetAvailable"), at("2025-01-02T00:00:00Z")));
        assert!(!is_timed_out(&json!({"spec": {}}), &status("ReplicaSetUpdated"), at("2025-01-02T00:00:00Z")));
    }
}
