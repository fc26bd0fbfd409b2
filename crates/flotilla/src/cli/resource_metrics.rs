//! The autoscaler's metrics source in `flotilla server`: the usage the API server
//! scrapes for `metrics.k8s.io` ([`flotilla_apiserver::ResourceMetrics`]), read in
//! process, as kube-controller-manager reads metrics-server's (and a custom metrics
//! adapter's) API.

use flotilla_apiserver::{PodUsage, ResourceMetrics};
use flotilla_controllers::{PodMetricsSource, PodValues};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// How a metric is read off a pod's usage.
type Reader = fn(&PodUsage) -> f64;

/// The pod metrics the autoscaler can scale on, and what each reads.
const METRICS: [(&str, Reader); 4] = [
    // Resource metrics: CPU in cores, memory in bytes.
    ("cpu", PodUsage::cpu_cores),
    ("memory", |pod| pod.memory_bytes() as f64),
    // Pods metrics: HTTP requests answered per second.
    ("requests_per_second", |pod| pod.requests_per_second),
    ("http_requests_per_second", |pod| pod.requests_per_second),
];

/// `metrics` as the autoscaler's [`PodMetricsSource`].
pub fn autoscaler_source(metrics: ResourceMetrics) -> Arc<dyn PodMetricsSource> {
    Arc::new(ScrapedMetrics(metrics))
}

#[derive(Debug)]
struct ScrapedMetrics(ResourceMetrics);

impl ScrapedMetrics {
    fn values(&self, namespace: &str, metric: &str) -> Result<PodValues, String> {
        let (_, read) = METRICS.iter().find(|(name, _)| *name == metric).ok_or_else(|| {
            let known: Vec<&str> = METRICS.iter().map(|(name, _)| *name).collect();
            format!("unknown metric {metric:?}: the pod metrics served are {}", known.join(", "))
        })?;
        Ok(self.0.pods(Some(namespace)).iter().map(|pod| (pod.name.clone(), read(pod))).collect())
    }
}

impl PodMetricsSource for ScrapedMetrics {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        metric: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<PodValues, String>> + Send + 'a>> {
        Box::pin(std::future::ready(self.values(namespace, metric)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_metrics_are_refused_and_known_ones_read_the_scraped_usage() {
        let source = autoscaler_source(ResourceMetrics::default());
        for metric in ["cpu", "memory", "requests_per_second", "http_requests_per_second"] {
            assert_eq!(source.pod_metrics("default", metric).await, Ok(PodValues::new()), "{metric}");
        }
        let refused = source.pod_metrics("default", "queue_depth").await;
        assert!(refused.is_err_and(|e| e.contains("queue_depth") && e.contains("requests_per_second")));
    }
}
