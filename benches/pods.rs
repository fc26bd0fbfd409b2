//! Pods bench: pod start (create → Ready), per-request instantiation of `hello-http`,
//! density (resident memory of the server with many idle HTTP pods) and the overhead of
//! the CPU quota. Everything runs in process: API server (redb store), scheduler and one
//! node agent with the wasm runtime, wired as `flotilla server` wires them.
//!
//! Run: `cargo bench -p flotilla --bench pods` (optimised build; about 70 s once built).
//! Quick mode (smaller counts, shorter loads, about 20 s): `cargo bench -p flotilla
//! --bench pods -- --quick`, or `FLOTILLA_BENCH_QUICK=1`. `-- --only SECTION` runs one
//! of density, requests, start, quota; `FLOTILLA_LOG=…` shows the components' logs
//! (e.g. `flotilla_store=debug` shows watchers falling behind).
//!
//! What is measured, and the baseline each figure stands next to (same run, same
//! machine, because absolute numbers on a shared 2-core box mean little):
//! - pod start, for 1, 100 and 1,000 `hello-http` pods (64 creates in flight): from the
//!   first create until a watch has seen every pod Ready, and each pod's create → Ready,
//!   split at the moment the watch saw it bound. Baseline: creating as many ConfigMaps
//!   the same way (the API's own cost), so the ratio is what scheduling, binding,
//!   starting and the status writes add. 1 pod is the median of several single starts;
//!   100 and 1,000 the median of 3 rounds (1 in quick mode), each round in its own
//!   namespace (earlier rounds' pods stay, idle). The first pod of the node, which
//!   compiles the image, is a row of its own. Targets: all 1,000 Ready within 1 s, and
//!   Kubernetes' SLO of p99 ≤ 5 s per pod.
//! - per request: `hello-http` through `flotilla_runtime::HttpPod::handle` (a fresh
//!   instance per request, the full body read), sequentially and from 2, 4 and 8 tasks,
//!   then through `Node::dispatch`. Baselines: the 50 µs p50 target, a native async
//!   handler answering the same bytes, the sequential rate, the runtime called directly;
//!   and the sequential loop once more on a single-threaded tokio runtime, which shows
//!   what the hop to another worker thread costs.
//! - density: 10,000 idle `hello-http` pods on one node (1,000 in quick mode), in child
//!   processes of this bench so that nothing else measured here is resident: VmRSS once
//!   all are Ready (with a watching client, the bench's own wait). Baseline: the same
//!   process's VmRSS with the cluster started and no pods. Two more children split the
//!   cost: as many pods stored but never scheduled (the control plane alone), and as
//!   many `HttpPod`s made by the runtime without a cluster (wasmtime alone). Target:
//!   fits in 2 GB (kubelet's default is 110 pods a node).
//! - CPU quota: two `hello-http` pods, one with `resources.limits.cpu: "2"` (a quota
//!   that a 2-core machine's load never spends: the clock only charges time a pod's
//!   instances hold a thread), one without, each driven by 8 tasks through
//!   `Node::dispatch`, in ABBA order. Target: the limited pod does ≥ 0.9× the other's
//!   rate.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/mod.rs"]
mod support;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use flotilla_client::{Cluster, EventType, ListParams, Watch, resource};
use flotilla_node::Node;
use flotilla_runtime::{HttpPod, LogBuffer, PodSpec, Runtime, RuntimeConfig};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Creates in flight at once.
const CREATORS: usize = 64;
/// Pods the bench's node may run (kubelet's `--max-pods`).
const MAX_PODS: u32 = 20_000;
/// How long any wait for pods may take before the bench gives up.
const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// The argument that makes this binary the density child.
const DENSITY_CHILD: &str = "--density-child";
/// The line the density child reports on.
const DENSITY_RESULT: &str = "DENSITY-RESULT ";

const START_TARGET_1000: Duration = Duration::from_secs(1);
const SLO_P99: Duration = Duration::from_secs(5);
const REQUEST_TARGET_P50: Duration = Duration::from_micros(50);
const DENSITY_TARGET_BYTES: u64 = 2_000_000_000;
const QUOTA_TARGET_RATIO: f64 = 0.9;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// Sequential single-pod starts (their median is the "1 pod" figure).
    single_starts: usize,
    /// Sizes of the multi-pod start rounds.
    start_sizes: &'static [usize],
    /// Rounds of each size (the median round is the figure).
    start_repeats: usize,
    density_pods: usize,
    /// Requests in each sequential per-request loop.
    sequential_requests: usize,
    /// How long each concurrent load runs.
    load_time: Duration,
    /// Alternations of the quota load (limited, unlimited).
    quota_rounds: usize,
}

const QUICK: Scale = Scale {
    single_starts: 5,
    start_sizes: &[100, 1_000],
    start_repeats: 1,
    density_pods: 1_000,
    sequential_requests: 2_000,
    load_time: Duration::from_secs(1),
    quota_rounds: 2,
};

const FULL: Scale = Scale {
    single_starts: 20,
    start_sizes: &[100, 1_000],
    start_repeats: 3,
    density_pods: 10_000,
    sequential_requests: 20_000,
    load_time: Duration::from_secs(3),
    quota_rounds: 4,
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// VmRSS and VmHWM (peak) of this process, in bytes.
fn resident_memory() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line =
            status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in /proc/self/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("{name}: no value"))?
            .parse()
            .with_context(|| format!("{name}: not a number"))?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

// ---------------------------------------------------------------------------------------
// The cluster in process.

use support::cluster::TestCluster;
use support::report::Report;

async fn start_cluster() -> Result<TestCluster> {
    support::cluster::start_cluster(MAX_PODS, false).await
}

async fn create_namespace(cluster: &Arc<dyn Cluster>, name: &str) -> Result<()> {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    cluster.create(resource("v1", "Namespace"), None, &namespace).await?;
    Ok(())
}

fn hello_pod(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": "hello-http"}]},
    })
}

fn config_map(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"key": "value"},
    })
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn is_bound(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty())
}

/// Creates `count` objects (`make(i)`) of `kind` in `namespace` with [`CREATORS`]
/// concurrent clients; answers when each create was sent (by index) and how long all took.
async fn create_all(
    cluster: &Arc<dyn Cluster>,
    kind: &'static str,
    namespace: &str,
    count: usize,
    make: fn(&str, &str) -> Value,
    prefix: &str,
) -> Result<(Vec<Instant>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut creators = Vec::new();
    for _ in 0..CREATORS.min(count) {
        let (cluster, next, namespace, prefix) =
            (cluster.clone(), next.clone(), namespace.to_string(), prefix.to_string());
        creators.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(sent);
                }
                let object = make(&format!("{prefix}-{i:05}"), &namespace);
                sent.push((i, Instant::now()));
                cluster.create(resource("v1", kind), Some(&namespace), &object).await?;
            }
        }));
    }
    let mut sent_at = vec![started; count];
    for creator in creators {
        for (i, at) in creator.await?? {
            sent_at[i] = at;
        }
    }
    Ok((sent_at, started.elapsed()))
}

/// When a watch first saw a pod bound to a node, and Ready.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    bound: Option<Instant>,
    ready: Option<Instant>,
    /// Watch events seen for the pod: one per write of the object.
    events: u32,
}

/// The pods of `namespace`: a list, then a watch from its revision.
async fn open_watch(cluster: &Arc<dyn Cluster>, namespace: &str, seen: &mut HashMap<String, Seen>) -> Result<Watch> {
    let pods = resource("v1", "Pod");
    let list = cluster.list(pods, Some(namespace), &ListParams::default()).await?;
    let now = Instant::now();
    for pod in list["items"].as_array().into_iter().flatten() {
        record(seen, pod, now);
    }
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    Ok(cluster.watch(pods, Some(namespace), &ListParams::default(), &rv).await?)
}

/// Notes what `pod` shows at `at`; answers whether it is newly seen Ready.
fn record(seen: &mut HashMap<String, Seen>, pod: &Value, at: Instant) -> bool {
    let Some(name) = pod["metadata"]["name"].as_str() else { return false };
    let entry = seen.entry(name.to_string()).or_default();
    entry.events += 1;
    if entry.bound.is_none() && is_bound(pod) {
        entry.bound = Some(at);
    }
    if entry.ready.is_none() && is_ready(pod) {
        entry.ready = Some(at);
        // Ready implies bound: a pod first seen Ready was bound by then.
        entry.bound.get_or_insert(at);
        return true;
    }
    false
}

/// Follows `watch` (listing and watching again if it ends) until every pod of
/// `namespace` in `wanted` has been seen Ready; answers what it saw of each pod.
async fn wait_ready(
    cluster: Arc<dyn Cluster>,
    namespace: String,
    mut watch: Watch,
    mut seen: HashMap<String, Seen>,
    wanted: HashSet<String>,
) -> Result<HashMap<String, Seen>> {
    let deadline = Instant::now() + WAIT_LIMIT;
    let count_ready = |seen: &HashMap<String, Seen>| {
        wanted.iter().filter(|n| seen.get(*n).is_some_and(|s| s.ready.is_some())).count()
    };
    let mut ready = count_ready(&seen);
    while ready < wanted.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, watch.next()).await {
            Err(_) => bail!("only {ready} of {} pods in {namespace} Ready after {WAIT_LIMIT:?}", wanted.len()),
            // The watch ended or fell behind: list and watch again.
            Ok(None | Some(Err(_))) => {
                watch = open_watch(&cluster, &namespace, &mut seen).await?;
                ready = count_ready(&seen);
            }
            Ok(Some(Ok(event))) => {
                if matches!(event.event_type, EventType::Added | EventType::Modified)
                    && record(&mut seen, &event.object, Instant::now())
                    && event.object["metadata"]["name"].as_str().is_some_and(|n| wanted.contains(n))
                {
                    ready += 1;
                }
            }
        }
    }
    Ok(seen)
}

/// One pod-start round's measurements.
struct StartRound {
    /// First create sent → last pod seen Ready.
    total: Duration,
    /// First create sent → last create answered.
    creates: Duration,
    /// Per pod, create sent → Ready seen (sorted).
    to_ready: Vec<Duration>,
    /// Per pod, create sent → bound seen (sorted).
    to_bound: Vec<Duration>,
    /// Per pod, bound seen → Ready seen (sorted).
    bound_to_ready: Vec<Duration>,
    /// Mean watch events (writes of the object) per pod until it was Ready and the wait
    /// ended.
    events_per_pod: f64,
}

/// Creates `count` hello-http pods named `{prefix}-NNNNN` in `namespace` and waits until
/// a watch has seen them all Ready.
async fn start_pods(cluster: &Arc<dyn Cluster>, namespace: &str, prefix: &str, count: usize) -> Result<StartRound> {
    let mut seen = HashMap::new();
    let watch = open_watch(cluster, namespace, &mut seen).await?;
    let wanted = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    let waiter = tokio::spawn(wait_ready(cluster.clone(), namespace.to_string(), watch, seen, wanted));
    let (sent_at, creates) = create_all(cluster, "Pod", namespace, count, hello_pod, prefix).await?;
    let seen = waiter.await??;
    let mut to_ready = Vec::with_capacity(count);
    let mut to_bound = Vec::with_capacity(count);
    let mut bound_to_ready = Vec::with_capacity(count);
    let first = sent_at.iter().min().copied().context("no pods")?;
    let mut last = first;
    let mut events = 0u64;
    for (i, sent) in sent_at.iter().enumerate() {
        let name = format!("{prefix}-{i:05}");
        let s = seen.get(&name).copied().unwrap_or_default();
        let ready = s.ready.with_context(|| format!("{namespace}/{name} never seen Ready"))?;
        let bound = s.bound.unwrap_or(ready);
        events += u64::from(s.events);
        last = last.max(ready);
        to_ready.push(ready.saturating_duration_since(*sent));
        to_bound.push(bound.saturating_duration_since(*sent));
        bound_to_ready.push(ready.saturating_duration_since(bound));
    }
    to_ready.sort();
    to_bound.sort();
    bound_to_ready.sort();
    Ok(StartRound {
        total: last.saturating_duration_since(first),
        creates,
        to_ready,
        to_bound,
        bound_to_ready,
        events_per_pod: events as f64 / count as f64,
    })
}

fn describe(round: &StartRound) -> String {
    format!(
        "all Ready {} (creates {}); create→Ready p50 {} p99 {}; →bound p50 {}, bound→Ready p50 {} p99 {}; {:.1} writes a pod",
        ms(round.total),
        ms(round.creates),
        ms(percentile(&round.to_ready, 0.5)),
        ms(percentile(&round.to_ready, 0.99)),
        ms(percentile(&round.to_bound, 0.5)),
        ms(percentile(&round.bound_to_ready, 0.5)),
        ms(percentile(&round.bound_to_ready, 0.99)),
        round.events_per_pod,
    )
}

async fn pod_start(tc: &TestCluster, scale: Scale, report: &mut Report) -> Result<()> {
    let cluster = &tc.cluster;
    println!("pod start");
    // The first pod of the node compiles hello-http (the node's cache is empty).
    create_namespace(cluster, "warmup").await?;
    let cold = start_pods(cluster, "warmup", "cold", 1).await?;

    // One pod at a time, several times: the median is the figure.
    create_namespace(cluster, "start-1").await?;
    create_namespace(cluster, "configmaps-1").await?;
    let mut totals = Vec::new();
    let mut to_ready = Vec::new();
    let mut baselines = Vec::new();
    for rep in 0..scale.single_starts {
        let round = start_pods(cluster, "start-1", &format!("p{rep:03}"), 1).await?;
        totals.push(round.total);
        to_ready.extend(round.to_ready);
        let (_, creates) =
            create_all(cluster, "ConfigMap", "configmaps-1", 1, config_map, &format!("c{rep:03}")).await?;
        baselines.push(creates);
    }
    totals.sort();
    to_ready.sort();
    baselines.sort();
    let single = percentile(&totals, 0.5);
    let single_baseline = percentile(&baselines, 0.5);
    report.row(
        "pod start, first pod of the node (compiles hello-http)",
        format!("Ready after {}", ms(cold.total)),
        format!("a later single pod {}", ms(single)),
        cold.total.as_secs_f64() / single.as_secs_f64().max(1e-9),
    );
    report.row(
        format!("pod start, 1 pod (median of {})", scale.single_starts),
        format!("create→Ready p50 {} max {}", ms(single), ms(percentile(&to_ready, 1.0))),
        format!("1 ConfigMap create {}", ms(single_baseline)),
        single.as_secs_f64() / single_baseline.as_secs_f64().max(1e-9),
    );

    for &count in scale.start_sizes {
        // Each repeat in fresh namespaces; the earlier rounds' pods stay, idle.
        let mut rounds = Vec::new();
        let mut baselines = Vec::new();
        for rep in 0..scale.start_repeats {
            let namespace = format!("start-{count}-{rep}");
            let baseline_namespace = format!("configmaps-{count}-{rep}");
            create_namespace(cluster, &namespace).await?;
            create_namespace(cluster, &baseline_namespace).await?;
            let (_, baseline) = create_all(cluster, "ConfigMap", &baseline_namespace, count, config_map, "c").await?;
            let round = start_pods(cluster, &namespace, "p", count).await?;
            println!("  {count} pods, round {}: {}", rep + 1, describe(&round));
            rounds.push(round);
            baselines.push(baseline);
        }
        // The median round by total time, and the median baseline.
        rounds.sort_by_key(|r| r.total);
        baselines.sort();
        let round = &rounds[rounds.len() / 2];
        let baseline = baselines[baselines.len() / 2];
        let totals: Vec<String> = rounds.iter().map(|r| secs(r.total)).collect();
        let p99 = percentile(&round.to_ready, 0.99);
        let of = if rounds.len() > 1 { format!(", median of {}", rounds.len()) } else { String::new() };
        report.row(
            format!("pod start, {count} pods ({CREATORS} creates in flight{of})"),
            format!(
                "all Ready {}; create→Ready p50 {} p99 {}",
                ms(round.total),
                ms(percentile(&round.to_ready, 0.5)),
                ms(p99)
            ),
            format!("{count} ConfigMap creates {}", ms(baseline)),
            round.total.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
        );
        report.row(
            format!("pod start, {count} pods: where the time goes"),
            format!(
                "create→bound p50 {} p99 {}; bound→Ready p50 {} p99 {}; {:.1} writes a pod",
                ms(percentile(&round.to_bound, 0.5)),
                ms(percentile(&round.to_bound, 0.99)),
                ms(percentile(&round.bound_to_ready, 0.5)),
                ms(percentile(&round.bound_to_ready, 0.99)),
                round.events_per_pod,
            ),
            format!("the {count} pod creates answered in {}", ms(round.creates)),
            round.total.as_secs_f64() / round.creates.as_secs_f64().max(1e-9),
        );
        report.target(
            format!("{count} pods: create→Ready p99 {} ≤ 5 s (Kubernetes' pod startup SLO)", ms(p99)),
            p99 <= SLO_P99,
        );
        if count == 1_000 {
            report.target(
                format!("1,000 pods all Ready within 1 s (took {}; rounds: {})", secs(round.total), totals.join(", ")),
                round.total <= START_TARGET_1000,
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Per-request cost.

/// Runs `total` operations one after another; answers the sorted latencies and the rate.
async fn run_sequential<F, Fut>(total: usize, mut op: F) -> Result<(Vec<Duration>, f64)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut latencies = Vec::with_capacity(total);
    let started = Instant::now();
    for _ in 0..total {
        let t = Instant::now();
        op().await?;
        latencies.push(t.elapsed());
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((latencies, rate))
}

/// Runs `op` from `tasks` tasks for `time`; answers the sorted latencies and the rate.
async fn run_for<F, Fut>(tasks: usize, time: Duration, op: F) -> Result<(Vec<Duration>, f64)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..tasks {
        let (op, stop) = (op.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                op().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((latencies, rate))
}

type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, flotilla_runtime::BodyError>;

fn runtime_request() -> Result<hyper::Request<RequestBody>> {
    let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
    Ok(hyper::Request::get("/").body(body)?)
}

/// One request through the runtime: a fresh instance, the whole body read.
async fn runtime_call(pod: &HttpPod) -> Result<usize> {
    let response = pod.handle(runtime_request()?).await.map_err(|e| anyhow::anyhow!("hello-http: {e}"))?;
    anyhow::ensure!(response.status() == 200, "hello-http answered {}", response.status());
    let body = response.into_body().collect().await.map_err(|e| anyhow::anyhow!("reading the body: {e:?}"))?;
    Ok(body.to_bytes().len())
}

/// One request through the node agent.
async fn dispatch_call(node: &Node, namespace: &str, pod: &str) -> Result<()> {
    let request = http::Request::get("/").body(flotilla_client::empty_body())?;
    let response = node.dispatch(namespace, pod, request).await?;
    anyhow::ensure!(response.status() == 200, "{namespace}/{pod} answered {}", response.status());
    response.into_body().collect().await.map_err(|e| anyhow::anyhow!("reading the body: {e}"))?;
    Ok(())
}

fn latency_figure(latencies: &[Duration], rate: f64) -> String {
    format!("p50 {} p99 {} ({rate:.0} req/s)", us(percentile(latencies, 0.5)), us(percentile(latencies, 0.99)))
}

async fn per_request_runtime(scale: Scale, report: &mut Report) -> Result<(Duration, f64)> {
    println!("per request, runtime");
    let runtime = Runtime::new(RuntimeConfig::default()).context("starting the wasm runtime")?;
    let path = flotilla_examples::path("hello-http").context("no hello-http example")?;
    let image = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        move || runtime.load_file(std::path::Path::new(path))
    })
    .await??;
    let spec = PodSpec { name: "bench".into(), ..PodSpec::default() };
    let pod = runtime.http_pod(&image, spec, LogBuffer::new(64 << 10))?;
    let size = runtime_call(&pod).await?;
    // Warm up: caches, the pool's slots, the allocator.
    for _ in 0..200 {
        runtime_call(&pod).await?;
    }

    // The baseline: a native async handler answering the same bytes in the same way.
    let answer = Bytes::from(vec![b'x'; size]);
    let native = |answer: Bytes| async move {
        let _request = hyper::Request::get("/").body(http_body_util::Empty::<Bytes>::new())?;
        let response = hyper::Response::new(http_body_util::Full::new(answer));
        let Ok(body) = response.into_body().collect().await;
        anyhow::ensure!(body.to_bytes().len() == size);
        Ok(())
    };
    let (native_latencies, _) = run_sequential(scale.sequential_requests, || native(answer.clone())).await?;
    let native_p50 = percentile(&native_latencies, 0.5);

    let (latencies, sequential_rate) = run_sequential(scale.sequential_requests, || async {
        runtime_call(&pod).await?;
        Ok(())
    })
    .await?;
    let p50 = percentile(&latencies, 0.5);
    report.row(
        "hello-http per request, runtime, sequential",
        latency_figure(&latencies, sequential_rate),
        format!("target p50 {}", us(REQUEST_TARGET_P50)),
        p50.as_secs_f64() / REQUEST_TARGET_P50.as_secs_f64(),
    );
    report.row(
        "hello-http per request vs a native handler",
        format!("p50 {}", us(p50)),
        format!("native async handler p50 {}", us(native_p50)),
        p50.as_secs_f64() / native_p50.as_secs_f64().max(1e-9),
    );
    report.target(format!("hello-http per-request p50 {} < 50 µs", us(p50)), p50 < REQUEST_TARGET_P50);

    // The same loop on a single-threaded tokio runtime: no wake-up of another worker
    // thread for the instance's task, so the difference is the thread hop.
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let single_pod = pod.clone();
    let total = scale.sequential_requests;
    std::thread::Builder::new().name("bench-current-thread".into()).spawn(move || {
        let run = || -> Result<(Vec<Duration>, f64)> {
            let single = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            single.block_on(run_sequential(total, || async {
                runtime_call(&single_pod).await?;
                Ok(())
            }))
        };
        let _ = sender.send(run());
    })?;
    let (single_latencies, single_rate) = receiver.await.context("the current-thread loop ended early")??;
    report.row(
        "hello-http per request, runtime, sequential, 1-thread tokio",
        latency_figure(&single_latencies, single_rate),
        format!("multi-thread tokio p50 {}", us(p50)),
        percentile(&single_latencies, 0.5).as_secs_f64() / p50.as_secs_f64().max(1e-9),
    );

    let mut rate_at_8 = sequential_rate;
    for tasks in [2usize, 4, 8] {
        let pod = pod.clone();
        let (latencies, rate) = run_for(tasks, scale.load_time, move || {
            let pod = pod.clone();
            async move {
                runtime_call(&pod).await?;
                Ok(())
            }
        })
        .await?;
        report.row(
            format!("hello-http, runtime, {tasks} tasks"),
            latency_figure(&latencies, rate),
            format!("sequential {sequential_rate:.0} req/s"),
            rate / sequential_rate,
        );
        rate_at_8 = rate;
    }
    Ok((p50, rate_at_8))
}

/// Waits until `names` in `namespace` are Ready (they may be already).
async fn wait_pods(cluster: &Arc<dyn Cluster>, namespace: &str, names: &[&str]) -> Result<()> {
    let mut seen = HashMap::new();
    let watch = open_watch(cluster, namespace, &mut seen).await?;
    let wanted = names.iter().map(|n| n.to_string()).collect();
    wait_ready(cluster.clone(), namespace.to_string(), watch, seen, wanted).await?;
    Ok(())
}

async fn per_request_node(
    tc: &TestCluster,
    scale: Scale,
    runtime_p50: Duration,
    runtime_rate_8: f64,
    report: &mut Report,
) -> Result<()> {
    println!("per request, node");
    create_namespace(&tc.cluster, "dispatch").await?;
    tc.cluster.create(resource("v1", "Pod"), Some("dispatch"), &hello_pod("hello", "dispatch")).await?;
    wait_pods(&tc.cluster, "dispatch", &["hello"]).await?;
    for _ in 0..200 {
        dispatch_call(&tc.node, "dispatch", "hello").await?;
    }
    let node = &tc.node;
    let (latencies, rate) =
        run_sequential(scale.sequential_requests, || dispatch_call(node, "dispatch", "hello")).await?;
    let p50 = percentile(&latencies, 0.5);
    report.row(
        "hello-http per request, Node::dispatch, sequential",
        latency_figure(&latencies, rate),
        format!("runtime directly p50 {}", us(runtime_p50)),
        p50.as_secs_f64() / runtime_p50.as_secs_f64().max(1e-9),
    );
    let node = tc.node.clone();
    let (latencies, rate) = run_for(8, scale.load_time, move || {
        let node = node.clone();
        async move { dispatch_call(&node, "dispatch", "hello").await }
    })
    .await?;
    report.row(
        "hello-http, Node::dispatch, 8 tasks",
        latency_figure(&latencies, rate),
        format!("runtime directly {runtime_rate_8:.0} req/s"),
        rate / runtime_rate_8.max(1e-9),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// CPU quota.

async fn cpu_quota(tc: &TestCluster, scale: Scale, report: &mut Report) -> Result<()> {
    println!("CPU quota");
    let cluster = &tc.cluster;
    create_namespace(cluster, "quota").await?;
    let mut limited = hello_pod("limited", "quota");
    limited["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    cluster.create(resource("v1", "Pod"), Some("quota"), &limited).await?;
    cluster.create(resource("v1", "Pod"), Some("quota"), &hello_pod("unlimited", "quota")).await?;
    wait_pods(cluster, "quota", &["limited", "unlimited"]).await?;
    let load = |pod: &'static str| {
        let node = tc.node.clone();
        run_for(8, scale.load_time, move || {
            let node = node.clone();
            async move { dispatch_call(&node, "quota", pod).await }
        })
    };
    // Warm both, then alternate so that drift in the machine's load hits both alike.
    for pod in ["limited", "unlimited"] {
        for _ in 0..200 {
            dispatch_call(&tc.node, "quota", pod).await?;
        }
    }
    let (mut with_limit, mut without_limit) = (Vec::new(), Vec::new());
    for round in 0..scale.quota_rounds {
        // ABBA: neither pod always goes first.
        if round % 2 == 0 {
            with_limit.push(load("limited").await?.1);
            without_limit.push(load("unlimited").await?.1);
        } else {
            without_limit.push(load("unlimited").await?.1);
            with_limit.push(load("limited").await?.1);
        }
    }
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let (with_limit, without_limit) = (mean(&with_limit), mean(&without_limit));
    let ratio = with_limit / without_limit.max(1e-9);
    report.row(
        "hello-http with limits.cpu \"2\", Node::dispatch, 8 tasks",
        format!("{with_limit:.0} req/s"),
        format!("no CPU limit {without_limit:.0} req/s"),
        ratio,
    );
    report.target(format!("CPU quota throughput {ratio:.2}× ≥ 0.9×"), ratio >= QUOTA_TARGET_RATIO);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Density, in a child process.

/// What a density child puts in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Density {
    /// Pods that run: hello-http, bound to the node, Ready.
    Run,
    /// The same number of pods stored but never scheduled (a `schedulerName` nobody
    /// serves): what the API server, the store and the informers alone keep.
    Store,
    /// No cluster: as many `HttpPod`s made by the runtime directly, what wasmtime and
    /// the runtime alone keep per pod.
    Runtime,
}

impl Density {
    fn arg(self) -> &'static str {
        match self {
            Density::Run => "run",
            Density::Store => "store",
            Density::Runtime => "runtime",
        }
    }
}

fn unscheduled_pod(name: &str, namespace: &str) -> Value {
    let mut pod = hello_pod(name, namespace);
    pod["spec"]["schedulerName"] = json!("bench-nobody");
    pod
}

/// The runtime-only child: a runtime with hello-http loaded, its RSS, `count` pods, its RSS.
async fn density_runtime_child(count: usize) -> Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default()).context("starting the wasm runtime")?;
    let path = flotilla_examples::path("hello-http").context("no hello-http example")?;
    let image = runtime.load_file(std::path::Path::new(path))?;
    let (baseline, _) = resident_memory()?;
    let started = Instant::now();
    let mut pods = Vec::with_capacity(count);
    for i in 0..count {
        let spec = PodSpec { name: format!("idle-{i:05}"), ..PodSpec::default() };
        pods.push(runtime.http_pod(&image, spec, LogBuffer::new(64 << 10))?);
    }
    let took = started.elapsed().as_secs_f64();
    let (rss, peak) = resident_memory()?;
    let last = pods.last().context("no pods")?;
    runtime_call(last).await?;
    let result = json!({"baseline": baseline, "rss": rss, "peak": peak, "secs": took, "store": 0});
    println!("{DENSITY_RESULT}{result}");
    Ok(())
}

/// The child's side: a fresh cluster, its RSS with no pods, `count` pods, its RSS.
async fn density_child(count: usize, mode: Density) -> Result<()> {
    if mode == Density::Runtime {
        return density_runtime_child(count).await;
    }
    let tc = start_cluster().await?;
    // Let the node's first status writes and the informers settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (baseline, _) = resident_memory()?;
    create_namespace(&tc.cluster, "density").await?;
    let ready_secs = match mode {
        Density::Run => {
            let round = start_pods(&tc.cluster, "density", "idle", count).await?;
            eprintln!("  density child: {count} pods: {}", describe(&round));
            round.total.as_secs_f64()
        }
        Density::Runtime => bail!("the runtime-only child has no cluster"),
        Density::Store => {
            let (_, took) = create_all(&tc.cluster, "Pod", "density", count, unscheduled_pod, "stored").await?;
            took.as_secs_f64()
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, peak) = resident_memory()?;
    // How big one pod object is, as JSON (the informers keep each as a `Value` tree).
    let name = match mode {
        Density::Run => "idle-00000",
        _ => "stored-00000",
    };
    let object = tc.cluster.get(resource("v1", "Pod"), Some("density"), name).await?;
    let object_bytes = serde_json::to_vec(&object)?.len();
    if mode == Density::Run {
        let running = tc.node.running_pods();
        anyhow::ensure!(running >= count, "the node runs {running} pods, not {count}");
        // They are alive: the last one answers.
        dispatch_call(&tc.node, "density", &format!("idle-{:05}", count - 1)).await?;
    }
    let store = std::fs::metadata(tc.dir.path().join("store.redb")).map(|m| m.len()).unwrap_or(0);
    let result = json!({"baseline": baseline, "rss": rss, "peak": peak, "secs": ready_secs, "store": store,
        "object": object_bytes});
    println!("{DENSITY_RESULT}{result}");
    Ok(())
}

/// What a density child measured.
struct DensityResult {
    baseline: u64,
    rss: u64,
    peak: u64,
    /// Until all were Ready (`Run`) or created (`Store`).
    took: Duration,
    /// The size of the store's file (redb caches its pages in memory, up to 1 GiB).
    store: u64,
    /// One pod object's size as JSON.
    object: u64,
}

/// Runs a density child and reads its result.
fn density_run(count: usize, mode: Density) -> Result<DensityResult> {
    let exe = std::env::current_exe().context("finding the bench's own binary")?;
    let output = std::process::Command::new(&exe)
        .args([DENSITY_CHILD, &count.to_string(), mode.arg()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the density child failed ({}): {stdout}", output.status);
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(DENSITY_RESULT))
        .with_context(|| format!("the density child printed no result: {stdout}"))?;
    let result: Value = serde_json::from_str(line)?;
    let field = |name: &str| result[name].as_u64().with_context(|| format!("density result without {name}: {line}"));
    Ok(DensityResult {
        baseline: field("baseline")?,
        rss: field("rss")?,
        peak: field("peak")?,
        took: Duration::from_secs_f64(result["secs"].as_f64().unwrap_or_default()),
        store: result["store"].as_u64().unwrap_or_default(),
        object: result["object"].as_u64().unwrap_or_default(),
    })
}

fn density(scale: Scale, report: &mut Report) -> Result<()> {
    let n = scale.density_pods;
    println!("density ({n} pods, in child processes)");
    let run = density_run(n, Density::Run)?;
    let stored = density_run(n, Density::Store)?;
    let bare = density_run(n, Density::Runtime)?;
    let per_pod = |r: &DensityResult| r.rss.saturating_sub(r.baseline) as f64 / n as f64 / 1024.0;
    report.row(
        format!("density: {n} idle hello-http pods, one node"),
        format!(
            "RSS {} (peak {}), {:.1} KiB a pod; all Ready in {}; store file {}; a pod object {} B of JSON",
            mib(run.rss),
            mib(run.peak),
            per_pod(&run),
            secs(run.took),
            mib(run.store),
            run.object
        ),
        format!("cluster with no pods {}", mib(run.baseline)),
        run.rss as f64 / run.baseline.max(1) as f64,
    );
    report.row(
        format!("density: {n} pods stored, never scheduled"),
        format!(
            "RSS {}, {:.1} KiB a pod (created in {}); store file {}; a pod object {} B of JSON",
            mib(stored.rss),
            per_pod(&stored),
            secs(stored.took),
            mib(stored.store),
            stored.object
        ),
        format!("{n} running: {:.1} KiB a pod", per_pod(&run)),
        per_pod(&stored) / per_pod(&run).max(1e-9),
    );
    report.row(
        format!("density: {n} HttpPods from the runtime alone"),
        format!("RSS {}, {:.1} KiB a pod (made in {})", mib(bare.rss), per_pod(&bare), secs(bare.took)),
        format!("{n} running: {:.1} KiB a pod", per_pod(&run)),
        per_pod(&bare) / per_pod(&run).max(1e-9),
    );
    report.target(format!("{n} idle pods fit in 2 GB (RSS {})", mib(run.rss)), run.rss <= DENSITY_TARGET_BYTES);
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `--quick` (or FLOTILLA_BENCH_QUICK) shrinks the run.
    let args: Vec<String> = std::env::args().collect();
    // The components' logs, as `flotilla server` shows them, when FLOTILLA_LOG asks
    // (e.g. `FLOTILLA_LOG=flotilla_client=debug` shows informers listing again).
    if let Ok(filter) = std::env::var("FLOTILLA_LOG") {
        let filter =
            tracing_subscriber::EnvFilter::try_new(&filter).with_context(|| format!("FLOTILLA_LOG={filter}"))?;
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(at) = args.iter().position(|a| a == DENSITY_CHILD) {
        let count = args.get(at + 1).map(String::as_str).unwrap_or_default();
        let count: usize = count.parse().with_context(|| format!("{DENSITY_CHILD} {count:?}: not a count"))?;
        anyhow::ensure!(count > 0, "{DENSITY_CHILD} needs at least one pod");
        let mode = match args.get(at + 2).map(String::as_str) {
            Some("run") => Density::Run,
            Some("store") => Density::Store,
            Some("runtime") => Density::Runtime,
            other => bail!("{DENSITY_CHILD} {count} {other:?}: want run, store or runtime"),
        };
        return runtime.block_on(density_child(count, mode));
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("FLOTILLA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let scale = if quick { QUICK } else { FULL };
    // `--only SECTION` runs one part: density, requests, start or quota.
    let only = args.iter().position(|a| a == "--only").map(|at| args.get(at + 1).cloned().unwrap_or_default());
    if let Some(section) = &only {
        anyhow::ensure!(
            ["density", "requests", "start", "quota"].contains(&section.as_str()),
            "--only {section:?}: want density, requests, start or quota"
        );
    }
    let wants = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let started = Instant::now();
    let mut report = Report::default();
    // Density first, while nothing else of this bench runs.
    if wants("density") {
        density(scale, &mut report)?;
    }
    runtime.block_on(async {
        let runtime_figures = match wants("requests") {
            true => Some(per_request_runtime(scale, &mut report).await?),
            false => None,
        };
        if !(wants("start") || wants("requests") || wants("quota")) {
            return Ok(());
        }
        let tc = start_cluster().await?;
        if wants("start") {
            pod_start(&tc, scale, &mut report).await?;
        }
        if let Some((runtime_p50, runtime_rate_8)) = runtime_figures {
            per_request_node(&tc, scale, runtime_p50, runtime_rate_8, &mut report).await?;
        }
        if wants("quota") {
            cpu_quota(&tc, scale, &mut report).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    println!();
    println!("{} run, {:.0} s", if quick { "quick" } else { "full" }, started.elapsed().as_secs_f64());
    report.print();
    Ok(())
}
