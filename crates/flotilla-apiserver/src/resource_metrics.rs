//! Resource metrics: the `metrics.k8s.io/v1beta1` API (`PodMetrics`, `NodeMetrics`) that
//! `kubectl top` reads, and the usage the HorizontalPodAutoscaler scales on, as
//! metrics-server provides them in Kubernetes.
//!
//! A scraper task ([`scrape`]) asks every node's kubelet for its
//! [`Summary`](flotilla_client::Summary) every `metric_resolution`, and
//! [`ResourceMetrics`] keeps the last two samples of each container and pod: CPU usage
//! is the rate of CPU time between them (in cores), memory the latest working set, a
//! pod's request rate the rate of its request count. As in metrics-server, a pod (or a
//! node) appears once it has two samples, a restarted counter starts over, and the
//! pods of a node that could not be scraped are gone until it answers again. A node's
//! usage is the sum of its pods'.
//!
//! Nothing is stored: the samples live in memory, and the API ([`serve`]) is read-only.

mod scrape;
mod serve;

pub(crate) use scrape::scrape;
pub(crate) use serve::{Answer, GROUP, aggregated_discovery, group_entry, serve};

use flotilla_client::Summary;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// What the pods and nodes of the cluster use, from the last two scrapes of each node.
/// Cheap to clone: clones share the samples.
#[derive(Debug, Clone, Default)]
pub struct ResourceMetrics {
    nodes: Arc<RwLock<HashMap<String, NodeSamples>>>,
}

/// One pod's usage over the last window.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// When the later sample was taken.
    pub timestamp: Timestamp,
    /// The time between the two samples the rates come from.
    pub window: Duration,
    pub containers: Vec<ContainerUsage>,
    /// HTTP requests answered per second over the window.
    pub requests_per_second: f64,
}

/// One container's usage over the last window.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    /// CPU used, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Memory held at the later sample, in bytes.
    pub memory_bytes: u64,
}

impl PodUsage {
    /// The pod's CPU use in cores (all its containers).
    pub fn cpu_cores(&self) -> f64 {
        self.cpu_nanocores() as f64 / 1e9
    }

    /// The pod's CPU use in billionths of a core.
    pub fn cpu_nanocores(&self) -> u64 {
        self.containers.iter().map(|c| c.cpu_nanocores).fold(0, u64::saturating_add)
    }

    /// The memory the pod's containers hold, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.containers.iter().map(|c| c.memory_bytes).fold(0, u64::saturating_add)
    }
}

/// One node's usage: the sum of its pods'.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub name: String,
    pub timestamp: Timestamp,
    pub window: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// A cumulative counter's last two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counter {
    previous: Option<(Timestamp, u64)>,
    last: (Timestamp, u64),
}

impl Counter {
    fn new(at: Timestamp, value: u64) -> Counter {
        Counter { previous: None, last: (at, value) }
    }

    /// The counter read `value` at `at`: a reading no later than the last is ignored, a
    /// smaller value (the counter restarted) starts over.
    fn observe(mut self, at: Timestamp, value: u64) -> Counter {
        if at <= self.last.0 {
            return self;
        }
        if value < self.last.1 {
            return Counter::new(at, value);
        }
        self.previous = Some(self.last);
        self.last = (at, value);
        self
    }

    /// The time between the two readings, if there are two.
    fn window(&self) -> Option<Duration> {
        let (before, _) = self.previous?;
        let span = self.last.0.duration_since(before);
        Duration::try_from(span).ok().filter(|d| !d.is_zero())
    }

    /// The increase per second of `unit` (1e9 for nanoseconds per second: nanocores).
    fn rate(&self, unit: f64) -> Option<f64> {
        let (_, before) = self.previous?;
        let window = self.window()?;
        Some((self.last.1 - before) as f64 / unit / window.as_secs_f64())
    }

    /// The increase of nanoseconds per second, in nanocores, without going through a
    /// float for the whole count.
    fn nanos_per_second(&self) -> Option<u64> {
        let (_, before) = self.previous?;
        let window = self.window()?.as_nanos();
        let per_second = u128::from(self.last.1 - before) * 1_000_000_000 / window;
        Some(u64::try_from(per_second).unwrap_or(u64::MAX))
    }
}

/// A container's samples.
#[derive(Debug, Clone)]
struct ContainerSamples {
    name: String,
    cpu: Counter,
    memory_bytes: u64,
}

/// A pod's samples.
#[derive(Debug, Clone)]
struct PodSamples {
    uid: String,
    containers: Vec<ContainerSamples>,
    requests: Counter,
}

/// A node's samples: when it was scraped, and its pods by (namespace, name).
#[derive(Debug, Clone)]
struct NodeSamples {
    scraped: Counter,
    pods: HashMap<(String, String), PodSamples>,
}

/// The time of a summary: the node's own clock (so that the scrape's latency does not
/// skew rates), or now if the node sent none.
fn summary_time(summary: &Summary) -> Timestamp {
    summary.node.time.parse().unwrap_or_else(|_| Timestamp::now())
}

impl NodeSamples {
    /// The samples after `summary`, carrying over what `before` had of the same pods
    /// (same uid) and containers.
    fn next(before: Option<&NodeSamples>, summary: &Summary) -> NodeSamples {
        let at = summary_time(summary);
        let mut pods = HashMap::new();
        for pod in &summary.pods {
            let key = (pod.pod_ref.namespace.clone(), pod.pod_ref.name.clone());
            let old = before.and_then(|b| b.pods.get(&key)).filter(|old| old.uid == pod.pod_ref.uid);
            let containers = pod
                .containers
                .iter()
                .map(|container| {
                    let cpu_nanos = container.cpu.usage_core_nano_seconds;
                    let old_cpu = old.and_then(|o| o.containers.iter().find(|c| c.name == container.name));
                    ContainerSamples {
                        name: container.name.clone(),
                        cpu: match old_cpu {
                            Some(old) => old.cpu.observe(at, cpu_nanos),
                            None => Counter::new(at, cpu_nanos),
                        },
                        memory_bytes: container.memory.working_set_bytes,
                    }
                })
                .collect();
            let requests = match old {
                Some(old) => old.requests.observe(at, pod.http_requests),
                None => Counter::new(at, pod.http_requests),
            };
            pods.insert(key, PodSamples { uid: pod.pod_ref.uid.clone(), containers, requests });
        }
        let scraped = match before {
            Some(before) => before.scraped.observe(at, 0),
            None => Counter::new(at, 0),
        };
        NodeSamples { scraped, pods }
    }
}

impl PodSamples {
    /// The pod's usage, once every container has two samples.
    fn usage(&self, node: &str, key: &(String, String)) -> Option<PodUsage> {
        if self.containers.is_empty() {
            return None;
        }
        let containers = self
            .containers
            .iter()
            .map(|c| {
                Some(ContainerUsage {
                    name: c.name.clone(),
                    cpu_nanocores: c.cpu.nanos_per_second()?,
                    memory_bytes: c.memory_bytes,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let first = self.containers.first()?;
        Some(PodUsage {
            namespace: key.0.clone(),
            name: key.1.clone(),
            node: node.to_string(),
            timestamp: first.cpu.last.0,
            window: first.cpu.window()?,
            containers,
            requests_per_second: self.requests.rate(1.0).unwrap_or(0.0),
        })
    }
}

impl ResourceMetrics {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, NodeSamples>> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one scrape round: the summaries of the nodes that answered. A node that did
    /// not answer loses its samples, as metrics-server forgets it.
    pub(crate) fn record(&self, summaries: &[(String, Summary)]) {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let next: HashMap<String, NodeSamples> = summaries
            .iter()
            .map(|(node, summary)| (node.clone(), NodeSamples::next(nodes.get(node), summary)))
            .collect();
        *nodes = next;
    }

    /// The usage of every measured pod, of `namespace` or of all, sorted by namespace and
    /// name.
    pub fn pods(&self, namespace: Option<&str>) -> Vec<PodUsage> {
        let nodes = self.read();
        let mut pods: Vec<PodUsage> = nodes
            .iter()
            .flat_map(|(node, samples)| {
                samples
                    .pods
                    .iter()
                    .filter(|(key, _)| namespace.is_none_or(|ns| key.0 == ns))
                    .filter_map(|(key, pod)| pod.usage(node, key))
            })
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// The usage of pod `namespace/name`, if it is measured.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodUsage> {
        let key = (namespace.to_string(), name.to_string());
        let nodes = self.read();
        nodes.iter().find_map(|(node, samples)| samples.pods.get(&key).and_then(|pod| pod.usage(node, &key)))
    }

    /// The usage of every node scraped twice in a row, sorted by name.
    pub fn nodes(&self) -> Vec<NodeUsage> {
        let nodes = self.read();
        let mut usage: Vec<NodeUsage> =
            nodes.iter().filter_map(|(name, samples)| Self::node_usage(name, samples)).collect();
        usage.sort_by(|a, b| a.name.cmp(&b.name));
        usage
    }

    /// The usage of node `name`, if it was scraped twice in a row.
    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        self.read().get(name).and_then(|samples| Self::node_usage(name, samples))
    }

    fn node_usage(name: &str, samples: &NodeSamples) -> Option<NodeUsage> {
        let window = samples.scraped.window()?;
        let (mut cpu, mut memory) = (0u64, 0u64);
        for (key, pod) in &samples.pods {
            match pod.usage(name, key) {
                Some(usage) => {
                    cpu = cpu.saturating_add(usage.cpu_nanocores());
                    memory = memory.saturating_add(usage.memory_bytes());
                }
                // A pod new since the last scrape has no rate yet: its memory counts.
                None => {
                    memory = pod.containers.iter().map(|c| c.memory_bytes).fold(memory, u64::saturating_add);
                }
            }
        }
        Some(NodeUsage {
            name: name.to_string(),
            timestamp: samples.scraped.last.0,
            window,
            cpu_nanocores: cpu,
            memory_bytes: memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_client::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats};

    /// A summary of node `n1` at `seconds` past a fixed instant, with pods given as
    /// (name, uid, cumulative CPU nanoseconds, memory bytes, requests).
    fn summary(seconds: f64, pods: &[(&str, &str, u64, u64, u64)]) -> Summary {
        let base: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap_or(Timestamp::UNIX_EPOCH);
        let at = base + Duration::from_secs_f64(seconds);
        Summary {
            node: NodeStats { node_name: "n1".into(), start_time: None, time: at.to_string() },
            pods: pods
                .iter()
                .map(|(name, uid, cpu, memory, requests)| PodStats {
                    pod_ref: PodReference { name: name.to_string(), namespace: "default".into(), uid: uid.to_string() },
                    containers: vec![ContainerStats {
                        name: "main".into(),
                        cpu: CpuStats { usage_core_nano_seconds: *cpu },
                        memory: MemoryStats { working_set_bytes: *memory },
                    }],
                    http_requests: *requests,
                })
                .collect(),
        }
    }

    fn record(metrics: &ResourceMetrics, summary: Summary) {
        metrics.record(&[("n1".to_string(), summary)]);
    }

    #[test]
    fn cpu_is_the_rate_between_the_last_two_samples() {
        let metrics = ResourceMetrics::default();
        record(&metrics, summary(0.0, &[("burner", "u1", 1_000_000_000, 1 << 20, 0)]));
        assert_eq!(metrics.pods(None), Vec::new(), "one sample is no rate");
        assert_eq!(metrics.nodes(), Vec::new());
        // Half a core over two seconds, 30 requests: 15 a second.
        record(&metrics, summary(2.0, &[("burner", "u1", 2_000_000_000, 3 << 20, 30)]));
        let pod = metrics.pod("default", "burner").expect("measured");
        assert_eq!(pod.cpu_nanocores(), 500_000_000);
        assert!((pod.cpu_cores() - 0.5).abs() < 1e-9);
        assert_eq!(pod.memory_bytes(), 3 << 20, "memory is the latest");
        assert!((pod.requests_per_second - 15.0).abs() < 1e-9);
        assert_eq!(pod.window, Duration::from_secs(2));
        assert_eq!(pod.node, "n1");
        // Only the last two count: idle since.
        record(&metrics, summary(3.0, &[("burner", "u1", 2_000_000_000, 0, 30)]));
        let pod = metrics.pod("default", "burner").expect("measured");
        assert_eq!((pod.cpu_nanocores(), pod.requests_per_second, pod.window), (0, 0.0, Duration::from_secs(1)));
        let node = metrics.node("n1").expect("scraped twice");
        assert_eq!((node.cpu_nanocores, node.window), (0, Duration::from_secs(1)));
    }

    #[test]
    fn a_new_pod_or_a_restarted_counter_starts_over() {
        let metrics = ResourceMetrics::default();
        record(&metrics, summary(0.0, &[("web", "u1", 5_000, 0, 10)]));
        record(&metrics, summary(1.0, &[("web", "u1", 10_000, 0, 20)]));
        assert!(metrics.pod("default", "web").is_some());
        // Same name, new uid: a new pod, no rate yet.
        record(&metrics, summary(2.0, &[("web", "u2", 100, 0, 0)]));
        assert_eq!(metrics.pod("default", "web"), None);
        record(&metrics, summary(3.0, &[("web", "u2", 200, 0, 1)]));
        assert_eq!(metrics.pod("default", "web").map(|p| p.cpu_nanocores()), Some(100));
        // A counter that went down restarted.
        record(&metrics, summary(4.0, &[("web", "u2", 50, 0, 1)]));
        assert_eq!(metrics.pod("default", "web"), None);
        // A sample no newer than the last is ignored.
        record(&metrics, summary(4.0, &[("web", "u2", 60, 0, 1)]));
        assert_eq!(metrics.pod("default", "web"), None);
    }

    #[test]
    fn a_node_sums_its_pods_and_is_forgotten_when_it_does_not_answer() {
        let metrics = ResourceMetrics::default();
        record(&metrics, summary(0.0, &[("a", "ua", 0, 100, 0), ("b", "ub", 0, 200, 0)]));
        record(&metrics, summary(1.0, &[("a", "ua", 250_000_000, 100, 0), ("b", "ub", 1_000_000, 200, 0)]));
        let node = metrics.node("n1").expect("scraped twice");
        assert_eq!((node.cpu_nanocores, node.memory_bytes), (251_000_000, 300));
        assert_eq!(metrics.pods(Some("default")).iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(metrics.pods(Some("other")).is_empty());
        metrics.record(&[]);
        assert_eq!((metrics.nodes(), metrics.pods(None)), (Vec::new(), Vec::new()));
    }
}
