//! One container's life on the node, as kubelet lives it: get the image, resolve the
//! spec, run, probe, and when it ends decide by `restartPolicy` whether to run it again
//! after a back-off (10 s doubling to 5 min, reset after 10 min of running).
//!
//! The runner owns the container's status and sends a copy to its pod worker after
//! every change; the pod worker writes the pod's status from those.

use crate::Shared;
use crate::images::ImageError;
use crate::probes::{Probe, Tally};
use crate::spec::{self, PodContext};
use flotilla_client::EventSeverity;
use flotilla_runtime::{CommandPod, Exit, HttpPod, ImageKind, LogBuffer, LogStream};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};
use tokio::time::Instant;

/// How much of each container run's output is kept: its lines' text plus the runtime's
/// per-line overhead, and at most the runtime's `DEFAULT_MAX_LINES` lines.
const LOG_CAP_BYTES: usize = 1 << 20;
/// A container that ran this long has its back-off reset, as kubelet does.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// A container's state, as `containerStatuses[].state` spells it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: String },
    Terminated { exit_code: i32, reason: String, message: Option<String>, started_at: String, finished_at: String },
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting { reason: reason.to_string(), message }
    }

    fn to_json(&self, container_id: &str) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut waiting = json!({"reason": reason});
                if let Some(message) = message {
                    waiting["message"] = json!(message);
                }
                json!({"waiting": waiting})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated { exit_code, reason, message, started_at, finished_at } => {
                let mut terminated = json!({"exitCode": exit_code, "reason": reason, "startedAt": started_at,
                    "finishedAt": finished_at, "containerID": container_id});
                if let Some(message) = message {
                    terminated["message"] = json!(message);
                }
                json!({"terminated": terminated})
            }
        }
    }
}

/// Everything `containerStatuses[i]` says about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last_state: Option<State>,
    pub restart_count: u32,
    pub ready: bool,
    pub started: bool,
    /// Has run at least once (kubelet's phase logic: Pending until then).
    pub has_run: bool,
    /// Ended and will not be restarted.
    pub done: bool,
    /// Why the container is not ready, for the pod's conditions.
    pub unready_message: Option<String>,
    pub container_id: String,
}

impl Status {
    pub fn new(container: &Value) -> Status {
        Status {
            name: container["name"].as_str().unwrap_or_default().to_string(),
            image: container["image"].as_str().unwrap_or_default().to_string(),
            image_id: String::new(),
            state: State::waiting("ContainerCreating", None),
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            has_run: false,
            done: false,
            unready_message: None,
            container_id: String::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state.to_json(&self.container_id),
            "lastState": self.last_state.as_ref().map(|s| s.to_json(&self.container_id)).unwrap_or_else(|| json!({})),
        });
        if !self.container_id.is_empty() {
            status["containerID"] = json!(self.container_id);
        }
        status
    }
}

/// The live handles of a container that the kubelet API uses.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    pub logs: LogBuffer,
    pub previous: Option<LogBuffer>,
    pub http: Option<HttpPod>,
    /// The run going on now, which `kubectl exec` runs commands beside.
    pub running: Option<Running>,
    /// The run's stdin, for a container with `stdin: true` (`kubectl attach -i` writes
    /// here; `None` asks for its end, which a `stdinOnce` container gets).
    pub stdin: Option<mpsc::Sender<Option<bytes::Bytes>>>,
    /// What the container's runs used, for its metrics.
    pub usage: Usage,
}

/// A container's live run, as an exec needs it: the sandbox to run in, the image (a
/// command image runs itself when asked by name) and a signal that the run ended.
#[derive(Debug, Clone)]
pub struct Running {
    pub run: Run,
    pub image: flotilla_runtime::Image,
    /// The container's `image:` as written.
    pub image_name: String,
    /// The container's `command[0]`, if it has one.
    pub command: Option<String>,
    /// The container's `ports[].containerPort`.
    pub ports: Vec<u16>,
    /// Changes (or errs, its sender gone) when the run ends: execs in it end too.
    pub ended: watch::Receiver<()>,
}

/// A run of a container, as the runtime made it.
#[derive(Debug, Clone)]
pub enum Run {
    Http(HttpPod),
    Command(CommandPod),
}

impl Run {
    fn cpu_time(&self) -> Duration {
        match self {
            Run::Http(pod) => pod.cpu_time(),
            Run::Command(pod) => pod.cpu_time(),
        }
    }

    fn memory_bytes(&self) -> u64 {
        match self {
            Run::Http(pod) => pod.memory_bytes(),
            Run::Command(pod) => pod.memory_bytes(),
        }
    }

    fn memory_peak_bytes(&self) -> u64 {
        match self {
            Run::Http(pod) => pod.memory_peak_bytes(),
            Run::Command(pod) => pod.memory_peak_bytes(),
        }
    }
}

/// The CPU time and memory of a container over all its runs: the last run is kept (its
/// instances gone, it holds no memory) until the next begins, and earlier runs are
/// summed up, so CPU time only grows while the pod lives.
#[derive(Debug, Default)]
pub struct Usage {
    last: Option<Run>,
    cpu_before: Duration,
    peak_before: u64,
}

impl Usage {
    fn begin(&mut self, run: Run) {
        if let Some(last) = self.last.replace(run) {
            self.cpu_before += last.cpu_time();
            self.peak_before = self.peak_before.max(last.memory_peak_bytes());
        }
    }

    /// CPU time of every run so far.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_before + self.last.as_ref().map_or(Duration::ZERO, Run::cpu_time)
    }

    /// Linear memory the live run's instances hold.
    pub fn memory_bytes(&self) -> u64 {
        self.last.as_ref().map_or(0, Run::memory_bytes)
    }

    /// The most linear memory any run held at once.
    pub fn memory_peak_bytes(&self) -> u64 {
        self.peak_before.max(self.last.as_ref().map_or(0, Run::memory_peak_bytes))
    }
}

/// A container's slot and the channel a request reports a crash of its instance on.
#[derive(Debug)]
pub struct Handle {
    pub slot: std::sync::Mutex<Slot>,
    pub crashes: mpsc::UnboundedSender<Crash>,
    pub in_flight: AtomicUsize,
    /// The container's `restartCount`, for metrics.
    pub restarts: AtomicU32,
}

/// A request that killed the instance serving it: for the container, a crash.
#[derive(Debug, Clone)]
pub enum Crash {
    OutOfMemory,
    Trap(String),
}

impl Handle {
    pub fn new(name: &str) -> (Arc<Handle>, mpsc::UnboundedReceiver<Crash>) {
        let (crashes, receiver) = mpsc::unbounded_channel();
        let slot = Slot {
            name: name.to_string(),
            logs: LogBuffer::new(LOG_CAP_BYTES),
            previous: None,
            http: None,
            running: None,
            stdin: None,
            usage: Usage::default(),
        };
        let handle = Handle {
            slot: std::sync::Mutex::new(slot),
            crashes,
            in_flight: AtomicUsize::new(0),
            restarts: AtomicU32::new(0),
        };
        (Arc::new(handle), receiver)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Starts a new run's log, keeping the last one as `previous`.
    fn rotate_logs(&self) -> LogBuffer {
        let logs = LogBuffer::new(LOG_CAP_BYTES);
        let mut slot = self.lock();
        let old = std::mem::replace(&mut slot.logs, logs.clone());
        if !old.lines().is_empty() || old.is_closed() {
            slot.previous = Some(old);
        }
        logs
    }
}

/// What a runner needs from its pod.
pub struct Runner {
    pub shared: Arc<Shared>,
    pub pod: Arc<Value>,
    pub pod_dir: std::path::PathBuf,
    pub pod_ip: String,
    pub index: usize,
    pub container: Value,
    pub handle: Arc<Handle>,
    pub crashes: AsyncMutex<mpsc::UnboundedReceiver<Crash>>,
    pub board: Arc<crate::pod::Board>,
    /// The pod's containers as its `localhost`.
    pub localhost: Arc<dyn flotilla_runtime::ServiceRouter>,
}

fn now() -> String {
    flotilla_api::timestamp_now()
}

/// Writes what attached clients send into a run's stdin, until every sender is gone or,
/// for a `stdinOnce` container, the first client asks for its end.
async fn feed_stdin(
    mut receiver: mpsc::Receiver<Option<bytes::Bytes>>,
    mut writer: tokio::io::DuplexStream,
    once: bool,
) {
    use tokio::io::AsyncWriteExt as _;
    while let Some(message) = receiver.recv().await {
        match message {
            Some(bytes) if writer.write_all(&bytes).await.is_err() => return,
            Some(_) => {}
            None if once => return,
            None => {}
        }
    }
}

/// How a run ended, as kubelet reports it.
fn terminated(exit: &Exit, started_at: String) -> State {
    let (exit_code, reason, message) = match exit {
        Exit::Code(0) => (0, "Completed", None),
        Exit::Code(code) => (*code, "Error", None),
        Exit::Trap(message) => (1, "Error", Some(format!("trapped: {message}"))),
        Exit::OutOfMemory => (137, "OOMKilled", None),
        Exit::DeadlineExceeded => (137, "DeadlineExceeded", Some("ran past activeDeadlineSeconds".to_string())),
        Exit::StartError(message) => (128, "StartError", Some(message.clone())),
    };
    State::Terminated { exit_code, reason: reason.to_string(), message, started_at, finished_at: now() }
}

impl Runner {
    /// Records a kubelet Event about this container's pod.
    fn record(&self, severity: EventSeverity, reason: &str, message: String) {
        let meta = &self.pod["metadata"];
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": meta["name"], "namespace": meta["namespace"],
            "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
        }});
        self.shared.events.event(&pod, severity, reason, message);
    }

    fn report(&self, status: &Status) {
        self.handle.restarts.store(status.restart_count, Ordering::Relaxed);
        self.board.set(self.index, status);
    }

    /// A container this pod ran before the agent (re)started died with the old agent:
    /// count it as a restart, as its status already said it ran.
    fn carry_over(&self, status: &mut Status) {
        let previous = self.pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == status.name.as_str());
        let Some(previous) = previous else { return };
        let count = u32::try_from(previous["restartCount"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
        let started_at = previous["state"]["running"]["startedAt"].as_str().map(str::to_string);
        status.restart_count = count;
        if let Some(started_at) = started_at {
            status.restart_count = count.saturating_add(1);
            status.has_run = true;
            status.last_state = Some(State::Terminated {
                exit_code: 137,
                reason: "ContainerStatusUnknown".to_string(),
                message: Some("the node agent restarted while the container ran".to_string()),
                started_at,
                finished_at: now(),
            });
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod["spec"]["restartPolicy"].as_str().unwrap_or("Always")
    }

    /// Sleeps `delay` unless asked to stop first; answers whether to go on.
    async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Runs the container until it is done or `stop` is set (or dropped).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let config = &self.shared.config;
        let mut status = Status::new(&self.container);
        self.carry_over(&mut status);
        let pod_name = self.pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let namespace = self.pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let uid = self.pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let mut backoff = config.backoff_initial;
        let mut pull_backoff = config.backoff_initial;
        let mut pulled_once = false;
        let mut last_config_error: Option<String> = None;
        loop {
            // The image.
            let pulled = self.shared.images.pull(&status.image).await;
            let image = match pulled.and_then(|()| self.shared.images.load(&status.image)) {
                Ok(image) => image,
                Err(error) => {
                    let (reason, retry) = match (&error, pulled_once) {
                        (ImageError::NotFound(_) | ImageError::Forbidden(_), false) => ("ErrImagePull", Duration::ZERO),
                        (ImageError::NotFound(_) | ImageError::Forbidden(_), true) => {
                            ("ImagePullBackOff", pull_backoff)
                        }
                        (ImageError::Invalid(_), _) => ("CreateContainerError", pull_backoff),
                    };
                    pulled_once = true;
                    let message = if reason == "ImagePullBackOff" {
                        format!("Back-off pulling image \"{}\": {error}", status.image)
                    } else {
                        error.to_string()
                    };
                    match reason {
                        "ErrImagePull" => self.record(
                            EventSeverity::Warning,
                            "Failed",
                            format!("Failed to pull image \"{}\": {error}", status.image),
                        ),
                        "ImagePullBackOff" => self.record(
                            EventSeverity::Normal,
                            "BackOff",
                            format!("Back-off pulling image \"{}\"", status.image),
                        ),
                        _ => self.record(EventSeverity::Warning, "Failed", format!("Error: {error}")),
                    }
                    status.state = State::waiting(reason, Some(message));
                    self.report(&status);
                    if !retry.is_zero() {
                        pull_backoff = (pull_backoff * 2).min(config.backoff_max);
                    }
                    // Show ErrImagePull for a moment before backing off, as kubelet does.
                    let delay = if retry.is_zero() { Duration::from_millis(500) } else { retry };
                    if !Self::pause(&mut stop, delay).await {
                        return;
                    }
                    continue;
                }
            };
            pull_backoff = config.backoff_initial;
            status.image_id = format!("sha256:{}", image.digest());

            // The spec: env, volumes, limits.
            let ctx = PodContext {
                pod: &self.pod,
                pod_dir: &self.pod_dir,
                pod_ip: &self.pod_ip,
                host_ip: &config.host_ip,
                allow_host_path: config.allow_host_path_volumes,
            };
            let spec = match spec::resolve(self.shared.cluster.as_ref(), &ctx, &self.container).await {
                Ok(mut spec) => {
                    last_config_error = None;
                    spec.localhost = Some(self.localhost.clone());
                    spec
                }
                Err(error) => {
                    // Retried every few seconds: one Event per distinct error, not per retry.
                    let message = format!("Error: {error}");
                    if last_config_error.as_ref() != Some(&message) {
                        self.record(EventSeverity::Warning, "Failed", message.clone());
                        last_config_error = Some(message);
                    }
                    status.state = State::waiting("CreateContainerConfigError", Some(error.to_string()));
                    self.report(&status);
                    if !Self::pause(&mut stop, config.backoff_initial.min(Duration::from_secs(2))).await {
                        return;
                    }
                    continue;
                }
            };

            let logs = self.handle.rotate_logs();
            let started_at = now();
            let run_started = Instant::now();
            status.container_id = format!("wasm://{uid}/{}/{}", status.name, status.restart_count);
            // Dropped when this run ends, which ends the execs in it.
            let (_run_ended, ended) = watch::channel(());
            let running = |run: Run| Running {
                run,
                image: image.clone(),
                image_name: status.image.clone(),
                command: self.container["command"][0].as_str().map(str::to_string),
                ports: self.container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| u16::try_from(p["containerPort"].as_u64()?).ok())
                    .collect(),
                ended: ended.clone(),
            };
            let ended = match image.kind() {
                ImageKind::Command => match self.shared.runtime.command_pod(&image, spec, logs.clone()) {
                    Ok(pod) => {
                        let stdin = self.container["stdin"].as_bool().unwrap_or(false).then(|| {
                            let (writer, reader) = tokio::io::duplex(64 * 1024);
                            let (sender, receiver) = mpsc::channel(16);
                            let once = self.container["stdinOnce"].as_bool().unwrap_or(false);
                            tokio::spawn(feed_stdin(receiver, writer, once));
                            (sender, Box::new(reader) as flotilla_runtime::ExecReader)
                        });
                        let (sender, stdin) = stdin.unzip();
                        {
                            let mut slot = self.handle.lock();
                            slot.usage.begin(Run::Command(pod.clone()));
                            slot.running = Some(running(Run::Command(pod.clone())));
                            slot.stdin = sender;
                        }
                        status.state = State::Running { started_at: started_at.clone() };
                        status.has_run = true;
                        status.started = true;
                        status.ready = true;
                        status.unready_message = None;
                        self.report(&status);
                        let ended = tokio::select! {
                            exit = pod.run_with_stdin(stdin) => Some(terminated(&exit, started_at)),
                            _ = stop.wait_for(|s| *s) => None,
                        };
                        {
                            let mut slot = self.handle.lock();
                            slot.running = None;
                            slot.stdin = None;
                        }
                        ended
                    }
                    Err(error) => Some(terminated(&Exit::StartError(error.to_string()), started_at)),
                },
                ImageKind::Http => match self.shared.runtime.http_pod(&image, spec, logs.clone()) {
                    Ok(pod) => {
                        {
                            let mut slot = self.handle.lock();
                            slot.http = Some(pod.clone());
                            slot.usage.begin(Run::Http(pod.clone()));
                            slot.running = Some(running(Run::Http(pod.clone())));
                        }
                        self.shared.http_started.notify_waiters();
                        status.state = State::Running { started_at: started_at.clone() };
                        status.has_run = true;
                        let ended = self.serve(&pod, &mut status, &mut stop, started_at).await;
                        {
                            let mut slot = self.handle.lock();
                            slot.http = None;
                            slot.running = None;
                        }
                        ended
                    }
                    Err(error) => Some(terminated(&Exit::StartError(error.to_string()), started_at)),
                },
            };
            logs.close();
            let Some(ended) = ended else { return };
            if let State::Terminated { reason, message: Some(message), .. } = &ended
                && reason == "StartError"
            {
                self.record(EventSeverity::Warning, "Failed", format!("Error: {message}"));
            }

            let exit_code = match &ended {
                State::Terminated { exit_code, .. } => *exit_code,
                _ => 0,
            };
            status.ready = false;
            status.started = false;
            let restart = match self.restart_policy() {
                "Never" => false,
                "OnFailure" => exit_code != 0,
                _ => true,
            };
            if !restart {
                status.state = ended;
                status.done = true;
                self.report(&status);
                return;
            }
            if run_started.elapsed() >= BACKOFF_RESET {
                backoff = config.backoff_initial;
            }
            status.last_state = Some(ended);
            self.record(
                EventSeverity::Warning,
                "BackOff",
                format!("Back-off restarting failed container {} in pod {pod_name}_{namespace}({uid})", status.name),
            );
            status.state = State::waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={} pod={pod_name}_{namespace}({uid})",
                    humantime(backoff),
                    status.name
                )),
            );
            self.report(&status);
            if !Self::pause(&mut stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(config.backoff_max);
            status.restart_count += 1;
        }
    }

    /// Serves an HTTP container: runs its probes until it crashes (a request went OOM or
    /// trapped), fails its liveness probe, or is stopped (`None`).
    async fn serve(
        &self,
        pod: &HttpPod,
        status: &mut Status,
        stop: &mut watch::Receiver<bool>,
        started_at: String,
    ) -> Option<State> {
        let start = Instant::now();
        let mut startup = Probe::parse(&self.container, "startupProbe").map(|p| Tally::new(p, start));
        let mut liveness = Probe::parse(&self.container, "livenessProbe").map(|p| Tally::new(p, start));
        let mut readiness = Probe::parse(&self.container, "readinessProbe").map(|p| Tally::new(p, start));
        status.started = startup.is_none();
        status.ready = status.started && readiness.is_none();
        status.unready_message = None;
        self.report(status);
        let mut crashes = self.crashes.lock().await;
        // Crashes of the previous run are that run's business.
        while crashes.try_recv().is_ok() {}
        loop {
            // The startup probe runs until the container has started, the others after.
            let next = if status.started {
                [&liveness, &readiness].into_iter().flatten().map(|t| t.next).min()
            } else {
                startup.as_ref().map(|t| t.next)
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return None,
                crash = crashes.recv() => {
                    let exit = match crash {
                        Some(Crash::OutOfMemory) => Exit::OutOfMemory,
                        Some(Crash::Trap(message)) => Exit::Trap(message),
                        None => return None,
                    };
                    return Some(terminated(&exit, started_at));
                }
                () = sleep => {}
            }
            let now = Instant::now();
            if !status.started {
                if let Some(tally) = startup.as_mut().filter(|t| t.next <= now) {
                    let result = tally.probe.check(Some(pod)).await;
                    tally.record(result);
                    match tally.healthy {
                        Some(true) => {
                            status.started = true;
                            let begin = Instant::now();
                            for tally in [&mut liveness, &mut readiness].into_iter().flatten() {
                                tally.next = begin + tally.probe.initial_delay;
                            }
                            status.ready = readiness.is_none();
                            self.report(status);
                        }
                        Some(false) => {
                            let message = tally.last_error.clone().unwrap_or_default();
                            self.log_probe_failure(pod, "Startup", &message);
                            return Some(probe_kill(started_at, "Startup", &message));
                        }
                        None => {}
                    }
                }
                continue;
            }
            if let Some(tally) = liveness.as_mut().filter(|t| t.next <= now) {
                let result = tally.probe.check(Some(pod)).await;
                tally.record(result);
                if tally.healthy == Some(false) {
                    let message = tally.last_error.clone().unwrap_or_default();
                    self.log_probe_failure(pod, "Liveness", &message);
                    return Some(probe_kill(started_at, "Liveness", &message));
                }
            }
            if let Some(tally) = readiness.as_mut().filter(|t| t.next <= now) {
                let result = tally.probe.check(Some(pod)).await;
                let changed = tally.record(result);
                if changed && tally.healthy == Some(false) {
                    // One Event each time the verdict turns, not one per failed probe.
                    let message = tally.last_error.clone().unwrap_or_default();
                    self.record(EventSeverity::Warning, "Unhealthy", format!("Readiness probe failed: {message}"));
                }
                if changed || status.ready != (tally.healthy == Some(true)) {
                    status.ready = tally.healthy == Some(true);
                    status.unready_message = tally.last_error.clone().map(|e| format!("Readiness probe failed: {e}"));
                    self.report(status);
                }
            }
        }
    }

    fn log_probe_failure(&self, pod: &HttpPod, probe: &str, message: &str) {
        pod.logs().push(LogStream::Stderr, format!("{probe} probe failed: {message}; the container will be restarted"));
        self.record(EventSeverity::Warning, "Unhealthy", format!("{probe} probe failed: {message}"));
        let container = self.container["name"].as_str().unwrap_or_default();
        let killing = format!("Container {container} failed {} probe, will be restarted", probe.to_lowercase());
        self.record(EventSeverity::Normal, "Killing", killing);
    }
}

/// A container killed because a probe said so, as kubelet reports it.
fn probe_kill(started_at: String, probe: &str, message: &str) -> State {
    State::Terminated {
        exit_code: 137,
        reason: "Error".to_string(),
        message: Some(format!("{probe} probe failed: {message}")),
        started_at,
        finished_at: now(),
    }
}

/// `10s`, `1m20s`, `5m0s`: Go's duration format, as kubelet's messages use it.
pub fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => format!("{}ms", duration.as_millis()),
        1..60 => format!("{seconds}s"),
        _ => format!("{}m{}s", seconds / 60, seconds % 60),
    }
}
