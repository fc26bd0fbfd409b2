//! The runtime against the example components: one test per example (checked by
//! `foreach_example!`), plus loading and caching.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

use crate::*;

/// One runtime for the whole binary: each test's own would reserve another pool. Its
/// Service router is [`services`].
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime =
            Runtime::new(RuntimeConfig { cache_dir: None, max_instances: 200, max_memory_per_instance: 128 << 20 })
                .expect("runtime");
        runtime.set_service_router(services().clone()).expect("first router");
        runtime
    })
}

/// The tests' cluster Services, as a fake Service proxy: `backend` in every namespace
/// (also as `backend.NS`, `backend.NS.svc.cluster.local` and its cluster IP
/// `10.96.0.10`), answering `200 hello from backend in NS: METHOD URI` in two chunks;
/// and `empty`, a Service without ready endpoints (503), both on port 80. Tests tell
/// their requests apart by namespace.
#[derive(Debug, Default)]
struct Services {
    /// `(namespace, authority)` of every `is_service_host` question.
    asked: std::sync::Mutex<Vec<(String, String)>>,
    /// `(namespace, "METHOD URI (Host: HOST)")` of every request sent.
    sent: std::sync::Mutex<Vec<(String, String)>>,
}

fn services() -> &'static std::sync::Arc<Services> {
    static SERVICES: OnceLock<std::sync::Arc<Services>> = OnceLock::new();
    SERVICES.get_or_init(Default::default)
}

impl Services {
    /// The Service `authority` names for a pod in `namespace`, if any.
    fn resolve(namespace: &str, authority: &::http::uri::Authority) -> Option<(String, String)> {
        if authority.port_u16().unwrap_or(80) != 80 {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host == "10.96.0.10" {
            return Some(("backend".to_owned(), namespace.to_owned()));
        }
        let host = host.strip_suffix(".svc.cluster.local").unwrap_or(&host);
        let (service, in_namespace) = host.split_once('.').unwrap_or((host, namespace));
        ["backend", "empty"].contains(&service).then(|| (service.to_owned(), in_namespace.to_owned()))
    }

    fn asked(&self, namespace: &str) -> Vec<String> {
        let asked = self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        asked.iter().filter(|(ns, _)| ns == namespace).map(|(_, authority)| authority.clone()).collect()
    }

    fn sent(&self, namespace: &str) -> Vec<String> {
        let sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.iter().filter(|(ns, _)| ns == namespace).map(|(_, request)| request.clone()).collect()
    }
}

impl ServiceRouter for Services {
    fn is_service_host(&self, namespace: &str, authority: &::http::uri::Authority) -> bool {
        let mut asked = self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        asked.push((namespace.to_owned(), authority.to_string()));
        Services::resolve(namespace, authority).is_some()
    }

    fn send(&self, namespace: &str, request: ::http::Request<EdgeBody>) -> BoxFuture<::http::Response<EdgeBody>> {
        let host = request.headers().get(::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let line = format!("{} {} (Host: {host})", request.method(), request.uri());
        let mut sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sent.push((namespace.to_owned(), line.clone()));
        let resolved = request.uri().authority().and_then(|authority| Services::resolve(namespace, authority));
        let (status, chunks) = match resolved {
            Some((service, in_namespace)) if service == "backend" => {
                (200, [format!("hello from backend in {in_namespace}: "), format!("{line}\n")])
            }
            Some((service, _)) => (503, [format!("no ready endpoints for {service}"), "\n".to_owned()]),
            None => (502, ["not a Service".to_owned(), "\n".to_owned()]),
        };
        let (mut sender, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(chunks.len());
        for chunk in chunks {
            let _ = sender.try_send(hyper::body::Frame::data(Bytes::from(chunk)));
        }
        let response = ::http::Response::builder().status(status).body(body.boxed_unsync()).expect("response");
        Box::pin(async move { response })
    }
}

/// Each example compiled once.
fn image(path: &'static str) -> Image {
    static IMAGES: OnceLock<std::sync::Mutex<Vec<(&'static str, Image)>>> = OnceLock::new();
    let images = IMAGES.get_or_init(Default::default);
    let mut images = images.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, image)) = images.iter().find(|(p, _)| *p == path) {
        return image.clone();
    }
    let image = runtime().load_file(path.as_ref()).expect("load example");
    images.push((path, image.clone()));
    image
}

fn spec_in(namespace: &str, name: &str, env: &[(&str, &str)]) -> PodSpec {
    PodSpec { namespace: namespace.to_owned(), ..spec(name, env, Limits::default()) }
}

fn spec(name: &str, env: &[(&str, &str)], limits: Limits) -> PodSpec {
    PodSpec {
        name: name.to_owned(),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        limits,
        ..PodSpec::default()
    }
}

fn http_pod(path: &'static str, spec: PodSpec) -> HttpPod {
    let image = image(path);
    assert_eq!(image.kind(), ImageKind::Http);
    runtime().http_pod(&image, spec, LogBuffer::new(64 * 1024)).expect("http pod")
}

fn command_pod(path: &'static str, spec: PodSpec) -> CommandPod {
    let image = image(path);
    assert_eq!(image.kind(), ImageKind::Command);
    runtime().command_pod(&image, spec, LogBuffer::new(64 * 1024)).expect("command pod")
}

fn get(uri: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(uri).body(Empty::new()).expect("request")
}

async fn text(response: hyper::Response<ResponseBody>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn lines(logs: &LogBuffer) -> Vec<String> {
    logs.lines().into_iter().map(|l| l.line).collect()
}

fn stderr(logs: &LogBuffer) -> Vec<String> {
    logs.lines().into_iter().filter(|l| l.stream == LogStream::Stderr).map(|l| l.line).collect()
}

/// The iteration count in a cpu-burner answer (`cpu-burner: N iterations in M ms`).
fn iterations(body: &str) -> u64 {
    body.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a burner answer: {body}"))
}

fn limits_cpu(cpu_millis: u32) -> Limits {
    Limits { cpu_millis: Some(cpu_millis), ..Limits::default() }
}

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports, reason = "only checks that the test exists")]
        use self::$name as _;
    };
}
flotilla_examples::foreach_example!(assert_test_exists);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_http() {
    let pod = http_pod(
        flotilla_examples::HELLO_HTTP,
        spec("web-1", &[("GREETING", "Ahoy"), ("POD_NAME", "web-1")], Limits::default()),
    );
    let (status, body) = text(pod.handle(get("/")).await.expect("response")).await;
    assert_eq!((status, body.as_str()), (200, "Ahoy from web-1\n"));

    // A fresh instance per request, 50 at once.
    let started = Instant::now();
    let requests = (0..50).map(|_| {
        let pod = pod.clone();
        tokio::spawn(async move { text(pod.handle(get("http://web/")).await.expect("response")).await })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.expect("task"), (200, "Ahoy from web-1\n".to_owned()));
    }
    eprintln!("50 concurrent requests in {:?}", started.elapsed());

    // Without `POD_NAME`, the pod's name comes from `HOSTNAME`, which the runtime sets.
    let pod = http_pod(flotilla_examples::HELLO_HTTP, spec("web-2", &[], Limits::default()));
    let (status, body) = text(pod.handle(get("/")).await.expect("response")).await;
    assert_eq!((status, body.as_str()), (200, "Hello from Flotilla from web-2\n"));
}

#[tokio::test]
async fn echo() {
    let pod = http_pod(flotilla_examples::ECHO, spec("echo", &[], Limits::default()));
    let request = hyper::Request::post("http://echo.default/some/path?x=1")
        .header("x-flotilla", "yes")
        .body(Full::new(Bytes::from_static(b"hello body")))
        .expect("request");
    let (status, body) = text(pod.handle(request).await.expect("response")).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("POST /some/path?x=1\n"), "{body}");
    assert!(body.contains("x-flotilla: yes\n"), "{body}");
    assert!(body.ends_with("\n\nhello body"), "{body}");
}

fn put(uri: &str, body: &'static str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::put(uri).body(Full::new(Bytes::from_static(body.as_bytes()))).expect("request")
}

#[tokio::test]
async fn echo_reads_and_writes_preopened_files() {
    let config = tempfile::tempdir().expect("tempdir");
    std::fs::write(config.path().join("key"), "value from a ConfigMap").expect("write key");
    let data = tempfile::tempdir().expect("tempdir");
    let mut spec = spec("files", &[], Limits::default());
    spec.preopens.push(Preopen { host: config.path().to_owned(), guest: "/config".into(), read_only: true, dir: None });
    spec.preopens.push(Preopen { host: data.path().to_owned(), guest: "/data".into(), read_only: false, dir: None });
    let pod = http_pod(flotilla_examples::ECHO, spec);

    let (status, body) = text(pod.handle(get("/fs/config/key")).await.expect("response")).await;
    assert_eq!((status, body.as_str()), (200, "value from a ConfigMap"));
    // Nothing outside the preopened directories, nor through `..`.
    for path in ["/fs/etc/passwd", "/fs/config/missing", "/fs/config/../../etc/passwd"] {
        let (status, body) = text(pod.handle(get(path)).await.expect("response")).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // A read-only volume refuses writes; a writable one keeps them on the host.
    let (status, body) = text(pod.handle(put("/fs/config/key", "overwritten")).await.expect("response")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(std::fs::read_to_string(config.path().join("key")).expect("key"), "value from a ConfigMap");
    let (status, body) = text(pod.handle(put("/fs/data/out.txt", "written by the pod")).await.expect("response")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(std::fs::read_to_string(data.path().join("out.txt")).expect("out.txt"), "written by the pod");
    let (status, body) = text(pod.handle(get("/fs/data/out.txt")).await.expect("response")).await;
    assert_eq!((status, body.as_str()), (200, "written by the pod"));

    // A pod without volumes sees no files at all.
    let pod = http_pod(flotilla_examples::ECHO, spec_named("bare"));
    let (status, _) = text(pod.handle(get("/fs/config/key")).await.expect("response")).await;
    assert_eq!(status, 404);
}

fn spec_named(name: &str) -> PodSpec {
    spec(name, &[], Limits::default())
}

#[tokio::test]
async fn mem_hog() {
    let limits = Limits { memory_bytes: Some(16 << 20), ..Limits::default() };
    let pod = http_pod(flotilla_examples::MEM_HOG, spec("hog", &[], limits));
    let error = pod.handle(get("/?mb=64")).await.expect_err("over the limit");
    assert_eq!(error, PodError::OutOfMemory);
    assert_eq!(stderr(pod.logs()), ["request killed: over the memory limit of 16777216 bytes"]);
    // The pod still answers requests that fit.
    let (status, body) = text(pod.handle(get("/?mb=1")).await.expect("small request")).await;
    assert_eq!(status, 200);
    assert!(body.contains("allocated 1 MiB"), "{body}");
    // The memory the instances held: at the most just under the limit (the killed one),
    // and nothing once they are gone.
    let peak = pod.memory_peak_bytes();
    assert!(peak > 1 << 20 && peak <= 16 << 20, "{peak}");
    for _ in 0..100 {
        if pod.memory_bytes() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pod.memory_bytes(), 0, "every instance gave its memory back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_bounds_the_pods_instances_together() {
    let limit: u64 = 16 << 20;
    let limits = Limits { memory_bytes: Some(limit), ..Limits::default() };
    let pod = http_pod(flotilla_examples::MEM_HOG, spec("hogs", &[], limits));
    // Four requests of 5 MiB, each holding it for a second: each fits the limit, all four
    // at once do not.
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let pod = pod.clone();
            tokio::spawn(async move {
                match pod.handle(get("/?mb=5&hold_ms=1000")).await {
                    Ok(response) => Ok(text(response).await),
                    Err(error) => Err(error),
                }
            })
        })
        .collect();
    let mut answered = 0;
    for request in requests {
        match request.await.expect("task") {
            Ok((status, body)) => {
                assert_eq!(status, 200, "{body}");
                answered += 1;
            }
            Err(error) => assert_eq!(error, PodError::OutOfMemory),
        }
    }
    assert!((1..4).contains(&answered), "{answered} of 4 requests of 5 MiB ran at once under a 16 MiB limit");
    let peak = pod.memory_peak_bytes();
    assert!(peak <= limit, "the pod's instances held {peak} bytes together, over its limit of {limit}");
    assert!(stderr(pod.logs()).iter().all(|l| l.starts_with("request killed: over the memory limit")));
}

#[tokio::test]
async fn cpu_burner() {
    let limits = Limits { request_timeout: Some(Duration::from_millis(50)), ..Limits::default() };
    let pod = http_pod(flotilla_examples::CPU_BURNER, spec("burner", &[], limits));
    let started = Instant::now();
    let error = pod.handle(get("/?ms=5000")).await.expect_err("times out");
    assert_eq!(error, PodError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(stderr(pod.logs()), ["request killed: ran past its request timeout of 50ms"]);
    let (status, _) = text(pod.handle(get("/?ms=1")).await.expect("quick request")).await;
    assert_eq!(status, 200);
    assert!(pod.cpu_time() >= Duration::from_millis(40), "{:?}", pod.cpu_time());
}

/// Runs `pod.handle(uri)` in its own task; returns the answer and the request's wall time.
fn spawn_request(pod: &HttpPod, uri: &'static str) -> tokio::task::JoinHandle<(String, Duration)> {
    let pod = pod.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let (status, body) = text(pod.handle(get(uri)).await.expect("response")).await;
        assert_eq!(status, 200, "{body}");
        (body, started.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_quota_throttles_a_pod_and_spares_its_neighbours() {
    let limited = http_pod(flotilla_examples::CPU_BURNER, spec("burner-100m", &[], limits_cpu(100)));
    let unlimited = http_pod(flotilla_examples::CPU_BURNER, spec_named("burner"));
    let neighbour = http_pod(flotilla_examples::HELLO_HTTP, spec_named("neighbour"));

    // The burner spins on the clock for 1 s: throttled, it gets fewer iterations done.
    let started = Instant::now();
    let limited_request = spawn_request(&limited, "/?ms=1000");
    let unlimited_request = spawn_request(&unlimited, "/?ms=1000");
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(900) {
        let asked = Instant::now();
        let (status, _) = text(neighbour.handle(get("/")).await.expect("neighbour answers")).await;
        assert_eq!(status, 200);
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (limited_body, limited_wall) = limited_request.await.expect("task");
    let (unlimited_body, unlimited_wall) = unlimited_request.await.expect("task");

    let limited_share = limited.cpu_time().as_secs_f64() / limited_wall.as_secs_f64();
    let unlimited_share = unlimited.cpu_time().as_secs_f64() / unlimited_wall.as_secs_f64();
    let (limited_iterations, unlimited_iterations) = (iterations(&limited_body), iterations(&unlimited_body));
    eprintln!(
        "100m: {limited_share:.3} of a core ({limited_iterations} iterations); unlimited: {unlimited_share:.3} \
         ({unlimited_iterations}); slowest neighbour answer {slowest:?}"
    );
    assert!((0.05..=0.2).contains(&limited_share), "the 100m pod used {limited_share:.3} of a core");
    assert!(unlimited_share > 0.4, "the unlimited pod used only {unlimited_share:.3} of a core");
    assert!(unlimited_iterations > 3 * limited_iterations, "{unlimited_iterations} vs {limited_iterations}");
    assert!(slowest < Duration::from_millis(250), "the neighbour took {slowest:?} to answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_quota_is_shared_by_a_pods_instances() {
    // Four requests at once on a 200m pod get 0.2 of a core between them, not 0.8.
    let pod = http_pod(flotilla_examples::CPU_BURNER, spec("burners-200m", &[], limits_cpu(200)));
    let started = Instant::now();
    let requests: Vec<_> = (0..4).map(|_| spawn_request(&pod, "/?ms=1000")).collect();
    for request in requests {
        request.await.expect("task");
    }
    let share = pod.cpu_time().as_secs_f64() / started.elapsed().as_secs_f64();
    eprintln!("4 requests on a 200m pod: {share:.3} of a core");
    assert!((0.1..=0.3).contains(&share), "the 200m pod used {share:.3} of a core");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_quota_throttles_a_command() {
    // About 0.1 s of CPU: 1 s at 100m.
    let env = [("LIMIT", "10000000")];
    let unlimited = command_pod(flotilla_examples::BATCH, spec("batch", &env, Limits::default()));
    let started = Instant::now();
    assert_eq!(unlimited.clone().run().await, Exit::Code(0));
    let unlimited_wall = started.elapsed();

    let limited = command_pod(flotilla_examples::BATCH, spec("batch-100m", &env, limits_cpu(100)));
    let started = Instant::now();
    assert_eq!(limited.clone().run().await, Exit::Code(0));
    let limited_wall = started.elapsed();
    let share = limited.cpu_time().as_secs_f64() / limited_wall.as_secs_f64();
    eprintln!(
        "batch: {unlimited_wall:?} ({:?} CPU) unlimited, {limited_wall:?} ({:?} CPU) at 100m: {share:.3} of a core",
        unlimited.cpu_time(),
        limited.cpu_time()
    );
    assert!(unlimited.cpu_time() > Duration::ZERO);
    assert!(limited_wall > 4 * unlimited_wall, "{limited_wall:?} at 100m vs {unlimited_wall:?} unlimited");
    assert!((0.05..=0.2).contains(&share), "the 100m command used {share:.3} of a core");
}

#[test]
fn a_zero_cpu_quota_is_refused() {
    let error = runtime().http_pod(
        &image(flotilla_examples::HELLO_HTTP),
        spec("zero", &[], limits_cpu(0)),
        LogBuffer::new(1024),
    );
    assert!(matches!(error, Err(Error::InvalidLimit(_))), "{error:?}");
}

/// A one-route upstream on 127.0.0.1: answers every request `200 hello from upstream`
/// and counts the requests it saw.
async fn upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = format!("hello from upstream, you asked for {}", request.lines().next().unwrap_or(""));
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher() {
    let (port, seen) = upstream().await;
    let url = format!("/?url=http://127.0.0.1:{port}/greeting");

    let mut allowed = spec_named("fetcher");
    allowed.allowed_outbound_hosts = vec!["example.com".into(), format!("127.0.0.1:{port}")];
    let pod = http_pod(flotilla_examples::FETCHER, allowed);
    let (status, body) = text(pod.handle(get(&url)).await.expect("response")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "200\nhello from upstream, you asked for GET /greeting HTTP/1.1");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Another port of the same host, or no allow-list at all: denied before any connection.
    let mut other_port = spec_named("fetcher");
    other_port.allowed_outbound_hosts = vec![format!("127.0.0.1:{}", port.wrapping_add(1).max(1))];
    for spec in [other_port, spec_named("fetcher")] {
        let pod = http_pod(flotilla_examples::FETCHER, spec);
        let (status, body) = text(pod.handle(get(&url)).await.expect("response")).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("HttpRequestDenied"), "{body}");
        assert_eq!(
            stderr(pod.logs()),
            [format!("outgoing HTTP request to 127.0.0.1:{port} denied: not in the pod's allowed outbound hosts")]
        );
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend() {
    // By default it calls `http://backend/`, a Service of its own namespace, in process: no
    // allowed outbound hosts needed, and the backend's body streams back.
    let pod = http_pod(flotilla_examples::FRONTEND, spec_in("shop", "frontend", &[]));
    let (status, body) = text(pod.handle(get("/")).await.expect("response")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "frontend → 200 hello from backend in shop: GET http://backend/ (Host: backend)\n")
    );
    assert_eq!(services().sent("shop"), ["GET http://backend/ (Host: backend)"]);

    // Every name of a Service, the router's own errors passed on as responses.
    for (url, answer) in [
        ("http://backend.shop/x?y=1", "200 hello from backend in shop: GET http://backend.shop/x?y=1"),
        ("http://backend.other.svc.cluster.local/", "200 hello from backend in other: GET"),
        ("http://10.96.0.10/", "200 hello from backend in shop: GET http://10.96.0.10/"),
        ("http://10.96.0.10:80/", "200 hello from backend in shop: GET http://10.96.0.10:80/"),
        ("http://empty/", "503 no ready endpoints for empty"),
    ] {
        let pod = http_pod(flotilla_examples::FRONTEND, spec_in("shop", "frontend", &[("BACKEND_URL", url)]));
        let (status, body) = text(pod.handle(get("/")).await.expect("response")).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert!(body.starts_with(&format!("frontend → {answer}")), "{url}: {body}");
    }

    // A host the router does not claim still needs the allow-list; and `https` is never
    // put to the router.
    for (namespace, url) in [("elsewhere", "http://example.com/"), ("tls", "https://backend/")] {
        let pod = http_pod(flotilla_examples::FRONTEND, spec_in(namespace, "frontend", &[("BACKEND_URL", url)]));
        let (status, body) = text(pod.handle(get("/")).await.expect("response")).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("HttpRequestDenied"), "{body}");
        assert_eq!(stderr(pod.logs()).len(), 1, "{:?}", stderr(pod.logs()));
        assert!(services().sent(namespace).is_empty());
    }
    assert_eq!(services().asked("elsewhere"), ["example.com"]);
    assert!(services().asked("tls").is_empty());

    // A pod without a namespace is in `default`.
    let pod = http_pod(flotilla_examples::FRONTEND, spec_named("frontend"));
    let (status, body) = text(pod.handle(get("/")).await.expect("response")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("backend in default"), "{body}");

    let (status, _) = text(pod.handle(get("/other")).await.expect("response")).await;
    assert_eq!(status, 404);
}

#[test]
fn the_service_router_is_set_once() {
    let error = runtime().set_service_router(std::sync::Arc::new(Services::default())).expect_err("set twice");
    assert!(matches!(error, Error::Config(_)), "{error}");
}

#[test]
fn a_bad_outbound_host_is_refused() {
    let mut spec = spec_named("fetcher");
    spec.allowed_outbound_hosts = vec!["http://example.com/".into()];
    let error = runtime().http_pod(&image(flotilla_examples::FETCHER), spec, LogBuffer::new(1024));
    assert!(matches!(error, Err(Error::InvalidOutboundHost { .. })), "{error:?}");
}

#[tokio::test]
async fn batch() {
    let mut job = spec("batch-job", &[("LIMIT", "100")], Limits::default());
    job.args = vec!["--flag".to_owned(), "value".to_owned()];
    let pod = command_pod(flotilla_examples::BATCH, job);
    let logs = pod.logs().clone();
    // `run` is `Send + 'static`: a node spawns it.
    assert_eq!(tokio::spawn(pod.run()).await.expect("task"), Exit::Code(0));
    assert_eq!(lines(&logs), ["batch: 25 primes below 100", "arg[0]: batch-job", "arg[1]: --flag", "arg[2]: value"]);
    assert!(logs.lines().iter().all(|l| l.stream == LogStream::Stdout));

    // The sieve of 50 million needs 50 MB: over a 16 MiB limit, the run is OOM-killed.
    let limits = Limits { memory_bytes: Some(16 << 20), ..Limits::default() };
    let pod = command_pod(flotilla_examples::BATCH, spec("batch-oom", &[("LIMIT", "50000000")], limits));
    let logs = pod.logs().clone();
    assert_eq!(pod.run().await, Exit::OutOfMemory);
    assert_eq!(stderr(&logs), ["OOMKilled: went over the memory limit of 16777216 bytes"]);
}

#[tokio::test]
async fn crasher() {
    let pod = command_pod(flotilla_examples::CRASHER, spec("crash", &[("EXIT_CODE", "3")], Limits::default()));
    let logs = pod.logs().clone();
    assert_eq!(pod.run().await, Exit::Code(3));
    assert_eq!(lines(&logs), ["crasher: exiting with 3 in 0 ms"]);

    let pod = command_pod(flotilla_examples::CRASHER, spec("crash", &[("EXIT_CODE", "0")], Limits::default()));
    assert_eq!(pod.run().await, Exit::Code(0));

    let pod = command_pod(flotilla_examples::CRASHER, spec("crash", &[("TRAP", "1")], Limits::default()));
    let logs = pod.logs().clone();
    match pod.run().await {
        Exit::Trap(message) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(lines(&logs).iter().any(|l| l.contains("TRAP=1")), "{:?}", lines(&logs));
}

#[tokio::test]
async fn logger() {
    let limits = Limits { active_deadline: Some(Duration::from_millis(1500)), ..Limits::default() };
    let pod = command_pod(flotilla_examples::LOGGER, spec("logger", &[], limits));
    let logs = pod.logs().clone();
    let follower = tokio::spawn({
        let logs = logs.clone();
        async move { logs.next_after(0).await }
    });
    assert_eq!(pod.run().await, Exit::DeadlineExceeded);
    assert_eq!(lines(&logs), ["log line 1", "log line 2", "DeadlineExceeded: killed at its active deadline of 1.5s"]);
    assert_eq!(follower.await.expect("follower")[0].line, "log line 1");

    let pod = command_pod(flotilla_examples::LOGGER, spec("logger", &[("LINES", "1")], Limits::default()));
    assert_eq!(pod.run().await, Exit::Code(0));
}

#[test]
fn garbage_is_not_a_component() {
    for bytes in [&b"garbage!"[..], b"", b"\0asm\x01\0\0\0"] {
        match runtime().load(bytes) {
            Err(Error::NotAComponent(message)) => assert!(!message.is_empty()),
            other => panic!("expected NotAComponent, got {other:?}"),
        }
    }
}

#[test]
fn wrong_kind_is_refused() {
    let batch = image(flotilla_examples::BATCH);
    let error = runtime().http_pod(&batch, PodSpec::default(), LogBuffer::new(1024)).expect_err("not HTTP");
    assert!(matches!(error, Error::WrongKind { .. }), "{error}");
}

#[test]
fn missing_preopen_fails_at_pod_creation() {
    let mut spec = spec("fs", &[], Limits::default());
    spec.preopens.push(Preopen { host: "/no/such/dir".into(), guest: "/data".into(), read_only: true, dir: None });
    let error = runtime().command_pod(&image(flotilla_examples::BATCH), spec, LogBuffer::new(1024));
    assert!(matches!(error, Err(Error::Preopen { .. })), "{error:?}");
}

#[test]
fn the_disk_cache_serves_a_second_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        RuntimeConfig { cache_dir: Some(dir.path().to_owned()), max_instances: 10, max_memory_per_instance: 64 << 20 };
    let wasm = std::fs::read(flotilla_examples::HELLO_HTTP).expect("example");
    let first = Runtime::new(config.clone()).expect("runtime");
    let image = first.load(&wasm).expect("first load");
    assert!(image.digest().starts_with("sha256:") && image.digest().len() == 7 + 64);
    drop(first);
    let second = Runtime::new(config).expect("runtime");
    let again = second.load(&wasm).expect("second load");
    assert_eq!(again.digest(), image.digest());
    assert_eq!(again.kind(), ImageKind::Http);
    let (hits, _) = second.cache_stats().expect("cache configured");
    assert_eq!(hits, 1);
}

/// `flotilla server --data-dir ./data` gives the runtime a relative cache directory,
/// which wasmtime's cache refuses: the runtime makes it absolute.
#[test]
fn a_relative_cache_directory_is_accepted() {
    let dir = tempfile::tempdir_in(".").expect("a directory under the current one");
    let relative = std::path::PathBuf::from(".").join(dir.path().file_name().expect("a name")).join("compiled");
    let runtime =
        Runtime::new(RuntimeConfig { cache_dir: Some(relative), max_instances: 4, max_memory_per_instance: 1 << 20 });
    assert!(runtime.is_ok(), "{:?}", runtime.err());
    assert!(dir.path().join("compiled").is_dir());
}

/// An exec runs a command image in the pod's sandbox with its own argv and streams: the
/// pod's env, its stdout in the caller's pipe (not the pod's log), its exit code.
#[tokio::test]
async fn exec_runs_a_command_in_the_pods_sandbox() {
    use tokio::io::AsyncReadExt as _;
    let pod = http_pod(flotilla_examples::ECHO, spec("web", &[("LIMIT", "20")], Limits::default()));
    let (stdout, mut read_stdout) = tokio::io::duplex(64 * 1024);
    let io = crate::ExecIo {
        args: vec!["batch".into(), "one two".into()],
        stdout: Some(Box::new(stdout)),
        ..crate::ExecIo::default()
    };
    let exit = pod.exec(&image(flotilla_examples::BATCH), io).await;
    assert_eq!(exit, Exit::Code(0));
    let mut out = String::new();
    read_stdout.read_to_string(&mut out).await.expect("stdout");
    // LIMIT comes from the pod's env: 8 primes below 20.
    assert_eq!(out, "batch: 8 primes below 20\narg[0]: batch\narg[1]: one two\n");
    assert!(lines(pod.logs()).is_empty(), "an exec's output is not the pod's log");

    // The exec's own variables replace the pod's (a terminal's COLUMNS and LINES do so).
    let (stdout, mut read_stdout) = tokio::io::duplex(64 * 1024);
    let io = crate::ExecIo {
        args: vec!["batch".into()],
        stdout: Some(Box::new(stdout)),
        env: vec![("LIMIT".into(), "30".into())],
        ..crate::ExecIo::default()
    };
    assert_eq!(pod.exec(&image(flotilla_examples::BATCH), io).await, Exit::Code(0));
    let mut out = String::new();
    read_stdout.read_to_string(&mut out).await.expect("stdout");
    assert!(out.starts_with("batch: 10 primes below 30\n"), "{out}");

    let exit = pod.exec(&image(flotilla_examples::ECHO), crate::ExecIo::default()).await;
    assert!(matches!(&exit, Exit::StartError(message) if message.contains("not a command")), "{exit:?}");

    let crasher = command_pod(flotilla_examples::CRASHER, spec("c", &[("EXIT_CODE", "7")], Limits::default()));
    let exit = crasher.exec(&image(flotilla_examples::CRASHER), crate::ExecIo::default()).await;
    assert_eq!(exit, Exit::Code(7));
}

/// The toolbox as a command pod (`image: busybox` with `command: [sh, -c, …]`): argv[0]
/// is the pod's name, so the applet is argv[1]; a script's output is the pod's log.
#[tokio::test]
async fn toolbox() {
    let mut job = spec("busybox-job", &[("WHO", "pod")], Limits::default());
    job.args =
        ["sh", "-c", "for i in 1 2; do echo \"$WHO line $i\"; done | sort -r; exit 4"].map(str::to_owned).to_vec();
    let pod = command_pod(flotilla_examples::TOOLBOX, job);
    let logs = pod.logs().clone();
    let exit = pod.run().await;
    assert_eq!(exit, Exit::Code(4), "{:?}", logs.lines());
    assert_eq!(lines(&logs), ["pod line 2", "pod line 1"]);
}

/// The nginx stand-in: its welcome page when nothing is mounted at its html directory.
#[tokio::test]
async fn nginx() {
    let pod = http_pod(flotilla_examples::NGINX, spec("web", &[], Limits::default()));
    let (status, body) = text(pod.handle(get("http://localhost/")).await.expect("response")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Welcome to nginx!"), "{body}");
    let (status, _) = text(pod.handle(get("http://localhost/missing.html")).await.expect("response")).await;
    assert_eq!(status, 404);
}
