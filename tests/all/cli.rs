//! The `flotilla` command line against a real server: apply a directory of manifests
//! (created, then unchanged, then configured), get in every output, describe, delete,
//! and a bad manifest whose error names each field to fix.

use crate::support::{HttpClient, Server, repo_root};
use anyhow::Result;
use std::time::Duration;

#[tokio::test]
async fn apply_get_describe_delete_the_example_manifests() -> Result<()> {
    let server = Server::start()?;
    let manifests = repo_root().join("manifests/hello");
    let manifests = manifests.to_string_lossy();

    let (ok, out, err) = server.cli(&["apply", "-f", &manifests])?;
    assert!(ok, "{out}\n{err}");
    for line in [
        "namespace/hello created",
        "configmap/hello-config created",
        "secret/hello-secret created",
        "deployment.apps/hello created",
        "service/hello created",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let (ok, out, _) = server.cli(&["apply", "-f", &manifests])?;
    assert!(ok);
    assert!(out.contains("deployment.apps/hello unchanged") && !out.contains("configured"), "{out}");

    // Changing the manifest configures the object; a removed field goes away.
    let dir = tempfile::tempdir()?;
    let source = std::fs::read_to_string(repo_root().join("manifests/hello/20-deployment.yaml"))?;
    let edited = source
        .replace("replicas: 3", "replicas: 5")
        .replace("          ports:\n            - containerPort: 8080\n", "");
    assert_ne!(source, edited);
    let file = dir.path().join("deployment.yaml");
    std::fs::write(&file, edited)?;
    let (ok, out, err) = server.cli(&["apply", "-f", &file.to_string_lossy()])?;
    assert!(ok && out.contains("deployment.apps/hello configured"), "{out}\n{err}");
    let deployment = server.client.get("/apis/apps/v1/namespaces/hello/deployments/hello").await?.ok()?;
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert!(deployment["spec"]["template"]["spec"]["containers"][0]["ports"].is_null(), "{deployment}");
    assert_eq!(deployment["metadata"]["generation"], 2);

    let (ok, out, _) = server.cli(&["get", "deploy", "-n", "hello"])?;
    assert!(ok);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{out}");
    assert!(lines.next().unwrap_or("").starts_with("hello "), "{out}");

    let (ok, out, _) = server.cli(&["get", "svc,cm", "-n", "hello", "-o", "name"])?;
    assert!(ok);
    assert!(out.contains("service/hello") && out.contains("configmap/hello-config"), "{out}");
    let (ok, out, _) = server.cli(&["get", "configmap", "hello-config", "-n", "hello", "-o", "yaml"])?;
    assert!(ok);
    let yaml: serde_json::Value = serde_yaml_ng::from_str(&out)?;
    assert_eq!(yaml["data"]["GREETING"], "Hello from Flotilla");
    let (ok, out, _) = server.cli(&["get", "deployments", "-A", "-l", "app=hello", "-o", "json"])?;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(list["items"][0]["metadata"]["name"], "hello");

    let (ok, out, _) = server.cli(&["describe", "deployment", "hello", "-n", "hello"])?;
    assert!(ok);
    assert!(out.contains("Name:") && out.contains("hello") && out.contains("Events:"), "{out}");

    let (ok, out, err) = server.cli(&["get", "deploy", "missing", "-n", "hello"])?;
    assert!(!ok, "{out}");
    assert!(err.contains("deployments.apps \"missing\" not found"), "{err}");

    let workload = repo_root().join("manifests/hello/20-deployment.yaml");
    let (ok, out, err) = server.cli(&["delete", "-f", &workload.to_string_lossy()])?;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("deployment.apps \"hello\" deleted") && out.contains("service \"hello\" deleted"), "{out}");
    assert_eq!(server.client.get("/api/v1/namespaces/hello/services/hello").await?.status.as_u16(), 404);
    let (ok, out, err) = server.cli(&["delete", "namespace", "hello"])?;
    assert!(ok && out.contains("namespace \"hello\" deleted"), "{out}\n{err}");
    crate::crud::wait_until_gone(&server.client, "/api/v1/namespaces/hello").await?;
    let (ok, out, err) = server.cli(&["get", "configmap", "hello-config", "-n", "hello"])?;
    assert!(!ok, "gone with its namespace: {out}");
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_bad_manifest_is_refused_with_every_field_named() -> Result<()> {
    let server = Server::start()?;
    let bad = repo_root().join("tests/all/testdata/invalid-deployment.yaml");
    let (ok, out, err) = server.cli(&["apply", "-f", &bad.to_string_lossy()])?;
    assert!(!ok, "{out}");
    for expected in [
        "Error from server (Invalid)",
        "metadata.name: Invalid value: \"Broken_Name\"",
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.spec.containers[0].resources.limits[memory]",
    ] {
        assert!(err.contains(expected) || out.contains(expected), "missing {expected:?}:\n{out}\n{err}");
    }
    let (ok, _, err) = server.cli(&["get", "widgets"])?;
    assert!(!ok);
    assert!(err.contains("doesn't have a resource type \"widgets\""), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_server_applies_its_manifests_on_start() -> Result<()> {
    // As the README runs it: relative `--data-dir ./data` and `--manifests` paths.
    let copy_manifests = |dir: &std::path::Path| -> Result<()> {
        let to = dir.join("manifests/hello");
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(repo_root().join("manifests/hello"))? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
        Ok(())
    };
    let mut server = Server::start_in_fresh_directory(copy_manifests, &["--manifests", "manifests/hello"])?;
    assert!(server.data_dir().join("kubeconfig").is_file());
    let deployment = server.client.get("/apis/apps/v1/namespaces/hello/deployments/hello").await?.ok()?;
    assert_eq!(deployment["spec"]["replicas"], 3);
    // Its pods serve through its Ingress (the wasm runtime, its compile cache in ./data, works).
    let http = HttpClient::new();
    let ingress = server.ingress_http()?;
    let body = http.get_until_ok(ingress, "hello.flotilla.local", "/", Duration::from_secs(60)).await?;
    assert!(body.contains(" from hello-"), "{body}");
    // A restart applies them again without changing what they say (the controllers
    // write the Deployment's status meanwhile, so its resourceVersion moves on).
    server.restart()?;
    let again = server.client.get("/apis/apps/v1/namespaces/hello/deployments/hello").await?.ok()?;
    assert_eq!(again["spec"], deployment["spec"]);
    assert_eq!(again["metadata"]["generation"], deployment["metadata"]["generation"]);
    assert_eq!(again["metadata"]["labels"], deployment["metadata"]["labels"]);
    let applied = "kubectl.kubernetes.io/last-applied-configuration";
    assert_eq!(again["metadata"]["annotations"][applied], deployment["metadata"]["annotations"][applied]);
    Ok(())
}
