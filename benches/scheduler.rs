//! Scheduler throughput: pods bound per second with 100 nodes, everything in process
//! (API server, redb store, scheduler), as seen by a watch on the pods.
//!
//! Run: `cargo bench -p flotilla --bench scheduler` (optimised build; under a minute).
//! Quick mode (1,000 pods only, a few seconds): `cargo bench -p flotilla --bench
//! scheduler -- --quick`, or `FLOTILLA_BENCH_QUICK=1`.
//!
//! Two shapes, each with 1,000 and 10,000 pods of small requests on 100 nodes (64 CPUs,
//! 256 GiB, 1,000 pods each):
//! - backlog: the pods exist before the scheduler starts; timed from its start (its
//!   first list of every pod included) until the watch has seen every pod bound (the
//!   watch is open before the clock starts, so its own list is not timed), and
//!   from the first binding to the last (the steady rate, as kube-scheduler's
//!   scheduler_perf samples it);
//! - stream: the scheduler runs while 64 clients create the pods; timed from the first
//!   create until every pod is bound.
//!
//! Baselines measured in the same run: the Kubernetes gate (kube-scheduler's throughput
//! threshold, 400 pods/s); the same pods bound by plain `pods/binding` calls with no
//! scheduler, which is the API's ceiling (each binding is a store write); and the rate
//! at which the pods were created. The ratio column is the figure over its baseline.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/report.rs"]
mod report;

use anyhow::{Context as _, Result, bail};
use flotilla_apiserver::{Config, Running};
use flotilla_client::{Cluster, EventType, ListParams, resource};
use flotilla_scheduler::SchedulerConfig;
use flotilla_store::{RedbStore, RedbStoreOptions};
use report::{Report, Row};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NODES: usize = 100;
const CREATORS: usize = 64;
/// Concurrent bindings of the baseline without a scheduler (the scheduler's own limit).
const RAW_BINDERS: usize = 256;
/// Kubernetes' scheduler throughput gate, pods/s.
const KUBERNETES_GATE: f64 = 400.0;
const NAMESPACE: &str = "default";

struct Server {
    cluster: Arc<dyn Cluster>,
    _running: Running,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default())?;
    let config = Config::new(dir.path());
    let running = flotilla_apiserver::start(config, Arc::new(store)).await?;
    let cluster: Arc<dyn Cluster> = Arc::new(running.cluster.with_field_manager("bench"));
    for i in 0..NODES {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}")}},
            "status": {
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        cluster.create(resource("v1", "Node"), None, &node).await?;
    }
    Ok(Server { cluster, _running: running, _dir: dir })
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "scheduler"}},
        "spec": {"containers": [{
            "name": "app", "image": "app.wasm",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }]},
    })
}

/// Creates `count` pods named `{prefix}-NNNNN` with [`CREATORS`] concurrent clients;
/// answers when the first create started and how long all took.
async fn create_pods(cluster: &Arc<dyn Cluster>, prefix: &str, count: usize) -> Result<(Instant, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut creators = Vec::new();
    for _ in 0..CREATORS {
        let (cluster, next, prefix) = (cluster.clone(), next.clone(), prefix.to_string());
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                cluster.create(resource("v1", "Pod"), Some(NAMESPACE), &pod(&format!("{prefix}-{i:05}"))).await?;
            }
        }));
    }
    for creator in creators {
        creator.await??;
    }
    Ok((started, started.elapsed()))
}

/// Pods named `{prefix}-…` with a node.
fn bound_in(list: &Value, prefix: &str) -> HashSet<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()))
        .filter_map(|p| p["metadata"]["name"].as_str())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// When the watch saw the first and the last of the pods bound.
struct Bound {
    first: Instant,
    last: Instant,
}

/// Follows the pods' watch until `count` pods named `{prefix}-…` are bound. Lists again
/// if the watch ends (it fell behind). Says on `ready` once its first list is done and its
/// watch open, so that the clock starts after the measuring list, not during it.
async fn wait_all_bound(
    cluster: Arc<dyn Cluster>,
    prefix: String,
    count: usize,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<Bound> {
    let mut ready = Some(ready);
    let pods = resource("v1", "Pod");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    loop {
        let list = cluster.list(pods, Some(NAMESPACE), &ListParams::default()).await?;
        let mut bound = bound_in(&list, &prefix);
        if !bound.is_empty() {
            first.get_or_insert_with(Instant::now);
        }
        if bound.len() >= count {
            let last = Instant::now();
            return Ok(Bound { first: first.unwrap_or(last), last });
        }
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
        let mut watch = cluster.watch(pods, Some(NAMESPACE), &ListParams::default(), &rv).await?;
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = match tokio::time::timeout(remaining, watch.next()).await {
                Err(_) => bail!("only {} of {count} pods bound after 300 s", bound.len()),
                Ok(None | Some(Err(_))) => break,
                Ok(Some(Ok(event))) => event,
            };
            if !matches!(event.event_type, EventType::Added | EventType::Modified) {
                continue;
            }
            let object = &event.object;
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if name.starts_with(&prefix) && object["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
                bound.insert(name.to_string());
                let now = Instant::now();
                let first = *first.get_or_insert(now);
                if bound.len() >= count {
                    return Ok(Bound { first, last: now });
                }
            }
        }
    }
}

/// [`wait_all_bound`] in a task, returned once its watch is open.
async fn watch_until_bound(
    cluster: &Arc<dyn Cluster>,
    prefix: &str,
    count: usize,
) -> tokio::task::JoinHandle<Result<Bound>> {
    let (ready, watching) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(wait_all_bound(cluster.clone(), prefix.to_string(), count, ready));
    // An error (the sender dropped) means it is done already; the handle tells.
    let _ = watching.await;
    watcher
}

fn start_scheduler(cluster: &Arc<dyn Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(flotilla_scheduler::run(cluster.clone(), SchedulerConfig::default()))
}

/// Binds the pods named `{prefix}-…` round-robin to the nodes without a scheduler,
/// [`RAW_BINDERS`] at a time: the API's own ceiling for bindings.
async fn bind_directly(cluster: &Arc<dyn Cluster>, prefix: &str, count: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut binders = Vec::new();
    for _ in 0..RAW_BINDERS {
        let (cluster, next, prefix) = (cluster.clone(), next.clone(), prefix.to_string());
        binders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let name = format!("{prefix}-{i:05}");
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": format!("node-{:03}", i % NODES)},
                });
                cluster.create_subresource(resource("v1", "Pod"), Some(NAMESPACE), &name, "binding", &binding).await?;
            }
        }));
    }
    for binder in binders {
        binder.await??;
    }
    Ok(())
}

/// The scheduler issue's target, in pods bound per second from a backlog.
const THROUGHPUT_TARGET: f64 = 10_000.0;

/// Every pod exists before the scheduler starts. Answers the pods bound per second.
async fn backlog(count: usize, rows: &mut Report) -> Result<f64> {
    // The baseline: the same pods bound by plain API calls.
    let server = start_server().await?;
    create_pods(&server.cluster, "raw", count).await?;
    let watcher = watch_until_bound(&server.cluster, "raw", count).await;
    let started = Instant::now();
    bind_directly(&server.cluster, "raw", count).await?;
    let raw = watcher.await?.context("waiting for the raw bindings")?;
    let raw_rate = count as f64 / raw.last.duration_since(started).as_secs_f64();
    drop(server);

    let server = start_server().await?;
    let (_, create_time) = create_pods(&server.cluster, "backlog", count).await?;
    let watcher = watch_until_bound(&server.cluster, "backlog", count).await;
    let started = Instant::now();
    let scheduler = start_scheduler(&server.cluster);
    let bound = watcher.await?.context("waiting for the backlog")?;
    scheduler.abort();
    let total = bound.last.duration_since(started).as_secs_f64();
    let rate = count as f64 / total;
    let steady = count as f64 / bound.last.duration_since(bound.first).as_secs_f64();
    let create_rate = count as f64 / create_time.as_secs_f64();
    rows.push(Row {
        bench: format!("backlog of {count} pods, {NODES} nodes"),
        figure: format!("{rate:.0} pods/s ({total:.2} s from start, first list included)"),
        baseline: format!("Kubernetes gate {KUBERNETES_GATE:.0} pods/s"),
        ratio: rate / KUBERNETES_GATE,
    });
    rows.push(Row {
        bench: format!("backlog of {count} pods, first to last binding"),
        figure: format!("{steady:.0} pods/s"),
        baseline: format!("the API binding them without a scheduler ({RAW_BINDERS} at a time): {raw_rate:.0} pods/s"),
        ratio: steady / raw_rate,
    });
    rows.push(Row {
        bench: format!("backlog of {count} pods vs creates"),
        figure: format!("{rate:.0} pods/s"),
        baseline: format!("creating them ({CREATORS} clients): {create_rate:.0} pods/s"),
        ratio: rate / create_rate,
    });
    Ok(rate)
}

/// The scheduler runs while the pods are created.
async fn stream(count: usize, rows: &mut Report) -> Result<()> {
    let server = start_server().await?;
    let scheduler = start_scheduler(&server.cluster);
    // Let it list the (empty) pods and the nodes first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let watcher = watch_until_bound(&server.cluster, "stream", count).await;
    let (started, create_time) = create_pods(&server.cluster, "stream", count).await?;
    let done = watcher.await?.context("waiting for the stream")?.last;
    scheduler.abort();
    let elapsed = done.duration_since(started).as_secs_f64();
    let rate = count as f64 / elapsed;
    rows.push(Row {
        bench: format!("stream of {count} pods, {NODES} nodes"),
        figure: format!("{rate:.0} pods/s ({elapsed:.2} s; creates done after {:.2} s)", create_time.as_secs_f64()),
        baseline: format!("Kubernetes gate {KUBERNETES_GATE:.0} pods/s"),
        ratio: rate / KUBERNETES_GATE,
    });
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `--quick` (or FLOTILLA_BENCH_QUICK) shrinks the run.
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("FLOTILLA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sizes: &[usize] = if quick { &[1_000] } else { &[1_000, 10_000] };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (mut rows, mut backlog_rates) = (Report::default(), Vec::new());
        for &count in sizes {
            backlog_rates.push((count, backlog(count, &mut rows).await?));
            stream(count, &mut rows).await?;
        }
        for (count, rate) in backlog_rates {
            rows.target(
                format!("backlog of {count} pods bound at ≥ {THROUGHPUT_TARGET:.0} pods/s ({rate:.0}/s)"),
                rate >= THROUGHPUT_TARGET,
            );
        }
        rows.print();
        Ok(())
    })
}
