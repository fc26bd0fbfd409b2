//! The scheduler's metrics, named as kube-scheduler names them:
//!
//! - `scheduler_schedule_attempts_total{result}`: `scheduled` (the binding was accepted),
//!   `unschedulable` (no node fits) or `error` (the binding failed);
//! - `scheduler_scheduling_attempt_duration_seconds{result}`: from taking the pod off
//!   the queue to its binding's answer (to the decision, for an unschedulable pod);
//! - `scheduler_pending_pods{queue}`: pods waiting in the `active` queue, in `backoff`
//!   after a failed binding, and `unschedulable` until nodes or pods change.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// kube-scheduler's attempt buckets, from 100 µs (this scheduler decides in microseconds).
const ATTEMPT_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How an attempt ended, with its counter and histogram.
#[derive(Debug, Clone)]
pub(crate) struct Attempts {
    pub(crate) total: IntCounter,
    pub(crate) duration: Histogram,
}

/// The scheduler's metric handles, each label value resolved once.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerMetrics {
    pub(crate) scheduled: Attempts,
    pub(crate) unschedulable: Attempts,
    pub(crate) error: Attempts,
    pub(crate) pending_active: IntGauge,
    pub(crate) pending_backoff: IntGauge,
    pub(crate) pending_unschedulable: IntGauge,
}

impl SchedulerMetrics {
    pub(crate) fn register(registry: &prometheus::Registry) -> prometheus::Result<SchedulerMetrics> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "Number of attempts to schedule pods, by the result: 'unschedulable' means a pod could not be \
                 scheduled, while 'error' means a binding failed.",
            ),
            &["result"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
            )
            .buckets(ATTEMPT_BUCKETS.to_vec()),
            &["result"],
        )?;
        let pending = IntGaugeVec::new(
            Opts::new(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type: 'active' means the pods in the active queue; \
                 'backoff' the pods waiting after a failed binding; 'unschedulable' the pods no node fits.",
            ),
            &["queue"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        let result = |name: &str| Attempts {
            total: attempts.with_label_values(&[name]),
            duration: durations.with_label_values(&[name]),
        };
        Ok(SchedulerMetrics {
            scheduled: result("scheduled"),
            unschedulable: result("unschedulable"),
            error: result("error"),
            pending_active: pending.with_label_values(&["active"]),
            pending_backoff: pending.with_label_values(&["backoff"]),
            pending_unschedulable: pending.with_label_values(&["unschedulable"]),
        })
    }
}

impl Attempts {
    /// One attempt that began at `started`.
    pub(crate) fn observe(&self, started: tokio::time::Instant) {
        self.total.inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}
