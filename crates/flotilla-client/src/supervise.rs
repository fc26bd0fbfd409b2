//! Supervision of long-running tasks: a panic is a bug report, not an outage.
//!
//! A [`Supervisor`] runs a task (the API server's accept loop, a finalizer, the scheduler,
//! the controllers, a listener…) in a tokio task of its own. When the task panics, the
//! panic is logged with the task's name, counted in `flotilla_task_panics_total{task}`
//! of the registry the supervisor was made with, and the task is made again and restarted
//! after an exponential back-off (capped, reset once a run has lasted a while), so one
//! bug in one object does not end the process. It also catches the panics of a single
//! future ([`Supervisor::catch`]), which the listeners use around each request's handler
//! so that a panicking request gets a 500 rather than a dropped connection.
//!
//! Task names are static strings: they are metric label values, so their number is fixed
//! by the code, never by what the cluster holds.

use futures_util::FutureExt as _;
use prometheus::{IntCounterVec, Opts, Registry};
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

/// How long a supervised task waits before it is restarted after a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first panic; doubles with each panic in a row…
    pub initial: Duration,
    /// …up to this.
    pub max: Duration,
    /// A run that lasted this long before it panicked starts the doubling again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait after `failures` panics in a row (1 for the first).
    pub fn wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// Runs tasks supervised and counts their panics. Cheap to clone; the clones share the
/// counter.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// `None` only when the family could not be made (it cannot: its options are fixed).
    panics: Option<IntCounterVec>,
    backoff: Backoff,
}

fn panics_family() -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(
        Opts::new("flotilla_task_panics_total", "Panics of the process's supervised tasks and request handlers."),
        &["task"],
    )
}

impl Default for Supervisor {
    /// A supervisor counting in a registry of its own that nobody reads (for tests and
    /// library defaults); the binary makes one with [`Supervisor::register`].
    fn default() -> Self {
        Supervisor { panics: panics_family().ok(), backoff: Backoff::default() }
    }
}

impl Supervisor {
    /// A supervisor counting panics in `registry`. Fails when the registry already has
    /// the family: make one supervisor per registry and clone it.
    pub fn register(registry: &Registry) -> prometheus::Result<Supervisor> {
        let panics = panics_family()?;
        registry.register(Box::new(panics.clone()))?;
        Ok(Supervisor { panics: Some(panics), backoff: Backoff::default() })
    }

    /// The same supervisor (and counter) restarting tasks after `backoff`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many panics of `task` were counted.
    pub fn panics(&self, task: &str) -> u64 {
        self.panics.as_ref().map_or(0, |panics| panics.with_label_values(&[task]).get())
    }

    /// Logs and counts a panic of `task` (its payload as [`std::panic::catch_unwind`] or
    /// [`tokio::task::JoinError::into_panic`] gives it).
    pub fn panicked(&self, task: &'static str, payload: &(dyn Any + Send)) {
        if let Some(panics) = &self.panics {
            panics.with_label_values(&[task]).inc();
        }
        tracing::error!(task, panic = panic_message(payload), "task panicked (a bug: please report it)");
    }

    /// Polls `future`, catching a panic in it: `None` then, logged and counted as a
    /// panic of `task`. For work that must not take its neighbours down with it, such
    /// as one request on a connection.
    pub async fn catch<F: Future>(&self, task: &'static str, future: F) -> Option<F::Output> {
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(output) => Some(output),
            Err(payload) => {
                self.panicked(task, payload.as_ref());
                None
            }
        }
    }

    /// Runs the task `make` makes, in a tokio task of its own, until it returns; when it
    /// panics, makes and starts it again after the back-off. Dropping the returned future
    /// (or aborting the task awaiting it) aborts the task it runs.
    pub async fn run<F, Fut>(&self, task: &'static str, mut make: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let mut running = AbortOnDrop(tokio::spawn(make().in_current_span()));
            match (&mut running.0).await {
                Ok(()) => return,
                Err(error) if error.is_panic() => self.panicked(task, error.into_panic().as_ref()),
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
            if started.elapsed() >= self.backoff.reset_after {
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let wait = self.backoff.wait(failures);
            tracing::warn!(task, ?wait, "restarting the task after its panic");
            tokio::time::sleep(wait).await;
        }
    }

    /// [`Supervisor::run`] in a task of its own (instrumented with the current span);
    /// aborting the handle aborts the supervised task too.
    pub fn spawn<F, Fut>(&self, task: &'static str, make: F) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let supervisor = self.clone();
        tokio::spawn(async move { supervisor.run(task, make).await }.in_current_span())
    }
}

/// Aborts its task when dropped (when the supervising future is).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a panic said, when it said it with a string.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_twice_is_restarted_with_back_off_and_then_runs() {
        let registry = Registry::new();
        let supervisor = Supervisor::register(&registry).expect("register");
        let runs = Arc::new(AtomicU32::new(0));
        let (done_tx, done) = tokio::sync::oneshot::channel::<Instant>();
        let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
        let started = Instant::now();
        let counted = runs.clone();
        let handle = supervisor.spawn("flaky", move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            let done_tx = done_tx.clone();
            async move {
                if run < 2 {
                    panic!("run {run} fails");
                }
                if let Some(tx) = done_tx.lock().expect("lock").take() {
                    let _ = tx.send(Instant::now());
                }
                std::future::pending::<()>().await;
            }
        });
        let third_run_at = done.await.expect("the third run starts");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(supervisor.panics("flaky"), 2);
        // 100 ms after the first panic, 200 ms after the second.
        assert_eq!(third_run_at - started, Duration::from_millis(300));
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).expect("encode");
        assert!(text.contains("flotilla_task_panics_total{task=\"flaky\"} 2"), "{text}");
        // The task keeps running; aborting the supervisor stops it.
        assert!(!handle.is_finished());
        handle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_is_not_restarted() {
        let supervisor = Supervisor::default();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervisor
            .run("once", move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {}
            })
            .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(supervisor.panics("once"), 0);
    }

    #[tokio::test]
    async fn catch_turns_a_panic_into_none_and_counts_it() {
        let supervisor = Supervisor::default();
        assert_eq!(supervisor.catch("request", async { 7 }).await, Some(7));
        let panicked = supervisor.catch("request", async { panic!("boom") }).await;
        assert_eq!(panicked, None::<()>);
        assert_eq!(supervisor.panics("request"), 1);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let backoff = Backoff::default();
        assert_eq!(backoff.wait(1), Duration::from_millis(100));
        assert_eq!(backoff.wait(2), Duration::from_millis(200));
        assert_eq!(backoff.wait(10), Duration::from_secs(30));
        assert_eq!(backoff.wait(u32::MAX), Duration::from_secs(30));
    }
}
