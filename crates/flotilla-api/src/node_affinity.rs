//! Required node affinity (`nodeSelectorTerms`), as kube-scheduler and the DaemonSet
//! controller both judge it: terms are ORed, a term's requirements ANDed, and a term with
//! no requirement matches no node.

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement};

/// Whether a node (its name, and its labels through `label`) matches `selector`.
pub fn node_selector_matches<'a>(
    selector: &NodeSelector,
    node_name: &str,
    label: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    selector.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if expressions.is_empty() && fields.is_empty() {
            return false;
        }
        expressions.iter().all(|r| requirement_matches(r, label(&r.key)))
            && fields.iter().all(|r| {
                // Only `metadata.name`, with `In` or `NotIn`, is a node field selector.
                matches!(r.operator.as_str(), "In" | "NotIn")
                    && requirement_matches(r, (r.key == "metadata.name").then_some(node_name))
            })
    })
}

/// One requirement against the value of its key (`None`: no such label or field); an
/// ill-formed requirement (unknown operator, wrong number of values, `Gt`/`Lt` on a
/// non-integer) matches nothing, as Kubernetes treats a term it cannot parse.
fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => !values.is_empty() && value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        op @ ("Gt" | "Lt") => {
            let [bound] = values else { return false };
            let (Ok(bound), Some(Ok(value))) = (bound.parse::<i64>(), value.map(str::parse::<i64>)) else {
                return false;
            };
            if op == "Gt" { value > bound } else { value < bound }
        }
        _ => false,
    }
}
