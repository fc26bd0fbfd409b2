//! Pods as wasm components, end to end: the built-in node runs real example components
//! bound by the scheduler, writes their status as kubelet does, and serves their logs
//! and HTTP (`pods/proxy`, `flotilla port-forward`).

use crate::support::{
    Server, container_status, create, is_ready, main_container, pod, pod_request, wait_for_event, wait_for_pod,
};
use anyhow::{Context as _, Result};
use http::Method;
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

/// A server whose crashing containers back off from 1 s (kubelet's 10 s makes tests slow).
fn server() -> Result<Server> {
    Server::start_with(&["--crash-backoff", "1s"])
}

#[tokio::test]
async fn a_hello_pod_runs_becomes_ready_and_answers_through_port_forward() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let mut hello = pod("hello", "hello-http", "Always", json!({}));
    main_container(&mut hello)["env"] = json!([{"name": "GREETING", "value": "bonjour"}]);
    create(client, &hello).await?;
    let running = wait_for_pod(client, "hello", START, "ready", is_ready).await?;

    // Status as kubelet writes it.
    let status = &running["status"];
    assert!(running["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()), "bound: {running:#}");
    assert!(status["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.244.")), "{status:#}");
    assert!(status["startTime"].is_string(), "{status:#}");
    let main = container_status(&running);
    assert_eq!(main["ready"], true);
    assert!(main["state"]["running"]["startedAt"].is_string(), "{main:#}");
    assert!(main["imageID"].as_str().is_some_and(|id| id.starts_with("sha256:")), "{main:#}");
    for condition in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let found = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == condition);
        assert_eq!(found.map(|c| c["status"].clone()), Some(json!("True")), "{condition}: {status:#}");
    }

    // Through the API server's pods/proxy.
    let (code, body) = pod_request(client, "hello", Method::GET, "/", "").await?;
    assert_eq!((code, body.trim()), (200, "bonjour from hello"));

    // Through `flotilla port-forward`, a local listener.
    let mut forward = std::process::Command::new(crate::support::flotilla_bin())
        .args(["port-forward", "pod/hello", ":8080"])
        .env("KUBECONFIG", &server.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let stdout = forward.stdout.take().context("port-forward stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let address = line
        .strip_prefix("Forwarding from ")
        .and_then(|rest| rest.split(" -> ").next())
        .with_context(|| format!("port-forward said {line:?}"))?
        .to_string();
    let body = http_get(&address, "/anything").await;
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(body?.trim(), "bonjour from hello");
    Ok(())
}

/// A plain HTTP/1.1 GET, answering the body.
async fn http_get(address: &str, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "answer: {response}");
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

#[tokio::test]
async fn env_comes_from_configmaps_and_secrets_and_volumes_are_confined() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    create(
        client,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"POD_NAME": "the-configmap", "app.conf": "mode=fast\n"}}),
    )
    .await?;
    create(
        client,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"greeting": "from-a-secret"}}),
    )
    .await?;

    // envFrom a ConfigMap and valueFrom a Secret reach the component.
    let mut hello = pod("envy", "hello-http", "Always", json!({}));
    main_container(&mut hello)["envFrom"] = json!([{"configMapRef": {"name": "settings"}}]);
    main_container(&mut hello)["env"] =
        json!([{"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "greeting"}}}]);
    create(client, &hello).await?;
    wait_for_pod(client, "envy", START, "ready", is_ready).await?;
    let (code, body) = pod_request(client, "envy", Method::GET, "/", "").await?;
    assert_eq!((code, body.trim()), (200, "from-a-secret from the-configmap"));

    // A configMap volume is readable (read-only); nothing outside the mounts is.
    let mut files = pod(
        "files",
        "echo",
        "Always",
        json!({"volumes": [
            {"name": "config", "configMap": {"name": "settings"}},
            {"name": "scratch", "emptyDir": {}},
        ]}),
    );
    main_container(&mut files)["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/config"}, {"name": "scratch", "mountPath": "/scratch"}]);
    create(client, &files).await?;
    wait_for_pod(client, "files", START, "ready", is_ready).await?;
    let (code, body) = pod_request(client, "files", Method::GET, "/fs/config/app.conf", "").await?;
    assert_eq!((code, body.as_str()), (200, "mode=fast\n"));
    let (code, _) = pod_request(client, "files", Method::GET, "/fs/etc/passwd", "").await?;
    assert_eq!(code, 404, "a path outside the volumes does not exist for the pod");
    let (code, body) = pod_request(client, "files", Method::PUT, "/fs/config/app.conf", "overwritten").await?;
    assert!(code == 403 || code == 500, "a configMap volume is read-only: {code} {body}");
    let (code, _) = pod_request(client, "files", Method::PUT, "/fs/scratch/note", "kept").await?;
    assert_eq!(code, 201, "an emptyDir is writable");
    let (code, body) = pod_request(client, "files", Method::GET, "/fs/scratch/note", "").await?;
    assert_eq!((code, body.as_str()), (200, "kept"));

    // A missing ConfigMap is a clear waiting reason, not a crash.
    let mut missing = pod("missing-config", "hello-http", "Always", json!({}));
    main_container(&mut missing)["envFrom"] = json!([{"configMapRef": {"name": "nope"}}]);
    create(client, &missing).await?;
    let waiting = wait_for_pod(client, "missing-config", START, "waiting on its config", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await?;
    let message = container_status(&waiting)["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("configmap \"nope\" not found"), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_batch_pod_succeeds_and_its_logs_are_readable() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let mut batch = pod("batch", "batch", "Never", json!({}));
    main_container(&mut batch)["args"] = json!(["--label", "e2e"]);
    main_container(&mut batch)["env"] = json!([{"name": "LIMIT", "value": "1000"}]);
    create(client, &batch).await?;
    let done = wait_for_pod(client, "batch", START, "Succeeded", |p| p["status"]["phase"] == "Succeeded").await?;
    let terminated = &container_status(&done)["state"]["terminated"];
    assert_eq!((terminated["exitCode"].clone(), terminated["reason"].clone()), (json!(0), json!("Completed")));

    let (ok, stdout, stderr) = server.cli(&["logs", "batch"])?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("batch: 168 primes below 1000"), "{stdout}");
    let (ok, stdout, stderr) = server.kubectl(&["logs", "batch", "--tail", "1"])?;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let (ok, stdout, stderr) = server.cli(&["logs", "batch", "--timestamps", "--since", "1h"])?;
    assert!(ok, "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    let (time, line) = first.split_once(' ').unwrap_or_default();
    assert!(time.ends_with('Z') && time.parse::<jiff::Timestamp>().is_ok(), "{first}");
    assert!(line.starts_with("batch: "), "{first}");
    let (ok, _, stderr) = server.cli(&["logs", "batch", "--previous"])?;
    assert!(!ok && stderr.contains("previous terminated container \"main\""), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn exit_1_with_never_fails_and_a_crasher_backs_off() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let mut failing = pod("fails", "crasher", "Never", json!({}));
    main_container(&mut failing)["env"] = json!([{"name": "EXIT_CODE", "value": "3"}]);
    create(client, &failing).await?;
    let failed = wait_for_pod(client, "fails", START, "Failed", |p| p["status"]["phase"] == "Failed").await?;
    let terminated = &container_status(&failed)["state"]["terminated"];
    assert_eq!((terminated["exitCode"].clone(), terminated["reason"].clone()), (json!(3), json!("Error")));
    assert_eq!(container_status(&failed)["restartCount"], 0);

    // restartPolicy Always: restarts with a growing back-off, CrashLoopBackOff between.
    let mut crasher = pod("crasher", "crasher", "Always", json!({}));
    main_container(&mut crasher)["env"] = json!([{"name": "CRASH_AFTER_MS", "value": "100"}]);
    create(client, &crasher).await?;
    let looping = wait_for_pod(client, "crasher", START, "in CrashLoopBackOff after a restart", |p| {
        let status = container_status(p);
        status["restartCount"].as_u64().unwrap_or(0) >= 2 && status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await?;
    let status = container_status(&looping);
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 1, "{status:#}");
    assert_eq!(looping["status"]["phase"], "Running", "a restarting pod is Running, as in Kubernetes");
    let message = status["state"]["waiting"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("back-off 4s restarting failed container=main pod=crasher_default("), "{message}");
    let (ok, stdout, stderr) = server.cli(&["logs", "crasher", "--previous"])?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("crasher: exiting with 1 in 100 ms"), "{stdout}");
    // The kubelet's Event, as `kubectl describe pod` shows it.
    let backoff = wait_for_event(client, "crasher", "BackOff").await?;
    assert_eq!((&backoff["type"], &backoff["source"]["component"]), (&json!("Warning"), &json!("kubelet")));
    let message = backoff["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Back-off restarting failed container main in pod crasher_default("), "{message}");
    let (ok, described, stderr) = server.kubectl(&["describe", "pod", "crasher"])?;
    assert!(ok && described.contains("Back-off restarting failed container main"), "{described}{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_while_its_neighbour_answers() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let mut hog = pod("hog", "mem-hog", "Always", json!({}));
    main_container(&mut hog)["resources"] = json!({"limits": {"memory": "32Mi"}});
    create(client, &hog).await?;
    create(client, &pod("neighbour", "hello-http", "Always", json!({}))).await?;
    wait_for_pod(client, "hog", START, "ready", is_ready).await?;
    wait_for_pod(client, "neighbour", START, "ready", is_ready).await?;

    let (code, body) = pod_request(client, "hog", Method::GET, "/?mb=4", "").await?;
    assert_eq!(code, 200, "under the limit: {body}");
    let (code, body) = pod_request(client, "hog", Method::GET, "/?mb=128", "").await?;
    assert_eq!(code, 502, "over the limit: {body}");
    let killed = wait_for_pod(client, "hog", START, "OOMKilled", |p| {
        container_status(p)["lastState"]["terminated"]["reason"] == "OOMKilled"
    })
    .await?;
    assert_eq!(container_status(&killed)["lastState"]["terminated"]["exitCode"], 137);
    let (code, body) = pod_request(client, "neighbour", Method::GET, "/", "").await?;
    assert_eq!(code, 200, "the neighbour is untouched: {body}");
    Ok(())
}

#[tokio::test]
async fn missing_images_and_unsatisfiable_requests_are_explained() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    create(client, &pod("ghost", "no-such-image:9", "Always", json!({}))).await?;
    let waiting = wait_for_pod(client, "ghost", START, "in ImagePullBackOff", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await?;
    let message = container_status(&waiting)["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("no-such-image:9"), "{message}");
    assert_eq!(waiting["status"]["phase"], "Pending");
    let failed = wait_for_event(client, "ghost", "Failed").await?;
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Failed to pull image \"no-such-image:9\""), "{message}");
    let backoff = wait_for_event(client, "ghost", "BackOff").await?;
    assert_eq!(backoff["message"], "Back-off pulling image \"no-such-image:9\"");
    let (ok, _, stderr) = server.cli(&["logs", "ghost"])?;
    assert!(
        !ok && stderr.contains("container \"main\" in pod \"ghost\" is waiting to start: ImagePullBackOff"),
        "{stderr}"
    );

    let mut huge = pod("huge", "hello-http", "Always", json!({}));
    main_container(&mut huge)["resources"] = json!({"requests": {"cpu": "4000", "memory": "1Ti"}});
    create(client, &huge).await?;
    let pending = wait_for_pod(client, "huge", START, "Unschedulable", |p| {
        p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["reason"] == "Unschedulable")
    })
    .await?;
    assert_eq!(pending["status"]["phase"], "Pending");
    assert!(pending["spec"]["nodeName"].is_null(), "{pending:#}");
    let condition: &Value = pending["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .context("PodScheduled")?;
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("0/1 nodes are available") && message.contains("Insufficient cpu"), "{message}");
    Ok(())
}

#[tokio::test]
async fn deleting_a_running_pod_stops_it_and_removes_it() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    create(client, &pod("short-lived", "hello-http", "Always", json!({}))).await?;
    wait_for_pod(client, "short-lived", START, "ready", is_ready).await?;
    let path = "/api/v1/namespaces/default/pods/short-lived";
    let deleted = client.delete(path).await?;
    assert!(deleted.status.is_success(), "{deleted:?}");
    let deadline = tokio::time::Instant::now() + START;
    loop {
        let response = client.get(path).await?;
        if response.status == http::StatusCode::NOT_FOUND {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the pod is still there: {:?}", response.json());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The iteration count a cpu-burner answer reports.
fn iterations(body: &str) -> Result<f64> {
    body.split_whitespace().nth(1).and_then(|n| n.parse().ok()).with_context(|| format!("cpu-burner said {body:?}"))
}

/// The median of `n` round trips to `default/name`'s `/`.
async fn median_latency(client: &flotilla::client::Client, name: &str, n: usize) -> Result<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        let (code, body) = pod_request(client, name, Method::GET, "/", "").await?;
        anyhow::ensure!(code == 200, "{name}: {code} {body}");
        samples.push(start.elapsed());
    }
    samples.sort();
    Ok(samples[n / 2])
}

#[tokio::test]
async fn a_cpu_limit_throttles_its_pod_and_spares_the_neighbour() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    create(client, &pod("free-burner", "cpu-burner", "Always", json!({}))).await?;
    let mut limited = pod("limited-burner", "cpu-burner", "Always", json!({}));
    main_container(&mut limited)["resources"] = json!({"limits": {"cpu": "100m"}});
    create(client, &limited).await?;
    create(client, &pod("bystander", "hello-http", "Always", json!({}))).await?;
    for name in ["free-burner", "limited-burner", "bystander"] {
        wait_for_pod(client, name, START, "ready", is_ready).await?;
    }

    // The same second of wall time: the limited pod gets about a tenth of the work done.
    let (_, free) = pod_request(client, "free-burner", Method::GET, "/?ms=1000", "").await?;
    let (_, throttled) = pod_request(client, "limited-burner", Method::GET, "/?ms=1000", "").await?;
    let share = iterations(&throttled)? / iterations(&free)?;
    assert!((0.04..=0.25).contains(&share), "100m got {share:.3} of an unlimited pod's work ({throttled} vs {free})");

    // The neighbour's latency while two throttled requests burn stays within 2x (plus a
    // millisecond of slack for a noisy machine).
    let unloaded = median_latency(client, "bystander", 21).await?;
    let burn = {
        let client = client.clone();
        tokio::spawn(async move {
            let first = pod_request(&client, "limited-burner", Method::GET, "/?ms=3000", "");
            let second = pod_request(&client, "limited-burner", Method::GET, "/?ms=3000", "");
            let _ = tokio::join!(first, second);
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loaded = median_latency(client, "bystander", 21).await?;
    burn.abort();
    assert!(
        loaded <= unloaded * 2 + Duration::from_millis(1),
        "the bystander slowed from {unloaded:?} to {loaded:?} while its neighbour burned"
    );
    Ok(())
}

#[tokio::test]
async fn pushed_images_and_file_paths_run_and_bad_images_are_explained() -> Result<()> {
    // file:// images need the node's say-so (see sandbox.rs for a node without it).
    let server = Server::start_with(&["--crash-backoff", "1s", "--allow-file-images"])?;
    let client = &server.client;
    let (ok, stdout, stderr) = server.cli(&["image", "push", "team/echo:v1", flotilla_examples::ECHO])?;
    assert!(ok && stdout.starts_with("pushed team/echo:v1 (sha256:"), "{stdout} {stderr}");
    let (ok, stdout, _) = server.cli(&["image", "ls"])?;
    assert!(ok && stdout.lines().any(|l| l == "team/echo:v1"), "{stdout}");
    let not_wasm = server.data_dir().join("not-a-component.wasm");
    std::fs::write(&not_wasm, b"#!/bin/sh\necho hi\n")?;
    let (ok, _, stderr) = server.cli(&["image", "push", "junk:1", &not_wasm.to_string_lossy()])?;
    assert!(!ok && stderr.contains("not a WebAssembly component"), "{stderr}");

    create(client, &pod("pushed", "team/echo:v1", "Always", json!({}))).await?;
    create(client, &pod("by-path", &format!("file://{}", flotilla_examples::HELLO_HTTP), "Always", json!({}))).await?;
    create(client, &pod("junk", &format!("file://{}", not_wasm.display()), "Always", json!({}))).await?;
    wait_for_pod(client, "pushed", START, "ready", is_ready).await?;
    wait_for_pod(client, "by-path", START, "ready", is_ready).await?;
    let (code, body) = pod_request(client, "pushed", Method::POST, "/echoed", "payload").await?;
    assert!(code == 200 && body.starts_with("POST /echoed") && body.ends_with("payload"), "{code} {body}");
    let junk = wait_for_pod(client, "junk", START, "refused", |p| {
        container_status(p)["state"]["waiting"]["reason"] == "CreateContainerError"
    })
    .await?;
    let message = container_status(&junk)["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("not a wasm component"), "{message}");
    Ok(())
}

#[tokio::test]
async fn probes_gate_readiness_and_unsupported_ones_say_why() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let mut probed = pod("probed", "hello-http", "Always", json!({}));
    main_container(&mut probed)["readinessProbe"] =
        json!({"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1});
    main_container(&mut probed)["livenessProbe"] = json!({"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1});
    create(client, &probed).await?;
    wait_for_pod(client, "probed", START, "ready", is_ready).await?;

    let mut tcp = pod("tcp-probed", "hello-http", "Always", json!({}));
    main_container(&mut tcp)["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1});
    create(client, &tcp).await?;
    let unready = wait_for_pod(client, "tcp-probed", START, "explained", |p| {
        p["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "Ready"
                && c["message"].as_str().is_some_and(|m| m.contains("tcpSocket probes are not supported"))
        })
    })
    .await?;
    assert_eq!(unready["status"]["phase"], "Running");
    assert_eq!(container_status(&unready)["ready"], false);
    let unhealthy = wait_for_event(client, "tcp-probed", "Unhealthy").await?;
    let message = unhealthy["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Readiness probe failed: ") && message.contains("tcpSocket"), "{message}");

    // A failing liveness probe restarts the container, and says so.
    let mut dying = pod("dying", "echo", "Always", json!({}));
    main_container(&mut dying)["livenessProbe"] =
        json!({"httpGet": {"path": "/fs/missing", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1});
    create(client, &dying).await?;
    let restarted = wait_for_pod(client, "dying", START, "restarted", |p| {
        container_status(p)["restartCount"].as_u64().unwrap_or(0) >= 1
    })
    .await?;
    let last = &container_status(&restarted)["lastState"]["terminated"];
    assert_eq!(last["message"], "Liveness probe failed: HTTP probe failed with statuscode: 404", "{last:#}");
    let unhealthy = wait_for_event(client, "dying", "Unhealthy").await?;
    assert_eq!(unhealthy["message"], "Liveness probe failed: HTTP probe failed with statuscode: 404");
    let killing = wait_for_event(client, "dying", "Killing").await?;
    assert_eq!(killing["message"], "Container main failed liveness probe, will be restarted");
    Ok(())
}

#[tokio::test]
async fn pods_run_again_after_the_server_restarts() -> Result<()> {
    let mut server = server()?;
    create(&server.client, &pod("survivor", "hello-http", "Always", json!({}))).await?;
    let before = wait_for_pod(&server.client, "survivor", START, "ready", is_ready).await?;
    server.restart()?;
    let client = &server.client;
    let after = wait_for_pod(client, "survivor", START, "ready again after a restart", |p| {
        is_ready(p) && container_status(p)["restartCount"] == 1
    })
    .await?;
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"], "the pod keeps its address");
    assert_eq!(container_status(&after)["lastState"]["terminated"]["reason"], "ContainerStatusUnknown");
    let (code, _) = pod_request(client, "survivor", Method::GET, "/", "").await?;
    assert_eq!(code, 200);
    Ok(())
}
