//! The pipeline on its own: a reconciler that records what it is asked to do, fed by a
//! ConfigMap informer.

use super::{AbortOnDrop, create, patch, start_cluster, wait_for};
use crate::error::{Error, Result};
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_client::{Informer, ListParams, ObjectKey, resource};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<(ObjectKey, Instant)>>,
    running: Mutex<HashSet<ObjectKey>>,
    max_running: Mutex<usize>,
    overlapped: Mutex<bool>,
    /// Failures left to answer, per key name.
    failures: Mutex<HashMap<String, u32>>,
    /// Requeues left to answer, per key name.
    requeues: Mutex<HashMap<String, u32>>,
    /// Panics left, per key name.
    panics: Mutex<HashMap<String, u32>>,
}

impl Recording {
    fn calls_of(&self, name: &str) -> Vec<Instant> {
        let calls = self.calls.lock().expect("lock");
        calls.iter().filter(|(k, _)| k.name == name).map(|(_, t)| *t).collect()
    }
}

impl Reconciler<ObjectKey> for Recording {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        {
            self.calls.lock().expect("lock").push((key.clone(), Instant::now()));
            let mut running = self.running.lock().expect("lock");
            if !running.insert(key.clone()) {
                *self.overlapped.lock().expect("lock") = true;
            }
            let mut max = self.max_running.lock().expect("lock");
            *max = (*max).max(running.len());
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.running.lock().expect("lock").remove(key);
        if let Some(left) = self.failures.lock().expect("lock").get_mut(&key.name).filter(|l| **l > 0) {
            *left -= 1;
            return Err(Error::api("failing on purpose", flotilla_api::ApiError::internal("boom")));
        }
        let panic = self.panics.lock().expect("lock").get_mut(&key.name).filter(|l| **l > 0).map(|left| *left -= 1);
        if panic.is_some() {
            panic!("reconciling {key} panics on purpose");
        }
        if let Some(left) = self.requeues.lock().expect("lock").get_mut(&key.name).filter(|l| **l > 0) {
            *left -= 1;
            return Ok(Action::Requeue(Duration::from_millis(50)));
        }
        Ok(Action::AwaitChange)
    }
}

fn spawn(cluster: &super::TestCluster, recording: Arc<Recording>, workers: usize) -> AbortOnDrop {
    let informer = Informer::start(cluster.cluster.clone(), resource("v1", "ConfigMap"), None, ListParams::default());
    let all: AllKeys<ObjectKey> = {
        let informer = informer.clone();
        Arc::new(move || informer.list().iter().map(|o| ObjectKey::of(o)).collect())
    };
    let mapper: Mapper<ObjectKey> = Arc::new(|o, _| vec![ObjectKey::of(o)]);
    let config = RunnerConfig { workers, backoff_base: Duration::from_millis(40), backoff_max: Duration::from_secs(1) };
    let controller = Controller::new("test", all, config).watches(informer, mapper);
    AbortOnDrop(tokio::spawn(controller.run(recording)))
}

fn config_map(name: &str, value: u32) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value.to_string()}})
}

#[tokio::test]
async fn the_runner_deduplicates_bounds_concurrency_and_never_overlaps_a_key() {
    let cluster = start_cluster().await;
    let recording = Arc::new(Recording::default());
    let _controller = spawn(&cluster, recording.clone(), 2);
    for name in ["a", "b", "c", "d"] {
        create(&cluster, config_map(name, 0)).await;
    }
    for i in 1..=30 {
        patch(&cluster, "v1", "ConfigMap", "a", json!({"data": {"v": i.to_string()}})).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["a", "b", "c", "d"] {
        assert!(!recording.calls_of(name).is_empty(), "{name} reconciled");
    }
    let a = recording.calls_of("a").len();
    assert!(a < 31, "31 changes of a were coalesced into {a} reconciles");
    assert!(!*recording.overlapped.lock().expect("lock"), "a key was reconciled twice at once");
    assert!(*recording.max_running.lock().expect("lock") <= 2);
}

#[tokio::test]
async fn failures_back_off_exponentially_and_requeues_come_back() {
    let cluster = start_cluster().await;
    let recording = Arc::new(Recording::default());
    recording.failures.lock().expect("lock").insert("bad".into(), 3);
    recording.requeues.lock().expect("lock").insert("tick".into(), 3);
    let _controller = spawn(&cluster, recording.clone(), 4);
    create(&cluster, config_map("bad", 0)).await;
    create(&cluster, config_map("tick", 0)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let bad = recording.calls_of("bad");
    assert_eq!(bad.len(), 4, "three failures, then a success");
    let gaps: Vec<Duration> = bad.windows(2).map(|w| w[1] - w[0]).collect();
    // 30 ms of work plus 40, 80, 160 ms of back-off (the first retry may come at once
    // when the creation's event arrived during the first reconcile).
    assert!(gaps[1] >= Duration::from_millis(30 + 80), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(30 + 160), "{gaps:?}");
    assert!(gaps[2] > gaps[1] && gaps[1] > gaps[0], "{gaps:?}");
    assert_eq!(recording.calls_of("tick").len(), 4, "three requeues, then waiting for a change");
}

#[tokio::test]
async fn reconciles_and_the_queue_are_counted_per_controller() -> std::result::Result<(), prometheus::Error> {
    let cluster = start_cluster().await;
    let recording = Arc::new(Recording::default());
    recording.failures.lock().expect("lock").insert("bad".into(), 3);
    recording.requeues.lock().expect("lock").insert("tick".into(), 3);
    let registry = prometheus::Registry::new();
    let metrics = crate::metrics::ControllerMetrics::register(&registry)?;
    let informer = Informer::start(cluster.cluster.clone(), resource("v1", "ConfigMap"), None, ListParams::default());
    let all: AllKeys<ObjectKey> = {
        let informer = informer.clone();
        Arc::new(move || informer.list().iter().map(|o| ObjectKey::of(o)).collect())
    };
    let mapper: Mapper<ObjectKey> = Arc::new(|o, _| vec![ObjectKey::of(o)]);
    let config =
        RunnerConfig { workers: 4, backoff_base: Duration::from_millis(40), backoff_max: Duration::from_secs(1) };
    let controller = Controller::new("test", all, config).watches(informer, mapper);
    let _controller = AbortOnDrop(tokio::spawn(crate::pipeline::with_metrics(
        Some(metrics.clone()),
        flotilla_client::Supervisor::default(),
        controller.run(recording.clone()),
    )));
    create(&cluster, config_map("bad", 0)).await;
    create(&cluster, config_map("tick", 0)).await;
    let (queue, reconciles) = metrics.controller("test");
    // Done: both keys ended in success (bad after 3 failures, tick after 3 requeues).
    wait_for("both keys settled", || async {
        (reconciles.error.get() == 3 && reconciles.requeue_after.get() == 3 && reconciles.success.get() >= 2)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    assert_eq!(reconciles.error.get(), 3);
    assert_eq!(reconciles.requeue_after.get(), 3);
    let calls = recording.calls.lock().expect("lock").len();
    assert_eq!(reconciles.success.get() + 6, calls as u64, "every reconcile has one result");
    assert_eq!(reconciles.duration.get_sample_count(), calls as u64);
    assert_eq!(queue.retries.get(), 3);
    assert!(queue.adds.get() >= 2 + 3 + 3, "the creations, the retries and the requeues: {}", queue.adds.get());
    assert_eq!(queue.depth.get(), 0);
    Ok(())
}

#[tokio::test]
async fn a_reconcile_that_panics_skips_its_object_with_back_off_and_the_controller_goes_on() {
    let cluster = start_cluster().await;
    let recording = Arc::new(Recording::default());
    recording.panics.lock().expect("lock").insert("bomb".into(), 2);
    let registry = prometheus::Registry::new();
    let supervisor = flotilla_client::Supervisor::register(&registry).expect("register");
    let informer = Informer::start(cluster.cluster.clone(), resource("v1", "ConfigMap"), None, ListParams::default());
    let all: AllKeys<ObjectKey> = {
        let informer = informer.clone();
        Arc::new(move || informer.list().iter().map(|o| ObjectKey::of(o)).collect())
    };
    let mapper: Mapper<ObjectKey> = Arc::new(|o, _| vec![ObjectKey::of(o)]);
    let config =
        RunnerConfig { workers: 4, backoff_base: Duration::from_millis(40), backoff_max: Duration::from_secs(1) };
    let controller = Controller::new("test", all, config)
        .reports_failures(&informer, cluster.cluster.clone())
        .watches(informer, mapper);
    let _controller = AbortOnDrop(tokio::spawn(crate::pipeline::with_metrics(
        None,
        supervisor.clone(),
        controller.run(recording.clone()),
    )));
    create(&cluster, config_map("bomb", 0)).await;
    create(&cluster, config_map("fine", 0)).await;
    // The object that panics is retried with back-off until it passes; its neighbour is
    // reconciled meanwhile, and later changes still are.
    wait_for("the panicking object to pass", || async { (recording.calls_of("bomb").len() >= 3).then_some(()) }).await;
    assert!(!recording.calls_of("fine").is_empty());
    assert_eq!(supervisor.panics("controller-reconcile"), 2);
    create(&cluster, config_map("later", 0)).await;
    wait_for("a later object", || async { (!recording.calls_of("later").is_empty()).then_some(()) }).await;
    let bomb = recording.calls_of("bomb");
    assert!(bomb[2] - bomb[1] >= Duration::from_millis(30 + 80), "back-off doubles: {bomb:?}");
    // The skipped object carries Warning Events saying so: after its 1st and 2nd panic.
    let events = wait_for("the Events on the panicking object", || async {
        let list = cluster.cluster.list(resource("v1", "Event"), Some("default"), &ListParams::default()).await.ok()?;
        let events: Vec<serde_json::Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["name"] == "bomb" && e["reason"] == "ReconcilePanicked")
            .cloned()
            .collect();
        (events.len() >= 2).then_some(events)
    })
    .await;
    assert_eq!(events[0]["type"], "Warning");
    assert!(events[0]["message"].as_str().is_some_and(|m| m.contains("the test controller panicked")), "{events:?}");
}

/// An informer's revision says how new its cache is: at least every change it reports,
/// including a deletion, so a reader can tell "not there yet" from "gone".
#[tokio::test]
async fn an_informers_revision_covers_what_its_cache_holds() {
    let cluster = start_cluster().await;
    let informer = Informer::start(cluster.cluster.clone(), resource("v1", "ConfigMap"), None, ListParams::default());
    let revision_of = |object: &serde_json::Value| {
        object["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse::<u64>().ok()).expect("a revision")
    };
    let created = create(&cluster, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})).await;
    wait_for("the informer to hold the ConfigMap", async || informer.get("default", "a")).await;
    assert!(informer.revision() >= revision_of(&created), "{} < {}", informer.revision(), revision_of(&created));
    let updated = patch(&cluster, "v1", "ConfigMap", "a", json!({"data": {"k": "v"}})).await;
    wait_for("the informer to hold the update", async || {
        informer.get("default", "a").filter(|a| a["data"]["k"] == "v")
    })
    .await;
    assert!(informer.revision() >= revision_of(&updated));
    let before_delete = informer.revision();
    cluster
        .cluster
        .delete(resource("v1", "ConfigMap"), Some("default"), "a", &Default::default())
        .await
        .expect("deleted");
    wait_for("the informer to drop the ConfigMap", async || informer.get("default", "a").is_none().then_some(())).await;
    assert!(informer.revision() > before_delete, "a deletion moves the revision on");
}
