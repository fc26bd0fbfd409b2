//! What the fuzz targets share: a registry over a scratch store holding one object of
//! each seeded kind (written by two field managers, so applies can conflict), the
//! runtime its futures run on, and a client of the server's real router over an
//! in-memory pipe.
//!
//! Every target checks what must hold for any input: no panic (libfuzzer-sys aborts on
//! one, in any thread), no hang, bounded memory (libFuzzer's `-rss_limit_mb`), no 5xx
//! answer to a client's mistake, and no object accepted that could not be read back.

use bytes::Bytes;
use flotilla_api::{ApiError, ResourceType, by_kind};
use flotilla_apiserver::fuzzing::Router;
use flotilla_apiserver::{Registry, WriteOptions};
use flotilla_store::{RedbStore, RedbStoreOptions};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The admin token of the in-memory router.
const TOKEN: &str = "fuzz-token";

/// The objects every cluster starts with: `(apiVersion, kind, namespace, object)`.
pub fn seed_objects() -> Vec<(&'static ResourceType, Option<&'static str>, Value)> {
    let container = json!({"name": "app", "image": "example.com/app:1",
        "ports": [{"containerPort": 8080}], "env": [{"name": "A", "value": "1"}],
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}});
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}});
    let objects = [
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "config", "labels": {"app": "web"}},
            "data": {"key": "value", "other": "x"}}),
        ),
        ("v1", "Secret", json!({"metadata": {"name": "secret"}, "stringData": {"password": "hunter2"}})),
        (
            "v1",
            "Pod",
            json!({"metadata": {"name": "pod", "labels": {"app": "web", "tier": "front"}},
            "spec": template["spec"]}),
        ),
        (
            "v1",
            "Service",
            json!({"metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
        ),
        (
            "batch/v1",
            "Job",
            json!({"metadata": {"name": "job"}, "spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [container]}}}}),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"metadata": {"name": "cron"}, "spec": {"schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [container]}}}}}}),
        ),
    ];
    objects
        .into_iter()
        .filter_map(|(api_version, kind, mut object)| {
            let rt = by_kind(api_version, kind)?;
            object["apiVersion"] = json!(api_version);
            object["kind"] = json!(kind);
            Some((rt, rt.namespaced.then_some("default"), object))
        })
        .collect()
}

/// A registry over a scratch store with the seed objects, and the runtime to drive it.
pub struct Cluster {
    pub runtime: tokio::runtime::Runtime,
    pub registry: Registry,
    pub router: Router,
    /// The seeded objects as stored: `(kind, namespace, name)`.
    pub objects: Vec<(&'static ResourceType, Option<&'static str>, String)>,
    _dir: tempfile::TempDir,
}

/// The process's cluster, made on first use (a fuzz target runs inputs one at a time).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| new_cluster().unwrap_or_else(|e| panic!("setting up the fuzz cluster: {e}")))
}

fn new_cluster() -> Result<Cluster, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let store =
        RedbStore::open(&dir.path().join("store.redb"), RedbStoreOptions::default()).map_err(|e| e.to_string())?;
    let registry = Registry::new(Arc::new(store));
    let router = Router::new(registry.clone(), TOKEN).map_err(|e| e.to_string())?;
    let objects = runtime.block_on(async {
        let namespace = by_kind("v1", "Namespace").ok_or("no Namespace kind")?;
        let default = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        registry.create(namespace, None, default, &writes("kubectl-create")).await.map_err(|e| e.message)?;
        let mut objects = Vec::new();
        for (rt, ns, object) in seed_objects() {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            // Applied by one manager, then one field changed by another: the fields
            // have two owners, as they do in a cluster kubectl and controllers share.
            let mut apply = writes("kubectl");
            apply.server_side_apply = true;
            registry.apply(rt, ns, &name, object, false, &apply).await.map_err(|e| format!("{name}: {}", e.message))?;
            let labels = json!({"metadata": {"labels": {"owner": "controller"}}});
            let patch = flotilla_apiserver::PatchType::Merge(&labels);
            registry.patch(rt, ns, &name, patch, None, &writes("controller")).await.map_err(|e| e.message)?;
            objects.push((rt, ns, name));
        }
        Ok::<_, String>(objects)
    })?;
    Ok(Cluster { runtime, registry, router, objects, _dir: dir })
}

/// Write options of `manager`.
pub fn writes(manager: &str) -> WriteOptions {
    WriteOptions { field_manager: manager.to_string(), ..WriteOptions::default() }
}

/// Dry-run write options of `manager`: the targets never change the seeded objects, so
/// every input runs against the same state and a crash reproduces from its input alone.
pub fn dry_run(manager: &str) -> WriteOptions {
    WriteOptions { dry_run: true, ..writes(manager) }
}

/// What must hold of a write's outcome: an error is the client's (4xx), and an accepted
/// object can be read back as it would be from the store.
pub fn check_write(what: &str, result: &Result<Value, ApiError>) {
    match result {
        Ok(object) => check_readable(what, object),
        Err(e) => assert!(e.code() < 500, "{what}: a client's input answered {}: {}", e.code(), e.message),
    }
}

/// An accepted object must survive the store's encoding: what cannot be read back
/// makes every later list of its kind fail.
pub fn check_readable(what: &str, object: &Value) {
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    if let Err(e) = serde_json::from_slice::<Value>(&bytes) {
        panic!("{what}: accepted an object that cannot be read back: {e}");
    }
}

/// One request to the router, over a fresh in-memory HTTP/1.1 connection. Returns the
/// status and, unless `head_only` (a watch, whose body does not end), the whole body.
pub async fn request(router: &Router, request: http::Request<Full<Bytes>>, head_only: bool) -> (u16, Bytes) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = router.clone();
    let serving = tokio::spawn(async move { server.serve(server_io).await });
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client_io)).await {
            Ok(pair) => pair,
            Err(e) => panic!("in-memory handshake failed: {e}"),
        };
    let driving = tokio::spawn(connection);
    let mut request = request;
    if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {TOKEN}")) {
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let response = match tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => panic!("the server dropped the request: {e}"),
        Err(_) => panic!("no response head within 10 s"),
    };
    let status = response.status().as_u16();
    let body = if head_only {
        Bytes::new()
    } else {
        match tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => panic!("the response body failed: {e}"),
            Err(_) => panic!("the response body did not end within 10 s"),
        }
    };
    driving.abort();
    serving.abort();
    (status, body)
}
