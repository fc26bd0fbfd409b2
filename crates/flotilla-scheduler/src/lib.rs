//! Flotilla's scheduler (kube-scheduler's job): binds each pending pod to a node through
//! `pods/binding`.
//!
//! A node fits a pod when it is schedulable (not cordoned), every `NoSchedule` or
//! `NoExecute` taint is tolerated (a node whose `Ready` condition is not `True` counts as
//! tainted `not-ready` or `unreachable`), the `nodeSelector` and required node affinity
//! match, and its allocatable resources, less what its pods request, hold the pod's
//! requests and one more pod. Among those, [`Scoring::LeastAllocated`] (the default)
//! spreads pods and [`Scoring::MostAllocated`] packs them. A pod no node fits gets
//! `PodScheduled=False` (`Unschedulable`) with kube-scheduler's message (`0/3 nodes are
//! available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.`)
//! and a `FailedScheduling` Event, and is tried again when nodes or pods change.
//!
//! The crate sees the cluster only through [`flotilla_client::Cluster`] (informers on
//! Nodes and Pods, the binding, status and Event writes), so it runs the same in
//! `flotilla server` and out of process. It owns only the choice of a node: it does not
//! preempt, run pods, or write anything but bindings, pod conditions and Events.
//!
//! ```no_run
//! # async fn start(cluster: std::sync::Arc<dyn flotilla_client::Cluster>) {
//! let config = flotilla_scheduler::SchedulerConfig::default();
//! tokio::spawn(flotilla_scheduler::run(cluster, config));
//! # }
//! ```

mod algorithm;
mod error;
mod metrics;
mod model;
mod report;
mod scheduler;
mod state;

pub use crate::error::{Error, Result};
pub use crate::scheduler::run;

use std::fmt;
use std::str::FromStr;

/// How the scheduler ranks the nodes a pod fits (kube-scheduler's `NodeResourcesFit`
/// scoring strategies, on CPU and memory with equal weights).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scoring {
    /// Prefer the node with the largest share of CPU and memory free: spreads pods.
    #[default]
    LeastAllocated,
    /// Prefer the node with the largest share already requested: packs pods onto few
    /// nodes (bin packing).
    MostAllocated,
}

impl Scoring {
    pub fn as_str(self) -> &'static str {
        match self {
            Scoring::LeastAllocated => "LeastAllocated",
            Scoring::MostAllocated => "MostAllocated",
        }
    }
}

impl fmt::Display for Scoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scoring {
    type Err = Error;

    /// `LeastAllocated` or `MostAllocated` (case-insensitive), as kube-scheduler's
    /// configuration names them.
    fn from_str(s: &str) -> Result<Self> {
        [Scoring::LeastAllocated, Scoring::MostAllocated]
            .into_iter()
            .find(|scoring| scoring.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownScoring(s.to_string()))
    }
}

/// What the scheduler is and how it ranks nodes.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The pods it places are those whose `spec.schedulerName` is this (the API server
    /// defaults it to `default-scheduler`); its Events are reported under this name.
    pub scheduler_name: String,
    pub scoring: Scoring,
    /// Where the scheduler registers its metrics (`scheduler_*`); by default a registry
    /// of its own that nobody reads.
    pub metrics: prometheus::Registry,
    /// Restarts the scheduling loop after a panic (its state is rebuilt from the
    /// informers' first lists, as at start-up), and counts the panics.
    pub supervisor: flotilla_client::Supervisor,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: state::DEFAULT_SCHEDULER.to_string(),
            scoring: Scoring::default(),
            metrics: prometheus::Registry::new(),
            supervisor: flotilla_client::Supervisor::default(),
        }
    }
}

#[cfg(test)]
mod tests;
