//! The scheduler against a real API server in process (its [`LocalCluster`]): bindings,
//! reports, retries and restarts, through the same objects and watches as in
//! `flotilla server`.

use crate::{SchedulerConfig, Scoring, run};
use flotilla_apiserver::{Config, LocalCluster, Running};
use flotilla_client::{Cluster, ListParams, resource};
use flotilla_store::{RedbStore, RedbStoreOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct TestCluster {
    cluster: Arc<dyn Cluster>,
    _server: Running,
    _dir: tempfile::TempDir,
}

async fn start_cluster() -> TestCluster {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default()).expect("a store");
    let config = Config::new(dir.path());
    let server = flotilla_apiserver::start(config, Arc::new(store)).await.expect("the API server starts");
    let cluster: LocalCluster = server.cluster.with_field_manager("scheduler-test");
    TestCluster { cluster: Arc::new(cluster), _server: server, _dir: dir }
}

fn spawn_scheduler(cluster: &TestCluster, scoring: Scoring) -> tokio::task::JoinHandle<()> {
    let config = SchedulerConfig { scoring, ..SchedulerConfig::default() };
    tokio::spawn(run(cluster.cluster.clone(), config))
}

async fn create_node(cluster: &TestCluster, name: &str, cpu: &str, labels: Value) {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    cluster.cluster.create(resource("v1", "Node"), None, &node).await.expect("node created");
}

async fn create_pod(cluster: &TestCluster, name: &str, cpu: &str, extra_spec: Value) {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "app.wasm", "resources": {"requests": {"cpu": cpu}}}]},
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    cluster.cluster.create(resource("v1", "Pod"), Some("default"), &pod).await.expect("pod created");
}

async fn get_pod(cluster: &TestCluster, name: &str) -> Value {
    cluster.cluster.get(resource("v1", "Pod"), Some("default"), name).await.expect("pod exists")
}

/// Polls `check` on the pod until it holds (10 s at most).
async fn wait_for_pod(cluster: &TestCluster, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1000 {
        let pod = get_pod(cluster, name).await;
        if check(&pod) {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pod {name} never {what}: {}", get_pod(cluster, name).await);
}

async fn wait_bound(cluster: &TestCluster, name: &str) -> String {
    let pod = wait_for_pod(cluster, name, "bound", |p| p["spec"]["nodeName"].is_string()).await;
    pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string()
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

async fn wait_unschedulable(cluster: &TestCluster, name: &str) -> Value {
    let pod = wait_for_pod(cluster, name, "reported unschedulable", |p| {
        condition(p, "PodScheduled").is_some_and(|c| c["status"] == "False")
    })
    .await;
    condition(&pod, "PodScheduled").cloned().unwrap_or_default()
}

async fn events_of(cluster: &TestCluster, pod: &str) -> Vec<Value> {
    let params = ListParams::fields(format!("involvedObject.name={pod}"));
    let list = cluster.cluster.list(resource("v1", "Event"), Some("default"), &params).await.expect("events listed");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn binds_pending_pods_and_spreads_them() {
    let cluster = start_cluster().await;
    for name in ["n1", "n2", "n3"] {
        create_node(&cluster, name, "4", json!({})).await;
    }
    let scheduler = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    for i in 0..6 {
        create_pod(&cluster, &format!("p{i}"), "500m", json!({})).await;
    }
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        *per_node.entry(wait_bound(&cluster, &format!("p{i}")).await).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{per_node:?}");
    let pod = get_pod(&cluster, "p0").await;
    assert_eq!(condition(&pod, "PodScheduled").map(|c| c["status"].clone()), Some(json!("True")));
    scheduler.abort();
}

#[tokio::test]
async fn most_allocated_packs_pods_onto_one_node() {
    let cluster = start_cluster().await;
    create_node(&cluster, "n1", "4", json!({})).await;
    create_node(&cluster, "n2", "4", json!({})).await;
    let scheduler = spawn_scheduler(&cluster, Scoring::MostAllocated);
    create_pod(&cluster, "first", "1", json!({})).await;
    let first = wait_bound(&cluster, "first").await;
    for name in ["second", "third"] {
        create_pod(&cluster, name, "1", json!({})).await;
        assert_eq!(wait_bound(&cluster, name).await, first);
    }
    scheduler.abort();
}

#[tokio::test]
async fn an_unschedulable_pod_is_reported_and_retried_when_a_node_appears() {
    let cluster = start_cluster().await;
    create_node(&cluster, "small", "1", json!({"zone": "a"})).await;
    create_node(&cluster, "elsewhere", "16", json!({"zone": "b"})).await;
    let scheduler = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    create_pod(&cluster, "big", "8", json!({"nodeSelector": {"zone": "a"}})).await;
    let scheduled = wait_unschedulable(&cluster, "big").await;
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(
        scheduled["message"],
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector."
    );
    // The Event is written after the condition: give it a moment on a busy machine.
    let mut events = events_of(&cluster, "big").await;
    for _ in 0..500 {
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        events = events_of(&cluster, "big").await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "FailedScheduling");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["message"], scheduled["message"]);

    create_node(&cluster, "roomy", "16", json!({"zone": "a"})).await;
    assert_eq!(wait_bound(&cluster, "big").await, "roomy");
    let pod = get_pod(&cluster, "big").await;
    assert_eq!(condition(&pod, "PodScheduled").map(|c| c["status"].clone()), Some(json!("True")));
    scheduler.abort();
}

#[tokio::test]
async fn an_unschedulable_pod_fits_once_another_pod_is_deleted() {
    let cluster = start_cluster().await;
    create_node(&cluster, "n1", "2", json!({})).await;
    let scheduler = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    create_pod(&cluster, "hog", "2", json!({})).await;
    wait_bound(&cluster, "hog").await;
    create_pod(&cluster, "waiting", "1", json!({})).await;
    let scheduled = wait_unschedulable(&cluster, "waiting").await;
    assert_eq!(scheduled["message"], "0/1 nodes are available: 1 Insufficient cpu.");
    let params = flotilla_client::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    cluster.cluster.delete(resource("v1", "Pod"), Some("default"), "hog", &params).await.expect("deleted");
    assert_eq!(wait_bound(&cluster, "waiting").await, "n1");
    scheduler.abort();
}

#[tokio::test]
async fn taints_and_readiness_keep_pods_off_unless_tolerated() {
    let cluster = start_cluster().await;
    let tainted = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "gpu"},
        "spec": {"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    });
    cluster.cluster.create(resource("v1", "Node"), None, &tainted).await.expect("node created");
    let not_ready = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "down"},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                   "conditions": [{"type": "Ready", "status": "False"}]},
    });
    cluster.cluster.create(resource("v1", "Node"), None, &not_ready).await.expect("node created");
    let scheduler = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    create_pod(&cluster, "plain", "100m", json!({})).await;
    let scheduled = wait_unschedulable(&cluster, "plain").await;
    assert_eq!(
        scheduled["message"],
        "0/2 nodes are available: 1 node(s) had untolerated taint {gpu: true}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    );
    let tolerations = json!([{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]);
    create_pod(&cluster, "tolerant", "100m", json!({"tolerations": tolerations})).await;
    assert_eq!(wait_bound(&cluster, "tolerant").await, "gpu");
    scheduler.abort();
}

#[tokio::test]
async fn pods_of_other_schedulers_are_left_alone() {
    let cluster = start_cluster().await;
    create_node(&cluster, "n1", "4", json!({})).await;
    let scheduler = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    create_pod(&cluster, "theirs", "100m", json!({"schedulerName": "someone-else"})).await;
    create_pod(&cluster, "ours", "100m", json!({})).await;
    wait_bound(&cluster, "ours").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let theirs = get_pod(&cluster, "theirs").await;
    assert!(theirs["spec"]["nodeName"].is_null(), "{theirs}");
    assert!(condition(&theirs, "PodScheduled").is_none(), "{theirs}");
    scheduler.abort();
}

#[tokio::test]
async fn a_restarted_scheduler_counts_what_is_already_bound() {
    let cluster = start_cluster().await;
    create_node(&cluster, "n1", "2", json!({})).await;
    let first = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    for name in ["a", "b"] {
        create_pod(&cluster, name, "1", json!({})).await;
    }
    wait_bound(&cluster, "a").await;
    wait_bound(&cluster, "b").await;
    first.abort();
    let _ = first.await;

    let second = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    create_pod(&cluster, "c", "1", json!({})).await;
    let scheduled = wait_unschedulable(&cluster, "c").await;
    assert_eq!(scheduled["message"], "0/1 nodes are available: 1 Insufficient cpu.");
    second.abort();
}

#[tokio::test]
async fn an_extended_resource_no_node_has_is_reported() {
    let cluster = start_cluster().await;
    create_node(&cluster, "n1", "4", json!({})).await;
    let scheduler = spawn_scheduler(&cluster, Scoring::LeastAllocated);
    let widgets = json!({"requests": {"example.com/widget": "3"}, "limits": {"example.com/widget": "3"}});
    create_pod(
        &cluster,
        "greedy",
        "100m",
        json!({"containers": [{"name": "app", "image": "app.wasm", "resources": widgets}]}),
    )
    .await;
    let scheduled = wait_unschedulable(&cluster, "greedy").await;
    assert_eq!(scheduled["message"], "0/1 nodes are available: 1 Insufficient example.com/widget.");
    // Other pods are not held up by it.
    create_pod(&cluster, "fine", "100m", json!({})).await;
    wait_bound(&cluster, "fine").await;
    scheduler.abort();
}

/// The value of the sample `name{labels}` in `registry`'s exposition, if present.
fn sample(registry: &prometheus::Registry, series: &str) -> Option<f64> {
    let mut text = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).ok()?;
    String::from_utf8(text).ok()?.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn attempts_and_pending_pods_are_counted() {
    let cluster = start_cluster().await;
    create_node(&cluster, "small", "1", json!({})).await;
    let registry = prometheus::Registry::new();
    let config = SchedulerConfig { metrics: registry.clone(), ..SchedulerConfig::default() };
    let scheduler = tokio::spawn(run(cluster.cluster.clone(), config));
    create_pod(&cluster, "fits", "500m", json!({})).await;
    create_pod(&cluster, "too-big", "8", json!({})).await;
    wait_bound(&cluster, "fits").await;
    wait_unschedulable(&cluster, "too-big").await;
    for _ in 0..500 {
        if sample(&registry, "scheduler_pending_pods{queue=\"unschedulable\"}") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sample(&registry, "scheduler_schedule_attempts_total{result=\"scheduled\"}"), Some(1.0));
    assert!(sample(&registry, "scheduler_schedule_attempts_total{result=\"unschedulable\"}") >= Some(1.0));
    assert_eq!(sample(&registry, "scheduler_schedule_attempts_total{result=\"error\"}"), Some(0.0));
    assert_eq!(
        sample(&registry, "scheduler_scheduling_attempt_duration_seconds_count{result=\"scheduled\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&registry, "scheduler_pending_pods{queue=\"unschedulable\"}"), Some(1.0));
    assert_eq!(sample(&registry, "scheduler_pending_pods{queue=\"active\"}"), Some(0.0));
    scheduler.abort();
}
