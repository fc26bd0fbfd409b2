//! Reading and building the pieces of API objects every controller needs: owner
//! references, selectors, pod readiness, conditions and timestamps. Objects are JSON in
//! their API form; nothing here trusts a field to be present or well-typed.

use flotilla_api::LabelSelector;
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// A string under `metadata`.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object["metadata"][field].as_str()
}

pub(crate) fn name(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or_default()
}

pub(crate) fn namespace(object: &Value) -> &str {
    meta_str(object, "namespace").unwrap_or_default()
}

pub(crate) fn uid(object: &Value) -> &str {
    meta_str(object, "uid").unwrap_or_default()
}

pub(crate) fn resource_version(object: &Value) -> &str {
    meta_str(object, "resourceVersion").unwrap_or_default()
}

pub(crate) fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"].as_i64().unwrap_or(0)
}

/// Whether the object is being deleted (has a `deletionTimestamp`).
pub(crate) fn is_terminating(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

pub(crate) fn labels(object: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    object["metadata"]["labels"].as_object().unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

pub(crate) fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

pub(crate) fn finalizers(object: &Value) -> Vec<&str> {
    object["metadata"]["finalizers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

pub(crate) fn owner_references(object: &Value) -> &[Value] {
    object["metadata"]["ownerReferences"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The owner reference with `controller: true`, if any.
pub(crate) fn controller_of(object: &Value) -> Option<&Value> {
    owner_references(object).iter().find(|r| r["controller"] == true)
}

/// The uid of the object's controller, if it has one of `kind`.
pub(crate) fn controller_uid<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    controller_of(object).filter(|r| r["kind"] == kind).and_then(|r| r["uid"].as_str())
}

/// The owner reference a controller puts on what it creates or adopts.
pub(crate) fn controller_reference(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// `spec.selector` as a selector. A missing or empty selector selects nothing (the API
/// refuses those for apps/v1 kinds; this keeps an odd object from claiming everything).
pub(crate) fn selector(object: &Value) -> Result<Option<LabelSelector>, String> {
    let raw = &object["spec"]["selector"];
    if raw.is_null() {
        return Ok(None);
    }
    let typed: metav1::LabelSelector = flotilla_client::decode(raw).map_err(|e| e.message)?;
    let selector = LabelSelector::from_label_selector(&typed)?;
    Ok((!selector.is_empty()).then_some(selector))
}

/// Whether `object`'s labels satisfy `selector`.
pub(crate) fn selects(selector: &LabelSelector, object: &Value) -> bool {
    selector.matches(labels(object))
}

/// A pod that counts for its owner: not being deleted and not finished.
pub(crate) fn is_active_pod(pod: &Value) -> bool {
    !is_terminating(pod) && !matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

pub(crate) fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// Whether the pod's `Ready` condition is `True`.
pub(crate) fn is_pod_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

/// How long until a ready pod has been ready for `min_ready` (zero: available now), or
/// `None` if it is not ready. A ready pod without a readable transition time counts as
/// available, as kube does.
pub(crate) fn until_available(pod: &Value, min_ready: Duration, now: jiff::Timestamp) -> Option<Duration> {
    let ready = condition(pod, "Ready").filter(|c| c["status"] == "True")?;
    if min_ready.is_zero() {
        return Some(Duration::ZERO);
    }
    let Some(since) = ready["lastTransitionTime"].as_str().and_then(parse_time) else {
        return Some(Duration::ZERO);
    };
    let elapsed = now.duration_since(since);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    Some(min_ready.saturating_sub(elapsed))
}

pub(crate) fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// `at` plus `seconds`, saturating at the ends of time: both come from objects any client
/// may write (a status time in the year 9999, a deadline of any int64), and a
/// controller must not panic on them.
pub(crate) fn plus_seconds(at: jiff::Timestamp, seconds: i64) -> jiff::Timestamp {
    let saturated = if seconds < 0 { jiff::Timestamp::MIN } else { jiff::Timestamp::MAX };
    at.checked_add(jiff::SignedDuration::from_secs(seconds)).unwrap_or(saturated)
}

/// RFC 3339 in whole seconds, as Kubernetes writes times.
pub(crate) fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A non-negative integer field as `i64` (0 when absent or odd).
pub(crate) fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0).max(0)
}

pub(crate) fn creation(object: &Value) -> &str {
    meta_str(object, "creationTimestamp").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_arithmetic_saturates_at_the_ends_of_time() {
        // A status time any client may write, plus a deadline: the controllers' panic.
        let end = parse_time("9999-12-30T21:59:00Z").expect("a time");
        assert_eq!(plus_seconds(end, 600), jiff::Timestamp::MAX);
        assert_eq!(plus_seconds(jiff::Timestamp::MIN, -1), jiff::Timestamp::MIN);
        let now = parse_time("2026-01-01T00:00:00Z").expect("a time");
        assert_eq!(format_time(plus_seconds(now, 90)), "2026-01-01T00:01:30Z");
        assert_eq!(plus_seconds(now, i64::MAX), jiff::Timestamp::MAX);
    }

    #[test]
    fn selectors_of_odd_objects_select_nothing_or_fail() {
        assert!(matches!(selector(&json!({})), Ok(None)));
        assert!(matches!(selector(&json!({"spec": {"selector": {}}})), Ok(None)));
        assert!(selector(&json!({"spec": {"selector": {"matchLabels": 3}}})).is_err());
        let s = selector(&json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}}));
        let Ok(Some(s)) = s else { panic!("a selector: {s:?}") };
        assert!(selects(&s, &json!({"metadata": {"labels": {"app": "web", "x": "y"}}})));
        assert!(!selects(&s, &json!({"metadata": {"labels": {"app": "db"}}})));
        assert!(!selects(&s, &json!({"metadata": {}})));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: jiff::Timestamp = "2025-01-01T00:00:10Z".parse().expect("a time");
        let pod = |status: &str| {
            json!({"status": {"conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": "2025-01-01T00:00:04Z"}]}})
        };
        assert_eq!(until_available(&pod("False"), Duration::ZERO, now), None);
        assert_eq!(until_available(&pod("True"), Duration::ZERO, now), Some(Duration::ZERO));
        assert_eq!(until_available(&pod("True"), Duration::from_secs(10), now), Some(Duration::from_secs(4)));
        assert_eq!(until_available(&pod("True"), Duration::from_secs(5), now), Some(Duration::ZERO));
        assert!(is_pod_ready(&pod("True")));
    }

    #[test]
    fn controller_references() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"kind": "ReplicaSet", "name": "a", "uid": "1"},
            {"kind": "ReplicaSet", "name": "b", "uid": "2", "controller": true}]}});
        assert_eq!(controller_uid(&pod, "ReplicaSet"), Some("2"));
        assert_eq!(controller_uid(&pod, "Job"), None);
        assert_eq!(controller_uid(&json!({"metadata": {"ownerReferences": "odd"}}), "ReplicaSet"), None);
    }
}
