use super::*;
use crate::deployment::util::{REVISION, REVISION_HISTORY};
use crate::meta;

fn deployment(name: &str, replicas: i64, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "strategy": strategy,
                 "selector": {"matchLabels": {"app": name}}, "template": pod_template(name, image)},
    })
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

async fn set_image(cluster: &TestCluster, name: &str, image: &str) {
    let template = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    patch(cluster, "apps/v1", "Deployment", name, template).await;
}

fn condition<'a>(d: &'a Value, kind: &str) -> Option<&'a Value> {
    meta::condition(d, kind)
}

/// Waits until the deployment's rollout is complete, as `kubectl rollout status` judges
/// it, and answers the deployment.
async fn wait_complete(cluster: &TestCluster, name: &str, replicas: i64) -> Value {
    wait_for(&format!("deployment {name} complete"), || async {
        let d = get(cluster, "apps/v1", "Deployment", name).await?;
        let s = &d["status"];
        let done = s["observedGeneration"] == d["metadata"]["generation"]
            && s["updatedReplicas"] == replicas
            && s["replicas"] == replicas
            && s["availableReplicas"] == replicas
            && condition(&d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
        done.then_some(d)
    })
    .await
}

async fn replica_sets(cluster: &TestCluster) -> Vec<Value> {
    list(cluster.cluster.as_ref(), "apps/v1", "ReplicaSet").await
}

#[tokio::test]
async fn a_deployment_becomes_available_through_a_hashed_replica_set() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    create(&cluster, deployment("web", 3, "hello.wasm", rolling(json!("25%"), json!("25%")))).await;
    let d = wait_complete(&cluster, "web", 3).await;
    assert_eq!(meta::annotation(&d, REVISION), Some("1"));
    let available = condition(&d, "Available").cloned().unwrap_or_default();
    assert_eq!(
        (available["status"].as_str(), available["reason"].as_str()),
        (Some("True"), Some("MinimumReplicasAvailable"))
    );
    assert_eq!(available["message"], "Deployment has minimum availability.");
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["status"]["unavailableReplicas"], 0);

    let rss = replica_sets(&cluster).await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or_default().to_string();
    assert!(!hash.is_empty());
    assert_eq!(meta::name(rs), format!("web-{hash}"));
    assert_eq!(rs["spec"]["selector"]["matchLabels"], json!({"app": "web", "pod-template-hash": hash}));
    assert_eq!(rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"], hash);
    assert_eq!(meta::annotation(rs, REVISION), Some("1"));
    assert_eq!(meta::annotation(rs, "deployment.kubernetes.io/desired-replicas"), Some("3"));
    assert_eq!(meta::annotation(rs, "deployment.kubernetes.io/max-replicas"), Some("4"));
    let progressing = condition(&d, "Progressing").cloned().unwrap_or_default();
    assert_eq!(progressing["message"], format!("ReplicaSet \"web-{hash}\" has successfully progressed."));
    let events = events_of(&cluster, "web").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "ScalingReplicaSet"
                && e["message"] == format!("Scaled up replica set web-{hash} to 3")),
        "{events:?}"
    );
}

/// A rolling update watched throughout: never fewer than `replicas - maxUnavailable`
/// ready pods, never more than `replicas + maxSurge` pods; then a rollback to the first
/// template reuses its replica set under a new revision.
#[tokio::test]
async fn a_rolling_update_keeps_its_bounds_and_a_rollback_reuses_the_old_replica_set() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    create(&cluster, deployment("web", 6, "v1.wasm", rolling(json!(2), json!(1)))).await;
    wait_complete(&cluster, "web", 6).await;
    let first_rs = replica_sets(&cluster).await.first().map(|rs| meta::name(rs).to_string()).unwrap_or_default();

    set_image(&cluster, "web", "v2.wasm").await;
    let (mut fewest_ready, mut most_pods) = (usize::MAX, 0);
    let d = loop {
        let pods = active_pods(&cluster).await;
        fewest_ready = fewest_ready.min(pods.iter().filter(|p| meta::is_pod_ready(p)).count());
        most_pods = most_pods.max(pods.len());
        let d = get(&cluster, "apps/v1", "Deployment", "web").await.unwrap_or_default();
        let done = d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["updatedReplicas"] == 6
            && d["status"]["replicas"] == 6
            && d["status"]["availableReplicas"] == 6
            && condition(&d, "Progressing").is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
        if done {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(fewest_ready >= 5, "{fewest_ready} ready pods at one point");
    assert!(most_pods <= 8, "{most_pods} pods at one point");
    assert_eq!(meta::annotation(&d, REVISION), Some("2"));
    let pods = active_pods(&cluster).await;
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "v2.wasm"));
    let old = get(&cluster, "apps/v1", "ReplicaSet", &first_rs).await.expect("the old replica set is kept");
    assert_eq!(old["spec"]["replicas"], 0);
    let events = events_of(&cluster, "web").await;
    assert!(
        events.iter().any(|e| {
            e["message"].as_str().is_some_and(|m| {
                m.starts_with(&format!("Scaled down replica set {first_rs} to ")) && m.contains(" from ")
            })
        }),
        "{events:?}"
    );

    // Rollback, as `kubectl rollout undo` does it: the old template back.
    set_image(&cluster, "web", "v1.wasm").await;
    let d = wait_for("the rollback", || async {
        let d = get(&cluster, "apps/v1", "Deployment", "web").await?;
        let rs = get(&cluster, "apps/v1", "ReplicaSet", &first_rs).await?;
        let done =
            rs["spec"]["replicas"] == 6 && d["status"]["availableReplicas"] == 6 && d["status"]["updatedReplicas"] == 6;
        done.then_some(d)
    })
    .await;
    assert_eq!(meta::annotation(&d, REVISION), Some("3"));
    let rs = get(&cluster, "apps/v1", "ReplicaSet", &first_rs).await.unwrap_or_default();
    assert_eq!(meta::annotation(&rs, REVISION), Some("3"));
    assert_eq!(meta::annotation(&rs, REVISION_HISTORY), Some("1"));
    assert_eq!(replica_sets(&cluster).await.len(), 2, "no third replica set");
}

#[tokio::test]
async fn recreate_scales_the_old_pods_away_before_new_ones_start() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    create(&cluster, deployment("db", 3, "v1.wasm", json!({"type": "Recreate"}))).await;
    wait_complete(&cluster, "db", 3).await;
    set_image(&cluster, "db", "v2.wasm").await;
    let mut mixed = false;
    loop {
        let pods = list(cluster.cluster.as_ref(), "v1", "Pod").await;
        let images: std::collections::HashSet<String> =
            pods.iter().filter_map(|p| p["spec"]["containers"][0]["image"].as_str().map(str::to_string)).collect();
        mixed |= images.len() > 1;
        let d = get(&cluster, "apps/v1", "Deployment", "db").await.unwrap_or_default();
        if d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["updatedReplicas"] == 3
            && d["status"]["availableReplicas"] == 3
            && d["status"]["replicas"] == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(!mixed, "old and new pods ran together");
}

#[tokio::test]
async fn a_stuck_rollout_stops_at_its_progress_deadline_and_old_pods_keep_serving() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    // Pods of the missing image never become ready.
    let _kubelet = spawn_kubelet(&cluster, |p| p["spec"]["containers"][0]["image"] != "missing.wasm");
    let mut d = deployment("web", 4, "v1.wasm", rolling(json!(1), json!(1)));
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    create(&cluster, d).await;
    wait_complete(&cluster, "web", 4).await;
    set_image(&cluster, "web", "missing.wasm").await;
    let d = wait_for("ProgressDeadlineExceeded", || async {
        let d = get(&cluster, "apps/v1", "Deployment", "web").await?;
        condition(&d, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded").then_some(d)
    })
    .await;
    let progressing = condition(&d, "Progressing").cloned().unwrap_or_default();
    assert_eq!(progressing["status"], "False");
    let new_rs = replica_sets(&cluster)
        .await
        .into_iter()
        .find(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"] == "missing.wasm")
        .expect("the new replica set");
    assert_eq!(progressing["message"], format!("ReplicaSet \"{}\" has timed out progressing.", meta::name(&new_rs)));
    let ready = active_pods(&cluster).await.iter().filter(|p| meta::is_pod_ready(p)).count();
    assert!(ready >= 3, "{ready} old pods still ready");
    assert_eq!(condition(&d, "Available").map(|c| c["status"].clone()), Some(json!("True")));
}

#[tokio::test]
async fn scaling_pausing_and_history_limits() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    let mut d = deployment("web", 3, "v1.wasm", rolling(json!("25%"), json!("25%")));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    create(&cluster, d).await;
    wait_complete(&cluster, "web", 3).await;
    for replicas in [10, 0, 2] {
        patch(&cluster, "apps/v1", "Deployment", "web", json!({"spec": {"replicas": replicas}})).await;
        wait_complete(&cluster, "web", replicas).await;
        assert_eq!(active_pods(&cluster).await.len(), usize::try_from(replicas).unwrap_or_default());
    }

    patch(&cluster, "apps/v1", "Deployment", "web", json!({"spec": {"paused": true}})).await;
    set_image(&cluster, "web", "v2.wasm").await;
    let d = wait_for("the paused condition", || async {
        let d = get(&cluster, "apps/v1", "Deployment", "web").await?;
        condition(&d, "Progressing").is_some_and(|c| c["reason"] == "DeploymentPaused").then_some(d)
    })
    .await;
    assert_eq!(condition(&d, "Progressing").map(|c| c["message"].clone()), Some(json!("Deployment is paused")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(replica_sets(&cluster).await.len(), 1, "no rollout while paused");

    patch(&cluster, "apps/v1", "Deployment", "web", json!({"spec": {"paused": false}})).await;
    wait_complete(&cluster, "web", 2).await;
    set_image(&cluster, "web", "v3.wasm").await;
    wait_complete(&cluster, "web", 2).await;
    let rss = wait_for("old history cleaned up", || async {
        let rss = replica_sets(&cluster).await;
        (rss.len() == 2).then_some(rss)
    })
    .await;
    let images: Vec<&str> =
        rss.iter().filter_map(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str()).collect();
    assert!(images.contains(&"v3.wasm") && images.contains(&"v2.wasm"), "{images:?}");
}

/// Scaling a deployment from 0 to many replicas (300; `FLOTILLA_SCALE_REPLICAS` for more),
/// then a rolling update of them all, with the fake kubelet marking pods ready as fast as
/// it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_scales_from_zero_to_many() {
    let replicas: i64 = std::env::var("FLOTILLA_SCALE_REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_kubelet(&cluster, |_| true);
    create(&cluster, deployment("big", 0, "hello.wasm", rolling(json!("25%"), json!("25%")))).await;
    wait_complete(&cluster, "big", 0).await;
    let started = tokio::time::Instant::now();
    patch(&cluster, "apps/v1", "Deployment", "big", json!({"spec": {"replicas": replicas}})).await;
    let count = usize::try_from(replicas).unwrap_or_default();
    wait_for("every pod created", || async {
        (list(cluster.cluster.as_ref(), "v1", "Pod").await.len() >= count).then_some(())
    })
    .await;
    let created = started.elapsed();
    eprintln!("deployment 0 -> {replicas}: pods created in {created:?}");
    wait_complete(&cluster, "big", replicas).await;
    eprintln!(
        "deployment 0 -> {replicas}: pods created in {created:?}, available in {:?} (fake kubelet)",
        started.elapsed()
    );
    let pods = list(cluster.cluster.as_ref(), "v1", "Pod").await;
    assert_eq!(pods.len(), count);

    let started = tokio::time::Instant::now();
    set_image(&cluster, "big", "v2.wasm").await;
    wait_complete(&cluster, "big", replicas).await;
    eprintln!("deployment of {replicas}: rolling update (25%/25%) done in {:?} (fake kubelet)", started.elapsed());
    let pods = active_pods(&cluster).await;
    assert_eq!(pods.len(), count);
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "v2.wasm"));
}
