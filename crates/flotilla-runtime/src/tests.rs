//! The runtime against the example components: one test per example (checked by
//! `foreach_example!`), plus loading and caching.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

use crate::*;

/// One runtime for the whole binary: each test's own would reserve another pool.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig { cache_dir: None, max_instances: 200, max_memory_per_instance: 128 << 20 })
            .expect("runtime")
    })
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

fn spec(name: &str, env: &[(&str, &str)], limits: Limits) -> PodSpec {
    PodSpec {
        name: name.to_owned(),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        args: Vec::new(),
        preopens: Vec::new(),
        limits,
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

#[tokio::test]
async fn mem_hog() {
    let limits = Limits { memory_bytes: Some(16 << 20), ..Limits::default() };
    let pod = http_pod(flotilla_examples::MEM_HOG, spec("hog", &[], limits));
    let error = pod.handle(get("/?mb=64")).await.expect_err("over the limit");
    assert_eq!(error, PodError::OutOfMemory);
    // The pod still answers requests that fit.
    let (status, body) = text(pod.handle(get("/?mb=1")).await.expect("small request")).await;
    assert_eq!(status, 200);
    assert!(body.contains("allocated 1 MiB"), "{body}");
}

#[tokio::test]
async fn cpu_burner() {
    let limits = Limits { request_timeout: Some(Duration::from_millis(50)), ..Limits::default() };
    let pod = http_pod(flotilla_examples::CPU_BURNER, spec("burner", &[], limits));
    let started = Instant::now();
    let error = pod.handle(get("/?ms=5000")).await.expect_err("times out");
    assert_eq!(error, PodError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let (status, _) = text(pod.handle(get("/?ms=1")).await.expect("quick request")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn batch() {
    let mut spec = spec("batch-job", &[("LIMIT", "100")], Limits::default());
    spec.args = vec!["--flag".to_owned(), "value".to_owned()];
    let pod = command_pod(flotilla_examples::BATCH, spec);
    let logs = pod.logs().clone();
    // `run` is `Send + 'static`: a node spawns it.
    assert_eq!(tokio::spawn(pod.run()).await.expect("task"), Exit::Code(0));
    assert_eq!(lines(&logs), ["batch: 25 primes below 100", "arg[0]: batch-job", "arg[1]: --flag", "arg[2]: value"]);
    assert!(logs.lines().iter().all(|l| l.stream == LogStream::Stdout));
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
    assert_eq!(lines(&logs), ["log line 1", "log line 2"]);
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
    spec.preopens.push(Preopen { host: "/no/such/dir".into(), guest: "/data".into(), read_only: true });
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
