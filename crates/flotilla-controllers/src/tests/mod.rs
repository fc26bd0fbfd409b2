//! The controllers against a real API server in process (its `LocalCluster`), through the
//! same objects and watches as in `flotilla server`. There is no node agent: a fake
//! kubelet here marks pods Running and Ready, and pods no node runs are deleted at once.

mod cronjob;
mod deployment;
mod disruption;
mod endpointslice;
mod eventttl;
mod gc;
mod hpa;
mod pipeline;
mod replicaset;
mod scaletozero;
mod serviceaccount;

use crate::{ControllersConfig, RunnerConfig, run};
use flotilla_apiserver::{Config, LocalCluster, Running};
use flotilla_client::{Cluster, DeleteParams, ListParams, Patch, resource};
use flotilla_store::{RedbStore, RedbStoreOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct TestCluster {
    pub(crate) cluster: Arc<dyn Cluster>,
    _server: Running,
    _dir: tempfile::TempDir,
}

pub(crate) async fn start_cluster() -> TestCluster {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default()).expect("a store");
    let config = Config::new(dir.path());
    let server = flotilla_apiserver::start(config, Arc::new(store)).await.expect("the API server starts");
    let cluster: LocalCluster = server.cluster.with_field_manager("controllers-test");
    TestCluster { cluster: Arc::new(cluster), _server: server, _dir: dir }
}

/// Quick retries, so that conflicts do not slow the tests down.
pub(crate) fn test_config() -> ControllersConfig {
    let runner =
        RunnerConfig { workers: 8, backoff_base: Duration::from_millis(5), backoff_max: Duration::from_millis(500) };
    ControllersConfig {
        replica_sets: runner,
        deployments: runner,
        garbage_collector: runner,
        ..ControllersConfig::default()
    }
}

/// Starts every controller; they stop when the handle is aborted or dropped with the test.
pub(crate) fn spawn_controllers(cluster: &TestCluster) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(run(cluster.cluster.clone(), test_config())))
}

pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A fake kubelet: marks pending pods for which `ready` holds Running and Ready.
pub(crate) fn spawn_kubelet(cluster: &TestCluster, ready: fn(&Value) -> bool) -> AbortOnDrop {
    let cluster = cluster.cluster.clone();
    AbortOnDrop(tokio::spawn(async move {
        loop {
            // Concurrently, as many node agents would.
            let mut writes = tokio::task::JoinSet::new();
            for pod in list(cluster.as_ref(), "v1", "Pod").await {
                if pod["status"]["phase"] == "Pending" && pod["metadata"]["deletionTimestamp"].is_null() && ready(&pod)
                {
                    let cluster = cluster.clone();
                    writes.spawn(async move { mark_ready(cluster.as_ref(), &pod).await.is_ok() });
                }
            }
            while writes.join_next().await.is_some() {}
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
}

pub(crate) async fn mark_ready(cluster: &dyn Cluster, pod: &Value) -> Result<Value, flotilla_api::ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": flotilla_api::timestamp_now()}]}});
    cluster.patch(resource("v1", "Pod"), Some(namespace), name, &Patch::Merge(status), Some("status")).await
}

pub(crate) async fn list(cluster: &dyn Cluster, api_version: &str, kind: &str) -> Vec<Value> {
    let list = cluster.list(resource(api_version, kind), Some("default"), &ListParams::default()).await;
    list.ok().and_then(|l| l["items"].as_array().cloned()).unwrap_or_default()
}

pub(crate) async fn get(cluster: &TestCluster, api_version: &str, kind: &str, name: &str) -> Option<Value> {
    cluster.cluster.get(resource(api_version, kind), Some("default"), name).await.ok()
}

pub(crate) async fn create(cluster: &TestCluster, object: Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    cluster.cluster.create(resource(&api_version, &kind), Some("default"), &object).await.expect("created")
}

pub(crate) async fn patch(cluster: &TestCluster, api_version: &str, kind: &str, name: &str, patch: Value) -> Value {
    cluster
        .cluster
        .patch(resource(api_version, kind), Some("default"), name, &Patch::Merge(patch), None)
        .await
        .expect("patched")
}

pub(crate) async fn delete(
    cluster: &TestCluster,
    api_version: &str,
    kind: &str,
    name: &str,
    policy: Option<&str>,
) -> Value {
    let params = DeleteParams { propagation_policy: policy.map(str::to_string), ..Default::default() };
    cluster.cluster.delete(resource(api_version, kind), Some("default"), name, &params).await.expect("deleted")
}

/// Active pods (not being deleted, not finished).
pub(crate) async fn active_pods(cluster: &TestCluster) -> Vec<Value> {
    list(cluster.cluster.as_ref(), "v1", "Pod").await.into_iter().filter(crate::meta::is_active_pod).collect()
}

/// Polls `check` until it answers `Some` (20 s at most).
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn events_of(cluster: &TestCluster, name: &str) -> Vec<Value> {
    let params = ListParams::fields(format!("involvedObject.name={name}"));
    let list = cluster.cluster.list(resource("v1", "Event"), Some("default"), &params).await.expect("events listed");
    list["items"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn pod_template(app: &str, image: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "app", "image": image}]}})
}

pub(crate) fn owner_names(object: &Value) -> Vec<String> {
    crate::meta::owner_references(object).iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect()
}
