//! core/v1 Events for what the controllers do (`kubectl describe` shows them). Written in
//! the background: a lost Event is logged, never retried, and never fails a reconcile.

use crate::meta;
use flotilla_client::{Cluster, resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// Event writes in flight at once per recorder; more are dropped (and logged).
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    cluster: Arc<dyn Cluster>,
    component: &'static str,
    in_flight: Arc<Semaphore>,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Normal,
    Warning,
}

impl Recorder {
    pub(crate) fn new(cluster: Arc<dyn Cluster>, component: &'static str) -> Self {
        Recorder { cluster, component, in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }
    }

    /// Records an Event about `object` (an API object with type meta).
    pub(crate) fn event(&self, object: &Value, event_type: EventType, reason: &str, message: String) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%reason, %message, "too many Events in flight; dropping one");
            return;
        };
        let event = build_event(object, event_type, reason, &message, self.component, &flotilla_api::timestamp_now());
        let cluster = self.cluster.clone();
        let namespace = meta::namespace(object).to_string();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = cluster.create(resource("v1", "Event"), Some(&namespace), &event).await {
                tracing::debug!(%error, "could not record an Event");
            }
        });
    }
}

fn event_suffix() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let previous = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)));
    previous.map_or(now, |last| now.max(last + 1))
}

pub(crate) fn build_event(
    object: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
    component: &str,
    now: &str,
) -> Value {
    let name = meta::name(object);
    let namespace = meta::namespace(object);
    let mut prefix: String = name.chars().take(200).collect();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{prefix}.{:x}", event_suffix()), "namespace": namespace},
        "involvedObject": {
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "namespace": namespace,
            "name": name,
            "uid": meta::uid(object),
            "resourceVersion": meta::resource_version(object),
        },
        "type": match event_type { EventType::Normal => "Normal", EventType::Warning => "Warning" },
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
    fn an_event_names_its_object() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u", "resourceVersion": "7"}});
        let event = build_event(&rs, EventType::Normal, "SuccessfulCreate", "Created pod: web-1-abcde", "c", "t");
        assert_eq!(event["involvedObject"]["kind"], "ReplicaSet");
        assert_eq!(event["involvedObject"]["apiVersion"], "apps/v1");
        assert_eq!(event["metadata"]["namespace"], "shop");
        assert!(event["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-1.")));
        assert_eq!(event["type"], "Normal");
        let other = build_event(&rs, EventType::Warning, "R", "m", "c", "t");
        assert_ne!(event["metadata"]["name"], other["metadata"]["name"]);
    }
}
