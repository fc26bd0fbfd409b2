//! How Flotilla's components reach cluster state: the [`Cluster`] interface, its HTTP
//! implementation ([`Client`], from a kubeconfig or a join token), and the pieces every
//! controller-like component builds on ([`Informer`] caches fed by list + watch).
//!
//! The scheduler, the node agent and the controllers see the cluster only through
//! [`Cluster`], so each runs the same inside `flotilla server` (the API server's
//! in-process implementation: no sockets, no serialisation of requests) and in another
//! process (`flotilla agent`, over HTTPS). Writes through either go through the same
//! validation and admission as kubectl's.
//!
//! It also defines [`Kubelet`], what the API server asks a node for (`pods/log`,
//! `pods/proxy`, the [`Summary`] of its pods' resource use), so that the API server and
//! the node agent need not know each other.
//!
//! Every component also runs its long-running tasks under a [`Supervisor`] (a panic is
//! logged, counted and the task restarted with back-off) and serves its listeners
//! through [`HttpServer`], within [`ConnectionLimits`]; both live here because every
//! component depends on this crate.
//!
//! This crate owns no cluster logic and must not depend on the store, the runtime, or any
//! component that uses it.

mod event;
mod http;
mod informer;
mod kubelet;
mod serve;
mod stats;
pub mod streaming;
mod supervise;

pub use crate::event::{EventRecorder, EventSeverity, event};
pub use crate::http::{Client, LineReader, Response, error_chain, rest_path};
pub use crate::informer::{Change, Informer, ObjectKey};
pub use crate::kubelet::{
    Body, BoxError, HttpKubelet, Kubelet, Kubelets, LogOptions, START_WAIT_HEADER, empty_body, full_body, kubelet_base,
};
pub use crate::serve::{ConnectionLimits, HttpServer, hold_until_done};
pub use crate::stats::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary};
pub use crate::supervise::{Backoff, Supervisor, panic_message};

use async_trait::async_trait;
use flotilla_api::{ApiError, Reason, ResourceType};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use tokio::sync::mpsc;

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a failure `Status`.
    #[error("Error from server ({}): {}", .0.reason.as_str(), .0.message)]
    Api(ApiError),
    #[error("kubeconfig {}: {message}", path.display())]
    Kubeconfig { path: std::path::PathBuf, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    /// The request did not reach the server or the answer did not come back.
    #[error("{0}")]
    Transport(String),
    /// The answer was not what the API returns.
    #[error("{0}")]
    Decode(String),
}

impl From<Error> for ApiError {
    /// A client failure as the API error a component handles: the server's own, or
    /// `ServiceUnavailable` when the server could not be reached (callers retry).
    fn from(error: Error) -> ApiError {
        match error {
            Error::Api(api) => api,
            Error::Transport(message) => ApiError::new(Reason::ServiceUnavailable, message),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Selectors of a list or watch, in their string forms.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl ListParams {
    pub fn labels(selector: impl Into<String>) -> Self {
        Self { label_selector: Some(selector.into()), ..Self::default() }
    }

    pub fn fields(selector: impl Into<String>) -> Self {
        Self { field_selector: Some(selector.into()), ..Self::default() }
    }
}

/// A patch body and its type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// RFC 7386 merge patch (`application/merge-patch+json`).
    Merge(Value),
    /// RFC 6902 operations (`application/json-patch+json`).
    Json(Value),
}

/// Options of a delete.
#[derive(Debug, Default, Clone)]
pub struct DeleteParams {
    /// `Background`, `Foreground` or `Orphan`.
    pub propagation_policy: Option<String>,
    /// Only delete the object with this uid.
    pub precondition_uid: Option<String>,
    /// Seconds the object's pods get to stop; `Some(0)` deletes at once.
    pub grace_period_seconds: Option<i64>,
}

/// What happened to an object, as a watch tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// No change: the stream has seen everything up to the object's `resourceVersion`.
    Bookmark,
}

/// One watch event.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub event_type: EventType,
    pub object: Value,
}

impl WatchEvent {
    /// The event from a watch line's `type`, or `None` for `ERROR` (and anything unknown).
    pub fn from_parts(event_type: &str, object: Value) -> Option<WatchEvent> {
        let event_type = match event_type {
            "ADDED" => EventType::Added,
            "MODIFIED" => EventType::Modified,
            "DELETED" => EventType::Deleted,
            "BOOKMARK" => EventType::Bookmark,
            _ => return None,
        };
        Some(WatchEvent { event_type, object })
    }
}

/// A running watch. Ends (`None`) when the server ends it; an `Err` (e.g. `Gone`: the
/// history is compacted, list again) is its last item.
#[derive(Debug)]
pub struct Watch {
    events: mpsc::Receiver<Result<WatchEvent, ApiError>>,
}

impl Watch {
    /// A watch fed by `events`; implementations of [`Cluster`] make one.
    pub fn new(events: mpsc::Receiver<Result<WatchEvent, ApiError>>) -> Watch {
        Watch { events }
    }

    pub async fn next(&mut self) -> Option<Result<WatchEvent, ApiError>> {
        self.events.recv().await
    }
}

/// The cluster's objects, as Kubernetes' REST verbs. Objects are JSON values in their
/// API form; [`decode`] gives a k8s-openapi type. Errors are the API's own (`NotFound`,
/// `Conflict`, `Invalid`…); an unreachable server is `ServiceUnavailable`.
#[async_trait]
pub trait Cluster: Send + Sync + fmt::Debug + 'static {
    async fn get(&self, rt: &'static ResourceType, namespace: Option<&str>, name: &str) -> Result<Value, ApiError>;

    /// The List object: `items` and `metadata.resourceVersion` to watch from.
    async fn list(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<Value, ApiError>;

    /// Changes after `resource_version` (with bookmarks).
    async fn watch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: &str,
    ) -> Result<Watch, ApiError>;

    async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, ApiError>;

    /// PUT of the object (or of its `status` subresource); its `resourceVersion`, when
    /// set, must be current.
    async fn replace(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError>;

    async fn patch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError>;

    /// Deletes; answers the object's last state (or its state while finalizers run).
    async fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Value, ApiError>;

    /// POST to a subresource that is an action, such as `pods/binding`.
    async fn create_subresource(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
        body: &Value,
    ) -> Result<Value, ApiError>;
}

/// An API object as its k8s-openapi type.
pub fn decode<K: DeserializeOwned>(object: &Value) -> Result<K, ApiError> {
    K::deserialize(object).map_err(|e| ApiError::internal(format!("decoding an object: {e}")))
}

/// `namespace/name` (or `name` for cluster-scoped objects): how logs and keys name an
/// object.
pub fn object_name(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    match meta["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// The resource kind `kind` of `apiVersion`, which must be one Flotilla serves.
pub fn resource(api_version: &str, kind: &str) -> &'static ResourceType {
    match flotilla_api::by_kind(api_version, kind) {
        Some(rt) => rt,
        // A programming error, not input: callers pass constants.
        None => panic!("{api_version} {kind} is not a kind Flotilla serves"),
    }
}
