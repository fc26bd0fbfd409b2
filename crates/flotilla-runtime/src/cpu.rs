//! CPU accounting and the CPU quota (`resources.limits.cpu`), as cgroups' CFS bandwidth
//! control: a pod may run `quota` of CPU time per [`CPU_PERIOD`], all its instances
//! together; once it has spent that it is throttled until the period that pays its
//! overrun back, and then resumes. Throttling never kills and never blocks a thread:
//! the instance's epoch callback returns a yield whose future is a tokio sleep, so the
//! fiber suspends, its task returns `Pending`, and the worker runs other pods meanwhile.
//!
//! How CPU time is measured: by the clock, around each poll of an instance's future
//! (instantiation, the call, a response body streamed afterwards) and at each epoch tick
//! inside a poll. A poll is the instance running on a thread (wasm, or host calls it makes
//! synchronously); waiting on I/O returns `Pending` and is not counted. This was chosen
//! over fuel because
//!
//! - it costs nothing to pods without a quota: fuel is an engine-wide setting that adds
//!   a counter update to every basic block of every component the engine compiles
//!   (typically 10–30% on compute-bound code), whereas the clock reads here happen per
//!   poll and per 10 ms tick, and the epoch callback runs anyway for deadlines;
//! - it measures time, which is what a quota in cores means, where fuel counts wasm
//!   instructions: a calibration of fuel per second is off by the instruction mix
//!   (a division costs far more than an add), misses time spent in host calls, and
//!   changes with the machine's load;
//! - it is what [`HttpPod::cpu_time`](crate::HttpPod::cpu_time) reports for metrics.
//!
//! Its limits: it reads wall time while the instance holds a thread, so time the OS
//! takes the thread away is charged to the pod (as with any clock-based account, an
//! overloaded node throttles quota'd pods a little early); and the quota is enforced
//! at epoch ticks ([`EPOCH_TICK`](crate::EPOCH_TICK)) and before each instance starts,
//! so a pod may overrun its quota by up to a tick, which is carried into the next
//! periods as debt: over a few periods the pod gets its quota, not a tick more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

/// The CPU quota's period, as cgroups' default `cfs_period_us` (100 ms).
pub const CPU_PERIOD: Duration = Duration::from_millis(100);

/// A pod's CPU account, shared by all its instances.
#[derive(Debug)]
pub(crate) struct CpuAccount {
    /// Cumulative CPU time, in nanoseconds.
    used_nanos: AtomicU64,
    quota: Option<Mutex<Quota>>,
}

/// The bandwidth state: CPU time used in the current period, possibly more than the
/// quota (the debt is paid back by the next periods).
#[derive(Debug)]
struct Quota {
    per_period: Duration,
    period_start: Instant,
    used: Duration,
}

impl Quota {
    /// Moves to the period holding `now`, each elapsed period paying back a quota.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed < CPU_PERIOD {
            return;
        }
        let periods = elapsed.as_nanos() / CPU_PERIOD.as_nanos();
        let paid = self.per_period.as_nanos().saturating_mul(periods);
        self.used = Duration::from_nanos(u64::try_from(self.used.as_nanos().saturating_sub(paid)).unwrap_or(u64::MAX));
        let into_period = u64::try_from(elapsed.as_nanos() % CPU_PERIOD.as_nanos()).unwrap_or(0);
        self.period_start = now.checked_sub(Duration::from_nanos(into_period)).unwrap_or(now);
    }

    /// When the pod may run again, if it has spent its quota.
    fn throttled_until(&mut self, now: Instant) -> Option<Instant> {
        self.roll(now);
        if self.used < self.per_period {
            return None;
        }
        // The overrun past this period's quota is paid by whole later periods.
        let over = (self.used - self.per_period).as_nanos();
        let periods = over / self.per_period.as_nanos().max(1) + 1;
        let wait = CPU_PERIOD.as_nanos().saturating_mul(periods);
        let wait = Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX));
        // Far past any real deadline if it overflows: the pod's limits end it first.
        Some(self.period_start.checked_add(wait).unwrap_or(now + Duration::from_secs(3600)))
    }
}

impl CpuAccount {
    /// An account with `cpu_millis` millicores of quota (`None`: unlimited).
    pub(crate) fn new(cpu_millis: Option<u32>) -> CpuAccount {
        let quota = cpu_millis.map(|millis| {
            let per_period = CPU_PERIOD * millis / 1000;
            Mutex::new(Quota { per_period, period_start: Instant::now(), used: Duration::ZERO })
        });
        CpuAccount { used_nanos: AtomicU64::new(0), quota }
    }

    /// The CPU time the pod's instances have used so far.
    pub(crate) fn used(&self) -> Duration {
        Duration::from_nanos(self.used_nanos.load(Ordering::Relaxed))
    }

    fn charge(&self, now: Instant, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.used_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(quota) = &self.quota {
            let mut quota = quota.lock().unwrap_or_else(PoisonError::into_inner);
            quota.roll(now);
            quota.used += time;
        }
    }

    fn throttled_until(&self, now: Instant) -> Option<Instant> {
        let quota = self.quota.as_ref()?;
        quota.lock().unwrap_or_else(PoisonError::into_inner).throttled_until(now)
    }

    /// Waits (asynchronously) while the pod has no quota left: an instance about to
    /// start calls this, so short instances that never see an epoch tick are throttled.
    pub(crate) async fn wait_for_quota(&self) {
        while let Some(until) = self.throttled_until(Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

/// One instance's meter on its pod's account.
#[derive(Debug)]
pub(crate) struct Meter {
    account: Arc<CpuAccount>,
    /// Since when the instance has been running uncharged: set while a poll runs.
    running_since: Mutex<Option<Instant>>,
}

impl Meter {
    pub(crate) fn new(account: Arc<CpuAccount>) -> Meter {
        Meter { account, running_since: Mutex::new(None) }
    }

    fn resume(&self) {
        *self.running_since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Charges the time since the last resume or checkpoint; with `keep_running`, the
    /// instance goes on running from now.
    fn charge(&self, keep_running: bool) -> Instant {
        let now = Instant::now();
        let since = {
            let mut running_since = self.running_since.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *running_since, keep_running.then_some(now))
        };
        if let Some(since) = since {
            self.account.charge(now, now.saturating_duration_since(since));
        }
        now
    }

    /// Polls `future` to completion, charging the time spent in each poll.
    pub(crate) async fn run<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            self.resume();
            let poll = future.as_mut().poll(cx);
            self.charge(false);
            poll
        })
        .await
    }

    /// The epoch callback's part: charges the time run so far and, if the pod has spent
    /// its quota, a yield that sleeps until it may run again; else a plain yield (so a
    /// spinning instance does not hold its worker thread).
    pub(crate) fn on_epoch(&self) -> UpdateDeadline {
        let now = self.charge(true);
        match self.account.throttled_until(now) {
            // The sleep needs tokio's timer, there whenever wasmtime-wasi runs.
            Some(until) if tokio::runtime::Handle::try_current().is_ok() => {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep_until(until.into())))
            }
            _ => UpdateDeadline::Yield(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_carries_debt_into_later_periods() {
        let start = Instant::now();
        let mut quota = Quota { per_period: Duration::from_millis(10), period_start: start, used: Duration::ZERO };
        assert_eq!(quota.throttled_until(start), None);
        quota.used = Duration::from_millis(9);
        assert_eq!(quota.throttled_until(start + Duration::from_millis(50)), None);
        // Exactly the quota: throttled to the next period.
        quota.used = Duration::from_millis(10);
        assert_eq!(quota.throttled_until(start + Duration::from_millis(50)), Some(start + CPU_PERIOD));
        // 2.5 quotas: the next period pays one back, still over; the one after, runs.
        quota.used = Duration::from_millis(25);
        assert_eq!(quota.throttled_until(start + Duration::from_millis(50)), Some(start + 2 * CPU_PERIOD));
        assert_eq!(quota.throttled_until(start + Duration::from_millis(150)), Some(start + 2 * CPU_PERIOD));
        assert_eq!(quota.throttled_until(start + Duration::from_millis(210)), None);
        assert_eq!(quota.used, Duration::from_millis(5));
        assert_eq!(quota.period_start, start + 2 * CPU_PERIOD);
        // An idle pod does not save up quota.
        assert_eq!(quota.throttled_until(start + Duration::from_secs(100)), None);
        assert_eq!(quota.used, Duration::ZERO);
    }

    #[test]
    fn accounts_sum_their_instances() {
        let account = Arc::new(CpuAccount::new(None));
        let (a, b) = (Meter::new(account.clone()), Meter::new(account.clone()));
        a.resume();
        b.resume();
        std::thread::sleep(Duration::from_millis(5));
        a.charge(false);
        b.charge(false);
        // Not running: nothing more to charge.
        a.charge(false);
        assert!(account.used() >= Duration::from_millis(10), "{:?}", account.used());
        assert!(account.throttled_until(Instant::now()).is_none());
    }
}
