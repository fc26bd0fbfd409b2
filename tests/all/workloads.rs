//! Workload controllers with real pods: a Deployment of hello-http runs on the built-in
//! node, heals, scales, rolls out and is collected with its ReplicaSets and pods. kubectl
//! drives it and reads the fields kube-controller-manager writes.

use crate::support::{Server, create, pod_request};
use anyhow::{Context as _, Result};
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/web";

fn deployment(replicas: u32, greeting: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "web", "image": "hello-http",
                    "env": [{"name": "GREETING", "value": greeting}]}]},
            },
        },
    })
}

/// The running, not terminating pods of app=web.
async fn web_pods(server: &Server) -> Result<Vec<Value>> {
    let list = server.client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb").await?.ok()?;
    Ok(list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect())
}

async fn wait_available(server: &Server, replicas: u64) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let web = server.client.get(DEPLOYMENT).await?.ok()?;
        let status = &web["status"];
        if status["availableReplicas"].as_u64().unwrap_or(0) == replicas
            && status["updatedReplicas"].as_u64().unwrap_or(0) == replicas
            && status["replicas"].as_u64().unwrap_or(0) == replicas
            && status["observedGeneration"] == web["metadata"]["generation"]
        {
            return Ok(web);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "web never had {replicas} available: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_deployment_runs_heals_scales_rolls_out_and_is_collected() -> Result<()> {
    let server = Server::start_with(&["--crash-backoff", "1s"])?;
    create(&server.client, &deployment(3, "v1")).await?;
    wait_available(&server, 3).await?;
    let (ok, stdout, stderr) = server.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    assert!(ok && stdout.contains("successfully rolled out"), "{stdout} {stderr}");
    let pods = web_pods(&server).await?;
    assert_eq!(pods.len(), 3);
    let first = pods[0]["metadata"]["name"].as_str().context("a pod name")?.to_string();
    let (code, body) = pod_request(&server.client, &first, Method::GET, "/", "").await?;
    assert_eq!((code, body.trim().to_string()), (200, format!("v1 from {first}")));

    // A deleted pod is replaced.
    server.client.delete(&format!("/api/v1/namespaces/default/pods/{first}")).await?.ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = web_pods(&server).await?;
        let names: Vec<&str> = pods.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
        if pods.len() == 3 && !names.contains(&first.as_str()) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no replacement for {first}: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_available(&server, 3).await?;

    // kubectl scale goes through the scale subresource.
    let (ok, _, stderr) = server.kubectl(&["scale", "deployment/web", "--replicas=5"])?;
    assert!(ok, "{stderr}");
    wait_available(&server, 5).await?;

    // A rolling update to a new template, then back.
    let (ok, _, stderr) = server.kubectl(&["set", "env", "deployment/web", "GREETING=v2"])?;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = server.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    assert!(ok && stdout.contains("successfully rolled out"), "{stdout} {stderr}");
    let web = wait_available(&server, 5).await?;
    assert_eq!(web["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    for pod in web_pods(&server).await? {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let (code, body) = pod_request(&server.client, name, Method::GET, "/", "").await?;
        assert_eq!((code, body.trim().to_string()), (200, format!("v2 from {name}")));
    }
    let (ok, stdout, stderr) = server.kubectl(&["get", "deployment", "web"])?;
    assert!(ok && stdout.contains("5/5"), "{stdout} {stderr}");

    // kubectl rollout undo puts revision 1's template back as revision 3.
    let (ok, _, stderr) = server.kubectl(&["rollout", "undo", "deployment/web"])?;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = server.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    assert!(ok && stdout.contains("successfully rolled out"), "{stdout} {stderr}");
    let web = wait_available(&server, 5).await?;
    assert_eq!(web["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    for pod in web_pods(&server).await? {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let (code, body) = pod_request(&server.client, name, Method::GET, "/", "").await?;
        assert_eq!((code, body.trim().to_string()), (200, format!("v1 from {name}")));
    }
    let (ok, stdout, stderr) = server.kubectl(&["rollout", "history", "deployment/web"])?;
    // Revision 1's ReplicaSet became revision 3, as in Kubernetes.
    let revisions: Vec<&str> = stdout.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(ok && revisions == ["2", "3"], "{stdout} {stderr}");

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    server.client.delete(DEPLOYMENT).await?.ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sets = server.client.get("/apis/apps/v1/namespaces/default/replicasets").await?.ok()?;
        let remaining = sets["items"].as_array().map_or(0, Vec::len) + web_pods(&server).await?.len();
        if remaining == 0 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{remaining} ReplicaSets and pods left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_rolling_update_killed_midway_finishes_after_a_restart() -> Result<()> {
    let mut server = Server::start_with(&["--crash-backoff", "1s"])?;
    let mut web = deployment(100, "v1");
    web["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    create(&server.client, &web).await?;
    wait_available(&server, 100).await?;

    // New pods turn ready only after a second, so the rollout takes a few batches' time.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "hello-http",
        "env": [{"name": "GREETING", "value": "v2"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 1}}]}}}});
    server.client.patch(DEPLOYMENT, "application/merge-patch+json", &patch).await?.ok()?;
    // Kill -9 once the rollout is under way, not done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let web = server.client.get(DEPLOYMENT).await?.ok()?;
        let status = web["status"].clone();
        let updated = status["updatedReplicas"].as_u64().unwrap_or(0);
        if status["observedGeneration"] == web["metadata"]["generation"] && updated > 0 {
            anyhow::ensure!(updated < 100, "the rollout finished before the kill: {status:#}");
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the rollout never started: {status:#}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.restart()?;

    let web = wait_available(&server, 100).await?;
    assert_eq!(web["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    let pods = web_pods(&server).await?;
    assert_eq!(pods.len(), 100, "no duplicates, none missing");
    let hashes: std::collections::BTreeSet<&str> =
        pods.iter().filter_map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str()).collect();
    assert_eq!(hashes.len(), 1, "every pod runs the new template: {hashes:?}");
    let sets = server.client.get("/apis/apps/v1/namespaces/default/replicasets").await?.ok()?;
    let replicas: Vec<u64> =
        sets["items"].as_array().into_iter().flatten().map(|rs| rs["spec"]["replicas"].as_u64().unwrap_or(0)).collect();
    assert_eq!(replicas.iter().sum::<u64>(), 100, "{replicas:?}");
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    Ok(())
}

/// The pods of Job `name`.
async fn job_pods(server: &Server, name: &str) -> Result<Vec<Value>> {
    let list =
        server.client.get(&format!("/api/v1/namespaces/default/pods?labelSelector=job-name%3D{name}")).await?.ok()?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

async fn wait_job(server: &Server, name: &str, condition: &str) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let path = format!("/apis/batch/v1/namespaces/default/jobs/{name}");
    loop {
        let job = server.client.get(&path).await?.ok()?;
        let done = job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == condition && c["status"] == "True");
        if done {
            return Ok(job);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "job {name} never {condition}: {:#}", job["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn jobs_run_their_completions_in_parallel_and_stop_at_the_backoff_limit() -> Result<()> {
    let server = Server::start_with(&["--crash-backoff", "1s"])?;
    create(
        &server.client,
        &json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "primes", "namespace": "default"},
            "spec": {"completions": 5, "parallelism": 2, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "batch", "image": "batch", "env": [{"name": "LIMIT", "value": "200000"}]}]}}},
        }),
    )
    .await?;
    // Never more than `parallelism` pods running at once, sampled throughout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut most_active = 0;
    loop {
        let pods = job_pods(&server, "primes").await?;
        let active =
            pods.iter().filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))).count();
        most_active = most_active.max(active);
        let succeeded = pods.iter().filter(|p| p["status"]["phase"] == "Succeeded").count();
        if succeeded >= 5 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "only {succeeded} of 5 succeeded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most_active <= 2, "{most_active} pods ran at once with parallelism 2");
    let job = wait_job(&server, "primes", "Complete").await?;
    assert_eq!((job["status"]["succeeded"].clone(), job["status"]["active"].clone()), (json!(5), json!(0)));
    assert!(job["status"]["completionTime"].is_string(), "{:#}", job["status"]);
    assert_eq!(job_pods(&server, "primes").await?.len(), 5, "no extra pods");
    let (ok, stdout, stderr) = server.kubectl(&["wait", "--for=condition=complete", "job/primes", "--timeout=10s"])?;
    assert!(ok, "{stdout} {stderr}");

    // A failing Job stops after backoffLimit + 1 failed pods.
    create(
        &server.client,
        &json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed", "namespace": "default"},
            "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "crash", "image": "crasher"}]}}},
        }),
    )
    .await?;
    let job = wait_job(&server, "doomed", "Failed").await?;
    let failed = job["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Failed").cloned();
    assert_eq!(failed.map(|c| c["reason"].clone()), Some(json!("BackoffLimitExceeded")));
    assert_eq!(job["status"]["failed"], 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job_pods(&server, "doomed").await?.len(), 3, "no pods after the job failed");
    Ok(())
}

#[tokio::test]
async fn flotilla_scales_and_drives_rollouts_like_kubectl() -> Result<()> {
    let server = Server::start_with(&["--crash-backoff", "1s"])?;
    create(&server.client, &deployment(2, "v1")).await?;
    let run = |args: &[&str]| -> Result<String> {
        let (ok, stdout, stderr) = server.cli(args)?;
        anyhow::ensure!(ok, "flotilla {args:?}: {stderr}");
        Ok(stdout)
    };
    let status = run(&["rollout", "status", "deployment/web", "--timeout", "60"])?;
    assert!(status.ends_with("deployment \"web\" successfully rolled out\n"), "{status}");
    assert_eq!(run(&["scale", "deployment/web", "--replicas", "3"])?.trim(), "deployment.apps/web scaled");
    wait_available(&server, 3).await?;

    assert_eq!(run(&["rollout", "restart", "deployment/web"])?.trim(), "deployment.apps/web restarted");
    run(&["rollout", "status", "deployment/web", "--timeout", "60"])?;
    let web = wait_available(&server, 3).await?;
    assert_eq!(web["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    let history = run(&["rollout", "history", "deployment/web"])?;
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Paused: a template change waits; resumed: it rolls out.
    run(&["rollout", "pause", "deployment/web"])?;
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"note": "while paused"}}}}});
    server.client.patch(DEPLOYMENT, "application/merge-patch+json", &patch).await?.ok()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused = server.client.get(DEPLOYMENT).await?.ok()?;
    assert_eq!(
        paused["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2",
        "nothing rolls while paused"
    );
    run(&["rollout", "resume", "deployment/web"])?;
    run(&["rollout", "status", "deployment/web", "--timeout", "60"])?;
    let resumed = wait_available(&server, 3).await?;
    assert_eq!(resumed["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");

    // Undo to revision 1: its ReplicaSet comes back as revision 4.
    let undone = run(&["rollout", "undo", "deployment/web", "--to-revision", "1"])?;
    assert_eq!(undone.trim(), "deployment.apps/web rolled back (to revision 1)");
    run(&["rollout", "status", "deployment/web", "--timeout", "60"])?;
    let web = wait_available(&server, 3).await?;
    assert_eq!(web["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4");
    assert!(web["spec"]["template"]["metadata"]["annotations"].get("kubectl.kubernetes.io/restartedAt").is_none());
    let history = run(&["rollout", "history", "deployment/web"])?;
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["2", "3", "4"], "{history}");
    Ok(())
}

#[tokio::test]
async fn kubectl_runs_a_cron_job_by_hand_and_its_jobs_go_with_it() -> Result<()> {
    let server = Server::start_with(&[])?;
    let manifest = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: default}
spec:
  schedule: "0 3 1 1 *"
  timeZone: Europe/Paris
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: batch, image: batch, env: [{name: LIMIT, value: "1000"}]}]
"#;
    let (ok, stdout, stderr) = server.kubectl_with_stdin(&["apply", "-f", "-"], manifest)?;
    assert!(ok, "{stdout} {stderr}");
    let (ok, stdout, stderr) = server.kubectl(&["get", "cronjob", "report"])?;
    assert!(ok, "{stderr}");
    let header = stdout.lines().next().unwrap_or_default();
    for column in ["SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE"] {
        assert!(header.contains(column), "{stdout}");
    }
    assert!(stdout.contains("0 3 1 1 *") && stdout.contains("Europe/Paris"), "{stdout}");

    // kubectl makes the Job from the template; the Job controller runs it to completion.
    let (ok, stdout, stderr) = server.kubectl(&["create", "job", "--from=cronjob/report", "report-now"])?;
    assert!(ok, "{stdout} {stderr}");
    let job = wait_job(&server, "report-now", "Complete").await?;
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");

    // Deleting the CronJob takes its Jobs and their pods with it.
    let (ok, _, stderr) = server.kubectl(&["delete", "cronjob", "report"])?;
    assert!(ok, "{stderr}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.client.get("/apis/batch/v1/namespaces/default/jobs/report-now").await?.status
        != http::StatusCode::NOT_FOUND
        || !job_pods(&server, "report-now").await?.is_empty()
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the cron job's job outlived it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
