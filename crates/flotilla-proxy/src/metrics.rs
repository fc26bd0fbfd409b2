//! The proxy's metrics, registered in the registry of
//! [`ProxyConfig::metrics`](crate::ProxyConfig::metrics):
//!
//! - per Service (labels `namespace`, `service`), for every request routed to it (from
//!   an Ingress, a NodePort or LoadBalancer listener, or a pod through
//!   [`Proxy::forward`](crate::Proxy::forward)):
//!   - `flotilla_service_requests_total{namespace,service,code}`, `code` the answer's
//!     HTTP status (`"200"`, `"503"`, …);
//!   - `flotilla_service_request_duration_seconds{namespace,service}`, until the
//!     response head;
//!   - `flotilla_service_upstream_errors_total{namespace,service,reason}`, `reason` one
//!     of [`REASONS`];
//! - per Ingress route (labels `namespace`, `ingress`, `service`: the Ingress and the
//!   Service its rule names), for every request to the Ingress listeners:
//!   `flotilla_ingress_requests_total{namespace,ingress,service,code}` and
//!   `flotilla_ingress_request_duration_seconds{namespace,ingress,service}`; a request no
//!   rule matches counts with all three labels empty.
//!
//! Label values come from the cluster's objects only, never from a request (no hosts,
//! paths or client addresses), and a Service's or Ingress route's series are removed
//! when it goes: the series stay bounded by the objects. The request path holds handles
//! resolved once per object (in the routing snapshot): it hashes no label value and
//! takes no lock.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// Request latency buckets, from 50 µs (an idle pod in process) to 10 s.
const REQUEST_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The `reason`s of `flotilla_service_upstream_errors_total`.
pub(crate) const REASONS: [&str; 5] = [
    // 503: the Service port has no ready endpoint (nor did one come up when its
    // Deployment was woken from zero).
    "no_endpoints",
    // The pod answered with a 5xx of its own (the runtime answers 502 for a request that
    // trapped or ran out of memory, 504 past the pod's deadline).
    "pod_error",
    // 504: the pod did not answer within the upstream timeout.
    "timeout",
    // 502: the pod could not take the request (its node has no agent, or the agent does
    // not run it).
    "unreachable",
    // A try failed as `unreachable` and the request went to another endpoint (counted
    // besides how that try ended).
    "retried",
];

/// Why a request to a Service failed upstream: an index into [`REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upstream {
    NoEndpoints = 0,
    PodError = 1,
    Timeout = 2,
    Unreachable = 3,
    Retried = 4,
}

/// The proxy's metric families, and where Services and Ingress routes get their handles.
#[derive(Debug, Clone)]
pub(crate) struct ProxyMetrics {
    service_requests: IntCounterVec,
    service_durations: HistogramVec,
    upstream_errors: IntCounterVec,
    ingress_requests: IntCounterVec,
    ingress_durations: HistogramVec,
}

impl ProxyMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<ProxyMetrics> {
        let service_requests = IntCounterVec::new(
            Opts::new(
                "flotilla_service_requests_total",
                "HTTP requests routed to a Service, by the answer's status code.",
            ),
            &["namespace", "service", "code"],
        )?;
        let service_durations = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_service_request_duration_seconds",
                "Time from routing a request to a Service to its response head.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["namespace", "service"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "flotilla_service_upstream_errors_total",
                "Requests to a Service that failed upstream, by reason (no_endpoints, pod_error, timeout, \
                 unreachable, retried).",
            ),
            &["namespace", "service", "reason"],
        )?;
        let ingress_requests = IntCounterVec::new(
            Opts::new(
                "flotilla_ingress_requests_total",
                "HTTP requests to the Ingress listeners by the Ingress and Service of the rule they matched (empty \
                 for none), and the answer's status code.",
            ),
            &["namespace", "ingress", "service", "code"],
        )?;
        let ingress_durations = HistogramVec::new(
            HistogramOpts::new(
                "flotilla_ingress_request_duration_seconds",
                "Time from a request's head on an Ingress listener to its response head.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["namespace", "ingress", "service"],
        )?;
        registry.register(Box::new(service_requests.clone()))?;
        registry.register(Box::new(service_durations.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(ingress_requests.clone()))?;
        registry.register(Box::new(ingress_durations.clone()))?;
        Ok(ProxyMetrics { service_requests, service_durations, upstream_errors, ingress_requests, ingress_durations })
    }

    /// The handles of Service `namespace/name`.
    pub(crate) fn service(&self, namespace: &str, name: &str) -> ServiceMetrics {
        let labels = [namespace, name];
        let upstream = REASONS.map(|reason| self.upstream_errors.with_label_values(&[namespace, name, reason]));
        ServiceMetrics {
            requests: CodeCounters::new(self.service_requests.clone(), &labels),
            durations: self.service_durations.clone(),
            duration: self.service_durations.with_label_values(&labels),
            upstream_errors: self.upstream_errors.clone(),
            upstream,
        }
    }

    /// The handles of the rules of Ingress `namespace/ingress` that send to `service`
    /// (all three empty: requests no rule matches).
    pub(crate) fn route(&self, namespace: &str, ingress: &str, service: &str) -> RouteMetrics {
        let labels = [namespace, ingress, service];
        RouteMetrics {
            requests: CodeCounters::new(self.ingress_requests.clone(), &labels),
            durations: self.ingress_durations.clone(),
            duration: self.ingress_durations.with_label_values(&labels),
        }
    }
}

/// One Service's series.
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    requests: CodeCounters,
    durations: HistogramVec,
    duration: Histogram,
    upstream_errors: IntCounterVec,
    upstream: [IntCounter; REASONS.len()],
}

impl ServiceMetrics {
    /// Counts a request answered with `status` (its head) after `elapsed`.
    pub(crate) fn observe(&self, status: http::StatusCode, elapsed: Duration) {
        self.requests.inc(status);
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts an upstream failure.
    pub(crate) fn upstream_error(&self, reason: Upstream) {
        self.upstream[reason as usize].inc();
    }

    /// Removes the Service's series: it is gone. Handles still held count nowhere.
    pub(crate) fn remove(&self) {
        let labels = self.requests.remove();
        let _ = self.durations.remove_label_values(labels);
        if let [namespace, service] = labels {
            for reason in REASONS {
                let _ = self.upstream_errors.remove_label_values(&[namespace.as_str(), service, reason]);
            }
        }
    }
}

/// The series of the rules of one Ingress that send to one Service.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    requests: CodeCounters,
    durations: HistogramVec,
    duration: Histogram,
}

impl RouteMetrics {
    /// Counts a request answered with `status` (its head) after `elapsed`.
    pub(crate) fn observe(&self, status: http::StatusCode, elapsed: Duration) {
        self.requests.inc(status);
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Removes the route's series: its Ingress is gone, or no longer sends to its Service.
    pub(crate) fn remove(&self) {
        let labels = self.requests.remove();
        let _ = self.durations.remove_label_values(labels);
    }
}

/// The status codes `http` allows (100 to 999), by hundred.
const CLASSES: usize = 9;

/// A request counter by status code: each code's series is resolved the first time it
/// is seen, then held (a lookup by index, no hashing, no lock).
struct CodeCounters {
    vec: IntCounterVec,
    /// The label values before `code`.
    labels: Box<[String]>,
    /// By hundred, then code within it; a hundred's table is made when first used.
    codes: [OnceLock<Box<[OnceLock<IntCounter>; 100]>>; CLASSES],
    /// Set once the series are removed; held while a code's series is made, so that no
    /// series is made again after.
    removed: Mutex<bool>,
}

impl std::fmt::Debug for CodeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCounters").field("labels", &self.labels).finish_non_exhaustive()
    }
}

impl CodeCounters {
    fn new(vec: IntCounterVec, labels: &[&str]) -> CodeCounters {
        CodeCounters {
            vec,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            codes: Default::default(),
            removed: Mutex::new(false),
        }
    }

    fn slot(&self, code: u16) -> Option<&OnceLock<IntCounter>> {
        let code = usize::from(code);
        let class = self.codes.get((code / 100).checked_sub(1)?)?;
        let table = class.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        table.get(code % 100)
    }

    fn inc(&self, status: http::StatusCode) {
        let Some(slot) = self.slot(status.as_u16()) else { return };
        if let Some(counter) = slot.get() {
            counter.inc();
            return;
        }
        // The first request with this code: make its series, unless they were removed.
        let removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        if *removed {
            return;
        }
        let counter = slot.get_or_init(|| {
            let mut values: Vec<&str> = self.labels.iter().map(String::as_str).collect();
            values.push(status.as_str());
            self.vec.with_label_values(&values)
        });
        counter.inc();
    }

    /// Removes every code's series; the label values before `code`.
    fn remove(&self) -> &[String] {
        let mut removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        *removed = true;
        for (hundred, class) in (1u16..).zip(&self.codes) {
            let Some(table) = class.get() else { continue };
            for (code, slot) in (hundred * 100..).zip(table.iter()) {
                if slot.get().is_some() {
                    let mut values = self.labels.to_vec();
                    values.push(code.to_string());
                    let _ = self.vec.remove_label_values(&values);
                }
            }
        }
        &self.labels
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every family of `registry` in the text exposition format.
    pub(crate) fn text(registry: &Registry) -> String {
        let mut buffer = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buffer)
            .expect("the text format");
        String::from_utf8(buffer).expect("UTF-8")
    }

    #[test]
    fn registers_once_per_registry() {
        let registry = Registry::new();
        assert!(ProxyMetrics::register(&registry).is_ok());
        assert!(ProxyMetrics::register(&registry).is_err(), "the same families twice");
    }

    #[test]
    fn codes_and_reasons_are_counted_and_removed_with_their_object() -> prometheus::Result<()> {
        let registry = Registry::new();
        let metrics = ProxyMetrics::register(&registry)?;
        let web = metrics.service("shop", "web");
        let db = metrics.service("shop", "db");
        web.observe(http::StatusCode::OK, Duration::from_micros(40));
        web.observe(http::StatusCode::OK, Duration::from_micros(60));
        web.observe(http::StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(2));
        web.upstream_error(Upstream::NoEndpoints);
        db.observe(http::StatusCode::from_u16(999).expect("a code"), Duration::from_secs(20));
        let route = metrics.route("shop", "front", "web");
        route.observe(http::StatusCode::NOT_FOUND, Duration::from_micros(80));

        let scraped = text(&registry);
        for line in [
            r#"flotilla_service_requests_total{code="200",namespace="shop",service="web"} 2"#,
            r#"flotilla_service_requests_total{code="503",namespace="shop",service="web"} 1"#,
            r#"flotilla_service_requests_total{code="999",namespace="shop",service="db"} 1"#,
            r#"flotilla_service_upstream_errors_total{namespace="shop",reason="no_endpoints",service="web"} 1"#,
            r#"flotilla_service_upstream_errors_total{namespace="shop",reason="timeout",service="web"} 0"#,
            r#"flotilla_service_request_duration_seconds_bucket{namespace="shop",service="web",le="0.00005"} 1"#,
            r#"flotilla_service_request_duration_seconds_bucket{namespace="shop",service="db",le="+Inf"} 1"#,
            r#"flotilla_ingress_requests_total{code="404",ingress="front",namespace="shop",service="web"} 1"#,
            r#"flotilla_ingress_request_duration_seconds_count{ingress="front",namespace="shop",service="web"} 1"#,
        ] {
            assert!(scraped.contains(line), "{line} in {scraped}");
        }

        web.remove();
        route.remove();
        // Handles still held (by a request in flight) count nowhere, and make no series.
        web.observe(http::StatusCode::CREATED, Duration::from_micros(40));
        web.upstream_error(Upstream::Timeout);
        route.observe(http::StatusCode::OK, Duration::from_micros(40));
        let scraped = text(&registry);
        assert!(!scraped.contains(r#"service="web""#), "{scraped}");
        assert!(scraped.contains(r#"flotilla_service_requests_total{code="999",namespace="shop",service="db"} 1"#));
        Ok(())
    }
}
