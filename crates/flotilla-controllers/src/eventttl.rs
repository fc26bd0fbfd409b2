//! Events expire: each core/v1 Event is deleted once its last write is older than the
//! TTL, as kube-apiserver's `--event-ttl` (1 h by default) puts each write of an Event
//! under an etcd lease of that length. The loop is level-triggered: it reads the times
//! the server stamped on the Events, so a restart loses nothing.

use crate::meta;
use flotilla_client::{Cluster, DeleteParams, Informer, resource};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// When an Event was last written, by the server's clock: its creation or the latest
/// of its `managedFields` times (each write stamps its manager's). The times a client
/// wrote (`lastTimestamp`, `eventTime`…) don't count: a recorder with a skewed clock
/// must not make its Events vanish at once.
fn last_written(event: &Value) -> Option<Timestamp> {
    let created = event["metadata"]["creationTimestamp"].as_str();
    let writes = event["metadata"]["managedFields"].as_array().into_iter().flatten().map(|f| f["time"].as_str());
    std::iter::once(created).chain(writes).flatten().filter_map(meta::parse_time).max()
}

/// When an Event expires: a TTL after its last write. The stamps are whole seconds, cut
/// down: the write was within the second after, so that second is added (an Event may
/// outlive its TTL by up to a second, never fall short of it).
fn expiry(event: &Value, ttl: SignedDuration) -> Option<Timestamp> {
    last_written(event)?.checked_add(ttl.checked_add(SignedDuration::from_secs(1))?).ok()
}

/// Deletes expired Events until dropped.
pub(crate) async fn run(cluster: Arc<dyn Cluster>, events: Informer, ttl: Duration) {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::from_hours(1));
    let mut changes = events.subscribe();
    events.synced().await;
    loop {
        let now = Timestamp::now();
        let mut next: Option<Timestamp> = None;
        for event in events.list() {
            match expiry(&event, ttl) {
                Some(at) if at <= now => {
                    let params = DeleteParams {
                        precondition_uid: Some(meta::uid(&event).to_string()),
                        ..DeleteParams::default()
                    };
                    let rt = resource("v1", "Event");
                    if let Err(error) =
                        cluster.delete(rt, Some(meta::namespace(&event)), meta::name(&event), &params).await
                        && !matches!(error.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Conflict)
                    {
                        tracing::debug!(%error, "deleting an expired event");
                    }
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        let wait = next
            .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60))
            + Duration::from_millis(10);
        // Wake for the earliest expiry, for a new Event that expires sooner (one can be
        // written with an old time), or when the cache is rebuilt.
        let mut deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                change = changes.recv() => match change {
                    Ok(flotilla_client::Change::Applied(event)) => {
                        if let Some(at) = expiry(&event, ttl) {
                            let until = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
                            deadline = deadline.min(tokio::time::Instant::now() + until + Duration::from_millis(10));
                        }
                    }
                    Ok(flotilla_client::Change::Deleted(_)) => {}
                    Ok(flotilla_client::Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_lives_from_its_last_write() {
        let ttl = SignedDuration::from_hours(1);
        let event = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [
                {"manager": "a", "time": "2026-01-01T00:30:00Z"}, {"manager": "b", "time": "2026-01-01T00:10:00Z"}]},
            "lastTimestamp": "2025-01-01T00:00:00Z", "eventTime": "2027-01-01T00:00:00.000000Z"});
        assert_eq!(
            expiry(&event, ttl),
            "2026-01-01T01:30:01Z".parse().ok(),
            "the latest write, not the client's times"
        );
        let created_only = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(expiry(&created_only, ttl), "2026-01-01T01:00:01Z".parse().ok());
        assert_eq!(expiry(&json!({}), ttl), None);
    }
}
