//! The proxy's metrics: requests by Service and by Ingress route, upstream failures,
//! and series that go with their objects.

use super::*;

/// An Ingress `name` sending `host` to each Service's port 80, by path (`/SERVICE`),
/// and `/` to the first.
async fn ingress(env: &Env, name: &str, host: &str, services: &[&str]) {
    let mut paths: Vec<Value> = services
        .iter()
        .map(|service| {
            json!({"path": format!("/{service}"), "pathType": "Prefix",
                   "backend": {"service": {"name": service, "port": {"number": 80}}}})
        })
        .collect();
    paths.push(json!({"path": "/", "pathType": "Prefix",
                      "backend": {"service": {"name": services[0], "port": {"number": 80}}}}));
    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ingressClassName": "flotilla", "rules": [{"host": host, "http": {"paths": paths}}]}}))
        .await;
}

/// Service `name` (port 80) over one ready pod `NAME-1`.
async fn web(env: &Env, name: &str) {
    env.service(name, json!([{"port": 80, "targetPort": 8080}])).await;
    env.endpoints(name, &format!("{name}-abc"), &[(&format!("{name}-1"), true)]).await;
}

fn service_requests(service: &str, code: u16) -> String {
    format!(r#"flotilla_service_requests_total{{code="{code}",namespace="default",service="{service}"}}"#)
}

fn ingress_requests(ingress: &str, service: &str, code: u16) -> String {
    format!(
        r#"flotilla_ingress_requests_total{{code="{code}",ingress="{ingress}",namespace="default",service="{service}"}}"#
    )
}

fn upstream_errors(service: &str, reason: &str) -> String {
    format!(r#"flotilla_service_upstream_errors_total{{namespace="default",reason="{reason}",service="{service}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_service_and_by_ingress_route() {
    let env = start(test_config()).await;
    web(&env, "web").await;
    ingress(&env, "shop", "shop.test", &["web"]).await;
    env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;

    // Through the Ingress: counted for its route and for the Service.
    let (service_before, ingress_before) =
        (env.metric(&service_requests("web", 200)), env.metric(&ingress_requests("shop", "web", 200)));
    for _ in 0..5 {
        assert_eq!(env.get("shop.test", "/").await.status, StatusCode::OK);
    }
    assert_eq!(env.metric(&service_requests("web", 200)), service_before + 5.0);
    assert_eq!(env.metric(&ingress_requests("shop", "web", 200)), ingress_before + 5.0);

    // From a pod, in process: for the Service only.
    for _ in 0..3 {
        let request = Request::get("http://web.default/").body(flotilla_client::empty_body()).expect("a request");
        assert_eq!(env.proxy.forward("default", request).await.status(), StatusCode::OK);
    }
    assert_eq!(env.metric(&service_requests("web", 200)), service_before + 8.0);
    assert_eq!(env.metric(&ingress_requests("shop", "web", 200)), ingress_before + 5.0);

    // A request no rule matches counts with empty labels, never its host or path.
    let unmatched = r#"flotilla_ingress_requests_total{code="404",ingress="",namespace="",service=""}"#;
    let before = env.metric(unmatched);
    assert_eq!(env.get("nowhere.test", "/secret/path").await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.metric(unmatched), before + 1.0);

    let scraped = env.metrics_text();
    let durations = [
        r#"flotilla_service_request_duration_seconds_count{namespace="default",service="web"}"#,
        r#"flotilla_ingress_request_duration_seconds_count{ingress="shop",namespace="default",service="web"}"#,
        r#"flotilla_service_request_duration_seconds_bucket{namespace="default",service="web",le="0.00005"}"#,
        r#"flotilla_service_request_duration_seconds_bucket{namespace="default",service="web",le="10"}"#,
    ];
    for series in durations {
        assert!(scraped.contains(series), "{series} in {scraped}");
    }
    assert!(env.metric(durations[0]) >= 8.0, "{scraped}");
    assert!(env.metric(durations[1]) >= 5.0, "{scraped}");
    for request_value in ["shop.test", "nowhere.test", "/secret", "127.0.0.1"] {
        assert!(!scraped.contains(request_value), "{request_value} is a label value: {scraped}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_counted_by_reason() {
    let env = start(ProxyConfig { upstream_timeout: Duration::from_millis(300), ..test_config() }).await;
    env.service("empty", json!([{"port": 80}])).await;
    for name in ["failing", "gone", "slow"] {
        web(&env, name).await;
    }
    env.kubelet.set("failing-1", Behaviour::Fail);
    env.kubelet.set("gone-1", Behaviour::Gone);
    env.kubelet.set("slow-1", Behaviour::Slow(Duration::from_secs(3)));
    ingress(&env, "shop", "shop.test", &["empty", "failing", "gone", "slow"]).await;
    wait_for("the routes and endpoints", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        let ready = ["failing", "gone", "slow"]
            .iter()
            .all(|name| snapshot.service("default", name).is_some_and(|s| !s.ports[0].endpoints.is_empty()));
        let routed = snapshot.ingress.route("shop.test", "/slow").is_some();
        (ready && routed && snapshot.service("default", "empty").is_some()).then_some(())
    })
    .await;

    // No ready endpoint: 503, `no_endpoints`, for the Service and the Ingress route.
    let before = env.metric(&upstream_errors("empty", "no_endpoints"));
    for _ in 0..3 {
        assert_eq!(env.get("shop.test", "/empty").await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(env.metric(&upstream_errors("empty", "no_endpoints")), before + 3.0);
    assert_eq!(env.metric(&service_requests("empty", 503)), 3.0);
    assert_eq!(env.metric(&ingress_requests("shop", "empty", 503)), 3.0);
    // From a pod too.
    let request = Request::get("http://empty/").body(flotilla_client::empty_body()).expect("a request");
    assert_eq!(env.proxy.forward("default", request).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(env.metric(&upstream_errors("empty", "no_endpoints")), before + 4.0);

    for (path, status, reason) in [
        ("/failing", StatusCode::BAD_GATEWAY, "pod_error"),
        ("/gone", StatusCode::BAD_GATEWAY, "unreachable"),
        ("/slow", StatusCode::GATEWAY_TIMEOUT, "timeout"),
    ] {
        let service = &path[1..];
        let answer = env.get("shop.test", path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(env.metric(&upstream_errors(service, reason)), 1.0, "{path}");
        assert_eq!(env.metric(&service_requests(service, status.as_u16())), 1.0, "{path}");
        for other in crate::metrics::REASONS.iter().filter(|r| **r != reason) {
            assert_eq!(env.metric(&upstream_errors(service, other)), 0.0, "{path}: {other}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_go_with_their_service_and_ingress() {
    let env = start(test_config()).await;
    web(&env, "web").await;
    web(&env, "other").await;
    ingress(&env, "shop", "shop.test", &["web", "other"]).await;
    env.get_until("shop.test", "/", |a| a.status == StatusCode::OK).await;
    env.get_until("shop.test", "/other", |a| a.status == StatusCode::OK).await;
    let of_web = |text: &str| {
        text.lines().filter(|l| l.starts_with("flotilla_service_") && l.contains(r#"service="web""#)).count()
    };
    let scraped = env.metrics_text();
    assert!(of_web(&scraped) > 0, "{scraped}");
    assert!(scraped.contains(&ingress_requests("shop", "web", 200)), "{scraped}");

    env.delete("v1", "Service", "web").await;
    let scraped = wait_for("web's series to go", || async {
        let scraped = env.metrics_text();
        (of_web(&scraped) == 0).then_some(scraped)
    })
    .await;
    assert!(scraped.contains(&service_requests("other", 200)), "other Services keep theirs: {scraped}");
    // The Ingress route to it stays while the Ingress names it (its requests are 503s now).
    assert_eq!(env.get("shop.test", "/web").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(env.metric(&ingress_requests("shop", "web", 503)), 1.0);
    assert_eq!(of_web(&env.metrics_text()), 0, "a request to a missing Service makes no Service series");

    // A Service made again starts afresh.
    web(&env, "web").await;
    env.get_until("shop.test", "/web", |a| a.status == StatusCode::OK).await;
    assert_eq!(env.metric(&service_requests("web", 200)), 1.0);

    env.delete("networking.k8s.io/v1", "Ingress", "shop").await;
    wait_for("the Ingress's series to go", || async {
        (!env.metrics_text().contains(r#"ingress="shop""#)).then_some(())
    })
    .await;
}
