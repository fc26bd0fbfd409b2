//! Exec and port-forward bench: what `kubectl exec POD -- true` and `kubectl
//! port-forward` cost, through the real server over loopback HTTPS.
//!
//! Run: `cargo bench -p flotilla --bench exec` (`-- --quick` for a short run).
//!
//! Each figure stands next to a baseline measured in the same run:
//! - exec round trip of `true` (a WebSocket upgrade, a fresh toolbox instance in the
//!   pod's sandbox, its exit status on the error channel) against `GET` of the pod, what
//!   `kubectl get pod` costs the server;
//! - port-forward throughput of a large body echoed back by an HTTP pod, through
//!   `pods/portforward` (WebSocket, `v4.channel.k8s.io`), against the same request
//!   straight to the pod's Service on its NodePort.

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/report.rs"]
mod report;

use anyhow::{Context as _, Result, bail};
use flotilla::client::Client;
use flotilla::testkit::ServerProcess;
use flotilla_client::streaming::{self, ExecExit, ExecOptions};
use report::Report;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The targets: exec of `true` p50 < 5 ms; port-forward ≥ 0.5× the direct path.
const EXEC_P50_TARGET: Duration = Duration::from_millis(5);
const THROUGHPUT_TARGET: f64 = 0.5;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len().max(1) as f64 - 1.0) * p).round() as usize;
    sorted.get(index.min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn wait_ready(client: &Client, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = client.get(&format!("/api/v1/namespaces/default/pods/{name}")).await?.ok()?;
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pod {name} not ready: {:#}", pod["status"]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `exec -- true`, to its exit status.
async fn exec_true(client: &Client) -> Result<()> {
    let options = ExecOptions { command: vec!["true".into()], stdout: true, stderr: true, ..ExecOptions::default() };
    let path = format!("/api/v1/namespaces/default/pods/web/exec?{}", options.query());
    let (protocol, socket) = client.websocket(&path, streaming::EXEC_PROTOCOLS).await?;
    let session = streaming::exec_client(socket, &protocol, &options);
    match session.exit.await {
        ExecExit::Success => Ok(()),
        other => bail!("exec of true ended {other:?}"),
    }
}

/// POSTs `size` bytes over `stream` (`Connection: close`) and reads the whole answer;
/// answers the bytes read.
async fn echo_over<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, size: usize) -> Result<usize> {
    let head = format!("POST /bench HTTP/1.1\r\nHost: web\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let sender = async {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 256 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            write.write_all(&chunk[..n]).await?;
            left -= n;
        }
        write.flush().await?;
        Ok::<_, std::io::Error>(())
    };
    let receiver = async {
        let mut total = 0;
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let n = read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(total);
            }
            total += n;
        }
    };
    let ((), total) = tokio::try_join!(sender, receiver)?;
    if total < size {
        bail!("the echo came back short: {total} of {size} bytes");
    }
    Ok(total)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let data_dir = tempfile::tempdir()?;
        let server = ServerProcess::spawn(Path::new(env!("CARGO_BIN_EXE_flotilla")), data_dir.path(), &[])?;
        let client = Client::from_kubeconfig(&server.kubeconfig)?;
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "echo", "image": "echo", "ports": [{"containerPort": 8080}]}]}});
        client.post_json("/api/v1/namespaces/default/pods", &pod).await?.ok()?;
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}});
        let service = client.post_json("/api/v1/namespaces/default/services", &service).await?.ok()?;
        let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().context("no nodePort")? as u16;
        wait_ready(&client, "web").await?;
        let mut report = Report::default();

        // Exec round trips, against GET of the pod.
        let rounds = if quick { 50 } else { 300 };
        for _ in 0..5 {
            exec_true(&client).await?;
        }
        let mut exec = Vec::with_capacity(rounds);
        let mut get = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            exec_true(&client).await?;
            exec.push(started.elapsed());
            let started = Instant::now();
            client.get("/api/v1/namespaces/default/pods/web").await?.ok()?;
            get.push(started.elapsed());
        }
        exec.sort();
        get.sort();
        let (exec_p50, get_p50) = (percentile(&exec, 0.5), percentile(&get, 0.5));
        report.row(
            format!("exec `true` p50 ({rounds} sequential; p99 {})", ms(percentile(&exec, 0.99))),
            ms(exec_p50),
            format!("GET pod p50 {}", ms(get_p50)),
            exec_p50.as_secs_f64() / get_p50.as_secs_f64(),
        );
        report.target(format!("exec of true p50 < {}", ms(EXEC_P50_TARGET)), exec_p50 < EXEC_P50_TARGET);

        // Port-forward throughput, against the Service's NodePort.
        // Under the Service proxy's 16 MiB body limit (port-forward has none, as kubelet's).
        let size: usize = if quick { 8 << 20 } else { 15 << 20 };
        let path = "/api/v1/namespaces/default/pods/web/portforward?ports=8080";
        let direct_addr = (server.service_address, node_port);
        let (mut forwarded, mut direct) = (Duration::MAX, Duration::MAX);
        // Best of five each, interleaved: the machine is shared and noisy.
        for _ in 0..5 {
            let started = Instant::now();
            let (_, socket) = client.websocket(path, &[streaming::V4_CHANNEL]).await?;
            echo_over(streaming::port_forward_client(socket), size).await?;
            forwarded = forwarded.min(started.elapsed());
            let started = Instant::now();
            echo_over(tokio::net::TcpStream::connect(direct_addr).await?, size).await?;
            direct = direct.min(started.elapsed());
        }
        let rate = |d: Duration| (2 * size) as f64 / d.as_secs_f64() / (1 << 20) as f64;
        let ratio = rate(forwarded) / rate(direct);
        report.row(
            format!("port-forward, {} MiB echoed", size >> 20),
            format!("{:.0} MiB/s", rate(forwarded)),
            format!("NodePort {:.0} MiB/s", rate(direct)),
            ratio,
        );
        report.target(format!("port-forward ≥ {THROUGHPUT_TARGET}× the Service"), ratio >= THROUGHPUT_TARGET);
        report.print();
        Ok(())
    })
}
