//! core/v1 Events, as every component records them (`kubectl describe` shows them).

use crate::{Cluster, resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// Event writes in flight at once per recorder; more are dropped (and logged).
const MAX_IN_FLIGHT: usize = 64;

/// An Event's `type`: `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSeverity {
    Normal,
    Warning,
}

impl EventSeverity {
    fn as_str(self) -> &'static str {
        match self {
            EventSeverity::Normal => "Normal",
            EventSeverity::Warning => "Warning",
        }
    }
}

/// Records one component's Events in the background: a lost Event is logged, never
/// retried, and never fails or slows the caller.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    cluster: Arc<dyn Cluster>,
    component: &'static str,
    in_flight: Arc<Semaphore>,
}

impl EventRecorder {
    pub fn new(cluster: Arc<dyn Cluster>, component: &'static str) -> Self {
        EventRecorder { cluster, component, in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }
    }

    /// Records an Event about `object` (an API object with its `apiVersion` and `kind`).
    pub fn event(&self, object: &Value, severity: EventSeverity, reason: &str, message: String) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%reason, %message, "too many Events in flight; dropping one");
            return;
        };
        let now = flotilla_api::timestamp_now();
        let event = event(object, severity.as_str(), reason, &message, self.component, &now);
        let namespace = event["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = cluster.create(resource("v1", "Event"), Some(&namespace), &event).await {
                tracing::debug!(%error, "could not record an Event");
            }
        });
    }
}

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
