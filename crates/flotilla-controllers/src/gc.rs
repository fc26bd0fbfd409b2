//! The garbage collector, after kube-controller-manager's: deletes objects whose owners
//! are gone (background cascading deletion), and runs the `foregroundDeletion` (delete
//! the dependents first, wait for those that block their owner's deletion) and `orphan`
//! (strip the owner's references from the dependents) finalizers the API server puts on
//! objects deleted with those propagation policies.
//!
//! Unlike kube's, it keeps no graph: dependents are found by scanning the informers'
//! caches of the kinds it covers, and an owner missing from a cache is looked up in the
//! API before anything is deleted (the cache may just not have seen it yet). Owners of
//! kinds it does not cover are assumed to exist.

use crate::error::{Error, Result};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_api::Reason;
use flotilla_client::{Cluster, DeleteParams, Informer, Patch};
use serde_json::{Value, json};
use std::fmt;
use std::sync::Arc;

/// The kinds covered besides Pod, ReplicaSet and Deployment.
pub(crate) const EXTRA_KINDS: &[(&str, &str)] = &[
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("v1", "Service"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
];

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// An object of one of the covered kinds (by its index in the informers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GcKey {
    kind: usize,
    namespace: String,
    name: String,
    /// For logs only: the kind's name.
    kind_name: &'static str,
}

impl fmt::Display for GcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind_name, self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
struct Kinds(Arc<Vec<Informer>>);

impl Kinds {
    fn key(&self, kind: usize, object: &Value) -> GcKey {
        self.key_of(kind, meta::namespace(object), meta::name(object))
    }

    fn key_of(&self, kind: usize, namespace: &str, name: &str) -> GcKey {
        let kind_name = self.0.get(kind).map_or("", |i| i.resource().kind);
        GcKey { kind, namespace: namespace.to_string(), name: name.to_string(), kind_name }
    }

    /// The index of the kind an owner reference names.
    fn index_of(&self, reference: &Value) -> Option<usize> {
        let kind = reference["kind"].as_str()?;
        let group = reference["apiVersion"].as_str().map(|v| v.rsplit_once('/').map_or("", |(g, _)| g));
        self.0.iter().position(|i| i.resource().kind == kind && group.is_none_or(|g| g == i.resource().group))
    }

    /// Every cached object in `namespace` with an owner reference to `owner_uid`.
    fn dependents(&self, namespace: &str, owner_uid: &str) -> Vec<(usize, Arc<Value>)> {
        if owner_uid.is_empty() {
            return Vec::new();
        }
        let mut found = Vec::new();
        for (kind, informer) in self.0.iter().enumerate() {
            let objects = informer.filter(|o| {
                meta::namespace(o) == namespace && meta::owner_references(o).iter().any(|r| r["uid"] == owner_uid)
            });
            found.extend(objects.into_iter().map(|o| (kind, o)));
        }
        found
    }
}

#[derive(Debug)]
pub(crate) struct GarbageCollector {
    cluster: Arc<dyn Cluster>,
    kinds: Kinds,
}

/// What became of an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Gone, or replaced by another object of the same name.
    Dangling,
    /// Being deleted in the foreground: its dependents go first.
    Waiting,
}

impl GarbageCollector {
    /// Runs until dropped, over the objects of `kinds`.
    pub(crate) async fn run(cluster: Arc<dyn Cluster>, kinds: Vec<Informer>, config: RunnerConfig) {
        let kinds = Kinds(Arc::new(kinds));
        let all: AllKeys<GcKey> = {
            let kinds = kinds.clone();
            Arc::new(move || {
                let mut keys = Vec::new();
                for (kind, informer) in kinds.0.iter().enumerate() {
                    keys.extend(informer.list().iter().map(|o| kinds.key(kind, o)));
                }
                keys
            })
        };
        // A dependent the collector fails on is told so (it is the object being deleted).
        let object_of = {
            let kinds = kinds.clone();
            Arc::new(move |key: &GcKey| kinds.0.get(key.kind)?.get(&key.namespace, &key.name))
        };
        let mut controller =
            Controller::new("garbage-collector", all, config).reports_failures_of(object_of, cluster.clone());
        for (kind, informer) in kinds.0.iter().enumerate() {
            controller = controller.watches(informer.clone(), mapper(kinds.clone(), kind));
        }
        controller.run(Arc::new(GarbageCollector { cluster, kinds })).await;
    }

    fn rt(&self, kind: usize) -> Option<&'static flotilla_api::ResourceType> {
        self.kinds.0.get(kind).map(Informer::resource)
    }

    async fn owner_state(&self, namespace: &str, reference: &Value) -> Result<OwnerState> {
        let Some(kind) = self.kinds.index_of(reference) else { return Ok(OwnerState::Solid) };
        let (Some(name), Some(uid)) = (reference["name"].as_str(), reference["uid"].as_str()) else {
            return Ok(OwnerState::Solid);
        };
        let state = |owner: &Value| {
            if meta::uid(owner) != uid {
                OwnerState::Dangling
            } else if meta::is_terminating(owner) && meta::finalizers(owner).contains(&FOREGROUND) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            }
        };
        if let Some(owner) = self.kinds.0[kind].get(namespace, name)
            && meta::uid(&owner) == uid
        {
            return Ok(state(&owner));
        }
        // The cache may lag: ask the API before calling an owner gone.
        let Some(rt) = self.rt(kind) else { return Ok(OwnerState::Solid) };
        match self.cluster.get(rt, Some(namespace), name).await {
            Ok(owner) => Ok(state(&owner)),
            Err(error) if error.reason == Reason::NotFound => Ok(OwnerState::Dangling),
            Err(source) => Err(Error::api(format!("looking up owner {} {namespace}/{name}", rt.kind), source)),
        }
    }

    async fn owner_states(&self, namespace: &str, object: &Value) -> Result<Vec<OwnerState>> {
        let mut states = Vec::new();
        for reference in meta::owner_references(object) {
            states.push(self.owner_state(namespace, reference).await?);
        }
        Ok(states)
    }

    async fn patch_metadata(&self, kind: usize, object: &Value, metadata: Value, what: &str) -> Result<()> {
        let Some(rt) = self.rt(kind) else { return Ok(()) };
        let mut metadata = metadata;
        metadata["resourceVersion"] = json!(meta::resource_version(object));
        let patch = Patch::Merge(json!({ "metadata": metadata }));
        let (namespace, name) = (meta::namespace(object), meta::name(object));
        match self.cluster.patch(rt, Some(namespace), name, &patch, None).await {
            Ok(_) => Ok(()),
            Err(error) if error.reason == Reason::NotFound => Ok(()),
            Err(source) => Err(Error::api(format!("{what} of {} {namespace}/{name}", rt.kind), source)),
        }
    }

    async fn delete(&self, kind: usize, object: &Value, policy: &str) -> Result<()> {
        let Some(rt) = self.rt(kind) else { return Ok(()) };
        let (namespace, name) = (meta::namespace(object), meta::name(object));
        tracing::debug!(object = %format!("{namespace}/{name}"), kind = rt.kind, policy, "deleting");
        let params = DeleteParams {
            propagation_policy: Some(policy.to_string()),
            precondition_uid: Some(meta::uid(object).to_string()),
            grace_period_seconds: None,
        };
        match self.cluster.delete(rt, Some(namespace), name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if matches!(error.reason, Reason::NotFound | Reason::Conflict) => Ok(()),
            Err(source) => Err(Error::api(format!("deleting {} {namespace}/{name}", rt.kind), source)),
        }
    }

    async fn remove_finalizer(&self, kind: usize, object: &Value, finalizer: &str) -> Result<()> {
        let rest: Vec<&str> = meta::finalizers(object).into_iter().filter(|f| *f != finalizer).collect();
        let rest = if rest.is_empty() { Value::Null } else { json!(rest) };
        self.patch_metadata(kind, object, json!({ "finalizers": rest }), "removing a finalizer").await
    }

    /// The `orphan` finalizer: the dependents lose their reference to `object`.
    async fn orphan_dependents(&self, object: &Value) -> Result<()> {
        let owner_uid = meta::uid(object);
        for (kind, dependent) in self.kinds.dependents(meta::namespace(object), owner_uid) {
            let references: Vec<&Value> =
                meta::owner_references(&dependent).iter().filter(|r| r["uid"] != owner_uid).collect();
            let references = if references.is_empty() { Value::Null } else { json!(references) };
            self.patch_metadata(kind, &dependent, json!({ "ownerReferences": references }), "orphaning").await?;
        }
        Ok(())
    }

    /// The `foregroundDeletion` finalizer: deletes the dependents; whether some that
    /// block the owner's deletion remain.
    async fn delete_dependents(&self, object: &Value) -> Result<bool> {
        let owner_uid = meta::uid(object);
        let dependents = self.kinds.dependents(meta::namespace(object), owner_uid);
        let mut blocked = false;
        for (kind, dependent) in &dependents {
            let blocks = meta::owner_references(dependent)
                .iter()
                .any(|r| r["uid"] == owner_uid && r["blockOwnerDeletion"] == true);
            blocked |= blocks;
            if !meta::is_terminating(dependent) {
                self.delete(*kind, dependent, self.cascade_policy(*kind)).await?;
            }
        }
        Ok(blocked)
    }

    /// Pods have no dependents: they go in the background, everything else waits for its
    /// own dependents.
    fn cascade_policy(&self, kind: usize) -> &'static str {
        if self.rt(kind).is_some_and(|rt| rt.kind == "Pod") { "Background" } else { "Foreground" }
    }
}

impl Reconciler<GcKey> for GarbageCollector {
    async fn reconcile(&self, key: &GcKey) -> Result<Action> {
        let Some(object) = self.kinds.0.get(key.kind).and_then(|i| i.get(&key.namespace, &key.name)) else {
            return Ok(Action::AwaitChange);
        };
        if meta::is_terminating(&object) {
            let finalizers = meta::finalizers(&object);
            if finalizers.contains(&ORPHAN) {
                self.orphan_dependents(&object).await?;
                self.remove_finalizer(key.kind, &object, ORPHAN).await?;
            } else if finalizers.contains(&FOREGROUND) && !self.delete_dependents(&object).await? {
                self.remove_finalizer(key.kind, &object, FOREGROUND).await?;
            }
            return Ok(Action::AwaitChange);
        }
        if meta::owner_references(&object).is_empty() {
            return Ok(Action::AwaitChange);
        }
        let mut states = self.owner_states(&key.namespace, &object).await?;
        let mut object = (*object).clone();
        if !states.contains(&OwnerState::Solid) {
            // About to delete: decide again on the object as it is now, not as cached
            // (its owner references may have been removed, by the orphan finalizer say).
            let Some(rt) = self.rt(key.kind) else { return Ok(Action::AwaitChange) };
            object = match self.cluster.get(rt, Some(&key.namespace), &key.name).await {
                Ok(live) if meta::uid(&live) == meta::uid(&object) => live,
                Ok(_) => return Ok(Action::AwaitChange),
                Err(error) if error.reason == Reason::NotFound => return Ok(Action::AwaitChange),
                Err(source) => return Err(Error::api(format!("reading {key}"), source)),
            };
            if meta::owner_references(&object).is_empty() || meta::is_terminating(&object) {
                return Ok(Action::AwaitChange);
            }
            states = self.owner_states(&key.namespace, &object).await?;
        }
        let references = meta::owner_references(&object);
        if states.contains(&OwnerState::Solid) {
            if states.iter().any(|s| *s != OwnerState::Solid) {
                let solid: Vec<&Value> =
                    references.iter().zip(&states).filter(|(_, s)| **s == OwnerState::Solid).map(|(r, _)| r).collect();
                self.patch_metadata(key.kind, &object, json!({ "ownerReferences": solid }), "dropping gone owners")
                    .await?;
            }
            return Ok(Action::AwaitChange);
        }
        let policy = if states.contains(&OwnerState::Waiting) {
            self.cascade_policy(key.kind)
        } else if meta::finalizers(&object).contains(&ORPHAN) {
            "Orphan"
        } else {
            "Background"
        };
        self.delete(key.kind, &object, policy).await?;
        Ok(Action::AwaitChange)
    }
}

/// A changed object concerns itself; once it is deleted or being deleted, also its
/// dependents (their owner may be gone) and its owners (one may wait for it).
fn mapper(kinds: Kinds, kind: usize) -> Mapper<GcKey> {
    Arc::new(move |object, deleted| {
        let namespace = meta::namespace(object);
        let mut keys = Vec::new();
        if !deleted {
            keys.push(kinds.key(kind, object));
        }
        if deleted || meta::is_terminating(object) {
            for (dependent_kind, dependent) in kinds.dependents(namespace, meta::uid(object)) {
                keys.push(kinds.key(dependent_kind, &dependent));
            }
            for reference in meta::owner_references(object) {
                if let (Some(owner_kind), Some(name)) = (kinds.index_of(reference), reference["name"].as_str()) {
                    keys.push(kinds.key_of(owner_kind, namespace, name));
                }
            }
        }
        keys
    })
}
