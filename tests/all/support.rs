//! What the end-to-end tests share: starting and stopping a real server, a client for
//! it, and the smallest valid object of each kind.

use anyhow::{Context as _, Result, bail};
use flotilla::client::{Client, LineReader};
use flotilla::testkit::ServerProcess;
use flotilla_api::ResourceType;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `flotilla` binary cargo built for these tests.
pub fn flotilla_bin() -> &'static str {
    env!("CARGO_BIN_EXE_flotilla")
}

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `flotilla server` process on an ephemeral loopback port, with its data directory.
pub struct Server {
    process: ServerProcess,
    /// Kept so the directory lives as long as the server (and across restarts): the data
    /// directory itself, or the server's working directory when it was given a relative one.
    dir: tempfile::TempDir,
    /// `--data-dir` as the server was given it: absolute, or relative to `dir`.
    data_dir_arg: PathBuf,
    working_dir: Option<PathBuf>,
    extra_args: Vec<String>,
    pub client: Client,
    pub kubeconfig: PathBuf,
}

impl Server {
    /// Starts a server on a fresh data directory without controllers: the API tests check
    /// objects exactly as clients wrote them, as kube-apiserver's integration tests run
    /// without kube-controller-manager. The scheduler and the node still run.
    pub fn start() -> Result<Self> {
        Self::start_with(&["--controllers="])
    }

    /// Starts a whole cluster (controllers too) with extra `server` flags.
    pub fn start_with(extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let data_dir_arg = dir.path().to_path_buf();
        Self::launch(dir, None, data_dir_arg, extra_args)
    }

    /// Starts a whole cluster as the README does: from a fresh working directory, which
    /// `prepare` fills first (it gets the directory), with `--data-dir ./data` and `extra_args`
    /// (whose relative paths are relative to that directory).
    pub fn start_in_fresh_directory(prepare: impl FnOnce(&Path) -> Result<()>, extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        prepare(dir.path())?;
        let working_dir = Some(dir.path().to_path_buf());
        Self::launch(dir, working_dir, PathBuf::from("./data"), extra_args)
    }

    fn launch(
        dir: tempfile::TempDir,
        working_dir: Option<PathBuf>,
        data_dir_arg: PathBuf,
        extra_args: &[&str],
    ) -> Result<Self> {
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let process =
            ServerProcess::spawn_in(Path::new(flotilla_bin()), working_dir.as_deref(), &data_dir_arg, &extra_args)?;
        let client = Client::from_kubeconfig(&process.kubeconfig)?;
        let kubeconfig = process.kubeconfig.clone();
        Ok(Self { process, dir, data_dir_arg, working_dir, extra_args, client, kubeconfig })
    }

    /// The server's data directory (absolute).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(&self.data_dir_arg)
    }

    /// The Ingress's plain-HTTP listener.
    pub fn ingress_http(&self) -> Result<std::net::SocketAddr> {
        self.process.ingress_http.context("the server has no HTTP Ingress listener")
    }

    /// The Ingress's HTTPS listener.
    pub fn ingress_https(&self) -> Result<std::net::SocketAddr> {
        self.process.ingress_https.context("the server has no HTTPS Ingress listener")
    }

    /// The loopback address this server's NodePort and LoadBalancer Services listen on.
    pub fn service_address(&self) -> std::net::IpAddr {
        self.process.service_address
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Kills the server and starts it again on the same data directory (a new port).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.process = ServerProcess::spawn_in(
            Path::new(flotilla_bin()),
            self.working_dir.as_deref(),
            &self.data_dir_arg,
            &self.extra_args,
        )?;
        self.client = Client::from_kubeconfig(&self.process.kubeconfig)?;
        self.kubeconfig = self.process.kubeconfig.clone();
        Ok(())
    }

    /// Runs the real kubectl (1.37, installed by tests/setup.sh) against this server;
    /// returns (success, stdout, stderr). Its HOME and discovery cache live in this
    /// server's data directory, so nothing is shared between tests.
    pub fn kubectl(&self, args: &[&str]) -> Result<(bool, String, String)> {
        self.kubectl_with_stdin(args, "")
    }

    /// kubectl with `stdin` as its standard input (for `apply -f -`).
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Result<(bool, String, String)> {
        use std::io::Write as _;
        let mut child = self.kubectl_command(args)?.stdin(Stdio::piped()).spawn()?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// A kubectl command for this server, output piped, for tests that read it live.
    pub fn kubectl_command(&self, args: &[&str]) -> Result<Command> {
        let kubectl = repo_root().join("target/test-venv/bin/kubectl");
        anyhow::ensure!(kubectl.exists(), "{} is missing: run tests/setup.sh first", kubectl.display());
        let home = self.data_dir().join("home");
        let mut command = Command::new(kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(home.join(".kube/cache"))
            .args(args)
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(command)
    }

    /// Runs the `flotilla` CLI against this server; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let output = Command::new(flotilla_bin())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

/// The REST path of a kind's collection in a namespace (or cluster-wide).
pub fn collection_path(rt: &ResourceType, namespace: Option<&str>) -> String {
    let base = if rt.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", rt.group, rt.version) };
    match namespace {
        Some(ns) if rt.namespaced => format!("{base}/namespaces/{ns}/{}", rt.plural),
        _ => format!("{base}/{}", rt.plural),
    }
}

/// The REST path of one object.
pub fn object_path(rt: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", collection_path(rt, namespace))
}

/// The kind registered for `apiVersion` + `kind`.
pub fn kind(api_version: &str, kind: &str) -> &'static ResourceType {
    flotilla_api::by_kind(api_version, kind).unwrap_or_else(|| panic!("no kind {api_version} {kind}"))
}

/// A pod template running `image`, labelled `app: NAME`.
pub fn pod_template(app: &str, restart_policy: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"restartPolicy": restart_policy, "containers": [{"name": "main", "image": "hello-http:1"}]}
    })
}

/// The smallest valid object of a kind, named `name`.
pub fn minimal_object(rt: &ResourceType, name: &str) -> Value {
    let mut object =
        json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name, "labels": {"app": name}}});
    let workload_spec = json!({"selector": {"matchLabels": {"app": name}}, "template": pod_template(name, "Always")});
    match rt.kind {
        "Pod" => {
            object["spec"] = pod_template(name, "Always")["spec"].clone();
            // No scheduler takes it: the object tests need a pod nothing else writes to.
            object["spec"]["schedulerName"] = json!("e2e-no-scheduler");
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => object["spec"] = workload_spec,
        "Job" => object["spec"] = json!({"template": pod_template(name, "Never")}),
        "CronJob" => {
            object["spec"] = json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": pod_template(name, "OnFailure")}}})
        }
        "Service" => object["spec"] = json!({"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}),
        "ConfigMap" => object["data"] = json!({"greeting": "hello"}),
        "Secret" => object["stringData"] = json!({"password": "s3cret"}),
        "Endpoints" => object["subsets"] = json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]),
        "EndpointSlice" => object["addressType"] = json!("IPv4"),
        "Event" => {
            object["involvedObject"] = json!({"kind": "Pod", "name": "p", "namespace": "default"});
            object["reason"] = json!("Testing");
        }
        "Ingress" => object["spec"] = json!({"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}),
        "IngressClass" => object["spec"] = json!({"controller": "flotilla.dev/ingress"}),
        "HorizontalPodAutoscaler" => {
            object["spec"] = json!({"maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}})
        }
        "Node" => object["spec"] = json!({"podCIDR": "10.244.0.0/24"}),
        _ => {}
    }
    object
}

/// A watch stream opened with `query` on a collection.
pub async fn watch(client: &Client, path: &str, query: &str) -> Result<LineReader> {
    let (status, body) = client.stream(&format!("{path}?watch=1&{query}")).await?;
    if !status.is_success() {
        bail!("watch failed with {status}");
    }
    Ok(LineReader::new(body))
}

/// The next watch event, failing after `timeout`.
pub async fn next_event(reader: &mut LineReader, timeout: Duration) -> Result<Value> {
    match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Some(event))) => Ok(event),
        Ok(Ok(None)) => bail!("the watch ended"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("no watch event within {timeout:?}"),
    }
}

/// The store revision a list reports.
pub async fn list_revision(client: &Client, path: &str) -> Result<u64> {
    let list = client.get(path).await?.ok()?;
    list["metadata"]["resourceVersion"]
        .as_str()
        .context("list without resourceVersion")?
        .parse()
        .context("resourceVersion not a number")
}

/// A pod named `name` in `default` running `image` in one container `main`, with
/// `spec` merged into its spec (and `restartPolicy` given).
pub fn pod(name: &str, image: &str, restart_policy: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"restartPolicy": restart_policy, "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image}]},
    });
    json_patch::merge(&mut pod["spec"], &spec);
    pod
}

/// The `main` container of a pod spec, to set env, limits or mounts on.
pub fn main_container(pod: &mut Value) -> &mut Value {
    &mut pod["spec"]["containers"][0]
}

/// Creates an object in `default` (any namespaced kind); returns what the server stored.
pub async fn create(client: &Client, object: &Value) -> Result<Value> {
    let rt = kind(object["apiVersion"].as_str().unwrap_or("v1"), object["kind"].as_str().unwrap_or(""));
    Ok(client.post_json(&collection_path(rt, Some("default")), object).await?.ok()?)
}

/// Polls pod `default/name` until `done` holds, for at most `timeout`; the error shows
/// the pod's last status.
pub async fn wait_for_pod(
    client: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    loop {
        let pod = client.get(&path).await?.ok()?;
        if done(&pod) {
            return Ok(pod);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("pod {name} is not {what} after {timeout:?}: status {:#}", pod["status"]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a pod is Running with every container ready.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The first container's status.
pub fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// One HTTP request to pod `default/name` through `pods/proxy`: (status, body).
pub async fn pod_request(
    client: &Client,
    name: &str,
    method: http::Method,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let full = format!("/api/v1/namespaces/default/pods/{name}/proxy{path}");
    let response = client.send(method, &full, "text/plain", body.as_bytes().to_vec()).await?;
    Ok((response.status.as_u16(), String::from_utf8_lossy(&response.body).into_owned()))
}

/// A plain HTTP/1.1 client for the data plane (Ingress, NodePort, LoadBalancer), keeping
/// connections alive as a load generator would.
#[derive(Clone)]
pub struct HttpClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl HttpClient {
    pub fn new() -> Self {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        HttpClient { client }
    }

    /// `GET http://ADDR/PATH` with `Host: host`: (status, body).
    pub async fn get(&self, addr: std::net::SocketAddr, host: &str, path: &str) -> Result<(u16, String)> {
        use http_body_util::BodyExt as _;
        let request = http::Request::get(format!("http://{addr}{path}"))
            .header(http::header::HOST, host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .context("no answer within 30 s")??;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Waits (up to 30 s) for an Event with `reason` about the object `name` in the
/// `default` namespace; Events are written in the background, after what they report.
pub async fn wait_for_event(client: &Client, name: &str, reason: &str) -> Result<Value> {
    let path =
        format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name},reason%3D{reason}");
    eventually(&format!("a {reason} Event about {name}"), Duration::from_secs(30), || async {
        let events = client.get(&path).await?.ok()?;
        Ok(events["items"].as_array().and_then(|items| items.first()).cloned())
    })
    .await
}

impl HttpClient {
    /// GETs `path` from `addr` as `host` until it answers 200 (for at most `timeout`), as
    /// a Service or Ingress does once its pods are ready; answers the body.
    pub async fn get_until_ok(
        &self,
        addr: std::net::SocketAddr,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<String> {
        eventually(&format!("{host}{path} answering 200 at {addr}"), timeout, || async {
            let (status, body) = self.get(addr, host, path).await?;
            Ok((status == 200).then_some(body))
        })
        .await
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
