//! Workload bench: a Deployment of hello-http scaled 0 → N available, and a rolling
//! update of N replicas, end to end on one in-process node (API server, scheduler,
//! controllers, node: real pods). Baseline measured in the same run: the same number of
//! bare pods created by a client until all are Ready, i.e. what a controller adds on top
//! of scheduling and running pods.
//!
//! `cargo bench -p flotilla --bench workloads` (1,000 replicas; `-- --quick`: 200).

#[path = "support/allocator.rs"]
mod allocator;
#[path = "support/mod.rs"]
mod support;
use support::report::Report;

use anyhow::{Result, bail};
use flotilla_client::{Cluster, ListParams, Patch, resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(300);
const SCALE_TARGET: Duration = Duration::from_secs(2);

fn deployment(namespace: &str, greeting: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "web", "image": "hello-http",
                    "env": [{"name": "GREETING", "value": greeting}]}]}}},
    })
}

async fn namespace(cluster: &Arc<dyn Cluster>, name: &str) -> Result<()> {
    let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    cluster.create(resource("v1", "Namespace"), None, &object).await?;
    Ok(())
}

/// Polls the Deployment until `done(status)`.
async fn wait_deployment(cluster: &Arc<dyn Cluster>, ns: &str, done: impl Fn(&Value) -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let web = cluster.get(resource("apps/v1", "Deployment"), Some(ns), "web").await?;
        if web["status"]["observedGeneration"] == web["metadata"]["generation"] && done(&web["status"]) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > LIMIT {
            bail!("the deployment did not get there: {:#}", web["status"]);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or(0)
}

/// Bare pods created 64 at a time until all are Ready: the baseline.
async fn bare_pods(cluster: &Arc<dyn Cluster>, ns: &str, n: usize) -> Result<Duration> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..64 {
        let cluster = cluster.clone();
        let ns = ns.to_string();
        tasks.spawn(async move {
            for i in (chunk..n).step_by(64) {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("bare-{i}"), "namespace": ns},
                    "spec": {"containers": [{"name": "web", "image": "hello-http"}]}});
                cluster.create(resource("v1", "Pod"), Some(&ns), &pod).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    loop {
        let list = cluster.list(resource("v1", "Pod"), Some(ns), &ListParams::default()).await?;
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if ready == n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > LIMIT {
            bail!("only {ready} of {n} bare pods Ready");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("FLOTILLA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let replicas: u64 = if quick { 200 } else { 1000 };
    let n = usize::try_from(replicas)?;
    let tc = support::cluster::start_cluster(20_000, true).await?;
    let cluster = &tc.cluster;

    // Warm the node's compile cache, so no round pays for compiling hello-http.
    namespace(cluster, "warm").await?;
    bare_pods(cluster, "warm", 1).await?;

    namespace(cluster, "bare").await?;
    let baseline = bare_pods(cluster, "bare", n).await?;

    namespace(cluster, "deploy").await?;
    cluster.create(resource("apps/v1", "Deployment"), Some("deploy"), &deployment("deploy", "v1")).await?;
    let scale = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    cluster.patch(resource("apps/v1", "Deployment"), Some("deploy"), "web", &scale, None).await?;
    let scaled = wait_deployment(cluster, "deploy", |s| count(s, "availableReplicas") == replicas).await?;

    let update =
        Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hello-http",
        "env": [{"name": "GREETING", "value": "v2"}]}]}}}}));
    cluster.patch(resource("apps/v1", "Deployment"), Some("deploy"), "web", &update, None).await?;
    let rolled = wait_deployment(cluster, "deploy", |s| {
        count(s, "updatedReplicas") == replicas
            && count(s, "availableReplicas") == replicas
            && count(s, "replicas") == replicas
    })
    .await?;

    let ratio = |figure: Duration| figure.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
    let mut report = Report::default();
    let bare = format!("{n} bare pods created → Ready {:.2} s", baseline.as_secs_f64());
    report.row(
        format!("Deployment scale 0 → {replicas} available"),
        format!("{:.2} s", scaled.as_secs_f64()),
        bare.clone(),
        ratio(scaled),
    );
    report.row(
        format!("rolling update of {replicas} replicas (25%/25%)"),
        format!("{:.2} s", rolled.as_secs_f64()),
        bare,
        ratio(rolled),
    );
    if !quick {
        report.target(
            format!("Deployment scale 0 → 1,000 available under 2 s ({:.2} s)", scaled.as_secs_f64()),
            scaled <= SCALE_TARGET,
        );
    }
    report.print();
    drop(tc);
    Ok(())
}
