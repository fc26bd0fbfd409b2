//! Readiness, liveness and startup probes. `httpGet` probes run in process: a GET to the
//! pod's handler, success on a 2xx or 3xx answer, as kubelet judges them. `tcpSocket`,
//! `exec` and `grpc` have no meaning for a wasm component; such a probe always fails
//! with a message saying so, so the pod never looks healthier than Flotilla can tell.

use flotilla_runtime::HttpPod;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    HttpGet { path: String, headers: Vec<(String, String)> },
    Unsupported(String),
}

/// A probe from a container spec, with kubelet's defaults.
#[derive(Debug, Clone)]
pub struct Probe {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Probe {
    /// The probe at `container[field]`, if any.
    pub fn parse(container: &Value, field: &str) -> Option<Probe> {
        let probe = container.get(field).filter(|p| p.is_object())?;
        // Kubernetes bounds these by int32; so does this, so `now + period` cannot overflow.
        let seconds = |key: &str, default: u64| {
            Duration::from_secs(probe[key].as_u64().unwrap_or(default).min(u64::from(i32::MAX.unsigned_abs())))
        };
        let count = |key: &str, default: u64| u32::try_from(probe[key].as_u64().unwrap_or(default)).unwrap_or(u32::MAX);
        let action = if probe["httpGet"].is_object() {
            let get = &probe["httpGet"];
            let path = get["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("/");
            let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
            let headers = get["httpHeaders"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| Some((h["name"].as_str()?.to_string(), h["value"].as_str()?.to_string())))
                .collect();
            Action::HttpGet { path, headers }
        } else {
            let kind = ["tcpSocket", "exec", "grpc"].into_iter().find(|k| probe[*k].is_object()).unwrap_or("this");
            Action::Unsupported(format!(
                "{field}: {kind} probes are not supported by Flotilla (a wasm component has no sockets or \
                 processes to check); use httpGet"
            ))
        };
        Some(Probe {
            action,
            initial_delay: seconds("initialDelaySeconds", 0),
            period: seconds("periodSeconds", 10).max(Duration::from_secs(1)),
            timeout: seconds("timeoutSeconds", 1).max(Duration::from_secs(1)),
            success_threshold: count("successThreshold", 1).max(1),
            failure_threshold: count("failureThreshold", 3).max(1),
        })
    }

    /// Runs the probe once against `pod` (`None`: the container is not an HTTP pod).
    pub async fn check(&self, pod: Option<&HttpPod>) -> Result<(), String> {
        let (path, headers) = match &self.action {
            Action::HttpGet { path, headers } => (path, headers),
            Action::Unsupported(message) => return Err(message.clone()),
        };
        let Some(pod) = pod else {
            return Err("httpGet probe: the container is not an HTTP component".to_string());
        };
        let mut request = http::Request::get(path.as_str()).header(http::header::USER_AGENT, "kube-probe/1.37");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("httpGet probe: bad request: {e}"))?;
        match tokio::time::timeout(self.timeout, pod.handle(request)).await {
            Err(_) => Err(format!("Get \"{path}\": timed out after {:?}", self.timeout)),
            Ok(Err(error)) => Err(format!("Get \"{path}\": {error}")),
            Ok(Ok(response)) if response.status().as_u16() < 400 => Ok(()),
            Ok(Ok(response)) => Err(format!("HTTP probe failed with statuscode: {}", response.status().as_u16())),
        }
    }
}

/// A probe's running tally: consecutive successes and failures against its thresholds.
#[derive(Debug)]
pub struct Tally {
    pub probe: Probe,
    pub next: Instant,
    successes: u32,
    failures: u32,
    /// The verdict once a threshold is crossed; `None` until then.
    pub healthy: Option<bool>,
    pub last_error: Option<String>,
}

impl Tally {
    pub fn new(probe: Probe, started: Instant) -> Tally {
        let next = started + probe.initial_delay;
        Tally { probe, next, successes: 0, failures: 0, healthy: None, last_error: None }
    }

    /// Records one result; answers whether the verdict changed.
    pub fn record(&mut self, result: Result<(), String>) -> bool {
        self.next = Instant::now() + self.probe.period;
        let before = self.healthy;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                self.last_error = None;
                if self.successes >= self.probe.success_threshold {
                    self.healthy = Some(true);
                }
            }
            Err(error) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(error);
                if self.failures >= self.probe.failure_threshold {
                    self.healthy = Some(false);
                }
            }
        }
        before != self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probes_take_kubelets_defaults() {
        let container = json!({"readinessProbe": {"httpGet": {"path": "healthz", "port": 8080}}});
        let probe = Probe::parse(&container, "readinessProbe").expect("a probe");
        assert_eq!(probe.action, Action::HttpGet { path: "/healthz".into(), headers: vec![] });
        assert_eq!((probe.period, probe.timeout), (Duration::from_secs(10), Duration::from_secs(1)));
        assert_eq!((probe.success_threshold, probe.failure_threshold), (1, 3));
        assert!(Probe::parse(&container, "livenessProbe").is_none());
        let tcp = json!({"livenessProbe": {"tcpSocket": {"port": 80}}});
        let probe = Probe::parse(&tcp, "livenessProbe").expect("a probe");
        assert!(matches!(probe.action, Action::Unsupported(ref m) if m.contains("tcpSocket")));
    }

    #[test]
    fn tallies_need_their_thresholds() {
        let probe = Probe::parse(&json!({"p": {"httpGet": {}, "failureThreshold": 2}}), "p").expect("a probe");
        let mut tally = Tally::new(probe, Instant::now());
        assert!(tally.record(Ok(())));
        assert_eq!(tally.healthy, Some(true));
        assert!(!tally.record(Err("no".into())));
        assert!(tally.record(Err("no".into())));
        assert_eq!(tally.healthy, Some(false));
    }
}
