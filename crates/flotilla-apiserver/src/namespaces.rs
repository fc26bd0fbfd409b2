//! The namespace lifecycle: the system namespaces exist from the first start, and a
//! namespace marked for deletion is emptied and then removed.
//!
//! The finalizer is level-triggered: it looks for namespaces with a
//! `deletionTimestamp` whenever poked and on a timer, so a restart in the middle of a
//! deletion simply carries on.

use crate::registry::{DeleteOptions, Deleted, ListQuery, Registry, SYSTEM_NAMESPACES, WriteOptions, name_of};
use flotilla_api::{ApiError, Reason, all_resources, by_kind};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often terminating namespaces are looked at without a poke.
const RESYNC: Duration = Duration::from_secs(5);

/// Creates the system namespaces that are missing.
pub async fn bootstrap(registry: &Registry) -> Result<(), ApiError> {
    let rt = by_kind("v1", "Namespace").ok_or_else(|| ApiError::internal("no Namespace kind"))?;
    for name in SYSTEM_NAMESPACES {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry.create(rt, None, namespace, &WriteOptions::default()).await {
            Ok(_) => tracing::info!(namespace = name, "created system namespace"),
            Err(e) if e.reason == Reason::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Empties one terminating namespace; removes it once nothing is left. Returns whether
/// it is gone.
async fn finalize(registry: &Registry, namespace: &str) -> Result<bool, ApiError> {
    let mut remaining = 0usize;
    // An object (or a kind) that cannot be deleted is logged and left for the next round;
    // it does not stop the rest of the namespace being emptied.
    for rt in all_resources().iter().filter(|r| r.namespaced) {
        let list = match registry.list(rt, Some(namespace), &ListQuery::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(namespace, kind = rt.kind, error = %e, "listing the namespace's objects failed");
                remaining += 1;
                continue;
            }
        };
        for object in list["items"].as_array().into_iter().flatten() {
            match registry.delete(rt, Some(namespace), name_of(object), &DeleteOptions::default()).await {
                Ok(Deleted::Gone(_)) => {}
                Ok(Deleted::Pending(_)) => remaining += 1,
                Err(e) if e.reason == Reason::NotFound => {}
                Err(e) => {
                    tracing::warn!(namespace, kind = rt.kind, name = name_of(object), error = %e, "deleting failed");
                    remaining += 1;
                }
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace, remaining, "namespace waits for finalizers");
        return Ok(false);
    }
    let rt = by_kind("v1", "Namespace").ok_or_else(|| ApiError::internal("no Namespace kind"))?;
    let key = rt.key(None, namespace);
    match registry.store().get(&key).await {
        Ok(Some(kv)) => {
            registry
                .store()
                .delete(&key, Some(kv.mod_revision))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        Ok(None) => {}
        Err(e) => return Err(ApiError::internal(e.to_string())),
    }
    tracing::info!(namespace, "namespace deleted");
    Ok(true)
}

/// Runs the namespace finalizer until the process ends. A namespace whose emptying
/// panics is logged, counted by `supervisor` and skipped until the next pass; the others
/// are still emptied.
pub async fn run_finalizer(registry: Registry, poke: Arc<Notify>, supervisor: flotilla_client::Supervisor) {
    let Some(rt) = by_kind("v1", "Namespace") else { return };
    loop {
        match registry.list(rt, None, &ListQuery::default()).await {
            Ok(list) => {
                for ns in list["items"].as_array().into_iter().flatten() {
                    if ns["metadata"]["deletionTimestamp"].is_string() {
                        let name = name_of(ns).to_string();
                        match supervisor.catch("namespace-finalizer", finalize(&registry, &name)).await {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(namespace = %name, error = %e, "emptying namespace failed; will retry")
                            }
                            None => tracing::error!(namespace = %name, "emptying namespace panicked; will retry"),
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing namespaces failed"),
        }
        let _ = tokio::time::timeout(RESYNC, poke.notified()).await;
    }
}
