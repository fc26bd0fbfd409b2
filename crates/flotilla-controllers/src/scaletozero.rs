//! Scale to zero without an autoscaler: a Deployment annotated
//! `flotilla.dev/scale-to-zero: "true"` whose pods have served no request for its idle
//! time (`flotilla.dev/scale-to-zero-idle`, e.g. `90s`, else the controller's default) is
//! scaled to zero; the Service proxy scales it back to one on the next request.
//!
//! A Deployment an HPA targets is left to the HPA (`minReplicas: 0` is its way to zero).
//! Request rates come from the same [`PodMetricsSource`] as the HPA's
//! (`requests_per_second`); a pod with no rate yet (just started, not yet scraped) counts
//! as busy. When each Deployment was last busy is kept in memory, as the HPA keeps its
//! windows: after a restart the idle time starts again, which only delays a scale-down.

use crate::error::{Error, Result};
use crate::events::{EventSeverity, Recorder};
use crate::hpa::PodMetricsSource;
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_client::{Cluster, Informer, ObjectKey, Patch, resource};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The annotation that makes a Deployment sleep when idle (and the proxy wake it).
pub(crate) const ANNOTATION: &str = "flotilla.dev/scale-to-zero";
/// How long it must be idle, overriding the controller's default.
pub(crate) const IDLE_ANNOTATION: &str = "flotilla.dev/scale-to-zero-idle";
/// The per-pod metric that says whether a pod is serving.
const METRIC: &str = "requests_per_second";
const COMPONENT: &str = "scale-to-zero";

/// How the controller runs.
#[derive(Debug, Clone)]
pub(crate) struct ScaleToZeroConfig {
    /// How often each annotated Deployment is looked at.
    pub(crate) period: Duration,
    /// The idle time of a Deployment that does not say its own.
    pub(crate) idle: Duration,
}

pub(crate) struct ScaleToZeroController {
    cluster: Arc<dyn Cluster>,
    deployments: Informer,
    hpas: Informer,
    pods: Informer,
    metrics: Arc<dyn PodMetricsSource>,
    config: ScaleToZeroConfig,
    recorder: Recorder,
    /// When each Deployment last had a busy pod (or was first seen up).
    last_busy: Mutex<HashMap<ObjectKey, Instant>>,
}

impl ScaleToZeroController {
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        deployments: Informer,
        hpas: Informer,
        pods: Informer,
        metrics: Arc<dyn PodMetricsSource>,
        config: ScaleToZeroConfig,
        runner: RunnerConfig,
    ) {
        let controller = Arc::new(ScaleToZeroController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            deployments: deployments.clone(),
            hpas,
            pods,
            metrics,
            config,
            last_busy: Mutex::new(HashMap::new()),
        });
        let all: AllKeys<ObjectKey> = {
            let deployments = deployments.clone();
            Arc::new(move || deployments.list().iter().map(|d| ObjectKey::of(d)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|deployment, _| vec![ObjectKey::of(deployment)]);
        Controller::new("scaletozero", all, runner)
            .reports_failures(&deployments, controller.cluster.clone())
            .watches(deployments, own)
            .run(controller)
            .await;
    }

    fn last_busy(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Instant>> {
        self.last_busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an HPA of the namespace targets the Deployment.
    fn autoscaled(&self, namespace: &str, name: &str) -> bool {
        self.hpas.list().iter().any(|hpa| {
            let target = &hpa["spec"]["scaleTargetRef"];
            meta::namespace(hpa) == namespace && target["kind"] == "Deployment" && target["name"] == name
        })
    }

    /// Whether any of the Deployment's pods served a request lately (or can't say yet).
    async fn busy(&self, deployment: &Value, namespace: &str) -> Result<bool> {
        let Ok(Some(selector)) = meta::selector(deployment) else { return Ok(true) };
        let pods = self
            .pods
            .filter(|p| meta::namespace(p) == namespace && meta::is_active_pod(p) && meta::selects(&selector, p));
        if pods.is_empty() {
            return Ok(false);
        }
        let rates = self.metrics.pod_metrics(namespace, METRIC).await.map_err(Error::Metrics)?;
        Ok(pods.iter().any(|pod| rates.get(meta::name(pod)).is_none_or(|rate| *rate > 0.0)))
    }
}

/// The Deployment's idle time: its annotation's (`90s`, `5m`, `PT2M`), else `default`.
fn idle_time(deployment: &Value, default: Duration) -> Duration {
    meta::annotation(deployment, IDLE_ANNOTATION)
        .and_then(|text| text.parse::<jiff::SignedDuration>().ok())
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(default)
}

impl Reconciler<ObjectKey> for ScaleToZeroController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(deployment) = self.deployments.get(&key.namespace, &key.name) else {
            self.last_busy().remove(key);
            return Ok(Action::AwaitChange);
        };
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        if meta::annotation(&deployment, ANNOTATION) != Some("true")
            || replicas == 0
            || meta::is_terminating(&deployment)
            || self.autoscaled(&key.namespace, &key.name)
        {
            // Nothing to watch: a change of the Deployment (or a wake) brings it back.
            self.last_busy().remove(key);
            return Ok(Action::AwaitChange);
        }
        let now = Instant::now();
        let busy = self.busy(&deployment, &key.namespace).await?;
        let idle_for = {
            let mut last_busy = self.last_busy();
            let since = last_busy.entry(key.clone()).or_insert(now);
            if busy {
                *since = now;
            }
            now.duration_since(*since)
        };
        let idle = idle_time(&deployment, self.config.idle);
        if idle_for < idle {
            return Ok(Action::Requeue(self.config.period.min(idle - idle_for)));
        }
        // Only from the replicas seen: a scale made meanwhile (a wake, a user) wins.
        let patch = Patch::Json(json!([
            {"op": "test", "path": "/spec/replicas", "value": replicas},
            {"op": "replace", "path": "/spec/replicas", "value": 0},
        ]));
        let deployments = resource("apps/v1", "Deployment");
        match self.cluster.patch(deployments, Some(&key.namespace), &key.name, &patch, Some("scale")).await {
            Ok(_) => {
                self.last_busy().remove(key);
                self.recorder.event(
                    &deployment,
                    EventSeverity::Normal,
                    "ScaledToZero",
                    format!(
                        "Scaled down replica set to 0: no request for {}s; the next request to its Service scales it up",
                        idle.as_secs()
                    ),
                );
                Ok(Action::AwaitChange)
            }
            Err(e) if matches!(e.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Invalid) => {
                // Gone, or scaled meanwhile: the next change says what to do.
                Ok(Action::AwaitChange)
            }
            Err(e) => Err(Error::api("scaling the deployment to zero", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_time_is_the_annotations_or_the_default() {
        let default = Duration::from_secs(300);
        let with = |value: &str| json!({"metadata": {"annotations": {IDLE_ANNOTATION: value}}});
        assert_eq!(idle_time(&with("90s"), default), Duration::from_secs(90));
        assert_eq!(idle_time(&with("2m"), default), Duration::from_secs(120));
        assert_eq!(idle_time(&with("PT1M"), default), Duration::from_secs(60));
        assert_eq!(idle_time(&with("soon"), default), default);
        assert_eq!(idle_time(&with("-5s"), default), default);
        assert_eq!(idle_time(&json!({}), default), default);
    }
}
