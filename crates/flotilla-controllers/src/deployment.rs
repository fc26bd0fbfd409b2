//! The Deployment controller, after kube-controller-manager's: ReplicaSets named
//! `<deployment>-<pod-template-hash>`, revisions, RollingUpdate and Recreate, proportional
//! scaling, pausing, revision history clean-up, and status with the `Available` and
//! `Progressing` conditions (kubectl's `rollout status` reads them).
//!
//! One reconcile works on a copy of the deployment: ReplicaSet writes happen as it goes
//! (each with the ReplicaSet's resourceVersion as a precondition, so a stale cache ends in
//! a conflict and a retry, never a wrong scale); the deployment's status and revision
//! annotation are written once at the end, when they changed.

mod rollout;
pub(crate) mod util;

use crate::claim::{self, Owner};
use crate::error::Result;
use crate::events::Recorder;
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use crate::written::Written;
use flotilla_client::{Cluster, Informer, ObjectKey, resource};
use std::sync::Arc;

const COMPONENT: &str = "deployment-controller";

#[derive(Debug)]
pub(crate) struct DeploymentController {
    cluster: Arc<dyn Cluster>,
    deployments: Informer,
    replica_sets: Informer,
    pods: Informer,
    recorder: Recorder,
    /// The deployment writes the cache has not shown yet.
    written: Written,
}

impl DeploymentController {
    /// Runs the controller until dropped.
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        deployments: Informer,
        replica_sets: Informer,
        pods: Informer,
        config: RunnerConfig,
    ) {
        let controller = Arc::new(DeploymentController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            deployments: deployments.clone(),
            replica_sets: replica_sets.clone(),
            pods: pods.clone(),
            written: Written::default(),
        });
        let all: AllKeys<ObjectKey> = {
            let deployments = deployments.clone();
            Arc::new(move || deployments.list().iter().map(|d| ObjectKey::of(d)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|d, _| vec![ObjectKey::of(d)]);
        let rs_to_owner = crate::replicaset::owner_mapper(deployments.clone(), "Deployment");
        // Recreate waits for the old pods to be gone: a pod's deletion wakes its
        // deployment (through its replica set).
        let pod_to_deployment: Mapper<ObjectKey> = {
            let replica_sets = replica_sets.clone();
            Arc::new(move |pod, deleted| {
                if !deleted {
                    return Vec::new();
                }
                let Some(rs_name) = meta::controller_of(pod).filter(|r| r["kind"] == "ReplicaSet") else {
                    return Vec::new();
                };
                let namespace = meta::namespace(pod);
                let Some(rs) = rs_name["name"].as_str().and_then(|name| replica_sets.get(namespace, name)) else {
                    return Vec::new();
                };
                meta::controller_of(&rs)
                    .filter(|r| r["kind"] == "Deployment")
                    .and_then(|r| r["name"].as_str())
                    .map(|name| vec![ObjectKey::new(namespace, name)])
                    .unwrap_or_default()
            })
        };
        Controller::new("deployment", all, config)
            .reports_failures(&deployments, controller.cluster.clone())
            .watches(deployments, own)
            .watches(replica_sets, rs_to_owner)
            .watches(pods, pod_to_deployment)
            .run(controller)
            .await;
    }
}

impl Reconciler<ObjectKey> for DeploymentController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(deployment) = self.deployments.get(&key.namespace, &key.name) else {
            self.written.forget(key);
            return Ok(Action::AwaitChange);
        };
        if self.written.is_stale(key, meta::resource_version(&deployment)) {
            // Our last write of the deployment is on its way to the cache, and will
            // trigger this key again: working from the copy it replaced could only
            // conflict.
            return Ok(Action::AwaitChange);
        }
        let selector = match meta::selector(&deployment) {
            Ok(Some(selector)) => selector,
            Ok(None) => {
                let message = "This deployment is selecting all pods. A non-empty selector is required.".to_string();
                self.recorder.event(&deployment, crate::events::EventSeverity::Warning, "SelectingAll", message);
                return Ok(Action::AwaitChange);
            }
            Err(error) => {
                tracing::warn!(%error, "invalid selector; ignoring the deployment");
                return Ok(Action::AwaitChange);
            }
        };
        let uid = meta::uid(&deployment).to_string();
        let candidates =
            self.replica_sets.filter(|rs| meta::namespace(rs) == key.namespace && claim::is_candidate(&uid, rs));
        let owner = Owner { object: &deployment, api_version: "apps/v1", kind: "Deployment", selector: &selector };
        let owned = claim::claim(self.cluster.as_ref(), resource("apps/v1", "ReplicaSet"), &owner, candidates).await?;
        let mut rollout = rollout::Rollout::new(self, deployment, owned);
        rollout.sync().await
    }
}
