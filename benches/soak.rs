//! Soak bench (issue 13): the release `flotilla server` under everything at once, then a
//! check that nothing acknowledged was lost, nothing panicked and resident memory is flat.
//!
//! Run: `cargo bench -p flotilla --bench soak` (10 minutes once built). Quick mode (60 s):
//! `-- --quick` or `FLOTILLA_BENCH_QUICK=1`; `-- --duration 300` sets the seconds. Needs
//! nothing but the build (no wrk, no nginx). Not in `benches/suite.sh` (too long).
//! `-- --skip ingress,churn,chaos,pods` leaves those parts out (to find what grows).
//!
//! The server starts on a fresh data directory with `manifests/hello` (3 `hello-http`
//! replicas behind an Ingress), `--crash-backoff 1s`, and in namespace `soak` a Deployment
//! of 3 `crasher` pods (exit 3 after 200 ms), one of 2 `logger` pods printing without
//! pause (`INTERVAL_MS=0`, 200m CPU) and one of `hello-http` to scale. Then, concurrently:
//! - API churn: 3 workers each own 40 ConfigMap names and create, update (`PUT` with the
//!   recorded `resourceVersion`) or delete them; a 2xx answer is an acknowledged write and
//!   is recorded. Each later write checks the record (409 or 404 where the record says
//!   present, AlreadyExists where it says deleted: a lost write); a request without an
//!   answer makes the name unknown until a `GET` reads it. A fourth worker scales the
//!   `churn` Deployment between 0 and 3 replicas every 2 s.
//! - Ingress load: 4 connections looping `GET /` (hyper client), answers counted by status.
//! - Chaos: every 2–5 s a random hello pod is deleted, every other time a crasher or logger
//!   pod too; the tail of a logger's log is read.
//! - At 60 % of the run the server is killed (`SIGKILL`) and started again on the same
//!   data directory and addresses.
//!
//! At the end every record is compared with what the server lists; "panicked at" is counted
//! in the server's stderr and `flotilla_task_panics_total` summed from `/metrics` when the
//! server has it. Resident memory (VmRSS, median over 5 s) is taken 10 % of the run after
//! each start and at the end. Targets: 0 acknowledged writes lost; 0 panics and no exit
//! but the planned one; the last process's RSS at the end ≤ 1.10× its level after warm-up.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/report.rs"]
mod report;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use flotilla::client::Client;
use http_body_util::Empty;
use hyper::StatusCode;
use hyper_util::client::legacy::{Client as HttpClient, connect::HttpConnector};
use report::Report;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST: &str = "hello.flotilla.local";
const NAMES_PER_WORKER: usize = 40;
const RSS_TARGET: f64 = 1.10;

/// A Deployment in namespace `soak` of `replicas` pods of `image`, labelled `app: NAME`.
fn deployment(name: &str, image: &str, replicas: u32, env: &[(&str, &str)], cpu: &str) -> Value {
    let env: Vec<Value> = env.iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "soak"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": image, "image": image, "env": env, "resources": {"limits": {"cpu": cpu}}}]}}}})
}

/// A `flotilla server` child; killed when dropped.
struct Server {
    child: Child,
    api: String,
    ingress: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on `data` (stderr appended to `stderr`) and waits for its
/// "listening on" line: `API (… ingress: http://ADDR …)`.
fn start_server(data: &Path, stderr: &Path, api: &str, http: &str, manifests: Option<&Path>) -> Result<Server> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(stderr)?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    command.args(["server", "--data-dir"]).arg(data);
    command.args(["--api-addr", api, "--http-addr", http, "--https-addr", "127.0.0.1:0", "--crash-backoff", "1s"]);
    if let Some(manifests) = manifests {
        command.arg("--manifests").arg(manifests);
    }
    let mut child = command
        .env("FLOTILLA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting flotilla server")?;
    let rx = flotilla::testkit::listening_line(child.stdout.take().context("the server has no stdout")?);
    let mut server = Server { child, api: String::new(), ingress: "0.0.0.0:0".parse()? };
    let line = rx.recv_timeout(Duration::from_secs(120)).context("the server did not start within 120 s")?;
    let word_after = |marker: &str| line.split(marker).nth(1).and_then(|rest| rest.split([' ', ')']).next());
    server.api = word_after("listening on ").with_context(|| format!("no API address in {line:?}"))?.to_string();
    server.ingress = word_after("ingress: http://")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no Ingress address in {line:?}"))?;
    Ok(server)
}

/// A small xorshift generator: the bench needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
        Rng((nanos as u64 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What a worker knows of one of its names.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Present {
        rv: String,
        seq: u64,
    },
    Absent,
    /// A request went unanswered (the restart): read it again before the next write.
    Unknown,
}

#[derive(Default, Debug)]
struct Tally {
    creates: u64,
    updates: u64,
    deletes: u64,
    lost: Vec<String>,
    unanswered: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        (self.creates, self.updates, self.deletes) =
            (self.creates + other.creates, self.updates + other.updates, self.deletes + other.deletes);
        self.unanswered += other.unanswered;
        self.lost.extend(other.lost);
    }
}

fn present(object: &Value) -> Known {
    let rv = object["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
    Known::Present { rv, seq: object["data"]["seq"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0) }
}

/// One ConfigMap churn worker: returns its tally and its final records.
async fn churn(client: Client, worker: usize, deadline: Instant) -> (Tally, Vec<(String, Known)>) {
    let mut rng = Rng::new(worker as u64);
    let mut names: Vec<(String, Known)> =
        (0..NAMES_PER_WORKER).map(|i| (format!("cm-{worker}-{i}"), Known::Absent)).collect();
    let mut tally = Tally::default();
    let base = "/api/v1/namespaces/soak/configmaps";
    let mut seq = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        seq += 1;
        let (name, known) = &mut names[rng.below(NAMES_PER_WORKER as u64) as usize];
        let path = format!("{base}/{name}");
        let object = |rv: Option<&str>| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "soak", "resourceVersion": rv},
                "data": {"seq": seq.to_string(), "filler": "x".repeat(200)}})
        };
        let (answer, what) = match known.clone() {
            Known::Unknown => (client.get(&path).await, "read"),
            Known::Absent => (client.post_json(base, &object(None)).await, "create"),
            Known::Present { .. } if rng.below(4) == 0 => (client.delete(&path).await, "delete"),
            Known::Present { rv, .. } => (client.put_json(&path, &object(Some(&rv))).await, "update"),
        };
        let Ok(response) = answer else {
            tally.unanswered += 1;
            *known = Known::Unknown;
            continue;
        };
        let status = response.status;
        let next = match (what, status) {
            ("read", StatusCode::OK) => response.json().map(|o| present(&o)).unwrap_or(Known::Unknown),
            ("read", StatusCode::NOT_FOUND) => Known::Absent,
            ("create", StatusCode::CREATED) | ("update", StatusCode::OK) => {
                *(if what == "create" { &mut tally.creates } else { &mut tally.updates }) += 1;
                response.json().map(|o| present(&o)).unwrap_or(Known::Unknown)
            }
            ("delete", StatusCode::OK | StatusCode::ACCEPTED) => {
                tally.deletes += 1;
                Known::Absent
            }
            ("create", StatusCode::CONFLICT) | ("update" | "delete", StatusCode::CONFLICT | StatusCode::NOT_FOUND) => {
                tally.lost.push(format!("{what} {name}: {status} where the record says {known:?}"));
                Known::Unknown
            }
            // 429, 5xx while the server goes down: not acknowledged, read it again.
            _ => Known::Unknown,
        };
        *known = next;
    }
    (tally, names)
}

/// Scales the `churn` Deployment between 0 and 3 replicas; the last acknowledged count.
async fn scaler(client: Client, deadline: Instant) -> (u64, Option<u64>) {
    let mut rng = Rng::new(99);
    let (mut acked, mut last) = (0, None);
    let path = "/apis/apps/v1/namespaces/soak/deployments/churn/scale";
    while Instant::now() < deadline {
        let replicas = rng.below(4);
        let patch = json!({"spec": {"replicas": replicas}});
        last = match client.patch(path, "application/merge-patch+json", &patch).await {
            Ok(r) if r.status.is_success() => {
                acked += 1;
                Some(replicas)
            }
            _ => None,
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    (acked, last)
}

/// Answers through the Ingress: by status, and `None` for no answer.
type Answers = BTreeMap<Option<u16>, u64>;
type Http = HttpClient<HttpConnector, Empty<Bytes>>;

fn http_client() -> Http {
    HttpClient::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// One `GET /` through the Ingress: its status once the body is read, `None` if none.
async fn get_once(http: &Http, ingress: SocketAddr) -> Option<u16> {
    let request = hyper::Request::get(format!("http://{ingress}/")).header("host", HOST).body(Empty::new()).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(10), http.request(request)).await.ok()?.ok()?;
    let status = response.status().as_u16();
    http_body_util::BodyExt::collect(response.into_body()).await.ok().map(|_| status)
}

async fn ingress_load(ingress: SocketAddr, deadline: Instant) -> Answers {
    let http = http_client();
    let mut answers = Answers::new();
    while Instant::now() < deadline {
        let status = get_once(&http, ingress).await;
        *answers.entry(status).or_default() += 1;
        if status.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    answers
}

/// The names of the pods in `namespace` with label `app`.
async fn pods(client: &Client, namespace: &str, app: &str) -> Vec<String> {
    let path = format!("/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{app}");
    let list = match client.get(&path).await.map(|r| r.ok()) {
        Ok(Ok(list)) => list,
        _ => return Vec::new(),
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string)).collect()
}

/// Deletes a random hello pod every 2–5 s, and a crasher or logger pod every other time;
/// reads the tail of a logger's log. Returns the deletions acknowledged.
async fn chaos(client: Client, deadline: Instant) -> u64 {
    let mut rng = Rng::new(7);
    let mut deleted = 0;
    let mut round = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(3000))).await;
        round += 1;
        let mut targets = vec![("hello", "hello")];
        if round.is_multiple_of(2) {
            targets.push(("soak", if round.is_multiple_of(4) { "crashers" } else { "floods" }));
        }
        for (namespace, app) in targets {
            let names = pods(&client, namespace, app).await;
            let Some(name) = names.get(rng.below(names.len() as u64) as usize) else { continue };
            let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
            if client.delete(&path).await.is_ok_and(|r| r.status.is_success()) {
                deleted += 1;
            }
        }
        if let Some(flood) = pods(&client, "soak", "floods").await.first() {
            let _ = client.get(&format!("/api/v1/namespaces/soak/pods/{flood}/log?tailLines=100")).await;
        }
    }
    deleted
}

/// The sum of `flotilla_task_panics_total` on `/metrics`, if the server has it.
async fn metric_panics(client: &Client) -> Option<f64> {
    let text = client.get("/metrics").await.ok().filter(|r| r.status.is_success())?.body;
    let text = String::from_utf8_lossy(&text);
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("flotilla_task_panics_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Polls the Ingress until it answers 200.
async fn until_ingress_answers(ingress: SocketAddr) -> Result<()> {
    let (http, started) = (http_client(), Instant::now());
    while get_once(&http, ingress).await != Some(200) {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the hello Ingress did not answer 200 within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// What the server holds at the end: the ConfigMaps of `soak`, the `churn` Deployment's
/// replicas, the restarts of the crasher pods alive, the bytes of a flooding logger's log,
/// and the panic metric.
async fn read_back(client: &Client) -> Result<(HashMap<String, Known>, Option<u64>, u64, usize, Option<f64>)> {
    let list = client.get("/api/v1/namespaces/soak/configmaps").await?.ok()?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let stored = items.iter().map(|o| (o["metadata"]["name"].as_str().unwrap_or("").to_string(), present(o))).collect();
    let deployment = client.get("/apis/apps/v1/namespaces/soak/deployments/churn").await?.ok()?;
    let crashers = client.get("/api/v1/namespaces/soak/pods?labelSelector=app%3Dcrashers").await?.ok()?;
    let crashers = crashers["items"].as_array().cloned().unwrap_or_default();
    let restarts =
        crashers.iter().filter_map(|p| p.pointer("/status/containerStatuses/0/restartCount")?.as_u64()).sum();
    let flood = pods(client, "soak", "floods").await.into_iter().next().unwrap_or_default();
    let log = client.get(&format!("/api/v1/namespaces/soak/pods/{flood}/log")).await?.body.len();
    Ok((stored, deployment["spec"]["replicas"].as_u64(), restarts, log, metric_panics(client).await))
}

/// "panicked at" lines in the server's stderr.
fn stderr_panics(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.matches("panicked at").count())
}

/// Sleeps until `until`, restarting the server (and counting it) if it exits on its own;
/// returns its resident memory then: the median of VmRSS sampled every 0.5 s over the last
/// 5 s (one sample is noisy with pods starting and stopping).
fn watch(
    server: &mut Server,
    until: Instant,
    exits: &mut u32,
    restart: &dyn Fn(&Server) -> Result<Server>,
) -> Result<f64> {
    let mut samples = Vec::new();
    loop {
        if server.child.try_wait()?.is_some() {
            *exits += 1;
            println!("  the server exited on its own; starting it again");
            *server = restart(server)?;
        }
        if until.saturating_duration_since(Instant::now()) <= Duration::from_secs(5) {
            let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))?;
            let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).context("no VmRSS")?;
            samples.push(kb.trim().trim_end_matches("kB").trim().parse::<f64>()? / 1024.0);
        }
        if Instant::now() >= until {
            samples.sort_by(f64::total_cmp);
            return Ok(samples[samples.len() / 2]);
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(500)));
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("FLOTILLA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let duration = match args.iter().position(|a| a == "--duration") {
        Some(at) => args.get(at + 1).and_then(|s| s.parse().ok()).filter(|&s: &u64| s >= 20),
        None => Some(if quick { 60 } else { 600 }),
    };
    let duration = Duration::from_secs(duration.context("--duration SECONDS: at least 20")?);
    let warmup = duration / 10;
    // `--skip ingress,churn,chaos,pods` leaves parts out, to find what grows.
    let skip = args.iter().position(|a| a == "--skip").and_then(|at| args.get(at + 1)).cloned().unwrap_or_default();
    let on = |part: &str| !skip.split(',').any(|p| p == part);
    let pods = u32::from(on("pods"));
    let dir = tempfile::tempdir()?;
    let (data, stderr) = (dir.path().join("data"), dir.path().join("server-stderr.log"));
    std::fs::create_dir_all(&data)?;
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/hello");
    let mut server = start_server(&data, &stderr, "127.0.0.1:0", "127.0.0.1:0", Some(&hello))?;
    // Restarts keep the addresses, as a real server's would.
    let restart = |old: &Server| start_server(&data, &stderr, &old.api.clone(), &old.ingress.to_string(), None);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let client = Client::from_kubeconfig(&data.join("kubeconfig"))?;
    runtime.block_on(async {
        let deployments = "/apis/apps/v1/namespaces/soak/deployments";
        for (path, object) in [
            ("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "soak"}})),
            (
                deployments,
                deployment("crashers", "crasher", 3 * pods, &[("CRASH_AFTER_MS", "200"), ("EXIT_CODE", "3")], "100m"),
            ),
            (deployments, deployment("floods", "logger", 2 * pods, &[("INTERVAL_MS", "0")], "200m")),
            (deployments, deployment("churn", "hello-http", 1, &[], "50m")),
        ] {
            client.post_json(path, &object).await?.ok().with_context(|| format!("creating {object}"))?;
        }
        until_ingress_answers(server.ingress).await
    })?;
    println!(
        "flotilla server (pid {}) API {}, Ingress http://{} (Host: {HOST}); soaking {} s",
        server.child.id(),
        server.api,
        server.ingress,
        duration.as_secs()
    );

    let started = Instant::now();
    let deadline = started + duration;
    // A part left out gets a deadline that has passed.
    let until = |part: &str| if on(part) { deadline } else { started };
    let workers: Vec<_> = (0..3).map(|w| runtime.spawn(churn(client.clone(), w, until("churn")))).collect();
    let scaler = runtime.spawn(scaler(client.clone(), until("churn")));
    let loads: Vec<_> = (0..4).map(|_| runtime.spawn(ingress_load(server.ingress, until("ingress")))).collect();
    let chaos = runtime.spawn(chaos(client.clone(), until("chaos")));

    let mut exits = 0;
    let first_warm = watch(&mut server, started + warmup, &mut exits, &restart)?;
    println!("  {:.0} s: warmed up, RSS {first_warm:.1} MiB", started.elapsed().as_secs_f64());
    let first_end = watch(&mut server, started + duration * 6 / 10, &mut exits, &restart)?;
    let first_metric = runtime.block_on(metric_panics(&client));
    server.child.kill()?;
    server.child.wait()?;
    let killed = Instant::now();
    server = restart(&server)?;
    println!(
        "  {:.0} s: killed (RSS {first_end:.1} MiB) and started again in {:.1} s (pid {})",
        killed.duration_since(started).as_secs_f64(),
        killed.elapsed().as_secs_f64(),
        server.child.id()
    );
    let warm = watch(&mut server, killed + warmup, &mut exits, &restart)?;
    println!("  {:.0} s: warmed up again, RSS {warm:.1} MiB", started.elapsed().as_secs_f64());
    let end = watch(&mut server, deadline, &mut exits, &restart)?;
    println!("  {:.0} s: end, RSS {end:.1} MiB", started.elapsed().as_secs_f64());

    let (mut tally, mut records, mut answers) = (Tally::default(), Vec::new(), Answers::new());
    let ((scaled, last_scale), deleted) = runtime.block_on(async {
        for worker in workers {
            let (t, r) = worker.await?;
            tally.add(t);
            records.extend(r);
        }
        for load in loads {
            for (status, n) in load.await? {
                *answers.entry(status).or_default() += n;
            }
        }
        anyhow::Ok((scaler.await?, chaos.await?))
    })?;
    let (stored, replicas, restarts, log, last_metric) = runtime.block_on(read_back(&client))?;

    // Every record against what the server holds now.
    let mut lost = tally.lost.clone();
    let mut unknown = 0;
    for (name, known) in &records {
        match (known, stored.get(name)) {
            (Known::Unknown, _) => unknown += 1,
            (Known::Absent, None) => {}
            (Known::Present { .. }, Some(now)) if now == known => {}
            (_, now) => lost.push(format!("{name}: recorded {known:?}, stored {now:?}")),
        }
    }
    if let Some(want) = last_scale.filter(|&want| replicas != Some(want)) {
        lost.push(format!("Deployment churn: scaled to {want} (acknowledged), stored {replicas:?}"));
    }
    for line in lost.iter().take(10) {
        println!("  LOST {line}");
    }
    let acked = tally.creates + tally.updates + tally.deletes + scaled;
    let logged = stderr_panics(&stderr);
    let metric = first_metric.zip(last_metric).map(|(a, b)| a + b);
    let panics = logged as f64 + metric.unwrap_or(0.0);
    let total: u64 = answers.values().sum();
    let ok: u64 = answers.iter().filter(|(s, _)| s.is_some_and(|s| (200..300).contains(&s))).map(|(_, n)| n).sum();
    let statuses: Vec<String> = answers
        .iter()
        .filter(|(s, _)| !s.is_some_and(|s| (200..300).contains(&s)))
        .map(|(s, n)| format!("{n}× {}", s.map_or("no answer".to_string(), |s| s.to_string())))
        .collect();

    let mut report = Report::default();
    report.row(
        "acknowledged writes lost",
        format!(
            "{} lost of {acked} ({} creates, {} updates, {} deletes, {scaled} scales)",
            lost.len(),
            tally.creates,
            tally.updates,
            tally.deletes
        ),
        format!("0 lost; {} unanswered requests, {unknown} names unknown at the end", tally.unanswered),
        lost.len() as f64 / acked.max(1) as f64,
    );
    report.row(
        "panics",
        format!(
            "{panics:.0} ({logged} \"panicked at\" in stderr, flotilla_task_panics_total {})",
            metric.map_or("absent".to_string(), |m| format!("{m:.0}"))
        ),
        format!("0; {exits} unplanned exits"),
        panics,
    );
    report.row(
        "Ingress requests (4 connections)",
        format!(
            "{ok} ok, {} errors ({})",
            total - ok,
            if statuses.is_empty() { "none".into() } else { statuses.join(", ") }
        ),
        format!("{total} sent; {deleted} pods deleted, {restarts} crasher restarts"),
        ok as f64 / total.max(1) as f64,
    );
    report.row(
        "log flood: one logger's log as the API serves it at the end",
        format!("{:.0} KiB", log as f64 / 1024.0),
        "the node's cap of 1024 KiB",
        log as f64 / 1024.0 / 1024.0,
    );
    report.row(
        "RSS of the first process, before its kill vs after warm-up",
        format!("{first_end:.1} MiB"),
        format!("{first_warm:.1} MiB at {} s", warmup.as_secs()),
        first_end / first_warm,
    );
    report.row(
        "RSS of the restarted process, at the end vs after warm-up",
        format!("{end:.1} MiB"),
        format!("{warm:.1} MiB {} s after the restart", warmup.as_secs()),
        end / warm,
    );
    report.target(format!("0 acknowledged writes lost ({})", lost.len()), lost.is_empty());
    report.target(format!("0 panics ({panics:.0}) and no unplanned exit ({exits})"), panics == 0.0 && exits == 0);
    report
        .target(format!("RSS at the end ≤ {RSS_TARGET}× after warm-up ({:.2}×)", end / warm), end / warm <= RSS_TARGET);
    println!();
    println!("{} run, {} s, restart at 60 %", if quick { "quick" } else { "full" }, duration.as_secs());
    report.print();
    Ok(())
}
