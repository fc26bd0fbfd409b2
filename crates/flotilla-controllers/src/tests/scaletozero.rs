//! Deployments annotated `flotilla.dev/scale-to-zero` sleep once idle, without an HPA.

use super::hpa::{FakeMetrics, replicas, spawn_with_metrics};
use super::*;

fn sleepy(name: &str, idle: &str) -> Value {
    let template = pod_template(name, "hello-http");
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name,
            "annotations": {"flotilla.dev/scale-to-zero": "true", "flotilla.dev/scale-to-zero-idle": idle}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}})
}

#[tokio::test]
async fn an_annotated_deployment_goes_to_zero_after_its_idle_time_and_not_before() {
    let cluster = start_cluster().await;
    let metrics = Arc::new(FakeMetrics::default());
    let _controllers = spawn_with_metrics(&cluster, metrics.clone());
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    // Serving: it stays up however long.
    metrics.set("requests_per_second", 3.0);
    create(&cluster, sleepy("web", "500ms")).await;
    // Another one an HPA owns: the HPA decides, not this controller.
    create(&cluster, sleepy("owned", "100ms")).await;
    create(
        &cluster,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "owned"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owned"},
                "minReplicas": 1, "maxReplicas": 1,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "10"}}}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(replicas(&cluster).await, 1, "a busy deployment stays up");

    // Idle from now: down to zero, but not before its 500 ms.
    metrics.set("requests_per_second", 0.0);
    let idle_from = tokio::time::Instant::now();
    wait_for("zero replicas", || async { (replicas(&cluster).await == 0).then_some(()) }).await;
    assert!(idle_from.elapsed() >= Duration::from_millis(450), "asleep after {:?}", idle_from.elapsed());
    // Events are written on the side: the scale-down is told soon after.
    wait_for("the ScaledToZero event", || async {
        events_of(&cluster, "web").await.iter().any(|e| e["reason"] == "ScaledToZero").then_some(())
    })
    .await;
    let owned = get(&cluster, "apps/v1", "Deployment", "owned").await.expect("owned");
    assert_eq!(owned["spec"]["replicas"], 1, "the HPA's target is the HPA's");
}
