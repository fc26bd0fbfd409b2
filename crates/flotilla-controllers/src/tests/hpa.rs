//! The HorizontalPodAutoscaler against the real API server, with a fake kubelet making
//! pods ready and a metrics source the test sets.

use super::*;
use crate::{HpaConfig, PodMetricsSource, PodValues};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// Every pod of the namespace reports the same value of each metric.
#[derive(Debug, Default)]
pub(super) struct FakeMetrics {
    per_pod: Mutex<HashMap<String, f64>>,
    cluster: Mutex<Option<Arc<dyn Cluster>>>,
}

impl FakeMetrics {
    pub(super) fn set(&self, metric: &str, value: f64) {
        self.per_pod.lock().expect("lock").insert(metric.to_string(), value);
    }
}

impl PodMetricsSource for FakeMetrics {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        metric: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<PodValues, String>> + Send + 'a>> {
        Box::pin(async move {
            let value = self.per_pod.lock().expect("lock").get(metric).copied();
            let cluster = self.cluster.lock().expect("lock").clone();
            let (Some(value), Some(cluster)) = (value, cluster) else { return Ok(PodValues::new()) };
            let pods = cluster
                .list(resource("v1", "Pod"), Some(namespace), &ListParams::default())
                .await
                .map_err(|e| e.message)?;
            Ok(pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .map(|name| (name.to_string(), value))
                .collect())
        })
    }
}

pub(super) fn spawn_with_metrics(cluster: &TestCluster, metrics: Arc<FakeMetrics>) -> AbortOnDrop {
    *metrics.cluster.lock().expect("lock") = Some(cluster.cluster.clone());
    let mut config = test_config();
    config.hpa = HpaConfig { sync_period: Duration::from_millis(100), metrics: Some(metrics), ..HpaConfig::default() };
    AbortOnDrop(tokio::spawn(run(cluster.cluster.clone(), config)))
}

fn web(replicas: i64) -> Value {
    let mut template = pod_template("web", "hello-http");
    template["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template}})
}

pub(super) async fn replicas(cluster: &TestCluster) -> i64 {
    get(cluster, "apps/v1", "Deployment", "web").await.and_then(|d| d["spec"]["replicas"].as_i64()).unwrap_or(-1)
}

#[tokio::test]
async fn cpu_load_scales_up_within_bounds_and_idle_scales_back_down() {
    let cluster = start_cluster().await;
    let metrics = Arc::new(FakeMetrics::default());
    let _controllers = spawn_with_metrics(&cluster, metrics.clone());
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    create(&cluster, web(1)).await;
    create(
        &cluster,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1}}}}),
    )
    .await;
    // 90 % of the request against a 50 % target: up, but never past maxReplicas.
    metrics.set("cpu", 0.09);
    wait_for("4 replicas", || async { (replicas(&cluster).await == 4).then_some(()) }).await;
    let hpa = get(&cluster, "autoscaling/v2", "HorizontalPodAutoscaler", "web").await.expect("the hpa");
    assert_eq!(
        hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 90,
        "{}",
        hpa["status"]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(replicas(&cluster).await, 4, "maxReplicas holds");
    let limited = wait_for("ScalingLimited", || async {
        let hpa = get(&cluster, "autoscaling/v2", "HorizontalPodAutoscaler", "web").await?;
        let limited = hpa["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "ScalingLimited")?.clone();
        (limited["status"] == "True").then_some(limited)
    })
    .await;
    assert_eq!(limited["reason"], "TooManyReplicas");

    // Idle: back to minReplicas once the 1 s stabilization window has passed.
    metrics.set("cpu", 0.0);
    let started = tokio::time::Instant::now();
    wait_for("1 replica", || async { (replicas(&cluster).await == 1).then_some(()) }).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "scaled down before the stabilization window");
    let events = events_of(&cluster, "web").await;
    assert!(events.iter().any(|e| e["reason"] == "SuccessfulRescale"), "rescales are told");
}

#[tokio::test]
async fn an_idle_target_with_min_replicas_zero_goes_to_zero_and_stays() {
    let cluster = start_cluster().await;
    let metrics = Arc::new(FakeMetrics::default());
    let _controllers = spawn_with_metrics(&cluster, metrics.clone());
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    create(&cluster, web(2)).await;
    create(
        &cluster,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 0, "maxReplicas": 3,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "10"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    )
    .await;
    metrics.set("requests_per_second", 0.0);
    wait_for("zero replicas", || async { (replicas(&cluster).await == 0).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replicas(&cluster).await, 0, "an idle target stays at zero");
    let hpa = get(&cluster, "autoscaling/v2", "HorizontalPodAutoscaler", "web").await.expect("the hpa");
    let active = hpa["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "ScalingActive");
    assert_eq!(active.map(|c| c["reason"].clone()), Some(json!("ScaledToZero")), "{}", hpa["status"]);
}
