//! Flotilla's node agent, the kubelet of a wasm node.
//!
//! It registers its Node (capacity, allocatable, conditions, a heartbeat), watches the
//! pods bound to it, and runs each through `flotilla-runtime`: images from its
//! [`ImageStore`], env/volumes/limits resolved from the pod ([`spec`]), restart policy
//! with kubelet's back-off, probes, and the pod's status written back as kubelet writes
//! it, with kubelet's Events for what goes wrong (failed pulls and starts, back-offs,
//! failing probes). Deleting a pod stops it gracefully before the object goes. It serves
//! [`Kubelet`](flotilla_client::Kubelet) (`pods/log`, `pods/proxy`, and its pods' usage
//! as kubelet's `/stats/summary`) to the API server.
//!
//! It reaches the cluster only through [`flotilla_client::Cluster`], so it runs the same
//! inside `flotilla server` and as `flotilla agent` in another process. It must not
//! touch the store or other nodes' pods, and keeps no state a restart would need: after
//! a restart it rebuilds everything from the API.

mod container;
mod eviction;
mod exec;
mod images;
mod kubelet;
mod metrics;
mod pod;
mod probes;
pub mod server;
pub mod spec;

pub use images::{ImageError, ImageRef, ImageStore};

use flotilla_api::{ApiError, Reason};
use flotilla_client::{Change, Cluster, EventRecorder, Informer, ListParams, ObjectKey, Patch, resource};
use flotilla_runtime::Runtime;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// Where pods' volumes live (`DIR/pods/UID/…`).
    pub data_dir: PathBuf,
    /// The node's address, reported as `InternalIP` and each pod's `hostIP`.
    pub host_ip: String,
    /// Where the agent's kubelet API listens (`daemonEndpoints.kubeletEndpoint.Port`);
    /// the built-in node is reached in process and does not listen.
    pub kubelet_port: u16,
    /// The range pods' virtual addresses come from (`10.244.0.0/16`).
    pub pod_cidr: (Ipv4Addr, u8),
    /// Capacity: CPU in millicores, memory in bytes, and the most pods.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// Extra labels of the Node.
    pub labels: Vec<(String, String)>,
    /// Restart back-off: first delay and cap (kubelet: 10 s and 5 min).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often the Node's Ready condition is renewed.
    pub heartbeat: Duration,
    /// Whether pods may mount `hostPath` volumes (the node's own files): refused by
    /// default, with `CreateContainerConfigError`.
    pub allow_host_path_volumes: bool,
    /// How often the node measures its pods' emptyDir volumes against their `sizeLimit`
    /// (kubelet's eviction monitoring period).
    pub eviction_monitoring_period: Duration,
    /// Where the agent registers its metrics (`kubelet_*`, `flotilla_node_*`,
    /// `flotilla_pod_*`), and what its kubelet API's `/metrics` serves (all of it).
    pub metrics: prometheus::Registry,
    /// Restarts the agent's loops (the pod sync loop, the heartbeat) after a panic, and
    /// counts the panics.
    pub supervisor: flotilla_client::Supervisor,
}

impl NodeConfig {
    /// A node named `name` with this machine's CPUs and memory.
    pub fn for_this_machine(name: &str, data_dir: PathBuf) -> NodeConfig {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        NodeConfig {
            name: name.to_string(),
            data_dir,
            host_ip: "127.0.0.1".to_string(),
            kubelet_port: 10250,
            pod_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            cpu_millis: u64::try_from(cpus).unwrap_or(1) * 1000,
            memory_bytes: machine_memory().unwrap_or(4 << 30),
            max_pods: 1000,
            labels: Vec::new(),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            heartbeat: Duration::from_secs(10),
            allow_host_path_volumes: false,
            eviction_monitoring_period: Duration::from_secs(10),
            metrics: prometheus::Registry::new(),
            supervisor: flotilla_client::Supervisor::default(),
        }
    }
}

/// `MemTotal` from /proc/meminfo.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: ApiError },
    /// The agent's metrics could not be registered (their names are taken in the
    /// registry given).
    #[error("registering the node agent's metrics")]
    Metrics(#[source] prometheus::Error),
}

/// What every part of the agent shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cluster: Arc<dyn Cluster>,
    /// The kubelet's Events about pods: only what goes wrong (failed pulls and starts,
    /// back-offs, failing probes), so a healthy start costs no extra writes.
    pub events: EventRecorder,
    pub runtime: Runtime,
    pub images: ImageStore,
    pub config: NodeConfig,
    /// When this agent started: since then its Node has been Ready.
    pub started_at: String,
    pub metrics: metrics::NodeMetrics,
    /// Woken whenever one of the node's containers starts taking HTTP requests: requests
    /// held for a starting pod wait on it.
    pub http_started: tokio::sync::Notify,
}

/// A pod the agent runs.
#[derive(Debug)]
struct Entry {
    uid: String,
    ip: u32,
    handles: Arc<pod::PodHandles>,
    updates: watch::Sender<Arc<Value>>,
    task: tokio::task::JoinHandle<()>,
}

/// A running node agent. Cheap to clone; implements [`flotilla_client::Kubelet`].
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Agent>,
}

#[derive(Debug)]
struct Agent {
    shared: Arc<Shared>,
    pods: Mutex<HashMap<ObjectKey, Entry>>,
    ips_in_use: Mutex<HashSet<u32>>,
    /// Pods read from the API for a request waiting on them, for the sync loop to start
    /// if its watch has not brought them yet ([`Agent::hint`]).
    hints: tokio::sync::mpsc::UnboundedSender<Arc<Value>>,
    /// Pods being read for a hint: many requests held for one pod read it once.
    hinting: Mutex<HashSet<ObjectKey>>,
}

impl Node {
    /// Registers the node and starts running the pods bound to it.
    pub async fn start(
        cluster: Arc<dyn Cluster>,
        runtime: Runtime,
        images: ImageStore,
        config: NodeConfig,
    ) -> Result<Node, NodeError> {
        let started_at = flotilla_api::timestamp_now();
        let metrics = metrics::NodeMetrics::register(&config.metrics).map_err(NodeError::Metrics)?;
        let shared = Arc::new(Shared {
            events: EventRecorder::new(cluster.clone(), "kubelet"),
            cluster,
            runtime,
            images,
            config,
            started_at,
            metrics,
            http_started: tokio::sync::Notify::new(),
        });
        register(&shared).await.map_err(|source| NodeError::Register { node: shared.config.name.clone(), source })?;
        let (hints, hinted) = tokio::sync::mpsc::unbounded_channel();
        let agent = Arc::new(Agent {
            shared: shared.clone(),
            pods: Mutex::new(HashMap::new()),
            ips_in_use: Mutex::new(HashSet::new()),
            hints,
            hinting: Mutex::new(HashSet::new()),
        });
        metrics::NodeMetrics::register_collector(&shared.config.metrics, Arc::downgrade(&agent))
            .map_err(NodeError::Metrics)?;
        let supervisor = &shared.config.supervisor;
        let weak = Arc::downgrade(&agent);
        supervisor.spawn("node-heartbeat", move || heartbeat(weak.clone()));
        let informer = Informer::start(
            shared.cluster.clone(),
            resource("v1", "Pod"),
            None,
            ListParams::fields(format!("spec.nodeName={}", shared.config.name)),
        );
        // Shared with the loop's next run, should this one panic.
        let hinted = Arc::new(tokio::sync::Mutex::new(hinted));
        let weak = Arc::downgrade(&agent);
        supervisor.spawn("node-sync", move || sync_loop(weak.clone(), informer.clone(), hinted.clone()));
        Ok(Node { inner: agent })
    }

    pub fn name(&self) -> &str {
        &self.inner.shared.config.name
    }

    /// Pods this agent runs now.
    pub fn running_pods(&self) -> usize {
        self.inner.lock().len()
    }

    pub(crate) fn handles(&self, namespace: &str, name: &str) -> Option<Arc<pod::PodHandles>> {
        self.inner.lock().get(&ObjectKey::new(namespace, name)).map(|e| e.handles.clone())
    }

    /// What the node's pods use now: kubelet's `/stats/summary`, as the resource metrics
    /// scraper reads it (cumulative CPU time, memory held now, requests answered).
    pub fn stats_summary(&self) -> flotilla_client::Summary {
        let time = jiff::Timestamp::now().to_string();
        let mut pods: Vec<flotilla_client::PodStats> = self
            .inner
            .pod_entries()
            .into_iter()
            .map(|(key, uid, handles)| flotilla_client::PodStats {
                pod_ref: flotilla_client::PodReference { name: key.name, namespace: key.namespace, uid },
                containers: handles
                    .containers
                    .iter()
                    .map(|container| {
                        let slot = container.lock();
                        flotilla_client::ContainerStats {
                            name: slot.name.clone(),
                            cpu: flotilla_client::CpuStats {
                                usage_core_nano_seconds: u64::try_from(slot.usage.cpu_time().as_nanos())
                                    .unwrap_or(u64::MAX),
                            },
                            memory: flotilla_client::MemoryStats { working_set_bytes: slot.usage.memory_bytes() },
                        }
                    })
                    .collect(),
                http_requests: handles.requests.total(),
            })
            .collect();
        pods.sort_by(|a, b| (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name)));
        flotilla_client::Summary {
            node: flotilla_client::NodeStats {
                node_name: self.name().to_string(),
                start_time: Some(self.inner.shared.started_at.clone()),
                time,
            },
            pods,
        }
    }

    /// Every metric family of the agent's registry (its own and whatever else the
    /// process registered there), in Prometheus' text format.
    pub fn metrics_text(&self) -> Result<Vec<u8>, prometheus::Error> {
        metrics::encode(&self.inner.shared.config.metrics)
    }
}

impl Agent {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Entry>> {
        self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pods the agent runs now, with their handles.
    fn pod_handles(&self) -> Vec<(ObjectKey, Arc<pod::PodHandles>)> {
        self.lock().iter().map(|(key, entry)| (key.clone(), entry.handles.clone())).collect()
    }

    /// The pods the agent runs now, with their uids and handles.
    fn pod_entries(&self) -> Vec<(ObjectKey, String, Arc<pod::PodHandles>)> {
        self.lock().iter().map(|(key, entry)| (key.clone(), entry.uid.clone(), entry.handles.clone())).collect()
    }

    /// A request waits for `namespace/name` to start here: reads the pod from the API
    /// and hands it to the sync loop, which starts it unless the watch has brought it (or
    /// its deletion) already. A woken pod then starts as soon as it is bound, not when
    /// this node's watch, one of many behind the binding, gets to it.
    fn hint(self: &Arc<Self>, namespace: &str, name: &str) {
        let key = ObjectKey::new(namespace, name);
        if !self.hinting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.clone()) {
            return;
        }
        let agent = self.clone();
        tokio::spawn(async move {
            let (namespace, name) = (&key.namespace, &key.name);
            let shared = &agent.shared;
            let pod = shared.cluster.get(resource("v1", "Pod"), Some(namespace), name).await;
            agent.hinting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
            match pod {
                Ok(pod) if pod["spec"]["nodeName"] == shared.config.name.as_str() => {
                    let _ = agent.hints.send(Arc::new(pod));
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "reading a pod a request waits for")
                }
            }
        });
    }

    /// Starts a hinted pod the informer has not delivered yet (see [`to_start`]).
    fn start_hinted(&self, informer: &Informer, pod: Arc<Value>) {
        let key = ObjectKey::of(&pod);
        if self.lock().contains_key(&key) {
            return;
        }
        // The revision first: the cache read after it is at least that new.
        let revision = informer.revision();
        if let Some(pod) = to_start(pod, revision, || informer.get(&key.namespace, &key.name)) {
            self.sync(pod);
        }
    }

    /// Starts, updates or replaces the worker of `pod`.
    fn sync(&self, pod: Arc<Value>) {
        let key = ObjectKey::of(&pod);
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let mut pods = self.lock();
        if let Some(entry) = pods.get(&key) {
            if entry.uid == uid {
                entry.updates.send_replace(pod);
                return;
            }
            // Same name, new pod: the old one is gone.
            if let Some(old) = pods.remove(&key) {
                self.forget(old);
            }
        }
        let ip = self.allocate_ip(&pod);
        let address = Ipv4Addr::from(ip).to_string();
        let (updates, receiver) = watch::channel(pod.clone());
        let (handles, task) = pod::start(self.shared.clone(), pod, address, receiver);
        pods.insert(key, Entry { uid, ip, handles, updates, task });
    }

    fn remove(&self, key: &ObjectKey) {
        let entry = self.lock().remove(key);
        if let Some(entry) = entry {
            self.forget(entry);
        }
    }

    /// Stops a pod's worker (dropping its update channel stops its containers) and frees
    /// its address and directory.
    fn forget(&self, entry: Entry) {
        entry.handles.requests.remove();
        entry.task.abort();
        drop(entry.updates);
        self.ips_in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&entry.ip);
        let dir = self.shared.config.data_dir.join("pods").join(&entry.uid);
        tokio::task::spawn_blocking(move || {
            if dir.exists()
                && let Err(error) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(dir = %dir.display(), %error, "removing a deleted pod's directory");
            }
        });
    }

    /// The pod's address: the one it had (after an agent restart), else the next free one.
    fn allocate_ip(&self, pod: &Value) -> u32 {
        let (base, prefix) = self.shared.config.pod_cidr;
        let base = u32::from(base);
        let size = 1u32.checked_shl(32 - u32::from(prefix.min(30))).unwrap_or(u32::MAX);
        let mut in_use = self.ips_in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = pod["status"]["podIP"].as_str().and_then(|ip| ip.parse::<Ipv4Addr>().ok()).map(u32::from);
        if let Some(ip) = previous.filter(|ip| ip.wrapping_sub(base) < size && !in_use.contains(ip)) {
            in_use.insert(ip);
            return ip;
        }
        // .0 is the network and .1 the node's own.
        let ip =
            (2..size.saturating_sub(1)).map(|offset| base + offset).find(|ip| !in_use.contains(ip)).unwrap_or(base);
        in_use.insert(ip);
        ip
    }
}

/// Which state of a hinted pod the node starts, if any. When the informer is at or past
/// the revision the pod was read at, its cache decides: the pod is there (its state), or
/// it is gone, deleted since. When the informer is behind, the pod read from the API is
/// started now; the informer's own change for it, still to come, finds it running (or
/// stops it, if that change is its deletion).
fn to_start(
    hinted: Arc<Value>,
    informer_revision: u64,
    cached: impl FnOnce() -> Option<Arc<Value>>,
) -> Option<Arc<Value>> {
    let revision = hinted["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse::<u64>().ok());
    if revision.is_some_and(|revision| revision > informer_revision) { Some(hinted) } else { cached() }
}

async fn sync_loop(
    agent: std::sync::Weak<Agent>,
    informer: Informer,
    hints: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Arc<Value>>>>,
) {
    let mut hints = hints.lock().await;
    let mut changes = informer.subscribe();
    informer.synced().await;
    let resync = |agent: &Agent| {
        let current: HashMap<ObjectKey, Arc<Value>> =
            informer.list().into_iter().map(|p| (ObjectKey::of(&p), p)).collect();
        let stale: Vec<ObjectKey> = agent.lock().keys().filter(|k| !current.contains_key(*k)).cloned().collect();
        for key in stale {
            agent.remove(&key);
        }
        for pod in current.into_values() {
            agent.sync(pod);
        }
    };
    if let Some(agent) = agent.upgrade() {
        resync(&agent);
    }
    loop {
        let change = tokio::select! {
            biased;
            change = changes.recv() => change,
            Some(pod) = hints.recv() => {
                let Some(agent) = agent.upgrade() else { return };
                agent.start_hinted(&informer, pod);
                continue;
            }
        };
        let Some(agent) = agent.upgrade() else { return };
        match change {
            Ok(Change::Applied(pod)) => agent.sync(pod),
            Ok(Change::Deleted(pod)) => agent.remove(&ObjectKey::of(&pod)),
            Ok(Change::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => resync(&agent),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The Node object this agent keeps.
fn node_object(config: &NodeConfig) -> Value {
    let mut labels = serde_json::Map::new();
    for (key, value) in [
        ("kubernetes.io/hostname", config.name.as_str()),
        ("kubernetes.io/os", "wasip2"),
        ("kubernetes.io/arch", "wasm32"),
        ("node.kubernetes.io/instance-type", "flotilla"),
    ] {
        labels.insert(key.to_string(), json!(value));
    }
    for (key, value) in &config.labels {
        labels.insert(key.clone(), json!(value));
    }
    let cidr = format!("{}/{}", config.pod_cidr.0, config.pod_cidr.1);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.name, "labels": labels},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    })
}

/// The Node's status; its conditions have held since `since`.
fn node_status(config: &NodeConfig, since: &str) -> Value {
    let now = flotilla_api::timestamp_now();
    let resources = json!({
        "cpu": format!("{}m", config.cpu_millis),
        "memory": format!("{}Ki", config.memory_bytes / 1024),
        "pods": config.max_pods.to_string(),
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": config.host_ip}, {"type": "Hostname", "address": config.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": config.name, "systemUUID": config.name, "bootID": uuid_like(),
            "kernelVersion": "wasmtime 48", "osImage": "Flotilla (wasm32-wasip2)",
            "containerRuntimeVersion": "wasmtime://48.0.8", "kubeletVersion": "v1.37.0-flotilla",
            "kubeProxyVersion": "v1.37.0-flotilla", "operatingSystem": "wasip2", "architecture": "wasm32",
        },
    })
}

/// A per-process boot id.
fn uuid_like() -> String {
    format!(
        "{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    )
}

async fn register(shared: &Shared) -> Result<(), ApiError> {
    let nodes = resource("v1", "Node");
    let object = node_object(&shared.config);
    match shared.cluster.create(nodes, None, &object).await {
        Ok(_) => {}
        Err(e) if e.reason == Reason::AlreadyExists => {
            let patch =
                Patch::Merge(json!({"metadata": {"labels": object["metadata"]["labels"]}, "spec": object["spec"]}));
            shared.cluster.patch(nodes, None, &shared.config.name, &patch, None).await?;
        }
        Err(e) => return Err(e),
    }
    let status = Patch::Merge(json!({"status": node_status(&shared.config, &shared.started_at)}));
    shared.cluster.patch(nodes, None, &shared.config.name, &status, Some("status")).await?;
    Ok(())
}

/// Renews the Node's conditions; re-registers the Node if it was deleted.
async fn heartbeat(agent: std::sync::Weak<Agent>) {
    loop {
        let Some(period) = agent.upgrade().map(|a| a.shared.config.heartbeat) else { return };
        tokio::time::sleep(period).await;
        let Some(agent) = agent.upgrade() else { return };
        let shared = &agent.shared;
        let status = Patch::Merge(json!({"status": node_status(&shared.config, &shared.started_at)}));
        match shared.cluster.patch(resource("v1", "Node"), None, &shared.config.name, &status, Some("status")).await {
            Ok(_) => {}
            Err(e) if e.reason == Reason::NotFound => {
                if let Err(error) = register(shared).await {
                    tracing::warn!(%error, "registering the node again");
                }
            }
            Err(error) => tracing::warn!(%error, "node heartbeat"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(revision: &str, phase: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": "p", "namespace": "default", "resourceVersion": revision},
            "status": {"phase": phase}}))
    }

    #[test]
    fn a_hinted_pod_starts_only_where_the_informer_cannot_know_better() {
        let hinted = pod("56", "Pending");
        // The informer has not reached the binding yet: start from what the API said.
        let started = to_start(hinted.clone(), 54, || panic!("the cache is not read when behind"));
        assert_eq!(started.as_deref(), Some(&*hinted));
        // The informer is past it and holds a newer state: that one.
        let newer = pod("58", "Running");
        assert_eq!(to_start(hinted.clone(), 58, || Some(newer.clone())).as_deref(), Some(&*newer));
        // The informer is past it and the pod is not there: deleted since, not started.
        assert_eq!(to_start(hinted.clone(), 60, || None), None);
        assert_eq!(to_start(hinted, 56, || None), None, "at its own revision the cache decides");
        // No revision to compare: only the cache decides.
        let unversioned = Arc::new(json!({"metadata": {"name": "p", "namespace": "default"}}));
        assert_eq!(to_start(unversioned, 0, || None), None);
    }
}
