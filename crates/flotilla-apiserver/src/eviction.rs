//! `pods/eviction` (kube's `EvictionREST`): a pod is deleted unless the
//! PodDisruptionBudget that selects it allows no disruption now.
//!
//! The disruption controller keeps each budget's `status` (healthy pods, how many it
//! needs, `disruptionsAllowed`). An eviction spends one allowed disruption by writing the
//! budget's status (conditional on the version it read, so two evictions cannot spend the
//! same one) before it deletes the pod, and records the pod in `status.disruptedPods`
//! so the controller does not count it healthy while it goes.

use crate::registry::{DeleteOptions, ListQuery, Registry, WriteOptions};
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
use flotilla_api::{ApiError, LabelSelector, Reason, Subresource};
use serde_json::{Value, json};

/// Times an eviction reads the budget again after another write changed it.
const RETRIES: usize = 5;

/// Evicts pod `name`: deletes it with `options` if its budget allows.
pub(crate) async fn evict(
    registry: &Registry,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let pods = kind("v1", "Pod")?;
    let budgets = kind("policy/v1", "PodDisruptionBudget")?;
    for _ in 0..RETRIES {
        let pod = registry.get(pods, Some(namespace), name).await?;
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            // Already going: nothing to spend a disruption on.
            return Ok(());
        }
        if !matches!(pod["status"]["phase"].as_str(), Some("Running")) {
            // A pod that is not running (pending, finished) disrupts nothing.
            return delete(registry, namespace, name, options).await;
        }
        let listed = registry.list(budgets, Some(namespace), &ListQuery::default()).await?;
        let labels = pod["metadata"]["labels"].as_object().cloned().unwrap_or_default();
        let selecting: Vec<&Value> = listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|budget| selector(budget).is_some_and(|s| s.matches(&labels)))
            .collect();
        let budget = match selecting.as_slice() {
            [] => return delete(registry, namespace, name, options).await,
            [budget] => *budget,
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let budget_name = budget["metadata"]["name"].as_str().unwrap_or_default();
        let status = &budget["status"];
        let number = |field: &str| status[field].as_i64().unwrap_or(0);
        let generation = budget["metadata"]["generation"].as_i64().unwrap_or(1);
        if number("observedGeneration") < generation {
            return Err(too_many_requests(format!(
                "The disruption budget {budget_name} is still being processed by the server."
            )));
        }
        let (healthy, desired) = (number("currentHealthy"), number("desiredHealthy"));
        if !is_ready(&pod) {
            // An unhealthy pod takes nothing from a budget that is met (or from any,
            // with AlwaysAllow): evicting it cannot make things worse.
            let always = budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if always || (healthy >= desired && desired > 0) {
                return delete(registry, namespace, name, options).await;
            }
            return Err(needs(budget_name, desired, healthy));
        }
        let allowed = number("disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::new(Reason::Forbidden, "pdb disruptions allowed is negative"));
        }
        if allowed == 0 {
            return Err(needs(budget_name, desired, healthy));
        }
        if options.dry_run {
            return Ok(());
        }
        let mut spent = budget.clone();
        spent["status"]["disruptionsAllowed"] = json!(allowed - 1);
        spent["status"]["disruptedPods"][name] = json!(flotilla_api::timestamp_now());
        let writes = WriteOptions { field_manager: "flotilla-eviction".into(), ..WriteOptions::default() };
        match registry.update(budgets, Some(namespace), budget_name, spent, Some(Subresource::Status), &writes).await {
            Ok(_) => return delete(registry, namespace, name, options).await,
            // Another eviction (or the controller) wrote the budget: read it again.
            Err(e) if e.reason == Reason::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    Err(too_many_requests("the disruption budget kept changing; try again".to_string()))
}

async fn delete(registry: &Registry, namespace: &str, name: &str, options: &DeleteOptions) -> Result<(), ApiError> {
    registry.delete(kind("v1", "Pod")?, Some(namespace), name, options).await.map(drop)
}

fn kind(api_version: &str, kind: &str) -> Result<&'static flotilla_api::ResourceType, ApiError> {
    flotilla_api::by_kind(api_version, kind).ok_or_else(|| ApiError::internal(format!("{kind} is not served")))
}

/// A budget's selector; in policy/v1 an empty one selects every pod of the namespace and
/// a missing or unreadable one none.
fn selector(budget: &Value) -> Option<LabelSelector> {
    LabelSelector::from_json(budget["spec"].get("selector").filter(|s| !s.is_null())?).ok()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The 429 kubectl drain waits on and retries, with kube's words.
fn too_many_requests(cause: String) -> ApiError {
    ApiError {
        reason: Reason::TooManyRequests,
        message: "Cannot evict pod as it would violate the pod's disruption budget.".to_string(),
        details: Some(Box::new(StatusDetails {
            causes: Some(vec![StatusCause {
                reason: Some("DisruptionBudget".to_string()),
                message: Some(cause),
                field: None,
            }]),
            ..StatusDetails::default()
        })),
    }
}

fn needs(budget: &str, desired: i64, healthy: i64) -> ApiError {
    too_many_requests(format!(
        "The disruption budget {budget} needs {desired} healthy pods and has {healthy} currently"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_selector_selects_all_and_a_missing_one_none() {
        let labels = json!({"app": "web"}).as_object().cloned().unwrap_or_default();
        let with = |selector: Value| json!({"spec": {"selector": selector}});
        assert!(selector(&with(json!({}))).is_some_and(|s| s.matches(&labels)));
        assert!(selector(&with(json!({"matchLabels": {"app": "web"}}))).is_some_and(|s| s.matches(&labels)));
        assert!(selector(&with(json!({"matchLabels": {"app": "db"}}))).is_some_and(|s| !s.matches(&labels)));
        assert!(selector(&json!({"spec": {}})).is_none());
        assert!(selector(&with(json!({"matchLabels": 3}))).is_none());
    }

    #[test]
    fn a_refusal_is_429_with_the_budgets_words() {
        let error = needs("web", 2, 2);
        assert_eq!((error.reason, error.code()), (Reason::TooManyRequests, 429));
        assert_eq!(error.message, "Cannot evict pod as it would violate the pod's disruption budget.");
        let causes = error.details.and_then(|d| d.causes).unwrap_or_default();
        assert_eq!(
            causes[0].message.as_deref(),
            Some("The disruption budget web needs 2 healthy pods and has 2 currently")
        );
    }
}
