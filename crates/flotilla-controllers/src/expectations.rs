//! Expectations, after kube-controller-manager's `UIDTrackingControllerExpectations`:
//! the objects a controller created or deleted and has not yet seen so in its cache.
//! While some are outstanding the controller does not act on its (stale) count, so a
//! burst of events does not make it create or delete twice.
//!
//! They are checked against the cache itself (is the created object there yet, is the
//! deleted one gone or terminating), not counted from events, so a lost or repeated event
//! changes nothing. The only state the controllers keep in memory, and only to avoid
//! over-acting: it expires, and a restarted controller starts without any, trusting a
//! fresh list.

use flotilla_client::ObjectKey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// An object by name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub(crate) name: String,
    pub(crate) uid: String,
}

#[derive(Debug)]
struct Expected {
    created: Vec<Tracked>,
    deleted: Vec<Tracked>,
    set_at: Instant,
}

/// What the cache says of a tracked object.
pub(crate) trait Observed {
    /// The created object is in the cache.
    fn has_created(&self, object: &Tracked) -> bool;
    /// The deleted object is gone from the cache, or terminating there.
    fn has_deleted(&self, object: &Tracked) -> bool;
}

#[derive(Debug)]
pub(crate) struct Expectations {
    ttl: Duration,
    owners: Mutex<HashMap<ObjectKey, Expected>>,
}

impl Expectations {
    pub(crate) fn new(ttl: Duration) -> Self {
        Expectations { ttl, owners: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Expected>> {
        self.owners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the owner may act on its cache: everything it did is observed, or the
    /// expectations expired. When not, how long until they expire.
    pub(crate) fn satisfied(&self, owner: &ObjectKey, cache: &impl Observed) -> Result<(), Duration> {
        let mut owners = self.lock();
        let Some(expected) = owners.get_mut(owner) else { return Ok(()) };
        expected.created.retain(|o| !cache.has_created(o));
        expected.deleted.retain(|o| !cache.has_deleted(o));
        if expected.created.is_empty() && expected.deleted.is_empty() {
            owners.remove(owner);
            return Ok(());
        }
        let age = expected.set_at.elapsed();
        if age >= self.ttl {
            tracing::debug!(%owner, created = expected.created.len(), deleted = expected.deleted.len(), "expectations expired");
            owners.remove(owner);
            return Ok(());
        }
        Err(self.ttl - age)
    }

    /// Records what the owner just created and deleted (replacing anything before, which
    /// was satisfied for it to act).
    pub(crate) fn expect(&self, owner: &ObjectKey, created: Vec<Tracked>, deleted: Vec<Tracked>) {
        if created.is_empty() && deleted.is_empty() {
            self.forget(owner);
            return;
        }
        self.lock().insert(owner.clone(), Expected { created, deleted, set_at: Instant::now() });
    }

    /// The owner is gone.
    pub(crate) fn forget(&self, owner: &ObjectKey) {
        self.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Names in the cache.
    struct Cache(HashSet<&'static str>);

    impl Observed for Cache {
        fn has_created(&self, object: &Tracked) -> bool {
            self.0.contains(object.name.as_str())
        }
        fn has_deleted(&self, object: &Tracked) -> bool {
            !self.0.contains(object.name.as_str())
        }
    }

    fn tracked(name: &str) -> Tracked {
        Tracked { name: name.to_string(), uid: format!("uid-{name}") }
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_done_must_be_seen_in_the_cache_or_expire() {
        let expectations = Expectations::new(Duration::from_secs(300));
        let rs = ObjectKey::new("default", "web");
        let empty = Cache(HashSet::new());
        assert!(expectations.satisfied(&rs, &empty).is_ok());
        expectations.expect(&rs, vec![tracked("a"), tracked("b")], vec![tracked("old")]);
        let stale = Cache(["old"].into());
        assert_eq!(expectations.satisfied(&rs, &stale), Err(Duration::from_secs(300)));
        let partly = Cache(["a", "old"].into());
        assert!(expectations.satisfied(&rs, &partly).is_err());
        let seen = Cache(["a", "b"].into());
        assert!(expectations.satisfied(&rs, &seen).is_ok());
        assert!(expectations.satisfied(&rs, &stale).is_ok(), "satisfied once is forgotten");

        expectations.expect(&rs, vec![tracked("lost")], Vec::new());
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(expectations.satisfied(&rs, &empty), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expectations.satisfied(&rs, &empty).is_ok(), "expired");
    }
}
