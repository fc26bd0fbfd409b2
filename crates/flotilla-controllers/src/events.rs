//! core/v1 Events for what the controllers do (`kubectl describe` shows them). Written in
//! the background: a lost Event is logged, never retried, and never fails a reconcile.

use crate::meta;
use flotilla_client::{Cluster, resource};
use serde_json::Value;
use std::sync::Arc;
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

pub(crate) fn build_event(
    object: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
    component: &str,
    now: &str,
) -> Value {
    let event_type = match event_type {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    flotilla_client::event(object, event_type, reason, message, component, now)
}
