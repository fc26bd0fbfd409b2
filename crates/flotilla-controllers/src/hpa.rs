//! The HorizontalPodAutoscaler controller (autoscaling/v2), as kube-controller-manager's:
//! every sync period it reads the target's pods' metrics, computes the replicas each
//! metric asks for (kube's replica calculator: usage ratio, 10 % tolerance, missing
//! metrics counted against the move), takes the largest, applies `behavior`
//! (stabilization windows, rate policies, Kubernetes' defaults when unset), bounds it by
//! min/max replicas, writes the target's `scale` subresource and the HPA's status.
//!
//! Metrics come from a [`PodMetricsSource`] (kube's metrics client): `cpu` for Resource
//! metrics, any other name for Pods metrics (e.g. `requests_per_second`). `minReplicas:
//! 0` lets an idle target go to zero (the Service proxy brings it back on the first
//! request); a target at zero stays there until then.
//!
//! The recommendations and scale events the behavior looks back on are kept in memory,
//! as kube keeps them: after a restart the windows start empty, which only makes the
//! controller more cautious for one window.

use crate::error::{Error, Result};
use crate::events::{EventSeverity, Recorder};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_client::{Cluster, Informer, ObjectKey, Patch, resource};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// A metric's current value for each pod of a namespace, by pod name.
pub type PodValues = HashMap<String, f64>;

/// Where the autoscaler reads pod metrics.
pub trait PodMetricsSource: Send + Sync + Debug {
    /// `metric` of the pods of `namespace`: `cpu` in cores, any other name as that
    /// metric's own unit (requests per second…). Pods without a value are left out.
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        metric: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<PodValues, String>> + Send + 'a>>;
}

/// How the autoscaler runs.
#[derive(Debug, Clone)]
pub struct HpaConfig {
    /// How often each HPA is evaluated (kube's `--horizontal-pod-autoscaler-sync-period`).
    pub sync_period: Duration,
    /// Ratios within this of 1 do not scale (kube's `--horizontal-pod-autoscaler-tolerance`).
    pub tolerance: f64,
    /// Where metrics come from; no source, no autoscaler.
    pub metrics: Option<Arc<dyn PodMetricsSource>>,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig { sync_period: Duration::from_secs(15), tolerance: 0.1, metrics: None }
    }
}

/// What an HPA's behavior looks back on.
#[derive(Debug, Default)]
struct History {
    /// (when, recommended replicas).
    recommendations: VecDeque<(Instant, i64)>,
    /// (when, replicas added (+) or removed (-)).
    scale_events: VecDeque<(Instant, i64)>,
    /// The target's replicas when last seen.
    last_seen: Option<i64>,
}

#[derive(Debug)]
pub(crate) struct HpaController {
    cluster: Arc<dyn Cluster>,
    hpas: Informer,
    pods: Informer,
    metrics: Arc<dyn PodMetricsSource>,
    config: HpaConfig,
    history: Mutex<HashMap<ObjectKey, History>>,
    recorder: Recorder,
}

/// One rate policy of a scaling direction.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Policy {
    percent: bool,
    value: i64,
    period: Duration,
}

/// One direction of `behavior`.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    window: Duration,
    policies: Vec<Policy>,
    /// `Max`, `Min` or `Disabled`.
    select: String,
}

/// `behavior.scaleUp` / `scaleDown`, with kube's defaults for what is unset.
fn rules(hpa: &Value, up: bool) -> Rules {
    let given = &hpa["spec"]["behavior"][if up { "scaleUp" } else { "scaleDown" }];
    let window = given["stabilizationWindowSeconds"].as_u64().unwrap_or(if up { 0 } else { 300 });
    let policies = match given["policies"].as_array() {
        Some(policies) => policies
            .iter()
            .map(|p| Policy {
                percent: p["type"] == "Percent",
                value: p["value"].as_i64().unwrap_or(0),
                period: Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(15)),
            })
            .collect(),
        None if up => vec![
            Policy { percent: true, value: 100, period: Duration::from_secs(15) },
            Policy { percent: false, value: 4, period: Duration::from_secs(15) },
        ],
        None => vec![Policy { percent: true, value: 100, period: Duration::from_secs(15) }],
    };
    let select = given["selectPolicy"].as_str().unwrap_or("Max").to_string();
    Rules { window: Duration::from_secs(window), policies, select }
}

/// The most replicas (scaling up) or the fewest (down) the rate policies allow now,
/// given the scale events of their periods (kube's `calculateScale{Up,Down}LimitWithScalingRules`).
fn rate_limit(current: i64, events: &VecDeque<(Instant, i64)>, rules: &Rules, up: bool, now: Instant) -> i64 {
    let limits = rules.policies.iter().map(|policy| {
        let changed: i64 = events
            .iter()
            .filter(|(at, delta)| now.duration_since(*at) < policy.period && (*delta > 0) == up)
            .map(|(_, delta)| *delta)
            .sum();
        let start = current - changed;
        match (up, policy.percent) {
            (true, true) => (start as f64 * (1.0 + policy.value as f64 / 100.0)).ceil() as i64,
            (true, false) => start + policy.value,
            (false, true) => (start as f64 * (1.0 - policy.value as f64 / 100.0)).floor() as i64,
            (false, false) => start - policy.value,
        }
    });
    let limits: Vec<i64> = limits.collect();
    match (rules.select.as_str(), up) {
        ("Disabled", _) => current,
        ("Min", true) | ("Max", false) => limits.iter().copied().min().unwrap_or(current),
        _ => limits.iter().copied().max().unwrap_or(current),
    }
}

/// CPU requested by a pod's containers, in cores (`None` when a container requests none).
fn cpu_request(pod: &Value) -> Option<f64> {
    let mut total = 0.0;
    for container in pod["spec"]["containers"].as_array()? {
        let request = container["resources"]["requests"]["cpu"]
            .as_str()
            .or_else(|| container["resources"]["limits"]["cpu"].as_str())?;
        let quantity = flotilla_api::parse_quantity(request).ok()?;
        total += quantity.as_milli() as f64 / 1000.0;
    }
    Some(total)
}

/// What one metric asks for.
#[derive(Debug, PartialEq)]
struct Proposal {
    replicas: i64,
    /// The metric's status entry (`currentMetrics[]`).
    current: Value,
    /// For events: "cpu resource utilization (percentage of request)".
    reason: String,
}

/// kube's replica calculator for one metric: `usage` per ready pod (missing ones absent),
/// `target` per pod; `requests` per pod for utilization.
fn propose(
    current: i64,
    ready: &[Arc<Value>],
    usage: &PodValues,
    target: f64,
    requests: Option<&HashMap<String, f64>>,
    tolerance: f64,
) -> Option<(i64, f64)> {
    if target <= 0.0 {
        return None;
    }
    let measured: Vec<&str> = ready.iter().map(|p| meta::name(p)).filter(|n| usage.contains_key(*n)).collect();
    if measured.is_empty() {
        return None;
    }
    let missing = ready.len() - measured.len();
    let per_pod = |names: &[&str], extra_usage: f64, extra_pods: usize| -> f64 {
        let used: f64 = names.iter().map(|n| usage[*n]).sum::<f64>() + extra_usage;
        match requests {
            Some(requests) => {
                let requested: f64 = names.iter().map(|n| requests.get(*n).copied().unwrap_or(0.0)).sum::<f64>()
                    + extra_pods as f64 * requests.values().copied().next().unwrap_or(0.0);
                if requested <= 0.0 { 0.0 } else { used / requested }
            }
            None => used / (names.len() + extra_pods) as f64,
        }
    };
    let value = per_pod(&measured, 0.0, 0);
    let ratio = value / target;
    if (ratio - 1.0).abs() <= tolerance {
        return Some((current, value));
    }
    if missing == 0 {
        return Some(((ratio * measured.len() as f64).ceil() as i64, value));
    }
    // Missing metrics count against the move: as using nothing when scaling up, as
    // using exactly the target when scaling down.
    let assumed = if ratio > 1.0 {
        0.0
    } else {
        let request = requests.and_then(|r| r.values().copied().next()).unwrap_or(1.0);
        target * missing as f64 * if requests.is_some() { request } else { 1.0 }
    };
    let new_ratio = per_pod(&measured, assumed, missing) / target;
    if (new_ratio - 1.0).abs() <= tolerance || (new_ratio > 1.0) != (ratio > 1.0) {
        return Some((current, value));
    }
    Some(((new_ratio * ready.len() as f64).ceil() as i64, value))
}

impl HpaController {
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        hpas: Informer,
        pods: Informer,
        config: HpaConfig,
        runner: RunnerConfig,
    ) {
        let Some(metrics) = config.metrics.clone() else { return };
        let controller = Arc::new(HpaController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            hpas: hpas.clone(),
            pods,
            metrics,
            config,
            history: Mutex::new(HashMap::new()),
        });
        let all: AllKeys<ObjectKey> = {
            let hpas = hpas.clone();
            Arc::new(move || hpas.list().iter().map(|h| ObjectKey::of(h)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|hpa, _| vec![ObjectKey::of(hpa)]);
        Controller::new("horizontalpodautoscaling", all, runner)
            .reports_failures(&hpas, controller.cluster.clone())
            .watches(hpas, own)
            .run(controller)
            .await;
    }

    fn history(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, History>> {
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What each metric of the HPA asks for.
    async fn proposals(
        &self,
        hpa: &Value,
        namespace: &str,
        current: i64,
        pods: &[Arc<Value>],
    ) -> Result<Vec<Proposal>> {
        let ready: Vec<Arc<Value>> = pods.iter().filter(|p| meta::is_pod_ready(p)).cloned().collect();
        let mut proposals = Vec::new();
        for metric in hpa["spec"]["metrics"].as_array().into_iter().flatten() {
            let (name, target) = match metric["type"].as_str() {
                Some("Resource") => {
                    (metric["resource"]["name"].as_str().unwrap_or_default(), &metric["resource"]["target"])
                }
                Some("Pods") => {
                    (metric["pods"]["metric"]["name"].as_str().unwrap_or_default(), &metric["pods"]["target"])
                }
                _ => continue,
            };
            let values = self
                .metrics
                .pod_metrics(namespace, name)
                .await
                .map_err(|why| Error::Metrics(format!("reading metric {name} of namespace {namespace}: {why}")))?;
            let quantity = |field: &str| {
                target[field]
                    .as_str()
                    .and_then(|q| flotilla_api::parse_quantity(q).ok())
                    .map(|q| q.as_milli() as f64 / 1000.0)
            };
            let (replicas, current_metric, reason) = if let Some(utilization) = target["averageUtilization"].as_i64() {
                let requests: HashMap<String, f64> =
                    ready.iter().filter_map(|p| Some((meta::name(p).to_string(), cpu_request(p)?))).collect();
                if requests.len() < ready.len() {
                    return Err(Error::Metrics(format!("missing request for {name} on a pod of the target")));
                }
                let Some((replicas, used)) = propose(
                    current,
                    &ready,
                    &values,
                    utilization as f64 / 100.0,
                    Some(&requests),
                    self.config.tolerance,
                ) else {
                    continue;
                };
                let average: f64 = ready.iter().filter_map(|p| values.get(meta::name(p))).sum::<f64>()
                    / ready.iter().filter(|p| values.contains_key(meta::name(p))).count().max(1) as f64;
                let current = json!({"type": "Resource", "resource": {"name": name, "current": {
                    "averageUtilization": (used * 100.0).round() as i64,
                    "averageValue": format!("{}m", (average * 1000.0).round() as i64)}}});
                (replicas, current, format!("{name} resource utilization (percentage of request)"))
            } else if let Some(average) = quantity("averageValue") {
                let Some((replicas, used)) = propose(current, &ready, &values, average, None, self.config.tolerance)
                else {
                    continue;
                };
                let value = format!("{}m", (used * 1000.0).round() as i64);
                let current = if metric["type"] == "Pods" {
                    json!({"type": "Pods", "pods": {"metric": {"name": name}, "current": {"averageValue": value}}})
                } else {
                    json!({"type": "Resource", "resource": {"name": name, "current": {"averageValue": value}}})
                };
                (replicas, current, format!("{name} per pod"))
            } else {
                continue;
            };
            proposals.push(Proposal { replicas, current: current_metric, reason });
        }
        Ok(proposals)
    }

    async fn write_status(&self, hpa: &Value, status: Value) -> Result<()> {
        if hpa["status"] == status {
            return Ok(());
        }
        let patch = Patch::Merge(json!({"status": status}));
        let rt = resource("autoscaling/v2", "HorizontalPodAutoscaler");
        match self.cluster.patch(rt, Some(meta::namespace(hpa)), meta::name(hpa), &patch, Some("status")).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == flotilla_api::Reason::NotFound => Ok(()),
            Err(e) => Err(Error::api("updating the autoscaler status", e)),
        }
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message,
        "lastTransitionTime": now})
}

/// Keeps each condition's `lastTransitionTime` while its status does not change.
fn keep_transition_times(conditions: &mut [Value], previous: &Value) {
    for condition in conditions {
        let old = previous["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == condition["type"]);
        if let Some(old) = old
            && old["status"] == condition["status"]
        {
            condition["lastTransitionTime"] = old["lastTransitionTime"].clone();
        }
    }
}

impl Reconciler<ObjectKey> for HpaController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(hpa) = self.hpas.get(&key.namespace, &key.name) else {
            self.history().remove(key);
            return Ok(Action::AwaitChange);
        };
        let requeue = Action::Requeue(self.config.sync_period);
        let stamp = flotilla_api::timestamp_now();
        let namespace = meta::namespace(&hpa).to_string();
        let target_ref = &hpa["spec"]["scaleTargetRef"];
        let api_version = target_ref["apiVersion"].as_str().unwrap_or("apps/v1");
        let kind = target_ref["kind"].as_str().unwrap_or_default();
        let target_name = target_ref["name"].as_str().unwrap_or_default();
        let Some(rt) =
            flotilla_api::by_kind(api_version, kind).filter(|rt| rt.has_subresource(flotilla_api::Subresource::Scale))
        else {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: no scale subresource for {api_version} {kind}"
            );
            let status = json!({"currentReplicas": 0, "desiredReplicas": 0, "conditions": [
                condition("AbleToScale", false, "FailedGetScale", &message, &stamp)]});
            self.recorder.event(&hpa, EventSeverity::Warning, "FailedGetScale", message);
            self.write_status(&hpa, status).await?;
            return Ok(requeue);
        };
        let target = match self.cluster.get(rt, Some(&namespace), target_name).await {
            Ok(target) => target,
            Err(e) => {
                let message = format!("the HPA controller was unable to get the target's current scale: {}", e.message);
                let status = json!({"currentReplicas": 0, "desiredReplicas": 0, "conditions": [
                    condition("AbleToScale", false, "FailedGetScale", &message, &stamp)]});
                self.recorder.event(&hpa, EventSeverity::Warning, "FailedGetScale", message);
                self.write_status(&hpa, status).await?;
                return Ok(requeue);
            }
        };
        let current = target["spec"]["replicas"].as_i64().unwrap_or(1);
        let min = hpa["spec"]["minReplicas"].as_i64().unwrap_or(1);
        let max = hpa["spec"]["maxReplicas"].as_i64().unwrap_or(1).max(min);
        let selector = meta::selector(&target).ok().flatten();
        let pods: Vec<Arc<Value>> = match &selector {
            Some(selector) => self
                .pods
                .filter(|p| meta::namespace(p) == namespace && meta::is_active_pod(p) && meta::selects(selector, p)),
            None => Vec::new(),
        };

        let mut conditions =
            vec![condition("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size", &stamp)];
        let (desired, reason, current_metrics) = if current == 0 && min > 0 {
            conditions.push(condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                &stamp,
            ));
            (0, String::new(), Vec::new())
        } else if current == 0 {
            // Scaled to zero: the Service proxy wakes it on the next request.
            conditions.push(condition(
                "ScalingActive",
                true,
                "ScaledToZero",
                "the target is idle at zero replicas; a request to its Service scales it up",
                &stamp,
            ));
            (0, String::new(), Vec::new())
        } else {
            match self.proposals(&hpa, &namespace, current, &pods).await {
                Ok(proposals) if !proposals.is_empty() => {
                    let best = proposals.iter().max_by_key(|p| p.replicas).map(|p| (p.replicas, p.reason.clone()));
                    let (replicas, reason) = best.unwrap_or((current, String::new()));
                    conditions.push(condition(
                        "ScalingActive",
                        true,
                        "ValidMetricFound",
                        &format!("the HPA was able to successfully calculate a replica count from {reason}"),
                        &stamp,
                    ));
                    (replicas, reason, proposals.into_iter().map(|p| p.current).collect())
                }
                Ok(_) => {
                    conditions.push(condition(
                        "ScalingActive",
                        false,
                        "FailedGetMetrics",
                        "the HPA has no metric values for the target's ready pods yet",
                        &stamp,
                    ));
                    (current, String::new(), Vec::new())
                }
                Err(error) => {
                    let message = error.to_string();
                    self.recorder.event(&hpa, EventSeverity::Warning, "FailedGetResourceMetric", message.clone());
                    conditions.push(condition("ScalingActive", false, "FailedGetResourceMetric", &message, &stamp));
                    (current, String::new(), Vec::new())
                }
            }
        };

        // Behavior: stabilization, then rate limits, then min/max.
        let now = Instant::now();
        let (up, down) = (rules(&hpa, true), rules(&hpa, false));
        let new_replicas = if current == 0 {
            self.history().entry(key.clone()).or_default().last_seen = Some(0);
            0
        } else {
            let mut history = self.history();
            let history = history.entry(key.clone()).or_default();
            let longest = up.window.max(down.window).max(Duration::from_secs(600));
            history.recommendations.retain(|(at, _)| now.duration_since(*at) <= longest);
            history.scale_events.retain(|(at, _)| now.duration_since(*at) <= longest);
            if history.last_seen == Some(0) {
                // Woken from zero by a request: it stays up for a scale-down window
                // before it may sleep again, however idle the metrics look yet.
                history.recommendations.clear();
                history.recommendations.push_back((now, current));
            }
            let mut up_recommendation = desired;
            let mut down_recommendation = desired;
            for (at, replicas) in &history.recommendations {
                if now.duration_since(*at) <= up.window {
                    up_recommendation = up_recommendation.min(*replicas);
                }
                if now.duration_since(*at) <= down.window {
                    down_recommendation = down_recommendation.max(*replicas);
                }
            }
            history.recommendations.push_back((now, desired));
            let mut stabilized = current;
            if stabilized < up_recommendation {
                stabilized = up_recommendation;
            }
            if stabilized > down_recommendation {
                stabilized = down_recommendation;
            }
            let limited = if stabilized > current {
                stabilized.min(rate_limit(current, &history.scale_events, &up, true, now))
            } else if stabilized < current {
                stabilized.max(rate_limit(current, &history.scale_events, &down, false, now))
            } else {
                stabilized
            };
            let bounded = limited.clamp(min, max);
            if limited < min {
                conditions.push(condition(
                    "ScalingLimited",
                    true,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                    &stamp,
                ));
            } else if limited > max {
                conditions.push(condition(
                    "ScalingLimited",
                    true,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                    &stamp,
                ));
            } else {
                conditions.push(condition(
                    "ScalingLimited",
                    false,
                    "DesiredWithinRange",
                    "the desired count is within the acceptable range",
                    &stamp,
                ));
            }
            if bounded != current {
                history.scale_events.push_back((now, bounded - current));
            }
            history.last_seen = Some(bounded);
            bounded
        };

        let mut last_scale_time = hpa["status"]["lastScaleTime"].clone();
        if new_replicas != current {
            let patch = Patch::Merge(json!({"spec": {"replicas": new_replicas}}));
            self.cluster
                .patch(rt, Some(&namespace), target_name, &patch, Some("scale"))
                .await
                .map_err(|e| Error::api(format!("scaling {kind} {target_name}"), e))?;
            let why = if new_replicas > current {
                format!("{reason} above target")
            } else {
                "All metrics below target".to_string()
            };
            self.recorder.event(
                &hpa,
                EventSeverity::Normal,
                "SuccessfulRescale",
                format!("New size: {new_replicas}; reason: {why}"),
            );
            conditions[0] = condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                &format!("the HPA controller was able to update the target scale to {new_replicas}"),
                &stamp,
            );
            last_scale_time = json!(stamp);
        }
        keep_transition_times(&mut conditions, &hpa["status"]);
        let mut status = json!({
            "currentReplicas": current,
            "desiredReplicas": new_replicas,
            "currentMetrics": current_metrics,
            "conditions": conditions,
            "observedGeneration": meta::generation(&hpa),
        });
        if !last_scale_time.is_null() {
            status["lastScaleTime"] = last_scale_time;
        }
        self.write_status(&hpa, status).await?;
        Ok(requeue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_pod(name: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            "spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}}))
    }

    fn values(pairs: &[(&str, f64)]) -> PodValues {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn the_replica_calculator_follows_the_usage_ratio() {
        let pods = vec![ready_pod("a"), ready_pod("b")];
        let requests: HashMap<String, f64> = [("a".to_string(), 0.1), ("b".to_string(), 0.1)].into();
        // 90 % of request against a 50 % target: ceil(1.8 × 2) = 4.
        let busy = values(&[("a", 0.09), ("b", 0.09)]);
        assert_eq!(propose(2, &pods, &busy, 0.5, Some(&requests), 0.1).map(|p| p.0), Some(4));
        // Within the 10 % tolerance: no change.
        let close = values(&[("a", 0.052), ("b", 0.05)]);
        assert_eq!(propose(2, &pods, &close, 0.5, Some(&requests), 0.1).map(|p| p.0), Some(2));
        // Idle: ceil(0.0 × 2) = 0 replicas asked (min bounds it later).
        let idle = values(&[("a", 0.0), ("b", 0.0)]);
        assert_eq!(propose(2, &pods, &idle, 0.5, Some(&requests), 0.1).map(|p| p.0), Some(0));
        // No metrics at all: nothing to say.
        assert_eq!(propose(2, &pods, &values(&[]), 0.5, Some(&requests), 0.1), None);
        // Requests per second against 10 per pod: 55 in all asks for 6.
        let rps = values(&[("a", 30.0), ("b", 25.0)]);
        assert_eq!(propose(2, &pods, &rps, 10.0, None, 0.1).map(|p| p.0), Some(6));
    }

    #[test]
    fn missing_metrics_count_against_the_move() {
        let pods = vec![ready_pod("a"), ready_pod("b")];
        // Scaling up with b unmeasured: b counts as idle, so 100 (a) + 0 over 2 pods at
        // target 50 is ratio 1.0: no change.
        let one = values(&[("a", 100.0)]);
        assert_eq!(propose(2, &pods, &one, 50.0, None, 0.1).map(|p| p.0), Some(2));
    }

    #[test]
    fn rate_policies_default_to_kubes() {
        let now = Instant::now();
        let none = VecDeque::new();
        let up = rules(&json!({}), true);
        // Up: the larger of doubling and +4.
        assert_eq!(rate_limit(1, &none, &up, true, now), 5);
        assert_eq!(rate_limit(10, &none, &up, true, now), 20);
        // A recent scale-up of 4 counts against the period.
        let recent = VecDeque::from([(now, 4)]);
        assert_eq!(rate_limit(5, &recent, &up, true, now), 5);
        let down = rules(&json!({}), false);
        assert_eq!(down.window, Duration::from_secs(300));
        assert_eq!(rate_limit(10, &none, &down, false, now), 0, "down by 100 % a period");
        let custom = json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 1,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}});
        let down = rules(&custom, false);
        assert_eq!((down.window, rate_limit(10, &none, &down, false, now)), (Duration::from_secs(1), 9));
    }
}
