//! Watches: the initial state, live changes in order, selectors, resuming from a
//! resourceVersion across a restart, and 410 Gone once history is compacted.

use crate::support::{Server, collection_path, kind, list_revision, minimal_object, next_event, object_path, watch};
use anyhow::Result;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn watch_streams_changes_in_order_and_resumes() -> Result<()> {
    let mut server = Server::start()?;
    let rt = kind("v1", "ConfigMap");
    let collection = collection_path(rt, Some("default"));
    server.client.post_json(&collection, &minimal_object(rt, "before")).await?.ok()?;
    let start = list_revision(&server.client, &collection).await?;

    // Without a resourceVersion a watch starts with the current state.
    let mut from_now = watch(&server.client, &collection, "").await?;
    let initial = next_event(&mut from_now, WAIT).await?;
    assert_eq!(
        (initial["type"].as_str(), initial["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("before"))
    );

    let mut resumed =
        watch(&server.client, &collection, &format!("resourceVersion={start}&allowWatchBookmarks=true")).await?;
    let mut selected =
        watch(&server.client, &collection, &format!("resourceVersion={start}&labelSelector=app%3Dlive")).await?;

    let client = &server.client;
    let path = object_path(rt, Some("default"), "live");
    client.post_json(&collection, &minimal_object(rt, "live")).await?.ok()?;
    client.patch(&path, "application/merge-patch+json", &json!({"data": {"n": "1"}})).await?.ok()?;
    client
        .patch(&path, "application/merge-patch+json", &json!({"metadata": {"labels": {"app": "moved"}}}))
        .await?
        .ok()?;
    client.delete(&path).await?.ok()?;

    let mut seen = Vec::new();
    let mut last_revision = start;
    while seen.len() < 4 {
        let event = next_event(&mut resumed, WAIT).await?;
        if event["type"] == "BOOKMARK" {
            continue;
        }
        let revision: u64 = event["object"]["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse()?;
        assert!(revision > last_revision, "events arrive in revision order");
        last_revision = revision;
        seen.push(event["type"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);

    // The selector watch sees the object leave its selection as a DELETED.
    let mut selected_types = Vec::new();
    for _ in 0..3 {
        selected_types.push(next_event(&mut selected, WAIT).await?["type"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(selected_types, ["ADDED", "MODIFIED", "DELETED"]);

    // The live watch saw the same sequence after its initial state.
    assert_eq!(next_event(&mut from_now, WAIT).await?["type"], "ADDED");

    // History survives a restart: a watch from the old revision replays it.
    server.restart()?;
    let mut replay = watch(&server.client, &collection, &format!("resourceVersion={start}")).await?;
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(next_event(&mut replay, WAIT).await?["type"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(replayed, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
    Ok(())
}

#[tokio::test]
async fn too_old_resource_version_is_gone() -> Result<()> {
    let server = Server::start_with(&["--watch-history", "20"])?;
    let client = &server.client;
    let rt = kind("v1", "ConfigMap");
    let collection = collection_path(rt, Some("default"));
    client.post_json(&collection, &minimal_object(rt, "counter")).await?.ok()?;
    let path = object_path(rt, Some("default"), "counter");
    for i in 0..100 {
        client.patch(&path, "application/merge-patch+json", &json!({"data": {"n": i.to_string()}})).await?.ok()?;
    }
    let mut old = watch(client, &collection, "resourceVersion=2").await?;
    let event = next_event(&mut old, WAIT).await?;
    assert_eq!(event["type"], "ERROR", "{event}");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Gone");
    assert!(event["object"]["message"].as_str().unwrap_or("").starts_with("too old resource version: 2"), "{event}");

    // A recent revision still works.
    let recent = list_revision(client, &collection).await?;
    let mut fresh = watch(client, &collection, &format!("resourceVersion={recent}")).await?;
    client.patch(&path, "application/merge-patch+json", &json!({"data": {"n": "last"}})).await?.ok()?;
    assert_eq!(next_event(&mut fresh, WAIT).await?["type"], "MODIFIED");
    Ok(())
}

#[tokio::test]
async fn watch_list_sends_state_then_the_initial_events_end_bookmark() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let rt = kind("v1", "ConfigMap");
    let collection = collection_path(rt, Some("default"));
    for name in ["one", "two"] {
        client.post_json(&collection, &minimal_object(rt, name)).await?.ok()?;
    }
    let query = "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let mut stream = watch(client, &collection, query).await?;
    let mut added = Vec::new();
    let end = loop {
        let event = next_event(&mut stream, WAIT).await?;
        match event["type"].as_str() {
            Some("ADDED") => added.push(event["object"]["metadata"]["name"].as_str().unwrap_or("").to_string()),
            Some("BOOKMARK") => break event,
            other => anyhow::bail!("unexpected event {other:?}: {event}"),
        }
    };
    assert_eq!(added, ["one", "two"]);
    assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    let listed = list_revision(client, &collection).await?;
    assert_eq!(end["object"]["metadata"]["resourceVersion"], listed.to_string());
    client.post_json(&collection, &minimal_object(rt, "three")).await?.ok()?;
    let live = next_event(&mut stream, WAIT).await?;
    assert_eq!((live["type"].as_str(), live["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("three")));
    Ok(())
}
