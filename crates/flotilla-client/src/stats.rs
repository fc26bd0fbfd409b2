//! What a node reports about its pods' resource use, in the shape of kubelet's
//! `GET /stats/summary` (the Summary API metrics-server scrapes), trimmed to what
//! Flotilla measures, plus each pod's HTTP request count.
//!
//! Every figure is cumulative or instantaneous as it is on the node: CPU time since the
//! pod started (over all its containers' runs), memory now, requests served so far.
//! Rates are the scraper's business (two samples and the time between them).

use serde::{Deserialize, Serialize};

/// A node's pods and their usage at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// The node the summary is of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    /// When the node agent started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When these figures were read (RFC 3339 with nanoseconds): the time of every
    /// sample in the summary.
    pub time: String,
}

/// The pod a [`PodStats`] is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// One pod's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    /// HTTP requests the pod has answered since it started (a Flotilla extension:
    /// kubelet's summary has no such figure).
    #[serde(default)]
    pub http_requests: u64,
}

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
}

/// CPU time used, cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// CPU time since the container first started, over all its runs, in nanoseconds
    /// (kubelet's `usageCoreNanoSeconds`).
    pub usage_core_nano_seconds: u64,
}

/// Memory held now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// Linear memory the container's live wasm instances hold, in bytes (what a
    /// container's working set is on Linux).
    pub working_set_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_as_kubelet_spells_it() -> Result<(), serde_json::Error> {
        let text = r#"{"node": {"nodeName": "n1", "time": "2025-01-01T00:00:00.5Z"},
            "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u1"}, "httpRequests": 7,
                "containers": [{"name": "main", "cpu": {"usageCoreNanoSeconds": 1500},
                    "memory": {"workingSetBytes": 4096}}]}]}"#;
        let summary: Summary = serde_json::from_str(text)?;
        assert_eq!(summary.node.node_name, "n1");
        assert_eq!(summary.pods[0].pod_ref.uid, "u1");
        assert_eq!(summary.pods[0].http_requests, 7);
        assert_eq!(summary.pods[0].containers[0].cpu.usage_core_nano_seconds, 1500);
        let again: Summary = serde_json::from_value(serde_json::to_value(&summary)?)?;
        assert_eq!(again, summary);
        Ok(())
    }
}
