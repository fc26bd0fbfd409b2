//! A PodDisruptionBudget's status follows its pods, and a percentage counts what their
//! Deployment wants, not just the pods there are.

use super::*;

#[tokio::test]
async fn a_budget_counts_healthy_pods_against_the_deployments_scale() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    // Pods come up Ready except the ones labelled sick.
    let _kubelet = spawn_kubelet(&cluster, |pod| pod["metadata"]["labels"]["sick"].is_null());
    create(
        &cluster,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": pod_template("web", "hello-http")}}),
    )
    .await;
    create(
        &cluster,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
        "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .await;
    let status_is = |want: Value| {
        let cluster = &cluster;
        async move {
            wait_for(&format!("the budget's status {want}"), || async {
                let budget = get(cluster, "policy/v1", "PodDisruptionBudget", "web").await?;
                let status = &budget["status"];
                let seen = json!({"expected": status["expectedPods"], "desired": status["desiredHealthy"],
                    "healthy": status["currentHealthy"], "allowed": status["disruptionsAllowed"]});
                (seen == want).then_some(budget)
            })
            .await
        }
    };
    // 4 wanted, 25% may be down: 3 must stay healthy, so 1 may go.
    let budget = status_is(json!({"expected": 4, "desired": 3, "healthy": 4, "allowed": 1})).await;
    let allowed = crate::meta::condition(&budget, "DisruptionAllowed").cloned().unwrap_or_default();
    assert_eq!((&allowed["status"], &allowed["reason"]), (&json!("True"), &json!("SufficientPods")));
    assert_eq!(budget["status"]["observedGeneration"], budget["metadata"]["generation"]);

    // Scaled to 8: 6 must stay, so 2 may go.
    patch(&cluster, "apps/v1", "Deployment", "web", json!({"spec": {"replicas": 8}})).await;
    status_is(json!({"expected": 8, "desired": 6, "healthy": 8, "allowed": 2})).await;

    // A pod it selects that never becomes Ready counts as there, not as healthy; with
    // minAvailable as a number the pods there are are what is expected.
    create(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sick", "labels": {"app": "web", "sick": "yes"}},
        "spec": {"containers": [{"name": "app", "image": "hello-http"}]}}),
    )
    .await;
    patch(
        &cluster,
        "policy/v1",
        "PodDisruptionBudget",
        "web",
        json!({"spec": {"maxUnavailable": null, "minAvailable": 8}}),
    )
    .await;
    let budget = status_is(json!({"expected": 9, "desired": 8, "healthy": 8, "allowed": 0})).await;
    let allowed = crate::meta::condition(&budget, "DisruptionAllowed").cloned().unwrap_or_default();
    assert_eq!((&allowed["status"], &allowed["reason"]), (&json!("False"), &json!("InsufficientPods")));
}
