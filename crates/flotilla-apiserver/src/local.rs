//! The in-process [`Cluster`]: the registry's verbs called directly, with the same
//! validation, defaults, concurrency checks and watch semantics as the HTTP API, minus
//! the sockets, TLS and serialisation.

use crate::registry::{DeleteOptions, Deleted, ListQuery, PatchType, Registry, WriteOptions};
use crate::watch::{self, WatchQuery};
use async_trait::async_trait;
use flotilla_api::{ApiError, FieldSelector, LabelSelector, ResourceType, Subresource};
use flotilla_client::{Cluster, DeleteParams, ListParams, Patch, Watch, WatchEvent};
use http::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// The API server's registry as a [`Cluster`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    registry: Registry,
    namespace_poke: Arc<Notify>,
    field_manager: String,
}

impl LocalCluster {
    pub(crate) fn new(registry: Registry, namespace_poke: Arc<Notify>) -> Self {
        LocalCluster { registry, namespace_poke, field_manager: "flotilla".into() }
    }

    /// The same cluster, recording writes in `managedFields` as `manager` (the scheduler,
    /// a node, a controller).
    pub fn with_field_manager(&self, manager: &str) -> Self {
        LocalCluster { field_manager: manager.to_string(), ..self.clone() }
    }

    /// Counts an in-process request as the HTTP edge counts one, and passes its result on.
    fn counted<T>(
        &self,
        verb: &str,
        rt: &ResourceType,
        started: Instant,
        result: Result<T, ApiError>,
        ok: StatusCode,
    ) -> Result<T, ApiError> {
        if let Some(metrics) = self.registry.metrics() {
            let code = match &result {
                Ok(_) => ok,
                Err(error) => StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            };
            metrics.observe(verb, rt.plural, code, started.elapsed());
        }
        result
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions { field_manager: self.field_manager.clone(), ..WriteOptions::default() }
    }
}

fn selectors(rt: &ResourceType, params: &ListParams) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(params.label_selector.as_deref().unwrap_or(""))?;
    let fields = FieldSelector::parse(params.field_selector.as_deref().unwrap_or(""))?;
    fields.check_supported(&rt.field_selectors())?;
    Ok((labels, fields))
}

fn subresource(rt: &ResourceType, name: Option<&str>) -> Result<Option<Subresource>, ApiError> {
    match name {
        None => Ok(None),
        Some("status") => Ok(Some(Subresource::Status)),
        Some(other) => {
            Err(ApiError::bad_request(format!("{} has no writable subresource \"{other}\" here", rt.plural)))
        }
    }
}

#[async_trait]
impl Cluster for LocalCluster {
    async fn get(&self, rt: &'static ResourceType, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = self.registry.get(rt, namespace, name).await;
        self.counted("GET", rt, started, result, StatusCode::OK)
    }

    async fn list(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = async {
            let (labels, fields) = selectors(rt, params)?;
            self.registry.list(rt, namespace, &ListQuery { labels, fields, ..ListQuery::default() }).await
        }
        .await;
        self.counted("LIST", rt, started, result, StatusCode::OK)
    }

    async fn watch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: &str,
    ) -> Result<Watch, ApiError> {
        let started = Instant::now();
        let result = async {
            let (labels, fields) = selectors(rt, params)?;
            let resource_version = match resource_version {
                "" | "0" => None,
                rv => Some(crate::registry::parse_resource_version(rv)?),
            };
            let query = WatchQuery {
                labels,
                fields,
                resource_version,
                allow_bookmarks: true,
                timeout: None,
                send_initial_events: false,
            };
            let emit = |event_type: &'static str, object: Value| match WatchEvent::from_parts(event_type, object) {
                Some(event) => Ok(event),
                None => Err(ApiError::gone("the watch must be restarted from a new list")),
            };
            let events = watch::start(self.registry.clone(), rt, namespace.map(str::to_string), query, emit).await?;
            Ok(Watch::new(events))
        }
        .await;
        self.counted("WATCH", rt, started, result, StatusCode::OK)
    }

    async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = self.registry.create(rt, namespace, object.clone(), &self.write_options()).await;
        self.counted("CREATE", rt, started, result, StatusCode::CREATED)
    }

    async fn replace(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        subresource_name: Option<&str>,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = async {
            let sub = subresource(rt, subresource_name)?;
            self.registry.update(rt, namespace, name, object.clone(), sub, &self.write_options()).await
        }
        .await;
        self.counted("UPDATE", rt, started, result, StatusCode::OK)
    }

    async fn patch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        subresource_name: Option<&str>,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = async {
            if subresource_name == Some("scale") && rt.has_subresource(Subresource::Scale) {
                // The scale subresource: the patch applies to the Scale, as over HTTP.
                let options = self.write_options();
                let parsed = crate::patch::parse(patch_type(patch))?;
                let scaled = self.registry.update_scale(rt, namespace, name, &options, |mut scale| {
                    crate::patch::apply(&mut scale, &parsed)?;
                    Ok(scale)
                });
                return scaled.await;
            }
            let sub = subresource(rt, subresource_name)?;
            self.registry.patch(rt, namespace, name, patch_type(patch), sub, &self.write_options()).await
        }
        .await;
        self.counted("PATCH", rt, started, result, StatusCode::OK)
    }

    async fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = async {
            let options = DeleteOptions {
                propagation_policy: params.propagation_policy.clone(),
                precondition_uid: params.precondition_uid.clone(),
                grace_period_seconds: params.grace_period_seconds,
                ..DeleteOptions::default()
            };
            let deleted = self.registry.delete(rt, namespace, name, &options).await?;
            if rt.kind == "Namespace" {
                self.namespace_poke.notify_one();
            }
            Ok(match deleted {
                Deleted::Gone(object) | Deleted::Pending(object) => object,
            })
        }
        .await;
        self.counted("DELETE", rt, started, result, StatusCode::OK)
    }

    async fn create_subresource(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let result = async {
            match (rt.kind, subresource) {
                ("Pod", "binding") => self.registry.bind(namespace.unwrap_or("default"), name, body).await,
                _ => {
                    Err(ApiError::bad_request(format!("{} has no subresource \"{subresource}\" to create", rt.plural)))
                }
            }
        }
        .await;
        self.counted("CREATE", rt, started, result, StatusCode::CREATED)
    }
}

/// The registry's name for a client's patch.
fn patch_type(patch: &Patch) -> PatchType<'_> {
    match patch {
        Patch::Merge(merge) => PatchType::Merge(merge),
        Patch::Json(ops) => PatchType::Json(ops),
    }
}
