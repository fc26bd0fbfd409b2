//! Scale from zero: a held request reaches the woken pod as soon as the pod is ready (or,
//! without probes, as soon as it is bound, its node holding the request until it
//! starts), without waiting for an EndpointSlice (no controller runs here to write one).

use super::*;

/// Makes the pod `name` of the sleeping Deployment, on [`NODE`], with a container port
/// named `port_name` and a readiness probe, and reports it running: ready or not.
async fn run_pod(env: &Env, name: &str, port_name: &str, ready: bool) {
    env.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "sleepy"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "web", "image": "hello.wasm",
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
            "ports": [{"name": port_name, "containerPort": 8080}]}]}}))
        .await;
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    env.cluster
        .patch(resource("v1", "Pod"), Some("default"), name, &Patch::Merge(status), Some("status"))
        .await
        .unwrap_or_else(|e| panic!("the status of {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_goes_to_the_first_ready_pod_before_any_endpoint_slice() {
    let env = start(test_config()).await;
    env.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sleepy", "namespace": "default",
                     "annotations": {"flotilla.dev/scale-to-zero": "true"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "sleepy"}},
                 "template": {"metadata": {"labels": {"app": "sleepy"}},
                              "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}}}))
        .await;
    env.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "sleepy", "namespace": "default"},
        "spec": {"selector": {"app": "sleepy"}, "ports": [{"port": 80, "targetPort": "web"}]}}))
        .await;
    wait_for("a Service that wakes", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        snapshot.service("default", "sleepy")?.wake.is_some().then_some(())
    })
    .await;

    // The controllers, played by hand once the request has scaled the Deployment: a
    // pod that is not ready, one whose ports do not have the target port's name, then
    // the one that serves.
    let controllers = async {
        wait_for("the Deployment scaled to one", || async {
            let rt = resource("apps/v1", "Deployment");
            let deployment = env.cluster.get(rt, Some("default"), "sleepy").await.ok()?;
            (deployment["spec"]["replicas"] == 1).then_some(())
        })
        .await;
        run_pod(&env, "sleepy-starting", "web", false).await;
        run_pod(&env, "sleepy-other-port", "admin", true).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        run_pod(&env, "sleepy-ready", "web", true).await;
    };
    let request = Request::get("http://sleepy/").body(flotilla_client::empty_body()).expect("a request");
    let (response, ()) = tokio::join!(env.proxy.forward("default", request), controllers);
    let status = response.status();
    let body = response.into_body().collect().await.expect("a body").to_bytes();
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (StatusCode::OK, "sleepy-ready"));
    assert_eq!(env.kubelet.hits("sleepy-starting") + env.kubelet.hits("sleepy-other-port"), 0);
    let slices = env
        .cluster
        .list(resource("discovery.k8s.io/v1", "EndpointSlice"), Some("default"), &Default::default())
        .await
        .expect("the slices");
    assert_eq!(slices["items"].as_array().map_or(0, Vec::len), 0, "no slice was needed");
    assert!(env.proxy.shared.waking.lock().expect("waking").is_empty(), "the wake is over");
    assert!(env.kubelet.start_waits().is_empty(), "a probed pod is only sent requests once ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_probes_gets_the_held_request_once_bound_and_its_node_holds_it() {
    let env = start(test_config()).await;
    env.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sleepy", "namespace": "default",
                     "annotations": {"flotilla.dev/scale-to-zero": "true"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "sleepy"}},
                 "template": {"metadata": {"labels": {"app": "sleepy"}},
                              "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}}}))
        .await;
    env.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "sleepy", "namespace": "default"},
        "spec": {"selector": {"app": "sleepy"}, "ports": [{"port": 80, "targetPort": 8080}]}}))
        .await;
    wait_for("a Service that wakes", || async {
        let snapshot = env.proxy.shared.snapshot.load();
        snapshot.service("default", "sleepy")?.wake.is_some().then_some(())
    })
    .await;
    let scheduler = async {
        wait_for("the Deployment scaled to one", || async {
            let rt = resource("apps/v1", "Deployment");
            let deployment = env.cluster.get(rt, Some("default"), "sleepy").await.ok()?;
            (deployment["spec"]["replicas"] == 1).then_some(())
        })
        .await;
        // Created unbound, then bound: no status yet.
        env.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sleepy-bound", "namespace": "default", "labels": {"app": "sleepy"}},
            "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}))
            .await;
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "sleepy-bound"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}});
        env.cluster
            .create_subresource(resource("v1", "Pod"), Some("default"), "sleepy-bound", "binding", &binding)
            .await
            .expect("the binding");
    };
    // A client may not ask a node to wait: only the proxy does.
    let request = Request::get("http://sleepy/")
        .header(flotilla_client::START_WAIT_HEADER, "1")
        .body(flotilla_client::empty_body())
        .expect("a request");
    let (response, ()) = tokio::join!(env.proxy.forward("default", request), scheduler);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(env.kubelet.start_waits(), ["sleepy-bound"], "sent with the wait, to the bound pod");

    // Once it runs and is ready, requests carry no wait, whatever the client sent.
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}],
        "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "hello.wasm",
            "imageID": "", "state": {"running": {}}}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    env.cluster
        .patch(resource("v1", "Pod"), Some("default"), "sleepy-bound", &Patch::Merge(status), Some("status"))
        .await
        .expect("the pod's status");
    let request = Request::get("http://sleepy/")
        .header(flotilla_client::START_WAIT_HEADER, "1")
        .body(flotilla_client::empty_body())
        .expect("a request");
    let _ = env.proxy.forward("default", request).await;
    assert_eq!(env.kubelet.start_waits().len(), 1, "{:?}", env.kubelet.start_waits());
}
