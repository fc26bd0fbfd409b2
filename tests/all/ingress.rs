//! Services and Ingress end to end: the server's own proxy in front of real wasm pods,
//! driven with real HTTP (hyper, and curl for TLS and HTTP/2).

use crate::support::{HttpClient, Server, create, eventually, repo_root};
use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The pod that answered, from hello-http's `GREETING from POD`.
fn answering_pod(body: &str) -> String {
    body.trim().rsplit(" from ").next().unwrap_or_default().to_string()
}

/// Sends `total` GETs, `concurrency` at a time; counts answers by pod, fails on any non-200.
async fn spread(
    http: &HttpClient,
    addr: std::net::SocketAddr,
    host: &str,
    total: usize,
) -> Result<HashMap<String, usize>> {
    let concurrency = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let http = http.clone();
        let host = host.to_string();
        tasks.spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in (worker..total).step_by(concurrency) {
                let (status, body) = http.get(addr, &host, "/").await?;
                anyhow::ensure!(status == 200, "{status}: {body}");
                *seen.entry(answering_pod(&body)).or_default() += 1;
            }
            anyhow::Ok(seen)
        });
    }
    let mut total_seen: HashMap<String, usize> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        for (pod, count) in joined?? {
            *total_seen.entry(pod).or_default() += count;
        }
    }
    Ok(total_seen)
}

/// Waits until `host` answers through the Ingress from `replicas` different pods.
async fn wait_serving(server: &Server, http: &HttpClient, host: &str, replicas: usize) -> Result<()> {
    let addr = server.ingress_http()?;
    eventually(&format!("{host} served by {replicas} pods"), Duration::from_secs(60), || async {
        let mut pods = std::collections::HashSet::new();
        for _ in 0..replicas * 4 {
            let (status, body) = http.get(addr, host, "/").await?;
            if status != 200 {
                return Ok(None);
            }
            pods.insert(answering_pod(&body));
        }
        Ok((pods.len() == replicas).then_some(()))
    })
    .await
}

#[tokio::test]
async fn the_hello_manifests_serve_through_the_ingress_over_http_and_tls() -> Result<()> {
    let manifests = repo_root().join("manifests/hello");
    let server = Server::start_with(&["--manifests", &manifests.to_string_lossy()])?;
    let http = HttpClient::new();
    let host = "hello.flotilla.local";
    wait_serving(&server, &http, host, 3).await?;

    // Round robin: each of 3 replicas takes a third of 3,000 requests (± 5 %).
    let seen = spread(&http, server.ingress_http()?, host, 3000).await?;
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (pod, count) in &seen {
        assert!((850..=1150).contains(count), "{pod} took {count} of 3000: {seen:?}");
    }

    // HTTPS with the Ingress's certificate, trusted on its own, over HTTP/2 and HTTP/1.1.
    let secret = server.client.get("/api/v1/namespaces/hello/secrets/hello-tls").await?.ok()?;
    let cert = secret["data"]["tls.crt"].as_str().context("the TLS secret's certificate")?;
    use base64::Engine as _;
    let ca = server.data_dir().join("hello-ca.crt");
    std::fs::write(&ca, base64::engine::general_purpose::STANDARD.decode(cert)?)?;
    let https = server.ingress_https()?;
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = std::process::Command::new("curl")
            .args(["-sS", flag, "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("{host}:{}:{}", https.port(), https.ip())])
            .args(["-w", "\n%{http_code} %{http_version}", &format!("https://{host}:{}/", https.port())])
            .output()
            .context("running curl")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "curl {flag}: {stdout} {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("Hello from Flotilla from hello-"), "{stdout}");
        assert!(stdout.trim_end().ends_with(&format!("200 {version}")), "{stdout}");
    }
    // An unknown host has no rule: 404, said so.
    let (status, body) = http.get(server.ingress_http()?, "nobody.example", "/").await?;
    assert_eq!(status, 404, "{body}");
    Ok(())
}

#[tokio::test]
async fn the_frontend_calls_the_backend_service_in_process() -> Result<()> {
    let manifests = repo_root().join("manifests/frontend");
    let server = Server::start_with(&["--manifests", &manifests.to_string_lossy()])?;
    let http = HttpClient::new();
    let addr = server.ingress_http()?;
    let mut backends = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while backends.len() < 2 {
        let (status, body) = http.get(addr, "frontend.flotilla.local", "/").await?;
        if status == 200 {
            assert!(body.starts_with("frontend → 200 Hello from the backend from backend-"), "{body}");
            backends.insert(answering_pod(&body));
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the frontend never reached both backends: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn web_deployment(replicas: u32, greeting: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{"name": "web", "image": "hello-http",
                    "env": [{"name": "GREETING", "value": greeting}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]},
            },
        },
    })
}

fn web_service_and_ingress() -> [Value; 2] {
    [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"rules": [{"host": "web.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    ]
}

#[tokio::test]
async fn a_rolling_update_and_a_scale_down_under_load_fail_no_request() -> Result<()> {
    let server = Server::start_with(&["--crash-backoff", "1s"])?;
    create(&server.client, &web_deployment(4, "v1")).await?;
    for object in web_service_and_ingress() {
        create(&server.client, &object).await?;
    }
    let http = HttpClient::new();
    wait_serving(&server, &http, "web.test", 4).await?;

    // Continuous load through the Ingress while the Deployment rolls and scales.
    let addr = server.ingress_http()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (http, stop, sent, failed) = (http.clone(), stop.clone(), sent.clone(), failed.clone());
        load.spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match http.get(addr, "web.test", "/").await {
                    Ok((200, _)) => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{other:?}"));
                    }
                }
            }
            failures
        });
    }
    let (ok, stdout, stderr) = server.kubectl(&["set", "env", "deployment/web", "GREETING=v2"])?;
    assert!(ok, "{stdout} {stderr}");
    let (ok, stdout, stderr) = server.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])?;
    assert!(ok, "{stdout} {stderr}");
    // Every pod now answers v2.
    eventually("only v2 answering", Duration::from_secs(30), || async {
        let (_, body) = http.get(addr, "web.test", "/").await?;
        Ok(body.starts_with("v2 from").then_some(()))
    })
    .await?;
    let (ok, stdout, stderr) = server.kubectl(&["scale", "deployment/web", "--replicas=2"])?;
    assert!(ok, "{stdout} {stderr}");
    eventually("two pods left", Duration::from_secs(30), || async {
        let pods = server.client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb").await?.ok()?;
        Ok((pods["items"].as_array().map(Vec::len) == Some(2)).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    while let Some(joined) = load.join_next().await {
        failures.extend(joined?);
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 500, "only {sent} requests were sent");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    Ok(())
}

#[tokio::test]
async fn node_ports_and_load_balancers_answer_and_empty_services_say_why() -> Result<()> {
    let server = Server::start_with(&[])?;
    create(&server.client, &web_deployment(2, "hi")).await?;
    let lb_port = 20000 + (std::process::id() % 5000) as u16;
    let services = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-lb", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": lb_port, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody", "namespace": "default"},
            "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 80}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "nobody", "namespace": "default"},
            "spec": {"rules": [{"host": "nobody.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "nobody", "port": {"number": 80}}}}]}}]}}),
    ];
    for object in &services {
        create(&server.client, object).await?;
    }
    let np = server.client.get("/api/v1/namespaces/default/services/web-np").await?.ok()?;
    let node_port = np["spec"]["ports"][0]["nodePort"].as_u64().context("a node port")? as u16;
    let http = HttpClient::new();
    let ip = server.service_address();
    for (what, addr) in [("NodePort", (ip, node_port)), ("LoadBalancer", (ip, lb_port))] {
        let addr = std::net::SocketAddr::from(addr);
        let body = eventually(&format!("the {what} answering"), Duration::from_secs(60), || async {
            Ok(match http.get(addr, "anything", "/").await {
                Ok((200, body)) => Some(body),
                _ => None,
            })
        })
        .await?;
        assert!(body.starts_with("hi from web-"), "{what}: {body}");
    }
    let lb = eventually("the LoadBalancer's address in its status", Duration::from_secs(10), || async {
        let lb = server.client.get("/api/v1/namespaces/default/services/web-lb").await?.ok()?;
        Ok(lb["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().map(str::to_string))
    })
    .await?;
    assert_eq!(lb, ip.to_string());
    let (ok, stdout, _) = server.kubectl(&["get", "svc", "web-lb"])?;
    assert!(ok && stdout.contains(&ip.to_string()), "EXTERNAL-IP shows the address: {stdout}");

    // No ready pods behind a Service: 503, and the body says which Service.
    let (status, body) = http.get(server.ingress_http()?, "nobody.test", "/").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("default/nobody"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_deployment_at_zero_is_woken_by_the_first_request_and_sleeps_again_when_idle() -> Result<()> {
    let server =
        Server::start_with(&["--metric-resolution", "500ms", "--horizontal-pod-autoscaler-sync-period", "500ms"])?;
    let mut sleepy = web_deployment(0, "awake");
    sleepy["metadata"]["annotations"] =
        json!({"flotilla.dev/scale-to-zero": "true", "flotilla.dev/scale-to-zero-idle": "2s"});
    create(&server.client, &sleepy).await?;
    for object in web_service_and_ingress() {
        create(&server.client, &object).await?;
    }
    let pods = || async {
        let list = server.client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb").await?.ok()?;
        anyhow::Ok(list["items"].as_array().map(Vec::len).unwrap_or_default())
    };
    // The proxy knows the Service and its Deployment before the request comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pods().await?, 0, "nothing runs before the first request");

    let http = HttpClient::new();
    let started = std::time::Instant::now();
    let (status, body) = http.get(server.ingress_http()?, "web.test", "/").await?;
    let cold = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("awake from web-"), "{body}");
    assert_eq!(pods().await?, 1, "one pod woke up");
    let deployment = server.client.get("/apis/apps/v1/namespaces/default/deployments/web").await?.ok()?;
    assert_eq!(deployment["spec"]["replicas"], 1);
    // Later requests go straight to the pod.
    let (status, _) = http.get(server.ingress_http()?, "web.test", "/").await?;
    assert_eq!(status, 200);
    eprintln!("scale from zero: first request answered in {cold:?}");

    // Idle for its 2 s (once the scrapes show no requests): back to zero, and a request
    // wakes it again.
    let slept = std::time::Instant::now();
    eventually("the idle deployment back at zero pods", Duration::from_secs(30), || async {
        Ok((pods().await? == 0).then_some(()))
    })
    .await?;
    assert!(slept.elapsed() >= Duration::from_secs(2), "asleep after {:?}", slept.elapsed());
    let deployment = server.client.get("/apis/apps/v1/namespaces/default/deployments/web").await?.ok()?;
    assert_eq!(deployment["spec"]["replicas"], 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = http.get(server.ingress_http()?, "web.test", "/").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pods().await?, 1, "woken again");
    Ok(())
}
