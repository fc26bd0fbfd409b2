//! Flotilla's workload controllers (kube-controller-manager's job): ReplicaSet,
//! Deployment, DaemonSet, Job, CronJob, EndpointSlice, Endpoints, HorizontalPodAutoscaler,
//! scale to zero, node lifecycle, ServiceAccounts, disruption budgets, Event expiry and the
//! garbage collector, each one reconcile function on one pipeline (informers →
//! de-duplicating, delaying work queue → bounded runner → `reconcile(key) ->
//! Result<Action>`, with a back-off per key on failure).
//!
//! The controllers are level-triggered: a reconcile reads the informers' caches, writes
//! through [`flotilla_client::Cluster`] and is safe to run twice or after a restart. No
//! truth lives only in memory except the expectations of the ReplicaSet and
//! EndpointSlice controllers, which only keep them from over-creating while their caches
//! catch up, and expire.
//!
//! The crate sees the cluster only through `Cluster`, so it runs the same inside
//! `flotilla server` and out of process. It owns no scheduling, no pod running and no
//! API validation.
//!
//! ```no_run
//! # async fn start(cluster: std::sync::Arc<dyn flotilla_client::Cluster>) {
//! let config = flotilla_controllers::ControllersConfig::default();
//! tokio::spawn(flotilla_controllers::run(cluster, config));
//! # }
//! ```

mod claim;
mod clock;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslice;
mod error;
mod events;
mod eventttl;
mod expectations;
mod gc;
mod hpa;
mod job;
mod meta;
mod metrics;
mod nodelifecycle;
mod pipeline;
mod queue;
mod replicaset;
mod scaletozero;
mod serviceaccount;
mod written;

pub use crate::clock::{AcceleratedClock, Clock, SystemClock};
pub use crate::error::{Error, Result};
pub use crate::hpa::{HpaConfig, PodMetricsSource, PodValues};
pub use crate::nodelifecycle::{NodeLifecycleConfig, UNREACHABLE_TAINT};
pub use crate::pipeline::{Action, RunnerConfig};

use flotilla_client::{Cluster, Informer, ListParams, resource};
use std::sync::Arc;
use std::time::Duration;

/// What the controllers run with.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// The ReplicaSet controller's runner (kube's `--concurrent-replicaset-syncs`).
    pub replica_sets: RunnerConfig,
    /// The Deployment controller's runner (kube's `--concurrent-deployment-syncs`).
    pub deployments: RunnerConfig,
    /// The garbage collector's runner (kube's `--concurrent-gc-syncs`).
    pub garbage_collector: RunnerConfig,
    /// Pods a ReplicaSet creates or deletes per reconcile at most (kube's
    /// `burstReplicas`, 500).
    pub burst_replicas: usize,
    /// How long a ReplicaSet waits to see its own creations and deletions in its cache
    /// before it acts again regardless (kube's 5 minutes).
    pub expectations_ttl: Duration,
    /// Run the ReplicaSet controller.
    pub replica_set_controller: bool,
    /// Run the Deployment controller.
    pub deployment_controller: bool,
    /// Run the garbage collector.
    pub garbage_collection: bool,
    /// Run the Job controller.
    pub job_controller: bool,
    /// Run the DaemonSet controller.
    pub daemon_set_controller: bool,
    /// Run the CronJob controller.
    pub cron_job_controller: bool,
    /// Run the EndpointSlice controller.
    pub endpoint_slice_controller: bool,
    /// Run the Endpoints controller.
    pub endpoints_controller: bool,
    /// Delete Events older than `event_ttl` (kube-apiserver's `--event-ttl`).
    pub event_ttl_controller: bool,
    pub event_ttl: Duration,
    /// Run the HorizontalPodAutoscaler controller (only with a metrics source).
    pub hpa_controller: bool,
    pub hpa: HpaConfig,
    /// Scale Deployments annotated `flotilla.dev/scale-to-zero: "true"` to zero once their
    /// pods have served nothing for `scale_to_zero_idle` (or their
    /// `flotilla.dev/scale-to-zero-idle`); only with the HPA's metrics source, at its
    /// sync period.
    pub scale_to_zero_controller: bool,
    pub scale_to_zero_idle: Duration,
    /// The time CronJobs are scheduled by (the system clock; tests accelerate it).
    pub clock: Arc<dyn Clock>,
    /// Keep each PodDisruptionBudget's status (what evictions may spend).
    pub disruption_controller: bool,
    /// Give every namespace its `default` ServiceAccount.
    pub service_account_controller: bool,
    /// Run the node lifecycle controller, judging nodes as this says.
    pub node_lifecycle_controller: bool,
    pub node_lifecycle: NodeLifecycleConfig,
    /// Where the controllers register their metrics (`workqueue_*`, `controller_*`); by
    /// default a registry of their own that nobody reads.
    pub metrics: prometheus::Registry,
    /// Restarts the controllers after a panic outside a reconcile, and counts every panic
    /// (reconciles' too).
    pub supervisor: flotilla_client::Supervisor,
}

impl ControllersConfig {
    /// The controllers kube-controller-manager's `--controllers` names: `*` (all),
    /// `replicaset`, `deployment`, `garbagecollector`, `nodelifecycle`, `job`, `daemonset`,
    /// `cronjob`, `endpointslice`, `endpoint`, `horizontalpodautoscaling`, `eventttl`, `scaletozero`,
    /// `serviceaccount`, `disruption`, each disabled with a leading `-`; an empty
    /// list runs none.
    pub fn select(&mut self, names: &[String]) -> Result<(), String> {
        let all = names.iter().any(|n| n == "*");
        for (name, enabled) in [
            ("replicaset", &mut self.replica_set_controller),
            ("deployment", &mut self.deployment_controller),
            ("garbagecollector", &mut self.garbage_collection),
            ("nodelifecycle", &mut self.node_lifecycle_controller),
            ("job", &mut self.job_controller),
            ("daemonset", &mut self.daemon_set_controller),
            ("cronjob", &mut self.cron_job_controller),
            ("endpointslice", &mut self.endpoint_slice_controller),
            ("endpoint", &mut self.endpoints_controller),
            ("horizontalpodautoscaling", &mut self.hpa_controller),
            ("eventttl", &mut self.event_ttl_controller),
            ("scaletozero", &mut self.scale_to_zero_controller),
            ("serviceaccount", &mut self.service_account_controller),
            ("disruption", &mut self.disruption_controller),
        ] {
            let named = names.iter().any(|n| n == name);
            let disabled = names.iter().any(|n| n.strip_prefix('-') == Some(name));
            *enabled = (all || named) && !disabled;
        }
        let known = [
            "*",
            "replicaset",
            "deployment",
            "garbagecollector",
            "nodelifecycle",
            "job",
            "daemonset",
            "cronjob",
            "endpointslice",
            "endpoint",
            "horizontalpodautoscaling",
            "eventttl",
            "scaletozero",
            "serviceaccount",
            "disruption",
        ];
        match names.iter().find(|n| !known.contains(&n.trim_start_matches('-'))) {
            Some(unknown) => Err(format!("unknown controller {unknown:?}: known are {}", known.join(", "))),
            None => Ok(()),
        }
    }
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            replica_sets: RunnerConfig::default(),
            deployments: RunnerConfig::default(),
            garbage_collector: RunnerConfig { workers: 32, ..RunnerConfig::default() },
            burst_replicas: 500,
            expectations_ttl: Duration::from_secs(300),
            replica_set_controller: true,
            deployment_controller: true,
            garbage_collection: true,
            node_lifecycle_controller: true,
            node_lifecycle: NodeLifecycleConfig::default(),
            job_controller: true,
            daemon_set_controller: true,
            cron_job_controller: true,
            endpoint_slice_controller: true,
            endpoints_controller: true,
            hpa_controller: true,
            hpa: HpaConfig::default(),
            scale_to_zero_controller: true,
            scale_to_zero_idle: Duration::from_secs(300),
            service_account_controller: true,
            disruption_controller: true,
            event_ttl_controller: true,
            event_ttl: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
            metrics: prometheus::Registry::new(),
            supervisor: flotilla_client::Supervisor::default(),
        }
    }
}

/// Runs every controller until the task is dropped. Failures are logged and retried with
/// a back-off; nothing ends it. A reconcile that panics is retried with its object's
/// back-off; a panic elsewhere restarts the controllers (from fresh informers) under
/// `config.supervisor`.
pub async fn run(cluster: Arc<dyn Cluster>, config: ControllersConfig) {
    // Registered once, outside what a panic restarts.
    let metrics = metrics::ControllerMetrics::register(&config.metrics)
        .inspect_err(|error| tracing::error!(%error, "the controllers' metrics could not be registered"))
        .ok();
    let supervisor = config.supervisor.clone();
    supervisor
        .run("controllers", || {
            let (cluster, config, metrics, supervisor) =
                (cluster.clone(), config.clone(), metrics.clone(), supervisor.clone());
            async move { pipeline::with_metrics(metrics, supervisor, run_all(cluster, config)).await }
        })
        .await;
}

/// Every controller, in one task.
async fn run_all(cluster: Arc<dyn Cluster>, config: ControllersConfig) {
    let informer =
        |api_version, kind| Informer::start(cluster.clone(), resource(api_version, kind), None, ListParams::default());
    let pods = informer("v1", "Pod");
    let replica_sets = informer("apps/v1", "ReplicaSet");
    let deployments = informer("apps/v1", "Deployment");
    let rs = async {
        if config.replica_set_controller {
            replicaset::ReplicaSetController::run(
                cluster.clone(),
                replica_sets.clone(),
                pods.clone(),
                config.replica_sets,
                config.expectations_ttl,
                config.burst_replicas,
            )
            .await;
        }
    };
    let deploy = async {
        if config.deployment_controller {
            deployment::DeploymentController::run(
                cluster.clone(),
                deployments.clone(),
                replica_sets.clone(),
                pods.clone(),
                config.deployments,
            )
            .await;
        }
    };
    let gc = async {
        if config.garbage_collection {
            let mut kinds = vec![pods.clone(), replica_sets.clone(), deployments.clone()];
            kinds.extend(gc::EXTRA_KINDS.iter().map(|(api_version, kind)| informer(api_version, kind)));
            gc::GarbageCollector::run(cluster.clone(), kinds, config.garbage_collector).await;
        }
    };
    let nodes = async {
        if config.node_lifecycle_controller {
            let nodes = informer("v1", "Node");
            nodelifecycle::run(cluster.clone(), nodes, pods.clone(), config.node_lifecycle.clone()).await;
        }
    };
    let all_jobs = (config.job_controller || config.cron_job_controller).then(|| informer("batch/v1", "Job"));
    let jobs = async {
        if config.job_controller
            && let Some(jobs) = all_jobs.clone()
        {
            job::JobController::run(cluster.clone(), jobs, pods.clone(), config.replica_sets).await;
        }
    };
    let daemons = async {
        if config.daemon_set_controller {
            let daemon_sets = informer("apps/v1", "DaemonSet");
            let nodes = informer("v1", "Node");
            daemonset::DaemonSetController::run(cluster.clone(), daemon_sets, nodes, pods.clone(), config.replica_sets)
                .await;
        }
    };
    let cron_jobs = async {
        if config.cron_job_controller
            && let Some(jobs) = all_jobs.clone()
        {
            let cron_jobs = informer("batch/v1", "CronJob");
            cronjob::CronJobController::run(
                cluster.clone(),
                cron_jobs,
                jobs,
                config.clock.clone(),
                config.replica_sets,
            )
            .await;
        }
    };
    let services = (config.endpoint_slice_controller || config.endpoints_controller).then(|| informer("v1", "Service"));
    let endpoint_slices = async {
        if config.endpoint_slice_controller
            && let Some(services) = services.clone()
        {
            let managed = ListParams::labels(endpointslice::EndpointSliceController::managed_selector());
            let slices =
                Informer::start(cluster.clone(), resource("discovery.k8s.io/v1", "EndpointSlice"), None, managed);
            endpointslice::EndpointSliceController::run(
                cluster.clone(),
                services,
                pods.clone(),
                slices,
                config.replica_sets,
            )
            .await;
        }
    };
    let endpoints = async {
        if config.endpoints_controller
            && let Some(services) = services.clone()
        {
            let endpoints = informer("v1", "Endpoints");
            endpoints::EndpointsController::run(
                cluster.clone(),
                services,
                pods.clone(),
                endpoints,
                config.replica_sets,
            )
            .await;
        }
    };
    tracing::info!("controllers started");
    let autoscalers = async {
        if config.hpa_controller && config.hpa.metrics.is_some() {
            let hpas = informer("autoscaling/v2", "HorizontalPodAutoscaler");
            hpa::HpaController::run(cluster.clone(), hpas, pods.clone(), config.hpa.clone(), config.replica_sets).await;
        }
    };
    let scale_to_zero = async {
        if config.scale_to_zero_controller
            && let Some(metrics) = config.hpa.metrics.clone()
        {
            let hpas = informer("autoscaling/v2", "HorizontalPodAutoscaler");
            let sleep =
                scaletozero::ScaleToZeroConfig { period: config.hpa.sync_period, idle: config.scale_to_zero_idle };
            scaletozero::ScaleToZeroController::run(
                cluster.clone(),
                deployments.clone(),
                hpas,
                pods.clone(),
                metrics,
                sleep,
                config.replica_sets,
            )
            .await;
        }
    };
    let service_accounts = async {
        if config.service_account_controller {
            let namespaces = informer("v1", "Namespace");
            let accounts = informer("v1", "ServiceAccount");
            serviceaccount::ServiceAccountsController::run(cluster.clone(), namespaces, accounts, config.replica_sets)
                .await;
        }
    };
    let disruption = async {
        if config.disruption_controller {
            let budgets = informer("policy/v1", "PodDisruptionBudget");
            disruption::DisruptionController::run(
                cluster.clone(),
                budgets,
                pods.clone(),
                replica_sets.clone(),
                deployments.clone(),
                config.replica_sets,
            )
            .await;
        }
    };
    let event_ttl = async {
        if config.event_ttl_controller {
            eventttl::run(cluster.clone(), informer("v1", "Event"), config.event_ttl).await;
        }
    };
    let all = async {
        tokio::join!(
            rs,
            deploy,
            gc,
            nodes,
            jobs,
            daemons,
            cron_jobs,
            endpoint_slices,
            endpoints,
            autoscalers,
            scale_to_zero,
            service_accounts,
            disruption,
            event_ttl
        );
    };
    all.await;
}

#[cfg(test)]
mod tests;
