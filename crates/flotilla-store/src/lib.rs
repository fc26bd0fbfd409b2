//! The versioned object store under Flotilla's API server.
//!
//! It owns keys, values, revisions and watches, the way etcd does for kube-apiserver:
//! one global revision counter, bumped by every write, is every object's
//! `resourceVersion`. Values are opaque bytes (the API server's JSON encoding); the
//! store never parses them, so it knows nothing of Kubernetes kinds, validation or HTTP.
//!
//! [`Store`] is the trait callers use; [`RedbStore`] is the embedded default that needs
//! nothing installed. An etcd backend implements the same trait without touching
//! callers: the operations and their revision semantics are etcd's own (create is a
//! transaction on `create_revision == 0`, update and delete compare `mod_revision`).

mod error;
mod metrics;
mod redb_store;

pub use error::{Error, Result};
pub use redb_store::{RedbStore, RedbStoreOptions};

use async_trait::async_trait;

/// A stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-1`.
    pub key: String,
    /// The value bytes exactly as written.
    pub value: Vec<u8>,
    /// The revision of the write that created this key.
    pub create_revision: u64,
    /// The revision of the last write to this key: the object's `resourceVersion`.
    pub mod_revision: u64,
}

/// One page of a prefix listing, read from a single consistent snapshot.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// Matching keys in ascending key order.
    pub items: Vec<KeyValue>,
    /// The store revision of the snapshot the page was read from.
    pub revision: u64,
    /// True when more keys under the prefix follow the last returned one.
    pub more: bool,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The key was created or updated (`prev` tells which).
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered to watchers in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub event_type: EventType,
    /// For `Put`, the new key-value; for `Delete`, the key-value as it was before the
    /// delete, with `mod_revision` set to the delete's revision.
    pub kv: KeyValue,
    /// The key-value before this change, if the key existed (None on create).
    pub prev: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the write that produced this event.
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }
}

/// Options for [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Return only keys strictly greater than this one (pagination).
    pub start_after: Option<String>,
    /// Return at most this many items (`None` or `Some(0)` means no limit).
    pub limit: Option<usize>,
}

/// A stream of changes under a prefix, in revision order, with no gaps.
///
/// It ends with `Err(Error::Compacted)` when the watcher fell too far behind to be
/// served (the client must list again, as with kube-apiserver's 410 Gone), and with
/// `None` when the store shuts down.
#[derive(Debug)]
pub struct Watcher {
    receiver: tokio::sync::mpsc::Receiver<Result<WatchEvent>>,
}

impl Watcher {
    /// Wraps a channel fed by a backend.
    pub fn from_channel(receiver: tokio::sync::mpsc::Receiver<Result<WatchEvent>>) -> Self {
        Self { receiver }
    }

    /// The next change, or `None` when the store has shut down.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        self.receiver.recv().await
    }
}

/// A versioned key-value store with watches: what the API server needs of etcd.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists keys starting with `prefix`, from one consistent snapshot.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult>;

    /// Creates a key that must not exist (`Error::AlreadyExists` otherwise).
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replaces a key's value if its `mod_revision` is still `expected_revision`
    /// (`Error::Conflict` if not, `Error::NotFound` if the key is gone).
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: u64) -> Result<KeyValue>;

    /// Deletes a key, optionally only if its `mod_revision` is `expected_revision`.
    /// Returns the deleted key-value, its `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected_revision: Option<u64>) -> Result<KeyValue>;

    /// Watches keys under `prefix` for changes with a revision greater than
    /// `after_revision`. Fails with `Error::Compacted` if that history is gone.
    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watcher>;

    /// The revision of the latest committed write.
    fn current_revision(&self) -> u64;

    /// The oldest revision a watch may still start after.
    fn compacted_revision(&self) -> u64;

    /// `Err(Error::Unavailable)` while the store cannot take writes (its disk failed and
    /// it has not recovered yet): what `/readyz` reports.
    fn check_ready(&self) -> Result<()> {
        Ok(())
    }
}
