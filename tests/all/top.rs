//! Resource metrics end to end: the server scrapes its node's stats every
//! `--metric-resolution`, serves `metrics.k8s.io` to `flotilla top` and `kubectl top`,
//! and the HorizontalPodAutoscaler scales a Deployment on its pods' request rate.

use crate::support::{
    HttpClient, Server, create, eventually, is_ready, main_container, pod, pod_request, wait_for_pod,
};
use anyhow::{Context as _, Result, bail};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

/// A cluster that scrapes and autoscales every second.
fn server() -> Result<Server> {
    Server::start_with(&["--metric-resolution", "1s", "--horizontal-pod-autoscaler-sync-period", "1s"])
}

/// Runs `flotilla ARGS` and answers its standard output, failing with its output if it
/// fails.
fn cli_ok(server: &Server, args: &[&str]) -> Result<String> {
    let (ok, out, err) = server.cli(args)?;
    anyhow::ensure!(ok, "flotilla {} failed:\n{out}\n{err}", args.join(" "));
    Ok(out)
}

/// The cells of the table row whose first cell is `name`.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|cells| cells.first() == Some(&name))
}

/// `250m` → 250.
fn millicores(cell: &str) -> Result<u64> {
    cell.strip_suffix('m').and_then(|c| c.parse().ok()).with_context(|| format!("{cell:?} is not millicores"))
}

#[tokio::test]
async fn top_shows_a_cpu_burner_at_its_limit_and_an_idle_pod_near_zero() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let mut burner = pod("burner", "cpu-burner", "Always", json!({}));
    main_container(&mut burner)["resources"] = json!({"limits": {"cpu": "500m"}});
    create(client, &burner).await?;
    create(client, &pod("hello", "hello-http", "Always", json!({}))).await?;
    for name in ["burner", "hello"] {
        wait_for_pod(client, name, START, "ready", is_ready).await?;
    }

    // Two requests at a time, each wanting a whole core for 200 ms: the quota holds the
    // pod to half a core.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (client, stop) = (client.clone(), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (code, body) = pod_request(&client, "burner", http::Method::GET, "/?ms=200", "").await?;
                anyhow::ensure!(code == 200, "{code}: {body}");
            }
            anyhow::Ok(())
        });
    }

    // Two scrapes under load, then usage near the limit.
    let table = eventually("the burner near its 500m limit", Duration::from_secs(20), || async {
        // "metrics not available yet" until the second scrape.
        let (ok, out, _) = server.cli(&["top", "pods"])?;
        let Some(cells) = row(&out, "burner").filter(|_| ok) else { return Ok(None) };
        let cpu = millicores(cells[1])?;
        Ok((250..=750).contains(&cpu).then_some(out))
    })
    .await?;
    assert_eq!(
        table.lines().next().map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "CPU(cores)", "MEMORY(bytes)"])
    );
    let hello = row(&table, "hello").with_context(|| format!("hello is measured too:\n{table}"))?;
    assert!(millicores(hello[1])? <= 50, "hello is idle:\n{table}");
    assert!(hello[2].ends_with("Mi"), "{table}");

    // Every namespace, a selector, the nodes.
    let all = cli_ok(&server, &["top", "pods", "-A"])?;
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(row(&all, "default").is_some(), "{all}");
    let selected = cli_ok(&server, &["top", "pods", "-l", "app=hello"])?;
    assert!(row(&selected, "hello").is_some() && row(&selected, "burner").is_none(), "{selected}");
    let nodes = cli_ok(&server, &["top", "nodes"])?;
    let header: Vec<&str> = nodes.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], "{nodes}");
    let node = nodes.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>()).unwrap_or_default();
    assert!(node.len() == 5 && millicores(node[1])? >= 250 && node[2].ends_with('%'), "{nodes}");

    // The real kubectl reads the same API.
    let (ok, out, err) = server.kubectl(&["top", "pods"])?;
    assert!(ok, "kubectl top pods: {out}\n{err}");
    let cells = row(&out, "burner").with_context(|| format!("kubectl top pods:\n{out}"))?;
    assert!(millicores(cells[1])? >= 250, "{out}");
    let (ok, out, err) = server.kubectl(&["top", "nodes"])?;
    assert!(ok && out.contains("CPU(cores)") && out.lines().count() == 2, "kubectl top nodes: {out}\n{err}");

    // Read-only, and a pod without metrics is NotFound.
    let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    let missing = client.get(&format!("{path}/nobody")).await?;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()?["reason"], "NotFound");
    let refused = client.post_json(path, &json!({})).await?;
    assert_eq!((refused.status.as_u16(), refused.json()?["reason"].clone()), (405, json!("MethodNotAllowed")));

    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = load.join_next().await {
        joined??;
    }
    Ok(())
}

#[tokio::test]
async fn an_autoscaler_scales_on_requests_per_second_and_back() -> Result<()> {
    let server = server()?;
    let client = &server.client;
    let labels = json!({"app": "web"});
    let objects = [
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": "hello-http"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"rules": [{"host": "hpa.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "5"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}}),
    ];
    for object in &objects {
        create(client, object).await?;
    }
    let replicas = || async {
        let deployment = client.get("/apis/apps/v1/namespaces/default/deployments/web").await?.ok()?;
        deployment["spec"]["replicas"].as_i64().context("no spec.replicas")
    };
    let http = HttpClient::new();
    let addr = server.ingress_http()?;
    http.get_until_ok(addr, "hpa.test", "/", START).await?;

    // About a hundred requests a second, twenty times the target of one pod.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (http, stop) = (http.clone(), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (code, body) = http.get(addr, "hpa.test", "/").await?;
                anyhow::ensure!(code == 200, "{code}: {body}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        });
    }
    let scaled = eventually("the autoscaler scaling web up", Duration::from_secs(20), || async {
        let now = replicas().await?;
        Ok((now > 1).then_some(now))
    })
    .await?;
    assert!(scaled <= 3, "maxReplicas bounds the scale-up: {scaled}");
    eventually("web at its maximum, 3", Duration::from_secs(20), || async {
        let now = replicas().await?;
        if now > 3 {
            bail!("web went past maxReplicas: {now}");
        }
        Ok((now == 3).then_some(()))
    })
    .await?;
    // The status says what it measured (it is written after the scale).
    eventually("the autoscaler's status showing the request rate", Duration::from_secs(10), || async {
        let hpa = client.get("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web").await?.ok()?;
        let current = &hpa["status"]["currentMetrics"][0]["pods"];
        let measured =
            current["metric"]["name"] == "requests_per_second" && current["current"]["averageValue"].is_string();
        Ok((measured && hpa["status"]["desiredReplicas"] == 3).then_some(()))
    })
    .await?;

    // Idle again: back down to minReplicas once the scale-down window passes.
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = load.join_next().await {
        joined??;
    }
    eventually("the autoscaler scaling web back to 1", Duration::from_secs(25), || async {
        Ok((replicas().await? == 1).then_some(()))
    })
    .await?;
    Ok(())
}
