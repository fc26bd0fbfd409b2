//! The embedded backend: one redb file, one writer thread with group commit, and an
//! on-disk event log that watches replay from.
//!
//! Layout of the file:
//!
//! * `kv`: key → `create_revision (u64 LE) ‖ mod_revision (u64 LE) ‖ value`.
//! * `log`: revision → one encoded [`WatchEvent`] (see [`encode_event`]), written in the
//!   same transaction as the change itself, so a watch can resume from any revision the
//!   log still holds, even after a restart.
//! * `meta`: `"revision"` (the last committed revision) and `"compacted"` (log entries
//!   at or below it are gone).
//!
//! All writes go through a single writer on a dedicated thread. It takes one request,
//! drains whatever else is already queued (up to [`MAX_BATCH`]), applies them all in one
//! redb write transaction (each op validated against the state left by the earlier ones
//! and given its own revision), commits once (one fsync with redb's default
//! [`redb::Durability::Immediate`]), then replies and publishes the events to live
//! watchers.
//!
//! A failed commit (disk full, I/O error) leaves redb refusing every later operation
//! ([`redb::StorageError::PreviousIo`]) until the file is closed and opened again. The
//! writer then answers the batch with an error (nothing of it is acknowledged), marks the
//! store failed ([`Store::check_ready`], what `/readyz` reports), and reopens the file at
//! once, which makes redb repair it, so reads go on. Further writes are refused without
//! touching the disk until a back-off has passed; then the next batch, or a probe of the
//! disk when none comes, is tried, and the first success makes the store ready again. A
//! commit that reported failure may still have reached the disk: the reopened file's
//! revision says so, and those events are published to watchers then, so watches have no
//! gaps (a watcher that cannot be given them ends with [`Error::Compacted`], a 410).

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::metrics::StoreMetrics;
use crate::{Error, EventType, KeyValue, ListOptions, ListResult, Result, Store, WatchEvent, Watcher};

/// Keys and their current values (`create_revision ‖ mod_revision ‖ value`).
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// The event log, keyed by revision.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Counters: [`META_REVISION`] and [`META_COMPACTED`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// The most requests the writer applies in one transaction.
const MAX_BATCH: usize = 512;
/// Queued write requests before callers wait for room.
const REQUEST_QUEUE: usize = 1024;
/// The longest automatic-compaction interval, in writes.
const MAX_COMPACTION_INTERVAL: u64 = 1000;
/// Log entries a watch scans per read transaction while replaying history.
const REPLAY_CHUNK: usize = 1024;
/// How long writes are refused after the first storage failure; each further failure in
/// a row doubles it, up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a failed writer with nothing queued checks whether its back-off is over.
const FAILED_POLL: Duration = Duration::from_millis(20);
/// How long a reopen waits for readers still holding the old file (each holds it for one
/// read transaction) before it gives up until the next attempt.
const REOPEN_WAIT: Duration = Duration::from_secs(2);
/// The bytes a probe writes (and fsyncs, and removes) next to the store file to see that
/// the disk has room again before the failed store calls itself ready.
const SPACE_PROBE_BYTES: usize = 1 << 20;

/// Tuning for [`RedbStore`].
#[derive(Clone, Debug)]
pub struct RedbStoreOptions {
    /// How many revisions of history the event log keeps for watches. The writer
    /// compacts the log to `current - history` every `min(history, 1000)` writes.
    pub history: u64,
    /// Capacity, in events, of the live broadcast to watchers. A watcher that falls
    /// further behind than this ends with `Error::Compacted`.
    pub broadcast_capacity: usize,
    /// Capacity, in events, of each [`Watcher`]'s channel.
    pub watch_channel_capacity: usize,
    /// Where the store registers its metrics (`flotilla_store_*`); by default a registry
    /// of its own that nobody reads.
    pub metrics: prometheus::Registry,
    /// Memory redb may keep for its page cache. redb's own default is 1 GiB, which a
    /// long-running server slowly fills with pages of the watch history it never reads
    /// again (the soak bench's resident memory grew 1.7× over ten minutes; 1.46× with
    /// 64 MiB, 1.02× with 8 MiB, at the same write rate). The file's pages stay in the
    /// kernel's page cache, so a small cache costs a copy, not a disk read.
    pub cache_bytes: usize,
}

/// The default [`RedbStoreOptions::cache_bytes`]: 8 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 8 << 20;

/// Opens (or creates) the database file with the store's page cache size.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(cache_bytes).create(path)
}

impl Default for RedbStoreOptions {
    fn default() -> Self {
        Self {
            history: 100_000,
            broadcast_capacity: 8192,
            watch_channel_capacity: 1024,
            metrics: prometheus::Registry::new(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Counters shared by the store handle, the writer thread and the watch tasks.
#[derive(Debug)]
struct Shared {
    revision: AtomicU64,
    compacted: AtomicU64,
    commits: AtomicU64,
    /// Why the store is failed (`None` while it is healthy): set by the writer after a
    /// storage failure, cleared by its first successful commit.
    failure: ArcSwapOption<String>,
    metrics: StoreMetrics,
}

impl Shared {
    fn unavailable(&self) -> Error {
        let reason = self.failure.load_full().map_or_else(|| "the store is reopening".to_owned(), |r| r.to_string());
        Error::Unavailable { reason }
    }
}

/// The open database. The writer swaps it for a reopened one after a storage failure;
/// it is empty while that reopen has not succeeded.
type Slot = ArcSwapOption<Database>;

/// The current database of `slot`, or [`Error::Unavailable`].
fn database(slot: &Slot, shared: &Shared) -> Result<Arc<Database>> {
    slot.load_full().ok_or_else(|| shared.unavailable())
}

/// The embedded [`Store`]: a redb database file with group-committed, fsynced writes.
///
/// [`RedbStore::open`] returns the store itself; wrap it in an `Arc` to share it.
/// Dropping it closes the write queue, waits for the writer thread to finish the batch
/// it is on, and closes the database file (watches then end with `None`).
pub struct RedbStore {
    path: PathBuf,
    options: RedbStoreOptions,
    db: Arc<Slot>,
    shared: Arc<Shared>,
    /// `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    events: broadcast::Sender<Arc<Live>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("revision", &self.current_revision())
            .field("compacted", &self.compacted_revision())
            .field("commits", &self.commit_count())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating the file if it is missing, and starts the
    /// writer thread. This does blocking file I/O; call it at startup (or from
    /// `spawn_blocking`).
    pub fn open(path: &Path, options: RedbStoreOptions) -> Result<Self> {
        let metrics = StoreMetrics::register(&options.metrics).map_err(Error::Metrics)?;
        let db =
            open_database(path, options.cache_bytes).map_err(|e| backend(&format!("opening {}", path.display()), e))?;
        let (revision, compacted) = init_tables(&db).map_err(|e| backend("initialising", e))?;
        debug!(path = %path.display(), revision, compacted, "opened redb store");

        let db = Arc::new(ArcSwapOption::from_pointee(db));
        let shared = Arc::new(Shared {
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            commits: AtomicU64::new(0),
            failure: ArcSwapOption::empty(),
            metrics,
        });
        let (events, _) = broadcast::channel(options.broadcast_capacity.max(1));
        let (requests, receiver) = mpsc::channel(REQUEST_QUEUE);
        let writer = Writer {
            path: path.to_owned(),
            cache_bytes: options.cache_bytes,
            db: Arc::clone(&db),
            shared: Arc::clone(&shared),
            events: events.clone(),
            revision,
            compacted,
            history: options.history,
            compaction_interval: options.history.clamp(1, MAX_COMPACTION_INTERVAL),
            writes_since_compaction: 0,
            failed: None,
        };
        let writer = std::thread::Builder::new()
            .name("flotilla-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::Backend {
                message: format!("starting the writer thread: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(Self { path: path.to_owned(), options, db, shared, requests: Some(requests), events, writer: Some(writer) })
    }

    /// How many write transactions the writer has committed since this handle was
    /// opened. With concurrent writers this is lower than the number of writes.
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Acquire)
    }

    /// Compacts the event log up to `revision` (clamped to the current revision):
    /// watches must then start after at least that revision. Compacting to a revision
    /// at or below [`Store::compacted_revision`] does nothing.
    pub async fn compact(&self, revision: u64) -> Result<()> {
        self.shared.metrics.compact.inc();
        self.submit(|reply| Request { op: Op::Compact { revision }, reply }).await.map(drop)
    }

    async fn submit(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<Option<KeyValue>>>) -> Request,
    ) -> Result<Option<KeyValue>> {
        let requests = self.requests.as_ref().ok_or(Error::Closed)?;
        let (reply, response) = oneshot::channel();
        requests.send(request(reply)).await.map_err(|_| Error::Closed)?;
        response.await.map_err(|_| Error::Closed)?
    }

    async fn submit_kv(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<Option<KeyValue>>>) -> Request,
    ) -> Result<KeyValue> {
        self.submit(request)
            .await?
            .ok_or_else(|| Error::Backend { message: "the writer returned no key-value".into(), source: None })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue makes the writer finish what is queued and exit; waiting for
        // it means the file is closed once the last handle is gone (and can be reopened).
        self.requests = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            warn!(path = %self.path.display(), "the store's writer thread panicked");
        }
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.shared.metrics.get.inc();
        let db = database(&self.db, &self.shared)?;
        read_get(&db, key).map_err(|e| e.into_error("get"))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        self.shared.metrics.list.inc();
        let db = database(&self.db, &self.shared)?;
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || read_list(&db, &prefix, &options))
            .await
            .map_err(|e| Error::Backend { message: format!("list task failed: {e}"), source: Some(Box::new(e)) })?
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.shared.metrics.create.inc();
        let key = key.to_owned();
        self.submit_kv(|reply| Request { op: Op::Create { key, value }, reply }).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: u64) -> Result<KeyValue> {
        self.shared.metrics.update.inc();
        let key = key.to_owned();
        self.submit_kv(|reply| Request { op: Op::Update { key, value, expected: expected_revision }, reply }).await
    }

    async fn delete(&self, key: &str, expected_revision: Option<u64>) -> Result<KeyValue> {
        self.shared.metrics.delete.inc();
        let key = key.to_owned();
        self.submit_kv(|reply| Request { op: Op::Delete { key, expected: expected_revision }, reply }).await
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watcher> {
        self.shared.metrics.watch.inc();
        let compacted = self.compacted_revision();
        if after_revision < compacted {
            return Err(Error::Compacted { requested: after_revision, compacted });
        }
        // Subscribe before reading the log: every event committed from here on is
        // either in what the replay reads or arrives live (or both; the replay's
        // high-water mark removes the duplicates).
        let live = self.events.subscribe();
        let (sender, receiver) = mpsc::channel(self.options.watch_channel_capacity.max(1));
        let task = WatchTask {
            slot: Arc::downgrade(&self.db),
            shared: Arc::clone(&self.shared),
            prefix: prefix.to_owned(),
            cursor: after_revision,
            sender,
        };
        // A panic in the watch ends it with an error its watcher sees (and re-watches
        // after), counted; the other watches and the store go on.
        let (shared, sender) = (Arc::clone(&self.shared), task.sender.clone());
        let running = tokio::spawn(task.run(live));
        tokio::spawn(async move {
            if let Err(error) = running.await
                && error.is_panic()
            {
                shared.metrics.panics.with_label_values(&["watch"]).inc();
                tracing::error!("a store watch panicked; ending it with an error");
                let failed = Error::Backend { message: "the watch failed: its task panicked".into(), source: None };
                let _ = sender.send(Err(failed)).await;
            }
        });
        Ok(Watcher::from_channel(receiver))
    }

    fn current_revision(&self) -> u64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> u64 {
        self.shared.compacted.load(Ordering::Acquire)
    }

    fn check_ready(&self) -> Result<()> {
        match self.shared.failure.load().as_deref() {
            None => Ok(()),
            Some(reason) => Err(Error::Unavailable { reason: reason.clone() }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

fn backend<E>(context: &str, error: E) -> Error
where
    E: Into<redb::Error>,
{
    let error: redb::Error = error.into();
    Error::Backend { message: format!("{context}: {error}"), source: Some(Box::new(error)) }
}

fn corrupt(what: &str) -> Error {
    Error::Backend { message: format!("corrupt {what} in the store"), source: None }
}

/// What the writer's batch and read helpers fail with: redb's own errors, or a corrupt
/// record (already an [`Error`]).
#[derive(Debug)]
enum Failure {
    Redb(redb::Error),
    Store(Error),
}

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Redb(error.into())
    }
}

impl Failure {
    fn into_error(self, context: &str) -> Error {
        match self {
            Failure::Redb(e) => backend(context, e),
            Failure::Store(e) => e,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

fn encode_kv(create_revision: u64, mod_revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    let mut reader = Reader(bytes);
    let create_revision = reader.u64().ok_or_else(|| corrupt("value"))?;
    let mod_revision = reader.u64().ok_or_else(|| corrupt("value"))?;
    Ok(KeyValue { key: key.to_owned(), value: reader.0.to_vec(), create_revision, mod_revision })
}

const EVENT_PUT: u8 = 0;
const EVENT_DELETE: u8 = 1;

/// Encodes an event for the log (its revision is the log key):
/// `type (u8) ‖ key len (u32) ‖ key ‖ create_revision (u64) ‖ has prev (u8)
/// [‖ prev create (u64) ‖ prev mod (u64) ‖ prev value len (u32) ‖ prev value] ‖ value`.
/// A delete stores no value of its own: it is the previous value.
fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| 20 + p.value.len());
    let value: &[u8] = match event.event_type {
        EventType::Put => &event.kv.value,
        EventType::Delete => &[],
    };
    let mut out = Vec::with_capacity(14 + event.kv.key.len() + prev_len + value.len());
    out.push(match event.event_type {
        EventType::Put => EVENT_PUT,
        EventType::Delete => EVENT_DELETE,
    });
    push_bytes(&mut out, event.kv.key.as_bytes());
    out.extend_from_slice(&event.kv.create_revision.to_le_bytes());
    match &event.prev {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            push_bytes(&mut out, &prev.value);
        }
    }
    out.extend_from_slice(value);
    out
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (redb itself caps values lower).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The key of an encoded event, without decoding the rest (to filter by prefix).
fn event_key(bytes: &[u8]) -> Option<&[u8]> {
    let mut reader = Reader(bytes);
    reader.u8()?;
    reader.bytes()
}

fn decode_event(revision: u64, bytes: &[u8]) -> Option<WatchEvent> {
    let mut reader = Reader(bytes);
    let event_type = match reader.u8()? {
        EVENT_PUT => EventType::Put,
        EVENT_DELETE => EventType::Delete,
        _ => return None,
    };
    let key = String::from_utf8(reader.bytes()?.to_vec()).ok()?;
    let create_revision = reader.u64()?;
    let prev = match reader.u8()? {
        0 => None,
        1 => {
            let create_revision = reader.u64()?;
            let mod_revision = reader.u64()?;
            let value = reader.bytes()?.to_vec();
            Some(KeyValue { key: key.clone(), value, create_revision, mod_revision })
        }
        _ => return None,
    };
    let value = match event_type {
        EventType::Put => reader.0.to_vec(),
        EventType::Delete => prev.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
    };
    Some(WatchEvent { event_type, kv: KeyValue { key, value, create_revision, mod_revision: revision }, prev })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len: [u8; 4] = self.take(4)?.try_into().ok()?;
        self.take(usize::try_from(u32::from_le_bytes(len)).ok()?)
    }
}

// ---------------------------------------------------------------------------------------
// Reads

/// Creates the tables if missing and reads the persisted counters.
fn init_tables(db: &Database) -> Result<(u64, u64), redb::Error> {
    let txn = db.begin_write()?;
    let counters = {
        txn.open_table(KV)?;
        txn.open_table(LOG)?;
        let meta = txn.open_table(META)?;
        let revision = meta.get(META_REVISION)?.map_or(0, |v| v.value());
        let compacted = meta.get(META_COMPACTED)?.map_or(0, |v| v.value());
        (revision, compacted)
    };
    txn.commit()?;
    Ok(counters)
}

/// The persisted counters, read from a reopened file (whose tables exist).
fn read_counters(db: &Database) -> Result<(u64, u64), Failure> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let revision = meta.get(META_REVISION)?.map_or(0, |v| v.value());
    let compacted = meta.get(META_COMPACTED)?.map_or(0, |v| v.value());
    Ok((revision, compacted))
}

fn read_get(db: &Database, key: &str) -> Result<Option<KeyValue>, Failure> {
    let txn = db.begin_read()?;
    let table = txn.open_table(KV)?;
    match table.get(key)? {
        None => Ok(None),
        Some(guard) => decode_kv(key, guard.value()).map(Some).map_err(Failure::Store),
    }
}

fn read_list(db: &Database, prefix: &str, options: &ListOptions) -> Result<ListResult> {
    read_list_inner(db, prefix, options).map_err(|e| e.into_error("list"))
}

fn read_list_inner(db: &Database, prefix: &str, options: &ListOptions) -> Result<ListResult, Failure> {
    let txn = db.begin_read()?;
    let revision = txn.open_table(META)?.get(META_REVISION)?.map_or(0, |v| v.value());
    let table = txn.open_table(KV)?;
    let lower = match options.start_after.as_deref() {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    let limit = options.limit.filter(|&n| n > 0).unwrap_or(usize::MAX);
    let mut result = ListResult { items: Vec::new(), revision, more: false };
    for entry in table.range::<&str>((lower, Bound::Unbounded))? {
        let (key, value) = entry?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        if result.items.len() == limit {
            result.more = true;
            break;
        }
        result.items.push(decode_kv(key, value.value()).map_err(Failure::Store)?);
    }
    Ok(result)
}

/// One chunk of a watch's replay of the log.
struct Replay {
    /// Matching events, in revision order.
    events: Vec<WatchEvent>,
    /// Every log entry up to here has been looked at.
    scanned_to: u64,
    /// `scanned_to` is the snapshot's revision: the replay is complete.
    done: bool,
    /// The snapshot's compacted revision.
    compacted: u64,
}

fn read_log_chunk(db: &Database, prefix: &str, after: u64) -> Result<Replay, Failure> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let revision = meta.get(META_REVISION)?.map_or(0, |v| v.value());
    let compacted = meta.get(META_COMPACTED)?.map_or(0, |v| v.value());
    let mut replay = Replay { events: Vec::new(), scanned_to: after, done: true, compacted };
    if after >= revision || compacted > after {
        return Ok(replay);
    }
    let log = txn.open_table(LOG)?;
    let range = log.range::<u64>((Bound::Excluded(after), Bound::Included(revision)))?;
    for (scanned, entry) in range.enumerate() {
        if scanned == REPLAY_CHUNK {
            replay.done = false;
            return Ok(replay);
        }
        let (rev, bytes) = entry?;
        let (rev, bytes) = (rev.value(), bytes.value());
        replay.scanned_to = rev;
        let key = event_key(bytes).ok_or(Failure::Store(corrupt("log entry")))?;
        if key.starts_with(prefix.as_bytes()) {
            let event = decode_event(rev, bytes).ok_or(Failure::Store(corrupt("log entry")))?;
            replay.events.push(event);
        }
    }
    replay.scanned_to = revision;
    Ok(replay)
}

// ---------------------------------------------------------------------------------------
// Watches

/// What the writer broadcasts to live watchers.
#[derive(Debug)]
enum Live {
    /// A committed change.
    Event(WatchEvent),
    /// Changes up to `revision` cannot be delivered in order (the reopened file is not
    /// where the published events left it): every live watcher ends with
    /// [`Error::Compacted`] and its client lists again.
    Resync { revision: u64 },
}

struct WatchTask {
    /// Weak so a watch does not keep the database file open after the store is gone.
    slot: Weak<Slot>,
    shared: Arc<Shared>,
    prefix: String,
    /// Every revision up to here has been delivered or skipped.
    cursor: u64,
    sender: mpsc::Sender<Result<WatchEvent>>,
}

impl WatchTask {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Live>>) {
        // Replay the log, a chunk (one read transaction) at a time.
        loop {
            let Some(slot) = self.slot.upgrade() else { return };
            let db = match database(&slot, &self.shared) {
                Ok(db) => db,
                Err(error) => {
                    let _ = self.sender.send(Err(error)).await;
                    return;
                }
            };
            drop(slot);
            let (prefix, after) = (self.prefix.clone(), self.cursor);
            let chunk = tokio::task::spawn_blocking(move || read_log_chunk(&db, &prefix, after)).await;
            let replay = match chunk {
                Ok(Ok(replay)) => replay,
                Ok(Err(failure)) => {
                    let _ = self.sender.send(Err(failure.into_error("watch replay"))).await;
                    return;
                }
                Err(join) => {
                    let error = Error::Backend {
                        message: format!("watch replay task failed: {join}"),
                        source: Some(Box::new(join)),
                    };
                    let _ = self.sender.send(Err(error)).await;
                    return;
                }
            };
            if replay.compacted > self.cursor {
                let error = Error::Compacted { requested: self.cursor, compacted: replay.compacted };
                let _ = self.sender.send(Err(error)).await;
                return;
            }
            for event in replay.events {
                if self.sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            self.cursor = replay.scanned_to;
            if replay.done {
                break;
            }
        }

        // Then follow the live events past what the replay covered.
        loop {
            let received = tokio::select! {
                () = self.sender.closed() => return,
                received = live.recv() => received,
            };
            match received.as_deref() {
                Ok(Live::Resync { revision }) => {
                    let error = Error::Compacted { requested: self.cursor, compacted: *revision };
                    let _ = self.sender.send(Err(error)).await;
                    return;
                }
                Ok(Live::Event(event)) => {
                    let revision = event.revision();
                    if revision <= self.cursor {
                        continue;
                    }
                    self.cursor = revision;
                    if event.kv.key.starts_with(&self.prefix) && self.sender.send(Ok(event.clone())).await.is_err() {
                        return;
                    }
                }
                Err(&broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(prefix = %self.prefix, missed, "watcher fell behind");
                    let error = Error::Compacted {
                        requested: self.cursor,
                        compacted: self.shared.revision.load(Ordering::Acquire),
                    };
                    let _ = self.sender.send(Err(error)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The writer

enum Op {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: u64 },
    Delete { key: String, expected: Option<u64> },
    Compact { revision: u64 },
}

struct Request {
    op: Op,
    /// `Some` key-value for key operations, `None` for compaction.
    reply: oneshot::Sender<Result<Option<KeyValue>>>,
}

/// A batch applied to a write transaction, not yet committed.
struct Applied {
    outcomes: Vec<Result<Option<KeyValue>>>,
    events: Vec<WatchEvent>,
    revision: u64,
    compacted: u64,
    writes_since_compaction: u64,
}

/// The writer after a storage failure, until a commit succeeds.
struct Failed {
    reason: Arc<String>,
    backoff: Duration,
    /// Writes are refused, without touching the disk, until then.
    retry_at: Instant,
}

struct Writer {
    /// The store file, to reopen after a storage failure.
    path: PathBuf,
    cache_bytes: usize,
    db: Arc<Slot>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Live>>,
    /// The last committed revision.
    revision: u64,
    /// The committed compacted revision.
    compacted: u64,
    history: u64,
    compaction_interval: u64,
    writes_since_compaction: u64,
    /// `Some` from a storage failure until the next successful commit.
    failed: Option<Failed>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = match &self.failed {
                None => match receiver.blocking_recv() {
                    Some(request) => request,
                    None => break,
                },
                // Failed: poll, so that the back-off ends in a probe even when no write comes.
                Some(failed) => match receiver.try_recv() {
                    Ok(request) => request,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if Instant::now() >= failed.retry_at {
                            self.probe();
                        } else {
                            std::thread::sleep(FAILED_POLL);
                        }
                        continue;
                    }
                },
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // A panic in a batch (redb asserts on what it finds inconsistent) must not end
            // the only writer: nothing of the batch is acknowledged (its callers' replies
            // are dropped, so they get an error), and the file is closed and reopened as
            // after a storage failure.
            let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(&mut batch)));
            if let Err(payload) = processed {
                batch.clear();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|m| (*m).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                tracing::error!(panic = %message, "the store's writer panicked on a write batch; reopening the store");
                self.shared.metrics.panics.with_label_values(&["writer"]).inc();
                self.fail(format!("the writer panicked: {message}"));
            }
        }
        debug!("store writer stopping");
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.drain(..).map(|r| (r.op, r.reply)).unzip();
        let count = ops.len();
        let Some(db) = self.writable() else {
            for reply in replies {
                let _ = reply.send(Err(self.shared.unavailable()));
            }
            return;
        };
        match self.apply_and_commit(&db, ops) {
            Ok(applied) => {
                self.recovered();
                self.writes_since_compaction = applied.writes_since_compaction;
                self.revision = applied.revision;
                self.compacted = applied.compacted;
                self.shared.compacted.store(applied.compacted, Ordering::Release);
                self.shared.revision.store(applied.revision, Ordering::Release);
                for (reply, outcome) in replies.into_iter().zip(applied.outcomes) {
                    let _ = reply.send(outcome);
                }
                for event in applied.events {
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(Live::Event(event)));
                }
            }
            Err(error) => {
                // Nothing of the batch is acknowledged: the revision stays where it was.
                warn!(error = %error, ops = count, "store write batch failed");
                let storage = is_storage_failure(&error);
                if storage {
                    // Failed before anyone hears of it: the next read or /readyz knows.
                    drop(db);
                    self.mark_failed(format!("a write failed: {error}"));
                    self.db.store(None);
                }
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(Error::Backend {
                        message: format!("write failed: {error}"),
                        source: Some(Box::new(Arc::clone(&error))),
                    }));
                }
                if storage {
                    self.reopen_after_failure();
                }
            }
        }
    }

    /// The database to write to, or `None` while a failure's back-off runs or the file
    /// cannot be reopened.
    fn writable(&mut self) -> Option<Arc<Database>> {
        if let Some(failed) = &self.failed
            && Instant::now() < failed.retry_at
        {
            return None;
        }
        if let Some(db) = self.db.load_full() {
            return Some(db);
        }
        match self.reopen() {
            Ok(db) => Some(db),
            Err(error) => {
                self.mark_failed(format!("reopening the store failed: {error}"));
                None
            }
        }
    }

    /// After a storage failure: marks the store failed, closes the file redb now refuses,
    /// and reopens it (redb repairs it on open), so that reads go on while writes wait
    /// out the back-off.
    fn fail(&mut self, reason: String) {
        self.mark_failed(reason);
        self.db.store(None);
        self.reopen_after_failure();
    }

    /// Reopens the closed file; the back-off starts once that is done.
    fn reopen_after_failure(&mut self) {
        if let Err(error) = self.reopen() {
            warn!(%error, "reopening the store failed; retrying after the back-off");
        }
        if let Some(failed) = &mut self.failed {
            failed.retry_at = Instant::now() + failed.backoff;
        }
    }

    /// Refuses writes for a back-off that doubles with each failure in a row.
    fn mark_failed(&mut self, reason: String) {
        let backoff = match &self.failed {
            None => {
                error!(%reason, "the store failed; writes are refused until it recovers");
                self.shared.metrics.failures.inc();
                INITIAL_BACKOFF
            }
            Some(failed) => {
                let backoff = (failed.backoff * 2).min(MAX_BACKOFF);
                warn!(%reason, retry_in = ?backoff, "the store is still failing");
                backoff
            }
        };
        let reason = Arc::new(reason);
        self.shared.failure.store(Some(Arc::clone(&reason)));
        self.failed = Some(Failed { reason, backoff, retry_at: Instant::now() + backoff });
    }

    fn recovered(&mut self) {
        if let Some(failed) = self.failed.take() {
            info!(failure = %failed.reason, "the store recovered; writes are accepted again");
            self.shared.failure.store(None);
        }
    }

    /// With no write queued once the back-off is over: checks that the disk has room and
    /// the file takes a commit, so that an idle failed store becomes ready again.
    fn probe(&mut self) {
        let Some(db) = self.writable() else { return };
        if let Err(error) = probe_space(&self.path) {
            self.mark_failed(format!("no room on the store's disk: {error}"));
            return;
        }
        match probe_commit(&db) {
            Ok(()) => self.recovered(),
            Err(error) if is_storage_failure(&error) => {
                drop(db);
                self.fail(format!("a probe commit failed: {error}"));
            }
            Err(error) => self.mark_failed(format!("a probe commit failed: {error}")),
        }
    }

    /// Opens the store file again and publishes what it holds beyond the last published
    /// revision.
    fn reopen(&mut self) -> Result<Arc<Database>> {
        let deadline = Instant::now() + REOPEN_WAIT;
        let db = loop {
            match open_database(&self.path, self.cache_bytes) {
                Ok(db) => break db,
                // A reader still holds the old file for its read transaction.
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => return Err(backend(&format!("reopening {}", self.path.display()), error)),
            }
        };
        let (revision, compacted) = read_counters(&db).map_err(|e| e.into_error("reading the reopened store"))?;
        self.shared.metrics.reopens.inc();
        self.catch_up(&db, revision);
        self.writes_since_compaction += revision.saturating_sub(self.revision);
        self.revision = revision;
        self.compacted = compacted;
        self.shared.compacted.store(compacted, Ordering::Release);
        self.shared.revision.store(revision, Ordering::Release);
        info!(path = %self.path.display(), revision, "reopened the store");
        let db = Arc::new(db);
        self.db.store(Some(Arc::clone(&db)));
        Ok(db)
    }

    /// A commit that reported failure may still have reached the disk: the reopened file
    /// is then past the last published revision. Its events go to live watchers now, from
    /// the log, so that they see no gap; if they cannot, the watchers are ended.
    fn catch_up(&self, db: &Database, revision: u64) {
        if revision < self.revision {
            // Acknowledged commits are fsynced; this is a disk that lost them.
            error!(revision, published = self.revision, "the reopened store is behind what it acknowledged");
            let _ = self.events.send(Arc::new(Live::Resync { revision }));
            return;
        }
        let mut after = self.revision;
        while after < revision {
            match read_log_chunk(db, "", after) {
                Ok(replay) if replay.compacted <= after => {
                    for event in replay.events {
                        let _ = self.events.send(Arc::new(Live::Event(event)));
                    }
                    after = replay.scanned_to;
                    if replay.done {
                        break;
                    }
                }
                Ok(_) | Err(_) => {
                    let _ = self.events.send(Arc::new(Live::Resync { revision }));
                    return;
                }
            }
        }
        if revision > self.revision {
            warn!(from = self.revision, to = revision, "writes whose commit reported an error reached the disk");
        }
    }

    fn apply_and_commit(&mut self, db: &Database, ops: Vec<Op>) -> Result<Applied, redb::Error> {
        let count = ops.len();
        let mut txn = db.begin_write()?;
        // The unit tests' stand-in for a panic inside redb, mid-transaction.
        #[cfg(test)]
        if ops.iter().any(|op| matches!(op, Op::Create { key, .. } if key == tests::PANICKING_KEY)) {
            panic!("a write the tests make panic");
        }
        // redb's default, spelled out: commit returns once the batch is fsynced.
        txn.set_durability(redb::Durability::Immediate)?;
        let applied = self.apply(&txn, ops)?;
        if applied.revision == self.revision && applied.compacted == self.compacted {
            // Every op failed validation: nothing to make durable.
            txn.abort()?;
        } else {
            let started = std::time::Instant::now();
            txn.commit()?;
            let metrics = &self.shared.metrics;
            metrics.commit_duration.observe(started.elapsed().as_secs_f64());
            metrics.commit_batch_size.observe(count as f64);
            self.shared.commits.fetch_add(1, Ordering::AcqRel);
        }
        Ok(applied)
    }

    fn apply(&self, txn: &redb::WriteTransaction, ops: Vec<Op>) -> Result<Applied, redb::Error> {
        let mut kv = txn.open_table(KV)?;
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        let mut applied = Applied {
            outcomes: Vec::with_capacity(ops.len()),
            events: Vec::new(),
            revision: self.revision,
            compacted: self.compacted,
            writes_since_compaction: self.writes_since_compaction,
        };

        for op in ops {
            let outcome = match op {
                Op::Create { key, value } => {
                    if kv.get(key.as_str())?.is_some() {
                        Err(Error::AlreadyExists { key })
                    } else {
                        let revision = applied.revision + 1;
                        kv.insert(key.as_str(), encode_kv(revision, revision, &value).as_slice())?;
                        let new = KeyValue { key, value, create_revision: revision, mod_revision: revision };
                        let event = WatchEvent { event_type: EventType::Put, kv: new, prev: None };
                        Ok(Some(Self::record(&mut log, &mut applied, event)?))
                    }
                }
                Op::Update { key, value, expected } => match current(&kv, &key)? {
                    Err(error) => Err(error),
                    Ok(None) => Err(Error::NotFound { key }),
                    Ok(Some(prev)) if prev.mod_revision != expected => {
                        Err(Error::Conflict { key, expected, current: prev.mod_revision })
                    }
                    Ok(Some(prev)) => {
                        let revision = applied.revision + 1;
                        let bytes = encode_kv(prev.create_revision, revision, &value);
                        kv.insert(key.as_str(), bytes.as_slice())?;
                        let new =
                            KeyValue { key, value, create_revision: prev.create_revision, mod_revision: revision };
                        let event = WatchEvent { event_type: EventType::Put, kv: new, prev: Some(prev) };
                        Ok(Some(Self::record(&mut log, &mut applied, event)?))
                    }
                },
                Op::Delete { key, expected } => match (current(&kv, &key)?, expected) {
                    (Err(error), _) => Err(error),
                    (Ok(None), _) => Err(Error::NotFound { key }),
                    (Ok(Some(prev)), Some(expected)) if expected != prev.mod_revision => {
                        Err(Error::Conflict { key, expected, current: prev.mod_revision })
                    }
                    (Ok(Some(prev)), _) => {
                        kv.remove(key.as_str())?;
                        let gone = KeyValue { mod_revision: applied.revision + 1, ..prev.clone() };
                        let event = WatchEvent { event_type: EventType::Delete, kv: gone, prev: Some(prev) };
                        Ok(Some(Self::record(&mut log, &mut applied, event)?))
                    }
                },
                Op::Compact { revision } => {
                    let target = revision.min(applied.revision);
                    if target > applied.compacted {
                        log.retain_in::<u64, _>(..=target, |_, _| false)?;
                        applied.compacted = target;
                    }
                    Ok(None)
                }
            };
            applied.outcomes.push(outcome);
        }

        // Keep the log bounded: compact every `compaction_interval` writes.
        applied.writes_since_compaction += applied.revision - self.revision;
        if applied.writes_since_compaction >= self.compaction_interval {
            applied.writes_since_compaction = 0;
            let target = applied.revision.saturating_sub(self.history);
            if target > applied.compacted {
                log.retain_in::<u64, _>(..=target, |_, _| false)?;
                applied.compacted = target;
                debug!(compacted = target, "compacted the store's event log");
            }
        }

        if applied.revision != self.revision {
            meta.insert(META_REVISION, applied.revision)?;
        }
        if applied.compacted != self.compacted {
            meta.insert(META_COMPACTED, applied.compacted)?;
        }
        Ok(applied)
    }

    /// Logs an event at the next revision and remembers it for publishing; returns its
    /// key-value (what the op answers).
    fn record(
        log: &mut redb::Table<'_, u64, &[u8]>,
        applied: &mut Applied,
        event: WatchEvent,
    ) -> Result<KeyValue, redb::Error> {
        let revision = event.revision();
        debug_assert_eq!(revision, applied.revision + 1);
        log.insert(revision, encode_event(&event).as_slice())?;
        applied.revision = revision;
        let kv = event.kv.clone();
        applied.events.push(event);
        Ok(kv)
    }
}

/// Errors after which redb refuses the file until it is closed and opened again.
fn is_storage_failure(error: &redb::Error) -> bool {
    matches!(
        error,
        redb::Error::Io(_)
            | redb::Error::PreviousIo
            | redb::Error::DatabaseClosed
            | redb::Error::Backend(_)
            | redb::Error::LockPoisoned(_)
    )
}

/// Writes, fsyncs and removes [`SPACE_PROBE_BYTES`] next to the store file.
fn probe_space(store: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let probe = store.with_extension("probe");
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(&vec![0; SPACE_PROBE_BYTES])?;
        file.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    written.and(removed)
}

/// A durable commit that changes nothing: the file takes writes again.
fn probe_commit(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

/// A key's current key-value in the write transaction; the inner `Err` is a corrupt
/// record, reported to that op alone.
fn current(kv: &redb::Table<'_, &str, &[u8]>, key: &str) -> Result<Result<Option<KeyValue>>, redb::Error> {
    Ok(match kv.get(key)? {
        None => Ok(None),
        Some(guard) => decode_kv(key, guard.value()).map(Some),
    })
}

#[cfg(test)]
mod tests;
