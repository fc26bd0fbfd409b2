//! Pods' outgoing requests to Services, routed in process by name or cluster IP.

use super::*;

/// The Service's cluster IP: the API server's, or one set here while it allocates none.
async fn cluster_ip(env: &Env, created: &Value) -> String {
    if let Some(ip) = created["spec"]["clusterIP"].as_str().filter(|ip| !ip.is_empty() && *ip != "None") {
        return ip.to_string();
    }
    let name = created["metadata"]["name"].as_str().expect("a name");
    let patched = env.patch("v1", "Service", name, json!({"spec": {"clusterIP": "10.96.0.77"}})).await;
    patched["spec"]["clusterIP"].as_str().expect("a cluster IP").to_string()
}

fn authority(text: &str) -> http::uri::Authority {
    text.parse().expect("an authority")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_services_by_name_and_cluster_ip() {
    let env = start(test_config()).await;
    let created = env.service("web", json!([{"name": "http", "port": 80}, {"name": "admin", "port": 9090}])).await;
    let ip = cluster_ip(&env, &created).await;
    env.slice("web", "web-http", json!([{"name": "http", "port": 8080}]), &[("web-1", true)]).await;
    env.slice("web", "web-admin", json!([{"name": "admin", "port": 9000}]), &[("web-admin-1", true)]).await;
    wait_for("the service", || async {
        env.proxy.is_service_host("default", &authority(&format!("{ip}:9090"))).then_some(())
    })
    .await;
    wait_for("its endpoints", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        let web = snapshot.service("default", "web")?;
        web.ports.iter().all(|p| !p.endpoints.is_empty()).then_some(())
    })
    .await;

    let cases = [
        ("default", "web".to_string(), "web-1"),
        ("default", "web:80".to_string(), "web-1"),
        ("default", "web.default".to_string(), "web-1"),
        ("other", "web.default".to_string(), "web-1"),
        ("default", "web.default.svc".to_string(), "web-1"),
        ("default", "web.default.svc.cluster.local".to_string(), "web-1"),
        ("default", "web:9090".to_string(), "web-admin-1"),
        ("default", ip.clone(), "web-1"),
        ("default", format!("{ip}:9090"), "web-admin-1"),
    ];
    for (namespace, host, pod) in cases {
        assert!(env.proxy.is_service_host(namespace, &authority(&host)), "{host} from {namespace}");
        let request =
            Request::get(format!("http://{host}/hello?x=1")).body(flotilla_client::empty_body()).expect("a request");
        let response = env.proxy.forward(namespace, request).await;
        assert_eq!(response.status(), StatusCode::OK, "{host} from {namespace}");
        let seen_host = response.headers().get("x-seen-host").cloned();
        let seen_uri = response.headers().get("x-seen-uri").cloned();
        let body = response.into_body().collect().await.expect("a body").to_bytes();
        assert_eq!(body, pod, "{host} from {namespace}");
        assert_eq!(seen_host.as_ref().and_then(|h| h.to_str().ok()), Some(host.as_str()));
        assert_eq!(seen_uri.as_ref().and_then(|u| u.to_str().ok()), Some("/hello?x=1"));
    }

    // By Host header too (an origin-form request).
    let request =
        Request::get("/").header("host", "web.default.svc").body(flotilla_client::empty_body()).expect("a request");
    assert_eq!(env.proxy.forward("default", request).await.status(), StatusCode::OK);

    for (namespace, host) in [
        ("other", "web"),
        ("default", "web:8080"),
        ("default", "web.default.svc.example.org"),
        ("default", "example.com"),
        ("default", "10.96.255.254"),
    ] {
        assert!(!env.proxy.is_service_host(namespace, &authority(host)), "{host} from {namespace}");
        let request = Request::get(format!("http://{host}/")).body(flotilla_client::empty_body()).expect("a request");
        let response = env.proxy.forward(namespace, request).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{host} from {namespace}");
    }

    // A Service with no ready endpoint answers 503 naming it.
    env.service("empty", json!([{"port": 80}])).await;
    wait_for("the empty service", || async { env.proxy.is_service_host("default", &authority("empty")).then_some(()) })
        .await;
    let response = env
        .proxy
        .forward("default", Request::get("http://empty/").body(flotilla_client::empty_body()).expect("a request"))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.expect("a body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("service default/empty has no ready endpoints"));
}
