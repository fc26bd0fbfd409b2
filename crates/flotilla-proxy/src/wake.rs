//! Scale from zero: a request to a Service whose Deployment sits at zero replicas scales
//! it to one, waits (holding the request) for a ready pod, and is then served. A
//! Deployment may sit at zero when an HPA with `minReplicas: 0` targets it (the
//! autoscaler takes it there when idle) or when it is annotated
//! `flotilla.dev/scale-to-zero: "true"`.
//!
//! The scale write is a JSON patch that tests `spec.replicas == 0` first, so a waking
//! proxy never shrinks a Deployment someone else scaled meanwhile.
//!
//! The held request does not wait for the EndpointSlice controller: the request that
//! scales also watches the Service's pods, and the first one that is ready, not
//! terminating, on a node and serving the Service port's `targetPort` takes the held
//! requests (as the slice would list it a write later). The routing tables answer too,
//! whichever comes first, so a failed pod watch only costs time.
//!
//! A pod that nothing but starting makes ready (no readiness or startup probe) takes
//! the held request as soon as it is bound: the request goes to its node marked
//! [`flotilla_client::START_WAIT_HEADER`], and the node holds it until the pod runs,
//! reading the pod from the API at once if its own watch has not brought it yet. The
//! cold path is then four writes in series (Deployment scale, ReplicaSet scale, pod,
//! binding) and a wasm instantiation: `cargo bench -p flotilla --bench ingress` times it.

use crate::proxy::Shared;
use crate::snapshot::{Endpoint, Route, Service, ServicePort};
use flotilla_client::{EventType, ListParams, Patch, resource};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The annotation that lets a Deployment without an autoscaler be woken from zero.
pub(crate) const SCALE_TO_ZERO_ANNOTATION: &str = "flotilla.dev/scale-to-zero";

/// How long a request waits for a woken Deployment's first ready pod.
const WAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A wake under way: the first ready pod the waking request's watch found, once it has.
pub(crate) type Waking = watch::Receiver<Option<Endpoint>>;

/// The Deployment a Service wakes, if any: in the Service's namespace, its pods selected
/// by the Service, allowed to sit at zero.
pub(crate) fn target(service: &Value, deployments: &[Arc<Value>], autoscalers: &[Arc<Value>]) -> Option<Arc<str>> {
    let namespace = service["metadata"]["namespace"].as_str().unwrap_or("default");
    let selector = service["spec"]["selector"].as_object().filter(|s| !s.is_empty())?;
    let may_sleep = |deployment: &Value| {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
        deployment["metadata"]["annotations"][SCALE_TO_ZERO_ANNOTATION] == "true"
            || autoscalers.iter().any(|hpa| {
                hpa["metadata"]["namespace"] == namespace
                    && hpa["spec"]["minReplicas"] == 0
                    && hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
                    && hpa["spec"]["scaleTargetRef"]["name"] == name
            })
    };
    deployments
        .iter()
        .filter(|d| d["metadata"]["namespace"] == namespace)
        .filter(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(key, value)| labels[key] == *value)
        })
        .find(|d| may_sleep(d))
        .and_then(|d| d["metadata"]["name"].as_str())
        .map(Arc::from)
}

/// Takes a wake out of [`Shared::waking`] when the request that started it is done, or
/// dropped (its client went away): the next request starts another.
struct Started<'a> {
    shared: &'a Shared,
    key: Arc<str>,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.shared.waking.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Scales `namespace/deployment` from zero to one (unless a request already is) and waits
/// until the Service of `route` has a ready pod for its port; the route to it, or why not.
pub(crate) async fn wake(shared: &Shared, route: &Route, deployment: &str) -> Result<Route, String> {
    let service_id = route.service.id.clone();
    let (namespace, service_name) = service_id.split_once('/').unwrap_or(("default", &service_id));
    let port = route.port().port;
    let key: Arc<str> = Arc::from(format!("{namespace}/{deployment}"));
    let mut rebuilt = shared.rebuilt.subscribe();
    let (found, started) = {
        let mut waking = shared.waking.lock().unwrap_or_else(|p| p.into_inner());
        match waking.get(&key) {
            Some(found) => (found.clone(), None),
            None => {
                let (sender, found) = watch::channel(None);
                waking.insert(key.clone(), found.clone());
                (found, Some((Started { shared, key: key.clone() }, sender)))
            }
        }
    };
    // The request that starts the wake scales and watches; the others wait.
    let scale_and_watch = async {
        let Some((_, sender)) = &started else { return std::future::pending().await };
        tracing::info!(deployment = %key, service = %service_id, "scaling from zero for a request");
        let patch = Patch::Json(json!([
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": 1},
        ]));
        let rt = resource("apps/v1", "Deployment");
        let scale = shared.cluster.patch(rt, Some(namespace), deployment, &patch, Some("scale"));
        let watch = async {
            match first_ready_pod(shared, namespace, service_name, port).await {
                Ok(endpoint) => {
                    tracing::debug!(pod = %endpoint.pod, node = %endpoint.node, "woken pod ready");
                    sender.send_replace(Some(endpoint));
                }
                Err(why) => tracing::debug!(%why, "not watching the woken pods: waiting for the endpoints"),
            }
            std::future::pending::<Infallible>().await
        };
        tokio::pin!(watch);
        // The watch starts with the patch, so that the pod cannot be missed.
        let result = tokio::select! {
            biased;
            result = scale => result,
            never = &mut watch => match never {},
        };
        if let Err(error) = result
            && error.reason != flotilla_api::Reason::Invalid
        {
            return Err(format!("could not scale deployment {key} from zero: {}", error.message));
        }
        match watch.await {}
    };
    let ready = async {
        let mut found = found;
        let mut watching = true;
        loop {
            if let Some(endpoint) = found.borrow_and_update().clone() {
                return route_to(route, endpoint);
            }
            let snapshot = shared.snapshot.load();
            if let Some(service) = snapshot.service(namespace, service_name)
                && let Some(index) = service.ports.iter().position(|p| p.port == port)
                && !service.ports[index].endpoints.is_empty()
            {
                return Route { service: service.clone(), port: index };
            }
            drop(snapshot);
            let pod_found =
                async { if watching { found.changed().await.is_ok() } else { std::future::pending().await } };
            tokio::select! {
                changed = rebuilt.changed() => if changed.is_err() {
                    // The proxy is stopping; the timeout answers.
                    std::future::pending::<()>().await;
                },
                ok = pod_found => if !ok {
                    // The request that watched went away: the routing tables answer.
                    watching = false;
                },
            }
        }
    };
    let outcome = tokio::time::timeout(WAKE_TIMEOUT, async {
        tokio::select! {
            route = ready => Ok(route),
            failed = scale_and_watch => failed,
        }
    })
    .await;
    drop(started);
    outcome.map_err(|_| format!("deployment {key} was scaled from zero but no pod became ready in {WAKE_TIMEOUT:?}"))?
}

/// `route` with one endpoint, the woken pod, on its port.
fn route_to(route: &Route, endpoint: Endpoint) -> Route {
    let service = &route.service;
    let ports = service
        .ports
        .iter()
        .enumerate()
        .map(|(index, port)| ServicePort {
            name: port.name.clone(),
            port: port.port,
            endpoints: if index == route.port { Arc::from([endpoint.clone()]) } else { port.endpoints.clone() },
        })
        .collect();
    let service = Service {
        id: service.id.clone(),
        ports,
        policy: service.policy,
        affinity: service.affinity.clone(),
        counter: service.counter.clone(),
        wake: service.wake.clone(),
        metrics: service.metrics.clone(),
    };
    Route { service: Arc::new(service), port: route.port }
}

/// The first pod of the Service that can take its requests on `port`: listed, or
/// watched from the list on.
async fn first_ready_pod(shared: &Shared, namespace: &str, service_name: &str, port: u16) -> Result<Endpoint, String> {
    let service = shared
        .cluster
        .get(resource("v1", "Service"), Some(namespace), service_name)
        .await
        .map_err(|e| format!("reading the Service: {}", e.message))?;
    let selector = service["spec"]["selector"].as_object().filter(|s| !s.is_empty()).ok_or("no selector")?;
    let selector: Vec<String> =
        selector.iter().map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default())).collect();
    let service_port = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))
        .ok_or("the port is gone")?;
    let rt = resource("v1", "Pod");
    let params = ListParams::labels(selector.join(","));
    let list = shared.cluster.list(rt, Some(namespace), &params).await.map_err(|e| e.message)?;
    if let Some(pod) = list["items"].as_array().into_iter().flatten().find(|pod| serves(pod, service_port)) {
        return Ok(endpoint(shared, pod));
    }
    let version = list["metadata"]["resourceVersion"].as_str().ok_or("a list without a resourceVersion")?;
    let mut watch = shared.cluster.watch(rt, Some(namespace), &params, version).await.map_err(|e| e.message)?;
    while let Some(event) = watch.next().await {
        let event = event.map_err(|e| e.message)?;
        if matches!(event.event_type, EventType::Added | EventType::Modified) && serves(&event.object, service_port) {
            return Ok(endpoint(shared, &event.object));
        }
    }
    Err("the pod watch ended".into())
}

/// Whether the pod can take the Service port's requests: as the EndpointSlice controller
/// would list it (on a node with an address, ready, not being deleted, its `targetPort`
/// resolving — a name must name one of its container ports of the port's protocol), or,
/// bound to a node but not started yet, when nothing but starting makes it ready (no
/// readiness or startup probe): its node holds the request until it runs, which saves
/// waiting for its status to say so.
fn serves(pod: &Value, service_port: &Value) -> bool {
    let status = &pod["status"];
    let ready = is_ready(pod);
    let running = !matches!(status["phase"].as_str(), Some("Succeeded" | "Failed"));
    let addressed = status["podIP"].as_str().is_some_and(|ip| !ip.is_empty());
    let placed = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let probed = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| !c["readinessProbe"].is_null() || !c["startupProbe"].is_null());
    let leaving = !pod["metadata"]["deletionTimestamp"].is_null();
    let port_resolves = match &service_port["targetPort"] {
        Value::String(name) => {
            let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
            let spec = &pod["spec"];
            let sidecars =
                spec["initContainers"].as_array().into_iter().flatten().filter(|c| c["restartPolicy"] == "Always");
            spec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(sidecars)
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .any(|p| p["name"] == name.as_str() && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        }
        _ => true,
    };
    let startable = !probed && status["containerStatuses"].as_array().is_none_or(|statuses| statuses.is_empty());
    ((ready && addressed) || startable) && running && placed && !leaving && port_resolves
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The pod as an endpoint (`serves` said it has a node).
fn endpoint(shared: &Shared, pod: &Value) -> Endpoint {
    let name: Arc<str> = Arc::from(pod["metadata"]["name"].as_str().unwrap_or_default());
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    Endpoint {
        namespace: Arc::from(pod["metadata"]["namespace"].as_str().unwrap_or("default")),
        pod: name.clone(),
        hostname: name,
        node: Arc::from(node),
        kubelet: shared.kubelets.get(node),
        in_flight: Arc::default(),
        starting: !is_ready(pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, app: &str, annotations: Value) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"template": {"metadata": {"labels": {"app": app, "tier": "web"}}}}}))
    }

    #[test]
    fn the_deployment_to_wake_is_selected_and_allowed_to_sleep() {
        let service =
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web"}}});
        let plain = deployment("plain", "web", json!({}));
        let annotated = deployment("annotated", "web", json!({SCALE_TO_ZERO_ANNOTATION: "true"}));
        let other = deployment("other", "db", json!({SCALE_TO_ZERO_ANNOTATION: "true"}));
        assert_eq!(target(&service, &[plain.clone(), other.clone()], &[]), None, "nothing may sleep");
        assert_eq!(target(&service, &[plain.clone(), annotated], &[]).as_deref(), Some("annotated"));
        let hpa = Arc::new(json!({"metadata": {"namespace": "default"}, "spec": {"minReplicas": 0,
            "scaleTargetRef": {"kind": "Deployment", "name": "plain"}}}));
        assert_eq!(target(&service, &[plain, other], &[hpa]).as_deref(), Some("plain"));
        let no_selector = json!({"metadata": {"name": "x", "namespace": "default"}, "spec": {}});
        assert_eq!(
            target(&no_selector, &[deployment("a", "web", json!({SCALE_TO_ZERO_ANNOTATION: "true"}))], &[]),
            None
        );
    }
}
