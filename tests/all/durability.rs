//! Acknowledged writes survive `kill -9`, and a restarted server serves what it had.

use crate::support::{Server, collection_path, kind, minimal_object, object_path};
use anyhow::Result;
use http::StatusCode;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9() -> Result<()> {
    let mut server = Server::start()?;
    let rt = kind("v1", "ConfigMap");
    let collection = collection_path(rt, Some("default"));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let client = server.client.clone();
        let collection = collection.clone();
        let acknowledged = acknowledged.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = gate.acquire().await else { return };
            let name = format!("cm-{i:04}");
            // Connection errors are expected once the server is killed.
            if let Ok(response) = client.post_json(&collection, &minimal_object(rt, &name)).await
                && response.status == StatusCode::CREATED
                && let Ok(mut list) = acknowledged.lock()
            {
                list.push(name);
            }
        }));
    }
    // Kill the server in the middle of the burst.
    loop {
        let done = acknowledged.lock().map(|l| l.len()).unwrap_or(0);
        if done >= 300 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    server.kill()?;
    for task in tasks {
        let _ = task.await;
    }
    let acknowledged = acknowledged.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(acknowledged.len() >= 300 && acknowledged.len() < 1000, "{} acknowledged", acknowledged.len());

    server.restart()?;
    let list = server.client.get(&collection).await?.ok()?;
    let stored: std::collections::HashSet<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged creates lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);

    // The reopened store takes writes again, with revisions moving on.
    let after = server.client.post_json(&collection, &minimal_object(rt, "after-restart")).await?.ok()?;
    let last_revision: u64 = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse()?;
    let new_revision: u64 = after["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse()?;
    assert!(new_revision > last_revision);
    Ok(())
}

#[tokio::test]
async fn objects_and_identity_persist_across_restart() -> Result<()> {
    let mut server = Server::start()?;
    let rt = kind("apps/v1", "Deployment");
    let created =
        server.client.post_json(&collection_path(rt, Some("default")), &minimal_object(rt, "web")).await?.ok()?;
    let token_before = std::fs::read_to_string(server.data_dir().join("admin.token"))?;
    server.restart()?;
    let fetched = server.client.get(&object_path(rt, Some("default"), "web")).await?.ok()?;
    assert_eq!(fetched, created);
    assert_eq!(std::fs::read_to_string(server.data_dir().join("admin.token"))?, token_before, "the token stays valid");
    Ok(())
}
