//! Services through the public API: cluster IPs and node ports allocated, checked and
//! released as kube-apiserver does (and still right after a restart); kubectl's view of
//! them; and, with the whole cluster, a Deployment's ready pods in its Service's
//! EndpointSlice.

use crate::support::{Server, create};
use anyhow::{Context as _, Result, bail};
use flotilla::client::Client;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

const SERVICES: &str = "/api/v1/namespaces/default/services";
const MERGE: &str = "application/merge-patch+json";

fn service(name: &str, spec: Value) -> Value {
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    });
    json_patch::merge(&mut service["spec"], &spec);
    service
}

fn cluster_ip(service: &Value) -> Result<Ipv4Addr> {
    service["spec"]["clusterIP"].as_str().context("no clusterIP")?.parse().context("clusterIP not an IPv4 address")
}

fn node_ports(service: &Value) -> Vec<i64> {
    service["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_i64()).collect()
}

fn in_service_range(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 10 && (96..112).contains(&b) && ip != Ipv4Addr::new(10, 96, 0, 0) && ip != Ipv4Addr::new(10, 111, 255, 255)
}

/// A create that must fail with 422; returns the message. The Service must not exist.
async fn refused(client: &Client, path: &str, object: &Value) -> Result<String> {
    let response = client.post_json(path, object).await?;
    let message = response.api_error().message;
    anyhow::ensure!(response.status.as_u16() == 422, "expected 422, got {}: {message}", response.status);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let after = client.get(&format!("{path}/{name}")).await?;
    anyhow::ensure!(after.status.as_u16() == 404, "the refused Service {name} was stored");
    Ok(message)
}

async fn get_service(client: &Client, name: &str) -> Result<Value> {
    Ok(client.get(&format!("{SERVICES}/{name}")).await?.ok()?)
}

#[tokio::test]
async fn cluster_ips_are_allocated_unique_honoured_and_checked() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;

    // The API server's own Service, as kube-apiserver makes it.
    let kubernetes = get_service(client, "kubernetes").await?;
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["name"], "https");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);
    assert!(kubernetes["spec"]["ports"][0]["targetPort"].as_u64().is_some_and(|p| p > 0));

    // 50 at once: 50 addresses, all different, all in the range.
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        creates.spawn(async move { client.post_json(SERVICES, &service(&format!("s{i:02}"), json!({}))).await });
    }
    let mut ips = HashSet::new();
    while let Some(joined) = creates.join_next().await {
        let created = joined??.ok()?;
        let ip = cluster_ip(&created)?;
        assert!(in_service_range(ip) && ip != Ipv4Addr::new(10, 96, 0, 1), "{ip}");
        assert!(ips.insert(ip), "{ip} allocated twice");
        assert_eq!(created["spec"]["clusterIPs"], json!([ip.to_string()]));
    }
    assert_eq!(ips.len(), 50);
    let listed = client.get(SERVICES).await?.ok()?;
    let stored: HashSet<Ipv4Addr> =
        listed["items"].as_array().into_iter().flatten().filter_map(|s| cluster_ip(s).ok()).collect();
    assert_eq!(stored.len(), 51, "50 and kubernetes, each its own");

    // Defaults, as kube-apiserver fills them in.
    let s00 = get_service(client, "s00").await?;
    let spec = &s00["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");

    // A requested address is honoured; the same again is refused, naming the field.
    let dns = create(client, &service("dns", json!({"clusterIP": "10.96.0.10"}))).await?;
    assert_eq!(dns["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    let message = refused(client, SERVICES, &service("dns2", json!({"clusterIP": "10.96.0.10"}))).await?;
    assert_eq!(
        message,
        "Service \"dns2\" is invalid: spec.clusterIPs: Invalid value: [\"10.96.0.10\"]: failed to allocate IP \
         10.96.0.10: provided IP is already allocated"
    );
    let message = refused(client, SERVICES, &service("far", json!({"clusterIP": "192.168.0.10"}))).await?;
    assert!(
        message.ends_with("provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{message}"
    );
    let message = refused(client, SERVICES, &service("edge", json!({"clusterIP": "10.111.255.255"}))).await?;
    assert!(message.contains("not in the valid range"), "broadcast: {message}");

    // Headless: nothing allocated.
    let headless = create(client, &service("headless", json!({"clusterIP": "None"}))).await?;
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));

    // A PUT that leaves the address out keeps it (kubectl apply of the original manifest);
    // one that changes it is refused.
    let mut resubmitted = service("dns", json!({}));
    resubmitted["metadata"]["resourceVersion"] = dns["metadata"]["resourceVersion"].clone();
    let kept = client.put_json(&format!("{SERVICES}/dns"), &resubmitted).await?.ok()?;
    assert_eq!(kept["spec"]["clusterIP"], "10.96.0.10");
    let moved = client.patch(&format!("{SERVICES}/dns"), MERGE, &json!({"spec": {"clusterIP": "10.96.0.11"}})).await?;
    assert_eq!(moved.status.as_u16(), 422);
    assert!(moved.api_error().message.contains("spec.clusterIPs[0]"), "{}", moved.api_error().message);
    assert!(moved.api_error().message.ends_with("may not change once set"), "{}", moved.api_error().message);

    // Deleting frees the address.
    client.delete(&format!("{SERVICES}/dns")).await?.ok()?;
    create(client, &service("dns-again", json!({"clusterIP": "10.96.0.10"}))).await?;
    Ok(())
}

#[tokio::test]
async fn node_ports_are_allocated_checked_and_released_on_type_changes() -> Result<()> {
    let server = Server::start()?;
    let client = &server.client;
    let web = create(client, &service("web", json!({"type": "NodePort"}))).await?;
    let allocated = node_ports(&web);
    assert_eq!(allocated.len(), 1);
    assert!((30000..=32767).contains(&allocated[0]), "{allocated:?}");
    assert_eq!(web["spec"]["externalTrafficPolicy"], "Cluster");

    let fixed =
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]});
    create(client, &service("fixed", fixed.clone())).await?;
    // Taken, in any namespace.
    client.post_json("/api/v1/namespaces", &json!({"metadata": {"name": "other"}})).await?.ok()?;
    let message = refused(client, "/api/v1/namespaces/other/services", &service("again", fixed.clone())).await?;
    assert_eq!(
        message,
        "Service \"again\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let low = json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 8080}]});
    let message = refused(client, SERVICES, &service("low", low)).await?;
    assert!(
        message.ends_with("provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{message}"
    );

    // ClusterIP → NodePort allocates; NodePort → ClusterIP releases and clears.
    create(client, &service("switch", json!({}))).await?;
    let path = format!("{SERVICES}/switch");
    let node_port = client.patch(&path, MERGE, &json!({"spec": {"type": "NodePort"}})).await?.ok()?;
    let port = *node_ports(&node_port).first().context("a node port after the type change")?;
    assert!((30000..=32767).contains(&port));
    let cluster_ip = client.patch(&path, MERGE, &json!({"spec": {"type": "ClusterIP"}})).await?.ok()?;
    assert!(node_ports(&cluster_ip).is_empty(), "{:#}", cluster_ip["spec"]);
    assert!(cluster_ip["spec"].get("externalTrafficPolicy").is_none());
    let reuse = json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": port}]});
    create(client, &service("reuse", reuse)).await?;

    // LoadBalancer: node ports too, unless it opts out.
    let lb = create(client, &service("lb", json!({"type": "LoadBalancer"}))).await?;
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(node_ports(&lb).len(), 1);
    let bare =
        create(client, &service("bare", json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false})))
            .await?;
    assert!(node_ports(&bare).is_empty());

    // Deleting frees the port.
    client.delete(&format!("{SERVICES}/fixed")).await?.ok()?;
    create(client, &service("fixed-again", fixed)).await?;
    Ok(())
}

#[tokio::test]
async fn allocations_survive_a_restart() -> Result<()> {
    let mut server = Server::start()?;
    let mut before: BTreeMap<String, (Ipv4Addr, Vec<i64>)> = BTreeMap::new();
    for i in 0..20 {
        let name = format!("a{i:02}");
        let created = create(&server.client, &service(&name, json!({"type": "NodePort"}))).await?;
        before.insert(name, (cluster_ip(&created)?, node_ports(&created)));
    }
    server.restart()?;
    let client = &server.client;
    let taken_ip = before["a00"].0.to_string();
    let message = refused(client, SERVICES, &service("clash", json!({"clusterIP": taken_ip}))).await?;
    assert!(message.contains("provided IP is already allocated"), "{message}");
    let (ips, ports): (HashSet<Ipv4Addr>, HashSet<i64>) =
        (before.values().map(|v| v.0).collect(), before.values().flat_map(|v| v.1.clone()).collect());
    for i in 0..20 {
        let created = create(client, &service(&format!("b{i:02}"), json!({"type": "NodePort"}))).await?;
        let ip = cluster_ip(&created)?;
        assert!(!ips.contains(&ip), "{ip} reused after the restart");
        for port in node_ports(&created) {
            assert!(!ports.contains(&port), "node port {port} reused after the restart");
        }
    }
    for (name, (ip, ports)) in &before {
        let stored = get_service(client, name).await?;
        assert_eq!((cluster_ip(&stored)?, node_ports(&stored)), (*ip, ports.clone()));
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_shows_cluster_ip_and_ports_and_reapplies_unchanged() -> Result<()> {
    let server = Server::start()?;
    let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  \
                    selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n";
    let (ok, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], manifest)?;
    assert!(ok && out.contains("service/web created"), "{out}\n{err}");
    let (ok, table, err) = server.kubectl(&["get", "svc", "web"])?;
    assert!(ok, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    let stored = get_service(&server.client, "web").await?;
    let ip = cluster_ip(&stored)?.to_string();
    let node_port = *node_ports(&stored).first().context("a node port")?;
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..5], ["web", "NodePort", ip.as_str(), "<none>", &format!("80:{node_port}/TCP")]);

    // The same manifest again: nothing changes, the allocations stay.
    let (ok, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], manifest)?;
    assert!(ok && out.contains("service/web unchanged"), "{out}\n{err}");
    let (ok, out, err) = server.kubectl_with_stdin(&["apply", "-f", "-"], &manifest.replace("port: 80", "port: 81"))?;
    assert!(ok && out.contains("service/web configured"), "{out}\n{err}");
    let after = get_service(&server.client, "web").await?;
    assert_eq!(after["spec"]["clusterIP"].as_str(), Some(ip.as_str()));
    assert_eq!(node_ports(&after), [node_port], "the node port stays with the renumbered port (same name)");
    let (ok, all, err) = server.kubectl(&["get", "svc", "-A"])?;
    assert!(ok && all.contains("kubernetes") && all.contains("10.96.0.1") && all.contains("443/TCP"), "{all}\n{err}");
    Ok(())
}

#[tokio::test]
async fn a_deployments_ready_pods_are_in_its_service_endpointslice() -> Result<()> {
    let server = Server::start_with(&[])?;
    let client = &server.client;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "hello", "image": "hello-http"}]}}},
    });
    create(client, &deployment).await?;
    create(client, &service("hello", json!({}))).await?;
    let slices_path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices\
                       ?labelSelector=kubernetes.io%2Fservice-name%3Dhello";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (slice, pods) = loop {
        let slices = client.get(slices_path).await?.ok()?;
        let pods = client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dhello").await?.ok()?;
        let pod_ips: BTreeMap<String, String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((p["metadata"]["name"].as_str()?.to_string(), p["status"]["podIP"].as_str()?.to_string()))
            })
            .collect();
        let items = slices["items"].as_array().cloned().unwrap_or_default();
        if let [slice] = items.as_slice() {
            let ready: BTreeMap<String, String> = slice["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["conditions"]["ready"] == true)
                .filter_map(|e| {
                    Some((e["targetRef"]["name"].as_str()?.to_string(), e["addresses"][0].as_str()?.to_string()))
                })
                .collect();
            if ready.len() == 2 && ready == pod_ips {
                break (slice.clone(), pod_ips);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no EndpointSlice with the 2 ready pods: {slices:#}\npods: {pod_ips:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    let endpoints = client.get("/api/v1/namespaces/default/endpoints/hello").await?.ok()?;
    let mut addresses: Vec<&str> = endpoints["subsets"][0]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["ip"].as_str())
        .collect();
    addresses.sort_unstable();
    let mut ips: Vec<&str> = pods.values().map(String::as_str).collect();
    ips.sort_unstable();
    assert_eq!(addresses, ips);
    let (ok, out, err) = server.kubectl(&["get", "endpointslices", "-l", "kubernetes.io/service-name=hello"])?;
    assert!(ok && out.contains("IPv4") && out.contains("8080"), "{out}\n{err}");
    Ok(())
}
