use super::*;
use crate::meta;

fn replica_set(name: &str, replicas: i64, min_ready: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                 "selector": {"matchLabels": {"app": name}}, "template": pod_template(name, "hello.wasm")},
    })
}

async fn pods_of(cluster: &TestCluster, rs: &str) -> Vec<Value> {
    active_pods(cluster).await.into_iter().filter(|p| owner_names(p) == [rs]).collect()
}

async fn wait_pods(cluster: &TestCluster, rs: &str, count: usize) -> Vec<Value> {
    wait_for(&format!("{count} pods of {rs}"), || async {
        let pods = pods_of(cluster, rs).await;
        (pods.len() == count).then_some(pods)
    })
    .await
}

#[tokio::test]
async fn a_replica_set_keeps_its_replicas_replaces_deleted_pods_and_scales() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    let rs = create(&cluster, replica_set("web", 3, 0)).await;
    let pods = wait_pods(&cluster, "web", 3).await;
    for pod in &pods {
        assert!(
            meta::name(pod).starts_with("web-") && meta::name(pod).len() == "web-".len() + 5,
            "{}",
            meta::name(pod)
        );
        let reference = &meta::owner_references(pod)[0];
        assert_eq!(reference["uid"], rs["metadata"]["uid"]);
        assert_eq!(
            (reference["controller"].as_bool(), reference["blockOwnerDeletion"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(reference["kind"], "ReplicaSet");
    }
    let status = wait_for("the status", || async {
        let rs = get(&cluster, "apps/v1", "ReplicaSet", "web").await?;
        (rs["status"]["availableReplicas"] == 3).then(|| rs["status"].clone())
    })
    .await;
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["readyReplicas"], 3);
    assert_eq!(status["fullyLabeledReplicas"], 3);
    assert_eq!(status["observedGeneration"], 1);

    let victim = meta::name(&pods[0]).to_string();
    delete(&cluster, "v1", "Pod", &victim, None).await;
    let replaced = wait_for("a replacement", || async {
        let pods = pods_of(&cluster, "web").await;
        (pods.len() == 3 && pods.iter().all(|p| meta::name(p) != victim)).then_some(pods)
    })
    .await;
    assert_eq!(replaced.len(), 3);

    patch(&cluster, "apps/v1", "ReplicaSet", "web", json!({"spec": {"replicas": 5}})).await;
    wait_pods(&cluster, "web", 5).await;
    patch(&cluster, "apps/v1", "ReplicaSet", "web", json!({"spec": {"replicas": 1}})).await;
    wait_pods(&cluster, "web", 1).await;
    wait_for("status after scaling down", || async {
        let rs = get(&cluster, "apps/v1", "ReplicaSet", "web").await?;
        (rs["status"]["replicas"] == 1 && rs["status"]["observedGeneration"] == 3).then_some(())
    })
    .await;
    let events = events_of(&cluster, "web").await;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"SuccessfulCreate") && reasons.contains(&"SuccessfulDelete"), "{reasons:?}");
    assert!(events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.starts_with("Created pod: web-"))));
}

#[tokio::test]
async fn a_replica_set_adopts_orphans_and_releases_pods_that_stop_matching() {
    let cluster = start_cluster().await;
    let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "app", "image": "hello.wasm"}]}});
    create(&cluster, orphan).await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, replica_set("api", 2, 0)).await;
    let pods = wait_pods(&cluster, "api", 2).await;
    assert!(pods.iter().any(|p| meta::name(p) == "stray"), "the orphan was adopted");

    patch(&cluster, "v1", "Pod", "stray", json!({"metadata": {"labels": {"app": "elsewhere"}}})).await;
    wait_for("the pod released", || async {
        let pod = get(&cluster, "v1", "Pod", "stray").await?;
        meta::owner_references(&pod).is_empty().then_some(())
    })
    .await;
    let pods = wait_pods(&cluster, "api", 2).await;
    assert!(pods.iter().all(|p| meta::name(p) != "stray"));
}

#[tokio::test]
async fn failed_pods_are_deleted_and_replaced() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, replica_set("jobby", 2, 0)).await;
    let pods = wait_pods(&cluster, "jobby", 2).await;
    let failed = meta::name(&pods[0]).to_string();
    let status = json!({"status": {"phase": "Failed"}});
    cluster
        .cluster
        .patch(resource("v1", "Pod"), Some("default"), &failed, &Patch::Merge(status), Some("status"))
        .await
        .expect("status patched");
    wait_for("the failed pod replaced and deleted", || async {
        let pods = pods_of(&cluster, "jobby").await;
        let gone = get(&cluster, "v1", "Pod", &failed).await.is_none();
        (gone && pods.len() == 2).then_some(())
    })
    .await;
}

/// Scaling to many replicas at once never creates more pods than asked for, however many
/// events arrive while the creations are in flight.
#[tokio::test]
async fn a_burst_of_events_does_not_over_create() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    let started = tokio::time::Instant::now();
    create(&cluster, replica_set("burst", 200, 0)).await;
    let most = std::sync::atomic::AtomicUsize::new(0);
    wait_for("200 available", || async {
        let pods = list(cluster.cluster.as_ref(), "v1", "Pod").await;
        most.fetch_max(pods.len(), std::sync::atomic::Ordering::Relaxed);
        let rs = get(&cluster, "apps/v1", "ReplicaSet", "burst").await?;
        (rs["status"]["availableReplicas"] == 200).then_some(())
    })
    .await;
    eprintln!("replica set 0 -> 200 available (fake kubelet): {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pods = list(cluster.cluster.as_ref(), "v1", "Pod").await;
    assert_eq!(pods.len(), 200);
    let most = most.into_inner();
    assert!(most <= 200, "saw {most} pods");
}
