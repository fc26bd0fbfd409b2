//! Events expire after the TTL, counted from their last occurrence.

use super::*;

#[tokio::test]
async fn events_go_once_older_than_the_ttl() {
    let cluster = start_cluster().await;
    let mut config = test_config();
    config.select(&["eventttl".to_string()]).expect("a known controller");
    config.event_ttl = Duration::from_secs(1);
    let _controller = AbortOnDrop(tokio::spawn(run(cluster.cluster.clone(), config)));
    let now = jiff::Timestamp::now();
    let event = |name: &str, last: jiff::Timestamp| {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": "m", "type": "Normal",
            "firstTimestamp": crate::meta::format_time(last), "lastTimestamp": crate::meta::format_time(last)})
    };
    create(&cluster, event("old", now - jiff::SignedDuration::from_secs(3600))).await;
    create(&cluster, event("fresh", now)).await;
    wait_for("the old event gone", || async { get(&cluster, "v1", "Event", "old").await.is_none().then_some(()) })
        .await;
    assert!(get(&cluster, "v1", "Event", "fresh").await.is_some(), "a fresh event stays within its TTL");
    wait_for("the fresh event gone after its second", || async {
        get(&cluster, "v1", "Event", "fresh").await.is_none().then_some(())
    })
    .await;
}
