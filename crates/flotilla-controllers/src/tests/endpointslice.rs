//! The EndpointSlice and Endpoints controllers against the real API server. Pods get
//! their addresses from a fake kubelet here (the shared one sets none).

use super::*;
use crate::meta;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

fn service(name: &str, target_port: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "shop"}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": target_port}]},
    })
}

fn pod(name: &str, app: &str, web_port: i64, node: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "hello.wasm",
            "ports": [{"name": "web", "containerPort": web_port}]}]},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

/// Sets a pod's status as a node would: running at `ip`, ready or not.
async fn run_pod(cluster: &TestCluster, name: &str, ip: Option<&str>, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let mut status = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": ready, "lastTransitionTime": flotilla_api::timestamp_now()}]});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    cluster
        .cluster
        .patch(resource("v1", "Pod"), Some("default"), name, &Patch::Merge(json!({"status": status})), Some("status"))
        .await
        .expect("status patched");
}

/// A fake kubelet that runs every pending pod, ready, at an address of its own.
fn spawn_addressing_kubelet(cluster: &TestCluster) -> AbortOnDrop {
    let cluster = cluster.cluster.clone();
    let next = Arc::new(AtomicU32::new(1));
    AbortOnDrop(tokio::spawn(async move {
        loop {
            for pod in list(cluster.as_ref(), "v1", "Pod").await {
                if pod["status"]["phase"] == "Pending" && pod["metadata"]["deletionTimestamp"].is_null() {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
                    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                        "conditions": [{"type": "Ready", "status": "True"}]}});
                    let _ = cluster
                        .patch(
                            resource("v1", "Pod"),
                            Some("default"),
                            meta::name(&pod),
                            &Patch::Merge(status),
                            Some("status"),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
}

async fn slices_of(cluster: &TestCluster, service: &str) -> Vec<Value> {
    let params = ListParams::labels(format!("kubernetes.io/service-name={service}"));
    let list = cluster.cluster.list(resource("discovery.k8s.io/v1", "EndpointSlice"), Some("default"), &params).await;
    list.ok().and_then(|l| l["items"].as_array().cloned()).unwrap_or_default()
}

/// Every endpoint of the Service's slices, by pod name.
async fn endpoints_by_pod(cluster: &TestCluster, service: &str) -> BTreeMap<String, Value> {
    slices_of(cluster, service)
        .await
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| Some((e["targetRef"]["name"].as_str()?.to_string(), e)))
        .collect()
}

/// Pod names under `addresses` and `notReadyAddresses` of the Service's Endpoints.
async fn endpoints_addresses(cluster: &TestCluster, service: &str) -> Option<(Vec<String>, Vec<String>)> {
    let endpoints = get(cluster, "v1", "Endpoints", service).await?;
    let names = |list: &str| -> Vec<String> {
        let mut names: Vec<String> = endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[list].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["targetRef"]["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    Some((names("addresses"), names("notReadyAddresses")))
}

#[tokio::test]
async fn ready_not_ready_and_terminating_pods_get_their_conditions() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let svc = create(&cluster, service("web", json!("web"))).await;
    for (name, node) in [("ready", None), ("not-ready", None), ("no-ip", None), ("leaving", Some("n1"))] {
        create(&cluster, pod(name, "web", 8080, node)).await;
    }
    create(&cluster, pod("other-app", "db", 8080, None)).await;
    run_pod(&cluster, "ready", Some("10.244.0.1"), true).await;
    run_pod(&cluster, "not-ready", Some("10.244.0.2"), false).await;
    run_pod(&cluster, "no-ip", None, true).await;
    run_pod(&cluster, "leaving", Some("10.244.0.4"), true).await;
    run_pod(&cluster, "other-app", Some("10.244.0.5"), true).await;
    wait_for("three endpoints", || async {
        let endpoints = endpoints_by_pod(&cluster, "web").await;
        (endpoints.len() == 3).then_some(())
    })
    .await;
    // Being deleted: a node runs it, so it terminates over its grace period.
    delete(&cluster, "v1", "Pod", "leaving", None).await;
    let endpoints = wait_for("the leaving pod terminating", || async {
        let endpoints = endpoints_by_pod(&cluster, "web").await;
        (endpoints.get("leaving")?["conditions"]["terminating"] == true).then_some(endpoints)
    })
    .await;
    let conditions = |pod: &str| endpoints[pod]["conditions"].clone();
    assert_eq!(conditions("ready"), json!({"ready": true, "serving": true, "terminating": false}));
    assert_eq!(conditions("not-ready"), json!({"ready": false, "serving": false, "terminating": false}));
    assert_eq!(conditions("leaving"), json!({"ready": false, "serving": true, "terminating": true}));
    assert_eq!(endpoints["ready"]["addresses"], json!(["10.244.0.1"]));
    assert_eq!(endpoints["leaving"]["nodeName"], "n1");
    assert_eq!(endpoints["ready"]["targetRef"]["kind"], "Pod");
    assert_eq!(endpoints["ready"]["targetRef"]["namespace"], "default");
    assert!(endpoints["ready"]["targetRef"]["uid"].is_string());

    let slices = slices_of(&cluster, "web").await;
    assert_eq!(slices.len(), 1, "one port list, one slice");
    let slice = &slices[0];
    assert!(meta::name(slice).starts_with("web-"), "{}", meta::name(slice));
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    assert_eq!(
        slice["metadata"]["labels"],
        json!({"team": "shop", "kubernetes.io/service-name": "web",
               "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
    );
    let owner = &meta::owner_references(slice)[0];
    assert_eq!((owner["kind"].as_str(), owner["uid"].as_str()), (Some("Service"), svc["metadata"]["uid"].as_str()));
    assert_eq!((owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()), (Some(true), Some(true)));

    // The Endpoints leave out the terminating pod, as kube's do.
    let (ready, not_ready) = wait_for("the Endpoints", || async {
        let found = endpoints_addresses(&cluster, "web").await?;
        (found.0 == ["ready"]).then_some(found)
    })
    .await;
    assert_eq!((ready, not_ready), (vec!["ready".to_string()], vec!["not-ready".to_string()]));
    let ep = get(&cluster, "v1", "Endpoints", "web").await.expect("Endpoints");
    assert_eq!(ep["metadata"]["labels"]["endpoints.kubernetes.io/managed-by"], "endpoint-controller");
    assert_eq!(ep["subsets"][0]["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
}

#[tokio::test]
async fn scaling_adds_and_removes_endpoints() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    let _kubelet = spawn_addressing_kubelet(&cluster);
    create(&cluster, service("web", json!(8080))).await;
    // Before any pod: one empty placeholder slice, as kube keeps.
    let placeholder = wait_for("a placeholder", || async {
        let slices = slices_of(&cluster, "web").await;
        (slices.len() == 1).then(|| slices[0].clone())
    })
    .await;
    assert_eq!(placeholder["endpoints"].as_array().map_or(0, Vec::len), 0);
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template("web", "hello.wasm")},
    });
    create(&cluster, rs).await;
    for replicas in [3usize, 5, 1] {
        patch(&cluster, "apps/v1", "ReplicaSet", "web", json!({"spec": {"replicas": replicas}})).await;
        wait_for(&format!("{replicas} ready endpoints"), || async {
            let endpoints = endpoints_by_pod(&cluster, "web").await;
            let ready = endpoints.values().filter(|e| e["conditions"]["ready"] == true).count();
            let ep = endpoints_addresses(&cluster, "web").await?;
            (endpoints.len() == replicas && ready == replicas && ep.0.len() == replicas).then_some(())
        })
        .await;
    }
    let slices = slices_of(&cluster, "web").await;
    assert_eq!(slices.len(), 1, "updated in place: {slices:?}");
    assert_eq!(meta::name(&slices[0]), meta::name(&placeholder), "the placeholder took the first endpoints");
    assert_eq!(slices[0]["metadata"]["uid"], placeholder["metadata"]["uid"]);
}

#[tokio::test]
async fn named_target_ports_resolve_per_pod() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, service("web", json!("web"))).await;
    for (name, port) in [("a", 8080), ("b", 9090), ("c", 8080)] {
        create(&cluster, pod(name, "web", port, None)).await;
    }
    run_pod(&cluster, "a", Some("10.244.0.1"), true).await;
    run_pod(&cluster, "b", Some("10.244.0.2"), true).await;
    run_pod(&cluster, "c", Some("10.244.0.3"), true).await;
    let slices = wait_for("two slices", || async {
        let slices = slices_of(&cluster, "web").await;
        let count: usize = slices.iter().map(|s| s["endpoints"].as_array().map_or(0, Vec::len)).sum();
        (slices.len() == 2 && count == 3).then_some(slices)
    })
    .await;
    let mut by_port: Vec<(i64, usize)> = slices
        .iter()
        .map(|s| (s["ports"][0]["port"].as_i64().unwrap_or(0), s["endpoints"].as_array().map_or(0, Vec::len)))
        .collect();
    by_port.sort_unstable();
    assert_eq!(by_port, [(8080, 2), (9090, 1)]);
    let ep = wait_for("Endpoints with two subsets", || async {
        let ep = get(&cluster, "v1", "Endpoints", "web").await?;
        let (ready, _) = endpoints_addresses(&cluster, "web").await?;
        (ep["subsets"].as_array().map_or(0, Vec::len) == 2 && ready.len() == 3).then_some(ep)
    })
    .await;
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len), 2);
}

#[tokio::test]
async fn a_service_that_goes_or_loses_its_selector_loses_its_slices() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, service("web", json!(8080))).await;
    create(&cluster, service("api", json!(8080))).await;
    create(&cluster, pod("a", "web", 8080, None)).await;
    run_pod(&cluster, "a", Some("10.244.0.1"), true).await;
    // A user's own slice for a Service: never touched.
    let users = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-by-hand", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["192.168.1.1"]}]});
    create(&cluster, users).await;
    for name in ["web", "api"] {
        wait_for("slices and Endpoints", || async {
            let managed = slices_of(&cluster, name).await.iter().filter(|s| meta::name(s) != "web-by-hand").count();
            let ep = get(&cluster, "v1", "Endpoints", name).await;
            (managed == 1 && ep.is_some()).then_some(())
        })
        .await;
    }
    delete(&cluster, "v1", "Service", "web", None).await;
    patch(&cluster, "v1", "Service", "api", json!({"spec": {"selector": null}})).await;
    for name in ["web", "api"] {
        wait_for("the controllers' objects gone", || async {
            let managed = slices_of(&cluster, name).await.iter().filter(|s| meta::name(s) != "web-by-hand").count();
            let ep = get(&cluster, "v1", "Endpoints", name).await;
            (managed == 0 && ep.is_none()).then_some(())
        })
        .await;
    }
    assert!(get(&cluster, "discovery.k8s.io/v1", "EndpointSlice", "web-by-hand").await.is_some());
}

#[tokio::test]
async fn nothing_is_written_when_nothing_changes() {
    let cluster = start_cluster().await;
    let _controllers = spawn_controllers(&cluster);
    create(&cluster, service("web", json!(8080))).await;
    for name in ["a", "b"] {
        create(&cluster, pod(name, "web", 8080, None)).await;
    }
    run_pod(&cluster, "a", Some("10.244.0.1"), true).await;
    run_pod(&cluster, "b", Some("10.244.0.2"), false).await;
    let versions = || async {
        let slices = slices_of(&cluster, "web").await;
        let endpoints = get(&cluster, "v1", "Endpoints", "web").await;
        let mut versions: Vec<String> = slices.iter().map(|s| meta::resource_version(s).to_string()).collect();
        versions.extend(endpoints.iter().map(|e| meta::resource_version(e).to_string()));
        versions
    };
    wait_for("both endpoints", || async {
        let ep = endpoints_addresses(&cluster, "web").await?;
        (endpoints_by_pod(&cluster, "web").await.len() == 2 && ep.0.len() + ep.1.len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = versions().await;
    // Changes that do not change the endpoints: annotations of a pod and of the Service.
    patch(&cluster, "v1", "Pod", "a", json!({"metadata": {"annotations": {"note": "x"}}})).await;
    patch(&cluster, "v1", "Service", "web", json!({"metadata": {"annotations": {"note": "y"}}})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(versions().await, before, "no write");
    // A real change writes.
    run_pod(&cluster, "b", Some("10.244.0.2"), true).await;
    wait_for("b ready", || async {
        let endpoints = endpoints_by_pod(&cluster, "web").await;
        (endpoints.get("b")?["conditions"]["ready"] == true).then_some(())
    })
    .await;
}
