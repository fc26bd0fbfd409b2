//! Ingress bench: `hello-http` served through Flotilla's Ingress → Service → 2 replicas,
//! against `wasmtime serve` running the same component, under the same load generator
//! (`wrk`) in the same run with the same connection count; and the usual two-hop set-up,
//! nginx proxying to `wasmtime serve` (upstream keepalive), that Flotilla should beat.
//!
//! Run: `cargo bench -p flotilla --bench ingress` (3 rounds of 10 s a side at 32 and 128
//! connections, about 4 minutes once built). Quick mode (one 3 s round at 32
//! connections): `cargo bench -p flotilla --bench ingress -- --quick`, or
//! `FLOTILLA_BENCH_QUICK=1`. `-- --connections 1,32` picks the connection counts.
//!
//! Needs what `benches/setup.sh` installs: wasmtime-cli 48 at
//! `target/bench-tools/bin/wasmtime` (or `$FLOTILLA_BENCH_WASMTIME`), and `wrk` and
//! `nginx` (Debian packages; nginx runs as this user's child with a generated config).
//!
//! The three sides, all on loopback, all given `Host: bench.local`:
//! - flotilla: the release `flotilla server` as a child process (`testkit::ServerProcess`,
//!   ephemeral Ingress ports), a Deployment of 2 `hello-http` replicas without CPU limits,
//!   a Service and an Ingress for `bench.local`; load goes to the Ingress's HTTP listener.
//! - wasmtime serve: `wasmtime serve -S cli --env GREETING=… --env POD_NAME=…` on the
//!   same `hello_http.wasm` (`flotilla_examples::HELLO_HTTP`), with one of Flotilla's pod
//!   names as POD_NAME, so both answer the same body.
//! - nginx → wasmtime serve: nginx (`worker_processes auto`, keepalive to the client and
//!   to the upstream) proxying to that same `wasmtime serve`.
//!
//! Each connection count first warms every side up, then runs the rounds interleaved,
//! the order reversed every other round (F W N, N W F, F W N), so drift on a shared
//! 2-core machine falls on all sides alike; the figures are the medians of the rounds'
//! requests/s, p50 and p99 (wrk's `--latency` distribution). wrk competes for the same
//! 2 cores as the server on every side. Targets from the "Services and Ingress" issue:
//! flotilla ≥ 0.9× wasmtime serve's throughput and p99 ≤ 1.2× its p99. Any socket error
//! or non-2xx answer wrk reports is counted and shown in the table.
//!
//! Then, on the same server: a rolling update of the 2 replicas while wrk sends load
//! through the Ingress (failed requests counted; target 0), and scale from zero: a second
//! Deployment (`flotilla.dev/scale-to-zero`) at zero replicas with no pod left, one `GET`
//! through the Ingress timed to its 200 (10 rounds, 3 in quick mode; target under 10 ms),
//! against the same `GET` once it is warm.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/report.rs"]
mod report;

use anyhow::{Context as _, Result, bail, ensure};
use flotilla::client::Client;
use flotilla::testkit::ServerProcess;
use report::Report;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Ingress rule's host; every side gets it as the `Host` header.
const HOST: &str = "bench.local";
const GREETING: &str = "Hello from Flotilla";
const REPLICAS: usize = 2;
/// How long the Deployment, `wasmtime serve` or nginx may take to answer.
const READY_LIMIT: Duration = Duration::from_secs(60);
const THROUGHPUT_TARGET: f64 = 0.9;
const P99_TARGET: f64 = 1.2;

/// How big a run is.
struct Scale {
    rounds: usize,
    seconds: u32,
    warmup_seconds: u32,
    connections: Vec<u32>,
    /// Scale-from-zero rounds.
    cold_rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Flotilla,
    Wasmtime,
    Nginx,
}

impl Side {
    const ALL: [Side; 3] = [Side::Flotilla, Side::Wasmtime, Side::Nginx];

    fn name(self) -> &'static str {
        match self {
            Side::Flotilla => "flotilla",
            Side::Wasmtime => "wasmtime serve",
            Side::Nginx => "nginx → wasmtime serve",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one wrk run reported.
#[derive(Debug, Clone)]
struct Wrk {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    requests: u64,
    bytes_read: f64,
    socket_errors: u64,
    non_2xx: u64,
}

/// One side's rounds at one connection count.
#[derive(Default)]
struct Rounds(Vec<Wrk>);

impl Rounds {
    fn rate(&self) -> f64 {
        median(self.0.iter().map(|w| w.requests_per_sec).collect())
    }
    fn p50(&self) -> Duration {
        Duration::from_secs_f64(median(self.0.iter().map(|w| w.p50.as_secs_f64()).collect()))
    }
    fn p99(&self) -> Duration {
        Duration::from_secs_f64(median(self.0.iter().map(|w| w.p99.as_secs_f64()).collect()))
    }
    fn errors(&self) -> (u64, u64) {
        (self.0.iter().map(|w| w.socket_errors).sum(), self.0.iter().map(|w| w.non_2xx).sum())
    }
    fn errors_text(&self) -> String {
        match self.errors() {
            (0, 0) => "no errors".to_string(),
            (socket, non_2xx) => format!("{socket} socket errors, {non_2xx} non-2xx"),
        }
    }
    fn bytes_per_response(&self) -> f64 {
        let (bytes, requests) = self.0.iter().fold((0.0, 0u64), |(b, r), w| (b + w.bytes_read, r + w.requests));
        bytes / requests.max(1) as f64
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /` with `Host: host` on a fresh connection: (status, body). Enough HTTP/1.1 to
/// check that a side answers and which pod did.
fn get(addr: SocketAddr, host: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The pod that answered, from hello-http's `GREETING from POD` (chunked framing or not).
fn answering_pod(body: &str) -> Option<String> {
    let after = body.rsplit(" from ").next()?;
    after.lines().next().map(|pod| pod.trim().to_string()).filter(|pod| !pod.is_empty())
}

/// Waits until `addr` answers `GET /` with 200; returns the body.
fn wait_answering(what: &str, addr: SocketAddr) -> Result<String> {
    let start = Instant::now();
    loop {
        let last = match get(addr, HOST) {
            Ok((200, body)) => return Ok(body),
            other => other,
        };
        if start.elapsed() > READY_LIMIT {
            bail!("{what} at {addr} did not answer 200 within {READY_LIMIT:?}: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                // No resources: no CPU limit (the quota's clock is not what this measures).
                "spec": {"containers": [{"name": "web", "image": "hello-http",
                    "env": [{"name": "GREETING", "value": GREETING}]}]}}},
    })
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn ingress() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

/// Starts `flotilla server`, creates the Deployment, Service and Ingress, and waits until
/// both replicas answer through the Ingress. Returns the server, the Ingress address and
/// the pods' names.
fn start_flotilla(data_dir: &Path) -> Result<(ServerProcess, SocketAddr, Vec<String>)> {
    let server = ServerProcess::spawn(Path::new(env!("CARGO_BIN_EXE_flotilla")), data_dir, &[])?;
    let addr = server.ingress_http.context("the server reported no HTTP Ingress listener")?;
    let client = Client::from_kubeconfig(&server.kubeconfig)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        for (path, object) in [
            ("/apis/apps/v1/namespaces/default/deployments", deployment()),
            ("/api/v1/namespaces/default/services", service()),
            ("/apis/networking.k8s.io/v1/namespaces/default/ingresses", ingress()),
        ] {
            client.post_json(path, &object).await?.ok().with_context(|| format!("creating {path}"))?;
        }
        anyhow::Ok(())
    })?;
    let start = Instant::now();
    let mut pods = HashSet::new();
    loop {
        match get(addr, HOST) {
            Ok((200, body)) => pods.extend(answering_pod(&body)),
            Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        if pods.len() >= REPLICAS {
            break;
        }
        if start.elapsed() > READY_LIMIT {
            bail!("only {pods:?} answered through the Ingress within {READY_LIMIT:?}");
        }
    }
    let mut pods: Vec<String> = pods.into_iter().collect();
    pods.sort();
    Ok((server, addr, pods))
}

/// The wasmtime-cli 48 that `benches/setup.sh` installs.
fn wasmtime_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("FLOTILLA_BENCH_WASMTIME") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-tools/bin/wasmtime"),
    };
    ensure!(
        path.is_file(),
        "no wasmtime at {}: run benches/setup.sh first (it installs wasmtime-cli 48 there, and wrk and nginx)",
        path.display()
    );
    Ok(path)
}

/// Starts `wasmtime serve` on a loopback ephemeral port. It says where it serves on
/// stderr, then logs there a line per connection wrk cuts at the end of a run: all of it
/// goes on to `log`.
fn start_wasmtime(binary: &Path, pod_name: &str, log: &Path) -> Result<(Killed, SocketAddr)> {
    let mut log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(binary)
        .args(["serve", "-S", "cli", "--addr", "127.0.0.1:0", "--env"])
        .arg(format!("GREETING={GREETING}"))
        .arg("--env")
        .arg(format!("POD_NAME={pod_name}"))
        .arg(flotilla_examples::HELLO_HTTP)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} serve", binary.display()))?;
    let stderr = child.stderr.take().context("wasmtime serve has no stderr")?;
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("Serving HTTP on http://") {
                let _ = tx.send(addr.trim_end_matches('/').to_string());
            }
            let _ = writeln!(log_file, "{line}");
        }
    });
    let Ok(addr) = rx.recv_timeout(READY_LIMIT) else {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        bail!("wasmtime serve did not say where it serves within {READY_LIMIT:?}; its stderr: {log}");
    };
    let addr: SocketAddr = addr.parse().with_context(|| format!("wasmtime serve's address {addr:?}"))?;
    Ok((child, addr))
}

fn find_on_path(name: &str, fallback: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain([PathBuf::from(fallback)])
        .find(|candidate| candidate.is_file())
}

/// A free loopback port for nginx (which cannot report an ephemeral one).
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts nginx in `dir` (config, pid file, logs, temp paths all there), proxying to
/// `upstream` with keepalive connections; returns where it listens.
fn start_nginx(dir: &Path, upstream: SocketAddr) -> Result<(Killed, SocketAddr)> {
    let binary = find_on_path("nginx", "/usr/sbin/nginx")
        .context("no nginx on PATH nor /usr/sbin/nginx: run benches/setup.sh first")?;
    let listen = free_port()?;
    let d = dir.display();
    // Tuned as one would in production for this: a worker per core, no access log,
    // long-lived client connections and a pool of keepalive connections upstream.
    let config = format!(
        "worker_processes auto;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream wasmtime {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://wasmtime;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
        }}
    }}
}}
"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
    let log = std::fs::File::create(dir.join("stderr.log"))?;
    let child = Command::new(&binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let child = Killed(child);
    if let Err(e) = wait_answering("nginx", listen) {
        let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        bail!("{e:#}; nginx said: {stderr}{errors}");
    }
    Ok((child, listen))
}

/// `4.51ms`, `812.00us`, `1.02s`, `2.00m` (wrk's units).
fn parse_duration(text: &str) -> Result<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("not a number in {text:?}"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// `2.98MB` (wrk's units, powers of 1024).
fn parse_bytes(text: &str) -> Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("not a number in {text:?}"))?;
    let scale = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(number * scale)
}

fn parse_wrk(output: &str) -> Result<Wrk> {
    let (mut rate, mut p50, mut p99, mut totals) = (None, None, None, None);
    let (mut socket_errors, mut non_2xx) = (0, 0);
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
        } else if in_distribution && let Some((percent, value)) = line.split_once(char::is_whitespace) {
            match percent {
                "50%" => p50 = Some(parse_duration(value.trim())?),
                "99%" => p99 = Some(parse_duration(value.trim())?),
                "75%" | "90%" => {}
                _ => in_distribution = false,
            }
        }
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rate = Some(value.trim().parse::<f64>().with_context(|| format!("{line:?}"))?);
        } else if let Some(counts) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            for part in counts.split(',') {
                let count = part.split_whitespace().last().and_then(|n| n.parse::<u64>().ok());
                socket_errors += count.with_context(|| format!("{line:?}"))?;
            }
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = count.trim().parse().with_context(|| format!("{line:?}"))?;
        } else if let Some((requests, rest)) = line.split_once(" requests in ") {
            // `20797 requests in 3.00s, 2.98MB read`
            let bytes = rest.split(", ").nth(1).and_then(|b| b.strip_suffix(" read"));
            let bytes = parse_bytes(bytes.with_context(|| format!("{line:?}"))?)?;
            totals = Some((requests.parse::<u64>().with_context(|| format!("{line:?}"))?, bytes));
        }
    }
    let missing = |what: &str| format!("no {what} in wrk's output:\n{output}");
    let (requests, bytes_read) = totals.with_context(|| missing("request count"))?;
    Ok(Wrk {
        requests_per_sec: rate.with_context(|| missing("Requests/sec"))?,
        p50: p50.with_context(|| missing("50%"))?,
        p99: p99.with_context(|| missing("99%"))?,
        requests,
        bytes_read,
        socket_errors,
        non_2xx,
    })
}

/// `wrk -t2 -cN -dSs --latency -H 'Host: bench.local' http://ADDR/`.
fn wrk(addr: SocketAddr, connections: u32, seconds: u32) -> Result<Wrk> {
    let threads = connections.clamp(1, 2);
    let output = Command::new("wrk")
        .args([format!("-t{threads}"), format!("-c{connections}"), format!("-d{seconds}s")])
        .args(["--latency", "-H", &format!("Host: {HOST}"), &format!("http://{addr}/")])
        .stdin(Stdio::null())
        .output()
        .context("running wrk (not installed? run benches/setup.sh)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&stdout)
}

fn describe(w: &Wrk) -> String {
    let errors = match (w.socket_errors, w.non_2xx) {
        (0, 0) => String::new(),
        (s, n) => format!(", {s} socket errors, {n} non-2xx"),
    };
    format!("{:.0} req/s p50 {} p99 {}{errors}", w.requests_per_sec, ms(w.p50), ms(w.p99))
}

/// The rows and targets of one connection count.
fn report_connections(report: &mut Report, c: u32, rounds: &[Rounds; 3]) {
    let [flotilla, wasmtime, nginx] = rounds;
    let rate = |r: &Rounds| format!("{:.0} req/s, {}", r.rate(), r.errors_text());
    let latency = |r: &Rounds| format!("p50 {} p99 {}", ms(r.p50()), ms(r.p99()));
    let pairs = [
        ("flotilla Ingress → Service → 2 pods", flotilla, "wasmtime serve", wasmtime),
        ("nginx → wasmtime serve", nginx, "wasmtime serve", wasmtime),
        ("flotilla vs nginx → wasmtime serve", flotilla, "nginx → wasmtime serve", nginx),
    ];
    for (what, figure, base_name, base) in pairs {
        let rate_ratio = figure.rate() / base.rate().max(1e-9);
        report.row(
            format!("{what}, {c} conns, throughput"),
            rate(figure),
            format!("{base_name} {}", rate(base)),
            rate_ratio,
        );
        let p99_ratio = figure.p99().as_secs_f64() / base.p99().as_secs_f64().max(1e-9);
        report.row(
            format!("{what}, {c} conns, latency (ratio of p99)"),
            latency(figure),
            format!("{base_name} {}", latency(base)),
            p99_ratio,
        );
    }
    let throughput = flotilla.rate() / wasmtime.rate().max(1e-9);
    let p99 = flotilla.p99().as_secs_f64() / wasmtime.p99().as_secs_f64().max(1e-9);
    report.target(
        format!("{c} connections: flotilla ≥ {THROUGHPUT_TARGET}× wasmtime serve's throughput ({throughput:.2}×)"),
        throughput >= THROUGHPUT_TARGET,
    );
    report.target(
        format!("{c} connections: flotilla p99 ≤ {P99_TARGET}× wasmtime serve's ({p99:.2}×)"),
        p99 <= P99_TARGET,
    );
    let errors: Vec<String> = Side::ALL
        .iter()
        .zip(rounds)
        .filter(|(_, r)| r.errors() != (0, 0))
        .map(|(side, r)| format!("{} {}", side.name(), r.errors_text()))
        .collect();
    report.target(
        format!(
            "{c} connections: no socket error nor non-2xx answer on any side{}",
            if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
        ),
        errors.is_empty(),
    );
}

/// The Ingress host of the Deployment that sleeps at zero.
const COLD_HOST: &str = "cold.local";
const COLD_TARGET: Duration = Duration::from_millis(10);

/// hello-http at zero replicas, marked to be woken by its first request, with its
/// Service and an Ingress for [`COLD_HOST`].
fn cold_objects() -> [(&'static str, Value); 3] {
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cold", "namespace": "default", "annotations": {"flotilla.dev/scale-to-zero": "true"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "cold"}},
            "template": {"metadata": {"labels": {"app": "cold"}},
                "spec": {"containers": [{"name": "web", "image": "hello-http",
                    "env": [{"name": "GREETING", "value": GREETING}]}]}}},
    });
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cold", "namespace": "default"},
        "spec": {"selector": {"app": "cold"}, "ports": [{"port": 80, "targetPort": 8080}]}});
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "cold", "namespace": "default"},
        "spec": {"rules": [{"host": COLD_HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "cold", "port": {"number": 80}}}}]}}]}});
    [
        ("/apis/apps/v1/namespaces/default/deployments", deployment),
        ("/api/v1/namespaces/default/services", service),
        ("/apis/networking.k8s.io/v1/namespaces/default/ingresses", ingress),
    ]
}

/// Polls `check` every 20 ms until it answers true, for at most [`READY_LIMIT`].
async fn until(what: &str, mut check: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !check().await? {
        ensure!(start.elapsed() < READY_LIMIT, "{what}: not within {READY_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Scale from zero: the Deployment sits at zero with no pod left; one `GET` through the
/// Ingress on a fresh connection is timed until its 200 (the proxy scales the Deployment
/// to one, a pod is scheduled, started, Ready, and answers). The baseline is the same
/// `GET` to the same Deployment once it is up.
fn scale_from_zero(report: &mut Report, client: &Client, addr: SocketAddr, rounds: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut colds = Vec::new();
    for (path, object) in cold_objects() {
        runtime.block_on(client.post_json(path, &object))?.ok().with_context(|| format!("creating {path}"))?;
    }
    for round in 0..rounds {
        runtime.block_on(async {
            let scale = "/apis/apps/v1/namespaces/default/deployments/cold/scale";
            let zero = json!({"spec": {"replicas": 0}});
            client.patch(scale, "application/merge-patch+json", &zero).await?.ok()?;
            until("the cold Deployment's pods gone", async || {
                let pods = client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dcold").await?.ok()?;
                Ok(pods["items"].as_array().is_some_and(Vec::is_empty))
            })
            .await?;
            // No request may probe it (one would wake it): the API says when it is empty.
            until("the cold Deployment at zero, without endpoints", async || {
                let deployment = client.get("/apis/apps/v1/namespaces/default/deployments/cold").await?.ok()?;
                let slices = client
                    .get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dcold")
                    .await?
                    .ok()?;
                let no_endpoints = slices["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().all(|s| s["endpoints"].as_array().is_none_or(Vec::is_empty)));
                Ok(no_endpoints && deployment.pointer("/status/replicas").and_then(Value::as_u64).unwrap_or(0) == 0)
            })
            .await?;
            // The proxy's watch of the EndpointSlice lands within this.
            tokio::time::sleep(Duration::from_millis(200)).await;
            anyhow::Ok(())
        })?;
        let started = Instant::now();
        let (status, body) = get(addr, COLD_HOST)?;
        let cold = started.elapsed();
        ensure!(status == 200, "the first request to the cold Deployment: {status} {body}");
        println!("  round {} cold request: {}", round + 1, ms(cold));
        colds.push(cold.as_secs_f64());
    }
    let mut warms = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let (status, body) = get(addr, COLD_HOST)?;
        ensure!(status == 200, "a warm request: {status} {body}");
        warms.push(started.elapsed().as_secs_f64());
    }
    let (cold, warm) = (median(colds.clone()), median(warms));
    let worst = colds.iter().copied().fold(0.0, f64::max);
    report.row(
        format!("scale from zero: first request through the Ingress (median of {rounds})"),
        format!("{} (worst {})", ms(Duration::from_secs_f64(cold)), ms(Duration::from_secs_f64(worst))),
        format!("the same request warm {}", ms(Duration::from_secs_f64(warm))),
        cold / warm.max(1e-9),
    );
    report.target(
        format!(
            "scale from zero: cold request under {} ms ({})",
            COLD_TARGET.as_millis(),
            ms(Duration::from_secs_f64(cold))
        ),
        Duration::from_secs_f64(cold) < COLD_TARGET,
    );
    Ok(())
}

/// A rolling update of the `web` Deployment while wrk sends load through the Ingress:
/// every failed request (socket error or non-2xx) is counted. The baseline is the
/// steady-state throughput at the same connection count, measured before.
fn rolling_update_under_load(
    report: &mut Report,
    client: &Client,
    addr: SocketAddr,
    connections: u32,
    seconds: u32,
    steady: f64,
) -> Result<()> {
    let load = std::thread::spawn(move || wrk(addr, connections, seconds));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rollout = runtime.block_on(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let path = "/apis/apps/v1/namespaces/default/deployments/web";
        let restart = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": jiff::Timestamp::now().to_string()}}}}});
        let patched = client.patch(path, "application/merge-patch+json", &restart).await?.ok()?;
        let generation = patched["metadata"]["generation"].as_i64().unwrap_or_default();
        until("the rollout to finish", async || {
            let d = client.get(path).await?.ok()?;
            let status = &d["status"];
            let count = |field: &str| status[field].as_u64().unwrap_or_default();
            Ok(status["observedGeneration"].as_i64().unwrap_or_default() >= generation
                && count("updatedReplicas") == REPLICAS as u64
                && count("availableReplicas") == REPLICAS as u64
                && count("replicas") == REPLICAS as u64)
        })
        .await?;
        anyhow::Ok(started.elapsed())
    })?;
    let during = load.join().map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    let failed = during.socket_errors + during.non_2xx;
    report.row(
        format!("rolling update of {REPLICAS} replicas under load ({connections} conns, rollout {})", ms(rollout)),
        format!("{failed} failed of {} requests, {:.0} req/s", during.requests, during.requests_per_sec),
        format!("steady {steady:.0} req/s"),
        during.requests_per_sec / steady.max(1e-9),
    );
    report.target(format!("rolling update under load: 0 failed requests ({failed})"), failed == 0);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("FLOTILLA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut scale = if quick {
        Scale { rounds: 1, seconds: 3, warmup_seconds: 1, connections: vec![32], cold_rounds: 3 }
    } else {
        Scale { rounds: 3, seconds: 10, warmup_seconds: 3, connections: vec![32, 128], cold_rounds: 10 }
    };
    if let Some(at) = args.iter().position(|a| a == "--connections") {
        let list = args.get(at + 1).map(String::as_str).unwrap_or_default();
        scale.connections = list
            .split(',')
            .map(|c| c.trim().parse::<u32>().ok().filter(|&c| c > 0))
            .collect::<Option<Vec<u32>>>()
            .with_context(|| format!("--connections {list:?}: want counts like 1,32,128"))?;
    }
    // Everything this bench needs, before anything starts.
    let wasmtime_bin = wasmtime_binary()?;
    Command::new("wrk").arg("--version").output().context("no wrk on PATH: run benches/setup.sh first")?;
    let version = Command::new(&wasmtime_bin).arg("--version").output().context("running wasmtime --version")?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    ensure!(
        version.starts_with("wasmtime 48."),
        "{} is {version:?}, want wasmtime 48: run benches/setup.sh",
        wasmtime_bin.display()
    );

    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let (flotilla_dir, nginx_dir) = (dir.path().join("flotilla"), dir.path().join("nginx"));
    std::fs::create_dir_all(&flotilla_dir)?;
    std::fs::create_dir_all(&nginx_dir)?;
    let (server, flotilla_addr, pods) = start_flotilla(&flotilla_dir)?;
    let client = Client::from_kubeconfig(&server.kubeconfig)?;
    println!("flotilla: Ingress http://{flotilla_addr}/ (Host: {HOST}) → Service web → pods {}", pods.join(", "));
    let pod_name = pods.first().context("no pod answered")?;
    let (_wasmtime, wasmtime_addr) = start_wasmtime(&wasmtime_bin, pod_name, &dir.path().join("wasmtime.log"))?;
    let body = wait_answering("wasmtime serve", wasmtime_addr)?;
    println!("{version}: serve http://{wasmtime_addr}/ answers {body:?}");
    let (_nginx, nginx_addr) = start_nginx(&nginx_dir, wasmtime_addr)?;
    println!("nginx: http://{nginx_addr}/ → wasmtime serve (upstream keepalive)");
    let addr = |side: Side| match side {
        Side::Flotilla => flotilla_addr,
        Side::Wasmtime => wasmtime_addr,
        Side::Nginx => nginx_addr,
    };

    let mut report = Report::default();
    let mut sizes = Vec::new();
    let mut steady = Vec::new();
    for &c in &scale.connections {
        println!("{c} connections: warm-up {} s a side", scale.warmup_seconds);
        for side in Side::ALL {
            let warm = wrk(addr(side), c, scale.warmup_seconds)?;
            println!("  warm-up {}: {}", side.name(), describe(&warm));
        }
        let mut rounds: [Rounds; 3] = Default::default();
        for round in 0..scale.rounds {
            let mut order = Side::ALL;
            if round % 2 == 1 {
                order.reverse();
            }
            for side in order {
                let result = wrk(addr(side), c, scale.seconds)?;
                println!("  round {} {}: {}", round + 1, side.name(), describe(&result));
                rounds[side.index()].0.push(result);
            }
        }
        report_connections(&mut report, c, &rounds);
        steady.push(rounds[Side::Flotilla.index()].rate());
        sizes.push(
            Side::ALL
                .iter()
                .zip(&rounds)
                .map(|(side, r)| format!("{} {:.0} B", side.name(), r.bytes_per_response()))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    let (c, steady) = (scale.connections[0], steady[0]);
    println!("rolling update under load, {c} connections, {} s", scale.seconds.max(8));
    rolling_update_under_load(&mut report, &client, flotilla_addr, c, scale.seconds.max(8), steady)?;
    println!("scale from zero, {} rounds", scale.cold_rounds);
    scale_from_zero(&mut report, &client, flotilla_addr, scale.cold_rounds)?;

    println!();
    println!(
        "{} run, {} round(s) of {} s a side, {:.0} s; wrk -t2, bytes read per response: {}",
        if quick { "quick" } else { "full" },
        scale.rounds,
        scale.seconds,
        started.elapsed().as_secs_f64(),
        sizes.first().map(String::as_str).unwrap_or_default()
    );
    report.print();
    Ok(())
}
