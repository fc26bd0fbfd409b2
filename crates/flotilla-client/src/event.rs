//! core/v1 Events, as every component records them (`kubectl describe` shows them).

use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest name prefix an Event keeps, leaving room for `.` and a 16-digit suffix.
const MAX_NAME_PREFIX: usize = 253 - 17;

/// A suffix unique in this process and increasing: the time in nanoseconds, bumped past
/// the last one given.
fn unique_suffix() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let previous = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)));
    previous.map_or(now, |last| now.max(last + 1))
}

/// An Event about `object` (which carries its `apiVersion` and `kind`), of `event_type`
/// `Normal` or `Warning`, reported by `component` at `now`, named `OBJECT.SUFFIX` in the
/// object's namespace as kube's recorders name them.
pub fn event(object: &Value, event_type: &str, reason: &str, message: &str, component: &str, now: &str) -> Value {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let namespace = meta["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or("default");
    let mut prefix: String = name.chars().take(MAX_NAME_PREFIX).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{prefix}.{:x}", unique_suffix()), "namespace": namespace},
        "involvedObject": {
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "namespace": namespace,
            "name": name,
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
        },
        "type": event_type,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_and_stays_a_valid_name() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u", "resourceVersion": "7"}});
        let first = event(&rs, "Normal", "SuccessfulCreate", "Created pod: web-1-abcde", "c", "t");
        let second = event(&rs, "Normal", "SuccessfulCreate", "again", "c", "t");
        assert_eq!(first["involvedObject"]["kind"], "ReplicaSet");
        assert_eq!(first["involvedObject"]["apiVersion"], "apps/v1");
        assert_eq!(first["metadata"]["namespace"], "shop");
        assert!(first["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-1.")));
        assert_ne!(first["metadata"]["name"], second["metadata"]["name"]);
        let long = json!({"metadata": {"name": format!("{}-", "a".repeat(300))}});
        let name = event(&long, "Warning", "R", "m", "c", "t")["metadata"]["name"].as_str().unwrap_or("").to_string();
        assert!(name.len() <= 253 && !name.contains("-."), "{name}");
    }
}
