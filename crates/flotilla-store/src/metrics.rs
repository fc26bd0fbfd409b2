//! The store's metrics, registered in the registry of [`RedbStoreOptions::metrics`]
//! (`flotilla_store_*`): operations by kind, and the writer's group commits (how long
//! each commit's fsync took, how many writes it carried).
//!
//! [`RedbStoreOptions::metrics`]: crate::RedbStoreOptions::metrics

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Commit latency buckets: an fsync takes from tens of microseconds (tmpfs) to tens of
/// milliseconds (a busy disk).
const COMMIT_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// Writes per commit, up to the writer's `MAX_BATCH`.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The store's metric handles, each label value resolved once.
#[derive(Debug, Clone)]
pub(crate) struct StoreMetrics {
    pub(crate) get: IntCounter,
    pub(crate) list: IntCounter,
    pub(crate) create: IntCounter,
    pub(crate) update: IntCounter,
    pub(crate) delete: IntCounter,
    pub(crate) watch: IntCounter,
    pub(crate) compact: IntCounter,
    /// Seconds per committed write transaction (one fsync).
    pub(crate) commit_duration: Histogram,
    /// Operations per committed write transaction.
    pub(crate) commit_batch_size: Histogram,
    /// Times the store failed (a commit failed) and refused writes until it recovered.
    pub(crate) failures: IntCounter,
    /// Reopens of the store file after a storage failure.
    pub(crate) reopens: IntCounter,
    /// Panics the store survived, by task (`writer`: its batch failed; `watch`: the
    /// watch ended with an error).
    pub(crate) panics: IntCounterVec,
}

impl StoreMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<StoreMetrics> {
        let operations = IntCounterVec::new(
            Opts::new("flotilla_store_operations_total", "Store operations by kind."),
            &["operation"],
        )?;
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "flotilla_store_commit_duration_seconds",
                "How long each group commit of the store's writer took (its fsync included).",
            )
            .buckets(COMMIT_BUCKETS.to_vec()),
        )?;
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new("flotilla_store_commit_batch_size", "Writes carried by each group commit of the store.")
                .buckets(BATCH_BUCKETS.to_vec()),
        )?;
        let failures = IntCounter::new(
            "flotilla_store_failures_total",
            "Times the store failed (disk full, I/O error) and refused writes until it recovered.",
        )?;
        let reopens =
            IntCounter::new("flotilla_store_reopens_total", "Reopens of the store file after a storage failure.")?;
        let panics = IntCounterVec::new(
            Opts::new(
                "flotilla_store_panics_total",
                "Panics the store survived: a write batch that failed (writer) or a watch ended with an error (watch).",
            ),
            &["task"],
        )?;
        registry.register(Box::new(panics.clone()))?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(reopens.clone()))?;
        registry.register(Box::new(commit_duration.clone()))?;
        registry.register(Box::new(commit_batch_size.clone()))?;
        let op = |name: &str| operations.with_label_values(&[name]);
        Ok(StoreMetrics {
            get: op("get"),
            list: op("list"),
            create: op("create"),
            update: op("update"),
            delete: op("delete"),
            watch: op("watch"),
            compact: op("compact"),
            commit_duration,
            commit_batch_size,
            failures,
            reopens,
            panics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_per_registry() {
        let registry = Registry::new();
        assert!(StoreMetrics::register(&registry).is_ok());
        assert!(StoreMetrics::register(&registry).is_err(), "the same families twice");
        assert!(StoreMetrics::register(&Registry::new()).is_ok());
    }
}
