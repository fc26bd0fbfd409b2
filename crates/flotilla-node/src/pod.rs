//! A pod worker: runs one pod's containers and writes the pod's status as kubelet does
//! (phase, conditions, containerStatuses, IPs, startTime); evicts it when an emptyDir
//! goes over its `sizeLimit` ([`crate::eviction`]); stops it gracefully when the pod is
//! deleted, then removes the object.

use crate::Shared;
use crate::container::{Handle, Runner, State, Status};
use crate::metrics::{PodRequests, PodStats};
use flotilla_client::{DeleteParams, Patch, resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};
use tracing::Instrument as _;

/// How long a deleted pod keeps taking new requests while Services drop it.
const ENDPOINT_DRAIN: Duration = Duration::from_secs(1);

/// How long a new pod's first status write waits for its containers to start.
const FIRST_STATUS_WAIT: Duration = Duration::from_millis(100);

/// The containers' statuses, written by their runners, read by the pod worker when told.
#[derive(Debug)]
pub struct Board {
    statuses: std::sync::Mutex<Vec<Status>>,
    /// Notified after every change; a change while nobody waits is kept as one permit,
    /// so a burst of changes becomes one status write.
    pub changed: tokio::sync::Notify,
}

impl Board {
    fn new(statuses: Vec<Status>) -> Board {
        Board { statuses: std::sync::Mutex::new(statuses), changed: tokio::sync::Notify::new() }
    }

    pub fn set(&self, index: usize, status: &Status) {
        let mut statuses = self.statuses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = statuses.get_mut(index) {
            slot.clone_from(status);
        }
        drop(statuses);
        self.changed.notify_one();
    }

    fn snapshot(&self) -> Vec<Status> {
        self.statuses.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A running pod's handles, shared with the kubelet API.
#[derive(Debug)]
pub struct PodHandles {
    pub containers: Vec<Arc<Handle>>,
    /// The pod's request series.
    pub(crate) requests: PodRequests,
    /// The pod's phase, for metrics.
    pub(crate) stats: PodStats,
}

impl PodHandles {
    pub fn container(&self, name: Option<&str>) -> Option<&Arc<Handle>> {
        match name {
            Some(name) => self.containers.iter().find(|h| h.lock().name == name),
            None => self.containers.first(),
        }
    }
}

/// The phase kubelet computes from its containers.
fn phase(statuses: &[Status]) -> &'static str {
    if !statuses.is_empty() && statuses.iter().all(|s| s.done) {
        let all_zero = statuses.iter().all(|s| matches!(s.state, State::Terminated { exit_code: 0, .. }));
        return if all_zero { "Succeeded" } else { "Failed" };
    }
    if statuses.iter().any(|s| s.has_run) { "Running" } else { "Pending" }
}

fn condition(kind: &str, status: bool, reason: Option<&str>, message: Option<&str>, previous: &Value) -> Value {
    let status = if status { "True" } else { "False" };
    let before = previous["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string));
    let mut condition = json!({"type": kind, "status": status, "lastProbeTime": null,
        "lastTransitionTime": before.unwrap_or_else(flotilla_api::timestamp_now)});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    condition
}

/// The pod's `.status`, from its containers' statuses.
pub fn pod_status(pod: &Value, statuses: &[Status], pod_ip: &str, host_ip: &str, start_time: &str) -> Value {
    let phase = phase(statuses);
    let ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let (reason, message) = if ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted"), None)
    } else {
        let probe = statuses.iter().find_map(|s| s.unready_message.clone());
        let base = format!("containers with unready status: [{}]", unready.join(" "));
        (Some("ContainersNotReady"), Some(probe.map(|p| format!("{base}: {p}")).unwrap_or(base)))
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", !terminal, None, None, pod),
        condition("Initialized", true, terminal.then_some("PodCompleted"), None, pod),
        condition("Ready", ready, reason, message.as_deref(), pod),
        condition("ContainersReady", ready, reason, message.as_deref(), pod),
        condition("PodScheduled", true, None, None, pod),
    ];
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "qosClass": qos_class(pod),
        "containerStatuses": statuses.iter().map(Status::to_json).collect::<Vec<_>>(),
    });
    if !pod_ip.is_empty() {
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{"ip": pod_ip}]);
    }
    status
}

/// Kubernetes' QoS class from requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = pod["spec"]["containers"].as_array().into_iter().flatten().collect();
    let has = |c: &Value, section: &str, name: &str| !c["resources"][section][name].is_null();
    if containers.iter().all(|c| {
        !has(c, "requests", "cpu")
            && !has(c, "requests", "memory")
            && !has(c, "limits", "cpu")
            && !has(c, "limits", "memory")
    }) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            has(c, "limits", r)
                && (!has(c, "requests", r) || c["resources"]["requests"][r] == c["resources"]["limits"][r])
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// Starts a worker for `pod`. It runs until `stop_all` is dropped or the pod is gone.
pub fn start(
    shared: Arc<Shared>,
    pod: Arc<Value>,
    pod_ip: String,
    updates: watch::Receiver<Arc<Value>>,
) -> (Arc<PodHandles>, tokio::task::JoinHandle<()>) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let containers: Vec<Value> = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut handles = Vec::new();
    let mut receivers = Vec::new();
    for container in &containers {
        let (handle, crashes) = Handle::new(container["name"].as_str().unwrap_or_default());
        handles.push(handle);
        receivers.push(crashes);
    }
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let pod_handles = Arc::new(PodHandles {
        containers: handles.clone(),
        requests: shared.metrics.pod(namespace, pod_name),
        stats: PodStats::new(pod["status"]["phase"].as_str().unwrap_or("Pending")),
    });
    let name = flotilla_client::object_name(&pod);
    let span = tracing::info_span!("pod", pod = %name, uid = %uid);
    let worker = Worker { shared, pod, pod_ip, updates, handles: pod_handles.clone(), evicted: None };
    let supervisor = worker.shared.config.supervisor.clone();
    let task = tokio::spawn(
        async move {
            // A panic here is counted and logged with the pod; its containers' runners
            // are supervised on their own.
            supervisor.catch("pod-worker", worker.run(containers, handles, receivers)).await;
        }
        .instrument(span),
    );
    (pod_handles, task)
}

struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Value>,
    pod_ip: String,
    updates: watch::Receiver<Arc<Value>>,
    handles: Arc<PodHandles>,
    /// Why the pod was evicted, once it is: its status says so from then on.
    evicted: Option<String>,
}

impl Worker {
    fn namespace(&self) -> &str {
        self.pod["metadata"]["namespace"].as_str().unwrap_or("default")
    }

    fn name(&self) -> &str {
        self.pod["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn uid(&self) -> &str {
        self.pod["metadata"]["uid"].as_str().unwrap_or_default()
    }

    async fn run(
        mut self,
        containers: Vec<Value>,
        handles: Vec<Arc<Handle>>,
        receivers: Vec<mpsc::UnboundedReceiver<crate::container::Crash>>,
    ) {
        let pod_dir = self.shared.config.data_dir.join("pods").join(self.uid());
        let host_ip = self.shared.config.host_ip.clone();
        let start_time =
            self.pod["status"]["startTime"].as_str().map(str::to_string).unwrap_or_else(flotilla_api::timestamp_now);
        // A pod that already finished (seen again after the agent restarted) is not run again.
        if matches!(self.pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            self.wait_for_deletion(&handles).await;
            return;
        }
        let board = Arc::new(Board::new(containers.iter().map(Status::new).collect()));
        let localhost: Arc<dyn flotilla_runtime::ServiceRouter> =
            Arc::new(crate::exec::PodLocalhost { containers: handles.iter().map(Arc::downgrade).collect() });
        let (stop_tx, stop_rx) = watch::channel(false);
        for ((index, container), (handle, crashes)) in
            containers.into_iter().enumerate().zip(handles.iter().cloned().zip(receivers))
        {
            let runner = Runner {
                shared: self.shared.clone(),
                pod: self.pod.clone(),
                pod_dir: pod_dir.clone(),
                pod_ip: self.pod_ip.clone(),
                index,
                container,
                handle,
                crashes: AsyncMutex::new(crashes),
                board: board.clone(),
                localhost: localhost.clone(),
            };
            // Supervised: a panic in one container's runner is counted and the runner
            // starts over (pull, resolve, run), its neighbours untouched.
            let (runner, stop) = (Arc::new(runner), stop_rx.clone());
            // Detached: the stop signal ends it, as it ended the unsupervised runner.
            drop(self.shared.config.supervisor.spawn("container-runner", move || {
                let (runner, stop) = (runner.clone(), stop.clone());
                async move { runner.run(stop).await }
            }));
        }
        // The status loop, supervised: a panic in it is counted and the loop starts
        // again (one extra status write), while the containers run on: the stop signal
        // and the board outlive it.
        let stop_tx = Arc::new(stop_tx);
        let supervisor = self.shared.config.supervisor.clone();
        let worker = Arc::new(tokio::sync::Mutex::new(self));
        let handles: Arc<[Arc<Handle>]> = handles.into();
        let (host_ip, start_time): (Arc<str>, Arc<str>) = (host_ip.into(), start_time.into());
        supervisor
            .run("pod-worker", move || {
                let (worker, board, stop_tx) = (worker.clone(), board.clone(), stop_tx.clone());
                let (handles, host_ip, start_time, pod_dir) =
                    (handles.clone(), host_ip.clone(), start_time.clone(), pod_dir.clone());
                async move {
                    let mut worker = worker.lock().await;
                    worker.follow(&board, &stop_tx, &handles, &host_ip, &start_time, &pod_dir).await;
                }
            })
            .await;
    }

    /// Writes the pod's status as its containers change, until they are all done (then
    /// waits for the pod's deletion), it is evicted, or it is deleted.
    async fn follow(
        &mut self,
        board: &Board,
        stop_tx: &watch::Sender<bool>,
        handles: &[Arc<Handle>],
        host_ip: &str,
        start_time: &str,
        pod_dir: &std::path::Path,
    ) {
        let evicted = crate::eviction::monitor(
            crate::eviction::size_limits(&self.pod, pod_dir),
            self.shared.config.eviction_monitoring_period,
        );
        tokio::pin!(evicted);
        let mut written = Value::Null;
        // Most pods start within moments: their first write can already say Running (one
        // status write a pod instead of two).
        let _ = tokio::time::timeout(FIRST_STATUS_WAIT, board.changed.notified()).await;
        let mut statuses = board.snapshot();
        self.write_status(&statuses, host_ip, start_time, &mut written).await;
        while !statuses.iter().all(|s| s.done) {
            tokio::select! {
                () = board.changed.notified() => {
                    statuses = board.snapshot();
                    self.write_status(&statuses, host_ip, start_time, &mut written).await;
                }
                message = &mut evicted => {
                    self.evict(board, stop_tx, message, host_ip, start_time, &mut written).await;
                    break;
                }
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        // The agent dropped the pod: stop everything now.
                        let _ = stop_tx.send(true);
                        return;
                    }
                    let latest = self.updates.borrow_and_update().clone();
                    self.pod = latest;
                    if self.pod["metadata"]["deletionTimestamp"].is_string() {
                        let mut statuses = board.snapshot();
                        self.terminate(handles, &mut statuses, stop_tx, host_ip, start_time, &mut written).await;
                        return;
                    }
                }
            }
        }
        // Every container is done (restartPolicy said so): wait for the pod's deletion.
        self.wait_for_deletion(handles).await;
    }

    /// Evicts the pod, as kubelet's eviction manager does: stops its containers, writes
    /// it Failed with reason `Evicted` and `message`, and records an `Evicted` Event.
    async fn evict(
        &mut self,
        board: &Board,
        stop: &watch::Sender<bool>,
        message: String,
        host_ip: &str,
        start_time: &str,
        written: &mut Value,
    ) {
        tracing::info!(%message, "evicting the pod");
        let _ = stop.send(true);
        let mut statuses = board.snapshot();
        let now = flotilla_api::timestamp_now();
        for status in statuses.iter_mut().filter(|s| !s.done) {
            let started_at = match &status.state {
                State::Running { started_at } => started_at.clone(),
                _ => now.clone(),
            };
            status.state = State::Terminated {
                exit_code: 137,
                reason: "Error".to_string(),
                message: Some("the pod was evicted".to_string()),
                started_at,
                finished_at: now.clone(),
            };
            status.ready = false;
            status.started = false;
            status.done = true;
        }
        let meta = &self.pod["metadata"];
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": meta["name"], "namespace": meta["namespace"],
            "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
        }});
        self.shared.events.event(&pod, flotilla_client::EventSeverity::Warning, "Evicted", message.clone());
        self.evicted = Some(message);
        self.write_status(&statuses, host_ip, start_time, written).await;
    }

    async fn wait_for_deletion(&mut self, handles: &[Arc<Handle>]) {
        loop {
            if self.updates.changed().await.is_err() {
                return;
            }
            let latest = self.updates.borrow_and_update().clone();
            self.pod = latest;
            if self.pod["metadata"]["deletionTimestamp"].is_string() {
                let (stop_tx, _) = watch::channel(true);
                let mut written = Value::Null;
                self.terminate(handles, &mut Vec::new(), &stop_tx, "", "", &mut written).await;
                return;
            }
        }
    }

    /// Graceful deletion: not ready first (so Services stop sending), in-flight requests
    /// finish within the grace period, the containers stop, then the object goes.
    async fn terminate(
        &self,
        handles: &[Arc<Handle>],
        statuses: &mut [Status],
        stop: &watch::Sender<bool>,
        host_ip: &str,
        start_time: &str,
        written: &mut Value,
    ) {
        let grace = self.pod["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(0);
        tracing::debug!(grace, "stopping the pod");
        if !statuses.is_empty() {
            for status in statuses.iter_mut() {
                status.ready = false;
            }
            self.write_status(statuses, host_ip, start_time, written).await;
        }
        // The API server bounds grace periods; a pod stored before it did may carry any
        // u64, and a deadline past what the clock holds is none (the grace is the wait).
        let grace = grace.min(flotilla_api::limits::MAX_DURATION_SECONDS.unsigned_abs());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
        // Requests routed before the proxies saw the pod leave its Services keep arriving
        // for a moment (their tables lag, as kube-proxy's do): the pod still takes them
        // for up to ENDPOINT_DRAIN of its grace period, as a server that keeps serving
        // after SIGTERM does, then finishes what is in flight.
        tokio::time::sleep(Duration::from_secs(grace).min(ENDPOINT_DRAIN)).await;
        while handles.iter().any(|h| h.in_flight() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(true);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: Some(self.uid().to_string()),
            ..DeleteParams::default()
        };
        match self.shared.cluster.delete(resource("v1", "Pod"), Some(self.namespace()), self.name(), &params).await {
            Ok(_) => {}
            Err(e) if matches!(e.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Conflict) => {}
            Err(e) => tracing::warn!(error = %e, "removing the stopped pod"),
        }
    }

    async fn write_status(&self, statuses: &[Status], host_ip: &str, start_time: &str, written: &mut Value) {
        let mut status = pod_status(&self.pod, statuses, &self.pod_ip, host_ip, start_time);
        if let Some(message) = &self.evicted {
            status = crate::eviction::evicted_status(status, message);
        }
        if let Some(phase) = status["phase"].as_str() {
            self.handles.stats.set_phase(phase, &self.shared.metrics);
        }
        if status == *written {
            return;
        }
        let patch = Patch::Merge(json!({"status": status}));
        match self
            .shared
            .cluster
            .patch(resource("v1", "Pod"), Some(self.namespace()), self.name(), &patch, Some("status"))
            .await
        {
            Ok(_) => *written = status,
            Err(e) if e.reason == flotilla_api::Reason::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "writing the pod's status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(done: bool, state: State, has_run: bool) -> Status {
        let mut status = Status::new(&json!({"name": "c", "image": "i"}));
        status.done = done;
        status.state = state;
        status.has_run = has_run;
        status
    }

    fn ended(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: "x".into(),
            message: None,
            started_at: String::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        assert_eq!(phase(&[status(false, State::waiting("ErrImagePull", None), false)]), "Pending");
        assert_eq!(phase(&[status(false, State::Running { started_at: String::new() }, true)]), "Running");
        assert_eq!(phase(&[status(false, State::waiting("CrashLoopBackOff", None), true)]), "Running");
        assert_eq!(phase(&[status(true, ended(0), true)]), "Succeeded");
        assert_eq!(phase(&[status(true, ended(0), true), status(true, ended(1), true)]), "Failed");
    }

    #[test]
    fn qos_classes() {
        let pod = |resources: Value| json!({"spec": {"containers": [{"resources": resources}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(qos_class(&pod(json!({"limits": {"cpu": "1"}}))), "Burstable");
    }
}
