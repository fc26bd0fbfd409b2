//! An informer: one kind's objects kept in a local cache by list + watch, and a feed of
//! what changed, the shape of client-go's reflector + store and kube-runtime's
//! `reflector`.
//!
//! The cache is only ever a copy of the server's state: after a failed or compacted watch
//! it lists again and replaces everything, so a component restarted at any moment
//! rebuilds the same view.

use crate::{Cluster, EventType, ListParams};
use flotilla_api::{ApiError, Reason, ResourceType};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A cached object's identity: namespace ("" for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of an API object.
    pub fn of(object: &Value) -> Self {
        let meta = &object["metadata"];
        ObjectKey::new(meta["namespace"].as_str().unwrap_or_default(), meta["name"].as_str().unwrap_or_default())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

/// What changed in an informer's cache.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added or modified: the object's new state.
    Applied(Arc<Value>),
    /// Deleted: its last state.
    Deleted(Arc<Value>),
    /// The cache was rebuilt from a fresh list; anything may have changed.
    Resynced,
}

/// A kind's objects mirrored locally. Cheap to clone; the list + watch task stops when
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Informer {
    inner: Arc<Inner>,
    /// Dropped with the last clone, which ends the task.
    _alive: Arc<watch::Sender<()>>,
}

#[derive(Debug)]
struct Inner {
    rt: &'static ResourceType,
    objects: RwLock<HashMap<ObjectKey, Arc<Value>>>,
    changes: broadcast::Sender<Change>,
    synced: watch::Sender<bool>,
    /// The revision the cache reflects (stored after the cache is written).
    revision: AtomicU64,
}

/// How long to wait before listing again after a failure.
const RETRY: Duration = Duration::from_millis(500);

impl Informer {
    /// Starts mirroring `rt`'s objects (in `namespace`, or all) matching `params`. The
    /// task ends when every handle to the informer is dropped.
    pub fn start(
        cluster: Arc<dyn Cluster>,
        rt: &'static ResourceType,
        namespace: Option<String>,
        params: ListParams,
    ) -> Informer {
        let (changes, _) = broadcast::channel(4096);
        let (synced, _) = watch::channel(false);
        let inner =
            Arc::new(Inner { rt, objects: RwLock::new(HashMap::new()), changes, synced, revision: AtomicU64::new(0) });
        let (alive, mut dropped) = watch::channel(());
        let task_inner = inner.clone();
        // A panic while listing or watching (a bug) is logged and the informer lists
        // again after RETRY, as after any failure: its cache must not silently freeze.
        let supervisor = crate::Supervisor::default();
        tokio::spawn(async move {
            loop {
                let listing = task_inner.list_and_watch(cluster.as_ref(), namespace.as_deref(), &params);
                tokio::select! {
                    result = supervisor.catch("informer", listing) => {
                        if let Some(Err(error)) = result
                            && error.reason != Reason::Gone
                        {
                            tracing::debug!(kind = rt.kind, %error, "informer: listing again");
                        }
                    }
                    _ = dropped.changed() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    _ = dropped.changed() => return,
                }
            }
        });
        Informer { inner, _alive: Arc::new(alive) }
    }

    /// Waits until the first list is in the cache.
    pub async fn synced(&self) {
        let mut synced = self.inner.synced.subscribe();
        // The sender lives in `inner`, which `self` holds: this cannot fail.
        let _ = synced.wait_for(|s| *s).await;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.read().get(&ObjectKey::new(namespace, name)).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<Value>> {
        self.read().values().cloned().collect()
    }

    /// Cached objects for which `keep` holds.
    pub fn filter(&self, keep: impl Fn(&Value) -> bool) -> Vec<Arc<Value>> {
        self.read().values().filter(|o| keep(o)).cloned().collect()
    }

    /// The revision (`resourceVersion`) the cache reflects: every change up to it is in
    /// the cache. Read it before reading the cache: the cache is at least that new.
    pub fn revision(&self) -> u64 {
        self.inner.revision.load(Ordering::Acquire)
    }

    /// Changes from now on. A receiver that falls behind gets `Lagged` and must treat it
    /// as [`Change::Resynced`].
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    pub fn resource(&self) -> &'static ResourceType {
        self.inner.rt
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectKey, Arc<Value>>> {
        // A poisoned lock only means a panic elsewhere mid-insert of a whole Arc; the map
        // itself is consistent.
        self.inner.objects.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectKey, Arc<Value>>> {
        self.objects.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn list_and_watch(
        &self,
        cluster: &dyn Cluster,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<(), ApiError> {
        let mut list = cluster.list(self.rt, namespace, params).await?;
        let resource_version = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
        let items = match list["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        };
        let fresh: HashMap<ObjectKey, Arc<Value>> = items
            .into_iter()
            .map(|mut item| {
                // List items carry no type meta; cached objects should.
                item["apiVersion"] = self.rt.api_version().into();
                item["kind"] = self.rt.kind.into();
                (ObjectKey::of(&item), Arc::new(item))
            })
            .collect();
        *self.write() = fresh;
        self.advance(&resource_version);
        self.synced.send_replace(true);
        let _ = self.changes.send(Change::Resynced);

        self.watch_from(cluster, namespace, params, resource_version).await
    }

    /// Follows changes from `resource_version`; a watch the server ends (a timeout) is
    /// started again from the last revision seen. Returns only with an error.
    async fn watch_from(
        &self,
        cluster: &dyn Cluster,
        namespace: Option<&str>,
        params: &ListParams,
        mut resource_version: String,
    ) -> Result<(), ApiError> {
        loop {
            let mut watch = cluster.watch(self.rt, namespace, params, &resource_version).await?;
            while let Some(event) = watch.next().await {
                let event = event?;
                if let Some(rv) = event.object["metadata"]["resourceVersion"].as_str() {
                    resource_version = rv.to_string();
                }
                self.apply(event);
            }
        }
    }

    /// Records that the cache reflects `resource_version` (after writing the cache).
    fn advance(&self, resource_version: &str) {
        if let Ok(revision) = resource_version.parse::<u64>() {
            self.revision.fetch_max(revision, Ordering::AcqRel);
        }
    }

    fn apply(&self, event: crate::WatchEvent) {
        let object = Arc::new(event.object);
        let revision = object["metadata"]["resourceVersion"].as_str().map(str::to_owned);
        let change = match event.event_type {
            EventType::Bookmark => {
                if let Some(revision) = &revision {
                    self.advance(revision);
                }
                return;
            }
            EventType::Added | EventType::Modified => {
                self.write().insert(ObjectKey::of(&object), object.clone());
                Change::Applied(object)
            }
            EventType::Deleted => {
                self.write().remove(&ObjectKey::of(&object));
                Change::Deleted(object)
            }
        };
        if let Some(revision) = &revision {
            self.advance(revision);
        }
        let _ = self.changes.send(change);
    }
}
