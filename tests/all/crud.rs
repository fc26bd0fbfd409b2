//! Create, read, update, patch and delete for every kind, with Kubernetes' object
//! semantics: system fields, optimistic concurrency, generation, subresources,
//! selectors, paging and the namespace lifecycle.

use crate::support::{Server, collection_path, kind, list_revision, minimal_object, object_path};
use anyhow::Result;
use http::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn every_kind_goes_through_its_whole_life() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    for rt in flotilla_api::all_resources() {
        let ns = rt.namespaced.then_some("default");
        let name = format!("e2e-{}", rt.kind.to_lowercase());
        let collection = collection_path(rt, ns);
        let path = object_path(rt, ns, &name);
        let what = rt.kind;

        let created = client.post_json(&collection, &minimal_object(rt, &name)).await?;
        assert_eq!(created.status, StatusCode::CREATED, "{what}: {}", String::from_utf8_lossy(&created.body));
        let created = created.json()?;
        let meta = &created["metadata"];
        assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36), "{what}: uid {meta}");
        assert!(meta["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{what}: {meta}");
        assert_eq!(meta["generation"], 1, "{what}");
        assert_eq!(created["apiVersion"], rt.api_version().as_str(), "{what}");

        let fetched = client.get(&path).await?.ok()?;
        assert_eq!(fetched, created, "{what}: get returns what create returned");

        let listed = client.get(&collection).await?.ok()?;
        assert_eq!(listed["kind"], format!("{}List", rt.kind), "{what}");
        let names: Vec<&str> =
            listed["items"].as_array().into_iter().flatten().filter_map(|i| i["metadata"]["name"].as_str()).collect();
        assert!(names.contains(&name.as_str()), "{what}: {names:?}");

        let mut labelled = fetched.clone();
        labelled["metadata"]["labels"]["tier"] = json!("e2e");
        let updated = client.put_json(&path, &labelled).await?.ok()?;
        assert_eq!(updated["metadata"]["labels"]["tier"], "e2e", "{what}");
        assert_eq!(updated["metadata"]["generation"], 1, "{what}: a label change is not a spec change");
        let before: u64 = fetched["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse()?;
        let after: u64 = updated["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse()?;
        assert!(after > before, "{what}: resourceVersion moves forward");

        let merged = client
            .patch(&path, "application/merge-patch+json", &json!({"metadata": {"annotations": {"note": "merged"}}}))
            .await?
            .ok()?;
        assert_eq!(merged["metadata"]["annotations"]["note"], "merged", "{what}");
        let ops = json!([{"op": "add", "path": "/metadata/labels/patched", "value": "json"}]);
        let patched = client.patch(&path, "application/json-patch+json", &ops).await?.ok()?;
        assert_eq!(patched["metadata"]["labels"]["patched"], "json", "{what}");
        assert_eq!(patched["metadata"]["annotations"]["note"], "merged", "{what}");

        let deleted = client.delete(&path).await?;
        if rt.kind == "Namespace" {
            // A namespace is emptied first: accepted now, gone shortly.
            assert_eq!(deleted.status, StatusCode::ACCEPTED, "{what}");
            assert_eq!(deleted.json()?["status"]["phase"], "Terminating");
            wait_until_gone(client, &path).await?;
        } else {
            assert_eq!(deleted.status, StatusCode::OK, "{what}: {}", String::from_utf8_lossy(&deleted.body));
            assert_eq!(deleted.json()?["status"], "Success", "{what}");
        }
        let gone = client.get(&path).await?;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{what}");
        assert_eq!(gone.json()?["reason"], "NotFound", "{what}");
    }
    Ok(())
}

/// Polls until `path` answers 404 (for deletions that finish in the background).
pub async fn wait_until_gone(client: &flotilla::client::Client, path: &str) -> Result<()> {
    for _ in 0..200 {
        if client.get(path).await?.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    anyhow::bail!("{path} was not deleted within 5 s")
}

#[tokio::test]
async fn stale_updates_conflict_and_generation_follows_the_spec() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let rt = kind("apps/v1", "Deployment");
    let collection = collection_path(rt, Some("default"));
    let path = object_path(rt, Some("default"), "web");
    let first = client.post_json(&collection, &minimal_object(rt, "web")).await?.ok()?;

    let mut scaled = first.clone();
    scaled["spec"]["replicas"] = json!(3);
    let second = client.put_json(&path, &scaled).await?.ok()?;
    assert_eq!(second["metadata"]["generation"], 2);

    // Writing with the first resourceVersion again loses the race.
    let mut stale = first.clone();
    stale["spec"]["replicas"] = json!(5);
    let conflict = client.put_json(&path, &stale).await?;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let status = conflict.json()?;
    assert_eq!(status["reason"], "Conflict");
    assert!(status["message"].as_str().unwrap_or("").contains("the object has been modified"), "{status}");
    let now = client.get(&path).await?.ok()?;
    assert_eq!(now["spec"]["replicas"], 3, "the stale write changed nothing");

    // A patch carrying a stale resourceVersion is a precondition and conflicts too.
    let stale_patch =
        json!({"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "spec": {"replicas": 7}});
    assert_eq!(client.patch(&path, "application/merge-patch+json", &stale_patch).await?.status, StatusCode::CONFLICT);

    // Status is a subresource: the main resource ignores it, /status takes only it.
    let mut with_status = now.clone();
    with_status["status"] = json!({"replicas": 9});
    let ignored = client.put_json(&path, &with_status).await?.ok()?;
    assert!(ignored["status"]["replicas"].is_null(), "{ignored}");
    let mut status_write = ignored.clone();
    status_write["status"] = json!({"replicas": 2, "readyReplicas": 1});
    status_write["spec"]["replicas"] = json!(100);
    let with_status = client.put_json(&format!("{path}/status"), &status_write).await?.ok()?;
    assert_eq!(with_status["status"]["replicas"], 2);
    assert_eq!(with_status["spec"]["replicas"], 3, "/status does not touch spec");
    assert_eq!(with_status["metadata"]["generation"], 2, "a status write is not a spec change");

    // The scale subresource reads and writes spec.replicas.
    let scale = client.get(&format!("{path}/scale")).await?.ok()?;
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some(3)));
    assert_eq!(scale["status"]["selector"], "app=web");
    let scaled = client
        .patch(&format!("{path}/scale"), "application/merge-patch+json", &json!({"spec": {"replicas": 6}}))
        .await?
        .ok()?;
    assert_eq!(scaled["spec"]["replicas"], 6);
    assert_eq!(client.get(&path).await?.ok()?["spec"]["replicas"], 6);
    let negative = client
        .patch(&format!("{path}/scale"), "application/merge-patch+json", &json!({"spec": {"replicas": -1}}))
        .await?;
    assert_eq!(negative.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A strategic merge patch merges containers by name.
    let strategic = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "hello-http:2"}, {"name": "sidecar", "image": "log:1"}]}}}});
    let merged = client.patch(&path, "application/strategic-merge-patch+json", &strategic).await?.ok()?;
    let containers = merged["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(containers[0]["image"], "hello-http:2");
    assert_eq!(merged["metadata"]["generation"], 4);

    // An update that changes nothing writes nothing.
    let again = client.put_json(&path, &merged).await?.ok()?;
    assert_eq!(again["metadata"]["resourceVersion"], merged["metadata"]["resourceVersion"]);
    Ok(())
}

#[tokio::test]
async fn selectors_paging_and_generate_name() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let rt = kind("v1", "ConfigMap");
    let collection = collection_path(rt, Some("default"));
    for (i, tier) in ["web", "web", "db", "cache", "web"].iter().enumerate() {
        let mut object = minimal_object(rt, &format!("cm-{i}"));
        object["metadata"]["labels"] = json!({"tier": tier, "index": i.to_string()});
        client.post_json(&collection, &object).await?.ok()?;
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let query = |q: &str| format!("{collection}?{q}");
    assert_eq!(names(&client.get(&query("labelSelector=tier%3Dweb")).await?.ok()?), ["cm-0", "cm-1", "cm-4"]);
    assert_eq!(names(&client.get(&query("labelSelector=tier%20in%20(db,cache)")).await?.ok()?), ["cm-2", "cm-3"]);
    assert_eq!(names(&client.get(&query("labelSelector=tier!%3Dweb,index")).await?.ok()?), ["cm-2", "cm-3"]);
    assert_eq!(names(&client.get(&query("labelSelector=!tier")).await?.ok()?), Vec::<String>::new());
    assert_eq!(names(&client.get(&query("fieldSelector=metadata.name%3Dcm-3")).await?.ok()?), ["cm-3"]);
    assert_eq!(
        names(
            &client
                .get(&query(
                    "fieldSelector=metadata.name!%3Dcm-3,metadata.namespace%3Ddefault&labelSelector=tier%3Dweb"
                ))
                .await?
                .ok()?
        ),
        ["cm-0", "cm-1", "cm-4"]
    );

    // Pages of two, stitched together with continue tokens, are the whole list.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client.get(&query(&format!("limit=2&continue={token}"))).await?.ok()?;
        let page_names = names(&page);
        assert!(page_names.len() <= 2);
        seen.extend(page_names);
        match page["metadata"]["continue"].as_str() {
            Some(next) => token = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);

    // Lists across namespaces.
    let ns = kind("v1", "Namespace");
    client.post_json(&collection_path(ns, None), &json!({"metadata": {"name": "other"}})).await?.ok()?;
    client.post_json(&collection_path(rt, Some("other")), &minimal_object(rt, "elsewhere")).await?.ok()?;
    let everywhere = names(&client.get(&collection_path(rt, None)).await?.ok()?);
    assert!(
        everywhere.contains(&"elsewhere".to_string()) && everywhere.contains(&"cm-0".to_string()),
        "{everywhere:?}"
    );

    // YAML in, YAML out when Accept asks for it.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  labels: {tier: yaml}\ndata:\n  k: v\n";
    let created = client.send(http::Method::POST, &collection, "application/yaml", yaml.into()).await?.ok()?;
    assert_eq!(created["data"]["k"], "v");
    let as_yaml = client
        .send_accepting(http::Method::GET, &format!("{collection}/from-yaml"), "", Vec::new(), "application/yaml")
        .await?;
    assert_eq!(as_yaml.status, StatusCode::OK);
    let parsed: Value = serde_yaml_ng::from_slice(&as_yaml.body)?;
    assert_eq!(parsed["metadata"]["uid"], created["metadata"]["uid"]);
    // Booleans in query strings are read leniently.
    for flag in ["true", "True", "1"] {
        let response = client.get(&query(&format!("watch={flag}&timeoutSeconds=1"))).await?;
        assert_eq!(response.status, StatusCode::OK, "watch={flag}");
        assert!(String::from_utf8_lossy(&response.body).contains("\"ADDED\""), "watch={flag}");
    }

    // deletecollection removes exactly what the selector picks.
    let deleted = client.delete(&query("labelSelector=tier%3Dweb")).await?.ok()?;
    assert_eq!(names(&deleted), ["cm-0", "cm-1", "cm-4"]);
    assert_eq!(names(&client.get(&query("labelSelector=tier")).await?.ok()?), ["cm-2", "cm-3", "from-yaml"]);

    // fieldValidation: Warn (the default) keeps the request and says what was dropped.
    let typo = json!({"metadata": {"name": "typo"}, "data": {"a": "b"}, "datta": {"c": "d"}});
    let warned = client.send(http::Method::POST, &collection, "application/json", serde_json::to_vec(&typo)?).await?;
    assert_eq!(warned.status, StatusCode::CREATED);
    assert!(warned.json()?.get("datta").is_none(), "the unknown field is dropped");
    let warnings: Vec<&str> = warned.headers.get_all("warning").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"datta\"""#]);
    let ignored = client
        .post_json(&query("fieldValidation=Ignore"), &json!({"metadata": {"name": "typo2"}, "datta": {}}))
        .await?;
    assert_eq!(ignored.status, StatusCode::CREATED);

    // generateName draws a unique name.
    let generated = json!({"metadata": {"generateName": "gen-"}, "data": {"a": "b"}});
    let first = client.post_json(&collection, &generated).await?.ok()?;
    let second = client.post_json(&collection, &generated).await?.ok()?;
    let (a, b) = (first["metadata"]["name"].as_str().unwrap_or(""), second["metadata"]["name"].as_str().unwrap_or(""));
    assert!(a.starts_with("gen-") && a.len() == 9 && a != b, "{a} {b}");
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_and_namespaces_cascade() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let cm = kind("v1", "ConfigMap");
    let path = object_path(cm, Some("default"), "held");
    let mut held = minimal_object(cm, "held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    client.post_json(&collection_path(cm, Some("default")), &held).await?.ok()?;
    let deleting = client.delete(&path).await?;
    assert_eq!(deleting.status, StatusCode::ACCEPTED);
    let deleting = client.get(&path).await?.ok()?;
    assert!(deleting["metadata"]["deletionTimestamp"].is_string(), "{deleting}");
    let added = client
        .patch(
            &path,
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
        )
        .await?;
    assert_eq!(added.status, StatusCode::UNPROCESSABLE_ENTITY, "no new finalizers while deleting");
    client.patch(&path, "application/merge-patch+json", &json!({"metadata": {"finalizers": null}})).await?.ok()?;
    assert_eq!(client.get(&path).await?.status, StatusCode::NOT_FOUND, "removing the last finalizer deletes");

    // Preconditions on delete.
    client.post_json(&collection_path(cm, Some("default")), &minimal_object(cm, "guarded")).await?.ok()?;
    let guarded = object_path(cm, Some("default"), "guarded");
    let wrong_uid = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "not-the-uid"}});
    let refused =
        client.send(http::Method::DELETE, &guarded, "application/json", serde_json::to_vec(&wrong_uid)?).await?;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(client.get(&guarded).await?.status, StatusCode::OK);

    // A namespace's deletion takes its contents with it.
    let ns = kind("v1", "Namespace");
    let deploy = kind("apps/v1", "Deployment");
    client.post_json(&collection_path(ns, None), &json!({"metadata": {"name": "doomed"}})).await?.ok()?;
    client.post_json(&collection_path(deploy, Some("doomed")), &minimal_object(deploy, "web")).await?.ok()?;
    client.post_json(&collection_path(cm, Some("doomed")), &minimal_object(cm, "settings")).await?.ok()?;
    let namespace = client.delete(&object_path(ns, None, "doomed")).await?;
    assert_eq!(namespace.status, StatusCode::ACCEPTED);
    assert_eq!(namespace.json()?["status"]["phase"], "Terminating");
    let refused = client.post_json(&collection_path(cm, Some("doomed")), &minimal_object(cm, "late")).await?;
    assert!(refused.status == StatusCode::FORBIDDEN || refused.status == StatusCode::NOT_FOUND, "{}", refused.status);
    wait_until_gone(client, &object_path(ns, None, "doomed")).await?;
    assert_eq!(client.get(&object_path(deploy, Some("doomed"), "web")).await?.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client.get(&collection_path(cm, None)).await?.ok()?["items"]
            .as_array()
            .map(|i| i.iter().any(|o| o["metadata"]["namespace"] == "doomed")),
        Some(false)
    );

    // System namespaces stay.
    assert_eq!(client.delete(&object_path(ns, None, "default")).await?.status, StatusCode::FORBIDDEN);
    assert!(list_revision(client, &collection_path(ns, None)).await? > 0);
    Ok(())
}

#[tokio::test]
async fn discovery_describes_every_kind() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let version = client.get("/version").await?.ok()?;
    assert_eq!((version["major"].as_str(), version["minor"].as_str()), (Some("1"), Some("37")));
    assert_eq!(client.get("/api").await?.ok()?["versions"], json!(["v1"]));
    let groups = client.get("/apis").await?.ok()?;
    for rt in flotilla_api::all_resources() {
        let list_path =
            if rt.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", rt.group, rt.version) };
        if !rt.group.is_empty() {
            let group = groups["groups"].as_array().into_iter().flatten().find(|g| g["name"] == rt.group);
            assert!(group.is_some(), "group {} in /apis", rt.group);
        }
        let resources = client.get(&list_path).await?.ok()?;
        let entry = resources["resources"].as_array().into_iter().flatten().find(|r| r["name"] == rt.plural).cloned();
        let entry = entry.unwrap_or_else(|| panic!("{} in {list_path}", rt.plural));
        assert_eq!(entry["kind"], rt.kind);
        assert_eq!(entry["namespaced"], rt.namespaced);
        assert_eq!(entry["shortNames"].as_array().map(Vec::len).unwrap_or(0), rt.short_names.len());
    }
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(client.get(path).await?.status, StatusCode::OK);
    }
    Ok(())
}
