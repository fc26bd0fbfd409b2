//! Ingress over plain HTTP: host and path rules, the default backend, forwarding
//! headers, classes, and the limits on what clients send.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Services `a`, `b`, `c`, `d` and `fallback`, each with one pod of its name + `-pod`.
async fn backends(env: &Env) {
    for name in ["a", "b", "c", "d", "fallback"] {
        env.service(name, json!([{"port": 80}])).await;
        env.endpoints(name, &format!("{name}-abc"), &[(&format!("{name}-pod"), true)]).await;
    }
}

fn path(path: &str, path_type: &str, service: &str) -> Value {
    json!({"path": path, "pathType": path_type,
           "backend": {"service": {"name": service, "port": {"number": 80}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_paths_route_with_kubernetes_precedence() {
    let env = start(test_config()).await;
    backends(&env).await;
    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
    "metadata": {"name": "shop", "namespace": "default"},
    "spec": {"ingressClassName": "flotilla", "rules": [
        {"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "a")]}},
        {"host": "b.example.com", "http": {"paths": [
            path("/", "Prefix", "b"),
            path("/api", "Prefix", "c"),
            path("/api/v1/", "Prefix", "d"),
            path("/api/exact", "Exact", "a"),
        ]}},
        {"host": "*.wild.example.com", "http": {"paths": [path("/", "ImplementationSpecific", "c")]}},
    ]}}))
    .await;
    env.get_until("a.example.com", "/", |a| a.status == StatusCode::OK).await;

    let cases = [
        ("a.example.com", "/anything", "a-pod"),
        ("A.Example.COM:8080", "/", "a-pod"),
        ("b.example.com", "/", "b-pod"),
        ("b.example.com", "/apiary", "b-pod"),
        ("b.example.com", "/api", "c-pod"),
        ("b.example.com", "/api/v2/x", "c-pod"),
        ("b.example.com", "/api/v1", "d-pod"),
        ("b.example.com", "/api/v1/users?x=1", "d-pod"),
        ("b.example.com", "/api/exact", "a-pod"),
        ("b.example.com", "/api/exact/more", "c-pod"),
        ("x.wild.example.com", "/", "c-pod"),
    ];
    for (host, path, pod) in cases {
        // Each Service's objects reach the proxy on their own watches: wait for them.
        let answer = env.get_until(host, path, |a| a.status != StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, pod), "{host}{path}");
        assert_eq!(answer.header("x-seen-uri"), path, "the pod sees the path and query unchanged");
    }
    // A wildcard covers exactly one label; nothing else matches: 404.
    for (host, path) in [("y.x.wild.example.com", "/"), ("wild.example.com", "/"), ("c.example.com", "/")] {
        let answer = env.get(host, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{host}{path}: {}", answer.body);
        assert!(answer.body.starts_with("no Ingress rule"), "{}", answer.body);
    }

    // A default backend takes what no rule does.
    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "fallback", "namespace": "default"},
        "spec": {"ingressClassName": "flotilla",
                 "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}}}}))
        .await;
    let answer = env.get_until("c.example.com", "/", |a| a.status == StatusCode::OK).await;
    assert_eq!(answer.body, "fallback-pod");
    assert_eq!(env.get("a.example.com", "/").await.body, "a-pod", "rules still win over the default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_see_the_host_and_forwarding_headers() {
    let env = start(test_config()).await;
    backends(&env).await;
    env.ingress_to("a").await;
    env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;
    let addr = env.proxy.http_addr().expect("an HTTP listener");
    let request = Request::get("/cart?item=3")
        .header("host", "shop.test:8080")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-request-id", "req-42")
        .body(Full::default())
        .expect("a request");
    let answer = env.send(addr, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-seen-host"), "shop.test:8080");
    assert_eq!(answer.header("x-seen-uri"), "/cart?item=3");
    assert_eq!(answer.header("x-seen-forwarded-for"), "203.0.113.7, 127.0.0.1");
    assert_eq!(answer.header("x-seen-forwarded-proto"), "http");
    assert_eq!(answer.header("x-seen-forwarded-host"), "shop.test:8080");
    assert_eq!(answer.header("x-seen-request-id"), "req-42");
    assert_eq!(answer.header("x-seen-connection"), "", "hop-by-hop headers stay with the hop");
    // Without one, each request gets an id of its own.
    let first = env.get("shop.test", "/").await.header("x-seen-request-id").to_string();
    let second = env.get("shop.test", "/").await.header("x-seen-request-id").to_string();
    assert!(!first.is_empty() && first != second, "{first} {second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ingresses_of_the_proxys_class_are_served() {
    let env = start(test_config()).await;
    backends(&env).await;
    let ingress = |name: &str, class: Option<&str>, host: &str, service: &str| {
        let mut spec = json!({"rules": [{"host": host, "http": {"paths": [path("/", "Prefix", service)]}}]});
        if let Some(class) = class {
            spec["ingressClassName"] = json!(class);
        }
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    };
    env.create(ingress("mine", Some("flotilla"), "mine.test", "a")).await;
    env.create(ingress("theirs", Some("nginx"), "theirs.test", "b")).await;
    env.create(ingress("classless", None, "classless.test", "c")).await;
    env.get_until("mine.test", "/", |a| a.status == StatusCode::OK).await;
    // No IngressClass is the default: classless Ingresses are served.
    assert_eq!(env.get_until("classless.test", "/", |a| a.status == StatusCode::OK).await.body, "c-pod");
    assert_eq!(env.get("theirs.test", "/").await.status, StatusCode::NOT_FOUND);

    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "k8s.io/ingress-nginx"}}))
        .await;
    env.get_until("classless.test", "/", |a| a.status == StatusCode::NOT_FOUND).await;
    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "flotilla", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "flotilla.dev/ingress"}}))
        .await;
    env.get_until("classless.test", "/", |a| a.status == StatusCode::OK).await;
    assert_eq!(env.get("mine.test", "/").await.body, "a-pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_tls_is_served_too() {
    let env = start(test_config()).await;
    backends(&env).await;
    env.ingress_to("b").await;
    env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;
    let addr = env.proxy.http_addr().expect("an HTTP listener");
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let response = client
        .request(Request::get(format!("http://{addr}/h2")).body(Full::default()).expect("a request"))
        .await
        .expect("an answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let seen_host = response.headers().get("x-seen-host").cloned();
    let body = response.into_body().collect().await.expect("a body").to_bytes();
    assert_eq!(body, "b-pod");
    assert_eq!(seen_host.as_ref().and_then(|h| h.to_str().ok()), Some(addr.to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_headers_and_slow_clients_are_refused() {
    let config = ProxyConfig {
        max_body_bytes: 1024,
        max_header_bytes: 8192,
        limits: flotilla_client::ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            tls_handshake_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..test_config()
    };
    let env = start(config).await;
    backends(&env).await;
    env.ingress_to("a").await;
    env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;
    let addr = env.proxy.http_addr().expect("an HTTP listener");

    let post = |body: Vec<u8>| {
        Request::post("/upload").header("host", "shop.test").body(Full::new(Bytes::from(body))).expect("a request")
    };
    let answer = env.send(addr, post(vec![b'x'; 1024])).await;
    assert_eq!((answer.status, answer.header("x-seen-body-bytes")), (StatusCode::OK, "1024"));
    let answer = env.send(addr, post(vec![b'x'; 1025])).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.body);

    // A chunked body is counted as it streams.
    let chunked = |size: usize| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connected");
        let head =
            "POST /upload HTTP/1.1\r\nhost: shop.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let body = format!("{size:x}\r\n{}\r\n0\r\n\r\n", "y".repeat(size));
        stream.write_all(format!("{head}{body}").as_bytes()).await.expect("sent");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    };
    let small = chunked(1000).await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    let large = chunked(5000).await;
    assert!(large.starts_with("HTTP/1.1 413"), "{large}");

    // A head over the limit: 431.
    let request = Request::get("/").header("host", "shop.test").header("x-big", "z".repeat(20_000));
    let answer = env.send(addr, request.body(Full::default()).expect("a request")).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // A client that sends half a head, or nothing, is cut off.
    for partial in ["GET / HTTP/1.1\r\nhost: shop.test\r\n", ""] {
        let started = std::time::Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connected");
        stream.write_all(partial.as_bytes()).await.expect("sent");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection of a slow client stays open");
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.is_empty() || rest.starts_with("HTTP/1.1 408"), "{rest}");
        assert!(started.elapsed() >= Duration::from_millis(250), "cut off after {:?}", started.elapsed());
    }
}
