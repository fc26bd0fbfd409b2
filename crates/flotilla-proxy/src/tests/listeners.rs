//! NodePort and LoadBalancer Services get real listeners, opened and closed with them,
//! and LoadBalancers their status.

use super::*;

/// A node port free on `ip` in the default NodePort range.
fn free_node_port(ip: &str) -> u16 {
    for port in (30000..32768).rev().step_by(7) {
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free node port on {ip}");
}

async fn get_at(env: &Env, addr: SocketAddr) -> Answer {
    env.send(addr, Request::get("/").header("host", "anything").body(Full::default()).expect("a request")).await
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_port_and_load_balancer_services_get_listeners_and_a_status() {
    // Addresses of this test's own, so that tests in parallel do not share ports.
    let (node_ip, lb_ip) = ("127.0.77.1", "127.0.77.2");
    let config = ProxyConfig {
        node_port_address: node_ip.parse().expect("an address"),
        load_balancer_address: lb_ip.parse().expect("an address"),
        ..test_config()
    };
    let env = start(config).await;

    let wanted = free_node_port(node_ip);
    let created = env
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": wanted}]}}))
        .await;
    let node_port = created["spec"]["ports"][0]["nodePort"].as_u64().and_then(|p| u16::try_from(p).ok());
    let node_port = node_port.expect("the Service has a node port");
    env.endpoints("np", "np-abc", &[("np-1", true)]).await;
    let node_addr = SocketAddr::new(node_ip.parse().expect("an address"), node_port);
    let answer = wait_for("the NodePort listener", || async {
        if refused(node_addr).await {
            return None;
        }
        Some(get_at(&env, node_addr).await).filter(|a| a.status == StatusCode::OK)
    })
    .await;
    assert_eq!(answer.body, "np-1");
    assert_eq!(answer.header("x-seen-forwarded-for"), "127.0.0.1");

    // A LoadBalancer: a listener on the LB address at the service port, and the status.
    let lb_port = {
        let probe = std::net::TcpListener::bind((lb_ip, 0)).expect("a free port");
        probe.local_addr().expect("an address").port()
    };
    env.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "lb", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": lb_port, "targetPort": 8080}]}}))
        .await;
    env.endpoints("lb", "lb-abc", &[("lb-1", true), ("lb-2", true)]).await;
    let lb_addr = SocketAddr::new(lb_ip.parse().expect("an address"), lb_port);
    wait_for("the LoadBalancer listener", || async {
        if refused(lb_addr).await {
            return None;
        }
        Some(get_at(&env, lb_addr).await).filter(|a| a.body.starts_with("lb-"))
    })
    .await;
    let service = wait_for("the LoadBalancer status", || async {
        let service = env.cluster.get(resource("v1", "Service"), Some("default"), "lb").await.ok()?;
        (!service["status"]["loadBalancer"]["ingress"].is_null()).then_some(service)
    })
    .await;
    assert_eq!(service["status"]["loadBalancer"]["ingress"], json!([{"ip": lb_ip, "ipMode": "VIP"}]));
    // Written once: it stays at that version.
    let version = service["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = env.cluster.get(resource("v1", "Service"), Some("default"), "lb").await.expect("the service");
    assert_eq!(again["metadata"]["resourceVersion"], version);

    // A port already taken is logged, not fatal: the other listeners keep working.
    let squatter = std::net::TcpListener::bind((lb_ip, 0)).expect("a port");
    let taken = squatter.local_addr().expect("an address").port();
    env.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "clash", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": taken}]}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_at(&env, node_addr).await.body, "np-1");
    let clash = env.cluster.get(resource("v1", "Service"), Some("default"), "clash").await.expect("the service");
    assert!(clash["status"]["loadBalancer"]["ingress"].is_null(), "not served, so no status: {clash}");
    drop(squatter);

    // Services that go close their listeners.
    env.delete("v1", "Service", "np").await;
    env.delete("v1", "Service", "lb").await;
    wait_for("the listeners to close", || async { (refused(node_addr).await && refused(lb_addr).await).then_some(()) })
        .await;
}
