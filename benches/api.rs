//! API server load bench: durable creates/s and latency at 1, 16 and 64 concurrent
//! clients, listing 10,000 objects, and watch fan-out to 100 watchers.
//!
//! Run: `cargo bench -p flotilla --bench api` (optimised build; about a minute).
//!
//! Every figure is printed next to a baseline measured in the same run on the same
//! machine, because absolute numbers on a shared 2-core box mean little:
//! - creates: the same number of `GET /version` round trips at the same concurrency
//!   (TLS + HTTP, no store), and the bare store's creates in process (no HTTP);
//! - list: the bare store listing the same 10,000 keys in process;
//! - watch: one watcher instead of 100.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/report.rs"]
mod report;

use anyhow::{Context as _, Result};
use flotilla::client::{Client, LineReader};
use flotilla::testkit::ServerProcess;
use flotilla_store::{ListOptions, RedbStore, RedbStoreOptions, Store};
use report::{Report, Row};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `total` operations with `concurrency` workers; returns ops/s and sorted latencies.
async fn run_load<F, Fut>(total: usize, concurrency: usize, op: F) -> Result<(f64, Vec<Duration>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"bench": "api"}}, "data": {"key": "value"}})
}

/// The control-plane issue's target: ≥ 5,000 durable creates/s at 64 clients, p99 < 20 ms.
const CREATE_TARGET: (usize, f64, Duration) = (64, 5_000.0, Duration::from_millis(20));

async fn creates(client: &Client, store: &Arc<RedbStore>, rows: &mut Report) -> Result<()> {
    for (concurrency, total) in [(1usize, 400usize), (16, 3_000), (64, 6_000)] {
        let c = client.clone();
        let (version_rate, _) = run_load(total, concurrency, move |_| {
            let c = c.clone();
            async move {
                c.get("/version").await?.ok()?;
                Ok(())
            }
        })
        .await?;
        let s = store.clone();
        let (store_rate, _) = run_load(total, concurrency, move |i| {
            let s = s.clone();
            async move {
                s.create(&format!("/bench/{concurrency}/{i}"), config_map("x").to_string().into_bytes()).await?;
                Ok(())
            }
        })
        .await?;
        let c = client.clone();
        let path = "/api/v1/namespaces/default/configmaps".to_string();
        let (rate, latencies) = run_load(total, concurrency, move |i| {
            let c = c.clone();
            let path = path.clone();
            async move {
                c.post_json(&path, &config_map(&format!("c{concurrency}-{i}"))).await?.ok()?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            bench: format!("creates, {concurrency} clients"),
            figure: format!(
                "{rate:.0}/s p50 {} p99 {}",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99))
            ),
            baseline: format!("GET /version {version_rate:.0}/s"),
            ratio: rate / version_rate,
        });
        let (clients, target_rate, target_p99) = CREATE_TARGET;
        if concurrency == clients {
            let p99 = percentile(&latencies, 0.99);
            let met = rate >= target_rate && p99 < target_p99;
            rows.target(
                format!(
                    "≥ {target_rate:.0} creates/s at {clients} clients with p99 < {} ({rate:.0}/s, p99 {})",
                    ms(target_p99),
                    ms(p99)
                ),
                met,
            );
        }
        rows.push(Row {
            bench: format!("creates vs bare store, {concurrency} clients"),
            figure: format!("{rate:.0}/s"),
            baseline: format!("store.create {store_rate:.0}/s"),
            ratio: rate / store_rate,
        });
    }
    Ok(())
}

async fn list(client: &Client, store: &Arc<RedbStore>, rows: &mut Report) -> Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "listing"}});
    client.post_json("/api/v1/namespaces", &ns).await?.ok()?;
    let c = client.clone();
    run_load(10_000, 64, move |i| {
        let c = c.clone();
        async move {
            c.post_json("/api/v1/namespaces/listing/configmaps", &config_map(&format!("item-{i:05}"))).await?.ok()?;
            Ok(())
        }
    })
    .await?;
    for i in 0..10_000 {
        store.create(&format!("/list/{i:05}"), config_map("x").to_string().into_bytes()).await?;
    }
    let mut api = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let list = client.get("/api/v1/namespaces/listing/configmaps").await?.ok()?;
        api.push(t.elapsed());
        anyhow::ensure!(list["items"].as_array().map(Vec::len) == Some(10_000), "list returned the wrong count");
        let t = Instant::now();
        let page = store.list("/list/", ListOptions::default()).await?;
        bare.push(t.elapsed());
        anyhow::ensure!(page.items.len() == 10_000);
    }
    api.sort();
    bare.sort();
    rows.push(Row {
        bench: "list 10,000 objects".into(),
        figure: format!("median {}", ms(api[2])),
        baseline: format!("store.list {}", ms(bare[2])),
        ratio: api[2].as_secs_f64() / bare[2].as_secs_f64(),
    });
    Ok(())
}

/// Latency from sending a write until every watcher has its event (the event can
/// arrive before the write's own response, so the send is the reference point).
async fn fan_out(client: &Client, watchers: usize, writes: usize) -> Result<Vec<Duration>> {
    let ns = format!("watch-{watchers}");
    client.post_json("/api/v1/namespaces", &json!({"metadata": {"name": ns}})).await?.ok()?;
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let start = client.get(&path).await?.ok()?["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    for _ in 0..watchers {
        let (status, body) = client.stream(&format!("{path}?watch=1&resourceVersion={start}")).await?;
        anyhow::ensure!(status.is_success(), "watch failed: {status}");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = LineReader::new(body);
            let mut seen = 0;
            while seen < writes {
                match reader.next().await {
                    Ok(Some(_)) => {
                        let _ = tx.send((seen, Instant::now()));
                        seen += 1;
                    }
                    _ => return,
                }
            }
        });
    }
    let mut sent = Vec::with_capacity(writes);
    for i in 0..writes {
        sent.push(Instant::now());
        client.post_json(&path, &config_map(&format!("w{i}"))).await?.ok()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut last_delivery = vec![None::<Instant>; writes];
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered < watchers * writes {
        let (index, at) = tokio::time::timeout_at(deadline.into(), rx.recv()).await?.context("watchers ended early")?;
        let slot = &mut last_delivery[index];
        *slot = Some(slot.map_or(at, |prev: Instant| prev.max(at)));
        delivered += 1;
    }
    let mut latencies: Vec<Duration> = last_delivery
        .iter()
        .zip(&sent)
        .map(|(d, a)| d.map_or(Duration::ZERO, |d| d.saturating_duration_since(*a)))
        .collect();
    latencies.sort();
    Ok(latencies)
}

async fn watch(client: &Client, rows: &mut Report) -> Result<()> {
    let one = fan_out(client, 1, 200).await?;
    let hundred = fan_out(client, 100, 200).await?;
    rows.push(Row {
        bench: "watch fan-out to 100 watchers".into(),
        figure: format!("p50 {} p99 {}", ms(percentile(&hundred, 0.5)), ms(percentile(&hundred, 0.99))),
        baseline: format!("1 watcher p50 {} p99 {}", ms(percentile(&one, 0.5)), ms(percentile(&one, 0.99))),
        ratio: percentile(&hundred, 0.99).as_secs_f64() / percentile(&one, 0.99).as_secs_f64().max(1e-6),
    });
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; any other argument is a filter we don't support.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let data_dir = tempfile::tempdir()?;
        let server = ServerProcess::spawn(Path::new(env!("CARGO_BIN_EXE_flotilla")), data_dir.path(), &[])?;
        let client = Client::from_kubeconfig(&server.kubeconfig)?;
        let store_dir = tempfile::tempdir()?;
        let store = Arc::new(RedbStore::open(&store_dir.path().join("bare.redb"), RedbStoreOptions::default())?);
        let mut rows = Report::default();
        creates(&client, &store, &mut rows).await?;
        list(&client, &store, &mut rows).await?;
        watch(&client, &mut rows).await?;
        rows.print();
        Ok(())
    })
}
