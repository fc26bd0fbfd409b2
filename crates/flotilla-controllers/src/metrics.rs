//! The controllers' metrics, kept by the one pipeline for every controller (named as
//! client-go's workqueue and controller-runtime name theirs):
//!
//! - `workqueue_adds_total{name}`, `workqueue_depth{name}`, `workqueue_retries_total{name}`;
//! - `controller_reconcile_total{controller,result}`, `result` one of `success` (wait for
//!   a change), `requeue_after`, `error` (a failed or panicked reconcile, retried after a
//!   back-off);
//! - `controller_reconcile_duration_seconds{controller}`.
//!
//! `name` and `controller` are the controllers' own names, a fixed set.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// controller-runtime's reconcile time buckets, from 100 µs.
const RECONCILE_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The families every controller's pipeline counts in.
#[derive(Debug, Clone)]
pub(crate) struct ControllerMetrics {
    adds: IntCounterVec,
    depth: IntGaugeVec,
    retries: IntCounterVec,
    reconciles: IntCounterVec,
    durations: HistogramVec,
}

/// One work queue's handles.
#[derive(Debug, Clone)]
pub(crate) struct QueueMetrics {
    pub(crate) adds: IntCounter,
    pub(crate) depth: IntGauge,
    pub(crate) retries: IntCounter,
}

/// One controller's reconcile handles.
#[derive(Debug, Clone)]
pub(crate) struct ReconcileMetrics {
    pub(crate) success: IntCounter,
    pub(crate) requeue_after: IntCounter,
    pub(crate) error: IntCounter,
    pub(crate) duration: Histogram,
}

impl ControllerMetrics {
    pub(crate) fn register(registry: &prometheus::Registry) -> prometheus::Result<ControllerMetrics> {
        let adds = IntCounterVec::new(
            Opts::new("workqueue_adds_total", "Total number of adds handled by workqueue"),
            &["name"],
        )?;
        let depth = IntGaugeVec::new(Opts::new("workqueue_depth", "Current depth of workqueue"), &["name"])?;
        let retries = IntCounterVec::new(
            Opts::new("workqueue_retries_total", "Total number of retries handled by workqueue"),
            &["name"],
        )?;
        let reconciles = IntCounterVec::new(
            Opts::new("controller_reconcile_total", "Total number of reconciliations per controller, by result"),
            &["controller", "result"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "controller_reconcile_duration_seconds",
                "Length of time per reconciliation per controller",
            )
            .buckets(RECONCILE_BUCKETS.to_vec()),
            &["controller"],
        )?;
        registry.register(Box::new(adds.clone()))?;
        registry.register(Box::new(depth.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        Ok(ControllerMetrics { adds, depth, retries, reconciles, durations })
    }

    /// The handles of the controller `name`.
    pub(crate) fn controller(&self, name: &str) -> (QueueMetrics, ReconcileMetrics) {
        let queue = QueueMetrics {
            adds: self.adds.with_label_values(&[name]),
            depth: self.depth.with_label_values(&[name]),
            retries: self.retries.with_label_values(&[name]),
        };
        let result = |result: &str| self.reconciles.with_label_values(&[name, result]);
        let reconcile = ReconcileMetrics {
            success: result("success"),
            requeue_after: result("requeue_after"),
            error: result("error"),
            duration: self.durations.with_label_values(&[name]),
        };
        (queue, reconcile)
    }
}
