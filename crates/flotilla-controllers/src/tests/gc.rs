use super::*;
use crate::meta;

fn replica_set(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": pod_template(name, "hello.wasm")},
    })
}

async fn count_pods(cluster: &TestCluster) -> usize {
    list(cluster.cluster.as_ref(), "v1", "Pod").await.len()
}

#[tokio::test]
async fn deleting_a_deployment_in_the_background_deletes_its_replica_sets_and_pods() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template("web", "hello.wasm")},
    });
    create(&cluster, d).await;
    wait_for("3 pods", || async { (count_pods(&cluster).await == 3).then_some(()) }).await;
    delete(&cluster, "apps/v1", "Deployment", "web", None).await;
    wait_for("everything gone", || async {
        let rss = list(cluster.cluster.as_ref(), "apps/v1", "ReplicaSet").await;
        (rss.is_empty() && count_pods(&cluster).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn foreground_deletion_removes_the_dependents_first() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, replica_set("web", 3)).await;
    wait_for("3 pods", || async { (count_pods(&cluster).await == 3).then_some(()) }).await;
    let pending = delete(&cluster, "apps/v1", "ReplicaSet", "web", Some("Foreground")).await;
    assert_eq!(meta::finalizers(&pending), ["foregroundDeletion"]);
    // The owner stays while any of its pods does.
    wait_for("the replica set gone", || async {
        let rs = get(&cluster, "apps/v1", "ReplicaSet", "web").await;
        let pods = count_pods(&cluster).await;
        assert!(rs.is_some() || pods == 0, "the owner went before its {pods} pods");
        rs.is_none().then_some(())
    })
    .await;
    assert_eq!(count_pods(&cluster).await, 0);
}

#[tokio::test]
async fn orphan_deletion_leaves_the_dependents_without_their_owner() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, replica_set("web", 2)).await;
    wait_for("2 pods", || async { (count_pods(&cluster).await == 2).then_some(()) }).await;
    delete(&cluster, "apps/v1", "ReplicaSet", "web", Some("Orphan")).await;
    wait_for("the replica set gone", || async {
        get(&cluster, "apps/v1", "ReplicaSet", "web").await.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pods = list(cluster.cluster.as_ref(), "v1", "Pod").await;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| meta::owner_references(p).is_empty()), "{pods:?}");
}

#[tokio::test]
async fn an_object_whose_owner_is_gone_is_collected_and_a_live_owner_is_respected() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let owner = create(
        &cluster,
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "owner"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x.wasm"}]}}}}),
    )
    .await;
    let pod = |name: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": uid}]},
            "spec": {"containers": [{"name": "c", "image": "x.wasm"}]}})
    };
    let live_uid = owner["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    create(&cluster, pod("kept", &live_uid)).await;
    create(&cluster, pod("dangling", "no-such-uid")).await;
    wait_for("the dangling pod collected", || async {
        get(&cluster, "v1", "Pod", "dangling").await.is_none().then_some(())
    })
    .await;
    assert!(get(&cluster, "v1", "Pod", "kept").await.is_some());
}
