//! The namespace lifecycle: the system namespaces exist from the first start, and a
//! namespace marked for deletion is emptied and then removed.
//!
//! The finalizer is level-triggered: it looks for namespaces with a
//! `deletionTimestamp` whenever poked and on a timer, so a restart in the middle of a
//! deletion simply carries on.

use crate::patch::PatchType;
use crate::registry::{DeleteOptions, Deleted, ListQuery, Registry, SYSTEM_NAMESPACES, WriteOptions, name_of};
use flotilla_api::{ApiError, Reason, Subresource, all_resources, by_kind};
use serde_json::{Value, json};
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
async fn finalize(registry: &Registry, namespace: &Value) -> Result<bool, ApiError> {
    let (object, namespace) = (namespace, name_of(namespace));
    let mut remaining = 0usize;
    // What could not be deleted, for the namespace's condition.
    let mut failures: Vec<String> = Vec::new();
    // An object (or a kind) that cannot be deleted is logged and left for the next round;
    // it does not stop the rest of the namespace being emptied.
    for rt in all_resources().iter().filter(|r| r.namespaced) {
        let list = match registry.list(rt, Some(namespace), &ListQuery::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(namespace, kind = rt.kind, error = %e, "listing the namespace's objects failed");
                failures.push(format!("{}: {}", rt.plural, e.message));
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
                    failures.push(format!("{} {}: {}", rt.kind, name_of(object), e.message));
                    remaining += 1;
                }
            }
        }
    }
    report(registry, object, &failures).await;
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

/// The namespace's `NamespaceDeletionContentFailure` condition, as kube's namespace
/// controller sets it: `True` with what could not be deleted, `False` once nothing failed.
/// An object that fails is skipped (the rest of the namespace is still emptied) and named
/// here, where `kubectl describe namespace` shows it; an Event could not be written in a
/// terminating namespace. Written only when it changes.
async fn report(registry: &Registry, namespace: &Value, failures: &[String]) {
    const TYPE: &str = "NamespaceDeletionContentFailure";
    let (status, reason, message) = if failures.is_empty() {
        ("False", "ContentDeleted", "All content successfully deleted".to_string())
    } else {
        let listed: Vec<&str> = failures.iter().take(10).map(String::as_str).collect();
        let message =
            format!("Failed to delete all resource types, {} remaining: {}", failures.len(), listed.join("; "));
        ("True", "ContentDeletionFailed", flotilla_api::limits::truncate(&message, 4096).into_owned())
    };
    let conditions = namespace["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let current = conditions.iter().find(|c| c["type"] == TYPE);
    if current.is_some_and(|c| c["status"] == status && c["message"] == message.as_str())
        || (current.is_none() && failures.is_empty())
    {
        return;
    }
    let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != TYPE).collect();
    conditions.push(json!({"type": TYPE, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": flotilla_api::timestamp_now()}));
    let Some(rt) = by_kind("v1", "Namespace") else { return };
    let patch = json!({"status": {"conditions": conditions}});
    let options = WriteOptions { field_manager: "namespace-controller".into(), ..WriteOptions::default() };
    let patched = registry
        .patch(rt, None, name_of(namespace), PatchType::Merge(&patch), Some(Subresource::Status), &options)
        .await;
    if let Err(error) = patched {
        tracing::warn!(namespace = name_of(namespace), %error, "recording the namespace's deletion condition failed");
    }
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
                        match supervisor.catch("namespace-finalizer", finalize(&registry, ns)).await {
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
