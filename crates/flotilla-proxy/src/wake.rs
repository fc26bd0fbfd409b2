//! Scale from zero: a request to a Service whose Deployment sits at zero replicas scales
//! it to one, waits (holding the request) until the routing tables have a ready
//! endpoint, and is then served. A Deployment may sit at zero when an HPA with
//! `minReplicas: 0` targets it (the autoscaler takes it there when idle) or when it is
//! annotated `flotilla.dev/scale-to-zero: "true"`.
//!
//! The scale write is a JSON patch that tests `spec.replicas == 0` first, so a waking
//! proxy never shrinks a Deployment someone else scaled meanwhile.

use crate::proxy::Shared;
use crate::snapshot::Route;
use flotilla_client::{Patch, resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The annotation that lets a Deployment without an autoscaler be woken from zero.
pub(crate) const SCALE_TO_ZERO_ANNOTATION: &str = "flotilla.dev/scale-to-zero";

/// How long a request waits for a woken Deployment's first ready pod.
const WAKE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Scales `namespace/deployment` from zero to one (unless a request already is) and waits
/// until the Service of `route` has an endpoint on its port; the fresh route, or why not.
pub(crate) async fn wake(shared: &Shared, route: &Route, deployment: &str) -> Result<Route, String> {
    let service_id = route.service.id.clone();
    let (namespace, service_name) = service_id.split_once('/').unwrap_or(("default", &service_id));
    let port = route.port().port;
    let key: Arc<str> = Arc::from(format!("{namespace}/{deployment}"));
    let mut rebuilt = shared.rebuilt.subscribe();
    let first = shared.waking.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
    if first {
        tracing::info!(deployment = %key, service = %service_id, "scaling from zero for a request");
        let patch = Patch::Json(json!([
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": 1},
        ]));
        let rt = resource("apps/v1", "Deployment");
        let result = shared.cluster.patch(rt, Some(namespace), deployment, &patch, Some("scale")).await;
        if let Err(error) = result
            && error.reason != flotilla_api::Reason::Invalid
        {
            shared.waking.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            return Err(format!("could not scale deployment {key} from zero: {}", error.message));
        }
    }
    let ready = async {
        loop {
            let snapshot = shared.snapshot.load();
            if let Some(service) = snapshot.service(namespace, service_name)
                && let Some(index) = service.ports.iter().position(|p| p.port == port)
                && !service.ports[index].endpoints.is_empty()
            {
                return Route { service: service.clone(), port: index };
            }
            drop(snapshot);
            if rebuilt.changed().await.is_err() {
                // The proxy is stopping; the timeout answers.
                std::future::pending::<()>().await;
            }
        }
    };
    let outcome = tokio::time::timeout(WAKE_TIMEOUT, ready).await;
    if first {
        shared.waking.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
    outcome.map_err(|_| format!("deployment {key} was scaled from zero but no pod became ready in {WAKE_TIMEOUT:?}"))
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
