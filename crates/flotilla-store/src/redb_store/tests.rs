use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Creating this key panics inside the writer's transaction.
pub(super) const PANICKING_KEY: &str = "/test/panics";

/// A panic in the writer fails only its batch: the store reopens and goes on writing,
/// with what it acknowledged before kept.
#[tokio::test]
async fn a_panicking_write_fails_alone_and_the_writer_goes_on() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let before = store.create("/before", b"1".to_vec()).await?;
    assert!(store.create(PANICKING_KEY, b"x".to_vec()).await.is_err(), "the panicking write is an error");
    // The writer reopens the file and backs off; writes succeed again after it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match store.create("/after", b"2".to_vec()).await {
            Ok(kv) => break kv,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    assert_eq!(after.mod_revision, before.mod_revision + 1, "the panicking batch took no revision");
    assert_eq!(store.get("/before").await?.map(|kv| kv.value), Some(b"1".to_vec()));
    assert_eq!(store.get(PANICKING_KEY).await?, None);
    assert_eq!(store.shared.metrics.panics.with_label_values(&["writer"]).get(), 1, "counted");
    Ok(())
}

fn open(dir: &Path) -> Result<RedbStore> {
    open_with(dir, RedbStoreOptions::default())
}

fn open_with(dir: &Path, options: RedbStoreOptions) -> Result<RedbStore> {
    RedbStore::open(&dir.join("store.redb"), options)
}

/// The watcher's next item, failing the test if none comes within 5 s.
async fn next(watcher: &mut Watcher) -> std::result::Result<Result<WatchEvent>, String> {
    match tokio::time::timeout(Duration::from_secs(5), watcher.next()).await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err("the watch ended".into()),
        Err(_) => Err("no watch event within 5 s".into()),
    }
}

async fn next_event(watcher: &mut Watcher) -> std::result::Result<WatchEvent, String> {
    next(watcher).await?.map_err(|e| format!("watch error: {e}"))
}

/// Asserts nothing more arrives for a short while.
async fn assert_quiet(watcher: &mut Watcher) {
    let item = tokio::time::timeout(Duration::from_millis(100), watcher.next()).await;
    assert!(item.is_err(), "unexpected watch item: {item:?}");
}

#[tokio::test]
async fn revisions_are_global_and_per_op() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    assert_eq!(store.current_revision(), 0);

    let a = store.create("/a", b"1".to_vec()).await?;
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    let b = store.create("/b", b"2".to_vec()).await?;
    assert_eq!((b.create_revision, b.mod_revision), (2, 2));
    let a2 = store.update("/a", b"3".to_vec(), 1).await?;
    assert_eq!((a2.create_revision, a2.mod_revision), (1, 3));
    assert_eq!(a2.value, b"3");
    let gone = store.delete("/b", None).await?;
    assert_eq!(gone.mod_revision, 4);
    assert_eq!(store.current_revision(), 4);

    let got = store.get("/a").await?.ok_or("missing /a")?;
    assert_eq!(got, a2);
    assert_eq!(store.get("/b").await?, None);
    Ok(())
}

#[tokio::test]
async fn create_twice_is_already_exists_and_consumes_no_revision() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.create("/k", b"v".to_vec()).await?;
    let err = store.create("/k", b"w".to_vec()).await.expect_err("second create");
    assert!(matches!(err, Error::AlreadyExists { ref key } if key == "/k"), "{err:?}");
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.get("/k").await?.ok_or("missing")?.value, b"v");
    let next = store.create("/l", Vec::new()).await?;
    assert_eq!(next.mod_revision, 2);
    Ok(())
}

#[tokio::test]
async fn update_checks_revision_and_existence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.create("/k", b"1".to_vec()).await?;
    store.update("/k", b"2".to_vec(), 1).await?;

    let err = store.update("/k", b"3".to_vec(), 1).await.expect_err("stale update");
    assert!(matches!(err, Error::Conflict { ref key, expected: 1, current: 2 } if key == "/k"), "{err:?}");
    let err = store.update("/missing", b"3".to_vec(), 1).await.expect_err("missing");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.get("/k").await?.ok_or("missing")?.value, b"2");
    Ok(())
}

#[tokio::test]
async fn delete_semantics() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.create("/k", b"v".to_vec()).await?;
    store.update("/k", b"w".to_vec(), 1).await?;

    let err = store.delete("/k", Some(1)).await.expect_err("stale delete");
    assert!(matches!(err, Error::Conflict { expected: 1, current: 2, .. }), "{err:?}");
    let gone = store.delete("/k", Some(2)).await?;
    assert_eq!(gone, KeyValue { key: "/k".into(), value: b"w".to_vec(), create_revision: 1, mod_revision: 3 });
    let err = store.delete("/k", None).await.expect_err("delete of a deleted key");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(store.current_revision(), 3);

    // Re-creating starts a new life with a new create_revision.
    let again = store.create("/k", b"x".to_vec()).await?;
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    store.delete("/k", None).await?;
    Ok(())
}

#[tokio::test]
async fn list_with_prefix_start_after_and_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    for key in ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/ab", "/b/1", "/"] {
        store.create(key, key.as_bytes().to_vec()).await?;
    }
    let keys = |r: &ListResult| r.items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();

    let all = store.list("/a/", ListOptions::default()).await?;
    assert_eq!(keys(&all), ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5"]);
    assert!(!all.more);
    assert_eq!(all.revision, 8);
    assert_eq!(all.items[0].value, b"/a/1");

    let page = store.list("/a/", ListOptions { start_after: None, limit: Some(2) }).await?;
    assert_eq!(keys(&page), ["/a/1", "/a/2"]);
    assert!(page.more);
    let page = store.list("/a/", ListOptions { start_after: Some("/a/2".into()), limit: Some(2) }).await?;
    assert_eq!(keys(&page), ["/a/3", "/a/4"]);
    assert!(page.more);
    let page = store.list("/a/", ListOptions { start_after: Some("/a/4".into()), limit: Some(2) }).await?;
    assert_eq!(keys(&page), ["/a/5"]);
    assert!(!page.more);
    // A page that ends exactly at the last key says there is no more.
    let page = store.list("/a/", ListOptions { start_after: Some("/a/3".into()), limit: Some(2) }).await?;
    assert_eq!(keys(&page), ["/a/4", "/a/5"]);
    assert!(!page.more);
    // A start_after before the prefix is ignored; after it, gives nothing.
    let page = store.list("/a/", ListOptions { start_after: Some("/".into()), limit: Some(0) }).await?;
    assert_eq!(page.items.len(), 5);
    let page = store.list("/a/", ListOptions { start_after: Some("/b".into()), limit: None }).await?;
    assert!(page.items.is_empty() && !page.more);

    let everything = store.list("", ListOptions::default()).await?;
    assert_eq!(everything.items.len(), 8);
    assert_eq!(store.list("/nothing/", ListOptions::default()).await?.items.len(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_list_and_concurrent_creates_group_commit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    let writes = 10_000;
    let mut tasks = Vec::new();
    for i in 0..writes {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { store.create(&format!("/pods/p{i:05}"), vec![b'x'; 100]).await }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await??.mod_revision);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=writes).collect::<Vec<_>>());
    assert!(store.commit_count() < writes, "{} commits", store.commit_count());

    let list = store.list("/pods/", ListOptions::default()).await?;
    assert_eq!(list.items.len(), 10_000);
    assert_eq!(list.revision, writes);
    assert!(list.items.windows(2).all(|w| w[0].key < w[1].key));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_get_distinct_revisions_in_fewer_commits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { store.create(&format!("/k/{i}"), vec![1]).await }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await??.mod_revision);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=200).collect::<Vec<_>>());
    assert_eq!(store.current_revision(), 200);
    assert!(store.commit_count() < 200, "{} commits", store.commit_count());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_validates_each_op_against_the_earlier_ones() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    // Many creates of the same key race: exactly one wins, whatever the batching.
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { store.create("/same", vec![i]).await }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await? {
            Ok(kv) => {
                won += 1;
                assert_eq!(kv.mod_revision, 1);
            }
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.current_revision(), 1);
    Ok(())
}

#[tokio::test]
async fn watch_from_zero_sees_puts_and_deletes_with_prev() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let created = store.create("/k", b"1".to_vec()).await?;
    let mut watcher = store.watch("/", 0).await?;
    let updated = store.update("/k", b"2".to_vec(), 1).await?;
    let deleted = store.delete("/k", None).await?;

    let e = next_event(&mut watcher).await?;
    assert_eq!((e.event_type, e.revision()), (EventType::Put, 1));
    assert_eq!((e.kv.clone(), e.prev), (created.clone(), None));
    let e = next_event(&mut watcher).await?;
    assert_eq!(e.event_type, EventType::Put);
    assert_eq!((e.kv, e.prev), (updated.clone(), Some(created)));
    let e = next_event(&mut watcher).await?;
    assert_eq!(e.event_type, EventType::Delete);
    assert_eq!(e.revision(), 3);
    assert_eq!((e.kv.clone(), e.prev), (deleted.clone(), Some(updated)));
    assert_eq!(e.kv.value, b"2");
    assert_quiet(&mut watcher).await;
    Ok(())
}

#[tokio::test]
async fn watch_resumes_from_a_middle_revision_under_its_prefix() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    for i in 1..=6 {
        store.create(&format!("/a/{i}"), vec![i]).await?; // revisions 1, 3, 5, 7, 9, 11
        store.create(&format!("/b/{i}"), vec![i]).await?; // revisions 2, 4, ...
    }
    let mut watcher = store.watch("/a/", 5).await?;
    for expected in [7, 9, 11] {
        let e = next_event(&mut watcher).await?;
        assert_eq!(e.revision(), expected);
        assert!(e.kv.key.starts_with("/a/"));
    }
    // Then live events, still filtered.
    store.create("/b/live", Vec::new()).await?;
    store.create("/a/live", Vec::new()).await?;
    let e = next_event(&mut watcher).await?;
    assert_eq!((e.kv.key.as_str(), e.revision()), ("/a/live", 14));
    assert_quiet(&mut watcher).await;
    Ok(())
}

#[tokio::test]
async fn watch_from_current_or_future_revision_waits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.create("/x", Vec::new()).await?;
    let mut now = store.watch("", store.current_revision()).await?;
    let mut future = store.watch("", 3).await?;
    assert_quiet(&mut now).await;
    store.create("/y", Vec::new()).await?; // 2
    store.create("/z", Vec::new()).await?; // 3
    store.create("/w", Vec::new()).await?; // 4
    for expected in [2, 3, 4] {
        assert_eq!(next_event(&mut now).await?.revision(), expected);
    }
    assert_eq!(next_event(&mut future).await?.revision(), 4);
    assert_quiet(&mut future).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_during_concurrent_writes_has_no_gaps_or_duplicates() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    for i in 0..100 {
        store.create(&format!("/pre/{i}"), Vec::new()).await?;
    }
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..300 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move { store.create(&format!("/live/{i}"), Vec::new()).await }));
            }
            for task in tasks {
                task.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
    };
    let mut watcher = store.watch("", 10).await?;
    for expected in 11..=400 {
        assert_eq!(next_event(&mut watcher).await?.revision(), expected);
    }
    writer.await??;
    assert_quiet(&mut watcher).await;
    Ok(())
}

#[tokio::test]
async fn state_and_history_persist_across_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open(dir.path())?;
        store.create("/a", b"1".to_vec()).await?;
        store.create("/b", b"2".to_vec()).await?;
        store.update("/a", b"3".to_vec(), 1).await?;
        store.delete("/b", None).await?;
        let mut watcher = store.watch("/", 0).await?;
        next_event(&mut watcher).await?;
    }
    let store = open(dir.path())?;
    assert_eq!(store.current_revision(), 4);
    let a = store.get("/a").await?.ok_or("missing /a")?;
    assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision), (&b"3"[..], 1, 3));
    assert_eq!(store.get("/b").await?, None);
    assert_eq!(store.list("/", ListOptions::default()).await?.revision, 4);

    let mut watcher = store.watch("/", 1).await?;
    let e = next_event(&mut watcher).await?;
    assert_eq!((e.event_type, e.kv.key.as_str(), e.revision()), (EventType::Put, "/b", 2));
    let e = next_event(&mut watcher).await?;
    assert_eq!(e.revision(), 3);
    assert_eq!(e.prev.ok_or("no prev")?.value, b"1");
    let e = next_event(&mut watcher).await?;
    assert_eq!((e.event_type, e.revision(), e.kv.value.as_slice()), (EventType::Delete, 4, &b"2"[..]));

    // New writes continue the counter.
    assert_eq!(store.create("/c", Vec::new()).await?.mod_revision, 5);
    assert_eq!(next_event(&mut watcher).await?.revision(), 5);
    Ok(())
}

#[tokio::test]
async fn forced_compaction_makes_old_watches_fail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    for i in 0..10 {
        store.create(&format!("/k/{i}"), Vec::new()).await?;
    }
    store.compact(5).await?;
    assert_eq!(store.compacted_revision(), 5);
    assert_eq!(store.current_revision(), 10, "compaction consumes no revision");
    let err = store.watch("/k/", 3).await.expect_err("watch of compacted history");
    assert!(matches!(err, Error::Compacted { requested: 3, compacted: 5 }), "{err:?}");

    let mut watcher = store.watch("/k/", 5).await?;
    for expected in 6..=10 {
        assert_eq!(next_event(&mut watcher).await?.revision(), expected);
    }
    // Compacting backwards does nothing; forwards past the current revision clamps.
    store.compact(2).await?;
    assert_eq!(store.compacted_revision(), 5);
    store.compact(1000).await?;
    assert_eq!(store.compacted_revision(), 10);
    drop(watcher);
    drop(store);

    let store = open(dir.path())?;
    assert_eq!(store.compacted_revision(), 10);
    assert!(matches!(store.watch("", 9).await, Err(Error::Compacted { .. })));
    Ok(())
}

#[tokio::test]
async fn the_writer_compacts_to_the_configured_history() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = RedbStoreOptions { history: 10, ..RedbStoreOptions::default() };
    let store = open_with(dir.path(), options)?;
    store.create("/k", vec![0]).await?;
    for i in 1..40u64 {
        store.update("/k", vec![1], i).await?;
    }
    let compacted = store.compacted_revision();
    assert!((20..=30).contains(&compacted), "compacted to {compacted}");
    assert!(matches!(store.watch("", compacted - 1).await, Err(Error::Compacted { .. })));
    let mut watcher = store.watch("", compacted).await?;
    assert_eq!(next_event(&mut watcher).await?.revision(), compacted + 1);
    Ok(())
}

#[tokio::test]
async fn a_lagging_watcher_ends_with_compacted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = RedbStoreOptions { broadcast_capacity: 4, watch_channel_capacity: 1, ..RedbStoreOptions::default() };
    let store = open_with(dir.path(), options)?;
    let mut watcher = store.watch("", 0).await?;
    for i in 0..30 {
        store.create(&format!("/k/{i}"), Vec::new()).await?;
    }
    let mut delivered = 0;
    loop {
        match next(&mut watcher).await? {
            Ok(event) => {
                delivered += 1;
                assert_eq!(event.revision(), delivered, "events stay in order until the end");
            }
            Err(Error::Compacted { requested, .. }) => {
                assert_eq!(requested, delivered);
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(delivered < 30);
    Ok(())
}

#[tokio::test]
async fn watches_end_when_the_store_is_dropped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let mut watcher = store.watch("", 0).await?;
    drop(store);
    let item = tokio::time::timeout(Duration::from_secs(5), watcher.next()).await?;
    assert!(item.is_none(), "{item:?}");
    // The file is closed: it can be opened again.
    let store = open(dir.path())?;
    assert!(matches!(store.create("/k", Vec::new()).await, Ok(KeyValue { mod_revision: 1, .. })));
    Ok(())
}

#[test]
fn events_round_trip_through_the_log_encoding() {
    let prev = KeyValue { key: "/k".into(), value: b"old".to_vec(), create_revision: 3, mod_revision: 7 };
    let put = WatchEvent {
        event_type: EventType::Put,
        kv: KeyValue { key: "/k".into(), value: b"new".to_vec(), create_revision: 3, mod_revision: 9 },
        prev: Some(prev.clone()),
    };
    let delete = WatchEvent {
        event_type: EventType::Delete,
        kv: KeyValue { mod_revision: 9, ..prev.clone() },
        prev: Some(prev),
    };
    let create = WatchEvent {
        event_type: EventType::Put,
        kv: KeyValue { key: "/é".into(), value: Vec::new(), create_revision: 9, mod_revision: 9 },
        prev: None,
    };
    for event in [put, delete, create] {
        let bytes = encode_event(&event);
        assert_eq!(event_key(&bytes), Some(event.kv.key.as_bytes()));
        assert_eq!(decode_event(9, &bytes), Some(event));
    }
    assert_eq!(decode_event(1, &[7]), None);
    assert_eq!(decode_event(1, &[0, 200, 0, 0, 0]), None);
}

// ---------------------------------------------------------------------------------------
// A full disk

/// A size-limited tmpfs mounted for one test (the tests run as root), lazily unmounted
/// when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> std::result::Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        if !status.success() {
            return Err(format!("mount -t tmpfs on {}: {status}", dir.path().display()).into());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the filesystem under it is full.
fn fill(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0xa5_u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Every acknowledged key reads back with the value and revision it was acknowledged with.
async fn assert_all_read_back(store: &RedbStore, acknowledged: &[KeyValue]) -> TestResult {
    for kv in acknowledged {
        let stored = store.get(&kv.key).await?.ok_or_else(|| format!("acknowledged {} is lost", kv.key))?;
        assert_eq!(&stored, kv, "{} differs from what was acknowledged", kv.key);
    }
    let listed = store.list("/full/", ListOptions::default()).await?;
    assert_eq!(listed.items.len(), acknowledged.len(), "the listing holds every acknowledged key, and no other");
    Ok(())
}

#[tokio::test]
async fn writes_fail_on_a_full_disk_and_succeed_once_space_is_freed_losing_nothing() -> TestResult {
    let fs = Tmpfs::mount("4m")?;
    let value = vec![b'v'; 4096];
    let mut acknowledged = Vec::new();
    let store = open(fs.path())?;
    for i in 0..20 {
        acknowledged.push(store.create(&format!("/full/{i:05}"), value.clone()).await?);
    }
    let mut watcher = store.watch("/full/", 0).await?;
    assert!(store.check_ready().is_ok());

    // Fill the disk, then write until a write fails.
    let ballast = fs.path().join("ballast");
    fill(&ballast)?;
    let mut failure = None;
    for i in 20..10_000 {
        match store.create(&format!("/full/{i:05}"), value.clone()).await {
            Ok(kv) => acknowledged.push(kv),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let failure = failure.ok_or("no write failed on a full disk")?;
    assert!(matches!(failure, Error::Backend { .. }), "{failure:?}");
    let not_ready = store.check_ready().err().ok_or_else(|| format!("ready after {failure:?}"))?;
    assert!(matches!(not_ready, Error::Unavailable { .. }), "{not_ready:?}");
    // Reads go on from the reopened file while writes are refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match store.get(&acknowledged[0].key).await {
            Ok(read) => {
                assert_eq!(read.as_ref(), Some(&acknowledged[0]));
                break;
            }
            Err(error) if std::time::Instant::now() < deadline => {
                debug!(%error, "the store has not reopened yet");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(format!("reads still fail 5 s after the failure: {error}").into()),
        }
    }
    // Within the back-off, writes are refused without touching the disk; after it, they
    // are tried, and fail again while the disk is full.
    let refused = store.create("/full/refused", value.clone()).await.err().ok_or("a write on a full disk")?;
    assert!(matches!(refused, Error::Unavailable { .. }), "{refused:?}");
    tokio::time::sleep(INITIAL_BACKOFF * 3).await;
    let refused = store.create("/full/refused", value.clone()).await.err().ok_or("a write on a full disk")?;
    assert!(matches!(refused, Error::Unavailable { .. } | Error::Backend { .. }), "{refused:?}");
    assert!(store.check_ready().is_err());

    // Free the space: with no write coming, the writer's probe finds the room once its
    // back-off is over, and the store is ready again; writes succeed.
    std::fs::remove_file(&ballast)?;
    let deadline = std::time::Instant::now() + MAX_BACKOFF + Duration::from_secs(5);
    while let Err(error) = store.check_ready() {
        if std::time::Instant::now() > deadline {
            return Err(format!("still not ready {:?} after space was freed: {error}", MAX_BACKOFF).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 10_000..10_020 {
        acknowledged.push(store.create(&format!("/full/{i:05}"), value.clone()).await?);
    }
    assert_all_read_back(&store, &acknowledged).await?;

    // The watch saw every committed revision once, in order: a commit that reported
    // failure but reached the disk is published when the file is reopened.
    let mut seen = Vec::new();
    while seen.last().copied() != Some(store.current_revision()) {
        seen.push(next_event(&mut watcher).await?.revision());
    }
    assert_eq!(seen, (1..=store.current_revision()).collect::<Vec<_>>());

    // And after reopening.
    drop(store);
    let store = open(fs.path())?;
    assert_all_read_back(&store, &acknowledged).await?;
    Ok(())
}
