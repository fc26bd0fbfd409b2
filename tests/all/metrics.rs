//! `/metrics` end to end: a scrape taken under load passes `promtool check metrics`, and a
//! real Prometheus server (Debian's, installed by tests/setup.sh) scrapes the server over
//! TLS with the admin token and answers a query for a pod's request count.

use crate::support::{HttpClient, Server, eventually, repo_root};
use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const HOST: &str = "hello.flotilla.local";

/// The hello manifests (3 replicas behind an Ingress), serving.
async fn hello_cluster() -> Result<(Server, HttpClient)> {
    let manifests = repo_root().join("manifests/hello");
    let server = Server::start_with(&["--manifests", &manifests.to_string_lossy()])?;
    let http = HttpClient::new();
    let addr = server.ingress_http()?;
    http.get_until_ok(addr, HOST, "/", Duration::from_secs(60)).await?;
    Ok((server, http))
}

/// Requests through the Ingress, 4 at a time, until `stop` is set; answers how many.
fn load(http: &HttpClient, addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Result<u64>> {
    let http = http.clone();
    tokio::spawn(async move {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (http, stop) = (http.clone(), stop.clone());
            workers.spawn(async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = http.get(addr, HOST, "/").await?;
                    ensure!(status == 200, "{status}: {body}");
                    sent += 1;
                }
                anyhow::Ok(sent)
            });
        }
        let mut total = 0;
        while let Some(sent) = workers.join_next().await {
            total += sent??;
        }
        Ok(total)
    })
}

async fn scrape(server: &Server) -> Result<String> {
    let response = server.client.get("/metrics").await?;
    ensure!(response.status == 200, "/metrics answered {}", response.status);
    Ok(String::from_utf8(response.body.to_vec())?)
}

/// The value of the sample whose line starts with `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_scrape_under_load_passes_promtool_and_counts_what_happened() -> Result<()> {
    let (server, http) = hello_cluster().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = load(&http, server.ingress_http()?, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = scrape(&server).await?;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await??;
    ensure!(sent > 0, "no request went through");

    // Every component's families are there, counting what the cluster did.
    for family in [
        "apiserver_request_total",
        "apiserver_request_duration_seconds_bucket",
        "apiserver_registered_watchers",
        "flotilla_store_operations_total",
        "flotilla_store_commit_duration_seconds_bucket",
        "scheduler_schedule_attempts_total",
        "workqueue_depth",
        "controller_reconcile_total",
        "kubelet_pod_start_duration_seconds_bucket",
        "kubelet_running_pods",
        "flotilla_pod_cpu_seconds_total",
        "flotilla_pod_memory_bytes",
        "process_resident_memory_bytes",
    ] {
        ensure!(text.lines().any(|l| l.starts_with(family)), "no {family} in the scrape:\n{text}");
    }
    let running = sample(&text, "kubelet_running_pods").context("kubelet_running_pods")?;
    ensure!(running >= 3.0, "3 hello pods run, kubelet_running_pods says {running}");
    let served: f64 = text
        .lines()
        .filter(|l| l.starts_with("flotilla_pod_requests_total{") && l.contains("namespace=\"hello\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ensure!(served > 0.0, "the hello pods served requests, their counters say {served}:\n{text}");
    let created = sample(&text, "apiserver_request_total{code=\"201\",resource=\"deployments\",verb=\"CREATE\"}")
        .context("the manifests' Deployment create is counted")?;
    ensure!(created >= 1.0);

    // Prometheus' own linter accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (installed by tests/setup.sh)")?;
    promtool.stdin.take().context("promtool's stdin")?.write_all(text.as_bytes())?;
    let output = promtool.wait_with_output()?;
    ensure!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Without the token, /metrics is as closed as the rest of the API.
    let anonymous =
        flotilla::client::Client::new(&api_url(&server)?, None, Some(&std::fs::read(ca(&server))?), "default".into())?;
    assert_eq!(anonymous.get("/metrics").await?.status, 401);
    Ok(())
}

/// The API server's URL, from the kubeconfig it wrote.
fn api_url(server: &Server) -> Result<String> {
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig)?;
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_matches('"').to_string())
        .context("no server in the kubeconfig")
}

fn ca(server: &Server) -> std::path::PathBuf {
    server.data_dir().join("tls/ca.crt")
}

/// A Prometheus server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (`host:port`) every second over TLS, trusting `ca` and sending
    /// the token in `token_file`.
    fn start(dir: &Path, target: &str, ca: &Path, token_file: &Path) -> Result<Prometheus> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: flotilla\n    \
             scheme: https\n    tls_config:\n      ca_file: {ca}\n    authorization:\n      credentials_file: {token}\n    \
             static_configs:\n      - targets: ['{target}']\n",
            ca = ca.display(),
            token = token_file.display(),
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("running prometheus (installed by tests/setup.sh)")?;
        Ok(Prometheus { child, addr })
    }

    /// The result vector of an instant query.
    async fn query(&self, http: &HttpClient, query: &str) -> Result<Vec<Value>> {
        let path: String =
            form_urlencoded::Serializer::new(String::from("/api/v1/query?")).append_pair("query", query).finish();
        let (status, body) = http.get(self.addr, &self.addr.to_string(), &path).await?;
        if status != 200 {
            bail!("{status}: {body}");
        }
        let answer: Value = serde_json::from_str(&body)?;
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_server_and_answers_for_a_pods_requests() -> Result<()> {
    let (server, http) = hello_cluster().await?;
    for _ in 0..50 {
        let (status, body) = http.get(server.ingress_http()?, HOST, "/").await?;
        ensure!(status == 200, "{status}: {body}");
    }
    let target = api_url(&server)?.trim_start_matches("https://").trim_end_matches('/').to_string();
    let dir = tempfile::tempdir()?;
    let prometheus = Prometheus::start(dir.path(), &target, &ca(&server), &server.data_dir().join("admin.token"))?;
    let up = eventually("Prometheus scraping the server", Duration::from_secs(60), || async {
        match prometheus.query(&http, "up{job=\"flotilla\"}").await {
            Ok(result) => Ok(result.first().filter(|s| s["value"][1] == "1").cloned()),
            Err(_) => Ok(None),
        }
    })
    .await;
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    up.with_context(|| format!("prometheus' log:\n{}", log()))?;
    let series = eventually("a hello pod's request count in Prometheus", Duration::from_secs(30), || async {
        let result = prometheus
            .query(&http, "sum by (pod) (flotilla_pod_requests_total{namespace=\"hello\",code=\"2xx\"})")
            .await?;
        Ok((!result.is_empty()).then_some(result))
    })
    .await?;
    let total: f64 = series.iter().filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok()).sum();
    assert!(total >= 50.0, "Prometheus counts {total} requests to hello pods: {series:?}");
    for s in &series {
        let pod = s["metric"]["pod"].as_str().unwrap_or_default();
        assert!(pod.starts_with("hello-"), "{s}");
    }
    Ok(())
}
