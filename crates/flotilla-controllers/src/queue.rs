//! The work queue of a controller, after client-go's `workqueue`: keys, not events.
//!
//! - A key is queued at most once: adding it again while it waits is a no-op (the
//!   reconcile reads the latest state anyway).
//! - A key being reconciled is never handed out again until it is done; adding it in the
//!   meantime marks it to run once more afterwards.
//! - Keys can be added for later (requeue after, back-off); the earliest time wins, and an
//!   immediate add overtakes a delayed one.
//! - Failures in a row are counted per key for an exponential back-off, reset by a
//!   success.
//!
//! Pure state and no clock of its own: the runner passes `Instant`s in, so tests drive it
//! with any times they like. With [`QueueMetrics`] it counts adds and retries and keeps
//! its depth (keys waiting to run: queued, and added again while running) as client-go's
//! workqueue does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

use crate::metrics::QueueMetrics;

#[derive(Debug)]
pub(crate) struct WorkQueue<K> {
    ready: VecDeque<K>,
    /// The keys in `ready`.
    queued: HashSet<K>,
    /// Keys due later, and when (the earliest asked for).
    waiting: HashMap<K, Instant>,
    /// `waiting` ordered by time; entries whose time no longer matches `waiting` are stale.
    timers: BinaryHeap<Reverse<(Instant, K)>>,
    /// Keys being reconciled.
    active: HashSet<K>,
    /// Active keys added again: they run once more when done.
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
    backoff_base: Duration,
    backoff_max: Duration,
    metrics: Option<QueueMetrics>,
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    pub(crate) fn new(backoff_base: Duration, backoff_max: Duration) -> Self {
        WorkQueue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            waiting: HashMap::new(),
            timers: BinaryHeap::new(),
            active: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            backoff_base,
            backoff_max,
            metrics: None,
        }
    }

    /// The same queue, counting in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Option<QueueMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Queues `key` now.
    pub(crate) fn add(&mut self, key: K) {
        if self.enqueue(key)
            && let Some(metrics) = &self.metrics
        {
            metrics.adds.inc();
        }
        self.update_depth();
    }

    /// Queues `key` now (after it ran, if it is running); answers whether it was not
    /// waiting to run already.
    fn enqueue(&mut self, key: K) -> bool {
        self.waiting.remove(&key);
        if self.active.contains(&key) {
            self.dirty.insert(key)
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
            true
        } else {
            false
        }
    }

    fn update_depth(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.depth.set(i64::try_from(self.ready.len() + self.dirty.len()).unwrap_or(i64::MAX));
        }
    }

    /// Queues `key` at `at`, unless it is queued sooner already.
    pub(crate) fn add_at(&mut self, key: K, at: Instant, now: Instant) {
        if at <= now {
            return self.add(key);
        }
        if self.queued.contains(&key) {
            return;
        }
        match self.waiting.get(&key) {
            Some(when) if *when <= at => {}
            _ => {
                self.waiting.insert(key.clone(), at);
                self.timers.push(Reverse((at, key)));
            }
        }
    }

    /// Moves the keys due by `now` to the ready queue.
    pub(crate) fn promote(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.timers.pop() else { break };
            if self.waiting.get(&key) == Some(&at) {
                self.add(key);
            }
        }
    }

    /// When the next delayed key is due.
    pub(crate) fn next_due(&mut self) -> Option<Instant> {
        // Drop stale timers so a long-gone time does not wake the runner in a loop.
        while let Some(Reverse((at, key))) = self.timers.peek() {
            if self.waiting.get(key) == Some(at) {
                return Some(*at);
            }
            self.timers.pop();
        }
        None
    }

    /// The next key to reconcile; it is active until [`WorkQueue::done`].
    pub(crate) fn pop(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.active.insert(key.clone());
        self.update_depth();
        Some(key)
    }

    /// The reconcile of `key` ended; it runs again if it was added meanwhile.
    pub(crate) fn done(&mut self, key: &K) {
        self.active.remove(key);
        if self.dirty.remove(key) {
            // Counted as an add when it was added while running.
            self.enqueue(key.clone());
            self.update_depth();
        }
    }

    /// Counts a failure of `key` and answers how long to wait before the next try:
    /// `base * 2^(failures - 1)`, at most the maximum.
    pub(crate) fn failed(&mut self, key: &K) -> Duration {
        if let Some(metrics) = &self.metrics {
            metrics.retries.inc();
        }
        let failures = self.failures.entry(key.clone()).or_insert(0);
        *failures = failures.saturating_add(1);
        let exponent = (*failures - 1).min(30);
        self.backoff_base.saturating_mul(1 << exponent).min(self.backoff_max)
    }

    /// How many times in a row `key` has failed.
    pub(crate) fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// A success: the back-off of `key` starts over.
    pub(crate) fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ready.len()
    }

    #[cfg(test)]
    pub(crate) fn is_active(&self, key: &K) -> bool {
        self.active.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(Duration::from_millis(10), Duration::from_secs(1))
    }

    #[test]
    fn keys_are_deduplicated() {
        let mut q = queue();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn an_active_key_is_not_handed_out_twice_but_runs_again() {
        let mut q = queue();
        q.add("a");
        assert_eq!(q.pop(), Some("a"));
        q.add("a");
        q.add("a");
        assert_eq!(q.pop(), None, "a is being reconciled");
        assert!(q.is_active(&"a"));
        q.done(&"a");
        assert_eq!(q.pop(), Some("a"));
        q.done(&"a");
        assert_eq!(q.pop(), None, "added twice while active, runs once more");
    }

    #[test]
    fn delayed_keys_wait_and_the_earliest_time_wins() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_at("a", t0 + Duration::from_secs(5), t0);
        q.add_at("a", t0 + Duration::from_secs(2), t0);
        q.add_at("a", t0 + Duration::from_secs(9), t0);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(2)));
        q.promote(t0 + Duration::from_secs(1));
        assert_eq!(q.pop(), None);
        q.promote(t0 + Duration::from_secs(2));
        assert_eq!(q.pop(), Some("a"));
        q.done(&"a");
        q.promote(t0 + Duration::from_secs(10));
        assert_eq!(q.pop(), None, "the later times were superseded");
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn an_immediate_add_overtakes_a_delayed_one() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add_at("a", t0 + Duration::from_secs(5), t0);
        q.add("a");
        assert_eq!(q.pop(), Some("a"));
        q.done(&"a");
        q.promote(t0 + Duration::from_secs(6));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_delay_due_while_active_runs_after() {
        let mut q = queue();
        let t0 = Instant::now();
        q.add("a");
        assert_eq!(q.pop(), Some("a"));
        q.add_at("a", t0 + Duration::from_secs(1), t0);
        q.promote(t0 + Duration::from_secs(1));
        assert_eq!(q.pop(), None);
        q.done(&"a");
        assert_eq!(q.pop(), Some("a"));
    }

    #[test]
    fn adds_depth_and_retries_are_counted_as_client_go_counts_them() -> Result<(), prometheus::Error> {
        let registry = prometheus::Registry::new();
        let (metrics, _) = crate::metrics::ControllerMetrics::register(&registry)?.controller("test");
        let mut q = queue().with_metrics(Some(metrics.clone()));
        let t0 = Instant::now();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!((metrics.adds.get(), metrics.depth.get()), (2, 2), "a second add of a waiting key is no add");
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(metrics.depth.get(), 1);
        q.add("a");
        q.add("a");
        assert_eq!((metrics.adds.get(), metrics.depth.get()), (3, 2), "added again while running: once");
        q.done(&"a");
        assert_eq!((metrics.adds.get(), metrics.depth.get()), (3, 2), "its rerun is not another add");
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(metrics.depth.get(), 0);
        let wait = q.failed(&"a");
        q.done(&"a");
        q.add_at("a", t0 + wait, t0);
        assert_eq!((metrics.retries.get(), metrics.depth.get()), (1, 0), "a delayed key is not in the depth yet");
        q.promote(t0 + wait);
        assert_eq!((metrics.adds.get(), metrics.depth.get()), (4, 1));
        Ok(())
    }

    #[test]
    fn back_off_doubles_up_to_the_cap_and_resets() {
        let mut q = queue();
        let waits: Vec<_> = (0..9).map(|_| q.failed(&"a").as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(q.failed(&"b").as_millis(), 10, "per key");
        q.forget(&"a");
        assert_eq!(q.failed(&"a").as_millis(), 10);
    }
}
