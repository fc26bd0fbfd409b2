//! Services: endpoints, load balancing, affinity and the answers on failure, through
//! the Ingress HTTP listener.

use super::*;
use std::time::Instant;
use tokio::task::JoinSet;

/// Service `web` (port 80) over these pods, behind an Ingress for every host.
async fn web(env: &Env, pods: &[(&str, bool)]) {
    env.service("web", json!([{"port": 80, "targetPort": 8080}])).await;
    env.endpoints("web", "web-abc", pods).await;
    env.ingress_to("web").await;
}

/// Service `name` with an annotation and spec fields, over these pods, for `HOST`.
async fn service_for_host(env: &Env, name: &str, host: &str, extra: Value, pods: &[(&str, bool)]) {
    let mut service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
    merge(&mut service, extra);
    env.create(service).await;
    env.endpoints(name, &format!("{name}-abc"), pods).await;
    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ingressClassName": "flotilla", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]}}))
        .await;
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

/// `n` GETs to the Ingress listener for `host`, `concurrency` at a time: answers by
/// body (pod name, or status when not 200).
async fn load(env: &Env, host: &str, n: usize, concurrency: usize) -> HashMap<String, usize> {
    let addr = env.proxy.http_addr().expect("an HTTP listener");
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let client = env.client.clone();
        let host = host.to_string();
        let share = n / concurrency + usize::from(worker < n % concurrency);
        tasks.spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..share {
                let request = Request::get(format!("http://{addr}/"))
                    .header("host", &host)
                    .body(Full::default())
                    .expect("a request");
                let response = client.request(request).await.expect("an answer");
                let status = response.status();
                let body = response.into_body().collect().await.expect("a body").to_bytes();
                let key = if status == StatusCode::OK {
                    String::from_utf8_lossy(&body).into_owned()
                } else {
                    status.to_string()
                };
                *seen.entry(key).or_default() += 1;
            }
            seen
        });
    }
    let mut total = HashMap::new();
    while let Some(seen) = tasks.join_next().await {
        for (key, count) in seen.expect("a worker") {
            *total.entry(key).or_default() += count;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly_over_ready_endpoints() {
    let env = start(test_config()).await;
    web(&env, &[("web-1", true), ("web-2", true), ("web-3", true), ("web-4", false)]).await;
    env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;

    let seen = load(&env, "shop.test", 3000, 8).await;
    assert_eq!(seen.values().sum::<usize>(), 3000, "{seen:?}");
    assert_eq!(seen.len(), 3, "only the ready pods answer: {seen:?}");
    for pod in ["web-1", "web-2", "web-3"] {
        let share = seen.get(pod).copied().unwrap_or(0) as f64 / 3000.0;
        assert!((0.28..=0.38).contains(&share), "{pod} got {share:.3} of the requests: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_becomes_ready_gets_traffic_within_100_ms() {
    let env = start(test_config()).await;
    web(&env, &[("web-1", true), ("web-2", false)]).await;
    env.get_until("shop.test", "/", |a| a.body == "web-1").await;
    for _ in 0..10 {
        assert_eq!(env.get("shop.test", "/").await.body, "web-1", "web-2 is not ready yet");
    }

    let started = Instant::now();
    env.endpoints("web", "web-abc", &[("web-1", true), ("web-2", true)]).await;
    let elapsed = loop {
        if env.get("shop.test", "/").await.body == "web-2" {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "web-2 never got a request");
    };
    assert!(elapsed < Duration::from_millis(100), "web-2 got its first request after {elapsed:?}");

    // And a pod that stops being ready gets none.
    env.endpoints("web", "web-abc", &[("web-1", false), ("web-2", true)]).await;
    wait_for("web-1 to go", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        (snapshot.service("default", "web")?.ports[0].endpoints.len() == 1).then_some(())
    })
    .await;
    let seen = load(&env, "shop.test", 20, 2).await;
    assert_eq!(seen.get("web-2"), Some(&20), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_endpoint_is_503_naming_the_service_unless_one_is_still_serving() {
    let env = start(test_config()).await;
    env.service("web", json!([{"port": 80}])).await;
    env.ingress_to("web").await;
    let answer = env.get_until("shop.test", "/", |a| a.status == StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(answer.body.contains("service default/web has no ready endpoints"), "{}", answer.body);

    env.endpoints("web", "web-abc", &[("web-1", false)]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = env.get("shop.test", "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert!(answer.body.contains("default/web"), "{}", answer.body);

    // A terminating pod that still serves takes traffic when nothing is ready, as
    // kube-proxy falls back to.
    let draining = json!({"addresses": ["10.244.0.9"], "nodeName": NODE,
        "conditions": {"ready": false, "serving": true, "terminating": true},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-old"}});
    let rt = resource("discovery.k8s.io/v1", "EndpointSlice");
    let mut slice = env.cluster.get(rt, Some("default"), "web-abc").await.expect("the slice");
    slice["endpoints"].as_array_mut().expect("endpoints").push(draining);
    env.cluster.replace(rt, Some("default"), "web-abc", &slice, None).await.expect("replaced");
    let answer = env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;
    assert_eq!(answer.body, "web-old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pod_is_502_and_a_slow_one_504() {
    let env = start(ProxyConfig { upstream_timeout: Duration::from_millis(300), ..test_config() }).await;
    service_for_host(&env, "failing", "failing.test", json!({}), &[("failing-1", true)]).await;
    service_for_host(&env, "slow", "slow.test", json!({}), &[("slow-1", true)]).await;
    service_for_host(&env, "gone", "gone.test", json!({}), &[("gone-1", true)]).await;
    env.kubelet.set("failing-1", Behaviour::Fail);
    env.kubelet.set("slow-1", Behaviour::Slow(Duration::from_secs(3)));
    env.kubelet.set("gone-1", Behaviour::Gone);
    // Routed, and with its endpoint.
    let ready = |a: &Answer| a.status != StatusCode::NOT_FOUND && a.status != StatusCode::SERVICE_UNAVAILABLE;

    let answer = env.get_until("failing.test", "/", ready).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert!(answer.body.contains("request trapped"), "{}", answer.body);

    let answer = env.get_until("gone.test", "/", ready).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert!(
        answer.body.contains("service default/gone: pod default/gone-1 could not take the request"),
        "{}",
        answer.body
    );

    env.get_until("slow.test", "/", ready).await;
    let started = Instant::now();
    let answer = env.get("slow.test", "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{}", answer.body);
    assert!(answer.body.contains("service default/slow: pod default/slow-1 did not answer in time"), "{}", answer.body);
    assert!(started.elapsed() < Duration::from_secs(2), "the 504 took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_once_when_the_pod_is_gone() {
    let env = start(test_config()).await;
    // web-0 is gone from its node.
    service_for_host(&env, "web", "shop.test", json!({}), &[("web-0", true), ("web-1", true)]).await;
    env.kubelet.set("web-0", Behaviour::Gone);
    // far-9 is on a node with no agent.
    service_for_host(&env, "far", "far.test", json!({}), &[("far-1", true)]).await;
    let mut slice = env.cluster.get(resource("discovery.k8s.io/v1", "EndpointSlice"), Some("default"), "far-abc").await;
    let slice = slice.as_mut().expect("the slice");
    slice["endpoints"].as_array_mut().expect("endpoints").push(json!({"addresses": ["10.244.1.9"],
        "nodeName": "node-z", "conditions": {"ready": true},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "far-9"}}));
    let rt = resource("discovery.k8s.io/v1", "EndpointSlice");
    env.cluster.replace(rt, Some("default"), "far-abc", slice, None).await.expect("replaced");
    let addr = env.proxy.http_addr().expect("an HTTP listener");
    wait_for("both services' endpoints", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        let count = |name: &str| snapshot.service("default", name).map_or(0, |s| s.ports[0].endpoints.len());
        let routed = |host: &str| snapshot.ingress.route(host, "/").is_some();
        (count("web") == 2 && count("far") == 2 && routed("far.test") && routed("shop.test")).then_some(())
    })
    .await;
    for _ in 0..10 {
        let answer = env.get("far.test", "/").await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "far-1"));
    }

    for _ in 0..30 {
        let answer = env.get("shop.test", "/").await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "web-1"));
    }
    for method in ["PUT", "DELETE", "HEAD", "OPTIONS"] {
        for _ in 0..6 {
            let request = Request::builder()
                .method(method)
                .uri("/")
                .header("host", "shop.test")
                .body(Full::new(Bytes::from("x")));
            let answer = env.send(addr, request.expect("a request")).await;
            assert_eq!(answer.status, StatusCode::OK, "{method}: {}", answer.body);
            if method == "PUT" {
                assert_eq!(answer.header("x-seen-body-bytes"), "1", "the retried PUT keeps its body");
            }
        }
    }
    assert_eq!(env.kubelet.hits("web-0"), 0);

    // A POST is not retried: the ones that go to a gone pod fail.
    let mut failed = 0;
    for _ in 0..6 {
        let request = Request::post("/").header("host", "shop.test").body(Full::new(Bytes::from("order")));
        let answer = env.send(addr, request.expect("a request")).await;
        match answer.status {
            StatusCode::OK => assert_eq!(answer.body, "web-1"),
            StatusCode::BAD_GATEWAY => {
                assert!(answer.body.contains("service default/web"), "{}", answer.body);
                failed += 1;
            }
            other => panic!("POST answered {other}: {}", answer.body),
        }
    }
    assert!(failed >= 2, "round robin sends some POSTs to the gone pods: {failed} of 6 failed");
    let upstream = |reason: &str| {
        env.metric(&format!(
            r#"flotilla_service_upstream_errors_total{{namespace="default",reason="{reason}",service="web"}}"#
        ))
    };
    assert!(upstream("retried") >= 10.0, "about half the retriable requests were retried: {}", upstream("retried"));
    assert_eq!(upstream("unreachable"), f64::from(failed), "only the POSTs failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_pins_a_client_to_a_pod() {
    let env = start(test_config()).await;
    let pods = [("web-1", true), ("web-2", true), ("web-3", true)];
    service_for_host(&env, "web", "shop.test", json!({"spec": {"sessionAffinity": "ClientIP"}}), &pods).await;
    let first = env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await.body;
    wait_for("3 endpoints", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        (snapshot.service("default", "web")?.ports[0].endpoints.len() == 3).then_some(())
    })
    .await;
    let seen = load(&env, "shop.test", 60, 3).await;
    assert_eq!(seen.get(&first), Some(&60), "every request of 127.0.0.1 goes to {first}: {seen:?}");

    // When its pod goes, the client is pinned to another one.
    let remaining: Vec<(&str, bool)> = pods.iter().map(|(pod, _)| (*pod, *pod != first)).collect();
    env.endpoints("web", "web-abc", &remaining).await;
    let second = env.get_until("shop.test", "/", |a| a.body != first).await.body;
    let seen = load(&env, "shop.test", 30, 3).await;
    assert_eq!(seen.get(&second), Some(&30), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_p2c_prefer_the_idle_endpoint() {
    let env = start(test_config()).await;
    for policy in ["least-request", "p2c", "round-robin"] {
        let annotations = json!({"metadata": {"annotations": {"flotilla.dev/load-balancer": policy}}});
        let (busy, idle) = (format!("{policy}-busy"), format!("{policy}-idle"));
        let host = format!("{policy}.test");
        service_for_host(&env, policy, &host, annotations, &[(&busy, true), (&idle, true)]).await;
        env.get_until(&host, "/", |a| a.status == StatusCode::OK).await;
        wait_for("2 endpoints", || async {
            let snapshot = env.proxy.shared.snapshot.load();
            (snapshot.service("default", policy)?.ports[0].endpoints.len() == 2).then_some(())
        })
        .await;
        env.kubelet.set(&busy, Behaviour::Slow(Duration::from_millis(1500)));
        let before = (env.kubelet.hits(&busy), env.kubelet.hits(&idle));

        // 20 requests 10 ms apart: one that reaches the slow pod keeps it busy.
        let addr = env.proxy.http_addr().expect("an HTTP listener");
        let mut requests = JoinSet::new();
        for _ in 0..20 {
            let client = env.client.clone();
            let request = Request::get(format!("http://{addr}/")).header("host", &host).body(Full::default());
            requests.spawn(client.request(request.expect("a request")));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while let Some(answer) = requests.join_next().await {
            assert_eq!(answer.expect("a task").expect("an answer").status(), StatusCode::OK);
        }
        let busy_hits = env.kubelet.hits(&busy) - before.0;
        let idle_hits = env.kubelet.hits(&idle) - before.1;
        if policy == "round-robin" {
            assert_eq!((busy_hits, idle_hits), (10, 10), "round robin ignores load");
        } else {
            assert!(busy_hits <= 2 && idle_hits >= 18, "{policy}: busy {busy_hits}, idle {idle_hits}");
        }
    }
}
