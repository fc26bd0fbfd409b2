//! Acknowledged writes survive `kill -9` and a full disk, and a restarted server serves
//! what it had.

use crate::support::{Server, collection_path, eventually, kind, minimal_object, object_path};
use anyhow::{Context as _, Result};
use http::StatusCode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// A size-limited tmpfs mounted on a directory for one test (the tests run as root). When
/// dropped (after the server that used it) it is lazily unmounted, and the mount point and
/// its parent, the server's emptied temporary directory, are removed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()?;
        anyhow::ensure!(status.success(), "mount -t tmpfs on {}: {status}", dir.display());
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Writes `path` until the filesystem under it is full.
fn fill(path: &Path) -> Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0xa5_u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_with_a_status_then_recovers_losing_nothing() -> Result<()> {
    // Declared before the server, so dropped after it.
    let mut tmpfs = None;
    let mut server = Server::start_in_fresh_directory(
        |dir| {
            tmpfs = Some(Tmpfs::mount(&dir.join("data"), "8m")?);
            Ok(())
        },
        &["--controllers="],
    )?;
    let rt = kind("v1", "ConfigMap");
    let collection = collection_path(rt, Some("default"));
    let blob = "x".repeat(4096);
    // Every write is answered, within a bound: a full disk must not hang a request.
    let create = |name: String| {
        let (client, collection) = (server.client.clone(), collection.clone());
        let mut object = minimal_object(rt, &name);
        object["data"] = json!({"blob": blob});
        async move {
            tokio::time::timeout(Duration::from_secs(10), client.post_json(&collection, &object))
                .await
                .with_context(|| format!("creating {name} got no answer within 10 s"))?
                .map_err(anyhow::Error::from)
        }
    };
    let readyz = |client: flotilla::client::Client| async move {
        let response = client.get("/readyz").await?;
        anyhow::Ok((response.status, String::from_utf8_lossy(&response.body).into_owned()))
    };
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        acknowledged.push(create(format!("before-{i}")).await?.ok()?);
    }
    assert_eq!(readyz(server.client.clone()).await?.0, StatusCode::OK);

    // Fill the disk, then write until a write fails: with a Status, as a 5xx.
    let ballast = server.data_dir().join("ballast");
    fill(&ballast)?;
    let mut refused = None;
    for i in 0..10_000 {
        let response = create(format!("full-{i}")).await?;
        if response.status == StatusCode::CREATED {
            acknowledged.push(response.json()?);
            continue;
        }
        refused = Some(response);
        break;
    }
    let refused = refused.context("no write failed on a full disk")?;
    assert!(refused.status.is_server_error(), "{refused:?}");
    assert_eq!(refused.json()?["kind"], "Status", "{refused:?}");
    let (status, body) = readyz(server.client.clone()).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("[-]store failed"), "{body}");
    // Later writes fail too (with a Status), while the disk stays full.
    let again = create("while-full".into()).await?;
    assert!(again.status.is_server_error() && again.json()?["kind"] == "Status", "{again:?}");

    // Free the space: writes succeed again, and the server is ready.
    std::fs::remove_file(&ballast)?;
    let mut attempt = 0;
    let recovered = eventually("a write to succeed after space was freed", Duration::from_secs(20), || {
        attempt += 1;
        let response = create(format!("after-{attempt}"));
        async move {
            let response = response.await?;
            Ok((response.status == StatusCode::CREATED).then_some(response))
        }
    })
    .await?;
    acknowledged.push(recovered.json()?);
    for i in 0..10 {
        acknowledged.push(create(format!("later-{i}")).await?.ok()?);
    }
    let client = server.client.clone();
    eventually("/readyz to be ok again", Duration::from_secs(10), || {
        let ready = readyz(client.clone());
        async move { Ok((ready.await?.0 == StatusCode::OK).then_some(())) }
    })
    .await?;

    // Every acknowledged object is there after kill -9 and a restart, as acknowledged.
    server.kill()?;
    server.restart()?;
    for object in &acknowledged {
        let name = object["metadata"]["name"].as_str().context("a name")?;
        let stored = server.client.get(&object_path(rt, Some("default"), name)).await?.ok()?;
        assert_eq!(&stored, object, "{name} as acknowledged");
    }
    let listed = server.client.get(&collection).await?.ok()?;
    let count = listed["items"].as_array().map_or(0, Vec::len);
    // Writes whose commit reported an error may still have landed (as with etcd), but
    // none are missing.
    assert!(count >= acknowledged.len(), "{count} stored, {} acknowledged", acknowledged.len());
    assert_eq!(readyz(server.client.clone()).await?.0, StatusCode::OK);
    drop(server);
    drop(tmpfs);
    Ok(())
}
