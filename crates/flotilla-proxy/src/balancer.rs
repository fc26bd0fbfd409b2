//! Which endpoint gets a request: the load-balancing policies, client-IP session
//! affinity, and the in-flight counts least-request and power-of-two-choices read.

use crate::snapshot::Endpoint;
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The annotation that picks a Service's policy.
pub(crate) const POLICY_ANNOTATION: &str = "flotilla.dev/load-balancer";

/// How a Service spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Policy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight (ties in turn).
    LeastRequest,
    /// The less busy of two endpoints picked at random.
    PowerOfTwoChoices,
}

impl Policy {
    /// The policy an annotation value names.
    pub(crate) fn parse(value: &str) -> Option<Policy> {
        match value {
            "" | "round-robin" => Some(Policy::RoundRobin),
            "least-request" => Some(Policy::LeastRequest),
            "p2c" | "power-of-two-choices" => Some(Policy::PowerOfTwoChoices),
            _ => None,
        }
    }
}

/// The index of the endpoint `policy` picks, never `exclude`; `None` when there is no
/// other. `counter` is the Service's turn counter.
pub(crate) fn pick(
    policy: Policy,
    counter: &AtomicUsize,
    endpoints: &[Endpoint],
    exclude: Option<usize>,
) -> Option<usize> {
    let n = endpoints.len();
    let candidates = n - usize::from(exclude.is_some_and(|e| e < n));
    if candidates == 0 {
        return None;
    }
    if candidates == 1 {
        return (0..n).find(|i| Some(*i) != exclude);
    }
    match policy {
        Policy::RoundRobin => {
            let i = counter.fetch_add(1, Ordering::Relaxed) % n;
            Some(if Some(i) == exclude { (i + 1) % n } else { i })
        }
        Policy::LeastRequest => {
            // Starting from the next in turn spreads requests evenly over idle endpoints.
            let start = counter.fetch_add(1, Ordering::Relaxed);
            let mut best: Option<(usize, usize)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                if Some(i) == exclude {
                    continue;
                }
                let load = endpoints[i].in_flight.load(Ordering::Relaxed);
                if best.is_none_or(|(_, least)| load < least) {
                    best = Some((i, load));
                }
            }
            best.map(|(i, _)| i)
        }
        Policy::PowerOfTwoChoices => {
            let a = random_below(n);
            let b = (a + 1 + random_below(n - 1)) % n;
            if Some(a) == exclude {
                return Some(b);
            }
            if Some(b) == exclude {
                return Some(a);
            }
            let load = |i: usize| endpoints[i].in_flight.load(Ordering::Relaxed);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

thread_local! {
    static RANDOM: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish() | 1);
}

/// A number below `n` (> 0) from a per-thread xorshift generator: good enough to pick
/// endpoints, and no lock or system call.
fn random_below(n: usize) -> usize {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x % n as u64) as usize
    })
}

/// Counts a request in flight to an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub(crate) fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const AFFINITY_SHARDS: usize = 16;
/// A shard past this many clients drops its expired ones.
const AFFINITY_SWEEP_AT: usize = 4096;

/// `sessionAffinity: ClientIP`: which pod each client was last sent to. Sharded so that
/// clients rarely wait on each other; only Services that ask for affinity use it.
#[derive(Debug)]
pub(crate) struct Affinity {
    pub(crate) timeout: Duration,
    shards: Box<[Mutex<HashMap<IpAddr, Pinned>>]>,
}

#[derive(Debug)]
struct Pinned {
    pod: Arc<str>,
    last_used: Instant,
}

impl Affinity {
    pub(crate) fn new(timeout: Duration) -> Self {
        Affinity { timeout, shards: (0..AFFINITY_SHARDS).map(|_| Mutex::default()).collect() }
    }

    fn shard(&self, client: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Pinned>> {
        let hash = match client {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                (bits as u64) ^ ((bits >> 64) as u64)
            }
        };
        let index = (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % self.shards.len();
        // A poisoned shard only means a panic elsewhere between two map operations.
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pod `client` is pinned to, if it used it within the timeout (which this use
    /// renews, as kube-proxy's affinity does).
    pub(crate) fn lookup(&self, client: IpAddr, now: Instant) -> Option<Arc<str>> {
        let mut shard = self.shard(client);
        let pinned = shard.get_mut(&client)?;
        if now.saturating_duration_since(pinned.last_used) > self.timeout {
            shard.remove(&client);
            return None;
        }
        pinned.last_used = now;
        Some(pinned.pod.clone())
    }

    /// Pins `client` to `pod`.
    pub(crate) fn remember(&self, client: IpAddr, pod: &Arc<str>, now: Instant) {
        let mut shard = self.shard(client);
        if shard.len() >= AFFINITY_SWEEP_AT {
            let timeout = self.timeout;
            shard.retain(|_, pinned| now.saturating_duration_since(pinned.last_used) <= timeout);
        }
        match shard.get_mut(&client) {
            Some(pinned) if pinned.pod == *pod => pinned.last_used = now,
            _ => {
                shard.insert(client, Pinned { pod: pod.clone(), last_used: now });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Endpoint> {
        (0..n).map(|i| Endpoint::for_test(&format!("pod-{i}"))).collect()
    }

    #[test]
    fn round_robin_takes_turns_and_skips_the_excluded() {
        let eps = endpoints(3);
        let counter = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6).filter_map(|_| pick(Policy::RoundRobin, &counter, &eps, None)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        for _ in 0..6 {
            assert_ne!(pick(Policy::RoundRobin, &counter, &eps, Some(1)), Some(1));
        }
        assert_eq!(pick(Policy::RoundRobin, &counter, &eps[..1], Some(0)), None);
        assert_eq!(pick(Policy::LeastRequest, &counter, &[], None), None);
    }

    #[test]
    fn least_request_and_p2c_prefer_the_idle_endpoint() {
        let eps = endpoints(2);
        eps[0].in_flight.store(3, Ordering::Relaxed);
        let counter = AtomicUsize::new(0);
        for policy in [Policy::LeastRequest, Policy::PowerOfTwoChoices] {
            for _ in 0..20 {
                assert_eq!(pick(policy, &counter, &eps, None), Some(1), "{policy:?}");
            }
            assert_eq!(pick(policy, &counter, &eps, Some(1)), Some(0), "{policy:?}");
        }
        // Idle endpoints share the load.
        eps[0].in_flight.store(0, Ordering::Relaxed);
        let mut counts = [0; 2];
        for _ in 0..100 {
            counts[pick(Policy::LeastRequest, &counter, &eps, None).unwrap_or(0)] += 1;
        }
        assert_eq!(counts, [50, 50]);
    }

    #[test]
    fn p2c_spreads_over_many_endpoints() {
        let eps = endpoints(5);
        let counter = AtomicUsize::new(0);
        let mut counts = [0; 5];
        for _ in 0..5000 {
            let i = pick(Policy::PowerOfTwoChoices, &counter, &eps, Some(4)).unwrap_or(4);
            counts[i] += 1;
        }
        assert_eq!(counts[4], 0);
        assert!(counts[..4].iter().all(|c| (1000..1500).contains(c)), "{counts:?}");
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let counter = AtomicUsize::new(0);
        {
            let _a = InFlight::start(&counter);
            let _b = InFlight::start(&counter);
            assert_eq!(counter.load(Ordering::Relaxed), 2);
        }
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn affinity_pins_a_client_until_it_is_idle_for_the_timeout() {
        let affinity = Affinity::new(Duration::from_secs(10));
        let start = Instant::now();
        let client: IpAddr = "10.0.0.7".parse().expect("an address");
        let other: IpAddr = "::1".parse().expect("an address");
        assert_eq!(affinity.lookup(client, start), None);
        let pod: Arc<str> = Arc::from("web-1");
        affinity.remember(client, &pod, start);
        assert_eq!(affinity.lookup(client, start + Duration::from_secs(9)).as_deref(), Some("web-1"));
        // The lookup renewed it.
        assert_eq!(affinity.lookup(client, start + Duration::from_secs(18)).as_deref(), Some("web-1"));
        assert_eq!(affinity.lookup(other, start), None);
        assert_eq!(affinity.lookup(client, start + Duration::from_secs(29)), None);
        assert_eq!(Policy::parse("p2c"), Some(Policy::PowerOfTwoChoices));
        assert_eq!(Policy::parse("least-request"), Some(Policy::LeastRequest));
        assert_eq!(Policy::parse("random"), None);
    }
}
