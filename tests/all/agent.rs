//! A second node in another process: `flotilla agent` joins with the server's join
//! token, runs the pods bound to it, and answers the API server's logs and proxy
//! requests over its own kubelet API.

use crate::support::{Server, container_status, create, flotilla_bin, is_ready, pod, pod_request, wait_for_pod};
use anyhow::{Context as _, Result};
use http::Method;
use serde_json::json;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `flotilla agent`, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(server: &Server, name: &str, token: &str) -> Result<(Agent, String)> {
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig)?;
    let url = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("the kubeconfig names no server")?
        .to_string();
    let data_dir = server.data_dir().join(format!("agent-{name}"));
    let mut child = Command::new(flotilla_bin())
        .args(["agent", "--server", &url, "--token", token, "--node-name", name])
        .args(["--kubelet-addr", "127.0.0.1:0", "--pod-cidr", "10.245.0.0/16", "--crash-backoff", "1s"])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    Ok((Agent(child), line))
}

#[tokio::test]
async fn an_agent_joins_with_the_token_and_runs_pods_on_its_node() -> Result<()> {
    let server = Server::start_with(&["--crash-backoff", "1s"])?;
    let client = &server.client;
    let token = std::fs::read_to_string(server.data_dir().join("join-token"))?.trim().to_string();

    // A token whose CA hash is not this server's is refused before anything is sent.
    let forged = format!("K10{}::node:{}", "0".repeat(64), token.rsplit("::node:").next().unwrap_or_default());
    let (mut refused, said) = start_agent(&server, "forged", &forged)?;
    let status = refused.0.wait()?;
    assert!(!status.success() && said.is_empty(), "a forged token must not join: {said}");

    let (_agent, said) = start_agent(&server, "second", &token)?;
    assert!(said.contains("node second joined"), "{said}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let node = client.get("/api/v1/nodes/second").await?;
        let ready = node.status.is_success()
            && node.json()?["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "node second never became Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A pod pinned to the second node runs there and is reached through the API server.
    let mut remote =
        pod("remote", "hello-http", "Always", json!({"nodeSelector": {"kubernetes.io/hostname": "second"}}));
    remote["spec"]["containers"][0]["env"] = json!([{"name": "GREETING", "value": "hi"}]);
    create(client, &remote).await?;
    let running = wait_for_pod(client, "remote", Duration::from_secs(30), "ready", is_ready).await?;
    assert_eq!(running["spec"]["nodeName"], "second");
    assert!(running["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.245.")), "{running:#}");
    let (code, body) = pod_request(client, "remote", Method::GET, "/", "").await?;
    assert_eq!((code, body.trim()), (200, "hi from remote"));

    let mut batch = pod("remote-batch", "batch", "Never", json!({"nodeName": "second"}));
    batch["spec"]["containers"][0]["env"] = json!([{"name": "LIMIT", "value": "100"}]);
    create(client, &batch).await?;
    let done = wait_for_pod(client, "remote-batch", Duration::from_secs(30), "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    })
    .await?;
    assert_eq!(container_status(&done)["state"]["terminated"]["exitCode"], 0);
    let (ok, stdout, stderr) = server.cli(&["logs", "remote-batch"])?;
    assert!(ok && stdout.contains("batch: 25 primes below 100"), "{stdout} {stderr}");
    Ok(())
}
