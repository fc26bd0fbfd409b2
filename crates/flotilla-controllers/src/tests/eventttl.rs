//! Events expire after the TTL, counted from their last write.

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
    // Written now with an occurrence an hour old (a recorder's clock is off): it lives
    // its TTL from the write all the same, then goes.
    let written = std::time::Instant::now();
    create(&cluster, event("skewed", now - jiff::SignedDuration::from_secs(3600))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get(&cluster, "v1", "Event", "skewed").await.is_some(), "an event stays a TTL after its write");
    wait_for("the event gone after its TTL", || async {
        get(&cluster, "v1", "Event", "skewed").await.is_none().then_some(())
    })
    .await;
    assert!(written.elapsed() >= Duration::from_millis(900), "gone after {:?}", written.elapsed());
}
