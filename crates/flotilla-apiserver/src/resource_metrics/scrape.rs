//! The scraper: every `metric_resolution`, every Node's kubelet is asked for its stats
//! summary at once, and the answers are one round of samples.

use super::ResourceMetrics;
use crate::registry::{ListQuery, Registry};
use flotilla_client::{HttpKubelet, Kubelet, Kubelets, Summary};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

/// How long one node's answer may take, at most.
const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Scrapes the nodes every `resolution` into `metrics`, until the task is dropped. The
/// nodes are the Node objects; each is asked through the kubelet registered for it in
/// `kubelets` (in process, or followed over HTTP), else over HTTP at the address its
/// Node reports, with `node_token`.
pub(crate) async fn scrape(
    metrics: ResourceMetrics,
    registry: Registry,
    kubelets: Kubelets,
    node_token: String,
    resolution: Duration,
) {
    let resolution = resolution.max(Duration::from_millis(100));
    let timeout = resolution.min(MAX_SCRAPE_TIMEOUT);
    let mut remote: HashMap<String, (String, Arc<dyn Kubelet>)> = HashMap::new();
    let mut ticks = tokio::time::interval(resolution);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let nodes = match nodes(&registry).await {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::warn!(%error, "listing the nodes to scrape");
                continue;
            }
        };
        let mut round = tokio::task::JoinSet::new();
        for node in &nodes {
            let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let Some(kubelet) = kubelet_of(&kubelets, &mut remote, &node_token, &name, node) else { continue };
            let span = tracing::debug_span!("scrape", node = %name);
            round.spawn(
                async move {
                    match tokio::time::timeout(timeout, kubelet.stats()).await {
                        Ok(Ok(summary)) => Some((name, summary)),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "the node's stats could not be read");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(?timeout, "the node's stats did not come in time");
                            None
                        }
                    }
                }
                .instrument(span),
            );
        }
        remote.retain(|name, _| nodes.iter().any(|n| n["metadata"]["name"] == name.as_str()));
        let mut summaries: Vec<(String, Summary)> = Vec::with_capacity(nodes.len());
        while let Some(answer) = round.join_next().await {
            if let Ok(Some(answer)) = answer {
                summaries.push(answer);
            }
        }
        metrics.record(&summaries);
    }
}

async fn nodes(registry: &Registry) -> Result<Vec<Value>, flotilla_api::ApiError> {
    let rt = flotilla_api::by_kind("v1", "Node").ok_or_else(|| flotilla_api::ApiError::internal("no Node kind"))?;
    let mut list = registry.list(rt, None, &ListQuery::default()).await?;
    Ok(match list["items"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

/// The kubelet to ask for `name`'s stats: the registered one, else one over HTTP at the
/// Node's address (kept while the address holds).
fn kubelet_of(
    kubelets: &Kubelets,
    remote: &mut HashMap<String, (String, Arc<dyn Kubelet>)>,
    node_token: &str,
    name: &str,
    node: &Value,
) -> Option<Arc<dyn Kubelet>> {
    if let Some(kubelet) = kubelets.get(name) {
        return Some(kubelet);
    }
    let base = flotilla_client::kubelet_base(node).ok()?;
    if let Some((at, kubelet)) = remote.get(name)
        && *at == base
    {
        return Some(kubelet.clone());
    }
    let kubelet: Arc<dyn Kubelet> = Arc::new(HttpKubelet::new(&base, node_token).ok()?);
    remote.insert(name.to_string(), (base, kubelet.clone()));
    Some(kubelet)
}
