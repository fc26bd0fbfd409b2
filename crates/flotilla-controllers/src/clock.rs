//! The time controllers that act on the calendar (CronJob) read, behind an interface so
//! tests can run a day of schedules in a second.

use jiff::{SignedDuration, Timestamp};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// A clock: what time it is, and how long in real time until it has moved on by some
/// amount (what a controller waits for before it looks again).
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Timestamp;

    /// The real time it takes this clock to advance by `clock_time`.
    fn real_duration(&self, clock_time: Duration) -> Duration;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn real_duration(&self, clock_time: Duration) -> Duration {
        clock_time
    }
}

/// A clock that starts at `origin` and runs `rate` times faster than real time
/// (`rate: 86_400.0` is a day per second).
#[derive(Debug, Clone, Copy)]
pub struct AcceleratedClock {
    origin: Timestamp,
    started: Instant,
    rate: f64,
}

impl AcceleratedClock {
    pub fn new(origin: Timestamp, rate: f64) -> Self {
        AcceleratedClock { origin, started: Instant::now(), rate: rate.max(f64::MIN_POSITIVE) }
    }
}

impl Clock for AcceleratedClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.started.elapsed().mul_f64(self.rate);
        let elapsed = SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::MAX);
        self.origin.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }

    fn real_duration(&self, clock_time: Duration) -> Duration {
        clock_time.div_f64(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accelerated_clock_runs_fast_and_waits_short() {
        let origin: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
        let clock = AcceleratedClock::new(origin, 3600.0);
        assert_eq!(clock.real_duration(Duration::from_secs(3600)), Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(20));
        let moved = clock.now().duration_since(origin);
        assert!(moved >= SignedDuration::from_secs(72), "20 ms at 3600× is over a minute, got {moved}");
        assert_eq!(SystemClock.real_duration(Duration::from_secs(5)), Duration::from_secs(5));
    }
}
