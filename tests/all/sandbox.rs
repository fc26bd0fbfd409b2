//! Pods cannot reach beyond their grants: volume subPaths do not follow links out of the
//! volume, hostPath volumes and `file://` images need the node's say-so, and emptyDir
//! `sizeLimit` evicts the pod that goes over it.

use crate::support::{
    Server, container_status, create, is_ready, main_container, pod, pod_request, wait_for_event, wait_for_pod,
};
use anyhow::{Context as _, Result};
use http::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

/// Plants links in a volume's directory.
type Plant<'a> = dyn Fn(&Path) -> std::io::Result<()> + 'a;

/// The waiting reason and message of a pod's first container.
fn waiting(pod: &Value) -> (&str, &str) {
    let waiting = &container_status(pod)["state"]["waiting"];
    (waiting["reason"].as_str().unwrap_or_default(), waiting["message"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn host_path_volumes_and_file_images_are_refused_by_default() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--crash-backoff", "1s"])?;
    let client = &server.client;
    let host_dir = server.data_dir();
    let mut host = pod(
        "host",
        "echo",
        "Always",
        json!({"volumes": [{"name": "node", "hostPath": {"path": host_dir, "type": "Directory"}}]}),
    );
    main_container(&mut host)["volumeMounts"] = json!([{"name": "node", "mountPath": "/node"}]);
    create(client, &host).await?;
    create(client, &pod("by-file", &format!("file://{}", flotilla_examples::HELLO_HTTP), "Always", json!({}))).await?;

    let refused =
        wait_for_pod(client, "host", START, "refused", |p| waiting(p).0 == "CreateContainerConfigError").await?;
    let (_, message) = waiting(&refused);
    assert!(
        message.contains("hostPath volumes are not allowed") && message.contains("--allow-host-path-volumes"),
        "{message}"
    );
    let event = wait_for_event(client, "host", "Failed").await?;
    assert!(event["message"].as_str().is_some_and(|m| m.contains("--allow-host-path-volumes")), "{event:#}");

    let refused = wait_for_pod(client, "by-file", START, "refused", |p| {
        matches!(waiting(p).0, "ErrImagePull" | "ImagePullBackOff")
    })
    .await?;
    let (_, message) = waiting(&refused);
    assert!(message.contains("file:// images are not allowed") && message.contains("--allow-file-images"), "{message}");
    let event = wait_for_event(client, "by-file", "Failed").await?;
    assert!(event["message"].as_str().is_some_and(|m| m.contains("--allow-file-images")), "{event:#}");
    // Neither ever ran.
    for name in ["host", "by-file"] {
        let pod = client.get(&format!("/api/v1/namespaces/default/pods/{name}")).await?.ok()?;
        assert_eq!(pod["status"]["phase"], "Pending", "{name}: {:#}", pod["status"]);
    }
    Ok(())
}

#[tokio::test]
async fn host_path_volumes_and_file_images_run_when_the_node_allows_them() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--allow-host-path-volumes", "--allow-file-images"])?;
    let client = &server.client;
    let host_dir = tempfile::tempdir()?;
    std::fs::write(host_dir.path().join("greeting"), "from the node")?;
    let mut host = pod(
        "host",
        "echo",
        "Always",
        json!({"volumes": [{"name": "node", "hostPath": {"path": host_dir.path(), "type": "Directory"}}]}),
    );
    main_container(&mut host)["volumeMounts"] = json!([{"name": "node", "mountPath": "/node"}]);
    create(client, &host).await?;
    create(client, &pod("by-file", &format!("file://{}", flotilla_examples::HELLO_HTTP), "Always", json!({}))).await?;
    wait_for_pod(client, "host", START, "ready", is_ready).await?;
    wait_for_pod(client, "by-file", START, "ready", is_ready).await?;
    let (code, body) = pod_request(client, "host", Method::GET, "/fs/node/greeting", "").await?;
    assert_eq!((code, body.as_str()), (200, "from the node"));
    Ok(())
}

/// A gated pod running echo with volume `data` (an emptyDir) mounted at `/escaped` by
/// `sub_path`: it waits for its gate to be lifted before it is bound, so the test can
/// plant links in its volume first, as another container of the pod or an earlier run
/// could have. Answers the volume's directory on the node.
async fn gated_pod(server: &Server, name: &str, sub_path: &str) -> Result<std::path::PathBuf> {
    let mut gated = pod(
        name,
        "echo",
        "Always",
        json!({"schedulingGates": [{"name": "plant"}], "volumes": [{"name": "data", "emptyDir": {}}]}),
    );
    main_container(&mut gated)["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/escaped", "subPath": sub_path}]);
    let created = create(&server.client, &gated).await?;
    let uid = created["metadata"]["uid"].as_str().context("a uid")?;
    let volume = server.data_dir().join("pods").join(uid).join("volumes").join("data");
    std::fs::create_dir_all(&volume)?;
    Ok(volume)
}

async fn ungate(server: &Server, name: &str) -> Result<()> {
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    server
        .client
        .patch(&path, "application/merge-patch+json", &json!({"spec": {"schedulingGates": null}}))
        .await?
        .ok()?;
    Ok(())
}

#[tokio::test]
async fn sub_paths_do_not_follow_links_out_of_the_volume() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--crash-backoff", "1s"])?;
    let client = &server.client;
    let data_dir = server.data_dir();
    std::fs::write(data_dir.join("secret-of-the-node"), "node only")?;

    // Each kind of link, and the subPath that goes through it.
    let planted: [(&str, &str, &Plant<'_>); 5] = [
        ("to-root", "escape", &|volume: &Path| std::os::unix::fs::symlink("/", volume.join("escape"))),
        ("to-data-dir", "escape", &|volume: &Path| std::os::unix::fs::symlink(&data_dir, volume.join("escape"))),
        ("relative", "escape", &|volume: &Path| {
            std::os::unix::fs::symlink("../../../../../../../..", volume.join("escape"))
        }),
        ("chain", "escape", &|volume: &Path| {
            std::os::unix::fs::symlink("hop", volume.join("escape"))?;
            std::os::unix::fs::symlink("../..", volume.join("hop"))
        }),
        // A link in the middle of the path, under a real directory.
        ("middle", "real/link/tmp", &|volume: &Path| {
            std::fs::create_dir(volume.join("real"))?;
            std::os::unix::fs::symlink("/", volume.join("real/link"))
        }),
    ];
    for (name, sub_path, plant) in &planted {
        let volume = gated_pod(&server, name, sub_path).await?;
        plant(&volume)?;
        ungate(&server, name).await?;
    }
    // A plain subPath still works, made when missing, as kubelet makes it.
    let mut plain = pod("plain", "echo", "Always", json!({"volumes": [{"name": "data", "emptyDir": {}}]}));
    main_container(&mut plain)["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/escaped", "subPath": "made/for/it"}]);
    create(client, &plain).await?;

    for (name, _, _) in &planted {
        let refused =
            wait_for_pod(client, name, START, "refused", |p| waiting(p).0 == "CreateContainerConfigError").await?;
        let (_, message) = waiting(&refused);
        assert!(message.contains("is a symbolic link"), "{name}: {message}");
        assert_eq!(refused["status"]["phase"], "Pending", "{name} never ran: {:#}", refused["status"]);
        let event = wait_for_event(client, name, "Failed").await?;
        assert!(event["message"].as_str().is_some_and(|m| m.contains("symbolic link")), "{name}: {event:#}");
    }
    wait_for_pod(client, "plain", START, "ready", is_ready).await?;
    let (code, body) = pod_request(client, "plain", Method::PUT, "/fs/escaped/note", "inside").await?;
    assert_eq!(code, 201, "{body}");
    let (code, body) = pod_request(client, "plain", Method::GET, "/fs/escaped/note", "").await?;
    assert_eq!((code, body.as_str()), (200, "inside"));
    // The node is still up and its files untouched.
    assert_eq!(std::fs::read_to_string(data_dir.join("secret-of-the-node"))?, "node only");
    let ready = client.get("/readyz").await?;
    assert!(ready.status.is_success(), "/readyz: {}", ready.status);
    Ok(())
}

#[tokio::test]
async fn an_empty_dir_over_its_size_limit_gets_the_pod_evicted() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--eviction-monitoring-period", "200ms"])?;
    let client = &server.client;
    let mut writer =
        pod("writer", "echo", "Always", json!({"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]}));
    main_container(&mut writer)["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}]);
    create(client, &writer).await?;
    wait_for_pod(client, "writer", START, "ready", is_ready).await?;
    // Under the limit: nothing happens.
    let (code, body) = pod_request(client, "writer", Method::PUT, "/fs/scratch/small", &"x".repeat(100 * 1024)).await?;
    assert_eq!(code, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = client.get("/api/v1/namespaces/default/pods/writer").await?.ok()?;
    assert_eq!(running["status"]["phase"], "Running", "{:#}", running["status"]);
    // Over it: evicted, as kubelet says it.
    let (code, body) = pod_request(client, "writer", Method::PUT, "/fs/scratch/big", &"x".repeat(2 << 20)).await?;
    assert_eq!(code, 201, "{body}");
    let evicted = wait_for_pod(client, "writer", START, "evicted", |p| p["status"]["phase"] == "Failed").await?;
    let status = &evicted["status"];
    assert_eq!(status["reason"], "Evicted", "{status:#}");
    assert_eq!(status["message"], "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\".", "{status:#}");
    assert!(container_status(&evicted)["state"]["terminated"].is_object(), "{status:#}");
    let event = wait_for_event(client, "writer", "Evicted").await?;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"], status["message"]);
    // Stopped: it no longer answers.
    let (code, _) = pod_request(client, "writer", Method::GET, "/fs/scratch/small", "").await?;
    assert_ne!(code, 200);
    Ok(())
}
