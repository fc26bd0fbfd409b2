//! The node's metrics, in the registry of [`NodeConfig::metrics`](crate::NodeConfig::metrics):
//!
//! - per pod (labels `namespace`, `pod`; a pod's series go when the agent drops it):
//!   - `flotilla_pod_requests_total{namespace,pod,code}`, `code` the class (`2xx`, `5xx`,
//!     …), and `flotilla_pod_request_duration_seconds{namespace,pod}` (to the response
//!     head): counted in [`Node::dispatch`](crate::Node::dispatch), where every request
//!     enters a pod, with label values resolved once per pod;
//!   - read when scraped, costing the request path nothing:
//!     `flotilla_pod_requests_in_flight`, `flotilla_pod_cpu_seconds_total` (the runtime's
//!     CPU account, over all the containers' runs), `flotilla_pod_memory_bytes` and
//!     `flotilla_pod_memory_peak_bytes` (linear memory of the live instances),
//!     `flotilla_pod_restarts_total` (the containers' `restartCount`);
//! - per node: `kubelet_running_pods`, `flotilla_node_pods{phase}`,
//!   `kubelet_pod_start_duration_seconds` (from the agent first seeing a pod to its
//!   phase being Running, as kubelet measures it), and the compile caches' lookups:
//!   `flotilla_node_image_cache_lookups_total{result}` (compiled images kept in memory)
//!   and `flotilla_runtime_compile_cache_lookups_total{result}` (wasmtime's on-disk cache).

use crate::Agent;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::{Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

/// Request latency buckets: a request into an idle pod takes tens of microseconds.
const REQUEST_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Pod start buckets: a wasm pod starts in milliseconds, a first compile takes seconds.
const START_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// The phases `flotilla_node_pods` always reports, even at 0.
pub(crate) const PHASES: [&str; 4] = ["Pending", "Running", "Succeeded", "Failed"];
/// The code classes of `flotilla_pod_requests_total`.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The families counted as things happen, and where pods get their handles.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    requests: IntCounterVec,
    durations: HistogramVec,
    /// `kubelet_pod_start_duration_seconds`.
    pub(crate) pod_start: Histogram,
}

impl NodeMetrics {
    /// Registers the families counted as things happen; the ones read when scraped come
    /// with [`NodeMetrics::register_collector`], once the agent exists.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<NodeMetrics> {
        let requests = IntCounterVec::new(
            Opts::new("flotilla_pod_requests_total", "HTTP requests served by a pod, by the response's code class."),
            &["namespace", "pod", "code"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_pod_request_duration_seconds",
                "Time a pod took to answer an HTTP request, until the response head.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["namespace", "pod"],
        )?;
        let pod_start = Histogram::with_opts(
            HistogramOpts::new(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from the node agent seeing a pod for the first time to the pod starting to run.",
            )
            .buckets(START_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(pod_start.clone()))?;
        Ok(NodeMetrics { requests, durations, pod_start })
    }

    /// Registers the families read from the agent's pods when scraped.
    pub(crate) fn register_collector(registry: &Registry, agent: Weak<Agent>) -> prometheus::Result<()> {
        registry.register(Box::new(PodCollector::new(agent)?))
    }

    /// The request handles of pod `namespace/pod`.
    pub(crate) fn pod(&self, namespace: &str, pod: &str) -> PodRequests {
        PodRequests {
            requests: self.requests.clone(),
            durations: self.durations.clone(),
            duration: self.durations.with_label_values(&[namespace, pod]),
            codes: Default::default(),
            removed: Mutex::new(false),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        }
    }
}

/// One pod's request series. Its code classes appear when first seen.
#[derive(Debug)]
pub(crate) struct PodRequests {
    requests: IntCounterVec,
    durations: HistogramVec,
    duration: Histogram,
    codes: [OnceLock<IntCounter>; 5],
    /// Set by [`PodRequests::remove`]: a request still in flight then must not bring a
    /// series back. Held while a first-seen class registers its series.
    removed: Mutex<bool>,
    namespace: String,
    pod: String,
}

impl PodRequests {
    /// Counts a request answered with `status` after `elapsed`.
    pub(crate) fn observe(&self, status: http::StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        // After removal the duration handle is detached from the family: observing it
        // brings nothing back.
        self.duration.observe(elapsed.as_secs_f64());
        let counter = match self.codes[class].get() {
            Some(counter) => counter,
            None => {
                let removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
                if *removed {
                    return;
                }
                self.codes[class].get_or_init(|| {
                    self.requests.with_label_values(&[self.namespace.as_str(), self.pod.as_str(), CODE_CLASSES[class]])
                })
            }
        };
        counter.inc();
    }

    /// Requests the pod has answered so far, of every code class.
    pub(crate) fn total(&self) -> u64 {
        self.codes.iter().filter_map(OnceLock::get).map(IntCounter::get).sum()
    }

    /// Removes the pod's series: it is gone, and so are they.
    pub(crate) fn remove(&self) {
        let mut removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        *removed = true;
        for (class, counter) in CODE_CLASSES.iter().zip(&self.codes) {
            if counter.get().is_some() {
                let _ = self.requests.remove_label_values(&[self.namespace.as_str(), self.pod.as_str(), class]);
            }
        }
        let _ = self.durations.remove_label_values(&[&self.namespace, &self.pod]);
    }
}

/// The families read from the agent when scraped: filled afresh each time from the pods
/// the agent has, so a gone pod's series are gone too.
struct PodCollector {
    agent: Weak<Agent>,
    /// One scrape at a time fills the families.
    scraping: Mutex<()>,
    in_flight: IntGaugeVec,
    cpu: CounterVec,
    memory: IntGaugeVec,
    memory_peak: IntGaugeVec,
    restarts: IntCounterVec,
    running: IntGauge,
    phases: IntGaugeVec,
    image_cache: IntCounterVec,
    compile_cache: IntCounterVec,
}

impl std::fmt::Debug for PodCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCollector").finish_non_exhaustive()
    }
}

impl PodCollector {
    fn new(agent: Weak<Agent>) -> prometheus::Result<PodCollector> {
        let pod_labels = &["namespace", "pod"];
        Ok(PodCollector {
            agent,
            scraping: Mutex::new(()),
            in_flight: IntGaugeVec::new(
                Opts::new("flotilla_pod_requests_in_flight", "HTTP requests a pod is serving now."),
                pod_labels,
            )?,
            cpu: CounterVec::new(
                Opts::new(
                    "flotilla_pod_cpu_seconds_total",
                    "CPU time a pod's wasm instances have used, over all its containers' runs.",
                ),
                pod_labels,
            )?,
            memory: IntGaugeVec::new(
                Opts::new("flotilla_pod_memory_bytes", "Linear memory a pod's live wasm instances hold."),
                pod_labels,
            )?,
            memory_peak: IntGaugeVec::new(
                Opts::new("flotilla_pod_memory_peak_bytes", "The most linear memory a pod's wasm instances have held."),
                pod_labels,
            )?,
            restarts: IntCounterVec::new(
                Opts::new("flotilla_pod_restarts_total", "Restarts of a pod's containers (their restartCount)."),
                pod_labels,
            )?,
            running: IntGauge::new(
                "kubelet_running_pods",
                "Number of pods the node agent runs whose phase is Running.",
            )?,
            phases: IntGaugeVec::new(Opts::new("flotilla_node_pods", "Pods on the node agent, by phase."), &["phase"])?,
            image_cache: IntCounterVec::new(
                Opts::new(
                    "flotilla_node_image_cache_lookups_total",
                    "Loads of an image by the node: hits found it compiled in memory, misses compiled it.",
                ),
                &["result"],
            )?,
            compile_cache: IntCounterVec::new(
                Opts::new(
                    "flotilla_runtime_compile_cache_lookups_total",
                    "Compilations the runtime's on-disk cache served (hit) or did not (miss).",
                ),
                &["result"],
            )?,
        })
    }

    fn families(&self) -> [&dyn Collector; 9] {
        [
            &self.in_flight,
            &self.cpu,
            &self.memory,
            &self.memory_peak,
            &self.restarts,
            &self.running,
            &self.phases,
            &self.image_cache,
            &self.compile_cache,
        ]
    }

    fn fill(&self, agent: &Agent) {
        for vec in [&self.in_flight, &self.memory, &self.memory_peak, &self.phases] {
            vec.reset();
        }
        self.cpu.reset();
        self.restarts.reset();
        self.image_cache.reset();
        self.compile_cache.reset();
        let mut phases = [0i64; PHASES.len()];
        for (key, handles) in agent.pod_handles() {
            let labels = [key.namespace.as_str(), key.name.as_str()];
            let (mut in_flight, mut cpu, mut memory, mut peak, mut restarts) = (0, Duration::ZERO, 0, 0, 0);
            for container in &handles.containers {
                in_flight += container.in_flight();
                restarts += u64::from(container.restarts.load(std::sync::atomic::Ordering::Relaxed));
                let slot = container.lock();
                cpu += slot.usage.cpu_time();
                memory += slot.usage.memory_bytes();
                peak += slot.usage.memory_peak_bytes();
            }
            self.in_flight.with_label_values(&labels).set(gauge(in_flight));
            self.cpu.with_label_values(&labels).inc_by(cpu.as_secs_f64());
            self.memory.with_label_values(&labels).set(gauge(memory));
            self.memory_peak.with_label_values(&labels).set(gauge(peak));
            self.restarts.with_label_values(&labels).inc_by(restarts);
            if let Some(count) = phases.get_mut(handles.stats.phase()) {
                *count += 1;
            }
        }
        for (phase, count) in PHASES.iter().zip(phases) {
            self.phases.with_label_values(&[phase]).set(count);
        }
        self.running.set(phases[1]);
        let (hits, misses) = agent.shared.images.cache_stats();
        self.image_cache.with_label_values(&["hit"]).inc_by(hits);
        self.image_cache.with_label_values(&["miss"]).inc_by(misses);
        if let Some((hits, misses)) = agent.shared.runtime.cache_stats() {
            self.compile_cache.with_label_values(&["hit"]).inc_by(u64::try_from(hits).unwrap_or(u64::MAX));
            self.compile_cache.with_label_values(&["miss"]).inc_by(u64::try_from(misses).unwrap_or(u64::MAX));
        }
    }
}

fn gauge(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

impl Collector for PodCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.families().into_iter().flat_map(|family| family.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scraping = self.scraping.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(agent) = self.agent.upgrade() else { return Vec::new() };
        self.fill(&agent);
        self.families().into_iter().flat_map(|family| family.collect()).collect()
    }
}

/// A pod's phase, as the agent last computed it, for `flotilla_node_pods`.
#[derive(Debug)]
pub(crate) struct PodStats {
    /// An index into [`PHASES`].
    phase: std::sync::atomic::AtomicUsize,
    /// Whether the pod's start was counted (or is not to be: it ran before the agent).
    start_counted: std::sync::atomic::AtomicBool,
    /// When the agent first saw the pod.
    seen: std::time::Instant,
}

impl PodStats {
    pub(crate) fn new(phase: &str) -> PodStats {
        PodStats {
            phase: std::sync::atomic::AtomicUsize::new(phase_index(phase)),
            start_counted: std::sync::atomic::AtomicBool::new(phase != "Pending"),
            seen: std::time::Instant::now(),
        }
    }

    fn phase(&self) -> usize {
        self.phase.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pod's phase is now `phase`: the first time it is Running, its start is counted.
    pub(crate) fn set_phase(&self, phase: &str, metrics: &NodeMetrics) {
        self.phase.store(phase_index(phase), std::sync::atomic::Ordering::Relaxed);
        if phase == "Running" && !self.start_counted.swap(true, std::sync::atomic::Ordering::Relaxed) {
            metrics.pod_start.observe(self.seen.elapsed().as_secs_f64());
        }
    }
}

fn phase_index(phase: &str) -> usize {
    PHASES.iter().position(|p| *p == phase).unwrap_or(0)
}

/// Every family of `registry` in the text exposition format (0.0.4).
pub(crate) fn encode(registry: &Registry) -> prometheus::Result<Vec<u8>> {
    let mut buffer = Vec::with_capacity(64 * 1024);
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buffer)?;
    Ok(buffer)
}

/// The Content-Type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        String::from_utf8(encode(registry).unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn a_pods_requests_are_counted_by_class_and_removed_with_it() -> prometheus::Result<()> {
        let registry = Registry::new();
        let metrics = NodeMetrics::register(&registry)?;
        let web = metrics.pod("shop", "web-1");
        let other = metrics.pod("shop", "web-2");
        web.observe(http::StatusCode::OK, Duration::from_micros(40));
        web.observe(http::StatusCode::CREATED, Duration::from_micros(60));
        web.observe(http::StatusCode::BAD_GATEWAY, Duration::from_millis(2));
        other.observe(http::StatusCode::NOT_FOUND, Duration::from_micros(40));
        let scraped = text(&registry);
        assert!(
            scraped.contains(r#"flotilla_pod_requests_total{code="2xx",namespace="shop",pod="web-1"} 2"#),
            "{scraped}"
        );
        assert!(
            scraped.contains(r#"flotilla_pod_requests_total{code="5xx",namespace="shop",pod="web-1"} 1"#),
            "{scraped}"
        );
        assert!(!scraped.contains(r#"code="4xx",namespace="shop",pod="web-1""#), "classes appear when seen: {scraped}");
        assert!(scraped.contains(r#"flotilla_pod_request_duration_seconds_count{namespace="shop",pod="web-1"} 3"#));
        assert!(
            scraped.contains(
                r#"flotilla_pod_request_duration_seconds_bucket{namespace="shop",pod="web-1",le="0.00005"} 1"#
            )
        );
        assert_eq!((web.total(), other.total()), (3, 1));
        web.remove();
        // A request still in flight when the pod went answers after: nothing comes back.
        web.observe(http::StatusCode::NOT_FOUND, Duration::from_micros(40));
        web.observe(http::StatusCode::OK, Duration::from_micros(40));
        let scraped = text(&registry);
        assert!(!scraped.contains(r#"pod="web-1""#), "{scraped}");
        assert!(scraped.contains(r#"flotilla_pod_requests_total{code="4xx",namespace="shop",pod="web-2"} 1"#));
        Ok(())
    }

    #[test]
    fn a_pod_start_is_counted_once_and_only_for_pods_seen_pending() -> prometheus::Result<()> {
        let metrics = NodeMetrics::register(&Registry::new())?;
        let fresh = PodStats::new("Pending");
        fresh.set_phase("Pending", &metrics);
        assert_eq!(metrics.pod_start.get_sample_count(), 0);
        fresh.set_phase("Running", &metrics);
        fresh.set_phase("Running", &metrics);
        assert_eq!(metrics.pod_start.get_sample_count(), 1);
        assert_eq!(fresh.phase(), 1);
        // Running before the agent (re)started: not a start.
        let adopted = PodStats::new("Running");
        adopted.set_phase("Running", &metrics);
        assert_eq!(metrics.pod_start.get_sample_count(), 1);
        assert_eq!(PodStats::new("Unknown").phase(), 0);
        Ok(())
    }
}
