//! The controller pipeline, written once (after kube-runtime's `Controller`):
//!
//! ```text
//! informers (primary kind, owned and related kinds)
//!   → mappers: a changed object → the keys it concerns (itself, its controller owner…)
//!   → WorkQueue: de-duplicating, delaying, one reconcile per key at a time
//!   → runner: at most `workers` reconciles in flight
//!   → reconcile(key) -> Result<Action>: requeue after, await change, or back off
//! ```
//!
//! The pipeline keeps no state about objects: a reconcile reads the informers' caches
//! and writes through the API, so any number of lost or repeated triggers only cost
//! work. A resync or a lagging feed enqueues every primary key.
//!
//! It also keeps every controller's metrics (see [`crate::metrics`]): its queue's adds,
//! depth and retries, and its reconciles' results and durations. A reconcile that panics
//! does not stop its controller: the object is requeued with its back-off, and the panic
//! logged and counted (`flotilla_task_panics_total{task="controller-reconcile"}`).

use crate::error::Result;
use crate::metrics::{ControllerMetrics, ReconcileMetrics};
use crate::queue::WorkQueue;
use flotilla_client::{Change, Informer, Supervisor};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

tokio::task_local! {
    /// The metrics every pipeline run within [`with_metrics`] counts in. Scoped to
    /// [`crate::run`]'s task rather than passed through each controller's constructor,
    /// so that the controllers (and the `Copy` [`RunnerConfig`] they pass on) need not
    /// know of it: the pipeline alone keeps them.
    static METRICS: ControllerMetrics;
}

tokio::task_local! {
    /// What counts and logs the panics of every pipeline's reconciles and mappers, scoped
    /// as [`METRICS`] is.
    static SUPERVISOR: Supervisor;
}

/// Runs `future` (the controllers) with every pipeline in it counting in `metrics`, and
/// its reconciles' panics in `supervisor`.
pub(crate) async fn with_metrics<F: Future>(
    metrics: Option<ControllerMetrics>,
    supervisor: Supervisor,
    future: F,
) -> F::Output {
    let future = SUPERVISOR.scope(supervisor, future);
    match metrics {
        Some(metrics) => METRICS.scope(metrics, future).await,
        None => future.await,
    }
}

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long even if nothing changes (e.g. when a pod becomes
    /// available after `minReadySeconds`, or a progress deadline passes).
    Requeue(Duration),
    /// Nothing to do until a watched object changes.
    AwaitChange,
}

/// A controller's reconcile function: idempotent, reading caches, writing through the API.
pub(crate) trait Reconciler<K>: Send + Sync + 'static {
    fn reconcile(&self, key: &K) -> impl Future<Output = Result<Action>> + Send;
}

/// The keys a changed object concerns; `deleted` tells a deletion from an add or update.
pub(crate) type Mapper<K> = Arc<dyn Fn(&Value, bool) -> Vec<K> + Send + Sync>;

/// Maps an owned object to its controller of `kind` (by its controller ownerReference).
pub(crate) fn controller_mapper(kind: &'static str) -> Mapper<flotilla_client::ObjectKey> {
    Arc::new(move |object, _| match crate::meta::controller_of(object) {
        Some(owner) if owner["kind"] == kind => owner["name"]
            .as_str()
            .map(|name| vec![flotilla_client::ObjectKey::new(crate::meta::namespace(object), name)])
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

/// Every key of the primary kind: what a resync enqueues.
pub(crate) type AllKeys<K> = Arc<dyn Fn() -> Vec<K> + Send + Sync>;

/// How a controller runs its reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Reconciles in flight at once (of different keys).
    pub workers: usize,
    /// The first wait after a failed reconcile; doubles with each failure in a row…
    pub backoff_base: Duration,
    /// …up to this.
    pub backoff_max: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { workers: 16, backoff_base: Duration::from_millis(20), backoff_max: Duration::from_secs(60) }
    }
}

enum Trigger<K> {
    Keys(Vec<K>),
    All,
}

/// One controller: its name, what triggers it, and how it runs.
pub(crate) struct Controller<K> {
    name: &'static str,
    watches: Vec<(Informer, Mapper<K>)>,
    all_keys: AllKeys<K>,
    config: RunnerConfig,
    reporter: Option<Reporter<K>>,
}

/// A key's object, from the controller's cache.
type ObjectOf<K> = Arc<dyn Fn(&K) -> Option<Arc<Value>> + Send + Sync>;

/// Where a controller says that an object failed it: a Warning Event on the object
/// (`kubectl describe` shows it), besides the log line and the metric.
struct Reporter<K> {
    object: ObjectOf<K>,
    recorder: flotilla_client::EventRecorder,
}

impl<K> Controller<K> {
    /// Records a Warning Event on a key's object (as `object` finds it in the cache) when
    /// its reconcile fails or panics: on the first failure in a row and then at the 2nd,
    /// 4th, 8th…, so a failing object is told about without an Event per retry.
    pub(crate) fn reports_failures_of(
        mut self,
        object: ObjectOf<K>,
        cluster: Arc<dyn flotilla_client::Cluster>,
    ) -> Self {
        self.reporter = Some(Reporter { object, recorder: flotilla_client::EventRecorder::new(cluster, self.name) });
        self
    }
}

impl Controller<flotilla_client::ObjectKey> {
    /// [`reports_failures_of`](Controller::reports_failures_of) the objects of `informer`,
    /// the controller's own kind.
    pub(crate) fn reports_failures(self, informer: &Informer, cluster: Arc<dyn flotilla_client::Cluster>) -> Self {
        let informer = informer.clone();
        self.reports_failures_of(
            Arc::new(move |key: &flotilla_client::ObjectKey| informer.get(&key.namespace, &key.name)),
            cluster,
        )
    }
}

impl<K> Controller<K>
where
    K: Clone + Eq + Hash + Ord + Display + Debug + Send + Sync + 'static,
{
    pub(crate) fn new(name: &'static str, all_keys: AllKeys<K>, config: RunnerConfig) -> Self {
        Controller { name, watches: Vec::new(), all_keys, config, reporter: None }
    }

    /// Triggers on changes of `informer`'s objects, mapped to keys by `mapper`.
    pub(crate) fn watches(mut self, informer: Informer, mapper: Mapper<K>) -> Self {
        self.watches.push((informer, mapper));
        self
    }

    /// Runs until dropped: waits for every informer's first list, reconciles every key
    /// once, then whatever changes.
    pub(crate) async fn run<R: Reconciler<K>>(self, reconciler: Arc<R>) {
        let supervisor = SUPERVISOR.try_with(Supervisor::clone).unwrap_or_default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut forwarders = JoinSet::new();
        for (informer, mapper) in &self.watches {
            // Subscribed before the caches are read, so that nothing is missed.
            let changes = informer.subscribe();
            forwarders.spawn(forward(changes, mapper.clone(), tx.clone(), self.name, supervisor.clone()));
        }
        for (informer, _) in &self.watches {
            informer.synced().await;
        }
        let config = self.config;
        let (queue_metrics, reconciles) = METRICS.try_with(|metrics| metrics.controller(self.name)).ok().unzip();
        let mut queue = WorkQueue::new(config.backoff_base, config.backoff_max).with_metrics(queue_metrics);
        for key in (self.all_keys)() {
            queue.add(key);
        }
        let mut tasks: JoinSet<(K, Result<Action>)> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, K> = HashMap::new();
        tracing::debug!(controller = self.name, "controller started");
        loop {
            let now = Instant::now();
            queue.promote(now);
            while tasks.len() < config.workers.max(1) {
                let Some(key) = queue.pop() else { break };
                let span = tracing::info_span!("reconcile", controller = self.name, object = %key);
                let reconciler = reconciler.clone();
                let task_key = key.clone();
                let duration = reconciles.as_ref().map(|r| r.duration.clone());
                let handle = tasks.spawn(
                    async move {
                        let started = Instant::now();
                        let result = reconciler.reconcile(&task_key).await;
                        if let Some(duration) = duration {
                            duration.observe(started.elapsed().as_secs_f64());
                        }
                        (task_key, result)
                    }
                    .instrument(span),
                );
                running.insert(handle.id(), key);
            }
            let wake_at = queue.next_due().unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                Some(trigger) = rx.recv() => {
                    self.trigger(&mut queue, trigger);
                    while let Ok(trigger) = rx.try_recv() {
                        self.trigger(&mut queue, trigger);
                    }
                }
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let now = Instant::now();
                    let (key, result) = match joined {
                        Ok((id, (key, result))) => {
                            running.remove(&id);
                            (key, Some(result))
                        }
                        Err(error) => match running.remove(&error.id()) {
                            // The object is skipped: requeued with its back-off, the
                            // controller's other objects reconciled meanwhile.
                            Some(key) => {
                                tracing::error!(controller = self.name, object = %key, %error, "reconcile panicked; retrying with back-off");
                                if let Ok(payload) = error.try_into_panic() {
                                    supervisor.panicked("controller-reconcile", payload.as_ref());
                                }
                                (key, None)
                            }
                            None => continue,
                        },
                    };
                    queue.done(&key);
                    if let Some(reconciles) = &reconciles {
                        count(reconciles, result.as_ref());
                    }
                    match result {
                        Some(Ok(Action::AwaitChange)) => queue.forget(&key),
                        Some(Ok(Action::Requeue(after))) => {
                            queue.forget(&key);
                            queue.add_at(key, now + after, now);
                        }
                        Some(Err(error)) => {
                            let wait = queue.failed(&key);
                            let chain = flotilla_client::error_chain(&error);
                            let conflict = error.api_error().is_some_and(|e| e.reason == flotilla_api::Reason::Conflict);
                            if conflict {
                                tracing::debug!(controller = self.name, object = %key, error = %chain, ?wait, "reconcile conflicted; retrying");
                            } else {
                                tracing::warn!(controller = self.name, object = %key, error = %chain, ?wait, "reconcile failed; retrying");
                                self.report(&key, queue.failures(&key), "FailedReconcile", format!(
                                    "the {} controller could not reconcile it: {}; retrying in {wait:?}",
                                    self.name, flotilla_api::limits::truncate(&chain, 1024)
                                ));
                            }
                            queue.add_at(key, now + wait, now);
                        }
                        None => {
                            let wait = queue.failed(&key);
                            self.report(&key, queue.failures(&key), "ReconcilePanicked", format!(
                                "the {} controller panicked on it (a bug: please report it); retrying in {wait:?}",
                                self.name
                            ));
                            queue.add_at(key, now + wait, now);
                        }
                    }
                }
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// A Warning Event on `key`'s object after its `failures`-th failure in a row, when
    /// that is a power of two (see [`Controller::reports_failures`]).
    fn report(&self, key: &K, failures: u32, reason: &str, message: String) {
        let Some(reporter) = &self.reporter else { return };
        if !failures.is_power_of_two() {
            return;
        }
        if let Some(object) = (reporter.object)(key) {
            reporter.recorder.event(&object, flotilla_client::EventSeverity::Warning, reason, message);
        }
    }

    fn trigger(&self, queue: &mut WorkQueue<K>, trigger: Trigger<K>) {
        match trigger {
            Trigger::Keys(keys) => keys.into_iter().for_each(|key| queue.add(key)),
            Trigger::All => (self.all_keys)().into_iter().for_each(|key| queue.add(key)),
        }
    }
}

/// Counts a reconcile by its result (a panic, `None`, is an error).
fn count(metrics: &ReconcileMetrics, result: Option<&Result<Action>>) {
    match result {
        Some(Ok(Action::AwaitChange)) => metrics.success.inc(),
        Some(Ok(Action::Requeue(_))) => metrics.requeue_after.inc(),
        Some(Err(_)) | None => metrics.error.inc(),
    }
}

/// Feeds one informer's changes, as keys, to the runner. Ends when the runner is gone.
/// An object the mapper panics on is logged, counted and skipped.
async fn forward<K>(
    mut changes: tokio::sync::broadcast::Receiver<Change>,
    mapper: Mapper<K>,
    tx: mpsc::UnboundedSender<Trigger<K>>,
    controller: &'static str,
    supervisor: Supervisor,
) {
    let map = |object: &Value, deleted: bool| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mapper(object, deleted))).unwrap_or_else(|payload| {
            let object = format!("{}/{}", crate::meta::namespace(object), object["metadata"]["name"]);
            tracing::error!(controller, %object, "mapping a changed object panicked; skipping it");
            supervisor.panicked("controller-mapper", payload.as_ref());
            Vec::new()
        })
    };
    loop {
        let trigger = match changes.recv().await {
            Ok(Change::Applied(object)) => Trigger::Keys(map(&object, false)),
            Ok(Change::Deleted(object)) => Trigger::Keys(map(&object, true)),
            // Missed changes: every key is reconciled again.
            Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => Trigger::All,
            Err(RecvError::Closed) => return,
        };
        if matches!(&trigger, Trigger::Keys(keys) if keys.is_empty()) {
            continue;
        }
        if tx.send(trigger).is_err() {
            return;
        }
    }
}
