//! What a controller last wrote of its own objects, so that it can tell a cache that has
//! not seen that write yet (the informer lags the API by a watch event).
//!
//! A reconcile that reads such a stale copy and writes from it can only conflict (its
//! `resourceVersion` precondition names the version already replaced), and the conflict
//! costs a request and a back-off. Instead, the controller waits for the cache to catch
//! up: the watch event of its own write triggers the same key again. Only equality of
//! `resourceVersion`s is used, which stay opaque.

use flotilla_client::ObjectKey;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Per object: the version a write replaced, while the cache may still hold it.
    replaced: Mutex<HashMap<ObjectKey, String>>,
}

impl Written {
    /// Records that a write of `key` replaced version `base` with `now`. A write that
    /// changed nothing (the server kept `base`) sends no watch event, so it is not
    /// recorded: waiting for that event would wait forever.
    pub(crate) fn wrote(&self, key: &ObjectKey, base: &str, now: &str) {
        if base.is_empty() || base == now {
            return;
        }
        self.lock().insert(key.clone(), base.to_string());
    }

    /// Whether the cached copy of `key`, at `cached`, is one this controller already
    /// replaced: its own write's event is still to come, and will trigger `key` again.
    /// Any other version means that the cache caught up (or moved past).
    pub(crate) fn is_stale(&self, key: &ObjectKey, cached: &str) -> bool {
        let mut replaced = self.lock();
        match replaced.get(key) {
            Some(base) if base == cached => true,
            Some(_) => {
                replaced.remove(key);
                false
            }
            None => false,
        }
    }

    /// Forgets `key` (deleted).
    pub(crate) fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, String>> {
        self.replaced.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_version_is_stale_until_the_cache_moves() {
        let written = Written::default();
        let key = ObjectKey::new("default", "web");
        assert!(!written.is_stale(&key, "5"));
        written.wrote(&key, "5", "5");
        assert!(!written.is_stale(&key, "5"), "a write that changed nothing is no write to wait for");
        written.wrote(&key, "5", "6");
        assert!(written.is_stale(&key, "5"));
        assert!(written.is_stale(&key, "5"));
        assert!(!written.is_stale(&key, "7"));
        // Caught up: the entry is gone, even if an old copy were read again.
        assert!(!written.is_stale(&key, "5"));
        written.wrote(&key, "7", "8");
        written.forget(&key);
        assert!(!written.is_stale(&key, "7"));
    }
}
