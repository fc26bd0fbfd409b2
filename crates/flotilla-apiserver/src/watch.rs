//! Watch: a stream of newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR`) over the store's watch, filtered by selectors the way
//! kube-apiserver's watch cache filters: an object that stops matching is DELETED for
//! this watcher, one that starts matching is ADDED.

use crate::registry::{Registry, labels_of};
use flotilla_api::{ApiError, FieldSelector, LabelSelector, ResourceType};
use flotilla_store::{EventType, WatchEvent};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

/// A watch request, parsed.
#[derive(Debug, Clone)]
pub struct WatchQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Start after this revision; `None` (or "0") means "send the current state first".
    pub resource_version: Option<u64>,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
    /// Watch-list (`sendInitialEvents=true`): the current state first, then a BOOKMARK
    /// annotated `k8s.io/initial-events-end`, then changes.
    pub send_initial_events: bool,
}

/// Starts a watch and returns the channel its events arrive on, each made by
/// `emit(type, object)` (a JSON line for HTTP, a typed event in process). Errors that
/// happen before the stream starts (a bad selector, a store failure) are returned as
/// such; history that is too old is reported in-stream as an `ERROR` event with a 410
/// Status, as kube-apiserver does, so clients re-list.
pub async fn start<T: Send + 'static>(
    registry: Registry,
    rt: &'static ResourceType,
    namespace: Option<String>,
    query: WatchQuery,
    mut emit: impl FnMut(&'static str, Value) -> T + Send + 'static,
) -> Result<mpsc::Receiver<T>, ApiError> {
    let (tx, rx) = mpsc::channel::<T>(256);
    let store = registry.store().clone();
    let prefix = rt.key_prefix(namespace.as_deref());
    let matches = {
        let labels = query.labels.clone();
        let fields = query.fields.clone();
        move |object: &Value| labels.matches(labels_of(object)) && fields.matches(object)
    };
    // Without selectors every object matches, and the previous one need not be read.
    let selects_all = query.labels.is_empty() && query.fields.is_empty();

    // Where the stream starts, and the synthetic ADDED events of the current state.
    let (start_revision, initial) = match query.resource_version {
        // NotOlderThan: the current state is at least as new as any revision asked for.
        Some(rv) if rv > 0 && !query.send_initial_events => (rv, Vec::new()),
        _ => {
            let list_query = crate::registry::ListQuery {
                labels: query.labels.clone(),
                fields: query.fields.clone(),
                ..Default::default()
            };
            let list = registry.list(rt, namespace.as_deref(), &list_query).await?;
            let revision = list["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse().ok()).unwrap_or(0);
            let items = list["items"].as_array().cloned().unwrap_or_default();
            (revision, items)
        }
    };
    let watcher = match store.watch(&prefix, start_revision).await {
        Ok(watcher) => Some(watcher),
        Err(flotilla_store::Error::Compacted { requested, compacted }) => {
            let status = ApiError::gone(format!("too old resource version: {requested} ({compacted})")).to_status();
            let status = serde_json::to_value(status).unwrap_or_default();
            let _ = tx.send(emit("ERROR", status)).await;
            None
        }
        Err(e) => return Err(ApiError::internal(format!("cannot watch: {e}"))),
    };
    let Some(mut watcher) = watcher else { return Ok(rx) };

    let api_version = rt.api_version();
    let kind = rt.kind;
    let registered = registry.metrics().map(|metrics| metrics.watcher(rt.plural));
    let task = async move {
        // Counted in `apiserver_registered_watchers` until the watch ends.
        let _registered = registered;
        for object in initial {
            if tx.send(emit("ADDED", object)).await.is_err() {
                return;
            }
        }
        if query.send_initial_events {
            let end = json!({"apiVersion": api_version, "kind": kind, "metadata": {
                "resourceVersion": start_revision.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(emit("BOOKMARK", end)).await.is_err() {
                return;
            }
        }
        // `timeoutSeconds` past what the clock can hold is no timeout.
        let deadline = query.timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut last_revision = start_revision;
        let mut bookmarks = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmarks.reset();
        loop {
            let sleep_until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = watcher.next() => match next {
                    Some(Ok(event)) => {
                        last_revision = event.revision();
                        if let Some((event_type, object)) = classify(&registry, &event, selects_all, &matches)
                            && tx.send(emit(event_type, object)).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let status = ApiError::gone(format!("the watch fell behind and must be restarted: {e}")).to_status();
                        let _ = tx.send(emit("ERROR", serde_json::to_value(status).unwrap_or_default())).await;
                        return;
                    }
                    None => return,
                },
                _ = bookmarks.tick(), if query.allow_bookmarks => {
                    let bookmark = json!({"apiVersion": api_version, "kind": kind,
                        "metadata": {"resourceVersion": last_revision.to_string()}});
                    if tx.send(emit("BOOKMARK", bookmark)).await.is_err() {
                        return;
                    }
                }
                () = sleep_until_deadline => return,
                () = tx.closed() => return,
            }
        }
    };
    tokio::spawn(tracing::Instrument::in_current_span(task));
    Ok(rx)
}

/// What a store event is for a watcher with these selectors, if anything: its type and
/// object.
fn classify(
    registry: &Registry,
    event: &WatchEvent,
    selects_all: bool,
    matches: &impl Fn(&Value) -> bool,
) -> Option<(&'static str, Value)> {
    let object = registry.decode_event(&event.kv).ok()?;
    let event_type = match event.event_type {
        EventType::Delete => matches(&object).then_some("DELETED")?,
        EventType::Put => {
            let now = matches(&object);
            let before = match &event.prev {
                Some(_) if selects_all => true,
                Some(prev) => registry.decode_event(prev).is_ok_and(|prev| matches(&prev)),
                None => false,
            };
            match (before, now) {
                (false, true) => "ADDED",
                (true, true) => "MODIFIED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
    };
    Some((event_type, object))
}

/// How many decoded objects [`DecodeCache`] keeps: enough for the events in flight to
/// every watcher at once.
const DECODED_KEPT: usize = 64;

/// The objects of the latest watch events, decoded once: a kind with ten watchers (the
/// informers of the scheduler, the controllers, the node agent, the proxies) would
/// otherwise parse every event's bytes ten times, on the path of every write's reaction.
/// A key's revision names one version of it, so an entry never goes stale.
#[derive(Debug, Default)]
pub(crate) struct DecodeCache {
    recent: Mutex<VecDeque<(u64, String, Arc<Value>)>>,
}

impl DecodeCache {
    /// A copy of the object `kv` holds, decoded by `decode` unless it was already.
    pub(crate) fn get_or_decode(
        &self,
        kv: &flotilla_store::KeyValue,
        decode: impl FnOnce() -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let hit = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent
                .iter()
                .find(|(revision, key, _)| *revision == kv.mod_revision && *key == kv.key)
                .map(|(_, _, object)| object.clone())
        };
        if let Some(object) = hit {
            return Ok((*object).clone());
        }
        let object = decode()?;
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() >= DECODED_KEPT {
            recent.pop_front();
        }
        recent.push_back((kv.mod_revision, kv.key.clone(), Arc::new(object.clone())));
        Ok(object)
    }
}
