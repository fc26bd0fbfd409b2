//! The scheduling loop: informers on Nodes and Pods feed the [`State`]; pods are taken
//! from its queue in batches and placed; bindings, conditions and Events are written by
//! spawned tasks (bindings at most [`MAX_BINDINGS_IN_FLIGHT`] at a time), whose outcomes
//! come back to the loop over a channel. The loop alone owns the state, so none of it
//! is locked.

use crate::SchedulerConfig;
use crate::error::{Error, Result};
use crate::metrics::{Attempts, SchedulerMetrics};
use crate::report;
use crate::state::{Decision, State};
use flotilla_api::Reason;
use flotilla_client::{Change, Cluster, Informer, ListParams, ObjectKey, Patch, resource};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tracing::Instrument as _;

/// Bindings in flight at once. Each is a store write; the store commits concurrent writes
/// together, so more in flight means larger commits, up to the point where the loop
/// waits on nothing.
const MAX_BINDINGS_IN_FLIGHT: usize = 128;
/// Condition patches and Events in flight at once.
const MAX_REPORTS_IN_FLIGHT: usize = 16;
/// Pods placed before the loop looks at its feeds again.
const BATCH: usize = 256;
/// Changes taken from a feed before the loop places pods again.
const MAX_CHANGES_AT_ONCE: usize = 4096;
/// Unschedulable pods are retried at most this often when nodes or pods change…
const RETRY_DEBOUNCE: Duration = Duration::from_millis(200);
/// …and at least this often anyway.
const RETRY_PERIOD: Duration = Duration::from_secs(10);
/// The first wait before a pod whose binding failed is tried again; it doubles with each
/// failure in a row up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a spawned write tells the loop.
#[derive(Debug)]
enum Outcome {
    /// The binding was accepted, or the pod was bound already.
    Bound { pod: ObjectKey },
    /// The binding failed; `gone` if the pod no longer exists.
    BindFailed { pod: ObjectKey, node: String, gone: bool },
    /// Recording that the pod is unschedulable failed; it is reported again next time.
    ReportFailed { pod: ObjectKey },
    /// A back-off ended: try the pod again.
    Requeue { pod: ObjectKey },
}

/// An informer and the loop's subscription to its changes.
struct Feed {
    informer: Informer,
    changes: broadcast::Receiver<Change>,
}

impl Feed {
    fn new(informer: Informer) -> Self {
        let changes = informer.subscribe();
        Feed { informer, changes }
    }

    /// After falling behind, a fresh subscription (subscribed before the cache is read,
    /// so nothing is missed) and a resync.
    fn lagged(&mut self) -> Change {
        self.changes = self.informer.subscribe();
        Change::Resynced
    }

    fn try_next(&mut self) -> Option<Change> {
        match self.changes.try_recv() {
            Ok(change) => Some(change),
            Err(TryRecvError::Lagged(_)) => Some(self.lagged()),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }

    async fn next(&mut self) -> Change {
        match self.changes.recv().await {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => self.lagged(),
            // The informer's sender lives as long as `self.informer`: never closed.
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// What woke the loop.
enum Wake {
    Pod(Change),
    Node(Change),
    Outcome(Outcome),
    Timer,
}

/// Runs the scheduler until the task is dropped: mirrors Nodes and Pods, binds each
/// pending pod whose `spec.schedulerName` is `config.scheduler_name`, and reports those
/// no node fits. Failures are logged and retried; nothing ends the loop.
/// A panic of the loop is counted and logged by `config.supervisor`, and the loop starts
/// again from fresh informers after a back-off.
pub async fn run(cluster: Arc<dyn Cluster>, config: SchedulerConfig) {
    // Registered once, outside the loop a panic restarts.
    let metrics = SchedulerMetrics::register(&config.metrics)
        .inspect_err(|error| tracing::error!(%error, "the scheduler's metrics could not be registered"))
        .ok();
    let supervisor = config.supervisor.clone();
    supervisor.run("scheduler", || schedule(cluster.clone(), config.clone(), metrics.clone())).await;
}

/// The scheduling loop [`run`] supervises.
async fn schedule(cluster: Arc<dyn Cluster>, config: SchedulerConfig, metrics: Option<SchedulerMetrics>) {
    let mut nodes = Feed::new(Informer::start(cluster.clone(), resource("v1", "Node"), None, ListParams::default()));
    let mut pods = Feed::new(Informer::start(cluster.clone(), resource("v1", "Pod"), None, ListParams::default()));
    nodes.informer.synced().await;
    pods.informer.synced().await;
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler {
        metrics,
        backing_off: 0,
        state: State::new(&config.scheduler_name, config.scoring),
        cluster,
        config,
        bindings: Arc::new(Semaphore::new(MAX_BINDINGS_IN_FLIGHT)),
        reports: Arc::new(Semaphore::new(MAX_REPORTS_IN_FLIGHT)),
        outcomes: outcomes_tx,
        last_retry: Instant::now(),
    };
    scheduler.state.resync_nodes(nodes.informer.list());
    scheduler.state.resync_pods(pods.informer.list());
    tracing::info!(scheduler = %scheduler.config.scheduler_name, scoring = %scheduler.config.scoring, "scheduler started");

    loop {
        // Everything already there, then place what is queued.
        for _ in 0..MAX_CHANGES_AT_ONCE {
            let Some(change) = nodes.try_next() else { break };
            scheduler.node_change(change, &nodes.informer);
        }
        for _ in 0..MAX_CHANGES_AT_ONCE {
            let Some(change) = pods.try_next() else { break };
            scheduler.pod_change(change, &pods.informer);
        }
        while let Ok(outcome) = outcomes.try_recv() {
            scheduler.outcome(outcome);
        }
        scheduler.retry_if_due(Instant::now());
        scheduler.place_batch();
        scheduler.update_pending();
        if scheduler.state.has_queued() && scheduler.bindings.available_permits() > 0 {
            tokio::task::yield_now().await;
            continue;
        }

        let wake_at = scheduler.retry_due().unwrap_or_else(|| Instant::now() + RETRY_PERIOD);
        let wake = tokio::select! {
            change = pods.next() => Wake::Pod(change),
            change = nodes.next() => Wake::Node(change),
            Some(outcome) = outcomes.recv() => Wake::Outcome(outcome),
            () = tokio::time::sleep_until(wake_at) => Wake::Timer,
        };
        match wake {
            Wake::Pod(change) => scheduler.pod_change(change, &pods.informer),
            Wake::Node(change) => scheduler.node_change(change, &nodes.informer),
            Wake::Outcome(outcome) => scheduler.outcome(outcome),
            Wake::Timer => {}
        }
    }
}

struct Scheduler {
    cluster: Arc<dyn Cluster>,
    config: SchedulerConfig,
    state: State,
    bindings: Arc<Semaphore>,
    reports: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    last_retry: Instant,
    metrics: Option<SchedulerMetrics>,
    /// Pods waiting out a back-off after a failed binding or report.
    backing_off: usize,
}

impl Scheduler {
    fn pod_change(&mut self, change: Change, informer: &Informer) {
        match change {
            Change::Applied(pod) => self.state.apply_pod(pod),
            Change::Deleted(pod) => self.state.delete_pod(&pod),
            Change::Resynced => self.state.resync_pods(informer.list()),
        }
    }

    fn node_change(&mut self, change: Change, informer: &Informer) {
        match change {
            Change::Applied(node) => self.state.apply_node(&node),
            Change::Deleted(node) => self.state.delete_node(&node),
            Change::Resynced => self.state.resync_nodes(informer.list()),
        }
    }

    fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Bound { pod } => self.state.binding_done(&pod),
            Outcome::BindFailed { pod, node, gone } => {
                let failures = self.state.binding_failed(&pod, &node);
                if !gone {
                    self.requeue_later(pod, failures);
                }
            }
            Outcome::ReportFailed { pod } => {
                self.state.report_failed(&pod);
                self.requeue_later(pod, 1);
            }
            Outcome::Requeue { pod } => {
                self.backing_off = self.backing_off.saturating_sub(1);
                self.state.requeue(&pod);
            }
        }
    }

    /// Sets the pending pods gauges.
    fn update_pending(&self) {
        if let Some(metrics) = &self.metrics {
            let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
            metrics.pending_active.set(gauge(self.state.queued_len()));
            metrics.pending_unschedulable.set(gauge(self.state.unschedulable_len()));
            metrics.pending_backoff.set(gauge(self.backing_off));
        }
    }

    /// Queues `pod` again after a back-off that doubles with each failure in a row.
    fn requeue_later(&mut self, pod: ObjectKey, failures: u32) {
        self.backing_off += 1;
        let backoff = INITIAL_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(8)).min(MAX_BACKOFF);
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = outcomes.send(Outcome::Requeue { pod });
        });
    }

    /// When the unschedulable pods are next due for a try, if any wait.
    fn retry_due(&self) -> Option<Instant> {
        if !self.state.has_unschedulable() {
            return None;
        }
        let periodic = self.last_retry + RETRY_PERIOD;
        Some(if self.state.retry_wanted() { periodic.min(self.last_retry + RETRY_DEBOUNCE) } else { periodic })
    }

    fn retry_if_due(&mut self, now: Instant) {
        if self.retry_due().is_some_and(|due| now >= due) {
            self.state.retry_unschedulable();
            self.last_retry = now;
        }
    }

    /// Places up to [`BATCH`] queued pods, as long as bindings may start.
    fn place_batch(&mut self) {
        let mut permit: Option<OwnedSemaphorePermit> = None;
        for _ in 0..BATCH {
            if permit.is_none() {
                match self.bindings.clone().try_acquire_owned() {
                    Ok(acquired) => permit = Some(acquired),
                    Err(_) => return,
                }
            }
            let Some(pod) = self.state.next_pod() else { return };
            let span = tracing::info_span!("schedule", pod = %pod);
            let started = Instant::now();
            let decision = span.in_scope(|| self.state.schedule(&pod));
            match decision {
                None => {}
                Some(Decision::Bind { node, uid }) => {
                    span.in_scope(|| tracing::debug!(%node, "assumed on node, binding"));
                    let Some(permit) = permit.take() else { return };
                    let attempt = Attempt { started, metrics: self.metrics.clone() };
                    let task =
                        bind_and_tell(self.cluster.clone(), pod, uid, node, permit, self.outcomes.clone(), attempt);
                    // One-shot; a panic in it is counted and logged, not lost.
                    let supervisor = self.config.supervisor.clone();
                    tokio::spawn(async move { supervisor.catch("scheduler-binding", task).await }.instrument(span));
                }
                Some(Decision::Unschedulable { message, report }) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.unschedulable.observe(started);
                    }
                    span.in_scope(|| tracing::debug!(%message, "no node fits"));
                    if let Some(object) = report {
                        let task = report_and_tell(
                            self.cluster.clone(),
                            object,
                            message,
                            self.config.scheduler_name.clone(),
                            self.reports.clone(),
                            self.outcomes.clone(),
                        );
                        let supervisor = self.config.supervisor.clone();
                        tokio::spawn(async move { supervisor.catch("scheduler-report", task).await }.instrument(span));
                    }
                }
            }
        }
    }
}

/// POSTs the pod's `Binding`. A pod bound already (`Conflict`) is done.
async fn bind(cluster: &dyn Cluster, pod: &ObjectKey, uid: &str, node: &str) -> Result<()> {
    let body = report::binding(pod, uid, node);
    match cluster.create_subresource(resource("v1", "Pod"), Some(&pod.namespace), &pod.name, "binding", &body).await {
        Ok(_) => Ok(()),
        Err(error) if error.reason == Reason::Conflict => {
            tracing::debug!(%error, "already bound");
            Ok(())
        }
        Err(source) => Err(Error::Bind { pod: pod.clone(), node: node.to_string(), source }),
    }
}

/// A binding's attempt: when it began, and where it is counted.
struct Attempt {
    started: Instant,
    metrics: Option<SchedulerMetrics>,
}

impl Attempt {
    fn ended(&self, result: impl Fn(&SchedulerMetrics) -> &Attempts) {
        if let Some(metrics) = &self.metrics {
            result(metrics).observe(self.started);
        }
    }
}

async fn bind_and_tell(
    cluster: Arc<dyn Cluster>,
    pod: ObjectKey,
    uid: String,
    node: String,
    permit: OwnedSemaphorePermit,
    outcomes: mpsc::UnboundedSender<Outcome>,
    attempt: Attempt,
) {
    let result = bind(cluster.as_ref(), &pod, &uid, &node).await;
    // Released before the loop hears of it, so that it finds the permit free.
    drop(permit);
    let outcome = match result {
        Ok(()) => {
            attempt.ended(|metrics| &metrics.scheduled);
            Outcome::Bound { pod }
        }
        Err(error) => {
            let gone = error.api_error().is_some_and(|e| e.reason == Reason::NotFound);
            if !gone {
                attempt.ended(|metrics| &metrics.error);
            }
            if gone {
                tracing::debug!(error = %flotilla_client::error_chain(&error), "pod gone before binding");
            } else {
                tracing::warn!(error = %flotilla_client::error_chain(&error), "binding failed; will retry");
            }
            Outcome::BindFailed { pod, node, gone }
        }
    };
    let _ = outcomes.send(outcome);
}

/// Sets `PodScheduled=False` with `message` on the pod and creates its
/// `FailedScheduling` Event.
async fn report_unschedulable(cluster: &dyn Cluster, pod: &Value, message: &str, component: &str) -> Result<()> {
    let key = ObjectKey::of(pod);
    let now = flotilla_api::timestamp_now();
    let patch = Patch::Merge(report::unschedulable_patch(pod, message, &now));
    cluster
        .patch(resource("v1", "Pod"), Some(&key.namespace), &key.name, &patch, Some("status"))
        .await
        .map_err(|source| Error::Condition { pod: key.clone(), source })?;
    let event = report::failed_scheduling_event(pod, message, component, &now);
    cluster
        .create(resource("v1", "Event"), Some(&key.namespace), &event)
        .await
        .map_err(|source| Error::Event { pod: key.clone(), source })?;
    Ok(())
}

async fn report_and_tell(
    cluster: Arc<dyn Cluster>,
    pod: Arc<Value>,
    message: String,
    component: String,
    reports: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    // The semaphore is never closed.
    let Ok(_permit) = reports.acquire_owned().await else { return };
    match report_unschedulable(cluster.as_ref(), &pod, &message, &component).await {
        Ok(()) => tracing::info!(%message, "unschedulable"),
        // The condition is set; a lost Event is not worth a second condition write.
        Err(error @ Error::Event { .. }) => {
            tracing::warn!(error = %flotilla_client::error_chain(&error), "unschedulable")
        }
        Err(error) if error.api_error().is_some_and(|e| e.reason == Reason::NotFound) => {}
        Err(error) => {
            tracing::warn!(error = %flotilla_client::error_chain(&error), "could not report the pod unschedulable; will retry");
            let _ = outcomes.send(Outcome::ReportFailed { pod: ObjectKey::of(&pod) });
        }
    }
}
