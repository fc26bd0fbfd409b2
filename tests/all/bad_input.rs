//! Bad input gets a `Status` with the right code, reason and a message naming the
//! problem, and changes nothing: the store's revision is the same after every case.

use crate::support::{Server, collection_path, kind, list_revision, minimal_object};
use anyhow::{Context as _, Result};
use flotilla::client::Client;
use http::Method;
use serde_json::{Value, json};

/// One bad request and what the server must answer.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    code: u16,
    reason: &'static str,
    /// Text the message must contain (the field or the problem it names).
    message: &'static str,
}

#[expect(clippy::too_many_arguments, reason = "one row of the table of cases")]
fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
    code: u16,
    reason: &'static str,
    message: &'static str,
) -> Case {
    Case { what, method, path: path.into(), content_type, body: body.into(), code, reason, message }
}

fn json_body(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A client that presents `token` (or none) to the server the kubeconfig names.
fn client_with_token(kubeconfig: &std::path::Path, token: Option<&str>) -> Result<Client> {
    let config: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    let cluster = &config["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().context("server")?;
    let ca = cluster["certificate-authority-data"].as_str().context("ca")?;
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
    Ok(Client::new(server, token.map(str::to_string), Some(&ca), "default".into())?)
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_change_nothing() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let cm = kind("v1", "ConfigMap");
    let deploy = kind("apps/v1", "Deployment");
    let cms = collection_path(cm, Some("default"));
    let deploys = collection_path(deploy, Some("default"));
    client.post_json(&cms, &minimal_object(cm, "existing")).await?.ok()?;
    let existing = client.post_json(&deploys, &minimal_object(deploy, "web")).await?.ok()?;
    let mut stale = existing.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["replicas"] = json!(4);

    let mut bad_quantity = minimal_object(deploy, "hungry");
    bad_quantity["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "lots"}});
    let mut negative = minimal_object(deploy, "negative");
    negative["spec"]["replicas"] = json!(-2);
    let mut wrong_type = minimal_object(deploy, "typed");
    wrong_type["spec"]["replicas"] = json!("three");
    let mut always_job = minimal_object(kind("batch/v1", "Job"), "forever");
    always_job["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let mut mismatched = minimal_object(deploy, "selector");
    mismatched["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let jobs = collection_path(kind("batch/v1", "Job"), Some("default"));
    let cron = kind("batch/v1", "CronJob");
    let cron_jobs = collection_path(cron, Some("default"));
    let mut bad_schedule = minimal_object(cron, "nightly");
    bad_schedule["spec"]["schedule"] = json!("every night");
    let mut bad_zone = minimal_object(cron, "martian");
    bad_zone["spec"]["timeZone"] = json!("Mars/Olympus_Mons");
    let json = "application/json";
    let merge = "application/merge-patch+json";
    let json_patch = "application/json-patch+json";
    let pods = collection_path(kind("v1", "Pod"), Some("default"));
    let mut endless_grace = minimal_object(kind("v1", "Pod"), "endless");
    endless_grace["spec"]["terminationGracePeriodSeconds"] = json!(i64::MAX);
    // 40 copies of /data into itself would double the object 40 times (2.5 KB of request).
    let doubling: Vec<Value> =
        (0..40).map(|i| json!({"op": "copy", "from": "/data", "path": format!("/data/d{i}")})).collect();
    let too_many_ops = vec![json!({"op": "test", "path": "/kind", "value": "ConfigMap"}); 10_001];
    // One anchor of 3,000 items referenced 3,000 times: 9 million values from 15 KB.
    let yaml_bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\nx: &a [{}]\ny: [{}]\n",
        vec!["x"; 3000].join(","),
        vec!["*a"; 3000].join(",")
    );
    let huge_name = json_body(json!({"metadata": {"name": format!("Bad_{}", "a".repeat(100_000))}}));

    #[rustfmt::skip]
    let cases = vec![
        case("malformed JSON", Method::POST, &cms, json, "{\"metadata\": {", 400, "BadRequest", "not valid JSON"),
        case("malformed YAML", Method::POST, &cms, "application/yaml", "metadata: [unclosed", 400, "BadRequest", "not valid YAML"),
        case("body is not an object", Method::POST, &cms, json, "[1, 2]", 400, "BadRequest", "must be an object"),
        case("apiVersion/kind mismatch", Method::POST, &cms, json, json_body(minimal_object(deploy, "x")), 400, "BadRequest", "does not match the expected API version"),
        case("unknown resource", Method::GET, "/api/v1/namespaces/default/widgets", "", "", 404, "NotFound", "could not find the requested resource"),
        case("unknown group", Method::GET, "/apis/example.com/v1/things", "", "", 404, "NotFound", "could not find"),
        case("invalid name", Method::POST, &cms, json, json_body(json!({"metadata": {"name": "Bad_Name"}})), 422, "Invalid", "metadata.name: Invalid value: \"Bad_Name\""),
        case("over-long name", Method::POST, &cms, json, json_body(json!({"metadata": {"name": "a".repeat(254)}})), 422, "Invalid", "metadata.name"),
        case("missing name", Method::POST, &cms, json, json_body(json!({"data": {}})), 422, "Invalid", "name or generateName is required"),
        case("duplicate create", Method::POST, &cms, json, json_body(minimal_object(cm, "existing")), 409, "AlreadyExists", "configmaps \"existing\" already exists"),
        case("stale resourceVersion", Method::PUT, format!("{deploys}/web"), json, json_body(stale), 409, "Conflict", "the object has been modified"),
        case("body too large", Method::POST, &cms, json, vec![b' '; 4 * 1024 * 1024], 413, "RequestEntityTooLarge", "larger than the limit"),
        case("wrong content type", Method::POST, &cms, "text/plain", "hello", 415, "UnsupportedMediaType", "text/plain"),
        case("apply without a field manager", Method::PATCH, format!("{cms}/existing"), "application/apply-patch+yaml", "{}", 422, "Invalid", "fieldManager: Required value"),
        case("unknown patch type", Method::PATCH, format!("{cms}/existing"), "application/xml-patch", "<p/>", 415, "UnsupportedMediaType", "application/xml-patch"),
        case("invalid label selector", Method::GET, format!("{cms}?labelSelector=a%20in%20(b"), "", "", 400, "BadRequest", "unable to parse requirement"),
        case("unsupported field selector", Method::GET, format!("{cms}?fieldSelector=spec.bogus%3Dx"), "", "", 400, "BadRequest", "field label not supported: spec.bogus"),
        case("invalid limit", Method::GET, format!("{cms}?limit=lots"), "", "", 400, "BadRequest", "limit"),
        case("invalid continue token", Method::GET, format!("{cms}?limit=1&continue=garbage"), "", "", 400, "BadRequest", "continue token"),
        case("invalid quantity", Method::POST, &deploys, json, json_body(bad_quantity), 422, "Invalid", "spec.template.spec.containers[0].resources.limits[memory]"),
        case("negative replicas", Method::POST, &deploys, json, json_body(negative), 422, "Invalid", "spec.replicas: Invalid value: -2: must be greater than or equal to 0"),
        case("wrong field type", Method::POST, &deploys, json, json_body(wrong_type), 422, "Invalid", "spec.replicas"),
        case("selector does not match template", Method::POST, &deploys, json, json_body(mismatched), 422, "Invalid", "`selector` does not match template `labels`"),
        case("job that never ends", Method::POST, &jobs, json, json_body(always_job), 422, "Invalid", "spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        case("unparseable cron schedule", Method::POST, &cron_jobs, json, json_body(bad_schedule), 422, "Invalid", "spec.schedule: Invalid value: \"every night\""),
        case("unknown cron time zone", Method::POST, &cron_jobs, json, json_body(bad_zone), 422, "Invalid", "spec.timeZone: Invalid value: \"Mars/Olympus_Mons\": unknown time zone Mars/Olympus_Mons"),
        case("patch of a missing object", Method::PATCH, format!("{cms}/missing"), merge, "{\"data\": {}}", 404, "NotFound", "configmaps \"missing\" not found"),
        case("JSON patch of a missing path", Method::PATCH, format!("{cms}/existing"), "application/json-patch+json", json_body(json!([{"op": "replace", "path": "/spec/nothing", "value": 1}])), 422, "Invalid", "could not be applied"),
        case("namespace mismatch", Method::POST, &cms, json, json_body(json!({"metadata": {"name": "x", "namespace": "kube-system"}})), 400, "BadRequest", "does not match the namespace"),
        case("name mismatch on update", Method::PUT, format!("{cms}/existing"), json, json_body(minimal_object(cm, "other")), 400, "BadRequest", "does not match the name on the URL"),
        case("missing namespace", Method::POST, collection_path(cm, Some("nowhere")), json, json_body(minimal_object(cm, "x")), 404, "NotFound", "namespaces \"nowhere\" not found"),
        case("path traversal in name", Method::GET, format!("{cms}/.."), "", "", 400, "BadRequest", "invalid resource name"),
        case("encoded traversal in name", Method::GET, format!("{cms}/%2e%2e%2fsecrets"), "", "", 400, "BadRequest", "invalid resource name"),
        case("bad propagation policy", Method::DELETE, format!("{cms}/existing?propagationPolicy=Sideways"), "", "", 422, "Invalid", "propagationPolicy"),
        case("watch-list without resourceVersionMatch", Method::GET, format!("{cms}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"), "", "", 422, "Invalid", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"),
        case("strict field validation", Method::POST, format!("{cms}?fieldValidation=Strict"), json, json_body(json!({"metadata": {"name": "typo"}, "datta": {}})), 400, "BadRequest", "strict decoding error: unknown field \"datta\""),
        case("unknown fieldValidation", Method::POST, format!("{cms}?fieldValidation=Loose"), json, json_body(minimal_object(cm, "x")), 400, "BadRequest", "fieldValidation"),
        case("unparseable boolean", Method::GET, format!("{cms}?watch=maybe"), "", "", 400, "BadRequest", "invalid boolean value for watch"),
        case("method not allowed", Method::POST, format!("{cms}/existing"), json, "{}", 405, "MethodNotAllowed", "POST"),
        case("grace period past the end of time", Method::POST, &pods, json, json_body(endless_grace), 422, "Invalid", "spec.terminationGracePeriodSeconds: Invalid value: 9223372036854775807: must be between 0 and 2147483647, inclusive"),
        case("JSON patch that doubles the object", Method::PATCH, format!("{cms}/existing"), json_patch, json_body(Value::Array(doubling)), 413, "RequestEntityTooLarge", "copies more than 3145728 bytes"),
        case("JSON patch with too many operations", Method::PATCH, format!("{cms}/existing"), json_patch, json_body(Value::Array(too_many_ops)), 413, "RequestEntityTooLarge", "maximum operations in a JSON patch is 10000, got 10001"),
        case("YAML alias bomb", Method::POST, &cms, "application/yaml", yaml_bomb, 400, "BadRequest", "expands (through YAML aliases) beyond"),
        case("a bad value is quoted, not echoed", Method::POST, &cms, json, huge_name, 422, "Invalid", "(truncated)"),
    ];
    assert!(cases.len() >= 20);

    let revision = list_revision(client, &cms).await?;
    for case in &cases {
        let response = client.send(case.method.clone(), &case.path, case.content_type, case.body.clone()).await?;
        let status = response.json().with_context(|| format!("{}: body", case.what))?;
        assert_eq!(response.status.as_u16(), case.code, "{}: {status}", case.what);
        assert_eq!(status["kind"], "Status", "{}", case.what);
        assert_eq!(status["status"], "Failure", "{}", case.what);
        assert_eq!(status["code"], case.code, "{}", case.what);
        assert_eq!(status["reason"], case.reason, "{}: {status}", case.what);
        let message = status["message"].as_str().unwrap_or("");
        assert!(message.contains(case.message), "{}: message {message:?} lacks {:?}", case.what, case.message);
        // An answer is never much larger than what a Status needs, whatever the request.
        assert!(response.body.len() < 32 * 1024, "{}: {} bytes of answer", case.what, response.body.len());
        if case.reason == "Invalid" && case.message.contains('.') && !case.what.contains("patch") {
            let causes = status["details"]["causes"].as_array().cloned().unwrap_or_default();
            assert!(!causes.is_empty(), "{}: Invalid names its fields in details.causes: {status}", case.what);
        }
    }
    // Nothing above wrote anything, and the server still serves.
    assert_eq!(list_revision(client, &cms).await?, revision, "bad input changed the store");
    let unchanged = client.get(&format!("{deploys}/web")).await?.ok()?;
    assert_eq!(unchanged, existing);

    // Without a valid token nothing but health and version is served.
    for token in [None, Some("not-the-token")] {
        let stranger = client_with_token(&server.kubeconfig, token)?;
        let response = stranger.get(&cms).await?;
        assert_eq!(response.status.as_u16(), 401, "token {token:?}");
        assert_eq!(response.json()?["reason"], "Unauthorized");
        assert_eq!(stranger.post_json(&cms, &minimal_object(cm, "intruder")).await?.status.as_u16(), 401);
        assert_eq!(stranger.get("/healthz").await?.status.as_u16(), 200);
    }
    assert_eq!(list_revision(client, &cms).await?, revision);
    Ok(())
}

/// The request sequences that took the whole server down (issue 13): each is answered
/// with a Status or served, the server stays ready, and it starts again on what they
/// left in its data directory.
#[tokio::test]
async fn hostile_requests_leave_the_server_serving() -> Result<()> {
    let mut server = Server::start_with(&[])?;
    let client = &server.client;
    client.post_json("/api/v1/namespaces", &json!({"metadata": {"name": "hostile"}})).await?.ok()?;
    let pods = collection_path(kind("v1", "Pod"), Some("hostile"));
    let mut running = crate::support::pod("p", "hello-http", "Always", json!({}));
    running["metadata"]["namespace"] = json!("hostile");
    client.post_json(&pods, &running).await?.ok()?;
    let pod_path = format!("{pods}/p");
    crate::support::eventually("the pod runs", std::time::Duration::from_secs(60), || async {
        let pod = client.get(&pod_path).await?.ok()?;
        Ok(crate::support::is_ready(&pod).then_some(()))
    })
    .await?;

    // Durations past the end of time, in the query: answered, not a dropped connection.
    let forever = u64::MAX;
    let (status, _body) = client.stream(&format!("{pods}?watch=1&timeoutSeconds={forever}")).await?;
    assert_eq!(status.as_u16(), 200, "a watch with an endless timeout");
    let logs = client.get(&format!("{pod_path}/log?sinceSeconds={forever}")).await?;
    assert_eq!(logs.status.as_u16(), 200, "logs since before time: {}", String::from_utf8_lossy(&logs.body));
    let deleted = client.delete(&format!("{pod_path}?gracePeriodSeconds={}", i64::MAX)).await?;
    assert!(deleted.status.is_success(), "DELETE with an endless grace period: {}", deleted.status);
    assert!(deleted.json()?["metadata"]["deletionTimestamp"].as_str().is_some_and(|t| t.starts_with("20")));

    // A namespace whose pod has that grace period is still emptied and removed.
    client.delete("/api/v1/namespaces/hostile").await?.ok()?;
    crate::support::eventually("the namespace is removed", std::time::Duration::from_secs(60), || async {
        let status = client.get("/api/v1/namespaces/hostile").await?.status.as_u16();
        Ok((status == 404).then_some(()))
    })
    .await?;

    // Nothing is stored deeper than can be read back: two patches of 90 levels each under
    // a free-form field.
    let cms = collection_path(kind("v1", "ConfigMap"), Some("default"));
    client.post_json(&cms, &minimal_object(kind("v1", "ConfigMap"), "deep")).await?.ok()?;
    let mut deep = json!("leaf");
    for _ in 0..90 {
        deep = json!({"f:a": deep});
    }
    let first = json!([{"op": "add", "path": "/metadata/managedFields/0/fieldsV1/f:x", "value": deep}]);
    let patched = client.patch(&format!("{cms}/deep"), "application/json-patch+json", &first).await?;
    assert_eq!(patched.status.as_u16(), 200, "{}", String::from_utf8_lossy(&patched.body));
    let leaf = format!("/metadata/managedFields/0/fieldsV1/f:x{}", "/f:a".repeat(89));
    let second = json!([{"op": "add", "path": format!("{leaf}/f:y"), "value": deep}]);
    let refused = client.patch(&format!("{cms}/deep"), "application/json-patch+json", &second).await?;
    let status = refused.json()?;
    assert_eq!(refused.status.as_u16(), 422, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("metadata.managedFields[0].fieldsV1.f:x.f:a"), "{message}");
    assert!(message.contains("must not nest deeper than 100 levels"), "{message}");
    client.get(&cms).await?.ok()?;
    client.get(&format!("{cms}/deep")).await?.ok()?;

    assert_eq!(client.get("/readyz").await?.status.as_u16(), 200);
    // And the server starts again on what all this left in its data directory.
    server.restart()?;
    let client = &server.client;
    assert_eq!(client.get("/readyz").await?.status.as_u16(), 200);
    client.get(&format!("{cms}/deep")).await?.ok()?;
    Ok(())
}

/// Whatever is stored, the server starts on its data directory and keeps serving: an
/// object no limit stopped (written by an older server, or by hand) makes only its own
/// kind's list fail, with a message that says how to remove it, and
/// `ignoreStoreReadErrorWithClusterBreakingPotential` removes it as kube-apiserver does.
#[tokio::test]
async fn an_unreadable_stored_object_can_be_deleted() -> Result<()> {
    use flotilla_store::Store as _;
    let mut server = Server::start()?;
    let cm = kind("v1", "ConfigMap");
    let cms = collection_path(cm, Some("default"));
    server.client.post_json(&cms, &minimal_object(cm, "corrupt")).await?.ok()?;
    server.client.post_json(&cms, &minimal_object(cm, "fine")).await?.ok()?;
    // The same in a namespace that is then deleted: the finalizer skips what it cannot
    // read, empties the rest, and says so on the namespace.
    server.client.post_json("/api/v1/namespaces", &json!({"metadata": {"name": "doomed"}})).await?.ok()?;
    let doomed = collection_path(cm, Some("doomed"));
    server.client.post_json(&doomed, &minimal_object(cm, "corrupt")).await?.ok()?;
    let secrets = collection_path(kind("v1", "Secret"), Some("doomed"));
    server.client.post_json(&secrets, &minimal_object(kind("v1", "Secret"), "kept-going")).await?.ok()?;
    server.kill()?;
    {
        let store = flotilla_store::RedbStore::open(
            &server.data_dir().join("store.redb"),
            flotilla_store::RedbStoreOptions::default(),
        )?;
        for namespace in ["default", "doomed"] {
            let key = cm.key(Some(namespace), "corrupt");
            let kv = store.get(&key).await?.context("the stored ConfigMap")?;
            let deep =
                format!("{{\"metadata\":{{\"name\":\"corrupt\"}},\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
            store.update(&key, deep.into_bytes(), kv.mod_revision).await?;
        }
    }
    server.restart()?;
    let client = &server.client;
    assert_eq!(client.get("/readyz").await?.status.as_u16(), 200);
    let list = client.get(&cms).await?;
    assert_eq!(list.status.as_u16(), 500);
    let message = list.json()?["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("ignoreStoreReadErrorWithClusterBreakingPotential"), "{message}");
    // Other kinds still list, a plain delete cannot read it, the escape hatch removes it.
    client.get(&collection_path(kind("v1", "Secret"), Some("default"))).await?.ok()?;
    assert_eq!(client.delete(&format!("{cms}/corrupt")).await?.status.as_u16(), 500);
    let removed =
        client.delete(&format!("{cms}/corrupt?ignoreStoreReadErrorWithClusterBreakingPotential=true")).await?;
    assert_eq!(removed.status.as_u16(), 200, "{}", String::from_utf8_lossy(&removed.body));
    let names: Vec<String> = client.get(&cms).await?.ok()?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(names.contains(&"fine".to_string()) && !names.contains(&"corrupt".to_string()), "{names:?}");

    client.delete("/api/v1/namespaces/doomed").await?.ok()?;
    let namespace = crate::support::eventually(
        "the namespace's deletion condition",
        std::time::Duration::from_secs(20),
        || async {
            let namespace = client.get("/api/v1/namespaces/doomed").await?.ok()?;
            let failed = namespace["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "NamespaceDeletionContentFailure" && c["status"] == "True");
            Ok(failed.then_some(namespace))
        },
    )
    .await?;
    let condition = &namespace["status"]["conditions"][0];
    assert!(condition["message"].as_str().is_some_and(|m| m.contains("configmaps")), "{condition:#}");
    assert_eq!(namespace["status"]["phase"], "Terminating");
    let secrets = client.get(&collection_path(kind("v1", "Secret"), Some("doomed"))).await?.ok()?;
    assert_eq!(secrets["items"].as_array().map(Vec::len), Some(0), "the rest was emptied: {secrets:#}");
    let doomed = collection_path(cm, Some("doomed"));
    client.delete(&format!("{doomed}/corrupt?ignoreStoreReadErrorWithClusterBreakingPotential=true")).await?.ok()?;
    crate::support::eventually("the namespace gone", std::time::Duration::from_secs(20), || async {
        Ok((client.get("/api/v1/namespaces/doomed").await?.status.as_u16() == 404).then_some(()))
    })
    .await?;
    Ok(())
}
