//! Adoption and release through ownerReferences, after kube's `ControllerRefManager`:
//! an owner claims the objects it controls that its selector still matches, adopts
//! matching orphans (no controller) and releases what it controls but no longer
//! matches. An owner being deleted neither adopts nor releases.

use crate::error::{Error, Result};
use crate::meta;
use flotilla_api::{LabelSelector, Reason, ResourceType};
use flotilla_client::{Cluster, Patch};
use serde_json::{Value, json};
use std::sync::Arc;

/// Who claims: the owner object, its kind, and its selector.
pub(crate) struct Owner<'a> {
    pub(crate) object: &'a Value,
    pub(crate) api_version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) selector: &'a LabelSelector,
}

/// Whether `owner` should look at `candidate` at all: it controls it, or nobody does.
pub(crate) fn is_candidate(owner_uid: &str, candidate: &Value) -> bool {
    match meta::controller_of(candidate) {
        Some(reference) => reference["uid"] == owner_uid,
        None => true,
    }
}

/// The objects among `candidates` that `owner` controls after adopting and releasing.
pub(crate) async fn claim(
    cluster: &dyn Cluster,
    rt: &'static ResourceType,
    owner: &Owner<'_>,
    candidates: Vec<Arc<Value>>,
) -> Result<Vec<Arc<Value>>> {
    let owner_uid = meta::uid(owner.object);
    let owner_terminating = meta::is_terminating(owner.object);
    let mut claimed = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let matches = meta::selects(owner.selector, &candidate);
        match meta::controller_of(&candidate) {
            Some(reference) if reference["uid"] == owner_uid => {
                if matches {
                    claimed.push(candidate);
                } else if !owner_terminating {
                    release(cluster, rt, owner_uid, &candidate).await?;
                }
            }
            Some(_) => {}
            None => {
                if matches
                    && !owner_terminating
                    && !meta::is_terminating(&candidate)
                    && let Some(adopted) = adopt(cluster, rt, owner, &candidate).await?
                {
                    claimed.push(Arc::new(adopted));
                }
            }
        }
    }
    Ok(claimed)
}

/// Adds the owner's controller reference; `None` if the object is gone.
async fn adopt(
    cluster: &dyn Cluster,
    rt: &'static ResourceType,
    owner: &Owner<'_>,
    object: &Value,
) -> Result<Option<Value>> {
    let mut references = meta::owner_references(object).to_vec();
    references.push(meta::controller_reference(owner.object, owner.api_version, owner.kind));
    let patch = json!({"metadata": {"ownerReferences": references, "resourceVersion": meta::resource_version(object)}});
    let key = flotilla_client::ObjectKey::of(object);
    tracing::debug!(object = %key, kind = rt.kind, "adopting");
    match cluster.patch(rt, Some(&key.namespace), &key.name, &Patch::Merge(patch), None).await {
        Ok(adopted) => Ok(Some(adopted)),
        Err(error) if error.reason == Reason::NotFound => Ok(None),
        Err(source) => Err(Error::api(format!("adopting {} {key}", rt.kind), source)),
    }
}

/// Removes the owner's reference.
async fn release(cluster: &dyn Cluster, rt: &'static ResourceType, owner_uid: &str, object: &Value) -> Result<()> {
    let references: Vec<&Value> = meta::owner_references(object).iter().filter(|r| r["uid"] != owner_uid).collect();
    let references = if references.is_empty() { Value::Null } else { json!(references) };
    let patch = json!({"metadata": {"ownerReferences": references, "resourceVersion": meta::resource_version(object)}});
    let key = flotilla_client::ObjectKey::of(object);
    tracing::debug!(object = %key, kind = rt.kind, "releasing");
    match cluster.patch(rt, Some(&key.namespace), &key.name, &Patch::Merge(patch), None).await {
        Ok(_) => Ok(()),
        Err(error) if error.reason == Reason::NotFound => Ok(()),
        Err(source) => Err(Error::api(format!("releasing {} {key}", rt.kind), source)),
    }
}
