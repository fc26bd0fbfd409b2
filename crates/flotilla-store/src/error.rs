//! The store's errors.

/// What can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    /// `update` or `delete` of a key that does not exist.
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The key's `mod_revision` is not the one the caller expected.
    #[error("key {key} is at revision {current}, not {expected}")]
    Conflict { key: String, expected: u64, current: u64 },
    /// A watch asked for history older than what the store keeps.
    #[error("revision {requested} is compacted; the oldest available is {compacted}")]
    Compacted { requested: u64, compacted: u64 },
    /// The store's disk failed (full, I/O error): it refuses writes while it recovers.
    /// Retry later; nothing of the refused write was stored.
    #[error("the store is unavailable after a storage failure ({reason}); retry later")]
    Unavailable { reason: String },
    /// The store has shut down, or its writer is gone.
    #[error("the store is closed")]
    Closed,
    /// The store's metrics could not be registered (their names are taken in the
    /// registry given).
    #[error("registering the store's metrics")]
    Metrics(#[source] prometheus::Error),
    /// The backend's own failure (disk, corruption, ...).
    #[error("storage backend error: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
