//! A second node in another process: `flotilla agent` joins with the server's join
//! token, runs the pods bound to it, and answers the API server's logs and proxy
//! requests over its own kubelet API.

use crate::support::{
    HttpClient, Server, container_status, create, eventually, flotilla_bin, is_ready, pod, pod_request, wait_for_pod,
};
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

fn start_agent(server: &Server, name: &str, token: &str, extra: &[&str]) -> Result<(Agent, String)> {
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
        .args(extra)
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
    let server = Server::start_with(&["--crash-backoff", "1s", "--metric-resolution", "1s"])?;
    let client = &server.client;
    let token = std::fs::read_to_string(server.data_dir().join("join-token"))?.trim().to_string();

    // A token whose CA hash is not this server's is refused before anything is sent.
    let forged = format!("K10{}::node:{}", "0".repeat(64), token.rsplit("::node:").next().unwrap_or_default());
    let (mut refused, said) = start_agent(&server, "forged", &forged, &[])?;
    let status = refused.0.wait()?;
    assert!(!status.success() && said.is_empty(), "a forged token must not join: {said}");

    let (_agent, said) = start_agent(&server, "second", &token, &[])?;
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

    // The server's Ingress reaches the pod on the other node through its kubelet API.
    create(
        client,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "remote", "namespace": "default"},
            "spec": {"selector": {"app": "remote"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await?;
    create(
        client,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "remote", "namespace": "default"},
            "spec": {"defaultBackend": {"service": {"name": "remote", "port": {"number": 80}}}}}),
    )
    .await?;
    let http = HttpClient::new();
    let ingress = server.ingress_http()?;
    let answer = http.get_until_ok(ingress, "any.host", "/", Duration::from_secs(30)).await?;
    assert_eq!(answer.trim(), "hi from remote");

    // Its kubelet API serves its pods' stats: the resource metrics measure the remote pod
    // and node.
    eventually("the remote pod measured", Duration::from_secs(15), || async {
        let (ok, out, _) = server.cli(&["top", "pods"])?;
        Ok((ok && out.lines().any(|l| l.starts_with("remote "))).then_some(()))
    })
    .await?;
    let (ok, out, err) = server.cli(&["top", "nodes"])?;
    assert!(ok && out.lines().any(|l| l.starts_with("second ") && !l.contains("<unknown>")), "{out} {err}");

    // exec and port-forward reach the pod on the other node through its kubelet API (the
    // API server speaks WebSocket channels to the agent); its localhost is its own there.
    let (ok, out, err) = server.kubectl(&[
        "exec",
        "remote",
        "--",
        "sh",
        "-c",
        "echo $GREETING from $HOSTNAME; wget -qO- localhost:8080",
    ])?;
    assert!(ok, "{out}{err}");
    assert_eq!(out, "hi from remote\nhi from remote\n");
    let (ok, _, err) = server.cli(&["exec", "remote", "--", "sh", "-c", "echo gone >&2; exit 4"])?;
    assert!(!ok && err.contains("gone"), "{err}");
    let mut forward = server.kubectl_command(&["port-forward", "pod/remote", ":8080"])?.spawn()?;
    let port = crate::exec::forwarded_port(&mut forward)?;
    let answer = http.get(format!("127.0.0.1:{port}").parse()?, "remote", "/").await;
    forward.kill()?;
    assert_eq!(answer?, (200, "hi from remote\n".to_string()));

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

/// Polls until `done(list of pods)`.
async fn wait_pods(
    server: &Server,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Result<Vec<serde_json::Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = server.client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dspread").await?.ok()?;
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        if done(&pods) {
            return Ok(pods);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "pods never {what}: {:#}",
            json!(
                pods.iter()
                    .map(|p| (&p["metadata"]["name"], &p["spec"]["nodeName"], &p["status"]["phase"]))
                    .collect::<Vec<_>>()
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stopped_nodes_pods_come_back_elsewhere() -> Result<()> {
    let server = Server::start_with(&[
        "--crash-backoff",
        "1s",
        "--node-status-update-frequency",
        "1s",
        "--node-monitor-grace-period",
        "3s",
        "--pod-eviction-timeout",
        "1s",
    ])?;
    let client = &server.client;
    let token = std::fs::read_to_string(server.data_dir().join("join-token"))?.trim().to_string();
    let (agent, said) = start_agent(&server, "doomed", &token, &["--node-status-update-frequency", "1s"])?;
    assert!(said.contains("node doomed joined"), "{said}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !client.get("/api/v1/nodes/doomed").await?.status.is_success() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "node doomed never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create(
        client,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread", "namespace": "default"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
                "template": {"metadata": {"labels": {"app": "spread"}},
                    "spec": {"containers": [{"name": "web", "image": "hello-http"}]}}},
        }),
    )
    .await?;
    let ready = |p: &serde_json::Value| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null();
    wait_pods(&server, "spread over both nodes", |pods| {
        pods.iter().filter(|p| ready(p)).count() == 4 && pods.iter().any(|p| p["spec"]["nodeName"] == "doomed")
    })
    .await?;

    drop(agent);
    wait_pods(&server, "back on the surviving node", |pods| {
        pods.len() == 4 && pods.iter().all(|p| ready(p) && p["spec"]["nodeName"] != "doomed")
    })
    .await?;
    let node = client.get("/api/v1/nodes/doomed").await?.ok()?;
    let condition =
        node["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready").cloned();
    assert_eq!(condition.map(|c| c["status"].clone()), Some(json!("Unknown")), "{node:#}");
    assert!(
        node["spec"]["taints"].as_array().into_iter().flatten().any(|t| t["key"] == "node.kubernetes.io/unreachable"),
        "{node:#}"
    );
    Ok(())
}

#[tokio::test]
async fn a_daemon_set_follows_a_second_node_joining_and_rolls_out() -> Result<()> {
    let server = Server::start_with(&["--crash-backoff", "1s"])?;
    let client = &server.client;
    create(client, &json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "everywhere", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "everywhere"}},
            "template": {"metadata": {"labels": {"app": "everywhere"}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": "hello-http", "env": [{"name": "GREETING", "value": "v1"}]}]}}},
    }))
    .await?;
    let nodes_of = |pods: &[serde_json::Value]| -> Vec<String> {
        let mut nodes: Vec<String> = pods
            .iter()
            .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        nodes.sort();
        nodes
    };
    let path = "/api/v1/namespaces/default/pods?labelSelector=app%3Deverywhere";
    let wait_nodes = |count: usize| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let pods = client.get(path).await?.ok()?["items"].as_array().cloned().unwrap_or_default();
            let nodes = nodes_of(&pods);
            let unique: std::collections::BTreeSet<&String> = nodes.iter().collect();
            if nodes.len() == count && unique.len() == count {
                return Ok::<_, anyhow::Error>(nodes);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "want {count} nodes with a pod, have {nodes:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_nodes(1).await?;

    let token = std::fs::read_to_string(server.data_dir().join("join-token"))?.trim().to_string();
    let (_agent, said) = start_agent(&server, "joiner", &token, &[])?;
    assert!(said.contains("node joiner joined"), "{said}");
    let nodes = wait_nodes(2).await?;
    assert!(nodes.contains(&"joiner".to_string()), "{nodes:?}");

    let (ok, _, stderr) = server.kubectl(&["set", "env", "daemonset/everywhere", "GREETING=v2"])?;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = server.kubectl(&["rollout", "status", "daemonset/everywhere", "--timeout=60s"])?;
    assert!(ok && stdout.contains("successfully rolled out"), "{stdout} {stderr}");
    wait_nodes(2).await?;
    let pods = client.get(path).await?.ok()?["items"].as_array().cloned().unwrap_or_default();
    for pod in pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()) {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let (code, body) = pod_request(client, name, Method::GET, "/", "").await?;
        assert_eq!((code, body.trim().to_string()), (200, format!("v2 from {name}")));
    }
    Ok(())
}
